//! One voice for what a person reads (issue 22, item 20): `--top` out of its range is refused,
//! not clamped; `verify` keeps a file name on its line; `items` and `send` say an unreachable or
//! untrusted Graph as `check` does (the base URL, the cause, what to do), not reqwest's chain
//! with a percent-encoded URL; at a terminal, `run`'s log lines are words, not `key=value`
//! fields, and every command's lines fit the terminal's width without a hint or a path broken.

use crate::common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn top_outside_one_to_a_thousand_is_refused_not_clamped() {
    let env = Env::new();
    env.write_config("", "");
    for n in ["0", "5000"] {
        let out = env.run(&["items", "messages", "--top", n], T);
        assert_eq!(out.status.code(), Some(2), "--top {n}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("invalid value '{n}' for '--top <N>'"))
                && err.contains("1..=1000"),
            "--top {n}: {err}"
        );
        assert!(stdout(&out).is_empty(), "--top {n} listed items");
    }
    let out = env.run(&["items", "messages", "--top", "1000"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

// Unix only: a line break in a name, which Windows refuses to create.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn verify_prints_a_file_name_with_a_newline_on_one_line() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = {}\nmessage = \"{item}\"\n",
            toml_path(&folder)
        ),
    );
    write_file(&folder.join("two\nlines.txt"), 100, 1);
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["verify", "--all"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one line per file, then the summary:\n{text}"
    );
    assert!(
        lines[0].starts_with("ok ") && lines[0].contains("two\\nlines.txt"),
        "{text}"
    );
    assert_eq!(lines[1], "1 checked, 1 ok, 0 with problems", "{text}");
}

/// What `items`, `send` and `check` say of a Graph they cannot reach: the same sentence.
fn says_cannot_reach(what: &str, text: &str, base: &str, cause: &str, todo: &str) {
    assert!(
        text.contains(&format!("cannot reach Graph at {base}: ")),
        "{what}: {text}"
    );
    assert!(text.contains(cause), "{what}: {text}");
    assert!(text.contains(todo), "{what}: {text}");
    for raw in [
        "error sending request",
        "%24",
        "ConnectionFailed",
        "client error (Connect)",
    ] {
        assert!(!text.contains(raw), "{what} says {raw:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_or_unreachable_graph_is_said_alike_by_items_send_and_check() {
    // The sandbox over TLS, its CA not in graph.ca_file: the certificate is not trusted.
    let env = Env {
        sandbox: Sandbox::start_with(&["--tls"]),
        dir: tempfile::tempdir().unwrap(),
    };
    let item = env.sandbox.create_item("message", "me").await;
    env.write_config("", "");
    let file = env.path("a.txt");
    write_file(&file, 100, 1);
    let base = env.sandbox.graph_base();
    let file_arg = file.to_str().unwrap().to_string();
    let runs: [(&str, Vec<&str>); 3] = [
        ("items", vec!["items", "messages"]),
        ("send", vec!["send", &file_arg, "--message", &item]),
        ("check", vec!["check"]),
    ];
    for (what, args) in &runs {
        let out = env.run(args, T);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        let text = format!("{}{}", stdout(&out), stderr(&out));
        says_cannot_reach(what, &text, &base, "certificate", "set graph.ca_file");
    }

    // Nothing listening there any more: refused.
    let mut env = env;
    env.sandbox.kill9();
    for (what, args) in &runs {
        let out = env.run(args, T);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        let text = format!("{}{}", stdout(&out), stderr(&out));
        says_cannot_reach(what, &text, &base, "Connection refused", "graph.base_url");
    }
}

/// `outbox run` at a terminal (a pseudo-terminal from `script`, of util-linux): each line the
/// time of day and what happened, not the date to the microsecond and the Rust module that
/// logged it; in a file (the journal, a redirect) the full form stays.
// `script -qec` is util-linux's (BSD `script` takes other options).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn run_at_a_terminal_says_the_time_of_day_not_the_module() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = {}\nmessage = \"{item}\"\n",
            toml_path(&folder)
        ),
    );
    write_file(&folder.join("a.txt"), 100, 1);
    let line = format!("'{}' run --once", bin());
    let out = run_bounded(
        std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("OUTBOX_CONFIG", env.path("config.toml"))
            .env("OUTBOX_TEST_TOKEN", TOKEN)
            .env("RUST_LOG", "outbox=info")
            .env("NO_COLOR", "1"),
        T,
    );
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "needs `script` (util-linux): {text}{}",
        stderr(&out)
    );
    let attached = text
        .lines()
        .find(|l| l.contains("attached"))
        .unwrap_or_else(|| panic!("no `attached` line:\n{text}"));
    let time = attached.split(' ').next().unwrap_or_default();
    assert!(
        time.len() == 9
            && time.ends_with('Z')
            && time[..8].chars().enumerate().all(|(i, c)| if i % 3 == 2 {
                c == ':'
            } else {
                c.is_ascii_digit()
            }),
        "not HH:MM:SSZ first: {attached}"
    );
    assert!(
        !text.contains("outbox::"),
        "a module path at a terminal:\n{text}"
    );
    // Not at a terminal: the full timestamp and the module, for the journal and files.
    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    assert!(log.contains("outbox::agent"), "{log}");
}

/// `check` and `verify` colour their verdicts at a terminal as `status` colours its states (and
/// never with `NO_COLOR`, nor in a pipe).
// `script -qec` is util-linux's (BSD `script` takes other options).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn check_and_verify_colour_their_verdicts_at_a_terminal_only() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = {}\nmessage = \"{item}\"\n",
            toml_path(&folder)
        ),
    );
    write_file(&folder.join("a.txt"), 100, 1);
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let at_terminal = |args: &str, no_color: bool| {
        let line = format!("'{}' {args}", bin());
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .env("OUTBOX_CONFIG", env.path("config.toml"))
            .env("OUTBOX_TEST_TOKEN", TOKEN)
            .env("RUST_LOG", "off");
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let out = run_bounded(&mut cmd, T);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args}: needs `script` (util-linux): {}",
            stdout(&out)
        );
        stdout(&out)
    };
    for (args, good) in [
        ("check", "\x1b[32mok   \x1b[0m  config"),
        ("verify --all", "\x1b[32mok      \x1b[0m  "),
    ] {
        let text = at_terminal(args, false);
        assert!(text.contains(good), "{args} at a terminal: {text:?}");
        let text = at_terminal(args, true);
        assert!(!text.contains('\x1b'), "{args} with NO_COLOR: {text:?}");
        let piped = env.run(&args.split(' ').collect::<Vec<_>>(), T);
        assert!(
            !stdout(&piped).contains('\x1b'),
            "{args} in a pipe: {}",
            stdout(&piped)
        );
    }
}

/// `outbox ARGS` in a pseudo-terminal of `cols` columns (`script`, of util-linux; `stty` sets
/// its width): what a person at such a terminal sees, stdout and stderr together.
#[cfg(target_os = "linux")]
fn at_a_terminal_of(env: &Env, cols: u32, args: &str) -> (Option<i32>, String) {
    let line = format!("stty cols {cols} rows 40; '{}' {args}", bin());
    let out = run_bounded(
        std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("OUTBOX_CONFIG", env.path("config.toml"))
            .env("OUTBOX_TEST_TOKEN", TOKEN)
            .env("RUST_LOG", "outbox=info")
            .env("NO_COLOR", "1"),
        T,
    );
    // A terminal ends its lines with CR LF.
    (out.status.code(), stdout(&out).replace("\r\n", "\n"))
}

/// Every line fits `cols`, but one that is a single word or one of `whole` (a path longer than
/// the line).
#[cfg(target_os = "linux")]
fn fits(text: &str, cols: usize, whole: &[&str]) {
    for l in text.lines() {
        assert!(
            l.chars().count() <= cols || !l.trim().contains(' ') || whole.contains(&l.trim()),
            "a line over {cols} columns:\n{l}\nin:\n{text}"
        );
    }
}

/// `run` at a terminal says its log lines in words, the file first (`/drop/a.txt: attached
/// (entry 3f2a…)`), never tracing's `file=… entry=…` fields, and wraps them to the terminal
/// without breaking a path or a hint; in a file or the journal the fields stay.
// `script -qec` is util-linux's (BSD `script` takes other options).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn run_at_a_terminal_says_its_fields_in_words_and_fits_the_terminal() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    let missing = env.path("not mounted yet");
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = \"{}\"\nmessage = \"{item}\"\n\n[[mapping]]\nname = \"later\"\nfolder = \"{}\"\nmessage = \"{item}\"\n",
            folder.display(),
            missing.display()
        ),
    );
    write_file(&folder.join("a.txt"), 100, 1);
    let (code, text) = at_a_terminal_of(&env, 70, "run --once");
    // The missing folder: run --once exits 1 naming it.
    assert_eq!(code, Some(1), "{text}");
    for field in [
        "file=",
        "entry=",
        "mapping=",
        "mappings=",
        "error=",
        "left=",
    ] {
        assert!(
            !text.contains(field),
            "a `{field}` field at a terminal:\n{text}"
        );
    }
    let a = folder.join("a.txt").display().to_string();
    let attached = text
        .lines()
        .find(|l| l.contains("attached"))
        .unwrap_or_else(|| panic!("no `attached` line:\n{text}"));
    assert!(
        attached.contains(&format!(" {a}: attached")),
        "the file first: {attached}\nin:\n{text}"
    );
    assert!(text.contains("(entry "), "{text}");
    fits(&text, 70, &[]);
    // The long line naming the missing folder is wrapped, its path (with spaces) whole.
    let missing = missing.display().to_string();
    assert!(
        text.lines().any(|l| l.contains(&missing)),
        "{missing} broken across lines:\n{text}"
    );
    // Off a terminal, each line whole with its fields, for the journal and files.
    write_file(&folder.join("b.txt"), 100, 2);
    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    assert!(log.contains("entry="), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("stopping") && l.contains(&missing)),
        "{log}"
    );
}

/// What a command prints at a terminal (stdout and its errors on stderr) is wrapped to its width
/// at spaces, never inside a `` `hint` `` or a path, so each still runs when pasted; in a pipe
/// the same lines come whole.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn what_commands_print_at_a_terminal_fits_it_with_hints_whole() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("a folder with spaces in its long name");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = \"{}\"\nmessage = \"{item}\"\n",
            folder.display()
        ),
    );
    write_file(&folder.join("a.txt"), 100, 1);
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // An error with a hint (stderr): the hint on one line, as it runs.
    let (code, text) = at_a_terminal_of(&env, 40, "retry nosuchentry");
    assert_eq!(code, Some(2), "{text}");
    fits(&text, 40, &[]);
    assert!(
        text.lines().count() > 1,
        "not wrapped at 40 columns:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("`outbox status`")),
        "the hint broken:\n{text}"
    );
    // A retry of a healthy done entry (stderr, with two hints).
    let id = {
        let out = env.run(&["status", "--json"], T);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        v[0]["id"].as_str().unwrap().to_string()
    };
    let (code, text) = at_a_terminal_of(&env, 60, &format!("retry {id}"));
    assert_eq!(code, Some(2), "{text}");
    fits(&text, 60, &[]);
    for hint in [
        format!("`outbox verify {id}`"),
        format!("`outbox retry {id}`"),
    ] {
        assert!(
            text.lines().any(|l| l.contains(&hint)),
            "{hint} broken:\n{text}"
        );
    }
    // `check` (stdout) fits too.
    let (_, text) = at_a_terminal_of(&env, 50, "check");
    fits(&text, 50, &[]);
    // In a pipe: whole lines.
    let out = env.run(&["retry", &id], T);
    let said = stderr(&out);
    assert_eq!(said.trim_end().lines().count(), 1, "{said}");
}

/// What is pasted or read by a program is never wrapped, at a terminal of any width: a service
/// dry run's unit file and commands, and the manual page's source where `man` is not at hand.
#[cfg(target_os = "linux")]
#[test]
fn a_unit_file_and_its_commands_are_printed_whole_at_a_narrow_terminal() {
    let env = Env::new();
    env.write_config("", "");
    // (`--platform`: the plan alone, whether or not a user systemd runs here.)
    let piped = env.run(
        &["service", "install", "--dry-run", "--platform", "linux"],
        T,
    );
    assert_eq!(piped.status.code(), Some(0), "{}", stderr(&piped));
    let whole = stdout(&piped);
    assert!(
        whole.lines().any(|l| l.chars().count() > 40),
        "nothing to wrap at 40 columns:\n{whole}"
    );
    let (code, text) = at_a_terminal_of(&env, 40, "service install --dry-run --platform linux");
    assert_eq!(code, Some(0), "{text}");
    // (Its notes on stderr are a person's, and wrapped.)
    assert!(text.contains(&whole), "{text}");
}

/// `status` at a terminal: a row whose note is long goes on two spaces in, each line within the
/// width; in a pipe each row is one line.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn status_at_a_terminal_wraps_a_long_note_and_a_pipe_keeps_the_row_whole() {
    let env = Env::new();
    let gone = env.sandbox.create_item("message", "me").await;
    env.sandbox.delete_item(&gone).await;
    let folder = env.path("in");
    std::fs::create_dir_all(&folder).unwrap();
    write_file(&folder.join("a.txt"), 100, 1);
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"m\"\nfolder = '{}'\nmessage = \"{gone}\"\n",
            folder.display()
        ),
    );
    let out = env.run(&["run", "--once"], T);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let piped = stdout(&env.run(&["status"], T));
    let row = piped
        .lines()
        .find(|l| l.contains("a.txt"))
        .unwrap_or_else(|| panic!("no row:\n{piped}"));
    assert!(row.chars().count() > 100, "a short note: {row}");
    let (code, text) = at_a_terminal_of(&env, 100, "status");
    assert_eq!(code, Some(0), "{text}");
    fits(&text, 100, &[]);
    let at = text.lines().position(|l| l.contains("a.txt")).unwrap();
    let more: Vec<&str> = text
        .lines()
        .skip(at + 1)
        .take_while(|l| l.starts_with(' '))
        .collect();
    assert!(!more.is_empty(), "not continued:\n{text}");
    for l in more {
        assert_eq!(l.len() - l.trim_start().len(), 2, "{text}");
    }
}
