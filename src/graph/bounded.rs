//! Every answer is read with a bound, success or error: a hostile or broken server cannot make
//! the agent hold more than these limits in memory (a 1.5 GB "JSON answer" took 1.6 GB before).
//! Listings are parsed as they stream and get a generous bound per page; single JSON answers
//! (a POST's attachment, createUploadSession, an upload session's status, the token endpoint)
//! are small. Error bodies keep their own cap (`error.rs`). Overall time is bounded by each
//! request's timeout (`RequestOpts`), which covers the body too.

use super::error::{ErrorClass, GraphError};

/// A single JSON answer: an attachment, an upload session, a session's status, a token.
pub const SMALL_ANSWER: usize = 1024 * 1024;
/// One page of an item listing or of `items` (`$top` up to 1,000 items with their fields).
pub const JSON_PAGE: usize = 32 * 1024 * 1024;
/// One page of an attachment list, parsed as it streams (the sink keeps what it needs).
pub const LISTING_PAGE: u64 = 64 * 1024 * 1024;

/// The whole body, or an error once it passes `limit` bytes (checked against `Content-Length`
/// first, then while reading).
pub async fn read_body(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, GraphError> {
    use futures_util::StreamExt;
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| GraphError::transport(&e))?;
        if out.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The body as JSON, read with [`read_body`].
pub async fn read_json(
    resp: reqwest::Response,
    limit: usize,
) -> Result<serde_json::Value, GraphError> {
    let body = read_body(resp, limit).await?;
    serde_json::from_slice(&body).map_err(|e| {
        GraphError::new(
            ErrorClass::Transient,
            None,
            "InvalidResponse",
            format!("the server answered with invalid JSON: {e}"),
        )
    })
}

fn too_large(limit: usize) -> GraphError {
    GraphError::new(
        ErrorClass::Transient,
        None,
        "AnswerTooLarge",
        format!(
            "the server's answer is larger than {} MiB, far more than this request can return; not read",
            limit / (1024 * 1024)
        ),
    )
}

/// Whether `u` has exactly the origin (scheme, host, port) of `base`.
pub fn same_origin(u: &url::Url, base: &url::Url) -> bool {
    u.scheme() == base.scheme()
        && u.host_str().map(str::to_ascii_lowercase) == base.host_str().map(str::to_ascii_lowercase)
        && u.port_or_known_default() == base.port_or_known_default()
}
