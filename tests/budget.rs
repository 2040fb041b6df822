//! The mailbox's upload budget (`mailbox_upload_bytes`) as a user meets it (the fifth trial of
//! issue 22, G1, G2, G3, G9): a file held back by it says so in `status`, with until when; the
//! files that fit the window go on while a file larger than the whole budget waits for its turn;
//! `cancel` of a file that waits there lands at once; `run --once` stopped while a file waits
//! names it. Real binary, real ledger in a temp dir, the sandbox on loopback.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// A file over the session threshold (3 MiB) and over the tests' whole budget (1 MB).
const BIG: u64 = 3 * 1024 * 1024 + 512 * 1024;

fn two_mappings(meeting: &Path, reports: &Path, item: &str) -> String {
    format!(
        "[[mapping]]\nname = \"meeting\"\nfolder = {}\nmessage = \"{item}\"\n\n\
         [[mapping]]\nname = \"reports\"\nfolder = {}\nmessage = \"{item}\"\n",
        toml_path(meeting),
        toml_path(reports)
    )
}

/// `status --json`'s row of the file named `name`, if any.
fn row(env: &Env, name: &str) -> Option<Value> {
    let out = env.run(&["status", "--json"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"].as_str().is_some_and(|p| p.ends_with(name)))
        .cloned()
}

/// Fills most of the window: a file of 600 KB goes by one POST (about 800 KB of base64).
async fn fill_the_window(env: &Env, folder: &Path, item: &str) {
    write_file(&folder.join("first.bin"), 600_000, 1);
    wait_until(Duration::from_secs(30), "first.bin attached", || async {
        attached(&env.sandbox, item).await.contains_key("first.bin")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_held_by_the_upload_budget_says_so_lets_small_files_by_and_cancels_at_once() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let (meeting, reports) = (env.path("meeting"), env.path("reports"));
    std::fs::create_dir_all(&meeting).unwrap();
    std::fs::create_dir_all(&reports).unwrap();
    env.write_config(
        "mailbox_upload_bytes = \"1MB/15s\"",
        &two_mappings(&meeting, &reports, &item),
    );
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    fill_the_window(&env, &meeting, &item).await;

    // G1: a file larger than the whole budget waits for its turn, and its row says so. (Each
    // item's failure is gathered, so a run before the fixes shows all of them.)
    let mut wrong = Vec::new();
    write_file(&meeting.join("big.bin"), BIG, 2);
    wait_until(Duration::from_secs(10), "big.bin held back", || async {
        agent
            .log()
            .contains("larger than the mailbox upload budget waits")
    })
    .await;
    let big = row(&env, "big.bin").unwrap();
    let note = big["note"].as_str().unwrap_or_default();
    if big["waiting_for"] != "upload-budget"
        || !big["waiting_until"].is_string()
        || !(note.contains("mailbox_upload_bytes") && note.contains(" UTC (in "))
    {
        wrong.push(format!("G1: its row does not say it waits: {big:#}"));
    }
    assert_eq!(big["state"], "uploading", "{big:#}");
    assert_eq!(big["bytes_sent"], 0, "{big:#}");
    let table = stdout(&env.run(&["status"], Duration::from_secs(30)));
    let line = table
        .lines()
        .find(|l| l.contains("big.bin"))
        .unwrap_or_else(|| panic!("{table}"));
    if !(line.contains("waiting") && line.contains("mailbox_upload_bytes")) {
        wrong.push(format!("G1: the table does not say it waits: {line}"));
    }
    let id = big["id"].as_str().unwrap().to_owned();
    // The log's line names the entry that waits.
    assert!(
        agent
            .log()
            .lines()
            .any(|l| l.contains("larger than the mailbox upload budget waits") && l.contains(&id)),
        "{}",
        agent.log()
    );

    // G2: a 6-byte file of another mapping fits the window's room: it goes now, not after the
    // big file's turn (15 s after the first file).
    std::fs::write(reports.join("small.txt"), "small\n").unwrap();
    let dropped = Instant::now();
    while !attached(&env.sandbox, &item)
        .await
        .contains_key("small.txt")
        && dropped.elapsed() < Duration::from_secs(8)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !attached(&env.sandbox, &item)
        .await
        .contains_key("small.txt")
    {
        wrong.push("G2: small.txt was not attached within 8 s of its drop".to_owned());
    }
    assert!(!attached(&env.sandbox, &item).await.contains_key("big.bin"));

    // G3: nothing of it is in flight: the cancel lands at once, and says so.
    let out = env.run(&["cancel", &id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    if !said.contains("canceled") || said.contains("cancel asked") {
        wrong.push(format!("G3: cancel said {said}"));
    }
    let big = row(&env, "big.bin").unwrap();
    if big["state"] != "canceled" || !big["waiting_for"].is_null() {
        wrong.push(format!("G3: after the cancel: {big:#}"));
    }
    assert!(wrong.is_empty(), "{wrong:#?}\n{}", agent.log());
    let stats = env.sandbox.stats().await;
    assert_eq!(stats["sessions_created"], 0, "{stats}");

    // Retried, it waits for its turn again and then goes: the small files did not keep it.
    let out = env.run(&["retry", &id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_until(Duration::from_secs(40), "big.bin attached", || async {
        attached(&env.sandbox, &item).await.contains_key("big.bin")
    })
    .await;

    // Now the window is full (big.bin's 3.5 MiB for 15 s): a small file waits for room, its
    // row says so, the header says the mailbox is held back, and its cancel lands at once too.
    std::fs::write(reports.join("late.txt"), "late\n").unwrap();
    let mut late = None;
    let start = Instant::now();
    while late.is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", agent.log());
        late = row(&env, "late.txt").filter(|r| r["waiting_for"] == "upload-budget");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = late.unwrap();
    let note = late["note"].as_str().unwrap_or_default();
    assert!(note.contains("the window is full; sends at "), "{late:#}");
    let table = stdout(&env.run(&["status"], Duration::from_secs(30)));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("paused: held back by the mailbox's upload budget")),
        "{table}"
    );
    let out = env.run(
        &["cancel", late["id"].as_str().unwrap()],
        Duration::from_secs(30),
    );
    let said = stdout(&out);
    assert!(
        said.contains("canceled") && !said.contains("cancel asked"),
        "{said}"
    );
    assert_eq!(row(&env, "late.txt").unwrap()["state"], "canceled");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!attached(&env.sandbox, &item).await.contains_key("late.txt"));
    agent.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn run_once_stopped_while_a_file_waits_for_the_budget_names_it() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let (meeting, reports) = (env.path("meeting"), env.path("reports"));
    std::fs::create_dir_all(&meeting).unwrap();
    std::fs::create_dir_all(&reports).unwrap();
    env.write_config(
        "mailbox_upload_bytes = \"1MB/60s\"",
        &two_mappings(&meeting, &reports, &item),
    );
    // Two files larger than the whole budget: whichever goes second waits a minute for the
    // first to leave the window.
    write_file(&meeting.join("big1.bin"), BIG, 1);
    write_file(&reports.join("big2.bin"), BIG, 2);
    let log = env.path("once.log");
    let mut once = env
        .cmd()
        .args(["run", "--once"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "a file waiting", || async {
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        err.contains("larger than the mailbox upload budget waits") && err.contains(" attached ")
    })
    .await;
    terminate(once.id());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = once.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "run --once did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "something is not attached:\n{err}");
    let summary = err
        .lines()
        .find(|l| l.contains("not attached:"))
        .unwrap_or_else(|| panic!("no summary:\n{err}"));
    assert!(
        summary.contains("1 not attached yet when the run stopped")
            && summary.contains("`outbox status`"),
        "{summary}"
    );
    // The log names the file and what it waited for.
    assert!(
        err.lines()
            .any(|l| l.contains("stopped before these were attached")
                && l.contains("waiting for upload-budget until")),
        "{err}"
    );
}

/// G3's sibling: a cancel of a file waiting out a throttle (nothing of it in flight either) said
/// "its request in flight"; it says what it waits for, and that the cancel lands when that ends.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_of_a_file_waiting_out_a_throttle_says_it_lands_when_the_wait_ends() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let (meeting, reports) = (env.path("meeting"), env.path("reports"));
    std::fs::create_dir_all(&meeting).unwrap();
    std::fs::create_dir_all(&reports).unwrap();
    env.write_config("", &two_mappings(&meeting, &reports, &item));
    env.sandbox
        .faults(serde_json::json!({"fail_next": [
            {"route": "post", "status": 429, "retry_after": 30}
        ]}))
        .await;
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    std::fs::write(meeting.join("a.txt"), "a\n").unwrap();
    wait_until(Duration::from_secs(20), "a.txt throttled", || async {
        row(&env, "a.txt").is_some_and(|r| r["waiting_for"] == "throttled")
    })
    .await;
    let id = row(&env, "a.txt").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = env.run(&["cancel", &id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains("cancel asked: it stops once this wait is over")
            && said.contains("throttled by Graph")
            && !said.contains("in flight"),
        "{said}"
    );
    let a = row(&env, "a.txt").unwrap();
    let note = a["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("cancel asked: it stops once this wait is over")
            && note.contains(" UTC (in "),
        "{a:#}"
    );
    agent.stop();
}
