//! The state machine: every decision about a file version and its upload. It takes one
//! [`Input`] at a time with the time it happened and answers with [`Action`]s for the executor
//! (the agent, or the simulator) to carry out. It reads no clock, touches no file, sends nothing.
//!
//! What to do next for an entry is derived from its persisted [`Record`] plus a little volatile
//! knowledge (the server's last offset, whether the item was already looked at): after a crash
//! the same derivation runs on the records alone, so recovery is ordinary operation.

use super::model::*;
use super::settle::{Settled, Settler};
pub use messages::{
    cap_frees_at, civil_date, held_backoff_ms, move_grace_ms, sent_copy_deadline, DRAFT_CHANGED,
    FOUND_MAILED, HELD_BY_DRAFT, HELD_TRIES, MAILED_ELSEWHERE, MESSAGE_TOO_LARGE, NO_FILES_LEFT,
    RIVAL_SETTLE_MS, SPLIT_AGAIN, UNCONFIRMED_ADVICE,
};

mod messages;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Answers in a row that report no progress before a session counts as misbehaving.
const MAX_STALLS: u32 = 3;
/// Backoff after failures: first wait, and the most it grows to.
const BACKOFF_BASE_MS: u64 = 1_000;
const BACKOFF_CAP_MS: u64 = 60_000;
/// An attempt count whose backoff is the cap (kept when an entry must keep trying).
const BACKOFF_PATIENT_ATTEMPTS: u32 = 16;

/// Error code of an entry canceled because a newer version of its file took its place: such an
/// entry comes back if its bytes do.
pub const SUPERSEDED: &str = "superseded";
/// Error code of an entry whose file could not be read: retried when it can be.
pub const UNREADABLE: &str = "unreadable";
/// Error code of a version refused because its file has more than one name (a hard link) and
/// its mapping does not allow them: tried again when the file changes (a link made or removed
/// moves its ctime), or the config allows them.
pub const HARD_LINK: &str = "hardLink";
/// Error code of a retried file that could not be taken back from `failed_dir`.
pub const FAILED_DIR_REFUSED: &str = "failedDirRefused";
/// Graph's code for an item that is not there (deleted).
pub const ITEM_NOT_FOUND: &str = "ErrorItemNotFound";

/// (mailbox, item id), the mailbox lower-cased.
type ItemKey = (String, String);
/// (mailbox, item id, attachment name), lower-cased where Graph does not care.
type NameKey = (String, String, String);
/// A done version on an item: (seq, entry id, attachment id, target).
type DoneRef = (u64, String, String, Target);
/// What this agent has under one name on one item: (SHA-256, attachment id, entry).
type Holders = Vec<(String, String, String)>;

/// The newest version of one path, and the version whose attachment is on the item.
/// (Kept small: start-up makes one per path of the ledger, 100,000 and more.)
#[derive(Debug, Clone, Default)]
struct PathInfo {
    newest: Option<Brief>,
    /// The `done` versions not yet replaced, on whichever item: (seq, id, attachment id,
    /// target). Nearly always one.
    done: Vec<DoneRef>,
    /// The owners of those of `done` whose owner is known (entry id, uid): a version replaces
    /// only an earlier one of its own owner's.
    owners: Vec<(String, u32)>,
    /// The versions of the path in `active` (a new version finds those it supersedes here,
    /// not by a walk over every active entry).
    working: Vec<String>,
}

/// Whether two targets name one item (Graph does not care about the mailbox's case).
fn same_item(a: &Target, b: &Target) -> bool {
    a.item_id == b.item_id && (a.user == b.user || a.user.to_lowercase() == b.user.to_lowercase())
}

#[derive(Debug, Clone)]
struct Brief {
    id: String,
    seq: u64,
    state: State,
    file: FileStat,
    sha256: Option<String>,
    error_code: Option<String>,
}

/// An entry with work left, and what only this run knows of it.
#[derive(Debug, Clone)]
struct Active {
    rec: Record,
    /// A step is in flight; its outcome has not come back.
    busy: bool,
    /// Not before this time (backoff, Retry-After).
    wait_until: Option<Time>,
    /// The next byte the upload session wants, as the server last said.
    next_offset: Option<u64>,
    /// The item was looked at and did not hold this version (`if_exists = "skip"`).
    looked: bool,
    /// The POST was refused as too large: use a session.
    post_too_large: bool,
    /// Answers in a row with no progress.
    stalls: u32,
    /// The item the look in flight is about (its answer speaks for that item only).
    look_target: Option<Target>,
    /// Holds one of its mailbox's `concurrency` places.
    slot: bool,
    /// The mailbox that place is in (the entry's item may change while it holds it: a file of
    /// a message whose draft is made, a config edit).
    slot_mb: String,
    /// Waiting in its mailbox's ready queue.
    queued: bool,
    /// A timer is set for it at this time.
    timer: Option<Time>,
    /// Where the search of the mailbox for its key stands (a file of a mailing mapping).
    key: KeyLook,
    /// Its move to `failed_dir` was asked in this run (done or refused: not asked again).
    failed_dir_tried: bool,
    /// `retry` came while it was failed (or canceled) and still at work (its move to
    /// `failed_dir`, its session's delete): retried once that is answered.
    retry_when_moved: bool,
}

/// The search of the mailbox for a mailing file's key, before it may be put in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum KeyLook {
    /// Not searched in this run (a restart searches again: a search is only a question).
    #[default]
    Unsearched,
    /// Found in neither Sent Items nor Drafts: it may be mailed.
    Clear,
    /// Found on a draft this many times in a row: searched again later.
    Held(u32),
    /// Held this many times, then found in neither folder: the draft that held it may be in
    /// Exchange's move to Sent Items (sent, in the Outbox, not yet a sent copy), so it is
    /// searched once more after the move has surely had time before it may be mailed.
    Vanished(u32),
}

impl Active {
    /// The item its request in flight (or else its record) is about.
    fn item(&self) -> Option<&Target> {
        self.look_target.as_ref().or(self.rec.target.as_ref())
    }
}

/// The step an entry takes next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Look {
        recent_ok: bool,
    },
    Post,
    CreateSession,
    Put {
        offset: u64,
    },
    Ask,
    DeleteSession,
    DeleteAttachment {
        attachment_id: String,
    },
    After,
    /// Move the failed file into its mapping's `failed_dir`.
    ToFailedDir,
    /// Take the retried file back from `failed_dir` before anything else.
    FromFailedDir,
    /// Search the mailbox for the key of a file of a mailing mapping before it is put in a
    /// message (SPEC: the mailbox is the record of last resort).
    FindKey,
    /// Nothing until something else moves (an entry waiting for its message's draft, or for
    /// its message to be sent before its after-action).
    Idle,
    /// A transition with no request (cancel with nothing in flight, a finished entry).
    Local,
    /// Finished: leaves the active set.
    Finished,
}

/// A report of the watcher about a path waiting for its hash (see `Machine::held`).
#[derive(Debug, Clone)]
enum Held {
    Observed {
        mapping: String,
        stat: FileStat,
        at: Time,
    },
    Closed {
        at: Time,
    },
}

/// The most reports kept of one path while it is hashed (a writer's last ones count).
const HELD_MAX: usize = 64;

/// What the core knows and decides. See the module doc.
#[derive(Debug)]
pub struct Machine {
    now: Time,
    /// When this run started (`Input::Start`): see [`Machine::counted`].
    started: Time,
    /// Messages this process made and hands in at its start (`outbox mail`'s): no earlier run
    /// can have made a draft of theirs (see `start_messages`).
    made_here: BTreeSet<String>,
    policy: Policy,
    mappings: BTreeMap<String, MappingRule>,
    unavailable: BTreeSet<String>,
    settler: Settler,
    // Paths are kept by their bytes (`OsString` orders by bytes, `PathBuf` component by
    // component, which with 100,000 files was most of start-up's time).
    stats_out: BTreeSet<OsString>,
    /// Paths reported gone while a version of theirs had work left, and their mapping: the
    /// report is confirmed by a `Stat` before the version is canceled (it may be older than
    /// the agent's own move of the file back from `failed_dir`).
    gone_checks: BTreeMap<OsString, String>,
    hash_queue: HashQueue,
    hash_queued: BTreeSet<OsString>,
    hashing: BTreeSet<OsString>,
    /// What each path being hashed was: its mapping and the stat that settled.
    hash_info: BTreeMap<OsString, (String, FileStat)>,
    /// What the watcher reported of a path while it waited for its hash or was hashed, in
    /// order: given to the settler once the hash answers (see [`Machine::replay_held`]).
    held: BTreeMap<OsString, Vec<Held>>,
    active: BTreeMap<String, Active>,
    /// Per mapping, per path: its newest version and its done ones.
    paths: BTreeMap<String, BTreeMap<OsString, PathInfo>>,
    /// What this agent has on each item, by (mailbox, item, name): (SHA-256, attachment id,
    /// entry) of every done, not replaced, record. A first look (`if_exists = "skip"`) that this
    /// answers needs no request (and no listing that may lag); an attachment two entries share
    /// (one name, the same bytes) is never deleted for one of them.
    /// Per item, per name (lower-cased); the item's key is not repeated per name.
    attached: BTreeMap<ItemKey, BTreeMap<String, Holders>>,
    /// Per mailbox: entries ready to take a step, in order.
    ready: BTreeMap<String, VecDeque<String>>,
    /// Per mailbox: places taken.
    slots: BTreeMap<String, usize>,
    /// (item, name) -> the entry that holds it: one upload per name per item at a time.
    name_locks: BTreeMap<NameKey, String>,
    /// Entries waiting for a name lock.
    lock_waiters: BTreeMap<NameKey, VecDeque<String>>,
    timers: BTreeSet<(Time, String)>,
    /// Uploads pause until then: a sign-in problem.
    sign_in: Option<(Time, Failure)>,
    next_seq: u64,
    ids_made: u64,
    wake_asked: Option<Time>,
    /// Failed or rejected during this run (for `run --once`).
    pub failed_this_run: u32,
    /// Messages not finished with (and finished ones whose files wait on them).
    messages: BTreeMap<String, messages::ActiveMessage>,
    /// Entry -> its message.
    member_of: BTreeMap<String, String>,
    /// Per mailing mapping: entries waiting to be put in a message, when the batch closes, and
    /// when it opened (it closes `batch_max_wait` after that at the latest).
    collecting: BTreeMap<String, (Vec<String>, Time, Time)>,
    /// Per mailbox: when recent sends started (pacing inside Exchange's sending limit).
    sent_times: BTreeMap<String, VecDeque<Time>>,
    /// Per mailing mapping: when its recent messages were made (its `max_messages` cap), and
    /// until when files wait because the cap is reached.
    made_times: BTreeMap<String, VecDeque<Time>>,
    capped: BTreeMap<String, Time>,
    /// Per mapping, a message size Graph refused in this run, less one: the tenant's limit is
    /// below it, so messages are made under it as well as under `max_message_size`.
    refused_sizes: BTreeMap<String, u64>,
    /// Messages that may have a step to take.
    msg_ready: BTreeSet<String>,
    msg_timers: BTreeSet<(Time, String)>,
}

fn item_key(t: &Target) -> ItemKey {
    (t.user.to_lowercase(), t.item_id.clone())
}

fn lock_key(t: &Target, name: &str) -> NameKey {
    (
        t.user.to_lowercase(),
        t.item_id.clone(),
        name.to_lowercase(),
    )
}

/// POST when the file is under 3 MiB and its JSON body fits Graph's 4 MiB request limit (long
/// names push it over), or when it is too small for a session.
pub fn uses_post(size: u64, name: &str) -> bool {
    if size < MIN_SESSION {
        return true;
    }
    size < SESSION_THRESHOLD && post_body_len(size, name) <= MAX_REQUEST_BODY
}

/// Length of the POST body (base64 plus the JSON around it, the name escaped).
pub fn post_body_len(size: u64, name: &str) -> u64 {
    let esc = |s: &str| {
        serde_json::to_string(s)
            .map(|x| x.len() as u64)
            .unwrap_or(s.len() as u64 * 6 + 2)
    };
    let content_type = mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_owned();
    let fixed = r##"{"@odata.type":"#microsoft.graph.fileAttachment","name":,"contentType":,"contentBytes":""}"##.len() as u64;
    fixed + esc(name) + esc(&content_type) + size.div_ceil(3) * 4
}

/// Exponential backoff with jitter derived from the entry and attempt (deterministic, so a
/// simulation replays exactly).
pub fn backoff_ms(id: &str, attempt: u32) -> u64 {
    let exp = BACKOFF_BASE_MS.saturating_mul(1u64 << attempt.min(16));
    let cap = exp.min(BACKOFF_CAP_MS);
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes().chain(attempt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    cap / 2 + h % (cap / 2 + 1)
}

impl Machine {
    pub fn new(mappings: Vec<MappingRule>, policy: Policy) -> Machine {
        let mut settler = Settler::new(
            policy.settle_ms,
            policy.settle_after_close_ms,
            policy.max_settle_ms,
        );
        settler.set_close_not_final(
            mappings
                .iter()
                .filter(|m| m.mail.is_some())
                .map(|m| m.name.clone()),
        );
        Machine {
            now: Time(0),
            started: Time(0),
            made_here: BTreeSet::new(),
            mappings: mappings.into_iter().map(|m| (m.name.clone(), m)).collect(),
            policy,
            unavailable: BTreeSet::new(),
            settler,
            stats_out: BTreeSet::new(),
            gone_checks: BTreeMap::new(),
            hash_queue: HashQueue::default(),
            hash_queued: BTreeSet::new(),
            held: BTreeMap::new(),
            hashing: BTreeSet::new(),
            hash_info: BTreeMap::new(),
            active: BTreeMap::new(),
            paths: BTreeMap::new(),
            attached: BTreeMap::new(),
            ready: BTreeMap::new(),
            slots: BTreeMap::new(),
            name_locks: BTreeMap::new(),
            lock_waiters: BTreeMap::new(),
            timers: BTreeSet::new(),
            sign_in: None,
            next_seq: 1,
            ids_made: 0,
            wake_asked: None,
            failed_this_run: 0,
            messages: BTreeMap::new(),
            member_of: BTreeMap::new(),
            collecting: BTreeMap::new(),
            sent_times: BTreeMap::new(),
            made_times: BTreeMap::new(),
            refused_sizes: BTreeMap::new(),
            capped: BTreeMap::new(),
            msg_ready: BTreeSet::new(),
            msg_timers: BTreeSet::new(),
        }
    }

    // ---- what the agent and status may ask -------------------------------------------------

    /// Nothing settling, hashing or uploading, and no entry with work left.
    pub fn quiescent(&self) -> bool {
        self.settler.is_empty()
            && self.hash_queue.is_empty()
            && self.hashing.is_empty()
            && self.stats_out.is_empty()
            && self.active.is_empty()
            && self.messages_quiet()
    }

    /// Uploads are paused for sign-in (until, why).
    pub fn sign_in_pause(&self) -> Option<(Time, &Failure)> {
        self.sign_in.as_ref().map(|(t, f)| (*t, f))
    }

    /// Every entry with work left waits only for sign-in, for a mapped folder to come back,
    /// or for `retry` of its message (failed or unconfirmed): `run --once` can stop.
    pub fn only_blocked(&self) -> bool {
        self.settler.is_empty()
            && self.hash_queue.is_empty()
            && self.hashing.is_empty()
            && self.stats_out.is_empty()
            && self.active.values().all(|a| {
                !a.busy
                    && (self.sign_in.is_some()
                        || self.unavailable.contains(&a.rec.mapping)
                        || self.waits_for_retry(&a.rec)
                        || (a.rec.message.is_none() && self.capped_until(&a.rec.mapping).is_some()))
            })
            && (self.sign_in.is_some() || self.messages_quiet_but_capped())
    }

    pub fn settler(&self) -> &Settler {
        &self.settler
    }

    /// Paths queued for hashing or being hashed.
    pub fn hashing(&self) -> impl Iterator<Item = &Path> + '_ {
        self.hash_queue
            .paths()
            .chain(self.hashing.iter().map(Path::new))
    }

    /// The records with work left, and when each waits until.
    pub fn active(&self) -> impl Iterator<Item = (&Record, Option<Time>)> + '_ {
        self.active.values().map(|a| (&a.rec, a.wait_until))
    }

    pub fn record(&self, id: &str) -> Option<&Record> {
        self.active.get(id).map(|a| &a.rec)
    }

    /// A one-line-per-entry account of what the machine holds (for the simulator's reports).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "settling={} hash_queue={} hashing={} stats_out={} sign_in={:?} slots={:?} locks={:?} waiters={:?} ready={:?} timers={:?}\n",
            self.settler.len(),
            self.hash_queue.len(),
            self.hashing.len(),
            self.stats_out.len(),
            self.sign_in,
            self.slots,
            self.name_locks,
            self.lock_waiters,
            self.ready,
            self.timers
        );
        for a in self.active.values() {
            s += &format!(
                "  {} {:?} busy={} wait={:?} slot={} queued={} next={:?} may_exist={} cancel={} session={:?} step={:?}\n",
                a.rec.id,
                a.rec.state,
                a.busy,
                a.wait_until,
                a.slot,
                a.queued,
                a.next_offset,
                a.rec.may_exist,
                a.rec.cancel_requested,
                a.rec.session,
                self.next_step(a)
            );
        }
        for m in self.messages.values() {
            s += &format!(
                "  message {} {:?} busy={} wait={:?} files={:?} error={:?}\n",
                m.rec.id,
                m.rec.state,
                m.busy,
                m.wait_until,
                m.rec.files,
                m.rec.error.as_ref().map(|e| &e.code)
            );
        }
        s
    }

    /// Message `id`, handed in at the start, was made by this process now (`outbox mail`), not
    /// read from a ledger: nothing of it can exist in the mailbox yet, so it is not looked for
    /// before its draft is made.
    pub fn made_here(&mut self, id: &str) {
        self.made_here.insert(id.to_owned());
    }

    /// A time on record, as a wait counts from it: one of an earlier run counts from this
    /// run's start. The wall clock may have been stepped between the runs (a reboot's NTP
    /// sync, a laptop's clock set by hand): forward, a persisted "not before every request
    /// that may have made it is surely over" ended early (seed 1798, with the world's clock
    /// steps: a POST whose 503 came after its effect was looked for 7 s later by the world's
    /// time, not seen, and attached twice); backward, a time ahead of now waited for the step.
    /// (A time of this run is within [`started`, `now`]; one outside it is an earlier run's.)
    fn counted(&self, t: Time) -> Time {
        if t > self.now {
            self.started
        } else {
            t.max(self.started)
        }
    }

    // ---- the one entry point ----------------------------------------------------------------

    pub fn handle(&mut self, now: Time, input: Input) -> Vec<Action> {
        if now > self.now {
            self.now = now;
        }
        let mut out = Vec::new();
        match input {
            Input::Start {
                records,
                with_url,
                messages,
            } => {
                self.started = self.now;
                self.start_messages(messages);
                self.start(records, with_url, &mut out);
            }
            Input::Observed {
                mapping,
                path,
                stat,
            } => {
                // A file seen as its newest version was recorded has nothing to settle (start-up
                // sees every done file of the folders so; a change moves its ctime, and is seen).
                if self.hash_queued.contains(path.as_os_str()) {
                    // Its hash answers first; what the writer did meanwhile is kept for then.
                    let at = self.now;
                    self.hold(&path, Held::Observed { mapping, stat, at });
                } else if self.mappings.contains_key(&mapping)
                    && (self.settler.is_settling(&path) || !self.nothing_new(&mapping, &path, stat))
                {
                    self.settler.observe(&mapping, &path, stat, self.now);
                }
            }
            Input::Closed { path } => {
                if self.hash_queued.contains(path.as_os_str()) {
                    let at = self.now;
                    self.hold(&path, Held::Closed { at });
                } else {
                    self.settler.closed(&path, self.now);
                }
            }
            Input::Gone { mapping, path } => self.gone(&mapping, &path, &mut out),
            Input::FolderUnavailable { mapping } => {
                self.settler.forget_mapping(&mapping);
                self.unavailable.insert(mapping);
            }
            Input::FolderAvailable { mapping } => {
                if self.unavailable.remove(&mapping) {
                    let ids: Vec<String> = self
                        .active
                        .values()
                        .filter(|a| a.rec.mapping == mapping)
                        .map(|a| a.rec.id.clone())
                        .collect();
                    for id in ids {
                        self.make_ready(&id);
                    }
                }
            }
            Input::Stat { path, stat } => {
                self.stats_out.remove(path.as_os_str());
                if let Some(mapping) = self.gone_checks.remove(path.as_os_str()) {
                    self.gone_confirmed(&mapping, &path, stat, &mut out);
                }
                match self.settler.confirm(&path, stat, self.now) {
                    Some(Settled::Ready {
                        mapping,
                        path,
                        stat,
                    }) => self.settled(mapping, path, stat, &mut out),
                    Some(Settled::StillChanging { path }) => {
                        out.push(Action::Notify(Note::StillChanging { path }))
                    }
                    None => {}
                }
            }
            Input::Hashed { path, result } => self.hashed(path, result, &mut out),
            Input::Outcome { id, outcome } => match outcome {
                Outcome::CreateDraft(_)
                | Outcome::Find(..)
                | Outcome::Send(_)
                | Outcome::ListDraft(_)
                | Outcome::StampKeys(_)
                | Outcome::Rivals(_)
                | Outcome::DeleteDraft(_)
                | Outcome::SetLetter(_) => self.message_outcome(&id, outcome, &mut out),
                Outcome::DeleteAttachment(d) if self.messages.contains_key(&id) => {
                    self.message_outcome(&id, Outcome::DeleteAttachment(d), &mut out)
                }
                outcome => {
                    self.outcome(&id, outcome, &mut out);
                    self.member_touched(&id);
                }
            },
            Input::Tick => {
                self.tick();
                self.tick_messages();
            }
            Input::Cancel { id } => {
                self.cancel(&id, &mut out);
                self.member_touched(&id);
            }
            Input::Retry { records } => self.retry(records, &mut out),
            Input::RetryMessage { message, records } => {
                self.retry_message(message, records, &mut out)
            }
            Input::Pruned { ids } => self.forget_pruned(&ids),
            Input::Config { mappings, policy } => {
                self.settler.set_timing(
                    policy.settle_ms,
                    policy.settle_after_close_ms,
                    policy.max_settle_ms,
                );
                self.policy = policy;
                self.settler.set_close_not_final(
                    mappings
                        .iter()
                        .filter(|m| m.mail.is_some())
                        .map(|m| m.name.clone()),
                );
                self.mappings = mappings.into_iter().map(|m| (m.name.clone(), m)).collect();
                let ids: Vec<String> = self.active.keys().cloned().collect();
                for id in ids {
                    // An item may have changed: what a look found on the old one says nothing.
                    if let Some(a) = self.active.get_mut(&id) {
                        a.looked = false;
                    }
                    self.make_ready(&id);
                }
                let mids: Vec<String> = self.messages.keys().cloned().collect();
                self.msg_ready.extend(mids);
                // A mapping that mails now: its files not yet in a message wait for one.
                let waiting: Vec<String> = self
                    .active
                    .values()
                    .filter(|a| {
                        a.rec.message.is_none()
                            && !a.rec.state.is_terminal()
                            && !a.rec.may_exist
                            && a.rec.session.is_none()
                            && self.mail_rule(&a.rec.mapping).is_some()
                    })
                    .map(|a| a.rec.id.clone())
                    .collect();
                for id in waiting {
                    self.collect(&id);
                }
            }
        }
        self.pump(&mut out);
        out
    }

    /// Failed or canceled records back to pending (`retry`, or a revived version), by the one
    /// rule of [`Record::retried`]. A done record (the executor sends one only when `retry`
    /// names it) redoes what went wrong: its failed after-action, or its attachment.
    fn retry(&mut self, records: Vec<Record>, out: &mut Vec<Action>) {
        for mut rec in records {
            if rec.resend && rec.state == State::Done {
                self.resend(rec, out);
                continue;
            }
            if self.active.contains_key(&rec.id) {
                self.retry_after_move(&rec.id);
                continue;
            }
            match rec.retried(self.now) {
                Retried::Nothing => {}
                Retried::After => {
                    out.push(Action::Persist(rec.clone()));
                    self.activate(rec);
                }
                Retried::Queued => {
                    out.push(Action::Persist(rec.clone()));
                    self.index(&rec);
                    let id = rec.id.clone();
                    self.activate(rec);
                    self.retried_member(&id, out);
                }
            }
        }
    }

    // ---- start-up ---------------------------------------------------------------------------

    fn start(&mut self, mut records: Vec<Record>, with_url: Vec<String>, out: &mut Vec<Action>) {
        // By seq, then id (entries migrated from before seqs all have 0).
        records.sort_unstable_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.id.cmp(&b.id)));
        // What start-up must tell messages about: only records of mailing mappings (a ledger
        // of 100,000 done files of ordinary mappings is not copied).
        // (As start-up leaves them: a session whose URL was lost is dropped here, and a
        // message that kept the record as read waited for ever on a session no longer there:
        // seed 518576.)
        let mut seen: Vec<Record> = Vec::new();
        let urls: BTreeSet<String> = with_url.into_iter().collect();
        if !urls.is_empty() {
            let known: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
            for id in &urls {
                if !known.contains(id.as_str()) {
                    out.push(Action::ForgetUrl { id: id.clone() });
                }
            }
        }
        for mut rec in records {
            self.next_seq = self.next_seq.max(rec.seq + 1);
            let has_url = urls.contains(&rec.id);
            let mut changed = false;
            match (rec.session.is_some(), has_url) {
                (true, false) => {
                    // The URL was lost: the session cannot be reached; it expires on its own.
                    rec.session = None;
                    changed = true;
                }
                (false, true) if rec.target.is_none() => {
                    // A URL its record no longer holds (the session was dropped with its
                    // draft, the record written and the URL's forget cut off by a crash): it
                    // leads nowhere the record is bound to. Adopting it would give a file of a
                    // message with no draft yet a session on no item (seed 1473: its steps
                    // failed for ever, at start-up).
                    out.push(Action::ForgetUrl { id: rec.id.clone() });
                }
                (false, true) => {
                    // Saved before its record: no chunk was sent (each is recorded first).
                    rec.session = Some(SessionMark::default());
                    changed = true;
                }
                _ => {}
            }
            // Its move into `failed_dir` asked, unanswered: asked again (`has_work`), and the
            // executor finds the file there if it went. Unless it cannot be asked: the mapping
            // has no `failed_dir` now, or the entry was retried since (its file was at its path:
            // `retry` refuses one that is not).
            if rec.failed_dir_asked
                && (!matches!(rec.state, State::Failed | State::Rejected)
                    || !self.policy.failed_dirs.contains(&rec.mapping)
                    || rec.file.has_left())
            {
                rec.failed_dir_asked = false;
                changed = true;
            }
            // A failed entry whose mapping now names another item goes to the fixed item.
            // (Not a mailing mapping's: its files have no item of their own, only their
            // message's draft. Nor one whose move into `failed_dir` is in doubt: it may be
            // there; once it is on record there, `retry` takes it back.)
            if rec.state == State::Failed
                && !rec.may_exist
                && rec.session.is_none()
                && rec.garbage.is_empty()
                && self.mail_rule(&rec.mapping).is_none()
                && rec.message.is_none()
                && !rec.failed_dir_asked
            {
                if let (Some(t), Some(m)) = (&rec.target, self.mappings.get(&rec.mapping)) {
                    if *t != m.target && rec.error.as_ref().is_some_and(|e| e.code != UNREADABLE) {
                        rec.state = State::Pending;
                        rec.target = None;
                        rec.error = None;
                        rec.attempts = 0;
                        rec.restarts = 0;
                        changed = true;
                    }
                }
            }
            if changed {
                rec.updated_at = self.now;
                out.push(Action::Persist(rec.clone()));
            }
            if rec.message.is_some() || self.mail_rule(&rec.mapping).is_some() {
                seen.push(rec.clone());
            }
            self.index(&rec);
            if has_work(&rec) {
                // Something of it may be on its item: its name there is taken from the start.
                let owns = ((rec.may_exist || rec.session.is_some()) && !rec.state.is_terminal())
                    || !rec.replaces.is_empty()
                    || !rec.garbage.is_empty();
                let id = rec.id.clone();
                let target = self.target_of(&rec);
                self.activate(rec);
                if let (true, Some(t)) = (owns, target) {
                    self.take_lock(&id, &t);
                }
            }
        }
        self.start_members(&seen);
        self.start_gave_way(&seen, out);
        // `retry --resend` asked while no agent ran.
        let resend: Vec<Record> = seen
            .iter()
            .filter(|r| r.resend && r.state == State::Done)
            .cloned()
            .collect();
        for r in resend {
            self.resend(r, out);
        }
        // A `retry` of a message writes the message first, then its files: after a crash in
        // between, the message goes on while its failed files still say failed. They are
        // retried as that retry asked (otherwise a failed file fails its message in the same
        // step: a message at work holds no failed file but in that window).
        let revive: Vec<Record> = seen
            .into_iter()
            .filter(|r| r.state == State::Failed && !self.active.contains_key(&r.id))
            .filter(|r| {
                self.member_of
                    .get(&r.id)
                    .and_then(|m| self.messages.get(m))
                    .is_some_and(|m| {
                        m.rec.files.contains(&r.id)
                            && matches!(
                                m.rec.state,
                                MessageState::Drafting
                                    | MessageState::Attaching
                                    | MessageState::Sending
                            )
                    })
            })
            .collect();
        if !revive.is_empty() {
            self.retry(revive, out);
        }
    }

    // ---- the path index ---------------------------------------------------------------------

    fn index(&mut self, rec: &Record) {
        let by_path = match self.paths.get_mut(&rec.mapping) {
            Some(m) => m,
            None => self.paths.entry(rec.mapping.clone()).or_default(),
        };
        let info = match by_path.get_mut(rec.path.as_os_str()) {
            Some(i) => i,
            None => by_path
                .entry(rec.path.clone().into_os_string())
                .or_default(),
        };
        if info.newest.as_ref().is_none_or(|b| b.seq <= rec.seq) {
            info.newest = Some(Brief {
                id: rec.id.clone(),
                seq: rec.seq,
                state: rec.state,
                file: rec.file,
                sha256: rec.sha256.clone(),
                error_code: rec.error.as_ref().map(|e| e.code.clone()),
            });
        }
        if rec.state == State::Done && !rec.replaced {
            if let (Some(att), Some(t)) = (&rec.attachment_id, &rec.target) {
                let list = &mut info.done;
                // A re-attached version is on the item under its new id.
                list.retain(|(_, did, a, dt)| *did != rec.id || a == att || !same_item(dt, t));
                if !list
                    .iter()
                    .any(|(_, did, _, dt)| *did == rec.id && same_item(dt, t))
                {
                    list.push((rec.seq, rec.id.clone(), att.clone(), t.clone()));
                }
                if let Some(uid) = rec.file.owner {
                    if !info.owners.iter().any(|(oid, _)| *oid == rec.id) {
                        info.owners.push((rec.id.clone(), uid));
                    }
                }
            }
        }
        if let Some(t) = &rec.target {
            let holds = rec.state == State::Done && !rec.replaced;
            let held = match (&rec.attachment_id, &rec.sha256) {
                (Some(att), Some(sha)) if holds => Some((sha, att)),
                _ => None,
            };
            let item = item_key(t);
            let name = rec.name.to_lowercase();
            if held.is_none() && !self.attached.contains_key(&item) {
                return;
            }
            let names = self.attached.entry(item.clone()).or_default();
            let list = names.entry(name.clone()).or_default();
            list.retain(|(_, _, e)| *e != rec.id);
            if let Some((sha, att)) = held {
                list.push((sha.to_lowercase(), att.clone(), rec.id.clone()));
            }
            if list.is_empty() {
                names.remove(&name);
                if names.is_empty() {
                    self.attached.remove(&item);
                }
            }
        }
    }

    /// An attachment this agent made or found on `rec`'s item with its name and bytes; with
    /// `same_path`, only one of a version of `rec`'s own path (`if_exists = "attach"`: a
    /// version already attached, A after B after A with `on_change = "add"`, is attached once).
    fn known_attachment(&self, rec: &Record, same_path: bool) -> Option<String> {
        let t = self.target_of(rec)?;
        let of_path = |e: &str| {
            !same_path
                || self
                    .path_info(&rec.mapping, &rec.path)
                    .is_some_and(|i| i.done.iter().any(|(_, did, ..)| did == e))
        };
        let sha = rec.sha256.as_deref()?.to_lowercase();
        // Not one that is being deleted (an older version's, on its way out).
        let going = |att: &str| {
            self.active.values().any(|a| {
                a.rec.replaces.iter().any(|r| r.attachment_id == att)
                    || a.rec.garbage.iter().any(|g| g == att)
            })
        };
        self.attached
            .get(&item_key(&t))?
            .get(&rec.name.to_lowercase())?
            .iter()
            .find(|(s, a, e)| *s == sha && *e != rec.id && !going(a) && of_path(e))
            .map(|(_, a, _)| a.clone())
    }

    /// Whether an entry other than `entry` holds attachment `att`.
    fn shared(&self, att: &str, entry: &str) -> bool {
        self.attached
            .values()
            .flat_map(|names| names.values().flatten())
            .any(|(_, a, e)| a == att && e != entry)
    }

    fn path_info(&self, mapping: &str, path: &Path) -> Option<&PathInfo> {
        self.paths.get(mapping)?.get(path.as_os_str())
    }

    fn path_info_mut(&mut self, mapping: &str, path: &Path) -> Option<&mut PathInfo> {
        self.paths.get_mut(mapping)?.get_mut(path.as_os_str())
    }

    /// What the index knows of the newest version of `path`'s file (its record is updated
    /// apart).
    fn set_newest_file(&mut self, mapping: &str, path: &Path, file: FileStat) {
        if let Some(n) = self
            .path_info_mut(mapping, path)
            .and_then(|i| i.newest.as_mut())
        {
            n.file = file;
        }
    }

    /// Whether `path` at `stat` is the newest version recorded for it (whatever its state): not
    /// a new file. A paused mapping leaves only new files waiting in its folder.
    pub fn recorded(&self, mapping: &str, path: &Path, stat: FileStat) -> bool {
        self.newest(mapping, path).is_some_and(|b| b.file == stat)
    }

    fn newest(&self, mapping: &str, path: &Path) -> Option<&Brief> {
        self.path_info(mapping, path)
            .and_then(|i| i.newest.as_ref())
    }

    // ---- files ------------------------------------------------------------------------------

    fn gone(&mut self, mapping: &str, path: &Path, out: &mut Vec<Action>) {
        // A path still settling stays: its next check stats it, and a report of its going
        // that arrives after a new file took the name (a delete, then a rename in) loses
        // nothing.
        if self.unavailable.contains(mapping) {
            return;
        }
        let Some(b) = self.newest(mapping, path) else {
            return;
        };
        let id = b.id.clone();
        if b.state == State::Done && self.mail_rule(mapping).is_some() {
            // A mailed file left the folder: the same bytes there later are a new drop.
            self.file_left(mapping, path, out);
            return;
        }
        // (A retried file known to be in `failed_dir` is not at its path: its move back says
        // whether it can come, never a report that the path is empty.)
        if !self
            .active
            .get(&id)
            .is_some_and(|a| cancels_if_gone(&a.rec))
        {
            return;
        }
        // The report is of a look made a moment ago: the agent may have moved the file back
        // from `failed_dir` since (its own move out is reported gone after the move back was
        // answered). The path is looked at again before the version is canceled.
        let key = path.as_os_str().to_os_string();
        self.gone_checks.insert(key.clone(), mapping.to_string());
        if self.stats_out.insert(key) {
            out.push(Action::Stat {
                path: path.to_path_buf(),
            });
        }
    }

    /// A path reported gone, looked at again: its version with work left is canceled unless
    /// its file is still there.
    fn gone_confirmed(
        &mut self,
        mapping: &str,
        path: &Path,
        stat: Option<FileStat>,
        out: &mut Vec<Action>,
    ) {
        if self.unavailable.contains(mapping) {
            return;
        }
        let Some(b) = self.newest(mapping, path) else {
            return;
        };
        let id = b.id.clone();
        if let Some(a) = self.active.get_mut(&id) {
            let there = stat.is_some_and(|s| s.dev == a.rec.file.dev && s.ino == a.rec.file.ino);
            if !there && cancels_if_gone(&a.rec) {
                a.rec.cancel_requested = true;
                a.rec.error = Some(Failure::new(
                    "fileDeleted",
                    "the file was deleted before it was attached",
                ));
                a.rec.updated_at = self.now;
                out.push(Action::Persist(a.rec.clone()));
                self.make_ready(&id);
            }
        }
    }

    /// Entries that left the ledger (pruned: finished, their files gone): out of the path index,
    /// so a file at such a path later is a new file.
    fn forget_pruned(&mut self, ids: &[String]) {
        let gone: BTreeSet<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| !self.active.contains_key(*id))
            .collect();
        if gone.is_empty() {
            return;
        }
        for by_path in self.paths.values_mut() {
            by_path.retain(|_, info| {
                if info
                    .newest
                    .as_ref()
                    .is_some_and(|b| gone.contains(b.id.as_str()))
                {
                    info.newest = None;
                }
                info.done.retain(|d| !gone.contains(d.1.as_str()));
                info.owners.retain(|(id, _)| !gone.contains(id.as_str()));
                info.newest.is_some() || !info.done.is_empty() || !info.working.is_empty()
            });
        }
        // (What is on each item stays known: a pruned entry's attachment is still there, and a
        // first look under `if_exists = "skip"` must still find it: seed 14667, a second copy
        // of the same name and bytes on the item.)
    }

    /// The newest version of `path` (done, in a mailing folder) says its file left the folder.
    fn file_left(&mut self, mapping: &str, path: &Path, out: &mut Vec<Action>) {
        let Some(b) = self.newest(mapping, path) else {
            return;
        };
        if b.file.has_left() {
            return;
        }
        let (id, file) = (b.id.clone(), b.file.left());
        self.set_newest_file(mapping, path, file);
        if let Some(a) = self.active.get_mut(&id) {
            a.rec.file = file;
            self.persist(&id, out);
        } else {
            out.push(Action::UpdateFile {
                id,
                file,
                revive: false,
            });
        }
    }

    /// Whether `path` at `stat` is its newest recorded version with nothing left to do on
    /// seeing it: the same file, time and size, hashed, and no after-action waiting (it runs
    /// only on bytes confirmed again), not unreadable before (it may read now), not canceled by
    /// the agent (its bytes were found not to be the hashed ones, or its file was swapped: hash
    /// again, it may come back).
    fn nothing_new(&self, mapping: &str, path: &Path, stat: FileStat) -> bool {
        let Some(b) = self.newest(mapping, path) else {
            return false;
        };
        if b.file != stat {
            return false;
        }
        if b.sha256.is_none() {
            // Refused by its size, unread: the same stat is the same refusal (and, canceled by
            // the user since, stays cleared).
            // Over a mailing mapping's message limit, the same: while the limit (which a
            // reload may raise) still refuses it.
            let code = b.error_code.as_deref();
            let over_message = self.over_message_limit(mapping, path, stat.size).is_some();
            return (b.state == State::Rejected && code == Some(TOO_LARGE))
                || (b.state == State::Failed && code == Some(MESSAGE_TOO_LARGE) && over_message)
                || (b.state == State::Canceled
                    && code == Some("canceled")
                    && (stat.size > MAX_ATTACHMENT || over_message));
        }
        let after_pending = self
            .active
            .get(&b.id)
            .is_some_and(|a| a.rec.state == State::Done && !a.rec.after_done);
        let retry_unreadable = b.error_code.as_deref() == Some(UNREADABLE);
        let rewritten = b.state == State::Canceled && b.error_code.as_deref() != Some("canceled");
        !after_pending && !retry_unreadable && !rewritten
    }

    fn settled(&mut self, mapping: String, path: PathBuf, stat: FileStat, out: &mut Vec<Action>) {
        if self.nothing_new(&mapping, &path, stat) {
            return;
        }
        if stat.size > MAX_ATTACHMENT {
            // Refused by its size before a byte is read: a sparse 10 GiB file costs a stat.
            let mut rec = self.new_record(&mapping, &path, stat, None);
            rec.state = State::Rejected;
            rec.error = Some(too_large(&path, stat.size));
            self.failed_this_run += 1;
            out.push(Action::Persist(rec.clone()));
            self.supersede_older(&mapping, &path, &rec.id, out);
            self.index(&rec);
            self.set_aside(rec);
            return;
        }
        if let Some(why) = self.over_message_limit(&mapping, &path, stat.size) {
            // A file alone over a mailing mapping's `max_message_size` is refused by its size
            // too, before a byte is read or a draft made (a file that grows past it between
            // its settle and its hash is caught when its message is made).
            let f = Failure::new(MESSAGE_TOO_LARGE, why);
            self.failed_unread(&mapping, &path, stat, f, out);
            return;
        }
        if self.hash_queued.insert(path.clone().into_os_string()) {
            self.hash_queue.push(mapping, path, stat);
        }
    }

    /// Why a file of `size` at `path` cannot be mailed by `mapping` at all: alone it makes a
    /// message over the mapping's `max_message_size` (counted as `make_messages` counts it).
    /// `None` for a mapping that does not mail, or a file that fits.
    fn over_message_limit(&self, mapping: &str, path: &Path, size: u64) -> Option<String> {
        let rule = self.mail_rule(mapping)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let facts = crate::mail::FileFacts {
            name: name.clone(),
            size,
        };
        let e = crate::mail::split_batch(&[facts], rule.max_message_size, rule.body.len() as u64)
            .err()?;
        Some(format!(
            "{name} cannot be mailed: {e}; it was not read and no draft was made. Mapping \"{mapping}\" has max_message_size = {}: raise it in its [mapping.new_message] if the tenant's limit is higher (then touch the file, or it goes at the next rescan or start), or send the file another way",
            rule.max_message_size
        ))
    }

    fn hashed(&mut self, path: PathBuf, result: HashResult, out: &mut Vec<Action>) {
        self.hashing.remove(path.as_os_str());
        self.hash_queued.remove(path.as_os_str());
        let held = self.held.remove(path.as_os_str()).unwrap_or_default();
        let Some((mapping, stat)) = self.hash_info.remove(path.as_os_str()) else {
            return;
        };
        if matches!(result, HashResult::Changed) {
            // Not the file that settled: settle it again, as the watcher saw it meanwhile
            // (a writer's close then is a close the settle rule counts: seeds 682999, 909258,
            // a slow writer's next version taken by its close, its first close forgotten).
            if !held.iter().any(|h| matches!(h, Held::Observed { .. })) {
                self.settler.observe(&mapping, &path, stat, self.now);
            }
            self.replay_held(&path, held);
            return;
        }
        let at = path.clone();
        match result {
            HashResult::Changed => {}
            HashResult::Gone => {}
            HashResult::Unreadable(f) => {
                let f = Failure::new(UNREADABLE, f.message);
                self.not_read(mapping, path, stat, f, out);
            }
            // The bytes of the done version: nothing is sent, so its second name is no reason
            // to refuse it; it stays done, with the file's new times.
            HashResult::Refused { sha256, stat, .. }
                if self.done_with_bytes(&mapping, &path, &sha256, stat) =>
            {
                self.new_version(mapping, path, stat, sha256, out)
            }
            HashResult::Refused { failure, .. } => {
                let f = Failure::new(HARD_LINK, failure.message);
                self.not_read(mapping, path, stat, f, out);
            }
            HashResult::Hashed { sha256, stat } => {
                self.new_version(mapping, path, stat, sha256, out)
            }
        }
        // A change reported while it was hashed is settled now (before, it was dropped: the
        // new bytes waited for a rescan).
        self.replay_held(&at, held);
    }

    /// Keeps what the watcher reported of `path` while it waits for its hash (at most the
    /// last [`HELD_MAX`] reports).
    fn hold(&mut self, path: &Path, h: Held) {
        let v = self.held.entry(path.as_os_str().to_owned()).or_default();
        if v.len() >= HELD_MAX {
            v.remove(0);
        }
        v.push(h);
    }

    /// The reports of `path` kept while it was hashed, given to the settler in order and at
    /// the times they came, as they would have been (an observation only if it is news).
    fn replay_held(&mut self, path: &Path, held: Vec<Held>) {
        for h in held {
            match h {
                Held::Observed { mapping, stat, at } => {
                    if self.mappings.contains_key(&mapping)
                        && (self.settler.is_settling(path)
                            || !self.nothing_new(&mapping, path, stat))
                    {
                        self.settler.observe(&mapping, path, stat, at);
                    }
                }
                Held::Closed { at } => self.settler.closed(path, at),
            }
        }
    }

    /// A file that settled at `stat` and is not taken (unreadable, or refused as a hard link):
    /// a failed version with no hash, said once for the same file and reason.
    fn not_read(
        &mut self,
        mapping: String,
        path: PathBuf,
        stat: FileStat,
        f: Failure,
        out: &mut Vec<Action>,
    ) {
        if let Some(b) = self.newest(&mapping, &path) {
            if b.file == stat && b.error_code.as_deref() == Some(f.code.as_str()) {
                return;
            }
        }
        self.failed_unread(&mapping, &path, stat, f, out);
    }

    /// A version failed before a byte of it was read (`f` says why): recorded, said, taking
    /// the place of the path's older versions, and set aside (`failed_dir`).
    fn failed_unread(
        &mut self,
        mapping: &str,
        path: &Path,
        stat: FileStat,
        f: Failure,
        out: &mut Vec<Action>,
    ) {
        let mut rec = self.new_record(mapping, path, stat, None);
        rec.state = State::Failed;
        rec.error = Some(f.clone());
        self.failed_this_run += 1;
        out.push(Action::Persist(rec.clone()));
        out.push(Action::Notify(Note::Failed {
            id: rec.id.clone(),
            path: path.to_path_buf(),
            failure: f,
        }));
        self.supersede_older(mapping, path, &rec.id, out);
        self.index(&rec);
        self.set_aside(rec);
    }

    /// Whether `sha256` at `stat` is the bytes of `path`'s newest version, and that version is
    /// done, so the file read sends nothing (in a mailing folder, the same bytes dropped again
    /// once their message went are a new message: not this).
    fn done_with_bytes(&self, mapping: &str, path: &Path, sha256: &str, stat: FileStat) -> bool {
        self.newest(mapping, path).is_some_and(|b| {
            b.state == State::Done
                && b.file.size == stat.size
                && b.sha256
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(sha256))
                && !(self.mail_rule(mapping).is_some()
                    && b.file.other_file(&stat)
                    && !self.message_pending(&b.id))
        })
    }

    fn new_version(
        &mut self,
        mapping: String,
        path: PathBuf,
        stat: FileStat,
        sha256: String,
        out: &mut Vec<Action>,
    ) {
        let mut mail_again = false;
        if let Some(b) = self.newest(&mapping, &path).cloned() {
            let same = b.file.size == stat.size
                && b.sha256
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(&sha256));
            // In a mailing folder each drop is a request to mail: the same bytes again as a new
            // file (the one mailed was moved, deleted or removed, or this one was copied in)
            // once its message went are a new message. A touch, or a rescan of the file still
            // there, is not; nor a copy over it before its message went (still one request).
            let dropped_again = same
                && b.state == State::Done
                && self.mail_rule(&mapping).is_some()
                && b.file.other_file(&stat)
                && !self.message_pending(&b.id);
            // The ledger knows these bytes were mailed from here: the mailbox holding them is
            // no reason not to mail this drop.
            mail_again = dropped_again;
            if same && !dropped_again {
                // The same bytes: a touch, a save without edits, a sync client. The entry
                // goes on (or is done); only what it knows of the file is updated, but not
                // its owner: a neighbour's copy of the user's bytes does not make the user's
                // version the neighbour's (whose next version would then replace it).
                let stat = FileStat {
                    owner: b.file.owner.or(stat.owner),
                    ..stat
                };
                // Canceled by the agent (not by the user: "canceled"), or unreadable then: the
                // same bytes are back, so this version goes on.
                let code = b.error_code.as_deref();
                let revive = (b.state == State::Canceled && code != Some("canceled"))
                    || (b.state == State::Failed && code == Some(UNREADABLE));
                if let Some(a) = self.active.get_mut(&b.id) {
                    // The bytes an open session holds were read from the file the record named
                    // until now. Once it names another (another inode, or times moved: an edit
                    // and a copy back are a touch to a stat), a resume after a restart reads
                    // and hashes what went before from the new file, which proves nothing of
                    // what the session holds (seed 2179010: an in-place edit went out mid-file,
                    // a copy of the old bytes replaced the file, and the resumed session
                    // completed with bytes of two versions). The session is abandoned and the
                    // upload starts again from the new file; not counted as a restart.
                    if a.rec.file != stat {
                        if let Some(s) = a.rec.session.as_mut() {
                            s.abandoned = true;
                            a.next_offset = None;
                        }
                    }
                    a.rec.file = stat;
                    if revive {
                        a.rec.state = State::Pending;
                        a.rec.error = None;
                        a.rec.cancel_requested = false;
                        // What it looked at before it was canceled is stale.
                        a.looked = false;
                    }
                    // A cancel the agent asked for (the file went, or was swapped) is taken
                    // back: the same bytes are here again. The user's cancel stands.
                    let by_user = a.rec.error.as_ref().is_some_and(|e| e.code == "canceled");
                    if a.rec.cancel_requested && !by_user && !a.rec.state.is_terminal() {
                        a.rec.cancel_requested = false;
                        a.rec.error = None;
                    }
                    a.rec.updated_at = self.now;
                    let rec = a.rec.clone();
                    out.push(Action::Persist(rec.clone()));
                    self.index(&rec);
                    self.make_ready(&b.id);
                } else {
                    // Terminal and not in memory: the executor updates the stored record.
                    out.push(Action::UpdateFile {
                        id: b.id.clone(),
                        file: stat,
                        revive,
                    });
                    self.set_newest_file(&mapping, &path, stat);
                }
                return;
            }
        }
        let mut rec = self.new_record(&mapping, &path, stat, Some(sha256));
        rec.mail_again = mail_again;
        if stat.size > MAX_ATTACHMENT {
            // Grown past the limit between its settle and its hash.
            rec.state = State::Rejected;
            rec.error = Some(too_large(&path, stat.size));
            self.failed_this_run += 1;
        }
        out.push(Action::Persist(rec.clone()));
        let older = self.newest(&mapping, &path).map(|b| b.id.clone());
        self.supersede_older(&mapping, &path, &rec.id, out);
        self.index(&rec);
        if rec.state == State::Rejected {
            self.set_aside(rec);
        } else if has_work(&rec) {
            let id = rec.id.clone();
            self.activate(rec);
            if self.mail_rule(&mapping).is_some() {
                self.mail_new_version(&id, older.as_deref(), out);
            }
        }
    }

    /// Older versions of `path` still at work are canceled (after settling what they sent).
    fn supersede_older(&mut self, mapping: &str, path: &Path, newer: &str, out: &mut Vec<Action>) {
        let mut ids: Vec<String> = self
            .path_info(mapping, path)
            .map(|i| i.working.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|id| {
                *id != newer
                    && self
                        .active
                        .get(*id)
                        .is_some_and(|a| !a.rec.state.is_terminal())
            })
            .cloned()
            .collect();
        ids.sort();
        for id in ids {
            if let Some(a) = self.active.get_mut(&id) {
                a.rec.cancel_requested = true;
                a.rec.error = Some(Failure::new(
                    SUPERSEDED,
                    "a newer version of the file replaced this one before it was attached",
                ));
                a.rec.updated_at = self.now;
                out.push(Action::Persist(a.rec.clone()));
            }
            self.make_ready(&id);
        }
    }

    fn new_record(
        &mut self,
        mapping: &str,
        path: &Path,
        stat: FileStat,
        sha256: Option<String>,
    ) -> Record {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ids_made += 1;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // No control character in an attachment's name (a newline in a file name would be a
        // line break in Outlook's list). A mailing mapping sends what others drop straight out
        // of the user's mailbox: its attachment names follow the letter's rule
        // (`Invoice_\u{202E}fdp.exe` would read "Invoice_exe.pdf"), as `{name}` does. An item
        // mapping's attachment keeps the rest of the file's own name.
        let name = crate::mail::attachment_name(&name, self.mail_rule(mapping).is_some());
        Record::pending(
            make_id(mapping, path, seq, self.now, self.ids_made),
            mapping.to_owned(),
            path.to_path_buf(),
            name,
            stat,
            sha256,
            seq,
            self.now,
        )
    }

    // ---- entries ------------------------------------------------------------------------------

    fn activate(&mut self, mut rec: Record) {
        let id = rec.id.clone();
        if rec.message.is_none()
            && rec.state == State::Pending
            && self.mail_rule(&rec.mapping).is_some()
        {
            // A file of a mailing mapping retried while done in no message (found mailed by
            // its key): its attachment is on a sent copy, the user's record, never deleted
            // (`retry` and the offline requeue put it among those to replace). Its key is
            // searched for again: still there, it stays mailed; gone, it is mailed again.
            rec.replaces.retain(|r| r.entry != id);
        }
        let working = &mut self
            .paths
            .entry(rec.mapping.clone())
            .or_default()
            .entry(rec.path.clone().into_os_string())
            .or_default()
            .working;
        if !working.contains(&id) {
            working.push(id.clone());
        }
        self.active.insert(
            id.clone(),
            Active {
                rec,
                busy: false,
                wait_until: None,
                next_offset: None,
                looked: false,
                post_too_large: false,
                stalls: 0,
                look_target: None,
                slot: false,
                slot_mb: String::new(),
                queued: false,
                timer: None,
                key: KeyLook::Unsearched,
                failed_dir_tried: false,
                retry_when_moved: false,
            },
        );
        self.make_ready(&id);
    }

    /// The item a record's next step is about: the one it is bound to while something of it
    /// may be there (an effect in doubt, an open session, an attachment), else its mapping's
    /// item as the config says now (a fixed item id is followed).
    fn target_of(&self, rec: &Record) -> Option<Target> {
        let bound = rec.may_exist
            || rec.session.is_some()
            || rec.state == State::Done
            || !rec.garbage.is_empty();
        if let Some(t) = rec.target.clone().filter(|_| bound) {
            return Some(t);
        }
        if rec.message.is_some() || self.mail_rule(&rec.mapping).is_some() {
            // A file of a message goes to its message's draft (none yet: nowhere yet).
            return self.draft_target(rec);
        }
        self.mappings.get(&rec.mapping).map(|m| m.target.clone())
    }

    fn mailbox_of(&self, rec: &Record) -> String {
        self.target_of(rec)
            .map(|t| t.user.to_lowercase())
            .unwrap_or_default()
    }

    /// Put `id` in its mailbox's ready queue (unless it waits for a time or is in flight).
    fn make_ready(&mut self, id: &str) {
        let now = self.now;
        let Some(a) = self.active.get(id) else {
            return;
        };
        if a.busy || a.queued {
            return;
        }
        if let Some(t) = a.wait_until {
            if t > now {
                self.set_timer(id, t);
                return;
            }
        }
        // Steps that need no place in the mailbox go first; an entry that holds a place goes
        // before those waiting for one (so places always come free again).
        let (mb, front) = match self.next_step(a) {
            Step::Local
            | Step::Finished
            | Step::After
            | Step::ToFailedDir
            | Step::FromFailedDir
            | Step::Idle => (String::new(), true),
            _ => (self.mailbox_of(&a.rec), a.slot),
        };
        if let Some(a) = self.active.get_mut(id) {
            a.queued = true;
            a.wait_until = None;
        }
        let q = self.ready.entry(mb).or_default();
        if front {
            q.push_front(id.to_owned());
        } else {
            q.push_back(id.to_owned());
        }
    }

    pub(super) fn set_timer(&mut self, id: &str, t: Time) {
        if let Some(a) = self.active.get_mut(id) {
            if let Some(old) = a.timer.take() {
                self.timers.remove(&(old, id.to_owned()));
            }
            a.timer = Some(t);
            self.timers.insert((t, id.to_owned()));
        }
    }

    /// One of mailbox `mb`'s `concurrency` places for entry `id` (kept if it holds one).
    /// `false`: none free.
    pub(super) fn take_slot(&mut self, id: &str, mb: &str) -> bool {
        if self.active.get(id).is_none_or(|a| a.slot) {
            return true;
        }
        let used = self.slots.get(mb).copied().unwrap_or(0);
        if used >= self.policy.concurrency.max(1) {
            return false;
        }
        *self.slots.entry(mb.to_owned()).or_default() += 1;
        if let Some(a) = self.active.get_mut(id) {
            a.slot = true;
            a.slot_mb = mb.to_owned();
        }
        true
    }

    pub(super) fn wait(&mut self, id: &str, ms: u64) {
        let t = self.now.plus_ms(ms);
        self.release_slot(id);
        if let Some(a) = self.active.get_mut(id) {
            a.wait_until = Some(t);
        }
        self.set_timer(id, t);
    }

    fn tick(&mut self) {
        self.wake_asked = None;
        if let Some((t, _)) = &self.sign_in {
            if *t <= self.now {
                self.sign_in = None;
                let ids: Vec<String> = self.active.keys().cloned().collect();
                for id in ids {
                    self.make_ready(&id);
                }
                let mids: Vec<String> = self.messages.keys().cloned().collect();
                self.msg_ready.extend(mids);
            }
        }
        while let Some((t, id)) = self.timers.iter().next().cloned() {
            if t > self.now {
                break;
            }
            self.timers.remove(&(t, id.clone()));
            if let Some(a) = self.active.get_mut(&id) {
                a.timer = None;
                a.wait_until = None;
            }
            self.make_ready(&id);
        }
    }

    fn release_slot(&mut self, id: &str) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        if !a.slot {
            return;
        }
        a.slot = false;
        let mb = std::mem::take(&mut a.slot_mb);
        if let Some(n) = self.slots.get_mut(&mb) {
            *n = n.saturating_sub(1);
        }
    }

    fn release_lock(&mut self, id: &str) {
        let keys: Vec<_> = self
            .name_locks
            .iter()
            .filter(|(_, holder)| *holder == id)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.name_locks.remove(&k);
            if let Some(mut q) = self.lock_waiters.remove(&k) {
                while let Some(w) = q.pop_front() {
                    self.make_ready(&w);
                }
            }
        }
    }

    /// Start every step that may start now.
    fn pump(&mut self, out: &mut Vec<Action>) {
        self.close_batches(out);
        self.pump_messages(out);
        // Settle checks that came due.
        for path in self.settler.due(self.now, self.policy.stat_batch) {
            if self.stats_out.len() >= self.policy.stat_batch {
                break;
            }
            // (A stat of the path already out, asked for a report of it gone, answers this
            // check too.)
            self.settler.checking(&path);
            if self.stats_out.insert(path.clone().into_os_string()) {
                out.push(Action::Stat { path });
            }
        }
        // Hashing, a few at a time; with more than one mapping, one mapping never takes every
        // worker, so another's file is hashed while its big ones are.
        let workers = self.policy.hash_workers.max(1);
        let cap = if self.mappings.len() > 1 && workers > 1 {
            workers - 1
        } else {
            workers
        };
        while self.hashing.len() < workers {
            let Some((mapping, path, stat)) = self.hash_queue.pop(&self.hash_info, cap) else {
                break;
            };
            self.hashing.insert(path.clone().into_os_string());
            self.hash_info
                .insert(path.clone().into_os_string(), (mapping.clone(), stat));
            out.push(Action::Hash {
                mapping,
                path,
                stat,
            });
        }
        // Entries; a step can make others ready (a lock released), so pass until none moves.
        let mut moved = true;
        while moved {
            moved = false;
            let mailboxes: Vec<String> = self.ready.keys().cloned().collect();
            for mb in mailboxes {
                moved |= self.pump_mailbox(&mb, out);
            }
            self.ready.retain(|_, q| !q.is_empty());
            if !self.msg_ready.is_empty() {
                // Files that finished may let their message on (and it its files).
                self.pump_messages(out);
                moved |= self.ready.values().any(|q| !q.is_empty());
            }
        }
        self.ask_wake(out);
    }

    /// Start the steps of `mb`'s ready entries while it has places; whether any started.
    fn pump_mailbox(&mut self, mb: &str, out: &mut Vec<Action>) -> bool {
        let mut moved = false;
        {
            while let Some(id) = self.ready.get_mut(mb).and_then(|q| q.pop_front()) {
                if let Some(a) = self.active.get_mut(&id) {
                    a.queued = false;
                } else {
                    continue;
                }
                if !self.advance(&id, out) {
                    // No place free in this mailbox: put it back and try later.
                    if let Some(a) = self.active.get_mut(&id) {
                        a.queued = true;
                    }
                    if let Some(q) = self.ready.get_mut(mb) {
                        q.push_front(id);
                    }
                    break;
                }
                moved = true;
            }
        }
        moved
    }

    fn ask_wake(&mut self, out: &mut Vec<Action>) {
        let next = [
            self.settler.next_deadline(),
            self.timers.iter().next().map(|(t, _)| *t),
            self.sign_in.as_ref().map(|(t, _)| *t),
            self.next_message_timer(),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(t) = next {
            if self.wake_asked != Some(t) {
                self.wake_asked = Some(t);
                out.push(Action::WakeAt(t));
            }
        } else {
            self.wake_asked = None;
        }
    }

    /// Take `id`'s next step if it can be taken now. `false`: no place free in its mailbox.
    fn advance(&mut self, id: &str, out: &mut Vec<Action>) -> bool {
        // Local steps first, as many as there are.
        for _ in 0..8 {
            let Some(a) = self.active.get(id) else {
                return true;
            };
            if a.busy {
                return true;
            }
            let step = self.next_step(a);
            match step {
                Step::Idle => {
                    // Waiting on its message holds no place in the mailbox.
                    self.release_slot(id);
                    return true;
                }
                Step::Finished => {
                    // Retried while its last steps were under way: now.
                    if self.active.get(id).is_some_and(|a| a.retry_when_moved) {
                        let rec = self.active[id].rec.clone();
                        self.finish(id);
                        self.retry(vec![rec], out);
                        return true;
                    }
                    self.finish(id);
                    return true;
                }
                Step::Local => {
                    self.local(id, out);
                    continue;
                }
                Step::After => {
                    let a = &self.active[id];
                    let Some(m) = self.mappings.get(&a.rec.mapping) else {
                        if let Some(a) = self.active.get_mut(id) {
                            a.rec.after_done = true;
                        }
                        continue;
                    };
                    if self.unavailable.contains(&a.rec.mapping) {
                        return true;
                    }
                    out.push(Action::After {
                        id: id.to_owned(),
                        mapping: a.rec.mapping.clone(),
                        path: a.rec.path.clone(),
                        file: a.rec.file,
                        sha256: a.rec.sha256.clone().unwrap_or_default(),
                        after: m.after,
                    });
                    if let Some(a) = self.active.get_mut(id) {
                        a.busy = true;
                    }
                    return true;
                }
                Step::ToFailedDir | Step::FromFailedDir => {
                    let a = &self.active[id];
                    if self.unavailable.contains(&a.rec.mapping) {
                        if step == Step::FromFailedDir {
                            return true; // woken when the folder is back
                        }
                        // Left where it is: nothing can be moved in a folder out of reach.
                        if let Some(a) = self.active.get_mut(id) {
                            a.failed_dir_tried = true;
                        }
                        continue;
                    }
                    let r = &a.rec;
                    if step == Step::FromFailedDir
                        && self.newest(&r.mapping, &r.path).is_some_and(|b| b.id != id)
                    {
                        // A newer version of its path was dropped since it failed: that one is
                        // the user's file now; this one stays where it is, canceled as any
                        // superseded version (its message goes without it, its letter made
                        // again), never mailed or attached beside its successor by a retry.
                        let from = r.failed_to.clone().unwrap_or_default();
                        let why = Failure::new(
                            SUPERSEDED,
                            format!(
                                "a newer version of {} was dropped since it failed: that one is sent; this one stays in {}",
                                r.path.display(),
                                from.display()
                            ),
                        );
                        self.member_touched(id);
                        if let Some(a) = self.active.get_mut(id) {
                            a.rec.state = State::Canceled;
                            a.rec.error = Some(why);
                        }
                        self.persist(id, out);
                        continue;
                    }
                    let aside = step == Step::ToFailedDir;
                    if aside && !r.failed_dir_asked {
                        // On record before it is asked: a crash before its answer leaves the
                        // file at its path or in `failed_dir`, and start asks again.
                        if let Some(a) = self.active.get_mut(id) {
                            a.rec.failed_dir_asked = true;
                        }
                        self.persist(id, out);
                    }
                    let r = &self.active[id].rec;
                    out.push(match (step, r.failed_to.clone()) {
                        (Step::FromFailedDir, Some(from)) => Action::FromFailedDir {
                            id: id.to_owned(),
                            mapping: r.mapping.clone(),
                            from,
                            path: r.path.clone(),
                            file: r.file,
                        },
                        _ => Action::ToFailedDir {
                            id: id.to_owned(),
                            mapping: r.mapping.clone(),
                            path: r.path.clone(),
                            file: r.file,
                            failure: r
                                .error
                                .clone()
                                .unwrap_or_else(|| Failure::new("failed", "it failed")),
                        },
                    });
                    if let Some(a) = self.active.get_mut(id) {
                        a.busy = true;
                        a.failed_dir_tried |= aside;
                    }
                    return true;
                }
                Step::Look { recent_ok: true } => {
                    let rec = self.active[id].rec.clone();
                    // The name first: an attachment it may adopt is then not being deleted.
                    if let Some(t) = self.target_of(&rec) {
                        if !self.take_lock(id, &t) {
                            return true;
                        }
                    }
                    let skip = self
                        .mappings
                        .get(&rec.mapping)
                        .is_some_and(|m| m.if_exists == IfExists::Skip);
                    if let Some(att) = self.known_attachment(&rec, !skip) {
                        // Already on the item, by this agent's own record: done, no request.
                        if let Some(a) = self.active.get_mut(id) {
                            a.rec.target =
                                self.mappings.get(&rec.mapping).map(|m| m.target.clone());
                        }
                        self.done(id, att, out);
                        continue;
                    }
                    if !skip {
                        // `attach`: its earlier version is no longer known there (being
                        // deleted meanwhile); nothing is looked for, it is uploaded.
                        if let Some(a) = self.active.get_mut(id) {
                            a.looked = true;
                        }
                        continue;
                    }
                    return self.remote(id, Step::Look { recent_ok: true }, out);
                }
                Step::Look { recent_ok: false } => {
                    // Not before every request that may have made it is surely over.
                    let a = &self.active[id];
                    if let Some(t) = a.rec.effect_at.filter(|_| a.rec.may_exist) {
                        let ready = self.counted(t).plus_ms(self.policy.look_after_ms);
                        // The name is this entry's while it waits: no other upload of it.
                        let target = self.target_of(&a.rec);
                        if let Some(target) = target {
                            if !self.take_lock(id, &target) {
                                return true;
                            }
                        }
                        if ready > self.now {
                            let ms = ready.since(self.now);
                            self.wait(id, ms);
                            return true;
                        }
                    }
                    return self.remote(id, Step::Look { recent_ok: false }, out);
                }
                step => return self.remote(id, step, out),
            }
        }
        true
    }

    fn next_step(&self, a: &Active) -> Step {
        let r = &a.rec;
        if r.state == State::Done
            && r.replaces.is_empty()
            && r.garbage.is_empty()
            && r.session.is_none()
        {
            if let Some(step) = self.mail_gate(r) {
                return step;
            }
        }
        if r.state.is_terminal() {
            if r.session.is_some() {
                return Step::DeleteSession;
            }
            if let Some(g) = r.garbage.first() {
                return Step::DeleteAttachment {
                    attachment_id: g.clone(),
                };
            }
            if r.state == State::Done {
                if let Some(rep) = r.replaces.first() {
                    return Step::DeleteAttachment {
                        attachment_id: rep.attachment_id.clone(),
                    };
                }
                if !r.after_done {
                    return Step::After;
                }
            }
            if matches!(r.state, State::Failed | State::Rejected)
                && !a.failed_dir_tried
                && !a.retry_when_moved
                && r.failed_to.is_none()
                && !r.file.has_left()
                && self.policy.failed_dirs.contains(&r.mapping)
            {
                return Step::ToFailedDir;
            }
            return Step::Finished;
        }
        if let Some(g) = r.garbage.first() {
            return Step::DeleteAttachment {
                attachment_id: g.clone(),
            };
        }
        if r.cancel_requested {
            if r.session.is_some() {
                return Step::DeleteSession;
            }
            if r.may_exist && self.draft_sought(r) {
                // Its copy in doubt is on a draft its message looks for (sent from Outlook?):
                // looked for where the message finds it.
                return Step::Idle;
            }
            if r.may_exist {
                return Step::Look { recent_ok: false };
            }
            return Step::Local;
        }
        if r.failed_to.is_some() {
            // Retried while its file is in `failed_dir`: back at its path before anything.
            return Step::FromFailedDir;
        }
        if self.needs_key_search(a) {
            return Step::FindKey;
        }
        if let Some(step) = self.mail_gate(r) {
            return step;
        }
        if let Some(s) = r.session {
            if s.abandoned {
                return Step::DeleteSession;
            }
            return match a.next_offset {
                Some(o) if o < r.file.size => Step::Put { offset: o },
                _ => Step::Ask,
            };
        }
        if r.may_exist {
            return Step::Look { recent_ok: false };
        }
        // A re-attach (`retry` of a done entry) looks first, whatever `if_exists` says, and
        // with a fresh listing confirmed by the bytes (never this agent's own record, which is
        // what is in doubt): a recorded copy that is in fact good is kept, nothing is sent, and
        // no second copy is made even for a moment.
        if !a.looked && r.replaces.iter().any(|x| x.entry == r.id) {
            return Step::Look { recent_ok: false };
        }
        if !a.looked
            && self
                .mappings
                .get(&r.mapping)
                .is_some_and(|m| m.if_exists == IfExists::Skip && m.mail.is_none())
            && r.message.is_none()
        {
            return Step::Look { recent_ok: true };
        }
        // With `attach` nothing is looked for on the item, but a version of this path this
        // agent attached there and that is still there is this version: not attached again.
        if !a.looked
            && r.session.is_none()
            && r.message.is_none()
            && self
                .mappings
                .get(&r.mapping)
                .is_some_and(|m| m.mail.is_none())
            && self.known_attachment(r, true).is_some()
        {
            return Step::Look { recent_ok: true };
        }
        if uses_post(r.file.size, &r.name) && !a.post_too_large {
            Step::Post
        } else {
            Step::CreateSession
        }
    }

    /// A transition without a request: a cancel with nothing sent.
    fn local(&mut self, id: &str, out: &mut Vec<Action>) {
        self.member_touched(id);
        let now = self.now;
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        if a.rec.cancel_requested && !a.rec.state.is_terminal() {
            a.rec.state = State::Canceled;
            a.rec.cancel_requested = false;
            if a.rec.error.is_none() {
                a.rec.error = Some(Failure::new("canceled", "canceled by the user"));
            }
            a.rec.updated_at = now;
            let rec = a.rec.clone();
            out.push(Action::Persist(rec.clone()));
            self.index(&rec);
        }
    }

    fn finish(&mut self, id: &str) {
        self.release_slot(id);
        self.release_lock(id);
        if let Some(a) = self.active.remove(id) {
            if let Some(t) = a.timer {
                self.timers.remove(&(t, id.to_owned()));
            }
            if let Some(info) = self.path_info_mut(&a.rec.mapping, &a.rec.path) {
                info.working.retain(|w| w != id);
            }
            self.member_finished(a.rec);
        }
    }

    /// One upload per name per item at a time: `id` holds (mailbox, item, name) from its first
    /// step until it is finished, through its waits. `false`: another holds it; `id` waits.
    fn take_lock(&mut self, id: &str, target: &Target) -> bool {
        let Some(a) = self.active.get(id) else {
            return false;
        };
        let deleting = !a.rec.replaces.is_empty() || !a.rec.garbage.is_empty();
        if a.rec.state.is_terminal() && !deleting {
            return true;
        }
        let key = lock_key(target, &a.rec.name);
        // Names held on another item (the mapping's item changed) are not this entry's now.
        let stale: Vec<_> = self
            .name_locks
            .iter()
            .filter(|(k, h)| *h == id && **k != key)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.name_locks.remove(&k);
            if let Some(mut q) = self.lock_waiters.remove(&k) {
                while let Some(w) = q.pop_front() {
                    self.make_ready(&w);
                }
            }
        }
        match self.name_locks.get(&key) {
            Some(holder) if holder != id => {
                // What it looked at before is stale once another upload of the name has run;
                // and it gives up its place in the mailbox while it waits (no deadlock).
                if let Some(a) = self.active.get_mut(id) {
                    a.looked = false;
                }
                self.release_slot(id);
                let w = self.lock_waiters.entry(key).or_default();
                if !w.iter().any(|x| x == id) {
                    w.push_back(id.to_owned());
                }
                false
            }
            Some(_) => true,
            None => {
                self.name_locks.insert(key, id.to_owned());
                true
            }
        }
    }

    fn remote(&mut self, id: &str, step: Step, out: &mut Vec<Action>) -> bool {
        if self.sign_in.is_some() {
            return true; // woken when the pause ends
        }
        if step == Step::FindKey {
            return self.find_key(id, out);
        }
        let rec = self.active[id].rec.clone();
        if self.unavailable.contains(&rec.mapping)
            && matches!(step, Step::Post | Step::Put { .. } | Step::CreateSession)
        {
            return true; // woken when the folder is back
        }
        let Some(target) = self.target_of(&rec) else {
            // The mapping is gone from the config: nothing can be sent for it.
            self.fail(
                id,
                Failure::new(
                    "mappingRemoved",
                    format!("the mapping `{}` is no longer in the config", rec.mapping),
                ),
                out,
            );
            // Looked at again: a failed entry leaves the active set (else `run --once` waits
            // for it for ever).
            self.make_ready(id);
            return true;
        };
        if !self.take_lock(id, &target) {
            return true;
        }
        if !self.take_slot(id, &target.user.to_lowercase()) {
            return false;
        }
        let now = self.now;
        let exclude = match step {
            Step::Look { .. } => self.claimed_by_others(&rec, &target),
            _ => Vec::new(),
        };
        let Some(a) = self.active.get_mut(id) else {
            return true;
        };
        a.busy = true;
        let sha = a.rec.sha256.clone().unwrap_or_default();
        match step {
            Step::Look { recent_ok } => out.push(Action::Look {
                id: id.to_owned(),
                target: {
                    a.look_target = Some(target.clone());
                    target
                },
                name: a.rec.name.clone(),
                sha256: sha,
                recent_ok,
                exclude,
            }),
            Step::Post => {
                a.rec.state = State::Uploading;
                a.rec.target = Some(target.clone());
                a.rec.may_exist = true;
                a.rec.effect_at = Some(now);
                a.rec.updated_at = now;
                out.push(Action::Persist(a.rec.clone()));
                out.push(Action::Post {
                    id: id.to_owned(),
                    target,
                    path: a.rec.path.clone(),
                    name: a.rec.name.clone(),
                    file: a.rec.file,
                    sha256: sha,
                });
            }
            Step::CreateSession => {
                a.rec.state = State::Uploading;
                a.rec.target = Some(target.clone());
                a.rec.updated_at = now;
                out.push(Action::Persist(a.rec.clone()));
                out.push(Action::CreateSession {
                    id: id.to_owned(),
                    target,
                    name: a.rec.name.clone(),
                    size: a.rec.file.size,
                });
            }
            Step::Put { offset } => {
                let size = a.rec.file.size;
                let len = self.policy.chunk_size.max(1).min(size - offset);
                let last = offset + len == size;
                let mut s = a.rec.session.unwrap_or_default();
                let grew = offset + len > s.sent_end;
                s.sent_end = s.sent_end.max(offset + len);
                a.rec.session = Some(s);
                a.rec.bytes_sent = offset;
                if last {
                    // Every send of the last byte is an effect of its own: the look waits for
                    // the latest one.
                    a.rec.may_exist = true;
                    a.rec.effect_at = Some(now);
                    out.push(Action::Persist(a.rec.clone()));
                } else if grew {
                    out.push(Action::Persist(a.rec.clone()));
                }
                out.push(Action::PutChunk {
                    id: id.to_owned(),
                    target,
                    path: a.rec.path.clone(),
                    file: a.rec.file,
                    sha256: sha,
                    offset,
                    len,
                    last,
                });
            }
            Step::Ask => out.push(Action::AskSession {
                id: id.to_owned(),
                target,
            }),
            Step::DeleteSession => out.push(Action::DeleteSession {
                id: id.to_owned(),
                target,
            }),
            Step::DeleteAttachment { attachment_id } => out.push(Action::DeleteAttachment {
                id: id.to_owned(),
                target,
                attachment_id,
            }),
            Step::After
            | Step::ToFailedDir
            | Step::FromFailedDir
            | Step::Local
            | Step::Finished
            | Step::Idle
            | Step::FindKey => {
                a.busy = false;
            }
        }
        true
    }

    // ---- outcomes -----------------------------------------------------------------------------

    fn persist(&mut self, id: &str, out: &mut Vec<Action>) {
        let now = self.now;
        if let Some(a) = self.active.get_mut(id) {
            a.rec.updated_at = now;
            let rec = a.rec.clone();
            out.push(Action::Persist(rec.clone()));
            self.index(&rec);
        }
    }

    fn fail(&mut self, id: &str, f: Failure, out: &mut Vec<Action>) {
        self.member_touched(id);
        if self.active.get(id).is_some_and(|a| a.rec.cancel_requested)
            && f.code != ITEM_NOT_FOUND
            && self.doubt_holds_a_message(id)
        {
            // A canceled upload whose copy may be on a draft still to be sent does not end in
            // doubt: the draft would be sent with it. It looks again, patiently.
            let n = self.active[id].rec.attempts;
            return self.look_again(id, n, out);
        }
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        if a.rec.cancel_requested {
            a.rec.state = State::Canceled;
            a.rec.cancel_requested = false;
        } else {
            a.rec.state = State::Failed;
            a.rec.error = Some(f.clone());
            self.failed_this_run += 1;
            out.push(Action::Notify(Note::Failed {
                id: id.to_owned(),
                path: a.rec.path.clone(),
                failure: f,
            }));
        }
        self.persist(id, out);
        self.release_lock_if_free(id);
    }

    /// Whether entry `id` may have a copy on the draft of a message that may still be sent.
    fn doubt_holds_a_message(&self, id: &str) -> bool {
        let Some(a) = self.active.get(id) else {
            return false;
        };
        if !a.rec.may_exist {
            return false;
        }
        let Some(t) = a.item() else {
            return false;
        };
        self.messages_on_draft(&t.item_id)
            .any(|m| !matches!(m.rec.state, MessageState::Sent | MessageState::Drafted))
    }

    /// Look again after the backoff for attempt `n` (kept on record).
    fn look_again(&mut self, id: &str, n: u32, out: &mut Vec<Action>) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        a.rec.attempts = n.min(BACKOFF_PATIENT_ATTEMPTS);
        let n = a.rec.attempts;
        self.persist(id, out);
        self.wait(id, backoff_ms(id, n));
    }

    /// A terminal entry with nothing that may still land on the item gives up its name lock.
    fn release_lock_if_free(&mut self, id: &str) {
        if let Some(a) = self.active.get(id) {
            if a.rec.state.is_terminal()
                && !a.rec.may_exist
                && a.rec.replaces.is_empty()
                && a.rec.garbage.is_empty()
            {
                self.release_lock(id);
            }
        }
    }

    fn done(&mut self, id: &str, attachment_id: String, out: &mut Vec<Action>) {
        // The item it is on: pinned at its first effect, or (found by a first look) the
        // mapping's item now.
        let target = self.active.get(id).and_then(|a| self.target_of(&a.rec));
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        a.rec.target = target;
        let too_late =
            a.rec.cancel_requested && a.rec.error.as_ref().is_none_or(|e| e.code == "canceled");
        // No request of its own may have made it (a POST, the last chunk): it was there.
        let found = !a.rec.may_exist;
        a.rec.state = State::Done;
        a.rec.may_exist = false;
        a.rec.cancel_requested = false;
        a.rec.error = None;
        a.rec.bytes_sent = a.rec.file.size;
        a.rec.attachment_id = Some(attachment_id.clone());
        a.rec.attempts = 0;
        // Never delete the attachment it is done with (a re-attach that found its old copy).
        a.rec.replaces.retain(|r| r.attachment_id != attachment_id);
        let path = a.rec.path.clone();
        let mapping = a.rec.mapping.clone();
        let seq = a.rec.seq;
        let target = a.rec.target.clone();
        // Versions: with `replace`, the older version's attachment goes once this one is on
        // the item; a version finishing after a newer one removes its own.
        // A file of a message: a newer version on the draft replaces the older one there.
        let replace = self
            .mappings
            .get(&mapping)
            .is_some_and(|m| m.on_change == OnChange::Replace || m.mail.is_some());
        // Every other done version of the path on this item, not yet replaced.
        let others: Vec<(u64, String, String, Target)> = target
            .as_ref()
            .and_then(|t| {
                self.path_info(&mapping, &path).map(|i| {
                    i.done
                        .iter()
                        .filter(|(_, pid, _, dt)| pid != id && same_item(dt, t))
                        .cloned()
                        .collect()
                })
            })
            .unwrap_or_default();
        // Only a version of the same owner's is replaced (or replaces this one): a
        // neighbour's same-name file in a shared folder goes beside the user's.
        let (others, beside) = self.split_by_owner(id, &mapping, &path, others);
        let replaced_any = replace && others.iter().any(|(pseq, ..)| *pseq < seq);
        if too_late {
            out.push(Action::Notify(Note::CancelTooLate {
                id: id.to_owned(),
                path: path.clone(),
            }));
        } else {
            out.push(Action::Notify(Note::Attached {
                id: id.to_owned(),
                path: path.clone(),
                replaced: replaced_any,
                beside: if replace { beside.clone() } else { Vec::new() },
                found,
            }));
        }
        if replace && !beside.is_empty() {
            if let Some(a) = self.active.get_mut(id) {
                for b in beside {
                    if !a.rec.beside.contains(&b) {
                        a.rec.beside.push(b);
                    }
                }
            }
        }
        let mut after_done_now = false;
        if replace {
            let mut doomed: Vec<(String, String)> = Vec::new();
            for (pseq, pid, patt, _) in others {
                if pseq < seq {
                    // An older version: its attachment goes now that this one is there.
                    if patt != attachment_id {
                        doomed.push((pid, patt));
                    } else {
                        self.mark_replaced(&pid, id, out);
                    }
                } else if !after_done_now {
                    // A newer version is already there: this one's own attachment goes.
                    after_done_now = true;
                    doomed.push((id.to_owned(), attachment_id.clone()));
                }
            }
            for (old_entry, old_att) in doomed {
                // Unless another file holds it too (one name, the same bytes): then it stays
                // and only the older record is marked.
                if self.shared(&old_att, &old_entry) {
                    self.mark_replaced(&old_entry, id, out);
                } else if let Some(a) = self.active.get_mut(id) {
                    if !a.rec.replaces.iter().any(|r| r.entry == old_entry) {
                        a.rec.replaces.push(Replaced {
                            entry: old_entry,
                            attachment_id: old_att,
                        });
                    }
                }
            }
        }
        let keep = self
            .mappings
            .get(&mapping)
            .is_none_or(|m| m.after == After::Keep);
        // A version that lost to a newer one is not moved or deleted: the file is the newer's.
        let superseded = self.newest(&mapping, &path).is_some_and(|n| n.seq > seq);
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        a.rec.after_done = keep || superseded || after_done_now;
        // The name stays taken while older versions' attachments are deleted: nobody adopts
        // one on its way out.
        let deleting = !a.rec.replaces.is_empty() || !a.rec.garbage.is_empty();
        self.persist(id, out);
        if !deleting {
            self.release_lock(id);
        }
    }

    fn outcome(&mut self, id: &str, outcome: Outcome, out: &mut Vec<Action>) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        if !a.busy {
            return;
        }
        a.busy = false;
        match outcome {
            Outcome::Post(p) => self.on_post(id, p, out),
            Outcome::CreateSession(s) => self.on_session(id, s, out),
            Outcome::Chunk(c) => self.on_chunk(id, c, out),
            Outcome::Ask(s) => self.on_ask(id, s, out),
            Outcome::Look(l) => self.on_look(id, l, out),
            Outcome::DeleteSession(d) => self.on_delete_session(id, d, out),
            Outcome::DeleteAttachment(d) => self.on_delete_attachment(id, d, out),
            Outcome::After(r) => self.on_after(id, r, out),
            Outcome::ToFailedDir(r) => self.on_to_failed_dir(id, r, out),
            Outcome::FromFailedDir(r) => self.on_from_failed_dir(id, r, out),
            Outcome::Key(k) => self.on_key(id, k, out),
            Outcome::CreateDraft(_)
            | Outcome::Find(..)
            | Outcome::Send(_)
            | Outcome::ListDraft(_)
            | Outcome::StampKeys(_)
            | Outcome::Rivals(_)
            | Outcome::DeleteDraft(_)
            | Outcome::SetLetter(_) => {}
        }
        self.release_lock_if_free(id);
        self.make_ready(id);
    }

    /// A fault's common handling. `taken_maybe`: the request may have taken effect.
    fn on_fault(&mut self, id: &str, fault: Fault, out: &mut Vec<Action>) {
        match fault {
            Fault::Throttled { retry_after_ms } => {
                let attempts = self.active[id].rec.attempts;
                let ms = retry_after_ms.unwrap_or_else(|| backoff_ms(id, attempts));
                self.wait(id, ms);
            }
            Fault::Unreachable(_) => {
                let attempts = self.active[id].rec.attempts;
                self.wait(id, backoff_ms(id, attempts + 2));
            }
            Fault::SignIn(f) => {
                let until = self.now.plus_ms(self.policy.sign_in_pause_ms);
                if self.sign_in.is_none() {
                    out.push(Action::Notify(Note::SignInNeeded(f.clone())));
                }
                self.sign_in = Some((until, f));
                self.release_slot(id);
            }
            Fault::Ambiguous(f) => {
                let Some(a) = self.active.get_mut(id) else {
                    return;
                };
                a.rec.attempts += 1;
                let attempts = a.rec.attempts;
                let max = self.policy.max_attempts;
                if max > 0 && attempts >= max && !a.rec.state.is_terminal() {
                    self.fail(id, f, out);
                    return;
                }
                self.persist(id, out);
                self.wait(id, backoff_ms(id, attempts));
            }
            Fault::Permanent(f) => {
                if self.active[id].rec.state.is_terminal() {
                    return;
                }
                if f.code == ITEM_NOT_FOUND && self.gone_old_draft(id) {
                    // A POST or session on a draft its message already knows is gone.
                    return self.unbind(id, out);
                }
                if f.code == ITEM_NOT_FOUND && self.draft_vanished(id, true, out) {
                    // Its message's draft is not there: the message looks for it.
                    return;
                }
                self.fail(id, f, out)
            }
        }
    }

    /// A file of a message bound to a draft that is no longer there (deleted by hand; its
    /// message has another now, or looks for one): nothing of it can be on it. Unbound, it
    /// goes to its message's draft, from its first byte.
    pub(super) fn unbind(&mut self, id: &str, out: &mut Vec<Action>) {
        self.release_lock(id);
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        a.look_target = None;
        a.rec.may_exist = false;
        a.rec.effect_at = None;
        a.rec.target = None;
        a.rec.garbage.clear();
        a.rec.bytes_sent = 0;
        if a.rec.session.take().is_some() {
            out.push(Action::ForgetUrl { id: id.to_owned() });
        }
        a.next_offset = None;
        a.looked = false;
        self.persist(id, out);
    }

    fn on_post(&mut self, id: &str, p: PostOutcome, out: &mut Vec<Action>) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        match p {
            PostOutcome::Created { attachment_id } => self.done(id, attachment_id, out),
            PostOutcome::Changed => {
                a.rec.may_exist = false;
                self.changed(id, out);
            }
            PostOutcome::FileGone => {
                a.rec.may_exist = false;
                self.file_gone(id, out);
            }
            PostOutcome::TooLarge => {
                a.rec.may_exist = false;
                a.post_too_large = true;
                if a.rec.file.size < MIN_SESSION {
                    self.fail(
                        id,
                        Failure::new(
                            "requestTooLarge",
                            "Graph refused the attachment as too large for one request, and it is too small for an upload session",
                        ),
                        out,
                    );
                } else {
                    self.persist(id, out);
                }
            }
            PostOutcome::Failed(f) => {
                if matches!(f, Fault::Ambiguous(_)) {
                    // It could take effect until its answer ended: the look waits from then.
                    a.rec.effect_at = Some(self.now);
                } else {
                    a.rec.may_exist = false;
                    self.persist(id, out);
                }
                self.on_fault(id, f, out);
            }
        }
    }

    fn on_session(&mut self, id: &str, s: SessionOutcome, out: &mut Vec<Action>) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        match s {
            SessionOutcome::Created { next } => {
                a.rec.session = Some(SessionMark::default());
                a.next_offset = Some(next);
                a.stalls = 0;
                if next > 0 {
                    self.violation(id, "the new upload session wanted an offset past 0", out);
                    return;
                }
                self.persist(id, out);
            }
            SessionOutcome::Failed(f) => self.on_fault(id, f, out),
        }
    }

    /// The server reported what it cannot have: abandon the session and start over, a bounded
    /// number of times.
    fn violation(&mut self, id: &str, why: &str, out: &mut Vec<Action>) {
        let max = self.policy.max_sessions;
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        a.next_offset = None;
        a.stalls = 0;
        a.rec.restarts += 1;
        if let Some(s) = a.rec.session.as_mut() {
            s.abandoned = true;
        }
        if a.rec.restarts > max.min(2) {
            self.fail(
                id,
                Failure::new(
                    "protocolViolation",
                    format!("the upload server misbehaved ({why}); the upload was abandoned"),
                ),
                out,
            );
            return;
        }
        self.persist(id, out);
    }

    fn changed(&mut self, id: &str, out: &mut Vec<Action>) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        a.rec.state = State::Canceled;
        a.rec.cancel_requested = false;
        a.rec.error = Some(Failure::new(
            SUPERSEDED,
            "the file changed while it was being sent; its new version is queued",
        ));
        if let Some(s) = a.rec.session.as_mut() {
            s.abandoned = true;
        }
        let (mapping, path, file) = (a.rec.mapping.clone(), a.rec.path.clone(), a.rec.file);
        self.persist(id, out);
        // Settle the file again: its new version is found and queued.
        if !self.settler.is_settling(&path) {
            self.settler.observe(&mapping, &path, file, self.now);
        }
    }

    fn file_gone(&mut self, id: &str, out: &mut Vec<Action>) {
        let mapping = self.active[id].rec.mapping.clone();
        if self.unavailable.contains(&mapping) {
            self.persist(id, out);
            return; // woken when the folder is back
        }
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        a.rec.state = State::Canceled;
        a.rec.error = Some(Failure::new(
            "fileDeleted",
            "the file was deleted or replaced before it was attached",
        ));
        if let Some(s) = a.rec.session.as_mut() {
            s.abandoned = true;
        }
        let (mapping, path, file) = (a.rec.mapping.clone(), a.rec.path.clone(), a.rec.file);
        self.persist(id, out);
        self.settler.observe(&mapping, &path, file, self.now);
    }

    fn on_chunk(&mut self, id: &str, c: ChunkOutcome, out: &mut Vec<Action>) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        let size = a.rec.file.size;
        let sent_end = a.rec.session.map(|s| s.sent_end).unwrap_or(0);
        match c {
            ChunkOutcome::Accepted { next: Some(n) } => {
                let before = a.next_offset.unwrap_or(0);
                if n > sent_end {
                    self.violation(id, "it reported bytes it was never sent", out);
                } else if n >= size {
                    // All bytes taken yet no 201: only the item can tell.
                    self.violation(id, "it took every byte without completing", out);
                } else {
                    if n <= before {
                        a.stalls += 1;
                    } else {
                        a.stalls = 0;
                        a.rec.attempts = 0;
                    }
                    a.next_offset = Some(n);
                    a.rec.bytes_sent = n;
                    if a.stalls >= MAX_STALLS {
                        self.violation(id, "its next expected range did not move", out);
                    }
                }
            }
            ChunkOutcome::Accepted { next: None } | ChunkOutcome::RangeRefused => {
                a.next_offset = None;
            }
            ChunkOutcome::Completed { attachment_id } => {
                let was_last = sent_end >= size && a.rec.may_exist;
                a.rec.session = None;
                a.next_offset = None;
                out.push(Action::ForgetUrl { id: id.to_owned() });
                match (was_last, attachment_id) {
                    (true, Some(att)) => self.done(id, att, out),
                    (true, None) => self.persist(id, out), // may_exist: the look finds it
                    (false, Some(att)) => {
                        // 201 before the last byte: a partial attachment. Delete it, start over.
                        a.rec.garbage.push(att);
                        a.rec.restarts += 1;
                        if a.rec.restarts > self.policy.max_sessions.min(2) {
                            a.rec.state = State::Failed;
                            a.rec.error = Some(Failure::new(
                                "protocolViolation",
                                "the upload server completed the upload before its last byte",
                            ));
                            self.failed_this_run += 1;
                        }
                        self.persist(id, out);
                    }
                    (false, None) => self.fail(
                        id,
                        Failure::new(
                            "protocolViolation",
                            "the upload server completed the upload before its last byte and named no attachment",
                        ),
                        out,
                    ),
                }
            }
            ChunkOutcome::Changed => {
                a.rec.may_exist = false;
                self.changed(id, out);
            }
            ChunkOutcome::FileGone => {
                if a.rec.may_exist && sent_end >= size {
                    a.rec.may_exist = false;
                }
                self.file_gone(id, out);
            }
            ChunkOutcome::SessionGone => {
                a.rec.session = None;
                a.next_offset = None;
                out.push(Action::ForgetUrl { id: id.to_owned() });
                if !a.rec.may_exist {
                    self.session_lost(id, out);
                } else {
                    self.persist(id, out);
                }
            }
            ChunkOutcome::Failed(f) => {
                match &f {
                    Fault::Throttled { .. } => {
                        // Not taken: the session is as it was; the same chunk goes again.
                    }
                    Fault::Unreachable(_) => {}
                    Fault::Ambiguous(_) if a.rec.may_exist && sent_end >= size => {
                        // The last byte could land until its answer ended: the look waits
                        // from then.
                        a.rec.effect_at = Some(self.now);
                        a.next_offset = None;
                    }
                    _ => a.next_offset = None,
                }
                self.on_fault(id, f, out);
            }
        }
    }

    /// A session died with nothing that could have completed: a new one, a bounded number of
    /// times.
    fn session_lost(&mut self, id: &str, out: &mut Vec<Action>) {
        let max = self.policy.max_sessions;
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        a.rec.restarts += 1;
        let restarts = a.rec.restarts;
        if self.policy.max_attempts > 0 && restarts > max && !a.rec.state.is_terminal() {
            self.fail(
                id,
                Failure::new(
                    "uploadSessionsExhausted",
                    format!("{max} upload sessions in a row died before the upload finished"),
                ),
                out,
            );
            return;
        }
        self.persist(id, out);
        if restarts > 1 {
            // Sessions keep dying: do not hammer the server.
            self.wait(id, backoff_ms(id, restarts));
        }
    }

    fn on_ask(&mut self, id: &str, s: AskOutcome, out: &mut Vec<Action>) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        let size = a.rec.file.size;
        let sent_end = a.rec.session.map(|s| s.sent_end).unwrap_or(0);
        match s {
            AskOutcome::Next(Some(n)) if n > sent_end => {
                self.violation(id, "it reported bytes it was never sent", out)
            }
            AskOutcome::Next(Some(n)) if n >= size => {
                self.violation(id, "it holds every byte without completing", out)
            }
            AskOutcome::Next(Some(n)) => {
                a.next_offset = Some(n);
                a.rec.bytes_sent = n;
                if n == sent_end && a.rec.may_exist && n < size {
                    // The last chunk did not land after all.
                    a.rec.may_exist = false;
                    self.persist(id, out);
                }
            }
            AskOutcome::Next(None) => self.violation(id, "it answered without ranges", out),
            AskOutcome::Gone => {
                a.rec.session = None;
                a.next_offset = None;
                out.push(Action::ForgetUrl { id: id.to_owned() });
                if a.rec.may_exist || a.rec.state.is_terminal() {
                    self.persist(id, out);
                } else {
                    self.session_lost(id, out);
                }
            }
            AskOutcome::Failed(Fault::Permanent(f)) => {
                // 400, 405: a session that cannot be asked is abandoned (and deleted).
                self.violation(id, &f.message, out);
            }
            AskOutcome::Failed(f) => self.on_fault(id, f, out),
        }
    }

    fn on_look(&mut self, id: &str, l: LookOutcome, out: &mut Vec<Action>) {
        let old_draft_gone = matches!(
            &l,
            LookOutcome::Failed(Fault::Permanent(f)) if f.code == ITEM_NOT_FOUND
        ) && self.gone_old_draft(id);
        if let LookOutcome::Failed(Fault::Permanent(f)) = &l {
            // Its message's draft is not there: sent from Outlook (perhaps with this copy in
            // it), or deleted. The message looks for it; the file waits, its doubt kept (seed
            // 109547: taken for "nothing there", the copy sent by hand was mailed again).
            if f.code == ITEM_NOT_FOUND && self.draft_vanished(id, false, out) {
                return;
            }
        }
        // A copy its message is deleting as a stray is not the file's: nothing of it is there.
        let l = match l {
            LookOutcome::Found { attachment_id } if self.stray_of_message(id, &attachment_id) => {
                LookOutcome::NotFound
            }
            other => other,
        };
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        match l {
            LookOutcome::Found { attachment_id } => {
                if a.rec.state.is_terminal() {
                    return;
                }
                self.done(id, attachment_id, out)
            }
            LookOutcome::NotFound => {
                // The look was on the pinned item, or else the mapping's; it answers
                // `if_exists` only for the item the file will now go to (a file of a message:
                // its message's draft; a re-attach of one found missing there looked on it, and
                // looked again for ever: seed 227388).
                let rec = a.rec.clone();
                let look_target = a.look_target.take();
                let current = if rec.message.is_some() || self.mail_rule(&rec.mapping).is_some() {
                    self.draft_target(&rec)
                } else {
                    self.mappings.get(&rec.mapping).map(|m| m.target.clone())
                };
                let looked_on = look_target.or_else(|| self.target_of(&rec));
                let Some(a) = self.active.get_mut(id) else {
                    return;
                };
                a.looked = looked_on == current;
                if a.rec.may_exist {
                    // Nothing of it is on the item: unbound, it goes to the mapping's item now
                    // (see `target_of`).
                    a.rec.may_exist = false;
                    let unmessaged = a.rec.message.is_none() && !a.rec.cancel_requested;
                    let mapping = a.rec.mapping.clone();
                    if unmessaged && self.mail_rule(&mapping).is_some() {
                        // Looked for in the sent copy of the message it left (a draft sent by
                        // hand), and not there: it goes in a new message (seed 4233: it waited
                        // for ever, in none).
                        self.release_lock(id);
                        if let Some(a) = self.active.get_mut(id) {
                            a.rec.target = None;
                        }
                        self.persist(id, out);
                        self.collect(id);
                        return;
                    }
                    self.persist(id, out);
                }
            }
            LookOutcome::Failed(Fault::Permanent(_)) if old_draft_gone => self.unbind(id, out),
            LookOutcome::Failed(Fault::Permanent(f)) => {
                if a.rec.cancel_requested {
                    // (A draft that is not found holds no copy of it: nothing to settle.)
                    if f.code != ITEM_NOT_FOUND && self.doubt_holds_a_message(id) {
                        // A copy perhaps on a draft still to be sent: it is settled first.
                        let n = self.active[id].rec.attempts.saturating_add(1);
                        self.look_again(id, n, out);
                        return;
                    }
                    let Some(a) = self.active.get_mut(id) else {
                        return;
                    };
                    // Cannot tell whether it landed: keep the doubt on record.
                    a.rec.state = State::Canceled;
                    a.rec.cancel_requested = false;
                    self.persist(id, out);
                    return;
                }
                self.fail(id, f, out)
            }
            LookOutcome::Failed(f) => self.on_fault(id, f, out),
        }
    }

    fn on_delete_session(&mut self, id: &str, d: DeleteOutcome, out: &mut Vec<Action>) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        match d {
            DeleteOutcome::Deleted | DeleteOutcome::Failed(Fault::Permanent(_)) => {
                a.rec.session = None;
                a.next_offset = None;
                out.push(Action::ForgetUrl { id: id.to_owned() });
                self.persist(id, out);
            }
            DeleteOutcome::Failed(f) => {
                // A refusal to admit it (429) is not a failure of it: only those count.
                if !matches!(f, Fault::Throttled { .. }) {
                    a.rec.attempts += 1;
                }
                let n = a.rec.attempts;
                if n >= self.policy.max_attempts.max(5) * 2 {
                    // The server keeps it until it expires; forget the URL, not the file.
                    a.rec.session = None;
                    out.push(Action::ForgetUrl { id: id.to_owned() });
                    self.persist(id, out);
                    // Its next request still waits what this answer asked.
                    self.wait(id, retry_wait_ms(id, n, &f));
                    return;
                }
                if matches!(f, Fault::SignIn(_)) {
                    self.on_fault(id, f, out);
                } else {
                    self.wait(id, retry_wait_ms(id, n, &f));
                }
            }
        }
    }

    fn on_delete_attachment(&mut self, id: &str, d: DeleteOutcome, out: &mut Vec<Action>) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        let ok = matches!(
            d,
            DeleteOutcome::Deleted | DeleteOutcome::Failed(Fault::Permanent(_))
        );
        let mut then_wait = None;
        if !ok {
            if let DeleteOutcome::Failed(f) = d {
                // A refusal to admit it (429) is not a failure of it: only those count.
                if !matches!(f, Fault::Throttled { .. }) {
                    a.rec.attempts += 1;
                }
                let n = a.rec.attempts;
                if n < self.policy.max_attempts.max(5) * 2 {
                    if matches!(f, Fault::SignIn(_)) {
                        self.on_fault(id, f, out);
                    } else {
                        self.wait(id, retry_wait_ms(id, n, &f));
                    }
                    return;
                }
                // Given up on: its next request still waits what this answer asked.
                then_wait = Some(retry_wait_ms(id, n, &f));
            }
        }
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        a.rec.attempts = 0;
        if !a.rec.garbage.is_empty() {
            a.rec.garbage.remove(0);
        } else if !a.rec.replaces.is_empty() {
            let r = a.rec.replaces.remove(0);
            // Its own earlier copy (a re-attach) leaves it unreplaced: its new one stays.
            let own_old = r.entry == id && a.rec.attachment_id.as_ref() != Some(&r.attachment_id);
            if ok && !own_old {
                self.mark_replaced(&r.entry, id, out);
            }
        }
        self.persist(id, out);
        if let Some(ms) = then_wait {
            self.wait(id, ms);
        }
    }

    /// `entry`'s attachment is no longer its file's (a newer version, done by `by`, took its
    /// place). In memory if it still has work (its own next write carries the mark), else in
    /// the ledger.
    fn mark_replaced(&mut self, entry: &str, by: &str, out: &mut Vec<Action>) {
        if let Some(other) = self.active.get_mut(entry) {
            other.rec.replaced = true;
            if entry != by {
                self.persist(entry, out);
            }
        } else {
            out.push(Action::MarkReplaced {
                id: entry.to_owned(),
            });
        }
        self.forget_done(entry);
    }

    /// `others` (done versions of `path` beside entry `id`) split into those of the same owner
    /// as `id`'s file, which versions replace, and the ids of those of another owner, which stay.
    fn split_by_owner(
        &self,
        id: &str,
        mapping: &str,
        path: &Path,
        others: Vec<DoneRef>,
    ) -> (Vec<DoneRef>, Vec<String>) {
        let Some(mine) = self.active.get(id).map(|a| a.rec.file) else {
            return (others, Vec::new());
        };
        let owners = self
            .path_info(mapping, path)
            .map(|i| i.owners.as_slice())
            .unwrap_or_default();
        let mut beside = Vec::new();
        let same = others
            .into_iter()
            .filter(|(_, pid, ..)| {
                let owner = owners.iter().find(|(o, _)| o == pid).map(|(_, u)| *u);
                let theirs = FileStat { owner, ..mine };
                let same = mine.same_owner(&theirs);
                if !same {
                    beside.push(pid.clone());
                }
                same
            })
            .collect();
        (same, beside)
    }

    /// `entry` no longer counts as done on any item (replaced, or its draft is gone).
    fn forget_done(&mut self, entry: &str) {
        for info in self.paths.values_mut().flat_map(|m| m.values_mut()) {
            info.done.retain(|(_, did, ..)| did != entry);
            info.owners.retain(|(oid, _)| oid != entry);
        }
        for names in self.attached.values_mut() {
            for list in names.values_mut() {
                list.retain(|(_, _, e)| e != entry);
            }
            names.retain(|_, l| !l.is_empty());
        }
        self.attached.retain(|_, n| !n.is_empty());
    }

    fn on_after(&mut self, id: &str, r: AfterOutcome, out: &mut Vec<Action>) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        match r {
            AfterOutcome::Done | AfterOutcome::NotTheSameFile => {
                a.rec.after_done = true;
                a.rec.error = None;
                let removed = r == AfterOutcome::Done
                    && self
                        .mappings
                        .get(&a.rec.mapping)
                        .is_some_and(|m| m.after != After::Keep && m.mail.is_some());
                if removed {
                    // Moved or deleted: the same bytes at its path later are a new drop.
                    let (mapping, path) = (a.rec.mapping.clone(), a.rec.path.clone());
                    self.persist(id, out);
                    if self.newest(&mapping, &path).is_some_and(|b| b.id == id) {
                        self.file_left(&mapping, &path, out);
                    }
                    return;
                }
            }
            AfterOutcome::Failed(f) => {
                // Shown on the row; run again by `retry` of the entry, not by itself.
                a.rec.error = Some(f);
                a.rec.after_done = true;
                a.rec.after_failed = true;
            }
        }
        self.persist(id, out);
    }

    /// The failed file went to `failed_dir` (on record: `retry` takes it back from there), or
    /// stayed where it was (the executor said why in its log).
    fn on_to_failed_dir(&mut self, id: &str, r: MoveOutcome, out: &mut Vec<Action>) {
        if let Some(a) = self.active.get_mut(id) {
            a.rec.failed_dir_asked = false;
            if let MoveOutcome::Moved { to, file } = r {
                a.rec.failed_to = Some(to);
                a.rec.file = file;
            }
        }
        self.persist(id, out);
        if self.active.get(id).is_some_and(|a| a.retry_when_moved) {
            // Retried while it moved: now, from where it is.
            let rec = self.active[id].rec.clone();
            self.finish(id);
            self.retry(vec![rec], out);
        }
    }

    /// `retry` of entry `id` while its move to `failed_dir` is under way: taken once the move
    /// is answered (else the retry would be lost, and its message fail again for it).
    pub(super) fn retry_after_move(&mut self, id: &str) {
        if let Some(a) = self.active.get_mut(id) {
            // (Failed, at work on another step than its move, too: its session's delete, say.
            // Before, such a retry was dropped.)
            if a.rec.state.is_terminal() {
                a.retry_when_moved = true;
            }
        }
    }

    /// The retried file is back at its path (it goes on as retried), or could not be taken
    /// back: it fails again, saying why (its message, if any, is not sent without it).
    fn on_from_failed_dir(&mut self, id: &str, r: MoveOutcome, out: &mut Vec<Action>) {
        match r {
            MoveOutcome::Moved { file, .. } => {
                if let Some(a) = self.active.get_mut(id) {
                    a.rec.failed_to = None;
                    a.rec.file = file;
                }
                // `persist` indexes it: the path index knows its file as it is back there.
                self.persist(id, out);
            }
            MoveOutcome::Refused(f) => {
                let from = self
                    .active
                    .get(id)
                    .and_then(|a| a.rec.failed_to.clone())
                    .unwrap_or_default();
                let why = Failure::new(
                    FAILED_DIR_REFUSED,
                    format!(
                        "it could not be taken back from {}: {}; move it back into its folder by hand, then `outbox retry {id}`",
                        from.display(),
                        f.message
                    ),
                );
                self.fail(id, why, out);
            }
        }
    }

    /// A version that failed (or was rejected) as it was first seen, never active: with a
    /// `failed_dir` it is taken in for its move there (then it leaves again).
    fn set_aside(&mut self, rec: Record) {
        if self.policy.failed_dirs.contains(&rec.mapping) && !self.active.contains_key(&rec.id) {
            self.activate(rec);
        }
    }

    // ---- commands -----------------------------------------------------------------------------

    fn cancel(&mut self, id: &str, out: &mut Vec<Action>) {
        let now = self.now;
        if let Some(a) = self.active.get_mut(id) {
            if !a.rec.state.is_terminal() {
                a.rec.cancel_requested = true;
                a.rec.error = Some(Failure::new("canceled", "canceled by the user"));
                a.rec.updated_at = now;
                out.push(Action::Persist(a.rec.clone()));
                self.make_ready(id);
            }
        }
    }
}

/// How long to wait before asking again after `f`: the server's Retry-After when it gave one
/// (never less), else the backoff for attempt `n`.
pub fn retry_wait_ms(id: &str, n: u32, f: &Fault) -> u64 {
    match f {
        Fault::Throttled {
            retry_after_ms: Some(ms),
        } => *ms,
        _ => backoff_ms(id, n),
    }
}

/// Whether a record has anything left to do.
const TOO_LARGE: &str = "fileTooLarge";

fn too_large(path: &Path, size: u64) -> Failure {
    Failure::new(
        TOO_LARGE,
        format!(
            "{} is {size} bytes, over Graph's 150 MiB ({MAX_ATTACHMENT} bytes) attachment limit; it was not sent",
            path.display(),
        ),
    )
}

/// Files settled and waiting for a hash worker, a queue per mapping: the next goes to the
/// mapping with the fewest being hashed (in turn among equals), so one mapping's big files
/// cannot hold another's small ones in `settling`.
#[derive(Debug, Default)]
struct HashQueue {
    queues: BTreeMap<String, VecDeque<(PathBuf, FileStat)>>,
    len: usize,
    /// The mapping served last (turns go round after it).
    last: Option<String>,
}

impl HashQueue {
    fn push(&mut self, mapping: String, path: PathBuf, stat: FileStat) {
        self.queues
            .entry(mapping)
            .or_default()
            .push_back((path, stat));
        self.len += 1;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn len(&self) -> usize {
        self.len
    }

    fn paths(&self) -> impl Iterator<Item = &Path> + '_ {
        self.queues
            .values()
            .flat_map(|q| q.iter().map(|(p, _)| p.as_path()))
    }

    /// The next file to hash, given how many of each mapping are being hashed; none of a
    /// mapping that has `cap` being hashed.
    fn pop(
        &mut self,
        hashing: &BTreeMap<OsString, (String, FileStat)>,
        cap: usize,
    ) -> Option<(String, PathBuf, FileStat)> {
        let busy = |m: &str| hashing.values().filter(|(hm, _)| hm == m).count();
        let after = |m: &String| self.last.as_ref().is_some_and(|l| m > l);
        let mapping = self
            .queues
            .keys()
            .map(|m| (busy(m), m))
            .filter(|(b, _)| *b < cap)
            .min_by_key(|(b, m)| (*b, !after(m)))?
            .1
            .clone();
        let q = self.queues.get_mut(&mapping)?;
        let (path, stat) = q.pop_front()?;
        if q.is_empty() {
            self.queues.remove(&mapping);
        }
        self.len -= 1;
        self.last = Some(mapping.clone());
        Some((mapping, path, stat))
    }
}

/// Whether a report that its path is gone (confirmed by a look) cancels `r`: a version at work,
/// not already canceled, and not one known to be in `failed_dir` (its move back says whether it
/// can come, never a report that the path is empty).
fn cancels_if_gone(r: &Record) -> bool {
    !r.state.is_terminal() && !r.cancel_requested && r.failed_to.is_none()
}

pub fn has_work(r: &Record) -> bool {
    !r.state.is_terminal()
        || r.session.is_some()
        || r.failed_dir_asked
        || !r.garbage.is_empty()
        || (r.state == State::Done && (!r.replaces.is_empty() || !r.after_done))
}

fn make_id(mapping: &str, path: &Path, seq: u64, now: Time, n: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(mapping.as_bytes());
    h.update([0]);
    h.update(path.as_os_str().as_encoded_bytes());
    h.update(seq.to_le_bytes());
    h.update(now.0.to_le_bytes());
    h.update(n.to_le_bytes());
    hex::encode(&h.finalize()[..6])
}

#[cfg(test)]
mod failed_dir_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
