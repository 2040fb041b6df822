//! Start-up: open the ledger, and read from it what the core needs to resume (`Input::Start`).

use super::AgentError;
use crate::core::machine::has_work;
use crate::core::model::{Input, Record, State, Time};
use crate::ledger::{is_stale, Ledger, LedgerError, SessionStore};
use std::collections::HashSet;
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
/// version of every other path (the core decides a new version against it) with its older
/// versions still on their item; the entries with an
/// upload URL saved; every message not finished with and every message named by a record
/// passed, with the records of all of their files (whatever their state: a done file waits for
/// its message's send before its after-action); every message whose last send started (or
/// was answered) at or after `sends_since` (the pacing window: a restart does not reset
/// Exchange's count). Also the ids (and paths) of the entries old enough to prune
/// once their files are found gone ([`crate::ledger::is_stale`]), so pruning at start-up needs
/// no second pass.
pub fn start_input(
    ledger: &Ledger,
    sessions: &SessionStore,
    sends_since: Time,
    keep_done: Duration,
    now: time::OffsetDateTime,
) -> Result<(Input, Vec<(String, PathBuf)>), AgentError> {
    // Two halves of the ledger read and decoded side by side.
    let read = |part| -> Result<Part, LedgerError> {
        let mut p = Part::default();
        for e in ledger.iter_part(part, 2) {
            let e = e?;
            if is_stale(e.state, e.updated_at, keep_done, now) {
                p.stale.push((e.id.clone(), e.path.clone()));
            }
            let r = e.into_record();
            if has_work(&r) || r.state == State::Failed {
                p.keep.push(r);
            } else {
                p.others.push(r);
            }
        }
        Ok(p)
    };
    let (first, second) = std::thread::scope(|s| {
        let other = s.spawn(|| read(1));
        let first = read(0);
        (first, other.join())
    });
    let second = match second {
        Ok(p) => p?,
        // A panic while reading: read that half again here (and panic here).
        Err(_) => read(1)?,
    };
    let Part {
        mut keep,
        mut others,
        mut stale,
    } = first?;
    keep.extend(second.keep);
    others.extend(second.others);
    stale.extend(second.stale);
    keep.extend(newest_and_on_item(others));
    // The versions of another owner's that a newest version was attached beside (not
    // replaced): still on their item, so the next version of their own owner's replaces them.
    let mut beside: HashSet<&str> = keep
        .iter()
        .flat_map(|r| r.beside.iter().map(String::as_str))
        .collect();
    if !beside.is_empty() {
        for r in &keep {
            beside.remove(r.id.as_str());
        }
    }
    let mut beside_records = Vec::new();
    for id in beside {
        if let Some(e) = ledger.get(id)? {
            beside_records.push(e.into_record());
        }
    }
    keep.extend(beside_records);
    let named: HashSet<&str> = keep.iter().filter_map(|r| r.message.as_deref()).collect();
    let mut messages = Vec::new();
    for m in ledger.messages() {
        let m = m?;
        // (Made within the window too: it counts against its mapping's `max_messages`.)
        let recent = m
            .last_send_at
            .max(m.sent_at)
            .is_some_and(|t| t >= sends_since)
            || m.created_at >= sends_since;
        if m.at_work() || named.contains(m.id.as_str()) || recent {
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

/// What start-up keeps of a part of the ledger.
#[derive(Default)]
struct Part {
    /// Records with work left, or failed.
    keep: Vec<Record>,
    /// The others: only the newest version of each path is passed on.
    others: Vec<Record>,
    /// Ids (and paths) old enough to prune once their files are gone.
    stale: Vec<(String, PathBuf)>,
}

/// The newest (highest seq) of each (mapping, path) among `records`, and each older version
/// still on its item (done, not replaced, of no message: with `on_change = "add"` a path's
/// versions stay side by side, and one dropped again is known there, not attached twice).
/// Sorted by index rather than hashed: no key is copied and no record moved until the end
/// (100,000 of them at start-up).
fn newest_and_on_item(records: Vec<Record>) -> Vec<Record> {
    let mut order: Vec<u32> = (0..records.len() as u32).collect();
    let key = |i: u32| {
        let r = &records[i as usize];
        (r.mapping.as_str(), r.path.as_os_str(), r.seq)
    };
    order.sort_unstable_by(|a, b| key(*a).cmp(&key(*b)));
    let mut newest = vec![false; records.len()];
    for (n, i) in order.iter().enumerate() {
        let (m, p, _) = key(*i);
        let last_of_path = order.get(n + 1).is_none_or(|next| {
            let (nm, np, _) = key(*next);
            nm != m || np != p
        });
        let r = &records[*i as usize];
        let on_item = r.state == State::Done
            && !r.replaced
            && r.attachment_id.is_some()
            && r.message.is_none();
        if last_of_path || on_item {
            newest[*i as usize] = true;
        }
    }
    records
        .into_iter()
        .zip(newest)
        .filter_map(|(r, n)| n.then_some(r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{FileStat, Time};

    fn rec(id: &str, mapping: &str, path: &str, seq: u64) -> Record {
        Record::pending(
            id.into(),
            mapping.into(),
            path.into(),
            "n".into(),
            FileStat::default(),
            None,
            seq,
            Time(0),
        )
    }

    #[test]
    fn the_newest_version_of_each_path_and_those_still_on_an_item_are_kept() {
        let records = vec![
            rec("a1", "m", "/f/a", 1),
            rec("b1", "m", "/f/b", 2),
            rec("a3", "m", "/f/a", 3),
            rec("a2", "m", "/f/a", 2),
            rec("a-other", "n", "/f/a", 1),
            rec("c", "m", "/f/a/c", 0),
        ];
        let mut kept: Vec<String> = newest_and_on_item(records)
            .into_iter()
            .map(|r| r.id)
            .collect();
        kept.sort();
        assert_eq!(kept, ["a-other", "a3", "b1", "c"]);
        assert!(newest_and_on_item(Vec::new()).is_empty());
        // An older version still on its item is kept; one replaced, or of a message, is not.
        let on_item = |id: &str, seq: u64| {
            let mut r = rec(id, "m", "/f/a", seq);
            r.state = State::Done;
            r.attachment_id = Some(format!("att-{id}"));
            r
        };
        let replaced = Record {
            replaced: true,
            ..on_item("replaced", 2)
        };
        let mailed = Record {
            message: Some("m1".into()),
            ..on_item("mailed", 3)
        };
        let records = vec![on_item("old", 1), replaced, mailed, on_item("new", 4)];
        let mut kept: Vec<String> = newest_and_on_item(records)
            .into_iter()
            .map(|r| r.id)
            .collect();
        kept.sort();
        assert_eq!(kept, ["new", "old"]);
    }
}
