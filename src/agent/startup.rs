//! Start-up: open the ledger, and read from it what the core needs to resume (`Input::Start`).

use super::AgentError;
use crate::core::machine::has_work;
use crate::core::model::{Input, Record, State};
use crate::ledger::{is_stale, Ledger, LedgerError, SessionStore};
use std::collections::{HashMap, HashSet};
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
/// version of every other path (the core decides a new version against it); the entries with an
/// upload URL saved; every message not finished with and every message named by a record
/// passed, with the records of all of their files (whatever their state: a done file waits for
/// its message's send before its after-action). Also the ids of the entries old enough to prune
/// once their files are found gone ([`crate::ledger::is_stale`]), so pruning at start-up needs
/// no second pass.
pub fn start_input(
    ledger: &Ledger,
    sessions: &SessionStore,
    keep_done: Duration,
    now: time::OffsetDateTime,
) -> Result<(Input, Vec<String>), AgentError> {
    let mut keep: Vec<Record> = Vec::new();
    let mut stale: Vec<String> = Vec::new();
    let mut newest: HashMap<(String, PathBuf), Record> = HashMap::new();
    for e in ledger.iter() {
        let e = e?;
        if is_stale(e.state, e.updated_at, keep_done, now) {
            stale.push(e.id.clone());
        }
        let r = e.into_record();
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
    let named: HashSet<&str> = keep.iter().filter_map(|r| r.message.as_deref()).collect();
    let mut messages = Vec::new();
    for m in ledger.messages() {
        let m = m?;
        if !m.state.is_terminal() || named.contains(m.id.as_str()) {
            messages.push(m);
        }
    }
    // The files of those messages not passed yet (a done file superseded by a newer version of
    // its path, say). Most ledgers have no message: nothing is looked up.
    let mut wanted: HashSet<&str> = messages
        .iter()
        .flat_map(|m| m.files.iter().map(String::as_str))
        .collect();
    if !wanted.is_empty() {
        for r in &keep {
            wanted.remove(r.id.as_str());
        }
    }
    let mut extra = Vec::new();
    for f in wanted {
        if let Some(e) = ledger.get(f)? {
            extra.push(e.into_record());
        }
    }
    keep.extend(extra);
    messages.sort_by_key(|m| m.seq);
    let with_url = sessions.ids()?;
    Ok((
        Input::Start {
            records: keep,
            with_url,
            messages,
        },
        stale,
    ))
}
