//! The remote steps of an upload, one request each, answering with the core's typed outcomes:
//! POST an attachment, create an upload session, PUT one chunk, ask a session where it stands,
//! delete a session, look on the item for an attachment, delete an attachment. No step retries
//! or sleeps: what to do after an answer is the state machine's (`core::machine`). The pacer
//! (per-mailbox concurrency and budgets) and the one token refresh on a 401 stay here.
//!
//! [`fault_of`] is the one place where an error becomes a [`Fault`].

use super::{error::SHARED_MAILBOX_403, ranges, ErrorClass, GraphClient, GraphError, ItemRef};
use super::{RequestError, RequestOpts};
use crate::auth::AuthError;
use crate::core::model::{
    AskOutcome, ChunkOutcome, DeleteOutcome, Failure, Fault, LookOutcome, PostOutcome,
    SessionOutcome, Target,
};
use base64::Engine;

impl From<&Target> for ItemRef {
    fn from(t: &Target) -> ItemRef {
        ItemRef::new(t.user.clone(), t.kind, t.item_id.clone())
    }
}

/// How an error ends a step, for the core: throttled (wait as told), unreachable (nothing was
/// taken, not the file's fault, not sign-in either), ambiguous (it may have taken effect), a
/// sign-in problem, or permanent (Graph's code and message, with advice where there is some).
pub fn fault_of(e: &RequestError) -> Fault {
    match e {
        RequestError::Auth(a) => match a {
            // The identity platform could not be reached: an outage, not a sign-in problem.
            AuthError::Unavailable(m) => Fault::Unreachable(Failure::new("signInUnavailable", m)),
            other => Fault::SignIn(Failure::new("signInNeeded", other.to_string())),
        },
        RequestError::Graph(g) => graph_fault(g),
    }
}

fn graph_fault(g: &GraphError) -> Fault {
    let failure = || Failure::new(g.code.clone(), g.to_string());
    match g.class {
        ErrorClass::Throttled => Fault::Throttled {
            retry_after_ms: g
                .retry_after
                .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
        },
        ErrorClass::Transient if g.status.is_none() && g.code == "ConnectionFailed" => {
            Fault::Unreachable(failure())
        }
        ErrorClass::Transient => Fault::Ambiguous(failure()),
        ErrorClass::SignIn => Fault::SignIn(failure()),
        ErrorClass::SessionDead | ErrorClass::Permanent => Fault::Permanent(failure()),
    }
}

/// A step's request: no retries here (the core decides), the 401 refresh stays.
fn once(opts: RequestOpts<'_>) -> RequestOpts<'_> {
    RequestOpts {
        retry: false,
        ..opts
    }
}

fn ambiguous(code: &str, message: impl Into<String>) -> Fault {
    Fault::Ambiguous(Failure::new(code, message))
}

/// The content type Graph is told for an attachment name.
pub fn content_type(name: &str) -> String {
    mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

impl GraphClient {
    /// POST `bytes` (the whole file, already read and checked against its hash) as a
    /// `fileAttachment`.
    pub async fn post_attachment(&self, target: &Target, name: &str, bytes: &[u8]) -> PostOutcome {
        let item = ItemRef::from(target);
        let body = match serde_json::to_vec(&serde_json::json!({
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": name,
            "contentType": content_type(name),
            "contentBytes": base64::engine::general_purpose::STANDARD.encode(bytes),
        })) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                return PostOutcome::Failed(Fault::Permanent(Failure::new(
                    "internal",
                    e.to_string(),
                )))
            }
        };
        let mut segs = item.segments();
        segs.push("attachments");
        let url = self.url(&segs);
        let opts = once(RequestOpts::graph(&item.user).with_effect()).with_body(body.len() as u64);
        let result = self
            .execute(opts, |c| {
                c.post(url.clone())
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await;
        match result {
            Ok(resp) => {
                let v: serde_json::Value = match resp.json().await {
                    Ok(v) => v,
                    Err(e) => return PostOutcome::Failed(graph_fault(&GraphError::transport(&e))),
                };
                match ranges::string_prop(&v, "id") {
                    Some(id) => {
                        self.note_attached(&item, name);
                        PostOutcome::Created {
                            attachment_id: id.to_owned(),
                        }
                    }
                    // It was created, but we cannot name it: the look finds it.
                    None => PostOutcome::Failed(ambiguous(
                        "InvalidResponse",
                        "Graph created the attachment but returned no id",
                    )),
                }
            }
            Err(RequestError::Graph(g)) if g.is_request_too_large() => PostOutcome::TooLarge,
            Err(e) => PostOutcome::Failed(fault_of(&e)),
        }
    }

    /// createUploadSession for `name` of `size` bytes. The URL is handed to `save` (the session
    /// store) before this answers `Created`; a URL that cannot be saved is not used.
    pub async fn create_session(
        &self,
        target: &Target,
        name: &str,
        size: u64,
        save: impl FnOnce(&str) -> Result<(), String>,
    ) -> SessionOutcome {
        let item = ItemRef::from(target);
        let mut segs = item.segments();
        segs.extend(["attachments", "createUploadSession"]);
        let url = self.url(&segs);
        let body = serde_json::json!({
            "AttachmentItem": {
                "attachmentType": "file",
                "name": name,
                "size": size,
                "contentType": content_type(name),
            }
        });
        let body = bytes::Bytes::from(body.to_string());
        let opts = once(RequestOpts::graph(&item.user)).with_body(body.len() as u64);
        let resp = match self
            .execute(opts, |c| {
                c.post(url.clone())
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await
        {
            Ok(r) => r,
            Err(RequestError::Graph(mut g))
                if g.status == Some(403) && !item.user.eq_ignore_ascii_case("me") =>
            {
                g.message = format!("{} — {SHARED_MAILBOX_403}", g.message);
                return SessionOutcome::Failed(graph_fault(&g));
            }
            Err(e) => return SessionOutcome::Failed(fault_of(&e)),
        };
        let v: serde_json::Value = match resp.json().await {
            Ok(v) => v,
            Err(e) => return SessionOutcome::Failed(graph_fault(&GraphError::transport(&e))),
        };
        let Some(raw) = ranges::string_prop(&v, "uploadUrl") else {
            return SessionOutcome::Failed(Fault::Permanent(Failure::new(
                "InvalidResponse",
                "createUploadSession returned no uploadUrl",
            )));
        };
        let upload = match self.check_upload_url(raw) {
            Ok(u) => u,
            Err(g) => return SessionOutcome::Failed(graph_fault(&g)),
        };
        if let Err(e) = save(upload.as_str()) {
            return SessionOutcome::Failed(ambiguous(
                "ledgerWrite",
                format!("cannot save the upload session: {e}"),
            ));
        }
        let next = ranges::ranges_from_json(&v)
            .as_deref()
            .and_then(ranges::next_offset)
            .unwrap_or(0);
        SessionOutcome::Created { next }
    }

    /// PUT `chunk` at `offset` of a `total`-byte upload of attachment `name` to `upload_url`
    /// (no Authorization).
    pub async fn put_chunk(
        &self,
        target: &Target,
        name: &str,
        upload_url: &str,
        offset: u64,
        chunk: bytes::Bytes,
        total: u64,
    ) -> ChunkOutcome {
        let url = match self.check_upload_url(upload_url) {
            Ok(u) => u,
            Err(g) => return ChunkOutcome::Failed(graph_fault(&g)),
        };
        let len = chunk.len() as u64;
        if len == 0 {
            return ChunkOutcome::Failed(Fault::Permanent(Failure::new(
                "internal",
                "an empty chunk",
            )));
        }
        let range = format!("bytes {}-{}/{}", offset, offset + len - 1, total);
        let opts = once(RequestOpts::upload_url(&target.user).with_effect());
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
                let id = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(ranges::attachment_id_from_location);
                if id.is_some() {
                    self.note_attached(&ItemRef::from(target), name);
                }
                ChunkOutcome::Completed { attachment_id: id }
            }
            Ok(resp) => {
                let body = resp.bytes().await.unwrap_or_default();
                let v: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                ChunkOutcome::Accepted {
                    next: ranges::ranges_from_json(&v)
                        .as_deref()
                        .and_then(ranges::next_offset),
                }
            }
            Err(RequestError::Graph(g)) if g.class == ErrorClass::SessionDead => {
                if g.status == Some(416) {
                    ChunkOutcome::RangeRefused
                } else {
                    ChunkOutcome::SessionGone
                }
            }
            Err(e) => ChunkOutcome::Failed(fault_of(&e)),
        }
    }

    /// GET an upload URL: the next byte the session wants.
    pub async fn ask_session(&self, target: &Target, upload_url: &str) -> AskOutcome {
        let url = match self.check_upload_url(upload_url) {
            Ok(u) => u,
            Err(g) => return AskOutcome::Failed(graph_fault(&g)),
        };
        let opts = once(RequestOpts::upload_url(&target.user));
        match self.execute(opts, |c| c.get(url.clone())).await {
            Ok(resp) => {
                let body = match resp.bytes().await {
                    Ok(b) => b,
                    Err(e) => return AskOutcome::Failed(graph_fault(&GraphError::transport(&e))),
                };
                let v: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                AskOutcome::Next(
                    ranges::ranges_from_json(&v)
                        .as_deref()
                        .and_then(ranges::next_offset),
                )
            }
            Err(RequestError::Graph(g))
                if g.class == ErrorClass::SessionDead && g.status != Some(416) =>
            {
                AskOutcome::Gone
            }
            Err(e) => AskOutcome::Failed(fault_of(&e)),
        }
    }

    /// DELETE an upload URL. A session already gone counts as deleted.
    pub async fn delete_upload_session(&self, target: &Target, upload_url: &str) -> DeleteOutcome {
        match self
            .delete_session_with(&target.user, upload_url, super::Retry::Caller)
            .await
        {
            Ok(()) => DeleteOutcome::Deleted,
            Err(e) => DeleteOutcome::Failed(fault_of(&e)),
        }
    }

    /// Look on the item for an attachment named `name` whose bytes hash to `sha256`. The whole
    /// listing is read (a listing cut short is a failure, never "not there"); `recent_ok` lets
    /// a listing up to [`super::LISTING_TTL`] old answer "not there". One request per page and
    /// per candidate's `$value`, none retried here: a failure is the core's `Fault`.
    pub async fn look(
        &self,
        target: &Target,
        name: &str,
        sha256: &str,
        recent_ok: bool,
        exclude: &[String],
    ) -> LookOutcome {
        let item = ItemRef::from(target);
        let found = if recent_ok {
            self.find_attachment_recent(&item, name, sha256, exclude)
                .await
        } else {
            self.find_attachment(&item, name, sha256, exclude).await
        };
        match found {
            Ok(Some(id)) => LookOutcome::Found { attachment_id: id },
            Ok(None) => LookOutcome::NotFound,
            Err(e) => LookOutcome::Failed(fault_of(&e)),
        }
    }

    /// DELETE an attachment (an older version's, or one made by mistake). Gone counts as deleted.
    pub async fn delete_attachment(&self, target: &Target, attachment_id: &str) -> DeleteOutcome {
        let item = ItemRef::from(target);
        let mut segs = item.segments();
        segs.extend(["attachments", attachment_id]);
        let url = self.url(&segs);
        let opts = once(RequestOpts::graph(&item.user));
        match self.execute(opts, |c| c.delete(url.clone())).await {
            Ok(_) => DeleteOutcome::Deleted,
            Err(RequestError::Graph(g)) if g.status == Some(404) => DeleteOutcome::Deleted,
            Err(e) => DeleteOutcome::Failed(fault_of(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn errors_become_faults_once() {
        let g = |status, ra: Option<u64>| {
            GraphError::from_response(status, b"{}", ra.map(Duration::from_secs), None, false)
        };
        assert_eq!(
            graph_fault(&g(429, Some(2))),
            Fault::Throttled {
                retry_after_ms: Some(2000)
            }
        );
        assert!(matches!(
            graph_fault(&g(503, Some(1))),
            Fault::Throttled { .. }
        ));
        assert!(matches!(graph_fault(&g(503, None)), Fault::Ambiguous(_)));
        assert!(matches!(graph_fault(&g(500, None)), Fault::Ambiguous(_)));
        assert!(matches!(graph_fault(&g(401, None)), Fault::SignIn(_)));
        assert!(matches!(graph_fault(&g(403, None)), Fault::Permanent(_)));
        assert!(matches!(graph_fault(&g(404, None)), Fault::Permanent(_)));
        let refused = GraphError::new(ErrorClass::Transient, None, "ConnectionFailed", "refused");
        assert!(matches!(graph_fault(&refused), Fault::Unreachable(_)));
        let dropped = GraphError::new(ErrorClass::Transient, None, "ConnectionDropped", "reset");
        assert!(matches!(graph_fault(&dropped), Fault::Ambiguous(_)));
        let idp = RequestError::Auth(AuthError::Unavailable("no route".into()));
        assert!(matches!(fault_of(&idp), Fault::Unreachable(_)));
        let refused = RequestError::Auth(AuthError::Refused("invalid_grant".into()));
        assert!(matches!(fault_of(&refused), Fault::SignIn(_)));
    }
}
