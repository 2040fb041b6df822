//! `outbox status`, `retry` and `cancel`: asked of the running agent over its socket, or done
//! on the ledger directly when no agent runs. Either way the user sees the same output.

use crate::agent::control::{self, Request, Response};
use crate::agent::ops;
use crate::auth::Credentials;
use crate::cli::exit::{CommandError, ExitCode};
use crate::config::Settings;
use crate::core::model::MessageRecord;
use crate::graph::GraphClient;
use crate::ledger::{EntryError, EntryState, Ledger, LedgerEntry, LedgerError, SessionStore};

/// Whether an agent answers on the state dir's socket (`Some`), and its pid when the platform
/// tells (the socket peer's credentials; on Windows the pipe server's process id). Asks nothing of the agent: connect, look, hang up.
pub(crate) async fn agent_pid(state_dir: &std::path::Path) -> Option<Option<u32>> {
    #[cfg(unix)]
    {
        let stream = tokio::net::UnixStream::connect(control::socket_path(state_dir))
            .await
            .ok()?;
        Some(
            stream
                .peer_cred()
                .ok()
                .and_then(|c| c.pid())
                .and_then(|p| u32::try_from(p).ok()),
        )
    }
    #[cfg(windows)]
    {
        let pipe = control::connect_pipe(state_dir).await?;
        Some(outbox_win::pipe_server_pid(&pipe).ok())
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = state_dir;
        None
    }
}

/// The config file the agent on `state_dir` read, when one answers and says (an agent from
/// before it said so does not).
pub(crate) async fn agent_config(state_dir: &std::path::Path) -> Option<std::path::PathBuf> {
    agent_config_read(state_dir).await.0
}

/// The config file the agent on `state_dir` read and when it last read it (Unix ms), each as
/// far as it says.
pub(crate) async fn agent_config_read(
    state_dir: &std::path::Path,
) -> (Option<std::path::PathBuf>, Option<u64>) {
    match control::ask(state_dir, &Request::Config)
        .await
        .filter(|r| r.ok)
        .and_then(|r| r.agent)
    {
        Some(v) => (v.config, v.config_read_ms),
        None => (None, None),
    }
}

/// The note for `status` and `check` when `config` was written after the running agent `pid`
/// last read it (`read_ms`, as it says: at start or at its last reload); from an agent that
/// does not say, when it was written after the agent started (Linux only). `None`: no such
/// edit (or it cannot be told).
pub(crate) fn changed_since_read(
    pid: u32,
    read_ms: Option<u64>,
    config: &std::path::Path,
) -> Option<String> {
    match read_ms {
        Some(read) => {
            let edited = std::fs::metadata(config)
                .and_then(|m| m.modified())
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_millis() as u64;
            // `read` was taken just before the agent read the file: an edit it read is not later.
            (edited > read).then(|| restart_hint(pid, "last read it"))
        }
        None => started_before_edit(pid, config)
            .then(|| restart_hint(pid, "started; unless it was reloaded since")),
    }
}

/// Whether `a` and `b` name the same file.
pub(crate) fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    let full = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    full(a) == full(b)
}

/// What a command run on `config` says when the running agent on its state dir read another
/// file (`theirs`): the agent is not this config's, and an edit of this file does not reach it.
pub(crate) fn other_config_note(
    pid: Option<u32>,
    theirs: &std::path::Path,
    config: &std::path::Path,
    state_dir: &std::path::Path,
) -> String {
    let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    format!(
        "the running agent{pid} read another config, {}, not {}: both name the state dir {}, so this file's changes do not reach that agent, and its mappings are the other file's",
        crate::outside::path(theirs),
        crate::outside::path(config),
        crate::outside::path(state_dir)
    )
}

/// With no agent: the mailing mappings whose `max_messages` messages were made within their
/// window (from the ledger's messages), and when the window frees (ms since the epoch).
fn capped_mappings(
    settings: &crate::config::Settings,
    messages: &[crate::core::model::MessageRecord],
    now: time::OffsetDateTime,
) -> Vec<(String, u64)> {
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    let mut out = Vec::new();
    for m in &settings.mappings {
        let crate::config::Target::NewMessage(t) = &m.target else {
            continue;
        };
        let Some(cap) = t.max_messages else { continue };
        let made = messages
            .iter()
            .filter(|r| r.mapping == m.name)
            .map(|r| r.created_at);
        let amount = cap.amount.min(u64::from(u32::MAX)) as u32;
        let window = cap.window.as_millis() as u64;
        if let Some(t) = crate::core::machine::cap_frees_at(
            made,
            amount,
            window,
            crate::core::model::Time(now_ms),
        ) {
            out.push((m.name.clone(), t.0));
        }
    }
    out
}

/// Whether the process `pid` started before `config` was last written: it may run on an older
/// config. Linux only (the start from `/proc/PID/stat`, in clock ticks since boot, against
/// `/proc/uptime`); `false` where that cannot be told.
fn started_before_edit(pid: u32, config: &std::path::Path) -> bool {
    let (Some(started), Ok(edited)) = (
        process_start(pid),
        std::fs::metadata(config).and_then(|m| m.modified()),
    ) else {
        return false;
    };
    // The start is known to 10 ms (clock ticks) from two clocks read apart: a config written
    // just before the agent started must not count as edited after it.
    edited > started + std::time::Duration::from_secs(1)
}

/// When process `pid` started (Linux: `/proc`; `USER_HZ` is 100 on every Linux ABI).
fn process_start(pid: u32) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses (which may hold spaces): field 22 is `starttime`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let age = uptime - ticks as f64 / 100.0;
    std::time::SystemTime::now().checked_sub(std::time::Duration::from_secs_f64(age.max(0.0)))
}

/// The sentence for that case: `SIGHUP` reloads the config (one with errors is refused and the
/// old one kept); what a reload does not change takes a restart.
fn restart_hint(pid: u32, when: &str) -> String {
    format!(
        "the config changed after the running agent (pid {pid}) {when}; reload it to apply the \
         change: `systemctl --user reload outbox` (as a service) or \
         `kill -HUP {pid}` (a config with errors is refused and the old one kept); [graph], [auth] \
         and state_dir take a restart (`systemctl --user restart outbox`)"
    )
}

/// The settings for `status`, `retry` and `cancel`, and whether the config failed to load. When
/// it does not load but an agent answers on the state dir the file names (or the default one),
/// that agent is asked (it runs on the config it read before): the errors are said on stderr as
/// a warning, and the settings hold that state dir and defaults.
pub async fn settings_or_agent(
    flag: Option<&std::path::Path>,
) -> Result<(Settings, bool), CommandError> {
    let e = match super::load_settings(flag, true) {
        Ok(s) => return Ok((s, false)),
        Err(e) => e,
    };
    let (path, _) = super::config_path(flag);
    if e.code != ExitCode::Config || !path.is_file() {
        return Err(e);
    }
    let dir = match broken_state_dir(&path) {
        Ok(d) => d,
        Err(why) => {
            return Err(CommandError::new(
                ExitCode::Config,
                format!(
                    "{}\n(a running agent cannot be asked instead: {why}; {}, then run this again)",
                    e.message,
                    what_to_fix(&path)
                ),
            ))
        }
    };
    let Some(pid) = agent_pid(&dir).await else {
        return Err(e);
    };
    errln!("outbox: warning: {}", e.message);
    match agent_config(&dir).await {
        Some(theirs) if !same_file(&theirs, &path) => errln!(
            "outbox: {}; it answers instead",
            other_config_note(pid, &theirs, &path, &dir)
        ),
        _ => {
            let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            errln!(
                "outbox: the running agent{pid} answers instead, on the config it read before; {} (`outbox check` lists every error): the agent cannot reload or restart on this file",
                what_to_fix(&path)
            );
        }
    }
    let mut settings = Settings::defaults(path);
    settings.agent.state_dir = dir;
    Ok((settings, true))
}

/// What to do about a config that does not load, as its errors are: its permissions (the
/// command that fixes them), the lines its errors name, or both.
fn what_to_fix(path: &std::path::Path) -> String {
    let perms = crate::private::check_config_file(path).err().map(|_| {
        if crate::private::config_writable_by_others(path) {
            format!(
                "fix the file's permissions: `chmod go-w {}`",
                crate::outside::path(path)
            )
        } else {
            "fix who owns the file or its folder, as said above".to_owned()
        }
    });
    let lines = Settings::load_all(path).is_err();
    match (perms, lines) {
        (Some(p), true) => format!("{p}, and the lines named"),
        (Some(p), false) => format!("{p} (its text is fine)"),
        (None, _) => "fix the line named".to_owned(),
    }
}

/// The state dir a config that does not load names (`agent.state_dir`, else the platform's),
/// read from the file with its lines in error left out; or why it cannot be told.
fn broken_state_dir(path: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let errors = match Settings::load_all(path) {
        Ok(s) => return Ok(s.agent.state_dir),
        Err(errors) => errors,
    };
    if errors.iter().any(|e| e.key == "agent.state_dir") {
        return Err(
            "its agent.state_dir, where the agent's socket is, is the line in error".into(),
        );
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let bad: Vec<usize> = errors.iter().filter_map(|e| e.line).collect();
    let kept: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| if bad.contains(&(i + 1)) { "" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    let table: toml::Table = kept
        .parse()
        .map_err(|_| "it is not TOML that its agent.state_dir can be read from".to_string())?;
    let value = table
        .get("agent")
        .and_then(|a| a.as_table())
        .and_then(|a| a.get("state_dir"));
    let dir = match value {
        None => {
            return crate::config::default_state_dir()
                .ok_or_else(|| "there is no home directory for the default state dir".into())
        }
        Some(v) => v
            .as_str()
            .ok_or("its agent.state_dir is not a string")?
            .to_string(),
    };
    let expanded = if dir.contains('$') {
        return Err("its agent.state_dir names an environment variable".into());
    } else if let Some(rest) = dir
        .strip_prefix('~')
        .filter(|r| r.is_empty() || r.starts_with('/'))
    {
        let home = directories::BaseDirs::new()
            .map(|d| d.home_dir().to_path_buf())
            .ok_or("there is no home directory for its agent.state_dir")?;
        home.join(rest.trim_start_matches('/'))
    } else {
        std::path::PathBuf::from(dir)
    };
    // A relative state dir is relative to the config file's directory.
    Ok(match path.parent() {
        Some(p) if expanded.is_relative() => p.join(expanded),
        _ => expanded,
    })
}

fn ledger_err(e: LedgerError) -> CommandError {
    CommandError::from(e)
}

/// What a request answers: entries, and messages (`status`, a message's `retry`).
type Rows = (Vec<LedgerEntry>, Vec<MessageRecord>);

/// Ask the agent, or run `local` on the ledger when none answers.
async fn via_agent_or_ledger(
    settings: &Settings,
    req: Request,
    local: impl FnOnce(&Ledger) -> Result<Rows, CommandError>,
) -> Result<Rows, CommandError> {
    Ok(via_agent_or_ledger_viewed(settings, req, local).await?.0)
}

/// [`via_agent_or_ledger`], with what the running agent waits for when it answered with that.
async fn via_agent_or_ledger_viewed(
    settings: &Settings,
    req: Request,
    local: impl FnOnce(&Ledger) -> Result<Rows, CommandError>,
) -> Result<(Rows, Option<control::AgentView>), CommandError> {
    let dir = &settings.agent.state_dir;
    if let Some(mut resp) = control::ask(dir, &req).await {
        let view = resp.agent.take();
        return Ok((from_response(resp)?, view));
    }
    let ledger = match Ledger::open(dir) {
        Ok(l) => l,
        Err(LedgerError::InUse { .. }) => {
            return match ask_while_starting(dir, &req).await {
                Some(mut resp) => {
                    let view = resp.agent.take();
                    Ok((from_response(resp)?, view))
                }
                None => Err(CommandError::new(ExitCode::Usage, format!("another outbox process holds the ledger in {} and does not answer on its socket; try again in a moment", dir.display()))),
            };
        }
        Err(e) => return Err(ledger_err(e)),
    };
    let result = local(&ledger);
    ledger.close().map_err(ledger_err)?;
    Ok((result?, None))
}

/// The ledger is held but the socket did not answer: an agent may be starting (it opens the
/// ledger, then its socket; on a busy machine that can take seconds). Ask again, every 100 ms,
/// for up to 5 s.
async fn ask_while_starting(dir: &std::path::Path, req: &Request) -> Option<Response> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if let Some(r) = control::ask(dir, req).await {
            return Some(r);
        }
        if std::time::Instant::now() >= until {
            return None;
        }
    }
}

fn from_response(resp: Response) -> Result<Rows, CommandError> {
    if resp.ok {
        Ok((resp.entries, resp.messages))
    } else {
        let code = match resp.code {
            Some(2) => ExitCode::Usage,
            Some(3) => ExitCode::SignIn,
            _ => ExitCode::Failed,
        };
        Err(CommandError::new(
            code,
            resp.error
                .unwrap_or_else(|| "the agent refused the request".into()),
        ))
    }
}

pub async fn status(
    settings: Settings,
    json: bool,
    state: Option<String>,
    config_broken: bool,
) -> Result<ExitCode, CommandError> {
    let filter = match state.as_deref() {
        Some(s) => Some(
            super::status::parse_state_filter(s)
                .map_err(|e| CommandError::new(ExitCode::Usage, e))?,
        ),
        None => None,
    };
    let dir = settings.agent.state_dir.clone();
    let agent = agent_pid(&dir).await;
    // The agent's answer carries what it waits for; without one, the ledger alone.
    let ((mut entries, mut messages), view) = match control::ask(&dir, &Request::Status).await {
        Some(resp) => {
            let view = resp.agent.clone();
            (from_response(resp)?, view)
        }
        None => (
            via_agent_or_ledger(&settings, Request::Status, |l| {
                Ok((
                    l.list(None).map_err(ledger_err)?,
                    l.list_messages().map_err(ledger_err)?,
                ))
            })
            .await?,
            None,
        ),
    };
    // Mailed files whose move or delete waits for their sent copy (before any filter: a row
    // kept without its message still says so).
    let look_after_ms = settings.agent.look_after.as_millis() as u64;
    let mut sent_copy =
        super::status::sent_copy_waits(&entries, &messages, look_after_ms, |name| {
            (settings.mappings.iter())
                .find(|m| m.name == name)
                .map(|m| m.after)
        });
    // Files of a message whose send may have happened: they wait for its confirmation.
    sent_copy.extend(super::status::send_doubt_waits(
        &entries,
        &messages,
        look_after_ms,
    ));
    // A message's block lists its files whatever the filter keeps.
    let all_entries = (filter.is_some() && !json).then(|| entries.clone());
    if let Some(f) = filter {
        super::status::filter_rows(&mut entries, &mut messages, f, json);
    }
    let (running, pid) = match agent {
        Some(pid) => (true, pid),
        None => (view.is_some(), None),
    };
    let now = time::OffsetDateTime::now_utc();
    let capped = if running {
        Vec::new()
    } else {
        capped_mappings(&settings, &messages, now)
    };
    let facts = super::status::Facts {
        running,
        pid,
        view: view.as_ref(),
        now,
        capped,
        sent_copy,
        folders: settings
            .mappings
            .iter()
            .map(|m| (m.name.clone(), m.folder.clone()))
            .collect(),
    };
    if json {
        jsonln!(
            "{}",
            super::status::render_json(&entries, &messages, &facts)
        );
    } else {
        let color = super::out::stdout_colour();
        outln!("{}", super::status::agent_header(&facts, &dir));
        for line in crate::watch::unavailable_lines(&settings.mappings) {
            outln!("{line}");
        }
        for line in view.iter().flat_map(|v| &v.folders) {
            outln!("{line}");
        }
        match view.as_ref().and_then(|v| v.config.as_deref()) {
            // Another file names this state dir: its agent is not this config's.
            Some(theirs) if running && !same_file(theirs, &settings.source) => {
                outln!(
                    "note: {}",
                    other_config_note(pid, theirs, &settings.source, &dir)
                );
            }
            _ => {
                let read_ms = view.as_ref().and_then(|v| v.config_read_ms);
                if let Some(note) = pid
                    .filter(|_| !config_broken)
                    .and_then(|p| changed_since_read(p, read_ms, &settings.source))
                {
                    outln!("note: {note}");
                }
            }
        }
        if !entries.is_empty() || messages.is_empty() {
            out!("{}", super::status::render_table(&entries, &facts, color));
        }
        out!(
            "{}",
            super::status::render_messages(
                &messages,
                all_entries.as_deref().unwrap_or(&entries),
                facts.now,
                look_after_ms,
                facts.running
            )
        );
    }
    Ok(ExitCode::Ok)
}

/// Why `retry` does not take `e` because of the config: its mapping is no longer there (nothing
/// could be sent for it). `None` when the config did not load (nothing is known of it then).
fn unmapped(settings: &Settings, broken: bool, e: &LedgerEntry) -> Option<String> {
    (!broken && !settings.mappings.iter().any(|m| m.name == e.mapping)).then(|| {
        format!(
            "entry {id} is of the mapping `{m}`, no longer in the config {file}: nothing can be sent for it (`outbox cancel {id}` clears it)",
            id = e.id,
            m = crate::outside::printable(&e.mapping),
            file = settings.source.display()
        )
    })
}

pub async fn retry(
    settings: Settings,
    id: Option<String>,
    broken: bool,
) -> Result<ExitCode, CommandError> {
    let refuse = |e: &LedgerEntry| ops::retry_refusal(e).or_else(|| unmapped(&settings, broken, e));
    let req = match &id {
        Some(id) => Request::Retry { id: id.clone() },
        None => Request::RetryFailed,
    };
    // One entry of a mapping gone from the config: refused before anything is asked.
    if let Some(e) = match &id {
        Some(i) if !broken => via_agent_or_ledger(&settings, Request::Status, |l| {
            Ok((
                l.get(i).map_err(ledger_err)?.into_iter().collect(),
                Vec::new(),
            ))
        })
        .await?
        .0
        .into_iter()
        .find(|e| &e.id == i),
        _ => None,
    } {
        if let Some(why) = unmapped(&settings, broken, &e) {
            return Err(CommandError::new(ExitCode::Usage, why));
        }
    }
    let (entries, messages) = via_agent_or_ledger(&settings, req, |l| {
        // A refusal of this entry is a usage error, as the agent answers it.
        if let Some(e) = id
            .as_deref()
            .map(|i| l.get(i))
            .transpose()
            .map_err(ledger_err)?
            .flatten()
        {
            let sent = ops::sent_entry(l, &e, "retry").map_err(ledger_err)?;
            if let Some(why) = sent.or_else(|| refuse(&e)) {
                return Err(CommandError::new(ExitCode::Usage, why));
            }
        }
        // A refusal (a message that cannot be retried, saying why) is a usage error, as the
        // agent answers it.
        ops::retry_refused_by(l, id.as_deref(), &refuse).map_err(|err| match err {
            LedgerError::Invalid(why) => CommandError::new(ExitCode::Usage, why),
            other => ledger_err(other),
        })
    })
    .await?;
    // `--failed` leaves a failed entry whose file is gone or changed: say which, and why.
    let left = match id {
        Some(_) => Vec::new(),
        None => {
            let (all, _) = via_agent_or_ledger(&settings, Request::Status, |l| {
                Ok((
                    l.by_state(EntryState::Failed).map_err(ledger_err)?,
                    Vec::new(),
                ))
            })
            .await?;
            all.into_iter()
                .filter(|e| e.state == EntryState::Failed)
                .filter_map(|e| refuse(&e).map(|why| (e, why)))
                .collect()
        }
    };
    if entries.is_empty() && messages.is_empty() && left.is_empty() {
        outln!("no failed entries");
    }
    for m in &messages {
        let how = if m.resplit || ops::split_again(m) {
            "refused for its size: its files to be made into new messages that fit, its draft \
             deleted"
        } else if m.state == crate::core::model::MessageState::Sending {
            "to be sent only if its draft is still a draft"
        } else {
            "queued again"
        };
        outln!(
            "{}  {how}  message \"{}\"",
            m.id,
            crate::outside::printable(&m.letter.subject)
        );
    }
    for e in &entries {
        // What the retry did, from the entry as it now is.
        let what = if let Some(why) = unmapped(&settings, broken, e) {
            // Queued by the agent's own config, which still had it: said as it stands now.
            format!("queued by the running agent, but {why}")
        } else if e.state == EntryState::Done && e.after_pending {
            "attached; its move or delete to be done again".to_string()
        } else if e.replaces.iter().any(|r| r.entry == e.id) {
            // Verify found it wrong or missing (the entry no longer says which): a copy left on
            // the item goes once the new one is in; a missing one has nothing to delete.
            "to be attached again (the recorded attachment, if it is still on the item, is deleted once the new one is in)"
                .to_string()
        } else if matches!(
            e.state,
            EntryState::Pending | EntryState::Settling | EntryState::Uploading
        ) {
            "queued again".to_string()
        } else {
            format!("not queued: it is {}", e.state)
        };
        outln!("{}  {what}  {}", e.id, crate::outside::path(&e.path));
    }
    for (e, why) in &left {
        outln!("{}  not retried: {why}", e.id);
    }
    Ok(ExitCode::Ok)
}

/// `retry --resend ID`: the agent mails the file again now, or at its next start.
pub async fn resend(settings: Settings, id: String) -> Result<ExitCode, CommandError> {
    let (entries, _) = via_agent_or_ledger(&settings, Request::Resend { id: id.clone() }, |l| {
        let Some(e) = l.get(&id).map_err(ledger_err)? else {
            let why = ops::resend_unknown(l, &id).map_err(ledger_err)?;
            return Err(CommandError::new(ExitCode::Usage, why));
        };
        let mapping = settings.mappings.iter().find(|m| m.name == e.mapping);
        let e = ops::request_resend(l, &id, mapping).map_err(|err| match err {
            LedgerError::Invalid(why) => CommandError::new(ExitCode::Usage, why),
            other => ledger_err(other),
        })?;
        Ok((vec![e], Vec::new()))
    })
    .await?;
    for e in &entries {
        let when = if e.resend {
            "at the agent's next start"
        } else {
            "now"
        };
        outln!(
            "{}  to be mailed again, in a new message ({when})  {}",
            e.id,
            crate::outside::path(&e.path)
        );
    }
    Ok(ExitCode::Ok)
}

pub async fn cancel(settings: Settings, id: String) -> Result<ExitCode, CommandError> {
    let dir = settings.agent.state_dir.clone();
    let req = Request::Cancel { id: id.clone() };
    let mut session_to_delete = None;
    let ((entries, _), view) = via_agent_or_ledger_viewed(&settings, req, |l| {
        let Some(e) = l.get(&id).map_err(ledger_err)? else {
            let why = ops::cancel_unknown(l, &id).map_err(ledger_err)?;
            return Err(CommandError::new(ExitCode::Usage, why));
        };
        let sent = ops::sent_entry(l, &e, "cancel").map_err(ledger_err)?;
        if let Some(why) = sent.or_else(|| ops::cancel_refusal(&e)) {
            return Err(CommandError::new(ExitCode::Usage, why));
        }
        if e.state.is_terminal() {
            // Failed or rejected: cleared, so `run --once` stops counting it.
            return Ok((
                vec![ops::cancel_ended(l, &e).map_err(ledger_err)?],
                Vec::new(),
            ));
        }
        let sessions = SessionStore::open(&dir).map_err(ledger_err)?;
        if let Ok(Some(url)) = sessions.load(&id) {
            session_to_delete = Some((e.target.user.clone(), url));
        }
        let c = l
            .set_state(&id, EntryState::Canceled, |x| {
                x.error = Some(EntryError::new("canceled", "canceled by `outbox cancel`"));
                x.session = None;
                // `may_exist` stays: a later `retry` looks on the item before sending again.
            })
            .map_err(ledger_err)?;
        l.flush().map_err(ledger_err)?;
        let _ = sessions.remove(&id);
        Ok((vec![c], Vec::new()))
    })
    .await?;
    if let Some((user, url)) = session_to_delete {
        let client = GraphClient::new(&settings, Credentials::from_settings_in(&settings))
            .map_err(|e| CommandError::new(ExitCode::Config, e))?;
        if let Err(e) = client.delete_session(&user, &url).await {
            errln!("outbox: canceled, but the upload session could not be deleted ({e}); it expires on its own");
        }
    }
    let now = time::OffsetDateTime::now_utc();
    for e in &entries {
        // A request of it in flight, or a wait: canceled once it is answered or over, not yet.
        let wait = view
            .as_ref()
            .and_then(|v| v.waits.iter().find(|(id, _)| *id == e.id))
            .map(|(_, w)| w);
        let what = match super::status::cancel_asked_text(e, wait, now) {
            Some(t) if wait.is_some() => format!("{t} (`outbox status` shows it canceled then)"),
            Some(_) => "cancel asked: it stops once its request in flight is answered (`outbox status` shows it canceled then)".to_owned(),
            _ => "canceled".to_owned(),
        };
        outln!("{}  {what}  {}", e.id, crate::outside::path(&e.path));
    }
    Ok(ExitCode::Ok)
}

/// `outbox pause` / `outbox resume`: asked of the running agent, the only one a pause holds.
/// With no agent there is nothing to pause: said, exit 1.
pub async fn pause_or_resume(settings: Settings, req: Request) -> Result<ExitCode, CommandError> {
    let dir = settings.agent.state_dir.clone();
    let (verb, mapping) = match &req {
        Request::Pause { mapping, .. } => ("pause", mapping.clone()),
        Request::Resume { mapping } => ("resume", mapping.clone()),
        _ => ("ask", None),
    };
    let resp = match control::ask(&dir, &req).await {
        Some(r) => r,
        None => {
            // The agent may be starting (it holds the ledger, its socket not up yet). No ledger
            // yet: no agent ever ran here, and nothing is made by asking.
            let again = if !dir.join("ledger").join("db").exists() {
                None
            } else {
                match Ledger::open(&dir) {
                    Err(LedgerError::InUse { .. }) => ask_while_starting(&dir, &req).await,
                    Ok(l) => {
                        let _ = l.close();
                        None
                    }
                    Err(_) => None,
                }
            };
            again.ok_or_else(|| {
                CommandError::new(
                    ExitCode::Failed,
                    format!(
                        "no agent is running on state dir {}: nothing to {verb}. A pause holds a \
                         running agent only; `outbox run` (or `outbox service install`) starts one, \
                         and it takes every file waiting in the folders",
                        crate::outside::path(&dir)
                    ),
                )
            })?
        }
    };
    from_response(resp.clone())?;
    let now = time::OffsetDateTime::now_utc();
    let (held, resumed) = resp.agent.map(|v| (v.held, v.resumed)).unwrap_or_default();
    // `Some(empty)`: the agent says nothing it names was paused.
    let nothing = resumed.is_some_and(|r| r.is_empty());
    match (verb, &mapping) {
        ("resume", Some(m)) if nothing => outln!(
            "nothing was paused: mapping {} takes new files already",
            crate::outside::printable(m)
        ),
        ("resume", None) if nothing => {
            outln!("nothing was paused: every mapping takes new files already")
        }
        ("resume", Some(m)) => outln!(
            "resumed: mapping {}; new files are taken again, and those dropped while it was paused",
            crate::outside::printable(m)
        ),
        ("resume", None) => outln!(
            "resumed: every mapping; new files are taken again, and those dropped while paused"
        ),
        _ => {}
    }
    for h in &held {
        outln!(
            "paused: {}",
            crate::outside::printable(&super::status::held_text(h, now))
        );
    }
    Ok(ExitCode::Ok)
}
