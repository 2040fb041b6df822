//! Ledger operations shared by the running agent (over the socket) and by the CLI when no agent
//! runs: the same rules either way, so the user sees the same result.

use crate::core::model::{MessageRecord, MessageState, Retried};
use crate::ledger::{EntryState, Ledger, LedgerEntry, LedgerError};

/// The message `id` names, if it is one that `retry` may take: failed or unconfirmed.
pub fn retryable_message(ledger: &Ledger, id: &str) -> Result<Option<MessageRecord>, LedgerError> {
    let Some(m) = ledger.get_message(id)? else {
        return Ok(None);
    };
    if let Some(why) = sent_message(ledger, &m, "retry")? {
        return Err(LedgerError::Invalid(why));
    }
    if !matches!(m.state, MessageState::Failed | MessageState::Unconfirmed) {
        return Err(LedgerError::Invalid(format!(
            "message {id} is {}; only failed or unconfirmed messages can be retried",
            m.state.name()
        )));
    }
    if split_again(&m) {
        return Err(LedgerError::Invalid(format!(
            "message {id} was refused by Graph for its size and has been split already: its \
             files went into new messages that fit, so there is nothing to retry (`outbox \
             status` shows each file and its message)"
        )));
    }
    if nothing_left(&m) {
        return Err(LedgerError::Invalid(format!(
            "message {id} had nothing left to send: every file of it was canceled or deleted \
             before it was sent, so there is nothing to retry (its draft, if one was made, is \
             deleted); put a file back in the folder to mail it in a new message"
        )));
    }
    if gave_way(&m) {
        return Err(LedgerError::Invalid(format!(
            "message {id} gave way to another message in the mailbox that carries its files' \
             keys (another agent on the same folder); its files are mailed by that message or \
             a new one, so there is nothing to retry (`outbox status` shows each file)"
        )));
    }
    Ok(Some(m))
}

/// What `retry` or `cancel` (`verb`) answers for message `m` when it was sent (or left as a
/// draft for review): when, its `internetMessageId`, that there is nothing to do, and how to
/// mail its files again on purpose (`retry --resend`, which takes a file's entry id). `None`:
/// it is not over.
pub fn sent_message(
    ledger: &Ledger,
    m: &MessageRecord,
    verb: &str,
) -> Result<Option<String>, LedgerError> {
    let id = &m.id;
    let how = match m.state {
        MessageState::Sent => {
            let when = m
                .sent_at
                .map(crate::ledger::datetime_of)
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .map_or_else(String::new, |t| format!(" at {t}"));
            let imid = m
                .internet_message_id
                .as_deref()
                .map_or_else(String::new, |i| {
                    format!(" (internetMessageId {})", crate::outside::printable(i))
                });
            if m.unseen {
                format!(
                    "message {id} was accepted for sending{when}{imid}, its copy not yet seen in \
                     Sent Items"
                )
            } else {
                format!("message {id} was sent{when}{imid}")
            }
        }
        MessageState::Drafted => format!(
            "message {id} was left as a draft for review (send = false), fully attached: send or delete it in Outlook"
        ),
        _ => return Ok(None),
    };
    let entries = files_of(ledger, m)?;
    // A file no longer at its path (the mapping's `after` took it, or the user did) cannot be
    // resent: `--resend` would refuse it (trial 5, M4). Said as what to do instead.
    if let [e] = entries.as_slice() {
        if !at_its_path(e) {
            return Ok(Some(format!(
                "{how}: nothing to {verb}; its file is no longer at {} as it was mailed (moved, \
                 deleted or changed since: by the mapping's `after`, or by hand): to mail it \
                 again, drop a copy into the folder, a new drop mailed by itself",
                crate::outside::path(&e.path)
            )));
        }
    }
    let files = entries
        .iter()
        .map(|e| {
            let name = e.path.file_name().map(std::path::Path::new);
            format!(
                "{} ({})",
                e.id,
                crate::outside::path(name.unwrap_or(&e.path))
            )
        })
        .collect::<Vec<_>>();
    let again = match files.as_slice() {
        [] => String::new(),
        [one] => format!(
            "; to mail its file again on purpose, in a new message: `outbox retry --resend {}`",
            one.split(' ').next().unwrap_or_default()
        ),
        _ => format!(
            "; to mail a file of it again on purpose, in a new message: `outbox retry --resend \
             ENTRY_ID` (its files: {})",
            files.join(", ")
        ),
    };
    Ok(Some(format!("{how}: nothing to {verb}{again}")))
}

/// As [`sent_message`], for entry `e` when it is a file of such a message (so `retry` of a
/// mailed file does not send the user to `retry` of its message, which has nothing to retry).
pub fn sent_entry(
    ledger: &Ledger,
    e: &LedgerEntry,
    verb: &str,
) -> Result<Option<String>, LedgerError> {
    if e.state != EntryState::Done || e.after_failed {
        return Ok(None);
    }
    let Some(m) = e
        .message
        .as_deref()
        .map(|m| ledger.get_message(m))
        .transpose()?
    else {
        return Ok(None);
    };
    let Some(m) = m.filter(|m| m.files.contains(&e.id)) else {
        return Ok(None);
    };
    Ok(sent_message(ledger, &m, verb)?.map(|why| {
        format!(
            "entry {} is a file of message {}, which {}",
            e.id,
            m.id,
            why.strip_prefix(&format!("message {} ", m.id))
                .unwrap_or(&why)
        )
    }))
}

/// What `cancel ID` answers for an `id` that names no entry: a message's id (`cancel` takes a
/// file's entry id; a sent message has nothing to cancel), or nothing at all.
pub fn cancel_unknown(ledger: &Ledger, id: &str) -> Result<String, LedgerError> {
    let Some(m) = ledger.get_message(id)? else {
        return Ok(format!(
            "no ledger entry with id `{id}` (see `outbox status`)"
        ));
    };
    if let Some(why) = sent_message(ledger, &m, "cancel")? {
        return Ok(why);
    }
    Ok(format!(
        "`{id}` is a message ({}), not a file's entry: `outbox cancel` takes a file's entry id, \
         as listed under it in `outbox status` (its files: {}); a message whose files are all \
         canceled is not sent",
        m.state.name(),
        if m.files.is_empty() {
            "none left".to_owned()
        } else {
            m.files.join(", ")
        }
    ))
}

/// A message that gave way to another agent's message mailing its files (`mailedElsewhere`),
/// or whose files were made into new messages after Graph refused it for its size
/// (`splitAgain`): not a failure to retry; `retry --failed` passes over it.
pub fn gave_way(m: &MessageRecord) -> bool {
    m.error.as_ref().is_some_and(|e| {
        e.code == crate::core::machine::MAILED_ELSEWHERE
            || e.code == crate::core::machine::SPLIT_AGAIN
    })
}

/// A message none of whose files was left to send (each canceled, or deleted before it was
/// attached: the user's decision), never sent: closed, not a failure to retry (`retry` of it
/// would fail again at once, trial 4's M10); its draft, if one was made, is deleted.
pub fn nothing_left(m: &MessageRecord) -> bool {
    m.state == MessageState::Failed
        && !m.may_have_been_sent()
        && m.error
            .as_ref()
            .is_some_and(|e| e.code == crate::core::machine::NO_FILES_LEFT)
}

/// A failed message that is no failure to act on: it gave way, was split again, or had
/// nothing left to send. `retry --failed` and `run --once`'s exit pass over it.
pub fn not_to_retry(m: &MessageRecord) -> bool {
    gave_way(m) || nothing_left(m)
}

/// A message whose files `retry` made into new messages after Graph refused it for its size.
pub fn split_again(m: &MessageRecord) -> bool {
    m.error
        .as_ref()
        .is_some_and(|e| e.code == crate::core::machine::SPLIT_AGAIN)
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

/// Why `retry ID` cannot take entry `e`, if it cannot. A done entry is retried to redo what went
/// wrong: its failed after-action, or (`verify` found its attachment wrong or missing, and
/// marked it so) its attachment, which needs the very file that was sent still at its path; a
/// done entry with neither has nothing to retry.
///
/// A failed, canceled or rejected entry is sent again from its file: one no longer at its path
/// (deleted, or moved to the mapping's `failed_dir`), or changed since, has nothing to send.
pub fn retry_refusal(e: &LedgerEntry) -> Option<String> {
    let id = &e.id;
    match e.state {
        EntryState::Rejected if e.size > crate::core::model::MAX_ATTACHMENT => Some(format!(
            "entry {id} is {} bytes, over Graph's 150 MiB attachment limit; it cannot be sent as it is: split or compress it under 150 MiB and drop the parts in (`outbox cancel {id}` clears this one)",
            e.size
        )),
        EntryState::Failed | EntryState::Canceled | EntryState::Rejected
            if e.failed_to.is_some() =>
        {
            failed_dir_refusal(e)
        }
        EntryState::Failed | EntryState::Canceled | EntryState::Rejected => {
            let path = crate::outside::path(&e.path);
            let state = e.state;
            match std::fs::symlink_metadata(&e.path) {
                Ok(m) if m.is_file() && same_version(e, &e.path, &m) => None,
                Ok(m) if m.is_file() => Some(format!(
                    "entry {id} is {state}, and {path} has changed since: its new version is sent on its own; nothing to retry"
                )),
                _ if state == EntryState::Canceled => Some(format!(
                    "entry {id} is canceled, and its file is no longer at {path}: put it back there, then `outbox retry {id}` sends it"
                )),
                _ => Some(format!(
                    "entry {id} is {state}, and its file is no longer at {path} (deleted, or moved to the mapping's failed_dir): put it back there, then `outbox retry {id}`; or `outbox cancel {id}` to clear the entry"
                )),
            }
        }
        EntryState::Done if e.after_failed => None,
        // Found mailed by its key (a sent copy in the mailbox): its attachment is on a message
        // already sent, which nothing may change; mailing it again is a new drop.
        EntryState::Done
            if e
                .error
                .as_ref()
                .is_some_and(|f| f.code == crate::core::machine::FOUND_MAILED) =>
        {
            Some(format!(
                "entry {id} was mailed before (found in Sent Items by its key); to mail it again on purpose: `outbox retry --resend {id}`"
            ))
        }
        // A file of a message is on that message's draft (or in the mail sent): attaching it
        // again on its own would mail it twice, or send the message without it.
        EntryState::Done if e.message.is_some() => Some(format!(
            "entry {id} is a file of message {m}, already on it; `outbox retry {m}` retries the message if it failed or could not be confirmed; if it was sent, `outbox retry --resend {id}` mails this file again on purpose",
            m = e.message.as_deref().unwrap_or_default()
        )),
        // Its attachment is as it was sent, as far as anyone looked: nothing to attach again.
        EntryState::Done if !e.verify_failed => Some(format!(
            "entry {id} is done and its attachment was not found wrong; nothing to retry. `outbox verify {id}` reads it back from the item: if it is wrong or missing, `outbox retry {id}` then attaches the file again"
        )),
        EntryState::Done => {
            let path = crate::outside::path(&e.path);
            match std::fs::symlink_metadata(&e.path) {
                Ok(m) if m.is_file() && same_version(e, &e.path, &m) => None,
                // Put back by hand (a copy: another inode and times) with the bytes attached.
                Ok(m) if m.is_file() && holds_its_bytes(e, &m) => None,
                Ok(m) if m.is_file() => Some(format!(
                    "entry {id} is done, and {path} holds other bytes than those it attached: that is a new version of the file, attached on its own; nothing to retry"
                )),
                _ => Some(format!(
                    "entry {id} is done, and its file is no longer at {path} (moved or deleted by `after`?): put it back there, then `outbox retry {id}` attaches it again"
                )),
            }
        }
        EntryState::Settling | EntryState::Pending | EntryState::Uploading => Some(format!(
            "entry {id} is {}; only failed, canceled, rejected or done entries can be retried",
            e.state
        )),
    }
}

/// Why `retry` cannot take back entry `e`'s file from `failed_dir` (where the agent moved it:
/// `failed_to`), if it cannot: it is not there as it failed, or something is at its path now.
/// The move itself is the agent's (`Action::FromFailedDir`), through directory descriptors.
fn failed_dir_refusal(e: &LedgerEntry) -> Option<String> {
    let id = &e.id;
    let from = e.failed_to.as_deref()?;
    let (shown, path) = (crate::outside::path(from), crate::outside::path(&e.path));
    match std::fs::symlink_metadata(from) {
        Ok(m) if m.is_file() && same_version(e, from, &m) => {}
        Ok(m) if m.is_file() => {
            return Some(format!(
                "entry {id} is {}, and its file in failed_dir ({shown}) has changed since: put the version to send at {path} (a new drop), or `outbox cancel {id}` to clear the entry",
                e.state
            ))
        }
        // Put back at its path by hand: retried from there.
        _ if at_its_path(e) => return None,
        _ => {
            return Some(format!(
                "entry {id} is {}, and its file is no longer where outbox moved it ({shown}): put it back at {path}, then `outbox retry {id}`; or `outbox cancel {id}` to clear the entry",
                e.state
            ))
        }
    }
    if std::fs::symlink_metadata(&e.path).is_ok() {
        return Some(format!(
            "entry {id} is {}: its file is in failed_dir ({shown}), but another file is at {path} now; move one of them away, then `outbox retry {id}` takes it back",
            e.state
        ));
    }
    None
}

/// Why `retry` cannot take message `m`: a failed file of it cannot be sent again (its file is
/// gone, changed, or cannot be taken back from `failed_dir`; see [`retry_refusal`]). The
/// message is never sent without it: the file is put back, or canceled to send the rest.
pub fn message_refusal(ledger: &Ledger, m: &MessageRecord) -> Result<Option<String>, LedgerError> {
    for e in files_of(ledger, m)? {
        if e.state != EntryState::Failed {
            continue;
        }
        if let Some(why) = retry_refusal(&e) {
            return Ok(Some(format!(
                "message {} is not retried: {why} (`outbox cancel {}` sends the message without it)",
                m.id, e.id
            )));
        }
    }
    Ok(None)
}

/// Why `retry --resend ID` cannot take entry `e`, if it cannot: only a done file of a mailing
/// mapping (`mails`), whose message (if any; `message`) was sent or left as a draft, and whose
/// file is still at its path as it was mailed, is mailed again.
pub fn resend_refusal(
    e: &LedgerEntry,
    mapping: Option<&crate::config::Mapping>,
    message: Option<&MessageRecord>,
) -> Option<String> {
    let id = &e.id;
    let mails = mapping.is_some_and(|m| matches!(m.target, crate::config::Target::NewMessage(_)));
    if !mails {
        return Some(format!(
            "entry {id} is of the mapping `{}`, which does not mail ([mapping.new_message]); --resend mails a file again, `outbox retry {id}` attaches one again",
            crate::outside::printable(&e.mapping)
        ));
    }
    if e.state != EntryState::Done {
        return Some(format!(
            "entry {id} is {}: only a mailed (done) file is mailed again; `outbox retry {id}` sends a failed or canceled one",
            e.state
        ));
    }
    if let Some(m) =
        message.filter(|m| !matches!(m.state, MessageState::Sent | MessageState::Drafted))
    {
        return Some(format!(
            "entry {id} is in message {} ({:?}), not sent yet: it is mailed once that message is; nothing to resend",
            m.id, m.state
        ));
    }
    let path = crate::outside::path(&e.path);
    match std::fs::symlink_metadata(&e.path) {
        Ok(m) if m.is_file() && same_version(e, &e.path, &m) => None,
        Ok(m) if m.is_file() => Some(format!(
            "entry {id}: {path} has changed since it was mailed; its new version is mailed on its own"
        )),
        _ => Some(gone_after_mail(e, mapping)),
    }
}

/// Why `retry --resend` finds no file at entry `e`'s path, said as outbox knows it (trial 4's
/// M12: it guessed "moved or deleted by `after`?" of a file it had moved itself): `after =
/// "move"` put it in `sent_dir` (found there by its name, or `NAME (n).EXT`, as the version
/// mailed), `after = "delete"` deleted it; either way a copy dropped into the folder again is
/// mailed again by itself, no `--resend` needed.
fn gone_after_mail(e: &LedgerEntry, mapping: Option<&crate::config::Mapping>) -> String {
    let (id, path) = (&e.id, crate::outside::path(&e.path));
    let again = "a copy dropped into the folder again is a new drop, mailed again by itself (no \
                 `--resend` needed)";
    match mapping.map(|m| (m.after, m)) {
        Some((crate::config::After::Move, m)) => match moved_to(e, &m.sent_dir) {
            Some(at) => format!(
                "entry {id}: outbox moved its file to {} once it was mailed (`after = \"move\"`), \
                 so it is no longer at {path}; to mail it again, {again}",
                crate::outside::path(&at)
            ),
            None => format!(
                "entry {id}: its file is no longer at {path}, nor as it was mailed in sent_dir \
                 ({}), where `after = \"move\"` put it; to mail it again, {again}",
                crate::outside::path(&m.sent_dir)
            ),
        },
        Some((crate::config::After::Delete, _)) => format!(
            "entry {id}: outbox deleted its file once it was mailed (`after = \"delete\"`), so \
             there is nothing at {path} to mail; to mail it again, {again}"
        ),
        _ => format!(
            "entry {id}: its file is no longer at {path} (moved or deleted since it was mailed); \
             put it back there, then `outbox retry --resend {id}`"
        ),
    }
}

/// Where `after = "move"` put entry `e`'s file in `sent_dir`: its name, or `NAME (n).EXT` when
/// another of that name was there (`files::move_no_clobber`), as the version recorded.
fn moved_to(e: &LedgerEntry, sent_dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let name = e.path.file_name()?;
    let p = std::path::Path::new(name);
    let (stem, ext) = match p.extension() {
        Some(x) if x.len() <= 16 => (p.file_stem().unwrap_or(name), Some(x)),
        _ => (name, None),
    };
    for n in 0..100u32 {
        let candidate = if n == 0 {
            name.to_os_string()
        } else {
            let mut c = stem.to_os_string();
            c.push(format!(" ({n})"));
            if let Some(x) = ext {
                c.push(".");
                c.push(x);
            }
            c
        };
        let at = sent_dir.join(&candidate);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_file() && same_version(e, &at, &m) => return Some(at),
            Ok(_) => {}
            Err(_) if n > 0 => return None,
            Err(_) => {}
        }
    }
    None
}

/// `retry --resend ID` with no agent running: the request is written on the entry (flushed);
/// the agent takes it at its start. See [`resend_refusal`].
pub fn request_resend(
    ledger: &Ledger,
    id: &str,
    mapping: Option<&crate::config::Mapping>,
) -> Result<LedgerEntry, LedgerError> {
    let Some(e) = ledger.get(id)? else {
        return Err(LedgerError::Invalid(resend_unknown(ledger, id)?));
    };
    let message = e
        .message
        .as_deref()
        .map(|m| ledger.get_message(m))
        .transpose()?
        .flatten();
    if let Some(why) = resend_refusal(&e, mapping, message.as_ref()) {
        return Err(LedgerError::Invalid(why));
    }
    let e = ledger.update(id, |x| x.resend = true)?;
    ledger.flush()?;
    Ok(e)
}

/// Why `retry --resend ID` takes no entry `id`: a message's id names the message and its files'
/// entry ids (`--resend` takes one file's); anything else is no entry at all.
pub fn resend_unknown(ledger: &Ledger, id: &str) -> Result<String, LedgerError> {
    let Some(m) = ledger.get_message(id)? else {
        return Ok(format!(
            "no ledger entry with id `{id}`: `--resend` takes a file's entry id, as `outbox \
             status` lists them (the ID column; a message's files are listed under it in \
             MESSAGES)"
        ));
    };
    let mut files = Vec::new();
    for f in &m.files {
        let name = ledger
            .get(f)?
            .map(|e| {
                let name = e.path.file_name().map(std::path::Path::new);
                format!(" ({})", crate::outside::path(name.unwrap_or(&e.path)))
            })
            .unwrap_or_default();
        files.push(format!("{f}{name}"));
    }
    Ok(format!(
        "`{id}` is a message, not a file's entry: `--resend` mails one file again, in a new \
         message, and takes that file's entry id; this message's files: {} (`outbox retry \
         --resend ENTRY_ID` for each to mail again; `outbox retry {id}` retries the message \
         itself if it failed)",
        if files.is_empty() {
            "none left".to_owned()
        } else {
            files.join(", ")
        }
    ))
}

/// Whether the file at `e`'s path (`m` its metadata) holds exactly the bytes `e` attached, read
/// whole: a done entry's file put back by hand after `after` moved or deleted it (a copy, so
/// another inode and times) is the version sent, and `retry` attaches it again from there (the
/// agent, seeing that copy as the known version, records its inode and times on the entry).
fn holds_its_bytes(e: &LedgerEntry, m: &std::fs::Metadata) -> bool {
    use sha2::Digest;
    let Some(want) = e.sha256.as_deref() else {
        return false;
    };
    if m.len() != e.size {
        return false;
    }
    let Ok(f) = std::fs::File::open(&e.path) else {
        return false;
    };
    let mut h = sha2::Sha256::new();
    match std::io::copy(&mut std::io::Read::take(f, e.size + 1), &mut h) {
        Ok(n) if n == e.size => hex::encode(h.finalize()).eq_ignore_ascii_case(want),
        _ => false,
    }
}

/// Whether the version entry `e` recorded is at its path (not a link; [`same_version`]).
fn at_its_path(e: &LedgerEntry) -> bool {
    std::fs::symlink_metadata(&e.path).is_ok_and(|m| m.is_file() && same_version(e, &e.path, &m))
}

/// Whether `m`, a stat of `at` (the entry's path, or where outbox moved its file), is the version
/// of the file `e` recorded: by size, time (where recorded) and
/// (where recorded) device and inode.
fn same_version(e: &LedgerEntry, at: &std::path::Path, m: &std::fs::Metadata) -> bool {
    let recorded = e.to_record().file;
    let Some(now) = crate::watch::file_stat(at, m) else {
        return false;
    };
    now.size == recorded.size
        && (recorded.mtime_ns == 0 || now.mtime_ns == recorded.mtime_ns)
        && ((recorded.dev, recorded.ino) == (0, 0)
            || (now.dev, now.ino) == (recorded.dev, recorded.ino))
}

/// `outbox verify`'s findings, written on the done entries they are about: `wrong` found wrong
/// or missing (`retry` attaches them again), `fine` found good again. Flushed.
pub fn mark_verified(
    ledger: &Ledger,
    wrong: &[String],
    fine: &[String],
) -> Result<(), LedgerError> {
    for (ids, found) in [(wrong, true), (fine, false)] {
        for id in ids {
            if ledger.get(id)?.is_some_and(|e| e.state == EntryState::Done) {
                ledger.update(id, |x| x.verify_failed = found)?;
            }
        }
    }
    ledger.flush()
}

/// Failed entries `retry --failed` leaves, each with the reason.
pub type Left = Vec<(LedgerEntry, String)>;

/// The failed entries `retry --failed` takes, and those it leaves with the reason (their file is
/// gone or changed: see [`retry_refusal`]).
pub fn failed_to_retry(ledger: &Ledger) -> Result<(Vec<LedgerEntry>, Left), LedgerError> {
    failed_refused_by(ledger, &retry_refusal)
}

/// A refusal of `retry`: [`retry_refusal`], or one that also knows the config.
pub type Refusal<'a> = &'a dyn Fn(&LedgerEntry) -> Option<String>;

/// As [`failed_to_retry`], with `refuse` saying which entries are left.
pub fn failed_refused_by(
    ledger: &Ledger,
    refuse: Refusal<'_>,
) -> Result<(Vec<LedgerEntry>, Left), LedgerError> {
    let mut take = Vec::new();
    let mut leave = Vec::new();
    for e in ledger.by_state(EntryState::Failed)? {
        match refuse(&e) {
            None => take.push(e),
            Some(why) => leave.push((e, why)),
        }
    }
    Ok((take, leave))
}

/// Why `cancel` cannot take entry `e`, if it cannot: it is done, or canceled already. A failed
/// or rejected entry is canceled to clear it (`run --once` stops counting it).
pub fn cancel_refusal(e: &LedgerEntry) -> Option<String> {
    let id = &e.id;
    match e.state {
        EntryState::Done => Some(format!("entry {id} is done; nothing to cancel")),
        EntryState::Canceled => Some(format!("entry {id} is already canceled")),
        _ => None,
    }
}

/// Cancel an entry that has ended (failed or rejected): nothing runs for it, so the ledger is
/// all there is to change. Its error says it was cleared, and what it was. Flushed.
pub fn cancel_ended(ledger: &Ledger, e: &LedgerEntry) -> Result<LedgerEntry, LedgerError> {
    let was = e
        .error
        .as_ref()
        .map(|x| format!(" (it had {}: {})", e.state, x.message))
        .unwrap_or_else(|| format!(" (it had {})", e.state));
    let c = ledger.set_state(&e.id, EntryState::Canceled, |x| {
        x.error = Some(crate::ledger::EntryError::new(
            "canceled",
            format!("canceled by `outbox cancel`{was}"),
        ));
    })?;
    ledger.flush()?;
    Ok(c)
}

/// Put entries back in the queue: one by id (see [`retry_refusal`]; or a failed or unconfirmed
/// message, with its failed files), or every failed entry and every failed
/// message (never an unconfirmed one: a second send is the worst failure, so that takes its
/// id), but no failed entry whose file is gone or changed ([`failed_to_retry`]). Returns the entries now pending and the messages retried (flushed).
pub fn retry(
    ledger: &Ledger,
    id: Option<&str>,
) -> Result<(Vec<LedgerEntry>, Vec<MessageRecord>), LedgerError> {
    retry_refused_by(ledger, id, &retry_refusal)
}

/// As [`retry`], with `refuse` saying which entries are not taken.
pub fn retry_refused_by(
    ledger: &Ledger,
    id: Option<&str>,
    refuse: Refusal<'_>,
) -> Result<(Vec<LedgerEntry>, Vec<MessageRecord>), LedgerError> {
    let mut messages = Vec::new();
    let targets: Vec<LedgerEntry> = match id {
        Some(id) => match ledger.get(id)? {
            Some(e) => {
                if let Some(why) = sent_entry(ledger, &e, "retry")?.or_else(|| refuse(&e)) {
                    return Err(LedgerError::Invalid(why));
                }
                // A file of a message that failed goes again with its message.
                match e
                    .message
                    .as_deref()
                    .map(|m| ledger.get_message(m))
                    .transpose()?
                {
                    Some(Some(m)) if m.state == MessageState::Failed => {
                        if let Some(why) = message_refusal(ledger, &m)? {
                            return Err(LedgerError::Invalid(why));
                        }
                        messages.push(m);
                        Vec::new()
                    }
                    _ => vec![e],
                }
            }
            None => match retryable_message(ledger, id)? {
                Some(m) => {
                    if let Some(why) = message_refusal(ledger, &m)? {
                        return Err(LedgerError::Invalid(why));
                    }
                    messages.push(m);
                    Vec::new()
                }
                None => return Err(LedgerError::NotFound { id: id.to_string() }),
            },
        },
        None => {
            for m in ledger.messages() {
                let m = m?;
                // One that gave way is not retried; one whose failed file cannot come back
                // waits (`retry --failed` names the file and why); it is never sent without it.
                if m.state == MessageState::Failed
                    && !not_to_retry(&m)
                    && message_refusal(ledger, &m)?.is_none()
                {
                    messages.push(m);
                }
            }
            failed_refused_by(ledger, refuse)?.0
        }
    };
    let mut out = Vec::new();
    let mut retried_messages = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for mut m in messages {
        let mut again = Vec::new();
        for e in files_of(ledger, &m)? {
            taken.insert(e.id.clone());
            // As the core's retry of a message: a canceled file that is in `failed_dir` was
            // left out on purpose (it leaves the message, whose letter is made again).
            let left_out = e.state == EntryState::Canceled && e.failed_to.is_some();
            // (A done one whose copy went missing from the draft is attached again.)
            let missing = e.state == EntryState::Done && e.verify_failed;
            if (matches!(e.state, EntryState::Failed | EntryState::Canceled) && !left_out)
                || missing
            {
                again.push(e);
            }
        }
        // As the core's `retry` of a message (the one rule for both): an unconfirmed one whose
        // file was taken off its draft attaches it again before it looks and sends (review,
        // session 15: offline it went to `sending`, and a failed re-attach was sent past).
        m.retried_with(!again.is_empty());
        m.updated_at = crate::ledger::time_of(time::OffsetDateTime::now_utc());
        ledger.put_message(&m)?;
        for e in again {
            out.push(requeue(ledger, &e)?);
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

/// `retry` of one entry by the core's rule ([`crate::core::model::Record::retried`], as the
/// agent's machine applies it), written to the ledger; the entry as it now is (unchanged when
/// there is nothing to retry, as the agent answers it).
fn requeue(ledger: &Ledger, e: &LedgerEntry) -> Result<LedgerEntry, LedgerError> {
    let now = crate::ledger::time_of(time::OffsetDateTime::now_utc());
    if e.to_record().retried(now) == Retried::Nothing {
        return Ok(e.clone());
    }
    ledger.update(&e.id, |x| {
        let mut r = x.to_record();
        if r.retried(now) != Retried::Nothing {
            *x = LedgerEntry::from_record(&r, Some(&x.target));
        }
    })
}
