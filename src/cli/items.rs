//! `outbox items messages|events [--search T] [--top N] [--user U] [--json]`: list recent items
//! with their ids, subject, date, attachment count and (messages) whether each is a draft, the
//! only kind of message outbox can attach to, so a user can pick a mapping's target;
//! `--json` gives an array of `{"id","kind","subject","date","isDraft","attachments"}`.

use crate::cli::exit::{CommandError, ExitCode};
use crate::config::{ItemKind, Settings};
use crate::graph::{GraphClient, ItemRef, RequestError};

fn graph_err(base_url: &url::Url, e: RequestError) -> CommandError {
    let code = match &e {
        RequestError::Auth(_) => ExitCode::SignIn,
        RequestError::Graph(g) if g.status == Some(401) => ExitCode::SignIn,
        _ => ExitCode::Failed,
    };
    // GraphError's Display already carries the advice; no answer at all is said as `check` says it.
    match &e {
        RequestError::Graph(g) if g.status.is_none() && crate::cli::out::no_answer(&g.code) => {
            CommandError::new(
                code,
                crate::cli::out::cannot_reach(base_url, &g.to_string()),
            )
        }
        _ => CommandError::new(code, e.to_string()),
    }
}

/// `2026-11-23T02:37:00Z` → `2026-11-23 02:37`.
fn short_date(s: &str) -> String {
    s.chars()
        .take(16)
        .map(|c| if c == 'T' { ' ' } else { c })
        .collect()
}

pub async fn run(
    settings: Settings,
    kind: &str,
    search: Option<&str>,
    top: u32,
    user: &str,
    json: bool,
) -> Result<ExitCode, CommandError> {
    let kind = if kind == "events" {
        ItemKind::Event
    } else {
        ItemKind::Message
    };
    let client = super::check::interactive_client(&settings)
        .map_err(|e| CommandError::new(ExitCode::Failed, e))?;
    let mut segs: Vec<&str> = if user.eq_ignore_ascii_case("me") {
        vec!["me"]
    } else {
        vec!["users", user]
    };
    segs.push(match kind {
        ItemKind::Message => "messages",
        ItemKind::Event => "events",
    });
    let mut url = client.url(&segs);
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("$top", &top.to_string());
        match kind {
            ItemKind::Message => {
                q.append_pair(
                    "$select",
                    "id,subject,createdDateTime,lastModifiedDateTime,hasAttachments,isDraft",
                );
            }
            ItemKind::Event => {
                q.append_pair("$select", "id,subject,start,createdDateTime,hasAttachments");
            }
        }
        if let Some(t) = search.filter(|t| !t.is_empty()) {
            match kind {
                // Messages support $search (a quoted phrase); events do not, so filter on the
                // subject instead.
                ItemKind::Message => {
                    q.append_pair("$search", &format!("\"{}\"", t.replace('"', "")));
                }
                ItemKind::Event => {
                    q.append_pair(
                        "$filter",
                        &format!("contains(subject,'{}')", t.replace('\'', "''")),
                    );
                }
            }
        }
    }
    let v = client
        .get_json(user, url)
        .await
        .map_err(|e| graph_err(&settings.graph.base_url, e))?;
    let items = v
        .get("value")
        .and_then(|x| x.as_array())
        .cloned()
        .unwrap_or_default();
    if items.is_empty() && !json {
        outln!("no {} found", segs[segs.len() - 1]);
        return Ok(ExitCode::Ok);
    }
    let mut rows = Vec::new();
    // Messages: whether each is a draft, the only kind outbox attaches to.
    let drafts = kind == ItemKind::Message;
    if !json {
        if drafts {
            outln!(
                "{:<16}  {:>5}  {:<5}  {:<40}  ID",
                "DATE",
                "ATT",
                "DRAFT",
                "SUBJECT"
            );
        } else {
            outln!("{:<16}  {:>5}  {:<40}  ID", "DATE", "ATT", "SUBJECT");
        }
    }
    for it in &items {
        let Some(id) = it.get("id").and_then(|x| x.as_str()) else {
            continue;
        };
        let date = it
            .pointer("/start/dateTime")
            .or_else(|| it.get("createdDateTime"))
            .and_then(|x| x.as_str())
            .map(short_date)
            .unwrap_or_default();
        let draft = it.get("isDraft").and_then(|x| x.as_bool());
        let att = attachment_count(&client, user, kind, id, it).await;
        if json {
            rows.push(serde_json::json!({
                "id": id,
                "kind": if kind == ItemKind::Event { "event" } else { "message" },
                "subject": it.get("subject").and_then(|x| x.as_str()).unwrap_or_default(),
                "date": it.pointer("/start/dateTime").or_else(|| it.get("createdDateTime")),
                "isDraft": draft,
                "attachments": att.parse::<u64>().ok(),
            }));
            continue;
        }
        let subject = it
            .get("subject")
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("(no subject)")
            .to_string();
        let subject: String = if subject.chars().count() > 40 {
            subject.chars().take(39).chain(['…']).collect()
        } else {
            subject
        };
        if drafts {
            let flag = match draft {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            };
            outln!("{date:<16}  {att:>5}  {flag:<5}  {subject:<40}  {id}");
        } else {
            outln!("{date:<16}  {att:>5}  {subject:<40}  {id}");
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&rows).unwrap_or_default();
        jsonln!("{text}");
    }
    Ok(ExitCode::Ok)
}

/// Graph's list gives only `hasAttachments`; count them when there are some.
async fn attachment_count(
    client: &GraphClient,
    user: &str,
    kind: ItemKind,
    id: &str,
    item: &serde_json::Value,
) -> String {
    if item.get("hasAttachments").and_then(|x| x.as_bool()) == Some(false) {
        return "0".into();
    }
    let item = ItemRef::new(user, kind, id);
    match client.count_attachments(&item).await {
        Ok(n) => n.to_string(),
        Err(_) => "?".into(),
    }
}
