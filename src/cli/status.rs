//! `outbox status`: rendering ledger entries as SPEC's JSON array or a table for terminals, under
//! a header that says whether an agent runs (its pid) and whether it is paused, why and until
//! when; each row says what it waits for and until when. The messages of `new_message` mappings
//! (SPEC: Sending): in the table, a block per message below the entries; in `--json`, a
//! `message` key on each entry (`null` for a file that is not mailed), so the output stays one
//! array of entries with every SPEC key. Pure functions over entries, messages and what the
//! agent said ([`AgentView`]); reading them (from the ledger or the agent) is the caller's.

use crate::agent::control::{send_doubt, send_doubt_text, AgentView, Wait, WaitReason};
use crate::core::model::{MessageRecord, MessageState, Time};
use crate::ledger::{EntryError, EntryState, LedgerEntry};
use serde::Serialize;
use std::collections::HashMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What `status` knows besides the entries: is an agent running (its pid), what it said it waits
/// for, and the time now.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub running: bool,
    pub pid: Option<u32>,
    pub view: Option<&'a AgentView>,
    pub now: OffsetDateTime,
    /// With no agent: the mailing mappings over their `max_messages` cap, and until when (ms).
    pub capped: Vec<(String, u64)>,
    /// Mailed files whose move or delete waits for their message's copy in Sent Items, by
    /// entry id, from the ledger ([`sent_copy_waits`]): said whether or not an agent runs.
    pub sent_copy: Vec<(String, Wait)>,
    /// Each mapping's folder, by name: a file in a subfolder is shown with its folder under it.
    pub folders: Vec<(String, std::path::PathBuf)>,
}

impl Facts<'_> {
    /// No agent, at `now`.
    pub fn offline(now: OffsetDateTime) -> Facts<'static> {
        Facts {
            running: false,
            pid: None,
            view: None,
            now,
            capped: Vec::new(),
            sent_copy: Vec::new(),
            folders: Vec::new(),
        }
    }

    /// The FILE a row shows: its name, or its path under its mapping's folder when it is in a
    /// subfolder (a recursive mapping's `a/report.pdf` and `b/report.pdf` are two files).
    fn file_shown(&self, e: &LedgerEntry) -> String {
        let under = self
            .folders
            .iter()
            .find(|(m, _)| *m == e.mapping)
            .and_then(|(_, folder)| e.path.strip_prefix(folder).ok())
            .filter(|rel| rel.components().count() > 1);
        match under {
            Some(rel) => crate::outside::os_text(rel.as_os_str()).into_owned(),
            None => e.file_name_shown(),
        }
    }

    /// What entry `e` waits for, if anything: as the agent said, or (no agent) for one.
    fn wait_of(&self, e: &LedgerEntry) -> Option<Wait> {
        if let Some((_, w)) = self.sent_copy.iter().find(|(id, _)| *id == e.id) {
            return Some(w.clone());
        }
        if let Some(v) = self.view {
            return v
                .waits
                .iter()
                .find(|(id, _)| *id == e.id)
                .map(|(_, w)| w.clone());
        }
        if let (false, EntryState::Pending, None) = (self.running, e.state, &e.message) {
            if let Some((_, until)) = self.capped.iter().find(|(m, _)| *m == e.mapping) {
                return Some(Wait {
                    reason: WaitReason::MaxMessages,
                    until_ms: Some(*until),
                    error: None,
                    attempts: e.attempts,
                });
            }
        }
        let reason = match e.state {
            _ if self.running => return None,
            EntryState::Uploading => WaitReason::NextStart,
            EntryState::Pending | EntryState::Settling => WaitReason::Agent,
            _ => return None,
        };
        Some(Wait {
            reason,
            until_ms: None,
            error: None,
            attempts: e.attempts,
        })
    }
}

/// One row of `status --json`: SPEC's keys, and what the row waits for, every one present
/// (`null` when unset).
#[derive(Serialize)]
struct JsonRow<'a> {
    /// `null` for a file not in the ledger yet ([`entry_id`]).
    id: Option<&'a str>,
    mapping: &'a str,
    /// The path as text (U+FFFD for each byte that is not UTF-8).
    path: String,
    /// The path's exact bytes in lowercase hex when it is not UTF-8 (`null` otherwise), so a
    /// script can name the file `path` only approximates.
    path_bytes: Option<String>,
    size: u64,
    sha256: Option<&'a str>,
    state: EntryState,
    bytes_sent: u64,
    attachment_id: Option<&'a str>,
    attempts: u32,
    error: Option<&'a EntryError>,
    updated_at: String,
    /// `sign-in`, `unreachable`, `throttled`, `backoff`, `look`, `settle`, `next-start`, `agent`,
    /// `max-messages`, `paused`, `sent-copy` (a mailed file's move or delete waits for its sent
    /// copy; `waiting_until`: when the looks stop), `send-confirm` (its message's send may have
    /// happened; `waiting_until`: when Sent Items is searched for it), `upload-budget`,
    /// `request-budget` (held back by the mailbox's budgets; `waiting_until`: when it goes).
    waiting_for: Option<&'static str>,
    waiting_until: Option<String>,
    /// The table's NOTE: what a person reads about the row.
    note: Option<String>,
    /// The running agent's pid (`null`: none runs, or the platform does not tell).
    agent_pid: Option<u32>,
    /// The message the file is mailed in (`new_message` mappings), else `null`.
    message: Option<JsonMessage<'a>>,
}

/// A message, as `status --json` shows it on each of its files' entries.
#[derive(Serialize)]
struct JsonMessage<'a> {
    id: &'a str,
    state: MessageState,
    to: &'a [String],
    cc: &'a [String],
    bcc: &'a [String],
    subject: &'a str,
    /// Its entries' ids, in order.
    files: &'a [String],
    draft_id: Option<&'a str>,
    internet_message_id: Option<&'a str>,
    sent_at: Option<String>,
    error: Option<&'a EntryError>,
    updated_at: String,
}

fn rfc3339(t: OffsetDateTime) -> String {
    // Formatting an in-range UTC timestamp cannot fail; fall back to the Debug form anyway.
    t.format(&Rfc3339).unwrap_or_else(|_| format!("{t:?}"))
}

fn rfc3339_ms(t: Time) -> String {
    rfc3339(crate::ledger::datetime_of(t))
}

fn time_of_ms(ms: u64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

fn json_message(m: &MessageRecord) -> JsonMessage<'_> {
    JsonMessage {
        id: &m.id,
        state: m.state,
        to: &m.letter.to,
        cc: &m.letter.cc,
        bcc: &m.letter.bcc,
        subject: &m.letter.subject,
        files: &m.files,
        draft_id: m.draft_id.as_deref(),
        internet_message_id: m.internet_message_id.as_deref(),
        sent_at: m.sent_at.map(rfc3339_ms),
        error: m.error.as_ref(),
        updated_at: rfc3339_ms(m.updated_at),
    }
}

/// What `--state S` keeps: entries in an entry state, messages in a message state (`failed`
/// names both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateFilter {
    pub entry: Option<EntryState>,
    pub message: Option<MessageState>,
}

impl StateFilter {
    /// An entry row stays if its state matches, or its message's does (`--json`).
    pub fn keeps_row(&self, e: &LedgerEntry, message: Option<&MessageRecord>) -> bool {
        self.entry == Some(e.state) || message.is_some_and(|m| self.keeps_message(m))
    }
    pub fn keeps_entry(&self, e: &LedgerEntry) -> bool {
        self.entry == Some(e.state)
    }
    pub fn keeps_message(&self, m: &MessageRecord) -> bool {
        self.message == Some(m.state)
    }
}

const MESSAGE_STATES: [MessageState; 7] = [
    MessageState::Drafting,
    MessageState::Attaching,
    MessageState::Sending,
    MessageState::Sent,
    MessageState::Drafted,
    MessageState::Failed,
    MessageState::Unconfirmed,
];

/// The names of a message's states, in the order of its life.
pub const MESSAGE_STATE_NAMES: [&str; 7] = [
    "drafting",
    "attaching",
    "sending",
    "sent",
    "drafted",
    "failed",
    "unconfirmed",
];

pub fn message_state_name(s: MessageState) -> &'static str {
    s.name()
}

/// Done files of `messages` accepted for sending whose copy is not yet seen in Sent Items, and
/// whose move or delete (`after_of` their mapping, by name: `None` or `Keep`, nothing waits)
/// waits for it: the wait of each, until the looks stop (`look_after_ms` apart, as the core
/// makes them: [`crate::core::machine::sent_copy_deadline`]).
pub fn sent_copy_waits(
    entries: &[LedgerEntry],
    messages: &[MessageRecord],
    look_after_ms: u64,
    after_of: impl Fn(&str) -> Option<crate::config::After>,
) -> Vec<(String, Wait)> {
    use crate::config::After;
    let by_entry = messages_by_entry(messages);
    let by_id: HashMap<&str, &MessageRecord> =
        messages.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut out = Vec::new();
    for e in entries {
        if e.state != EntryState::Done || !e.after_pending {
            continue;
        }
        let Some(m) = message_of(e, &by_entry, &by_id) else {
            continue;
        };
        let Some(until) = crate::core::machine::sent_copy_deadline(m, look_after_ms) else {
            continue;
        };
        let reason = match after_of(&e.mapping) {
            Some(After::Move) => WaitReason::SentCopyMove,
            Some(After::Delete) => WaitReason::SentCopyDelete,
            Some(After::Keep) | None => continue,
        };
        out.push((
            e.id.clone(),
            Wait {
                reason,
                until_ms: Some(until.0),
                error: None,
                attempts: m.attempts,
            },
        ));
    }
    out
}

/// Done files of messages whose send may have happened and is not confirmed yet: each waits
/// for that confirmation, until the search ([`send_doubt`]).
pub fn send_doubt_waits(
    entries: &[LedgerEntry],
    messages: &[MessageRecord],
    look_after_ms: u64,
) -> Vec<(String, Wait)> {
    let by_entry = messages_by_entry(messages);
    let by_id: HashMap<&str, &MessageRecord> =
        messages.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut out = Vec::new();
    for e in entries {
        if e.state != EntryState::Done {
            continue;
        }
        let Some(m) = message_of(e, &by_entry, &by_id) else {
            continue;
        };
        let Some(d) = send_doubt(m, look_after_ms) else {
            continue;
        };
        out.push((
            e.id.clone(),
            Wait {
                reason: WaitReason::SendConfirm,
                until_ms: Some(d.look_at.0),
                error: None,
                attempts: m.attempts,
            },
        ));
    }
    out
}

/// The message each entry names, by entry id.
fn messages_by_entry(messages: &[MessageRecord]) -> HashMap<&str, &MessageRecord> {
    let mut out = HashMap::new();
    for m in messages {
        for f in &m.files {
            out.insert(f.as_str(), m);
        }
    }
    out
}

/// The message of entry `e`: the one whose files list it (a newer version may have taken its
/// place), else the one its record names.
pub fn message_of<'a>(
    e: &LedgerEntry,
    by_entry: &HashMap<&str, &'a MessageRecord>,
    by_id: &HashMap<&str, &'a MessageRecord>,
) -> Option<&'a MessageRecord> {
    by_entry
        .get(e.id.as_str())
        .copied()
        .or_else(|| e.message.as_deref().and_then(|id| by_id.get(id).copied()))
}

/// Keep the entries and messages `filter` keeps (for `--json`: an entry whose message matches
/// stays with it).
pub fn filter_rows(
    entries: &mut Vec<LedgerEntry>,
    messages: &mut Vec<MessageRecord>,
    filter: StateFilter,
    json: bool,
) {
    {
        let by_entry = messages_by_entry(messages);
        let by_id: HashMap<&str, &MessageRecord> =
            messages.iter().map(|m| (m.id.as_str(), m)).collect();
        entries.retain(|e| {
            if json {
                filter.keeps_row(e, message_of(e, &by_entry, &by_id))
            } else {
                filter.keeps_entry(e)
            }
        });
    }
    messages.retain(|m| filter.keeps_message(m));
}

/// The id `status` shows for row `e`: none for a file not in the ledger yet (`settling`:
/// still being written, waiting for its hash, or left in its folder by `outbox pause`). Its
/// entry, and so its id, is made when the agent takes the file; an id shown before would change
/// then, and no command (`retry`, `cancel`, `verify`) takes it.
fn entry_id(e: &LedgerEntry) -> Option<&str> {
    (e.state != EntryState::Settling).then_some(e.id.as_str())
}

/// The JSON array `outbox status --json` prints (pretty, no trailing newline): one object per
/// entry, SPEC's keys, what it waits for, and `message`.
pub fn render_json(
    entries: &[LedgerEntry],
    messages: &[MessageRecord],
    facts: &Facts<'_>,
) -> String {
    let by_entry = messages_by_entry(messages);
    let by_id: HashMap<&str, &MessageRecord> =
        messages.iter().map(|m| (m.id.as_str(), m)).collect();
    let twins = twins(entries, facts);
    let rows: Vec<JsonRow<'_>> = entries
        .iter()
        .map(|e| {
            let wait = facts.wait_of(e);
            JsonRow {
                id: entry_id(e),
                mapping: &e.mapping,
                path: e.path.to_string_lossy().into_owned(),
                path_bytes: e
                    .path
                    .to_str()
                    .is_none()
                    .then(|| crate::core::model::path_bytes::raw(&e.path).1),
                size: e.size,
                sha256: e.sha256.as_deref(),
                state: e.state,
                bytes_sent: e.bytes_sent,
                attachment_id: e.attachment_id.as_deref(),
                attempts: e.attempts,
                error: e.error.as_ref(),
                updated_at: rfc3339(e.updated_at),
                waiting_for: wait.as_ref().map(|w| w.reason.as_str()),
                waiting_until: wait
                    .as_ref()
                    .and_then(|w| w.until_ms)
                    .and_then(time_of_ms)
                    .map(rfc3339),
                note: note(e, facts, &twins),
                agent_pid: facts.pid.filter(|_| facts.running),
                message: message_of(e, &by_entry, &by_id).map(json_message),
            }
        })
        .collect();
    // Plain strings, numbers and options: serialising cannot fail.
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_owned())
}

/// "at 14:02:05 UTC (in 25s)"; "now" once it is due.
fn at(until_ms: Option<u64>, now: OffsetDateTime) -> String {
    let Some(t) = until_ms.and_then(time_of_ms) else {
        return "soon".to_owned();
    };
    let secs = (t - now).whole_seconds();
    if secs <= 0 {
        return "now".to_owned();
    }
    let (h, m, s) = t.to_hms();
    let left = match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, s % 3600 / 60),
    };
    format!("at {h:02}:{m:02}:{s:02} UTC (in {left})")
}

/// What a wait says on a row (and in the header).
fn wait_text(w: &Wait, e: Option<&LedgerEntry>, now: OffsetDateTime) -> String {
    let error = w
        .error
        .as_deref()
        .map(|m| sanitize(&crate::secret::redact(m)));
    let when = at(w.until_ms, now);
    match w.reason {
        WaitReason::SignIn => match error {
            Some(m) => format!("waits for sign-in ({m}); tries again {when}"),
            None => format!("waits for sign-in; tries again {when}"),
        },
        WaitReason::Unreachable => match error {
            Some(m) => format!("Graph unreachable ({m}); tries again {when}"),
            None => format!("Graph unreachable; tries again {when}"),
        },
        WaitReason::Throttled => format!("throttled by Graph (Retry-After); sends again {when}"),
        WaitReason::Backoff => {
            let attempts = match w.attempts {
                0 => String::new(),
                n => format!(", attempt {n}"),
            };
            match error {
                Some(m) => {
                    format!("backing off after an error ({m}{attempts}); tries again {when}")
                }
                None => format!("backing off{attempts}; tries again {when}"),
            }
        }
        WaitReason::Look => {
            let why = match error {
                Some(m) => {
                    let attempts = match w.attempts {
                        0 => String::new(),
                        n => format!(", attempt {n}"),
                    };
                    format!("a request that may have taken effect failed ({m}{attempts})")
                }
                None => "the answer to a request was lost".to_owned(),
            };
            format!(
                "{why}: waits to check on the item whether the upload took effect; looks {when}, when nothing more of it can land"
            )
        }
        WaitReason::Settle => {
            let still = e
                .and_then(|e| e.error.as_ref())
                .map(|x| format!("{}; ", sanitize(&x.message)))
                .unwrap_or_default();
            format!("{still}settling: checked again {when}")
        }
        WaitReason::NextStart => INTERRUPTED.to_owned(),
        WaitReason::Agent => "waits for the agent (`outbox run`)".to_owned(),
        WaitReason::Paused => match w.until_ms {
            Some(_) => format!(
                "paused by `outbox pause`: left in its folder, taken {when} or at `outbox resume`"
            ),
            None => {
                "paused by `outbox pause`: left in its folder, taken at `outbox resume`".to_owned()
            }
        },
        WaitReason::SentCopyMove | WaitReason::SentCopyDelete => {
            let (verb, it) = if w.reason == WaitReason::SentCopyMove {
                ("moving", "is moved")
            } else {
                ("deleting", "is deleted")
            };
            let ends = match w.until_ms.and_then(time_of_ms) {
                Some(t) if t > now => format!(
                    "gives up {when}: not seen by then, the file stays here and its message is \
                     unconfirmed"
                ),
                _ => "looks once more, then gives up: the file stays here and its message is \
                      unconfirmed"
                    .to_owned(),
            };
            format!(
                "sent; waiting for its copy in Sent Items before {verb} it (a file {it} only \
                 once its mail is seen sent); {ends}"
            )
        }
        WaitReason::SendConfirm => format!(
            "attached; its message's send may have gone and is not confirmed yet: its copy is \
             searched for in Sent Items {when}, the message never sent again before (see \
             MESSAGES)"
        ),
        WaitReason::BudgetTurn => format!(
            "held back by the mailbox's upload budget (`mailbox_upload_bytes`): larger than the \
             whole budget, it takes the window once what was sent before it has left it, \
             {when}; other files go on meanwhile"
        ),
        WaitReason::UploadBudget => format!(
            "held back by the mailbox's upload budget (`mailbox_upload_bytes`): the window is \
             full; sends {when}"
        ),
        WaitReason::RequestBudget => format!(
            "held back by the mailbox's request budget (`mailbox_requests`): the window is \
             full; sends {when}"
        ),
        WaitReason::MaxMessages => format!(
            "its mapping made its max_messages messages in their window; mailed {when} (raise \
             [mapping.new_message] max_messages if the folder should mail more)"
        ),
    }
}

/// A row's NOTE: its error, a failed after-action, what it waits for, why it was canceled or
/// that a newer version replaced it, or the versions of another owner's it was attached beside.
fn note(e: &LedgerEntry, facts: &Facts<'_>, twins: &Twins) -> Option<String> {
    error_text(e)
        .map(|t| match &e.failed_to {
            // Over 150 MiB: never sent as it is, so no retry takes it back.
            Some(p)
                if e.state == EntryState::Rejected
                    && e.size > crate::core::model::MAX_ATTACHMENT =>
            {
                format!(
                    "{t}; the file is in failed_dir: {}; split or compress it under 150 MiB and drop the parts in, `outbox cancel {}` clears this one",
                    crate::outside::path(p),
                    e.id
                )
            }
            // Where the agent moved it: `retry` takes it back from there.
            Some(p) if matches!(e.state, EntryState::Failed | EntryState::Rejected) => format!(
                "{t}; the file is in failed_dir: {} (`outbox retry {}` takes it back)",
                crate::outside::path(p),
                e.id
            ),
            _ => t,
        })
        .or_else(|| after_failed_text(e))
        .or_else(|| cancel_asked_text(e, facts.wait_of(e).as_ref(), facts.now))
        .or_else(|| facts.wait_of(e).map(|w| wait_text(&w, Some(e), facts.now)))
        .or_else(|| ended_text(e))
        .or_else(|| beside_text(e))
        .or_else(|| twins.get(&e.id).cloned())
}

/// Notes of done rows that another done row of the same item looks like (by id): the same
/// bytes under another name (a file renamed or copied in the folder: a new path is a new file,
/// attached again, and the earlier attachment stays), or the same name from another path (a
/// recursive mapping's `a/x.pdf` and `b/x.pdf`: two attachments of one name on the item).
type Twins = HashMap<String, String>;

fn twins(entries: &[LedgerEntry], facts: &Facts<'_>) -> Twins {
    let live: Vec<&LedgerEntry> = entries
        .iter()
        // (An entry bound to no item, as one found already mailed may be, has no twin.)
        .filter(|e| e.state == EntryState::Done && !e.replaced && !e.target.item_id.is_empty())
        .collect();
    let item = |e: &LedgerEntry| (e.target.user.to_lowercase(), e.target.item_id.clone());
    let mut out = Twins::new();
    // The same bytes under another name: said on the later one.
    let mut by_bytes: HashMap<_, Vec<&LedgerEntry>> = HashMap::new();
    for e in &live {
        if let Some(sha) = &e.sha256 {
            by_bytes
                .entry((item(e), sha.as_str(), e.size))
                .or_default()
                .push(e);
        }
    }
    for group in by_bytes.values_mut().filter(|g| g.len() > 1) {
        group.sort_by_key(|e| (e.created_at, e.seq));
        for (i, e) in group.iter().enumerate().skip(1) {
            let Some(first) = group[..i]
                .iter()
                .find(|o| o.name != e.name && o.path != e.path)
            else {
                continue;
            };
            out.insert(
                e.id.clone(),
                format!(
                    "the same bytes as {} ({}), attached before under that name: a file renamed \
                     or copied in the folder is a new file to outbox, attached under its new \
                     name, and the earlier attachment stays",
                    first.id,
                    facts.file_shown(first)
                ),
            );
        }
    }
    // One name from two paths: said on each.
    let mut by_name: HashMap<_, Vec<&LedgerEntry>> = HashMap::new();
    for e in &live {
        by_name
            .entry((item(e), e.name.as_str()))
            .or_default()
            .push(e);
    }
    for group in by_name.values().filter(|g| g.len() > 1) {
        for e in group {
            let others: Vec<String> = group
                .iter()
                .filter(|o| o.path != e.path)
                .map(|o| format!("{} ({})", facts.file_shown(o), o.id))
                .collect();
            if others.is_empty() || out.contains_key(&e.id) {
                continue;
            }
            out.insert(
                e.id.clone(),
                format!(
                    "attached as \"{}\", as is {}: the item holds attachments of one name from \
                     different folders (an attachment carries the file's name, not its folder)",
                    e.name,
                    others.join(", ")
                ),
            );
        }
    }
    out
}

/// Why a canceled row ended (a newer version took its place, its file went, `outbox cancel`),
/// and a done row whose attachment a newer version replaced: neither is a failure, and the
/// bare state does not say which.
fn ended_text(e: &LedgerEntry) -> Option<String> {
    match e.state {
        EntryState::Canceled => {
            let err = e.error.as_ref()?;
            Some(if err.code == crate::core::machine::SUPERSEDED {
                "superseded: a newer version of the file took its place before this one was attached; the newer one is sent on its own".to_owned()
            } else {
                sanitize(&crate::secret::redact(&err.message))
            })
        }
        EntryState::Done if e.replaced => Some(
            "replaced by a newer version of the file: its attachment was deleted once the newer one was on the item".to_owned(),
        ),
        _ => None,
    }
}

/// A done row attached beside an earlier version of the same name whose file had another
/// owner: that one was not replaced, both are on the item.
fn beside_text(e: &LedgerEntry) -> Option<String> {
    if e.state != EntryState::Done || e.beside.is_empty() {
        return None;
    }
    Some(format!(
        "attached beside {} (an earlier version of the same name from another owner: not replaced, both are on the item)",
        e.beside.join(", ")
    ))
}

/// A row `outbox cancel` was asked of while a request of it was in flight, or while it waited
/// (`wait`: a backoff, a throttle, the wait before a look, as the running agent says): it is
/// canceled once that request is answered, or that wait is over (what it did is settled
/// first), and shows `canceled` then.
pub fn cancel_asked_text(
    e: &LedgerEntry,
    wait: Option<&Wait>,
    now: OffsetDateTime,
) -> Option<String> {
    let by_user = e.error.as_ref().is_some_and(|x| x.code == "canceled");
    (!e.state.is_terminal() && e.cancel_requested && by_user).then(|| match wait {
        Some(w) => format!(
            "cancel asked: it stops once this wait is over, then shows canceled: {}",
            wait_text(w, Some(e), now)
        ),
        None => {
            "cancel asked: it stops once its request in flight is answered, then shows canceled"
                .to_owned()
        }
    })
}

/// A done row whose move or delete failed: attached, and the file is still where it was.
fn after_failed_text(e: &LedgerEntry) -> Option<String> {
    if e.state != EntryState::Done || !e.after_failed {
        return None;
    }
    let why = e
        .error
        .as_ref()
        .map(|x| sanitize(&crate::secret::redact(&x.message)))
        .unwrap_or_else(|| "the after-action failed".to_owned());
    Some(format!(
        "{why}; not tried again by itself: fix it, then `outbox retry {}`",
        e.id
    ))
}

/// Parse `--state S` (case-insensitive): an entry's state or a message's; the error lists the
/// valid states.
pub fn parse_state_filter(s: &str) -> Result<StateFilter, String> {
    let wanted = s.trim();
    let entry = wanted.parse::<EntryState>().ok();
    let message = MESSAGE_STATES
        .into_iter()
        .find(|m| message_state_name(*m).eq_ignore_ascii_case(wanted));
    if entry.is_none() && message.is_none() {
        let mut names: Vec<&str> = EntryState::ALL.iter().map(|s| s.as_str()).collect();
        for m in MESSAGE_STATES {
            if !names.contains(&message_state_name(m)) {
                names.push(message_state_name(m));
            }
        }
        return Err(format!(
            "unknown state `{wanted}`; expected one of: {}",
            names.join(", ")
        ));
    }
    Ok(StateFilter { entry, message })
}

/// The messages below the entries' table: a block each, oldest first — id, state, subject and
/// recipients, then when it was sent (or why not) with its `internetMessageId`, then its files
/// and their states.
pub fn render_messages(
    messages: &[MessageRecord],
    entries: &[LedgerEntry],
    now: OffsetDateTime,
    look_after_ms: u64,
    running: bool,
) -> String {
    if messages.is_empty() {
        return String::new();
    }
    let by_id: HashMap<&str, &LedgerEntry> = entries.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut out = String::from("\nMESSAGES\n");
    for m in messages {
        let mut to: Vec<String> = m.letter.to.clone();
        to.extend(m.letter.cc.iter().map(|a| format!("cc {a}")));
        to.extend(m.letter.bcc.iter().map(|a| format!("bcc {a}")));
        out.push_str(&format!(
            "{}  {}  \"{}\"  to {}\n",
            m.id,
            message_state_name(m.state),
            sanitize(&m.letter.subject),
            sanitize(&to.join(", "))
        ));
        match (m.state, m.sent_at) {
            (MessageState::Sent, Some(t)) => {
                // The time of its send when this agent sent it (`last_send_at`); when it was
                // confirmed only later in Sent Items (a lost answer, a throttle), both said.
                let when = match m.last_send_at {
                    Some(s) if t.0.saturating_sub(s.0) > CONFIRMED_LATER_MS => format!(
                        "sent {} ({}, the send; confirmed in Sent Items at {})",
                        age(crate::ledger::datetime_of(s), now),
                        rfc3339_ms(s),
                        rfc3339_ms(t)
                    ),
                    Some(_) => format!(
                        "sent {} ({})",
                        age(crate::ledger::datetime_of(t), now),
                        rfc3339_ms(t)
                    ),
                    // (Sent from Outlook, or by a ledger that kept no send time: the time it
                    // was seen sent; its copy in Sent Items has the time it went.)
                    None => format!(
                        "sent {} ({}, when it was seen sent)",
                        age(crate::ledger::datetime_of(t), now),
                        rfc3339_ms(t)
                    ),
                };
                out.push_str(&format!(
                    "    {when}; internetMessageId {}\n",
                    sanitize(m.internet_message_id.as_deref().unwrap_or("-"))
                ));
                if m.unseen {
                    out.push_str(
                        "    accepted (202), its copy not yet seen in Sent Items: its files are \
                         moved or deleted (`after`) only once it is\n",
                    );
                }
            }
            (MessageState::Drafted, _) => out.push_str(&format!(
                "    left as a draft (send = false), fully attached; draft {}\n",
                sanitize(m.draft_id.as_deref().unwrap_or("-"))
            )),
            _ => {}
        }
        if let Some(d) = send_doubt(m, look_after_ms) {
            let when = at(Some(d.look_at.0), now);
            out.push_str(&format!(
                "    {}\n",
                sanitize(&send_doubt_text(&d, &when, running))
            ));
        }
        if let Some(err) = &m.error {
            if matches!(m.state, MessageState::Failed | MessageState::Unconfirmed) {
                let text = if err.code.is_empty() || err.message.starts_with(&err.code) {
                    err.message.clone()
                } else {
                    format!("{}: {}", err.code, err.message)
                };
                out.push_str(&format!(
                    "    {}\n",
                    sanitize(&crate::secret::redact(&text))
                ));
            }
        }
        if let Some(advice) = message_advice(m) {
            out.push_str(&format!("    → {advice}\n"));
        }
        let files: Vec<String> = m
            .files
            .iter()
            .map(|f| match by_id.get(f.as_str()) {
                Some(e) => format!(
                    "{} {} ({})",
                    e.id,
                    sanitize(&e.file_name_shown()),
                    file_state_word(e)
                ),
                None => format!("{f} (not in the ledger)"),
            })
            .collect();
        if files.is_empty() {
            out.push_str("    files: none\n");
        } else {
            out.push_str(&format!("    files: {}\n", files.join(", ")));
        }
    }
    out
}

/// A send answered this much before its copy was confirmed is said with both times (M8).
const CONFIRMED_LATER_MS: u64 = 10_000;

/// A file's state in a message's files line: a canceled version a newer one took the place
/// of is "superseded" (no one canceled it), as its row's note says.
fn file_state_word(e: &LedgerEntry) -> String {
    let superseded = e.state == EntryState::Canceled
        && e.error
            .as_ref()
            .is_some_and(|err| err.code == crate::core::machine::SUPERSEDED);
    if superseded {
        "superseded".to_owned()
    } else {
        e.state.to_string()
    }
}

/// What to do about a failed or unconfirmed message, in terms of the message (its draft in
/// Drafts, its copy in Sent Items, `outbox retry MESSAGE_ID`), never of a file's upload; `None`
/// for the other states. `status` shows it under the message, `run --once` in its summary.
pub fn message_advice(m: &MessageRecord) -> Option<String> {
    let id = &m.id;
    let look = match &m.internet_message_id {
        Some(i) => format!("internetMessageId {}", sanitize(i)),
        None => format!("the subject \"{}\"", sanitize(&m.letter.subject)),
    };
    match m.state {
        MessageState::Failed if crate::agent::ops::split_again(m) => Some(
            "nothing to do: Graph refused it for its size, and `outbox retry` made its files \
             into new messages that fit (each file in one); its draft is deleted"
                .to_owned(),
        ),
        MessageState::Failed if m.refused_for_size() && !m.may_have_been_sent() => Some(format!(
            "Graph refused it for its size: `outbox retry {id}` deletes its draft and makes its \
             files into new messages that fit, under max_message_size (lower it if you know the \
             tenant's limit) and under the size refused"
        )),
        MessageState::Failed if crate::agent::ops::nothing_left(m) => Some(
            "nothing to do: every file of it was canceled or deleted before it was sent, so \
             nothing is left to send and it was closed, not sent (its draft, if one was made, is \
             deleted); put a file back in the folder to mail it in a new message"
                .to_owned(),
        ),
        MessageState::Failed if crate::agent::ops::gave_way(m) => Some(
            "nothing to do: another agent's message carries its files, which are mailed once \
             (by that message or a new one); its draft is deleted"
                .to_owned(),
        ),
        MessageState::Failed => Some(match &m.draft_id {
            Some(_) if m.may_have_been_sent() => format!(
                "fix the cause, then `outbox retry {id}`: a send of it may have happened, so it \
                 is sent again only if its draft is still a draft"
            ),
            Some(_) => format!(
                "its draft stays in Drafts; fix the cause, then `outbox retry {id}`: it looks for \
                 the draft in Sent Items (sent by hand: done) and Drafts first, and drafts it \
                 again if it is gone"
            ),
            None => format!("no draft was made; fix the cause, then `outbox retry {id}`"),
        }),
        MessageState::Unconfirmed => Some(format!(
            "may have been sent and was not sent again: look in Sent Items for {look}; there, it \
             went; not there, `outbox retry {id}` sends it only if its draft is still a draft"
        )),
        _ => None,
    }
}

/// A table for terminals: id, state, progress, size, age, mapping, file, and a NOTE column when
/// any row has something to say (an error, a failed after-action, what it waits for). `color`
/// adds ANSI colours to the state column.
pub fn render_table(entries: &[LedgerEntry], facts: &Facts<'_>, color: bool) -> String {
    if entries.is_empty() {
        return "No entries.\n".to_owned();
    }
    let headers = [
        "ID", "STATE", "PROGRESS", "SIZE", "AGE", "MAPPING", "FILE", "NOTE",
    ];
    let twins = twins(entries, facts);
    let notes: Vec<Option<String>> = entries.iter().map(|e| note(e, facts, &twins)).collect();
    let columns = if notes.iter().any(Option::is_some) {
        headers.len()
    } else {
        headers.len() - 1
    };
    let files = shown_files(entries, facts);
    let shortened = files
        .iter()
        .zip(entries)
        .any(|(f, e)| f.chars().count() < sanitize(&facts.file_shown(e)).chars().count());
    let rows: Vec<[String; 8]> = entries
        .iter()
        .zip(&notes)
        .zip(files)
        .map(|((e, n), file)| (e, n, file))
        .map(|(e, n, file)| {
            let (state, progress) = if waits_to_send(e, facts) {
                // Nothing of it is on its way: it waits (the NOTE says for what, until when).
                let p = if e.bytes_sent > 0 {
                    progress(e)
                } else {
                    "-".to_owned()
                };
                (WAITING.to_owned(), p)
            } else {
                (e.state.to_string(), progress(e))
            };
            let mut row = [
                entry_id(e).unwrap_or("-").to_owned(),
                state,
                progress,
                human_size(e.size),
                age(e.updated_at, facts.now),
                e.mapping.clone(),
                String::new(),
                n.clone().unwrap_or_default(),
            ]
            .map(|cell| sanitize(&cell));
            // (Sanitized already, then shortened: never an escape cut in half.)
            row[6] = file;
            row
        })
        .collect();
    let mut widths = [0usize; 8];
    for (i, h) in headers.iter().enumerate() {
        widths[i] = h.chars().count();
    }
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    push_line(&mut out, &header, &widths, columns, None);
    for (row, entry) in rows.iter().zip(entries) {
        let paint = if color {
            Some(if row[1] == WAITING {
                state_color(EntryState::Pending)
            } else {
                state_color(entry.state)
            })
        } else {
            None
        };
        push_line(&mut out, row, &widths, columns, paint);
    }
    if shortened {
        out.push_str(&format!(
            "(a FILE over {FILE_WIDTH} characters is shortened with …; `outbox status --json` has \
             every path whole)\n"
        ));
    }
    out
}

/// The widest FILE the table shows: a longer name is shortened in its middle, so one long
/// name does not push every row's NOTE far to the right.
const FILE_WIDTH: usize = 48;

/// Each row's FILE, sanitized, and shortened past [`FILE_WIDTH`] keeping its start and its end
/// (where the extension is); two long names that would look the same keep more of themselves
/// until they differ (or are whole).
fn shown_files(entries: &[LedgerEntry], facts: &Facts<'_>) -> Vec<String> {
    let whole: Vec<String> = entries
        .iter()
        .map(|e| sanitize(&facts.file_shown(e)))
        .collect();
    let mut width = vec![FILE_WIDTH; whole.len()];
    loop {
        let shown: Vec<String> = whole
            .iter()
            .zip(&width)
            .map(|(f, w)| elide(f, *w))
            .collect();
        // The rows whose shortened FILE another file's also is.
        let mut by_shown: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, s) in shown.iter().enumerate() {
            by_shown.entry(s.as_str()).or_default().push(i);
        }
        let mut grew = false;
        for rows in by_shown.values() {
            let differ = rows.iter().any(|&i| whole[i] != whole[rows[0]]);
            if !differ {
                continue;
            }
            for &i in rows {
                if width[i] < whole[i].chars().count() {
                    width[i] += 16;
                    grew = true;
                }
            }
        }
        if !grew {
            return shown;
        }
    }
}

/// `s` in at most `max` characters: its start, `…`, and its last third.
fn elide(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_owned();
    }
    let tail = max / 3;
    let head = max.saturating_sub(tail + 1);
    let start: String = s.chars().take(head).collect();
    let end: String = s.chars().skip(n - tail).collect();
    format!("{start}…{end}")
}

/// One line: cells padded to their column (the last one not), the state cell coloured after
/// padding so escape codes do not upset the alignment.
fn push_line(
    out: &mut String,
    cells: &[String],
    widths: &[usize; 8],
    columns: usize,
    paint: Option<&str>,
) {
    let mut line = String::new();
    for (i, cell) in cells.iter().take(columns).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        let pad = widths[i].saturating_sub(cell.chars().count());
        let last = i + 1 == columns;
        // Numbers read better right-aligned.
        let right = i == 2 || i == 3;
        if right {
            line.push_str(&" ".repeat(pad));
        }
        match (i, paint) {
            (1, Some(code)) => {
                line.push_str(code);
                line.push_str(cell);
                line.push_str("\x1b[0m");
            }
            _ => line.push_str(cell),
        }
        if !right && !last {
            line.push_str(&" ".repeat(pad));
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

fn state_color(state: EntryState) -> &'static str {
    match state {
        EntryState::Done => "\x1b[32m",
        EntryState::Failed | EntryState::Rejected => "\x1b[31m",
        EntryState::Uploading => "\x1b[36m",
        EntryState::Pending => "\x1b[33m",
        EntryState::Settling | EntryState::Canceled => "\x1b[2m",
    }
}

/// The table's STATE of an `uploading` entry that the running agent holds back, with no request
/// of it out: throttled, Graph out of reach, a backoff, sign-in, the wait before a look, the
/// mailbox's budgets.
const WAITING: &str = "waiting";

/// Whether `e` is `uploading` in the ledger but waits, with nothing of it on its way: a file
/// that goes by one POST showed `uploading 0%` through a whole outage.
fn waits_to_send(e: &LedgerEntry, facts: &Facts<'_>) -> bool {
    e.state == EntryState::Uploading
        && facts.wait_of(e).is_some_and(|w| {
            matches!(
                w.reason,
                WaitReason::Unreachable
                    | WaitReason::Throttled
                    | WaitReason::Backoff
                    | WaitReason::SignIn
                    | WaitReason::Look
                    | WaitReason::BudgetTurn
                    | WaitReason::UploadBudget
                    | WaitReason::RequestBudget
            )
        })
}

fn progress(e: &LedgerEntry) -> String {
    match e.state {
        EntryState::Uploading if e.size > 0 => {
            format!(
                "{}%",
                (u128::from(e.bytes_sent.min(e.size)) * 100 / u128::from(e.size))
            )
        }
        EntryState::Uploading => "0%".to_owned(),
        EntryState::Done => "100%".to_owned(),
        _ => "-".to_owned(),
    }
}

fn error_text(e: &LedgerEntry) -> Option<String> {
    match e.state {
        EntryState::Failed | EntryState::Rejected => e.error.as_ref().map(|err| {
            // The agent's message may already start with the code ("ErrorItemNotFound (HTTP
            // 404): ..."): say it once.
            let text = if err.code.is_empty() || err.message.starts_with(&err.code) {
                err.message.clone()
            } else {
                format!("{}: {}", err.code, err.message)
            };
            sanitize(&crate::secret::redact(&text))
        }),
        _ => None,
    }
}

/// A row left `uploading` when no agent runs: the next `outbox run` asks the upload session
/// where it stands and goes on from there.
pub const INTERRUPTED: &str = "interrupted; resumes at next start";

/// The lines above the table: is an agent working on these entries, and is it paused (a
/// `paused:` line: why, until when; none when it is not)?
pub fn agent_header(facts: &Facts<'_>, state_dir: &std::path::Path) -> String {
    let mut out = match (facts.running, facts.pid) {
        (true, Some(pid)) => format!(
            "agent running (pid {pid}); state dir {}",
            crate::outside::path(state_dir)
        ),
        (true, None) => format!(
            "agent running; state dir {}",
            crate::outside::path(state_dir)
        ),
        (false, _) => format!(
            "agent not running; state dir {} (`outbox run`, or `outbox service install`, starts it)",
            crate::outside::path(state_dir)
        ),
    };
    if let Some(w) = facts.view.and_then(|v| v.paused.as_ref()) {
        out.push_str("\npaused: ");
        out.push_str(&sanitize(&wait_text(w, None, facts.now)));
    }
    for h in facts.view.map(|v| v.held.as_slice()).unwrap_or_default() {
        out.push_str("\npaused: ");
        out.push_str(&sanitize(&held_text(h, facts.now)));
    }
    out
}

/// A pause of `outbox pause`, as `status`, `pause` and `resume` say it.
pub fn held_text(h: &crate::agent::control::Held, now: OffsetDateTime) -> String {
    let (what, resume) = match &h.mapping {
        Some(m) => (format!("mapping {m}"), format!("`outbox resume {m}`")),
        None => ("every mapping".to_owned(), "`outbox resume`".to_owned()),
    };
    let until = match h.until_ms {
        Some(_) => format!("resumes by itself {} or at {resume}", at(h.until_ms, now)),
        None => format!("until {resume}"),
    };
    let files = match h.files {
        0 => "no file left waiting yet".to_owned(),
        1 => "1 file left waiting in its folder".to_owned(),
        n => format!("{n} files left waiting in their folder"),
    };
    format!(
        "{what} by `outbox pause`, {until}; takes no new file ({files}), uploads under way finish"
    )
}

/// Control characters in file names or messages would break the table (or the terminal), and
/// bidi controls make a name read as another (`Scan_\u{202e}fdp.exe` as "…exe.pdf"): every
/// cell and line of `status` goes through the one printable-text function.
fn sanitize(s: &str) -> String {
    crate::outside::printable(s).into_owned()
}

pub use crate::config::units::human_size;

/// How long ago `then` was: "just now", "42s ago", "3m ago", "5h ago", "12d ago".
pub fn age(then: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - then).whole_seconds();
    match secs {
        s if s < 1 => "just now".to_owned(),
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{NewEntry, Target};

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    fn entry(state: EntryState) -> LedgerEntry {
        let mut e = LedgerEntry::new(
            NewEntry {
                mapping: "reports".into(),
                path: "/home/u/Outbox/reports/Q3 report.pdf".into(),
                name: "Q3 report.pdf".into(),
                target: Target::default(),
                size: 4 * 1024 * 1024,
                mtime_ns: 0,
            },
            state,
            at(1_700_000_000),
        );
        e.id = "0123456789ab".into();
        e
    }

    #[test]
    fn long_files_are_shortened_and_still_told_apart() {
        let named = |name: &str| {
            let mut e = entry(EntryState::Pending);
            e.path = format!("/d/{name}").into();
            e.name = name.into();
            e
        };
        let (a, b) = (
            format!("{}A{}.pdf", "x".repeat(100), "y".repeat(100)),
            format!("{}B{}.pdf", "x".repeat(100), "y".repeat(100)),
        );
        let entries = vec![named(&a), named(&b), named("short.txt"), named(&a)];
        let shown = shown_files(&entries, &Facts::offline(at(1_700_000_000)));
        assert_eq!(shown[2], "short.txt");
        assert!(
            shown[0].contains('…') && shown[0].ends_with(".pdf"),
            "{shown:?}"
        );
        assert_ne!(shown[0], shown[1], "two files shown alike");
        // The same file twice (two versions) is shown alike, and short still.
        assert_eq!(shown[0], shown[3]);
        assert!(shown[0].chars().count() < a.len(), "{shown:?}");
    }

    fn running(now: OffsetDateTime) -> Facts<'static> {
        Facts {
            running: true,
            pid: Some(42),
            view: None,
            now,
            capped: Vec::new(),
            sent_copy: Vec::new(),
            folders: Vec::new(),
        }
    }

    const KEYS: [&str; 17] = [
        "message",
        "id",
        "mapping",
        "path",
        "path_bytes",
        "size",
        "sha256",
        "state",
        "bytes_sent",
        "attachment_id",
        "attempts",
        "error",
        "updated_at",
        "waiting_for",
        "waiting_until",
        "note",
        "agent_pid",
    ];

    #[test]
    fn json_has_exactly_the_spec_keys_with_nulls() {
        let mut failed = entry(EntryState::Failed);
        failed.error = Some(EntryError::new(
            "ErrorItemNotFound",
            "The item was deleted.",
        ));
        failed.sha256 = Some("ab".repeat(32));
        let json = render_json(
            &[entry(EntryState::Pending), failed],
            &[],
            &Facts::offline(at(1_700_000_000)),
        );
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let rows = value.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        for row in rows {
            let obj = row.as_object().unwrap();
            let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
            keys.sort();
            let mut want = KEYS.to_vec();
            want.sort();
            assert_eq!(keys, want);
        }
        let pending = &rows[0];
        assert_eq!(pending["waiting_for"], "agent");
        assert_eq!(pending["note"], "waits for the agent (`outbox run`)");
        for k in [
            "sha256",
            "attachment_id",
            "error",
            "waiting_until",
            "agent_pid",
        ] {
            assert!(pending[k].is_null(), "{k} should be null: {pending}");
        }
        assert_eq!(pending["state"], "pending");
        assert_eq!(pending["updated_at"], "2023-11-14T22:13:20Z");
        assert_eq!(pending["path"], "/home/u/Outbox/reports/Q3 report.pdf");
        assert_eq!(rows[1]["error"]["code"], "ErrorItemNotFound");
        assert_eq!(rows[1]["error"]["message"], "The item was deleted.");
        assert_eq!(render_json(&[], &[], &Facts::offline(at(0))).trim(), "[]");
        assert!(rows[0]["message"].is_null());
    }

    #[test]
    fn table_shows_progress_age_and_errors() {
        let mut up = entry(EntryState::Uploading);
        up.bytes_sent = 1024 * 1024;
        let mut failed = entry(EntryState::Failed);
        failed.error = Some(EntryError::new("ErrorAccessDenied", "Access is denied."));
        let table = render_table(&[up, failed], &running(at(1_700_000_000 + 180)), false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[0].starts_with("ID") && lines[0].ends_with("NOTE"),
            "{table}"
        );
        assert!(
            lines[1].contains("uploading") && lines[1].contains("25%"),
            "{table}"
        );
        assert!(
            lines[1].contains("4.0 MiB") && lines[1].contains("3m ago"),
            "{table}"
        );
        assert!(lines[1].contains("Q3 report.pdf"), "{table}");
        assert!(
            lines[2].contains("ErrorAccessDenied: Access is denied."),
            "{table}"
        );
        // Columns line up: the state column starts at the same offset in every row.
        let col = lines[0].find("STATE").unwrap();
        assert_eq!(lines[1].find("uploading"), Some(col));
        assert_eq!(lines[2].find("failed"), Some(col));
    }

    #[test]
    fn table_without_errors_has_no_error_column_and_colour_is_optional() {
        let plain = render_table(
            &[entry(EntryState::Done)],
            &running(at(1_700_000_000)),
            false,
        );
        assert!(
            !plain.contains("NOTE") && !plain.contains('\x1b'),
            "{plain}"
        );
        assert!(
            plain.contains("100%") && plain.contains("just now"),
            "{plain}"
        );
        let coloured = render_table(
            &[entry(EntryState::Done)],
            &running(at(1_700_000_000)),
            true,
        );
        assert!(coloured.contains("\x1b[32mdone\x1b[0m"), "{coloured:?}");
        assert_eq!(render_table(&[], &running(at(0)), false), "No entries.\n");
    }

    #[test]
    fn rows_and_header_say_what_the_agent_waits_for_and_until_when() {
        let now = at(1_700_000_000);
        let mut settling = entry(EntryState::Settling);
        settling.id = "settling0001".into();
        let pending = entry(EntryState::Pending);
        let wait = |reason, secs: u64, error: Option<&str>, attempts| Wait {
            reason,
            until_ms: Some((1_700_000_000 + secs) * 1000),
            error: error.map(str::to_owned),
            attempts,
        };
        let view = AgentView {
            paused: None,
            waits: vec![
                (
                    pending.id.clone(),
                    wait(WaitReason::Backoff, 75, Some("HTTP 500"), 2),
                ),
                (settling.id.clone(), wait(WaitReason::Settle, 2, None, 0)),
            ],
            held: Vec::new(),
            folders: Vec::new(),
            config: None,
            config_read_ms: None,
            resumed: None,
        };
        let facts = Facts {
            running: true,
            pid: Some(7),
            view: Some(&view),
            now,
            capped: Vec::new(),
            sent_copy: Vec::new(),
            folders: Vec::new(),
        };
        let table = render_table(&[pending, settling], &facts, false);
        assert!(
            table.contains(
                "backing off after an error (HTTP 500, attempt 2); tries again at 22:14:35 UTC (in 1m 15s)"
            ),
            "{table}"
        );
        assert!(
            table.contains("settling: checked again at 22:13:22 UTC (in 2s)"),
            "{table}"
        );
        let header = agent_header(&facts, std::path::Path::new("/s"));
        assert_eq!(header, "agent running (pid 7); state dir /s");
        let paused = AgentView {
            paused: Some(wait(WaitReason::SignIn, 30, Some("no token"), 0)),
            waits: Vec::new(),
            held: vec![crate::agent::control::Held {
                mapping: Some("scans".into()),
                until_ms: Some((1_700_000_000 + 600) * 1000),
                files: 2,
            }],
            folders: Vec::new(),
            config: None,
            config_read_ms: None,
            resumed: None,
        };
        let facts = Facts {
            view: Some(&paused),
            ..facts
        };
        assert_eq!(
            agent_header(&facts, std::path::Path::new("/s")),
            "agent running (pid 7); state dir /s\npaused: waits for sign-in (no token); tries again at 22:13:50 UTC (in 30s)\n\
             paused: mapping scans by `outbox pause`, resumes by itself at 22:23:20 UTC (in 10m 0s) or at `outbox resume scans`; takes no new file (2 files left waiting in their folder), uploads under way finish"
        );
        let mut moved = entry(EntryState::Done);
        moved.after_failed = true;
        moved.error = Some(EntryError::new("afterAction", "read-only"));
        let json = render_json(&[moved], &[], &facts);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v[0]["note"],
            "read-only; not tried again by itself: fix it, then `outbox retry 0123456789ab`"
        );
        assert_eq!(v[0]["agent_pid"], 7);
        assert!(v[0]["waiting_for"].is_null());
    }

    #[test]
    fn error_column_redacts_upload_tokens() {
        let mut failed = entry(EntryState::Failed);
        failed.error = Some(EntryError::new(
            "io",
            "PUT https://x/up?authtoken=SECRET123 failed",
        ));
        let table = render_table(&[failed], &running(at(1_700_000_000)), false);
        assert!(!table.contains("SECRET123"), "{table}");
    }

    #[test]
    fn sizes_ages_and_state_filter() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(157_286_400), "150.0 MiB");
        assert_eq!(age(at(100), at(100)), "just now");
        assert_eq!(age(at(200), at(100)), "just now");
        assert_eq!(age(at(0), at(59)), "59s ago");
        assert_eq!(age(at(0), at(7200)), "2h ago");
        assert_eq!(age(at(0), at(3 * 86_400)), "3d ago");
        assert_eq!(
            parse_state_filter("Failed"),
            Ok(StateFilter {
                entry: Some(EntryState::Failed),
                message: Some(MessageState::Failed)
            })
        );
        assert_eq!(
            parse_state_filter("unconfirmed"),
            Ok(StateFilter {
                entry: None,
                message: Some(MessageState::Unconfirmed)
            })
        );
        let e = parse_state_filter("lost").unwrap_err();
        assert!(
            e.contains("expected one of") && e.contains("uploading") && e.contains("unconfirmed"),
            "{e}"
        );
    }

    fn message(state: MessageState, files: &[&str]) -> MessageRecord {
        MessageRecord {
            id: "m0123456789ab".into(),
            mapping: "scans".into(),
            user: "me".into(),
            letter: crate::core::model::Letter {
                to: vec!["ap@contoso.example".into()],
                cc: vec!["boss@contoso.example".into()],
                bcc: Vec::new(),
                subject: "Scan Q3 report".into(),
                body: "Attached: Q3 report.pdf".into(),
                html: false,
            },
            files: files.iter().map(|f| f.to_string()).collect(),
            send: true,
            state,
            draft_id: Some("AAMkDraft".into()),
            may_exist: false,
            effect_at: None,
            send_at: None,
            resend_if_draft: false,
            redraft: false,
            last_send_at: (state == MessageState::Sent).then_some(Time(1_699_999_999_000)),
            draft_gone_at: None,
            internet_message_id: Some("<abc@contoso.example>".into()),
            sent_at: (state == MessageState::Sent).then_some(Time(1_700_000_000_000)),
            unseen: false,
            keyed: false,
            keys: Vec::new(),
            resplit: false,
            part: None,
            letter_stale: false,
            not_before: None,
            attempts: 0,
            error: (state == MessageState::Unconfirmed).then(|| {
                EntryError::new(
                    "sendUnconfirmed",
                    "the send's answer was lost and no sent copy was found",
                )
            }),
            seq: 1,
            created_at: Time(1_700_000_000_000),
            updated_at: Time(1_700_000_000_000),
        }
    }

    #[test]
    fn messages_show_in_json_on_their_entries_and_as_blocks_in_the_table() {
        let done = entry(EntryState::Done);
        let mut other = entry(EntryState::Pending);
        other.id = "fedcba987654".into();
        let sent = message(MessageState::Sent, &["0123456789ab"]);
        let json = render_json(
            &[done.clone(), other.clone()],
            std::slice::from_ref(&sent),
            &Facts::offline(time::OffsetDateTime::now_utc()),
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v[0]["message"]["id"], "m0123456789ab");
        assert_eq!(v[0]["message"]["state"], "sent");
        assert_eq!(v[0]["message"]["to"][0], "ap@contoso.example");
        assert_eq!(v[0]["message"]["subject"], "Scan Q3 report");
        assert_eq!(
            v[0]["message"]["internet_message_id"],
            "<abc@contoso.example>"
        );
        assert_eq!(v[0]["message"]["sent_at"], "2023-11-14T22:13:20Z");
        assert!(v[1]["message"].is_null());
        let text = render_messages(
            &[sent, message(MessageState::Unconfirmed, &["0123456789ab"])],
            &[done],
            at(1_700_000_000 + 120),
            120_000,
            true,
        );
        insta::assert_snapshot!(text);
    }

    /// A file of a message that a newer version superseded said a bare "(canceled)", as if
    /// someone canceled it: it says "(superseded)", as its row's note does.
    #[test]
    fn a_superseded_file_of_a_message_says_superseded() {
        let mut old = entry(EntryState::Canceled);
        old.error = Some(EntryError::new(
            crate::core::machine::SUPERSEDED,
            "a newer version of the file replaced this one before it was attached",
        ));
        let mut gone = entry(EntryState::Canceled);
        gone.id = "fedcba987654".into();
        gone.error = Some(EntryError::new("canceled", "canceled by `outbox cancel`"));
        let text = render_messages(
            &[message(
                MessageState::Failed,
                &["0123456789ab", "fedcba987654"],
            )],
            &[old, gone],
            at(1_700_000_000 + 120),
            120_000,
            true,
        );
        assert!(
            text.contains("0123456789ab Q3 report.pdf (superseded)"),
            "{text}"
        );
        assert!(
            text.contains("fedcba987654 Q3 report.pdf (canceled)"),
            "{text}"
        );
    }

    #[test]
    fn a_state_filter_keeps_messages_and_their_entries() {
        let done = entry(EntryState::Done);
        let mut failed = entry(EntryState::Failed);
        failed.id = "fedcba987654".into();
        let unconfirmed = message(MessageState::Unconfirmed, &["0123456789ab"]);
        let f = parse_state_filter("unconfirmed").unwrap();
        let (mut es, mut ms) = (
            vec![done.clone(), failed.clone()],
            vec![unconfirmed.clone()],
        );
        filter_rows(&mut es, &mut ms, f, true);
        assert_eq!(
            es.len(),
            1,
            "the entry of the unconfirmed message stays in --json"
        );
        assert_eq!(es[0].id, "0123456789ab");
        assert_eq!(ms.len(), 1);
        let (mut es, mut ms) = (vec![done, failed], vec![unconfirmed]);
        filter_rows(&mut es, &mut ms, f, false);
        assert!(
            es.is_empty(),
            "the table filters entries by their own state"
        );
        assert_eq!(ms.len(), 1);
        let f = parse_state_filter("failed").unwrap();
        filter_rows(&mut es, &mut ms, f, false);
        assert!(ms.is_empty());
    }
}
