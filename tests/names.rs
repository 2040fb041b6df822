//! File names that are not UTF-8 (Unix paths are bytes: a scanner or an SMB share makes them):
//! the agent stores them losslessly, attaches them under a faithful lossy name, shows them in
//! `status` and `status --json` with a lossless escape, moves them after sending, and never exits
//! over one of them.

use crate::common::*;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

const T: Duration = Duration::from_secs(300);

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
async fn a_file_name_that_is_not_utf8_is_attached_under_a_lossy_name_and_kept_losslessly() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("scans");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"scans\"\nfolder = '{}'\nmessage = \"{item}\"\nafter = \"move\"\nrecursive = true\n",
            folder.display()
        ),
    );
    let bad = folder.join(OsStr::from_bytes(b"bad\xffbyte.txt"));
    let bad_sha = write_file(&bad, 100, 7);
    let good_sha = write_file(&folder.join("good.txt"), 50, 8);
    // A subfolder whose name is not UTF-8, and a name taken in sent_dir (the move adds ` (1)`).
    let inner = folder.join(OsStr::from_bytes(b"sub\xfe")).join("inner.txt");
    let inner_sha = write_file(&inner, 30, 9);
    write_file(
        &folder
            .join("sent")
            .join(OsStr::from_bytes(b"bad\xffbyte.txt")),
        5,
        10,
    );
    let out = env.run(&["run", "--once"], T);
    assert!(
        out.status.success(),
        "run --once must not die over a name: {}",
        stderr(&out)
    );
    let got = attached(&env.sandbox, &item).await;
    assert_eq!(got.get("good.txt"), Some(&good_sha), "{got:?}");
    assert_eq!(got.get("bad\u{FFFD}byte.txt"), Some(&bad_sha), "{got:?}");
    assert_eq!(got.get("inner.txt"), Some(&inner_sha), "{got:?}");
    // Moved to sent_dir under its own bytes, the taken name suffixed.
    assert!(!bad.exists());
    assert!(!inner.exists());
    assert!(
        folder
            .join("sent")
            .join(OsStr::from_bytes(b"bad\xffbyte (1).txt"))
            .exists(),
        "{:?}",
        std::fs::read_dir(folder.join("sent"))
            .unwrap()
            .collect::<Vec<_>>()
    );
    // A restart reads the ledger back: nothing is sent again, nothing dies.
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "second start: {}", stderr(&out));
    assert_eq!(env.sandbox.attachments(&item).await.len(), 3);
    // `status --json`: the lossy text and the exact bytes (hex) of the path.
    let rows = status_json(&env);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let row = rows
        .iter()
        .find(|r| r["path"].as_str().unwrap_or_default().ends_with("byte.txt"))
        .expect("the non-UTF-8 row");
    assert_eq!(row["state"], json!("done"));
    assert_eq!(
        row["path_bytes"],
        json!(hex::encode(bad.as_os_str().as_bytes())),
        "{row}"
    );
    let plain = rows
        .iter()
        .find(|r| r["path"].as_str().unwrap_or_default().ends_with("good.txt"))
        .unwrap();
    assert_eq!(
        plain["path_bytes"],
        json!(null),
        "only when not UTF-8: {plain}"
    );
    // `verify --all --json` (trial 6, G13: it panicked, exit 101, nothing on stdout): every
    // row, the lossy text in `file`, the exact bytes in `file_bytes`.
    let out = env.run(&["verify", "--all", "--json"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let checked: Value = serde_json::from_str(&stdout(&out)).expect("verify json");
    let rows_v = checked.as_array().cloned().unwrap_or_default();
    assert_eq!(rows_v.len(), 3, "{checked}");
    assert!(
        rows_v.iter().any(
            |r| r["file_bytes"] == json!(hex::encode(bad.as_os_str().as_bytes()))
                && r["result"] == json!("ok")
        ),
        "{checked}"
    );
    // The table shows the name escaped.
    let out = env.run(&["status"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("bad\\xffbyte.txt"),
        "{}",
        stdout(&out)
    );
    // The same through a running agent's control socket.
    let agent = Agent::start(&env, &[]);
    wait_until(T, "the agent watching", || async {
        agent.log().contains("watching")
    })
    .await;
    let out = env.run(&["status", "--json"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let via_agent: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        via_agent
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["path_bytes"] == row["path_bytes"] && r["agent_pid"].is_number()),
        "{via_agent}"
    );
    assert!(agent.stop().success());
}

/// Whatever makes one entry fail to encode, that file fails with a reason and the agent goes
/// on: it never exits over one file (a debug-build hook stands in for a name the ledger cannot
/// store, now that every name can be stored).
#[tokio::test(flavor = "multi_thread")]
async fn an_entry_the_ledger_refuses_fails_that_file_alone() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = '{}'\nmessage = \"{item}\"\nfailed_dir = \"failed\"\n",
            folder.display()
        ),
    );
    write_file(&folder.join("poison.txt"), 100, 1);
    let ok = write_file(&folder.join("ok.txt"), 100, 2);
    let big = write_file(&folder.join("big.bin"), 4 * MIB, 3);
    let out = run_bounded(
        env.cmd()
            .args(["run", "--once"])
            .env("OUTBOX_REFUSE_ENTRY", "poison"),
        T,
    );
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(!said.contains("invalid ledger operation"), "{said}");
    assert!(
        said.lines().any(|l| l.contains("ERROR")
            && l.contains("poison.txt")
            && l.contains("cannot be written to the ledger")),
        "{said}"
    );
    let got = attached(&env.sandbox, &item).await;
    assert_eq!(got.get("ok.txt"), Some(&ok));
    assert_eq!(got.get("big.bin"), Some(&big));
    assert!(
        !got.contains_key("poison.txt"),
        "never sent without its record"
    );
    // Moved aside with its reason, like any failed file.
    let reason =
        std::fs::read_to_string(folder.join("failed/poison.txt.reason.txt")).expect("reason file");
    assert!(reason.contains("notRecorded"), "{reason}");
    // The next start goes on as usual.
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
