//! Deterministic simulation of the core (after FoundationDB's simulator, TigerBeetle's VOPR and
//! Dropbox's Trinity): one seed drives a whole world — a folder written to by a user, a Graph
//! that loses replies, throttles, expires sessions and pauses sign-in, crashes that lose every
//! volatile thing, and a virtual clock — around the real [`Machine`]. Invariants are checked
//! after every step and again once the world has gone quiet. One seed replays one run exactly.
//!
//! The executor's order of work is the agent's own (`exec::drain`: a batch's ledger writes,
//! one flush, then its other actions), run here over an in-memory ledger whose flushes a crash
//! can cut. An upload's reads are the agent's too (`read::Reader`: every byte read hashed, a
//! piece read again checked against what was hashed, the last checked whole), over the world's
//! in-memory contents, which it may edit in place between two reads of one piece, with an exact
//! digest of their runs. The rest of the executor is still a twin of the agent's: it carries out
//! the machine's actions against the world with the same contract; docs/core.md says what is
//! left to move into the proof.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a harness: a broken world is a panic

mod bytes;

use bytes::{push_run, SimFile, UploadReader};
pub use bytes::{sha, Content, Edit, Run, RunDigest, EDITED};

use super::exec;
use super::machine::{
    has_work, Machine, HELD_BY_DRAFT, MAILED_ELSEWHERE, MESSAGE_TOO_LARGE, NO_FILES_LEFT,
};
use super::model::*;
use super::prune;
use super::read;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a run is made of.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// User operations before the world goes quiet.
    pub user_ops: u32,
    pub crash_prob: f64,
    pub lost_reply_prob: f64,
    pub throttle_prob: f64,
    pub ambiguous_prob: f64,
    pub unreachable_prob: f64,
    pub session_death_prob: f64,
    pub session_lifetime_ms: u64,
    pub sign_in_pause_prob: f64,
    pub unmount_prob: f64,
    /// A server that reports what it cannot have (offsets past what was sent, a 201 before the
    /// last byte, no progress).
    pub evil_prob: f64,
    /// Listings miss attachments younger than this (under the machine's `look_after`).
    pub listing_lag_ms: u64,
}

impl Knobs {
    pub fn from_seed(rng: &mut StdRng) -> Knobs {
        let p = |rng: &mut StdRng, max: f64| {
            if rng.gen_bool(0.3) {
                0.0
            } else {
                rng.gen_range(0.0..max)
            }
        };
        Knobs {
            user_ops: rng.gen_range(3..40),
            crash_prob: p(rng, 0.03),
            lost_reply_prob: p(rng, 0.15),
            throttle_prob: p(rng, 0.3),
            ambiguous_prob: p(rng, 0.1),
            unreachable_prob: p(rng, 0.05),
            session_death_prob: p(rng, 0.05),
            session_lifetime_ms: rng.gen_range(5_000..600_000),
            sign_in_pause_prob: p(rng, 0.01),
            unmount_prob: p(rng, 0.02),
            evil_prob: if rng.gen_bool(0.15) {
                rng.gen_range(0.0..0.2)
            } else {
                0.0
            },
            listing_lag_ms: if rng.gen_bool(0.5) {
                rng.gen_range(0..20_000)
            } else {
                0
            },
        }
    }
}

#[derive(Debug, Clone)]
struct Inode {
    /// When it was made (a file dropped, copied or renamed in; a touch keeps it).
    born: Time,
    content: Content,
    mtime: i64,
    ctime: i64,
}

#[derive(Debug, Clone)]
struct SimAttachment {
    id: String,
    name: String,
    /// `None`: bytes from more than one version (a mix).
    content: Option<Content>,
    /// The entry whose request made it.
    by_entry: String,
    created: Time,
}

#[derive(Debug, Clone)]
struct SimSession {
    item: String,
    name: String,
    size: u64,
    entry: String,
    /// Bytes received so far, merged.
    segments: Vec<Run>,
    next: u64,
    expires: Time,
    /// Its URL reached the client.
    delivered: bool,
}

/// An action being carried out, to complete at a time.
#[derive(Debug, Clone)]
struct Pending {
    epoch: u64,
    action: Action,
    /// Fixed when the request is sent: how the server will treat it.
    fate: Fate,
    /// What the executor read to send (a POST's body, a chunk's piece) before the request went,
    /// or its answer when the read found the file changed or gone (then nothing was sent).
    read: Option<Result<Vec<Run>, Outcome>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Normal,
    /// The effect happens; the answer is lost.
    LostReply,
    Throttled,
    /// The effect happens; the answer is a throttle (a send: GRAPH.md §13).
    EffectThenThrottled,
    /// 5xx before any effect.
    Ambiguous,
    Unreachable,
}

/// The machine's clocks, in half the worlds (an rng of their own): its wall clock is the
/// world's time plus `wall_skew`, stepped (NTP, the user) while the agent is down; its
/// monotonic clock stops while the machine sleeps (`asleep_ms` in all). The agent reads its time
/// from both through the real [`crate::clock::Logical`], as `agent::Clock` does.
#[derive(Debug, Clone)]
struct Clocks {
    rng: StdRng,
    logical: crate::clock::Logical,
    wall_skew: i64,
    asleep_ms: u64,
    /// Every step of the wall clock forward, added up: what no run can tell from time passing.
    forward_ms: u64,
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Event {
    User,
    Deliver(u64, Input),
    Complete(u64),
    Tick(u64),
    Restart,
    Rescan(u64),
    /// The world: a mapped folder comes back.
    Mount(String),
    /// The world: a writer appends to a file and closes it, `n` more times.
    Append(PathBuf, u32),
    /// Once faults stop: the user retries messages that failed or could not be confirmed (as
    /// `status` tells them to), once nothing is in flight any more.
    RetryMail(u32),
    /// The second agent on the mailing folder takes its next step for job `n`.
    Rival(usize),
    /// The agent prunes its ledger (`Sim::prune`), as it does with each periodic rescan; the
    /// world sometimes unmounts a folder just before.
    Prune,
    /// The machine of run `n` sleeps (a laptop's lid closed): see [`Sim::suspend`].
    Suspend(u64),
}

/// What the second agent on the mailing folder does with one drop it saw (the same protocol
/// as the agent's, reduced to a file per message): search the mailbox for the file's key
/// (a sent copy or any draft holding it: it stops), make its draft holding the key and the
/// bytes, then, `RIVAL_SETTLE_MS` or more later, look again: a sent copy, or another draft
/// older than its own (by creation time, then id), wins and its draft is deleted; else it sends.
#[derive(Debug, Clone)]
struct RivalJob {
    name: String,
    content: Content,
    key: String,
    /// Its draft, once made.
    draft: Option<String>,
}

/// A writer that appends to a file and closes it, again and again (`echo line >> f; sleep N`),
/// for the oracle "no version is taken as finished before its writer finished" (SPEC 4).
#[derive(Debug, Clone)]
struct Writer {
    path: PathBuf,
    /// Each version it wrote: inode, size, ctime.
    versions: Vec<(u64, u64, i64)>,
    /// Its pauses between a close and the next write, still to come (ms); empty: the world's
    /// slow writer's own draws.
    pauses: Vec<u64>,
    /// Appends still to come (0: it finished, or its file went).
    left: u32,
    /// Its pauses are ones the settle rule promises to wait for (the first under
    /// `settle_after_close`, the later ones under `settle`) and nothing else happened to the
    /// path, its folder or the agent while it wrote: no version of it but its last may settle.
    covered: bool,
    /// Every pause it made, for the report.
    made: Vec<u64>,
}

pub struct Sim {
    pub seed: u64,
    rng: StdRng,
    knobs: Knobs,
    now: Time,
    events: BTreeMap<(Time, u64), Event>,
    next_event: u64,
    // the folder
    inodes: BTreeMap<u64, Inode>,
    paths: BTreeMap<PathBuf, u64>,
    next_ino: u64,
    next_ver: u64,
    unmounted: BTreeSet<String>,
    /// Writers that append and close again and again (the oracle: none of their versions but
    /// the last is taken as finished while they write).
    writers: Vec<Writer>,
    /// The paced writers' draws (an rng of its own: every other draw as before).
    writer_rng: StdRng,
    /// Files removed by after-actions with no done record of the bytes removed in the ledger
    /// then (judged when the action runs: a later loss or restore of the ledger takes records
    /// back, and must not make an after-action that was right then look wrong: seed 119774).
    removed_undone: Vec<(PathBuf, Content)>,
    /// Mailed files removed by after-actions before their message's sent copy was visible.
    after_unseen: Vec<String>,
    // graph
    items: BTreeMap<String, Vec<SimAttachment>>,
    sessions: BTreeMap<String, SimSession>,
    next_att: u64,
    next_sess: u64,
    sign_in_until: Time,
    // the agent side
    mappings: Vec<(MappingRule, PathBuf)>,
    policy: Policy,
    machine: Option<Machine>,
    epoch: u64,
    /// Per path, when its last watcher report is delivered: the agent looks at one path at a
    /// time and takes its events in order (`intake::look`), so a report never overtakes an
    /// earlier one of the same path (a stale `Gone` after the file came back).
    watch_last: BTreeMap<PathBuf, Time>,
    /// The ledger as the agent reads it: every write at once, flushed or not.
    ledger: BTreeMap<String, Record>,
    /// The writes of the batch under way, not yet flushed: what each overwrote, in order (a
    /// crash puts them back, last first).
    unflushed: Vec<Undo>,
    /// Inputs waiting for the executor's `drain` (a revived record).
    queue: std::collections::VecDeque<Input>,
    urls: BTreeMap<String, String>,
    /// Each upload's reader (the executor's `Upload`), kept between its pieces.
    readers: BTreeMap<String, UploadReader>,
    pending: BTreeMap<u64, Pending>,
    next_req: u64,
    user_ops_left: u32,
    quiet: bool,
    pub steps: u64,
    pub crashes: u32,
    /// The server misbehaved at least once (partial attachments may exist until cleaned up,
    /// and an entry may fail with `protocolViolation`).
    evil: bool,
    /// Partial attachments made by a 201 before the last byte whose answer never reached the
    /// client: nothing can find them (their bytes match no version), so they are the server's.
    evil_orphans: BTreeSet<String>,
    /// Every partial attachment an early 201 made (`evil_orphans` holds those the client was
    /// never told of, or whose telling a crash took back before it was flushed).
    evil_made: BTreeSet<String>,
    /// Attachments made by an entry whose look then adopted another copy of the same name and
    /// bytes (see `check_final`).
    adopted: BTreeSet<String>,
    final_check: bool,
    log: Vec<String>,
    pub trace: bool,
    // mail: the mailbox's messages (drafts and sent copies), by Graph id
    mail: BTreeMap<String, SimMessage>,
    next_msg: u64,
    /// Every send Exchange accepted: (marker, draft id, the draft's attachments then).
    sends: Vec<SimSend>,
    send_move_ms: u64,
    /// The agent's persisted messages.
    msg_ledger: BTreeMap<String, MessageRecord>,
    /// Attachments added to a draft after it was sent (never allowed).
    late_attachments: Vec<String>,
    /// Per entry or message: no request of it before this time (a Retry-After it was given, or
    /// the least backoff after a failure). Reset by a crash and by `retry`.
    not_before: BTreeMap<String, (Time, &'static str)>,
    /// The mailing mapping's own draws (a seed without `twins` never uses it after `new`).
    mail_rng: StdRng,
    /// The user sometimes drops one file into two subfolders of the mailing folder at once.
    twins: bool,
    /// The user sometimes deletes a draft that was not sent (nor left for review) in Outlook.
    deletes_drafts: bool,
    deleted_drafts: BTreeSet<String>,
    /// Drafts the agent deleted after they were sent (never allowed).
    deleted_sent: Vec<String>,
    /// A user who sends the agent's drafts from Outlook (the draft leaves Drafts at once; its
    /// copy shows in Sent Items after the move): the drafts (by id) and their markers.
    hand_sends: bool,
    hand_sent: BTreeSet<String>,
    /// A user who takes an attachment off one of the agent's drafts in Outlook (an rng of its
    /// own: every other seed runs as before): the drafts so edited. The agent lists a draft
    /// before its send and never sends one short of a file (#20, review of session 14: a
    /// throttled send's draft was sent again unlisted).
    hand_edits: bool,
    hand_edit_rng: StdRng,
    hand_edited: BTreeSet<String>,
    /// The attachments taken off so (by id): a done record naming one is the user's doing.
    hand_removed: BTreeSet<String>,
    /// Draws of the world's harsher faults (an rng of their own: every earlier draw as before).
    harsh_rng: StdRng,
    /// The agent prunes its ledger (half the seeds, an rng of their own): entries finished
    /// `keep_done_ms` ago whose files are gone; what it pruned, for the oracle.
    prunes: bool,
    prune_rng: StdRng,
    keep_done_ms: u64,
    pruned: BTreeMap<String, Record>,
    pruned_msgs: BTreeMap<String, MessageRecord>,
    /// Files edited in place between two reads of a piece (an rng of its own).
    edits: bool,
    edit_rng: StdRng,
    harsh: Harsh,
    /// Graph's `$filter` index lags: a message (draft or sent copy) is found by a search
    /// (by marker, `internetMessageId` or key) only this long after it shows (its own
    /// generator; beside a second agent under `RIVAL_SETTLE_MS`, the bound the check before a
    /// send trusts: docs/core.md, known limits).
    filter_lag_ms: u64,
    /// The tenant's message size limit, below the mailing mapping's `max_message_size` (its
    /// own generator): a send of a larger draft is refused `ErrorMessageSizeExceeded` before
    /// any effect, and the user's `retry` re-splits the message (GRAPH.md §13, "Size").
    tenant_limit: Option<u64>,
    /// Per (name, bytes): how many times they were dropped into the mailing folder (a new
    /// inode, or new bytes in place). No name and bytes are mailed more often.
    drops: BTreeMap<(String, Content), u32>,
    last_placed: BTreeMap<PathBuf, (u64, Content)>,
    /// Sometimes the state dir is lost at a restart (the mailing mapping's records and every
    /// message record): the mailbox is the record of last resort.
    loses_ledger: bool,
    /// What the agent lost, for the oracle (the agent never sees it again).
    lost_ledger: BTreeMap<String, Record>,
    lost_msgs: BTreeMap<String, MessageRecord>,
    /// A second agent (its own state dir) mails the same folder: it takes some drops too.
    rival: bool,
    rival_rng: StdRng,
    rival_jobs: Vec<RivalJob>,
    /// Sometimes the state dir is restored from a backup taken earlier (an rng of its own:
    /// every earlier draw as before): the mailing mapping's records, their upload URLs and
    /// every message record go back to what they were then.
    restores: Option<StdRng>,
    /// The machine's clocks, when they are not the world's.
    clocks: Option<Clocks>,
    /// When (world time) each record was first written, and each message first on record as
    /// sent: the oracle's times (the agent's own are by its clock, which may be stepped).
    record_born: BTreeMap<String, Time>,
    message_sent: BTreeMap<String, Time>,
    /// When each message was first written, in the world's time plus every forward step of the
    /// wall clock before (`Clocks::forward_ms`): `max_messages` holds in that time (the agent
    /// cannot see a step forward while it was down; it takes a step back conservatively).
    message_made: BTreeMap<String, Time>,
    backup: Option<Backup>,
    /// Upload sessions a restored ledger no longer knows (left to expire, as the agent must).
    forgotten_sessions: BTreeSet<String>,
    /// Entries whose record a restore took back to an earlier state.
    restored: BTreeSet<String>,
    /// A restore waits for the moment a person could have made it (`restart`).
    restore_pending: bool,
    crashed_at: Time,
    /// Message records as they were when a restore took them back (for the oracle).
    overwritten_msgs: BTreeMap<String, Vec<MessageRecord>>,
    /// Files moved into a `failed_dir` (its path there -> inode), and by which entry.
    aside: BTreeMap<PathBuf, (u64, String)>,
    /// When the agent's machine wakes from its last suspend: until then no process of it runs,
    /// so the agent neither crashes nor starts again.
    awake_at: Time,
}

/// A ledger write not yet flushed: the record or message it overwrote (`None`: it was new).
#[derive(Debug, Clone)]
enum Undo {
    Record(String, Option<Record>),
    Message(String, Option<MessageRecord>),
}

/// Why the executor's `drain` stopped early: the oracle saw a violation, or the agent crashed
/// (nothing more of its batch happens).
#[derive(Debug)]
pub enum Stop {
    Violation(Violation),
    Crashed,
}

impl From<Violation> for Stop {
    fn from(v: Violation) -> Stop {
        Stop::Violation(v)
    }
}

/// A copy of the state dir, as a backup tool takes it between two writes.
#[derive(Debug, Clone)]
struct Backup {
    records: BTreeMap<String, Record>,
    urls: BTreeMap<String, String>,
    messages: BTreeMap<String, MessageRecord>,
}

/// Faults as unkind as Graph's, drawn per seed from a generator of their own.
#[derive(Debug, Clone)]
pub struct Harsh {
    /// A send that took effect answered with a throttle (429, 503, or Exchange's sending limit)
    /// instead of its 202 (GRAPH.md §13: Graph has delivered mail it answered 429 for).
    pub send_effect_then_throttled: f64,
    /// A throttle that names no `Retry-After`.
    pub no_retry_after: f64,
    /// `Retry-After` up to this long (0: always 2 s, as before).
    pub retry_after_max_ms: u64,
    /// A throttle of a send that is Exchange's sending limit (a 403 with its code).
    pub send_limit: f64,
    /// The Sent Items copy of a message does not keep its marker (found by
    /// `internetMessageId` only).
    pub unmarked_sent_copy: f64,
}

impl Harsh {
    fn from_seed(rng: &mut StdRng) -> Harsh {
        let some = |rng: &mut StdRng, max: f64| {
            if rng.gen_bool(0.5) {
                0.0
            } else {
                rng.gen_range(0.0..max)
            }
        };
        Harsh {
            send_effect_then_throttled: some(rng, 0.4),
            no_retry_after: some(rng, 0.3),
            retry_after_max_ms: if rng.gen_bool(0.5) {
                0
            } else {
                [5_000, 60_000, 600_000][rng.gen_range(0..3)]
            },
            send_limit: some(rng, 0.5),
            unmarked_sent_copy: some(rng, 0.5),
        }
    }
}

/// A send Exchange accepted: (marker, draft id, the draft's attachments then: name, bytes).
type SimSend = (String, String, Vec<(String, Option<Content>)>);

/// A message in the simulated mailbox.
#[derive(Debug, Clone)]
struct SimMessage {
    /// Its marker; `None`: a sent copy that did not keep it.
    marker: Option<String>,
    /// The marker it was made under (the oracle's, whatever Graph shows).
    of: String,
    /// The draft's `internetMessageId`, kept by its sent copy.
    imid: String,
    is_draft: bool,
    /// A draft that was sent: gone from Drafts (404) from this time.
    gone_at: Option<Time>,
    /// A sent copy: in Sent Items from this time.
    visible_at: Time,
    /// The keys of its files (the file-key property; none on a copy that kept no property).
    keys: Vec<String>,
    /// A sent copy's attachments: (name, id of its own).
    atts: Vec<(String, String)>,
    /// Its body as last set (at its creation, or by `SetLetter`).
    body: String,
}

/// A broken invariant, with the seed that shows it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    pub step: u64,
    pub what: String,
    pub log_tail: Vec<String>,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let knobs = Knobs::from_seed(&mut rng);
        let n_items = rng.gen_range(1..=2);
        let mut mappings = Vec::new();
        for i in 0..rng.gen_range(1..=2) {
            let rule = MappingRule {
                name: format!("m{i}"),
                target: Target {
                    user: "me".into(),
                    kind: ItemKind::Message,
                    item_id: format!("item{}", rng.gen_range(0..n_items)),
                },
                if_exists: if rng.gen_bool(0.7) {
                    IfExists::Skip
                } else {
                    IfExists::Attach
                },
                on_change: if rng.gen_bool(0.6) {
                    OnChange::Replace
                } else {
                    OnChange::Add
                },
                after: match rng.gen_range(0..4) {
                    0 => After::Move,
                    1 => After::Delete,
                    _ => After::Keep,
                },
                mail: None,
            };
            mappings.push((rule, PathBuf::from(format!("/m{i}"))));
        }
        // A mailing mapping, from an rng of its own: a seed without one runs exactly as it did
        // before messages existed (so every seed kept in FAILED_ONCE still shows its case).
        let mut mrng = StdRng::seed_from_u64(seed ^ 0x6d61_696c_6d61_696c);
        let mut send_move_ms = 0;
        let mut twins = false;
        let mut deletes_drafts = false;
        let mut hand_sends = false;
        if mrng.gen_bool(0.4) {
            let batch = mrng.gen_bool(0.5);
            let rule = MappingRule {
                name: "mail".into(),
                target: Target {
                    user: "me".into(),
                    kind: ItemKind::Message,
                    item_id: String::new(),
                },
                if_exists: IfExists::Attach,
                on_change: OnChange::Replace,
                after: match mrng.gen_range(0..4) {
                    0 => After::Move,
                    1 => After::Delete,
                    _ => After::Keep,
                },
                mail: Some(MailRule {
                    to: vec!["ap@example.com".into()],
                    subject: if batch {
                        "{count} files".into()
                    } else {
                        "File {name}".into()
                    },
                    body: "Attached: {names}.".into(),
                    batch,
                    batch_quiet_ms: mrng.gen_range(0..10_000),
                    send: mrng.gen_bool(0.85),
                    // Sometimes small enough to split batches and refuse the largest files.
                    max_message_size: [35_000_000, 12 << 20][mrng.gen_range(0..2)],
                    ..MailRule::default()
                }),
            };
            mappings.push((rule, PathBuf::from("/mail")));
            // Exchange moves a sent draft to Sent Items after this; sometimes later than the
            // agent's patience (`look_after`), so a lost send answer cannot be told.
            send_move_ms = if mrng.gen_bool(0.2) {
                mrng.gen_range(30_000..90_000)
            } else {
                mrng.gen_range(0..5_000)
            };
            // Drawn last (every draw above as before): some seeds also drop one file into two
            // subfolders at once, so a batch holds two files of one name and the same bytes.
            twins = mrng.gen_bool(0.3);
            // And some have a user who deletes drafts not yet sent in Outlook.
            deletes_drafts = mrng.gen_bool(0.3);
            // And some a user who sends the agent's drafts from Outlook before the agent does.
            hand_sends = mrng.gen_bool(0.3);
        }
        let policy = Policy {
            chunk_size: [1 << 20, 3840 * 1024][rng.gen_range(0..2)],
            concurrency: rng.gen_range(1..=4),
            look_after_ms: 30_000,
            ..Policy::default()
        };
        let mut items = BTreeMap::new();
        for i in 0..n_items {
            items.insert(format!("item{i}"), Vec::new());
        }
        let user_ops_left = knobs.user_ops;
        let mut harsh_rng = StdRng::seed_from_u64(seed ^ 0x6861_7273_6877_6f72);
        let mut edit_rng = StdRng::seed_from_u64(seed ^ 0x6564_6974_2069_6e21);
        let mut prune_rng = StdRng::seed_from_u64(seed ^ 0x7072_756e_6521_2121);
        let prunes = prune_rng.gen_bool(0.5);
        let keep_done_ms = prune_rng.gen_range(0..30_000);
        let harsh = Harsh::from_seed(&mut harsh_rng);
        // Some mailing mappings have a small `max_messages` cap (drawn last, from the harsh
        // generator: every earlier draw as before).
        if harsh_rng.gen_bool(0.3) {
            let cap = harsh_rng.gen_range(1..=3);
            let window = harsh_rng.gen_range(10_000..600_000);
            for (rule, _) in &mut mappings {
                if let Some(mail) = rule.mail.as_mut() {
                    mail.max_messages = cap;
                    mail.max_messages_window_ms = window;
                }
            }
        }
        // Most mailing mappings search the mailbox for each file's key before mailing it (drawn
        // last: every earlier draw as before).
        let searches = harsh_rng.gen_bool(0.7);
        if searches {
            for (rule, dir) in &mut mappings {
                if let Some(mail) = rule.mail.as_mut() {
                    mail.remember_sent_ms = 90 * 86_400_000;
                    mail.folder = dir.clone();
                }
            }
        }
        // (Not in a world whose sent copies may keep no property: there the key cannot be
        // found, and the mailbox cannot be the record of last resort. docs/core.md: known
        // limits.)
        let loses_ledger = searches && harsh_rng.gen_bool(0.4) && harsh.unmarked_sent_copy == 0.0;
        // A second agent on the mailing folder (its own generator: every earlier draw as
        // before). Only where keys are searched and sent copies keep them: without, two agents
        // cannot see each other.
        let mut rival_rng = StdRng::seed_from_u64(seed ^ 0x7269_7661_6c61_6774);
        let rival = searches
            && harsh.unmarked_sent_copy == 0.0
            && !mappings.is_empty()
            && rival_rng.gen_bool(0.5);
        // (A draft sent from Outlook while an attachment's answer was in doubt: only the key on
        // the sent copy can tell whether that file went in it. Not where sent copies keep no
        // property, as for a lost ledger. docs/core.md, known limits.)
        // (Nor beside a second agent: a draft sent from Outlook is in the Outbox, in neither
        // Drafts nor Sent Items, during Exchange's move, where the other agent's check cannot
        // see it, and both mail the file. docs/core.md, known limits.)
        let hand_sends = hand_sends && harsh.unmarked_sent_copy == 0.0 && !rival;
        let mut hand_edit_rng = StdRng::seed_from_u64(seed ^ 0x6861_6e64_6564_6974);
        let hand_edits = send_move_ms > 0 && hand_edit_rng.gen_bool(0.3);
        let mut size_rng = StdRng::seed_from_u64(seed ^ 0x7465_6e61_6e74_737a);
        // (Above the largest file the world drops, encoded: a file alone always fits.)
        let tenant_limit = mappings
            .iter()
            .filter_map(|(r, _)| r.mail.as_ref())
            .map(|m| m.max_message_size)
            .find(|max| *max > 14_000_000)
            .filter(|_| size_rng.gen_bool(0.6))
            .map(|max| size_rng.gen_range(13_300_000..max.min(16_000_000)));
        let mut lag_rng = StdRng::seed_from_u64(seed ^ 0x6669_6c74_6572_6c61);
        let filter_lag_ms = match (lag_rng.gen_bool(0.5), rival) {
            (false, _) => 0,
            (true, true) => lag_rng.gen_range(0..crate::machine::RIVAL_SETTLE_MS),
            (true, false) => lag_rng.gen_range(0..20_000),
        };
        // Of those, some have their state dir restored from a backup at a restart.
        let mut restore_rng = StdRng::seed_from_u64(seed ^ 0x7265_7374_6f72_6521);
        let restores = (loses_ledger && restore_rng.gen_bool(0.5)).then_some(restore_rng);
        let mut clock_rng = StdRng::seed_from_u64(seed ^ 0x636c_6f63_6b73_2121);
        let clocks = clock_rng.gen_bool(0.5).then(|| Clocks {
            wall_skew: clock_rng.gen_range(-60_000..60_000),
            rng: clock_rng,
            logical: crate::clock::Logical::new(),
            asleep_ms: 0,
            forward_ms: 0,
        });
        // Half the worlds have a `failed_dir` on every mapping: the core asks for a failed
        // file's move there, and a retry takes it back (drawn last: every earlier draw as
        // before). The world's moves are sometimes slow, and sometimes fail.
        let mut policy = policy;
        if harsh_rng.gen_bool(0.5) {
            policy.failed_dirs = mappings.iter().map(|(r, _)| r.name.clone()).collect();
        }
        let mut sim = Sim {
            seed,
            rng,
            knobs,
            now: Time(1_000_000),
            events: BTreeMap::new(),
            next_event: 0,
            inodes: BTreeMap::new(),
            paths: BTreeMap::new(),
            next_ino: 1,
            next_ver: 1,
            unmounted: BTreeSet::new(),
            writers: Vec::new(),
            writer_rng: StdRng::seed_from_u64(seed ^ 0x7772_6974_6572_2121),
            removed_undone: Vec::new(),
            after_unseen: Vec::new(),
            items,
            sessions: BTreeMap::new(),
            next_att: 1,
            next_sess: 1,
            sign_in_until: Time(0),
            mappings,
            policy,
            machine: None,
            epoch: 0,
            watch_last: BTreeMap::new(),
            ledger: BTreeMap::new(),
            unflushed: Vec::new(),
            queue: std::collections::VecDeque::new(),
            urls: BTreeMap::new(),
            readers: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_req: 1,
            user_ops_left,
            quiet: false,
            steps: 0,
            crashes: 0,
            evil: false,
            evil_orphans: BTreeSet::new(),
            evil_made: BTreeSet::new(),
            adopted: BTreeSet::new(),
            final_check: false,
            log: Vec::new(),
            trace: false,
            mail: BTreeMap::new(),
            next_msg: 1,
            sends: Vec::new(),
            send_move_ms,
            msg_ledger: BTreeMap::new(),
            late_attachments: Vec::new(),
            not_before: BTreeMap::new(),
            mail_rng: mrng,
            twins,
            deletes_drafts,
            deleted_drafts: BTreeSet::new(),
            deleted_sent: Vec::new(),
            hand_sends,
            hand_sent: BTreeSet::new(),
            hand_edits,
            hand_edit_rng,
            hand_edited: BTreeSet::new(),
            hand_removed: BTreeSet::new(),
            harsh_rng,
            harsh,
            filter_lag_ms,
            tenant_limit,
            edits: edit_rng.gen_bool(0.5),
            edit_rng,
            prunes,
            prune_rng,
            keep_done_ms,
            pruned: BTreeMap::new(),
            pruned_msgs: BTreeMap::new(),
            drops: BTreeMap::new(),
            last_placed: BTreeMap::new(),
            loses_ledger,
            rival,
            rival_rng,
            rival_jobs: Vec::new(),
            lost_ledger: BTreeMap::new(),
            lost_msgs: BTreeMap::new(),
            restores,
            clocks,
            record_born: BTreeMap::new(),
            message_sent: BTreeMap::new(),
            message_made: BTreeMap::new(),
            backup: None,
            forgotten_sessions: BTreeSet::new(),
            restored: BTreeSet::new(),
            restore_pending: false,
            crashed_at: Time(0),
            overwritten_msgs: BTreeMap::new(),
            aside: BTreeMap::new(),
            awake_at: Time(0),
        };
        sim.schedule(0, Event::Restart);
        sim.schedule(10, Event::User);
        if sim.prunes {
            let d = sim.prune_rng.gen_range(5_000..30_000);
            sim.schedule(d, Event::Prune);
        }
        sim
    }

    fn schedule(&mut self, after_ms: u64, e: Event) {
        self.next_event += 1;
        let mut t = self.now.plus_ms(after_ms);
        // What reaches the agent waits while its machine sleeps (what was due then was moved by
        // `suspend`; this is what comes in meanwhile: the world's reports, the user's commands).
        if self.asleep() && self.agent_facing(&e) {
            t = t.max(self.awake_at);
        }
        self.events.insert((t, self.next_event), e);
    }

    /// An event that reaches the running agent (or the request of it that it completes).
    fn agent_facing(&self, e: &Event) -> bool {
        let ep = self.epoch;
        match e {
            Event::Deliver(x, _) | Event::Tick(x) | Event::Rescan(x) => *x == ep,
            Event::Complete(req) => self.pending.get(req).is_some_and(|p| p.epoch == ep),
            _ => false,
        }
    }

    fn note(&mut self, s: String) {
        if self.trace {
            eprintln!("[{}] {}", self.now.0, s);
        }
        self.log.push(format!("[{}] {}", self.now.0, s));
        if self.log.len() > 400 {
            self.log.drain(..200);
        }
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.seed,
            step: self.steps,
            what,
            log_tail: self.log.iter().rev().take(60).rev().cloned().collect(),
        }
    }

    /// Run the seed to the end: chaos, then quiet, then the final checks.
    pub fn run(&mut self) -> Result<(), Violation> {
        let mut quiet_since_steps = 0u64;
        let mut same_time = 0u64;
        while let Some(((t, _), e)) = self.events.pop_first() {
            if t > self.now {
                self.now = t;
                same_time = 0;
            } else {
                same_time += 1;
                if same_time > 20_000 {
                    return Err(self.violation("livelock: 20,000 steps without time moving".into()));
                }
            }
            self.steps += 1;
            self.step(e)?;
            // Answers, wake-ups and events that came in the same millisecond wait in the queue
            // and go to the machine as one batch (the agent takes every answer already in).
            let more_now = self.events.first_key_value().is_some_and(|((t, _), e)| {
                *t == self.now
                    && matches!(e, Event::Deliver(..) | Event::Complete(_) | Event::Tick(_))
            });
            if !more_now && !self.queue.is_empty() {
                self.drain_queue()?;
            }
            self.check_always()?;
            if self.quiet {
                quiet_since_steps += 1;
                if self.settled_down() {
                    return self.check_final();
                }
                if quiet_since_steps > 200_000 || self.now.0 > 1_000_000 + 48 * 3_600_000 {
                    let active: Vec<String> = self
                        .machine
                        .as_ref()
                        .map(|m| {
                            m.active()
                                .map(|(r, w)| format!("{} {:?} {:?}", r.id, r.state, w))
                                .collect()
                        })
                        .unwrap_or_default();
                    return Err(self.violation(format!(
                        "no quiescence: the machine never finished its work once faults stopped (active: {active:?})"
                    )));
                }
            }
            if self.steps > 2_000_000 {
                return Err(self.violation("runaway: over 2,000,000 steps".into()));
            }
        }
        if self.settled_down() {
            return self.check_final();
        }
        let state = self
            .machine
            .as_ref()
            .map(|m| m.describe())
            .unwrap_or_default();
        Err(self.violation(format!(
            "the event queue ran dry before quiescence\n{state}"
        )))
    }

    fn settled_down(&self) -> bool {
        self.quiet
            && self.machine.as_ref().is_some_and(|m| m.quiescent())
            && self.pending.values().all(|p| p.epoch != self.epoch)
            && !self.events.values().any(|e| match e {
                Event::Deliver(ep, _) | Event::Rescan(ep) => *ep == self.epoch,
                Event::Mount(_)
                | Event::Append(..)
                | Event::Restart
                | Event::RetryMail(_)
                | Event::Rival(_) => true,
                Event::User
                | Event::Complete(_)
                | Event::Tick(_)
                | Event::Prune
                | Event::Suspend(_) => false,
            })
    }

    fn step(&mut self, e: Event) -> Result<(), Violation> {
        match e {
            Event::User => {
                if self.user_ops_left == 0 {
                    self.go_quiet();
                } else {
                    self.user_ops_left -= 1;
                    self.user_op();
                    if self.twins && self.mail_rng.gen_bool(0.25) {
                        self.twin_drop();
                    }
                    if self.deletes_drafts && self.mail_rng.gen_bool(0.15) {
                        self.delete_a_draft();
                    }
                    if self.hand_sends && self.mail_rng.gen_bool(0.1) {
                        self.hand_send_a_draft();
                    }
                    if self.hand_edits && self.hand_edit_rng.gen_bool(0.15) {
                        self.hand_edit_a_draft();
                    }
                    let d = self.rng.gen_range(10..5_000);
                    self.schedule(d, Event::User);
                }
            }
            Event::Deliver(epoch, input) => {
                if epoch == self.epoch && self.machine.is_some() {
                    // `outbox retry` reads the entries from the ledger when the agent takes the
                    // request, not when the user typed it: a move into `failed_dir` answered
                    // in between is on record then (seeds 175603, 789676: a stale record
                    // without it retried the file, then canceled it as deleted).
                    let input = match input {
                        Input::Retry { records } => Input::Retry {
                            records: (records.into_iter())
                                .map(|r| self.ledger.get(&r.id).cloned().unwrap_or(r))
                                .collect(),
                        },
                        // (`outbox retry MESSAGE` the same: its files as on record then; two
                        // retries asked while the machine slept, a cancel between them, took
                        // the second's stale record of the canceled file for its finished
                        // state: seed 482373, its message waited for ever.)
                        Input::RetryMessage { message, records } => Input::RetryMessage {
                            records: (message.files.iter())
                                .filter_map(|f| self.ledger.get(f).cloned())
                                .chain(
                                    records
                                        .into_iter()
                                        .filter(|r| !self.ledger.contains_key(&r.id)),
                                )
                                .collect(),
                            message: self.msg_ledger.get(&message.id).cloned().unwrap_or(message),
                        },
                        other => other,
                    };
                    self.queue.push_back(input);
                }
            }
            Event::Complete(req) => self.complete(req)?,
            Event::Tick(epoch) => {
                if epoch == self.epoch && self.machine.is_some() {
                    self.queue.push_back(Input::Tick);
                }
            }
            Event::Restart => self.restart()?,
            Event::Mount(m) => {
                if self.unmounted.remove(&m) {
                    self.note(format!("user: mount {m}"));
                    let e = self.epoch;
                    self.schedule(1, Event::Deliver(e, Input::FolderAvailable { mapping: m }));
                    self.schedule(2, Event::Rescan(e));
                }
            }
            Event::Append(path, n) => {
                let now_ns = self.now.0 as i64 * 1_000_000;
                let writer = self
                    .writers
                    .iter()
                    .rposition(|w| w.path == path && w.left > 0);
                if let Some(ino) = self.paths.get(&path).copied() {
                    self.next_ver += 1;
                    let v = self.next_ver;
                    let mut size = 0;
                    if let Some(node) = self.inodes.get_mut(&ino) {
                        node.content = Content::new(v, node.content.size + 4096);
                        node.mtime = now_ns;
                        node.ctime = now_ns;
                        size = node.content.size;
                    }
                    self.note(format!("user: append to {}", path.display()));
                    self.placed(&path);
                    self.watch(&path, true);
                    if let Some(w) = writer.and_then(|i| self.writers.get_mut(i)) {
                        w.versions.push((ino, size, now_ns));
                        w.left = n;
                    }
                    if n > 0 {
                        let d = self.rng.gen_range(100..900);
                        let d = self.writer_pause(writer, d);
                        self.schedule(d, Event::Append(path, n - 1));
                    }
                } else if let Some(w) = writer.and_then(|i| self.writers.get_mut(i)) {
                    // Its file went (deleted, moved by an after-action): it stops.
                    w.left = 0;
                }
            }
            Event::Rescan(epoch) => {
                if epoch == self.epoch && self.machine.is_some() {
                    self.rescan()?;
                    // The agent prunes with each periodic rescan.
                    self.prune()?;
                }
            }
            Event::RetryMail(n) => self.retry_mail(n)?,
            Event::Rival(n) => self.rival_step(n),
            Event::Prune => self.prune_across_an_unmount()?,
            Event::Suspend(epoch) => self.suspend(epoch),
        }
        // (Not while its machine sleeps: no process runs then. Before, an agent crashed and
        // started again inside a suspend; the dead run's requests, held for the wake, landed
        // long after the new run had settled their doubt: seed 24604, attached twice.)
        if !self.quiet
            && self.machine.is_some()
            && self.rng.gen_bool(self.knobs.crash_prob)
            && !self.asleep()
        {
            self.crash_and_restart_later();
        }
        Ok(())
    }

    /// The machine sleeps now (see [`Sim::suspend`]).
    fn asleep(&self) -> bool {
        self.now < self.awake_at
    }

    /// The agent's time now: the world's, or its machine's clocks read through
    /// [`crate::clock::Logical`] (see [`Clocks`]).
    fn agent_now(&mut self) -> Time {
        let now = self.now;
        match self.clocks.as_mut() {
            None => now,
            Some(c) => {
                let wall = now.0.saturating_add_signed(c.wall_skew);
                c.logical.read(wall, now.0.saturating_sub(c.asleep_ms))
            }
        }
    }

    /// The machine of run `epoch` sleeps, from a few seconds to two hours: its monotonic clock
    /// stops, and nothing reaches the agent until it wakes (answers, wake-ups, watcher reports,
    /// rescans wait, in order; requests in flight land when it wakes). The world goes on:
    /// sessions age, drafts are sent by hand, other writers write.
    fn suspend(&mut self, epoch: u64) {
        if epoch != self.epoch || self.machine.is_none() || self.quiet {
            return;
        }
        let Some(c) = self.clocks.as_mut() else {
            return;
        };
        let d = if c.rng.gen_bool(0.2) {
            c.rng.gen_range(600_000..7_200_000)
        } else {
            c.rng.gen_range(2_000..120_000)
        };
        c.asleep_ms += d;
        let until = self.now.plus_ms(d);
        self.awake_at = until;
        self.note(format!("SUSPEND for {d} ms"));
        let held: Vec<(Time, u64)> = self
            .events
            .range(..(until, 0))
            .filter(|(_, e)| self.agent_facing(e))
            .map(|(k, _)| *k)
            .collect();
        for k in held {
            if let Some(e) = self.events.remove(&k) {
                self.events.insert((until, k.1), e);
            }
        }
        // What the agent saw of each writer is old news when it wakes.
        self.writer_disturbed(|_| true);
    }

    fn go_quiet(&mut self) {
        self.quiet = true;
        self.note("quiet: faults stop".into());
        let back: Vec<String> = self.unmounted.iter().cloned().collect();
        for m in back {
            self.schedule(0, Event::Mount(m));
        }
        self.sign_in_until = Time(0);
        let e = self.epoch;
        self.schedule(2, Event::Rescan(e));
        if !self.msg_ledger.is_empty() || self.mappings.iter().any(|(r, _)| r.mail.is_some()) {
            let d = self.send_move_ms + self.policy.look_after_ms + 60_000;
            self.schedule(d, Event::RetryMail(0));
        }
    }

    /// `outbox retry` of every message that failed or could not be confirmed, once the agent
    /// has nothing of them in flight (later, if it has).
    fn retry_mail(&mut self, n: u32) -> Result<(), Violation> {
        // `outbox retry` runs on the agent's machine: not while it sleeps, and the user's
        // patience is not spent meanwhile (before, a suspend of over an hour outlasted the 50
        // rounds the user waits for a message at work, and no retry came after it: seeds
        // 12358, 26200, 27249, a message failed or unconfirmed at quiescence).
        if self.asleep() {
            let d = self.send_move_ms + self.policy.look_after_ms + 60_000;
            self.schedule(self.awake_at.since(self.now) + d, Event::RetryMail(n));
            return Ok(());
        }
        // (Files held by a mapping's `max_messages` cap are still to be mailed: a message of
        // theirs may yet be refused, and the user retries after it.)
        let capped = self.machine.as_ref().is_some_and(|m| {
            self.mappings
                .iter()
                .any(|(r, _)| r.mail.is_some() && m.capped_until(&r.name).is_some())
        });
        let busy = self.machine.is_none()
            || capped
            || self.msg_ledger.values().any(|m| m.at_work())
            || self
                .machine
                .as_ref()
                .is_some_and(|m| !m.quiescent() && !m.only_blocked());
        if busy && n < 50 {
            let d = self.send_move_ms + self.policy.look_after_ms + 60_000;
            self.schedule(d, Event::RetryMail(n + 1));
            return Ok(());
        }
        let retry: Vec<MessageRecord> = self
            .msg_ledger
            .values()
            .filter(|m| {
                matches!(m.state, MessageState::Unconfirmed)
                    || (m.state == MessageState::Failed
                        && m.error.as_ref().is_none_or(|e| {
                            e.code != NO_FILES_LEFT
                                && e.code != MAILED_ELSEWHERE
                                && e.code != crate::machine::SPLIT_AGAIN
                        }))
            })
            .filter(|m| !self.retry_refused(m))
            .cloned()
            .collect();
        // A file the world would not take back from `failed_dir` (a refusal of the move, which
        // may not last): the user retries again later. Not only a message that failed so
        // already: any message with a file in `failed_dir` asks its move back in this retry,
        // and the world refuses one move in ten even once faults stop, so this retry may end
        // in `failedDirRefused` too (its other files then wait for a retry that must come).
        // And a message refused for its size: the messages its retry makes may be refused too
        // (each refusal teaches a lower limit), so the user retries until they go.
        // (An unconfirmed one too: its draft still a draft, its re-send may be refused for its
        // size, and it fails so, for a retry that splits it.)
        let again = retry.iter().any(|m| {
            m.state == MessageState::Unconfirmed
                || (m.error.as_ref()).is_some_and(|e| {
                    e.code == crate::machine::FAILED_DIR_REFUSED
                        || e.code == "ErrorMessageSizeExceeded"
                })
                || m.files
                    .iter()
                    .any(|f| self.ledger.get(f).is_some_and(|r| r.failed_to.is_some()))
                // One that failed otherwise (its draft gone, say) but whose files are over the
                // tenant's limit: the draft its retry makes may be refused for its size in turn
                // (seed 57838: no retry came after that refusal).
                || self.tenant_limit.is_some_and(|limit| {
                    let size = (m.files.iter())
                        .filter_map(|f| self.ledger.get(f))
                        .fold(crate::mail::MESSAGE_OVERHEAD, |n, r| {
                            n + crate::mail::encoded_attachment_size(r.file.size, &r.name)
                        });
                    size > limit
                })
        });
        for m in retry {
            let records: Vec<Record> = m
                .files
                .iter()
                .filter_map(|f| self.ledger.get(f).cloned())
                .collect();
            self.put_back_lost_moves(&records);
            self.note(format!("user: retry message {}", m.id));
            self.feed(Input::RetryMessage {
                message: m,
                records,
            })?;
        }
        if again && n < 50 {
            let d = self.send_move_ms + self.policy.look_after_ms + 60_000;
            self.schedule(d, Event::RetryMail(n + 1));
        }
        Ok(())
    }

    /// A failed file the agent moved to `failed_dir` whose answer a crash lost, with another
    /// file at its path now: the real `outbox retry` refuses it, and its message ("ENTRY is
    /// failed, and PATH has changed since: its new version is sent on its own; nothing to
    /// retry", `ops::retry_refusal`, `ops::message_refusal`). The world's user does not retry
    /// them either; they stay failed, the file safe in `failed_dir` (its reason file beside
    /// it), left to the user.
    fn lost_move_in_the_way(&self, r: &Record) -> bool {
        matches!(r.state, State::Failed | State::Canceled | State::Rejected)
            && r.failed_to.is_none()
            && self.paths.contains_key(&r.path)
            && self.aside.values().any(|(_, id)| *id == r.id)
    }

    /// Whether the agent refuses `outbox retry` of message `m` ([`Sim::lost_move_in_the_way`]).
    fn retry_refused(&self, m: &MessageRecord) -> bool {
        m.files
            .iter()
            .filter_map(|f| self.ledger.get(f))
            .any(|r| r.state == State::Failed && self.lost_move_in_the_way(r))
    }

    /// Before `outbox retry`: a failed file the agent moved to `failed_dir` whose answer a crash
    /// lost (the ledger has no `failed_to`, so no retry can ask its move back) is put back at
    /// its path by the user's hand. The real `outbox retry` refuses such an entry or message
    /// before the agent sees it ("its file is no longer at PATH (deleted, or moved to the
    /// mapping's failed_dir): put it back there, then `outbox retry`", `ops::retry_refusal`),
    /// and the reason file beside it in `failed_dir` says the same; the world's retries reach
    /// the core directly, so the user does here what that refusal asks. (Left there, the core
    /// finds the path empty and cancels the file as deleted: it cannot know where it went.)
    fn put_back_lost_moves(&mut self, records: &[Record]) {
        for r in records {
            if !matches!(r.state, State::Failed | State::Canceled | State::Rejected)
                || r.failed_to.is_some()
                || self.paths.contains_key(&r.path)
                || self
                    .mapping_of(&r.path)
                    .is_none_or(|m| self.unmounted.contains(&m))
            {
                continue;
            }
            let Some((from, ino)) = self
                .aside
                .iter()
                .find(|(_, (_, id))| *id == r.id)
                .map(|(p, (ino, _))| (p.clone(), *ino))
            else {
                continue;
            };
            self.aside.remove(&from);
            self.writer_disturbed(|w| w.path == r.path);
            self.paths.insert(r.path.clone(), ino);
            self.bump_ctime(ino);
            self.note(format!(
                "user: moves {} back to {} by hand (the agent's answer of its move was lost)",
                from.display(),
                r.path.display()
            ));
            self.watch(&r.path, false);
        }
    }

    // ---- the user ---------------------------------------------------------------------------

    fn pick_path(&mut self) -> (String, PathBuf) {
        let i = self.rng.gen_range(0..self.mappings.len());
        let (rule, root) = &self.mappings[i];
        let names = ["a.pdf", "b.txt", "c.bin", "sub/a.pdf"];
        let name = names[self.rng.gen_range(0..names.len())];
        // One spelling per file: `root.join("sub/a.pdf")` is `/mail\sub/a.pdf` on Windows, and
        // `twin_drop`'s `/mail/sub/a.pdf` would then be another file to the core, which keeps
        // paths by their bytes (seed 33 broke an invariant under Wine).
        (
            rule.name.clone(),
            PathBuf::from(format!("{}/{name}", root.display())),
        )
    }

    fn new_content(&mut self) -> Content {
        let sizes = [
            0,
            1,
            1000,
            MIN_SESSION - 1,
            SESSION_THRESHOLD - 1,
            SESSION_THRESHOLD,
            5 << 20,
            9 << 20,
            MAX_ATTACHMENT + 1,
        ];
        let size = if self.rng.gen_bool(0.02) {
            sizes[8]
        } else {
            sizes[self.rng.gen_range(0..8)]
        };
        self.next_ver += 1;
        Content::new(self.next_ver, size)
    }

    fn mapping_of(&self, path: &Path) -> Option<String> {
        self.mappings
            .iter()
            .find(|(_, root)| path.starts_with(root))
            .map(|(r, _)| r.name.clone())
    }

    /// What the watcher reports, a little later (the agent's intake: a stat of the path).
    fn watch(&mut self, path: &Path, closed: bool) {
        let Some(mapping) = self.mapping_of(path) else {
            return;
        };
        if self.unmounted.contains(&mapping) {
            return;
        }
        let d = self.rng.gen_range(1..300);
        self.watch_after(path, closed, d);
    }

    /// What the watcher reports `d` ms from now.
    fn watch_after(&mut self, path: &Path, closed: bool, d: u64) {
        let Some(mapping) = self.mapping_of(path) else {
            return;
        };
        if self.unmounted.contains(&mapping) {
            return;
        }
        let input = match self
            .paths
            .get(path)
            .and_then(|ino| self.inodes.get(ino).map(|n| (ino, n)))
        {
            Some((ino, n)) => Input::Observed {
                mapping: mapping.clone(),
                path: path.to_path_buf(),
                stat: FileStat {
                    dev: 1,
                    ino: *ino,
                    size: n.content.size,
                    mtime_ns: n.mtime,
                    ctime_ns: n.ctime,
                    owner: None,
                },
            },
            None => Input::Gone {
                mapping: mapping.clone(),
                path: path.to_path_buf(),
            },
        };
        let e = self.epoch;
        // In order per path: not before the last report of the same path.
        let d = match self.watch_last.get(path) {
            Some(t) if t.0 > self.now.0 + d => t.0 - self.now.0,
            _ => d,
        };
        let last = self.now.plus_ms(d + u64::from(closed));
        self.watch_last.insert(path.to_path_buf(), last);
        self.schedule(d, Event::Deliver(e, input));
        if closed {
            self.schedule(
                d + 1,
                Event::Deliver(
                    e,
                    Input::Closed {
                        path: path.to_path_buf(),
                    },
                ),
            );
        }
    }

    /// A paced writer's pauses (ms) between a close and its next write: the first around
    /// `settle_after_close`, the later ones from half of it to past `settle`, so most writers
    /// make pauses longer than `settle_after_close` the rule must wait for, and some make
    /// pauses it does not promise to (those writers are not covered by the oracle).
    fn paced_pauses(&mut self, times: u32) -> Vec<u64> {
        let after_close = self.policy.settle_after_close_ms.max(2);
        let settle = self.policy.settle_ms.max(after_close);
        let first = if self.writer_rng.gen_bool(0.85) {
            self.writer_rng.gen_range(after_close / 2..after_close)
        } else {
            self.writer_rng
                .gen_range(after_close..after_close + after_close / 2)
        };
        let mut pauses = vec![first];
        for _ in 0..times {
            let p = if self.writer_rng.gen_bool(0.9) {
                self.writer_rng.gen_range(after_close / 2..settle)
            } else {
                self.writer_rng.gen_range(settle..settle + after_close)
            };
            pauses.push(p);
        }
        pauses
    }

    /// The pause before writer `i`'s next write: its own when paced, else `d` (the world's
    /// draw, made either way so every other draw stays as it was).
    fn writer_pause(&mut self, i: Option<usize>, d: u64) -> u64 {
        let (after_close, settle) = (self.policy.settle_after_close_ms, self.policy.settle_ms);
        let Some(w) = i.and_then(|i| self.writers.get_mut(i)) else {
            return d;
        };
        let d = if w.pauses.is_empty() {
            d
        } else {
            w.pauses.remove(0)
        };
        let promised = if w.made.is_empty() {
            d < after_close
        } else {
            d < settle
        };
        w.made.push(d);
        if !promised {
            w.covered = false;
        }
        d
    }

    /// Something other than the writer happened to the file, its folder or the agent: the
    /// settle rule's promise about the writer no longer holds.
    fn writer_disturbed(&mut self, what: impl Fn(&Writer) -> bool) {
        for w in &mut self.writers {
            if w.left > 0 && what(w) {
                w.covered = false;
            }
        }
    }

    /// Oracle: a file is hashed only once it settled; no version of a covered writer but its
    /// last is taken as finished (SPEC 4: a writer that appends and closes again and again is
    /// still writing).
    fn check_writer_finished(&self, path: &Path, stat: &FileStat) -> Result<(), Violation> {
        let v = (stat.ino, stat.size, stat.ctime_ns);
        for w in self.writers.iter().filter(|w| w.covered && w.path == path) {
            let Some(i) = w.versions.iter().position(|x| *x == v) else {
                continue;
            };
            if w.left > 0 || i + 1 < w.versions.len() {
                return Err(self.violation(format!(
                    "{} settled before its writer finished: version {} of {} so far, {} more to come (pauses {:?} ms)",
                    path.display(),
                    i + 1,
                    w.versions.len(),
                    w.left,
                    w.made
                )));
            }
        }
        Ok(())
    }

    fn user_op(&mut self) {
        let (mapping, path) = self.pick_path();
        self.user_op_on(mapping, path.clone());
        self.placed(&path);
    }

    /// Bytes that are new at `path` (a new inode, or new content in place) are a drop: the
    /// oracle's count of how often a name and its bytes may be mailed.
    fn placed(&mut self, path: &Path) {
        if !path.starts_with("/mail") {
            return;
        }
        let Some(ino) = self.paths.get(path).copied() else {
            return;
        };
        let Some(c) = self.content_of(ino) else {
            return;
        };
        if self.last_placed.get(path) == Some(&(ino, c)) {
            return;
        }
        self.last_placed.insert(path.to_path_buf(), (ino, c));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        *self.drops.entry((name.clone(), c)).or_default() += 1;
        if self.rival && self.rival_rng.gen_bool(0.4) {
            let rule = self
                .mappings
                .iter()
                .find(|(_, dir)| path.starts_with(dir))
                .and_then(|(m, dir)| Some((m.mail.as_ref()?, dir)));
            if let Some((rule, dir)) = rule {
                let rel = path.strip_prefix(dir).unwrap_or(path);
                let key = crate::model::file_key(
                    "me",
                    &crate::model::recipients_id(rule),
                    rel,
                    c.size,
                    &sha(c),
                );
                self.rival_jobs.push(RivalJob {
                    name,
                    content: c,
                    key,
                    draft: None,
                });
                // It sees the file settle about when the agent does.
                let d = self.rival_rng.gen_range(0..8_000);
                self.schedule(d, Event::Rival(self.rival_jobs.len() - 1));
            }
        }
    }

    /// The second agent's next step for job `n` (see [`RivalJob`]).
    fn rival_step(&mut self, n: usize) {
        let Some(job) = self.rival_jobs.get(n).cloned() else {
            return;
        };
        let now = self.now;
        let sent_holds = |m: &SimMessage| {
            !m.is_draft
                && m.visible_at <= now
                && m.keys.contains(&job.key)
                && m.atts.iter().any(|(a, _)| *a == job.name)
        };
        let live_draft = |m: &SimMessage| {
            m.is_draft && m.gone_at.is_none_or(|g| g > now) && m.keys.contains(&job.key)
        };
        let tag = format!("rival-{n}");
        let Some(own) = job.draft.clone() else {
            // Its search before a draft: any sent copy or draft holding the key stops it.
            if self.mail.values().any(|m| sent_holds(m) || live_draft(m)) {
                self.note(format!("rival: {tag} finds {} held or mailed", job.name));
                return;
            }
            self.next_msg += 1;
            let did = format!("draft{}", self.next_msg);
            self.mail.insert(
                did.clone(),
                SimMessage {
                    marker: Some(tag.clone()),
                    of: tag.clone(),
                    imid: format!("<{did}@rival>"),
                    body: String::new(),
                    is_draft: true,
                    gone_at: None,
                    visible_at: now,
                    keys: vec![job.key.clone()],
                    atts: Vec::new(),
                },
            );
            self.note(format!("rival: {tag} drafts {did} for {}", job.name));
            if let Some(j) = self.rival_jobs.get_mut(n) {
                j.draft = Some(did);
            }
            let d = crate::machine::RIVAL_SETTLE_MS + self.rival_rng.gen_range(0..4_000);
            self.schedule(d, Event::Rival(n));
            return;
        };
        let Some(created) = self.mail.get(&own).map(|m| m.visible_at) else {
            return;
        };
        let sent = self.mail.values().any(sent_holds);
        let older = self.mail.iter().any(|(gid, m)| {
            *gid != own && live_draft(m) && (m.visible_at, gid.as_str()) < (created, own.as_str())
        });
        if sent || older {
            self.note(format!("rival: {tag} gives way, deletes {own}"));
            self.mail.remove(&own);
            return;
        }
        let at = now.plus_ms(self.send_move_ms);
        let imid = match self.mail.get_mut(&own) {
            Some(m) => {
                m.gone_at = Some(at);
                m.imid.clone()
            }
            None => return,
        };
        self.next_msg += 1;
        let copy = format!("sent{}", self.next_msg);
        self.mail.insert(
            copy.clone(),
            SimMessage {
                marker: Some(tag.clone()),
                of: tag.clone(),
                imid,
                body: String::new(),
                is_draft: false,
                gone_at: None,
                visible_at: at,
                keys: vec![job.key.clone()],
                atts: vec![(job.name.clone(), format!("{copy}-a0"))],
            },
        );
        self.note(format!(
            "rival: {tag} SENT {own} as {copy} with {}",
            job.name
        ));
        self.sends
            .push((tag, own, vec![(job.name.clone(), Some(job.content))]));
    }

    fn user_op_on(&mut self, mapping: String, path: PathBuf) {
        let now_ns = self.now.0 as i64 * 1_000_000;
        self.writer_disturbed(|w| w.path == path);
        let op = self.rng.gen_range(0..113);
        let exists = self.paths.contains_key(&path);
        match op {
            // A new file written in place (or rewritten with new bytes of any size).
            0..=24 => {
                let c = self.new_content();
                let ino = match self.paths.get(&path) {
                    Some(i) if self.rng.gen_bool(0.5) => *i,
                    _ => {
                        self.next_ino += 1;
                        self.paths.insert(path.clone(), self.next_ino);
                        self.next_ino
                    }
                };
                self.inodes.insert(
                    ino,
                    Inode {
                        born: self.now,
                        content: c,
                        mtime: now_ns,
                        ctime: now_ns,
                    },
                );
                self.note(format!("user: write {} {:?}", path.display(), c));
                self.watch(&path, true);
            }
            // Renamed in whole (a new inode appears at once).
            25..=39 => {
                let c = self.new_content();
                self.new_file(&path, c, now_ns - 5_000_000_000);
                self.note(format!("user: rename-in {} {:?}", path.display(), c));
                self.watch(&path, false);
            }
            // Touch: time changes, bytes do not.
            40..=51 if exists => {
                if let Some(n) = self.paths.get(&path).and_then(|i| self.inodes.get_mut(i)) {
                    n.mtime = now_ns;
                    n.ctime = now_ns;
                }
                self.note(format!("user: touch {}", path.display()));
                let closed = self.rng.gen_bool(0.5);
                self.watch(&path, closed);
            }
            // Rewritten in place at the same size with other bytes.
            52..=63 if exists => {
                self.next_ver += 1;
                let v = self.next_ver;
                if let Some(n) = self.paths.get(&path).and_then(|i| self.inodes.get_mut(i)) {
                    n.content = Content::new(v, n.content.size);
                    n.mtime = now_ns;
                    n.ctime = now_ns;
                }
                self.note(format!("user: same-size rewrite {}", path.display()));
                self.watch(&path, true);
            }
            // Appended and closed, again and again, by a slow writer; half of them paced
            // around `settle_after_close` (from an rng of their own).
            64..=71 => {
                let c = self.new_content();
                let c = Content::new(c.ver, c.size.min(1 << 20));
                self.new_file(&path, c, now_ns);
                let times = self.rng.gen_range(2..8);
                self.note(format!(
                    "user: a slow writer starts {} ({times} appends)",
                    path.display()
                ));
                self.watch(&path, true);
                let d = self.rng.gen_range(100..900);
                let pauses = if self.writer_rng.gen_bool(0.5) {
                    self.paced_pauses(times)
                } else {
                    Vec::new()
                };
                let ino = self.paths.get(&path).copied().unwrap_or(0);
                self.writers.push(Writer {
                    path: path.clone(),
                    versions: vec![(ino, c.size, now_ns)],
                    // An agent that is down sees none of its closes, nor one whose folder is
                    // unmounted (seed 200735: the first close lost, the second taken as final).
                    covered: self.machine.is_some() && !self.unmounted.contains(&mapping),
                    pauses,
                    left: times + 1,
                    made: Vec::new(),
                });
                let d = self.writer_pause(Some(self.writers.len() - 1), d);
                self.schedule(d, Event::Append(path, times));
            }
            // Deleted.
            72..=81 if exists => {
                self.paths.remove(&path);
                self.note(format!("user: delete {}", path.display()));
                self.watch(&path, false);
            }
            // A different file copied over with preserved size and times (after = delete must
            // not remove it unsent).
            82..=87 if exists => {
                let old = self
                    .paths
                    .get(&path)
                    .and_then(|i| self.inodes.get(i))
                    .cloned();
                if let Some(old) = old {
                    self.next_ver += 1;
                    self.new_file(
                        &path,
                        Content::new(self.next_ver, old.content.size),
                        old.mtime,
                    );
                    self.note(format!(
                        "user: copy-over with preserved times {}",
                        path.display()
                    ));
                    self.watch(&path, false);
                }
            }
            // The folder goes away for a while.
            88..=91
                if self.rng.gen_bool((self.knobs.unmount_prob * 10.0).min(1.0))
                    && !self.unmounted.contains(&mapping) =>
            {
                self.unmounted.insert(mapping.clone());
                self.note(format!("user: unmount {mapping}"));
                if let Some(root) = self.mappings.iter().find(|(r, _)| r.name == mapping) {
                    let root = root.1.clone();
                    self.writer_disturbed(|w| w.path.starts_with(&root));
                }
                let e = self.epoch;
                self.schedule(
                    1,
                    Event::Deliver(
                        e,
                        Input::FolderUnavailable {
                            mapping: mapping.clone(),
                        },
                    ),
                );
                let back = self.rng.gen_range(1_000..60_000);
                self.schedule(back, Event::Mount(mapping));
            }
            // A sign-in pause.
            92..=93
                if self
                    .rng
                    .gen_bool((self.knobs.sign_in_pause_prob * 50.0).min(1.0)) =>
            {
                self.sign_in_until = self.now.plus_ms(self.rng.gen_range(1_000..120_000));
                self.note("graph: sign-in needed for a while".into());
            }
            // A copy of another file with the same name elsewhere (a recursive mapping's other
            // folder, another mapping): one name, the same bytes.
            94..=98 => {
                let name = path.file_name().map(|n| n.to_owned());
                let src = self
                    .paths
                    .iter()
                    .find(|(p, _)| **p != path && p.file_name().map(|n| n.to_owned()) == name)
                    .map(|(_, i)| *i);
                if let Some(src) = src {
                    let c = self.content_of(src).expect("inode");
                    self.new_file(&path, c, now_ns);
                    self.note(format!(
                        "user: copy same name and bytes to {}",
                        path.display()
                    ));
                    self.watch(&path, true);
                }
            }
            // Rewritten in place at the same size, the time put back (touch -r): only the bytes
            // tell.
            99..=103 if exists => {
                self.next_ver += 1;
                let v = self.next_ver;
                if let Some(n) = self.paths.get(&path).and_then(|i| self.inodes.get_mut(i)) {
                    n.content = Content::new(v, n.content.size);
                    n.ctime = now_ns;
                }
                self.note(format!(
                    "user: same-size rewrite, time kept {}",
                    path.display()
                ));
                self.watch(&path, true);
            }
            // `outbox cancel ID`.
            104..=107 => {
                let ids: Vec<String> = self
                    .ledger
                    .values()
                    .filter(|r| !r.state.is_terminal())
                    .map(|r| r.id.clone())
                    .collect();
                if !ids.is_empty() {
                    let id = ids[self.rng.gen_range(0..ids.len())].clone();
                    self.note(format!("user: cancel {id}"));
                    let e = self.epoch;
                    self.schedule(1, Event::Deliver(e, Input::Cancel { id }));
                }
            }
            // `outbox retry --failed` (and canceled ones).
            108..=110 => {
                let records: Vec<Record> = self
                    .ledger
                    .values()
                    .filter(|r| matches!(r.state, State::Failed | State::Canceled))
                    .filter(|r| !self.lost_move_in_the_way(r))
                    .cloned()
                    .collect();
                if !records.is_empty() {
                    self.put_back_lost_moves(&records);
                    self.note(format!("user: retry {} entries", records.len()));
                    let e = self.epoch;
                    self.schedule(1, Event::Deliver(e, Input::Retry { records }));
                }
                // Failed messages too, and unconfirmed ones: a person told to look in Sent
                // Items may retry before Exchange has moved the sent copy there.
                let failed: Vec<MessageRecord> = self
                    .msg_ledger
                    .values()
                    .filter(|m| matches!(m.state, MessageState::Failed | MessageState::Unconfirmed))
                    .filter(|m| !self.retry_refused(m))
                    .cloned()
                    .collect();
                for m in failed {
                    let records: Vec<Record> = m
                        .files
                        .iter()
                        .filter_map(|f| self.ledger.get(f).cloned())
                        .collect();
                    self.put_back_lost_moves(&records);
                    self.note(format!("user: retry message {}", m.id));
                    let e = self.epoch;
                    self.schedule(
                        0,
                        Event::Deliver(
                            e,
                            Input::RetryMessage {
                                message: m,
                                records,
                            },
                        ),
                    );
                }
            }
            // The config is edited: a mapping now names the other item.
            111..=112 if self.items.len() > 1 => {
                let i = self.rng.gen_range(0..self.mappings.len());
                let cur = self.mappings[i].0.target.item_id.clone();
                let next = if cur == "item0" { "item1" } else { "item0" };
                self.mappings[i].0.target.item_id = next.to_owned();
                self.note(format!(
                    "user: config: {} -> {next}",
                    self.mappings[i].0.name
                ));
                let e = self.epoch;
                let input = Input::Config {
                    mappings: self.mappings.iter().map(|(r, _)| r.clone()).collect(),
                    policy: self.policy.clone(),
                };
                self.schedule(1, Event::Deliver(e, input));
            }
            _ => {}
        }
    }

    /// A new file (a new inode) at `path` now, with `content` and modification time `mtime`.
    fn new_file(&mut self, path: &Path, content: Content, mtime: i64) {
        self.writer_disturbed(|w| w.path == path);
        self.next_ino += 1;
        self.inodes.insert(
            self.next_ino,
            Inode {
                born: self.now,
                content,
                mtime,
                ctime: self.now.0 as i64 * 1_000_000,
            },
        );
        self.paths.insert(path.to_path_buf(), self.next_ino);
        self.placed(path);
    }

    /// One file dropped into two subfolders of the mailing folder at once (renamed in whole):
    /// one name, the same bytes, likely one batch. Drawn from the mailing rng only.
    fn twin_drop(&mut self) {
        let sizes = [0, 1000, MIN_SESSION - 1, 5 << 20];
        let size = sizes[self.mail_rng.gen_range(0..sizes.len())];
        self.next_ver += 1;
        let c = Content::new(self.next_ver, size);
        let now_ns = self.now.0 as i64 * 1_000_000;
        for p in ["/mail/a.pdf", "/mail/sub/a.pdf"] {
            let path = PathBuf::from(p);
            self.new_file(&path, c, now_ns - 5_000_000_000);
            self.note(format!("user: twin drop {} {c:?}", path.display()));
            let d = self.mail_rng.gen_range(1..300);
            self.watch_after(&path, false, d);
        }
    }

    /// The user deletes a draft never sent of a message not left for review (`drafted`): what
    /// is attached to it goes with it; requests about it answer 404. Mailing rng only.
    fn delete_a_draft(&mut self) {
        let drafts: Vec<String> = self
            .mail
            .iter()
            .filter(|(_, m)| {
                m.is_draft
                    && m.gone_at.is_none()
                    && m.marker
                        .as_ref()
                        .and_then(|k| self.msg_ledger.get(k))
                        .is_some_and(|r| {
                            !matches!(r.state, MessageState::Drafted | MessageState::Sent)
                        })
            })
            .map(|(id, _)| id.clone())
            .collect();
        if drafts.is_empty() {
            return;
        }
        let d = drafts[self.mail_rng.gen_range(0..drafts.len())].clone();
        self.mail.remove(&d);
        self.items.remove(&d);
        self.sessions.retain(|_, s| s.item != d);
        self.note(format!("user: deletes draft {d}"));
        self.deleted_drafts.insert(d);
    }

    /// The attachment ids a listing of `draft_id` shows now (those made within the listing's
    /// lag not yet); `None`: no such draft.
    fn listed_ids(&self, draft_id: &str) -> Option<Vec<String>> {
        let (lag, now) = (self.knobs.listing_lag_ms, self.now);
        self.items.get(draft_id).map(|v| {
            v.iter()
                .filter(|a| a.created.plus_ms(lag) <= now)
                .map(|a| a.id.clone())
                .collect()
        })
    }

    /// The user takes one attachment off one of the agent's drafts in Outlook (not one left for
    /// review: that is theirs to edit; not another agent's).
    fn hand_edit_a_draft(&mut self) {
        let drafts: Vec<String> = (self.mail.iter())
            .filter(|(_, m)| m.is_draft && m.gone_at.is_none() && !m.of.starts_with("rival-"))
            .filter(|(_, m)| {
                self.msg_ledger
                    .get(&m.of)
                    .is_some_and(|r| r.state != MessageState::Drafted)
            })
            .filter(|(id, _)| self.items.get(*id).is_some_and(|v| !v.is_empty()))
            // (At any time: the executor checks the draft right before its send, and the
            // world answers a send at once, so no edit falls between the two. The race of
            // milliseconds between the real executor's check and its send: docs/core.md.)
            .map(|(id, _)| id.clone())
            .collect();
        if drafts.is_empty() {
            return;
        }
        let d = drafts[self.hand_edit_rng.gen_range(0..drafts.len())].clone();
        let Some(atts) = self.items.get_mut(&d) else {
            return;
        };
        let gone = atts.remove(self.hand_edit_rng.gen_range(0..atts.len()));
        self.note(format!(
            "user: takes attachment {} ({}) off draft {d} in Outlook",
            gone.id, gone.name
        ));
        self.hand_edited.insert(d);
        self.hand_removed.insert(gone.id);
    }

    /// Exchange sends draft `draft_id` (marked `id`): its copy shows in Sent Items at `at`
    /// with what is on the draft now (the draft answers until then; a send from Outlook makes
    /// it leave Drafts at once).
    fn world_send(&mut self, id: &str, draft_id: &str, at: Time, by_hand: bool) {
        let atts: Vec<(String, Option<Content>)> = self
            .items
            .get(draft_id)
            .map(|v| v.iter().map(|a| (a.name.clone(), a.content)).collect())
            .unwrap_or_default();
        let mut imid = String::new();
        let mut keys = Vec::new();
        let mut body = String::new();
        if let Some(m) = self.mail.get_mut(draft_id) {
            m.gone_at = Some(at);
            imid = m.imid.to_owned();
            keys = m.keys.clone();
            body = m.body.clone();
        }
        self.next_msg += 1;
        let sent = format!("sent{}", self.next_msg);
        let unmarked = self.harsh.unmarked_sent_copy > 0.0
            && self.harsh_rng.gen_bool(self.harsh.unmarked_sent_copy);
        let copy_atts = atts
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), format!("{sent}-a{i}")))
            .collect();
        self.mail.insert(
            sent.clone(),
            SimMessage {
                marker: (!unmarked).then(|| id.to_owned()),
                of: id.to_owned(),
                imid,
                is_draft: false,
                gone_at: None,
                visible_at: at,
                // A copy that kept no property kept no key either.
                keys: if unmarked { Vec::new() } else { keys },
                atts: copy_atts,
                body: body.clone(),
            },
        );
        // The letter names exactly the files it carries (SPEC 8: a file never leaves
        // a message silently; the world's template is "Attached: {names}."). (Not one a person
        // sent from Outlook before its files were all on it.)
        if let Some(listed) = body
            .strip_prefix("Attached: ")
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !by_hand && !b.contains('\u{2026}'))
        {
            let mut named: Vec<&str> = listed.split(", ").collect();
            let mut carried: Vec<&str> = atts.iter().map(|(n, _)| n.as_str()).collect();
            named.sort_unstable();
            carried.sort_unstable();
            if named != carried {
                self.late_attachments.push(format!(
                    "of message {id}: its letter names {named:?} but it carries {carried:?}"
                ));
            }
        }
        self.note(format!(
            "graph: SENT {draft_id} marked {id} as {sent} with {atts:?}"
        ));
        self.sends.push((id.to_owned(), draft_id.to_owned(), atts));
    }

    /// The user sends one of the agent's drafts from Outlook: it goes with what is on it then;
    /// the draft leaves Drafts at once (the Outbox), its copy shows in Sent Items after the
    /// move. Requests about the draft answer 404 from now. Mailing rng only.
    /// The size of draft `draft_id` as the tenant's limit counts it (its attachments encoded).
    fn draft_size(&self, draft_id: &str) -> u64 {
        self.items.get(draft_id).map_or(0, |atts| {
            atts.iter().fold(crate::mail::MESSAGE_OVERHEAD, |n, a| {
                n + crate::mail::encoded_attachment_size(a.content.map_or(0, |c| c.size), &a.name)
            })
        })
    }

    fn hand_send_a_draft(&mut self) {
        let now = self.now;
        let drafts: Vec<(String, String)> = (self.mail.iter())
            .filter(|(_, m)| m.is_draft && m.gone_at.is_none() && !m.of.starts_with("rival-"))
            // Not one over the tenant's limit: Exchange refuses its send from Outlook too (seed
            // 885343: sent by hand after the agent's send was refused for its size, then split
            // by the user's retry and its file mailed again).
            .filter(|(id, _)| self.tenant_limit.is_none_or(|l| self.draft_size(id) <= l))
            // Not a draft a lost ledger left (the Outbox hides it in its move from the new
            // ledger's key search, the known limit above: seed 311087).
            .filter(|(_, m)| self.msg_ledger.contains_key(&m.of))
            // Not one the user took a file off (a known limit: the agent takes a draft found
            // sent for sent with its files, and does not read the copy back for each: seed
            // 11007. docs/core.md).
            .filter(|(id, _)| !self.hand_edited.contains(*id))
            .filter_map(|(id, m)| Some((id.clone(), m.marker.clone()?)))
            .collect();
        if drafts.is_empty() {
            return;
        }
        let (d, marker) = drafts[self.mail_rng.gen_range(0..drafts.len())].clone();
        self.note(format!("user: sends draft {d} from Outlook"));
        let at = now.plus_ms(self.send_move_ms);
        self.world_send(&marker, &d, at, true);
        if let Some(m) = self.mail.get_mut(&d) {
            m.gone_at = Some(now);
        }
        self.sessions.retain(|_, s| s.item != d);
        self.hand_sent.insert(d);
        self.hand_sent.insert(marker);
    }

    fn rescan(&mut self) -> Result<(), Violation> {
        let all: Vec<PathBuf> = self.paths.keys().cloned().collect();
        for p in all {
            if let Some(m) = self.mapping_of(&p) {
                if !self.unmounted.contains(&m) {
                    self.watch(&p, false);
                }
            }
        }
        // Paths the ledger knows that are gone.
        let known: BTreeSet<(String, PathBuf)> = self
            .ledger
            .values()
            .map(|r| (r.mapping.clone(), r.path.clone()))
            .collect();
        for (m, p) in known {
            if !self.paths.contains_key(&p) && !self.unmounted.contains(&m) {
                self.watch(&p, false);
            }
        }
        Ok(())
    }

    // ---- the agent --------------------------------------------------------------------------

    /// Crash, and start again some time later.
    fn crash_and_restart_later(&mut self) {
        self.crash();
        let d = self.rng.gen_range(0..20_000);
        self.schedule(d, Event::Restart);
    }

    fn crash(&mut self) {
        if self.machine.is_none() {
            return;
        }
        self.crashes += 1;
        self.crashed_at = self.now;
        self.note("CRASH".into());
        // The agent's own moves of files (after-actions, into and out of `failed_dir`) are its
        // process's renames: each happened before the crash or never does. (Graph's requests
        // may still land later; a rename the process made cannot: a process in a rename on a
        // network share is gone only once the rename returns. Before, such a move landed
        // after the next start had retried the file, which then took it for deleted: seeds
        // 887852, 911627.)
        let local: Vec<u64> = (self.pending.iter())
            .filter(|(_, p)| {
                matches!(
                    p.action,
                    Action::After { .. }
                        | Action::ToFailedDir { .. }
                        | Action::FromFailedDir { .. }
                )
            })
            .map(|(req, _)| *req)
            .collect();
        for req in local {
            if let Some(p) = self.pending.remove(&req) {
                if self.rng.gen_bool(0.5) {
                    let _ = self.serve(&p.action, Fate::Normal, false, p.read);
                }
            }
        }
        // The agent forgets what it saw of every writer.
        self.writer_disturbed(|_| true);
        // What was written and not flushed is lost, and so is every input not yet taken.
        self.roll_back();
        self.queue.clear();
        self.machine = None;
        self.readers.clear();
        self.not_before.clear();
        self.epoch += 1;
    }

    fn restart(&mut self) -> Result<(), Violation> {
        if self.machine.is_some() {
            return Ok(());
        }
        self.note("start".into());
        // (Not while a draft sent from Outlook is in Exchange's move: in the Outbox, in neither
        // Drafts nor Sent Items, no key search can see it. docs/core.md, known limits.)
        let lose = !self.restore_pending
            && self.loses_ledger
            && self.harsh_rng.gen_bool(0.3)
            && !self.hand_send_moving()
            && !self.unindexed();
        if lose {
            self.lose_ledger();
        } else if self.restore_pending
            || (self.backup.is_some() && self.restores.as_mut().is_some_and(|r| r.gen_bool(0.3)))
        {
            // Restoring a backup takes a person minutes, not the seconds of a crash: the
            // agent starts again once every effect of its last run could be seen (a send's
            // move to Sent Items, a listing's lag). (A restart inside that window would not
            // know a send its ledger forgot: nothing the mailbox shows could tell it.)
            let ready = self.crashed_at.plus_ms(
                self.send_move_ms
                    + self.policy.look_after_ms
                    + self.knobs.listing_lag_ms
                    + self.filter_lag_ms,
            );
            if self.now < ready {
                self.restore_pending = true;
                self.schedule(ready.since(self.now), Event::Restart);
                return Ok(());
            }
            self.restore_pending = false;
            self.restore_backup();
        }
        let m = Machine::new(
            self.mappings.iter().map(|(r, _)| r.clone()).collect(),
            self.policy.clone(),
        );
        // A new run reads the wall clock afresh: stepped while the agent was down, perhaps
        // back. And this run's machine may sleep.
        let quiet = self.quiet;
        let mut sleeps = None;
        if let Some(c) = self.clocks.as_mut() {
            c.logical = crate::clock::Logical::new();
            if c.rng.gen_bool(0.5) {
                let step = c.rng.gen_range(-300_000..300_000);
                let was = c.wall_skew;
                c.wall_skew = (c.wall_skew + step).clamp(-600_000, 600_000);
                c.forward_ms += c.wall_skew.saturating_sub(was).max(0) as u64;
            }
            if !quiet && c.rng.gen_bool(0.3) {
                sleeps = Some(c.rng.gen_range(0..60_000));
            }
        }
        if let Some(d) = sleeps {
            let e = self.epoch;
            self.schedule(d, Event::Suspend(e));
        }
        if let Some(skew) = self.clocks.as_ref().map(|c| c.wall_skew) {
            let t = self.agent_now();
            self.note(format!(
                "clock: the wall clock {skew:+} ms off, the agent's time {}",
                t.0
            ));
        }
        let records: Vec<Record> = self.ledger.values().cloned().collect();
        let with_url: Vec<String> = self.urls.keys().cloned().collect();
        // Messages not finished with, those any record given names, and those sent within the
        // pacing window (as the agent's start-up passes them).
        let named: BTreeSet<&str> = records
            .iter()
            .filter_map(|r| r.message.as_deref())
            .collect();
        // As the agent: the sends window, or a mapping's `max_messages` window if longer.
        let cap_window = self
            .mappings
            .iter()
            .filter_map(|(r, _)| r.mail.as_ref().map(|m| m.max_messages_window_ms))
            .max()
            .unwrap_or(0);
        let since = Time(
            self.agent_now()
                .0
                .saturating_sub(self.policy.send_window_ms.max(cap_window)),
        );
        let messages: Vec<MessageRecord> = self
            .msg_ledger
            .values()
            .filter(|m| {
                m.at_work()
                    || named.contains(m.id.as_str())
                    || m.last_send_at.max(m.sent_at).is_some_and(|t| t >= since)
                    || m.created_at >= since
            })
            .cloned()
            .collect();
        self.machine = Some(m);
        self.feed(Input::Start {
            records,
            with_url,
            messages,
        })?;
        for (rule, _) in self.mappings.clone() {
            if self.unmounted.contains(&rule.name) {
                self.feed(Input::FolderUnavailable {
                    mapping: rule.name.clone(),
                })?;
            }
        }
        self.rescan()?;
        // The agent prunes at start-up, once the start is taken in.
        self.prune()?;
        Ok(())
    }

    /// The state dir is lost: the mailing mapping's records, their upload URLs and every
    /// message record (the plain mappings' records stay: their loss is SPEC'd apart, by
    /// `if_exists`).
    /// A draft sent from Outlook whose copy is not in Sent Items yet (it is in the Outbox).
    /// The time the `$filter` index shows the mailbox as of (it lags by `filter_lag_ms`).
    fn indexed_at(&self) -> Time {
        Time(self.now.0.saturating_sub(self.filter_lag_ms))
    }

    /// A message not yet in the `$filter` index: a state dir lost now could not find it (a
    /// person takes longer to lose one than the index lags).
    fn unindexed(&self) -> bool {
        let now = self.now;
        self.filter_lag_ms > 0
            && self
                .mail
                .values()
                .any(|m| m.visible_at <= now && m.visible_at.plus_ms(self.filter_lag_ms) > now)
    }

    fn hand_send_moving(&self) -> bool {
        let now = self.now;
        self.mail
            .values()
            .any(|m| !m.is_draft && m.visible_at > now && self.hand_sent.contains(&m.of))
    }

    fn lose_ledger(&mut self) {
        let mailing: BTreeSet<String> = self
            .mappings
            .iter()
            .filter(|(r, _)| r.mail.is_some())
            .map(|(r, _)| r.name.clone())
            .collect();
        let ids: Vec<String> = self
            .ledger
            .values()
            .filter(|r| mailing.contains(&r.mapping))
            .map(|r| r.id.clone())
            .collect();
        for id in ids {
            if let Some(r) = self.ledger.remove(&id) {
                // Its upload session, if any, is no longer known (left to expire), even to a
                // ledger a restore brings back later (the backup does not know it either, or
                // the restore puts its URL back).
                if let Some(u) = self.urls.remove(&id) {
                    self.forgotten_sessions.insert(u);
                }
                self.keep_lost(r);
            }
        }
        let msgs = std::mem::take(&mut self.msg_ledger);
        for (_, m) in msgs {
            self.keep_lost_msg(m);
        }
        self.note("LEDGER LOST (the mailing mapping's records and every message)".into());
    }

    /// Now and then, as a write lands, a backup of the state dir is taken.
    fn maybe_back_up(&mut self) {
        if !self.restores.as_mut().is_some_and(|r| r.gen_bool(0.05)) {
            return;
        }
        let mailing = self.mailing_names();
        self.backup = Some(Backup {
            records: (self.ledger.iter())
                .filter(|(_, r)| mailing.contains(&r.mapping))
                .map(|(id, r)| (id.clone(), r.clone()))
                .collect(),
            urls: (self.urls.iter())
                .filter(|(id, _)| {
                    (self.ledger.get(*id)).is_some_and(|r| mailing.contains(&r.mapping))
                })
                .map(|(id, u)| (id.clone(), u.clone()))
                .collect(),
            messages: self.msg_ledger.clone(),
        });
    }

    fn mailing_names(&self) -> BTreeSet<String> {
        (self.mappings.iter())
            .filter(|(r, _)| r.mail.is_some())
            .map(|(r, _)| r.name.clone())
            .collect()
    }

    /// The state dir is restored from the last backup: the mailing mapping's records, their
    /// upload URLs and every message record are what they were then; what was written since
    /// is lost (kept for the oracle). The records of plain mappings stay (their loss is SPEC'd
    /// apart, by `if_exists`).
    fn restore_backup(&mut self) {
        let Some(b) = self.backup.clone() else {
            return;
        };
        let mailing = self.mailing_names();
        let ids: Vec<String> = (self.ledger.values())
            .filter(|r| mailing.contains(&r.mapping))
            .map(|r| r.id.clone())
            .collect();
        for id in ids {
            if let Some(r) = self.ledger.remove(&id) {
                if let Some(u) = self.urls.remove(&id) {
                    if b.urls.get(&id) != Some(&u) {
                        self.forgotten_sessions.insert(u);
                    }
                }
                self.keep_lost(r);
            }
        }
        for (id, r) in &b.records {
            if self.lost_ledger.get(id).is_some_and(|now| *now != *r) {
                self.restored.insert(id.clone());
            }
        }
        self.ledger.extend(b.records);
        // A session the restored ledger knows is not forgotten (a loss before may have said so).
        for u in b.urls.values() {
            self.forgotten_sessions.remove(u);
        }
        self.urls.extend(b.urls);
        // A message the ledger lost before (`lose_ledger`) and the backup has as it was
        // earlier: the restore took back the later state, drafts it made included, just as
        // when it overwrites one.
        for (id, then) in &b.messages {
            if !self.msg_ledger.contains_key(id)
                && self.lost_msgs.get(id).is_some_and(|lost| lost != then)
            {
                self.restored.insert(id.clone());
            }
        }
        let now = std::mem::replace(&mut self.msg_ledger, b.messages);
        for (id, m) in now {
            match self.msg_ledger.get(&id) {
                None => self.keep_lost_msg(m),
                Some(then) if *then != m => {
                    self.restored.insert(id.clone());
                    self.overwritten_msgs.entry(id).or_default().push(m);
                }
                Some(_) => {}
            }
        }
        self.note("LEDGER RESTORED from a backup".into());
    }

    /// Record `r` is lost with the ledger (or taken back by a restore): the newest state of it
    /// ever written is kept (a restore brings back an older one, lost in turn by a later loss
    /// or restore: it must not hide that the entry was done, its after-action taken).
    fn keep_lost(&mut self, r: Record) {
        match self.lost_ledger.get(&r.id) {
            Some(kept) if kept.updated_at > r.updated_at => {}
            _ => {
                self.lost_ledger.insert(r.id.clone(), r);
            }
        }
    }

    /// The same for a message record.
    fn keep_lost_msg(&mut self, m: MessageRecord) {
        match self.lost_msgs.get(&m.id) {
            Some(kept) if kept.updated_at > m.updated_at => {}
            _ => {
                self.lost_msgs.insert(m.id.clone(), m);
            }
        }
    }

    /// The ledger holds a done record of `c` at `path` (its message, if any, sent and seen, or
    /// left as a draft): what an after-action on it needs.
    fn done_on_record(&self, path: &Path, c: Content) -> bool {
        self.ledger.values().any(|r| {
            r.path == path
                && r.state == State::Done
                && r.sha256.as_deref() == Some(&sha(c))
                && r.message.as_ref().is_none_or(|m| {
                    self.msg_ledger.get(m).is_some_and(|m| {
                        (m.state == MessageState::Sent && !m.unseen)
                            || m.state == MessageState::Drafted
                    })
                })
        })
    }

    /// A record of this ledger's, or of one lost.
    fn any_record(&self, id: &str) -> Option<&Record> {
        self.ledger
            .get(id)
            .or_else(|| self.lost_ledger.get(id))
            .or_else(|| self.pruned.get(id))
    }

    /// The agent's periodic prune, every 5 to 30 s until the world goes quiet; half the time
    /// with a folder unmounted just before (back 1 to 30 s later): its files are out of sight,
    /// not gone.
    fn prune_across_an_unmount(&mut self) -> Result<(), Violation> {
        if self.quiet {
            return Ok(());
        }
        let next = self.prune_rng.gen_range(5_000..30_000);
        self.schedule(next, Event::Prune);
        let mounted: Vec<String> = self
            .mappings
            .iter()
            .map(|(r, _)| r.name.clone())
            .filter(|m| !self.unmounted.contains(m))
            .collect();
        if !mounted.is_empty() && self.prune_rng.gen_bool(0.5) {
            let m = mounted[self.prune_rng.gen_range(0..mounted.len())].clone();
            self.unmounted.insert(m.clone());
            self.note(format!("user: unmount {m} (across a prune)"));
            if let Some(root) = self.mappings.iter().find(|(r, _)| r.name == m) {
                let root = root.1.clone();
                self.writer_disturbed(|w| w.path.starts_with(&root));
            }
            let e = self.epoch;
            self.schedule(
                1,
                Event::Deliver(e, Input::FolderUnavailable { mapping: m.clone() }),
            );
            let back = self.prune_rng.gen_range(1_000..30_000);
            self.schedule(back, Event::Mount(m));
        }
        self.prune()
    }

    /// The agent's prune (`agent::Agent::prune`), with the core's choice (`prune::choose`):
    /// finished entries not updated for `keep` whose files are gone leave the ledger, never
    /// those of a folder that is not there (`Sim::unmounted`: the agent's look at the folder);
    /// then the messages over none of whose entries is left. Sled's deletes and flush: at once
    /// and durable, outside any batch.
    fn prune(&mut self) -> Result<(), Violation> {
        if !self.prunes || self.machine.is_none() || !self.unflushed.is_empty() {
            return Ok(());
        }
        let mails: Vec<u64> = self
            .mappings
            .iter()
            .filter_map(|(r, _)| r.mail.as_ref().map(|m| m.remember_sent_ms))
            .collect();
        let keep = prune::keep_ms(
            self.keep_done_ms,
            mails.iter().copied().max().unwrap_or(0),
            !mails.is_empty(),
            self.policy.look_after_ms,
        );
        // (By the agent's clock: its rule.)
        let agent_now = self.agent_now();
        let folders: Vec<prune::Folder<'_>> = self
            .mappings
            .iter()
            .map(|(r, root)| prune::Folder {
                path: root,
                there: !self.unmounted.contains(&r.name),
            })
            .collect();
        let ids = prune::choose(
            self.ledger.values().map(|r| prune::Entry {
                id: &r.id,
                path: &r.path,
                state: r.state,
                updated_at: r.updated_at,
                message: r
                    .message
                    .as_ref()
                    .and_then(|m| self.msg_ledger.get(m))
                    .map(|m| m.state),
                work_left: has_work(r),
            }),
            &folders,
            keep,
            agent_now,
            |p| self.stat_of(p).is_some(),
        );
        let messages: Vec<String> = self
            .msg_ledger
            .values()
            .filter(|m| {
                prune::message_may_go(
                    m.state,
                    m.updated_at,
                    keep,
                    agent_now,
                    m.files.iter().map(String::as_str),
                    |f| self.ledger.contains_key(f) && !ids.iter().any(|i| i == f),
                )
            })
            .map(|m| m.id.clone())
            .collect();
        if ids.is_empty() && messages.is_empty() {
            return Ok(());
        }
        self.note(format!(
            "prune: entries {ids:?}, messages {messages:?} (keep {keep} ms)"
        ));
        for id in &ids {
            if let Some(r) = self.ledger.remove(id) {
                self.pruned.insert(id.clone(), r);
            }
        }
        for id in messages {
            if let Some(m) = self.msg_ledger.remove(&id) {
                self.pruned_msgs.insert(id, m);
            }
        }
        // The agent tells its core what went (`agent::Agent::prune`).
        if ids.is_empty() {
            return Ok(());
        }
        self.feed(Input::Pruned { ids })
    }

    /// Give the agent `input`: the executor's order of work (`exec::drain`, the agent's own
    /// code) carries it out over this world's ledger and hands. A crash stops it quietly.
    fn feed(&mut self, input: Input) -> Result<(), Violation> {
        if self.machine.is_none() {
            return Ok(());
        }
        self.queue.push_back(input);
        self.drain_queue()
    }

    /// Every input queued, to the machine (`exec::drain`).
    fn drain_queue(&mut self) -> Result<(), Violation> {
        match exec::drain(self) {
            Ok(()) | Err(Stop::Crashed) => Ok(()),
            Err(Stop::Violation(v)) => Err(v),
        }
    }

    /// Put back what the unflushed writes overwrote, last first (a crash before their flush).
    fn roll_back(&mut self) {
        while let Some(u) = self.unflushed.pop() {
            match u {
                Undo::Record(id, Some(r)) => {
                    self.ledger.insert(id, r);
                }
                Undo::Record(id, None) => {
                    self.ledger.remove(&id);
                }
                Undo::Message(id, Some(m)) => {
                    self.msg_ledger.insert(id, m);
                }
                Undo::Message(id, None) => {
                    self.msg_ledger.remove(&id);
                }
            }
        }
        // A partial attachment of an early 201 whose answer the client took in a batch the
        // crash cut before its flush: the client's ledger never knew it (no other answer names
        // its bytes, so no look finds it). Graph broke its protocol and the crash hid it: the
        // world's limit, as when the answer never arrived.
        let known: BTreeSet<&str> = self
            .ledger
            .values()
            .flat_map(|r| {
                r.attachment_id
                    .as_deref()
                    .into_iter()
                    .chain(r.garbage.iter().map(String::as_str))
            })
            .collect();
        let forgotten: Vec<String> = self
            .evil_made
            .iter()
            .filter(|a| !known.contains(a.as_str()))
            .cloned()
            .collect();
        self.evil_orphans.extend(forgotten);
    }

    /// The waits an input obliges the agent to: Retry-After to the millisecond, and at least
    /// half the first backoff after a failure (SPEC: no retry storms).
    fn note_waits(&mut self, input: &Input) {
        let now = self.now;
        match input {
            Input::Outcome { id, outcome } => {
                let fault = outcome.fault();
                match fault {
                    Some(Fault::Throttled {
                        retry_after_ms: Some(ms),
                    }) => {
                        self.not_before
                            .insert(id.clone(), (now.plus_ms(*ms), "its Retry-After"));
                    }
                    // An answer lost after a request that creates something (an attachment, a
                    // draft, a send): nothing of it is looked for until `look_after` has passed
                    // since that answer ended, or a late effect is missed.
                    Some(Fault::Ambiguous(_))
                        if matches!(
                            outcome,
                            Outcome::Post(_) | Outcome::CreateDraft(_) | Outcome::Send(_)
                        ) =>
                    {
                        let t = now.plus_ms(self.policy.look_after_ms);
                        self.not_before
                            .insert(id.clone(), (t, "the look_after after a lost answer"));
                    }
                    Some(Fault::Ambiguous(_) | Fault::Unreachable(_)) => {
                        self.not_before
                            .insert(id.clone(), (now.plus_ms(500), "a backoff after a failure"));
                    }
                    _ => {}
                }
            }
            Input::Retry { records } => {
                for r in records {
                    self.not_before.remove(&r.id);
                }
            }
            Input::RetryMessage { message, records } => {
                self.not_before.remove(&message.id);
                for r in records {
                    self.not_before.remove(&r.id);
                }
            }
            _ => {}
        }
    }

    /// A request (or a stat, a hash, a move: everything the world answers later) goes out.
    fn dispatch(&mut self, action: Action) -> Result<(), Violation> {
        if let Action::Hash { path, stat, .. } = &action {
            self.check_writer_finished(path, stat)?;
        }
        let id = action_id(&action);
        if let Some((t, why)) = self.not_before.get(&id) {
            if *t > self.now && !id.is_empty() {
                return Err(self.violation(format!(
                    "{id} sent {} {} ms before {why} was over",
                    brief(&action),
                    t.since(self.now)
                )));
            }
        }
        let fate = self.fate(&action);
        let read = self.read_to_send(&action);
        self.next_req += 1;
        let req = self.next_req;
        let d = self.latency(&action);
        self.pending.insert(
            req,
            Pending {
                epoch: self.epoch,
                action,
                fate,
                read,
            },
        );
        self.schedule(d, Event::Complete(req));
        Ok(())
    }

    fn fate(&mut self, a: &Action) -> Fate {
        let remote = matches!(
            a,
            Action::Post { .. }
                | Action::CreateSession { .. }
                | Action::PutChunk { .. }
                | Action::AskSession { .. }
                | Action::DeleteSession { .. }
                | Action::Look { .. }
                | Action::DeleteAttachment { .. }
                | Action::CreateDraft { .. }
                | Action::FindMessage { .. }
                | Action::FindFileKey { .. }
                | Action::StampKeys { .. }
                | Action::FindRivals { .. }
                | Action::DeleteDraft { .. }
                | Action::SetLetter { .. }
                | Action::ListDraft { .. }
                | Action::SendDraft { .. }
        );
        if !remote || self.quiet {
            return Fate::Normal;
        }
        let k = &self.knobs;
        let r: f64 = self.rng.gen();
        let mut acc = k.lost_reply_prob;
        if r < acc {
            return Fate::LostReply;
        }
        acc += k.throttle_prob;
        if r < acc {
            return Fate::Throttled;
        }
        acc += k.ambiguous_prob;
        if r < acc {
            return Fate::Ambiguous;
        }
        acc += k.unreachable_prob;
        if r < acc {
            return Fate::Unreachable;
        }
        if matches!(a, Action::SendDraft { .. })
            && self.harsh.send_effect_then_throttled > 0.0
            && self
                .harsh_rng
                .gen_bool(self.harsh.send_effect_then_throttled)
        {
            return Fate::EffectThenThrottled;
        }
        Fate::Normal
    }

    /// A throttle's answer: `Retry-After` as unkind as the seed's world (or 2 s), and for a
    /// send sometimes Exchange's sending limit instead of a 429.
    fn throttle(&mut self, a: &Action) -> Fault {
        let h = self.harsh.clone();
        if matches!(a, Action::SendDraft { .. })
            && h.send_limit > 0.0
            && self.harsh_rng.gen_bool(h.send_limit)
        {
            return Fault::Permanent(Failure::new(
                "ErrorExceededMessageLimit",
                "Cannot send mail: the sending limit was exceeded",
            ));
        }
        if h.no_retry_after > 0.0 && self.harsh_rng.gen_bool(h.no_retry_after) {
            return Fault::Throttled {
                retry_after_ms: None,
            };
        }
        let ms = if h.retry_after_max_ms == 0 {
            2_000
        } else {
            self.harsh_rng.gen_range(0..=h.retry_after_max_ms)
        };
        Fault::Throttled {
            retry_after_ms: Some(ms),
        }
    }

    fn latency(&mut self, a: &Action) -> u64 {
        match a {
            Action::Stat { .. } => self.rng.gen_range(0..5),
            Action::Hash { stat, .. } => stat.size / (200 << 10) + self.rng.gen_range(1..20),
            Action::PutChunk { len, .. } => len / (1 << 17) + self.rng.gen_range(10..300),
            // A move on a slow disk or a network share: sometimes longer than any grace.
            Action::ToFailedDir { .. } | Action::FromFailedDir { .. } => {
                if self.harsh_rng.gen_bool(0.1) {
                    self.harsh_rng.gen_range(5_000..200_000)
                } else {
                    self.harsh_rng.gen_range(0..50)
                }
            }
            _ => self.rng.gen_range(5..400),
        }
    }

    fn complete(&mut self, req: u64) -> Result<(), Violation> {
        let Some(p) = self.pending.remove(&req) else {
            return Ok(());
        };
        let live = p.epoch == self.epoch && self.machine.is_some();
        // A request from before a crash still reaches the server (or not).
        if !live {
            if self.rng.gen_bool(0.5) {
                let _ = self.serve(&p.action, Fate::Normal, false, p.read);
            }
            return Ok(());
        }
        if let (
            Action::PutChunk {
                path, offset, len, ..
            },
            Fate::LostReply | Fate::Throttled | Fate::Ambiguous | Fate::Unreachable,
        ) = (&p.action, p.fate)
        {
            // The piece will be read again: the world may edit it in between.
            if self.edits && self.edit_rng.gen_bool(0.3) {
                self.edit_in_place(path, *offset, *len);
            }
        }
        let input = self.serve(&p.action, p.fate, true, p.read);
        if let Some(input) = input {
            self.queue.push_back(input);
        }
        Ok(())
    }

    fn stat_of(&self, path: &Path) -> Option<FileStat> {
        let m = self.mapping_of(path)?;
        if self.unmounted.contains(&m) {
            return None;
        }
        let ino = *self.paths.get(path)?;
        let n = self.inodes.get(&ino)?;
        Some(FileStat {
            dev: 1,
            ino,
            size: n.content.size,
            mtime_ns: n.mtime,
            ctime_ns: n.ctime,
            owner: None,
        })
    }

    /// A rename moves an inode's ctime: its new value.
    fn bump_ctime(&mut self, ino: u64) -> i64 {
        let now_ns = self.now.0 as i64 * 1_000_000;
        match self.inodes.get_mut(&ino) {
            Some(n) => {
                n.ctime = n.ctime.max(now_ns - 1) + 1;
                n.ctime
            }
            None => now_ns,
        }
    }

    fn content_of(&self, ino: u64) -> Option<Content> {
        self.inodes.get(&ino).map(|n| n.content)
    }

    /// What the executor reads before a request goes (the agent's `Upload`, through the
    /// core's reader, `read::Reader`): a POST's whole body, checked against the record; a
    /// chunk's piece, through the upload's one descriptor (opened at its first piece, kept
    /// until the upload is over or a read fails), every byte hashed, a piece read again checked
    /// against what was hashed, the last checked whole. `Err`: the answer, nothing sent.
    fn read_to_send(&mut self, a: &Action) -> Option<Result<Vec<Run>, Outcome>> {
        // The descriptor the executor opens: this version's inode, or none.
        let open = |sim: &Sim, path: &Path, file: &FileStat| {
            sim.stat_of(path)
                .filter(|s| s.ino == file.ino && s.size == file.size)
                .map(|s| SimFile {
                    ino: s.ino,
                    now: None,
                })
        };
        match a {
            Action::Post {
                path, file, sha256, ..
            } => {
                let Some(mut f) = open(self, path, file) else {
                    return Some(Err(Outcome::Post(PostOutcome::FileGone)));
                };
                f.now = self.content_of(f.ino);
                // Two empty versions hold the same (no) bytes, which the simulation's hashes
                // tell apart (stricter than life): an empty one is checked by its hash.
                if file.size == 0 && f.now.map(sha).as_deref() != Some(sha256.as_str()) {
                    return Some(Err(Outcome::Post(PostOutcome::Changed)));
                }
                let mut reader = UploadReader::new(f, file.size);
                Some(
                    reader
                        .read_all(sha256)
                        .map_err(|_| Outcome::Post(PostOutcome::Changed)),
                )
            }
            Action::PutChunk {
                id,
                path,
                file,
                sha256,
                offset,
                len,
                ..
            } => {
                // No URL: answered without reading.
                if !self.urls.contains_key(id) {
                    return None;
                }
                let mut reader = match self.readers.remove(id) {
                    Some(r) => r,
                    None => match open(self, path, file) {
                        Some(f) => UploadReader::new(f, file.size),
                        None => return Some(Err(Outcome::Chunk(ChunkOutcome::FileGone))),
                    },
                };
                let ino = reader.source_mut().ino;
                reader.source_mut().now = self.content_of(ino);
                match reader.read(*offset, *len, sha256) {
                    Ok(piece) => {
                        self.readers.insert(id.clone(), reader);
                        Some(Ok(piece))
                    }
                    // Shorter than the version, or not the bytes hashed: the reader goes.
                    Err(_) => Some(Err(Outcome::Chunk(ChunkOutcome::Changed))),
                }
            }
            _ => None,
        }
    }

    /// The world edits a file in place between two reads of one piece (an editor saving over
    /// it, a sync client patching a range): a range of bytes new, the rest as they were, the
    /// same inode and size; mostly inside the piece the agent is sending and will read again.
    fn edit_in_place(&mut self, path: &Path, offset: u64, len: u64) {
        let Some(m) = self.mapping_of(path) else {
            return;
        };
        let Some(c) = self.paths.get(path).and_then(|i| self.content_of(*i)) else {
            return;
        };
        if c.size == 0 || self.unmounted.contains(&m) {
            return;
        }
        let (lo, hi) = if offset < c.size && self.edit_rng.gen_bool(0.7) {
            (offset, (offset + len).min(c.size))
        } else {
            (0, c.size)
        };
        let at = self.edit_rng.gen_range(lo..hi);
        let n = self.edit_rng.gen_range(1..=(hi - at).min(4096));
        self.next_ver += 1;
        let content = match c.edit {
            None if n < c.size => Content {
                ver: self.next_ver | EDITED,
                size: c.size,
                edit: Some(Edit {
                    base: c.ver,
                    at,
                    len: n,
                }),
            },
            _ => Content::new(self.next_ver, c.size),
        };
        self.writer_disturbed(|w| w.path == path);
        let now_ns = self.now.0 as i64 * 1_000_000;
        if let Some(node) = self.paths.get(path).and_then(|i| self.inodes.get_mut(i)) {
            node.content = content;
            node.mtime = now_ns;
            node.ctime = now_ns;
        }
        self.note(format!(
            "user: edit in place {} bytes {at}..{} {content:?}",
            path.display(),
            at + n
        ));
        self.placed(path);
        self.watch(path, true);
    }

    /// Carry out one action against the world; `Some(input)` is the answer the agent gets.
    fn serve(
        &mut self,
        a: &Action,
        fate: Fate,
        live: bool,
        read: Option<Result<Vec<Run>, Outcome>>,
    ) -> Option<Input> {
        // The executor's read found the file changed or gone: nothing was sent.
        let read = match read {
            Some(Err(o)) => {
                return live.then(|| Input::Outcome {
                    id: action_id(a),
                    outcome: o,
                })
            }
            Some(Ok(runs)) => Some(runs),
            None => None,
        };
        let fault = |f: Fate| -> Option<Fault> {
            match f {
                Fate::Throttled | Fate::EffectThenThrottled => Some(Fault::Throttled {
                    retry_after_ms: Some(2_000),
                }),
                Fate::Ambiguous | Fate::LostReply => {
                    Some(Fault::Ambiguous(Failure::new("ServiceUnavailable", "503")))
                }
                Fate::Unreachable => Some(Fault::Unreachable(Failure::new(
                    "ConnectionFailed",
                    "refused",
                ))),
                Fate::Normal => None,
            }
        };
        let signed_out = self.now < self.sign_in_until && !self.quiet;
        match a {
            Action::Stat { path } => Some(Input::Stat {
                path: path.clone(),
                stat: self.stat_of(path),
            }),
            Action::Hash { path, stat, .. } => {
                let result = match self.stat_of(path) {
                    None => HashResult::Gone,
                    Some(now) if now != *stat => HashResult::Changed,
                    Some(now) => HashResult::Hashed {
                        sha256: sha(self.content_of(now.ino).expect("inode")),
                        stat: now,
                    },
                };
                Some(Input::Hashed {
                    path: path.clone(),
                    result,
                })
            }
            Action::After {
                id,
                path,
                file,
                sha256,
                after,
                ..
            } => {
                let r = match self.stat_of(path) {
                    Some(s) if s == *file => {
                        let c = self.content_of(s.ino).expect("inode");
                        if sha(c) != *sha256 {
                            AfterOutcome::NotTheSameFile
                        } else {
                            if *after != After::Keep {
                                let marker = self.ledger.get(id).and_then(|r| r.message.clone());
                                let now = self.now;
                                let seen = marker.as_ref().is_none_or(|k| {
                                    self.msg_ledger
                                        .get(k)
                                        .is_some_and(|m| m.state == MessageState::Drafted)
                                        || self.mail.values().any(|m| {
                                            !m.is_draft && m.of == *k && m.visible_at <= now
                                        })
                                });
                                if !seen {
                                    self.after_unseen.push(path.display().to_string());
                                }
                                self.paths.remove(path);
                                if !self.done_on_record(path, c) {
                                    self.removed_undone.push((path.clone(), c));
                                }
                                self.note(format!("after: {after:?} {} ({id})", path.display()));
                                self.watch(path, false);
                            }
                            AfterOutcome::Done
                        }
                    }
                    _ => AfterOutcome::NotTheSameFile,
                };
                Some(Input::Outcome {
                    id: id.clone(),
                    outcome: Outcome::After(r),
                })
            }
            Action::ToFailedDir { id, path, file, .. } => {
                // Asked again at start when its first answer was lost: the executor finds it
                // in `failed_dir` if it went (`files::find_moved`: same inode, size and time).
                let went = self
                    .aside
                    .iter()
                    .find(|(_, (ino, _))| *ino == file.ino)
                    .map(|(to, (ino, _))| (to.clone(), *ino));
                let r = match self.stat_of(path) {
                    // The disk is full, a permission is missing: it stays where it is.
                    Some(_) if self.harsh_rng.gen_bool(0.1) => MoveOutcome::Refused(Failure::new(
                        "failedDirMove",
                        "No space left on device",
                    )),
                    Some(s) if s.ino == file.ino && s.size == file.size => {
                        let to = PathBuf::from(format!(
                            "/failed/{}-{}",
                            self.aside.len(),
                            path.file_name()
                                .map(|n| n.to_string_lossy())
                                .unwrap_or_default()
                        ));
                        self.paths.remove(path);
                        self.aside.insert(to.clone(), (s.ino, id.clone()));
                        let ctime = self.bump_ctime(s.ino);
                        self.note(format!(
                            "failed_dir: {} -> {} ({id})",
                            path.display(),
                            to.display()
                        ));
                        self.watch(path, false);
                        MoveOutcome::Moved {
                            to,
                            file: FileStat {
                                ctime_ns: ctime,
                                ..s
                            },
                        }
                    }
                    _ => match went.and_then(|(to, ino)| {
                        let n = self.inodes.get(&ino)?;
                        (n.content.size == file.size && n.mtime == file.mtime_ns).then_some(
                            MoveOutcome::Moved {
                                to,
                                file: FileStat {
                                    ino,
                                    size: n.content.size,
                                    mtime_ns: n.mtime,
                                    ctime_ns: n.ctime,
                                    ..*file
                                },
                            },
                        )
                    }) {
                        Some(found) => found,
                        None => MoveOutcome::Refused(Failure::new(
                            "failedDirMove",
                            "no longer the file that failed",
                        )),
                    },
                };
                Some(Input::Outcome {
                    id: id.clone(),
                    outcome: Outcome::ToFailedDir(r),
                })
            }
            Action::FromFailedDir {
                id,
                from,
                path,
                file,
                ..
            } => {
                let there = self.aside.get(from).map(|(ino, _)| *ino);
                let mounted = self
                    .mapping_of(path)
                    .is_some_and(|m| !self.unmounted.contains(&m));
                let r = match there {
                    Some(ino) if ino == file.ino && mounted && !self.paths.contains_key(path) => {
                        if self.harsh_rng.gen_bool(0.1) {
                            MoveOutcome::Refused(Failure::new("failedDirMove", "Permission denied"))
                        } else {
                            self.aside.remove(from);
                            self.paths.insert(path.clone(), ino);
                            let ctime = self.bump_ctime(ino);
                            self.note(format!("failed_dir: {} back ({id})", path.display()));
                            self.watch(path, false);
                            let s = self.stat_of(path).unwrap_or(FileStat {
                                ctime_ns: ctime,
                                ..*file
                            });
                            MoveOutcome::Moved {
                                to: path.clone(),
                                file: s,
                            }
                        }
                    }
                    // Back at its path already (a move back whose answer a crash lost, or
                    // the user's hand): that is where it is, as the executor answers.
                    _ if self.stat_of(path).is_some_and(|s| s.ino == file.ino) => {
                        MoveOutcome::Moved {
                            to: path.clone(),
                            file: self.stat_of(path).unwrap_or(*file),
                        }
                    }
                    _ => MoveOutcome::Refused(Failure::new(
                        "failedDirGone",
                        "not there any more, or another file is at its path",
                    )),
                };
                Some(Input::Outcome {
                    id: id.clone(),
                    outcome: Outcome::FromFailedDir(r),
                })
            }
            _ if signed_out
                && live
                && !matches!(
                    a,
                    Action::PutChunk { .. }
                        | Action::AskSession { .. }
                        | Action::DeleteSession { .. }
                ) =>
            {
                let id = action_id(a);
                Some(Input::Outcome {
                    id,
                    outcome: wrap_fault(
                        a,
                        Fault::SignIn(Failure::new("InvalidAuthenticationToken", "sign in")),
                    ),
                })
            }
            _ => {
                let id = action_id(a);
                // Faults before any effect.
                if matches!(fate, Fate::Throttled | Fate::Ambiguous | Fate::Unreachable) {
                    let f = if fate == Fate::Throttled {
                        self.throttle(a)
                    } else {
                        fault(fate).expect("a fault")
                    };
                    return Some(Input::Outcome {
                        id,
                        outcome: wrap_fault(a, f),
                    });
                }
                // The client keeps what a reply carries (an upload URL) only if it arrives.
                let outcome = self.graph(a, live && fate == Fate::Normal, read);
                if let (
                    Some(Outcome::Chunk(ChunkOutcome::Completed {
                        attachment_id: Some(att),
                    })),
                    true,
                ) = (&outcome, live && fate == Fate::Normal)
                {
                    self.evil_orphans.remove(att);
                }
                if fate == Fate::EffectThenThrottled {
                    let f = self.throttle(a);
                    self.note(format!("graph: the send took effect, answered {f:?}"));
                    return Some(Input::Outcome {
                        id,
                        outcome: wrap_fault(a, f),
                    });
                }
                if fate == Fate::LostReply {
                    let f = fault(fate).expect("a fault");
                    // Session URLs never reach the client when the reply is lost.
                    return Some(Input::Outcome {
                        id,
                        outcome: wrap_fault(a, f),
                    });
                }
                outcome.map(|o| Input::Outcome { id, outcome: o })
            }
        }
    }

    /// The Graph model: what each request does to the mailbox.
    /// A draft deleted, or sent from Outlook (gone from Drafts): requests about it answer 404.
    fn draft_gone(&self, item: &str) -> bool {
        self.deleted_drafts.contains(item) || self.hand_sent.contains(item)
    }

    fn graph(&mut self, a: &Action, live: bool, read: Option<Vec<Run>>) -> Option<Outcome> {
        let gone = |item: &str| {
            Fault::Permanent(Failure::new(
                "ErrorItemNotFound",
                format!("The specified object was not found in the store ({item})."),
            ))
        };
        match a {
            Action::Post { target, .. } if self.draft_gone(&target.item_id) => {
                return Some(Outcome::Post(PostOutcome::Failed(gone(&target.item_id))));
            }
            Action::CreateSession { target, .. } if self.draft_gone(&target.item_id) => {
                return Some(Outcome::CreateSession(SessionOutcome::Failed(gone(
                    &target.item_id,
                ))));
            }
            Action::Look { target, .. } if self.draft_gone(&target.item_id) => {
                return Some(Outcome::Look(LookOutcome::Failed(gone(&target.item_id))));
            }
            Action::ListDraft { draft_id, .. } if self.draft_gone(draft_id) => {
                return Some(Outcome::ListDraft(ListOutcome::Failed(gone(draft_id))));
            }
            _ => {}
        }
        match a {
            Action::Post {
                id,
                target,
                file,
                sha256,
                name,
                ..
            } => {
                // The body the executor read and checked before sending (`read_to_send`); an
                // empty one is every empty version's bytes.
                let runs = read.unwrap_or_default();
                let content = Content::from_runs(&runs, file.size)
                    .or_else(|| runs.is_empty().then(|| Content::from_sha(sha256)).flatten());
                let att = self.add_attachment(&target.item_id, name, content, id);
                Some(Outcome::Post(PostOutcome::Created { attachment_id: att }))
            }
            Action::CreateSession {
                id,
                target,
                name,
                size,
            } => {
                self.next_sess += 1;
                let sid = format!("s{}", self.next_sess);
                self.sessions.insert(
                    sid.clone(),
                    SimSession {
                        item: target.item_id.clone(),
                        name: name.clone(),
                        size: *size,
                        entry: id.clone(),
                        segments: Vec::new(),
                        next: 0,
                        expires: self.now.plus_ms(self.knobs.session_lifetime_ms),
                        delivered: false,
                    },
                );
                if live {
                    // The executor saves the URL before it answers.
                    if let Some(s) = self.sessions.get_mut(&sid) {
                        s.delivered = true;
                    }
                    self.urls.insert(id.clone(), sid);
                }
                Some(Outcome::CreateSession(SessionOutcome::Created { next: 0 }))
            }
            Action::PutChunk {
                id,
                offset,
                len,
                last,
                ..
            } => {
                let sid = self.urls.get(id).cloned()?;
                // The piece the executor read (and hashed) before sending (`read_to_send`).
                let Some(piece) = read else {
                    return Some(Outcome::Chunk(ChunkOutcome::FileGone));
                };
                let Some(s) = self.sessions.get_mut(&sid) else {
                    return Some(Outcome::Chunk(ChunkOutcome::SessionGone));
                };
                if s.expires <= self.now
                    || (!self.quiet && self.rng.gen_bool(self.knobs.session_death_prob))
                {
                    self.sessions.remove(&sid);
                    return Some(Outcome::Chunk(ChunkOutcome::SessionGone));
                }
                if *offset != s.next {
                    return Some(Outcome::Chunk(ChunkOutcome::RangeRefused));
                }
                if !self.quiet
                    && self.knobs.evil_prob > 0.0
                    && self.rng.gen_bool(self.knobs.evil_prob)
                {
                    self.evil = true;
                    match self.rng.gen_range(0..3) {
                        0 => {
                            let n = s.size.min(offset + len + 4096);
                            return Some(Outcome::Chunk(ChunkOutcome::Accepted { next: Some(n) }));
                        }
                        1 => {
                            return Some(Outcome::Chunk(ChunkOutcome::Accepted {
                                next: Some(*offset),
                            }))
                        }
                        _ if !*last => {
                            // 201 before the last byte: a partial attachment.
                            let s = self.sessions.remove(&sid).expect("session");
                            let att = self.add_attachment(&s.item, &s.name, None, &s.entry);
                            self.evil_orphans.insert(att.clone());
                            self.evil_made.insert(att.clone());
                            return Some(Outcome::Chunk(ChunkOutcome::Completed {
                                attachment_id: Some(att),
                            }));
                        }
                        _ => {}
                    }
                }
                let Some(s) = self.sessions.get_mut(&sid) else {
                    return Some(Outcome::Chunk(ChunkOutcome::SessionGone));
                };
                for r in &piece {
                    push_run(&mut s.segments, *r);
                }
                s.next = offset + read::Piece::byte_len(piece.as_slice());
                if s.next >= s.size {
                    let s = self.sessions.remove(&sid).expect("session");
                    // `None`: bytes of no one version (a mix).
                    let content = Content::from_runs(&s.segments, s.size);
                    let att = self.add_attachment(&s.item, &s.name, content, &s.entry);
                    return Some(Outcome::Chunk(ChunkOutcome::Completed {
                        attachment_id: Some(att),
                    }));
                }
                let next = s.next;
                Some(Outcome::Chunk(ChunkOutcome::Accepted { next: Some(next) }))
            }
            Action::AskSession { id, .. } => {
                let Some(sid) = self.urls.get(id).cloned() else {
                    return Some(Outcome::Ask(AskOutcome::Gone));
                };
                match self.sessions.get(&sid) {
                    Some(s) if s.expires > self.now => {
                        Some(Outcome::Ask(AskOutcome::Next(Some(s.next))))
                    }
                    _ => {
                        self.sessions.remove(&sid);
                        if live {
                            self.urls.remove(id);
                        }
                        Some(Outcome::Ask(AskOutcome::Gone))
                    }
                }
            }
            Action::DeleteSession { id, .. } => {
                if let Some(sid) = self.urls.get(id).cloned() {
                    self.sessions.remove(&sid);
                }
                if live {
                    self.urls.remove(id);
                }
                Some(Outcome::DeleteSession(DeleteOutcome::Deleted))
            }
            Action::Look {
                target,
                name,
                sha256,
                exclude,
                ..
            } if self.mail.get(&target.item_id).is_some_and(|m| !m.is_draft) => {
                // A sent copy, read by its id (Exchange gave it ids of its own): an attachment
                // of the name and bytes asked, as its send carried them.
                let m = &self.mail[&target.item_id];
                if m.visible_at > self.now {
                    return Some(Outcome::Look(LookOutcome::Failed(gone(&target.item_id))));
                }
                let carried = self
                    .sends
                    .iter()
                    .rev()
                    .find(|(tag, _, _)| *tag == m.of)
                    .map(|(_, _, atts)| atts.clone())
                    .unwrap_or_default();
                let found = m
                    .atts
                    .iter()
                    .find(|(n, aid)| {
                        n == name
                            && !exclude.contains(aid)
                            && carried.iter().any(|(cn, c)| {
                                cn == name && c.map(sha).as_deref() == Some(sha256.as_str())
                            })
                    })
                    .map(|(_, aid)| aid.clone());
                Some(Outcome::Look(match found {
                    Some(attachment_id) => LookOutcome::Found { attachment_id },
                    None => LookOutcome::NotFound,
                }))
            }
            Action::Look {
                target,
                name,
                sha256,
                exclude,
                ..
            } => {
                let lag = self.knobs.listing_lag_ms;
                let now = self.now;
                let found = self
                    .items
                    .get(&target.item_id)
                    .and_then(|atts| {
                        atts.iter().find(|x| {
                            x.created.plus_ms(lag) <= now
                                && !exclude.contains(&x.id)
                                && x.name == *name
                                && x.content.map(sha).as_deref() == Some(sha256.as_str())
                        })
                    })
                    .map(|x| x.id.clone());
                if let (Some(f), Action::Look { id, .. }) = (&found, a) {
                    // Copies this entry made besides the one the look returns stay unknown.
                    let mine: Vec<String> = self
                        .items
                        .get(&target.item_id)
                        .map(|atts| {
                            atts.iter()
                                .filter(|x| x.by_entry == *id && x.id != *f)
                                .map(|x| x.id.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    self.adopted.extend(mine);
                }
                Some(Outcome::Look(match found {
                    Some(attachment_id) => LookOutcome::Found { attachment_id },
                    None => LookOutcome::NotFound,
                }))
            }
            Action::DeleteAttachment {
                target,
                attachment_id,
                ..
            } => {
                if let Some(atts) = self.items.get_mut(&target.item_id) {
                    atts.retain(|x| x.id != *attachment_id);
                }
                self.note(format!("graph: deleted attachment {attachment_id}"));
                Some(Outcome::DeleteAttachment(DeleteOutcome::Deleted))
            }
            Action::CreateDraft {
                id, keys, letter, ..
            } => {
                self.next_msg += 1;
                let did = format!("draft{}", self.next_msg);
                self.items.insert(did.clone(), Vec::new());
                self.mail.insert(
                    did.clone(),
                    SimMessage {
                        marker: Some(id.clone()),
                        of: id.clone(),
                        imid: format!("<{did}@sim>"),
                        is_draft: true,
                        gone_at: None,
                        visible_at: self.now,
                        keys: keys.clone(),
                        atts: Vec::new(),
                        body: letter.body.clone(),
                    },
                );
                self.note(format!("graph: draft {did} marked {id}"));
                Some(Outcome::CreateDraft(DraftOutcome::Created {
                    internet_message_id: Some(format!("<{did}@sim>")),
                    draft_id: did,
                }))
            }
            Action::FindMessage {
                id,
                folder,
                internet_message_id,
                ..
            } => {
                // (A search answers from the `$filter` index: the mailbox as it was a lag ago.)
                let now = self.indexed_at();
                let in_folder = |m: &SimMessage| {
                    m.visible_at <= now
                        && match folder {
                            MailFolder::Drafts => m.is_draft && m.gone_at.is_none_or(|g| g > now),
                            MailFolder::SentItems => !m.is_draft,
                            MailFolder::Anywhere => {
                                // (a sent copy, or a draft not yet gone)
                                !(m.is_draft && m.gone_at.is_some_and(|g| g <= now))
                            }
                        }
                };
                // By the marker; in Sent Items, else by `internetMessageId`.
                let by_marker = self
                    .mail
                    .iter()
                    .find(|(_, m)| m.marker.as_deref() == Some(id.as_str()) && in_folder(m));
                let by_imid = || {
                    self.mail.iter().find(|(_, m)| {
                        *folder == MailFolder::SentItems
                            && internet_message_id.as_deref() == Some(m.imid.as_str())
                            && in_folder(m)
                    })
                };
                let found = by_marker
                    .or_else(by_imid)
                    .map(|(gid, m)| FindOutcome::Found {
                        id: gid.clone(),
                        is_draft: m.is_draft,
                        internet_message_id: Some(m.imid.clone()),
                    })
                    .unwrap_or(FindOutcome::NotFound);
                Some(Outcome::Find(*folder, found))
            }
            Action::FindFileKey {
                key,
                name,
                sha256,
                since,
                ..
            } => {
                // Sent Items: the latest copy carrying the key with an attachment of the
                // name (as graph::mail's key_step); else the drafts carrying it.
                let found = self
                    .key_sent(key, name, sha256, *since)
                    .unwrap_or_else(|| KeyOutcome::Drafted(self.key_drafts(key)));
                Some(Outcome::Key(found))
            }
            Action::FindRivals {
                draft_id,
                files,
                since,
                ..
            } => {
                let now = self.now;
                let own = self
                    .mail
                    .get(draft_id)
                    .filter(|m| m.is_draft && m.gone_at.is_none_or(|g| g > now));
                let Some(own) = own else {
                    return Some(Outcome::Rivals(RivalsOutcome::Failed(gone(draft_id))));
                };
                let own_created = Some(own.visible_at);
                let found = files
                    .iter()
                    .map(|(key, name, sha256)| KeyHolders {
                        sent: self.key_sent(key, name, sha256, *since),
                        drafts: self.key_drafts(key),
                    })
                    .collect();
                Some(Outcome::Rivals(RivalsOutcome::Checked {
                    own_created,
                    found,
                }))
            }
            Action::DeleteDraft { draft_id, .. } if self.hand_sent.contains(draft_id) => {
                // Sent from Outlook: gone from Drafts, the id answers 404 (taken as deleted).
                Some(Outcome::DeleteDraft(DeleteOutcome::Deleted))
            }
            Action::DeleteDraft { draft_id, .. } => {
                if let Some(m) = self.mail.get(draft_id) {
                    if !m.is_draft || m.gone_at.is_some() {
                        // Never a draft that was sent.
                        self.deleted_sent.push(draft_id.clone());
                    }
                }
                if self.mail.remove(draft_id).is_some() {
                    self.items.remove(draft_id);
                    self.sessions.retain(|_, s| s.item != *draft_id);
                    self.note(format!("graph: draft {draft_id} deleted by the agent"));
                    self.deleted_drafts.insert(draft_id.clone());
                }
                Some(Outcome::DeleteDraft(DeleteOutcome::Deleted))
            }
            Action::StampKeys { draft_id, keys, .. } => match self.mail.get_mut(draft_id) {
                Some(m) if m.is_draft => {
                    m.keys = keys.clone();
                    Some(Outcome::StampKeys(Ok(())))
                }
                _ => Some(Outcome::StampKeys(Err(Fault::Permanent(Failure::new(
                    "ErrorItemNotFound",
                    "The specified object was not found in the store.",
                ))))),
            },
            Action::SetLetter {
                draft_id, letter, ..
            } => {
                let now = self.now;
                match self.mail.get_mut(draft_id) {
                    Some(m) if m.is_draft && m.gone_at.is_none_or(|g| g > now) => {
                        m.body = letter.body.clone();
                        Some(Outcome::SetLetter(Ok(())))
                    }
                    _ => Some(Outcome::SetLetter(Err(Fault::Permanent(Failure::new(
                        "ErrorItemNotFound",
                        "The specified object was not found in the store.",
                    ))))),
                }
            }
            Action::ListDraft { draft_id, .. } => {
                let ids = self.listed_ids(draft_id).unwrap_or_default();
                Some(Outcome::ListDraft(ListOutcome::Listed(ids)))
            }
            Action::SendDraft {
                id,
                draft_id,
                expect,
                ..
            } => {
                let now = self.now;
                // The executor lists the draft right before the send (as the core's listing,
                // lagging): not exactly what the core's listing showed, nothing is sent.
                if let Some(mut on) = self.listed_ids(draft_id) {
                    let mut want = expect.clone();
                    on.sort();
                    want.sort();
                    if on != want {
                        return Some(Outcome::Send(SendOutcome::Failed(Fault::Permanent(
                            Failure::new(crate::machine::DRAFT_CHANGED, "the draft changed"),
                        ))));
                    }
                }
                let ok = self
                    .mail
                    .get(draft_id)
                    .is_some_and(|m| m.is_draft && m.gone_at.is_none_or(|g| g > now));
                if !ok {
                    return Some(Outcome::Send(SendOutcome::Failed(Fault::Permanent(
                        Failure::new(
                            "ErrorItemNotFound",
                            "The specified object was not found in the store.",
                        ),
                    ))));
                }
                // The tenant's limit, on the draft as it is (its attachments encoded).
                let size = self.draft_size(draft_id);
                if self.tenant_limit.is_some_and(|limit| size > limit) {
                    self.note(format!(
                        "graph: send of {draft_id} refused for its size {size}"
                    ));
                    return Some(Outcome::Send(SendOutcome::Failed(Fault::Permanent(
                        Failure::new(
                            "ErrorMessageSizeExceeded",
                            "The message exceeds the maximum supported size.",
                        ),
                    ))));
                }
                self.world_send(id, draft_id, now.plus_ms(self.send_move_ms), false);
                Some(Outcome::Send(SendOutcome::Sent))
            }
            _ => None,
        }
    }

    /// The latest sent copy since `since` carrying `key` with an attachment named `name`.
    fn key_sent(&self, key: &str, name: &str, sha256: &str, since: Time) -> Option<KeyOutcome> {
        let now = self.indexed_at();
        let latest = self
            .mail
            .iter()
            .filter_map(|(gid, m)| {
                if m.is_draft || m.visible_at > now || m.visible_at < since {
                    return None;
                }
                if !m.keys.iter().any(|k| k == key) {
                    return None;
                }
                // (The attachment's bytes read back, as graph::mail's.)
                let (_, att) = (m.atts.iter())
                    .find(|(n, a)| n == name && self.sent_copy_holds(gid, a, Some(sha256)))?;
                Some((m.visible_at, gid, m, att))
            })
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        latest.map(|(_, gid, m, att)| KeyOutcome::Mailed {
            message_id: gid.clone(),
            internet_message_id: Some(m.imid.clone()),
            attachment_id: att.clone(),
            marker: m.marker.clone(),
            ours: m
                .marker
                .as_ref()
                .is_some_and(|mk| self.msg_ledger.contains_key(mk)),
        })
    }

    /// Every draft (still in Drafts) carrying `key`.
    fn key_drafts(&self, key: &str) -> Vec<DraftHolding> {
        let now = self.indexed_at();
        self.mail
            .iter()
            .filter(|(_, m)| {
                m.is_draft
                    && m.gone_at.is_none_or(|g| g > now)
                    && m.visible_at <= now
                    && m.keys.iter().any(|k| k == key)
            })
            .map(|(gid, m)| DraftHolding {
                message_id: gid.clone(),
                marker: m.marker.clone(),
                ours: m
                    .marker
                    .as_ref()
                    .is_some_and(|mk| self.msg_ledger.contains_key(mk)),
                subject: String::new(),
                created: Some(m.visible_at),
            })
            .collect()
    }

    fn add_attachment(
        &mut self,
        item: &str,
        name: &str,
        content: Option<Content>,
        by: &str,
    ) -> String {
        self.next_att += 1;
        let id = format!("att{}", self.next_att);
        if self.mail.get(item).is_some_and(|m| m.gone_at.is_some()) {
            self.late_attachments
                .push(format!("{id} ({name}) on {item} after it was sent"));
        }
        self.note(format!("graph: attachment {id} {name} {content:?} by {by}"));
        let now = self.now;
        self.items
            .entry(item.to_owned())
            .or_default()
            .push(SimAttachment {
                id: id.clone(),
                name: name.to_owned(),
                content,
                by_entry: by.to_owned(),
                created: now,
            });
        id
    }

    // ---- invariants -------------------------------------------------------------------------

    fn rule(&self, mapping: &str) -> Option<&MappingRule> {
        self.mappings
            .iter()
            .map(|(r, _)| r)
            .find(|r| r.name == mapping)
    }

    fn check_persist(&self, rec: &Record) -> Result<(), Violation> {
        if rec.state == State::Done {
            let Some(att) = &rec.attachment_id else {
                return Err(self.violation(format!("{} done without an attachment id", rec.id)));
            };
            let t = rec
                .target
                .as_ref()
                .map(|t| t.item_id.clone())
                .unwrap_or_default();
            if self.deleted_drafts.contains(&t) {
                // Deleted by the user with what was on it.
                return Ok(());
            }
            let ok = self.items.get(&t).is_some_and(|atts| {
                atts.iter()
                    .any(|x| x.id == *att && x.content.map(sha) == rec.sha256)
            }) || self.sent_copy_holds(&t, att, rec.sha256.as_deref());
            // Being deleted by a newer version (its record says so) is on the way to `replaced`.
            let going = self
                .ledger
                .values()
                .chain(std::iter::once(rec))
                .any(|r| r.replaces.iter().any(|x| x.attachment_id == *att));
            // (The known limit `check_final` allows too: a done record a restore took back,
            // whose attachment a newer version deleted in the lost later state; written again
            // as the restored ledger has it, by its after-action, seed 56867.)
            let replaced_in_lost_state = self.restored.contains(&rec.id)
                && self.lost_ledger.get(&rec.id).is_some_and(|l| l.replaced);
            // (Taken off its draft by the user: the agent learns it when it lists the draft.)
            let taken_off = self.hand_removed.contains(att.as_str());
            if !ok && !rec.replaced && !going && !replaced_in_lost_state && !taken_off {
                return Err(self.violation(format!(
                    "{} recorded done with {att}, which is not on {t} with its SHA-256",
                    rec.id
                )));
            }
        }
        Ok(())
    }

    /// Whether sent copy `t` holds attachment `att` with SHA-256 `sha` (a file found mailed by
    /// its key is done with the sent copy's attachment).
    fn sent_copy_holds(&self, t: &str, att: &str, sha256: Option<&str>) -> bool {
        let Some(m) = self.mail.get(t).filter(|m| !m.is_draft) else {
            return false;
        };
        let Some((name, _)) = m.atts.iter().find(|(_, id)| id == att) else {
            return false;
        };
        self.sends.iter().any(|(k, _, atts)| {
            *k == m.of
                && atts
                    .iter()
                    .any(|(n, c)| n == name && c.map(sha).as_deref() == sha256)
        })
    }

    /// A file failed because a draft of a lost ledger's message carries its key (it is never
    /// mailed beside it; the user sends or deletes that draft).
    fn held_by_lost_draft(&self, r: &Record) -> bool {
        if r.error.as_ref().is_none_or(|e| e.code != HELD_BY_DRAFT) {
            return false;
        }
        let Some(sha256) = r.sha256.as_deref() else {
            return false;
        };
        let rel = r.path.strip_prefix("/mail").unwrap_or(&r.path);
        let Some(rule) = (self.mappings.iter())
            .find(|(m, _)| m.name == r.mapping)
            .and_then(|(m, _)| m.mail.as_ref())
        else {
            return false;
        };
        let to = crate::model::recipients_id(rule);
        let key = crate::model::file_key("me", &to, rel, r.file.size, sha256);
        self.mail.values().any(|m| {
            m.is_draft
                && m.gone_at.is_none_or(|g| g > self.now)
                && m.keys.contains(&key)
                && self.lost_msgs.contains_key(&m.of)
        })
    }

    fn check_message(&self, m: &MessageRecord) -> Result<(), Violation> {
        if m.state == MessageState::Sent && !self.sends.iter().any(|(k, ..)| *k == m.id) {
            return Err(self.violation(format!("message {} recorded sent, never sent", m.id)));
        }
        Ok(())
    }

    fn check_mail(&self) -> Result<(), Violation> {
        // No mapping makes more messages in a window than its `max_messages`.
        for (rule, _) in &self.mappings {
            let Some(mail) = rule.mail.as_ref().filter(|m| m.max_messages > 0) else {
                continue;
            };
            // (In the world's time, but for a wall clock stepped forward while the agent was
            // down: that shortens the window by the step, which no run can see. docs/core.md,
            // known limits.)
            let mut made: Vec<Time> = self
                .msg_ledger
                .values()
                .filter(|m| m.mapping == rule.name)
                .map(|m| {
                    self.message_made
                        .get(&m.id)
                        .copied()
                        .unwrap_or(m.created_at)
                })
                .collect();
            made.sort();
            let cap = mail.max_messages as usize;
            for w in made.windows(cap + 1) {
                if w[cap].0 < w[0].0 + mail.max_messages_window_ms {
                    return Err(self.violation(format!(
                        "mapping {} made {} messages within {} ms (max_messages {cap})",
                        rule.name,
                        cap + 1,
                        mail.max_messages_window_ms
                    )));
                }
            }
        }
        if let Some(l) = self.late_attachments.first() {
            return Err(self.violation(format!("attachment {l}")));
        }
        if let Some(d) = self.deleted_sent.first() {
            return Err(self.violation(format!("the agent deleted draft {d} after it was sent")));
        }
        // No name and bytes mailed more often than they were dropped (a lost state dir, a
        // restored one, the user's own drop again: the mailbox answers).
        let mut mailed: BTreeMap<(String, Content), u32> = BTreeMap::new();
        let mut once = BTreeSet::new();
        for (marker, _, atts) in &self.sends {
            if !once.insert(marker) {
                continue;
            }
            for (n, c) in atts {
                let Some(c) = c else { continue };
                let k = (n.clone(), *c);
                let times = mailed.entry(k.clone()).or_default();
                *times += 1;
                let dropped = self.drops.get(&k).copied().unwrap_or(0);
                if *times > dropped {
                    return Err(self.violation(format!(
                        "{n} {c:?} mailed {times} times, dropped {dropped} (message {marker})"
                    )));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for (marker, draft, atts) in &self.sends {
            if !seen.insert(marker) {
                return Err(self.violation(format!("message {marker} sent twice")));
            }
            // Its record was taken back by a restore to before the send: the send was checked
            // against the record it went with at every step until then; what was mailed is
            // counted against what was dropped above.
            if self.restored.contains(marker) {
                continue;
            }
            if marker.starts_with("rival-") {
                continue; // the second agent's (counted above against the drops)
            }
            // Sent from Outlook with what was on it then (each name and bytes still counted
            // against the drops above).
            if self.hand_sent.contains(draft) {
                continue;
            }
            let Some(m) = self
                .msg_ledger
                .get(marker)
                .or_else(|| self.lost_msgs.get(marker))
                .or_else(|| self.pruned_msgs.get(marker))
            else {
                return Err(self.violation(format!("{draft} sent with no message on record")));
            };
            if !m.send {
                return Err(self.violation(format!("message {marker} sent with send = false")));
            }
            // Exactly its files' bytes, each once: none missing, none extra, none mixed.
            let mut want: Vec<(String, Option<Content>)> = Vec::new();
            for f in &m.files {
                let Some(r) = self.any_record(f) else {
                    return Err(self.violation(format!("message {marker}: file {f} not on record")));
                };
                let c = self
                    .ledger_content(r)
                    .ok_or_else(|| self.violation(format!("message {marker}: {f} not hashed")))?;
                want.push((r.name.clone(), Some(c)));
            }
            let mut have = atts.clone();
            // As multisets: two files of one name and the same bytes in one message (a copy in
            // a subfolder) are two attachments; the recipient gets both.
            want.sort();
            have.sort();
            if want != have {
                return Err(self.violation(format!(
                    "message {marker} sent with {have:?}, its files are {want:?}"
                )));
            }
        }
        Ok(())
    }

    /// A file of a message whose send is in doubt and whose draft the user deleted: it cannot be
    /// told whether it went, so it stays unconfirmed, and the file waits for it (never sent
    /// again, never moved).
    fn unconfirmed_deleted(&self, r: &Record) -> bool {
        r.message
            .as_ref()
            .and_then(|m| self.msg_ledger.get(m))
            .is_some_and(|m| {
                m.state == MessageState::Unconfirmed
                    && m.draft_id
                        .as_ref()
                        .is_some_and(|d| self.deleted_drafts.contains(d))
            })
    }

    /// The content a record's SHA-256 names (the simulation's hashes encode it).
    fn ledger_content(&self, r: &Record) -> Option<Content> {
        Content::from_sha(r.sha256.as_deref()?)
    }

    fn check_always(&self) -> Result<(), Violation> {
        self.check_mail()?;
        for (item, atts) in &self.items {
            let mut seen: BTreeMap<(&str, Content), &str> = BTreeMap::new();
            let mut by_entry: BTreeMap<&str, &str> = BTreeMap::new();
            let mut versions: BTreeMap<(&Path, u64, Content), &str> = BTreeMap::new();
            for a in atts {
                let Some(c) = a.content else {
                    if self.evil && (!self.final_check || self.evil_orphans.contains(&a.id)) {
                        continue;
                    }
                    return Err(self.violation(format!(
                        "{} on {item} holds bytes of more than one version",
                        a.id
                    )));
                };
                if let Some(prev) = by_entry.insert(a.by_entry.as_str(), a.id.as_str()) {
                    // A ledger restored from a backup forgot an upload that finished after the
                    // backup: its second copy on a draft not yet sent is allowed (the pre-send
                    // listing must take the first off; what is sent is checked by check_mail).
                    if self.restored.contains(&a.by_entry)
                        && self.mail.get(item).is_some_and(|m| m.is_draft)
                    {
                        continue;
                    }
                    return Err(self.violation(format!(
                        "entry {} attached twice to {item}: {prev} and {}",
                        a.by_entry, a.id
                    )));
                }
                // One file version (its path, inode and bytes: a file that stayed where it was)
                // attached by two entries, under `attach` too: only a file dropped again is
                // sent again (a prune that forgot the entry of a file still there, in a folder
                // unmounted, sends it twice). Mailing mappings are checked by their drops.
                if let Some(r) = self
                    .any_record(&a.by_entry)
                    .filter(|r| self.rule(&r.mapping).is_some_and(|m| m.mail.is_none()))
                {
                    if let Some(prev) =
                        versions.insert((r.path.as_path(), r.file.ino, c), a.by_entry.as_str())
                    {
                        if prev != a.by_entry {
                            return Err(self.violation(format!(
                                "{} attached twice to {item}, by {prev} and {}, though it never left its folder",
                                r.path.display(),
                                a.by_entry
                            )));
                        }
                    }
                }
                // Two attachments with one name and one SHA-256 are a duplicate unless both
                // entries' mappings say `if_exists = "attach"`.
                let mapping_attach = |entry: &str| {
                    self.any_record(entry)
                        .and_then(|r| self.rule(&r.mapping))
                        .is_some_and(|r| r.if_exists == IfExists::Attach)
                };
                if let Some(prev) = seen.insert((a.name.as_str(), c), a.by_entry.as_str()) {
                    // The later one's mapping asked for it (`attach`): not a duplicate.
                    if !mapping_attach(&a.by_entry) {
                        return Err(self.violation(format!(
                            "duplicate on {item}: two attachments named {} with the same bytes ({prev}, {})",
                            a.name, a.by_entry
                        )));
                    }
                }
            }
        }
        // A file is moved or deleted only after its done record, and only the bytes attached;
        // a mailed file only once its message is sent (or left as a draft).
        // A mailed file is moved or deleted only once its sent copy was seen (SPEC §8).
        if let Some(p) = self.after_unseen.first() {
            return Err(self.violation(format!(
                "{p} was moved or deleted before its message's sent copy was in Sent Items"
            )));
        }
        if let Some((path, c)) = self.removed_undone.first() {
            return Err(self.violation(format!(
                "{} was moved or deleted without a done record of its bytes ({c:?})",
                path.display()
            )));
        }
        Ok(())
    }

    fn check_final(&mut self) -> Result<(), Violation> {
        self.final_check = true;
        self.check_always()?;
        for r in self.ledger.values() {
            if has_work(r) && !self.unconfirmed_deleted(r) {
                return Err(self.violation(format!("{} still has work at quiescence: {r:?}", r.id)));
            }
            let code = r.error.as_ref().map(|e| e.code.as_str());
            if r.state == State::Failed
                && !(self.evil && code == Some("protocolViolation"))
                && code != Some(MESSAGE_TOO_LARGE)
                // The world refused to give a file back from `failed_dir` (a new file at its
                // path, a permission): said, and left to the user.
                && code != Some(crate::machine::FAILED_DIR_REFUSED)
                && !self.held_by_lost_draft(r)
                // In `failed_dir` by a move whose answer a crash lost, a new file at its path:
                // `outbox retry` refuses it (the user's to sort out).
                && !self.lost_move_in_the_way(r)
            {
                return Err(self.violation(format!(
                    "{} failed though every fault was transient: {:?}",
                    r.id, r.error
                )));
            }
            // (A done record a restore took back, whose attachment a newer version deleted in
            // the lost later state: the restored ledger cannot know it was replaced. Known
            // limit of the record of last resort, docs/core.md.)
            let replaced_in_lost_state = self.restored.contains(&r.id)
                && self.lost_ledger.get(&r.id).is_some_and(|l| l.replaced);
            if r.state == State::Done && !r.replaced && !replaced_in_lost_state {
                self.check_persist(r)?;
            }
        }
        if !self.urls.is_empty() {
            return Err(self.violation(format!("upload URLs left behind: {:?}", self.urls)));
        }
        for m in self.msg_ledger.values() {
            let ok = match m.state {
                MessageState::Sent | MessageState::Drafted => true,
                // Its files all left it, or another message mails them: its draft is gone.
                // (Or its file could not be taken back from `failed_dir`: the world refused.)
                MessageState::Failed => {
                    m.error
                        .as_ref()
                        .is_some_and(|e| e.code == crate::machine::FAILED_DIR_REFUSED)
                        // (Or `outbox retry` refuses it: a file of it is in `failed_dir`
                        // unbeknown to the ledger, a new file at its path.)
                        || self.retry_refused(m)
                        // (Or a send of it was in doubt, the file the user took off its draft
                        // then deleted: the draft, empty, stays in Drafts, since a draft that
                        // may be in Exchange's move is never deleted. docs/core.md.)
                        || (m.may_have_been_sent()
                            && m.error.as_ref().is_some_and(|e| e.code == NO_FILES_LEFT)
                            && m.draft_id.as_ref().is_some_and(|d| self.hand_edited.contains(d)))
                        || (m.error.as_ref().is_some_and(|e| {
                            e.code == NO_FILES_LEFT
                                || e.code == MAILED_ELSEWHERE
                                || e.code == crate::machine::SPLIT_AGAIN
                        }) && !m.draft_abandoned()
                            // (A draft the state a restore took back made is not known to it:
                            // it stays in Drafts, unsent. docs/core.md, known limits.)
                            && (self.restored.contains(&m.id)
                                || !self.mail.values().any(|x| {
                                    x.is_draft
                                        && x.gone_at.is_none()
                                        && x.marker.as_deref() == Some(&m.id)
                                })))
                }
                // A send in doubt whose draft the user deleted cannot be told: it stays so,
                // never sent again (retried, it looked in Sent Items and Drafts).
                MessageState::Unconfirmed => m
                    .draft_id
                    .as_ref()
                    .is_some_and(|d| self.deleted_drafts.contains(d)),
                _ => false,
            };
            if !ok {
                return Err(self.violation(format!(
                    "message {} is {:?} at quiescence: {:?}",
                    m.id, m.state, m.error
                )));
            }
        }
        for (sid, s) in &self.sessions {
            let lost = (self.lost_ledger.contains_key(&s.entry)
                && !self.ledger.contains_key(&s.entry))
                || self.forgotten_sessions.contains(sid);
            if s.delivered && s.expires > self.now && !lost {
                return Err(self.violation(format!("session {sid} of {} left open", s.entry)));
            }
        }
        // Every file in the folder is on its item with its final bytes.
        let files: Vec<(PathBuf, u64)> = self.paths.iter().map(|(p, i)| (p.clone(), *i)).collect();
        for (path, ino) in files {
            let Some(mapping) = self.mapping_of(&path) else {
                continue;
            };
            let c = self.content_of(ino).expect("inode");
            let rule = self.rule(&mapping).expect("rule").clone();
            let rec = self
                .ledger
                .values()
                .filter(|r| r.path == path && r.mapping == mapping)
                .max_by_key(|r| r.seq);
            let Some(rec) = rec else {
                return Err(self.violation(format!("{} was never recorded", path.display())));
            };
            // Over the limit, a file is refused by its size at settle, never read (no hash):
            // over 150 MiB, or alone over a mailing mapping's message limit.
            let over_message = rule.mail.as_ref().is_some_and(|m| {
                let f = crate::mail::FileFacts {
                    name: rec.name.clone(),
                    size: c.size,
                };
                crate::mail::split_batch(&[f], m.max_message_size, m.body.len() as u64).is_err()
            });
            let refused_unread = rec.sha256.is_none()
                && rec.file.size == c.size
                && ((rec.state == State::Rejected && c.size > MAX_ATTACHMENT)
                    || (rec.state == State::Failed
                        && over_message
                        && rec.error.as_ref().map(|e| e.code.as_str()) == Some(MESSAGE_TOO_LARGE)));
            // Canceled by the user before it was read again (a retried refusal): nothing to hash.
            let canceled_unread = rec.sha256.is_none()
                && rec.state == State::Canceled
                && rec.error.as_ref().map(|e| e.code.as_str()) == Some("canceled");
            if rec.sha256.as_deref() != Some(&sha(c)) && !refused_unread && !canceled_unread {
                return Err(self.violation(format!(
                    "{}: the newest record is not the file's final bytes ({:?})",
                    path.display(),
                    rec
                )));
            }
            if c.size > MAX_ATTACHMENT {
                if rec.state != State::Rejected {
                    return Err(self.violation(format!(
                        "{} over the limit but {:?}",
                        path.display(),
                        rec.state
                    )));
                }
                continue;
            }
            let code = rec.error.as_ref().map(|e| e.code.clone());
            if rule.mail.is_some() && rec.state == State::Failed {
                // Alone over the limit: refused, explained, never sent.
                let f = crate::mail::FileFacts {
                    name: rec.name.clone(),
                    size: c.size,
                };
                let limit = rule.mail.as_ref().map(|m| m.max_message_size).unwrap_or(0);
                let too_large = crate::mail::split_batch(&[f], limit, 32).is_err();
                if code.as_deref() == Some(MESSAGE_TOO_LARGE) && too_large {
                    continue;
                }
            }
            let excused = (rec.state == State::Canceled && code.as_deref() == Some("canceled"))
                || self.held_by_lost_draft(rec)
                || (rec.state == State::Failed
                    && self.evil
                    && code.as_deref() == Some("protocolViolation"));
            if excused {
                continue;
            }
            if rec.state != State::Done {
                return Err(self.violation(format!(
                    "{}: its final version is {:?}, not attached",
                    path.display(),
                    rec.state
                )));
            }
            if self.unconfirmed_deleted(rec) {
                continue;
            }
            let item = &rec
                .target
                .as_ref()
                .map(|t| t.item_id.clone())
                .unwrap_or_default();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Found mailed by its key: done with its sent copy's attachment.
            let found_mailed = rec.message.is_none()
                && rec
                    .attachment_id
                    .as_deref()
                    .is_some_and(|att| self.sent_copy_holds(item, att, Some(sha(c).as_str())));
            let on_item = found_mailed
                || self.items.get(item).is_some_and(|atts| {
                    atts.iter().any(|a| a.name == name && a.content == Some(c))
                });
            // (A draft left for review, `send = false`, is the user's to edit: one who took the
            // file's copy off it in Outlook, even before it was handed over, meant it.)
            let taken_off = rec
                .attachment_id
                .as_deref()
                .is_some_and(|a| self.hand_removed.contains(a))
                && rule.mail.as_ref().is_some_and(|m| !m.send);
            if !on_item && !taken_off {
                return Err(
                    self.violation(format!("{}: final bytes not on {item}", path.display()))
                );
            }
            if let Some(mail) = rule.mail.as_ref().filter(|_| !found_mailed) {
                // Each drop is a request to mail: a file dropped (again) after its newest
                // record's message was sent is not mailed by that message, even with the same
                // bytes.
                // (In the world's time: the agent's clock may have been stepped since.)
                let born = self.inodes.get(&ino).map(|n| n.born).unwrap_or(Time(0));
                let went_before = (rec.message.as_ref())
                    .and_then(|m| self.message_sent.get(m))
                    .is_some_and(|t| *t < born);
                let created = self.record_born.get(&rec.id).copied().unwrap_or(Time(0));
                if created < born && went_before {
                    return Err(self.violation(format!(
                        "{}: dropped at {} but its newest record {} is older: not mailed again",
                        path.display(),
                        born.0,
                        rec.id
                    )));
                }
                // Mailed: in a message sent with these bytes (or a draft left, `send = false`).
                let m = rec.message.as_ref().and_then(|m| self.msg_ledger.get(m));
                let Some(m) = m else {
                    return Err(
                        self.violation(format!("{}: done but in no message", path.display()))
                    );
                };
                // (A draft left for the user, `send = false`, that they sent from Outlook
                // before it was left: found sent.)
                let want = if mail.send || self.hand_sent.contains(&m.id) {
                    MessageState::Sent
                } else {
                    MessageState::Drafted
                };
                let left_for_review = m.state == MessageState::Drafted && !mail.send;
                if m.state != want && !left_for_review {
                    return Err(self.violation(format!(
                        "{}: its message {} is {:?}, not {want:?}: {:?}",
                        path.display(),
                        m.id,
                        m.state,
                        m.error
                    )));
                }
                if mail.send
                    && !self.sends.iter().any(|(k, _, atts)| {
                        *k == m.id && atts.iter().any(|(n, x)| *n == name && *x == Some(c))
                    })
                {
                    return Err(self.violation(format!(
                        "{}: its final bytes were not in its sent message {}",
                        path.display(),
                        m.id
                    )));
                }
            }
            if rule.on_change == OnChange::Replace {
                let mine: Vec<&SimAttachment> = self
                    .items
                    .get(item)
                    .map(|atts| {
                        atts.iter()
                            .filter(|a| {
                                // Made for one of this path's versions, and not the attachment
                                // of another file (one name, the same bytes) that keeps it.
                                !self.evil_orphans.contains(&a.id)
                                    && self.ledger.get(&a.by_entry).is_some_and(|r| {
                                        r.path == path
                                                && r.mapping == mapping
                                                // Known limit: an upload whose answer was lost,
                                                // on an item that already held one with its name
                                                // and bytes (`attach`, or another agent): the
                                                // look adopts the other and this copy stays.
                                                && !(r.state == State::Done
                                                    && r.attachment_id.as_deref() != Some(&a.id)
                                                    && self.adopted.contains(&a.id))
                                    })
                                    // (A pruned record's file went; its copy
                                    // on the item stays as it was.)
                                    && !self.ledger.values().chain(self.pruned.values()).any(|r| {
                                        r.path != path
                                            && r.state == State::Done
                                            && !r.replaced
                                            && r.attachment_id.as_deref() == Some(&a.id)
                                    })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if mine.len() > 1 {
                    let which: Vec<String> = mine
                        .iter()
                        .map(|a| {
                            let r = self.ledger.get(&a.by_entry);
                            format!(
                                "{} by {} ({:?}, replaced={:?})",
                                a.id,
                                a.by_entry,
                                r.map(|r| r.state),
                                r.map(|r| r.replaced)
                            )
                        })
                        .collect();
                    return Err(self.violation(format!(
                        "{}: {} attachments of its versions stay with on_change = replace: {which:?}",
                        path.display(),
                        mine.len()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The simulated agent's ledger: a write is seen at once and lasts only once flushed. A flush
/// may be cut by a crash (while faults last): before it (or the disk refusing it), or after
/// some of its writes, in order, or right after it; what was not flushed is put back, and
/// nothing of the batch starts.
impl exec::Ledger for Sim {
    type Error = Stop;

    fn write(&mut self, write: exec::Write) -> Result<Option<Action>, Stop> {
        self.note(format!("write: {}", brief_write(&write)));
        match write {
            exec::Write::Record(rec) => {
                self.check_persist(&rec)?;
                let now = self.now;
                self.record_born.entry(rec.id.clone()).or_insert(now);
                // A file the executor moved to `failed_dir` was not deleted: a retry takes it
                // back or says why, never finds it gone and drops it from its message.
                if rec.state == State::Canceled
                    && rec.error.as_ref().is_some_and(|e| e.code == "fileDeleted")
                    && self.aside.values().any(|(_, e)| *e == rec.id)
                {
                    return Err(self
                        .violation(format!(
                            "{} is in failed_dir, yet canceled as deleted",
                            rec.id
                        ))
                        .into());
                }
                let was = self.ledger.insert(rec.id.clone(), rec.clone());
                self.unflushed.push(Undo::Record(rec.id, was));
            }
            exec::Write::Message(m) => {
                self.check_message(&m)?;
                let now = self.now;
                let credit = self.clocks.as_ref().map_or(0, |c| c.forward_ms);
                self.message_made
                    .entry(m.id.clone())
                    .or_insert(now.plus_ms(credit));
                if m.state == MessageState::Sent {
                    self.message_sent.entry(m.id.clone()).or_insert(now);
                }
                let was = self.msg_ledger.insert(m.id.clone(), m.clone());
                self.unflushed.push(Undo::Message(m.id, was));
            }
            exec::Write::File { id, file, revive } => {
                if let Some(r) = self.ledger.get_mut(&id) {
                    let was = r.clone();
                    r.file = file;
                    let rec = r.clone();
                    self.unflushed.push(Undo::Record(id, Some(was)));
                    if revive {
                        self.queue.push_back(Input::Retry { records: vec![rec] });
                    }
                }
            }
            exec::Write::Replaced { id } => {
                if let Some(r) = self.ledger.get_mut(&id) {
                    let was = r.clone();
                    r.replaced = true;
                    self.unflushed.push(Undo::Record(id, Some(was)));
                }
            }
        }
        Ok(None)
    }

    fn flush(&mut self, _next: &[Action]) -> Result<(), Stop> {
        if self.unflushed.is_empty() {
            return Ok(());
        }
        if !self.quiet && self.rng.gen_bool(self.knobs.crash_prob / 2.0) {
            // The flush is cut: the first `kept` writes are on disk, the rest lost.
            let n = self.unflushed.len();
            let kept = self.rng.gen_range(0..=n);
            self.note(format!("flush cut after {kept} of {n} writes"));
            self.unflushed.drain(..kept);
            self.crash_and_restart_later();
            return Err(Stop::Crashed);
        }
        self.unflushed.clear();
        self.maybe_back_up();
        Ok(())
    }
}

/// The simulated agent's hands: its clock is the world's, its requests the world's to answer.
impl exec::Executor for Sim {
    fn next_input(&mut self) -> Option<Input> {
        // Nothing is taken once the agent crashed.
        self.machine.as_ref()?;
        self.queue.pop_front()
    }

    fn decide(&mut self, input: Input) -> Vec<Action> {
        if self.trace {
            self.note(format!("in: {input:?}"));
        }
        self.note_waits(&input);
        let now = self.agent_now();
        match self.machine.as_mut() {
            Some(m) => m.handle(now, input),
            None => Vec::new(),
        }
    }

    fn now(&mut self, action: Action) -> Result<(), Stop> {
        self.note(format!("act: {}", brief(&action)));
        match action {
            Action::WakeAt(t) => {
                let e = self.epoch;
                let d = t.since(self.agent_now());
                self.schedule(d, Event::Tick(e));
            }
            other => self.dispatch(other)?,
        }
        Ok(())
    }

    fn start(&mut self, action: Action) -> Result<(), Stop> {
        self.note(format!("act: {}", brief(&action)));
        // The oracle of the order of work: nothing starts while a write asked before it is
        // not on disk (a crash then would leave its effect without its intent).
        if !self.unflushed.is_empty() {
            return Err(self
                .violation(format!(
                    "{} started with {} ledger writes before it not flushed",
                    brief(&action),
                    self.unflushed.len()
                ))
                .into());
        }
        match action {
            Action::ForgetUrl { id } => {
                self.urls.remove(&id);
                self.readers.remove(&id);
            }
            Action::Notify(_) => {}
            other => self.dispatch(other)?,
        }
        Ok(())
    }
}

fn brief_record(r: &Record) -> String {
    format!(
        "persist {} {:?} may_exist={} session={:?} att={:?} cancel={} sha={}",
        r.id,
        r.state,
        r.may_exist,
        r.session,
        r.attachment_id,
        r.cancel_requested,
        r.sha256.as_deref().map(|s| &s[..32]).unwrap_or("-")
    )
}

fn brief_write(w: &exec::Write) -> String {
    match w {
        exec::Write::Record(r) => brief_record(r),
        exec::Write::Message(m) => {
            let s = format!("PersistMessage({m:?})");
            s.chars().take(160).collect()
        }
        exec::Write::File { id, .. } => format!("UpdateFile {id}"),
        exec::Write::Replaced { id } => format!("MarkReplaced {id}"),
    }
}

fn action_id(a: &Action) -> String {
    match a {
        Action::Post { id, .. }
        | Action::CreateSession { id, .. }
        | Action::PutChunk { id, .. }
        | Action::AskSession { id, .. }
        | Action::DeleteSession { id, .. }
        | Action::Look { id, .. }
        | Action::DeleteAttachment { id, .. }
        | Action::After { id, .. }
        | Action::CreateDraft { id, .. }
        | Action::FindMessage { id, .. }
        | Action::FindFileKey { id, .. }
        | Action::StampKeys { id, .. }
        | Action::FindRivals { id, .. }
        | Action::DeleteDraft { id, .. }
        | Action::SetLetter { id, .. }
        | Action::ListDraft { id, .. }
        | Action::SendDraft { id, .. } => id.clone(),
        _ => String::new(),
    }
}

fn wrap_fault(a: &Action, f: Fault) -> Outcome {
    match a {
        Action::Post { .. } => Outcome::Post(PostOutcome::Failed(f)),
        Action::CreateSession { .. } => Outcome::CreateSession(SessionOutcome::Failed(f)),
        Action::PutChunk { .. } => Outcome::Chunk(ChunkOutcome::Failed(f)),
        Action::AskSession { .. } => Outcome::Ask(AskOutcome::Failed(f)),
        Action::DeleteSession { .. } => Outcome::DeleteSession(DeleteOutcome::Failed(f)),
        Action::DeleteAttachment { .. } => Outcome::DeleteAttachment(DeleteOutcome::Failed(f)),
        Action::CreateDraft { .. } => Outcome::CreateDraft(DraftOutcome::Failed(f)),
        Action::FindMessage { folder, .. } => Outcome::Find(*folder, FindOutcome::Failed(f)),
        Action::SendDraft { .. } => Outcome::Send(SendOutcome::Failed(f)),
        Action::ListDraft { .. } => Outcome::ListDraft(ListOutcome::Failed(f)),
        Action::FindFileKey { .. } => Outcome::Key(KeyOutcome::Failed(f)),
        Action::StampKeys { .. } => Outcome::StampKeys(Err(f)),
        Action::FindRivals { .. } => Outcome::Rivals(RivalsOutcome::Failed(f)),
        Action::DeleteDraft { .. } => Outcome::DeleteDraft(DeleteOutcome::Failed(f)),
        Action::SetLetter { .. } => Outcome::SetLetter(Err(f)),
        _ => Outcome::Look(LookOutcome::Failed(f)),
    }
}

fn brief(a: &Action) -> String {
    match a {
        Action::Persist(r) => brief_record(r),
        Action::PutChunk {
            id,
            offset,
            len,
            last,
            ..
        } => format!("put {id} {offset}+{len} last={last}"),
        other => {
            let s = format!("{other:?}");
            s.chars().take(160).collect()
        }
    }
}

/// Run seeds `from..from+count`; the violations found.
pub fn run_seeds(from: u64, count: u64) -> (Vec<Violation>, u64) {
    let mut bad = Vec::new();
    let mut steps = 0;
    for seed in from..from + count {
        let mut sim = Sim::new(seed);
        if let Err(v) = sim.run() {
            bad.push(v);
        }
        steps += sim.steps;
    }
    (bad, steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed that ever broke an invariant, kept forever (each was a bug in the machine or
    /// the world; the comment says which).
    const FAILED_ONCE: &[(u64, &str)] = &[
        (
            110855,
            "a version the user canceled while its key search was answered 'held by another agent's draft' ended canceled with the hold's reason, not the user's (status would say held); the cancel is now taken at once",
        ),
        (311478, "as 110855"),
        (
            311087,
            "the world: a draft a lost ledger left, sent by hand while the new ledger's key search ran, was in the Outbox, hidden from the search (the known limit: the world sends by hand only drafts of the ledger it has)",
        ),
        (
            4233,
            "the sent-copy look of seed 301470's fix answered not there: the file, in no message, waited for ever (also 12409, 19710); it now goes in a new message",
        ),
        (
            117521,
            "mailed twice: as 4233, but the file's upload session (last piece in doubt) was being closed before its sent-copy look when the agent crashed; the start put it in a new message at once. It now waits for the close, then the look",
        ),
        (
            1012321,
            "sent twice: a message every file of which left it (noFilesLeft), its draft sent by hand before, was retried by the user: drafted again with no file and sent. A retry of a message with no files does nothing now (and `outbox retry` passes it over)",
        ),
        (119774, "the oracle: an after-action judged again after a later restore took its done record back"),
        (56867, "the oracle: a done record a restore took back, its attachment replaced in the lost state, written again by its after-action (the known limit)"),
        (57838, "the world: no user retry after a retried message (its draft gone) was refused for its size in turn; its files' moves waited at quiescence (also 71288, 133795, 162752, 1014470, 1018086)"),
        (
            627201,
            "sent twice: a ledger restored from a backup taken before its message's draft was made forgot that draft (sent from Outlook meanwhile); the start made a second one with the same marker, sent too. A message with no draft on record now looks for its marker first",
        ),
        (
            1798,
            "attached twice (the world's clock steps): a POST whose 503 came after its effect was looked for after a restart whose wall clock had stepped forward, before the listing could show it; an earlier run's time now counts from the start (Machine::counted)",
        ),
        (
            379304,
            "mailed twice: a ledger restored mid-upload (a session open, nothing in doubt on record) while the lost later run finished the upload and sent the message; the start found the message sent and put the file, not searched for (it had a session), in a new message, and the pre-send check took the sent copy holding its key for a new drop's. It is searched for by its key now",
        ),
        (890673, "as 627201"),
        (
            243784,
            "mailed twice (the world's clocks): a file that joined a made draft in a later run whose wall clock had been set back looked older than its message, and the check for rivals trusted the draft's age and sent though another agent's draft held its key; joined late is now by seq (also 142031, 281891, 335506, 423396, 535238, 644672, 690038)",
        ),
        (142031, "as 243784"),
        (
            1589,
            "a message looked for by its marker at start only because no draft was on record (trial 5's M6: drafted at once if found nowhere) kept that mark after its own create was answered 503, and looked for it before look_after; the mark ends with the start's look",
        ),
        (
            175603,
            "the world: a user retry delivered with the records as they were when it was asked (a move into failed_dir answered in between was not on them); the agent reads them when it takes the request",
        ),
        (
            482373,
            "the world: the same for a message retry (two asked while the machine slept, a cancel between them): the stale record of the canceled file left its message waiting for ever",
        ),
        (
            885343,
            "the world: a draft refused for its size was sent from Outlook (the tenant's limit refuses that too), then split by the user's retry and its file mailed again",
        ),
        (644672, "as 243784 (failed before the clocks too: the helper's note)"),
        (
            789676,
            "a failed file's move into failed_dir landed and a crash lost its answer; at start its mapping named another item, so it was sent again from its empty path and canceled as deleted while it sat in failed_dir. The move is now on record before it is asked (failed_dir_asked), asked again at start, and found there",
        ),
        (
            5229,
            "hand edits of drafts (session 15): a file taken off a draft in Outlook while its message waited out a throttled send; the draft, found still a draft, was sent again on its old listing, short of the file. The executor checks the draft right before every send (DRAFT_CHANGED)",
        ),
        (11546, "as 5229"),
        (
            8231,
            "hand edits of drafts: the machine slept 92 s between the listing of a draft and its send, and a file was taken off it meanwhile; it went short. The executor lists the draft again right before the send (DRAFT_CHANGED)",
        ),
        (
            41218,
            "mailed twice: a retried entry that failed before it was read (messageTooLarge), its path now holding a newer version done in a sent message, was read again (trial 5's G4 fix, Step::Reread) and the same bytes got a new record and a new message. G4's fix was reverted",
        ),
        (49339, "as 41218"),
        (72035, "as 41218"),
        (
            11007,
            "the world: a draft the user took a file off, then sent from Outlook: found sent, the file taken for mailed (the known limit: the world sends no edited draft by hand)",
        ),
        (
            222,
            "hand edits of drafts: a message in doubt (a 503 to its send) found still a draft but short of the file taken off it stayed unconfirmed for good, every retry listing it short again; its retry now attaches the file again first, then looks before the send",
        ),
        (
            12649,
            "the world: a crash while the machine slept let a request it held land 40 minutes after the restart had attached the file again; no crash while it sleeps now",
        ),
        (
            643322,
            "duplicate under skip: an entry pruned 475 ms after it was done (keep_done drawn under a second), the agent restarted, and a file of the same name and bytes found nothing in a listing that lagged behind that attachment. Prune keeps a finished entry at least look_after now",
        ),
        (12409, "as 4233"),
        (19710, "as 4233"),
        (
            736778,
            "a file's POST on its message's draft under way when the message was found sent from Outlook (without it): the 404 failed the file (ErrorItemNotFound, though every fault was transient); it now leaves the message for a new one (also 379727)",
        ),
        (379727, "as 736778"),
        (
            344711,
            "as 736778, a look in doubt under way on the draft: the 404 failed the file; it is now looked for in the sent copy (found, it went; also 637820)",
        ),
        (637820, "as 344711"),
        (
            227388,
            "a restored ledger held a file done with a copy a lost newer version had replaced on the draft: the message failed attachmentMissing and every retry failed the same way; the file is now marked verify_failed and the retry attaches it again (also 370205)",
        ),
        (370205, "as 227388"),
        (
            205608,
            "as 227388 (a restored ledger, a copy a lost newer version had replaced): the message failed attachmentMissing at every retry, and its other file's after-action waited for ever ('still has work at quiescence')",
        ),
        (
            887852,
            "the world: a move into failed_dir of a crashed run landed after the next start had retried the file, which took it for deleted; the agent's own renames now happen before the crash or never (also 911627)",
        ),
        (911627, "as 887852"),
        (
            682999,
            "a slow writer's first write and close came while the older version was hashed and were dropped; the hash answered Changed and its next version was taken by its close though its writer was back; the reports are now kept and replayed once the hash answers (also 909258)",
        ),
        (909258, "as 682999"),
        (
            12358,
            "the world: the machine slept over an hour after faults stopped; the user's retries, spent while it slept (50 rounds waiting for a message at work), never came after it: a message failed or unconfirmed at quiescence (also 26200, 27249). `outbox retry` runs on that machine: not while it sleeps",
        ),
        (26200, "as 12358"),
        (27249, "as 12358"),
        (
            24604,
            "the world: the agent crashed and started again while its machine slept (a suspend); the dead run's POST, held for the wake, landed long after the new run's look found nothing and posted again: attached twice. No process runs while the machine sleeps: no crash then",
        ),
        (
            301470,
            "mailed twice: a file in doubt on a draft sent by hand (its last chunk's answer lost), in a mapping that does not search the mailbox, was looked for on the draft's old id after its message was found sent; the 404 read as 'not there' and the file went in a new message. It is now looked for in the sent copy (by name and bytes), in no message until that answers; the world answers a look on a sent copy",
        ),
        (
            15696,
            "a file's draft sent by hand from Outlook while its POST waited out a throttle: the POST's 404 failed the file (ErrorItemNotFound, in failed_dir, retry mailed it); now the message looks for its draft (draft_vanished) and the file goes in a new message by itself",
        ),
        (
            201528,
            "the world: an early 201 (a partial attachment, Graph breaking its protocol) whose answer a crash took back before its flush was counted as the client's to clean up; the client's ledger never knew it",
        ),
        (
            200735,
            "the world: a slow writer started while its folder was unmounted counted as one the settle rule covers, though the agent saw none of its first close",
        ),
        (
            0,
            "settle: a writer back after a close, its next pause past settle_after_close, had that close taken as final (a version hashed before its writer finished; caught with the old rule planted, 484 of 2,000 seeds)",
        ),
        (
            1473,
            "the executor's order of work in the simulation (exec::drain): a crash right after a flush, before the batch's ForgetUrl, left a URL whose record had dropped its session with its deleted draft; the start adopted it as a session on no item and failed the file's steps for ever (an endless loop at start-up)",
        ),
        (
            24934,
            "a ledger restored from a backup taken mid-attach: the draft, sent since by the lost later ledger, was attached to and sent again",
        ),
        (
            23733,
            "a ledger restored from a backup taken mid-attach: a file attached to a draft already sent (found still in Drafts during its move)",
        ),
        (
            43,
            "two agents on one folder: without the check for rivals before the send, a file the second agent mailed is mailed again (the agent also gives way once here)",
        ),
        (
            239,
            "two agents: a newer version joined a made draft, its key stamped later; the other agent searched, drafted and sent before the stamp, and the draft's older age won the check",
        ),
        (
            2179010,
            "a session resumed after a same-bytes rehash that moved its record to another file: its last chunk came from other bytes",
        ),
        (
            2730,
            "oracle: a retried refusal at settle (never read) canceled by the user has no hash to match",
        ),
        (
            2586,
            "ledger loss: a sent copy that kept no property cannot be found by a file's key (no ledger loss in such worlds)",
        ),
        (
            8091,
            "max_messages: a message made and failed before a restart stopped counting against its window",
        ),
        (
            2066,
            "max_messages: a restart forgot the messages made within the window (cap 1)",
        ),
        (
            245,
            "a 429 on send taken as 'not sent' sent a message twice (caught with the mutant planted)",
        ),
        (
            8,
            "head-of-line: an entry holding a mailbox place queued behind one waiting for it",
        ),
        (
            19,
            "a session URL counted as delivered though its reply was lost",
        ),
        (
            46,
            "a replaced record still at work overwrote its replaced mark",
        ),
        (62, "HashMap order made a run unrepeatable"),
        (
            84,
            "an attachment two files share was counted as one path's extra version",
        ),
        (
            140,
            "a folder that came back was still unmounted in the world",
        ),
        (
            183,
            "a settle check in flight kept asking for an immediate wake-up",
        ),
        (
            402,
            "steps made ready inside a pump were not started until the next input",
        ),
        (
            994,
            "an early 201 whose answer was lost left a partial attachment",
        ),
        (
            1254,
            "a look adopted another copy after a lost answer (attach)",
        ),
        (
            2092,
            "a file swapped for a copy with the same bytes was canceled for good",
        ),
        (2988, "a version found by a first look had no item recorded"),
        (
            4763,
            "a look on the old item answered if_exists for the new one",
        ),
        (
            4900,
            "a version that may be on the item did not hold its name from start-up",
        ),
        (
            6720,
            "a partial attachment was deleted on the mapping's new item",
        ),
        (
            8211,
            "with replace, only the newest older version was deleted",
        ),
        (
            8470,
            "a request cut off by a crash landed after the look that followed it",
        ),
        (
            8717,
            "a look made before another upload of the name was trusted after it",
        ),
        (
            14077,
            "the same bytes back at a path did not take back the agent's cancel",
        ),
        (
            16798,
            "deadlock: a mailbox place held while waiting for a name",
        ),
        (
            28128,
            "a re-sent last chunk did not renew the wait before the look",
        ),
        (
            28658,
            "an attachment being deleted was adopted by a look after a restart",
        ),
        (36240, "an attachment being deleted was adopted from memory"),
        (
            87200,
            "a failed record with a partial attachment was sent to a fixed item",
        ),
        (
            1123476,
            "a look in flight across a config edit answered if_exists for the new item",
        ),
        (1149748, "the same, for another name"),
        (1267252, "the same, after a crash"),
        (1285860, "the same, on item1"),
        (1606144, "the same, with a copy into a sibling folder"),
        (1674560, "the same, with replace"),
        (1711881, "the same, for b.txt on item1"),
        (
            1750524,
            "a look on item1 answered for item0 after the mapping moved",
        ),
        (1769967, "the same, for c.bin"),
        (
            1456512,
            "a late report that a path was gone dropped the new file at that name",
        ),
        (1525563, "fixed by the same change (a late gone report)"),
        (
            1702768,
            "a canceled version revived by its bytes kept a stale look",
        ),
        (
            1420642,
            "fixed by the same change (a stale look after a revival)",
        ),
        // Messages (issue 12), found while building them:
        (
            2963,
            "a file refused as too large for a message was never woken again",
        ),
        (
            2979,
            "a file waiting on its message held a mailbox place: the mailbox stalled",
        ),
        (
            81,
            "an older version replaced on a draft waited on the message forever",
        ),
        (
            78,
            "an older version that lost its place in a message was never woken",
        ),
        (
            234,
            "a partial attachment a server made on the draft went out with the message",
        ),
        (
            1218,
            "a stray copy deleted from a draft stayed recorded as done",
        ),
        (
            990,
            "a mailbox place released on the wrong mailbox once the item changed",
        ),
        // Retry-After honoured on every request, deletes included:
        (
            13,
            "a session delete retried before its Retry-After was over",
        ),
        (
            28,
            "a session delete retried before its Retry-After was over",
        ),
        (
            114199,
            "two files of one name and bytes in one message: the check wanted two copies",
        ),
        // A review's findings (session 5):
        (
            6359,
            "retry of an unconfirmed message inside Exchange's move window sent it twice",
        ),
        (
            14084,
            "retry of an unconfirmed message inside Exchange's move window sent it twice",
        ),
        // The 1,000,000-seed run of session 5 (seeds 3,000,000-3,999,999):
        (
            3130931,
            "a failed mailed file moved to a 'fixed' item at start-up, then waited forever",
        ),
        (
            3041844,
            "fixed by the same change (a mailed file revived at start-up)",
        ),
        (
            3437516,
            "fixed by the same change (a mailed file revived at start-up)",
        ),
        (
            3210133,
            "a session delete given up on sent the next request inside its Retry-After",
        ),
        (
            291,
            "twin drops: a look after a lost answer adopted the other file's attachment (one name, the same bytes), and the message went with one copy for two files",
        ),
        (
            3402,
            "twin drops: a crash between a draft's stray delete and marking its owner replaced left a done record naming a deleted attachment",
        ),
        (
            13701,
            "twin drops: two older versions sharing one stray copy, only one marked replaced when it was deleted",
        ),
        (
            19862,
            "deleted drafts: a file bound to a deleted draft looked there (and failed) while its retried message was still finding its draft",
        ),
        (
            15,
            "deleted drafts: a canceled file bound to a deleted draft, retried, failed on its look there instead of going to a new message",
        ),
        (
            4768,
            "deleted drafts: an older version done in a retried message, replaced there by a newer one, never came back for its after-action",
        ),
        (
            3749,
            "a file dropped again with the same bytes after its message went was taken for the one mailed (not mailed again)",
        ),
        (
            5_266_302,
            "a crash between a message's retry record and its files' left the failed file failed for good while the message went on",
        ),
        (
            5_455_723,
            "a look in doubt adopted the copy its message was deleting as a stray: the message went without the file, recorded done",
        ),
        (
            5_592_208,
            "a look in doubt adopted the copy its message was deleting as a stray (a second case)",
        ),
        (
            5_373_929,
            "a POST on a draft the user deleted, under way when the message was retried, failed its file for good",
        ),
        (
            5_684_955,
            "a message went with an older version's copy the pre-send listing did not show yet (a listing that lags)",
        ),
        (
            556_928,
            "a message went with the copy of a version that had left it while its POST answer was in doubt (the listing lagged)",
        ),
        (
            2_179_010,
            "a resumed session completed with bytes of two versions: an in-place edit went out mid-file, a copy of the old bytes replaced the file, and its same-bytes hash moved the record to the copy, so the resume re-read (and passed) the start from the copy",
        ),
        (
            4_763,
            "world: a retry whose move back from failed_dir was refused left the message failed (failedDirRefused) and its other file waiting, and the user never retried again",
        ),
        (7_646, "world: a refused move back from failed_dir on the first retry (a second case)"),
        (9_718, "world: a refused move back from failed_dir on the first retry (a third case)"),
        (19_528, "world: a refused move back from failed_dir on the first retry, beside a message with no files left"),
        (
            7_688,
            "world: a crash lost the answer of a move to failed_dir (no failed_to on record) and a new file took its path: the user's retry, which the agent refuses, reached the core, which canceled the file as deleted",
        ),
        (
            17_550,
            "world: a crash lost the answer of a move to failed_dir; the user's retry reached the core without the file put back by hand (as the agent's refusal asks), so it was canceled as deleted",
        ),
        (11_632, "world: a move to failed_dir whose answer a crash lost (a second case)"),
        (16_418, "world: a move to failed_dir whose answer a crash lost (a third case)"),
        (
            8_171,
            "a file that left its message was written out of it before its letter was made again (two writes): a crash between them sent the draft with a letter naming the file gone",
        ),
        (
            1_549,
            "world: a restore brought back a message the ledger had lost, older than its lost state: the draft that state made was not counted as one a restore took back (nor its upload session as forgotten)",
        ),
        (
            9_701,
            "world: a done record lost with the ledger was overwritten in the oracle's memory by an older one a restore brought back and a later restore took back again: its after-action's move looked unrecorded",
        ),
        (
            107_647,
            "world: a restore took back a message write made in the same millisecond as the backup's (its draft in doubt, may_exist), unnoticed as the oracle compared updated_at only: the draft the lost write asked for counted against it",
        ),
        (
            11_144,
            "world: a message sent by a state the ledger lost, brought back older by a restore (not counted as restored, 1549's cause); without the one-write letter fix the same seed then ends with a restored done record whose attachment the lost state had replaced",
        ),
        (
            672,
            "a hand-sent message found sent while its file moved back from failed_dir: the file was not split off (busy) and stayed pending in a sent message for ever",
        ),
        (
            1_189,
            "a restart inside the move of a draft sent from Outlook: the redraft found it in neither folder, made a new draft and mailed the message twice (draft_gone_at)",
        ),
        (
            1_967,
            "as 1189: a vanished draft drafted again on a guess, the message sent twice",
        ),
        (
            200_256,
            "a draft whose create answer was lost, sent from Outlook (empty) inside that window: found in neither folder, another draft was made under the same marker and sent",
        ),
        (
            101_451,
            "world: the ledger lost while a hand-sent draft was in the move (the Outbox): no key search can see it, the file was mailed twice (a known limit; the world loses no ledger then)",
        ),
        (
            201_039,
            "a failed file of a hand-sent message found sent stayed in its files; retried into a new message, the sent message's claim took it back at the next start and it was collected a third time",
        ),
        (
            200_101,
            "a backup taken between a give-way's message write and its file's: the restored file done on a deleted draft, never searched for (start_gave_way)",
        ),
        (
            116_122,
            "world: the watcher's reports of one path delivered out of order (the agent looks at a path one event at a time); a stale report of the agent's own move into failed_dir canceled the file moved back (reports of a path gone are now looked at again)",
        ),
        (
            17_887,
            "a canceled file with a copy in doubt, split off a message found sent, was put in a batch that never takes a canceled file: it waited for ever (it now ends: its copy looked for in the sent copy)",
        ),
        (
            509_813,
            "a file whose upload session's last piece was in doubt when its draft was sent by hand: collected at once, its look on the old draft answered 404, mailed twice (its session is now closed and its copy looked for in the sent copy)",
        ),
        (
            518_576,
            "start-up dropped a done file's session whose URL was lost, but its message kept the record as read and waited for ever for the session to close (messages now take records as start-up leaves them)",
        ),
        (
            109_547,
            "a copy in doubt on a draft sent from Outlook with it, canceled meanwhile: the look's 404 on the draft was taken for 'nothing there', and a retry mailed the file again (the message now looks for its draft: draft_vanished)",
        ),
        (
            101_702,
            "a settle check of a path whose stat was already out for a report of it gone was never marked as asked: the machine woke at once, for ever (livelock)",
        ),
        (
            23_419,
            "prune took a canceled entry whose upload session's delete was throttled (Retry-After three minutes): the session was left open on the item for good (an entry with work left is never pruned: prune::Entry::work_left); also 25945, 66203, 77392, 99028",
        ),
        (
            1_084_322,
            "prune took a done entry the running machine still indexed; the same bytes dropped again at its path were taken for its version (UpdateFile of a record no longer there): recorded nowhere (the machine is told what was pruned: Input::Pruned); also 1087124, 1141332",
        ),
        (
            45_635,
            "the tenant's size limit: a message whose send was in doubt, retried, its draft still a draft, its re-send refused for its size, stayed unconfirmed for good and its files' moves waited on it (a size refusal of a draft still a draft now fails it for its size, and retry splits it; also 21923, 53203, 60340)",
        ),
        (
            1_019_742,
            "two copies in doubt on a draft sent from Outlook: the first look's 404 made the message look for its draft; the second, answered meanwhile, was taken for a draft gone for good and its copy mailed again (it now waits for the message's answer too)",
        ),
        (
            313_775,
            "the report of a retried file's move into failed_dir came after its move back: the file was canceled, never attached (gone_confirmed)",
        ),
        (
            2249,
            "prune (the agent's rule, now the core's prune::choose) took the record of a file that had failed out of a message still at work; at the next start the message waited for a file with no record (first seen at seed 35 of the world before the periodic prunes); an entry a message not over names is kept (prune::held)",
        ),
        (3494, "as 2249: the message's letter named a file it no longer carried"),
        (
            4750,
            "the world: the executor's read through the core's reader took two empty versions for one (no bytes to tell apart, where the simulation's hashes do), a retried older empty version was attached as the newer; an empty POST body is checked by its hash",
        ),
    ];

    fn replay(seed: u64) -> Result<(), String> {
        Sim::new(seed).run().map_err(|v| {
            format!(
                "seed {} broke an invariant at step {}: {}\n{}\nreplay: scripts/simulate --seed {} --trace",
                v.seed,
                v.step,
                v.what,
                v.log_tail.join("\n"),
                v.seed
            )
        })
    }

    #[test]
    fn every_seed_that_ever_failed_passes() {
        for (seed, what) in FAILED_ONCE {
            if let Err(e) = replay(*seed) {
                panic!("regression ({what}):\n{e}");
            }
        }
    }

    #[test]
    fn a_short_simulation_finds_no_violation() {
        for seed in 0..1000 {
            if let Err(e) = replay(seed) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn a_seed_replays_exactly() {
        let run = |seed| {
            let mut sim = Sim::new(seed);
            let r = sim.run().is_ok();
            (r, sim.steps, sim.crashes, sim.log.clone())
        };
        assert_eq!(run(4763), run(4763));
    }
}
