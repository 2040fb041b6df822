//! The sandbox over real loopback HTTP: attachments, upload sessions, Graph's strict rules,
//! faults, the admin API and the device-code flow.

use outbox::sandbox::{Sandbox, SandboxOptions};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const TOKEN: &str = "test-token";
const MIB: usize = 1024 * 1024;

/// The sandbox started in this test process (not the binary), with an HTTP client for it.
struct InProcessSandbox {
    sb: Sandbox,
    c: Client,
}

impl InProcessSandbox {
    async fn new() -> InProcessSandbox {
        let sb = Sandbox::start(SandboxOptions {
            port: 0,
            data_dir: None,
            tls: false,
            token: Some(TOKEN.into()),
        })
        .await
        .unwrap();
        InProcessSandbox {
            sb,
            c: Client::new(),
        }
    }
    fn o(&self) -> String {
        self.sb.origin()
    }
    fn g(&self, p: &str) -> String {
        format!("{}{}", self.sb.graph_base(), p)
    }
    async fn admin_post(&self, p: &str, body: Value) -> Value {
        let r = self
            .c
            .post(format!("{}/_admin{p}", self.o()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "admin {p}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }
    async fn admin_get(&self, p: &str) -> Value {
        self.c
            .get(format!("{}/_admin{p}", self.o()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
    async fn message(&self) -> String {
        self.admin_post("/items", json!({"kind": "message", "user": "me"}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
    async fn session(&self, item: &str, size: usize) -> reqwest::Response {
        self.c
            .post(self.g(&format!("/me/messages/{item}/attachments/createUploadSession")))
            .bearer_auth(TOKEN)
            .json(&json!({"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": size}}))
            .send()
            .await
            .unwrap()
    }
    async fn upload_url(&self, item: &str, size: usize) -> String {
        let r = self.session(item, size).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["nextExpectedRanges"], json!(["0-"]));
        let exp = v["expirationDateTime"].as_str().unwrap();
        assert_eq!(
            exp.split('.').nth(1).unwrap().len(),
            8,
            "7 fractional digits + Z: {exp}"
        );
        v["uploadUrl"].as_str().unwrap().to_string()
    }
    async fn put(
        &self,
        url: &str,
        data: &[u8],
        start: usize,
        total: usize,
    ) -> reqwest::Result<reqwest::Response> {
        let end = start + data.len() - 1;
        self.c
            .put(url)
            .header("Content-Range", format!("bytes {start}-{end}/{total}"))
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
    }
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

async fn code_of(r: reqwest::Response) -> String {
    let v: Value = r.json().await.unwrap();
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn small_post_then_value_matches_admin_sha() {
    let e = InProcessSandbox::new().await;
    let item = e.message().await;
    let bytes = data(1000);
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes);
    let r = e
        .c
        .post(e.g(&format!("/me/messages/{item}/attachments")))
        .bearer_auth(TOKEN)
        .json(&json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "r é.pdf", "contentBytes": b64}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["contentType"], "application/pdf");
    assert_ne!(v["size"], json!(1000), "Outlook's size is not the raw size");
    let got =
        e.c.get(e.g(&format!("/me/messages/{item}/attachments/{id}/$value")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
    assert_eq!(got.headers()["content-type"], "application/pdf");
    assert_eq!(got.bytes().await.unwrap().as_ref(), &bytes[..]);
    let list = e.admin_get(&format!("/items/{item}/attachments")).await;
    assert_eq!(list[0]["sha256"], json!(sha(&bytes)));
    assert_eq!(list[0]["size"], json!(1000));
    // Missing @odata.type → 422, no token → 401 with WWW-Authenticate.
    let r =
        e.c.post(e.g(&format!(
            "/users/me@sandbox.test/messages/{item}/attachments"
        )))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "x", "contentBytes": "AA=="}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code_of(r).await, "UnprocessableType");
    let r = e.c.get(e.g("/me")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("authorization_uri"));
    let r =
        e.c.get(e.g("/me/messages/nope/attachments"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(code_of(r).await, "ErrorItemNotFound");
}

#[tokio::test]
async fn full_session_three_puts_then_location() {
    let e = InProcessSandbox::new().await;
    let item = e.admin_post("/items", json!({"kind": "event"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let size = 2 * MIB + 12345;
    let bytes = data(size);
    let r =
        e.c.post(e.g(&format!(
            "/me/events/{item}/attachments/microsoft.graph.createUploadSession"
        )))
        .bearer_auth(TOKEN)
        .json(
            &json!({"attachmentItem": {"attachmentType": "file", "name": "big.bin", "size": size}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let url = r.json::<Value>().await.unwrap()["uploadUrl"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with(&e.o()) && url.contains("authtoken="));
    let cuts = [0, MIB, 2 * MIB, size];
    for w in 0..3 {
        let r = e
            .put(&url, &bytes[cuts[w]..cuts[w + 1]], cuts[w], size)
            .await
            .unwrap();
        if w < 2 {
            assert_eq!(r.status(), StatusCode::OK);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["nextExpectedRanges"], json!([cuts[w + 1].to_string()]));
            assert!(v["ExpirationDateTime"].is_string());
        } else {
            assert_eq!(r.status(), StatusCode::CREATED);
            let loc = r.headers()["location"].to_str().unwrap().to_string();
            assert!(loc.contains("/Events('"), "{loc}");
            let id = loc
                .rsplit("Attachments('")
                .next()
                .unwrap()
                .trim_end_matches("')")
                .to_string();
            assert!(r.bytes().await.unwrap().is_empty());
            let got =
                e.c.get(e.g(&format!("/me/events/{item}/attachments/{id}/$value")))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap();
            assert_eq!(sha(&got.bytes().await.unwrap()), sha(&bytes));
        }
    }
    let list = e.admin_get(&format!("/items/{item}/attachments")).await;
    assert_eq!(list[0]["sha256"], json!(sha(&bytes)));
    let st = e.admin_get("/stats").await;
    assert_eq!(st["upload_bytes_committed"], json!(size));
    assert_eq!(st["open_sessions"], json!(0));
    assert_eq!(st["duplicate_attachments"], json!(0));
}

#[tokio::test]
async fn upload_url_rules_416_401_status_delete_expiry() {
    let e = InProcessSandbox::new().await;
    let item = e.message().await;
    let size = 3 * MIB;
    let bytes = data(size);
    let url = e.upload_url(&item, size).await;
    // Not at the next expected byte → 416.
    let r = e.put(&url, &bytes[100..200], 100, size).await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // Authorization on the upload URL → 401 InvalidAudience, counted.
    let r =
        e.c.put(&url)
            .bearer_auth(TOKEN)
            .header("Content-Range", format!("bytes 0-9/{size}"))
            .body(bytes[..10].to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(code_of(r).await, "InvalidAudience");
    assert_eq!(
        e.admin_get("/stats").await["upload_url_requests_with_authorization"],
        json!(1)
    );
    // Wrong total → 400.
    let r = e.put(&url, &bytes[..10], 0, size + 1).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // One PUT, then GET status.
    assert_eq!(
        e.put(&url, &bytes[..MIB], 0, size).await.unwrap().status(),
        StatusCode::OK
    );
    let v: Value = e.c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["nextExpectedRanges"], json!([MIB.to_string()]));
    // Bad authtoken → 404.
    let bad = url.replace("authtoken=", "authtoken=x");
    assert_eq!(
        e.c.get(&bad).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // DELETE → 204, then gone.
    assert_eq!(
        e.c.delete(&url).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        e.c.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // Expired session → 404.
    let url = e.upload_url(&item, size).await;
    e.admin_post("/sessions/expire", json!({})).await;
    assert_eq!(
        e.put(&url, &bytes[..10], 0, size).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // Status GET switched off → 404; PascalCase switch.
    e.admin_post("/faults", json!({"status_get": false, "casing": "pascal"}))
        .await;
    let url = e.upload_url(&item, size).await;
    assert_eq!(
        e.c.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let v: Value = e
        .put(&url, &bytes[..10], 0, size)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["NextExpectedRanges"], json!(["10"]));
}

#[tokio::test]
async fn size_rules_small_session_oversize_post_message_limit_non_draft() {
    let e = InProcessSandbox::new().await;
    let item = e.message().await;
    let r = e.session(&item, 1000).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        code_of(r).await,
        "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"
    );
    assert_eq!(
        e.session(&item, 150 * MIB + 1).await.status(),
        StatusCode::BAD_REQUEST
    );
    let body = vec![b'a'; 4 * MIB + 1];
    let post = |b: Vec<u8>| {
        e.c.post(e.g(&format!("/me/messages/{item}/attachments")))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(b)
            .send()
    };
    assert_eq!(
        post(body.clone()).await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    e.admin_post(
        "/faults",
        json!({"oversize_as_400": true, "message_size_limit": 4_000_000}),
    )
    .await;
    let r = post(body).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("The maximum request length supported is 4MB."));
    let r = e.session(&item, 3 * MIB).await;
    assert_eq!(code_of(r).await, "ErrorMessageSizeExceeded");
    let sent = e
        .admin_post("/items", json!({"kind": "message", "isDraft": false}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = e.session(&sent, 3 * MIB).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Shared-mailbox 403 only when switched on.
    let other = e
        .admin_post(
            "/items",
            json!({"kind": "message", "user": "boss@contoso.test"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cus = |u: &str| {
        e.c.post(e.g(&format!(
            "/users/{u}/messages/{other}/attachments/createUploadSession"
        )))
        .bearer_auth(TOKEN)
        .json(&json!({"AttachmentItem": {"attachmentType": "file", "name": "b", "size": 2 * MIB}}))
        .send()
    };
    assert_eq!(
        cus("boss@contoso.test").await.unwrap().status(),
        StatusCode::CREATED
    );
    e.admin_post("/faults", json!({"shared_mailbox_403": true}))
        .await;
    assert_eq!(
        cus("BOSS@contoso.test").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

/// The tenant's size limit holds for attachments POSTed at once: each is judged again under
/// the lock that adds it, not only before its bytes are stored (a race once let three 600 KB
/// POSTs through a 2 MB limit together).
#[tokio::test]
async fn concurrent_attachment_posts_cannot_pass_the_size_limit_together() {
    use base64::Engine as _;
    let e = InProcessSandbox::new().await;
    // 700,000 bytes are 933,336 base64 characters: two fit under 2,000,000, three do not.
    e.admin_post("/faults", json!({"message_size_limit": 2_000_000}))
        .await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 700_000]);
    for round in 0..5 {
        let item = e.message().await;
        let url = e.g(&format!("/me/messages/{item}/attachments"));
        let posts = (0..4).map(|i| {
            e.c.post(&url)
                .bearer_auth(TOKEN)
                .json(&json!({
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "name": format!("part{i}.bin"),
                    "contentBytes": b64,
                }))
                .send()
        });
        let rs = futures_util::future::join_all(posts).await;
        let mut created = 0;
        for r in rs {
            let r = r.unwrap();
            match r.status() {
                StatusCode::CREATED => created += 1,
                StatusCode::BAD_REQUEST => {
                    assert_eq!(code_of(r).await, "ErrorMessageSizeExceeded")
                }
                s => panic!("round {round}: unexpected {s}"),
            }
        }
        assert_eq!(created, 2, "round {round}: two attachments fit, no more");
    }
}

#[tokio::test]
async fn concurrency_limit_gives_429_with_retry_after() {
    let e = InProcessSandbox::new().await;
    let item = e.message().await;
    e.admin_post("/faults", json!({"delay_ms": 400})).await;
    let url = e.g(&format!("/me/messages/{item}"));
    let reqs = (0..6).map(|_| e.c.get(&url).bearer_auth(TOKEN).send());
    let rs = futures_util::future::join_all(reqs).await;
    let throttled: Vec<_> = rs
        .iter()
        .map(|r| r.as_ref().unwrap())
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(throttled.len(), 2);
    assert!(throttled[0].headers().contains_key("retry-after"));
    let st = e.admin_get("/stats").await;
    assert_eq!(st["peak_concurrent_requests"]["me@sandbox.test"], json!(4));
    assert_eq!(st["throttled_429"], json!(2));
}

#[tokio::test]
async fn fail_next_one_shots_in_order_and_drop_commits_nothing() {
    let e = InProcessSandbox::new().await;
    let item = e.message().await;
    let size = 2 * MIB;
    let bytes = data(size);
    let url = e.upload_url(&item, size).await;
    e.admin_post(
        "/faults",
        json!({"fail_next": [{"route": "put", "status": 503, "retry_after": 2}, {"route": "put", "action": "drop"}]}),
    )
    .await;
    let r = e.put(&url, &bytes[..MIB], 0, size).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "2");
    assert!(
        e.put(&url, &bytes[..MIB], 0, size).await.is_err(),
        "connection dropped without an answer"
    );
    let v: Value = e.c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["nextExpectedRanges"], json!(["0"]));
    assert_eq!(
        e.put(&url, &bytes[..MIB], 0, size).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        e.put(&url, &bytes[MIB..], MIB, size)
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let st = e.admin_get("/stats").await;
    assert_eq!(st["dropped_connections"], json!(1));
    assert_eq!(st["upload_bytes_committed"], json!(size));
    assert_eq!(
        e.admin_get(&format!("/items/{item}/attachments")).await[0]["sha256"],
        json!(sha(&bytes))
    );
}

#[tokio::test]
async fn device_code_flow_refresh_rotation_and_expiry() {
    let e = InProcessSandbox::new().await;
    e.admin_post("/faults", json!({"device_code_interval_secs": 0}))
        .await;
    let tok = format!("{}/common/oauth2/v2.0/token", e.o());
    let dc: Value =
        e.c.post(format!("{}/common/oauth2/v2.0/devicecode", e.o()))
            .form(&[
                ("client_id", "app"),
                ("scope", "Mail.ReadWrite offline_access"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let device_code = dc["device_code"].as_str().unwrap();
    let poll = || {
        e.c.post(&tok)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", "app"),
                ("device_code", device_code),
            ])
            .send()
    };
    let r = poll().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "authorization_pending");
    assert!(v["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS70016"));
    e.admin_post("/devicecode/approve", json!({"user_code": dc["user_code"]}))
        .await;
    let v: Value = poll().await.unwrap().json().await.unwrap();
    let access = v["access_token"].as_str().unwrap().to_string();
    let rt = v["refresh_token"].as_str().unwrap().to_string();
    let me: Value =
        e.c.get(e.g("/me"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(me["userPrincipalName"], "me@sandbox.test");
    let refresh = |t: String| {
        e.c.post(&tok)
            .form(&[
                ("grant_type", "refresh_token".to_string()),
                ("client_id", "app".into()),
                ("refresh_token", t),
            ])
            .send()
    };
    let v: Value = refresh(rt.clone()).await.unwrap().json().await.unwrap();
    assert_ne!(v["refresh_token"].as_str().unwrap(), rt);
    let v: Value = refresh(rt).await.unwrap().json().await.unwrap();
    assert_eq!(v["error"], "invalid_grant");
    // Minted tokens expire per token_lifetime_secs.
    e.admin_post("/faults", json!({"token_lifetime_secs": 0}))
        .await;
    let v: Value =
        e.c.post(&tok)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("client_secret", outbox::sandbox::DEFAULT_CLIENT_SECRET),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let r =
        e.c.get(e.g("/users/x@contoso.test"))
            .bearer_auth(v["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tls_serves_with_the_written_ca() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(SandboxOptions {
        port: 0,
        data_dir: Some(dir.path().into()),
        tls: true,
        token: Some(TOKEN.into()),
    })
    .await
    .unwrap();
    assert!(sb.origin().starts_with("https://127.0.0.1:"));
    let pem = std::fs::read(sb.ca_pem_path().unwrap()).unwrap();
    let c = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let me: Value = c
        .get(format!("{}/me", sb.graph_base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["mail"], "me@sandbox.test");
    sb.shutdown().await;
}

#[tokio::test]
async fn mailbox_budgets_throttle_with_retry_after() {
    let e = InProcessSandbox::new().await;
    let item = e.message().await;
    e.admin_post(
        "/faults",
        json!({"mailbox_requests": {"amount": 2, "window_secs": 30}}),
    )
    .await;
    let url = e.g(&format!("/me/messages/{item}"));
    for _ in 0..2 {
        assert_eq!(
            e.c.get(&url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let r = e.c.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31).contains(&wait), "{wait}");
    // Another mailbox has its own budget.
    let other = e
        .admin_post("/items", json!({"kind": "event", "user": "x@contoso.test"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r =
        e.c.get(e.g(&format!("/users/x@contoso.test/events/{other}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Upload bytes (POST bodies count too): 2 MiB fits the 3 MiB window, the last 1 MiB waits.
    e.admin_post(
        "/faults",
        json!({"reset": true, "mailbox_upload_bytes": {"amount": 3 * MIB, "window_secs": 30}}),
    )
    .await;
    let size = 3 * MIB;
    let bytes = data(size);
    let url = e.upload_url(&item, size).await;
    assert_eq!(
        e.put(&url, &bytes[..2 * MIB], 0, size)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = e.put(&url, &bytes[2 * MIB..], 2 * MIB, size).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn device_code_slow_down_decline_and_client_assertion() {
    let e = InProcessSandbox::new().await;
    e.admin_post("/faults", json!({"device_code_interval_secs": 30}))
        .await;
    let tok = format!("{}/organizations/oauth2/v2.0/token", e.o());
    let dc: Value =
        e.c.post(format!("{}/organizations/oauth2/v2.0/devicecode", e.o()))
            .form(&[("client_id", "app"), ("scope", "Mail.ReadWrite")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(dc["interval"], json!(30));
    let device_code = dc["device_code"].as_str().unwrap();
    let poll = || async {
        let v: Value =
            e.c.post(&tok)
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("client_id", "app"),
                    ("device_code", device_code),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        v["error"].as_str().unwrap_or("").to_string()
    };
    assert_eq!(poll().await, "authorization_pending");
    assert_eq!(poll().await, "slow_down");
    e.admin_post(
        "/devicecode/approve",
        json!({"user_code": dc["user_code"], "deny": true}),
    )
    .await;
    assert_eq!(poll().await, "authorization_declined");
    // A JWT client assertion with the right header and claims is accepted; a wrong aud is not.
    let b64 = |v: Value| {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            v.to_string(),
        )
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jwt = |aud: &str| {
        format!(
            "{}.{}.c2ln",
            b64(json!({"alg": "PS256", "typ": "JWT", "x5t#S256": "abc"})),
            b64(
                json!({"aud": aud, "iss": "app", "sub": "app", "jti": "1", "nbf": now, "iat": now, "exp": now + 300})
            )
        )
    };
    let cc = |assertion: String| {
        e.c.post(&tok)
            .form(&[
                ("grant_type", "client_credentials".to_string()),
                ("client_id", "app".into()),
                ("scope", "https://graph.microsoft.com/.default".into()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ),
                ("client_assertion", assertion),
            ])
            .send()
    };
    let r = cc(jwt(&tok)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r =
        e.c.get(e.g("/me"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "/me needs a delegated token"
    );
    let r = cc(jwt("https://elsewhere/token")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
}

#[tokio::test]
async fn cli_prints_listening_first_and_serves() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(["-q", "sandbox", "--token", TOKEN, "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let origin = line.trim().strip_prefix("listening ").unwrap().to_string();
    assert!(origin.starts_with("http://127.0.0.1:"), "{line}");
    let r = Client::new()
        .get(format!("{origin}/v1.0/me"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    child.kill().unwrap();
    let _ = child.wait();
}

/// Graph's attachment reads carry the bytes: `GET …/attachments/{id}` and the list answer
/// `contentBytes` (base64) with the metadata, unless `$select` leaves it out; `$select` keeps
/// only the named properties (plus `id` and `@odata.*`). A file of an upload session reads back
/// as exactly its bytes too (it is streamed from disk, a piece at a time).
#[tokio::test]
async fn attachment_reads_carry_content_bytes_unless_select_leaves_them_out() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let e = InProcessSandbox::new().await;
    let item = e.message().await;
    let small = data(1000);
    let r = e
        .c
        .post(e.g(&format!("/me/messages/{item}/attachments")))
        .bearer_auth(TOKEN)
        .json(&json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "small.bin", "contentBytes": b64.encode(&small)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let small_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // 3 MiB + 1: not a multiple of 3, so the last base64 piece carries padding.
    let big: Vec<u8> = (0..3 * MIB + 1).map(|i| (i * 7 % 253) as u8).collect();
    let url = e.upload_url(&item, big.len()).await;
    let r = e.put(&url, &big, 0, big.len()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let get = |p: String| {
        let c = e.c.clone();
        let u = e.g(&p);
        async move {
            let r = c.get(u).bearer_auth(TOKEN).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{p}");
            assert!(r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"));
            r.json::<Value>().await.unwrap()
        }
    };
    let list = get(format!("/me/messages/{item}/attachments")).await;
    let atts = list["value"].as_array().unwrap();
    assert_eq!(atts.len(), 2, "{list:#}");
    for (a, want) in atts.iter().zip([&small, &big]) {
        assert_eq!(a["@odata.type"], json!("#microsoft.graph.fileAttachment"));
        let got = b64.decode(a["contentBytes"].as_str().unwrap()).unwrap();
        assert!(got == **want, "the list's contentBytes of {}", a["name"]);
        // One attachment by id: the same bytes with the metadata.
        let one = get(format!(
            "/me/messages/{item}/attachments/{}",
            a["id"].as_str().unwrap()
        ))
        .await;
        assert_eq!(one["@odata.type"], json!("#microsoft.graph.fileAttachment"));
        assert_eq!(one["name"], a["name"]);
        assert!(one["size"].is_u64() && one["contentType"].is_string());
        let got = b64.decode(one["contentBytes"].as_str().unwrap()).unwrap();
        assert!(got == **want, "contentBytes of {}", a["name"]);
    }
    // $select leaves the bytes out, on the list and on the single GET, and keeps only what
    // it names (plus id and @odata.*).
    let list = get(format!(
        "/me/messages/{item}/attachments?$select=id,name,size,contentType"
    ))
    .await;
    for a in list["value"].as_array().unwrap() {
        let mut keys: Vec<&str> = a
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| !k.starts_with('@'))
            .collect();
        keys.sort();
        assert_eq!(keys, ["contentType", "id", "name", "size"], "{a}");
    }
    let one = get(format!(
        "/me/messages/{item}/attachments/{small_id}?$select=name"
    ))
    .await;
    assert_eq!(one["name"], json!("small.bin"));
    assert_eq!(one["@odata.type"], json!("#microsoft.graph.fileAttachment"));
    assert!(
        one.get("contentBytes").is_none() && one.get("size").is_none(),
        "{one}"
    );
    // Named, the bytes come (also in the cast form).
    let one = get(format!(
        "/me/messages/{item}/attachments/{small_id}?$select=name,microsoft.graph.fileAttachment/contentBytes"
    ))
    .await;
    assert_eq!(
        b64.decode(one["contentBytes"].as_str().unwrap()).unwrap(),
        small
    );
    assert!(one.get("size").is_none(), "{one}");
}
