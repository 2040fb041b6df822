//! `outbox verify [ID | --all]`: read done attachments back from Graph (`$value`, streamed) and
//! compare their SHA-256 with the ledger's. Entries come from the running agent over its socket,
//! or from the ledger when no agent runs; verify itself never changes the ledger. A mismatch or a
//! missing attachment comes with the `outbox send` command that attaches the file again.

use crate::agent::control::{self, Request};
use crate::agent::item_of;
use crate::cli::exit::{CommandError, ExitCode};
use crate::config::Settings;
use crate::graph::RequestError;
use crate::ledger::{EntryState, Ledger, LedgerEntry, LedgerError};

async fn entries(settings: &Settings) -> Result<Vec<LedgerEntry>, CommandError> {
    let dir = &settings.agent.state_dir;
    if let Some(resp) = control::ask(dir, &Request::Status).await {
        if resp.ok {
            return Ok(resp.entries);
        }
    }
    if !dir.exists() {
        return Ok(Vec::new());
    }
    match Ledger::open(dir) {
        Ok(l) => Ok(l.list(Some(EntryState::Done))?),
        Err(LedgerError::InUse { .. }) => Err(CommandError::new(
            ExitCode::Usage,
            format!(
                "an outbox agent is using the ledger in {} and did not answer on its socket; try again in a moment",
                dir.display()
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

pub async fn run(
    settings: Settings,
    id: Option<String>,
    json: bool,
) -> Result<ExitCode, CommandError> {
    let all = entries(&settings).await?;
    let todo: Vec<LedgerEntry> = match &id {
        Some(id) => {
            let e = all
                .into_iter()
                .find(|e| &e.id == id)
                .ok_or_else(|| CommandError::from(LedgerError::NotFound { id: id.clone() }))?;
            if e.state != EntryState::Done {
                return Err(CommandError::new(
                    ExitCode::Usage,
                    format!(
                        "entry {id} is {}; only done entries have an attachment to verify",
                        e.state
                    ),
                ));
            }
            vec![e]
        }
        None => all
            .into_iter()
            .filter(|e| e.state == EntryState::Done)
            .collect(),
    };
    if todo.is_empty() {
        if json {
            println!("[]");
        } else {
            println!("no done entries to verify");
        }
        return Ok(ExitCode::Ok);
    }
    let client = super::check::interactive_client(&settings)
        .map_err(|e| CommandError::new(ExitCode::Failed, e))?;
    let mut out = Findings {
        json,
        bad: 0,
        rows: Vec::new(),
    };
    for e in &todo {
        let name = e.file_name();
        let (Some(att), Some(want)) = (e.attachment_id.as_deref(), e.sha256.as_deref()) else {
            out.add(
                e,
                Verdict::Error,
                format!("{name}: the ledger has no attachment id or hash for it"),
            );
            continue;
        };
        match client.attachment_sha256(&item_of(e), att).await {
            Ok((got, size)) if got.eq_ignore_ascii_case(want) && size == e.size => {
                out.add(
                    e,
                    Verdict::Ok,
                    format!("{name}  sha256 {}…", hash_prefix(want)),
                );
            }
            Ok((got, size)) => {
                out.add(
                    e,
                    Verdict::Mismatch,
                    format!(
                        "{name}: the attachment's bytes differ (sha256 {}…, {size} bytes; the ledger has {}…, {} bytes); {}",
                        hash_prefix(&got),
                        hash_prefix(want),
                        e.size,
                        attach_again(e, "then delete the bad copy from the item in Outlook")
                    ),
                );
            }
            Err(RequestError::Graph(g)) if g.status == Some(404) => {
                out.add(
                    e,
                    Verdict::Missing,
                    format!(
                        "{name}: the attachment is no longer on its item ({}); {}",
                        g.code,
                        attach_again(e, "if it is still wanted")
                    ),
                );
            }
            Err(RequestError::Auth(a)) => {
                return Err(CommandError::new(ExitCode::SignIn, a.to_string()));
            }
            Err(err) => out.add(e, Verdict::Error, format!("{name}: {err}")),
        }
    }
    Ok(out.finish(todo.len()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Mismatch,
    Missing,
    Error,
}

/// One line per entry as it is checked, or (`--json`) an array of
/// `{"id","file","result","message"}` at the end.
struct Findings {
    json: bool,
    bad: usize,
    rows: Vec<serde_json::Value>,
}

impl Findings {
    fn add(&mut self, e: &LedgerEntry, v: Verdict, message: String) {
        let (tag, word) = match v {
            Verdict::Ok => ("ok      ", "ok"),
            Verdict::Mismatch => ("MISMATCH", "mismatch"),
            Verdict::Missing => ("MISSING ", "missing"),
            Verdict::Error => ("error   ", "error"),
        };
        if v != Verdict::Ok {
            self.bad += 1;
        }
        if self.json {
            self.rows.push(serde_json::json!({
                "id": e.id,
                "file": e.path,
                "result": word,
                "message": message,
            }));
        } else {
            println!("{tag}  {}  {message}", e.id);
        }
    }

    fn finish(self, checked: usize) -> ExitCode {
        if self.json {
            let text = serde_json::to_string_pretty(&self.rows).unwrap_or_default();
            println!("{text}");
        } else {
            println!(
                "{checked} checked, {} ok, {} with problems",
                checked - self.bad,
                self.bad
            );
        }
        if self.bad == 0 {
            ExitCode::Ok
        } else {
            ExitCode::Failed
        }
    }
}

/// The command that attaches the entry's file to its item again (the file is still at its path
/// unless `after` moved or deleted it).
fn attach_again(e: &LedgerEntry, then: &str) -> String {
    let item = item_of(e);
    let flag = match item.kind {
        crate::config::ItemKind::Message => "--message",
        crate::config::ItemKind::Event => "--event",
    };
    let user = if item.user.eq_ignore_ascii_case("me") {
        String::new()
    } else {
        format!(" --user {}", item.user)
    };
    format!(
        "attach it again with `outbox send '{}' {flag} {}{user}`, {then}",
        e.path.display(),
        item.id
    )
}

/// The first 12 characters of a hex hash, for display (char-safe whatever the input).
fn hash_prefix(h: &str) -> String {
    h.chars().take(12).collect()
}
