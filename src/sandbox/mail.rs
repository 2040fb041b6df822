//! Messages as Graph shows them: drafts created by `POST …/messages` (also under
//! `/mailFolders/{folder}/messages`), single-value extended properties stored on them and found
//! by the documented `$filter`, `$expand` and `$select`, and `POST …/messages/{id}/send` with
//! the asynchronous move to Sent Items under a new id. What Graph does and where that is
//! unconfirmed: docs/graph-mail.md. The sandbox takes the strict reading.

use super::faults::{SendInWindow, SendLimitAnswer};
use super::persist::{from_ns, now_ms, unix_ns, AttRec, ItemRec, Record};
use super::state::{
    encoded_len, exchange_id, fmt_seconds, graph_error, not_found_item, with_retry_after,
    Attachment, Inner, Item, Kind, Shared,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// What a message carries beyond the generic item.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MailProps {
    /// Well-known folder name, lowercase (`drafts`, `sentitems`, `inbox`); `None` for items made
    /// by the admin API (a draft is then in Drafts, anything else in the Inbox).
    #[serde(default)]
    pub folder: Option<String>,
    #[serde(default)]
    pub to: Vec<Addr>,
    #[serde(default)]
    pub cc: Vec<Addr>,
    #[serde(default)]
    pub bcc: Vec<Addr>,
    /// `text` or `html`.
    #[serde(default)]
    pub body_type: String,
    #[serde(default)]
    pub body: String,
    /// Single-value extended properties, as given (`id` in the caller's spelling).
    #[serde(default)]
    pub props: Vec<ExtProp>,
    #[serde(default)]
    pub internet_message_id: String,
    #[serde(default)]
    pub conversation_id: String,
    /// When it was sent (Unix ns); `Some` only on a Sent Items copy.
    #[serde(default)]
    pub sent_ns: Option<i64>,
    /// A Sent Items copy made under `sent_copy_without_properties`: Graph shows it without its
    /// extended properties (`$expand` finds none, `$filter` on them misses it); the admin API
    /// and `duplicate_sends` still see them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub props_hidden: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Addr {
    pub address: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExtProp {
    pub id: String,
    pub value: String,
}

/// A send answered 202 whose draft has not moved to Sent Items yet.
#[derive(Clone, Debug)]
pub struct PendingSend {
    pub item: String,
    /// Wall clock (Unix ms), so the move survives a restart.
    pub due_ms: i64,
    /// Copies still to make (a second send inside the window adds one).
    pub copies: u32,
}

/// Record an accepted send (live and on replay).
pub fn note_accepted(g: &mut Inner, item: &str, due_ms: i64) {
    match g.pending_sends.iter_mut().find(|p| p.item == item) {
        Some(p) => p.copies += 1,
        None => g.pending_sends.push(PendingSend {
            item: item.to_string(),
            due_ms,
            copies: 1,
        }),
    }
}

/// One copy of `from` was made (live and on replay).
pub fn note_copied(g: &mut Inner, from: &str) {
    if let Some(p) = g.pending_sends.iter_mut().find(|p| p.item == from) {
        p.copies = p.copies.saturating_sub(1);
    }
    g.pending_sends.retain(|p| p.copies > 0);
}

/// Move every draft whose send is due (all of them with `all`) to Sent Items: one copy per
/// accepted send, each with a new id, `isDraft: false`, `sentDateTime`; then the draft is gone.
/// Exchange gives a new item new attachment ids (an attachment id embeds its item), so every
/// copy's attachments get ids of their own, over the same bytes (hard links to the draft's
/// blobs, which go with the draft). With `sent_copy_without_properties` the copies show no
/// single-value extended properties to Graph (they stay on record for the admin API).
pub fn deliver_due(g: &mut Inner, blobs: &Path, all: bool) {
    let now = now_ms();
    let due: Vec<(String, u32)> = g
        .pending_sends
        .iter()
        .filter(|p| all || p.due_ms <= now)
        .map(|p| (p.item.clone(), p.copies))
        .collect();
    let hide = g.faults.sent_copy_without_properties;
    for (draft_id, copies) in due {
        let Some(draft) = g.items.remove(&draft_id) else {
            g.pending_sends.retain(|p| p.item != draft_id);
            continue;
        };
        let sent = OffsetDateTime::now_utc();
        for _ in 0..copies {
            let atts: Vec<Attachment> = draft
                .attachments
                .iter()
                .map(|a| {
                    let mut c = a.clone();
                    c.id = exchange_id("AAMkADAtt");
                    let (src, dst) = (
                        blobs.join(hex::encode(&a.id)),
                        blobs.join(hex::encode(&c.id)),
                    );
                    if std::fs::hard_link(&src, &dst).is_err() {
                        let _ = std::fs::copy(&src, &dst);
                    }
                    c
                })
                .collect();
            let mut mail = draft.mail.clone();
            mail.folder = Some("sentitems".into());
            mail.sent_ns = Some(unix_ns(sent));
            mail.props_hidden = hide;
            let copy = Item {
                id: exchange_id("AAMkADSnt"),
                kind: Kind::Message,
                user: draft.user.clone(),
                subject: draft.subject.clone(),
                is_draft: false,
                created: sent,
                attachments: atts,
                mail,
            };
            g.log(Record::SentCopy {
                from: draft_id.clone(),
                item: ItemRec::of(&copy),
                atts: copy.attachments.iter().map(AttRec::of).collect(),
            });
            note_copied(g, &draft_id);
            g.items.insert(copy.id.clone(), copy);
        }
        g.pending_sends.retain(|p| p.item != draft_id);
        g.log(Record::ItemDeleted {
            id: draft_id.clone(),
        });
        for a in &draft.attachments {
            let _ = std::fs::remove_file(blobs.join(hex::encode(&a.id)));
        }
    }
}

/// A person sends draft `id` from Outlook (`POST /_admin/items/{id}/send`): it leaves Drafts
/// at once for the Outbox under a new id (Exchange's move gives a moved item a new id), no
/// longer a draft, so every request about the draft's id answers 404 from now; its copy shows
/// in Sent Items after `send_move_delay_ms`, as a send through Graph does (`deliver_due`).
/// Returns the Outbox item's id and when the move is due (Unix ms).
pub fn hand_send(g: &mut Inner, blobs: &Path, id: &str) -> Result<(String, i64), String> {
    let Some(it) = g.items.get(id) else {
        return Err(format!("no such item {id}"));
    };
    if it.kind != Kind::Message || !it.is_draft || folder_of(it) != "drafts" {
        return Err(format!("{id} is not a draft in Drafts"));
    }
    let Some(mut it) = g.items.remove(id) else {
        return Err(format!("no such item {id}"));
    };
    g.log(Record::ItemDeleted { id: id.to_string() });
    it.id = exchange_id("AAMkADOut");
    it.is_draft = false;
    it.mail.folder = Some("outbox".into());
    g.log(Record::Item(ItemRec::of(&it)));
    for a in &it.attachments {
        g.log(Record::Attached {
            item: it.id.clone(),
            att: AttRec::of(a),
        });
    }
    let new_id = it.id.clone();
    g.items.insert(new_id.clone(), it);
    let due_ms = now_ms().saturating_add(g.faults.send_move_delay_ms as i64);
    note_accepted(g, &new_id, due_ms);
    g.log(Record::SendAccepted {
        item: new_id.clone(),
        due_ms,
    });
    if g.faults.send_move_delay_ms == 0 {
        deliver_due(g, blobs, false);
    }
    Ok((new_id, due_ms))
}

/// The folder an item is in.
pub fn folder_of(it: &Item) -> &str {
    match &it.mail.folder {
        Some(f) => f,
        None if it.is_draft => "drafts",
        None => "inbox",
    }
}

/// A well-known folder name (case-insensitive) → its key; other folder ids are not served.
pub fn well_known_folder(s: &str) -> Option<&'static str> {
    match s.to_ascii_lowercase().as_str() {
        "drafts" => Some("drafts"),
        "sentitems" => Some("sentitems"),
        "inbox" => Some("inbox"),
        _ => None,
    }
}

fn folder_id(mailbox: &str, folder: &str) -> String {
    let h = <sha2::Sha256 as sha2::Digest>::digest(format!("{mailbox}/{folder}").as_bytes());
    format!("AQMkADFld{}", hex::encode(&h[..12]))
}

// ---- extended property ids ----

/// The comparable form of an extended property id: type and GUID case-insensitive, the
/// `Name` part case-sensitive, tags as numbers. `None` when it is not an id Graph accepts.
pub fn prop_key(id: &str) -> Option<String> {
    const TYPES: &[&str] = &[
        "string",
        "integer",
        "boolean",
        "binary",
        "systemtime",
        "long",
        "short",
        "double",
        "float",
        "currency",
        "clsid",
        "stringarray",
        "integerarray",
        "binaryarray",
    ];
    let id = id.trim();
    let (ty, rest) = id.split_once(char::is_whitespace)?;
    let ty = ty.to_ascii_lowercase();
    if !TYPES.contains(&ty.as_str()) {
        return None;
    }
    let rest = rest.trim_start();
    let tag = |s: &str| -> Option<u32> {
        let h = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
        u32::from_str_radix(h, 16).ok()
    };
    if let Some(t) = tag(rest) {
        return Some(format!("{ty} 0x{t:x}"));
    }
    let (guid, rest) = rest.split_once(char::is_whitespace)?;
    let g = guid.strip_prefix('{')?.strip_suffix('}')?;
    let groups: Vec<&str> = g.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    if groups.len() != 5
        || groups
            .iter()
            .zip(lens)
            .any(|(p, n)| p.len() != n || !p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let rest = rest.trim_start();
    let (kw, name) = rest.split_once(char::is_whitespace)?;
    let name = name.trim_start();
    match kw.to_ascii_lowercase().as_str() {
        "name" if !name.is_empty() => {
            Some(format!("{ty} {{{}}} name {name}", g.to_ascii_lowercase()))
        }
        "id" => tag(name).map(|t| format!("{ty} {{{}}} id 0x{t:x}", g.to_ascii_lowercase())),
        _ => None,
    }
}

// ---- the OData subset: $filter and $expand ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Sym(char),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some(&(i, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
        } else if c == '\'' {
            it.next();
            let mut v = String::new();
            loop {
                match it.next() {
                    Some((_, '\'')) => {
                        if matches!(it.peek(), Some((_, '\''))) {
                            it.next();
                            v.push('\'');
                        } else {
                            break;
                        }
                    }
                    Some((_, ch)) => v.push(ch),
                    None => return Err(format!("unterminated string starting at {i}")),
                }
            }
            out.push(Tok::Str(v));
        } else if c.is_alphanumeric() || c == '_' || c == '$' || c == '.' {
            let mut v = String::new();
            while let Some(&(_, ch)) = it.peek() {
                if ch.is_alphanumeric() || ch == '_' || ch == '$' || ch == '.' {
                    v.push(ch);
                    it.next();
                } else {
                    break;
                }
            }
            out.push(Tok::Ident(v));
        } else if "()/:=,".contains(c) {
            out.push(Tok::Sym(c));
            it.next();
        } else {
            return Err(format!("unexpected '{c}' at {i}"));
        }
    }
    Ok(out)
}

struct Cursor {
    toks: Vec<Tok>,
    pos: usize,
}

impl Cursor {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn sym(&mut self, c: char) -> Result<(), String> {
        match self.next() {
            Some(Tok::Sym(x)) if x == c => Ok(()),
            other => Err(format!("expected '{c}', found {other:?}")),
        }
    }
    fn is_sym(&self, c: char) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if *x == c)
    }
    fn kw(&mut self, k: &str) -> Result<(), String> {
        match self.next() {
            Some(Tok::Ident(x)) if x.eq_ignore_ascii_case(k) => Ok(()),
            other => Err(format!("expected '{k}', found {other:?}")),
        }
    }
    fn is_kw(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(x)) if x.eq_ignore_ascii_case(k))
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(x)) => Ok(x),
            other => Err(format!("expected a name, found {other:?}")),
        }
    }
    fn string(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Str(x)) => Ok(x),
            other => Err(format!("expected a quoted string, found {other:?}")),
        }
    }
    fn end(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(format!("unexpected {t:?} at the end")),
        }
    }
}

/// A `$filter` on messages the sandbox answers.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageFilter {
    /// `singleValueExtendedProperties/Any(ep: ep/id eq 'ID' [and ep/value eq 'V'])`, or
    /// `[and contains(ep/value, 'V')]` (documented for string-typed properties only).
    ExtProp {
        id: String,
        value: Option<String>,
        contains: Option<String>,
    },
    /// `internetMessageId eq '<…>'`
    InternetMessageId(String),
}

const SVEP: &str = "singleValueExtendedProperties";

/// Parse the `$filter` forms of docs/graph-mail.md: the documented `Any` over
/// `singleValueExtendedProperties` (id clause, optional value clause, either order, optional
/// parentheses, any lambda variable, keywords in any case) and `internetMessageId eq '…'`.
pub fn parse_filter(s: &str) -> Result<MessageFilter, String> {
    let mut c = Cursor {
        toks: tokenize(s)?,
        pos: 0,
    };
    let mut parens = 0;
    while c.is_sym('(') {
        c.next();
        parens += 1;
    }
    let head = c.ident()?;
    let f = if head.eq_ignore_ascii_case(SVEP) {
        c.sym('/')?;
        c.kw("any")?;
        c.sym('(')?;
        let var = c.ident()?;
        c.sym(':')?;
        let (mut id, mut value, mut contains) = (None, None, None);
        let mut first = true;
        loop {
            if !first {
                if c.is_kw("and") {
                    c.next();
                } else {
                    break;
                }
            }
            first = false;
            let mut inner = 0;
            while c.is_sym('(') {
                c.next();
                inner += 1;
            }
            if c.is_kw("contains") {
                c.next();
                c.sym('(')?;
                let v = c.ident()?;
                if v != var {
                    return Err(format!("'{v}' is not the lambda variable '{var}'"));
                }
                c.sym('/')?;
                let field = c.ident()?;
                if !field.eq_ignore_ascii_case("value") {
                    return Err(format!("contains() on '{field}': only ep/value"));
                }
                c.sym(',')?;
                let lit = c.string()?;
                c.sym(')')?;
                for _ in 0..inner {
                    c.sym(')')?;
                }
                if contains.replace(lit).is_some() {
                    return Err("contains() given twice".into());
                }
                continue;
            }
            let v = c.ident()?;
            if v != var {
                return Err(format!("'{v}' is not the lambda variable '{var}'"));
            }
            c.sym('/')?;
            let field = c.ident()?.to_ascii_lowercase();
            c.kw("eq")?;
            let lit = c.string()?;
            for _ in 0..inner {
                c.sym(')')?;
            }
            let slot = match field.as_str() {
                "id" => &mut id,
                "value" => &mut value,
                other => return Err(format!("unsupported property '{other}' in the lambda")),
            };
            if slot.replace(lit).is_some() {
                return Err(format!("'{field}' given twice"));
            }
        }
        c.sym(')')?;
        let id: String = id.ok_or("the lambda must compare ep/id")?;
        if contains.is_some() && !id.trim_start().to_ascii_lowercase().starts_with("string ") {
            // Graph documents contains/startswith on the value of string-typed properties only.
            return Err(format!(
                "contains() on the value of '{id}', which is not a String property"
            ));
        }
        MessageFilter::ExtProp {
            id,
            value,
            contains,
        }
    } else if head.eq_ignore_ascii_case("internetMessageId") {
        c.kw("eq")?;
        MessageFilter::InternetMessageId(c.string()?)
    } else {
        return Err(format!("the sandbox does not filter on '{head}'"));
    };
    for _ in 0..parens {
        c.sym(')')?;
    }
    c.end()?;
    Ok(f)
}

/// Parse `$expand=singleValueExtendedProperties($filter=id eq 'A' [or id eq 'B'])`: the ids
/// whose properties to include.
pub fn parse_expand(s: &str) -> Result<Vec<String>, String> {
    let mut c = Cursor {
        toks: tokenize(s)?,
        pos: 0,
    };
    let head = c.ident()?;
    if !head.eq_ignore_ascii_case(SVEP) {
        return Err(format!("the sandbox does not expand '{head}'"));
    }
    c.sym('(')?;
    let f = c.ident()?;
    if !f.eq_ignore_ascii_case("$filter") {
        return Err(format!("expected $filter, found '{f}'"));
    }
    c.sym('=')?;
    let mut ids = Vec::new();
    loop {
        let mut inner = 0;
        while c.is_sym('(') {
            c.next();
            inner += 1;
        }
        c.kw("id")?;
        c.kw("eq")?;
        ids.push(c.string()?);
        for _ in 0..inner {
            c.sym(')')?;
        }
        if c.is_kw("or") {
            c.next();
        } else {
            break;
        }
    }
    c.sym(')')?;
    c.end()?;
    Ok(ids)
}

fn matches(it: &Item, f: &MessageFilter) -> bool {
    match f {
        MessageFilter::ExtProp {
            id,
            value,
            contains,
        } => {
            let Some(want) = prop_key(id) else {
                return false;
            };
            // Value comparisons are case-insensitive on Graph.
            graph_props(it).iter().any(|p| {
                prop_key(&p.id).as_deref() == Some(want.as_str())
                    && value
                        .as_ref()
                        .is_none_or(|v| p.value.to_lowercase() == v.to_lowercase())
                    && contains
                        .as_ref()
                        .is_none_or(|v| p.value.to_lowercase().contains(&v.to_lowercase()))
            })
        }
        MessageFilter::InternetMessageId(m) => {
            !it.mail.internet_message_id.is_empty() && it.mail.internet_message_id == *m
        }
    }
}

/// The extended properties Graph shows on `it` (none on a copy that dropped them).
fn graph_props(it: &Item) -> &[ExtProp] {
    if it.mail.props_hidden {
        &[]
    } else {
        &it.mail.props
    }
}

// ---- JSON ----

fn addrs_json(a: &[Addr]) -> Value {
    Value::Array(
        a.iter()
            .map(|r| json!({"emailAddress": {"address": r.address, "name": r.name.clone().unwrap_or_else(|| r.address.clone())}}))
            .collect(),
    )
}

/// The message as Graph shows it (`$select`/`$expand` applied by the caller).
pub fn message_json(it: &Item) -> Value {
    let m = &it.mail;
    let me = json!({"emailAddress": {"address": it.user, "name": it.user}});
    let preview: String = m.body.chars().take(255).collect();
    json!({
        "@odata.type": "#microsoft.graph.message",
        "@odata.etag": format!("W/\"{}\"", &it.id[it.id.len().saturating_sub(8)..]),
        "id": it.id,
        "createdDateTime": fmt_seconds(it.created),
        "lastModifiedDateTime": fmt_seconds(it.created),
        "changeKey": &it.id[it.id.len().saturating_sub(8)..],
        "categories": [],
        "receivedDateTime": fmt_seconds(it.created),
        "sentDateTime": m.sent_ns.map(|n| fmt_seconds(from_ns(n))),
        "hasAttachments": !it.attachments.is_empty(),
        "internetMessageId": if m.internet_message_id.is_empty() { Value::Null } else { json!(m.internet_message_id) },
        "subject": it.subject,
        "bodyPreview": preview,
        "importance": "normal",
        "parentFolderId": folder_id(&it.user, folder_of(it)),
        "conversationId": if m.conversation_id.is_empty() { Value::Null } else { json!(m.conversation_id) },
        "isDeliveryReceiptRequested": false,
        "isReadReceiptRequested": false,
        "isRead": true,
        "isDraft": it.is_draft,
        "webLink": format!("https://outlook.office365.com/owa/?ItemID={}", it.id),
        "inferenceClassification": "focused",
        "body": {"contentType": if m.body_type.is_empty() { "text" } else { m.body_type.as_str() }, "content": m.body},
        "sender": if it.is_draft { Value::Null } else { me.clone() },
        "from": if it.is_draft { Value::Null } else { me },
        "toRecipients": addrs_json(&m.to),
        "ccRecipients": addrs_json(&m.cc),
        "bccRecipients": addrs_json(&m.bcc),
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
    })
}

/// The query options of a message request, parsed once.
pub struct View {
    select: Option<HashSet<String>>,
    expand: Option<Vec<String>>,
}

impl View {
    pub fn parse(q: &HashMap<String, String>) -> Result<View, String> {
        let select = q.get("$select").map(|s| {
            s.split(',')
                .map(|p| p.trim().to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect()
        });
        let expand = match q.get("$expand") {
            Some(e) => Some(parse_expand(e)?),
            None => None,
        };
        Ok(View { select, expand })
    }

    pub fn render(&self, it: &Item) -> Value {
        let mut v = message_json(it);
        if let (Some(sel), Some(o)) = (&self.select, v.as_object_mut()) {
            o.retain(|k, _| {
                k.starts_with('@') || k == "id" || sel.contains(&k.to_ascii_lowercase())
            });
        }
        if let Some(ids) = &self.expand {
            let keys: Vec<Option<String>> = ids.iter().map(|i| prop_key(i)).collect();
            let props: Vec<Value> = graph_props(it)
                .iter()
                .filter(|p| {
                    let k = prop_key(&p.id);
                    k.is_some() && keys.contains(&k)
                })
                .map(|p| json!({"id": p.id, "value": p.value}))
                .collect();
            // Graph leaves the navigation property out when nothing matched.
            if !props.is_empty() {
                v["singleValueExtendedProperties"] = Value::Array(props);
            }
        }
        v
    }
}

fn bad_request(h: &HeaderMap, code: &str, msg: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, code, msg, h)
}

fn context(mailbox: &str) -> String {
    format!("https://graph.microsoft.com/v1.0/$metadata#users('{mailbox}')/messages")
}

/// `GET {mb}/[mailFolders/{f}/]messages`: newest first, `$top` (default 10) and `$skip` with an
/// `@odata.nextLink` while more remain; `$filter` as `parse_filter` (anything else naming an
/// extended property or internetMessageId is a 400; other filters keep the old subject search).
pub fn list(
    state: &Shared,
    mailbox: &str,
    folder: Option<&str>,
    q: &HashMap<String, String>,
    self_url: &str,
    h: &HeaderMap,
) -> Response {
    let top: usize = match q.get("$top").map(|t| t.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return bad_request(h, "BadRequest", "Invalid $top value."),
    };
    let skip: usize = match q.get("$skip").map(|t| t.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(_) => return bad_request(h, "BadRequest", "Invalid $skip value."),
    };
    let view = match View::parse(q) {
        Ok(v) => v,
        Err(e) => {
            return bad_request(
                h,
                "BadRequest",
                &format!("Parsing OData Select and Expand failed: {e}"),
            )
        }
    };
    let mut filter = None;
    let mut needle = q.get("$search").map(|s| s.trim_matches('"').to_lowercase());
    if let Some(f) = q.get("$filter") {
        let l = f.to_ascii_lowercase();
        if l.contains(&SVEP.to_ascii_lowercase()) || l.contains("internetmessageid") {
            match parse_filter(f) {
                Ok(p) => filter = Some(p),
                Err(e) => {
                    return bad_request(h, "BadRequest", &format!("Invalid filter clause: {e}"))
                }
            }
        } else {
            needle = f.split('\'').nth(1).map(str::to_lowercase);
        }
    }
    let g = state.lock();
    // `filter_lag_ms`: the search index has not caught up with items made (a draft) or moved
    // (a sent copy) less than this long ago; reads by id find them at once.
    let lag = time::Duration::milliseconds(g.faults.filter_lag_ms.min(i64::MAX as u64) as i64);
    let indexed_before = OffsetDateTime::now_utc() - lag;
    let mut items: Vec<&Item> = g
        .items
        .values()
        .filter(|i| i.user == mailbox && i.kind == Kind::Message)
        .filter(|i| folder.is_none_or(|f| folder_of(i) == f))
        .filter(|i| {
            filter
                .as_ref()
                .is_none_or(|f| i.created <= indexed_before && matches(i, f))
        })
        .filter(|i| {
            needle
                .as_ref()
                .is_none_or(|n| i.subject.to_lowercase().contains(n.as_str()))
        })
        .collect();
    items.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    let total = items.len();
    let value: Vec<Value> = items
        .into_iter()
        .skip(skip)
        .take(top)
        .map(|i| view.render(i))
        .collect();
    let mut out = json!({"@odata.context": context(mailbox), "value": value});
    if skip + top < total {
        let mut pairs: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "$skip")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        pairs.sort();
        pairs.push(("$skip".into(), (skip + top).to_string()));
        let qs = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        out["@odata.nextLink"] = json!(format!("{self_url}?{qs}"));
    }
    axum::Json(out).into_response()
}

/// `GET {mb}/messages/{id}` with `$select`/`$expand`.
pub fn get(
    state: &Shared,
    mailbox: &str,
    folder: Option<&str>,
    id: &str,
    q: &HashMap<String, String>,
    h: &HeaderMap,
) -> Response {
    let view = match View::parse(q) {
        Ok(v) => v,
        Err(e) => {
            return bad_request(
                h,
                "BadRequest",
                &format!("Parsing OData Select and Expand failed: {e}"),
            )
        }
    };
    let g = state.lock();
    match g.items.get(id).filter(|i| {
        i.user == mailbox && i.kind == Kind::Message && folder.is_none_or(|f| folder_of(i) == f)
    }) {
        Some(it) => {
            let mut v = view.render(it);
            v["@odata.context"] = json!(format!("{}/$entity", context(mailbox)));
            axum::Json(v).into_response()
        }
        None => not_found_item(h),
    }
}

/// `DELETE {mb}/messages/{id}` → 204 (its attachments' bytes go too).
pub fn delete(state: &Shared, mailbox: &str, id: &str, h: &HeaderMap) -> Response {
    let removed = {
        let mut g = state.lock();
        let ok = g
            .items
            .get(id)
            .is_some_and(|i| i.user == mailbox && i.kind == Kind::Message);
        if ok {
            g.pending_sends.retain(|p| p.item != id);
            g.log(Record::ItemDeleted { id: id.to_string() });
            g.items.remove(id)
        } else {
            None
        }
    };
    match removed {
        Some(it) => {
            for a in it.attachments {
                let _ = std::fs::remove_file(state.blob_path(&a.id));
            }
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found_item(h),
    }
}

/// Properties a message create body may carry (anything else: 400 `RequestBodyRead`).
const KNOWN: &[&str] = &[
    "@odata.type",
    "subject",
    "body",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "singleValueExtendedProperties",
    "importance",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "categories",
    "internetMessageHeaders",
    "flag",
    "inferenceClassification",
    "from",
    "sender",
    "attachments",
];

/// A file attachment given inline in a create body (`attachments`: Graph's "Create message"
/// takes them in JSON format).
struct Inline {
    name: String,
    content_type: String,
    bytes: Vec<u8>,
    is_inline: bool,
    content_id: Option<String>,
}

/// Parse `attachments` of a create body: `fileAttachment`s with `name` and base64
/// `contentBytes` (no `@odata.type`: 422 `UnprocessableType`, as for the attachment POST).
fn parse_inline(v: Option<&Value>) -> Result<Vec<Inline>, (StatusCode, &'static str, String)> {
    use base64::Engine;
    let Some(arr) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let bad = |m: String| (StatusCode::BAD_REQUEST, "RequestBodyRead", m);
    let arr = arr
        .as_array()
        .ok_or_else(|| bad("'attachments' must be an array".into()))?;
    arr.iter()
        .map(|a| {
            let Some(t) = a.get("@odata.type").and_then(Value::as_str) else {
                return Err((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "UnprocessableType",
                    "Cannot process input of abstract type 'Microsoft.OutlookServices.Attachment'"
                        .to_string(),
                ));
            };
            if t.trim_start_matches('#') != "microsoft.graph.fileAttachment" {
                return Err(bad(format!(
                    "The sandbox only supports '#microsoft.graph.fileAttachment', not '{t}'."
                )));
            }
            let name = a
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| bad("An attachment has no 'name'.".into()))?;
            let b64 = a
                .get("contentBytes")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("The attachment '{name}' has no 'contentBytes'.")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| {
                    bad(format!(
                        "The 'contentBytes' of '{name}' is not valid base64."
                    ))
                })?;
            Ok(Inline {
                name: name.to_string(),
                content_type: a
                    .get("contentType")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        mime_guess::from_path(name)
                            .first_or_octet_stream()
                            .to_string()
                    }),
                bytes,
                is_inline: a.get("isInline").and_then(Value::as_bool).unwrap_or(false),
                content_id: a
                    .get("contentId")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        })
        .collect()
}

fn parse_addrs(v: Option<&Value>, key: &str) -> Result<Vec<Addr>, String> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    if v.is_null() {
        return Ok(Vec::new());
    }
    let arr = v
        .as_array()
        .ok_or_else(|| format!("'{key}' must be an array of recipients"))?;
    arr.iter()
        .map(|r| {
            let e = r
                .get("emailAddress")
                .ok_or_else(|| format!("a recipient in '{key}' has no 'emailAddress'"))?;
            let address = e
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("a recipient in '{key}' has no 'address'"))?;
            Ok(Addr {
                address: address.to_string(),
                name: e.get("name").and_then(Value::as_str).map(str::to_string),
            })
        })
        .collect()
}

fn parse_props(v: Option<&Value>) -> Result<Vec<ExtProp>, (String, String)> {
    let Some(arr) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let arr = arr.as_array().ok_or_else(|| {
        (
            "RequestBodyRead".to_string(),
            "'singleValueExtendedProperties' must be an array".to_string(),
        )
    })?;
    let mut out: Vec<ExtProp> = Vec::new();
    for p in arr {
        let id = p.get("id").and_then(Value::as_str).unwrap_or_default();
        let Some(key) = prop_key(id) else {
            return Err((
                "ErrorInvalidProperty".into(),
                format!("The extended property id '{id}' is not valid."),
            ));
        };
        let value = match p.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => {
                return Err((
                    "ErrorInvalidProperty".into(),
                    format!("The extended property '{id}' has no value."),
                ))
            }
            Some(other) => other.to_string(),
        };
        out.retain(|q| prop_key(&q.id).as_deref() != Some(key.as_str()));
        out.push(ExtProp {
            id: id.to_string(),
            value,
        });
    }
    Ok(out)
}

/// `PATCH {mb}/messages/{id}`: single-value extended properties created or replaced on a
/// message (Graph's documented way to set them on an existing item), and `subject` and `body`
/// (`{"contentType": "text"|"html", "content"}`), which Graph updates only while the message is
/// a draft (on a sent one: 400 `ErrorInvalidPropertyUpdateSentMessage`) → 200 with the
/// message. The sandbox updates nothing else (any other property: 400).
pub fn patch(state: &Shared, mailbox: &str, id: &str, body: &Value, h: &HeaderMap) -> Response {
    const PATCHABLE: [&str; 3] = ["singleValueExtendedProperties", "subject", "body"];
    let Some(obj) = body.as_object() else {
        return bad_request(h, "RequestBodyRead", "the body must be a JSON object");
    };
    if let Some(k) = obj.keys().find(|k| !PATCHABLE.contains(&k.as_str())) {
        return bad_request(
            h,
            "RequestBodyRead",
            &format!(
                "the sandbox updates only {} on a message, not '{k}'",
                PATCHABLE.join(", ")
            ),
        );
    }
    let props = match parse_props(obj.get("singleValueExtendedProperties")) {
        Ok(p) => p,
        Err((code, msg)) => return bad_request(h, &code, &msg),
    };
    let subject = match obj.get("subject") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return bad_request(h, "RequestBodyRead", "'subject' must be a string"),
    };
    let new_body = match obj.get("body") {
        None => None,
        Some(b) => {
            let ty = b
                .get("contentType")
                .and_then(Value::as_str)
                .unwrap_or("text")
                .to_ascii_lowercase();
            if ty != "text" && ty != "html" {
                return bad_request(
                    h,
                    "RequestBodyRead",
                    &format!("'{ty}' is not a valid body contentType (text, html)."),
                );
            }
            let Some(c) = b.get("content").and_then(Value::as_str) else {
                return bad_request(h, "RequestBodyRead", "'body' must have a 'content' string");
            };
            Some((ty, c.to_string()))
        }
    };
    {
        let mut g = state.lock();
        let Some(it) = g
            .items
            .get_mut(id)
            .filter(|i| i.user == mailbox && i.kind == Kind::Message)
        else {
            return not_found_item(h);
        };
        if (subject.is_some() || new_body.is_some()) && !it.is_draft {
            return bad_request(
                h,
                "ErrorInvalidPropertyUpdateSentMessage",
                "Update operation is not supported on a sent message: subject and body are updatable only while it is a draft.",
            );
        }
        for p in props {
            let k = prop_key(&p.id);
            it.mail.props.retain(|q| prop_key(&q.id) != k);
            it.mail.props.push(p);
        }
        if let Some(sub) = subject {
            it.subject = sub;
        }
        if let Some((ty, content)) = new_body {
            it.mail.body_type = ty;
            it.mail.body = content;
        }
        let rec = ItemRec::of(it);
        g.log(Record::Item(rec));
    }
    get(state, mailbox, None, id, &HashMap::new(), h)
}

/// `POST {mb}/[mailFolders/{f}/]messages` → 201 with the draft.
pub fn create(
    state: &Shared,
    mailbox: &str,
    folder: Option<&str>,
    body: &Value,
    h: &HeaderMap,
) -> Response {
    let Some(obj) = body.as_object() else {
        return bad_request(
            h,
            "RequestBodyRead",
            "The request body must be a JSON object.",
        );
    };
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return bad_request(
            h,
            "RequestBodyRead",
            &format!("The property '{k}' does not exist on type 'Microsoft.OutlookServices.Message' (the sandbox takes {}).", KNOWN.join(", ")),
        );
    }
    let addrs = |k| parse_addrs(obj.get(k), k);
    let (to, cc, bcc) = match (
        addrs("toRecipients"),
        addrs("ccRecipients"),
        addrs("bccRecipients"),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return bad_request(h, "RequestBodyRead", &e)
        }
    };
    let props = match parse_props(obj.get("singleValueExtendedProperties")) {
        Ok(p) => p,
        Err((code, msg)) => return bad_request(h, &code, &msg),
    };
    let (body_type, content) = match obj.get("body") {
        None | Some(Value::Null) => ("text".to_string(), String::new()),
        Some(b) => {
            let ty = b
                .get("contentType")
                .and_then(Value::as_str)
                .unwrap_or("text")
                .to_ascii_lowercase();
            if ty != "text" && ty != "html" {
                return bad_request(
                    h,
                    "RequestBodyRead",
                    &format!("'{ty}' is not a valid body contentType (text, html)."),
                );
            }
            let c = b.get("content").and_then(Value::as_str).unwrap_or_default();
            (ty, c.to_string())
        }
    };
    let inline = match parse_inline(obj.get("attachments")) {
        Ok(a) => a,
        Err((status, code, msg)) => return graph_error(status, code, &msg, h),
    };
    if let Some(limit) = state.lock().faults.message_size_limit {
        let total: u64 = inline
            .iter()
            .map(|a| encoded_len(a.bytes.len() as u64))
            .sum();
        if total > limit {
            return bad_request(
                h,
                "ErrorMessageSizeExceeded",
                "The message exceeds the maximum supported size.",
            );
        }
    }
    let subject = obj
        .get("subject")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let now = OffsetDateTime::now_utc();
    let mut attachments: Vec<Attachment> = Vec::with_capacity(inline.len());
    for a in inline {
        let id = exchange_id("AAMkADAtt");
        if super::persist::write_private(&state.blob_path(&id), &a.bytes).is_err() {
            for done in &attachments {
                let _ = std::fs::remove_file(state.blob_path(&done.id));
            }
            return graph_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ErrorInternalServerError",
                "Could not store the attachment.",
                h,
            );
        }
        attachments.push(Attachment {
            id,
            name: a.name,
            content_type: a.content_type,
            size: a.bytes.len() as u64,
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&a.bytes)),
            is_inline: a.is_inline,
            content_id: a.content_id,
            modified: now,
        });
    }
    let item = Item {
        id: exchange_id("AAMkADMsg"),
        kind: Kind::Message,
        user: mailbox.to_string(),
        subject,
        is_draft: true,
        created: now,
        attachments,
        mail: MailProps {
            folder: Some(folder.unwrap_or("drafts").to_string()),
            to,
            cc,
            bcc,
            body_type,
            body: content,
            props,
            internet_message_id: format!(
                "<{}@sandbox.prod.outlook.test>",
                uuid::Uuid::new_v4().simple()
            ),
            conversation_id: exchange_id("AAQkADCnv"),
            sent_ns: None,
            props_hidden: false,
        },
    };
    let mut out = message_json(&item);
    out["@odata.context"] = json!(format!("{}/$entity", context(mailbox)));
    // The create answer carries no extended properties (Graph needs $expand for them).
    let mut g = state.lock();
    g.log(Record::Item(ItemRec::of(&item)));
    for a in &item.attachments {
        g.log(Record::Attached {
            item: item.id.clone(),
            att: AttRec::of(a),
        });
    }
    g.stats.attachments_created += item.attachments.len() as u64;
    g.items.insert(item.id.clone(), item);
    g.stats.drafts_created += 1;
    (StatusCode::CREATED, axum::Json(out)).into_response()
}

/// A plausible address: one `@`, something either side, a dot in the domain, no spaces.
pub fn plausible_address(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !a.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `POST {mb}/messages/{id}/send` → 202, empty body; the move to Sent Items happens after
/// `send_move_delay_ms` (see `deliver_due`).
pub fn send(state: &Shared, mailbox: &str, id: &str, h: &HeaderMap) -> Response {
    let mut g = state.lock();
    let inner = &mut *g;
    let Some(it) = inner
        .items
        .get(id)
        .filter(|i| i.user == mailbox && i.kind == Kind::Message)
    else {
        return not_found_item(h);
    };
    if !it.is_draft {
        return graph_error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
            h,
        );
    }
    let m = &it.mail;
    if m.to.is_empty() && m.cc.is_empty() && m.bcc.is_empty() {
        return bad_request(
            h,
            "ErrorInvalidRecipients",
            "At least one recipient is not valid., A message can't be sent because it contains no recipients.",
        );
    }
    if m.to
        .iter()
        .chain(&m.cc)
        .chain(&m.bcc)
        .any(|a| !plausible_address(&a.address))
    {
        return bad_request(
            h,
            "ErrorInvalidRecipients",
            "At least one recipient is not valid.",
        );
    }
    let in_window = inner.pending_sends.iter().any(|p| p.item == id);
    if in_window && inner.faults.send_in_window == SendInWindow::Refuse {
        return graph_error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
            h,
        );
    }
    if let Some(b) = inner.faults.mailbox_sends.clone() {
        let now = Instant::now();
        let win = Duration::from_secs(b.window_secs);
        let w = inner.send_window.entry(mailbox.to_string()).or_default();
        while w.front().is_some_and(|t| now.duration_since(*t) >= win) {
            w.pop_front();
        }
        if w.len() as u64 >= b.amount {
            let wait = w
                .front()
                .map(|t| win.saturating_sub(now.duration_since(*t)).as_secs() + 1)
                .unwrap_or(1);
            inner.stats.sends_over_limit += 1;
            let msg = "Cannot send mail: the mailbox's message rate limit was exceeded.";
            return match inner.faults.send_limit_answer {
                SendLimitAnswer::Throttle => {
                    inner.stats.throttled_429 += 1;
                    with_retry_after(
                        graph_error(
                            StatusCode::TOO_MANY_REQUESTS,
                            "ErrorExceededMessageLimit",
                            msg,
                            h,
                        ),
                        Some(wait),
                    )
                }
                SendLimitAnswer::Refuse => {
                    graph_error(StatusCode::FORBIDDEN, "ErrorExceededMessageLimit", msg, h)
                }
            };
        }
        w.push_back(now);
    }
    let due_ms = now_ms().saturating_add(inner.faults.send_move_delay_ms as i64);
    note_accepted(inner, id, due_ms);
    inner.log(Record::SendAccepted {
        item: id.to_string(),
        due_ms,
    });
    inner.stats.sends_accepted += 1;
    if inner.faults.send_move_delay_ms == 0 {
        deliver_due(inner, &state.data_dir.join("blobs"), false);
    }
    let mut resp = StatusCode::ACCEPTED.into_response();
    resp.headers_mut()
        .insert(axum::http::header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

// ---- admin ----

fn prop_values(it: &Item) -> Vec<(String, String)> {
    it.mail
        .props
        .iter()
        .filter_map(|p| prop_key(&p.id).map(|k| (k, p.value.to_lowercase())))
        .collect()
}

/// Sent messages that share an extended property value with an earlier sent message of the
/// same mailbox: each is one duplicate send. (Not outbox's `outboxFileKeys`: it names the files,
/// not the message, and a file dropped again on purpose is mailed again under the same key.)
pub fn duplicate_sends(g: &Inner) -> u64 {
    const FILE_KEYS_NAME: &str = " name outboxFileKeys";
    let mut sent: Vec<&Item> = g
        .items
        .values()
        .filter(|i| i.mail.sent_ns.is_some())
        .collect();
    sent.sort_by_key(|i| (i.mail.sent_ns, i.id.clone()));
    let mut seen: HashSet<(String, String, String)> = HashSet::new();
    let mut dups = 0;
    for it in sent {
        let keys: Vec<(String, String, String)> = prop_values(it)
            .into_iter()
            .filter(|(k, _)| !k.ends_with(FILE_KEYS_NAME))
            .map(|(k, v)| (it.user.clone(), k, v))
            .collect();
        if keys.iter().any(|k| seen.contains(k)) {
            dups += 1;
        }
        seen.extend(keys);
    }
    dups
}

fn addr_list(a: &[Addr]) -> Value {
    Value::Array(a.iter().map(|r| json!(r.address)).collect())
}

/// `GET /_admin/sent`: every message in Sent Items, oldest send first.
pub fn admin_sent(g: &Inner) -> Value {
    let mut sent: Vec<&Item> = g
        .items
        .values()
        .filter(|i| i.mail.sent_ns.is_some())
        .collect();
    sent.sort_by_key(|i| (i.mail.sent_ns, i.id.clone()));
    Value::Array(
        sent.into_iter()
            .map(|it| {
                let m = &it.mail;
                let props: Map<String, Value> = m
                    .props
                    .iter()
                    .map(|p| (p.id.clone(), json!(p.value)))
                    .collect();
                json!({
                    "id": it.id,
                    "user": it.user,
                    "subject": it.subject,
                    "to": addr_list(&m.to),
                    "cc": addr_list(&m.cc),
                    "bcc": addr_list(&m.bcc),
                    "bodyType": m.body_type,
                    "body": m.body,
                    "internetMessageId": m.internet_message_id,
                    "conversationId": m.conversation_id,
                    "sentDateTime": m.sent_ns.map(|n| fmt_seconds(from_ns(n))),
                    "sentMs": m.sent_ns.map(|n| n / 1_000_000),
                    "extendedProperties": props,
                    "propertiesDropped": m.props_hidden,
                    "attachments": it.attachments.iter().map(|a| json!({"id": a.id, "name": a.name, "size": a.size, "sha256": a.sha256})).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// `GET /_admin/sends/pending`: accepted sends whose draft has not moved yet.
pub fn admin_pending(g: &Inner) -> Value {
    Value::Array(
        g.pending_sends
            .iter()
            .map(|p| json!({"item": p.item, "dueMs": p.due_ms, "copies": p.copies}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name outboxMessageId";

    #[test]
    fn the_documented_filter_parses_in_its_spellings() {
        let want = MessageFilter::ExtProp {
            id: ID.into(),
            value: Some("m-1".into()),
            contains: None,
        };
        for f in [
            format!("singleValueExtendedProperties/Any(ep: ep/id eq '{ID}' and ep/value eq 'm-1')"),
            format!("SingleValueExtendedProperties/any(x:x/id eq '{ID}' AND x/value eq 'm-1')"),
            format!("(singleValueExtendedProperties/Any(ep: (ep/value eq 'm-1') and (ep/id eq '{ID}')))"),
            format!("  singleValueExtendedProperties / Any ( ep : ep/id  eq '{ID}' and ep/value eq 'm-1' ) "),
        ] {
            assert_eq!(parse_filter(&f), Ok(want.clone()), "{f}");
        }
        assert_eq!(
            parse_filter("internetMessageId eq '<a''b@x>'"),
            Ok(MessageFilter::InternetMessageId("<a'b@x>".into()))
        );
    }

    #[test]
    fn contains_on_a_string_property_value_parses_and_on_anything_else_is_refused() {
        let f = format!(
            "singleValueExtendedProperties/Any(ep: ep/id eq '{ID}' and contains(ep/value, 'k1'))"
        );
        assert_eq!(
            parse_filter(&f),
            Ok(MessageFilter::ExtProp {
                id: ID.into(),
                value: None,
                contains: Some("k1".into()),
            })
        );
        let int = "singleValueExtendedProperties/Any(ep: ep/id eq 'Integer 0x1234' and contains(ep/value, '1'))";
        assert!(parse_filter(int).is_err());
        let id = format!(
            "singleValueExtendedProperties/Any(ep: ep/id eq '{ID}' and contains(ep/id, 'x'))"
        );
        assert!(parse_filter(&id).is_err());
    }

    #[test]
    fn other_filters_are_refused() {
        for f in [
            "singleValueExtendedProperties/Any(ep: ep/value eq 'x')",
            "singleValueExtendedProperties/Any(ep: other/id eq 'x')",
            "singleValueExtendedProperties/Any(ep: ep/id eq 'x' or ep/value eq 'y')",
            "singleValueExtendedProperties/Any(ep: ep/id eq 'x' and ep/value ne 'y')",
            "singleValueExtendedProperties/Any(ep: ep/id eq 'x'",
            "singleValueExtendedProperties/Any(ep: ep/id eq 'x) and",
            "singleValueExtendedProperties/Any(ep: ep/id eq 'x' and ep/id eq 'y')",
            // Two lambdas joined by `or` (one search for several file keys): not documented
            // for extended properties, so refused; the client asks one key at a time.
            "singleValueExtendedProperties/Any(ep: ep/id eq 'String {4f0c6e1a-8b3d-4c52-9e7f-2a1d5b6c7e80} Name k' and contains(ep/value, 'a')) or singleValueExtendedProperties/Any(ep: ep/id eq 'String {4f0c6e1a-8b3d-4c52-9e7f-2a1d5b6c7e80} Name k' and contains(ep/value, 'b'))",
            "subject eq 'x'",
            "",
        ] {
            assert!(parse_filter(f).is_err(), "{f}");
        }
    }

    #[test]
    fn prop_ids_compare_as_graph_does() {
        let a = prop_key(ID);
        assert!(a.is_some());
        assert_eq!(
            a,
            prop_key("string {66F5A359-4659-4830-9070-00047EC6AC6E} name outboxMessageId")
        );
        assert_ne!(
            a,
            prop_key("String {66f5a359-4659-4830-9070-00047ec6ac6e} Name OUTBOXMESSAGEID")
        );
        assert_eq!(prop_key("Binary 0x0E0A"), prop_key("binary 0xe0a"));
        for bad in [
            "String",
            "String {nope} Name x",
            "Str 0x1",
            "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name",
            "",
        ] {
            assert_eq!(prop_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn expand_takes_one_or_more_ids() {
        assert_eq!(
            parse_expand(&format!(
                "singleValueExtendedProperties($filter=id eq '{ID}')"
            )),
            Ok(vec![ID.to_string()])
        );
        assert_eq!(
            parse_expand("SingleValueExtendedProperties($filter=(Id eq 'a') or id eq 'b')"),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert!(parse_expand("attachments").is_err());
    }
}
