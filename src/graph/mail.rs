//! The steps of a new message, as the core's executor calls them: create a draft carrying
//! outbox's marker, find a message by its marker, send a draft. Each returns a typed outcome;
//! the requests go through [`GraphClient::execute`] (pacing, token, error parsing). Attaching
//! files to a draft is the attachment steps (`steps.rs`, driven by the core) with an item of kind
//! message: `agent::oneshot::attach_file` for one file now.
//! What Graph answers, with sources: docs/graph-mail.md.

use super::{ErrorClass, GraphClient, GraphError, ItemRef, RequestError, RequestOpts};
use crate::config::{BodyType, ItemKind};
use serde_json::{json, Value};
use std::time::Duration;
use url::Url;

/// The single-value extended property that carries outbox's marker (the ledger's message id).
/// The GUID is outbox's own property set; the `Name` part is case-sensitive on Graph.
pub const MARKER_PROPERTY: &str =
    "String {4f0c6e1a-8b3d-4c52-9e7f-2a1d5b6c7e80} Name outboxMessageId";

/// What a new draft carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftSpec {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: String,
    pub body: String,
    pub body_type: BodyType,
    /// Stored as [`MARKER_PROPERTY`]; how the message is found again after a crash or a lost
    /// answer (its id changes when it is sent).
    pub marker: String,
}

/// A draft's id, as Graph returned it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DraftId(pub String);

impl DraftId {
    /// The draft as an attachment target.
    pub fn item(&self, user: &str) -> ItemRef {
        ItemRef::new(user, ItemKind::Message, self.0.clone())
    }
}

/// Where [`GraphClient::find_by_marker`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    Drafts,
    SentItems,
    /// The whole mailbox (`/messages`).
    Any,
}

/// A message found by its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMessage {
    pub id: String,
    pub is_draft: bool,
    pub internet_message_id: Option<String>,
    /// `sentDateTime` as Graph gave it (RFC 3339); `None` for a draft.
    pub sent: Option<String>,
    /// Other messages carrying the same marker (a sent copy is preferred over a draft, so a
    /// non-zero count with a sent message means a duplicate send or a draft not yet moved).
    pub others: usize,
}

/// How a mail step failed. Which variants a step can return is said on the step.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Nothing happened and the request can be sent again after `retry_after` (a 429).
    #[error("throttled: {0}")]
    Throttled(GraphError),
    /// The request may have taken effect (dropped connection, timeout, 5xx after it was sent):
    /// look by the marker before doing it again; never repeat it blindly.
    #[error("no answer, the request may have taken effect: {0}")]
    Ambiguous(GraphError),
    /// Nothing happened (a read that failed, a connection never made); safe to ask again.
    #[error("Graph could not be reached: {0}")]
    Transient(GraphError),
    /// Graph refused; repeating will not help. Carries Graph's code and message.
    #[error("{0}")]
    Permanent(GraphError),
    /// A listing could not be read to its end: no answer (never "not found").
    #[error("incomplete listing: {0}")]
    Incomplete(GraphError),
    /// No usable token: sign in again.
    #[error("{0}")]
    SignIn(String),
}

impl MailError {
    /// How long Graph asked to wait, for `Throttled`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MailError::Throttled(e) => e.retry_after,
            _ => None,
        }
    }

    /// Graph's error, when there is one.
    pub fn graph(&self) -> Option<&GraphError> {
        match self {
            MailError::Throttled(e)
            | MailError::Ambiguous(e)
            | MailError::Transient(e)
            | MailError::Permanent(e)
            | MailError::Incomplete(e) => Some(e),
            MailError::SignIn(_) => None,
        }
    }
}

/// The outcome class of a request that has an effect (create, send), from its error.
pub fn classify_effectful(err: RequestError) -> MailError {
    let e = match err {
        RequestError::Auth(a) => return MailError::SignIn(a.to_string()),
        RequestError::Graph(e) => e,
    };
    match (e.class, e.status) {
        (ErrorClass::SignIn, _) => MailError::SignIn(e.to_string()),
        // A 429 is an admission refusal: nothing was done.
        (_, Some(429)) => MailError::Throttled(e),
        // The request never left (connect failure).
        (_, None) if e.code == "ConnectionFailed" => MailError::Transient(e),
        // Dropped, timed out, any 5xx (a 503 with Retry-After included: Graph has been seen to
        // deliver mail it answered 5xx for).
        (ErrorClass::Transient | ErrorClass::Throttled, _) => MailError::Ambiguous(e),
        (ErrorClass::Permanent | ErrorClass::SessionDead, _) => MailError::Permanent(e),
    }
}

/// The outcome class of a read (safe to repeat), from its error.
fn classify_read(err: RequestError) -> MailError {
    let e = match err {
        RequestError::Auth(a) => return MailError::SignIn(a.to_string()),
        RequestError::Graph(e) => e,
    };
    match (e.class, e.status) {
        (ErrorClass::SignIn, _) => MailError::SignIn(e.to_string()),
        (_, Some(429)) => MailError::Throttled(e),
        (ErrorClass::Transient | ErrorClass::Throttled, _) => MailError::Transient(e),
        (ErrorClass::Permanent | ErrorClass::SessionDead, _) => MailError::Permanent(e),
    }
}

fn invalid(what: &str) -> GraphError {
    GraphError::new(
        ErrorClass::Transient,
        None,
        "InvalidResponse",
        format!("Graph answered {what}"),
    )
}

fn recipients(list: &[String]) -> Value {
    Value::Array(
        list.iter()
            .map(|a| json!({"emailAddress": {"address": a}}))
            .collect(),
    )
}

/// The JSON body of `POST …/messages` for `spec`.
pub fn draft_body(spec: &DraftSpec) -> Value {
    json!({
        "subject": spec.subject,
        "body": {
            "contentType": match spec.body_type { BodyType::Text => "text", BodyType::Html => "html" },
            "content": spec.body,
        },
        "toRecipients": recipients(&spec.to),
        "ccRecipients": recipients(&spec.cc),
        "bccRecipients": recipients(&spec.bcc),
        "singleValueExtendedProperties": [{"id": MARKER_PROPERTY, "value": spec.marker}],
    })
}

/// `$filter` that finds messages carrying `marker` (quotes doubled, as OData wants).
pub fn marker_filter(marker: &str) -> String {
    format!(
        "singleValueExtendedProperties/Any(ep: ep/id eq '{}' and ep/value eq '{}')",
        MARKER_PROPERTY.replace('\'', "''"),
        marker.replace('\'', "''")
    )
}

fn mailbox_segments(user: &str) -> Vec<&str> {
    if user.eq_ignore_ascii_case("me") {
        vec!["me"]
    } else {
        vec!["users", user]
    }
}

/// Read one page of a message listing: `(value, nextLink)`; anything unreadable is `None`.
fn page(body: &[u8]) -> Option<(Vec<Value>, Option<String>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let value = v.get("value")?.as_array()?.clone();
    let next = v
        .get("@odata.nextLink")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((value, next))
}

fn found(v: &Value) -> Option<FoundMessage> {
    Some(FoundMessage {
        id: v.get("id")?.as_str()?.to_string(),
        is_draft: v.get("isDraft").and_then(Value::as_bool).unwrap_or(false),
        internet_message_id: v
            .get("internetMessageId")
            .and_then(Value::as_str)
            .map(str::to_string),
        sent: v
            .get("sentDateTime")
            .and_then(Value::as_str)
            .map(str::to_string),
        others: 0,
    })
}

/// Of every message carrying the marker, the one that says most: a sent copy (earliest sent)
/// before a draft; `others` counts the rest.
pub fn pick(mut all: Vec<FoundMessage>) -> Option<FoundMessage> {
    all.sort_by(|a, b| {
        a.is_draft
            .cmp(&b.is_draft)
            .then_with(|| a.sent.cmp(&b.sent))
            .then_with(|| a.id.cmp(&b.id))
    });
    let n = all.len();
    let mut first = all.into_iter().next()?;
    first.others = n - 1;
    Some(first)
}

impl GraphClient {
    /// `POST {mailbox}/messages`: a draft with recipients, subject, body and the marker.
    /// Not retried once sent: on `Ambiguous` the draft may exist — `find_by_marker(Drafts)`
    /// before creating another. Errors: `Throttled`, `Ambiguous`, `Transient` (never sent),
    /// `Permanent`, `SignIn`.
    pub async fn create_draft(&self, user: &str, spec: &DraftSpec) -> Result<DraftId, MailError> {
        let mut segs = mailbox_segments(user);
        segs.push("messages");
        let url = self.url(&segs);
        let body = serde_json::to_vec(&draft_body(spec)).unwrap_or_default();
        let opts = RequestOpts::graph(user)
            .with_effect()
            .with_timeout(Duration::from_secs(60))
            .with_body(body.len() as u64);
        let resp = self
            .execute(opts, |c| {
                c.post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await
            .map_err(classify_effectful)?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| MailError::Ambiguous(GraphError::transport(&e)))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| MailError::Ambiguous(invalid("a created draft with invalid JSON")))?;
        match v.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(DraftId(id.to_string())),
            _ => Err(MailError::Ambiguous(invalid(
                "a created draft without an id",
            ))),
        }
    }

    /// The message carrying `marker` in `folder`, if any. Every page of the listing is read
    /// (`@odata.nextLink` on the same origin); a page that cannot be read is `Incomplete`,
    /// never "not found". Errors: `Throttled`, `Transient`, `Incomplete`, `Permanent`, `SignIn`.
    pub async fn find_by_marker(
        &self,
        user: &str,
        folder: Folder,
        marker: &str,
    ) -> Result<Option<FoundMessage>, MailError> {
        let mut segs = mailbox_segments(user);
        match folder {
            Folder::Drafts => segs.extend(["mailFolders", "drafts"]),
            Folder::SentItems => segs.extend(["mailFolders", "sentitems"]),
            Folder::Any => {}
        }
        segs.push("messages");
        let mut url = self.url(&segs);
        url.query_pairs_mut()
            .append_pair("$filter", &marker_filter(marker))
            .append_pair("$select", "id,isDraft,internetMessageId,sentDateTime")
            .append_pair("$top", "50");
        let mut next = Some(url);
        let mut all = Vec::new();
        let mut pages = 0;
        while let Some(u) = next.take() {
            pages += 1;
            if pages > 100 {
                return Err(MailError::Incomplete(invalid(
                    "more than 100 pages of messages for one marker",
                )));
            }
            let resp = self
                .execute(RequestOpts::graph(user), |c| c.get(u.clone()))
                .await
                .map_err(classify_read)?;
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| MailError::Incomplete(GraphError::transport(&e)))?;
            let (value, link) = page(&bytes).ok_or_else(|| {
                MailError::Incomplete(invalid("a message listing that is not one"))
            })?;
            for v in &value {
                all.push(found(v).ok_or_else(|| {
                    MailError::Incomplete(invalid("a listed message without an id"))
                })?);
            }
            if let Some(l) = link {
                let u = Url::parse(&l)
                    .ok()
                    .filter(|u| u.host_str() == self.base.host_str())
                    .ok_or_else(|| MailError::Incomplete(invalid("a next page on another host")))?;
                next = Some(u);
            }
        }
        Ok(pick(all))
    }

    /// `POST {mailbox}/messages/{id}/send`, never retried here. `Ok(())` on 202 (whatever else
    /// comes with it). `Ambiguous`: the send may have happened — confirm through Sent Items by
    /// the marker before any second send. `Throttled` (429): nothing was sent. `Permanent`:
    /// Graph's code and message (e.g. `ErrorInvalidRecipients`, `ErrorItemNotFound` for a
    /// draft that already moved). `Transient`: the connection was never made. `SignIn`.
    pub async fn send_draft(&self, user: &str, id: &DraftId) -> Result<(), MailError> {
        let mut segs = mailbox_segments(user);
        segs.extend(["messages", id.0.as_str(), "send"]);
        let url = self.url(&segs);
        let opts = RequestOpts::graph(user)
            .with_effect()
            .with_timeout(Duration::from_secs(120));
        self.execute(opts, |c| {
            c.post(url.clone())
                .header(reqwest::header::CONTENT_LENGTH, "0")
                .body(Vec::<u8>::new())
        })
        .await
        .map_err(classify_effectful)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(status: Option<u16>, class: ErrorClass, code: &str) -> RequestError {
        RequestError::Graph(GraphError::new(class, status, code, "m"))
    }

    #[test]
    fn effectful_errors_are_classified_strictly() {
        use ErrorClass::*;
        let c = |r| classify_effectful(r);
        assert!(matches!(
            c(e(Some(429), Throttled, "ApplicationThrottled")),
            MailError::Throttled(_)
        ));
        assert!(matches!(
            c(e(Some(503), Throttled, "ServiceUnavailable")),
            MailError::Ambiguous(_)
        ));
        assert!(matches!(
            c(e(Some(504), Transient, "GatewayTimeout")),
            MailError::Ambiguous(_)
        ));
        assert!(matches!(
            c(e(None, Transient, "ConnectionDropped")),
            MailError::Ambiguous(_)
        ));
        assert!(matches!(
            c(e(None, Transient, "Timeout")),
            MailError::Ambiguous(_)
        ));
        assert!(matches!(
            c(e(None, Transient, "ConnectionFailed")),
            MailError::Transient(_)
        ));
        assert!(matches!(
            c(e(Some(400), Permanent, "ErrorInvalidRecipients")),
            MailError::Permanent(_)
        ));
        assert!(matches!(
            c(e(Some(401), SignIn, "InvalidAuthenticationToken")),
            MailError::SignIn(_)
        ));
    }

    #[test]
    fn the_filter_quotes_the_marker() {
        let f = marker_filter("a'b");
        assert!(f.ends_with("ep/value eq 'a''b')"), "{f}");
        assert!(f.starts_with("singleValueExtendedProperties/Any(ep: ep/id eq 'String {"));
    }

    #[test]
    fn a_sent_copy_is_preferred_and_the_rest_counted() {
        let m = |id: &str, draft: bool, sent: Option<&str>| FoundMessage {
            id: id.into(),
            is_draft: draft,
            internet_message_id: None,
            sent: sent.map(str::to_string),
            others: 0,
        };
        assert_eq!(pick(vec![]), None);
        let p = pick(vec![
            m("d", true, None),
            m("s2", false, Some("2026-01-01T00:00:02Z")),
            m("s1", false, Some("2026-01-01T00:00:01Z")),
        ]);
        assert_eq!(
            p.as_ref().map(|p| (p.id.as_str(), p.others)),
            Some(("s1", 2))
        );
    }
}
