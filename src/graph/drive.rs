//! OneDrive uploads and sharing links (for `large = "link"`; GRAPH.md §14, docs/graph-drive.md):
//! a driveItem found by its path, an upload session opened with `conflictBehavior: fail` (never
//! over a file of the user's), fragments of 320 KiB multiples PUT to its URL, its status asked
//! after an answer that may have been lost, and `createLink`.
//!
//! The single steps ([`GraphClient::drive_item`], [`GraphClient::drive_session`],
//! [`GraphClient::drive_fragment`], [`GraphClient::drive_session_next`],
//! [`GraphClient::create_link`]) are one request each and answer typed outcomes with the core's
//! [`Fault`]s, as `steps.rs` does for attachments: what to do next is the caller's. The
//! [`GraphClient::upload_to_drive`] driver strings them together for one file read from a
//! reader ([`GraphClient::resume_drive_upload`] goes on with a session after a restart, hashing
//! the bytes the session has before sending the rest), with the bytes-hashed rule: every byte sent is hashed as it is read (SHA-256 and
//! quickXorHash), the fragment that ends the file is sent only if all of it hashes to the SHA-256
//! the caller expects, and the driveItem Graph answers is accepted only with our size and
//! quickXorHash.

use super::{bounded, fault_of, ranges, ErrorClass, GraphClient, GraphError, RequestError};
use super::{RequestOpts, Retry};
use crate::core::model::{Failure, Fault};
use crate::quickxor::QuickXor;
use sha2::Digest;
use std::io::Read;

/// OneDrive's fragment unit: every fragment but the last is a multiple of it.
pub const FRAGMENT_UNIT: u64 = 320 * 1024;
/// Fragments stay under 60 MiB.
pub const FRAGMENT_MAX: u64 = 60 * 1024 * 1024 - FRAGMENT_UNIT;
/// What Microsoft advises (5–10 MiB): 32 units, 10 MiB.
pub const FRAGMENT_DEFAULT: u64 = 32 * FRAGMENT_UNIT;

/// A file (or folder) on a OneDrive as Graph describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveFile {
    pub id: String,
    pub name: String,
    pub size: u64,
    /// `file.hashes.quickXorHash` (absent on folders, and on personal OneDrive at times).
    pub quick_xor: Option<String>,
    pub folder: bool,
}

impl DriveFile {
    fn from_json(v: &serde_json::Value) -> Option<DriveFile> {
        Some(DriveFile {
            id: v.get("id")?.as_str()?.to_owned(),
            name: v.get("name")?.as_str().unwrap_or_default().to_owned(),
            size: v
                .get("size")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            quick_xor: v
                .pointer("/file/hashes/quickXorHash")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            folder: v.get("folder").is_some(),
        })
    }

    /// Whether this item holds bytes of `size` and `quick_xor`: the only comparison OneDrive
    /// for Business allows without downloading.
    pub fn holds(&self, size: u64, quick_xor: &str) -> bool {
        !self.folder
            && self.size == size
            && self
                .quick_xor
                .as_deref()
                .is_some_and(|q| crate::quickxor::same(q, quick_xor))
    }
}

/// Where a file goes: a user's drive (`me`, a UPN or an id) and a path from its root, `/`
/// between names (`Outbox/invoices/scan.pdf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrivePath {
    pub user: String,
    pub path: String,
}

impl DrivePath {
    pub fn new(user: impl Into<String>, path: impl Into<String>) -> Self {
        DrivePath {
            user: user.into(),
            path: path.into(),
        }
    }

    /// The path's names, empty ones dropped.
    fn names(&self) -> impl Iterator<Item = &str> {
        self.path.split('/').filter(|n| !n.is_empty())
    }

    /// `{me|users/{u}}/drive/root:/a/b.pdf:` followed by `action` (each name percent-encoded
    /// as a path segment; the colons are Graph's path syntax).
    fn url(&self, client: &GraphClient, action: Option<&str>) -> url::Url {
        let mut u = client.url(&if self.user.eq_ignore_ascii_case("me") {
            vec!["me", "drive"]
        } else {
            vec!["users", self.user.as_str(), "drive"]
        });
        let names: Vec<String> = self
            .names()
            .map(|n| url::form_urlencoded::byte_serialize(n.as_bytes()).collect::<String>())
            // form encoding writes a space as `+`; a path wants `%20`.
            .map(|n| n.replace('+', "%20"))
            .collect();
        let mut path = format!("{}/root:/{}:", u.path(), names.join("/"));
        if let Some(a) = action {
            path.push('/');
            path.push_str(a);
        }
        u.set_path(&path);
        u
    }

    /// `{me|users/{u}}/drive/items/{id}/{action}`.
    fn item_url(&self, client: &GraphClient, id: &str, action: &str) -> url::Url {
        let mut segs = if self.user.eq_ignore_ascii_case("me") {
            vec!["me", "drive"]
        } else {
            vec!["users", self.user.as_str(), "drive"]
        };
        segs.extend(["items", id, action]);
        client.url(&segs)
    }
}

/// The answer to `createUploadSession`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriveSessionOutcome {
    /// The upload URL was handed to `save`; `next` is the first byte the session wants.
    Created {
        next: u64,
    },
    /// 409 `nameAlreadyExists`: something is at that path (look at it with `drive_item`).
    NameTaken,
    Failed(Fault),
}

/// The answer to one fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FragmentOutcome {
    /// 202: taken; `next` is the lowest start of `nextExpectedRanges`.
    Accepted {
        next: Option<u64>,
    },
    /// 200/201: the file is made.
    Completed(DriveFile),
    /// 416: this range is not what the session wants (a fragment sent again); ask it.
    RangeRefused,
    /// 404 and the like: the session is gone (expired, deleted, or completed).
    SessionGone,
    /// 409 on the last fragment: the name was taken while we uploaded (`fail`).
    NameTaken,
    Failed(Fault),
}

/// A sharing link made by `createLink`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharingLink {
    pub web_url: String,
    /// 201 (a new link) rather than 200 (the item's existing link of that type and scope).
    pub new: bool,
}

/// The result of [`GraphClient::upload_to_drive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub item: DriveFile,
    pub sha256: String,
    pub quick_xor: String,
}

/// Why [`GraphClient::upload_to_drive`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("{0} exists already on the drive; nothing was overwritten")]
    NameTaken(String),
    #[error("the file changed while it was read: its bytes no longer hash to the SHA-256 recorded; the last fragment was not sent")]
    Changed,
    #[error("reading the file failed: {0}")]
    Read(std::io::Error),
    #[error("the upload session is gone (expired or deleted) before the file was complete")]
    SessionGone,
    #[error("OneDrive answered a driveItem of {size} bytes with quickXorHash {got:?}, not our {want_size} bytes hashing to {want}")]
    Mismatch {
        size: u64,
        got: Option<String>,
        want_size: u64,
        want: String,
    },
    #[error("the upload session disagrees with what was sent: it wants byte {wants}, we sent up to {sent}")]
    Disagrees { wants: u64, sent: u64 },
    #[error("{}", describe(.0))]
    Fault(Fault),
}

fn describe(f: &Fault) -> String {
    match f {
        Fault::Throttled { .. } => "Graph kept throttling the upload".into(),
        Fault::Ambiguous(x) | Fault::Unreachable(x) | Fault::SignIn(x) | Fault::Permanent(x) => {
            format!("{}: {}", x.code, x.message)
        }
    }
}

fn permanent(code: &str, message: impl Into<String>) -> Fault {
    Fault::Permanent(Failure::new(code, message))
}

fn graph_fault(g: GraphError) -> Fault {
    fault_of(&RequestError::Graph(g))
}

impl GraphClient {
    /// An upload URL Graph returned for a drive upload: https on a SharePoint or OneDrive host
    /// (OneDrive for Business serves them from `{tenant}-my.sharepoint.com`), or on
    /// `graph.base_url`'s origin.
    pub fn check_drive_upload_url(&self, raw: &str) -> Result<url::Url, GraphError> {
        self.check_url_among(raw, DRIVE_UPLOAD_HOSTS)
    }

    /// `GET {drive}/root:/{path}`: the item there, or `None` (404 `itemNotFound`).
    pub async fn drive_item(&self, at: &DrivePath) -> Result<Option<DriveFile>, RequestError> {
        let url = at.url(self, None);
        let opts = Retry::Caller.apply(RequestOpts::graph(&at.user));
        match self.execute(opts, |c| c.get(url.clone())).await {
            Ok(resp) => {
                let v = bounded::read_json(resp, bounded::SMALL_ANSWER).await?;
                DriveFile::from_json(&v).map(Some).ok_or_else(|| {
                    GraphError::new(
                        ErrorClass::Transient,
                        None,
                        "InvalidResponse",
                        "Graph answered a driveItem without an id",
                    )
                    .into()
                })
            }
            Err(RequestError::Graph(g)) if g.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST {drive}/root:/{path}:/createUploadSession` with `conflictBehavior: fail`. The
    /// upload URL goes to `save` (never to a log) before this answers `Created`.
    pub async fn drive_session(
        &self,
        at: &DrivePath,
        size: u64,
        save: impl FnOnce(&str) -> Result<(), String>,
    ) -> DriveSessionOutcome {
        let url = at.url(self, Some("createUploadSession"));
        let body = serde_json::json!({
            "item": {
                "@microsoft.graph.conflictBehavior": "fail",
                "fileSize": size,
            }
        });
        let body = bytes::Bytes::from(body.to_string());
        let opts = Retry::Caller
            .apply(RequestOpts::graph(&at.user))
            .with_body(body.len() as u64);
        let resp = match self
            .execute(opts, |c| {
                c.post(url.clone())
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await
        {
            Ok(r) => r,
            Err(RequestError::Graph(g)) if g.status == Some(409) => {
                return DriveSessionOutcome::NameTaken
            }
            Err(e) => return DriveSessionOutcome::Failed(fault_of(&e)),
        };
        let v = match bounded::read_json(resp, bounded::SMALL_ANSWER).await {
            Ok(v) => v,
            Err(g) => return DriveSessionOutcome::Failed(graph_fault(g)),
        };
        let Some(raw) = ranges::string_prop(&v, "uploadUrl") else {
            return DriveSessionOutcome::Failed(permanent(
                "InvalidResponse",
                "createUploadSession returned no uploadUrl",
            ));
        };
        let upload = match self.check_drive_upload_url(raw) {
            Ok(u) => u,
            Err(g) => return DriveSessionOutcome::Failed(graph_fault(g)),
        };
        if let Err(e) = save(upload.as_str()) {
            return DriveSessionOutcome::Failed(Fault::Ambiguous(Failure::new(
                "ledgerWrite",
                format!("cannot save the upload session: {e}"),
            )));
        }
        let next = ranges::ranges_from_json(&v)
            .as_deref()
            .and_then(ranges::next_offset)
            .unwrap_or(0);
        DriveSessionOutcome::Created { next }
    }

    /// PUT `fragment` at `offset` of a `total`-byte drive upload (no Authorization).
    pub async fn drive_fragment(
        &self,
        user: &str,
        upload_url: &str,
        offset: u64,
        fragment: bytes::Bytes,
        total: u64,
    ) -> FragmentOutcome {
        let url = match self.check_drive_upload_url(upload_url) {
            Ok(u) => u,
            Err(g) => return FragmentOutcome::Failed(graph_fault(g)),
        };
        let len = fragment.len() as u64;
        if len == 0 || offset + len > total {
            return FragmentOutcome::Failed(permanent(
                "internal",
                format!("a fragment of {len} bytes at {offset} of {total}"),
            ));
        }
        let range = format!("bytes {}-{}/{}", offset, offset + len - 1, total);
        let opts = Retry::Caller.apply(RequestOpts::upload_url(user).with_effect());
        let result = self
            .execute(opts, |c| {
                c.put(url.clone())
                    .header("content-range", range.as_str())
                    .header("content-length", len)
                    .body(fragment.clone())
            })
            .await;
        match result {
            Ok(resp) if matches!(resp.status().as_u16(), 200 | 201) => {
                match bounded::read_json(resp, bounded::SMALL_ANSWER).await {
                    Ok(v) => match DriveFile::from_json(&v) {
                        Some(f) => FragmentOutcome::Completed(f),
                        // Made, but we cannot name it: the look by path finds it.
                        None => FragmentOutcome::Failed(Fault::Ambiguous(Failure::new(
                            "InvalidResponse",
                            "the last fragment was answered without a driveItem",
                        ))),
                    },
                    Err(g) => FragmentOutcome::Failed(Fault::Ambiguous(Failure::new(
                        g.code.clone(),
                        g.to_string(),
                    ))),
                }
            }
            Ok(resp) => {
                let v = bounded::read_json(resp, bounded::SMALL_ANSWER)
                    .await
                    .unwrap_or(serde_json::Value::Null);
                FragmentOutcome::Accepted {
                    next: ranges::ranges_from_json(&v)
                        .as_deref()
                        .and_then(ranges::next_offset),
                }
            }
            Err(RequestError::Graph(g)) if g.status == Some(416) => FragmentOutcome::RangeRefused,
            Err(RequestError::Graph(g)) if g.class == ErrorClass::SessionDead => {
                FragmentOutcome::SessionGone
            }
            Err(RequestError::Graph(g)) if g.status == Some(409) => FragmentOutcome::NameTaken,
            Err(e) => FragmentOutcome::Failed(fault_of(&e)),
        }
    }

    /// GET a drive upload URL: the next byte it wants (`Ok(None)`: gone).
    pub async fn drive_session_next(
        &self,
        user: &str,
        upload_url: &str,
    ) -> Result<Option<u64>, Fault> {
        let url = self
            .check_drive_upload_url(upload_url)
            .map_err(graph_fault)?;
        let opts = Retry::Caller.apply(RequestOpts::upload_url(user));
        match self.execute(opts, |c| c.get(url.clone())).await {
            Ok(resp) => {
                let v = bounded::read_json(resp, bounded::SMALL_ANSWER)
                    .await
                    .map_err(graph_fault)?;
                ranges::ranges_from_json(&v)
                    .as_deref()
                    .and_then(ranges::next_offset)
                    .map(Some)
                    .ok_or_else(|| {
                        Fault::Ambiguous(Failure::new(
                            "InvalidResponse",
                            "the upload session's status has no nextExpectedRanges",
                        ))
                    })
            }
            Err(RequestError::Graph(g)) if g.class == ErrorClass::SessionDead => Ok(None),
            Err(e) => Err(fault_of(&e)),
        }
    }

    /// DELETE a drive upload URL (a session already gone counts as deleted).
    pub async fn drive_session_delete(&self, user: &str, upload_url: &str) -> Result<(), Fault> {
        let url = self
            .check_drive_upload_url(upload_url)
            .map_err(graph_fault)?;
        let opts = Retry::Caller.apply(RequestOpts::upload_url(user));
        match self.execute(opts, |c| c.delete(url.clone())).await {
            Ok(_) => Ok(()),
            Err(RequestError::Graph(g)) if g.class == ErrorClass::SessionDead => Ok(()),
            Err(e) => Err(fault_of(&e)),
        }
    }

    /// `POST {drive}/items/{id}/createLink {"type": "view", "scope", "expirationDateTime"?}`:
    /// repeatable (Graph answers 200 with the link it made before).
    pub async fn create_link(
        &self,
        at: &DrivePath,
        item_id: &str,
        scope: &str,
        expires: Option<&str>,
    ) -> Result<SharingLink, Fault> {
        let url = at.item_url(self, item_id, "createLink");
        let mut body = serde_json::json!({ "type": "view", "scope": scope });
        if let Some(e) = expires {
            body["expirationDateTime"] = serde_json::json!(e);
        }
        let body = bytes::Bytes::from(body.to_string());
        let opts = Retry::Caller
            .apply(RequestOpts::graph(&at.user))
            .with_body(body.len() as u64);
        let resp = self
            .execute(opts, |c| {
                c.post(url.clone())
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await
            .map_err(|e| fault_of(&e))?;
        let new = resp.status().as_u16() == 201;
        let v = bounded::read_json(resp, bounded::SMALL_ANSWER)
            .await
            .map_err(|g| Fault::Ambiguous(Failure::new(g.code.clone(), g.to_string())))?;
        match v
            .pointer("/link/webUrl")
            .and_then(serde_json::Value::as_str)
        {
            Some(u) => Ok(SharingLink {
                web_url: u.to_owned(),
                new,
            }),
            // The link may exist: asking again answers it (200).
            None => Err(Fault::Ambiguous(Failure::new(
                "InvalidResponse",
                "createLink answered without link.webUrl",
            ))),
        }
    }

    /// Upload `size` bytes from `reader` to `at` (a new file: `fail` if the name is taken) in
    /// fragments of `fragment` bytes (rounded down to 320 KiB multiples, at least one unit).
    /// Each answer that may have been lost is followed by a status GET; the last one, when the
    /// session is gone after it, by a look at the path (the file is ours only with our size and
    /// quickXorHash). `expect_sha256`: the bytes must hash to it, or the last fragment is not
    /// sent. Transient failures are retried with the client's policy.
    pub async fn upload_to_drive<R: Read + Send + 'static>(
        &self,
        at: &DrivePath,
        reader: R,
        size: u64,
        expect_sha256: Option<&str>,
        fragment: u64,
    ) -> Result<Uploaded, DriveError> {
        let unit =
            (fragment / FRAGMENT_UNIT).clamp(1, FRAGMENT_MAX / FRAGMENT_UNIT) * FRAGMENT_UNIT;
        let mut attempt = 0u32;
        let upload_url = loop {
            attempt += 1;
            let mut saved = None;
            let out = self
                .drive_session(at, size, |u| {
                    saved = Some(u.to_owned());
                    Ok(())
                })
                .await;
            // A session made by a create whose answer was lost is never used: it expires.
            let (fault, wait) = match out {
                DriveSessionOutcome::Created { next: 0 } => match saved {
                    Some(u) => break u,
                    None => return Err(DriveError::Fault(permanent("internal", "no upload URL"))),
                },
                DriveSessionOutcome::Created { next } => {
                    return Err(DriveError::Disagrees {
                        wants: next,
                        sent: 0,
                    })
                }
                DriveSessionOutcome::NameTaken => {
                    return Err(DriveError::NameTaken(at.path.clone()))
                }
                DriveSessionOutcome::Failed(f @ Fault::Throttled { retry_after_ms }) => {
                    (f, retry_after_ms.map(std::time::Duration::from_millis))
                }
                DriveSessionOutcome::Failed(f @ (Fault::Ambiguous(_) | Fault::Unreachable(_))) => {
                    (f, None)
                }
                DriveSessionOutcome::Failed(f) => return Err(DriveError::Fault(f)),
            };
            match self.retry_policy().delay(attempt, wait) {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(DriveError::Fault(fault)),
            }
        };
        let mut file = Hashing::new(reader);
        self.send_rest(at, &upload_url, &mut file, size, expect_sha256, unit)
            .await
    }

    /// Go on with a drive upload after a restart: the session at `upload_url` says where it
    /// stands; the bytes before that are read from `reader` and hashed (not sent), the rest sent
    /// as [`GraphClient::upload_to_drive`] does. A session already gone is a finished upload if
    /// the file at `at` holds all of `reader`'s bytes (`Uploaded`), else `SessionGone` (start
    /// again with a new session).
    pub async fn resume_drive_upload<R: Read + Send + 'static>(
        &self,
        at: &DrivePath,
        upload_url: &str,
        reader: R,
        size: u64,
        expect_sha256: Option<&str>,
        fragment: u64,
    ) -> Result<Uploaded, DriveError> {
        let unit =
            (fragment / FRAGMENT_UNIT).clamp(1, FRAGMENT_MAX / FRAGMENT_UNIT) * FRAGMENT_UNIT;
        let mut file = Hashing::new(reader);
        let mut attempt = 0u32;
        let next = loop {
            attempt += 1;
            let (fault, wait) = match self.drive_session_next(&at.user, upload_url).await {
                Ok(n) => break n,
                Err(f @ Fault::Throttled { retry_after_ms }) => {
                    (f, retry_after_ms.map(std::time::Duration::from_millis))
                }
                Err(f @ (Fault::Ambiguous(_) | Fault::Unreachable(_))) => (f, None),
                Err(f) => return Err(DriveError::Fault(f)),
            };
            match self.retry_policy().delay(attempt, wait) {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(DriveError::Fault(fault)),
            }
        };
        match next {
            Some(n) if n <= size => {
                file.skip_to(n, unit).await?;
                self.send_rest(at, upload_url, &mut file, size, expect_sha256, unit)
                    .await
            }
            Some(n) => Err(DriveError::Disagrees { wants: n, sent: 0 }),
            None => {
                file.skip_to(size, unit).await?;
                file.check(expect_sha256)?;
                match self.drive_item(at).await {
                    Ok(Some(item)) if item.holds(size, &file.qx.base64()) => Ok(file.done(item)),
                    Ok(_) => Err(DriveError::SessionGone),
                    Err(e) => Err(DriveError::Fault(fault_of(&e))),
                }
            }
        }
    }

    /// Send `file` from where it was read to (`file.read`) to `size`, a fragment of `unit` at a
    /// time, the last only if all of it hashes to `expect_sha256`.
    async fn send_rest<R: Read + Send + 'static>(
        &self,
        at: &DrivePath,
        upload_url: &str,
        file: &mut Hashing<R>,
        size: u64,
        expect_sha256: Option<&str>,
        unit: u64,
    ) -> Result<Uploaded, DriveError> {
        while file.read < size {
            let offset = file.read;
            let want = unit.min(size - offset);
            // The bytes sent are the bytes hashed.
            let buf = file.next(want).await?;
            if offset + want == size {
                if let Err(e) = file.check(expect_sha256) {
                    let _ = self.drive_session_delete(&at.user, upload_url).await;
                    return Err(e);
                }
            }
            let piece = bytes::Bytes::from(buf);
            if let Some(item) = self
                .send_fragment(at, upload_url, offset, piece, size, &file.qx)
                .await?
            {
                return Ok(file.done(item));
            }
        }
        Err(DriveError::Disagrees {
            wants: size,
            sent: size,
        })
    }

    /// One fragment until the session has it: `Some(item)` when it ended the file.
    async fn send_fragment(
        &self,
        at: &DrivePath,
        upload_url: &str,
        offset: u64,
        piece: bytes::Bytes,
        size: u64,
        qx_so_far: &QuickXor,
    ) -> Result<Option<DriveFile>, DriveError> {
        let end = offset + piece.len() as u64;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = self
                .drive_fragment(&at.user, upload_url, offset, piece.clone(), size)
                .await;
            let wait = match outcome {
                FragmentOutcome::Completed(item) if end == size => {
                    return match item.holds(size, &qx_so_far.base64()) {
                        true => Ok(Some(item)),
                        false => Err(DriveError::Mismatch {
                            size: item.size,
                            got: item.quick_xor,
                            want_size: size,
                            want: qx_so_far.base64(),
                        }),
                    }
                }
                FragmentOutcome::Completed(_) => {
                    return Err(DriveError::Disagrees {
                        wants: size,
                        sent: end,
                    })
                }
                FragmentOutcome::Accepted { next: Some(n) } if n == end => return Ok(None),
                FragmentOutcome::Accepted { next: Some(n) } => {
                    return Err(DriveError::Disagrees {
                        wants: n,
                        sent: end,
                    })
                }
                FragmentOutcome::NameTaken => return Err(DriveError::NameTaken(at.path.clone())),
                FragmentOutcome::Failed(Fault::Permanent(f))
                | FragmentOutcome::Failed(Fault::SignIn(f)) => {
                    return Err(DriveError::Fault(Fault::Permanent(f)))
                }
                FragmentOutcome::Failed(Fault::Throttled { retry_after_ms }) => {
                    retry_after_ms.map(std::time::Duration::from_millis)
                }
                // It may have been taken, or refused as sent before, or taken without saying
                // where the session stands now: the session says which.
                FragmentOutcome::Accepted { next: None }
                | FragmentOutcome::RangeRefused
                | FragmentOutcome::SessionGone
                | FragmentOutcome::Failed(_) => {
                    match self.drive_session_next(&at.user, upload_url).await {
                        Ok(Some(n)) if n == end => return Ok(None),
                        Ok(Some(n)) if n == offset => None,
                        Ok(Some(n)) => {
                            return Err(DriveError::Disagrees {
                                wants: n,
                                sent: end,
                            })
                        }
                        // Gone after the last fragment: made, if the file at the path is ours.
                        Ok(None) if end == size => match self.drive_item(at).await {
                            Ok(Some(item)) if item.holds(size, &qx_so_far.base64()) => {
                                return Ok(Some(item))
                            }
                            Ok(_) => return Err(DriveError::SessionGone),
                            Err(e) => {
                                tracing::debug!("looking for the uploaded file failed: {e}");
                                None
                            }
                        },
                        Ok(None) => return Err(DriveError::SessionGone),
                        Err(f) => {
                            tracing::debug!("asking the upload session failed: {}", describe(&f));
                            None
                        }
                    }
                }
            };
            match self.retry_policy().delay(attempt, wait) {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    return Err(DriveError::Fault(Fault::Ambiguous(Failure::new(
                        "retriesExhausted",
                        format!(
                            "the fragment at {offset} was not confirmed after {attempt} attempts"
                        ),
                    ))))
                }
            }
        }
    }
}

/// A file read once, in order, every byte hashed as it is read (SHA-256 and quickXorHash); the
/// reads run on a blocking thread.
struct Hashing<R> {
    reader: Option<R>,
    sha: sha2::Sha256,
    qx: QuickXor,
    /// Bytes read (and hashed) so far.
    read: u64,
}

impl<R: Read + Send + 'static> Hashing<R> {
    fn new(reader: R) -> Self {
        Hashing {
            reader: Some(reader),
            sha: sha2::Sha256::new(),
            qx: QuickXor::new(),
            read: 0,
        }
    }

    /// The next `want` bytes, hashed. Fewer than that (the file shrank) is `Changed`.
    async fn next(&mut self, want: u64) -> Result<Vec<u8>, DriveError> {
        let Some(r) = self.reader.take() else {
            return Err(DriveError::Read(std::io::Error::other("reader lost")));
        };
        let (r, buf) = tokio::task::spawn_blocking(move || {
            let mut r = r;
            let mut buf = Vec::with_capacity(want as usize);
            let got = (&mut r).take(want).read_to_end(&mut buf);
            (r, got.map(|_| buf))
        })
        .await
        .map_err(|e| DriveError::Read(std::io::Error::other(e.to_string())))?;
        self.reader = Some(r);
        let buf = buf.map_err(DriveError::Read)?;
        if buf.len() as u64 != want {
            return Err(DriveError::Changed);
        }
        self.sha.update(&buf);
        self.qx.update(&buf);
        self.read += want;
        Ok(buf)
    }

    /// Read and hash up to byte `to`, `unit` at a time, sending nothing.
    async fn skip_to(&mut self, to: u64, unit: u64) -> Result<(), DriveError> {
        while self.read < to {
            self.next(unit.min(to - self.read)).await?;
        }
        Ok(())
    }

    /// All bytes read hash to `expect` (when given).
    fn check(&self, expect: Option<&str>) -> Result<(), DriveError> {
        let got = hex::encode(self.sha.clone().finalize());
        match expect {
            Some(e) if !e.eq_ignore_ascii_case(&got) => Err(DriveError::Changed),
            _ => Ok(()),
        }
    }

    fn done(&self, item: DriveFile) -> Uploaded {
        Uploaded {
            item,
            sha256: hex::encode(self.sha.clone().finalize()),
            quick_xor: self.qx.base64(),
        }
    }
}

/// Hosts drive upload URLs are served from: SharePoint (OneDrive for Business, every cloud) and
/// consumer OneDrive.
const DRIVE_UPLOAD_HOSTS: &[&str] = &[
    "sharepoint.com",
    "sharepoint.us",
    "sharepoint-mil.us",
    "sharepoint.cn",
    "sharepoint.de",
    "onedrive.com",
    "1drv.com",
    "microsoft.com",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credentials;
    use crate::config::Settings;

    fn client(base: &str) -> GraphClient {
        let mut s = Settings::defaults("x.toml".into());
        s.graph.base_url = url::Url::parse(base).unwrap_or_else(|e| panic!("{e}"));
        GraphClient::new(&s, Credentials::fixed("t")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn paths_are_graph_path_syntax_with_each_name_encoded() {
        let c = client("https://graph.microsoft.com/v1.0");
        let at = DrivePath::new("me", "Outbox/a b/r#1?.pdf");
        assert_eq!(
            at.url(&c, Some("createUploadSession")).as_str(),
            "https://graph.microsoft.com/v1.0/me/drive/root:/Outbox/a%20b/r%231%3F.pdf:/createUploadSession"
        );
        let other = DrivePath::new("a@contoso.com", "/x//y.pdf");
        assert_eq!(
            other.url(&c, None).as_str(),
            "https://graph.microsoft.com/v1.0/users/a@contoso.com/drive/root:/x/y.pdf:"
        );
        assert_eq!(
            other.item_url(&c, "01AB", "createLink").as_str(),
            "https://graph.microsoft.com/v1.0/users/a@contoso.com/drive/items/01AB/createLink"
        );
    }

    #[test]
    fn drive_upload_urls_only_on_sharepoint_onedrive_or_the_configured_origin() {
        let c = client("https://graph.microsoft.com/v1.0");
        assert!(c
            .check_drive_upload_url("https://contoso-my.sharepoint.com/personal/a/_api/v2.0/drive/items/01/uploadSession?guid='x'&tempauth=y")
            .is_ok());
        assert!(c
            .check_drive_upload_url("https://api.onedrive.com/rup/x")
            .is_ok());
        assert!(c
            .check_drive_upload_url("http://contoso-my.sharepoint.com/x")
            .is_err());
        assert!(c
            .check_drive_upload_url("https://sharepoint.com.evil.example/x")
            .is_err());
        assert!(
            c.check_upload_url("https://contoso-my.sharepoint.com/x")
                .is_err(),
            "an Outlook upload URL is never on SharePoint"
        );
    }

    #[test]
    fn an_item_holds_bytes_only_with_their_size_and_quickxorhash() {
        let q = crate::quickxor::of(b"abc");
        let f = DriveFile {
            id: "1".into(),
            name: "a".into(),
            size: 3,
            quick_xor: Some(q.clone()),
            folder: false,
        };
        assert!(f.holds(3, &q));
        assert!(!f.holds(4, &q));
        assert!(!f.holds(3, &crate::quickxor::of(b"abd")));
        assert!(!DriveFile {
            quick_xor: None,
            ..f.clone()
        }
        .holds(3, &q));
        assert!(!DriveFile { folder: true, ..f }.holds(3, &q));
    }
}
