//! The sled database behind the ledger: opening (lock, corruption, schema version), entries by
//! id, the path index, transitions and pruning. Durability is explicit: nothing is promised on
//! disk until [`Ledger::flush`] returns, and sled's background flusher is off so an idle agent
//! does not wake every 500 ms.
//!
//! Layout (trees): `meta` (schema version), `entries` (id -> JSON [`LedgerEntry`]), `by_path`
//! (mapping + path + seq -> id; the highest seq of a path is its current version), `messages`
//! (message id -> JSON `core::model::MessageRecord`, a `new_message` mapping's messages; a
//! ledger written before messages existed simply has none: sled makes the tree when opened).

use super::entry::time_of;
use super::entry::{EntryBrief, LedgerEntry};
use super::error::LedgerError;
use super::EntryState;
use crate::core::model::MessageRecord;
use crate::core::prune;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::io::{Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

/// The schema version this build writes and reads. Bump it with a step in `Ledger::migrate`.
pub const SCHEMA_VERSION: u32 = 2;

const META_TREE: &[u8] = b"meta";
const ENTRIES_TREE: &[u8] = b"entries";
const BY_PATH_TREE: &[u8] = b"by_path";
const MESSAGES_TREE: &[u8] = b"messages";
const SCHEMA_KEY: &[u8] = b"schema_version";
const GENERATION_KEY: &[u8] = b"flush_generation";
/// Beside sled's files (sled ignores names not starting with `snap.`), so it moves with them.
const MARK_FILE: &str = "outbox-flushed";
/// Fingerprint (names, sizes, times) of the ledger's files as a clean close left them.
const CLEAN_FILE: &str = "outbox-closed-clean";
/// sled's default cache is 1 GiB; a ledger of a few thousand entries needs a fraction of this.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Attempts at a fresh random id before giving up (48 random bits: collisions are rare).
const ID_ATTEMPTS: usize = 16;

type Result<T> = std::result::Result<T, LedgerError>;

/// The open ledger. Cheap to clone (sled handles are shared); all clones see the same data.
#[derive(Clone)]
pub struct Ledger {
    db: sled::Db,
    meta: sled::Tree,
    entries: sled::Tree,
    by_path: sled::Tree,
    messages: sled::Tree,
    path: PathBuf,
    state_dir: PathBuf,
    flushes: Arc<Mutex<FlushMark>>,
    /// Writes made so far (counted after each reaches sled): a flush covers every write counted
    /// before it started, which lets concurrent flushes share one (group commit).
    writes: Arc<std::sync::atomic::AtomicU64>,
}

/// The last flushed generation and the open mark file it is recorded in.
struct FlushMark {
    generation: u64,
    file: Option<std::fs::File>,
    /// `writes` as it was when the last completed flush started.
    durable_writes: u64,
}

impl FlushMark {
    /// Overwrite the mark in place (8 bytes: one sector, so not torn in practice) and sync it.
    fn write(&mut self, ledger_path: &Path, generation: u64) -> Result<()> {
        let mark_path = ledger_path.join(MARK_FILE);
        let io = |source| LedgerError::Io {
            path: mark_path.clone(),
            source,
        };
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&mark_path)
                    .map_err(io)?,
            ),
        };
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&generation.to_be_bytes()).map_err(io)?;
        file.sync_data().map_err(io)
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Finished (done, failed, rejected, canceled) and not updated for `keep_done`: pruned once
/// its file is gone (the core's rule, `core::prune::old_enough`).
pub fn is_stale(
    state: EntryState,
    updated_at: OffsetDateTime,
    keep_done: Duration,
    now: OffsetDateTime,
) -> bool {
    prune::old_enough(
        state.core(),
        time_of(updated_at),
        millis(keep_done),
        time_of(now),
    )
}

/// A duration in the core's milliseconds (saturating).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Ledger {
    /// Open (or create) the ledger at `state_dir/ledger`, creating `state_dir` owner-only when
    /// missing. Fails with [`LedgerError::InUse`] when another process has it open,
    /// [`LedgerError::Corrupt`] when it cannot be read whole, [`LedgerError::TooNew`] for a newer
    /// schema; an older schema is migrated forward. Nothing is ever reset.
    ///
    /// sled 0.34 "recovers" a damaged log by truncating it, i.e. it would silently drop flushed
    /// entries. So an existing ledger is first checked on a scratch copy (while holding its
    /// lock); the real files are opened only when the copy is whole, and stay untouched when not.
    pub fn open(state_dir: &Path) -> Result<Ledger> {
        create_private_dir(state_dir)?;
        let path = state_dir.join("ledger");
        if path.join("db").exists() {
            let lock = probe_lock(&path)?;
            // Files exactly as a clean close left them need no check on a copy: only a crash,
            // or something else writing them, calls for one (start-up stays fast).
            let clean = std::fs::read_to_string(path.join(CLEAN_FILE)).ok();
            if clean.is_none() || clean != fingerprint(&path) {
                check_copy(state_dir, &path)?;
            }
            // Let go just before sled takes the lock itself; a rival that slips in between makes
            // sled's open fail with InUse, which is the truth.
            drop(lock);
        }
        create_private_dir(&path)?;
        let ledger = Ledger::open_db(state_dir, &path)?;
        match ledger.check(false)? {
            Some(v) if v < SCHEMA_VERSION => ledger.migrate(v)?,
            Some(_) => {}
            // No version but entries: written before versions existed (v0).
            None if !ledger.entries.is_empty() => ledger.migrate(0)?,
            None => {
                ledger.set_schema_version(SCHEMA_VERSION)?;
                ledger.flush()?;
            }
        }
        Ok(ledger)
    }

    /// Flush, let go of the database, and record that its files were left whole, so the next
    /// open can skip the check on a copy. Returns once sled has let go of the files (at most a
    /// few seconds); with other clones still open it records nothing, which only costs the next
    /// open that check.
    pub fn close(self) -> Result<()> {
        self.flush()?;
        let path = self.path.clone();
        drop(self);
        // sled lets go of its files when its last I/O job ends, which can be a moment after the
        // flush returned (the job still holds them while it wakes the flusher). Wait for that
        // before recording the files as whole: a record taken while sled still writes would be
        // stale, and an open right after this returns would find the ledger in use.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let _lock = loop {
            match probe_lock(&path) {
                Ok(lock) => break lock,
                Err(LedgerError::InUse { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                // Another clone still open, or the files gone: no record; the next open checks.
                Err(_) => return Ok(()),
            }
        };
        if let Some(fp) = fingerprint(&path) {
            let _ = std::fs::write(path.join(CLEAN_FILE), fp);
        }
        Ok(())
    }

    /// Open sled at `path` (no checks).
    fn open_db(state_dir: &Path, path: &Path) -> Result<Ledger> {
        let config = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .cache_capacity(CACHE_BYTES);
        // sled 0.34 panics on some kinds of damage instead of returning an error; either way the
        // user must hear "corrupt, not reset", not see a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(LedgerError::from_sled(path, e)),
            Err(panic) => {
                return Err(LedgerError::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!("sled failed reading it: {}", panic_text(&panic)),
                })
            }
        };
        let tree = |name: &[u8]| {
            db.open_tree(name)
                .map_err(|e| LedgerError::from_sled(path, e))
        };
        let meta = tree(META_TREE)?;
        let generation = match meta
            .get(GENERATION_KEY)
            .map_err(|e| LedgerError::from_sled(path, e))?
        {
            Some(bytes) => u64_from(&bytes).unwrap_or(0),
            None => 0,
        };
        Ok(Ledger {
            entries: tree(ENTRIES_TREE)?,
            by_path: tree(BY_PATH_TREE)?,
            messages: tree(MESSAGES_TREE)?,
            meta,
            db,
            path: path.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            flushes: Arc::new(Mutex::new(FlushMark {
                generation,
                file: None,
                durable_writes: 0,
            })),
            writes: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        })
    }

    /// Refuse a ledger that is newer than us, or that holds less than was flushed (the mark file
    /// beside the db records the last flushed generation). With `decode_all`, also read every
    /// entry. Returns the schema version found.
    fn check(&self, decode_all: bool) -> Result<Option<u32>> {
        let version = self.schema_version()?;
        if let Some(v) = version {
            if v > SCHEMA_VERSION {
                return Err(LedgerError::TooNew {
                    path: self.path.clone(),
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
        }
        if let Some(marked) = read_mark(&self.path)? {
            let stored = match self
                .meta
                .get(GENERATION_KEY)
                .map_err(|e| self.sled_err(e))?
            {
                Some(bytes) => u64_from(&bytes).unwrap_or(0),
                None => 0,
            };
            if stored < marked {
                return Err(self.corrupt(format!(
                    "sled can read only up to flush {stored} of {marked}: data that was written is missing"
                )));
            }
        }
        if decode_all {
            for entry in self.iter() {
                entry?;
            }
            for message in self.messages() {
                message?;
            }
        }
        Ok(version)
    }

    /// The database directory (`state_dir/ledger`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state dir the ledger lives in.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The schema version recorded in the database (`None` for a fresh or pre-version one).
    pub fn schema_version(&self) -> Result<Option<u32>> {
        match self.meta.get(SCHEMA_KEY).map_err(|e| self.sled_err(e))? {
            None => Ok(None),
            Some(bytes) => match <[u8; 4]>::try_from(bytes.as_ref()) {
                Ok(b) => Ok(Some(u32::from_be_bytes(b))),
                Err(_) => Err(self.corrupt(format!(
                    "the schema version record is {} bytes, not 4",
                    bytes.len()
                ))),
            },
        }
    }

    /// Make every write so far durable; returns once sled's flush has completed. Each flush also
    /// bumps a generation stored in sled and then in the mark file, so that a later open can tell
    /// a log sled truncated from a whole one. Flushes are serialised to keep the two in order.
    pub fn flush(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        // Every write this caller made is counted by now.
        let needed = self.writes.load(Ordering::SeqCst);
        let mut mark = match self.flushes.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Another flush started after those writes and has completed: they are durable.
        if mark.durable_writes >= needed && needed > 0 {
            return Ok(());
        }
        let covered = self.writes.load(Ordering::SeqCst);
        let generation = mark.generation + 1;
        self.meta
            .insert(GENERATION_KEY, &generation.to_be_bytes())
            .map_err(|e| self.sled_err(e))?;
        self.db.flush().map_err(|e| self.sled_err(e))?;
        mark.write(&self.path, generation)?;
        mark.generation = generation;
        mark.durable_writes = covered;
        Ok(())
    }

    /// Store a new entry under a fresh id if its id is already taken, assign its sequence number
    /// and make it the current version of its path. Returns the entry as stored. Not flushed.
    pub fn insert_new(&self, entry: LedgerEntry) -> Result<LedgerEntry> {
        let mut entry = entry;
        for _ in 0..ID_ATTEMPTS {
            match self.write(&entry, true)? {
                Some(stored) => return Ok(stored),
                None => entry.id = super::entry::new_id(),
            }
        }
        Err(LedgerError::Invalid(format!(
            "no free entry id after {ID_ATTEMPTS} attempts"
        )))
    }

    /// Insert or replace `entry` as given (its `seq` is kept from the stored one; a new entry
    /// becomes the current version of its path). An entry's mapping and path never change.
    /// Returns the entry as stored. Not flushed: see [`Ledger::put_flushed`].
    pub fn put(&self, entry: &LedgerEntry) -> Result<LedgerEntry> {
        match self.write(entry, false)? {
            Some(stored) => Ok(stored),
            None => Err(LedgerError::Invalid("put lost its entry".to_owned())),
        }
    }

    /// [`Ledger::put`] then [`Ledger::flush`]: the intent record written before a remote effect.
    pub fn put_flushed(&self, entry: &LedgerEntry) -> Result<LedgerEntry> {
        let stored = self.put(entry)?;
        self.flush()?;
        Ok(stored)
    }

    /// The entry with this id.
    pub fn get(&self, id: &str) -> Result<Option<LedgerEntry>> {
        match self
            .entries
            .get(id.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => self.decode(id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The newest version recorded for `path` in `mapping`.
    pub fn current_for_path(&self, mapping: &str, path: &Path) -> Result<Option<LedgerEntry>> {
        for item in self.by_path.scan_prefix(index_prefix(mapping, path)).rev() {
            let (_, id) = item.map_err(|e| self.sled_err(e))?;
            // An index row without its entry can only be left by a crash between trees in an
            // older build; skip it rather than fail the whole path.
            if let Some(entry) = self.get(&String::from_utf8_lossy(&id))? {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Every version recorded for `path` in `mapping`, newest first.
    pub fn versions_for_path(&self, mapping: &str, path: &Path) -> Result<Vec<LedgerEntry>> {
        let mut out = Vec::new();
        for item in self.by_path.scan_prefix(index_prefix(mapping, path)).rev() {
            let (_, id) = item.map_err(|e| self.sled_err(e))?;
            if let Some(entry) = self.get(&String::from_utf8_lossy(&id))? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Every entry, streamed from sled (in id order, i.e. no meaningful order).
    pub fn iter(&self) -> impl Iterator<Item = Result<LedgerEntry>> + '_ {
        self.entries.iter().map(move |item| {
            let (key, bytes) = item.map_err(|e| self.sled_err(e))?;
            self.decode(&key, &bytes)
        })
    }

    /// The entries in one of `parts` parts of the id space (`part` from 0), streamed: reading
    /// the parts on as many threads reads the whole ledger in a fraction of the time. Ids are
    /// hexadecimal; the parts split the first digit.
    pub fn iter_part(&self, part: u8, parts: u8) -> impl Iterator<Item = Result<LedgerEntry>> + '_ {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let bound = |k: u8| -> Option<u8> {
            (k > 0 && k < parts).then(|| DIGITS[(usize::from(k) * 16) / usize::from(parts)])
        };
        let (lo, hi) = (bound(part), bound(part + 1));
        let range = (
            lo.map_or(std::ops::Bound::Unbounded, |b| {
                std::ops::Bound::Included(vec![b])
            }),
            hi.map_or(std::ops::Bound::Unbounded, |b| {
                std::ops::Bound::Excluded(vec![b])
            }),
        );
        self.entries.range::<Vec<u8>, _>(range).map(move |item| {
            let (key, bytes) = item.map_err(|e| self.sled_err(e))?;
            self.decode(&key, &bytes)
        })
    }

    /// Every entry's [`EntryBrief`], in key order: the cheap whole read start-up makes.
    pub fn iter_briefs(&self) -> impl Iterator<Item = Result<EntryBrief>> + '_ {
        self.entries.iter().map(move |item| {
            let (key, bytes) = item.map_err(|e| self.sled_err(e))?;
            self.decode(&key, &bytes)
        })
    }

    /// Entries in `filter` state (all when `None`), oldest first (by insertion order).
    pub fn list(&self, filter: Option<EntryState>) -> Result<Vec<LedgerEntry>> {
        let mut out = Vec::new();
        for entry in self.iter() {
            let entry = entry?;
            if filter.is_none_or(|s| entry.state == s) {
                out.push(entry);
            }
        }
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }

    /// Entries in `state`, oldest first.
    pub fn by_state(&self, state: EntryState) -> Result<Vec<LedgerEntry>> {
        self.list(Some(state))
    }

    /// Change an entry with `f` and stamp `updated_at`, atomically (compare-and-swap, retried on
    /// a concurrent change, so `f` may run more than once). Its id, mapping, path and seq cannot
    /// change. Not flushed.
    pub fn update(&self, id: &str, mut f: impl FnMut(&mut LedgerEntry)) -> Result<LedgerEntry> {
        loop {
            let Some(old) = self
                .entries
                .get(id.as_bytes())
                .map_err(|e| self.sled_err(e))?
            else {
                return Err(LedgerError::NotFound { id: id.to_owned() });
            };
            let before: LedgerEntry = self.decode(id.as_bytes(), &old)?;
            let mut entry = before.clone();
            f(&mut entry);
            if entry.mapping != before.mapping || entry.path != before.path {
                return Err(LedgerError::Invalid(format!(
                    "entry {id}: mapping and path are fixed; record a new entry for another file"
                )));
            }
            entry.id = before.id;
            entry.seq = before.seq;
            entry.updated_at = OffsetDateTime::now_utc();
            let new = self.encode(&entry)?;
            match self
                .entries
                .compare_and_swap(id.as_bytes(), Some(old), Some(new))
                .map_err(|e| self.sled_err(e))?
            {
                Ok(()) => {
                    self.wrote();
                    return Ok(entry);
                }
                Err(_) => continue, // changed under us: redo on the fresh value
            }
        }
    }

    /// Move an entry to `state`, apply `f` to it in the same atomic step, stamp `updated_at`.
    pub fn set_state(
        &self,
        id: &str,
        state: EntryState,
        mut f: impl FnMut(&mut LedgerEntry),
    ) -> Result<LedgerEntry> {
        self.update(id, |e| {
            e.state = state;
            f(e);
        })
    }

    fn wrote(&self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Remove an entry and its index row; returns it if it existed. Not flushed.
    pub fn remove(&self, id: &str) -> Result<Option<LedgerEntry>> {
        let result = (&self.entries, &self.by_path).transaction(|(entries, by_path)| {
            let Some(bytes) = entries.remove(id.as_bytes())? else {
                return Ok(None);
            };
            let entry: LedgerEntry = self
                .decode(id.as_bytes(), &bytes)
                .map_err(ConflictableTransactionError::Abort)?;
            by_path.remove(index_key(&entry.mapping, &entry.path, entry.seq))?;
            Ok(Some(entry))
        });
        let removed = self.txn_result(result)?;
        self.wrote();
        Ok(removed)
    }

    /// Remove finished entries (done, failed, rejected, canceled) not updated for `keep_done`
    /// whose files are gone (`exists` says false), then flush. Entries of files still present
    /// are kept whatever their age, or those files would be sent again, and so are those a
    /// message not over names. Then the messages sent or drafted as long ago none of whose
    /// entries is left. Returns how many went (entries and messages). The choice is the core's
    /// (`core::prune`); this makes the deletes.
    pub fn prune(
        &self,
        keep_done: Duration,
        now: OffsetDateTime,
        exists: impl Fn(&Path) -> bool,
    ) -> Result<usize> {
        self.prune_ids(keep_done, now, exists).map(|(n, _)| n)
    }

    /// [`Ledger::prune`], and the ids of the entries that went (a running agent tells its core:
    /// `Input::Pruned`).
    pub fn prune_ids(
        &self,
        keep_done: Duration,
        now: OffsetDateTime,
        exists: impl Fn(&Path) -> bool,
    ) -> Result<(usize, Vec<String>)> {
        let mut stale = Vec::new();
        for entry in self.iter_briefs() {
            let entry = entry?;
            if is_stale(entry.state, entry.updated_at, keep_done, now) {
                stale.push((entry.id, entry.path));
            }
        }
        self.prune_stale_ids(stale, keep_done, now, exists)
    }

    /// [`Ledger::prune`] of the entries `stale` names, each with its path (finished and not
    /// updated for `keep_done` when a whole read found them: start-up's read collects them, so
    /// it needs no second pass). One whose file is there (`exists`: the agent asks
    /// `core::prune::may_go`) is passed over unread; the others are read again, and one changed
    /// since, or named by a message that is not over (`core::prune::held`), is kept: the core's
    /// `prune::choose`, made entry by entry over sled.
    pub fn prune_stale(
        &self,
        stale: Vec<(String, PathBuf)>,
        keep_done: Duration,
        now: OffsetDateTime,
        exists: impl Fn(&Path) -> bool,
    ) -> Result<usize> {
        self.prune_stale_ids(stale, keep_done, now, exists)
            .map(|(n, _)| n)
    }

    /// [`Ledger::prune_stale`], and the ids of the entries that went.
    pub fn prune_stale_ids(
        &self,
        stale: Vec<(String, PathBuf)>,
        keep_done: Duration,
        now: OffsetDateTime,
        exists: impl Fn(&Path) -> bool,
    ) -> Result<(usize, Vec<String>)> {
        let mut removed = 0;
        let mut ids = Vec::new();
        for (id, path) in stale {
            // (An entry's path is its own for good: a file elsewhere is another entry.)
            if exists(&path) {
                continue;
            }
            let Some(entry) = self.get(&id)? else {
                continue;
            };
            // Kept while a message that is not over names it (`core::prune::held`).
            let message = match &entry.message {
                Some(m) => self.get_message(m)?.map(|m| m.state),
                None => None,
            };
            // (Nor one with work left though finished: a session or copies to delete, an
            // after-action owed: `core::prune::Entry::work_left`.)
            if is_stale(entry.state, entry.updated_at, keep_done, now)
                && !crate::core::machine::has_work(&entry.to_record())
                && !prune::held(message)
                && self.remove(&id)?.is_some()
            {
                removed += 1;
                ids.push(id);
            }
        }
        // A message sent (or left drafted) that long ago, none of whose files' entries is left,
        // has nothing more to say (`core::prune::message_may_go`).
        let mut gone_messages = Vec::new();
        for m in self.messages() {
            let m = m?;
            let mut failed = None;
            let go = prune::message_may_go(
                m.state,
                m.updated_at,
                millis(keep_done),
                time_of(now),
                m.files.iter().map(String::as_str),
                |f| match self.entries.contains_key(f.as_bytes()) {
                    Ok(there) => there,
                    // Kept, and the error said below.
                    Err(e) => {
                        failed.get_or_insert(e);
                        true
                    }
                },
            );
            if let Some(e) = failed {
                return Err(self.sled_err(e));
            }
            if go {
                gone_messages.push(m.id);
            }
        }
        for id in gone_messages {
            self.messages
                .remove(id.as_bytes())
                .map_err(|e| self.sled_err(e))?;
            self.wrote();
            removed += 1;
        }
        if removed > 0 {
            self.flush()?;
        }
        Ok((removed, ids))
    }

    /// Insert or replace a message record. Not flushed.
    pub fn put_message(&self, m: &MessageRecord) -> Result<()> {
        let bytes = serde_json::to_vec(m)
            .map_err(|e| LedgerError::Invalid(format!("message {} does not encode: {e}", m.id)))?;
        self.messages
            .insert(m.id.as_bytes(), bytes)
            .map_err(|e| self.sled_err(e))?;
        self.wrote();
        Ok(())
    }

    /// The message with this id.
    pub fn get_message(&self, id: &str) -> Result<Option<MessageRecord>> {
        match self
            .messages
            .get(id.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => self.decode(id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every message, streamed from sled (in id order).
    pub fn messages(&self) -> impl Iterator<Item = Result<MessageRecord>> + '_ {
        self.messages.iter().map(move |item| {
            let (key, bytes) = item.map_err(|e| self.sled_err(e))?;
            self.decode(&key, &bytes)
        })
    }

    /// Every message, oldest first.
    pub fn list_messages(&self) -> Result<Vec<MessageRecord>> {
        let mut out = self.messages().collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|m| m.seq);
        Ok(out)
    }

    /// How many entries the ledger holds.
    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// Bytes the database takes on disk, as sled reports them.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(|e| self.sled_err(e))
    }

    /// Bring a ledger at schema `from` up to [`SCHEMA_VERSION`], one step at a time, recording
    /// each step's version only after its data is written. Each step is idempotent, so a crash
    /// mid-migration is repaired by the next open.
    fn migrate(&self, from: u32) -> Result<()> {
        tracing::info!(path = %crate::outside::path(&self.path), from, to = SCHEMA_VERSION, "migrating the ledger");
        let mut version = from;
        while version < SCHEMA_VERSION {
            match version {
                0 => self.migrate_v0_to_v1()?,
                1 => self.migrate_v1_to_v2()?,
                v => {
                    return Err(self.corrupt(format!("no migration known from schema version {v}")))
                }
            }
            version += 1;
            self.flush()?;
            self.set_schema_version(version)?;
            self.flush()?;
        }
        Ok(())
    }

    /// v0 records lack the agent's fields: serde defaults fill them; here we derive what can be
    /// derived (created_at, name, seq) and rebuild the path index from scratch.
    fn migrate_v0_to_v1(&self) -> Result<()> {
        let mut all = self.list(None)?;
        all.sort_by_key(|e| (e.seq == 0, e.created_at, e.updated_at));
        let mut next_seq = all.iter().map(|e| e.seq).max().unwrap_or(0);
        self.by_path.clear().map_err(|e| self.sled_err(e))?;
        for mut entry in all {
            if entry.created_at == OffsetDateTime::UNIX_EPOCH {
                entry.created_at = entry.updated_at;
            }
            if entry.name.is_empty() {
                entry.name = entry.file_name();
            }
            if entry.seq == 0 {
                next_seq += 1;
                entry.seq = next_seq;
            }
            let bytes = self.encode(&entry)?;
            self.entries
                .insert(entry.id.as_bytes(), bytes)
                .map_err(|e| self.sled_err(e))?;
            self.by_path
                .insert(
                    index_key(&entry.mapping, &entry.path, entry.seq),
                    entry.id.as_bytes(),
                )
                .map_err(|e| self.sled_err(e))?;
        }
        // Sequence numbers handed out later must sort after the migrated ones.
        while self.db.generate_id().map_err(|e| self.sled_err(e))? <= next_seq {}
        Ok(())
    }

    /// v2 stores the core's whole `Record`. What v1 knew maps onto it: `post_in_flight` is read
    /// as `may_exist` (serde alias); an entry left `uploading` may have sent its last byte too; a session's `sent_end` is unknown, so any offset up to the size is
    /// believed; an entry that may have an effect is bound to the item it recorded; done
    /// entries read as finished with their after-action (v1 ran it right after `done`).
    fn migrate_v1_to_v2(&self) -> Result<()> {
        for mut e in self.list(None)? {
            // v1 recorded neither a POST's nor a last chunk's answer as unknown: whatever was
            // uploading may already be on the item, so it is looked for before anything is
            // sent again (a session that turns out gone included).
            if e.state == EntryState::Uploading {
                e.may_exist = true;
            }
            if let Some(s) = e.session.as_mut() {
                if s.sent_end == 0 {
                    s.sent_end = e.size;
                }
            }
            e.bound = e.may_exist || e.session.is_some() || e.state.is_terminal();
            let bytes = self.encode(&e)?;
            self.entries
                .insert(e.id.as_bytes(), bytes)
                .map_err(|err| self.sled_err(err))?;
        }
        Ok(())
    }

    fn set_schema_version(&self, v: u32) -> Result<()> {
        self.meta
            .insert(SCHEMA_KEY, &v.to_be_bytes())
            .map(|_| ())
            .map_err(|e| self.sled_err(e))
    }

    /// Insert or replace; `None` when `new_only` and the id is taken.
    fn write(&self, entry: &LedgerEntry, new_only: bool) -> Result<Option<LedgerEntry>> {
        if !entry.path.is_absolute() {
            return Err(LedgerError::Invalid(format!(
                "entry path {} is not absolute",
                entry.path.display()
            )));
        }
        if entry.id.is_empty()
            || !entry
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(LedgerError::Invalid(format!(
                "entry id `{}` is not [A-Za-z0-9_-]+",
                entry.id
            )));
        }
        loop {
            // sled's id generator cannot be called inside a transaction (it deadlocks), so a new
            // entry's seq is drawn first; if the entry appears or vanishes meanwhile, go again.
            let exists = self
                .entries
                .contains_key(entry.id.as_bytes())
                .map_err(|e| self.sled_err(e))?;
            let fresh_seq = match exists {
                true => None,
                false => Some(self.db.generate_id().map_err(|e| self.sled_err(e))?),
            };
            let result = (&self.entries, &self.by_path).transaction(|(entries, by_path)| {
                let mut stored = entry.clone();
                match (entries.get(entry.id.as_bytes())?, fresh_seq) {
                    (Some(_), _) if new_only => return Ok(Write::Taken),
                    (Some(old), _) => {
                        let old: LedgerEntry = self.decode(entry.id.as_bytes(), &old).map_err(ConflictableTransactionError::Abort)?;
                        if old.mapping != entry.mapping || old.path != entry.path {
                            return Err(ConflictableTransactionError::Abort(LedgerError::Invalid(format!(
                                "entry {}: mapping and path are fixed; record a new entry for another file",
                                entry.id
                            ))));
                        }
                        stored.seq = old.seq;
                    }
                    // The core numbers the versions it records; keep its order.
                    (None, Some(_)) if entry.seq != 0 => {}
                    (None, Some(seq)) => stored.seq = seq,
                    (None, None) => return Ok(Write::Again),
                }
                let bytes = self.encode(&stored).map_err(ConflictableTransactionError::Abort)?;
                entries.insert(stored.id.as_bytes(), bytes)?;
                // Idempotent for an existing entry; makes a new one the current version of its path.
                by_path.insert(index_key(&stored.mapping, &stored.path, stored.seq), stored.id.as_bytes())?;
                Ok(Write::Stored(Box::new(stored)))
            });
            match self.txn_result(result)? {
                Write::Stored(stored) => {
                    self.wrote();
                    return Ok(Some(*stored));
                }
                Write::Taken => return Ok(None),
                Write::Again => continue,
            }
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, key: &[u8], bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| {
            self.corrupt(format!(
                "entry {} does not decode: {e}",
                String::from_utf8_lossy(key)
            ))
        })
    }

    fn encode(&self, entry: &LedgerEntry) -> Result<Vec<u8>> {
        // Test hook (debug builds): an entry that does not encode, whatever made it so.
        #[cfg(debug_assertions)]
        if let Ok(part) = std::env::var("OUTBOX_REFUSE_ENTRY") {
            if !part.is_empty() && entry.path.to_string_lossy().contains(&part) {
                return Err(LedgerError::Invalid(format!(
                    "entry {} does not encode: refused by OUTBOX_REFUSE_ENTRY",
                    entry.id
                )));
            }
        }
        serde_json::to_vec(entry)
            .map_err(|e| LedgerError::Invalid(format!("entry {} does not encode: {e}", entry.id)))
    }

    fn txn_result<T>(&self, r: std::result::Result<T, TransactionError<LedgerError>>) -> Result<T> {
        match r {
            Ok(v) => Ok(v),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(self.sled_err(e)),
        }
    }

    fn sled_err(&self, e: sled::Error) -> LedgerError {
        LedgerError::from_sled(&self.path, e)
    }

    fn corrupt(&self, detail: String) -> LedgerError {
        LedgerError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }
}

/// Outcome of one attempt of [`Ledger::write`].
enum Write {
    Stored(Box<LedgerEntry>),
    Taken,
    Again,
}

/// Index keys: length-prefixed mapping and path (so no name can run into another), then the
/// big-endian seq so that versions of one path sort oldest to newest.
fn index_prefix(mapping: &str, path: &Path) -> Vec<u8> {
    let path = path_bytes(path);
    let mut key = Vec::with_capacity(8 + mapping.len() + path.len() + 8);
    key.extend_from_slice(&(mapping.len() as u32).to_be_bytes());
    key.extend_from_slice(mapping.as_bytes());
    key.extend_from_slice(&(path.len() as u32).to_be_bytes());
    key.extend_from_slice(&path);
    key
}

fn index_key(mapping: &str, path: &Path, seq: u64) -> Vec<u8> {
    let mut key = index_prefix(mapping, path);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

#[cfg(unix)]
fn path_bytes(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().to_vec()
}

#[cfg(windows)]
fn path_bytes(path: &Path) -> Vec<u8> {
    use std::os::windows::ffi::OsStrExt;
    path.as_os_str()
        .encode_wide()
        .flat_map(|u| u.to_be_bytes())
        .collect()
}

#[cfg(not(any(unix, windows)))]
fn path_bytes(path: &Path) -> Vec<u8> {
    path.to_string_lossy().as_bytes().to_vec()
}

/// Create `dir` (and missing parents) readable only by its owner; an existing dir is left as is.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    // Ours or refused: see `private`.
    crate::private::ensure_private_dir(dir).map_err(|source| LedgerError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn u64_from(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

/// The generation in the mark file; `None` when there is none yet. A mark of another length is
/// a write torn by a crash and is ignored (the check is then skipped, not failed).
fn read_mark(ledger_path: &Path) -> Result<Option<u64>> {
    let mark_path = ledger_path.join(MARK_FILE);
    match std::fs::read(&mark_path) {
        Ok(bytes) => Ok(u64_from(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LedgerError::Io {
            path: mark_path,
            source,
        }),
    }
}

/// Take sled's lock on `ledger/db` ourselves (same `fs2` lock sled uses) without letting sled
/// touch the files: busy means another agent has the ledger open.
fn probe_lock(ledger_path: &Path) -> Result<std::fs::File> {
    use fs2::FileExt;
    let db = ledger_path.join("db");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&db)
        .map_err(|source| LedgerError::Io {
            path: db.clone(),
            source,
        })?;
    match file.try_lock_exclusive() {
        Ok(()) => Ok(file),
        Err(e)
            if e.kind() == fs2::lock_contended_error().kind()
                || e.kind() == std::io::ErrorKind::WouldBlock =>
        {
            Err(LedgerError::InUse {
                path: ledger_path.to_path_buf(),
            })
        }
        Err(source) => Err(LedgerError::Io { path: db, source }),
    }
}

/// Names, sizes, modification and change times and file ids of every file of the ledger (but the
/// clean-close record): any write since a clean close changes them (a change time cannot be set
/// back by tools such as `touch`), and reading them costs a few `stat`s where hashing the files
/// read hundreds of MB at every start. Damage that leaves all of them unchanged (bit rot under an
/// untouched file) is left to sled's per-record checksums.
fn fingerprint(ledger_path: &Path) -> Option<String> {
    let mut rows = Vec::new();
    let mut dirs = vec![ledger_path.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for item in std::fs::read_dir(&d).ok()? {
            let item = item.ok()?;
            let meta = item.metadata().ok()?;
            let p = item.path();
            if meta.is_dir() {
                dirs.push(p);
            } else if item.file_name() != CLEAN_FILE {
                let rel = p.strip_prefix(ledger_path).ok()?.display().to_string();
                rows.push(format!("{rel}\t{}", stamp(&meta)?));
            }
        }
    }
    rows.sort();
    Some(rows.join("\n"))
}

#[cfg(unix)]
fn stamp(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    Some(format!(
        "{}\t{}.{:09}\t{}.{:09}\t{}:{}",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
        meta.dev(),
        meta.ino()
    ))
}

#[cfg(not(unix))]
fn stamp(meta: &std::fs::Metadata) -> Option<String> {
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!("{}\t{}", meta.len(), modified.as_nanos()))
}

/// Copy the ledger's files into a scratch dir in `state_dir`, open the copy and check it whole.
/// Errors name the real path; the scratch dir is removed either way.
fn check_copy(state_dir: &Path, ledger_path: &Path) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix(".ledger-check-")
        .tempdir_in(state_dir)
        .map_err(|source| LedgerError::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
    let copy = scratch.path().join("ledger");
    copy_dir(ledger_path, &copy)?;
    let rename = |e: LedgerError| match e {
        LedgerError::Corrupt { detail, .. } => LedgerError::Corrupt {
            path: ledger_path.to_path_buf(),
            detail,
        },
        LedgerError::TooNew {
            found, supported, ..
        } => LedgerError::TooNew {
            path: ledger_path.to_path_buf(),
            found,
            supported,
        },
        LedgerError::InUse { .. } => LedgerError::InUse {
            path: ledger_path.to_path_buf(),
        },
        other => other,
    };
    let ledger = Ledger::open_db(state_dir, &copy).map_err(rename)?;
    ledger.check(true).map_err(rename)?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LedgerError::Io { path, source }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for item in std::fs::read_dir(from).map_err(io(from))? {
        let item = item.map_err(io(from))?;
        let src = item.path();
        let dst = to.join(item.file_name());
        if item.file_type().map_err(io(&src))?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(io(&src))?;
        }
    }
    Ok(())
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}
