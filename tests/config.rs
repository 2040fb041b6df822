//! Every example config loads; every bad config fails with its file, line, key and a message
//! saying what to do (STYLE habit 6).

use outbox::config::{
    After, AuthMethod, ClientCredential, IfExists, ItemKind, NotifyLevel, Settings,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn example_config_loads_with_spec_values() {
    let path = repo("config.example.toml");
    let s = Settings::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.graph.base_url.as_str(),
        "https://graph.microsoft.com/v1.0"
    );
    assert_eq!(s.graph.ca_file, None);
    assert_eq!(s.auth.method, AuthMethod::DeviceCode);
    assert_eq!(s.auth.tenant, "common");
    assert_eq!(
        s.auth.authority.host_str(),
        Some("login.microsoftonline.com")
    );
    assert!(s.auth.client_id.is_some());
    assert_eq!(s.agent.concurrency, 4);
    assert_eq!(s.agent.chunk_size, 3840 * 1024);
    assert_eq!(s.agent.settle, Duration::from_secs(2));
    assert_eq!(s.agent.max_settle, Duration::from_secs(600));
    assert_eq!(s.agent.rescan, Duration::from_secs(3600));
    let req = s.agent.mailbox_requests.unwrap();
    assert_eq!((req.amount, req.window), (10_000, Duration::from_secs(600)));
    let up = s.agent.mailbox_upload_bytes.unwrap();
    assert_eq!(
        (up.amount, up.window),
        (150_000_000, Duration::from_secs(300))
    );
    assert_eq!(s.agent.notify, NotifyLevel::Failures);
    assert_eq!(s.agent.keep_done, Duration::from_secs(180 * 86_400));

    assert_eq!(s.mappings.len(), 1);
    let m = &s.mappings[0];
    let home = directories::BaseDirs::new()
        .unwrap()
        .home_dir()
        .to_path_buf();
    assert_eq!(m.name, "reports");
    assert_eq!(m.folder, home.join("Outbox/reports"));
    assert_eq!(m.kind, ItemKind::Message);
    assert!(m.item_id.starts_with("AAMk"));
    assert_eq!(m.user, "me");
    assert_eq!(
        m.exclude_patterns,
        [".*", "*.tmp", "*.part", "*.crdownload", "~$*"]
    );
    assert!(m.include.is_match("report.pdf"));
    assert!(
        m.exclude.is_match(".hidden")
            && m.exclude.is_match("x.part")
            && m.exclude.is_match("~$doc.docx")
    );
    assert!(!m.exclude.is_match("report.pdf"));
    assert!(!m.recursive && !m.follow_symlinks);
    assert_eq!(m.after, After::Keep);
    assert_eq!(m.sent_dir, m.folder.join("sent"));
    assert_eq!(m.failed_dir, Some(m.folder.join("failed")));
    assert_eq!(m.if_exists, IfExists::Skip);
}

/// Every SPEC key appears in the example, set or commented, so `outbox init` documents them all.
#[test]
fn example_config_mentions_every_key() {
    let text = std::fs::read_to_string(repo("config.example.toml")).unwrap();
    let keys = [
        "base_url",
        "ca_file",
        "method",
        "authority",
        "tenant",
        "client_id",
        "client_secret_env",
        "certificate_path",
        "token_env",
        "command",
        "state_dir",
        "concurrency",
        "chunk_size",
        "settle",
        "max_settle",
        "rescan",
        "mailbox_requests",
        "mailbox_upload_bytes",
        "notify",
        "keep_done",
        "name",
        "folder",
        "message",
        "event",
        "user",
        "include",
        "exclude",
        "recursive",
        "after",
        "sent_dir",
        "failed_dir",
        "follow_symlinks",
        "allow_hard_links",
        "cross_mounts",
        "if_exists",
    ];
    for key in keys {
        let written = text.lines().any(|l| {
            let l = l.trim_start().trim_start_matches("# ");
            l.starts_with(key) && l[key.len()..].trim_start().starts_with('=')
        });
        assert!(written, "config.example.toml does not show `{key} = ...`");
    }
}

/// Each fixture's first line is `# expect: A | B | ...`; A is `:LINE: KEY:` and every piece must
/// be in the error text.
#[test]
fn every_invalid_config_fails_with_line_key_and_advice() {
    let dir = repo("tests/invalid_configs");
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let mut failures = Vec::new();
    for path in entries {
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or("");
        let expect = first
            .strip_prefix("# expect: ")
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", path.display()));
        let pieces: Vec<&str> = expect.split(" | ").map(str::trim).collect();
        assert!(
            pieces[0].starts_with(':') && pieces[0].ends_with(':') && pieces[0].contains(": "),
            "{}: the first expectation must be `:LINE: KEY:`",
            path.display()
        );
        match Settings::load(&path) {
            Ok(_) => failures.push(format!("{}: loaded, but must fail", path.display())),
            Err(e) => {
                let shown = e.to_string();
                let wanted_prefix = format!("{}{}", path.display(), pieces[0]);
                // Windows: the path is shown absolute, in its own separators (the manifest dir
                // can be a Unix path under Wine); the file and line are what counts.
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let found = if cfg!(windows) {
                    shown.contains(&format!("{name}{}", pieces[0]))
                } else {
                    shown.starts_with(&wanted_prefix)
                };
                if !found {
                    failures.push(format!(
                        "{}:\n  got    {shown}\n  wanted {wanted_prefix}...",
                        path.display()
                    ));
                }
                for piece in &pieces[1..] {
                    if !shown.contains(piece) {
                        failures.push(format!(
                            "{}:\n  got     {shown}\n  missing {piece}",
                            path.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(seen >= 12, "only {seen} fixtures found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn missing_file_says_to_run_init() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let e = Settings::load(&path).unwrap_err();
    assert_eq!(e.line, None);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}: ", path.display())),
        "{shown}"
    );
    assert!(shown.contains("outbox init"), "{shown}");
    let e = Settings::load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("directory"), "{e}");
}

#[test]
fn minimal_config_gets_every_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.toml",
        "[auth]\nclient_id = \"abc\"\n\n[[mapping]]\nfolder = \"drop/Invoices\"\nevent = \"AAMkE\"\n",
    );
    let s = Settings::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let d = Settings::defaults(PathBuf::from("x"));
    assert_eq!(s.source, path);
    assert_eq!(s.auth.method, AuthMethod::DeviceCode);
    assert_eq!(s.graph.base_url, d.graph.base_url);
    assert_eq!(s.auth.authority, d.auth.authority);
    assert_eq!(s.agent.state_dir, d.agent.state_dir);
    assert_eq!(s.agent.chunk_size, d.agent.chunk_size);
    assert_eq!(s.agent.mailbox_requests, d.agent.mailbox_requests);
    let m = &s.mappings[0];
    // Relative folders are taken from the config file's directory; the name from the folder.
    assert_eq!(m.folder, dir.path().join("drop/Invoices"));
    assert_eq!(m.name, "Invoices");
    assert_eq!(m.kind, ItemKind::Event);
    assert_eq!(m.user, "me");
    assert_eq!(m.include_patterns, ["*"]);
    assert_eq!(m.sent_dir, m.folder.join("sent"));
    assert_eq!(m.failed_dir, None);
    assert!(m.exclude.is_match("download.crdownload"));
}

#[test]
fn every_auth_method_and_option_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("OUTBOX_TEST_CFG_ROOT", dir.path());
    let path = write(
        dir.path(),
        "c.toml",
        r#"
[graph]
base_url = "http://127.0.0.1:8765/v1.0/"
ca_file = "certs/root.pem"

[auth]
method = "client_credentials"
authority = "https://login.microsoftonline.us/"
tenant = "contoso.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret_env = "MY_SECRET"

[agent]
state_dir = "${OUTBOX_TEST_CFG_ROOT}/state"
concurrency = 2
chunk_size = 327680
settle = "500ms"
max_settle = "1h30m"
rescan = "15m"
mailbox_requests = "off"
mailbox_upload_bytes = "1GiB/1h"
notify = "all"
keep_done = "7d"

[[mapping]]
name = "shared"
folder = "$OUTBOX_TEST_CFG_ROOT/shared"
message = "AAMk1"
user = "team@contoso.com"
include = ["*.pdf", "*.xlsx"]
exclude = []
recursive = true
after = "move"
sent_dir = "../archive"
failed_dir = "failed"
follow_symlinks = true
if_exists = "attach"

[[mapping]]
folder = "shared2"
event = "AAMk2"
user = "00000000-1111-2222-3333-444444444444"
after = "delete"
"#,
    );
    let s = Settings::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.graph.base_url.as_str(), "http://127.0.0.1:8765/v1.0");
    assert_eq!(s.graph.ca_file, Some(dir.path().join("certs/root.pem")));
    assert_eq!(
        s.auth.method,
        AuthMethod::ClientCredentials {
            secret: ClientCredential::SecretEnv("MY_SECRET".into())
        }
    );
    assert_eq!(s.auth.tenant, "contoso.onmicrosoft.com");
    assert_eq!(
        s.auth.authority.host_str(),
        Some("login.microsoftonline.us")
    );
    assert_eq!(s.agent.state_dir, dir.path().join("state"));
    assert_eq!(s.agent.concurrency, 2);
    assert_eq!(s.agent.chunk_size, 320 * 1024);
    assert_eq!(s.agent.settle, Duration::from_millis(500));
    assert_eq!(s.agent.max_settle, Duration::from_secs(5400));
    assert_eq!(s.agent.mailbox_requests, None);
    assert_eq!(s.agent.mailbox_upload_bytes.unwrap().amount, 1 << 30);
    assert_eq!(s.agent.notify, NotifyLevel::All);
    let m = &s.mappings[0];
    assert_eq!(m.folder, dir.path().join("shared"));
    assert!(m.include.is_match("a.pdf") && !m.include.is_match("a.doc"));
    assert!(m.exclude_patterns.is_empty() && !m.exclude.is_match(".hidden"));
    assert!(m.recursive && m.follow_symlinks);
    assert_eq!(m.after, After::Move);
    assert_eq!(m.sent_dir, dir.path().join("archive"));
    assert_eq!(m.failed_dir, Some(dir.path().join("shared/failed")));
    assert_eq!(m.if_exists, IfExists::Attach);
    assert_eq!(s.mappings[1].after, After::Delete);
    assert_eq!(s.mappings[1].name, "shared2");

    let certs = write(
        dir.path(),
        "cert.toml",
        "[auth]\nmethod = \"client_credentials\"\nclient_id = \"x\"\ncertificate_path = \"~/app.pem\"\n",
    );
    let s = Settings::load(&certs).unwrap_or_else(|e| panic!("{e}"));
    let home = directories::BaseDirs::new()
        .unwrap()
        .home_dir()
        .to_path_buf();
    assert_eq!(
        s.auth.method,
        AuthMethod::ClientCredentials {
            secret: ClientCredential::Certificate(home.join("app.pem"))
        }
    );

    let env = write(dir.path(), "env.toml", "[auth]\nmethod = \"token_env\"\n");
    let s = Settings::load(&env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.auth.method,
        AuthMethod::TokenEnv {
            var: "OUTBOX_ACCESS_TOKEN".into()
        }
    );
    assert_eq!(s.auth.client_id, None);

    let cmd = write(
        dir.path(),
        "cmd.toml",
        "[auth]\nmethod = \"token_command\"\ncommand = [\"az\", \"x\"]\n",
    );
    let s = Settings::load(&cmd).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.auth.method,
        AuthMethod::TokenCommand {
            command: vec!["az".into(), "x".into()]
        }
    );
}

/// A secret pasted where a variable name belongs must not be echoed back in the error.
#[test]
fn pasted_secret_is_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.toml",
        "[auth]\nmethod = \"token_env\"\ntoken_env = \"eyJ0eXAiOiJKV1QiLCJub25jZSI6Ik\"\n[graph]\nbase_url = \"https://graph.microsoft.com/v1.0\"\n",
    );
    let e = Settings::load(&path).unwrap_err().to_string();
    assert!(e.contains(":3: auth.token_env:"), "{e}");
    assert!(!e.contains("eyJ0eXAi"), "{e}");
}

#[test]
fn a_new_message_mapping_is_read_with_its_defaults() {
    use outbox::config::{BodyType, Group, Target};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body.html"), "<p>Attached: {names}</p>").unwrap();
    let p = write(
        dir.path(),
        "c.toml",
        r#"
[auth]
method = "token_env"
[agent]
mailbox_sends = "off"
[[mapping]]
folder = "in"
[mapping.new_message]
to = [" ap@contoso.com "]
bcc = ["audit@contoso.com"]
subject = "Invoice {stem} ({size})"
body_file = "body.html"
group = "batch"
batch_quiet = "45s"
batch_max_wait = "10m"
send = false
max_message_size = "20MB"

[[mapping]]
folder = "plain"
[mapping.new_message]
cc = ["x@y.org"]
"#,
    );
    let s = Settings::load(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.agent.mailbox_sends, None);
    let Target::NewMessage(t) = &s.mappings[0].target else {
        panic!("not a new_message target")
    };
    assert_eq!(t.to, ["ap@contoso.com"]);
    assert_eq!(t.bcc, ["audit@contoso.com"]);
    assert_eq!(t.subject, "Invoice {stem} ({size})");
    assert_eq!(t.body, "<p>Attached: {names}</p>");
    assert_eq!(
        t.body_file.as_deref(),
        Some(dir.path().join("body.html").as_path())
    );
    assert_eq!(t.body_type, BodyType::Html);
    assert_eq!(
        (t.group, t.batch_quiet, t.send),
        (Group::Batch, Duration::from_secs(45), false)
    );
    assert_eq!(t.batch_max_wait, Duration::from_secs(600));
    assert_eq!(t.max_message_size, 20_000_000);
    let Target::NewMessage(d) = &s.mappings[1].target else {
        panic!("not a new_message target")
    };
    assert_eq!(
        (d.subject.as_str(), d.body.as_str()),
        ("{name}", "Attached: {names}")
    );
    assert_eq!(
        (d.body_type, d.group, d.send),
        (BodyType::Text, Group::File, true)
    );
    assert_eq!(d.max_message_size, 35_000_000);
    // batch_max_wait: 5 minutes, or batch_quiet when that alone is set longer.
    assert_eq!(d.batch_max_wait, Duration::from_secs(300));
    assert_eq!(s.mappings[1].item_id, "");

    // The commented example in config.example.toml loads once uncommented.
    let example = std::fs::read_to_string(repo("config.example.toml")).unwrap();
    let at = example
        .find("# [[mapping]]\n# name = \"invoices\"")
        .expect("the mailing example");
    let block: String = example[at..]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = format!("[auth]\nmethod = \"token_env\"\n{block}");
    let s = Settings::load(&write(dir.path(), "ex.toml", &text)).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(s.mappings[0].target, Target::NewMessage(_)));
    let req = Settings::load(&repo("config.example.toml")).unwrap();
    let sends = req.agent.mailbox_sends.unwrap();
    assert_eq!((sends.amount, sends.window), (30, Duration::from_secs(60)));
}
