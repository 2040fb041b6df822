//! Ledger operations shared by the running agent (over the socket) and by the CLI when no agent
//! runs: the same rules either way, so the user sees the same result.

use crate::ledger::{EntryState, Ledger, LedgerEntry, LedgerError};

/// Put entries back in the queue: one by id (failed, canceled or rejected), or every failed one.
/// Returns the entries now pending (flushed).
pub fn retry(ledger: &Ledger, id: Option<&str>) -> Result<Vec<LedgerEntry>, LedgerError> {
    let targets: Vec<LedgerEntry> = match id {
        Some(id) => {
            let e = ledger
                .get(id)?
                .ok_or_else(|| LedgerError::NotFound { id: id.to_string() })?;
            if !matches!(
                e.state,
                EntryState::Failed | EntryState::Canceled | EntryState::Rejected
            ) {
                return Err(LedgerError::Invalid(format!(
                    "entry {id} is {}; only failed, canceled or rejected entries can be retried",
                    e.state
                )));
            }
            vec![e]
        }
        None => ledger.by_state(EntryState::Failed)?,
    };
    let mut out = Vec::new();
    for e in targets {
        // As the core's retry: a version that cannot be on an item yet goes to the mapping's
        // item as the config names it now (a fixed item id); one that may be keeps its item,
        // and is looked for there first.
        out.push(ledger.set_state(&e.id, EntryState::Pending, |x| {
            x.error = None;
            x.attempts = 0;
            x.restarts = 0;
            x.cancel_requested = false;
            x.bound = x.may_exist || x.session.is_some();
        })?);
    }
    ledger.flush()?;
    Ok(out)
}
