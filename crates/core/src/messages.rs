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
use crate::mail::{part_subject, render_body, render_str, split_batch, FileFacts, RenderContext};

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
    Send,
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
            && self.messages.values().all(|m| !m.rec.at_work() && !m.busy)
    }

    pub(super) fn messages_quiet(&self) -> bool {
        self.collecting.is_empty() && self.messages.values().all(|m| !m.rec.at_work() && !m.busy)
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
            // (Not while its draft is looked for again: it may be gone.)
            Some(m) if m.rec.draft_id.is_some() && !m.rec.redraft && !m.rec.state.is_terminal() => {
                None
            }
            // A file of a message that failed or could not be confirmed waits for `retry`.
            _ => Some(Step::Idle),
        }
    }

    /// An entry that can do nothing until its message is retried (the message failed, or its
    /// send could not be confirmed).
    pub(super) fn waits_for_retry(&self, r: &Record) -> bool {
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
        for (_, id) in files {
            let a = &self.active[&id];
            let f = FileFacts {
                name: a.rec.name.clone(),
                size: a.rec.file.size,
            };
            // A file alone over the limit fails, explained; the others go.
            if let Err(e) = split_batch(std::slice::from_ref(&f), rule.max_message_size, body_len) {
                self.fail(
                    &id,
                    Failure::new(
                        MESSAGE_TOO_LARGE,
                        format!("{} cannot be mailed: {e}", a.rec.name),
                    ),
                    out,
                );
                self.make_ready(&id);
                continue;
            }
            facts.push(f);
            members.push(id);
        }
        if members.is_empty() {
            return;
        }
        let Ok(parts) = split_batch(&facts, rule.max_message_size, body_len) else {
            return; // cannot be: each file fits alone
        };
        let date = civil_date(self.now, self.policy.utc_offset_ms);
        let n = parts.len();
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
            &rec.mapping,
            rel,
            rec.file.size,
            rec.sha256.as_deref()?,
        ))
    }

    /// The keys of message `mid`'s files, stamped on its draft.
    fn keys_of_message(&self, mid: &str) -> Vec<String> {
        let Some(m) = self.messages.get(mid) else {
            return Vec::new();
        };
        m.rec
            .files
            .iter()
            .filter_map(|f| {
                self.active
                    .get(f)
                    .map(|a| &a.rec)
                    .or_else(|| m.finished.get(f))
            })
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
            since,
        });
        true
    }

    /// What the mailbox holds of entry `id`'s key.
    pub(super) fn on_key(&mut self, id: &str, k: KeyOutcome, out: &mut Vec<Action>) {
        match k {
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
                match holder {
                    None => self.key_clear(id, out),
                    Some(d) => self.held_by(id, &d.subject, out),
                }
            }
            KeyOutcome::Failed(f) => self.on_fault(id, f, out),
        }
    }

    /// Whether another version of entry `id`'s path is done with an attachment on item
    /// `item_id` (a sent copy it was found mailed in).
    fn done_here_in(&self, id: &str, item_id: &str) -> bool {
        self.active.get(id).is_some_and(|a| {
            self.path_info(&a.rec.mapping, &a.rec.path)
                .is_some_and(|i| {
                    i.done
                        .iter()
                        .any(|(_, did, _, t)| did != id && t.item_id == item_id)
                })
        })
    }

    /// Whether this ledger has another version of entry `id`'s path done (not replaced).
    fn other_done_here(&self, id: &str) -> bool {
        self.active.get(id).is_some_and(|a| {
            self.path_info(&a.rec.mapping, &a.rec.path)
                .is_some_and(|i| i.done.iter().any(|(_, did, _, _)| did != id))
        })
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
        let n = match a.key {
            KeyLook::Held(n) => n + 1,
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
                extra: Vec::new(),
                short_lists: 0,
                deleted: BTreeSet::new(),
                send_before: None,
                rechecked: false,
                stamping: Vec::new(),
            },
        );
        self.msg_ready.insert(id);
    }

    /// Start-up, first: the messages given (those not finished with, those a record names, and
    /// those sent within the pacing window).
    pub(super) fn start_messages(&mut self, messages: Vec<MessageRecord>) {
        for m in messages {
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
            self.add_message(m);
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
                        self.collect(&r.id);
                    }
                }
            }
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
        if !self.messages.contains_key(&mid) {
            self.add_message(rec);
        }
        // Its files: the done ones as they are, the failed and canceled ones retried.
        let mut again = Vec::new();
        for r in records {
            if self.member_of.get(&r.id).is_none_or(|m| *m != mid)
                || self.active.contains_key(&r.id)
            {
                continue;
            }
            if matches!(r.state, State::Failed | State::Canceled) {
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
        m.rec.retried();
        m.sent_checked = false;
        m.wait_until = None;
        // The draft may have changed since it was last listed: listed again before a send.
        m.verified = false;
        m.extra.clear();
        m.short_lists = 0;
        m.deleted.clear();
        m.rec.updated_at = now;
        out.push(Action::PersistMessage(m.rec.clone()));
        self.msg_ready.insert(mid.clone());
        self.retry(again, out);
        self.wake_files(&mid);
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
                State::Failed | State::Rejected if !active => {
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

    fn message_step(&self, m: &ActiveMessage) -> MStep {
        let r = &m.rec;
        match r.state {
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
                } else if !r.send {
                    // Left for review, exactly its files (a deleted draft shows here too).
                    MStep::Local
                } else {
                    MStep::Send
                }
            }
            // Accepted, its files' after-actions waiting for the copy in Sent Items.
            MessageState::Sent if r.unseen => MStep::Find(MailFolder::SentItems),
            _ => MStep::Idle,
        }
    }

    fn message_local(&mut self, mid: &str, out: &mut Vec<Action>) {
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
        let r = &mut m.rec;
        match r.state {
            MessageState::Drafting => r.state = MessageState::Attaching,
            MessageState::Attaching => {
                // Files canceled or deleted before they were attached leave the message.
                r.files.retain(|f| !st.dropped.contains(f));
                for d in &st.dropped {
                    m.finished.remove(d);
                }
                let failed = st.failed.map(|(name, e)| {
                    Failure::new(
                        e.code.clone(),
                        format!(
                            "{name} was not attached ({}); the message was not sent",
                            e.message
                        ),
                    )
                });
                let failed = failed.or_else(|| {
                    r.files.is_empty().then(|| {
                        Failure::new(
                            NO_FILES_LEFT,
                            "every file of it was canceled or deleted before it was sent",
                        )
                    })
                });
                if let Some(f) = failed {
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
        out.push(Action::PersistMessage(r.clone()));
        self.wake_files(mid);
    }

    /// The files of `mid` that are not done leave it, and wait for a message of their own.
    fn split_off_unattached(&mut self, mid: &str, out: &mut Vec<Action>) {
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
        if ids.is_empty() {
            return;
        }
        if let Some(m) = self.messages.get_mut(mid) {
            m.rec.files.retain(|f| !ids.contains(f));
        }
        for id in ids {
            self.member_of.remove(&id);
            if let Some(a) = self.active.get_mut(&id) {
                a.rec.message = None;
            }
            self.persist(&id, out);
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
        let now = self.now;
        for mut r in stale {
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
        let Some(m) = self.messages.get(mid) else {
            return;
        };
        let user = m.rec.user.clone();
        let mb = user.to_lowercase();
        // Not before every request that may have made it is surely over.
        let wait_for = match step {
            MStep::Find(_) if m.rec.may_exist && m.rec.state == MessageState::Drafting => {
                m.rec.effect_at.map(|t| t.plus_ms(look_after))
            }
            MStep::Find(_) if m.rec.resend_if_draft => {
                // `retry` of an unconfirmed message: "still a draft" proves nothing while
                // Exchange may still be moving a sent one, so not before that has surely had time.
                m.rec
                    .last_send_at
                    .map(|t| t.plus_ms(move_grace_ms(look_after)))
            }
            MStep::Find(MailFolder::SentItems) if m.rec.state == MessageState::Sent => {
                m.rec.sent_at.map(|t| t.plus_ms(look_after))
            }
            MStep::Find(MailFolder::SentItems) => m.rec.send_at.map(|t| t.plus_ms(look_after)),
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
        let keys = if matches!(step, MStep::CreateDraft | MStep::StampKeys) {
            self.keys_of_message(mid)
        } else {
            Vec::new()
        };
        let Some(m) = self.messages.get_mut(mid) else {
            return;
        };
        m.busy = true;
        match step {
            MStep::CreateDraft => {
                m.rec.may_exist = true;
                m.sent_checked = false;
                m.rec.effect_at = Some(now);
                m.rec.updated_at = now;
                m.rec.keys = keys.clone();
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
            .filter_map(|f| {
                self.active
                    .get(f)
                    .map(|a| &a.rec)
                    .or_else(|| m.finished.get(f))
                    .and_then(|r| r.attachment_id.clone())
            })
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
            .filter_map(|f| {
                self.active
                    .get(f)
                    .map(|a| &a.rec)
                    .or_else(|| m.finished.get(f))
                    .and_then(|r| r.attachment_id.clone())
            })
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
        m.rec.attempts = 0;
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
                        "attachmentMissing",
                        "an attachment recorded on the draft is not there; the message was not sent",
                    ),
                    out,
                );
                return;
            }
            self.message_wait(mid, look_after);
            return;
        }
        m.short_lists = 0;
        m.verified = m.extra.is_empty();
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
            }
            Err(f) => self.message_fault(mid, f, out),
        }
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
                        self.split_off_unattached(mid, out);
                    }
                    // Sent (by this message's send, or an earlier run's).
                    self.message_sent(mid, internet_message_id, out);
                    return;
                }
                match state {
                    MessageState::Drafting => {
                        if m.rec.keyed && m.rec.may_exist {
                            // An earlier run's draft: it may have been sent and not moved yet.
                            m.rec.last_send_at = Some(self.now);
                            m.rec.resend_if_draft = true;
                        }
                        // (Also a draft looked for again on `retry`: still there.)
                        m.rec.draft_id = Some(id);
                        m.rec.redraft = false;
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
                        // `retry` of an unconfirmed message: the draft is still a draft.
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
                    (MessageState::Drafting, _) if m.rec.redraft => {
                        // Its draft is gone (deleted by hand) and it was never sent: a new
                        // draft (its files are attached again once it is there).
                        m.rec.redraft = false;
                        let old = m.rec.draft_id.take();
                        m.rec.may_exist = false;
                        m.sent_checked = false;
                        self.persist_message(mid, out);
                        if let Some(old) = old {
                            self.unbind_from(mid, &old, out);
                        }
                    }
                    (MessageState::Drafting, _) if m.rec.keyed && !m.rechecked => {
                        // `mail --key`: an earlier run's message may be in Exchange's move (sent,
                        // gone from Drafts, not yet in Sent Items: in the Outbox): the whole
                        // mailbox is asked before a draft is made.
                        m.rechecked = true;
                    }
                    (MessageState::Drafting, _) => {
                        // No draft carries it: none was made.
                        m.rec.may_exist = false;
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
                self.persist_message(mid, out);
                if max > 0 && attempts >= max {
                    self.message_unconfirmed_by(mid, error, out);
                    return;
                }
                let ms = wait_ms.unwrap_or_else(|| send_limit_backoff_ms(mid, attempts));
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
            Some(f) => format!("its last answer was {} ({})", f.code, f.message),
            None => "the send's answer was lost".to_owned(),
        };
        m.rec.error = Some(Failure::new(
            "sendUnconfirmed",
            format!(
                "{answer}, which does not prove it was not sent, and no sent copy carrying the \
                 message's marker or internetMessageId was found in Sent Items; it was not sent \
                 again. Look in Sent Items; `outbox retry` sends it only if its draft is still a \
                 draft"
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
mod tests {
    use super::*;

    fn mail_machine(send: bool) -> Machine {
        let rule = MappingRule {
            name: "mail".into(),
            target: Target {
                user: "me".into(),
                kind: ItemKind::Message,
                item_id: String::new(),
            },
            if_exists: IfExists::Attach,
            on_change: OnChange::Replace,
            after: After::Keep,
            mail: Some(MailRule {
                to: vec!["a@example.com".into()],
                subject: "{name}".into(),
                body: "{names}".into(),
                send,
                max_message_size: 35_000_000,
                ..MailRule::default()
            }),
        };
        Machine::new(vec![rule], Policy::default())
    }

    pub(super) fn stat(ino: u64, size: u64) -> FileStat {
        FileStat {
            dev: 1,
            ino,
            size,
            mtime_ns: 1,
            ctime_ns: 1,
            owner: None,
        }
    }

    /// Feed a settled, hashed file; the actions answered.
    fn drop_file(m: &mut Machine, t: u64, name: &str, size: u64) -> Vec<Action> {
        drop_version(m, t, name, stat(7, size), &"ab".repeat(32))
    }

    /// Feed a settled, hashed version of a file with these bytes; the actions answered.
    pub(super) fn drop_version(
        m: &mut Machine,
        t: u64,
        name: &str,
        st: FileStat,
        sha: &str,
    ) -> Vec<Action> {
        drop_into(m, t, "mail", &format!("/mail/{name}"), st, sha)
    }

    /// The same, into mapping `mapping` at `path`.
    fn drop_into(
        m: &mut Machine,
        t: u64,
        mapping: &str,
        path: &str,
        st: FileStat,
        sha: &str,
    ) -> Vec<Action> {
        let path = PathBuf::from(path);
        let mut out = m.handle(
            Time(t),
            Input::Observed {
                mapping: mapping.into(),
                path: path.clone(),
                stat: st,
            },
        );
        out.extend(m.handle(Time(t + 5_000), Input::Tick));
        out.extend(m.handle(
            Time(t + 5_000),
            Input::Stat {
                path: path.clone(),
                stat: Some(st),
            },
        ));
        out.extend(m.handle(
            Time(t + 5_001),
            Input::Hashed {
                path,
                result: HashResult::Hashed {
                    sha256: sha.to_owned(),
                    stat: st,
                },
            },
        ));
        out
    }

    fn draft_asked(out: &[Action]) -> Option<String> {
        out.iter().find_map(|a| match a {
            Action::CreateDraft { id, letter, .. } => {
                assert_eq!(letter.subject, "x.pdf");
                Some(id.clone())
            }
            _ => None,
        })
    }

    #[test]
    fn a_message_whose_draft_is_refused_fails_and_its_file_waits_for_retry() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("a draft is created for the file");
        // The intent is on record before the request.
        let persisted = out
            .iter()
            .position(|a| matches!(a, Action::PersistMessage(r) if r.id == mid && r.may_exist));
        let asked = out
            .iter()
            .position(|a| matches!(a, Action::CreateDraft { .. }));
        assert!(persisted < asked && persisted.is_some(), "{out:?}");
        assert!(!m.only_blocked());
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Failed(Fault::Permanent(
                    Failure::new("ErrorAccessDenied", "no"),
                ))),
            },
        );
        assert!(out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.state == MessageState::Failed && !r.may_exist
        )));
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Notify(Note::MessageFailed { .. }))));
        // `run --once` can stop: the file waits for `retry`, nothing is in flight.
        assert!(m.only_blocked());
        assert!(!m.quiescent());
        let message = m.messages().next().cloned().expect("the message");
        let out = m.handle(
            Time(9_000),
            Input::RetryMessage {
                message,
                records: Vec::new(),
            },
        );
        assert!(draft_asked(&out).is_some(), "retried: {out:?}");
    }

    #[test]
    fn a_file_of_a_failed_message_retried_alone_takes_its_message_on() {
        // (The message's failure is asserted by `a_failed_message`.)
        let (mut m, _, failed, _) = a_failed_message();
        let eid = failed.id.clone();
        // `retry` of the file alone (not of its message).
        let out = m.handle(
            Time(8_000),
            Input::Retry {
                records: vec![failed],
            },
        );
        assert!(out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.state == MessageState::Attaching
        )));
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Post { id, .. } if *id == eid)),
            "{out:?}"
        );
        assert!(!m.only_blocked());
    }

    /// A message whose file failed at Graph: (machine, message id, the failed record, the
    /// failed message as persisted).
    fn a_failed_message() -> (Machine, String, Record, MessageRecord) {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let eid = out
            .iter()
            .find_map(|a| match a {
                Action::Post { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("posted");
        let out = m.handle(
            Time(7_100),
            Input::Outcome {
                id: eid,
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Permanent(Failure::new(
                    "ErrorAccessDenied",
                    "no",
                )))),
            },
        );
        let failed = out
            .iter()
            .find_map(|a| match a {
                Action::Persist(r) if r.state == State::Failed => Some(r.clone()),
                _ => None,
            })
            .expect("the file failed");
        let message = out
            .iter()
            .find_map(|a| match a {
                Action::PersistMessage(r) if r.state == MessageState::Failed => Some(r.clone()),
                _ => None,
            })
            .expect("the message failed");
        // Nothing left to do until a retry: run --once ends (exit 1).
        assert!(m.quiescent() && m.failed_this_run > 0);
        (m, mid, failed, message)
    }

    /// A retried message that was never sent looks for its draft by its marker (it may have
    /// been deleted): not in Sent Items, still in Drafts as `d1`. The actions that follow.
    fn draft_found_again(m: &mut Machine, mid: &str, out: &[Action], t: u64) -> Vec<Action> {
        assert!(
            out.iter().any(|a| matches!(
                a,
                Action::FindMessage {
                    folder: MailFolder::SentItems,
                    ..
                }
            )),
            "{out:?}"
        );
        assert!(!out.iter().any(|a| matches!(a, Action::Post { .. })));
        let out = m.handle(
            Time(t),
            Input::Outcome {
                id: mid.to_owned(),
                outcome: Outcome::Find(MailFolder::SentItems, FindOutcome::NotFound),
            },
        );
        assert!(
            out.iter().any(|a| matches!(
                a,
                Action::FindMessage {
                    folder: MailFolder::Drafts,
                    ..
                }
            )),
            "{out:?}"
        );
        m.handle(
            Time(t + 1),
            Input::Outcome {
                id: mid.to_owned(),
                outcome: Outcome::Find(
                    MailFolder::Drafts,
                    FindOutcome::Found {
                        id: "d1".into(),
                        is_draft: true,
                        internet_message_id: None,
                    },
                ),
            },
        )
    }

    #[test]
    fn retry_of_a_failed_message_retries_its_failed_files_on_its_draft() {
        let (mut m, mid, failed, message) = a_failed_message();
        let out = m.handle(
            Time(8_000),
            Input::RetryMessage {
                message,
                records: vec![failed.clone()],
            },
        );
        let out = draft_found_again(&mut m, &mid, &out, 8_100);
        assert!(out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.state == MessageState::Attaching && r.error.is_none()
        )));
        assert!(
            out.iter().any(|a| matches!(
                a,
                Action::Post { id, target, .. } if *id == failed.id && target.item_id == "d1"
            )),
            "{out:?}"
        );
        assert!(!m.only_blocked());
    }

    #[test]
    fn retry_of_a_failed_message_after_a_restart_knows_it_from_its_record() {
        let (_, mid, failed, message) = a_failed_message();
        // A new run that holds nothing of it.
        let mut m = mail_machine(true);
        let out = m.handle(
            Time(9_000),
            Input::RetryMessage {
                message,
                records: vec![failed.clone()],
            },
        );
        let out = draft_found_again(&mut m, &mid, &out, 9_100);
        assert!(out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.id == mid && r.state == MessageState::Attaching
        )));
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Post { id, .. } if *id == failed.id)),
            "{out:?}"
        );
        // A record of another message (or none) is not retried through this one.
        let mut other = failed.clone();
        other.id = "zz".into();
        other.message = Some("mother".into());
        let (_, _, _, message) = a_failed_message();
        let mut m = mail_machine(true);
        let out = m.handle(
            Time(9_000),
            Input::RetryMessage {
                message,
                records: vec![other],
            },
        );
        assert!(
            !out.iter().any(|a| matches!(a, Action::Post { .. })),
            "{out:?}"
        );
    }

    #[test]
    fn a_pending_file_with_no_message_after_a_restart_gets_one() {
        let mut m = mail_machine(true);
        let file = FileStat {
            dev: 1,
            ino: 3,
            size: 10,
            mtime_ns: 1,
            ctime_ns: 1,
            owner: None,
        };
        let pending = Record::pending(
            "p1".into(),
            "mail".into(),
            "/mail/a.pdf".into(),
            "a.pdf".into(),
            file,
            Some("cd".repeat(32)),
            1,
            Time(0),
        );
        let mut done = Record::pending(
            "d1".into(),
            "mail".into(),
            "/mail/b.pdf".into(),
            "b.pdf".into(),
            file,
            Some("ef".repeat(32)),
            2,
            Time(0),
        );
        done.state = State::Done;
        done.after_done = true;
        done.attachment_id = Some("a".into());
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![pending, done],
                with_url: vec![],
                messages: vec![],
            },
        );
        let made: Vec<&MessageRecord> = out
            .iter()
            .filter_map(|a| match a {
                Action::PersistMessage(r) => Some(r),
                _ => None,
            })
            .collect();
        // One message, for the pending file only (a done one is never mailed again).
        assert!(!made.is_empty());
        assert!(
            made.iter().all(|r| r.files == vec!["p1".to_string()]),
            "{made:?}"
        );
    }

    /// `run --once` stops when everything left only waits (`only_blocked`): a file whose folder
    /// went away does, a message whose send is in flight, or waits out a 429, does not.
    #[test]
    fn a_message_sending_is_not_blocked_when_its_files_folder_goes_away() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let eid = out
            .iter()
            .find_map(|a| match a {
                Action::Post { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("posted");
        m.handle(
            Time(7_100),
            Input::Outcome {
                id: eid,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a1".into(),
                }),
            },
        );
        let out = m.handle(
            Time(7_200),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec!["a1".into()])),
            },
        );
        assert!(out.iter().any(|a| matches!(a, Action::SendDraft { .. })));
        m.handle(
            Time(7_250),
            Input::FolderUnavailable {
                mapping: "mail".into(),
            },
        );
        // The send is in flight: its file waits only for the folder, the message does not.
        assert!(!m.only_blocked());
        let out = m.handle(
            Time(7_300),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Send(SendOutcome::Failed(Fault::Throttled {
                    retry_after_ms: Some(60_000),
                })),
            },
        );
        assert!(!out.iter().any(|a| matches!(a, Action::SendDraft { .. })));
        // Waiting out the 429 (nothing in flight), the message is still at work.
        assert!(!m.only_blocked());
    }

    #[test]
    fn a_lost_send_answer_is_confirmed_in_sent_items_and_never_sent_again() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: Some("<d1@x>".into()),
                }),
            },
        );
        let (eid, target) = out
            .iter()
            .find_map(|a| match a {
                Action::Post { id, target, .. } => Some((id.clone(), target.clone())),
                _ => None,
            })
            .expect("the file is posted to the draft");
        assert_eq!(target.item_id, "d1");
        let out = m.handle(
            Time(7_100),
            Input::Outcome {
                id: eid,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a1".into(),
                }),
            },
        );
        let file = out
            .iter()
            .find_map(|a| match a {
                Action::Persist(r) if r.state == State::Done => Some(r.clone()),
                _ => None,
            })
            .expect("the file is done");
        // The draft is listed before the send.
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::ListDraft { draft_id, .. } if draft_id == "d1")));
        let out = m.handle(
            Time(7_200),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec!["a1".into()])),
            },
        );
        let p = out
            .iter()
            .position(|a| matches!(a, Action::PersistMessage(r) if r.send_at.is_some()));
        let s = out
            .iter()
            .position(|a| matches!(a, Action::SendDraft { .. }));
        assert!(p.is_some() && p < s, "intent first: {out:?}");
        // The answer is lost: no second send, a look in Sent Items after `look_after`.
        let out = m.handle(
            Time(7_300),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Send(SendOutcome::Failed(Fault::Ambiguous(Failure::new(
                    "Timeout", "t",
                )))),
            },
        );
        assert!(!out.iter().any(|a| matches!(a, Action::SendDraft { .. })));
        assert!(!out.iter().any(|a| matches!(a, Action::FindMessage { .. })));
        // Its file is done, yet the machine is not finished: the send is in doubt.
        assert!(!m.quiescent() && !m.only_blocked());
        // From when the answer ended, not from when the send started.
        let out = m.handle(Time(7_200 + Policy::default().look_after_ms), Input::Tick);
        assert!(!out.iter().any(|a| matches!(a, Action::FindMessage { .. })));
        let later = Time(7_300 + Policy::default().look_after_ms);
        let out = m.handle(later, Input::Tick);
        assert!(out.iter().any(|a| matches!(
            a,
            Action::FindMessage {
                folder: MailFolder::SentItems,
                ..
            }
        )));
        // Not there: unconfirmed, never sent again.
        let out = m.handle(
            later,
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Find(MailFolder::SentItems, FindOutcome::NotFound),
            },
        );
        assert!(out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.state == MessageState::Unconfirmed
        )));
        assert!(!out.iter().any(|a| matches!(a, Action::SendDraft { .. })));
        assert!(m.only_blocked() || m.quiescent());
        // `retry` (the executor reads the message and its files from the ledger): Sent Items
        // first, then Drafts; sent only because the draft is still one.
        let message = out
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::PersistMessage(r) => Some(r.clone()),
                _ => None,
            })
            .expect("message");
        let out = m.handle(
            Time(later.0 + 1),
            Input::RetryMessage {
                message,
                records: vec![file.clone()],
            },
        );
        // Not at once: a draft that still looks like one proves nothing while Exchange may
        // still be moving the sent message (the user was told to look in Sent Items, and it
        // is not there yet).
        assert!(!out.iter().any(|a| matches!(a, Action::FindMessage { .. })));
        let grace = Time(7_300 + move_grace_ms(Policy::default().look_after_ms));
        let out = m.handle(Time(grace.0 - 1), Input::Tick);
        assert!(!out.iter().any(|a| matches!(a, Action::FindMessage { .. })));
        let later = grace;
        let out = m.handle(later, Input::Tick);
        assert!(out.iter().any(|a| matches!(
            a,
            Action::FindMessage {
                folder: MailFolder::SentItems,
                ..
            }
        )));
        let out = m.handle(
            Time(later.0 + 2),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Find(MailFolder::SentItems, FindOutcome::NotFound),
            },
        );
        assert!(out.iter().any(|a| matches!(
            a,
            Action::FindMessage {
                folder: MailFolder::Drafts,
                ..
            }
        )));
        let out = m.handle(
            Time(later.0 + 3),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Find(
                    MailFolder::Drafts,
                    FindOutcome::Found {
                        id: "d1".into(),
                        is_draft: true,
                        internet_message_id: None,
                    },
                ),
            },
        );
        // Listed again, then sent.
        assert!(out.iter().any(|a| matches!(a, Action::ListDraft { .. })));
    }

    #[test]
    fn civil_dates_across_leap_years_and_offsets() {
        let day = 86_400_000u64;
        assert_eq!(civil_date(Time(0), 0), "1970-01-01");
        // 2024-02-29 is day 19782 after the epoch.
        assert_eq!(civil_date(Time(19_782 * day), 0), "2024-02-29");
        assert_eq!(civil_date(Time(19_783 * day), 0), "2024-03-01");
        // 2000-12-31 (a leap year divisible by 400) is day 11322.
        assert_eq!(civil_date(Time(11_322 * day), 0), "2000-12-31");
        // An hour before midnight UTC, two hours east: the next day.
        assert_eq!(
            civil_date(Time(19_783 * day - 3_600_000), 7_200_000),
            "2024-03-01"
        );
        assert_eq!(
            civil_date(Time(19_783 * day + 3_600_000), -7_200_000),
            "2024-02-29"
        );
        // The century rules at their edges (each term of the year-of-era formula matters on
        // one of these days only): 2000 is leap, 1900 and 2100 are not, 2400 is.
        for (days, date) in [
            (11_016, "2000-02-29"),
            (11_017, "2000-03-01"),
            (47_481, "2099-12-31"),
            (47_540, "2100-02-28"),
            (47_541, "2100-03-01"),
            (157_113, "2400-02-29"),
        ] {
            assert_eq!(civil_date(Time(days * day), 0), date);
        }
        // Before the epoch (a clock set back, a far west offset): the same calendar.
        let day = day as i64;
        assert_eq!(civil_date(Time(0), -25_509 * day), "1900-02-28");
        assert_eq!(civil_date(Time(0), -25_508 * day), "1900-03-01");
    }

    /// A batch mapping's machine (files that settle within a second go together).
    fn batch_machine() -> Machine {
        let mut m = mail_machine(true);
        let mut rules: Vec<MappingRule> = m.mappings.values().cloned().collect();
        for r in &mut rules {
            if let Some(mail) = r.mail.as_mut() {
                mail.batch = true;
                mail.batch_quiet_ms = 10_000;
                mail.subject = "{count} files".into();
            }
        }
        m.mappings = rules.into_iter().map(|r| (r.name.clone(), r)).collect();
        m
    }

    #[test]
    fn two_files_of_one_name_and_bytes_in_one_message_are_two_attachments() {
        // One file dropped into two subfolders of a recursive mapping: one name, the same bytes.
        let mut m = batch_machine();
        let mut out = drop_file(&mut m, 1_000, "a.pdf", 10);
        out.extend(drop_file(&mut m, 6_100, "sub/a.pdf", 10));
        out.extend(m.handle(Time(22_000), Input::Tick));
        let mid = out
            .iter()
            .find_map(|a| match a {
                Action::CreateDraft { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("one message for both");
        let out = m.handle(
            Time(22_100),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        // One upload per name per item at a time: the first file, then the second.
        let first = out
            .iter()
            .find_map(|a| match a {
                Action::Post { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("the first is posted");
        let out = m.handle(
            Time(22_200),
            Input::Outcome {
                id: first.clone(),
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "att1".into(),
                }),
            },
        );
        let second = out
            .iter()
            .find_map(|a| match a {
                Action::Post { id, .. } if *id != first => Some(id.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("then the second: {out:?}"));
        // Its answer is lost: it looks before posting again, and that look must not adopt the
        // first file's attachment (one name, the same bytes).
        m.handle(
            Time(22_300),
            Input::Outcome {
                id: second.clone(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Ambiguous(Failure::new(
                    "Timeout", "t",
                )))),
            },
        );
        let later = Time(22_300 + Policy::default().look_after_ms);
        let out = m.handle(later, Input::Tick);
        let exclude = out
            .iter()
            .find_map(|a| match a {
                Action::Look { id, exclude, .. } if *id == second => Some(exclude.clone()),
                _ => None,
            })
            .expect("a look");
        assert_eq!(exclude, vec!["att1".to_string()]);
        // Nothing of its own there: posted again, then listed with both, then sent.
        let out = m.handle(
            later,
            Input::Outcome {
                id: second.clone(),
                outcome: Outcome::Look(LookOutcome::NotFound),
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Post { id, .. } if *id == second)));
        let out = m.handle(
            Time(later.0 + 100),
            Input::Outcome {
                id: second.clone(),
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "att2".into(),
                }),
            },
        );
        assert!(out.iter().any(|a| matches!(a, Action::ListDraft { .. })));
        // A listing with only one of them is short: not sent.
        let out = m.handle(
            Time(later.0 + 200),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec!["att1".into()])),
            },
        );
        assert!(!out.iter().any(|a| matches!(a, Action::SendDraft { .. })));
        let out = m.handle(
            Time(later.0 + 200 + Policy::default().look_after_ms),
            Input::Tick,
        );
        assert!(out.iter().any(|a| matches!(a, Action::ListDraft { .. })));
        let out = m.handle(
            Time(later.0 + 300 + Policy::default().look_after_ms),
            Input::Outcome {
                id: mid,
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec![
                    "att1".into(),
                    "att2".into(),
                ])),
            },
        );
        assert!(
            out.iter().any(|a| matches!(a, Action::SendDraft { .. })),
            "{out:?}"
        );
    }

    /// A mapping "plain" that attaches to an event of the same mailbox.
    fn plain_rule() -> MappingRule {
        MappingRule {
            name: "plain".into(),
            target: Target {
                user: "me".into(),
                kind: ItemKind::Event,
                item_id: "event1".into(),
            },
            if_exists: IfExists::Attach,
            on_change: OnChange::Replace,
            after: After::Keep,
            mail: None,
        }
    }

    /// The pre-send listing of `mid` shows b.pdf's attachment alone (it lags): nothing is sent,
    /// and `stray`, a copy this agent's records hold there, is deleted.
    fn a_listing_of_b_alone_deletes(m: &mut Machine, t: u64, mid: &str, stray: &str) {
        let out = m.handle(
            Time(t),
            Input::Outcome {
                id: mid.into(),
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec!["att-b".into()])),
            },
        );
        assert!(
            !out.iter().any(|a| matches!(a, Action::SendDraft { .. })),
            "{out:?}"
        );
        assert!(
            out.iter().any(|a| matches!(
                a,
                Action::DeleteAttachment { attachment_id, .. } if attachment_id == stray
            )),
            "{out:?}"
        );
    }

    /// Lose the answer to `id`'s POST at `t`, cancel it, and run the clock to its look.
    fn lose_post_cancel_and_wait_for_look(m: &mut Machine, id: &str, t: u64) -> u64 {
        m.handle(
            Time(t),
            Input::Outcome {
                id: id.into(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Ambiguous(Failure::new(
                    "Timeout", "t",
                )))),
            },
        );
        m.handle(Time(t + 100), Input::Cancel { id: id.into() });
        let mut t = t + 100;
        let mut looked = false;
        while !looked && t < 400_000 {
            t += 1_000;
            let out = m.handle(Time(t), Input::Tick);
            looked = out
                .iter()
                .any(|a| matches!(a, Action::Look { id: l, .. } if l == id));
        }
        assert!(looked, "{id} looks before it counts as canceled");
        t
    }

    /// a.pdf (`a_size` bytes) and b.pdf dropped together into a batch mapping, their message
    /// drafted as d1: the message id, and the actions that answered the draft (their uploads).
    fn a_and_b_on_d1(m: &mut Machine, a_size: u64) -> (String, Vec<Action>) {
        let mut out = drop_file(m, 1_000, "a.pdf", a_size);
        out.extend(drop_file(m, 6_100, "b.pdf", 20));
        out.extend(m.handle(Time(22_000), Input::Tick));
        let mid = new_message(&out).expect("one message for both");
        let out = m.handle(
            Time(22_100),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        (mid, out)
    }

    fn posted(out: &[Action], path: &str) -> Option<String> {
        out.iter().find_map(|a| match a {
            Action::Post { id, path: p, .. } if p == Path::new(path) => Some(id.clone()),
            _ => None,
        })
    }

    #[test]
    fn a_copy_on_the_draft_that_left_its_message_is_deleted_though_the_listing_does_not_show_it() {
        // a.pdf and b.pdf go together; a.pdf is attached, then rewritten twice: the second
        // version replaces the first on the draft, the third is gone before it is attached (so
        // a.pdf leaves the message), and the pre-send listing lags behind the second's attach.
        let mut m = batch_machine();
        let (mid, out) = a_and_b_on_d1(&mut m, 10);
        let a1 = posted(&out, "/mail/a.pdf").expect("a.pdf posted");
        let b = posted(&out, "/mail/b.pdf").expect("b.pdf posted");
        m.handle(
            Time(22_200),
            Input::Outcome {
                id: a1.clone(),
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "att-a1".into(),
                }),
            },
        );
        let v2 = FileStat {
            size: 11,
            mtime_ns: 2,
            ..stat(7, 11)
        };
        let out = drop_version(&mut m, 23_000, "a.pdf", v2, &"cd".repeat(32));
        let a2 = posted(&out, "/mail/a.pdf").unwrap_or_else(|| panic!("v2 posted: {out:?}"));
        assert_ne!(a2, a1);
        let out = m.handle(
            Time(28_100),
            Input::Outcome {
                id: a2.clone(),
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "att-a2".into(),
                }),
            },
        );
        assert!(
            out.iter().any(|a| matches!(
                a,
                Action::DeleteAttachment { attachment_id, .. } if attachment_id == "att-a1"
            )),
            "{out:?}"
        );
        m.handle(
            Time(28_200),
            Input::Outcome {
                id: a2.clone(),
                outcome: Outcome::DeleteAttachment(DeleteOutcome::Deleted),
            },
        );
        let v3 = FileStat {
            size: 12,
            mtime_ns: 3,
            ..stat(8, 12)
        };
        let out = drop_version(&mut m, 29_000, "a.pdf", v3, &"ef".repeat(32));
        let a3 = posted(&out, "/mail/a.pdf").unwrap_or_else(|| panic!("v3 posted: {out:?}"));
        m.handle(
            Time(34_100),
            Input::Outcome {
                id: a3,
                outcome: Outcome::Post(PostOutcome::FileGone),
            },
        );
        let out = m.handle(
            Time(34_200),
            Input::Outcome {
                id: b,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "att-b".into(),
                }),
            },
        );
        assert!(
            out.iter().any(|a| matches!(a, Action::ListDraft { .. })),
            "{out:?}"
        );
        // The listing shows b.pdf only: att-a2 is not shown yet, but this agent put it there.
        a_listing_of_b_alone_deletes(&mut m, 34_300, &mid, "att-a2");
    }

    #[test]
    fn a_message_waits_for_the_look_of_a_file_that_left_it_with_a_copy_in_doubt() {
        // a.pdf and b.pdf go together; a.pdf's POST answer is lost, then a newer version takes
        // its place in the message and is deleted before it is attached: a.pdf leaves the
        // message with a copy perhaps on the draft.
        let mut m = batch_machine();
        let (mid, out) = a_and_b_on_d1(&mut m, 10);
        let a1 = posted(&out, "/mail/a.pdf").expect("a.pdf posted");
        let b = posted(&out, "/mail/b.pdf").expect("b.pdf posted");
        m.handle(
            Time(22_200),
            Input::Outcome {
                id: a1.clone(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Ambiguous(Failure::new(
                    "ServiceUnavailable",
                    "503",
                )))),
            },
        );
        let v2 = FileStat {
            mtime_ns: 2,
            ..stat(8, 11)
        };
        drop_version(&mut m, 22_300, "a.pdf", v2, &"cd".repeat(32));
        m.handle(
            Time(27_400),
            Input::Gone {
                mapping: "mail".into(),
                path: "/mail/a.pdf".into(),
            },
        );
        let mut out = m.handle(
            Time(27_500),
            Input::Outcome {
                id: b,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "att-b".into(),
                }),
            },
        );
        // Not listed, not sent, while a.pdf's first copy is in doubt: its look comes first.
        let mut t = 27_500;
        let mut look = None;
        while look.is_none() && t < 200_000 {
            assert!(
                !out.iter()
                    .any(|a| matches!(a, Action::ListDraft { .. } | Action::SendDraft { .. })),
                "{out:?}"
            );
            look = out.iter().find_map(|a| match a {
                Action::Look { id, target, .. } if *id == a1 && target.item_id == "d1" => {
                    Some(id.clone())
                }
                _ => None,
            });
            t += 1_000;
            out = m.handle(Time(t), Input::Tick);
        }
        assert!(look.is_some(), "a1 looks on the draft");
        m.handle(
            Time(t),
            Input::Outcome {
                id: a1.clone(),
                outcome: Outcome::Look(LookOutcome::Found {
                    attachment_id: "att-a1".into(),
                }),
            },
        );
        // Then the listing (which lags: it shows b.pdf only), and the copy found is deleted.
        let mut listed = false;
        while !listed && t < 400_000 {
            t += 1_000;
            let out = m.handle(Time(t), Input::Tick);
            listed = out.iter().any(|a| matches!(a, Action::ListDraft { .. }));
        }
        assert!(listed);
        a_listing_of_b_alone_deletes(&mut m, t, &mid, "att-a1");
    }

    #[test]
    fn a_copy_in_doubt_on_another_item_of_the_mailbox_does_not_hold_a_message() {
        let mut rules: Vec<MappingRule> = mail_machine(true).mappings.into_values().collect();
        rules.push(plain_rule());
        let mut m = Machine::new(rules, Policy::default());
        // A file of the plain mapping whose POST answer was lost: in doubt on the event.
        let out = drop_into(
            &mut m,
            1_000,
            "plain",
            "/plain/p.pdf",
            stat(9, 10),
            &"ef".repeat(32),
        );
        let p = posted(&out, "/plain/p.pdf").unwrap_or_else(|| panic!("posted: {out:?}"));
        m.handle(
            Time(6_100),
            Input::Outcome {
                id: p,
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Ambiguous(Failure::new(
                    "Timeout", "t",
                )))),
            },
        );
        // A message of the mailing mapping in the same mailbox goes on regardless.
        let out = drop_file(&mut m, 7_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(12_100),
            Input::Outcome {
                id: mid,
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let x = posted(&out, "/mail/x.pdf").expect("x.pdf posted");
        let out = m.handle(
            Time(12_200),
            Input::Outcome {
                id: x,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "att-x".into(),
                }),
            },
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::ListDraft { draft_id, .. } if draft_id == "d1")),
            "{out:?}"
        );
    }

    #[test]
    fn a_message_waits_for_a_file_that_left_it_to_close_its_upload_session() {
        left_with_work_on_the_draft(false);
    }

    #[test]
    fn a_message_waits_for_a_file_that_left_it_to_delete_its_partial_copy() {
        left_with_work_on_the_draft(true);
    }

    /// a.pdf (an upload session) and b.pdf go together; a.pdf is rewritten, and the newer
    /// version deleted before it is attached, while the first version has a session open on the
    /// draft (or a partial copy there to delete: a 201 before the last byte). The message is
    /// neither listed nor sent until that is cleaned up.
    fn left_with_work_on_the_draft(partial: bool) {
        let mut m = batch_machine();
        let big = 10 * 1024 * 1024;
        let (_, out) = a_and_b_on_d1(&mut m, big);
        let a1 = out
            .iter()
            .find_map(|a| match a {
                Action::CreateSession { id, .. } => Some(id.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("a.pdf's session: {out:?}"));
        let b = posted(&out, "/mail/b.pdf").expect("b.pdf posted");
        let out = m.handle(
            Time(22_200),
            Input::Outcome {
                id: a1.clone(),
                outcome: Outcome::CreateSession(SessionOutcome::Created { next: 0 }),
            },
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::PutChunk { id, last: false, .. } if *id == a1)),
            "{out:?}"
        );
        let mut early = Vec::new();
        if partial {
            // The server completes the upload before its last byte: a partial copy to delete.
            early = m.handle(
                Time(22_300),
                Input::Outcome {
                    id: a1.clone(),
                    outcome: Outcome::Chunk(ChunkOutcome::Completed {
                        attachment_id: Some("part".into()),
                    }),
                },
            );
        }
        let v2 = FileStat {
            mtime_ns: 2,
            ..stat(8, 11)
        };
        drop_version(&mut m, 22_400, "a.pdf", v2, &"cd".repeat(32));
        m.handle(
            Time(27_500),
            Input::Gone {
                mapping: "mail".into(),
                path: "/mail/a.pdf".into(),
            },
        );
        early.extend(m.handle(
            Time(27_600),
            Input::Outcome {
                id: b,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "att-b".into(),
                }),
            },
        ));
        let mut out = early;
        // Until a1's session is closed (or its partial copy deleted): no listing, no send.
        let mut t = 27_600;
        let mut cleanup = None;
        while t < 200_000 {
            assert!(
                !out.iter()
                    .any(|a| matches!(a, Action::ListDraft { .. } | Action::SendDraft { .. })),
                "{out:?}"
            );
            cleanup = cleanup.or_else(|| {
                out.iter().find_map(|a| match a {
                    Action::DeleteSession { id, .. } if !partial && *id == a1 => Some(()),
                    Action::DeleteAttachment {
                        id, attachment_id, ..
                    } if partial && *id == a1 && attachment_id == "part" => Some(()),
                    _ => None,
                })
            });
            t += 1_000;
            out = m.handle(Time(t), Input::Tick);
            if !partial && cleanup.is_none() {
                // The chunk under way comes back; the canceled upload's session then goes.
                out.extend(m.handle(
                    Time(t),
                    Input::Outcome {
                        id: a1.clone(),
                        outcome: Outcome::Chunk(ChunkOutcome::Accepted {
                            next: Some(1024 * 1024),
                        }),
                    },
                ));
            }
        }
        assert!(cleanup.is_some(), "a1 cleans up");
        let outcome = if partial {
            Outcome::DeleteAttachment(DeleteOutcome::Deleted)
        } else {
            Outcome::DeleteSession(DeleteOutcome::Deleted)
        };
        m.handle(Time(t), Input::Outcome { id: a1, outcome });
        let mut listed = false;
        while !listed && t < 400_000 {
            t += 1_000;
            let out = m.handle(Time(t), Input::Tick);
            listed = out.iter().any(|a| matches!(a, Action::ListDraft { .. }));
        }
        assert!(listed, "then the draft is listed");
    }

    #[test]
    fn a_post_under_way_when_its_message_was_retried_goes_to_the_new_draft_not_failed() {
        post_under_way_at_a_retry(false);
    }

    #[test]
    fn a_post_under_way_at_a_retry_goes_to_the_new_draft_after_its_mapping_stops_mailing() {
        // The files of a message keep going to its draft once their mapping names an item.
        post_under_way_at_a_retry(true);
    }

    fn post_under_way_at_a_retry(reload_plain: bool) {
        // a.pdf and b.pdf go together; the user deletes the draft while both are posted.
        let mut m = batch_machine();
        let (mid, out) = a_and_b_on_d1(&mut m, 10);
        let a = posted(&out, "/mail/a.pdf").expect("a.pdf posted");
        let b = posted(&out, "/mail/b.pdf").expect("b.pdf posted");
        let gone = || {
            Outcome::Post(PostOutcome::Failed(Fault::Permanent(Failure::new(
                ITEM_NOT_FOUND,
                "The specified object was not found in the store.",
            ))))
        };
        // a.pdf's answer: the draft is gone; the file fails, and its message with it.
        let out = m.handle(
            Time(22_200),
            Input::Outcome {
                id: a.clone(),
                outcome: gone(),
            },
        );
        let failed_a = out
            .iter()
            .rev()
            .find_map(|x| match x {
                Action::Persist(r) if r.id == a && r.state == State::Failed => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("a.pdf failed: {out:?}"));
        let message = out
            .iter()
            .rev()
            .find_map(|x| match x {
                Action::PersistMessage(r) if r.state == MessageState::Failed => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("the message failed: {out:?}"));
        // `retry` while b.pdf's POST is still under way: its draft is looked for again.
        m.handle(
            Time(22_300),
            Input::RetryMessage {
                message,
                records: vec![failed_a],
            },
        );
        if reload_plain {
            let mut plain = m.mappings["mail"].clone();
            plain.mail = None;
            plain.target.item_id = "other".into();
            m.handle(
                Time(22_350),
                Input::Config {
                    mappings: vec![plain],
                    policy: Policy::default(),
                },
            );
        }
        // b.pdf's answer comes now: the same gone draft. Not a failure of the file: it waits
        // for the new draft.
        let out = m.handle(
            Time(22_400),
            Input::Outcome {
                id: b.clone(),
                outcome: gone(),
            },
        );
        assert!(
            !out.iter().any(|x| matches!(
                x,
                Action::Persist(r) if r.id == b && r.state == State::Failed
            )),
            "{out:?}"
        );
        m.handle(
            Time(22_500),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Find(MailFolder::SentItems, FindOutcome::NotFound),
            },
        );
        m.handle(
            Time(22_600),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Find(MailFolder::Drafts, FindOutcome::NotFound),
            },
        );
        let out = m.handle(
            Time(22_700),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d2".into(),
                    internet_message_id: None,
                }),
            },
        );
        for id in [&a, &b] {
            assert!(
                out.iter().any(|x| matches!(
                    x,
                    Action::Post { id: p, target, .. } if p == id && target.item_id == "d2"
                )),
                "{id} goes to the new draft: {out:?}"
            );
        }
    }

    #[test]
    fn after_a_restart_the_sends_on_record_count_against_the_pacing_window() {
        let mut m = mail_machine(true);
        let window = Policy::default().send_window_ms;
        let per = Policy::default().sends_per_window as u64;
        // The last run sent a full window's worth just before it stopped (and one in doubt
        // would count the same).
        let sent: Vec<MessageRecord> = (0..per)
            .map(|i| {
                let mut r = MessageRecord::drafting(
                    format!("old{i}"),
                    "mail".into(),
                    "Me".into(),
                    Letter::default(),
                    Vec::new(),
                    true,
                    i,
                    Time(1_000),
                );
                r.state = MessageState::Sent;
                r.draft_id = Some(format!("od{i}"));
                r.last_send_at = Some(Time(50_000 + i * 100));
                r.sent_at = Some(Time(50_001 + i * 100));
                r
            })
            .collect();
        m.handle(
            Time(100_000),
            Input::Start {
                records: Vec::new(),
                with_url: Vec::new(),
                messages: sent,
            },
        );
        let out = drop_file(&mut m, 100_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(105_100),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let eid = out
            .iter()
            .find_map(|a| match a {
                Action::Post { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("posted");
        m.handle(
            Time(105_200),
            Input::Outcome {
                id: eid,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a1".into(),
                }),
            },
        );
        let out = m.handle(
            Time(105_300),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec!["a1".into()])),
            },
        );
        assert!(
            !out.iter().any(|a| matches!(a, Action::SendDraft { .. })),
            "a 31st send inside the window: {out:?}"
        );
        // Once the oldest of them is a window old (from its answer), it goes.
        let free = Time(50_001 + window);
        let out = m.handle(Time(free.0 - 1), Input::Tick);
        assert!(!out.iter().any(|a| matches!(a, Action::SendDraft { .. })));
        let out = m.handle(free, Input::Tick);
        assert!(
            out.iter().any(|a| matches!(a, Action::SendDraft { .. })),
            "{out:?}"
        );
    }

    /// A message whose file is on draft `d1` and whose send Graph refused (the draft was deleted
    /// by hand): (machine, message id, the done file's record, the failed message).
    fn a_message_whose_draft_was_deleted() -> (Machine, String, Record, MessageRecord) {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let eid = out
            .iter()
            .find_map(|a| match a {
                Action::Post { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("posted");
        let out = m.handle(
            Time(7_100),
            Input::Outcome {
                id: eid,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a1".into(),
                }),
            },
        );
        let file = out
            .iter()
            .find_map(|a| match a {
                Action::Persist(r) if r.state == State::Done => Some(r.clone()),
                _ => None,
            })
            .expect("done");
        let out = m.handle(
            Time(7_200),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec!["a1".into()])),
            },
        );
        assert!(out.iter().any(|a| matches!(a, Action::SendDraft { .. })));
        let out = m.handle(
            Time(7_300),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Send(SendOutcome::Failed(Fault::Permanent(Failure::new(
                    "ErrorItemNotFound",
                    "The specified object was not found in the store.",
                )))),
            },
        );
        let message = out
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::PersistMessage(r) if r.state == MessageState::Failed => Some(r.clone()),
                _ => None,
            })
            .expect("failed");
        // Refused, not in doubt: it was never sent, and the ledger says so.
        assert!(!message.may_have_been_sent(), "{message:?}");
        (m, mid, file, message)
    }

    #[test]
    fn retry_of_a_never_sent_message_whose_draft_is_gone_drafts_it_again_and_sends_it() {
        let (_, mid, file, message) = a_message_whose_draft_was_deleted();
        // `retry` after a restart (the machine knows it from the ledger only).
        let mut m = mail_machine(true);
        let out = m.handle(
            Time(9_000),
            Input::RetryMessage {
                message,
                records: vec![file.clone()],
            },
        );
        // Its marker is looked for first: not sent by hand (Sent Items), not in Drafts.
        assert!(out.iter().any(|a| matches!(
            a,
            Action::FindMessage {
                folder: MailFolder::SentItems,
                ..
            }
        )));
        assert!(!out.iter().any(|a| matches!(a, Action::CreateDraft { .. })));
        let out = m.handle(
            Time(9_100),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Find(MailFolder::SentItems, FindOutcome::NotFound),
            },
        );
        assert!(out.iter().any(|a| matches!(
            a,
            Action::FindMessage {
                folder: MailFolder::Drafts,
                ..
            }
        )));
        let out = m.handle(
            Time(9_200),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Find(MailFolder::Drafts, FindOutcome::NotFound),
            },
        );
        // Gone: a new draft (its intent on record first), under the same marker.
        let forgot = out.iter().position(
            |a| matches!(a, Action::PersistMessage(r) if r.draft_id.is_none() && !r.redraft),
        );
        let asked = out
            .iter()
            .position(|a| matches!(a, Action::CreateDraft { .. }));
        assert!(forgot.is_some() && forgot < asked, "{out:?}");
        assert!(
            matches!(out.get(asked.unwrap_or(0)), Some(Action::CreateDraft { id, .. }) if *id == mid)
        );
        let out = m.handle(
            Time(9_300),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d2".into(),
                    internet_message_id: None,
                }),
            },
        );
        // Its file, done on the deleted draft, is attached again to the new one.
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Persist(r) if r.id == file.id && r.state == State::Pending && r.attachment_id.is_none()
        )));
        assert!(
            out.iter().any(|a| matches!(
                a,
                Action::Post { id, target, .. } if *id == file.id && target.item_id == "d2"
            )),
            "{out:?}"
        );
        let out = m.handle(
            Time(9_400),
            Input::Outcome {
                id: file.id.clone(),
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a2".into(),
                }),
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::ListDraft { draft_id, .. } if draft_id == "d2")));
        let out = m.handle(
            Time(9_500),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec!["a2".into()])),
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::SendDraft { draft_id, .. } if draft_id == "d2")));
    }

    #[test]
    fn retry_of_a_message_that_may_have_been_sent_never_drafts_it_again() {
        let (_, mid, file, mut message) = a_message_whose_draft_was_deleted();
        // As if a send of it had been in doubt before (an earlier run's unconfirmed send, then
        // `retry`, then this refusal): the ledger's `last_send_at` says a send may have
        // happened.
        message.last_send_at = Some(Time(5_000));
        message.resend_if_draft = true;
        assert!(message.may_have_been_sent());
        let mut m = mail_machine(true);
        let grace = 5_000 + move_grace_ms(Policy::default().look_after_ms);
        let out = m.handle(
            Time(grace),
            Input::RetryMessage {
                message,
                records: vec![file],
            },
        );
        // Not looked for as a draft to replace: the send in doubt is confirmed first.
        assert!(out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.state == MessageState::Attaching && !r.redraft
        )));
        let mut out = out;
        for (t, folder) in [
            (grace + 1, MailFolder::SentItems),
            (grace + 2, MailFolder::Drafts),
        ] {
            assert!(
                out.iter()
                    .any(|a| matches!(a, Action::FindMessage { folder: f, .. } if *f == folder)),
                "{out:?}"
            );
            out = m.handle(
                Time(t),
                Input::Outcome {
                    id: mid.clone(),
                    outcome: Outcome::Find(folder, FindOutcome::NotFound),
                },
            );
        }
        // Neither sent copy nor draft: it cannot be told, so it stays unconfirmed; never a new
        // draft, never a send.
        assert!(out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.state == MessageState::Unconfirmed
        )));
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::CreateDraft { .. } | Action::SendDraft { .. })));
    }

    #[test]
    fn retry_of_a_never_sent_message_sent_by_hand_from_outlook_records_it_sent() {
        let (_, mid, file, message) = a_message_whose_draft_was_deleted();
        let mut m = mail_machine(true);
        m.handle(
            Time(9_000),
            Input::RetryMessage {
                message,
                records: vec![file],
            },
        );
        let out = m.handle(
            Time(9_100),
            Input::Outcome {
                id: mid,
                outcome: Outcome::Find(
                    MailFolder::SentItems,
                    FindOutcome::Found {
                        id: "s1".into(),
                        is_draft: false,
                        internet_message_id: Some("<s1@x>".into()),
                    },
                ),
            },
        );
        assert!(out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.state == MessageState::Sent && !r.redraft
        )));
        assert!(!out
            .iter()
            .any(|a| matches!(a, Action::CreateDraft { .. } | Action::SendDraft { .. })));
    }

    /// Observe `path` with `stat`, let it settle, hash it to the bytes `drop_file` uses.
    fn settle_as(m: &mut Machine, t: u64, path: &str, st: FileStat) -> Vec<Action> {
        let path = PathBuf::from(path);
        let mut out = m.handle(
            Time(t),
            Input::Observed {
                mapping: "mail".into(),
                path: path.clone(),
                stat: st,
            },
        );
        out.extend(m.handle(Time(t + 5_000), Input::Tick));
        out.extend(m.handle(
            Time(t + 5_000),
            Input::Stat {
                path: path.clone(),
                stat: Some(st),
            },
        ));
        if out
            .iter()
            .any(|a| matches!(a, Action::Hash { path: p, .. } if *p == path))
        {
            out.extend(m.handle(
                Time(t + 5_001),
                Input::Hashed {
                    path,
                    result: HashResult::Hashed {
                        sha256: "ab".repeat(32),
                        stat: st,
                    },
                },
            ));
        }
        out
    }

    /// Carry message `mid` (one file, no faults) from its draft to sent.
    fn send_through(m: &mut Machine, mid: &str, t: u64) {
        let out = m.handle(
            Time(t),
            Input::Outcome {
                id: mid.to_owned(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: format!("d-{mid}"),
                    internet_message_id: None,
                }),
            },
        );
        let eid = out
            .iter()
            .find_map(|a| match a {
                Action::Post { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("posted");
        m.handle(
            Time(t + 1),
            Input::Outcome {
                id: eid,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: format!("a-{mid}"),
                }),
            },
        );
        m.handle(
            Time(t + 2),
            Input::Outcome {
                id: mid.to_owned(),
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec![format!("a-{mid}")])),
            },
        );
        let out = m.handle(
            Time(t + 3),
            Input::Outcome {
                id: mid.to_owned(),
                outcome: Outcome::Send(SendOutcome::Sent),
            },
        );
        assert!(out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.id == mid && r.state == MessageState::Sent
        )));
    }

    fn new_message(out: &[Action]) -> Option<String> {
        out.iter().find_map(|a| match a {
            Action::CreateDraft { id, .. } => Some(id.clone()),
            _ => None,
        })
    }

    #[test]
    fn the_same_bytes_dropped_again_into_a_mailing_folder_are_mailed_again_a_touch_is_not() {
        let mut m = mail_machine(true);
        let st = |ino: u64, time: i64| FileStat {
            dev: 1,
            ino,
            size: 10,
            mtime_ns: time,
            ctime_ns: time,
            owner: None,
        };
        let out = settle_as(&mut m, 1_000, "/mail/inv.pdf", st(7, 1));
        let first = new_message(&out).expect("mailed");
        send_through(&mut m, &first, 7_000);
        // A touch (same inode, new times): the same file, not mailed again.
        let out = settle_as(&mut m, 10_000, "/mail/inv.pdf", st(7, 2));
        assert!(new_message(&out).is_none(), "a touch: {out:?}");
        // A rescan of it, unchanged: nothing.
        let out = settle_as(&mut m, 20_000, "/mail/inv.pdf", st(7, 2));
        assert!(new_message(&out).is_none(), "a rescan: {out:?}");
        // The same bytes dropped again as a new file (copied over it): a new request.
        let out = settle_as(&mut m, 30_000, "/mail/inv.pdf", st(8, 3));
        let second = new_message(&out).expect("a drop again is mailed again");
        assert_ne!(first, second);
        send_through(&mut m, &second, 36_000);
        // The user removes it, then drops it again; the filesystem hands out the same inode.
        let out = m.handle(
            Time(40_000),
            Input::Gone {
                mapping: "mail".into(),
                path: "/mail/inv.pdf".into(),
            },
        );
        assert!(
            out.iter().any(|a| matches!(
                a,
                Action::Persist(r) if r.file.has_left()
            ) || matches!(a, Action::UpdateFile { file, .. } if file.has_left())),
            "the record says its file left: {out:?}"
        );
        let out = settle_as(&mut m, 41_000, "/mail/inv.pdf", st(8, 4));
        let third = new_message(&out).expect("after it was gone, a drop again is mailed");
        assert!(third != first && third != second);
    }

    #[test]
    fn a_mapping_that_mails_after_a_reload_mails_its_waiting_files_not_one_that_may_be_on_its_item()
    {
        let plain = MappingRule {
            name: "mail".into(),
            target: Target {
                user: "me".into(),
                kind: ItemKind::Message,
                item_id: "item".into(),
            },
            if_exists: IfExists::Attach,
            on_change: OnChange::Replace,
            after: After::Keep,
            mail: None,
        };
        let mut m = Machine::new(vec![plain.clone()], Policy::default());
        let waiting = Record::pending(
            "p1".into(),
            "mail".into(),
            "/mail/a.pdf".into(),
            "a.pdf".into(),
            stat(3, 10),
            Some("cd".repeat(32)),
            1,
            Time(0),
        );
        // A POST whose answer was lost: it may be on the item already.
        let mut doubt = Record::pending(
            "p2".into(),
            "mail".into(),
            "/mail/b.pdf".into(),
            "b.pdf".into(),
            stat(4, 10),
            Some("ef".repeat(32)),
            2,
            Time(0),
        );
        doubt.state = State::Uploading;
        doubt.target = Some(plain.target.clone());
        doubt.may_exist = true;
        doubt.effect_at = Some(Time(0));
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![waiting, doubt],
                with_url: vec![],
                messages: vec![],
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Post { id, .. } if id == "p1")));
        // p1's POST certainly did not land: it waits to try again, nothing of it on the item.
        m.handle(
            Time(20),
            Input::Outcome {
                id: "p1".into(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Unreachable(Failure::new(
                    "ConnectionRefused",
                    "down",
                )))),
            },
        );
        let mut mailing = mail_machine(true).mappings["mail"].clone();
        mailing.target.item_id = String::new();
        let out = m.handle(
            Time(30),
            Input::Config {
                mappings: vec![mailing],
                policy: Policy::default(),
            },
        );
        let made: Vec<&MessageRecord> = out
            .iter()
            .filter_map(|a| match a {
                Action::PersistMessage(r) => Some(r),
                _ => None,
            })
            .collect();
        assert!(!made.is_empty(), "{out:?}");
        // p2 stays bound to the item its POST may have reached; its look settles it.
        assert!(
            made.iter().all(|r| r.files == vec!["p1".to_string()]),
            "{made:?}"
        );
    }

    /// a.pdf and b.pdf go together on draft d1 (after = delete); a.pdf's POST answer is lost,
    /// the user cancels it, and its look is refused: the machine and the id of a.pdf's entry.
    fn canceled_in_doubt_and_look_refused() -> (Machine, String, String, String, u64) {
        let mut m = batch_machine();
        for r in m.mappings.values_mut() {
            r.after = After::Delete;
        }
        let (mid, out) = a_and_b_on_d1(&mut m, 10);
        let a1 = posted(&out, "/mail/a.pdf").expect("a.pdf posted");
        let b = posted(&out, "/mail/b.pdf").expect("b.pdf posted");
        let t = lose_post_cancel_and_wait_for_look(&mut m, &a1, 22_200);
        m.handle(
            Time(t),
            Input::Outcome {
                id: a1.clone(),
                outcome: Outcome::Look(LookOutcome::Failed(Fault::Permanent(Failure::new(
                    "ErrorAccessDenied",
                    "Access is denied.",
                )))),
            },
        );
        (m, mid, a1, b, t)
    }

    #[test]
    fn a_canceled_copy_in_doubt_out_of_attempts_keeps_looking_while_its_draft_may_be_sent() {
        // As `run --once` (a bound on attempts): a canceled file's looks answer 5xx until the
        // bound; its copy may be on the draft, so it does not end in doubt.
        let mut m = batch_machine();
        m.policy.max_attempts = 2;
        let (_, out) = a_and_b_on_d1(&mut m, 10);
        let a1 = posted(&out, "/mail/a.pdf").expect("a.pdf posted");
        let b = posted(&out, "/mail/b.pdf").expect("b.pdf posted");
        let lost = || Fault::Ambiguous(Failure::new("ServiceUnavailable", "503"));
        m.handle(
            Time(22_200),
            Input::Outcome {
                id: a1.clone(),
                outcome: Outcome::Post(PostOutcome::Failed(lost())),
            },
        );
        m.handle(Time(22_300), Input::Cancel { id: a1.clone() });
        let mut out = m.handle(
            Time(22_400),
            Input::Outcome {
                id: b,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "att-b".into(),
                }),
            },
        );
        let mut t = 22_400;
        let mut looks = 0;
        while t < 1_000_000 {
            assert!(
                !out.iter()
                    .any(|a| matches!(a, Action::ListDraft { .. } | Action::SendDraft { .. })),
                "listed or sent while a1's copy is in doubt: {out:?}"
            );
            if out
                .iter()
                .any(|a| matches!(a, Action::Look { id, .. } if *id == a1))
            {
                looks += 1;
                out = m.handle(
                    Time(t),
                    Input::Outcome {
                        id: a1.clone(),
                        outcome: Outcome::Look(LookOutcome::Failed(lost())),
                    },
                );
                continue;
            }
            t += 1_000;
            out = m.handle(Time(t), Input::Tick);
        }
        assert!(looks > 2, "it kept looking past its bound: {looks}");
        assert!(m.record(&a1).is_some_and(|r| r.may_exist));
    }

    #[test]
    fn a_canceled_copy_in_doubt_on_an_ordinary_item_ends_in_doubt_when_its_look_is_refused() {
        canceled_in_doubt_on_an_ordinary_item(true);
    }

    #[test]
    fn a_canceled_copy_in_doubt_on_an_ordinary_item_ends_in_doubt_out_of_attempts() {
        canceled_in_doubt_on_an_ordinary_item(false);
    }

    /// Not a draft (a message at work elsewhere changes nothing): canceled, the doubt kept,
    /// when its look is refused (or, `refused` false, answers 5xx up to a bound on attempts).
    fn canceled_in_doubt_on_an_ordinary_item(refused: bool) {
        let mut rules: Vec<MappingRule> = batch_machine().mappings.into_values().collect();
        rules.push(plain_rule());
        let policy = Policy {
            max_attempts: if refused { 0 } else { 2 },
            ..Policy::default()
        };
        let mut m = Machine::new(rules, policy);
        // A message at work on d1.
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let out = [out, m.handle(Time(22_000), Input::Tick)].concat();
        let mid = new_message(&out).expect("a message");
        m.handle(
            Time(22_100),
            Input::Outcome {
                id: mid,
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let out = drop_into(
            &mut m,
            23_000,
            "plain",
            "/plain/p.pdf",
            stat(9, 10),
            &"ef".repeat(32),
        );
        let p = posted(&out, "/plain/p.pdf").unwrap_or_else(|| panic!("posted: {out:?}"));
        let mut t = lose_post_cancel_and_wait_for_look(&mut m, &p, 28_100);
        let fault = if refused {
            Fault::Permanent(Failure::new("ErrorAccessDenied", "Access is denied."))
        } else {
            Fault::Ambiguous(Failure::new("ServiceUnavailable", "503"))
        };
        let mut ended = false;
        while !ended && t < 1_000_000 {
            let out = m.handle(
                Time(t),
                Input::Outcome {
                    id: p.clone(),
                    outcome: Outcome::Look(LookOutcome::Failed(fault.clone())),
                },
            );
            ended = out.iter().any(|a| {
                matches!(
                    a,
                    Action::Persist(r) if r.id == p && r.state == State::Canceled && r.may_exist
                )
            });
            let mut again = false;
            while !ended && !again && t < 1_000_000 {
                t += 1_000;
                let out = m.handle(Time(t), Input::Tick);
                again = out
                    .iter()
                    .any(|a| matches!(a, Action::Look { id, .. } if *id == p));
            }
        }
        assert!(ended, "canceled, its doubt on record");
        assert!(m.record(&p).is_none(), "it ended");
    }

    #[test]
    fn a_file_of_a_message_refused_by_graph_fails_though_its_post_was_sent() {
        // Not canceled: a refusal fails it (and its message), it does not look again.
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid,
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let x = posted(&out, "/mail/x.pdf").expect("posted");
        let out = m.handle(
            Time(7_100),
            Input::Outcome {
                id: x.clone(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Permanent(Failure::new(
                    "ErrorAttachmentSizeLimitExceeded",
                    "too large",
                )))),
            },
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Persist(r) if r.id == x && r.state == State::Failed)),
            "{out:?}"
        );
    }

    #[test]
    fn a_canceled_copy_in_doubt_is_settled_before_its_message_is_listed_or_sent() {
        let (mut m, mid, a1, b, mut t) = canceled_in_doubt_and_look_refused();
        // It does not end in doubt while its draft may still be sent: it looks again.
        assert!(m.record(&a1).is_some(), "a1 still has work");
        let mut out = m.handle(
            Time(t + 10),
            Input::Outcome {
                id: b,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "att-b".into(),
                }),
            },
        );
        let mut looked = false;
        while !looked && t < 400_000 {
            assert!(
                !out.iter()
                    .any(|a| matches!(a, Action::ListDraft { .. } | Action::SendDraft { .. })),
                "listed or sent while a1's copy is in doubt: {out:?}"
            );
            looked = out
                .iter()
                .any(|a| matches!(a, Action::Look { id, .. } if *id == a1));
            t += 1_000;
            out = m.handle(Time(t), Input::Tick);
        }
        assert!(looked, "a1 looks again");
        // Nothing of it there: canceled, and the message goes on without it.
        let out = m.handle(
            Time(t),
            Input::Outcome {
                id: a1.clone(),
                outcome: Outcome::Look(LookOutcome::NotFound),
            },
        );
        let mut listed = out
            .iter()
            .any(|a| matches!(a, Action::ListDraft { id, .. } if *id == mid));
        while !listed && t < 800_000 {
            t += 1_000;
            let out = m.handle(Time(t), Input::Tick);
            listed = out
                .iter()
                .any(|a| matches!(a, Action::ListDraft { id, .. } if *id == mid));
        }
        assert!(listed);
        assert!(m.record(&a1).is_none(), "a1 ended");
    }

    #[test]
    fn a_file_done_on_a_message_draft_with_no_message_of_its_own_gets_no_after_action() {
        // A done record with no message whose copy is on the draft of a message still at work
        // (a file that left its message and was found there by its look): that copy is no
        // mail of it, so its file is not moved or deleted (after = delete here).
        let mut m = batch_machine();
        for r in m.mappings.values_mut() {
            r.after = After::Delete;
        }
        let out = drop_file(&mut m, 1_000, "b.pdf", 20);
        let out = [out, m.handle(Time(22_000), Input::Tick)].concat();
        let mid = new_message(&out).expect("a message");
        let out = m.handle(
            Time(22_100),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let message = out
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::PersistMessage(r) if r.draft_id.is_some() => Some(r.clone()),
                _ => None,
            })
            .expect("the message on d1");
        let b = out
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::Persist(r) if r.path == Path::new("/mail/b.pdf") => Some(r.clone()),
                _ => None,
            })
            .expect("b.pdf's record");
        let mut done = Record::pending(
            "a1".into(),
            "mail".into(),
            "/mail/a.pdf".into(),
            "a.pdf".into(),
            stat(3, 10),
            Some("cd".repeat(32)),
            1,
            Time(0),
        );
        done.state = State::Done;
        done.target = Some(Target {
            user: "me".into(),
            kind: ItemKind::Message,
            item_id: "d1".into(),
        });
        done.attachment_id = Some("att-a1".into());
        // After a restart, with the message at work on d1.
        let mut m2 = batch_machine();
        m2.mappings = m.mappings.clone();
        let out = m2.handle(
            Time(30_000),
            Input::Start {
                records: vec![b, done],
                with_url: vec![],
                messages: vec![message],
            },
        );
        let out = [out, m2.handle(Time(31_000), Input::Tick)].concat();
        assert!(
            !out.iter()
                .any(|a| matches!(a, Action::After { id, .. } if id == "a1")),
            "the file of a copy no message mails is not deleted: {out:?}"
        );
    }

    #[test]
    fn a_file_attached_before_its_mapping_began_to_mail_still_gets_its_after_action() {
        // Done on the mapping's item, its after-action not run yet (the agent stopped), and the
        // mapping mails now: the file is on its item, and its after-action is owed.
        let mut m = mail_machine(true);
        let mut done = Record::pending(
            "p1".into(),
            "mail".into(),
            "/mail/a.pdf".into(),
            "a.pdf".into(),
            stat(3, 10),
            Some("cd".repeat(32)),
            1,
            Time(0),
        );
        done.state = State::Done;
        done.target = Some(Target {
            user: "me".into(),
            kind: ItemKind::Message,
            item_id: "item".into(),
        });
        done.attachment_id = Some("att1".into());
        let out = m.handle(
            Time(10),
            Input::Start {
                records: vec![done],
                with_url: vec![],
                messages: vec![],
            },
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::After { id, .. } if id == "p1")),
            "{out:?}"
        );
        assert!(!out.iter().any(|a| matches!(a, Action::CreateDraft { .. })));
    }

    #[test]
    fn a_batch_closes_batch_max_wait_after_it_opened_however_often_files_arrive() {
        let mut m = mail_machine(true);
        let mut rule = m.mappings["mail"].clone();
        if let Some(mail) = rule.mail.as_mut() {
            mail.batch = true;
            mail.batch_quiet_ms = 10_000;
            mail.batch_max_wait_ms = 30_000;
        }
        m.handle(
            Time(0),
            Input::Config {
                mappings: vec![rule],
                policy: Policy::default(),
            },
        );
        // A file every 8 s, inside batch_quiet: only batch_max_wait closes the batch.
        let mut letters = Vec::new();
        for k in 0..10u64 {
            let t = 1_000 + 8_000 * k;
            let mut out = drop_version(
                &mut m,
                t,
                &format!("f{k}.pdf"),
                stat(100 + k, 10),
                &"ab".repeat(32),
            );
            out.extend(m.handle(Time(t + 7_000), Input::Tick));
            letters.extend(out.iter().filter_map(|a| match a {
                Action::CreateDraft { letter, .. } => Some((t + 5_001, letter.body.clone())),
                _ => None,
            }));
        }
        // Opened when f0 settled (6,001): closed at the first moment past 36,001, with the files
        // that settled by then; the next batch holds the rest.
        assert_eq!(
            letters.first(),
            Some(&(38_001, "f0.pdf, f1.pdf, f2.pdf, f3.pdf".to_owned())),
            "{letters:?}"
        );
        assert_eq!(
            letters.get(1).map(|l| l.1.as_str()),
            Some("f4.pdf, f5.pdf, f6.pdf, f7.pdf"),
            "{letters:?}"
        );
    }

    #[test]
    fn a_reload_opens_no_batch_for_files_already_in_a_message() {
        let mut m = mail_machine(true);
        let mut rule = m.mappings["mail"].clone();
        if let Some(mail) = rule.mail.as_mut() {
            mail.batch = true;
            mail.batch_quiet_ms = 60_000;
        }
        m.handle(
            Time(0),
            Input::Config {
                mappings: vec![rule.clone()],
                policy: Policy::default(),
            },
        );
        drop_file(&mut m, 1_000, "x.pdf", 10);
        assert!(!m.collecting.is_empty(), "the batch is open");
        let out = m.handle(Time(70_000), Input::Tick);
        assert!(draft_asked(&out).is_some(), "{out:?}");
        assert!(m.collecting.is_empty());
        // Its file is in a message (the draft on its way): a reload leaves it there.
        let out = m.handle(
            Time(71_000),
            Input::Config {
                mappings: vec![rule],
                policy: Policy::default(),
            },
        );
        assert!(m.collecting.is_empty(), "{out:?}");
        assert!(
            !out.iter().any(|a| matches!(a, Action::WakeAt(_))),
            "{out:?}"
        );
    }

    #[test]
    fn a_file_in_a_message_keeps_going_to_its_draft_after_its_mapping_stops_mailing() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid,
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let eid = out
            .iter()
            .find_map(|a| match a {
                Action::Post { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("posted");
        // Certainly not attached: it waits to try again.
        m.handle(
            Time(7_100),
            Input::Outcome {
                id: eid.clone(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Unreachable(Failure::new(
                    "ConnectionRefused",
                    "down",
                )))),
            },
        );
        // The mapping now names an item instead of mailing.
        let mut plain = m.mappings["mail"].clone();
        plain.mail = None;
        plain.target.item_id = "other".into();
        m.handle(
            Time(7_200),
            Input::Config {
                mappings: vec![plain],
                policy: Policy::default(),
            },
        );
        let out = m.handle(Time(600_000), Input::Tick);
        assert!(
            out.iter().any(|a| matches!(
                a,
                Action::Post { id, target, .. } if *id == eid && target.item_id == "d1"
            )),
            "{out:?}"
        );
    }

    #[test]
    fn a_draft_left_unsent_lets_its_files_finish_in_the_same_step() {
        let mut m = mail_machine(false);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let eid = out
            .iter()
            .find_map(|a| match a {
                Action::Post { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("posted");
        let out = m.handle(
            Time(7_100),
            Input::Outcome {
                id: eid,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a1".into(),
                }),
            },
        );
        // A draft left for a person is listed first (strays deleted), like one to be sent.
        assert!(
            out.iter().any(|a| matches!(a, Action::ListDraft { .. })),
            "{out:?}"
        );
        let out = m.handle(
            Time(7_200),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec!["a1".into()])),
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::PersistMessage(r) if r.state == MessageState::Drafted)));
        // Its file, done, is finished with now: nothing waits for another input.
        assert!(m.quiescent(), "{}", m.describe());
    }

    #[test]
    fn a_file_in_doubt_settles_its_doubt_even_when_its_message_failed() {
        let (_, mid, failed, message) = a_failed_message();
        // As a restart finds it: the message failed, its file's POST answer was lost.
        let mut doubt = failed.clone();
        doubt.state = State::Uploading;
        doubt.error = None;
        doubt.may_exist = true;
        doubt.effect_at = Some(Time(7_000));
        doubt.message = Some(mid);
        let mut m = mail_machine(true);
        let out = m.handle(
            Time(8_000),
            Input::Start {
                records: vec![doubt.clone()],
                with_url: vec![],
                messages: vec![message],
            },
        );
        let mut out = out;
        out.extend(m.handle(Time(1_000_000), Input::Tick));
        assert!(
            out.iter().any(
                |a| matches!(a, Action::Look { id, target, .. } if *id == doubt.id && target.item_id == "d1")
            ),
            "{out:?}"
        );
        // Its session open (mid-file): it goes on with it, to the end or to its delete.
        let (_, mid, failed, message) = a_failed_message();
        let mut open = failed.clone();
        open.state = State::Uploading;
        open.error = None;
        open.file.size = 5 << 20;
        open.session = Some(SessionMark {
            sent_end: 1 << 20,
            abandoned: false,
        });
        open.message = Some(mid);
        let mut m = mail_machine(true);
        let out = m.handle(
            Time(8_000),
            Input::Start {
                records: vec![open.clone()],
                with_url: vec![open.id.clone()],
                messages: vec![message],
            },
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::AskSession { id, .. } if *id == open.id)),
            "{out:?}"
        );
    }

    #[test]
    fn a_file_waiting_out_a_backoff_is_not_one_waiting_for_retry() {
        let mut plain = mail_machine(true).mappings["mail"].clone();
        plain.mail = None;
        plain.target.item_id = "item".into();
        let mut m = Machine::new(vec![plain], Policy::default());
        let file = Record::pending(
            "p1".into(),
            "mail".into(),
            "/mail/a.pdf".into(),
            "a.pdf".into(),
            stat(3, 10),
            Some("cd".repeat(32)),
            1,
            Time(0),
        );
        m.handle(
            Time(10),
            Input::Start {
                records: vec![file],
                with_url: vec![],
                messages: vec![],
            },
        );
        m.handle(
            Time(20),
            Input::Outcome {
                id: "p1".into(),
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Unreachable(Failure::new(
                    "ConnectionRefused",
                    "down",
                )))),
            },
        );
        // Nothing in flight, no message, but the file will try again by itself: `run --once`
        // waits for it.
        assert!(!m.only_blocked());
    }

    #[test]
    fn messages_and_files_take_their_places_in_one_order() {
        let mut m = mail_machine(true);
        let mut out = drop_file(&mut m, 1_000, "x.pdf", 10);
        out.extend(drop_file(&mut m, 20_000, "y.pdf", 10));
        // Each record and message as first written, in the order written.
        let mut seen: Vec<(String, u64)> = Vec::new();
        for a in &out {
            let (id, seq) = match a {
                Action::Persist(r) => (r.id.clone(), r.seq),
                Action::PersistMessage(r) => (r.id.clone(), r.seq),
                _ => continue,
            };
            if !seen.iter().any(|(i, _)| *i == id) {
                seen.push((id, seq));
            }
        }
        assert_eq!(seen.len(), 4, "two files, two messages: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[0].1 < w[1].1),
            "made in this order: {seen:?}"
        );
    }

    #[test]
    fn a_message_retry_retries_only_its_own_files() {
        let (_, _, failed, message) = a_failed_message();
        // A failed record of another message, and one of none.
        let mut other = failed.clone();
        other.id = "zz".into();
        other.message = Some("mother".into());
        let mut loose = failed.clone();
        loose.id = "yy".into();
        loose.message = None;
        let mut m = mail_machine(true);
        let out = m.handle(
            Time(9_000),
            Input::RetryMessage {
                message,
                records: vec![failed.clone(), other, loose],
            },
        );
        let retried: Vec<&str> = out
            .iter()
            .filter_map(|a| match a {
                Action::Persist(r) => Some(r.id.as_str()),
                _ => None,
            })
            .collect();
        assert!(retried.contains(&failed.id.as_str()), "{out:?}");
        assert!(
            retried.iter().all(|id| *id == failed.id),
            "only its own file: {out:?}"
        );
    }

    #[test]
    fn a_file_retried_alone_leaves_its_message_as_it_is_unless_the_message_failed() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let eid = persisted_file(&out).id.clone();
        // The draft's answer was lost: the message counts the attempt and waits.
        m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Failed(Fault::Ambiguous(
                    Failure::new("ConnectionDropped", "lost"),
                ))),
            },
        );
        let attempts = |m: &Machine| m.messages().next().map(|r| r.attempts);
        assert_eq!(attempts(&m), Some(1));
        // The user cancels the file, then retries it.
        let out = m.handle(Time(7_100), Input::Cancel { id: eid.clone() });
        let canceled = persisted_file(&out).clone();
        assert_eq!(canceled.state, State::Canceled);
        let out = m.handle(
            Time(7_200),
            Input::Retry {
                records: vec![canceled],
            },
        );
        assert!(
            !out.iter().any(|a| matches!(a, Action::PersistMessage(_))),
            "{out:?}"
        );
        assert_eq!(attempts(&m), Some(1));
    }

    fn persisted_file(out: &[Action]) -> &Record {
        out.iter()
            .rev()
            .find_map(|a| match a {
                Action::Persist(r) => Some(r),
                _ => None,
            })
            .expect("a record persisted")
    }

    #[test]
    fn a_message_over_leaves_memory_one_failed_stays_for_retry() {
        let (m, mid, _, _) = a_failed_message();
        assert_eq!(
            m.messages().map(|r| r.id.clone()).collect::<Vec<_>>(),
            vec![mid]
        );
        // Drafted (send = false) and its file finished: nothing of it is kept.
        let mut m = mail_machine(false);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let eid = persisted_file(&out).id.clone();
        m.handle(
            Time(7_100),
            Input::Outcome {
                id: eid,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a1".into(),
                }),
            },
        );
        m.handle(
            Time(7_200),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec!["a1".into()])),
            },
        );
        assert_eq!(m.messages().count(), 0);
        assert!(m.member_of.is_empty(), "{:?}", m.member_of);
        // Kept while a file of it is still at work (its move runs once the draft is done).
        let mut m = mail_machine(false);
        let mut rule = m.mappings["mail"].clone();
        rule.after = After::Move;
        m.handle(
            Time(0),
            Input::Config {
                mappings: vec![rule],
                policy: Policy::default(),
            },
        );
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let eid = persisted_file(&out).id.clone();
        m.handle(
            Time(7_100),
            Input::Outcome {
                id: eid.clone(),
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a1".into(),
                }),
            },
        );
        let out = m.handle(
            Time(7_150),
            Input::Outcome {
                id: mid,
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec!["a1".into()])),
            },
        );
        assert!(
            out.iter().any(|a| matches!(a, Action::After { .. })),
            "{out:?}"
        );
        assert_eq!(m.messages().count(), 1);
        m.handle(
            Time(7_200),
            Input::Outcome {
                id: eid,
                outcome: Outcome::After(AfterOutcome::Done),
            },
        );
        assert_eq!(m.messages().count(), 0);
    }

    #[test]
    fn a_message_told_to_retry_after_0_asks_again_at_once() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid,
                outcome: Outcome::CreateDraft(DraftOutcome::Failed(Fault::Throttled {
                    retry_after_ms: Some(0),
                })),
            },
        );
        assert!(draft_asked(&out).is_some(), "{out:?}");
    }

    /// A mail machine whose one message has its draft, its 5 MiB file's session made: the
    /// machine, the file's id and the actions of the session's creation.
    fn mail_session() -> (Machine, String, Vec<Action>) {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 5 << 20);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid,
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::CreateSession { .. })));
        let eid = persisted_file(&out).id.clone();
        let out = m.handle(
            Time(7_100),
            Input::Outcome {
                id: eid.clone(),
                outcome: Outcome::CreateSession(SessionOutcome::Created { next: 0 }),
            },
        );
        (m, eid, out)
    }

    fn message_states(out: &[Action]) -> Vec<MessageState> {
        out.iter()
            .filter_map(|a| match a {
                Action::PersistMessage(r) => Some(r.state),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_message_waits_for_a_file_still_cleaning_up_before_it_drops_or_fails_it() {
        // The file changed while sent: canceled, its session being deleted, its new version
        // on its way; the message does not give up on it meanwhile.
        let (mut m, eid, out) = mail_session();
        assert!(out.iter().any(|a| matches!(a, Action::PutChunk { .. })));
        let out = m.handle(
            Time(7_200),
            Input::Outcome {
                id: eid.clone(),
                outcome: Outcome::Chunk(ChunkOutcome::Changed),
            },
        );
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::DeleteSession { .. })));
        assert!(message_states(&out).is_empty(), "{out:?}");
        // The server misbehaves three times: the file fails, then its session is deleted;
        // the message fails once that is done.
        let (mut m, eid, mut out) = mail_session();
        for k in 0..3u64 {
            if k > 0 {
                out = m.handle(
                    Time(7_200 + k),
                    Input::Outcome {
                        id: eid.clone(),
                        outcome: Outcome::CreateSession(SessionOutcome::Created { next: 5 }),
                    },
                );
            } else {
                out = m.handle(
                    Time(7_200),
                    Input::Outcome {
                        id: eid.clone(),
                        outcome: Outcome::Chunk(ChunkOutcome::Accepted {
                            next: Some(1 << 40),
                        }),
                    },
                );
            }
            assert!(out
                .iter()
                .any(|a| matches!(a, Action::DeleteSession { .. })));
            if k < 2 {
                m.handle(
                    Time(7_300 + k),
                    Input::Outcome {
                        id: eid.clone(),
                        outcome: Outcome::DeleteSession(DeleteOutcome::Deleted),
                    },
                );
            }
        }
        assert_eq!(persisted_file(&out).state, State::Failed);
        assert!(message_states(&out).is_empty(), "{out:?}");
        let out = m.handle(
            Time(7_400),
            Input::Outcome {
                id: eid,
                outcome: Outcome::DeleteSession(DeleteOutcome::Deleted),
            },
        );
        assert_eq!(message_states(&out), vec![MessageState::Failed]);
    }

    #[test]
    fn a_message_is_not_listed_for_sending_while_an_older_copy_is_deleted_from_its_draft() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid,
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: "d1".into(),
                    internet_message_id: None,
                }),
            },
        );
        let v1 = persisted_file(&out).id.clone();
        // The file changes while its POST is in flight: the new version takes its place.
        let path = PathBuf::from("/mail/x.pdf");
        let changed = stat(7, 11);
        m.handle(
            Time(8_000),
            Input::Observed {
                mapping: "mail".into(),
                path: path.clone(),
                stat: changed,
            },
        );
        m.handle(Time(13_000), Input::Tick);
        m.handle(
            Time(13_000),
            Input::Stat {
                path: path.clone(),
                stat: Some(changed),
            },
        );
        m.handle(
            Time(13_001),
            Input::Hashed {
                path,
                result: HashResult::Hashed {
                    sha256: "cd".repeat(32),
                    stat: changed,
                },
            },
        );
        // v1's POST landed after all: it is on the draft, as a1.
        let out = m.handle(
            Time(13_100),
            Input::Outcome {
                id: v1,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a1".into(),
                }),
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
            Time(13_200),
            Input::Outcome {
                id: v2.clone(),
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a2".into(),
                }),
            },
        );
        assert!(out.iter().any(
            |a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if attachment_id == "a1")
        ));
        assert!(
            !out.iter().any(|a| matches!(a, Action::ListDraft { .. })),
            "{out:?}"
        );
        let out = m.handle(
            Time(13_300),
            Input::Outcome {
                id: v2,
                outcome: Outcome::DeleteAttachment(DeleteOutcome::Deleted),
            },
        );
        assert!(
            out.iter().any(|a| matches!(a, Action::ListDraft { .. })),
            "{out:?}"
        );
    }

    /// A batch message of x.pdf and y.pdf whose draft is asked for: (machine, message id,
    /// the two files' ids).
    fn batch_of_two() -> (Machine, String, String, String) {
        let mut m = mail_machine(true);
        let mut rule = m.mappings["mail"].clone();
        if let Some(mail) = rule.mail.as_mut() {
            mail.batch = true;
            mail.batch_quiet_ms = 10_000;
            mail.subject = "batch".into();
        }
        m.handle(
            Time(0),
            Input::Config {
                mappings: vec![rule],
                policy: Policy::default(),
            },
        );
        let x = persisted_file(&drop_file(&mut m, 1_000, "x.pdf", 10))
            .id
            .clone();
        let y = persisted_file(&drop_file(&mut m, 7_000, "y.pdf", 10))
            .id
            .clone();
        let out = m.handle(Time(30_000), Input::Tick);
        let mid = out
            .iter()
            .find_map(|a| match a {
                Action::CreateDraft { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("one draft for both");
        (m, mid, x, y)
    }

    fn draft_made(mid: &str) -> Input {
        Input::Outcome {
            id: mid.into(),
            outcome: Outcome::CreateDraft(DraftOutcome::Created {
                draft_id: "d1".into(),
                internet_message_id: None,
            }),
        }
    }

    #[test]
    fn a_file_failed_or_dropped_changes_its_message_at_once_not_when_the_others_are_done() {
        // x fails at Graph while y is still on its way: the message fails now.
        let (mut m, mid, x, _) = batch_of_two();
        let out = m.handle(Time(31_000), draft_made(&mid));
        assert_eq!(
            out.iter()
                .filter(|a| matches!(a, Action::Post { .. }))
                .count(),
            2
        );
        let out = m.handle(
            Time(31_100),
            Input::Outcome {
                id: x,
                outcome: Outcome::Post(PostOutcome::Failed(Fault::Permanent(Failure::new(
                    "ErrorAccessDenied",
                    "no",
                )))),
            },
        );
        assert!(
            message_states(&out).contains(&MessageState::Failed),
            "{out:?}"
        );
        // x canceled before the draft was made: it leaves the message as soon as there is one.
        let (mut m, mid, x, y) = batch_of_two();
        m.handle(Time(30_500), Input::Cancel { id: x });
        let out = m.handle(Time(31_000), draft_made(&mid));
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::PersistMessage(r) if r.files == vec![y.clone()])),
            "{out:?}"
        );
        // ...and the message waits for y, not sent short of it.
        assert!(
            !message_states(&out).contains(&MessageState::Sending),
            "{out:?}"
        );
        assert!(!out.iter().any(|a| matches!(a, Action::ListDraft { .. })));
    }

    #[test]
    fn a_message_all_of_whose_files_were_canceled_fails_and_is_counted() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let eid = persisted_file(&out).id.clone();
        m.handle(Time(6_500), Input::Cancel { id: eid });
        assert_eq!(m.failed_this_run, 0);
        let out = m.handle(Time(7_000), draft_made(&mid));
        let failed = out.iter().find_map(|a| match a {
            Action::PersistMessage(r) if r.state == MessageState::Failed => r.error.clone(),
            _ => None,
        });
        assert_eq!(failed.map(|e| e.code), Some(NO_FILES_LEFT.to_string()));
        assert_eq!(m.failed_this_run, 1);
    }

    /// Drops `name` at `t` and takes its message up to its send: the actions answered to
    /// the listing of its draft (with the SendDraft if the send may go now).
    fn up_to_its_send(m: &mut Machine, t: u64, name: &str) -> Vec<Action> {
        let out = drop_file(m, t, name, 10);
        let mid = out
            .iter()
            .find_map(|a| match a {
                Action::CreateDraft { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("a draft asked for");
        let out = m.handle(
            Time(t + 6_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Created {
                    draft_id: format!("d-{name}"),
                    internet_message_id: None,
                }),
            },
        );
        let eid = persisted_file(&out).id.clone();
        let out = m.handle(
            Time(t + 6_100),
            Input::Outcome {
                id: eid,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: format!("a-{name}"),
                }),
            },
        );
        assert!(
            out.iter().any(|a| matches!(a, Action::ListDraft { .. })),
            "{out:?}"
        );
        m.handle(
            Time(t + 6_200),
            Input::Outcome {
                id: mid,
                outcome: Outcome::ListDraft(ListOutcome::Listed(vec![format!("a-{name}")])),
            },
        )
    }

    fn sent(out: &[Action]) -> bool {
        out.iter().any(|a| matches!(a, Action::SendDraft { .. }))
    }

    fn send_answered(m: &mut Machine, t: u64, mid: &str, f: Fault) -> Vec<Action> {
        m.handle(
            Time(t),
            Input::Outcome {
                id: mid.to_owned(),
                outcome: Outcome::Send(SendOutcome::Failed(f)),
            },
        )
    }

    fn find_asked(out: &[Action]) -> Option<MailFolder> {
        out.iter().find_map(|a| match a {
            Action::FindMessage { folder, .. } => Some(*folder),
            _ => None,
        })
    }

    fn found(
        m: &mut Machine,
        t: u64,
        mid: &str,
        folder: MailFolder,
        f: FindOutcome,
    ) -> Vec<Action> {
        m.handle(
            Time(t),
            Input::Outcome {
                id: mid.to_owned(),
                outcome: Outcome::Find(folder, f),
            },
        )
    }

    /// Ticks from `from` to `to` (1 s apart); every action asked on the way.
    fn ticks(m: &mut Machine, from: u64, to: u64) -> Vec<(u64, Action)> {
        let mut all = Vec::new();
        let mut t = from;
        while t <= to {
            for a in m.handle(Time(t), Input::Tick) {
                all.push((t, a));
            }
            t += 1_000;
        }
        all
    }

    /// Sent Items searched at `t + 10`: not there; Drafts at `t + 20`: still a draft. What
    /// the machine does then.
    fn not_in_sent_items_still_a_draft(m: &mut Machine, t: u64, mid: &str) -> Vec<Action> {
        found(m, t + 10, mid, MailFolder::SentItems, FindOutcome::NotFound);
        found(
            m,
            t + 20,
            mid,
            MailFolder::Drafts,
            FindOutcome::Found {
                id: "d-a.pdf".into(),
                is_draft: true,
                internet_message_id: None,
            },
        )
    }

    fn the_send(out: &[Action]) -> String {
        out.iter()
            .find_map(|a| match a {
                Action::SendDraft { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("a send")
    }

    /// A message whose send was answered `fault`, up to its first search: no send and no
    /// search before Exchange's move has surely had time; then Sent Items first.
    fn throttled_to_its_search(fault: &Fault) -> (Machine, String, u64) {
        let mut m = mail_machine(true);
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        let out = send_answered(&mut m, 7_300, &mid, fault.clone());
        assert!(!sent(&out), "{fault:?}: {out:?}");
        let rec = m.messages().find(|r| r.id == mid).expect("message");
        assert!(
            rec.last_send_at.is_some(),
            "{fault:?}: the send may have gone"
        );
        assert!(rec.may_have_been_sent());
        let grace = move_grace_ms(Policy::default().look_after_ms);
        let during = ticks(&mut m, 8_000, 7_200 + grace - 1_000);
        assert!(
            during
                .iter()
                .all(|(_, a)| !matches!(a, Action::SendDraft { .. } | Action::FindMessage { .. })),
            "{fault:?}: {during:?}"
        );
        let after = ticks(&mut m, 7_300 + grace, 7_300 + grace + 20 * 60_000);
        let (t, first) = after
            .iter()
            .find(|(_, a)| matches!(a, Action::FindMessage { .. }))
            .expect("a search");
        assert!(
            matches!(
                first,
                Action::FindMessage {
                    folder: MailFolder::SentItems,
                    ..
                }
            ),
            "{first:?}"
        );
        assert!(!after
            .iter()
            .any(|(_, a)| matches!(a, Action::SendDraft { .. })));
        (m, mid, *t)
    }

    fn throttles() -> [Fault; 3] {
        [
            Fault::Throttled {
                retry_after_ms: Some(2_000),
            },
            Fault::Throttled {
                retry_after_ms: None,
            },
            Fault::Permanent(Failure::new(SEND_LIMIT, "sending limit")),
        ]
    }

    #[test]
    fn a_throttled_send_found_in_sent_items_is_sent_and_never_sent_again() {
        for fault in throttles() {
            let (mut m, mid, t) = throttled_to_its_search(&fault);
            let out = found(
                &mut m,
                t + 10,
                &mid,
                MailFolder::SentItems,
                FindOutcome::Found {
                    id: "s1".into(),
                    is_draft: false,
                    internet_message_id: None,
                },
            );
            assert!(!sent(&out));
            assert!(out.iter().any(|a| matches!(
                a,
                Action::PersistMessage(r) if r.id == mid && r.state == MessageState::Sent
            )));
        }
    }

    #[test]
    fn a_throttled_send_not_in_sent_items_and_still_a_draft_is_sent_again_once() {
        for fault in throttles() {
            let (mut m, mid, t) = throttled_to_its_search(&fault);
            let out = found(
                &mut m,
                t + 10,
                &mid,
                MailFolder::SentItems,
                FindOutcome::NotFound,
            );
            assert_eq!(find_asked(&out), Some(MailFolder::Drafts), "{out:?}");
            let out = found(
                &mut m,
                t + 20,
                &mid,
                MailFolder::Drafts,
                FindOutcome::Found {
                    id: "d-a.pdf".into(),
                    is_draft: true,
                    internet_message_id: None,
                },
            );
            assert!(sent(&out), "{fault:?}: {out:?}");
        }
    }

    #[test]
    fn a_throttled_send_whose_draft_left_drafts_is_unconfirmed_not_sent_again() {
        let mut m = mail_machine(true);
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        send_answered(
            &mut m,
            7_300,
            &mid,
            Fault::Throttled {
                retry_after_ms: Some(1_000),
            },
        );
        let grace = move_grace_ms(Policy::default().look_after_ms);
        let t = 7_300 + grace + 1_000;
        m.handle(Time(t), Input::Tick);
        found(
            &mut m,
            t + 10,
            &mid,
            MailFolder::SentItems,
            FindOutcome::NotFound,
        );
        let out = found(
            &mut m,
            t + 20,
            &mid,
            MailFolder::Drafts,
            FindOutcome::NotFound,
        );
        assert!(!sent(&out));
        assert!(out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.id == mid && r.state == MessageState::Unconfirmed
        )));
    }

    #[test]
    fn sending_limit_refusals_without_a_wait_back_off_to_fifteen_minutes() {
        assert!(send_limit_backoff_ms("m", 1) >= 15_000);
        assert!(send_limit_backoff_ms("m", 1) <= 30_000);
        assert!(send_limit_backoff_ms("m", 3) >= 60_000);
        for n in [6, 10, 40] {
            let w = send_limit_backoff_ms("m", n);
            assert!((7 * 60_000..=15 * 60_000).contains(&w), "{n}: {w}");
        }
        let mut m = mail_machine(true);
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        let out = send_answered(
            &mut m,
            7_300,
            &mid,
            Fault::Permanent(Failure::new(SEND_LIMIT, "limit")),
        );
        assert!(!sent(&out));
        let rec = m.messages().find(|r| r.id == mid).expect("message");
        assert_eq!(rec.state, MessageState::Sending, "{rec:?}");
        assert_eq!(rec.attempts, 1);
    }

    #[test]
    fn a_refused_resend_after_a_send_in_doubt_keeps_it_may_have_been_sent() {
        let mut m = mail_machine(true);
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        send_answered(
            &mut m,
            7_300,
            &mid,
            Fault::Throttled {
                retry_after_ms: Some(1_000),
            },
        );
        let first = m
            .messages()
            .find(|r| r.id == mid)
            .and_then(|r| r.last_send_at);
        let grace = move_grace_ms(Policy::default().look_after_ms);
        let t = 7_300 + grace + 1_000;
        m.handle(Time(t), Input::Tick);
        let out = not_in_sent_items_still_a_draft(&mut m, t, &mid);
        assert!(sent(&out));
        // The first send finished moving the draft meanwhile: the re-send is refused 404.
        let out = send_answered(
            &mut m,
            t + 30,
            &mid,
            Fault::Permanent(Failure::new("ErrorItemNotFound", "not found")),
        );
        let rec = out
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::PersistMessage(r) if r.id == mid => Some(r.clone()),
                _ => None,
            })
            .expect("persisted");
        assert_eq!(rec.state, MessageState::Unconfirmed, "{rec:?}");
        assert_eq!(rec.last_send_at, first, "the first send's doubt is kept");
        // And `retry` never drafts it again.
        let mut r = rec.clone();
        r.retried();
        assert!(!r.redraft && r.resend_if_draft, "{r:?}");
    }

    #[test]
    fn a_send_refused_before_any_effect_fails_and_frees_its_own_pacing_slot() {
        let mut m = mail_machine(true);
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        let out = send_answered(
            &mut m,
            7_300,
            &mid,
            Fault::Permanent(Failure::new("ErrorInvalidRecipients", "no recipients")),
        );
        let rec = out
            .iter()
            .find_map(|a| match a {
                Action::PersistMessage(r) if r.id == mid && r.state == MessageState::Failed => {
                    Some(r.clone())
                }
                _ => None,
            })
            .expect("failed");
        assert_eq!(rec.last_send_at, None);
        assert!(!rec.may_have_been_sent());
        assert!(m.sent_times.get("me").is_none_or(|q| q.is_empty()));
    }

    fn moving_mail_machine() -> Machine {
        let m = mail_machine(true);
        let mut rules: Vec<MappingRule> = m.mappings.values().cloned().collect();
        for r in &mut rules {
            r.after = After::Move;
        }
        Machine::new(rules, Policy::default())
    }

    #[test]
    fn a_mailed_file_is_moved_only_once_its_sent_copy_is_seen() {
        let mut m = moving_mail_machine();
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        let out = m.handle(
            Time(7_300),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Send(SendOutcome::Sent),
            },
        );
        let after = |out: &[Action]| out.iter().any(|a| matches!(a, Action::After { .. }));
        assert!(!after(&out), "moved on a 202 alone: {out:?}");
        let rec = m.messages().find(|r| r.id == mid).expect("kept");
        assert!(rec.unseen && rec.state == MessageState::Sent, "{rec:?}");
        assert!(!m.quiescent(), "a copy still to see is work");
        // Looked for after look_after; not there yet: again; there: moved.
        let t = 7_300 + Policy::default().look_after_ms;
        let out = m.handle(Time(t), Input::Tick);
        assert_eq!(find_asked(&out), Some(MailFolder::SentItems), "{out:?}");
        let out = found(
            &mut m,
            t + 10,
            &mid,
            MailFolder::SentItems,
            FindOutcome::NotFound,
        );
        assert!(!after(&out));
        let t2 = t + 10 + Policy::default().look_after_ms;
        let out = m.handle(Time(t2), Input::Tick);
        assert_eq!(find_asked(&out), Some(MailFolder::SentItems), "{out:?}");
        let out = found(
            &mut m,
            t2 + 10,
            &mid,
            MailFolder::SentItems,
            FindOutcome::Found {
                id: "s1".into(),
                is_draft: false,
                internet_message_id: None,
            },
        );
        let mut all = out.clone();
        all.extend(m.handle(Time(t2 + 20), Input::Tick));
        assert!(after(&all), "{all:?}");
    }

    #[test]
    fn a_mailed_file_whose_copy_never_shows_is_kept_and_its_message_unconfirmed() {
        let mut m = moving_mail_machine();
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        m.handle(
            Time(7_300),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Send(SendOutcome::Sent),
            },
        );
        let mut t = 7_300;
        let mut last = Vec::new();
        for _ in 0..SENT_COPY_TRIES {
            t += Policy::default().look_after_ms + 1;
            let out = m.handle(Time(t), Input::Tick);
            assert_eq!(find_asked(&out), Some(MailFolder::SentItems), "{out:?}");
            last = found(
                &mut m,
                t + 1,
                &mid,
                MailFolder::SentItems,
                FindOutcome::NotFound,
            );
            assert!(!last.iter().any(|a| matches!(a, Action::After { .. })));
        }
        assert!(
            last.iter().any(|a| matches!(
                a,
                Action::PersistMessage(r) if r.state == MessageState::Unconfirmed
                    && r.may_have_been_sent()
            )),
            "{last:?}"
        );
    }

    /// A send in doubt whose Sent Items answers keep showing a draft: asked again after
    /// `look_after` each time, and after SENT_COPY_TRIES such answers it is unconfirmed (as not
    /// found), never sent again and never asked for ever.
    #[test]
    fn sent_items_answers_still_a_draft_end_unconfirmed_after_sent_copy_tries() {
        let mut m = mail_machine(true);
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        let ambiguous = Fault::Ambiguous(Failure::new("ConnectionDropped", "lost"));
        send_answered(&mut m, 7_300, &mid, ambiguous);
        let mut t = 7_300;
        let mut answers = 0;
        loop {
            t += Policy::default().look_after_ms;
            let out = m.handle(Time(t), Input::Tick);
            assert_eq!(
                find_asked(&out),
                Some(MailFolder::SentItems),
                "after {answers}: {out:?}"
            );
            let still_a_draft = FindOutcome::Found {
                id: "d-a.pdf".into(),
                is_draft: true,
                internet_message_id: None,
            };
            t += 1;
            let out = found(&mut m, t, &mid, MailFolder::SentItems, still_a_draft);
            answers += 1;
            assert!(!sent(&out), "{out:?}");
            if out.iter().any(
                |a| matches!(a, Action::PersistMessage(r) if r.state == MessageState::Unconfirmed),
            ) {
                break;
            }
            assert!(answers < SENT_COPY_TRIES, "still asking after {answers}");
        }
        assert!(answers > 1, "unconfirmed at the first answer");
    }

    /// With `max_attempts` (as `mail` and `run --once` have), a 429 on a send is one attempt:
    /// the message waits and is asked again, not left unconfirmed at once. With `after =
    /// "keep"` a 202 is final: nothing waits for the Sent Items copy.
    #[test]
    fn a_throttled_send_under_max_attempts_waits_and_a_kept_files_send_is_final() {
        let rules: Vec<MappingRule> = mail_machine(true).mappings.values().cloned().collect();
        let policy = Policy {
            max_attempts: 8,
            ..Policy::default()
        };
        let unconfirmed = |out: &[Action]| {
            out.iter().any(
                |a| matches!(a, Action::PersistMessage(r) if r.state == MessageState::Unconfirmed),
            )
        };
        let mut m = Machine::new(rules.clone(), policy.clone());
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        let out = send_answered(
            &mut m,
            7_300,
            &mid,
            Fault::Throttled {
                retry_after_ms: Some(5_000),
            },
        );
        assert!(!unconfirmed(&out), "{out:?}");
        let mut m = Machine::new(rules, policy);
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        let out = m.handle(
            Time(7_300),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Send(SendOutcome::Sent),
            },
        );
        let rec = out
            .iter()
            .find_map(|a| match a {
                Action::PersistMessage(r) if r.id == mid => Some(r),
                _ => None,
            })
            .expect("message persisted");
        assert_eq!(rec.state, MessageState::Sent);
        assert!(!rec.unseen, "{rec:?}");
    }

    #[test]
    fn a_sent_items_answer_still_a_draft_is_asked_again_later_not_at_once() {
        let mut m = mail_machine(true);
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        m.handle(
            Time(7_300),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Send(SendOutcome::Failed(Fault::Ambiguous(Failure::new(
                    "ConnectionDropped",
                    "lost",
                )))),
            },
        );
        let t = 7_300 + Policy::default().look_after_ms;
        let out = m.handle(Time(t), Input::Tick);
        assert_eq!(find_asked(&out), Some(MailFolder::SentItems));
        let out = found(
            &mut m,
            t + 1,
            &mid,
            MailFolder::SentItems,
            FindOutcome::Found {
                id: "d-a.pdf".into(),
                is_draft: true,
                internet_message_id: None,
            },
        );
        assert_eq!(find_asked(&out), None, "asked again at once: {out:?}");
        assert!(!sent(&out));
    }

    #[test]
    fn a_mapping_makes_at_most_max_messages_per_window_the_rest_wait() {
        let m0 = mail_machine(true);
        let mut rules: Vec<MappingRule> = m0.mappings.values().cloned().collect();
        for r in &mut rules {
            if let Some(mail) = r.mail.as_mut() {
                mail.max_messages = 2;
                mail.max_messages_window_ms = 3_600_000;
            }
        }
        let mut m = Machine::new(rules, Policy::default());
        let mut drafts = 0;
        let mut capped = Vec::new();
        for (i, name) in ["a.pdf", "b.pdf", "c.pdf"].into_iter().enumerate() {
            let out = drop_file(&mut m, 1_000 + i as u64 * 10_000, name, 10);
            drafts += out
                .iter()
                .filter(|a| matches!(a, Action::CreateDraft { .. }))
                .count();
            capped.extend(out.into_iter().filter_map(|a| match a {
                Action::Notify(Note::MessagesCapped { until, waiting, .. }) => {
                    Some((until, waiting))
                }
                _ => None,
            }));
        }
        assert_eq!(drafts, 2, "two messages, the third file waits");
        assert_eq!(capped.len(), 1, "{capped:?}");
        let (until, waiting) = capped[0];
        assert_eq!(waiting, 1);
        assert_eq!(m.capped_until("mail"), Some(until));
        // Nothing is made before the window frees; then the third file's message is.
        let early = m.handle(Time(until.0 - 1), Input::Tick);
        assert!(!early
            .iter()
            .any(|a| matches!(a, Action::CreateDraft { .. })));
        let later = m.handle(until, Input::Tick);
        assert!(
            later
                .iter()
                .any(|a| matches!(a, Action::CreateDraft { .. })),
            "{later:?}"
        );
        assert_eq!(m.capped_until("mail"), None);
    }

    /// A cap whose waiting file was canceled ends at `until` all the same (nothing is made to
    /// clear it): `status` and `run --once` no longer see the mapping capped from then.
    #[test]
    fn a_cap_with_nothing_left_waiting_ends_when_its_window_frees() {
        let m0 = mail_machine(true);
        let mut rules: Vec<MappingRule> = m0.mappings.values().cloned().collect();
        for r in &mut rules {
            if let Some(mail) = r.mail.as_mut() {
                mail.max_messages = 1;
                mail.max_messages_window_ms = 3_600_000;
            }
        }
        let mut m = Machine::new(rules, Policy::default());
        drop_file(&mut m, 1_000, "a.pdf", 10);
        let out = drop_file(&mut m, 11_000, "b.pdf", 10);
        let waiting = persisted_file(&out).id.clone();
        let until = m.capped_until("mail").expect("capped");
        m.handle(Time(12_000), Input::Cancel { id: waiting });
        assert_eq!(m.capped_until("mail"), Some(until));
        let out = m.handle(until, Input::Tick);
        assert!(
            !out.iter().any(|a| matches!(a, Action::CreateDraft { .. })),
            "{out:?}"
        );
        assert_eq!(m.capped_until("mail"), None);
    }

    /// Review finding 1: a message Graph accepted (202) whose Sent Items search is refused
    /// must never end `failed` (which `retry` would send again): it is unconfirmed.
    #[test]
    fn an_accepted_message_whose_copy_search_is_refused_is_unconfirmed_and_never_sent_again() {
        let mut m = moving_mail_machine();
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        m.handle(
            Time(7_300),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Send(SendOutcome::Sent),
            },
        );
        let t = 7_300 + Policy::default().look_after_ms;
        let out = m.handle(Time(t), Input::Tick);
        assert_eq!(find_asked(&out), Some(MailFolder::SentItems), "{out:?}");
        found(
            &mut m,
            t + 10,
            &mid,
            MailFolder::SentItems,
            FindOutcome::Failed(Fault::Permanent(Failure::new(
                "ErrorAccessDenied",
                "denied",
            ))),
        );
        let rec = m.messages().find(|r| r.id == mid).cloned().expect("kept");
        assert_eq!(rec.state, MessageState::Unconfirmed, "{rec:?}");
        assert!(!rec.at_work(), "nothing left to do: {rec:?}");
        let mut out = m.handle(
            Time(t + 20),
            Input::RetryMessage {
                message: rec,
                records: Vec::new(),
            },
        );
        out.extend(m.handle(Time(t + 30), Input::Tick));
        if out.iter().any(|a| matches!(a, Action::ListDraft { .. })) {
            out = m.handle(
                Time(t + 40),
                Input::Outcome {
                    id: mid.clone(),
                    outcome: Outcome::ListDraft(ListOutcome::Listed(vec!["a-a.pdf".into()])),
                },
            );
        }
        assert!(!sent(&out), "sent again at once: {out:?}");
    }

    /// Review finding 3: throttled sends in a row are bounded by `max_attempts`.
    #[test]
    fn throttled_sends_in_a_row_are_bounded_by_max_attempts() {
        let rules: Vec<MappingRule> = mail_machine(true).mappings.values().cloned().collect();
        let mut m = Machine::new(
            rules,
            Policy {
                max_attempts: 3,
                ..Policy::default()
            },
        );
        let out = up_to_its_send(&mut m, 1_000, "a.pdf");
        let mid = the_send(&out);
        let grace = move_grace_ms(Policy::default().look_after_ms);
        let (mut t, mut sends) = (7_300, 1);
        for _ in 0..10 {
            send_answered(
                &mut m,
                t,
                &mid,
                Fault::Throttled {
                    retry_after_ms: Some(1_000),
                },
            );
            if m.messages().find(|r| r.id == mid).map(|r| r.state)
                == Some(MessageState::Unconfirmed)
            {
                break;
            }
            t += grace + 1_000;
            let out = m.handle(Time(t), Input::Tick);
            assert_eq!(find_asked(&out), Some(MailFolder::SentItems));
            let out = not_in_sent_items_still_a_draft(&mut m, t, &mid);
            assert!(sent(&out));
            sends += 1;
            t += 30;
        }
        assert!(
            sends <= 3,
            "{sends} sends answered 429 in a row with max_attempts = 3"
        );
    }

    /// Review finding 2: a keyed message found in neither folder may be in Exchange's move
    /// (sent by an earlier run just killed, in the Outbox): the whole mailbox is asked before a
    /// draft is made.
    #[test]
    fn a_keyed_message_in_neither_folder_is_looked_for_in_the_whole_mailbox_first() {
        let rules: Vec<MappingRule> = mail_machine(true).mappings.values().cloned().collect();
        let mut m = Machine::new(rules, Policy::default());
        let mut rec = MessageRecord::drafting(
            "kabc".into(),
            "mail".into(),
            "me".into(),
            Letter {
                to: vec!["a@example.com".into()],
                subject: "s".into(),
                body: "b".into(),
                ..Letter::default()
            },
            vec![],
            true,
            1,
            Time(0),
        );
        rec.keyed = true;
        rec.may_exist = true;
        let out = m.handle(
            Time(0),
            Input::Start {
                records: vec![],
                with_url: vec![],
                messages: vec![rec],
            },
        );
        assert_eq!(find_asked(&out), Some(MailFolder::SentItems));
        let out = found(
            &mut m,
            100,
            "kabc",
            MailFolder::SentItems,
            FindOutcome::NotFound,
        );
        assert_eq!(find_asked(&out), Some(MailFolder::Drafts));
        let mut out = found(
            &mut m,
            200,
            "kabc",
            MailFolder::Drafts,
            FindOutcome::NotFound,
        );
        out.extend(m.handle(Time(1_000), Input::Tick));
        assert!(
            !out.iter().any(|a| matches!(a, Action::CreateDraft { .. })),
            "{out:?}"
        );
        let out: Vec<Action> = out
            .into_iter()
            .filter(|a| matches!(a, Action::FindMessage { .. }))
            .collect();
        // The whole mailbox (the Outbox too) is asked; not there either: a draft.
        assert_eq!(find_asked(&out), Some(MailFolder::Anywhere), "{out:?}");
        let out = found(
            &mut m,
            1_001,
            "kabc",
            MailFolder::Anywhere,
            FindOutcome::NotFound,
        );
        assert!(
            out.iter().any(|a| matches!(a, Action::CreateDraft { .. })),
            "{out:?}"
        );
    }

    /// `mail --key` found its message already sent (an earlier run's): it is that message
    /// whole; its files are not split off into a message of their own (they were in it).
    #[test]
    fn a_keyed_message_found_sent_keeps_its_files() {
        let rules: Vec<MappingRule> = mail_machine(true).mappings.values().cloned().collect();
        let mut m = Machine::new(rules, Policy::default());
        let mut rec = MessageRecord::drafting(
            "kabc".into(),
            "mail".into(),
            "me".into(),
            Letter {
                to: vec!["a@example.com".into()],
                subject: "s".into(),
                body: "b".into(),
                ..Letter::default()
            },
            vec!["e1".into()],
            true,
            1,
            Time(0),
        );
        rec.keyed = true;
        rec.may_exist = true;
        let mut file = Record::pending(
            "e1".into(),
            "mail".into(),
            "/mail/x.pdf".into(),
            "x.pdf".into(),
            stat(7, 10),
            Some("ab".repeat(32)),
            1,
            Time(0),
        );
        file.message = Some("kabc".into());
        let out = m.handle(
            Time(0),
            Input::Start {
                records: vec![file],
                with_url: vec![],
                messages: vec![rec],
            },
        );
        assert_eq!(find_asked(&out), Some(MailFolder::SentItems));
        let out = found(
            &mut m,
            100,
            "kabc",
            MailFolder::SentItems,
            FindOutcome::Found {
                id: "sent1".into(),
                is_draft: false,
                internet_message_id: None,
            },
        );
        let rec = out
            .iter()
            .find_map(|a| match a {
                Action::PersistMessage(r) if r.id == "kabc" => Some(r),
                _ => None,
            })
            .expect("message persisted");
        assert_eq!(rec.state, MessageState::Sent);
        assert_eq!(rec.files, vec!["e1".to_string()], "{rec:?}");
        assert!(
            !out.iter().any(|a| matches!(a, Action::CreateDraft { .. })),
            "{out:?}"
        );
    }

    #[test]
    fn what_a_send_answer_says_about_the_send() {
        let p = |c: &str| Fault::Permanent(Failure::new(c, "m"));
        assert_eq!(
            send_refusal(&p("ErrorInvalidRecipients")),
            SendRefusal::NotSent
        );
        assert_eq!(send_refusal(&p("ErrorItemNotFound")), SendRefusal::NotSent);
        assert_eq!(send_refusal(&p("UnknownError")), SendRefusal::MaybeSent);
        assert_eq!(
            send_refusal(&p(SEND_LIMIT)),
            SendRefusal::Throttled { wait_ms: None }
        );
        assert_eq!(
            send_refusal(&Fault::Throttled {
                retry_after_ms: Some(5)
            }),
            SendRefusal::Throttled { wait_ms: Some(5) }
        );
        assert_eq!(
            send_refusal(&Fault::Ambiguous(Failure::new("x", "y"))),
            SendRefusal::MaybeSent
        );
        assert_eq!(
            send_refusal(&Fault::SignIn(Failure::new("x", "y"))),
            SendRefusal::NotSent
        );
    }

    #[test]
    fn sends_are_paced_per_mailbox_within_the_window_and_only_sends() {
        let mut m = mail_machine(true);
        let mut rule = m.mappings["mail"].clone();
        rule.mail.as_mut().expect("mails").subject = "s".into();
        let paced = Policy {
            sends_per_window: 1,
            send_window_ms: 60_000,
            ..Policy::default()
        };
        m.handle(
            Time(0),
            Input::Config {
                mappings: vec![rule.clone()],
                policy: paced,
            },
        );
        assert!(sent(&up_to_its_send(&mut m, 1_000, "x.pdf")));
        // The second message is drafted and attached at once, but its send waits for the
        // window to pass since the first (at 7,200).
        let out = up_to_its_send(&mut m, 20_000, "y.pdf");
        assert!(!sent(&out), "{out:?}");
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::WakeAt(t) if *t == Time(67_200))));
        // (A tick that comes late still wakes it.)
        assert!(sent(&m.handle(Time(70_000), Input::Tick)));
        // No pacing at all with 0.
        let mut m = mail_machine(true);
        let free = Policy {
            sends_per_window: 0,
            ..Policy::default()
        };
        m.handle(
            Time(0),
            Input::Config {
                mappings: vec![rule],
                policy: free,
            },
        );
        assert!(sent(&up_to_its_send(&mut m, 1_000, "x.pdf")));
        assert!(sent(&up_to_its_send(&mut m, 20_000, "y.pdf")));
    }

    #[test]
    fn a_listing_short_of_a_file_is_asked_again_three_times_then_the_message_fails() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(Time(7_000), draft_made(&mid));
        let eid = persisted_file(&out).id.clone();
        let out = m.handle(
            Time(7_100),
            Input::Outcome {
                id: eid,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "a1".into(),
                }),
            },
        );
        assert!(out.iter().any(|a| matches!(a, Action::ListDraft { .. })));
        let look_after = Policy::default().look_after_ms;
        let mut t = 7_200;
        for k in 1..=4 {
            // The draft shows nothing (a listing that lags behind the attach).
            let out = m.handle(
                Time(t),
                Input::Outcome {
                    id: mid.clone(),
                    outcome: Outcome::ListDraft(ListOutcome::Listed(vec![])),
                },
            );
            assert!(!sent(&out), "never sent short of a file: {out:?}");
            let failed = message_states(&out).contains(&MessageState::Failed);
            assert_eq!(failed, k == 4, "after {k}: {out:?}");
            if k < 4 {
                t += look_after;
                let out = m.handle(Time(t), Input::Tick);
                assert!(
                    out.iter().any(|a| matches!(a, Action::ListDraft { .. })),
                    "asked again: {out:?}"
                );
            }
        }
    }

    #[test]
    fn a_send_in_doubt_is_counted_and_one_not_found_in_sent_items_is_unconfirmed_and_counted() {
        let mut m = mail_machine(true);
        let out = up_to_its_send(&mut m, 1_000, "x.pdf");
        let mid = out
            .iter()
            .find_map(|a| match a {
                Action::SendDraft { id, .. } => Some(id.clone()),
                _ => None,
            })
            .expect("sent");
        m.handle(
            Time(7_300),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Send(SendOutcome::Failed(Fault::Ambiguous(Failure::new(
                    "ConnectionDropped",
                    "lost",
                )))),
            },
        );
        assert_eq!(m.messages().next().map(|r| r.attempts), Some(1));
        assert_eq!(m.failed_this_run, 0);
        let out = m.handle(Time(10_000_000), Input::Tick);
        assert!(out.iter().any(|a| matches!(
            a,
            Action::FindMessage {
                folder: MailFolder::SentItems,
                ..
            }
        )));
        let out = m.handle(
            Time(10_000_001),
            Input::Outcome {
                id: mid,
                outcome: Outcome::Find(MailFolder::SentItems, FindOutcome::NotFound),
            },
        );
        assert_eq!(message_states(&out), vec![MessageState::Unconfirmed]);
        assert_eq!(m.failed_this_run, 1);
    }

    #[test]
    fn a_draft_search_that_finds_nothing_keeps_counting_the_creates_in_doubt() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Failed(Fault::Ambiguous(
                    Failure::new("ConnectionDropped", "lost"),
                ))),
            },
        );
        // A draft in doubt is asked for in Sent Items first (sent by hand, or by a life of this
        // message the ledger does not remember), then in Drafts.
        let out = m.handle(Time(10_000_000), Input::Tick);
        assert!(out.iter().any(|a| matches!(
            a,
            Action::FindMessage {
                folder: MailFolder::SentItems,
                ..
            }
        )));
        let out = m.handle(
            Time(10_000_001),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Find(MailFolder::SentItems, FindOutcome::NotFound),
            },
        );
        assert!(out.iter().any(|a| matches!(
            a,
            Action::FindMessage {
                folder: MailFolder::Drafts,
                ..
            }
        )));
        let out = m.handle(
            Time(10_000_002),
            Input::Outcome {
                id: mid,
                outcome: Outcome::Find(MailFolder::Drafts, FindOutcome::NotFound),
            },
        );
        assert!(draft_asked(&out).is_some(), "created again: {out:?}");
        assert_eq!(m.messages().next().map(|r| r.attempts), Some(1));
    }

    /// A draft in doubt (its create's answer lost) found in Drafts is adopted and its file
    /// attached to it; never taken for a send that may have happened (that is `mail --key`'s
    /// earlier run only): no send time on record, no resend.
    #[test]
    fn a_draft_in_doubt_found_in_drafts_is_adopted_not_taken_for_sent() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Failed(Fault::Ambiguous(
                    Failure::new("ConnectionDropped", "lost"),
                ))),
            },
        );
        m.handle(Time(10_000_000), Input::Tick);
        m.handle(
            Time(10_000_001),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Find(MailFolder::SentItems, FindOutcome::NotFound),
            },
        );
        let out = m.handle(
            Time(10_000_002),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Find(
                    MailFolder::Drafts,
                    FindOutcome::Found {
                        id: "d1".into(),
                        is_draft: true,
                        internet_message_id: None,
                    },
                ),
            },
        );
        let rec = out
            .iter()
            .find_map(|a| match a {
                Action::PersistMessage(r) if r.id == mid => Some(r),
                _ => None,
            })
            .expect("message persisted");
        assert_eq!(rec.draft_id.as_deref(), Some("d1"));
        assert!(
            rec.last_send_at.is_none() && !rec.resend_if_draft && !rec.may_have_been_sent(),
            "{rec:?}"
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Post { target, .. } if target.item_id == "d1")),
            "{out:?}"
        );
    }

    #[test]
    fn a_draft_in_doubt_found_sent_is_sent_and_never_drafted_again() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Failed(Fault::Ambiguous(
                    Failure::new("ConnectionDropped", "lost"),
                ))),
            },
        );
        m.handle(Time(10_000_000), Input::Tick);
        let out = m.handle(
            Time(10_000_001),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Find(
                    MailFolder::SentItems,
                    FindOutcome::Found {
                        id: "sent1".into(),
                        is_draft: false,
                        internet_message_id: Some("<x@y>".into()),
                    },
                ),
            },
        );
        assert!(!sent(&out));
        let rec = out
            .iter()
            .find_map(|a| match a {
                Action::PersistMessage(r) if r.id == mid => Some(r),
                _ => None,
            })
            .expect("message persisted");
        assert_eq!(rec.state, MessageState::Sent);
        // Its file, never on that copy, goes in a message of its own (never this one again).
        assert!(rec.files.is_empty(), "{rec:?}");
        assert_ne!(draft_asked(&out).as_deref(), Some(mid.as_str()), "{out:?}");
    }

    #[test]
    fn a_message_step_unreachable_waits_the_longer_backoff_and_drafts_in_doubt_are_bounded() {
        let mut m = mail_machine(true);
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::CreateDraft(DraftOutcome::Failed(Fault::Unreachable(
                    Failure::new("ConnectionRefused", "down"),
                ))),
            },
        );
        assert!(out.iter().any(
            |a| matches!(a, Action::WakeAt(t) if *t == Time(7_000).plus_ms(backoff_ms(&mid, 2)))
        ));
        // `mail` (max_attempts = 2): the second create in doubt fails the message.
        let mut m = mail_machine(true);
        let rule = m.mappings["mail"].clone();
        m.handle(
            Time(0),
            Input::Config {
                mappings: vec![rule],
                policy: Policy {
                    max_attempts: 2,
                    ..Policy::default()
                },
            },
        );
        let out = drop_file(&mut m, 1_000, "x.pdf", 10);
        let mid = draft_asked(&out).expect("draft");
        let lost = || {
            Outcome::CreateDraft(DraftOutcome::Failed(Fault::Ambiguous(Failure::new(
                "ConnectionDropped",
                "lost",
            ))))
        };
        let out = m.handle(
            Time(7_000),
            Input::Outcome {
                id: mid.clone(),
                outcome: lost(),
            },
        );
        assert!(message_states(&out)
            .iter()
            .all(|s| *s != MessageState::Failed));
        m.handle(Time(10_000_000), Input::Tick);
        let out = m.handle(
            Time(10_000_001),
            Input::Outcome {
                id: mid.clone(),
                outcome: Outcome::Find(MailFolder::Drafts, FindOutcome::NotFound),
            },
        );
        assert!(draft_asked(&out).is_some(), "{out:?}");
        let out = m.handle(
            Time(10_000_002),
            Input::Outcome {
                id: mid,
                outcome: lost(),
            },
        );
        assert!(
            message_states(&out).contains(&MessageState::Failed),
            "{out:?}"
        );
        assert_eq!(m.failed_this_run, 1);
    }

    #[test]
    fn a_stale_timer_of_a_message_does_not_end_a_later_wait() {
        // A message told to wait until 9 s, then (a retry, a second fault) until 60 s: the
        // timer set for 9 s still fires, and must not let it go before 60 s.
        let (mut m, mid, _, _) = a_failed_message();
        m.message_wait_until(&mid, Time(9_000));
        m.message_wait_until(&mid, Time(60_000));
        m.now = Time(9_000);
        m.tick_messages();
        assert_eq!(m.messages[&mid].wait_until, Some(Time(60_000)));
        m.now = Time(60_000);
        m.tick_messages();
        assert_eq!(m.messages[&mid].wait_until, None);
        assert!(m.msg_ready.contains(&mid));
    }
}

#[cfg(test)]
#[path = "key_tests.rs"]
mod key_tests;
