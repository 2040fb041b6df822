//! The ledger through its public API on real files: durability across reopen, the lock, damaged
//! databases, schema versions, pruning, concurrent transitions and the session URL store.

use outbox::ledger::{
    EntryError, EntryState, Ledger, LedgerEntry, LedgerError, NewEntry, SessionStore, Target,
    SCHEMA_VERSION,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

fn version(mapping: &str, path: &Path, size: u64) -> NewEntry {
    NewEntry {
        mapping: mapping.into(),
        path: path.to_path_buf(),
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        target: Target::default(),
        size,
        mtime_ns: 1,
    }
}

fn new_entry(mapping: &str, path: &Path, state: EntryState) -> LedgerEntry {
    LedgerEntry::new(version(mapping, path, 10), state, OffsetDateTime::now_utc())
}

/// `Ledger::open` once this process's last handle on the ledger has let go of it: sled releases
/// its lock when its background flusher ends, a moment after a handle is dropped (a loaded
/// machine widens that moment; `Ledger::close` waits for it, a plain drop does not).
fn open_when_free(dir: &Path) -> Result<Ledger, LedgerError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Ledger::open(dir) {
            Err(LedgerError::InUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Every file under `dir` with its bytes, sorted by path.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).unwrap() {
        let p = item.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn put_flush_reopen_keeps_entries_and_the_path_index() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("nested/state");
    let file = state.path().join("a.pdf");
    let id;
    {
        let ledger = Ledger::open(&dir).unwrap();
        let mut e = ledger
            .insert_new(new_entry("reports", &file, EntryState::Pending))
            .unwrap();
        e.sha256 = Some("ab".repeat(32));
        e.attempts = 2;
        ledger.put_flushed(&e).unwrap();
        id = e.id;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "state dir mode {mode:o}");
    }
    let ledger = open_when_free(&dir).unwrap();
    assert_eq!(ledger.schema_version().unwrap(), Some(SCHEMA_VERSION));
    let e = ledger.get(&id).unwrap().expect("entry survives reopen");
    assert_eq!(e.sha256.as_deref(), Some("ab".repeat(32).as_str()));
    assert_eq!(e.attempts, 2);
    assert_eq!(
        ledger
            .current_for_path("reports", &file)
            .unwrap()
            .map(|e| e.id),
        Some(id.clone())
    );
    assert_eq!(ledger.current_for_path("other", &file).unwrap(), None);
    assert_eq!(ledger.count(), 1);
    assert!(ledger.size_on_disk().unwrap() > 0);
}

#[test]
fn a_new_version_becomes_current_and_removing_it_falls_back() {
    let state = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(state.path()).unwrap();
    let file = state.path().join("a.pdf");
    let v1 = ledger
        .insert_new(new_entry("m", &file, EntryState::Done))
        .unwrap();
    let v2 = ledger
        .insert_new(new_entry("m", &file, EntryState::Pending))
        .unwrap();
    assert!(v2.seq > v1.seq);
    assert_eq!(
        ledger.current_for_path("m", &file).unwrap().unwrap().id,
        v2.id
    );
    // Updating the old version must not make it current again.
    ledger
        .set_state(&v1.id, EntryState::Done, |e| e.attempts += 1)
        .unwrap();
    ledger.put(&ledger.get(&v1.id).unwrap().unwrap()).unwrap();
    assert_eq!(
        ledger.current_for_path("m", &file).unwrap().unwrap().id,
        v2.id
    );
    let versions: Vec<String> = ledger
        .versions_for_path("m", &file)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(versions, vec![v2.id.clone(), v1.id.clone()]);
    assert_eq!(
        ledger.remove(&v2.id).unwrap().map(|e| e.id),
        Some(v2.id.clone())
    );
    assert_eq!(
        ledger.current_for_path("m", &file).unwrap().unwrap().id,
        v1.id
    );
    assert_eq!(ledger.remove(&v2.id).unwrap(), None);
    assert_eq!(ledger.by_state(EntryState::Done).unwrap().len(), 1);
    assert_eq!(ledger.list(Some(EntryState::Pending)).unwrap().len(), 0);
}

#[test]
fn contract_violations_are_refused() {
    let state = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(state.path()).unwrap();
    let relative = new_entry("m", Path::new("rel/a.pdf"), EntryState::Pending);
    assert!(matches!(
        ledger.insert_new(relative),
        Err(LedgerError::Invalid(_))
    ));
    let e = ledger
        .insert_new(new_entry("m", &state.path().join("a"), EntryState::Pending))
        .unwrap();
    let moved = ledger.update(&e.id, |e| e.path = PathBuf::from("/elsewhere"));
    assert!(matches!(moved, Err(LedgerError::Invalid(_))), "{moved:?}");
    let missing = ledger.set_state("ffffffffffff", EntryState::Done, |_| {});
    let err = missing.unwrap_err();
    assert!(matches!(err, LedgerError::NotFound { .. }));
    assert!(err.to_string().contains("ffffffffffff"));
}

#[test]
fn concurrent_transitions_of_one_entry_lose_no_field() {
    let state = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(state.path()).unwrap();
    let e = ledger
        .insert_new(new_entry(
            "m",
            &state.path().join("a"),
            EntryState::Uploading,
        ))
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let ledger = ledger.clone();
            let id = e.id.clone();
            s.spawn(move || {
                for _ in 0..50 {
                    if t % 2 == 0 {
                        ledger.update(&id, |e| e.attempts += 1).unwrap();
                    } else {
                        ledger.update(&id, |e| e.bytes_sent += 1).unwrap();
                    }
                }
            });
        }
    });
    let e = ledger.get(&e.id).unwrap().unwrap();
    assert_eq!((e.attempts, e.bytes_sent), (100, 100));
    let before = e.updated_at;
    let done = ledger
        .set_state(&e.id, EntryState::Done, |e| {
            e.attachment_id = Some("AAMkATT".into())
        })
        .unwrap();
    assert_eq!(done.state, EntryState::Done);
    assert_eq!(done.attachment_id.as_deref(), Some("AAMkATT"));
    assert!(done.updated_at >= before);
}

#[test]
fn a_second_open_in_this_process_is_in_use() {
    let state = tempfile::tempdir().unwrap();
    let _first = Ledger::open(state.path()).unwrap();
    let err = Ledger::open(state.path()).unwrap_err();
    assert!(matches!(err, LedgerError::InUse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("another outbox agent"), "{text}");
    assert!(text.contains(&state.path().display().to_string()), "{text}");
    assert_eq!(outbox::cli::exit::CommandError::from(err).code as i32, 2);
}

/// Runs only as the child of `an_open_in_another_process_is_in_use`.
#[test]
fn child_opens_the_ledger() {
    let Ok(dir) = std::env::var("OUTBOX_TEST_LEDGER_CHILD") else {
        return;
    };
    match Ledger::open(Path::new(&dir)) {
        Ok(_) => println!("CHILD-RESULT: opened"),
        Err(LedgerError::InUse { .. }) => println!("CHILD-RESULT: in-use"),
        Err(e) => println!("CHILD-RESULT: other {e}"),
    }
}

#[test]
fn an_open_in_another_process_is_in_use() {
    let state = tempfile::tempdir().unwrap();
    let run_child = || {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "ledger::child_opens_the_ledger",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("OUTBOX_TEST_LEDGER_CHILD", state.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        match stdout.find("CHILD-RESULT: ") {
            Some(at) => stdout[at + "CHILD-RESULT: ".len()..]
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
            None => stdout,
        }
    };
    {
        let first = Ledger::open(state.path()).unwrap();
        first.flush().unwrap();
        assert_eq!(run_child(), "in-use");
    }
    // Once the first one is gone, the child may open it.
    assert_eq!(run_child(), "opened");
}

#[test]
fn a_damaged_ledger_is_reported_by_path_and_left_untouched() {
    // Damage after a crash (dropped) and after a clean close (whose record lets a later open
    // skip the check on a copy: a changed file must bring the check back).
    for (damage, clean) in [
        ("garbage everywhere", false),
        ("garbage in the middle", false),
        ("truncated", false),
        ("garbage everywhere", true),
        ("garbage in the middle", true),
        ("truncated", true),
    ] {
        let state = tempfile::tempdir().unwrap();
        {
            let ledger = Ledger::open(state.path()).unwrap();
            for i in 0..40 {
                ledger
                    .insert_new(new_entry(
                        "m",
                        &state.path().join(format!("f{i}")),
                        EntryState::Done,
                    ))
                    .unwrap();
            }
            ledger.flush().unwrap();
            if clean {
                ledger.close().unwrap();
                assert!(
                    Ledger::open(state.path()).unwrap().close().is_ok(),
                    "a clean ledger reopens"
                );
            }
        }
        let db = state.path().join("ledger/db");
        let mut bytes = std::fs::read(&db).unwrap();
        let n = bytes.len();
        match damage {
            "garbage everywhere" => bytes.iter_mut().for_each(|b| *b = 0xA5),
            "garbage in the middle" => bytes[n / 3..n / 2].iter_mut().for_each(|b| *b = 0x5A),
            _ => bytes.truncate(n / 4),
        }
        std::fs::write(&db, &bytes).unwrap();
        let ledger_dir = state.path().join("ledger");
        let before = snapshot(&ledger_dir);
        for _ in 0..2 {
            let err = match open_when_free(state.path()) {
                // Damage in a part of the log a clean close no longer uses loses nothing: the
                // ledger may open, but only whole.
                Ok(l) if clean => {
                    assert_eq!(l.count(), 40, "{damage} after a clean close");
                    assert!(l.iter().all(|e| e.is_ok()), "{damage}: every entry decodes");
                    break;
                }
                Ok(l) => panic!("{damage}: opened with {} entries", l.count()),
                Err(e) => e,
            };
            assert!(
                matches!(err, LedgerError::Corrupt { .. }),
                "{damage}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(&ledger_dir.display().to_string()), "{text}");
            assert!(
                text.contains("NOT reset") && text.contains("move it aside"),
                "{text}"
            );
        }
        if !clean {
            assert!(
                snapshot(&ledger_dir) == before,
                "{damage}: the ledger files changed"
            );
        }
        // No scratch copies left in the state dir.
        let names: Vec<String> = std::fs::read_dir(state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["ledger".to_owned()], "{damage}");
    }
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let state = tempfile::tempdir().unwrap();
    Ledger::open(state.path()).unwrap().close().unwrap();
    {
        let db = sled::open(state.path().join("ledger")).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let before = snapshot(&state.path().join("ledger"));
    let err = open_when_free(state.path()).unwrap_err();
    assert!(
        matches!(err, LedgerError::TooNew { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade outbox"), "{err}");
    assert!(snapshot(&state.path().join("ledger")) == before);
}

#[test]
fn a_v0_ledger_is_migrated_forward() {
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("old report.pdf");
    {
        // The shape before schema versions: only SPEC's status fields, no meta tree.
        let db = sled::open(state.path().join("ledger")).unwrap();
        let record = serde_json::json!({
            "id": "00000000abcd", "mapping": "reports", "path": file, "size": 5,
            "sha256": null, "state": "done", "bytes_sent": 5, "attachment_id": "ATT1",
            "attempts": 1, "error": null, "updated_at": "2024-01-02T03:04:05Z"
        });
        db.open_tree("entries")
            .unwrap()
            .insert("00000000abcd", serde_json::to_vec(&record).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let ledger = open_when_free(state.path()).unwrap();
    assert_eq!(ledger.schema_version().unwrap(), Some(SCHEMA_VERSION));
    let e = ledger.get("00000000abcd").unwrap().unwrap();
    assert_eq!(e.state, EntryState::Done);
    assert_eq!(e.attachment_id.as_deref(), Some("ATT1"));
    assert_eq!(e.name, "old report.pdf");
    assert_eq!(e.created_at, e.updated_at);
    assert!(e.seq > 0 && !e.may_exist && e.session.is_none());
    assert_eq!(
        ledger
            .current_for_path("reports", &file)
            .unwrap()
            .unwrap()
            .id,
        e.id
    );
    // A version recorded after the migration sorts after the migrated one.
    let next = ledger
        .insert_new(new_entry("reports", &file, EntryState::Pending))
        .unwrap();
    assert_eq!(
        ledger
            .current_for_path("reports", &file)
            .unwrap()
            .unwrap()
            .id,
        next.id
    );
    ledger.flush().unwrap();
    drop(ledger);
    assert_eq!(open_when_free(state.path()).unwrap().count(), 2);
}

#[test]
fn prune_removes_only_old_finished_entries_of_gone_files() {
    let state = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(state.path()).unwrap();
    let present = state.path().join("present.pdf");
    std::fs::write(&present, b"x").unwrap();
    let gone = state.path().join("gone.pdf");
    let keep_present = ledger
        .insert_new(new_entry("m", &present, EntryState::Done))
        .unwrap();
    let prune_gone = ledger
        .insert_new(new_entry("m", &gone, EntryState::Done))
        .unwrap();
    let gone_pending = ledger
        .insert_new(new_entry("m", &gone, EntryState::Pending))
        .unwrap();
    let keep_days = Duration::from_secs(180 * 86_400);
    let now = OffsetDateTime::now_utc();
    let exists = |p: &Path| p.exists();
    // Too recent: nothing goes.
    assert_eq!(ledger.prune(keep_days, now, exists).unwrap(), 0);
    let later = now + Duration::from_secs(181 * 86_400);
    assert_eq!(ledger.prune(keep_days, later, exists).unwrap(), 1);
    assert!(
        ledger.get(&keep_present.id).unwrap().is_some(),
        "a present file's entry must stay"
    );
    assert!(ledger.get(&prune_gone.id).unwrap().is_none());
    assert!(
        ledger.get(&gone_pending.id).unwrap().is_some(),
        "unfinished work is not pruned"
    );
}

#[test]
fn prune_stale_removes_only_what_is_still_stale_when_pruned() {
    let state = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(state.path()).unwrap();
    let gone = state.path().join("gone.pdf");
    let present = state.path().join("present.pdf");
    std::fs::write(&present, b"x").unwrap();
    let doomed = ledger
        .insert_new(new_entry("m", &gone, EntryState::Done))
        .unwrap();
    let reopened = ledger
        .insert_new(new_entry("m", &gone, EntryState::Failed))
        .unwrap();
    let kept = ledger
        .insert_new(new_entry("m", &present, EntryState::Done))
        .unwrap();
    let keep_days = Duration::from_secs(180 * 86_400);
    let later = OffsetDateTime::now_utc() + Duration::from_secs(181 * 86_400);
    // Found stale by a read, then one is retried (pending again) before the prune.
    ledger
        .update(&reopened.id, |e| e.state = EntryState::Pending)
        .unwrap();
    let ids = vec![
        (doomed.id.clone(), gone.clone()),
        (reopened.id.clone(), gone.clone()),
        (kept.id.clone(), present.clone()),
        ("000000000000".to_owned(), gone.clone()),
    ];
    let n = ledger
        .prune_stale(ids, keep_days, later, |p: &Path| p.exists())
        .unwrap();
    assert_eq!(n, 1);
    assert!(ledger.get(&doomed.id).unwrap().is_none());
    assert!(
        ledger.get(&reopened.id).unwrap().is_some(),
        "it has work again"
    );
    assert!(ledger.get(&kept.id).unwrap().is_some(), "its file is there");
}

#[test]
fn the_parts_of_the_ledger_are_every_entry_once() {
    let state = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(state.path()).unwrap();
    let mut all: Vec<String> = (0..200)
        .map(|i| {
            let p = state.path().join(format!("f{i}"));
            ledger
                .insert_new(new_entry("m", &p, EntryState::Done))
                .unwrap()
                .id
        })
        .collect();
    all.sort();
    for parts in 1..=5u8 {
        let mut seen: Vec<String> = Vec::new();
        for part in 0..parts {
            let got: Vec<String> = ledger
                .iter_part(part, parts)
                .map(|e| e.unwrap().id)
                .collect();
            if parts == 2 {
                assert!(!got.is_empty(), "200 random ids fall in both halves");
            }
            seen.extend(got);
        }
        seen.sort();
        assert_eq!(seen, all, "{parts} parts");
    }
}

#[test]
fn upload_urls_live_in_owner_only_files_never_in_the_ledger() {
    let state = tempfile::tempdir().unwrap();
    let token = "FAKEAUTHTOKEN0123456789zzqq";
    let url = format!("https://outlook.office.com/api/v2.0/Users('me')/Messages('x')/AttachmentSessions('s')?authtoken={token}");
    let ledger = Ledger::open(state.path()).unwrap();
    let sessions = SessionStore::open(state.path()).unwrap();
    let e = ledger
        .insert_new(new_entry(
            "m",
            &state.path().join("big.bin"),
            EntryState::Uploading,
        ))
        .unwrap();
    sessions.save(&e.id, &url).unwrap();
    ledger
        .set_state(&e.id, EntryState::Uploading, |e| {
            e.session = Some(outbox::ledger::SessionInfo {
                sent_end: 0,
                abandoned: false,
            });
            e.error = Some(EntryError::new("retry", "chunk upload timed out"));
        })
        .unwrap();
    ledger.flush().unwrap();
    assert_eq!(sessions.load(&e.id).unwrap().as_deref(), Some(url.as_str()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let file = sessions.dir().join(format!("{}.url", e.id));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "session file mode {mode:o}");
    }
    let files = snapshot(&state.path().join("ledger"));
    assert!(!files.is_empty());
    for (path, bytes) in &files {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "token found in {}",
            path.display()
        );
    }
    sessions.remove(&e.id).unwrap();
    assert_eq!(sessions.load(&e.id).unwrap(), None);
}

/// Schema v1 (the ledger before the core's `Record`): a POST in flight, a session, a pending
/// entry and a done one come forward as the core needs them, nothing reset.
// Unix only: a v1 ledger was only ever written on Unix (outbox first ran on Windows with v2),
// and this fixture's path index keys are a Unix path's bytes.
#[cfg(unix)]
#[test]
fn a_v1_ledger_is_migrated_to_the_cores_records() {
    let state = tempfile::tempdir().unwrap();
    let p = |n: &str| state.path().join(n);
    {
        let db = sled::open(state.path().join("ledger")).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &1u32.to_be_bytes())
            .unwrap();
        let entries = db.open_tree("entries").unwrap();
        let by_path = db.open_tree("by_path").unwrap();
        let target = serde_json::json!({"user": "me", "kind": "message", "item_id": "AAMk"});
        let rows = [
            ("0000000000a1", "posted.txt", "uploading", true, false, 1u64),
            ("0000000000a2", "session.bin", "uploading", false, true, 2),
            ("0000000000a3", "queued.txt", "pending", false, false, 3),
            ("0000000000a4", "sent.txt", "done", false, false, 4),
        ];
        for (id, name, state_, posted, session, seq) in rows {
            let mut v = serde_json::json!({
                "id": id, "mapping": "m", "path": p(name), "size": 5_000_000,
                "sha256": "ab".repeat(32), "state": state_, "bytes_sent": 0,
                "attachment_id": if state_ == "done" { serde_json::json!("ATT") } else { serde_json::Value::Null },
                "attempts": 0, "error": null, "updated_at": "2024-01-02T03:04:05Z",
                "name": name, "target": target, "mtime_ns": 7, "created_at": "2024-01-02T03:04:05Z",
                "post_in_flight": posted, "seq": seq,
            });
            if session {
                v["session"] =
                    serde_json::json!({"expires_at": null, "created_at": "2024-01-02T03:04:05Z"});
            }
            entries.insert(id, serde_json::to_vec(&v).unwrap()).unwrap();
            let path = p(name);
            let path = path.to_string_lossy();
            let mut key = Vec::new();
            key.extend_from_slice(&1u32.to_be_bytes());
            key.extend_from_slice(b"m");
            key.extend_from_slice(&(path.len() as u32).to_be_bytes());
            key.extend_from_slice(path.as_bytes());
            key.extend_from_slice(&seq.to_be_bytes());
            by_path.insert(key, id.as_bytes()).unwrap();
        }
        db.flush().unwrap();
    }
    let ledger = open_when_free(state.path()).unwrap();
    assert_eq!(ledger.schema_version().unwrap(), Some(SCHEMA_VERSION));
    let rec = |id: &str| ledger.get(id).unwrap().unwrap().to_record();
    let posted = rec("0000000000a1");
    assert!(
        posted.may_exist,
        "a POST in flight may have made the attachment"
    );
    assert!(posted.target.is_some(), "bound to the item it was sent to");
    let session = rec("0000000000a2");
    let mark = session.session.expect("the session is kept");
    assert_eq!(
        mark.sent_end, 5_000_000,
        "any offset up to the size is believed"
    );
    assert!(
        session.may_exist,
        "left uploading: look before sending again"
    );
    let queued = rec("0000000000a3");
    assert!(
        !queued.may_exist && queued.target.is_none(),
        "goes to the mapping's item"
    );
    let sent = rec("0000000000a4");
    assert!(sent.after_done, "v1 ran the after-action at done");
    assert_eq!(sent.attachment_id.as_deref(), Some("ATT"));
    assert_eq!(
        ledger
            .current_for_path("m", &p("sent.txt"))
            .unwrap()
            .map(|e| e.id),
        Some("0000000000a4".to_string())
    );
}

/// Messages (`new_message` mappings) live in their own tree: a v2 ledger written before they
/// existed (no `messages` tree) opens as is and has none; one put is read back after a reopen.
#[test]
fn messages_are_kept_beside_entries_and_an_older_v2_ledger_has_none() {
    use outbox::core::model::{Letter, MessageRecord, MessageState, Time};
    let state = tempfile::tempdir().unwrap();
    {
        // v2 as it was before messages: meta with the version, entries, no messages tree.
        let db = sled::open(state.path().join("ledger")).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &2u32.to_be_bytes())
            .unwrap();
        db.open_tree("entries").unwrap();
        db.flush().unwrap();
    }
    let ledger = open_when_free(state.path()).unwrap();
    assert_eq!(ledger.schema_version().unwrap(), Some(2));
    assert!(ledger.list_messages().unwrap().is_empty());
    let m = MessageRecord {
        id: "m0123456789ab".into(),
        mapping: "scans".into(),
        user: "me".into(),
        letter: Letter {
            to: vec!["ap@contoso.example".into()],
            subject: "Scan one".into(),
            body: "Attached: one.pdf".into(),
            ..Letter::default()
        },
        files: vec!["0123456789ab".into()],
        send: true,
        state: MessageState::Sending,
        draft_id: Some("AAMkDraft".into()),
        may_exist: false,
        effect_at: None,
        send_at: Some(Time(1_700_000_000_000)),
        resend_if_draft: false,
        redraft: false,
        last_send_at: None,
        draft_gone_at: None,
        internet_message_id: Some("<x@contoso.example>".into()),
        sent_at: None,
        unseen: false,
        keyed: false,
        keys: Vec::new(),
        resplit: false,
        part: None,
        letter_stale: false,
        not_before: None,
        attempts: 0,
        error: None,
        seq: 3,
        created_at: Time(1_700_000_000_000),
        updated_at: Time(1_700_000_000_000),
    };
    ledger.put_message(&m).unwrap();
    ledger.close().unwrap();
    let ledger = Ledger::open(state.path()).unwrap();
    assert_eq!(ledger.get_message(&m.id).unwrap(), Some(m.clone()));
    assert_eq!(ledger.list_messages().unwrap(), vec![m.clone()]);
    assert_eq!(ledger.get_message("m-none").unwrap(), None);
    // Pruning: a sent message whose entries are all gone goes after keep_done; one still
    // sending, or failed, stays.
    let later = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let keep = std::time::Duration::from_secs(86_400);
    assert_eq!(
        ledger.prune(keep, later, |_| false).unwrap(),
        0,
        "sending stays"
    );
    let mut sent = m.clone();
    sent.state = MessageState::Sent;
    ledger.put_message(&sent).unwrap();
    let mut failed = m.clone();
    failed.id = "m-failed".into();
    failed.state = MessageState::Failed;
    ledger.put_message(&failed).unwrap();
    let early = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    assert_eq!(
        ledger.prune(keep, early, |_| false).unwrap(),
        0,
        "not old enough"
    );
    assert_eq!(ledger.prune(keep, later, |_| false).unwrap(), 1);
    assert_eq!(ledger.get_message(&m.id).unwrap(), None);
    assert_eq!(ledger.get_message("m-failed").unwrap(), Some(failed));
}
