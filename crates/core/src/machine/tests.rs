use super::test_support::*;
use super::*;

#[test]
fn the_size_rule_at_its_edges() {
    // Under the session minimum: always one POST.
    assert!(uses_post(0, "a.pdf"));
    assert!(uses_post(MIN_SESSION - 1, "a.pdf"));
    // Between: a POST while its body fits 4 MiB.
    assert!(uses_post(MIN_SESSION, "a.pdf"));
    assert!(uses_post(SESSION_THRESHOLD - 1 - 3 * 1024, "a.pdf"));
    // 3 MiB and over: a session.
    assert!(!uses_post(SESSION_THRESHOLD, "a.pdf"));
    assert!(!uses_post(SESSION_THRESHOLD + 1, "a.pdf"));
    // Just under 3 MiB, the base64 body passes 4 MiB: a session.
    assert!(!uses_post(SESSION_THRESHOLD - 1, "a.pdf"));
    // A long name pushes a file that would fit over the limit.
    let size = MAX_REQUEST_BODY / 4 * 3 - 200;
    assert!(uses_post(size, "a.pdf"));
    assert!(!uses_post(size, &"n".repeat(400)));
    // Too small for a session: a POST whatever the name makes of the body; at the session
    // minimum, the body decides.
    let huge = "n".repeat(2 << 20);
    assert!(uses_post(MIN_SESSION - 1, &huge));
    assert!(!uses_post(MIN_SESSION, &huge));
}

#[test]
fn the_post_body_is_measured_exactly() {
    let fixed = r##"{"@odata.type":"#microsoft.graph.fileAttachment","name":,"contentType":,"contentBytes":""}"##.len() as u64;
    // "a.pdf" and "application/pdf", quoted; 3 bytes encode to 4.
    assert_eq!(post_body_len(3, "a.pdf"), fixed + 7 + 17 + 4);
    assert_eq!(post_body_len(4, "a.pdf"), fixed + 7 + 17 + 8);
    assert_eq!(post_body_len(0, "x"), fixed + 3 + 26);
    // A quote in the name is escaped.
    assert_eq!(post_body_len(0, "\"") - post_body_len(0, "x"), 1);
}

/// Drive one small file through the machine: a POST whose answer is lost (ambiguous) only
/// after `answer_after_ms`, then wake-ups until the look. Answers the time of the look.
fn look_time_after_a_lost_post(answer_after_ms: u64, look_after_ms: u64) -> u64 {
    let target = Target {
        user: "me".into(),
        kind: ItemKind::Message,
        item_id: "item".into(),
    };
    let rule = MappingRule {
        name: "m".into(),
        target,
        if_exists: IfExists::Attach,
        on_change: OnChange::Add,
        after: After::Keep,
        mail: None,
    };
    let policy = Policy {
        look_after_ms,
        ..Policy::default()
    };
    let mut m = Machine::new(vec![rule], policy);
    let file = FileStat {
        dev: 1,
        ino: 2,
        size: 10,
        mtime_ns: 1,
        ctime_ns: 1,
        owner: None,
    };
    let rec = Record::pending(
        "e1".into(),
        "m".into(),
        "/f/a.txt".into(),
        "a.txt".into(),
        file,
        Some("ab".repeat(32)),
        1,
        Time(0),
    );
    let mut now = Time(0);
    let mut actions = m.start_up(now.0, vec![rec]);
    let mut posted = None;
    for _ in 0..100 {
        let mut wake = None;
        for a in std::mem::take(&mut actions) {
            match a {
                Action::Stat { path } => actions.extend(m.handle(
                    now,
                    Input::Stat {
                        path,
                        stat: Some(file),
                    },
                )),
                Action::Hash { path, stat, .. } => actions.extend(m.handle(
                    now,
                    Input::Hashed {
                        path,
                        result: HashResult::Hashed {
                            sha256: "ab".repeat(32),
                            stat,
                        },
                    },
                )),
                Action::Post { id, .. } => {
                    assert!(posted.is_none(), "a second POST before any look");
                    posted = Some(now);
                    now = now.plus_ms(answer_after_ms);
                    let lost = PostOutcome::Failed(ambiguous("ConnectionDropped", "lost"));
                    actions.extend(m.answer(now.0, &id, Outcome::Post(lost)));
                }
                Action::Look { .. } => return now.0,
                Action::WakeAt(t) => wake = Some(t),
                _ => {}
            }
        }
        if actions.is_empty() {
            let t = wake.expect("the machine waits for something");
            now = now.max(t);
            actions = m.handle(now, Input::Tick);
        }
    }
    panic!("no look");
}

#[test]
fn the_look_after_a_lost_answer_waits_from_when_the_answer_ended() {
    // A POST that took 3 s to be lost could take effect at any moment of those 3 s: the
    // look comes `look_after` after its end, not after it was sent (a listing that lags
    // behind the write would not show it yet, and the file would go twice).
    let t = look_time_after_a_lost_post(3_000, 2_000);
    assert!(t >= 5_000, "looked at {t} ms");
    // A quick loss: the backoff, then the look, no later than needed.
    let t = look_time_after_a_lost_post(10, 2_000);
    assert!((2_010..=2_010 + 2_000).contains(&t), "looked at {t} ms");
}

pub(super) fn rule(if_exists: IfExists, after: After) -> MappingRule {
    MappingRule {
        name: "m".into(),
        target: Target {
            user: "me".into(),
            kind: ItemKind::Message,
            item_id: "item".into(),
        },
        if_exists,
        on_change: OnChange::Replace,
        after,
        mail: None,
    }
}

/// Issue #22 (noticed by the CLI round): a pending entry whose mapping was removed from the
/// config fails (`mappingRemoved`) and `run --once` then ends, instead of waiting for ever.
#[test]
fn an_entry_of_a_removed_mapping_fails_and_leaves_the_machine_quiescent() {
    let mut m = Machine::new(vec![rule(IfExists::Skip, After::Keep)], Policy::default());
    let rec = Record::pending(
        "e9".into(),
        "gone".into(),
        "/g/x.txt".into(),
        "x.txt".into(),
        FileStat {
            dev: 1,
            ino: 9,
            size: 3,
            mtime_ns: 1,
            ctime_ns: 1,
            owner: None,
        },
        Some("cd".repeat(32)),
        1,
        Time(0),
    );
    let mut out = m.start_up(0, vec![rec]);
    out.extend(m.handle(Time(10), Input::Tick));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Persist(r) if r.state == State::Failed)),
        "{out:?}"
    );
    assert!(
        m.quiescent() || m.only_blocked(),
        "still at work: {:?}",
        m.active()
            .map(|(r, t)| (r.id.clone(), r.state, t))
            .collect::<Vec<_>>()
    );
}

fn done_record() -> Record {
    let mut r = Record::pending(
        "e1".into(),
        "m".into(),
        "/f/a.txt".into(),
        "a.txt".into(),
        FileStat {
            size: 10,
            ..FileStat::default()
        },
        Some("ab".repeat(32)),
        1,
        Time(1),
    );
    r.state = State::Done;
    r.target = Some(rule(IfExists::Skip, After::Keep).target);
    r.attachment_id = Some("bad".into());
    r.after_done = true;
    r
}

/// [`done_record`] as `outbox verify` left it when it found its attachment wrong: `retry`
/// attaches it again.
fn found_wrong() -> Record {
    Record {
        verify_failed: true,
        ..done_record()
    }
}

fn persisted(actions: &[Action]) -> Option<&Record> {
    actions.iter().rev().find_map(|a| match a {
        Action::Persist(r) => Some(r),
        _ => None,
    })
}

#[test]
fn a_file_seen_as_its_done_record_is_not_settled_and_a_changed_one_is() {
    // Start-up scans every done file: those unchanged must cost nothing (no settling, no
    // stat, no hash); one whose ctime moved settles; one with an after-action still to
    // run settles too (it runs only on bytes confirmed again).
    let mut m = Machine::new(vec![rule(IfExists::Skip, After::Keep)], Policy::default());
    let rec = done_record();
    let mut waiting = done_record();
    waiting.id = "e2".into();
    waiting.path = "/f/b.txt".into();
    waiting.name = "b.txt".into();
    waiting.after_done = false;
    m.start_up(10, vec![rec.clone(), waiting.clone()]);
    let seen = |path: &Path, stat| Input::Observed {
        mapping: "m".into(),
        path: path.to_path_buf(),
        stat,
    };
    m.handle(Time(11), seen(&rec.path, rec.file));
    assert!(m.settler().is_empty(), "an unchanged done file settles");
    m.handle(Time(12), seen(&waiting.path, waiting.file));
    assert!(m.settler().is_settling(&waiting.path));
    let mut touched = rec.file;
    touched.ctime_ns += 1;
    m.handle(Time(13), seen(&rec.path, touched));
    assert!(m.settler().is_settling(&rec.path));
    assert_eq!(m.settler().len(), 2);
}

#[test]
fn retrying_a_done_entry_attaches_again_then_deletes_the_bad_copy() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let rec = found_wrong();
    assert!(m
        .handle(
            Time(10),
            Input::Start {
                records: vec![rec.clone()],
                with_url: vec![],
                messages: vec![],
            }
        )
        .is_empty());
    let out = m.handle(Time(20), Input::Retry { records: vec![rec] });
    // It looks first (a fresh listing, by the bytes): the recorded copy may be good.
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Look { id, recent_ok: false, .. } if id == "e1")));
    assert!(!out.iter().any(|a| matches!(a, Action::Post { .. })));
    let out = m.answer(25, "e1", look_not_found());
    let r = persisted(&out).expect("persisted");
    assert_eq!(r.state, State::Uploading);
    assert_eq!(r.attachment_id, None);
    assert_eq!(
        r.replaces,
        vec![Replaced {
            entry: "e1".into(),
            attachment_id: "bad".into()
        }]
    );
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Post { id, .. } if id == "e1")));
    // The new copy is there: the bad one is deleted, by its recorded id.
    let out = m.answer(30, "e1", post_created("good"));
    assert!(out.iter().any(|a| matches!(
        a,
        Action::DeleteAttachment { attachment_id, .. } if attachment_id == "bad"
    )));
    assert!(!out.iter().any(
        |a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if attachment_id == "good")
    ));
    let out = m.answer(40, "e1", attachment_deleted());
    let r = persisted(&out).expect("persisted");
    assert_eq!(r.state, State::Done);
    assert_eq!(r.attachment_id.as_deref(), Some("good"));
    assert!(r.replaces.is_empty() && !r.replaced, "{r:?}");
    assert!(!out.iter().any(|a| matches!(a, Action::MarkReplaced { .. })));
    assert!(m.quiescent());
}

#[test]
fn a_re_attach_that_finds_its_own_recorded_copy_deletes_nothing() {
    let mut m = Machine::new(vec![rule(IfExists::Skip, After::Keep)], Policy::default());
    let rec = found_wrong();
    m.handle(Time(10), Input::Retry { records: vec![rec] });
    let out = m.answer(30, "e1", look_found("bad"));
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::DeleteAttachment { .. })));
    let r = persisted(&out).expect("persisted");
    assert_eq!(
        (r.state, r.attachment_id.as_deref()),
        (State::Done, Some("bad"))
    );
    assert!(r.replaces.is_empty());
}

#[test]
fn retrying_a_failed_after_action_runs_it_again_and_attaches_nothing() {
    let mut m = Machine::new(vec![rule(IfExists::Skip, After::Move)], Policy::default());
    let mut rec = done_record();
    rec.after_failed = true;
    rec.error = Some(Failure::new("afterAction", "read-only"));
    let out = m.handle(Time(10), Input::Retry { records: vec![rec] });
    let r = persisted(&out).expect("persisted");
    assert!(!r.after_done && !r.after_failed && r.error.is_none());
    assert_eq!(r.attachment_id.as_deref(), Some("bad"));
    assert!(out.iter().any(|a| matches!(a, Action::After { .. })));
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::Post { .. } | Action::Look { .. })));
}

#[test]
fn retry_in_each_state_by_the_one_rule() {
    let now = Time(50);
    // Failed (bound to an item, out of attempts): pending again, counts and error cleared;
    // the item stays on record.
    let mut failed = done_record();
    failed.state = State::Failed;
    failed.attachment_id = None;
    failed.attempts = 3;
    failed.restarts = 2;
    failed.error = Some(Failure::new("ErrorAccessDenied", "no"));
    failed.cancel_requested = true;
    let mut r = failed.clone();
    assert_eq!(r.retried(now), Retried::Queued);
    assert_eq!(
        (
            r.state,
            r.attempts,
            r.restarts,
            r.error.clone(),
            r.cancel_requested
        ),
        (State::Pending, 0, 0, None, false)
    );
    assert_eq!(
        (r.target.clone(), r.updated_at),
        (failed.target.clone(), now)
    );
    // Canceled and (by request) rejected alike.
    for state in [State::Canceled, State::Rejected] {
        let mut r = Record {
            state,
            ..failed.clone()
        };
        assert_eq!(r.retried(now), Retried::Queued, "{state:?}");
        assert_eq!(r.state, State::Pending);
    }
    // Done with its attachment on record, found wrong by `verify`: attached again, the
    // recorded one then deleted, and no longer marked wrong.
    let mut r = found_wrong();
    assert_eq!(r.retried(now), Retried::Queued);
    assert!(!r.verify_failed);
    assert_eq!(
        (r.state, r.attachment_id.clone(), r.bytes_sent, r.may_exist),
        (State::Pending, None, 0, false)
    );
    assert_eq!(
        r.replaces,
        vec![Replaced {
            entry: "e1".into(),
            attachment_id: "bad".into()
        }]
    );
    // Done, its after-action failed: still done, the after-action to do again.
    let mut r = done_record();
    r.after_failed = true;
    r.error = Some(Failure::new("afterAction", "read-only"));
    assert_eq!(r.retried(now), Retried::After);
    assert_eq!(r.state, State::Done);
    assert!(!r.after_done && !r.after_failed && r.error.is_none());
    assert_eq!(r.attachment_id.as_deref(), Some("bad"));
    // Nothing to retry: left exactly as it was.
    let mut bare = found_wrong();
    bare.attachment_id = None;
    for before in [
        bare,
        // Done, and `verify` found nothing wrong: its attachment is as sent.
        done_record(),
        pending_record("p1", 2),
        Record {
            state: State::Uploading,
            ..pending_record("u1", 3)
        },
    ] {
        let mut r = before.clone();
        assert_eq!(r.retried(now), Retried::Nothing);
        assert_eq!(r, before);
    }
}

#[test]
fn the_machine_persists_a_retried_record_as_the_rule_writes_it_for_the_offline_cli() {
    // `outbox retry` with no agent writes `Record::retried` to the ledger; the agent's machine
    // must persist the very same record, or the next start would differ by who retried.
    let mut failed = done_record();
    failed.state = State::Failed;
    failed.attachment_id = None;
    failed.attempts = 3;
    failed.error = Some(Failure::new("ErrorAccessDenied", "no"));
    let mut after = done_record();
    after.after_failed = true;
    after.after_done = false;
    let mut bare = done_record();
    bare.attachment_id = None;
    for (rule_of, rec) in [
        (After::Keep, failed.clone()),
        (
            After::Keep,
            Record {
                state: State::Canceled,
                ..failed.clone()
            },
        ),
        (
            After::Keep,
            Record {
                state: State::Rejected,
                ..failed
            },
        ),
        (After::Keep, found_wrong()),
        (After::Keep, done_record()),
        (After::Move, after),
        (After::Keep, bare),
    ] {
        let mut m = Machine::new(vec![rule(IfExists::Attach, rule_of)], Policy::default());
        let out = m.handle(
            Time(20),
            Input::Retry {
                records: vec![rec.clone()],
            },
        );
        let first = out.iter().find_map(|a| match a {
            Action::Persist(r) => Some(r),
            _ => None,
        });
        let mut offline = rec.clone();
        match offline.retried(Time(20)) {
            Retried::Nothing => assert!(first.is_none(), "{rec:?}: {out:?}"),
            _ => assert_eq!(first, Some(&offline), "{rec:?}"),
        }
    }
}

#[test]
fn a_sign_in_pause_is_told_and_blocks_only_what_is_not_in_flight() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let mut rec = done_record();
    rec.state = State::Pending;
    rec.attachment_id = None;
    let mut two = rec.clone();
    two.id = "e2".into();
    two.path = "/f/b.txt".into();
    two.name = "b.txt".into();
    two.seq = 2;
    let out = m.start_up(10, vec![rec, two]);
    let posts = out
        .iter()
        .filter(|a| matches!(a, Action::Post { .. }))
        .count();
    assert_eq!(posts, 2, "{out:?}");
    assert!(m.sign_in_pause().is_none());
    assert!(!m.only_blocked(), "two requests in flight");
    let _ = m.answer(
        20,
        "e1",
        post_failed(sign_in("InvalidAuthenticationToken", "sign in")),
    );
    let (until, why) = m.sign_in_pause().expect("paused");
    assert_eq!(until, Time(20).plus_ms(Policy::default().sign_in_pause_ms));
    assert_eq!(why.code, "InvalidAuthenticationToken");
    // e2's request is still in flight: `run --once` waits for it.
    assert!(!m.only_blocked());
    let _ = m.answer(
        30,
        "e2",
        post_failed(sign_in("InvalidAuthenticationToken", "sign in")),
    );
    // Now everything waits for sign-in only.
    assert!(m.only_blocked() && !m.quiescent());
}

#[test]
fn start_up_reconciles_records_with_the_saved_upload_urls() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let big = FileStat {
        size: 5 << 20,
        ..FileStat::default()
    };
    // A record says a session is open, but its URL file is gone.
    let mut lost = done_record();
    lost.state = State::Uploading;
    lost.attachment_id = None;
    lost.file = big;
    lost.session = Some(SessionMark {
        sent_end: 4096,
        abandoned: false,
    });
    // A URL was saved, but the record was not written after it (a crash between).
    let mut saved = lost.clone();
    saved.id = "e2".into();
    saved.path = "/f/b.txt".into();
    saved.name = "b.txt".into();
    saved.seq = 2;
    saved.session = None;
    // A URL its record no longer holds: bound to no item (its session dropped with its draft,
    // the URL's forget cut off by a crash after the record's flush; seed 1473).
    let mut dropped = saved.clone();
    dropped.id = "e3".into();
    dropped.path = "/f/c.txt".into();
    dropped.name = "c.txt".into();
    dropped.seq = 3;
    dropped.target = None;
    let out = m.handle(
        Time(10),
        Input::Start {
            records: vec![lost, saved, dropped],
            with_url: vec!["e2".into(), "e3".into(), "orphan".into()],
            messages: vec![],
        },
    );
    // The lost session cannot be reached: forgotten (it expires on its own).
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Persist(r) if r.id == "e1" && r.session.is_none())));
    // The saved one is asked where it stands before anything is sent to it.
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Persist(r) if r.id == "e2" && r.session == Some(SessionMark::default())
    )));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::AskSession { id, .. } if id == "e2")));
    // A URL no record names is forgotten.
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::ForgetUrl { id } if id == "orphan")));
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::ForgetUrl { id } if id == "e2")));
    // The dropped one is forgotten, never asked.
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::ForgetUrl { id } if id == "e3")));
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::AskSession { id, .. } if id == "e3")));
}

#[test]
fn backoff_grows_to_a_cap_with_jitter_in_its_upper_half() {
    for attempt in 0..20 {
        let d = backoff_ms("abc", attempt);
        let exp = (BACKOFF_BASE_MS << attempt.min(16)).min(BACKOFF_CAP_MS);
        assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d}");
    }
    assert_eq!(backoff_ms("abc", 3), backoff_ms("abc", 3));
    assert_ne!(backoff_ms("abc", 5), backoff_ms("abd", 5));
}

#[test]
fn what_status_asks_shows_what_is_settling_hashing_and_at_work() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let path = PathBuf::from("/f/a.txt");
    let stat = FileStat {
        ino: 7,
        size: 10,
        mtime_ns: 1,
        ..FileStat::default()
    };
    m.handle(
        Time(0),
        Input::Observed {
            mapping: "m".into(),
            path: path.clone(),
            stat,
        },
    );
    assert_eq!(m.settler().len(), 1);
    assert_eq!(m.hashing().count(), 0);
    let settle = Policy::default().settle_ms;
    let out = m.handle(Time(settle), Input::Tick);
    assert!(
        out.iter().any(|a| matches!(a, Action::Stat { .. })),
        "{out:?}"
    );
    let out = m.handle(
        Time(settle),
        Input::Stat {
            path: path.clone(),
            stat: Some(stat),
        },
    );
    assert!(
        out.iter().any(|a| matches!(a, Action::Hash { .. })),
        "{out:?}"
    );
    assert!(m.settler().is_empty());
    assert_eq!(m.hashing().collect::<Vec<_>>(), vec![path.as_path()]);
    let out = m.handle(
        Time(settle + 1),
        Input::Hashed {
            path: path.clone(),
            result: HashResult::Hashed {
                sha256: "ab".repeat(32),
                stat,
            },
        },
    );
    assert_eq!(m.hashing().count(), 0);
    let id = persisted(&out).expect("persisted").id.clone();
    let active: Vec<_> = m.active().map(|(r, w)| (r.id.clone(), w)).collect();
    assert_eq!(active, vec![(id.clone(), None)]);
    assert_eq!(m.record(&id).map(|r| r.state), Some(State::Uploading));
    assert!(m.record("nobody").is_none());
    // Unreachable: it waits, and says until when.
    m.answer(
        settle + 2,
        &id,
        post_failed(unreachable("ConnectionRefused", "down")),
    );
    let (_, until) = m.active().next().expect("still at work");
    assert!(until.is_some_and(|t| t > Time(settle + 2)), "{until:?}");
}

#[test]
fn a_file_being_hashed_or_of_no_mapping_is_not_settled_again() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let path = PathBuf::from("/f/a.txt");
    let stat = FileStat {
        ino: 7,
        size: 10,
        mtime_ns: 1,
        ..FileStat::default()
    };
    let seen = |mapping: &str, stat| Input::Observed {
        mapping: mapping.into(),
        path: path.clone(),
        stat,
    };
    m.handle(Time(0), seen("gone", stat));
    assert!(m.settler().is_empty(), "a mapping the config does not have");
    m.handle(Time(0), seen("m", stat));
    let settle = Policy::default().settle_ms;
    m.handle(Time(settle), Input::Tick);
    let out = m.handle(
        Time(settle),
        Input::Stat {
            path: path.clone(),
            stat: Some(stat),
        },
    );
    assert!(
        out.iter().any(|a| matches!(a, Action::Hash { .. })),
        "{out:?}"
    );
    // While it is hashed, what the watcher reports of it waits for the hash's answer.
    let later = FileStat {
        mtime_ns: 2,
        ..stat
    };
    m.handle(Time(settle + 1), seen("m", later));
    assert!(m.settler().is_empty());
}

/// Seeds 682999, 909258: a version is being hashed when a writer replaces the file, closes
/// it, and comes back 650 ms later to append and close again (a writer that appends and closes
/// again and again). The reports of the first write and its close came while the hash ran and
/// were dropped; the hash answered `Changed`, and the settle rule, knowing of no close before
/// the append, took the second version by its close, 1 s after it, though its writer was back.
/// Now what the watcher reported meanwhile is given to the settler once the hash answers: the
/// writer came back after a close, and the next version waits `settle` plus twice its pause.
#[test]
fn a_writer_that_closed_while_its_path_was_hashed_is_known_to_come_back() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let path = PathBuf::from("/f/a.txt");
    let st = |ino, size, t: u64| FileStat {
        ino,
        size,
        mtime_ns: t as i64 * 1_000_000,
        ctime_ns: t as i64 * 1_000_000,
        ..FileStat::default()
    };
    let old = st(3, 100, 0);
    let out = settle(&mut m, 0, &path, old);
    assert!(
        out.iter().any(|a| matches!(a, Action::Hash { .. })),
        "{out:?}"
    );
    let hashed_at = Policy::default().settle_ms;
    let seen = |stat| Input::Observed {
        mapping: "m".into(),
        path: path.clone(),
        stat,
    };
    // Replaced while hashed: written and closed.
    let first = st(4, 1_000, hashed_at + 10);
    m.handle(Time(hashed_at + 20), seen(first));
    m.handle(Time(hashed_at + 21), Input::Closed { path: path.clone() });
    m.handle(
        Time(hashed_at + 25),
        Input::Hashed {
            path: path.clone(),
            result: HashResult::Changed,
        },
    );
    // Back 650 ms after its close: appended, closed again.
    let second = st(4, 2_000, hashed_at + 671);
    m.handle(Time(hashed_at + 680), seen(second));
    m.handle(Time(hashed_at + 681), Input::Closed { path: path.clone() });
    // Its close alone would take it 1 s later; it waits for its writer instead.
    let after_close = Policy::default().settle_after_close_ms;
    let mut t = hashed_at + 681;
    while t < hashed_at + 681 + Policy::default().settle_ms {
        t += 100;
        let out = m.handle(Time(t), Input::Tick);
        assert!(
            !out.iter().any(|a| matches!(a, Action::Stat { .. })),
            "taken by its close at {t} (closed at {}, settle_after_close {after_close}): {out:?}",
            hashed_at + 681
        );
    }
}

/// A file written again after its hash read it, reported before the hash's answer came: the
/// answer takes the version read, and the new bytes settle then. Before, the report was dropped
/// and the new bytes waited for a rescan.
#[test]
fn a_change_reported_while_its_path_was_hashed_settles_after_the_hash() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let path = PathBuf::from("/f/a.txt");
    let old = FileStat {
        ino: 3,
        size: 100,
        mtime_ns: 1,
        ctime_ns: 1,
        ..FileStat::default()
    };
    settle(&mut m, 0, &path, old);
    let t = Policy::default().settle_ms;
    let new = FileStat {
        size: 200,
        mtime_ns: 2,
        ctime_ns: 2,
        ..old
    };
    m.handle(
        Time(t + 10),
        Input::Observed {
            mapping: "m".into(),
            path: path.clone(),
            stat: new,
        },
    );
    m.handle(
        Time(t + 20),
        Input::Hashed {
            path: path.clone(),
            result: HashResult::Hashed {
                sha256: "ab".repeat(32),
                stat: old,
            },
        },
    );
    assert_eq!(
        m.settler().settles_at(&path),
        Some(Time(t + 10).plus_ms(Policy::default().settle_ms)),
        "the new bytes settle from when they were seen"
    );
}

#[test]
fn at_start_a_failed_entry_goes_to_its_mappings_new_item_unless_it_failed_there_or_may_be_there() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let old = Target {
        item_id: "old".into(),
        ..rule(IfExists::Attach, After::Keep).target
    };
    let failed = |id: &str, seq: u64, code: &str, target: &Target| {
        let mut r = done_record();
        r.id = id.into();
        r.seq = seq;
        r.path = format!("/f/{id}.txt").into();
        r.name = format!("{id}.txt");
        r.state = State::Failed;
        r.attachment_id = None;
        r.after_done = false;
        r.target = Some(target.clone());
        r.error = Some(Failure::new(code, "refused"));
        r
    };
    let here = rule(IfExists::Attach, After::Keep).target;
    // Failed on the item the mapping named then: it goes to the one it names now.
    let moved = failed("f1", 1, "ErrorItemNotFound", &old);
    // Failed on the item the mapping still names: it waits for `retry`.
    let same = failed("f2", 2, "ErrorAccessDenied", &here);
    // Its last POST may have landed on the old item: it stays bound there.
    let mut doubt = failed("f3", 3, "ErrorItemNotFound", &old);
    doubt.may_exist = true;
    // Canceled, and unreadable: not failures of the item.
    let mut canceled = failed("f4", 4, "canceled", &old);
    canceled.state = State::Canceled;
    let unreadable = failed("f5", 5, UNREADABLE, &old);
    let out = m.start_up(10, vec![moved, same, doubt, canceled, unreadable]);
    let persisted: Vec<&Record> = out
        .iter()
        .filter_map(|a| match a {
            Action::Persist(r) => Some(r),
            _ => None,
        })
        .collect();
    assert!(
        persisted.iter().all(|r| r.id == "f1"),
        "only f1 is revived: {persisted:?}"
    );
    let r = persisted.first().expect("f1 revived");
    assert_eq!(
        (r.state, r.target.as_ref(), r.error.as_ref()),
        (State::Pending, None, None)
    );
    assert!(out.iter().any(
        |a| matches!(a, Action::Post { id, target, .. } if id == "f1" && target.item_id == "item")
    ));
}

#[test]
fn at_start_a_name_that_may_be_on_the_item_is_held_by_that_version_first() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let mut first = done_record();
    first.state = State::Pending;
    first.attachment_id = None;
    first.after_done = false;
    first.target = None;
    // Another file of the same name, later, whose POST's answer was lost.
    let mut doubt = first.clone();
    doubt.id = "e2".into();
    doubt.path = "/f/sub/a.txt".into();
    doubt.seq = 2;
    doubt.state = State::Uploading;
    doubt.target = Some(rule(IfExists::Attach, After::Keep).target);
    doubt.may_exist = true;
    doubt.effect_at = Some(Time(5));
    let out = m.start_up(10, vec![first, doubt]);
    // e2 may be on the item under the name: nothing else goes under it until its look.
    assert!(
        !out.iter().any(|a| matches!(a, Action::Post { .. })),
        "{out:?}"
    );
    // (From the start: an earlier run's time counts from it, the clock perhaps stepped since.)
    let look = Time(10).plus_ms(Policy::default().look_after_ms);
    let out = m.handle(look, Input::Tick);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Look { id, .. } if id == "e2")));
    let out = m.answer(look.0, "e2", look_found("att2"));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Post { id, .. } if id == "e1")));
    // Done, and deleting the attachment of an older version it replaced: nobody takes the
    // name (or adopts that attachment) until it is gone.
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let mut replacing = done_record();
    replacing.id = "e2".into();
    replacing.path = "/f/sub/a.txt".into();
    replacing.seq = 2;
    replacing.replaces = vec![Replaced {
        entry: "e0".into(),
        attachment_id: "old".into(),
    }];
    let mut first = done_record();
    first.state = State::Pending;
    first.attachment_id = None;
    first.after_done = false;
    first.target = None;
    let out = m.start_up(10, vec![first, replacing]);
    assert!(
        !out.iter().any(|a| matches!(a, Action::Post { .. })),
        "{out:?}"
    );
    let out = m.answer(20, "e2", attachment_deleted());
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Post { id, .. } if id == "e1")));
}

#[test]
fn a_new_version_deletes_only_the_older_attachments_not_yet_replaced() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    // Version 1 was replaced by version 2 (its attachment is gone); version 3 is new.
    let mut v1 = done_record();
    v1.attachment_id = Some("a1".into());
    v1.replaced = true;
    let mut v2 = done_record();
    v2.id = "e2".into();
    v2.seq = 2;
    v2.attachment_id = Some("a2".into());
    let mut v3 = done_record();
    v3.id = "e3".into();
    v3.seq = 3;
    v3.state = State::Pending;
    v3.attachment_id = None;
    v3.after_done = false;
    v3.target = None;
    v3.sha256 = Some("cd".repeat(32));
    let out = m.start_up(10, vec![v1, v2, v3]);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Post { id, .. } if id == "e3")));
    let out = m.answer(20, "e3", post_created("a3"));
    let r = persisted(&out).expect("persisted");
    assert_eq!(
        r.replaces,
        vec![Replaced {
            entry: "e2".into(),
            attachment_id: "a2".into()
        }]
    );
    let deleted: Vec<&str> = out
        .iter()
        .filter_map(|a| match a {
            Action::DeleteAttachment { attachment_id, .. } => Some(attachment_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec!["a2"]);
}

/// Issue 23, item 1: a neighbour's same-name file in a shared folder (another owner) is
/// added beside the user's version, never replacing it; the user's next version replaces
/// only the user's earlier one, and says so.
#[test]
fn a_version_replaces_only_an_earlier_one_of_the_same_owner() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let mut v1 = done_record();
    v1.attachment_id = Some("a1".into());
    v1.file.owner = Some(1000);
    let mut v2 = done_record();
    v2.id = "e2".into();
    v2.seq = 2;
    v2.attachment_id = Some("a2".into());
    v2.file.owner = Some(65534);
    let mut v3 = done_record();
    v3.id = "e3".into();
    v3.seq = 3;
    v3.state = State::Pending;
    v3.attachment_id = None;
    v3.after_done = false;
    v3.target = None;
    v3.sha256 = Some("cd".repeat(32));
    v3.file.owner = Some(1000);
    m.start_up(10, vec![v1, v2, v3]);
    let out = m.answer(20, "e3", post_created("a3"));
    let r = persisted(&out).expect("persisted");
    assert_eq!(
        r.replaces,
        vec![Replaced {
            entry: "e1".into(),
            attachment_id: "a1".into()
        }]
    );
    assert_eq!(r.beside, vec!["e2".to_string()]);
    assert!(
        out.iter().any(|a| matches!(a,
            Action::Notify(Note::Attached { replaced: true, beside, .. }) if beside == &["e2"])),
        "{out:?}"
    );
    // The neighbour's version finishing after the user's newer one: neither attachment
    // goes (of one owner, the older version's own would).
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let mut mine = done_record();
    mine.id = "e5".into();
    mine.seq = 5;
    mine.attachment_id = Some("a5".into());
    mine.file.owner = Some(1000);
    let mut theirs = done_record();
    theirs.id = "e4".into();
    theirs.seq = 4;
    theirs.state = State::Pending;
    theirs.attachment_id = None;
    theirs.after_done = false;
    theirs.target = None;
    theirs.sha256 = Some("cd".repeat(32));
    theirs.file.owner = Some(65534);
    m.start_up(10, vec![mine, theirs]);
    let out = m.answer(20, "e4", post_created("a4"));
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::DeleteAttachment { .. })),
        "{out:?}"
    );
}

/// Issue 23, item 3: a file alone over a mailing mapping's `max_message_size` is refused
/// when it settles, by its size: no hash, no draft; the same file seen again is the same
/// refusal (no new entry); once a reload raises the limit it is hashed and mailed.
#[test]
fn a_file_alone_over_the_message_limit_is_refused_at_settle_unread() {
    let mailing = |limit: u64| MappingRule {
        mail: Some(MailRule {
            to: vec!["a@b.example".into()],
            subject: "s".into(),
            send: true,
            max_message_size: limit,
            ..MailRule::default()
        }),
        ..rule(IfExists::Attach, After::Keep)
    };
    let mut m = Machine::new(vec![mailing(1_000_000)], Policy::default());
    let path = PathBuf::from("/f/big.pdf");
    let stat = FileStat {
        dev: 1,
        ino: 5,
        size: 800_000,
        mtime_ns: 1,
        ctime_ns: 1,
        owner: None,
    };
    let out = settle(&mut m, 10, &path, stat);
    assert!(
        !out.iter().any(|a| matches!(a, Action::Hash { .. })),
        "{out:?}"
    );
    let r = persisted(&out).unwrap_or_else(|| panic!("refused: {out:?}"));
    assert_eq!(r.state, State::Failed);
    assert!(r.sha256.is_none());
    let why = r
        .error
        .as_ref()
        .map(|e| (e.code.as_str(), e.message.as_str()));
    assert!(
        why.is_some_and(|(c, t)| c == MESSAGE_TOO_LARGE
            && t.contains("big.pdf")
            && t.contains("max_message_size = 1000000")),
        "{why:?}"
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Notify(Note::Failed { .. }))),
        "{out:?}"
    );
    assert!(!out.iter().any(|a| matches!(a, Action::CreateDraft { .. })));
    assert_eq!(m.failed_this_run, 1);
    // Seen again (a rescan): the same refusal, nothing new.
    let out = settle(&mut m, 20_000, &path, stat);
    assert!(persisted(&out).is_none(), "{out:?}");
    assert_eq!(m.failed_this_run, 1);
    // The limit raised: the next sight of it hashes it.
    m.handle(
        Time(30_000),
        Input::Config {
            mappings: vec![mailing(2_000_000)],
            policy: Policy::default(),
        },
    );
    let out = settle(&mut m, 40_000, &path, stat);
    assert!(
        out.iter().any(|a| matches!(a, Action::Hash { .. })),
        "{out:?}"
    );
}

/// A neighbour's copy of the user's bytes at the path does not make the user's version the
/// neighbour's (whose next version would then replace the user's attachment).
#[test]
fn the_same_bytes_from_another_owner_keep_the_versions_owner() {
    let path = PathBuf::from("/f/a.txt");
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let mut rec = done_record();
    rec.file.owner = Some(1000);
    m.start_up(10, vec![rec]);
    let copy = FileStat {
        dev: 1,
        ino: 77,
        size: 10,
        mtime_ns: 9,
        ctime_ns: 9,
        owner: Some(65534),
    };
    let out = settle(&mut m, 20, &path, copy);
    assert!(
        out.iter().any(|a| matches!(a, Action::Hash { .. })),
        "{out:?}"
    );
    let out = m.handle(
        Time(30_000),
        Input::Hashed {
            path: path.clone(),
            result: HashResult::Hashed {
                sha256: "ab".repeat(32),
                stat: copy,
            },
        },
    );
    let file = out
        .iter()
        .find_map(|a| match a {
            Action::UpdateFile { file, .. } => Some(*file),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the stored record is updated: {out:?}"));
    assert_eq!((file.ino, file.owner), (77, Some(1000)));
}

#[test]
fn with_replace_every_older_version_on_the_item_goes_under_the_id_it_has_now() {
    // Two older versions both on the item (made while the mapping said `add`), one new.
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let mut v1 = done_record();
    v1.attachment_id = Some("a1".into());
    let mut v2 = done_record();
    v2.id = "e2".into();
    v2.seq = 2;
    v2.attachment_id = Some("a2".into());
    let mut v3 = done_record();
    v3.id = "e3".into();
    v3.seq = 3;
    v3.state = State::Pending;
    v3.attachment_id = None;
    v3.after_done = false;
    v3.target = None;
    v3.sha256 = Some("cd".repeat(32));
    m.start_up(10, vec![v1, v2, v3]);
    let out = m.answer(20, "e3", post_created("a3"));
    let r = persisted(&out).expect("persisted");
    let mut doomed: Vec<&str> = r
        .replaces
        .iter()
        .map(|x| x.attachment_id.as_str())
        .collect();
    doomed.sort();
    assert_eq!(doomed, vec!["a1", "a2"]);

    // A version attached again (`retry` after `verify`) is on the item under its new id:
    // that is the one a newer version deletes.
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let rec = found_wrong();
    m.start_up(10, vec![rec.clone()]);
    m.handle(Time(20), Input::Retry { records: vec![rec] });
    let answers = [look_not_found(), post_created("good"), attachment_deleted()];
    for (k, outcome) in answers.into_iter().enumerate() {
        m.answer(30 + k as u64, "e1", outcome);
    }
    // A new version of the file: settled and hashed.
    let path = PathBuf::from("/f/a.txt");
    let stat = FileStat {
        ino: 9,
        size: 12,
        ..FileStat::default()
    };
    let seen = Input::Observed {
        mapping: "m".into(),
        path: path.clone(),
        stat,
    };
    m.handle(Time(40), seen);
    let settled = Time(40).plus_ms(Policy::default().settle_ms);
    m.handle(settled, Input::Tick);
    m.handle(
        settled,
        Input::Stat {
            path: path.clone(),
            stat: Some(stat),
        },
    );
    let out = m.handle(
        settled,
        Input::Hashed {
            path,
            result: HashResult::Hashed {
                sha256: "cd".repeat(32),
                stat,
            },
        },
    );
    let v2 = out
        .iter()
        .find_map(|a| match a {
            Action::Post { id, .. } => Some(id.clone()),
            _ => None,
        })
        .expect("the new version is posted");
    let out = m.answer(60, &v2, post_created("a2"));
    let deleted: Vec<&str> = out
        .iter()
        .filter_map(|a| match a {
            Action::DeleteAttachment { attachment_id, .. } => Some(attachment_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec!["good"]);
}

#[test]
fn an_attachment_on_its_way_out_is_never_adopted_as_the_same_bytes() {
    // v1's attachment holds the bytes a new version comes back with; v2 is deleting it
    // (as the older version it replaced, or as garbage).
    let v1 = {
        let mut r = done_record();
        r.attachment_id = Some("a1".into());
        r
    };
    let v2 = {
        let mut r = done_record();
        r.id = "e2".into();
        r.seq = 2;
        r.path = "/f/sub/a.txt".into();
        r.attachment_id = Some("a2".into());
        r.sha256 = Some("cd".repeat(32));
        r
    };
    let mut back = done_record();
    back.id = "e3".into();
    back.seq = 3;
    back.state = State::Pending;
    back.attachment_id = None;
    back.target = None;
    let known = |v2: Option<Record>| {
        let mut m = Machine::new(vec![rule(IfExists::Skip, After::Keep)], Policy::default());
        let records = [Some(v1.clone()), v2].into_iter().flatten().collect();
        m.start_up(10, records);
        m.known_attachment(&back, false)
    };
    assert_eq!(known(None).as_deref(), Some("a1"));
    let mut replacing = v2.clone();
    replacing.replaces = vec![Replaced {
        entry: "e1".into(),
        attachment_id: "a1".into(),
    }];
    assert_eq!(known(Some(replacing)), None);
    let mut collecting = v2.clone();
    collecting.garbage = vec!["a1".into()];
    assert_eq!(known(Some(collecting)), None);
}

/// The watcher reports `path` with `stat` at `t` and it settles: the actions answered.
pub(super) fn settle(m: &mut Machine, t: u64, path: &Path, stat: FileStat) -> Vec<Action> {
    let mut out = m.handle(
        Time(t),
        Input::Observed {
            mapping: "m".into(),
            path: path.to_path_buf(),
            stat,
        },
    );
    let settled = Time(t).plus_ms(Policy::default().settle_ms);
    out.extend(m.handle(settled, Input::Tick));
    out.extend(m.handle(
        settled,
        Input::Stat {
            path: path.to_path_buf(),
            stat: Some(stat),
        },
    ));
    out
}

#[test]
fn a_file_deleted_before_it_was_attached_cancels_its_entry_with_no_request() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let mut rec = done_record();
    rec.state = State::Pending;
    rec.attachment_id = None;
    rec.after_done = false;
    rec.target = None;
    m.start_up(10, vec![rec]);
    // Unreachable: it waits to try again.
    m.answer(
        20,
        "e1",
        post_failed(unreachable("ConnectionRefused", "down")),
    );
    let out = m.handle(
        Time(30),
        Input::Gone {
            mapping: "m".into(),
            path: "/f/a.txt".into(),
        },
    );
    // Not at its word: the path is looked at again first.
    assert!(persisted(&out).is_none(), "{out:?}");
    assert!(
        out.iter().any(|a| matches!(a, Action::Stat { .. })),
        "{out:?}"
    );
    let out = m.handle(
        Time(30),
        Input::Stat {
            path: "/f/a.txt".into(),
            stat: None,
        },
    );
    let r = persisted(&out).expect("persisted");
    assert!(r.cancel_requested, "{r:?}");
    assert_eq!(
        r.error.as_ref().map(|e| e.code.as_str()),
        Some("fileDeleted")
    );
    // Its wait over, it is canceled: nothing is sent.
    let out = m.handle(Time(120_000), Input::Tick);
    let r = persisted(&out).expect("persisted");
    assert_eq!(r.state, State::Canceled);
    assert!(!out.iter().any(|a| matches!(a, Action::Post { .. })));
    assert!(m.quiescent());
}

/// A report of a file gone whose version already ends (canceled by the user while its POST is
/// out) asks nothing: its path is not looked at again (mutant `gone` `is_terminal() ||
/// cancel_requested` → `&&`, which asked a `Stat` the machine then ignores).
#[test]
fn a_file_gone_whose_version_is_already_canceled_is_not_looked_at_again() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let out = m.start_up(10, vec![pending_record("e1", 1)]);
    assert_eq!(posts(&out), vec!["e1"]);
    m.handle(Time(15), Input::Cancel { id: "e1".into() });
    let out = m.handle(
        Time(20),
        Input::Gone {
            mapping: "m".into(),
            path: "/f/e1.txt".into(),
        },
    );
    assert!(
        !out.iter().any(|a| matches!(a, Action::Stat { .. })),
        "{out:?}"
    );
}

#[test]
fn an_unchanged_file_settling_again_is_hashed_again_only_for_an_after_action_waiting() {
    let path = PathBuf::from("/f/a.txt");
    let stat = done_record().file;
    let hashed = |out: &[Action]| out.iter().any(|a| matches!(a, Action::Hash { .. }));
    // Done, its move not yet run: it runs only on bytes confirmed again.
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Move)], Policy::default());
    let mut rec = done_record();
    rec.after_done = false;
    let out = m.start_up(10, vec![rec.clone()]);
    assert!(out.iter().any(|a| matches!(a, Action::After { .. })));
    assert!(hashed(&settle(&mut m, 20, &path, stat)));
    // Being uploaded: the same file again is nothing new.
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Move)], Policy::default());
    rec.state = State::Pending;
    rec.attachment_id = None;
    rec.target = None;
    let out = m.start_up(10, vec![rec]);
    assert!(out.iter().any(|a| matches!(a, Action::Post { .. })));
    assert!(!hashed(&settle(&mut m, 20, &path, stat)));
}

#[test]
fn an_unchanged_file_settling_again_is_hashed_again_if_unreadable_or_canceled_by_the_agent() {
    let path = PathBuf::from("/f/a.txt");
    let hashed_again = |state: State, code: Option<&str>| {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut rec = done_record();
        rec.state = state;
        if state != State::Done {
            rec.attachment_id = None;
        }
        rec.error = code.map(|c| Failure::new(c, "why"));
        let stat = rec.file;
        m.start_up(10, vec![rec]);
        settle(&mut m, 20, &path, stat)
            .iter()
            .any(|a| matches!(a, Action::Hash { .. }))
    };
    // It may read now.
    assert!(hashed_again(State::Failed, Some(UNREADABLE)));
    // Its bytes were not the hashed ones, or its file was swapped: it may come back.
    assert!(hashed_again(State::Canceled, Some(SUPERSEDED)));
    assert!(hashed_again(State::Canceled, Some("fileDeleted")));
    // Nothing new: failed at Graph, canceled by the user, done.
    assert!(!hashed_again(State::Failed, Some("ErrorAccessDenied")));
    assert!(!hashed_again(State::Canceled, Some("canceled")));
    assert!(!hashed_again(State::Done, None));
}

#[test]
fn an_unreadable_file_fails_once_until_it_changes() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let path = PathBuf::from("/f/a.txt");
    let unreadable = |m: &mut Machine, t: u64, stat: FileStat| {
        let out = settle(m, t, &path, stat);
        assert!(
            out.iter().any(|a| matches!(a, Action::Hash { .. })),
            "{out:?}"
        );
        m.handle(
            Time(t + 10_000),
            Input::Hashed {
                path: path.clone(),
                result: HashResult::Unreadable(Failure::new("EACCES", "denied")),
            },
        )
    };
    let stat = done_record().file;
    let out = unreadable(&mut m, 0, stat);
    let r = persisted(&out).expect("a failed record");
    assert_eq!(
        (r.state, r.error.as_ref().map(|e| e.code.as_str())),
        (State::Failed, Some(UNREADABLE))
    );
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Notify(Note::Failed { .. }))));
    assert_eq!(m.failed_this_run, 1);
    // Still unreadable, unchanged: tried again, nothing new to tell.
    let out = unreadable(&mut m, 20_000, stat);
    assert!(out.is_empty() || persisted(&out).is_none(), "{out:?}");
    assert_eq!(m.failed_this_run, 1);
    // Changed, and still unreadable: that version fails too.
    let changed = FileStat { size: 11, ..stat };
    let out = unreadable(&mut m, 40_000, changed);
    assert!(persisted(&out).is_some_and(|r| r.state == State::Failed && r.file == changed));
    assert_eq!(m.failed_this_run, 2);
}

/// The third trial of #22: a done file someone made a hard link to elsewhere (`ln drop/a.pdf
/// ~/elsewhere/a.pdf`) has a new ctime and more than one name; read again, its bytes are the
/// done version's, so it stays done with its new times (nothing is sent, nothing moved to
/// `failed_dir`). A version with other bytes and a second name is refused as a hard link
/// (`hardLink`, not `unreadable`), once until it changes.
#[test]
fn a_done_file_linked_elsewhere_stays_done_and_a_new_linked_version_is_refused() {
    let path = PathBuf::from("/f/a.txt");
    let rec = done_record();
    let sha = rec.sha256.clone().unwrap();
    let linked = FileStat {
        ctime_ns: rec.file.ctime_ns + 5,
        ..rec.file
    };
    let refused = |sha256: &str, stat: FileStat| HashResult::Refused {
        sha256: sha256.to_owned(),
        stat,
        failure: Failure::new(HARD_LINK, "a.txt is refused: it is a hard link"),
    };
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    m.start_up(10, vec![rec.clone()]);
    let out = settle(&mut m, 20, &path, linked);
    assert!(
        out.iter().any(|a| matches!(a, Action::Hash { .. })),
        "{out:?}"
    );
    let out = m.handle(
        Time(10_000),
        Input::Hashed {
            path: path.clone(),
            result: refused(&sha, linked),
        },
    );
    assert!(persisted(&out).is_none(), "no new version: {out:?}");
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::UpdateFile { id, file, revive: false } if id == "e1" && *file == linked
        )),
        "{out:?}"
    );
    assert!(
        !out.iter().any(|a| matches!(
            a,
            Action::ToFailedDir { .. } | Action::Notify(Note::Failed { .. })
        )),
        "{out:?}"
    );
    assert_eq!(m.failed_this_run, 0);
    // Seen again as it is now: nothing new.
    let out = settle(&mut m, 20_000, &path, linked);
    assert!(
        !out.iter().any(|a| matches!(a, Action::Hash { .. })),
        "{out:?}"
    );

    // Other bytes with a second name: refused as a hard link, said once.
    let edited = FileStat {
        size: 11,
        ctime_ns: linked.ctime_ns + 5,
        ..linked
    };
    let other = "cd".repeat(32);
    settle(&mut m, 30_000, &path, edited);
    let out = m.handle(
        Time(40_000),
        Input::Hashed {
            path: path.clone(),
            result: refused(&other, edited),
        },
    );
    let r = persisted(&out).expect("a failed version");
    assert_eq!(
        (r.state, r.error.as_ref().map(|e| e.code.as_str())),
        (State::Failed, Some(HARD_LINK))
    );
    assert!(r.sha256.is_none(), "nothing of it is kept to send");
    assert_eq!(m.failed_this_run, 1);
    settle(&mut m, 50_000, &path, edited);
    let out = m.handle(
        Time(60_000),
        Input::Hashed {
            path: path.clone(),
            result: refused(&other, edited),
        },
    );
    assert!(persisted(&out).is_none(), "{out:?}");
    assert_eq!(m.failed_this_run, 1);
}

#[test]
fn the_same_bytes_back_revive_a_version_the_agent_canceled_not_one_canceled_or_failed() {
    let path = PathBuf::from("/f/a.txt");
    let updated = |state: State, code: &str, stat: FileStat| {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut rec = done_record();
        rec.state = state;
        rec.attachment_id = None;
        rec.error = Some(Failure::new(code, "why"));
        m.start_up(10, vec![rec]);
        let out = settle(&mut m, 20, &path, stat);
        assert!(
            out.iter().any(|a| matches!(a, Action::Hash { .. })),
            "{out:?}"
        );
        let out = m.handle(
            Time(30_000),
            Input::Hashed {
                path: path.clone(),
                result: HashResult::Hashed {
                    sha256: "AB".repeat(32),
                    stat,
                },
            },
        );
        out.iter()
            .find_map(|a| match a {
                Action::UpdateFile { id, file, revive } if id == "e1" && *file == stat => {
                    Some(*revive)
                }
                _ => None,
            })
            .expect("the stored record is updated, no new version")
    };
    let stat = done_record().file;
    // The file changed while it was sent, then came back to the bytes hashed.
    assert!(updated(State::Canceled, SUPERSEDED, stat));
    // Touched after the user canceled it: it stays canceled; after it failed at Graph: it
    // waits for `retry`.
    let touched = FileStat {
        mtime_ns: 5,
        ..stat
    };
    assert!(!updated(State::Canceled, "canceled", touched));
    assert!(!updated(State::Failed, "ErrorAccessDenied", touched));
}

#[test]
fn the_same_bytes_back_take_back_the_agents_cancel_never_the_users() {
    let path = PathBuf::from("/f/a.txt");
    let after_touch = |cancel: Input| {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut rec = done_record();
        rec.state = State::Pending;
        rec.attachment_id = None;
        rec.after_done = false;
        rec.target = None;
        let stat = rec.file;
        let out = m.start_up(10, vec![rec]);
        assert!(out.iter().any(|a| matches!(a, Action::Post { .. })));
        // Asked while its POST is in flight: it settles what it sent first.
        let mut out = m.handle(Time(20), cancel);
        if out.iter().any(|a| matches!(a, Action::Stat { .. })) {
            // A report of the path gone is looked at again: not there.
            out.extend(m.handle(
                Time(20),
                Input::Stat {
                    path: path.clone(),
                    stat: None,
                },
            ));
        }
        assert!(persisted(&out).is_some_and(|r| r.cancel_requested));
        let touched = FileStat {
            mtime_ns: 5,
            ..stat
        };
        settle(&mut m, 30, &path, touched);
        let out = m.handle(
            Time(30_000),
            Input::Hashed {
                path: path.clone(),
                result: HashResult::Hashed {
                    sha256: "ab".repeat(32),
                    stat: touched,
                },
            },
        );
        persisted(&out).cloned().expect("persisted")
    };
    let r = after_touch(Input::Cancel { id: "e1".into() });
    assert!(r.cancel_requested, "{r:?}");
    assert_eq!(r.error.map(|e| e.code), Some("canceled".to_string()));
    // Reported gone, then back with the same bytes: it goes on.
    let r = after_touch(Input::Gone {
        mapping: "m".into(),
        path: path.clone(),
    });
    assert!(!r.cancel_requested && r.error.is_none(), "{r:?}");
}

#[test]
fn a_file_over_150_mib_is_rejected_at_settle_unread_and_counted_one_of_150_mib_is_sent() {
    let path = PathBuf::from("/f/a.txt");
    let first_record = |size: u64| {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let stat = FileStat {
            size,
            ..FileStat::default()
        };
        let mut out = settle(&mut m, 0, &path, stat);
        let hashed = out.iter().any(|a| matches!(a, Action::Hash { .. }));
        if hashed {
            out = m.handle(
                Time(10_000),
                Input::Hashed {
                    path: path.clone(),
                    result: HashResult::Hashed {
                        sha256: "ab".repeat(32),
                        stat,
                    },
                },
            );
        }
        let first = out
            .iter()
            .find_map(|a| match a {
                Action::Persist(r) => Some(r.state),
                _ => None,
            })
            .expect("persisted");
        // Seen again unchanged (a rescan): nothing new, no second record, no hash.
        let again = settle(&mut m, 20_000, &path, stat);
        assert!(
            !again
                .iter()
                .any(|a| matches!(a, Action::Persist(_) | Action::Hash { .. })),
            "{again:?}"
        );
        (first, hashed, m.failed_this_run)
    };
    // A sparse 10 GiB file is refused by its size, never read.
    assert_eq!(first_record(10 << 30), (State::Rejected, false, 1));
    assert_eq!(
        first_record(MAX_ATTACHMENT + 1),
        (State::Rejected, false, 1)
    );
    assert_eq!(first_record(MAX_ATTACHMENT), (State::Pending, true, 0));
}

/// 92d7248: `outbox cancel` of a file rejected by its size clears it; the next run's scan of
/// the same file (same stat) makes no new rejection (`run --once` would count it again).
#[test]
fn a_file_rejected_by_its_size_then_canceled_by_the_user_stays_cleared() {
    let path = PathBuf::from("/f/a.txt");
    let over = FileStat {
        size: MAX_ATTACHMENT + 1,
        ..FileStat::default()
    };
    // Whether `seen` at the path, with an unread record of `recorded`, is settled again.
    let seen_again = |state: State, code: &str, recorded: FileStat, seen: FileStat| {
        let mut rec = done_record();
        rec.file = recorded;
        rec.sha256 = None;
        rec.attachment_id = None;
        rec.state = state;
        rec.error = Some(Failure::new(code, "why"));
        let (mut m, _) = started(Policy::default(), After::Keep, vec![rec]);
        settle(&mut m, 20, &path, seen)
            .into_iter()
            .any(|a| matches!(a, Action::Persist(_) | Action::Hash { .. }))
    };
    assert!(!seen_again(State::Canceled, "canceled", over, over));
    assert!(!seen_again(State::Rejected, TOO_LARGE, over, over));
    // Another file at the path is new.
    let other = FileStat { ino: 9, ..over };
    assert!(seen_again(State::Canceled, "canceled", over, other));
    // Unread and not over the limit, it was unreadable; canceled by the user it is read
    // again, as every unreadable file is (it may read now): only a refusal by size stays.
    let at_limit = FileStat {
        size: MAX_ATTACHMENT,
        ..over
    };
    assert!(seen_again(State::Canceled, "canceled", at_limit, at_limit));
}

#[test]
fn one_mappings_queue_of_files_to_hash_cannot_starve_anothers() {
    let mut big = rule(IfExists::Attach, After::Keep);
    big.name = "big".into();
    let mut small = rule(IfExists::Attach, After::Keep);
    small.name = "small".into();
    let policy = Policy::default();
    let workers = policy.hash_workers.max(1);
    let mut m = Machine::new(vec![big, small], policy);
    let stat = FileStat {
        size: 100 << 20,
        ..FileStat::default()
    };
    let mut out = Vec::new();
    let observe = |m: &mut Machine, mapping: &str, path: &str| {
        m.handle(
            Time(0),
            Input::Observed {
                mapping: mapping.into(),
                path: PathBuf::from(path),
                stat,
            },
        )
    };
    for i in 0..(workers * 3) {
        out.extend(observe(&mut m, "big", &format!("/big/{i}.bin")));
    }
    out.extend(observe(&mut m, "small", "/small/a.txt"));
    let settled = Time(0).plus_ms(Policy::default().settle_ms);
    out.extend(m.handle(settled, Input::Tick));
    let stats: Vec<PathBuf> = out
        .iter()
        .filter_map(|a| match a {
            Action::Stat { path } => Some(path.clone()),
            _ => None,
        })
        .collect();
    let mut hashes = Vec::new();
    for path in stats {
        let out = m.handle(
            settled,
            Input::Stat {
                path,
                stat: Some(stat),
            },
        );
        hashes.extend(out.into_iter().filter_map(|a| match a {
            Action::Hash { mapping, .. } => Some(mapping),
            _ => None,
        }));
    }
    assert_eq!(hashes.len(), workers, "{hashes:?}");
    assert!(
        hashes.iter().any(|m| m == "small"),
        "every worker went to one mapping: {hashes:?}"
    );
}

#[test]
fn a_mailbox_with_no_place_free_holds_up_no_other_mailbox() {
    let mut theirs = rule(IfExists::Attach, After::Keep);
    theirs.name = "b".into();
    theirs.target.user = "Other@example.com".into();
    let policy = Policy {
        concurrency: 1,
        ..Policy::default()
    };
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep), theirs], policy);
    let pending = |id: &str, seq: u64, mapping: &str| {
        let mut r = done_record();
        r.id = id.into();
        r.seq = seq;
        r.mapping = mapping.into();
        r.path = format!("/f/{id}.txt").into();
        r.name = format!("{id}.txt");
        r.state = State::Pending;
        r.attachment_id = None;
        r.after_done = false;
        r.target = None;
        r
    };
    let out = m.start_up(
        10,
        vec![
            pending("e1", 1, "m"),
            pending("e2", 2, "m"),
            pending("e3", 3, "b"),
        ],
    );
    let posted: Vec<&str> = out
        .iter()
        .filter_map(|a| match a {
            Action::Post { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    // e2 waits for e1's place; e3 is in another mailbox.
    assert_eq!(posted, vec!["e1", "e3"]);
}

pub(super) fn pending_record(id: &str, seq: u64) -> Record {
    let mut r = done_record();
    r.id = id.into();
    r.seq = seq;
    r.path = format!("/f/{id}.txt").into();
    r.name = format!("{id}.txt");
    r.state = State::Pending;
    r.attachment_id = None;
    r.after_done = false;
    r.target = None;
    r
}

fn posts(out: &[Action]) -> Vec<&str> {
    out.iter()
        .filter_map(|a| match a {
            Action::Post { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_step_that_needs_no_place_in_the_mailbox_does_not_wait_for_one() {
    let policy = Policy {
        concurrency: 1,
        ..Policy::default()
    };
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Move)], policy);
    let mut moved = done_record();
    moved.id = "e3".into();
    moved.seq = 3;
    moved.path = "/f/e3.txt".into();
    moved.after_done = false;
    let out = m.start_up(
        10,
        vec![pending_record("e1", 1), pending_record("e2", 2), moved],
    );
    assert_eq!(posts(&out), vec!["e1"]);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::After { id, .. } if id == "e3")),
        "{out:?}"
    );
}

#[test]
fn a_retry_after_of_zero_sends_the_same_request_again_at_once() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let out = m.start_up(10, vec![pending_record("e1", 1)]);
    assert_eq!(posts(&out), vec!["e1"]);
    let out = m.answer(20, "e1", post_failed(throttled(Some(0))));
    assert_eq!(posts(&out), vec!["e1"], "{out:?}");
}

#[test]
fn uploads_resume_when_the_sign_in_pause_ends_not_before() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    m.start_up(10, vec![pending_record("e1", 1)]);
    m.answer(
        20,
        "e1",
        post_failed(sign_in("InvalidAuthenticationToken", "sign in")),
    );
    let (until, _) = m.sign_in_pause().expect("paused");
    let out = m.handle(Time(until.0 - 1), Input::Tick);
    assert!(posts(&out).is_empty() && m.sign_in_pause().is_some());
    let out = m.handle(until, Input::Tick);
    assert_eq!(posts(&out), vec!["e1"]);
    assert!(m.sign_in_pause().is_none());
}

#[test]
fn no_more_files_are_hashed_at_once_than_hash_workers() {
    let policy = Policy {
        hash_workers: 2,
        ..Policy::default()
    };
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], policy);
    let stat = done_record().file;
    let paths: Vec<PathBuf> = (0..4).map(|k| format!("/f/{k}.txt").into()).collect();
    for p in &paths {
        m.handle(
            Time(0),
            Input::Observed {
                mapping: "m".into(),
                path: p.clone(),
                stat,
            },
        );
    }
    let settled = Time(Policy::default().settle_ms);
    m.handle(settled, Input::Tick);
    let mut hashes = 0;
    for p in &paths {
        let out = m.handle(
            settled,
            Input::Stat {
                path: p.clone(),
                stat: Some(stat),
            },
        );
        hashes += out
            .iter()
            .filter(|a| matches!(a, Action::Hash { .. }))
            .count();
    }
    assert_eq!(hashes, 2);
    assert_eq!(m.hashing().count(), 4, "two hashed, two queued");
}

/// With two mappings and files of both waiting: one worker still hashes (the share kept
/// for the other mapping never leaves none), and three hash three at once, never four
/// (each mapping may take two).
#[test]
fn with_two_mappings_every_hash_worker_is_used_and_no_more() {
    let hashed_at_once = |workers: usize| {
        let mut a = rule(IfExists::Attach, After::Keep);
        a.name = "a".into();
        let mut b = rule(IfExists::Attach, After::Keep);
        b.name = "b".into();
        let policy = Policy {
            hash_workers: workers,
            ..Policy::default()
        };
        let mut m = Machine::new(vec![a, b], policy);
        let stat = done_record().file;
        let paths: Vec<(&str, PathBuf)> = (0..4)
            .flat_map(|k| [("a", k), ("b", k)])
            .map(|(mapping, k)| (mapping, PathBuf::from(format!("/{mapping}/{k}.txt"))))
            .collect();
        for (mapping, p) in &paths {
            m.handle(
                Time(0),
                Input::Observed {
                    mapping: (*mapping).into(),
                    path: p.clone(),
                    stat,
                },
            );
        }
        let settled = Time(Policy::default().settle_ms);
        m.handle(settled, Input::Tick);
        let mut hashes = 0;
        for (_, p) in &paths {
            let out = m.handle(
                settled,
                Input::Stat {
                    path: p.clone(),
                    stat: Some(stat),
                },
            );
            hashes += out
                .iter()
                .filter(|a| matches!(a, Action::Hash { .. }))
                .count();
        }
        hashes
    };
    assert_eq!(hashed_at_once(1), 1);
    assert_eq!(hashed_at_once(3), 3);
}

/// One worker, two mappings with two files each: the mappings take turns (a, b, a, b), so
/// neither waits for all of the other's files.
#[test]
fn mappings_with_files_to_hash_take_turns() {
    let mut a = rule(IfExists::Attach, After::Keep);
    a.name = "a".into();
    let mut b = rule(IfExists::Attach, After::Keep);
    b.name = "b".into();
    let policy = Policy {
        hash_workers: 1,
        ..Policy::default()
    };
    let mut m = Machine::new(vec![a, b], policy);
    let stat = done_record().file;
    let paths: Vec<(&str, PathBuf)> = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
        .into_iter()
        .map(|(mapping, k)| (mapping, PathBuf::from(format!("/{mapping}/{k}.txt"))))
        .collect();
    for (mapping, p) in &paths {
        m.handle(
            Time(0),
            Input::Observed {
                mapping: (*mapping).into(),
                path: p.clone(),
                stat,
            },
        );
    }
    let settled = Time(Policy::default().settle_ms);
    m.handle(settled, Input::Tick);
    let hashes = |out: Vec<Action>| -> Vec<PathBuf> {
        out.into_iter()
            .filter_map(|a| match a {
                Action::Hash { path, .. } => Some(path),
                _ => None,
            })
            .collect()
    };
    let mut order = Vec::new();
    for (_, p) in &paths {
        order.extend(hashes(m.handle(
            settled,
            Input::Stat {
                path: p.clone(),
                stat: Some(stat),
            },
        )));
    }
    while let Some(p) = order.last().cloned().filter(|_| order.len() < 4) {
        order.extend(hashes(m.handle(
            settled,
            Input::Hashed {
                path: p,
                result: HashResult::Gone,
            },
        )));
    }
    let want: Vec<PathBuf> = ["/a/0.txt", "/b/0.txt", "/a/1.txt", "/b/1.txt"]
        .into_iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(order, want);
}

#[test]
fn a_session_upload_is_not_posted() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let mut big = pending_record("e1", 1);
    big.file.size = 5 << 20;
    let out = m.start_up(10, vec![big]);
    assert!(posts(&out).is_empty());
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::CreateSession { id, .. } if id == "e1")));
}

#[test]
fn a_name_lock_follows_its_entry_to_its_new_item_and_frees_the_old_one() {
    let on = |mapping: &str, item: &str| {
        let mut r = rule(IfExists::Attach, After::Keep);
        r.name = mapping.into();
        r.target.item_id = item.into();
        r
    };
    let named = |id: &str, seq: u64, mapping: &str| {
        let mut r = pending_record(id, seq);
        r.mapping = mapping.into();
        r.name = "a.txt".into();
        r
    };
    let mut m = Machine::new(
        vec![on("m", "i1"), on("b", "i1"), on("c", "i3"), on("d", "i3")],
        Policy::default(),
    );
    let out = m.start_up(
        10,
        vec![
            named("e1", 1, "m"),
            named("e2", 2, "b"),
            named("e3", 3, "c"),
            named("e4", 4, "d"),
        ],
    );
    // One upload per name per item.
    assert_eq!(posts(&out), vec!["e1", "e3"]);
    m.answer(
        20,
        "e1",
        post_failed(unreachable("ConnectionRefused", "down")),
    );
    // e1's mapping now names another item: its next POST goes there.
    m.handle(
        Time(30),
        Input::Config {
            mappings: vec![on("m", "i2"), on("b", "i1"), on("c", "i3"), on("d", "i3")],
            policy: Policy::default(),
        },
    );
    let out = m.handle(Time(600_000), Input::Tick);
    let targets: Vec<(&str, &str)> = out
        .iter()
        .filter_map(|a| match a {
            Action::Post { id, target, .. } => Some((id.as_str(), target.item_id.as_str())),
            _ => None,
        })
        .collect();
    // The name on i1 is free for e2; e3 still holds it on i3 (its POST in flight).
    assert_eq!(targets, vec![("e1", "i2"), ("e2", "i1")], "{out:?}");
}

#[test]
fn a_failed_entry_deleting_its_partial_attachment_holds_the_name_from_start() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let mut partial = pending_record("e2", 2);
    partial.path = "/f/sub/e1.txt".into();
    partial.name = "e1.txt".into();
    partial.state = State::Failed;
    partial.error = Some(Failure::new("protocolViolation", "201 early"));
    partial.target = Some(rule(IfExists::Attach, After::Keep).target);
    partial.garbage = vec!["part".into()];
    // Done, moving its file: it holds no name.
    let mut moving = pending_record("e3", 3);
    moving.name = "e1.txt".into();
    moving.path = "/f/other/e1.txt".into();
    moving.state = State::Done;
    moving.attachment_id = Some("a3".into());
    moving.target = Some(rule(IfExists::Attach, After::Move).target);
    let mut m2 = Machine::new(vec![rule(IfExists::Attach, After::Move)], Policy::default());
    let out = m.start_up(10, vec![pending_record("e1", 1), partial]);
    assert!(posts(&out).is_empty(), "{out:?}");
    assert!(out.iter().any(
        |a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if attachment_id == "part")
    ));
    let out = m2.start_up(10, vec![pending_record("e1", 1), moving]);
    assert_eq!(posts(&out), vec!["e1"]);
    assert!(out.iter().any(|a| matches!(a, Action::After { .. })));
}

#[test]
fn a_chunk_is_recorded_before_it_is_first_sent_not_when_sent_again() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let mut big = pending_record("e1", 1);
    big.file.size = 5 << 20;
    m.start_up(10, vec![big]);
    let out = m.answer(20, "e1", session_created(0));
    let chunk = Policy::default().chunk_size;
    let recorded = out.iter().position(
        |a| matches!(a, Action::Persist(r) if r.session.is_some_and(|s| s.sent_end == chunk)),
    );
    let sent = out
        .iter()
        .position(|a| matches!(a, Action::PutChunk { offset: 0, .. }));
    assert!(recorded.is_some() && recorded < sent, "{out:?}");
    // Throttled: the same chunk again, nothing new to record.
    let out = m.answer(30, "e1", chunk_failed(throttled(Some(0))));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::PutChunk { offset: 0, .. })));
    assert!(persisted(&out).is_none(), "{out:?}");
}

#[test]
fn a_failure_is_counted_and_a_cancel_too_late_is_told_as_such() {
    let attached = |cancel: Option<Input>, outcome: PostOutcome| {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        m.start_up(10, vec![pending_record("e1", 1)]);
        if let Some(c) = cancel {
            m.handle(Time(15), c);
        }
        let out = m.answer(20, "e1", Outcome::Post(outcome));
        let note = out.iter().find_map(|a| match a {
            Action::Notify(n) => Some(n.clone()),
            _ => None,
        });
        (note, m.failed_this_run)
    };
    let created = || PostOutcome::Created {
        attachment_id: "a1".into(),
    };
    let (note, failed) = attached(None, created());
    assert!(matches!(note, Some(Note::Attached { .. })), "{note:?}");
    assert_eq!(failed, 0);
    // Canceled by the user while its POST was in flight, and it landed.
    let (note, _) = attached(Some(Input::Cancel { id: "e1".into() }), created());
    assert!(matches!(note, Some(Note::CancelTooLate { .. })), "{note:?}");
    // Its file went meanwhile (the agent's cancel): attached, as the file was.
    let gone = Input::Gone {
        mapping: "m".into(),
        path: "/f/e1.txt".into(),
    };
    let (note, _) = attached(Some(gone), created());
    assert!(matches!(note, Some(Note::Attached { .. })), "{note:?}");
    let refused = PostOutcome::Failed(permanent("ErrorAccessDenied", "no"));
    let (note, failed) = attached(None, refused);
    assert!(matches!(note, Some(Note::Failed { .. })), "{note:?}");
    assert_eq!(failed, 1);
}

fn started(policy: Policy, after: After, records: Vec<Record>) -> (Machine, Vec<Action>) {
    let mut m = Machine::new(vec![rule(IfExists::Attach, after)], policy);
    let out = m.start_up(10, records);
    (m, out)
}

#[test]
fn a_version_done_after_a_newer_one_deletes_its_own_copy_and_is_not_moved() {
    let mut newer = done_record();
    newer.id = "e2".into();
    newer.seq = 2;
    newer.path = "/f/e1.txt".into();
    newer.attachment_id = Some("a2".into());
    let (mut m, out) = started(
        Policy::default(),
        After::Move,
        vec![pending_record("e1", 1), newer],
    );
    assert_eq!(posts(&out), vec!["e1"]);
    let out = m.answer(20, "e1", post_created("a1"));
    let r = persisted(&out).expect("persisted");
    assert!(r.after_done, "the file is the newer version's");
    assert_eq!(
        r.replaces,
        vec![Replaced {
            entry: "e1".into(),
            attachment_id: "a1".into()
        }]
    );
    assert!(out.iter().any(
        |a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if attachment_id == "a1")
    ));
    assert!(!out.iter().any(|a| matches!(a, Action::After { .. })));
}

#[test]
fn the_newest_version_done_runs_its_after_action() {
    let (mut m, _) = started(
        Policy::default(),
        After::Move,
        vec![pending_record("e1", 1)],
    );
    let out = m.answer(20, "e1", post_created("a1"));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::After { id, .. } if id == "e1")));
}

#[test]
fn a_done_version_frees_its_name_unless_it_is_deleting_an_older_copy() {
    // e1 and e3 share a name; e1 holds it.
    let mut e3 = pending_record("e3", 3);
    e3.name = "e1.txt".into();
    let (mut m, out) = started(
        Policy::default(),
        After::Keep,
        vec![pending_record("e1", 1), e3.clone()],
    );
    assert_eq!(posts(&out), vec!["e1"]);
    let out = m.answer(20, "e1", post_created("a1"));
    assert_eq!(posts(&out), vec!["e3"], "the name is free at once");
    // Now e1 replaces an older version of its file: the name stays taken until that
    // version's attachment is deleted.
    let mut older = done_record();
    older.id = "e0".into();
    older.seq = 0;
    older.path = "/f/e1.txt".into();
    older.attachment_id = Some("a0".into());
    let (mut m, _) = started(
        Policy::default(),
        After::Keep,
        vec![older, pending_record("e1", 1), e3],
    );
    let out = m.answer(20, "e1", post_created("a1"));
    assert!(posts(&out).is_empty(), "{out:?}");
    assert!(out.iter().any(
        |a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if attachment_id == "a0")
    ));
    let out = m.answer(30, "e1", attachment_deleted());
    assert_eq!(posts(&out), vec!["e3"]);
}

#[test]
fn an_unreachable_server_is_tried_again_after_a_longer_backoff() {
    let (mut m, _) = started(
        Policy::default(),
        After::Keep,
        vec![pending_record("e1", 1)],
    );
    let out = m.answer(
        20,
        "e1",
        post_failed(unreachable("ConnectionRefused", "down")),
    );
    let wake = out.iter().find_map(|a| match a {
        Action::WakeAt(t) => Some(*t),
        _ => None,
    });
    assert_eq!(wake, Some(Time(20).plus_ms(backoff_ms("e1", 2))));
}

#[test]
fn answers_in_doubt_fail_an_entry_after_max_attempts_in_a_row() {
    let policy = Policy {
        max_attempts: 3,
        ..Policy::default()
    };
    let mut doubt = pending_record("e1", 1);
    doubt.state = State::Uploading;
    doubt.target = Some(rule(IfExists::Attach, After::Keep).target);
    doubt.may_exist = true;
    doubt.effect_at = Some(Time(0));
    let (mut m, _) = started(policy, After::Keep, vec![doubt]);
    let mut t = 0;
    for k in 1..=3 {
        t += 1_000_000;
        let out = m.handle(Time(t), Input::Tick);
        assert!(
            out.iter().any(|a| matches!(a, Action::Look { .. })),
            "look {k}: {out:?}"
        );
        let out = m.answer(
            t + 1,
            "e1",
            look_failed(ambiguous("ServiceUnavailable", "503")),
        );
        let r = persisted(&out).expect("persisted");
        assert_eq!(r.attempts, k);
        assert_eq!(r.state == State::Failed, k == 3, "after {k}: {r:?}");
    }
    assert_eq!(m.failed_this_run, 1);
}

#[test]
fn a_post_refused_as_too_large_goes_by_session_or_fails_if_too_small_for_one() {
    let refused = |size: u64| {
        let mut r = pending_record("e1", 1);
        r.file.size = size;
        let (mut m, out) = started(Policy::default(), After::Keep, vec![r]);
        assert_eq!(posts(&out), vec!["e1"]);
        m.answer(20, "e1", Outcome::Post(PostOutcome::TooLarge))
    };
    let out = refused(MIN_SESSION - 1);
    let r = persisted(&out).expect("persisted");
    assert_eq!(
        (r.state, r.error.as_ref().map(|e| e.code.as_str())),
        (State::Failed, Some("requestTooLarge"))
    );
    let out = refused(MIN_SESSION);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::CreateSession { .. })));
}

#[test]
fn a_version_found_already_attached_frees_its_name_while_its_file_is_moved() {
    // e0: a copy of e1's bytes under the same name, attached by this agent.
    let mut copy = done_record();
    copy.id = "e0".into();
    copy.seq = 0;
    copy.path = "/f/copy/e1.txt".into();
    copy.name = "e1.txt".into();
    copy.attachment_id = Some("a0".into());
    let mut other = pending_record("e3", 3);
    other.path = "/f/sub/e1.txt".into();
    other.name = "e1.txt".into();
    other.sha256 = Some("cd".repeat(32));
    let mut m = Machine::new(vec![rule(IfExists::Skip, After::Move)], Policy::default());
    let out = m.start_up(10, vec![copy, pending_record("e1", 1), other]);
    // e1 is done with no request, and its file is being moved...
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::After { id, .. } if id == "e1")));
    // ...while e3 of the same name goes on.
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Look { id, .. } if id == "e3")),
        "{out:?}"
    );
}

#[test]
fn a_session_that_wants_an_offset_past_0_is_abandoned_and_the_entry_fails_after_3() {
    let mut big = pending_record("e1", 1);
    big.file.size = 5 << 20;
    let (mut m, out) = started(Policy::default(), After::Keep, vec![big]);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::CreateSession { .. })));
    let mut t = 20;
    for k in 1..=3 {
        let out = m.answer(t, "e1", session_created(5));
        let r = persisted(&out).expect("persisted");
        assert_eq!(r.restarts, k);
        if k < 3 {
            assert_eq!(r.state, State::Uploading);
            assert!(r.session.is_some_and(|s| s.abandoned), "{r:?}");
        } else {
            assert_eq!(
                (r.state, r.error.as_ref().map(|e| e.code.as_str())),
                (State::Failed, Some("protocolViolation"))
            );
        }
        // The abandoned session is deleted (then a new one made, while any are left).
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::DeleteSession { .. })));
        let out = m.answer(t + 1, "e1", session_deleted());
        let again = out
            .iter()
            .any(|a| matches!(a, Action::CreateSession { .. }));
        assert_eq!(again, k < 3, "after {k}: {out:?}");
        t += 10;
    }
    // A session that starts at 0 is used.
    let mut big = pending_record("e1", 1);
    big.file.size = 5 << 20;
    let (mut m, _) = started(Policy::default(), After::Keep, vec![big]);
    let out = m.answer(20, "e1", session_created(0));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::PutChunk { offset: 0, .. })));
}

#[test]
fn a_file_that_changed_while_it_was_sent_is_settled_again() {
    let (mut m, _) = started(
        Policy::default(),
        After::Keep,
        vec![pending_record("e1", 1)],
    );
    assert!(m.settler().is_empty());
    let out = m.answer(20, "e1", Outcome::Post(PostOutcome::Changed));
    let r = persisted(&out).expect("persisted");
    assert_eq!(r.state, State::Canceled);
    assert!(m.settler().is_settling(Path::new("/f/e1.txt")));
}

/// A 5 MiB file whose session was made and whose first chunk is in flight.
fn first_chunk_in_flight() -> Machine {
    let mut big = pending_record("e1", 1);
    big.file.size = 5 << 20;
    let (mut m, _) = started(Policy::default(), After::Keep, vec![big]);
    let out = m.answer(20, "e1", session_created(0));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::PutChunk { offset: 0, .. })));
    m
}

#[test]
fn a_session_whose_next_range_does_not_move_three_times_is_abandoned() {
    let mut m = first_chunk_in_flight();
    let chunk = Policy::default().chunk_size;
    let out = m.answer(30, "e1", chunk_accepted(chunk));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::PutChunk { offset, .. } if *offset == chunk)));
    // The server keeps asking for the same range.
    for k in 1..=3 {
        let out = m.answer(30 + k, "e1", chunk_accepted(chunk));
        let abandoned = out
            .iter()
            .any(|a| matches!(a, Action::DeleteSession { .. }));
        assert_eq!(abandoned, k == 3, "after {k}: {out:?}");
    }
}

#[test]
fn a_201_before_the_last_byte_is_deleted_and_the_entry_fails_the_third_time() {
    let mut m = first_chunk_in_flight();
    let mut t = 30;
    for k in 1..=3 {
        let part = format!("p{k}");
        let out = m.answer(
            t,
            "e1",
            Outcome::Chunk(ChunkOutcome::Completed {
                attachment_id: Some(part.clone()),
            }),
        );
        let r = persisted(&out).expect("persisted");
        assert_eq!((r.restarts, r.garbage.clone()), (k, vec![part.clone()]));
        assert_eq!(r.state == State::Failed, k == 3, "after {k}: {r:?}");
        assert!(out.iter().any(
            |a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if *attachment_id == part)
        ));
        let out = m.answer(t + 1, "e1", attachment_deleted());
        if k < 3 {
            assert!(out
                .iter()
                .any(|a| matches!(a, Action::CreateSession { .. })));
            m.answer(t + 2, "e1", session_created(0));
        }
        t += 10;
    }
    assert_eq!(m.failed_this_run, 1);
}

/// `first_chunk_in_flight`, the first chunk taken: the last one in flight.
fn last_chunk_in_flight() -> Machine {
    let mut m = first_chunk_in_flight();
    let chunk = Policy::default().chunk_size;
    let out = m.answer(30, "e1", chunk_accepted(chunk));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::PutChunk { offset, last: true, .. } if *offset == chunk)));
    m
}

/// Seed 2179010: a session's bytes came from the file the record named; the path now holds
/// another file with the same bytes (an in-place edit went out mid-file, then a copy of the
/// old bytes replaced the file). A resume would re-read the start from the new file and pass
/// the hash check with the edit still in the session: the session is abandoned and the
/// upload starts again from the new file, with no restart counted.
#[test]
fn a_session_whose_file_was_replaced_by_the_same_bytes_is_started_again() {
    let chunk = Policy::default().chunk_size;
    let mut big = pending_record("e1", 1);
    big.file.size = 3 * chunk;
    let path = big.path.clone();
    let (mut m, _) = started(Policy::default(), After::Keep, vec![big.clone()]);
    m.answer(20, "e1", session_created(0));
    let out = m.answer(30, "e1", chunk_accepted(chunk));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::PutChunk { offset, .. } if *offset == chunk)));
    // While the second chunk is on the wire, another file with the same bytes settles.
    let copy = FileStat {
        ino: 7,
        mtime_ns: 40,
        ctime_ns: 50,
        ..big.file
    };
    let out = settle(&mut m, 40, &path, copy);
    assert!(
        out.iter().any(|a| matches!(a, Action::Hash { .. })),
        "{out:?}"
    );
    let out = m.handle(
        Time(40_000),
        Input::Hashed {
            path: path.clone(),
            result: HashResult::Hashed {
                sha256: big.sha256.clone().expect("sha"),
                stat: copy,
            },
        },
    );
    let r = persisted(&out).expect("persisted");
    assert_eq!(r.file, copy);
    assert!(r.session.is_some_and(|s| s.abandoned), "{r:?}");
    // The chunk in flight is taken; nothing more goes into that session.
    let out = m.answer(40_010, "e1", chunk_accepted(2 * chunk));
    assert!(
        !out.iter().any(|a| matches!(a, Action::PutChunk { .. })),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::DeleteSession { .. })),
        "{out:?}"
    );
    let out = m.answer(40_020, "e1", session_deleted());
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::CreateSession { .. })),
        "{out:?}"
    );
    let r = persisted(&out).expect("persisted");
    assert_eq!((r.restarts, r.session), (0, None));
}

#[test]
fn a_file_gone_before_its_last_chunk_was_read_leaves_nothing_in_doubt() {
    let mut m = last_chunk_in_flight();
    let out = m.answer(40, "e1", Outcome::Chunk(ChunkOutcome::FileGone));
    let r = persisted(&out).expect("persisted");
    assert_eq!(r.state, State::Canceled);
    assert!(!r.may_exist, "{r:?}");
}

#[test]
fn a_session_gone_mid_file_is_replaced_but_after_its_last_chunk_the_item_is_looked_at() {
    let mut m = first_chunk_in_flight();
    let out = m.answer(40, "e1", chunk_session_gone());
    let r = persisted(&out).expect("persisted");
    assert_eq!((r.restarts, r.session), (1, None));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::CreateSession { .. })));
    // The last byte may have landed: no new session before a look.
    let mut m = last_chunk_in_flight();
    let out = m.answer(40, "e1", chunk_session_gone());
    let r = persisted(&out).expect("persisted");
    assert_eq!((r.restarts, r.session, r.may_exist), (0, None, true));
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::CreateSession { .. })));
}

#[test]
fn a_chunk_not_taken_goes_again_and_one_in_doubt_dates_the_last_bytes_effect() {
    let unreachable = || chunk_failed(unreachable("ConnectionRefused", "down"));
    let ambiguous = || chunk_failed(ambiguous("ConnectionDropped", "lost"));
    // Unreachable: the session is as it was; after the wait, the same chunk again.
    let mut m = first_chunk_in_flight();
    m.answer(40, "e1", unreachable());
    let out = m.handle(Time(1_000_000), Input::Tick);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::PutChunk { offset: 0, .. })),
        "{out:?}"
    );
    assert!(!out.iter().any(|a| matches!(a, Action::AskSession { .. })));
    // In doubt mid-file: nothing may be on the item yet.
    let mut m = first_chunk_in_flight();
    let out = m.answer(50, "e1", ambiguous());
    let r = persisted(&out).expect("persisted");
    assert_eq!((r.may_exist, r.effect_at), (false, None));
    // In doubt on the last chunk: it could land until its answer ended.
    let mut m = last_chunk_in_flight();
    let out = m.answer(50, "e1", ambiguous());
    let r = persisted(&out).expect("persisted");
    assert_eq!((r.may_exist, r.effect_at), (true, Some(Time(50))));
}

#[test]
fn sessions_that_keep_dying_back_off_and_fail_the_entry_only_when_bounded() {
    let dies = |max_attempts: u32| {
        let policy = Policy {
            max_attempts,
            ..Policy::default()
        };
        let mut big = pending_record("e1", 1);
        big.file.size = 5 << 20;
        let (mut m, _) = started(policy, After::Keep, vec![big]);
        let mut t = 20;
        let mut seen = Vec::new();
        for k in 1..=4u32 {
            m.answer(t, "e1", session_created(0));
            let out = m.answer(t + 1, "e1", chunk_session_gone());
            let r = persisted(&out).expect("persisted").clone();
            assert_eq!(r.restarts, k);
            let at_once = out
                .iter()
                .any(|a| matches!(a, Action::CreateSession { .. }));
            seen.push((r.state, at_once));
            if !at_once {
                t += 10_000_000;
                let out = m.handle(Time(t), Input::Tick);
                let again = out
                    .iter()
                    .any(|a| matches!(a, Action::CreateSession { .. }));
                assert_eq!(again, r.state != State::Failed, "{out:?}");
            } else {
                t += 10;
            }
        }
        seen
    };
    use State::{Failed, Uploading};
    // A new session at once, then after a backoff; with a bound (max_sessions = 3), the
    // fourth death fails the entry.
    assert_eq!(
        dies(8),
        vec![
            (Uploading, true),
            (Uploading, false),
            (Uploading, false),
            (Failed, false)
        ]
    );
    // `run`: never given up.
    assert_eq!(
        dies(0),
        vec![
            (Uploading, true),
            (Uploading, false),
            (Uploading, false),
            (Uploading, false)
        ]
    );
}

#[test]
fn a_session_asked_that_reports_what_it_cannot_have_is_abandoned() {
    let asked = |mut m: Machine, next: u64| {
        m.answer(
            50,
            "e1",
            chunk_failed(ambiguous("ConnectionDropped", "lost")),
        );
        let out = m.handle(Time(10_000_000), Input::Tick);
        assert!(
            out.iter().any(|a| matches!(a, Action::AskSession { .. })),
            "{out:?}"
        );
        let out = m.answer(10_000_001, "e1", Outcome::Ask(AskOutcome::Next(Some(next))));
        let r = persisted(&out).expect("persisted");
        assert!(r.session.is_some_and(|s| s.abandoned), "{r:?}");
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::DeleteSession { .. })));
    };
    let chunk = Policy::default().chunk_size;
    // Bytes it was never sent.
    asked(first_chunk_in_flight(), chunk + 10);
    // Every byte, yet no attachment.
    asked(last_chunk_in_flight(), 5 << 20);
}

/// `last_chunk_in_flight`, its answer lost: the session is asked where it stands.
fn last_chunk_in_doubt() -> Machine {
    let mut m = last_chunk_in_flight();
    m.answer(
        50,
        "e1",
        chunk_failed(ambiguous("ConnectionDropped", "lost")),
    );
    let out = m.handle(Time(10_000_000), Input::Tick);
    assert!(
        out.iter().any(|a| matches!(a, Action::AskSession { .. })),
        "{out:?}"
    );
    m
}

#[test]
fn after_the_last_chunk_in_doubt_the_item_is_looked_at_before_any_new_session() {
    // The session is gone: it may have completed.
    let mut m = last_chunk_in_doubt();
    let out = m.answer(10_000_001, "e1", Outcome::Ask(AskOutcome::Gone));
    let r = persisted(&out).expect("persisted");
    assert_eq!((r.session, r.may_exist, r.restarts), (None, true, 0));
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::CreateSession { .. })));
    // (Its effect is long enough ago: the look goes at once.)
    assert!(
        out.iter().any(|a| matches!(a, Action::Look { .. })),
        "{out:?}"
    );
    // It wants bytes from the start again: sent again, and the doubt stays (the lost
    // request may still complete), so a session dying now is followed by a look too.
    let mut m = last_chunk_in_doubt();
    let out = m.answer(10_000_001, "e1", Outcome::Ask(AskOutcome::Next(Some(0))));
    assert!(out.iter().any(|a| matches!(
        a,
        Action::PutChunk {
            offset: 0,
            last: false,
            ..
        }
    )));
    assert!(m.record("e1").is_some_and(|r| r.may_exist));
    let out = m.answer(10_000_002, "e1", chunk_session_gone());
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::CreateSession { .. })));
    assert!(m
        .record("e1")
        .is_some_and(|r| r.may_exist && r.restarts == 0));
}

/// Answers `fault` to the delete of e1 in flight, then wakes the machine for the next
/// one, `n` times; the actions answered.
fn deletes_refused(m: &mut Machine, t: &mut u64, n: usize, fault: &Fault) -> Vec<Vec<Action>> {
    let mut outs = Vec::new();
    for _ in 0..n {
        let outcome = match m.record("e1").map(|r| r.session.is_some()) {
            Some(true) => Outcome::DeleteSession(DeleteOutcome::Failed(fault.clone())),
            _ => Outcome::DeleteAttachment(DeleteOutcome::Failed(fault.clone())),
        };
        outs.push(m.answer(*t, "e1", outcome));
        *t += 10_000_000;
        let out = m.handle(Time(*t), Input::Tick);
        outs.push(out);
    }
    outs
}

#[test]
fn a_session_delete_is_given_up_after_10_failures_not_counting_429s() {
    let mut abandoned = pending_record("e1", 1);
    abandoned.state = State::Canceled;
    abandoned.error = Some(Failure::new("canceled", "canceled by the user"));
    abandoned.target = Some(rule(IfExists::Attach, After::Keep).target);
    abandoned.session = Some(SessionMark {
        sent_end: 4096,
        abandoned: true,
    });
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let out = m.handle(
        Time(10),
        Input::Start {
            records: vec![abandoned],
            with_url: vec!["e1".into()],
            messages: vec![],
        },
    );
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::DeleteSession { .. })));
    let mut t = 20;
    let forgot = |outs: &[Vec<Action>]| {
        outs.iter()
            .flatten()
            .any(|a| matches!(a, Action::ForgetUrl { .. }))
    };
    let throttled = throttled(Some(1_000));
    let down = unreachable("ConnectionRefused", "down");
    assert!(!forgot(&deletes_refused(&mut m, &mut t, 12, &throttled)));
    assert!(!forgot(&deletes_refused(&mut m, &mut t, 9, &down)));
    let outs = deletes_refused(&mut m, &mut t, 1, &down);
    assert!(forgot(&outs), "{outs:?}");
    assert!(m.record("e1").is_none_or(|r| r.session.is_none()));
}

#[test]
fn an_older_copys_delete_is_given_up_after_10_failures_not_counting_429s() {
    let mut replacing = done_record();
    replacing.replaces = vec![Replaced {
        entry: "e0".into(),
        attachment_id: "old".into(),
    }];
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let out = m.start_up(10, vec![replacing]);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::DeleteAttachment { .. })));
    let mut t = 20;
    let throttled = throttled(Some(1_000));
    let down = unreachable("ConnectionRefused", "down");
    deletes_refused(&mut m, &mut t, 12, &throttled);
    deletes_refused(&mut m, &mut t, 9, &down);
    assert_eq!(m.record("e1").map(|r| r.replaces.len()), Some(1));
    let outs = deletes_refused(&mut m, &mut t, 1, &down);
    let r = outs
        .iter()
        .flat_map(|o| persisted(o))
        .next()
        .expect("persisted");
    assert!(r.replaces.is_empty(), "{r:?}");
    // Given up on, not deleted: the older record is not marked replaced.
    assert!(!outs
        .iter()
        .flatten()
        .any(|a| matches!(a, Action::MarkReplaced { .. })));
}

#[test]
fn an_older_version_still_at_work_is_marked_replaced_on_record_once_its_copy_is_deleted() {
    // e1 is done and its file being moved; e2, a newer version, is new.
    let mut moving = done_record();
    moving.path = "/f/a.txt".into();
    moving.attachment_id = Some("a1".into());
    moving.after_done = false;
    let mut newer = pending_record("e2", 2);
    newer.path = "/f/a.txt".into();
    newer.name = "a.txt".into();
    newer.sha256 = Some("cd".repeat(32));
    let (mut m, out) = started(Policy::default(), After::Move, vec![moving, newer]);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::After { id, .. } if id == "e1")));
    assert_eq!(posts(&out), vec!["e2"]);
    let out = m.answer(20, "e2", post_created("a2"));
    assert!(out.iter().any(
        |a| matches!(a, Action::DeleteAttachment { attachment_id, .. } if attachment_id == "a1")
    ));
    let out = m.answer(30, "e2", attachment_deleted());
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Persist(r) if r.id == "e1" && r.replaced)),
        "{out:?}"
    );
}

/// Seeds 1084322, 1087124, 1141332: prune took a done entry (its file deleted by its
/// after-action) while the machine still indexed it; the same bytes dropped again at the path
/// were taken for that entry's version (`UpdateFile` of a record no longer there): recorded
/// nowhere, and sent again at the next start. Told what was pruned, the machine takes such a
/// file as a new one (with `if_exists = "attach"`, attached again).
#[test]
fn a_file_at_a_pruned_entrys_path_is_a_new_file() {
    let path = PathBuf::from("/f/a.txt");
    let run = |pruned: bool| {
        let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
        let mut rec = done_record();
        rec.file = FileStat {
            dev: 1,
            ino: 5,
            size: 10,
            ..FileStat::default()
        };
        m.start_up(10, vec![rec]);
        if pruned {
            m.handle(
                Time(20),
                Input::Pruned {
                    ids: vec!["e1".into()],
                },
            );
        }
        let again = FileStat {
            dev: 1,
            ino: 9,
            size: 10,
            mtime_ns: 7,
            ctime_ns: 7,
            owner: None,
        };
        settle(&mut m, 30, &path, again);
        m.handle(
            Time(30_000),
            Input::Hashed {
                path: path.clone(),
                result: HashResult::Hashed {
                    sha256: "ab".repeat(32),
                    stat: again,
                },
            },
        )
    };
    let out = run(true);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Persist(r) if r.id != "e1")),
        "a new entry: {out:?}"
    );
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::UpdateFile { id, .. } if id == "e1")),
        "{out:?}"
    );
    // (Not pruned: the same bytes are the same version, its record's file updated.)
    let out = run(false);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::UpdateFile { id, .. } if id == "e1")),
        "{out:?}"
    );
}

/// A hash answered "changed" with nothing reported of the path meanwhile (a `cargo mutants`
/// survivor of `hashed`: `!held.iter().any(..)` → `held.iter().any(..)`): the path settles
/// again from what was seen, and is hashed again, not forgotten until a rescan.
#[test]
fn a_hash_answered_changed_with_nothing_seen_meanwhile_settles_the_path_again() {
    let mut m = Machine::new(vec![rule(IfExists::Attach, After::Keep)], Policy::default());
    let path = PathBuf::from("/f/a.txt");
    let st = FileStat {
        ino: 3,
        size: 100,
        ..FileStat::default()
    };
    let out = settle(&mut m, 0, &path, st);
    assert!(
        out.iter().any(|a| matches!(a, Action::Hash { .. })),
        "{out:?}"
    );
    let hashed_at = Policy::default().settle_ms + 5;
    m.handle(
        Time(hashed_at),
        Input::Hashed {
            path: path.clone(),
            result: HashResult::Changed,
        },
    );
    let mut out = Vec::new();
    let mut t = hashed_at;
    while t < hashed_at + 4 * Policy::default().settle_ms {
        t += 100;
        out.extend(m.handle(Time(t), Input::Tick));
    }
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Stat { path: p } if *p == path)),
        "settled again: {out:?}"
    );
}

/// Issue #22, trial 5 G7: with `if_exists = "attach"` and `on_change = "add"`, a file's
/// version A, then B, then A again: the third is the version already on the item (SPEC §3:
/// "a file version (path + size + content hash) is attached once"), done with A's attachment
/// and no request; said as found, not as a new attachment. With `replace`, A's attachment
/// went when B came, so A again is attached again.
#[test]
fn with_attach_and_add_a_version_back_after_another_is_not_attached_again() {
    let path = PathBuf::from("/f/a.txt");
    let a = "ab".repeat(32);
    let first = {
        let mut r = done_record();
        r.attachment_id = Some("a1".into());
        r.file.ino = 1;
        r
    };
    let second = {
        let mut r = done_record();
        r.id = "e2".into();
        r.seq = 2;
        r.attachment_id = Some("a2".into());
        r.sha256 = Some("cd".repeat(32));
        r.file.ino = 2;
        r
    };
    let again = FileStat {
        ino: 3,
        ..first.file
    };
    let run = |on_change: OnChange, first: Record| {
        let rule = MappingRule {
            on_change,
            ..rule(IfExists::Attach, After::Keep)
        };
        let mut m = Machine::new(vec![rule], Policy::default());
        m.start_up(10, vec![first, second.clone()]);
        let mut out = settle(&mut m, 20, &path, again);
        assert!(
            out.iter().any(|x| matches!(x, Action::Hash { .. })),
            "{out:?}"
        );
        out.extend(m.handle(
            Time(10_000),
            Input::Hashed {
                path: path.clone(),
                result: HashResult::Hashed {
                    sha256: a.clone(),
                    stat: again,
                },
            },
        ));
        out
    };
    let out = run(OnChange::Add, first.clone());
    assert!(
        !out.iter().any(|x| matches!(
            x,
            Action::Post { .. } | Action::CreateSession { .. } | Action::Look { .. }
        )),
        "{out:?}"
    );
    let r = persisted(&out).expect("the version back");
    assert_ne!(r.id, "e1");
    assert_eq!(
        (r.state, r.attachment_id.as_deref()),
        (State::Done, Some("a1"))
    );
    assert!(
        out.iter()
            .any(|x| matches!(x, Action::Notify(Note::Attached { found: true, .. }))),
        "{out:?}"
    );
    assert!(
        !out.iter()
            .any(|x| matches!(x, Action::DeleteAttachment { .. })),
        "{out:?}"
    );

    // With `replace`, B's attachment replaced A's: A again is a new attachment.
    let replaced = Record {
        replaced: true,
        ..first
    };
    let out = run(OnChange::Replace, replaced);
    assert!(
        out.iter().any(|x| matches!(x, Action::Post { .. })),
        "{out:?}"
    );
}
