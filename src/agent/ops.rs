//! Ledger operations shared by the running agent (over the socket) and by the CLI when no agent
//! runs: the same rules either way, so the user sees the same result.

use crate::core::model::{MessageRecord, MessageState};
use crate::ledger::{EntryState, Ledger, LedgerEntry, LedgerError};

/// The message `id` names, if it is one that `retry` may take: failed or unconfirmed.
pub fn retryable_message(ledger: &Ledger, id: &str) -> Result<Option<MessageRecord>, LedgerError> {
    let Some(m) = ledger.get_message(id)? else {
        return Ok(None);
    };
    if !matches!(m.state, MessageState::Failed | MessageState::Unconfirmed) {
        return Err(LedgerError::Invalid(format!(
            "message {id} is {}; only failed or unconfirmed messages can be retried",
            m.state.name()
        )));
    }
    Ok(Some(m))
}

/// The entries of a message's files, as stored (whatever their state).
pub fn files_of(ledger: &Ledger, m: &MessageRecord) -> Result<Vec<LedgerEntry>, LedgerError> {
    let mut out = Vec::new();
    for f in &m.files {
        if let Some(e) = ledger.get(f)? {
            out.push(e);
        }
    }
    Ok(out)
}

/// Put entries back in the queue: one by id (a failed, canceled or rejected entry; or a failed
/// or unconfirmed message, with its failed files), or every failed entry and every failed
/// message (never an unconfirmed one: a second send is the worst failure, so that takes its
/// id). Returns the entries now pending and the messages retried (flushed).
pub fn retry(
    ledger: &Ledger,
    id: Option<&str>,
) -> Result<(Vec<LedgerEntry>, Vec<MessageRecord>), LedgerError> {
    let mut messages = Vec::new();
    let targets: Vec<LedgerEntry> = match id {
        Some(id) => match ledger.get(id)? {
            Some(e) => {
                if !matches!(
                    e.state,
                    EntryState::Failed | EntryState::Canceled | EntryState::Rejected
                ) {
                    return Err(LedgerError::Invalid(format!(
                        "entry {id} is {}; only failed, canceled or rejected entries can be retried",
                        e.state
                    )));
                }
                // A file of a message that failed goes again with its message.
                match e
                    .message
                    .as_deref()
                    .map(|m| ledger.get_message(m))
                    .transpose()?
                {
                    Some(Some(m)) if m.state == MessageState::Failed => {
                        messages.push(m);
                        Vec::new()
                    }
                    _ => vec![e],
                }
            }
            None => match retryable_message(ledger, id)? {
                Some(m) => {
                    messages.push(m);
                    Vec::new()
                }
                None => return Err(LedgerError::NotFound { id: id.to_string() }),
            },
        },
        None => {
            for m in ledger.messages() {
                let m = m?;
                if m.state == MessageState::Failed {
                    messages.push(m);
                }
            }
            ledger.by_state(EntryState::Failed)?
        }
    };
    let mut out = Vec::new();
    let mut retried_messages = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for mut m in messages {
        // As the core's `retry` of a message: a failed one goes on from where it stopped, an
        // unconfirmed one sends only if its draft is still a draft.
        match m.state {
            MessageState::Failed => {
                m.state = if m.draft_id.is_some() {
                    MessageState::Attaching
                } else {
                    MessageState::Drafting
                };
            }
            _ => {
                m.state = MessageState::Sending;
                m.resend_if_draft = true;
                m.send_at = None;
            }
        }
        m.error = None;
        m.attempts = 0;
        m.updated_at = crate::ledger::time_of(time::OffsetDateTime::now_utc());
        ledger.put_message(&m)?;
        for e in files_of(ledger, &m)? {
            taken.insert(e.id.clone());
            if matches!(e.state, EntryState::Failed | EntryState::Canceled) {
                out.push(requeue(ledger, &e)?);
            }
        }
        retried_messages.push(m);
    }
    for e in targets {
        if !taken.contains(&e.id) {
            out.push(requeue(ledger, &e)?);
        }
    }
    ledger.flush()?;
    Ok((out, retried_messages))
}

fn requeue(ledger: &Ledger, e: &LedgerEntry) -> Result<LedgerEntry, LedgerError> {
    // As the core's retry: a version that cannot be on an item yet goes to the mapping's item as
    // the config names it now (a fixed item id); one that may be keeps its item, and is looked
    // for there first.
    ledger.set_state(&e.id, EntryState::Pending, |x| {
        x.error = None;
        x.attempts = 0;
        x.restarts = 0;
        x.cancel_requested = false;
        x.bound = x.may_exist || x.session.is_some();
    })
}
