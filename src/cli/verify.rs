//! `outbox verify [ID | --all]`: read done attachments back from Graph (`$value`, streamed) and
//! compare their SHA-256 with the ledger's. Entries come from the running agent over its socket,
//! or from the ledger when no agent runs; verify itself never changes the ledger.

use crate::agent::control::{self, Request};
use crate::agent::item_of;
use crate::config::Settings;
use crate::exit::{CommandError, ExitCode};
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

pub async fn run(settings: Settings, id: Option<String>) -> Result<ExitCode, CommandError> {
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
        println!("no done entries to verify");
        return Ok(ExitCode::Ok);
    }
    let client = super::check::interactive_client(&settings)
        .map_err(|e| CommandError::new(ExitCode::Failed, e))?;
    let mut bad = 0usize;
    for e in &todo {
        let name = e.file_name();
        let (Some(att), Some(want)) = (e.attachment_id.as_deref(), e.sha256.as_deref()) else {
            bad += 1;
            println!(
                "error     {}  {name}: the ledger has no attachment id or hash for it",
                e.id
            );
            continue;
        };
        match client.attachment_sha256(&item_of(e), att).await {
            Ok((got, size)) if got.eq_ignore_ascii_case(want) && size == e.size => {
                println!("ok        {}  {name}  sha256 {}…", e.id, hash_prefix(want));
            }
            Ok((got, size)) => {
                bad += 1;
                println!(
                    "MISMATCH  {}  {name}: the attachment's bytes differ (sha256 {}…, {size} bytes; the ledger has {}…, {} bytes)",
                    e.id,
                    hash_prefix(&got),
                    hash_prefix(want),
                    e.size
                );
            }
            Err(RequestError::Graph(g)) if g.status == Some(404) => {
                bad += 1;
                println!(
                    "MISSING   {}  {name}: the attachment is no longer on its item ({}); attach it again with `outbox send`",
                    e.id, g.code
                );
            }
            Err(RequestError::Auth(a)) => {
                return Err(CommandError::new(ExitCode::SignIn, a.to_string()));
            }
            Err(err) => {
                bad += 1;
                println!("error     {}  {name}: {err}", e.id);
            }
        }
    }
    println!(
        "{} checked, {} ok, {bad} with problems",
        todo.len(),
        todo.len() - bad
    );
    Ok(if bad == 0 {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

/// The first 12 characters of a hex hash, for display (char-safe whatever the input).
fn hash_prefix(h: &str) -> String {
    h.chars().take(12).collect()
}
