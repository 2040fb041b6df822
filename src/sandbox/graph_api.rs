//! Graph under `/v1.0`: bearer auth, users, items (messages/events), attachments (POST, list,
//! metadata, `$value`, DELETE) and `createUploadSession`. Paths are routed by hand from their
//! segments because `me` and `users/{id}` prefix the same tree for messages and events.

use super::content;
use super::faults::{admit, RouteClass, Verdict};
use super::persist::{AttRec, Record, SessionRec};
use super::state::{
    canonical_user, encoded_len, exchange_id, fmt_7, fmt_seconds, graph_error, not_found_item,
    random_token, user_json, Attachment, Inner, Kind, Session, Shared,
};
use super::ConnCtl;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Who is calling: the mailbox key of a delegated token, `None` for app-only.
pub struct Caller {
    pub user: Option<String>,
}

fn unauthorized(h: &HeaderMap, message: &str) -> Response {
    let mut r = graph_error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        message,
        h,
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
        ),
    );
    r
}

pub fn authenticate(state: &Shared, h: &HeaderMap) -> Result<Caller, Response> {
    let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(unauthorized(h, "Access token is empty."));
    };
    let token = match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => return Err(unauthorized(h, "Access token validation failure.")),
    };
    let g = state.lock();
    match g.tokens.get(token) {
        None => Err(unauthorized(
            h,
            "Access token validation failure. Invalid audience.",
        )),
        Some(t) if t.expires.is_some_and(|e| Instant::now() >= e) => Err(unauthorized(
            h,
            "Access token has expired or is not yet valid.",
        )),
        Some(t) => Ok(Caller {
            user: t.user.clone(),
        }),
    }
}

/// Percent-decode one path segment (ids may arrive with `=` as `%3D`).
pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() && s.is_char_boundary(i + 1) && s.is_char_boundary(i + 3)
        {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Read a body of at most `max` bytes. Over it, the rest is drained (so the client reads our
/// answer instead of a reset) and `Err(total)` returned.
pub async fn read_limited(state: &Shared, body: Body, max: u64) -> Result<Vec<u8>, u64> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        total += chunk.len() as u64;
        if total <= max {
            buf.extend_from_slice(&chunk);
        }
    }
    state.lock().stats.bytes_received += total;
    if total > max {
        Err(total)
    } else {
        Ok(buf)
    }
}

fn bad_request(h: &HeaderMap, msg: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "BadRequest", msg, h)
}

fn access_denied(h: &HeaderMap) -> Response {
    graph_error(
        StatusCode::FORBIDDEN,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
        h,
    )
}

pub async fn handle(State(state): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let h = parts.headers.clone();
    let ctl = parts.extensions.get::<ConnCtl>().cloned();
    let caller = match authenticate(&state, &h) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let path = parts.uri.path().strip_prefix("/v1.0").unwrap_or("");
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(pct_decode)
        .collect();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    // `drives/{id}/…` is `{owner}/drive/…`.
    let drives: Vec<String>;
    let segs: &[String] = match segs.first().map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("drives") if segs.len() >= 2 => match super::drive::owner_of(&segs[1]) {
            Some(owner) => {
                drives = ["users".to_string(), owner, "drive".to_string()]
                    .into_iter()
                    .chain(segs[2..].iter().cloned())
                    .collect();
                &drives
            }
            None => return super::drive::not_found(&h),
        },
        _ => &segs,
    };
    let (mailbox, rest) = match segs.first().map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("me") => match &caller.user {
            Some(u) => (u.clone(), &segs[1..]),
            None => {
                return bad_request(
                    &h,
                    "/me request is only valid with delegated authentication flow.",
                )
            }
        },
        Some("users") if segs.len() >= 2 => (canonical_user(&segs[1]), &segs[2..]),
        Some(other) => {
            return bad_request(
                &h,
                &format!("Resource not found for the segment '{other}'."),
            )
        }
        None => return bad_request(&h, "Invalid request."),
    };
    // `mailFolders/{folder}/messages/...` is `messages/...` limited to that folder.
    let (folder, rest) =
        match rest.first() {
            Some(f) if f.eq_ignore_ascii_case("mailFolders") => {
                match (rest.get(1), rest.get(2).map(String::as_str)) {
                    (Some(name), Some("messages")) => match super::mail::well_known_folder(name) {
                        Some(f) => (Some(f), &rest[2..]),
                        None => return not_found_item(&h),
                    },
                    _ => return bad_request(
                        &h,
                        "The sandbox serves only mailFolders/{drafts|sentitems|inbox}/messages.",
                    ),
                }
            }
            _ => (None, rest),
        };
    let m = parts.method.clone();
    let is_messages = rest.first().is_some_and(|s| s == "messages");
    let drive_tail =
        (rest.first().map(String::as_str) == Some("drive")).then(|| rest[1..].join("/"));
    let class = match (&m, rest.len(), rest.last().map(String::as_str)) {
        _ if drive_tail.is_some() => {
            super::drive::route_class(&m, drive_tail.as_deref().unwrap_or_default())
        }
        (&Method::POST, 1, _) if is_messages => RouteClass::Draft,
        (&Method::POST, 3, Some("send")) if is_messages => RouteClass::Send,
        (&Method::POST, 4, _) => RouteClass::Session,
        (&Method::POST, _, _) => RouteClass::Post,
        (&Method::DELETE, _, _) => RouteClass::Delete,
        _ => RouteClass::Get,
    };
    let upload_bytes = if m == Method::POST {
        h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    } else {
        0
    };
    let mut after = None;
    let (_slot, mut lost) = match admit(&state, class, &mailbox, upload_bytes, &h).await {
        Err(r) => {
            super::faults::drain(body).await;
            return r;
        }
        Ok(Verdict::Serve(s)) => (s, false),
        Ok(Verdict::Lost(s)) => (s, true),
        Ok(Verdict::EffectThen(s, r)) => {
            after = Some(r);
            (s, false)
        }
        Ok(Verdict::Drop(_s)) => {
            return drop_conn(&state, &parts.method, parts.uri.path(), ctl).await
        }
    };
    if class == RouteClass::Send && !lost {
        let rate = state.lock().faults.send_lost_rate;
        lost = rate > 0.0 && rand::Rng::gen_bool(&mut rand::thread_rng(), rate.clamp(0.0, 1.0));
    }
    let resp = match &drive_tail {
        Some(tail) => super::drive::route(&state, &mailbox, tail, &m, body, &h).await,
        None => {
            route(
                &state, &caller, &mailbox, folder, rest, &m, &query, body, &parts.uri, &h,
            )
            .await
        }
    };
    if lost && resp.status().is_success() && class == RouteClass::Send {
        state.lock().stats.send_replies_lost += 1;
    }
    answer_after_effect(
        &state,
        resp,
        lost,
        after,
        &parts.method,
        parts.uri.path(),
        ctl,
    )
    .await
}

/// A request served (`resp`) under a fault that strikes after its effect: `lost`, the
/// connection closes instead of the answer; `after`, that refusal is the answer. Either only
/// when the request succeeded.
pub(crate) async fn answer_after_effect(
    state: &Shared,
    resp: Response,
    lost: bool,
    after: Option<Response>,
    method: &Method,
    path: &str,
    ctl: Option<ConnCtl>,
) -> Response {
    if !resp.status().is_success() {
        return resp;
    }
    if lost {
        return drop_conn(state, method, path, ctl).await;
    }
    match after {
        // It took effect; the answer says otherwise.
        Some(refusal) => {
            let mut g = state.lock();
            g.stats.refused_after_effect += 1;
            if refusal.status() == StatusCode::TOO_MANY_REQUESTS {
                g.stats.throttled_429 += 1;
            }
            refusal
        }
        None => resp,
    }
}

#[allow(clippy::too_many_arguments)]
async fn route(
    state: &Shared,
    caller: &Caller,
    mailbox: &str,
    folder: Option<&str>,
    rest: &[String],
    m: &Method,
    query: &HashMap<String, String>,
    body: Body,
    uri: &axum::http::Uri,
    h: &HeaderMap,
) -> Response {
    if rest.is_empty() {
        return if *m == Method::GET {
            axum::Json(user_json(mailbox)).into_response()
        } else {
            method_not_allowed(h)
        };
    }
    let Some(kind) = Kind::from_segment(&rest[0]) else {
        return bad_request(
            h,
            &format!("Resource not found for the segment '{}'.", rest[0]),
        );
    };
    if kind == Kind::Message {
        use super::mail;
        match (m.clone(), rest.len()) {
            (Method::GET, 1) => {
                let self_url = format!("{}{}", state.origin, uri.path());
                return mail::list(state, mailbox, folder, query, &self_url, h);
            }
            (Method::GET, 2) => return mail::get(state, mailbox, folder, &rest[1], query, h),
            (Method::POST, 1) => {
                return match read_json(state, body, h).await {
                    Ok(v) => mail::create(state, mailbox, folder, &v, h),
                    Err(r) => r,
                }
            }
            (Method::POST, 3) if rest[2] == "send" => {
                return mail::send(state, mailbox, &rest[1], h)
            }
            (Method::DELETE, 2) => return mail::delete(state, mailbox, &rest[1], h),
            (Method::PATCH, 2) => {
                return match read_json(state, body, h).await {
                    Ok(v) => mail::patch(state, mailbox, &rest[1], &v, h),
                    Err(r) => r,
                }
            }
            _ => {}
        }
    }
    match (m.clone(), rest.len()) {
        (Method::GET, 1) => list_items(state, mailbox, kind, query),
        (Method::GET, 2) => get_item(state, mailbox, kind, &rest[1], h),
        (Method::GET, 3) if rest[2] == "attachments" => {
            list_attachments(state, mailbox, kind, &rest[1], query, uri.path(), h)
        }
        (Method::POST, 3) if rest[2] == "attachments" => {
            post_attachment(state, mailbox, kind, &rest[1], body, h).await
        }
        (Method::POST, 4) if rest[2] == "attachments" && is_cus(&rest[3]) => {
            create_session(state, caller, mailbox, kind, &rest[1], body, h).await
        }
        (Method::GET, 4) if rest[2] == "attachments" => {
            get_attachment(state, mailbox, kind, &rest[1], &rest[3], query, h)
        }
        (Method::DELETE, 4) if rest[2] == "attachments" => {
            delete_attachment(state, mailbox, kind, &rest[1], &rest[3], h)
        }
        (Method::GET, 5) if rest[2] == "attachments" && rest[4] == "$value" => {
            get_value(state, mailbox, kind, &rest[1], &rest[3], h).await
        }
        (_, n) if n <= 5 => method_not_allowed(h),
        _ => bad_request(h, "Resource not found for the segment."),
    }
}

fn is_cus(s: &str) -> bool {
    s == "createUploadSession" || s == "microsoft.graph.createUploadSession"
}

fn method_not_allowed(h: &HeaderMap) -> Response {
    graph_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "BadRequest",
        "The HTTP method is not allowed for this resource.",
        h,
    )
}

pub(crate) async fn drop_conn(
    state: &Shared,
    method: &Method,
    path: &str,
    ctl: Option<ConnCtl>,
) -> Response {
    {
        let mut g = state.lock();
        g.stats.dropped_connections += 1;
        if let Some(l) = super::route_label(method, path) {
            g.stats.record(&l, "dropped");
        }
    }
    match ctl {
        Some(c) => c.drop_now().await,
        // Not reachable through the sandbox's own server; answer something rather than hang.
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

fn item_json(it: &super::state::Item) -> Value {
    let mut v = json!({
        "id": it.id,
        "subject": it.subject,
        "createdDateTime": fmt_seconds(it.created),
        "lastModifiedDateTime": fmt_seconds(it.created),
        "hasAttachments": !it.attachments.is_empty(),
    });
    if it.kind == Kind::Message {
        v["isDraft"] = json!(it.is_draft);
    }
    v
}

fn list_items(state: &Shared, mailbox: &str, kind: Kind, q: &HashMap<String, String>) -> Response {
    let top: usize = q.get("$top").and_then(|t| t.parse().ok()).unwrap_or(10);
    let needle = q
        .get("$search")
        .map(|s| s.trim_matches('"').to_lowercase())
        .or_else(|| {
            q.get("$filter")
                .and_then(|f| f.split('\'').nth(1))
                .map(str::to_lowercase)
        });
    let g = state.lock();
    let mut items: Vec<_> = g
        .items
        .values()
        .filter(|i| i.user == mailbox && i.kind == kind)
        .filter(|i| {
            needle
                .as_ref()
                .is_none_or(|n| i.subject.to_lowercase().contains(n.as_str()))
        })
        .collect();
    items.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    let value: Vec<Value> = items.into_iter().take(top).map(item_json).collect();
    axum::Json(json!({"value": value})).into_response()
}

fn find_item<'a>(
    inner: &'a mut Inner,
    mailbox: &str,
    kind: Kind,
    id: &str,
) -> Option<&'a mut super::state::Item> {
    inner
        .items
        .get_mut(id)
        .filter(|i| i.user == mailbox && i.kind == kind)
}

fn get_item(state: &Shared, mailbox: &str, kind: Kind, id: &str, h: &HeaderMap) -> Response {
    let mut g = state.lock();
    match find_item(&mut g, mailbox, kind, id) {
        Some(it) => axum::Json(item_json(it)).into_response(),
        None => not_found_item(h),
    }
}

fn att_context(state: &Shared, mailbox: &str, kind: Kind, id: &str) -> String {
    let coll = if kind == Kind::Message {
        "messages"
    } else {
        "events"
    };
    let _ = state;
    format!("https://graph.microsoft.com/v1.0/$metadata#users('{mailbox}')/{coll}('{id}')/attachments/$entity")
}

/// `GET …/attachments`: the item's attachments, oldest first, in pages of
/// `attachments_page_size` (all at once when unset) with `@odata.nextLink` (`$skip`) while more
/// remain, on `next_link_origin` when that is set; attachments younger than `listing_lag_ms`
/// left out. Each carries `contentBytes` unless `$select` leaves it out (see `content.rs`).
fn list_attachments(
    state: &Shared,
    mailbox: &str,
    kind: Kind,
    id: &str,
    q: &HashMap<String, String>,
    path: &str,
    h: &HeaderMap,
) -> Response {
    let ctx = att_context(state, mailbox, kind, id);
    let select = content::Select::parse(q);
    let mut g = state.lock();
    let lag = time::Duration::milliseconds(g.faults.listing_lag_ms.min(i64::MAX as u64) as i64);
    let seen_before = OffsetDateTime::now_utc() - lag;
    let page = g.faults.attachments_page_size.filter(|n| *n > 0);
    let next_origin = g
        .faults
        .next_link_origin
        .clone()
        .unwrap_or_else(|| state.origin.clone());
    let skip: usize = q.get("$skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let Some(it) = find_item(&mut g, mailbox, kind, id) else {
        return not_found_item(h);
    };
    let listed: Vec<&super::state::Attachment> = it
        .attachments
        .iter()
        .filter(|a| a.modified <= seen_before)
        .collect();
    let total = listed.len();
    let take = page.unwrap_or(usize::MAX);
    let atts: Vec<super::state::Attachment> =
        listed.into_iter().skip(skip).take(take).cloned().collect();
    drop(g);
    let mut out = content::Streamed::default();
    out.text(format!(
        "{{\"@odata.context\":{},\"value\":[",
        json!(ctx.replace("/$entity", ""))
    ));
    for (n, a) in atts.iter().enumerate() {
        if n > 0 {
            out.text(",");
        }
        let mut meta = select.apply(a.metadata_json(&ctx));
        if let Some(o) = meta.as_object_mut() {
            o.remove("@odata.context");
        }
        content::attachment_value(&mut out, meta, &select, state.blob_path(&a.id));
    }
    out.text("]");
    if skip.saturating_add(take) < total {
        let mut pairs: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "$skip")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        pairs.sort();
        pairs.push(("$skip".into(), (skip + take).to_string()));
        let qs = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        out.text(format!(
            ",\"@odata.nextLink\":{}",
            json!(format!("{next_origin}{path}?{qs}"))
        ));
    }
    out.text("}");
    out.into_response()
}

/// `GET …/attachments/{att}`: its metadata and, unless `$select` leaves it out, its
/// `contentBytes` (streamed from the blob).
fn get_attachment(
    state: &Shared,
    mailbox: &str,
    kind: Kind,
    id: &str,
    att: &str,
    q: &HashMap<String, String>,
    h: &HeaderMap,
) -> Response {
    let ctx = att_context(state, mailbox, kind, id);
    let a = {
        let mut g = state.lock();
        find_item(&mut g, mailbox, kind, id)
            .and_then(|it| it.attachments.iter().find(|a| a.id == att))
            .cloned()
    };
    let Some(a) = a else {
        return not_found_item(h);
    };
    let select = content::Select::parse(q);
    let mut out = content::Streamed::default();
    let meta = select.apply(a.metadata_json(&ctx));
    content::attachment_value(&mut out, meta, &select, state.blob_path(&a.id));
    out.into_response()
}

fn delete_attachment(
    state: &Shared,
    mailbox: &str,
    kind: Kind,
    id: &str,
    att: &str,
    h: &HeaderMap,
) -> Response {
    let removed = {
        let mut g = state.lock();
        match find_item(&mut g, mailbox, kind, id) {
            Some(it) => {
                let before = it.attachments.len();
                it.attachments.retain(|a| a.id != att);
                let removed = before != it.attachments.len();
                if removed {
                    g.log(Record::AttDeleted {
                        item: id.to_string(),
                        att: att.to_string(),
                    });
                }
                removed
            }
            None => false,
        }
    };
    if !removed {
        return not_found_item(h);
    }
    let _ = std::fs::remove_file(state.blob_path(att));
    StatusCode::NO_CONTENT.into_response()
}

async fn get_value(
    state: &Shared,
    mailbox: &str,
    kind: Kind,
    id: &str,
    att: &str,
    h: &HeaderMap,
) -> Response {
    let meta = {
        let mut g = state.lock();
        find_item(&mut g, mailbox, kind, id)
            .and_then(|it| it.attachments.iter().find(|a| a.id == att))
            .cloned()
    };
    let Some(a) = meta else {
        return not_found_item(h);
    };
    let file = match tokio::fs::File::open(state.blob_path(&a.id)).await {
        Ok(f) => f,
        Err(_) => return not_found_item(h),
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(a.size);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    let mut resp = Response::new(body);
    let hd = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&a.content_type) {
        hd.insert(header::CONTENT_TYPE, v);
    }
    hd.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// Refuse attaching to `item` (non-draft message, tenant size limit) before any bytes land.
/// Strict choice: a non-draft message answers 403 ErrorAccessDenied (Graph's real answer is
/// unconfirmed; a 403 is permanent for clients, which is what matters).
pub fn check_item_accepts(
    inner: &mut Inner,
    mailbox: &str,
    kind: Kind,
    id: &str,
    add_bytes: u64,
    h: &HeaderMap,
) -> Result<(), Response> {
    let limit = inner.faults.message_size_limit;
    let Some(it) = find_item(inner, mailbox, kind, id) else {
        return Err(not_found_item(h));
    };
    if it.kind == Kind::Message && !it.is_draft {
        return Err(access_denied(h));
    }
    if let Some(limit) = limit {
        let used: u64 = it.attachments.iter().map(|a| encoded_len(a.size)).sum();
        if used + encoded_len(add_bytes) > limit {
            return Err(graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorMessageSizeExceeded",
                "The message exceeds the maximum supported size.",
                h,
            ));
        }
    }
    Ok(())
}

fn oversize(state: &Shared, h: &HeaderMap) -> Response {
    if state.lock().faults.oversize_as_400 {
        bad_request(h, "The maximum request length supported is 4MB.")
    } else {
        graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request entity is too large.",
            h,
        )
    }
}

pub(crate) async fn read_json(
    state: &Shared,
    body: Body,
    h: &HeaderMap,
) -> Result<Value, Response> {
    let max = state.lock().faults.post_max_bytes;
    let bytes = read_limited(state, body, max)
        .await
        .map_err(|_| oversize(state, h))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| bad_request(h, &format!("Unable to read JSON request payload: {e}")))
}

async fn post_attachment(
    state: &Shared,
    mailbox: &str,
    kind: Kind,
    id: &str,
    body: Body,
    h: &HeaderMap,
) -> Response {
    let v = match read_json(state, body, h).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(t) = v.get("@odata.type").and_then(Value::as_str) else {
        return graph_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UnprocessableType",
            "Cannot process input of abstract type 'Microsoft.OutlookServices.Attachment'",
            h,
        );
    };
    if t.trim_start_matches('#') != "microsoft.graph.fileAttachment" {
        return bad_request(
            h,
            &format!("The sandbox only supports '#microsoft.graph.fileAttachment', not '{t}'."),
        );
    }
    let Some(name) = v
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return bad_request(h, "The property 'name' is required.");
    };
    let Some(b64) = v.get("contentBytes").and_then(Value::as_str) else {
        return bad_request(h, "The property 'contentBytes' is required.");
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return bad_request(h, "The property 'contentBytes' is not valid base64.");
    };
    if let Err(r) = check_item_accepts(&mut state.lock(), mailbox, kind, id, bytes.len() as u64, h)
    {
        return r;
    }
    let att_id = exchange_id("AAMkADAtt");
    let written = async {
        use tokio::io::AsyncWriteExt as _;
        let mut f = tokio::fs::OpenOptions::from(super::persist::private_file())
            .open(state.blob_path(&att_id))
            .await?;
        f.write_all(&bytes).await?;
        f.flush().await
    };
    if written.await.is_err() {
        return graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ErrorInternalServerError",
            "Could not store the attachment.",
            h,
        );
    }
    let content_type = v
        .get("contentType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            mime_guess::from_path(name)
                .first_or_octet_stream()
                .to_string()
        });
    let att = Attachment {
        id: att_id.clone(),
        name: name.to_string(),
        content_type,
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        is_inline: v.get("isInline").and_then(Value::as_bool).unwrap_or(false),
        content_id: v
            .get("contentId")
            .and_then(Value::as_str)
            .map(str::to_string),
        modified: OffsetDateTime::now_utc(),
    };
    let ctx = att_context(state, mailbox, kind, id);
    let mut out = att.metadata_json(&ctx);
    out["contentBytes"] = json!(b64);
    {
        let mut g = state.lock();
        // While the bytes were written the item may have been deleted or sent, or other
        // attachments may have landed: judged again under the lock that adds this one, so
        // concurrent POSTs cannot together pass the size limit each passed alone.
        if let Err(r) = check_item_accepts(&mut g, mailbox, kind, id, att.size, h) {
            drop(g);
            let _ = std::fs::remove_file(state.blob_path(&att_id));
            return r;
        }
        let Some(it) = find_item(&mut g, mailbox, kind, id) else {
            drop(g);
            let _ = std::fs::remove_file(state.blob_path(&att_id));
            return not_found_item(h);
        };
        let rec = AttRec::of(&att);
        it.attachments.push(att);
        g.log(Record::Attached {
            item: id.to_string(),
            att: rec,
        });
        g.stats.attachments_created += 1;
    }
    (StatusCode::CREATED, axum::Json(out)).into_response()
}

#[allow(clippy::too_many_arguments)]
async fn create_session(
    state: &Shared,
    caller: &Caller,
    mailbox: &str,
    kind: Kind,
    id: &str,
    body: Body,
    h: &HeaderMap,
) -> Response {
    let v = match read_json(state, body, h).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(item) = v.get("AttachmentItem").or_else(|| v.get("attachmentItem")) else {
        return bad_request(h, "The parameter 'AttachmentItem' is missing.");
    };
    match item.get("attachmentType").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("file") => {}
        Some(t) => {
            return bad_request(
                h,
                &format!("The sandbox only supports attachmentType 'file', not '{t}'."),
            )
        }
        None => return bad_request(h, "The property 'attachmentType' is required."),
    }
    let Some(name) = item
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return bad_request(h, "The property 'name' is required.");
    };
    let Some(size) = item.get("size").and_then(Value::as_u64) else {
        return bad_request(h, "The property 'size' is required.");
    };
    let mut g = state.lock();
    if g.faults.shared_mailbox_403 && caller.user.as_deref().is_some_and(|u| u != mailbox) {
        return access_denied(h);
    }
    if find_item(&mut g, mailbox, kind, id).is_none() {
        return not_found_item(h);
    }
    let (min, max) = (g.faults.session_min_size, g.faults.session_max_size);
    if let Err(r) = check_item_accepts(&mut g, mailbox, kind, id, size, h) {
        return r;
    }
    if size < min {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            &format!("Attachment size must not be less than {min} bytes to use an upload session."),
            h,
        );
    }
    if size > max {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorAttachmentSizeShouldNotBeGreaterThanMaximumSize",
            &format!("Attachment size must not be greater than {max} bytes."),
            h,
        );
    }
    let content_type = item
        .get("contentType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            mime_guess::from_path(name)
                .first_or_octet_stream()
                .to_string()
        });
    let opened = open_session(state, &mut g, exchange_id("AAMkADSes"), h, |n| Session {
        id: n.id.clone(),
        authtoken: n.authtoken.clone(),
        item_id: id.to_string(),
        user: mailbox.to_string(),
        kind,
        name: name.to_string(),
        size,
        content_type,
        is_inline: item
            .get("isInline")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        content_id: item
            .get("contentId")
            .and_then(Value::as_str)
            .map(str::to_string),
        next: 0,
        expires_at: n.expires_at,
        expires: n.expires,
        hasher: Sha256::new(),
        drive: None,
        lock: Default::default(),
    });
    let n = match opened {
        Ok(n) => n,
        Err(r) => return r,
    };
    let upload_url = format!(
        "{}/api/v2.0/Users('{}')/{}('{}')/AttachmentSessions('{}')?authtoken={}",
        n.origin,
        mailbox,
        kind.outlook_collection(),
        id,
        n.id,
        n.authtoken
    );
    let out = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
        "uploadUrl": upload_url,
        "expirationDateTime": fmt_7(n.expires_at),
        "nextExpectedRanges": ["0-"],
    });
    (StatusCode::CREATED, axum::Json(out)).into_response()
}

/// An upload session about to open: its id, secret, expiry and the origin of its URL.
pub(crate) struct NewSession {
    pub id: String,
    pub authtoken: String,
    pub expires_at: OffsetDateTime,
    pub expires: Instant,
    pub origin: String,
}

/// Open upload session `id` (an Outlook attachment's or a drive file's, as `build` makes it):
/// its empty part file, a fresh `authtoken`, the lifetime of `session_lifetime_secs`, the
/// journal, the stats; the URL on `upload_url_origin` when that fault is set.
pub(crate) fn open_session(
    state: &Shared,
    g: &mut Inner,
    id: String,
    h: &HeaderMap,
    build: impl FnOnce(&NewSession) -> Session,
) -> Result<NewSession, Response> {
    let lifetime = Duration::from_secs(g.faults.session_lifetime_secs);
    let n = NewSession {
        id,
        authtoken: random_token(32),
        expires_at: OffsetDateTime::now_utc() + lifetime,
        expires: Instant::now() + lifetime,
        origin: g
            .faults
            .upload_url_origin
            .clone()
            .unwrap_or_else(|| state.origin.clone()),
    };
    if super::persist::private_file()
        .open(state.session_path(&n.id))
        .is_err()
    {
        return Err(graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ErrorInternalServerError",
            "Could not create the session.",
            h,
        ));
    }
    g.issued.upload_authtokens.push(n.authtoken.clone());
    let session = build(&n);
    g.log(Record::Session(SessionRec::of(&session)));
    g.sessions.insert(n.id.clone(), session);
    g.stats.sessions_created += 1;
    Ok(n)
}
