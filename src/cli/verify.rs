//! `outbox verify [ID | --all]`: read done attachments back from Graph (`$value`, streamed) and
//! compare their SHA-256 with the ledger's. Entries come from the running agent over its socket,
//! or from the ledger when no agent runs; verify itself never changes the ledger. A mismatch or a
//! missing attachment comes with the command that fixes it: `outbox retry ID` attaches the file
//! again and then deletes the bad copy (by its recorded id), or, when the file is no longer at its
//! path, what to do instead.

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
            jsonln!("[]");
        } else {
            outln!("no done entries to verify");
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
                        attach_again(e, true)
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
                        attach_again(e, false)
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
            outln!("{tag}  {}  {message}", e.id);
        }
    }

    fn finish(self, checked: usize) -> ExitCode {
        if self.json {
            let text = serde_json::to_string_pretty(&self.rows).unwrap_or_default();
            jsonln!("{text}");
        } else {
            outln!(
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

/// How to attach the entry's file again: `outbox retry ID` (which then deletes the recorded
/// attachment) while the file sent is at its path; otherwise why it cannot, and the way back.
fn attach_again(e: &LedgerEntry, bad_copy: bool) -> String {
    match crate::agent::ops::retry_refusal(e) {
        None if bad_copy => format!(
            "`outbox retry {}` attaches the file again and then deletes this copy",
            e.id
        ),
        None => format!("`outbox retry {}` attaches the file again", e.id),
        Some(why) => format!("to fix it: {why}"),
    }
}

/// The first 12 characters of a hex hash, for display (char-safe whatever the input).
fn hash_prefix(h: &str) -> String {
    h.chars().take(12).collect()
}
