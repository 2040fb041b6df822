//! #26, Windows: the owner-only promises of `security`'s state dir, secret file and config tests,
//! kept with owners and DACLs (src/private.rs). "Others" are given access the Windows way, by a
//! DACL with an entry for Everyone (`outbox_win::set_file_dacl`); under Wine, which keeps a
//! file's DACL as its Unix mode (an entry for Everyone is the "other" bits, and a file of mode
//! 0644 shows Everyone reading it), the same calls work, so these run there as they would on
//! Windows. Another owner cannot be given on Windows without privileges (a restore privilege
//! to set another user's SID); under Wine the host's `chown` plays it (Wine shows a file of
//! another Unix user as owned by ANONYMOUS LOGON), elsewhere that part says SKIPPED. The
//! decisions themselves are tested over parsed DACLs in src/private.rs (`acl_tests`, every
//! platform).

use crate::common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

/// Everyone may do anything (passed down inside a folder): "others can write".
const EVERYONE_FULL: &str = "D:(A;OICI;FA;;;WD)";

fn mapping(name: &str, folder: &Path, item: &str, extra: &str) -> String {
    format!(
        "[[mapping]]\nname = \"{name}\"\nfolder = '{}'\nmessage = \"{item}\"\n{extra}\n",
        folder.display()
    )
}

fn me() -> String {
    outbox_win::user_sid().expect("the user's SID")
}

/// The SIDs that may do anything at all to `path` but the user, SYSTEM and Administrators.
fn others_in_dacl(path: &Path) -> Vec<String> {
    let me = me();
    let sec = outbox_win::file_security(path, false).expect("security");
    match sec.dacl {
        None => vec!["a NULL DACL (everyone)".into()],
        Some(aces) => aces
            .into_iter()
            .filter(|a| a.allow && a.flags & 0x08 == 0)
            .map(|a| a.sid)
            .filter(|s| *s != me && s != "S-1-5-18" && s != "S-1-5-32-544")
            .collect(),
    }
}

/// Give `path` to another user with the host's `chown` under Wine; `false` (SKIPPED printed)
/// elsewhere.
fn give_away_under_wine(path: &Path) -> bool {
    let Ok(out) = std::process::Command::new("winepath")
        .arg("-u")
        .arg(path)
        .output()
    else {
        println!("SKIPPED (another owner): not Wine, and Windows sets another user's SID only with a restore privilege");
        return false;
    };
    let unix = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Wine starts a Unix program but gives no handle to wait on: wait for the owner instead.
    let _ = std::process::Command::new(r"Z:\bin\chown")
        .args(["65534", &unix])
        .spawn()
        .map(|mut c| c.wait());
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        let owner = outbox_win::file_security(path, false)
            .ok()
            .and_then(|s| s.owner);
        if owner.is_some_and(|o| o != me()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("SKIPPED (another owner): the host's chown did not take");
    false
}

/// The twin of `security::a_state_dir_of_another_user_is_refused_and_a_loose_one_of_ours_tightened`,
/// and of the promise that what outbox makes is the user's alone: a state dir outbox makes,
/// its sessions folder and a saved upload URL have no one else in their DACL; one of ours
/// open to Everyone is tightened, with a warning; another user's is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_state_dir_and_secrets_outbox_makes_are_the_users_alone_and_a_loose_one_is_tightened() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    std::fs::create_dir_all(&drop).expect("mkdir");
    write_file(&drop.join("a.bin"), 4 * MIB, 1);
    env.write_config("", &mapping("drop", &drop, &item, ""));
    // Down after the upload URL was saved: the state dir, sessions/ and the URL file made.
    let out = run_bounded(
        env.cmd()
            .env("OUTBOX_CRASH_AT", "after-session-saved:1")
            .args(["run", "--once"]),
        T,
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    let state = env.state_dir();
    let sessions = state.join("sessions");
    let url: Vec<PathBuf> = std::fs::read_dir(&sessions)
        .expect("sessions")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "url"))
        .collect();
    assert_eq!(url.len(), 1, "{}", stderr(&out));
    for p in [&state, &sessions, &url[0]] {
        assert_eq!(
            others_in_dacl(p),
            Vec::<String>::new(),
            "{} is not the user's alone",
            p.display()
        );
    }
    // Open to Everyone: tightened, said so, and used.
    outbox_win::set_file_dacl(&state, EVERYONE_FULL).expect("open the state dir");
    assert_eq!(others_in_dacl(&state), ["S-1-1-0"]);
    let out = env.run(&["status"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the state dir was open to other users; it is now yours alone"),
        "{}",
        stderr(&out)
    );
    assert_eq!(others_in_dacl(&state), Vec::<String>::new());
    // Someone else's: refused, and said why.
    let other = env.path("others-state");
    std::fs::create_dir_all(&other).expect("mkdir");
    if !give_away_under_wine(&other) {
        return;
    }
    let cfg = std::fs::read_to_string(env.path("config.toml"))
        .expect("cfg")
        .replace(
            &format!("state_dir = '{}'", state.display()),
            &format!("state_dir = '{}'", other.display()),
        );
    std::fs::write(env.path("config.toml"), cfg).expect("cfg");
    let out = env.run(&["run", "--once"], T);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("belongs to another user"),
        "{}",
        stderr(&out)
    );
}

/// The twin of `security::a_planted_upload_url_file_never_receives_the_file`: upload URLs saved
/// while the agent was down are replaced by URLs of sessions on someone else's item, in files
/// others can write (and, under Wine, one of another owner). Neither is used: nothing reaches
/// the planted sessions, the files go to their own item once each, and the log says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_planted_upload_url_file_others_can_write_never_receives_the_file() {
    let env = Env::new();
    let item = env.sandbox.create_item("message", "me").await;
    let theirs = env.sandbox.create_item("message", "me").await;
    let drop = env.path("drop");
    let size = 4 * MIB;
    let a_sha = write_file(&drop.join("a.bin"), size, 1);
    let b_sha = write_file(&drop.join("b.bin"), size, 2);
    env.write_config("", &mapping("drop", &drop, &item, ""));
    let out = run_bounded(
        env.cmd()
            .env("OUTBOX_CRASH_AT", "after-session-saved:2")
            .args(["run", "--once"]),
        T,
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    let sessions = env.state_dir().join("sessions");
    let mut saved: Vec<PathBuf> = std::fs::read_dir(&sessions)
        .expect("sessions")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "url"))
        .collect();
    saved.sort();
    assert_eq!(saved.len(), 2, "{}", stderr(&out));
    let http = reqwest::Client::new();
    let mut planted = Vec::new();
    for (i, file) in saved.iter().enumerate() {
        let r = http
            .post(format!(
                "{}/me/messages/{}/attachments/createUploadSession",
                env.sandbox.graph_base(),
                urlenc(&theirs)
            ))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"AttachmentItem": {
                "attachmentType": "file", "name": format!("{i}.bin"), "size": size}}))
            .send()
            .await
            .expect("session");
        assert_eq!(r.status(), 201);
        let url = r.json::<serde_json::Value>().await.expect("json")["uploadUrl"]
            .as_str()
            .expect("uploadUrl")
            .to_string();
        std::fs::write(file, &url).expect("plant");
        planted.push(url);
    }
    // The first another user's (under Wine), then both open to Everyone.
    let another_owner = give_away_under_wine(&saved[0]);
    for (i, file) in saved.iter().enumerate() {
        let opened = outbox_win::set_file_dacl(file, EVERYONE_FULL);
        // (Another user's file may refuse the user a new DACL: its owner refuses it anyway.)
        if !(i == 0 && another_owner) {
            opened.expect("open to everyone");
        }
    }

    let out = env.run(&["run", "--once"], T);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(attached(&env.sandbox, &theirs).await.is_empty(), "{log}");
    for url in &planted {
        let r = http.get(url).send().await.expect("ask");
        let v: serde_json::Value = r.json().await.expect("json");
        let next = v["nextExpectedRanges"][0].as_str().unwrap_or_default();
        assert!(
            next == "0" || next == "0-",
            "the planted session received bytes: {v}\n{log}"
        );
    }
    assert!(
        log.contains("is not used: other users can write it (")
            && log.contains("(S-1-1-0)); delete it, it will be made again"),
        "{log}"
    );
    if another_owner {
        assert!(
            log.contains("is not used: it belongs to another user (")
                && log.contains("(S-1-5-7)), who may have planted it"),
            "{log}"
        );
    }
    assert!(log.contains("a saved upload URL was refused"), "{log}");
    let on_item = attached(&env.sandbox, &item).await;
    assert_eq!(on_item.get("a.bin"), Some(&a_sha));
    assert_eq!(on_item.get("b.bin"), Some(&b_sha));
    assert_eq!(std::fs::read_dir(&sessions).expect("ls").count(), 0);
}

/// The twin of `security::a_config_others_can_write_or_own_is_refused_for_every_auth_method_and_on_reload`
/// (but the reload, which is SIGHUP's): a config others can write, or in a folder others
/// control, or another user's, is refused (exit 78), naming the file, who may write it and the
/// `icacls` command that fixes it; made the user's alone again, it is used.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_others_can_write_or_own_is_refused_naming_the_icacls_fix() {
    let env = Env::new();
    let file = env.write_config("", "");
    outbox_win::set_file_dacl(&file, EVERYONE_FULL).expect("open the config");
    let out = env.run(&["status"], T);
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{msg}");
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(
        msg.contains("other users can write the config (") && msg.contains("(S-1-1-0))"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "icacls \"{}\" /inheritance:r /grant:r \"*{}:F\" /remove \"*S-1-1-0\"",
            file.display(),
            me()
        )),
        "{msg}"
    );
    // What the message says to do (as icacls would): the user's alone, and used.
    outbox_win::set_file_dacl(
        &file,
        &outbox_win::owner_only_file_sddl(false).expect("sddl"),
    )
    .expect("the user's alone");
    let out = env.run(&["status"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    // Its folder open to everyone: refused.
    let folder = env.dir.path();
    outbox_win::set_file_dacl(folder, EVERYONE_FULL).expect("open the folder");
    let out = env.run(&["status"], T);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("config's folder"), "{}", stderr(&out));
    outbox_win::set_file_dacl(
        folder,
        &outbox_win::owner_only_file_sddl(true).expect("sddl"),
    )
    .expect("the user's alone");
    let out = env.run(&["status"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    // Another user's.
    if give_away_under_wine(&file) {
        let out = env.run(&["status"], T);
        assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("the config belongs to another user ("),
            "{}",
            stderr(&out)
        );
    }
}
