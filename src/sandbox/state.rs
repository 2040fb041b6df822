//! The sandbox's world: items, attachments (bytes on disk), upload sessions, tokens, device
//! codes, counters; plus the helpers every route uses (ids, timestamps, Graph-shaped errors).
//! It lives in memory; every change that must survive a restart is also written to the
//! journal (`persist`) through `Inner::log`.

use super::faults::Faults;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use time::OffsetDateTime;

/// The signed-in user behind `--token` and behind `me` in the admin API.
pub const ME_UPN: &str = "me@sandbox.test";
/// Directory object id of that user.
pub const ME_ID: &str = "5a8f3b9e-6c1d-4f2a-9b7e-0d4c2e1f3a5b";

/// Shared state of one running sandbox.
pub struct AppState {
    pub origin: String,
    pub data_dir: PathBuf,
    inner: Mutex<Inner>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    /// The world as the journal in `data_dir` left it (empty on a new data dir), journaling on.
    pub fn open(
        origin: String,
        data_dir: PathBuf,
        fixed_token: Option<String>,
    ) -> anyhow::Result<Self> {
        let mut inner = Inner::default();
        let sessions_dir = data_dir.join("sessions");
        super::persist::open(&data_dir, &mut inner, |sid| {
            sessions_dir.join(format!("{}.part", file_key(sid)))
        })?;
        if let Some(t) = fixed_token {
            inner.tokens.insert(
                t,
                TokenInfo {
                    user: Some(ME_UPN.to_string()),
                    expires: None,
                    minted: false,
                },
            );
        }
        Ok(AppState {
            origin,
            data_dir,
            inner: Mutex::new(inner),
        })
    }

    /// Lock the world. A panic while holding the lock is a sandbox bug; keep serving anyway.
    /// Sends whose move to Sent Items is due are carried out first, so every observer sees the
    /// world as Graph would show it at this instant.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !g.pending_sends.is_empty() {
            super::mail::deliver_due(&mut g, &self.data_dir.join("blobs"), false);
        }
        g
    }

    pub fn blob_path(&self, att_id: &str) -> PathBuf {
        self.data_dir.join("blobs").join(file_key(att_id))
    }

    pub fn session_path(&self, session_id: &str) -> PathBuf {
        self.data_dir
            .join("sessions")
            .join(format!("{}.part", file_key(session_id)))
    }
}

/// Ids contain `=`, `-`, `_`: hex-encode them for file names.
fn file_key(id: &str) -> String {
    hex::encode(id.as_bytes())
}

#[derive(Default)]
pub struct Inner {
    pub items: HashMap<String, Item>,
    pub sessions: HashMap<String, Session>,
    pub tokens: HashMap<String, TokenInfo>,
    pub refresh_tokens: HashMap<String, RefreshInfo>,
    pub device_codes: HashMap<String, DeviceCode>,
    pub faults: Faults,
    pub stats: Stats,
    pub inflight: HashMap<String, usize>,
    pub request_window: HashMap<String, VecDeque<Instant>>,
    pub byte_window: HashMap<String, VecDeque<(Instant, u64)>>,
    /// Every secret the sandbox handed out (access and refresh tokens, upload-URL authtokens),
    /// kept so tests can prove none of them leaked into logs or files (`GET /_admin/tokens/issued`).
    pub issued: Issued,
    /// Where changes are journaled; `None` only while replaying.
    pub journal: Option<super::persist::Journal>,
    /// Accepted sends whose draft has not yet moved to Sent Items (`mail::deliver_due`).
    pub pending_sends: Vec<super::mail::PendingSend>,
    /// Accepted sends per mailbox, for the `mailbox_sends` limit.
    pub send_window: HashMap<String, VecDeque<Instant>>,
    /// Every user's OneDrive: files and folders by id (`drive.rs`).
    pub drive_items: HashMap<String, super::drive::DriveItem>,
    /// Sharing links made by `createLink`, oldest first.
    pub links: Vec<super::drive::Link>,
}

impl Inner {
    /// Journal one change (call it under the lock, right after making the change in memory, so
    /// the journal's order is the world's order).
    pub fn log(&mut self, rec: super::persist::Record) {
        if let Some(j) = self.journal.as_mut() {
            j.append(&rec);
        }
    }

    /// Revoke every minted access and refresh token (of `user`, or of everyone); the count.
    pub fn revoke(&mut self, user: Option<&str>) -> usize {
        let before = self.tokens.len() + self.refresh_tokens.len();
        self.tokens
            .retain(|_, t| !t.minted || user.is_some_and(|u| t.user.as_deref() != Some(u)));
        self.refresh_tokens
            .retain(|_, t| user.is_some_and(|u| t.user != u));
        before - self.tokens.len() - self.refresh_tokens.len()
    }
}

/// Secrets handed out so far, by kind.
#[derive(Default, Serialize)]
pub struct Issued {
    pub access_tokens: Vec<String>,
    pub refresh_tokens: Vec<String>,
    pub upload_authtokens: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Message,
    Event,
}

impl Kind {
    pub fn from_segment(s: &str) -> Option<Kind> {
        match s {
            "messages" => Some(Kind::Message),
            "events" => Some(Kind::Event),
            _ => None,
        }
    }
    /// Outlook REST v2.0 collection name used in upload and Location URLs.
    pub fn outlook_collection(self) -> &'static str {
        match self {
            Kind::Message => "Messages",
            Kind::Event => "Events",
        }
    }
}

pub struct Item {
    pub id: String,
    pub kind: Kind,
    /// Canonical mailbox key (lowercase UPN).
    pub user: String,
    pub subject: String,
    pub is_draft: bool,
    pub created: OffsetDateTime,
    pub attachments: Vec<Attachment>,
    /// Recipients, body, folder, extended properties, send state (messages; see `mail`).
    pub mail: super::mail::MailProps,
}

#[derive(Clone)]
pub struct Attachment {
    pub id: String,
    pub name: String,
    pub content_type: String,
    /// Stored (raw) bytes.
    pub size: u64,
    pub sha256: String,
    pub is_inline: bool,
    pub content_id: Option<String>,
    pub modified: OffsetDateTime,
}

impl Attachment {
    /// Outlook's reported `size` is not the raw size (both doc examples exceed it by ~4.5%); the
    /// sandbox mimics that so clients never compare it with file sizes.
    pub fn reported_size(&self) -> u64 {
        self.size + self.size / 22 + 128 + self.name.len() as u64 * 2
    }

    pub fn metadata_json(&self, origin_ctx: &str) -> serde_json::Value {
        json!({
            "@odata.context": origin_ctx,
            "@odata.type": "#microsoft.graph.fileAttachment",
            "@odata.mediaContentType": self.content_type,
            "id": self.id,
            "lastModifiedDateTime": fmt_seconds(self.modified),
            "name": self.name,
            "contentType": self.content_type,
            "size": self.reported_size(),
            "isInline": self.is_inline,
            "contentId": self.content_id,
            "contentLocation": null,
        })
    }
}

pub struct Session {
    pub id: String,
    pub authtoken: String,
    pub item_id: String,
    pub user: String,
    pub kind: Kind,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub is_inline: bool,
    pub content_id: Option<String>,
    /// Next expected byte; everything before it is committed in the part file.
    pub next: u64,
    pub expires_at: OffsetDateTime,
    pub expires: Instant,
    /// SHA-256 of the committed bytes so far (cloned per PUT, stored on commit).
    pub hasher: sha2::Sha256,
    /// A OneDrive upload (`item_id` empty, `kind` unused): where the file goes and what to do
    /// when its name is taken. `None`: an Outlook attachment session.
    pub drive: Option<super::drive::DriveTarget>,
    /// Serialises PUTs of one session (a second concurrent PUT then sees the new offset).
    pub lock: Arc<tokio::sync::Mutex<()>>,
}

pub struct TokenInfo {
    /// `None` for an app-only (client credentials) token.
    pub user: Option<String>,
    pub expires: Option<Instant>,
    /// Minted by the identity endpoints (revocable), as opposed to `--token`.
    pub minted: bool,
}

pub struct RefreshInfo {
    pub user: String,
    pub client_id: String,
    pub scope: String,
}

pub struct DeviceCode {
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
    pub expires: Instant,
    pub interval_secs: u64,
    pub last_poll: Option<Instant>,
    pub status: DeviceStatus,
}

#[derive(Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    Pending,
    Approved(String),
    Denied,
    Redeemed,
}

/// Counters served by `GET /_admin/stats`.
#[derive(Default, Serialize, Clone)]
pub struct Stats {
    /// route -> status (or "dropped") -> count
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    pub bytes_received: u64,
    pub upload_bytes_received: u64,
    pub upload_bytes_committed: u64,
    pub chunks_over_4mib: u64,
    pub upload_url_requests_with_authorization: u64,
    pub peak_concurrent_requests: BTreeMap<String, usize>,
    pub throttled_429: u64,
    pub dropped_connections: u64,
    pub sessions_created: u64,
    pub attachments_created: u64,
    /// Files created (or replaced) on a OneDrive by an upload session.
    pub drive_items_created: u64,
    /// Sharing links created (a `createLink` answered 200 with an existing link is not counted).
    pub links_created: u64,
    /// Drafts created through Graph (`POST …/messages`).
    pub drafts_created: u64,
    /// Sends answered 202 (a second send in the move window counts again).
    pub sends_accepted: u64,
    /// Sends refused by the `mailbox_sends` limit.
    pub sends_over_limit: u64,
    /// Sends that took effect but whose answer was dropped (faults).
    pub send_replies_lost: u64,
    /// Requests that took effect but were answered with an error (`effect_then_status`).
    pub refused_after_effect: u64,
    /// While a mailbox byte budget is set: each upload body it admitted, as
    /// `[unix milliseconds, bytes]` (lets a benchmark measure the share of the budget used).
    pub upload_budget_admissions: Vec<[u64; 2]>,
}

impl Stats {
    pub fn record(&mut self, route: &str, status: &str) {
        *self
            .requests
            .entry(route.to_string())
            .or_default()
            .entry(status.to_string())
            .or_default() += 1;
    }
}

/// Canonical mailbox key for a path or admin `user` value: `me`, the user's id or UPN all map
/// to the signed-in user; any other value is another mailbox (which exists implicitly).
pub fn canonical_user(u: &str) -> String {
    let l = u.to_ascii_lowercase();
    if l == "me" || l == ME_ID || l == ME_UPN {
        ME_UPN.to_string()
    } else {
        l
    }
}

/// A Graph user object for a mailbox key.
pub fn user_json(user: &str) -> serde_json::Value {
    let id = if user == ME_UPN {
        ME_ID.to_string()
    } else {
        let h = <sha2::Sha256 as sha2::Digest>::digest(user.as_bytes());
        let x = hex::encode(&h[..16]);
        format!(
            "{}-{}-{}-{}-{}",
            &x[0..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..32]
        )
    };
    let local = user.split('@').next().unwrap_or(user);
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
        "id": id,
        "displayName": if user == ME_UPN { "Sandbox User".to_string() } else { local.to_string() },
        "userPrincipalName": user,
        "mail": user,
    })
}

/// An Exchange-looking id: base64url with padding, so it carries `-`, `_` and `=` like real ones.
pub fn exchange_id(prefix: &str) -> String {
    let mut b = [0u8; 25];
    rand::thread_rng().fill_bytes(&mut b);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE.encode(b)
    )
}

pub fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub fn fmt_seconds(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&f).unwrap_or_default()
}

/// `2019-09-25T01:09:30.7671707Z`: seven fractional digits, like Graph's DateTimeOffset.
pub fn fmt_7(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// A Graph error response: `{"error":{"code","message","innerError":{...}}}` plus the
/// `request-id`/`client-request-id` headers.
pub fn graph_error(
    status: StatusCode,
    code: &str,
    message: &str,
    req_headers: &HeaderMap,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = req_headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| request_id.clone());
    let body = json!({"error": {"code": code, "message": message, "innerError": {
        "date": fmt_seconds(OffsetDateTime::now_utc()),
        "request-id": request_id,
        "client-request-id": client_request_id,
    }}});
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("request-id", v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&client_request_id) {
        resp.headers_mut().insert("client-request-id", v);
    }
    resp
}

pub fn not_found_item(h: &HeaderMap) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
        h,
    )
}

pub fn with_retry_after(mut resp: Response, secs: Option<u64>) -> Response {
    if let Some(s) = secs {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            resp.headers_mut().insert("Retry-After", v);
        }
    }
    resp
}

/// Base64 length of `n` raw bytes: the tenant message-size limit counts encoded MIME size.
pub fn encoded_len(n: u64) -> u64 {
    n.div_ceil(3) * 4
}
