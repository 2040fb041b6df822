//! One voice for what a person reads (issue 22, item 20): `--top` out of its range is refused,
//! not clamped; `verify` keeps a file name on its line; `items` and `send` say an unreachable or
//! untrusted Graph as `check` does (the base URL, the cause, what to do), not reqwest's chain
//! with a percent-encoded URL.

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
