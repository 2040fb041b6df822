//! `outbox run`: the executor of the core's state machine (`core::Machine`). It decides nothing
//! about a file: watcher events, scans, timers, socket commands and each step's outcome enter
//! the machine as `Input`s; the `Action`s it answers are carried out in order.
//!
//! Invariants (see ARCHITECTURE.md):
//! - `Action::Persist` is written and flushed before any later action of the same batch starts;
//! - a remote step runs as a task and its outcome comes back as `Input::Outcome`;
//! - an upload URL lives only in the owner-only session store;
//! - a file is read through one descriptor per upload, checked against the recorded identity,
//!   and the bytes sent are the bytes hashed (`files.rs`).

mod after;
pub mod control;
mod desktop;
mod drive;
mod files;
mod intake;
pub mod mailnow;
pub mod oneshot;
pub mod ops;
mod outages;
mod pause;
mod startup;
pub mod steps;

use crate::auth::Credentials;
use crate::config::{Mapping, Settings};
use crate::core::exec::Write;
use crate::core::model::{Action, Input, Note, Record, State, Time};
use crate::core::prune;
use crate::core::Machine;
use crate::graph::{GraphClient, ItemRef};
use crate::ledger::{Ledger, LedgerEntry, LedgerError, SessionStore};
use crate::watch::FolderWatcher;
use control::{Answer, Envelope, Request, Response};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use steps::{Steps, UrlStore};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

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

/// The core's clock: wall time at start plus monotonic time since (never goes backwards).
#[derive(Clone)]
pub struct Clock {
    t0: Instant,
    logical: std::sync::Arc<std::sync::Mutex<crate::core::clock::Logical>>,
}

/// The agent's time (`core::clock::Logical`): the wall clock, never backward, never standing
/// still, and caught up after a suspend (wall time at start plus `Instant` since was a night
/// behind after a night asleep: `status` and a letter's `{date}` said yesterday).
impl Clock {
    pub fn start() -> Clock {
        let clock = Clock {
            t0: Instant::now(),
            logical: std::sync::Arc::new(std::sync::Mutex::new(crate::core::clock::Logical::new())),
        };
        clock.now();
        clock
    }

    pub fn now(&self) -> Time {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mono = self.t0.elapsed().as_millis() as u64;
        match self.logical.lock() {
            Ok(mut l) => l.read(wall, mono),
            Err(poisoned) => poisoned.into_inner().read(wall, mono),
        }
    }

    /// When time `t` comes, by the monotonic clock (from now: the time may have jumped).
    pub fn instant_of(&self, t: Time) -> Instant {
        Instant::now() + Duration::from_millis(t.since(self.now()))
    }
}

/// The core's view of the configuration. A `new_message` mapping carries its templates (the
/// body already read from `body_file` when the config was loaded); its files' item is each
/// message's draft, so only `target.user` counts.
pub fn rules_of(settings: &Settings) -> Vec<crate::core::model::MappingRule> {
    use crate::core::model::{IfExists, MailRule, MappingRule};
    settings
        .mappings
        .iter()
        .map(|m| MappingRule {
            name: m.name.clone(),
            target: target_of(m),
            if_exists: match m.if_exists {
                crate::config::IfExists::Skip => IfExists::Skip,
                crate::config::IfExists::Attach => IfExists::Attach,
            },
            on_change: m.on_change,
            after: match m.after {
                crate::config::After::Keep => crate::core::model::After::Keep,
                crate::config::After::Move => crate::core::model::After::Move,
                crate::config::After::Delete => crate::core::model::After::Delete,
            },
            mail: match &m.target {
                crate::config::Target::Item { .. } => None,
                crate::config::Target::NewMessage(t) => Some(MailRule {
                    to: t.to.clone(),
                    cc: t.cc.clone(),
                    bcc: t.bcc.clone(),
                    subject: t.subject.clone(),
                    body: t.body.clone(),
                    html: t.body_type == crate::config::BodyType::Html,
                    batch: t.group == crate::config::Group::Batch,
                    batch_quiet_ms: t.batch_quiet.as_millis() as u64,
                    batch_max_wait_ms: t.batch_max_wait.as_millis() as u64,
                    send: t.send,
                    max_message_size: t.max_message_size,
                    max_messages: t
                        .max_messages
                        .map_or(0, |b| b.amount.min(u32::MAX as u64) as u32),
                    max_messages_window_ms: t
                        .max_messages
                        .map_or(0, |b| b.window.as_millis() as u64),
                    folder: m.folder.clone(),
                    remember_sent_ms: settings.agent.remember_sent.as_millis() as u64,
                    // A failed message keeps its draft for `retry` (its files are on it).
                    delete_failed_draft: false,
                }),
            },
        })
        .collect()
}

pub fn policy_of(settings: &Settings) -> crate::core::model::Policy {
    let a = &settings.agent;
    let (sends_per_window, send_window_ms) = match a.mailbox_sends {
        Some(b) => (
            u32::try_from(b.amount).unwrap_or(u32::MAX),
            b.window.as_millis() as u64,
        ),
        None => (0, 0),
    };
    crate::core::model::Policy {
        settle_ms: a.settle.as_millis() as u64,
        settle_after_close_ms: a.settle_after_close.as_millis() as u64,
        max_settle_ms: a.max_settle.as_millis() as u64,
        concurrency: a.concurrency.max(1),
        chunk_size: a.chunk_size.clamp(1, crate::graph::MAX_REQUEST_BODY),
        look_after_ms: a.look_after.as_millis() as u64,
        sends_per_window,
        send_window_ms,
        utc_offset_ms: local_utc_offset_ms(),
        sign_in_pause_ms: sign_in_pause_ms(),
        failed_dirs: settings
            .mappings
            .iter()
            .filter(|m| m.failed_dir.is_some())
            .map(|m| m.name.clone())
            .collect(),
        ..crate::core::model::Policy::default()
    }
}

/// How long uploads pause after a sign-in problem before they try again: the core's default
/// (30 s), or (debug builds only, a test hook) `OUTBOX_SIGN_IN_PAUSE` seconds.
fn sign_in_pause_ms() -> u64 {
    #[cfg(debug_assertions)]
    if let Some(secs) = std::env::var("OUTBOX_SIGN_IN_PAUSE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return secs.saturating_mul(1000);
    }
    crate::core::model::Policy::default().sign_in_pause_ms
}

/// The local time's offset from UTC (for `{date}` in a message's subject and body), in ms; 0
/// when it cannot be told. Asked once per process: of `date +%z` on Unix (the `time` crate will
/// not read the local offset in a multi-threaded program), of `GetTimeZoneInformation` on
/// Windows; the core must not read clocks.
fn local_utc_offset_ms() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        #[cfg(unix)]
        {
            std::process::Command::new("date")
                .arg("+%z")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .and_then(|o| parse_utc_offset(String::from_utf8_lossy(&o.stdout).trim()))
                .unwrap_or(0)
        }
        #[cfg(windows)]
        {
            outbox_win::time_zone()
                .ok()
                .and_then(|z| zone_offset_ms(z.id, z.bias, z.standard_bias, z.daylight_bias))
                .unwrap_or(0)
        }
        #[cfg(not(any(unix, windows)))]
        {
            0
        }
    })
}

/// Windows' time zone as `GetTimeZoneInformation` answers it (which part of the year it is in:
/// 0 no daylight saving, 1 standard, 2 daylight; the biases in minutes, UTC = local + bias +
/// the part's bias) as the offset of local time from UTC, in ms.
#[cfg_attr(not(windows), allow(dead_code))]
fn zone_offset_ms(id: u32, bias: i32, standard_bias: i32, daylight_bias: i32) -> Option<i64> {
    let part = match id {
        0 => 0,
        1 => standard_bias,
        2 => daylight_bias,
        _ => return None,
    };
    let minutes = -(i64::from(bias) + i64::from(part));
    (minutes.abs() <= 14 * 60).then_some(minutes * 60_000)
}

/// `+HHMM` / `-HHMM` in ms.
#[cfg_attr(not(unix), allow(dead_code))]
fn parse_utc_offset(s: &str) -> Option<i64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    if rest.len() != 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i64 = rest[..2].parse().ok()?;
    let m: i64 = rest[2..].parse().ok()?;
    (h <= 14 && m < 60).then_some(sign * (h * 3_600_000 + m * 60_000))
}

pub fn target_of(m: &Mapping) -> crate::core::model::Target {
    crate::core::model::Target {
        user: m.user.clone(),
        kind: m.kind,
        item_id: m.item_id.clone(),
    }
}

struct Agent {
    settings: Settings,
    machine: Machine,
    clock: Clock,
    ledger: Arc<Ledger>,
    sessions: Arc<SessionStore>,
    steps: Steps<SessionStore>,
    tasks: JoinSet<Option<Input>>,
    inputs: VecDeque<Input>,
    wake: Option<Time>,
    /// Ledger writes not yet flushed.
    dirty: bool,
    /// A first `done` record was written and is not flushed yet (a crash point after it).
    done_unflushed: bool,
    /// Entries whose `done` was written in this run (for the crash-test failpoints).
    done_written: HashSet<String>,
    /// Rejected versions already said (see [`Agent::rejected_note`]).
    rejected_said: HashSet<String>,
    /// Entries whose record the ledger refused: never sent (see [`Agent::unrecordable`]).
    unrecorded: HashSet<String>,
    /// Per mapping: its folder is there and readable.
    available: Vec<bool>,
    watcher: Option<FolderWatcher>,
    /// Where the watcher sends its events (`None` in `run --once`, which has no watcher): a
    /// reload starts a watcher of the new mappings on it.
    watch_tx: Option<mpsc::UnboundedSender<crate::watch::WatchEvent>>,
    notifier: desktop::Notifier,
    test_hooks: bool,
    /// Cancelled to stop as on SIGTERM (`RunOptions::stop`, and the `stop` test hook).
    stopper: tokio_util::sync::CancellationToken,
    /// Test hook: watcher events are being lost (see `Request::LoseEvents`).
    losing_events: bool,
    sign_in_said: bool,
    /// (mapping, Graph's code) of item-level refusals (a wrong item id, a message not a draft)
    /// already said: every file of the mapping fails the same way, and it is said once.
    item_errors_said: HashSet<(String, String)>,
    /// Since when every step has found Graph (or the identity platform) unreachable, and why.
    unreachable_since: Option<(Instant, crate::core::model::Failure)>,
    /// Graph out of reach or throttling, said in the log once as it starts and once as it ends.
    outages: outages::Outages,
    /// Each entry's last step's fault, while its next step has not succeeded: what `status`
    /// says a waiting row waits for (the core keeps only when).
    last_fault: std::collections::HashMap<String, crate::core::model::Fault>,
    /// `outbox pause`: mappings that take no new file for now.
    pauses: pause::Pauses,
    /// Looks at paths, stats and scans of mapped folders, under way off the loop.
    looks: JoinSet<intake::Looked>,
    /// Paths with a look under way; `Some`: what events since ask of the next look.
    looking: std::collections::HashMap<std::path::PathBuf, Option<intake::Asked>>,
    /// Paths whose look never answered (left to their stuck threads).
    hung: intake::Hung,
    /// Scans asked for.
    scans: intake::ScanQueue,
    /// Counts config reloads: a look or scan of a config before is placed again.
    generation: u64,
    /// Per mapping: mount points not entered, subfolders not watched (for `status`).
    notes: Vec<intake::FolderNotes>,
    /// Mount points already said in the log.
    mounts_said: HashSet<std::path::PathBuf>,
}

/// `run --once` waits out an outage this long before it gives up (exit 1, nothing lost).
const ONCE_OUTAGE_PATIENCE: Duration = Duration::from_secs(30);

/// `ONCE_OUTAGE_PATIENCE`, or (debug builds only, a test hook) `OUTBOX_ONCE_PATIENCE` seconds.
fn once_outage_patience() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(secs) = std::env::var("OUTBOX_ONCE_PATIENCE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Duration::from_secs(secs);
    }
    ONCE_OUTAGE_PATIENCE
}
/// `run --once` (and the one-shot commands): failures that may have taken effect (5xx,
/// timeouts, dropped connections) in a row before an entry fails, so the command ends; the
/// backoff between them grows to a minute (a few minutes in all). `run` never gives up.
pub const ONCE_MAX_ATTEMPTS: u32 = 8;

/// The policy of `run --once` and the one-shot commands: bounded where `run` is patient.
pub fn once_policy_of(settings: &Settings) -> crate::core::model::Policy {
    crate::core::model::Policy {
        max_attempts: ONCE_MAX_ATTEMPTS,
        ..policy_of(settings)
    }
}

/// Run the agent until a signal (or, with `once`, until nothing is left to do).
pub async fn run(
    settings: Settings,
    creds: Credentials,
    opts: RunOptions,
) -> Result<RunOutcome, AgentError> {
    let state_dir = settings.agent.state_dir.clone();
    // The agent holds bearer tokens for hours: no core dump of it, and no other process of the
    // user's (without ptrace rights) reads its memory, environment or descriptors in /proc.
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::debug!(error = %e, "cannot mark the agent not dumpable");
    }
    // Before anything slow: a stop asked for during start-up is then kept, not fatal.
    let signals = shutdown_signal();
    let ledger = Arc::new(startup::open_ledger(&state_dir).await?);
    let sessions = Arc::new(SessionStore::open(&state_dir)?);
    let client = Arc::new(GraphClient::new(&settings, creds).map_err(AgentError::Setup)?);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Envelope>(16);
    if let Err(e) = control::serve(&state_dir, ctl_tx) {
        tracing::warn!(error = %e, "cannot open the control socket; status/retry/cancel will not reach this agent");
    }
    let (watch_tx, mut watch_rx) = mpsc::unbounded_channel();
    let watcher = if opts.once {
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
    let once = opts.once;
    let clock = Clock::start();
    let policy = if once {
        once_policy_of(&settings)
    } else {
        policy_of(&settings)
    };
    let machine = Machine::new(rules_of(&settings), policy);
    let mut steps = Steps::new(client, sessions.clone(), settings.mappings.clone());
    steps.second_looks = Some(Default::default());
    steps.ledger = Some(ledger.clone());
    let mut agent = Agent {
        available: vec![true; settings.mappings.len()],
        notifier: desktop::Notifier::new(settings.agent.notify)
            .with_secret_vars(&settings.auth.method),
        settings,
        machine,
        clock,
        ledger,
        sessions,
        steps,
        tasks: JoinSet::new(),
        inputs: VecDeque::new(),
        wake: None,
        dirty: false,
        done_unflushed: false,
        done_written: HashSet::new(),
        rejected_said: HashSet::new(),
        unrecorded: HashSet::new(),
        watcher,
        watch_tx: (!once).then(|| watch_tx.clone()),
        test_hooks: std::env::var("OUTBOX_TEST_HOOKS").is_ok_and(|v| v == "1"),
        stopper: opts.stop.clone().unwrap_or_default(),
        losing_events: false,
        sign_in_said: false,
        item_errors_said: HashSet::new(),
        unreachable_since: None,
        outages: Default::default(),
        last_fault: Default::default(),
        pauses: Default::default(),
        looks: JoinSet::new(),
        looking: Default::default(),
        hung: Default::default(),
        scans: Default::default(),
        generation: 0,
        notes: Vec::new(),
        mounts_said: HashSet::new(),
    };
    agent.notes = vec![Default::default(); agent.settings.mappings.len()];
    // The folders are scanned on another thread while the ledger is read and the core takes
    // it in (the watcher is already up: a change from now on is reported either way); the
    // core sees what the scan found after its start, as if scanned then.
    // Sends the ledger holds within the pacing window count against it after a restart.
    // So do the messages a mapping made within its `max_messages` window.
    let caps = agent
        .settings
        .mappings
        .iter()
        .filter_map(|m| match &m.target {
            crate::config::Target::NewMessage(t) => t.max_messages.map(|b| b.window),
            crate::config::Target::Item { .. } => None,
        });
    let window_ms = agent
        .settings
        .agent
        .mailbox_sends
        .map(|b| b.window)
        .into_iter()
        .chain(caps)
        .max()
        .map_or(0, |w| w.as_millis() as u64);
    let sends_since = Time(agent.clock.now().0.saturating_sub(window_ms));
    let t0 = std::time::Instant::now();
    let mappings = agent.settings.mappings.clone();
    let scan_watcher = agent.watcher.clone();
    let (scans, scan_ms, read_ms, started) = std::thread::scope(|s| {
        let scanning = s.spawn(move || {
            let t = std::time::Instant::now();
            let scans = intake::scan_mappings(&mappings, None, scan_watcher.as_ref());
            (scans, t.elapsed())
        });
        let read = startup::start_input(
            &agent.ledger,
            &agent.sessions,
            sends_since,
            agent.settings.keep_finished(),
            time::OffsetDateTime::now_utc(),
        );
        let read_ms = t0.elapsed();
        let started = read.and_then(|(start, stale)| {
            agent.inputs.push_back(start);
            agent.drain().map(|()| stale)
        });
        let (scans, scan_ms) = match scanning.join() {
            Ok(done) => done,
            // A scan that panicked: scanned again here (and it panics here).
            Err(_) => (Vec::new(), std::time::Duration::ZERO),
        };
        (scans, scan_ms, read_ms, started)
    });
    let stale = started?;
    let t2 = std::time::Instant::now();
    if scans.is_empty() {
        agent.rescan(None);
    } else {
        agent.take_scans(scans);
    }
    agent.drain()?;
    let t4 = std::time::Instant::now();
    agent.prune(Some(stale));
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    tracing::debug!(
        read_ms = ms(read_ms),
        start_ms = ms(t2 - t0 - read_ms),
        scan_ms = ms(scan_ms),
        observe_ms = ms(t4 - t2),
        prune_ms = ms(t4.elapsed()),
        "start-up phases (the scan alongside read and start)"
    );
    tracing::info!(mappings = agent.settings.mappings.len(), once, "watching");
    let rescan_every = agent.settings.agent.rescan;
    let mut next_rescan = Instant::now() + rescan_every;
    let stop = agent.stopper.clone();
    let shutdown = async move {
        tokio::select! {
            _ = signals => {},
            _ = stop.cancelled() => {},
        }
    };
    tokio::pin!(shutdown);
    let mut hup = hangups();
    let mut outcome = RunOutcome::Clean;
    loop {
        agent.drain()?;
        agent.say_outages();
        if once {
            if let Some(o) = agent.finished() {
                outcome = o;
                break;
            }
        }
        let wake = agent
            .wake
            .map(|t| agent.clock.instant_of(t))
            .unwrap_or(next_rescan)
            .min(next_rescan);
        let wake = agent
            .pauses
            .next_end()
            .map_or(wake, |t| wake.min(Instant::from_std(t)));
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("signal received: checkpointing and stopping");
                if once {
                    agent.say_left_at_stop();
                }
                break;
            }
            Some(ev) = watch_rx.recv() => {
                agent.on_watch(ev);
                while let Ok(ev) = watch_rx.try_recv() {
                    agent.on_watch(ev);
                }
            }
            Some(done) = agent.looks.join_next(), if !agent.looks.is_empty() => {
                agent.take_look(done);
                while let Some(done) = agent.looks.try_join_next() {
                    agent.take_look(done);
                }
            }
            Some(done) = agent.tasks.join_next(), if !agent.tasks.is_empty() => {
                agent.take_task(done);
                // And every other answer already in: one batch for the core (one flush).
                while let Some(done) = agent.tasks.try_join_next() {
                    agent.take_task(done);
                }
            }
            Some((req, reply)) = ctl_rx.recv() => {
                let answer = agent.on_request(req);
                let answer = match answer {
                    Ok(a) => a,
                    Err(e) => Answer::Line(Response::error(1, e.to_string())),
                };
                let _ = reply.send(answer);
            }
            _ = recv_hup(&mut hup) => agent.reload(),
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= next_rescan {
                    next_rescan = now + rescan_every;
                    agent.rescan(None);
                    agent.prune(None);
                }
                agent.end_pauses();
                agent.wake = None;
                agent.inputs.push_back(Input::Tick);
            }
        }
    }
    agent.watcher = None;
    // A hash in progress stops at its next read (its file is seen again at the next start).
    agent
        .steps
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // A step in flight is checkpointed by its intent record: the next start reconciles it.
    agent.tasks.shutdown().await;
    // A look or scan stuck on a mount that never answers is left behind (the runtime's
    // shutdown does not wait for it).
    agent.looks.shutdown().await;
    agent.ledger.flush()?;
    let socket = control::socket_path(&agent.settings.agent.state_dir);
    let ledger = agent.ledger.clone();
    drop(agent);
    // The last handle: a clean close lets the next start skip the ledger check.
    if let Ok(l) = Arc::try_unwrap(ledger) {
        l.close()?;
    }
    let _ = std::fs::remove_file(socket);
    Ok(outcome)
}

#[cfg(unix)]
fn hangups() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangups() -> Option<()> {
    None
}

#[cfg(unix)]
async fn recv_hup(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv_hup(_: &mut Option<()>) {
    std::future::pending().await
}

impl Agent {
    /// Feed the core every input queued, a batch at a time (group commit), in the core's order
    /// of work (`core::exec::drain`, which the simulation runs too): the records the batch's
    /// inputs produce are written as they come and flushed once, and only then are the batch's
    /// requests, file moves and notifications started. So every action still starts after
    /// every record the core asked for before it is on disk (the core's one rule for its
    /// executor), with one flush per batch instead of one or more per file: a burst of
    /// thousands of files waits on the disk a few hundred times, not tens of thousands.
    /// Ledger updates the core asks for (`UpdateFile`, `MarkReplaced`) are written in order
    /// with the records; a stat and a timer are local and taken at once.
    fn drain(&mut self) -> Result<(), AgentError> {
        crate::core::exec::drain(self)
    }

    /// A version the core records rejected (over Graph's 150 MiB) is a failed file to the
    /// user: logged with its size, the limit and what to do, notified, and moved to
    /// `failed_dir` with its reason, as a failure is. The core records it once, at its first
    /// sight; `rejected_said` keeps a re-persisted one from being said again.
    fn rejected_note(&mut self, rec: &Record) -> Option<Note> {
        if rec.state != State::Rejected
            || rec.created_at != rec.updated_at
            || !self.rejected_said.insert(rec.id.clone())
        {
            return None;
        }
        let limit = crate::core::model::MAX_ATTACHMENT;
        let failure = crate::core::model::Failure::new(
            rec.error.as_ref().map_or("fileTooLarge", |e| e.code.as_str()),
            format!(
                "{} is {} bytes ({}), over Graph's 150 MiB ({limit} bytes) attachment limit: it was not sent and is never sent as it is; split or compress it into files under 150 MiB and drop those in (`outbox cancel {}` clears this one)",
                crate::outside::path(&rec.path),
                rec.file.size,
                crate::config::units::human_size(rec.file.size),
                rec.id,
            ),
        );
        Some(Note::Failed {
            id: rec.id.clone(),
            path: rec.path.clone(),
            failure,
        })
    }

    /// A finished step's answer becomes the core's input.
    fn take_task(&mut self, done: Result<Option<Input>, tokio::task::JoinError>) {
        match done {
            Ok(Some(input)) => {
                self.outages.heard(&input);
                self.note_reachability(&input);
                self.note_fault(&input);
                self.inputs.push_back(input);
            }
            Ok(None) => {}
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::error!(error = %e, "a worker task failed"),
        }
    }

    /// A wait of Graph's (out of reach, throttling) that began in the last batch, said once in
    /// the log with when its first file tries again.
    fn say_outages(&mut self) {
        let machine = &self.machine;
        self.outages.say(|id| {
            machine
                .active()
                .find(|(r, _)| r.id == id)
                .and_then(|(_, until)| until)
        });
    }

    fn note_reachability(&mut self, input: &Input) {
        // The core waits and tries again; the log says why (a file that does not go says so).
        // (A send's is said with what its message waits for: `say_send_doubt`; it is never
        // tried again blindly.)
        let send = matches!(
            input,
            Input::Outcome {
                outcome: crate::core::model::Outcome::Send(_),
                ..
            }
        );
        if let (Some((id, crate::core::model::Fault::Ambiguous(f))), false) =
            (oneshot::fault(input), send)
        {
            tracing::warn!(entry = id, code = %crate::outside::shown(&f.code), error = %crate::outside::shown(&f.message), "a request failed (it may have taken effect): the entry checks and tries again after a pause");
        }
        match oneshot::unreachable(input) {
            Some(f) if self.unreachable_since.is_none() => {
                self.unreachable_since = Some((Instant::now(), f));
            }
            Some(_) => {}
            None if matches!(input, Input::Outcome { .. }) => self.unreachable_since = None,
            None => {}
        }
    }

    fn note_fault(&mut self, input: &Input) {
        use crate::core::model::{
            AskOutcome as A, ChunkOutcome as C, DeleteOutcome as D, LookOutcome as L, Outcome as O,
            PostOutcome as P, SessionOutcome as S,
        };
        let Input::Outcome { id, outcome } = input else {
            return;
        };
        let fault = match outcome {
            O::Post(P::Failed(f))
            | O::CreateSession(S::Failed(f))
            | O::Chunk(C::Failed(f))
            | O::Ask(A::Failed(f))
            | O::Look(L::Failed(f))
            | O::DeleteSession(D::Failed(f))
            | O::DeleteAttachment(D::Failed(f)) => Some(f.clone()),
            _ => None,
        };
        match fault {
            Some(f) => self.last_fault.insert(id.clone(), f),
            None => self.last_fault.remove(id),
        };
        // Entries that failed for good keep theirs: drop those the machine no longer holds.
        if self.last_fault.len() > 1024 {
            let machine = &self.machine;
            self.last_fault.retain(|id, _| machine.record(id).is_some());
        }
    }

    /// What the agent and each entry wait for (`status`).
    fn view(&self) -> control::AgentView {
        use crate::core::model::Fault;
        use control::{Wait, WaitReason};
        let now = self.clock.now();
        let mut waits = Vec::new();
        let sign_in = self.machine.sign_in_pause();
        for (rec, until) in self.machine.active() {
            let until = until.filter(|t| *t > now);
            let fault = self.last_fault.get(&rec.id);
            let wait = |reason, error: Option<&crate::core::model::Failure>| Wait {
                reason,
                until_ms: until.map(|t| t.0),
                error: error.map(|f| f.message.clone()),
                attempts: rec.attempts,
            };
            let capped = self.machine.capped_until(&rec.mapping);
            let w = match (until, fault) {
                (None, _) if capped.is_some() && rec.message.is_none() => Wait {
                    reason: WaitReason::MaxMessages,
                    until_ms: capped.map(|t| t.0),
                    error: None,
                    attempts: 0,
                },
                (None, _) => match sign_in {
                    Some((t, f)) => Wait {
                        reason: WaitReason::SignIn,
                        until_ms: Some(t.0),
                        error: Some(f.message.clone()),
                        attempts: rec.attempts,
                    },
                    None => continue,
                },
                (Some(_), Some(Fault::Throttled { .. })) => wait(WaitReason::Throttled, None),
                (Some(_), Some(Fault::Unreachable(f))) => wait(WaitReason::Unreachable, Some(f)),
                (Some(_), Some(Fault::SignIn(f))) => wait(WaitReason::SignIn, Some(f)),
                // The answer to an effect was lost: the wait is for the look that tells whether
                // it took effect, not a backoff before sending again.
                (Some(_), Some(Fault::Ambiguous(f))) if rec.may_exist => {
                    wait(WaitReason::Look, Some(f))
                }
                (Some(_), Some(Fault::Ambiguous(f) | Fault::Permanent(f))) => {
                    wait(WaitReason::Backoff, Some(f))
                }
                (Some(_), None) if rec.may_exist => wait(WaitReason::Look, None),
                (Some(_), None) => wait(WaitReason::Backoff, rec.error.as_ref()),
            };
            waits.push((rec.id.clone(), w));
        }
        // A step held back by the mailbox's budgets: nothing of it on its way yet.
        for (id, held) in self.steps.paced_waits() {
            let attempts = self.machine.record(&id).map_or(0, |r| r.attempts);
            let reason = match held.hold {
                crate::graph::pacing::Hold::Turn => WaitReason::BudgetTurn,
                crate::graph::pacing::Hold::Bytes => WaitReason::UploadBudget,
                crate::graph::pacing::Hold::Requests => WaitReason::RequestBudget,
            };
            let until_ms = held
                .until
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .ok();
            waits.retain(|(w, _)| *w != id);
            waits.push((
                id,
                Wait {
                    reason,
                    until_ms,
                    error: None,
                    attempts,
                },
            ));
        }
        for (_, path, _, _) in self.machine.settler().settling() {
            waits.push((
                settling_id(path),
                Wait {
                    reason: WaitReason::Settle,
                    until_ms: self.machine.settler().settles_at(path).map(|t| t.0),
                    error: None,
                    attempts: 0,
                },
            ));
        }
        let latest = |r: WaitReason| {
            waits
                .iter()
                .filter(|(_, w)| w.reason == r)
                .filter_map(|(_, w)| w.until_ms)
                .min()
        };
        let paused = if let Some((t, f)) = sign_in {
            Some(Wait {
                reason: WaitReason::SignIn,
                until_ms: Some(t.0),
                error: Some(f.message.clone()),
                attempts: 0,
            })
        } else if let Some((_, f)) = &self.unreachable_since {
            Some(Wait {
                reason: WaitReason::Unreachable,
                until_ms: latest(WaitReason::Unreachable),
                error: Some(f.message.clone()),
                attempts: 0,
            })
        } else {
            // Throttled by Graph, or else held back by a full window of the mailbox's budgets (a
            // file waiting for its turn to take the window holds nothing else back).
            [
                WaitReason::Throttled,
                WaitReason::UploadBudget,
                WaitReason::RequestBudget,
            ]
            .into_iter()
            .find_map(|reason| {
                latest(reason).map(|t| Wait {
                    reason,
                    until_ms: Some(t),
                    error: None,
                    attempts: 0,
                })
            })
        };
        waits.extend(self.held_waits());
        control::AgentView {
            paused,
            waits,
            held: self.pauses.view(),
            folders: self.folder_lines(),
            config: Some(self.config_read()),
            config_read_ms: Some(self.config_read_ms()),
            resumed: None,
        }
    }

    /// `run --once` stopped by a signal: the files it had not attached yet, each with what it
    /// waited for and until when (the summary counts them; the next run goes on with them).
    fn say_left_at_stop(&self) {
        let view = self.view();
        let left: Vec<String> = self
            .machine
            .active()
            .filter(|(r, _)| !r.state.is_terminal())
            .map(|(r, _)| {
                let why = match view.waits.iter().find(|(id, _)| *id == r.id) {
                    Some((_, w)) => {
                        let until = w
                            .until_ms
                            .and_then(|ms| {
                                time::OffsetDateTime::from_unix_timestamp_nanos(
                                    i128::from(ms) * 1_000_000,
                                )
                                .ok()
                            })
                            .map(|t| {
                                format!(
                                    " until {:02}:{:02}:{:02} UTC",
                                    t.hour(),
                                    t.minute(),
                                    t.second()
                                )
                            })
                            .unwrap_or_default();
                        format!("waiting for {}{until}", w.reason.as_str())
                    }
                    None => "a request of it under way".to_owned(),
                };
                format!("{} (entry {}: {why})", crate::outside::path(&r.path), r.id)
            })
            .collect();
        if !left.is_empty() {
            tracing::warn!(left = %left.join(", "), "stopped before these were attached; the next run goes on with them");
        }
    }

    /// The config file this agent read, as a full path (it may have been named relative to
    /// the agent's working directory).
    fn config_read(&self) -> std::path::PathBuf {
        std::fs::canonicalize(&self.settings.source).unwrap_or_else(|_| {
            std::env::current_dir()
                .map(|d| d.join(&self.settings.source))
                .unwrap_or_else(|_| self.settings.source.clone())
        })
    }

    /// When the agent last read its config file (Unix ms): at start, or at the last reload it
    /// took (a refused one keeps the time of the config in force).
    fn config_read_ms(&self) -> u64 {
        self.settings
            .read_at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// `run --once`: stop when nothing is left, or only work that waits for sign-in or for a
    /// folder to come back, or Graph has been out of reach for a while (an outage is not a
    /// sign-in problem: exit 1, and the next run goes on).
    fn finished(&self) -> Option<RunOutcome> {
        if let Some((since, why)) = &self.unreachable_since {
            let patience = once_outage_patience();
            if since.elapsed() >= patience {
                tracing::error!(
                    "stopping: Graph or the identity platform has been unreachable for {} s ({}); nothing is lost, the next run goes on",
                    patience.as_secs(),
                    why.message
                );
                return Some(RunOutcome::SomeFailed);
            }
        }
        if !self.tasks.is_empty()
            || !self.inputs.is_empty()
            || !self.looks.is_empty()
            || !self.scans.idle()
        {
            return None;
        }
        if self.machine.quiescent() {
            // A folder that could not be read sent nothing: not a clean run.
            let unavailable: Vec<String> = self
                .settings
                .mappings
                .iter()
                .zip(&self.available)
                .filter(|(_, ok)| !**ok)
                .map(|(m, _)| format!("`{}` ({})", m.name, crate::outside::path(&m.folder)))
                .collect();
            if !unavailable.is_empty() {
                tracing::error!(
                    "stopping: nothing was sent from these mapped folders, missing or unreadable: {}; mount or create them (or fix their permissions), then run again",
                    unavailable.join(", ")
                );
                return Some(RunOutcome::SomeFailed);
            }
            return Some(if self.machine.failed_this_run > 0 {
                RunOutcome::SomeFailed
            } else {
                RunOutcome::Clean
            });
        }
        if self.machine.only_blocked() {
            let left: Vec<String> = self
                .machine
                .active()
                .map(|(r, _)| format!("{} ({})", crate::outside::path(&r.path), r.id))
                .collect();
            if let Some((_, why)) = self.machine.sign_in_pause() {
                tracing::error!(left = %left.join(", "), "stopping: sign-in is needed before these can be sent: {}", why.message);
                return Some(RunOutcome::SignInNeeded);
            }
            // Each entry left is said with what it waits for: a retry of its message (failed or
            // unconfirmed, said above), its mapping's max_messages window, or its folder.
            let shown = |r: &Record| format!("{} ({})", crate::outside::path(&r.path), r.id);
            let mut retry: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let (mut capped, mut folder) = (Vec::new(), Vec::new());
            for (r, _) in self.machine.active() {
                match r.message.as_deref() {
                    Some(m) if self.machine.waits_for_retry(r) => {
                        retry.entry(m.to_owned()).or_default().push(shown(r))
                    }
                    _ if self.machine.capped_until(&r.mapping).is_some() => capped.push(shown(r)),
                    _ => folder.push(shown(r)),
                }
            }
            for (m, left) in &retry {
                tracing::error!(left = %left.join(", "), "stopping: these wait for `outbox retry {m}` of their message (what became of it is said above)");
            }
            if !capped.is_empty() {
                tracing::error!(left = %capped.join(", "), "stopping: these wait for their mapping's max_messages window (`outbox status` says until when)");
            }
            if !folder.is_empty() {
                tracing::error!(left = %folder.join(", "), "stopping: these wait for their mapped folder to come back");
            }
            return Some(RunOutcome::SomeFailed);
        }
        None
    }

    /// Flush what the batch wrote, before any of its `next` actions starts. The crash points
    /// name the first kind of step the flush makes way for, as they did when each record was
    /// flushed before its own step.
    fn commit(&mut self, next: &[Action]) -> Result<(), AgentError> {
        if !self.dirty {
            return Ok(());
        }
        let has = |f: fn(&Action) -> bool| next.iter().any(f);
        if has(|a| matches!(a, Action::Post { .. })) {
            crate::failpoint!("before-post-intent");
        }
        self.ledger.flush()?;
        self.dirty = false;
        if has(|a| matches!(a, Action::Post { .. })) {
            crate::failpoint!("after-post-intent");
        }
        if has(|a| matches!(a, Action::CreateSession { .. })) {
            crate::failpoint!("after-session-intent");
        }
        if has(|a| matches!(a, Action::CreateDraft { .. })) {
            crate::failpoint!("after-draft-intent");
        }
        if has(|a| matches!(a, Action::SendDraft { .. })) {
            crate::failpoint!("after-send-intent");
        }
        if std::mem::take(&mut self.done_unflushed) {
            crate::failpoint!("after-done-recorded");
        }
        Ok(())
    }

    fn persist(&mut self, rec: &Record) -> Result<(), AgentError> {
        let current = self
            .settings
            .mappings
            .iter()
            .find(|m| m.name == rec.mapping)
            .map(target_of);
        let entry = LedgerEntry::from_record(rec, current.as_ref());
        let first_done = rec.state == State::Done && self.done_written.insert(rec.id.clone());
        if first_done {
            crate::failpoint!("before-done-recorded");
        }
        match self.ledger.put(&entry) {
            Ok(_) => {}
            // One entry the ledger refuses (it does not encode, say) fails that file alone.
            Err(LedgerError::Invalid(why)) => {
                self.unrecordable(rec, &why);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        self.dirty = true;
        if first_done {
            // Flushed with the batch, before its after-action or anything else starts.
            self.done_unflushed = true;
        } else if rec.state == State::Pending && rec.created_at == rec.updated_at {
            crate::failpoint!("after-entry-recorded");
        }
        Ok(())
    }

    /// `rec`'s entry cannot be written (the ledger refuses that entry, not the disk): it is
    /// never sent (nothing goes out without its flushed record); its first step is answered as
    /// refused ([`refused_unrecorded`]), so the core fails it and the agent goes on.
    fn unrecordable(&mut self, rec: &Record, why: &str) {
        if !self.unrecorded.insert(rec.id.clone()) {
            return;
        }
        tracing::error!(file = %crate::outside::path(&rec.path), entry = %rec.id, "this file's entry cannot be written to the ledger ({}); it is not sent; the agent goes on with the other files", crate::outside::printable(why));
    }

    fn act(&mut self, action: Action) -> Result<(), AgentError> {
        match action {
            // Off the loop: a stat of a path on a mount that never answers holds only itself.
            Action::Stat { path } => self.stat(path),
            Action::ForgetUrl { id } => {
                self.sessions.forget(&id);
                self.steps.close_upload(&id);
            }
            Action::Notify(note) => self.notify(note),
            Action::WakeAt(t) => self.wake = Some(t),
            remote => {
                if let Some(input) = refused_unrecorded(&remote, &self.unrecorded) {
                    self.inputs.push_back(input);
                    return Ok(());
                }
                let steps = self.steps.clone();
                self.tasks.spawn(async move { steps.run(remote).await });
            }
        }
        Ok(())
    }

    fn notify(&mut self, note: Note) {
        match note {
            Note::Attached {
                id,
                path,
                replaced,
                beside,
                found,
            } => {
                let file = crate::outside::path(&path);
                if found {
                    tracing::info!(file = %file, entry = %id, "already on the item: an attachment of its name and bytes is there (found by a look, or attached before from this path), so nothing was sent; recorded done, not attached again");
                } else if replaced {
                    tracing::info!(file = %file, entry = %id, "attached; it replaced its earlier version, whose attachment is deleted from the item");
                } else {
                    tracing::info!(file = %file, entry = %id, "attached");
                }
                if !beside.is_empty() {
                    tracing::warn!(file = %file, entry = %id, beside = %beside.join(", "), "attached beside an earlier version of the same name: that file had another owner, so it was not replaced (both stay on the item)");
                }
                // The item takes files again: a later refusal is news.
                if let Some(m) = self.mapping_of(&path) {
                    let m = m.name.clone();
                    self.item_errors_said.retain(|(said, _)| *said != m);
                }
                // Found already there: nothing new on the item to tell on the desktop.
                if !found {
                    if replaced {
                        self.notifier.replaced(&file_name(&path));
                    } else {
                        self.notifier.attached(&file_name(&path));
                    }
                }
                self.sign_in_said = false;
            }
            Note::Failed { id, path, failure } => {
                let file = crate::outside::path(&path);
                let code = crate::outside::printable(&failure.code);
                let message = crate::outside::printable(&failure.message);
                match self.item_error_key(&path, &failure) {
                    // The item refused it: the mapping's other files fail the same way; once.
                    Some(key) if self.item_errors_said.contains(&key) => {
                        tracing::info!(file = %file, entry = %id, code = %code, mapping = %key.0, "failed as the mapping's first file did (said above)");
                    }
                    Some(key) => {
                        tracing::error!(file = %file, entry = %id, code = %code, mapping = %key.0, "{message} — said once for mapping `{}`: its other files refused this way are listed by `outbox status --state failed`; once the item is fixed in the config, `outbox retry --failed`", crate::outside::printable(&key.0));
                        self.notifier.mapping_waits(
                            &key.0,
                            &format!(
                                "{}; its files wait for the item to be fixed",
                                failure.message
                            ),
                        );
                        self.item_errors_said.insert(key);
                    }
                    None => {
                        tracing::error!(file = %file, entry = %id, code = %code, "{message}");
                        self.notifier.failed(&file_name(&path), &failure.message);
                    }
                }
            }
            Note::FoundMailed {
                id,
                path,
                internet_message_id,
            } => {
                let imid = internet_message_id
                    .as_deref()
                    .unwrap_or("(no internetMessageId)");
                tracing::info!(file = %crate::outside::path(&path), entry = %id, message = %crate::outside::printable(imid), "already mailed: a sent copy in the mailbox carries this file's key (an earlier state dir, or another agent); not mailed again");
            }
            Note::CancelTooLate { id, path } => {
                tracing::warn!(file = %crate::outside::path(&path), entry = %id, "the cancel came too late: the file was already attached; it stays attached and is recorded done");
            }
            Note::StillChanging { path } => {
                tracing::warn!(file = %crate::outside::path(&path), "still changing after max_settle; waiting for it to finish");
            }
            Note::MessagesCapped {
                mapping,
                until,
                waiting,
            } => {
                let mins = until.0.saturating_sub(self.clock.now().0).div_ceil(60_000);
                tracing::warn!(
                    mapping = %crate::outside::printable(&mapping),
                    waiting,
                    "the mapping made its max_messages messages in their window: {waiting} file(s) wait about {mins} min for it (raise [mapping.new_message] max_messages, or \"off\", if the folder should mail more)"
                );
                self.notifier.mapping_waits(
                    &mapping,
                    &format!("max_messages reached: {waiting} file(s) wait about {mins} min"),
                );
            }
            Note::MessageSent { id, subject } => {
                tracing::info!(message = %id, subject = %crate::outside::printable(&subject), "sent");
                self.notifier.sent(&subject);
                self.sign_in_said = false;
            }
            Note::MessageFailed {
                id,
                subject,
                failure,
            } if failure.code == crate::core::machine::NO_FILES_LEFT => {
                // The user's decision (each file canceled, or deleted before it was attached):
                // nothing to fix or retry, no failure to notify (trial 4, M10).
                tracing::warn!(message = %id, subject = %crate::outside::printable(&subject), "nothing left to send: every file of the message was canceled or deleted before it was sent, so it is closed, not sent (its draft, if one was made, is deleted); nothing to retry");
            }
            Note::MessageFailed {
                id,
                subject,
                failure,
            } => {
                // A message none of whose files is left has its draft deleted (SPEC 8).
                let drafted = self
                    .machine
                    .messages()
                    .find(|m| m.id == id)
                    .is_none_or(|m| m.draft_id.is_some() || m.may_exist);
                let draft = if !drafted {
                    // Its draft was refused (or never asked for): nothing is in Drafts.
                    "no draft was made"
                } else {
                    "a draft it made stays in Drafts"
                };
                tracing::error!(message = %id, subject = %crate::outside::printable(&subject), code = %crate::outside::printable(&failure.code), "the message was not sent: {}; fix the cause, then `outbox retry {id}` ({draft})", crate::outside::printable(failure.message.trim_end_matches('.')));
                self.notifier
                    .message_failed(&subject, &failure.message, &id, draft);
            }
            Note::MessageGaveWay { id, subject } => {
                tracing::info!(message = %id, subject = %crate::outside::printable(&subject), "gave way: another message in the mailbox carries its files' keys (another agent on this folder); its draft is deleted and each of its files is mailed once, by that message or a new one");
            }
            Note::LeftMessage { id, files, subject } => {
                let names: Vec<String> = files
                    .iter()
                    .map(|f| crate::outside::printable(f).to_string())
                    .collect();
                tracing::warn!(message = %id, left = %names.join(", "), subject = %crate::outside::printable(&subject), "{} left the message before it was sent (canceled, gone, or left out of a retry): its subject and body are made again from the files left, and it goes without {}", names.join(", "), if names.len() == 1 { "it" } else { "them" });
            }
            Note::MessageUnconfirmed { id, subject } => {
                tracing::error!(message = %id, subject = %crate::outside::printable(&subject), "the send could not be confirmed; it was not sent again: look in Sent Items, then `outbox retry {id}` sends it only if its draft is still a draft");
                self.notifier.unconfirmed(&subject, &id);
            }
            Note::SignInNeeded(f) => {
                if !self.sign_in_said {
                    tracing::error!("{} — uploads are paused and resume by themselves once sign-in works again (`outbox login` if asked); nothing queued is lost", f.message);
                    self.sign_in_said = true;
                }
            }
        }
    }

    /// Message `id`, whose send was just answered with a failure: when that leaves it in doubt
    /// (a lost answer, a throttle), the log says what it waits for and until when (trial 4,
    /// M5/M11: `run --once` sat silent for minutes).
    fn say_send_doubt(&self, id: &str) {
        use control::{send_doubt, send_doubt_text};
        let look_after = self.settings.agent.look_after.as_millis() as u64;
        let Some(m) = self.machine.messages().find(|m| m.id == id) else {
            return;
        };
        let Some(d) = send_doubt(m, look_after) else {
            return;
        };
        let in_s = d
            .look_at
            .0
            .saturating_sub(self.clock.now().0)
            .div_ceil(1_000);
        let at = time::OffsetDateTime::from_unix_timestamp((d.look_at.0 / 1_000) as i64)
            .map(|t| {
                format!(
                    "at {:02}:{:02}:{:02} UTC (in {in_s} s)",
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            })
            .unwrap_or_else(|_| format!("in {in_s} s"));
        let text = send_doubt_text(&d, &at, true);
        tracing::warn!(message = %m.id, subject = %crate::outside::printable(&m.letter.subject), "{text}");
    }

    fn mapping_of(&self, path: &Path) -> Option<&Mapping> {
        self.settings
            .mappings
            .iter()
            .find(|m| path.starts_with(&m.folder))
    }

    /// (mapping, code) when `failure` is the item's refusal (Graph's 403/404 on it), which every
    /// file of the mapping meets.
    fn item_error_key(
        &self,
        path: &Path,
        failure: &crate::core::model::Failure,
    ) -> Option<(String, String)> {
        // As Graph said it (`CODE (HTTP 404): ...`), or as the second look put it (`CODE: ...`).
        let item_level = crate::graph::hints::graph_error_of(failure).is_some()
            || failure.message.starts_with(&format!("{}: ", failure.code));
        if !item_level {
            return None;
        }
        Some((self.mapping_of(path)?.name.clone(), failure.code.clone()))
    }

    /// `SIGHUP`: read the config again; an invalid one is refused and the old one kept. The
    /// folders are watched anew (a watcher knows the mappings it was started with: one kept
    /// from before would not see a new mapping's folder, and would name mappings by their old
    /// places); a watcher that cannot start refuses the reload too.
    fn reload(&mut self) {
        let new = match crate::private::load_config(&self.settings.source) {
            Ok(new) => new,
            Err(errors) => {
                let e = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(
                    "the new configuration is refused; the old one stays in force: {e}"
                );
                return;
            }
        };
        // The mapped folders are taken as they are now (`files::unpin_folders`).
        crate::files::unpin_folders();
        let mut problems = Vec::new();
        if let Some(tx) = &self.watch_tx {
            match FolderWatcher::start(&new.mappings, tx.clone()) {
                Ok((w, p)) => {
                    // The old watcher stops here; the rescan below covers the moment between.
                    self.watcher = Some(w);
                    problems = p;
                }
                Err(e) => {
                    tracing::error!(
                        "the new configuration is refused; the old one stays in force: {e}"
                    );
                    return;
                }
            }
        }
        for (i, why) in problems {
            tracing::error!(mapping = %new.mappings[i].name, "{why}");
        }
        tracing::info!(file = %crate::outside::path(&new.source), mappings = new.mappings.len(), "configuration reloaded; every mapping's folder is watched anew");
        let mut s = new;
        // Where the ledger lives cannot change under a running agent.
        s.agent.state_dir = self.settings.agent.state_dir.clone();
        // `run --once` has no watcher; it keeps its bound.
        let policy = if self.watcher.is_none() {
            once_policy_of(&s)
        } else {
            policy_of(&s)
        };
        self.inputs.push_back(Input::Config {
            mappings: rules_of(&s),
            policy,
        });
        self.steps.set_mappings(s.mappings.clone());
        self.available = vec![true; s.mappings.len()];
        self.notes = vec![Default::default(); s.mappings.len()];
        self.generation += 1;
        // Scans asked for name mappings by their old places: the rescan below covers them.
        self.scans.forget_asked();
        self.item_errors_said.clear();
        self.settings = s;
        self.rescan(None);
    }

    /// Drop old finished entries of files gone from their folders, as the core chooses
    /// (`core::prune`: entries of a mapping whose folder is missing or unreadable are kept, an
    /// unmounted folder's files are not gone); the ledger makes the deletes ([`Ledger::prune`]);
    /// `stale`: only those entries (start-up's read found them), instead of a whole read.
    fn prune(&mut self, stale: Option<Vec<(String, std::path::PathBuf)>>) {
        let keep = self.settings.keep_finished();
        let folders: Vec<prune::Folder<'_>> = self
            .settings
            .mappings
            .iter()
            .zip(&self.available)
            .map(|(m, ok)| prune::Folder {
                path: m.folder.as_path(),
                there: *ok && m.folder.is_dir(),
            })
            .collect();
        // A file's path is looked at beneath its folder, crossing no mount point (unless its
        // mapping does): a mount made over its folder since is neither asked (it may never
        // answer) nor taken for the file's going (its entry is kept).
        let present = |p: &Path| {
            self.settings
                .mappings
                .iter()
                .find(|m| p.starts_with(&m.folder))
                .is_some_and(|m| {
                    if m.cross_mounts {
                        p.exists()
                    } else {
                        crate::files::present_beneath(&m.folder, p)
                    }
                })
        };
        let exists = |p: &Path| !prune::may_go(p, &folders, present);
        let now = time::OffsetDateTime::now_utc();
        let pruned = match stale {
            Some(ids) => self.ledger.prune_stale_ids(ids, keep, now, exists),
            None => self.ledger.prune_ids(keep, now, exists),
        };
        let ids = match pruned {
            Ok((n, ids)) if n > 0 => {
                tracing::info!(
                    removed = n,
                    "pruned done entries of files gone from their folders"
                );
                ids
            }
            Ok(_) => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot prune the ledger");
                Vec::new()
            }
        };
        // The core forgets them too: a file dropped again at a pruned entry's path is a new
        // file to it, not that entry's version (whose record is gone).
        if !ids.is_empty() {
            self.inputs.push_back(Input::Pruned { ids });
        }
    }

    fn on_request(&mut self, req: Request) -> Result<Answer, AgentError> {
        let entries = |ids: &[String], l: &Ledger| -> Result<Vec<LedgerEntry>, LedgerError> {
            let mut out = Vec::new();
            for id in ids {
                if let Some(e) = l.get(id)? {
                    out.push(e);
                }
            }
            Ok(out)
        };
        let line = |r: Result<Vec<LedgerEntry>, (i32, String)>| {
            Answer::Line(match r {
                Ok(es) => Response::entries(es),
                Err((code, msg)) => Response::error(code, msg),
            })
        };
        Ok(match req {
            Request::Status => self.status_answer(),
            Request::Retry { id } => {
                let entry = self.ledger.get(&id)?;
                // A message by its id, or the failed message of a file named.
                let message = match &entry {
                    None => match ops::retryable_message(&self.ledger, &id) {
                        Ok(m) => m,
                        Err(LedgerError::Invalid(why)) => return Ok(line(Err((2, why)))),
                        Err(e) => return Err(e.into()),
                    },
                    Some(e) if matches!(e.state, crate::ledger::EntryState::Failed) => e
                        .message
                        .as_deref()
                        .map(|m| self.ledger.get_message(m))
                        .transpose()?
                        .flatten()
                        .filter(|m| m.state == crate::core::model::MessageState::Failed),
                    Some(_) => None,
                };
                if let Some(m) = message {
                    if let Some(why) = ops::message_refusal(&self.ledger, &m)? {
                        return Ok(line(Err((2, why))));
                    }
                    return self.retry_messages(vec![m], Vec::new());
                }
                let records = match entry {
                    None => {
                        return Ok(line(Err((
                            2,
                            format!(
                                "no ledger entry or message with id `{id}` (see `outbox status`)"
                            ),
                        ))))
                    }
                    Some(e) => {
                        if let Some(why) = ops::sent_entry(&self.ledger, &e, "retry")? {
                            return Ok(line(Err((2, why))));
                        }
                        if let Some(why) = self.unreachable(&e).or_else(|| ops::retry_refusal(&e)) {
                            return Ok(line(Err((2, why))));
                        }
                        vec![e.to_record()]
                    }
                };
                let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
                self.inputs.push_back(Input::Retry { records });
                self.drain()?;
                line(Ok(entries(&ids, &self.ledger)?))
            }
            Request::Resend { id } => {
                let Some(e) = self.ledger.get(&id)? else {
                    return Ok(line(Err((2, ops::resend_unknown(&self.ledger, &id)?))));
                };
                let mapping = self.settings.mappings.iter().find(|m| m.name == e.mapping);
                let message = e
                    .message
                    .as_deref()
                    .map(|m| self.ledger.get_message(m))
                    .transpose()?
                    .flatten();
                let refusal = self
                    .unreachable(&e)
                    .or_else(|| ops::resend_refusal(&e, mapping, message.as_ref()));
                if let Some(why) = refusal {
                    return Ok(line(Err((2, why))));
                }
                let mut r = e.to_record();
                r.resend = true;
                self.inputs.push_back(Input::Retry { records: vec![r] });
                self.drain()?;
                line(Ok(entries(&[id], &self.ledger)?))
            }
            Request::RetryFailed => {
                // Failed messages first (never unconfirmed ones: those take an explicit id),
                // each before any plain retry of its files.
                let mut messages = Vec::new();
                for m in self.ledger.messages() {
                    let m = m?;
                    // One that gave way is not retried; one whose failed file cannot come
                    // back waits, never sent without it.
                    if m.state == crate::core::model::MessageState::Failed
                        && !ops::not_to_retry(&m)
                        && ops::message_refusal(&self.ledger, &m)?.is_none()
                    {
                        messages.push(m);
                    }
                }
                let refuse =
                    |e: &LedgerEntry| self.unreachable(e).or_else(|| ops::retry_refusal(e));
                let records: Vec<Record> = ops::failed_refused_by(&self.ledger, &refuse)?
                    .0
                    .iter()
                    .map(LedgerEntry::to_record)
                    .collect();
                self.retry_messages(messages, records)?
            }
            Request::Cancel { id } => match self.ledger.get(&id)? {
                None => line(Err((2, ops::cancel_unknown(&self.ledger, &id)?))),
                Some(e) => match ops::sent_entry(&self.ledger, &e, "cancel")? {
                    // A file of a message sent: nothing to cancel (said so, and how to mail
                    // it again on purpose).
                    Some(why) => line(Err((2, why))),
                    // Ended (failed, rejected): nothing runs for it, the ledger is all to change.
                    None if e.state.is_terminal() => line(match ops::cancel_refusal(&e) {
                        Some(why) => Err((2, why)),
                        None => Ok(vec![ops::cancel_ended(&self.ledger, &e)?]),
                    }),
                    None => {
                        self.inputs.push_back(Input::Cancel { id: id.clone() });
                        // Its upload step waiting for the mailbox's budgets, nothing of it
                        // sent: withdrawn, and answered as not taken after the cancel, so the
                        // cancel lands now, not when the wait ends.
                        if let Some(withheld) = self.steps.withdraw(&id) {
                            self.inputs.push_back(withheld);
                        }
                        self.drain()?;
                        // With what it waits for, if the cancel waits for a wait to end.
                        let mut r =
                            Response::entries(entries(std::slice::from_ref(&id), &self.ledger)?);
                        r.agent = Some(self.view());
                        Answer::Line(r)
                    }
                },
            },
            Request::Verified { wrong, fine } => {
                ops::mark_verified(&self.ledger, &wrong, &fine)?;
                line(Ok(Vec::new()))
            }
            Request::Pause { mapping, for_ms } => Answer::Line(self.pause(mapping, for_ms)),
            Request::Config => {
                let mut r = Response::entries(Vec::new());
                r.agent = Some(control::AgentView {
                    config: Some(self.config_read()),
                    config_read_ms: Some(self.config_read_ms()),
                    ..control::AgentView::default()
                });
                Answer::Line(r)
            }
            Request::Resume { mapping } => Answer::Line(self.resume(mapping)),
            Request::Overflow if self.test_hooks => {
                self.losing_events = false;
                self.rescan(None);
                line(Ok(Vec::new()))
            }
            Request::LoseEvents if self.test_hooks => {
                self.losing_events = true;
                line(Ok(Vec::new()))
            }
            Request::Stop if self.test_hooks => {
                self.stopper.cancel();
                line(Ok(Vec::new()))
            }
            Request::Overflow | Request::LoseEvents | Request::Stop => line(Err((
                2,
                "test hooks are off (OUTBOX_TEST_HOOKS=1)".to_string(),
            ))),
        })
    }

    /// `retry` of `messages` (each with the records of all its files), then of `records` not
    /// among those files. Answers with the entries retried and the messages as they now are.
    fn retry_messages(
        &mut self,
        messages: Vec<crate::core::model::MessageRecord>,
        records: Vec<Record>,
    ) -> Result<Answer, AgentError> {
        let mut taken = HashSet::new();
        let mut ids = Vec::new();
        let mut mids = Vec::new();
        for m in messages {
            let files: Vec<Record> = ops::files_of(&self.ledger, &m)?
                .iter()
                .map(LedgerEntry::to_record)
                .collect();
            for f in &files {
                taken.insert(f.id.clone());
                if matches!(f.state, State::Failed | State::Canceled)
                    || (f.state == State::Done && f.verify_failed)
                {
                    ids.push(f.id.clone());
                }
            }
            mids.push(m.id.clone());
            self.inputs.push_back(Input::RetryMessage {
                message: m,
                records: files,
            });
            self.drain()?;
        }
        let records: Vec<Record> = records
            .into_iter()
            .filter(|r| !taken.contains(&r.id))
            .collect();
        ids.extend(records.iter().map(|r| r.id.clone()));
        if !records.is_empty() {
            self.inputs.push_back(Input::Retry { records });
            self.drain()?;
        }
        let mut entries = Vec::new();
        for id in &ids {
            if let Some(e) = self.ledger.get(id)? {
                entries.push(e);
            }
        }
        let mut resp = Response::entries(entries);
        for id in &mids {
            if let Some(m) = self.ledger.get_message(id)? {
                resp.messages.push(m);
            }
        }
        Ok(Answer::Line(resp))
    }

    /// Why a retry must not look at `e`'s file on the loop: a mount point (a neighbour's, which
    /// may never answer) or a link is now on the way to it beneath its folder (unless its mapping
    /// crosses mounts or follows links, whose paths are the user's to answer for).
    fn unreachable(&self, e: &LedgerEntry) -> Option<String> {
        let m = self.mapping_of(&e.path)?;
        if m.cross_mounts || m.follow_symlinks {
            return None;
        }
        let what = crate::files::in_the_way_beneath(&m.folder, &e.path)?;
        Some(format!(
            "entry {}: the way to {} in its folder is now {what}; it is not looked at or sent (a mount is entered only with cross_mounts = true on mapping \"{}\")",
            e.id,
            crate::outside::path(&e.path),
            crate::outside::printable(&m.name)
        ))
    }

    /// The size of a file of a mapped folder for `status` (0 when it cannot be told), asked
    /// on the loop without crossing a mount point (unless its mapping does): a neighbour's
    /// mount made since must not hold the agent.
    fn size_of(&self, path: &Path) -> u64 {
        let Some(m) = self.mapping_of(path) else {
            return 0;
        };
        let size = if m.cross_mounts || m.follow_symlinks {
            std::fs::metadata(path).ok().map(|m| m.len())
        } else {
            crate::files::len_beneath(&m.folder, path)
        };
        size.unwrap_or(0)
    }

    /// `status`: the files not in the ledger yet (settling, or waiting for their hash).
    fn status_answer(&self) -> Answer {
        let index = |name: &str| self.settings.mappings.iter().position(|m| m.name == name);
        let mut unledgered: Vec<control::Unledgered> = self
            .machine
            .settler()
            .settling()
            .filter_map(|(mapping, path, size, still)| {
                Some(control::Unledgered {
                    mapping: index(mapping)?,
                    path: path.to_path_buf(),
                    size,
                    still_changing: still,
                })
            })
            .collect();
        for path in self.machine.hashing() {
            if let Some(i) = self
                .settings
                .mappings
                .iter()
                .position(|m| path.starts_with(&m.folder))
            {
                let size = self.size_of(path);
                unledgered.push(control::Unledgered {
                    mapping: i,
                    path: path.to_path_buf(),
                    size,
                    still_changing: false,
                });
            }
        }
        // Files left in their folders by `outbox pause`.
        for (mapping, path, _) in self.pauses.held_files() {
            if let Some(i) = index(mapping) {
                let size = self.size_of(path);
                unledgered.push(control::Unledgered {
                    mapping: i,
                    path: path.to_path_buf(),
                    size,
                    still_changing: false,
                });
            }
        }
        Answer::Status {
            ledger: self.ledger.clone(),
            mappings: self.settings.mappings.clone(),
            unledgered,
            view: self.view(),
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The `settling` row `status` shows for a file not in the ledger yet.
fn settling_row(m: &Mapping, f: &control::Unledgered) -> LedgerEntry {
    let mut row = LedgerEntry::new(
        crate::ledger::NewEntry {
            mapping: m.name.clone(),
            path: f.path.clone(),
            name: file_name(&f.path),
            target: target_of(m),
            size: f.size,
            mtime_ns: 0,
        },
        crate::ledger::EntryState::Settling,
        time::OffsetDateTime::now_utc(),
    );
    row.id = settling_id(&f.path);
    if f.still_changing {
        row.error = Some(crate::ledger::EntryError::new(
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
    ItemRef::from(&e.target)
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled: a signal that comes while a command is still starting
/// (a service manager stopping the agent during its start-up scan) is kept for the first poll
/// instead of killing the process mid-write. Call it inside the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut t), Ok(mut i)) => {
                    tokio::select! {
                        _ = t.recv() => {},
                        _ = i.recv() => {},
                    }
                }
                (Ok(mut t), Err(_)) => {
                    t.recv().await;
                }
                (Err(_), Ok(mut i)) => {
                    i.recv().await;
                }
                (Err(_), Err(_)) => std::future::pending::<()>().await,
            }
        }
    }
    // Windows: Ctrl-C, Ctrl-Break (what `GenerateConsoleCtrlEvent` sends another process
    // group), and the console closed, the user logging off or the system shutting down; each
    // gives the process a few seconds, enough to checkpoint.
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_logoff, ctrl_shutdown};
        let (c, b, cl, lo, sh) = (
            ctrl_c(),
            ctrl_break(),
            ctrl_close(),
            ctrl_logoff(),
            ctrl_shutdown(),
        );
        async move {
            // Each kind has a type of its own: one future per kind, a kind that cannot be
            // listened to never fires.
            macro_rules! wait {
                ($r:expr) => {
                    async move {
                        match $r {
                            Ok(mut s) => {
                                s.recv().await;
                            }
                            Err(_) => std::future::pending::<()>().await,
                        }
                    }
                };
            }
            tokio::select! {
                _ = wait!(c) => {},
                _ = wait!(b) => {},
                _ = wait!(cl) => {},
                _ = wait!(lo) => {},
                _ = wait!(sh) => {},
            }
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The name of the signal that ended a one-shot command ([`command_signal`]), for its last line.
static LAST_SIGNAL: std::sync::Mutex<Option<&'static str>> = std::sync::Mutex::new(None);

/// Which signal [`command_signal`] saw, if any: `"SIGHUP"`, or `None` for SIGINT/SIGTERM.
pub fn hangup_seen() -> Option<&'static str> {
    *LAST_SIGNAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`shutdown_signal`], or SIGHUP: for the one-shot commands (`send`, `mail`), which a closed
/// terminal (or a `kill -HUP`) ends as Ctrl-C does, with their last words, instead of the
/// default action's silent death. The agent keeps SIGHUP for reading its config again.
pub fn command_signal() -> impl std::future::Future<Output = ()> + Send {
    let shutdown = shutdown_signal();
    #[cfg(unix)]
    {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        async move {
            if let Some(mut h) = hup {
                tokio::select! {
                    _ = shutdown => {}
                    _ = h.recv() => {
                        *LAST_SIGNAL.lock().unwrap_or_else(|p| p.into_inner()) = Some("SIGHUP");
                    }
                }
                return;
            }
            shutdown.await
        }
    }
    // No SIGHUP elsewhere: the shutdown signal alone.
    #[cfg(not(unix))]
    shutdown
}

impl crate::core::exec::Ledger for Agent {
    type Error = AgentError;

    fn write(&mut self, write: Write) -> Result<Option<Action>, AgentError> {
        match write {
            Write::Record(rec) => {
                // Said once its record is flushed (the core moves it to `failed_dir`).
                let note = self.rejected_note(&rec).map(Action::Notify);
                self.persist(&rec)?;
                return Ok(note);
            }
            Write::Message(m) => {
                self.ledger.put_message(&m)?;
                self.dirty = true;
            }
            Write::File { id, file, revive } => {
                let updated = self.ledger.update(&id, |e| {
                    e.dev = file.dev;
                    e.ino = file.ino;
                    e.ctime_ns = file.ctime_ns;
                    e.mtime_ns = file.mtime_ns;
                    e.owner = file.owner;
                });
                match updated {
                    Ok(e) => {
                        self.dirty = true;
                        if revive {
                            self.inputs.push_back(Input::Retry {
                                records: vec![e.to_record()],
                            });
                        }
                    }
                    Err(LedgerError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Write::Replaced { id } => match self.ledger.update(&id, |e| e.replaced = true) {
                Ok(_) => self.dirty = true,
                Err(LedgerError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            },
        }
        Ok(None)
    }

    fn flush(&mut self, next: &[Action]) -> Result<(), AgentError> {
        self.commit(next)
    }
}

impl crate::core::exec::Executor for Agent {
    fn next_input(&mut self) -> Option<Input> {
        self.inputs.pop_front()
    }

    fn decide(&mut self, input: Input) -> Vec<Action> {
        let now = self.clock.now();
        tracing::trace!(?input, "core input");
        // A send's failed answer (lost, a throttle): said once, with what the message now waits
        // for (trial 4, M5/M11).
        let send_failed = match &input {
            Input::Outcome {
                id,
                outcome:
                    crate::core::model::Outcome::Send(crate::core::model::SendOutcome::Failed(_)),
            } => Some(id.clone()),
            _ => None,
        };
        let actions = self.machine.handle(now, input);
        tracing::trace!(?actions, "core actions");
        if let Some(id) = send_failed {
            self.say_send_doubt(&id);
        }
        actions
    }

    fn now(&mut self, action: Action) -> Result<(), AgentError> {
        self.act(action)
    }

    fn start(&mut self, action: Action) -> Result<(), AgentError> {
        self.act(action)
    }
}

/// The answer to a first step (a POST, a session, the look before either) of an entry whose
/// record could not be written: refused before any effect, so the core fails the entry; `None`
/// for any other action (those follow an effect, which needed the record).
fn refused_unrecorded(action: &Action, unrecorded: &HashSet<String>) -> Option<Input> {
    use crate::core::model::{Failure, Fault, LookOutcome, Outcome, PostOutcome, SessionOutcome};
    let refused = || {
        Fault::Permanent(Failure::new(
            "notRecorded",
            "the ledger could not record this file's entry, so it was not sent; the agent's log says why",
        ))
    };
    let (id, outcome) = match action {
        Action::Post { id, .. } => (id, Outcome::Post(PostOutcome::Failed(refused()))),
        Action::CreateSession { id, .. } => (
            id,
            Outcome::CreateSession(SessionOutcome::Failed(refused())),
        ),
        Action::Look { id, .. } => (id, Outcome::Look(LookOutcome::Failed(refused()))),
        _ => return None,
    };
    unrecorded.contains(id).then(|| Input::Outcome {
        id: id.clone(),
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_windows_time_zone_is_the_offset_of_local_time_from_utc() {
        const H: i64 = 3_600_000;
        // Central Europe: bias -60; in summer the daylight bias -60 more.
        assert_eq!(zone_offset_ms(1, -60, 0, -60), Some(H));
        assert_eq!(zone_offset_ms(2, -60, 0, -60), Some(2 * H));
        // New York: bias 300 (five hours behind), daylight -60.
        assert_eq!(zone_offset_ms(2, 300, 0, -60), Some(-4 * H));
        // India, no daylight saving: +5:30.
        assert_eq!(zone_offset_ms(0, -330, 0, 0), Some(5 * H + H / 2));
        // TIME_ZONE_ID_INVALID, or nonsense: not told.
        assert_eq!(zone_offset_ms(u32::MAX, 0, 0, 0), None);
        assert_eq!(zone_offset_ms(0, 24 * 60, 0, 0), None);
    }

    #[test]
    fn a_unix_date_offset_is_read() {
        assert_eq!(parse_utc_offset("+0530"), Some(19_800_000));
        assert_eq!(parse_utc_offset("-0400"), Some(-14_400_000));
        assert_eq!(parse_utc_offset("0400"), None);
    }

    /// The call itself, as Windows (or Wine) answers it: a zone within a day of UTC, the one
    /// `{date}` uses.
    #[cfg(windows)]
    #[test]
    fn the_local_time_zone_is_asked_of_windows() {
        let z = outbox_win::time_zone().expect("GetTimeZoneInformation");
        let ms = zone_offset_ms(z.id, z.bias, z.standard_bias, z.daylight_bias);
        assert!(ms.is_some(), "{z:?}");
        assert_eq!(local_utc_offset_ms(), ms.unwrap_or(0));
    }
}
