//! A file that leaves a message (SPEC 8: "a file never leaves a message silently"), the
//! `failed_dir` move as the core's action, and a re-send after a send in doubt.

use super::super::*;
use super::move_grace_ms;

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
