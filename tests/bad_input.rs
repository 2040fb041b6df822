//! SPEC "Bad input gets a clear error and loses nothing", one test per row, plus symlinks, a
//! folder deleted and recreated while running, a read-only state dir, and the security checks:
//! a hostile upload URL refused, owner-only state, a warning on an exposed config, and no secret
//! the sandbox issued anywhere in a debug log of a run with faults.
//!
//! Tests that need a non-root user (CI runs as root, and root reads anything) drop privileges
//! with `setpriv` to `nobody`; where that is impossible they print why and return.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
#[cfg(unix)]
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

fn mapping(name: &str, folder: &Path, kind: &str, item: &str, extra: &str) -> String {
    format!(
        "[[mapping]]\nname = \"{name}\"\nfolder = '{}'\n{kind} = \"{item}\"\n{extra}\n",
        folder.display()
    )
}

fn folder(env: &Env, name: &str) -> PathBuf {
    let f = env.path(name);
    std::fs::create_dir_all(&f).expect("mkdir");
    f
}

/// `status --json` rows by file name.
fn rows(env: &Env) -> HashMap<String, Value> {
    let out = env.run(&["status", "--json"], T);
    assert!(out.status.success(), "status: {}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("status json");
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let name = Path::new(r["path"].as_str().unwrap_or_default())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, r.clone())
        })
        .collect()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[cfg(unix)]
fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
}

#[cfg(unix)]
/// `outbox` as `nobody` (uid/gid 65534), or `None` with the reason printed.
fn as_nobody(env: &Env) -> Option<Command> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        println!("SKIPPED: not root, so privileges cannot be dropped; the non-root user may read everything it owns");
        return None;
    }
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        println!("SKIPPED: setpriv cannot drop to uid 65534 here");
        return None;
    }
    // nobody must reach the workspace (sticky, as /tmp: a state dir of nobody's in it is
    // accepted, in a parent everyone can write without it refused).
    chmod(env.dir.path(), 0o1777);
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
        .env("OUTBOX_CONFIG", env.path("config.toml"))
        .env("OUTBOX_TEST_TOKEN", TOKEN)
        .env("RUST_LOG", "outbox=debug")
        .env("HOME", env.dir.path())
        .env_remove("OUTBOX_CRASH_AT");
    Some(c)
}

// ---- the SPEC table ----

#[tokio::test(flavor = "multi_thread")]
async fn malformed_config_exits_78_naming_file_line_and_key_before_anything_runs() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    write_file(&f.join("a.txt"), 10, 1);
    env.write_config(
        "chunk_size = \"5MiB\"",
        &mapping("drop", &f, "message", &item, ""),
    );
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("config.toml") && err.contains("chunk_size") && err.contains(":1"),
        "{err}"
    );
    assert!(env.sandbox.attachments(&item).await.is_empty());
    assert!(!env.state_dir().join("ledger").exists(), "nothing ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_mapped_folder_is_named_and_the_other_mappings_keep_working() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let good = folder(&env, "good");
    let sha = write_file(&good.join("a.txt"), 1000, 1);
    let missing = env.path("missing");
    env.write_config(
        "",
        &format!(
            "{}{}",
            mapping("good", &good, "message", &item, ""),
            mapping("gone", &missing, "message", &item, "")
        ),
    );
    let out = env.run(&["run", "--once"], T);
    let err = stderr(&out);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert_eq!(
        attached(&env.sandbox, &item).await,
        HashMap::from([("a.txt".to_string(), sha)])
    );
    // `outbox check` naming a missing folder is covered in tests/commands.rs.
}

/// A mapped folder removed while running is watched again when it comes back (the agent watches
/// its parent meanwhile, no polling), and the other mappings keep working.
#[tokio::test(flavor = "multi_thread")]
async fn a_folder_deleted_and_recreated_while_running_is_watched_again() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    let other = folder(&env, "other");
    env.write_config(
        "",
        &format!(
            "{}{}",
            mapping("drop", &f, "message", &item, ""),
            mapping("other", &other, "message", &item, "")
        ),
    );
    let agent = Agent::start(&env, &[]);
    let sha1 = write_file(&f.join("one.txt"), 100, 1);
    wait_until(T, "one.txt attached", || async {
        attached(&env.sandbox, &item).await.contains_key("one.txt")
    })
    .await;
    std::fs::remove_dir_all(&f).expect("rm folder");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The other mapping keeps working meanwhile.
    let sha3 = write_file(&other.join("three.txt"), 300, 3);
    std::fs::create_dir_all(&f).expect("recreate");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sha2 = write_file(&f.join("two.txt"), 200, 2);
    let want = HashMap::from([
        ("one.txt".to_string(), sha1),
        ("two.txt".to_string(), sha2),
        ("three.txt".to_string(), sha3),
    ]);
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while attached(&env.sandbox, &item).await.len() < 3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let log = agent.log();
    assert!(
        waited.is_ok(),
        "a file in the recreated folder was not attached within 30 s: {:?}\n{}",
        attached(&env.sandbox, &item).await.keys(),
        log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(attached(&env.sandbox, &item).await, want);
    assert!(agent.stop().success());
}

// Unix only: modes, and a run as `nobody`.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_file_fails_with_the_os_error_and_is_retried_on_change() {
    // The agent runs as `nobody`: the sandbox serves another local user only when told to.
    let env = Env {
        sandbox: Sandbox::start_with(&["--allow-uid", "65534"]),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    chmod(&f, 0o777);
    let ok = write_file(&f.join("ok.txt"), 100, 1);
    let locked = f.join("locked.txt");
    write_file(&locked, 200, 2);
    chmod(&locked, 0o000);
    env.write_config("", &mapping("drop", &f, "message", &item, ""));
    chmod(&env.path("config.toml"), 0o644);
    let Some(mut cmd) = as_nobody(&env) else {
        return;
    };
    let out = run_bounded(cmd.args(["run", "--once"]), T);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        attached(&env.sandbox, &item).await,
        HashMap::from([("ok.txt".to_string(), ok.clone())])
    );
    let mut status = as_nobody(&env).expect("nobody");
    let st = run_bounded(status.args(["status", "--json"]), T);
    let v: Value = serde_json::from_str(&stdout(&st)).expect("json");
    let row = v
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("locked.txt"))
        })
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(row["state"], json!("failed"), "{v}");
    assert!(
        row["error"]
            .to_string()
            .to_lowercase()
            .contains("permission denied"),
        "the OS error is shown: {row}"
    );
    // Changed (rewritten, readable again): the new version is attached on the next run.
    chmod(&locked, 0o644);
    let sha = write_file(&locked, 250, 3);
    let mut again = as_nobody(&env).expect("nobody");
    let out = run_bounded(again.args(["run", "--once"]), T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        attached(&env.sandbox, &item).await,
        HashMap::from([("ok.txt".to_string(), ok), ("locked.txt".to_string(), sha)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_over_150_mib_is_rejected_and_never_uploaded() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    // Sparse: costs no disk.
    let big = std::fs::File::create(f.join("huge.iso")).expect("create");
    big.set_len(150 * MIB + 1).expect("set_len");
    drop(big);
    let exact = std::fs::File::create(f.join("limit.bin")).expect("create");
    exact.set_len(150 * MIB).expect("set_len");
    drop(exact);
    env.write_config("", &mapping("drop", &f, "message", &item, ""));
    let out = env.run(&["run", "--once"], Duration::from_secs(300));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = rows(&env);
    assert_eq!(r["huge.iso"]["state"], json!("rejected"), "{r:?}");
    assert_eq!(
        r["limit.bin"]["state"],
        json!("done"),
        "150 MiB exactly is allowed"
    );
    let names: Vec<String> = attached(&env.sandbox, &item).await.into_keys().collect();
    assert_eq!(names, vec!["limit.bin".to_string()]);
    let stats = env.sandbox.stats().await;
    assert_eq!(stats["sessions_created"], json!(1), "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_target_fails_with_error_item_not_found_and_other_files_continue() {
    let env = Env::new();
    let gone = env.sandbox.create_item("message", "me").await;
    let item = env.sandbox.create_item("event", "me").await;
    let (a, b) = (folder(&env, "a"), folder(&env, "b"));
    write_file(&a.join("lost-target.txt"), 100, 1);
    write_file(&a.join("lost-target-large.bin"), 4 * MIB, 2);
    let sha = write_file(&b.join("fine.txt"), 100, 3);
    env.sandbox.delete_item(&gone).await;
    env.write_config(
        "",
        &format!(
            "{}{}",
            mapping("a", &a, "message", &gone, ""),
            mapping("b", &b, "event", &item, "")
        ),
    );
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1));
    let r = rows(&env);
    for n in ["lost-target.txt", "lost-target-large.bin"] {
        assert_eq!(r[n]["state"], json!("failed"), "{n}: {r:?}");
        assert_eq!(r[n]["error"]["code"], json!("ErrorItemNotFound"), "{n}");
    }
    assert_eq!(
        attached(&env.sandbox, &item).await,
        HashMap::from([("fine.txt".to_string(), sha)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_names_are_attached_under_their_own_name() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    let long = format!("{}.txt", "l".repeat(250));
    let names = [
        "résumé – final (2).pdf".to_string(),
        "日本語のファイル.txt".to_string(),
        "with  two  spaces .txt".to_string(),
        "quote\"double\".txt".to_string(),
        "quote'single'.txt".to_string(),
        "emoji 📎.bin".to_string(),
        "percent %20 and + plus & amp; semi.txt".to_string(),
        "back\\slash.txt".to_string(),
        long,
    ];
    // Windows refuses `"` in a name and reads `\` as a separator: those two are Unix's only.
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| cfg!(unix) || !n.contains(['"', '\\']))
        .collect();
    let mut want = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        want.insert(n.clone(), write_file(&f.join(n), 500 + i as u64, i as u64));
    }
    // And one long-named file through an upload session.
    let big = format!("{}-session.bin", "ü".repeat(100));
    want.insert(big.clone(), write_file(&f.join(&big), 3 * MIB + 5, 99));
    env.write_config("", &mapping("drop", &f, "message", &item, ""));
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(attached(&env.sandbox, &item).await, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_files_at_once_are_all_attached() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    let mut want = HashMap::new();
    for i in 0..2000u64 {
        let n = format!("many-{i:04}.txt");
        want.insert(n.clone(), write_file(&f.join(&n), i % 700, i));
    }
    // The default `if_exists = "skip"`: the look before each first upload must not make
    // thousands of files on one item quadratic.
    env.write_config("", &mapping("drop", &f, "message", &item, ""));
    let started = std::time::Instant::now();
    // The log goes to a file: thousands of lines would fill a pipe nobody reads until the end.
    let (ok, log) = env.run_to_file(&["run", "--once"], "outbox=info");
    assert!(
        ok,
        "{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    println!("2,000 files: {:.1}s", started.elapsed().as_secs_f64());
    let got = attached(&env.sandbox, &item).await;
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let wrong: Vec<_> = got
        .iter()
        .filter(|(k, v)| want.get(*k) != Some(v))
        .collect();
    assert!(
        missing.is_empty() && wrong.is_empty(),
        "{} of {} missing ({:?}…), {} not as dropped ({:?}…); the log but its attached lines:\n{}",
        missing.len(),
        want.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        wrong.len(),
        wrong.iter().take(5).collect::<Vec<_>>(),
        log.lines()
            .filter(|l| !l.contains("INFO outbox::agent: attached")
                || missing.iter().take(3).any(|m| l.contains(m.as_str())))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_ledger_is_named_and_never_reset() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    write_file(&f.join("a.txt"), 100, 1);
    env.write_config("", &mapping("drop", &f, "message", &item, ""));
    assert!(env.run(&["run", "--once"], T).status.success());
    let db = env.state_dir().join("ledger/db");
    let mut bytes = std::fs::read(&db).expect("db");
    bytes.iter_mut().for_each(|b| *b = 0xA5);
    std::fs::write(&db, &bytes).expect("write");
    write_file(&f.join("b.txt"), 100, 2);
    for args in [&["run", "--once"][..], &["status"][..]] {
        let out = env.run(args, T);
        assert!(
            !out.status.success(),
            "{args:?} on a corrupt ledger succeeded"
        );
        let err = stderr(&out);
        assert!(
            err.contains(&env.state_dir().join("ledger").display().to_string()),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        std::fs::read(&db).expect("db"),
        bytes,
        "the ledger was touched"
    );
    assert_eq!(
        env.sandbox.attachments(&item).await.len(),
        1,
        "nothing sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_mailbox_403_on_create_upload_session_fails_with_the_explanation() {
    let env = Env::new();
    let item = env
        .sandbox
        .create_item("message", "shared@sandbox.test")
        .await;
    env.sandbox
        .faults(json!({"shared_mailbox_403": true}))
        .await;
    let f = folder(&env, "drop");
    write_file(&f.join("big.bin"), 4 * MIB, 1);
    let sha = write_file(&f.join("small.txt"), 100, 2);
    env.write_config(
        "",
        &mapping(
            "drop",
            &f,
            "message",
            &item,
            "user = \"shared@sandbox.test\"",
        ),
    );
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1));
    let r = rows(&env);
    assert_eq!(r["big.bin"]["state"], json!("failed"));
    let msg = r["big.bin"]["error"].to_string();
    assert!(
        msg.contains("ErrorAccessDenied")
            || r["big.bin"]["error"]["code"] == json!("ErrorAccessDenied"),
        "{msg}"
    );
    assert!(
        msg.contains("application permissions"),
        "explains the known issue: {msg}"
    );
    assert_eq!(
        attached(&env.sandbox, &item).await,
        HashMap::from([("small.txt".to_string(), sha)])
    );
    // Failed once, not retried in a storm.
    let stats = env.sandbox.stats().await;
    assert!(
        stats["requests"]["create_session"]["403"]
            .as_u64()
            .unwrap_or(0)
            <= 2,
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_tenant_limit_fails_with_message_size_exceeded_explained() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    env.sandbox
        .faults(json!({"message_size_limit": 5_000_000}))
        .await;
    let f = folder(&env, "drop");
    // 2 MB raw ≈ 2.7 MB encoded: the first fits, the second and third pass 5 MB.
    write_file(&f.join("one.bin"), 2_000_000, 1);
    write_file(&f.join("two.bin"), 2_000_000, 2);
    write_file(&f.join("three.bin"), 3_500_000, 3);
    env.write_config(
        "concurrency = 1",
        &mapping("drop", &f, "message", &item, ""),
    );
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1));
    let r = rows(&env);
    let failed: Vec<&Value> = r
        .values()
        .filter(|x| x["state"] == json!("failed"))
        .collect();
    assert_eq!(failed.len(), 2, "{r:?}");
    for x in failed {
        assert_eq!(x["error"]["code"], json!("ErrorMessageSizeExceeded"), "{x}");
        assert!(
            x["error"].to_string().contains("size limit"),
            "explained: {x}"
        );
        assert!(x["attempts"].as_u64().unwrap_or(0) <= 1, "no retries: {x}");
    }
    assert_eq!(env.sandbox.attachments(&item).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_no_longer_a_draft_fails_with_graphs_answer_and_other_mappings_continue() {
    let env = Env::new();
    let sent = env.sandbox.create_item("message", "me").await;
    let other = env.sandbox.create_item("message", "me").await;
    env.sandbox
        .admin(
            reqwest::Method::PATCH,
            &format!("/items/{}", urlenc(&sent)),
            Some(json!({"isDraft": false})),
        )
        .await;
    let (a, b) = (folder(&env, "a"), folder(&env, "b"));
    write_file(&a.join("late.txt"), 100, 1);
    write_file(&a.join("late-large.bin"), 4 * MIB, 2);
    let sha = write_file(&b.join("fine.txt"), 100, 3);
    env.write_config(
        "",
        &format!(
            "{}{}",
            mapping("a", &a, "message", &sent, ""),
            mapping("b", &b, "message", &other, "")
        ),
    );
    // `check` warning about it is not covered: `check` is not implemented in this build.
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1));
    let r = rows(&env);
    for n in ["late.txt", "late-large.bin"] {
        assert_eq!(r[n]["state"], json!("failed"), "{r:?}");
        assert_eq!(r[n]["error"]["code"], json!("ErrorAccessDenied"), "{n}");
    }
    assert!(env.sandbox.attachments(&sent).await.is_empty());
    assert_eq!(
        attached(&env.sandbox, &other).await,
        HashMap::from([("fine.txt".to_string(), sha)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_expired_while_asleep_is_recreated_and_nothing_is_lost() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    let sha = write_file(&f.join("big.bin"), 8 * MIB, 1);
    env.write_config(
        "chunk_size = \"1MiB\"",
        &mapping("drop", &f, "message", &item, ""),
    );
    env.sandbox.faults(json!({"delay_ms": 200})).await;
    let agent = Agent::start(&env, &[]);
    wait_until(T, "the upload to start", || async {
        env.sandbox.stats().await["upload_bytes_committed"]
            .as_u64()
            .unwrap_or(0)
            >= 2 * MIB
    })
    .await;
    // As if the machine slept past the expiry.
    env.sandbox
        .faults(json!({"expire_sessions": true, "delay_ms": 0}))
        .await;
    wait_until(T, "big.bin attached", || async {
        attached(&env.sandbox, &item).await.contains_key("big.bin")
    })
    .await;
    assert_eq!(
        attached(&env.sandbox, &item).await,
        HashMap::from([("big.bin".to_string(), sha)])
    );
    assert!(
        env.sandbox.stats().await["sessions_created"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    );
    assert!(agent.stop().success());
}

// ---- beyond the table ----

// Unix only: symlinks (the Windows twin, with reparse points: below).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn symlinks_are_not_followed_out_of_the_folder_by_default() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    let outside = folder(&env, "private");
    write_file(&outside.join("secret.key"), 100, 1);
    std::os::unix::fs::symlink(outside.join("secret.key"), f.join("link-to-secret.key"))
        .expect("symlink");
    std::os::unix::fs::symlink(&outside, f.join("link-to-dir")).expect("symlink");
    std::os::unix::fs::symlink(f.join("nowhere"), f.join("dangling")).expect("symlink");
    let sha = write_file(&f.join("real.txt"), 100, 2);
    env.write_config(
        "",
        &mapping("drop", &f, "message", &item, "recursive = true"),
    );
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        attached(&env.sandbox, &item).await,
        HashMap::from([("real.txt".to_string(), sha)])
    );
}

/// A symbolic link at `link` to `target`. Windows' own (`CreateSymbolicLinkW`) when it makes
/// one; under Wine, whose `CreateSymbolicLinkW` answers yes and makes nothing, a host link
/// made with the host's `ln -s` (Wine starts a Unix program it is asked to) between the two
/// places `winepath -u` names: Wine shows such a link as the file or folder it leads to, so
/// only the open's checks of the handle can tell it is one.
#[cfg(windows)]
fn windows_link(target: &Path, link: &Path, dir: bool) {
    let made = if dir {
        std::os::windows::fs::symlink_dir(target, link)
    } else {
        std::os::windows::fs::symlink_file(target, link)
    };
    if made.is_ok() && std::fs::symlink_metadata(link).is_ok() {
        return;
    }
    let unix = |p: &Path| {
        let out = std::process::Command::new("winepath")
            .arg("-u")
            .arg(p)
            .output()
            .expect("no symbolic link made, and no winepath: neither Windows nor Wine");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Wine starts a Unix program but gives no handle to wait on (the wait fails): wait for
    // the link instead.
    let _ = std::process::Command::new(r"Z:\bin\ln")
        .args(["-s", &unix(target), &unix(link)])
        .spawn()
        .map(|mut c| c.wait());
    let t0 = std::time::Instant::now();
    while std::fs::metadata(link).is_err() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(std::fs::metadata(link).is_ok(), "the link leads nowhere");
}

/// #26: a reparse point in a drop folder is refused (the Windows twin of
/// `symlinks_are_not_followed_out_of_the_folder_by_default`): a file link and a folder link to
/// a folder outside, and a sent_dir that is a link out of the folder. Nothing behind a link is
/// attached, and the file sent is not moved through the link (it stays where it was).
#[cfg(windows)]
#[tokio::test(flavor = "multi_thread")]
async fn reparse_points_in_a_drop_folder_are_refused() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    let outside = folder(&env, "private");
    write_file(&outside.join("secret.key"), 100, 1);
    windows_link(
        &outside.join("secret.key"),
        &f.join("link-to-secret.key"),
        false,
    );
    windows_link(&outside, &f.join("link-to-dir"), true);
    let sha = write_file(&f.join("real.txt"), 100, 2);
    // Another mapping whose sent_dir is a link to the folder outside.
    let g = folder(&env, "moved");
    windows_link(&outside, &g.join("sent"), true);
    let sha2 = write_file(&g.join("sent-me.txt"), 100, 3);
    env.write_config(
        "",
        &(mapping("drop", &f, "message", &item, "recursive = true")
            + &mapping("moved", &g, "message", &item, "after = \"move\"")),
    );
    let out = env.run(&["run", "--once"], T);
    assert_eq!(
        attached(&env.sandbox, &item).await,
        HashMap::from([
            ("real.txt".to_string(), sha),
            ("sent-me.txt".to_string(), sha2)
        ]),
        "{}",
        stderr(&out)
    );
    assert!(g.join("sent-me.txt").exists(), "moved through a link");
    let names: Vec<_> = std::fs::read_dir(&outside)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["secret.key"], "{}", stderr(&out));
    // A link the scan took for a file (Wine's host links) is a failed entry saying why.
    for (name, row) in rows(&env) {
        if name == "link-to-secret.key" || name == "secret.key" {
            assert_eq!(row["state"], json!("failed"), "{name}: {row}");
            assert!(row["error"].to_string().contains("symbolic link"), "{row}");
        }
    }
}

// Unix only: modes, and a run as `nobody`.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_state_dir_is_a_clear_error_naming_it() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    chmod(&f, 0o777);
    write_file(&f.join("a.txt"), 100, 1);
    std::fs::create_dir_all(env.state_dir()).expect("mkdir");
    chmod(&env.state_dir(), 0o555);
    env.write_config("", &mapping("drop", &f, "message", &item, ""));
    chmod(&env.path("config.toml"), 0o644);
    let Some(mut cmd) = as_nobody(&env) else {
        return;
    };
    let out = run_bounded(cmd.args(["run", "--once"]), T);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&env.state_dir().display().to_string()),
        "{err}"
    );
    assert!(env.sandbox.attachments(&item).await.is_empty());
}

// ---- security ----

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_upload_url_is_refused_and_nothing_is_sent_to_it() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    write_file(&f.join("big.bin"), 4 * MIB, 1);
    env.write_config("", &mapping("drop", &f, "message", &item, ""));
    let port = env
        .sandbox
        .origin
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    // Same machine, other host name: it would reach the sandbox, so a PUT would be counted.
    for origin in [
        format!("http://localhost:{port}"),
        "https://evil.example".to_string(),
        format!("https://outlook.office.com.evil.example:{port}"),
    ] {
        env.sandbox
            .faults(json!({"reset": true, "upload_url_origin": origin}))
            .await;
        let out = env.run(&["run", "--once"], T);
        assert_eq!(out.status.code(), Some(1), "{origin}: {}", stderr(&out));
        let r = rows(&env);
        assert_eq!(r["big.bin"]["state"], json!("failed"), "{origin}");
        assert!(
            r["big.bin"]["error"]
                .to_string()
                .contains("refusing the upload URL"),
            "{origin}: {}",
            r["big.bin"]["error"]
        );
        let stats = env.sandbox.stats().await;
        assert!(
            stats["requests"].get("upload_put").is_none(),
            "{origin}: {stats}"
        );
        assert!(
            stats["requests"].get("upload_get").is_none(),
            "{origin}: {stats}"
        );
        let id = r["big.bin"]["id"].as_str().unwrap_or_default().to_string();
        assert!(env.run(&["retry", &id], T).status.success());
    }
}

// Unix only: modes (owner-only ACLs on Windows are #26).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn state_is_owner_only_and_an_exposed_secretish_config_is_warned_about() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    write_file(&f.join("big.bin"), 6 * MIB, 1);
    env.write_config(
        "chunk_size = \"1MiB\"",
        &mapping("drop", &f, "message", &item, ""),
    );
    env.sandbox.faults(json!({"delay_ms": 150})).await;
    let agent = Agent::start(&env, &[]);
    wait_until(T, "a session in progress", || async {
        env.sandbox.stats().await["upload_bytes_committed"]
            .as_u64()
            .unwrap_or(0)
            >= MIB
    })
    .await;
    // While an upload URL is saved: the state dir and every file in it are the owner's alone.
    let state = env.state_dir();
    assert_eq!(mode(&state), 0o700, "state dir");
    let mut seen = 0;
    let mut stack = vec![state.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            let m = mode(&p);
            if p.is_dir() {
                stack.push(p.clone());
            } else if p.extension().is_some_and(|x| x == "url") {
                assert_eq!(m, 0o600, "{}", p.display());
                seen += 1;
            }
            // Inside the 0700 state dir other modes cannot be reached; the session store's own
            // directory is owner-only besides.
            if p.ends_with("sessions") {
                assert_eq!(m & 0o077, 0, "{} is mode {m:o}", p.display());
            }
        }
    }
    assert!(seen >= 1, "a saved upload URL was found");
    assert!(agent.stop().success());

    // A config naming a token command, readable by others: a warning; 0600: none.
    let cfg = std::fs::read_to_string(env.path("config.toml")).expect("cfg");
    let cfg = cfg.replace(
        "method = \"token_env\"\ntoken_env = \"OUTBOX_TEST_TOKEN\"",
        &format!("method = \"token_command\"\ncommand = [\"echo\", \"{TOKEN}\"]"),
    );
    std::fs::write(env.path("config.toml"), cfg).expect("write");
    chmod(&env.path("config.toml"), 0o644);
    let out = env.run(&["status"], T);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    chmod(&env.path("config.toml"), 0o600);
    let out = env.run(&["status"], T);
    assert!(!stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_the_sandbox_issued_appears_in_a_debug_log_of_a_run_with_faults() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let f = folder(&env, "drop");
    for i in 0..6u64 {
        write_file(&f.join(format!("s{i}.txt")), 1000 * i, i);
    }
    for i in 0..3u64 {
        write_file(&f.join(format!("b{i}.bin")), 3 * MIB + i, 10 + i);
    }
    env.write_config(
        "chunk_size = \"1MiB\"",
        &mapping("drop", &f, "message", &item, ""),
    );
    env.sandbox
        .faults(json!({
            "fail_rate": 0.15, "drop_rate": 0.1, "status": 503, "retry_after": 1,
            "fail_next": [
                {"route": "put", "status": 404}, {"route": "status", "status": 500},
                {"route": "session", "status": 400}, {"route": "put", "action": "drop"}
            ]
        }))
        .await;
    let out = env.run_with_log(&["--log-format", "json", "run", "--once"]);
    let out2 = env.run_with_log(&["-v", "run", "--once"]);
    let issued = env
        .sandbox
        .admin(reqwest::Method::GET, "/tokens/issued", None)
        .await;
    let mut secrets: Vec<String> = vec![TOKEN.to_string()];
    for k in ["access_tokens", "refresh_tokens", "upload_authtokens"] {
        for s in issued[k].as_array().into_iter().flatten() {
            secrets.push(s.as_str().unwrap_or_default().to_string());
        }
    }
    assert!(
        issued["upload_authtokens"]
            .as_array()
            .is_some_and(|a| a.len() >= 3),
        "sessions were made: {issued}"
    );
    let mut text = format!("{out}{out2}");
    let st = env.run(&["status", "--json"], T);
    text.push_str(&stdout(&st));
    text.push_str(&stderr(&st));
    assert!(text.len() > 10_000, "a real debug log was captured");
    for s in &secrets {
        assert!(
            !s.is_empty() && !text.contains(s.as_str()),
            "a secret leaked into the log"
        );
    }
    // And the ledger files do not hold an upload URL either.
    for e in walk(&env.state_dir().join("ledger")) {
        let bytes = std::fs::read(&e).unwrap_or_default();
        let hay = String::from_utf8_lossy(&bytes);
        for s in &secrets {
            assert!(!hay.contains(s.as_str()), "{} holds a secret", e.display());
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

trait RunWithLog {
    fn run_with_log(&self, args: &[&str]) -> String;
    fn run_to_file(&self, args: &[&str], filter: &str) -> (bool, String);
}

impl RunWithLog for Env {
    /// Run with every debug log line captured (stdout and stderr), whatever the exit.
    fn run_with_log(&self, args: &[&str]) -> String {
        self.run_to_file(args, "outbox=trace,reqwest=debug,hyper=debug")
            .1
    }

    /// Run to completion (bounded) with stdout and stderr in a file; (success, everything printed).
    fn run_to_file(&self, args: &[&str], filter: &str) -> (bool, String) {
        let path = self.path(&format!("run-{}.log", std::process::id()));
        let f = std::fs::File::create(&path).expect("log");
        let mut child = self
            .cmd()
            .env("RUST_LOG", filter)
            .args(args)
            .stdout(f.try_clone().expect("clone"))
            .stderr(f)
            .spawn()
            .expect("spawn");
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break Some(s);
            }
            if start.elapsed() > Duration::from_secs(240) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        (status.is_some_and(|s| s.success()), text)
    }
}

/// `outbox mail` takes placeholders as a mapping's config does: an unknown one (or a brace left
/// open) is refused with exit 2, naming it, before any draft is made, never sent as written.
#[tokio::test(flavor = "multi_thread")]
async fn mail_refuses_an_unknown_placeholder_as_a_mapping_does() {
    let env = Env::new();
    env.write_config("", "");
    let file = env.path("a.txt");
    write_file(&file, 10, 1);
    let body = env.path("body.html");
    std::fs::write(&body, "<p>{names} {stme}</p>").unwrap();
    let f = file.to_str().unwrap();
    for (args, want) in [
        (
            vec!["--subject", "Scan {nope}"],
            "--subject: unknown placeholder {nope}",
        ),
        (
            vec!["--body", "see {name"],
            "--body: '{' at character 4 is not closed",
        ),
        (
            vec!["--body-file", body.to_str().unwrap()],
            "unknown placeholder {stme}",
        ),
    ] {
        let mut all = vec!["mail", f, "--to", "ap@contoso.example"];
        all.extend(args);
        let out = env.run(&all, T);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {err}");
        assert!(err.contains(want), "{all:?}: {err}");
        // An unknown placeholder is shown with the ones there are.
        assert!(
            !want.contains("unknown") || err.contains("{stem}"),
            "{all:?}: {err}"
        );
    }
    let stats = env.sandbox.stats().await;
    assert_eq!(stats["drafts_created"], json!(0), "{stats}");
}
