//! Start-up: open the ledger, and read from it what the core needs to resume (`Input::Start`).

use super::AgentError;
use crate::core::machine::has_work;
use crate::core::model::{Input, Record, State, Time};
use crate::ledger::{Ledger, LedgerError, SessionStore};
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
/// its message's send before its after-action); and every message whose last send started (or
/// was answered) at or after `sends_since` (the pacing window: a restart does not reset
/// Exchange's count).
pub fn start_input(
    ledger: &Ledger,
    sessions: &SessionStore,
    sends_since: Time,
) -> Result<Input, AgentError> {
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
    let named: HashSet<String> = keep.iter().filter_map(|r| r.message.clone()).collect();
    let mut messages = Vec::new();
    for m in ledger.messages() {
        let m = m?;
        let recent = m
            .last_send_at
            .max(m.sent_at)
            .is_some_and(|t| t >= sends_since);
        if !m.state.is_terminal() || named.contains(&m.id) || recent {
            messages.push(m);
        }
    }
    let mut have: HashSet<String> = keep.iter().map(|r| r.id.clone()).collect();
    for m in &messages {
        for f in &m.files {
            if have.contains(f) {
                continue;
            }
            if let Some(e) = ledger.get(f)? {
                have.insert(f.clone());
                keep.push(e.to_record());
            }
        }
    }
    messages.sort_by_key(|m| m.seq);
    let with_url = sessions.ids()?;
    Ok(Input::Start {
        records: keep,
        with_url,
        messages,
    })
}
