//! `outbox check`: validate the config, each mapping's folder, sign-in and every target item,
//! printing one line per finding (`ok`, `warn`, `error`, with what to do), or with `--json` one
//! array of `{"level","what","message"}`. Exit 0 with no error (warnings alone pass, so `outbox
//! check && outbox service install` works), 1 on any error, 78 when the config itself is bad.
//!
//! It only reads: the one write is a throw-away temp file proving a folder is writable when
//! `after` needs that.

use crate::auth::{AuthError, Credentials};
use crate::cli::exit::{CommandError, ExitCode};
use crate::config::units::size_both;
use crate::config::{After, AuthMethod, ItemKind, Mapping, Settings};
use crate::graph::retry::RetryPolicy;
use crate::graph::{ErrorClass, GraphClient, ItemRef, RequestError};
use std::path::Path;
use std::time::Duration;

/// Outlook's default tenant message size limit counts the encoded size (35 MB); Graph's reported
/// attachment sizes are already inflated, so warn once they pass about 25 MB.
const SIZE_WARN_BYTES: u64 = 25_000_000;
/// Exchange Online's default message size limit.
const SIZE_LIMIT_BYTES: u64 = 35_000_000;

/// A Graph client for commands a person is waiting on (check, items, verify): a few quick
/// retries instead of the agent's patient minutes.
pub(crate) fn interactive_client(settings: &Settings) -> Result<GraphClient, String> {
    Ok(
        GraphClient::new(settings, Credentials::from_settings_in(settings))?.with_retry_policy(
            RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(300),
                cap: Duration::from_secs(5),
                max_retry_after: Duration::from_secs(30),
            },
        ),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Error,
}

/// The findings so far; printed as they come (text) or all at the end (`--json`).
#[derive(Default)]
struct Report {
    json: bool,
    /// The tags in colour (`out::stdout_colour`).
    colour: bool,
    errors: usize,
    findings: Vec<serde_json::Value>,
}

impl Report {
    fn line(&mut self, level: Level, what: &str, msg: impl AsRef<str>) {
        use crate::cli::out::{paint, Tone};
        let (tag, word, tone) = match level {
            Level::Ok => ("ok   ", "ok", Tone::Good),
            Level::Warn => ("warn ", "warn", Tone::Doubt),
            Level::Error => ("error", "error", Tone::Bad),
        };
        if level == Level::Error {
            self.errors += 1;
        }
        let msg = crate::secret::redact(msg.as_ref());
        if self.json {
            self.findings
                .push(serde_json::json!({"level": word, "what": what, "message": msg}));
        } else {
            let tag = paint(tag, tone, self.colour);
            outln!("{tag}  {what}: {msg}");
        }
    }

    fn finish(self) -> ExitCode {
        if self.json {
            let text = serde_json::to_string_pretty(&self.findings).unwrap_or_default();
            jsonln!("{text}");
        }
        if self.errors == 0 {
            ExitCode::Ok
        } else {
            ExitCode::Failed
        }
    }
}

/// The config is not used (its permissions, its text, or it is missing): each reason is a
/// finding in the usual layout, `error  config: FILE:LINE: KEY: what to do` (with `--json`, one
/// object each with its `file`, `line` and `key`, and the errors on stderr too); exit 78.
fn unusable(errors: Vec<crate::config::ConfigError>, json: bool) -> Result<ExitCode, CommandError> {
    let mut r = Report {
        json,
        colour: !json && crate::cli::out::stdout_colour(),
        ..Report::default()
    };
    for c in &errors {
        if json {
            r.errors += 1;
            r.findings.push(serde_json::json!({
                "level": "error",
                "what": "config",
                "message": crate::secret::redact(&c.to_string()),
                "file": c.file.display().to_string(),
                "line": c.line,
                "key": c.key,
            }));
        } else {
            r.line(Level::Error, "config", c.to_string());
        }
    }
    r.finish();
    if json {
        // stdout is the document; a person running it still reads why on stderr.
        return Err(CommandError::config_in_order(errors));
    }
    Ok(ExitCode::Config)
}

pub async fn run(flag: Option<&Path>, json: bool) -> Result<ExitCode, CommandError> {
    // A config file is required here: checking built-in defaults would tell the user nothing.
    let (path, _) = super::config_path(flag);
    let settings = match crate::private::load_config(&path) {
        Ok(s) => s,
        Err(errors) => return unusable(errors, json),
    };
    let mut r = Report {
        json,
        colour: !json && crate::cli::out::stdout_colour(),
        ..Report::default()
    };
    r.line(
        Level::Ok,
        "config",
        format!(
            "{} ({} mapping{})",
            settings.source.display(),
            settings.mappings.len(),
            if settings.mappings.len() == 1 {
                ""
            } else {
                "s"
            }
        ),
    );
    let dir = &settings.agent.state_dir;
    if let Some(pid) = super::entries::agent_pid(dir).await {
        let (theirs, read_ms) = super::entries::agent_config_read(dir).await;
        match theirs {
            // Another file names this state dir: the running agent is not this config's.
            Some(theirs) if !super::entries::same_file(&theirs, &settings.source) => {
                r.line(
                    Level::Warn,
                    "config",
                    super::entries::other_config_note(pid, &theirs, &settings.source, dir),
                );
            }
            _ => {
                if let Some(note) = pid
                    .and_then(|p| super::entries::changed_since_read(p, read_ms, &settings.source))
                {
                    r.line(Level::Warn, "config", note);
                }
            }
        }
    }
    if settings.mappings.is_empty() {
        r.line(
            Level::Warn,
            "config",
            "no [[mapping]] is configured, so there is nothing to watch: add one: a [[mapping]] table with a folder and its target (`outbox man` shows its keys)",
        );
    }
    for m in &settings.mappings {
        check_folder(&mut r, m);
        if let crate::config::Target::NewMessage(t) = &m.target {
            check_mailing(&mut r, m, t, &settings);
        }
    }
    // The placeholder `init` writes: no sign-in can work until it is set.
    let placeholder = super::login::placeholder_client_id(&settings);
    if let Some(why) = &placeholder {
        r.line(Level::Error, "auth.client_id", why);
    }
    if placeholder.is_none() && check_sign_in(&mut r, &settings).await {
        check_send_permission(&mut r, &settings).await;
        match interactive_client(&settings) {
            Ok(client) => {
                for m in &settings.mappings {
                    // A mailing mapping has no item: each message makes its own draft.
                    if matches!(m.target, crate::config::Target::Item { .. }) {
                        check_item(&mut r, &client, m).await;
                    }
                }
            }
            Err(e) => r.line(Level::Error, "graph", e),
        }
    } else if !settings.mappings.is_empty() {
        r.line(
            Level::Warn,
            "items",
            "not checked: they need a working sign-in (fix the problem above, then run `outbox check` again)",
        );
    }
    Ok(r.finish())
}

fn check_folder(r: &mut Report, m: &Mapping) {
    let what = format!("mapping {} folder", m.name);
    let f = &m.folder;
    match std::fs::metadata(f) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return r.line(
                Level::Error,
                &what,
                format!(
                    "{} does not exist: create it (mkdir -p) or fix `folder`",
                    f.display()
                ),
            )
        }
        Err(e) => {
            return r.line(Level::Error, &what, format!("{}: {e}", f.display()));
        }
        Ok(md) if !md.is_dir() => {
            return r.line(
                Level::Error,
                &what,
                format!(
                    "{} is not a directory: point `folder` at a directory",
                    f.display()
                ),
            )
        }
        Ok(_) => {}
    }
    if let Err(e) = std::fs::read_dir(f) {
        return r.line(
            Level::Error,
            &what,
            format!("{} is not readable ({e}): fix its permissions", f.display()),
        );
    }
    if matches!(m.after, After::Move | After::Delete) {
        let verb = if m.after == After::Move {
            "move"
        } else {
            "delete"
        };
        // Only a real write proves it (ACLs, read-only mounts); the file is gone on drop.
        if let Err(e) = tempfile::Builder::new()
            .prefix(".outbox-check-")
            .tempfile_in(f)
        {
            return r.line(
                Level::Error,
                &what,
                format!(
                    "{} is not writable ({e}), but after = \"{verb}\" needs that: fix its permissions or set after = \"keep\"",
                    f.display()
                ),
            );
        }
    }
    r.line(Level::Ok, &what, f.display().to_string());
}

fn auth_line(r: &mut Report, e: &AuthError, method: &AuthMethod) {
    let todo = match e {
        AuthError::NotSignedIn(_) => match method {
            AuthMethod::DeviceCode => "sign in with `outbox login`",
            AuthMethod::TokenEnv { .. } => {
                "put a Graph access token in that variable (`outbox login` does not apply to token_env)"
            }
            AuthMethod::TokenCommand { .. } => "run the token command by hand and fix what it prints",
            AuthMethod::ClientCredentials { .. } => {
                "provide the secret or certificate the config names"
            }
        },
        AuthError::Refused(_) => {
            "the identity platform refused: run `outbox login` again, or check client_id, tenant and the secret"
        }
        AuthError::Command(_) => "run the token command by hand and fix what it prints",
        AuthError::Unsupported(_) => "pick another auth.method in the config",
        AuthError::Unavailable(_) => "the identity platform could not be reached: check the network, proxy and auth.authority",
    };
    // One hint per cause: the error's own advice (`run `outbox login``, "set it to ...") is it.
    let text = e.to_string();
    if text.contains("`outbox login`") || text.contains("; set it to") {
        r.line(Level::Error, "sign-in", text);
    } else {
        r.line(Level::Error, "sign-in", format!("{text}: {todo}"));
    }
}

/// Get a token and, for delegated sign-in, ask Graph who it is. True when Graph can be used.
async fn check_sign_in(r: &mut Report, settings: &Settings) -> bool {
    // An app-only token has no `/me`: getting the token is what can be checked here.
    if matches!(settings.auth.method, AuthMethod::ClientCredentials { .. }) {
        return match Credentials::from_settings_in(settings).bearer().await {
            Ok(_) => {
                r.line(Level::Ok, "sign-in", "got an application token");
                true
            }
            Err(e) => {
                auth_line(r, &e, &settings.auth.method);
                false
            }
        };
    }
    let client = match interactive_client(settings) {
        Ok(c) => c,
        Err(e) => {
            r.line(Level::Error, "graph", e);
            return false;
        }
    };
    match client.get_json("me", client.url(&["me"])).await {
        Ok(v) => {
            let who = ["userPrincipalName", "mail", "displayName", "id"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
                .unwrap_or("the signed-in user");
            r.line(Level::Ok, "sign-in", format!("signed in as {who}"));
            true
        }
        Err(RequestError::Auth(e)) => {
            auth_line(r, &e, &settings.auth.method);
            false
        }
        Err(RequestError::Graph(e)) if e.class == ErrorClass::SignIn || e.status == Some(401) => {
            r.line(
                Level::Error,
                "sign-in",
                format!(
                    "Graph refused the token ({} {}): {}",
                    e.status.unwrap_or(401),
                    e.code,
                    e.advice().unwrap_or("sign in again")
                ),
            );
            false
        }
        Err(e) => {
            r.line(
                Level::Error,
                "sign-in",
                crate::cli::out::cannot_reach(&settings.graph.base_url, &e.to_string()),
            );
            false
        }
    }
}

/// A mapping that sends needs `Mail.Send`, which `Mail.ReadWrite` does not give: said when the
/// token shows its permissions (a JWT's `scp` or `roles`); an opaque token is not judged.
async fn check_send_permission(r: &mut Report, settings: &Settings) {
    let senders: Vec<&str> = settings
        .mappings
        .iter()
        .filter(|m| matches!(&m.target, crate::config::Target::NewMessage(t) if t.send))
        .map(|m| m.name.as_str())
        .collect();
    if senders.is_empty() {
        return;
    }
    let Ok(token) = Credentials::from_settings_in(settings).bearer().await else {
        return;
    };
    let Some(granted) = crate::auth::jwt_permissions(&token.secret) else {
        return;
    };
    let names = which_need(&senders);
    if granted.iter().any(|p| p.eq_ignore_ascii_case("Mail.Send")) {
        return r.line(
            Level::Ok,
            "sign-in",
            format!("the token grants Mail.Send, which {names} to send"),
        );
    }
    let todo = match &settings.auth.method {
        AuthMethod::DeviceCode => {
            "run `outbox login` again (it asks for Mail.Send) and consent".to_owned()
        }
        AuthMethod::ClientCredentials { .. } => {
            "add the application permission Mail.Send to the app registration and grant admin consent"
                .to_owned()
        }
        AuthMethod::TokenEnv { var } => {
            format!("put a token that grants Mail.Send in ${var}")
        }
        AuthMethod::TokenCommand { .. } => {
            "make the token command ask for Mail.Send".to_owned()
        }
    };
    r.line(
        Level::Error,
        "sign-in",
        format!(
            "the token does not grant Mail.Send, which {names} to send: each send \
             would be refused (403) and its draft left in Drafts; {todo} (or set send = false to \
             leave the drafts for a person)"
        ),
    );
}

/// "mapping a needs", "mappings a and b need", "mappings a, b and c need": the subject and verb
/// of a sentence about the mappings `names`.
fn which_need(names: &[&str]) -> String {
    match names {
        [] => "no mapping needs".to_owned(),
        [one] => format!("mapping {one} needs"),
        [first @ .., last] => format!("mappings {} and {last} need", first.join(", ")),
    }
}

/// A mailing mapping: what it sends, to whom, and at what pace the mailbox allows. Its
/// templates, addresses and body file were checked when the config loaded (exit 78 otherwise).
fn check_mailing(
    r: &mut Report,
    m: &Mapping,
    t: &crate::config::MessageTemplate,
    settings: &Settings,
) {
    let what = format!("mapping {} mail", m.name);
    let mut to: Vec<String> = t.to.clone();
    to.extend(t.cc.iter().map(|a| format!("cc {a}")));
    to.extend(t.bcc.iter().map(|a| format!("bcc {a}")));
    let grouping = match t.group {
        crate::config::Group::File => "one message per file".to_owned(),
        crate::config::Group::Batch => format!(
            "the files that settle within {} of each other in one message (split into messages \
             that fit max_message_size, {})",
            humantime_short(t.batch_quiet),
            size_both(t.max_message_size)
        ),
    };
    let fate = if t.send {
        "sent"
    } else {
        "left as drafts (send = false)"
    };
    r.line(
        Level::Ok,
        &what,
        format!(
            "to {}: {grouping}, {fate}; subject \"{}\"; templates and addresses valid",
            to.join(", "),
            crate::outside::printable(&t.subject)
        ),
    );
    let pace = match &settings.agent.mailbox_sends {
        Some(b) => {
            let per_minute = b.amount as f64 * 60.0 / b.window.as_secs_f64().max(0.001);
            format!(
                "mailbox {} sends at most {} message(s) per {} (agent.mailbox_sends; about {per_minute:.0} a minute); a backlog drains at that pace",
                m.user,
                b.amount,
                humantime_short(b.window)
            )
        }
        None => format!(
            "mailbox {}: sending is not paced (agent.mailbox_sends = \"off\"); Exchange Online refuses more than 30 a minute",
            m.user
        ),
    };
    let level = if settings.agent.mailbox_sends.is_some() {
        Level::Ok
    } else {
        Level::Warn
    };
    r.line(level, &what, pace);
}

/// `30s`, `1m`, `2h`, as the config writes durations.
fn humantime_short(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

async fn check_item(r: &mut Report, client: &GraphClient, m: &Mapping) {
    let (kind, list_cmd) = match m.kind {
        ItemKind::Message => ("message", "outbox items messages"),
        ItemKind::Event => ("event", "outbox items events"),
    };
    let what = format!("mapping {} {kind}", m.name);
    let item = ItemRef::new(m.user.clone(), m.kind, m.item_id.clone());
    let url = client.url(&item.segments());
    let v = match client.get_json(&m.user, url).await {
        Ok(v) => v,
        Err(RequestError::Graph(e)) if e.status == Some(404) => {
            if let Some(f) = crate::graph::hints::look_again(client, &item, &e).await {
                return r.line(
                    Level::Error,
                    &what,
                    format!("not found: {}", crate::graph::hints::for_mapping(f)),
                );
            }
            return r.line(
                Level::Error,
                &what,
                format!(
                    "not found: pick another with `{list_cmd}{}` ({} {})",
                    if m.user == "me" {
                        String::new()
                    } else {
                        format!(" --user {}", m.user)
                    },
                    m.item_id,
                    e.code,
                ),
            );
        }
        Err(RequestError::Graph(e)) => {
            let advice = e.advice().map(|a| format!(": {a}")).unwrap_or_default();
            return r.line(
                Level::Error,
                &what,
                format!(
                    "{} {}: {}{advice}",
                    e.status.map(|s| s.to_string()).unwrap_or_default(),
                    e.code,
                    e.message
                ),
            );
        }
        Err(e) => return r.line(Level::Error, &what, e.to_string()),
    };
    let subject = v
        .get("subject")
        .and_then(|s| s.as_str())
        .unwrap_or("(no subject)");
    if m.kind == ItemKind::Message && v.get("isDraft").and_then(|d| d.as_bool()) == Some(false) {
        r.line(
            Level::Warn,
            &what,
            format!(
                "\"{subject}\" is not a draft (already sent?): Graph will likely refuse attachments; pick a draft with `{list_cmd}`"
            ),
        );
        return;
    }
    let mut segs = item.segments();
    segs.push("attachments");
    let mut url = client.url(&segs);
    url.query_pairs_mut().append_pair("$select", "id,name,size");
    let (count, total) = match client.get_json(&m.user, url).await {
        Ok(v) => v
            .get("value")
            .and_then(|a| a.as_array())
            .map(|a| {
                (
                    a.len(),
                    a.iter()
                        .filter_map(|x| x.get("size").and_then(|s| s.as_u64()))
                        .sum::<u64>(),
                )
            })
            .unwrap_or((0, 0)),
        Err(e) => {
            return r.line(
                Level::Error,
                &what,
                format!("cannot list its attachments: {e}"),
            )
        }
    };
    r.line(size_level(total), &what, size_text(subject, count, total));
}

fn size_level(total: u64) -> Level {
    if total >= SIZE_WARN_BYTES {
        Level::Warn
    } else {
        Level::Ok
    }
}

/// What the attachments already on an item mean for the tenant's message size limit: fine, near
/// it, or over it by how much.
fn size_text(subject: &str, count: usize, total: u64) -> String {
    let mb = total as f64 / 1e6;
    let files = if count == 1 {
        "attachment"
    } else {
        "attachments"
    };
    if total > SIZE_LIMIT_BYTES {
        let times = total as f64 / SIZE_LIMIT_BYTES as f64;
        format!(
            "\"{subject}\" already carries {count} {files}, {mb:.1} MB: {times:.1}× over the tenant's \
             default message size limit (35 MB); further files will fail with ErrorMessageSizeExceeded \
             unless the tenant's limit was raised: start a new item"
        )
    } else if total >= SIZE_WARN_BYTES {
        format!(
            "\"{subject}\" already carries {count} {files}, {mb:.1} MB: near the tenant's message size limit \
             (35 MB by default, about 25 MB of raw attachments); further files may fail with \
             ErrorMessageSizeExceeded: start a new item"
        )
    } else {
        format!("\"{subject}\", {count} {files}, {mb:.1} MB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mappings_that_need_a_permission_read_as_english() {
        assert_eq!(which_need(&["scans"]), "mapping scans needs");
        assert_eq!(
            which_need(&["scans", "batch"]),
            "mappings scans and batch need"
        );
        assert_eq!(which_need(&["a", "b", "c"]), "mappings a, b and c need");
    }

    #[test]
    fn size_wording_says_near_or_how_far_over() {
        assert_eq!(size_level(1_000_000), Level::Ok);
        assert_eq!(size_text("s", 1, 1_000_000), "\"s\", 1 attachment, 1.0 MB");
        assert_eq!(size_level(30_000_000), Level::Warn);
        assert!(size_text("s", 3, 30_000_000).contains("30.0 MB: near the tenant's"));
        let over = size_text("s", 9, 157_500_000);
        assert!(over.contains("4.5× over"), "{over}");
        assert!(!over.contains("near"), "{over}");
    }
}
