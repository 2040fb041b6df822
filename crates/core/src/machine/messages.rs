//! Messages: more states of the same machine (SPEC: Sending). A file that settles in a mailing
//! mapping becomes an entry like any other; a message is made of one entry (`group = "file"`)
//! or of the entries that settled within `batch_quiet` (`group = "batch"`, split to fit
//! `max_message_size`). Its life: `Drafting` (create a draft carrying the message id as its
//! marker; after a lost answer, find it by the marker before creating another), `Attaching`
//! (its entries upload to the draft exactly as to any item), `Sending` (only once every entry
//! is `done`; paced per mailbox; a send whose answer was lost is confirmed in Sent Items by the
//! marker and never repeated), then `Sent`, `Drafted` (`send = false`), `Failed` or
//! `Unconfirmed` (the send could not be told: `retry` sends only if the draft is still a
//! draft). An entry's after-action runs once its message is sent (or drafted).

use super::*;
use crate::mail::{
    encoded_attachment_size, human_size, part_subject, render_body, render_str, split_batch,
    FileFacts, RenderContext, MESSAGE_OVERHEAD,
};

/// A message with work left (or whose files still wait for its outcome), and what only this
/// run knows of it.
#[derive(Debug, Clone)]
pub(super) struct ActiveMessage {
    pub(super) rec: MessageRecord,
    /// A request of it is in flight.
    pub(super) busy: bool,
    /// Not before this time (backoff, Retry-After, pacing, a confirmation's wait).
    pub(super) wait_until: Option<Time>,
    /// Sent Items was searched and did not hold it (a `retry` looks in Drafts next).
    pub(super) sent_checked: bool,
    /// The files that left the active set, as they last were.
    pub(super) finished: BTreeMap<String, Record>,
    /// The draft was listed and holds exactly its files' attachments: it may be sent.
    pub(super) verified: bool,
    /// What that listing showed: the send carries it (`SendDraft::expect`), and the executor
    /// checks the draft still holds exactly these right before it sends ([`DRAFT_CHANGED`]).
    pub(super) listed: Vec<String>,
    /// Attachments on the draft that are none of its files' (a partial one a server made, a
    /// copy whose answer was lost, one added by hand): deleted before the send.
    pub(super) extra: Vec<String>,
    /// Listings that missed one of its files' attachments (a listing that lags).
    pub(super) short_lists: u32,
    /// Stray attachments deleted from its draft: one listed again is a listing that lags.
    pub(super) deleted: BTreeSet<String>,
    /// `last_send_at` as it was before the send in flight: what a refusal of that send puts
    /// back (a send refused before any effect adds nothing, and takes nothing away).
    pub(super) send_before: Option<Time>,
    /// A keyed message found in neither folder: the whole mailbox is asked next.
    pub(super) rechecked: bool,
    /// The keys of the `StampKeys` in flight (what its draft carries once it is answered).
    pub(super) stamping: Vec<String>,
    /// The mailbox was searched for other messages holding its files' keys, and none wins over
    /// it: it may be sent (asked again after a restart, a `retry`, or a change of its draft).
    pub(super) rivals_checked: bool,
    /// The files of the `FindRivals` in flight, in the order of its keys.
    pub(super) checking: Vec<String>,
    /// When this run learnt its draft exists (its create answered, or it was found): the check
    /// for rivals waits [`RIVAL_SETTLE_MS`] from then.
    pub(super) drafted_at: Option<Time>,
    /// Graph refused to delete its abandoned draft: left (said on the message), not asked again
    /// in this run.
    pub(super) keep_draft: bool,
    /// The letter of the `SetLetter` in flight.
    pub(super) lettering: Option<Letter>,
    /// `mail --key` that sends: when this run first found an earlier run's draft, still a
    /// draft (held, Sent Items asked meanwhile, until Exchange's move has surely had time).
    pub(super) keyed_found: Option<Time>,
    /// The id of its sent copy, found in Sent Items by this run after its draft was sent from
    /// Outlook: a file whose request on the draft was under way then is looked for there once
    /// answered (the draft's id answers 404 now, which is not "not there").
    pub(super) sent_copy: Option<String>,
    /// Looked for by its marker at start only because no draft was on record (a restored
    /// ledger may have forgotten one): not found in either folder, it is drafted at once, with
    /// no wait for Exchange's move (a restore comes once every move is over).
    pub(super) marker_look: bool,
}

/// The step a message takes next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MStep {
    /// Nothing now (files still attaching, a wait, finished).
    Idle,
    CreateDraft,
    Find(MailFolder),
    ListDraft,
    DeleteExtra(String),
    /// Its draft's file keys set to its files' keys now (a newer version took a place).
    StampKeys,
    /// Other messages holding its files' keys looked for (two agents on one folder).
    CheckRivals,
    /// Its draft's subject and body set to its letter made again (a file left it).
    SetLetter,
    Send,
    /// Its abandoned draft deleted.
    DeleteDraft,
    /// A change of state with no request.
    Local,
}

/// What a message's files say (see `files_state`).
struct FilesState {
    all_done: bool,
    failed: Option<(String, Failure)>,
    dropped: Vec<String>,
}

/// Error code of a message none of whose files is left (canceled or deleted before sending).
pub const NO_FILES_LEFT: &str = "noFilesLeft";

/// Error code of a message whose draft's listing, asked again, still lacks an attachment a
/// file of it is done with (removed by hand in Outlook; or a ledger restored from a backup
/// remembers a copy since replaced): never sent short of a file. Such a file is marked
/// (`Record::verify_failed`) and `retry` attaches it again.
pub const ATTACHMENT_MISSING: &str = "attachmentMissing";

/// Error code of a message that gave way to another message in the mailbox holding its files'
/// keys (an older draft, or a sent copy: another agent on the same folder mails them). Its
/// draft is deleted; its files are found mailed, held by the other draft, or go in a new
/// message. Not a failure of the user's: `run --once` does not count it.
pub const MAILED_ELSEWHERE: &str = "mailedElsewhere";
/// The end of an unconfirmed message's error: what the agent's ledger lets a person do (`outbox
/// mail`, with no ledger, says its own).
pub const UNCONFIRMED_ADVICE: &str = "; it was not sent again. Look in Sent Items; `outbox retry` \
sends it only if its draft is still a draft";

/// How long after its draft exists a message's check for rivals waits: `createdDateTime` has a
/// grain of one second, so a draft made in the same second as this one (which the order by
/// creation may put first) surely exists when the mailbox is searched.
pub const RIVAL_SETTLE_MS: u64 = 2_000;
/// The executor's answer to a send whose draft, listed again right before the `send` (after
/// every wait of the executor's own: the sending limit's slot, the request budget), no longer
/// holds exactly the attachments the core's listing showed (a file taken off it in Outlook), or
/// could not be listed: nothing was sent; the core lists it again (`verified` cleared) and
/// decides. A person's edit after that check is a race of milliseconds no client can close
/// (Graph's `send` takes no condition).
pub const DRAFT_CHANGED: &str = "draftChanged";
/// How a message's failure that stopped it before its send ends; left out where the message
/// is unconfirmed (an earlier send of it in doubt), which it would contradict.
const NOT_SENT: &str = "; the message was not sent";

/// Code of the note on a `done` file found already mailed by its key (not mailed again).
pub const FOUND_MAILED: &str = "foundMailed";

/// Error code of a file held by a draft in the mailbox that carries its key.
pub const HELD_BY_DRAFT: &str = "heldByDraft";

/// Searches in a row that find a file's key on a draft before the file fails (explained,
/// never mailed): with the waits of [`held_backoff_ms`], about half an hour by default.
pub const HELD_TRIES: u32 = 5;

/// The wait before the `n`th search again of a key found on a draft: `look_after` (the time
/// an answer may still be on its way; 2 minutes by default), doubling, at most fifteen minutes.
pub fn held_backoff_ms(look_after_ms: u64, n: u32) -> u64 {
    (look_after_ms.max(1) << n.saturating_sub(1).min(8)).min(900_000)
}

/// Error code of a file alone over `max_message_size`.
pub const MESSAGE_TOO_LARGE: &str = "messageTooLarge";

/// Error code of a message Graph refused for its size whose files `retry` made into new
/// messages that fit (`Machine::resplit`): its draft is deleted, it holds no file, and there
/// is nothing left to retry. Not a failure of the user's: `run --once` does not count it.
pub const SPLIT_AGAIN: &str = "splitAgain";

impl Machine {
    pub(super) fn mail_rule(&self, mapping: &str) -> Option<&MailRule> {
        self.mappings.get(mapping).and_then(|m| m.mail.as_ref())
    }

    /// The messages with work left, or whose files wait for them.
    pub fn messages(&self) -> impl Iterator<Item = &MessageRecord> + '_ {
        self.messages.values().map(|m| &m.rec)
    }

    /// As [`Machine::messages_quiet`], but files held by their mapping's `max_messages` cap
    /// count as quiet (they wait for a window, not for work).
    pub(super) fn messages_quiet_but_capped(&self) -> bool {
        self.collecting
            .keys()
            .all(|m| self.capped_until(m).is_some())
            && self.messages.values().all(|m| !self.message_at_work(m))
    }

    pub(super) fn messages_quiet(&self) -> bool {
        self.collecting.is_empty() && self.messages.values().all(|m| !self.message_at_work(m))
    }

    fn message_at_work(&self, m: &ActiveMessage) -> bool {
        m.busy || (m.rec.at_work() && !m.keep_draft) || self.abandons(m)
    }

    /// Whether message `m`'s draft is to be deleted now: abandoned (see
    /// `MessageRecord::draft_abandoned`), or failed in `outbox mail` (`delete_failed_draft`);
    /// never one a send of which may have happened, nor one Graph refused to delete.
    fn abandons(&self, m: &ActiveMessage) -> bool {
        let r = &m.rec;
        !m.keep_draft
            && (r.draft_abandoned()
                || (r.state == MessageState::Failed
                    && r.draft_id.is_some()
                    && !r.may_have_been_sent()
                    && self
                        .mail_rule(&r.mapping)
                        .is_some_and(|rule| rule.delete_failed_draft)))
    }

    /// The item an entry of a message goes to: its draft, once there is one.
    pub(super) fn draft_target(&self, rec: &Record) -> Option<Target> {
        let m = self.messages.get(rec.message.as_deref()?)?;
        Some(Target {
            user: m.rec.user.clone(),
            kind: ItemKind::Message,
            item_id: m.rec.draft_id.clone()?,
        })
    }

    /// Whether entry `id` is in a message not yet sent (nor left as a draft).
    pub(super) fn message_pending(&self, id: &str) -> bool {
        self.member_of
            .get(id)
            .and_then(|m| self.messages.get(m))
            .is_some_and(|m| !matches!(m.rec.state, MessageState::Sent | MessageState::Drafted))
    }

    /// Whether entry `id` is a file of a mailing mapping whose request was about another item
    /// than its message's draft now (a draft it was bound to, since replaced; or it is in no
    /// message now: it was canceled, and retried), or about a draft its message is looking
    /// for again (`retry` of a message whose draft went; the request was under way then).
    pub(super) fn gone_old_draft(&self, id: &str) -> bool {
        let Some(a) = self.active.get(id) else {
            return false;
        };
        if a.rec.message.is_none() && self.mail_rule(&a.rec.mapping).is_none() {
            return false;
        }
        let Some(looked) = a.item() else {
            return false;
        };
        let draft = a
            .rec
            .message
            .as_deref()
            .and_then(|m| self.messages.get(m))
            .filter(|m| m.rec.files.contains(&a.rec.id))
            .and_then(|m| m.rec.draft_id.as_deref().filter(|_| !m.rec.redraft));
        draft != Some(looked.item_id.as_str())
    }

    /// A request of entry `id` on its message's draft answered `ErrorItemNotFound`: the draft
    /// was sent from Outlook, or deleted by hand. The message, never sent by this agent, looks
    /// for its draft as a `retry` does (`redraft`): sent, a file not on it goes in a new
    /// message (one in doubt is looked for in the sent copy); still a draft, it goes on; gone,
    /// a new draft. `unbind`: the request was a POST or an upload session, nothing of which
    /// landed (before, the file failed and the user's `retry` mailed it: seed 15696); a look
    /// keeps its doubt (the copy may have gone in the sent message). Whether it did so.
    pub(super) fn draft_vanished(&mut self, id: &str, unbind: bool, out: &mut Vec<Action>) -> bool {
        let Some(a) = self.active.get(id) else {
            return false;
        };
        let Some(item) = a.item().map(|t| t.item_id.clone()) else {
            return false;
        };
        let Some(mid) = a.rec.message.clone() else {
            return false;
        };
        let Some(m) = self.messages.get_mut(&mid) else {
            return false;
        };
        if m.rec.redraft
            && m.rec.draft_id.as_deref() == Some(item.as_str())
            && m.rec.files.iter().any(|f| f == id)
        {
            // Its message already looks for this draft (another file's 404 came first): it
            // waits for that answer too, its doubt kept (seed 1019742: taken for a draft gone
            // for good, its copy sent by hand was mailed again).
            if unbind {
                self.unbind(id, out);
            }
            return true;
        }
        if m.rec.state == MessageState::Sent
            && !m.rec.keyed
            && m.rec.draft_id.as_deref() == Some(item.as_str())
            && m.rec.files.iter().any(|f| f == id)
        {
            // Its message was found sent (its draft sent from Outlook) while this request was
            // under way: the file was not on it when it went, or its copy is in doubt there.
            // It leaves the message now, as the files split off when it was found did (seeds
            // 344711, 379727, 637820, 736778: it failed on the 404, though nothing failed).
            let Some(copy) = m.sent_copy.clone() else {
                // (Not known to this run: its doubt is not settled by the draft's 404.)
                return false;
            };
            if unbind {
                // A POST or session: nothing of it landed.
                self.unbind(id, out);
            }
            self.split_off_unattached(&mid, Some(&copy), out);
            self.persist_message(&mid, out);
            return true;
        }
        if m.rec.state != MessageState::Attaching
            || m.rec.redraft
            || m.rec.may_have_been_sent()
            || m.rec.draft_id.as_deref() != Some(item.as_str())
            || !m.rec.files.iter().any(|f| f == id)
        {
            return false;
        }
        m.rec.state = MessageState::Drafting;
        m.rec.redraft = true;
        m.rec.draft_gone_at = None;
        m.sent_checked = false;
        m.rec.updated_at = self.now;
        self.persist_message(&mid, out);
        self.msg_ready.insert(mid);
        if unbind {
            self.unbind(id, out);
        }
        true
    }

    /// Whether `r` is bound to the draft its message is looking for again (`redraft`).
    pub(super) fn draft_sought(&self, r: &Record) -> bool {
        let Some(m) = r.message.as_deref().and_then(|id| self.messages.get(id)) else {
            return false;
        };
        m.rec.redraft
            && m.rec.files.contains(&r.id)
            && r.target.as_ref().map(|t| t.item_id.as_str()) == m.rec.draft_id.as_deref()
    }

    /// Whether `att` is an attachment the message of entry `id` found to be no file's and is
    /// deleting (or has deleted): a look of the entry answered before that delete landed must
    /// not take it for the file's (the message would be sent without it).
    /// (The entry may have left the message: a canceled or superseded version whose copy is
    /// what the message deletes; so any message whose draft the entry looked on counts.)
    pub(super) fn stray_of_message(&self, id: &str, att: &str) -> bool {
        let Some(a) = self.active.get(id) else {
            return false;
        };
        let Some(item) = a.item() else {
            return false;
        };
        self.messages_on_draft(&item.item_id)
            .any(|m| m.extra.iter().any(|x| x == att) || m.deleted.contains(att))
    }

    /// The messages (known to this run) whose draft is item `item_id`.
    pub(super) fn messages_on_draft<'a>(
        &'a self,
        item_id: &'a str,
    ) -> impl Iterator<Item = &'a ActiveMessage> + 'a {
        self.messages
            .values()
            .filter(move |m| m.rec.draft_id.as_deref() == Some(item_id))
    }

    /// Whether an entry of a mailing mapping must wait for its message: it has none yet, or
    /// its draft is not made; for a done entry, the message is not sent (or drafted) yet.
    /// `Some(step)`: the entry's step instead of its own.
    pub(super) fn mail_gate(&self, r: &Record) -> Option<Step> {
        if self.mail_rule(&r.mapping).is_none() && r.message.is_none() {
            return None;
        }
        // Only a message that still counts it (a newer version may have taken its place).
        let m = r
            .message
            .as_deref()
            .and_then(|id| self.messages.get(id))
            .filter(|m| m.rec.files.contains(&r.id));
        if r.state == State::Done {
            // Attached to its mapping's item before the mapping began to mail (a reload, or a
            // restart with the new configuration): its after-action is still owed. (Not one
            // found on a message's draft: that copy is no mail of it.)
            let on_a_draft = || {
                r.target
                    .as_ref()
                    .is_some_and(|t| self.messages_on_draft(&t.item_id).next().is_some())
            };
            if r.message.is_none() && !on_a_draft() {
                return None;
            }
            if r.message.is_some() && m.is_none() && !self.member_of.contains_key(&r.id) {
                // Left its message (replaced by a newer version there): nothing waits on it.
                return None;
            }
            return match m.map(|m| (m.rec.state, m.rec.unseen)) {
                // Accepted but not yet seen in Sent Items: its after-action waits.
                Some((MessageState::Sent, true)) => Some(Step::Idle),
                Some((MessageState::Sent | MessageState::Drafted, _)) => None,
                Some((MessageState::Failed | MessageState::Unconfirmed, _)) | None => {
                    Some(Step::Finished)
                }
                Some(_) => Some(Step::Idle),
            };
        }
        if r.state.is_terminal() {
            return None;
        }
        let bound = r.may_exist || r.session.is_some() || !r.garbage.is_empty();
        // While its message looks for its draft again (it may be gone), not even a look there.
        if bound && !m.is_some_and(|m| m.rec.redraft) {
            return None;
        }
        match m {
            // (Not while its draft is looked for again: it may be gone. Nor before the draft
            // carries its key: sent from Outlook with its bytes and without its key, it would
            // be mailed again, issue 20.)
            Some(m)
                if m.rec.draft_id.is_some()
                    && !m.rec.redraft
                    && !m.rec.resplit
                    && !m.rec.state.is_terminal()
                    && self.key_of(r).is_none_or(|k| m.rec.keys.contains(&k)) =>
            {
                None
            }
            // A file of a message that failed or could not be confirmed waits for `retry`.
            _ => Some(Step::Idle),
        }
    }

    /// An entry that can do nothing until its message is retried (the message failed, or its
    /// send could not be confirmed).
    pub fn waits_for_retry(&self, r: &Record) -> bool {
        r.message
            .as_deref()
            .and_then(|m| self.messages.get(m))
            .is_some_and(|m| {
                matches!(
                    m.rec.state,
                    MessageState::Failed | MessageState::Unconfirmed
                )
            })
    }

    /// Something happened to entry `id`: its message looks again.
    pub(super) fn member_touched(&mut self, id: &str) {
        if let Some(mid) = self.member_of.get(id) {
            self.msg_ready.insert(mid.clone());
        }
    }

    /// Entry `rec` left the active set.
    pub(super) fn member_finished(&mut self, rec: Record) {
        if let Some(mid) = self.member_of.get(&rec.id).cloned() {
            if let Some(m) = self.messages.get_mut(&mid) {
                m.finished.insert(rec.id.clone(), rec);
            }
            self.msg_ready.insert(mid);
        }
    }

    // ---- making messages ----------------------------------------------------------------------

    /// A new version in a mailing mapping: it takes its older version's place in a message not
    /// yet sending, or waits to be put in one.
    pub(super) fn mail_new_version(
        &mut self,
        id: &str,
        older: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        let joined = older
            .and_then(|o| self.member_of.get(o).cloned())
            .filter(|mid| {
                self.messages.get(mid).is_some_and(|m| {
                    matches!(
                        m.rec.state,
                        MessageState::Drafting | MessageState::Attaching
                    )
                })
            });
        if let (Some(mid), Some(old)) = (joined, older) {
            let now = self.now;
            if let Some(m) = self.messages.get_mut(&mid) {
                for f in m.rec.files.iter_mut() {
                    if f == old {
                        *f = id.to_owned();
                    }
                }
                m.rec.updated_at = now;
                out.push(Action::PersistMessage(m.rec.clone()));
            }
            self.member_of.remove(old);
            // The older one no longer waits on the message (one that had left the active set,
            // done while the message had failed, comes back for what it has left to do).
            let back = self
                .messages
                .get_mut(&mid)
                .and_then(|m| m.finished.remove(old))
                .filter(|r| !self.active.contains_key(&r.id) && has_work(r));
            if let Some(r) = back {
                self.activate(r);
            }
            self.make_ready(old);
            self.member_of.insert(id.to_owned(), mid.clone());
            if let Some(a) = self.active.get_mut(id) {
                a.rec.message = Some(mid.clone());
                a.rec.updated_at = now;
                out.push(Action::Persist(a.rec.clone()));
            }
            self.msg_ready.insert(mid);
            return;
        }
        self.collect(id);
    }

    /// Put entry `id` with the files waiting for a message of its mapping (once the mailbox
    /// was searched for its key).
    pub(super) fn collect(&mut self, id: &str) {
        let Some(a) = self.active.get(id) else {
            return;
        };
        if self.needs_key_search(a) {
            self.make_ready(id);
            return;
        }
        let mapping = a.rec.mapping.clone();
        let Some(rule) = self.mail_rule(&mapping) else {
            return;
        };
        let quiet = if rule.batch { rule.batch_quiet_ms } else { 0 };
        let max_wait = match rule.batch_max_wait_ms {
            0 => u64::MAX,
            w => w.max(quiet),
        };
        let now = self.now;
        let c = self
            .collecting
            .entry(mapping)
            .or_insert_with(|| (Vec::new(), now, now));
        if !c.0.iter().any(|x| x == id) {
            c.0.push(id.to_owned());
        }
        // Each file that settles keeps the batch open for another `batch_quiet`, but not past
        // `batch_max_wait` after it opened: files arriving every few seconds cannot hold it open.
        c.1 = now.plus_ms(quiet).min(c.2.plus_ms(max_wait));
    }

    /// Batches whose quiet time is over become messages.
    pub(super) fn close_batches(&mut self, out: &mut Vec<Action>) {
        let due: Vec<String> = self
            .collecting
            .iter()
            .filter(|(_, (_, t, _))| *t <= self.now)
            .map(|(m, _)| m.clone())
            .collect();
        for mapping in due {
            if let Some((ids, _, _)) = self.collecting.remove(&mapping) {
                self.make_messages(&mapping, ids, out);
            }
        }
    }

    fn make_messages(&mut self, mapping: &str, ids: Vec<String>, out: &mut Vec<Action>) {
        let Some(rule) = self.mail_rule(mapping).cloned() else {
            return;
        };
        let user = self
            .mappings
            .get(mapping)
            .map(|m| m.target.user.clone())
            .unwrap_or_else(|| "me".to_owned());
        // The files still wanting a message, in the order they settled.
        let mut files: Vec<(u64, String)> = ids
            .iter()
            .filter_map(|id| self.active.get(id))
            .filter(|a| {
                a.rec.message.is_none()
                    && !a.rec.state.is_terminal()
                    && !a.rec.cancel_requested
                    && !self.needs_key_search(a)
            })
            .map(|a| (a.rec.seq, a.rec.id.clone()))
            .collect();
        files.sort();
        let mut facts: Vec<FileFacts> = Vec::new();
        let mut members: Vec<String> = Vec::new();
        let body_len = rule.body.len() as u64;
        // Under `max_message_size`, and under a size Graph refused in this run (its limit is
        // below that, whatever the config says).
        let refused = self.refused_sizes.get(mapping).copied();
        let limit = refused.map_or(rule.max_message_size, |r| r.min(rule.max_message_size));
        for (_, id) in files {
            let a = &self.active[&id];
            let f = FileFacts {
                name: a.rec.name.clone(),
                size: a.rec.file.size,
            };
            // A file alone over the limit fails, explained; the others go.
            if let Err(e) = split_batch(std::slice::from_ref(&f), limit, body_len) {
                let why = if limit < rule.max_message_size {
                    format!(
                        "{} cannot be mailed: alone it makes a message of about {} once \
                         encoded, and Graph refused a message of about {} for its size \
                         (ErrorMessageSizeExceeded): the tenant's limit is below \
                         max_message_size ({})",
                        a.rec.name,
                        human_size(e.needed),
                        human_size(limit.saturating_add(1)),
                        human_size(rule.max_message_size)
                    )
                } else {
                    format!("{} cannot be mailed: {e}", a.rec.name)
                };
                self.fail(&id, Failure::new(MESSAGE_TOO_LARGE, why), out);
                self.make_ready(&id);
                continue;
            }
            facts.push(f);
            members.push(id);
        }
        if members.is_empty() {
            return;
        }
        let Ok(parts) = split_batch(&facts, limit, body_len) else {
            return; // cannot be: each file fits alone
        };
        let date = civil_date(self.now, self.policy.utc_offset_ms);
        // The parts made now: those `max_messages` has room for (the rest wait and make a batch
        // of their own later), numbered among themselves, so one made alone is no "(1/2)".
        let n = match (rule.max_messages, self.cap_reached(mapping, &rule)) {
            (0, _) => parts.len(),
            (_, Some(_)) => parts.len(),
            (max, None) => {
                let made = self.made_times.get(mapping).map_or(0, |q| q.len());
                parts.len().min((max as usize).saturating_sub(made).max(1))
            }
        };
        for (k, range) in parts.into_iter().enumerate() {
            if let Some(until) = self.cap_reached(mapping, &rule) {
                // Over the mapping's `max_messages`: the rest wait for the window (a neighbour
                // dropping files cannot make the mailbox send without end).
                let rest = members[range.start..].to_vec();
                if self.capped.insert(mapping.to_owned(), until).is_none() {
                    out.push(Action::Notify(Note::MessagesCapped {
                        mapping: mapping.to_owned(),
                        until,
                        waiting: rest.len(),
                    }));
                }
                let now = self.now;
                let c = self
                    .collecting
                    .entry(mapping.to_owned())
                    .or_insert_with(|| (Vec::new(), until, now));
                for id in rest {
                    if !c.0.contains(&id) {
                        c.0.push(id);
                    }
                }
                c.1 = c.1.max(until);
                return;
            }
            self.capped.remove(mapping);
            self.made_times
                .entry(mapping.to_owned())
                .or_default()
                .push_back(self.now);
            let ctx = RenderContext {
                files: &facts[range.clone()],
                mapping,
                date: &date,
            };
            let subject = part_subject(&render_str(&rule.subject, &ctx), k, n);
            let body = render_body(&rule.body, &ctx, rule.html);
            let part = (n > 1).then_some((k as u32, n as u32));
            let seq = self.next_seq;
            self.next_seq += 1;
            self.ids_made += 1;
            let mid = format!(
                "m{}",
                make_id(
                    mapping,
                    Path::new(&members[range.start]),
                    seq,
                    self.now,
                    self.ids_made
                )
            );
            let rec = MessageRecord::drafting(
                mid.clone(),
                mapping.to_owned(),
                user.clone(),
                Letter {
                    to: rule.to.clone(),
                    cc: rule.cc.clone(),
                    bcc: rule.bcc.clone(),
                    subject,
                    body,
                    html: rule.html,
                },
                members[range.clone()].to_vec(),
                rule.send,
                seq,
                self.now,
            );
            let mut rec = rec;
            rec.part = part;
            // The message first: an entry names only a message that is on record.
            out.push(Action::PersistMessage(rec.clone()));
            for id in &members[range] {
                self.member_of.insert(id.clone(), mid.clone());
                if let Some(a) = self.active.get_mut(id) {
                    a.rec.message = Some(mid.clone());
                    a.rec.updated_at = self.now;
                    out.push(Action::Persist(a.rec.clone()));
                }
            }
            self.add_message(rec);
        }
    }

    // ---- the mailbox as the record of last resort ---------------------------------------------

    /// The key of a file of a mailing mapping (`None`: not hashed, or its mapping no longer
    /// mails, or does not search the mailbox: `outbox mail`).
    pub(super) fn key_of(&self, rec: &Record) -> Option<String> {
        let rule = self
            .mail_rule(&rec.mapping)
            .filter(|r| r.remember_sent_ms > 0)?;
        let user = &self.mappings.get(&rec.mapping)?.target.user;
        let rel = rec.path.strip_prefix(&rule.folder).unwrap_or(&rec.path);
        Some(file_key(
            user,
            &recipients_id(rule),
            rel,
            rec.file.size,
            rec.sha256.as_deref()?,
        ))
    }

    /// The record of file `f` of message `m` (active, or as it left the active set).
    fn member_record<'a>(&'a self, m: &'a ActiveMessage, f: &str) -> Option<&'a Record> {
        self.active
            .get(f)
            .map(|a| &a.rec)
            .or_else(|| m.finished.get(f))
    }

    /// Of message `mid`'s files, those with a key: (entry id, key, name).
    fn keyed_files(&self, mid: &str) -> Vec<(String, String, String, String)> {
        let Some(m) = self.messages.get(mid) else {
            return Vec::new();
        };
        m.rec
            .files
            .iter()
            .filter_map(|f| self.member_record(m, f))
            .filter_map(|r| {
                Some((
                    r.id.clone(),
                    self.key_of(r)?,
                    r.name.clone(),
                    r.sha256.clone()?,
                ))
            })
            .collect()
    }

    /// Whether message `m`, complete, still has to look for other messages holding its files'
    /// keys before it goes: never one a send of which may have happened (it was checked before
    /// that send, and its draft is never deleted), nor `outbox mail`'s (no keys).
    fn needs_rival_check(&self, m: &ActiveMessage) -> bool {
        !m.rivals_checked
            && !m.rec.may_have_been_sent()
            && !m.rec.keyed
            && !self.keyed_files(&m.rec.id).is_empty()
    }

    /// The keys of message `mid`'s files, stamped on its draft.
    fn keys_of_message(&self, mid: &str) -> Vec<String> {
        let Some(m) = self.messages.get(mid) else {
            return Vec::new();
        };
        m.rec
            .files
            .iter()
            .filter_map(|f| self.member_record(m, f))
            .filter_map(|r| self.key_of(r))
            .collect()
    }

    /// Whether the mailbox must be searched for this file's key before it is put in a message:
    /// a file of a mailing mapping, in no message yet, not searched clear in this run. (One the
    /// ledger knows to mail again, `mail_again`, too: a ledger restored from a backup does not
    /// know the drop that a lost later ledger mailed.)
    pub(super) fn needs_key_search(&self, a: &Active) -> bool {
        let r = &a.rec;
        !matches!(a.key, KeyLook::Clear)
            && r.message.is_none()
            && !r.state.is_terminal()
            && !r.cancel_requested
            && r.sha256.is_some()
            && !r.may_exist
            && r.session.is_none()
            && r.garbage.is_empty()
            && self
                .mail_rule(&r.mapping)
                .is_some_and(|m| m.remember_sent_ms > 0)
    }

    /// Ask the mailbox for entry `id`'s key. `false`: no place free in its mailbox.
    pub(super) fn find_key(&mut self, id: &str, out: &mut Vec<Action>) -> bool {
        let Some(a) = self.active.get(id) else {
            return true;
        };
        let (Some(key), Some(m)) = (self.key_of(&a.rec), self.mappings.get(&a.rec.mapping)) else {
            return true;
        };
        let user = m.target.user.clone();
        let since = Time(
            self.now
                .0
                .saturating_sub(m.mail.as_ref().map_or(0, |r| r.remember_sent_ms)),
        );
        let name = a.rec.name.clone();
        let sha256 = a.rec.sha256.clone().unwrap_or_default();
        if !self.take_slot(id, &user.to_lowercase()) {
            return false;
        }
        if let Some(a) = self.active.get_mut(id) {
            a.busy = true;
        }
        out.push(Action::FindFileKey {
            id: id.to_owned(),
            user,
            key,
            name,
            sha256,
            since,
        });
        true
    }

    /// What the mailbox holds of entry `id`'s key.
    pub(super) fn on_key(&mut self, id: &str, k: KeyOutcome, out: &mut Vec<Action>) {
        // Found in the sent copy of the message it left (its draft sent from Outlook, or by a
        // lost later ledger, before the file was done there): it went in it, however many
        // versions of its path are done here (not a new drop of its bytes).
        let left = self
            .active
            .get(id)
            .and_then(|a| a.rec.left_message.as_deref());
        let went =
            matches!(&k, KeyOutcome::Mailed { marker: Some(mk), .. } if Some(mk.as_str()) == left);
        match k {
            KeyOutcome::Mailed {
                message_id,
                internet_message_id,
                attachment_id,
                ..
            } if went => self.found_mailed(id, message_id, internet_message_id, attachment_id, out),
            // Mailed by a message of this ledger's, and other bytes went from this path since
            // (a drop of the same bytes again at the path is `mail_again`, never searched):
            // this is the user's new drop of them (each drop is a request to mail). With no
            // version of this path done, the key was mailed from the same place under the
            // folder elsewhere (the mapping's folder moved, the files with it): the same file.
            KeyOutcome::Mailed { ours: true, .. } if self.other_done_here(id) => {
                self.key_clear(id, out)
            }
            // The latest sent copy carrying the key is one a version of this path is done
            // with (found mailed before): known to this ledger, so this is a new drop.
            KeyOutcome::Mailed { ref message_id, .. } if self.done_here_in(id, message_id) => {
                self.key_clear(id, out)
            }
            KeyOutcome::Mailed {
                message_id,
                internet_message_id,
                attachment_id,
                ..
            } => self.found_mailed(id, message_id, internet_message_id, attachment_id, out),
            KeyOutcome::Drafted(drafts) => {
                // A draft of a message of this ledger's (the file left it, or was retried)
                // holds nothing: its stale key is no other agent's claim.
                let holder = drafts.into_iter().find(|d| {
                    !d.ours
                        && d.marker
                            .as_deref()
                            .is_none_or(|m| !self.messages.contains_key(m))
                });
                let held = self.active.get(id).and_then(|a| match a.key {
                    KeyLook::Held(n) => Some(n),
                    _ => None,
                });
                match (holder, held) {
                    (None, Some(n)) => self.holder_vanished(id, n),
                    (None, None) => self.key_clear(id, out),
                    (Some(d), _) => self.held_by(id, &d.subject, out),
                }
            }
            KeyOutcome::Failed(f) => self.on_fault(id, f, out),
        }
    }

    /// Whether another version of entry `id`'s path is done with an attachment on item
    /// `item_id` (a sent copy it was found mailed in).
    fn done_here_in(&self, id: &str, item_id: &str) -> bool {
        self.active
            .get(id)
            .is_some_and(|a| self.done_here_in_rec(&a.rec, item_id))
    }

    fn done_here_in_rec(&self, r: &Record, item_id: &str) -> bool {
        self.path_info(&r.mapping, &r.path).is_some_and(|i| {
            i.done
                .iter()
                .any(|(_, did, _, t)| *did != r.id && t.item_id == item_id)
        })
    }

    /// Whether this ledger has another version of entry `id`'s path done (not replaced).
    fn other_done_here(&self, id: &str) -> bool {
        self.active
            .get(id)
            .is_some_and(|a| self.other_done_here_rec(&a.rec))
    }

    fn other_done_here_rec(&self, r: &Record) -> bool {
        self.path_info(&r.mapping, &r.path)
            .is_some_and(|i| i.done.iter().any(|(_, did, _, _)| *did != r.id))
    }

    /// Whether a sent copy carrying the key of file `r` (as a key search reads it) is one the
    /// ledger already knows of: its own mail of these bytes with another version of the path
    /// done (`r` is a new drop), or the copy a version of the path was found mailed in. The
    /// key search that let `r` into a message passed over it too.
    fn known_sent_copy(&self, r: &Record, k: &KeyOutcome) -> bool {
        match k {
            KeyOutcome::Mailed { ours: true, .. } if self.other_done_here_rec(r) => true,
            KeyOutcome::Mailed { message_id, .. } => self.done_here_in_rec(r, message_id),
            _ => true,
        }
    }

    /// Entry `id`'s key is in no message of the mailbox but this ledger's: it may be put in a
    /// message.
    fn key_clear(&mut self, id: &str, out: &mut Vec<Action>) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        a.key = KeyLook::Clear;
        let held = a
            .rec
            .error
            .as_ref()
            .is_some_and(|e| e.code == HELD_BY_DRAFT);
        if held || a.rec.attempts > 0 {
            a.rec.error = None;
            a.rec.attempts = 0;
            self.persist(id, out);
        }
        self.collect(id);
    }

    /// Entry `id`'s key is on a draft not this ledger's (subject `subject`): it waits and is
    /// looked for again; after [`HELD_TRIES`] looks it fails, explained, never mailed.
    fn held_by(&mut self, id: &str, subject: &str, out: &mut Vec<Action>) {
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        if a.rec.cancel_requested {
            // Canceled by the user while its key was searched: the cancel is taken now, with
            // the user's reason (a hold's would have taken its place: seed 110855).
            self.make_ready(id);
            return;
        }
        let n = match a.key {
            KeyLook::Held(n) | KeyLook::Vanished(n) => n + 1,
            _ => 1,
        };
        a.key = KeyLook::Held(n);
        let why = Failure::new(
            HELD_BY_DRAFT,
            format!(
                "a draft in the mailbox already carries {} (subject \"{subject}\"): another \
                 agent is mailing it, or an earlier state dir left it. Send or delete that \
                 draft in Outlook, then `outbox retry` the file",
                a.rec.name
            ),
        );
        if n >= HELD_TRIES {
            // Never mailed twice: it fails, explained, and `retry` looks again.
            return self.fail(id, why, out);
        }
        a.rec.error = Some(why);
        self.persist(id, out);
        self.wait(id, held_backoff_ms(self.policy.look_after_ms, n));
    }

    /// Entry `id` was held by a draft (`n` searches in a row) that neither folder shows now: sent
    /// and caught in Exchange's move (the Outbox is not searched), or deleted. Searched once
    /// more after [`move_grace_ms`]: a sent copy then is found mailed, nothing mails it.
    fn holder_vanished(&mut self, id: &str, n: u32) {
        if let Some(a) = self.active.get_mut(id) {
            a.key = KeyLook::Vanished(n);
        }
        self.wait(id, move_grace_ms(self.policy.look_after_ms));
    }

    /// `retry --resend` of done file `old`: the request is taken (cleared, persisted first: a
    /// crash then loses it, never doubles it), and a new version of the file is mailed in a
    /// message of its own, without a search of the mailbox (the user asked).
    pub(super) fn resend(&mut self, mut old: Record, out: &mut Vec<Action>) {
        let now = self.now;
        match self.active.get_mut(&old.id) {
            Some(a) => {
                a.rec.resend = false;
                a.rec.updated_at = now;
                out.push(Action::Persist(a.rec.clone()));
            }
            None => {
                old.resend = false;
                old.updated_at = now;
                out.push(Action::Persist(old.clone()));
            }
        }
        let Some(sha) = old.sha256.clone() else {
            return;
        };
        if self.mail_rule(&old.mapping).is_none() {
            return;
        }
        let mut rec = self.new_record(&old.mapping, &old.path, old.file, Some(sha));
        rec.mail_again = true;
        out.push(Action::Persist(rec.clone()));
        self.index(&rec);
        let id = rec.id.clone();
        self.activate(rec);
        // The user asked: no search (after a restart before its message is made, one finds
        // this ledger's own sent copy, which counts as a new drop: mailed all the same).
        if let Some(a) = self.active.get_mut(&id) {
            a.key = KeyLook::Clear;
        }
        self.mail_new_version(&id, None, out);
    }

    /// Entry `id` was found mailed by its key: done with the sent copy's attachment, never
    /// mailed again; its after-action runs (its sent copy is seen).
    fn found_mailed(
        &mut self,
        id: &str,
        message_id: String,
        internet_message_id: Option<String>,
        attachment_id: String,
        out: &mut Vec<Action>,
    ) {
        let Some(a) = self.active.get(id) else {
            return;
        };
        let mapping = a.rec.mapping.clone();
        let Some(m) = self.mappings.get(&mapping) else {
            return;
        };
        let keep = m.after == After::Keep;
        let user = m.target.user.clone();
        let superseded = self
            .newest(&mapping, &a.rec.path)
            .is_some_and(|n| n.seq > a.rec.seq);
        let Some(a) = self.active.get_mut(id) else {
            return;
        };
        a.rec.state = State::Done;
        a.rec.target = Some(Target {
            user,
            kind: ItemKind::Message,
            item_id: message_id,
        });
        a.rec.attachment_id = Some(attachment_id);
        a.rec.bytes_sent = a.rec.file.size;
        // Said on its row: why this drop was not mailed.
        a.rec.error = Some(Failure::new(
            FOUND_MAILED,
            format!(
                "already mailed: a sent copy in the mailbox ({}) carries this file's key; not \
                 mailed again (to mail it again on purpose: `outbox retry --resend` this entry)",
                internet_message_id
                    .as_deref()
                    .unwrap_or("its internetMessageId unknown")
            ),
        ));
        a.rec.attempts = 0;
        a.rec.after_done = keep || superseded;
        let path = a.rec.path.clone();
        self.persist(id, out);
        out.push(Action::Notify(Note::FoundMailed {
            id: id.to_owned(),
            path,
            internet_message_id,
        }));
    }

    /// `Some(until)`: mapping `mapping` made `max_messages` messages within its window; the
    /// next may be made at `until`.
    fn cap_reached(&mut self, mapping: &str, rule: &MailRule) -> Option<Time> {
        if rule.max_messages == 0 {
            return None;
        }
        let window = rule.max_messages_window_ms;
        let now = self.now;
        let q = self.made_times.entry(mapping.to_owned()).or_default();
        while q.front().is_some_and(|t| t.plus_ms(window) <= now) {
            q.pop_front();
        }
        cap_frees_at(q.iter().copied(), rule.max_messages, window, now)
    }

    /// Until when mapping `mapping`'s files wait for its `max_messages` window, if they do.
    pub fn capped_until(&self, mapping: &str) -> Option<Time> {
        self.capped.get(mapping).copied().filter(|t| *t > self.now)
    }

    pub(super) fn add_message(&mut self, rec: MessageRecord) {
        for f in &rec.files {
            self.member_of.insert(f.clone(), rec.id.clone());
        }
        let id = rec.id.clone();
        self.messages.insert(
            id.clone(),
            ActiveMessage {
                rec,
                busy: false,
                wait_until: None,
                sent_checked: false,
                finished: BTreeMap::new(),
                verified: false,
                listed: Vec::new(),
                extra: Vec::new(),
                short_lists: 0,
                deleted: BTreeSet::new(),
                send_before: None,
                rechecked: false,
                stamping: Vec::new(),
                rivals_checked: false,
                checking: Vec::new(),
                drafted_at: None,
                keep_draft: false,
                lettering: None,
                keyed_found: None,
                sent_copy: None,
                marker_look: false,
            },
        );
        self.msg_ready.insert(id);
    }

    /// Start-up, first: the messages given (those not finished with, those a record names, and
    /// those sent within the pacing window).
    pub(super) fn start_messages(&mut self, messages: Vec<MessageRecord>) {
        for mut m in messages {
            // (Records and messages take their `seq` from one counter: a record made in this
            // run comes after every message of an earlier one.)
            self.next_seq = self.next_seq.max(m.seq + 1);
            if matches!(
                m.state,
                MessageState::Drafting | MessageState::Attaching | MessageState::Sending
            ) && m.draft_id.is_some()
                && !m.may_have_been_sent()
            {
                // A start does not know what became of a draft since the ledger last wrote: a
                // ledger restored from a backup, a draft sent from Outlook while the agent was
                // down. It is looked for again (Sent Items, then Drafts) before anything more
                // goes on it or it is sent: sent already, its files not on it go in a new
                // message (each searched for by its key first); gone, a new draft.
                m.state = MessageState::Drafting;
                m.redraft = true;
            }
            // One with no draft on record may have one all the same: a ledger restored from a
            // backup taken before its draft was made forgets it (seed 627201: that draft, sent
            // from Outlook meanwhile, and a second one made with the same marker, sent too).
            // Its marker is looked for (Sent Items, then Drafts) before a draft is made.
            let marker_look = m.state == MessageState::Drafting
                && m.draft_id.is_none()
                && !m.may_exist
                && !self.made_here.contains(&m.id);
            if marker_look {
                m.may_exist = true;
            }
            // Every send that may have happened counts against its mailbox's window, sent or
            // still in doubt: a restart does not reset Exchange's count. From the latest time
            // known of it (a sent one's answer: Exchange counted it no later than that).
            // (A time ahead of this run's clock, the wall clock set back: counted as now.)
            let latest = [m.last_send_at, m.send_at, m.sent_at]
                .into_iter()
                .flatten()
                .max();
            if let Some(t) = latest.map(|t| t.min(self.now)) {
                self.sent_times
                    .entry(m.user.to_lowercase())
                    .or_default()
                    .push_back(t);
            }
            // Every message made within its mapping's window counts against `max_messages`.
            self.made_times
                .entry(m.mapping.clone())
                .or_default()
                .push_back(m.created_at.min(self.now));
            // A throttled send's wait, still running: kept (at most an hour from now, should
            // the wall clock have been set back).
            let not_before = m
                .not_before
                .filter(|t| *t > self.now && m.state == MessageState::Sending)
                .map(|t| t.min(self.now.plus_ms(60 * 60_000)));
            let id = m.id.clone();
            self.add_message(m);
            if let Some(a) = self.messages.get_mut(&id).filter(|_| marker_look) {
                a.marker_look = true;
            }
            if let Some(t) = not_before {
                self.message_wait_until(&id, t);
            }
        }
        for q in self.sent_times.values_mut() {
            q.make_contiguous().sort();
        }
        for q in self.made_times.values_mut() {
            q.make_contiguous().sort();
        }
    }

    /// Start-up, once the entries are in: which message each belongs to, and those that were
    /// waiting for one.
    pub(super) fn start_members(&mut self, records: &[Record]) {
        for r in records {
            let mid = self.member_of.get(&r.id).cloned();
            match mid {
                Some(mid) => {
                    let finished = !self.active.contains_key(&r.id);
                    if let Some(m) = self.messages.get_mut(&mid) {
                        if finished {
                            m.finished.insert(r.id.clone(), r.clone());
                        }
                    }
                    // Written before its entries: an entry may not say so yet.
                    if let Some(a) = self.active.get_mut(&r.id) {
                        a.rec.message = Some(mid);
                    }
                }
                None => {
                    // As the machine holds it now (start-up may have changed it).
                    let Some(state) = self.active.get(&r.id).map(|a| a.rec.state) else {
                        continue;
                    };
                    if self.mail_rule(&r.mapping).is_some() && !state.is_terminal() {
                        if let Some(a) = self.active.get_mut(&r.id) {
                            a.rec.message = None;
                        }
                        // A copy in doubt on the sent copy of the message it left is looked
                        // for first (its look is asked at start): found, it went; not there,
                        // it is collected then (seed 4233, after the world's reports of one
                        // path were put in order: mailed twice).
                        // (So is one whose upload session is being closed first: its look
                        // follows the close; collected at once, it was mailed again, seed
                        // 117521.)
                        let looks = self.active.get(&r.id).is_some_and(|a| {
                            a.rec.may_exist
                                && a.rec.session.as_ref().is_none_or(|s| s.abandoned)
                                && a.rec.target.is_some()
                        });
                        if !looks {
                            self.collect(&r.id);
                        }
                    }
                }
            }
        }
    }

    /// Start-up: a file done on the draft of a message that gave way (`mailedElsewhere`), or
    /// that was split again after a size refusal (`splitAgain`), whose
    /// record still names it: the message's write (files taken out) reached the ledger, the
    /// file's did not (a crash, or a backup, between the two: seed 200101). It leaves the
    /// message now as `give_way` has it: back to pending, its copy forgotten with the draft,
    /// searched for by its key (found mailed in the other message, held, or mailed).
    pub(super) fn start_gave_way(&mut self, records: &[Record], out: &mut Vec<Action>) {
        for r in records {
            let Some(mid) = r.message.as_deref() else {
                continue;
            };
            let gave_way = self.messages.get(mid).is_some_and(|m| {
                m.rec.state == MessageState::Failed
                    && m.rec
                        .error
                        .as_ref()
                        .is_some_and(|e| e.code == MAILED_ELSEWHERE || e.code == SPLIT_AGAIN)
                    && !m.rec.files.contains(&r.id)
            });
            // (Split again: a failed or canceled file of it, which the `retry` retried, too.)
            let split = self
                .messages
                .get(mid)
                .is_some_and(|m| m.rec.error.as_ref().is_some_and(|e| e.code == SPLIT_AGAIN));
            let taken = r.state == State::Done
                || (split
                    && (r.state == State::Failed
                        || (r.state == State::Canceled && r.failed_to.is_none())));
            if !taken || !gave_way || self.member_of.contains_key(&r.id) {
                continue;
            }
            let mut rec = self
                .active
                .get(&r.id)
                .map_or_else(|| r.clone(), |a| a.rec.clone());
            if rec.state != State::Done {
                rec.retried(self.now);
            }
            rec.message = None;
            let id = rec.id.clone();
            self.unattached(mid, rec, out);
            if let Some(a) = self.active.get_mut(&id) {
                a.key = KeyLook::Unsearched;
            }
            self.make_ready(&id);
            // (Searched first where the mapping searches the mailbox; else collected now.)
            self.collect(&id);
        }
    }

    /// `retry` of a failed or unconfirmed message.
    pub(super) fn retry_message(
        &mut self,
        rec: MessageRecord,
        records: Vec<Record>,
        out: &mut Vec<Action>,
    ) {
        let mid = rec.id.clone();
        if !matches!(rec.state, MessageState::Failed | MessageState::Unconfirmed) {
            return;
        }
        // Split again already: its files are in new messages; it holds none.
        if rec.error.as_ref().is_some_and(|e| e.code == SPLIT_AGAIN) {
            return;
        }
        // Every file left it (`noFilesLeft`): retried, it was drafted and sent empty (seed
        // 1012321, its draft then sent by hand: sent twice).
        if rec.files.is_empty() {
            return;
        }
        if !self.messages.contains_key(&mid) {
            self.add_message(rec);
        }
        // Its files: the done ones as they are, the failed and canceled ones retried (a failed
        // one in `failed_dir` taken back from there first).
        let mut again = Vec::new();
        for r in records {
            if self.member_of.get(&r.id).is_none_or(|m| *m != mid) {
                continue;
            }
            // A record older than the one the message holds (a request read before a cancel
            // this machine took since) is not taken over it: the newer one is (seed 482373,
            // two retries and a cancel between them in one batch: the stale pending record
            // left the message waiting for ever).
            let r = match self.messages.get(&mid).and_then(|m| m.finished.get(&r.id)) {
                Some(f) if f.updated_at > r.updated_at => f.clone(),
                _ => r,
            };
            if self.active.contains_key(&r.id) {
                self.retry_after_move(&r.id);
                continue;
            }
            // A canceled file in `failed_dir` was left out on purpose: it leaves the message.
            let left_out = r.state == State::Canceled && r.failed_to.is_some();
            // (A done one whose copy went missing from the draft is attached again.)
            let missing = r.state == State::Done && r.verify_failed;
            if (matches!(r.state, State::Failed | State::Canceled) && !left_out) || missing {
                again.push(r);
            } else if let Some(m) = self.messages.get_mut(&mid) {
                m.finished.insert(r.id.clone(), r);
            }
        }
        let now = self.now;
        let Some(m) = self.messages.get_mut(&mid) else {
            return;
        };
        if m.busy {
            return;
        }
        if !matches!(
            m.rec.state,
            MessageState::Failed | MessageState::Unconfirmed
        ) {
            return;
        }
        // A failed one goes on where it stopped (a never-sent one with a draft finds its draft
        // first: it may have been deleted), an unconfirmed one is sent only if still a draft.
        // One found still a draft but short of a file (taken off it in Outlook) gets that file
        // again first (`retried_with`).
        m.rec.retried_with(!again.is_empty());
        m.sent_checked = false;
        m.wait_until = None;
        // The draft may have changed since it was last listed: listed again before a send.
        m.verified = false;
        m.rivals_checked = false;
        m.keep_draft = false;
        m.extra.clear();
        m.short_lists = 0;
        m.deleted.clear();
        m.rec.updated_at = now;
        if m.rec.resplit {
            // Refused for its size: never sent as it was. Its failed and canceled files are
            // retried into it first, then every file leaves it for new messages that fit.
            for mut r in again {
                r.retried(now);
                m.finished.insert(r.id.clone(), r);
            }
            let look_first = m.rec.redraft;
            out.push(Action::PersistMessage(m.rec.clone()));
            self.msg_ready.insert(mid.clone());
            // (Its draft is looked for first, `message_step`: sent by hand, it is not split.)
            if !look_first && !self.resplit_waits(&mid) {
                self.resplit(&mid, out);
            }
            return;
        }
        out.push(Action::PersistMessage(m.rec.clone()));
        self.msg_ready.insert(mid.clone());
        self.retry(again, out);
        self.wake_files(&mid);
    }

    /// Whether message `mid`, to be split again, waits: a file of it has a request in flight.
    fn resplit_waits(&self, mid: &str) -> bool {
        self.messages.get(mid).is_some_and(|m| {
            m.rec
                .files
                .iter()
                .any(|f| self.active.get(f).is_some_and(|a| a.busy))
        })
    }

    /// `retry` of a message Graph refused for its size (`MessageRecord::resplit`): it is never
    /// sent as it was. Its files leave it, back to pending with nothing of them on any item
    /// (their copies go with its draft, deleted as abandoned), and are made into new messages
    /// under `max_message_size` as it is now and under the size refused (the tenant's limit is
    /// below it, whatever the config says), each file in exactly one. It ends `failed` with
    /// [`SPLIT_AGAIN`], holding no file. (A file canceled into `failed_dir` was left out on
    /// purpose: it leaves, as a `retry` has it.)
    fn resplit(&mut self, mid: &str, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get(mid) else {
            return;
        };
        let mapping = m.rec.mapping.clone();
        let rule = self.mail_rule(&mapping).cloned();
        let recs: Vec<Record> = (m.rec.files.iter())
            .filter_map(|f| self.member_record(m, f))
            .cloned()
            .collect();
        // What Graph refused, as the messages are measured when made.
        let body_len = rule.as_ref().map_or(0, |r| r.body.len() as u64);
        let refused = recs.iter().fold(MESSAGE_OVERHEAD + body_len, |n, r| {
            n + encoded_attachment_size(r.file.size, &r.name)
        });
        let learnt = refused.saturating_sub(1);
        let limit = self
            .refused_sizes
            .entry(mapping.clone())
            .and_modify(|x| *x = (*x).min(learnt))
            .or_insert(learnt);
        let limit = rule
            .as_ref()
            .map_or(*limit, |r| r.max_message_size.min(*limit));
        let now = self.now;
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        let files = std::mem::take(&mut m.rec.files);
        m.rec.resplit = false;
        m.rec.redraft = false;
        m.rec.state = MessageState::Failed;
        m.rec.error = Some(Failure::new(
            SPLIT_AGAIN,
            format!(
                "Graph refused it for its size (ErrorMessageSizeExceeded; about {} once \
                 encoded); `outbox retry` made its {} files into new messages of at most \
                 about {} each, and its draft is deleted",
                human_size(refused),
                recs.len(),
                human_size(limit)
            ),
        ));
        m.rec.updated_at = now;
        for f in &files {
            m.finished.remove(f);
        }
        out.push(Action::PersistMessage(m.rec.clone()));
        for f in &files {
            if self.member_of.get(f).is_some_and(|x| x == mid) {
                self.member_of.remove(f);
            }
        }
        for mut r in recs {
            if r.state == State::Canceled && r.failed_to.is_some() {
                continue;
            }
            if matches!(r.state, State::Failed | State::Canceled | State::Rejected) {
                r.retried(now);
            }
            r.message = None;
            let id = r.id.clone();
            self.unattached(mid, r, out);
            if let Some(a) = self.active.get_mut(&id) {
                // Searched when it first joined a message; the only draft carrying its key is
                // this one's, deleted.
                a.key = KeyLook::Clear;
            }
            self.collect(&id);
        }
        self.msg_ready.insert(mid.to_owned());
    }

    /// A retried entry of a mailing mapping: back in its message if that message still counts
    /// it and may still take it, else waiting for a new one.
    pub(super) fn retried_member(&mut self, id: &str, out: &mut Vec<Action>) {
        let Some(a) = self.active.get(id) else {
            return;
        };
        if self.mail_rule(&a.rec.mapping).is_none() && a.rec.message.is_none() {
            return;
        }
        let keeps = a.rec.message.as_deref().is_some_and(|mid| {
            self.messages.get(mid).is_some_and(|m| {
                m.rec.files.iter().any(|f| f == id)
                    && matches!(
                        m.rec.state,
                        MessageState::Drafting | MessageState::Attaching | MessageState::Failed
                    )
            })
        });
        if keeps {
            if let Some(mid) = a.rec.message.clone() {
                let now = self.now;
                if let Some(m) = self.messages.get_mut(&mid) {
                    m.finished.remove(id);
                    if m.rec.state == MessageState::Failed && !m.busy {
                        // A file of a failed message retried on its own: the message goes on
                        // with it (else the file would wait for a message that never moves).
                        m.rec.state = if m.rec.draft_id.is_some() {
                            MessageState::Attaching
                        } else {
                            MessageState::Drafting
                        };
                        m.rec.error = None;
                        m.rec.attempts = 0;
                        m.wait_until = None;
                        m.rec.updated_at = now;
                        out.push(Action::PersistMessage(m.rec.clone()));
                    }
                }
                self.msg_ready.insert(mid);
            }
            return;
        }
        self.member_of.remove(id);
        if let Some(a) = self.active.get_mut(id) {
            a.rec.message = None;
        }
        self.collect(id);
    }

    // ---- steps --------------------------------------------------------------------------------

    /// Take the steps of every message that may have something to do.
    pub(super) fn pump_messages(&mut self, out: &mut Vec<Action>) {
        let ready: Vec<String> = std::mem::take(&mut self.msg_ready).into_iter().collect();
        for mid in ready {
            for _ in 0..6 {
                if !self.advance_message(&mid, out) {
                    break;
                }
            }
            self.forget_if_over(&mid);
        }
    }

    /// A message sent (or drafted), none of whose files is still at work, leaves memory.
    fn forget_if_over(&mut self, mid: &str) {
        let Some(m) = self.messages.get(mid) else {
            return;
        };
        // A failed or unconfirmed one stays: a `retry` of one of its files takes it on.
        let over = m.rec.is_over();
        if !over || m.busy || m.rec.files.iter().any(|f| self.active.contains_key(f)) {
            return;
        }
        if let Some(m) = self.messages.remove(mid) {
            for f in &m.rec.files {
                if self.member_of.get(f).is_some_and(|x| x == mid) {
                    self.member_of.remove(f);
                }
            }
        }
    }

    /// One step of message `mid`; `true`: a local transition happened, look again.
    fn advance_message(&mut self, mid: &str, out: &mut Vec<Action>) -> bool {
        let Some(m) = self.messages.get(mid) else {
            return false;
        };
        if m.busy {
            return false;
        }
        if let Some(t) = m.wait_until {
            if t > self.now {
                self.msg_timers.insert((t, mid.to_owned()));
                return false;
            }
        }
        let step = self.message_step(m);
        if matches!(step, MStep::ListDraft | MStep::Send) && self.doubt_on_draft(m) {
            // A file that left the message (a newer version took its place, or it was
            // canceled) may still have put a copy on the draft: its look settles it first (and a
            // copy it finds is then a stray to delete). Asked again after `look_after`.
            let look_after = self.policy.look_after_ms;
            self.message_wait(mid, look_after);
            return false;
        }
        match step {
            MStep::Idle => false,
            MStep::Local => {
                self.message_local(mid, out);
                true
            }
            MStep::CreateDraft
            | MStep::Find(_)
            | MStep::ListDraft
            | MStep::DeleteExtra(_)
            | MStep::StampKeys
            | MStep::CheckRivals
            | MStep::DeleteDraft
            | MStep::SetLetter
            | MStep::Send => {
                if self.sign_in.is_some() {
                    return false; // woken when the pause ends
                }
                self.message_remote(mid, step, out);
                false
            }
        }
    }

    /// What the files of a message say: whether all are on its draft, the first that failed,
    /// and those canceled or deleted before they were attached (dropped from the message).
    fn files_state(&self, m: &ActiveMessage) -> FilesState {
        let mut st = FilesState {
            all_done: true,
            failed: None,
            dropped: Vec::new(),
        };
        let draft = m.rec.draft_id.as_deref();
        for f in &m.rec.files {
            let (rec, active) = match self.active.get(f) {
                Some(a) => (Some(&a.rec), true),
                None => (m.finished.get(f), false),
            };
            let Some(rec) = rec else {
                st.all_done = false;
                continue;
            };
            match rec.state {
                State::Done => {
                    let on_draft = rec.target.as_ref().map(|t| t.item_id.as_str()) == draft;
                    if !on_draft {
                        st.failed = Some((
                            rec.name.clone(),
                            Failure::new(
                                "notOnDraft",
                                "it was attached to another item than this message's draft",
                            ),
                        ));
                    }
                    // Older versions' copies (or partial ones) still on the draft: not yet.
                    if !rec.replaces.is_empty() || !rec.garbage.is_empty() || rec.session.is_some()
                    {
                        st.all_done = false;
                    }
                }
                State::Canceled if !active => st.dropped.push(f.clone()),
                // (One moving to `failed_dir` has nothing left on the draft: failed already.)
                State::Failed | State::Rejected if !active || self.only_moving_aside(f) => {
                    if st.failed.is_none() {
                        let e = rec
                            .error
                            .clone()
                            .unwrap_or_else(|| Failure::new("failed", "it was not attached"));
                        st.failed = Some((rec.name.clone(), e));
                    }
                }
                _ => st.all_done = false,
            }
        }
        st
    }

    /// Whether entry `id` is active only for its move to `failed_dir`: failed, nothing of it
    /// in doubt or left on an item.
    fn only_moving_aside(&self, id: &str) -> bool {
        self.active.get(id).is_some_and(|a| {
            let r = &a.rec;
            matches!(r.state, State::Failed | State::Rejected)
                && !r.may_exist
                && r.session.is_none()
                && r.garbage.is_empty()
        })
    }

    fn message_step(&self, m: &ActiveMessage) -> MStep {
        let r = &m.rec;
        if self.abandons(m) {
            return MStep::DeleteDraft;
        }
        match r.state {
            MessageState::Drafting if r.resplit && r.redraft => {
                // Its draft looked for first (below): sent by hand, it went as it was.
                MStep::Find(if m.sent_checked {
                    MailFolder::Drafts
                } else {
                    MailFolder::SentItems
                })
            }
            MessageState::Drafting if r.resplit => {
                // Split again once no file of it has a request in flight.
                if self.resplit_waits(&r.id) {
                    MStep::Idle
                } else {
                    MStep::Local
                }
            }
            MessageState::Drafting => {
                if r.redraft {
                    // Its draft is looked for again: sent by hand (Sent Items), still there
                    // (Drafts), or gone.
                    return MStep::Find(if m.sent_checked {
                        MailFolder::Drafts
                    } else {
                        MailFolder::SentItems
                    });
                }
                if r.draft_id.is_some() {
                    return MStep::Local;
                }
                if r.may_exist {
                    // A draft in doubt: sent already (by hand, or by this message in a life of
                    // the ledger it does not remember) is asked first, then Drafts (then, for
                    // `mail --key`, the whole mailbox).
                    MStep::Find(if m.rechecked {
                        MailFolder::Anywhere
                    } else if m.sent_checked {
                        MailFolder::Drafts
                    } else {
                        MailFolder::SentItems
                    })
                } else {
                    MStep::CreateDraft
                }
            }
            MessageState::Attaching => {
                let st = self.files_state(m);
                if st.all_done || st.failed.is_some() || !st.dropped.is_empty() {
                    MStep::Local
                } else if self.keys_missing(m) {
                    // A newer version took a place on the draft: its key goes on the draft
                    // before its bytes do (`mail_gate`).
                    MStep::StampKeys
                } else {
                    MStep::Idle
                }
            }
            MessageState::Sending => {
                if r.send_at.is_some() {
                    MStep::Find(MailFolder::SentItems)
                } else if r.resend_if_draft {
                    if m.sent_checked {
                        MStep::Find(MailFolder::Drafts)
                    } else {
                        MStep::Find(MailFolder::SentItems)
                    }
                } else if let Some(x) = m.extra.first() {
                    MStep::DeleteExtra(x.clone())
                } else if self.keys_stale(m) {
                    MStep::StampKeys
                } else if !m.verified {
                    MStep::ListDraft
                } else if r.letter_stale && r.draft_id.is_some() {
                    // Said as it is now, before it is sent or left for review.
                    MStep::SetLetter
                } else if self.needs_rival_check(m) {
                    // Complete, about to go (or be left for review): another agent's message
                    // holding one of its files' keys is looked for first.
                    MStep::CheckRivals
                } else if !r.send {
                    // Left for review, exactly its files (a deleted draft shows here too).
                    MStep::Local
                } else {
                    MStep::Send
                }
            }
            // Accepted, its files' after-actions waiting for the copy in Sent Items.
            MessageState::Sent if r.unseen => MStep::Find(MailFolder::SentItems),
            // Found sent (from Outlook) while a file not on it was busy (its move back from
            // `failed_dir`, say): that file leaves it now (seed 672).
            MessageState::Sent if !r.keyed && self.left_behind(m) => MStep::Local,
            _ => MStep::Idle,
        }
    }

    /// Whether a file of message `m`, sent, is at work and not on it (not done, not busy): its
    /// draft was sent from Outlook while the file's request was under way.
    fn left_behind(&self, m: &ActiveMessage) -> bool {
        m.rec.files.iter().any(|f| {
            self.active
                .get(f)
                .is_some_and(|a| !a.busy && !a.rec.state.is_terminal())
        })
    }

    fn message_local(&mut self, mid: &str, out: &mut Vec<Action>) {
        if self.messages.get(mid).is_some_and(|m| m.rec.resplit) {
            return self.resplit(mid, out);
        }
        if self
            .messages
            .get(mid)
            .is_some_and(|m| m.rec.state == MessageState::Sent)
        {
            self.split_off_unattached(mid, None, out);
            return self.persist_message(mid, out);
        }
        if self
            .messages
            .get(mid)
            .is_some_and(|m| m.rec.state == MessageState::Attaching)
        {
            self.reopen_off_draft(mid, out);
        }
        let Some(m) = self.messages.get(mid) else {
            return;
        };
        let st = self.files_state(m);
        let now = self.now;
        for d in &st.dropped {
            self.member_of.remove(d);
        }
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        let mut in_doubt: Option<Failure> = None;
        let r = &mut m.rec;
        let mut left = Vec::new();
        match r.state {
            MessageState::Drafting => r.state = MessageState::Attaching,
            MessageState::Attaching => {
                // Files canceled or deleted before they were attached leave the message.
                r.files.retain(|f| !st.dropped.contains(f));
                for d in &st.dropped {
                    if let Some(x) = m.finished.remove(d) {
                        left.push(x.name);
                    }
                }
                let failed = st.failed.map(|(name, e)| {
                    Failure::new(
                        e.code.clone(),
                        format!("{name} was not attached ({}){NOT_SENT}", e.message),
                    )
                });
                let file_failed = failed.is_some();
                let failed = failed.or_else(|| {
                    r.files.is_empty().then(|| {
                        Failure::new(
                            NO_FILES_LEFT,
                            "every file of it was canceled or deleted before it was sent",
                        )
                    })
                });
                if file_failed && r.may_have_been_sent() {
                    // A message in doubt, a file of it attached again by `retry` (taken off its
                    // draft in Outlook) that failed: never "failed, not sent" (which `retry
                    // --failed` would take up): unconfirmed, as it was.
                    in_doubt = failed;
                } else if let Some(f) = failed {
                    r.state = MessageState::Failed;
                    r.error = Some(f.clone());
                    out.push(Action::Notify(Note::MessageFailed {
                        id: mid.to_owned(),
                        subject: r.letter.subject.clone(),
                        failure: f,
                    }));
                    self.failed_this_run += 1;
                } else if st.all_done && st.dropped.is_empty() {
                    // Listed first either way (strays deleted): sent, or left as a draft.
                    r.state = MessageState::Sending;
                }
            }
            MessageState::Sending if !r.send && m.verified => r.state = MessageState::Drafted,
            _ => return,
        }
        r.updated_at = now;
        // Its letter made again from the files left, on record in the same write as the files
        // it carries now (a crash between two writes left a letter naming a file gone from it,
        // not marked to be set again: the draft went with it), then said.
        let mut said = Vec::new();
        self.files_left(mid, left, &mut said);
        self.persist_message(mid, out);
        out.extend(said);
        if let Some(f) = in_doubt {
            return self.message_unconfirmed_by(mid, Some(f), out);
        }
        self.wake_files(mid);
    }

    /// The files of `mid` that are not done leave it, and wait for a message of their own.
    /// (`sent_copy`: the sent message's id, when known: a file in doubt on the draft is looked
    /// for there, since Exchange gives the sent copy an id of its own.)
    fn split_off_unattached(&mut self, mid: &str, sent_copy: Option<&str>, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get(mid) else {
            return;
        };
        let ids: Vec<String> = m
            .rec
            .files
            .iter()
            .filter(|f| {
                self.active
                    .get(*f)
                    .is_some_and(|a| !a.busy && a.rec.state != State::Done)
            })
            .cloned()
            .collect();
        // Those that left the active set not done (failed, canceled) did not go either: they
        // leave it too, or the sent message's claim on them would take them back from the
        // message a `retry` puts them in (at the next start: seed 201039).
        let over: Vec<String> = (m.rec.files.iter())
            .filter(|f| {
                !self.active.contains_key(*f)
                    && m.finished.get(*f).is_some_and(|r| r.state != State::Done)
            })
            .cloned()
            .collect();
        if ids.is_empty() && over.is_empty() {
            return;
        }
        let now = self.now;
        let mut left = Vec::new();
        if let Some(m) = self.messages.get_mut(mid) {
            m.rec
                .files
                .retain(|f| !ids.contains(f) && !over.contains(f));
            for f in &over {
                left.extend(m.finished.remove(f));
            }
        }
        for mut r in left {
            if self.member_of.get(&r.id).is_some_and(|x| x == mid) {
                self.member_of.remove(&r.id);
            }
            // On record: a `retry` of it is in no message, and finds it in this message's
            // sent copy if a copy of it in doubt went there.
            r.message = None;
            r.left_message = Some(mid.to_owned());
            r.updated_at = now;
            out.push(Action::Persist(r.clone()));
            if !r.state.is_terminal() {
                // Retried with its message (one refused for its size, its draft then found sent
                // by hand): it goes on, in a new message.
                let id = r.id.clone();
                self.activate(r);
                self.collect(&id);
            }
        }
        for id in ids {
            self.member_of.remove(&id);
            // A file the user canceled goes in no message: a copy of it in doubt is looked for
            // in the sent copy (there, the cancel came too late; else it is canceled).
            let canceled = self.active.get(&id).is_some_and(|a| a.rec.cancel_requested);
            // (One with an upload session open and no piece in doubt too: the session is
            // dropped with its binding, nothing more can go on a sent draft, and it expires on
            // its own. Its record may not know how far the upload went: a ledger restored from
            // a backup taken mid-upload, the upload finished and the draft sent by the lost
            // later run. Not searched, it went in a new message, and the pre-send check took
            // the sent copy holding its key for a new drop's: mailed twice, seed 379304. One
            // whose last piece is in doubt has its session closed first, on its own path, and
            // its copy looked for in the sent copy by name and bytes: seed 509813.)
            let searches = !canceled
                && self.active.get(&id).is_some_and(|a| {
                    self.mail_rule(&a.rec.mapping)
                        .is_some_and(|m| m.remember_sent_ms > 0)
                        && (a.rec.session.is_none() || !a.rec.may_exist)
                });
            if let Some(a) = self.active.get_mut(&id) {
                a.rec.message = None;
                if searches {
                    a.rec.left_message = Some(mid.to_owned());
                    // Not done on it here, but it may be in it: an attachment in doubt, or one
                    // a ledger restored from a backup forgot. Its key answers (the sent copy
                    // carries its draft's keys): found with its name there, it went.
                    a.key = KeyLook::Unsearched;
                }
            }
            if searches {
                self.unbind(&id, out);
            } else {
                // No key to search by (the mapping does not search the mailbox): an attachment
                // in doubt on the draft is looked for in its sent copy, by name and bytes; the
                // draft's id answers 404 now, which is not "not there" (seed 301470: mailed
                // twice).
                // An upload session whose last piece is in doubt is closed first (the draft is
                // sent: nothing more goes on it), then the copy looked for there too (seed
                // 509813: collected at once, its look on the draft answered 404 and it was
                // mailed again).
                let mut looks = false;
                if let (Some(sent), Some(a)) = (sent_copy, self.active.get_mut(&id)) {
                    if a.rec.may_exist {
                        if let Some(t) = a.rec.target.as_mut() {
                            t.item_id = sent.to_owned();
                            looks = true;
                            if let Some(s) = a.rec.session.as_mut() {
                                s.abandoned = true;
                            }
                        }
                    }
                }
                self.persist(&id, out);
                if looks || canceled {
                    // In no message until the look answers: found, it went; not there, it
                    // goes in a new one (canceled: it ends).
                    self.make_ready(&id);
                    continue;
                }
            }
            self.collect(&id);
        }
    }

    /// The files of `mid` not done that are bound to draft `old`, which is gone (deleted by
    /// hand): nothing of them can be there any more, so they go to the new draft afresh.
    fn unbind_from(&mut self, mid: &str, old: &str, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get(mid) else {
            return;
        };
        let ids: Vec<String> = m
            .rec
            .files
            .iter()
            .filter(|f| {
                self.active.get(*f).is_some_and(|a| {
                    !a.busy
                        && a.rec.state != State::Done
                        && a.rec.target.as_ref().is_some_and(|t| t.item_id == old)
                })
            })
            .cloned()
            .collect();
        for id in ids {
            self.unbind(&id, out);
            self.make_ready(&id);
        }
    }

    /// Files of a message never sent that are done on another item than its draft (the draft
    /// they were attached to is gone, deleted by hand, and a new one took its place): attached
    /// again, to the new draft. (A message that may have been sent never gets a new draft.)
    fn reopen_off_draft(&mut self, mid: &str, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get(mid) else {
            return;
        };
        let Some(draft) = m.rec.draft_id.clone() else {
            return;
        };
        if m.rec.may_have_been_sent() {
            return;
        }
        let stale: Vec<Record> = m
            .rec
            .files
            .iter()
            .filter_map(|f| match self.active.get(f) {
                Some(a) if a.busy => None,
                Some(a) => Some(&a.rec),
                None => m.finished.get(f),
            })
            .filter(|r| {
                r.state == State::Done
                    && r.session.is_none()
                    && r.target.as_ref().is_some_and(|t| t.item_id != draft)
            })
            .cloned()
            .collect();
        for r in stale {
            self.unattached(mid, r, out);
        }
    }

    /// File `r`, attached to a draft it will not go with (the draft is gone, or abandoned),
    /// back to pending with nothing of it on any item (the copy there is forgotten, it goes
    /// with the draft), written, and active again.
    fn unattached(&mut self, mid: &str, mut r: Record, out: &mut Vec<Action>) {
        let now = self.now;
        {
            r.state = State::Pending;
            r.target = None;
            r.may_exist = false;
            r.effect_at = None;
            r.bytes_sent = 0;
            r.attachment_id = None;
            r.attempts = 0;
            r.restarts = 0;
            r.error = None;
            r.after_done = false;
            r.after_failed = false;
            r.replaced = false;
            r.garbage.clear();
            r.replaces.clear();
            r.updated_at = now;
            // What this agent knew of it on the old draft is gone with that draft.
            self.forget_done(&r.id);
            if let Some(m) = self.messages.get_mut(mid) {
                m.finished.remove(&r.id);
            }
            out.push(Action::Persist(r.clone()));
            self.index(&r);
            let id = r.id.clone();
            match self.active.get_mut(&id) {
                Some(a) => {
                    a.rec = r;
                    a.looked = false;
                    self.make_ready(&id);
                }
                None => self.activate(r),
            }
        }
    }

    /// The files of `mid` take their next step (the draft is there, or the message is over:
    /// a file done before, whose after-action waited for the send, comes back for it).
    fn wake_files(&mut self, mid: &str) {
        let Some(m) = self.messages.get(mid) else {
            return;
        };
        let over = m.rec.is_over();
        let files = m.rec.files.clone();
        let mut back = Vec::new();
        for f in &files {
            if self.active.contains_key(f) {
                continue;
            }
            if let Some(r) = m.finished.get(f) {
                if over && r.state == State::Done && !r.after_done {
                    back.push(r.clone());
                }
            }
        }
        for r in back {
            self.activate(r);
        }
        for f in files {
            self.make_ready(&f);
        }
    }

    fn message_remote(&mut self, mid: &str, step: MStep, out: &mut Vec<Action>) {
        let now = self.now;
        let look_after = self.policy.look_after_ms;
        if step == MStep::CheckRivals {
            if let Some(m) = self.messages.get_mut(mid) {
                // Not known in this run (a restart): counted from now.
                m.drafted_at.get_or_insert(now);
            }
        }
        let Some(m) = self.messages.get(mid) else {
            return;
        };
        let user = m.rec.user.clone();
        let mb = user.to_lowercase();
        let attaching = m.rec.state == MessageState::Attaching;
        let had_keys = m.rec.keys.clone();
        let remember = self
            .mail_rule(&m.rec.mapping)
            .map_or(0, |r| r.remember_sent_ms);
        // Not before every request that may have made it is surely over.
        // (Times on record count as `counted` has it: from this run's start if an earlier
        // run's, the clock perhaps stepped since.)
        let wait_for = match step {
            MStep::Find(_) if m.rec.draft_gone_at.is_some() => {
                // Its draft was in neither folder: not looked for again before a send from
                // Outlook then would surely show in Sent Items.
                m.rec
                    .draft_gone_at
                    .map(|t| self.counted(t).plus_ms(move_grace_ms(look_after)))
            }
            // (Not one looked for only because no draft was on record: no create of it is in
            // doubt, so no late one to wait for.)
            MStep::Find(_)
                if m.rec.may_exist && m.rec.state == MessageState::Drafting && !m.marker_look =>
            {
                m.rec.effect_at.map(|t| self.counted(t).plus_ms(look_after))
            }
            MStep::Find(_) if m.rec.resend_if_draft => {
                // `retry` of an unconfirmed message: "still a draft" proves nothing while
                // Exchange may still be moving a sent one, so not before that has surely had time.
                m.rec
                    .last_send_at
                    .map(|t| self.counted(t).plus_ms(move_grace_ms(look_after)))
            }
            MStep::Find(MailFolder::SentItems) if m.rec.state == MessageState::Sent => {
                m.rec.sent_at.map(|t| self.counted(t).plus_ms(look_after))
            }
            MStep::Find(MailFolder::SentItems) => {
                m.rec.send_at.map(|t| self.counted(t).plus_ms(look_after))
            }
            MStep::CheckRivals => m.drafted_at.map(|t| t.plus_ms(RIVAL_SETTLE_MS)),
            _ => None,
        }
        .filter(|t| *t > now);
        if let Some(t) = wait_for {
            self.message_wait_until(mid, t);
            return;
        }
        if step == MStep::Send && self.policy.sends_per_window > 0 {
            let window = self.policy.send_window_ms;
            let q = self.sent_times.entry(mb.clone()).or_default();
            while q.front().is_some_and(|t| t.plus_ms(window) <= now) {
                q.pop_front();
            }
            if q.len() >= self.policy.sends_per_window as usize {
                if let Some(t) = q.front().map(|t| t.plus_ms(window)) {
                    self.message_wait_until(mid, t);
                }
                return;
            }
        }
        if let MStep::DeleteExtra(att) = &step {
            // An older version's copy (it lost its place in the message to a newer one): its
            // record says so before the delete is sent, so a crash between the two leaves no
            // record naming an attachment that is gone.
            for owner in self.owners_of_attachment(att) {
                self.mark_replaced(&owner, mid, out);
            }
        }
        let keys = match step {
            MStep::CreateDraft => self.keys_of_message(mid),
            // While it attaches, the keys its draft carries stay with the new ones (an older
            // version's copy may still be on it, its key with it); the send sets exactly its
            // files' keys (`keys_stale`), once every older copy is gone.
            MStep::StampKeys if attaching => {
                let mut keys = had_keys;
                for k in self.keys_of_message(mid) {
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
                keys
            }
            MStep::StampKeys => self.keys_of_message(mid),
            _ => Vec::new(),
        };
        let keyed = if step == MStep::CheckRivals {
            self.keyed_files(mid)
        } else {
            Vec::new()
        };
        let since = Time(now.0.saturating_sub(remember));
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        m.busy = true;
        match step {
            MStep::CreateDraft => {
                m.rec.may_exist = true;
                m.rec.draft_gone_at = None;
                m.sent_checked = false;
                m.rec.effect_at = Some(now);
                m.rec.updated_at = now;
                m.rec.keys = keys.clone();
                // A new draft says the letter as it is now.
                m.rec.letter_stale = false;
                out.push(Action::PersistMessage(m.rec.clone()));
                out.push(Action::CreateDraft {
                    id: mid.to_owned(),
                    user,
                    letter: m.rec.letter.clone(),
                    keys,
                });
            }
            MStep::Find(folder) => out.push(Action::FindMessage {
                id: mid.to_owned(),
                user,
                folder,
                internet_message_id: m.rec.internet_message_id.clone(),
            }),
            MStep::CheckRivals => {
                let Some(draft_id) = m.rec.draft_id.clone() else {
                    m.busy = false;
                    return;
                };
                let (ids, files): (Vec<String>, Vec<(String, String, String)>) = keyed
                    .into_iter()
                    .map(|(id, key, name, sha256)| (id, (key, name, sha256)))
                    .unzip();
                m.checking = ids;
                out.push(Action::FindRivals {
                    id: mid.to_owned(),
                    user,
                    draft_id,
                    files,
                    since,
                });
            }
            MStep::DeleteDraft => {
                let Some(draft_id) = m.rec.draft_id.clone() else {
                    m.busy = false;
                    return;
                };
                out.push(Action::DeleteDraft {
                    id: mid.to_owned(),
                    user,
                    draft_id,
                });
            }
            MStep::StampKeys => {
                let Some(draft_id) = m.rec.draft_id.clone() else {
                    m.busy = false;
                    return;
                };
                m.stamping = keys.clone();
                out.push(Action::StampKeys {
                    id: mid.to_owned(),
                    user,
                    draft_id,
                    keys,
                });
            }
            MStep::SetLetter => {
                let Some(draft_id) = m.rec.draft_id.clone() else {
                    m.busy = false;
                    return;
                };
                m.lettering = Some(m.rec.letter.clone());
                out.push(Action::SetLetter {
                    id: mid.to_owned(),
                    user,
                    draft_id,
                    letter: m.rec.letter.clone(),
                });
            }
            MStep::ListDraft | MStep::DeleteExtra(_) => {
                let Some(draft_id) = m.rec.draft_id.clone() else {
                    m.busy = false;
                    return;
                };
                match step {
                    MStep::DeleteExtra(attachment_id) => out.push(Action::DeleteAttachment {
                        id: mid.to_owned(),
                        target: Target {
                            user,
                            kind: ItemKind::Message,
                            item_id: draft_id,
                        },
                        attachment_id,
                    }),
                    _ => out.push(Action::ListDraft {
                        id: mid.to_owned(),
                        user,
                        draft_id,
                    }),
                }
            }
            MStep::Send => {
                let Some(draft_id) = m.rec.draft_id.clone() else {
                    m.busy = false;
                    return;
                };
                m.send_before = m.rec.last_send_at;
                m.rec.send_at = Some(now);
                m.rec.last_send_at = Some(now);
                m.rec.updated_at = now;
                out.push(Action::PersistMessage(m.rec.clone()));
                out.push(Action::SendDraft {
                    id: mid.to_owned(),
                    user,
                    draft_id,
                    expect: m.listed.clone(),
                });
                self.sent_times.entry(mb).or_default().push_back(now);
            }
            MStep::Idle | MStep::Local => m.busy = false,
        }
    }

    fn message_wait_until(&mut self, mid: &str, t: Time) {
        if let Some(m) = self.messages.get_mut(mid) {
            m.wait_until = Some(t);
            self.msg_timers.insert((t, mid.to_owned()));
        }
    }

    fn message_wait(&mut self, mid: &str, ms: u64) {
        let t = self.now.plus_ms(ms);
        self.message_wait_until(mid, t);
    }

    /// Timers of messages that came due.
    pub(super) fn tick_messages(&mut self) {
        while let Some((t, mid)) = self.msg_timers.iter().next().cloned() {
            if t > self.now {
                break;
            }
            self.msg_timers.remove(&(t, mid.clone()));
            if let Some(m) = self.messages.get_mut(&mid) {
                if m.wait_until.is_some_and(|w| w <= self.now) {
                    m.wait_until = None;
                }
            }
            self.msg_ready.insert(mid);
        }
    }

    pub(super) fn next_message_timer(&self) -> Option<Time> {
        let t = self.msg_timers.iter().next().map(|(t, _)| *t);
        let c = self.collecting.values().map(|c| c.1).min();
        [t, c].into_iter().flatten().min()
    }

    // ---- outcomes -----------------------------------------------------------------------------

    pub(super) fn message_outcome(&mut self, mid: &str, outcome: Outcome, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        if !m.busy {
            return;
        }
        m.busy = false;
        self.msg_ready.insert(mid.to_owned());
        match outcome {
            Outcome::CreateDraft(d) => self.on_draft(mid, d, out),
            Outcome::Find(folder, f) => self.on_find(mid, folder, f, out),
            Outcome::Send(s) => self.on_send(mid, s, out),
            Outcome::ListDraft(l) => self.on_list(mid, l, out),
            Outcome::DeleteAttachment(d) => self.on_delete_extra(mid, d, out),
            Outcome::StampKeys(r) => self.on_stamp(mid, r, out),
            Outcome::Rivals(r) => self.on_rivals(mid, r, out),
            Outcome::DeleteDraft(d) => self.on_delete_draft(mid, d, out),
            Outcome::SetLetter(r) => self.on_set_letter(mid, r, out),
            _ => {}
        }
    }

    /// The entries whose recorded attachment `att` is (active ones, and done ones indexed): two
    /// older versions of one name and the same bytes may share one.
    fn owners_of_attachment(&self, att: &str) -> BTreeSet<String> {
        let mut owners: BTreeSet<String> = self
            .active
            .values()
            .filter(|a| a.rec.attachment_id.as_deref() == Some(att))
            .map(|a| a.rec.id.clone())
            .collect();
        owners.extend(
            self.paths
                .values()
                .flat_map(|m| m.values())
                .flat_map(|i| i.done.iter())
                .filter(|(_, _, a, _)| a == att)
                .map(|(_, id, ..)| id.clone()),
        );
        owners
    }

    /// The attachments other entries hold on the draft of `rec`'s message: those of the
    /// message's other files, and older versions' copies on their way out. A look for `rec` must
    /// not adopt one (the recipient gets each file, even two of one name and one content).
    pub(super) fn claimed_by_others(&self, rec: &Record, target: &Target) -> Vec<String> {
        let Some(m) = rec.message.as_deref().and_then(|m| self.messages.get(m)) else {
            return Vec::new();
        };
        let mut claimed: Vec<String> = m
            .rec
            .files
            .iter()
            .filter(|f| **f != rec.id)
            .filter_map(|f| self.member_record(m, f)?.attachment_id.clone())
            .collect();
        if let Some(list) = self
            .attached
            .get(&item_key(target))
            .and_then(|names| names.get(&rec.name.to_lowercase()))
        {
            for (_, att, entry) in list {
                if *entry != rec.id && !claimed.contains(att) {
                    claimed.push(att.clone());
                }
            }
        }
        claimed
    }

    /// The attachments each file of `mid` has on its draft.
    fn expected_attachments(&self, mid: &str) -> Vec<String> {
        let Some(m) = self.messages.get(mid) else {
            return Vec::new();
        };
        m.rec
            .files
            .iter()
            .filter_map(|f| self.member_record(m, f)?.attachment_id.clone())
            .collect()
    }

    /// Whether an entry bound to the draft of `m` has a copy there in doubt, an upload session
    /// open on it, or copies there it is deleting.
    fn doubt_on_draft(&self, m: &ActiveMessage) -> bool {
        let Some(draft_id) = m.rec.draft_id.as_deref() else {
            return false;
        };
        self.active.values().any(|a| {
            let r = &a.rec;
            // (The flags first: most entries have none. An item id names one item of one
            // mailbox: Exchange's ids are unique across mailboxes.)
            (r.may_exist || r.session.is_some() || !r.garbage.is_empty() || !r.replaces.is_empty())
                && [a.look_target.as_ref(), r.target.as_ref()]
                    .into_iter()
                    .flatten()
                    .any(|t| t.item_id == draft_id)
        })
    }

    /// The attachments this agent's records hold on the draft of `mid`.
    fn known_on_draft(&self, mid: &str) -> Vec<String> {
        let Some(m) = self.messages.get(mid) else {
            return Vec::new();
        };
        let Some(draft_id) = m.rec.draft_id.as_ref() else {
            return Vec::new();
        };
        let key = (m.rec.user.to_lowercase(), draft_id.clone());
        self.attached
            .get(&key)
            .map(|names| {
                names
                    .values()
                    .flatten()
                    .map(|(_, att, _)| att.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn on_list(&mut self, mid: &str, l: ListOutcome, out: &mut Vec<Action>) {
        let ids = match l {
            ListOutcome::Failed(f) => return self.message_fault(mid, f, out),
            ListOutcome::Listed(ids) => ids,
        };
        let want = self.expected_attachments(mid);
        // What this agent knows it put on the draft (an older version's copy whose successor
        // left the message, say): a listing that lags may not show it yet, and the message
        // must not go with it.
        let known = self.known_on_draft(mid);
        let look_after = self.policy.look_after_ms;
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        if m.rec.last_send_at.is_none() {
            // (After a send in doubt the count goes on: a listing again, after the executor found
            // the draft changed, does not reset the count of throttled sends `max_attempts`
            // bounds.)
            m.rec.attempts = 0;
        }
        // Stray ones deleted already but still listed: the listing lags behind the delete.
        let lagging = ids.iter().any(|x| m.deleted.contains(x));
        let mut extra: Vec<String> = Vec::new();
        for x in ids.iter().chain(known.iter()) {
            if !want.contains(x) && !m.deleted.contains(x) && !extra.contains(x) {
                extra.push(x.clone());
            }
        }
        m.extra = extra;
        let missing = want.iter().any(|w| !ids.contains(w)) || lagging;
        if missing {
            // A listing that lags behind a write, or a copy gone: look again later, a few
            // times; never send a message short of a file.
            m.short_lists += 1;
            if m.short_lists > 3 {
                self.message_failed(
                    mid,
                    Failure::new(
                        ATTACHMENT_MISSING,
                        format!("an attachment recorded on the draft is not there{NOT_SENT}"),
                    ),
                    out,
                );
                self.missing_from_draft(mid, &ids, out);
                return;
            }
            self.message_wait(mid, look_after);
            return;
        }
        m.short_lists = 0;
        m.verified = m.extra.is_empty();
        m.listed = ids;
    }

    /// Message `mid` failed with [`ATTACHMENT_MISSING`]: each done file whose attachment the
    /// draft's listing (`listed`) does not show is marked so (`Record::verify_failed`, as
    /// `verify` marks one missing), and `retry` of the message attaches it again from its
    /// file (or, its file gone, it leaves the message). Before, a retry listed the draft
    /// again and failed the same way, for ever (seeds 227388, 370205: a ledger restored from
    /// a backup held a copy a newer version, lost with the rest, had replaced). (Not a message
    /// that may have been sent: unconfirmed, its draft is not attached to again.)
    fn missing_from_draft(&mut self, mid: &str, listed: &[String], out: &mut Vec<Action>) {
        let Some(m) = self.messages.get(mid) else {
            return;
        };
        if !matches!(
            m.rec.state,
            MessageState::Failed | MessageState::Unconfirmed
        ) {
            return;
        }
        let gone: Vec<String> = (m.rec.files.iter())
            .filter(|f| {
                self.member_record(m, f).is_some_and(|r| {
                    r.state == State::Done
                        && r.attachment_id
                            .as_ref()
                            .is_some_and(|a| !listed.contains(a))
                })
            })
            .cloned()
            .collect();
        let now = self.now;
        for f in gone {
            if let Some(a) = self.active.get_mut(&f) {
                a.rec.verify_failed = true;
                a.rec.updated_at = now;
                out.push(Action::Persist(a.rec.clone()));
            } else if let Some(r) = self
                .messages
                .get_mut(mid)
                .and_then(|m| m.finished.get_mut(&f))
            {
                r.verify_failed = true;
                r.updated_at = now;
                out.push(Action::Persist(r.clone()));
            }
        }
    }

    /// Whether message `m`'s draft carries other keys than its files' now (a newer version
    /// took an older one's place after the draft was made): set again before the send, or a
    /// lost state dir would not find the newer version mailed.
    fn keys_stale(&self, m: &ActiveMessage) -> bool {
        if m.rec.draft_id.is_none() {
            return false;
        }
        let mut now = self.keys_of_message(&m.rec.id);
        let mut had = m.rec.keys.clone();
        now.sort();
        had.sort();
        now != had
    }

    /// Whether a file of message `m`, with a draft, is not done and its key is not on the
    /// draft (a newer version that took an older one's place): it waits for `StampKeys`.
    fn keys_missing(&self, m: &ActiveMessage) -> bool {
        m.rec.draft_id.is_some()
            && m.rec.files.iter().any(|f| {
                self.active.get(f).is_some_and(|a| {
                    a.rec.state != State::Done
                        && self
                            .key_of(&a.rec)
                            .is_some_and(|k| !m.rec.keys.contains(&k))
                })
            })
    }

    fn on_stamp(&mut self, mid: &str, r: Result<(), Fault>, out: &mut Vec<Action>) {
        match r {
            Ok(()) => {
                // The keys sent (a file's change meanwhile is stamped again before the send).
                let now = self.now;
                if let Some(m) = self.messages.get_mut(mid) {
                    m.rec.keys = std::mem::take(&mut m.stamping);
                    m.rec.attempts = 0;
                    m.rec.updated_at = now;
                    out.push(Action::PersistMessage(m.rec.clone()));
                }
                // A file that waited for its key on the draft goes on.
                self.wake_files(mid);
            }
            Err(f) => self.message_fault(mid, f, out),
        }
    }

    /// What the mailbox holds of message `mid`'s files' keys just before its send. Another
    /// agent's message holding one of them wins over this one when it is a sent copy the key
    /// search that let the file in would not have passed over, or a draft older than this
    /// message's (`createdDateTime`, then the id: both agents order the two drafts alike from
    /// what they both see). Then this message gives way ([`Machine::give_way`]); else it goes.
    fn on_rivals(&mut self, mid: &str, r: RivalsOutcome, out: &mut Vec<Action>) {
        let (own_created, found) = match r {
            RivalsOutcome::Failed(f) => {
                if let Some(m) = self.messages.get_mut(mid) {
                    m.checking.clear();
                }
                return self.message_fault(mid, f, out);
            }
            RivalsOutcome::Checked { own_created, found } => (own_created, found),
        };
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        let ids = std::mem::take(&mut m.checking);
        let Some(own_id) = m.rec.draft_id.clone() else {
            return;
        };
        if ids.len() != found.len() {
            return; // (cannot be: one answer per key asked) asked again
        }
        let Some(m) = self.messages.get(mid) else {
            return;
        };
        let mut losses: BTreeMap<String, Loss> = BTreeMap::new();
        for (f, holders) in ids.iter().zip(found) {
            let Some(r) = self.member_record(m, f) else {
                continue;
            };
            if let Some(KeyOutcome::Mailed {
                message_id,
                internet_message_id,
                attachment_id,
                ..
            }) = holders.sent.filter(|k| !self.known_sent_copy(r, k))
            {
                losses.insert(
                    f.clone(),
                    Loss::Sent {
                        message_id,
                        internet_message_id,
                        attachment_id,
                    },
                );
                continue;
            }
            // A file that joined after its draft was made (a newer version took a place) had its
            // key stamped on the draft later: the draft's age says nothing of when it began to
            // hold that key, so any other draft holding it goes first (seed 239 with a second
            // agent: the other searched, drafted and sent before the stamp).
            // (Made after the message: it took a place. Its `effect_at` would not do: a create
            // whose answer was lost moves it to the answer's end.)
            // (By the ledger's order, not by times: a clock stepped back between two runs made
            // a file that joined later look older than its message, seed 243784, mailed twice.)
            let late = r.seq > m.rec.seq;
            // A draft of a message of this ledger's holds nothing (as for the key search).
            let older = holders
                .drafts
                .iter()
                .filter(|d| {
                    !d.ours
                        && d.message_id != own_id
                        && d.marker
                            .as_deref()
                            .is_none_or(|mk| !self.messages.contains_key(mk))
                })
                .filter(|d| late || drafted_before(d.created, &d.message_id, own_created, &own_id))
                .min_by(|a, b| {
                    (a.created.is_some(), a.created, &a.message_id).cmp(&(
                        b.created.is_some(),
                        b.created,
                        &b.message_id,
                    ))
                });
            if let Some(d) = older {
                losses.insert(f.clone(), Loss::Held(d.subject.clone()));
            }
        }
        let now = self.now;
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        m.rec.attempts = 0;
        if losses.is_empty() {
            m.rivals_checked = true;
            m.rec.updated_at = now;
            return;
        }
        self.give_way(mid, losses, out);
    }

    /// Message `mid` gives way to other messages mailing its files (`losses`): it fails with
    /// [`MAILED_ELSEWHERE`] and its draft is deleted (the message's record says so first, so a
    /// crash before the delete deletes it at the next start); every file of it leaves it,
    /// its copy on the draft forgotten: one found in a sent copy is done with it (found
    /// mailed, never mailed again), one on an older draft is held by that draft (searched
    /// again, as any file whose key is on a draft not this ledger's), the others go in a new
    /// message.
    fn give_way(&mut self, mid: &str, losses: BTreeMap<String, Loss>, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        let files = std::mem::take(&mut m.rec.files);
        let n = losses.len();
        let sent = losses
            .values()
            .filter(|l| matches!(l, Loss::Sent { .. }))
            .count();
        m.rec.state = MessageState::Failed;
        m.rec.error = Some(Failure::new(
            MAILED_ELSEWHERE,
            format!(
                "another message in the mailbox carries the key of {n} of its files ({sent} in \
                 a sent copy, {} on an older draft: another agent on the same folder is mailing \
                 them); this one gave way, its draft is deleted and its files are mailed once, \
                 by that message or a new one",
                n - sent
            ),
        ));
        m.rec.updated_at = self.now;
        let finished: Vec<Record> = files.iter().filter_map(|f| m.finished.remove(f)).collect();
        out.push(Action::PersistMessage(m.rec.clone()));
        out.push(Action::Notify(Note::MessageGaveWay {
            id: mid.to_owned(),
            subject: m.rec.letter.subject.clone(),
        }));
        for f in &files {
            if self.member_of.get(f).is_some_and(|x| x == mid) {
                self.member_of.remove(f);
            }
        }
        for r in finished {
            if !self.active.contains_key(&r.id) {
                self.activate(r);
            }
        }
        for f in files {
            let Some(mut r) = self.active.get(&f).map(|a| a.rec.clone()) else {
                continue;
            };
            r.message = None;
            self.unattached(mid, r, out);
            match losses.get(&f).cloned() {
                Some(Loss::Sent {
                    message_id,
                    internet_message_id,
                    attachment_id,
                }) => {
                    self.found_mailed(&f, message_id, internet_message_id, attachment_id, out);
                    self.make_ready(&f);
                }
                Some(Loss::Held(subject)) => {
                    if let Some(a) = self.active.get_mut(&f) {
                        a.key = KeyLook::Unsearched;
                    }
                    self.held_by(&f, &subject, out);
                    // Searched again once its wait is over, not at once.
                    self.unqueue(&f);
                }
                None => {
                    if let Some(a) = self.active.get_mut(&f) {
                        a.key = KeyLook::Clear;
                    }
                    self.collect(&f);
                }
            }
        }
        self.msg_ready.insert(mid.to_owned());
    }

    /// Entry `id` out of the ready queues (it was put there before it was told to wait).
    fn unqueue(&mut self, id: &str) {
        let queued = self.active.get(id).is_some_and(|a| a.queued);
        if !queued {
            return;
        }
        for q in self.ready.values_mut() {
            q.retain(|x| x != id);
        }
        if let Some(a) = self.active.get_mut(id) {
            a.queued = false;
        }
        if let Some(t) = self.active.get(id).and_then(|a| a.wait_until) {
            self.set_timer(id, t);
        }
    }

    /// The abandoned draft of message `mid` was deleted (or Graph would not).
    fn on_delete_draft(&mut self, mid: &str, d: DeleteOutcome, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        let f = match d {
            DeleteOutcome::Deleted => {
                m.rec.draft_id = None;
                m.rec.attempts = 0;
                return self.persist_message(mid, out);
            }
            DeleteOutcome::Failed(f) => f,
        };
        match f {
            Fault::Throttled { retry_after_ms } => {
                let ms = retry_after_ms.unwrap_or_else(|| backoff_ms(mid, m.rec.attempts));
                self.message_wait(mid, ms);
            }
            Fault::SignIn(f) => {
                let until = self.now.plus_ms(self.policy.sign_in_pause_ms);
                if self.sign_in.is_none() {
                    out.push(Action::Notify(Note::SignInNeeded(f.clone())));
                }
                self.sign_in = Some((until, f));
            }
            Fault::Unreachable(_) | Fault::Ambiguous(_) => {
                m.rec.attempts += 1;
                let attempts = m.rec.attempts;
                let max = self.policy.max_attempts;
                if max > 0 && attempts >= max {
                    // A one-shot command gives up: the draft stays (the message says why).
                    m.keep_draft = true;
                    return;
                }
                self.message_wait(mid, backoff_ms(mid, attempts));
            }
            Fault::Permanent(e) => {
                // Refused (not ours to delete, say): left, and said on the message.
                m.keep_draft = true;
                if let Some(err) = m.rec.error.as_mut() {
                    err.message = format!(
                        "{}; its draft could not be deleted ({}: {}), delete it in Outlook",
                        err.message.trim_end_matches('.'),
                        e.code,
                        e.message
                    );
                }
                self.persist_message(mid, out);
            }
        }
    }

    fn on_set_letter(&mut self, mid: &str, r: Result<(), Fault>, out: &mut Vec<Action>) {
        match r {
            Ok(()) => {
                let now = self.now;
                if let Some(m) = self.messages.get_mut(mid) {
                    // The letter sent (made again meanwhile: set again before the send).
                    if m.lettering.take().as_ref() == Some(&m.rec.letter) {
                        m.rec.letter_stale = false;
                    }
                    m.rec.attempts = 0;
                    m.rec.updated_at = now;
                    out.push(Action::PersistMessage(m.rec.clone()));
                }
            }
            Err(f) => self.message_fault(mid, f, out),
        }
    }

    /// Files `left` (their names) left message `mid` before it was sent: its letter is made
    /// again from the files left, as it was first made (its mapping's templates, its part of
    /// the batch, the day it was made), set on its draft before the send, and said.
    fn files_left(&mut self, mid: &str, left: Vec<String>, out: &mut Vec<Action>) {
        if left.is_empty() {
            return;
        }
        let Some(m) = self.messages.get(mid) else {
            return;
        };
        let facts: Vec<FileFacts> = m
            .rec
            .files
            .iter()
            .filter_map(|f| self.member_record(m, f))
            .map(|r| FileFacts {
                name: r.name.clone(),
                size: r.file.size,
            })
            .collect();
        let rule = self.mail_rule(&m.rec.mapping).cloned();
        let date = civil_date(m.rec.created_at, self.policy.utc_offset_ms);
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        if let Some(rule) = rule.filter(|_| !facts.is_empty()) {
            let ctx = RenderContext {
                files: &facts,
                mapping: &m.rec.mapping,
                date: &date,
            };
            let (k, n) = m.rec.part.map_or((0, 1), |(k, n)| (k as usize, n as usize));
            let subject = part_subject(&render_str(&rule.subject, &ctx), k, n);
            let body = render_body(&rule.body, &ctx, rule.html);
            if subject != m.rec.letter.subject || body != m.rec.letter.body {
                m.rec.letter.subject = subject;
                m.rec.letter.body = body;
                m.rec.letter_stale = m.rec.draft_id.is_some();
            }
        }
        out.push(Action::Notify(Note::LeftMessage {
            id: mid.to_owned(),
            files: left,
            subject: m.rec.letter.subject.clone(),
        }));
    }

    fn on_delete_extra(&mut self, mid: &str, d: DeleteOutcome, out: &mut Vec<Action>) {
        match d {
            DeleteOutcome::Failed(Fault::Permanent(f)) => {
                // Graph refuses to remove what is not the message's: it is not sent with it.
                self.message_failed(mid, f, out);
            }
            DeleteOutcome::Deleted => {
                // (Its owner, if any, was marked replaced before the delete was sent.)
                if let Some(m) = self.messages.get_mut(mid) {
                    if !m.extra.is_empty() {
                        let x = m.extra.remove(0);
                        m.deleted.insert(x);
                    }
                    // Listed again before the send: the draft must then be exact.
                    m.verified = false;
                    m.rivals_checked = false;
                }
            }
            DeleteOutcome::Failed(f) => self.message_fault(mid, f, out),
        }
    }

    fn persist_message(&mut self, mid: &str, out: &mut Vec<Action>) {
        let now = self.now;
        if let Some(m) = self.messages.get_mut(mid) {
            m.rec.updated_at = now;
            out.push(Action::PersistMessage(m.rec.clone()));
        }
    }

    fn on_draft(&mut self, mid: &str, d: DraftOutcome, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        match d {
            DraftOutcome::Created {
                draft_id,
                internet_message_id,
            } => {
                m.rec.draft_id = Some(draft_id);
                m.rec.internet_message_id = internet_message_id;
                m.rec.may_exist = false;
                m.rec.attempts = 0;
                m.rec.state = MessageState::Attaching;
                m.drafted_at = Some(self.now);
                self.persist_message(mid, out);
                self.wake_files(mid);
            }
            DraftOutcome::Failed(f) => {
                if matches!(f, Fault::Ambiguous(_)) {
                    // It could take effect until its answer ended: the search waits from then.
                    m.rec.effect_at = Some(self.now);
                } else {
                    // Not taken: no draft can exist from it.
                    m.rec.may_exist = false;
                    self.persist_message(mid, out);
                }
                self.message_fault(mid, f, out);
            }
        }
    }

    fn on_find(&mut self, mid: &str, folder: MailFolder, f: FindOutcome, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        let state = m.rec.state;
        match f {
            FindOutcome::Failed(fault) => self.message_fault(mid, fault, out),
            FindOutcome::Found {
                id,
                is_draft,
                internet_message_id,
            } => {
                if !matches!(state, MessageState::Sending | MessageState::Sent) {
                    // (A throttled send's draft found still a draft: its refusals in a row are
                    // still counted, so a one-shot command gives up; so are the searches for a
                    // sent copy not there yet.)
                    m.rec.attempts = 0;
                }
                if state == MessageState::Sent {
                    if is_draft {
                        // Not the sent copy yet (a Sent Items answer still a draft).
                        self.sent_copy_not_seen(mid, out);
                    } else {
                        m.rec.unseen = false;
                        if internet_message_id.is_some() {
                            m.rec.internet_message_id = internet_message_id;
                        }
                        self.persist_message(mid, out);
                        self.wake_files(mid);
                    }
                    return;
                }
                if is_draft && folder == MailFolder::SentItems {
                    // A Sent Items answer that is still a draft proves nothing yet: as not
                    // found, asked again after `look_after` (never at once, forever).
                    m.rec.attempts += 1;
                    let attempts = m.rec.attempts;
                    let look_after = self.policy.look_after_ms;
                    if attempts >= SENT_COPY_TRIES {
                        return self.on_find(mid, folder, FindOutcome::NotFound, out);
                    }
                    self.message_wait(mid, look_after);
                    return;
                }
                if !is_draft {
                    if !m.rec.keyed
                        && (m.rec.redraft || (state == MessageState::Drafting && m.rec.may_exist))
                    {
                        // A message never sent by this agent whose draft someone sent from
                        // Outlook: it went. Its files not yet on it were not in it: each goes
                        // in a new message.
                        if let Some(m) = self.messages.get_mut(mid) {
                            // (Refused for its size and sent by hand as it was: not split.)
                            m.rec.resplit = false;
                        }
                        self.split_off_unattached(mid, Some(&id), out);
                        if let Some(m) = self.messages.get_mut(mid) {
                            m.sent_copy = Some(id);
                        }
                    }
                    // Sent (by this message's send, or an earlier run's).
                    self.message_sent(mid, internet_message_id, out);
                    return;
                }
                match state {
                    MessageState::Drafting => {
                        if m.rec.keyed && m.rec.may_exist && m.rec.send {
                            // `mail --key`: an earlier run's draft. That run may have sent it
                            // and Exchange still be moving it (it looks like a draft until the
                            // move): nothing is attached to it, or sent, before the move has
                            // surely had time, and Sent Items is asked meanwhile, so a message
                            // sent is reported as soon as its copy shows there. Still a draft
                            // then, it was not sent: it is resumed. (A `--draft` run sends
                            // nothing: it takes the draft at once.)
                            let since = *m.keyed_found.get_or_insert(self.now);
                            let until = since.plus_ms(move_grace_ms(self.policy.look_after_ms));
                            if self.now < until {
                                m.sent_checked = false;
                                m.rechecked = false;
                                let ms = KEYED_LOOK_MS.min(until.0 - self.now.0);
                                self.message_wait(mid, ms);
                                return;
                            }
                        }
                        if m.rec.resplit {
                            // Still a draft, never sent: now split again (its draft deleted).
                            m.rec.redraft = false;
                            m.rec.draft_gone_at = None;
                            m.sent_checked = false;
                            self.persist_message(mid, out);
                            self.msg_ready.insert(mid.to_owned());
                            return;
                        }
                        // (Also a draft looked for again on `retry`: still there.)
                        m.rec.draft_id = Some(id);
                        m.drafted_at = Some(self.now);
                        m.rec.redraft = false;
                        m.rec.draft_gone_at = None;
                        m.sent_checked = false;
                        m.rec.may_exist = false;
                        if internet_message_id.is_some() {
                            m.rec.internet_message_id = internet_message_id;
                        }
                        m.rec.state = MessageState::Attaching;
                        self.persist_message(mid, out);
                        self.wake_files(mid);
                    }
                    MessageState::Sending if folder == MailFolder::Drafts => {
                        // `retry` of an unconfirmed message, or a throttled send: the draft is
                        // still a draft, sent again (checked by the executor right before:
                        // `DRAFT_CHANGED`).
                        m.rec.resend_if_draft = false;
                        m.sent_checked = false;
                        m.rec.draft_id = Some(id);
                        self.persist_message(mid, out);
                    }
                    _ => {}
                }
            }
            FindOutcome::NotFound => {
                if !matches!(state, MessageState::Drafting | MessageState::Sent)
                    && !m.rec.resend_if_draft
                {
                    // (A draft search that found nothing leads to a create: failures of
                    // creates in a row are still counted; a sent copy not there yet counts.)
                    m.rec.attempts = 0;
                }
                match (state, folder) {
                    (MessageState::Drafting, MailFolder::SentItems)
                        if m.rec.redraft || m.rec.may_exist =>
                    {
                        // Not sent (by hand, or before the ledger's memory): Drafts next.
                        m.sent_checked = true;
                    }
                    (MessageState::Drafting, _)
                        if m.rec.redraft && m.rec.draft_gone_at.is_none() =>
                    {
                        // Its draft is in neither folder: sent from Outlook and in Exchange's
                        // move (the Outbox), or deleted by hand. Which, only Sent Items can
                        // tell, once the move has surely had time: asked again then (a new
                        // draft now would mail its files twice, issue 20).
                        m.rec.draft_gone_at = Some(self.now);
                        m.sent_checked = false;
                        self.persist_message(mid, out);
                    }
                    (MessageState::Drafting, _) if m.rec.redraft => {
                        // Its draft is gone (deleted by hand: still in neither folder after the
                        // move's grace) and it was never sent: a new draft (its files are
                        // attached again once it is there).
                        m.rec.redraft = false;
                        m.rec.draft_gone_at = None;
                        let old = m.rec.draft_id.take();
                        m.rec.may_exist = false;
                        m.sent_checked = false;
                        self.persist_message(mid, out);
                        if let Some(old) = old {
                            self.unbind_from(mid, &old, out);
                        }
                    }
                    // (Not one looked for only because no draft was on record: found in neither
                    // folder, it is drafted at once. Held for the move's grace at every start,
                    // a message a crash left before its draft waited ten minutes after each,
                    // and said nothing: trial 5's M6.)
                    (MessageState::Drafting, _)
                        if !m.rec.keyed
                            && m.rec.may_exist
                            && m.rec.draft_gone_at.is_none()
                            && !m.marker_look =>
                    {
                        // A draft in doubt in neither folder: never made, or made and sent from
                        // Outlook, in Exchange's move. Sent Items is asked again once the move
                        // has surely had time before another is made (seed 200256).
                        m.rec.draft_gone_at = Some(self.now);
                        m.sent_checked = false;
                        self.persist_message(mid, out);
                    }
                    (MessageState::Drafting, _) if m.rec.keyed && !m.rechecked => {
                        // `mail --key`: an earlier run's message may be in Exchange's move (sent,
                        // gone from Drafts, not yet in Sent Items: in the Outbox): the whole
                        // mailbox is asked before a draft is made.
                        m.rechecked = true;
                    }
                    (MessageState::Drafting, _) => {
                        // No draft carries it: none was made. (A create from now on is its
                        // own doubt, waited for as any: the start's look is over.)
                        m.rec.may_exist = false;
                        m.rec.draft_gone_at = None;
                        m.marker_look = false;
                        self.persist_message(mid, out);
                    }
                    (MessageState::Sending, MailFolder::SentItems) if m.rec.resend_if_draft => {
                        // (A throttled send searched here first: Drafts next, the grace past.)
                        m.sent_checked = true;
                        if m.rec.send_at.take().is_some() {
                            self.persist_message(mid, out);
                        }
                    }
                    (MessageState::Sending, _) => {
                        self.message_unconfirmed(mid, out);
                    }
                    (MessageState::Sent, _) => self.sent_copy_not_seen(mid, out),
                    _ => {}
                }
            }
        }
    }

    fn on_send(&mut self, mid: &str, s: SendOutcome, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        let f = match s {
            SendOutcome::Sent => {
                let imid = m.rec.internet_message_id.clone();
                // A 202 is "accepted", not "delivered": a file moved or deleted after it waits
                // until its copy is seen in Sent Items.
                let moves = self
                    .mappings
                    .get(&m.rec.mapping)
                    .is_some_and(|r| r.after != After::Keep);
                let owed = m.rec.files.iter().any(|f| {
                    self.active
                        .get(f)
                        .map(|a| &a.rec)
                        .or_else(|| m.finished.get(f))
                        .is_some_and(|r| !r.after_done)
                });
                if moves && owed {
                    m.rec.unseen = true;
                    m.rec.attempts = 0;
                }
                self.message_sent(mid, imid, out);
                return;
            }
            SendOutcome::Failed(f) => f,
        };
        let now = self.now;
        match send_refusal(&f) {
            SendRefusal::NotSent => {
                // Refused before any effect: this send adds nothing to what may have gone, and
                // takes nothing away (an earlier send in doubt stays in doubt).
                let this_send = m.rec.send_at.take();
                m.rec.last_send_at = m.send_before;
                let earlier = m.rec.last_send_at.is_some();
                let mb = m.rec.user.to_lowercase();
                if let (Some(t), Some(q)) = (this_send, self.sent_times.get_mut(&mb)) {
                    // Its own slot, not the latest one (another message's).
                    if let Some(i) = q.iter().rposition(|x| *x == t) {
                        q.remove(i);
                    }
                }
                match f {
                    Fault::Permanent(e) if e.code == DRAFT_CHANGED => {
                        // Not sent: the executor found the draft changed (or could not list it)
                        // right before the send. Listed again here, with the core's rules (a
                        // file taken off it is never sent missing); an earlier send in doubt
                        // stays in doubt.
                        m.verified = false;
                        self.persist_message(mid, out);
                        self.msg_ready.insert(mid.to_owned());
                    }
                    Fault::Permanent(e)
                        if earlier
                            && e.code == "ErrorMessageSizeExceeded"
                            && m.rec.draft_id.is_some() =>
                    {
                        // A re-send of a draft still a draft (it was looked for in Drafts before
                        // this send) refused for its size: Graph refuses that before any effect,
                        // and the same for every send of the same draft, so the send in doubt
                        // before it did not go either. It fails for its size (`retry` splits
                        // it again); before, it stayed unconfirmed for good, its files' moves
                        // waiting on it (seeds 21923, 45635 of the tenant-limit world).
                        m.rec.last_send_at = None;
                        m.send_before = None;
                        m.rec.resend_if_draft = false;
                        self.persist_message(mid, out);
                        self.message_fault(mid, Fault::Permanent(e), out);
                    }
                    Fault::Permanent(e) if earlier => {
                        // A re-send after a send in doubt refused (its draft gone: the first
                        // send may have moved it): still "may have been sent", never "failed".
                        self.persist_message(mid, out);
                        self.message_unconfirmed_by(mid, Some(e), out);
                    }
                    Fault::SignIn(_) | Fault::Unreachable(_) if earlier => {
                        // Asked again from the start: Sent Items, then still a draft.
                        m.rec.resend_if_draft = true;
                        m.sent_checked = false;
                        self.persist_message(mid, out);
                        self.message_fault(mid, f, out);
                    }
                    f => {
                        self.persist_message(mid, out);
                        self.message_fault(mid, f, out);
                    }
                }
            }
            SendRefusal::Throttled { wait_ms } => {
                // A 429, a 503 or Exchange's sending limit: Graph has delivered mail it answered
                // so. Sent Items first (once Exchange's move has surely had time), then, not
                // there and its draft still a draft, sent again. Bounded like any failure.
                m.rec.attempts += 1;
                m.rec.send_at = Some(now);
                m.rec.last_send_at = Some(now);
                m.rec.resend_if_draft = true;
                m.sent_checked = false;
                let attempts = m.rec.attempts;
                let max = self.policy.max_attempts;
                let error = fault_failure(&f);
                m.rec.error = error.clone();
                let ms = wait_ms.unwrap_or_else(|| send_limit_backoff_ms(mid, attempts));
                // Persisted: a restart inside the wait keeps it.
                m.rec.not_before = Some(now.plus_ms(ms));
                self.persist_message(mid, out);
                if max > 0 && attempts >= max {
                    self.message_unconfirmed_by(mid, error, out);
                    return;
                }
                self.message_wait(mid, ms);
            }
            SendRefusal::MaybeSent => {
                // It may have been sent, up to when its answer ended: only Sent Items can
                // tell, searched `look_after` from then; not there, it is unconfirmed.
                m.rec.attempts += 1;
                m.rec.send_at = Some(now);
                m.rec.last_send_at = Some(now);
                m.rec.error = fault_failure(&f);
                self.persist_message(mid, out);
            }
        }
    }

    fn message_sent(&mut self, mid: &str, imid: Option<String>, out: &mut Vec<Action>) {
        let now = self.now;
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        m.rec.state = MessageState::Sent;
        m.rec.send_at = None;
        m.rec.resend_if_draft = false;
        m.rec.redraft = false;
        m.rec.draft_gone_at = None;
        m.rec.may_exist = false;
        m.rec.sent_at = Some(now);
        m.rec.error = None;
        if imid.is_some() {
            m.rec.internet_message_id = imid;
        }
        let subject = m.rec.letter.subject.clone();
        self.persist_message(mid, out);
        out.push(Action::Notify(Note::MessageSent {
            id: mid.to_owned(),
            subject,
        }));
        self.wake_files(mid);
    }

    /// A message accepted for sending whose copy a Sent Items search did not show: asked again
    /// after `look_after`, `SENT_COPY_TRIES` times, then `unconfirmed` (its files kept where
    /// they are; `retry` sends it only if its draft is still a draft).
    fn sent_copy_not_seen(&mut self, mid: &str, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        m.rec.attempts += 1;
        if m.rec.attempts < SENT_COPY_TRIES {
            self.persist_message(mid, out);
            let look_after = self.policy.look_after_ms;
            self.message_wait(mid, look_after);
            return;
        }
        m.rec.last_send_at = m.rec.last_send_at.or(m.rec.sent_at);
        self.message_unconfirmed_by(
            mid,
            Some(Failure::new(
                "sentCopyNotSeen",
                format!(
                    "Graph accepted it (202) but no copy showed in Sent Items in {SENT_COPY_TRIES} \
                     searches; its files were not moved or deleted"
                ),
            )),
            out,
        );
    }

    fn message_unconfirmed(&mut self, mid: &str, out: &mut Vec<Action>) {
        self.message_unconfirmed_by(mid, None, out);
    }

    /// Unconfirmed, with the answer that left it so (`None`: the send's answer was lost).
    fn message_unconfirmed_by(&mut self, mid: &str, why: Option<Failure>, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        m.rec.state = MessageState::Unconfirmed;
        m.rec.resend_if_draft = false;
        m.rec.send_at = None;
        m.rec.unseen = false;
        m.sent_checked = false;
        let answer = match why {
            Some(f) if f.code == "sentCopyNotSeen" => f.message,
            // (Not "the message was not sent" inside "does not prove it was not sent": that
            // answer speaks of the send it stopped, not of the one in doubt before it.)
            Some(f) => format!(
                "its last answer was {} ({})",
                f.code,
                f.message.trim_end_matches(NOT_SENT)
            ),
            None => "the send's answer was lost".to_owned(),
        };
        m.rec.error = Some(Failure::new(
            "sendUnconfirmed",
            format!(
                "{answer}, which does not prove it was not sent, and no sent copy carrying the \
                 message's marker or internetMessageId was found in Sent Items{UNCONFIRMED_ADVICE}"
            ),
        ));
        let subject = m.rec.letter.subject.clone();
        self.failed_this_run += 1;
        self.persist_message(mid, out);
        out.push(Action::Notify(Note::MessageUnconfirmed {
            id: mid.to_owned(),
            subject,
        }));
        self.wake_files(mid);
    }

    fn message_fault(&mut self, mid: &str, fault: Fault, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        match fault {
            Fault::Throttled { retry_after_ms } => {
                let ms = retry_after_ms.unwrap_or_else(|| backoff_ms(mid, m.rec.attempts));
                self.message_wait(mid, ms);
            }
            Fault::Unreachable(_) => {
                let ms = backoff_ms(mid, m.rec.attempts + 2);
                self.message_wait(mid, ms);
            }
            Fault::SignIn(f) => {
                let until = self.now.plus_ms(self.policy.sign_in_pause_ms);
                if self.sign_in.is_none() {
                    out.push(Action::Notify(Note::SignInNeeded(f.clone())));
                }
                self.sign_in = Some((until, f));
            }
            Fault::Ambiguous(f) => {
                m.rec.attempts += 1;
                let attempts = m.rec.attempts;
                let max = self.policy.max_attempts;
                // Bounded like a file's (`run --once`, `mail`): a send in doubt then becomes
                // unconfirmed, a draft in doubt a failed message that searches before creating.
                if max > 0 && attempts >= max {
                    self.message_failed(mid, f, out);
                    return;
                }
                self.persist_message(mid, out);
                self.message_wait(mid, backoff_ms(mid, attempts));
            }
            Fault::Permanent(f) => self.message_failed(mid, f, out),
        }
    }

    fn message_failed(&mut self, mid: &str, f: Failure, out: &mut Vec<Action>) {
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        if m.rec.state == MessageState::Sent || m.rec.may_have_been_sent() {
            // A send may have happened (or was accepted, its copy not yet seen): never
            // "failed" (which `retry` would send again), but unconfirmed.
            self.message_unconfirmed_by(mid, Some(f), out);
            return;
        }
        m.rec.state = MessageState::Failed;
        // A draft that may exist stays in doubt: `retry` searches before creating another.
        m.rec.error = Some(f.clone());
        let subject = m.rec.letter.subject.clone();
        self.failed_this_run += 1;
        self.persist_message(mid, out);
        out.push(Action::Notify(Note::MessageFailed {
            id: mid.to_owned(),
            subject,
            failure: f,
        }));
        self.wake_files(mid);
    }
}

/// Why a file of a message gives way to another message (see `Machine::on_rivals`).
#[derive(Debug, Clone)]
enum Loss {
    /// A sent copy holds it: found mailed in it.
    Sent {
        message_id: String,
        internet_message_id: Option<String>,
        attachment_id: String,
    },
    /// An older draft not this ledger's holds it (its subject).
    Held(String),
}

/// Whether a draft made at `created` with id `id` comes before this message's own (made at
/// `own_created`, id `own_id`): by `createdDateTime`, then by id, so two agents that both see
/// both drafts agree which goes. A time Graph did not give counts as first (never mail twice).
pub(crate) fn drafted_before(
    created: Option<Time>,
    id: &str,
    own_created: Option<Time>,
    own_id: &str,
) -> bool {
    match (created, own_created) {
        (Some(t), Some(o)) => (t, id) < (o, own_id),
        _ => true,
    }
}

/// What an answer to `send` that is not a 202 says about whether the message went (GRAPH.md
/// §13, "Answers that do not mean 'not sent'").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendRefusal {
    /// Refused before any effect: a refusal Graph documents as checked first, no usable token,
    /// or the connection never made.
    NotSent,
    /// A throttle (429, 503 with `Retry-After`, Exchange's sending limit): it may have gone;
    /// confirmed in Sent Items, then sent again only if its draft is still a draft.
    Throttled { wait_ms: Option<u64> },
    /// Dropped, timed out, a 5xx, any other refusal: it may have gone; not found in Sent
    /// Items, it is unconfirmed.
    MaybeSent,
}

/// Graph's codes for a send refused before anything was submitted: the request is checked
/// (recipients, size, permission, the draft's existence) before the message is handed over.
pub(crate) const SEND_REFUSED_BEFORE_EFFECT: &[&str] = &[
    DRAFT_CHANGED,
    "ErrorInvalidRecipients",
    "ErrorMessageSizeExceeded",
    "ErrorItemNotFound",
    "ErrorAccessDenied",
    "ErrorSendAsDenied",
    "ErrorSendOnBehalfOfDenied",
    "AccessDenied",
    "Authorization_RequestDenied",
];

/// Exchange's sending limit (consumer Outlook.com answers 403/400 with it).
pub(crate) const SEND_LIMIT: &str = "ErrorExceededMessageLimit";

pub(crate) fn send_refusal(f: &Fault) -> SendRefusal {
    match f {
        Fault::SignIn(_) | Fault::Unreachable(_) => SendRefusal::NotSent,
        Fault::Permanent(e) if SEND_REFUSED_BEFORE_EFFECT.contains(&e.code.as_str()) => {
            SendRefusal::NotSent
        }
        Fault::Permanent(e) if e.code == SEND_LIMIT => SendRefusal::Throttled { wait_ms: None },
        Fault::Throttled { retry_after_ms } => SendRefusal::Throttled {
            wait_ms: *retry_after_ms,
        },
        Fault::Ambiguous(_) | Fault::Permanent(_) => SendRefusal::MaybeSent,
    }
}

fn fault_failure(f: &Fault) -> Option<Failure> {
    match f {
        Fault::Throttled { retry_after_ms } => Some(Failure::new(
            "throttled",
            match retry_after_ms {
                Some(ms) => {
                    format!("Graph answered the send with a throttle (Retry-After {ms} ms)")
                }
                None => "Graph answered the send with a throttle".to_owned(),
            },
        )),
        Fault::Ambiguous(e) | Fault::Unreachable(e) | Fault::SignIn(e) | Fault::Permanent(e) => {
            Some(e.clone())
        }
    }
}

/// Searches of Sent Items for a copy that is not there yet (a message accepted for sending, a
/// Sent Items answer still a draft) before the message is `unconfirmed`.
pub(crate) const SENT_COPY_TRIES: u32 = 5;

/// When a message accepted for sending whose copy is not yet seen in Sent Items (`unseen`)
/// stops looking and is `unconfirmed` (its files then stay where they are), as its record says:
/// a search `look_after` after the send, then one `look_after` after each that missed it (the
/// latest on record: `attempts`, written at `updated_at`), `SENT_COPY_TRIES` in all.
/// `None`: it waits for no sent copy.
pub fn sent_copy_deadline(m: &MessageRecord, look_after_ms: u64) -> Option<Time> {
    if m.state != MessageState::Sent || !m.unseen {
        return None;
    }
    let from = match m.attempts {
        0 => m.sent_at.unwrap_or(m.updated_at),
        _ => m.updated_at,
    };
    let left = u64::from(SENT_COPY_TRIES.saturating_sub(m.attempts).max(1));
    Some(from.plus_ms(look_after_ms.saturating_mul(left)))
}

/// How often `mail --key` asks Sent Items for an earlier run's message whose draft it found
/// (while it waits for Exchange's move before resuming that draft).
pub(crate) const KEYED_LOOK_MS: u64 = 3_000;

/// Base and cap of the backoff after sending-limit refusals that name no wait.
const SEND_LIMIT_BASE_MS: u64 = 30_000;
const SEND_LIMIT_CAP_MS: u64 = 15 * 60_000;

/// The wait after the `attempt`-th sending-limit refusal in a row that named none: doubling
/// from 30 s, capped at 15 minutes, with jitter (Exchange's limit is counted over minutes).
pub fn send_limit_backoff_ms(id: &str, attempt: u32) -> u64 {
    let exp = SEND_LIMIT_BASE_MS.saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
    let cap = exp.min(SEND_LIMIT_CAP_MS);
    cap / 2 + backoff_ms(id, attempt) % (cap / 2 + 1)
}

/// `max_messages`: of the times messages were `made`, `Some(t)` when `cap` or more fall within
/// the `window_ms` before `now`: the next may be made at `t`, when the oldest of them leaves
/// the window. (The core's pacing, and `status` reading the ledger with no agent.)
pub fn cap_frees_at(
    made: impl IntoIterator<Item = Time>,
    cap: u32,
    window_ms: u64,
    now: Time,
) -> Option<Time> {
    let mut within: Vec<Time> = made
        .into_iter()
        .filter(|t| t.plus_ms(window_ms) > now)
        .collect();
    if cap == 0 || within.len() < cap as usize {
        return None;
    }
    within.sort();
    within.first().map(|t| t.plus_ms(window_ms))
}

/// How long after a send that may have happened a `retry` waits before it may send again: five
/// times `look_after` (10 minutes by default), for Exchange's move of a sent draft to Sent Items.
pub fn move_grace_ms(look_after_ms: u64) -> u64 {
    look_after_ms.saturating_mul(5)
}

/// `YYYY-MM-DD` of a time in ms since the Unix epoch, shifted by `offset_ms`.
pub fn civil_date(t: Time, offset_ms: i64) -> String {
    let ms = t.0 as i64 + offset_ms;
    let days = ms.div_euclid(86_400_000);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod key_tests;

#[cfg(test)]
mod restore_tests;

#[cfg(test)]
mod race_tests;

#[cfg(test)]
mod leave_tests;

#[cfg(test)]
mod hand_tests;

#[cfg(test)]
mod resplit_tests;
