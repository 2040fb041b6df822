//! The sandbox going away under a running agent: restarted mid-upload (after `kill -9` and after
//! a clean stop) on the same port and data dir, and unreachable for over a minute. Real Graph
//! survives its own restarts (an upload URL stays valid, bytes received stay received); the
//! sandbox keeps its state in `--data-dir` to behave the same, and the agent must wait, resume
//! and attach every file exactly once.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn mapping(folder: &Path, item: &str) -> String {
    format!(
        "[[mapping]]\nname = \"drop\"\nfolder = '{}'\nmessage = \"{item}\"\n",
        folder.display()
    )
}

/// Bytes committed so far in the open session of the file `name` (0 when none is open).
async fn session_next(sb: &Sandbox, name: &str) -> u64 {
    let v = sb.admin(reqwest::Method::GET, "/sessions", None).await;
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == json!(name))
        .filter_map(|s| s["next"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Wait until `n` attachments are on `item`; on timeout fail with the agent's log tail and
/// `status`, which say why.
async fn wait_attached(env: &Env, agent: &Agent, item: &str, n: usize, timeout: Duration) {
    let start = Instant::now();
    while env.sandbox.attachments(item).await.len() < n {
        if start.elapsed() > timeout {
            let status = env.run(&["status", "--json"], Duration::from_secs(30));
            let log = agent.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let sandbox_log = std::fs::read_to_string(env.sandbox.data.path().join("sandbox.log"))
                .unwrap_or_default();
            let stail: Vec<&str> = sandbox_log
                .lines()
                .filter(|l| !l.contains("DEBUG") || l.contains("PUT"))
                .rev()
                .take(30)
                .collect();
            panic!(
                "not all {n} files attached after {timeout:?}\nstatus: {}\nlog tail (newest first):\n{}\nsandbox log tail:\n{}",
                stdout(&status),
                tail.join("\n"),
                stail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn open_sessions(sb: &Sandbox) -> u64 {
    sb.stats().await["open_sessions"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// Without any agent: an item, a POSTed attachment, a minted token and a half-uploaded session
/// survive `kill -9`; the same upload URL then takes the rest and completes.
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_keeps_items_attachments_sessions_and_tokens_across_kill_9() {
    let mut sb = Sandbox::start();
    let item = sb.create_item("message", "me").await;
    let http = reqwest::Client::new();
    let base = sb.graph_base();
    let auth = format!("Bearer {TOKEN}");
    // A small attachment by POST.
    let r = http
        .post(format!("{base}/me/messages/{}/attachments", urlenc(&item)))
        .header("Authorization", &auth)
        .json(&json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "small.txt", "contentBytes": "aGVsbG8="}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    // A minted (client credentials) token.
    let r = http
        .post(format!("{}/tenant/oauth2/v2.0/token", sb.origin))
        .form(&[
            ("client_id", "c"),
            ("grant_type", "client_credentials"),
            ("client_secret", "sandbox-client-secret"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 200);
    let minted = r.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    // A session of 3 MiB + 5 with its first 2 MiB received.
    let size = 3 * MIB + 5;
    let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let r = http
        .post(format!(
            "{base}/me/messages/{}/attachments/createUploadSession",
            urlenc(&item)
        ))
        .header("Authorization", &auth)
        .json(
            &json!({"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": size}}),
        )
        .send()
        .await
        .expect("session");
    assert_eq!(r.status(), 201);
    let url = r.json::<Value>().await.expect("json")["uploadUrl"]
        .as_str()
        .expect("uploadUrl")
        .to_string();
    let half = 2 * MIB;
    let r = http
        .put(&url)
        .header("Content-Range", format!("bytes 0-{}/{size}", half - 1))
        .body(bytes[..half as usize].to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200);

    sb.kill9();
    sb.restart();

    let att = attached(&sb, &item).await;
    assert_eq!(att.len(), 1, "{att:?}");
    assert_eq!(
        att["small.txt"],
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    // Both tokens still work.
    for t in [TOKEN, minted.as_str()] {
        let r = http
            .get(format!(
                "{base}/users/me@sandbox.test/messages/{}",
                urlenc(&item)
            ))
            .header("Authorization", format!("Bearer {t}"))
            .send()
            .await
            .expect("get item");
        assert_eq!(r.status(), 200, "token {t:.6}… after restart");
    }
    // The upload URL still answers with the bytes received so far, and takes the rest.
    let r = http.get(&url).send().await.expect("status");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["nextExpectedRanges"], json!([half.to_string()]), "{v}");
    let r = http
        .put(&url)
        .header("Content-Range", format!("bytes {half}-{}/{size}", size - 1))
        .body(bytes[half as usize..].to_vec())
        .send()
        .await
        .expect("put rest");
    assert_eq!(r.status(), 201);
    let want = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    // A clean stop and start keep it all too.
    sb.stop();
    sb.restart();
    let att = attached(&sb, &item).await;
    assert_eq!(att.get("big.bin"), Some(&want), "{att:?}");
    assert_eq!(att.len(), 2);
    assert_eq!(open_sessions(&sb).await, 0);
}

/// An agent uploading a 40 MiB file (and small ones) while the sandbox is `kill -9`ed and
/// restarted mid-upload, then stopped cleanly and restarted mid-upload of another: every file
/// attached exactly once with its bytes, no session left open.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_finishes_when_the_sandbox_restarts_mid_upload() {
    let mut env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).expect("mkdir");
    env.write_config("chunk_size = \"1MiB\"", &mapping(&folder, &item));
    // Slow enough that the restarts land inside the sessions.
    let slow = json!({"delay_ms": 60});
    env.sandbox.faults(slow.clone()).await;
    let mut want = HashMap::new();
    want.insert(
        "first.bin".to_string(),
        write_file(&folder.join("first.bin"), 40 * MIB, 1),
    );
    for i in 0..5u64 {
        let n = format!("small-{i}.txt");
        want.insert(
            n.clone(),
            write_file(&folder.join(&n), 1000 + i * 4000, 10 + i),
        );
    }
    let agent = Agent::start(&env, &[]);
    let sb = &env.sandbox;
    wait_until(Duration::from_secs(60), "first.bin 8 MiB in", || async {
        session_next(sb, "first.bin").await >= 8 * MIB
    })
    .await;
    let before = session_next(&env.sandbox, "first.bin").await;
    env.sandbox.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.sandbox.restart();
    // The restarted sandbox still holds what it had acknowledged.
    let after = session_next(&env.sandbox, "first.bin").await;
    assert!(
        after >= before,
        "session went back from {before} to {after}"
    );
    env.sandbox.faults(slow.clone()).await;

    // A second large file, interrupted by a clean stop.
    want.insert(
        "second.bin".to_string(),
        write_file(&folder.join("second.bin"), 12 * MIB, 2),
    );
    let sb = &env.sandbox;
    wait_until(Duration::from_secs(90), "second.bin 3 MiB in", || async {
        session_next(sb, "second.bin").await >= 3 * MIB
    })
    .await;
    env.sandbox.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.sandbox.restart();

    wait_attached(&env, &agent, &item, want.len(), Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = agent.log();
    assert!(agent.stop().success(), "{log}");
    assert_eq!(attached(&env.sandbox, &item).await, want, "{log}");
    assert_eq!(open_sessions(&env.sandbox).await, 0);
    assert_eq!(env.sandbox.stats().await["duplicate_attachments"], json!(0));
}

/// The sandbox unreachable for just over a minute in the middle of an upload: the agent keeps the file queued
/// (`status` never says failed), and finishes exactly once when it is back. A soak (a minute
/// and a half): `scripts/soak ci` runs it, as CI does.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak tier: scripts/soak ci"]
async fn an_agent_waits_out_a_minute_long_outage_and_finishes() {
    let mut env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).expect("mkdir");
    env.write_config("chunk_size = \"1MiB\"", &mapping(&folder, &item));
    env.sandbox.faults(json!({"delay_ms": 60})).await;
    let mut want = HashMap::new();
    want.insert(
        "big.bin".to_string(),
        write_file(&folder.join("big.bin"), 20 * MIB, 3),
    );
    let agent = Agent::start(&env, &[]);
    let sb = &env.sandbox;
    wait_until(Duration::from_secs(60), "big.bin 4 MiB in", || async {
        session_next(sb, "big.bin").await >= 4 * MIB
    })
    .await;
    env.sandbox.stop();
    let down = Instant::now();
    // Files dropped during the outage are queued too.
    for i in 0..3u64 {
        let n = format!("during-{i}.txt");
        want.insert(n.clone(), write_file(&folder.join(&n), 500 + i, 20 + i));
    }
    let mut seen_states = Vec::new();
    while down.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let out = env.run(&["status", "--json"], Duration::from_secs(30));
        assert!(out.status.success(), "status: {}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out)).expect("status json");
        for r in v.as_array().into_iter().flatten() {
            let state = r["state"].as_str().unwrap_or_default().to_string();
            assert!(
                !matches!(state.as_str(), "failed" | "rejected" | "canceled"),
                "after {:.0}s down: {r}",
                down.elapsed().as_secs_f64()
            );
            seen_states.push(format!(
                "{:.0}s {} {} {}",
                down.elapsed().as_secs_f64(),
                r["path"]
                    .as_str()
                    .unwrap_or_default()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default(),
                state,
                r["error"]["code"]
            ));
        }
    }
    println!("status while down:\n  {}", seen_states.join("\n  "));
    env.sandbox.restart();
    let back = Instant::now();
    let sb = &env.sandbox;
    let n = want.len();
    wait_until(
        Duration::from_secs(150),
        "every file attached after the outage",
        || async { sb.attachments(&item).await.len() >= n },
    )
    .await;
    println!(
        "outage {:.0}s; all attached {:.1}s after the sandbox came back",
        back.duration_since(down).as_secs_f64(),
        back.elapsed().as_secs_f64()
    );
    let log = agent.log();
    assert!(agent.stop().success(), "{log}");
    assert_eq!(attached(&env.sandbox, &item).await, want, "{log}");
    assert_eq!(open_sessions(&env.sandbox).await, 0);
    // The large file went on in the session opened before the outage (the sandbox's counters
    // restart with it): the bytes received before it stayed received.
    let stats = env.sandbox.stats().await;
    assert_eq!(stats["sessions_created"], json!(0), "{stats}\n{log}");
}

/// With `--tls`, a restarted sandbox signs with the same CA: a client trusting the `ca.pem` of
/// the first start still connects.
#[tokio::test(flavor = "multi_thread")]
async fn a_tls_sandbox_keeps_its_ca_across_restarts() {
    let mut sb = Sandbox::start_with(&["--tls"]);
    let item = sb.create_item("message", "me").await;
    sb.kill9();
    sb.restart();
    // `sb`'s admin client was built with the first start's ca.pem.
    let v = sb
        .admin(
            reqwest::Method::GET,
            &format!("/items/{}", urlenc(&item)),
            None,
        )
        .await;
    assert_eq!(v["id"], json!(item));
}
