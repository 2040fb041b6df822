//! Desktop commands end to end: demo, init, check, items, verify, service. Real binary, real
//! sandbox on loopback, temp dirs.

mod common;

use common::*;
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
    let folder = cwd.path().join("outbox-demo");
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
        "[[mapping]]\nname = \"{name}\"\nfolder = \"{}\"\n{kind} = \"{id}\"\n{extra}\n",
        folder.display()
    )
}

#[test]
fn init_writes_a_loadable_config_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sub dir").join("config.toml");
    let out = run_bounded(
        Command::new(bin())
            .arg("--config")
            .arg(&cfg)
            .arg("init")
            .env("HOME", dir.path()),
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
    assert!(stderr(&out).contains("bogus"), "{}", stderr(&out));
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
    let out = env.run(&["items", "messages"], Duration::from_secs(30));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{}", stderr(&out));
    assert!(line_of(&so, "Budget 2027 draft").contains(&id), "{so}");
    assert!(so.contains("Other"));

    let out = env.run(
        &["items", "messages", "--search", "Budget"],
        Duration::from_secs(30),
    );
    let so = stdout(&out);
    assert!(so.contains(&id) && !so.contains("Other"), "{so}");

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
    write_file(&folder.join("c d.bin"), 3 * MIB + 5, 3);
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
