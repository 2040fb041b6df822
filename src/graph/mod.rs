//! Graph HTTP: attachments, upload sessions, ranges, errors, retry, pacing.
//!
//! One `reqwest` client serves both Graph (with a bearer token) and upload URLs (never with
//! one). Every request goes through [`GraphClient::execute`], which applies the per-mailbox
//! limits, the bearer token, the retry policy and the error parsing, so those rules live in
//! one place. The single steps the core asks for (one request each, a typed outcome) are in
//! [`steps`].

pub mod bounded;
pub mod drive;
pub mod error;
pub mod hints;
mod listing;
pub mod mail;
pub mod pacing;
pub mod ranges;
pub mod retry;
pub mod sends;
pub mod steps;

pub use error::{ErrorClass, GraphError};
pub use steps::fault_of;

use crate::auth::{AuthError, Credentials};
use crate::config::{ItemKind, Settings};
use pacing::Pacer;
use reqwest::StatusCode;
use retry::RetryPolicy;
use std::time::{Duration, SystemTime};
use url::Url;

pub use crate::core::model::{MAX_ATTACHMENT, MAX_REQUEST_BODY, MIN_SESSION, SESSION_THRESHOLD};

/// An Outlook item: a message or an event in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRef {
    /// `me`, a UPN or a user id.
    pub user: String,
    pub kind: ItemKind,
    pub id: String,
}

impl ItemRef {
    pub fn new(user: impl Into<String>, kind: ItemKind, id: impl Into<String>) -> Self {
        ItemRef {
            user: user.into(),
            kind,
            id: id.into(),
        }
    }

    fn is_me(&self) -> bool {
        self.user.eq_ignore_ascii_case("me")
    }

    /// Path segments under the Graph root: `me/messages/{id}` or `users/{u}/events/{id}`.
    pub fn segments(&self) -> Vec<&str> {
        let mut s = if self.is_me() {
            vec!["me"]
        } else {
            vec!["users", self.user.as_str()]
        };
        s.push(match self.kind {
            ItemKind::Message => "messages",
            ItemKind::Event => "events",
        });
        s.push(&self.id);
        s
    }
}

/// Errors of one request: Graph's answer, or no token.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// How a request is sent.
#[derive(Debug, Clone, Copy)]
pub struct RequestOpts<'a> {
    /// The mailbox whose limits this request counts against.
    pub mailbox: &'a str,
    /// An upload URL: no `Authorization`, and 401/403/404 mean the session is dead.
    pub upload_url: bool,
    /// Retry transient failures here. Off for requests whose effect cannot be repeated blindly
    /// (POST of an attachment, PUT of a chunk): their callers reconcile first.
    pub retry: bool,
    pub timeout: Duration,
    /// Upload bytes the request carries (a POST's body), counted against the mailbox's byte
    /// budget. Chunk PUTs leave it 0: `Pacer::admit_chunk` counted them while sizing them.
    pub body_bytes: u64,
    /// Waits for the mailbox's budgets and concurrency (`Pacer::acquire`). Off only for a send
    /// whose draft was checked right before by a paced request (`send_step`): no wait may fall
    /// between the check and the send.
    pub paced: bool,
}

impl<'a> RequestOpts<'a> {
    /// A Graph request, retried on transient failures, 60 s timeout.
    pub fn graph(mailbox: &'a str) -> Self {
        RequestOpts {
            mailbox,
            upload_url: false,
            retry: true,
            timeout: Duration::from_secs(60),
            body_bytes: 0,
            paced: true,
        }
    }

    /// A request to an upload URL (no `Authorization`), retried on transient failures.
    pub fn upload_url(mailbox: &'a str) -> Self {
        RequestOpts {
            upload_url: true,
            ..Self::graph(mailbox)
        }
    }

    /// A request whose effect cannot be repeated blindly (POST of an attachment, PUT of a
    /// chunk): no retry here, the caller reconciles first; 300 s for large bodies.
    pub fn with_effect(self) -> Self {
        RequestOpts {
            retry: false,
            timeout: Duration::from_secs(300),
            ..self
        }
    }

    pub fn with_timeout(self, timeout: Duration) -> Self {
        RequestOpts { timeout, ..self }
    }

    /// Not paced: it rides on the permit of the request that just checked what it acts on
    /// (the listing right before a send).
    pub fn unpaced(self) -> Self {
        RequestOpts {
            paced: false,
            ..self
        }
    }

    /// The request carries a body of `bytes`, paced by the mailbox's byte budget.
    pub fn with_body(self, bytes: u64) -> Self {
        RequestOpts {
            body_bytes: bytes,
            ..self
        }
    }
}

/// A Graph client for one configuration.
pub struct GraphClient {
    http: reqwest::Client,
    base: Url,
    creds: Credentials,
    pacer: Pacer,
    policy: RetryPolicy,
    chunk_size: u64,
    /// Exchange's sending limit, counted as the server counts it.
    sends: sends::SendGate,
    /// Recent attachment listings per item, for `find_attachment_recent`.
    listings: std::sync::Mutex<std::collections::HashMap<String, Listing>>,
}

/// When an item's attachments were listed, and a hash of each name: all the look before a first
/// upload needs to know is whether a name may be there. 8 bytes an attachment, not its id and
/// name: an item with 100,000 attachments cost the agent ~60 MiB as (id, name) strings.
type Listing = (std::time::Instant, std::collections::HashSet<u64>);

fn name_hash(name: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(name)
}

/// Who retries a request that failed transiently: [`GraphClient::execute`] itself (commands),
/// or its caller (the core's steps: one request each, the failure a typed outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    Here,
    Caller,
}

impl Retry {
    fn apply(self, opts: RequestOpts<'_>) -> RequestOpts<'_> {
        RequestOpts {
            retry: self == Retry::Here,
            ..opts
        }
    }
}

/// Pages of an attachment listing read at most.
const MAX_LISTING_PAGES: usize = 1000;

/// How long a listing of an item's attachments serves the look before a first upload.
pub const LISTING_TTL: Duration = Duration::from_secs(30);

fn item_key(item: &ItemRef) -> String {
    format!("{}\u{0}{}", item.user.to_ascii_lowercase(), item.id)
}

/// A listing read for one name: the ids of attachments so named, and every name's hash.
struct NameSearch {
    name: String,
    names: std::collections::HashSet<u64>,
    candidates: Vec<String>,
}

impl listing::Sink for NameSearch {
    fn add(&mut self, id: &str, name: &str) {
        self.names.insert(name_hash(name));
        if name == self.name {
            self.candidates.push(id.to_string());
        }
    }
}

impl GraphClient {
    pub fn new(settings: &Settings, creds: Credentials) -> Result<GraphClient, String> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("outbox/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            // HTTP/1.1: a 4 MiB chunk streams at the pace of TCP, where over HTTP/2 it waits on
            // the server's flow-control window updates (`scripts/bench large`; the figures are
            // in BENCHMARKS.md). Requests to one mailbox are at most `concurrency` at a time, so
            // a few pooled connections cost nothing.
            .http1_only();
        if let Some(ca) = &settings.graph.ca_file {
            let certs = crate::ca::load_bundle(ca)?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        let a = &settings.agent;
        Ok(GraphClient {
            http,
            base: settings.graph.base_url.clone(),
            creds,
            pacer: Pacer::new(a.concurrency, a.mailbox_requests, a.mailbox_upload_bytes),
            policy: RetryPolicy::default(),
            chunk_size: a.chunk_size.clamp(1, MAX_REQUEST_BODY),
            sends: sends::SendGate::new(a.mailbox_sends),
            listings: Default::default(),
        })
    }

    /// Use this retry policy (tests and the demo shorten it).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Count the next chunk against the mailbox's byte budget; returns its (maybe trimmed) length.
    pub async fn admit_chunk(
        &self,
        mailbox: &str,
        want: u64,
        whole_window: bool,
    ) -> (u64, pacing::Stamp) {
        self.pacer.admit_chunk(mailbox, want, whole_window).await
    }

    /// A file larger than the mailbox's whole byte budget waits for its turn and takes the window
    /// (`true`); any other is paced body by body.
    pub async fn take_whole_window(&self, mailbox: &str, file_bytes: u64) -> bool {
        file_bytes >= SESSION_THRESHOLD && self.pacer.take_whole_window(mailbox, file_bytes).await
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// `{base}/{segments...}`, each segment percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut p) = u.path_segments_mut() {
            p.pop_if_empty();
            p.extend(segments);
        }
        u
    }

    /// An upload URL is used only when it is https on a Microsoft host, or has the scheme and
    /// host (and port) of `graph.base_url` (the sandbox).
    pub fn check_upload_url(&self, raw: &str) -> Result<Url, GraphError> {
        self.check_url_among(raw, MICROSOFT_UPLOAD_HOSTS)
    }

    /// `raw` if it is https on one of `hosts` (or a subdomain), or on `graph.base_url`'s origin.
    fn check_url_among(&self, raw: &str, hosts: &[&str]) -> Result<Url, GraphError> {
        let bad = |why: &str| {
            GraphError::new(
                ErrorClass::Permanent,
                None,
                "UntrustedUploadUrl",
                format!("refusing the upload URL Graph returned ({why}); it must be https on a Microsoft host or on graph.base_url's host"),
            )
        };
        let u = Url::parse(raw).map_err(|_| bad("not a URL"))?;
        let same_origin = u.scheme() == self.base.scheme()
            && u.host_str() == self.base.host_str()
            && u.port_or_known_default() == self.base.port_or_known_default();
        if same_origin {
            return Ok(u);
        }
        if u.scheme() != "https" {
            return Err(bad("not https"));
        }
        let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
        if hosts
            .iter()
            .any(|s| host == *s || host.ends_with(&format!(".{s}")))
        {
            Ok(u)
        } else {
            Err(bad(&format!("host {host}")))
        }
    }

    /// Send one request built by `build` (called again for each attempt) and return a
    /// successful response, or the error. Handles pacing, the bearer token (one refresh on a
    /// 401), `Retry-After`, backoff and error parsing.
    pub async fn execute<F>(
        &self,
        opts: RequestOpts<'_>,
        build: F,
    ) -> Result<reqwest::Response, RequestError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let token = if opts.upload_url {
                None
            } else {
                Some(self.creds.bearer().await?)
            };
            let mut req = build(&self.http).timeout(opts.timeout);
            if let Some(t) = &token {
                // A bearer token goes to the Graph origin and nowhere else (a nextLink, an id
                // in a path: whatever built the URL).
                let (client, built) = req.build_split();
                let built = built.map_err(|e| GraphError::transport(&e))?;
                if !bounded::same_origin(built.url(), &self.base) {
                    return Err(our_error(
                        ErrorClass::Permanent,
                        "UntrustedUrl",
                        format!(
                            "refusing to send the bearer token to {}: only graph.base_url's origin ({}) receives it",
                            crate::outside::shown(&built.url().origin().ascii_serialization()),
                            self.base.origin().ascii_serialization()
                        ),
                    )
                    .into());
                }
                req = reqwest::RequestBuilder::from_parts(client, built).bearer_auth(&t.secret);
            }
            let err = {
                let _permit = match opts.paced {
                    true => Some(self.pacer.acquire(opts.mailbox, opts.body_bytes).await),
                    false => None,
                };
                match req.send().await {
                    Ok(resp) if resp.status().is_success() => return Ok(resp),
                    Ok(resp) => error_from_response(resp, opts.upload_url).await,
                    Err(e) => GraphError::transport(&e),
                }
            };
            let err = explain_refusal(&self.creds, err);
            if err.class == ErrorClass::SignIn && !refreshed && !err.claims_challenge {
                if let Some(t) = &token {
                    refreshed = true;
                    if self.creds.invalidate(t).await {
                        tracing::debug!("401 from Graph: retrying once with a fresh token");
                        continue;
                    }
                }
            }
            // A server that cannot be reached at all is not waited for here: the caller (the
            // core's backoff, or a one-shot command's own patience) decides, at once.
            let unreachable = err.status.is_none() && err.code == "ConnectionFailed";
            if !(opts.retry && err.is_retryable()) || unreachable {
                return Err(err.into());
            }
            match self.policy.delay(attempt, err.retry_after) {
                Some(d) => {
                    tracing::info!(code = %err.code, status = ?err.status, wait_ms = d.as_millis() as u64, attempt, "retrying after a transient error");
                    tokio::time::sleep(d).await;
                }
                None => return Err(err.into()),
            }
        }
    }

    /// GET a Graph path and parse JSON.
    pub async fn get_json(
        &self,
        mailbox: &str,
        url: Url,
    ) -> Result<serde_json::Value, RequestError> {
        let opts = RequestOpts::graph(mailbox);
        let resp = self.execute(opts, |c| c.get(url.clone())).await?;
        Ok(bounded::read_json(resp, bounded::JSON_PAGE).await?)
    }

    /// How many attachments an item has, following `@odata.nextLink` (each page retried on
    /// transient failures: a command, not a step of the core).
    pub async fn count_attachments(&self, item: &ItemRef) -> Result<usize, RequestError> {
        self.visit_attachments(item, 0usize, Retry::Here).await
    }

    /// Hand each attachment on an item to `sink`, following `@odata.nextLink`; each page is
    /// parsed as it arrives (see `listing.rs`), on a blocking thread.
    async fn visit_attachments<S: listing::Sink + Send + 'static>(
        &self,
        item: &ItemRef,
        mut sink: S,
        retry: Retry,
    ) -> Result<S, RequestError> {
        use futures_util::TryStreamExt;
        let mut segs = item.segments();
        segs.push("attachments");
        let mut url = self.url(&segs);
        url.query_pairs_mut().append_pair("$select", "id,name,size");
        let mut next = Some(url);
        let mut pages = 0;
        while let Some(u) = next.take() {
            pages += 1;
            let opts = retry.apply(RequestOpts::graph(&item.user));
            let resp = self.execute(opts, |c| c.get(u.clone())).await?;
            let body = tokio::io::AsyncReadExt::take(
                tokio_util::io::StreamReader::new(
                    resp.bytes_stream().map_err(std::io::Error::other),
                ),
                bounded::LISTING_PAGE,
            );
            let reader = tokio_util::io::SyncIoBridge::new(body);
            let (back, page) = tokio::task::spawn_blocking(move || {
                let page = listing::read_page(reader, &mut sink);
                (sink, page)
            })
            .await
            .map_err(|e| GraphError::new(ErrorClass::Transient, None, "Internal", e.to_string()))?;
            sink = back;
            let next_link = page.map_err(|e| {
                let (code, what) = if e.is_io() {
                    ("ConnectionDropped", "the connection failed while reading")
                } else {
                    ("InvalidResponse", "Graph answered with invalid JSON in")
                };
                GraphError::new(
                    ErrorClass::Transient,
                    None,
                    code,
                    format!("{what} the attachment list: {e}"),
                )
            })?;
            // Follow nextLink only on exactly the base URL's origin (scheme, host, port): it
            // is sent the bearer token. A listing that cannot be read to its end (a nextLink
            // elsewhere, too many pages) is an error, never "not there".
            if let Some(link) = next_link {
                let cut = |code: &str, why: &str| {
                    GraphError::new(ErrorClass::Transient, None, code, why.to_owned())
                };
                match Url::parse(&link) {
                    Ok(u) if bounded::same_origin(&u, &self.base) => {
                        if pages >= MAX_LISTING_PAGES {
                            return Err(cut(
                                "ListingIncomplete",
                                "the attachment list has more than 1,000 pages; it could not be read to its end",
                            )
                            .into());
                        }
                        next = Some(u);
                    }
                    _ => {
                        return Err(cut(
                            "UntrustedNextLink",
                            "refusing the attachment list's @odata.nextLink: it is not on graph.base_url's origin, which alone receives the bearer token",
                        )
                        .into())
                    }
                }
            }
        }
        Ok(sink)
    }

    /// SHA-256 (hex) of an attachment's raw bytes (`$value`), streamed; retried on transient
    /// failures (`verify`).
    pub async fn attachment_sha256(
        &self,
        item: &ItemRef,
        attachment_id: &str,
    ) -> Result<(String, u64), RequestError> {
        self.value_sha256(item, attachment_id, Retry::Here).await
    }

    async fn value_sha256(
        &self,
        item: &ItemRef,
        attachment_id: &str,
        retry: Retry,
    ) -> Result<(String, u64), RequestError> {
        use futures_util::StreamExt;
        use sha2::{Digest, Sha256};
        let mut segs = item.segments();
        segs.extend(["attachments", attachment_id, "$value"]);
        let url = self.url(&segs);
        let opts =
            retry.apply(RequestOpts::graph(&item.user).with_timeout(Duration::from_secs(600)));
        let resp = self.execute(opts, |c| c.get(url.clone())).await?;
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| GraphError::transport(&e))?;
            n += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((hex::encode(hasher.finalize()), n))
    }

    /// An attachment named `name` on `item` whose bytes hash to `sha256`, if there is one.
    /// Outlook's reported `size` is not the raw size, so candidates are confirmed by their bytes.
    /// One request per page and per candidate, none retried: the look is a step of the core,
    /// which decides what a failure costs.
    pub async fn find_attachment(
        &self,
        item: &ItemRef,
        name: &str,
        sha256: &str,
        exclude: &[String],
    ) -> Result<Option<String>, RequestError> {
        let look = NameSearch {
            name: name.to_string(),
            names: Default::default(),
            candidates: Vec::new(),
        };
        let look = self.visit_attachments(item, look, Retry::Caller).await?;
        self.remember_listing(item, look.names);
        // Not one another file of the same message holds (one name, the same bytes).
        let ids = look
            .candidates
            .iter()
            .filter(|c| !exclude.contains(c))
            .map(String::as_str);
        self.confirm_by_bytes(item, ids, sha256).await
    }

    /// As [`GraphClient::find_attachment`], but a listing of the item up to [`LISTING_TTL`] old
    /// (plus what this client attached since) may answer "not there": the look before every
    /// first upload (`if_exists = "skip"`) must not list a growing item once per file. A name
    /// that may be there is looked up fresh and confirmed by its bytes.
    pub async fn find_attachment_recent(
        &self,
        item: &ItemRef,
        name: &str,
        sha256: &str,
        exclude: &[String],
    ) -> Result<Option<String>, RequestError> {
        let absent = {
            let cache = self.listings.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(&item_key(item))
                .filter(|(t, _)| t.elapsed() < LISTING_TTL)
                .is_some_and(|(_, names)| !names.contains(&name_hash(name)))
        };
        if absent {
            return Ok(None);
        }
        self.find_attachment(item, name, sha256, exclude).await
    }

    /// Record an attachment this client made, so recent listings stay complete.
    pub fn note_attached(&self, item: &ItemRef, name: &str) {
        let mut cache = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, names)) = cache.get_mut(&item_key(item)) {
            names.insert(name_hash(name));
        }
    }

    fn remember_listing(&self, item: &ItemRef, names: std::collections::HashSet<u64>) {
        let mut cache = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(item_key(item), (std::time::Instant::now(), names));
    }

    async fn confirm_by_bytes<'a>(
        &self,
        item: &ItemRef,
        ids: impl Iterator<Item = &'a str>,
        sha256: &str,
    ) -> Result<Option<String>, RequestError> {
        for id in ids {
            match self.value_sha256(item, id, Retry::Caller).await {
                Ok((h, _)) if h.eq_ignore_ascii_case(sha256) => return Ok(Some(id.to_string())),
                Ok(_) => {}
                // Deleted since it was listed: not a match.
                Err(RequestError::Graph(e)) if e.status == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Cancel an upload session: DELETE on its URL, without Authorization, retried on
    /// transient failures (commands). A session already gone counts as deleted.
    pub async fn delete_session(
        &self,
        mailbox: &str,
        upload_url: &str,
    ) -> Result<(), RequestError> {
        self.delete_session_with(mailbox, upload_url, Retry::Here)
            .await
    }

    /// As [`GraphClient::delete_session`], one request when `retry` leaves it to the caller.
    pub(crate) async fn delete_session_with(
        &self,
        mailbox: &str,
        upload_url: &str,
        retry: Retry,
    ) -> Result<(), RequestError> {
        let url = self.check_upload_url(upload_url)?;
        let opts = retry.apply(RequestOpts::upload_url(mailbox));
        match self.execute(opts, |c| c.delete(url.clone())).await {
            Ok(_) => Ok(()),
            Err(RequestError::Graph(e)) if e.class == ErrorClass::SessionDead => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Ask an upload session where it stands: the next expected offset, or `None` when the
    /// session is gone (or the server does not answer status requests).
    pub async fn session_offset(
        &self,
        mailbox: &str,
        upload_url: &Url,
    ) -> Result<Option<u64>, RequestError> {
        let opts = RequestOpts::upload_url(mailbox);
        match self.execute(opts, |c| c.get(upload_url.clone())).await {
            Ok(resp) => {
                let body = bounded::read_body(resp, bounded::SMALL_ANSWER).await?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                Ok(ranges::ranges_from_json(&v)
                    .as_deref()
                    .and_then(ranges::next_offset))
            }
            Err(RequestError::Graph(e))
                if e.class == ErrorClass::SessionDead
                    || matches!(e.status, Some(400 | 405 | 501)) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Hosts Outlook upload URLs are served from (global and national clouds).
const MICROSOFT_UPLOAD_HOSTS: &[&str] = &[
    "outlook.office.com",
    "outlook.office365.com",
    "office.com",
    "office365.com",
    "outlook.com",
    "microsoft.com",
    "office365.us",
    "microsoft.us",
    "outlook.cn",
    "chinacloudapi.cn",
    "partner.outlook.cn",
];

async fn error_from_response(resp: reqwest::Response, upload_url: bool) -> GraphError {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| ranges::parse_retry_after(v, SystemTime::now()));
    let www = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Error bodies are small; cap what is read so a hostile answer cannot balloon memory.
    let body = read_capped(resp, 64 * 1024).await;
    let mut e = GraphError::from_response(
        status.as_u16(),
        &body,
        retry_after,
        www.as_deref(),
        upload_url,
    );
    if status == StatusCode::SERVICE_UNAVAILABLE && e.retry_after.is_none() {
        e.class = ErrorClass::Transient;
    }
    e
}

async fn read_capped(resp: reqwest::Response, cap: usize) -> Vec<u8> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(Ok(chunk)) = s.next().await {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    out
}

/// A 401 from Graph gets the advice that fits where the token came from: `outbox login` only
/// helps device-code sign-in.
fn explain_refusal(creds: &Credentials, mut err: GraphError) -> GraphError {
    if err.status == Some(401) && !err.claims_challenge {
        err.sign_in_hint = Some(creds.refused_hint());
    }
    err
}

/// Shorthand for building an error of ours.
pub(crate) fn our_error(class: ErrorClass, code: &str, message: impl Into<String>) -> GraphError {
    GraphError::new(class, None, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> GraphClient {
        let mut s = Settings::defaults("x.toml".into());
        s.graph.base_url = Url::parse(base).unwrap_or_else(|e| panic!("{e}"));
        GraphClient::new(&s, Credentials::fixed("t")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn upload_urls_only_on_microsoft_hosts_or_the_configured_origin() {
        let c = client("https://graph.microsoft.com/v1.0");
        for ok in [
            "https://outlook.office.com/api/v2.0/Users('a')/Messages('b')/AttachmentSessions('c')?authtoken=x",
            "https://outlook.office365.com/api/gv1.0/x?authtoken=y",
            "https://graph.microsoft.com/x",
        ] {
            assert!(c.check_upload_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://outlook.office.com/x",
            "https://evil.example/x?authtoken=y",
            "https://outlook.office.com.evil.example/x",
            "https://notoffice.com/x",
            "file:///etc/passwd",
            "not a url",
        ] {
            let e = c
                .check_upload_url(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(e.code, "UntrustedUploadUrl");
            assert!(!e.to_string().contains("authtoken=y"));
        }
        let sandbox = client("http://127.0.0.1:8080/v1.0");
        assert!(sandbox
            .check_upload_url("http://127.0.0.1:8080/api/v2.0/x?authtoken=z")
            .is_ok());
        assert!(
            sandbox.check_upload_url("http://127.0.0.1:8081/x").is_err(),
            "another port is another origin"
        );
        assert!(sandbox.check_upload_url("http://127.0.0.2:8080/x").is_err());
    }

    #[test]
    fn item_paths_are_percent_encoded_segments() {
        let c = client("https://graph.microsoft.com/v1.0");
        let item = ItemRef::new("a b@contoso.com", ItemKind::Event, "AAMk/x+y=");
        let u = c.url(&item.segments());
        assert_eq!(
            u.as_str(),
            "https://graph.microsoft.com/v1.0/users/a%20b@contoso.com/events/AAMk%2Fx+y="
        );
        let me = ItemRef::new("ME", ItemKind::Message, "id");
        assert_eq!(
            c.url(&me.segments()).as_str(),
            "https://graph.microsoft.com/v1.0/me/messages/id"
        );
    }
}
