//! Attachment reads as Graph answers them: a `fileAttachment` read by `GET …/attachments/{id}`,
//! or listed by `GET …/attachments`, carries its bytes as base64 `contentBytes` unless `$select`
//! leaves them out. An attachment may be 150 MiB (200 MiB of base64), and a list page may hold
//! many, so the answer is streamed: the JSON around each attachment is written whole, its
//! `contentBytes` is encoded from the blob on disk a piece at a time, and memory stays at one
//! piece whatever the sizes.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use base64::Engine;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use tokio::io::AsyncReadExt;

/// Raw bytes encoded per piece: a multiple of 3, so the pieces' base64 concatenates.
const PIECE: usize = 3 * 32 * 1024;

/// `$select` of an attachment read: the named properties (lowercased; the cast form
/// `microsoft.graph.fileAttachment/contentBytes` counts as `contentbytes`), or `None` for all.
pub struct Select(Option<HashSet<String>>);

impl Select {
    pub fn parse(q: &HashMap<String, String>) -> Select {
        Select(q.get("$select").map(|s| {
            s.split(',')
                .map(|p| {
                    let p = p.trim().to_ascii_lowercase();
                    match p.rsplit_once('/') {
                        Some((_, name)) => name.to_string(),
                        None => p,
                    }
                })
                .filter(|p| !p.is_empty())
                .collect()
        }))
    }

    fn keeps(&self, key: &str) -> bool {
        match &self.0 {
            None => true,
            Some(s) => key.starts_with('@') || key == "id" || s.contains(&key.to_ascii_lowercase()),
        }
    }

    /// Whether the answer carries `contentBytes`.
    pub fn bytes(&self) -> bool {
        self.keeps("contentBytes")
    }

    /// The metadata with only the selected properties (`id` and `@odata.*` always).
    pub fn apply(&self, mut v: Value) -> Value {
        if let Some(o) = v.as_object_mut() {
            o.retain(|k, _| self.keeps(k));
        }
        v
    }
}

/// One piece of a streamed answer.
enum Part {
    Text(String),
    /// The base64 of this blob, written as the value of a JSON string (no quotes).
    Base64(PathBuf),
}

/// An answer under construction: JSON text with blobs to encode in place.
#[derive(Default)]
pub struct Streamed {
    parts: VecDeque<Part>,
}

impl Streamed {
    pub fn text(&mut self, s: impl Into<String>) {
        match self.parts.back_mut() {
            Some(Part::Text(t)) => t.push_str(&s.into()),
            _ => self.parts.push_back(Part::Text(s.into())),
        }
    }

    /// `meta` (an object) as JSON, with `"contentBytes":"<base64 of blob>"` as its last member.
    pub fn object_with_bytes(&mut self, meta: &Map<String, Value>, blob: PathBuf) {
        let mut s = serde_json::to_string(meta).unwrap_or_else(|_| "{}".into());
        s.pop(); // the closing brace
        if !meta.is_empty() {
            s.push(',');
        }
        s.push_str("\"contentBytes\":\"");
        self.text(s);
        self.parts.push_back(Part::Base64(blob));
        self.text("\"}");
    }

    /// The answer: `application/json`, chunked, the blobs read as it is sent. A blob that cannot
    /// be read cuts the answer short (the client sees a broken body, never wrong bytes).
    pub fn into_response(self) -> Response {
        let stream = futures_util::stream::unfold(
            (self.parts, None::<tokio::fs::File>),
            |(mut parts, mut file)| async move {
                loop {
                    if let Some(f) = file.as_mut() {
                        let mut buf = vec![0u8; PIECE];
                        let mut n = 0;
                        while n < PIECE {
                            match f.read(&mut buf[n..]).await {
                                Ok(0) => break,
                                Ok(k) => n += k,
                                Err(e) => return Some((Err(e), (VecDeque::new(), None))),
                            }
                        }
                        if n < PIECE {
                            file = None;
                        }
                        if n == 0 {
                            continue;
                        }
                        let out = base64::engine::general_purpose::STANDARD.encode(&buf[..n]);
                        return Some((Ok(Bytes::from(out)), (parts, file)));
                    }
                    match parts.pop_front()? {
                        Part::Text(t) => return Some((Ok(Bytes::from(t)), (parts, None))),
                        Part::Base64(p) => match tokio::fs::File::open(&p).await {
                            Ok(f) => file = Some(f),
                            Err(e) => return Some((Err(e), (VecDeque::new(), None))),
                        },
                    }
                }
            },
        );
        let mut resp = Response::new(Body::from_stream(stream));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

/// One attachment read into `out`: `meta` (already under `select`), plus `contentBytes` from
/// `blob` when selected.
pub fn attachment_value(out: &mut Streamed, meta: Value, select: &Select, blob: PathBuf) {
    let obj = match meta {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    if select.bytes() {
        out.object_with_bytes(&obj, blob);
    } else {
        out.text(serde_json::to_string(&obj).unwrap_or_else(|_| "{}".into()));
    }
}
