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
    cap_frees_at, civil_date, held_backoff_ms, FOUND_MAILED, HELD_BY_DRAFT, HELD_TRIES,
    MESSAGE_TOO_LARGE, NO_FILES_LEFT,
};

#[path = "messages.rs"]
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

/// What the core knows and decides. See the module doc.
#[derive(Debug)]
pub struct Machine {
    now: Time,
    policy: Policy,
    mappings: BTreeMap<String, MappingRule>,
    unavailable: BTreeSet<String>,
    settler: Settler,
    // Paths are kept by their bytes (`OsString` orders by bytes, `PathBuf` component by
    // component, which with 100,000 files was most of start-up's time).
    stats_out: BTreeSet<OsString>,
    hash_queue: HashQueue,
    hash_queued: BTreeSet<OsString>,
    hashing: BTreeSet<OsString>,
    /// What each path being hashed was: its mapping and the stat that settled.
    hash_info: BTreeMap<OsString, (String, FileStat)>,
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
        let settler = Settler::new(
            policy.settle_ms,
            policy.settle_after_close_ms,
            policy.max_settle_ms,
        );
        Machine {
            now: Time(0),
            mappings: mappings.into_iter().map(|m| (m.name.clone(), m)).collect(),
            policy,
            unavailable: BTreeSet::new(),
            settler,
            stats_out: BTreeSet::new(),
            hash_queue: HashQueue::default(),
            hash_queued: BTreeSet::new(),
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
        s
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
                if self.mappings.contains_key(&mapping)
                    && !self.hash_queued.contains(path.as_os_str())
                    && (self.settler.is_settling(&path) || !self.nothing_new(&mapping, &path, stat))
                {
                    self.settler.observe(&mapping, &path, stat, self.now);
                }
            }
            Input::Closed { path } => self.settler.closed(&path, self.now),
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
                | Outcome::StampKeys(_) => self.message_outcome(&id, outcome, &mut out),
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
            Input::Config { mappings, policy } => {
                self.settler.set_timing(
                    policy.settle_ms,
                    policy.settle_after_close_ms,
                    policy.max_settle_ms,
                );
                self.policy = policy;
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

    /// Failed or canceled records back to pending (`retry`, or a revived version). A done
    /// record (the executor sends one only when `retry` names it) redoes what went wrong: its
    /// failed after-action; or else its attachment, which `verify` found wrong or missing: the
    /// file is attached again and then the recorded attachment deleted (as `replaces`, the way
    /// an older version's goes), ending with one good copy.
    fn retry(&mut self, records: Vec<Record>, out: &mut Vec<Action>) {
        for mut rec in records {
            if rec.resend && rec.state == State::Done {
                self.resend(rec, out);
                continue;
            }
            if self.active.contains_key(&rec.id) {
                continue;
            }
            match rec.state {
                State::Failed | State::Canceled => {}
                State::Done if rec.after_failed => {
                    rec.after_done = false;
                    rec.after_failed = false;
                    rec.error = None;
                    rec.updated_at = self.now;
                    out.push(Action::Persist(rec.clone()));
                    self.activate(rec);
                    continue;
                }
                State::Done => {
                    let Some(bad) = rec.attachment_id.take() else {
                        continue;
                    };
                    rec.replaces.push(Replaced {
                        entry: rec.id.clone(),
                        attachment_id: bad,
                    });
                    rec.may_exist = false;
                    rec.bytes_sent = 0;
                }
                _ => continue,
            }
            rec.state = State::Pending;
            rec.attempts = 0;
            rec.restarts = 0;
            rec.error = None;
            rec.cancel_requested = false;
            rec.updated_at = self.now;
            out.push(Action::Persist(rec.clone()));
            self.index(&rec);
            let id = rec.id.clone();
            self.activate(rec);
            self.retried_member(&id, out);
        }
    }

    // ---- start-up ---------------------------------------------------------------------------

    fn start(&mut self, mut records: Vec<Record>, with_url: Vec<String>, out: &mut Vec<Action>) {
        // By seq, then id (entries migrated from before seqs all have 0).
        records.sort_unstable_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.id.cmp(&b.id)));
        // What start-up must tell messages about: only records of mailing mappings (a ledger
        // of 100,000 done files of ordinary mappings is not copied).
        let seen: Vec<Record> = records
            .iter()
            .filter(|r| r.message.is_some() || self.mail_rule(&r.mapping).is_some())
            .cloned()
            .collect();
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
                (false, true) => {
                    // Saved before its record: no chunk was sent (each is recorded first).
                    rec.session = Some(SessionMark::default());
                    changed = true;
                }
                _ => {}
            }
            // A failed entry whose mapping now names another item goes to the fixed item.
            // (Not a mailing mapping's: its files have no item of their own, only their
            // message's draft.)
            if rec.state == State::Failed
                && !rec.may_exist
                && rec.session.is_none()
                && rec.garbage.is_empty()
                && self.mail_rule(&rec.mapping).is_none()
                && rec.message.is_none()
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

    /// An attachment this agent made or found on `rec`'s item with its name and bytes.
    fn known_attachment(&self, rec: &Record) -> Option<String> {
        let t = self.target_of(rec)?;
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
            .find(|(s, a, e)| *s == sha && *e != rec.id && !going(a))
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
        if let Some(a) = self.active.get_mut(&id) {
            if !a.rec.state.is_terminal() && !a.rec.cancel_requested {
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
            return;
        }
        if let Some(why) = self.over_message_limit(&mapping, &path, stat.size) {
            // A file alone over a mailing mapping's `max_message_size` is refused by its size
            // too, before a byte is read or a draft made (a file that grows past it between
            // its settle and its hash is caught when its message is made).
            let f = Failure::new(MESSAGE_TOO_LARGE, why);
            let mut rec = self.new_record(&mapping, &path, stat, None);
            rec.state = State::Failed;
            rec.error = Some(f.clone());
            self.failed_this_run += 1;
            out.push(Action::Persist(rec.clone()));
            out.push(Action::Notify(Note::Failed {
                id: rec.id.clone(),
                path: path.clone(),
                failure: f,
            }));
            self.supersede_older(&mapping, &path, &rec.id, out);
            self.index(&rec);
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
        let Some((mapping, stat)) = self.hash_info.remove(path.as_os_str()) else {
            return;
        };
        match result {
            HashResult::Changed => {
                // Not the file that settled: settle it again.
                self.settler.observe(&mapping, &path, stat, self.now);
            }
            HashResult::Gone => {}
            HashResult::Unreadable(f) => {
                if let Some(b) = self.newest(&mapping, &path) {
                    if b.file == stat && b.error_code.as_deref() == Some(UNREADABLE) {
                        return;
                    }
                }
                let f = Failure::new(UNREADABLE, f.message);
                let mut rec = self.new_record(&mapping, &path, stat, None);
                rec.state = State::Failed;
                rec.error = Some(f.clone());
                self.failed_this_run += 1;
                out.push(Action::Persist(rec.clone()));
                out.push(Action::Notify(Note::Failed {
                    id: rec.id.clone(),
                    path: path.clone(),
                    failure: f,
                }));
                self.supersede_older(&mapping, &path, &rec.id, out);
                self.index(&rec);
            }
            HashResult::Hashed { sha256, stat } => {
                self.new_version(mapping, path, stat, sha256, out)
            }
        }
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
        if has_work(&rec) {
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
        let mut name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A mailing mapping sends what others drop straight out of the user's mailbox: its
        // attachment names follow the letter's rule (`Invoice_\u{202E}fdp.exe` would read
        // "Invoice_exe.pdf", a newline would start a line), as `{name}` does. An item
        // mapping's attachment keeps the file's own name.
        if self.mail_rule(mapping).is_some() && name.chars().any(crate::mail::is_unsafe_in_letter) {
            name = name
                .chars()
                .map(|c| {
                    if crate::mail::is_unsafe_in_letter(c) {
                        crate::mail::REPLACEMENT
                    } else {
                        c
                    }
                })
                .collect();
        }
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
            Step::Local | Step::Finished | Step::After | Step::Idle => (String::new(), true),
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

    fn set_timer(&mut self, id: &str, t: Time) {
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
            if self.stats_out.insert(path.clone().into_os_string()) {
                self.settler.checking(&path);
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
                Step::Look { recent_ok: true } => {
                    let rec = self.active[id].rec.clone();
                    // The name first: an attachment it may adopt is then not being deleted.
                    if let Some(t) = self.target_of(&rec) {
                        if !self.take_lock(id, &t) {
                            return true;
                        }
                    }
                    if let Some(att) = self.known_attachment(&rec) {
                        // Already on the item, by this agent's own record: done, no request.
                        if let Some(a) = self.active.get_mut(id) {
                            a.rec.target =
                                self.mappings.get(&rec.mapping).map(|m| m.target.clone());
                        }
                        self.done(id, att, out);
                        continue;
                    }
                    return self.remote(id, Step::Look { recent_ok: true }, out);
                }
                Step::Look { recent_ok: false } => {
                    // Not before every request that may have made it is surely over.
                    let a = &self.active[id];
                    if let Some(t) = a.rec.effect_at.filter(|_| a.rec.may_exist) {
                        let ready = t.plus_ms(self.policy.look_after_ms);
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
            if r.may_exist {
                return Step::Look { recent_ok: false };
            }
            return Step::Local;
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
            Step::After | Step::Local | Step::Finished | Step::Idle | Step::FindKey => {
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
            Outcome::Key(k) => self.on_key(id, k, out),
            Outcome::CreateDraft(_)
            | Outcome::Find(..)
            | Outcome::Send(_)
            | Outcome::ListDraft(_)
            | Outcome::StampKeys(_) => {}
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
                // `if_exists` only for the item the file will now go to.
                let current = self.mappings.get(&a.rec.mapping).map(|m| m.target.clone());
                let rec = a.rec.clone();
                let looked_on = a.look_target.take().or_else(|| self.target_of(&rec));
                let Some(a) = self.active.get_mut(id) else {
                    return;
                };
                a.looked = looked_on == current;
                if a.rec.may_exist {
                    // Nothing of it is on the item: unbound, it goes to the mapping's item now
                    // (see `target_of`).
                    a.rec.may_exist = false;
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

pub fn has_work(r: &Record) -> bool {
    !r.state.is_terminal()
        || r.session.is_some()
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
mod tests {
    use super::*;

    #[test]
    fn the_size_rule_at_its_edges() {
        // Under the session minimum: always one POST.
        assert!(uses_post(0, "a.pdf"));
        assert!(uses_post(MIN_SESSION - 1, "a.pdf"));
        // Between: a POST while its body fits 4 MiB.
        assert!(uses_post(MIN_SESSION, "a.pdf"));
        assert!(uses_post(SESSION_THRESHOLD - 1 - 3 * 1024, "a.pdf"));
        // 3 MiB and over: a session.
        assert!(!uses_post(SESSION_THRESHOLD, "a.pdf"));
        assert!(!uses_post(SESSION_THRESHOLD + 1, "a.pdf"));
        // Just under 3 MiB, the base64 body passes 4 MiB: a session.
        assert!(!uses_post(SESSION_THRESHOLD - 1, "a.pdf"));
        // A long name pushes a file that would fit over the limit.
        let size = MAX_REQUEST_BODY / 4 * 3 - 200;
        assert!(uses_post(size, "a.pdf"));
        assert!(!uses_post(size, &"n".repeat(400)));
        // Too small for a session: a POST whatever the name makes of the body; at the session
        // minimum, the body decides.
        let huge = "n".repeat(2 << 20);
        assert!(uses_post(MIN_SESSION - 1, &huge));
        assert!(!uses_post(MIN_SESSION, &huge));
    }

    #[test]
    fn the_post_body_is_measured_exactly() {
        let fixed = r##"{"@odata.type":"#microsoft.graph.fileAttachment","name":,"contentType":,"contentBytes":""}"##.len() as u64;
        // "a.pdf" and "application/pdf", quoted; 3 bytes encode to 4.
        assert_eq!(post_body_len(3, "a.pdf"), fixed + 7 + 17 + 4);
        assert_eq!(post_body_len(4, "a.pdf"), fixed + 7 + 17 + 8);
        assert_eq!(post_body_len(0, "x"), fixed + 3 + 26);
        // A quote in the name is escaped.
        assert_eq!(post_body_len(0, "\"") - post_body_len(0, "x"), 1);
    }

    /// Drive one small file through the machine: a POST whose answer is lost (ambiguous) only
    /// after `answer_after_ms`, then wake-ups until the look. Answers the time of the look.
    fn look_time_after_a_lost_post(answer_after_ms: u64, look_after_ms: u64) -> u64 {
        let target = Target {
            user: "me".into(),
            kind: ItemKind::Message,
            item_id: "item".into(),
        };
        let rule = MappingRule {
            name: "m".into(),
            target,
            if_exists: IfExists::Attach,
            on_change: OnChange::Add,
            after: After::Keep,
            mail: None,
        };
        let policy = Policy {
            look_after_ms,
            ..Policy::default()
        };
        let mut m = Machine::new(vec![rule], policy);
        let file = FileStat {
            dev: 1,
            ino: 2,
            size: 10,
            mtime_ns: 1,
            ctime_ns: 1,
            owner: None,
        };
        let rec = Record::pending(
            "e1".into(),
            "m".into(),
            "/f/a.txt".into(),
            "a.txt".into(),
            file,
            Some("ab".repeat(32)),
            1,
            Time(0),
        );
        let mut now = Time(0);
        let mut actions = m.handle(
            now,
            Input::Start {
                records: vec![rec],
                with_url: vec![],
                messages: vec![],
            },
        );
        let mut posted = None;
        for _ in 0..100 {
            let mut wake = None;
            for a in std::mem::take(&mut actions) {
                match a {
                    Action::Stat { path } => actions.extend(m.handle(
                        now,
                        Input::Stat {
                            path,
                            stat: Some(file),
                        },
                    )),
                    Action::Hash { path, stat, .. } => actions.extend(m.handle(
                        now,
                        Input::Hashed {
                            path,
                            result: HashResult::Hashed {
                                sha256: "ab".repeat(32),
                                stat,
                            },
                        },
                    )),
                    Action::Post { id, .. } => {
                        assert!(posted.is_none(), "a second POST before any look");
                        posted = Some(now);
                        now = now.plus_ms(answer_after_ms);
                        let lost = PostOutcome::Failed(Fault::Ambiguous(Failure::new(
                            "ConnectionDropped",
                            "lost",
                        )));
                        actions.extend(m.handle(
                            now,
                            Input::Outcome {
                                id,
                                outcome: Outcome::Post(lost),
                            },
                        ));
                    }
                    Action::Look { .. } => return now.0,
                    Action::WakeAt(t) => wake = Some(t),
                    _ => {}
                }
            }
            if actions.is_empty() {
                let t = wake.expect("the machine waits for something");
                now = now.max(t);
                actions = m.handle(now, Input::Tick);
            }
        }
        panic!("no look");
    }

    #[test]
    fn the_look_after_a_lost_answer_waits_from_when_the_answer_ended() {
        // A POST that took 3 s to be lost could take effect at any moment of those 3 s: the
        // look comes `look_after` after its end, not after it was sent (a listing that lags
        // behind the write would not show it yet, and the file would go twice).
        let t = look_time_after_a_lost_post(3_000, 2_000);
        assert!(t >= 5_000, "looked at {t} ms");
        // A quick loss: the backoff, then the look, no later than needed.
        let t = look_time_after_a_lost_post(10, 2_000);
        assert!((2_010..=2_010 + 2_000).contains(&t), "looked at {t} ms");
    }

    fn rule(if_exists: IfExists, after: After) -> MappingRule {
        MappingRule {
            name: "m".into(),
            target: Target {
                user: "me".into(),
                kind: ItemKind::Message,
                item_id: "item".into(),
            },
            if_exists,
            on_change: OnChange::Replace,
            after,
            mail: None,
        }
    }

    /// Issue #22 (noticed by the CLI round): a pending entry whose mapping was removed from the
    /// config fails (`mappingRemoved`) and `run --once` then ends, instead of waiting for ever.
    #[test]
    fn an_entry_of_a_removed_mapping_fails_and_leaves_the_machine_quiescent() {
        let mut m = Machine::new(vec![rule(IfExists::Skip, After::Keep)], Policy::default());
        let rec = Record::pending(
            "e9".into(),
            "gone".into(),
            "/g/x.txt".into(),
            "x.txt".into(),
            FileStat {
                dev: 1,
                ino: 9,
                size: 3,
                mtime_ns: 1,
                ctime_ns: 1,
                owner: None,
            },
            Some("cd".repeat(32)),
            1,
            Time(0),
        );
        let mut out = m.handle(
            Time(0),
            Input::Start {
                records: vec![rec],
                with_url: vec![],
                messages: vec![],
            },
        );
        out.extend(m.handle(Time(10), Input::Tick));
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Persist(r) if r.state == State::Failed)),
            "{out:?}"
        );
        assert!(
            m.quiescent() || m.only_blocked(),
            "still at work: {:?}",
            m.active()
                .map(|(r, t)| (r.id.clone(), r.state, t))
                .collect::<Vec<_>>()
        );
    }

    fn done_record() -> Record {
        let mut r = Record::pending(
            "e1".into(),
            "m".into(),
            "/f/a.txt".into(),
            "a.txt".into(),
            FileStat {
                size: 10,
                ..FileStat::default()
            },
            Some("ab".repeat(32)),
            1,
            Time(1),
        );
        r.state = State::Done;
        r.target = Some(rule(IfExists::Skip, After::Keep).target);
        r.attachment_id = Some("bad".into());
        r.after_done = true;
        r
    }

    fn persisted(actions: &[Action]) -> Option<&Record> {
        actions.iter().rev().find_map(|a| match a {
            Action::Persist(r) => Some(r),
            _ => None,
        })
    }

    #[test]
    fn a_file_seen_as_its_done_record_is_not_settled_and_a_changed_one_is() {
        // Start-up scans every done file: those unchanged must cost nothing (no settling, no
        // stat, no hash); one whose ctime moved settles; one with an after-action still to
        // run settles too (it runs only on bytes confirmed again).
        let mut m = Machine::new(vec![rule(IfExists::Skip, After::Keep)], Policy::default());
        let rec = done_record();
        let mut waiting = done_record();
        waiting.id = "e2".into();
        waiting.path = "/f/b.txt".into();
        waiting.name = "b.txt".into();
        waiting.after_done = false;
        m.handle(
            Time(10),
            Input::Start {
                records: vec![rec.clone(), waiting.clone()],
                with_url: vec![],
                messages: vec![],
            },
        );
        let seen = |path: &Path, stat| Input::Observed {
            mapping: "m".into(),
            path: path.to_path_buf(),
            stat,
        };
        m.handle(Time(11), seen(&rec.path, rec.file));
        assert!(m.settler().is_empty(), "an unchanged done file settles");
        m.handle(Time(12), seen(&waiting.path, waiting.file));
        assert!(m.settler().is_settling(&waiting.path));
        let mut touched = rec.file;
        touched.ctime_ns += 1;
        m.handle(Time(13), seen(&rec.path, touched));
        assert!(m.settler().is_settling(&rec.path));
        assert_eq!(m.settler().len(), 2);
    }

    #[test]
    fn retrying_a_done_entry_attaches_again_then_deletes_the_bad_copy() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let rec = done_record();
        assert!(m
            .handle(
                Time(10),
                Input::Start {
                    records: vec![rec.clone()],
                    with_url: vec![],
                    messages: vec![],
                }
            )
            .is_empty());
        let out = m.handle(Time(20), Input::Retry { records: vec![rec] });
        // It looks first (a fresh listing, by the bytes): the recorded copy may be good.
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Look { id, recent_ok: false, .. } if id == "e1")));
        assert!(!out.iter().any(|a| matches!(a, Action::Post { .. })));
        let out = m.handle(
            Time(25),
            Input::Outcome {
                id: "e1".into(),
                outcome: Outcome::Look(LookOutcome::NotFound),
            },
        );
        let r = persisted(&out).expect("persisted");
        assert_eq!(r.state, State::Uploading);
        assert_eq!(r.attachment_id, None);
        assert_eq!(
            r.replaces,
            vec![Replaced {
                entry: "e1".into(),
                attachment_id: "bad".into()
            }]
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Post { id, .. } if id == "e1")));
        // The new copy is there: the bad one is deleted, by its recorded id.
        let out = m.handle(
            Time(30),
            Input::Outcome {
                id: "e1".into(),
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "good".into(),
                }),
            },
        );
        assert!(out.iter().any(|a| matches!(
            a,
            Action::DeleteAttachment { attachment_id, .. } if attachment_id == "bad"
        )));
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if attachment_id == "good")));
        let out = m.handle(
            Time(40),
            Input::Outcome {
                id: "e1".into(),
                outcome: Outcome::DeleteAttachment(DeleteOutcome::Deleted),
            },
        );
        let r = persisted(&out).expect("persisted");
        assert_eq!(r.state, State::Done);
        assert_eq!(r.attachment_id.as_deref(), Some("good"));
        assert!(r.replaces.is_empty() && !r.replaced, "{r:?}");
        assert!(!out.iter().any(|a| matches!(a, Action::MarkReplaced { .. })));
        assert!(m.quiescent());
    }

    #[test]
    fn a_re_attach_that_finds_its_own_recorded_copy_deletes_nothing() {
        let mut m = Machine::new(vec![rule(IfExists::Skip, After::Keep)], Policy::default());
        let rec = done_record();
        m.handle(Time(10), Input::Retry { records: vec![rec] });
        let out = m.handle(
            Time(30),
            Input::Outcome {
                id: "e1".into(),
                outcome: Outcome::Look(LookOutcome::Found {
                    attachment_id: "bad".into(),
                }),
            },
        );
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::DeleteAttachment { .. })));
        let r = persisted(&out).expect("persisted");
        assert_eq!(
            (r.state, r.attachment_id.as_deref()),
            (State::Done, Some("bad"))
        );
        assert!(r.replaces.is_empty());
    }

    #[test]
    fn retrying_a_failed_after_action_runs_it_again_and_attaches_nothing() {
        let mut m = Machine::new(vec![rule(IfExists::Skip, After::Move)], Policy::default());
        let mut rec = done_record();
        rec.after_failed = true;
        rec.error = Some(Failure::new("afterAction", "read-only"));
        let out = m.handle(Time(10), Input::Retry { records: vec![rec] });
        let r = persisted(&out).expect("persisted");
        assert!(!r.after_done && !r.after_failed && r.error.is_none());
        assert_eq!(r.attachment_id.as_deref(), Some("bad"));
        assert!(out.iter().any(|a| matches!(a, Action::After { .. })));
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::Post { .. } | Action::Look { .. })));
    }

    #[test]
    fn a_sign_in_pause_is_told_and_blocks_only_what_is_not_in_flight() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut rec = done_record();
        rec.state = State::Pending;
        rec.attachment_id = None;
        let mut two = rec.clone();
        two.id = "e2".into();
        two.path = "/f/b.txt".into();
        two.name = "b.txt".into();
        two.seq = 2;
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![rec, two],
                with_url: vec![],
                messages: vec![],
            },
        );
        let posts = out
            .iter()
            .filter(|a| matches!(a, Action::Post { .. }))
            .count();
        assert_eq!(posts, 2, "{out:?}");
        assert!(m.sign_in_pause().is_none());
        assert!(!m.only_blocked(), "two requests in flight");
        let _ = m.handle(
            Time(20),
            Input::Outcome {
                id: "e1".into(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::SignIn(Failure::new(
                    "InvalidAuthenticationToken",
                    "sign in",
                )))),
            },
        );
        let (until, why) = m.sign_in_pause().expect("paused");
        assert_eq!(until, Time(20).plus_ms(Policy::default().sign_in_pause_ms));
        assert_eq!(why.code, "InvalidAuthenticationToken");
        // e2's request is still in flight: `run --once` waits for it.
        assert!(!m.only_blocked());
        let _ = m.handle(
            Time(30),
            Input::Outcome {
                id: "e2".into(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::SignIn(Failure::new(
                    "InvalidAuthenticationToken",
                    "sign in",
                )))),
            },
        );
        // Now everything waits for sign-in only.
        assert!(m.only_blocked() && !m.quiescent());
    }

    #[test]
    fn start_up_reconciles_records_with_the_saved_upload_urls() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let big = FileStat {
            size: 5 << 20,
            ..FileStat::default()
        };
        // A record says a session is open, but its URL file is gone.
        let mut lost = done_record();
        lost.state = State::Uploading;
        lost.attachment_id = None;
        lost.file = big;
        lost.session = Some(SessionMark {
            sent_end: 4096,
            abandoned: false,
        });
        // A URL was saved, but the record was not written after it (a crash between).
        let mut saved = lost.clone();
        saved.id = "e2".into();
        saved.path = "/f/b.txt".into();
        saved.name = "b.txt".into();
        saved.seq = 2;
        saved.session = None;
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![lost, saved],
                with_url: vec!["e2".into(), "orphan".into()],
                messages: vec![],
            },
        );
        // The lost session cannot be reached: forgotten (it expires on its own).
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Persist(r) if r.id == "e1" && r.session.is_none())));
        // The saved one is asked where it stands before anything is sent to it.
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Persist(r) if r.id == "e2" && r.session == Some(SessionMark::default())
        )));
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::AskSession { id, .. } if id == "e2")));
        // A URL no record names is forgotten.
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::ForgetUrl { id } if id == "orphan")));
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::ForgetUrl { id } if id == "e2")));
    }

    #[test]
    fn backoff_grows_to_a_cap_with_jitter_in_its_upper_half() {
        for attempt in 0..20 {
            let d = backoff_ms("abc", attempt);
            let exp = (BACKOFF_BASE_MS << attempt.min(16)).min(BACKOFF_CAP_MS);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d}");
        }
        assert_eq!(backoff_ms("abc", 3), backoff_ms("abc", 3));
        assert_ne!(backoff_ms("abc", 5), backoff_ms("abd", 5));
    }

    #[test]
    fn what_status_asks_shows_what_is_settling_hashing_and_at_work() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let path = PathBuf::from("/f/a.txt");
        let stat = FileStat {
            ino: 7,
            size: 10,
            mtime_ns: 1,
            ..FileStat::default()
        };
        m.handle(
            Time(0),
            Input::Observed {
                mapping: "m".into(),
                path: path.clone(),
                stat,
            },
        );
        assert_eq!(m.settler().len(), 1);
        assert_eq!(m.hashing().count(), 0);
        let settle = Policy::default().settle_ms;
        let out = m.handle(Time(settle), Input::Tick);
        assert!(
            out.iter().any(|a| matches!(a, Action::Stat { .. })),
            "{out:?}"
        );
        let out = m.handle(
            Time(settle),
            Input::Stat {
                path: path.clone(),
                stat: Some(stat),
            },
        );
        assert!(
            out.iter().any(|a| matches!(a, Action::Hash { .. })),
            "{out:?}"
        );
        assert!(m.settler().is_empty());
        assert_eq!(m.hashing().collect::<Vec<_>>(), vec![path.as_path()]);
        let out = m.handle(
            Time(settle + 1),
            Input::Hashed {
                path: path.clone(),
                result: HashResult::Hashed {
                    sha256: "ab".repeat(32),
                    stat,
                },
            },
        );
        assert_eq!(m.hashing().count(), 0);
        let id = persisted(&out).expect("persisted").id.clone();
        let active: Vec<_> = m.active().map(|(r, w)| (r.id.clone(), w)).collect();
        assert_eq!(active, vec![(id.clone(), None)]);
        assert_eq!(m.record(&id).map(|r| r.state), Some(State::Uploading));
        assert!(m.record("nobody").is_none());
        // Unreachable: it waits, and says until when.
        m.handle(
            Time(settle + 2),
            Input::Outcome {
                id: id.clone(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Unreachable(Failure::new(
                    "ConnectionRefused",
                    "down",
                )))),
            },
        );
        let (_, until) = m.active().next().expect("still at work");
        assert!(until.is_some_and(|t| t > Time(settle + 2)), "{until:?}");
    }

    #[test]
    fn a_file_being_hashed_or_of_no_mapping_is_not_settled_again() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let path = PathBuf::from("/f/a.txt");
        let stat = FileStat {
            ino: 7,
            size: 10,
            mtime_ns: 1,
            ..FileStat::default()
        };
        let seen = |mapping: &str, stat| Input::Observed {
            mapping: mapping.into(),
            path: path.clone(),
            stat,
        };
        m.handle(Time(0), seen("gone", stat));
        assert!(m.settler().is_empty(), "a mapping the config does not have");
        m.handle(Time(0), seen("m", stat));
        let settle = Policy::default().settle_ms;
        m.handle(Time(settle), Input::Tick);
        let out = m.handle(
            Time(settle),
            Input::Stat {
                path: path.clone(),
                stat: Some(stat),
            },
        );
        assert!(
            out.iter().any(|a| matches!(a, Action::Hash { .. })),
            "{out:?}"
        );
        // While it is hashed, what the watcher reports of it waits for the hash's answer.
        let later = FileStat {
            mtime_ns: 2,
            ..stat
        };
        m.handle(Time(settle + 1), seen("m", later));
        assert!(m.settler().is_empty());
    }

    #[test]
    fn at_start_a_failed_entry_goes_to_its_mappings_new_item_unless_it_failed_there_or_may_be_there(
    ) {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let old = Target {
            item_id: "old".into(),
            ..rule(IfExists::Attach, After::Keep).target
        };
        let failed = |id: &str, seq: u64, code: &str, target: &Target| {
            let mut r = done_record();
            r.id = id.into();
            r.seq = seq;
            r.path = format!("/f/{id}.txt").into();
            r.name = format!("{id}.txt");
            r.state = State::Failed;
            r.attachment_id = None;
            r.after_done = false;
            r.target = Some(target.clone());
            r.error = Some(Failure::new(code, "refused"));
            r
        };
        let here = rule(IfExists::Attach, After::Keep).target;
        // Failed on the item the mapping named then: it goes to the one it names now.
        let moved = failed("f1", 1, "ErrorItemNotFound", &old);
        // Failed on the item the mapping still names: it waits for `retry`.
        let same = failed("f2", 2, "ErrorAccessDenied", &here);
        // Its last POST may have landed on the old item: it stays bound there.
        let mut doubt = failed("f3", 3, "ErrorItemNotFound", &old);
        doubt.may_exist = true;
        // Canceled, and unreadable: not failures of the item.
        let mut canceled = failed("f4", 4, "canceled", &old);
        canceled.state = State::Canceled;
        let unreadable = failed("f5", 5, UNREADABLE, &old);
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![moved, same, doubt, canceled, unreadable],
                with_url: vec![],
                messages: vec![],
            },
        );
        let persisted: Vec<&Record> = out
            .iter()
            .filter_map(|a| match a {
                Action::Persist(r) => Some(r),
                _ => None,
            })
            .collect();
        assert!(
            persisted.iter().all(|r| r.id == "f1"),
            "only f1 is revived: {persisted:?}"
        );
        let r = persisted.first().expect("f1 revived");
        assert_eq!(
            (r.state, r.target.as_ref(), r.error.as_ref()),
            (State::Pending, None, None)
        );
        assert!(out.iter().any(
            |a| matches!(a, Action::Post { id, target, .. } if id == "f1" && target.item_id == "item")
        ));
    }

    #[test]
    fn at_start_a_name_that_may_be_on_the_item_is_held_by_that_version_first() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut first = done_record();
        first.state = State::Pending;
        first.attachment_id = None;
        first.after_done = false;
        first.target = None;
        // Another file of the same name, later, whose POST's answer was lost.
        let mut doubt = first.clone();
        doubt.id = "e2".into();
        doubt.path = "/f/sub/a.txt".into();
        doubt.seq = 2;
        doubt.state = State::Uploading;
        doubt.target = Some(rule(IfExists::Attach, After::Keep).target);
        doubt.may_exist = true;
        doubt.effect_at = Some(Time(5));
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![first, doubt],
                with_url: vec![],
                messages: vec![],
            },
        );
        // e2 may be on the item under the name: nothing else goes under it until its look.
        assert!(
            !out.iter().any(|a| matches!(a, Action::Post { .. })),
            "{out:?}"
        );
        let look = Time(5).plus_ms(Policy::default().look_after_ms);
        let out = m.handle(look, Input::Tick);
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Look { id, .. } if id == "e2")));
        let out = m.handle(
            look,
            Input::Outcome {
                id: "e2".into(),
                outcome: Outcome::Look(LookOutcome::Found {
                    attachment_id: "att2".into(),
                }),
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Post { id, .. } if id == "e1")));
        // Done, and deleting the attachment of an older version it replaced: nobody takes the
        // name (or adopts that attachment) until it is gone.
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut replacing = done_record();
        replacing.id = "e2".into();
        replacing.path = "/f/sub/a.txt".into();
        replacing.seq = 2;
        replacing.replaces = vec![Replaced {
            entry: "e0".into(),
            attachment_id: "old".into(),
        }];
        let mut first = done_record();
        first.state = State::Pending;
        first.attachment_id = None;
        first.after_done = false;
        first.target = None;
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![first, replacing],
                with_url: vec![],
                messages: vec![],
            },
        );
        assert!(
            !out.iter().any(|a| matches!(a, Action::Post { .. })),
            "{out:?}"
        );
        let out = m.handle(
            Time(20),
            Input::Outcome {
                id: "e2".into(),
                outcome: Outcome::DeleteAttachment(DeleteOutcome::Deleted),
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Post { id, .. } if id == "e1")));
    }

    #[test]
    fn a_new_version_deletes_only_the_older_attachments_not_yet_replaced() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        // Version 1 was replaced by version 2 (its attachment is gone); version 3 is new.
        let mut v1 = done_record();
        v1.attachment_id = Some("a1".into());
        v1.replaced = true;
        let mut v2 = done_record();
        v2.id = "e2".into();
        v2.seq = 2;
        v2.attachment_id = Some("a2".into());
        let mut v3 = done_record();
        v3.id = "e3".into();
        v3.seq = 3;
        v3.state = State::Pending;
        v3.attachment_id = None;
        v3.after_done = false;
        v3.target = None;
        v3.sha256 = Some("cd".repeat(32));
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![v1, v2, v3],
                with_url: vec![],
                messages: vec![],
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Post { id, .. } if id == "e3")));
        let out = m.handle(
            Time(20),
            Input::Outcome {
                id: "e3".into(),
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a3".into(),
                }),
            },
        );
        let r = persisted(&out).expect("persisted");
        assert_eq!(
            r.replaces,
            vec![Replaced {
                entry: "e2".into(),
                attachment_id: "a2".into()
            }]
        );
        let deleted: Vec<&str> = out
            .iter()
            .filter_map(|a| match a {
                Action::DeleteAttachment { attachment_id, .. } => Some(attachment_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, vec!["a2"]);
    }

    /// Issue 23, item 1: a neighbour's same-name file in a shared folder (another owner) is
    /// added beside the user's version, never replacing it; the user's next version replaces
    /// only the user's earlier one, and says so.
    #[test]
    fn a_version_replaces_only_an_earlier_one_of_the_same_owner() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut v1 = done_record();
        v1.attachment_id = Some("a1".into());
        v1.file.owner = Some(1000);
        let mut v2 = done_record();
        v2.id = "e2".into();
        v2.seq = 2;
        v2.attachment_id = Some("a2".into());
        v2.file.owner = Some(65534);
        let mut v3 = done_record();
        v3.id = "e3".into();
        v3.seq = 3;
        v3.state = State::Pending;
        v3.attachment_id = None;
        v3.after_done = false;
        v3.target = None;
        v3.sha256 = Some("cd".repeat(32));
        v3.file.owner = Some(1000);
        m.handle(
            Time(10),
            Input::Start {
                records: vec![v1, v2, v3],
                with_url: vec![],
                messages: vec![],
            },
        );
        let out = m.handle(
            Time(20),
            Input::Outcome {
                id: "e3".into(),
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a3".into(),
                }),
            },
        );
        let r = persisted(&out).expect("persisted");
        assert_eq!(
            r.replaces,
            vec![Replaced {
                entry: "e1".into(),
                attachment_id: "a1".into()
            }]
        );
        assert_eq!(r.beside, vec!["e2".to_string()]);
        assert!(
            out.iter().any(|a| matches!(a,
                Action::Notify(Note::Attached { replaced: true, beside, .. }) if beside == &["e2"])),
            "{out:?}"
        );
        // The neighbour's version finishing after the user's newer one: neither attachment
        // goes (of one owner, the older version's own would).
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut mine = done_record();
        mine.id = "e5".into();
        mine.seq = 5;
        mine.attachment_id = Some("a5".into());
        mine.file.owner = Some(1000);
        let mut theirs = done_record();
        theirs.id = "e4".into();
        theirs.seq = 4;
        theirs.state = State::Pending;
        theirs.attachment_id = None;
        theirs.after_done = false;
        theirs.target = None;
        theirs.sha256 = Some("cd".repeat(32));
        theirs.file.owner = Some(65534);
        m.handle(
            Time(10),
            Input::Start {
                records: vec![mine, theirs],
                with_url: vec![],
                messages: vec![],
            },
        );
        let out = m.handle(
            Time(20),
            Input::Outcome {
                id: "e4".into(),
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a4".into(),
                }),
            },
        );
        assert!(
            !out.iter()
                .any(|a| matches!(a, Action::DeleteAttachment { .. })),
            "{out:?}"
        );
    }

    /// Issue 23, item 3: a file alone over a mailing mapping's `max_message_size` is refused
    /// when it settles, by its size: no hash, no draft; the same file seen again is the same
    /// refusal (no new entry); once a reload raises the limit it is hashed and mailed.
    #[test]
    fn a_file_alone_over_the_message_limit_is_refused_at_settle_unread() {
        let mailing = |limit: u64| MappingRule {
            mail: Some(MailRule {
                to: vec!["a@b.example".into()],
                subject: "s".into(),
                send: true,
                max_message_size: limit,
                ..MailRule::default()
            }),
            ..rule(IfExists::Attach, After::Keep)
        };
        let mut m = Machine::new(vec![mailing(1_000_000)], Policy::default());
        let path = PathBuf::from("/f/big.pdf");
        let stat = FileStat {
            dev: 1,
            ino: 5,
            size: 800_000,
            mtime_ns: 1,
            ctime_ns: 1,
            owner: None,
        };
        let out = settle(&mut m, 10, &path, stat);
        assert!(
            !out.iter().any(|a| matches!(a, Action::Hash { .. })),
            "{out:?}"
        );
        let r = persisted(&out).unwrap_or_else(|| panic!("refused: {out:?}"));
        assert_eq!(r.state, State::Failed);
        assert!(r.sha256.is_none());
        let why = r
            .error
            .as_ref()
            .map(|e| (e.code.as_str(), e.message.as_str()));
        assert!(
            why.is_some_and(|(c, t)| c == MESSAGE_TOO_LARGE
                && t.contains("big.pdf")
                && t.contains("max_message_size = 1000000")),
            "{why:?}"
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Notify(Note::Failed { .. }))),
            "{out:?}"
        );
        assert!(!out.iter().any(|a| matches!(a, Action::CreateDraft { .. })));
        assert_eq!(m.failed_this_run, 1);
        // Seen again (a rescan): the same refusal, nothing new.
        let out = settle(&mut m, 20_000, &path, stat);
        assert!(persisted(&out).is_none(), "{out:?}");
        assert_eq!(m.failed_this_run, 1);
        // The limit raised: the next sight of it hashes it.
        m.handle(
            Time(30_000),
            Input::Config {
                mappings: vec![mailing(2_000_000)],
                policy: Policy::default(),
            },
        );
        let out = settle(&mut m, 40_000, &path, stat);
        assert!(
            out.iter().any(|a| matches!(a, Action::Hash { .. })),
            "{out:?}"
        );
    }

    /// A neighbour's copy of the user's bytes at the path does not make the user's version the
    /// neighbour's (whose next version would then replace the user's attachment).
    #[test]
    fn the_same_bytes_from_another_owner_keep_the_versions_owner() {
        let path = PathBuf::from("/f/a.txt");
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut rec = done_record();
        rec.file.owner = Some(1000);
        m.handle(
            Time(10),
            Input::Start {
                records: vec![rec],
                with_url: vec![],
                messages: vec![],
            },
        );
        let copy = FileStat {
            dev: 1,
            ino: 77,
            size: 10,
            mtime_ns: 9,
            ctime_ns: 9,
            owner: Some(65534),
        };
        let out = settle(&mut m, 20, &path, copy);
        assert!(
            out.iter().any(|a| matches!(a, Action::Hash { .. })),
            "{out:?}"
        );
        let out = m.handle(
            Time(30_000),
            Input::Hashed {
                path: path.clone(),
                result: HashResult::Hashed {
                    sha256: "ab".repeat(32),
                    stat: copy,
                },
            },
        );
        let file = out
            .iter()
            .find_map(|a| match a {
                Action::UpdateFile { file, .. } => Some(*file),
                _ => None,
            })
            .unwrap_or_else(|| panic!("the stored record is updated: {out:?}"));
        assert_eq!((file.ino, file.owner), (77, Some(1000)));
    }

    #[test]
    fn with_replace_every_older_version_on_the_item_goes_under_the_id_it_has_now() {
        // Two older versions both on the item (made while the mapping said `add`), one new.
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut v1 = done_record();
        v1.attachment_id = Some("a1".into());
        let mut v2 = done_record();
        v2.id = "e2".into();
        v2.seq = 2;
        v2.attachment_id = Some("a2".into());
        let mut v3 = done_record();
        v3.id = "e3".into();
        v3.seq = 3;
        v3.state = State::Pending;
        v3.attachment_id = None;
        v3.after_done = false;
        v3.target = None;
        v3.sha256 = Some("cd".repeat(32));
        m.handle(
            Time(10),
            Input::Start {
                records: vec![v1, v2, v3],
                with_url: vec![],
                messages: vec![],
            },
        );
        let out = m.handle(
            Time(20),
            Input::Outcome {
                id: "e3".into(),
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a3".into(),
                }),
            },
        );
        let r = persisted(&out).expect("persisted");
        let mut doomed: Vec<&str> = r
            .replaces
            .iter()
            .map(|x| x.attachment_id.as_str())
            .collect();
        doomed.sort();
        assert_eq!(doomed, vec!["a1", "a2"]);

        // A version attached again (`retry` after `verify`) is on the item under its new id:
        // that is the one a newer version deletes.
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let rec = done_record();
        m.handle(
            Time(10),
            Input::Start {
                records: vec![rec.clone()],
                with_url: vec![],
                messages: vec![],
            },
        );
        m.handle(Time(20), Input::Retry { records: vec![rec] });
        let answers = [
            Outcome::Look(LookOutcome::NotFound),
            Outcome::Post(PostOutcome::Created {
                attachment_id: "good".into(),
            }),
            Outcome::DeleteAttachment(DeleteOutcome::Deleted),
        ];
        for (k, outcome) in answers.into_iter().enumerate() {
            m.handle(
                Time(30 + k as u64),
                Input::Outcome {
                    id: "e1".into(),
                    outcome,
                },
            );
        }
        // A new version of the file: settled and hashed.
        let path = PathBuf::from("/f/a.txt");
        let stat = FileStat {
            ino: 9,
            size: 12,
            ..FileStat::default()
        };
        let seen = Input::Observed {
            mapping: "m".into(),
            path: path.clone(),
            stat,
        };
        m.handle(Time(40), seen);
        let settled = Time(40).plus_ms(Policy::default().settle_ms);
        m.handle(settled, Input::Tick);
        m.handle(
            settled,
            Input::Stat {
                path: path.clone(),
                stat: Some(stat),
            },
        );
        let out = m.handle(
            settled,
            Input::Hashed {
                path,
                result: HashResult::Hashed {
                    sha256: "cd".repeat(32),
                    stat,
                },
            },
        );
        let v2 = out
            .iter()
            .find_map(|a| match a {
                Action::Post { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("the new version is posted");
        let out = m.handle(
            Time(60),
            Input::Outcome {
                id: v2,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a2".into(),
                }),
            },
        );
        let deleted: Vec<&str> = out
            .iter()
            .filter_map(|a| match a {
                Action::DeleteAttachment { attachment_id, .. } => Some(attachment_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, vec!["good"]);
    }

    #[test]
    fn an_attachment_on_its_way_out_is_never_adopted_as_the_same_bytes() {
        // v1's attachment holds the bytes a new version comes back with; v2 is deleting it
        // (as the older version it replaced, or as garbage).
        let v1 = {
            let mut r = done_record();
            r.attachment_id = Some("a1".into());
            r
        };
        let v2 = {
            let mut r = done_record();
            r.id = "e2".into();
            r.seq = 2;
            r.path = "/f/sub/a.txt".into();
            r.attachment_id = Some("a2".into());
            r.sha256 = Some("cd".repeat(32));
            r
        };
        let mut back = done_record();
        back.id = "e3".into();
        back.seq = 3;
        back.state = State::Pending;
        back.attachment_id = None;
        back.target = None;
        let known = |v2: Option<Record>| {
            let mut m = Machine::new(vec![rule(IfExists::Skip, After::Keep)], Policy::default());
            let records = [Some(v1.clone()), v2].into_iter().flatten().collect();
            m.handle(
                Time(10),
                Input::Start {
                    records,
                    with_url: vec![],
                    messages: vec![],
                },
            );
            m.known_attachment(&back)
        };
        assert_eq!(known(None).as_deref(), Some("a1"));
        let mut replacing = v2.clone();
        replacing.replaces = vec![Replaced {
            entry: "e1".into(),
            attachment_id: "a1".into(),
        }];
        assert_eq!(known(Some(replacing)), None);
        let mut collecting = v2.clone();
        collecting.garbage = vec!["a1".into()];
        assert_eq!(known(Some(collecting)), None);
    }

    /// The watcher reports `path` with `stat` at `t` and it settles: the actions answered.
    fn settle(m: &mut Machine, t: u64, path: &Path, stat: FileStat) -> Vec<Action> {
        let mut out = m.handle(
            Time(t),
            Input::Observed {
                mapping: "m".into(),
                path: path.to_path_buf(),
                stat,
            },
        );
        let settled = Time(t).plus_ms(Policy::default().settle_ms);
        out.extend(m.handle(settled, Input::Tick));
        out.extend(m.handle(
            settled,
            Input::Stat {
                path: path.to_path_buf(),
                stat: Some(stat),
            },
        ));
        out
    }

    #[test]
    fn a_file_deleted_before_it_was_attached_cancels_its_entry_with_no_request() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut rec = done_record();
        rec.state = State::Pending;
        rec.attachment_id = None;
        rec.after_done = false;
        rec.target = None;
        m.handle(
            Time(10),
            Input::Start {
                records: vec![rec],
                with_url: vec![],
                messages: vec![],
            },
        );
        // Unreachable: it waits to try again.
        m.handle(
            Time(20),
            Input::Outcome {
                id: "e1".into(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Unreachable(Failure::new(
                    "ConnectionRefused",
                    "down",
                )))),
            },
        );
        let out = m.handle(
            Time(30),
            Input::Gone {
                mapping: "m".into(),
                path: "/f/a.txt".into(),
            },
        );
        let r = persisted(&out).expect("persisted");
        assert!(r.cancel_requested, "{r:?}");
        assert_eq!(
            r.error.as_ref().map(|e| e.code.as_str()),
            Some("fileDeleted")
        );
        // Its wait over, it is canceled: nothing is sent.
        let out = m.handle(Time(120_000), Input::Tick);
        let r = persisted(&out).expect("persisted");
        assert_eq!(r.state, State::Canceled);
        assert!(!out.iter().any(|a| matches!(a, Action::Post { .. })));
        assert!(m.quiescent());
    }

    #[test]
    fn an_unchanged_file_settling_again_is_hashed_again_only_for_an_after_action_waiting() {
        let path = PathBuf::from("/f/a.txt");
        let stat = done_record().file;
        let hashed = |out: &[Action]| out.iter().any(|a| matches!(a, Action::Hash { .. }));
        // Done, its move not yet run: it runs only on bytes confirmed again.
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Move)], Policy::default());
        let mut rec = done_record();
        rec.after_done = false;
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![rec.clone()],
                with_url: vec![],
                messages: vec![],
            },
        );
        assert!(out.iter().any(|a| matches!(a, Action::After { .. })));
        assert!(hashed(&settle(&mut m, 20, &path, stat)));
        // Being uploaded: the same file again is nothing new.
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Move)], Policy::default());
        rec.state = State::Pending;
        rec.attachment_id = None;
        rec.target = None;
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![rec],
                with_url: vec![],
                messages: vec![],
            },
        );
        assert!(out.iter().any(|a| matches!(a, Action::Post { .. })));
        assert!(!hashed(&settle(&mut m, 20, &path, stat)));
    }

    #[test]
    fn an_unchanged_file_settling_again_is_hashed_again_if_unreadable_or_canceled_by_the_agent() {
        let path = PathBuf::from("/f/a.txt");
        let hashed_again = |state: State, code: Option<&str>| {
            let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
            let mut rec = done_record();
            rec.state = state;
            if state != State::Done {
                rec.attachment_id = None;
            }
            rec.error = code.map(|c| Failure::new(c, "why"));
            let stat = rec.file;
            m.handle(
                Time(10),
                Input::Start {
                    records: vec![rec],
                    with_url: vec![],
                    messages: vec![],
                },
            );
            settle(&mut m, 20, &path, stat)
                .iter()
                .any(|a| matches!(a, Action::Hash { .. }))
        };
        // It may read now.
        assert!(hashed_again(State::Failed, Some(UNREADABLE)));
        // Its bytes were not the hashed ones, or its file was swapped: it may come back.
        assert!(hashed_again(State::Canceled, Some(SUPERSEDED)));
        assert!(hashed_again(State::Canceled, Some("fileDeleted")));
        // Nothing new: failed at Graph, canceled by the user, done.
        assert!(!hashed_again(State::Failed, Some("ErrorAccessDenied")));
        assert!(!hashed_again(State::Canceled, Some("canceled")));
        assert!(!hashed_again(State::Done, None));
    }

    #[test]
    fn an_unreadable_file_fails_once_until_it_changes() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let path = PathBuf::from("/f/a.txt");
        let unreadable = |m: &mut Machine, t: u64, stat: FileStat| {
            let out = settle(m, t, &path, stat);
            assert!(
                out.iter().any(|a| matches!(a, Action::Hash { .. })),
                "{out:?}"
            );
            m.handle(
                Time(t + 10_000),
                Input::Hashed {
                    path: path.clone(),
                    result: HashResult::Unreadable(Failure::new("EACCES", "denied")),
                },
            )
        };
        let stat = done_record().file;
        let out = unreadable(&mut m, 0, stat);
        let r = persisted(&out).expect("a failed record");
        assert_eq!(
            (r.state, r.error.as_ref().map(|e| e.code.as_str())),
            (State::Failed, Some(UNREADABLE))
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Notify(Note::Failed { .. }))));
        assert_eq!(m.failed_this_run, 1);
        // Still unreadable, unchanged: tried again, nothing new to tell.
        let out = unreadable(&mut m, 20_000, stat);
        assert!(out.is_empty() || persisted(&out).is_none(), "{out:?}");
        assert_eq!(m.failed_this_run, 1);
        // Changed, and still unreadable: that version fails too.
        let changed = FileStat { size: 11, ..stat };
        let out = unreadable(&mut m, 40_000, changed);
        assert!(persisted(&out).is_some_and(|r| r.state == State::Failed && r.file == changed));
        assert_eq!(m.failed_this_run, 2);
    }

    #[test]
    fn the_same_bytes_back_revive_a_version_the_agent_canceled_not_one_canceled_or_failed() {
        let path = PathBuf::from("/f/a.txt");
        let updated = |state: State, code: &str, stat: FileStat| {
            let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
            let mut rec = done_record();
            rec.state = state;
            rec.attachment_id = None;
            rec.error = Some(Failure::new(code, "why"));
            m.handle(
                Time(10),
                Input::Start {
                    records: vec![rec],
                    with_url: vec![],
                    messages: vec![],
                },
            );
            let out = settle(&mut m, 20, &path, stat);
            assert!(
                out.iter().any(|a| matches!(a, Action::Hash { .. })),
                "{out:?}"
            );
            let out = m.handle(
                Time(30_000),
                Input::Hashed {
                    path: path.clone(),
                    result: HashResult::Hashed {
                        sha256: "AB".repeat(32),
                        stat,
                    },
                },
            );
            out.iter()
                .find_map(|a| match a {
                    Action::UpdateFile { id, file, revive } if id == "e1" && *file == stat => {
                        Some(*revive)
                    }
                    _ => None,
                })
                .expect("the stored record is updated, no new version")
        };
        let stat = done_record().file;
        // The file changed while it was sent, then came back to the bytes hashed.
        assert!(updated(State::Canceled, SUPERSEDED, stat));
        // Touched after the user canceled it: it stays canceled; after it failed at Graph: it
        // waits for `retry`.
        let touched = FileStat {
            mtime_ns: 5,
            ..stat
        };
        assert!(!updated(State::Canceled, "canceled", touched));
        assert!(!updated(State::Failed, "ErrorAccessDenied", touched));
    }

    #[test]
    fn the_same_bytes_back_take_back_the_agents_cancel_never_the_users() {
        let path = PathBuf::from("/f/a.txt");
        let after_touch = |cancel: Input| {
            let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
            let mut rec = done_record();
            rec.state = State::Pending;
            rec.attachment_id = None;
            rec.after_done = false;
            rec.target = None;
            let stat = rec.file;
            let out = m.handle(
                Time(10),
                Input::Start {
                    records: vec![rec],
                    with_url: vec![],
                    messages: vec![],
                },
            );
            assert!(out.iter().any(|a| matches!(a, Action::Post { .. })));
            // Asked while its POST is in flight: it settles what it sent first.
            let out = m.handle(Time(20), cancel);
            assert!(persisted(&out).is_some_and(|r| r.cancel_requested));
            let touched = FileStat {
                mtime_ns: 5,
                ..stat
            };
            settle(&mut m, 30, &path, touched);
            let out = m.handle(
                Time(30_000),
                Input::Hashed {
                    path: path.clone(),
                    result: HashResult::Hashed {
                        sha256: "ab".repeat(32),
                        stat: touched,
                    },
                },
            );
            persisted(&out).cloned().expect("persisted")
        };
        let r = after_touch(Input::Cancel { id: "e1".into() });
        assert!(r.cancel_requested, "{r:?}");
        assert_eq!(r.error.map(|e| e.code), Some("canceled".to_string()));
        // Reported gone, then back with the same bytes: it goes on.
        let r = after_touch(Input::Gone {
            mapping: "m".into(),
            path: path.clone(),
        });
        assert!(!r.cancel_requested && r.error.is_none(), "{r:?}");
    }

    #[test]
    fn a_file_over_150_mib_is_rejected_at_settle_unread_and_counted_one_of_150_mib_is_sent() {
        let path = PathBuf::from("/f/a.txt");
        let first_record = |size: u64| {
            let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
            let stat = FileStat {
                size,
                ..FileStat::default()
            };
            let mut out = settle(&mut m, 0, &path, stat);
            let hashed = out.iter().any(|a| matches!(a, Action::Hash { .. }));
            if hashed {
                out = m.handle(
                    Time(10_000),
                    Input::Hashed {
                        path: path.clone(),
                        result: HashResult::Hashed {
                            sha256: "ab".repeat(32),
                            stat,
                        },
                    },
                );
            }
            let first = out
                .iter()
                .find_map(|a| match a {
                    Action::Persist(r) => Some(r.state),
                    _ => None,
                })
                .expect("persisted");
            // Seen again unchanged (a rescan): nothing new, no second record, no hash.
            let again = settle(&mut m, 20_000, &path, stat);
            assert!(
                !again
                    .iter()
                    .any(|a| matches!(a, Action::Persist(_) | Action::Hash { .. })),
                "{again:?}"
            );
            (first, hashed, m.failed_this_run)
        };
        // A sparse 10 GiB file is refused by its size, never read.
        assert_eq!(first_record(10 << 30), (State::Rejected, false, 1));
        assert_eq!(
            first_record(MAX_ATTACHMENT + 1),
            (State::Rejected, false, 1)
        );
        assert_eq!(first_record(MAX_ATTACHMENT), (State::Pending, true, 0));
    }

    /// 92d7248: `outbox cancel` of a file rejected by its size clears it; the next run's scan of
    /// the same file (same stat) makes no new rejection (`run --once` would count it again).
    #[test]
    fn a_file_rejected_by_its_size_then_canceled_by_the_user_stays_cleared() {
        let path = PathBuf::from("/f/a.txt");
        let over = FileStat {
            size: MAX_ATTACHMENT + 1,
            ..FileStat::default()
        };
        // Whether `seen` at the path, with an unread record of `recorded`, is settled again.
        let seen_again = |state: State, code: &str, recorded: FileStat, seen: FileStat| {
            let mut rec = done_record();
            rec.file = recorded;
            rec.sha256 = None;
            rec.attachment_id = None;
            rec.state = state;
            rec.error = Some(Failure::new(code, "why"));
            let (mut m, _) = started(Policy::default(), After::Keep, vec![rec]);
            settle(&mut m, 20, &path, seen)
                .into_iter()
                .any(|a| matches!(a, Action::Persist(_) | Action::Hash { .. }))
        };
        assert!(!seen_again(State::Canceled, "canceled", over, over));
        assert!(!seen_again(State::Rejected, TOO_LARGE, over, over));
        // Another file at the path is new.
        let other = FileStat { ino: 9, ..over };
        assert!(seen_again(State::Canceled, "canceled", over, other));
        // Unread and not over the limit, it was unreadable; canceled by the user it is read
        // again, as every unreadable file is (it may read now): only a refusal by size stays.
        let at_limit = FileStat {
            size: MAX_ATTACHMENT,
            ..over
        };
        assert!(seen_again(State::Canceled, "canceled", at_limit, at_limit));
    }

    #[test]
    fn one_mappings_queue_of_files_to_hash_cannot_starve_anothers() {
        let mut big = rule(IfExists::Attach, After::Keep);
        big.name = "big".into();
        let mut small = rule(IfExists::Attach, After::Keep);
        small.name = "small".into();
        let policy = Policy::default();
        let workers = policy.hash_workers.max(1);
        let mut m = Machine::new(vec![big, small], policy);
        let stat = FileStat {
            size: 100 << 20,
            ..FileStat::default()
        };
        let mut out = Vec::new();
        let observe = |m: &mut Machine, mapping: &str, path: &str| {
            m.handle(
                Time(0),
                Input::Observed {
                    mapping: mapping.into(),
                    path: PathBuf::from(path),
                    stat,
                },
            )
        };
        for i in 0..(workers * 3) {
            out.extend(observe(&mut m, "big", &format!("/big/{i}.bin")));
        }
        out.extend(observe(&mut m, "small", "/small/a.txt"));
        let settled = Time(0).plus_ms(Policy::default().settle_ms);
        out.extend(m.handle(settled, Input::Tick));
        let stats: Vec<PathBuf> = out
            .iter()
            .filter_map(|a| match a {
                Action::Stat { path } => Some(path.clone()),
                _ => None,
            })
            .collect();
        let mut hashes = Vec::new();
        for path in stats {
            let out = m.handle(
                settled,
                Input::Stat {
                    path,
                    stat: Some(stat),
                },
            );
            hashes.extend(out.into_iter().filter_map(|a| match a {
                Action::Hash { mapping, .. } => Some(mapping),
                _ => None,
            }));
        }
        assert_eq!(hashes.len(), workers, "{hashes:?}");
        assert!(
            hashes.iter().any(|m| m == "small"),
            "every worker went to one mapping: {hashes:?}"
        );
    }

    #[test]
    fn a_mailbox_with_no_place_free_holds_up_no_other_mailbox() {
        let mut theirs = rule(IfExists::Attach, After::Keep);
        theirs.name = "b".into();
        theirs.target.user = "Other@example.com".into();
        let policy = Policy {
            concurrency: 1,
            ..Policy::default()
        };
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep), theirs], policy);
        let pending = |id: &str, seq: u64, mapping: &str| {
            let mut r = done_record();
            r.id = id.into();
            r.seq = seq;
            r.mapping = mapping.into();
            r.path = format!("/f/{id}.txt").into();
            r.name = format!("{id}.txt");
            r.state = State::Pending;
            r.attachment_id = None;
            r.after_done = false;
            r.target = None;
            r
        };
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![
                    pending("e1", 1, "m"),
                    pending("e2", 2, "m"),
                    pending("e3", 3, "b"),
                ],
                with_url: vec![],
                messages: vec![],
            },
        );
        let posted: Vec<&str> = out
            .iter()
            .filter_map(|a| match a {
                Action::Post { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        // e2 waits for e1's place; e3 is in another mailbox.
        assert_eq!(posted, vec!["e1", "e3"]);
    }

    fn pending_record(id: &str, seq: u64) -> Record {
        let mut r = done_record();
        r.id = id.into();
        r.seq = seq;
        r.path = format!("/f/{id}.txt").into();
        r.name = format!("{id}.txt");
        r.state = State::Pending;
        r.attachment_id = None;
        r.after_done = false;
        r.target = None;
        r
    }

    fn posts(out: &[Action]) -> Vec<&str> {
        out.iter()
            .filter_map(|a| match a {
                Action::Post { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_step_that_needs_no_place_in_the_mailbox_does_not_wait_for_one() {
        let policy = Policy {
            concurrency: 1,
            ..Policy::default()
        };
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Move)], policy);
        let mut moved = done_record();
        moved.id = "e3".into();
        moved.seq = 3;
        moved.path = "/f/e3.txt".into();
        moved.after_done = false;
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![pending_record("e1", 1), pending_record("e2", 2), moved],
                with_url: vec![],
                messages: vec![],
            },
        );
        assert_eq!(posts(&out), vec!["e1"]);
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::After { id, .. } if id == "e3")),
            "{out:?}"
        );
    }

    #[test]
    fn a_retry_after_of_zero_sends_the_same_request_again_at_once() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![pending_record("e1", 1)],
                with_url: vec![],
                messages: vec![],
            },
        );
        assert_eq!(posts(&out), vec!["e1"]);
        let out = m.handle(
            Time(20),
            Input::Outcome {
                id: "e1".into(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Throttled {
                    retry_after_ms: Some(0),
                })),
            },
        );
        assert_eq!(posts(&out), vec!["e1"], "{out:?}");
    }

    #[test]
    fn uploads_resume_when_the_sign_in_pause_ends_not_before() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        m.handle(
            Time(10),
            Input::Start {
                records: vec![pending_record("e1", 1)],
                with_url: vec![],
                messages: vec![],
            },
        );
        m.handle(
            Time(20),
            Input::Outcome {
                id: "e1".into(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::SignIn(Failure::new(
                    "InvalidAuthenticationToken",
                    "sign in",
                )))),
            },
        );
        let (until, _) = m.sign_in_pause().expect("paused");
        let out = m.handle(Time(until.0 - 1), Input::Tick);
        assert!(posts(&out).is_empty() && m.sign_in_pause().is_some());
        let out = m.handle(until, Input::Tick);
        assert_eq!(posts(&out), vec!["e1"]);
        assert!(m.sign_in_pause().is_none());
    }

    #[test]
    fn no_more_files_are_hashed_at_once_than_hash_workers() {
        let policy = Policy {
            hash_workers: 2,
            ..Policy::default()
        };
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], policy);
        let stat = done_record().file;
        let paths: Vec<PathBuf> = (0..4).map(|k| format!("/f/{k}.txt").into()).collect();
        for p in &paths {
            m.handle(
                Time(0),
                Input::Observed {
                    mapping: "m".into(),
                    path: p.clone(),
                    stat,
                },
            );
        }
        let settled = Time(Policy::default().settle_ms);
        m.handle(settled, Input::Tick);
        let mut hashes = 0;
        for p in &paths {
            let out = m.handle(
                settled,
                Input::Stat {
                    path: p.clone(),
                    stat: Some(stat),
                },
            );
            hashes += out
                .iter()
                .filter(|a| matches!(a, Action::Hash { .. }))
                .count();
        }
        assert_eq!(hashes, 2);
        assert_eq!(m.hashing().count(), 4, "two hashed, two queued");
    }

    /// With two mappings and files of both waiting: one worker still hashes (the share kept
    /// for the other mapping never leaves none), and three hash three at once, never four
    /// (each mapping may take two).
    #[test]
    fn with_two_mappings_every_hash_worker_is_used_and_no_more() {
        let hashed_at_once = |workers: usize| {
            let mut a = rule(IfExists::Attach, After::Keep);
            a.name = "a".into();
            let mut b = rule(IfExists::Attach, After::Keep);
            b.name = "b".into();
            let policy = Policy {
                hash_workers: workers,
                ..Policy::default()
            };
            let mut m = Machine::new(vec![a, b], policy);
            let stat = done_record().file;
            let paths: Vec<(&str, PathBuf)> = (0..4)
                .flat_map(|k| [("a", k), ("b", k)])
                .map(|(mapping, k)| (mapping, PathBuf::from(format!("/{mapping}/{k}.txt"))))
                .collect();
            for (mapping, p) in &paths {
                m.handle(
                    Time(0),
                    Input::Observed {
                        mapping: (*mapping).into(),
                        path: p.clone(),
                        stat,
                    },
                );
            }
            let settled = Time(Policy::default().settle_ms);
            m.handle(settled, Input::Tick);
            let mut hashes = 0;
            for (_, p) in &paths {
                let out = m.handle(
                    settled,
                    Input::Stat {
                        path: p.clone(),
                        stat: Some(stat),
                    },
                );
                hashes += out
                    .iter()
                    .filter(|a| matches!(a, Action::Hash { .. }))
                    .count();
            }
            hashes
        };
        assert_eq!(hashed_at_once(1), 1);
        assert_eq!(hashed_at_once(3), 3);
    }

    /// One worker, two mappings with two files each: the mappings take turns (a, b, a, b), so
    /// neither waits for all of the other's files.
    #[test]
    fn mappings_with_files_to_hash_take_turns() {
        let mut a = rule(IfExists::Attach, After::Keep);
        a.name = "a".into();
        let mut b = rule(IfExists::Attach, After::Keep);
        b.name = "b".into();
        let policy = Policy {
            hash_workers: 1,
            ..Policy::default()
        };
        let mut m = Machine::new(vec![a, b], policy);
        let stat = done_record().file;
        let paths: Vec<(&str, PathBuf)> = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
            .into_iter()
            .map(|(mapping, k)| (mapping, PathBuf::from(format!("/{mapping}/{k}.txt"))))
            .collect();
        for (mapping, p) in &paths {
            m.handle(
                Time(0),
                Input::Observed {
                    mapping: (*mapping).into(),
                    path: p.clone(),
                    stat,
                },
            );
        }
        let settled = Time(Policy::default().settle_ms);
        m.handle(settled, Input::Tick);
        let hashes = |out: Vec<Action>| -> Vec<PathBuf> {
            out.into_iter()
                .filter_map(|a| match a {
                    Action::Hash { path, .. } => Some(path),
                    _ => None,
                })
                .collect()
        };
        let mut order = Vec::new();
        for (_, p) in &paths {
            order.extend(hashes(m.handle(
                settled,
                Input::Stat {
                    path: p.clone(),
                    stat: Some(stat),
                },
            )));
        }
        while let Some(p) = order.last().cloned().filter(|_| order.len() < 4) {
            order.extend(hashes(m.handle(
                settled,
                Input::Hashed {
                    path: p,
                    result: HashResult::Gone,
                },
            )));
        }
        let want: Vec<PathBuf> = ["/a/0.txt", "/b/0.txt", "/a/1.txt", "/b/1.txt"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(order, want);
    }

    #[test]
    fn a_session_upload_is_not_posted() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut big = pending_record("e1", 1);
        big.file.size = 5 << 20;
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![big],
                with_url: vec![],
                messages: vec![],
            },
        );
        assert!(posts(&out).is_empty());
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::CreateSession { id, .. } if id == "e1")));
    }

    #[test]
    fn a_name_lock_follows_its_entry_to_its_new_item_and_frees_the_old_one() {
        let on = |mapping: &str, item: &str| {
            let mut r = rule(IfExists::Attach, After::Keep);
            r.name = mapping.into();
            r.target.item_id = item.into();
            r
        };
        let named = |id: &str, seq: u64, mapping: &str| {
            let mut r = pending_record(id, seq);
            r.mapping = mapping.into();
            r.name = "a.txt".into();
            r
        };
        let mut m = Machine::new(
            vec![on("m", "i1"), on("b", "i1"), on("c", "i3"), on("d", "i3")],
            Policy::default(),
        );
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![
                    named("e1", 1, "m"),
                    named("e2", 2, "b"),
                    named("e3", 3, "c"),
                    named("e4", 4, "d"),
                ],
                with_url: vec![],
                messages: vec![],
            },
        );
        // One upload per name per item.
        assert_eq!(posts(&out), vec!["e1", "e3"]);
        m.handle(
            Time(20),
            Input::Outcome {
                id: "e1".into(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Unreachable(Failure::new(
                    "ConnectionRefused",
                    "down",
                )))),
            },
        );
        // e1's mapping now names another item: its next POST goes there.
        m.handle(
            Time(30),
            Input::Config {
                mappings: vec![on("m", "i2"), on("b", "i1"), on("c", "i3"), on("d", "i3")],
                policy: Policy::default(),
            },
        );
        let out = m.handle(Time(600_000), Input::Tick);
        let targets: Vec<(&str, &str)> = out
            .iter()
            .filter_map(|a| match a {
                Action::Post { id, target, .. } => Some((id.as_str(), target.item_id.as_str())),
                _ => None,
            })
            .collect();
        // The name on i1 is free for e2; e3 still holds it on i3 (its POST in flight).
        assert_eq!(targets, vec![("e1", "i2"), ("e2", "i1")], "{out:?}");
    }

    #[test]
    fn a_failed_entry_deleting_its_partial_attachment_holds_the_name_from_start() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut partial = pending_record("e2", 2);
        partial.path = "/f/sub/e1.txt".into();
        partial.name = "e1.txt".into();
        partial.state = State::Failed;
        partial.error = Some(Failure::new("protocolViolation", "201 early"));
        partial.target = Some(rule(IfExists::Attach, After::Keep).target);
        partial.garbage = vec!["part".into()];
        // Done, moving its file: it holds no name.
        let mut moving = pending_record("e3", 3);
        moving.name = "e1.txt".into();
        moving.path = "/f/other/e1.txt".into();
        moving.state = State::Done;
        moving.attachment_id = Some("a3".into());
        moving.target = Some(rule(IfExists::Attach, After::Move).target);
        let mut m2 = Machine::new(vec![rule(IfExists::Attach, After::Move)], Policy::default());
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![pending_record("e1", 1), partial],
                with_url: vec![],
                messages: vec![],
            },
        );
        assert!(posts(&out).is_empty(), "{out:?}");
        assert!(out.iter().any(
            |a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if attachment_id == "part")
        ));
        let out = m2.handle(
            Time(10),
            Input::Start {
                records: vec![pending_record("e1", 1), moving],
                with_url: vec![],
                messages: vec![],
            },
        );
        assert_eq!(posts(&out), vec!["e1"]);
        assert!(out.iter().any(|a| matches!(a, Action::After { .. })));
    }

    #[test]
    fn a_chunk_is_recorded_before_it_is_first_sent_not_when_sent_again() {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut big = pending_record("e1", 1);
        big.file.size = 5 << 20;
        m.handle(
            Time(10),
            Input::Start {
                records: vec![big],
                with_url: vec![],
                messages: vec![],
            },
        );
        let out = m.handle(
            Time(20),
            Input::Outcome {
                id: "e1".into(),
                outcome: Outcome::CreateSession(SessionOutcome::Created { next: 0 }),
            },
        );
        let chunk = Policy::default().chunk_size;
        let recorded = out.iter().position(
            |a| matches!(a, Action::Persist(r) if r.session.is_some_and(|s| s.sent_end == chunk)),
        );
        let sent = out
            .iter()
            .position(|a| matches!(a, Action::PutChunk { offset: 0, .. }));
        assert!(recorded.is_some() && recorded < sent, "{out:?}");
        // Throttled: the same chunk again, nothing new to record.
        let out = m.handle(
            Time(30),
            Input::Outcome {
                id: "e1".into(),
                outcome: Outcome::Chunk(ChunkOutcome::Failed(Fault::Throttled {
                    retry_after_ms: Some(0),
                })),
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::PutChunk { offset: 0, .. })));
        assert!(persisted(&out).is_none(), "{out:?}");
    }

    #[test]
    fn a_failure_is_counted_and_a_cancel_too_late_is_told_as_such() {
        let attached = |cancel: Option<Input>, outcome: PostOutcome| {
            let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
            m.handle(
                Time(10),
                Input::Start {
                    records: vec![pending_record("e1", 1)],
                    with_url: vec![],
                    messages: vec![],
                },
            );
            if let Some(c) = cancel {
                m.handle(Time(15), c);
            }
            let out = m.handle(
                Time(20),
                Input::Outcome {
                    id: "e1".into(),
                    outcome: Outcome::Post(outcome),
                },
            );
            let note = out.iter().find_map(|a| match a {
                Action::Notify(n) => Some(n.clone()),
                _ => None,
            });
            (note, m.failed_this_run)
        };
        let created = || PostOutcome::Created {
            attachment_id: "a1".into(),
        };
        let (note, failed) = attached(None, created());
        assert!(matches!(note, Some(Note::Attached { .. })), "{note:?}");
        assert_eq!(failed, 0);
        // Canceled by the user while its POST was in flight, and it landed.
        let (note, _) = attached(Some(Input::Cancel { id: "e1".into() }), created());
        assert!(matches!(note, Some(Note::CancelTooLate { .. })), "{note:?}");
        // Its file went meanwhile (the agent's cancel): attached, as the file was.
        let gone = Input::Gone {
            mapping: "m".into(),
            path: "/f/e1.txt".into(),
        };
        let (note, _) = attached(Some(gone), created());
        assert!(matches!(note, Some(Note::Attached { .. })), "{note:?}");
        let refused =
            PostOutcome::Failed(Fault::Permanent(Failure::new("ErrorAccessDenied", "no")));
        let (note, failed) = attached(None, refused);
        assert!(matches!(note, Some(Note::Failed { .. })), "{note:?}");
        assert_eq!(failed, 1);
    }

    fn started(policy: Policy, after: After, records: Vec<Record>) -> (Machine, Vec<Action>) {
        let mut m = Machine::new(vec![rule(IfExists::Attach, after)], policy);
        let out = m.handle(
            Time(10),
            Input::Start {
                records,
                with_url: vec![],
                messages: vec![],
            },
        );
        (m, out)
    }

    fn answer(m: &mut Machine, t: u64, id: &str, outcome: Outcome) -> Vec<Action> {
        m.handle(
            Time(t),
            Input::Outcome {
                id: id.into(),
                outcome,
            },
        )
    }

    fn created(att: &str) -> Outcome {
        Outcome::Post(PostOutcome::Created {
            attachment_id: att.into(),
        })
    }

    #[test]
    fn a_version_done_after_a_newer_one_deletes_its_own_copy_and_is_not_moved() {
        let mut newer = done_record();
        newer.id = "e2".into();
        newer.seq = 2;
        newer.path = "/f/e1.txt".into();
        newer.attachment_id = Some("a2".into());
        let (mut m, out) = started(
            Policy::default(),
            After::Move,
            vec![pending_record("e1", 1), newer],
        );
        assert_eq!(posts(&out), vec!["e1"]);
        let out = answer(&mut m, 20, "e1", created("a1"));
        let r = persisted(&out).expect("persisted");
        assert!(r.after_done, "the file is the newer version's");
        assert_eq!(
            r.replaces,
            vec![Replaced {
                entry: "e1".into(),
                attachment_id: "a1".into()
            }]
        );
        assert!(out.iter().any(
            |a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if attachment_id == "a1")
        ));
        assert!(!out.iter().any(|a| matches!(a, Action::After { .. })));
    }

    #[test]
    fn the_newest_version_done_runs_its_after_action() {
        let (mut m, _) = started(
            Policy::default(),
            After::Move,
            vec![pending_record("e1", 1)],
        );
        let out = answer(&mut m, 20, "e1", created("a1"));
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::After { id, .. } if id == "e1")));
    }

    #[test]
    fn a_done_version_frees_its_name_unless_it_is_deleting_an_older_copy() {
        // e1 and e3 share a name; e1 holds it.
        let mut e3 = pending_record("e3", 3);
        e3.name = "e1.txt".into();
        let (mut m, out) = started(
            Policy::default(),
            After::Keep,
            vec![pending_record("e1", 1), e3.clone()],
        );
        assert_eq!(posts(&out), vec!["e1"]);
        let out = answer(&mut m, 20, "e1", created("a1"));
        assert_eq!(posts(&out), vec!["e3"], "the name is free at once");
        // Now e1 replaces an older version of its file: the name stays taken until that
        // version's attachment is deleted.
        let mut older = done_record();
        older.id = "e0".into();
        older.seq = 0;
        older.path = "/f/e1.txt".into();
        older.attachment_id = Some("a0".into());
        let (mut m, _) = started(
            Policy::default(),
            After::Keep,
            vec![older, pending_record("e1", 1), e3],
        );
        let out = answer(&mut m, 20, "e1", created("a1"));
        assert!(posts(&out).is_empty(), "{out:?}");
        assert!(out.iter().any(
            |a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if attachment_id == "a0")
        ));
        let out = answer(
            &mut m,
            30,
            "e1",
            Outcome::DeleteAttachment(DeleteOutcome::Deleted),
        );
        assert_eq!(posts(&out), vec!["e3"]);
    }

    #[test]
    fn an_unreachable_server_is_tried_again_after_a_longer_backoff() {
        let (mut m, _) = started(
            Policy::default(),
            After::Keep,
            vec![pending_record("e1", 1)],
        );
        let out = answer(
            &mut m,
            20,
            "e1",
            Outcome::Post(PostOutcome::Failed(Fault::Unreachable(Failure::new(
                "ConnectionRefused",
                "down",
            )))),
        );
        let wake = out.iter().find_map(|a| match a {
            Action::WakeAt(t) => Some(*t),
            _ => None,
        });
        assert_eq!(wake, Some(Time(20).plus_ms(backoff_ms("e1", 2))));
    }

    #[test]
    fn answers_in_doubt_fail_an_entry_after_max_attempts_in_a_row() {
        let policy = Policy {
            max_attempts: 3,
            ..Policy::default()
        };
        let mut doubt = pending_record("e1", 1);
        doubt.state = State::Uploading;
        doubt.target = Some(rule(IfExists::Attach, After::Keep).target);
        doubt.may_exist = true;
        doubt.effect_at = Some(Time(0));
        let (mut m, _) = started(policy, After::Keep, vec![doubt]);
        let mut t = 0;
        for k in 1..=3 {
            t += 1_000_000;
            let out = m.handle(Time(t), Input::Tick);
            assert!(
                out.iter().any(|a| matches!(a, Action::Look { .. })),
                "look {k}: {out:?}"
            );
            let out = answer(
                &mut m,
                t + 1,
                "e1",
                Outcome::Look(LookOutcome::Failed(Fault::Ambiguous(Failure::new(
                    "ServiceUnavailable",
                    "503",
                )))),
            );
            let r = persisted(&out).expect("persisted");
            assert_eq!(r.attempts, k);
            assert_eq!(r.state == State::Failed, k == 3, "after {k}: {r:?}");
        }
        assert_eq!(m.failed_this_run, 1);
    }

    #[test]
    fn a_post_refused_as_too_large_goes_by_session_or_fails_if_too_small_for_one() {
        let refused = |size: u64| {
            let mut r = pending_record("e1", 1);
            r.file.size = size;
            let (mut m, out) = started(Policy::default(), After::Keep, vec![r]);
            assert_eq!(posts(&out), vec!["e1"]);
            answer(&mut m, 20, "e1", Outcome::Post(PostOutcome::TooLarge))
        };
        let out = refused(MIN_SESSION - 1);
        let r = persisted(&out).expect("persisted");
        assert_eq!(
            (r.state, r.error.as_ref().map(|e| e.code.as_str())),
            (State::Failed, Some("requestTooLarge"))
        );
        let out = refused(MIN_SESSION);
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::CreateSession { .. })));
    }

    #[test]
    fn a_version_found_already_attached_frees_its_name_while_its_file_is_moved() {
        // e0: a copy of e1's bytes under the same name, attached by this agent.
        let mut copy = done_record();
        copy.id = "e0".into();
        copy.seq = 0;
        copy.path = "/f/copy/e1.txt".into();
        copy.name = "e1.txt".into();
        copy.attachment_id = Some("a0".into());
        let mut other = pending_record("e3", 3);
        other.path = "/f/sub/e1.txt".into();
        other.name = "e1.txt".into();
        other.sha256 = Some("cd".repeat(32));
        let mut m = Machine::new(vec![rule(IfExists::Skip, After::Move)], Policy::default());
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![copy, pending_record("e1", 1), other],
                with_url: vec![],
                messages: vec![],
            },
        );
        // e1 is done with no request, and its file is being moved...
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::After { id, .. } if id == "e1")));
        // ...while e3 of the same name goes on.
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Look { id, .. } if id == "e3")),
            "{out:?}"
        );
    }

    #[test]
    fn a_session_that_wants_an_offset_past_0_is_abandoned_and_the_entry_fails_after_3() {
        let mut big = pending_record("e1", 1);
        big.file.size = 5 << 20;
        let (mut m, out) = started(Policy::default(), After::Keep, vec![big]);
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::CreateSession { .. })));
        let mut t = 20;
        for k in 1..=3 {
            let out = answer(
                &mut m,
                t,
                "e1",
                Outcome::CreateSession(SessionOutcome::Created { next: 5 }),
            );
            let r = persisted(&out).expect("persisted");
            assert_eq!(r.restarts, k);
            if k < 3 {
                assert_eq!(r.state, State::Uploading);
                assert!(r.session.is_some_and(|s| s.abandoned), "{r:?}");
            } else {
                assert_eq!(
                    (r.state, r.error.as_ref().map(|e| e.code.as_str())),
                    (State::Failed, Some("protocolViolation"))
                );
            }
            // The abandoned session is deleted (then a new one made, while any are left).
            assert!(out
                .iter()
                .any(|a| matches!(a, Action::DeleteSession { .. })));
            let out = answer(
                &mut m,
                t + 1,
                "e1",
                Outcome::DeleteSession(DeleteOutcome::Deleted),
            );
            let again = out
                .iter()
                .any(|a| matches!(a, Action::CreateSession { .. }));
            assert_eq!(again, k < 3, "after {k}: {out:?}");
            t += 10;
        }
        // A session that starts at 0 is used.
        let mut big = pending_record("e1", 1);
        big.file.size = 5 << 20;
        let (mut m, _) = started(Policy::default(), After::Keep, vec![big]);
        let out = answer(
            &mut m,
            20,
            "e1",
            Outcome::CreateSession(SessionOutcome::Created { next: 0 }),
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::PutChunk { offset: 0, .. })));
    }

    #[test]
    fn a_file_that_changed_while_it_was_sent_is_settled_again() {
        let (mut m, _) = started(
            Policy::default(),
            After::Keep,
            vec![pending_record("e1", 1)],
        );
        assert!(m.settler().is_empty());
        let out = answer(&mut m, 20, "e1", Outcome::Post(PostOutcome::Changed));
        let r = persisted(&out).expect("persisted");
        assert_eq!(r.state, State::Canceled);
        assert!(m.settler().is_settling(Path::new("/f/e1.txt")));
    }

    /// A 5 MiB file whose session was made and whose first chunk is in flight.
    fn first_chunk_in_flight() -> Machine {
        let mut big = pending_record("e1", 1);
        big.file.size = 5 << 20;
        let (mut m, _) = started(Policy::default(), After::Keep, vec![big]);
        let out = answer(
            &mut m,
            20,
            "e1",
            Outcome::CreateSession(SessionOutcome::Created { next: 0 }),
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::PutChunk { offset: 0, .. })));
        m
    }

    #[test]
    fn a_session_whose_next_range_does_not_move_three_times_is_abandoned() {
        let mut m = first_chunk_in_flight();
        let chunk = Policy::default().chunk_size;
        let out = answer(
            &mut m,
            30,
            "e1",
            Outcome::Chunk(ChunkOutcome::Accepted { next: Some(chunk) }),
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::PutChunk { offset, .. } if *offset == chunk)));
        // The server keeps asking for the same range.
        for k in 1..=3 {
            let out = answer(
                &mut m,
                30 + k,
                "e1",
                Outcome::Chunk(ChunkOutcome::Accepted { next: Some(chunk) }),
            );
            let abandoned = out
                .iter()
                .any(|a| matches!(a, Action::DeleteSession { .. }));
            assert_eq!(abandoned, k == 3, "after {k}: {out:?}");
        }
    }

    #[test]
    fn a_201_before_the_last_byte_is_deleted_and_the_entry_fails_the_third_time() {
        let mut m = first_chunk_in_flight();
        let mut t = 30;
        for k in 1..=3 {
            let part = format!("p{k}");
            let out = answer(
                &mut m,
                t,
                "e1",
                Outcome::Chunk(ChunkOutcome::Completed {
                    attachment_id: Some(part.clone()),
                }),
            );
            let r = persisted(&out).expect("persisted");
            assert_eq!((r.restarts, r.garbage.clone()), (k, vec![part.clone()]));
            assert_eq!(r.state == State::Failed, k == 3, "after {k}: {r:?}");
            assert!(out.iter().any(
                |a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if *attachment_id == part)
            ));
            let out = answer(
                &mut m,
                t + 1,
                "e1",
                Outcome::DeleteAttachment(DeleteOutcome::Deleted),
            );
            if k < 3 {
                assert!(out
                    .iter()
                    .any(|a| matches!(a, Action::CreateSession { .. })));
                answer(
                    &mut m,
                    t + 2,
                    "e1",
                    Outcome::CreateSession(SessionOutcome::Created { next: 0 }),
                );
            }
            t += 10;
        }
        assert_eq!(m.failed_this_run, 1);
    }

    /// `first_chunk_in_flight`, the first chunk taken: the last one in flight.
    fn last_chunk_in_flight() -> Machine {
        let mut m = first_chunk_in_flight();
        let chunk = Policy::default().chunk_size;
        let out = answer(
            &mut m,
            30,
            "e1",
            Outcome::Chunk(ChunkOutcome::Accepted { next: Some(chunk) }),
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::PutChunk { offset, last: true, .. } if *offset == chunk)));
        m
    }

    /// Seed 2179010: a session's bytes came from the file the record named; the path now holds
    /// another file with the same bytes (an in-place edit went out mid-file, then a copy of the
    /// old bytes replaced the file). A resume would re-read the start from the new file and pass
    /// the hash check with the edit still in the session: the session is abandoned and the
    /// upload starts again from the new file, with no restart counted.
    #[test]
    fn a_session_whose_file_was_replaced_by_the_same_bytes_is_started_again() {
        let chunk = Policy::default().chunk_size;
        let mut big = pending_record("e1", 1);
        big.file.size = 3 * chunk;
        let path = big.path.clone();
        let (mut m, _) = started(Policy::default(), After::Keep, vec![big.clone()]);
        answer(
            &mut m,
            20,
            "e1",
            Outcome::CreateSession(SessionOutcome::Created { next: 0 }),
        );
        let out = answer(
            &mut m,
            30,
            "e1",
            Outcome::Chunk(ChunkOutcome::Accepted { next: Some(chunk) }),
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::PutChunk { offset, .. } if *offset == chunk)));
        // While the second chunk is on the wire, another file with the same bytes settles.
        let copy = FileStat {
            ino: 7,
            mtime_ns: 40,
            ctime_ns: 50,
            ..big.file
        };
        let out = settle(&mut m, 40, &path, copy);
        assert!(
            out.iter().any(|a| matches!(a, Action::Hash { .. })),
            "{out:?}"
        );
        let out = m.handle(
            Time(40_000),
            Input::Hashed {
                path: path.clone(),
                result: HashResult::Hashed {
                    sha256: big.sha256.clone().expect("sha"),
                    stat: copy,
                },
            },
        );
        let r = persisted(&out).expect("persisted");
        assert_eq!(r.file, copy);
        assert!(r.session.is_some_and(|s| s.abandoned), "{r:?}");
        // The chunk in flight is taken; nothing more goes into that session.
        let out = answer(
            &mut m,
            40_010,
            "e1",
            Outcome::Chunk(ChunkOutcome::Accepted {
                next: Some(2 * chunk),
            }),
        );
        assert!(
            !out.iter().any(|a| matches!(a, Action::PutChunk { .. })),
            "{out:?}"
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::DeleteSession { .. })),
            "{out:?}"
        );
        let out = answer(
            &mut m,
            40_020,
            "e1",
            Outcome::DeleteSession(DeleteOutcome::Deleted),
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::CreateSession { .. })),
            "{out:?}"
        );
        let r = persisted(&out).expect("persisted");
        assert_eq!((r.restarts, r.session), (0, None));
    }

    #[test]
    fn a_file_gone_before_its_last_chunk_was_read_leaves_nothing_in_doubt() {
        let mut m = last_chunk_in_flight();
        let out = answer(&mut m, 40, "e1", Outcome::Chunk(ChunkOutcome::FileGone));
        let r = persisted(&out).expect("persisted");
        assert_eq!(r.state, State::Canceled);
        assert!(!r.may_exist, "{r:?}");
    }

    #[test]
    fn a_session_gone_mid_file_is_replaced_but_after_its_last_chunk_the_item_is_looked_at() {
        let mut m = first_chunk_in_flight();
        let out = answer(&mut m, 40, "e1", Outcome::Chunk(ChunkOutcome::SessionGone));
        let r = persisted(&out).expect("persisted");
        assert_eq!((r.restarts, r.session), (1, None));
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::CreateSession { .. })));
        // The last byte may have landed: no new session before a look.
        let mut m = last_chunk_in_flight();
        let out = answer(&mut m, 40, "e1", Outcome::Chunk(ChunkOutcome::SessionGone));
        let r = persisted(&out).expect("persisted");
        assert_eq!((r.restarts, r.session, r.may_exist), (0, None, true));
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::CreateSession { .. })));
    }

    #[test]
    fn a_chunk_not_taken_goes_again_and_one_in_doubt_dates_the_last_bytes_effect() {
        let unreachable = || {
            Outcome::Chunk(ChunkOutcome::Failed(Fault::Unreachable(Failure::new(
                "ConnectionRefused",
                "down",
            ))))
        };
        let ambiguous = || {
            Outcome::Chunk(ChunkOutcome::Failed(Fault::Ambiguous(Failure::new(
                "ConnectionDropped",
                "lost",
            ))))
        };
        // Unreachable: the session is as it was; after the wait, the same chunk again.
        let mut m = first_chunk_in_flight();
        answer(&mut m, 40, "e1", unreachable());
        let out = m.handle(Time(1_000_000), Input::Tick);
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::PutChunk { offset: 0, .. })),
            "{out:?}"
        );
        assert!(!out.iter().any(|a| matches!(a, Action::AskSession { .. })));
        // In doubt mid-file: nothing may be on the item yet.
        let mut m = first_chunk_in_flight();
        let out = answer(&mut m, 50, "e1", ambiguous());
        let r = persisted(&out).expect("persisted");
        assert_eq!((r.may_exist, r.effect_at), (false, None));
        // In doubt on the last chunk: it could land until its answer ended.
        let mut m = last_chunk_in_flight();
        let out = answer(&mut m, 50, "e1", ambiguous());
        let r = persisted(&out).expect("persisted");
        assert_eq!((r.may_exist, r.effect_at), (true, Some(Time(50))));
    }

    #[test]
    fn sessions_that_keep_dying_back_off_and_fail_the_entry_only_when_bounded() {
        let dies = |max_attempts: u32| {
            let policy = Policy {
                max_attempts,
                ..Policy::default()
            };
            let mut big = pending_record("e1", 1);
            big.file.size = 5 << 20;
            let (mut m, _) = started(policy, After::Keep, vec![big]);
            let mut t = 20;
            let mut seen = Vec::new();
            for k in 1..=4u32 {
                answer(
                    &mut m,
                    t,
                    "e1",
                    Outcome::CreateSession(SessionOutcome::Created { next: 0 }),
                );
                let out = answer(
                    &mut m,
                    t + 1,
                    "e1",
                    Outcome::Chunk(ChunkOutcome::SessionGone),
                );
                let r = persisted(&out).expect("persisted").clone();
                assert_eq!(r.restarts, k);
                let at_once = out
                    .iter()
                    .any(|a| matches!(a, Action::CreateSession { .. }));
                seen.push((r.state, at_once));
                if !at_once {
                    t += 10_000_000;
                    let out = m.handle(Time(t), Input::Tick);
                    let again = out
                        .iter()
                        .any(|a| matches!(a, Action::CreateSession { .. }));
                    assert_eq!(again, r.state != State::Failed, "{out:?}");
                } else {
                    t += 10;
                }
            }
            seen
        };
        use State::{Failed, Uploading};
        // A new session at once, then after a backoff; with a bound (max_sessions = 3), the
        // fourth death fails the entry.
        assert_eq!(
            dies(8),
            vec![
                (Uploading, true),
                (Uploading, false),
                (Uploading, false),
                (Failed, false)
            ]
        );
        // `run`: never given up.
        assert_eq!(
            dies(0),
            vec![
                (Uploading, true),
                (Uploading, false),
                (Uploading, false),
                (Uploading, false)
            ]
        );
    }

    #[test]
    fn a_session_asked_that_reports_what_it_cannot_have_is_abandoned() {
        let asked = |mut m: Machine, next: u64| {
            answer(
                &mut m,
                50,
                "e1",
                Outcome::Chunk(ChunkOutcome::Failed(Fault::Ambiguous(Failure::new(
                    "ConnectionDropped",
                    "lost",
                )))),
            );
            let out = m.handle(Time(10_000_000), Input::Tick);
            assert!(
                out.iter().any(|a| matches!(a, Action::AskSession { .. })),
                "{out:?}"
            );
            let out = answer(
                &mut m,
                10_000_001,
                "e1",
                Outcome::Ask(AskOutcome::Next(Some(next))),
            );
            let r = persisted(&out).expect("persisted");
            assert!(r.session.is_some_and(|s| s.abandoned), "{r:?}");
            assert!(out
                .iter()
                .any(|a| matches!(a, Action::DeleteSession { .. })));
        };
        let chunk = Policy::default().chunk_size;
        // Bytes it was never sent.
        asked(first_chunk_in_flight(), chunk + 10);
        // Every byte, yet no attachment.
        asked(last_chunk_in_flight(), 5 << 20);
    }

    /// `last_chunk_in_flight`, its answer lost: the session is asked where it stands.
    fn last_chunk_in_doubt() -> Machine {
        let mut m = last_chunk_in_flight();
        answer(
            &mut m,
            50,
            "e1",
            Outcome::Chunk(ChunkOutcome::Failed(Fault::Ambiguous(Failure::new(
                "ConnectionDropped",
                "lost",
            )))),
        );
        let out = m.handle(Time(10_000_000), Input::Tick);
        assert!(
            out.iter().any(|a| matches!(a, Action::AskSession { .. })),
            "{out:?}"
        );
        m
    }

    #[test]
    fn after_the_last_chunk_in_doubt_the_item_is_looked_at_before_any_new_session() {
        // The session is gone: it may have completed.
        let mut m = last_chunk_in_doubt();
        let out = answer(&mut m, 10_000_001, "e1", Outcome::Ask(AskOutcome::Gone));
        let r = persisted(&out).expect("persisted");
        assert_eq!((r.session, r.may_exist, r.restarts), (None, true, 0));
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::CreateSession { .. })));
        // (Its effect is long enough ago: the look goes at once.)
        assert!(
            out.iter().any(|a| matches!(a, Action::Look { .. })),
            "{out:?}"
        );
        // It wants bytes from the start again: sent again, and the doubt stays (the lost
        // request may still complete), so a session dying now is followed by a look too.
        let mut m = last_chunk_in_doubt();
        let out = answer(
            &mut m,
            10_000_001,
            "e1",
            Outcome::Ask(AskOutcome::Next(Some(0))),
        );
        assert!(out.iter().any(|a| matches!(
            a,
            Action::PutChunk {
                offset: 0,
                last: false,
                ..
            }
        )));
        assert!(m.record("e1").is_some_and(|r| r.may_exist));
        let out = answer(
            &mut m,
            10_000_002,
            "e1",
            Outcome::Chunk(ChunkOutcome::SessionGone),
        );
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::CreateSession { .. })));
        assert!(m
            .record("e1")
            .is_some_and(|r| r.may_exist && r.restarts == 0));
    }

    /// Answers `fault` to the delete of e1 in flight, then wakes the machine for the next
    /// one, `n` times; the actions answered.
    fn deletes_refused(m: &mut Machine, t: &mut u64, n: usize, fault: &Fault) -> Vec<Vec<Action>> {
        let mut outs = Vec::new();
        for _ in 0..n {
            let outcome = match m.record("e1").map(|r| r.session.is_some()) {
                Some(true) => Outcome::DeleteSession(DeleteOutcome::Failed(fault.clone())),
                _ => Outcome::DeleteAttachment(DeleteOutcome::Failed(fault.clone())),
            };
            outs.push(answer(m, *t, "e1", outcome));
            *t += 10_000_000;
            let out = m.handle(Time(*t), Input::Tick);
            outs.push(out);
        }
        outs
    }

    #[test]
    fn a_session_delete_is_given_up_after_10_failures_not_counting_429s() {
        let mut abandoned = pending_record("e1", 1);
        abandoned.state = State::Canceled;
        abandoned.error = Some(Failure::new("canceled", "canceled by the user"));
        abandoned.target = Some(rule(IfExists::Attach, After::Keep).target);
        abandoned.session = Some(SessionMark {
            sent_end: 4096,
            abandoned: true,
        });
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![abandoned],
                with_url: vec!["e1".into()],
                messages: vec![],
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::DeleteSession { .. })));
        let mut t = 20;
        let forgot = |outs: &[Vec<Action>]| {
            outs.iter()
                .flatten()
                .any(|a| matches!(a, Action::ForgetUrl { .. }))
        };
        let throttled = Fault::Throttled {
            retry_after_ms: Some(1_000),
        };
        let down = Fault::Unreachable(Failure::new("ConnectionRefused", "down"));
        assert!(!forgot(&deletes_refused(&mut m, &mut t, 12, &throttled)));
        assert!(!forgot(&deletes_refused(&mut m, &mut t, 9, &down)));
        let outs = deletes_refused(&mut m, &mut t, 1, &down);
        assert!(forgot(&outs), "{outs:?}");
        assert!(m.record("e1").is_none_or(|r| r.session.is_none()));
    }

    #[test]
    fn an_older_copys_delete_is_given_up_after_10_failures_not_counting_429s() {
        let mut replacing = done_record();
        replacing.replaces = vec![Replaced {
            entry: "e0".into(),
            attachment_id: "old".into(),
        }];
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![replacing],
                with_url: vec![],
                messages: vec![],
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::DeleteAttachment { .. })));
        let mut t = 20;
        let throttled = Fault::Throttled {
            retry_after_ms: Some(1_000),
        };
        let down = Fault::Unreachable(Failure::new("ConnectionRefused", "down"));
        deletes_refused(&mut m, &mut t, 12, &throttled);
        deletes_refused(&mut m, &mut t, 9, &down);
        assert_eq!(m.record("e1").map(|r| r.replaces.len()), Some(1));
        let outs = deletes_refused(&mut m, &mut t, 1, &down);
        let r = outs
            .iter()
            .flat_map(|o| persisted(o))
            .next()
            .expect("persisted");
        assert!(r.replaces.is_empty(), "{r:?}");
        // Given up on, not deleted: the older record is not marked replaced.
        assert!(!outs
            .iter()
            .flatten()
            .any(|a| matches!(a, Action::MarkReplaced { .. })));
    }

    #[test]
    fn an_older_version_still_at_work_is_marked_replaced_on_record_once_its_copy_is_deleted() {
        // e1 is done and its file being moved; e2, a newer version, is new.
        let mut moving = done_record();
        moving.path = "/f/a.txt".into();
        moving.attachment_id = Some("a1".into());
        moving.after_done = false;
        let mut newer = pending_record("e2", 2);
        newer.path = "/f/a.txt".into();
        newer.name = "a.txt".into();
        newer.sha256 = Some("cd".repeat(32));
        let (mut m, out) = started(Policy::default(), After::Move, vec![moving, newer]);
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::After { id, .. } if id == "e1")));
        assert_eq!(posts(&out), vec!["e2"]);
        let out = answer(&mut m, 20, "e2", created("a2"));
        assert!(out.iter().any(
            |a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if attachment_id == "a1")
        ));
        let out = answer(
            &mut m,
            30,
            "e2",
            Outcome::DeleteAttachment(DeleteOutcome::Deleted),
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Persist(r) if r.id == "e1" && r.replaced)),
            "{out:?}"
        );
    }
}
