//! `retry` of a message Graph refused for its size (GRAPH.md §13, "Size"): never sent as it
//! was; its draft deleted and its files made into new messages under `max_message_size` as it
//! is now and under the size refused, each file in exactly one.

use super::super::*;
use std::collections::BTreeMap;
use std::path::Path;

const SHA: &str = "abababababababababababababababababababababababababababababababab";

fn machine(max_message_size: u64) -> Machine {
    Machine::new(vec![rule(max_message_size)], Policy::default())
}

fn rule(max_message_size: u64) -> MappingRule {
    MappingRule {
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
            subject: "Batch of {count}".into(),
            body: "{names}".into(),
            send: true,
            max_message_size,
            batch: true,
            batch_quiet_ms: 30_000,
            batch_max_wait_ms: 120_000,
            ..MailRule::default()
        }),
    }
}

/// A stand-in mailbox answering the machine's requests: drafts with their attachments, the
/// sends it took (draft, the entries on it), and the drafts deleted. `refuse` names how a
/// request is refused for its size: the next send, or the attachment (POST) that would put
/// more than `limit` bytes (raw) on one draft.
#[derive(Default)]
struct Mailbox {
    drafts: BTreeMap<String, Vec<(String, String)>>,
    made: u32,
    sent: Vec<(String, String, Vec<String>)>,
    deleted: Vec<String>,
    refuse_next_send: bool,
    limit: Option<u64>,
    sizes: BTreeMap<String, u64>,
    /// A POST of this entry is held back, unanswered, in `held` (a request in flight).
    hold: Option<String>,
    held: Vec<Action>,
    /// Each message's draft, as made.
    draft_of: BTreeMap<String, String>,
    /// Drafts the user sent from Outlook: in Sent Items now.
    by_hand: Vec<String>,
}

impl Mailbox {
    /// Message `id`'s draft by its marker in `folder`.
    fn find(&self, id: &str, folder: MailFolder) -> FindOutcome {
        let d = self.draft_of.get(id).cloned().unwrap_or_default();
        match folder {
            MailFolder::SentItems if self.by_hand.contains(&d) => FindOutcome::Found {
                id: format!("sent-{d}"),
                is_draft: false,
                internet_message_id: None,
            },
            MailFolder::Drafts if self.drafts.contains_key(&d) => FindOutcome::Found {
                id: d,
                is_draft: true,
                internet_message_id: None,
            },
            _ => FindOutcome::NotFound,
        }
    }

    /// `retry` of message `msg` at `t`, its draft's looks answered from this mailbox: every
    /// action but those looks, in order (the split's writes among them).
    fn retry(
        &self,
        m: &mut Machine,
        t: u64,
        msg: &MessageRecord,
        records: &[Record],
    ) -> Vec<Action> {
        let mut out = m.handle(
            Time(t),
            Input::RetryMessage {
                message: msg.clone(),
                records: records.to_vec(),
            },
        );
        let mut all = Vec::new();
        for k in 1.. {
            let Some(i) = out
                .iter()
                .position(|a| matches!(a, Action::FindMessage { .. }))
            else {
                all.extend(out);
                return all;
            };
            let Action::FindMessage { id, folder, .. } = out.remove(i) else {
                unreachable!()
            };
            all.append(&mut out);
            let o = self.find(&id, folder);
            out = m.handle(
                Time(t + k),
                Input::Outcome {
                    id,
                    outcome: Outcome::Find(folder, o),
                },
            );
        }
        all
    }

    /// The user sends draft `d` from Outlook, as it is.
    fn send_by_hand(&mut self, d: &str) {
        let files = self.drafts.remove(d).unwrap_or_default();
        self.sent.push((
            "by hand".into(),
            d.to_owned(),
            files.into_iter().map(|(e, _)| e).collect(),
        ));
        self.by_hand.push(d.to_owned());
    }
}

impl Mailbox {
    /// Answer every request of `out` (and of what those answers bring) until none is left,
    /// ticking at each asked wake-up up to `until`.
    fn serve(&mut self, m: &mut Machine, mut t: u64, out: Vec<Action>, until: u64) -> u64 {
        let mut queue: std::collections::VecDeque<Action> = out.into();
        let mut wake = None;
        loop {
            let Some(a) = queue.pop_front() else {
                match wake.take() {
                    Some(w) if w <= until => {
                        t = t.max(w);
                        queue.extend(m.handle(Time(t), Input::Tick));
                        continue;
                    }
                    _ => return t,
                }
            };
            if matches!(&a, Action::Post { id, .. } if self.hold.as_ref() == Some(id)) {
                self.hold = None;
                self.held.push(a);
                continue;
            }
            t += 1;
            let (id, outcome) = match a {
                Action::WakeAt(w) => {
                    wake = Some(w.0);
                    continue;
                }
                Action::CreateDraft { id, .. } => {
                    self.made += 1;
                    let d = format!("d{}", self.made);
                    self.drafts.insert(d.clone(), Vec::new());
                    self.draft_of.insert(id.clone(), d.clone());
                    (
                        id,
                        Outcome::CreateDraft(DraftOutcome::Created {
                            draft_id: d,
                            internet_message_id: None,
                        }),
                    )
                }
                Action::Post { id, target, .. } => {
                    let on = self.drafts.entry(target.item_id.clone()).or_default();
                    let size = |e: &String| self.sizes.get(e).copied().unwrap_or(0);
                    let used: u64 = on.iter().map(|(e, _)| size(e)).sum();
                    let o = if self.limit.is_some_and(|l| used + size(&id) > l) {
                        PostOutcome::Failed(Fault::Permanent(Failure::new(
                            "ErrorMessageSizeExceeded",
                            "The message exceeds the maximum supported size.",
                        )))
                    } else {
                        let att = format!("att-{id}-{}", target.item_id);
                        on.push((id.clone(), att.clone()));
                        PostOutcome::Created { attachment_id: att }
                    };
                    (id, Outcome::Post(o))
                }
                Action::ListDraft { id, draft_id, .. } => {
                    let atts = self.drafts[&draft_id].iter().map(|(_, a)| a.clone());
                    (id, Outcome::ListDraft(ListOutcome::Listed(atts.collect())))
                }
                Action::SendDraft { id, draft_id, .. } => {
                    let o = if std::mem::take(&mut self.refuse_next_send) {
                        SendOutcome::Failed(Fault::Permanent(Failure::new(
                            "ErrorMessageSizeExceeded",
                            "The message exceeds the maximum supported size., Cannot submit \
                             the message",
                        )))
                    } else {
                        let files = self.drafts.remove(&draft_id).unwrap_or_default();
                        self.sent.push((
                            id.clone(),
                            draft_id,
                            files.into_iter().map(|(e, _)| e).collect(),
                        ));
                        SendOutcome::Sent
                    };
                    (id, Outcome::Send(o))
                }
                Action::DeleteDraft { id, draft_id, .. } => {
                    self.drafts.remove(&draft_id);
                    self.deleted.push(draft_id);
                    (id, Outcome::DeleteDraft(DeleteOutcome::Deleted))
                }
                // A message's draft by its marker: a sent copy in Sent Items (a draft sent
                // by hand), the draft in Drafts.
                Action::FindMessage { id, folder, .. } => {
                    let o = self.find(&id, folder);
                    (id, Outcome::Find(folder, o))
                }
                // `failed_dir`: moved as asked.
                Action::ToFailedDir { id, path, file, .. } => {
                    let to = Path::new("/failed").join(path.file_name().unwrap_or_default());
                    (id, Outcome::ToFailedDir(MoveOutcome::Moved { to, file }))
                }
                Action::FromFailedDir { id, path, file, .. } => (
                    id,
                    Outcome::FromFailedDir(MoveOutcome::Moved { to: path, file }),
                ),
                Action::Persist(_)
                | Action::PersistMessage(_)
                | Action::Notify(_)
                | Action::After { .. } => continue,
                other => panic!("not expected here: {other:?}"),
            };
            queue.extend(m.handle(Time(t), Input::Outcome { id, outcome }));
        }
    }
}

/// Three files of `size` bytes dropped into the batch mapping of `m`, ids in order.
fn drop_three(m: &mut Machine, size: u64) -> (Vec<Action>, Vec<String>) {
    let mut out = Vec::new();
    for (i, name) in ["a.bin", "b.bin", "c.bin"].into_iter().enumerate() {
        out.extend(super::tests::drop_version(
            m,
            1_000 + i as u64 * 10_000,
            name,
            super::tests::stat(10 + i as u64, size),
            SHA,
        ));
    }
    let mut ids: Vec<(u64, String)> = m
        .active
        .values()
        .map(|a| (a.rec.seq, a.rec.id.clone()))
        .collect();
    ids.sort();
    // (Their looks and hashes were answered by `drop_version`.)
    out.retain(|a| !matches!(a, Action::Stat { .. } | Action::Hash { .. }));
    (out, ids.into_iter().map(|(_, id)| id).collect())
}

/// The failed message, as the machine holds it, with the records of its files.
fn failed(m: &Machine) -> (MessageRecord, Vec<Record>) {
    let msg = m
        .messages()
        .find(|r| r.state == MessageState::Failed)
        .cloned()
        .expect("a failed message");
    let records = msg
        .files
        .iter()
        .filter_map(|f| {
            m.active
                .get(f)
                .map(|a| a.rec.clone())
                .or_else(|| m.messages[&msg.id].finished.get(f).cloned())
        })
        .collect();
    (msg, records)
}

/// Each of `files` in exactly one sent message, and no message sent from draft `refused`.
fn each_once(mb: &Mailbox, files: &[String], refused: &str) {
    let mut seen: Vec<String> = mb.sent.iter().flat_map(|s| s.2.clone()).collect();
    seen.sort();
    let mut want = files.to_vec();
    want.sort();
    assert_eq!(
        seen, want,
        "each file in exactly one sent message: {:?}",
        mb.sent
    );
    assert!(
        mb.sent.iter().all(|s| s.1 != refused),
        "the refused draft is never sent: {:?}",
        mb.sent
    );
    assert!(mb.deleted.iter().any(|d| d == refused), "{:?}", mb.deleted);
}

#[test]
fn a_send_refused_for_size_is_split_again_on_retry_under_the_size_refused() {
    // The config's limit is far above what Graph refused: the refusal is what teaches it.
    let mut m = machine(35_000_000);
    let (out, files) = drop_three(&mut m, 100_000);
    let mut mb = Mailbox {
        refuse_next_send: true,
        ..Mailbox::default()
    };
    let t = mb.serve(&mut m, 30_000, out, 200_000);
    assert!(mb.sent.is_empty(), "{:?}", mb.sent);
    let (msg, records) = failed(&m);
    assert_eq!(msg.files.len(), 3);
    assert!(msg.refused_for_size(), "{msg:?}");
    let refused = msg.draft_id.clone().expect("its draft");
    let out = mb.retry(&mut m, t + 1_000, &msg, &records);
    let split = out
        .iter()
        .find_map(|a| match a {
            Action::PersistMessage(r) if r.id == msg.id && r.state == MessageState::Failed => {
                Some(r.clone())
            }
            _ => None,
        })
        .expect("the refused message ends");
    assert_eq!(
        split.error.as_ref().map(|e| e.code.as_str()),
        Some(SPLIT_AGAIN),
        "{split:?}"
    );
    assert!(split.files.is_empty(), "{split:?}");
    mb.serve(&mut m, t + 1_000, out, t + 400_000);
    each_once(&mb, &files, &refused);
    // Under the size refused: never the three together again.
    assert!(
        mb.sent.len() >= 2 && mb.sent.iter().all(|s| s.2.len() < 3),
        "{:?}",
        mb.sent
    );
    assert!(m.quiescent());
    // A retry of the message split again does nothing.
    let (again, _) = (split.clone(), ());
    let out = m.handle(
        Time(t + 300_000),
        Input::RetryMessage {
            message: again,
            records: Vec::new(),
        },
    );
    assert!(
        !out.iter().any(|a| matches!(a, Action::CreateDraft { .. })),
        "{out:?}"
    );
}

#[test]
fn an_attachment_refused_for_size_is_split_again_under_a_lowered_max_message_size() {
    // Graph's limit holds two of the files; the config said 35 MB, then is lowered.
    let mut m = machine(35_000_000);
    let (out, files) = drop_three(&mut m, 100_000);
    let mut mb = Mailbox {
        limit: Some(250_000),
        sizes: files.iter().map(|f| (f.clone(), 100_000)).collect(),
        ..Mailbox::default()
    };
    let t = mb.serve(&mut m, 30_000, out, 200_000);
    assert!(mb.sent.is_empty(), "{:?}", mb.sent);
    let (msg, records) = failed(&m);
    assert!(msg.refused_for_size(), "{msg:?}");
    let refused = msg.draft_id.clone().expect("its draft");
    // Offline, as `outbox retry` writes it with no agent running; the next start takes it.
    let mut stored = msg.clone();
    stored.retried();
    assert!(
        stored.resplit && stored.state == MessageState::Drafting,
        "{stored:?}"
    );
    let mut recs = records.clone();
    for r in &mut recs {
        r.retried(Time(t));
    }
    let mut m = Machine::new(vec![rule(300_000)], Policy::default());
    let out = m.handle(
        Time(t + 1_000),
        Input::Start {
            records: recs,
            with_url: Vec::new(),
            messages: vec![stored],
        },
    );
    assert!(
        !out.iter().any(|a| matches!(a, Action::Post { .. })),
        "nothing goes on the refused draft: {out:?}"
    );
    mb.serve(&mut m, t + 1_000, out, t + 400_000);
    each_once(&mb, &files, &refused);
    assert_eq!(mb.sent.len(), 2, "{:?}", mb.sent);
    assert!(m.quiescent());
}

#[test]
fn a_crash_after_the_split_was_written_and_before_its_files_leaves_no_file_on_the_old_draft() {
    let mut m = machine(35_000_000);
    let (out, files) = drop_three(&mut m, 100_000);
    let mut mb = Mailbox {
        refuse_next_send: true,
        ..Mailbox::default()
    };
    let t = mb.serve(&mut m, 30_000, out, 200_000);
    let (msg, records) = failed(&m);
    let refused = msg.draft_id.clone().expect("its draft");
    let out = mb.retry(&mut m, t + 1_000, &msg, &records);
    // What reached the ledger: the message's write, not its files' (still done on the
    // refused draft, naming the message).
    let split = out
        .iter()
        .find_map(|a| match a {
            Action::PersistMessage(r) if r.id == msg.id && r.state == MessageState::Failed => {
                Some(r.clone())
            }
            _ => None,
        })
        .expect("the message written split, before its files");
    assert!(
        split.files.is_empty() && split.draft_id.is_some(),
        "{split:?}"
    );
    assert!(records
        .iter()
        .all(|r| r.state == State::Done && r.message.is_some()));
    let mut m = machine(35_000_000);
    let out = m.handle(
        Time(t + 2_000),
        Input::Start {
            records,
            with_url: Vec::new(),
            messages: vec![split],
        },
    );
    mb.serve(&mut m, t + 2_000, out, t + 400_000);
    each_once(&mb, &files, &refused);
    assert!(m.quiescent());
}

/// A crash after the split of a message whose attachment Graph refused, before its files'
/// writes: the file refused (failed) is taken with the done ones, retried, and each is mailed
/// once, and so is a file of it the user canceled; one canceled into `failed_dir` (which the
/// split leaves out, still naming the message) stays out. Mutants of `start_gave_way` it kills:
/// `== SPLIT_AGAIN` → `!=` and `Failed || (Canceled ..)` → `&&` (the failed file never
/// mailed); `!= Done` → `==` (not retried: the canceled file kept its cancel); `split && (..)`
/// → `||`, `Canceled && failed_to.is_none()` → `||` and `!taken || !gave_way` → `&&` (the
/// file in `failed_dir` taken back).
#[test]
fn a_crash_after_the_split_of_a_message_refused_an_attachment_mails_its_failed_file_too() {
    let mut m = machine(35_000_000);
    let (out, files) = drop_three(&mut m, 100_000);
    let mut mb = Mailbox {
        limit: Some(250_000),
        sizes: files.iter().map(|f| (f.clone(), 100_000)).collect(),
        ..Mailbox::default()
    };
    let t = mb.serve(&mut m, 30_000, out, 200_000);
    let (msg, mut records) = failed(&m);
    assert!(
        records.iter().any(|r| r.state == State::Failed),
        "{records:?}"
    );
    let refused = msg.draft_id.clone().expect("its draft");
    let out = mb.retry(&mut m, t + 1_000, &msg, &records);
    let split = out
        .iter()
        .find_map(|a| match a {
            Action::PersistMessage(r) if r.id == msg.id && r.state == MessageState::Failed => {
                Some(r.clone())
            }
            _ => None,
        })
        .expect("the message written split, before its files");
    let mut canceled = records[0].clone();
    canceled.id = "canceled".into();
    canceled.path = "/mail/d.bin".into();
    canceled.name = "d.bin".into();
    canceled.seq = 99;
    canceled.state = State::Canceled;
    canceled.attachment_id = None;
    canceled.failed_to = Some("/failed/d.bin".into());
    canceled.error = Some(Failure::new("canceled", "canceled by the user"));
    records.push(canceled);
    // And one the user canceled with no `failed_dir`: the split took it (retried), so it is
    // mailed with the others.
    let mut dropped = records[0].clone();
    dropped.id = "dropped".into();
    dropped.path = "/mail/e.bin".into();
    dropped.name = "e.bin".into();
    dropped.seq = 98;
    dropped.state = State::Canceled;
    dropped.attachment_id = None;
    dropped.cancel_requested = true;
    dropped.error = Some(Failure::new("canceled", "canceled by the user"));
    records.push(dropped);
    let mut files = files;
    files.push("dropped".into());
    // The config's limit lowered under what Graph takes (this run has not learnt it).
    let mut m = Machine::new(vec![rule(300_000)], Policy::default());
    let out = m.handle(
        Time(t + 2_000),
        Input::Start {
            records,
            with_url: Vec::new(),
            messages: vec![split],
        },
    );
    mb.serve(&mut m, t + 2_000, out, t + 400_000);
    each_once(&mb, &files, &refused);
    assert!(m.quiescent());
}

/// A file that fits `max_message_size` when it settles, alone over it once a reload lowered
/// it, fails with the config's limit named, not a size Graph refused (none was): mutant
/// `make_messages` `limit < max_message_size` → `<=`.
#[test]
fn a_file_alone_over_a_lowered_limit_is_told_the_configs_limit_not_a_refusal() {
    let mut m = machine(35_000_000);
    let mut out =
        super::tests::drop_version(&mut m, 1_000, "a.bin", super::tests::stat(10, 100_000), SHA);
    m.handle(
        Time(2_000),
        Input::Config {
            mappings: vec![rule(50_000)],
            policy: Policy::default(),
        },
    );
    for t in [40_000, 130_000, 200_000] {
        out.extend(m.handle(Time(t), Input::Tick));
    }
    let why = out
        .iter()
        .find_map(|a| match a {
            Action::Persist(r) if r.state == State::Failed => r.error.clone(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("failed: {out:?}"));
    assert_eq!(why.code, MESSAGE_TOO_LARGE, "{why:?}");
    assert!(
        why.message.contains("cannot be mailed") && !why.message.contains("Graph refused"),
        "{why:?}"
    );
}

/// `retry` of a message refused for its size while a file of it still has its POST on the
/// refused draft in flight: split again only once that answers (`resplit_waits`), then each
/// file mailed once. Mutant `retry_message` `!self.resplit_waits(..)` → `resplit_waits(..)`,
/// which split it at once, the POST still out.
#[test]
fn a_retry_of_a_message_refused_for_size_waits_for_a_post_in_flight_before_the_split() {
    let mut m = machine(35_000_000);
    let (out, files) = drop_three(&mut m, 100_000);
    let mut mb = Mailbox {
        limit: Some(150_000),
        sizes: files.iter().map(|f| (f.clone(), 100_000)).collect(),
        hold: Some(files[2].clone()),
        ..Mailbox::default()
    };
    let t = mb.serve(&mut m, 30_000, out, 200_000);
    assert_eq!(mb.held.len(), 1, "c.bin's POST is out");
    let (msg, records) = failed(&m);
    let refused = msg.draft_id.clone().expect("its draft");
    let mut out = m.handle(
        Time(t + 1_000),
        Input::RetryMessage {
            message: msg.clone(),
            records,
        },
    );
    assert!(
        !out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.error.as_ref().is_some_and(|e| e.code == SPLIT_AGAIN)
        )),
        "not split while a POST is out: {out:?}"
    );
    let mut queue = std::mem::take(&mut mb.held);
    queue.append(&mut out);
    mb.limit = None;
    mb.serve(&mut m, t + 1_000, queue, t + 400_000);
    assert!(
        m.messages()
            .any(|r| r.id == msg.id && r.error.as_ref().is_some_and(|e| e.code == SPLIT_AGAIN)),
        "split once it answered"
    );
    each_once(&mb, &files, &refused);
    assert!(m.quiescent());
}

/// `retry` of a message whose attachment Graph refused for its size, in a mapping with a
/// `failed_dir`: the refused file, failed and moved there, is taken back and mailed once with
/// the others. Mutant `resplit` `Canceled && failed_to.is_some()` → `||`, which left every
/// file with a `failed_to` out of the split (in `failed_dir`, in no message, never mailed).
#[test]
fn a_split_again_takes_the_refused_file_back_from_failed_dir_and_mails_it() {
    let mut m = Machine::new(
        vec![rule(35_000_000)],
        Policy {
            failed_dirs: vec!["mail".into()],
            ..Policy::default()
        },
    );
    let (out, files) = drop_three(&mut m, 100_000);
    let mut mb = Mailbox {
        limit: Some(250_000),
        sizes: files.iter().map(|f| (f.clone(), 100_000)).collect(),
        ..Mailbox::default()
    };
    let t = mb.serve(&mut m, 30_000, out, 200_000);
    let (msg, records) = failed(&m);
    assert!(
        records
            .iter()
            .any(|r| r.state == State::Failed && r.failed_to.is_some()),
        "{records:?}"
    );
    let refused = msg.draft_id.clone().expect("its draft");
    let out = m.handle(
        Time(t + 1_000),
        Input::RetryMessage {
            message: msg,
            records,
        },
    );
    mb.limit = None;
    mb.serve(&mut m, t + 1_000, out, t + 400_000);
    each_once(&mb, &files, &refused);
    assert!(m.quiescent());
}

/// A draft an attachment was refused on for its size, sent from Outlook by the user as it was
/// (the files already on it), then `retry` of its message: it went, so the files on it are not
/// mailed again; only the one refused goes, in a new message. (Before, the retry split every
/// file into new messages without a look: the files on the hand-sent draft were mailed twice.)
#[test]
fn a_draft_refused_for_size_and_sent_by_hand_is_not_mailed_again_by_the_split() {
    let mut m = machine(35_000_000);
    let (out, files) = drop_three(&mut m, 100_000);
    let mut mb = Mailbox {
        limit: Some(250_000),
        sizes: files.iter().map(|f| (f.clone(), 100_000)).collect(),
        ..Mailbox::default()
    };
    let t = mb.serve(&mut m, 30_000, out, 200_000);
    let (msg, records) = failed(&m);
    assert!(msg.refused_for_size(), "{msg:?}");
    let draft = msg.draft_id.clone().expect("its draft");
    assert_eq!(mb.drafts[&draft].len(), 2, "two files fit on it");
    mb.send_by_hand(&draft);
    let out = mb.retry(&mut m, t + 1_000, &msg, &records);
    mb.serve(&mut m, t + 1_000, out, t + 900_000);
    let mut seen: Vec<String> = mb.sent.iter().flat_map(|s| s.2.clone()).collect();
    seen.sort();
    let mut want = files.clone();
    want.sort();
    assert_eq!(seen, want, "each file mailed once: {:?}", mb.sent);
    assert_eq!(mb.sent.len(), 2, "{:?}", mb.sent);
    assert!(mb.deleted.is_empty(), "{:?}", mb.deleted);
    assert!(m.quiescent());
}
