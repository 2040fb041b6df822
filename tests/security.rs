//! Issue 14, "safe in a shared drop folder": one test per attack, named after what it prevents,
//! through the real binary. The agent runs as the user (root here, as CI runs); the neighbour
//! with write access to a drop folder is `nobody` (uid 65534), whose commands run through
//! `setpriv`. Where privileges cannot be dropped the test says SKIPPED and returns. The threat
//! model these tests back is in RELIABILITY.md ("Security").

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

fn mapping(name: &str, folder: &Path, item: &str, extra: &str) -> String {
    format!(
        "[[mapping]]\nname = \"{name}\"\nfolder = '{}'\nmessage = \"{item}\"\n{extra}\n",
        folder.display()
    )
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
}

/// A drop folder the neighbour may write to (0777, as a shared scan folder is to its group).
fn shared_folder(env: &Env, name: &str) -> PathBuf {
    let f = env.path(name);
    std::fs::create_dir_all(&f).expect("mkdir");
    chmod(env.dir.path(), 0o755);
    chmod(&f, 0o777);
    f
}

/// Run `script` with `sh` as the neighbour (`nobody`) in `dir`; `false` (SKIPPED printed) where
/// privileges cannot be dropped.
fn neighbour(dir: &Path, script: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        println!("SKIPPED: not root, so no second user can be played; the attack needs one");
        return false;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .current_dir(dir)
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => panic!(
            "the neighbour's commands failed: {script}\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            println!("SKIPPED: setpriv cannot drop to uid 65534 here ({e})");
            false
        }
    }
}

/// A private file of the user's, outside any mapped folder.
fn private_file(env: &Env, rel: &str, text: &str) -> PathBuf {
    let p = env.path(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, text).expect("write");
    chmod(&p, 0o600);
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn a_linked_folder_in_a_recursive_mapping_does_not_mail_the_users_private_files() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    let private = env.path("private");
    std::fs::create_dir_all(&private).expect("mkdir");
    env.write_config("", &mapping("drop", &drop, &item, "recursive = true"));
    let agent = Agent::start(&env, &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let link = format!("ln -s '{}' link && mkdir real", private.display());
    if !neighbour(&drop, &link) {
        return;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Written later, into the linked folder, by the user: never the agent's to send.
    private_file(&env, "private/secret.txt", "the user's secret");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(neighbour(&drop, "echo marker > real/marker.txt"));
    wait_until(T, "marker attached", || async {
        attached(&env.sandbox, &item)
            .await
            .contains_key("marker.txt")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let names: Vec<String> = attached(&env.sandbox, &item).await.into_keys().collect();
    assert_eq!(names, vec!["marker.txt".to_string()], "{}", agent.log());
    // A run --once (a full scan) does not descend through the link either.
    drop_agent(agent);
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!attached(&env.sandbox, &item)
        .await
        .contains_key("secret.txt"));
}

fn drop_agent(a: Agent) {
    let _ = a.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planted_reason_file_link_cannot_overwrite_a_file_of_the_user() {
    let env = Env::new();
    let gone = env.sandbox.create_item("message", "me").await;
    env.sandbox.delete_item(&gone).await;
    let drop = shared_folder(&env, "drop");
    let failed = drop.join("failed");
    std::fs::create_dir(&failed).expect("mkdir");
    chmod(&failed, 0o777); // the user made it shared too
    let bashrc = private_file(&env, "home/.bashrc", "the user's shell setup\n");
    env.write_config(
        "",
        &mapping("drop", &drop, &gone, "failed_dir = \"failed\""),
    );
    let plant = format!(
        "ln -s '{}' 'failed/$(touch pwned).txt.reason.txt' && echo x > '$(touch pwned).txt'",
        bashrc.display()
    );
    if !neighbour(&drop, &plant) {
        return;
    }
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&bashrc).expect("bashrc"),
        "the user's shell setup\n"
    );
    // Moved beside, under a free name, with its own reason file (0600).
    let reason = failed.join("$(touch pwned) (1).txt.reason.txt");
    assert!(failed.join("$(touch pwned) (1).txt").exists());
    assert_eq!(
        std::fs::metadata(&reason)
            .expect("reason")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_or_sent_dir_swapped_for_a_link_or_owned_by_another_user_receives_nothing() {
    let env = Env::new();
    let gone = env.sandbox.create_item("message", "me").await;
    env.sandbox.delete_item(&gone).await;
    let item = env.sandbox.create_item("message", "me").await;
    let a = shared_folder(&env, "a");
    let b = shared_folder(&env, "b");
    let elsewhere = env.path("home/Documents");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    env.write_config(
        "",
        &(mapping("a", &a, &gone, "failed_dir = \"failed\"")
            + &mapping("b", &b, &item, "after = \"move\"")),
    );
    let plant = format!(
        "ln -s '{}' a/failed && echo x > a/doc.txt && mkdir b/sent && echo y > b/doc.txt",
        elsewhere.display()
    );
    if !neighbour(env.dir.path(), &plant) {
        return;
    }
    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).expect("ls").count(),
        0,
        "nothing moved or written through the link: {log}"
    );
    assert!(a.join("doc.txt").exists() && b.join("doc.txt").exists());
    assert_eq!(std::fs::read_dir(b.join("sent")).expect("ls").count(), 0);
    assert!(log.contains("not a real folder"), "{log}");
    assert!(log.contains("belongs to another user"), "{log}");
    assert!(attached(&env.sandbox, &item).await.contains_key("doc.txt"));
}

fn sha_of(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// `status --json`'s rows.
fn rows(env: &Env) -> Vec<serde_json::Value> {
    let out = env.run(&["status", "--json"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Issue 14, item 3: the file that was hashed is swapped, before its upload opens it, for a link
/// to a secret of the same size outside the folder, then for another file of the same size. The
/// pause point `before-upload-open` holds the window open. The secret never reaches the item,
/// and no entry is recorded done with bytes other than its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_swapped_after_its_hash_for_a_link_to_a_secret_never_sends_the_secret() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    let secret_text = "S".repeat(64);
    let secret = private_file(&env, "private/secret.txt", &secret_text);
    env.write_config("", &mapping("drop", &drop, &item, ""));
    // The decoy, 64 bytes like the secret, written by the neighbour.
    if !neighbour(&drop, "printf '%064d' 0 > report.txt") {
        return;
    }
    // The upload is held until the swap is made (a fixed 3 s pause could end first on a
    // loaded machine, and the decoy was then sent: no proof, and a failed test).
    let release = env.path("release-upload");
    let pause = format!("before-upload-open:{}", (T / 2).as_millis());
    let agent = Agent::start(
        &env,
        &[
            ("OUTBOX_PAUSE_AT", pause.as_str()),
            ("OUTBOX_PAUSE_RELEASE", release.to_str().unwrap()),
        ],
    );
    let pauses = |a: &Agent| {
        a.log()
            .matches("failpoint before-upload-open: pausing")
            .count()
    };
    wait_until(T, "the upload to pause after the hash", || async {
        pauses(&agent) >= 1
    })
    .await;
    let swap = format!("rm report.txt && ln -s '{}' report.txt", secret.display());
    assert!(neighbour(&drop, &swap));
    std::fs::write(&release, "").expect("release the upload");
    let decoy = sha_of(format!("{:064}", 0).as_bytes());
    wait_until(T, "the decoy's entry to settle", || async {
        rows(&env).iter().any(|r| {
            r["sha256"] == decoy.as_str()
                && ["canceled", "done", "failed"].contains(&r["state"].as_str().unwrap_or(""))
        })
    })
    .await;
    let secret_sha = sha_of(secret_text.as_bytes());
    assert!(
        !attached(&env.sandbox, &item)
            .await
            .values()
            .any(|s| *s == secret_sha),
        "the secret was sent: {}",
        agent.log()
    );
    let decoy_row = rows(&env)
        .into_iter()
        .find(|r| r["sha256"] == decoy.as_str())
        .expect("decoy row");
    assert_eq!(decoy_row["state"], "canceled", "{decoy_row}");

    // Again with a regular file of the same size renamed over it (held the same way).
    std::fs::remove_file(&release).expect("hold the next upload");
    assert!(neighbour(
        &drop,
        "rm report.txt && printf '%064d' 1 > report.txt"
    ));
    wait_until(T, "the second decoy's upload to pause", || async {
        pauses(&agent) >= 2
    })
    .await;
    assert!(neighbour(
        &drop,
        "printf '%064d' 2 > .other && mv .other report.txt"
    ));
    std::fs::write(&release, "").expect("release the upload");
    let other = sha_of(format!("{:064}", 2).as_bytes());
    wait_until(T, "the file now there attached", || async {
        attached(&env.sandbox, &item)
            .await
            .contains_key("report.txt")
    })
    .await;
    let log = agent.log();
    let _ = agent.stop();
    let on_item = attached(&env.sandbox, &item).await;
    assert_eq!(on_item.get("report.txt"), Some(&other), "{log}");
    assert!(
        !on_item.values().any(|s| *s == secret_sha),
        "the secret was sent: {log}"
    );
    // Every done entry's hash is the hash of what is on the item; the decoys are not done.
    for r in rows(&env) {
        if r["state"] == "done" {
            assert_eq!(r["sha256"].as_str(), Some(other.as_str()), "{r}\n{log}");
        } else {
            assert_ne!(r["sha256"].as_str(), Some(other.as_str()), "{r}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn files_in_excluded_dot_folders_are_not_attached() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    for (rel, text) in [
        (".git/config", "[remote]"),
        (".hidden/notes.txt", "x"),
        ("sub/.cache/blob", "y"),
        ("sub/ok.txt", "z"),
    ] {
        let p = drop.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
    }
    env.write_config("", &mapping("drop", &drop, &item, "recursive = true"));
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = attached(&env.sandbox, &item).await.into_keys().collect();
    assert_eq!(names, vec!["ok.txt".to_string()]);
}

// ---- a hostile or broken server (the sandbox plays a faithful Graph; these play a rogue one) ----

type Heads = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A one-thread HTTP/1.1 server on loopback answering every request with `answer(head)`; the
/// request heads it saw are kept.
fn rogue_server(answer: impl Fn(&str) -> Vec<u8> + Send + 'static) -> (u16, Heads) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let heads: Heads = Default::default();
    let seen = heads.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = Vec::new();
            let mut b = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).into_owned();
            seen.lock().expect("lock").push(head.clone());
            let _ = c.write_all(&answer(&head));
        }
    });
    (port, heads)
}

fn json_answer(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn rogue_config(env: &Env, graph_port: u16) {
    let cfg = format!(
        "[graph]\nbase_url = \"http://127.0.0.1:{graph_port}/v1.0\"\n\n[auth]\nmethod = \"token_env\"\ntoken_env = \"OUTBOX_TEST_TOKEN\"\n\n[agent]\nstate_dir = '{}'\n",
        env.state_dir().display()
    );
    std::fs::write(env.path("config.toml"), cfg).expect("config");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_next_link_on_another_port_never_receives_the_bearer_token() {
    let env = Env::new();
    let (thief, stolen) = rogue_server(|_| json_answer(r#"{"value":[]}"#));
    let (graph, _) = rogue_server(move |head| {
        if head.contains("/attachments") {
            json_answer(&format!(
                r#"{{"value":[{{"id":"a1","name":"x","size":1}}],"@odata.nextLink":"http://127.0.0.1:{thief}/v1.0/me/messages/m1/attachments?page=2"}}"#
            ))
        } else {
            json_answer(r#"{"value":[{"id":"m1","subject":"s","hasAttachments":true}]}"#)
        }
    });
    rogue_config(&env, graph);
    let out = env.run(&["items", "messages"], T);
    let heads = stolen.lock().expect("lock").clone();
    assert!(heads.is_empty(), "the other origin was asked: {heads:?}");
    assert!(
        stdout(&out).contains("?"),
        "the count is unknown, not partial: {}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_answer_is_refused_without_reading_it_into_memory() {
    let env = Env::new();
    // Claims 1.5 GB, sends a little: refused at the header, before any body is read.
    let (graph, _) = rogue_server(|_| {
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1500000000\r\nconnection: close\r\n\r\n{\"value\":[".to_vec()
    });
    rogue_config(&env, graph);
    let out = env.run(&["items", "messages"], T);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("larger than"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn http_off_loopback_is_refused_for_graph_and_the_authority() {
    let env = Env::new();
    for (table, key, url) in [
        ("graph", "base_url", "http://graph.example.com/v1.0"),
        ("auth", "authority", "http://login.example.com"),
    ] {
        let cfg = format!(
            "[{table}]\n{key} = \"{url}\"\n\n[agent]\nstate_dir = '{}'\n",
            env.state_dir().display()
        );
        std::fs::write(env.path("config.toml"), cfg).expect("config");
        let out = env.run(&["status"], T);
        assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{table}.{key}")),
            "{}",
            stderr(&out)
        );
    }
}

// ---- outside text on the terminal ----

#[tokio::test(flavor = "multi_thread")]
async fn a_token_commands_stderr_cannot_leak_a_bare_jwt_or_drive_the_terminal() {
    let env = Env::new();
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtZSJ9.c2lnbmF0dXJlLXNlY3JldA";
    let tool = env.path("token-tool");
    std::fs::write(
        &tool,
        format!("#!/bin/sh\nprintf 'refresh failed for {jwt}\\033[2J\\033[31m\\nINFO forged line\\n' >&2\nexit 1\n"),
    )
    .expect("tool");
    chmod(&tool, 0o755);
    let cfg = format!(
        "[graph]\nbase_url = \"{}\"\n\n[auth]\nmethod = \"token_command\"\ncommand = [{}]\n\n[agent]\nstate_dir = {}\n",
        env.sandbox.graph_base(),
        toml_path(&tool),
        toml_path(&env.state_dir())
    );
    std::fs::write(env.path("config.toml"), cfg).expect("config");
    chmod(&env.path("config.toml"), 0o600);
    let out = env.run(&["whoami"], T);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("refresh failed for REDACTED"), "{err}");
    assert!(!err.contains("eyJzdWIi"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "escape sequences are shown escaped: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_name_cannot_forge_a_log_line_or_recolour_the_terminal() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    std::fs::create_dir_all(&drop).expect("mkdir");
    let name = "a\u{1b}[31m\nINFO forged: attached secret.txt";
    std::fs::write(drop.join(name), "x").expect("write");
    env.write_config("", &mapping("drop", &drop, &item, ""));
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    // Attached under its own name, its control characters (the escape, the newline) made
    // U+FFFD: none reaches the attachment's name.
    let on_item = attached(&env.sandbox, &item).await;
    assert!(
        on_item.contains_key("a\u{FFFD}[31m\u{FFFD}INFO forged: attached secret.txt"),
        "{on_item:?}"
    );
    // (The log's own colours, if any, are the formatter's; the name's escape is shown escaped.)
    assert!(!err.contains("a\u{1b}[31m"), "{err:?}");
    assert!(err.contains("a\\u{1b}[31m\\nINFO forged"), "{err:?}");
    assert!(
        err.lines()
            .filter(|l| l.contains("INFO forged"))
            .all(|l| l.contains("drop/a")),
        "no line of the name's making: {err}"
    );
}

// ---- the state dir, secret files, the config ----

#[tokio::test(flavor = "multi_thread")]
async fn a_state_dir_of_another_user_is_refused_and_a_loose_one_of_ours_tightened() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    std::fs::create_dir_all(&drop).expect("mkdir");
    env.write_config("", &mapping("drop", &drop, &item, ""));
    let state = env.state_dir();
    std::fs::create_dir_all(&state).expect("mkdir");
    chmod(&state, 0o777);
    let out = env.run(&["status"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(&state)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "tightened: {}", stderr(&out));
    assert!(stderr(&out).contains("now 0700"), "{}", stderr(&out));
    // Someone else's: refused, and said why.
    let other = env.path("others-state");
    std::fs::create_dir_all(&other).expect("mkdir");
    chmod(env.dir.path(), 0o755);
    let Ok(()) = std::os::unix::fs::chown(&other, Some(65534), Some(65534)) else {
        println!("SKIPPED: cannot give a folder to another user here");
        return;
    };
    let cfg = std::fs::read_to_string(env.path("config.toml"))
        .expect("cfg")
        .replace(
            &format!("state_dir = '{}'", state.display()),
            &format!("state_dir = '{}'", other.display()),
        );
    std::fs::write(env.path("config.toml"), cfg).expect("cfg");
    let out = env.run(&["run", "--once"], T);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("belongs to another user"),
        "{}",
        stderr(&out)
    );
}

/// Issue 14, item 8: upload URLs saved in the state dir are replaced, while the agent is down in
/// the middle of two uploads, by URLs of sessions on someone else's item (an allowed host: the
/// sandbox is `graph.base_url`'s origin). One file belongs to another user, the other is ours
/// but writable by others. Neither is used: nothing reaches the planted sessions, the files go
/// to their own item once each, and the log says why each URL was refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_planted_upload_url_file_never_receives_the_file() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let theirs = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    let size = 4 * MIB;
    let a_sha = write_file(&drop.join("a.bin"), size, 1);
    let b_sha = write_file(&drop.join("b.bin"), size, 2);
    env.write_config("", &mapping("drop", &drop, &item, ""));
    // Down after both upload URLs were saved, before a byte was sent.
    let out = run_bounded(
        env.cmd()
            .env("OUTBOX_CRASH_AT", "after-session-saved:2")
            .args(["run", "--once"]),
        T,
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    let sessions = env.state_dir().join("sessions");
    let mut saved: Vec<PathBuf> = std::fs::read_dir(&sessions)
        .expect("sessions")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "url"))
        .collect();
    saved.sort();
    assert_eq!(saved.len(), 2, "{}", stderr(&out));
    let http = reqwest::Client::new();
    let mut planted = Vec::new();
    for (i, file) in saved.iter().enumerate() {
        let r = http
            .post(format!(
                "{}/me/messages/{}/attachments/createUploadSession",
                env.sandbox.graph_base(),
                urlenc(&theirs)
            ))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"AttachmentItem": {
                "attachmentType": "file", "name": format!("{i}.bin"), "size": size}}))
            .send()
            .await
            .expect("session");
        assert_eq!(r.status(), 201);
        let url = r.json::<serde_json::Value>().await.expect("json")["uploadUrl"]
            .as_str()
            .expect("uploadUrl")
            .to_string();
        std::fs::write(file, &url).expect("plant");
        planted.push(url);
    }
    // One planted by another user; one of ours that others could have written.
    let Ok(()) = std::os::unix::fs::chown(&saved[0], Some(65534), Some(65534)) else {
        println!("SKIPPED: cannot give a file to another user here");
        return;
    };
    chmod(&saved[0], 0o600);
    chmod(&saved[1], 0o666);

    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(attached(&env.sandbox, &theirs).await.is_empty(), "{log}");
    for url in &planted {
        let r = http.get(url).send().await.expect("ask");
        let v: serde_json::Value = r.json().await.expect("json");
        let next = v["nextExpectedRanges"][0].as_str().unwrap_or_default();
        assert!(
            next == "0" || next == "0-",
            "the planted session received bytes: {v}\n{log}"
        );
    }
    assert!(
        log.contains(
            "is not used: it belongs to another user (uid 65534), who may have planted it"
        ),
        "{log}"
    );
    assert!(
        log.contains("is not used: other users can write it (mode 666)"),
        "{log}"
    );
    assert!(log.contains("a saved upload URL was refused"), "{log}");
    let on_item = attached(&env.sandbox, &item).await;
    assert_eq!(on_item.get("a.bin"), Some(&a_sha));
    assert_eq!(on_item.get("b.bin"), Some(&b_sha));
    assert_eq!(std::fs::read_dir(&sessions).expect("ls").count(), 0);
}

/// Issue 23, item 5: a config that others can write, or that another user owns, or in a folder
/// others can write, is refused for every auth method (an edited `base_url` got the bearer
/// token; a neighbour's `token_command` ran), at start and on reload, naming the file and the
/// command that fixes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_others_can_write_or_own_is_refused_for_every_auth_method_and_on_reload() {
    let env = Env::new();
    let cfg = format!(
        "[auth]\nmethod = \"token_command\"\ncommand = [\"/bin/echo\", \"x\"]\n\n[agent]\nstate_dir = '{}'\n",
        env.state_dir().display()
    );
    let file = env.path("config.toml");
    std::fs::write(&file, cfg).expect("config");
    chmod(&file, 0o666);
    let out = env.run(&["status"], T);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod go-w"), "{}", stderr(&out));
    // Any other method too: group-writable is enough.
    env.write_config("", "");
    chmod(&file, 0o620);
    let out = env.run(&["status"], T);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(
        msg.contains(&format!("chmod go-w {}", file.display())),
        "{msg}"
    );
    // Its folder writable by others.
    chmod(&file, 0o600);
    chmod(env.dir.path(), 0o777);
    let out = env.run(&["status"], T);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("config's folder"), "{}", stderr(&out));
    chmod(env.dir.path(), 0o700);
    let out = env.run(&["status"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    // Owned by another user.
    if std::os::unix::fs::chown(&file, Some(65534), None).is_ok() {
        let out = env.run(&["status"], T);
        assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("belongs to another user"),
            "{}",
            stderr(&out)
        );
        std::os::unix::fs::chown(&file, Some(0), None).expect("chown back");
    } else {
        println!("SKIPPED (the other owner): cannot give a file to another user here");
    }
    // On reload: a running agent keeps its config when the new one is writable by others.
    let item = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    let first = env.path("first");
    std::fs::create_dir_all(&drop).expect("mkdir");
    std::fs::create_dir_all(&first).expect("mkdir");
    env.write_config("", &mapping("first", &first, &item, ""));
    let agent = Agent::start(&env, &[]);
    // (Its SIGHUP handler is set up as it starts watching; a HUP before would end it.)
    agent.watching().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.write_config("", &mapping("drop", &drop, &item, ""));
    chmod(&file, 0o666);
    let _ = Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status();
    let refused = || async { agent.log().contains("the new configuration is refused") };
    let start = std::time::Instant::now();
    while !refused().await {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(agent.log().contains("chmod go-w"), "{}", agent.log());
    std::fs::write(drop.join("a.txt"), "a\n").expect("write");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        attached(&env.sandbox, &item).await.is_empty(),
        "the refused config was used: {}",
        agent.log()
    );
}

// ---- the sandbox ----

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_admin_api_refuses_a_rebound_host_name_and_keeps_its_journal_private() {
    let sandbox = Sandbox::start();
    let url = format!("http://127.0.0.1:{}/_admin/stats", sandbox.port());
    let c = reqwest::Client::new();
    let rebound = c
        .get(&url)
        .header("host", format!("evil.example:{}", sandbox.port()))
        .send()
        .await
        .expect("send");
    assert_eq!(rebound.status(), 403);
    let own = c.get(&url).send().await.expect("send");
    assert_eq!(own.status(), 200);
    let journal = sandbox.data.path().join("state.journal");
    let mode = std::fs::metadata(&journal)
        .expect("journal")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

/// Issue 23, item 2: a hard link in a shared drop folder to a 0600 file of the user's (made by
/// root here: Linux's `fs.protected_hardlinks` stops a plain user, macOS and FreeBSD do not) is
/// refused, reason "hard link"; a mapping with `allow_hard_links = true` sends its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_hard_link_to_a_private_file_is_refused_unless_the_mapping_allows_them() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let other = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    let linked = shared_folder(&env, "linked");
    let secret = private_file(&env, "home/secret.txt", "the user's secret\n");
    std::fs::hard_link(&secret, drop.join("secret.txt")).expect("link");
    std::fs::write(drop.join("plain.txt"), "plain\n").expect("write");
    let mine = private_file(&env, "home/mine.txt", "linked on purpose\n");
    std::fs::hard_link(&mine, linked.join("mine.txt")).expect("link");
    env.write_config(
        "",
        &(mapping("drop", &drop, &item, "")
            + &mapping("linked", &linked, &other, "allow_hard_links = true")),
    );
    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    let names: Vec<String> = attached(&env.sandbox, &item).await.into_keys().collect();
    assert_eq!(names, vec!["plain.txt".to_string()], "{log}");
    assert!(log.contains("hard link"), "{log}");
    assert!(log.contains("allow_hard_links = true"), "{log}");
    assert!(attached(&env.sandbox, &other)
        .await
        .contains_key("mine.txt"));
    let rows = rows(&env);
    let refused = rows
        .iter()
        .find(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("secret.txt"))
        })
        .expect("an entry for the link");
    assert_eq!(refused["state"], "failed", "{refused}");
}

fn sparse(path: &Path, size: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .expect("sparse file");
}

/// Bytes the process has read (`rchar` of /proc/PID/io: files and sockets alike).
fn read_so_far(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .expect("/proc/PID/io")
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("rchar")
}

/// Issue 23, item 3: a neighbour's `truncate -s 10G huge.pdf` is refused by its size when it
/// settles, unread; four big files hashing slowly (the pause point `hash-read` holds each
/// 256 KiB read 50 ms) do not hold another mapping's file in `settling`; deleting them stops
/// their reads; and SIGTERM during a hash ends the agent within 2 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_sparse_10_gib_drop_is_refused_unread_and_big_files_neither_starve_nor_outlive_sigterm() {
    let env = Env::new();
    let item_a = env.sandbox.create_item("message", "me").await;
    let item_b = env.sandbox.create_item("message", "me").await;
    let a = shared_folder(&env, "a");
    let b = shared_folder(&env, "b");
    env.write_config(
        "",
        &(mapping("a", &a, &item_a, "") + &mapping("b", &b, &item_b, "")),
    );
    sparse(&a.join("huge.pdf"), 10 << 30);
    for i in 0..4 {
        sparse(&a.join(format!("big{i}.bin")), 100 * MIB);
    }
    let mut agent = Agent::start(&env, &[("OUTBOX_PAUSE_AT", "hash-read:50")]);
    let pid = agent.child.id();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::write(b.join("note.txt"), "another mapping's file\n").expect("write");
    wait_until(
        Duration::from_secs(10),
        "b's file attached while a's hash",
        || async {
            attached(&env.sandbox, &item_b)
                .await
                .contains_key("note.txt")
        },
    )
    .await;
    let huge = rows(&env)
        .into_iter()
        .find(|r| r["path"].as_str().is_some_and(|p| p.ends_with("huge.pdf")))
        .unwrap_or_else(|| panic!("no entry for huge.pdf: {}", agent.log()));
    assert_eq!(huge["state"], "rejected", "{huge}");
    // All the agent read so far: the big files' first pieces at 5 MiB/s each, never 10 GiB.
    let read = read_so_far(pid);
    assert!(read < 200 * MIB, "read {read} bytes:\n{}", agent.log());
    // Deleted while hashed: their reads stop (a look at the path every 4 MiB).
    for i in 0..4 {
        std::fs::remove_file(a.join(format!("big{i}.bin"))).expect("rm");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = read_so_far(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = read_so_far(pid);
    assert!(
        after - before < MIB,
        "{} bytes read in a second after the files were deleted",
        after - before
    );
    // SIGTERM while a hash is under way: obeyed within 2 s.
    sparse(&a.join("late.bin"), 100 * MIB);
    wait_until(Duration::from_secs(10), "late.bin hashing", || async {
        read_so_far(pid) > after + 2 * MIB
    })
    .await;
    let asked = std::time::Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = loop {
        if let Some(s) = agent.exited() {
            break s;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = asked.elapsed();
    assert!(status.success(), "{}", agent.log());
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
}

/// Issue 23, item 7: a state dir pre-created as a link under a shared path (outbox used to
/// tighten the link's target to 0700 and put its ledger there), or in a parent others can write,
/// is refused with a clear error; nothing is written or tightened.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_dir_that_is_a_link_or_in_a_folder_others_can_write_is_refused() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    std::fs::create_dir_all(&drop).expect("mkdir");
    env.write_config("", &mapping("drop", &drop, &item, ""));
    let target = env.path("elsewhere");
    std::fs::create_dir_all(&target).expect("mkdir");
    chmod(&target, 0o755);
    std::os::unix::fs::symlink(&target, env.state_dir()).expect("symlink");
    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("is a symbolic link"), "{log}");
    assert!(log.contains("agent.state_dir"), "{log}");
    let mode = std::fs::metadata(&target)
        .expect("meta")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o755, "the target was tightened: {log}");
    assert_eq!(std::fs::read_dir(&target).expect("ls").count(), 0, "{log}");
    // A real folder, in a shared parent without the sticky bit: refused too.
    std::fs::remove_file(env.state_dir()).expect("rm link");
    let shared = env.path("shared");
    std::fs::create_dir_all(&shared).expect("mkdir");
    chmod(&shared, 0o777);
    let cfg = std::fs::read_to_string(env.path("config.toml"))
        .expect("cfg")
        .replace(
            &format!("state_dir = '{}'", env.state_dir().display()),
            &format!("state_dir = '{}'", shared.join("state").display()),
        );
    std::fs::write(env.path("config.toml"), cfg).expect("cfg");
    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("other users can write its parent"), "{log}");
    assert!(!shared.join("state").join("ledger").exists(), "{log}");
}

/// Issue 23, item 8: `outbox status` printed bidi controls raw (`Scan_2026_\u{202e}fdp.exe`
/// reads "…exe.pdf"); every line goes through one printable-text function, the marks U+200E,
/// U+200F and U+061C too.
#[tokio::test(flavor = "multi_thread")]
async fn status_escapes_bidi_controls_in_every_line() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    std::fs::create_dir_all(&drop).expect("mkdir");
    let names = [
        "Scan_2026_\u{202e}fdp.exe",
        "a\u{200e}b.txt",
        "c\u{200f}d.txt",
        "e\u{061c}f.txt",
        "g\u{2067}h.txt",
    ];
    for n in names {
        std::fs::write(drop.join(n), n).expect("write");
    }
    env.write_config("", &mapping("drop", &drop, &item, ""));
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(attached(&env.sandbox, &item).await.len(), names.len());
    let out = env.run(&["status"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for c in ['\u{202e}', '\u{200e}', '\u{200f}', '\u{061c}', '\u{2067}'] {
        assert!(
            !text.contains(c),
            "U+{:04X} raw in status:\n{text}",
            c as u32
        );
    }
    assert!(text.contains("Scan_2026_\\u{202e}fdp.exe"), "{text}");
    assert!(text.contains("a\\u{200e}b.txt"), "{text}");
    assert!(text.contains("e\\u{61c}f.txt"), "{text}");
}

/// A stand-in `notify-send` on PATH that writes its arguments, then its environment, to
/// `notified.log`; the PATH to run outbox with.
fn fake_notifier(env: &Env) -> (PathBuf, String) {
    let bin_dir = env.path("fakebin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir");
    let log = env.path("notified.log");
    let script = bin_dir.join("notify-send");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf 'ARG:%s\\n' \"$@\" >> '{0}'\nenv | sed 's/^/ENV:/' >> '{0}'\necho END >> '{0}'\n",
            log.display()
        ),
    )
    .expect("script");
    chmod(&script, 0o755);
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (log, path)
}

async fn notified(log: &Path) -> String {
    for _ in 0..50 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("END") {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no notification: {:?}", std::fs::read_to_string(log));
}

/// Issue 23, item 9: notification bodies went to `notify-send` as markup (servers with
/// `body-markup` render a name's `<a href>` and `<img>`): `&`, `<` and `>` are escaped.
#[tokio::test(flavor = "multi_thread")]
async fn notification_markup_in_a_file_name_is_escaped() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    env.write_config("notify = \"all\"", &mapping("drop", &drop, &item, ""));
    let name = "<a href=x>&<img src=y>.txt";
    std::fs::write(drop.join(name), "x").expect("write");
    let (log, path) = fake_notifier(&env);
    let out = run_bounded(env.cmd().env("PATH", path).args(["run", "--once"]), T);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = notified(&log).await;
    let body = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("ARG:"))
        .expect("a body");
    // Quoted and escaped (the name never reads as outbox's own words, nor as markup).
    assert_eq!(
        body, "“&lt;a href=x&gt;&amp;&lt;img src=y&gt;.txt” was attached",
        "{text}"
    );
}

/// Issue 23, item 10: `outbox sandbox --data-dir` left attachment bytes world-readable (blobs
/// 0644 in 0755 folders): the data dir is owner-only like the state dir, its files 0600.
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_data_dir_keeps_attachment_bytes_owner_only() {
    let mut env = Env::new();
    let data = env.sandbox.data.path().to_path_buf();
    env.sandbox.stop();
    chmod(&data, 0o755);
    env.sandbox.restart();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    std::fs::create_dir_all(&drop).expect("mkdir");
    write_file(&drop.join("small.txt"), 1000, 1);
    write_file(&drop.join("large.bin"), 4 * MIB, 2);
    env.write_config("", &mapping("drop", &drop, &item, ""));
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(attached(&env.sandbox, &item).await.len(), 2);
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    for d in [data.clone(), data.join("blobs"), data.join("sessions")] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    let blobs: Vec<PathBuf> = std::fs::read_dir(data.join("blobs"))
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    for b in blobs {
        assert_eq!(mode(&b), 0o600, "{}", b.display());
    }
}

/// Issue 23, item 6: a subfolder named with a newline and a forged log line, unreadable to the
/// agent, is named in the scan's warning escaped; no log line starts with the forged text. The
/// agent runs as `nobody` here (root reads any folder).
#[tokio::test(flavor = "multi_thread")]
async fn a_subfolder_name_cannot_forge_a_line_in_the_scans_warning() {
    // The sandbox serves another user (the agent run as `nobody`) only when told to.
    let env = Env {
        sandbox: Sandbox::start_with(&["--allow-uid", "65534"]),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    env.write_config("", &mapping("drop", &drop, &item, "recursive = true"));
    chmod(&env.path("config.toml"), 0o644);
    let evil = "evil\n2026-01-01T00:00:00Z  INFO outbox: forged";
    if !neighbour(
        &drop,
        &format!("mkdir '{evil}' && chmod 000 '{evil}' && echo x > ok.txt"),
    ) {
        return;
    }
    // nobody must reach the workspace and make its state dir there (sticky, as /tmp).
    chmod(env.dir.path(), 0o1777);
    let out = run_bounded(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                bin(),
                "run",
                "--once",
            ])
            .env("OUTBOX_CONFIG", env.path("config.toml"))
            .env("OUTBOX_TEST_TOKEN", TOKEN)
            .env("RUST_LOG", "outbox=debug")
            .env("HOME", env.dir.path()),
        T,
    );
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("cannot read a subfolder"), "{log}");
    assert!(log.contains("evil\\n2026-01-01"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged line: {log}"
    );
    assert!(attached(&env.sandbox, &item).await.contains_key("ok.txt"));
}

/// inotify watches the process holds (`inotify wd:` lines of /proc/PID/fdinfo).
fn inotify_watches(pid: u32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let text = std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default();
        n += text
            .lines()
            .filter(|l| l.starts_with("inotify wd:"))
            .count();
    }
    n
}

/// Issue 23, item 4: `follow_symlinks = true` on one mapping made the watcher follow links out
/// of every folder (the user's home got watches), and a link into `failed/` attached a private
/// reason file. The watcher never follows links; a followed link is walked by the scan, inside
/// the folder, and the exclusions (`failed_dir`, `sent_dir`, globs) apply to where it leads.
#[tokio::test(flavor = "multi_thread")]
async fn a_followed_link_into_failed_or_an_excluded_folder_is_refused_and_never_watched_through() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    let failed = drop.join("failed");
    std::fs::create_dir(&failed).expect("mkdir");
    std::fs::create_dir(drop.join(".git")).expect("mkdir");
    std::fs::write(drop.join(".git/config"), "[remote] url = secret\n").expect("write");
    let reason = failed.join("old.pdf.reason.txt");
    std::fs::write(&reason, "a private reason\n").expect("write");
    chmod(&reason, 0o600);
    // A tree of the user's outside the folder, five folders deep.
    let home = env.path("home");
    let mut d = home.clone();
    for i in 0..5 {
        d = d.join(format!("d{i}"));
    }
    std::fs::create_dir_all(&d).expect("mkdir");
    env.write_config(
        "",
        &(mapping(
            "drop",
            &drop,
            &item,
            "recursive = true\nfollow_symlinks = true\nfailed_dir = \"failed\"",
        )),
    );
    let plant = format!(
        "ln -s failed/old.pdf.reason.txt steal.txt && ln -s .git/config conf.txt && ln -s '{}' home && mkdir real && ln -s real/inside.txt ok.txt && echo fine > real/inside.txt",
        home.display()
    );
    if !neighbour(&drop, &plant) {
        return;
    }
    let agent = Agent::start(&env, &[]);
    wait_until(T, "the link inside the folder attached", || async {
        attached(&env.sandbox, &item).await.contains_key("ok.txt")
    })
    .await;
    // Watches: the folder, real/, failed/ and .git/ at most; none through `home`.
    let watches = inotify_watches(agent.child.id());
    assert!(watches <= 4, "{watches} inotify watches:\n{}", agent.log());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let names = attached(&env.sandbox, &item).await;
    assert!(!names.contains_key("steal.txt"), "{}", agent.log());
    assert!(!names.contains_key("conf.txt"), "{}", agent.log());
    drop_agent(agent);
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let names = attached(&env.sandbox, &item).await;
    assert!(!names.contains_key("steal.txt") && !names.contains_key("conf.txt"));
}

/// Issue 23, item 11: the notifier (and what it runs) inherited the agent's token and secret
/// variables; it gets none: the config's `token_env`, and any `*TOKEN*`, `*SECRET*`, … name.
#[tokio::test(flavor = "multi_thread")]
async fn the_notifier_inherits_no_token_or_secret_variable() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    std::fs::create_dir_all(&drop).expect("mkdir");
    std::fs::write(drop.join("a.txt"), "a").expect("write");
    env.write_config("notify = \"all\"", &mapping("drop", &drop, &item, ""));
    let (log, path) = fake_notifier(&env);
    let out = run_bounded(
        env.cmd()
            .env("PATH", path)
            .env("AZURE_CLIENT_SECRET", "s3cret-value")
            .env("GITHUB_TOKEN", "ghp-value")
            .env("KEEP_ME", "visible")
            .args(["run", "--once"]),
        T,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = notified(&log).await;
    assert!(text.contains("ENV:KEEP_ME=visible"), "{text}");
    for secret in [TOKEN, "s3cret-value", "ghp-value"] {
        assert!(
            !text.contains(secret),
            "{secret} reached the notifier:\n{text}"
        );
    }
}

/// Issue 23, item 11: `failed_dir`/`sent_dir` were created with the agent's umask (group-
/// writable in a setgid shared folder): 0700, plus the read and enter rights the folder gives,
/// never write. The agent runs with umask 002 here, as on a desktop with user-private groups.
#[tokio::test(flavor = "multi_thread")]
async fn sent_and_failed_dirs_are_created_owner_only_unless_the_folder_lets_others_read() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let gone = env.sandbox.create_item("message", "me").await;
    env.sandbox.delete_item(&gone).await;
    let private = env.path("private");
    let shared = env.path("shared");
    std::fs::create_dir_all(&private).expect("mkdir");
    std::fs::create_dir_all(&shared).expect("mkdir");
    chmod(&private, 0o700);
    chmod(&shared, 0o2775);
    std::fs::write(private.join("a.txt"), "a").expect("write");
    std::fs::write(shared.join("b.txt"), "b").expect("write");
    env.write_config(
        "",
        &(mapping("private", &private, &item, "after = \"move\"")
            + &mapping("shared", &shared, &gone, "failed_dir = \"failed\"")),
    );
    let cmd = env.cmd();
    let out = run_bounded(
        Command::new("sh")
            .args(["-c", "umask 002 && exec \"$0\" run --once", bin()])
            .envs(
                cmd.get_envs()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
            )
            .current_dir(env.dir.path()),
        T,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert!(private.join("sent/a.txt").exists(), "{}", stderr(&out));
    assert!(shared.join("failed/b.txt").exists(), "{}", stderr(&out));
    assert_eq!(mode(&private.join("sent")), 0o700);
    assert_eq!(
        mode(&shared.join("failed")),
        0o755,
        "read and enter, never write"
    );
}

/// Issue 23, item 11: the user unit had only `NoNewPrivileges`. It now sets `UMask=0077`,
/// `LimitCORE=0` and the sandboxing a user manager can apply, and `systemd-analyze security`
/// rates it better than before (9.6 then).
#[test]
fn the_user_unit_is_hardened() {
    let env = Env::new();
    env.write_config("", "");
    let home = tempfile::tempdir().expect("home");
    let out = run_bounded(
        env.cmd()
            .args(["service", "install", "--dry-run", "--platform", "linux"])
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME"),
        T,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "NoNewPrivileges=yes",
        "UMask=0077",
        "LimitCORE=0",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let unit: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# write "))
        .skip(1)
        .take_while(|l| !l.starts_with("# end of "))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("outbox.service");
    std::fs::write(&path, unit).expect("unit");
    let runtime = dir.path().join("run");
    std::fs::create_dir_all(&runtime).expect("mkdir");
    let Ok(o) = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--user", "--no-pager"])
        .arg(&path)
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
    else {
        println!("SKIPPED (the score): systemd-analyze is not installed");
        return;
    };
    let report = String::from_utf8_lossy(&o.stdout);
    let Some(score) = report
        .lines()
        .find_map(|l| l.split("exposure level for outbox.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
    else {
        println!(
            "SKIPPED (the score): systemd-analyze security gave none: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return;
    };
    assert!(score <= 7.0, "exposure {score}:\n{report}");
}

/// Issue 23, item 11: the agent holds tokens for hours; it is not dumpable (PR_SET_DUMPABLE 0:
/// no core dump, and another process of the same user cannot read its /proc environment). Run
/// as `nobody` so that a second process of the same user can try.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_is_not_dumpable() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    env.write_config("", &mapping("drop", &drop, &item, ""));
    chmod(&env.path("config.toml"), 0o644);
    if !neighbour(&drop, "true") {
        return;
    }
    chmod(env.dir.path(), 0o1777);
    let log = std::fs::File::create(env.path("nobody-agent.log")).expect("log");
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin(),
            "run",
        ])
        .env("OUTBOX_CONFIG", env.path("config.toml"))
        .env("OUTBOX_TEST_TOKEN", TOKEN)
        .env("HOME", env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("agent");
    let pid = child.id();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let read = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(format!("/proc/{pid}/environ"))
        .output()
        .expect("cat");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let agent_log = std::fs::read_to_string(env.path("nobody-agent.log")).unwrap_or_default();
    assert!(
        !read.status.success() && !String::from_utf8_lossy(&read.stdout).contains(TOKEN),
        "the same user read the agent's environment; log:\n{agent_log}"
    );
}

/// Issue 23, item 5, its other side: `outbox init` under a umask that lets the group write
/// (002, user-private groups) writes a config outbox then accepts (0600), not one it refuses.
#[test]
fn init_writes_a_config_outbox_accepts_whatever_the_umask() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("conf").join("config.toml");
    let sh = |args: &str| {
        run_bounded(
            Command::new("sh")
                .args([
                    "-c",
                    &format!("umask 002 && exec \"$0\" --config \"$1\" {args}"),
                ])
                .arg(bin())
                .arg(&cfg)
                .env("HOME", dir.path())
                .env_remove("XDG_STATE_HOME")
                .env_remove("XDG_CONFIG_HOME")
                .env_remove("OUTBOX_CONFIG"),
            T,
        )
    };
    let out = sh("init");
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(&cfg)
        .expect("config")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let out = sh("status");
    assert_ne!(out.status.code(), Some(78), "{}", stderr(&out));
}

/// name -> every SHA-256 attached under it (a name may be there twice: another owner's file).
async fn attached_all(sandbox: &Sandbox, item: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = sandbox
        .attachments(item)
        .await
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or_default().to_string(),
                a["sha256"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Issue 23, item 1: with `on_change = "replace"` (the default) and `after = "delete"`, the
/// neighbour's own `contract.pdf` dropped after the user's was attached and deleted was taken as
/// its new version, and the user's attachment deleted. A version replaces an earlier one only
/// if both files have the same owner (recorded in the ledger); the neighbour's is added beside
/// it, and the log and `status` say so. A replacement (the user's own next version) is
/// announced in the log and by a notification, and leaves the neighbour's file alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_neighbours_same_name_file_is_added_beside_the_users_never_replacing_it() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    env.write_config(
        "notify = \"all\"",
        &mapping("drop", &drop, &item, "after = \"delete\""),
    );
    let (notes, path) = fake_notifier(&env);
    let run = || {
        let out = run_bounded(env.cmd().env("PATH", &path).args(["run", "--once"]), T);
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    let users = b"the user's contract, version 1\n";
    std::fs::write(drop.join("contract.pdf"), users).expect("write");
    run();
    assert!(
        !drop.join("contract.pdf").exists(),
        "deleted after it was attached"
    );
    let mine = sha_of(users);
    assert_eq!(
        attached_all(&env.sandbox, &item).await,
        vec![("contract.pdf".to_string(), mine.clone())]
    );
    let theirs = b"the neighbour's contract\n";
    if !neighbour(
        &drop,
        "printf \"the neighbour's contract\\n\" > contract.pdf",
    ) {
        return;
    }
    let log = run();
    let now = attached_all(&env.sandbox, &item).await;
    assert!(
        now.contains(&("contract.pdf".to_string(), mine.clone())),
        "the user's attachment was deleted: {now:?}\n{log}"
    );
    assert!(
        now.contains(&("contract.pdf".to_string(), sha_of(theirs))),
        "{now:?}\n{log}"
    );
    assert!(log.contains("another owner"), "{log}");
    let rows = rows(&env);
    let beside = rows
        .iter()
        .find(|r| r["state"] == "done" && r["size"] == theirs.len() as u64)
        .unwrap_or_else(|| panic!("the neighbour's entry: {rows:?}"));
    let note = beside["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("another owner") && note.contains("not replaced"),
        "{beside}"
    );
    // The user's next version replaces the user's earlier one, announced, and only that one.
    let _ = std::fs::remove_file(&notes);
    let users2 = b"the user's contract, version 2\n";
    std::fs::write(drop.join("contract.pdf"), users2).expect("write");
    let log = run();
    let mut want = vec![
        ("contract.pdf".to_string(), sha_of(theirs)),
        ("contract.pdf".to_string(), sha_of(users2)),
    ];
    want.sort();
    assert_eq!(attached_all(&env.sandbox, &item).await, want, "{log}");
    assert!(log.contains("replaced its earlier version"), "{log}");
    let said = notified(&notes).await;
    assert!(said.contains("replaced"), "{said}");
}

/// Issue 23, item 3 (a mailing mapping's message limit): a file alone over `max_message_size`
/// is refused when it settles, by its size alone: never read (no hash), no draft made, nothing
/// sent; the reason names the file, its size once encoded, the limit and the option to change.
/// The neighbour's sparse file costs a stat, as one over 150 MiB does.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_alone_over_the_message_limit_is_refused_at_settle_unread_and_undrafted() {
    let env = Env::new();
    let drop = shared_folder(&env, "scans");
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"mail\"\nfolder = {}\n[mapping.new_message]\nto = [\"ap@contoso.example\"]\nsubject = \"Scan {{stem}}\"\nbody = \"Attached: {{names}}.\"\nmax_message_size = \"1MB\"\n",
            toml_path(&drop)
        ),
    );
    // 100 MiB: under the attachment limit, far over the message limit.
    sparse(&drop.join("big scan.pdf"), 100 * MIB);
    std::fs::write(drop.join("small.pdf"), "small").expect("write");
    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a refused file: exit 1\n{log}");
    let stats = env.sandbox.stats().await;
    assert_eq!(
        stats["drafts_created"], 1,
        "only small.pdf's draft: {stats}\n{log}"
    );
    let rows = rows(&env);
    let big = rows
        .iter()
        .find(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("big scan.pdf"))
        })
        .unwrap_or_else(|| panic!("big scan.pdf's entry: {rows:?}"));
    assert!(big["sha256"].is_null(), "read before it was refused: {big}");
    assert!(big["message"].is_null(), "{big}");
    assert_eq!(big["error"]["code"], "messageTooLarge", "{big}");
    let why = big["error"]["message"].as_str().unwrap_or_default();
    for part in [
        "big scan.pdf",
        "1.0 MB",
        "max_message_size = 1000000",
        "Mapping \"mail\"",
        "not read",
    ] {
        assert!(why.contains(part), "{part:?} not in: {why}");
    }
    assert!(why.contains("143.5 MB once encoded"), "{why}");
    assert!(log.contains("max_message_size"), "{log}");
}

/// Review of issue 23: a failed file whose name is near the 255-byte limit stayed in the
/// shared folder ("cannot move the failed file to failed_dir: File name too long": its
/// `.reason.txt` name did not fit). It is moved, shortened with its extension kept, its reason
/// file beside it.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_file_with_a_name_near_the_limit_still_goes_to_failed_dir() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    env.write_config(
        "",
        &mapping("drop", &drop, &item, "failed_dir = \"failed\""),
    );
    let name = format!("{}.pdf", "n".repeat(246));
    if !neighbour(&drop, &format!("truncate -s 200M {name}")) {
        return;
    }
    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    assert!(!drop.join(&name).exists(), "left in the folder:\n{log}");
    let moved: Vec<String> = std::fs::read_dir(drop.join("failed"))
        .expect("failed_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(moved.len(), 2, "{moved:?}\n{log}");
    let file = moved
        .iter()
        .find(|n| n.ends_with(".pdf"))
        .unwrap_or_else(|| panic!("{moved:?}"));
    assert!(file.starts_with("nnnn") && file.len() + 11 <= 255, "{file}");
    assert!(moved.contains(&format!("{file}.reason.txt")), "{moved:?}");
}

/// Review of issue 23: a subfolder swapped for a link between the scan seeing it as a folder
/// and listing it was listed through the link (`read_dir` by path): with the neighbour racing
/// `renameat2(RENAME_EXCHANGE)`, a `run --once` observed the 703 files of `/usr/bin`, and a
/// link to `/` in a recursive mapping walks the whole disk. Nothing was read or sent (every
/// later step refuses links), but the scan read folders of the user's outside the mapped one.
/// Now each subfolder is opened beneath the folder with no link on the way and listed through
/// that descriptor. The pause point `scan-subfolder` holds the window open.
#[tokio::test(flavor = "multi_thread")]
async fn a_subfolder_swapped_for_a_link_mid_scan_is_not_listed_through_it() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    let private = env.path("private");
    std::fs::create_dir_all(&private).expect("mkdir");
    chmod(&private, 0o700);
    private_file(&env, "private/secret-name.txt", "the user's secret\n");
    env.write_config("", &mapping("drop", &drop, &item, "recursive = true"));
    if !neighbour(&drop, "mkdir sub && echo mine > sub/mine.txt") {
        return;
    }
    // The swap waits for the scan to pause at the subfolder (a fixed sleep raced a slow start
    // on a loaded machine: the link was then there before the scan saw a folder), and the
    // pause lasts until the swap is made (a fixed 2.5 s pause raced the neighbour's `setpriv`,
    // `mv` and `ln` on a loaded machine: the scan then listed the real folder). The pause's
    // own bound is only for a test that never releases it.
    let log_path = env.path("paused-run.log");
    let release = env.path("release-scan");
    let mut child = env
        .cmd()
        .env(
            "OUTBOX_PAUSE_AT",
            format!("scan-subfolder:{}", (T / 2).as_millis()),
        )
        .env("OUTBOX_PAUSE_RELEASE", &release)
        .env("RUST_LOG", "outbox=trace")
        .args(["run", "--once"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("spawn");
    let paused = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("failpoint scan-subfolder")
    };
    wait_until(T, "the scan paused at the subfolder", || async { paused() }).await;
    let swap = format!("mv sub sub.real && ln -s '{}' sub", private.display());
    assert!(neighbour(&drop, &swap));
    std::fs::write(&release, "").expect("release the scan");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(started.elapsed() < T, "the run did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        log.contains("failpoint scan-subfolder"),
        "never paused:\n{log}"
    );
    assert!(
        !log.contains("secret-name"),
        "the private folder was listed through the link:\n{log}"
    );
    assert!(log.contains("symbolic link"), "{log}");
    assert!(attached(&env.sandbox, &item).await.is_empty());
}

/// Review of issue 23: a read that never returns (a file on a FUSE or network mount a
/// neighbour made in a drop folder; the pause point `hash-read` holds the read for 10 min the
/// same way) kept the agent alive after SIGTERM for as long as the read lasted: the runtime's
/// drop waited for the blocking thread after the agent had checkpointed and closed its ledger.
/// It now exits within 2 s, and the next start attaches the file.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_obeyed_while_a_read_never_returns() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    let sha = write_file(&drop.join("stuck.bin"), MIB, 7);
    env.write_config("", &mapping("drop", &drop, &item, ""));
    let mut agent = Agent::start(&env, &[("OUTBOX_PAUSE_AT", "hash-read:600000")]);
    wait_until(T, "the read held", || async {
        agent.log().contains("failpoint hash-read")
    })
    .await;
    let pid = agent.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = agent.exited() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "still running 2 s after SIGTERM:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}\n{}", agent.log());
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        attached(&env.sandbox, &item).await.get("stuck.bin"),
        Some(&sha)
    );
}

/// Review of issue 23: a mailing folder sent the neighbour's `Invoice_\u{202E}fdp.exe` out of
/// the user's mailbox under that name (Outlook shows "Invoice_exe.pdf"), and a name with
/// newlines as it was, though the letter's subject and body showed both escaped. A mailing
/// mapping's attachment names follow the letter's rule: controls, line separators and bidi
/// controls become U+FFFD.
#[tokio::test(flavor = "multi_thread")]
async fn a_mailed_attachment_name_carries_no_bidi_override_or_line_break() {
    let env = Env::new();
    let drop = shared_folder(&env, "scans");
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"mail\"\nfolder = {}\n[mapping.new_message]\nto = [\"ap@contoso.example\"]\nsubject = \"Scan {{name}}\"\nbody = \"Attached: {{names}}.\"\n",
            toml_path(&drop)
        ),
    );
    let script = "printf a > \"$(printf 'Invoice_\\342\\200\\256fdp.exe')\" && printf b > \"$(printf 'x\\nBcc: evil@example.com.pdf')\"";
    if !neighbour(&drop, script) {
        return;
    }
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    env.sandbox
        .admin(
            reqwest::Method::POST,
            "/sends/deliver",
            Some(serde_json::json!({})),
        )
        .await;
    let sent = env.sandbox.admin(reqwest::Method::GET, "/sent", None).await;
    let mut names: Vec<String> = sent
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .flat_map(|m| m["attachments"].as_array().cloned().unwrap_or_default())
        .map(|a| a["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "Invoice_\u{FFFD}fdp.exe".to_string(),
            "x\u{FFFD}Bcc: evil@example.com.pdf".to_string()
        ]
    );
}

/// A mount made by the test (root), undone when dropped, even when the test fails.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `mount ARGS… at`, or `None` (SKIPPED printed) where this process may not mount.
fn mount(args: &[&str], at: &Path) -> Option<Mounted> {
    std::fs::create_dir_all(at).expect("mkdir");
    let ok = Command::new("mount")
        .args(args)
        .arg(at)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!(
            "SKIPPED: cannot mount here (not root, or no mount rights); the attack needs a mount"
        );
        return None;
    }
    Some(Mounted(at.to_path_buf()))
}

/// Review of issue 23 (Medium): a neighbour who owns a subfolder of a recursive drop folder can
/// mount a file system there (`fusermount` lets them) whose `stat` and reads never answer.
/// A scan and the watcher do not enter a mount point (another device, or a bind mount of the
/// same one): its files are not sent, the log says so once per mount, `status` names it; the
/// mapping's `cross_mounts = true` enters them. (FUSE is not available here: a tmpfs and a bind
/// mount, made as root, stand for the neighbour's mount.)
#[tokio::test(flavor = "multi_thread")]
async fn a_mount_inside_a_recursive_drop_folder_is_not_entered_unless_the_mapping_says_so() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("private.txt"), "the user's own\n").expect("write");
    let Some(_tmpfs) = mount(&["-t", "tmpfs", "none"], &drop.join("usb")) else {
        return;
    };
    let Some(_bind) = mount(&["--bind", &outside.to_string_lossy()], &drop.join("bind")) else {
        return;
    };
    std::fs::write(drop.join("usb/early.txt"), "on the mount\n").expect("write");
    std::fs::create_dir(drop.join("plain")).expect("mkdir");
    std::fs::write(drop.join("plain/ok.txt"), "fine\n").expect("write");
    let config = |extra: &str| {
        env.write_config(
            "",
            &mapping("drop", &drop, &item, &format!("recursive = true\n{extra}")),
        )
    };
    config("");
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    std::fs::write(drop.join("usb/later.txt"), "on the mount, later\n").expect("write");
    std::fs::write(drop.join("plain/late.txt"), "fine, later\n").expect("write");
    wait_until(T, "the plain subfolder's files attached", || async {
        let names = attached(&env.sandbox, &item).await;
        names.contains_key("ok.txt") && names.contains_key("late.txt")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let names = attached(&env.sandbox, &item).await;
    for name in ["early.txt", "later.txt", "private.txt"] {
        assert!(!names.contains_key(name), "{name} sent:\n{}", agent.log());
    }
    assert_eq!(names.len(), 2, "{names:?}");
    // Watches: the folder and plain/ (none on or through a mount).
    let watches = inotify_watches(agent.child.id());
    assert!(watches <= 2, "{watches} inotify watches:\n{}", agent.log());
    let status = stdout(&env.run(&["status"], T));
    for sub in ["usb", "bind"] {
        let shown = drop.join(sub).display().to_string();
        assert!(
            status.contains(&format!("not entered: mapping `drop`: {shown}")),
            "{status}"
        );
        let said = agent
            .log()
            .lines()
            .filter(|l| l.contains("another file system is mounted here") && l.contains(&shown))
            .count();
        assert_eq!(said, 1, "said once per mount:\n{}", agent.log());
    }
    drop_agent(agent);
    // A bad value is refused with the key named.
    config("cross_mounts = \"yes\"");
    let out = env.run(&["check"], T);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stdout(&out).contains("cross_mounts"), "{}", stdout(&out));
    // The mapping that opts in enters both.
    config("cross_mounts = true");
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let names = attached(&env.sandbox, &item).await;
    for name in ["early.txt", "later.txt", "private.txt"] {
        assert!(names.contains_key(name), "{name} not sent: {names:?}");
    }
}

/// Review of issue 23 (Medium): a `stat` that never answers (a file on a neighbour's FUSE mount;
/// the pause point `stat` holds every look at a path containing "hang" for 10 min the same way)
/// ran on the agent's loop and stalled every mapping. Looks and stats run off the loop: the
/// other files of the same folder and of another mapping are attached meanwhile, the stuck
/// path is given up after 3 s (said in the log), and SIGTERM is obeyed within 2 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_stat_that_never_answers_holds_only_its_own_path() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    let other = shared_folder(&env, "other");
    // Found by the start-up scan: the core's settle `Stat` of it hangs.
    std::fs::write(drop.join("hang-early.txt"), "stuck\n").expect("write");
    env.write_config(
        "",
        &(mapping("drop", &drop, &item, "") + &mapping("other", &other, &item, "")),
    );
    let mut agent = Agent::start(&env, &[("OUTBOX_PAUSE_AT", "stat:600000:hang")]);
    agent.watching().await;
    // Seen by the watcher: its look hangs.
    std::fs::write(drop.join("hang-late.txt"), "stuck too\n").expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(drop.join("ok.txt"), "fine\n").expect("write");
    std::fs::write(other.join("b.txt"), "fine too\n").expect("write");
    wait_until(T, "the other files attached", || async {
        let names = attached(&env.sandbox, &item).await;
        names.contains_key("ok.txt") && names.contains_key("b.txt")
    })
    .await;
    wait_until(T, "the stuck looks given up", || async {
        agent.log().matches("has not answered").count() >= 2
    })
    .await;
    // Still alive and taking files after giving up.
    std::fs::write(other.join("c.txt"), "after\n").expect("write");
    wait_until(T, "a file after the give-up attached", || async {
        attached(&env.sandbox, &item).await.contains_key("c.txt")
    })
    .await;
    let pid = agent.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = agent.exited() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "still running 2 s after SIGTERM:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}\n{}", agent.log());
    let names = attached(&env.sandbox, &item).await;
    assert!(!names.contains_key("hang-early.txt") && !names.contains_key("hang-late.txt"));
}

/// The inodes of the folders the process watches (the `ino:` of /proc/PID/fdinfo's inotify
/// lines, in hex).
fn watched_inodes(pid: u32) -> std::collections::HashSet<u64> {
    let mut out = std::collections::HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let text = std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default();
        for l in text.lines().filter(|l| l.starts_with("inotify wd:")) {
            let ino = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("ino:"))
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            out.extend(ino);
        }
    }
    out
}

/// Review of issue 23 (Low): each subfolder of a recursive mapping cost one of the user's
/// inotify watches, so a neighbour's `mkdir` loop could spend `fs.inotify.max_user_watches`
/// for every program of the user's. One mapping watches at most 1,000 folders; the log and
/// `status` say how many are left to the rescan, and a file in an unwatched subfolder is still
/// found by it.
#[tokio::test(flavor = "multi_thread")]
async fn a_neighbours_thousands_of_subfolders_cannot_spend_the_users_inotify_watches() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    if !neighbour(
        &drop,
        "i=0; while [ $i -lt 1010 ]; do mkdir d$i; i=$((i+1)); done",
    ) {
        return;
    }
    env.write_config(
        "rescan = \"2s\"",
        &mapping("drop", &drop, &item, "recursive = true"),
    );
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    let watched = watched_inodes(agent.child.id());
    assert!(
        watched.len() <= 1000,
        "{} inotify watches for one mapping",
        watched.len()
    );
    wait_until(T, "the cap said", || async {
        agent.log().contains("more subfolders than outbox watches")
    })
    .await;
    let status = stdout(&env.run(&["status"], T));
    assert!(
        status.contains("not watched: mapping `drop`: 11 subfolders"),
        "{status}"
    );
    // A file in a subfolder left unwatched is found by the rescan.
    use std::os::unix::fs::MetadataExt;
    let unwatched = (0..1010)
        .map(|i| drop.join(format!("d{i}")))
        .find(|d| !watched.contains(&std::fs::metadata(d).expect("stat").ino()))
        .expect("an unwatched subfolder");
    std::fs::write(unwatched.join("late.txt"), "found by the rescan\n").expect("write");
    wait_until(T, "the unwatched subfolder's file attached", || async {
        attached(&env.sandbox, &item).await.contains_key("late.txt")
    })
    .await;
}

/// Review of issue 23 (Low): with `follow_symlinks = true` a link's version took its target's
/// owner, so a neighbour who swapped the user's `contract.pdf` (in a folder without the sticky
/// bit) for a link to another file of the user's there replaced the user's attachment with it.
/// A version through a link counts as the link owner's when that is not the user: it is added
/// beside the user's, never replacing it.
#[tokio::test(flavor = "multi_thread")]
async fn a_neighbours_link_to_a_file_of_the_users_does_not_replace_the_users_version() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    env.write_config("", &mapping("drop", &drop, &item, "follow_symlinks = true"));
    let contract = b"the user's contract\n";
    std::fs::write(drop.join("contract.pdf"), contract).expect("write");
    std::fs::write(drop.join("draft.pdf"), b"an unsigned draft of the user's\n").expect("write");
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    if !neighbour(&drop, "rm -f contract.pdf && ln -s draft.pdf contract.pdf") {
        return;
    }
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let now = attached_all(&env.sandbox, &item).await;
    assert!(
        now.contains(&("contract.pdf".to_string(), sha_of(contract))),
        "the user's attachment was replaced: {now:?}\n{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("another owner"), "{}", stderr(&out));
}

/// Review of issue 23 (Low): a subfolder created and filled before its watch was added (notify
/// added it on its own thread, after the event) had files no event and no listing saw until
/// the hourly rescan. A new subfolder is now watched by the scan that lists it, just before
/// listing it: what was made before is listed, what is made after is an event. The pause point
/// `scan-subfolder` holds the scan of the new subfolder while files and a deeper folder are
/// made in it; a file made after the scan is seen by the watch it added.
#[tokio::test(flavor = "multi_thread")]
async fn a_subfolder_filled_before_its_watch_is_added_loses_no_file() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    env.write_config("", &mapping("drop", &drop, &item, "recursive = true"));
    // The scan of the new subfolder is held until its files are made (a fixed 1.5 s pause
    // could end first on a loaded machine, and the files were then events: no proof).
    let release = env.path("release-scan");
    let pause = format!("scan-subfolder:{}", (T / 2).as_millis());
    let agent = Agent::start(
        &env,
        &[
            ("OUTBOX_PAUSE_AT", pause.as_str()),
            ("OUTBOX_PAUSE_RELEASE", release.to_str().unwrap()),
        ],
    );
    agent.watching().await;
    std::fs::create_dir(drop.join("new")).expect("mkdir");
    wait_until(T, "the new subfolder's scan held", || async {
        agent.log().contains("failpoint scan-subfolder")
    })
    .await;
    std::fs::write(drop.join("new/a.txt"), "before the watch\n").expect("write");
    std::fs::create_dir(drop.join("new/deep")).expect("mkdir");
    std::fs::write(drop.join("new/deep/b.txt"), "deeper, before\n").expect("write");
    std::fs::write(&release, "").expect("release the scan");
    wait_until(T, "both files attached", || async {
        let names = attached(&env.sandbox, &item).await;
        names.contains_key("a.txt") && names.contains_key("b.txt")
    })
    .await;
    // Watched now: a file made later is an event (the rescan is an hour away).
    tokio::time::sleep(Duration::from_secs(4)).await;
    std::fs::write(drop.join("new/deep/c.txt"), "after\n").expect("write");
    wait_until(T, "the later file attached", || async {
        attached(&env.sandbox, &item).await.contains_key("c.txt")
    })
    .await;
}

/// Review of issue 23 (Medium, the mount): the prune of old entries asked whether each file was
/// still there with a plain `exists()` on the agent's loop, through any mount on the way: a
/// file system mounted over a subfolder since could hold the loop, and, hiding the file, made
/// its entry pruned, so the file was sent again once the mount went. The prune looks beneath
/// the folder crossing no mount point: the entry is kept, the file not sent again.
#[tokio::test(flavor = "multi_thread")]
async fn a_mount_over_a_sent_files_folder_neither_holds_nor_fools_the_prune() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    std::fs::create_dir(drop.join("sub")).expect("mkdir");
    std::fs::write(drop.join("sub/a.txt"), "sent once\n").expect("write");
    env.write_config(
        "keep_done = \"1s\"",
        &mapping("drop", &drop, &item, "recursive = true"),
    );
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(attached(&env.sandbox, &item).await.contains_key("a.txt"));
    let Some(over) = mount(&["-t", "tmpfs", "none"], &drop.join("sub")) else {
        return;
    };
    std::thread::sleep(Duration::from_millis(1_500));
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("pruned"),
        "the hidden file's entry was pruned: {}",
        stderr(&out)
    );
    std::mem::drop(over);
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    // (`attached` fails on a name attached twice.)
    assert_eq!(attached(&env.sandbox, &item).await.len(), 1);
}

/// One line to the running agent's control socket, its one-line answer.
async fn control(env: &Env, line: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut s = tokio::net::UnixStream::connect(env.state_dir().join("agent.sock"))
        .await
        .expect("connect");
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write");
    let mut lines = BufReader::new(s).lines();
    lines.next_line().await.expect("read").unwrap_or_default()
}

/// The watches are the agent's own now (one per folder, dropped when a full scan no longer
/// finds the folder): a renamed subfolder keeps its watch (inotify watches the inode, which its
/// old and new path share), and the full scan after the rename, dropping the old path, leaves
/// it. (Pins the behaviour: notify 8 already forgets a moved folder's old path, so dropping it
/// always did no harm here.)
#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_subfolder_stays_watched_after_a_full_scan() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    std::fs::create_dir(drop.join("a")).expect("mkdir");
    env.write_config("", &mapping("drop", &drop, &item, "recursive = true"));
    let agent = Agent::start(&env, &[("OUTBOX_TEST_HOOKS", "1")]);
    agent.watching().await;
    std::fs::rename(drop.join("a"), drop.join("b")).expect("rename");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A full scan (the rescan an overflow asks for): `a` is gone, `b` is there.
    let out = control(&env, r#"{"op":"overflow"}"#).await;
    assert!(out.contains("\"ok\":true"), "{out}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(inotify_watches(agent.child.id()), 2, "{}", agent.log());
    // Seen by its watch (the next rescan is an hour away).
    std::fs::write(drop.join("b/x.txt"), "in the renamed folder\n").expect("write");
    wait_until(
        Duration::from_secs(20),
        "the file in the renamed folder attached",
        || async { attached(&env.sandbox, &item).await.contains_key("x.txt") },
    )
    .await;
}

/// `outbox retry` of a failed entry looked at its file's path on the agent's loop, through any
/// mount made over its folder since (a neighbour's FUSE mount could hold the agent). The agent
/// asks beneath the folder crossing no mount point, and refuses the retry saying why.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_of_a_file_whose_folder_is_now_a_mount_is_refused_unasked() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    std::fs::create_dir(drop.join("sub")).expect("mkdir");
    std::fs::write(drop.join("sub/a.txt"), "two names\n").expect("write");
    std::fs::hard_link(drop.join("sub/a.txt"), drop.join("sub/b.txt")).expect("link");
    env.write_config("", &mapping("drop", &drop, &item, "recursive = true"));
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let id = rows(&env)
        .iter()
        .find(|r| r["state"] == "failed")
        .and_then(|r| r["id"].as_str().map(str::to_owned))
        .expect("a failed entry");
    let Some(_over) = mount(&["-t", "tmpfs", "none"], &drop.join("sub")) else {
        return;
    };
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    let out = env.run(&["retry", &id], T);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another file system (a mount point)"),
        "{}",
        stderr(&out)
    );
    drop_agent(agent);
}

/// Review 2026-12-07, finding 1: a neighbour who can write the drop folder's parent (a team
/// folder the group writes) renames the folder away and puts a link of theirs in its place,
/// pointing at a folder of the user's: the agent followed the folder's own path through it and
/// attached (with `after = "delete"`: deleted) the user's private files.
#[tokio::test(flavor = "multi_thread")]
async fn a_neighbours_link_in_place_of_the_mapped_folder_is_not_followed() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let team = shared_folder(&env, "team");
    let drop = team.join("drop");
    std::fs::create_dir(&drop).expect("mkdir");
    chmod(&drop, 0o777);
    let private = env.path("home/private");
    let secret = private_file(&env, "home/private/secret.txt", "the user's secret");
    chmod(&env.path("home"), 0o700);
    env.write_config("", &mapping("drop", &drop, &item, "after = \"delete\""));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    if !neighbour(&team, "echo hi > drop/hello.txt") {
        return;
    }
    wait_until(T, "hello.txt attached", || async {
        attached(&env.sandbox, &item)
            .await
            .contains_key("hello.txt")
    })
    .await;
    let swap = format!("mv drop drop.old && ln -s '{}' drop", private.display());
    assert!(neighbour(&team, &swap));
    // The user's files go on being written in their own folder meanwhile.
    std::fs::write(private.join("later.txt"), "written later by the user").expect("write");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names: Vec<String> = attached(&env.sandbox, &item).await.into_keys().collect();
    assert_eq!(names, vec!["hello.txt".to_string()], "{}", agent.log());
    assert!(secret.exists() && private.join("later.txt").exists());
    // `status` says why the folder is not used; a full scan refuses it too.
    let status = env.run(&["status"], T);
    assert!(
        stdout(&status).contains("belongs to another user"),
        "{}",
        stdout(&status)
    );
    drop_agent(agent);
    let out = env.run(&["run", "--once"], T);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("belongs to another user"),
        "{}",
        stderr(&out)
    );
    assert!(!attached(&env.sandbox, &item)
        .await
        .contains_key("secret.txt"));
    assert!(secret.exists());
    // A link of the user's own (here root's, as the user) is followed as before.
    std::fs::remove_file(&drop).expect("rm link");
    std::os::unix::fs::symlink(team.join("drop.old"), &drop).expect("ln");
    std::fs::write(team.join("drop.old/mine.txt"), "the user's drop").expect("write");
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(attached(&env.sandbox, &item).await.contains_key("mine.txt"));
}

/// Review 2026-12-07, finding 2: the sandbox listens on 127.0.0.1, which every local user can
/// reach. Another user read, through its admin and Graph APIs, the files the user had sent to
/// it (`outbox demo`'s folders take the user's own files), the issued tokens and the client
/// secret. A connection from another user (root aside) is now closed unanswered.
#[tokio::test(flavor = "multi_thread")]
async fn another_local_user_cannot_read_the_sandboxs_attachments_or_tokens() {
    if Command::new("curl").arg("--version").output().is_err() {
        println!("SKIPPED: no curl to play the other user's client with");
        return;
    }
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let demo = env.path("demo");
    std::fs::create_dir_all(&demo).expect("mkdir");
    std::fs::write(demo.join("payslip.txt"), "the user's payslip").expect("write");
    env.write_config("", &mapping("demo", &demo, &item, ""));
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let loot = shared_folder(&env, "loot");
    let o = &env.sandbox.origin;
    let it = urlenc(&item);
    let script = format!(
        "curl -s --max-time 10 '{o}/_admin/tokens/issued' > issued; \
         curl -s --max-time 10 '{o}/_admin/items/{it}/attachments' > listed; \
         curl -s --max-time 10 -H 'Authorization: Bearer {TOKEN}' '{o}/v1.0/me/messages/{it}/attachments' > graph; true"
    );
    if !neighbour(&loot, &script) {
        return;
    }
    for (name, forbidden) in [
        ("issued", "client_secret"),
        ("listed", "payslip"),
        ("graph", "payslip"),
    ] {
        let got = std::fs::read_to_string(loot.join(name)).unwrap_or_default();
        assert!(!got.contains(forbidden), "{name}: {got}");
    }
    // The user's own requests are served as before.
    assert!(attached(&env.sandbox, &item)
        .await
        .contains_key("payslip.txt"));
}

/// Review 2026-12-07, finding 3: only the state dir's (and the config's) own parent was
/// checked. In a folder of the user's inside one others can write, or in a sticky folder that
/// another user owns (the owner of a sticky folder may rename anything in it), the neighbour
/// could swap the folder above the state dir for one of theirs while the agent runs, and
/// receive the token cache and the upload URLs it writes by path. Every folder on the way is
/// checked now.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_dir_or_config_below_a_folder_others_control_is_refused() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    std::fs::create_dir_all(&drop).expect("mkdir");
    let config = env.write_config("", &mapping("drop", &drop, &item, ""));
    let shared = env.path("shared");
    std::fs::create_dir_all(shared.join("mine")).expect("mkdir");
    chmod(&shared, 0o777);
    chmod(&shared.join("mine"), 0o700);
    let with_state = |dir: &Path| {
        let cfg: Vec<String> = std::fs::read_to_string(&config)
            .expect("cfg")
            .lines()
            .map(|l| {
                if l.starts_with("state_dir = ") {
                    format!("state_dir = '{}'", dir.display())
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(&config, cfg.join("\n")).expect("cfg");
    };
    with_state(&shared.join("mine/state"));
    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("above it"), "{log}");
    assert!(!shared.join("mine/state/ledger").exists(), "{log}");
    // A sticky folder another user owns (as `nobody` may make one in /tmp).
    let theirs = env.path("theirs");
    std::fs::create_dir_all(&theirs).expect("mkdir");
    chmod(&theirs, 0o1777);
    if !neighbour(env.dir.path(), "true") {
        return;
    }
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
    with_state(&theirs.join("state"));
    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("belongs to another user (uid 65534)"), "{log}");
    // The config in a folder of the user's inside a folder others can write.
    with_state(&env.state_dir());
    let moved = shared.join("mine/config.toml");
    std::fs::copy(&config, &moved).expect("cp");
    let out = run_bounded(
        env.cmd()
            .env("OUTBOX_CONFIG", &moved)
            .args(["run", "--once"]),
        T,
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{log}");
    assert!(log.contains("above it"), "{log}");
    // Where they are the user's all the way, the same config runs.
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Review 2026-12-07, finding 4: `outbox sandbox --data-dir /tmp/sb`, where a neighbour made
/// `/tmp/sb` first as a link to a folder of the user's: the sandbox tightened the link's
/// target to 0700 and wrote its journal, blobs and sessions there. A data dir that is a link, or
/// another user's folder, is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_refuses_a_data_dir_that_is_a_link_or_another_users() {
    let env = Env::new();
    let shared = shared_folder(&env, "tmp");
    let target = env.path("home/work");
    std::fs::create_dir_all(&target).expect("mkdir");
    chmod(&target, 0o755);
    std::fs::write(target.join("state.journal"), "the user's own journal\n").expect("write");
    let plant = format!("ln -s '{}' sb && mkdir theirs", target.display());
    if !neighbour(&shared, &plant) {
        return;
    }
    for (dir, why) in [
        (shared.join("sb"), "symbolic link"),
        (shared.join("theirs"), "belongs to another user"),
    ] {
        let out = run_bounded(
            Command::new(bin())
                .args(["sandbox", "--port", "0", "--data-dir"])
                .arg(&dir),
            Duration::from_secs(20),
        );
        assert!(!out.status.success(), "{}", stdout(&out));
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }
    let mode = std::fs::metadata(&target)
        .expect("meta")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o755);
    let names: Vec<_> = std::fs::read_dir(&target)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("state.journal")]);
    assert_eq!(
        std::fs::read_to_string(target.join("state.journal")).expect("read"),
        "the user's own journal\n"
    );
}

/// Review 2026-12-07, finding 10: a `sent_dir` outside the mapped folder was made with
/// `create_dir_all` by its path before the owner-checked open refused the neighbour's link on
/// it: folders were made where the link led (a folder of the user's). What is missing is now
/// made beneath the deepest folder reached without another user's link.
#[tokio::test(flavor = "multi_thread")]
async fn a_sent_dir_outside_the_folder_is_not_made_through_a_neighbours_link() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = shared_folder(&env, "drop");
    let shared = shared_folder(&env, "shared");
    let home = env.path("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    let plant = format!("ln -s '{}' archive", home.display());
    if !neighbour(&shared, &plant) {
        return;
    }
    let sent = shared.join("archive/sent");
    env.write_config(
        "",
        &mapping(
            "drop",
            &drop,
            &item,
            &format!("after = \"move\"\nsent_dir = '{}'", sent.display()),
        ),
    );
    std::fs::write(drop.join("a.txt"), "a").expect("write");
    let out = env.run(&["run", "--once"], T);
    assert!(attached(&env.sandbox, &item).await.contains_key("a.txt"));
    assert!(!home.join("sent").exists(), "{}", stderr(&out));
    assert!(drop.join("a.txt").exists());
    // A path of the user's own, missing folders and all, is made and used.
    let mine = env.path("mine/archive/sent");
    env.write_config(
        "",
        &mapping(
            "drop",
            &drop,
            &item,
            &format!("after = \"move\"\nsent_dir = '{}'", mine.display()),
        ),
    );
    std::fs::write(drop.join("b.txt"), "b").expect("write");
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(mine.join("b.txt").exists(), "{}", stderr(&out));
}

/// Review 2026-12-07, finding 13: `outbox demo` run in a folder others can write (a throw-away
/// try in /tmp): a neighbour who made `outbox-demo/mail/` first, with a link at the sample's
/// temp name (`.invoice 2026-0042.pdf.part`) to a file of the user's, had the demo write its
/// sample bytes over that file. The demo now refuses folders that are not the user's, and
/// creates its temp files new (never through a link).
#[tokio::test(flavor = "multi_thread")]
async fn outbox_demo_in_a_shared_folder_cannot_be_made_to_write_over_a_users_file() {
    let env = Env::new();
    let shared = env.path("tmp");
    std::fs::create_dir_all(&shared).expect("mkdir");
    chmod(env.dir.path(), 0o755);
    chmod(&shared, 0o1777);
    let victim = private_file(&env, "home/.bashrc", "the user's shell setup\n");
    let plant = format!(
        "mkdir -p outbox-demo/mail outbox-demo/attach && chmod -R 777 outbox-demo && \
         ln -s '{}' 'outbox-demo/mail/.invoice 2026-0042.pdf.part'",
        victim.display()
    );
    if !neighbour(&shared, &plant) {
        return;
    }
    let out = run_bounded(
        Command::new(bin())
            .args(["demo", "--exit-after", "1"])
            .current_dir(&shared),
        Duration::from_secs(40),
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read"),
        "the user's shell setup\n",
        "{}",
        stdout(&out)
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("is not a folder of yours"),
        "{}",
        stderr(&out)
    );
}

/// Review 2026-12-07, finding 8: in a team share the group writes without the sticky bit, the
/// neighbour renamed the mapped folder away and another folder of the user's (a private one
/// beside `drop`) into its place: a real folder of the user's, which no link check sees, and
/// its files were attached. A mapped folder's path leading to another folder of the user's
/// than the agent found there, in a parent others can rename entries in, is refused until a
/// reload.
#[tokio::test(flavor = "multi_thread")]
async fn another_folder_of_the_users_renamed_into_the_mapped_folders_place_is_not_used() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let team = shared_folder(&env, "team");
    let drop = team.join("drop");
    std::fs::create_dir(&drop).expect("mkdir");
    chmod(&drop, 0o777);
    let private = team.join("mine");
    std::fs::create_dir(&private).expect("mkdir");
    std::fs::write(private.join("secret.txt"), "the user's secret").expect("write");
    chmod(&private, 0o700);
    // A rescan every second: the folder at the path is looked at again whatever events came.
    env.write_config("rescan = \"1s\"", &mapping("drop", &drop, &item, ""));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    if !neighbour(&team, "echo hi > drop/hello.txt") {
        return;
    }
    wait_until(T, "hello.txt attached", || async {
        attached(&env.sandbox, &item)
            .await
            .contains_key("hello.txt")
    })
    .await;
    assert!(neighbour(&team, "mv drop drop.old && mv mine drop"));
    std::fs::write(drop.join("later.txt"), "written later by the user").expect("write");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names: Vec<String> = attached(&env.sandbox, &item).await.into_keys().collect();
    assert_eq!(names, vec!["hello.txt".to_string()], "{}", agent.log());
    // A reload takes the folder as it is now (the user's doing, say).
    let pid = agent.child.id();
    let _ = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status();
    wait_until(T, "secret.txt attached after the reload", || async {
        attached(&env.sandbox, &item)
            .await
            .contains_key("secret.txt")
    })
    .await;
    drop_agent(agent);
}
