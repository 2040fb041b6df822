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
