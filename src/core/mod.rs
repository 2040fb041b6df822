//! The decisions, with no I/O: when a file counts as finished (the settle rule), and what to do
//! with a finished file given what the ledger knows of its path. The agent feeds it plain values
//! (sizes, times, hashes, ledger entries) and carries out what it answers.

pub mod mail;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

use crate::ledger::{EntryState, LedgerEntry};

/// What is known of a file that may still be being written.
#[derive(Debug, Clone)]
struct Watched {
    mapping: usize,
    size: u64,
    mtime_ns: Option<i64>,
    /// When size or time last changed (or the file was first seen).
    stable_since: Instant,
    first_seen: Instant,
    /// The platform reported it closed after writing since the last change.
    closed: bool,
    /// `max_settle` passed and this was reported once.
    warned: bool,
}

/// The answer for a file whose check came due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Finished: unchanged for `settle`, or closed after writing and unchanged since.
    Ready {
        mapping: usize,
        path: PathBuf,
        size: u64,
        mtime_ns: Option<i64>,
    },
    /// Still changing after `max_settle`: keep waiting, and say so once.
    StillChanging { mapping: usize, path: PathBuf },
}

/// Applies the settle rule to every file seen and not yet finished.
#[derive(Debug)]
pub struct Settler {
    settle: Duration,
    max_settle: Duration,
    files: HashMap<PathBuf, Watched>,
}

impl Settler {
    pub fn new(settle: Duration, max_settle: Duration) -> Self {
        Settler {
            settle,
            max_settle,
            files: HashMap::new(),
        }
    }

    /// A stat of `path`: size and modification time as of `now`.
    pub fn observe(
        &mut self,
        mapping: usize,
        path: &Path,
        size: u64,
        mtime_ns: Option<i64>,
        now: Instant,
    ) {
        match self.files.get_mut(path) {
            Some(w) if w.size == size && w.mtime_ns == mtime_ns => {}
            Some(w) => {
                w.size = size;
                w.mtime_ns = mtime_ns;
                w.stable_since = now;
                w.closed = false;
            }
            None => {
                self.files.insert(
                    path.to_path_buf(),
                    Watched {
                        mapping,
                        size,
                        mtime_ns,
                        stable_since: now,
                        first_seen: now,
                        closed: false,
                        warned: false,
                    },
                );
            }
        }
    }

    /// The platform reported `path` closed after writing.
    pub fn closed(&mut self, path: &Path) {
        if let Some(w) = self.files.get_mut(path) {
            w.closed = true;
        }
    }

    /// `path` is gone (deleted or renamed away).
    pub fn forget(&mut self, path: &Path) {
        self.files.remove(path);
    }

    /// Files still settling: mapping, path, size, and whether `max_settle` has passed.
    pub fn settling(&self) -> impl Iterator<Item = (usize, &Path, u64, bool)> + '_ {
        self.files
            .iter()
            .map(|(p, w)| (w.mapping, p.as_path(), w.size, w.warned))
    }

    pub fn is_settling(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Up to `limit` paths whose check is due at `now`: the caller stats each again and passes
    /// the result to [`Settler::confirm`]. The rest stay due (so [`Settler::next_deadline`] is
    /// already past) and come in the next batch: 100,000 files settling at once are checked a
    /// batch at a time, with the agent's other work between.
    pub fn due(&self, now: Instant, limit: usize) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|(_, w)| {
                w.closed
                    || now >= w.stable_since + self.settle
                    || (!w.warned && now >= w.first_seen + self.max_settle)
            })
            .take(limit)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The earliest instant a check comes due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.files
            .values()
            .map(|w| {
                if w.closed {
                    w.stable_since
                } else {
                    let s = w.stable_since + self.settle;
                    if w.warned {
                        s
                    } else {
                        s.min(w.first_seen + self.max_settle)
                    }
                }
            })
            .min()
    }

    /// A fresh stat of a due path. Ready files leave the settler.
    pub fn confirm(
        &mut self,
        path: &Path,
        size: u64,
        mtime_ns: Option<i64>,
        now: Instant,
    ) -> Option<Settled> {
        let w = self.files.get_mut(path)?;
        let unchanged = w.size == size && w.mtime_ns == mtime_ns;
        if unchanged && (w.closed || now >= w.stable_since + self.settle) {
            let mapping = w.mapping;
            self.files.remove(path);
            return Some(Settled::Ready {
                mapping,
                path: path.to_path_buf(),
                size,
                mtime_ns,
            });
        }
        if !unchanged {
            w.size = size;
            w.mtime_ns = mtime_ns;
            w.stable_since = now;
            w.closed = false;
        }
        if !w.warned && now >= w.first_seen + self.max_settle {
            w.warned = true;
            return Some(Settled::StillChanging {
                mapping: w.mapping,
                path: path.to_path_buf(),
            });
        }
        None
    }
}

/// What to do with a finished file, given the newest ledger entry for its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// This version is already handled (done, or stopped and not to be retried on its own).
    Nothing,
    /// This version has an entry that still has work to do: queue it.
    Queue(String),
    /// A new version: record it (and cancel the older one's upload when it has one open).
    NewVersion { supersedes: Option<String> },
}

/// Whether the content must be hashed to decide: not when size and time match the entry.
pub fn needs_hash(current: Option<&LedgerEntry>, size: u64, mtime_ns: Option<i64>) -> bool {
    match current {
        Some(e) => !(e.size == size && Some(e.mtime_ns) == mtime_ns && e.sha256.is_some()),
        None => true,
    }
}

/// Decide for a file version (`size`, `sha256`) given the newest entry of its path.
pub fn plan(current: Option<&LedgerEntry>, size: u64, sha256: Option<&str>) -> Plan {
    let Some(e) = current else {
        return Plan::NewVersion { supersedes: None };
    };
    let same = e.size == size
        && match (sha256, e.sha256.as_deref()) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            // Hash skipped because size and time matched the entry.
            (None, Some(_)) => true,
            _ => false,
        };
    if !same {
        let open = matches!(
            e.state,
            EntryState::Uploading | EntryState::Pending | EntryState::Settling
        );
        return Plan::NewVersion {
            supersedes: open.then(|| e.id.clone()),
        };
    }
    match e.state {
        EntryState::Done | EntryState::Rejected | EntryState::Canceled | EntryState::Failed => {
            Plan::Nothing
        }
        EntryState::Pending | EntryState::Uploading | EntryState::Settling => {
            Plan::Queue(e.id.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{NewEntry, Target};

    const S: Duration = Duration::from_secs(2);
    const M: Duration = Duration::from_secs(600);

    #[test]
    fn due_files_come_a_batch_at_a_time_and_the_rest_stay_due() {
        let mut s = Settler::new(S, M);
        let t0 = Instant::now();
        for i in 0..25 {
            s.observe(0, Path::new(&format!("/f/{i}")), 1, Some(1), t0);
        }
        let now = t0 + S;
        let mut seen = std::collections::HashSet::new();
        while !s.is_empty() {
            let batch = s.due(now, 10);
            assert!(!batch.is_empty() && batch.len() <= 10);
            assert!(s.next_deadline().is_some_and(|d| d <= now));
            for p in batch {
                assert!(matches!(
                    s.confirm(&p, 1, Some(1), now),
                    Some(Settled::Ready { .. })
                ));
                assert!(seen.insert(p));
            }
        }
        assert_eq!(seen.len(), 25);
    }

    #[test]
    fn ready_after_settle_when_unchanged() {
        let mut s = Settler::new(S, M);
        let t0 = Instant::now();
        let p = Path::new("/f/a.pdf");
        s.observe(0, p, 10, Some(1), t0);
        assert!(s.due(t0 + Duration::from_secs(1), 10).is_empty());
        assert_eq!(s.next_deadline(), Some(t0 + S));
        assert_eq!(s.due(t0 + S, 10), vec![p.to_path_buf()]);
        assert_eq!(
            s.confirm(p, 10, Some(1), t0 + S),
            Some(Settled::Ready {
                mapping: 0,
                path: p.into(),
                size: 10,
                mtime_ns: Some(1)
            })
        );
        assert!(s.is_empty());
    }

    #[test]
    fn a_change_restarts_the_clock() {
        let mut s = Settler::new(S, M);
        let t0 = Instant::now();
        let p = Path::new("/f/a.pdf");
        s.observe(0, p, 10, Some(1), t0);
        assert_eq!(s.confirm(p, 20, Some(2), t0 + S), None);
        assert_eq!(s.next_deadline(), Some(t0 + S + S));
        assert!(matches!(
            s.confirm(p, 20, Some(2), t0 + S + S),
            Some(Settled::Ready { size: 20, .. })
        ));
    }

    #[test]
    fn close_after_write_cuts_the_wait() {
        let mut s = Settler::new(S, M);
        let t0 = Instant::now();
        let p = Path::new("/f/a.pdf");
        s.observe(0, p, 10, Some(1), t0);
        s.closed(p);
        assert_eq!(s.due(t0, 10), vec![p.to_path_buf()]);
        assert!(matches!(
            s.confirm(p, 10, Some(1), t0),
            Some(Settled::Ready { .. })
        ));
        // Closed, but it changed since: wait again.
        s.observe(0, p, 10, Some(1), t0);
        s.closed(p);
        assert_eq!(s.confirm(p, 11, Some(2), t0), None);
        assert!(s.due(t0, 10).is_empty());
    }

    #[test]
    fn still_changing_is_reported_once() {
        let mut s = Settler::new(S, Duration::from_secs(10));
        let t0 = Instant::now();
        let p = Path::new("/f/big.iso");
        s.observe(3, p, 1, Some(1), t0);
        let t = t0 + Duration::from_secs(10);
        assert_eq!(
            s.confirm(p, 2, Some(2), t),
            Some(Settled::StillChanging {
                mapping: 3,
                path: p.into()
            })
        );
        assert_eq!(s.confirm(p, 3, Some(3), t + Duration::from_secs(1)), None);
        assert!(s.is_settling(p));
    }

    fn entry(state: EntryState, size: u64, sha: &str) -> LedgerEntry {
        let mut e = LedgerEntry::new(
            NewEntry {
                mapping: "m".into(),
                path: "/f/a".into(),
                name: "a".into(),
                target: Target::default(),
                size,
                mtime_ns: 5,
            },
            state,
            time::OffsetDateTime::UNIX_EPOCH,
        );
        e.sha256 = Some(sha.into());
        e
    }

    #[test]
    fn plans() {
        assert_eq!(
            plan(None, 1, Some("aa")),
            Plan::NewVersion { supersedes: None }
        );
        let done = entry(EntryState::Done, 1, "aa");
        assert_eq!(plan(Some(&done), 1, Some("AA")), Plan::Nothing);
        assert_eq!(
            plan(Some(&done), 1, Some("bb")),
            Plan::NewVersion { supersedes: None }
        );
        let up = entry(EntryState::Uploading, 1, "aa");
        assert_eq!(plan(Some(&up), 1, Some("aa")), Plan::Queue(up.id.clone()));
        assert_eq!(
            plan(Some(&up), 2, Some("cc")),
            Plan::NewVersion {
                supersedes: Some(up.id.clone())
            }
        );
        for st in [
            EntryState::Failed,
            EntryState::Rejected,
            EntryState::Canceled,
        ] {
            assert_eq!(
                plan(Some(&entry(st, 1, "aa")), 1, Some("aa")),
                Plan::Nothing
            );
        }
        assert!(!needs_hash(Some(&done), 1, Some(5)));
        assert!(needs_hash(Some(&done), 1, Some(6)));
        assert!(needs_hash(None, 1, Some(5)));
    }
}
