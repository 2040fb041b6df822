//! Fault injection and Graph's limits: the `/_admin/faults` document (every knob, with the
//! defaults of a well-behaved Graph), per-mailbox concurrency and budgets, random and one-shot
//! faults. `admit` is called by every Graph and upload-URL request before it does anything.

use super::state::{graph_error, with_retry_after, Shared};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// A request or byte budget over a sliding window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub amount: u64,
    pub window_secs: u64,
}

/// Property-name casing of upload-session answers (PUT 200 and status GET).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Casing {
    /// As Microsoft's PUT example: `ExpirationDateTime` + `nextExpectedRanges`.
    #[default]
    Docs,
    Camel,
    Pascal,
}

/// Which requests a one-shot fault applies to.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RouteClass {
    /// POST .../attachments (small attachment)
    Post,
    /// POST .../createUploadSession
    Session,
    /// PUT on an upload URL
    Put,
    /// GET on Graph (items, attachments, $value, me)
    Get,
    /// GET on an upload URL (session status)
    Status,
    /// DELETE on Graph or on an upload URL
    Delete,
    /// POST …/messages (create a draft)
    Draft,
    /// POST …/messages/{id}/send
    Send,
    /// POST {mb}/drive/…:/createUploadSession (a OneDrive upload session)
    DriveSession,
    /// PUT of a fragment on a OneDrive upload URL
    DrivePut,
    /// POST {mb}/drive/items/{id}/createLink
    Link,
    /// anything above
    Any,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Answer `status` (with `Retry-After` if `retry_after`).
    #[default]
    Status,
    /// Close the connection without an answer (a PUT first reads half its body).
    Drop,
    /// Wait `delay_ms`, then serve normally.
    Delay,
    /// Carry the request out (after `delay_ms`, if given), then close the connection instead of
    /// answering: the reply was lost after the request took effect (a created draft, an
    /// accepted send).
    Lost,
    /// 401 with a continuous-access-evaluation claims challenge in `WWW-Authenticate`: the
    /// token was revoked for this session and only an interactive sign-in helps.
    ClaimsChallenge,
    /// Carry the request out, then answer `status` (default 429) with `code` (default: the
    /// status's usual code) and `Retry-After: retry_after` when given, instead of its success:
    /// a refusal that is no proof of nothing done (a send throttled after it went).
    EffectThenStatus,
}

/// One deterministic fault, consumed by the next matching request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OneShot {
    pub route: RouteClass,
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub retry_after: Option<u64>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Graph error code of an injected answer (`status`, `effect_then_status`), e.g.
    /// `ErrorExceededMessageLimit`; default: the status's usual code.
    #[serde(default)]
    pub code: Option<String>,
}

/// The fault document. `POST /_admin/faults` merges the given keys into it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability that a Graph/upload request fails with `status`.
    pub fail_rate: f64,
    pub status: u16,
    /// `Retry-After` seconds on injected failures and on 429s from limits.
    pub retry_after: u64,
    /// Probability that a request's connection is dropped without an answer.
    pub drop_rate: f64,
    /// Extra latency on every Graph/upload request.
    pub delay_ms: u64,
    /// Concurrent requests per mailbox; over it: 429 ApplicationThrottled. `null` = unlimited.
    pub concurrency_limit: Option<usize>,
    pub mailbox_requests: Option<Budget>,
    pub mailbox_upload_bytes: Option<Budget>,
    pub session_lifetime_secs: u64,
    /// Tenant message-size limit: base64 size of all attachments of one item. `null` = off.
    pub message_size_limit: Option<u64>,
    pub session_min_size: u64,
    pub session_max_size: u64,
    /// Largest POST body accepted (Graph's ~4 MB request limit).
    pub post_max_bytes: u64,
    /// Answer oversized POSTs with 400 "The maximum request length supported is 4MB." instead of 413.
    pub oversize_as_400: bool,
    /// Serve GET on upload URLs (status); off: 404, as Outlook's real behaviour is unconfirmed.
    pub status_get: bool,
    pub casing: Casing,
    /// Delegated createUploadSession on another user's mailbox → 403 (Graph known issue).
    pub shared_mailbox_403: bool,
    /// Lifetime of minted access tokens.
    pub token_lifetime_secs: u64,
    pub device_code_interval_secs: u64,
    pub device_code_expires_secs: u64,
    /// Secret accepted for client_credentials.
    pub client_secret: String,
    /// A refresh token works once: each use returns a new one and revokes the old.
    pub revoke_used_refresh_tokens: bool,
    /// Deterministic faults, consumed in order by the next matching requests.
    pub fail_next: Vec<OneShot>,
    /// A hostile server: createUploadSession hands out upload URLs on this origin (e.g.
    /// `https://evil.example`, `http://localhost:PORT`) instead of the sandbox's own, to prove
    /// the client refuses them. `null` = the sandbox's origin.
    pub upload_url_origin: Option<String>,
    /// Milliseconds between a send's 202 and the draft's move to Sent Items (a new id); until
    /// then the draft still answers as a draft. Graph's real delay is unconfirmed.
    pub send_move_delay_ms: u64,
    /// Sends accepted per mailbox over a sliding window (Exchange: 30 a minute). `null` = off.
    pub mailbox_sends: Option<Budget>,
    /// How a send over `mailbox_sends` is answered: `"throttle"` = 429
    /// `ErrorExceededMessageLimit` with `Retry-After`, `"refuse"` = 403 of that code, no
    /// `Retry-After` (Graph's real answer is unconfirmed; see docs/graph-mail.md).
    pub send_limit_answer: SendLimitAnswer,
    /// A second send of a draft that has not moved yet: `"duplicate"` (strict: a second email)
    /// or `"refuse"` (403 `ErrorAccessDenied`).
    pub send_in_window: SendInWindow,
    /// Probability that an accepted send's 202 is lost (the connection closes after the send
    /// took effect).
    pub send_lost_rate: f64,
    /// Exchange's eventual consistency, read strictly: a GET of an item's attachment list
    /// leaves out attachments created less than this many milliseconds ago (a GET of the
    /// attachment itself or of its `$value` still finds it). 0 = listings are current.
    pub listing_lag_ms: u64,
    /// Attachment lists answer in pages of this many, with `@odata.nextLink` while more
    /// remain. `null` = one page.
    pub attachments_page_size: Option<usize>,
    /// A hostile server: the attachment list's `@odata.nextLink` points at this origin (e.g.
    /// `http://127.0.0.1:PORT` of another listener) instead of the sandbox's, to prove the
    /// client never sends the bearer token there and counts the list as cut short. `null` =
    /// the sandbox's origin.
    pub next_link_origin: Option<String>,
    /// A misbehaving upload server: every upload session breaks the protocol this way (see
    /// `Misbehaviour`). `null` = it keeps the protocol.
    pub upload_misbehaves: Option<Misbehaviour>,
    /// Exchange's search index, read strictly: a message is left out of `$filter` searches on
    /// extended properties and `internetMessageId` until this many milliseconds after it was
    /// created (a draft) or moved (a Sent Items copy); a GET by id finds it at once. 0 = current.
    pub filter_lag_ms: u64,
    /// Sent Items copies made from now on drop the single-value extended properties (as Graph
    /// shows them: no `$expand`, no `$filter` match), so clients must find a sent copy by
    /// `internetMessageId` too. Whether Graph keeps them is unconfirmed (GRAPH.md §13).
    pub sent_copy_without_properties: bool,
    /// The tenant's policy forbids anonymous ("anyone with the link") sharing: `createLink`
    /// with `scope: anonymous` → 403 `accessDenied` (the real answer is unconfirmed).
    pub refuse_anonymous_links: bool,
    /// The largest file a drive upload session takes (OneDrive's limit: 250 GB).
    pub drive_max_size: u64,
}

/// How an upload server breaks the protocol, for the client's refusals.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Misbehaviour {
    /// A chunk that is not the last is taken, and the answer's `nextExpectedRanges` starts
    /// past the bytes sent (by the chunk's length).
    Ahead,
    /// A chunk that is not the last completes the upload: 201 with a `Location`, and an
    /// attachment of the bytes so far is on the item.
    EarlyComplete,
    /// Nothing is taken: every PUT answers 200 with `nextExpectedRanges` at its own start.
    Stuck,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SendLimitAnswer {
    #[default]
    Throttle,
    Refuse,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SendInWindow {
    #[default]
    Duplicate,
    Refuse,
}

pub const DEFAULT_CLIENT_SECRET: &str = "sandbox-client-secret";

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_rate: 0.0,
            status: 503,
            retry_after: 1,
            drop_rate: 0.0,
            delay_ms: 0,
            concurrency_limit: Some(4),
            mailbox_requests: None,
            mailbox_upload_bytes: None,
            session_lifetime_secs: 3600,
            message_size_limit: None,
            session_min_size: 2 * 1024 * 1024,
            session_max_size: 150 * 1024 * 1024,
            post_max_bytes: 4 * 1024 * 1024,
            oversize_as_400: false,
            status_get: true,
            casing: Casing::Docs,
            shared_mailbox_403: false,
            token_lifetime_secs: 3600,
            device_code_interval_secs: 1,
            device_code_expires_secs: 900,
            client_secret: DEFAULT_CLIENT_SECRET.to_string(),
            revoke_used_refresh_tokens: true,
            fail_next: Vec::new(),
            upload_url_origin: None,
            send_move_delay_ms: 1000,
            mailbox_sends: None,
            send_limit_answer: SendLimitAnswer::Throttle,
            send_in_window: SendInWindow::Duplicate,
            send_lost_rate: 0.0,
            listing_lag_ms: 0,
            attachments_page_size: None,
            next_link_origin: None,
            upload_misbehaves: None,
            filter_lag_ms: 0,
            sent_copy_without_properties: false,
            refuse_anonymous_links: false,
            drive_max_size: 250 * 1024 * 1024 * 1024,
        }
    }
}

/// Holds one slot of the mailbox's concurrency count; frees it when dropped.
pub struct Slot {
    state: Shared,
    mailbox: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.state.lock();
        if let Some(n) = g.inflight.get_mut(&self.mailbox) {
            *n = n.saturating_sub(1);
        }
    }
}

/// What the request should do after admission.
pub enum Verdict {
    Serve(Slot),
    /// Drop the connection (for a PUT: after reading part of the body).
    Drop(Slot),
    /// Serve the request, then drop the connection instead of answering.
    Lost(Slot),
    /// Serve the request, then, if it succeeded, answer this instead (`effect_then_status`).
    EffectThen(Slot, Response),
}

fn throttled(h: &HeaderMap, message: &str, retry_after: u64) -> Response {
    with_retry_after(
        graph_error(
            StatusCode::TOO_MANY_REQUESTS,
            "ApplicationThrottled",
            message,
            h,
        ),
        Some(retry_after),
    )
}

/// Admit a request on `mailbox` of class `route` carrying `upload_bytes` of payload.
pub async fn admit(
    state: &Shared,
    route: RouteClass,
    mailbox: &str,
    upload_bytes: u64,
    h: &HeaderMap,
) -> Result<Verdict, Response> {
    let (drop_conn, lost, delay, after) = {
        let mut g = state.lock();
        let inner = &mut *g;
        let in_flight = inner.inflight.get(mailbox).copied().unwrap_or(0);
        if let Some(limit) = inner.faults.concurrency_limit {
            if in_flight >= limit {
                inner.stats.throttled_429 += 1;
                return Err(throttled(
                    h,
                    "Application is over its MailboxConcurrency limit.",
                    inner.faults.retry_after,
                ));
            }
        }
        let now = Instant::now();
        if let Some(b) = inner.faults.mailbox_requests.clone() {
            let w = inner.request_window.entry(mailbox.to_string()).or_default();
            let win = Duration::from_secs(b.window_secs);
            while w.front().is_some_and(|t| now.duration_since(*t) >= win) {
                w.pop_front();
            }
            if w.len() as u64 >= b.amount {
                let wait = w
                    .front()
                    .map(|t| win.saturating_sub(now.duration_since(*t)).as_secs() + 1)
                    .unwrap_or(1);
                inner.stats.throttled_429 += 1;
                return Err(throttled(
                    h,
                    "Application is over its MailboxRequests limit.",
                    wait,
                ));
            }
            w.push_back(now);
        }
        if let (Some(b), true) = (inner.faults.mailbox_upload_bytes.clone(), upload_bytes > 0) {
            let w = inner.byte_window.entry(mailbox.to_string()).or_default();
            let win = Duration::from_secs(b.window_secs);
            while w
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) >= win)
            {
                w.pop_front();
            }
            let used: u64 = w.iter().map(|(_, n)| n).sum();
            // A single request larger than the whole window still goes when the window is empty.
            if used > 0 && used + upload_bytes > b.amount {
                let wait = w
                    .front()
                    .map(|(t, _)| win.saturating_sub(now.duration_since(*t)).as_secs() + 1)
                    .unwrap_or(1);
                inner.stats.throttled_429 += 1;
                return Err(throttled(
                    h,
                    "Application is over its MailboxUploadBytes limit.",
                    wait,
                ));
            }
            w.push_back((now, upload_bytes));
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default();
            inner
                .stats
                .upload_budget_admissions
                .push([unix_ms, upload_bytes]);
        }
        let f = &mut inner.faults;
        let mut delay = f.delay_ms;
        let mut drop_conn = false;
        let mut lost = false;
        let mut after = None;
        if let Some(pos) = f
            .fail_next
            .iter()
            .position(|o| o.route == route || o.route == RouteClass::Any)
        {
            let o = f.fail_next.remove(pos);
            match o.action {
                Action::Drop => drop_conn = true,
                Action::Lost => {
                    // A slow request whose reply is lost: it takes effect after `delay_ms`.
                    lost = true;
                    delay += o.delay_ms.unwrap_or(0);
                }
                Action::Delay => delay += o.delay_ms.unwrap_or(1000),
                Action::ClaimsChallenge => {
                    let mut resp = injected(401, None, None, h);
                    resp.headers_mut().insert(
                        axum::http::header::WWW_AUTHENTICATE,
                        axum::http::HeaderValue::from_static(
                            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", \
                             error=\"insufficient_claims\", \
                             claims=\"eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwidmFsdWUiOiIxNzAwMDAwMDAwIn19fQ==\"",
                        ),
                    );
                    return Err(resp);
                }
                Action::Status => {
                    let status = o.status.unwrap_or(503);
                    if status == 429 {
                        inner.stats.throttled_429 += 1;
                    }
                    return Err(injected(status, o.retry_after, o.code.as_deref(), h));
                }
                Action::EffectThenStatus => {
                    let status = o.status.unwrap_or(429);
                    after = Some(injected(status, o.retry_after, o.code.as_deref(), h));
                }
            }
        } else {
            let mut rng = rand::thread_rng();
            if f.drop_rate > 0.0 && rng.gen_bool(f.drop_rate.clamp(0.0, 1.0)) {
                drop_conn = true;
            } else if f.fail_rate > 0.0 && rng.gen_bool(f.fail_rate.clamp(0.0, 1.0)) {
                let (status, ra) = (f.status, f.retry_after);
                if status == 429 {
                    inner.stats.throttled_429 += 1;
                }
                return Err(injected(status, Some(ra), None, h));
            }
        }
        let n = inner.inflight.entry(mailbox.to_string()).or_default();
        *n += 1;
        let now_inflight = *n;
        let peak = inner
            .stats
            .peak_concurrent_requests
            .entry(mailbox.to_string())
            .or_default();
        *peak = (*peak).max(now_inflight);
        (drop_conn, lost, delay, after)
    };
    // Built after the lock is released: dropping a Slot takes the lock.
    let slot = Slot {
        state: state.clone(),
        mailbox: mailbox.to_string(),
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    Ok(if drop_conn {
        Verdict::Drop(slot)
    } else if lost {
        Verdict::Lost(slot)
    } else if let Some(resp) = after {
        Verdict::EffectThen(slot, resp)
    } else {
        Verdict::Serve(slot)
    })
}

/// Read and drop a request's body before an injected answer (a 503, a 429): a connection
/// closed with a body unread is reset, and a client still sending its body (under Wine, a
/// 1 MiB PUT) sees the reset and never the answer. Bounded in size and time.
pub async fn drain(body: axum::body::Body) {
    const MOST: usize = 64 * 1024 * 1024;
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        axum::body::to_bytes(body, MOST),
    )
    .await;
}

fn injected(
    status: u16,
    retry_after: Option<u64>,
    code_override: Option<&str>,
    h: &HeaderMap,
) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let (c, m) = match status {
        429 => (
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
        ),
        500 => (
            "ErrorInternalServerTransientError",
            "An internal server error occurred. The operation failed.",
        ),
        503 => (
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please retry later.",
        ),
        504 => (
            "GatewayTimeout",
            "The gateway did not receive a response in time.",
        ),
        401 => (
            "InvalidAuthenticationToken",
            "Access token validation failure.",
        ),
        403 => (
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ),
        404 => (
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        ),
        _ => ("InjectedFault", "Fault injected by the sandbox."),
    };
    let (c, m) = match code_override {
        Some(o @ "ErrorExceededMessageLimit") => (
            o,
            "Cannot send mail: the mailbox's message rate limit was exceeded.",
        ),
        Some(o) => (o, m),
        None => (c, m),
    };
    with_retry_after(graph_error(code, c, m, h), retry_after)
}
