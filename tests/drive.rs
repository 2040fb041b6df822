//! OneDrive uploads and links (issue #25's foundations): quickXorHash against a second
//! implementation, the sandbox's drive routes with OneDrive's rules, and the graph client's drive
//! steps against the real sandbox on loopback, through lost answers and taken names.

use crate::common::{write_file, Sandbox, TOKEN};
use outbox::auth::Credentials;
use outbox::config::Settings;
use outbox::graph::drive::{DriveError, DrivePath, FRAGMENT_UNIT};
use outbox::graph::retry::RetryPolicy;
use outbox::graph::GraphClient;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn client(sb: &Sandbox) -> GraphClient {
    let mut s = Settings::defaults("t.toml".into());
    s.graph.base_url = url::Url::parse(&sb.graph_base()).unwrap();
    GraphClient::new(&s, Credentials::fixed(TOKEN))
        .unwrap()
        .with_retry_policy(RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(2),
        })
}

/// One request to the sandbox with the test token; (status, JSON or text).
async fn call(
    sb: &Sandbox,
    m: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let url = if url.starts_with("http") {
        url.to_string()
    } else {
        format!("{}{url}", sb.graph_base())
    };
    let mut req = reqwest::Client::new().request(m, &url);
    if !url.contains("/api/v2.0/") {
        req = req.bearer_auth(TOKEN);
    }
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_json(sb: &Sandbox, path: &str, body: Value) -> (StatusCode, Value) {
    call(
        sb,
        Method::POST,
        path,
        &[("content-type", "application/json".into())],
        Some(body.to_string().into_bytes()),
    )
    .await
}

async fn put(sb: &Sandbox, url: &str, bytes: &[u8], at: u64, total: u64) -> (StatusCode, Value) {
    let range = format!("bytes {at}-{}/{total}", at + bytes.len() as u64 - 1);
    call(
        sb,
        Method::PUT,
        url,
        &[("content-range", range)],
        Some(bytes.to_vec()),
    )
    .await
}

fn drive_items(v: &Value) -> Vec<Value> {
    v.as_array()
        .unwrap()
        .iter()
        .filter(|i| i["folder"] == false)
        .cloned()
        .collect()
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// Unix only: the second implementation runs on the system's python3, which a Windows machine
// (and the Wine prefix) may not have; the hash is the same code on every platform.
#[cfg(unix)]
#[test]
fn quickxor_matches_a_second_implementation() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [0usize, 1, 19, 20, 21, 159, 160, 161, 1000, (1 << 20) + 7];
    let mut paths = Vec::new();
    for (n, size) in sizes.iter().enumerate() {
        let p = dir.path().join(format!("f{n}"));
        std::fs::write(&p, random_bytes(*size, n as u64 * 7919 + 1)).unwrap();
        paths.push(p);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/quickxorhash.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(&paths)
        .output()
        .expect("python3 runs scripts/quickxorhash.py (the second implementation)");
    assert!(out.status.success(), "{out:?}");
    let theirs: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(theirs.len(), sizes.len());
    for ((p, size), want) in paths.iter().zip(sizes).zip(&theirs) {
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(&outbox::quickxor::of(&bytes), want, "{size} bytes");
        // In pieces that straddle the register's period, as an upload hashes fragments.
        let mut q = outbox::quickxor::QuickXor::new();
        for piece in bytes.chunks(327_680 / 3 + 1) {
            q.update(piece);
        }
        assert_eq!(&q.base64(), want, "{size} bytes in pieces");
    }
    // Different bytes hash differently (a second implementation that answered a constant would
    // agree with a broken first one).
    assert_eq!(
        theirs
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        sizes.len()
    );
}

#[tokio::test]
async fn the_sandbox_keeps_onedrives_upload_rules() {
    let sb = Sandbox::start();
    let (s, v) = call(&sb, Method::GET, "/me/drive/root:/Outbox/a.bin", &[], None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("itemNotFound"))
    );

    let total = 3 * FRAGMENT_UNIT + 1000;
    let bytes = random_bytes(total as usize, 5);
    let (s, v) = post_json(
        &sb,
        "/me/drive/root:/Outbox/a.bin:/createUploadSession",
        json!({"item": {"@microsoft.graph.conflictBehavior": "fail"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["nextExpectedRanges"], json!(["0-"]));
    let url = v["uploadUrl"].as_str().unwrap().to_string();
    assert!(url.contains("tempauth="), "{url}");

    // Not a 320 KiB multiple, and not the last: refused, nothing taken.
    let (s, v) = put(&sb, &url, &bytes[..1000], 0, total).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalidRequest"))
    );
    let unit = FRAGMENT_UNIT as usize;
    let (s, v) = put(&sb, &url, &bytes[..unit], 0, total).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["nextExpectedRanges"], json!([format!("{unit}-")]));
    // The same fragment again: 416; a fragment past the next byte: 416 too.
    let (s, _) = put(&sb, &url, &bytes[..unit], 0, total).await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    let (s, _) = put(
        &sb,
        &url,
        &bytes[2 * unit..3 * unit],
        2 * FRAGMENT_UNIT,
        total,
    )
    .await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    // A total other than the session's.
    let (s, _) = put(&sb, &url, &bytes[unit..2 * unit], FRAGMENT_UNIT, total + 1).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Status, no Authorization; with Authorization the upload URL refuses.
    let (s, v) = call(&sb, Method::GET, &url, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["nextExpectedRanges"], json!([format!("{unit}-")]));
    let (s, _) = call(
        &sb,
        Method::GET,
        &url,
        &[("authorization", format!("Bearer {TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = put(&sb, &url, &bytes[unit..3 * unit], FRAGMENT_UNIT, total).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, item) = put(&sb, &url, &bytes[3 * unit..], 3 * FRAGMENT_UNIT, total).await;
    assert_eq!(s, StatusCode::CREATED, "{item}");
    assert_eq!(item["name"], "a.bin");
    assert_eq!(item["size"], total);
    let qx = outbox::quickxor::of(&bytes);
    assert_eq!(item["file"]["hashes"]["quickXorHash"], qx.as_str());
    assert_eq!(item["parentReference"]["path"], "/drive/root:/Outbox");
    // The session is over; the item is found by its path, in any case of its names.
    let (s, _) = call(&sb, Method::GET, &url, &[], None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, found) = call(&sb, Method::GET, "/me/drive/root:/outbox/A.bin:", &[], None).await;
    assert_eq!((s, &found["id"]), (StatusCode::OK, &item["id"]));

    // fail: the name is taken (at create), whatever the case.
    let (s, v) = post_json(
        &sb,
        "/me/drive/root:/Outbox/A.BIN:/createUploadSession",
        json!({"item": {"@microsoft.graph.conflictBehavior": "fail"}}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("nameAlreadyExists"))
    );
    // ... and at completion, when the name was taken meanwhile.
    let (_, v) = post_json(
        &sb,
        "/me/drive/root:/Outbox/b.txt:/createUploadSession",
        json!({"item": {"@microsoft.graph.conflictBehavior": "fail"}}),
    )
    .await;
    let late = v["uploadUrl"].as_str().unwrap().to_string();
    sb.admin(
        Method::POST,
        "/drive",
        Some(json!({"path": "Outbox/b.txt", "content": "the user's own"})),
    )
    .await;
    let (s, v) = put(&sb, &late, b"ours", 0, 4).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("nameAlreadyExists"))
    );
    // rename: a new name beside it.
    let (_, v) = post_json(
        &sb,
        "/me/drive/items/root:/Outbox/b.txt:/microsoft.graph.createUploadSession",
        json!({"item": {"@microsoft.graph.conflictBehavior": "rename"}}),
    )
    .await;
    let (s, v) = put(&sb, v["uploadUrl"].as_str().unwrap(), b"ours", 0, 4).await;
    assert_eq!(
        (s, v["name"].as_str()),
        (StatusCode::CREATED, Some("b 1.txt"))
    );

    // An expired session, and a cancelled one, are gone.
    for cancel in [false, true] {
        let (_, v) = post_json(
            &sb,
            "/me/drive/root:/Outbox/c.bin:/createUploadSession",
            json!({}),
        )
        .await;
        let u = v["uploadUrl"].as_str().unwrap().to_string();
        if cancel {
            let (s, _) = call(&sb, Method::DELETE, &u, &[], None).await;
            assert_eq!(s, StatusCode::NO_CONTENT);
        } else {
            sb.faults(json!({"expire_sessions": true})).await;
        }
        let (s, v) = put(&sb, &u, &bytes[..unit], 0, total).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("itemNotFound"))
        );
    }

    // Links: 201 new, 200 the same one again; its webUrl answers the bytes.
    let id = item["id"].as_str().unwrap();
    let link = |scope: &str| json!({"type": "view", "scope": scope});
    let (s, first) = post_json(
        &sb,
        &format!("/me/drive/items/{id}/createLink"),
        link("organization"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let (s, again) = post_json(
        &sb,
        &format!("/me/drive/items/{id}/createLink"),
        link("organization"),
    )
    .await;
    assert_eq!(
        (s, &again["link"]["webUrl"]),
        (StatusCode::OK, &first["link"]["webUrl"])
    );
    let web = first["link"]["webUrl"].as_str().unwrap();
    let got = reqwest::get(web).await.unwrap().bytes().await.unwrap();
    assert!(got[..] == bytes[..], "the link's bytes differ");
    sb.faults(json!({"refuse_anonymous_links": true})).await;
    let (s, v) = post_json(
        &sb,
        &format!("/me/drive/items/{id}/createLink"),
        link("anonymous"),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("accessDenied"))
    );

    // The admin API: files with their hashes, and the one link.
    let listed = drive_items(&sb.admin(Method::GET, "/drive", None).await);
    let a = listed.iter().find(|i| i["path"] == "Outbox/a.bin").unwrap();
    assert_eq!(a["quickXorHash"], qx.as_str());
    assert_eq!(a["size"], total);
    let links = sb.admin(Method::GET, "/links", None).await;
    assert_eq!(links.as_array().unwrap().len(), 1, "{links}");
    assert_eq!(links[0]["path"], "Outbox/a.bin");

    // It all survives a restart, an upload half done included.
    let (_, v) = post_json(
        &sb,
        "/users/me@sandbox.test/drive/root:/Outbox/half.bin:/createUploadSession",
        json!({"item": {"@microsoft.graph.conflictBehavior": "fail", "fileSize": total}}),
    )
    .await;
    let half = v["uploadUrl"].as_str().unwrap().to_string();
    let (s, _) = put(&sb, &half, &bytes[..unit], 0, total).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let mut sb = sb;
    sb.kill9();
    sb.restart();
    let (s, v) = call(&sb, Method::GET, &half, &[], None).await;
    assert_eq!(
        (s, &v["nextExpectedRanges"]),
        (StatusCode::OK, &json!([format!("{unit}-")]))
    );
    let (s, v) = put(&sb, &half, &bytes[unit..], FRAGMENT_UNIT, total).await;
    assert_eq!(
        (s, &v["file"]["hashes"]["quickXorHash"]),
        (StatusCode::CREATED, &json!(qx))
    );
    let (s, found) = call(&sb, Method::GET, "/me/drive/root:/Outbox/a.bin", &[], None).await;
    assert_eq!(
        (s, &found["file"]["hashes"]["quickXorHash"]),
        (StatusCode::OK, &json!(qx))
    );
    assert_eq!(
        sb.admin(Method::GET, "/links", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn the_client_uploads_once_through_lost_answers_and_links_once() {
    let sb = Sandbox::start();
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let size = 5 * FRAGMENT_UNIT + 12_345;
    let sha = write_file(&file, size, 11);
    // The create's answer lost (a session made, never used); the first fragment refused (503,
    // not taken: the status says so), then its answer lost (taken); the second taken but
    // answered 503; the last one's answer lost (made: the session is gone, the look by path
    // finds our bytes); the link's answer lost (made: asked again, the same link).
    sb.faults(json!({"fail_next": [
        {"route": "drive_session", "action": "lost"},
        {"route": "drive_put"},
        {"route": "drive_put", "action": "lost"},
        {"route": "drive_put", "action": "effect_then_status", "status": 503},
        {"route": "drive_put", "action": "lost"},
        {"route": "link", "action": "lost"},
    ], "retry_after": 0}))
        .await;
    let at = DrivePath::new("me", "Outbox/test/big.bin");
    let up = c
        .upload_to_drive(
            &at,
            std::fs::File::open(&file).unwrap(),
            size,
            Some(&sha),
            2 * FRAGMENT_UNIT,
        )
        .await
        .unwrap();
    assert_eq!(up.sha256, sha);
    assert_eq!(up.item.size, size);
    let listed = drive_items(&sb.admin(Method::GET, "/drive", None).await);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["sha256"], sha.as_str());
    assert_eq!(listed[0]["quickXorHash"], up.quick_xor.as_str());
    assert_eq!(listed[0]["id"], up.item.id.as_str());

    let first = c.create_link(&at, &up.item.id, "organization", None).await;
    assert!(first.is_err(), "the lost answer is a fault: {first:?}");
    let link = c
        .create_link(&at, &up.item.id, "organization", None)
        .await
        .unwrap();
    assert!(!link.new, "asked again: the link made before");
    let links = sb.admin(Method::GET, "/links", None).await;
    assert_eq!(links.as_array().unwrap().len(), 1);
    assert_eq!(links[0]["webUrl"], link.web_url.as_str());
    let got = reqwest::get(&link.web_url)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len() as u64, size);

    // Found again by its path, holding our bytes.
    let found = c.drive_item(&at).await.unwrap().unwrap();
    assert!(found.holds(size, &up.quick_xor));
    assert_eq!(
        c.drive_item(&DrivePath::new("me", "Outbox/nothing"))
            .await
            .unwrap(),
        None
    );
    let stats = sb.stats().await;
    assert_eq!(stats["drive_items_created"], 1, "{stats}");
    assert_eq!(stats["links_created"], 1, "{stats}");
    assert_eq!(stats["upload_url_requests_with_authorization"], 0);
}

#[tokio::test]
async fn the_client_never_overwrites_and_never_sends_changed_bytes() {
    let sb = Sandbox::start();
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scan.pdf");
    let size = FRAGMENT_UNIT + 10;
    let sha = write_file(&file, size, 3);
    sb.admin(
        Method::POST,
        "/drive",
        Some(json!({"path": "Outbox/scan.pdf", "content": "the user's"})),
    )
    .await;
    let at = DrivePath::new("me", "Outbox/scan.pdf");
    let e = c
        .upload_to_drive(
            &at,
            std::fs::File::open(&file).unwrap(),
            size,
            Some(&sha),
            FRAGMENT_UNIT,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DriveError::NameTaken(_)), "{e}");
    let theirs = c.drive_item(&at).await.unwrap().unwrap();
    assert_eq!(theirs.size, 10);
    assert!(!theirs.holds(size, &outbox::quickxor::of(&std::fs::read(&file).unwrap())));

    // Bytes that do not hash to the recorded SHA-256: the last fragment is never sent, the
    // session is cancelled, no file is made.
    let other = DrivePath::new("me", "Outbox/scan (2).pdf");
    let wrong = "0".repeat(64);
    let e = c
        .upload_to_drive(
            &other,
            std::fs::File::open(&file).unwrap(),
            size,
            Some(&wrong),
            FRAGMENT_UNIT,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DriveError::Changed), "{e}");
    assert_eq!(c.drive_item(&other).await.unwrap(), None);
    let stats = sb.stats().await;
    assert_eq!(stats["open_sessions"], 0, "{stats}");
    assert_eq!(
        drive_items(&sb.admin(Method::GET, "/drive", None).await).len(),
        1
    );
}

#[tokio::test]
async fn the_client_resumes_a_drive_upload_where_the_session_stands() {
    use outbox::graph::drive::{DriveSessionOutcome, FragmentOutcome};
    let sb = Sandbox::start();
    let c = client(&sb);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resume.bin");
    let size = 3 * FRAGMENT_UNIT + 99;
    let sha = write_file(&file, size, 21);
    let bytes = std::fs::read(&file).unwrap();
    let at = DrivePath::new("me", "Outbox/resume.bin");
    let mut url = None;
    let made = c
        .drive_session(&at, size, |u| {
            url = Some(u.to_owned());
            Ok(())
        })
        .await;
    assert_eq!(made, DriveSessionOutcome::Created { next: 0 });
    let url = url.unwrap();
    // One fragment in, as a run that then stopped.
    let first = bytes::Bytes::from(bytes[..FRAGMENT_UNIT as usize].to_vec());
    assert_eq!(
        c.drive_fragment("me", &url, 0, first, size).await,
        FragmentOutcome::Accepted {
            next: Some(FRAGMENT_UNIT)
        }
    );
    let up = c
        .resume_drive_upload(
            &at,
            &url,
            std::fs::File::open(&file).unwrap(),
            size,
            Some(&sha),
            FRAGMENT_UNIT,
        )
        .await
        .unwrap();
    assert_eq!(up.sha256, sha);
    assert_eq!(up.quick_xor, outbox::quickxor::of(&bytes));
    let stats = sb.stats().await;
    assert_eq!(
        stats["upload_bytes_received"], size,
        "a byte sent twice: {stats}"
    );
    // Resumed again once it is over: the session is gone, the file at the path is ours.
    let again = c
        .resume_drive_upload(
            &at,
            &url,
            std::fs::File::open(&file).unwrap(),
            size,
            Some(&sha),
            FRAGMENT_UNIT,
        )
        .await
        .unwrap();
    assert_eq!(again.item.id, up.item.id);
    // ... unless the bytes read now are not the ones recorded.
    let e = c
        .resume_drive_upload(
            &at,
            &url,
            std::fs::File::open(&file).unwrap(),
            size,
            Some(&"0".repeat(64)),
            FRAGMENT_UNIT,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DriveError::Changed), "{e}");
    assert_eq!(
        drive_items(&sb.admin(Method::GET, "/drive", None).await).len(),
        1
    );
    assert_eq!(sb.stats().await["upload_bytes_received"], size);
}

#[tokio::test]
async fn a_lost_answer_on_an_upload_url_comes_after_its_effect() {
    let sb = Sandbox::start();
    // Outlook's sessions too: a PUT whose answer is lost was taken.
    let item = sb.create_item("message", "me").await;
    let size = 3 * 1024 * 1024u64;
    let (s, v) = post_json(
        &sb,
        &format!(
            "/me/messages/{}/attachments/createUploadSession",
            crate::common::urlenc(&item)
        ),
        json!({"AttachmentItem": {"attachmentType": "file", "name": "a.bin", "size": size}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let url = v["uploadUrl"].as_str().unwrap().to_string();
    sb.faults(json!({"fail_next": [{"route": "put", "action": "lost"}]}))
        .await;
    let bytes = random_bytes(size as usize, 9);
    let range = format!("bytes 0-{}/{size}", 1024 * 1024 - 1);
    let lost = reqwest::Client::new()
        .put(&url)
        .header("content-range", range)
        .body(bytes[..1024 * 1024].to_vec())
        .send()
        .await;
    assert!(lost.is_err(), "the answer should be lost: {lost:?}");
    let (s, v) = call(&sb, Method::GET, &url, &[], None).await;
    assert_eq!(
        (s, &v["nextExpectedRanges"]),
        (StatusCode::OK, &json!(["1048576"]))
    );
    // A drive fragment taken and answered 503.
    let (_, v) = post_json(&sb, "/me/drive/root:/x.bin:/createUploadSession", json!({})).await;
    let drive_url = v["uploadUrl"].as_str().unwrap().to_string();
    sb.faults(json!({"fail_next": [{"route": "drive_put", "action": "effect_then_status", "status": 503}]}))
        .await;
    let unit = FRAGMENT_UNIT as usize;
    let (s, _) = put(&sb, &drive_url, &bytes[..unit], 0, 2 * FRAGMENT_UNIT).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (s, v) = call(&sb, Method::GET, &drive_url, &[], None).await;
    assert_eq!(
        (s, &v["nextExpectedRanges"]),
        (StatusCode::OK, &json!([format!("{unit}-")]))
    );
    assert_eq!(sb.stats().await["refused_after_effect"], 1);
}
