//! Crash safety: the agent stopped dead at every failpoint (deterministic) and by `kill -9` at
//! random instants, then restarted: every file ends attached exactly once with its bytes, and a
//! resumed upload re-sends at most the chunk that was in flight.

use crate::common::*;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(240);

fn setup(env: &Env, item: &str, after: &str) -> std::path::PathBuf {
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).expect("mkdir");
    env.write_config(
        "chunk_size = \"1MiB\"",
        &format!("[[mapping]]\nname = \"drop\"\nfolder = '{}'\nmessage = \"{item}\"\nafter = \"{after}\"\n", folder.display()),
    );
    folder
}

/// Every failpoint, crashed once each, then a clean run: exactly once, right bytes.
#[test]
fn every_failpoint_crashes_and_recovers() {
    let points = [
        "after-entry-recorded",
        "before-post-intent",
        "after-post-intent",
        "after-session-intent",
        "before-session-saved",
        "after-session-saved",
        "before-chunk:3",
        "after-chunk:2",
        "after-chunk:5",
        "before-done-recorded",
        "before-done-recorded:2",
        "after-done-recorded",
        "after-after-action",
    ];
    // Each point has its own sandbox and state: four at a time.
    in_parallel(points.to_vec(), 4, crash_at_and_recover);
}

/// One failpoint of `every_failpoint_crashes_and_recovers`: crash there, run again, check.
async fn crash_at_and_recover(point: &str) {
    {
        let env = Env::new();
        let item = env.sandbox.create_item("message", "me").await;
        let folder = setup(&env, &item, "move");
        let mut want = HashMap::new();
        want.insert(
            "small.txt".to_string(),
            write_file(&folder.join("small.txt"), 1000, 1),
        );
        want.insert(
            "large.bin".to_string(),
            write_file(&folder.join("large.bin"), 5 * MIB + 3, 2),
        );
        let crashed = run_bounded(
            env.cmd()
                .env("OUTBOX_CRASH_AT", point)
                .args(["run", "--once"]),
            T,
        );
        assert!(
            aborted(&crashed.status),
            "failpoint {point} was never reached (exit {:?}):\n{}",
            crashed.status.code(),
            stderr(&crashed)
        );
        let out = env.run(&["run", "--once"], T);
        assert!(
            out.status.success(),
            "recovery after {point} failed:\n{}",
            stderr(&out)
        );
        assert_eq!(
            attached(&env.sandbox, &item).await,
            want,
            "after a crash at {point}"
        );
        let stats = env.sandbox.stats().await;
        assert_eq!(stats["duplicate_attachments"], json!(0), "{point}");
        assert!(
            stats["upload_bytes_resent"].as_u64().unwrap_or(0) <= MIB,
            "at most one chunk re-sent after {point}: {stats}"
        );
        // Moved only after done: both files are in sent/, none left behind or lost.
        assert!(
            folder.join("sent/small.txt").exists() && folder.join("sent/large.bin").exists(),
            "{point}"
        );
        assert!(
            !folder.join("small.txt").exists() && !folder.join("large.bin").exists(),
            "{point}"
        );
    }
}

/// `kill -9` at random instants during mixed uploads, 20 times, files arriving in between. A soak
/// (about a minute of kills): `scripts/soak ci` runs it, as CI does.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak tier: scripts/soak ci"]
async fn kill_9_at_random_instants_loses_and_duplicates_nothing() {
    use rand::Rng;
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = setup(&env, &item, "keep");
    // Slow the server a little so kills land inside uploads.
    env.sandbox.faults(json!({"delay_ms": 40})).await;
    let mut want = HashMap::new();
    let mut rng = rand::thread_rng();
    let kills = 20;
    for round in 0..kills {
        // New files each round: small POSTs, sessions, one by rename.
        for k in 0..3u64 {
            let n = round as u64 * 10 + k;
            let size = match k {
                0 => rng.gen_range(0..50_000),
                1 => rng.gen_range(3 * MIB..6 * MIB),
                _ => rng.gen_range(100..3_000_000),
            };
            let name = format!("r{round:02}-{k}.bin");
            if k == 2 {
                let tmp = env.path(&name);
                want.insert(name.clone(), write_file(&tmp, size, n));
                std::fs::rename(&tmp, folder.join(&name)).expect("rename");
            } else {
                want.insert(name.clone(), write_file(&folder.join(&name), size, n));
            }
        }
        let agent = Agent::start(&env, &[]);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..1500))).await;
        agent.kill9();
    }
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "final run failed:\n{}", stderr(&out));
    assert_eq!(
        attached(&env.sandbox, &item).await,
        want,
        "every file exactly once with its bytes"
    );
    let stats = env.sandbox.stats().await;
    assert_eq!(stats["duplicate_attachments"], json!(0));
    let resent = stats["upload_bytes_resent"].as_u64().unwrap_or(0);
    assert!(
        resent <= kills as u64 * MIB,
        "re-sent {resent} bytes over {kills} kills: more than one chunk per kill"
    );
    println!(
        "kill -9 x{kills}: {} files, {} bytes re-sent",
        want.len(),
        resent
    );
}

/// The bytes sent are the bytes hashed, across a restart (seed 2179010 of the simulation): an
/// edit in place goes out in the middle of a session, the agent stops dead before it hashes the
/// edit, and a copy of the original bytes replaces the file. The record moves to the copy (same
/// bytes); the session holds the edit, and a resume re-reads the start from the copy, which
/// hashes right. The session must be abandoned, never completed with bytes of two versions.
#[tokio::test(flavor = "multi_thread")]
async fn an_edit_sent_mid_session_is_not_completed_after_the_file_is_copied_back() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).expect("mkdir");
    let mapping = format!(
        "[[mapping]]\nname = \"drop\"\nfolder = {}\nmessage = \"{item}\"\nafter = \"keep\"\n",
        toml_path(&folder)
    );
    // First life: a settle longer than the life, so the edit is never hashed in it.
    let cfg = format!(
        "[graph]\nbase_url = \"{}\"\n\n[auth]\nmethod = \"token_env\"\ntoken_env = \"OUTBOX_TEST_TOKEN\"\n\n[agent]\nstate_dir = {}\nsettle = \"10s\"\nsettle_after_close = \"10s\"\nlook_after = \"2s\"\nrescan = \"1h\"\nchunk_size = \"1MiB\"\n\n{mapping}\n",
        env.sandbox.graph_base(),
        toml_path(&env.state_dir())
    );
    std::fs::write(env.path("config.toml"), cfg).expect("write config");
    let size = 5 * MIB + 3;
    let file = folder.join("big.bin");
    let want = write_file(&file, size, 7);
    // Each piece waits 1.5 s once read, before it is sent; the agent dies once the second is
    // answered (the read-ahead reads the second piece after the first one's wait).
    let mut agent = Agent::start(
        &env,
        &[
            ("OUTBOX_PAUSE_AT", "before-chunk:1500"),
            ("OUTBOX_CRASH_AT", "after-chunk:2"),
        ],
    );
    wait_until(Duration::from_secs(60), "the first piece read", || {
        let log = agent.log();
        async move { log.contains("failpoint before-chunk: pausing") }
    })
    .await;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open for the edit");
        f.seek(SeekFrom::Start(MIB + 100)).expect("seek");
        f.write_all(&[0xEE; 16]).expect("edit in place");
    }
    let start = std::time::Instant::now();
    while agent.exited().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the agent never reached after-chunk:2:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        agent.log().contains("failpoint after-chunk: aborting"),
        "{}",
        agent.log()
    );
    // The edit went out in the first session, unhashed: one session, two pieces in it.
    let stats = env.sandbox.stats().await;
    assert_eq!(
        (&stats["sessions_created"], &stats["open_sessions"]),
        (&json!(1), &json!(1)),
        "{stats}"
    );
    assert!(
        stats["upload_bytes_committed"].as_u64().unwrap_or(0) >= 2 * MIB,
        "{stats}"
    );
    // The original bytes come back as another file (a copy over it, a sync client).
    let copy = env.path("copy.bin");
    assert_eq!(write_file(&copy, size, 7), want);
    std::fs::rename(&copy, &file).expect("rename the copy in");
    // Second life: the session's first answer waits 5 s, long enough for the copy to settle and
    // hash before the upload goes on.
    env.write_config("chunk_size = \"1MiB\"", &mapping);
    env.sandbox
        .faults(json!({"fail_next": [{"route": "status", "status": 429, "retry_after": 5}]}))
        .await;
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "second life:\n{}", stderr(&out));
    assert_eq!(
        attached(&env.sandbox, &item).await.get("big.bin"),
        Some(&want),
        "the attachment holds the original bytes, not the edit sent before the restart:\n{}",
        stderr(&out)
    );
}
