//! The settle rule: a file is finished when it has been unchanged for `settle`, or closed after
//! writing and then unchanged for `settle_after_close`. A close alone is not proof: a writer
//! that appends and closes again and again is still writing. So once a file is written again
//! after a close (its writer came back), its closes no longer shorten the wait: it is finished
//! when unchanged for `settle` plus twice the longest pause seen between its changes, at most
//! `max_settle`. A version taken by its close is remembered until `settle` after its last
//! change: a writer that comes back within that is still the same writer, and the next version
//! waits as above (the version taken could not have been told from a finished file).

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
    /// Written again after a close (of this version, or of a version just taken by its close):
    /// a close is no longer proof, the wait is [`Settler::patience`].
    reopened: bool,
    /// The longest time its stat stayed unchanged before changing again (ms).
    longest_pause: u64,
    /// `max_settle` passed and this was reported once.
    warned: bool,
    /// The deadline currently in `due`.
    deadline: Time,
}

/// A version taken by its close before `settle` passed since its last change: its writer, for
/// a change that comes before then.
#[derive(Debug, Clone)]
struct Taken {
    mapping: String,
    stat: FileStat,
    changed_at: Time,
    longest_pause: u64,
    first_seen: Time,
    warned: bool,
    until: Time,
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
    /// Paths whose version was taken by its close, until `settle` after its last change.
    taken: BTreeMap<OsString, Taken>,
    /// (until, path) of `taken`, in order.
    taken_until: BTreeSet<(Time, OsString)>,
    /// Mappings whose files a close does not finish (mailing ones: a mail cannot be taken
    /// back, so a writer that closes and pauses longer than `settle_after_close` must not get
    /// a first, partial version mailed): they wait `settle` (or the patience of a writer that
    /// came back) whatever the closes.
    close_not_final: BTreeSet<String>,
}

/// A new stat of a watched file, seen at `now`.
fn changed(w: &mut Watched, stat: FileStat, now: Time) {
    if w.closed_at.is_some() {
        w.reopened = true;
    }
    w.longest_pause = w.longest_pause.max(now.since(w.stable_since));
    w.stat = stat;
    w.stable_since = now;
    w.closed_at = None;
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

    /// The mappings whose files a close does not finish (see `close_not_final`).
    pub fn set_close_not_final(&mut self, mappings: impl IntoIterator<Item = String>) {
        self.close_not_final = mappings.into_iter().collect();
    }

    /// When `w` was closed after writing, if its mapping takes a close as a sign.
    fn closed_at(&self, w: &Watched) -> Option<Time> {
        w.closed_at
            .filter(|_| !self.close_not_final.contains(&w.mapping))
    }

    /// How long a file written again after a close must stay unchanged: `settle` plus twice
    /// the longest pause of its writer, at most `max_settle` (never under `settle`).
    fn patience(&self, w: &Watched) -> u64 {
        self.settle
            .saturating_add(w.longest_pause.saturating_mul(2))
            .min(self.max_settle.max(self.settle))
    }

    /// Whether `w` is finished at `now`, and if so whether by its close alone.
    fn finished(&self, w: &Watched, now: Time) -> Option<bool> {
        if w.reopened {
            return (now >= w.stable_since.plus_ms(self.patience(w))).then_some(false);
        }
        if now >= w.stable_since.plus_ms(self.settle) {
            return Some(false);
        }
        self.closed_at(w)
            .is_some_and(|c| now >= c.plus_ms(self.after_close))
            .then_some(true)
    }

    fn deadline(&self, w: &Watched) -> Time {
        let mut d = if w.reopened {
            w.stable_since.plus_ms(self.patience(w))
        } else {
            let d = w.stable_since.plus_ms(self.settle);
            match self.closed_at(w) {
                Some(c) => d.min(c.plus_ms(self.after_close)),
                None => d,
            }
        };
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

    /// Versions taken by their close whose `settle` has passed: a change now is a new writer.
    fn let_go(&mut self, now: Time) {
        while let Some((until, _)) = self.taken_until.first() {
            if *until > now {
                break;
            }
            if let Some((_, p)) = self.taken_until.pop_first() {
                self.taken.remove(&p);
            }
        }
    }

    fn untake(&mut self, path: &Path) -> Option<Taken> {
        let t = self.taken.remove(path.as_os_str())?;
        self.taken_until
            .remove(&(t.until, path.as_os_str().to_os_string()));
        Some(t)
    }

    /// A stat of `path` as of `now`.
    pub fn observe(&mut self, mapping: &str, path: &Path, stat: FileStat, now: Time) {
        self.let_go(now);
        match self.files.get_mut(path.as_os_str()) {
            Some(w) if w.stat == stat => return,
            Some(w) => {
                changed(w, stat, now);
                w.mapping = mapping.to_owned();
            }
            None => {
                let mut w = Watched {
                    mapping: mapping.to_owned(),
                    stat,
                    stable_since: now,
                    first_seen: now,
                    closed_at: None,
                    reopened: false,
                    longest_pause: 0,
                    warned: false,
                    deadline: Time(u64::MAX),
                };
                // Written again soon after a version was taken by its close: its writer is
                // back, and this version waits for it.
                if let Some(t) = self.untake(path).filter(|t| t.stat != stat) {
                    w.reopened = true;
                    w.longest_pause = t.longest_pause.max(now.since(t.changed_at));
                    w.first_seen = t.first_seen;
                    w.warned = t.warned;
                }
                self.files.insert(path.as_os_str().to_os_string(), w);
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
        self.untake(path);
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
            .chain(
                self.taken
                    .iter()
                    .filter(|(_, t)| t.mapping == mapping)
                    .map(|(p, _)| p.clone()),
            )
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
        self.let_go(now);
        let Some(stat) = stat else {
            self.forget(path);
            return None;
        };
        let w = self.files.get(path.as_os_str())?;
        if w.stat != stat {
            if let Some(w) = self.files.get_mut(path.as_os_str()) {
                changed(w, stat, now);
            }
        } else if let Some(by_close) = self.finished(w, now) {
            let w = w.clone();
            self.forget(path);
            if by_close {
                let until = w.stable_since.plus_ms(self.settle);
                let key = path.as_os_str().to_os_string();
                self.taken_until.insert((until, key.clone()));
                self.taken.insert(
                    key,
                    Taken {
                        mapping: w.mapping.clone(),
                        stat,
                        changed_at: w.stable_since,
                        longest_pause: w.longest_pause,
                        first_seen: w.first_seen,
                        warned: w.warned,
                        until,
                    },
                );
            }
            return Some(Settled::Ready {
                mapping: w.mapping,
                path: path.to_path_buf(),
                stat,
            });
        }
        let mut out = None;
        if let Some(w) = self.files.get_mut(path.as_os_str()) {
            if !w.warned && now >= w.first_seen.plus_ms(self.max_settle) {
                w.warned = true;
                out = Some(Settled::StillChanging {
                    path: path.to_path_buf(),
                });
            }
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
        // The writer stopped at 4500, after pauses of 500 ms: ready once unchanged for
        // `settle` plus twice its pause, not a second after its last close.
        assert_eq!(s.next_deadline(), Some(Time(7500)));
        assert!(s.due(Time(7499), 10).is_empty());
        assert_eq!(s.confirm(p, Some(st(10, 9)), Time(5500)), None);
        assert!(matches!(
            s.confirm(p, Some(st(10, 9)), Time(7500)),
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
        // Written again a second after its close: `settle` plus twice that pause.
        assert_eq!(s.next_deadline(), Some(Time(5000)));
    }

    /// The fourth trial's M1: a scan written by appends with 1.2 s pauses into a mailing
    /// folder was mailed twice, the first mail holding one line (its first close, then a pause
    /// past `settle_after_close`). A mail cannot be taken back: in a mailing mapping a close
    /// does not finish a file; it waits `settle`, and a writer that comes back waits as above.
    #[test]
    fn in_a_mailing_mapping_a_close_does_not_finish_a_file() {
        let mut s = Settler::new(2000, 1000, 600_000);
        s.set_close_not_final(["mail".to_string()]);
        let p = Path::new("/mail/scan.txt");
        s.observe("mail", p, st(1, 1), Time(0));
        s.closed(p, Time(0));
        assert_eq!(
            s.next_deadline(),
            Some(Time(2000)),
            "settle, not settle_after_close"
        );
        assert_eq!(s.confirm(p, Some(st(1, 1)), Time(1000)), None);
        // Back 1.2 s after its close: still the same writer.
        assert_eq!(s.confirm(p, Some(st(2, 2)), Time(1200)), None);
        s.closed(p, Time(1200));
        assert_eq!(s.next_deadline(), Some(Time(1200 + 2000 + 2 * 1200)));
        // Another mapping keeps the close's shortcut.
        let mut s = Settler::new(2000, 1000, 600_000);
        s.set_close_not_final(["mail".to_string()]);
        let q = Path::new("/f/a");
        s.observe("m", q, st(3, 1), Time(5000));
        s.closed(q, Time(5000));
        assert_eq!(s.next_deadline(), Some(Time(6000)));
    }

    #[test]
    fn closed_once_is_ready_after_settle_after_close() {
        let mut s = Settler::new(2000, 1000, 600_000);
        let p = Path::new("/f/a");
        s.observe("m", p, st(1, 1), Time(0));
        s.closed(p, Time(10));
        assert_eq!(s.next_deadline(), Some(Time(1010)));
        assert!(matches!(
            s.confirm(p, Some(st(1, 1)), Time(1010)),
            Some(Settled::Ready { .. })
        ));
        assert!(s.is_empty());
    }

    /// The new user's `echo "line $i" >> log.txt; sleep 1`: after one quick append, the pauses
    /// grew past `settle_after_close`, and each close was taken as the end (7 of 8 lines
    /// attached). A file written again after a close waits `settle` plus twice its longest pause.
    #[test]
    fn a_writer_back_after_a_close_is_not_taken_at_its_next_close() {
        let mut s = Settler::new(2000, 1000, 600_000);
        let p = Path::new("/f/log.txt");
        s.observe("m", p, st(7, 0), Time(0));
        s.closed(p, Time(0));
        // Back 400 ms after its close.
        s.observe("m", p, st(14, 1), Time(400));
        s.closed(p, Time(400));
        assert_eq!(s.next_deadline(), Some(Time(400 + 2000 + 2 * 400)));
        // Its next pause is 1.5 s: a second after the close proves nothing.
        assert_eq!(s.confirm(p, Some(st(14, 1)), Time(1400)), None);
        s.observe("m", p, st(21, 2), Time(1900));
        s.closed(p, Time(1900));
        assert_eq!(s.next_deadline(), Some(Time(1900 + 2000 + 2 * 1500)));
        // It stops: ready once quiet for that long, and not before.
        assert_eq!(s.confirm(p, Some(st(21, 2)), Time(6899)), None);
        assert!(matches!(
            s.confirm(p, Some(st(21, 2)), Time(6900)),
            Some(Settled::Ready { .. })
        ));
    }

    /// A pause longer than `settle_after_close` right after the first close cannot be told from
    /// a finished file, and that version goes; its writer, back within `settle`, is still the
    /// same writer: the next version waits for it (one early version, not one per pause).
    #[test]
    fn a_writer_back_soon_after_a_version_was_taken_by_its_close_is_waited_for() {
        let mut s = Settler::new(2000, 1000, 600_000);
        let p = Path::new("/f/log.txt");
        s.observe("m", p, st(7, 0), Time(0));
        s.closed(p, Time(0));
        assert!(matches!(
            s.confirm(p, Some(st(7, 0)), Time(1000)),
            Some(Settled::Ready { .. })
        ));
        s.observe("m", p, st(14, 1), Time(1200));
        s.closed(p, Time(1200));
        assert_eq!(s.next_deadline(), Some(Time(1200 + 2000 + 2 * 1200)));
        assert_eq!(s.confirm(p, Some(st(14, 1)), Time(2200)), None);
    }

    /// Written again later than `settle` after the version taken: a new writer (an editor
    /// saving again), as quick as the first; the same stat seen again is no writer at all.
    #[test]
    fn a_version_taken_is_forgotten_after_settle_and_the_same_stat_is_no_return() {
        let mut s = Settler::new(2000, 1000, 600_000);
        let p = Path::new("/f/doc.txt");
        s.observe("m", p, st(7, 0), Time(0));
        s.closed(p, Time(0));
        assert!(s.confirm(p, Some(st(7, 0)), Time(1000)).is_some());
        s.observe("m", p, st(9, 1), Time(2000));
        s.closed(p, Time(2000));
        assert_eq!(s.next_deadline(), Some(Time(3000)));
        assert!(s.confirm(p, Some(st(9, 1)), Time(3000)).is_some());
        // The version taken, seen again (a late event, a rescan): nothing new to wait for.
        s.observe("m", p, st(9, 1), Time(3100));
        s.closed(p, Time(3100));
        assert_eq!(s.next_deadline(), Some(Time(4100)));
    }

    /// The wait grows with the pauses, up to `max_settle`; past it the file is still reported
    /// as changing once, and still waited for.
    #[test]
    fn a_writers_wait_is_bounded_by_max_settle() {
        let mut s = Settler::new(2000, 1000, 10_000);
        let p = Path::new("/f/a");
        s.observe("m", p, st(1, 0), Time(0));
        s.closed(p, Time(0));
        s.observe("m", p, st(2, 1), Time(900));
        s.closed(p, Time(900));
        // 2000 + 2 * 900
        assert_eq!(s.next_deadline(), Some(Time(900 + 3800)));
        s.observe("m", p, st(3, 2), Time(4500));
        // 2000 + 2 * 3600; the report at `max_settle` comes first.
        assert_eq!(s.next_deadline(), Some(Time(10_000)));
        assert_eq!(
            s.confirm(p, Some(st(3, 2)), Time(10_000)),
            Some(Settled::StillChanging { path: p.into() })
        );
        assert_eq!(s.next_deadline(), Some(Time(4500 + 9200)));
        // A pause of 9 s: 2000 + 2 * 9000 is past `max_settle`, which bounds it.
        s.observe("m", p, st(4, 3), Time(13_500));
        assert_eq!(s.next_deadline(), Some(Time(13_500 + 10_000)));
        assert!(matches!(
            s.confirm(p, Some(st(4, 3)), Time(23_500)),
            Some(Settled::Ready { .. })
        ));
    }

    /// A folder gone (`FolderUnavailable`): its files leave the settler, and so does what it
    /// remembered of their writers; another mapping's files stay.
    #[test]
    fn a_mapping_forgotten_takes_its_files_and_their_writers_with_it() {
        let mut s = Settler::new(2000, 1000, 600_000);
        let (a, b, c) = (Path::new("/m/a"), Path::new("/n/b"), Path::new("/m/c"));
        s.observe("m", a, st(1, 0), Time(0));
        s.observe("n", b, st(1, 0), Time(0));
        s.observe("m", c, st(1, 0), Time(0));
        s.closed(c, Time(0));
        assert!(s.confirm(c, Some(st(1, 0)), Time(1000)).is_some());
        s.forget_mapping("m");
        assert!(!s.is_settling(a));
        assert!(s.is_settling(b));
        // c's writer is forgotten too: written again, it is a new writer, as quick as any.
        s.observe("m", c, st(2, 1), Time(1100));
        s.closed(c, Time(1100));
        assert_eq!(s.settles_at(c), Some(Time(2100)));
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
