//! The commands a person types around the agent, end to end: demo, init, check, items, verify,
//! service, the man page and completions. Real binary, real sandbox on loopback, temp dirs.

use crate::common::*;
use reqwest::Method;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

#[test]
fn demo_exit_after_three_attaches_them_headless() {
    let cwd = tempfile::tempdir().unwrap();
    let out = run_bounded(
        Command::new(bin())
            .args(["demo", "--exit-after", "3"])
            .current_dir(cwd.path())
            .env_remove("OUTBOX_CONFIG"),
        Duration::from_secs(150),
    );
    let so = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {so}\nstderr: {}",
        stderr(&out)
    );
    assert_eq!(so.matches("  attached  ").count(), 3, "{so}");
    assert_eq!(so.matches("same bytes as the file").count(), 3, "{so}");
    // The mailing folder beside it: its sample went out in a message of its own.
    assert_eq!(so.matches("  mailed    ").count(), 1, "{so}");
    assert!(
        so.contains("to demo@example.com with invoice 2026-0042.pdf"),
        "{so}"
    );
    // Everything the demo made is under the one directory a clone's .gitignore names.
    let made: Vec<_> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(made, ["outbox-demo"], "the demo left {made:?}");
    let folder = cwd.path().join("outbox-demo").join("attach");
    let files: Vec<_> = std::fs::read_dir(&folder).unwrap().collect();
    assert_eq!(files.len(), 3, "only the samples are in the watched folder");
    assert!(
        folder
            .join("Quarterly report 📊 (large).bin")
            .metadata()
            .unwrap()
            .len()
            > 4 * MIB
    );
}

fn mapping(name: &str, folder: &std::path::Path, kind: &str, id: &str, extra: &str) -> String {
    format!(
        "[[mapping]]\nname = \"{name}\"\nfolder = '{}'\n{kind} = \"{id}\"\n{extra}\n",
        folder.display()
    )
}

/// The binary under test as the first word of a pasted command line.
fn quoted_bin() -> String {
    if cfg!(windows) {
        format!("\"{}\"", bin())
    } else {
        format!("'{}'", bin())
    }
}

/// The platform's shell running `line` as a person pasting it would: `sh -c` on Unix, `cmd /S
/// /C "line"` on Windows (the line as it is, not quoted again by std).
fn shell(line: &str) -> Command {
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        let mut c = Command::new("cmd");
        c.raw_arg(format!("/S /C \"{line}\""));
        c
    }
    #[cfg(not(windows))]
    {
        let mut c = Command::new("sh");
        c.args(["-c", line]);
        c
    }
}

// Unix only: HOME places the home there; Windows takes the profile folder from the system.
#[cfg(unix)]
#[test]
fn init_writes_a_loadable_config_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sub dir").join("config.toml");
    let out = run_bounded(
        Command::new(bin())
            .arg("--config")
            .arg(&cfg)
            .arg("init")
            .env("HOME", dir.path())
            .env_remove("XDG_STATE_HOME"),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = outbox::config::Settings::load(&cfg).expect("init's config loads");
    assert_eq!(s.mappings.len(), 1);
    assert!(
        s.mappings[0].folder.starts_with(dir.path()),
        "{:?}",
        s.mappings[0].folder
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("# "), "commented");
    // The app registration's permissions, said beside client_id, include Mail.Send (mailing:
    // a new_message mapping, `outbox mail`), which it used to leave out.
    let before_id = text.split("\nclient_id").next().unwrap_or_default();
    let comment = &before_id[before_id.rfind("\n\n").unwrap_or(0)..];
    assert!(
        comment.contains("Mail.ReadWrite") && comment.contains("Mail.Send"),
        "{comment}"
    );
    // A config of its own gets a state dir of its own: a second config's agent never collides
    // with the first's (exit 2).
    let default_state = dir.path().join(".local/state/outbox");
    assert!(
        s.agent.state_dir.starts_with(&default_state),
        "{:?}",
        s.agent.state_dir
    );
    assert_ne!(s.agent.state_dir, default_state);
    let other = dir.path().join("other").join("config.toml");
    let out = run_bounded(
        Command::new(bin())
            .arg("--config")
            .arg(&other)
            .arg("init")
            .env("HOME", dir.path())
            .env_remove("XDG_STATE_HOME"),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s2 = outbox::config::Settings::load(&other).unwrap();
    assert_ne!(s2.agent.state_dir, s.agent.state_dir);

    // Second time: exit 2, file named, content untouched.
    std::fs::write(&cfg, "# mine\n").unwrap();
    let out = run_bounded(
        Command::new(bin()).env("OUTBOX_CONFIG", &cfg).arg("init"),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&cfg.display().to_string()),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "# mine\n");
}

#[tokio::test]
async fn check_reports_each_problem_on_its_own_line() {
    let env = Env::new();
    let good = env.sandbox.create_item("message", "me").await;
    let sent = env.sandbox.create_item("message", "me").await;
    env.sandbox
        .admin(
            Method::PATCH,
            &format!("/items/{}", urlenc(&sent)),
            Some(json!({"isDraft": false})),
        )
        .await;
    let event = env.sandbox.create_item("event", "me").await;
    for d in ["ok", "sent", "event"] {
        std::fs::create_dir_all(env.path(d)).unwrap();
    }
    let maps = [
        mapping("ok", &env.path("ok"), "message", &good, "after = \"move\""),
        mapping("sent", &env.path("sent"), "message", &sent, ""),
        mapping(
            "gone",
            &env.path("missing-folder"),
            "message",
            "AAMkADnope==",
            "",
        ),
        mapping("cal", &env.path("event"), "event", &event, ""),
    ]
    .join("\n");
    env.write_config("", &maps);

    let out = env.run(&["check"], Duration::from_secs(60));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{so}\n{}", stderr(&out));
    let line = |needle: &str| {
        so.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{so}"))
            .to_string()
    };
    assert!(line("mapping ok folder").starts_with("ok"), "{so}");
    assert!(line("mapping gone folder").starts_with("error"), "{so}");
    assert!(
        line("mapping gone folder").contains("does not exist"),
        "{so}"
    );
    assert!(
        line("mapping gone message")
            .contains("not found: pick another with `outbox items messages`"),
        "{so}"
    );
    assert!(line("mapping sent message").starts_with("warn"), "{so}");
    assert!(line("mapping sent message").contains("not a draft"), "{so}");
    assert!(line("mapping cal event").starts_with("ok"), "{so}");
    assert!(line("sign-in").starts_with("ok"), "{so}");

    // All good: exit 0.
    env.write_config("", &mapping("ok", &env.path("ok"), "message", &good, ""));
    let out = env.run(&["check"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // A bad token: one clear sign-in line, items not checked, exit 1; never the token itself.
    let out = run_bounded(
        env.cmd()
            .env("OUTBOX_TEST_TOKEN", "wrong-token-x1")
            .arg("check"),
        Duration::from_secs(60),
    );
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{so}");
    assert!(line_of(&so, "sign-in").starts_with("error"), "{so}");
    assert!(
        line_of(&so, "sign-in").contains("refused the token"),
        "{so}"
    );
    assert!(!so.contains("wrong-token-x1"));

    // No token at all.
    let out = run_bounded(
        env.cmd().env_remove("OUTBOX_TEST_TOKEN").arg("check"),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        line_of(&stdout(&out), "sign-in").contains("OUTBOX_TEST_TOKEN"),
        "{}",
        stdout(&out)
    );

    // A bad config: 78.
    std::fs::write(env.path("config.toml"), "[agent]\nbogus = 1\n").unwrap();
    let out = env.run(&["check"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    // In check's own layout, on stdout.
    assert!(stdout(&out).contains("error  config: "), "{}", stdout(&out));
    assert!(stdout(&out).contains("bogus"), "{}", stdout(&out));
}

fn line_of(s: &str, needle: &str) -> String {
    s.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{s}"))
        .to_string()
}

#[tokio::test]
async fn items_lists_created_items_with_ids() {
    let env = Env::new();
    let id = env
        .sandbox
        .admin(
            Method::POST,
            "/items",
            Some(json!({"kind": "message", "subject": "Budget 2027 draft"})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.sandbox
        .admin(
            Method::POST,
            "/items",
            Some(json!({"kind": "message", "subject": "Other"})),
        )
        .await;
    env.write_config("", "");
    // The ATT column counts the attachments, read from the item's attachment list.
    for name in ["a.txt", "b.txt"] {
        let f = env.path(name);
        write_file(&f, 10, 1);
        let out = env.run(
            &["send", f.to_str().expect("utf8"), "--message", &id],
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "send: {}", stderr(&out));
    }
    let out = env.run(&["items", "messages"], Duration::from_secs(30));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{}", stderr(&out));
    let budget = line_of(&so, "Budget 2027 draft");
    assert!(budget.contains(&id), "{so}");
    assert_eq!(budget.split_whitespace().nth(2), Some("2"), "{so}");
    assert_eq!(
        line_of(&so, "Other").split_whitespace().nth(2),
        Some("0"),
        "{so}"
    );

    let out = env.run(
        &["items", "messages", "--search", "Budget"],
        Duration::from_secs(30),
    );
    let so = stdout(&out);
    assert!(so.contains(&id) && !so.contains("Other"), "{so}");

    let out = env.run(&["items", "messages", "--json"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let budget = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(id))
        .unwrap();
    assert_eq!(budget["subject"], "Budget 2027 draft");
    assert_eq!(budget["attachments"], 2);
    assert_eq!(budget["kind"], "message");

    let ev = env.sandbox.create_item("event", "me").await;
    let out = env.run(&["items", "events", "--top", "5"], Duration::from_secs(30));
    assert!(stdout(&out).contains(&ev), "{}", stdout(&out));
}

#[tokio::test]
async fn verify_catches_deleted_and_altered_attachments() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    write_file(&folder.join("a.bin"), 10_000, 1);
    write_file(&folder.join("b.bin"), 20_000, 2);
    let c_sha = write_file(&folder.join("c d.bin"), 3 * MIB + 5, 3);
    env.write_config("", &mapping("drop", &folder, "message", &item, ""));
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = env.run(&["verify", "--all"], Duration::from_secs(60));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{}", stderr(&out));
    assert_eq!(
        so.lines().filter(|l| l.starts_with("ok")).count(),
        3,
        "{so}"
    );

    let atts = env.sandbox.attachments(&item).await;
    let id_of = |n: &str| {
        atts.iter().find(|a| a["name"] == n).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    env.sandbox
        .admin(
            Method::DELETE,
            &format!(
                "/items/{}/attachments/{}",
                urlenc(&item),
                urlenc(&id_of("a.bin"))
            ),
            None,
        )
        .await;
    env.sandbox
        .admin(
            Method::POST,
            &format!(
                "/items/{}/attachments/{}/corrupt",
                urlenc(&item),
                urlenc(&id_of("c d.bin"))
            ),
            None,
        )
        .await;
    let out = env.run(&["verify", "--all"], Duration::from_secs(60));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{so}\n{}", stderr(&out));
    assert!(line_of(&so, "a.bin").starts_with("MISSING"), "{so}");
    assert!(line_of(&so, "c d.bin").starts_with("MISMATCH"), "{so}");
    assert!(line_of(&so, "b.bin").starts_with("ok"), "{so}");

    // A mismatch says how to fix it, with the command that works: `outbox retry ID` of the
    // done entry attaches the file again, then deletes the bad copy by its recorded id.
    let fix = line_of(&so, "c d.bin");
    let cmd = fix
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in {fix}"));
    let id = cmd
        .strip_prefix("outbox retry ")
        .unwrap_or_else(|| panic!("not a retry: {fix}"));
    let bad = id_of("c d.bin");
    let masked_ids = |t: &str| {
        let mut t = t.to_string();
        for r in status_rows(&env) {
            t = t.replace(r["id"].as_str().unwrap(), "[ID]");
        }
        // Entries come in ledger order (by id): sorted, the snapshot does not depend on it.
        let mut lines: Vec<&str> = t.lines().collect();
        lines.sort();
        lines.join("\n")
    };
    insta::assert_snapshot!("verify_mismatch_and_missing", masked_ids(&so));
    let out = env.run(&["retry", id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let on_item = env.sandbox.attachments(&item).await;
    let copies: Vec<&serde_json::Value> =
        on_item.iter().filter(|a| a["name"] == "c d.bin").collect();
    assert_eq!(copies.len(), 1, "one good copy: {on_item:?}");
    assert_ne!(copies[0]["id"].as_str(), Some(bad.as_str()), "{on_item:?}");
    assert_eq!(copies[0]["sha256"].as_str(), Some(c_sha.as_str()));
    let out = env.run(&["verify", id], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // The missing one too; then a done entry whose file is gone says what to do instead.
    let a_id = line_of(&so, "a.bin")
        .split('`')
        .nth(1)
        .and_then(|c| c.strip_prefix("outbox retry "))
        .unwrap_or_else(|| panic!("{so}"))
        .to_string();
    std::fs::rename(folder.join("a.bin"), env.path("a.bin")).unwrap();
    let out = env.run(&["retry", &a_id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("its file is no longer at") && stderr(&out).contains("put it back"),
        "{}",
        stderr(&out)
    );
    std::fs::rename(env.path("a.bin"), folder.join("a.bin")).unwrap();
    let out = env.run(&["retry", &a_id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["run", "--once"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["verify", "--all"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(attached(&env.sandbox, &item).await.len(), 3);

    // --json: the same verdicts as data.
    let out = env.run(&["verify", "--all", "--json"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let result_of = |n: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["file"].as_str().unwrap().ends_with(n))
            .unwrap()["result"]
            .clone()
    };
    assert_eq!(result_of("a.bin"), "ok");
    assert_eq!(result_of("b.bin"), "ok");
    assert_eq!(result_of("c d.bin"), "ok");

    // One id: the intact one passes alone.
    let status = env.run(&["status", "--json"], Duration::from_secs(20));
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let b_id = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"].as_str().unwrap().ends_with("b.bin"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.run(&["verify", &b_id], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = env.run(&["verify", "nosuchid"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
}

/// The text of the first file a `service ... --dry-run` printed.
fn dry_run_file(out: &str) -> (String, String) {
    let mut lines = out.lines();
    let head = lines
        .find(|l| l.starts_with("# write "))
        .unwrap_or_else(|| panic!("no file in:\n{out}"));
    let path = head
        .trim_start_matches("# write ")
        .trim_end_matches(':')
        .trim_end_matches(" (UTF-16LE with BOM)")
        .to_string();
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("# end of ")).collect();
    (path, body.join("\n") + "\n")
}

/// A small well-formedness check: comments, declaration and doctype skipped, every start tag
/// closed in order, no stray `<` or `&`.
fn assert_well_formed_xml(x: &str) {
    let mut rest = x;
    let mut stack: Vec<String> = Vec::new();
    while let Some(i) = rest.find('<') {
        let text = &rest[..i];
        for (j, _) in text.match_indices('&') {
            let ent = &text[j..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| ent.starts_with(e)),
                "bare & in {text:?}"
            );
        }
        rest = &rest[i..];
        if rest.starts_with("<!--") {
            let end = rest.find("-->").expect("unclosed comment");
            rest = &rest[end + 3..];
            continue;
        }
        let end = rest.find('>').expect("unclosed tag");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap().to_string());
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

// Unix only: HOME places the unit and the plist there; Windows takes the profile folder from
// the system.
#[cfg(unix)]
#[test]
fn service_install_dry_run_for_each_platform() {
    let env = Env::new();
    let cfg = env.write_config("", "");
    let cfg_s = cfg.display().to_string();
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = run_bounded(
            env.cmd()
                .args(args)
                .env("HOME", home.path())
                .env_remove("XDG_CONFIG_HOME")
                .env_remove("XDG_DATA_HOME"),
            Duration::from_secs(20),
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out)
    };

    // Linux: a systemd user unit, checked by systemd-analyze when it is installed.
    let so = run(&["service", "install", "--dry-run", "--platform", "linux"]);
    let (path, unit) = dry_run_file(&so);
    assert_eq!(
        path,
        home.path()
            .join(".config/systemd/user/outbox.service")
            .display()
            .to_string()
    );
    assert!(
        unit.contains(&format!(
            "ExecStart=\"{}\" \"--config\" \"{cfg_s}\" \"run\"",
            bin()
        )),
        "{unit}"
    );
    for line in [
        "Restart=on-failure",
        "RestartPreventExitStatus=2 78",
        "WantedBy=default.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    assert!(
        !unit.contains("ExecStartPre") && !unit.contains("sleep"),
        "no startup sleeps"
    );
    assert!(
        so.contains("$ systemctl --user enable --now outbox.service"),
        "{so}"
    );
    let dir = tempfile::tempdir().unwrap();
    let unit_path = dir.path().join("outbox.service");
    std::fs::write(&unit_path, &unit).unwrap();
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
    {
        Ok(o) => {
            assert!(
                o.status.success(),
                "systemd-analyze: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let warnings = String::from_utf8_lossy(&o.stderr);
            assert!(
                !warnings.contains("outbox.service"),
                "systemd-analyze warns about the unit: {warnings}"
            );
        }
        Err(_) => eprintln!("SKIPPED: systemd-analyze is not installed; the unit was not verified"),
    }

    // macOS: a LaunchAgent plist, bootstrapped into the gui domain.
    let so = run(&["service", "install", "--dry-run", "--platform", "macos"]);
    let (path, plist) = dry_run_file(&so);
    assert!(
        path.ends_with("Library/LaunchAgents/com.outbox.agent.plist"),
        "{path}"
    );
    assert_well_formed_xml(&plist);
    // A real property-list parser (Python's plistlib, as plutil is macOS-only), where present.
    match std::process::Command::new("python3")
        .args(["-c", "import plistlib,sys; d=plistlib.loads(sys.stdin.buffer.read()); assert d['Label'] and d['ProgramArguments'], d"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(plist.as_bytes()).expect("write plist");
            let out = child.wait_with_output().expect("plistlib");
            assert!(out.status.success(), "plistlib refused the plist: {}", String::from_utf8_lossy(&out.stderr));
        }
        Err(_) => println!("SKIPPED: python3 not found; the plist got the XML check only"),
    }
    assert!(
        plist.contains(&format!("<string>{}</string>", bin())),
        "{plist}"
    );
    assert!(
        plist.contains(&format!("<string>{cfg_s}</string>")),
        "{plist}"
    );
    assert!(plist.contains("<key>RunAtLoad</key>"));
    assert!(
        so.lines()
            .any(|l| l.starts_with("$ launchctl bootstrap gui/")),
        "{so}"
    );

    // Windows: a Scheduled Task at logon.
    let so = run(&["service", "install", "--dry-run", "--platform", "windows"]);
    let (path, task) = dry_run_file(&so);
    assert!(path.ends_with("outbox-task.xml"), "{path}");
    assert_well_formed_xml(&task);
    assert!(task.contains("<LogonTrigger>"));
    assert!(
        task.contains(&format!("<Command>{}</Command>", bin())),
        "{task}"
    );
    assert!(
        task.contains(&format!("--config &quot;{cfg_s}&quot; run")),
        "{task}"
    );
    assert!(so.contains("$ schtasks /Create /TN outbox /XML"), "{so}");

    // Uninstall and status plans, and nothing written by a dry run.
    let so = run(&["service", "uninstall", "--dry-run", "--platform", "linux"]);
    assert!(
        so.contains("$ systemctl --user disable --now outbox.service"),
        "{so}"
    );
    let so = run(&["service", "status", "--dry-run", "--platform", "macos"]);
    assert!(so.contains("$ launchctl print gui/"), "{so}");
    assert!(
        path.starts_with(&home.path().display().to_string()),
        "{path}"
    );
    assert_eq!(
        std::fs::read_dir(home.path()).unwrap().count(),
        0,
        "a dry run writes nothing"
    );

    // A bad config: a real install refuses with 78 before touching anything.
    std::fs::write(&cfg, "[agent]\nnope = 1\n").unwrap();
    let out = env.run(
        &["service", "install", "--platform", "linux"],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
}

/// The Windows twin of `service_install_dry_run_for_each_platform`'s Windows part (#26): on
/// Windows the platform by default, a Scheduled Task at logon that runs this outbox.exe with the
/// config, its XML well formed and meant for the user's profile, installed by `schtasks`; a dry
/// run writes nothing.
#[cfg(windows)]
#[test]
fn service_install_dry_run_on_windows_plans_a_scheduled_task_at_logon() {
    let env = Env::new();
    let cfg = env.write_config("", "");
    let cfg_s = cfg.display().to_string();
    let out = run_bounded(
        env.cmd().args(["service", "install", "--dry-run"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let so = stdout(&out);
    let (path, task) = dry_run_file(&so);
    assert!(path.ends_with("outbox-task.xml"), "{path}");
    assert!(
        !std::path::Path::new(&path).exists(),
        "a dry run wrote {path}"
    );
    assert_well_formed_xml(&task);
    assert!(task.contains("<LogonTrigger>"), "{task}");
    assert!(
        task.to_lowercase()
            .contains(&format!("<command>{}</command>", bin().to_lowercase())),
        "{task}"
    );
    assert!(
        task.contains(&format!("--config &quot;{cfg_s}&quot; run")),
        "{task}"
    );
    assert!(so.contains("$ schtasks /Create /TN outbox /XML"), "{so}");
}

/// Text from a file of UTF-16LE with a BOM (what `service install` writes for schtasks, and
/// what the Task Scheduler may keep) or of UTF-8.
#[cfg(windows)]
fn utf16_or_utf8(bytes: &[u8]) -> String {
    match bytes {
        [0xFF, 0xFE, rest @ ..] => String::from_utf16_lossy(
            &rest
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect::<Vec<_>>(),
        ),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// #26: a real `service install` under Wine, as far as Wine's Task Scheduler goes. Wine's
/// `schtasks` knows `/Create`, `/Change` and `/Delete` only (`/Query`, `/Run` and `/End` print
/// nothing and exit 0: programs/schtasks), its service's `SchRpcRun` is a stub, and it never
/// reads a task's triggers (it watches C:\Windows\Tasks for the old `.job` files only). It
/// does register the task: its copy, C:\Windows\System32\Tasks\outbox, is made from the XML
/// outbox wrote (its description, under the name `\outbox`), and `service uninstall` removes
/// it. But Wine's copy keeps neither the logon trigger nor the command: its task definition
/// writes `<Triggers/>` and `<Exec/>` back, so under Wine no task can start outbox, at logon
/// or by `/Run`; that the task starts at logon is for a Windows machine (the XML itself is
/// `service_install_dry_run_on_windows_plans_a_scheduled_task_at_logon`'s). Only under Wine
/// (on Windows this would register a real task for the user running the tests).
#[cfg(windows)]
#[test]
fn service_install_under_wine_registers_the_task_and_uninstall_removes_it() {
    let wine = Command::new("winepath")
        .arg("-u")
        .arg(r"C:\")
        .output()
        .is_ok_and(|o| o.status.success());
    if !wine {
        println!("SKIPPED: not Wine (a real install would register a task for this user)");
        return;
    }
    let env = Env::new();
    env.write_config("", "");
    let windir = std::env::var("WINDIR").unwrap_or_else(|_| r"C:\windows".into());
    let registered = std::path::Path::new(&windir)
        .join("system32")
        .join("Tasks")
        .join("outbox");
    let out = run_bounded(
        env.cmd().args(["service", "install"]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let task = utf16_or_utf8(&std::fs::read(&registered).unwrap_or_else(|e| {
        panic!(
            "the Task Scheduler has no task at {}: {e}\n{}",
            registered.display(),
            stderr(&out)
        )
    }));
    assert!(
        task.contains(
            "<Description>outbox: attach files dropped into folders to Outlook items</Description>"
        ) && task.contains(r"<URI>\outbox</URI>"),
        "{task}"
    );
    // What Wine keeps of the trigger and the action, for the record (see above).
    println!("Wine's copy of the task:\n{task}");
    let out = run_bounded(
        env.cmd().args(["service", "uninstall"]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !registered.exists(),
        "the task is still registered after uninstall: {}",
        stderr(&out)
    );
}

/// The man page (tests/man.rs) and shell completions in packaging/ are generated from the clap
/// definitions; this fails when they are stale. `OUTBOX_BLESS=1 cargo test --test it commands::packaged_man_page` rewrites them.
#[test]
fn packaged_man_page_and_completions_are_current() {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
    let mut want: Vec<(std::path::PathBuf, Vec<u8>)> = Vec::new();
    want.push((root.join("man/outbox.1"), crate::man::render()));
    for (shell, file) in [
        (Shell::Bash, "outbox.bash"),
        (Shell::Zsh, "_outbox"),
        (Shell::Fish, "outbox.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut outbox::cli::Cli::command(), "outbox", &mut buf);
        want.push((root.join("completions").join(file), buf));
    }
    let bless = std::env::var("OUTBOX_BLESS").is_ok_and(|v| v == "1");
    for (path, bytes) in want {
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let have = std::fs::read(&path).unwrap_or_default();
        assert!(
            have == bytes,
            "{} is stale: run `OUTBOX_BLESS=1 cargo test --test it commands::packaged_man_page`",
            path.display()
        );
    }
}

#[tokio::test]
async fn check_warns_near_and_over_the_tenant_size_limit_and_passes_on_warnings() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    std::fs::create_dir_all(env.path("f")).unwrap();
    env.write_config("", &mapping("big", &env.path("f"), "message", &item, ""));
    let out = env.run(&["check"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // 24 MiB raw: Graph (and the sandbox) report more than 25 MB for it.
    let file = env.path("big.bin");
    write_file(&file, 24 * MIB, 9);
    let out = env.run(
        &["send", file.to_str().unwrap(), "--message", &item],
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A warning alone passes: `outbox check && outbox service install` must work.
    let out = env.run(&["check"], Duration::from_secs(30));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{so}");
    let l = line_of(&so, "mapping big message");
    assert!(
        l.starts_with("warn") && l.contains("near the tenant's message size limit"),
        "{so}"
    );

    // Past the limit it says by how much, not "near"; --json carries the same findings.
    let out = env.run(
        &[
            "send",
            file.to_str().unwrap(),
            "--message",
            &item,
            "--name",
            "again.bin",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["check", "--json"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let big = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["what"] == "mapping big message")
        .unwrap();
    assert_eq!(big["level"], "warn", "{findings}");
    let msg = big["message"].as_str().unwrap();
    assert!(
        msg.contains("× over the tenant's default message size limit"),
        "{msg}"
    );
    assert!(!msg.contains("near"), "{msg}");
}

#[tokio::test]
async fn verify_asks_a_running_agent_for_its_entries() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let folder = env.path("drop");
    write_file(&folder.join("one.txt"), 5_000, 4);
    env.write_config("", &mapping("drop", &folder, "message", &item, ""));
    let mut agent = env
        .cmd()
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while env.sandbox.attachments(&item).await.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "never attached");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The agent holds the ledger: verify must get the entries over the socket.
    let mut out = env.run(&["verify", "--all"], Duration::from_secs(30));
    for _ in 0..20 {
        if stdout(&out).contains("1 checked") {
            break;
        }
        // The done record may land just after the attachment appears.
        tokio::time::sleep(Duration::from_millis(200)).await;
        out = env.run(&["verify", "--all"], Duration::from_secs(30));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        line_of(&stdout(&out), "one.txt").starts_with("ok"),
        "{}",
        stdout(&out)
    );
}

fn status_rows(env: &Env) -> Vec<serde_json::Value> {
    let out = env.run(&["status", "--json"], Duration::from_secs(20));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array().unwrap().clone()
}

#[tokio::test]
async fn check_describes_a_mailing_folder_and_the_sending_pace() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("inv")).unwrap();
    env.write_config(
        "mailbox_sends = \"20/1m\"",
        &format!(
            "[[mapping]]\nname = \"invoices\"\nfolder = '{}'\n[mapping.new_message]\nto = [\"ap@contoso.com\"]\ncc = [\"boss@contoso.com\"]\nsubject = \"Invoice {{stem}}\"\ngroup = \"batch\"\nbatch_quiet = \"30s\"\n",
            env.path("inv").display()
        ),
    );
    let out = env.run(&["check"], Duration::from_secs(30));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{}", stderr(&out));
    assert!(
        so.contains("mapping invoices mail")
            && so.contains("to ap@contoso.com, cc boss@contoso.com")
            && so.contains("within 30s of each other"),
        "{so}"
    );
    assert!(so.contains("sends at most 20 message(s) per 1m"), "{so}");
    // No item to look up for it: no error about an empty item id.
    assert!(!so.contains("error"), "{so}");
}

/// Issue 20, item 10: a mailed file is checked in its message's sent copy (Exchange gives the
/// copy new attachment ids, so the draft's recorded id says nothing): found by the marker, the
/// file by its name and bytes. Before, every mailed file was MISSING with a `retry` advice that
/// `retry` refuses. A corrupted sent copy is a mismatch whose advice mails the file again when
/// pasted.
#[tokio::test(flavor = "multi_thread")]
async fn verify_checks_a_mailed_file_in_its_sent_copy() {
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
    write_file(&folder.join("invoice 7.pdf"), 30_000, 7);
    let out = env.run(&["run", "--once"], Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "run --once: {}", stderr(&out));
    env.sandbox
        .admin(Method::POST, "/sends/deliver", Some(json!({})))
        .await;

    let out = env.run(&["verify", "--all"], Duration::from_secs(60));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{}", stderr(&out));
    assert!(so.starts_with("ok "), "{so}");
    assert!(
        so.contains("invoice 7.pdf") && so.contains("sent in message"),
        "{so}"
    );
    assert!(so.contains("1 checked, 1 ok, 0 with problems"), "{so}");

    // Corrupt the sent copy's bytes: the file differs, and the advice mails it again.
    let sent = env.sandbox.admin(Method::GET, "/sent", None).await;
    let copy = &sent.as_array().unwrap()[0];
    let (cid, aid) = (
        copy["id"].as_str().unwrap().to_string(),
        copy["attachments"][0]["id"].as_str().unwrap().to_string(),
    );
    env.sandbox
        .admin(
            Method::POST,
            &format!("/items/{cid}/attachments/{aid}/corrupt"),
            Some(json!({})),
        )
        .await;
    let out = env.run(&["verify", "--all"], Duration::from_secs(60));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{so}\n{}", stderr(&out));
    assert!(so.starts_with("MISMATCH"), "{so}");
    assert!(so.contains("differs"), "{so}");
    assert!(!so.contains("outbox retry"), "advice retry refuses: {so}");
    let advice = so
        .split("to mail the file again, `")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .unwrap_or_else(|| panic!("no pasteable advice: {so}"));
    assert!(
        advice.starts_with("outbox mail --to ap@contoso.example "),
        "{advice}"
    );
    let pasted = advice.replacen("outbox", &quoted_bin(), 1);
    let mut sh = env.cmd();
    let sh = sh.arg("--version");
    let mut c = shell(&pasted);
    for (k, v) in sh.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = run_bounded(&mut c, Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{pasted}: {}", stderr(&out));
    env.sandbox
        .admin(Method::POST, "/sends/deliver", Some(json!({})))
        .await;
    let sent = env.sandbox.admin(Method::GET, "/sent", None).await;
    let sent = sent.as_array().unwrap();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sent[1]["attachments"][0]["name"], "invoice 7.pdf");
}

/// A mailed file whose message's send could not be confirmed: verify reads nothing, says so,
/// and advises Sent Items (and a retry that is accepted: only if the draft is still a draft).
#[tokio::test(flavor = "multi_thread")]
async fn verify_of_an_unconfirmed_message_says_to_look_in_sent_items() {
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
    write_file(&folder.join("q3.pdf"), 3_000, 9);
    // A 400 of no known code: it may have gone; never found in Sent Items.
    env.sandbox
        .faults(json!({"fail_next": [{"route": "send", "status": 400}]}))
        .await;
    let out = env.run(&["run", "--once"], Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(4), "run --once: {}", stderr(&out));
    let out = env.run(&["verify", "--all"], Duration::from_secs(60));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{so}\n{}", stderr(&out));
    assert!(so.starts_with("UNSURE"), "{so}");
    assert!(
        so.contains("never confirmed") && so.contains("look in Sent Items for internetMessageId <"),
        "{so}"
    );
    let mid = so
        .split("message ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    // The retry it names is one `retry` takes.
    let out = env.run(&["retry", mid], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["verify", "--all", "--json"], Duration::from_secs(60));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["result"], "unconfirmed", "{rows}");
}

/// A file of a message left as a draft (`send = false`) is checked on the draft by its recorded
/// id; a bad copy there comes with advice that works pasted (`outbox send … --message DRAFT`),
/// not an entry `retry` that refuses a file of a message.
#[tokio::test(flavor = "multi_thread")]
async fn verify_of_a_drafted_message_advises_attaching_to_the_draft_again() {
    let env = Env::new();
    let folder = env.path("drafts");
    std::fs::create_dir_all(&folder).unwrap();
    env.write_config(
        "",
        &format!(
            "[[mapping]]\nname = \"d\"\nfolder = '{}'\n[mapping.new_message]\nto = [\"ap@contoso.example\"]\nsend = false\n",
            folder.display()
        ),
    );
    write_file(&folder.join("plan.pdf"), 8_000, 5);
    let out = env.run(&["run", "--once"], Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "run --once: {}", stderr(&out));
    let out = env.run(&["verify", "--all"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    let rows: serde_json::Value = serde_json::from_slice(
        &env.run(&["status", "--json"], Duration::from_secs(30))
            .stdout,
    )
    .unwrap();
    let draft = rows[0]["message"]["draft_id"].as_str().unwrap().to_owned();
    let att = rows[0]["attachment_id"].as_str().unwrap().to_owned();
    env.sandbox
        .admin(
            Method::POST,
            &format!("/items/{draft}/attachments/{att}/corrupt"),
            Some(json!({})),
        )
        .await;
    let out = env.run(&["verify", "--all"], Duration::from_secs(60));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{so}");
    assert!(so.starts_with("MISMATCH"), "{so}");
    assert!(!so.contains("outbox retry"), "advice retry refuses: {so}");
    let advice = so
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no advice: {so}"));
    assert!(advice.starts_with("outbox send "), "{advice}");
    let pasted = advice.replacen("outbox", &quoted_bin(), 1);
    let mut c = shell(&pasted);
    c.env("OUTBOX_CONFIG", env.path("config.toml"))
        .env("OUTBOX_TEST_TOKEN", TOKEN)
        .env_remove("OUTBOX_CRASH_AT")
        .env_remove("OUTBOX_PAUSE_AT");
    let out = run_bounded(&mut c, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{pasted}: {}", stderr(&out));
    assert_eq!(env.sandbox.attachments(&draft).await.len(), 2);
}
