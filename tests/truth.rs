//! What the commands say is true (issue 22, "Tell the truth, round 3"): help the same in any
//! terminal, quiet ends on a closed pipe, failed entries that can be cleared, hints that work
//! when pasted. Real binary, real ledger in a temp dir, the sandbox on loopback.

use crate::common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A command with no config around it (a temp HOME, no `OUTBOX_*` variables).
fn bare(home: &std::path::Path) -> Command {
    let mut c = Command::new(bin());
    c.env("HOME", home)
        .env_remove("OUTBOX_CONFIG")
        .env_remove("OUTBOX_ACCESS_TOKEN")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

#[test]
fn help_does_not_depend_on_the_terminal_width() {
    let home = tempfile::tempdir().unwrap();
    for name in ["", "status", "retry", "mail", "service"] {
        let help = |columns: &str| {
            let mut c = bare(home.path());
            c.env("COLUMNS", columns);
            if !name.is_empty() {
                c.arg(name);
            }
            let out = run_bounded(c.arg("--help"), Duration::from_secs(20));
            assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
            stdout(&out)
        };
        let (narrow, wide) = (help("100"), help("220"));
        assert_eq!(
            narrow, wide,
            "`outbox {name} --help` differs at 100 and 220 columns"
        );
        for line in wide.lines() {
            assert!(
                line.chars().count() <= 100,
                "`outbox {name} --help` at 220 columns has a line over 100: {line:?}"
            );
        }
    }
}

/// Run `args` with stdout a pipe whose reading end is already closed (`| head` that has read
/// its lines): the command ends quietly, exit 0, no panic.
fn into_a_closed_pipe(env: &Env, args: &[&str]) {
    let mut child = env
        .cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = run_bounded_child(child, Duration::from_secs(60));
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
}

fn run_bounded_child(child: std::process::Child, timeout: Duration) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            kill(pid);
            panic!("timed out after {timeout:?}");
        }
    }
}

#[tokio::test]
async fn every_printing_command_ends_quietly_on_a_closed_pipe() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("in");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"m\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            folder.display()
        ),
    );
    std::fs::write(folder.join("a.txt"), b"hello").unwrap();
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["status", "--state", "done"],
        &["retry", "--failed"],
        &["check"],
        &["check", "--json"],
        &["items", "messages"],
        &["items", "messages", "--json"],
        &["verify", "--all"],
        &["verify", "--all", "--json"],
        &["whoami"],
        &["service", "install", "--dry-run", "--platform", "linux"],
        &["completions", "bash"],
        &["--help"],
    ] {
        into_a_closed_pipe(&env, args);
    }
}

/// `status --json` rows by file name.
fn rows(env: &Env) -> std::collections::HashMap<String, serde_json::Value> {
    let out = env.run(&["status", "--json"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let name = std::path::Path::new(r["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, r.clone())
        })
        .collect()
}

/// Three files that fail (their message is gone), in folder `in`.
async fn three_failed(env: &Env, extra: &str) -> std::path::PathBuf {
    let gone = env.sandbox.create_item("message", "me").await;
    env.sandbox.delete_item(&gone).await;
    let folder = env.path("in");
    std::fs::create_dir_all(&folder).unwrap();
    for (i, n) in ["a.txt", "b.txt", "c.txt"].iter().enumerate() {
        write_file(&folder.join(n), 100, i as u64);
    }
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"m\"\nfolder = '{}'\nmessage = \"{gone}\"\n{extra}\n",
            folder.display()
        ),
    );
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    folder
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_file_deleted_since_can_be_canceled_and_run_once_stops_counting_it() {
    let env = Env::new();
    let folder = three_failed(&env, "").await;
    let r = rows(&env);
    let id = |n: &str| r[n]["id"].as_str().unwrap().to_string();
    let (a, b) = (id("a.txt"), id("b.txt"));
    std::fs::remove_file(folder.join("a.txt")).unwrap();
    std::fs::remove_file(folder.join("b.txt")).unwrap();
    std::fs::remove_file(folder.join("c.txt")).unwrap();

    // Retry tells the truth: the file is gone, and how to clear the entry.
    let out = env.run(&["retry", &a], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("no longer at"), "{err}");
    assert!(err.contains(&format!("`outbox cancel {a}`")), "{err}");
    assert_eq!(rows(&env)["a.txt"]["state"], "failed");

    // Cancel clears it: offline, and through a running agent.
    let out = env.run(&["cancel", &a], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{a}  canceled")),
        "{}",
        stdout(&out)
    );
    let agent = Agent::start(&env, &[]);
    let mut out = env.run(&["cancel", &b], Duration::from_secs(30));
    for _ in 0..50 {
        if !stderr(&out).contains("holds the ledger") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        out = env.run(&["cancel", &b], Duration::from_secs(30));
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        agent.log()
    );
    // `retry --failed` does not queue a file that is gone: it says so.
    let out = env.run(&["retry", "--failed"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(!said.contains("queued again"), "{said}");
    assert!(
        said.contains("c.txt") && said.contains("no longer at"),
        "{said}"
    );
    agent.stop();
    let r = rows(&env);
    assert_eq!(r["a.txt"]["state"], "canceled");
    assert_eq!(r["b.txt"]["state"], "canceled");
    assert_eq!(r["c.txt"]["state"], "failed");
    let out = env.run(&["cancel", &a], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("already canceled"),
        "{}",
        stderr(&out)
    );

    let c = r["c.txt"]["id"].as_str().unwrap().to_string();
    let out = env.run(&["cancel", &c], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A failed file in `failed_dir` (the agent moved it there, on record): `retry` takes it back
/// (issue 20, item 4); one no longer where it was moved is refused, saying where it was and
/// what to do.
#[tokio::test(flavor = "multi_thread")]
async fn retry_of_a_file_in_failed_dir_says_where_it_is_and_what_to_do() {
    let env = Env::new();
    let failed_dir = env.path("failed");
    let folder = three_failed(&env, &format!("failed_dir = '{}'", failed_dir.display())).await;
    assert!(failed_dir.join("a.txt").exists(), "moved to failed_dir");
    let r = rows(&env);
    let (a, b) = (
        r["a.txt"]["id"].as_str().unwrap().to_string(),
        r["b.txt"]["id"].as_str().unwrap().to_string(),
    );
    // Moved away from where outbox put it: refused, saying where it was and what to do.
    std::fs::rename(failed_dir.join("a.txt"), env.path("a.txt")).unwrap();
    let out = env.run(&["retry", &a], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no longer where outbox moved it") && err.contains("failed"),
        "{err}"
    );
    assert!(!stdout(&out).contains("queued again"), "{}", stdout(&out));
    // Moved back by hand: queued again.
    std::fs::rename(env.path("a.txt"), folder.join("a.txt")).unwrap();
    let out = env.run(&["retry", &a], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{a}  queued again")),
        "{}",
        stdout(&out)
    );
    // Still in failed_dir: queued again, the agent takes it back before sending it.
    let out = env.run(&["retry", &b], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{b}  queued again")),
        "{}",
        stdout(&out)
    );
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("taken back from failed_dir"),
        "{}",
        stderr(&out)
    );
    // Its item is still gone: it failed again, and is in failed_dir again.
    assert!(failed_dir.join("b.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_of_a_done_entry_says_it_attaches_it_again() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let done = env.path("done");
    std::fs::create_dir_all(&done).unwrap();
    write_file(&done.join("d.txt"), 100, 9);
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"d\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            done.display()
        ),
    );
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let d = rows(&env)["d.txt"]["id"].as_str().unwrap().to_string();
    // Found missing by `verify` first (a healthy one is not retried).
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
    let out = env.run(&["verify", &d], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let out = env.run(&["retry", &d], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(!said.contains("queued again"), "{said}");
    assert!(said.contains("to be attached again"), "{said}");
    // Third trial, 6: its attachment is missing: no copy "now on the item" is spoken of.
    assert!(!said.contains("now on the item"), "{said}");
    assert!(said.contains("if it is still on the item"), "{said}");
}

/// Wait until the agent answers on its socket (status says it runs).
async fn agent_answers(env: &Env) {
    wait_until(Duration::from_secs(30), "the agent's socket", || async {
        let out = env.run(&["status"], Duration::from_secs(30));
        stdout(&out).starts_with("agent running")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_retry_and_cancel_reach_the_agent_over_a_config_typo() {
    let env = Env::new();
    three_failed(&env, "").await;
    let r = rows(&env);
    let (a, b) = (
        r["a.txt"]["id"].as_str().unwrap().to_string(),
        r["b.txt"]["id"].as_str().unwrap().to_string(),
    );
    let agent = Agent::start(&env, &[]);
    agent_answers(&env).await;
    // A typo while the agent runs on the config it read.
    let cfg = env.path("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("settle = \"300ms\"", "settle = \"300 mss\""),
    )
    .unwrap();

    let out = env.run(&["status"], Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        agent.log()
    );
    assert!(stdout(&out).contains("a.txt"), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("agent.settle") && err.contains("running agent"),
        "{err}"
    );
    let out = env.run(&["status", "--json"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();

    let out = env.run(&["retry", &a], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("queued again"), "{}", stdout(&out));
    let out = env.run(&["cancel", &b], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{b}  canceled")),
        "{}",
        stdout(&out)
    );
    agent.stop();

    // No agent: the config error, exit 78, as before.
    let out = env.run(&["status"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(78), "{}", stdout(&out));
    assert!(stderr(&out).contains("agent.settle"), "{}", stderr(&out));

    // The state dir itself unreadable from the file: said, with the line to fix.
    std::fs::write(&cfg, text.replace("state_dir = '", "state_dir = 5 #'")).unwrap();
    let out = env.run(&["status"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(78), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("agent.state_dir") && err.contains("cannot be asked"),
        "{err}"
    );
}

#[test]
fn check_json_prints_a_json_document_when_the_config_does_not_load() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.toml");
    std::fs::write(&cfg, "[agent]\nsettle = \"fast\"\nconcurrency = 0\n").unwrap();
    let out = run_bounded(
        bare(home.path())
            .args(["check", "--json", "--config"])
            .arg(&cfg),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}", stdout(&out)));
    let found = v.as_array().unwrap();
    assert!(found.len() >= 2, "{v}");
    for f in found {
        assert_eq!(f["level"], "error", "{v}");
        assert_eq!(f["what"], "config", "{v}");
    }
    assert!(
        found[0]["message"]
            .as_str()
            .unwrap()
            .contains("agent.settle"),
        "{v}"
    );
    // A missing file too.
    let out = run_bounded(
        bare(home.path())
            .args(["check", "--json", "--config"])
            .arg(home.path().join("nope.toml")),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["level"], "error", "{v}");
}

#[test]
fn with_config_path_every_hint_names_that_path() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("work conf.toml");
    // As a shell takes it: `'…'` on Unix, `"…"` on Windows (cmd.exe has no `'`).
    let quoted = if cfg!(windows) {
        format!("\"{}\"", cfg.display())
    } else {
        format!("'{}'", cfg.display())
    };
    // init: the next step, on stdout and in the file's header.
    let out = run_bounded(
        bare(home.path()).args(["init", "--config"]).arg(&cfg),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&format!("`outbox --config {quoted} check`")),
        "{said}"
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains(&format!("`outbox --config {quoted} check`")),
        "{text}"
    );
    // A missing file: the init that writes it.
    let missing = home.path().join("missing.toml");
    let out = run_bounded(
        bare(home.path()).args(["status", "--config"]).arg(&missing),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("`outbox --config {} init`", missing.display())),
        "{err}"
    );
    // Sign-in: the login that signs in for this config.
    let state = home.path().join("state");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nclient_id = \"1b2c3d4e-1111-2222-3333-444455556666\"\n[agent]\nstate_dir = '{}'\n",
            state.display()
        ),
    )
    .unwrap();
    let out = run_bounded(
        bare(home.path()).args(["whoami", "--config"]).arg(&cfg),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("`outbox --config {quoted} login`")),
        "{err}"
    );
    assert!(!err.contains("`outbox login`"), "{err}");
}

#[test]
fn check_and_login_name_the_placeholder_client_id_init_writes() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.toml");
    let out = run_bounded(
        bare(home.path()).args(["init", "--config"]).arg(&cfg),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run_bounded(
        bare(home.path()).args(["check", "--config"]).arg(&cfg),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = stdout(&out);
    let line = said
        .lines()
        .find(|l| l.contains("client_id"))
        .unwrap_or_else(|| panic!("no client_id line: {said}"));
    assert!(line.starts_with("error"), "{said}");
    assert!(line.contains("placeholder"), "{said}");
    // No advice to sign in that cannot work with it.
    assert!(!said.contains("login`"), "{said}");
    let out = run_bounded(
        bare(home.path()).args(["login", "--config"]).arg(&cfg),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("placeholder") && err.contains("auth.client_id"),
        "{err}"
    );
    assert!(!err.contains("To sign in, open"), "{err}");
    // The agent and whoami say the same instead of "sign-in needed: run `outbox login`".
    let file = home.path().join("a.txt");
    std::fs::write(&file, "x").unwrap();
    let file = file.to_str().unwrap();
    for args in [
        &["run", "--once"][..],
        &["whoami"],
        &["items", "messages"],
        &["verify", "--all"],
        &["send", file, "--message", "AAMk"],
        &["mail", file, "--to", "a@example.com"],
    ] {
        let out = run_bounded(
            bare(home.path()).args(args).arg("--config").arg(&cfg),
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("placeholder"), "{}", stderr(&out));
    }
}

#[test]
fn service_install_without_user_systemd_writes_nothing_and_says_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    // The runtime dir pointed nowhere: a real user manager is never touched.
    let runtime = home.path().join("no-runtime");
    let probe = Command::new("systemctl")
        .args(["--user", "show-environment"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output();
    if matches!(&probe, Ok(o) if o.status.success()) {
        println!("SKIPPED: a user systemd instance answers even without a runtime dir");
        return;
    }
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
    let unit = xdg.join("systemd/user/outbox.service");
    let service = |action: &str| {
        run_bounded(
            bare(home.path())
                .env("XDG_CONFIG_HOME", &xdg)
                .env("XDG_RUNTIME_DIR", &runtime)
                .env_remove("DBUS_SESSION_BUS_ADDRESS")
                .args(["service", action, "--platform", "linux", "--config"])
                .arg(&cfg),
            Duration::from_secs(60),
        )
    };
    let out = service("install");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("no user systemd"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!unit.exists(), "the unit was written: {}", stdout(&out));
    assert!(!stdout(&out).contains("wrote"), "{}", stdout(&out));

    let out = service("status");
    assert!(stdout(&out).contains("not installed"), "{}", stdout(&out));

    // A unit left by an earlier install: not "installed", and uninstall removes it without
    // suggesting to install again.
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(&unit, "[Unit]\n").unwrap();
    let out = service("status");
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!said.contains("(installed)"), "{said}");
    assert!(said.contains("no user systemd"), "{said}");
    let out = service("uninstall");
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(!unit.exists(), "{said}");
    assert!(!said.contains("service install"), "{said}");
}

#[test]
fn the_manual_page_comes_with_the_binary_and_install_says_to_sign_in() {
    let home = tempfile::tempdir().unwrap();
    let out = run_bounded(bare(home.path()).arg("--help"), Duration::from_secs(20));
    let help = stdout(&out);
    assert!(help.contains("`outbox man`"), "{help}");
    assert!(!help.contains("`man outbox`"), "{help}");
    // Off a terminal: the page itself, as packaged (for `outbox man > outbox.1`).
    let out = run_bounded(bare(home.path()).arg("man"), Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let packaged = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/man/outbox.1"),
    )
    .unwrap();
    assert!(
        out.stdout == packaged,
        "`outbox man` is not packaging/man/outbox.1"
    );
    // scripts/install's next steps sign in before anything that needs it.
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install"),
    )
    .unwrap();
    let steps = script.split("next steps:").nth(1).unwrap();
    let at = |cmd: &str| {
        steps
            .find(cmd)
            .unwrap_or_else(|| panic!("no {cmd}: {steps}"))
    };
    assert!(at("outbox init") < at("outbox login"), "{steps}");
    assert!(at("outbox login") < at("outbox items"), "{steps}");
    assert!(at("outbox login") < at("outbox check"), "{steps}");
}

/// Each backticked `outbox ...` command in `text`.
fn hints(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|h| h.starts_with("outbox "))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_hint_per_cause_and_each_works_when_pasted() {
    let env = Env::new();
    let gone = env.sandbox.create_item("message", "me").await;
    env.sandbox.delete_item(&gone).await;
    env.write_config("", "");
    let file = env.path("a.txt");
    write_file(&file, 100, 1);
    // A deleted item: the hint lists items of the kind that was asked for, and it runs.
    let out = env.run(
        &["send", file.to_str().unwrap(), "--message", &gone],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let found = hints(&err);
    assert!(!found.is_empty(), "{err}");
    for (i, h) in found.iter().enumerate() {
        assert!(!found[..i].contains(h), "said twice: {err}");
        let pasted: Vec<&str> = h.split_whitespace().skip(1).collect();
        let out = env.run(&pasted, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(0), "`{h}`: {}", stderr(&out));
    }

    // The shared mailbox's 403 on an upload session: its explanation, not a second, opposite
    // one about permissions.
    let item = env
        .sandbox
        .create_item("message", "shared@sandbox.test")
        .await;
    env.sandbox
        .faults(serde_json::json!({"shared_mailbox_403": true}))
        .await;
    let big = env.path("big.bin");
    write_file(&big, 4 * MIB, 2);
    let out = env.run(
        &[
            "send",
            big.to_str().unwrap(),
            "--message",
            &item,
            "--user",
            "shared@sandbox.test",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("application permissions"), "{err}");
    assert!(!err.contains("check the account's permissions"), "{err}");
}

#[test]
fn check_says_to_sign_in_once() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nclient_id = \"1b2c3d4e-1111-2222-3333-444455556666\"\n[agent]\nstate_dir = '{}'\n",
            home.path().join("state").display()
        ),
    )
    .unwrap();
    let out = run_bounded(
        bare(home.path()).args(["check", "--config"]).arg(&cfg),
        Duration::from_secs(60),
    );
    let said = stdout(&out);
    let line = said.lines().find(|l| l.contains("sign-in")).unwrap();
    assert_eq!(line.matches("login`").count(), 1, "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_once_points_each_kind_of_left_over_at_the_rows_that_say_why() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("in");
    std::fs::create_dir_all(&folder).unwrap();
    // Sparse: costs no disk.
    let big = std::fs::File::create(folder.join("huge.iso")).unwrap();
    big.set_len(150 * MIB + 1).unwrap();
    drop(big);
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"m\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            folder.display()
        ),
    );
    let out = env.run(&["run", "--once"], Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let summary = err
        .lines()
        .find(|l| l.contains("not attached:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        summary.contains("`outbox status --state rejected`"),
        "{summary}"
    );
    assert!(!summary.contains("--state failed"), "{summary}");
    // Each hint runs as pasted, and the rows it lists are the rejected one.
    for h in hints(summary) {
        if h.contains(" ID") {
            continue;
        }
        let pasted: Vec<&str> = h.split_whitespace().skip(1).collect();
        let out = env.run(&pasted, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(0), "`{h}`: {}", stderr(&out));
        assert!(stdout(&out).contains("huge.iso"), "`{h}`: {}", stdout(&out));
    }
    // Cleared with cancel: run --once ends clean.
    let id = rows(&env)["huge.iso"]["id"].as_str().unwrap().to_string();
    let out = env.run(&["cancel", &id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["run", "--once"], Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

// Unix only: SIGHUP and the systemd unit's reload (Windows has neither).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_config_edit_is_said_to_be_reloaded_by_sighup_and_the_unit_can_reload() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("in");
    std::fs::create_dir_all(&folder).unwrap();
    let mapping = format!(
        "[[mapping]]\nname = \"m\"\nfolder = '{}'\nmessage = \"{item}\"\n",
        folder.display()
    );
    env.write_config("", &mapping);
    let agent = Agent::start(&env, &[]);
    agent_answers(&env).await;
    std::thread::sleep(Duration::from_millis(1100));
    env.write_config("# edited", &mapping);
    let out = env.run(&["status"], Duration::from_secs(30));
    let said = stdout(&out);
    let note = said
        .lines()
        .find(|l| l.starts_with("note:"))
        .unwrap_or_else(|| panic!("no note: {said}"));
    assert!(!note.contains("only at start"), "{note}");
    assert!(note.contains("kill -HUP"), "{note}");
    assert!(note.contains("systemctl --user reload outbox"), "{note}");
    let out = env.run(&["check"], Duration::from_secs(60));
    let said = stdout(&out);
    assert!(!said.contains("only at start"), "{said}");
    assert!(said.contains("kill -HUP"), "{said}");
    agent.stop();
    // The unit `service install` writes reloads with SIGHUP.
    let out = env.run(
        &["service", "install", "--dry-run", "--platform", "linux"],
        Duration::from_secs(30),
    );
    assert!(
        stdout(&out).contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn with_config_path_the_agents_log_hints_name_that_path_too() {
    let home = tempfile::tempdir().unwrap();
    let folder = home.path().join("in");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("a.txt"), "x").unwrap();
    let cfg = home.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[graph]\nbase_url = \"http://127.0.0.1:9/v1.0\"\n[auth]\nclient_id = \"1b2c3d4e-1111-2222-3333-444455556666\"\nauthority = \"http://127.0.0.1:9\"\n[agent]\nstate_dir = '{}'\nsettle = \"300ms\"\n[[mapping]]\nname = \"m\"\nfolder = '{}'\nmessage = \"AAA\"\n",
            home.path().join("state").display(),
            folder.display()
        ),
    )
    .unwrap();
    let out = run_bounded(
        bare(home.path())
            .args(["run", "--once", "--config"])
            .arg(&cfg),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("ERROR"), "no log line: {err}");
    assert!(!err.contains("`outbox login`"), "{err}");
    assert!(
        err.contains(&format!("`outbox --config {} login`", cfg.display())),
        "{err}"
    );
}

#[test]
fn with_no_mapping_run_and_check_point_at_something_that_runs() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nmethod = \"token_env\"\ntoken_env = \"OUTBOX_TEST_TOKEN\"\n[agent]\nstate_dir = '{}'\n",
            home.path().join("state").display()
        ),
    )
    .unwrap();
    for args in [&["run", "--once"][..], &["check"]] {
        let out = run_bounded(
            bare(home.path())
                .env("OUTBOX_TEST_TOKEN", "t")
                .args(args)
                .arg("--config")
                .arg(&cfg),
            Duration::from_secs(60),
        );
        let said = format!("{}{}", stdout(&out), stderr(&out));
        let line = said
            .lines()
            .find(|l| l.contains("no [[mapping]]"))
            .unwrap_or_else(|| panic!("{args:?}: {said}"));
        assert!(!line.contains("config.example.toml"), "{line}");
        let found = hints(line);
        assert!(!found.is_empty(), "{line}");
        for h in found {
            let pasted: Vec<&str> = h.split_whitespace().skip(1).collect();
            let out = run_bounded(bare(home.path()).args(&pasted), Duration::from_secs(30));
            assert_eq!(out.status.code(), Some(0), "`{h}`: {}", stderr(&out));
            assert!(
                stdout(&out).contains("[[mapping]]"),
                "`{h}` says nothing of [[mapping]]"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_once_says_a_failure_of_a_mapping_no_longer_configured_is_cleared_by_cancel() {
    let env = Env::new();
    three_failed(&env, "").await;
    // The mapping goes away (renamed, pointed elsewhere): its failures stay in the ledger.
    let item = env.sandbox.create_item("message", "me").await;
    let other = env.path("other");
    std::fs::create_dir_all(&other).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"n\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            other.display()
        ),
    );
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let summary = err
        .lines()
        .find(|l| l.contains("not attached:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        summary.contains("3 failed of a mapping no longer in the config"),
        "{summary}"
    );
    assert!(summary.contains("`outbox cancel ID`"), "{summary}");
    assert!(!summary.contains("retry --failed"), "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_does_not_queue_a_failure_of_a_mapping_no_longer_configured() {
    let env = Env::new();
    three_failed(&env, "").await;
    let r = rows(&env);
    let a = r["a.txt"]["id"].as_str().unwrap().to_string();
    let item = env.sandbox.create_item("message", "me").await;
    let other = env.path("other");
    std::fs::create_dir_all(&other).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"n\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            other.display()
        ),
    );
    let out = env.run(&["retry", &a], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("no longer in the config"), "{err}");
    assert!(err.contains(&format!("`outbox cancel {a}`")), "{err}");
    let out = env.run(&["retry", "--failed"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(!said.contains("queued again"), "{said}");
    assert_eq!(said.matches("no longer in the config").count(), 3, "{said}");
    // Nothing was queued: every one is still failed.
    for (n, row) in rows(&env) {
        assert_eq!(row["state"], "failed", "{n}");
    }
    // Through a running agent too.
    let agent = Agent::start(&env, &[]);
    agent_answers(&env).await;
    let out = env.run(&["retry", &a], Duration::from_secs(30));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!said.contains("queued again"), "{said}");
    assert!(said.contains("no longer in the config"), "{said}");
    agent.stop();
}

#[test]
fn service_install_without_the_service_manager_writes_nothing() {
    if Command::new("launchctl").arg("help").output().is_ok() {
        println!("SKIPPED: launchctl is here");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nmethod = \"token_env\"\ntoken_env = \"OUTBOX_TEST_TOKEN\"\n[agent]\nstate_dir = '{}'\n",
            home.path().join("state").display()
        ),
    )
    .unwrap();
    let out = run_bounded(
        bare(home.path())
            .args(["service", "install", "--platform", "macos", "--config"])
            .arg(&cfg),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("launchctl"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was written"),
        "{}",
        stderr(&out)
    );
    assert!(
        !home
            .path()
            .join("Library/LaunchAgents/com.outbox.agent.plist")
            .exists(),
        "{}",
        stdout(&out)
    );
}

#[test]
fn json_stays_json_whatever_the_config_path() {
    let home = tempfile::tempdir().unwrap();
    // Windows refuses `"` in a name; its paths hold `\` anyway.
    let cfg = home.path().join(if cfg!(windows) {
        "my 'odd' conf.toml"
    } else {
        "my \"odd\\ conf.toml"
    });
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nclient_id = \"1b2c3d4e-1111-2222-3333-444455556666\"\n[agent]\nstate_dir = '{}'\n",
            home.path().join("state").display()
        ),
    )
    .unwrap();
    let out = run_bounded(
        bare(home.path())
            .args(["check", "--json", "--config"])
            .arg(&cfg),
        Duration::from_secs(60),
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    assert!(v.to_string().contains("login"), "{v}");
}

/// A file queued for a mapping that is then removed from the config: `run --once` fails it
/// ("no longer in the config"), says so and exits 1, instead of waiting for ever.
#[tokio::test(flavor = "multi_thread")]
async fn run_once_ends_when_a_queued_files_mapping_was_removed() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let (a, b) = (env.path("a"), env.path("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let m = |name: &str, dir: &std::path::Path| {
        format!(
            "[[mapping]]\nname = \"{name}\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            dir.display()
        )
    };
    env.write_config("", &format!("{}\n{}", m("a", &a), m("b", &b)));
    write_file(&b.join("x.txt"), 100, 7);
    // Queued while the token is refused.
    let out = run_bounded(
        env.cmd()
            .env("OUTBOX_TEST_TOKEN", "refused")
            .args(["run", "--once"]),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    env.write_config("", &m("a", &a));
    let started = std::time::Instant::now();
    let out = env.run(&["run", "--once"], std::time::Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        stderr(&out).contains("no longer in the config"),
        "{}",
        stderr(&out)
    );
}

/// `outbox send FILE` spawned with stderr read line by line into `lines` as it comes.
fn send_streaming(
    env: &Env,
    file: &std::path::Path,
    item: &str,
) -> (
    std::process::Child,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
) {
    use std::io::BufRead;
    let mut child = env
        .cmd()
        .args(["send", file.to_str().unwrap(), "--message", item])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (l, err) = (lines.clone(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    (child, lines, reader)
}

/// Trial 4, G5: `outbox send` throttled by Graph says what it waits for and until when (it
/// was silent off a terminal), and interrupted then, its last line is true to what was in
/// flight: an 8-byte file goes by one POST, answered 429, so nothing reached the item and no
/// upload session ever existed (it said "its upload session was deleted").
#[tokio::test(flavor = "multi_thread")]
async fn send_says_it_is_throttled_and_an_interrupt_names_no_session_that_never_was() {
    let env = Env::new();
    env.write_config("", "");
    let item = env.sandbox.create_item("message", "me").await;
    let file = env.path("sthr.txt");
    std::fs::write(&file, b"8 bytes!").unwrap();
    env.sandbox
        .faults(serde_json::json!({"fail_rate": 1.0, "status": 429, "retry_after": 20}))
        .await;
    let (child, lines, reader) = send_streaming(&env, &file, &item);
    let said = |text: &'static str| {
        let lines = lines.clone();
        move || {
            let found = lines.lock().unwrap().iter().any(|l| l.contains(text));
            async move { found }
        }
    };
    wait_until(
        Duration::from_secs(30),
        "send to say it is throttled",
        said("throttled by Graph"),
    )
    .await;
    terminate(child.id());
    let out = run_bounded_child(child, Duration::from_secs(30));
    reader.join().unwrap();
    let err = lines.lock().unwrap().join("\n");
    assert_eq!(out.status.code(), Some(130), "{err}");
    let wait = err
        .lines()
        .find(|l| l.contains("throttled by Graph"))
        .unwrap();
    assert!(
        wait.contains("Retry-After: 20 s")
            && wait.contains("sending again at")
            && wait.contains("UTC"),
        "{wait}"
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("was not attached (nothing of it reached the item)"),
        "{err}"
    );
    assert!(!err.contains("session"), "{err}");
    assert_eq!(env.sandbox.attachments(&item).await.len(), 0);
}

/// Trial 4, G5's sibling: interrupted while its one POST is out, `send` cannot know whether it
/// landed, and says so (with the command that finds it rather than attaching it twice) instead
/// of "was not attached".
#[tokio::test(flavor = "multi_thread")]
async fn send_interrupted_with_its_post_in_flight_says_it_may_have_been_attached() {
    let env = Env::new();
    env.write_config("", "");
    let item = env.sandbox.create_item("message", "me").await;
    let file = env.path("slow.txt");
    write_file(&file, 1000, 3);
    env.sandbox
        .faults(serde_json::json!({"fail_next": [
            {"route": "post", "action": "delay", "delay_ms": 20000}
        ]}))
        .await;
    let (child, lines, reader) = send_streaming(&env, &file, &item);
    wait_until(Duration::from_secs(30), "the POST to be out", || async {
        env.sandbox.stats().await["peak_concurrent_requests"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    })
    .await;
    terminate(child.id());
    let out = run_bounded_child(child, Duration::from_secs(30));
    reader.join().unwrap();
    let err = lines.lock().unwrap().join("\n");
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("may have been attached"), "{err}");
    assert!(err.contains("--if-exists skip"), "{err}");
    assert!(!err.contains("was not attached"), "{err}");
}

/// Trial 4, G9: `check` said a config's errors in rounds: a mapping with two targets and a bad
/// address first, then (once those were fixed) an unknown placeholder and overlapping folders.
/// One run now says them all, and a mapping's error leaves the next mappings checked; a folder
/// in error leaves the rest of its own mapping checked too.
#[test]
fn check_lists_every_error_of_the_config_in_one_run() {
    let home = tempfile::tempdir().unwrap();
    let d = home.path();
    for sub in ["reports/sub", "inv", "x"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let folder = |rel: &str| toml_path(&d.join(rel));
    let cfg = d.join("multi.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nmethod = \"token_env\"\n\n[agent]\nstate_dir = {}\n\n\
             [[mapping]]\nname = \"reports\"\nfolder = {}\nmessage = \"AAMkAGI2TG93AAA=\"\n\n\
             [[mapping]]\nname = \"both\"\nfolder = {}\nmessage = \"AAMkAGI2TG93AAA=\"\nevent = \"AAMkAGI2TG93AAB=\"\n\n\
             [[mapping]]\nname = \"invoices\"\nfolder = {}\n\n[mapping.new_message]\nto = [\"ap-at-contoso\"]\nsubject = \"Invoice {{stme}}\"\n\n\
             [[mapping]]\nname = \"sub\"\nfolder = {}\nmessage = \"AAMkAGI2TG93AAA=\"\n\n\
             [[mapping]]\nname = \"novar\"\nfolder = \"$OUTBOX_NO_SUCH_VAR/x\"\nmessage = \"AAMkAGI2TG93AAA=\"\ninclude = [\"[bad\"]\n",
            folder("state"),
            folder("reports"),
            folder("x"),
            folder("inv"),
            folder("reports/sub"),
        ),
    )
    .unwrap();
    let out = run_bounded(
        bare(d)
            .env_remove("OUTBOX_NO_SUCH_VAR")
            .arg("--config")
            .arg(&cfg)
            .arg("check"),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(78), "{}", stdout(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    for (key, what) in [
        ("mapping[1].event", "exactly one target"),
        ("mapping[2].new_message.to", "has no @"),
        (
            "mapping[2].new_message.subject",
            "unknown placeholder {stme}",
        ),
        (
            "mapping[3].folder",
            "inside the folder of mapping \"reports\"",
        ),
        ("mapping[4].folder", "OUTBOX_NO_SUCH_VAR"),
        ("mapping[4].include[0]", "bad glob"),
    ] {
        assert!(
            said.lines().any(|l| l.contains(key) && l.contains(what)),
            "no `{key}: …{what}…` line:\n{said}"
        );
    }
}

/// Trial 4, G4: one 244-character file name padded every row of `status`'s table to it, so
/// every NOTE began near column 290. A long FILE is shortened in its middle (its start and
/// its extension kept, two such names still told apart), the table says so, and `--json` keeps
/// every path whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_file_name_does_not_push_the_note_column_away() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"m\"\nfolder = {}\nmessage = \"{item}\"\n",
            toml_path(&folder)
        ),
    );
    let long_a = format!("{}-a.pdf", "x".repeat(238));
    let long_b = format!("{}-b.pdf", "x".repeat(238));
    for (name, seed) in [(long_a.as_str(), 1), (long_b.as_str(), 2), ("short.txt", 3)] {
        write_file(&folder.join(name), 100, seed);
    }
    // Queued while the token is refused: rows that wait, with a NOTE each.
    let out = run_bounded(
        env.cmd()
            .env("OUTBOX_TEST_TOKEN", "refused")
            .args(["run", "--once"]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let so = stdout(&env.run(&["status"], Duration::from_secs(30)));
    let header = so.lines().find(|l| l.starts_with("ID")).unwrap();
    let at = header.find("NOTE").unwrap_or_else(|| panic!("{so}"));
    assert!(at < 120, "NOTE starts at column {at}:\n{so}");
    let rows: Vec<&str> = so.lines().filter(|l| l.contains(".pdf")).collect();
    assert_eq!(rows.len(), 2, "{so}");
    assert!(rows.iter().all(|r| r.contains('…')), "{so}");
    assert!(
        rows.iter().any(|r| r.contains("-a.pdf")) && rows.iter().any(|r| r.contains("-b.pdf")),
        "{so}"
    );
    assert!(so.contains("--json"), "{so}");
    let json = stdout(&env.run(&["status", "--json"], Duration::from_secs(30)));
    assert!(json.contains(&long_a) && json.contains(&long_b));
}
