//! The mailbox as the record of last resort (SPEC 8): a mailing file's key is searched for
//! before the file is put in a message.

use super::super::*;

const SHA: &str = "abababababababababababababababababababababababababababababababab";

fn keyed_machine() -> Machine {
    keyed_machine_grouped(false)
}

fn keyed_machine_grouped(batch: bool) -> Machine {
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
            remember_sent_ms: 90 * 86_400_000,
            batch,
            batch_quiet_ms: if batch { 10_000 } else { 0 },
            batch_max_wait_ms: if batch { 60_000 } else { 0 },
            ..MailRule::default()
        }),
    };
    Machine::new(vec![rule], Policy::default())
}

/// A file settled and hashed at `t`; the actions answered.
fn drop(m: &mut Machine, t: u64, name: &str) -> Vec<Action> {
    let path = PathBuf::from(format!("/mail/{name}"));
    let st = FileStat {
        dev: 1,
        ino: 7,
        size: 10,
        mtime_ns: 1,
        ctime_ns: 1,
        owner: None,
    };
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
    out.extend(m.handle(
        Time(t + 5_001),
        Input::Hashed {
            path,
            result: HashResult::Hashed {
                sha256: SHA.into(),
                stat: st,
            },
        },
    ));
    out
}

fn key_asked(out: &[Action]) -> Option<(String, String)> {
    out.iter().find_map(|a| match a {
        Action::FindFileKey { id, key, .. } => Some((id.clone(), key.clone())),
        _ => None,
    })
}

fn drafted(out: &[Action]) -> bool {
    out.iter().any(|a| matches!(a, Action::CreateDraft { .. }))
}

fn answer(m: &mut Machine, t: u64, id: &str, k: KeyOutcome) -> Vec<Action> {
    m.handle(
        Time(t),
        Input::Outcome {
            id: id.into(),
            outcome: Outcome::Key(k),
        },
    )
}

fn holding(ours: bool) -> KeyOutcome {
    KeyOutcome::Drafted(vec![DraftHolding {
        message_id: "d-other".into(),
        marker: Some("m-other".into()),
        ours,
        subject: "Scan inv.pdf".into(),
    }])
}

#[test]
fn a_file_is_searched_for_by_its_key_before_any_draft_and_the_key_is_stamped_on_its_draft() {
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    assert!(!drafted(&out), "no draft before the search: {out:?}");
    let (id, key) = key_asked(&out).expect("its key is searched for");
    assert_eq!(
        key,
        file_key("me", "mail", Path::new("inv.pdf"), 10, SHA),
        "the key names the path under the folder"
    );
    let out = answer(&mut m, 7_000, &id, KeyOutcome::Drafted(Vec::new()));
    let keys = out.iter().find_map(|a| match a {
        Action::CreateDraft { keys, .. } => Some(keys.clone()),
        _ => None,
    });
    assert_eq!(
        keys,
        Some(vec![key]),
        "found nowhere: drafted with its key: {out:?}"
    );
}

#[test]
fn a_file_found_mailed_by_its_key_is_done_with_the_sent_copy_and_never_drafted() {
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let out = answer(
        &mut m,
        7_000,
        &id,
        KeyOutcome::Mailed {
            message_id: "sent-1".into(),
            internet_message_id: Some("<x@y>".into()),
            attachment_id: "att-s1".into(),
            marker: Some("m-lost".into()),
            ours: false,
        },
    );
    assert!(!drafted(&out), "{out:?}");
    let rec = out
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Persist(r) if r.id == id => Some(r.clone()),
            _ => None,
        })
        .expect("recorded");
    assert_eq!(rec.state, State::Done);
    assert_eq!(rec.attachment_id.as_deref(), Some("att-s1"));
    assert_eq!(
        rec.target.as_ref().map(|t| t.item_id.as_str()),
        Some("sent-1")
    );
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Notify(Note::FoundMailed { .. }))));
    // Nothing more ever: no draft, no second search.
    let later = m.handle(Time(600_000), Input::Tick);
    assert!(!drafted(&later) && key_asked(&later).is_none(), "{later:?}");
}

#[test]
fn a_file_mailed_by_a_message_of_its_own_ledger_is_a_new_drop_and_mailed() {
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let out = answer(
        &mut m,
        7_000,
        &id,
        KeyOutcome::Mailed {
            message_id: "sent-1".into(),
            internet_message_id: None,
            attachment_id: "att-s1".into(),
            marker: Some("m-mine".into()),
            ours: true,
        },
    );
    assert!(
        drafted(&out),
        "the ledger knows it mailed these bytes: {out:?}"
    );
}

#[test]
fn a_file_held_by_another_draft_waits_then_fails_explained_and_is_never_drafted() {
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let mut t = 7_000;
    let mut out = answer(&mut m, t, &id, holding(false));
    for n in 1..HELD_TRIES {
        assert!(!drafted(&out), "held: {out:?}");
        assert!(
            key_asked(&out).is_none(),
            "not asked again at once: {out:?}"
        );
        t += held_backoff_ms(Policy::default().look_after_ms, n);
        let woke = m.handle(Time(t), Input::Tick);
        assert!(
            key_asked(&woke).is_some(),
            "asked again after the wait: {woke:?}"
        );
        out = answer(&mut m, t, &id, holding(false));
    }
    assert!(!drafted(&out), "{out:?}");
    let failed = out.iter().find_map(|a| match a {
        Action::Notify(Note::Failed { failure, .. }) => Some(failure.clone()),
        _ => None,
    });
    let f = failed.expect("failed after the last look");
    assert_eq!(f.code, HELD_BY_DRAFT);
    assert!(f.message.contains("Scan inv.pdf"), "{}", f.message);
}

#[test]
fn a_draft_of_this_ledgers_own_message_holds_nothing() {
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let out = answer(&mut m, 7_000, &id, holding(true));
    assert!(drafted(&out), "{out:?}");
}

#[test]
fn a_held_file_is_asked_again_after_look_after_doubling_to_fifteen_minutes() {
    assert_eq!(held_backoff_ms(120_000, 1), 120_000);
    assert_eq!(held_backoff_ms(120_000, 2), 240_000);
    assert_eq!(held_backoff_ms(120_000, 3), 480_000);
    assert_eq!(held_backoff_ms(120_000, 4), 900_000);
    assert_eq!(held_backoff_ms(120_000, 40), 900_000);
    assert_eq!(held_backoff_ms(0, 1), 1, "never at once");
}

#[test]
fn a_file_searched_clear_then_canceled_before_its_batch_closes_is_in_no_message() {
    let mut m = keyed_machine_grouped(true);
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let out = answer(&mut m, 7_000, &id, KeyOutcome::Drafted(Vec::new()));
    assert!(!drafted(&out), "the batch is still open: {out:?}");
    let out = m.handle(Time(8_000), Input::Cancel { id: id.clone() });
    assert!(!drafted(&out), "{out:?}");
    let out = m.handle(Time(30_000), Input::Tick);
    assert!(!drafted(&out), "a canceled file makes no message: {out:?}");
}

fn mailed_record() -> Record {
    let mut r = Record::pending(
        "e-old".into(),
        "mail".into(),
        PathBuf::from("/mail/inv.pdf"),
        "inv.pdf".into(),
        FileStat {
            dev: 1,
            ino: 7,
            size: 10,
            mtime_ns: 1,
            ctime_ns: 1,
            owner: None,
        },
        Some(SHA.into()),
        1,
        Time(1_000),
    );
    r.state = State::Done;
    r.attachment_id = Some("att-1".into());
    r.after_done = true;
    r.resend = true;
    r
}

/// `retry --resend`: the request is taken first (the old record cleared and written before
/// the new version: a crash loses the request, never doubles it), then a new version is mailed
/// with no search of the mailbox.
fn resent(out: &[Action]) {
    let persists: Vec<&Record> = out
        .iter()
        .filter_map(|a| match a {
            Action::Persist(r) => Some(r),
            _ => None,
        })
        .collect();
    let first = persists.first().expect("persisted");
    assert_eq!(first.id, "e-old", "the request is taken first: {out:?}");
    assert!(!first.resend);
    let new = persists
        .iter()
        .find(|r| r.id != "e-old")
        .expect("a new version");
    assert!(new.mail_again, "{new:?}");
    assert!(
        key_asked(out).is_none(),
        "no search: the user asked: {out:?}"
    );
    assert!(drafted(out), "mailed again: {out:?}");
}

#[test]
fn resend_asked_of_a_running_agent_mails_a_new_version_without_a_search() {
    let mut m = keyed_machine();
    m.handle(
        Time(1_000),
        Input::Start {
            records: Vec::new(),
            with_url: Vec::new(),
            messages: Vec::new(),
        },
    );
    let out = m.handle(
        Time(2_000),
        Input::Retry {
            records: vec![mailed_record()],
        },
    );
    resent(&out);
}

#[test]
fn resend_asked_while_no_agent_ran_is_taken_at_start() {
    let mut m = keyed_machine();
    let out = m.handle(
        Time(2_000),
        Input::Start {
            records: vec![mailed_record()],
            with_url: Vec::new(),
            messages: Vec::new(),
        },
    );
    resent(&out);
    // Started again with the request taken: nothing more.
    let mut again = mailed_record();
    again.resend = false;
    let mut m = keyed_machine();
    let out = m.handle(
        Time(3_000),
        Input::Start {
            records: vec![again],
            with_url: Vec::new(),
            messages: Vec::new(),
        },
    );
    assert!(!drafted(&out), "{out:?}");
}
