//! The steps of a new message, as the core's executor calls them: create a draft carrying
//! outbox's marker, find a message by its marker, list a draft's attachments, send a draft.
//! The `*_step` functions answer the core's typed outcomes (one request each, no retry: the
//! core decides; [`mail_fault`] maps errors as `steps::fault_of` does); the others return
//! `MailError`s. The requests go through [`GraphClient::execute`] (pacing, token, error parsing). Attaching
//! files to a draft is the attachment steps (`steps.rs`, driven by the core) with an item of kind
//! message: `agent::oneshot::attach_file` for one file now.
//! What Graph answers, with sources: docs/graph-mail.md.

use super::{ErrorClass, GraphClient, GraphError, ItemRef, RequestError, RequestOpts};
use crate::config::{BodyType, ItemKind};
use crate::core::model::{
    DeleteOutcome, DraftHolding, DraftOutcome, Failure, Fault, FindOutcome, KeyHolders, KeyOutcome,
    Letter, ListOutcome, MailFolder, RivalsOutcome, SendOutcome, Time,
};
use serde_json::{json, Value};
use std::time::Duration;
use url::Url;

/// The single-value extended property that carries outbox's marker (the ledger's message id).
/// The GUID is outbox's own property set; the `Name` part is case-sensitive on Graph.
pub const MARKER_PROPERTY: &str =
    "String {4f0c6e1a-8b3d-4c52-9e7f-2a1d5b6c7e80} Name outboxMessageId";

/// The single-value extended property that carries the keys of a message's files (SPEC: the
/// mailbox is the record of last resort), space-separated, searched with `contains` (documented
/// for string-typed properties). One name for every message: named properties are a mailbox
/// quota, never one per file.
pub const FILE_KEYS_PROPERTY: &str =
    "String {4f0c6e1a-8b3d-4c52-9e7f-2a1d5b6c7e80} Name outboxFileKeys";

/// The single-value extended property of a draft `outbox mail --draft --key` made: its value,
/// the draft's marker, says no run has asked Graph to send it. A run that sends it sets another
/// value first (and sends only once Graph took that), so a draft still carrying its marker here
/// cannot be in Exchange's move: a later keyed run takes it at once instead of waiting for the
/// move (issue 20, trial 4's M7).
pub const NEVER_SENT_PROPERTY: &str =
    "String {4f0c6e1a-8b3d-4c52-9e7f-2a1d5b6c7e80} Name outboxNeverSent";

/// The value [`NEVER_SENT_PROPERTY`] takes once a run is about to send the draft.
pub const SEND_ASKED: &str = "send-asked";

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
    /// The keys of its files (a mailing mapping's; none for `outbox mail`), stored as
    /// [`FILE_KEYS_PROPERTY`].
    pub file_keys: Vec<String>,
    /// Made by a run that never sends it (`outbox mail --draft --key`): carries
    /// [`NEVER_SENT_PROPERTY`] with its marker.
    pub never_sent: bool,
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
    /// `createdDateTime` as Graph gave it (RFC 3339).
    pub created: Option<String>,
    pub subject: Option<String>,
    /// The marker it carries, when the listing showed it (`$expand`).
    pub marker: Option<String>,
    /// Other messages carrying the same marker (a sent copy is preferred over a draft, so a
    /// non-zero count with a sent message means a duplicate send or a draft not yet moved).
    pub others: usize,
}

/// What a message says (`GET …/messages/{id}?$select=subject,toRecipients,ccRecipients,bccRecipients`):
/// its subject and its recipients' addresses, as Graph returns them on a message GET.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageFacts {
    pub subject: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
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
    // What each answer says about whether the message went is the core's decision
    // (`SendRefusal`): this only tells the answers apart faithfully.
    match (e.class, e.status) {
        (ErrorClass::SignIn, _) => MailError::SignIn(e.to_string()),
        // A throttle, with the wait it names.
        (_, Some(429)) => MailError::Throttled(e),
        // The request never left (connect failure).
        (_, None) if e.code == "ConnectionFailed" => MailError::Transient(e),
        // Dropped, timed out, any other 5xx: it may have taken effect.
        (ErrorClass::Transient | ErrorClass::Throttled, _) => MailError::Ambiguous(e),
        // Graph's code and message (Exchange's sending limit included, whatever its status).
        (ErrorClass::Permanent | ErrorClass::SessionDead, _) => MailError::Permanent(e),
    }
}

/// [`classify_effectful`] for a send: a 503 that names its wait is a throttle too (the core
/// treats every throttle of a send as "may have gone": GRAPH.md §13). A create's 503 stays
/// ambiguous, so its draft is searched for before another is made.
pub fn classify_send(err: RequestError) -> MailError {
    match classify_effectful(err) {
        MailError::Ambiguous(e) if e.status == Some(503) && e.retry_after.is_some() => {
            MailError::Throttled(e)
        }
        other => other,
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
        "singleValueExtendedProperties": properties(spec),
    })
}

fn properties(spec: &DraftSpec) -> Value {
    let mut props = vec![json!({"id": MARKER_PROPERTY, "value": spec.marker})];
    if !spec.file_keys.is_empty() {
        props.push(json!({"id": FILE_KEYS_PROPERTY, "value": spec.file_keys.join(" ")}));
    }
    if spec.never_sent {
        props.push(json!({"id": NEVER_SENT_PROPERTY, "value": spec.marker}));
    }
    Value::Array(props)
}

/// `$filter` that finds messages carrying file key `key` among their files' keys.
pub fn file_key_filter(key: &str) -> String {
    format!(
        "singleValueExtendedProperties/Any(ep: ep/id eq '{}' and contains(ep/value, '{}'))",
        FILE_KEYS_PROPERTY.replace('\'', "''"),
        key.replace('\'', "''")
    )
}

/// `$filter` that finds messages carrying `marker` (quotes doubled, as OData wants).
pub fn marker_filter(marker: &str) -> String {
    format!(
        "singleValueExtendedProperties/Any(ep: ep/id eq '{}' and ep/value eq '{}')",
        MARKER_PROPERTY.replace('\'', "''"),
        marker.replace('\'', "''")
    )
}

/// The `$filter` that finds a message by its `internetMessageId` (kept by the sent copy).
pub fn imid_filter(imid: &str) -> String {
    format!("internetMessageId eq '{}'", imid.replace('\'', "''"))
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
        created: v
            .get("createdDateTime")
            .and_then(Value::as_str)
            .map(str::to_string),
        subject: v.get("subject").and_then(Value::as_str).map(str::to_string),
        marker: v
            .get("singleValueExtendedProperties")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| {
                p.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.eq_ignore_ascii_case(MARKER_PROPERTY))
            })
            .and_then(|p| p.get("value"))
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
        self.create_draft_full(user, spec).await.map(|(id, _)| id)
    }

    /// [`GraphClient::create_draft`], with the `internetMessageId` Graph assigned (already set
    /// on the draft, kept by the sent copy) when the answer carries one.
    pub async fn create_draft_full(
        &self,
        user: &str,
        spec: &DraftSpec,
    ) -> Result<(DraftId, Option<String>), MailError> {
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
            .map_err(|e| classify_effectful(e.of_draft()))?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| MailError::Ambiguous(GraphError::transport(&e)))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| MailError::Ambiguous(invalid("a created draft with invalid JSON")))?;
        let imid = v
            .get("internetMessageId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        match v.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok((DraftId(id.to_string()), imid)),
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
        self.find_marker(user, folder, marker, true).await
    }

    /// [`GraphClient::find_by_marker`]; `retry`: transient failures of a page are retried
    /// here (off for the agent's steps: the core decides).
    async fn find_marker(
        &self,
        user: &str,
        folder: Folder,
        marker: &str,
        retry: bool,
    ) -> Result<Option<FoundMessage>, MailError> {
        self.find_filtered(user, folder, &marker_filter(marker), retry)
            .await
    }

    /// The messages of `folder` that `filter` selects (every page), a sent copy preferred.
    async fn find_filtered(
        &self,
        user: &str,
        folder: Folder,
        filter: &str,
        retry: bool,
    ) -> Result<Option<FoundMessage>, MailError> {
        Ok(pick(self.list_filtered(user, folder, filter, retry).await?))
    }

    /// Every message of `folder` that `filter` selects (every page; a listing cut short is an
    /// error, never a short list).
    async fn list_filtered(
        &self,
        user: &str,
        folder: Folder,
        filter: &str,
        retry: bool,
    ) -> Result<Vec<FoundMessage>, MailError> {
        let mut segs = mailbox_segments(user);
        match folder {
            Folder::Drafts => segs.extend(["mailFolders", "drafts"]),
            Folder::SentItems => segs.extend(["mailFolders", "sentitems"]),
            Folder::Any => {}
        }
        segs.push("messages");
        let mut url = self.url(&segs);
        url.query_pairs_mut()
            .append_pair("$filter", filter)
            .append_pair(
                "$select",
                "id,isDraft,internetMessageId,sentDateTime,createdDateTime,subject",
            )
            .append_pair(
                "$expand",
                &format!(
                    "singleValueExtendedProperties($filter=id eq '{}')",
                    MARKER_PROPERTY.replace('\'', "''")
                ),
            )
            .append_pair("$top", "50");
        let mut next = Some(url);
        let mut all = Vec::new();
        let mut pages = 0;
        while let Some(u) = next.take() {
            pages += 1;
            if pages > 100 {
                return Err(MailError::Incomplete(invalid(
                    "more than 100 pages of messages for one search",
                )));
            }
            let opts = RequestOpts {
                retry,
                ..RequestOpts::graph(user)
            };
            let resp = self
                .execute(opts, |c| c.get(u.clone()))
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
                    .filter(|u| super::bounded::same_origin(u, &self.base))
                    .ok_or_else(|| MailError::Incomplete(invalid("a next page on another host")))?;
                next = Some(u);
            }
        }
        Ok(all)
    }

    /// `POST {mailbox}/messages/{id}/send`, never retried here. `Ok(())` on 202 (whatever else
    /// comes with it). `Ambiguous`: the send may have happened — confirm through Sent Items by
    /// the marker before any second send. `Throttled` (429, 503 with `Retry-After`) and
    /// `Permanent` do not prove it was not sent either: the core decides (`SendRefusal`). `Permanent`:
    /// Graph's code and message (e.g. `ErrorInvalidRecipients`, `ErrorItemNotFound` for a
    /// draft that already moved). `Transient`: the connection was never made. `SignIn`.
    pub async fn send_draft(&self, user: &str, id: &DraftId) -> Result<(), MailError> {
        // Inside Exchange's sending limit as the server counts it (`sends.rs`).
        self.sends.send(user, self.post_send(user, id, true)).await
    }

    /// The `send` POST itself, `paced` by the mailbox's budgets or not (one checked right
    /// before by a paced request: `send_draft_checked`), its error as the core reads a send's.
    async fn post_send(&self, user: &str, id: &DraftId, paced: bool) -> Result<(), MailError> {
        let mut segs = mailbox_segments(user);
        segs.extend(["messages", id.0.as_str(), "send"]);
        let url = self.url(&segs);
        let mut opts = RequestOpts::graph(user)
            .with_effect()
            .with_timeout(Duration::from_secs(120));
        if !paced {
            opts = opts.unpaced();
        }
        self.execute(opts, |c| {
            c.post(url.clone())
                .header(reqwest::header::CONTENT_LENGTH, "0")
                .body(Vec::<u8>::new())
        })
        .await
        .map(|_| ())
        .map_err(|e| classify_send(e.of_send()))
    }
}

/// A mail step's error as the core sees it, as [`super::steps::fault_of`] maps a file step's:
/// a 429 is `Throttled` (with its `Retry-After`); a create or a send that may have taken effect
/// (dropped, timed out, any 5xx) is `Ambiguous`; a connection never made is `Unreachable`; a read
/// that failed or was cut short is `Ambiguous` (it took no effect, and the core counts it);
/// Graph's refusal is `Permanent`; no usable token is `SignIn`.
pub fn mail_fault(e: &MailError) -> Fault {
    let failure = |g: &GraphError| Failure::new(g.code.clone(), g.to_string());
    match e {
        MailError::Throttled(g) => Fault::Throttled {
            retry_after_ms: g
                .retry_after
                .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
        },
        MailError::Ambiguous(g) | MailError::Incomplete(g) => Fault::Ambiguous(failure(g)),
        MailError::Transient(g) if g.status.is_none() && g.code == "ConnectionFailed" => {
            Fault::Unreachable(failure(g))
        }
        MailError::Transient(g) => Fault::Ambiguous(failure(g)),
        MailError::Permanent(g) => Fault::Permanent(failure(g)),
        MailError::SignIn(m) => Fault::SignIn(Failure::new("signInNeeded", m.clone())),
    }
}

/// Pages of a draft's attachment listing read at most (a draft holds a few files).
const MAX_DRAFT_PAGES: usize = 100;

impl GraphClient {
    /// The core's `CreateDraft`: one POST of a draft saying `letter`, carrying `marker`.
    pub async fn draft_step(
        &self,
        user: &str,
        marker: &str,
        letter: &Letter,
        keys: &[String],
        never_sent: bool,
    ) -> DraftOutcome {
        let spec = DraftSpec {
            to: letter.to.clone(),
            cc: letter.cc.clone(),
            bcc: letter.bcc.clone(),
            subject: letter.subject.clone(),
            body: letter.body.clone(),
            body_type: if letter.html {
                BodyType::Html
            } else {
                BodyType::Text
            },
            marker: marker.to_owned(),
            file_keys: keys.to_vec(),
            never_sent,
        };
        match self.create_draft_full(user, &spec).await {
            Ok((id, internet_message_id)) => DraftOutcome::Created {
                draft_id: id.0,
                internet_message_id,
            },
            Err(e) => DraftOutcome::Failed(mail_fault(&e)),
        }
    }

    /// The core's `FindMessage`: the message carrying `marker` in Drafts or Sent Items, every
    /// page read (a listing cut short is a failure, never "not found"); no retry here.
    /// In Sent Items, a copy that did not keep the marker is found by `internet_message_id`.
    pub async fn find_step(
        &self,
        user: &str,
        marker: &str,
        folder: MailFolder,
        internet_message_id: Option<&str>,
    ) -> FindOutcome {
        let f = match folder {
            MailFolder::Drafts => Folder::Drafts,
            MailFolder::SentItems => Folder::SentItems,
            MailFolder::Anywhere => Folder::Any,
        };
        let mut found = self.find_marker(user, f, marker, false).await;
        if let (Ok(None), MailFolder::SentItems, Some(imid)) = (&found, folder, internet_message_id)
        {
            found = self
                .find_filtered(user, f, &imid_filter(imid), false)
                .await
                .map(|m| m.filter(|m| !m.is_draft));
        }
        match found {
            Ok(Some(m)) => {
                if m.others > 0 {
                    tracing::warn!(message = %marker, others = m.others, "more than one message carries this message's marker");
                }
                FindOutcome::Found {
                    id: m.id,
                    is_draft: m.is_draft,
                    internet_message_id: m.internet_message_id,
                }
            }
            Ok(None) => FindOutcome::NotFound,
            Err(e) => FindOutcome::Failed(mail_fault(&e)),
        }
    }

    /// The core's `StampKeys`: `PATCH …/messages/{draft_id}` setting its file keys (Graph's
    /// documented way to set an extended property on an existing item). Never retried here.
    pub async fn stamp_step(
        &self,
        user: &str,
        draft_id: &str,
        keys: &[String],
    ) -> Result<(), Fault> {
        let body = json!({"singleValueExtendedProperties": [
            {"id": FILE_KEYS_PROPERTY, "value": keys.join(" ")}
        ]});
        self.patch_draft(user, draft_id, &body).await
    }

    /// The core's `SetLetter`: `PATCH {mailbox}/messages/{draft_id}` with the subject and body
    /// of `letter` (updatable while the message is a draft). One request, no retry here.
    pub async fn letter_step(
        &self,
        user: &str,
        draft_id: &str,
        letter: &Letter,
    ) -> Result<(), Fault> {
        let body = json!({
            "subject": letter.subject,
            "body": {
                "contentType": if letter.html { "html" } else { "text" },
                "content": letter.body,
            },
        });
        self.patch_draft(user, draft_id, &body).await
    }

    /// `PATCH {mailbox}/messages/{draft_id}` with `body`: one request, no retry here (the core
    /// decides), its failure the core's `Fault`.
    async fn patch_draft(&self, user: &str, draft_id: &str, body: &Value) -> Result<(), Fault> {
        let mut segs = mailbox_segments(user);
        segs.extend(["messages", draft_id]);
        let url = self.url(&segs);
        let opts = RequestOpts {
            retry: false,
            ..RequestOpts::graph(user)
        };
        match self
            .execute(opts, |c| c.patch(url.clone()).json(body))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(mail_fault(&classify_effectful(e))),
        }
    }

    /// The core's `FindFileKey`: a sent copy since `since` carrying `key` with an attachment
    /// named `name` (Sent Items, every page, the latest first), else the drafts carrying it
    /// (Drafts), each marked `ours` by `ours(marker)` (the caller's ledger holds a message under
    /// that marker; an error is a transient failure). No retry here.
    pub async fn key_step(
        &self,
        user: &str,
        key: &str,
        name: &str,
        sha256: &str,
        since: Time,
        ours: &(dyn Fn(&str) -> Result<bool, String> + Sync),
    ) -> KeyOutcome {
        match self
            .find_file_key(user, key, name, sha256, since, ours)
            .await
        {
            Ok(k) => k,
            Err(e) => KeyOutcome::Failed(mail_fault(&e)),
        }
    }

    async fn find_file_key(
        &self,
        user: &str,
        key: &str,
        name: &str,
        sha256: &str,
        since: Time,
        ours: &(dyn Fn(&str) -> Result<bool, String> + Sync),
    ) -> Result<KeyOutcome, MailError> {
        if let Some(mailed) = self.key_sent(user, key, name, sha256, since, ours).await? {
            return Ok(mailed);
        }
        Ok(KeyOutcome::Drafted(self.key_drafts(user, key, ours).await?))
    }

    /// The latest sent copy since `since` carrying `key` with an attachment named `name`
    /// (Sent Items, every page) whose bytes hash to `sha256` (read back, `$value`), as a
    /// `KeyOutcome::Mailed`: the key alone does not prove the bytes went (a draft carries its
    /// files' keys from its creation: one sent from Outlook before a file's bytes were on it
    /// carries its key, with another file of that name or none).
    async fn key_sent(
        &self,
        user: &str,
        key: &str,
        name: &str,
        sha256: &str,
        since: Time,
        ours: &(dyn Fn(&str) -> Result<bool, String> + Sync),
    ) -> Result<Option<KeyOutcome>, MailError> {
        let filter = file_key_filter(key);
        let mut sent = self
            .list_filtered(user, Folder::SentItems, &filter, false)
            .await?;
        sent.retain(|m| !m.is_draft && sent_since(m.sent.as_deref(), since));
        sent.sort_by(|a, b| a.sent.cmp(&b.sent).then_with(|| a.id.cmp(&b.id)));
        // The latest first: the core tells a copy of this ledger's own, or one it recorded a
        // file found mailed in, from one a lost (or later) ledger mailed. Copies sent within one
        // second (`sentDateTime` has no finer grain) are one time: of those, one not this
        // ledger's is taken first (never mail twice on a tie).
        let mut groups: Vec<Vec<FoundMessage>> = Vec::new();
        for m in sent.into_iter().rev() {
            match groups.last_mut() {
                Some(g) if g.first().is_some_and(|f| f.sent == m.sent) => g.push(m),
                _ => groups.push(vec![m]),
            }
        }
        for group in groups {
            let mut found: Vec<(FoundMessage, String)> = Vec::new();
            for m in group {
                // The key names the file; the attachment by its name proves it went in that
                // message (a file that left its message before the send left its key behind).
                let item = ItemRef::new(user, ItemKind::Message, m.id.clone());
                let att = self
                    .find_attachment(&item, name, sha256, &[])
                    .await
                    .map_err(classify_read)?;
                if let Some(attachment_id) = att {
                    found.push((m, attachment_id));
                }
            }
            if found.is_empty() {
                continue;
            }
            // All this ledger's own unless one is not (then that one).
            let mut pick = 0;
            let mut picked_ours = true;
            for (i, (m, _)) in found.iter().enumerate() {
                let mine = ledger_says(ours, m.marker.as_deref())?;
                if !mine {
                    pick = i;
                    picked_ours = false;
                    break;
                }
            }
            let (m, attachment_id) = found.swap_remove(pick);
            return Ok(Some(KeyOutcome::Mailed {
                message_id: m.id,
                internet_message_id: m.internet_message_id,
                attachment_id,
                marker: m.marker,
                ours: picked_ours,
            }));
        }
        Ok(None)
    }

    /// Every draft carrying `key` (Drafts, every page), with its marker and `createdDateTime`.
    async fn key_drafts(
        &self,
        user: &str,
        key: &str,
        ours: &(dyn Fn(&str) -> Result<bool, String> + Sync),
    ) -> Result<Vec<DraftHolding>, MailError> {
        let drafts = self
            .list_filtered(user, Folder::Drafts, &file_key_filter(key), false)
            .await?;
        let mut holding = Vec::new();
        for d in drafts.into_iter().filter(|m| m.is_draft) {
            holding.push(DraftHolding {
                ours: ledger_says(ours, d.marker.as_deref())?,
                created: d.created.as_deref().and_then(epoch_ms),
                message_id: d.id,
                marker: d.marker,
                subject: d.subject.unwrap_or_default(),
            });
        }
        Ok(holding)
    }

    /// The core's `FindRivals`: draft `draft_id`'s own `createdDateTime` (`GET` by its id: a
    /// read by id sees it at once, where a `$filter` may lag), then for each of its files' keys
    /// (key, attachment name) the latest sent copy since `since` holding it and every draft
    /// holding it, as [`GraphClient::key_step`] reads them; one `$filter` per key and folder
    /// (the documented `Any` lambda; no `or` of several). No retry here.
    pub async fn rivals_step(
        &self,
        user: &str,
        draft_id: &str,
        files: &[(String, String, String)],
        since: Time,
        ours: &(dyn Fn(&str) -> Result<bool, String> + Sync),
    ) -> RivalsOutcome {
        match self.find_rivals(user, draft_id, files, since, ours).await {
            Ok(r) => r,
            Err(e) => RivalsOutcome::Failed(mail_fault(&e)),
        }
    }

    async fn find_rivals(
        &self,
        user: &str,
        draft_id: &str,
        files: &[(String, String, String)],
        since: Time,
        ours: &(dyn Fn(&str) -> Result<bool, String> + Sync),
    ) -> Result<RivalsOutcome, MailError> {
        let mut segs = mailbox_segments(user);
        segs.extend(["messages", draft_id]);
        let mut url = self.url(&segs);
        url.query_pairs_mut()
            .append_pair("$select", "id,createdDateTime,isDraft");
        let opts = RequestOpts {
            retry: false,
            ..RequestOpts::graph(user)
        };
        let resp = self
            .execute(opts, |c| c.get(url.clone()))
            .await
            .map_err(classify_read)?;
        let v = super::bounded::read_json(resp, super::bounded::JSON_PAGE)
            .await
            .map_err(|e| classify_read(e.into()))?;
        let own_created = v
            .get("createdDateTime")
            .and_then(Value::as_str)
            .and_then(epoch_ms);
        let mut found = Vec::with_capacity(files.len());
        for (key, name, sha256) in files {
            found.push(KeyHolders {
                sent: self.key_sent(user, key, name, sha256, since, ours).await?,
                drafts: self.key_drafts(user, key, ours).await?,
            });
        }
        Ok(RivalsOutcome::Checked { own_created, found })
    }

    /// The core's `DeleteDraft`: `DELETE {mailbox}/messages/{draft_id}` (a draft the core
    /// abandoned); a 404 is `Deleted` (already gone: deleted, or sent by hand). No retry here.
    pub async fn delete_draft_step(&self, user: &str, draft_id: &str) -> DeleteOutcome {
        let mut segs = mailbox_segments(user);
        segs.extend(["messages", draft_id]);
        let url = self.url(&segs);
        let opts = RequestOpts {
            retry: false,
            ..RequestOpts::graph(user)
        };
        match self.execute(opts, |c| c.delete(url.clone())).await {
            Ok(_) => DeleteOutcome::Deleted,
            Err(RequestError::Graph(g)) if g.status == Some(404) => DeleteOutcome::Deleted,
            Err(e) => DeleteOutcome::Failed(mail_fault(&classify_read(e))),
        }
    }

    /// The core's `ListDraft`: the id of every attachment on draft `draft_id`
    /// (`GET …/messages/{id}/attachments?$select=id`, each `@odata.nextLink` followed on
    /// graph.base_url's origin only). A listing that cannot be read to its end is a failure,
    /// never a short list: the core would delete or send on it.
    pub async fn list_draft_step(&self, user: &str, draft_id: &str) -> ListOutcome {
        match self.list_draft(user, draft_id).await {
            Ok(ids) => ListOutcome::Listed(ids),
            Err(e) => ListOutcome::Failed(super::steps::fault_of(&e)),
        }
    }

    async fn list_draft(&self, user: &str, draft_id: &str) -> Result<Vec<String>, RequestError> {
        let rows = self.list_message_attachments(user, draft_id, false).await?;
        Ok(rows.into_iter().map(|(id, _)| id).collect())
    }

    /// The sent copy of the message carrying `marker`: in Sent Items by the marker, else (a
    /// copy that did not keep it) by `internet_message_id`. A draft is never taken for it.
    /// Transient failures are retried here (`verify`). Errors as [`GraphClient::find_by_marker`].
    pub async fn find_sent_copy(
        &self,
        user: &str,
        marker: &str,
        internet_message_id: Option<&str>,
    ) -> Result<Option<FoundMessage>, MailError> {
        let found = self
            .find_marker(user, Folder::SentItems, marker, true)
            .await?
            .filter(|m| !m.is_draft);
        match (found, internet_message_id) {
            (Some(m), _) => Ok(Some(m)),
            (None, Some(imid)) => Ok(self
                .find_filtered(user, Folder::SentItems, &imid_filter(imid), true)
                .await?
                .filter(|m| !m.is_draft)),
            (None, None) => Ok(None),
        }
    }

    /// The subject and recipients of message `message_id` (`GET {mailbox}/messages/{id}` with
    /// `$select`), retried on transient failures. Errors: `Throttled`, `Transient`, `Permanent`
    /// (a 404: the message is gone, e.g. a draft sent and moved since), `SignIn`.
    pub async fn message_facts(
        &self,
        user: &str,
        message_id: &str,
    ) -> Result<MessageFacts, MailError> {
        let mut segs = mailbox_segments(user);
        segs.extend(["messages", message_id]);
        let mut url = self.url(&segs);
        url.query_pairs_mut()
            .append_pair("$select", "subject,toRecipients,ccRecipients,bccRecipients");
        let resp = self
            .execute(RequestOpts::graph(user), |c| c.get(url.clone()))
            .await
            .map_err(classify_read)?;
        let v = super::bounded::read_json(resp, super::bounded::JSON_PAGE)
            .await
            .map_err(|e| classify_read(e.into()))?;
        let addrs = |key: &str| -> Vec<String> {
            v.get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.pointer("/emailAddress/address").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        };
        Ok(MessageFacts {
            subject: v
                .get("subject")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            to: addrs("toRecipients"),
            cc: addrs("ccRecipients"),
            bcc: addrs("bccRecipients"),
        })
    }

    /// The one draft in Drafts carrying `marker` whose [`NEVER_SENT_PROPERTY`] still holds that
    /// marker: made by a `--draft` run and never asked to be sent by any run since. `None` when
    /// there is no such draft, more than one message carries the marker, or the answer says
    /// anything else (the caller then treats the draft as one that may have been sent).
    pub async fn never_sent_draft(&self, user: &str, marker: &str) -> Option<String> {
        let mut segs = mailbox_segments(user);
        segs.extend(["mailFolders", "drafts", "messages"]);
        let mut url = self.url(&segs);
        url.query_pairs_mut()
            .append_pair("$filter", &marker_filter(marker))
            .append_pair("$select", "id,isDraft")
            .append_pair(
                "$expand",
                &format!(
                    "singleValueExtendedProperties($filter=id eq '{}')",
                    NEVER_SENT_PROPERTY.replace('\'', "''")
                ),
            );
        let resp = self
            .execute(RequestOpts::graph(user), |c| c.get(url.clone()))
            .await
            .ok()?;
        let v = super::bounded::read_json(resp, super::bounded::JSON_PAGE)
            .await
            .ok()?;
        if v.get("@odata.nextLink").is_some() {
            return None;
        }
        let [m] = v.get("value")?.as_array()?.as_slice() else {
            return None;
        };
        let marked = m
            .get("singleValueExtendedProperties")?
            .as_array()?
            .iter()
            .any(|p| {
                p.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.eq_ignore_ascii_case(NEVER_SENT_PROPERTY))
                    && p.get("value").and_then(Value::as_str) == Some(marker)
            });
        let draft = m.get("isDraft").and_then(Value::as_bool) == Some(true);
        (marked && draft)
            .then(|| m.get("id").and_then(Value::as_str).map(str::to_owned))
            .flatten()
    }

    /// Before a run sends a draft [`never_sent_draft`](Self::never_sent_draft) found: its
    /// [`NEVER_SENT_PROPERTY`] set to [`SEND_ASKED`] (`PATCH`), so no later run takes it for one
    /// never sent. The send may follow only once this answered `Ok`.
    pub async fn mark_send_asked(&self, user: &str, draft_id: &str) -> Result<(), Fault> {
        let body = json!({"singleValueExtendedProperties": [
            {"id": NEVER_SENT_PROPERTY, "value": SEND_ASKED}
        ]});
        self.patch_draft(user, draft_id, &body).await
    }

    /// A keyed `outbox mail` interrupted before it asked to send its draft: the draft marked
    /// never sent ([`NEVER_SENT_PROPERTY`] set to its marker), so a re-run with the key takes
    /// it up at once. Only ever for a draft the run held as its own (made, or taken once no run
    /// could have sent it) and never asked to send.
    pub async fn mark_never_sent(
        &self,
        user: &str,
        draft_id: &str,
        marker: &str,
    ) -> Result<(), Fault> {
        let body = json!({"singleValueExtendedProperties": [
            {"id": NEVER_SENT_PROPERTY, "value": marker}
        ]});
        self.patch_draft(user, draft_id, &body).await
    }

    /// `(id, name)` of every attachment of message `message_id` (every page, on
    /// graph.base_url's origin only; a listing cut short is an error, never a short list).
    pub async fn attachment_names(
        &self,
        user: &str,
        message_id: &str,
    ) -> Result<Vec<(String, String)>, RequestError> {
        self.list_message_attachments(user, message_id, true).await
    }

    async fn list_message_attachments(
        &self,
        user: &str,
        draft_id: &str,
        names: bool,
    ) -> Result<Vec<(String, String)>, RequestError> {
        let mut segs = mailbox_segments(user);
        segs.extend(["messages", draft_id, "attachments"]);
        let mut url = self.url(&segs);
        url.query_pairs_mut()
            .append_pair("$select", if names { "id,name" } else { "id" });
        let cut = |code: &str, why: String| {
            RequestError::from(GraphError::new(ErrorClass::Transient, None, code, why))
        };
        let mut next = Some(url);
        let mut pages = 0;
        let mut ids = Vec::new();
        while let Some(u) = next.take() {
            pages += 1;
            let opts = RequestOpts {
                retry: false,
                ..RequestOpts::graph(user)
            };
            let resp = self.execute(opts, |c| c.get(u.clone())).await?;
            let v = super::bounded::read_json(resp, super::bounded::JSON_PAGE).await?;
            let (value, link) = page_of(&v).ok_or_else(|| {
                cut(
                    "InvalidResponse",
                    "Graph answered the draft's attachment list with something else".into(),
                )
            })?;
            for a in value {
                let name = a.get("name").and_then(Value::as_str).unwrap_or_default();
                match a.get("id").and_then(Value::as_str) {
                    Some(id) if !id.is_empty() => ids.push((id.to_owned(), name.to_owned())),
                    _ => {
                        return Err(cut(
                            "InvalidResponse",
                            "an attachment of the draft was listed without an id".into(),
                        ))
                    }
                }
            }
            if let Some(l) = link {
                match Url::parse(&l) {
                    Ok(u) if super::bounded::same_origin(&u, &self.base) => {
                        if pages >= MAX_DRAFT_PAGES {
                            return Err(cut(
                                "ListingIncomplete",
                                format!("the draft's attachment list has more than {MAX_DRAFT_PAGES} pages; it could not be read to its end"),
                            ));
                        }
                        next = Some(u);
                    }
                    _ => {
                        return Err(cut(
                            "UntrustedNextLink",
                            "refusing the draft's attachment list's @odata.nextLink: it is not on graph.base_url's origin, which alone receives the bearer token".into(),
                        ))
                    }
                }
            }
        }
        Ok(ids)
    }

    /// The core's `SendDraft`: one POST of `…/send`, never repeated here. The core's send: the draft is listed again right before the `send`, inside the sending
    /// limit's slot (after every wait of the executor's own), and sent only if it holds exactly
    /// `expect`, the attachments the core's listing showed; else nothing is sent and the answer
    /// is `Permanent` `draftChanged` (`core::machine::DRAFT_CHANGED`): the core lists it again
    /// and decides (a file taken off it in Outlook meanwhile is never sent missing).
    pub async fn send_step(&self, user: &str, draft_id: &str, expect: &[String]) -> SendOutcome {
        match self
            .send_draft_checked(user, &DraftId(draft_id.to_owned()), expect)
            .await
        {
            Ok(()) => SendOutcome::Sent,
            Err(SendCheck::Changed(why)) => SendOutcome::Failed(Fault::Permanent(Failure::new(
                crate::core::machine::DRAFT_CHANGED,
                why,
            ))),
            Err(SendCheck::Send(e)) => SendOutcome::Failed(mail_fault(&e)),
        }
    }

    async fn send_draft_checked(
        &self,
        user: &str,
        id: &DraftId,
        expect: &[String],
    ) -> Result<(), SendCheck> {
        let mut want: Vec<&String> = expect.iter().collect();
        want.sort();
        self.sends
            .send(user, async {
                let mut on = match self.list_draft(user, &id.0).await {
                    Ok(on) => on,
                    // Gone (sent from Outlook, or deleted): the answer the send would have had.
                    Err(e) if matches!(&e, RequestError::Graph(g) if g.status == Some(404)) => {
                        return Err(SendCheck::Send(classify_send(e.of_send())))
                    }
                    Err(e) => {
                        return Err(SendCheck::Changed(format!(
                            "the draft could not be listed right before its send ({e}); nothing \
                             was sent"
                        )))
                    }
                };
                on.sort();
                if on.iter().collect::<Vec<_>>() != want {
                    return Err(SendCheck::Changed(
                        "the draft's attachments changed since it was checked (one taken off \
                         or added in Outlook?); nothing was sent, it is listed again"
                            .to_owned(),
                    ));
                }
                // Not paced: the listing just before took the mailbox's budgets (and any wait
                // for them), so no wait falls between the check and the send.
                self.post_send(user, id, false)
                    .await
                    .map_err(SendCheck::Send)
            })
            .await
    }
}

/// Why [`GraphClient::send_step`] did not send: the draft changed (or could not be listed)
/// right before, or the send itself failed.
enum SendCheck {
    Changed(String),
    Send(MailError),
}

/// `(value, nextLink)` of a listing page.
fn page_of(v: &Value) -> Option<(&Vec<Value>, Option<String>)> {
    let value = v.get("value")?.as_array()?;
    let next = v
        .get("@odata.nextLink")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((value, next))
}

/// What the caller's ledger says of `marker` (a message of its own?); no marker: not its own.
/// A ledger that cannot answer makes the search a transient failure, asked again after a
/// backoff: "not ours" could record a file as mailed for good, "ours" mail it twice.
fn ledger_says(
    ours: &(dyn Fn(&str) -> Result<bool, String> + Sync),
    marker: Option<&str>,
) -> Result<bool, MailError> {
    let Some(marker) = marker else {
        return Ok(false);
    };
    ours(marker).map_err(|e| {
        MailError::Transient(GraphError::new(
            ErrorClass::Transient,
            None,
            "ledgerUnreadable",
            format!("the ledger could not be read: {e}"),
        ))
    })
}

/// An RFC 3339 time as ms since the epoch (`None`: not one, or before 1970).
fn epoch_ms(s: &str) -> Option<Time> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .ok()
        .map(Time)
}

/// Whether a copy sent at `sent` (RFC 3339; unknown counts as recent) is within the window
/// starting at `since` (ms since the epoch).
fn sent_since(sent: Option<&str>, since: Time) -> bool {
    let Some(t) = sent.and_then(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    }) else {
        return true;
    };
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    ms >= i128::from(since.0)
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
        let mut with_wait = GraphError::new(Throttled, Some(503), "ServiceUnavailable", "m");
        with_wait.retry_after = Some(Duration::from_secs(3));
        assert!(matches!(
            c(RequestError::Graph(with_wait.clone())),
            MailError::Ambiguous(_)
        ));
        assert!(matches!(
            classify_send(RequestError::Graph(with_wait)),
            MailError::Throttled(_)
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
        // The core reads the code (it may have been sent: GRAPH.md §13).
        assert!(matches!(
            c(e(Some(403), Permanent, "ErrorExceededMessageLimit")),
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
            created: None,
            subject: None,
            marker: None,
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
