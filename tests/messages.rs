//! What a person reads, through the real binary: log colour, error messages and hints, `--help`,
//! the no-config answer. The text itself is snapshotted with `insta` (tests/snapshots/): a change
//! of wording shows up as a reviewed diff. `INSTA_UPDATE=always` rewrites the snapshots.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A temp dir with a config that needs no network (token from `OUTBOX_TEST_TOKEN`) and one mapped
/// folder, `in/`, to an item that is never asked about while the folder is empty.
pub struct Bare {
    pub dir: tempfile::TempDir,
}

impl Bare {
    pub fn new() -> Bare {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("in")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let cfg = format!(
            "[graph]\nbase_url = \"http://127.0.0.1:9/v1.0\"\n\n[auth]\nmethod = \"token_env\"\n\
             token_env = \"OUTBOX_TEST_TOKEN\"\n\n[agent]\nstate_dir = \"{}\"\n\n[[mapping]]\n\
             folder = \"{}\"\nmessage = \"AAMkAD-demo\"\n",
            dir.path().join("state").display(),
            dir.path().join("in").display()
        );
        std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
        Bare { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// outbox with this config, a clean environment and a token.
    pub fn cmd(&self) -> Command {
        let mut c = clean(&self.dir.path().join("home"));
        c.env("OUTBOX_CONFIG", self.config())
            .env("OUTBOX_TEST_TOKEN", TOKEN);
        c
    }
}

/// outbox with HOME at `home` and nothing from the caller's environment that outbox reads.
pub fn clean(home: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env("HOME", home)
        .env_remove("OUTBOX_CONFIG")
        .env_remove("OUTBOX_ACCESS_TOKEN")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env_remove("OUTBOX_CRASH_AT");
    c
}

/// The temp dir as `[TMP]`, so a snapshot reads the same on every run.
pub fn masked(text: &str, dir: &Path) -> String {
    text.replace(&dir.display().to_string(), "[TMP]")
}

#[test]
fn logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    let bare = Bare::new();
    // stderr to a pipe (a file, the journal): no escape codes.
    let out = run_bounded(bare.cmd().args(["run", "--once"]), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("watching"), "{err}");
    assert!(!err.contains('\u{1b}'), "escape codes in a pipe: {err:?}");

    // stderr on a terminal (a pty from script(1)): colour, unless NO_COLOR is set.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED the terminal half: script(1) is not installed");
        return;
    }
    let on_tty = |no_color: Option<&str>| {
        let mut c = bare.cmd();
        c.args(["-qec", &format!("{} run --once", bin()), "/dev/null"]);
        let mut c = {
            let mut s = Command::new("script");
            for (k, v) in c.get_envs() {
                match v {
                    Some(v) => s.env(k, v),
                    None => s.env_remove(k),
                };
            }
            s.args(c.get_args());
            s
        };
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let out = run_bounded(&mut c, Duration::from_secs(30));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_tty(None);
    assert!(coloured.contains("watching"), "{coloured}");
    assert!(
        coloured.contains('\u{1b}'),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = on_tty(Some("1"));
    assert!(plain.contains("watching"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "colour despite NO_COLOR: {plain:?}"
    );
}

#[test]
fn a_hint_that_says_bearer_token_is_printed_whole() {
    let bare = Bare::new();
    let out = run_bounded(
        bare.cmd().env("OUTBOX_TEST_TOKEN", "").arg("whoami"),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("REDACTED"), "{err}");
    insta::assert_snapshot!("whoami_empty_token_env", err);
}

#[test]
fn without_a_config_every_command_says_so_exits_78_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let commands: &[&[&str]] = &[
        &["status"],
        &["status", "--json"],
        &["retry", "--failed"],
        &["retry", "some-id"],
        &["cancel", "some-id"],
        &["verify", "--all"],
        &["whoami"],
        &["login"],
        &["logout"],
        &["items", "messages"],
        &["check"],
        &["run", "--once"],
        &["send", "/etc/hostname", "--message", "AAMk"],
    ];
    for args in commands {
        let out = run_bounded(clean(&home).args(*args), Duration::from_secs(30));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "outbox {args:?}: {err}");
        assert!(
            err.contains("no config file") && err.contains("outbox init"),
            "outbox {args:?}: {err}"
        );
        assert!(
            !err.contains("OUTBOX_ACCESS_TOKEN"),
            "outbox {args:?} named an auth method nobody chose: {err}"
        );
        let made: Vec<_> = walk(&home);
        assert!(made.is_empty(), "outbox {args:?} created {made:?}");
    }
    let out = run_bounded(clean(&home).arg("status"), Duration::from_secs(30));
    insta::assert_snapshot!("status_without_config", masked(&stderr(&out), dir.path()));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}
