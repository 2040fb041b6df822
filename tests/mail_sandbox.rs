//! Messages against the sandbox over real loopback HTTP: drafts by both routes and for other
//! mailboxes, the marker (extended property) stored, expanded and found by the documented
//! `$filter`, send with the asynchronous move to Sent Items, Graph's refusals, the sending limit,
//! lost replies, restarts, the admin API; and the client's mail steps (`graph::mail`) driving it.

use outbox::auth::Credentials;
use outbox::config::{BodyType, Settings};
use outbox::graph::mail::{DraftSpec, Folder, MailError, MARKER_PROPERTY};
use outbox::graph::retry::RetryPolicy;
use outbox::graph::GraphClient;
use outbox::sandbox::{Sandbox, SandboxOptions};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

const TOKEN: &str = "mail-token";
const PROP: &str = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name outboxMessageId";

struct Env {
    sb: Sandbox,
    c: Client,
}

impl Env {
    async fn new() -> Env {
        Self::on(None, 0).await
    }
    async fn on(data_dir: Option<std::path::PathBuf>, port: u16) -> Env {
        let sb = Sandbox::start(SandboxOptions {
            port,
            data_dir,
            tls: false,
            token: Some(TOKEN.into()),
        })
        .await
        .unwrap();
        Env {
            sb,
            c: Client::new(),
        }
    }
    fn g(&self, p: &str) -> String {
        format!("{}{}", self.sb.graph_base(), p)
    }
    async fn faults(&self, v: Value) {
        let r = self
            .c
            .post(format!("{}/_admin/faults", self.sb.origin()))
            .json(&v)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "faults: {}", r.status());
    }
    async fn admin(&self, p: &str) -> Value {
        self.c
            .get(format!("{}/_admin{p}", self.sb.origin()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
    async fn post(&self, p: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.c.post(self.g(p)).bearer_auth(TOKEN);
        r = match body {
            Some(b) => r.json(&b),
            None => r.header("content-length", "0"),
        };
        let r = r.send().await.unwrap();
        let s = r.status();
        let text = r.text().await.unwrap();
        (s, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
    async fn get(&self, p: &str) -> (StatusCode, Value) {
        let r = self
            .c
            .get(self.g(p))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    async fn draft(&self, mb: &str, marker: &str, to: &[&str]) -> Value {
        let (s, v) = self
            .post(
                &format!("/{mb}/messages"),
                Some(json!({
                    "subject": format!("about {marker}"),
                    "body": {"contentType": "html", "content": "<p>hi</p>"},
                    "toRecipients": to.iter().map(|a| json!({"emailAddress": {"address": a}})).collect::<Vec<_>>(),
                    "singleValueExtendedProperties": [{"id": PROP, "value": marker}],
                })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }
    fn client(&self) -> GraphClient {
        let mut s = Settings::defaults("t.toml".into());
        s.graph.base_url = url::Url::parse(&self.sb.graph_base()).unwrap();
        GraphClient::new(&s, Credentials::fixed(TOKEN))
            .unwrap()
            .with_retry_policy(RetryPolicy {
                max_attempts: 2,
                base: Duration::from_millis(10),
                cap: Duration::from_millis(50),
                max_retry_after: Duration::from_secs(2),
            })
    }
}

fn filter(marker: &str) -> String {
    let f = format!(
        "singleValueExtendedProperties/Any(ep: ep/id eq '{PROP}' and ep/value eq '{marker}')"
    );
    url::form_urlencoded::byte_serialize(f.as_bytes()).collect()
}

fn expand() -> String {
    let e = format!("singleValueExtendedProperties($filter=id eq '{PROP}')");
    url::form_urlencoded::byte_serialize(e.as_bytes()).collect()
}

#[tokio::test]
async fn drafts_by_both_routes_carry_their_marker() {
    let env = Env::new().await;
    let a = env.draft("me", "m-1", &["x@contoso.com"]).await;
    assert_eq!(a["isDraft"], json!(true));
    assert!(a["internetMessageId"].as_str().unwrap().starts_with('<'));
    assert_eq!(a["sentDateTime"], Value::Null);
    assert!(
        a.get("singleValueExtendedProperties").is_none(),
        "only with $expand"
    );
    // The other route, another mailbox.
    let (s, b) = env
        .post(
            "/users/Shared@Contoso.com/mailFolders/Drafts/messages",
            Some(json!({"subject": "s", "toRecipients": [], "singleValueExtendedProperties": [{"id": PROP, "value": "m-2"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = b["id"].as_str().unwrap();
    // Expanded, in the caller's spelling of the id; $select honoured.
    let (s, v) = env
        .get(&format!(
            "/users/shared@contoso.com/messages/{id}?$select=subject,isDraft&$expand={}",
            expand()
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["singleValueExtendedProperties"],
        json!([{"id": PROP, "value": "m-2"}])
    );
    assert_eq!(v["isDraft"], json!(true));
    assert!(v.get("body").is_none(), "$select leaves body out: {v}");
    // Not visible from another mailbox.
    let (s, _) = env.get(&format!("/me/messages/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Found by the filter (value case-insensitive), in the folder and in the whole mailbox.
    for path in ["/me/messages", "/me/mailFolders/drafts/messages"] {
        let (s, v) = env.get(&format!("{path}?$filter={}", filter("M-1"))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let ids: Vec<&str> = v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [a["id"].as_str().unwrap()], "{path}");
    }
    let (_, v) = env
        .get(&format!(
            "/me/mailFolders/sentitems/messages?$filter={}",
            filter("m-1")
        ))
        .await;
    assert_eq!(v["value"], json!([]));
    // Any other filter on extended properties is a Graph-shaped 400.
    let bad: String = url::form_urlencoded::byte_serialize(
        b"singleValueExtendedProperties/Any(ep: ep/value eq 'm-1')",
    )
    .collect();
    let (s, v) = env.get(&format!("/me/messages?$filter={bad}")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], json!("BadRequest"));
    // A bad property id and an unknown property are refused at creation.
    let (s, v) = env
        .post(
            "/me/messages",
            Some(json!({"singleValueExtendedProperties": [{"id": "String nope", "value": "x"}]})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ErrorInvalidProperty"))
    );
    let (s, v) = env
        .post("/me/messages", Some(json!({"subjekt": "x"})))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("RequestBodyRead"))
    );
}

#[tokio::test]
async fn a_send_moves_the_draft_to_sent_items_under_a_new_id_after_the_delay() {
    let env = Env::new().await;
    env.faults(json!({"send_move_delay_ms": 700})).await;
    let d = env.draft("me", "m-7", &["a@contoso.com"]).await;
    let id = d["id"].as_str().unwrap().to_string();
    let imid = d["internetMessageId"].as_str().unwrap().to_string();
    // Attachments work on drafts as on any message.
    let (s, _) = env
        .post(
            &format!("/me/messages/{id}/attachments"),
            Some(json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.txt", "contentBytes": "aGVsbG8="})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let r = env
        .c
        .post(env.g(&format!("/me/messages/{id}/send")))
        .bearer_auth(TOKEN)
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.bytes().await.unwrap().len(), 0, "202 has an empty body");
    // In the window: still a draft, same id.
    let (s, v) = env.get(&format!("/me/messages/{id}")).await;
    assert_eq!((s, v["isDraft"].clone()), (StatusCode::OK, json!(true)));
    assert_eq!(env.admin("/sent").await, json!([]));
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (s, v) = env.get(&format!("/me/messages/{id}")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ErrorItemNotFound"))
    );
    let (_, v) = env
        .get(&format!(
            "/me/mailFolders/sentitems/messages?$filter={}&$expand={}",
            filter("m-7"),
            expand()
        ))
        .await;
    let sent = &v["value"][0];
    assert_ne!(sent["id"].as_str().unwrap(), id, "a new id");
    assert_eq!(sent["isDraft"], json!(false));
    assert_eq!(sent["internetMessageId"].as_str().unwrap(), imid);
    assert!(sent["sentDateTime"].is_string());
    assert_eq!(
        sent["singleValueExtendedProperties"][0]["value"],
        json!("m-7")
    );
    // Found by internetMessageId too.
    let f: String =
        url::form_urlencoded::byte_serialize(format!("internetMessageId eq '{imid}'").as_bytes())
            .collect();
    let (_, v) = env.get(&format!("/me/messages?$filter={f}")).await;
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    // The admin API lists it with its attachments' hashes.
    let list = env.admin("/sent").await;
    assert_eq!(list[0]["to"], json!(["a@contoso.com"]));
    assert_eq!(list[0]["internetMessageId"].as_str().unwrap(), imid);
    assert_eq!(list[0]["attachments"][0]["name"], json!("a.txt"));
    assert_eq!(
        list[0]["attachments"][0]["sha256"].as_str().unwrap(),
        hex::encode(Sha256::digest(b"hello"))
    );
    // Sending the old id again: it is gone.
    let (s, v) = env.post(&format!("/me/messages/{id}/send"), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ErrorItemNotFound"))
    );
    // Sending the sent copy: not a draft.
    let (s, _) = env
        .post(
            &format!("/me/messages/{}/send", list[0]["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let stats = env.admin("/stats").await;
    assert_eq!(
        (
            stats["duplicate_sends"].clone(),
            stats["sends_accepted"].clone()
        ),
        (json!(0), json!(1))
    );
}

#[tokio::test]
async fn graph_refuses_what_it_refuses() {
    let env = Env::new().await;
    env.faults(json!({"send_move_delay_ms": 0})).await;
    // No recipients.
    let d = env.draft("me", "m-n", &[]).await;
    let (s, v) = env
        .post(
            &format!("/me/messages/{}/send", d["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], json!("ErrorInvalidRecipients"));
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no recipients"));
    // A second send inside the window is a second email (strict), counted.
    env.faults(json!({"send_move_delay_ms": 60_000})).await;
    let d = env.draft("me", "m-d", &["a@contoso.com"]).await;
    let id = d["id"].as_str().unwrap();
    for _ in 0..2 {
        let (s, _) = env.post(&format!("/me/messages/{id}/send"), None).await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    assert_eq!(env.admin("/sends/pending").await[0]["copies"], json!(2));
    let r = env
        .c
        .post(format!("{}/_admin/sends/deliver", env.sb.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stats = env.admin("/stats").await;
    assert_eq!(
        (
            stats["sent_messages"].clone(),
            stats["duplicate_sends"].clone()
        ),
        (json!(2), json!(1))
    );
    // ... or refused, when asked.
    env.faults(json!({"send_in_window": "refuse"})).await;
    let d = env.draft("me", "m-r", &["a@contoso.com"]).await;
    let id = d["id"].as_str().unwrap();
    assert_eq!(
        env.post(&format!("/me/messages/{id}/send"), None).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        env.post(&format!("/me/messages/{id}/send"), None).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_sending_limit_answers_as_configured_per_mailbox() {
    let env = Env::new().await;
    env.faults(json!({"send_move_delay_ms": 0, "mailbox_sends": {"amount": 2, "window_secs": 60}}))
        .await;
    for i in 0..2 {
        let d = env.draft("me", &format!("l{i}"), &["a@contoso.com"]).await;
        assert_eq!(
            env.post(
                &format!("/me/messages/{}/send", d["id"].as_str().unwrap()),
                None
            )
            .await
            .0,
            StatusCode::ACCEPTED
        );
    }
    let d = env.draft("me", "l2", &["a@contoso.com"]).await;
    let r = env
        .c
        .post(env.g(&format!("/me/messages/{}/send", d["id"].as_str().unwrap())))
        .bearer_auth(TOKEN)
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let ra: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&ra), "{ra}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], json!("ErrorExceededMessageLimit"));
    // Another mailbox has its own window; "refuse" answers 403 without Retry-After.
    let o = env
        .draft("users/other@contoso.com", "o", &["a@contoso.com"])
        .await;
    assert_eq!(
        env.post(
            &format!(
                "/users/other@contoso.com/messages/{}/send",
                o["id"].as_str().unwrap()
            ),
            None
        )
        .await
        .0,
        StatusCode::ACCEPTED
    );
    env.faults(json!({"send_limit_answer": "refuse"})).await;
    assert_eq!(
        env.post(
            &format!("/me/messages/{}/send", d["id"].as_str().unwrap()),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(env.admin("/stats").await["sends_over_limit"], json!(2));
}

#[tokio::test]
async fn a_lost_reply_still_sent_the_message() {
    let env = Env::new().await;
    env.faults(json!({"send_move_delay_ms": 0})).await;
    let d = env.draft("me", "lost", &["a@contoso.com"]).await;
    env.faults(json!({"fail_next": [{"route": "send", "action": "lost"}, {"route": "draft", "action": "lost"}]})).await;
    let r = env
        .c
        .post(env.g(&format!("/me/messages/{}/send", d["id"].as_str().unwrap())))
        .bearer_auth(TOKEN)
        .header("content-length", "0")
        .send()
        .await;
    assert!(r.is_err(), "the reply was lost: {r:?}");
    assert_eq!(
        env.admin("/sent").await.as_array().unwrap().len(),
        1,
        "but the send took effect"
    );
    // A lost reply to a create: the draft exists all the same.
    let r = env
        .c
        .post(env.g("/me/messages"))
        .bearer_auth(TOKEN)
        .json(&json!({"subject": "x", "singleValueExtendedProperties": [{"id": PROP, "value": "lost-draft"}]}))
        .send()
        .await;
    assert!(r.is_err());
    let (_, v) = env
        .get(&format!(
            "/me/mailFolders/drafts/messages?$filter={}",
            filter("lost-draft")
        ))
        .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    let stats = env.admin("/stats").await;
    assert_eq!(stats["send_replies_lost"], json!(1));
    // The probability knob: every send's reply lost.
    env.faults(json!({"send_lost_rate": 1.0})).await;
    let d = env.draft("me", "lost2", &["a@contoso.com"]).await;
    let r = env
        .c
        .post(env.g(&format!("/me/messages/{}/send", d["id"].as_str().unwrap())))
        .bearer_auth(TOKEN)
        .header("content-length", "0")
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(env.admin("/sent").await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn listings_page_with_next_link() {
    let env = Env::new().await;
    for _ in 0..3 {
        env.draft("me", "same", &["a@contoso.com"]).await;
    }
    let (_, v) = env
        .get(&format!("/me/messages?$top=2&$filter={}", filter("same")))
        .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 2);
    let next = v["@odata.nextLink"].as_str().unwrap().to_string();
    let v: Value = env
        .c
        .get(&next)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    assert!(v.get("@odata.nextLink").is_none());
}

#[tokio::test]
async fn drafts_pending_sends_and_sent_copies_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (port, id) = {
        let env = Env::on(Some(dir.path().to_path_buf()), 0).await;
        env.faults(json!({"send_move_delay_ms": 800})).await;
        let keep = env.draft("me", "kept", &["a@contoso.com"]).await;
        let d = env.draft("me", "pending", &["b@contoso.com"]).await;
        let (s, _) = env
            .post(
                &format!("/me/messages/{}/send", d["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let port: u16 = url::Url::parse(&env.sb.origin()).unwrap().port().unwrap();
        env.sb.shutdown().await;
        (port, keep["id"].as_str().unwrap().to_string())
    };
    let env = Env::on(Some(dir.path().to_path_buf()), port).await;
    let (s, v) = env
        .get(&format!("/me/messages/{id}?$expand={}", expand()))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["singleValueExtendedProperties"][0]["value"],
        json!("kept")
    );
    assert_eq!(
        v["toRecipients"][0]["emailAddress"]["address"],
        json!("a@contoso.com")
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    let sent = env.admin("/sent").await;
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(sent[0]["to"], json!(["b@contoso.com"]));
}

#[tokio::test]
async fn the_client_steps_drive_a_message_through_its_life() {
    let env = Env::new().await;
    env.faults(json!({"send_move_delay_ms": 300})).await;
    let g = env.client();
    let spec = DraftSpec {
        to: vec!["ap@contoso.com".into()],
        cc: vec![],
        bcc: vec!["audit@contoso.com".into()],
        subject: "Invoice 42".into(),
        body: "Attached.".into(),
        body_type: BodyType::Text,
        marker: "ledger-42".into(),
        file_keys: Vec::new(),
        never_sent: false,
    };
    assert_eq!(
        g.find_by_marker("me", Folder::Any, "ledger-42")
            .await
            .unwrap(),
        None
    );
    let id = g.create_draft("me", &spec).await.unwrap();
    let found = g
        .find_by_marker("me", Folder::Drafts, "ledger-42")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.id.as_str(), found.is_draft, found.others),
        (id.0.as_str(), true, 0)
    );
    // Attach with the agent's one-shot driver: one POST and one upload session.
    let settings = Settings::defaults("t.toml".into());
    let attacher = std::sync::Arc::new(env.client());
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"small file").unwrap();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 3 * 1024 * 1024 + 5]).unwrap();
    for p in [&small, &big] {
        let target = outbox::core::model::Target {
            user: "me".into(),
            kind: outbox::config::ItemKind::Message,
            item_id: id.0.clone(),
        };
        outbox::agent::oneshot::attach_file(
            &settings,
            attacher.clone(),
            target,
            p,
            None,
            outbox::core::model::IfExists::Attach,
            None,
            None,
        )
        .await
        .unwrap();
    }
    g.send_draft("me", &id).await.unwrap();
    // In the window the draft still answers; then only the sent copy.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let sent = g
        .find_by_marker("me", Folder::SentItems, "ledger-42")
        .await
        .unwrap()
        .unwrap();
    assert!(!sent.is_draft && sent.sent.is_some() && sent.id != id.0);
    assert_eq!(sent.internet_message_id, found.internet_message_id);
    let any = g
        .find_by_marker("me", Folder::Any, "ledger-42")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((any.id, any.others), (sent.id.clone(), 0));
    let list = env.admin("/sent").await;
    let names: Vec<&str> = list[0]["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["small.txt", "big.bin"]);
    assert_eq!(list[0]["bcc"], json!(["audit@contoso.com"]));
    assert_eq!(
        list[0]["extendedProperties"][MARKER_PROPERTY],
        json!("ledger-42")
    );
    // The old id: Graph's answer, typed.
    match g.send_draft("me", &id).await {
        Err(MailError::Permanent(e)) => assert_eq!(e.code, "ErrorItemNotFound"),
        other => panic!("{other:?}"),
    }
    // No recipients: permanent, with Graph's code.
    let none = DraftSpec {
        to: vec![],
        bcc: vec![],
        marker: "n".into(),
        file_keys: Vec::new(),
        ..spec.clone()
    };
    let nid = g.create_draft("me", &none).await.unwrap();
    match g.send_draft("me", &nid).await {
        Err(MailError::Permanent(e)) => assert_eq!(e.code, "ErrorInvalidRecipients"),
        other => panic!("{other:?}"),
    }
    // Throttled by the sending limit: typed, with Retry-After.
    env.faults(json!({"mailbox_sends": {"amount": 1, "window_secs": 60}}))
        .await;
    let t = g
        .create_draft(
            "me",
            &DraftSpec {
                marker: "t1".into(),
                file_keys: Vec::new(),
                ..spec.clone()
            },
        )
        .await
        .unwrap();
    g.send_draft("me", &t).await.unwrap();
    let t2 = g
        .create_draft(
            "me",
            &DraftSpec {
                marker: "t2".into(),
                file_keys: Vec::new(),
                ..spec.clone()
            },
        )
        .await
        .unwrap();
    match g.send_draft("me", &t2).await {
        Err(e @ MailError::Throttled(_)) => assert!(e.retry_after().is_some()),
        other => panic!("{other:?}"),
    }
    // A lost reply: ambiguous, and the sent copy is there to find.
    env.faults(json!({"mailbox_sends": null, "fail_next": [{"route": "send", "action": "lost"}]}))
        .await;
    match g.send_draft("me", &t2).await {
        Err(MailError::Ambiguous(_)) => {}
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let s = g
        .find_by_marker("me", Folder::SentItems, "t2")
        .await
        .unwrap();
    assert!(s.is_some_and(|m| !m.is_draft));
    // A 5xx on create: ambiguous (never retried blindly).
    env.faults(json!({"fail_next": [{"route": "draft", "status": 503, "retry_after": 1}]}))
        .await;
    assert!(matches!(
        g.create_draft("me", &spec).await,
        Err(MailError::Ambiguous(_))
    ));
    // A listing cut short is an error, not "not found".
    env.faults(json!({"fail_next": [{"route": "get", "action": "drop"}, {"route": "get", "action": "drop"}]})).await;
    assert!(matches!(
        g.find_by_marker("me", Folder::Any, "ledger-42").await,
        Err(MailError::Transient(_))
    ));
    assert_eq!(env.admin("/stats").await["duplicate_sends"], json!(0));
}

fn imid_filter(imid: &str) -> String {
    url::form_urlencoded::byte_serialize(format!("internetMessageId eq '{imid}'").as_bytes())
        .collect()
}

impl Env {
    async fn send(&self, id: &str) -> reqwest::Response {
        self.c
            .post(self.g(&format!("/me/messages/{id}/send")))
            .bearer_auth(TOKEN)
            .header("content-length", "0")
            .send()
            .await
            .unwrap()
    }
    async fn ids(&self, p: &str) -> Vec<String> {
        let (s, v) = self.get(p).await;
        assert_eq!(s, StatusCode::OK, "{p}: {v}");
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Exchange gives the Sent Items copy (a new item) new attachment ids over the same bytes; the
/// draft's attachment ids stop resolving with the draft. Two copies of one draft (a second send
/// in the window) have ids of their own each.
#[tokio::test]
async fn the_sent_copy_has_new_attachment_ids_over_the_same_bytes() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let env = Env::new().await;
    env.faults(json!({"send_move_delay_ms": 60_000})).await;
    let d = env.draft("me", "att-ids", &["a@contoso.com"]).await;
    let id = d["id"].as_str().unwrap().to_string();
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 256) as u8).collect();
    let (s, a) = env
        .post(
            &format!("/me/messages/{id}/attachments"),
            Some(json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.bin", "contentBytes": b64.encode(&bytes)})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let old = a["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(env.send(&id).await.status(), StatusCode::ACCEPTED);
    }
    let r = env
        .c
        .post(format!("{}/_admin/sends/deliver", env.sb.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let copies = env
        .ids(&format!(
            "/me/mailFolders/sentitems/messages?$filter={}",
            imid_filter(d["internetMessageId"].as_str().unwrap())
        ))
        .await;
    assert_eq!(copies.len(), 2);
    let mut seen = vec![old.clone()];
    for c in &copies {
        let ids = env
            .ids(&format!("/me/messages/{c}/attachments?$select=id"))
            .await;
        assert_eq!(ids.len(), 1);
        assert!(!seen.contains(&ids[0]), "a new attachment id on each copy");
        seen.push(ids[0].clone());
    }
    for c in &copies {
        let (s, v) = env.get(&format!("/me/messages/{c}/attachments")).await;
        assert_eq!(s, StatusCode::OK);
        let list = v["value"].as_array().unwrap();
        let new = list[0]["id"].as_str().unwrap().to_string();
        assert_eq!(
            b64.decode(list[0]["contentBytes"].as_str().unwrap())
                .unwrap(),
            bytes
        );
        let r = env
            .c
            .get(env.g(&format!("/me/messages/{c}/attachments/{new}/$value")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
        // The draft's attachment id does not resolve on the copy.
        let (s, _) = env
            .get(&format!("/me/messages/{c}/attachments/{old}"))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    // Nor on the draft, which is gone.
    let (s, v) = env
        .get(&format!("/me/messages/{id}/attachments/{old}"))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ErrorItemNotFound"))
    );
    // The admin API names the copies' attachment ids.
    let sent = env.admin("/sent").await;
    let admin_ids: Vec<&str> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["attachments"][0]["id"].as_str().unwrap())
        .collect();
    assert!(admin_ids.iter().all(|i| seen[1..].contains(&i.to_string())));
    // The copies share their bytes on disk; corrupting one copy's attachment leaves the other's.
    let (c0, a0) = (sent[0]["id"].as_str().unwrap(), admin_ids[0]);
    let r = env
        .c
        .post(format!(
            "{}/_admin/items/{c0}/attachments/{a0}/corrupt",
            env.sb.origin()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (c1, a1) = (sent[1]["id"].as_str().unwrap(), admin_ids[1]);
    let r = env
        .c
        .get(env.g(&format!("/me/messages/{c1}/attachments/{a1}/$value")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
}

/// `effect_then_status`: the send is carried out (the message reaches Sent Items as usual) but
/// answered as a refusal: 429 `ApplicationThrottled` with `Retry-After`, 503 with it, or 403
/// `ErrorExceededMessageLimit` without it. None of them means "not sent".
#[tokio::test]
async fn a_send_refused_after_it_took_effect_still_went() {
    let env = Env::new().await;
    env.faults(json!({"send_move_delay_ms": 0})).await;
    let cases = [
        (
            json!({"route": "send", "action": "effect_then_status", "status": 429, "retry_after": 7}),
            StatusCode::TOO_MANY_REQUESTS,
            "ApplicationThrottled",
            Some("7"),
        ),
        (
            json!({"route": "send", "action": "effect_then_status", "status": 503, "retry_after": 2}),
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            Some("2"),
        ),
        (
            json!({"route": "send", "action": "effect_then_status", "status": 403, "code": "ErrorExceededMessageLimit"}),
            StatusCode::FORBIDDEN,
            "ErrorExceededMessageLimit",
            None,
        ),
    ];
    for (n, (fault, status, code, retry_after)) in cases.into_iter().enumerate() {
        let marker = format!("after-{n}");
        let d = env.draft("me", &marker, &["a@contoso.com"]).await;
        env.faults(json!({"fail_next": [fault]})).await;
        let r = env.send(d["id"].as_str().unwrap()).await;
        assert_eq!(r.status(), status, "{marker}");
        assert_eq!(
            r.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string())
                .as_deref(),
            retry_after,
            "{marker}"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], json!(code), "{marker}");
        // ... and yet it is in Sent Items, found by its marker.
        let sent = env
            .ids(&format!(
                "/me/mailFolders/sentitems/messages?$filter={}",
                filter(&marker)
            ))
            .await;
        assert_eq!(sent.len(), 1, "{marker} was sent");
    }
    let stats = env.admin("/stats").await;
    assert_eq!(
        (
            stats["sends_accepted"].clone(),
            stats["sent_messages"].clone(),
            stats["refused_after_effect"].clone(),
            stats["duplicate_sends"].clone()
        ),
        (json!(3), json!(3), json!(3), json!(0))
    );
}

/// `filter_lag_ms`: a new draft, and a sent copy just moved, are not in `$filter` searches (by
/// marker or by internetMessageId) until the lag has passed; reads by id find them at once.
#[tokio::test]
async fn filter_lag_hides_new_messages_from_searches_not_from_reads() {
    let env = Env::new().await;
    env.faults(json!({"send_move_delay_ms": 0, "filter_lag_ms": 700}))
        .await;
    let d = env.draft("me", "lag", &["a@contoso.com"]).await;
    let id = d["id"].as_str().unwrap().to_string();
    let imid = d["internetMessageId"].as_str().unwrap().to_string();
    let by_marker = format!("/me/mailFolders/drafts/messages?$filter={}", filter("lag"));
    assert!(env.ids(&by_marker).await.is_empty(), "not indexed yet");
    let (s, _) = env.get(&format!("/me/messages/{id}")).await;
    assert_eq!(s, StatusCode::OK, "a read by id finds it at once");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(env.ids(&by_marker).await, std::slice::from_ref(&id));
    // The sent copy: moved now, searched for too early by both keys.
    assert_eq!(env.send(&id).await.status(), StatusCode::ACCEPTED);
    let sent_marker = format!(
        "/me/mailFolders/sentitems/messages?$filter={}",
        filter("lag")
    );
    let sent_imid = format!(
        "/me/mailFolders/sentitems/messages?$filter={}",
        imid_filter(&imid)
    );
    assert!(env.ids(&sent_marker).await.is_empty());
    assert!(env.ids(&sent_imid).await.is_empty());
    let copy = env.admin("/sent").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = env.get(&format!("/me/messages/{copy}")).await;
    assert_eq!((s, v["isDraft"].clone()), (StatusCode::OK, json!(false)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(env.ids(&sent_marker).await, std::slice::from_ref(&copy));
    assert_eq!(env.ids(&sent_imid).await, [copy]);
}

/// `sent_copy_without_properties`: the Sent Items copy shows no extended property (no
/// `$expand`, no `$filter` match), so a client must find it by `internetMessageId`, which works
/// on Sent Items. The admin API still knows the marker (and counts duplicates by it).
#[tokio::test]
async fn a_sent_copy_without_its_marker_is_found_by_internet_message_id() {
    let env = Env::new().await;
    env.faults(json!({"send_move_delay_ms": 0, "sent_copy_without_properties": true}))
        .await;
    let d = env.draft("me", "bare", &["a@contoso.com"]).await;
    let imid = d["internetMessageId"].as_str().unwrap().to_string();
    assert_eq!(
        env.send(d["id"].as_str().unwrap()).await.status(),
        StatusCode::ACCEPTED
    );
    assert!(env
        .ids(&format!(
            "/me/mailFolders/sentitems/messages?$filter={}",
            filter("bare")
        ))
        .await
        .is_empty());
    let found = env
        .ids(&format!(
            "/me/mailFolders/sentitems/messages?$filter={}",
            imid_filter(&imid)
        ))
        .await;
    assert_eq!(found.len(), 1);
    let (s, v) = env
        .get(&format!("/me/messages/{}?$expand={}", found[0], expand()))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.get("singleValueExtendedProperties").is_none(), "{v}");
    assert_eq!(v["internetMessageId"], json!(imid));
    let sent = env.admin("/sent").await;
    assert_eq!(sent[0]["propertiesDropped"], json!(true));
    assert_eq!(sent[0]["extendedProperties"][PROP], json!("bare"));
    // Drafts keep theirs: the switch is about the sent copy.
    env.draft("me", "bare-2", &["a@contoso.com"]).await;
    assert_eq!(
        env.ids(&format!(
            "/me/mailFolders/drafts/messages?$filter={}",
            filter("bare-2")
        ))
        .await
        .len(),
        1
    );
}

/// Graph's "Create message" takes file attachments inline (`attachments` in the JSON body), as
/// the O365 library sends a new draft; they are on the draft and on its sent copy. An inline
/// attachment without `@odata.type` is refused as the attachment POST refuses it.
#[tokio::test]
async fn a_draft_created_with_attachments_inline_keeps_them() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let env = Env::new().await;
    env.faults(json!({"send_move_delay_ms": 0})).await;
    let bytes = b"inline attachment bytes\n".to_vec();
    let (s, d) = env
        .post(
            "/me/mailFolders/drafts/messages",
            Some(json!({
                "subject": "inline",
                "body": {"contentType": "HTML", "content": "<p>x</p>"},
                "importance": "normal",
                "flag": {"flagStatus": "notFlagged"},
                "isReadReceiptRequested": false,
                "isDeliveryReceiptRequested": false,
                "toRecipients": [{"emailAddress": {"address": "a@contoso.com", "name": "A"}}],
                "ccRecipients": [], "bccRecipients": [], "replyTo": [],
                "from": {"emailAddress": {"address": "me@sandbox.test"}},
                "attachments": [{"@odata.type": "#microsoft.graph.fileAttachment", "name": "in.txt", "contentBytes": b64.encode(&bytes)}],
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["hasAttachments"], json!(true));
    let id = d["id"].as_str().unwrap();
    let (_, v) = env.get(&format!("/me/messages/{id}/attachments")).await;
    assert_eq!(v["value"][0]["name"], json!("in.txt"));
    assert_eq!(
        b64.decode(v["value"][0]["contentBytes"].as_str().unwrap())
            .unwrap(),
        bytes
    );
    assert_eq!(env.send(id).await.status(), StatusCode::ACCEPTED);
    let sent = env.admin("/sent").await;
    assert_eq!(
        sent[0]["attachments"][0]["sha256"].as_str().unwrap(),
        hex::encode(Sha256::digest(&bytes))
    );
    let (s, v) = env
        .post(
            "/me/messages",
            Some(json!({"attachments": [{"name": "x", "contentBytes": "AA=="}]})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("UnprocessableType"))
    );
}
