//! What the last trial of issue 22 ("Tell the truth, round 3") met outside mailing, each
//! failing before its fix: verify over a replaced version, `retry --failed` of a file outbox
//! moved into `failed_dir`, a reason file's advice, what `status` says of a superseded version,
//! a paused file's id, a config's permissions beside its syntax error, `check`'s layout over a
//! config that does not parse, which config a running agent read, control characters in an
//! attachment's name, drafts in `items messages`. Real binary, real ledger in a temp dir, the
//! sandbox on loopback.

use crate::common::*;
use std::path::Path;
use std::time::Duration;

/// One `[[mapping]]` named `m` from `folder` to message `item` (shared with `trial5`).
pub(crate) fn mapping(folder: &Path, item: &str, extra: &str) -> String {
    format!(
        "[[mapping]]\nname = \"m\"\nfolder = {}\nmessage = \"{item}\"\n{extra}\n",
        toml_path(folder)
    )
}

/// `status --json` rows.
pub(crate) fn rows(env: &Env) -> Vec<serde_json::Value> {
    let out = env.run(&["status", "--json"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().clone()
}

/// Trial 2: a version `on_change = "replace"` replaced has no attachment on purpose: verify
/// says it was replaced, by which entry, and does not count it as a problem.
#[tokio::test(flavor = "multi_thread")]
async fn verify_says_a_replaced_version_was_replaced_and_passes() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    write_file(&folder.join("a.bin"), 10_000, 1);
    env.write_config("", &mapping(&folder, &item, "on_change = \"replace\""));
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    write_file(&folder.join("a.bin"), 12_000, 2);
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(attached(&env.sandbox, &item).await.len(), 1);
    let all = rows(&env);
    assert_eq!(all.len(), 2, "{all:?}");
    let newer = all.iter().find(|r| r["size"] == 12_000).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let older = all.iter().find(|r| r["size"] == 10_000).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Its status row says so too.
    let old_row = all.iter().find(|r| r["id"] == older.as_str()).unwrap();
    assert!(
        old_row["note"]
            .as_str()
            .unwrap_or_default()
            .contains("replaced by a newer version"),
        "{old_row}"
    );

    let out = env.run(&["verify", "--all"], Duration::from_secs(60));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{}", stderr(&out));
    let old_line = so
        .lines()
        .find(|l| l.contains(&older))
        .unwrap_or_else(|| panic!("{so}"));
    assert!(
        old_line.starts_with("replaced") && old_line.contains(&newer),
        "{so}"
    );
    assert!(!old_line.contains("outbox retry"), "{so}");
    assert!(so.contains("0 with problems"), "{so}");
    // The one entry alone too, and --json says so as data.
    let out = env.run(&["verify", &older], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = env.run(&["verify", "--all", "--json"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == older.as_str())
        .unwrap()
        .clone();
    assert_eq!(r["result"], "replaced", "{v}");
}

/// Trial 3: `retry --failed` takes back the files outbox itself moved into `failed_dir` (a
/// file mapping: its item was wrong, then fixed in the config), sends them, and their reason
/// files go with them; one the user moved back by hand loses its reason file too.
#[tokio::test(flavor = "multi_thread")]
async fn retry_failed_takes_files_back_from_failed_dir_and_their_reason_files_go() {
    let env = Env::new();
    let gone = env.sandbox.create_item("message", "me").await;
    env.sandbox.delete_item(&gone).await;
    let folder = env.path("in");
    let failed = env.path("in/failed");
    write_file(&folder.join("a.txt"), 100, 1);
    write_file(&folder.join("b.txt"), 200, 2);
    env.write_config("", &mapping(&folder, &gone, "failed_dir = \"failed\""));
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // Its summary: files outbox moved to failed_dir are retried from there, not "gone".
    let summary = stderr(&out)
        .lines()
        .find(|l| l.contains("not attached:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        summary.contains("2 failed") && summary.contains("`outbox retry --failed`"),
        "{summary}"
    );
    assert!(!summary.contains("no longer at its path"), "{summary}");
    for n in ["a.txt", "b.txt"] {
        assert!(failed.join(n).exists(), "{n} moved to failed_dir");
        assert!(
            failed.join(format!("{n}.reason.txt")).exists(),
            "{n}'s reason"
        );
    }
    // b.txt put back by hand; its reason file left in failed_dir.
    std::fs::rename(failed.join("b.txt"), folder.join("b.txt")).unwrap();
    let item = env.sandbox.create_item("message", "me").await;
    env.write_config("", &mapping(&folder, &item, "failed_dir = \"failed\""));
    let out = env.run(&["retry", "--failed"], Duration::from_secs(30));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{}", stderr(&out));
    assert_eq!(
        so.matches("queued again").count(),
        2,
        "{so}\n{}",
        stderr(&out)
    );
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let on_item = attached(&env.sandbox, &item).await;
    assert_eq!(on_item.len(), 2, "{on_item:?}");
    for n in ["a.txt", "b.txt"] {
        assert!(folder.join(n).exists(), "{n} is back in its folder");
        assert!(!failed.join(n).exists(), "{n} left failed_dir");
        assert!(
            !failed.join(format!("{n}.reason.txt")).exists(),
            "{n}'s reason file stays in failed_dir after it was sent"
        );
    }
}

/// Wait (bounded) until the agent's log says `text` at least `n` times.
async fn said(agent: &Agent, text: &str, n: usize) {
    let start = std::time::Instant::now();
    while agent.log().matches(text).count() < n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never said {text:?} {n} times:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Trial 5: a version a newer one superseded before it was attached is `canceled`, and its
/// row says why (a newer version took its place), in the table and in `--json`'s note; a done
/// version `on_change = "replace"` replaced says so too.
#[tokio::test(flavor = "multi_thread")]
async fn a_superseded_version_says_a_newer_one_took_its_place() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    let file = folder.join("big.bin");
    write_file(&file, 8 * MIB + 5, 3);
    env.write_config("", &mapping(&folder, &item, ""));
    let agent = Agent::start(&env, &[("OUTBOX_PAUSE_AT", "before-chunk:1500")]);
    said(&agent, "failpoint before-chunk: pausing", 1).await;
    // A new version while the first is on its way.
    let newer = write_file(&file, 3 * MIB + 7, 4);
    wait_until(
        Duration::from_secs(90),
        "the newer version attached",
        || async { attached(&env.sandbox, &item).await.get("big.bin") == Some(&newer) },
    )
    .await;
    let all = rows(&env);
    assert_eq!(all.len(), 2, "{all:#?}");
    let old = all.iter().find(|r| r["size"] == 8 * MIB + 5).unwrap();
    assert_eq!(old["state"], "canceled", "{all:#?}");
    let note = old["note"].as_str().unwrap_or_default();
    assert!(note.contains("newer version"), "{old}");
    let out = env.run(&["status"], Duration::from_secs(30));
    let table = stdout(&out);
    let line = table
        .lines()
        .find(|l| l.contains(old["id"].as_str().unwrap()))
        .unwrap();
    assert!(line.contains("newer version"), "{table}");
    drop(agent);
}

/// Trial 4: a file over 150 MiB moved to `failed_dir` is never sent as it is: its reason file,
/// its status row and the log line of its move give advice that works (split or compress it;
/// `outbox cancel` clears it), never a `retry` that is then refused, nor a link outbox does not
/// make.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_over_150_mib_is_never_advised_a_retry_that_is_refused() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("big");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config("", &mapping(&folder, &item, "failed_dir = \"failed\""));
    // Sparse: its size counts, its bytes are never written.
    let f = std::fs::File::create(folder.join("huge.iso")).unwrap();
    f.set_len(150 * MIB + 1).unwrap();
    drop(f);
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = stderr(&out);
    let moved_line = log
        .lines()
        .find(|l| l.contains("moved to failed_dir"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(!moved_line.contains("retry"), "{moved_line}");
    assert!(
        !log.contains("a link"),
        "outbox makes no link for it: {log}"
    );
    let reason =
        std::fs::read_to_string(folder.join("failed").join("huge.iso.reason.txt")).unwrap();
    assert!(!reason.contains("outbox retry"), "{reason}");
    assert!(!reason.contains("a link"), "{reason}");
    assert!(
        reason.to_lowercase().contains("split") && reason.contains("outbox cancel"),
        "{reason}"
    );
    let row = rows(&env).remove(0);
    assert_eq!(row["state"], "rejected");
    let note = row["note"].as_str().unwrap_or_default();
    assert!(!note.contains("outbox retry"), "{row}");
    // What it advises works: `outbox cancel ID` clears it; a retry is refused, saying why.
    let id = row["id"].as_str().unwrap();
    let out = env.run(&["retry", id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("150 MiB"), "{}", stderr(&out));
    let out = env.run(&["cancel", id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Trial 6: a file `outbox pause` leaves in its folder has no ledger entry yet; `status` showed
/// it an id that changed at `outbox resume` (and that no command took). It shows none until
/// the agent takes the file (`-` in the table, `null` in `--json`); then the entry's id stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_file_shows_no_id_until_it_has_an_entry() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("a");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config("", &mapping(&folder, &item, ""));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    let out = env.run(&["pause"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    write_file(&folder.join("x.txt"), 1000, 1);
    wait_until(
        Duration::from_secs(30),
        "x.txt listed as paused",
        || async { rows(&env).iter().any(|r| r["waiting_for"] == "paused") },
    )
    .await;
    let row = rows(&env).remove(0);
    assert!(row["id"].is_null(), "{row}");
    let table = stdout(&env.run(&["status"], Duration::from_secs(30)));
    let line = table
        .lines()
        .find(|l| l.contains("x.txt"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.starts_with("- "), "{table}");
    let out = env.run(&["resume"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_until(Duration::from_secs(30), "x.txt attached", || async {
        attached(&env.sandbox, &item).await.contains_key("x.txt")
    })
    .await;
    let row = rows(&env).remove(0);
    assert_eq!(row["state"], "done", "{row}");
    assert!(row["id"].as_str().is_some_and(|i| !i.is_empty()), "{row}");
    drop(agent);
}

/// A config that does not parse (an unclosed string on line 3), with `mode`.
#[cfg(unix)]
fn broken_config(env: &Env, mode: u32, mappings: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let cfg = env.write_config("", mappings);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen("[auth]", "[auth]\nbroken = \"oops\n", 1),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(mode)).unwrap();
    cfg
}

/// Trial 7: a config others can write is refused for it even when its text does not parse
/// too: the permission problem first, then the syntax error, for every command, for `service
/// install` (which would install a service that exits 78 at every login), and for a running
/// agent's reload.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_config_others_can_write_is_refused_for_it_even_when_it_does_not_parse() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("in");
    std::fs::create_dir_all(&folder).unwrap();
    let maps = mapping(&folder, &item, "");
    broken_config(&env, 0o666, &maps);
    for args in [&["status"][..], &["run", "--once"], &["retry", "--failed"]] {
        let out = env.run(args, Duration::from_secs(30));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {err}");
        let (perm, syntax) = (
            err.find("other users can write the config"),
            err.find("auth.broken"),
        );
        assert!(
            perm.is_some() && syntax.is_some() && perm < syntax,
            "{args:?}: the permissions first, then the syntax error: {err}"
        );
        assert!(err.contains("chmod go-w"), "{args:?}: {err}");
    }
    // Parsing, but others can write it: `service install` refuses it up front.
    let cfg = env.write_config("", &maps);
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = env.run(
        &["service", "install", "--dry-run", "--platform", "linux"],
        Duration::from_secs(30),
    );
    assert!(
        stderr(&out).contains("other users can write the config"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );

    // A running agent's reload: refused, saying both.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    broken_config(&env, 0o666, &maps);
    terminate_hup(agent.child.id());
    let start = std::time::Instant::now();
    while !agent.log().contains("the new configuration is refused") {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", agent.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("the new configuration is refused"))
        .unwrap();
    assert!(
        line.contains("other users can write the config") && line.contains("auth.broken"),
        "{line}"
    );
    drop(agent);
}

#[cfg(unix)]
fn terminate_hup(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status();
}

/// Trial 8: `outbox check` over a config that does not load prints its findings in its usual
/// layout (`error  config: ...`), one line per problem, exit 78; a missing file too.
#[test]
fn check_prints_a_config_that_does_not_load_in_its_usual_layout() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.toml");
    std::fs::write(&cfg, "[agent]\nsettle = \"fast\"\nconcurrency = 0\n").unwrap();
    let check = |cfg: &Path| {
        let mut c = std::process::Command::new(bin());
        c.env("HOME", home.path())
            .env_remove("OUTBOX_CONFIG")
            .env_remove("RUST_LOG")
            .args(["check", "--config"])
            .arg(cfg);
        run_bounded(&mut c, Duration::from_secs(30))
    };
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let so = stdout(&out);
    let lines: Vec<&str> = so.lines().collect();
    assert!(lines.len() >= 2, "{so}\n{}", stderr(&out));
    for l in &lines {
        assert!(l.starts_with("error  config: "), "{so}");
    }
    assert!(lines[0].contains("agent.settle"), "{so}");
    // Said once: not again on stderr.
    assert!(!stderr(&out).contains("agent.settle"), "{}", stderr(&out));
    let out = check(&home.path().join("nope.toml"));
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("error  config: "),
        "{}",
        stdout(&out)
    );
}

/// Trial 9: `outbox --config OTHER status` while an agent runs on another config naming the
/// same state dir: it says which config the running agent read and that it is not OTHER, never
/// that OTHER changed after the agent started (the agent never read it); `check` too; and over
/// an OTHER with an error, the agent that answers instead is said to run on its own file.
#[tokio::test(flavor = "multi_thread")]
async fn another_config_on_the_same_state_dir_is_not_said_to_be_the_agents() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("in");
    std::fs::create_dir_all(&folder).unwrap();
    let cfg = env.write_config("", &mapping(&folder, &item, ""));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    let other = env.path("other.toml");
    std::fs::copy(&cfg, &other).unwrap();
    let mine = std::fs::canonicalize(&cfg).unwrap().display().to_string();
    let with_other = |args: &[&str]| {
        let mut c = env.cmd();
        c.arg("--config").arg(&other).args(args);
        run_bounded(&mut c, Duration::from_secs(30))
    };
    let out = with_other(&["status"]);
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let note = so
        .lines()
        .find(|l| l.starts_with("note:"))
        .unwrap_or_else(|| panic!("{so}"));
    assert!(
        note.contains(&mine) && note.contains("not") && note.contains("other.toml"),
        "{so}"
    );
    // One sentence with single spaces (a literal continued across lines kept its indent).
    assert!(
        note.contains("so this file's changes") && !note.contains("  "),
        "{so}"
    );
    assert!(!so.contains("config changed after"), "{so}");
    let out = with_other(&["check"]);
    let so = stdout(&out);
    let warn = so
        .lines()
        .find(|l| l.starts_with("warn") && l.contains("running agent"))
        .unwrap_or_else(|| panic!("{so}"));
    assert!(warn.contains(&mine), "{so}");
    assert!(!so.contains("config changed after"), "{so}");
    // OTHER with an error: the agent answers instead, said to run on its own file.
    let text = std::fs::read_to_string(&other).unwrap();
    std::fs::write(&other, text.replace("settle = ", "settle = 7\nbogus = ")).unwrap();
    let out = with_other(&["status"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&mine) && !err.contains("the config it read before"),
        "{err}"
    );
    // Its own config: no such note.
    let out = env.run(&["status"], Duration::from_secs(30));
    assert!(
        !stdout(&out).contains("read another config"),
        "{}",
        stdout(&out)
    );
    drop(agent);
}

/// Trial 10: a newline (any control character) in a file name went raw into the attachment's
/// name: it becomes U+FFFD, as a byte that is not UTF-8 does, in the agent's attachments and
/// in `outbox send`'s; `status` and the log keep showing the name escaped.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_control_character_in_a_file_name_does_not_reach_the_attachment_name() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("in");
    write_file(&folder.join("two\nlines.txt"), 100, 1);
    write_file(&folder.join("tab\there.txt"), 100, 2);
    env.write_config("", &mapping(&folder, &item, ""));
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let on_item = attached(&env.sandbox, &item).await;
    let mut names: Vec<&String> = on_item.keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["tab\u{FFFD}here.txt", "two\u{FFFD}lines.txt"],
        "{on_item:?}"
    );
    let table = stdout(&env.run(&["status"], Duration::from_secs(30)));
    assert!(table.contains("two\\nlines.txt"), "{table}");
    assert!(!stderr(&out).contains("two\nlines"), "{}", stderr(&out));
    // `outbox send` names its attachment the same way.
    let other = env.sandbox.create_item("message", "me").await;
    let file = folder.join("two\nlines.txt");
    let mut c = env.cmd();
    c.arg("send").arg(&file).args(["--message", &other]);
    let out = run_bounded(&mut c, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sent = attached(&env.sandbox, &other).await;
    assert!(sent.contains_key("two\u{FFFD}lines.txt"), "{sent:?}");
}

/// Trial 11: `outbox items messages` says which messages are drafts (the only ones outbox can
/// attach to): a DRAFT column, `yes` or `no` (a received message is not "[sent]").
#[tokio::test(flavor = "multi_thread")]
async fn items_messages_marks_drafts() {
    let env = Env::new();
    let mut ids = Vec::new();
    for (subject, draft) in [("Draft to fill", true), ("Received long ago", false)] {
        let v = env
            .sandbox
            .admin(
                reqwest::Method::POST,
                "/items",
                Some(serde_json::json!({"kind": "message", "subject": subject, "isDraft": draft})),
            )
            .await;
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    env.write_config("", "");
    let out = env.run(&["items", "messages"], Duration::from_secs(30));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{}", stderr(&out));
    let header = so.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["DATE", "ATT", "DRAFT", "SUBJECT", "ID"],
        "{so}"
    );
    let flag = |id: &str| {
        let line = so
            .lines()
            .find(|l| l.ends_with(id))
            .unwrap_or_else(|| panic!("{so}"));
        line.split_whitespace().nth(3).unwrap().to_string()
    };
    assert_eq!(flag(&ids[0]), "yes", "{so}");
    assert_eq!(flag(&ids[1]), "no", "{so}");
    assert!(!so.contains("[sent]"), "{so}");
}

/// Round 3, 1: once the running agent reloaded the config (SIGHUP), `status` and `check` no
/// longer say it changed after the agent read it: the agent says when it last read the file,
/// and the file's time is compared with that, not with the agent's start.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_reloaded_config_is_not_said_to_have_changed() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("in");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config("", &mapping(&folder, &item, ""));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    let pid = agent.child.id();
    // Past the second of slack a start time is allowed (the fallback for an agent that does
    // not say when it read the file).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.write_config("concurrency = 3", &mapping(&folder, &item, ""));
    let shown = |args: &[&str]| stdout(&env.run(args, Duration::from_secs(30)));
    let so = shown(&["status"]);
    assert!(
        so.contains(&format!(
            "note: the config changed after the running agent (pid {pid}) last read it"
        )),
        "{so}"
    );
    let so = shown(&["check"]);
    assert!(
        so.contains("warn   config: the config changed after the running agent"),
        "{so}"
    );
    terminate_hup(pid);
    said(&agent, "configuration reloaded", 1).await;
    let so = shown(&["status"]);
    assert!(!so.contains("config changed"), "{so}");
    let so = shown(&["check"]);
    assert!(!so.contains("config changed"), "{so}");
    drop(agent);
}

/// Round 3, 3: a reload while paused lists every file of the folder again; those the ledger
/// already has (attached before the pause) are not files dropped meanwhile: `status` and the
/// resume's log line count only the one dropped during the pause.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_while_paused_counts_only_the_files_dropped_meanwhile() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("in");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config("", &mapping(&folder, &item, ""));
    for i in 0..3 {
        write_file(&folder.join(format!("old{i}.txt")), 1000, i);
    }
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    let pid = agent.child.id();
    wait_until(Duration::from_secs(60), "the three attached", || async {
        attached(&env.sandbox, &item).await.len() == 3
    })
    .await;
    let out = env.run(&["pause", "m"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    terminate_hup(pid);
    said(&agent, "configuration reloaded", 1).await;
    write_file(&folder.join("new.txt"), 1000, 9);
    wait_until(Duration::from_secs(30), "new.txt held", || async {
        rows(&env)
            .iter()
            .any(|r| r["path"].as_str().is_some_and(|p| p.ends_with("new.txt")))
    })
    .await;
    let so = stdout(&env.run(&["status"], Duration::from_secs(30)));
    assert!(
        so.contains("takes no new file (1 file left waiting in its folder)"),
        "{so}"
    );
    let out = env.run(&["resume", "m"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    said(&agent, "resumed", 1).await;
    let log = agent.log();
    assert!(log.contains("the 1 dropped while paused"), "{log}");
    wait_until(Duration::from_secs(30), "new.txt attached", || async {
        attached(&env.sandbox, &item).await.contains_key("new.txt")
    })
    .await;
    drop(agent);
}

/// Round 3, 4: a list key given one string says how to write it as a list; a missing file
/// named with --config is not answered "or pass --config PATH"; `--help`'s exit statuses
/// include 4, as the SPEC's do.
#[test]
fn config_and_help_messages_say_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let folder = home.path().join("in");
    std::fs::create_dir_all(&folder).unwrap();
    let cfg = home.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n\n{}include = \"*.pdf\"\n",
            mapping(&folder, "AAMk", "")
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let outbox = |args: &[&std::ffi::OsStr]| {
        let mut c = std::process::Command::new(bin());
        c.env("HOME", home.path())
            .env_remove("OUTBOX_CONFIG")
            .env_remove("RUST_LOG")
            .args(args);
        run_bounded(&mut c, Duration::from_secs(30))
    };
    let out = outbox(&["--config".as_ref(), cfg.as_os_str(), "check".as_ref()]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let so = stdout(&out);
    assert!(
        so.contains("write it as a list: `include = [\"*.pdf\"]`"),
        "{so}"
    );
    let missing = home.path().join("nope").join("x.toml");
    let out = outbox(&["--config".as_ref(), missing.as_os_str(), "status".as_ref()]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no config file here"), "{err}");
    assert!(!err.contains("pass --config"), "{err}");
    let out = outbox(&["--help".as_ref()]);
    // Help wraps: the words, whatever the line breaks.
    let so = stdout(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        so.contains("4 a message may have been sent but could not be confirmed"),
        "{so}"
    );
}

/// Third trial, 1: a done file someone made a hard link to elsewhere (`ln drop/a.pdf
/// ~/elsewhere/a.pdf`: its ctime moves, it has two names) stays done: read again, its bytes
/// are the ones attached, so nothing is sent, nothing moved to `failed_dir`, no failure. A new
/// version written into it while it has two names is refused as a hard link (code `hardLink`,
/// not `unreadable`), nothing sent.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_done_file_hard_linked_elsewhere_stays_done() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    let file = folder.join("a.pdf");
    let sha = write_file(&file, 5000, 1);
    env.write_config("", &mapping(&folder, &item, "failed_dir = \"failed\""));
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::hard_link(&file, elsewhere.join("a.pdf")).unwrap();
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(file.exists(), "a.pdf left its folder: {}", stderr(&out));
    assert!(!folder.join("failed").join("a.pdf").exists());
    let all = rows(&env);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["state"], "done", "{all:#?}");
    assert!(all[0]["error"].is_null(), "{all:#?}");
    let on_item = attached(&env.sandbox, &item).await;
    assert_eq!(on_item.len(), 1, "{on_item:?}");
    assert_eq!(on_item["a.pdf"], sha);

    // New bytes written into it while it has two names: refused as a hard link.
    std::fs::write(&file, "new bytes").unwrap();
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let all = rows(&env);
    let failed = all
        .iter()
        .find(|r| r["state"] == "failed")
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(failed["error"]["code"], "hardLink", "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("hard link"),
        "{failed}"
    );
    assert_eq!(attached(&env.sandbox, &item).await.len(), 1);
}

/// Third trial, 2: `outbox retry ID` of a healthy done entry attached it again. Only a done
/// entry `verify` found wrong or missing is attached again: retry of any other is refused,
/// saying to run `outbox verify ID` first. Verify notes what it found on the entry, through
/// the running agent or in the ledger, and the retry that follows attaches the file again.
#[tokio::test(flavor = "multi_thread")]
async fn retry_of_a_healthy_done_entry_is_refused_until_verify_finds_it_wrong() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    let sha = write_file(&folder.join("a.txt"), 1000, 1);
    env.write_config("", &mapping(&folder, &item, ""));
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = rows(&env)[0]["id"].as_str().unwrap().to_string();
    // Healthy, verified or not: refused, saying what to do.
    for verified in [false, true] {
        if verified {
            let out = env.run(&["verify", &id], Duration::from_secs(30));
            assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        }
        let out = env.run(&["retry", &id], Duration::from_secs(30));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}\n{err}", stdout(&out));
        assert!(
            err.contains("not found wrong") && err.contains(&format!("`outbox verify {id}`")),
            "{err}"
        );
    }
    assert_eq!(rows(&env)[0]["state"], "done");
    // Its attachment deleted in Outlook; verify (through the running agent) finds it missing.
    let att = env.sandbox.attachments(&item).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.sandbox
        .admin(
            reqwest::Method::DELETE,
            &format!("/items/{}/attachments/{}", urlenc(&item), urlenc(&att)),
            None,
        )
        .await;
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    let out = env.run(&["verify", &id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("MISSING"), "{}", stdout(&out));
    let out = env.run(&["retry", &id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_until(Duration::from_secs(30), "a.txt attached again", || async {
        attached(&env.sandbox, &item).await.get("a.txt") == Some(&sha)
    })
    .await;
    drop(agent);
    // Good again: a second retry is refused.
    let out = env.run(&["retry", &id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Third trial, 3: `outbox service install --dry-run` passed where the real install then
/// failed (no user systemd here; a config that does not load). The dry run makes the same
/// checks and fails the same way, with the same words and exit status, writing nothing.
#[cfg(target_os = "linux")]
#[test]
fn a_service_dry_run_fails_where_the_install_would() {
    let home = tempfile::tempdir().unwrap();
    // The runtime dir pointed nowhere: a real user manager is never touched.
    let runtime = home.path().join("no-runtime");
    let xdg = home.path().join(".config");
    let cfg = home.path().join("config.toml");
    let good = format!(
        "[auth]\nmethod = \"token_env\"\ntoken_env = \"OUTBOX_TEST_TOKEN\"\n[agent]\nstate_dir = '{}'\n",
        home.path().join("state").display()
    );
    std::fs::write(&cfg, &good).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let service = |args: &[&str]| {
        let mut c = std::process::Command::new(bin());
        c.env("HOME", home.path())
            .env("XDG_CONFIG_HOME", &xdg)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("OUTBOX_CONFIG")
            .env_remove("RUST_LOG")
            .args(["service", "install"])
            .args(args)
            .arg("--config")
            .arg(&cfg);
        run_bounded(&mut c, Duration::from_secs(60))
    };
    let probe = std::process::Command::new("systemctl")
        .args(["--user", "show-environment"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        let real = service(&[]);
        let dry = service(&["--dry-run"]);
        assert_eq!(real.status.code(), Some(1), "{}", stderr(&real));
        assert_eq!(dry.status.code(), real.status.code(), "{}", stdout(&dry));
        assert!(stderr(&dry).contains("no user systemd"), "{}", stderr(&dry));
        assert_eq!(stderr(&dry), stderr(&real));
        assert!(!xdg.join("systemd").exists());
    }
    // A config that does not load: refused by both (78), not a note.
    std::fs::write(&cfg, format!("{good}settle = \"fast\"\n")).unwrap();
    let dry = service(&["--dry-run"]);
    assert_eq!(dry.status.code(), Some(78), "{}", stderr(&dry));
    assert!(stderr(&dry).contains("agent.settle"), "{}", stderr(&dry));
    assert!(
        !stderr(&dry).contains("does not load yet"),
        "{}",
        stderr(&dry)
    );
    assert!(stdout(&dry).is_empty(), "{}", stdout(&dry));
}

/// Third trial, 4: `outbox cancel ID` of an upload with a request in flight said "canceled"
/// while `status` went on showing it uploading for seconds. It says what is true: the cancel
/// is asked and takes effect once that request is answered; `status` shows it asked; then the
/// row is canceled.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_during_a_request_says_it_is_asked_until_it_takes_effect() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    write_file(&folder.join("big.bin"), 8 * MIB + 5, 3);
    env.write_config("", &mapping(&folder, &item, ""));
    let agent = Agent::start(&env, &[("OUTBOX_PAUSE_AT", "before-chunk:3000")]);
    said(&agent, "failpoint before-chunk: pausing", 1).await;
    let id = rows(&env)[0]["id"].as_str().unwrap().to_string();
    let out = env.run(&["cancel", &id], Duration::from_secs(30));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{}", stderr(&out));
    assert!(so.contains("cancel asked"), "{so}");
    assert!(!so.contains("  canceled  "), "{so}");
    let row = rows(&env).remove(0);
    assert_eq!(row["state"], "uploading", "{row}");
    assert!(
        row["note"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cancel asked"),
        "{row}"
    );
    wait_until(Duration::from_secs(30), "the entry canceled", || async {
        rows(&env)[0]["state"] == "canceled"
    })
    .await;
    assert!(attached(&env.sandbox, &item).await.is_empty());
    drop(agent);
}

/// Third trial, 7: the wait after a lost answer (the agent waits until nothing of the request
/// can still land, then looks on the item whether it took effect) was shown in `status` as
/// "backing off after an error". It is shown as what it is.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answers_wait_is_shown_as_a_wait_to_check_not_a_backoff() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "look_after = \"30s\"",
        &mapping(&folder, &item, "if_exists = \"attach\""),
    );
    env.sandbox
        .faults(serde_json::json!({"fail_next": [{"route": "post", "action": "lost"}]}))
        .await;
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    write_file(&folder.join("a.txt"), 1000, 1);
    wait_until(
        Duration::from_secs(30),
        "a wait after the lost answer",
        || async {
            rows(&env)
                .iter()
                .any(|r| !r["waiting_for"].is_null() && r["state"] != "settling")
        },
    )
    .await;
    let shown = || {
        let row = rows(&env).remove(0);
        assert_eq!(row["waiting_for"], "look", "{row}");
        let note = row["note"].as_str().unwrap_or_default();
        assert!(!note.contains("backing off"), "{row}");
        assert!(note.contains("whether the upload took effect"), "{row}");
    };
    shown();
    // And all the wait long (past the first backoff's second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    shown();
    drop(agent);
}

/// Third trial, 8: a non-recursive mapping passed over its symbolic links and subfolders
/// without a word, and `status` showed a file of a recursive mapping's subfolder without its
/// folder. The agent says once in its log, and `status` while it runs, what it passes over, why
/// and the setting that changes it; a file in a subfolder is shown as `sub/name`.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn skipped_links_and_subfolders_are_said_and_a_subfolders_file_shows_its_folder() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let flat = env.path("flat");
    let deep = env.path("deep");
    write_file(&flat.join("a.txt"), 100, 1);
    write_file(&flat.join("inner").join("b.txt"), 100, 2);
    write_file(&env.path("elsewhere.txt"), 100, 3);
    std::os::unix::fs::symlink(env.path("elsewhere.txt"), flat.join("link.txt")).unwrap();
    write_file(&deep.join("sub").join("c.txt"), 100, 4);
    let recursive = format!(
        "[[mapping]]\nname = \"deep\"\nfolder = {}\nmessage = \"{item}\"\nrecursive = true\n",
        toml_path(&deep)
    );
    env.write_config("", &(mapping(&flat, &item, "") + &recursive));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    wait_until(
        Duration::from_secs(30),
        "a.txt and c.txt attached",
        || async { attached(&env.sandbox, &item).await.len() == 2 },
    )
    .await;
    let so = stdout(&env.run(&["status"], Duration::from_secs(30)));
    let line = so
        .lines()
        .find(|l| l.starts_with("skipped: mapping `m`"))
        .unwrap_or_else(|| panic!("{so}"));
    assert!(
        line.contains("1 symbolic link") && line.contains("follow_symlinks = true"),
        "{line}"
    );
    assert!(
        line.contains("1 subfolder") && line.contains("recursive = true"),
        "{line}"
    );
    assert!(!so.contains("skipped: mapping `deep`"), "{so}");
    let row = so
        .lines()
        .find(|l| l.contains("c.txt"))
        .unwrap_or_else(|| panic!("{so}"));
    assert!(row.contains("sub/c.txt"), "{so}");
    // The log says it once, not at every scan.
    let log = agent.log();
    assert_eq!(log.matches("1 symbolic link not sent").count(), 1, "{log}");
    drop(agent);
}

/// Trial 4, G7: where there is no user systemd, `service install --dry-run` failed as the
/// install would, but showed no unit at all: the point of a dry run is to see what would be
/// written (a user adapts it for another supervisor). It prints the unit on stdout, then fails
/// as the install would, saying why, and writes nothing.
#[cfg(target_os = "linux")]
#[test]
fn a_service_dry_run_without_user_systemd_still_shows_the_unit() {
    let home = tempfile::tempdir().unwrap();
    let runtime = home.path().join("no-runtime");
    let xdg = home.path().join(".config");
    let cfg = home.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nmethod = \"token_env\"\ntoken_env = \"OUTBOX_TEST_TOKEN\"\n[agent]\nstate_dir = '{}'\n",
            home.path().join("state").display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let probe = std::process::Command::new("systemctl")
        .args(["--user", "show-environment"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output();
    let mut c = std::process::Command::new(bin());
    c.env("HOME", home.path())
        .env("XDG_CONFIG_HOME", &xdg)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("OUTBOX_CONFIG")
        .env_remove("RUST_LOG")
        .args(["service", "install", "--dry-run", "--config"])
        .arg(&cfg);
    let dry = run_bounded(&mut c, Duration::from_secs(60));
    let so = stdout(&dry);
    assert!(
        so.contains("[Service]") && so.contains("ExecStart=") && so.contains("outbox.service"),
        "no unit shown:\n{so}\n{}",
        stderr(&dry)
    );
    if !matches!(&probe, Ok(o) if o.status.success()) {
        assert_eq!(dry.status.code(), Some(1), "{}", stderr(&dry));
        assert!(so.contains("cannot be installed here"), "{so}");
        assert!(stderr(&dry).contains("no user systemd"), "{}", stderr(&dry));
        assert!(
            stderr(&dry).contains("nothing was written"),
            "{}",
            stderr(&dry)
        );
    }
    assert!(!xdg.join("systemd").exists());
}

/// Trial 4, G1/M9: a link or a subfolder dropped while the agent runs was passed over in
/// silence until a rescan (log and `status` said nothing, for up to an hour). A live event is
/// now taken as a start-up scan takes it: passed over for the same reason, said once in the log
/// and counted in `status`; and a recursive mapping's new subfolder's link is counted too.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_link_or_subfolder_dropped_while_the_agent_runs_is_said_as_a_scan_says_it() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let flat = env.path("flat");
    let deep = env.path("deep");
    std::fs::create_dir_all(&flat).unwrap();
    std::fs::create_dir_all(&deep).unwrap();
    write_file(&env.path("elsewhere.txt"), 100, 3);
    let recursive = format!(
        "[[mapping]]\nname = \"deep\"\nfolder = {}\nmessage = \"{item}\"\nrecursive = true\n",
        toml_path(&deep)
    );
    env.write_config("", &(mapping(&flat, &item, "") + &recursive));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    std::os::unix::fs::symlink(env.path("elsewhere.txt"), flat.join("link.txt")).unwrap();
    write_file(&flat.join("inner").join("b.txt"), 100, 2);
    std::fs::create_dir_all(deep.join("sub")).unwrap();
    std::os::unix::fs::symlink(env.path("elsewhere.txt"), deep.join("sub").join("l.txt")).unwrap();
    let skipped = |so: &str, mapping: &str| {
        so.lines()
            .find(|l| l.starts_with(&format!("skipped: mapping `{mapping}`")))
            .map(str::to_owned)
    };
    wait_until(
        Duration::from_secs(30),
        "status to say what was passed over",
        || async {
            let so = stdout(&env.run(&["status"], Duration::from_secs(30)));
            skipped(&so, "m")
                .is_some_and(|l| l.contains("1 symbolic link") && l.contains("1 subfolder"))
                && skipped(&so, "deep").is_some_and(|l| l.contains("1 symbolic link"))
        },
    )
    .await;
    let so = stdout(&env.run(&["status"], Duration::from_secs(30)));
    let line = skipped(&so, "m").unwrap();
    assert!(
        line.contains("follow_symlinks = true") && line.contains("recursive = true"),
        "{line}"
    );
    let log = agent.log();
    assert!(log.contains("symbolic link not sent"), "{log}");
    assert!(log.contains("subfolder not looked in"), "{log}");
    // Removed, it is no longer counted.
    std::fs::remove_file(flat.join("link.txt")).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the removed link to be forgotten",
        || async {
            let so = stdout(&env.run(&["status"], Duration::from_secs(30)));
            skipped(&so, "m").is_some_and(|l| !l.contains("symbolic link"))
        },
    )
    .await;
    // Nothing of either was attached.
    assert!(attached(&env.sandbox, &item).await.is_empty());
    drop(agent);
}

/// Trial 4, G1's other half: with `follow_symlinks = true` a link dropped while the agent runs
/// that stays inside the folder is taken, as a start-up scan takes it.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_followed_link_dropped_while_the_agent_runs_is_taken() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let flat = env.path("flat");
    std::fs::create_dir_all(flat.join("store")).unwrap();
    env.write_config("", &mapping(&flat, &item, "follow_symlinks = true"));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    write_file(&flat.join("store").join("real.txt"), 100, 9);
    std::os::unix::fs::symlink(flat.join("store").join("real.txt"), flat.join("link.txt")).unwrap();
    wait_until(Duration::from_secs(30), "link.txt attached", || async {
        attached(&env.sandbox, &item).await.contains_key("link.txt")
    })
    .await;
    drop(agent);
}

/// Third trial, 9: messages that did not say what is wrong. A config made writable by others
/// while an agent runs: the hint says its permissions and the chmod, not "fix the line named"
/// (there is none). A second agent on a state dir in use: the first one's pid. A hint under a
/// relative `--config`: the config's absolute path, which works pasted anywhere.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn config_state_dir_and_hint_messages_say_what_is_wrong() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("in");
    std::fs::create_dir_all(&folder).unwrap();
    let cfg = env.write_config("", &mapping(&folder, &item, ""));
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    let pid = agent.child.id();

    // A second agent: told the first one's pid.
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("another outbox agent (pid {pid})")),
        "{}",
        stderr(&out)
    );

    // chmod 666 while it runs: status still answers, and says what to fix.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = env.run(&["status"], Duration::from_secs(30));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let hint = err
        .lines()
        .find(|l| l.contains("answers instead"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(!hint.contains("line named"), "{hint}");
    assert!(
        hint.contains("permissions") && hint.contains("chmod go-w"),
        "{hint}"
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    drop(agent);

    // A relative --config: hints name it absolute.
    let mut c = env.cmd();
    c.current_dir(env.dir.path())
        .env_remove("OUTBOX_CONFIG")
        .args(["--config", "config.toml", "retry", "nosuchentry"]);
    let out = run_bounded(&mut c, Duration::from_secs(30));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("`outbox --config {} status`", cfg.display())),
        "{err}"
    );
}

/// The table row of `file` in `outbox status` (plain, no colour off a terminal).
fn table_row(env: &Env, file: &str) -> Option<String> {
    let so = stdout(&env.run(&["status"], Duration::from_secs(30)));
    so.lines().find(|l| l.contains(file)).map(str::to_owned)
}

/// Trial 4, G8: a file that goes by one POST showed `uploading 0%` for as long as Graph was
/// out of reach, though nothing of it was on its way. The table says `waiting` (the NOTE says
/// for what and until when); `--json` keeps the ledger's state.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_held_back_by_an_outage_shows_waiting_not_uploading() {
    let mut env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config("", &mapping(&folder, &item, ""));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    // A file attached first: the item's listing is fresh, so the next one goes by its POST
    // without a look first (as in the trial).
    write_file(&folder.join("first.txt"), 5, 2);
    wait_until(Duration::from_secs(30), "first.txt attached", || async {
        attached(&env.sandbox, &item)
            .await
            .contains_key("first.txt")
    })
    .await;
    env.sandbox.stop();
    write_file(&folder.join("outage1.txt"), 5, 1);
    wait_until(
        Duration::from_secs(30),
        "the row to say Graph is unreachable",
        || async {
            table_row(&env, "outage1.txt").is_some_and(|r| r.contains("Graph unreachable"))
        },
    )
    .await;
    let row = table_row(&env, "outage1.txt").unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells.get(1), Some(&"waiting"), "{row}");
    assert_eq!(cells.get(2), Some(&"-"), "{row}");
    assert!(!row.contains("uploading") && !row.contains("0%"), "{row}");
    let json = rows(&env);
    let r = json
        .iter()
        .find(|r| {
            r["path"]
                .as_str()
                .unwrap_or_default()
                .ends_with("outage1.txt")
        })
        .unwrap();
    assert_eq!(r["waiting_for"], "unreachable", "{r}");
    env.sandbox.restart();
    wait_until(Duration::from_secs(60), "outage1.txt attached", || async {
        attached(&env.sandbox, &item)
            .await
            .contains_key("outage1.txt")
    })
    .await;
    drop(agent);
}

/// Trial 4, G6: the agent's log said nothing through an outage or a throttle (only `status`
/// did), so the journal read afterwards could not say why files were late. It says each once
/// as it starts (why, when the first file tries again) and once as it ends, never per retry.
#[tokio::test(flavor = "multi_thread")]
async fn the_log_says_once_when_graph_is_out_of_reach_or_throttles_and_once_when_it_is_back() {
    let mut env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config("", &mapping(&folder, &item, "if_exists = \"attach\""));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    // Throttled, for several Retry-After periods.
    env.sandbox
        .faults(serde_json::json!({"fail_rate": 1.0, "status": 429, "retry_after": 1}))
        .await;
    write_file(&folder.join("thr.txt"), 5, 1);
    said(&agent, "throttled by Graph (Retry-After: 1 s)", 1).await;
    wait_until(Duration::from_secs(30), "three 429s", || async {
        env.sandbox.stats().await["throttled_429"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    })
    .await;
    env.sandbox.faults(serde_json::json!({"reset": true})).await;
    wait_until(Duration::from_secs(30), "thr.txt attached", || async {
        attached(&env.sandbox, &item).await.contains_key("thr.txt")
    })
    .await;
    said(&agent, "Graph no longer throttles", 1).await;
    // Out of reach, for a few retries.
    env.sandbox.stop();
    write_file(&folder.join("out.txt"), 5, 2);
    said(&agent, "Graph is unreachable", 1).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    env.sandbox.restart();
    wait_until(Duration::from_secs(60), "out.txt attached", || async {
        attached(&env.sandbox, &item).await.contains_key("out.txt")
    })
    .await;
    said(&agent, "Graph is reachable again", 1).await;
    let log = agent.log();
    assert_eq!(log.matches("throttled by Graph (").count(), 1, "{log}");
    assert_eq!(log.matches("Graph is unreachable (").count(), 1, "{log}");
    assert!(log.contains("tries again at"), "{log}");
    drop(agent);
}

/// `outbox status --json`'s row of the file whose path ends with `tail`.
fn json_row(env: &Env, tail: &str) -> serde_json::Value {
    rows(env)
        .into_iter()
        .find(|r| r["path"].as_str().unwrap_or_default().ends_with(tail))
        .unwrap_or_else(|| panic!("no row of {tail}"))
}

/// Trial 4, G10: a done file renamed in its folder is attached again under its new name and
/// the old-name attachment stays (SPEC: a version is path, size and hash; `replace` replaces a
/// new version of the same path). That is kept, and now said: the new row's note names the
/// earlier entry with the same bytes and says why both are on the item.
#[tokio::test(flavor = "multi_thread")]
async fn a_done_file_renamed_in_its_folder_is_attached_again_and_status_says_why() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config("", &mapping(&folder, &item, ""));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    write_file(&folder.join("small-copy.txt"), 100, 1);
    wait_until(
        Duration::from_secs(30),
        "small-copy.txt attached",
        || async {
            attached(&env.sandbox, &item)
                .await
                .contains_key("small-copy.txt")
        },
    )
    .await;
    std::fs::rename(
        folder.join("small-copy.txt"),
        folder.join("small-renamed.txt"),
    )
    .unwrap();
    wait_until(
        Duration::from_secs(30),
        "small-renamed.txt attached",
        || async {
            attached(&env.sandbox, &item)
                .await
                .contains_key("small-renamed.txt")
        },
    )
    .await;
    // As SPEC has it: both names are on the item.
    assert_eq!(attached(&env.sandbox, &item).await.len(), 2);
    let old = json_row(&env, "small-copy.txt");
    let new = json_row(&env, "small-renamed.txt");
    let note = new["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("the same bytes as")
            && note.contains(old["id"].as_str().unwrap())
            && note.contains("renamed")
            && note.contains("earlier attachment stays"),
        "{new}"
    );
    let row = table_row(&env, "small-renamed.txt").unwrap();
    assert!(row.contains("the same bytes as"), "{row}");
    drop(agent);
}

/// Trial 4, G2: two files of one name in different subfolders of a recursive mapping became
/// two attachments of that name, and nothing said so. SPEC attaches a file under its own name
/// (not renamed here); each row now says the item holds another attachment of its name, and
/// from which file.
#[tokio::test(flavor = "multi_thread")]
async fn one_name_from_two_subfolders_is_said_on_both_rows() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    write_file(&folder.join("sub").join("in sub.txt"), 6, 1);
    write_file(&folder.join("sub2").join("in sub.txt"), 18, 2);
    env.write_config("", &mapping(&folder, &item, "recursive = true"));
    let agent = Agent::start(&env, &[]);
    agent.watching().await;
    wait_until(Duration::from_secs(30), "both attached", || async {
        env.sandbox.attachments(&item).await.len() == 2
    })
    .await;
    for (mine, other) in [
        ("sub/in sub.txt", "sub2/in sub.txt"),
        ("sub2/in sub.txt", "sub/in sub.txt"),
    ] {
        let r = json_row(&env, mine);
        let note = r["note"].as_str().unwrap_or_default();
        assert!(
            note.contains("attached as \"in sub.txt\"") && note.contains(other),
            "{r}"
        );
    }
    drop(agent);
}
