//! Mailing a folder (`[mapping.new_message]`, SPEC: Sending) through the real binary against the
//! sandbox: every file (or batch) ends as exactly one sent message holding exactly its bytes,
//! whatever is lost or crashed on the way. The sandbox's admin API lists what was sent (with
//! each attachment's SHA-256) and counts `duplicate_sends`, which must stay 0 everywhere.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);
const TO: &str = "ap@contoso.example";

/// A mailing mapping of `folder` with `new_message` lines `extra` (and mapping lines `lines`).
fn mapping(folder: &Path, lines: &str, extra: &str) -> String {
    format!(
        "[[mapping]]\nname = \"mail\"\nfolder = \"{}\"\n{lines}\n[mapping.new_message]\nto = [\"{TO}\"]\nsubject = \"Scan {{stem}}\"\nbody = \"Attached: {{names}}.\"\n{extra}\n",
        folder.display()
    )
}

fn setup(env: &Env, agent: &str, lines: &str, extra: &str) -> PathBuf {
    let folder = env.path("scans");
    std::fs::create_dir_all(&folder).expect("mkdir");
    env.write_config(agent, &mapping(&folder, lines, extra));
    folder
}

/// Every message in the sandbox's Sent Items, once every accepted send has moved there.
async fn sent(env: &Env) -> Vec<Value> {
    env.sandbox
        .admin(reqwest::Method::POST, "/sends/deliver", Some(json!({})))
        .await;
    let v = env.sandbox.admin(reqwest::Method::GET, "/sent", None).await;
    v.as_array().cloned().unwrap_or_default()
}

/// subject -> (attachment name -> sha256) of the sent messages, asserting no subject twice.
fn by_subject(sent: &[Value]) -> BTreeMap<String, HashMap<String, String>> {
    let mut out = BTreeMap::new();
    for m in sent {
        let subject = m["subject"].as_str().unwrap_or_default().to_string();
        let atts: HashMap<String, String> = m["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["name"].as_str().unwrap_or_default().to_string(),
                    a["sha256"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert!(
            out.insert(subject.clone(), atts).is_none(),
            "{subject} was sent twice: {sent:#?}"
        );
    }
    out
}

async fn no_duplicates(env: &Env, what: &str) -> Value {
    let stats = env.sandbox.stats().await;
    assert_eq!(stats["duplicate_sends"], json!(0), "{what}: {stats}");
    stats
}

fn status_json(env: &Env) -> Vec<Value> {
    let out = env.run(&["status", "--json"], T);
    assert!(out.status.success(), "status: {}", stderr(&out));
    serde_json::from_str::<Value>(&stdout(&out))
        .expect("status json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// One message per file: 3 files -> 3 sent messages, each with exactly its file's bytes, to the
/// template's recipient; the files move to `sent_dir` only once their message went.
#[tokio::test(flavor = "multi_thread")]
async fn per_file_mapping_sends_one_message_per_file_then_moves_it() {
    let env = Env::new();
    let folder = setup(&env, "", "after = \"move\"", "");
    let mut want = BTreeMap::new();
    for (i, size) in [10_000u64, 4 * MIB + 7, 0].into_iter().enumerate() {
        let name = format!("page{i}.pdf");
        let sha = write_file(&folder.join(&name), size, i as u64 + 1);
        want.insert(
            format!("Scan page{i}"),
            HashMap::from([(name.clone(), sha)]),
        );
    }
    let out = env.run(&["run", "--once"], T);
    assert!(out.status.success(), "run --once: {}", stderr(&out));
    let sent = sent(&env).await;
    assert_eq!(by_subject(&sent), want);
    for m in &sent {
        assert_eq!(m["to"], json!([TO]), "{m}");
        assert!(
            m["body"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Attached: page"),
            "{m}"
        );
    }
    no_duplicates(&env, "per file").await;
    for i in 0..3 {
        assert!(folder.join(format!("sent/page{i}.pdf")).exists());
        assert!(!folder.join(format!("page{i}.pdf")).exists());
    }
    // status --json: every entry is done and names its sent message.
    let rows = status_json(&env);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    for r in &rows {
        assert_eq!(r["state"], "done", "{r}");
        assert_eq!(r["message"]["state"], "sent", "{r}");
        assert_eq!(r["message"]["to"], json!([TO]), "{r}");
        assert!(r["message"]["internet_message_id"].is_string(), "{r}");
        assert!(r["message"]["sent_at"].is_string(), "{r}");
    }
}
