//! `outbox run` as a long-running agent: many files at once, renames and slow writers, changes
//! and deletions during upload, the control socket, one agent per state dir.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

const T: Duration = Duration::from_secs(240);

fn config(env: &Env, item: &str, extra_agent: &str) -> std::path::PathBuf {
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).expect("mkdir");
    env.write_config(
        extra_agent,
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            folder.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_mixed_files_dropped_at_once_are_each_attached_once() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    config(&env, &item, "");
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    let drop = env.path("drop");
    let staging = env.path("staging");
    std::fs::create_dir_all(&staging).expect("mkdir");
    let mut want: HashMap<String, String> = HashMap::new();
    let mut slow = Vec::new();
    for i in 0..200u64 {
        let size = match i {
            0 => 0,
            1 => 40 * MIB,
            2..=4 => 3 * MIB + i * 1000,
            5..=9 => 5 * MIB + i,
            _ => (i * 7919) % (200 * 1024),
        };
        let name = format!("f{i:03}.bin");
        match i % 10 {
            // By rename from outside the folder, as most programs save.
            3 => {
                let tmp = staging.join(&name);
                want.insert(name.clone(), write_file(&tmp, size, i));
                std::fs::rename(&tmp, drop.join(&name)).expect("rename");
            }
            // Written slowly, over about two seconds, by one open handle.
            7 => slow.push((name, size.min(300 * 1024), i)),
            _ => {
                want.insert(name.clone(), write_file(&drop.join(&name), size, i));
            }
        }
    }
    let writers: Vec<_> = slow
        .into_iter()
        .map(|(name, size, seed)| {
            let path = drop.join(&name);
            let full = env.path(&format!("slowsrc-{name}"));
            let sha = write_file(&full, size, seed);
            want.insert(name, sha);
            std::thread::spawn(move || {
                let bytes = std::fs::read(&full).expect("read");
                let mut f = std::fs::File::create(&path).expect("create");
                for part in bytes.chunks(bytes.len().div_ceil(8).max(1)) {
                    f.write_all(part).expect("write");
                    f.flush().expect("flush");
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let want_n = want.len();
    wait_until(T, "all 200 files attached", || async {
        env.sandbox.attachments(&item).await.len() >= want_n
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        attached(&env.sandbox, &item).await,
        want,
        "each file attached once with its final bytes"
    );
    let stats = env.sandbox.stats().await;
    assert_eq!(stats["duplicate_attachments"], json!(0));
    assert_eq!(stats["chunks_over_4mib"], json!(0));
    assert!(
        stats["peak_concurrent_requests"]["me"]
            .as_u64()
            .unwrap_or(0)
            <= 4,
        "{stats}"
    );
    assert!(agent.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_mid_upload_ends_attached_once_with_its_new_bytes() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    config(&env, &item, "chunk_size = \"1MiB\"");
    // Slow chunks so the change lands mid-upload.
    env.sandbox.faults(json!({"delay_ms": 300})).await;
    let agent = Agent::start(&env, &[]);
    let path = env.path("drop/report.pdf");
    write_file(&path, 8 * MIB, 1);
    wait_until(T, "the upload to start", || async {
        env.sandbox.stats().await["upload_bytes_committed"]
            .as_u64()
            .unwrap_or(0)
            >= MIB
    })
    .await;
    let new_sha = write_file(&path, 6 * MIB, 2);
    wait_until(T, "the new version attached", || async {
        attached(&env.sandbox, &item).await.get("report.pdf") == Some(&new_sha)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        attached(&env.sandbox, &item).await.len(),
        1,
        "only the new version is attached"
    );
    assert_eq!(
        env.sandbox.stats().await["open_sessions"],
        json!(0),
        "the old session was deleted"
    );
    assert!(agent.stop().success());
}

// Unix only: a file deleted while the agent reads it loses its name at once, and the upload is
// canceled; on Windows the delete may wait for the agent's handle (the twin below).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_file_deleted_mid_upload_leaves_no_open_session() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    config(&env, &item, "chunk_size = \"1MiB\"");
    env.sandbox.faults(json!({"delay_ms": 300})).await;
    let agent = Agent::start(&env, &[]);
    let path = env.path("drop/big.iso");
    write_file(&path, 10 * MIB, 3);
    wait_until(T, "the upload to start", || async {
        env.sandbox.stats().await["upload_bytes_committed"]
            .as_u64()
            .unwrap_or(0)
            >= MIB
    })
    .await;
    std::fs::remove_file(&path).expect("rm");
    wait_until(Duration::from_secs(30), "the session deleted", || async {
        env.sandbox.stats().await["open_sessions"] == json!(0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(env.sandbox.attachments(&item).await.is_empty());
    let status = env.run(&["status", "--json"], T);
    let rows: Value = serde_json::from_str(&stdout(&status)).expect("json");
    assert_eq!(rows[0]["state"], json!("canceled"), "{rows}");
    assert!(agent.stop().success());
}

/// The Windows twin of `a_file_deleted_mid_upload_leaves_no_open_session`. A delete of a file
/// another process holds open (the agent opens it sharing delete, so the delete is allowed) takes
/// its name away at once on NTFS with POSIX semantics (Windows 10 1903 on), and the upload is
/// canceled as on Unix; elsewhere (older NTFS, FAT, shares, Wine) the name stays until the last
/// handle closes, and the upload ends with the bytes it hashed. Either way no session is left
/// open, nothing but the file's own bytes is attached, and the file is gone once the agent let go.
#[cfg(windows)]
#[tokio::test(flavor = "multi_thread")]
async fn a_file_deleted_mid_upload_leaves_no_open_session_and_goes_when_the_upload_lets_go() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    config(&env, &item, "chunk_size = \"1MiB\"");
    env.sandbox.faults(json!({"delay_ms": 300})).await;
    let agent = Agent::start(&env, &[]);
    let path = env.path("drop/big.iso");
    let sha = write_file(&path, 10 * MIB, 3);
    wait_until(T, "the upload to start", || async {
        env.sandbox.stats().await["upload_bytes_committed"]
            .as_u64()
            .unwrap_or(0)
            >= MIB
    })
    .await;
    std::fs::remove_file(&path).expect("rm (the agent's handle shares delete)");
    wait_until(Duration::from_secs(60), "no session open", || async {
        env.sandbox.stats().await["open_sessions"] == json!(0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attached = attached(&env.sandbox, &item).await;
    let status = env.run(&["status", "--json"], T);
    let rows: Value = serde_json::from_str(&stdout(&status)).expect("json");
    if attached.is_empty() {
        assert_eq!(rows[0]["state"], json!("canceled"), "{rows}");
    } else {
        assert_eq!(
            attached,
            std::collections::HashMap::from([("big.iso".to_string(), sha)]),
            "only the bytes hashed"
        );
        assert_eq!(rows[0]["state"], json!("done"), "{rows}");
    }
    wait_until(Duration::from_secs(10), "the file gone", || async {
        std::fs::symlink_metadata(&path).is_err()
    })
    .await;
    assert!(agent.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn status_retry_and_cancel_reach_the_running_agent_and_a_second_agent_exits_2() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    config(&env, &item, "");
    // Every attachment POST fails permanently at first.
    env.sandbox
        .faults(json!({"fail_next": [{"route": "post", "status": 400}]}))
        .await;
    let agent = Agent::start(&env, &[]);
    write_file(&env.path("drop/a.txt"), 100, 1);
    let mut id = String::new();
    for _ in 0..100 {
        let out = env.run(&["status", "--json"], T);
        assert!(
            out.status.success(),
            "status while running: {}",
            stderr(&out)
        );
        let rows: Value = serde_json::from_str(&stdout(&out)).expect("json");
        if rows
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["state"] == json!("failed")))
        {
            id = rows[0]["id"].as_str().unwrap_or_default().to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!id.is_empty(), "the entry failed");
    // The table form works too.
    let table = env.run(&["status"], T);
    assert!(stdout(&table).contains("failed"), "{}", stdout(&table));
    let second = env.run(&["run"], Duration::from_secs(30));
    assert_eq!(
        second.status.code(),
        Some(2),
        "second agent: {}",
        stderr(&second)
    );
    assert!(
        stderr(&second).contains("another outbox agent"),
        "{}",
        stderr(&second)
    );
    let retry = env.run(&["retry", "--failed"], T);
    assert!(retry.status.success(), "{}", stderr(&retry));
    wait_until(T, "the retried file attached", || async {
        env.sandbox.attachments(&item).await.len() == 1
    })
    .await;
    let cancel = env.run(&["cancel", &id], T);
    assert_eq!(
        cancel.status.code(),
        Some(2),
        "cancelling a done entry is refused: {}",
        stderr(&cancel)
    );
    assert!(agent.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overflow_triggers_a_rescan_that_finds_unseen_files() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    config(&env, &item, "");
    let folder = env.path("drop");
    let agent = Agent::start(&env, &[("OUTBOX_TEST_HOOKS", "1")]);
    agent.watching().await;
    write_file(&folder.join("seen.txt"), 10, 1);
    wait_until(T, "seen.txt attached", || async {
        env.sandbox.attachments(&item).await.len() == 1
    })
    .await;
    // From here the watcher's events are lost, as in a kernel queue overflow.
    let out = send_control(&env, r#"{"op":"lose_events"}"#).await;
    assert!(out.contains("\"ok\":true"), "{out}");
    write_file(&folder.join("unseen.txt"), 20, 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.sandbox.attachments(&item).await.len(),
        1,
        "no event, no upload yet"
    );
    // The overflow notice: a full rescan finds the file.
    let out = send_control(&env, r#"{"op":"overflow"}"#).await;
    assert!(out.contains("\"ok\":true"), "{out}");
    wait_until(T, "unseen.txt attached after the rescan", || async {
        env.sandbox.attachments(&item).await.len() == 2
    })
    .await;
    assert!(agent.stop().success());
}

/// One raw request line to the agent's control channel (the socket; on Windows the pipe), and
/// the first line of its answer.
async fn send_control(env: &Env, line: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    #[cfg(unix)]
    let mut s = tokio::net::UnixStream::connect(env.state_dir().join("agent.sock"))
        .await
        .expect("connect");
    #[cfg(windows)]
    let mut s = outbox::agent::control::connect_pipe(&env.state_dir())
        .await
        .expect("connect");
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write");
    let mut lines = BufReader::new(s).lines();
    lines.next_line().await.expect("read").unwrap_or_default()
}

/// `status` against a running agent: the ledger's entries oldest first, then a `settling` row for
/// each file not in the ledger yet (here: one still open for writing), all streamed over the
/// socket a batch at a time.
#[tokio::test(flavor = "multi_thread")]
async fn status_lists_the_ledger_then_files_still_settling() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let cfg = config(&env, &item, "max_settle = \"1h\"");
    let folder = env.path("drop");
    // Enough files that the answer spans several of the socket's 64 KiB batches.
    let n = 300;
    if cfg!(windows) {
        // No close-after-write event on Windows: the files are attached by a `run --once`
        // with the harness's short settle before the agent with the long one starts.
        for i in 0..n {
            write_file(&folder.join(format!("done-{i:03}.txt")), 100 + i, i);
        }
        let out = env.run(&["run", "--once"], T);
        assert!(out.status.success(), "run --once: {}", stderr(&out));
    }
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, text.replace("settle = \"300ms\"", "settle = \"10m\"")).expect("config");
    let agent = Agent::start(&env, &[]);
    // Written before the watch begins, they would be found by the first scan and wait `settle`.
    wait_until(T, "the agent watching", || async {
        agent.log().contains("watching")
    })
    .await;
    // Closed after writing: sent at once, whatever `settle` says.
    if !cfg!(windows) {
        for i in 0..n {
            write_file(&folder.join(format!("done-{i:03}.txt")), 100 + i, i);
        }
    }
    wait_until(T, "every closed file attached", || async {
        env.sandbox.attachments(&item).await.len() as u64 == n
    })
    .await;
    // Open and unchanged: waits for `settle`.
    let mut open = std::fs::File::create(folder.join("still-writing.log")).expect("create");
    open.write_all(b"first line\n").expect("write");
    open.flush().expect("flush");
    let rows = loop {
        let out = env.run(&["status", "--json"], T);
        assert!(out.status.success(), "status: {}", stderr(&out));
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("status json");
        if rows.iter().any(|r| r["state"] == json!("settling")) {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        rows.len() as u64,
        n + 1,
        "one row per file; the last rows: {:#?}\nthe agent's lines of done-299.txt:\n{}",
        &rows[rows.len().saturating_sub(3)..],
        agent
            .log()
            .lines()
            .filter(|l| l.contains("done-299.txt"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (done, settling) = rows.split_at(n as usize);
    assert!(done.iter().all(|r| r["state"] == json!("done")));
    let names: std::collections::HashSet<&str> = done
        .iter()
        .map(|r| r["path"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names.len() as u64, n, "each attached file once");
    let s = &settling[0];
    assert_eq!(s["state"], json!("settling"));
    assert_eq!(s["size"], json!(11));
    assert_eq!(s["mapping"], json!("drop"));
    assert!(s["path"]
        .as_str()
        .unwrap_or_default()
        .ends_with("still-writing.log"));
    // No entry yet, so no id: it gets one when the agent takes the file.
    assert!(s["id"].is_null(), "{s}");
    drop(open);
    assert!(agent.stop().success());
}

// Unix only: SIGHUP reloads the config (Windows has no such signal).
#[cfg(unix)]
/// Issue 22 bug 2: after `SIGHUP` a new mapping's folder was not watched (the watcher kept the
/// mappings it started with), and each later reload made it deaf again, while the log said
/// "configuration reloaded".
#[tokio::test(flavor = "multi_thread")]
async fn every_mapping_of_a_reloaded_config_is_watched_reload_after_reload() {
    const W: Duration = Duration::from_secs(60);
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let table = |name: &str| {
        let folder = env.path(name);
        std::fs::create_dir_all(&folder).expect("mkdir");
        format!(
            "[[mapping]]\nname = \"{name}\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            folder.display()
        )
    };
    env.write_config("", &table("one"));
    let agent = Agent::start(&env, &[]);
    let pid = agent.child.id().to_string();
    wait_until(W, "the agent watching", || async {
        agent.log().contains("watching")
    })
    .await;
    let reloads = |n: usize| {
        let agent = &agent;
        move || async move { agent.log().matches("configuration reloaded").count() >= n }
    };
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    };
    // A mapping added: its folder is watched from the reload on.
    env.write_config("", &(table("one") + &table("two")));
    hup();
    wait_until(W, "the first reload", reloads(1)).await;
    write_file(&env.path("two/a.txt"), 10, 1);
    wait_until(W, "two/a.txt attached after one reload", || async {
        attached(&env.sandbox, &item).await.contains_key("a.txt")
    })
    .await;
    // Another change: the added mapping stays watched, and the next one is watched too.
    env.write_config("", &(table("one") + &table("two") + &table("three")));
    hup();
    wait_until(W, "the second reload", reloads(2)).await;
    write_file(&env.path("two/b.txt"), 20, 2);
    write_file(&env.path("three/c.txt"), 30, 3);
    write_file(&env.path("one/d.txt"), 40, 4);
    wait_until(W, "b.txt, c.txt and d.txt attached", || async {
        let got = attached(&env.sandbox, &item).await;
        ["b.txt", "c.txt", "d.txt"]
            .iter()
            .all(|n| got.contains_key(*n))
    })
    .await;
    assert_eq!(attached(&env.sandbox, &item).await.len(), 4);
    assert!(agent.stop().success());
}
