//! One ledger entry: everything the agent knows about one version of one file, as stored (JSON)
//! in sled. Plain data with serde; no I/O. Never holds an upload URL: those are secrets and live
//! in [`crate::ledger::SessionStore`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use time::OffsetDateTime;

/// Where a file version stands (SPEC: the ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Seen, still changing or not yet unchanged for `settle`.
    Settling,
    /// Complete and queued.
    Pending,
    /// A POST or an upload session is under way.
    Uploading,
    /// Attached; `attachment_id` is known.
    Done,
    /// Stopped by an error; retried on change or by `retry`.
    Failed,
    /// Never sent (e.g. over 150 MiB).
    Rejected,
    /// Stopped by `cancel` or because the file vanished.
    Canceled,
}

impl EntryState {
    /// Every state, in the order a file normally goes through them.
    pub const ALL: [EntryState; 7] = [
        EntryState::Settling,
        EntryState::Pending,
        EntryState::Uploading,
        EntryState::Done,
        EntryState::Failed,
        EntryState::Rejected,
        EntryState::Canceled,
    ];

    /// The lowercase name used in JSON, on the command line and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Settling => "settling",
            EntryState::Pending => "pending",
            EntryState::Uploading => "uploading",
            EntryState::Done => "done",
            EntryState::Failed => "failed",
            EntryState::Rejected => "rejected",
            EntryState::Canceled => "canceled",
        }
    }

    /// The core's state of a record stored in this one.
    pub fn core(self) -> State {
        match self {
            EntryState::Settling | EntryState::Pending => State::Pending,
            EntryState::Uploading => State::Uploading,
            EntryState::Done => State::Done,
            EntryState::Failed => State::Failed,
            EntryState::Rejected => State::Rejected,
            EntryState::Canceled => State::Canceled,
        }
    }

    /// No more work happens on its own in this state (only a file change or `retry` restarts it).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EntryState::Done | EntryState::Failed | EntryState::Rejected | EntryState::Canceled
        )
    }
}

impl fmt::Display for EntryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntryState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        EntryState::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                let names: Vec<&str> = EntryState::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown state `{wanted}`; expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

pub use crate::core::model::{Failure as EntryError, ItemKind, Target};
use crate::core::model::{FileStat, Record, Replaced, SessionMark, State, Time};

/// What the ledger remembers of an open upload session. The URL itself carries an `authtoken`
/// and is kept in the [`crate::ledger::SessionStore`], never here. Schema v1 stored
/// `expires_at`/`created_at` here; they are ignored when read (v2 migration fills `sent_end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SessionInfo {
    /// Bytes `0..sent_end` may have reached the server (see [`SessionMark`]).
    #[serde(default)]
    pub sent_end: u64,
    #[serde(default)]
    pub abandoned: bool,
}

/// One version of one file (path + size + content hash) and where its upload stands.
///
/// The first block of fields is what `outbox status --json` shows (SPEC: the ledger); the rest
/// is what the agent needs to resume after a crash. Fields added after schema v1 must carry
/// `#[serde(default)]` so older records still load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Short unique id (12 lowercase hex digits), what users type in `retry` / `cancel`.
    pub id: String,
    /// The mapping's name.
    pub mapping: String,
    /// Absolute path of the file: stored as the string it is, or as its bytes when it is not
    /// UTF-8 (see [`crate::core::model::path_bytes`]).
    #[serde(with = "crate::core::model::path_bytes")]
    pub path: PathBuf,
    pub size: u64,
    /// Lowercase hex SHA-256 of the content, once read.
    #[serde(default)]
    pub sha256: Option<String>,
    pub state: EntryState,
    #[serde(default)]
    pub bytes_sent: u64,
    #[serde(default)]
    pub attachment_id: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub error: Option<EntryError>,
    #[serde(with = "rfc3339")]
    pub updated_at: OffsetDateTime,

    /// Attachment name on the item (normally the file name).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub target: Target,
    /// Modification time in nanoseconds since the Unix epoch, to notice a changed file cheaply.
    #[serde(default)]
    pub mtime_ns: i64,
    #[serde(default = "epoch", with = "rfc3339")]
    pub created_at: OffsetDateTime,
    /// The open upload session, if any (its URL is in the session store).
    #[serde(default)]
    pub session: Option<SessionInfo>,
    /// An effect that can create the attachment was sent and its answer is not known (schema v1
    /// called it `post_in_flight`): look on the item before sending again.
    #[serde(default, alias = "post_in_flight")]
    pub may_exist: bool,
    /// When that effect was sent (the core's clock, ms).
    #[serde(default)]
    pub effect_at: Option<Time>,
    /// Insertion order (the core's `Record::seq`; assigned by the ledger when 0); orders the
    /// versions of one path.
    #[serde(default)]
    pub seq: u64,

    // Schema v2: the rest of the core's `Record`.
    /// Device and inode of the file that was hashed.
    #[serde(default)]
    pub dev: u64,
    #[serde(default)]
    pub ino: u64,
    /// Status-change time (ns) of the file that was hashed.
    #[serde(default)]
    pub ctime_ns: i64,
    /// `target` is the item this version is bound to (its first effect was sent there); when
    /// false it only shows the mapping's item at the time it was written.
    #[serde(default)]
    pub bound: bool,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub cancel_requested: bool,
    /// Done, but the after-action (move/delete) is still to be carried out. Inverted so that a
    /// done entry of schema v1 (whose after-action ran) reads as finished.
    #[serde(default)]
    pub after_pending: bool,
    #[serde(default)]
    pub after_failed: bool,
    #[serde(default)]
    pub replaced: bool,
    #[serde(default)]
    pub garbage: Vec<String>,
    #[serde(default)]
    pub replaces: Vec<Replaced>,
    /// The message it is mailed in (a `new_message` mapping).
    #[serde(default)]
    pub message: Option<String>,
    /// Mailed without a search of the mailbox for its key (a drop again of bytes the ledger
    /// knows it mailed from this path).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mail_again: bool,
    /// `outbox retry --resend` asked to mail this done file again (taken by the agent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend: bool,
    /// The message it left when that message's draft was sent from Outlook (or by a lost
    /// later ledger) without it being done there: found in that message's sent copy, it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_message: Option<String>,
    /// The owner (Unix uid) of the file that was hashed: a later version replaces this one
    /// only if its file has the same owner. Absent in entries from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
    /// Earlier versions of the path on the item of another owner's, left beside this one (not
    /// replaced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beside: Vec<String>,
    /// Where a failed file was moved (the mapping's `failed_dir`): `retry` takes it back.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::core::model::path_bytes::option"
    )]
    pub failed_to: Option<PathBuf>,
    /// The core's `Record::failed_dir_asked`: its move into `failed_dir` asked, not answered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed_dir_asked: bool,
    /// `outbox verify` found this done entry's attachment wrong or missing: `retry` attaches it
    /// again. Without it, `retry` of a done entry (its after-action aside) is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify_failed: bool,
}

/// The few fields of an entry the agent's start-up needs for every entry (which version of a
/// path is newest, whether its file is unchanged, whether it is still open), decoded from the
/// same JSON as [`LedgerEntry`] while the rest is skipped unparsed: a ledger of months holds
/// hundreds of thousands of done entries and start-up reads them all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EntryBrief {
    pub id: String,
    pub mapping: String,
    #[serde(with = "crate::core::model::path_bytes")]
    pub path: PathBuf,
    pub size: u64,
    pub state: EntryState,
    #[serde(default)]
    pub mtime_ns: i64,
    #[serde(default)]
    pub seq: u64,
    #[serde(with = "rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// What the agent knows of a file version when it first records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub mapping: String,
    /// Absolute path of the file.
    pub path: PathBuf,
    /// Attachment name on the item.
    pub name: String,
    pub target: Target,
    pub size: u64,
    /// See [`crate::files::mtime_ns`].
    pub mtime_ns: i64,
}

impl LedgerEntry {
    /// A new entry in `state` for `version`, with a fresh id and both timestamps `now`.
    pub fn new(version: NewEntry, state: EntryState, now: OffsetDateTime) -> Self {
        LedgerEntry {
            id: new_id(),
            mapping: version.mapping,
            path: version.path,
            size: version.size,
            sha256: None,
            state,
            bytes_sent: 0,
            attachment_id: None,
            attempts: 0,
            error: None,
            updated_at: now,
            name: version.name,
            target: version.target,
            mtime_ns: version.mtime_ns,
            created_at: now,
            session: None,
            may_exist: false,
            effect_at: None,
            seq: 0,
            dev: 0,
            ino: 0,
            ctime_ns: 0,
            bound: false,
            restarts: 0,
            cancel_requested: false,
            after_pending: false,
            after_failed: false,
            replaced: false,
            garbage: Vec::new(),
            replaces: Vec::new(),
            message: None,
            mail_again: false,
            resend: false,
            left_message: None,
            owner: None,
            beside: Vec::new(),
            failed_to: None,
            failed_dir_asked: false,
            verify_failed: false,
        }
    }

    /// The core's view of this entry.
    pub fn to_record(&self) -> Record {
        self.clone().into_record()
    }

    /// The core's view of this entry, taking it apart (start-up reads every entry of the
    /// ledger: no string is copied).
    pub fn into_record(self) -> Record {
        let name = if self.name.is_empty() {
            self.file_name()
        } else {
            self.name
        };
        Record {
            id: self.id,
            mapping: self.mapping,
            path: self.path,
            name,
            file: FileStat {
                dev: self.dev,
                ino: self.ino,
                size: self.size,
                mtime_ns: self.mtime_ns,
                ctime_ns: self.ctime_ns,
                owner: self.owner,
            },
            sha256: self.sha256,
            state: self.state.core(),
            target: self.bound.then_some(self.target),
            may_exist: self.may_exist,
            effect_at: self.effect_at,
            session: self.session.map(|s| SessionMark {
                sent_end: s.sent_end,
                abandoned: s.abandoned,
            }),
            bytes_sent: self.bytes_sent,
            attachment_id: self.attachment_id,
            attempts: self.attempts,
            restarts: self.restarts,
            error: self.error,
            cancel_requested: self.cancel_requested,
            after_done: !self.after_pending,
            after_failed: self.after_failed,
            replaced: self.replaced,
            garbage: self.garbage,
            replaces: self.replaces,
            message: self.message,
            mail_again: self.mail_again,
            resend: self.resend,
            left_message: self.left_message,
            beside: self.beside,
            failed_to: self.failed_to,
            failed_dir_asked: self.failed_dir_asked,
            verify_failed: self.verify_failed,
            seq: self.seq,
            created_at: time_of(self.created_at),
            updated_at: time_of(self.updated_at),
        }
    }

    /// The entry that stores `r`. `current` is the mapping's item, shown for a version not yet
    /// bound to one.
    pub fn from_record(r: &Record, current: Option<&Target>) -> LedgerEntry {
        LedgerEntry {
            id: r.id.clone(),
            mapping: r.mapping.clone(),
            path: r.path.clone(),
            size: r.file.size,
            sha256: r.sha256.clone(),
            state: match r.state {
                State::Pending => EntryState::Pending,
                State::Uploading => EntryState::Uploading,
                State::Done => EntryState::Done,
                State::Failed => EntryState::Failed,
                State::Rejected => EntryState::Rejected,
                State::Canceled => EntryState::Canceled,
            },
            bytes_sent: if r.state == State::Done {
                r.file.size
            } else {
                r.bytes_sent
            },
            attachment_id: r.attachment_id.clone(),
            attempts: r.attempts,
            error: r.error.clone(),
            updated_at: datetime_of(r.updated_at),
            name: r.name.clone(),
            target: r
                .target
                .clone()
                .or_else(|| current.cloned())
                .unwrap_or_default(),
            mtime_ns: r.file.mtime_ns,
            created_at: datetime_of(r.created_at),
            session: r.session.map(|s| SessionInfo {
                sent_end: s.sent_end,
                abandoned: s.abandoned,
            }),
            may_exist: r.may_exist,
            effect_at: r.effect_at,
            seq: r.seq,
            dev: r.file.dev,
            ino: r.file.ino,
            ctime_ns: r.file.ctime_ns,
            bound: r.target.is_some(),
            restarts: r.restarts,
            cancel_requested: r.cancel_requested,
            after_pending: !r.after_done,
            after_failed: r.after_failed,
            replaced: r.replaced,
            garbage: r.garbage.clone(),
            replaces: r.replaces.clone(),
            message: r.message.clone(),
            mail_again: r.mail_again,
            resend: r.resend,
            left_message: r.left_message.clone(),
            owner: r.file.owner,
            beside: r.beside.clone(),
            failed_to: r.failed_to.clone(),
            failed_dir_asked: r.failed_dir_asked,
            verify_failed: r.verify_failed,
        }
    }

    /// The file name shown in tables (the attachment name when the path has none).
    pub fn file_name(&self) -> String {
        match self.path.file_name() {
            Some(n) => n.to_string_lossy().into_owned(),
            None => self.name.clone(),
        }
    }

    /// The file name as a person reads it: bytes that are not UTF-8 written `\xff`
    /// ([`crate::outside::os_text`]; the attachment name has U+FFFD there).
    pub fn file_name_shown(&self) -> String {
        match self.path.file_name() {
            Some(n) => crate::outside::os_text(n).into_owned(),
            None => self.name.clone(),
        }
    }

    /// True when `path`'s metadata says this is still the same version (size and mtime).
    pub fn matches_metadata(&self, meta: &std::fs::Metadata) -> bool {
        meta.len() == self.size && crate::files::mtime_ns(meta) == Some(self.mtime_ns)
    }

    /// The path as stored.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A fresh entry id: 12 lowercase hex digits (48 random bits). The store checks for collisions.
pub fn new_id() -> String {
    let bits: u64 = rand::random::<u64>() & 0xffff_ffff_ffff;
    format!("{bits:012x}")
}

/// The core's clock (milliseconds since the Unix epoch) for a stored time.
pub fn time_of(t: OffsetDateTime) -> Time {
    Time(u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
}

/// A stored time for the core's clock.
pub fn datetime_of(t: Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn epoch() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH
}

/// RFC 3339 timestamps for serde, without needing `time`'s `serde` feature.
pub(crate) mod rfc3339 {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LedgerEntry {
        LedgerEntry::new(
            NewEntry {
                mapping: "reports".into(),
                path: "/home/u/Outbox/reports/a.pdf".into(),
                name: "a.pdf".into(),
                target: Target {
                    user: "me".into(),
                    kind: ItemKind::Event,
                    item_id: "AAMk".into(),
                },
                size: 10,
                mtime_ns: 1_700_000_000_123_456_789,
            },
            EntryState::Pending,
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        )
    }

    #[test]
    fn states_serialise_lowercase_and_parse_back() {
        for st in EntryState::ALL {
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(st.as_str().parse::<EntryState>().unwrap(), st);
            assert_eq!(
                st.as_str().to_uppercase().parse::<EntryState>().unwrap(),
                st
            );
        }
        let err = "sent".parse::<EntryState>().unwrap_err();
        assert!(
            err.contains("settling") && err.contains("canceled"),
            "{err}"
        );
    }

    #[test]
    fn entry_round_trips_through_json() {
        let mut e = sample();
        e.session = Some(SessionInfo {
            sent_end: 7,
            abandoned: false,
        });
        e.error = Some(EntryError::new("ErrorItemNotFound", "gone"));
        let json = serde_json::to_string(&e).unwrap();
        assert!(
            json.contains("\"updated_at\":\"2023-11-14T22:13:20Z\""),
            "{json}"
        );
        assert!(json.contains("\"kind\":\"event\""), "{json}");
        let back: LedgerEntry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }

    #[cfg(unix)]
    #[test]
    fn a_path_that_is_not_utf8_round_trips_as_its_bytes_and_plain_paths_stay_strings() {
        use std::os::unix::ffi::OsStrExt;
        let mut e = sample();
        let plain = serde_json::to_string(&e).unwrap();
        assert!(
            plain.contains("\"path\":\"/home/u/Outbox/reports/a.pdf\""),
            "a valid path is stored as before: {plain}"
        );
        e.path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/home/u/bad\xffbyte.txt"));
        e.name.clear();
        let json = serde_json::to_string(&e).unwrap();
        assert!(
            json.contains("\"path\":{\"bytes_hex\":\"2f686f6d652f752f626164ff627974652e747874\"}"),
            "{json}"
        );
        let back: LedgerEntry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        let brief: EntryBrief = serde_json::from_str(&json).unwrap();
        assert_eq!(brief.path, e.path);
        let record = back.into_record();
        assert_eq!(record.name, "bad\u{FFFD}byte.txt");
        let json = serde_json::to_string(&record).unwrap();
        let again: Record = serde_json::from_str(&json).unwrap();
        assert_eq!(again.path, e.path);
        // A marker this build does not know is an error, not a guess.
        let odd = plain.replace("\"/home/u/Outbox/reports/a.pdf\"", "{\"rot13\":\"2f\"}");
        assert!(serde_json::from_str::<LedgerEntry>(&odd).is_err());
    }

    #[test]
    fn ids_are_twelve_lowercase_hex() {
        let a = new_id();
        assert_eq!(a.len(), 12);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{a}"
        );
        assert_ne!(a, new_id());
    }
}
