//! Attaching one file: a single POST under 3 MiB, an upload session from 3 MiB to 150 MiB,
//! with every recovery path (fallback from POST to a session, dead sessions recreated,
//! unknown outcomes reconciled against the item before anything is sent again).
//!
//! The caller's [`Journal`] hears of every step before it happens, so the agent can write its
//! intent to the ledger and flush it before each remote effect.

use super::{
    our_error, ranges, ErrorClass, GraphClient, GraphError, ItemRef, RequestError, RequestOpts,
};
use super::{MAX_ATTACHMENT, MAX_REQUEST_BODY, MIN_SESSION, SESSION_THRESHOLD};
use crate::auth::AuthError;
use crate::config::ItemKind;
use base64::Engine;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use std::future::Future;
use std::path::PathBuf;
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How many upload sessions one attach may create before giving up.
const MAX_SESSIONS: u32 = 4;

/// The file to attach, as the caller saw it when it decided to send it.
#[derive(Debug, Clone)]
pub struct FileToSend {
    pub path: PathBuf,
    pub size: u64,
    /// Modification time when hashed; a change during upload stops it.
    pub mtime: Option<SystemTime>,
    /// SHA-256 (hex) of the content: confirms an attachment found on the item is this file.
    pub sha256: FileDigest,
    /// Attachment name.
    pub name: String,
    pub content_type: String,
}

impl FileToSend {
    /// Stat `path` now and start hashing it on a blocking thread: the upload need not wait for
    /// the hash (only a look on the item does), so the two overlap.
    pub async fn from_path(path: PathBuf, name: Option<String>) -> std::io::Result<FileToSend> {
        let meta = tokio::fs::metadata(&path).await?;
        if !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let sha256 = FileDigest::compute(path.clone());
        let name = name.unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into())
        });
        let content_type = mime_guess::from_path(&name)
            .first_or_octet_stream()
            .essence_str()
            .to_string();
        Ok(FileToSend {
            size: meta.len(),
            mtime: meta.modified().ok(),
            sha256,
            name,
            content_type,
            path,
        })
    }

    /// The content's SHA-256 (hex), waiting for it if it is still being computed.
    pub async fn sha256(&self) -> Result<String, AttachError> {
        self.sha256.0.clone().await.map_err(|e| AttachError::File {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })
    }
}

/// A file's SHA-256 (hex): known already, or being computed on a blocking thread (started when
/// made, awaited by whoever needs it first; every clone shares the one result).
#[derive(Clone)]
pub struct FileDigest(Shared<BoxFuture<'static, Result<String, String>>>);

impl FileDigest {
    pub fn known(hex: String) -> Self {
        FileDigest(futures_util::future::ready(Ok(hex)).boxed().shared())
    }

    /// Start hashing `path` now.
    pub fn compute(path: PathBuf) -> Self {
        let task = tokio::spawn(sha256_file(path));
        FileDigest(
            async move {
                match task.await {
                    Ok(Ok(hex)) => Ok(hex),
                    Ok(Err(e)) => Err(format!("cannot read it to hash it: {e}")),
                    Err(e) => Err(format!("hashing it stopped: {e}")),
                }
            }
            .boxed()
            .shared(),
        )
    }
}

impl std::fmt::Debug for FileDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.peek() {
            Some(Ok(hex)) => write!(f, "FileDigest({hex})"),
            Some(Err(e)) => write!(f, "FileDigest(error: {e})"),
            None => f.write_str("FileDigest(pending)"),
        }
    }
}

/// SHA-256 (hex) of a file, read in blocks on a blocking thread.
pub async fn sha256_file(path: PathBuf) -> std::io::Result<String> {
    tokio::task::spawn_blocking(move || {
        use sha2::{Digest, Sha256};
        use std::io::Read;
        let mut f = std::fs::File::open(&path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Where an earlier attempt left off.
#[derive(Debug, Clone)]
pub enum Resume {
    /// Nothing was sent before.
    Fresh,
    /// Something may have been sent before (a crash mid-upload): look on the item first, with a
    /// fresh listing.
    CheckFirst,
    /// Nothing was sent before, but the item may already have this file (another machine, a
    /// lost state dir): look for it first (`if_exists = "skip"`), a recent listing will do.
    SkipIfPresent,
    /// A POST may have reached the server.
    PostMaybeSent,
    /// An upload session was open at this URL.
    Session { upload_url: String },
}

/// Why an attach did not end with an attachment id.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Over 150 MiB: never sent.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Graph(GraphError),
    #[error(transparent)]
    Auth(AuthError),
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file changed (size or time) while it was being sent.
    #[error("{0} changed while it was being sent")]
    Changed(PathBuf),
    /// The journal could not record an intent: nothing was sent after that.
    #[error("cannot record progress in the ledger: {0}")]
    Journal(String),
}

impl From<RequestError> for AttachError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Graph(g) => AttachError::Graph(g),
            RequestError::Auth(a) => AttachError::Auth(a),
        }
    }
}

/// Hears of every step before it is taken. The agent flushes the ledger in each; `send` only
/// draws progress.
pub trait Journal: Send + Sync {
    /// About to POST the whole file.
    fn before_post(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
    /// About to create an upload session.
    fn before_session(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
    /// A session exists at `upload_url`; keep it (it is a secret) before any byte is sent.
    fn session_created(
        &self,
        upload_url: &str,
        expires: Option<&str>,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let _ = (upload_url, expires);
        async { Ok(()) }
    }
    /// About to PUT bytes `offset..offset+len`.
    fn before_chunk(
        &self,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let _ = (offset, len);
        async { Ok(()) }
    }
    /// The server holds the first `committed` bytes.
    fn progress(&self, committed: u64) {
        let _ = committed;
    }
    /// The session is gone (completed, dead or deleted): forget its URL.
    fn session_gone(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
}

/// A journal that records nothing.
pub struct NoJournal;
impl Journal for NoJournal {}

enum SessionEnd {
    Done(String),
    /// The session died; `maybe_complete` when a PUT carrying the last byte went unanswered.
    Dead {
        maybe_complete: bool,
    },
}

impl GraphClient {
    /// Attach `file` to `item` and return the attachment id.
    pub async fn attach<J: Journal>(
        &self,
        item: &ItemRef,
        file: &FileToSend,
        resume: Resume,
        journal: &J,
    ) -> Result<String, AttachError> {
        let id = self.attach_once(item, file, resume, journal).await?;
        self.note_attached(item, &file.name);
        Ok(id)
    }

    async fn attach_once<J: Journal>(
        &self,
        item: &ItemRef,
        file: &FileToSend,
        resume: Resume,
        journal: &J,
    ) -> Result<String, AttachError> {
        if file.size > MAX_ATTACHMENT {
            return Err(AttachError::Rejected(format!(
                "{} is {} bytes, over Graph's 150 MiB ({MAX_ATTACHMENT} bytes) attachment limit; it was not sent",
                file.path.display(),
                file.size
            )));
        }
        // A file larger than the mailbox's whole byte budget starts in an empty window and takes
        // it; any other is paced body by body (see `Pacer`).
        let whole_window = file.size >= crate::graph::SESSION_THRESHOLD
            && self.pacer.take_whole_window(&item.user, file.size).await;
        match resume {
            Resume::Fresh => {}
            Resume::SkipIfPresent => {
                if let Some(id) = self
                    .find_attachment_recent(item, &file.name, &file.sha256().await?)
                    .await?
                {
                    tracing::info!(file = %file.path.display(), "already on the item (if_exists = \"skip\"); not sending it");
                    return Ok(id);
                }
            }
            Resume::CheckFirst | Resume::PostMaybeSent => {
                if let Some(id) = self
                    .find_attachment(item, &file.name, &file.sha256().await?)
                    .await?
                {
                    tracing::info!(file = %file.path.display(), "already attached; not sending again");
                    return Ok(id);
                }
            }
            Resume::Session { upload_url } => {
                if let Some(id) = self
                    .resume_session(item, file, &upload_url, journal, whole_window)
                    .await?
                {
                    return Ok(id);
                }
            }
        }
        if uses_post(file) {
            match self.post_small(item, file, journal).await {
                Err(AttachError::Graph(e))
                    if e.is_request_too_large() && file.size >= MIN_SESSION =>
                {
                    tracing::info!(file = %file.path.display(), "Graph refused the POST as too large; using an upload session");
                }
                other => return other,
            }
        }
        self.upload_with_sessions(item, file, journal, whole_window)
            .await
    }

    /// Continue a session left open by an earlier run; `None` when it is gone and the item does
    /// not hold the file (start over).
    async fn resume_session<J: Journal>(
        &self,
        item: &ItemRef,
        file: &FileToSend,
        upload_url: &str,
        journal: &J,
        whole_window: bool,
    ) -> Result<Option<String>, AttachError> {
        let url = self
            .check_upload_url(upload_url)
            .map_err(AttachError::Graph)?;
        if let Some(offset) = self.session_offset(&item.user, &url).await? {
            tracing::info!(file = %file.path.display(), offset, "resuming the upload session where the server stands");
            journal.progress(offset);
            match self
                .upload_chunks(item, file, &url, offset, journal, whole_window)
                .await?
            {
                SessionEnd::Done(id) => {
                    journal.session_gone().await.map_err(AttachError::Journal)?;
                    return Ok(Some(id));
                }
                SessionEnd::Dead { .. } => {}
            }
        }
        journal.session_gone().await.map_err(AttachError::Journal)?;
        // The session may have completed just before the crash: look before sending again.
        Ok(self
            .find_attachment(item, &file.name, &file.sha256().await?)
            .await?)
    }

    async fn post_small<J: Journal>(
        &self,
        item: &ItemRef,
        file: &FileToSend,
        journal: &J,
    ) -> Result<String, AttachError> {
        let bytes = tokio::fs::read(&file.path)
            .await
            .map_err(|source| AttachError::File {
                path: file.path.clone(),
                source,
            })?;
        if bytes.len() as u64 != file.size {
            return Err(AttachError::Changed(file.path.clone()));
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": file.name,
            "contentType": file.content_type,
            "contentBytes": base64::engine::general_purpose::STANDARD.encode(&bytes),
        }))
        .map_err(|e| AttachError::Journal(e.to_string()))?;
        drop(bytes);
        let body = bytes::Bytes::from(body);
        let mut segs = item.segments();
        segs.push("attachments");
        let url = self.url(&segs);
        let policy = self.retry_policy();
        let mut attempt = 0;
        loop {
            attempt += 1;
            journal.before_post().await.map_err(AttachError::Journal)?;
            let opts = RequestOpts::graph(&item.user)
                .with_effect()
                .with_body(body.len() as u64);
            let result = self
                .execute(opts, |c| {
                    c.post(url.clone())
                        .header("content-type", "application/json")
                        .body(body.clone())
                })
                .await;
            let err = match result {
                Ok(resp) => {
                    let v: serde_json::Value = resp
                        .json()
                        .await
                        .map_err(|e| AttachError::Graph(GraphError::transport(&e)))?;
                    return ranges::string_prop(&v, "id")
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            AttachError::Graph(our_error(
                                ErrorClass::Permanent,
                                "InvalidResponse",
                                "Graph created the attachment but returned no id",
                            ))
                        });
                }
                Err(RequestError::Graph(e)) if e.is_retryable() => e,
                Err(e) => return Err(e.into()),
            };
            // The POST may have reached the server: look before sending it again.
            let Some(wait) = policy.delay(attempt, err.retry_after) else {
                return Err(AttachError::Graph(err));
            };
            tracing::info!(code = %err.code, wait_ms = wait.as_millis() as u64, "POST failed; checking the item before retrying");
            tokio::time::sleep(wait).await;
            if err.status.is_none() || err.status.is_some_and(|s| s >= 500) {
                if let Some(id) = self
                    .find_attachment(item, &file.name, &file.sha256().await?)
                    .await?
                {
                    return Ok(id);
                }
            }
        }
    }

    async fn upload_with_sessions<J: Journal>(
        &self,
        item: &ItemRef,
        file: &FileToSend,
        journal: &J,
        whole_window: bool,
    ) -> Result<String, AttachError> {
        for n in 1..=MAX_SESSIONS {
            journal
                .before_session()
                .await
                .map_err(AttachError::Journal)?;
            let (url, offset) = self.create_session(item, file).await?;
            journal
                .session_created(url.as_str(), None)
                .await
                .map_err(AttachError::Journal)?;
            let end = self
                .upload_chunks(item, file, &url, offset, journal, whole_window)
                .await;
            match end {
                Ok(SessionEnd::Done(id)) => {
                    journal.session_gone().await.map_err(AttachError::Journal)?;
                    return Ok(id);
                }
                Ok(SessionEnd::Dead { maybe_complete }) => {
                    journal.session_gone().await.map_err(AttachError::Journal)?;
                    if maybe_complete {
                        if let Some(id) = self
                            .find_attachment(item, &file.name, &file.sha256().await?)
                            .await?
                        {
                            return Ok(id);
                        }
                    }
                    tracing::info!(file = %file.path.display(), session = n, "upload session died; creating a new one");
                }
                Err(AttachError::Graph(e)) if e.is_retryable() => {
                    // Transient (server unreachable, throttled past our retries): the session
                    // and the bytes it holds stay; the entry's next attempt resumes it.
                    return Err(AttachError::Graph(e));
                }
                Err(e) => {
                    // Leave no session open behind a failure (best effort).
                    if let Err(de) = self.delete_session(&item.user, url.as_str()).await {
                        tracing::debug!(error = %de, "could not delete the upload session");
                    }
                    journal.session_gone().await.map_err(AttachError::Journal)?;
                    return Err(e);
                }
            }
        }
        Err(AttachError::Graph(our_error(
            ErrorClass::Transient,
            "UploadSessionsExhausted",
            format!("{MAX_SESSIONS} upload sessions in a row died before the upload finished"),
        )))
    }

    async fn create_session(
        &self,
        item: &ItemRef,
        file: &FileToSend,
    ) -> Result<(url::Url, u64), AttachError> {
        let mut segs = item.segments();
        segs.extend(["attachments", "createUploadSession"]);
        let url = self.url(&segs);
        let body = serde_json::json!({
            "AttachmentItem": {
                "attachmentType": "file",
                "name": file.name,
                "size": file.size,
                "contentType": file.content_type,
            }
        });
        let body = bytes::Bytes::from(body.to_string());
        let opts = RequestOpts::graph(&item.user).with_body(body.len() as u64);
        let resp = match self
            .execute(opts, |c| {
                c.post(url.clone())
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await
        {
            Ok(r) => r,
            Err(RequestError::Graph(e))
                if e.status == Some(403) && !item.user.eq_ignore_ascii_case("me") =>
            {
                let mut e = e;
                e.message = format!("{} — {}", e.message, super::error::SHARED_MAILBOX_403);
                return Err(AttachError::Graph(e));
            }
            Err(e) => return Err(e.into()),
        };
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| AttachError::Graph(GraphError::transport(&e)))?;
        let raw = ranges::string_prop(&v, "uploadUrl").ok_or_else(|| {
            AttachError::Graph(our_error(
                ErrorClass::Permanent,
                "InvalidResponse",
                "createUploadSession returned no uploadUrl",
            ))
        })?;
        let upload = self.check_upload_url(raw).map_err(AttachError::Graph)?;
        let offset = ranges::ranges_from_json(&v)
            .as_deref()
            .and_then(ranges::next_offset)
            .unwrap_or(0);
        Ok((upload, offset))
    }

    /// PUT chunks from `offset` until the server answers 201.
    async fn upload_chunks<J: Journal>(
        &self,
        item: &ItemRef,
        file: &FileToSend,
        url: &url::Url,
        mut offset: u64,
        journal: &J,
        whole_window: bool,
    ) -> Result<SessionEnd, AttachError> {
        let mut f =
            tokio::fs::File::open(&file.path)
                .await
                .map_err(|source| AttachError::File {
                    path: file.path.clone(),
                    source,
                })?;
        let mut buf = bytes::BytesMut::with_capacity(self.chunk_size() as usize);
        let policy = self.retry_policy();
        let mut last_sent = false;
        let mut failures = 0u32;
        loop {
            if offset >= file.size {
                // The server wants nothing more yet never said 201: only the item can tell.
                return Ok(SessionEnd::Dead {
                    maybe_complete: true,
                });
            }
            let want = self.chunk_size().min(file.size - offset);
            // Held until the chunk's answer is in (see `pacing::Stamp`).
            let (len, _stamp) = self.admit_chunk(&item.user, want, whole_window).await;
            self.check_unchanged(file).await?;
            let chunk = read_chunk(&mut f, &mut buf, offset, len)
                .await
                .map_err(|source| AttachError::File {
                    path: file.path.clone(),
                    source,
                })?;
            journal
                .before_chunk(offset, len)
                .await
                .map_err(AttachError::Journal)?;
            let is_last = offset + len == file.size;
            let range = format!("bytes {}-{}/{}", offset, offset + len - 1, file.size);
            let opts = RequestOpts::upload_url(&item.user).with_effect();
            let result = self
                .execute(opts, |c| {
                    c.put(url.clone())
                        .header("content-range", range.as_str())
                        .header("content-length", len)
                        .header("content-type", "application/octet-stream")
                        .body(chunk.clone())
                })
                .await;
            match result {
                Ok(resp) if resp.status().as_u16() == 201 => {
                    let loc = resp
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    journal.progress(file.size);
                    if let Some(id) = loc.as_deref().and_then(ranges::attachment_id_from_location) {
                        return Ok(SessionEnd::Done(id));
                    }
                    // Completed without a usable Location: find it on the item by its bytes.
                    return match self
                        .find_attachment(item, &file.name, &file.sha256().await?)
                        .await?
                    {
                        Some(id) => Ok(SessionEnd::Done(id)),
                        None => Err(AttachError::Graph(our_error(
                            ErrorClass::Permanent,
                            "InvalidResponse",
                            "the upload completed without a Location header",
                        ))),
                    };
                }
                Ok(resp) => {
                    let body = resp.bytes().await.unwrap_or_default();
                    let v: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    let next = ranges::ranges_from_json(&v)
                        .as_deref()
                        .and_then(ranges::next_offset)
                        .unwrap_or(offset + len);
                    offset = next;
                    failures = 0;
                    journal.progress(offset);
                }
                Err(RequestError::Auth(a)) => return Err(AttachError::Auth(a)),
                Err(RequestError::Graph(e)) => {
                    last_sent |= is_last && e.status.is_none_or(|s| s >= 500);
                    match e.class {
                        ErrorClass::Throttled | ErrorClass::Transient => {
                            failures += 1;
                            let Some(wait) = policy.delay(failures, e.retry_after) else {
                                return Err(AttachError::Graph(e));
                            };
                            tracing::info!(code = %e.code, wait_ms = wait.as_millis() as u64, offset, "chunk failed; asking the session where it stands");
                            tokio::time::sleep(wait).await;
                            match self.session_offset(&item.user, url).await? {
                                Some(o) => offset = o,
                                None if e.status.is_some() && e.status != Some(500) => {} // refused, not taken: resend it
                                None => {
                                    return Ok(SessionEnd::Dead {
                                        maybe_complete: last_sent,
                                    })
                                }
                            }
                        }
                        ErrorClass::SessionDead => {
                            if e.status == Some(416) {
                                if let Some(o) = self.session_offset(&item.user, url).await? {
                                    if o != offset {
                                        offset = o;
                                        continue;
                                    }
                                }
                            }
                            tracing::info!(code = %e.code, status = ?e.status, "upload session is gone");
                            return Ok(SessionEnd::Dead {
                                maybe_complete: last_sent,
                            });
                        }
                        ErrorClass::SignIn | ErrorClass::Permanent => {
                            return Err(AttachError::Graph(e))
                        }
                    }
                }
            }
        }
    }

    async fn check_unchanged(&self, file: &FileToSend) -> Result<(), AttachError> {
        let meta = tokio::fs::metadata(&file.path)
            .await
            .map_err(|source| AttachError::File {
                path: file.path.clone(),
                source,
            })?;
        if meta.len() != file.size || (file.mtime.is_some() && meta.modified().ok() != file.mtime) {
            return Err(AttachError::Changed(file.path.clone()));
        }
        Ok(())
    }
}

/// POST when the file is under 3 MiB and its JSON body fits Graph's 4 MiB request limit (long
/// names can push it over), or when it is too small for a session.
pub fn uses_post(file: &FileToSend) -> bool {
    if file.size < MIN_SESSION {
        return true;
    }
    file.size < SESSION_THRESHOLD && post_body_len(file) <= MAX_REQUEST_BODY
}

/// Length of the POST body for `file` (base64 plus the JSON around it, names escaped).
pub fn post_body_len(file: &FileToSend) -> u64 {
    let b64 = file.size.div_ceil(3) * 4;
    let esc = |s: &str| {
        serde_json::to_string(s)
            .map(|x| x.len() as u64)
            .unwrap_or(s.len() as u64 * 6 + 2)
    };
    let fixed = r##"{"@odata.type":"#microsoft.graph.fileAttachment","name":,"contentType":,"contentBytes":""}"##.len() as u64;
    fixed + esc(&file.name) + esc(&file.content_type) + b64
}

/// Read `len` bytes at `offset` into `buf` and hand them out as `Bytes`. Once the previous
/// chunk's `Bytes` are dropped, `buf` gets its allocation back: one chunk buffer per upload.
async fn read_chunk(
    f: &mut tokio::fs::File,
    buf: &mut bytes::BytesMut,
    offset: u64,
    len: u64,
) -> std::io::Result<bytes::Bytes> {
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    buf.clear();
    buf.resize(len as usize, 0);
    f.read_exact(&mut buf[..]).await?;
    Ok(buf.split().freeze())
}

/// Graph's path word for an item kind (for messages shown to users).
pub fn kind_word(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Message => "message",
        ItemKind::Event => "event",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64, name: &str) -> FileToSend {
        FileToSend {
            path: "x".into(),
            size,
            mtime: None,
            sha256: FileDigest::known(String::new()),
            name: name.into(),
            content_type: "application/pdf".into(),
        }
    }

    #[test]
    fn size_rule() {
        assert!(uses_post(&file(0, "a.pdf")));
        assert!(uses_post(&file(3 * 1024 * 1024 - 200, "a.pdf")));
        // 3 MiB - 1 encodes to exactly 4 MiB of base64: with the JSON around it the body is over
        // Graph's limit, so it goes by session (GRAPH.md §0).
        assert!(!uses_post(&file(3 * 1024 * 1024 - 1, "a.pdf")));
        assert!(!uses_post(&file(3 * 1024 * 1024, "a.pdf")));
        // A long name pushes a file just under 3 MiB past the 4 MiB body limit.
        let long = "n".repeat(2000) + ".pdf";
        assert!(!uses_post(&file(3 * 1024 * 1024 - 10, &long)));
        // Under the session minimum a POST is the only way, whatever the name.
        assert!(uses_post(&file(MIN_SESSION - 1, &long)));
    }

    #[test]
    fn post_body_len_matches_serde() {
        let f = file(10, "ré\"sumé.pdf");
        let body = serde_json::to_vec(&serde_json::json!({
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": f.name,
            "contentType": f.content_type,
            "contentBytes": base64::engine::general_purpose::STANDARD.encode([0u8; 10]),
        }))
        .unwrap_or_default();
        assert_eq!(post_body_len(&f), body.len() as u64);
    }
}
