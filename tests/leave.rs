//! A file never leaves a message silently (issue 20, item 4 and "A message never loses a file
//! silently"): a failed file's move into `failed_dir` is the core's action, on record; `retry`
//! takes it back from there or refuses and says why; a file that leaves a message re-renders
//! its letter, and the log says so. And (issue 21) the bytes sent are the bytes hashed when a
//! piece of an upload session is read twice. Real binary, real ledger, the sandbox on loopback.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);
const TO: &str = "ap@contoso.example";

/// `status --json`, by file name.
fn rows(env: &Env) -> HashMap<String, Value> {
    let out = env.run(&["status", "--json"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("status json");
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let name = Path::new(r["path"].as_str().unwrap_or_default())
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, r.clone())
        })
        .collect()
}

/// Issue 21, item 1: a piece of an upload session read again through the same descriptor (the
/// upload server took nothing and asks for the same bytes again) after the file was edited in
/// place between the two reads. The edited piece must not go out under the first version's
/// hash: the upload stops (`Changed`) and the new version is sent, so no record says done with
/// bytes that were not the bytes sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_piece_read_again_is_hashed_again_and_an_edit_between_the_two_reads_is_never_sent() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).expect("mkdir");
    env.write_config(
        "chunk_size = \"1MiB\"",
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            folder.display()
        ),
    );
    let file = folder.join("big.bin");
    let first = write_file(&file, 3 * MIB + 5, 3);
    // The upload server takes nothing of the first piece and asks for it again: it is read
    // a second time through the same descriptor.
    env.sandbox
        .faults(json!({"upload_misbehaves": "stuck"}))
        .await;
    let log = env.path("once.log");
    let mut child = env
        .cmd()
        .args(["run", "--once"])
        .env("OUTBOX_PAUSE_AT", "before-chunk:1500")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let pauses = |n: usize| {
        let log = log.clone();
        async move {
            let start = Instant::now();
            loop {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                if said.matches("failpoint before-chunk: pausing").count() >= n {
                    return;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "never {n} pieces read:\n{said}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    pauses(1).await;
    {
        // Inside the first piece, after it was read: the same size, the same inode, the same
        // modification time (a sync client writing in place and putting the time back).
        use std::io::{Seek, SeekFrom, Write};
        let t = std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .expect("mtime");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open for the edit");
        f.seek(SeekFrom::Start(100)).expect("seek");
        f.write_all(&[0xEE; 16]).expect("edit in place");
        f.sync_all().expect("sync");
        f.set_modified(t).expect("set mtime");
    }
    // The next piece read (the first again, or the new version's first): the server keeps
    // the protocol from now on.
    pauses(2).await;
    env.sandbox.faults(json!({"upload_misbehaves": null})).await;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(start.elapsed() < T, "run --once did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "run --once: {said}");
    let now = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&file).expect("read")))
    };
    let on_item = attached(&env.sandbox, &item).await;
    assert_eq!(
        on_item.get("big.bin"),
        Some(&now),
        "the attachment holds the file as it is now:\n{said}"
    );
    // No version is recorded done under the first version's hash: those bytes were never
    // all sent (the edited piece went instead), so a record saying so would be a lie that a
    // later replace only hides.
    let out = env.run(&["status", "--json"], T);
    let all: Value = serde_json::from_slice(&out.stdout).expect("status json");
    let all = all.as_array().cloned().unwrap_or_default();
    assert!(
        !all.iter()
            .any(|r| r["state"] == "done" && r["sha256"].as_str() == Some(first.as_str())),
        "a version is recorded done with the hash of bytes that were not sent: {all:#?}\n{said}"
    );
    assert!(
        all.iter()
            .any(|r| r["state"] == "done" && r["sha256"].as_str() == Some(now.as_str())),
        "{all:#?}"
    );
}

/// Every message in the sandbox's Sent Items, once every accepted send has moved there.
async fn sent(env: &Env) -> Vec<Value> {
    env.sandbox
        .admin(reqwest::Method::POST, "/sends/deliver", Some(json!({})))
        .await;
    let v = env.sandbox.admin(reqwest::Method::GET, "/sent", None).await;
    v.as_array().cloned().unwrap_or_default()
}

/// A batch mapping of `scans/` with `failed_dir = "failed"`; `a.pdf` and `b.pdf` dropped, and
/// the first attachment POST refused (400): one file fails, so the message fails, and the failed
/// file moves to `failed_dir`. Returns the folder and (name of the failed file, of the other).
async fn a_batch_with_a_failed_file(env: &Env) -> (PathBuf, String, String) {
    a_batch_with_a_failed_file_and(env, "").await
}

/// [`a_batch_with_a_failed_file`], with `agent_extra` in the config's `[agent]`.
async fn a_batch_with_a_failed_file_and(env: &Env, agent_extra: &str) -> (PathBuf, String, String) {
    let folder = env.path("scans");
    std::fs::create_dir_all(&folder).expect("mkdir");
    env.write_config(
        agent_extra,
        &format!(
            "[[mapping]]\nname = \"mail\"\nfolder = '{}'\nfailed_dir = \"failed\"\n[mapping.new_message]\nto = [\"{TO}\"]\nsubject = \"Scans: {{names}}\"\nbody = \"Attached: {{names}}.\"\ngroup = \"batch\"\nbatch_quiet = \"1s\"\n",
            folder.display()
        ),
    );
    write_file(&folder.join("a.pdf"), 9_000, 1);
    write_file(&folder.join("b.pdf"), 9_000, 2);
    env.sandbox
        .faults(json!({"fail_next": [{"route": "post", "status": 400, "code": "ErrorInvalidAttachment"}]}))
        .await;
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = rows(env);
    let failed = ["a.pdf", "b.pdf"]
        .into_iter()
        .find(|n| r[*n]["state"] == "failed")
        .unwrap_or_else(|| panic!("one file failed: {r:#?}"))
        .to_string();
    let other = if failed == "a.pdf" { "b.pdf" } else { "a.pdf" }.to_string();
    assert_eq!(r[&other]["state"], "done", "{r:#?}");
    assert_eq!(r[&failed]["message"]["state"], "failed", "{r:#?}");
    assert!(
        folder.join("failed").join(&failed).exists(),
        "moved to failed_dir"
    );
    assert!(!folder.join(&failed).exists());
    assert!(sent(env).await.is_empty(), "nothing sent yet");
    (folder, failed, other)
}

/// Issue 20, item 4: `retry --failed` (what the exit line advises) of a message whose failed
/// file is in `failed_dir` found the file gone, canceled it, and sent the batch without it,
/// exit 0, no warning; subject and body still named it. Now the retry takes the file back from
/// `failed_dir` (the core knows where it moved it), and the message goes with both files.
#[tokio::test(flavor = "multi_thread")]
async fn retry_failed_takes_a_file_of_a_failed_message_back_from_failed_dir_and_sends_it_with_it() {
    let env = Env::new();
    let (folder, failed, other) = a_batch_with_a_failed_file(&env).await;
    let r = rows(&env);
    assert!(
        r[&failed]["note"].as_str().is_some_and(|n| n.contains(
            &std::path::Path::new("failed")
                .join(&failed)
                .display()
                .to_string()
        ) && n.contains("outbox retry")),
        "the ledger knows where the file is: {:#?}",
        r[&failed]
    );
    let out = env.run(&["retry", "--failed"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sent = sent(&env).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let mut names: Vec<&str> = sent[0]["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, vec!["a.pdf", "b.pdf"], "{sent:#?}");
    assert!(folder.join(&failed).exists(), "back beneath the folder");
    assert!(!folder.join("failed").join(&failed).exists());
    assert!(
        !folder
            .join("failed")
            .join(format!("{failed}.reason.txt"))
            .exists(),
        "its reason file went with it"
    );
    let r = rows(&env);
    assert_eq!(r[&failed]["state"], "done", "{r:#?}");
    assert_eq!(r[&other]["state"], "done", "{r:#?}");
    assert!(
        !r[&failed]["note"]
            .as_str()
            .unwrap_or_default()
            .contains("failed_dir"),
        "{r:#?}"
    );
}

/// Issue 21 (prune in the simulation, seed 35): prune took the entry of a failed file of a
/// failed message once `keep_done` had passed, since the file was gone from its path (in
/// `failed_dir`), though the message, waiting for `retry`, still named it. An entry a message
/// that is not over names is kept (`core::prune::held`): the row stays, and `retry --failed`
/// sends the message with both files.
#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_the_entry_of_a_failed_file_its_failed_message_still_names() {
    let env = Env::new();
    let (folder, failed, other) =
        a_batch_with_a_failed_file_and(&env, "keep_done = \"1s\"\nremember_sent = \"0s\"").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Start-up prunes what is older than `keep_done` and gone from its path.
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = rows(&env);
    assert!(r.contains_key(&failed), "the entry stays: {r:#?}");
    assert_eq!(r[&failed]["state"], "failed", "{r:#?}");
    assert_eq!(r[&failed]["message"]["state"], "failed", "{r:#?}");
    let out = env.run(&["retry", "--failed"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sent = sent(&env).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let mut names: Vec<&str> = sent[0]["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, vec!["a.pdf", "b.pdf"], "{sent:#?}");
    assert!(folder.join(&failed).exists() && folder.join(&other).exists());
}

/// A file that leaves a message before it is sent makes its letter again (SPEC 8, issue 20):
/// one of a batch of two fails (moved to `failed_dir`), the user cancels it and retries the
/// message. The message goes with the other file alone, its subject and body name that file
/// only (the draft, made naming both, is set again), and the log says which file left.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_leaves_a_message_is_not_named_in_the_letter_sent_and_the_log_says_it_left() {
    let env = Env::new();
    let (_folder, failed, other) = a_batch_with_a_failed_file(&env).await;
    let r = rows(&env);
    let (fid, mid) = (
        r[&failed]["id"].as_str().expect("id").to_string(),
        r[&failed]["message"]["id"]
            .as_str()
            .expect("message")
            .to_string(),
    );
    let out = env.run(&["cancel", &fid], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["retry", &mid], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    let sent = sent(&env).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let m = &sent[0];
    let names: Vec<&str> = m["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, vec![other.as_str()], "{m:#}");
    assert_eq!(m["subject"], json!(format!("Scans: {other}")), "{m:#}");
    assert_eq!(m["body"], json!(format!("Attached: {other}.")), "{m:#}");
    assert!(
        log.contains(&failed) && log.contains("left the message before it was sent"),
        "{log}"
    );
}

/// A failed message whose failed file is gone from `failed_dir` (deleted by hand) is never
/// sent without it: `retry` of it is refused, naming the file, where it was and what to do;
/// `retry --failed` leaves it and says why; nothing is sent.
#[tokio::test(flavor = "multi_thread")]
async fn retry_of_a_message_whose_failed_file_left_failed_dir_is_refused_and_says_why() {
    let env = Env::new();
    let (folder, failed, _other) = a_batch_with_a_failed_file(&env).await;
    let r = rows(&env);
    let (fid, mid) = (
        r[&failed]["id"].as_str().expect("id").to_string(),
        r[&failed]["message"]["id"]
            .as_str()
            .expect("message")
            .to_string(),
    );
    std::fs::remove_file(folder.join("failed").join(&failed)).expect("rm");
    let out = env.run(&["retry", &mid], T);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}\n{err}", stdout(&out));
    assert!(
        err.contains(&format!("message {mid} is not retried"))
            && err.contains("no longer where outbox moved it")
            && err.contains(&format!("outbox cancel {fid}")),
        "{err}"
    );
    let out = env.run(&["retry", "--failed"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&format!("{fid}  not retried")) && !said.contains(&mid),
        "{said}"
    );
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(sent(&env).await.is_empty(), "never sent without its file");
}
