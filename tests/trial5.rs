//! What the fifth trial of issue 22 (2026-12-07, docs/trial-2026-12-07-5.md) met outside
//! mailing and the pacing, each failing before its fix: a version attached again with
//! `if_exists = "attach"`, `retry --failed` of untouched hard links, verify's fix for a missing
//! attachment, the log of files found already attached, the count of links not followed,
//! `send --name`, `resume` with nothing paused. Real binary, real ledger in a temp dir, the
//! sandbox on loopback.

use crate::common::*;
use std::path::Path;
use std::time::Duration;

fn mapping(folder: &Path, item: &str, extra: &str) -> String {
    format!(
        "[[mapping]]\nname = \"m\"\nfolder = {}\nmessage = \"{item}\"\n{extra}\n",
        toml_path(folder)
    )
}

/// `status --json` rows.
fn rows(env: &Env) -> Vec<serde_json::Value> {
    let out = env.run(&["status", "--json"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().clone()
}

fn run_once(env: &Env) -> std::process::Output {
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    out
}

/// G7: with `if_exists = "attach"`, `on_change = "add"` and `after = "delete"`, the bytes of
/// version A dropped again after version B are the version already on the item (SPEC §3: a
/// file version is attached once): not attached a second time, and the log says it was found
/// there, not that it was attached.
#[tokio::test(flavor = "multi_thread")]
async fn with_attach_and_add_a_version_dropped_again_after_another_is_not_attached_twice() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("adds");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &mapping(
            &folder,
            &item,
            "if_exists = \"attach\"\non_change = \"add\"\nafter = \"delete\"",
        ),
    );
    let doc = folder.join("doc.txt");
    for bytes in ["v1\n", "v2\n"] {
        std::fs::write(&doc, bytes).unwrap();
        let out = run_once(&env);
        assert!(!doc.exists(), "not deleted: {}", stderr(&out));
    }
    std::fs::write(&doc, "v1\n").unwrap();
    let out = run_once(&env);
    let err = stderr(&out);
    assert!(!doc.exists(), "not deleted: {err}");
    let on_item = env.sandbox.attachments(&item).await;
    assert_eq!(on_item.len(), 2, "{on_item:#?}\n{err}");
    assert_eq!(env.sandbox.stats().await["duplicate_attachments"], 0);
    assert!(err.contains("already on the item"), "{err}");
    let all = rows(&env);
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(all.iter().all(|r| r["state"] == "done"), "{all:#?}");
}
