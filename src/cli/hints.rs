//! Second looks that turn a bare refusal from Graph into what to do: an item id of the other kind
//! (`--message` given an event's id), a message that is no longer a draft. Each costs one GET, and
//! only after a failure a person is about to read. Never changes anything.

use crate::config::ItemKind;
use crate::graph::{GraphClient, GraphError, ItemRef};

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
