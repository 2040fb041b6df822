//! What the fifth trial of issue 22 (2026-12-07, docs/trial-2026-12-07-5.md) met outside
//! mailing and the pacing, each failing before its fix: a version attached again with
//! `if_exists = "attach"`, `retry --failed` of untouched hard links, verify's fix for a missing
//! attachment, the log of files found already attached, the count of links not followed,
//! `send --name`, `resume` with nothing paused. Real binary, real ledger in a temp dir, the
//! sandbox on loopback.

use crate::common::*;
use std::time::Duration;

use crate::trial::{mapping, rows};

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

/// G8: the item a done file went to is deleted (a user deleting the draft in Outlook). Verify
/// says the item is gone (not "the attachment is no longer on its item") and names the fix: a
/// mapping naming an item that is there, then the file at its path, then `outbox retry ID`.
/// Done as said (with `after = "delete"`, the file put back is a copy: another inode and
/// times, the same bytes), the retry is taken (it was refused: "has changed since it was
/// attached") and the file is attached to the new draft.
#[tokio::test(flavor = "multi_thread")]
async fn verify_of_a_deleted_item_says_so_and_its_fix_works_as_printed() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("adds");
    std::fs::create_dir_all(&folder).unwrap();
    let doc = folder.join("doc.txt");
    let sha = write_file(&doc, 3000, 7);
    let bytes = std::fs::read(&doc).unwrap();
    env.write_config("", &mapping(&folder, &item, "after = \"delete\""));
    run_once(&env);
    assert!(!doc.exists());
    let id = rows(&env)[0]["id"].as_str().unwrap().to_string();
    env.sandbox.delete_item(&item).await;

    let out = env.run(&["verify", "--all"], Duration::from_secs(30));
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}\n{}", stderr(&out));
    assert!(said.starts_with("MISSING"), "{said}");
    assert!(
        said.contains("its message is no longer there")
            && said.contains("mapping `m`")
            && said.contains(&format!("`outbox retry {id}`")),
        "{said}"
    );
    assert!(
        !said.contains("the attachment is no longer on its item"),
        "{said}"
    );

    // As printed: another draft for the mapping, the file back at its path, then retry.
    let fresh = env.sandbox.create_item("message", "me").await;
    env.write_config("", &mapping(&folder, &fresh, "after = \"delete\""));
    std::fs::write(&doc, &bytes).unwrap();
    let out = env.run(&["retry", &id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    run_once(&env);
    let on_item = attached(&env.sandbox, &fresh).await;
    assert_eq!(on_item.get("doc.txt"), Some(&sha), "{on_item:?}");
    let all = rows(&env);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["state"], "done", "{all:#?}");

    // Good on the new draft.
    let out = env.run(&["verify", &id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// G5: after a lost state dir (`if_exists = "skip"`), the files already on their item are found
/// there by a look and not sent again; the log says so ("already on the item ... not attached
/// again") for each, and not `attached`, as it says of an upload: a journal read after a
/// restore does not tell of files sent again that were not.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_lost_state_dir_files_found_on_the_item_are_not_logged_as_attached() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    write_file(&folder.join("small.txt"), 2_000, 1);
    // Over 3 MiB: one sent by an upload session, found the same way.
    write_file(&folder.join("large.bin"), 4 << 20, 2);
    env.write_config("", &mapping(&folder, &item, ""));
    let first = stderr(&run_once(&env));
    assert_eq!(
        first.matches("outbox::agent: attached").count(),
        2,
        "{first}"
    );
    assert_eq!(env.sandbox.attachments(&item).await.len(), 2);

    // The state dir lost (the token comes from the environment: nothing else to keep).
    std::fs::rename(env.state_dir(), env.path("state-lost")).unwrap();
    let again = stderr(&run_once(&env));
    assert!(!again.contains("outbox::agent: attached"), "{again}");
    for name in ["small.txt", "large.bin"] {
        let line = again
            .lines()
            .find(|l| l.contains("already on the item") && l.contains(name))
            .unwrap_or_else(|| panic!("no 'already on the item' line for {name}:\n{again}"));
        assert!(line.contains("not attached again"), "{line}");
    }
    assert_eq!(env.sandbox.attachments(&item).await.len(), 2);
    assert_eq!(env.sandbox.stats().await["duplicate_attachments"], 0);
    let all = rows(&env);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all.iter().all(|r| r["state"] == "done"), "{all:#?}");
}

/// G10: `outbox send --name` with a newline: the attachment is named with `�` for it, and the
/// line on stderr names it so (it printed the newline raw, a line of its own output made by a
/// name); `--name ""` is a usage error naming --name, before any request (it went to Graph and
/// failed 400, exit 1).
#[tokio::test(flavor = "multi_thread")]
async fn send_names_the_attachment_as_it_is_on_the_item_and_refuses_an_empty_name() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    env.write_config("", "");
    let file = env.path("s1.txt");
    write_file(&file, 3, 1);
    let f = file.to_str().unwrap();
    let out = env.run(
        &[
            "send",
            f,
            "--message",
            &item,
            "--name",
            "dir/evil\nname.txt",
        ],
        Duration::from_secs(30),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let on_item = attached(&env.sandbox, &item).await;
    assert!(
        on_item.contains_key("dir/evil\u{fffd}name.txt"),
        "{on_item:?}"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("attached "))
        .unwrap_or_else(|| panic!("no 'attached' line: {err}"));
    assert!(
        line.starts_with("attached dir/evil\u{fffd}name.txt (3 B) to message "),
        "{err}"
    );

    let before = env.sandbox.stats().await["requests"].clone();
    let out = env.run(
        &["send", f, "--message", &item, "--name", ""],
        Duration::from_secs(30),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--name is empty") && err.contains("leave --name out"),
        "{err}"
    );
    assert_eq!(env.sandbox.stats().await["requests"], before);
    assert_eq!(env.sandbox.attachments(&item).await.len(), 1);
}

/// G11: `outbox resume` with nothing paused said "resumed: every mapping; new files are taken
/// again ...", twice in a row: a user checking whether a pause was in force learnt nothing.
/// It says nothing was paused (exit 0), of every mapping and of one; a real resume still says
/// it resumed, and a second one that nothing was paused.
#[tokio::test(flavor = "multi_thread")]
async fn resume_with_nothing_paused_says_nothing_was_paused() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config("", &mapping(&folder, &item, ""));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    let t = Duration::from_secs(30);
    for (args, said) in [
        (
            &["resume"][..],
            "nothing was paused: every mapping takes new files already",
        ),
        (
            &["resume", "m"][..],
            "nothing was paused: mapping m takes new files already",
        ),
    ] {
        let out = env.run(args, t);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim(), said, "{args:?}");
    }
    let out = env.run(&["pause"], t);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["resume"], t);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("resumed: every mapping"),
        "{}",
        stdout(&out)
    );
    let out = env.run(&["resume"], t);
    assert!(
        stdout(&out).starts_with("nothing was paused"),
        "{}",
        stdout(&out)
    );
}

/// G6: two links dropped one after the other while the agent runs: the log said "1 symbolic
/// link not sent" once and never the second, while `status` counted 2. The log says it again
/// when there are more, with the count `status` gives.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn the_log_counts_links_not_sent_as_status_does_when_more_are_dropped() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("meeting");
    std::fs::create_dir_all(&folder).unwrap();
    write_file(&folder.join("top.txt"), 4, 1);
    env.write_config("", &mapping(&folder, &item, ""));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    let t = Duration::from_secs(20);
    std::os::unix::fs::symlink("/etc/passwd", folder.join("link-out")).unwrap();
    wait_until(t, "the first link said", || async {
        agent.log().contains("1 symbolic link not sent")
    })
    .await;
    std::os::unix::fs::symlink("top.txt", folder.join("link-in")).unwrap();
    wait_until(t, "the log to count 2 links", || async {
        agent.log().contains("2 symbolic links not sent")
    })
    .await;
    let so = stdout(&env.run(&["status"], Duration::from_secs(30)));
    assert!(
        so.contains("skipped: mapping `m`: 2 symbolic links not sent"),
        "{so}"
    );
    // Said once each: not again while the count stays.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = agent.log();
    assert_eq!(log.matches("symbolic link not sent").count(), 1, "{log}");
    assert_eq!(log.matches("symbolic links not sent").count(), 1, "{log}");
}
