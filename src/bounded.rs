//! Reading an HTTP answer with a bound: a hostile or broken server cannot make the agent hold
//! more than these limits in memory, whether it is Graph (`graph::bounded` wraps this) or the
//! identity platform (`auth`). And the one origin comparison a bearer token's destination is
//! checked with.

/// A single JSON answer: an attachment, an upload session, a session's status, a token.
pub const SMALL_ANSWER: usize = 1024 * 1024;
/// One page of an item listing or of `items` (`$top` up to 1,000 items with their fields).
pub const JSON_PAGE: usize = 32 * 1024 * 1024;
/// One page of an attachment list, parsed as it streams (the sink keeps what it needs).
pub const LISTING_PAGE: u64 = 64 * 1024 * 1024;

/// Why a body was not read whole.
#[derive(Debug)]
pub enum BodyError {
    /// It passes this many bytes.
    TooLarge(usize),
    Transport(reqwest::Error),
}

/// The whole body, or an error once it passes `limit` bytes (checked against `Content-Length`
/// first, then while reading).
pub async fn read_body(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    use futures_util::StreamExt;
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(BodyError::Transport)?;
        if out.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Whether `u` has exactly the origin (scheme, host, port) of `base`.
pub fn same_origin(u: &url::Url, base: &url::Url) -> bool {
    u.scheme() == base.scheme()
        && u.host_str().map(str::to_ascii_lowercase) == base.host_str().map(str::to_ascii_lowercase)
        && u.port_or_known_default() == base.port_or_known_default()
}
