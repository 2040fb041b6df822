//! `outbox run`: the event loop that carries out the core's decisions. It owns the settle state,
//! the queue and the upload tasks; watcher events, timers, finished tasks and socket requests
//! all enter through one `select!`.
//!
//! Invariants (see ARCHITECTURE.md):
//! - a file version gets a ledger entry, flushed, before any request about it is sent;
//! - every remote effect is preceded by a flushed intent (the journal), so a restart knows what
//!   may have happened and reconciles with the server before sending again;
//! - an entry is `done` only with an attachment id, and a file is moved or deleted only after
//!   its `done` record is flushed;
//! - an upload URL lives only in the owner-only session store.

pub mod control;
mod desktop;
mod journal;
pub mod ops;

use crate::auth::Credentials;
use crate::config::{After, IfExists, ItemKind, Mapping, Settings};
use crate::core::{self, Plan, Settled, Settler};
use crate::graph::{AttachError, ErrorClass, FileToSend, GraphClient, GraphError, ItemRef, Resume};
use crate::ledger::{
    EntryError, EntryState, Ledger, LedgerEntry, LedgerError, NewEntry, SessionStore, Target,
    TargetKind,
};
use crate::watch::{self, FolderWatcher, WatchEvent};
use control::{Answer, Envelope, Request, Response};
use journal::LedgerJournal;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

/// Automatic retries of an entry after transient failures, before it is marked failed.
const MAX_ATTEMPTS: u32 = 5;
/// After a sign-in problem, uploads pause this long before trying again.
const SIGN_IN_PAUSE: Duration = Duration::from_secs(30);
/// Files hashed at once. The rest of a backlog waits as a queue of paths: a task per file (each
/// with a blocking thread and a read buffer once it runs) made 100,000 files dropped at once
/// cost hundreds of MiB.
const HASH_WORKERS: usize = 4;
/// Settled files checked per timer pass; more are taken on the next pass, at once, after any
/// socket request or finished task that is ready.
const DUE_BATCH: usize = 1024;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub once: bool,
    /// Stop as on SIGTERM when this is cancelled (the demo, tests).
    pub stop: Option<tokio_util::sync::CancellationToken>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Everything attached (or, for `run`, stopped by a signal).
    Clean,
    /// `--once`: some file failed or was rejected.
    SomeFailed,
    /// `--once`: sign-in is needed.
    SignInNeeded,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{0}")]
    Setup(String),
}

/// A finished file to hash: the version the settle rule saw.
struct ToHash {
    mapping: usize,
    path: PathBuf,
    size: u64,
    mtime_ns: Option<i64>,
}

enum TaskDone {
    Hashed {
        file: ToHash,
        result: std::io::Result<String>,
    },
    Uploaded {
        id: String,
        result: Result<String, AttachError>,
    },
}

/// The newest version of one path, as the start-up read of the ledger saw it.
#[derive(Clone)]
struct Brief {
    seq: u64,
    size: u64,
    mtime_ns: i64,
    state: EntryState,
    id: String,
}

/// mapping name -> path -> newest version. Paths are keyed by their bytes: hashing a `PathBuf`
/// walks its components, which a start-up over 100,000 files pays twice per file.
type Known = HashMap<String, HashMap<std::ffi::OsString, Brief>>;

struct InFlight {
    path: PathBuf,
    abort: AbortHandle,
}

struct Agent {
    settings: Settings,
    opts: RunOptions,
    ledger: Arc<Ledger>,
    sessions: Arc<SessionStore>,
    client: Arc<GraphClient>,
    settler: Settler,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    in_flight: HashMap<String, InFlight>,
    /// Paths waiting for their hash (`hash_wait`) or being hashed (the rest).
    hashing: HashSet<PathBuf>,
    hash_wait: VecDeque<ToHash>,
    tasks: JoinSet<TaskDone>,
    retry_at: Vec<(Instant, String)>,
    paused_until: Option<Instant>,
    sign_in_needed: bool,
    failed_this_run: usize,
    mapping_ok: Vec<bool>,
    max_parallel: usize,
    test_hooks: bool,
    /// Test hook: watcher events are being lost (see `Request::LoseEvents`).
    losing_events: bool,
    /// `None` with `--once`.
    watcher: Option<FolderWatcher>,
    notifier: desktop::Notifier,
}

/// Run the agent until a signal (or, with `once`, until nothing is left to do).
pub async fn run(
    settings: Settings,
    creds: Credentials,
    opts: RunOptions,
) -> Result<RunOutcome, AgentError> {
    let state_dir = settings.agent.state_dir.clone();
    // Before anything slow: a stop asked for during start-up is then kept, not fatal.
    let signals = crate::cli::shutdown_signal();
    let t_start = std::time::Instant::now();
    let ledger = Arc::new(open_ledger(&state_dir).await?);
    let t_ledger = t_start.elapsed();
    let sessions = Arc::new(SessionStore::open(&state_dir)?);
    let client = Arc::new(GraphClient::new(&settings, creds).map_err(AgentError::Setup)?);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Envelope>(16);
    if let Err(e) = control::serve(&state_dir, ctl_tx) {
        tracing::warn!(error = %e, "cannot open the control socket; status/retry/cancel will not reach this agent");
    }
    let (watch_tx, mut watch_rx) = mpsc::unbounded_channel();
    let mut mapping_ok = vec![true; settings.mappings.len()];
    for (i, m) in settings.mappings.iter().enumerate() {
        if let Err(e) = std::fs::read_dir(&m.folder) {
            tracing::error!(mapping = %m.name, folder = %m.folder.display(), error = %e, "mapped folder is missing or unreadable; other mappings keep working");
            mapping_ok[i] = false;
        }
    }
    let mut watcher = if opts.once {
        None
    } else {
        match FolderWatcher::start(&settings.mappings, watch_tx.clone()) {
            Ok((w, problems)) => {
                for (i, why) in problems {
                    tracing::error!(mapping = %settings.mappings[i].name, "{why}");
                }
                Some(w)
            }
            Err(e) => return Err(AgentError::Setup(e)),
        }
    };
    // `concurrency` uploads per mailbox; the pacer keeps each mailbox's requests within it.
    let mailboxes: HashSet<String> = settings
        .mappings
        .iter()
        .map(|m| m.user.to_ascii_lowercase())
        .collect();
    let max_parallel = settings.agent.concurrency.max(1) * mailboxes.len().max(1);
    let settler = Settler::new(settings.agent.settle, settings.agent.max_settle);
    let once = opts.once;
    let notify_level = settings.agent.notify;
    let mut agent = Agent {
        settings,
        opts: opts.clone(),
        ledger,
        sessions,
        client,
        settler,
        queue: VecDeque::new(),
        queued: HashSet::new(),
        in_flight: HashMap::new(),
        hashing: HashSet::new(),
        hash_wait: VecDeque::new(),
        tasks: JoinSet::new(),
        retry_at: Vec::new(),
        paused_until: None,
        sign_in_needed: false,
        failed_this_run: 0,
        mapping_ok,
        max_parallel,
        test_hooks: std::env::var("OUTBOX_TEST_HOOKS").is_ok_and(|v| v == "1"),
        losing_events: false,
        watcher: watcher.take(),
        notifier: desktop::Notifier::new(notify_level),
    };
    let t_watch = t_start.elapsed();
    let (known, open) = agent.read_ledger()?;
    let t_read = t_start.elapsed();
    agent.resume(open)?;
    agent.rescan_with(None, Some(&known))?;
    drop(known);
    tracing::debug!(
        ledger_open_ms = t_ledger.as_millis() as u64,
        watchers_ms = (t_watch - t_ledger).as_millis() as u64,
        ledger_read_ms = (t_read - t_watch).as_millis() as u64,
        scan_ms = (t_start.elapsed() - t_read).as_millis() as u64,
        "start-up phases"
    );
    tracing::info!(
        mappings = agent.settings.mappings.len(),
        once = opts.once,
        "watching"
    );
    agent.prune();
    let rescan_every = agent.settings.agent.rescan;
    let mut next_rescan = Instant::now() + rescan_every;
    let stop = opts.stop.clone().unwrap_or_default();
    let shutdown = async move {
        tokio::select! {
            _ = signals => {},
            _ = stop.cancelled() => {},
        }
    };
    tokio::pin!(shutdown);
    loop {
        agent.start_hashing();
        agent.start_uploads();
        if once && agent.idle() {
            break;
        }
        let deadline = agent
            .next_deadline()
            .unwrap_or(next_rescan)
            .min(next_rescan);
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("signal received: checkpointing and stopping");
                break;
            }
            Some(ev) = watch_rx.recv() => {
                agent.on_watch(ev)?;
                // Drain what is already queued before looking at timers again.
                while let Ok(ev) = watch_rx.try_recv() {
                    agent.on_watch(ev)?;
                }
            }
            Some(done) = agent.tasks.join_next(), if !agent.tasks.is_empty() => {
                match done {
                    Ok(TaskDone::Hashed { file, result }) => agent.on_hashed(file, result)?,
                    Ok(TaskDone::Uploaded { id, result }) => agent.on_uploaded(id, result).await?,
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => tracing::error!(error = %e, "a worker task failed"),
                }
            }
            Some((req, reply)) = ctl_rx.recv() => {
                let answer = agent.on_request(req).await;
                let _ = reply.send(answer);
            }
            _ = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                if now >= next_rescan {
                    next_rescan = now + rescan_every;
                    agent.rescan(None)?;
                    agent.prune();
                }
                agent.on_timer(now)?;
            }
        }
    }
    agent.watcher = None;
    agent.tasks.shutdown().await;
    agent.ledger.flush()?;
    let sign_in_needed = agent.sign_in_needed;
    let failed_this_run = agent.failed_this_run;
    let socket = control::socket_path(&agent.settings.agent.state_dir);
    let ledger = agent.ledger.clone();
    drop(agent);
    // The last handle: a clean close lets the next start skip the ledger check.
    if let Ok(l) = Arc::try_unwrap(ledger) {
        l.close()?;
    }
    let _ = std::fs::remove_file(socket);
    Ok(if sign_in_needed && once {
        RunOutcome::SignInNeeded
    } else if failed_this_run > 0 && once {
        RunOutcome::SomeFailed
    } else {
        RunOutcome::Clean
    })
}

/// Open the ledger; while it is locked, wait a little: `status`, `retry` or `cancel` run with no
/// agent up hold it for a moment. A second agent holds it for good, and gets `InUse` (exit 2).
async fn open_ledger(state_dir: &Path) -> Result<Ledger, LedgerError> {
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

impl Agent {
    fn idle(&self) -> bool {
        self.settler.is_empty()
            && self.hashing.is_empty()
            && self.in_flight.is_empty()
            && self.tasks.is_empty()
            && (self.queue.is_empty() || self.sign_in_needed)
            && (self.retry_at.is_empty() || self.sign_in_needed)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d = self.settler.next_deadline();
        for (t, _) in &self.retry_at {
            d = Some(d.map_or(*t, |x| x.min(*t)));
        }
        if let (Some(p), false) = (self.paused_until, self.queue.is_empty()) {
            d = Some(d.map_or(p, |x| x.min(p)));
        }
        d
    }

    fn mapping_index(&self, name: &str) -> Option<usize> {
        self.settings.mappings.iter().position(|m| m.name == name)
    }

    /// One pass over the ledger at start: the newest version of every path (for the first
    /// scan), and the entries an earlier run left pending or uploading.
    fn read_ledger(&self) -> Result<(Known, Vec<LedgerEntry>), AgentError> {
        let mut known: Known = HashMap::new();
        let mut open = Vec::new();
        for b in self.ledger.iter_briefs() {
            let b = b?;
            if matches!(b.state, EntryState::Uploading | EntryState::Pending) {
                if let Some(full) = self.ledger.get(&b.id)? {
                    open.push(full);
                }
            }
            let brief = Brief {
                seq: b.seq,
                size: b.size,
                mtime_ns: b.mtime_ns,
                state: b.state,
                id: b.id,
            };
            match known
                .entry(b.mapping)
                .or_default()
                .entry(b.path.into_os_string())
            {
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    if o.get().seq < brief.seq {
                        o.insert(brief);
                    }
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(brief);
                }
            }
        }
        open.sort_by_key(|e| (e.state != EntryState::Uploading, e.seq));
        Ok((known, open))
    }

    /// Entries left pending or uploading by an earlier run go back in the queue when their
    /// file is unchanged; a changed file is seen by the scan as a new version.
    fn resume(&mut self, open: Vec<LedgerEntry>) -> Result<(), AgentError> {
        for e in open {
            let Some(mi) = self.mapping_index(&e.mapping) else {
                continue;
            };
            if !self.mapping_ok[mi] {
                continue;
            }
            match std::fs::metadata(&e.path) {
                Ok(meta) if e.matches_metadata(&meta) => self.enqueue(e.id.clone()),
                Ok(_) => {} // changed while we were away: the scan queues the new version
                Err(_) => self.cancel_entry(
                    &e.id,
                    "vanished",
                    "the file is gone from the folder; the upload was canceled",
                )?,
            }
        }
        Ok(())
    }

    /// Compare a folder (or all) with the ledger: files not yet handled start settling. `known`
    /// is a one-pass read of the ledger (start-up); without it each path is looked up.
    fn rescan_with(
        &mut self,
        only: Option<usize>,
        known: Option<&Known>,
    ) -> Result<(), AgentError> {
        let now = Instant::now();
        for i in 0..self.settings.mappings.len() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let m = &self.settings.mappings[i];
            let found = match watch::scan(m) {
                Ok(f) => {
                    if !self.mapping_ok[i] {
                        tracing::info!(mapping = %m.name, "mapped folder is back");
                        self.mapping_ok[i] = true;
                    }
                    f
                }
                Err(e) => {
                    if self.mapping_ok[i] {
                        tracing::error!(mapping = %m.name, folder = %m.folder.display(), error = %e, "mapped folder is missing or unreadable");
                    }
                    self.mapping_ok[i] = false;
                    continue;
                }
            };
            let name = m.name.clone();
            for f in found {
                if self.settler.is_settling(&f.path) || self.hashing.contains(&f.path) {
                    continue;
                }
                let current = match known {
                    Some(k) => k
                        .get(&name)
                        .and_then(|m| m.get(f.path.as_os_str()))
                        .cloned(),
                    None => self
                        .ledger
                        .current_for_path(&name, &f.path)?
                        .map(|e| Brief {
                            seq: e.seq,
                            size: e.size,
                            mtime_ns: e.mtime_ns,
                            state: e.state,
                            id: e.id,
                        }),
                };
                if let Some(e) = &current {
                    let same = e.size == f.size && Some(e.mtime_ns) == f.mtime_ns;
                    if same && e.state == EntryState::Done {
                        // Done but still here: a crash may have come between `done` and the
                        // after-action.
                        if self.settings.mappings[i].after != After::Keep {
                            if let Some(full) = self.ledger.get(&e.id)? {
                                self.after_done(i, &full);
                            }
                        }
                        continue;
                    }
                    if same
                        && (e.state.is_terminal()
                            || self.queued.contains(&e.id)
                            || self.in_flight.contains_key(&e.id))
                    {
                        continue;
                    }
                }
                self.settler.observe(i, &f.path, f.size, f.mtime_ns, now);
            }
        }
        Ok(())
    }

    fn rescan(&mut self, only: Option<usize>) -> Result<(), AgentError> {
        self.rescan_with(only, None)
    }

    /// Drop old done entries of files gone from their folders. It reads every entry (a quarter
    /// second for 100,000), so start-up runs it once watching has begun: events queue meanwhile.
    /// It runs on this task, not a blocking thread: a second thread decoding beside the agent
    /// cost ~19 MB of idle RSS (its allocator arena) for 100,000 entries.
    fn prune(&self) {
        let keep = self.settings.agent.keep_done;
        match self
            .ledger
            .prune(keep, time::OffsetDateTime::now_utc(), |p| p.exists())
        {
            Ok(n) if n > 0 => tracing::info!(
                removed = n,
                "pruned done entries of files gone from their folders"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot prune the ledger"),
        }
    }

    fn on_watch(&mut self, ev: WatchEvent) -> Result<(), AgentError> {
        if self.losing_events {
            return Ok(());
        }
        match ev {
            WatchEvent::Rescan { mapping } => {
                tracing::warn!("events may have been lost: rescanning");
                self.rescan(mapping)?;
            }
            WatchEvent::Touched { mapping, path }
                if path == self.settings.mappings[mapping].folder =>
            {
                self.folder_back(mapping)?;
            }
            WatchEvent::Removed { mapping, path }
                if path == self.settings.mappings[mapping].folder =>
            {
                if !path.exists() {
                    let m = &self.settings.mappings[mapping];
                    tracing::error!(mapping = %m.name, folder = %m.folder.display(), "mapped folder was removed; other mappings keep working, and it is watched again when it comes back");
                    self.mapping_ok[mapping] = false;
                    if let Some(w) = self.watcher.as_mut() {
                        w.await_return(&path);
                    }
                }
            }
            WatchEvent::Touched { mapping, path } | WatchEvent::Closed { mapping, path }
                if !watch::accepts(&self.settings.mappings[mapping], &path) =>
            {
                // A directory that appeared in a recursive mapping: scan it.
                if self.settings.mappings[mapping].recursive && path.is_dir() {
                    self.rescan(Some(mapping))?;
                }
            }
            WatchEvent::Touched { mapping, path } => self.touch(mapping, &path),
            WatchEvent::Closed { mapping, path } => {
                self.touch(mapping, &path);
                self.settler.closed(&path);
            }
            WatchEvent::Removed { mapping, path } => {
                if !path.exists() {
                    self.settler.forget(&path);
                    self.on_file_gone(mapping, &path)?;
                }
            }
        }
        Ok(())
    }

    /// A missing mapped folder is back: watch it again and scan it.
    fn folder_back(&mut self, mapping: usize) -> Result<(), AgentError> {
        let m = &self.settings.mappings[mapping];
        if !m.folder.is_dir() {
            return Ok(());
        }
        if let Some(w) = self.watcher.as_mut() {
            if let Err(e) = w.rewatch(&m.folder, m.recursive) {
                tracing::error!(mapping = %m.name, "{e}");
                return Ok(());
            }
        }
        self.rescan(Some(mapping))
    }

    fn touch(&mut self, mapping: usize, path: &Path) {
        let m = &self.settings.mappings[mapping];
        let root = m.folder.clone();
        match watch::file_meta(m, &root, path) {
            Some(meta) if meta.is_file() => {
                self.settler.observe(
                    mapping,
                    path,
                    meta.len(),
                    crate::ledger::mtime_ns(&meta),
                    Instant::now(),
                );
            }
            Some(meta) if meta.is_dir() && m.recursive => {
                let _ = self.rescan(Some(mapping));
            }
            _ => {}
        }
    }

    /// A file vanished: cancel its queued or running upload.
    fn on_file_gone(&mut self, mapping: usize, path: &Path) -> Result<(), AgentError> {
        let name = self.settings.mappings[mapping].name.clone();
        if let Some(e) = self.ledger.current_for_path(&name, path)? {
            if matches!(e.state, EntryState::Pending | EntryState::Uploading) {
                self.cancel_entry(&e.id, "vanished", "the file was deleted or moved away before it was attached; the upload was canceled")?;
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, now: Instant) -> Result<(), AgentError> {
        for path in self.settler.due(now, DUE_BATCH) {
            let mapping = match self.settler_mapping(&path) {
                Some(m) => m,
                None => continue,
            };
            let m = &self.settings.mappings[mapping];
            let root = m.folder.clone();
            let Some(meta) = watch::file_meta(m, &root, &path).filter(|m| m.is_file()) else {
                self.settler.forget(&path);
                continue;
            };
            match self
                .settler
                .confirm(&path, meta.len(), crate::ledger::mtime_ns(&meta), now)
            {
                Some(Settled::Ready {
                    mapping,
                    path,
                    size,
                    mtime_ns,
                }) => self.on_ready(mapping, path, size, mtime_ns)?,
                Some(Settled::StillChanging { path, .. }) => {
                    tracing::warn!(file = %path.display(), "still changing after max_settle; waiting for it to finish");
                }
                None => {}
            }
        }
        let due: Vec<String> = self
            .retry_at
            .iter()
            .filter(|(t, _)| *t <= now)
            .map(|(_, id)| id.clone())
            .collect();
        self.retry_at.retain(|(t, _)| *t > now);
        for id in due {
            self.enqueue(id);
        }
        if self.paused_until.is_some_and(|p| p <= now) {
            self.paused_until = None;
        }
        Ok(())
    }

    fn settler_mapping(&self, path: &Path) -> Option<usize> {
        self.settings
            .mappings
            .iter()
            .position(|m| path.starts_with(&m.folder))
    }

    /// A finished file: decide from the ledger whether it needs hashing and sending.
    fn on_ready(
        &mut self,
        mapping: usize,
        path: PathBuf,
        size: u64,
        mtime_ns: Option<i64>,
    ) -> Result<(), AgentError> {
        let name = self.settings.mappings[mapping].name.clone();
        let current = self.ledger.current_for_path(&name, &path)?;
        if !core::needs_hash(current.as_ref(), size, mtime_ns) {
            return self.apply_plan(mapping, &path, size, mtime_ns, None, current);
        }
        if self.hashing.insert(path.clone()) {
            self.hash_wait.push_back(ToHash {
                mapping,
                path,
                size,
                mtime_ns,
            });
        }
        Ok(())
    }

    /// Start hashing waiting files, up to [`HASH_WORKERS`] at once.
    fn start_hashing(&mut self) {
        while self.hashing.len() - self.hash_wait.len() < HASH_WORKERS {
            let Some(file) = self.hash_wait.pop_front() else {
                break;
            };
            let m = &self.settings.mappings[file.mapping];
            let (root, follow) = (m.folder.clone(), m.follow_symlinks);
            // Opened beneath the folder, no link, the version that settled, read to its size.
            let expected = crate::files::Expected::settled(file.size, file.mtime_ns);
            self.tasks.spawn(async move {
                let result =
                    crate::files::sha256_settled(root, file.path.clone(), follow, expected)
                        .await
                        .map(|(sha, _identity)| sha);
                TaskDone::Hashed { file, result }
            });
        }
    }

    fn on_hashed(
        &mut self,
        file: ToHash,
        result: std::io::Result<String>,
    ) -> Result<(), AgentError> {
        let ToHash {
            mapping,
            path,
            size,
            mtime_ns,
        } = file;
        self.hashing.remove(&path);
        let m = &self.settings.mappings[mapping];
        let root = m.folder.clone();
        let meta = watch::file_meta(m, &root, &path);
        // Changed while being hashed: settle again.
        if let Some(meta) = &meta {
            if meta.len() != size || crate::ledger::mtime_ns(meta) != mtime_ns {
                self.settler.observe(
                    mapping,
                    &path,
                    meta.len(),
                    crate::ledger::mtime_ns(meta),
                    Instant::now(),
                );
                return Ok(());
            }
        }
        let name = m.name.clone();
        let current = self.ledger.current_for_path(&name, &path)?;
        match result {
            Ok(sha) => self.apply_plan(mapping, &path, size, mtime_ns, Some(sha), current),
            Err(e) if meta.is_none() => {
                tracing::debug!(file = %path.display(), error = %e, "file vanished before it was read");
                Ok(())
            }
            Err(e) => {
                // Unreadable: record the version as failed with the OS error; a change retries it.
                let mut entry = self.new_entry(mapping, &path, size, mtime_ns);
                entry.state = EntryState::Failed;
                entry.error = Some(EntryError::new(
                    "io",
                    format!("cannot read {}: {e}", path.display()),
                ));
                self.ledger.insert_new(entry)?;
                self.ledger.flush()?;
                self.failed_this_run += 1;
                tracing::error!(file = %path.display(), error = %e, "cannot read the file; it will be retried when it changes");
                Ok(())
            }
        }
    }

    fn new_entry(
        &self,
        mapping: usize,
        path: &Path,
        size: u64,
        mtime_ns: Option<i64>,
    ) -> LedgerEntry {
        entry_for(&self.settings.mappings[mapping], path, size, mtime_ns)
    }

    fn apply_plan(
        &mut self,
        mapping: usize,
        path: &Path,
        size: u64,
        mtime_ns: Option<i64>,
        sha: Option<String>,
        current: Option<LedgerEntry>,
    ) -> Result<(), AgentError> {
        match core::plan(current.as_ref(), size, sha.as_deref()) {
            Plan::Nothing => {
                if let Some(e) = current {
                    if e.state == EntryState::Done {
                        // A crash between `done` and the after-action leaves the file here.
                        self.after_done(mapping, &e);
                    } else if e.mtime_ns != mtime_ns.unwrap_or(0) {
                        // Touched but same bytes: remember the new time so it is not hashed again.
                        let t = mtime_ns.unwrap_or(0);
                        self.ledger.update(&e.id, |x| x.mtime_ns = t)?;
                    }
                }
            }
            Plan::Queue(id) => {
                if let Some(t) = mtime_ns {
                    self.ledger.update(&id, |x| x.mtime_ns = t)?;
                }
                self.enqueue(id)
            }
            Plan::NewVersion { supersedes } => {
                if let Some(old) = supersedes {
                    self.cancel_entry(&old, "superseded", "the file changed before its upload finished; the new version is sent instead")?;
                }
                let mut entry = self.new_entry(mapping, path, size, mtime_ns);
                entry.sha256 = sha;
                if size > crate::graph::MAX_ATTACHMENT {
                    entry.state = EntryState::Rejected;
                    entry.error = Some(EntryError::new(
                        "fileTooLarge",
                        format!("{size} bytes is over Graph's 150 MiB attachment limit ({} bytes); it was not sent", crate::graph::MAX_ATTACHMENT),
                    ));
                    self.failed_this_run += 1;
                    tracing::error!(file = %path.display(), size, "over 150 MiB: rejected, not sent");
                }
                let stored = self.ledger.insert_new(entry)?;
                if stored.state != EntryState::Pending {
                    // Nothing follows that would flush it.
                    self.ledger.flush()?;
                }
                // A pending entry becomes durable with the journal's first flush, before any
                // request with an effect; lost before that, the file is simply found again.
                crate::failpoint!("after-entry-recorded");
                if stored.state == EntryState::Pending {
                    self.enqueue(stored.id);
                }
            }
        }
        Ok(())
    }

    fn enqueue(&mut self, id: String) {
        if !self.in_flight.contains_key(&id) && self.queued.insert(id.clone()) {
            self.queue.push_back(id);
        }
    }

    fn start_uploads(&mut self) {
        if self.paused_until.is_some() {
            return;
        }
        while self.in_flight.len() < self.max_parallel {
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            self.queued.remove(&id);
            if let Err(e) = self.start_upload(&id) {
                tracing::error!(entry = %id, error = %e, "cannot start the upload");
            }
        }
    }

    fn start_upload(&mut self, id: &str) -> Result<(), AgentError> {
        let Some(entry) = self.ledger.get(id)? else {
            return Ok(());
        };
        if !matches!(entry.state, EntryState::Pending | EntryState::Uploading) {
            return Ok(());
        }
        let Some(mi) = self.mapping_index(&entry.mapping) else {
            tracing::warn!(entry = %id, mapping = %entry.mapping, "its mapping is no longer in the config; left pending");
            return Ok(());
        };
        let m = &self.settings.mappings[mi];
        let Some(sha) = entry.sha256.clone() else {
            // Never read (e.g. it was unreadable, then retried): settle and hash it again.
            if let Ok(meta) = std::fs::metadata(&entry.path) {
                self.settler.observe(
                    mi,
                    &entry.path,
                    meta.len(),
                    crate::ledger::mtime_ns(&meta),
                    Instant::now(),
                );
            }
            return Ok(());
        };
        let resume = if entry.session.is_some() {
            match self.sessions.load(id) {
                Ok(Some(upload_url)) => Resume::Session { upload_url },
                _ => Resume::CheckFirst,
            }
        } else if entry.post_in_flight || entry.state == EntryState::Uploading {
            // Something may have reached the server before a crash: a fresh look first.
            Resume::CheckFirst
        } else if m.if_exists == IfExists::Skip {
            Resume::SkipIfPresent
        } else {
            Resume::Fresh
        };
        let file = FileToSend {
            path: entry.path.clone(),
            size: entry.size,
            mtime: (entry.mtime_ns != 0).then(|| {
                std::time::UNIX_EPOCH + Duration::from_nanos(entry.mtime_ns.max(0) as u64)
            }),
            sha256: crate::graph::upload::FileDigest::known(sha),
            name: entry.name.clone(),
            content_type: mime_guess::from_path(&entry.name)
                .first_or_octet_stream()
                .essence_str()
                .to_string(),
        };
        let item = item_of(&entry);
        self.ledger
            .set_state(id, EntryState::Uploading, |e| e.attempts += 1)?;
        // Not flushed here: the journal flushes before the first request with an effect.
        let journal = LedgerJournal {
            ledger: self.ledger.clone(),
            sessions: self.sessions.clone(),
            id: id.to_string(),
        };
        let client = self.client.clone();
        let task_id = id.to_string();
        let abort = self.tasks.spawn(async move {
            let result = client.attach(&item, &file, resume, &journal).await;
            TaskDone::Uploaded {
                id: task_id,
                result,
            }
        });
        self.in_flight.insert(
            id.to_string(),
            InFlight {
                path: entry.path,
                abort,
            },
        );
        Ok(())
    }

    async fn on_uploaded(
        &mut self,
        id: String,
        result: Result<String, AttachError>,
    ) -> Result<(), AgentError> {
        let Some(flight) = self.in_flight.remove(&id) else {
            return Ok(());
        };
        let Some(entry) = self.ledger.get(&id)? else {
            return Ok(());
        };
        let mapping = self.mapping_index(&entry.mapping);
        match result {
            Ok(attachment_id) => {
                crate::failpoint!("before-done-recorded");
                let done = self.ledger.set_state(&id, EntryState::Done, |e| {
                    e.attachment_id = Some(attachment_id.clone());
                    e.bytes_sent = e.size;
                    e.error = None;
                    e.post_in_flight = false;
                    e.session = None;
                })?;
                self.ledger.flush()?;
                crate::failpoint!("after-done-recorded");
                tracing::info!(file = %crate::outside::path(&flight.path), attachment = %crate::outside::printable(&attachment_id), "attached");
                self.notifier.attached(&done.name);
                if let Some(mi) = mapping {
                    self.after_done(mi, &done);
                }
            }
            Err(AttachError::Rejected(msg)) => {
                self.finish_failed(
                    &id,
                    EntryState::Rejected,
                    EntryError::new("fileTooLarge", msg),
                )?;
            }
            Err(AttachError::Changed(_)) => {
                self.cancel_entry(
                    &id,
                    "changed",
                    "the file changed during upload; the new version is queued",
                )?;
                if let Some(mi) = mapping {
                    self.touch(mi, &flight.path);
                }
            }
            Err(AttachError::File { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                self.cancel_entry(
                    &id,
                    "vanished",
                    "the file was deleted or moved away during upload; the upload was canceled",
                )?;
            }
            Err(AttachError::File { path, source }) => {
                self.finish_failed(
                    &id,
                    EntryState::Failed,
                    EntryError::new("io", format!("cannot read {}: {source}", path.display())),
                )?;
            }
            Err(e @ AttachError::Auth(_))
            | Err(
                e @ AttachError::Graph(GraphError {
                    class: ErrorClass::SignIn,
                    ..
                }),
            ) => {
                // A sign-in problem is not the file's: keep it queued, pause, and say so once.
                if !self.sign_in_needed {
                    tracing::error!("{e} — uploads are paused and resume by themselves once sign-in works again (`outbox login` if asked); nothing queued is lost");
                }
                self.sign_in_needed = true;
                self.paused_until = Some(Instant::now() + SIGN_IN_PAUSE);
                self.ledger.set_state(&id, EntryState::Pending, |e| {
                    e.attempts = e.attempts.saturating_sub(1)
                })?;
                self.ledger.flush()?;
                self.enqueue(id);
            }
            Err(AttachError::Journal(msg)) => {
                tracing::error!(entry = %id, "cannot write the ledger ({msg}); uploads pause and retry in a minute");
                self.paused_until = Some(Instant::now() + Duration::from_secs(60));
                self.retry_at
                    .push((Instant::now() + Duration::from_secs(60), id));
            }
            Err(AttachError::Graph(g)) => {
                let retryable = g.is_retryable()
                    || g.class == ErrorClass::SessionDead
                    || g.code == "UploadSessionsExhausted";
                // Nothing answered at all (server unreachable, network down): not the file's
                // fault, so it does not use up the file's attempts; it waits out the outage.
                let unreachable = g.status.is_none() && g.code == "ConnectionFailed";
                if retryable && !self.opts.once && (unreachable || entry.attempts < MAX_ATTEMPTS) {
                    let wait = Duration::from_secs(30u64 << entry.attempts.min(5));
                    tracing::warn!(file = %flight.path.display(), error = %g, retry_in_s = wait.as_secs(), "upload failed; will retry");
                    self.ledger.set_state(&id, EntryState::Pending, |e| {
                        e.error = Some(EntryError::new(g.code.clone(), g.to_string()));
                        if unreachable {
                            e.attempts = e.attempts.saturating_sub(1);
                        }
                    })?;
                    self.ledger.flush()?;
                    self.retry_at.push((Instant::now() + wait, id));
                } else {
                    self.finish_failed(
                        &id,
                        EntryState::Failed,
                        EntryError::new(g.code.clone(), g.to_string()),
                    )?;
                }
            }
        }
        if self.sign_in_needed && self.paused_until.is_none() {
            self.sign_in_needed = false;
        }
        Ok(())
    }

    fn finish_failed(
        &mut self,
        id: &str,
        state: EntryState,
        err: EntryError,
    ) -> Result<(), AgentError> {
        let e = self.ledger.set_state(id, state, |e| {
            e.error = Some(err.clone());
            e.post_in_flight = false;
            e.session = None;
        })?;
        self.ledger.flush()?;
        // A session kept open across transient failures is of no use now (best effort).
        if let Ok(Some(url)) = self.sessions.load(id) {
            let client = self.client.clone();
            let user = e.target.user.clone();
            tokio::spawn(async move {
                if let Err(de) = client.delete_session(&user, &url).await {
                    tracing::debug!(error = %de, "could not delete the upload session; it expires on its own");
                }
            });
        }
        let _ = self.sessions.remove(id);
        self.failed_this_run += 1;
        tracing::error!(file = %crate::outside::path(&e.path), code = %crate::outside::printable(&err.code), "{}", crate::outside::printable(&err.message));
        self.notifier.failed(&e.name, &err.message);
        if let Some(mi) = self.mapping_index(&e.mapping) {
            move_to_failed_dir(&self.settings.mappings[mi], &e);
        }
        Ok(())
    }

    /// Stop an entry: abort its task, delete its session on the server, mark it canceled.
    fn cancel_entry(&mut self, id: &str, code: &str, message: &str) -> Result<(), AgentError> {
        if let Some(f) = self.in_flight.remove(id) {
            f.abort.abort();
        }
        self.queued.remove(id);
        self.queue.retain(|q| q != id);
        self.retry_at.retain(|(_, q)| q != id);
        let Some(entry) = self.ledger.get(id)? else {
            return Ok(());
        };
        if entry.state.is_terminal() {
            return Ok(());
        }
        if let Ok(Some(url)) = self.sessions.load(id) {
            let client = self.client.clone();
            let user = entry.target.user.clone();
            let sessions = self.sessions.clone();
            let sid = id.to_string();
            tokio::spawn(async move {
                match client.delete_session(&user, &url).await {
                    Ok(()) => {
                        let _ = sessions.remove(&sid);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not delete the upload session; it expires on its own")
                    }
                }
            });
        }
        self.ledger.set_state(id, EntryState::Canceled, |e| {
            e.error = Some(EntryError::new(code, message));
            e.session = None;
            e.post_in_flight = false;
        })?;
        self.ledger.flush()?;
        tracing::info!(file = %entry.path.display(), "{message}");
        Ok(())
    }

    fn after_done(&self, mapping: usize, entry: &LedgerEntry) {
        let m = &self.settings.mappings[mapping];
        if !entry.path.exists() {
            return;
        }
        // Only the file that was sent, reached beneath the folder without links.
        let expected = sent_version(entry);
        let result = match m.after {
            After::Keep => return,
            After::Delete => {
                crate::files::remove(&m.folder, &entry.path, m.follow_symlinks, &expected)
            }
            After::Move => crate::files::move_no_clobber(
                &m.folder,
                &entry.path,
                m.follow_symlinks,
                &expected,
                &m.sent_dir,
                None,
            )
            .map(|_| ()),
        };
        crate::failpoint!("after-after-action");
        if let Err(e) = result {
            tracing::warn!(file = %entry.path.display(), error = %e, "attached, but the after-action failed");
        }
    }

    async fn on_request(&mut self, req: Request) -> Answer {
        let result = match req {
            Request::Status => return self.status_answer(),
            Request::Retry { id } => ops::retry(&self.ledger, Some(&id))
                .map_err(|e| (e.exit_code() as i32, e.to_string()))
                .inspect(|es| {
                    for e in es {
                        self.enqueue(e.id.clone());
                    }
                }),
            Request::RetryFailed => ops::retry(&self.ledger, None)
                .map_err(|e| (e.exit_code() as i32, e.to_string()))
                .inspect(|es| {
                    for e in es {
                        self.enqueue(e.id.clone());
                    }
                }),
            Request::Cancel { id } => match self.ledger.get(&id) {
                Ok(Some(e)) if e.state.is_terminal() => Err((
                    2,
                    format!("entry {id} is already {}; nothing to cancel", e.state),
                )),
                Ok(Some(_)) => self
                    .cancel_entry(&id, "canceled", "canceled by `outbox cancel`")
                    .map_err(|e| (1, e.to_string()))
                    .and_then(|_| {
                        self.ledger
                            .get(&id)
                            .map(|e| e.into_iter().collect())
                            .map_err(|e| (1, e.to_string()))
                    }),
                Ok(None) => Err((
                    2,
                    format!("no ledger entry with id `{id}` (see `outbox status`)"),
                )),
                Err(e) => Err((1, e.to_string())),
            },
            Request::Overflow if self.test_hooks => {
                self.losing_events = false;
                self.on_watch(WatchEvent::Rescan { mapping: None })
                    .map(|_| Vec::new())
                    .map_err(|e| (1, e.to_string()))
            }
            Request::LoseEvents if self.test_hooks => {
                self.losing_events = true;
                Ok(Vec::new())
            }
            Request::Overflow | Request::LoseEvents => {
                Err((2, "test hooks are off (OUTBOX_TEST_HOOKS=1)".to_string()))
            }
        };
        Answer::Line(match result {
            Ok(entries) => Response::entries(entries),
            Err((code, msg)) => Response::error(code, msg),
        })
    }

    /// `status`: the files not in the ledger yet (still settling, or finished and waiting for
    /// their hash), as plain values; the socket's task turns them into rows as it writes them.
    fn status_answer(&self) -> Answer {
        let hashing = self
            .hash_wait
            .iter()
            .map(|f| (f.mapping, f.path.as_path(), f.size, false));
        let unledgered = self
            .settler
            .settling()
            .chain(hashing)
            .map(
                |(mapping, path, size, still_changing)| control::Unledgered {
                    mapping,
                    path: path.to_path_buf(),
                    size,
                    still_changing,
                },
            )
            .collect();
        Answer::Status {
            ledger: self.ledger.clone(),
            mappings: self.settings.mappings.clone(),
            unledgered,
        }
    }
}

/// A new `pending` entry for a version of `path` in mapping `m`.
fn entry_for(m: &Mapping, path: &Path, size: u64, mtime_ns: Option<i64>) -> LedgerEntry {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    LedgerEntry::new(
        NewEntry {
            mapping: m.name.clone(),
            path: path.to_path_buf(),
            name,
            target: Target {
                user: m.user.clone(),
                kind: match m.kind {
                    ItemKind::Message => TargetKind::Message,
                    ItemKind::Event => TargetKind::Event,
                },
                item_id: m.item_id.clone(),
            },
            size,
            mtime_ns: mtime_ns.unwrap_or(0),
        },
        EntryState::Pending,
        time::OffsetDateTime::now_utc(),
    )
}

/// The `settling` row `status` shows for a file not in the ledger yet.
fn settling_row(m: &Mapping, f: &control::Unledgered) -> LedgerEntry {
    let mut row = entry_for(m, &f.path, f.size, None);
    row.id = settling_id(&f.path);
    row.state = EntryState::Settling;
    if f.still_changing {
        row.error = Some(EntryError::new(
            "stillChanging",
            "still changing after max_settle; waiting for it to finish",
        ));
    }
    row
}

/// A stable id for a file not yet in the ledger (a `settling` row of `status`).
fn settling_id(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(path.as_os_str().as_encoded_bytes());
    hex::encode(&h[..6])
}

pub fn item_of(e: &LedgerEntry) -> ItemRef {
    ItemRef::new(
        e.target.user.clone(),
        match e.target.kind {
            TargetKind::Message => ItemKind::Message,
            TargetKind::Event => ItemKind::Event,
        },
        e.target.item_id.clone(),
    )
}

/// The version of an entry's file that was hashed and sent: what the after-action and the
/// failed-dir move insist on finding.
fn sent_version(e: &LedgerEntry) -> crate::files::Expected {
    crate::files::Expected::settled(e.size, (e.mtime_ns != 0).then_some(e.mtime_ns))
}

/// With `failed_dir`, a failed file moves there with `NAME.reason.txt` beside it.
fn move_to_failed_dir(m: &Mapping, e: &LedgerEntry) {
    let Some(dir) = &m.failed_dir else { return };
    if !e.path.exists() {
        return;
    }
    let err = e
        .error
        .clone()
        .unwrap_or_else(|| EntryError::new("unknown", "no reason recorded"));
    let text = format!(
        "outbox could not attach this file.\n\nfile:    {}\nitem:    {} {} (mailbox {})\nerror:   {}\nreason:  {}\n\nWhat to do: fix the cause above, then move the file back into {} to send it again,\nor run `outbox retry {}` after moving it back.\n",
        crate::outside::path(&e.path),
        match e.target.kind {
            TargetKind::Message => "message",
            TargetKind::Event => "event",
        },
        e.target.item_id,
        e.target.user,
        err.code,
        crate::outside::printable(&err.message),
        m.folder.display(),
        e.id
    );
    // Moved only if it is still the file that failed; the reason file is created beside it,
    // never over or through anything (see `files`).
    if let Err(me) = crate::files::move_no_clobber(
        &m.folder,
        &e.path,
        m.follow_symlinks,
        &sent_version(e),
        dir,
        Some(&text),
    ) {
        tracing::warn!(file = %crate::outside::path(&e.path), error = %me, "cannot move the failed file to failed_dir");
    }
}
