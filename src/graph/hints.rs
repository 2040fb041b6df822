//! Second looks that turn a bare refusal from Graph into what to do: an item id of the other kind
//! (`--message` given an event's id), a message that is no longer a draft. Each costs one GET, and
//! only after a failure a person is about to read (`send`, `check`, and the agent's failed
//! entries, once per item). Never changes anything.

use crate::config::ItemKind;
use crate::core::model::Failure;
use crate::graph::{ErrorClass, GraphClient, GraphError, ItemRef};

/// What a second look found about a refused item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemFinding {
    /// The id names an item of this other kind.
    OtherKind(ItemKind),
    /// A message that is not a draft (already sent): Graph refuses attachments to it.
    NotDraft,
}

pub fn kind_word(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Message => "message",
        ItemKind::Event => "event",
    }
}

fn a_kind(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Message => "a message",
        ItemKind::Event => "an event",
    }
}

/// After `err` about `item`: a 404 may be an id of the other kind, a 403 on a message may be a
/// sent message. `None` when the second look finds nothing to add.
pub async fn look_again(
    client: &GraphClient,
    item: &ItemRef,
    err: &GraphError,
) -> Option<ItemFinding> {
    match err.status {
        Some(404) => {
            let other = match item.kind {
                ItemKind::Message => ItemKind::Event,
                ItemKind::Event => ItemKind::Message,
            };
            let probe = ItemRef::new(item.user.clone(), other, item.id.clone());
            let url = client.url(&probe.segments());
            client
                .get_json(&item.user, url)
                .await
                .ok()
                .map(|_| ItemFinding::OtherKind(other))
        }
        Some(403) if item.kind == ItemKind::Message => {
            let url = client.url(&item.segments());
            let v = client.get_json(&item.user, url).await.ok()?;
            (v.get("isDraft").and_then(|d| d.as_bool()) == Some(false))
                .then_some(ItemFinding::NotDraft)
        }
        _ => None,
    }
}

/// The sentence for `send`, whose flags are `--message`/`--event`.
pub fn for_send(finding: ItemFinding) -> String {
    match finding {
        ItemFinding::OtherKind(k) => format!(
            "that id is {} of this mailbox, not {}: use --{} ID",
            a_kind(k),
            a_kind(other(k)),
            kind_word(k)
        ),
        ItemFinding::NotDraft => NOT_DRAFT.into(),
    }
}

/// The sentence for a mapping in the config, whose keys are `message`/`event`.
pub fn for_mapping(finding: ItemFinding) -> String {
    match finding {
        ItemFinding::OtherKind(k) => format!(
            "that id is {} of this mailbox, not {}: write it as `{} = \"...\"` in the mapping",
            a_kind(k),
            a_kind(other(k)),
            kind_word(k)
        ),
        ItemFinding::NotDraft => NOT_DRAFT.into(),
    }
}

const NOT_DRAFT: &str = "the message is not a draft (already sent?), and Graph attaches only to \
drafts: permissions are not the problem; pick a draft with `outbox items messages`";

fn other(k: ItemKind) -> ItemKind {
    match k {
        ItemKind::Message => ItemKind::Event,
        ItemKind::Event => ItemKind::Message,
    }
}

/// Graph's 403/404 answer back from the core's failure (`CODE (HTTP 404): message — advice`,
/// as `GraphError` shows itself), for the second look.
pub fn graph_error_of(f: &Failure) -> Option<GraphError> {
    let status = [403u16, 404]
        .into_iter()
        .find(|s| f.message.starts_with(&format!("{} (HTTP {s}): ", f.code)))?;
    let raw = &f.message[format!("{} (HTTP {status}): ", f.code).len()..];
    let g = GraphError::new(ErrorClass::Permanent, Some(status), f.code.clone(), raw);
    let raw = match g.advice() {
        Some(a) => raw.strip_suffix(&format!(" — {a}")).unwrap_or(raw),
        None => raw,
    };
    Some(GraphError::new(
        ErrorClass::Permanent,
        Some(status),
        f.code.clone(),
        raw,
    ))
}

/// The agent's failure of a file sent to a mapping's item, with what a second look finds (an id
/// of the other kind, a message that is not a draft) in place of Graph's generic advice; `None`
/// when it finds nothing to add.
pub async fn for_mapping_failure(
    client: &GraphClient,
    item: &ItemRef,
    f: &Failure,
) -> Option<Failure> {
    let g = graph_error_of(f)?;
    let found = look_again(client, item, &g).await?;
    Some(Failure::new(
        f.code.clone(),
        format!("{}: {} — {}", g.code, g.message, for_mapping(found)),
    ))
}
