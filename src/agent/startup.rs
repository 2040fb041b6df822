//! Start-up: open the ledger, and read from it what the core needs to resume (`Input::Start`).

use super::AgentError;
use crate::core::machine::has_work;
use crate::core::model::{Input, Record, State};
use crate::ledger::{Ledger, LedgerError, SessionStore};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// Open the ledger; while it is locked, wait a little: `status`, `retry` or `cancel` run with no
/// agent up hold it for a moment. A second agent holds it for good, and gets `InUse` (exit 2).
pub async fn open_ledger(state_dir: &Path) -> Result<Ledger, LedgerError> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match Ledger::open(state_dir) {
            Err(LedgerError::InUse { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// One pass over the ledger: every record with work left, every failed one, and the newest
/// version of every other path (the core decides a new version against it); and the entries
/// with an upload URL saved.
pub fn start_input(ledger: &Ledger, sessions: &SessionStore) -> Result<Input, AgentError> {
    let mut keep: Vec<Record> = Vec::new();
    let mut newest: HashMap<(String, PathBuf), Record> = HashMap::new();
    for e in ledger.iter() {
        let r = e?.to_record();
        if has_work(&r) || r.state == State::Failed {
            keep.push(r);
            continue;
        }
        match newest.entry((r.mapping.clone(), r.path.clone())) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if o.get().seq < r.seq {
                    o.insert(r);
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(r);
            }
        }
    }
    keep.extend(newest.into_values());
    let with_url = sessions.ids()?;
    Ok(Input::Start {
        records: keep,
        with_url,
        // Messages are not kept by this agent yet (issue 12).
        messages: Vec::new(),
    })
}
