//! The mailbox as the record of last resort (SPEC 8): a mailing file's key is searched for
//! before the file is put in a message.

use super::super::*;

const SHA: &str = "abababababababababababababababababababababababababababababababab";

pub(super) fn keyed_machine() -> Machine {
    keyed_machine_grouped(false)
}

fn keyed_machine_grouped(batch: bool) -> Machine {
    keyed_machine_with(batch, After::Keep)
}

fn keyed_machine_with(batch: bool, after: After) -> Machine {
    let rule = MappingRule {
        name: "mail".into(),
        target: Target {
            user: "me".into(),
            kind: ItemKind::Message,
            item_id: String::new(),
        },
        if_exists: IfExists::Attach,
        on_change: OnChange::Replace,
        after,
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
pub(super) fn drop(m: &mut Machine, t: u64, name: &str) -> Vec<Action> {
    super::tests::drop_version(m, t, name, super::tests::stat(7, 10), SHA)
}

pub(super) fn key_asked(out: &[Action]) -> Option<(String, String)> {
    out.iter().find_map(|a| match a {
        Action::FindFileKey { id, key, .. } => Some((id.clone(), key.clone())),
        _ => None,
    })
}

fn drafted(out: &[Action]) -> bool {
    out.iter().any(|a| matches!(a, Action::CreateDraft { .. }))
}

pub(super) fn answer(m: &mut Machine, t: u64, id: &str, k: KeyOutcome) -> Vec<Action> {
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
        created: None,
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
        file_key("me", "a@example.com", Path::new("inv.pdf"), 10, SHA),
        "the key names the recipients and the path under the folder"
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
    let out = answer(&mut m, 7_000, &id, mailed("att-s1"));
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

/// A version of `/mail/{name}` with other bytes, done (mailed) by this ledger.
fn start_with_other_bytes_done(m: &mut Machine, name: &str) {
    start_with_done(m, name, &"cd".repeat(32));
}

/// A version of `/mail/{name}` (another file: inode 6) with bytes `sha`, done by this ledger
/// with attachment `att-0` on item `sent-0`.
fn start_with_done(m: &mut Machine, name: &str, sha: &str) {
    let mut rec = Record::pending(
        "e-old".into(),
        "mail".into(),
        PathBuf::from(format!("/mail/{name}")),
        name.into(),
        FileStat {
            dev: 1,
            ino: 6,
            size: 10,
            mtime_ns: 0,
            ctime_ns: 0,
            owner: None,
        },
        Some(sha.to_owned()),
        0,
        Time(0),
    );
    rec.state = State::Done;
    rec.attachment_id = Some("att-0".into());
    rec.target = Some(Target {
        user: "me".into(),
        kind: ItemKind::Message,
        item_id: "sent-0".into(),
    });
    rec.after_done = true;
    let _ = m.handle(
        Time(10),
        Input::Start {
            records: vec![rec],
            with_url: Vec::new(),
            messages: Vec::new(),
        },
    );
}

#[test]
fn a_file_mailed_by_a_message_of_its_own_ledger_is_a_new_drop_and_mailed() {
    let mut m = keyed_machine();
    // These bytes went from this path, then others: these are dropped again.
    start_with_other_bytes_done(&mut m, "inv.pdf");
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let out = answer(
        &mut m,
        7_000,
        &id,
        mailed_by("sent-1", "att-s1", "m-mine", true),
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

/// A sent copy of a lost ledger's carrying the key, with attachment `att`.
fn mailed(att: &str) -> KeyOutcome {
    KeyOutcome::Mailed {
        message_id: "sent-1".into(),
        internet_message_id: Some("<x@y>".into()),
        attachment_id: att.into(),
        marker: Some("m-lost".into()),
        ours: false,
    }
}

/// A sent copy `message_id` carrying the key, with attachment `att`, under `marker` (`ours`:
/// a message this ledger has on record).
fn mailed_by(message_id: &str, att: &str, marker: &str, ours: bool) -> KeyOutcome {
    KeyOutcome::Mailed {
        message_id: message_id.into(),
        internet_message_id: None,
        attachment_id: att.into(),
        marker: Some(marker.into()),
        ours,
    }
}

fn last_persist(out: &[Action], id: &str) -> Option<Record> {
    out.iter().rev().find_map(|a| match a {
        Action::Persist(r) if r.id == id => Some(r.clone()),
        _ => None,
    })
}

/// Drive the machine with Ticks until quiet, answering nothing; every action collected.
fn settle_out(m: &mut Machine, t: u64) -> Vec<Action> {
    let mut all = Vec::new();
    for k in 0..5 {
        all.extend(m.handle(Time(t + k * 1_000), Input::Tick));
    }
    all
}

/// Review of issue 20, finding 1: `verify` advises `outbox retry ID` for a file found mailed
/// (its `message` is null) whose sent copy's attachment it could not read; the retry put the
/// sent copy's attachment in `replaces`, the search found the file mailed again (the same
/// attachment), and the entry then deleted that attachment from the user's Sent Items copy.
#[test]
fn a_retried_found_mailed_file_never_deletes_the_sent_copys_attachment() {
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let out = answer(&mut m, 7_000, &id, mailed("att-s1"));
    let done = last_persist(&out, &id).expect("recorded done");
    assert_eq!(done.state, State::Done);
    let _ = settle_out(&mut m, 8_000);
    // `outbox retry ID` of the done entry, as verify advises.
    let done = Record {
        verify_failed: true,
        ..done
    };
    let mut out = m.handle(
        Time(20_000),
        Input::Retry {
            records: vec![done],
        },
    );
    out.extend(settle_out(&mut m, 20_001));
    let (id2, _) = key_asked(&out).expect("searched again");
    let mut out = answer(&mut m, 30_000, &id2, mailed("att-s1"));
    out.extend(settle_out(&mut m, 30_001));
    let deletes: Vec<&Action> = out
        .iter()
        .filter(|a| matches!(a, Action::DeleteAttachment { .. }))
        .collect();
    assert!(
        deletes.is_empty(),
        "the sent copy's attachment is deleted: {deletes:?}"
    );
}

/// Cancel while the key search is in flight: nothing is drafted, the entry ends canceled.
#[test]
fn a_file_canceled_during_its_key_search_is_never_drafted() {
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let mut out = m.handle(Time(6_000), Input::Cancel { id: id.clone() });
    out.extend(answer(&mut m, 7_000, &id, KeyOutcome::Drafted(Vec::new())));
    out.extend(settle_out(&mut m, 8_000));
    out.extend(m.handle(Time(600_000), Input::Tick));
    assert!(!drafted(&out), "{out:?}");
    let rec = last_persist(&out, &id).expect("recorded");
    assert_eq!(rec.state, State::Canceled, "{rec:?}");
}

/// A retried heldByDraft file gets its looks again, not one.
#[test]
fn a_retried_held_file_is_looked_for_again_before_it_fails() {
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let mut t = 7_000;
    let mut out = answer(&mut m, t, &id, holding(false));
    for n in 1..HELD_TRIES {
        t += held_backoff_ms(Policy::default().look_after_ms, n);
        let _ = m.handle(Time(t), Input::Tick);
        out = answer(&mut m, t, &id, holding(false));
    }
    let failed = last_persist(&out, &id).expect("failed");
    assert_eq!(failed.state, State::Failed);
    t += 1_000;
    let out = m.handle(
        Time(t),
        Input::Retry {
            records: vec![failed],
        },
    );
    let (id2, _) = key_asked(&out).expect("searched again");
    let out = answer(&mut m, t + 1, &id2, holding(false));
    let rec = last_persist(&out, &id2).expect("recorded");
    assert_ne!(rec.state, State::Failed, "failed after one look: {rec:?}");
}

/// Review of issue 20, finding 2: the mapping's folder moved with its files (ledger intact):
/// the key (path under the folder) is found in a sent copy of this ledger's own, but no
/// version of this path was ever done here: the same file, found mailed, not mailed again.
#[test]
fn a_file_found_in_a_sent_copy_of_its_own_ledger_with_no_version_done_here_is_not_mailed_again() {
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let out = answer(
        &mut m,
        7_000,
        &id,
        mailed_by("sent-1", "att-s1", "m-mine", true),
    );
    assert!(!drafted(&out), "{out:?}");
    let rec = last_persist(&out, &id).expect("recorded");
    assert_eq!(rec.state, State::Done, "{rec:?}");
}

/// Review of issue 20, finding 4: the key read a path that is not UTF-8 lossily, so two files
/// whose names differ only in their non-UTF-8 bytes (`a\xff.pdf`, `a\xfe.pdf`; their
/// attachment names are both `a\u{FFFD}.pdf`) with the same bytes had one key: after a lost
/// state dir the second, never mailed, was found "mailed" in the first one's sent copy.
/// Review of #20, finding 3: the key named the mapping, so renaming a mailing mapping mailed
/// every file still in its folder again. The key names where the mapping sends: its name, the
/// order of addresses, their case and their field (`to`, `cc`, `bcc`) change nothing; another
/// set of recipients is another key.
#[test]
fn the_key_names_the_recipients_not_the_mapping_name() {
    let rule = |to: &[&str], cc: &[&str]| MailRule {
        to: to.iter().map(|s| s.to_string()).collect(),
        cc: cc.iter().map(|s| s.to_string()).collect(),
        ..keyed_machine().mappings["mail"]
            .mail
            .clone()
            .expect("mails")
    };
    let a = recipients_id(&rule(&["B@example.com", "a@example.com"], &[]));
    assert_eq!(a, "a@example.com,b@example.com");
    assert_eq!(
        a,
        recipients_id(&rule(&["a@example.com"], &["b@example.com"]))
    );
    assert_eq!(
        a,
        recipients_id(&rule(
            &["a@example.com", "b@example.com"],
            &["A@example.com"]
        ))
    );
    assert_ne!(a, recipients_id(&rule(&["a@example.com"], &[])));
    // The machine's key follows a rename of the mapping.
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, before) = key_asked(&out).expect("its key is searched for");
    let mut renamed = keyed_machine();
    let mut mapping = renamed.mappings.remove("mail").expect("the mapping");
    mapping.name = "invoices-2026".into();
    renamed.mappings.insert("invoices-2026".into(), mapping);
    let rec = m.record(&id).expect("its record").clone();
    let rec = Record {
        mapping: "invoices-2026".into(),
        ..rec
    };
    assert_eq!(renamed.key_of(&rec), Some(before));
}

#[cfg(unix)]
#[test]
fn names_differing_only_in_bytes_that_are_not_utf8_have_different_keys() {
    use std::os::unix::ffi::OsStrExt;
    let a = Path::new(std::ffi::OsStr::from_bytes(b"sub/a\xff.pdf"));
    let b = Path::new(std::ffi::OsStr::from_bytes(b"sub/a\xfe.pdf"));
    assert_ne!(
        file_key("me", "a@example.com", a, 10, SHA),
        file_key("me", "a@example.com", b, 10, SHA)
    );
    // A UTF-8 path's key is pinned (a change of the key's inputs bumps its version tag).
    assert_eq!(
        file_key("me", "a@example.com", Path::new("sub/inv.pdf"), 10, SHA),
        "0d6e5a8f327d7bbf4d5bb72eb4c31e12"
    );
}

/// Review of issue 20, finding 6: the same bytes dropped again at a mailed file's path are a
/// new request (`mail_again`) but are searched for too: a ledger restored from a backup taken
/// before that drop was mailed (by the lost later ledger) finds it in a sent copy it does not
/// know, and does not mail it again; the sent copy it recorded the first drop found in, or
/// one of its own, means a new drop, mailed.
#[test]
fn a_drop_again_mailed_by_a_lost_later_ledger_is_found_mailed_not_mailed_twice() {
    let mailed_in =
        |message_id: &str, marker: &str, ours: bool| mailed_by(message_id, "att-x", marker, ours);
    // The lost later ledger's copy: found mailed.
    let mut m = keyed_machine();
    start_with_done(&mut m, "inv.pdf", SHA);
    let out = drop(&mut m, 1_000, "inv.pdf");
    assert!(!drafted(&out), "{out:?}");
    let (id, _) = key_asked(&out).expect("a drop again is searched for too");
    let out = answer(&mut m, 7_000, &id, mailed_in("sent-9", "m-later", false));
    assert!(!drafted(&out), "{out:?}");
    assert_eq!(
        last_persist(&out, &id).map(|r| r.state),
        Some(State::Done),
        "{out:?}"
    );
    // The copy the first drop was found mailed in: a new drop, mailed.
    let mut m = keyed_machine();
    start_with_done(&mut m, "inv.pdf", SHA);
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let out = answer(&mut m, 7_000, &id, mailed_in("sent-0", "m-lost", false));
    assert!(drafted(&out), "{out:?}");
    // A copy of this ledger's own: a new drop, mailed.
    let mut m = keyed_machine();
    start_with_done(&mut m, "inv.pdf", SHA);
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let out = answer(&mut m, 7_000, &id, mailed_in("sent-1", "m-mine", true));
    assert!(drafted(&out), "{out:?}");
}

/// A held file canceled while it waits for its next look ends canceled, never searched or
/// drafted again.
#[test]
fn a_held_file_canceled_while_it_waits_ends_canceled() {
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let _ = answer(&mut m, 7_000, &id, holding(false));
    let mut out = m.handle(Time(8_000), Input::Cancel { id: id.clone() });
    out.extend(settle_out(&mut m, 9_000));
    out.extend(m.handle(Time(3_600_000), Input::Tick));
    assert!(!drafted(&out) && key_asked(&out).is_none(), "{out:?}");
    assert_eq!(
        last_persist(&out, &id).map(|r| r.state),
        Some(State::Canceled),
        "{out:?}"
    );
}

#[test]
fn a_file_found_mailed_in_a_moving_folder_is_moved_its_sent_copy_being_seen() {
    let mut m = keyed_machine_with(false, After::Move);
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    let out = answer(&mut m, 7_000, &id, mailed("att-s1"));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::After { id: x, after: After::Move, .. } if *x == id)),
        "its after-action runs: {out:?}"
    );
}

#[test]
fn a_held_file_found_clear_at_last_loses_its_held_note_before_it_is_mailed() {
    let mut m = keyed_machine();
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (id, _) = key_asked(&out).expect("searched");
    answer(&mut m, 7_000, &id, holding(false));
    let t = 7_000 + held_backoff_ms(Policy::default().look_after_ms, 1);
    let woke = m.handle(Time(t), Input::Tick);
    assert!(key_asked(&woke).is_some(), "{woke:?}");
    let out = answer(&mut m, t, &id, KeyOutcome::Drafted(Vec::new()));
    // The draft that held it may be caught in Exchange's move (sent, not yet in Sent Items):
    // searched once more after the move has surely had time, then mailed.
    assert!(!drafted(&out) && key_asked(&out).is_none(), "{out:?}");
    let t = t + super::move_grace_ms(Policy::default().look_after_ms);
    let woke = m.handle(Time(t), Input::Tick);
    assert!(key_asked(&woke).is_some(), "{woke:?}");
    let out = answer(&mut m, t, &id, KeyOutcome::Drafted(Vec::new()));
    let rec = last_persist(&out, &id).expect("written again");
    assert_eq!(rec.error, None, "the held note goes: {rec:?}");
    assert!(drafted(&out), "{out:?}");
}

#[test]
fn a_newer_version_that_took_a_place_on_a_made_draft_has_its_key_stamped_before_its_bytes_and_the_send(
) {
    let mut m = keyed_machine_grouped(true);
    let out = drop(&mut m, 1_000, "inv.pdf");
    let (v1, k1) = key_asked(&out).expect("searched");
    answer(&mut m, 7_000, &v1, KeyOutcome::Drafted(Vec::new()));
    let out = m.handle(Time(20_000), Input::Tick);
    let (mid, keys) = out
        .iter()
        .find_map(|a| match a {
            Action::CreateDraft { id, keys, .. } => Some((id.clone(), keys.clone())),
            _ => None,
        })
        .expect("the batch closed: a draft");
    assert_eq!(keys, vec![k1.clone()]);
    // A newer version settles while the draft is being made: it takes the older one's place.
    let sha2 = "cd".repeat(32);
    let out =
        super::tests::drop_version(&mut m, 21_000, "inv.pdf", super::tests::stat(8, 12), &sha2);
    assert!(key_asked(&out).is_none(), "it joins the message: {out:?}");
    let k2 = file_key("me", "a@example.com", Path::new("inv.pdf"), 12, &sha2);
    let out = m.handle(
        Time(27_000),
        Input::Outcome {
            id: mid.clone(),
            outcome: Outcome::CreateDraft(DraftOutcome::Created {
                draft_id: "d1".into(),
                internet_message_id: None,
            }),
        },
    );
    // The newer version's key goes on the draft before its bytes (a send from Outlook between
    // the two would carry its bytes without its key, issue 20): the draft's keys and the new
    // one, since the older version's copy may still be on it.
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Post { .. } | Action::CreateSession { .. })),
        "nothing of the newer version before its key: {out:?}"
    );
    let early = out.iter().find_map(|a| match a {
        Action::StampKeys { keys, .. } => Some(keys.clone()),
        _ => None,
    });
    assert_eq!(early, Some(vec![k1.clone(), k2.clone()]), "{out:?}");
    let mut out = m.handle(
        Time(27_500),
        Input::Outcome {
            id: mid.clone(),
            outcome: Outcome::StampKeys(Ok(())),
        },
    );
    // Its file posts to the draft; answered, the message goes to its send.
    let mut t = 28_000;
    for _ in 0..6 {
        let post = out.iter().find_map(|a| match a {
            Action::Post { id, .. } => Some(id.clone()),
            _ => None,
        });
        let Some(id) = post else { break };
        out = m.handle(
            Time(t),
            Input::Outcome {
                id,
                outcome: Outcome::Post(PostOutcome::Created {
                    attachment_id: "att-2".into(),
                }),
            },
        );
        t += 1_000;
    }
    let stamp = out.iter().find_map(|a| match a {
        Action::StampKeys { keys, .. } => Some(keys.clone()),
        _ => None,
    });
    assert_eq!(
        stamp,
        Some(vec![k2]),
        "stamped before any listing or send: {out:?}"
    );
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::ListDraft { .. } | Action::SendDraft { .. })),
        "{out:?}"
    );
}
