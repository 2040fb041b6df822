//! Mail files now as one new message, without the ledger (`outbox mail`): the same state machine
//! as the agent, fed the files' hashed records and their message, with upload URLs kept in
//! memory. The draft carries a fresh marker, so a draft or a sent copy is found again by it
//! exactly as the agent finds its own; a send whose answer is lost is confirmed in Sent Items,
//! never repeated.

use super::drive::{OneShot, Stop};
use super::files;
use super::oneshot::{mapping_for, OneShotError};
use super::steps::{MemoryUrls, Steps};
use crate::config::Settings;
use crate::core::model::*;
use crate::core::Machine;
use crate::graph::mail::MessageFacts;
use crate::graph::GraphClient;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// How a message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailed {
    pub state: MessageState,
    /// The sent message's `internetMessageId` (sent), or the draft's (drafted).
    pub internet_message_id: Option<String>,
    pub draft_id: Option<String>,
    /// The marker the draft and its sent copy carry.
    pub marker: String,
    /// `--key`: an earlier run's message, found (sent: this run sent nothing; a draft: this run
    /// made none).
    pub earlier: bool,
    /// `--key`: what the earlier run's message says (its subject and recipients, read back from
    /// the mailbox), when one was found.
    pub found: Option<MessageFacts>,
}

/// One file to mail: its path and the attachment name.
#[derive(Debug, Clone)]
pub struct MailFile {
    pub path: PathBuf,
    pub name: String,
}

/// What `mail` is told while it runs: bytes on the draft so far (after each chunk and POST), and
/// a sentence whenever it starts waiting for something other than an upload (the sending limit,
/// the confirmation of a send in Sent Items), said once per wait.
#[derive(Clone, Default)]
pub struct Watch {
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    pub waiting: Option<Arc<dyn Fn(String) + Send + Sync>>,
}

/// Mail `files` from `user`'s mailbox as one message saying `letter`; `send = false` leaves
/// the draft, fully attached. `watch` hears the bytes on the draft so far and what it waits for.
// The message's parts, each a plain value a caller has at hand; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn mail_files(
    settings: &Settings,
    client: Arc<GraphClient>,
    user: &str,
    letter: Letter,
    files: Vec<MailFile>,
    send: bool,
    key: Option<&str>,
    watch: Watch,
) -> Result<Mailed, OneShotError> {
    let progress = watch.progress.clone();
    let marker = match key {
        Some(k) => keyed_marker(user, k),
        None => format!("m{}", uuid::Uuid::new_v4().simple()),
    };
    let target = Target {
        user: user.to_owned(),
        kind: ItemKind::Message,
        item_id: String::new(),
    };
    let mut mappings = Vec::new();
    let mut rules = Vec::new();
    let mut records = Vec::new();
    let mut keyed_files = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let path = std::path::absolute(&f.path).unwrap_or_else(|_| f.path.clone());
        let file_err = |why: String| OneShotError::File {
            path: path.clone(),
            why,
        };
        let meta = std::fs::metadata(&path).map_err(|e| file_err(e.to_string()))?;
        if !meta.is_file() {
            return Err(file_err("not a regular file".into()));
        }
        let stat = files::file_stat(&path, &meta).ok_or_else(|| file_err("gone".into()))?;
        if stat.size > MAX_ATTACHMENT {
            return Err(file_err(format!(
                "{} bytes, over Graph's 150 MiB ({MAX_ATTACHMENT} bytes) attachment limit; nothing was sent (split or compress it under 150 MiB and mail the parts)",
                stat.size
            )));
        }
        let name = format!("mail-{i}");
        let mapping = mapping_for(&name, &path, &target);
        let (m, p) = (mapping.clone(), path.clone());
        let hashed = tokio::task::spawn_blocking(move || files::hash_file(&m, &p, &stat))
            .await
            .unwrap_or(HashResult::Gone);
        let (sha256, stat) = match hashed {
            HashResult::Hashed { sha256, stat } => (sha256, stat),
            HashResult::Unreadable(f) | HashResult::Refused { failure: f, .. } => {
                return Err(file_err(f.message))
            }
            HashResult::Changed => return Err(file_err("it changed while it was read".into())),
            HashResult::Gone => return Err(file_err("it is gone".into())),
        };
        keyed_files.push(KeyFile {
            name: f.name.clone(),
            path: path.clone(),
            sha256: sha256.clone(),
            size: stat.size,
        });
        mappings.push(mapping);
        rules.push(MappingRule {
            name: name.clone(),
            target: target.clone(),
            // With a key, a draft an earlier run made may hold some files already: those are
            // found by name and bytes, not attached twice.
            if_exists: if key.is_some() {
                IfExists::Skip
            } else {
                IfExists::Attach
            },
            on_change: OnChange::Add,
            after: After::Keep,
            mail: Some(MailRule {
                send,
                batch: true,
                max_message_size: u64::MAX,
                // No ledger keeps a failed message for `retry`: its draft is not left behind.
                delete_failed_draft: true,
                ..MailRule::default()
            }),
        });
        records.push(Record {
            // `mail` moves or deletes nothing.
            after_done: true,
            message: Some(marker.clone()),
            ..Record::pending(
                format!("f{i}"),
                name,
                path,
                f.name.clone(),
                stat,
                Some(sha256),
                i as u64 + 1,
                Time(0),
            )
        });
    }
    let asked = letter.clone();
    let mut found = None;
    // One run per key at a time on this machine: a second (a script's overlapping re-run)
    // waits for the first, then finds its message, instead of making a draft beside it.
    let _one_at_a_time = match key {
        Some(k) => Some(key_lock(&settings.agent.state_dir, &marker, k, &watch).await?),
        None => None,
    };
    // What an earlier run with this key remembered of its message: the internetMessageId its
    // draft got, which its sent copy keeps even where the marker is not kept (GRAPH.md §13).
    let memory =
        key.map(|_| KeyMemory::new(&settings.agent.state_dir, &marker, &keyed_files, &asked));
    if let Some(k) = key {
        found = key_taken(&client, user, &marker, k, &keyed_files, &asked).await?;
    }
    let sizes: BTreeMap<String, u64> = records
        .iter()
        .map(|r| (r.id.clone(), r.file.size))
        .collect();
    let mut message = MessageRecord::drafting(
        marker.clone(),
        "mail-0".into(),
        user.to_owned(),
        letter,
        records.iter().map(|r| r.id.clone()).collect(),
        send,
        records.len() as u64 + 1,
        Time(0),
    );
    if key.is_some() {
        // Looked for first (Sent Items, then Drafts) by its marker, before any draft is made;
        // in Sent Items by the internetMessageId an earlier run remembered too.
        message.keyed = true;
        message.may_exist = true;
        message.internet_message_id = memory.as_ref().and_then(KeyMemory::recall);
    }
    if let (true, Some(_)) = (send && key.is_some(), &found) {
        // A draft a `--draft` run left (checked above: these files, these recipients) that no
        // run has asked to send cannot be in Exchange's move: once it is marked "send asked"
        // (so no later run takes it for one never sent), it is this run's draft, looked for
        // again and taken at once, not held for the move (M7).
        if let Some(id) = client.never_sent_draft(user, &marker).await {
            if client.mark_send_asked(user, &id).await.is_ok() {
                if let Some(say) = &watch.waiting {
                    say(format!(
                        "found the draft a `--draft` run with this key left (marker {marker}), \
                         never sent: sending it now"
                    ));
                }
                message.state = MessageState::Attaching;
                message.draft_id = Some(id);
                message.may_exist = false;
            }
        }
    }
    let mut machine = Machine::new(
        rules,
        crate::core::model::Policy {
            // A file named on the command line is no mapping's: never moved to a failed_dir.
            failed_dirs: Vec::new(),
            ..super::once_policy_of(settings)
        },
    );
    // (Made now: not looked for before its draft is made, as a ledger's would be.)
    machine.made_here(&marker);
    let urls = Arc::new(MemoryUrls::default());
    // Bytes on the draft per file, summed for the bar: a chunk or a POST, and a file done.
    let held: Arc<std::sync::Mutex<BTreeMap<String, u64>>> = Arc::default();
    let report = {
        let (held, progress) = (held.clone(), progress.clone());
        move |id: &str, n: u64| {
            let total = {
                let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
                let slot = h.entry(id.to_owned()).or_default();
                *slot = (*slot).max(n);
                h.values().sum::<u64>()
            };
            if let Some(p) = &progress {
                p(total);
            }
        }
    };
    let report: super::steps::FileProgress = Arc::new(report);
    let mut steps = Steps::new(client.clone(), urls.clone(), mappings);
    steps.progress = Some(report.clone());
    // A keyed draft left for review carries the mark that it was never sent.
    steps.never_sent = key.is_some() && !send;
    let steps = Arc::new(steps);
    // As it starts: what a wait before its first write (the hold of a found draft) is about.
    let first = message.clone();
    let inputs = vec![Input::Start {
        records,
        with_url: Vec::new(),
        messages: vec![message],
    }];
    let mut hooks = MailHooks {
        client: &client,
        urls: &urls,
        user,
        sizes: &sizes,
        report: report.clone(),
        keyed: key.is_some(),
        say: watch.waiting.as_ref(),
        said: None,
        last: Some(first),
        grace_ms: crate::core::machine::move_grace_ms(settings.agent.look_after.as_millis() as u64),
        hold_since: None,
        answer: None,
        sent_here: false,
        drafted_here: false,
        found_draft: false,
        memory: memory.as_ref(),
        refusal_told: None,
    };
    let ran = super::drive::drive(&mut machine, steps, &*urls, inputs, &mut hooks).await;
    let (last, sent_here, drafted_here, found_draft) = (
        hooks.last,
        hooks.sent_here,
        hooks.drafted_here,
        hooks.found_draft,
    );
    match ran {
        Ok(()) => {}
        Err(Stop::SignIn(f)) => {
            return Err(in_doubt(&last).unwrap_or(OneShotError::SignIn(f.message)))
        }
        Err(Stop::Interrupted) => {
            if let Some(e) = in_doubt(&last) {
                return Err(e);
            }
            let left = draft_left(&client, user, last.as_ref(), key).await;
            return Err(OneShotError::MailInterrupted(left));
        }
        Err(Stop::Unreachable(f)) => return Err(in_doubt(&last).unwrap_or(OneShotError::Failed(f))),
    }
    let Some(m) = last else {
        return Err(OneShotError::Failed(Failure::new(
            "notSent",
            "nothing was sent",
        )));
    };
    match m.state {
        MessageState::Sent | MessageState::Drafted => {
            let earlier = key.is_some()
                && if m.state == MessageState::Sent {
                    !sent_here
                } else {
                    !drafted_here
                };
            if let (true, None, Some(k)) = (earlier, &found, key) {
                // Found by the run only (not yet searchable before it): checked now, so an
                // earlier message to others, or of other bytes, is never reported as this one.
                found = key_taken(&client, user, &marker, k, &keyed_files, &asked).await?;
            }
            Ok(Mailed {
                earlier,
                found,
                state: m.state,
                internet_message_id: m.internet_message_id,
                draft_id: m.draft_id,
                marker,
            })
        }
        _ if m.may_have_been_sent() => Err(maybe_sent(&m)),
        _ => {
            let mut f = m.error.unwrap_or_else(|| {
                Failure::new("notSent", format!("the message ended {:?}", m.state))
            });
            // What became of its draft (no ledger keeps the message for a `retry`).
            let draft = match &m.draft_id {
                Some(id) if !f.message.contains("could not be deleted") => Some(format!(
                    "its draft is left in Drafts (id {})",
                    crate::outside::printable(id)
                )),
                Some(_) => None,
                // (A draft asked for and refused was never made: nothing to say of it.)
                None if found_draft => Some("its draft was deleted".to_owned()),
                None => None,
            };
            if let Some(d) = draft {
                f.message = format!("{}; {d}", f.message.trim_end_matches('.'));
            }
            Err(OneShotError::Failed(f))
        }
    }
}

/// Interrupted before any send could have happened: what becomes of the draft, said exactly
/// (trial 4's M6: "its draft, if made, stays in Drafts" left an addressed, half-attached draft
/// one click from an empty send). Without `--key` the draft this run made is deleted (nothing
/// resumes it); with one it stays for a re-run with the same key, which takes it up. A draft
/// whose creation was not answered may exist: said, with the subject to look for.
async fn draft_left(
    client: &GraphClient,
    user: &str,
    m: Option<&MessageRecord>,
    key: Option<&str>,
) -> String {
    let Some(m) = m else {
        return "no draft was made".to_owned();
    };
    let subject = crate::outside::printable(&m.letter.subject).into_owned();
    let again = |k: &str| {
        format!(
            "re-run with the same `--key {}` to finish and send it",
            crate::outside::printable(k)
        )
    };
    match (&m.draft_id, key) {
        (Some(id), Some(k)) => {
            // A run that sends, which held it as its own (made it, or took an earlier run's
            // only once no send of it could be under way) and never asked to send it: marked
            // so, the re-run takes it at once (no hold for Exchange's move). Never a `--draft`
            // run's: it takes a found draft at once, one an earlier run may have sent.
            let now = if m.send && client.mark_never_sent(user, id, &m.id).await.is_ok() {
                " (at once: it is marked never sent)"
            } else {
                ""
            };
            format!(
                "its draft stays in Drafts, not fully attached (id {}): {}{now}, or delete it",
                crate::outside::printable(id),
                again(k)
            )
        }
        (Some(id), None) => match client.delete_draft_step(user, id).await {
            DeleteOutcome::Deleted => "its draft was deleted".to_owned(),
            DeleteOutcome::Failed(_) => format!(
                "its draft could not be deleted and stays in Drafts, not fully attached (id {}, \
                 subject \"{subject}\"): delete it, or it could be sent by hand without its files",
                crate::outside::printable(id)
            ),
        },
        (None, Some(k)) if m.may_exist => format!(
            "a draft with this key may be in Drafts (an earlier run's, or one whose creation got \
             no clear answer), not sent by this run: {}, which finds it",
            again(k)
        ),
        (None, None) if m.may_exist => format!(
            "a draft may have been made (the answer to its creation did not tell): look in \
             Drafts for the subject \"{subject}\" and delete it"
        ),
        (None, _) => "no draft was made".to_owned(),
    }
}

/// A file `mail --key` names, as [`key_taken`] compares it with the earlier message's.
struct KeyFile {
    name: String,
    path: PathBuf,
    sha256: String,
    size: u64,
}

/// `--key`: the message an earlier run made under this key is another message, refused (exit 2)
/// naming the key and that message, before anything is made or attached, when it holds a file
/// this run does not name (by attachment name), went (or goes) to other recipients (to, cc, bcc,
/// each compared as a set, case-insensitively), or holds other bytes under a name of this run
/// (the file changed since: its bytes are read back, `$value`, as Outlook's reported `size` is
/// not the raw size). A key names one message; a re-run resumes or reports it only for the same
/// files and recipients (a draft holding some of the files, left by a run cut short, is resumed).
/// Returns what the earlier message says, when it was found and read; a search or read that
/// fails is left to the run (which looks again before any draft is made, and checks a message it
/// finds itself here again).
async fn key_taken(
    client: &GraphClient,
    user: &str,
    marker: &str,
    key: &str,
    files: &[KeyFile],
    asked: &Letter,
) -> Result<Option<MessageFacts>, OneShotError> {
    use crate::graph::mail::{DraftId, Folder};
    let Ok(Some(found)) = client.find_by_marker(user, Folder::Any, marker).await else {
        return Ok(None);
    };
    let Ok(on_it) = client.attachment_names(user, &found.id).await else {
        return Ok(None);
    };
    let key_shown = crate::outside::printable(key);
    let which = |subject: &str| {
        format!(
            "{} (marker {marker}{}, subject \"{}\")",
            if found.is_draft {
                "a draft in the mailbox"
            } else {
                "a message already sent"
            },
            found
                .internet_message_id
                .as_deref()
                .map(|i| format!(", internetMessageId {}", crate::outside::printable(i)))
                .unwrap_or_default(),
            crate::outside::printable(subject),
        )
    };
    let mut theirs: Vec<&str> = on_it.iter().map(|(_, n)| n.as_str()).collect();
    let mut ours: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    theirs.sort_unstable();
    theirs.dedup();
    ours.sort_unstable();
    let other = theirs.iter().any(|n| ours.binary_search(n).is_err());
    // A sent message is whole: it must hold exactly these files.
    let short = !found.is_draft && ours.iter().any(|n| theirs.binary_search(n).is_err());
    if other || short {
        let shown = |v: &[&str]| {
            v.iter()
                .map(|n| format!("\"{}\"", crate::outside::printable(n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(OneShotError::KeyTaken(format!(
            "the key {key_shown} was used for another message: {} holding {}, not the files named \
             now ({}); nothing was sent or attached. A key names one message: give these files a \
             new key, or re-run with the files it holds",
            which(found.subject.as_deref().unwrap_or_default()),
            if theirs.is_empty() {
                "no file".to_owned()
            } else {
                shown(&theirs)
            },
            shown(&ours),
        )));
    }
    let Ok(facts) = client.message_facts(user, &found.id).await else {
        return Ok(None);
    };
    if !same_addresses(&facts.to, &asked.to)
        || !same_addresses(&facts.cc, &asked.cc)
        || !same_addresses(&facts.bcc, &asked.bcc)
    {
        return Err(OneShotError::KeyTaken(format!(
            "the key {key_shown} was used for a message to other recipients: {} {} {}, not {} as \
             named now; nothing was sent or attached. A key names one message: give this one a new \
             key, or re-run with the recipients it has",
            which(&facts.subject),
            if found.is_draft { "is to" } else { "went to" },
            recipients_text(&facts.to, &facts.cc, &facts.bcc),
            recipients_text(&asked.to, &asked.cc, &asked.bcc),
        )));
    }
    // Each file's bytes against the attachments of its name (a draft may hold none of it yet).
    let item = DraftId(found.id.clone()).item(user);
    for f in files {
        let mut held = None;
        for (id, _) in on_it.iter().filter(|(_, n)| *n == f.name) {
            let Ok((sha, n)) = client.attachment_sha256(&item, id).await else {
                return Ok(None);
            };
            if sha.eq_ignore_ascii_case(&f.sha256) {
                held = None;
                break;
            }
            held = Some(n);
        }
        if let Some(n) = held {
            return Err(OneShotError::KeyTaken(format!(
                "{} changed since the message with key {key_shown} was made (it holds {n} bytes of \
                 it, the file has {} now): {}; nothing was sent or attached. A key names one \
                 message: mail the file as it is now with a new key, or put back the bytes it was \
                 mailed with",
                crate::outside::path(&f.path),
                f.size,
                which(&facts.subject),
            )));
        }
    }
    Ok(Some(facts))
}

/// Two lists of addresses name the same recipients: as sets, case-insensitively.
fn same_addresses(a: &[String], b: &[String]) -> bool {
    let set = |v: &[String]| {
        v.iter()
            .map(|s| s.trim().to_lowercase())
            .collect::<std::collections::BTreeSet<_>>()
    };
    set(a) == set(b)
}

/// Recipients as a sentence part: "a@x, b@y; cc c@z; bcc d@w" ("no one" when there are none).
pub fn recipients_text(to: &[String], cc: &[String], bcc: &[String]) -> String {
    let mut parts = Vec::new();
    for (label, list) in [("", to), ("cc ", cc), ("bcc ", bcc)] {
        if !list.is_empty() {
            let shown: Vec<String> = list
                .iter()
                .map(|a| crate::outside::printable(a).into_owned())
                .collect();
            parts.push(format!("{label}{}", shown.join(", ")));
        }
    }
    if parts.is_empty() {
        "no one".to_owned()
    } else {
        parts.join("; ")
    }
}

/// What `mail --key` remembers of its message on this machine, beside its key's lock:
/// `STATE_DIR/mail-keys/MARKER.sent`, two lines: a digest of what the run was asked (files by
/// name and bytes, recipients, subject) and the internetMessageId its draft got. A re-run asked
/// the same looks for that id in Sent Items too: a sent copy that did not keep the marker (the
/// run's send in doubt, exit 4) is found by it, not mailed again. Only this machine's state dir
/// knows it: elsewhere, the marker alone finds the message.
struct KeyMemory {
    path: PathBuf,
    digest: String,
    written: std::sync::Mutex<Option<String>>,
}

impl KeyMemory {
    fn new(state_dir: &std::path::Path, marker: &str, files: &[KeyFile], letter: &Letter) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut named: Vec<(&str, &str)> = files
            .iter()
            .map(|f| (f.name.as_str(), f.sha256.as_str()))
            .collect();
        named.sort_unstable();
        for (name, sha) in named {
            h.update(format!("file\n{name}\n{sha}\n").as_bytes());
        }
        for (kind, list) in [("to", &letter.to), ("cc", &letter.cc), ("bcc", &letter.bcc)] {
            let mut list: Vec<String> = list.iter().map(|a| a.to_lowercase()).collect();
            list.sort_unstable();
            for a in list {
                h.update(format!("{kind}\n{a}\n").as_bytes());
            }
        }
        h.update(format!("subject\n{}\n", letter.subject).as_bytes());
        KeyMemory {
            path: state_dir.join("mail-keys").join(format!("{marker}.sent")),
            digest: hex::encode(h.finalize()),
            written: std::sync::Mutex::new(None),
        }
    }

    /// The internetMessageId an earlier run asked the same remembered, if any.
    fn recall(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let mut lines = text.lines();
        if lines.next()? != self.digest {
            return None;
        }
        let imid = lines.next()?.trim();
        // As Graph gives it: `<...>`, one line, of a sane length.
        (imid.starts_with('<') && imid.ends_with('>') && imid.len() <= 998).then(|| imid.to_owned())
    }

    /// Remember `imid` (once per value): written whole to a temporary file, then renamed, so a
    /// crash leaves the old memory or the new one. A failure is logged; the run goes on.
    fn remember(&self, imid: &str) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.as_deref() == Some(imid) {
            return;
        }
        let tmp = self.path.with_extension("sent.tmp");
        let wrote = std::fs::write(&tmp, format!("{}\n{imid}\n", self.digest))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        match wrote {
            Ok(()) => *written = Some(imid.to_owned()),
            Err(e) => tracing::warn!(
                path = %crate::outside::path(&self.path),
                error = %e,
                "could not remember the message's internetMessageId for a re-run with this key"
            ),
        }
    }
}

/// `mail --key`'s lock on its key (`STATE_DIR/mail-keys/MARKER.lock`, held until it is
/// dropped): taken at once, or, while another run holds it, after saying so through `watch`.
async fn key_lock(
    state_dir: &std::path::Path,
    marker: &str,
    key: &str,
    watch: &Watch,
) -> Result<std::fs::File, OneShotError> {
    use fs2::FileExt;
    let dir = state_dir.join("mail-keys");
    let path = dir.join(format!("{marker}.lock"));
    let failed = |e: std::io::Error| {
        OneShotError::Failed(Failure::new(
            "keyLock",
            format!(
                "cannot lock {} (one `outbox mail --key` at a time per key): {e}; check that the state dir is yours and writable",
                crate::outside::path(&path)
            ),
        ))
    };
    crate::private::ensure_private_dir(&dir).map_err(failed)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock_exclusive() {
        Ok(()) => return Ok(file),
        Err(e)
            if e.kind() == fs2::lock_contended_error().kind()
                || e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(failed(e)),
    }
    if let Some(say) = &watch.waiting {
        say(format!(
            "another `outbox mail --key {}` is running; waiting for it to end",
            crate::outside::printable(key)
        ));
    }
    tokio::task::spawn_blocking(move || file.lock_exclusive().map(|()| file))
        .await
        .map_err(|e| failed(std::io::Error::other(e.to_string())))?
        .map_err(failed)
}

/// The marker of `outbox mail --key KEY` from `user`'s mailbox: the same key, the same marker,
/// so a re-run finds the earlier message (Sent Items, Drafts) instead of making another.
pub fn keyed_marker(user: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(user.to_lowercase().as_bytes());
    h.update(b"\n");
    h.update(key.as_bytes());
    let d = h.finalize();
    let hex: String = d.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("k{hex}")
}

fn maybe_sent(m: &MessageRecord) -> OneShotError {
    OneShotError::MaybeSent {
        marker: m.id.clone(),
        internet_message_id: m.internet_message_id.clone(),
        why: m.error.clone().unwrap_or_else(|| {
            Failure::new(
                "sendUnconfirmed",
                "the send was started and its outcome is not known",
            )
        }),
    }
}

/// What the message waits for, when it waits `in_ms` with nothing in flight: the sending limit,
/// the confirmation of a send in Sent Items, or a retry after an error; `None` for short waits
/// (a settle, a backoff of a second) and while a request is out.
/// `answer`: the last step answered with a failure in this run, said ("creating the draft was
/// answered 503 …"), for a wait the message record does not explain (M13).
fn waiting_for(
    m: Option<&MessageRecord>,
    running: bool,
    in_ms: u64,
    answer: Option<&Answer>,
    refusal_told: bool,
) -> Option<String> {
    let m = m?;
    if running || in_ms < 2_000 || m.state.is_terminal() {
        return None;
    }
    if held(m) {
        // Said by the hooks, once the hold lasts (`hold_text`).
        return None;
    }
    let until = clock_text(in_ms);
    let error = m.error.as_ref();
    let code = error.map(|e| e.code.as_str()).unwrap_or_default();
    let why = error
        .map(|e| {
            crate::outside::printable(&e.message)
                .trim_end_matches('.')
                .to_owned()
        })
        .unwrap_or_default();
    Some(match (m.state, m.send_at.or(m.last_send_at).is_some()) {
        // The first wait after the refusal is its own (Retry-After, or the backoff); later
        // ones (Exchange's move grace before the look, a listing again) are the confirmation's.
        (MessageState::Sending, _)
            if (code == "ErrorExceededMessageLimit" || code == "throttled") && !refusal_told =>
        {
            let whose = if code == "throttled" {
                "Graph's throttle"
            } else {
                "Exchange's sending limit"
            };
            format!(
                "waiting for {whose} until {until} ({why}); the send is looked for in Sent Items \
                 before any second one"
            )
        }
        (MessageState::Sending, true) => format!(
            "confirming the send in Sent Items at {until}, once Exchange's move has surely had \
             time (the send's answer was {})…",
            if code.is_empty() {
                "lost".to_owned()
            } else {
                crate::outside::printable(code).into_owned()
            }
        ),
        (MessageState::Drafting, _)
            if m.may_exist && m.draft_id.is_none() && !m.keyed && m.effect_at.is_some() =>
        {
            let created = answer
                .filter(|a| a.step == "creating the draft")
                .map_or("got no answer".to_owned(), |a| {
                    format!("was answered {}", a.said)
                });
            if m.draft_gone_at.is_some() {
                format!(
                    "creating the draft {created}; no draft carrying its marker is in Drafts or \
                     Sent Items, but one made then sent from Outlook would show in Sent Items \
                     only once Exchange moved it: asked again at {until} (5 × look_after), \
                     before another is made"
                )
            } else {
                format!(
                    "creating the draft {created}: it may exist all the same, so it is looked \
                     for by its marker (Sent Items, then Drafts) at {until}, once a late create \
                     would surely show (look_after), before another is made"
                )
            }
        }
        _ if why.is_empty() => match answer {
            Some(a) => format!(
                "waiting until {until}: {} was answered {}; it is tried again then",
                a.step, a.said
            ),
            None => format!("waiting until {until}"),
        },
        _ => format!("waiting until {until} after an error ({why})"),
    })
}

/// A step of this run answered with a failure: which, and what Graph said.
struct Answer {
    step: &'static str,
    said: String,
}

/// The step an outcome answers, in words, and what its failure said; `None` when it did not
/// fail.
fn answer_of(input: &Input) -> Option<Answer> {
    let Input::Outcome { outcome, .. } = input else {
        return None;
    };
    let fault = outcome.fault()?;
    let step = match outcome {
        Outcome::Post(_) | Outcome::CreateSession(_) | Outcome::Chunk(_) | Outcome::Ask(_) => {
            "an upload to the draft"
        }
        Outcome::CreateDraft(_) => "creating the draft",
        Outcome::Find(..) => "a search for the message",
        Outcome::ListDraft(_) => "listing the draft",
        Outcome::Send(_) => "the send",
        _ => "a request",
    };
    let said = match fault {
        Fault::Throttled {
            retry_after_ms: Some(ms),
        } => format!("with a throttle (Retry-After {} s)", ms.div_ceil(1_000)),
        Fault::Throttled {
            retry_after_ms: None,
        } => "with a throttle".to_owned(),
        Fault::Ambiguous(f) | Fault::Unreachable(f) | Fault::SignIn(f) | Fault::Permanent(f) => {
            format!(
                "\"{}\"",
                crate::outside::printable(f.message.trim_end_matches('.'))
            )
        }
    };
    Some(Answer { step, said })
}

/// How long a hold of an earlier run's draft lasts before it is said: past the first look in
/// Sent Items (the core asks every 3 s).
const HOLD_QUIET_MS: u64 = 2_500;

/// Whether the core holds an earlier run's draft it found (`--key`) for Exchange's move.
fn held(m: &MessageRecord) -> bool {
    m.state == MessageState::Drafting && m.keyed && m.may_exist && m.send
}

/// What a hold of an earlier run's draft waits for, and until when (`until`, a clock time).
fn hold_text(marker: &str, grace_ms: u64, until: &str) -> String {
    format!(
        "the draft an earlier run with this key made (marker {marker}) is still a draft, and that \
         run may have sent it (Exchange moves a sent draft to Sent Items a while after the send): \
         it is not sent before Sent Items, asked every few seconds, still shows no copy of it at \
         about {until} ({} after it was found; a copy found sooner ends this run at once). A \
         draft a `--draft` run left is sent at once",
        minutes_text(grace_ms)
    )
}

/// A duration in words: "10 minutes", "45 s".
fn minutes_text(ms: u64) -> String {
    match ms / 1_000 {
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} s"),
    }
}

/// The wall-clock time `in_ms` from now, `HH:MM:SS UTC`.
pub(super) fn clock_text(in_ms: u64) -> String {
    let t = time::OffsetDateTime::now_utc()
        + time::Duration::milliseconds(in_ms.min(i64::MAX as u64) as i64);
    format!("{:02}:{:02}:{:02} UTC", t.hour(), t.minute(), t.second())
}

/// Stopping while a send may have happened is never "not sent": a script that mails again on
/// a failure would send a second copy. The error says it could not be confirmed.
fn in_doubt(last: &Option<MessageRecord>) -> Option<OneShotError> {
    let m = last.as_ref()?;
    m.may_have_been_sent().then(|| maybe_sent(m))
}

/// Best effort: sessions left open by an interrupted mail have no later attempt.
/// `mail`'s part of the one-shot loop: its message as it last was, its files' progress, what it
/// says while it waits.
struct MailHooks<'a> {
    client: &'a GraphClient,
    urls: &'a MemoryUrls,
    user: &'a str,
    sizes: &'a BTreeMap<String, u64>,
    report: super::steps::FileProgress,
    /// `--key`: an earlier run that sent the message leaves nothing to do.
    keyed: bool,
    say: Option<&'a Arc<dyn Fn(String) + Send + Sync>>,
    said: Option<String>,
    last: Option<MessageRecord>,
    /// How long a found earlier draft is held for Exchange's move.
    grace_ms: u64,
    /// The last step answered with a failure (what a wait is about, when the message does not
    /// say it).
    answer: Option<Answer>,
    /// When this run first waited in that hold: said only once it lasts (a copy that shows at
    /// the next look, a few seconds on, needs no paragraph: M4).
    hold_since: Option<std::time::Instant>,
    /// This run asked for a send, or made a draft.
    sent_here: bool,
    drafted_here: bool,
    /// A draft of the message existed in this run (made, or an earlier run's found).
    found_draft: bool,
    /// `--key`: where the message's internetMessageId is remembered for a re-run.
    memory: Option<&'a KeyMemory>,
    /// The send (by its time) whose refusal's wait was said: the waits after it are the
    /// confirmation's (M5: the move grace was said as the throttle's).
    refusal_told: Option<crate::core::model::Time>,
}

impl OneShot for MailHooks<'_> {
    fn local(&mut self, action: &Action) -> bool {
        match action {
            Action::Persist(r) => {
                if r.state == State::Done {
                    let n = self.sizes.get(&r.id).copied().unwrap_or(0);
                    (self.report)(&r.id, n);
                }
                true
            }
            Action::PersistMessage(m) => {
                self.found_draft |= m.draft_id.is_some();
                if let (Some(mem), Some(imid)) = (self.memory, &m.internet_message_id) {
                    mem.remember(imid);
                }
                self.last = Some(m.clone());
                true
            }
            Action::Notify(_)
            | Action::Stat { .. }
            | Action::Hash { .. }
            | Action::After { .. }
            | Action::UpdateFile { .. }
            | Action::MarkReplaced { .. } => true,
            _ => false,
        }
    }

    fn spawned(&mut self, action: &Action) {
        match action {
            Action::SendDraft { .. } => self.sent_here = true,
            Action::CreateDraft { .. } => self.drafted_here = true,
            _ => {}
        }
    }

    fn done_early(&self) -> bool {
        self.keyed
            && self
                .last
                .as_ref()
                .is_some_and(|m| m.state == MessageState::Sent)
    }

    fn waiting(&mut self, wake_in_ms: u64, running: bool) {
        let Some(say) = self.say else {
            return;
        };
        let hold = match self.last.as_ref() {
            Some(m) if held(m) && !running => {
                let since = *self.hold_since.get_or_insert_with(std::time::Instant::now);
                let lasted = since.elapsed().as_millis() as u64;
                // Said from the second wait on: the first look in Sent Items missed.
                (lasted >= HOLD_QUIET_MS).then(|| {
                    hold_text(
                        &m.id,
                        self.grace_ms,
                        &clock_text(self.grace_ms.saturating_sub(lasted)),
                    )
                })
            }
            _ => None,
        };
        let refused_at = self.last.as_ref().and_then(|m| m.last_send_at);
        let refusal_told = refused_at.is_some() && self.refusal_told == refused_at;
        if let Some(text) = hold.or_else(|| {
            waiting_for(
                self.last.as_ref(),
                running,
                wake_in_ms,
                self.answer.as_ref(),
                refusal_told,
            )
        }) {
            if text.starts_with("waiting for ") {
                self.refusal_told = refused_at;
            }
            if self.said.as_deref() != Some(text.as_str()) {
                say(text.clone());
                self.said = Some(text);
            }
        }
    }

    fn answered(&mut self, input: &Input) {
        if let Some(a) = answer_of(input) {
            self.answer = Some(a);
        }
    }

    async fn clean_up(&mut self, _machine: &Machine) {
        delete_sessions(self.client, self.urls, self.user).await;
    }
}

async fn delete_sessions(client: &GraphClient, urls: &MemoryUrls, user: &str) {
    for url in urls.all() {
        let _ = client.delete_session(user, &url).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recipients_compare_as_sets_case_insensitively() {
        assert!(same_addresses(
            &v(&["Bob@Contoso.com", "ann@contoso.com"]),
            &v(&["ann@contoso.com", "bob@contoso.com", "bob@contoso.com"])
        ));
        assert!(!same_addresses(
            &v(&["bob@contoso.com"]),
            &v(&["carol@contoso.com"])
        ));
        assert!(!same_addresses(&v(&["bob@contoso.com"]), &v(&[])));
        assert_eq!(
            recipients_text(&v(&["a@x.com", "b@x.com"]), &[], &v(&["c@x.com"])),
            "a@x.com, b@x.com; bcc c@x.com"
        );
        assert_eq!(recipients_text(&[], &[], &[]), "no one");
    }
}
