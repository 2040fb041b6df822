//! A file that leaves a message (SPEC 8: "a file never leaves a message silently"), the
//! `failed_dir` move as the core's action, and a re-send after a send in doubt.

use super::super::*;
use super::move_grace_ms;
use std::path::{Path, PathBuf};

const SHA: &str = "abababababababababababababababababababababababababababababababab";

fn machine(batch: bool) -> Machine {
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
            subject: "{names}".into(),
            body: "Attached: {names}.".into(),
            send: true,
            max_message_size: 35_000_000,
            batch,
            batch_quiet_ms: if batch { 10_000 } else { 0 },
            batch_max_wait_ms: if batch { 60_000 } else { 0 },
            ..MailRule::default()
        }),
    };
    Machine::new(vec![rule], Policy::default())
}

fn outcome(m: &mut Machine, t: u64, id: &str, o: Outcome) -> Vec<Action> {
    m.handle(
        Time(t),
        Input::Outcome {
            id: id.to_owned(),
            outcome: o,
        },
    )
}

fn sends(out: &[Action]) -> bool {
    out.iter().any(|a| matches!(a, Action::SendDraft { .. }))
}

fn finds_in(out: &[Action], folder: MailFolder) -> bool {
    out.iter()
        .any(|a| matches!(a, Action::FindMessage { folder: f, .. } if *f == folder))
}

fn last_message(out: &[Action]) -> Option<MessageRecord> {
    out.iter().rev().find_map(|a| match a {
        Action::PersistMessage(r) => Some(r.clone()),
        _ => None,
    })
}

/// One file mailed alone up to its send, whose answer is lost, then not found in Sent Items:
/// unconfirmed. Returns the machine, the message as persisted, its file, and the time.
fn unconfirmed() -> (Machine, MessageRecord, Record, u64) {
    let mut m = machine(false);
    let out = super::tests::drop_version(&mut m, 1_000, "x.pdf", super::tests::stat(7, 10), SHA);
    let mid = out
        .iter()
        .find_map(|a| match a {
            Action::CreateDraft { id, .. } => Some(id.clone()),
            _ => None,
        })
        .expect("a draft");
    let out = outcome(
        &mut m,
        7_000,
        &mid,
        Outcome::CreateDraft(DraftOutcome::Created {
            draft_id: "d1".into(),
            internet_message_id: Some("<d1@x>".into()),
        }),
    );
    let eid = out
        .iter()
        .find_map(|a| match a {
            Action::Post { id, .. } => Some(id.clone()),
            _ => None,
        })
        .expect("posted");
    let out = outcome(
        &mut m,
        7_100,
        &eid,
        Outcome::Post(PostOutcome::Created {
            attachment_id: "a1".into(),
        }),
    );
    let file = out
        .iter()
        .find_map(|a| match a {
            Action::Persist(r) if r.state == State::Done => Some(r.clone()),
            _ => None,
        })
        .expect("done");
    let out = outcome(
        &mut m,
        7_200,
        &mid,
        Outcome::ListDraft(ListOutcome::Listed(vec!["a1".into()])),
    );
    assert!(sends(&out));
    outcome(
        &mut m,
        7_300,
        &mid,
        Outcome::Send(SendOutcome::Failed(Fault::Ambiguous(Failure::new(
            "Timeout", "t",
        )))),
    );
    let t = 7_300 + Policy::default().look_after_ms;
    let out = m.handle(Time(t), Input::Tick);
    assert!(finds_in(&out, MailFolder::SentItems));
    let out = outcome(
        &mut m,
        t,
        &mid,
        Outcome::Find(MailFolder::SentItems, FindOutcome::NotFound),
    );
    let rec = last_message(&out).expect("message");
    assert_eq!(rec.state, MessageState::Unconfirmed);
    (m, rec, file, t)
}

/// #21, the surviving mutant of `on_send` (its `earlier` guard on a sign-in or unreachable
/// refusal made false): a re-send after a send in doubt that is refused as unreachable must
/// search Sent Items again before any further send — the first send may have gone meanwhile.
#[test]
fn a_resend_after_a_send_in_doubt_refused_as_unreachable_searches_sent_items_before_sending_again()
{
    let (mut m, rec, file, t) = unconfirmed();
    let mid = rec.id.clone();
    m.handle(
        Time(t + 1),
        Input::RetryMessage {
            message: rec,
            records: vec![file],
        },
    );
    // Sent Items (not there), Drafts (still a draft), listed, sent again.
    let grace = 7_300 + move_grace_ms(Policy::default().look_after_ms);
    let out = m.handle(Time(grace), Input::Tick);
    assert!(finds_in(&out, MailFolder::SentItems), "{out:?}");
    let out = outcome(
        &mut m,
        grace + 1,
        &mid,
        Outcome::Find(MailFolder::SentItems, FindOutcome::NotFound),
    );
    assert!(finds_in(&out, MailFolder::Drafts), "{out:?}");
    outcome(
        &mut m,
        grace + 2,
        &mid,
        Outcome::Find(
            MailFolder::Drafts,
            FindOutcome::Found {
                id: "d1".into(),
                is_draft: true,
                internet_message_id: None,
            },
        ),
    );
    let out = outcome(
        &mut m,
        grace + 3,
        &mid,
        Outcome::ListDraft(ListOutcome::Listed(vec!["a1".into()])),
    );
    assert!(sends(&out), "the re-send: {out:?}");
    // Graph cannot be reached for it: nothing was sent by this request, but the first send
    // may have gone since; the message asks Sent Items again first.
    let out = outcome(
        &mut m,
        grace + 4,
        &mid,
        Outcome::Send(SendOutcome::Failed(Fault::Unreachable(Failure::new(
            "unreachable",
            "connection refused",
        )))),
    );
    assert!(!sends(&out), "{out:?}");
    let rec = last_message(&out).expect("the refusal is on record");
    assert!(rec.resend_if_draft && rec.may_have_been_sent(), "{rec:?}");
    let mut now = grace + 5;
    let mut searched = false;
    for _ in 0..40 {
        now += 10 * 60_000;
        let out = m.handle(Time(now), Input::Tick);
        assert!(
            searched || !sends(&out),
            "sent again without a Sent Items search: {out:?}"
        );
        if finds_in(&out, MailFolder::SentItems) {
            searched = true;
            break;
        }
    }
    assert!(searched, "Sent Items is searched again");
}

fn with_failed_dir(batch: bool) -> Machine {
    let mut m = machine(batch);
    let p = Policy {
        failed_dirs: vec!["mail".into()],
        ..Policy::default()
    };
    let rules = m.mappings.values().cloned().collect();
    m.handle(
        Time(0),
        Input::Config {
            mappings: rules,
            policy: p,
        },
    );
    m
}

fn moved_aside(out: &[Action]) -> Option<(String, PathBuf)> {
    out.iter().find_map(|a| match a {
        Action::ToFailedDir { id, path, .. } => Some((id.clone(), path.clone())),
        _ => None,
    })
}

/// Two files in one batch, drafted and both posted; the first POST refused for good. Returns
/// the machine, the message id, (failed entry, its record), the other entry, and the actions
/// of the refusal.
fn one_of_two_refused() -> (Machine, String, Record, String, Vec<Action>) {
    let mut m = with_failed_dir(true);
    super::tests::drop_version(&mut m, 1_000, "a.pdf", super::tests::stat(7, 10), SHA);
    super::tests::drop_version(&mut m, 7_000, "b.pdf", super::tests::stat(8, 10), SHA);
    let out = m.handle(Time(30_000), Input::Tick);
    let (mid, letter) = out
        .iter()
        .find_map(|a| match a {
            Action::CreateDraft { id, letter, .. } => Some((id.clone(), letter.clone())),
            _ => None,
        })
        .expect("one draft for the batch");
    assert_eq!(letter.subject, "a.pdf, b.pdf");
    let out = outcome(
        &mut m,
        30_100,
        &mid,
        Outcome::CreateDraft(DraftOutcome::Created {
            draft_id: "d1".into(),
            internet_message_id: None,
        }),
    );
    let posts: Vec<(String, PathBuf)> = out
        .iter()
        .filter_map(|a| match a {
            Action::Post { id, path, .. } => Some((id.clone(), path.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(posts.len(), 2, "{out:?}");
    let (a, b) = (posts[0].0.clone(), posts[1].0.clone());
    outcome(
        &mut m,
        30_200,
        &b,
        Outcome::Post(PostOutcome::Created {
            attachment_id: "att-b".into(),
        }),
    );
    let out = outcome(
        &mut m,
        30_300,
        &a,
        Outcome::Post(PostOutcome::Failed(Fault::Permanent(Failure::new(
            "ErrorInvalidAttachment",
            "refused",
        )))),
    );
    let rec = out
        .iter()
        .find_map(|x| match x {
            Action::Persist(r) if r.id == a && r.state == State::Failed => Some(r.clone()),
            _ => None,
        })
        .expect("the file failed");
    (m, mid, rec, b, out)
}

/// A retried message looking for its draft again (`redraft`): not in Sent Items, still in
/// Drafts. The actions of both answers.
fn draft_found_again(m: &mut Machine, t: u64, mid: &str) -> Vec<Action> {
    let mut out = outcome(
        m,
        t,
        mid,
        Outcome::Find(MailFolder::SentItems, FindOutcome::NotFound),
    );
    out.extend(outcome(
        m,
        t + 1,
        mid,
        Outcome::Find(
            MailFolder::Drafts,
            FindOutcome::Found {
                id: "d1".into(),
                is_draft: true,
                internet_message_id: None,
            },
        ),
    ));
    out
}

/// Issue 20, item 4: the move of a failed file into `failed_dir` is the core's action, and
/// where it went is on its record; its message fails only once the move is answered.
#[test]
fn a_failed_file_is_moved_to_failed_dir_by_the_core_and_its_record_says_where() {
    let (mut m, mid, rec, _, out) = one_of_two_refused();
    let (id, path) = moved_aside(&out).expect("the core asks for the move");
    assert_eq!(
        (id.as_str(), path.as_path()),
        (rec.id.as_str(), Path::new("/mail/a.pdf"))
    );
    // Its message fails at once (nothing of the file is on the draft), the move under way.
    assert!(
        out.iter().any(|a| matches!(a, Action::PersistMessage(r) if r.id == mid && r.state == MessageState::Failed)),
        "{out:?}"
    );
    let to = PathBuf::from("/mail/failed/a.pdf");
    let mut there = rec.file;
    there.ctime_ns = 99;
    let out = outcome(
        &mut m,
        30_400,
        &rec.id,
        Outcome::ToFailedDir(MoveOutcome::Moved {
            to: to.clone(),
            file: there,
        }),
    );
    let stored = out
        .iter()
        .find_map(|a| match a {
            Action::Persist(r) if r.id == rec.id => Some(r.clone()),
            _ => None,
        })
        .expect("where it went is on record");
    assert_eq!(stored.failed_to.as_deref(), Some(to.as_path()));
    assert_eq!(stored.state, State::Failed);
    let _ = mid;
    // Asked once: nothing more of it.
    assert!(moved_aside(&out).is_none());
}

/// Without a `failed_dir`, nothing is asked and the message fails at once (as before).
#[test]
fn without_a_failed_dir_no_move_is_asked() {
    let mut m = machine(true);
    super::tests::drop_version(&mut m, 1_000, "a.pdf", super::tests::stat(7, 10), SHA);
    let out = m.handle(Time(30_000), Input::Tick);
    let mid = out
        .iter()
        .find_map(|a| match a {
            Action::CreateDraft { id, .. } => Some(id.clone()),
            _ => None,
        })
        .expect("draft");
    let out = outcome(
        &mut m,
        30_100,
        &mid,
        Outcome::CreateDraft(DraftOutcome::Created {
            draft_id: "d1".into(),
            internet_message_id: None,
        }),
    );
    let a = out
        .iter()
        .find_map(|x| match x {
            Action::Post { id, .. } => Some(id.clone()),
            _ => None,
        })
        .expect("posted");
    let out = outcome(
        &mut m,
        30_300,
        &a,
        Outcome::Post(PostOutcome::Failed(Fault::Permanent(Failure::new(
            "ErrorInvalidAttachment",
            "refused",
        )))),
    );
    assert!(moved_aside(&out).is_none());
    assert!(out
        .iter()
        .any(|x| matches!(x, Action::PersistMessage(r) if r.state == MessageState::Failed)));
}

/// The failed message retried: its file is taken back from `failed_dir` before anything else
/// (never found gone, canceled, and the message sent without it), then attached to the draft.
#[test]
fn retry_of_the_message_takes_its_file_back_from_failed_dir_before_attaching_it() {
    let (mut m, mid, rec, b, refused) = one_of_two_refused();
    let to = PathBuf::from("/mail/failed/a.pdf");
    let out = outcome(
        &mut m,
        30_400,
        &rec.id,
        Outcome::ToFailedDir(MoveOutcome::Moved {
            to: to.clone(),
            file: rec.file,
        }),
    );
    let failed = last_message(&refused).expect("message failed");
    let aside = out
        .iter()
        .find_map(|a| match a {
            Action::Persist(r) if r.id == rec.id => Some(r.clone()),
            _ => None,
        })
        .expect("record");
    let other = m.record(&b).cloned();
    let mut files = vec![aside];
    files.extend(other);
    let out = m.handle(
        Time(40_000),
        Input::RetryMessage {
            message: failed,
            records: files,
        },
    );
    let back = out.iter().find_map(|a| match a {
        Action::FromFailedDir { id, from, path, .. } => {
            Some((id.clone(), from.clone(), path.clone()))
        }
        _ => None,
    });
    assert_eq!(
        back,
        Some((rec.id.clone(), to, PathBuf::from("/mail/a.pdf"))),
        "{out:?}"
    );
    assert!(!out.iter().any(|a| matches!(a, Action::Post { .. })));
    let mut now_file = rec.file;
    now_file.ctime_ns = 123;
    let out = outcome(
        &mut m,
        40_100,
        &rec.id,
        Outcome::FromFailedDir(MoveOutcome::Moved {
            to: PathBuf::from("/mail/a.pdf"),
            file: now_file,
        }),
    );
    let back = out
        .iter()
        .find_map(|a| match a {
            Action::Persist(r) if r.id == rec.id => Some(r.clone()),
            _ => None,
        })
        .expect("on record: back");
    assert_eq!(back.failed_to, None);
    assert_eq!(back.file, now_file, "its stat there (a rename moves ctime)");
    let mut out = out;
    out.extend(draft_found_again(&mut m, 40_200, &mid));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Post { id, target, .. } if *id == rec.id && target.item_id == "d1")),
        "attached to its message's draft: {out:?}"
    );
}

/// Taking it back refused (gone from `failed_dir`, a file at its path): it fails again,
/// saying why, and its message fails again — never sent without it.
#[test]
fn a_file_that_cannot_be_taken_back_fails_its_message_again_never_sent_without_it() {
    let (mut m, mid, rec, b, refused) = one_of_two_refused();
    let out = outcome(
        &mut m,
        30_400,
        &rec.id,
        Outcome::ToFailedDir(MoveOutcome::Moved {
            to: PathBuf::from("/mail/failed/a.pdf"),
            file: rec.file,
        }),
    );
    let failed = last_message(&refused).expect("message failed");
    let aside = out
        .iter()
        .find_map(|a| match a {
            Action::Persist(r) if r.id == rec.id => Some(r.clone()),
            _ => None,
        })
        .expect("record");
    let mut files = vec![aside];
    files.extend(m.record(&b).cloned());
    m.handle(
        Time(40_000),
        Input::RetryMessage {
            message: failed,
            records: files,
        },
    );
    let out = outcome(
        &mut m,
        40_100,
        &rec.id,
        Outcome::FromFailedDir(MoveOutcome::Refused(Failure::new(
            "failedDirGone",
            "/mail/failed/a.pdf is not there any more",
        ))),
    );
    let again = out
        .iter()
        .find_map(|a| match a {
            Action::Persist(r) if r.id == rec.id => Some(r.clone()),
            _ => None,
        })
        .expect("record");
    assert_eq!(again.state, State::Failed);
    let why = again.error.expect("why").message;
    assert!(
        why.contains("could not be taken back") && why.contains("not there any more"),
        "{why}"
    );
    let mut out = out;
    out.extend(draft_found_again(&mut m, 40_200, &mid));
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::SendDraft { .. } | Action::ListDraft { .. })));
    let failed = last_message(&out).expect("the message");
    assert_eq!(failed.state, MessageState::Failed, "{out:?}");
    assert_eq!(failed.files.len(), 2, "it keeps its file: {failed:?}");
}

/// A report that its path is empty (a scan, the watcher seeing the move) never cancels a
/// retried file that is in `failed_dir`: only its move back says whether it can come.
/// `rec`'s file moved into `failed_dir` (answered at 30,400), then `retry` of it at 40,000.
fn moved_aside_then_retried(m: &mut Machine, rec: &Record) {
    let out = outcome(
        m,
        30_400,
        &rec.id,
        Outcome::ToFailedDir(MoveOutcome::Moved {
            to: PathBuf::from("/mail/failed/a.pdf"),
            file: rec.file,
        }),
    );
    let aside = out
        .iter()
        .find_map(|a| match a {
            Action::Persist(r) if r.id == rec.id => Some(r.clone()),
            _ => None,
        })
        .expect("record");
    m.handle(
        Time(40_000),
        Input::Retry {
            records: vec![aside],
        },
    );
}

#[test]
fn a_retried_file_in_failed_dir_is_not_canceled_by_its_path_being_empty() {
    let (mut m, _mid, rec, _, _) = one_of_two_refused();
    moved_aside_then_retried(&mut m, &rec);
    let out = m.handle(
        Time(40_001),
        Input::Gone {
            mapping: "mail".into(),
            path: PathBuf::from("/mail/a.pdf"),
        },
    );
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Persist(r) if r.id == rec.id && r.cancel_requested)),
        "{out:?}"
    );
    let out = outcome(
        &mut m,
        40_100,
        &rec.id,
        Outcome::FromFailedDir(MoveOutcome::Moved {
            to: PathBuf::from("/mail/a.pdf"),
            file: rec.file,
        }),
    );
    assert!(
        !out.iter().any(
            |a| matches!(a, Action::Persist(r) if r.id == rec.id && r.state == State::Canceled)
        ),
        "{out:?}"
    );
}

#[test]
fn a_report_of_the_move_into_failed_dir_that_comes_after_the_move_back_cancels_nothing() {
    // Seeds 116122, 313775: the watcher's report of the agent's own move into `failed_dir` was
    // answered after the retried file had come back; taken at its word, it canceled the file.
    let (mut m, _mid, rec, _, _) = one_of_two_refused();
    moved_aside_then_retried(&mut m, &rec);
    let back = FileStat {
        ctime_ns: rec.file.ctime_ns + 1,
        ..rec.file
    };
    outcome(
        &mut m,
        40_100,
        &rec.id,
        Outcome::FromFailedDir(MoveOutcome::Moved {
            to: PathBuf::from("/mail/a.pdf"),
            file: back,
        }),
    );
    let out = m.handle(
        Time(40_200),
        Input::Gone {
            mapping: "mail".into(),
            path: PathBuf::from("/mail/a.pdf"),
        },
    );
    let cancels = |out: &[Action]| {
        out.iter()
            .any(|a| matches!(a, Action::Persist(r) if r.id == rec.id && r.cancel_requested))
    };
    assert!(!cancels(&out), "{out:?}");
    assert!(
        out.iter().any(
            |a| matches!(a, Action::Stat { path } if path.as_path() == Path::new("/mail/a.pdf"))
        ),
        "the path is looked at again: {out:?}"
    );
    // There, as it came back: nothing is canceled.
    let out = m.handle(
        Time(40_201),
        Input::Stat {
            path: PathBuf::from("/mail/a.pdf"),
            stat: Some(back),
        },
    );
    assert!(!cancels(&out), "{out:?}");
    // Really gone later: canceled once the look again says so.
    let out = m.gone_at(50_000, "mail", "/mail/a.pdf");
    assert!(cancels(&out), "{out:?}");
}
