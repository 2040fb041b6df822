//! The settle rule: a file is finished when it has been unchanged for `settle`, or closed after
//! writing and then unchanged for `settle_after_close`. A close alone is not proof: a writer
//! that appends and closes again and again is still writing.

use super::model::{FileStat, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
struct Watched {
    mapping: String,
    stat: FileStat,
    /// When the stat last changed (or the file was first seen).
    stable_since: Time,
    first_seen: Time,
    /// Closed after writing, at this time, and unchanged since.
    closed_at: Option<Time>,
    /// `max_settle` passed and this was reported once.
    warned: bool,
    /// The deadline currently in `due`.
    deadline: Time,
}

/// What a settle check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Ready {
        mapping: String,
        path: PathBuf,
        stat: FileStat,
    },
    /// Still changing after `max_settle`: keep waiting, and say so once.
    StillChanging { path: PathBuf },
}

#[derive(Debug, Default)]
pub struct Settler {
    settle: u64,
    after_close: u64,
    max_settle: u64,
    /// Keyed by the path's bytes (`OsString` orders by bytes, a `PathBuf` component by
    /// component: with 100,000 files the difference is most of start-up's time).
    files: BTreeMap<OsString, Watched>,
    /// (deadline, path): the next check of each file, in order.
    due: BTreeSet<(Time, OsString)>,
}

impl Settler {
    pub fn new(settle_ms: u64, after_close_ms: u64, max_settle_ms: u64) -> Self {
        Settler {
            settle: settle_ms,
            after_close: after_close_ms,
            max_settle: max_settle_ms,
            ..Default::default()
        }
    }

    pub fn set_timing(&mut self, settle_ms: u64, after_close_ms: u64, max_settle_ms: u64) {
        self.settle = settle_ms;
        self.after_close = after_close_ms;
        self.max_settle = max_settle_ms;
    }

    fn deadline(&self, w: &Watched) -> Time {
        let mut d = w.stable_since.plus_ms(self.settle);
        if let Some(c) = w.closed_at {
            d = d.min(c.plus_ms(self.after_close));
        }
        if !w.warned {
            d = d.min(w.first_seen.plus_ms(self.max_settle));
        }
        d
    }

    fn reschedule(&mut self, path: &Path) {
        let Some(w) = self.files.get(path.as_os_str()) else {
            return;
        };
        let new = self.deadline(w);
        let mut key = (w.deadline, path.as_os_str().to_os_string());
        self.due.remove(&key);
        key.0 = new;
        self.due.insert(key);
        if let Some(w) = self.files.get_mut(path.as_os_str()) {
            w.deadline = new;
        }
    }

    /// A stat of `path` as of `now`.
    pub fn observe(&mut self, mapping: &str, path: &Path, stat: FileStat, now: Time) {
        match self.files.get_mut(path.as_os_str()) {
            Some(w) if w.stat == stat => return,
            Some(w) => {
                w.stat = stat;
                w.stable_since = now;
                w.closed_at = None;
                w.mapping = mapping.to_owned();
            }
            None => {
                self.files.insert(
                    path.as_os_str().to_os_string(),
                    Watched {
                        mapping: mapping.to_owned(),
                        stat,
                        stable_since: now,
                        first_seen: now,
                        closed_at: None,
                        warned: false,
                        deadline: Time(u64::MAX),
                    },
                );
            }
        }
        self.reschedule(path);
    }

    /// The platform reported `path` closed after writing.
    pub fn closed(&mut self, path: &Path, now: Time) {
        if let Some(w) = self.files.get_mut(path.as_os_str()) {
            if w.closed_at.is_none() {
                w.closed_at = Some(now);
            }
            self.reschedule(path);
        }
    }

    /// A check of `path` is under way: it is not due again until [`Settler::confirm`].
    pub fn checking(&mut self, path: &Path) {
        if let Some(w) = self.files.get_mut(path.as_os_str()) {
            let mut key = (w.deadline, path.as_os_str().to_os_string());
            self.due.remove(&key);
            w.deadline = Time(u64::MAX);
            key.0 = w.deadline;
            self.due.insert(key);
        }
    }

    pub fn forget(&mut self, path: &Path) {
        if let Some((key, w)) = self.files.remove_entry(path.as_os_str()) {
            self.due.remove(&(w.deadline, key));
        }
    }

    pub fn forget_mapping(&mut self, mapping: &str) {
        let paths: Vec<OsString> = self
            .files
            .iter()
            .filter(|(_, w)| w.mapping == mapping)
            .map(|(p, _)| p.clone())
            .collect();
        for p in paths {
            self.forget(Path::new(&p));
        }
    }

    pub fn is_settling(&self, path: &Path) -> bool {
        self.files.contains_key(path.as_os_str())
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Files still settling: mapping, path, size, whether `max_settle` has passed.
    pub fn settling(&self) -> impl Iterator<Item = (&str, &Path, u64, bool)> + '_ {
        self.files
            .iter()
            .map(|(p, w)| (w.mapping.as_str(), Path::new(p), w.stat.size, w.warned))
    }

    /// When `path` is next checked (settled then, if it does not change).
    pub fn settles_at(&self, path: &Path) -> Option<Time> {
        self.files
            .get(path.as_os_str())
            .map(|w| w.deadline)
            .filter(|t| *t != Time(u64::MAX))
    }

    /// Up to `limit` paths whose check is due at `now`. They stay due until confirmed.
    pub fn due(&self, now: Time, limit: usize) -> Vec<PathBuf> {
        self.due
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(limit)
            .map(|(_, p)| PathBuf::from(p))
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Time> {
        self.due
            .iter()
            .next()
            .map(|(t, _)| *t)
            .filter(|t| *t != Time(u64::MAX))
    }

    /// A fresh stat of a due path (`None`: it is gone). Ready files leave the settler.
    pub fn confirm(&mut self, path: &Path, stat: Option<FileStat>, now: Time) -> Option<Settled> {
        let Some(stat) = stat else {
            self.forget(path);
            return None;
        };
        let w = self.files.get_mut(path.as_os_str())?;
        if w.stat != stat {
            w.stat = stat;
            w.stable_since = now;
            w.closed_at = None;
        } else {
            let quiet = now >= w.stable_since.plus_ms(self.settle);
            let closed_quiet = w
                .closed_at
                .is_some_and(|c| now >= c.plus_ms(self.after_close));
            if quiet || closed_quiet {
                let mapping = w.mapping.clone();
                self.forget(path);
                return Some(Settled::Ready {
                    mapping,
                    path: path.to_path_buf(),
                    stat,
                });
            }
        }
        let mut out = None;
        if !w.warned && now >= w.first_seen.plus_ms(self.max_settle) {
            w.warned = true;
            out = Some(Settled::StillChanging {
                path: path.to_path_buf(),
            });
        }
        self.reschedule(path);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(size: u64, m: i64) -> FileStat {
        FileStat {
            dev: 1,
            ino: 1,
            size,
            mtime_ns: m,
            ctime_ns: m,
            owner: None,
        }
    }

    #[test]
    fn ready_after_settle_when_unchanged() {
        let mut s = Settler::new(2000, 1000, 600_000);
        let p = Path::new("/f/a");
        s.observe("m", p, st(1, 1), Time(0));
        assert!(s.due(Time(1999), 10).is_empty());
        assert_eq!(s.next_deadline(), Some(Time(2000)));
        assert_eq!(s.due(Time(2000), 10), vec![p.to_path_buf()]);
        assert!(matches!(
            s.confirm(p, Some(st(1, 1)), Time(2000)),
            Some(Settled::Ready { .. })
        ));
        assert!(s.is_empty());
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn a_close_is_not_proof_a_writer_that_appends_and_closes_is_still_writing() {
        let mut s = Settler::new(2000, 1000, 600_000);
        let p = Path::new("/f/a");
        // Appended and closed every 500 ms: never quiet for a second after a close.
        for i in 0..10u64 {
            let t = Time(i * 500);
            s.observe("m", p, st(i + 1, i as i64), t);
            s.closed(p, t);
            assert!(s.due(t.plus_ms(499), 10).is_empty());
        }
        // The writer stopped at 4500: ready a second after its last close, not before.
        assert_eq!(s.next_deadline(), Some(Time(5500)));
        assert!(s.due(Time(5499), 10).is_empty());
        assert!(matches!(
            s.confirm(p, Some(st(10, 9)), Time(5500)),
            Some(Settled::Ready { .. })
        ));
    }

    #[test]
    fn a_path_being_checked_is_not_due_until_confirmed() {
        let mut s = Settler::new(2000, 1000, 600_000);
        let p = Path::new("/f/a");
        s.observe("m", p, st(1, 1), Time(0));
        s.checking(p);
        assert!(s.due(Time(5000), 10).is_empty());
        assert_eq!(s.next_deadline(), None);
        assert_eq!(s.confirm(p, Some(st(2, 2)), Time(5000)), None);
        assert_eq!(s.next_deadline(), Some(Time(7000)));
    }

    #[test]
    fn closed_then_changed_waits_again() {
        let mut s = Settler::new(2000, 1000, 600_000);
        let p = Path::new("/f/a");
        s.observe("m", p, st(1, 1), Time(0));
        s.closed(p, Time(0));
        assert_eq!(s.confirm(p, Some(st(2, 2)), Time(1000)), None);
        assert_eq!(s.next_deadline(), Some(Time(3000)));
    }

    #[test]
    fn still_changing_is_reported_once() {
        let mut s = Settler::new(2000, 1000, 10_000);
        let p = Path::new("/f/a");
        s.observe("m", p, st(1, 1), Time(0));
        assert_eq!(
            s.confirm(p, Some(st(2, 2)), Time(10_000)),
            Some(Settled::StillChanging { path: p.into() })
        );
        assert_eq!(s.confirm(p, Some(st(3, 3)), Time(11_000)), None);
        assert!(s.is_settling(p));
    }

    #[test]
    fn due_comes_in_batches_in_deadline_order() {
        let mut s = Settler::new(2000, 1000, 600_000);
        for i in 0..25u64 {
            s.observe("m", Path::new(&format!("/f/{i}")), st(1, 1), Time(i));
        }
        let b = s.due(Time(5000), 10);
        assert_eq!(b.len(), 10);
        assert_eq!(b[0], PathBuf::from("/f/0"));
        let gone = s.confirm(&b[0], None, Time(5000));
        assert!(gone.is_none());
        assert_eq!(s.len(), 24);
    }
}
