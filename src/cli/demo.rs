//! `outbox demo [--exit-after N]`: the zero-setup tour. It starts the sandbox in this process,
//! creates a draft message there through the admin API, writes a real config (in a temp dir, so
//! nothing lands inside the watched folder), watches `./outbox-demo/attach` with the real agent,
//! and prints one line per attachment as it appears on the message.
//!
//! It drops 3 sample files to start with (small, ~1 MiB, ~4 MiB so an upload session shows;
//! names with spaces and unicode; `--no-samples`: none), says what the folder ignores, and
//! reports a failed, rejected or ignored file in a line of its own (the agent's log lines stay
//! silent unless -v). With `--exit-after N` it drops N samples and exits 0 once all of them are
//! attached and the mailing folder's sample is sent.
//!
//! Beside it, `./outbox-demo/mail` is a mailing folder (`[mapping.new_message]`, one message per
//! file to a sandbox recipient): a file dropped there becomes a draft, is attached, and is sent;
//! the tour prints each sent message as the sandbox's Sent Items shows it.

use crate::agent::{self, AgentError, RunOptions};
use crate::auth::Credentials;
use crate::cli::exit::{CommandError, ExitCode};
use crate::config::Settings;
use crate::sandbox::{Sandbox, SandboxOptions};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The one directory the demo creates in the current directory (a clone ignores it in
/// `.gitignore`); its two folders below.
pub const DEMO_DIR: &str = "outbox-demo";
/// The watched folder, in `DEMO_DIR`.
pub const DEMO_ATTACH_DIR: &str = "attach";
/// The mailing folder beside it, in `DEMO_DIR`: each file is mailed in a message of its own.
pub const DEMO_MAIL_DIR: &str = "mail";
/// Where the demo's messages go (the sandbox delivers nothing; Sent Items shows them).
const DEMO_RECIPIENT: &str = "demo@example.com";
/// How often the sandbox is asked what is on the message.
const POLL: Duration = Duration::from_millis(300);
/// Sample files dropped when no `--exit-after` says how many (`--no-samples`: none).
const DEFAULT_SAMPLES: usize = 3;
/// `--exit-after`: give up (exit 1) when the files are not all attached by then.
const EXIT_AFTER_TIMEOUT: Duration = Duration::from_secs(120);

/// One attachment as the sandbox's admin API reports it (raw stored size).
#[derive(Debug, Clone, serde::Deserialize)]
struct AdminAttachment {
    id: String,
    name: String,
    size: u64,
    sha256: String,
}

/// A sent message as the sandbox's admin API reports it.
#[derive(Debug, Clone, serde::Deserialize)]
struct AdminSent {
    id: String,
    subject: String,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    attachments: Vec<AdminSentAttachment>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct AdminSentAttachment {
    name: String,
}

/// A sample file `--exit-after` drops: name and size.
fn samples(n: usize) -> Vec<(String, usize)> {
    const BASE: [(&str, &str, usize); 3] = [
        ("Meeting notes – résumé", "txt", 6 * 1024),
        ("photo of the whiteboard", "bin", 1024 * 1024),
        (
            "Quarterly report 📊 (large)",
            "bin",
            4 * 1024 * 1024 + 12_345,
        ),
    ];
    (0..n)
        .map(|i| {
            let (stem, ext, size) = BASE[i % BASE.len()];
            let name = if i < BASE.len() {
                format!("{stem}.{ext}")
            } else {
                format!("{stem} {}.{ext}", i / BASE.len() + 1)
            };
            (name, size)
        })
        .collect()
}

/// Deterministic content: readable text for `.txt`, pseudo-random bytes otherwise.
fn sample_bytes(name: &str, size: usize, seed: u64) -> Vec<u8> {
    if name.ends_with(".txt") {
        let line =
            "outbox demo: this file was dropped into ./outbox-demo/attach and attached exactly once.\n";
        return line.bytes().cycle().take(size).collect();
    }
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// Write `bytes` as `dir/name` the way well-behaved apps do: a hidden temp name (excluded by the
/// default `.*` pattern), then a rename, so the agent never sees a half-written file.
/// The temp name is created new (`O_EXCL`: never through a link someone planted there).
fn drop_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!(".{name}.part"));
    // A stale one (an earlier demo stopped mid-write), or a link: removed, never written through.
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?
        .write_all(bytes)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// The demo writes its sample files into `dir`: it must be a real folder of the user's, not
/// one another user made first (in a shared folder such as /tmp) with links in it to files of
/// the user's.
fn own_folder(dir: &Path) -> Result<(), CommandError> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| failed(format!("cannot read {}: {e}", dir.display())))?;
    #[cfg(unix)]
    let theirs = {
        use std::os::unix::fs::MetadataExt;
        meta.uid() != rustix::process::geteuid().as_raw()
    };
    #[cfg(not(unix))]
    let theirs = false;
    if !meta.is_dir() || theirs {
        return Err(failed(format!(
            "{} is not a folder of yours (a link, or another user made it); the demo writes its sample files there: run it in a folder of yours, or remove that one",
            crate::outside::path(dir)
        )));
    }
    Ok(())
}

use crate::config::units::human_size;

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

fn failed(msg: impl Into<String>) -> CommandError {
    CommandError::new(ExitCode::Failed, msg)
}

/// Write the demo's config file and load it the same way `outbox run` would.
fn write_config(
    config_dir: &Path,
    graph_base: &str,
    folder: &Path,
    mail_folder: &Path,
    item_id: &str,
) -> Result<Settings, CommandError> {
    let path = config_dir.join("config.toml");
    let state = config_dir.join("state");
    let text = format!(
        "# Written by `outbox demo`: the sandbox stands in for Microsoft Graph.\n\
         [graph]\nbase_url = {base}\n\n\
         [auth]\n# The demo passes the sandbox's token directly; this variable is never read.\n\
         method = \"token_env\"\ntoken_env = \"OUTBOX_DEMO_UNUSED_TOKEN\"\n\n\
         [agent]\nstate_dir = {state}\nsettle = \"500ms\"\n\n\
         [[mapping]]\nname = \"demo\"\nfolder = {folder}\nmessage = {item}\n\n\
         # A mailing folder: every file dropped here is mailed in a message of its own.\n\
         [[mapping]]\nname = \"mail\"\nfolder = {mail}\n\
         [mapping.new_message]\nto = [{to}]\nsubject = \"outbox demo: {{name}}\"\n\
         body = \"Attached: {{names}} ({{size}}).\"\n",
        base = toml_str(graph_base),
        state = toml_str(&state.to_string_lossy()),
        folder = toml_str(&folder.to_string_lossy()),
        mail = toml_str(&mail_folder.to_string_lossy()),
        to = toml_str(DEMO_RECIPIENT),
        item = toml_str(item_id),
    );
    std::fs::write(&path, text)
        .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
    Ok(Settings::load(&path)?)
}

async fn admin_sent(http: &reqwest::Client, origin: &str) -> Result<Vec<AdminSent>, String> {
    let resp = http
        .get(format!("{origin}/_admin/sent"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("sandbox answered {}", resp.status()));
    }
    resp.json().await.map_err(|e| e.to_string())
}

async fn admin_attachments(
    http: &reqwest::Client,
    origin: &str,
    item: &str,
) -> Result<Vec<AdminAttachment>, String> {
    let enc: String = url::form_urlencoded::byte_serialize(item.as_bytes()).collect();
    let url = format!(
        "{origin}/_admin/items/{}/attachments",
        enc.replace('+', "%20")
    );
    let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("sandbox answered {}", resp.status()));
    }
    resp.json().await.map_err(|e| e.to_string())
}

pub async fn run(exit_after: Option<usize>, no_samples: bool) -> Result<ExitCode, CommandError> {
    let token = format!("demo-{}", hex::encode(rand::random::<[u8; 16]>()));
    let sandbox = Sandbox::start(SandboxOptions {
        port: 0,
        data_dir: None,
        tls: false,
        token: Some(token.clone()),
    })
    .await
    .map_err(|e| failed(format!("cannot start the sandbox: {e:#}")))?;
    let result = tour(&sandbox, token, exit_after, no_samples).await;
    sandbox.shutdown().await;
    result
}

async fn tour(
    sandbox: &Sandbox,
    token: String,
    exit_after: Option<usize>,
    no_samples: bool,
) -> Result<ExitCode, CommandError> {
    let origin = sandbox.origin();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| failed(format!("cannot set up HTTP: {e}")))?;
    say(format!(
        "▶ started a local Microsoft Graph sandbox at {origin}"
    ));

    // A draft message to attach to, created through the sandbox's admin API.
    let resp = http
        .post(format!("{origin}/_admin/items"))
        .json(&serde_json::json!({"kind": "message", "user": "me", "isDraft": true, "subject": "outbox demo"}))
        .send()
        .await
        .map_err(|e| failed(format!("cannot reach the sandbox: {e}")))?;
    let item: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| failed(format!("the sandbox did not create the demo message: {e}")))?;
    let item_id = item
        .get("id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| failed("the sandbox did not return the demo message's id"))?
        .to_owned();
    say(format!(
        "▶ created the draft message \"outbox demo\" (id {item_id})"
    ));

    let cwd = std::env::current_dir()
        .map_err(|e| failed(format!("cannot read the current directory: {e}")))?;
    let folder: PathBuf = cwd.join(DEMO_DIR).join(DEMO_ATTACH_DIR);
    let mail_folder: PathBuf = cwd.join(DEMO_DIR).join(DEMO_MAIL_DIR);
    for f in [&folder, &mail_folder] {
        std::fs::create_dir_all(f)
            .map_err(|e| failed(format!("cannot create {}: {e}", f.display())))?;
    }
    for f in [&cwd.join(DEMO_DIR), &folder, &mail_folder] {
        own_folder(f)?;
    }
    // Config and state live outside the watched folder, and go away with the sandbox.
    let config_dir = tempfile::Builder::new()
        .prefix("outbox-demo-")
        .tempdir()
        .map_err(|e| failed(format!("cannot create a temp dir: {e}")))?;
    let settings = write_config(
        config_dir.path(),
        &sandbox.graph_base(),
        &folder,
        &mail_folder,
        &item_id,
    )?;
    let state_dir = settings.agent.state_dir.clone();
    let mapping = settings.mappings.first().cloned();
    say(format!(
        "▶ watching {} (config: {})",
        folder.display(),
        settings.source.display()
    ));
    if let Some(m) = &mapping {
        say(format!(
            "  ignored there: subfolders, and names matching {}",
            m.exclude_patterns.join(" ")
        ));
    }
    say(format!(
        "▶ and {}: each file dropped there is mailed to {DEMO_RECIPIENT} in a message of its own",
        mail_folder.display()
    ));

    let stop = CancellationToken::new();
    let agent_task = tokio::spawn(agent::run(
        settings,
        Credentials::fixed(token),
        RunOptions {
            once: false,
            stop: Some(stop.clone()),
        },
    ));

    let mut expected: HashSet<String> = HashSet::new();
    let to_drop = match exit_after {
        Some(n) => n,
        None if no_samples => 0,
        None => DEFAULT_SAMPLES,
    };
    for (i, (name, size)) in samples(to_drop).into_iter().enumerate() {
        let bytes = sample_bytes(&name, size, i as u64 + 1);
        drop_file(&folder, &name, &bytes).map_err(|e| {
            failed(format!(
                "cannot write a sample file in {}: {e}",
                folder.display()
            ))
        })?;
        say(format!("  dropped   {name} ({})", human_size(size as u64)));
        expected.insert(name);
    }
    // One file to mail, when samples are dropped at all.
    let mut mail_expected: HashSet<String> = HashSet::new();
    if to_drop > 0 {
        let name = "invoice 2026-0042.pdf".to_owned();
        let bytes = sample_bytes(&name, 48 * 1024, 99);
        drop_file(&mail_folder, &name, &bytes).map_err(|e| {
            failed(format!(
                "cannot write a sample file in {}: {e}",
                mail_folder.display()
            ))
        })?;
        say(format!(
            "  dropped   {name} ({}) to mail",
            human_size(bytes.len() as u64)
        ));
        mail_expected.insert(name);
    }
    match exit_after {
        Some(n) => say(format!("▶ waiting for {n} file(s) to be attached…")),
        None => say(format!(
            "▶ drop files into {} and watch them get attached; Ctrl-C to stop",
            folder.display()
        )),
    }

    let started = Instant::now();
    let mut seen: HashMap<String, AdminAttachment> = HashMap::new();
    let mut mailed: HashMap<String, AdminSent> = HashMap::new();
    let mut reported: HashSet<String> = HashSet::new();
    let mut ignored: HashSet<std::ffi::OsString> = HashSet::new();
    let mut ticker = tokio::time::interval(POLL);
    let mut agent_task = agent_task;
    let signal = crate::agent::shutdown_signal();
    tokio::pin!(signal);
    let outcome = loop {
        tokio::select! {
            _ = &mut signal => break Ok(ExitCode::Ok),
            res = &mut agent_task => {
                // The agent stopped on its own: it could not start, or it was signalled.
                return match res {
                    Ok(Ok(_)) => Ok(ExitCode::Ok),
                    Ok(Err(AgentError::Ledger(e))) => Err(CommandError::from(e)),
                    Ok(Err(AgentError::Setup(s))) => Err(failed(s)),
                    Err(e) => Err(failed(format!("the agent stopped unexpectedly: {e}"))),
                };
            }
            _ = ticker.tick() => {}
        }
        match admin_attachments(&http, &origin, &item_id).await {
            Ok(list) => {
                for a in list {
                    if seen.contains_key(&a.id) {
                        continue;
                    }
                    let local = local_match(&folder, &a);
                    say(format!(
                        "  attached  {}  {}  sha256 {}…{local}",
                        a.name,
                        human_size(a.size),
                        hash_prefix(&a.sha256)
                    ));
                    seen.insert(a.id.clone(), a);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the demo message's attachments"),
        }
        match admin_sent(&http, &origin).await {
            Ok(list) => {
                for m in list {
                    if mailed.contains_key(&m.id) {
                        continue;
                    }
                    let names: Vec<&str> = m.attachments.iter().map(|a| a.name.as_str()).collect();
                    say(format!(
                        "  mailed    \"{}\" to {} with {}",
                        crate::outside::printable(&m.subject),
                        m.to.join(", "),
                        names.join(", ")
                    ));
                    mailed.insert(m.id.clone(), m);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the sandbox's sent messages"),
        }
        report_problems(&state_dir, &mut reported).await;
        if let Some(m) = &mapping {
            report_ignored(&folder, m, &mut ignored);
        }
        if exit_after.is_some() {
            let names: HashSet<&str> = seen.values().map(|a| a.name.as_str()).collect();
            let sent_names: HashSet<&str> = mailed
                .values()
                .flat_map(|m| m.attachments.iter().map(|a| a.name.as_str()))
                .collect();
            if expected.iter().all(|n| names.contains(n.as_str()))
                && mail_expected
                    .iter()
                    .all(|n| sent_names.contains(n.as_str()))
            {
                say(format!(
                    "✔ all {} file(s) attached and {} mailed in {:.1}s",
                    expected.len(),
                    mail_expected.len(),
                    started.elapsed().as_secs_f64()
                ));
                break Ok(ExitCode::Ok);
            }
            if started.elapsed() > EXIT_AFTER_TIMEOUT {
                let missing: Vec<&str> = expected
                    .iter()
                    .filter(|n| !names.contains(n.as_str()))
                    .chain(
                        mail_expected
                            .iter()
                            .filter(|n| !sent_names.contains(n.as_str())),
                    )
                    .map(String::as_str)
                    .collect();
                errln!(
                    "outbox demo: gave up after {}s; not attached or mailed: {}",
                    EXIT_AFTER_TIMEOUT.as_secs(),
                    missing.join(", ")
                );
                break Ok(ExitCode::Failed);
            }
        }
    };
    stop.cancel();
    match agent_task.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the agent stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "the agent task failed"),
    }
    say(format!(
        "▶ stopped. {} attachment(s) on the demo message, {} message(s) mailed; the files stay in {} and {}",
        seen.len(),
        mailed.len(),
        folder.display(),
        mail_folder.display()
    ));
    outcome
}

/// Entries the agent failed or rejected, once each, as demo lines (the agent's own log lines are
/// silenced in the demo unless -v).
async fn report_problems(state_dir: &Path, reported: &mut HashSet<String>) {
    let Some(resp) =
        crate::agent::control::ask(state_dir, &crate::agent::control::Request::Status).await
    else {
        return;
    };
    for e in resp.entries {
        let word = match e.state {
            crate::ledger::EntryState::Failed => "failed  ",
            crate::ledger::EntryState::Rejected => "rejected",
            _ => continue,
        };
        if reported.insert(e.id.clone()) {
            let why = e
                .error
                .as_ref()
                .map(|x| x.message.clone())
                .unwrap_or_default();
            say(format!(
                "  {word}  {}: {}",
                e.file_name(),
                crate::secret::redact(&why)
            ));
        }
    }
}

/// Names in the folder the mapping does not send, once each, saying why.
fn report_ignored(
    folder: &Path,
    m: &crate::config::Mapping,
    ignored: &mut HashSet<std::ffi::OsString>,
) {
    let Ok(dir) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if ignored.contains(&name) {
            continue;
        }
        let text = name.to_string_lossy();
        let why = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            "a subfolder (the demo mapping is not recursive)"
        } else if m.exclude.is_match(text.as_ref()) {
            // Hidden temp names are how the demo (and well-behaved apps) write files: not news.
            if text.starts_with('.') && text.ends_with(".part") {
                continue;
            }
            "matches an exclude pattern"
        } else if !m.include.is_match(text.as_ref()) {
            "matches no include pattern"
        } else {
            continue;
        };
        say(format!("  ignored   {text}: {why}"));
        ignored.insert(name);
    }
}

/// " ✓ same bytes as the file" when the file of that name in the folder hashes the same.
fn local_match(folder: &Path, a: &AdminAttachment) -> &'static str {
    use sha2::{Digest, Sha256};
    match std::fs::read(folder.join(&a.name)) {
        Ok(bytes) if hex::encode(Sha256::digest(&bytes)) == a.sha256 => {
            "  ✓ same bytes as the file"
        }
        Ok(_) => "  (the file has changed since)",
        Err(_) => "",
    }
}

/// The first 12 characters of a hex hash, for display (char-safe whatever the input).
fn hash_prefix(h: &str) -> String {
    h.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_mix_sizes_and_names() {
        let s = samples(4);
        assert_eq!(s.len(), 4);
        assert!(
            s[2].1 > 4 * 1024 * 1024,
            "one sample needs an upload session"
        );
        assert!(s.iter().any(|(n, _)| n.contains(' ') && !n.is_ascii()));
        let names: HashSet<_> = s.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names.len(), 4, "names are unique");
        assert_eq!(sample_bytes("a.bin", 1000, 1).len(), 1000);
    }
}
