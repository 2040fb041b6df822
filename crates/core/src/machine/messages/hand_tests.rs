//! A person sends the agent's draft from Outlook while the agent works on it (issue 20): the
//! draft leaves Drafts at once, and its copy shows in Sent Items only after Exchange's move.

use super::super::*;
use super::key_tests::{answer, drop, key_asked, keyed_machine};
use super::move_grace_ms;
use super::restore_tests::{finds, mid_attach};
use crate::machine::test_support::{look_found, session_deleted};

fn find(m: &mut Machine, t: u64, mid: &str, folder: MailFolder, f: FindOutcome) -> Vec<Action> {
    m.handle(
        Time(t),
        Input::Outcome {
            id: mid.to_owned(),
            outcome: Outcome::Find(folder, f),
        },
    )
}

/// A sent copy `id` of draft `d1` (its `internetMessageId` kept).
pub(super) fn sent_copy(id: &str) -> FindOutcome {
    FindOutcome::Found {
        id: id.into(),
        is_draft: false,
        internet_message_id: Some("<d1@x>".into()),
    }
}

pub(super) fn drafts_made(out: &[Action]) -> bool {
    out.iter().any(|a| matches!(a, Action::CreateDraft { .. }))
}

fn grace() -> u64 {
    move_grace_ms(Policy::default().look_after_ms)
}

/// The machine started at 100,000 with the ledger of `mid_attach` (its draft `d1` made, its
/// file's POST in doubt) and `more` records; the message looks for its draft again.
fn started(more: Vec<Record>) -> (Machine, Record, MessageRecord) {
    let (rec, msg) = mid_attach();
    let mut m = keyed_machine();
    let mut records = more;
    records.push(rec.clone());
    let out = m.handle(
        Time(100_000),
        Input::Start {
            records,
            with_url: Vec::new(),
            messages: vec![msg.clone()],
        },
    );
    assert_eq!(finds(&out), vec![MailFolder::SentItems], "{out:?}");
    (m, rec, msg)
}

/// Its draft in neither Sent Items nor Drafts: sent from Outlook and still in Exchange's move
/// (the Outbox), or deleted by hand. A new draft then would mail its files a second time (seeds
/// 1189, 1967): Sent Items is asked again once the move has surely had time.
#[test]
fn a_draft_in_neither_folder_is_looked_for_again_after_the_move_not_drafted_again() {
    let (mut m, _, msg) = started(Vec::new());
    let out = find(
        &mut m,
        101_000,
        &msg.id,
        MailFolder::SentItems,
        FindOutcome::NotFound,
    );
    assert_eq!(finds(&out), vec![MailFolder::Drafts], "{out:?}");
    let out = find(
        &mut m,
        102_000,
        &msg.id,
        MailFolder::Drafts,
        FindOutcome::NotFound,
    );
    assert!(!drafts_made(&out), "no new draft on a guess: {out:?}");
    assert!(finds(&out).is_empty(), "{out:?}");
    let written = out
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::PersistMessage(r) if r.id == msg.id => Some(r.clone()),
            _ => None,
        })
        .expect("the wait is on record");
    assert_eq!(written.draft_gone_at, Some(Time(102_000)));
    assert!(written.redraft);
    let out = m.handle(Time(102_000 + grace() - 1), Input::Tick);
    assert!(finds(&out).is_empty() && !drafts_made(&out), "{out:?}");
    let out = m.handle(Time(102_000 + grace()), Input::Tick);
    assert_eq!(finds(&out), vec![MailFolder::SentItems], "{out:?}");
    // The copy is there now: it went, and no draft is made.
    let out = find(
        &mut m,
        102_000 + grace() + 100,
        &msg.id,
        MailFolder::SentItems,
        sent_copy("s1"),
    );
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.id == msg.id && r.state == MessageState::Sent
                && r.draft_gone_at.is_none()
        )),
        "{out:?}"
    );
    assert!(!drafts_made(&out), "{out:?}");
}

/// Still in neither folder once the move has surely had time: deleted by hand, so a new draft
/// (as before: its files are attached again). A restart within the wait keeps waiting.
#[test]
fn a_draft_still_gone_after_the_move_is_drafted_again_and_a_restart_keeps_the_wait() {
    let (mut m, rec, msg) = started(Vec::new());
    find(
        &mut m,
        101_000,
        &msg.id,
        MailFolder::SentItems,
        FindOutcome::NotFound,
    );
    let out = find(
        &mut m,
        102_000,
        &msg.id,
        MailFolder::Drafts,
        FindOutcome::NotFound,
    );
    let written = out
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::PersistMessage(r) if r.id == msg.id => Some(r.clone()),
            _ => None,
        })
        .expect("the wait is on record");
    // A restart during the wait: nothing is asked before the grace is over.
    let mut m = keyed_machine();
    let out = m.handle(
        Time(110_000),
        Input::Start {
            records: vec![rec.clone()],
            with_url: Vec::new(),
            messages: vec![written],
        },
    );
    assert!(finds(&out).is_empty() && !drafts_made(&out), "{out:?}");
    // (Counted from the restart: an earlier run's time, the clock perhaps stepped since.)
    let t = 110_000 + grace();
    let out = m.handle(Time(t), Input::Tick);
    assert_eq!(finds(&out), vec![MailFolder::SentItems], "{out:?}");
    let out = find(
        &mut m,
        t + 100,
        &msg.id,
        MailFolder::SentItems,
        FindOutcome::NotFound,
    );
    assert_eq!(finds(&out), vec![MailFolder::Drafts], "{out:?}");
    let out = find(
        &mut m,
        t + 200,
        &msg.id,
        MailFolder::Drafts,
        FindOutcome::NotFound,
    );
    assert!(drafts_made(&out), "deleted by hand: a new draft: {out:?}");
}

/// A draft whose create answer was lost, in neither folder when looked for: never made, or
/// made and sent from Outlook meanwhile (seed 200256). Sent Items is asked again after the
/// move's grace before another is made.
#[test]
fn a_draft_in_doubt_in_neither_folder_waits_out_the_move_before_another_is_made() {
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let out = answer(&mut m, 2_000, &id, KeyOutcome::Drafted(Vec::new()));
    let mid = out
        .iter()
        .find_map(|a| match a {
            Action::CreateDraft { id, .. } => Some(id.clone()),
            _ => None,
        })
        .expect("a draft");
    m.handle(
        Time(3_000),
        Input::Outcome {
            id: mid.clone(),
            outcome: Outcome::CreateDraft(DraftOutcome::Failed(Fault::Ambiguous(Failure::new(
                "ServiceUnavailable",
                "503",
            )))),
        },
    );
    // Looked for after `look_after` (and the backoff).
    let mut t = 3_000 + Policy::default().look_after_ms;
    let mut out = Vec::new();
    for _ in 0..20 {
        out = m.handle(Time(t), Input::Tick);
        if !finds(&out).is_empty() {
            break;
        }
        t += 5_000;
    }
    assert_eq!(finds(&out), vec![MailFolder::SentItems], "{out:?}");
    find(
        &mut m,
        t + 100,
        &mid,
        MailFolder::SentItems,
        FindOutcome::NotFound,
    );
    let out = find(
        &mut m,
        t + 200,
        &mid,
        MailFolder::Drafts,
        FindOutcome::NotFound,
    );
    assert!(!drafts_made(&out), "not another draft yet: {out:?}");
    let out = m.handle(Time(t + 200 + grace()), Input::Tick);
    assert_eq!(finds(&out), vec![MailFolder::SentItems], "{out:?}");
    let out = find(
        &mut m,
        t + 300 + grace(),
        &mid,
        MailFolder::SentItems,
        sent_copy("s1"),
    );
    assert!(!drafts_made(&out), "it went from Outlook: {out:?}");
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::PersistMessage(r) if r.id == mid && r.state == MessageState::Sent
        )),
        "{out:?}"
    );
}

/// A file split off a message found sent (from Outlook) is found by its key in that message's
/// own sent copy: it went in it (its POST landed before the send), whatever other version of
/// its path is done in the ledger. Without `Record::left_message` the copy (this ledger's own,
/// with another version of the path done here) counted as the user's new drop of these bytes,
/// and the file was mailed a second time.
#[test]
fn a_file_split_off_a_hand_sent_message_found_in_its_sent_copy_went_there() {
    let (rec, _) = mid_attach();
    // An older version of the path, mailed before (another file, other bytes).
    let mut old = Record::pending(
        "e-old".into(),
        "mail".into(),
        rec.path.clone(),
        rec.name.clone(),
        FileStat {
            dev: 1,
            ino: 6,
            size: 10,
            mtime_ns: 0,
            ctime_ns: 0,
            owner: None,
        },
        Some("cd".repeat(32)),
        0,
        Time(0),
    );
    old.state = State::Done;
    old.attachment_id = Some("att-0".into());
    old.target = Some(Target {
        user: "me".into(),
        kind: ItemKind::Message,
        item_id: "sent-0".into(),
    });
    old.after_done = true;
    let (mut m, rec, msg) = started(vec![old]);
    let out = find(
        &mut m,
        101_000,
        &msg.id,
        MailFolder::SentItems,
        sent_copy("s1"),
    );
    let split = out
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Persist(r) if r.id == rec.id => Some(r.clone()),
            _ => None,
        })
        .expect("the file leaves the message, on record");
    assert_eq!(split.message, None);
    assert_eq!(split.left_message.as_deref(), Some(msg.id.as_str()));
    let (id, _) = key_asked(&out).expect("its key is searched for");
    let out = answer(
        &mut m,
        102_000,
        &id,
        KeyOutcome::Mailed {
            message_id: "s1".into(),
            internet_message_id: Some("<d1@x>".into()),
            attachment_id: "s1-a0".into(),
            marker: Some(msg.id.clone()),
            ours: true,
        },
    );
    let done = out
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Persist(r) if r.id == rec.id => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("found mailed: {out:?}"));
    assert_eq!(done.state, State::Done, "{out:?}");
    assert_eq!(done.target.map(|t| t.item_id).as_deref(), Some("s1"));
    assert_eq!(done.attachment_id.as_deref(), Some("s1-a0"));
    let later = m.handle(Time(200_000), Input::Tick);
    assert!(!drafts_made(&later), "never mailed again: {later:?}");
}

/// A message that gave way to another agent's sent copy is written first (its files taken
/// out), its files after: a crash, or a backup, between the two left a file done on the
/// abandoned draft, never searched for again (seed 200101). At start it leaves the message as
/// the give-way has it: back to pending, searched for by its key.
#[test]
fn a_file_still_done_on_a_draft_that_gave_way_is_searched_for_at_start() {
    let (rec, mut msg) = mid_attach();
    let mut rec = rec;
    rec.state = State::Done;
    rec.may_exist = false;
    rec.effect_at = None;
    rec.attachment_id = Some("att-1".into());
    msg.state = MessageState::Failed;
    msg.error = Some(Failure::new(MAILED_ELSEWHERE, "gave way"));
    msg.files.clear();
    let mut m = keyed_machine();
    let out = m.handle(
        Time(100_000),
        Input::Start {
            records: vec![rec.clone()],
            with_url: Vec::new(),
            messages: vec![msg],
        },
    );
    let back = out
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Persist(r) if r.id == rec.id => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("it leaves the message on record: {out:?}"));
    assert_eq!(back.state, State::Pending);
    assert_eq!(back.message, None);
    assert_eq!(back.attachment_id, None);
    assert!(
        key_asked(&out).is_some(),
        "searched for by its key: {out:?}"
    );
}

/// Seed 509813: a file whose upload session's last piece was in doubt when its draft was sent
/// from Outlook (the crash took the answer). Found sent at start, the file was put in a new
/// message at once; its look on the old draft then answered 404, and it was mailed again. Now
/// its session is closed and its copy looked for in the sent copy: there, it went.
#[test]
fn a_file_whose_last_piece_was_in_doubt_on_a_hand_sent_draft_is_looked_for_in_the_sent_copy() {
    let (mut rec, msg) = mid_attach();
    rec.state = State::Uploading;
    rec.may_exist = true;
    rec.effect_at = Some(Time(4_000));
    rec.target = Some(Target {
        user: "me".into(),
        kind: ItemKind::Message,
        item_id: "d1".into(),
    });
    rec.session = Some(SessionMark {
        sent_end: rec.file.size,
        abandoned: false,
    });
    let mut m = keyed_machine();
    let out = m.handle(
        Time(100_000),
        Input::Start {
            records: vec![rec.clone()],
            with_url: vec![rec.id.clone()],
            messages: vec![msg.clone()],
        },
    );
    assert_eq!(finds(&out), vec![MailFolder::SentItems], "{out:?}");
    let mut all = find(
        &mut m,
        101_000,
        &msg.id,
        MailFolder::SentItems,
        sent_copy("s1"),
    );
    assert!(
        all.iter().any(|a| matches!(
            a,
            Action::Persist(r) if r.id == rec.id
                && r.session.is_some_and(|s| s.abandoned)
                && r.target.as_ref().is_some_and(|t| t.item_id == "s1")
        )),
        "its session closed, its copy to be looked for in the sent copy: {all:?}"
    );
    all.extend(m.answer(101_100, &rec.id, session_deleted()));
    let mut t = 101_100;
    let mut look = None;
    while look.is_none() && t < 900_000 {
        t += 1_000;
        let out = m.handle(Time(t), Input::Tick);
        look = out.iter().find_map(|a| match a {
            Action::Look { id, target, .. } if id == &rec.id => Some(target.item_id.clone()),
            _ => None,
        });
        all.extend(out);
    }
    assert_eq!(look.as_deref(), Some("s1"), "{all:?}");
    let out = m.answer(t + 10, &rec.id, look_found("s1-a0"));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Persist(r) if r.id == rec.id && r.state == State::Done)),
        "{out:?}"
    );
    all.extend(out);
    all.extend(m.handle(Time(t + 900_000), Input::Tick));
    assert!(!drafts_made(&all), "never mailed again: {all:?}");
}

/// Seed 518576: start-up drops the session of a done file whose URL was lost; the message it
/// belongs to kept the record as read (with the session) and waited for ever for it to close.
#[test]
fn a_message_takes_its_files_as_start_up_leaves_them() {
    let (mut rec, mut msg) = mid_attach();
    rec.state = State::Done;
    rec.attachment_id = Some("att-1".into());
    rec.after_done = true;
    rec.target = Some(Target {
        user: "me".into(),
        kind: ItemKind::Message,
        item_id: "d1".into(),
    });
    rec.session = Some(SessionMark {
        sent_end: 0,
        abandoned: false,
    });
    msg.state = MessageState::Attaching;
    let mut m = keyed_machine();
    let out = m.handle(
        Time(100_000),
        Input::Start {
            records: vec![rec.clone()],
            with_url: Vec::new(),
            messages: vec![msg.clone()],
        },
    );
    assert_eq!(finds(&out), vec![MailFolder::SentItems], "{out:?}");
    find(
        &mut m,
        100_100,
        &msg.id,
        MailFolder::SentItems,
        FindOutcome::NotFound,
    );
    let out = find(
        &mut m,
        100_200,
        &msg.id,
        MailFolder::Drafts,
        FindOutcome::Found {
            id: "d1".into(),
            is_draft: true,
            internet_message_id: Some("<d1@x>".into()),
        },
    );
    let mut all = out;
    for t in [101_000, 130_000, 200_000] {
        all.extend(m.handle(Time(t), Input::Tick));
    }
    assert!(
        all.iter().any(|a| matches!(a, Action::ListDraft { .. })),
        "the message goes on to its listing: {all:?}"
    );
}
