//! Every answer is read with a bound, success or error: a hostile or broken server cannot make
//! the agent hold more than these limits in memory (a 1.5 GB "JSON answer" took 1.6 GB before).
//! Listings are parsed as they stream and get a generous bound per page; single JSON answers
//! (a POST's attachment, createUploadSession, an upload session's status, the token endpoint)
//! are small. Error bodies keep their own cap (`error.rs`). Overall time is bounded by each
//! request's timeout (`RequestOpts`), which covers the body too.
//!
//! The read itself is [`crate::bounded`] (the identity platform's answers use it too); this
//! module turns its errors into `GraphError`s.

use super::error::{ErrorClass, GraphError};
use crate::bounded::BodyError;
pub use crate::bounded::{same_origin, JSON_PAGE, LISTING_PAGE, SMALL_ANSWER};

/// The whole body, or an error once it passes `limit` bytes (checked against `Content-Length`
/// first, then while reading).
pub async fn read_body(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, GraphError> {
    crate::bounded::read_body(resp, limit)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(limit) => too_large(limit),
            BodyError::Transport(e) => GraphError::transport(&e),
        })
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
