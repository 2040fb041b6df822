//! `outbox run` end to end: the real binary, a temp state dir, folders on disk and the sandbox.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(300);

fn mapping(env: &Env, name: &str, item: &str, extra: &str) -> String {
    let folder = env.path(name);
    std::fs::create_dir_all(&folder).expect("mkdir");
    format!(
        "[[mapping]]\nname = \"{name}\"\nfolder = '{}'\nmessage = \"{item}\"\n{extra}\n",
        folder.display()
    )
}

fn status_json(env: &Env) -> Vec<Value> {
    let out = env.run(&["status", "--json"], T);
    assert!(out.status.success(), "status failed: {}", stderr(&out));
    serde_json::from_str::<Value>(&stdout(&out))
        .expect("status json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_once_attaches_every_file_once_and_status_shows_the_ledger() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    env.write_config("", &mapping(&env, "reports", &item, ""));
    let mut want = HashMap::new();
    for (i, size) in [0u64, 1, 5000, 3 * MIB, 3 * MIB + 17, 9 * MIB]
        .iter()
        .enumerate()
    {
        let name = format!("doc {i}.bin");
        want.insert(
            name.clone(),
            write_file(&env.path("reports").join(&name), *size, i as u64),
        );
    }
    // Excluded by the default globs.
    write_file(&env.path("reports/.hidden"), 10, 99);
    write_file(&env.path("reports/x.tmp"), 10, 98);
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "run --once failed: {}", stderr(&out));
    let atts = env.sandbox.attachments(&item).await;
    let got: HashMap<String, String> = atts
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or_default().to_string(),
                a["sha256"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);
    // Again: nothing new is sent.
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.sandbox.attachments(&item).await.len(), want.len());
    let rows = status_json(&env);
    assert_eq!(rows.len(), want.len());
    for r in &rows {
        for key in [
            "id",
            "mapping",
            "path",
            "size",
            "sha256",
            "state",
            "bytes_sent",
            "attachment_id",
            "attempts",
            "error",
            "updated_at",
        ] {
            assert!(r.get(key).is_some(), "status row lacks {key}: {r}");
        }
        assert_eq!(r["state"], json!("done"));
        assert!(r["attachment_id"].is_string());
    }
    let stats = env.sandbox.stats().await;
    assert_eq!(stats["duplicate_attachments"], json!(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn after_move_and_failures() {
    let env = Env::new();
    let good = env.sandbox.create_item("message", "me").await;
    let gone = env.sandbox.create_item("message", "me").await;
    env.sandbox.delete_item(&gone).await;
    let cfg = mapping(&env, "out", &good, "after = \"move\"")
        + &mapping(&env, "dead", &gone, "failed_dir = \"failed\"");
    env.write_config("", &cfg);
    write_file(&env.path("out/a.pdf"), 100, 1);
    write_file(&env.path("sent-already.txt"), 1, 1);
    std::fs::create_dir_all(env.path("out/sent")).expect("mkdir");
    write_file(&env.path("out/sent/a.pdf"), 5, 5); // a taken name in sent_dir, never sent
    write_file(&env.path("dead/b.pdf"), 100, 2);
    let out = env.run(&["run", "--once"], T);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed file makes --once exit 1: {}",
        stderr(&out)
    );
    assert_eq!(env.sandbox.attachments(&good).await.len(), 1);
    assert!(!env.path("out/a.pdf").exists());
    assert!(
        env.path("out/sent/a (1).pdf").exists(),
        "moved with a suffix, never overwriting"
    );
    assert!(env.path("dead/failed/b.pdf").exists());
    let reason =
        std::fs::read_to_string(env.path("dead/failed/b.pdf.reason.txt")).expect("reason file");
    assert!(reason.contains("ErrorItemNotFound"), "{reason}");
    let rows = status_json(&env);
    let failed: Vec<&Value> = rows
        .iter()
        .filter(|r| r["state"] == json!("failed"))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error"]["code"], json!("ErrorItemNotFound"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_over_150_mib_is_rejected_unsent() {
    let env = Env::new();
    let item = env.sandbox.create_item("event", "me").await;
    let folder = env.path("big");
    std::fs::create_dir_all(&folder).expect("mkdir");
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nfolder = '{}'\nevent = \"{item}\"\n",
            folder.display()
        ),
    );
    // Sparse: the size counts, not the bytes on disk.
    let f = std::fs::File::create(folder.join("huge.iso")).expect("create");
    f.set_len(150 * MIB + 1).expect("set_len");
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1));
    let rows = status_json(&env);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["state"], json!("rejected"));
    let stats = env.sandbox.stats().await;
    assert!(
        stats["requests"].as_object().is_none_or(|r| r.is_empty()),
        "nothing was sent: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_of_files_gone_are_pruned_after_keep_done_and_others_kept() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    env.write_config("keep_done = \"1s\"", &mapping(&env, "m", &item, ""));
    write_file(&env.path("m/stays.txt"), 10, 1);
    write_file(&env.path("m/goes.txt"), 10, 2);
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status_json(&env).len(), 2);
    std::fs::remove_file(env.path("m/goes.txt")).expect("rm");
    // (`keep_done`, but never under `look_after`: 2 s in the harness.)
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = status_json(&env);
    assert_eq!(
        rows.len(),
        1,
        "the entry of the deleted file is pruned: {rows:?}"
    );
    assert!(rows[0]["path"]
        .as_str()
        .unwrap_or_default()
        .ends_with("stays.txt"));
    // The kept entry still stops a second upload.
    assert_eq!(env.sandbox.attachments(&item).await.len(), 2);
}

// Unix only: a `notify-send` shell script on PATH stands in for the notifier.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn desktop_notifications_for_failures_go_through_the_platform_notifier() {
    let env = Env::new();
    let good = env.sandbox.create_item("message", "me").await;
    let gone = env.sandbox.create_item("message", "me").await;
    env.sandbox.delete_item(&gone).await;
    env.write_config(
        "notify = \"all\"",
        &(mapping(&env, "ok", &good, "") + &mapping(&env, "bad", &gone, "")),
    );
    write_file(&env.path("ok/a.txt"), 10, 1);
    write_file(&env.path("bad/b.txt"), 10, 2);
    // A stand-in `notify-send` that records its arguments.
    let bin_dir = env.path("fakebin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir");
    let log = env.path("notified.log");
    let script = bin_dir.join("notify-send");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s|' \"$@\" >> {}\necho >> {}\n",
            log.display(),
            log.display()
        ),
    )
    .expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run_bounded(env.cmd().env("PATH", path).args(["run", "--once"]), T);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The notifier runs detached; give it a moment.
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if !text.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        text.contains("could not attach") || text.contains("attached"),
        "notified: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn if_exists_skip_finds_a_copy_attached_elsewhere_and_attach_sends_anyway() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    // Another machine (here: `outbox send`, no ledger) attached these already.
    let folder = env.path("m");
    std::fs::create_dir_all(&folder).expect("mkdir");
    write_file(&folder.join("small.txt"), 5000, 1);
    write_file(&folder.join("large.bin"), 4 * MIB, 2);
    env.write_config("", "");
    for f in ["small.txt", "large.bin"] {
        let out = env.run(
            &[
                "send",
                folder.join(f).to_str().unwrap_or_default(),
                "--message",
                &item,
            ],
            T,
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Same name, different bytes: not a copy, so it is sent.
    write_file(&folder.join("changed.txt"), 100, 3);
    let other = env.path("other/changed.txt");
    write_file(&other, 100, 4);
    let out = env.run(
        &[
            "send",
            other.to_str().unwrap_or_default(),
            "--message",
            &item,
        ],
        T,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    env.write_config("", &mapping(&env, "m", &item, ""));
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = env
        .sandbox
        .attachments(&item)
        .await
        .iter()
        .map(|a| a["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        names.iter().filter(|n| *n == "small.txt").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "large.bin").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "changed.txt").count(),
        2,
        "{names:?}"
    );
    assert_eq!(
        status_json(&env)
            .iter()
            .filter(|r| r["state"] == json!("done"))
            .count(),
        3
    );
    // With if_exists = "attach" a second copy is sent on purpose.
    let env2 = Env::new();
    let item2 = env2.sandbox.create_item("message", "me").await;
    let f2 = env2.path("n");
    std::fs::create_dir_all(&f2).expect("mkdir");
    write_file(&f2.join("a.txt"), 10, 9);
    env2.write_config("", "");
    let out = env2.run(
        &[
            "send",
            f2.join("a.txt").to_str().unwrap_or_default(),
            "--message",
            &item2,
        ],
        T,
    );
    assert!(out.status.success());
    env2.write_config("", &mapping(&env2, "n", &item2, "if_exists = \"attach\""));
    let out = env2.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env2.sandbox.attachments(&item2).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_problem_keeps_files_queued_instead_of_failing_them() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    env.write_config("", &mapping(&env, "m", &item, ""));
    write_file(&env.path("m/a.txt"), 10, 1);
    env.sandbox
        .faults(json!({"fail_next": [{"route": "post", "action": "claims_challenge"}]}))
        .await;
    let out = env.run(&["run", "--once"], T);
    assert_eq!(
        out.status.code(),
        Some(3),
        "sign-in needed: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("outbox login"), "{}", stderr(&out));
    let rows = status_json(&env);
    assert_eq!(rows.len(), 1);
    assert_ne!(
        rows[0]["state"],
        json!("failed"),
        "a sign-in problem is not the file's: {rows:?}"
    );
    // Signed in again (the fault was one-shot): the next run attaches it.
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.sandbox.attachments(&item).await.len(), 1);
}

/// Issue 22 bug 5: `run --once` exited 0 when a mapped folder was missing, its files never
/// attached, and `status` showed nothing of it.
#[tokio::test(flavor = "multi_thread")]
async fn run_once_exits_1_naming_a_missing_folder_and_status_shows_it_unavailable() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let missing = env.path("unmounted").join("share");
    let cfg = mapping(&env, "here", &item, "")
        + &format!(
            "[[mapping]]\nname = \"share\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            missing.display()
        );
    env.write_config("", &cfg);
    let sha = write_file(&env.path("here/a.txt"), 10, 1);
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains(&missing.display().to_string()) && said.contains("`share`"),
        "names the folder and its mapping: {said}"
    );
    // The other mapping went on.
    assert_eq!(attached(&env.sandbox, &item).await.get("a.txt"), Some(&sha));
    let out = env.run(&["status"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let header = stdout(&out);
    assert!(
        header.contains(&format!(
            "folder unavailable: mapping `share`: {} is missing",
            missing.display()
        )),
        "{header}"
    );
    assert!(!header.contains("mapping `here`"), "{header}");
    // Back: a clean run, and nothing more in the header.
    std::fs::create_dir_all(&missing).unwrap();
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["status"], T);
    assert!(
        !stdout(&out).contains("folder unavailable"),
        "{}",
        stdout(&out)
    );
}

/// Issue 22 bug 8: a file over 150 MiB was rejected without a log line and never moved to
/// `failed_dir`. (Sparse: its size counts, its bytes are never written.)
#[tokio::test(flavor = "multi_thread")]
async fn a_file_over_150_mib_is_logged_and_moved_to_failed_dir_with_its_reason() {
    let env = Env::new();
    let item = env.sandbox.create_item("event", "me").await;
    let folder = env.path("big");
    std::fs::create_dir_all(&folder).expect("mkdir");
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"big\"\nfolder = '{}'\nevent = \"{item}\"\nfailed_dir = \"failed\"\n",
            folder.display()
        ),
    );
    let size = 150 * MIB + 1;
    // An escape sequence in the name, which the log must not pass on; Windows refuses control
    // characters in names, so there the name is plain.
    let (name, shown) = if cfg!(windows) {
        ("huge.iso", "huge.iso")
    } else {
        ("huge\u{1b}[31m.iso", "huge\\u{1b}[31m.iso")
    };
    let f = std::fs::File::create(folder.join(name)).expect("create");
    f.set_len(size).expect("set_len");
    drop(f);
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = stderr(&out);
    let line = said
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("fileTooLarge"))
        .unwrap_or_else(|| panic!("no error line for the rejected file: {said}"));
    for piece in [shown, &size.to_string(), "150 MiB", "split"] {
        assert!(line.contains(piece), "`{piece}` not in: {line}");
    }
    assert!(!said.contains('\u{1b}'), "the name is escaped: {said}");
    let moved = folder.join("failed").join(name);
    assert_eq!(std::fs::metadata(&moved).expect("moved").len(), size);
    assert!(!folder.join(name).exists());
    let reason = std::fs::read_to_string(folder.join("failed").join(format!("{name}.reason.txt")))
        .expect("reason file");
    assert!(
        reason.contains("fileTooLarge") && reason.contains(&size.to_string()),
        "{reason}"
    );
    let rows = status_json(&env);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["state"], json!("rejected"));
    let stats = env.sandbox.stats().await;
    assert!(
        stats["requests"].as_object().is_none_or(|r| r.is_empty()),
        "nothing was sent: {stats}"
    );
}

/// Seed 789676, in the real binary: the agent is killed right after a failed file's move into
/// `failed_dir` lands, before its answer is on record. The next run finds it there (not
/// "deleted"), and `outbox retry ID` takes it back and attaches it.
#[tokio::test(flavor = "multi_thread")]
async fn a_move_into_failed_dir_cut_off_by_a_crash_is_found_there_and_retried() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("docs");
    std::fs::create_dir_all(&folder).expect("mkdir");
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"docs\"\nfolder = '{}'\nmessage = \"{item}\"\nfailed_dir = \"failed\"\n",
            folder.display()
        ),
    );
    env.sandbox
        .faults(json!({"fail_next": [{"route": "post", "status": 400, "code": "ErrorInvalidAttachment"}]}))
        .await;
    let bytes = write_file(&folder.join("doc.txt"), 1000, 7);
    let crashed = run_bounded(
        env.cmd()
            .env("OUTBOX_CRASH_AT", "after-failed-dir-move")
            .args(["run", "--once"]),
        T,
    );
    assert!(aborted(&crashed.status), "{}", stderr(&crashed));
    let aside = folder.join("failed").join("doc.txt");
    assert!(aside.exists() && !folder.join("doc.txt").exists());

    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let rows = status_json(&env);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0]["state"],
        json!("failed"),
        "not canceled as deleted: {rows:?}"
    );
    assert!(aside.exists(), "left in failed_dir");
    let id = rows[0]["id"].as_str().expect("id").to_string();

    let out = env.run(&["retry", &id], T);
    assert!(out.status.success(), "retry refused: {}", stderr(&out));
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        folder.join("doc.txt").exists() && !aside.exists(),
        "taken back"
    );
    let on_item = attached(&env.sandbox, &item).await;
    assert_eq!(on_item.get("doc.txt"), Some(&bytes), "{on_item:?}");
    assert_eq!(on_item.len(), 1);
}
