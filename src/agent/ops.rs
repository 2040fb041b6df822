//! Ledger operations shared by the running agent (over the socket) and by the CLI when no agent
//! runs: the same rules either way, so the user sees the same result.

use crate::ledger::{EntryState, Ledger, LedgerEntry, LedgerError};

/// Why `retry ID` cannot take entry `e`, if it cannot. A done entry is retried to redo what went
/// wrong: its failed after-action, or (`verify` found its attachment wrong or missing) its
/// attachment, which needs the very file that was sent still at its path.
pub fn retry_refusal(e: &LedgerEntry) -> Option<String> {
    let id = &e.id;
    match e.state {
        EntryState::Failed | EntryState::Canceled => None,
        EntryState::Rejected if e.size > crate::core::model::MAX_ATTACHMENT => Some(format!(
            "entry {id} is {} bytes, over Graph's 150 MiB attachment limit; it cannot be sent",
            e.size
        )),
        EntryState::Rejected => None,
        EntryState::Done if e.after_failed => None,
        EntryState::Done => {
            let path = crate::outside::path(&e.path);
            let recorded = e.to_record().file;
            // The file sent, by size, time and (where recorded) device and inode.
            let same = |m: &std::fs::Metadata| {
                let now = crate::watch::file_stat(m);
                now.size == recorded.size
                    && now.mtime_ns == recorded.mtime_ns
                    && ((recorded.dev, recorded.ino) == (0, 0)
                        || (now.dev, now.ino) == (recorded.dev, recorded.ino))
            };
            match std::fs::symlink_metadata(&e.path) {
                Ok(m) if m.is_file() && same(&m) => None,
                Ok(m) if m.is_file() => Some(format!(
                    "entry {id} is done, and {path} has changed since it was attached: its new version is attached on its own; nothing to retry"
                )),
                _ => Some(format!(
                    "entry {id} is done, and its file is no longer at {path} (moved or deleted by `after`?): put it back there, then `outbox retry {id}` attaches it again"
                )),
            }
        }
        EntryState::Settling | EntryState::Pending | EntryState::Uploading => Some(format!(
            "entry {id} is {}; only failed, canceled, rejected or done entries can be retried",
            e.state
        )),
    }
}

/// Put entries back in the queue: one by id (see [`retry_refusal`]), or every failed one.
/// Returns the entries now pending (flushed).
pub fn retry(ledger: &Ledger, id: Option<&str>) -> Result<Vec<LedgerEntry>, LedgerError> {
    let targets: Vec<LedgerEntry> = match id {
        Some(id) => {
            let e = ledger
                .get(id)?
                .ok_or_else(|| LedgerError::NotFound { id: id.to_string() })?;
            if let Some(why) = retry_refusal(&e) {
                return Err(LedgerError::Invalid(why));
            }
            vec![e]
        }
        None => ledger.by_state(EntryState::Failed)?,
    };
    let mut out = Vec::new();
    for e in targets {
        // As the core's retry (`Machine::retry`), which the next start carries on from.
        if e.state == EntryState::Done && e.after_failed {
            out.push(ledger.update(&e.id, |x| {
                x.after_pending = true;
                x.after_failed = false;
                x.error = None;
            })?);
            continue;
        }
        let reattach = e.state == EntryState::Done;
        out.push(ledger.set_state(&e.id, EntryState::Pending, |x| {
            if let Some(bad) = x.attachment_id.take().filter(|_| reattach) {
                // Done, and its attachment is wrong: attach again, then delete this one.
                x.replaces.push(crate::core::model::Replaced {
                    entry: x.id.clone(),
                    attachment_id: bad,
                });
                x.may_exist = false;
                x.bytes_sent = 0;
            }
            x.error = None;
            x.attempts = 0;
            x.restarts = 0;
            x.cancel_requested = false;
            // A version that cannot be on an item yet goes to the mapping's item as the config
            // names it now (a fixed item id); one that may be keeps its item, and is looked for
            // there first.
            x.bound = x.may_exist || x.session.is_some();
        })?);
    }
    ledger.flush()?;
    Ok(out)
}
