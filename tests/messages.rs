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
             token_env = \"OUTBOX_TEST_TOKEN\"\n\n[agent]\nstate_dir = '{}'\n\n[[mapping]]\n\
             folder = '{}'\nmessage = \"AAMkAD-demo\"\n",
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

/// The temp dir as `[TMP]`, so a snapshot reads the same on every run; on Windows `\\` as `/`,
/// so one snapshot holds for both (the separators are the platform's, not what is tested).
pub fn masked(text: &str, dir: &Path) -> String {
    let text = text.replace(&dir.display().to_string(), "[TMP]");
    if cfg!(windows) {
        text.replace('\\', "/")
    } else {
        text
    }
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
        // `check` says it as a finding on stdout, the others on stderr.
        let err = format!("{}{}", stdout(&out), stderr(&out));
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
    if cfg!(windows) {
        // The default place is the profile's (%APPDATA%), which HOME does not move.
        let err = stderr(&out);
        assert!(
            err.contains("\\outbox\\config\\config.toml: no config file here"),
            "{err}"
        );
    } else {
        insta::assert_snapshot!("status_without_config", masked(&stderr(&out), dir.path()));
    }
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

fn send_args<'a>(file: &'a Path, flag: &'a str, item: &'a str) -> Vec<&'a str> {
    vec!["send", file.to_str().unwrap(), flag, item]
}

#[tokio::test(flavor = "multi_thread")]
async fn send_skips_a_file_already_there_says_so_and_attach_overrides() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let file = env.path("report.pdf");
    write_file(&file, 20_000, 1);
    // No mapping for the item: the default is skip, as a mapping's is.
    env.write_config("", "");
    let first = env.run(
        &send_args(&file, "--message", &item),
        Duration::from_secs(60),
    );
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let id = stdout(&first).trim().to_string();
    assert!(
        stderr(&first).contains("attached report.pdf (19.5 KiB) to message"),
        "{}",
        stderr(&first)
    );
    let again = env.run(
        &send_args(&file, "--message", &item),
        Duration::from_secs(60),
    );
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        stdout(&again).trim(),
        id,
        "the id of the attachment already there"
    );
    assert!(
        stderr(&again)
            .contains("already there with the same bytes (if_exists = \"skip\"); not sent again"),
        "{}",
        stderr(&again)
    );
    assert_eq!(env.sandbox.attachments(&item).await.len(), 1);

    // A mapping that targets the item decides: its `if_exists = "attach"` sends a second copy.
    std::fs::create_dir_all(env.path("drop")).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nfolder = '{}'\nmessage = \"{item}\"\nif_exists = \"attach\"\n",
            env.path("drop").display()
        ),
    );
    let out = env.run(
        &send_args(&file, "--message", &item),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.sandbox.attachments(&item).await.len(), 2);
    // And the flag decides over the mapping.
    let mut args = send_args(&file, "--message", &item);
    args.extend(["--if-exists", "skip"]);
    let out = env.run(&args, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.sandbox.attachments(&item).await.len(), 2);
}

// Unix only: SIGINT to another process (Ctrl-C reaches only its own console on Windows).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn send_interrupted_exits_130_and_leaves_no_session() {
    let env = Env::new();
    env.write_config("chunk_size = \"1MiB\"", "");
    let item = env.sandbox.create_item("message", "me").await;
    let file = env.path("big.bin");
    write_file(&file, 6 * MIB, 2);
    env.sandbox
        .faults(serde_json::json!({"fail_next": [
            {"route": "put", "action": "delay", "delay_ms": 10},
            {"route": "put", "action": "delay", "delay_ms": 20000}
        ]}))
        .await;
    let child = env
        .cmd()
        .args(send_args(&file, "--message", &item))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    wait_until(
        Duration::from_secs(30),
        "the upload to be under way",
        || async {
            env.sandbox.stats().await["open_sessions"]
                .as_u64()
                .unwrap_or(0)
                > 0
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted: big.bin (6.0 MiB) to message"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
    assert_eq!(env.sandbox.attachments(&item).await.len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hints_point_the_right_way() {
    let env = Env::new();
    env.write_config("", "");
    let event = env.sandbox.create_item("event", "me").await;
    let sent = env.sandbox.create_item("message", "me").await;
    env.sandbox
        .admin(
            reqwest::Method::PATCH,
            &format!("/items/{}", urlenc(&sent)),
            Some(serde_json::json!({"isDraft": false})),
        )
        .await;
    let file = env.path("a.txt");
    write_file(&file, 100, 1);

    // An event's id given to --message: not just "not found", but "use --event".
    let out = env.run(
        &send_args(&file, "--message", &event),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("that id is an event of this mailbox, not a message: use --event ID"),
        "{}",
        stderr(&out)
    );

    // A 403 on a sent message says it is not a draft, not to check permissions.
    let out = env.run(
        &send_args(&file, "--message", &sent),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the message is not a draft"), "{err}");
    assert!(!err.contains("check the account's permissions"), "{err}");
    insta::assert_snapshot!("send_to_a_sent_message", err);

    // A refused token_env token: put a fresh one in the variable; `outbox login` would refuse.
    let out = run_bounded(
        env.cmd()
            .env("OUTBOX_TEST_TOKEN", "expired-token-0x1")
            .args(send_args(&file, "--message", &event)),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("expired-token-0x1"), "{err}");
    insta::assert_snapshot!("send_with_a_refused_token_env_token", err);

    // In the config: `message = <an event's id>` is named in `check` as such.
    std::fs::create_dir_all(env.path("f")).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"cal\"\nfolder = '{}'\nmessage = \"{event}\"\n",
            env.path("f").display()
        ),
    );
    let out = env.run(&["check"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(
            "error  mapping cal message: not found: that id is an event of this mailbox, not a message: write it as `event = \"...\"` in the mapping"
        ),
        "{}",
        stdout(&out)
    );
}

#[test]
fn every_command_and_option_has_help_text() {
    use clap::CommandFactory;
    let mut root = outbox::cli::Cli::command();
    root.build();
    let mut missing = Vec::new();
    let mut look = |cmd: &clap::Command, path: &str| {
        if cmd.get_about().is_none() {
            missing.push(path.to_string());
        }
        for a in cmd.get_arguments() {
            if !a.is_hide_set() && a.get_help().is_none() {
                missing.push(format!("{path} {}", a.get_id()));
            }
        }
    };
    look(&root, "outbox");
    for sc in root.get_subcommands().filter(|c| c.get_name() != "help") {
        look(sc, &format!("outbox {}", sc.get_name()));
    }
    assert!(missing.is_empty(), "no help text: {missing:?}");
}

#[test]
fn help_snapshots() {
    let home = tempfile::tempdir().unwrap();
    let names = [
        "",
        "run",
        "send",
        "mail",
        "status",
        "retry",
        "cancel",
        "check",
        "verify",
        "items",
        "service",
        "sandbox",
        "demo",
        "completions",
    ];
    for name in names {
        let mut c = clean(home.path());
        c.env("COLUMNS", "100");
        if !name.is_empty() {
            c.arg(name);
        }
        let out = run_bounded(c.arg("--help"), Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let label = if name.is_empty() { "outbox" } else { name };
        insta::assert_snapshot!(format!("help_{label}"), stdout(&out));
    }
    // sandbox, demo and completions read no config: not offered, refused when given.
    for name in ["sandbox", "demo", "completions"] {
        let out = run_bounded(
            clean(home.path()).args([name, "--help"]),
            Duration::from_secs(20),
        );
        assert!(
            !stdout(&out).contains("--config"),
            "{name}: {}",
            stdout(&out)
        );
        let mut c = clean(home.path());
        c.args(["--config", "x.toml", name]);
        if name == "completions" {
            c.arg("bash");
        }
        let out = run_bounded(&mut c, Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("reads no config file"),
            "{}",
            stderr(&out)
        );
    }
    // retry and verify with nothing to act on name the flag that does it all.
    let out = run_bounded(clean(home.path()).arg("retry"), Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!("retry_without_arguments", stderr(&out));
    let out = run_bounded(clean(home.path()).arg("verify"), Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--all"), "{}", stderr(&out));
    // An unknown --state lists the states.
    let out = run_bounded(
        clean(home.path()).args(["status", "--state", "stuck"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("settling, pending, uploading, done, failed, rejected, canceled"));
}

#[test]
fn completions_are_printed_for_each_shell() {
    let home = tempfile::tempdir().unwrap();
    for (shell, needle) in [
        ("bash", "_outbox()"),
        ("zsh", "#compdef outbox"),
        ("fish", "complete -c outbox"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[outbox]"),
    ] {
        let out = run_bounded(
            clean(home.path()).args(["completions", shell]),
            Duration::from_secs(20),
        );
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains(needle), "{shell}");
    }
    // What the packages ship is what the binary prints.
    let out = run_bounded(
        clean(home.path()).args(["completions", "bash"]),
        Duration::from_secs(20),
    );
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/completions/outbox.bash"),
    )
    .unwrap();
    assert_eq!(stdout(&out), shipped);
}

#[test]
fn every_config_error_is_reported_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("f")).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[graph]\nbase_url = \"ftp://x\"\n\n[auth]\nmethod = \"token_env\"\n\n[agent]\n\
             chunk_size = \"9MiB\"\nbogus = 1\nsettle = \"soon\"\n\n[[mapping]]\nfolder = '{0}'\n\
             message = \"a\"\nevent = \"b\"\ncolour = \"red\"\n\n[[mapping]]\nname = \"f\"\n\
             folder = '{0}'\nmessage = \"c\"\n",
            dir.path().join("f").display()
        ),
    )
    .unwrap();
    let out = run_bounded(
        clean(&dir.path().join("home"))
            .arg("--config")
            .arg(&cfg)
            .arg("check"),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    // Each a finding of check's own, on stdout.
    let err = masked(&stdout(&out), dir.path());
    for key in [
        ":2: graph.base_url",
        ":8: agent.chunk_size",
        ":9: agent.bogus",
        ":10: agent.settle",
        ":15: mapping[0].event",
        ":16: mapping[0].colour",
        ":19: mapping[1].name",
    ] {
        assert!(err.contains(key), "{key} missing in:\n{err}");
    }
    insta::assert_snapshot!("config_errors_all_at_once", err);
}

/// Where `systemctl --user` has no user manager to talk to (a container, a session without
/// lingering), `service install` says what to do instead of only relaying "Failed to connect to
/// bus". The runtime dir is pointed nowhere, so a real user manager is never touched.
#[cfg(target_os = "linux")]
#[test]
fn service_install_without_a_user_systemd_says_what_to_do() {
    let bare = Bare::new();
    let home = bare.dir.path().join("home");
    let out = run_bounded(
        bare.cmd()
            .args(["service", "install"])
            .env("XDG_RUNTIME_DIR", bare.dir.path().join("no-runtime"))
            .env_remove("DBUS_SESSION_BUS_ADDRESS"),
        Duration::from_secs(30),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("loginctl enable-linger"), "{err}");
    assert!(err.contains("under the supervisor you have"), "{err}");
    // Nothing is written that no systemd can run (issue 22): it asks first.
    assert!(!home.join(".config/systemd/user/outbox.service").exists());
}

/// `outbox sandbox` prints, after its `listening` line, the config lines that point outbox at
/// it; pasted into a config as they are, they work: a device-code sign-in approved with the
/// Approve button of the sandbox's device-login page, then `whoami`, over `--tls`.
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_says_how_to_point_outbox_at_it_and_its_login_page_approves() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sandbox");
    let mut sandbox = Command::new(bin())
        .args(["sandbox", "--tls", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sandbox.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let origin = first.strip_prefix("listening ").unwrap().to_string();
    let mut printed = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        let last = l.starts_with("# Items to attach to");
        printed.push(l);
        if last {
            break;
        }
    }
    let printed = printed.join("\n");
    let shown = printed
        .replace(&origin, "https://127.0.0.1:[PORT]")
        .replace(&data.display().to_string(), "[DATA]");
    // Windows: the CA's path is a TOML literal string there ('C:\…\ca.pem', its `\` no
    // escape), written here as on Unix so one snapshot holds for both.
    let shown = if cfg!(windows) {
        shown.replace("'[DATA]\\ca.pem'", "\"[DATA]/ca.pem\"")
    } else {
        shown
    };
    insta::assert_snapshot!("sandbox_config_lines", shown);

    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "{printed}\n[agent]\nstate_dir = '{}'\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let home = dir.path().join("home");
    let mut login = clean(&home)
        .env("OUTBOX_CONFIG", &cfg)
        .arg("login")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(login.stderr.take().unwrap()).lines();
    let prompt = err.next().unwrap().unwrap();
    let code = prompt
        .split("enter the code ")
        .nth(1)
        .unwrap_or_else(|| panic!("{prompt}"))
        .trim()
        .to_string();
    assert!(
        prompt.contains(&format!("{origin}/devicelogin")),
        "{prompt}"
    );

    // The page a person opens, then its Approve button (a plain form POST).
    let pem = std::fs::read(data.join("ca.pem")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let page = http
        .get(format!("{origin}/devicelogin?code={code}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(">Approve</button>") && page.contains(&code),
        "{page}"
    );
    let done = http
        .post(format!("{origin}/devicelogin"))
        .form(&[("user_code", code.as_str()), ("action", "approve")])
        .send()
        .await
        .unwrap();
    assert!(done.status().is_success());
    assert!(done.text().await.unwrap().contains("approved"));
    let out = login.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("signed in as"), "{}", stdout(&out));
    let out = run_bounded(
        clean(&home).env("OUTBOX_CONFIG", &cfg).arg("whoami"),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A wrong code gets a page that says so.
    let bad = http
        .post(format!("{origin}/devicelogin"))
        .form(&[("user_code", "NOPE-NOPE"), ("action", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 404);
    assert!(bad
        .text()
        .await
        .unwrap()
        .contains("no pending sign-in has that code"));
    let _ = sandbox.kill();
    let _ = sandbox.wait();
}

// Unix only: ended by SIGINT (Ctrl-C reaches only its own console on Windows).
#[cfg(unix)]
/// `outbox demo` with no options: three sample files attached without a word from the user, a
/// line saying what the folder ignores, and each ignored name reported once in the demo's own
/// words; no raw log line on stderr. Ctrl-C ends it with exit 0.
#[test]
fn the_demo_starts_with_samples_and_says_what_it_ignores() {
    use std::io::Read;
    let cwd = tempfile::tempdir().unwrap();
    let folder = cwd.path().join("outbox-demo").join("attach");
    std::fs::create_dir_all(folder.join("a subfolder")).unwrap();
    std::fs::write(folder.join(".hidden"), "x").unwrap();
    std::fs::write(folder.join("draft.tmp"), "x").unwrap();
    let mut child = clean(&cwd.path().join("home"))
        .arg("demo")
        .current_dir(cwd.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut so = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = so.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut out = String::new();
    let start = std::time::Instant::now();
    while out.matches("  attached  ").count() < 3
        || !out.contains("draft.tmp")
        || !out.contains("  mailed    ")
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the demo did not attach its samples:\n{out}"
        );
        if let Ok(b) = rx.recv_timeout(Duration::from_millis(200)) {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    while let Ok(b) = rx.recv_timeout(Duration::from_millis(500)) {
        out.push_str(&String::from_utf8_lossy(&b));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert!(err.trim().is_empty(), "raw lines on stderr: {err}");
    // Three to attach, one to mail.
    assert_eq!(out.matches("  dropped   ").count(), 4, "{out}");
    assert_eq!(out.matches(") to mail").count(), 1, "{out}");
    assert!(out.contains("  mailed    \"outbox demo: invoice 2026-0042.pdf\" to demo@example.com with invoice 2026-0042.pdf"), "{out}");
    assert!(
        out.contains("ignored there: subfolders, and names matching .*"),
        "{out}"
    );
    assert!(
        out.contains("  ignored   a subfolder: a subfolder"),
        "{out}"
    );
    assert!(
        out.contains("  ignored   .hidden: matches an exclude pattern"),
        "{out}"
    );
    assert!(
        out.contains("  ignored   draft.tmp: matches an exclude pattern"),
        "{out}"
    );
    assert_eq!(
        out.matches("ignored   .hidden").count(),
        1,
        "once each: {out}"
    );
}

/// `status` says whether an agent works on the entries (its pid), and a row an agent left
/// `uploading` when it stopped says it is interrupted and resumes at the next start.
#[tokio::test(flavor = "multi_thread")]
async fn status_names_the_agent_and_an_interrupted_upload() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    write_file(&folder.join("big.bin"), 6 * MIB, 7);
    env.write_config(
        "chunk_size = \"1MiB\"",
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            folder.display()
        ),
    );
    env.sandbox
        .faults(serde_json::json!({"fail_next": [
            {"route": "put", "action": "delay", "delay_ms": 10},
            {"route": "put", "action": "delay", "delay_ms": 60000}
        ]}))
        .await;
    let agent = Agent::start(&env, &[]);
    let pid = agent.child.id();
    let start = std::time::Instant::now();
    let table = loop {
        let out = env.run(&["status"], Duration::from_secs(30));
        let t = stdout(&out);
        if t.contains("uploading") {
            break t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never uploading: {t}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        table.starts_with(&format!("agent running (pid {pid}); state dir ")),
        "{table}"
    );
    assert!(!table.contains("interrupted"), "{table}");

    agent.kill9();
    let out = env.run(&["status"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.starts_with("agent not running; state dir "),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.contains("big.bin"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("uploading"), "{row}");
    assert!(row.ends_with("interrupted; resumes at next start"), "{row}");
    assert!(table.lines().nth(1).unwrap().ends_with("NOTE"), "{table}");
}

/// `run --once` says what is left from earlier runs and exits 1 while anything is: a failure
/// that no new version of the file will retry stays visible until it is retried.
#[tokio::test(flavor = "multi_thread")]
async fn run_once_counts_failures_left_from_earlier_runs() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    write_file(&folder.join("a.txt"), 100, 1);
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            folder.display()
        ),
    );
    // A permanent refusal, once: the entry fails.
    env.sandbox
        .faults(serde_json::json!({"fail_next": [{"route": "post", "status": 400}]}))
        .await;
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // Nothing changed on disk: this run tries nothing, and still says what is left.
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "outbox: not attached: 1 failed (`outbox status --state failed` says why; fix the cause, then `outbox retry --failed`)"
        ),
        "{}",
        stderr(&out)
    );
    // Retried: done, exit 0.
    let out = env.run(&["retry", "--failed"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.sandbox.attachments(&item).await.len(), 1);
}

/// With `token_env`, no hint sends the user to `outbox login` (which refuses that method).
#[test]
fn a_missing_token_env_token_is_never_answered_with_outbox_login() {
    let bare = Bare::new();
    let out = run_bounded(
        bare.cmd().env("OUTBOX_TEST_TOKEN", "").arg("check"),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let line = stdout(&out)
        .lines()
        .find(|l| l.contains("sign-in"))
        .unwrap_or_default()
        .to_string();
    assert!(line.starts_with("error"), "{line}");
    // One hint, the variable's own (not a second one saying it again).
    assert!(line.contains("set it to a Graph bearer token"), "{line}");
    assert!(
        !line.contains("put a Graph access token in that variable"),
        "{line}"
    );
    assert!(!line.contains("`outbox login` or"), "{line}");

    std::fs::write(bare.dir.path().join("in/a.txt"), "x").unwrap();
    let out = run_bounded(
        bare.cmd()
            .env("OUTBOX_TEST_TOKEN", "")
            .env("RUST_LOG", "off")
            .args(["run", "--once"]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    insta::assert_snapshot!("run_once_without_a_token_env_token", stderr(&out));
}

/// The agent reads its config at start: once the file changes under a running agent, `check`
/// (a warning, exit 0) and `status` say to restart it.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn a_config_edited_under_a_running_agent_says_to_restart_it() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    let mapping = format!(
        "[[mapping]]\nname = \"drop\"\nfolder = '{}'\nmessage = \"{item}\"\n",
        folder.display()
    );
    env.write_config("", &mapping);
    let agent = Agent::start(&env, &[]);
    let pid = agent.child.id();
    let start = std::time::Instant::now();
    loop {
        let out = env.run(&["status"], Duration::from_secs(30));
        if stdout(&out).starts_with("agent running") {
            assert!(!stdout(&out).contains("restart"), "{}", stdout(&out));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            stdout(&out)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = env.run(&["check"], Duration::from_secs(30));
    assert!(!stdout(&out).contains("restart"), "{}", stdout(&out));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.write_config("concurrency = 3", &mapping);
    let out = env.run(&["check"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let line = stdout(&out)
        .lines()
        .find(|l| l.contains("restart"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.starts_with(&format!(
            "warn   config: the config changed after the running agent (pid {pid}) last read it"
        )),
        "{}",
        stdout(&out)
    );
    let out = env.run(&["status"], Duration::from_secs(30));
    assert!(
        stdout(&out)
            .lines()
            .nth(1)
            .unwrap_or_default()
            .starts_with("note: the config changed"),
        "{}",
        stdout(&out)
    );
    agent.stop();
}

/// A wrong item id is said once per mapping (the log's error and its notification), not once per
/// file; a 403 from a message that is no longer a draft says so on the agent's entries, as
/// `send` and `check` do.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_item_is_said_once_per_mapping_and_a_sent_message_as_not_a_draft() {
    let env = Env::new();
    let gone = env.sandbox.create_item("message", "me").await;
    env.sandbox.delete_item(&gone).await;
    let sent = env.sandbox.create_item("message", "me").await;
    env.sandbox
        .admin(
            reqwest::Method::PATCH,
            &format!("/items/{}", urlenc(&sent)),
            Some(serde_json::json!({"isDraft": false})),
        )
        .await;
    let mut mappings = String::new();
    for (name, item, files) in [("wrong", &gone, 3u64), ("sent", &sent, 2)] {
        let folder = env.path(name);
        for i in 0..files {
            write_file(&folder.join(format!("{name}-{i}.txt")), 100 + i, i);
        }
        mappings += &format!(
            "[[mapping]]\nname = \"{name}\"\nfolder = '{}'\nmessage = \"{item}\"\n",
            folder.display()
        );
    }
    env.write_config("", &mappings);
    let out = run_bounded(
        env.cmd()
            .env("RUST_LOG", "outbox=info")
            .args(["run", "--once"]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = stderr(&out);
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    let said = |code: &str| errors.iter().filter(|l| l.contains(code)).count();
    assert_eq!(said("ErrorItemNotFound"), 1, "once for the mapping: {log}");
    assert_eq!(said("ErrorAccessDenied"), 1, "once for the mapping: {log}");
    assert_eq!(
        log.matches("failed as the mapping's first file did")
            .count(),
        3,
        "{log}"
    );
    // Every file's entry still says why (`status`), the sent message's as not a draft.
    let out = env.run(
        &["status", "--state", "failed", "--json"],
        Duration::from_secs(30),
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut lines: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}: {}",
                r["path"]
                    .as_str()
                    .unwrap()
                    .rsplit(['/', '\\'])
                    .next()
                    .unwrap(),
                r["error"]["message"].as_str().unwrap()
            )
        })
        .collect();
    lines.sort();
    assert_eq!(lines.len(), 5, "{lines:?}");
    insta::assert_snapshot!(
        "failed_rows_of_a_wrong_item_and_a_sent_message",
        lines.join("\n")
    );
    // The log's line for the mapping, as a person reads it.
    let first = errors
        .iter()
        .find(|l| l.contains("ErrorAccessDenied"))
        .unwrap();
    let text = first.split_once(" ERROR ").unwrap().1;
    let text = text.split(" file=").next().unwrap();
    insta::assert_snapshot!("a_sent_message_said_once_for_its_mapping", text);
}

// Unix only in use (the test that polls is).
#[cfg(unix)]
/// Digits as `N` (times, pids, counts), the temp dir as `[TMP]`: a snapshot of text with clock
/// times in it reads the same on every run.
fn masked_times(text: &str, dir: &Path) -> String {
    let text = masked(text, dir);
    let mut out = String::new();
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

/// `status` as a person and a script read it: (the table, the rows by file name).
fn status_now(env: &Env) -> (String, std::collections::HashMap<String, serde_json::Value>) {
    let out = env.run(&["status"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = env.run(&["status", "--json"], Duration::from_secs(30));
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let rows = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let name = r["path"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string();
            (name, r.clone())
        })
        .collect();
    (stdout(&out), rows)
}

// Unix only in use (the test that polls is).
#[cfg(unix)]
/// Poll `status` until `file`'s note contains `needle`: (the table, its JSON row).
async fn poll(env: &Env, what: &str, file: &str, needle: &str) -> (String, serde_json::Value) {
    let start = std::time::Instant::now();
    loop {
        let (table, rows) = status_now(env);
        // Both reads (the table, then the JSON) saw it.
        if table.contains(needle)
            && rows
                .get(file)
                .and_then(|r| r["note"].as_str())
                .is_some_and(|n| n.contains(needle))
        {
            return (table, rows[file].clone());
        }
        assert!(start.elapsed() < Duration::from_secs(90), "{what}: {table}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// Unix only: chown makes Sent Items unwritable.
#[cfg(unix)]
/// Issue 13, items 4 and 15: `status` says whether the agent is paused, why and until when, and
/// per row what it waits for (a throttle's Retry-After, a backoff after an error with the error
/// and the attempts, Graph out of reach, sign-in) and a failed after-action; `--json` carries
/// the same facts (`waiting_for`, `waiting_until`, `note`, `agent_pid`).
#[tokio::test(flavor = "multi_thread")]
async fn status_says_why_the_agent_is_paused_and_what_each_row_waits_for() {
    let mut env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    let moved = env.path("moved");
    let sent = moved.join("sent");
    std::fs::create_dir_all(&drop).unwrap();
    std::fs::create_dir_all(&sent).unwrap();
    // A sent_dir of another user's: the move after the attachment fails.
    std::os::unix::fs::chown(&sent, Some(65534), Some(65534)).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = '{}'\nmessage = \"{item}\"\nif_exists = \"attach\"\n\n\
             [[mapping]]\nname = \"moved\"\nfolder = '{}'\nmessage = \"{item}\"\nafter = \"move\"\n",
            drop.display(),
            moved.display()
        ),
    );
    let dir = env.dir.path().to_path_buf();
    let agent = Agent::start(&env, &[]);
    let pid = agent.child.id();
    // A failed after-action shows on its done row, with what to do.
    write_file(&moved.join("b.txt"), 100, 1);
    let (table, row) = poll(&env, "after-action", "b.txt", "not tried again by itself").await;
    assert_eq!(row["state"], "done", "{table}");
    assert_eq!(row["agent_pid"], pid, "{row}");
    let id = row["id"].as_str().unwrap().to_string();
    let mut seen = vec![masked_times(
        &row["note"].as_str().unwrap().replace(&id, "[ID]"),
        &dir,
    )];
    // Fixed, `retry ID` (through the agent) runs the move again, and only the move.
    std::os::unix::fs::chown(&sent, Some(0), Some(0)).unwrap();
    let out = env.run(&["retry", &id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_until(Duration::from_secs(30), "b.txt moved", || async {
        sent.join("b.txt").exists()
    })
    .await;
    let (table, rows) = status_now(&env);
    assert!(rows["b.txt"]["note"].is_null(), "{table}");

    // A throttled upload: the agent is paused until Retry-After, and the row says so.
    env.sandbox
        .faults(serde_json::json!({"fail_next": [
            {"route": "post", "status": 429, "retry_after": 10}
        ]}))
        .await;
    write_file(&drop.join("a.txt"), 100, 2);
    let (table, row) = poll(&env, "throttled", "a.txt", "throttled by Graph").await;
    assert_eq!(row["waiting_for"], "throttled", "{row}");
    assert!(row["waiting_until"].is_string(), "{row}");
    let paused = table
        .lines()
        .find(|l| l.starts_with("paused: "))
        .unwrap_or_else(|| panic!("no pause in the header: {table}"));
    assert!(table.lines().nth(1) == Some(paused), "{table}");
    seen.push(masked_times(paused, &dir));
    seen.push(masked_times(row["note"].as_str().unwrap(), &dir));

    // Errors that may have taken effect: a wait to check on the item whether the upload took
    // effect (the third trial of #22: not "backing off"), with the error and the attempts.
    env.sandbox
        .faults(serde_json::json!({"fail_next": [
            {"route": "post", "status": 500}, {"route": "post", "status": 500},
            {"route": "post", "status": 500}, {"route": "post", "status": 500},
            {"route": "post", "status": 500}, {"route": "post", "status": 500}
        ]}))
        .await;
    write_file(&drop.join("c.txt"), 100, 3);
    let (_, row) = poll(&env, "look", "c.txt", "attempt 3").await;
    assert_eq!(row["waiting_for"], "look", "{row}");
    assert!(row["attempts"].as_u64() >= Some(3), "{row}");
    seen.push(masked_times(row["note"].as_str().unwrap(), &dir));

    // Graph out of reach: paused, and the rows wait for it.
    wait_until(
        Duration::from_secs(120),
        "a.txt and c.txt attached",
        || async {
            let on = attached(&env.sandbox, &item).await;
            on.contains_key("a.txt") && on.contains_key("c.txt")
        },
    )
    .await;
    env.sandbox.kill9();
    write_file(&drop.join("d.txt"), 100, 4);
    let (table, row) = poll(&env, "outage", "d.txt", "Graph unreachable").await;
    assert_eq!(row["waiting_for"], "unreachable", "{row}");
    let paused = table
        .lines()
        .find(|l| l.starts_with("paused: Graph unreachable"))
        .unwrap_or_else(|| panic!("no outage in the header: {table}"));
    seen.push(masked_times(&paused.replace(&item, "[ITEM]"), &dir));
    env.sandbox.restart();
    wait_until(Duration::from_secs(120), "d.txt attached", || async {
        attached(&env.sandbox, &item).await.contains_key("d.txt")
    })
    .await;
    let (table, _) = status_now(&env);
    assert!(!table.contains("paused"), "{table}");
    let _ = agent.stop();

    // Sign-in: an agent whose token is refused says so, and until when it waits.
    let agent = {
        let log = env.path("agent-signin.log");
        let mut cmd = env.cmd();
        cmd.env("OUTBOX_TEST_TOKEN", "refused-token")
            .arg("run")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        cmd.spawn().unwrap()
    };
    write_file(&drop.join("e.txt"), 100, 5);
    let (table, row) = poll(&env, "sign-in", "e.txt", "waits for sign-in").await;
    assert_eq!(row["waiting_for"], "sign-in", "{row}");
    let paused = table
        .lines()
        .find(|l| l.starts_with("paused: waits for sign-in"))
        .unwrap_or_else(|| panic!("no sign-in pause in the header: {table}"));
    seen.push(masked_times(paused, &dir));
    let mut agent = agent;
    let _ = agent.kill();
    let _ = agent.wait();
    insta::assert_snapshot!("status_pauses_and_waits", seen.join("\n"));
}

// Unix only: names with `<`, `>`, `"` and line breaks, which Windows refuses to create.
#[cfg(unix)]
/// The letter a mailing mapping writes (SPEC: placeholders are data, never markup): a dropped
/// file's name cannot add markup to an HTML body (a tracking pixel, a link), nor a line to a text
/// body or a subject (a forged "pay to IBAN …" postscript), nor run on for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_name_is_data_in_the_letter_never_markup_or_lines() {
    let env = Env::new();
    let html = env.path("html");
    let text = env.path("text");
    std::fs::create_dir_all(&html).unwrap();
    std::fs::create_dir_all(&text).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"html\"\nfolder = '{}'\n[mapping.new_message]\nto = [\"ap@contoso.example\"]\n\
             subject = \"Scan {{stem}}\"\nbody = \"<p>Attached: {{names}}</p>\"\nbody_type = \"html\"\n\n\
             [[mapping]]\nname = \"text\"\nfolder = '{}'\n[mapping.new_message]\nto = [\"ap@contoso.example\"]\n",
            html.display(),
            text.display()
        ),
    );
    let pixel =
        "x<img src=\"https:⁄⁄t.example⁄p.gif\"><a href='https:⁄⁄evil.example'>pay here<⁄a>.pdf";
    write_file(&html.join(pixel), 100, 1);
    let forged = format!(
        "invoice.pdf\n\nPS: our bank details changed, pay to IBAN DE00 1234\u{2028}{}.pdf",
        "x".repeat(150)
    );
    write_file(&text.join(&forged), 100, 2);
    let out = env.run(&["run", "--once"], Duration::from_secs(120));
    assert!(out.status.success(), "run --once: {}", stderr(&out));
    env.sandbox
        .admin(
            reqwest::Method::POST,
            "/sends/deliver",
            Some(serde_json::json!({})),
        )
        .await;
    let sent = env.sandbox.admin(reqwest::Method::GET, "/sent", None).await;
    let sent = sent.as_array().cloned().unwrap_or_default();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let by = |name: &str| {
        sent.iter()
            .find(|m| m["attachments"][0]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no message with {name:?}: {sent:#?}"))
            .clone()
    };
    // HTML: the template's tags alone; the name escaped, its bytes attached under its own name.
    let m = by(pixel);
    let body = m["body"].as_str().unwrap();
    assert_eq!(
        body,
        "<p>Attached: x&lt;img src=&quot;https:⁄⁄t.example⁄p.gif&quot;&gt;&lt;a href=&#39;https:⁄⁄evil.example&#39;&gt;pay here&lt;⁄a&gt;.pdf</p>"
    );
    assert!(!m["subject"].as_str().unwrap().contains('\n'), "{m}");
    // Text: the name cannot start a line; {name} in the default subject is capped. The
    // attachment's name follows the same rule (issue 23's review: no line break, no bidi).
    let m = by(&forged.replace(['\n', '\u{2028}'], "\u{FFFD}"));
    let body = m["body"].as_str().unwrap();
    assert_eq!(body.lines().count(), 1, "{body:?}");
    assert!(
        body.starts_with("Attached: invoice.pdf\u{FFFD}\u{FFFD}PS: our bank details changed, pay to IBAN DE00 1234\u{FFFD}xxx"),
        "{body:?}"
    );
    let subject = m["subject"].as_str().unwrap();
    assert!(!subject.contains(['\n', '\u{2028}']), "{subject:?}");
    assert_eq!(subject.chars().count(), 120, "{subject:?}");
    assert!(subject.ends_with('…'), "{subject:?}");
}

/// `batch_max_wait`: a neighbour dropping a file every few seconds cannot hold a batch open for
/// ever (and ride in the user's message): the batch closes that long after its first file,
/// however often files arrive, and the files after it go in the next message, each file once.
///
/// No step waits on the clock alone (it flaked on a loaded machine: the agent still starting
/// while a fixed 9 s of files were written took them in one start-up scan, one batch). Files
/// are written once the agent watches, every `batch_quiet / 6`, for as long as it takes the
/// agent to make its first message, then a few more; only a batch held open while files keep
/// coming runs into the bound, `batch_max_wait` fifteen times over.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_closes_batch_max_wait_after_its_first_file_however_often_files_arrive() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let quiet = Duration::from_secs(3);
    let max_wait = Duration::from_secs(5);
    let env = Env::new();
    let folder = env.path("scans");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"batch\"\nfolder = '{}'\n[mapping.new_message]\nto = [\"ap@contoso.example\"]\n\
             subject = \"{{count}} files\"\nbody = \"{{names}}\"\ngroup = \"batch\"\nbatch_quiet = \"{}s\"\nbatch_max_wait = \"{}s\"\n",
            folder.display(),
            quiet.as_secs(),
            max_wait.as_secs()
        ),
    );
    let agent = Agent::start(&env, &[]);
    // Files written before it watches would come in one start-up scan, one batch.
    agent.watching().await;
    // A file every `quiet / 6` (never `batch_quiet` quiet, so only `batch_max_wait` closes a
    // batch), until told to stop; the largest gap between two files is kept.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, folder) = (stop.clone(), folder.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut last = std::time::Instant::now();
            let mut widest = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                write_file(&folder.join(format!("f{n:03}.txt")), 100, n);
                n += 1;
                widest = widest.max(last.elapsed());
                last = std::time::Instant::now();
                std::thread::sleep(quiet / 6);
            }
            (n, widest)
        })
    };
    let count = |dir: &Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    // The first message made (the agent's ledger, over its control socket).
    let state_dir = env.state_dir();
    let made = || async {
        outbox::agent::control::ask(&state_dir, &outbox::agent::control::Request::Status)
            .await
            .is_some_and(|r| !r.messages.is_empty())
    };
    wait_until(
        max_wait * 15,
        "a first message while files kept coming (a batch held open)",
        made,
    )
    .await;
    let before = count(&folder);
    // A few more: they go in a later message.
    wait_until(max_wait * 15, "three more files", || {
        let more = count(&folder) >= before + 3;
        async move { more }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (n, widest) = writer.join().unwrap();
    let sent_names = || async {
        env.sandbox
            .admin(
                reqwest::Method::POST,
                "/sends/deliver",
                Some(serde_json::json!({})),
            )
            .await;
        let sent = env.sandbox.admin(reqwest::Method::GET, "/sent", None).await;
        sent.as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| {
                m["attachments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["name"].as_str().unwrap_or_default().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(120), "every file mailed", || async {
        sent_names().await.iter().map(Vec::len).sum::<usize>() >= n as usize
    })
    .await;
    // How long the first batch stayed open, on the agent's own clock (its ledger): from its
    // first file's entry (made before the file joined the batch) to the message. A slow
    // machine delays when the test sees things, not this; the margin (`batch_max_wait` again)
    // is the key search and a late timer.
    let status = outbox::agent::control::ask(&state_dir, &outbox::agent::control::Request::Status)
        .await
        .expect("status");
    let first = status
        .messages
        .iter()
        .min_by_key(|m| m.created_at)
        .expect("a message");
    let opened = status
        .entries
        .iter()
        .filter(|e| first.files.contains(&e.id))
        .map(|e| e.created_at)
        .min()
        .expect("its entries");
    let open_ms = first.created_at.0 as i128 - (opened.unix_timestamp_nanos() / 1_000_000);
    assert!(
        open_ms <= 2 * max_wait.as_millis() as i128,
        "the first batch stayed open {open_ms} ms: {:?}",
        first.files
    );
    let _ = agent.stop();
    let messages = sent_names().await;
    let mut all: Vec<String> = messages.iter().flatten().cloned().collect();
    all.sort();
    let want: Vec<String> = (0..n).map(|k| format!("f{k:03}.txt")).collect();
    assert_eq!(all, want, "each file once: {messages:?}");
    // The first batch closed while files kept coming; the ones after it went in another.
    assert!(
        messages.len() >= 2,
        "one batch held open: {messages:?} (widest gap between files {widest:?})"
    );
}

/// The sandbox's banner pasted under a config `outbox init` wrote (issue 22, item 18): that
/// config has [graph] and [auth] already, so the paste opens them twice. The error names the
/// table and the line that opened it first, and says what to do; not "check the quotes".
#[test]
fn the_sandbox_banner_pasted_into_an_init_config_names_the_table_twice_opened() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let mut sandbox = Command::new(bin())
        .args(["sandbox", "--token", "t", "--data-dir"])
        .arg(dir.path().join("sandbox"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = Vec::new();
    for l in BufReader::new(sandbox.stdout.take().unwrap())
        .lines()
        .skip(1)
    {
        let l = l.unwrap();
        let last = l.starts_with("# Items to attach to");
        banner.push(l);
        if last {
            break;
        }
    }
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    assert!(
        banner.join("\n").contains("set these keys in those tables"),
        "the banner says what to do with a config that has the tables: {banner:?}"
    );
    let cfg = dir.path().join("config.toml");
    let out = run_bounded(
        clean(&home).arg("--config").arg(&cfg).arg("init"),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let written = std::fs::read_to_string(&cfg).unwrap();
    let graph_line = written.lines().position(|l| l.trim() == "[graph]").unwrap() + 1;
    std::fs::write(&cfg, format!("{written}\n{}\n", banner.join("\n"))).unwrap();
    let out = run_bounded(
        clean(&home).arg("--config").arg(&cfg).arg("check"),
        Duration::from_secs(20),
    );
    let err = stdout(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(&format!(
            "the table [graph] is already opened on line {graph_line}"
        )),
        "{err}"
    );
    assert!(
        err.contains("move the keys below this line into that one"),
        "{err}"
    );
    assert!(!err.contains("check the quotes"), "{err}");
}

/// Issue 20, item 8: a failed or unconfirmed message's advice speaks of the message (Sent Items,
/// Drafts, `outbox retry MESSAGE_ID`), not of a file's upload: in `status` (its block and its
/// files' rows), in `run --once`'s summary.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_failure_carries_advice_about_the_message() {
    let env = Env::new();
    let folder = env.path("mail");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"ap\"\nfolder = '{}'\n[mapping.new_message]\nto = [\"ap@contoso.example\"]\n",
            folder.display()
        ),
    );
    write_file(&folder.join("scan.pdf"), 2_000, 3);
    env.sandbox
        .faults(serde_json::json!({"fail_next": [
            {"route": "send", "status": 400, "code": "ErrorInvalidRecipients"}
        ]}))
        .await;
    let out = env.run(&["run", "--once"], Duration::from_secs(90));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("outbox: message m"))
        .unwrap_or_else(|| panic!("no summary line for the message: {err}"));
    let mid = line["outbox: message ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        line.contains("was not sent: ErrorInvalidRecipients"),
        "{line}"
    );
    assert!(line.contains("looks for the draft in Sent Items"), "{line}");
    let retry = format!("`outbox retry {mid}`");
    assert!(line.contains(&retry), "{line}");
    assert!(!line.contains("attach"), "file-step advice: {line}");
    // The agent's log line says it too.
    assert!(
        err.contains(&format!(
            "fix the cause, then {retry} (a draft it made stays in Drafts)"
        )),
        "{err}"
    );

    let (table, _) = status_now(&env);
    let block = table.split("MESSAGES").nth(1).unwrap_or_default();
    assert!(block.contains(&format!("{mid}  failed")), "{table}");
    assert!(
        block.contains("→ its draft stays in Drafts; fix the cause, then ")
            && block.contains(&retry),
        "{table}"
    );

    // The advice works: retry the message, and it is sent.
    let out = env.run(&["retry", &mid], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["run", "--once"], Duration::from_secs(90));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        env.sandbox.stats().await["sends_accepted"],
        serde_json::json!(1)
    );
    let (table, _) = status_now(&env);
    assert!(!table.contains('→'), "{table}");
}

// Unix only: SIGHUP.
#[cfg(unix)]
/// Issue 20, item 8: SIGHUP (a closed terminal) ends `send` as Ctrl-C does, said by name, exit
/// 130, nothing attached; before, the default action killed it silently.
#[tokio::test(flavor = "multi_thread")]
async fn send_hung_up_exits_130_and_says_so() {
    let env = Env::new();
    env.write_config("chunk_size = \"1MiB\"", "");
    let item = env.sandbox.create_item("message", "me").await;
    let file = env.path("big.bin");
    write_file(&file, 6 * MIB, 4);
    env.sandbox
        .faults(serde_json::json!({"fail_next": [
            {"route": "put", "action": "delay", "delay_ms": 20000}
        ]}))
        .await;
    let child = env
        .cmd()
        .args(send_args(&file, "--message", &item))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    wait_until(
        Duration::from_secs(30),
        "the upload to be under way",
        || async {
            env.sandbox.stats().await["open_sessions"]
                .as_u64()
                .unwrap_or(0)
                > 0
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted by SIGHUP") && err.contains("was not attached"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
    assert_eq!(env.sandbox.attachments(&item).await.len(), 0);
}

/// Issue 20, item 8: a message's draft sent by hand while its files are attached is said in the
/// message's terms, not with a mapping's advice ("pick a draft with `outbox items messages`"):
/// the agent made that draft, and no config names it.
#[tokio::test(flavor = "multi_thread")]
async fn a_draft_sent_by_hand_is_said_as_the_messages_not_a_mappings() {
    let env = Env::new();
    let folder = env.path("mail");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"ap\"\nfolder = '{}'\n[mapping.new_message]\nto = [\"ap@contoso.example\"]\n",
            folder.display()
        ),
    );
    write_file(&folder.join("memo.pdf"), 3_000, 8);
    env.sandbox
        .faults(serde_json::json!({"fail_next": [
            {"route": "post", "action": "delay", "delay_ms": 3000}
        ]}))
        .await;
    let child = env
        .cmd()
        .args(["run", "--once"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "the draft", || async {
        env.sandbox.stats().await["drafts_created"]
            .as_u64()
            .unwrap_or(0)
            > 0
    })
    .await;
    // While the attachment's POST is on its way: the draft stops being one (sent by hand).
    let items = env
        .sandbox
        .admin(reqwest::Method::GET, "/items", None)
        .await;
    let draft = items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["isDraft"] == serde_json::json!(true))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.sandbox
        .admin(
            reqwest::Method::PATCH,
            &format!("/items/{draft}"),
            Some(serde_json::json!({"isDraft": false})),
        )
        .await;
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (table, _) = status_now(&env);
    let block = table.split("MESSAGES").nth(1).unwrap_or_default();
    assert!(block.contains("failed"), "{table}");
    assert!(
        block.contains("the message's draft is no longer a draft"),
        "{table}"
    );
    assert!(
        !table.contains("outbox items messages"),
        "a mapping's advice: {table}"
    );
}
