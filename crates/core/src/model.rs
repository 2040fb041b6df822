//! The values the state machine speaks in: time, file identities, targets, the persisted record
//! of one file version, and the closed sets of inputs and actions. Plain data: no I/O.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Milliseconds on the agent's clock (`clock::Logical`: the wall clock, never backward within a
/// run, caught up after a suspend; a new run may start behind the last). The simulator drives
/// it by hand.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Time(pub u64);

impl Time {
    pub fn plus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }
    pub fn since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Graph's limits, in bytes (SPEC: the size rule).
pub const SESSION_THRESHOLD: u64 = 3 * 1024 * 1024;
pub const MAX_ATTACHMENT: u64 = 150 * 1024 * 1024;
/// The smallest upload session the sandbox accepts (GRAPH.md §0: the measured 2 MiB).
pub const MIN_SESSION: u64 = 2 * 1024 * 1024;
/// Graph's request body limit.
pub const MAX_REQUEST_BODY: u64 = 4 * 1024 * 1024;

/// The kind of Outlook item a mapping attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    #[default]
    Message,
    Event,
}

/// The item an entry's file goes to: mailbox, kind and item id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// `me`, a UPN or a user id.
    pub user: String,
    pub kind: ItemKind,
    pub item_id: String,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            user: "me".to_owned(),
            kind: ItemKind::Message,
            item_id: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    Skip,
    Attach,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    Replace,
    Add,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    Keep,
    Move,
    Delete,
}

/// What the core needs of one `[[mapping]]`. Entries refer to it by `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRule {
    pub name: String,
    /// The item files go to. For a mailing mapping (`mail`), only `user` counts: each message's
    /// draft is the item of its files.
    pub target: Target,
    pub if_exists: IfExists,
    pub on_change: OnChange,
    pub after: After,
    /// `[mapping.new_message]`: what lands here is mailed.
    pub mail: Option<MailRule>,
}

/// A `[mapping.new_message]`, as the core needs it: the templates (validated by the config),
/// the body already read from `body_file`, and how files are grouped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailRule {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    /// Templates: placeholders are filled when a message is made (`crate::mail`).
    pub subject: String,
    pub body: String,
    pub html: bool,
    /// `group = "batch"`: the files that settle within `batch_quiet_ms` of each other go in
    /// one message; else one message per file.
    pub batch: bool,
    pub batch_quiet_ms: u64,
    /// A batch closes this long after it opened however often files arrive (at least
    /// `batch_quiet_ms`); 0: no such limit (the config always sets one).
    pub batch_max_wait_ms: u64,
    /// `false`: leave the draft, fully attached, unsent.
    pub send: bool,
    /// The tenant's message size limit (transport bytes, base64 counted).
    pub max_message_size: u64,
    /// At most this many messages made per `max_messages_window_ms` (0: no cap); beyond it the
    /// files wait for the window.
    pub max_messages: u32,
    pub max_messages_window_ms: u64,
    /// The mapping's folder: a file's key names its path under it (the same on every machine
    /// that syncs the folder).
    pub folder: PathBuf,
    /// `agent.remember_sent`: how far back the mailbox is searched for a file's key before it
    /// is mailed (the mailbox as the record of last resort); 0: no search (`outbox mail`).
    pub remember_sent_ms: u64,
    /// A message that fails has its draft deleted (`outbox mail`: no ledger keeps it for a
    /// `retry`), unless a send of it may have happened.
    pub delete_failed_draft: bool,
}

/// Timing and limits (from `[agent]`), in milliseconds and counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub settle_ms: u64,
    pub settle_after_close_ms: u64,
    pub max_settle_ms: u64,
    /// Entries uploading at once per mailbox.
    pub concurrency: usize,
    pub chunk_size: u64,
    /// Ambiguous failures (5xx, timeouts, drops) of one entry in a row before it is failed;
    /// 0: never give up (the agent: a transient fault is retried with backoff for as long as
    /// it lasts). `run --once` sets a bound.
    pub max_attempts: u32,
    /// Upload sessions that may die (or misbehave) for one entry before it is failed.
    pub max_sessions: u32,
    /// Pause after a sign-in problem before trying again.
    pub sign_in_pause_ms: u64,
    /// Files hashed at once.
    pub hash_workers: usize,
    /// Settled files checked per wake-up.
    pub stat_batch: usize,
    /// How long after an effect whose answer was lost the item is looked at: a request cut off
    /// (a timeout, a crash) may still be processed by the server for a while.
    pub look_after_ms: u64,
    /// Messages sent per mailbox within `send_window_ms` (Exchange's sending limit); 0: no
    /// pacing.
    pub sends_per_window: u32,
    pub send_window_ms: u64,
    /// The day `{date}` names in a message made at a time (UTC offset of the user, in ms).
    pub utc_offset_ms: i64,
    /// The mappings (by name) with a `failed_dir`: a version of theirs that fails is moved
    /// there (`Action::ToFailedDir`) and the record says where. (A mapping's setting, kept
    /// here beside the other settings the executor hands over at start and on a reload.)
    pub failed_dirs: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            settle_ms: 2_000,
            settle_after_close_ms: 1_000,
            max_settle_ms: 600_000,
            concurrency: 4,
            chunk_size: 3840 * 1024,
            max_attempts: 0,
            max_sessions: 3,
            sign_in_pause_ms: 30_000,
            hash_workers: 4,
            stat_batch: 1024,
            look_after_ms: 120_000,
            sends_per_window: 30,
            send_window_ms: 60_000,
            utc_offset_ms: 0,
            failed_dirs: Vec::new(),
        }
    }
}

/// Which file a path named when it was looked at: device, inode, size and modification time.
/// A file is hashed, sent and moved only while its descriptor still shows this identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    /// Status-change time: moves on every write and on `touch -r`, and cannot be set back, so
    /// a rewrite at the same size with the time put back is still seen.
    #[serde(default)]
    pub ctime_ns: i64,
    /// The file's owner (Unix uid); `None` where the platform has none, and in records from
    /// before owners were kept. A version replaces an earlier one only when both have the same
    /// owner ([`FileStat::same_owner`]): a neighbour's same-name file in a shared folder is
    /// added beside the user's, never taking its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
}

impl FileStat {
    /// Whether a version of `self`'s file may replace one of `other`'s: the same owner, or an
    /// owner not known on either side (a record from before owners were kept, a platform
    /// without them), which is replaced as before.
    pub fn same_owner(&self, other: &FileStat) -> bool {
        match (self.owner, other.owner) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// What a record keeps of a file that left its folder (moved or deleted by the
    /// after-action, or reported gone): no identity (device, inode and ctime 0), so a file at
    /// its path later is never taken for it.
    pub fn left(self) -> FileStat {
        FileStat {
            dev: 0,
            ino: 0,
            ctime_ns: 0,
            ..self
        }
    }

    pub fn has_left(&self) -> bool {
        self.dev == 0 && self.ino == 0 && self.ctime_ns == 0
    }

    /// Another file than the one `self` describes, though the bytes may be the same: it left
    /// (see `left`), or the file at the path has another inode and another ctime (copied or
    /// renamed in). A touch keeps the inode; a rescan of an unchanged file keeps both (inode
    /// numbers some network filesystems do not keep are not enough alone).
    pub fn other_file(&self, now: &FileStat) -> bool {
        self.has_left() || (self.ino != now.ino && self.ctime_ns != now.ctime_ns)
    }
}

/// The states SPEC names (`outbox status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Uploading,
    Done,
    Failed,
    Rejected,
    Canceled,
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Done | State::Failed | State::Rejected | State::Canceled
        )
    }
}

/// Why an entry failed or was rejected: Graph's code (or one of ours) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Failure {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// What is persisted of an open upload session. Its URL (a secret) lives in the session store,
/// keyed by the entry id; the core only knows that one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SessionMark {
    /// Bytes `0..sent_end` may have reached the server (written before each chunk is sent):
    /// an offset the server reports beyond it is a protocol violation.
    pub sent_end: u64,
    /// The session misbehaved or is no longer wanted: delete it, do not send to it.
    #[serde(default)]
    pub abandoned: bool,
}

/// A path as stored (the ledger's JSON): the string it is when it is valid Unicode (every
/// ledger written before stays readable as is), else `{"bytes_hex": "…"}`, its exact bytes (Unix
/// paths are bytes: a scanner or an SMB share makes names that are not UTF-8), or on Windows
/// `{"wide_hex": "…"}`, its UTF-16 units big-endian. Lossless both ways; for `#[serde(with)]`.
pub mod path_bytes {
    use serde::de::{self, MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};
    use std::fmt;
    use std::path::{Path, PathBuf};

    /// The key of a Unix path's bytes.
    pub const BYTES_KEY: &str = "bytes_hex";
    /// The key of a Windows path's UTF-16 units.
    pub const WIDE_KEY: &str = "wide_hex";

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        if let Some(text) = path.to_str() {
            return s.serialize_str(text);
        }
        let (key, value) = raw(path);
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(key, &value)?;
        map.end()
    }

    /// The key and hex of a path that is not valid Unicode.
    #[cfg(unix)]
    pub fn raw(path: &Path) -> (&'static str, String) {
        use std::os::unix::ffi::OsStrExt;
        (BYTES_KEY, hex::encode(path.as_os_str().as_bytes()))
    }

    #[cfg(windows)]
    pub fn raw(path: &Path) -> (&'static str, String) {
        use std::os::windows::ffi::OsStrExt;
        let bytes: Vec<u8> = path
            .as_os_str()
            .encode_wide()
            .flat_map(u16::to_be_bytes)
            .collect();
        (WIDE_KEY, hex::encode(bytes))
    }

    #[cfg(not(any(unix, windows)))]
    pub fn raw(path: &Path) -> (&'static str, String) {
        (BYTES_KEY, hex::encode(path.to_string_lossy().as_bytes()))
    }

    #[cfg(unix)]
    fn from_raw(key: &str, bytes: Vec<u8>) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        (key == BYTES_KEY).then(|| PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }

    #[cfg(windows)]
    fn from_raw(key: &str, bytes: Vec<u8>) -> Option<PathBuf> {
        use std::os::windows::ffi::OsStringExt;
        if key != WIDE_KEY || !bytes.len().is_multiple_of(2) {
            return None;
        }
        let wide: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        Some(PathBuf::from(std::ffi::OsString::from_wide(&wide)))
    }

    #[cfg(not(any(unix, windows)))]
    fn from_raw(key: &str, bytes: Vec<u8>) -> Option<PathBuf> {
        (key == BYTES_KEY).then(|| PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        d.deserialize_any(PathVisitor)
    }

    struct PathVisitor;

    impl<'de> Visitor<'de> for PathVisitor {
        type Value = PathBuf;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a path: a string, or {{\"{BYTES_KEY}\": …}}")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<PathBuf, E> {
            Ok(PathBuf::from(v))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<PathBuf, E> {
            Ok(PathBuf::from(v))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PathBuf, A::Error> {
            let Some((key, value)) = map.next_entry::<String, String>()? else {
                return Err(de::Error::custom("an empty path"));
            };
            let bytes =
                hex::decode(&value).map_err(|e| de::Error::custom(format!("path {key}: {e}")))?;
            from_raw(&key, bytes).ok_or_else(|| {
                de::Error::custom(format!("a path as `{key}` is not one this platform reads"))
            })
        }
    }

    /// The same for an `Option<PathBuf>` (`null` when there is none).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::path::PathBuf;

        pub fn serialize<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
            match path {
                Some(p) => super::serialize(p, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
            #[derive(Deserialize)]
            struct P(#[serde(with = "super")] PathBuf);
            Ok(Option::<P>::deserialize(d)?.map(|p| p.0))
        }
    }
}

/// An attachment of an older version to delete once this version is on the item
/// (`on_change = "replace"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    /// The entry whose attachment it is (marked replaced once it is deleted).
    pub entry: String,
    pub attachment_id: String,
}

/// One version of one file (mapping + path + size + SHA-256), as persisted. Recovery after a
/// crash is a function of these records alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub mapping: String,
    #[serde(with = "path_bytes")]
    pub path: PathBuf,
    /// Attachment name on the item.
    pub name: String,
    pub file: FileStat,
    pub sha256: Option<String>,
    pub state: State,
    /// The item this version is bound to: set at its first effect (and kept while the
    /// attachment may exist or exists); `None` = the mapping's current target.
    pub target: Option<Target>,
    /// An effect that can create the attachment (a POST, a session's last chunk) was sent and
    /// its answer is not known: look on the item before sending anything again. Cleared only by
    /// `done` or by a look that found nothing.
    pub may_exist: bool,
    /// When that effect was sent: the look waits until no request of it can still be on its
    /// way (`Policy::look_after_ms`), or it could miss what lands after it.
    #[serde(default)]
    pub effect_at: Option<Time>,
    pub session: Option<SessionMark>,
    pub bytes_sent: u64,
    pub attachment_id: Option<String>,
    /// Ambiguous failures in a row.
    pub attempts: u32,
    /// Upload sessions lost or abandoned.
    pub restarts: u32,
    pub error: Option<Failure>,
    /// `cancel` asked while an effect was in flight: settle what happened, then cancel.
    pub cancel_requested: bool,
    /// The after-action (move/delete) has been carried out, or there is none.
    pub after_done: bool,
    /// The after-action failed (shown on the row; not tried again by itself: `retry` of the
    /// entry runs it again).
    #[serde(default)]
    pub after_failed: bool,
    /// A newer version of the path replaced this one's attachment, which was deleted.
    #[serde(default)]
    pub replaced: bool,
    /// Attachments this entry made that must not stay (a 201 before the last byte): deleted
    /// before anything else.
    #[serde(default)]
    pub garbage: Vec<String>,
    /// Older versions' attachments to delete now that this one is on the item.
    #[serde(default)]
    pub replaces: Vec<Replaced>,
    /// The message it is mailed in (a mailing mapping), once its message is made.
    #[serde(default)]
    pub message: Option<String>,
    /// A file of a mailing mapping that is mailed without first searching the mailbox for its
    /// key: the ledger knows these bytes were mailed from this path and they were dropped again
    /// (a new request), or `retry` asked for it.
    #[serde(default)]
    pub mail_again: bool,
    /// `outbox retry --resend`: this done file of a mailing mapping is to be mailed again, on
    /// purpose. The core takes the request (clears it, persisted first: a crash loses the
    /// request, never doubles it) and mails a new version of the file, without a search.
    #[serde(default)]
    pub resend: bool,
    /// The message it left when that message's draft was sent from Outlook (or by a lost
    /// later ledger) without it being done there: found in that message's sent copy, it went
    /// there (not a new drop of its bytes, whatever else is done at its path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_message: Option<String>,
    /// Earlier versions of the path on the same item that this one did not replace because
    /// their files had another owner (`FileStat::owner`): both attachments stay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beside: Vec<String>,
    /// Where this failed version's file was moved (`Action::ToFailedDir`: the mapping's
    /// `failed_dir`, its reason file beside it). A retry takes it back to `path` first
    /// (`Action::FromFailedDir`), or fails saying why; cleared once it is back.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "path_bytes::option"
    )]
    pub failed_to: Option<PathBuf>,
    /// Its move into `failed_dir` was asked and not answered (set before the move is asked,
    /// cleared by its answer): after a crash the file may be at its path or in `failed_dir`,
    /// so the move is asked again at start, and the executor finds it there if it went.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed_dir_asked: bool,
    /// `outbox verify` read this done version's attachment back and found it wrong or missing:
    /// `retry` attaches the file again (and clears this). A done version without it has
    /// nothing for `retry` to attach again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify_failed: bool,
    /// Insertion order among all records (orders the versions of one path).
    pub seq: u64,
    pub created_at: Time,
    pub updated_at: Time,
}

impl Record {
    /// A new version, pending, with nothing sent and nothing known of the item yet.
    #[allow(clippy::too_many_arguments)]
    pub fn pending(
        id: String,
        mapping: String,
        path: PathBuf,
        name: String,
        file: FileStat,
        sha256: Option<String>,
        seq: u64,
        now: Time,
    ) -> Record {
        Record {
            id,
            mapping,
            path,
            name,
            file,
            sha256,
            state: State::Pending,
            target: None,
            may_exist: false,
            effect_at: None,
            session: None,
            bytes_sent: 0,
            attachment_id: None,
            attempts: 0,
            restarts: 0,
            error: None,
            cancel_requested: false,
            after_done: false,
            after_failed: false,
            replaced: false,
            garbage: Vec::new(),
            replaces: Vec::new(),
            message: None,
            mail_again: false,
            resend: false,
            left_message: None,
            beside: Vec::new(),
            failed_to: None,
            failed_dir_asked: false,
            verify_failed: false,
            seq,
            created_at: now,
            updated_at: now,
        }
    }

    /// `retry` of this version, as persisted: the one rule for the machine's `retry` and the
    /// offline `outbox retry` (no agent running; the next start carries on from what it wrote).
    /// A failed, canceled or (retried by request) rejected version goes back to pending, its
    /// count of attempts and its error cleared. A done one redoes what went wrong: its failed
    /// after-action; or else its attachment (which `verify` found wrong or missing): attached
    /// again from the file, then the recorded attachment deleted (as `replaces`, the way an
    /// older version's goes), ending with one good copy. Its item stays on record: whether the
    /// version is still bound to it is the machine's to say from the rest (an upload that
    /// cannot be on it goes to the mapping's item as the config names it then).
    pub fn retried(&mut self, now: Time) -> Retried {
        match self.state {
            State::Failed | State::Canceled | State::Rejected => {}
            State::Done if self.after_failed => {
                self.after_done = false;
                self.after_failed = false;
                self.error = None;
                self.updated_at = now;
                return Retried::After;
            }
            // Not found wrong by `verify`: its attachment is as sent, nothing to attach again.
            State::Done if !self.verify_failed => return Retried::Nothing,
            State::Done => {
                let Some(bad) = self.attachment_id.take() else {
                    return Retried::Nothing;
                };
                self.verify_failed = false;
                self.replaces.push(Replaced {
                    entry: self.id.clone(),
                    attachment_id: bad,
                });
                self.may_exist = false;
                self.bytes_sent = 0;
            }
            State::Pending | State::Uploading => return Retried::Nothing,
        }
        self.state = State::Pending;
        self.attempts = 0;
        self.restarts = 0;
        self.error = None;
        self.cancel_requested = false;
        self.updated_at = now;
        Retried::Queued
    }
}

/// What [`Record::retried`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// Back in the queue (pending): sent again from its file, or attached again.
    Queued,
    /// Still done; its after-action (move or delete) is to be carried out again.
    After,
    /// Nothing to retry (in flight, or done with no attachment on record): left as it was.
    Nothing,
}

/// The states of a message (SPEC: Sending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Its draft is being made (or found again by its marker).
    Drafting,
    /// The draft exists; its files are being attached.
    Attaching,
    /// Every file is on the draft; the send is due, in flight or being confirmed.
    Sending,
    Sent,
    /// `send = false`: left as a draft, fully attached.
    Drafted,
    Failed,
    /// A send whose outcome could not be told: never sent again by itself; `retry` sends it
    /// only if the draft is still a draft.
    Unconfirmed,
}

impl MessageState {
    /// The name `status` shows (and `--state` takes).
    pub fn name(self) -> &'static str {
        match self {
            MessageState::Drafting => "drafting",
            MessageState::Attaching => "attaching",
            MessageState::Sending => "sending",
            MessageState::Sent => "sent",
            MessageState::Drafted => "drafted",
            MessageState::Failed => "failed",
            MessageState::Unconfirmed => "unconfirmed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MessageState::Sent
                | MessageState::Drafted
                | MessageState::Failed
                | MessageState::Unconfirmed
        )
    }
}

/// What a message says: recipients, subject, body (templates already filled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Letter {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: String,
    pub body: String,
    pub html: bool,
}

/// One message of a mailing mapping (or `outbox mail`), as persisted. Its id is also the
/// marker its draft carries, so the draft and the sent copy can be found again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: String,
    pub mapping: String,
    /// The mailbox.
    pub user: String,
    pub letter: Letter,
    /// The entries (file versions) it carries, in order. Fixed when the message is made; a
    /// newer version of one of its files takes that file's place while it is not yet sent.
    pub files: Vec<String>,
    /// `false`: stop at `Drafted`.
    pub send: bool,
    pub state: MessageState,
    pub draft_id: Option<String>,
    /// A draft may have been created (the answer was lost): find it by the marker before
    /// creating another. Cleared when found or when a search after `effect_at` found none.
    pub may_exist: bool,
    pub effect_at: Option<Time>,
    /// A send was started at this time and its outcome is not known: confirm it in Sent Items
    /// by the marker; never send again by itself.
    pub send_at: Option<Time>,
    /// `retry` of an unconfirmed message: send only if the draft is still a draft.
    #[serde(default)]
    pub resend_if_draft: bool,
    /// When the last send that may have happened was started (kept through `unconfirmed` and
    /// `retry`): no second send before Exchange's move to Sent Items has surely had time. Also
    /// the persisted fact that a send may ever have happened (see `may_have_been_sent`).
    #[serde(default)]
    pub last_send_at: Option<Time>,
    /// `retry` of a message never sent that has a draft: the draft may be gone (deleted by
    /// hand), so it is looked for by its marker first, in Sent Items (sent by hand: `sent`), then
    /// in Drafts (there: it goes on with it); in neither: looked for again once Exchange's move
    /// has surely had time (`draft_gone_at`), then, still in neither, a new draft, and its files
    /// attached to it.
    #[serde(default)]
    pub redraft: bool,
    /// When its draft, looked for again (`redraft`), was in neither Sent Items nor Drafts:
    /// sent from Outlook and in Exchange's move (the Outbox, not searched), or deleted by hand.
    /// Sent Items is asked again `move_grace_ms` after this before a new draft is made (a new
    /// draft on a guess would mail its files twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_gone_at: Option<Time>,
    pub internet_message_id: Option<String>,
    pub sent_at: Option<Time>,
    /// Accepted for sending (a 202) but its copy not yet seen in Sent Items: its files'
    /// after-actions (move, delete) wait for the copy (SPEC §8, "delivered means seen").
    #[serde(default)]
    pub unseen: bool,
    /// Its marker is an idempotency key (`outbox mail --key`): a copy found sent is this
    /// message, whole (its files are not split off into another); a draft found carrying it
    /// may have been sent by an earlier run, so it is sent only once Exchange's move has surely
    /// had time and it is still a draft.
    #[serde(default)]
    pub keyed: bool,
    /// The file keys stamped on its draft (at its creation, or set again when a file's newer
    /// version took an older one's place): the send waits until they are its files' keys.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Which part of its batch it is, `(k, n)`, `k` from 0 (a batch split to fit
    /// `max_message_size`: its subject ends `(k/n)`); `None`: the whole batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<(u32, u32)>,
    /// Its letter was made again after its draft was created (a file left it): the draft's
    /// subject and body are set (`Action::SetLetter`) before it is sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub letter_stale: bool,
    /// Nothing of it before this time: a throttled send's `Retry-After` (or the sending limit's
    /// backoff), kept through a restart, which would otherwise send again at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,
    /// `retry` of a message Graph refused for its size (`refused_for_size`), never sent: it is
    /// not sent as it was. Its draft is deleted and its files are made into new messages under
    /// `max_message_size` as it is now and under the size refused (`Machine::resplit`); it
    /// ends `failed` with [`crate::machine::SPLIT_AGAIN`], holding no file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resplit: bool,
    /// Failures in a row of its own requests (not its files').
    pub attempts: u32,
    pub error: Option<Failure>,
    pub seq: u64,
    pub created_at: Time,
    pub updated_at: Time,
}

/// Where a message is looked for by its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailFolder {
    Drafts,
    SentItems,
    /// The whole mailbox (the Outbox too, where a message Exchange is sending sits between
    /// Drafts and Sent Items).
    Anywhere,
}

/// The result of reading a file through its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashResult {
    Hashed {
        sha256: String,
        stat: FileStat,
    },
    /// It is not the file that settled (identity or size changed): settle it again.
    Changed,
    /// The path no longer names a regular file beneath the folder.
    Gone,
    /// Unreadable (permissions, I/O): the entry fails with this.
    Unreadable(Failure),
    /// Read and hashed, but a file the mapping does not send (a hard link: more than one name,
    /// which may make it a file from outside the folder): the same bytes as the version on
    /// record are no new version and stay as they are (a link made elsewhere to a done file
    /// moves its ctime, nothing else); any other version fails with `failure`, nothing sent.
    Refused {
        sha256: String,
        stat: FileStat,
        failure: Failure,
    },
}

/// How a request ended, as the core needs to know it. The graph layer classifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 / 503 with Retry-After: the request was not taken; the same request is due after
    /// the wait.
    Throttled { retry_after_ms: Option<u64> },
    /// A dropped connection, a timeout, a 5xx: the request may or may not have taken effect.
    Ambiguous(Failure),
    /// The server could not be reached at all (connect refused, DNS, identity platform down):
    /// nothing was taken; does not use up attempts.
    Unreachable(Failure),
    /// No token, refresh refused, a claims challenge: pause until sign-in.
    SignIn(Failure),
    /// 400/403/404 and the like: stop this entry with Graph's answer.
    Permanent(Failure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    Created {
        attachment_id: String,
    },
    /// The bytes read now do not hash to the entry's SHA-256: nothing was sent.
    Changed,
    /// The file is gone or unreadable: nothing was sent.
    FileGone,
    /// 413, or 400 "maximum request length": nothing was taken; use a session.
    TooLarge,
    Failed(Fault),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutcome {
    /// The URL is saved in the session store; the server expects `next` first.
    Created {
        next: u64,
    },
    Failed(Fault),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// 200 with `nextExpectedRanges`: the next byte the server wants (`None`: unparsable).
    Accepted {
        next: Option<u64>,
    },
    /// 201: the attachment exists; `attachment_id` from `Location` when it had one.
    Completed {
        attachment_id: Option<String>,
    },
    /// The bytes read do not hash to the entry's SHA-256 (checked before the last chunk):
    /// the last chunk was not sent.
    Changed,
    FileGone,
    /// 401/403/404 on the upload URL: the session is dead.
    SessionGone,
    /// 416: the range was not the one the server expected.
    RangeRefused,
    Failed(Fault),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AskOutcome {
    /// The session lives and wants `next` first (`None`: it answered without ranges).
    Next(Option<u64>),
    /// 404 and the like: the session is gone (completed, expired or deleted). The URL file is
    /// removed by the executor.
    Gone,
    Failed(Fault),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookOutcome {
    /// An attachment of this name whose bytes hash to the entry's SHA-256.
    Found { attachment_id: String },
    /// The whole listing was read and no such attachment is there.
    NotFound,
    /// The look could not finish (a cut listing is this, never `NotFound`).
    Failed(Fault),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Deleted, or already gone.
    Deleted,
    Failed(Fault),
}

/// What moving a file into or out of `failed_dir` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveOutcome {
    /// Moved: where it is now, and its stat there (a rename moves its ctime).
    Moved { to: PathBuf, file: FileStat },
    /// Not moved (not that version any more, nothing there, a name taken, an I/O error):
    /// why, in a sentence.
    Refused(Failure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterOutcome {
    Done,
    /// The file at the path is not the one sent (identity or bytes differ): left alone.
    NotTheSameFile,
    Failed(Failure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftOutcome {
    Created {
        draft_id: String,
        internet_message_id: Option<String>,
    },
    Failed(Fault),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindOutcome {
    /// A message carrying the marker (a sent copy is preferred over a draft).
    Found {
        id: String,
        is_draft: bool,
        internet_message_id: Option<String>,
    },
    /// The whole listing was read and none carries it.
    NotFound,
    Failed(Fault),
}

/// A draft carrying a file's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftHolding {
    pub message_id: String,
    /// Its marker, as the listing showed it.
    pub marker: Option<String>,
    /// The marker names a message this ledger has on record (the executor looks): no holder.
    pub ours: bool,
    pub subject: String,
    /// Its `createdDateTime` (ms since the epoch, as Graph gave it; `None`: not given or not
    /// readable): of two agents' drafts holding one key, the older is sent (SPEC 8).
    pub created: Option<Time>,
}

/// What the mailbox holds of one file's key, as the check before a send sees it: the latest
/// sent copy carrying it with an attachment of the file's name (a `KeyOutcome::Mailed`), and
/// every draft carrying it (this message's own among them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolders {
    pub sent: Option<KeyOutcome>,
    pub drafts: Vec<DraftHolding>,
}

/// The answer to `Action::FindRivals`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RivalsOutcome {
    /// `own_created`: the `createdDateTime` of the message's own draft (read by its id);
    /// `found`: each key's holders, in the order of the action's `files`.
    Checked {
        own_created: Option<Time>,
        found: Vec<KeyHolders>,
    },
    Failed(Fault),
}

/// What the mailbox holds of a file's key (SPEC: the mailbox is the record of last resort).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// A sent copy within `remember_sent` carries the key and an attachment of the file's
    /// name: it was mailed (by a ledger since lost, or by another agent).
    Mailed {
        message_id: String,
        internet_message_id: Option<String>,
        attachment_id: String,
        /// Its marker, as the listing showed it.
        marker: Option<String>,
        /// Its marker names a message this ledger has on record (the executor looks): the
        /// ledger knows it mailed these bytes from this path, so this file is a new drop.
        ours: bool,
    },
    /// The drafts that carry it (every page read; none: neither folder holds it). One that
    /// is not this agent's (another agent mailing it, or one a lost state dir left) holds the
    /// file: it is not sent.
    Drafted(Vec<DraftHolding>),
    Failed(Fault),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListOutcome {
    /// The ids of every attachment on the draft (the whole listing).
    Listed(Vec<String>),
    Failed(Fault),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// 202: accepted for sending.
    Sent,
    Failed(Fault),
}

/// A remote step's answer for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Post(PostOutcome),
    CreateSession(SessionOutcome),
    Chunk(ChunkOutcome),
    Ask(AskOutcome),
    Look(LookOutcome),
    DeleteSession(DeleteOutcome),
    DeleteAttachment(DeleteOutcome),
    After(AfterOutcome),
    ToFailedDir(MoveOutcome),
    FromFailedDir(MoveOutcome),
    // A message's steps (the id is the message's).
    CreateDraft(DraftOutcome),
    Find(MailFolder, FindOutcome),
    /// A file's key searched for in the mailbox.
    Key(KeyOutcome),
    /// A draft's file keys set again: `Ok` (200), or how it failed.
    StampKeys(Result<(), Fault>),
    /// The mailbox searched for other messages holding a draft's keys (before its send).
    Rivals(RivalsOutcome),
    /// A draft the agent abandoned, deleted (or already gone: a 404 is `Deleted`).
    DeleteDraft(DeleteOutcome),
    /// A draft's subject and body set again: `Ok` (200), or how it failed.
    SetLetter(Result<(), Fault>),
    ListDraft(ListOutcome),
    Send(SendOutcome),
}

impl Outcome {
    /// The fault of a step that failed (whatever the step).
    pub fn fault(&self) -> Option<&Fault> {
        match self {
            Outcome::Post(PostOutcome::Failed(f))
            | Outcome::CreateSession(SessionOutcome::Failed(f))
            | Outcome::Chunk(ChunkOutcome::Failed(f))
            | Outcome::Ask(AskOutcome::Failed(f))
            | Outcome::Look(LookOutcome::Failed(f))
            | Outcome::DeleteSession(DeleteOutcome::Failed(f))
            | Outcome::DeleteAttachment(DeleteOutcome::Failed(f))
            | Outcome::CreateDraft(DraftOutcome::Failed(f))
            | Outcome::Find(_, FindOutcome::Failed(f))
            | Outcome::Key(KeyOutcome::Failed(f))
            | Outcome::StampKeys(Err(f))
            | Outcome::Rivals(RivalsOutcome::Failed(f))
            | Outcome::DeleteDraft(DeleteOutcome::Failed(f))
            | Outcome::SetLetter(Err(f))
            | Outcome::ListDraft(ListOutcome::Failed(f))
            | Outcome::Send(SendOutcome::Failed(f)) => Some(f),
            _ => None,
        }
    }
}

impl MessageRecord {
    /// Whether a send of it may ever have happened (in this run or an earlier one): then its
    /// draft is never replaced by a new one, and it is sent again only if the draft is still a
    /// draft. (An unconfirmed message counts whatever it says: a ledger older than
    /// `last_send_at` has none.)
    pub fn may_have_been_sent(&self) -> bool {
        self.last_send_at.is_some()
            || self.send_at.is_some()
            || self.resend_if_draft
            || self.state == MessageState::Unconfirmed
    }

    /// `retry` of a failed or unconfirmed message, as persisted (the machine's `retry`, and the
    /// offline `outbox retry` that the next start carries on from): a failed one goes on from
    /// where it stopped (a never-sent one with a draft looks for its draft first, see
    /// `redraft`); an unconfirmed one is sent only if its draft is still a draft.
    pub fn retried(&mut self) {
        match self.state {
            MessageState::Failed if self.refused_for_size() && !self.may_have_been_sent() => {
                // Sent as it was, it would be refused again: made into new messages that fit.
                // Its draft (one attachment refused, the others on it) is looked for first: sent
                // from Outlook since, it went, and its files on it are not mailed again.
                self.state = MessageState::Drafting;
                self.resplit = true;
                self.redraft = self.draft_id.is_some();
            }
            MessageState::Failed => {
                if self.draft_id.is_some() && !self.may_have_been_sent() {
                    self.state = MessageState::Drafting;
                    self.redraft = true;
                } else if self.draft_id.is_some() {
                    self.state = MessageState::Attaching;
                } else {
                    self.state = MessageState::Drafting;
                }
            }
            MessageState::Unconfirmed => {
                self.state = MessageState::Sending;
                self.resend_if_draft = true;
                self.send_at = None;
            }
            _ => return,
        }
        self.error = None;
        self.attempts = 0;
    }

    /// `retry` as [`MessageRecord::retried`], told whether files of it are retried with it
    /// (`again`: one missing from its draft, taken off it in Outlook, or one not done): an
    /// unconfirmed one with a draft attaches them first, then looks (Sent Items, Drafts) before
    /// its send, as `resend_if_draft` says. The one rule for the agent and the offline `retry`.
    pub fn retried_with(&mut self, again: bool) {
        let reattach = self.state == MessageState::Unconfirmed && self.draft_id.is_some() && again;
        self.retried();
        if reattach {
            self.state = MessageState::Attaching;
        }
    }

    /// A new message, drafting, with nothing of it on the server yet.
    #[allow(clippy::too_many_arguments)]
    pub fn drafting(
        id: String,
        mapping: String,
        user: String,
        letter: Letter,
        files: Vec<String>,
        send: bool,
        seq: u64,
        now: Time,
    ) -> MessageRecord {
        MessageRecord {
            id,
            mapping,
            user,
            letter,
            files,
            send,
            state: MessageState::Drafting,
            draft_id: None,
            may_exist: false,
            effect_at: None,
            send_at: None,
            resend_if_draft: false,
            last_send_at: None,
            redraft: false,
            draft_gone_at: None,
            internet_message_id: None,
            sent_at: None,
            unseen: false,
            keyed: false,
            keys: Vec::new(),
            part: None,
            letter_stale: false,
            not_before: None,
            resplit: false,
            attempts: 0,
            error: None,
            seq,
            created_at: now,
            updated_at: now,
        }
    }

    /// Graph refused it for its size: its send, or an attachment of a file of it, answered
    /// `ErrorMessageSizeExceeded` (GRAPH.md §13, "Size").
    pub fn refused_for_size(&self) -> bool {
        self.error
            .as_ref()
            .is_some_and(|e| e.code == "ErrorMessageSizeExceeded")
    }

    /// It has work left: not in a final state, sent with its copy not yet seen, or failed with
    /// an abandoned draft still to delete.
    pub fn at_work(&self) -> bool {
        !self.state.is_terminal() || self.unseen || self.draft_abandoned()
    }

    /// Its draft is abandoned and is to be deleted (SPEC 8: "a draft the agent abandons is
    /// deleted"): the message failed because none of its files is left on it to send
    /// (`noFilesLeft`), because another message in the mailbox mails them
    /// (`mailedElsewhere`), or because its files were made into new messages after Graph refused
    /// it for its size (`splitAgain`), and no send of it may ever have happened.
    pub fn draft_abandoned(&self) -> bool {
        self.state == MessageState::Failed
            && self.draft_id.is_some()
            && !self.may_have_been_sent()
            && self.error.as_ref().is_some_and(|e| {
                e.code == crate::machine::NO_FILES_LEFT
                    || e.code == crate::machine::MAILED_ELSEWHERE
                    || e.code == crate::machine::SPLIT_AGAIN
            })
    }

    /// Done with: sent (its copy seen, when that was awaited) or left as a draft.
    pub fn is_over(&self) -> bool {
        matches!(self.state, MessageState::Sent | MessageState::Drafted) && !self.unseen
    }
}

/// Everything that can happen to the agent enters as one of these.
// Inputs live for one call; boxing a message record would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start-up: the ledger's records that are not finished with (every non-terminal one, and
    /// done ones with work left), the newest version of every other path, and which entries
    /// have an upload URL saved.
    Start {
        records: Vec<Record>,
        with_url: Vec<String>,
        /// Messages not finished with (and those sent within the pacing window: their
        /// `last_send_at` counts against it), and the records of all their files (whatever
        /// their state) among `records`.
        messages: Vec<MessageRecord>,
    },
    /// The watcher or a scan saw `path` (a regular file with this stat).
    Observed {
        mapping: String,
        path: PathBuf,
        stat: FileStat,
    },
    /// The platform reported `path` closed after writing.
    Closed {
        path: PathBuf,
    },
    /// `path` is gone (deleted, renamed away).
    Gone {
        mapping: String,
        path: PathBuf,
    },
    /// A mapped folder is missing or unreadable; or back.
    FolderUnavailable {
        mapping: String,
    },
    FolderAvailable {
        mapping: String,
    },
    /// The answer to `Action::Stat`.
    Stat {
        path: PathBuf,
        stat: Option<FileStat>,
    },
    /// The answer to `Action::Hash`.
    Hashed {
        path: PathBuf,
        result: HashResult,
    },
    /// The answer to a remote step of entry `id`.
    Outcome {
        id: String,
        outcome: Outcome,
    },
    /// A wake-up asked for with `Action::WakeAt`.
    Tick,
    /// `cancel ID`.
    Cancel {
        id: String,
    },
    /// Failed or canceled records to put back in the queue (`retry`; or one the machine asked
    /// to revive with `Action::UpdateFile`), read from the ledger by the executor.
    Retry {
        records: Vec<Record>,
    },
    /// `retry` of a failed or unconfirmed message, with the records of all its files (those
    /// failed or canceled are retried with it).
    RetryMessage {
        message: MessageRecord,
        records: Vec<Record>,
    },
    /// The config was reloaded: the mappings and policy now in force.
    Config {
        mappings: Vec<MappingRule>,
        policy: Policy,
    },
    /// These finished entries left the ledger (prune, `core::prune`): forgotten by the machine
    /// too, or a file dropped again at such a path with the same bytes would be taken for a
    /// version whose record is gone (recorded nowhere, and sent again at the next start).
    Pruned {
        ids: Vec<String>,
    },
}

/// Something the executor must carry out. `Persist` is durable (written and flushed) before any
/// action after it is started.
// Actions live for one batch; boxing the record would cost an allocation per write for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stat `path` again (a settle check came due): answer with `Input::Stat`.
    Stat {
        path: PathBuf,
    },
    /// Open `path` once beneath its folder, check it is still `stat`, hash it reading at most
    /// `stat.size` bytes: answer with `Input::Hashed`.
    Hash {
        mapping: String,
        path: PathBuf,
        stat: FileStat,
    },
    /// Write and flush this record.
    Persist(Record),
    /// Attach the whole file in one POST; the body must hash to `sha256` or nothing is sent.
    Post {
        id: String,
        target: Target,
        path: PathBuf,
        name: String,
        file: FileStat,
        sha256: String,
    },
    /// createUploadSession; save the URL (session store) before answering.
    CreateSession {
        id: String,
        target: Target,
        name: String,
        size: u64,
    },
    /// PUT bytes `offset..offset+len` of the file to the saved upload URL. `last`: the
    /// executor checks that all bytes `0..size` it read hash to `sha256` before sending it.
    PutChunk {
        id: String,
        target: Target,
        path: PathBuf,
        file: FileStat,
        sha256: String,
        offset: u64,
        len: u64,
        last: bool,
    },
    /// GET the saved upload URL: where does the session stand?
    AskSession {
        id: String,
        target: Target,
    },
    /// DELETE the saved upload URL (then remove the URL file).
    DeleteSession {
        id: String,
        target: Target,
    },
    /// List the item's attachments named `name` (whole listing) and confirm by bytes.
    Look {
        id: String,
        target: Target,
        name: String,
        sha256: String,
        /// A listing up to a few seconds old will do (`if_exists = "skip"` on a first upload).
        recent_ok: bool,
        /// Attachments it must not adopt: those the other files of its message hold (two files
        /// of one name and the same bytes in one message are two attachments).
        exclude: Vec<String>,
    },
    DeleteAttachment {
        id: String,
        target: Target,
        attachment_id: String,
    },
    /// A failed version's file moves into its mapping's `failed_dir`, with `failure` told in
    /// a reason file beside it, only if the file at `path` is still that version: answer
    /// `Outcome::ToFailedDir` with where it went.
    ToFailedDir {
        id: String,
        mapping: String,
        path: PathBuf,
        file: FileStat,
        failure: Failure,
    },
    /// A retried version's file moves back from `from` (in the mapping's `failed_dir`) to
    /// `path`, only if it is still that version and nothing is at `path`; its reason file
    /// goes: answer `Outcome::FromFailedDir`.
    FromFailedDir {
        id: String,
        mapping: String,
        from: PathBuf,
        path: PathBuf,
        file: FileStat,
    },
    /// Move or delete the file, only if it is still the version that was sent.
    After {
        id: String,
        mapping: String,
        path: PathBuf,
        file: FileStat,
        sha256: String,
        after: After,
    },
    /// Forget the upload URL file of `id` (its session is known to be gone).
    ForgetUrl {
        id: String,
    },
    /// Update a stored record the machine does not hold (a terminal one): its file was seen
    /// again with the same bytes. `revive`: read it back and answer `Input::Retry` with it.
    UpdateFile {
        id: String,
        file: FileStat,
        revive: bool,
    },
    /// The stored record `id`'s attachment was deleted by a newer version: mark it replaced.
    MarkReplaced {
        id: String,
    },
    /// Write and flush this message.
    PersistMessage(MessageRecord),
    /// `POST {mailbox}/messages`: a draft saying `letter`, carrying marker `id` and its files'
    /// keys (see [`file_key`]).
    CreateDraft {
        id: String,
        user: String,
        letter: Letter,
        keys: Vec<String>,
    },
    /// Search Sent Items (copies sent since `since`) and Drafts for a message carrying file
    /// key `key`; a sent copy counts only with an attachment named `name` whose bytes hash to
    /// `sha256` (a draft carries a file's key from its creation, or from the re-stamp before
    /// the send, while its bytes may not be on it yet: a draft sent from Outlook then carries
    /// the key with another version's bytes of that name, or none).
    FindFileKey {
        id: String,
        user: String,
        key: String,
        name: String,
        sha256: String,
        since: Time,
    },
    /// Find the message carrying marker `id` in `folder` (every page); in Sent Items, when
    /// no copy carries the marker, also the one whose `internetMessageId` is
    /// `internet_message_id` (the marker's survival on a sent copy is unconfirmed).
    FindMessage {
        id: String,
        user: String,
        folder: MailFolder,
        internet_message_id: Option<String>,
    },
    /// `PATCH {mailbox}/messages/{draft_id}`: its file keys set to `keys` (message `id`).
    StampKeys {
        id: String,
        user: String,
        draft_id: String,
        keys: Vec<String>,
    },
    /// Before draft `draft_id` of message `id` is sent (or left for review): read its
    /// `createdDateTime` by its id, then search Sent Items (copies sent since `since`) and
    /// Drafts for every one of its files' keys (`files`: key, attachment name, SHA-256), as
    /// `FindFileKey` does: another agent's message holding one of them may be mailing it.
    FindRivals {
        id: String,
        user: String,
        draft_id: String,
        files: Vec<(String, String, String)>,
        since: Time,
    },
    /// `DELETE {mailbox}/messages/{draft_id}`: the draft of message `id`, abandoned (none of
    /// its files is left on it to send, or another message mails them); never one that may
    /// have been sent. A 404 is `Deleted`.
    DeleteDraft {
        id: String,
        user: String,
        draft_id: String,
    },
    /// `PATCH {mailbox}/messages/{draft_id}`: its subject and body set to `letter`'s (the
    /// letter made again after a file left the message).
    SetLetter {
        id: String,
        user: String,
        draft_id: String,
        letter: Letter,
    },
    /// List the attachments of draft `draft_id` (ids, every page): before a send, the draft
    /// must hold its files' attachments and nothing else.
    ListDraft {
        id: String,
        user: String,
        draft_id: String,
    },
    /// `POST {mailbox}/messages/{draft_id}/send`, once the draft, listed again right before
    /// it (after every wait of the executor's), holds exactly the attachments `expect` (the
    /// core's last listing); else no send, answered `Permanent`
    /// [`DRAFT_CHANGED`](crate::machine::DRAFT_CHANGED).
    SendDraft {
        id: String,
        user: String,
        draft_id: String,
        expect: Vec<String>,
    },
    Notify(Note),
    /// Send `Input::Tick` at this time (the latest `WakeAt` wins).
    WakeAt(Time),
}

/// A desktop notification / log line worth a person's attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Attached {
        id: String,
        path: PathBuf,
        /// It replaces the attachment of an earlier version of the same owner's (deleted now).
        replaced: bool,
        /// Earlier versions of another owner's left beside it, not replaced.
        beside: Vec<String>,
        /// Nothing of it was sent: it was found already on the item (a look by its name and
        /// bytes, or this agent's own record of those bytes there), not attached again.
        found: bool,
    },
    /// A file of a mailing mapping found already mailed by its key (a sent copy in the
    /// mailbox): recorded done, not mailed again.
    FoundMailed {
        id: String,
        path: PathBuf,
        internet_message_id: Option<String>,
    },
    Failed {
        id: String,
        path: PathBuf,
        failure: Failure,
    },
    /// `cancel` came after the attachment was made: it stays, recorded done.
    CancelTooLate {
        id: String,
        path: PathBuf,
    },
    StillChanging {
        path: PathBuf,
    },
    SignInNeeded(Failure),
    /// A mailing mapping made `max_messages` messages within its window: `waiting` files wait
    /// until `until`.
    MessagesCapped {
        mapping: String,
        until: Time,
        waiting: usize,
    },
    MessageSent {
        id: String,
        subject: String,
    },
    MessageFailed {
        id: String,
        subject: String,
        failure: Failure,
    },
    /// A message gave way to another message in the mailbox holding its files' keys (another
    /// agent on the same folder): its draft is deleted, its files mailed once by the other.
    MessageGaveWay {
        id: String,
        subject: String,
    },
    /// Files (their names) left message `id` before it was sent (canceled, gone, left out of
    /// a retry): its letter was made again from the files left, `subject` now.
    LeftMessage {
        id: String,
        files: Vec<String>,
        subject: String,
    },
    /// A send could not be confirmed: nothing is sent again until `retry`.
    MessageUnconfirmed {
        id: String,
        subject: String,
    },
}

/// The key of a file of a mailing mapping, stamped on its message's draft and searched for in
/// the mailbox before it is mailed: derived from the drop alone (mailbox, the mapping as where
/// it sends: [`recipients_id`], its path under the folder with `/` between components, size,
/// SHA-256), so a lost or restored state dir, a second agent syncing the same folder, or a
/// mapping renamed, derives the same key. 32 hex digits.
pub fn file_key(user: &str, recipients: &str, rel_path: &Path, size: u64, sha256: &str) -> String {
    use sha2::{Digest, Sha256};
    // A name's own bytes (UTF-8 where it is, so a UTF-8 path's key is the same everywhere),
    // never read lossily: two names differing only in bytes that are not UTF-8 are two files.
    let rel: Vec<&[u8]> = rel_path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.as_encoded_bytes()),
            _ => None,
        })
        .collect();
    let rel = rel.join(&b'/');
    let mut h = Sha256::new();
    for part in [
        "outbox-file-key/2".as_bytes(),
        user.to_lowercase().as_bytes(),
        recipients.as_bytes(),
        &rel,
        size.to_string().as_bytes(),
        sha256.to_lowercase().as_bytes(),
    ] {
        h.update(part);
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Who a mailing mapping mails, as a file's key names it: every address of `to`, `cc` and
/// `bcc`, lowercased, sorted, once each. The key names the mapping by where it sends, not by
/// its `name`: renaming a mapping (or moving an address from `to` to `cc`) mails no file again,
/// while a lost ledger and a new set of recipients mails the files to the new set.
pub fn recipients_id(rule: &MailRule) -> String {
    let mut all: Vec<String> = (rule.to.iter())
        .chain(&rule.cc)
        .chain(&rule.bcc)
        .map(|a| a.trim().to_lowercase())
        .collect();
    all.sort();
    all.dedup();
    all.join(",")
}

#[cfg(test)]
mod tests {
    use super::path_bytes;
    use serde::{Deserialize, Serialize};
    use std::path::PathBuf;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Stored {
        #[serde(with = "path_bytes")]
        path: PathBuf,
    }

    fn read(v: serde_json::Value) -> Result<PathBuf, String> {
        serde_json::from_value::<Stored>(v)
            .map(|s| s.path)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_unicode_path_is_stored_as_its_string_and_read_back_from_text_or_a_value() {
        let s = Stored {
            path: PathBuf::from("/drop/é.pdf"),
        };
        let text = serde_json::to_string(&s).expect("serialize");
        assert_eq!(text, r#"{"path":"/drop/é.pdf"}"#);
        // Borrowed from the text (visit_str) and owned in a value (visit_string).
        assert_eq!(serde_json::from_str::<Stored>(&text).expect("text"), s);
        assert_eq!(
            read(serde_json::json!({"path": "/drop/é.pdf"})),
            Ok(s.path.clone())
        );
    }

    /// The fault an answer carries, for whoever waits on it (the simulation's Retry-After
    /// oracle, `send`'s exit): every failed outcome has one, a success none.
    #[test]
    fn a_failed_outcome_names_its_fault_and_a_success_none() {
        use super::{Fault, FindOutcome, MailFolder, Outcome, PostOutcome, SendOutcome};
        let throttled = Fault::Throttled {
            retry_after_ms: Some(2_000),
        };
        let failed = [
            Outcome::Post(PostOutcome::Failed(throttled.clone())),
            Outcome::Send(SendOutcome::Failed(throttled.clone())),
            Outcome::Find(
                MailFolder::SentItems,
                FindOutcome::Failed(throttled.clone()),
            ),
        ];
        for o in &failed {
            assert_eq!(o.fault(), Some(&throttled), "{o:?}");
        }
        let created = Outcome::Post(PostOutcome::Created {
            attachment_id: "a".into(),
        });
        assert_eq!(created.fault(), None);
    }

    /// An optional path (a record's `failed_to`) is stored and read back as it was, absent as
    /// absent.
    #[test]
    fn an_optional_path_is_read_back_as_it_was_stored() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Maybe {
            #[serde(
                default,
                skip_serializing_if = "Option::is_none",
                with = "path_bytes::option"
            )]
            to: Option<PathBuf>,
        }
        for to in [None, Some(PathBuf::from("/drop/failed/é.pdf"))] {
            let m = Maybe { to };
            let text = serde_json::to_string(&m).expect("serialize");
            assert_eq!(serde_json::from_str::<Maybe>(&text).expect("read"), m);
        }
        assert_eq!(
            serde_json::from_str::<Maybe>(r#"{"to":null}"#).expect("null"),
            Maybe { to: None }
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_path_that_is_not_unicode_is_stored_as_its_exact_bytes() {
        use std::os::unix::ffi::OsStringExt;
        let path = PathBuf::from(std::ffi::OsString::from_vec(b"/d/\xffa".to_vec()));
        let s = Stored { path: path.clone() };
        let v = serde_json::to_value(&s).expect("serialize");
        assert_eq!(v, serde_json::json!({"path": {"bytes_hex": "2f642fff61"}}));
        assert_eq!(read(v), Ok(path));
    }

    #[cfg(unix)]
    #[test]
    fn a_stored_path_that_cannot_be_read_is_refused_with_what_it_is() {
        let refused = |v| read(v).expect_err("refused");
        assert!(refused(serde_json::json!({"path": {}})).contains("an empty path"));
        assert!(
            refused(serde_json::json!({"path": {"bytes_hex": "zz"}})).contains("path bytes_hex")
        );
        assert!(refused(serde_json::json!({"path": {"wide_hex": "0041"}}))
            .contains("a path as `wide_hex` is not one this platform reads"));
        assert!(refused(serde_json::json!({"path": 7})).contains("a path: a string, or"));
    }
}
