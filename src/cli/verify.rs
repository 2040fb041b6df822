//! `outbox verify [ID | --all]`: read done attachments back from Graph (`$value`, streamed) and
//! compare their SHA-256 with the ledger's. Entries come from the running agent over its socket,
//! or from the ledger when no agent runs; verify changes nothing in the ledger but a mark on the
//! entries it found wrong or missing (and clears it on those found good again), which `retry`
//! needs to attach a done entry again (through the agent when one runs). A mismatch or a
//! missing attachment comes with the command that fixes it: `outbox retry ID` attaches the file
//! again and then deletes the bad copy (by its recorded id), or, when the file is no longer at its
//! path, what to do instead. A version a newer one replaced (`on_change = "replace"`) has no
//! attachment on purpose: it is said to be replaced, by which entry, and is no problem.
//!
//! A file of a sent message is checked in the message's sent copy (Sent Items, found by the
//! message's marker, else by its `internetMessageId`): Exchange gives the sent copy new
//! attachment ids, so the file is found there by its name and confirmed by its bytes. A file of a
//! message left as a draft is checked on the draft by its recorded id; one of a message whose
//! send is not confirmed is not read at all (the advice is to look in Sent Items).

use crate::agent::control::{self, Request};
use crate::agent::item_of;
use crate::cli::exit::{CommandError, ExitCode};
use crate::config::ItemKind;
use crate::config::Settings;
use crate::core::model::{MessageRecord, MessageState};
use crate::graph::RequestError;
use crate::graph::{GraphClient, ItemRef};
use crate::ledger::{EntryState, Ledger, LedgerEntry, LedgerError};
use std::collections::HashMap;

type Known = (Vec<LedgerEntry>, Vec<MessageRecord>);

async fn entries(settings: &Settings) -> Result<Known, CommandError> {
    let dir = &settings.agent.state_dir;
    if let Some(resp) = control::ask(dir, &Request::Status).await {
        if resp.ok {
            return Ok((resp.entries, resp.messages));
        }
    }
    if !dir.exists() {
        return Ok((Vec::new(), Vec::new()));
    }
    match Ledger::open(dir) {
        Ok(l) => Ok((l.list(Some(EntryState::Done))?, l.list_messages()?)),
        Err(LedgerError::InUse { .. }) => Err(CommandError::new(
            ExitCode::Usage,
            format!(
                "an outbox agent is using the ledger in {} and did not answer on its socket; try again in a moment",
                dir.display()
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

pub async fn run(
    settings: Settings,
    id: Option<String>,
    json: bool,
) -> Result<ExitCode, CommandError> {
    let (all, messages) = entries(&settings).await?;
    let messages: HashMap<String, MessageRecord> =
        messages.into_iter().map(|m| (m.id.clone(), m)).collect();
    // Every done version, to name the one that replaced another.
    let done: Vec<LedgerEntry> = all
        .iter()
        .filter(|e| e.state == EntryState::Done)
        .cloned()
        .collect();
    let todo: Vec<LedgerEntry> = match &id {
        Some(id) => {
            let e = all
                .into_iter()
                .find(|e| &e.id == id)
                .ok_or_else(|| CommandError::from(LedgerError::NotFound { id: id.clone() }))?;
            if e.state != EntryState::Done {
                return Err(CommandError::new(
                    ExitCode::Usage,
                    format!(
                        "entry {id} is {}; only done entries have an attachment to verify",
                        e.state
                    ),
                ));
            }
            vec![e]
        }
        None => done.clone(),
    };
    if todo.is_empty() {
        if json {
            jsonln!("[]");
        } else {
            outln!("no done entries to verify");
        }
        return Ok(ExitCode::Ok);
    }
    let client = super::check::interactive_client(&settings)
        .map_err(|e| CommandError::new(ExitCode::Failed, e))?;
    let mut out = Findings {
        json,
        colour: !json && crate::cli::out::stdout_colour(),
        bad: 0,
        wrong: Vec::new(),
        fine: Vec::new(),
        replaced: 0,
        rows: Vec::new(),
    };
    let mut copies: HashMap<String, SentCopy> = HashMap::new();
    // Items found gone (deleted, or sent), by (mailbox, id): the code Graph said it with.
    let mut items_gone: HashMap<(String, String), Option<String>> = HashMap::new();
    for e in &todo {
        let name = crate::outside::printable(&e.file_name_shown()).into_owned();
        // `on_change = "replace"` deleted its attachment on purpose, once a newer version was
        // on the item: nothing to read, nothing wrong.
        if e.replaced {
            out.add(e, Verdict::Replaced, replaced_by(&name, e, &done));
            continue;
        }
        let message = e.message.as_deref().and_then(|m| messages.get(m));
        if let Some(m) = message {
            if let Some((v, msg)) = in_message(&client, e, m, &mut copies).await? {
                out.add(e, v, msg);
                continue;
            }
        } else if let Some(mid) = &e.message {
            out.add(
                e,
                Verdict::Error,
                format!(
                    "{name}: its message {mid} is no longer in the ledger, so where it went is not \
                     known; look for it in Sent Items"
                ),
            );
            continue;
        }
        // A file of a message on its draft: `retry` of the entry is refused (it would mail it
        // twice); attaching it to the draft again is `outbox send`.
        let fix = |bad_copy: bool| match message {
            Some(m) => on_draft_again(e, m, bad_copy),
            None => attach_again(e, bad_copy),
        };
        let (Some(att), Some(want)) = (e.attachment_id.as_deref(), e.sha256.as_deref()) else {
            out.add(
                e,
                Verdict::Error,
                format!("{name}: the ledger has no attachment id or hash for it"),
            );
            continue;
        };
        match client.attachment_sha256(&item_of(e), att).await {
            Ok((got, size)) if got.eq_ignore_ascii_case(want) && size == e.size => {
                out.add(
                    e,
                    Verdict::Ok,
                    format!("{name}  sha256 {}…", hash_prefix(want)),
                );
            }
            Ok((got, size)) => {
                out.add(
                    e,
                    Verdict::Mismatch,
                    format!(
                        "{name}: the attachment's bytes differ (sha256 {}…, {size} bytes; the ledger has {}…, {} bytes); {}",
                        hash_prefix(&got),
                        hash_prefix(want),
                        e.size,
                        fix(true)
                    ),
                );
            }
            // Deleted by the newer version that replaces it, its mark not written yet.
            Err(RequestError::Graph(g))
                if g.status == Some(404)
                    && done
                        .iter()
                        .any(|n| n.replaces.iter().any(|r| r.entry == e.id)) =>
            {
                out.add(e, Verdict::Replaced, replaced_by(&name, e, &done));
            }
            Err(RequestError::Graph(g)) if g.status == Some(404) => {
                // The attachment, or the item itself? Graph answers both with a 404.
                let item = item_of(e);
                let key = (item.user.to_lowercase(), item.id.clone());
                let gone = match items_gone.get(&key) {
                    Some(gone) => gone.clone(),
                    None => {
                        let gone = item_gone(&client, &item).await;
                        items_gone.insert(key, gone.clone());
                        gone
                    }
                };
                let said = match gone {
                    Some(code) => {
                        let code = crate::outside::printable(&code);
                        let (kind, list) = match item.kind {
                            ItemKind::Message => {
                                ("message", "a draft that is there (`outbox items messages`)")
                            }
                            ItemKind::Event => {
                                ("event", "an event that is there (`outbox items events`)")
                            }
                        };
                        format!(
                            "{name}: its {kind} is no longer there ({code}: deleted, or no longer a draft), nor the attachment with it; once mapping `{}` names {list}, {}",
                            crate::outside::printable(&e.mapping),
                            fix(false)
                        )
                    }
                    None => format!(
                        "{name}: the attachment is no longer on its item ({}); {}",
                        g.code,
                        fix(false)
                    ),
                };
                out.add(e, Verdict::Missing, said);
            }
            Err(RequestError::Auth(a)) => {
                return Err(CommandError::new(ExitCode::SignIn, a.to_string()));
            }
            Err(err) => out.add(e, Verdict::Error, format!("{name}: {err}")),
        }
    }
    remember(&settings, &out.wrong, &out.fine).await;
    Ok(out.finish(todo.len()))
}

/// What verify found, written on the entries (through the running agent, or in the ledger): a
/// done entry found wrong or missing is one `retry` attaches again; a healthy one it refuses.
async fn remember(settings: &Settings, wrong: &[String], fine: &[String]) {
    if wrong.is_empty() && fine.is_empty() {
        return;
    }
    let dir = &settings.agent.state_dir;
    let req = Request::Verified {
        wrong: wrong.to_vec(),
        fine: fine.to_vec(),
    };
    if control::ask(dir, &req).await.is_some_and(|r| r.ok) {
        return;
    }
    let written = Ledger::open(dir).and_then(|l| crate::agent::ops::mark_verified(&l, wrong, fine));
    if let Err(e) = written {
        errln!(
            "warning: what verify found could not be written to the ledger ({e}), so `outbox retry` of an entry found wrong is refused until it is: run `outbox verify` again"
        );
    }
}

/// A sent copy as found once per message: its id and its attachments' `(id, name)`, or why it
/// could not be read (said for each of its files).
type SentCopy = Result<Option<(String, Vec<(String, String)>)>, String>;

/// The verdict on a file of message `m`, when the message says where to look: its sent copy
/// (`Sent`), or nowhere yet (`Sending`, `Unconfirmed`, `Failed`). `None`: the file is on the
/// draft, checked by its recorded attachment id.
async fn in_message(
    client: &GraphClient,
    e: &LedgerEntry,
    m: &MessageRecord,
    copies: &mut HashMap<String, SentCopy>,
) -> Result<Option<(Verdict, String)>, CommandError> {
    let name = crate::outside::printable(&e.file_name_shown()).into_owned();
    let mid = &m.id;
    let imid = m
        .internet_message_id
        .as_deref()
        .map(crate::outside::printable);
    let look = match &imid {
        Some(i) => format!("internetMessageId {i}"),
        None => format!(
            "the subject \"{}\"",
            crate::outside::printable(&m.letter.subject)
        ),
    };
    match m.state {
        MessageState::Sent => {}
        MessageState::Unconfirmed => {
            return Ok(Some((
                Verdict::Unconfirmed,
                format!(
                    "{name}: message {mid} was sent but its arrival in Sent Items was never confirmed; \
                     look in Sent Items for {look}: there, it went; not there, `outbox retry {mid}` \
                     sends it only if its draft is still a draft"
                ),
            )))
        }
        MessageState::Sending => {
            return Ok(Some((
                Verdict::Unconfirmed,
                format!(
                    "{name}: message {mid} is being sent; verify it again once `outbox status` says it is sent"
                ),
            )))
        }
        MessageState::Failed => {
            return Ok(Some((
                Verdict::Error,
                format!(
                    "{name}: message {mid} failed and was not sent; `outbox status {mid}` says why, \
                     `outbox retry {mid}` tries it again"
                ),
            )))
        }
        MessageState::Drafting | MessageState::Attaching | MessageState::Drafted => {
            return Ok(None)
        }
    }
    if !copies.contains_key(mid) {
        let copy = match client
            .find_sent_copy(&m.user, mid, m.internet_message_id.as_deref())
            .await
        {
            Ok(Some(found)) => match client.attachment_names(&m.user, &found.id).await {
                Ok(list) => Ok(Some((found.id, list))),
                Err(RequestError::Auth(a)) => {
                    return Err(CommandError::new(ExitCode::SignIn, a.to_string()))
                }
                Err(err) => Err(format!(
                    "the sent copy's attachments could not be listed: {err}"
                )),
            },
            Ok(None) => Ok(None),
            Err(crate::graph::mail::MailError::SignIn(a)) => {
                return Err(CommandError::new(ExitCode::SignIn, a))
            }
            Err(err) => Err(format!("Sent Items could not be searched: {err}")),
        };
        copies.insert(mid.clone(), copy);
    }
    let (sent_id, list) = match copies.get(mid) {
        Some(Ok(Some(c))) => c,
        Some(Ok(None)) | None => {
            return Ok(Some((
                Verdict::Missing,
                format!(
                    "{name}: message {mid} was sent, but no copy of it is in Sent Items (searched by its \
                     marker and its internetMessageId): it was moved or deleted there, or has not \
                     arrived yet; look for {look} in the mailbox; {}",
                    mail_again(e, m)
                ),
            )))
        }
        Some(Err(why)) => return Ok(Some((Verdict::Error, format!("{name}: {why}")))),
    };
    let want = e.sha256.as_deref().unwrap_or_default();
    let item = ItemRef::new(&m.user, ItemKind::Message, sent_id.clone());
    let mut differs = None;
    for (att, _) in list.iter().filter(|(_, n)| *n == e.name) {
        match client.attachment_sha256(&item, att).await {
            Ok((got, size)) if got.eq_ignore_ascii_case(want) && size == e.size => {
                return Ok(Some((
                    Verdict::Ok,
                    format!(
                        "{name}  sha256 {}…  (sent in message {mid})",
                        hash_prefix(want)
                    ),
                )))
            }
            Ok((got, size)) => differs = Some((got, size)),
            Err(RequestError::Auth(a)) => {
                return Err(CommandError::new(ExitCode::SignIn, a.to_string()))
            }
            Err(err) => return Ok(Some((Verdict::Error, format!("{name}: {err}")))),
        }
    }
    Ok(Some(match differs {
        Some((got, size)) => (
            Verdict::Mismatch,
            format!(
                "{name}: the copy in message {mid}'s sent copy differs (sha256 {}…, {size} bytes; the \
                 ledger has {}…, {} bytes); mail already sent cannot be changed: {}",
                hash_prefix(&got),
                hash_prefix(want),
                e.size,
                mail_again(e, m)
            ),
        ),
        None => (
            Verdict::Missing,
            format!(
                "{name}: message {mid}'s sent copy (in Sent Items) has no attachment of that name; {}",
                mail_again(e, m)
            ),
        ),
    }))
}

/// How to attach a file of a message left as a draft (or still being attached) to its draft
/// again: `outbox send FILE --message DRAFT_ID` while the file sent is at its path.
fn on_draft_again(e: &LedgerEntry, m: &MessageRecord, bad_copy: bool) -> String {
    let Some(draft) = m.draft_id.as_deref() else {
        return format!("message {} has no draft on record", m.id);
    };
    let then = if bad_copy {
        " (then delete the bad copy from the draft in Outlook)"
    } else {
        ""
    };
    let path = crate::outside::path(&e.path);
    let draft = crate::cli::out::command_word(draft);
    match std::fs::symlink_metadata(&e.path) {
        Ok(md) if md.is_file() && md.len() == e.size => match e.path.to_str() {
            Some(p) if crate::outside::printable(p) == p => format!(
                "`outbox send {} --message {draft}` attaches it to message {}'s draft again{then}",
                crate::cli::out::command_word(p),
                m.id
            ),
            _ => format!(
                "`outbox send FILE --message {draft}`, with FILE the file at {path}, attaches it to the draft again{then}"
            ),
        },
        _ => format!(
            "the file is no longer at {path}; `outbox send FILE --message {draft}` with FILE where it is now attaches it to the draft again{then}"
        ),
    }
}

/// How to mail a file of a sent message again: `outbox mail` to the same recipients while the
/// file sent is at its path (quoted for a POSIX shell); otherwise where it went.
fn mail_again(e: &LedgerEntry, m: &MessageRecord) -> String {
    let mut cmd = String::from("outbox mail");
    for (flag, list) in [
        ("--to", &m.letter.to),
        ("--cc", &m.letter.cc),
        ("--bcc", &m.letter.bcc),
    ] {
        for a in list {
            cmd.push_str(&format!(" {flag} {}", crate::cli::out::command_word(a)));
        }
    }
    let path = crate::outside::path(&e.path);
    match std::fs::symlink_metadata(&e.path) {
        Ok(md) if md.is_file() && md.len() == e.size => match e.path.to_str() {
            Some(p) if crate::outside::printable(p) == p => format!(
                "to mail the file again, `{cmd} {}`",
                crate::cli::out::command_word(p)
            ),
            _ => format!("to mail the file again, `{cmd} FILE` with FILE the file at {path}"),
        },
        _ => format!(
            "the file is no longer at {path} (moved or deleted by `after`?); to mail it again, `{cmd} FILE` with FILE where it is now"
        ),
    }
}

/// What verify says of a version a newer one replaced (`on_change = "replace"`): which entry
/// replaced it, and that its attachment was deleted on purpose.
fn replaced_by(name: &str, e: &LedgerEntry, done: &[LedgerEntry]) -> String {
    // The newest done version of the same file on record, else the one deleting it.
    let newer = done
        .iter()
        .filter(|n| {
            n.id != e.id
                && ((n.mapping == e.mapping && n.path == e.path && n.seq > e.seq && !n.replaced)
                    || n.replaces.iter().any(|r| r.entry == e.id))
        })
        .max_by_key(|n| n.seq);
    let by = match newer {
        Some(n) => format!("a newer version of the file (entry {})", n.id),
        None => "a newer version of the file".to_string(),
    };
    format!(
        "{name}: replaced by {by}; its own attachment was deleted on purpose (on_change = \"replace\"), nothing to check"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    /// A version a newer one replaced: its attachment deleted on purpose, not a problem.
    Replaced,
    Mismatch,
    Missing,
    /// A message whose send is in flight or not confirmed: nothing to read yet.
    Unconfirmed,
    Error,
}

/// One line per entry as it is checked, or (`--json`) an array of
/// `{"id","file","result","message"}` at the end.
struct Findings {
    json: bool,
    /// The tags in colour (`out::stdout_colour`).
    colour: bool,
    bad: usize,
    /// Entries whose attachment was found wrong or missing (`retry` attaches them again), and
    /// entries marked so before that are found good now.
    wrong: Vec<String>,
    fine: Vec<String>,
    /// Versions a newer one replaced (not problems).
    replaced: usize,
    rows: Vec<serde_json::Value>,
}

impl Findings {
    fn add(&mut self, e: &LedgerEntry, v: Verdict, message: String) {
        use crate::cli::out::{paint, Tone};
        let (tag, word, tone) = match v {
            Verdict::Ok => ("ok      ", "ok", Tone::Good),
            Verdict::Replaced => ("replaced", "replaced", Tone::Good),
            Verdict::Mismatch => ("MISMATCH", "mismatch", Tone::Bad),
            Verdict::Missing => ("MISSING ", "missing", Tone::Bad),
            Verdict::Unconfirmed => ("UNSURE  ", "unconfirmed", Tone::Doubt),
            Verdict::Error => ("error   ", "error", Tone::Bad),
        };
        match v {
            Verdict::Ok if e.verify_failed => self.fine.push(e.id.clone()),
            Verdict::Ok => {}
            Verdict::Replaced => self.replaced += 1,
            Verdict::Mismatch | Verdict::Missing => {
                self.bad += 1;
                if !e.verify_failed {
                    self.wrong.push(e.id.clone());
                }
            }
            _ => self.bad += 1,
        }
        if self.json {
            // A path that is not UTF-8 (trial 6, G13: `json!` of it panicked): U+FFFD in
            // `file`, its exact bytes in hex in `file_bytes`, as `status --json`'s `path_bytes`.
            let mut row = serde_json::json!({
                "id": e.id,
                "file": e.path.to_string_lossy(),
                "result": word,
                "message": message,
            });
            if e.path.to_str().is_none() {
                row["file_bytes"] =
                    serde_json::json!(crate::core::model::path_bytes::raw(&e.path).1);
            }
            self.rows.push(row);
        } else {
            // A file name, a server's answer: one line, secrets redacted, controls escaped.
            let tag = paint(tag, tone, self.colour);
            outln!("{tag}  {}  {}", e.id, crate::outside::shown(&message));
        }
    }

    fn finish(self, checked: usize) -> ExitCode {
        if self.json {
            let text = serde_json::to_string_pretty(&self.rows).unwrap_or_default();
            jsonln!("{text}");
        } else {
            let replaced = match self.replaced {
                0 => String::new(),
                n => format!(", {n} replaced by a newer version"),
            };
            outln!(
                "{checked} checked, {} ok{replaced}, {} with problems",
                checked - self.bad - self.replaced,
                self.bad
            );
        }
        if self.bad == 0 {
            ExitCode::Ok
        } else {
            ExitCode::Failed
        }
    }
}

/// Whether `item` itself is gone (a 404 for the item, not only for one of its attachments):
/// the code Graph said it with. Any other answer (there, or not known) is `None`.
async fn item_gone(client: &GraphClient, item: &ItemRef) -> Option<String> {
    let mut url = client.url(&item.segments());
    url.query_pairs_mut().append_pair("$select", "id");
    match client.get_json(&item.user, url).await {
        Err(RequestError::Graph(g)) if g.status == Some(404) => Some(g.code),
        _ => None,
    }
}

/// How to attach the entry's file again: `outbox retry ID` (which then deletes the recorded
/// attachment) while the file sent is at its path; otherwise why it cannot, and the way back.
fn attach_again(e: &LedgerEntry, bad_copy: bool) -> String {
    // As the entry is once this finding is written on it.
    let found = LedgerEntry {
        verify_failed: true,
        ..e.clone()
    };
    match crate::agent::ops::retry_refusal(&found) {
        None if bad_copy => format!(
            "`outbox retry {}` attaches the file again and then deletes this copy",
            e.id
        ),
        None => format!("`outbox retry {}` attaches the file again", e.id),
        Some(why) => format!("to fix it: {why}"),
    }
}

/// The first 12 characters of a hex hash, for display (char-safe whatever the input).
fn hash_prefix(h: &str) -> String {
    h.chars().take(12).collect()
}
