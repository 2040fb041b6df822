//! `outbox pause [MAPPING] [--for DURATION]` / `outbox resume [MAPPING]` (issue 22, item 12):
//! the running agent takes no new file from the paused folders, says so in `status` (table and
//! `--json`), stays up, and takes the files dropped meanwhile when it resumes, by `resume` or at
//! the end of `--for`. With no agent, both say so and exit 1.

use crate::common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn json_rows(env: &Env) -> Vec<serde_json::Value> {
    let out = env.run(&["status", "--json"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("status --json")
}

fn row<'a>(rows: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    rows.iter()
        .find(|r| r["path"].as_str().is_some_and(|p| p.ends_with(name)))
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_holds_new_files_of_a_mapping_until_resume_and_for_resumes_by_itself() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let (a, b) = (env.path("a"), env.path("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"a\"\nfolder = {}\nmessage = \"{item}\"\n\n\
             [[mapping]]\nname = \"b\"\nfolder = {}\nmessage = \"{item}\"\n",
            toml_path(&a),
            toml_path(&b)
        ),
    );

    // No agent: nothing to pause or resume, said so, exit 1.
    for args in [&["pause"][..], &["pause", "a", "--for", "1m"], &["resume"]] {
        let out = env.run(args, T);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("no agent is running"), "{args:?}: {err}");
        assert!(err.contains("`outbox run`"), "{args:?}: {err}");
    }
    // Bad --for: refused before anything is asked.
    let out = env.run(&["pause", "--for", "0s"], T);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--for"), "{}", stderr(&out));

    let mut agent = Agent::start(&env, &[]);
    agent.watching().await;
    let pid = agent.child.id();

    let out = env.run(&["pause", "nope"], T);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no mapping named `nope`") && stderr(&out).contains("a, b"),
        "{}",
        stderr(&out)
    );

    let out = env.run(&["pause", "a"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("paused: mapping a by `outbox pause`, until `outbox resume a`"),
        "{}",
        stdout(&out)
    );

    // A file of the paused mapping waits in its folder; the other mapping goes on.
    let sha_x = write_file(&a.join("x.txt"), 1000, 1);
    let sha_y = write_file(&b.join("y.txt"), 1000, 2);
    wait_until(T, "y.txt attached", || async {
        attached(&env.sandbox, &item).await.contains_key("y.txt")
    })
    .await;
    wait_until(T, "x.txt listed as paused", || async {
        row(&json_rows(&env), "x.txt").is_some_and(|r| r["waiting_for"] == "paused")
    })
    .await;
    let rows = json_rows(&env);
    let x = row(&rows, "x.txt").unwrap();
    assert_eq!(x["mapping"], "a", "{x}");
    assert_eq!(x["agent_pid"], pid, "{x}");
    assert!(x["waiting_until"].is_null(), "{x}");
    assert!(
        x["note"].as_str().unwrap().contains("`outbox resume`"),
        "{x}"
    );
    let table = stdout(&env.run(&["status"], T));
    assert!(
        table.contains("paused: mapping a by `outbox pause`, until `outbox resume a`; takes no new file (1 file left waiting in its folder)"),
        "{table}"
    );
    // Well past its settle time, still not taken.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !attached(&env.sandbox, &item).await.contains_key("x.txt"),
        "a paused mapping's file was attached"
    );
    assert!(agent.exited().is_none(), "the agent stopped");

    let out = env.run(&["resume", "a"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("resumed: mapping a"),
        "{}",
        stdout(&out)
    );
    wait_until(T, "x.txt attached after resume", || async {
        attached(&env.sandbox, &item).await.contains_key("x.txt")
    })
    .await;
    let table = stdout(&env.run(&["status"], T));
    assert!(!table.contains("paused"), "{table}");

    // Every mapping, for 3 s: held, then taken without a resume.
    let out = env.run(&["pause", "--for", "3s"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("paused: every mapping by `outbox pause`, resumes by itself at "),
        "{}",
        stdout(&out)
    );
    let sha_z = write_file(&b.join("z.txt"), 1000, 3);
    wait_until(T, "z.txt listed as paused", || async {
        row(&json_rows(&env), "z.txt").is_some_and(|r| r["waiting_for"] == "paused")
    })
    .await;
    let rows = json_rows(&env);
    assert!(
        row(&rows, "z.txt").unwrap()["waiting_until"].is_string(),
        "{rows:?}"
    );
    assert!(!attached(&env.sandbox, &item).await.contains_key("z.txt"));
    wait_until(T, "z.txt attached once the pause ran out", || async {
        attached(&env.sandbox, &item).await.contains_key("z.txt")
    })
    .await;

    let on = attached(&env.sandbox, &item).await;
    assert_eq!(on.get("x.txt"), Some(&sha_x));
    assert_eq!(on.get("y.txt"), Some(&sha_y));
    assert_eq!(on.get("z.txt"), Some(&sha_z));
    assert_eq!(on.len(), 3, "{on:?}");
    let log = agent.log();
    assert!(log.contains("paused by `outbox pause`"), "{log}");
    assert!(log.contains("resumed"), "{log}");
    assert_eq!(agent.stop().code(), Some(0));
}
