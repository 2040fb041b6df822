//! The admin API under `/_admin` (no auth, JSON): items, stored attachments, faults, stats,
//! sessions, token revocation and device-code approval. Tests and `outbox demo` drive the
//! sandbox through it.

use super::faults::Faults;
use super::persist::{ItemRec, Record};
use super::state::{canonical_user, exchange_id, DeviceStatus, Item, Kind, Shared};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;
use time::OffsetDateTime;

/// The admin API has no auth: it is for this machine's user only. It listens on loopback, and a
/// request naming another host (a web page's script after a DNS rebinding: `Host: evil.example`
/// resolving to 127.0.0.1) is refused.
pub async fn loopback_host_only(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if !is_loopback_host(&h) => (
            axum::http::StatusCode::FORBIDDEN,
            "the sandbox's admin API answers only requests addressed to a loopback host\n",
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

fn is_loopback_host(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/items", post(create_item).get(list_items))
        .route(
            "/items/{id}",
            get(get_item).delete(delete_item).patch(patch_item),
        )
        .route("/items/{id}/send", post(hand_send))
        .route("/items/{id}/attachments", get(list_attachments))
        .route(
            "/items/{id}/attachments/{att}",
            axum::routing::delete(delete_attachment),
        )
        .route(
            "/items/{id}/attachments/{att}/corrupt",
            post(corrupt_attachment),
        )
        .route("/faults", get(get_faults).post(set_faults))
        .route("/stats", get(stats))
        .route("/reset-stats", post(reset_stats))
        .route("/sessions", get(list_sessions))
        .route("/sessions/expire", post(expire_sessions))
        .route("/tokens/revoke", post(revoke_tokens))
        .route("/devicecode/approve", post(approve_device))
        .route("/devicecode/interval", post(device_interval))
        .route("/tokens/issued", get(issued_tokens))
        .route("/sent", get(sent))
        .route("/drive", get(drive_items).post(drive_put))
        .route("/links", get(links))
        .route("/sends/pending", get(pending_sends))
        .route("/sends/deliver", post(deliver_sends))
}

/// Every file and folder on every drive (docs/sandbox.md, "OneDrive").
async fn drive_items(State(st): State<Shared>) -> Response {
    Json(super::drive::admin_items(&st.lock())).into_response()
}

/// Put a file on a drive as another program would.
async fn drive_put(State(st): State<Shared>, Json(body): Json<HashMap<String, Value>>) -> Response {
    match super::drive::admin_put(&st, &body) {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => err(StatusCode::BAD_REQUEST, e),
    }
}

/// Every sharing link made, with its `webUrl`.
async fn links(State(st): State<Shared>) -> Response {
    let g = st.lock();
    Json(super::drive::admin_links(&st, &g)).into_response()
}

/// Every message in Sent Items (docs/sandbox.md, "Mail").
async fn sent(State(st): State<Shared>) -> Response {
    Json(super::mail::admin_sent(&st.lock())).into_response()
}

async fn pending_sends(State(st): State<Shared>) -> Response {
    Json(super::mail::admin_pending(&st.lock())).into_response()
}

/// Move every draft whose send was accepted to Sent Items now, whatever its delay.
/// A person sends the draft from Outlook (docs/sandbox.md, "Admin API").
async fn hand_send(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let mut g = st.lock();
    match super::mail::hand_send(&mut g, &st.data_dir.join("blobs"), &id) {
        Ok((outbox, due_ms)) => Json(json!({"id": outbox, "dueMs": due_ms})).into_response(),
        Err(e) if e.starts_with("no such") => err(StatusCode::NOT_FOUND, e),
        Err(e) => err(StatusCode::CONFLICT, e),
    }
}

async fn deliver_sends(State(st): State<Shared>) -> Response {
    let mut g = st.lock();
    let n: u32 = g.pending_sends.iter().map(|p| p.copies).sum();
    super::mail::deliver_due(&mut g, &st.data_dir.join("blobs"), true);
    Json(json!({"delivered": n})).into_response()
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    kind: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default, rename = "isDraft")]
    is_draft: Option<bool>,
    #[serde(default)]
    subject: Option<String>,
}

async fn create_item(State(st): State<Shared>, Json(n): Json<NewItem>) -> Response {
    let kind = match n.kind.as_str() {
        "message" => Kind::Message,
        "event" => Kind::Event,
        other => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("kind must be \"message\" or \"event\", not {other:?}"),
            )
        }
    };
    let id = exchange_id("AAMkADItm");
    let subject = n.subject.unwrap_or_else(|| {
        if kind == Kind::Message {
            "Sandbox message"
        } else {
            "Sandbox event"
        }
        .into()
    });
    let item = Item {
        id: id.clone(),
        kind,
        user: canonical_user(n.user.as_deref().unwrap_or("me")),
        subject,
        is_draft: n.is_draft.unwrap_or(true),
        created: OffsetDateTime::now_utc(),
        attachments: Vec::new(),
        mail: Default::default(),
    };
    let mut g = st.lock();
    g.log(Record::Item(ItemRec::of(&item)));
    g.items.insert(id.clone(), item);
    drop(g);
    (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
}

fn item_summary(it: &Item) -> Value {
    json!({
        "id": it.id,
        "kind": if it.kind == Kind::Message { "message" } else { "event" },
        "user": it.user,
        "subject": it.subject,
        "isDraft": it.is_draft,
        "attachments": it.attachments.len(),
    })
}

async fn list_items(State(st): State<Shared>) -> Response {
    let g = st.lock();
    let v: Vec<Value> = g.items.values().map(item_summary).collect();
    Json(v).into_response()
}

async fn get_item(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    match st.lock().items.get(&id) {
        Some(it) => Json(item_summary(it)).into_response(),
        None => err(StatusCode::NOT_FOUND, "no such item"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchItem {
    #[serde(default, rename = "isDraft")]
    is_draft: Option<bool>,
    #[serde(default)]
    subject: Option<String>,
}

async fn patch_item(
    State(st): State<Shared>,
    Path(id): Path<String>,
    Json(p): Json<PatchItem>,
) -> Response {
    let mut g = st.lock();
    let Some(it) = g.items.get_mut(&id) else {
        return err(StatusCode::NOT_FOUND, "no such item");
    };
    if let Some(d) = p.is_draft {
        it.is_draft = d;
    }
    if let Some(s) = p.subject {
        it.subject = s;
    }
    let (rec, out) = (ItemRec::of(it), item_summary(it));
    g.log(Record::Item(rec));
    Json(out).into_response()
}

async fn delete_item(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let removed = {
        let mut g = st.lock();
        let removed = g.items.remove(&id);
        if removed.is_some() {
            g.log(Record::ItemDeleted { id: id.clone() });
        }
        removed
    };
    match removed {
        Some(it) => {
            for a in it.attachments {
                let _ = std::fs::remove_file(st.blob_path(&a.id));
            }
            StatusCode::NO_CONTENT.into_response()
        }
        None => err(StatusCode::NOT_FOUND, "no such item"),
    }
}

async fn list_attachments(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let g = st.lock();
    let Some(it) = g.items.get(&id) else {
        return err(StatusCode::NOT_FOUND, "no such item");
    };
    let v: Vec<Value> = it
        .attachments
        .iter()
        .map(|a| {
            // When the attachment was created, in Unix milliseconds (benchmarks time
            // file-close -> attachment-created with it).
            let created_ms = a.modified.unix_timestamp_nanos() as f64 / 1e6;
            json!({"id": a.id, "name": a.name, "size": a.size, "sha256": a.sha256, "contentType": a.content_type, "createdMs": created_ms})
        })
        .collect();
    Json(v).into_response()
}

async fn delete_attachment(
    State(st): State<Shared>,
    Path((id, att)): Path<(String, String)>,
) -> Response {
    let removed = {
        let mut g = st.lock();
        let Some(it) = g.items.get_mut(&id) else {
            return err(StatusCode::NOT_FOUND, "no such item");
        };
        let before = it.attachments.len();
        it.attachments.retain(|a| a.id != att);
        let removed = before != it.attachments.len();
        if removed {
            g.log(Record::AttDeleted {
                item: id.clone(),
                att: att.clone(),
            });
        }
        removed
    };
    if !removed {
        return err(StatusCode::NOT_FOUND, "no such attachment");
    }
    let _ = std::fs::remove_file(st.blob_path(&att));
    StatusCode::NO_CONTENT.into_response()
}

/// Flip the first stored byte (or add one to an empty attachment) and update the recorded
/// SHA-256, so `$value` no longer matches what the client uploaded.
async fn corrupt_attachment(
    State(st): State<Shared>,
    Path((id, att)): Path<(String, String)>,
) -> Response {
    {
        let g = st.lock();
        let found = g
            .items
            .get(&id)
            .is_some_and(|it| it.attachments.iter().any(|a| a.id == att));
        if !found {
            return err(StatusCode::NOT_FOUND, "no such attachment");
        }
    }
    let path = st.blob_path(&att);
    let result = (|| -> std::io::Result<(u64, String)> {
        use std::io::{Read, Seek, SeekFrom, Write};
        // The copies of a draft sent twice share their blobs by hard links: change a copy of
        // the bytes and rename it in, so only this attachment's bytes change.
        let tmp = path.with_extension("corrupt");
        std::fs::copy(&path, &tmp)?;
        std::fs::rename(&tmp, &path)?;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        let mut first = [0u8; 1];
        if f.read(&mut first)? == 1 {
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&[first[0] ^ 0xff])?;
        } else {
            f.write_all(b"!")?;
        }
        f.flush()?;
        drop(f);
        let mut f = std::fs::File::open(&path)?;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let n = std::io::copy(&mut f, &mut hasher)?;
        Ok((n, hex::encode(sha2::Digest::finalize(hasher))))
    })();
    match result {
        Ok((size, sha)) => {
            let mut g = st.lock();
            if let Some(a) = g
                .items
                .get_mut(&id)
                .and_then(|it| it.attachments.iter_mut().find(|a| a.id == att))
            {
                a.size = size;
                a.sha256 = sha.clone();
                g.log(Record::AttChanged {
                    item: id.clone(),
                    att: att.clone(),
                    size,
                    sha256: sha.clone(),
                });
            }
            Json(json!({"id": att, "size": size, "sha256": sha})).into_response()
        }
        Err(e) => err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("corrupt failed: {e}"),
        ),
    }
}

async fn get_faults(State(st): State<Shared>) -> Response {
    Json(st.lock().faults.clone()).into_response()
}

/// Merge the given keys into the fault document. Extra action keys: `"reset": true` (back to
/// defaults first), `"expire_sessions": true` (expire every open session now).
async fn set_faults(State(st): State<Shared>, Json(body): Json<Value>) -> Response {
    let Value::Object(mut patch) = body else {
        return err(StatusCode::BAD_REQUEST, "expected a JSON object");
    };
    let reset = patch
        .remove("reset")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let expire = patch
        .remove("expire_sessions")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let mut g = st.lock();
    let base = if reset {
        Faults::default()
    } else {
        g.faults.clone()
    };
    let mut doc = match serde_json::to_value(base) {
        Ok(Value::Object(m)) => m,
        _ => {
            return err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "fault document did not serialise",
            )
        }
    };
    for (k, v) in patch {
        doc.insert(k, v);
    }
    let new: Faults = match serde_json::from_value(Value::Object(doc)) {
        Ok(f) => f,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("bad faults document: {e}")),
    };
    g.faults = new;
    if expire {
        expire_all(&mut g);
    }
    Json(g.faults.clone()).into_response()
}

fn expire_all(g: &mut super::state::Inner) -> usize {
    let now = Instant::now();
    let expires_ms = super::persist::instant_to_ms(now);
    let mut ids = Vec::new();
    for s in g.sessions.values_mut() {
        s.expires = now;
        ids.push(s.id.clone());
    }
    for id in &ids {
        g.log(Record::SessionExpires {
            id: id.clone(),
            expires_ms,
        });
    }
    ids.len()
}

async fn expire_sessions(State(st): State<Shared>) -> Response {
    let n = expire_all(&mut st.lock());
    Json(json!({"expired": n})).into_response()
}

async fn list_sessions(State(st): State<Shared>) -> Response {
    let g = st.lock();
    let now = Instant::now();
    let v: Vec<Value> = g
        .sessions
        .values()
        .filter(|s| s.expires > now)
        .map(|s| json!({"id": s.id, "item": s.item_id, "user": s.user, "name": s.name, "size": s.size, "next": s.next}))
        .collect();
    Json(v).into_response()
}

async fn stats(State(st): State<Shared>) -> Response {
    let g = st.lock();
    let now = Instant::now();
    let open = g.sessions.values().filter(|s| s.expires > now).count();
    let mut duplicates = 0u64;
    for it in g.items.values() {
        let mut seen: HashMap<(&str, &str), u64> = HashMap::new();
        for a in &it.attachments {
            let n = seen
                .entry((a.name.as_str(), a.sha256.as_str()))
                .or_default();
            if *n > 0 {
                duplicates += 1;
            }
            *n += 1;
        }
    }
    let mut v = serde_json::to_value(&g.stats).unwrap_or_else(|_| json!({}));
    v["open_sessions"] = json!(open);
    v["duplicate_attachments"] = json!(duplicates);
    v["duplicate_sends"] = json!(super::mail::duplicate_sends(&g));
    v["sent_messages"] = json!(g
        .items
        .values()
        .filter(|i| i.mail.sent_ns.is_some())
        .count());
    v["pending_sends"] = json!(g.pending_sends.iter().map(|p| p.copies).sum::<u32>());
    v["upload_bytes_resent"] = json!(g
        .stats
        .upload_bytes_received
        .saturating_sub(g.stats.upload_bytes_committed));
    Json(v).into_response()
}

async fn reset_stats(State(st): State<Shared>) -> Response {
    st.lock().stats = Default::default();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    #[serde(default)]
    user: Option<String>,
}

/// Revoke every minted access and refresh token (of `user`, or of everyone).
async fn revoke_tokens(State(st): State<Shared>, Json(r): Json<Revoke>) -> Response {
    let user = r.user.as_deref().map(canonical_user);
    let mut g = st.lock();
    let revoked = g.revoke(user.as_deref());
    g.log(Record::Revoked { user });
    Json(json!({"revoked": revoked})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Approve {
    user_code: String,
    #[serde(default)]
    deny: bool,
    #[serde(default)]
    user: Option<String>,
}

/// The device-code sign-in a test names by its `user_code`.
fn pending_sign_in<'a>(
    g: &'a mut crate::sandbox::state::Inner,
    user_code: &str,
) -> Result<&'a mut crate::sandbox::state::DeviceCode, Response> {
    g.device_codes
        .values_mut()
        .find(|d| d.user_code.eq_ignore_ascii_case(user_code))
        .ok_or_else(|| {
            err(
                StatusCode::NOT_FOUND,
                "no pending sign-in with that user_code",
            )
        })
}

async fn approve_device(State(st): State<Shared>, Json(a): Json<Approve>) -> Response {
    match decide_sign_in(&st, &a.user_code, a.deny, a.user.as_deref()) {
        Ok(code) => Json(json!({"user_code": code, "approved": !a.deny})).into_response(),
        Err(r) => r,
    }
}

/// Approve (as `user`, default `me`) or decline the pending sign-in with `user_code`: the admin
/// API and the device-login page's buttons both come here. The user code as issued, or the error.
pub(super) fn decide_sign_in(
    st: &Shared,
    user_code: &str,
    deny: bool,
    user: Option<&str>,
) -> Result<String, Response> {
    let mut g = st.lock();
    let d = pending_sign_in(&mut g, user_code)?;
    if d.status != DeviceStatus::Pending {
        return Err(err(
            StatusCode::CONFLICT,
            "that sign-in is no longer pending",
        ));
    }
    d.status = if deny {
        DeviceStatus::Denied
    } else {
        DeviceStatus::Approved(canonical_user(user.unwrap_or("me")))
    };
    Ok(d.user_code.clone())
}

/// Every secret handed out so far (tests grep logs and files for them).
async fn issued_tokens(State(st): State<Shared>) -> Response {
    let g = st.lock();
    let mut v = json!(&g.issued);
    v["client_secret"] = json!(g.faults.client_secret);
    Json(v).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Interval {
    user_code: String,
    interval_secs: u64,
}

/// Change the polling interval a pending sign-in enforces (not the one it advertised), as a
/// busy identity platform may: polls faster than it get `slow_down`.
async fn device_interval(State(st): State<Shared>, Json(a): Json<Interval>) -> Response {
    let mut g = st.lock();
    let d = match pending_sign_in(&mut g, &a.user_code) {
        Ok(d) => d,
        Err(r) => return r,
    };
    d.interval_secs = a.interval_secs;
    Json(json!({"user_code": d.user_code, "interval_secs": d.interval_secs})).into_response()
}
