//! `outbox send` against `outbox sandbox`: every size class, both item kinds, `me` and a named
//! mailbox, faults, and the protocol rules the sandbox counts.

use crate::common::*;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

fn send(env: &Env, file: &std::path::Path, target: &[&str]) -> std::process::Output {
    let mut args = vec!["send", file.to_str().expect("utf8 path")];
    args.extend_from_slice(target);
    env.run(&args, T)
}

/// Send `size` bytes to a fresh item and check it arrived once, byte for byte.
async fn roundtrip(env: &Env, kind: &str, user: &str, size: u64, name: &str) {
    let item = env.sandbox.create_item(kind, user).await;
    let path = env.path(name);
    let sha = write_file(&path, size, size ^ 0x5eed);
    let flag = if kind == "message" {
        "--message"
    } else {
        "--event"
    };
    let out = send(env, &path, &[flag, &item, "--user", user]);
    assert!(
        out.status.success(),
        "send {size} bytes failed: {}",
        stderr(&out)
    );
    let id = stdout(&out).trim().to_string();
    assert!(!id.is_empty(), "no attachment id printed");
    let atts = env.sandbox.attachments(&item).await;
    assert_eq!(
        atts.len(),
        1,
        "exactly one attachment for {size} bytes: {atts:?}"
    );
    assert_eq!(atts[0]["sha256"], json!(sha), "bytes differ for {size}");
    assert_eq!(atts[0]["size"], json!(size));
    assert_eq!(atts[0]["name"], json!(name));
    assert_eq!(
        atts[0]["id"],
        json!(id),
        "printed id is the attachment's id"
    );
    std::fs::remove_file(&path).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_size_class_arrives_intact() {
    let env = Env::new();
    env.write_config("", "");
    for (size, kind, user) in [
        (0, "message", "me"),
        (1024, "event", "me"),
        (3 * MIB - 1, "message", "alice@contoso.test"),
        (3 * MIB, "event", "alice@contoso.test"),
        (3 * MIB + MIB / 2, "message", "me"),
        (20 * MIB, "event", "me"),
    ] {
        roundtrip(&env, kind, user, size, &format!("file-{size}.bin")).await;
    }
    let stats = env.sandbox.stats().await;
    assert_eq!(stats["chunks_over_4mib"], json!(0));
    assert_eq!(stats["upload_url_requests_with_authorization"], json!(0));
    assert_eq!(stats["duplicate_attachments"], json!(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_largest_allowed_file_arrives_and_one_byte_more_is_refused_unsent() {
    let env = Env::new();
    env.write_config("", "");
    roundtrip(&env, "message", "me", 150 * MIB, "max.bin").await;
    let item = env.sandbox.create_item("message", "me").await;
    let path = env.path("too-big.bin");
    // Sparse: refused by its size before a byte is read.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(150 * MIB + 1)
        .unwrap();
    let before = env.sandbox.stats().await;
    let out = send(&env, &path, &["--message", &item]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("150 MiB"), "{}", stderr(&out));
    let after = env.sandbox.stats().await;
    assert_eq!(
        before["requests"], after["requests"],
        "no request may be sent for a file over 150 MiB"
    );
    assert!(env.sandbox.attachments(&item).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn names_with_unicode_spaces_and_quotes_are_kept() {
    let env = Env::new();
    env.write_config("", "");
    // Windows refuses `"` in a file name: guillemets there.
    let name = if cfg!(windows) {
        "Rapport d'été «final» ✓.pdf"
    } else {
        "Rapport d'été \"final\" ✓.pdf"
    };
    roundtrip(&env, "message", "me", 2048, name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_still_end_in_exactly_one_attachment() {
    let env = Env::new();
    env.write_config("", "");
    // 429 with Retry-After and 503 on the POST path.
    env.sandbox
        .faults(json!({"fail_next": [
            {"route": "post", "status": 429, "retry_after": 1},
            {"route": "post", "status": 503, "retry_after": 1}
        ]}))
        .await;
    roundtrip(&env, "message", "me", 100_000, "small.bin").await;
    // On the session path: a 503 on a chunk, a dropped connection mid-chunk, a 429.
    env.sandbox
        .faults(json!({"fail_next": [
            {"route": "put", "status": 503, "retry_after": 1},
            {"route": "put", "action": "drop"},
            {"route": "put", "status": 429, "retry_after": 1}
        ]}))
        .await;
    roundtrip(&env, "event", "me", 12 * MIB, "chunky.bin").await;
    // A dropped connection on the very last chunk: the server may or may not have completed it.
    env.sandbox.faults(json!({"fail_next": [{"route": "put", "action": "drop"}, {"route": "put", "action": "drop"}, {"route": "put", "action": "drop"}]})).await;
    roundtrip(&env, "message", "me", 4 * MIB, "drops.bin").await;
    let stats = env.sandbox.stats().await;
    assert_eq!(stats["duplicate_attachments"], json!(0));
    assert_eq!(stats["upload_url_requests_with_authorization"], json!(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_session_is_recreated() {
    let env = Env::new();
    env.write_config("chunk_size = \"1MiB\"", "");
    // Sessions live 2 s; the second chunk is held 2.5 s, so the first session expires mid-way
    // (as when a laptop sleeps past a session's expiry) and a new one must finish the file.
    env.sandbox
        .faults(json!({"session_lifetime_secs": 2, "fail_next": [
            {"route": "put", "action": "delay", "delay_ms": 10},
            {"route": "put", "action": "delay", "delay_ms": 2500}
        ]}))
        .await;
    roundtrip(&env, "message", "me", 6 * MIB, "slow.bin").await;
    let stats = env.sandbox.stats().await;
    assert!(
        stats["sessions_created"].as_u64().unwrap_or(0) >= 2,
        "a new session was needed: {stats}"
    );
    assert_eq!(stats["duplicate_attachments"], json!(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_item_fails_with_graphs_code() {
    let env = Env::new();
    env.write_config("", "");
    let item = env.sandbox.create_item("message", "me").await;
    env.sandbox.delete_item(&item).await;
    let path = env.path("a.txt");
    write_file(&path, 10, 1);
    let out = send(&env, &path, &["--message", &item]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ErrorItemNotFound"),
        "{}",
        stderr(&out)
    );
    // Same for the session path.
    let big = env.path("big.bin");
    write_file(&big, 5 * MIB, 2);
    let out = send(&env, &big, &["--message", &item]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ErrorItemNotFound"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_size_limit_and_shared_mailbox_are_explained() {
    let env = Env::new();
    env.write_config("", "");
    env.sandbox
        .faults(json!({"message_size_limit": 1_000_000, "shared_mailbox_403": true}))
        .await;
    let item = env.sandbox.create_item("message", "me").await;
    let path = env.path("b.bin");
    write_file(&path, 900_000, 3);
    let out = send(&env, &path, &["--message", &item]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ErrorMessageSizeExceeded") && stderr(&out).contains("35 MB"),
        "{}",
        stderr(&out)
    );
    let shared = env
        .sandbox
        .create_item("message", "shared@contoso.test")
        .await;
    let big = env.path("c.bin");
    write_file(&big, 4 * MIB, 4);
    let out = send(
        &env,
        &big,
        &["--message", &shared, "--user", "shared@contoso.test"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("application permissions"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_token_exits_3_and_never_prints_it() {
    let env = Env::new();
    env.write_config("", "");
    let item = env.sandbox.create_item("message", "me").await;
    let path = env.path("a.txt");
    write_file(&path, 10, 1);
    let out = run_bounded(
        env.cmd().env("OUTBOX_TEST_TOKEN", "wrong-token-xyz").args([
            "send",
            path.to_str().unwrap_or_default(),
            "--message",
            &item,
        ]),
        T,
    );
    assert!(
        matches!(out.status.code(), Some(3)),
        "a refused token is a sign-in problem: {}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("wrong-token-xyz"));
    let out = run_bounded(
        env.cmd().env_remove("OUTBOX_TEST_TOKEN").args([
            "send",
            path.to_str().unwrap_or_default(),
            "--message",
            &item,
        ]),
        T,
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("OUTBOX_TEST_TOKEN"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_https_with_the_sandbox_ca_as_graph_ca_file() {
    let sandbox = Sandbox::start_with(&["--tls"]);
    assert!(sandbox.origin.starts_with("https://"), "{}", sandbox.origin);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = sandbox.data.path().join("ca.pem");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[graph]\nbase_url = \"{}\"\nca_file = '{}'\n[auth]\nmethod = \"token_env\"\ntoken_env = \"OUTBOX_TEST_TOKEN\"\n[agent]\nstate_dir = '{}'\n",
            sandbox.graph_base(),
            ca.display(),
            dir.path().join("state").display()
        ),
    )
    .expect("config");
    let item = sandbox.create_item("message", "me").await;
    let file = dir.path().join("tls.bin");
    let sha = write_file(&file, 5 * MIB, 11);
    let send = |extra: &[(&str, &str)]| {
        let mut c = std::process::Command::new(bin());
        c.env("OUTBOX_CONFIG", &cfg)
            .env("OUTBOX_TEST_TOKEN", TOKEN)
            .args([
                "send",
                file.to_str().unwrap_or_default(),
                "--message",
                &item,
            ]);
        for (k, v) in extra {
            c.env(k, v);
        }
        run_bounded(&mut c, T)
    };
    let out = send(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let atts = sandbox.attachments(&item).await;
    assert_eq!(atts.len(), 1);
    assert_eq!(atts[0]["sha256"], json!(sha));
    // HTTPS_PROXY is honoured: a proxy that is not there stops the request.
    let out = send(&[("HTTPS_PROXY", "http://127.0.0.1:9"), ("NO_PROXY", "")]);
    assert!(
        !out.status.success(),
        "a dead proxy must be used (and fail): {}",
        stderr(&out)
    );
    assert_eq!(sandbox.attachments(&item).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claims_challenge_asks_for_a_fresh_sign_in() {
    let env = Env::new();
    env.write_config("", "");
    env.sandbox
        .faults(json!({"fail_next": [{"route": "post", "action": "claims_challenge"}]}))
        .await;
    let item = env.sandbox.create_item("message", "me").await;
    let path = env.path("a.txt");
    write_file(&path, 10, 1);
    let out = send(&env, &path, &["--message", &item]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("outbox login"), "{}", stderr(&out));
    assert!(env.sandbox.attachments(&item).await.is_empty());
}
