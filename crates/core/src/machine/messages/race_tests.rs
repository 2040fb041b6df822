//! Two agents on one folder (SPEC 8): after its draft is complete and before its send, a
//! message looks for other messages holding its files' keys; the older draft (or a sent copy)
//! wins, the other gives way and deletes its draft. And every draft the agent abandons is
//! deleted: a message whose files all left, `outbox mail`'s failed message.

use super::super::*;
use super::{drafted_before, move_grace_ms};
use crate::machine::test_support::{look_found, look_not_found};

const SHA: &str = "abababababababababababababababababababababababababababababababab";

fn machine_with(batch: bool, remember: bool, delete_failed_draft: bool) -> Machine {
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
            send: true,
            max_message_size: 35_000_000,
            folder: PathBuf::from("/mail"),
            remember_sent_ms: if remember { 90 * 86_400_000 } else { 0 },
            batch,
            batch_quiet_ms: if batch { 10_000 } else { 0 },
            batch_max_wait_ms: if batch { 60_000 } else { 0 },
            delete_failed_draft,
            ..MailRule::default()
        }),
    };
    Machine::new(vec![rule], Policy::default())
}

fn keyed() -> Machine {
    machine_with(false, true, false)
}

/// What the simulated mailbox answers, and what the machine asked.
struct World {
    t: u64,
    /// Attachments made on each draft.
    atts: BTreeMap<String, Vec<String>>,
    drafts: u32,
    /// Every action the machine gave, in order.
    seen: Vec<Action>,
}

impl World {
    fn new() -> World {
        World {
            t: 1_000,
            atts: BTreeMap::new(),
            drafts: 0,
            seen: Vec::new(),
        }
    }

    /// Answer `out` (and what the answers bring) as a mailbox where nothing else holds any
    /// key, until `stop` matches an action (returned, not answered) or nothing is left.
    fn run(
        &mut self,
        m: &mut Machine,
        out: Vec<Action>,
        stop: impl Fn(&Action) -> bool,
    ) -> Option<Action> {
        let mut queue: Vec<Action> = out;
        let mut wake = None;
        for _ in 0..200 {
            let mut inputs = Vec::new();
            for a in std::mem::take(&mut queue) {
                self.seen.push(a.clone());
                if stop(&a) {
                    return Some(a);
                }
                match a {
                    Action::WakeAt(t) => wake = Some(t.0),
                    Action::FindFileKey { id, .. } => {
                        inputs.push((id, Outcome::Key(KeyOutcome::Drafted(Vec::new()))))
                    }
                    Action::CreateDraft { id, .. } => {
                        self.drafts += 1;
                        let d = format!("d{}", self.drafts);
                        self.atts.insert(d.clone(), Vec::new());
                        inputs.push((
                            id,
                            Outcome::CreateDraft(DraftOutcome::Created {
                                draft_id: d,
                                internet_message_id: None,
                            }),
                        ));
                    }
                    Action::Post { id, target, .. } => {
                        let att = format!("att-{id}-{}", self.t);
                        self.atts
                            .entry(target.item_id.clone())
                            .or_default()
                            .push(att.clone());
                        inputs.push((
                            id,
                            Outcome::Post(PostOutcome::Created { attachment_id: att }),
                        ));
                    }
                    Action::ListDraft { id, draft_id, .. } => inputs.push((
                        id,
                        Outcome::ListDraft(ListOutcome::Listed(
                            self.atts.get(&draft_id).cloned().unwrap_or_default(),
                        )),
                    )),
                    Action::StampKeys { id, .. } => inputs.push((id, Outcome::StampKeys(Ok(())))),
                    Action::FindRivals {
                        id,
                        draft_id,
                        files,
                        ..
                    } => inputs.push((
                        id,
                        Outcome::Rivals(RivalsOutcome::Checked {
                            own_created: Some(Time(5_000)),
                            found: files
                                .iter()
                                .map(|_| KeyHolders {
                                    sent: None,
                                    drafts: vec![own(&draft_id, 5_000)],
                                })
                                .collect(),
                        }),
                    )),
                    Action::DeleteDraft { id, draft_id, .. } => {
                        self.atts.remove(&draft_id);
                        inputs.push((id, Outcome::DeleteDraft(DeleteOutcome::Deleted)));
                    }
                    Action::SendDraft { id, .. } => {
                        inputs.push((id, Outcome::Send(SendOutcome::Sent)))
                    }
                    Action::DeleteAttachment {
                        id,
                        target,
                        attachment_id,
                    } => {
                        if let Some(v) = self.atts.get_mut(&target.item_id) {
                            v.retain(|x| *x != attachment_id);
                        }
                        inputs.push((id, Outcome::DeleteAttachment(DeleteOutcome::Deleted)));
                    }
                    _ => {}
                }
            }
            if inputs.is_empty() {
                let w = wake.take()?;
                self.t = self.t.max(w);
                queue.extend(m.handle(Time(self.t), Input::Tick));
                continue;
            }
            for (id, outcome) in inputs {
                self.t += 100;
                queue.extend(m.handle(Time(self.t), Input::Outcome { id, outcome }));
            }
        }
        None
    }
}

/// This message's own draft, as a key search lists it.
fn own(draft_id: &str, created: u64) -> DraftHolding {
    DraftHolding {
        message_id: draft_id.into(),
        marker: None,
        ours: true,
        subject: "inv.pdf".into(),
        created: Some(Time(created)),
    }
}

/// Another agent's draft holding the key.
fn other(draft_id: &str, created: Option<u64>) -> DraftHolding {
    DraftHolding {
        message_id: draft_id.into(),
        marker: Some("m-other-agent".into()),
        ours: false,
        subject: "inv.pdf (the other agent's)".into(),
        created: created.map(Time),
    }
}

fn drop(m: &mut Machine, t: u64, name: &str, ino: u64) -> Vec<Action> {
    super::tests::drop_version(m, t, name, super::tests::stat(ino, 10), SHA)
}

fn is_rivals(a: &Action) -> bool {
    matches!(a, Action::FindRivals { .. })
}

fn is_send(a: &Action) -> bool {
    matches!(a, Action::SendDraft { .. })
}

/// One file dropped and searched clear, its draft made (`d1`) and attached: the check for
/// rivals it asks before its send (message id, draft id, the file's entry id).
fn to_the_check(m: &mut Machine, w: &mut World) -> (String, String, String) {
    let out = drop(m, w.t, "inv.pdf", 7);
    w.t += 6_000;
    let a = w.run(m, out, |a| is_rivals(a) || is_send(a));
    let Some(Action::FindRivals {
        id,
        draft_id,
        files,
        ..
    }) = a
    else {
        panic!(
            "a check for rivals before any send: {a:?} after {:?}",
            w.seen
        );
    };
    assert_eq!(files.len(), 1);
    assert_eq!(
        files[0],
        (
            file_key("me", "a@example.com", Path::new("inv.pdf"), 10, SHA),
            "inv.pdf".to_owned(),
            SHA.to_owned()
        ),
        "the file's key, its attachment's name and its bytes' SHA-256"
    );
    let entry = m
        .messages()
        .find(|r| r.id == id)
        .and_then(|r| r.files.first().cloned())
        .expect("its file");
    (id, draft_id, entry)
}

fn checked(
    m: &mut Machine,
    t: u64,
    mid: &str,
    own_created: Option<u64>,
    found: Vec<KeyHolders>,
) -> Vec<Action> {
    m.handle(
        Time(t),
        Input::Outcome {
            id: mid.into(),
            outcome: Outcome::Rivals(RivalsOutcome::Checked {
                own_created: own_created.map(Time),
                found,
            }),
        },
    )
}

fn message_persisted(out: &[Action], mid: &str) -> Option<MessageRecord> {
    out.iter().rev().find_map(|a| match a {
        Action::PersistMessage(r) if r.id == mid => Some(r.clone()),
        _ => None,
    })
}

fn last_persist(out: &[Action], id: &str) -> Option<Record> {
    out.iter().rev().find_map(|a| match a {
        Action::Persist(r) if r.id == id => Some(r.clone()),
        _ => None,
    })
}

#[test]
fn a_complete_draft_looks_for_rivals_after_the_settle_time_then_is_sent() {
    let mut m = keyed();
    let mut w = World::new();
    let out = drop(&mut m, w.t, "inv.pdf", 7);
    w.t += 6_000;
    let a = w.run(&mut m, out, |a| is_rivals(a) || is_send(a));
    assert!(matches!(a, Some(Action::FindRivals { .. })), "{a:?}");
    // Not before RIVAL_SETTLE_MS after its draft was answered (`createdDateTime` has a grain
    // of a second: a draft made in the same second surely exists when the mailbox is asked).
    let drafted = w
        .seen
        .iter()
        .position(|a| matches!(a, Action::CreateDraft { .. }))
        .expect("drafted");
    assert!(
        w.seen[drafted..]
            .iter()
            .any(|a| matches!(a, Action::WakeAt(_))),
        "it waited: {:?}",
        w.seen
    );
    let Some(Action::FindRivals { id, draft_id, .. }) = a else {
        unreachable!()
    };
    // Only its own draft holds the key: it goes.
    let out = checked(
        &mut m,
        w.t + 100,
        &id,
        Some(5_000),
        vec![KeyHolders {
            sent: None,
            drafts: vec![own(&draft_id, 5_000)],
        }],
    );
    assert!(out.iter().any(is_send), "{out:?}");
}

#[test]
fn an_older_draft_of_another_agent_wins_this_one_deletes_its_draft_and_its_file_is_held() {
    let mut m = keyed();
    let mut w = World::new();
    let (mid, d1, entry) = to_the_check(&mut m, &mut w);
    let out = checked(
        &mut m,
        w.t + 100,
        &mid,
        Some(5_000),
        vec![KeyHolders {
            sent: None,
            drafts: vec![own(&d1, 5_000), other("d-theirs", Some(4_000))],
        }],
    );
    assert!(!out.iter().any(is_send), "never sent: {out:?}");
    let rec = message_persisted(&out, &mid).expect("the message's record says so");
    assert_eq!(rec.state, MessageState::Failed);
    assert_eq!(
        rec.error.as_ref().map(|e| e.code.as_str()),
        Some(MAILED_ELSEWHERE)
    );
    assert!(rec.files.is_empty(), "its file left it: {rec:?}");
    assert!(rec.draft_abandoned() && rec.at_work());
    // The record first, then the delete of its own draft (never the other's).
    let persisted = out
        .iter()
        .position(|a| matches!(a, Action::PersistMessage(r) if r.id == mid));
    let delete = out
        .iter()
        .position(|a| matches!(a, Action::DeleteDraft { draft_id, .. } if *draft_id == d1));
    assert!(delete.is_some() && persisted < delete, "{out:?}");
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::DeleteDraft { draft_id, .. } if draft_id == "d-theirs")));
    // The file: off the draft, in no message, held by the other draft.
    let f = last_persist(&out, &entry).expect("the file written");
    assert_eq!(f.state, State::Pending);
    assert_eq!(f.message, None);
    assert_eq!(f.attachment_id, None);
    assert_eq!(
        f.error.as_ref().map(|e| e.code.as_str()),
        Some(HELD_BY_DRAFT)
    );
    assert!(!m.quiescent(), "the delete is owed");
    // Deleted: the message is done with; the file is asked again later (the winner sent it:
    // found mailed, never mailed here).
    let out = m.handle(
        Time(w.t + 200),
        Input::Outcome {
            id: mid.clone(),
            outcome: Outcome::DeleteDraft(DeleteOutcome::Deleted),
        },
    );
    let rec = message_persisted(&out, &mid).expect("written");
    assert_eq!(rec.draft_id, None);
    assert!(!rec.at_work());
    let mut t = w.t + 1_000;
    let mut asked = None;
    for _ in 0..20 {
        t += 60_000;
        let out = m.handle(Time(t), Input::Tick);
        assert!(!out.iter().any(|a| matches!(a, Action::CreateDraft { .. })));
        asked = out.iter().find_map(|a| match a {
            Action::FindFileKey { id, .. } => Some(id.clone()),
            _ => None,
        });
        if asked.is_some() {
            break;
        }
    }
    let asked = asked.expect("searched again");
    assert_eq!(asked, entry);
    let out = m.handle(
        Time(t + 100),
        Input::Outcome {
            id: entry.clone(),
            outcome: Outcome::Key(KeyOutcome::Mailed {
                message_id: "sent-theirs".into(),
                internet_message_id: Some("<theirs@x>".into()),
                attachment_id: "att-theirs".into(),
                marker: Some("m-other-agent".into()),
                ours: false,
            }),
        },
    );
    let f = last_persist(&out, &entry).expect("written");
    assert_eq!(f.state, State::Done);
    assert_eq!(f.attachment_id.as_deref(), Some("att-theirs"));
    assert_eq!(f.error.map(|e| e.code), Some(FOUND_MAILED.to_owned()));
}

#[test]
fn a_newer_draft_of_another_agent_loses_to_this_one_which_is_sent() {
    let mut m = keyed();
    let mut w = World::new();
    let (mid, d1, _) = to_the_check(&mut m, &mut w);
    let out = checked(
        &mut m,
        w.t + 100,
        &mid,
        Some(5_000),
        vec![KeyHolders {
            sent: None,
            drafts: vec![other("d-theirs", Some(6_000)), own(&d1, 5_000)],
        }],
    );
    assert!(out.iter().any(is_send), "the older goes: {out:?}");
    assert!(!out.iter().any(|a| matches!(a, Action::DeleteDraft { .. })));
}

#[test]
fn drafts_made_in_the_same_second_are_ordered_by_id_and_both_sides_agree() {
    let pairs = [
        (Some(Time(1_000)), "AAMk-b", Some(Time(1_000)), "AAMk-a"),
        (Some(Time(1_000)), "AAMk-a", Some(Time(2_000)), "AAMk-b"),
        (Some(Time(3_000)), "AAMk-a", Some(Time(2_000)), "AAMk-b"),
    ];
    for (t1, id1, t2, id2) in pairs {
        // Exactly one of the two comes first, whichever side asks.
        assert_ne!(
            drafted_before(t1, id1, t2, id2),
            drafted_before(t2, id2, t1, id1),
            "{t1:?} {id1} / {t2:?} {id2}"
        );
    }
    // A time Graph did not give counts as first, from either side: never mailed twice.
    assert!(drafted_before(None, "x", Some(Time(1)), "y"));
    assert!(drafted_before(Some(Time(1)), "x", None, "y"));
    // In the machine: the same second, the other's id first → this one gives way.
    for (theirs, gives_way) in [("AAMk-0", true), ("zzz", false)] {
        let mut m = keyed();
        let mut w = World::new();
        let (mid, d1, _) = to_the_check(&mut m, &mut w);
        let out = checked(
            &mut m,
            w.t + 100,
            &mid,
            Some(5_000),
            vec![KeyHolders {
                sent: None,
                drafts: vec![own(&d1, 5_000), other(theirs, Some(5_000))],
            }],
        );
        assert_eq!(
            out.iter().any(|a| matches!(a, Action::DeleteDraft { .. })),
            gives_way,
            "{theirs} vs {d1}: {out:?}"
        );
        assert_eq!(out.iter().any(is_send), !gives_way);
    }
}

#[test]
fn a_sent_copy_holding_the_key_wins_and_the_file_is_found_mailed_in_it() {
    let mut m = keyed();
    let mut w = World::new();
    let (mid, d1, entry) = to_the_check(&mut m, &mut w);
    // The other agent sent before this one's check (its draft already moved).
    let out = checked(
        &mut m,
        w.t + 100,
        &mid,
        Some(5_000),
        vec![KeyHolders {
            sent: Some(KeyOutcome::Mailed {
                message_id: "sent-theirs".into(),
                internet_message_id: Some("<theirs@x>".into()),
                attachment_id: "att-theirs".into(),
                marker: Some("m-other-agent".into()),
                ours: false,
            }),
            drafts: vec![own(&d1, 5_000)],
        }],
    );
    assert!(!out.iter().any(is_send), "{out:?}");
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::DeleteDraft { draft_id, .. } if *draft_id == d1)));
    let f = last_persist(&out, &entry).expect("written");
    assert_eq!(f.state, State::Done);
    assert_eq!(
        f.target.as_ref().map(|t| t.item_id.as_str()),
        Some("sent-theirs")
    );
    assert_eq!(f.message, None);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Notify(Note::FoundMailed { .. }))));
}

#[test]
fn a_sent_copy_of_this_ledgers_own_earlier_mail_of_a_new_drop_is_no_rival() {
    // These bytes went from this path (the sent copy of this ledger's own), then others: these
    // are dropped again. The key search let the new drop in (another version of the path is
    // done), and so does the check.
    let mut m = keyed();
    let mut old = Record::pending(
        "e-old".into(),
        "mail".into(),
        PathBuf::from("/mail/inv.pdf"),
        "inv.pdf".into(),
        super::tests::stat(6, 10),
        Some("cd".repeat(32)),
        0,
        Time(0),
    );
    old.state = State::Done;
    old.attachment_id = Some("att-0".into());
    old.after_done = true;
    old.target = Some(Target {
        user: "me".into(),
        kind: ItemKind::Message,
        item_id: "sent-0".into(),
    });
    let _ = m.handle(
        Time(10),
        Input::Start {
            records: vec![old],
            with_url: Vec::new(),
            messages: Vec::new(),
        },
    );
    let mut w = World::new();
    let (mid, d1, _) = to_the_check(&mut m, &mut w);
    let out = checked(
        &mut m,
        w.t + 100,
        &mid,
        Some(5_000),
        vec![KeyHolders {
            sent: Some(KeyOutcome::Mailed {
                message_id: "sent-0".into(),
                internet_message_id: None,
                attachment_id: "att-0".into(),
                marker: Some("m-mine-earlier".into()),
                ours: true,
            }),
            drafts: vec![own(&d1, 5_000)],
        }],
    );
    assert!(out.iter().any(is_send), "{out:?}");
}

#[test]
fn of_a_batch_that_gives_way_the_file_no_one_else_holds_goes_in_a_new_message() {
    let mut m = machine_with(true, true, false);
    let mut w = World::new();
    let mut out = drop(&mut m, w.t, "a.pdf", 7);
    out.extend(drop(&mut m, w.t + 6_000, "b.pdf", 8));
    w.t += 12_000;
    let a = w.run(&mut m, out, |a| is_rivals(a) || is_send(a));
    let Some(Action::FindRivals {
        id: mid,
        draft_id,
        files,
        ..
    }) = a
    else {
        panic!("{a:?}");
    };
    assert_eq!(files.len(), 2, "both files' keys");
    let first = files[0].1.clone();
    // The first file is on an older draft of another agent; the second on none.
    let found = files
        .iter()
        .map(|(_, name, _)| KeyHolders {
            sent: None,
            drafts: if *name == first {
                vec![own(&draft_id, 5_000), other("d-theirs", Some(1_000))]
            } else {
                vec![own(&draft_id, 5_000)]
            },
        })
        .collect();
    let out = checked(&mut m, w.t + 100, &mid, Some(5_000), found);
    assert!(!out.iter().any(is_send));
    // The draft deleted, then a new message for the other file alone, checked and sent.
    w.seen.clear();
    let a = w.run(&mut m, out, is_send);
    assert!(a.is_some(), "the free file is mailed: {:?}", w.seen);
    let letters: Vec<String> = w
        .seen
        .iter()
        .filter_map(|a| match a {
            Action::CreateDraft { letter, .. } => Some(letter.body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(letters.len(), 1, "{:?}", w.seen);
    assert!(
        !letters[0].contains(&first),
        "the held file is in no new message: {letters:?}"
    );
    assert!(w
        .seen
        .iter()
        .any(|a| matches!(a, Action::DeleteDraft { draft_id: d, .. } if *d == draft_id)));
}

#[test]
fn a_message_whose_files_all_left_deletes_its_draft() {
    let mut m = machine_with(false, false, false);
    let mut w = World::new();
    let out = drop(&mut m, w.t, "inv.pdf", 7);
    w.t += 6_000;
    let a = w.run(&mut m, out, |a| matches!(a, Action::Post { .. }));
    let Some(Action::Post { id: entry, .. }) = a else {
        panic!("{a:?}");
    };
    let mid = m
        .messages()
        .next()
        .map(|r| r.id.clone())
        .expect("a message");
    let draft = m
        .messages()
        .next()
        .and_then(|r| r.draft_id.clone())
        .expect("drafted");
    // Its file is canceled (its post refused as gone) before it is attached.
    let mut out = m.handle(Time(w.t + 100), Input::Cancel { id: entry.clone() });
    out.extend(m.handle(
        Time(w.t + 200),
        Input::Outcome {
            id: entry,
            outcome: Outcome::Post(PostOutcome::FileGone),
        },
    ));
    w.seen.clear();
    w.t += 300;
    let a = w.run(&mut m, out, |a| matches!(a, Action::DeleteDraft { .. }));
    let Some(Action::DeleteDraft { id, draft_id, .. }) = a else {
        panic!("{a:?} after {:?}", w.seen);
    };
    assert_eq!(
        (id.as_str(), draft_id.as_str()),
        (mid.as_str(), draft.as_str())
    );
    let rec = m.messages().find(|r| r.id == mid).cloned().expect("kept");
    assert_eq!(rec.error.map(|e| e.code), Some(NO_FILES_LEFT.to_owned()));
    assert!(!m.quiescent(), "not quiescent before its draft is deleted");
    let out = m.handle(
        Time(w.t + 400),
        Input::Outcome {
            id: mid.clone(),
            outcome: Outcome::DeleteDraft(DeleteOutcome::Deleted),
        },
    );
    assert!(message_persisted(&out, &mid).is_some_and(|r| r.draft_id.is_none()));
    // (The file, gone, is looked at once more.)
    let _ = m.handle(
        Time(w.t + 500),
        Input::Stat {
            path: PathBuf::from("/mail/inv.pdf"),
            stat: None,
        },
    );
    assert!(m.quiescent());
}

#[test]
fn a_draft_that_may_have_been_sent_is_never_abandoned() {
    let mut rec = MessageRecord::drafting(
        "m1".into(),
        "mail".into(),
        "me".into(),
        Letter::default(),
        Vec::new(),
        true,
        1,
        Time(0),
    );
    rec.state = MessageState::Failed;
    rec.draft_id = Some("d1".into());
    rec.error = Some(Failure::new(NO_FILES_LEFT, "x"));
    assert!(rec.draft_abandoned());
    rec.last_send_at = Some(Time(5));
    assert!(!rec.draft_abandoned(), "a send may have happened");
    rec.last_send_at = None;
    rec.error = Some(Failure::new("attachmentMissing", "x"));
    assert!(!rec.draft_abandoned(), "kept for `retry`");
    rec.error = Some(Failure::new(MAILED_ELSEWHERE, "x"));
    assert!(rec.draft_abandoned());
    rec.draft_id = None;
    assert!(!rec.draft_abandoned() && !rec.at_work(), "deleted already");
}

#[test]
fn a_start_after_a_crash_between_giving_way_and_the_delete_deletes_the_draft() {
    let mut m = keyed();
    let mut rec = MessageRecord::drafting(
        "m1".into(),
        "mail".into(),
        "me".into(),
        Letter::default(),
        Vec::new(),
        true,
        1,
        Time(0),
    );
    rec.state = MessageState::Failed;
    rec.draft_id = Some("d1".into());
    rec.error = Some(Failure::new(MAILED_ELSEWHERE, "gave way"));
    let out = m.handle(
        Time(10),
        Input::Start {
            records: Vec::new(),
            with_url: Vec::new(),
            messages: vec![rec],
        },
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::DeleteDraft { draft_id, .. } if draft_id == "d1")),
        "{out:?}"
    );
    // Graph refuses (not ours to delete, say): left, said on the message, not asked again.
    let out = m.handle(
        Time(20),
        Input::Outcome {
            id: "m1".into(),
            outcome: Outcome::DeleteDraft(DeleteOutcome::Failed(Fault::Permanent(Failure::new(
                "ErrorAccessDenied",
                "Access is denied.",
            )))),
        },
    );
    let rec = message_persisted(&out, "m1").expect("said on the message");
    assert!(rec
        .error
        .as_ref()
        .is_some_and(|e| e.message.contains("could not be deleted")));
    assert!(m.quiescent(), "{out:?}");
}

#[test]
fn outbox_mail_deletes_the_draft_of_a_message_that_failed() {
    let mut m = machine_with(false, false, true);
    let mut w = World::new();
    let out = drop(&mut m, w.t, "inv.pdf", 7);
    w.t += 6_000;
    let a = w.run(&mut m, out, |a| matches!(a, Action::Post { .. }));
    let Some(Action::Post { id: entry, .. }) = a else {
        panic!("{a:?}");
    };
    let out = m.handle(
        Time(w.t + 100),
        Input::Outcome {
            id: entry,
            outcome: Outcome::Post(PostOutcome::Failed(Fault::Permanent(Failure::new(
                "ErrorAccessDenied",
                "no",
            )))),
        },
    );
    w.seen.clear();
    w.t += 200;
    let a = w.run(&mut m, out, |a| matches!(a, Action::DeleteDraft { .. }));
    assert!(
        matches!(a, Some(Action::DeleteDraft { ref draft_id, .. }) if draft_id == "d1"),
        "{a:?} after {:?}",
        w.seen
    );
    // The agent (no `delete_failed_draft`) keeps a failed message's draft for `retry`.
    let mut m = machine_with(false, false, false);
    let mut w = World::new();
    let out = drop(&mut m, w.t, "inv.pdf", 7);
    w.t += 6_000;
    let Some(Action::Post { id: entry, .. }) =
        w.run(&mut m, out, |a| matches!(a, Action::Post { .. }))
    else {
        panic!()
    };
    let out = m.handle(
        Time(w.t + 100),
        Input::Outcome {
            id: entry,
            outcome: Outcome::Post(PostOutcome::Failed(Fault::Permanent(Failure::new(
                "ErrorAccessDenied",
                "no",
            )))),
        },
    );
    w.seen.clear();
    assert!(w
        .run(&mut m, out, |a| matches!(a, Action::DeleteDraft { .. }))
        .is_none());
}

#[test]
fn a_file_that_joined_after_its_draft_was_made_gives_way_to_any_other_draft() {
    // Seed 239 with a second agent: a newer version took the older's place on a made draft;
    // its key went on the draft only with the stamp before the send, so the draft's age says
    // nothing of when it began to hold that key.
    let mut m = keyed();
    let mut w = World::new();
    let out = drop(&mut m, w.t, "inv.pdf", 7);
    w.t += 6_000;
    let Some(Action::Post { id: v1, target, .. }) =
        w.run(&mut m, out, |a| matches!(a, Action::Post { .. }))
    else {
        panic!("{:?}", w.seen);
    };
    // The first version's upload is under way when a newer version settles; then it lands.
    let sha2 = "cd".repeat(32);
    let mut out = super::tests::drop_version(
        &mut m,
        w.t + 100,
        "inv.pdf",
        super::tests::stat(8, 12),
        &sha2,
    );
    w.t += 6_000;
    w.atts
        .entry(target.item_id.clone())
        .or_default()
        .push("att-v1".into());
    out.extend(m.handle(
        Time(w.t),
        Input::Outcome {
            id: v1,
            outcome: Outcome::Post(PostOutcome::Created {
                attachment_id: "att-v1".into(),
            }),
        },
    ));
    let a = w.run(&mut m, out, |a| is_rivals(a) || is_send(a));
    let Some(Action::FindRivals {
        id,
        draft_id,
        files,
        ..
    }) = a
    else {
        panic!("{a:?} after {:?}", w.seen);
    };
    let k2 = file_key("me", "a@example.com", Path::new("inv.pdf"), 12, &sha2);
    assert_eq!(files, vec![(k2, "inv.pdf".to_owned(), sha2.clone())]);
    // Another agent's draft made after this one's, holding the newer version's key.
    let out = checked(
        &mut m,
        w.t + 100,
        &id,
        Some(5_000),
        vec![KeyHolders {
            sent: None,
            drafts: vec![own(&draft_id, 5_000), other("d-theirs", Some(9_000))],
        }],
    );
    assert!(!out.iter().any(is_send), "{out:?}");
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::DeleteDraft { draft_id: d, .. } if *d == draft_id)));
}

#[test]
fn a_held_file_whose_holder_vanished_is_searched_again_after_the_move_grace_and_found_mailed() {
    // The older draft's agent sent it: in Exchange's move it is in neither Drafts nor Sent
    // Items (the Outbox is not searched). Mailing the file then would mail it twice.
    let mut m = keyed();
    let mut w = World::new();
    let (mid, d1, entry) = to_the_check(&mut m, &mut w);
    let _ = checked(
        &mut m,
        w.t + 100,
        &mid,
        Some(5_000),
        vec![KeyHolders {
            sent: None,
            drafts: vec![own(&d1, 5_000), other("d-theirs", Some(4_000))],
        }],
    );
    let search = |m: &mut Machine, from: u64| -> u64 {
        let mut t = from;
        for _ in 0..100 {
            t += 10_000;
            let out = m.handle(Time(t), Input::Tick);
            assert!(!out.iter().any(|a| matches!(a, Action::CreateDraft { .. })));
            if out
                .iter()
                .any(|a| matches!(a, Action::FindFileKey { id, .. } if *id == entry))
            {
                return t;
            }
        }
        panic!("never searched again");
    };
    let t = search(&mut m, w.t + 100);
    let out = m.handle(
        Time(t + 100),
        Input::Outcome {
            id: entry.clone(),
            outcome: Outcome::Key(KeyOutcome::Drafted(Vec::new())),
        },
    );
    assert!(
        !out.iter().any(|a| matches!(a, Action::CreateDraft { .. })),
        "not mailed on the first search that finds nothing: {out:?}"
    );
    let again = search(&mut m, t + 100);
    assert!(
        again >= t + move_grace_ms(Policy::default().look_after_ms),
        "asked again only after the move grace ({again} from {t})"
    );
    let out = m.handle(
        Time(again + 100),
        Input::Outcome {
            id: entry.clone(),
            outcome: Outcome::Key(KeyOutcome::Mailed {
                message_id: "sent-theirs".into(),
                internet_message_id: None,
                attachment_id: "att-theirs".into(),
                marker: Some("m-other-agent".into()),
                ours: false,
            }),
        },
    );
    let f = last_persist(&out, &entry).expect("written");
    assert_eq!(f.state, State::Done, "found mailed: {f:?}");
}

/// File `e1` (`/mail/a.pdf`, `size` bytes), pending, in no message, bound to `sent7`: the sent
/// copy of the message it left (each test puts its own doubt on it).
fn bound_to_a_sent_copy(size: u64) -> Record {
    let mut r = Record::pending(
        "e1".into(),
        "mail".into(),
        PathBuf::from("/mail/a.pdf"),
        "a.pdf".into(),
        super::tests::stat(4, size),
        Some(SHA.into()),
        1,
        Time(500),
    );
    r.target = Some(Target {
        user: "me".into(),
        kind: ItemKind::Message,
        item_id: "sent7".into(),
    });
    r
}

/// Seed 4233: a file split off a message sent by hand, with a copy in doubt (a mapping that
/// does not search the mailbox), is looked for in the sent copy; a crash before the look
/// answered left it in no message, and the start put it in a new one at once: mailed twice.
/// At start it waits for its look: found, it went; not there, it goes in a new message.
#[test]
fn a_file_in_doubt_on_a_sent_copy_joins_no_message_at_start_until_its_look_answers() {
    let in_doubt = || {
        let mut r = bound_to_a_sent_copy(10);
        r.state = State::Uploading;
        r.may_exist = true;
        r.effect_at = Some(Time(600));
        r
    };
    let start = |m: &mut Machine| {
        m.handle(
            Time(100_000),
            Input::Start {
                records: vec![in_doubt()],
                with_url: Vec::new(),
                messages: Vec::new(),
            },
        )
    };
    let drafts = |out: &[Action]| out.iter().any(|a| matches!(a, Action::CreateDraft { .. }));
    let looks_on_sent = |out: &[Action]| {
        out.iter().any(|a| {
            matches!(a, Action::Look { id, target, .. } if id == "e1" && target.item_id == "sent7")
        })
    };
    // Found there: it went, and no message is made for it.
    let mut m = machine_with(false, false, false);
    let mut out = start(&mut m);
    for t in [101_000, 221_000] {
        out.extend(m.handle(Time(t), Input::Tick));
    }
    assert!(!drafts(&out), "no message before the look answers: {out:?}");
    assert!(looks_on_sent(&out), "{out:?}");
    let out = m.answer(221_100, "e1", look_found("sent7-a0"));
    let done = last_persist(&out, "e1").expect("on record");
    assert_eq!(done.state, State::Done);
    let later = m.handle(Time(400_000), Input::Tick);
    assert!(!drafts(&later), "never mailed again: {later:?}");
    // Not there: it goes in a new message.
    let mut m = machine_with(false, false, false);
    let mut out = start(&mut m);
    out.extend(m.handle(Time(221_000), Input::Tick));
    assert!(!drafts(&out), "{out:?}");
    assert!(looks_on_sent(&out), "{out:?}");
    let mut out = m.answer(221_100, "e1", look_not_found());
    for t in [223_000, 250_000, 400_000] {
        out.extend(m.handle(Time(t), Input::Tick));
    }
    assert!(drafts(&out), "mailed, once: {out:?}");
}

/// Seed 117521: as seed 4233, but the file's upload session (its last piece in doubt) was being
/// closed before the look when the agent crashed: the start found its session marked abandoned
/// and put it in a new message at once, beside the close: mailed twice. It waits for the close,
/// then the look, as one without a session does.
#[test]
fn a_file_closing_its_session_before_a_sent_copy_look_joins_no_message_at_start() {
    let mut r = bound_to_a_sent_copy(3_145_727);
    r.state = State::Uploading;
    r.may_exist = true;
    r.effect_at = Some(Time(600));
    r.bytes_sent = 2_097_152;
    r.session = Some(SessionMark {
        sent_end: 3_145_727,
        abandoned: true,
    });
    let mut m = machine_with(false, false, false);
    let mut out = m.handle(
        Time(100_000),
        Input::Start {
            records: vec![r],
            with_url: vec!["e1".into()],
            messages: Vec::new(),
        },
    );
    let drafts = |out: &[Action]| out.iter().any(|a| matches!(a, Action::CreateDraft { .. }));
    assert!(
        !drafts(&out),
        "no message before the close and the look: {out:?}"
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::DeleteSession { id, .. } if id == "e1")),
        "{out:?}"
    );
    out.extend(m.answer(
        100_050,
        "e1",
        Outcome::DeleteSession(DeleteOutcome::Deleted),
    ));
    for t in [101_000, 221_000] {
        out.extend(m.handle(Time(t), Input::Tick));
    }
    assert!(!drafts(&out), "{out:?}");
    assert!(
        out.iter().any(|a| matches!(a, Action::Look { id, target, .. } if id == "e1" && target.item_id == "sent7")),
        "{out:?}"
    );
    let out = m.answer(221_100, "e1", look_found("sent7-a0"));
    assert_eq!(last_persist(&out, "e1").map(|r| r.state), Some(State::Done));
    let later = m.handle(Time(400_000), Input::Tick);
    assert!(!drafts(&later), "never mailed again: {later:?}");
}

/// Seed 1012321: `retry` of a message every file of which left it (`noFilesLeft`, its draft
/// deleted) drafted it again with no file and sent it: an empty mail (there, its draft had
/// been sent by hand before, so the message went twice). Nothing is left to retry: it stays
/// as it is, and nothing is drafted.
#[test]
fn a_retry_of_a_message_with_no_files_left_drafts_nothing() {
    let mut m = machine_with(false, false, false);
    let mut rec = MessageRecord::drafting(
        "m1".into(),
        "mail".into(),
        "me".into(),
        Letter::default(),
        Vec::new(),
        true,
        1,
        Time(0),
    );
    rec.state = MessageState::Failed;
    rec.internet_message_id = Some("<d1@x>".into());
    rec.error = Some(Failure::new(NO_FILES_LEFT, "x"));
    let mut out = m.handle(
        Time(10),
        Input::Start {
            records: Vec::new(),
            with_url: Vec::new(),
            messages: vec![rec.clone()],
        },
    );
    out.extend(m.handle(
        Time(20),
        Input::RetryMessage {
            message: rec,
            records: Vec::new(),
        },
    ));
    for t in [1_000, 200_000, 400_000] {
        out.extend(m.handle(Time(t), Input::Tick));
    }
    assert!(
        !out.iter().any(|a| matches!(
            a,
            Action::CreateDraft { .. } | Action::SendDraft { .. } | Action::PersistMessage(_)
        )),
        "{out:?}"
    );
}

/// Seed 17887's case, unit-tested (the mutant `message.is_none() || !cancel_requested` in
/// `on_look` lived): a file the user canceled, in doubt on the sent copy of the message it
/// left, whose look answers not there, is canceled: it goes in no new message.
#[test]
fn a_canceled_file_not_found_in_a_sent_copy_ends_canceled_not_mailed() {
    let mut r = bound_to_a_sent_copy(10);
    r.state = State::Uploading;
    r.may_exist = true;
    r.cancel_requested = true;
    r.effect_at = Some(Time(600));
    let mut m = machine_with(false, false, false);
    let mut out = m.handle(
        Time(100_000),
        Input::Start {
            records: vec![r],
            with_url: Vec::new(),
            messages: Vec::new(),
        },
    );
    for t in [101_000, 221_000] {
        out.extend(m.handle(Time(t), Input::Tick));
    }
    assert!(
        out.iter().any(|a| matches!(a, Action::Look { id, target, .. } if id == "e1" && target.item_id == "sent7")),
        "{out:?}"
    );
    let mut out = m.answer(221_100, "e1", look_not_found());
    for t in [223_000, 250_000, 400_000] {
        out.extend(m.handle(Time(t), Input::Tick));
    }
    assert!(
        !out.iter().any(|a| matches!(a, Action::CreateDraft { .. })),
        "never mailed: {out:?}"
    );
    let last = last_persist(&out, "e1").expect("on record");
    assert_eq!(last.state, State::Canceled, "{last:?}");
}

/// Seed 243784 (the world's clocks): a file that joined a made draft in a later run, whose
/// wall clock had been set back, had a `created_at` older than its message's; the check for
/// rivals took it for one of the draft's first files, trusted the draft's age, and sent though
/// another agent's draft held the key (mailed twice). Whether a file joined late is the
/// ledger's order (`seq`), never the clock's.
#[test]
fn a_file_that_joined_in_a_later_run_with_the_clock_set_back_still_gives_way() {
    let sha2 = "cd".repeat(32);
    let mut msg = MessageRecord::drafting(
        "m1".into(),
        "mail".into(),
        "me".into(),
        Letter::default(),
        vec!["f2".into()],
        true,
        5,
        Time(900_000),
    );
    msg.state = MessageState::Attaching;
    msg.draft_id = Some("d1".into());
    let mut f2 = Record::pending(
        "f2".into(),
        "mail".into(),
        PathBuf::from("/mail/inv.pdf"),
        "inv.pdf".into(),
        super::tests::stat(8, 12),
        Some(sha2.clone()),
        9,
        // Made after the message, by a clock set back since.
        Time(800_000),
    );
    f2.message = Some("m1".into());
    f2.state = State::Done;
    f2.attachment_id = Some("att-f2".into());
    f2.target = Some(Target {
        user: "me".into(),
        kind: ItemKind::Message,
        item_id: "d1".into(),
    });
    let mut m = keyed();
    let mut w = World::new();
    w.t = 810_000;
    w.atts.insert("d1".into(), vec!["att-f2".into()]);
    let out = m.handle(
        Time(w.t),
        Input::Start {
            records: vec![f2],
            with_url: Vec::new(),
            messages: vec![msg],
        },
    );
    let find = |a: &Action| matches!(a, Action::FindMessage { .. });
    let mut out = out;
    for (folder, found) in [
        (MailFolder::SentItems, FindOutcome::NotFound),
        (
            MailFolder::Drafts,
            FindOutcome::Found {
                id: "d1".into(),
                is_draft: true,
                internet_message_id: None,
            },
        ),
    ] {
        let Some(Action::FindMessage { folder: f, .. }) = w.run(&mut m, out, find) else {
            panic!("looked for: {:?}", w.seen);
        };
        assert_eq!(f, folder);
        w.t += 100;
        out = m.handle(
            Time(w.t),
            Input::Outcome {
                id: "m1".into(),
                outcome: Outcome::Find(folder, found),
            },
        );
    }
    let a = w.run(&mut m, out, |a| is_rivals(a) || is_send(a));
    let Some(Action::FindRivals { id, draft_id, .. }) = a else {
        panic!("{a:?} after {:?}", w.seen);
    };
    // Another agent's draft, made after this one's, holds the file's key: it joined late,
    // so the other goes first.
    let out = checked(
        &mut m,
        w.t + 100,
        &id,
        Some(5_000),
        vec![KeyHolders {
            sent: None,
            drafts: vec![own(&draft_id, 5_000), other("d-theirs", Some(9_000))],
        }],
    );
    assert!(!out.iter().any(is_send), "{out:?}");
}

/// Seed 482373: two retries of a message and a cancel of its only file between them, taken in
/// one batch; the second retry's record of the file was read before the cancel (pending), and
/// the message took it over the canceled one it held: it waited for ever for a file that was
/// going nowhere. The newer record the message holds wins: the canceled file is retried.
#[test]
fn a_retry_with_a_stale_record_of_a_file_takes_the_newer_one_its_message_holds() {
    let mut m = machine_with(false, false, false);
    let mut f1 = Record::pending(
        "f1".into(),
        "mail".into(),
        PathBuf::from("/mail/a.pdf"),
        "a.pdf".into(),
        super::tests::stat(4, 10),
        Some(SHA.into()),
        2,
        Time(100),
    );
    f1.message = Some("m1".into());
    let stale = f1.clone();
    f1.state = State::Canceled;
    f1.updated_at = Time(200);
    let mut msg = MessageRecord::drafting(
        "m1".into(),
        "mail".into(),
        "me".into(),
        Letter::default(),
        vec!["f1".into()],
        true,
        1,
        Time(50),
    );
    msg.state = MessageState::Failed;
    msg.error = Some(Failure::new("ErrorItemNotFound", "x"));
    let _ = m.handle(
        Time(1_000),
        Input::Start {
            records: vec![f1],
            with_url: Vec::new(),
            messages: vec![msg.clone()],
        },
    );
    let out = m.handle(
        Time(2_000),
        Input::RetryMessage {
            message: msg,
            records: vec![stale],
        },
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Persist(r) if r.id == "f1" && r.state == State::Pending)),
        "the canceled file is retried with its message: {out:?}"
    );
}

/// The other side of seed 4233's start rule (a `cargo mutants` survivor: `may_exist && ..` →
/// `||`): a file in no message with nothing in doubt, though it still names the sent copy it
/// was last bound to, waits for no look at start: it goes in a new message.
#[test]
fn a_file_in_no_message_with_nothing_in_doubt_goes_in_a_new_message_at_start() {
    let r = bound_to_a_sent_copy(10);
    let mut m = machine_with(false, false, false);
    let mut out = m.handle(
        Time(100_000),
        Input::Start {
            records: vec![r],
            with_url: Vec::new(),
            messages: Vec::new(),
        },
    );
    for t in [101_000, 110_000, 200_000, 400_000] {
        out.extend(m.handle(Time(t), Input::Tick));
    }
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Look { id, target, .. } if id == "e1" && target.item_id == "sent7")),
        "no look for a copy never in doubt: {out:?}"
    );
    assert!(
        out.iter().any(|a| matches!(a, Action::CreateDraft { .. })),
        "mailed: {out:?}"
    );
}
