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

#[tokio::test(flavor = "multi_thread")]
async fn verify_prints_a_file_name_with_a_newline_on_one_line() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"drop\"\nfolder = \"{}\"\nmessage = \"{item}\"\n",
            folder.display()
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
