//! Outlook upload URLs (`/api/v2.0/Users('U')/Messages('M')/AttachmentSessions('S')?authtoken=T`):
//! PUT byte ranges streamed to a part file on disk, GET status, DELETE. Only bytes of a PUT
//! received in full are committed; the final PUT turns the part file into an attachment and
//! answers 201 with an empty body and a `Location`.

use super::faults::{admit, Casing, Misbehaviour, RouteClass, Verdict};
use super::graph_api::{check_item_accepts, drop_conn};
use super::persist::{AttRec, Record};
use super::state::{fmt_7, graph_error, Attachment, Shared};
use super::ConnCtl;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use sha2::Digest;
use std::time::Instant;
use time::OffsetDateTime;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

const FOUR_MIB: u64 = 4 * 1024 * 1024;

fn not_found(h: &HeaderMap) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
        h,
    )
}

/// `AttachmentSessions('ID')` → `ID` (the last such segment of the path), or a drive upload
/// URL's `guid='ID'`.
fn session_id(path: &str, query: &[(String, String)]) -> Option<String> {
    if let Some((_, g)) = query.iter().find(|(k, _)| k == "guid") {
        return Some(g.trim_matches('\'').to_string());
    }
    let decoded = super::graph_api::pct_decode(path);
    let start = decoded.rfind("AttachmentSessions('")? + "AttachmentSessions('".len();
    let end = decoded[start..].find("')")? + start;
    Some(decoded[start..end].to_string())
}

/// `bytes a-b/total` → (a, b, total).
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !all_digits(a) || !all_digits(b) || !all_digits(total) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

fn session_answer(
    casing: Casing,
    expires: &str,
    next: u64,
    ctx: Option<String>,
) -> serde_json::Value {
    let (e, n) = match casing {
        Casing::Docs => ("ExpirationDateTime", "nextExpectedRanges"),
        Casing::Camel => ("expirationDateTime", "nextExpectedRanges"),
        Casing::Pascal => ("ExpirationDateTime", "NextExpectedRanges"),
    };
    let mut v = json!({ e: expires, n: [next.to_string()] });
    if let Some(c) = ctx {
        v["@odata.context"] = json!(c);
    }
    v
}

pub async fn handle(State(state): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let h = parts.headers.clone();
    let ctl = parts.extensions.get::<ConnCtl>().cloned();
    if h.contains_key(header::AUTHORIZATION) {
        state.lock().stats.upload_url_requests_with_authorization += 1;
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAudience",
            "The audience claim value is invalid 'aud'.",
            &h,
        );
    }
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    // A drive upload URL (`/api/v2.0/drives/…?guid=…&tempauth=…`) answers in OneDrive's words.
    let drive_url = parts.uri.path().starts_with("/api/v2.0/drives/");
    let not_found = |h: &HeaderMap| {
        if drive_url {
            super::drive::not_found(h)
        } else {
            not_found(h)
        }
    };
    let Some(sid) = session_id(parts.uri.path(), &query) else {
        return not_found(&h);
    };
    let secret = if drive_url { "tempauth" } else { "authtoken" };
    let authtoken = query
        .iter()
        .find(|(k, _)| k == secret)
        .map(|(_, v)| v.clone());
    // Look the session up; an expired one is removed with its bytes.
    let (user, lock, drive) = {
        let mut g = state.lock();
        let Some(s) = g.sessions.get(&sid) else {
            return not_found(&h);
        };
        if authtoken.as_deref() != Some(s.authtoken.as_str()) || s.drive.is_some() != drive_url {
            return not_found(&h);
        }
        if Instant::now() >= s.expires {
            g.sessions.remove(&sid);
            g.log(Record::SessionGone { id: sid.clone() });
            drop(g);
            let _ = std::fs::remove_file(state.session_path(&sid));
            return not_found(&h);
        }
        (s.user.clone(), s.lock.clone(), s.drive.is_some())
    };
    let class = match parts.method {
        Method::PUT if drive => RouteClass::DrivePut,
        Method::PUT => RouteClass::Put,
        Method::GET => RouteClass::Status,
        Method::DELETE => RouteClass::Delete,
        _ => {
            return graph_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "BadRequest",
                "The HTTP method is not allowed.",
                &h,
            )
        }
    };
    let content_length: Option<u64> = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let verdict = admit(
        &state,
        class,
        &user,
        if matches!(class, RouteClass::Put | RouteClass::DrivePut) {
            content_length.unwrap_or(0)
        } else {
            0
        },
        &h,
    )
    .await;
    let (slot, drop_it, lost, after) = match verdict {
        Err(r) => {
            super::faults::drain(body).await;
            return r;
        }
        Ok(Verdict::Serve(s)) => (s, false, false, None),
        Ok(Verdict::Lost(s)) => (s, false, true, None),
        Ok(Verdict::EffectThen(s, r)) => (s, false, false, Some(r)),
        Ok(Verdict::Drop(s)) => (s, true, false, None),
    };
    let is_put = class != RouteClass::Status && class != RouteClass::Delete;
    if drop_it && !is_put {
        return drop_conn(&state, &parts.method, parts.uri.path(), ctl).await;
    }
    let _slot = slot;
    let resp = match class {
        RouteClass::Status => {
            let g = state.lock();
            match g.sessions.get(&sid) {
                // OneDrive documents the status GET; Outlook's answer is unconfirmed.
                Some(s) if drive => super::drive::session_status(s),
                Some(s) if g.faults.status_get => axum::Json(session_answer(
                    g.faults.casing,
                    &fmt_7(s.expires_at),
                    s.next,
                    None,
                ))
                .into_response(),
                _ => not_found(&h),
            }
        }
        RouteClass::Delete => {
            let removed = {
                let mut g = state.lock();
                let removed = g.sessions.remove(&sid).is_some();
                if removed {
                    g.log(Record::SessionGone { id: sid.clone() });
                }
                removed
            };
            let _ = std::fs::remove_file(state.session_path(&sid));
            if removed {
                StatusCode::NO_CONTENT.into_response()
            } else {
                not_found(&h)
            }
        }
        _ => {
            put(
                &state,
                &sid,
                drive,
                lock,
                body,
                &h,
                content_length,
                drop_it.then(|| {
                    (
                        ctl.clone(),
                        parts.method.clone(),
                        parts.uri.path().to_string(),
                    )
                }),
            )
            .await
        }
    };
    super::graph_api::answer_after_effect(
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

type DropPlan = Option<(Option<ConnCtl>, Method, String)>;

/// A PUT of a fragment; a refusal before its body is read (a 400, a 416) reads the body first
/// (see `faults::drain`: a client still sending would see a reset, not the answer).
#[allow(clippy::too_many_arguments)]
async fn put(
    state: &Shared,
    sid: &str,
    drive: bool,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    body: axum::body::Body,
    h: &HeaderMap,
    content_length: Option<u64>,
    drop_plan: DropPlan,
) -> Response {
    let mut body = Some(body);
    let resp = put_fragment(
        state,
        sid,
        drive,
        lock,
        &mut body,
        h,
        content_length,
        drop_plan,
    )
    .await;
    if let Some(unread) = body {
        super::faults::drain(unread).await;
    }
    resp
}

#[allow(clippy::too_many_arguments)]
async fn put_fragment(
    state: &Shared,
    sid: &str,
    drive: bool,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    body: &mut Option<axum::body::Body>,
    h: &HeaderMap,
    content_length: Option<u64>,
    drop_plan: DropPlan,
) -> Response {
    // OneDrive's codes on a drive upload URL, Outlook's on an attachment's.
    let (bad_code, range_code) = if drive {
        ("invalidRequest", "invalidRange")
    } else {
        ("ErrorInvalidRequest", "ErrorInvalidRange")
    };
    let bad = |msg: &str| graph_error(StatusCode::BAD_REQUEST, bad_code, msg, h);
    let not_found = |h: &HeaderMap| {
        if drive {
            super::drive::not_found(h)
        } else {
            not_found(h)
        }
    };
    let Some(len) = content_length else {
        return bad("The Content-Length header is required.");
    };
    let Some((a, b, total)) = h
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range)
    else {
        return bad(
            "The Content-Range header is missing or not of the form 'bytes {start}-{end}/{total}'.",
        );
    };
    let _guard = lock.lock().await;
    let (size, next, mut hasher) = {
        let mut g = state.lock();
        let max = g.faults.drive_max_size;
        let Some(s) = g.sessions.get_mut(sid) else {
            return not_found(h);
        };
        // A drive session made without `fileSize` takes the total its first fragment declares.
        if drive && s.size == super::drive::SIZE_UNKNOWN && a == 0 && total > 0 {
            if total > max {
                return graph_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "maxFileSizeExceeded",
                    &format!("The file is larger than the drive allows ({max} bytes)."),
                    h,
                );
            }
            s.size = total;
            let rec = super::persist::SessionRec::of(s);
            g.log(Record::Session(rec));
        }
        let Some(s) = g.sessions.get(sid) else {
            return not_found(h);
        };
        (s.size, s.next, s.hasher.clone())
    };
    if total != size {
        return bad(&format!("The current upload session is for {size} total bytes, but the current fragment declares a total of {total}."));
    }
    if b < a || b >= total {
        return bad(&format!(
            "The range {a}-{b} is not valid for a total of {total} bytes."
        ));
    }
    if len != b - a + 1 {
        return bad(&format!(
            "Content-Length {len} does not match the length of the range {a}-{b}."
        ));
    }
    if drive && len > super::drive::FRAGMENT_MAX {
        return bad(&format!(
            "A fragment must be smaller than {} bytes; this one is {len}.",
            super::drive::FRAGMENT_MAX
        ));
    }
    if drive && b + 1 != total && len % super::drive::FRAGMENT_UNIT != 0 {
        return bad(&format!(
            "Every fragment but the last must be a multiple of 320 KiB ({} bytes); this one is {len}.",
            super::drive::FRAGMENT_UNIT
        ));
    }
    if a != next {
        let why = match (drive, a < next) {
            (true, true) => "Uploaded fragment overlaps with existing data.".to_string(),
            (true, false) => format!("The fragment starts at {a}; the next expected byte is {next} (fragmentOutOfOrder)."),
            (false, _) => format!("The range must start at the next expected byte {next}; bytes must be uploaded in order."),
        };
        return graph_error(StatusCode::RANGE_NOT_SATISFIABLE, range_code, &why, h);
    }
    let misbehaves = {
        let mut g = state.lock();
        if len > FOUR_MIB && !drive {
            g.stats.chunks_over_4mib += 1;
        }
        // The misbehaviours are an Outlook upload server's.
        g.faults.upload_misbehaves.filter(|_| !drive)
    };
    let part = state.session_path(sid);
    let mut file = match tokio::fs::OpenOptions::new().write(true).open(&part).await {
        Ok(f) => f,
        Err(_) => return not_found(h),
    };
    if file.seek(std::io::SeekFrom::Start(a)).await.is_err() {
        return graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ErrorInternalServerError",
            "Seek failed.",
            h,
        );
    }
    // With a drop planned, read about half the body, then vanish.
    let drop_after = drop_plan.as_ref().map(|_| len / 2);
    let Some(body) = body.take() else {
        return bad("The request's body was read already.");
    };
    let mut stream = body.into_data_stream();
    let mut got = 0u64;
    let mut io_ok = true;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(session = %sid, got, "PUT body ended early: {e}");
                break;
            }
        };
        got += chunk.len() as u64;
        {
            let mut g = state.lock();
            g.stats.bytes_received += chunk.len() as u64;
            g.stats.upload_bytes_received += chunk.len() as u64;
        }
        if got > len {
            break;
        }
        hasher.update(&chunk);
        if let Err(e) = file.write_all(&chunk).await {
            tracing::warn!(session = %sid, "cannot write the part file: {e}");
            io_ok = false;
            break;
        }
        if let (Some(limit), Some((ctl, m, p))) = (drop_after, drop_plan.as_ref()) {
            if got >= limit {
                drop(file);
                let _ = truncate(&part, a).await;
                return drop_conn(state, m, p, ctl.clone()).await;
            }
        }
    }
    if let Some((ctl, m, p)) = drop_plan {
        let _ = truncate(&part, a).await;
        return drop_conn(state, &m, &p, ctl).await;
    }
    // A failed write of our own (disk, or the runtime going down on SIGTERM) is the server's
    // fault: 500, which clients retry; a 400 would tell them the request itself was wrong.
    let io_ok = io_ok && (got != len || file.flush().await.is_ok());
    if !io_ok {
        drop(file);
        let _ = truncate(&part, a).await;
        return graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ErrorInternalServerError",
            "Could not store the bytes of this range.",
            h,
        );
    }
    if got != len {
        drop(file);
        let _ = truncate(&part, a).await;
        return bad(&format!("Content size does not match the specified contentLength. {got} bytes written while expected {len}."));
    }
    drop(file);
    if misbehaves == Some(Misbehaviour::Stuck) {
        // Nothing taken, and the answer says so: the next expected byte does not move.
        let _ = truncate(&part, a).await;
        let (expires_at, casing) = {
            let g = state.lock();
            let Some(s) = g.sessions.get(sid) else {
                return not_found(h);
            };
            (s.expires_at, g.faults.casing)
        };
        return axum::Json(session_answer(casing, &fmt_7(expires_at), a, None)).into_response();
    }
    let new_next = b + 1;
    let done = new_next == size;
    let (expires_at, casing, user, kind, item_id) = {
        let mut g = state.lock();
        g.stats.upload_bytes_committed += len;
        let casing = g.faults.casing;
        let lifetime = std::time::Duration::from_secs(g.faults.session_lifetime_secs);
        let Some(s) = g.sessions.get_mut(sid) else {
            return not_found(h);
        };
        s.next = new_next;
        s.hasher = hasher.clone();
        let out = (
            s.expires_at,
            casing,
            s.user.clone(),
            s.kind,
            s.item_id.clone(),
        );
        // OneDrive extends a session's life with each fragment it takes (onedrive-api-docs
        // #1260); Outlook's expiry stays.
        let extended = (drive && !done).then(|| {
            s.expires = Instant::now() + lifetime;
            s.expires_at = OffsetDateTime::now_utc() + lifetime;
            s.expires
        });
        // The final PUT is journaled as `Completed` once the attachment exists.
        if !done {
            g.log(Record::SessionProgress {
                id: sid.to_string(),
                next: new_next,
            });
        }
        if let Some(e) = extended {
            g.log(Record::SessionExpires {
                id: sid.to_string(),
                expires_ms: super::persist::instant_to_ms(e),
            });
        }
        out
    };
    if drive {
        if done {
            return super::drive::complete(state, sid, hex::encode(hasher.finalize()), size, h)
                .await;
        }
        let g = state.lock();
        let Some(s) = g.sessions.get(sid) else {
            return not_found(h);
        };
        let mut resp = super::drive::session_status(s);
        *resp.status_mut() = StatusCode::ACCEPTED;
        return resp;
    }
    if !done && misbehaves == Some(Misbehaviour::EarlyComplete) {
        // A 201 before the last byte: the bytes so far become the attachment.
        return complete(state, sid, hasher, new_next, h).await;
    }
    if !done {
        // `Ahead`: the answer claims bytes past the ones sent.
        let answered = match misbehaves {
            Some(Misbehaviour::Ahead) => new_next + len,
            _ => new_next,
        };
        let ctx = format!(
            "{}/api/v2.0/$metadata#Users('{}')/{}('{}')/AttachmentSessions/$entity",
            state.origin,
            user,
            kind.outlook_collection(),
            item_id
        );
        return axum::Json(session_answer(
            casing,
            &fmt_7(expires_at),
            answered,
            Some(ctx),
        ))
        .into_response();
    }
    complete(state, sid, hasher, size, h).await
}

async fn truncate(path: &std::path::Path, len: u64) -> std::io::Result<()> {
    let f = tokio::fs::OpenOptions::new().write(true).open(path).await?;
    f.set_len(len).await
}

/// The upload becomes an attachment of its first `size` bytes (all of them, unless the server
/// misbehaves).
async fn complete(
    state: &Shared,
    sid: &str,
    hasher: sha2::Sha256,
    size: u64,
    h: &HeaderMap,
) -> Response {
    let att_id = super::state::exchange_id("AAMkADAtt");
    let mut g = state.lock();
    let Some(s) = g.sessions.remove(sid) else {
        return not_found(h);
    };
    if let Err(r) = check_item_accepts(&mut g, &s.user, s.kind, &s.item_id, s.size, h) {
        g.log(Record::SessionGone {
            id: sid.to_string(),
        });
        drop(g);
        let _ = std::fs::remove_file(state.session_path(sid));
        return r;
    }
    if std::fs::rename(state.session_path(sid), state.blob_path(&att_id)).is_err() {
        g.log(Record::SessionGone {
            id: sid.to_string(),
        });
        return graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ErrorInternalServerError",
            "Could not store the attachment.",
            h,
        );
    }
    let att = Attachment {
        id: att_id.clone(),
        name: s.name.clone(),
        content_type: s.content_type.clone(),
        size,
        sha256: hex::encode(hasher.finalize()),
        is_inline: s.is_inline,
        content_id: s.content_id.clone(),
        modified: OffsetDateTime::now_utc(),
    };
    let rec = AttRec::of(&att);
    match g.items.get_mut(&s.item_id) {
        Some(it) => it.attachments.push(att),
        None => {
            g.log(Record::SessionGone {
                id: sid.to_string(),
            });
            return not_found(h);
        }
    }
    g.log(Record::Completed {
        session: sid.to_string(),
        item: s.item_id.clone(),
        att: rec,
    });
    g.stats.attachments_created += 1;
    drop(g);
    let location = format!(
        "{}/api/v2.0/Users('{}')/{}('{}')/Attachments('{}')",
        state.origin,
        s.user,
        s.kind.outlook_collection(),
        s.item_id,
        att_id
    );
    let mut resp = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    resp
}
