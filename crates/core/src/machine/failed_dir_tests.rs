//! A failed file of a mapping of files and its `failed_dir`: asked into it by the core, taken
//! back by `retry`, left where it is while its folder is out of reach, and a retry that comes
//! while the move is under way. (Each test here was written for a mutant `cargo mutants` left
//! alive in `set_aside`, `retry_after_move`, `set_newest_file_of` and `advance`.)

use super::test_support::*;
use super::tests::{pending_record, rule, settle};
use super::*;
use std::path::{Path, PathBuf};

fn policy(failed_dir: bool) -> Policy {
    Policy {
        failed_dirs: if failed_dir {
            vec!["m".into()]
        } else {
            Vec::new()
        },
        ..Policy::default()
    }
}

/// `pending_record`'s file with an identity (one with none has left its folder).
fn pending(id: &str) -> Record {
    let mut r = pending_record(id, 1);
    r.file = FileStat {
        dev: 1,
        ino: 5,
        size: 10,
        ctime_ns: 5,
        ..FileStat::default()
    };
    r
}

fn machine(failed_dir: bool) -> Machine {
    Machine::new(
        vec![rule(IfExists::Attach, After::Keep)],
        policy(failed_dir),
    )
}

fn to_failed_dir(out: &[Action]) -> Vec<&str> {
    out.iter()
        .filter_map(|a| match a {
            Action::ToFailedDir { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

fn from_failed_dir(out: &[Action]) -> Vec<&str> {
    out.iter()
        .filter_map(|a| match a {
            Action::FromFailedDir { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

fn last_record<'a>(out: &'a [Action], id: &str) -> Option<&'a Record> {
    out.iter().rev().find_map(|a| match a {
        Action::Persist(r) if r.id == id => Some(r),
        _ => None,
    })
}

/// `e1` (at /f/e1.txt) started pending; its POST refused for good. The actions of the refusal.
fn refused(m: &mut Machine) -> Vec<Action> {
    let out = m.start_up(10, vec![pending("e1")]);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Post { id, .. } if id == "e1")),
        "{out:?}"
    );
    m.answer(
        20,
        "e1",
        post_failed(permanent("ErrorInvalidAttachment", "refused")),
    )
}

fn moved_to(dir: &str, ino: u64) -> MoveOutcome {
    MoveOutcome::Moved {
        to: PathBuf::from(dir).join("e1.txt"),
        file: FileStat {
            dev: 1,
            ino,
            size: 10,
            ctime_ns: ino as i64,
            ..FileStat::default()
        },
    }
}

/// A file refused by its size as it settles (never active) goes to `failed_dir` when its
/// mapping has one, and nothing is asked, nor left at work, when it has none.
#[test]
fn a_file_rejected_at_settle_is_asked_into_failed_dir_only_when_its_mapping_has_one() {
    let path = PathBuf::from("/f/big.bin");
    let big = FileStat {
        ino: 3,
        size: MAX_ATTACHMENT + 1,
        ..FileStat::default()
    };
    let mut m = machine(true);
    let out = settle(&mut m, 0, &path, big);
    let rejected = out
        .iter()
        .find_map(|a| match a {
            Action::Persist(r) if r.state == State::Rejected => Some(r.id.clone()),
            _ => None,
        })
        .expect("rejected by its size");
    assert_eq!(to_failed_dir(&out), vec![rejected.as_str()], "{out:?}");

    let mut m = machine(false);
    let out = settle(&mut m, 0, &path, big);
    assert!(to_failed_dir(&out).is_empty(), "{out:?}");
    assert!(m.quiescent(), "nothing left at work for a rejected file");
}

/// `retry` while the failed file's move into `failed_dir` is under way is taken once the move
/// is answered: the file is asked back from where it went, not lost.
#[test]
fn a_retry_during_the_move_into_failed_dir_takes_the_file_back_once_moved() {
    let mut m = machine(true);
    let out = refused(&mut m);
    assert_eq!(to_failed_dir(&out), vec!["e1"], "{out:?}");
    let failed = last_record(&out, "e1").expect("failed").clone();
    assert_eq!(failed.state, State::Failed);
    // The retry comes before the move's answer.
    let out = m.handle(
        Time(30),
        Input::Retry {
            records: vec![failed],
        },
    );
    assert!(from_failed_dir(&out).is_empty(), "{out:?}");
    let out = m.answer(40, "e1", Outcome::ToFailedDir(moved_to("/f/failed", 7)));
    assert_eq!(from_failed_dir(&out), vec!["e1"], "{out:?}");
}

/// A `retry` of a file still at work (not failed, not moving) is nothing to wait for: once it
/// does fail later and goes into `failed_dir`, it stays there until the user retries it.
#[test]
fn a_retry_of_a_file_at_work_is_not_kept_for_a_later_move() {
    let mut m = machine(true);
    let out = m.start_up(10, vec![pending("e1")]);
    let at_work = out
        .iter()
        .find_map(|a| match a {
            Action::Persist(r) if r.id == "e1" => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| pending("e1"));
    m.handle(
        Time(15),
        Input::Retry {
            records: vec![at_work],
        },
    );
    let out = m.answer(
        20,
        "e1",
        post_failed(permanent("ErrorInvalidAttachment", "refused")),
    );
    assert_eq!(to_failed_dir(&out), vec!["e1"], "{out:?}");
    let out = m.answer(40, "e1", Outcome::ToFailedDir(moved_to("/f/failed", 7)));
    assert!(from_failed_dir(&out).is_empty(), "{out:?}");
    assert!(m.quiescent(), "{out:?}");
}

/// Taken back from `failed_dir`, the file is known at its path as it is now (a rename moves its
/// ctime): seen there again unchanged, it is not a new version.
#[test]
fn a_file_taken_back_from_failed_dir_is_not_a_new_version_at_its_path() {
    let mut m = machine(true);
    let out = refused(&mut m);
    let failed = last_record(&out, "e1").expect("failed").clone();
    let out = m.answer(30, "e1", Outcome::ToFailedDir(moved_to("/f/failed", 7)));
    let failed = last_record(&out, "e1").cloned().unwrap_or(failed);
    assert_eq!(failed.failed_to, Some(PathBuf::from("/f/failed/e1.txt")));
    let out = m.handle(
        Time(40),
        Input::Retry {
            records: vec![failed],
        },
    );
    assert_eq!(from_failed_dir(&out), vec!["e1"], "{out:?}");
    let back = FileStat {
        dev: 1,
        ino: 7,
        size: 10,
        ctime_ns: 99,
        ..FileStat::default()
    };
    let out = m.answer(
        50,
        "e1",
        Outcome::FromFailedDir(MoveOutcome::Moved {
            to: PathBuf::from("/f/e1.txt"),
            file: back,
        }),
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Post { id, .. } if id == "e1")),
        "attached again from its path: {out:?}"
    );
    let out = m.answer(55, "e1", post_created("a1"));
    assert_eq!(
        last_record(&out, "e1").map(|r| r.state),
        Some(State::Done),
        "{out:?}"
    );
    let out = settle(&mut m, 60, Path::new("/f/e1.txt"), back);
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Hash { .. })
                || matches!(a, Action::Persist(r) if r.id != "e1")),
        "the file back at its path is the same version: {out:?}"
    );
}

/// A file that fails while its folder is out of reach is left where it is (no move is asked,
/// then or when the folder is back), and the entry does not wait for it.
#[test]
fn a_file_failing_while_its_folder_is_out_of_reach_is_left_where_it_is() {
    let mut m = machine(true);
    let out = m.start_up(10, vec![pending("e1")]);
    assert!(!out.is_empty());
    m.handle(
        Time(15),
        Input::FolderUnavailable {
            mapping: "m".into(),
        },
    );
    let out = m.answer(
        20,
        "e1",
        post_failed(permanent("ErrorInvalidAttachment", "refused")),
    );
    assert!(to_failed_dir(&out).is_empty(), "{out:?}");
    assert_eq!(
        last_record(&out, "e1").map(|r| r.state),
        Some(State::Failed),
        "{out:?}"
    );
    let out = m.handle(
        Time(30),
        Input::FolderAvailable {
            mapping: "m".into(),
        },
    );
    assert!(to_failed_dir(&out).is_empty(), "{out:?}");
}

/// A retry of a file in `failed_dir` after a newer version of its path was dropped does not
/// take it back over the newer one: it stays there, canceled as superseded. A failed file whose
/// path holds nothing newer is moved in as usual.
#[test]
fn a_retry_after_a_newer_version_was_dropped_leaves_the_old_one_in_failed_dir() {
    let mut m = machine(true);
    let out = refused(&mut m);
    let failed = last_record(&out, "e1").expect("failed").clone();
    let out = m.answer(30, "e1", Outcome::ToFailedDir(moved_to("/f/failed", 7)));
    let failed = last_record(&out, "e1").cloned().unwrap_or(failed);
    // A newer file at the same path.
    let newer = FileStat {
        dev: 1,
        ino: 8,
        size: 20,
        ctime_ns: 8,
        ..FileStat::default()
    };
    let path = PathBuf::from("/f/e1.txt");
    let mut out = settle(&mut m, 40, &path, newer);
    if out.iter().any(|a| matches!(a, Action::Hash { .. })) {
        out = m.handle(
            Time(5_000),
            Input::Hashed {
                path: path.clone(),
                result: HashResult::Hashed {
                    sha256: "cd".repeat(32),
                    stat: newer,
                },
            },
        );
    }
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Persist(r) if r.id != "e1")),
        "a newer version: {out:?}"
    );
    let out = m.handle(
        Time(6_000),
        Input::Retry {
            records: vec![failed],
        },
    );
    assert!(from_failed_dir(&out).is_empty(), "{out:?}");
    let r = last_record(&out, "e1").expect("written");
    assert_eq!(r.state, State::Canceled);
    assert_eq!(r.error.as_ref().map(|e| e.code.as_str()), Some(SUPERSEDED));
}

/// A `retry` of a failed file that is still at work on another step than its move (its upload
/// session being deleted) is taken once that step is done: not dropped (named to fix in
/// docs/core.md after `retry_after_move`'s surviving mutant), and the file is not moved into
/// `failed_dir` on the way.
#[test]
fn a_retry_while_a_failed_file_closes_its_session_is_taken_once_it_is_closed() {
    let mut m = machine(true);
    let mut failed = pending("e1");
    failed.state = State::Failed;
    failed.error = Some(Failure::new("ErrorInvalidAttachment", "refused"));
    failed.target = Some(Target {
        user: "me".into(),
        kind: ItemKind::Message,
        item_id: "item1".into(),
    });
    failed.session = Some(SessionMark {
        sent_end: 0,
        abandoned: false,
    });
    let out = m.handle(
        Time(10),
        Input::Start {
            records: vec![failed.clone()],
            with_url: vec!["e1".into()],
            messages: Vec::new(),
        },
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::DeleteSession { id, .. } if id == "e1")),
        "{out:?}"
    );
    m.handle(
        Time(15),
        Input::Retry {
            records: vec![failed],
        },
    );
    let out = m.answer(20, "e1", session_deleted());
    assert!(to_failed_dir(&out).is_empty(), "not moved aside: {out:?}");
    let retried = last_record(&out, "e1").unwrap_or_else(|| panic!("{out:?}"));
    assert!(
        !retried.state.is_terminal(),
        "the retry was taken: {retried:?}"
    );
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Post { id, .. } | Action::CreateSession { id, .. } | Action::Look { id, .. } if id == "e1"
        )),
        "it is attached again: {out:?}"
    );
}

/// Seed 789676: a failed file's move into `failed_dir` was asked, and a crash lost its answer
/// after the move landed. The record said so before the move was asked (`failed_dir_asked`), so
/// start asks the move again (the executor finds the file in `failed_dir`) instead of taking
/// the file for deleted; even when its mapping now names another item (which would otherwise
/// send the failed file again, from a path where it no longer is, and cancel it as deleted).
#[test]
fn a_move_into_failed_dir_whose_answer_a_crash_lost_is_asked_again_at_start() {
    let mut m = machine(true);
    let out = refused(&mut m);
    assert_eq!(to_failed_dir(&out), vec!["e1"], "{out:?}");
    let asked_at = out
        .iter()
        .position(|a| matches!(a, Action::ToFailedDir { .. }))
        .expect("asked");
    let on_record = out[..asked_at]
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Persist(r) if r.id == "e1" => Some(r.clone()),
            _ => None,
        })
        .expect("written before the move is asked");
    assert!(on_record.failed_dir_asked, "{on_record:?}");
    assert_eq!(on_record.state, State::Failed);

    // A crash; the mapping now names another item.
    let mut crashed = on_record.clone();
    crashed.target = Some(Target {
        user: "me".into(),
        kind: ItemKind::Message,
        item_id: "earlier-item".into(),
    });
    let mut m = machine(true);
    let out = m.start_up(100, vec![crashed.clone()]);
    assert_eq!(to_failed_dir(&out), vec!["e1"], "{out:?}");
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Persist(r) if r.state == State::Pending)),
        "not sent again from a path it may have left: {out:?}"
    );
    let out = m.answer(110, "e1", Outcome::ToFailedDir(moved_to("/f/failed", 5)));
    let r = last_record(&out, "e1").expect("its place on record");
    assert_eq!(r.failed_to, Some(PathBuf::from("/f/failed/e1.txt")));
    assert!(!r.failed_dir_asked);
    assert_eq!(r.state, State::Failed);

    // A refusal answers it too: nothing is asked again at the next start.
    let mut m = machine(true);
    m.start_up(100, vec![crashed.clone()]);
    let out = m.answer(
        110,
        "e1",
        Outcome::ToFailedDir(MoveOutcome::Refused(Failure::new("failedDirMove", "gone"))),
    );
    let r = last_record(&out, "e1").expect("answered on record").clone();
    assert!(!r.failed_dir_asked && r.failed_to.is_none(), "{r:?}");
    assert!(!has_work(&r));

    // A mapping with no `failed_dir` now: nothing to ask; the doubt is dropped on record.
    let mut m = machine(false);
    let out = m.start_up(100, vec![on_record]);
    assert!(to_failed_dir(&out).is_empty(), "{out:?}");
    let r = last_record(&out, "e1").expect("cleared on record");
    assert!(!r.failed_dir_asked);
}
