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
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
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
            "[[mapping]]\nname = \"m\"\nfolder = \"{}\"\nmessage = \"{item}\"\n",
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
