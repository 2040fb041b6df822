//! OneDrive: `{me|users/{id}}/drive` and `drives/{driveId}` under `/v1.0` — the drive, items by
//! path (`root:/a/b.pdf`) and by id (`items/{id}`, `items/{id}:/rel/path:`), upload sessions
//! (`…:/createUploadSession`, PUT fragments on `/api/v2.0/drives/…/uploadSession` URLs served by
//! `upload.rs`, completed here), `createLink`, and the links' `webUrl`s (`/s/{token}`, no auth).
//! OneDrive's rules as GRAPH.md §4 and §14 give them; where they are unconfirmed the strict
//! reading, with a fault knob where a test needs the other one. See docs/sandbox.md, "OneDrive".

use super::graph_api::read_json;
use super::persist::{unix_ns, Record};
use super::state::{fmt_7, fmt_seconds, graph_error, random_token, Inner, Session, Shared};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use time::OffsetDateTime;

/// OneDrive's fragment rule: every fragment but the last a multiple of 320 KiB.
pub const FRAGMENT_UNIT: u64 = 320 * 1024;
/// Each fragment under 60 MiB.
pub const FRAGMENT_MAX: u64 = 60 * 1024 * 1024;
/// A session's size before its first fragment declares it (`fileSize` not given).
pub const SIZE_UNKNOWN: u64 = u64::MAX;

/// A file or folder on a user's OneDrive. Its bytes are the blob named by its id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriveItem {
    pub id: String,
    /// The drive's owner (mailbox key).
    pub user: String,
    /// From the root, `/`-separated, no leading `/`: `Outbox/invoices/a.pdf`. Names keep the
    /// case they were created with and are compared without it, as OneDrive does.
    pub path: String,
    pub folder: bool,
    pub size: u64,
    pub sha256: String,
    #[serde(rename = "quickXorHash")]
    pub quick_xor: String,
    pub created_ns: i64,
    pub modified_ns: i64,
}

impl DriveItem {
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
    fn parent_path(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(p, _)| p)
    }
}

/// A sharing link (`createLink`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Link {
    pub id: String,
    pub item: String,
    pub user: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub scope: String,
    /// The secret part of its `webUrl` (`/s/{token}`).
    pub token: String,
    pub expires: Option<String>,
    pub created_ns: i64,
}

/// Where a drive upload session's file goes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DriveTarget {
    /// The parent folder's path (`""` = the root).
    pub parent: String,
    pub conflict: Conflict,
}

/// `item.@microsoft.graph.conflictBehavior`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Conflict {
    Fail,
    Rename,
    Replace,
}

/// A drive's id names its owner: `b!` + base64url of the mailbox key (real ids also start `b!`).
pub fn drive_id(user: &str) -> String {
    format!(
        "b!{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user)
    )
}

/// The owner of a drive id, for `/drives/{id}`.
pub fn owner_of(drive: &str) -> Option<String> {
    let raw = drive.strip_prefix("b!")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// A OneDrive-for-Business-looking item id: `01` and 32 of `A-Z2-7`.
fn new_item_id() -> String {
    let mut b = [0u8; 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
    format!("01{}", &base32(&b)[..32])
}

fn root_id(user: &str) -> String {
    let h = <sha2::Sha256 as sha2::Digest>::digest(user.as_bytes());
    format!("01{}", &base32(&h)[..32])
}

fn base32(b: &[u8]) -> String {
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0);
    for &x in b {
        acc = (acc << 8) | x as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(A[((acc >> bits) & 31) as usize] as char);
        }
    }
    out
}

/// OneDrive's error answers use its own codes (`itemNotFound`, `invalidRequest`, ...).
pub fn not_found(h: &HeaderMap) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        "The resource could not be found.",
        h,
    )
}

pub fn invalid(h: &HeaderMap, msg: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "invalidRequest", msg, h)
}

fn name_taken(h: &HeaderMap) -> Response {
    graph_error(
        StatusCode::CONFLICT,
        "nameAlreadyExists",
        "The specified item name already exists.",
        h,
    )
}

/// `a//b/` → `a/b`; every name checked as OneDrive for Business checks names.
fn clean_path(p: &str, h: &HeaderMap) -> Result<String, Response> {
    let names: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    for n in &names {
        let bad = n
            .chars()
            .any(|c| "\"*:<>?\\|".contains(c) || c.is_control())
            || n.starts_with(' ')
            || n.ends_with(' ')
            || n.ends_with('.');
        if bad {
            return Err(invalid(
                h,
                &format!("The name '{n}' contains characters OneDrive does not allow, or ends with a space or a dot."),
            ));
        }
    }
    Ok(names.join("/"))
}

fn same_path(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

pub fn find_by_path<'a>(g: &'a Inner, user: &str, path: &str) -> Option<&'a DriveItem> {
    g.drive_items
        .values()
        .find(|i| i.user == user && same_path(&i.path, path))
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// What a request under `drive/` names.
#[derive(Debug, PartialEq, Eq)]
enum Addr {
    /// `drive` itself.
    Drive,
    /// An item: `root`, `root:/path:`, `items/{id}`, `items/{id}:/rel:`.
    Item {
        id: Option<String>,
        path: Option<String>,
    },
}

/// `root:/a/b.pdf:/createUploadSession` → (item at `a/b.pdf`, `createUploadSession`).
fn parse(tail: &str) -> Option<(Addr, Option<String>)> {
    if tail.is_empty() {
        return Some((Addr::Drive, None));
    }
    let (id, rest) = if let Some(r) = tail.strip_prefix("root") {
        (None, r)
    } else {
        let r = tail.strip_prefix("items/")?;
        let end = r.find([':', '/']).unwrap_or(r.len());
        let id = &r[..end];
        if id.is_empty() {
            return None;
        }
        (
            (!id.eq_ignore_ascii_case("root")).then(|| id.to_string()),
            &r[end..],
        )
    };
    let (path, rest) = match rest.strip_prefix(':') {
        Some(r) => match r.find(':') {
            Some(e) => (Some(r[..e].to_string()), &r[e + 1..]),
            None => (Some(r.to_string()), ""),
        },
        None => (None, rest),
    };
    let action = match rest.strip_prefix('/') {
        Some(a) if !a.is_empty() => Some(a.trim_start_matches("microsoft.graph.").to_string()),
        Some(_) => None,
        None if rest.is_empty() => None,
        None => return None,
    };
    Some((Addr::Item { id, path }, action))
}

/// The fault class of a request under `drive/` (`fail_next` routes `drive_session`, `link`).
pub fn route_class(m: &Method, tail: &str) -> super::faults::RouteClass {
    use super::faults::RouteClass;
    let action = parse(tail).and_then(|(_, a)| a);
    match (m, action.as_deref()) {
        (&Method::POST, Some("createUploadSession")) => RouteClass::DriveSession,
        (&Method::POST, Some("createLink")) => RouteClass::Link,
        (&Method::DELETE, _) => RouteClass::Delete,
        _ => RouteClass::Get,
    }
}

/// The item a request names: `Ok(None)` for the root folder. `Err` when it does not exist.
fn resolve(
    g: &Inner,
    user: &str,
    id: Option<&str>,
    path: Option<&str>,
    h: &HeaderMap,
) -> Result<(String, Option<DriveItem>), Response> {
    let base = match id {
        None => String::new(),
        Some(id) if id == root_id(user) => String::new(),
        Some(id) => match g.drive_items.get(id).filter(|i| i.user == user) {
            Some(i) if i.folder || path.is_none() => i.path.clone(),
            Some(_) => return Err(invalid(h, "Only a folder has children.")),
            None => return Err(not_found(h)),
        },
    };
    let full = match path {
        Some(p) => join(&base, &clean_path(p, h)?),
        None => base,
    };
    if full.is_empty() {
        return Ok((full, None));
    }
    match find_by_path(g, user, &full) {
        Some(i) => Ok((i.path.clone(), Some(i.clone()))),
        None => Err(not_found(h)),
    }
}

/// Like `resolve`, for an item that need not exist yet: its path.
fn target_path(
    g: &Inner,
    user: &str,
    id: Option<&str>,
    path: Option<&str>,
    h: &HeaderMap,
) -> Result<String, Response> {
    let Some(p) = path else {
        return Err(invalid(
            h,
            "The sandbox serves createUploadSession only on a path (root:/folder/name: or items/{parent-id}:/name:).",
        ));
    };
    let (base, _) = resolve(g, user, id, None, h)?;
    let full = join(&base, &clean_path(p, h)?);
    if full.is_empty() {
        return Err(invalid(h, "The path names no file."));
    }
    Ok(full)
}

/// Graph's JSON of a drive item.
pub fn item_json(state: &Shared, g: &Inner, it: &DriveItem) -> Value {
    let parent = it.parent_path();
    let parent_id = if parent.is_empty() {
        root_id(&it.user)
    } else {
        find_by_path(g, &it.user, parent)
            .map(|p| p.id.clone())
            .unwrap_or_default()
    };
    let parent_ref_path = if parent.is_empty() {
        "/drive/root:".to_string()
    } else {
        format!("/drive/root:/{parent}")
    };
    let mut v = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#driveItem",
        "id": it.id,
        "name": it.name(),
        "size": it.size,
        "eTag": format!("\"{{{}}},1\"", it.id),
        "cTag": format!("\"c:{{{}}},1\"", it.id),
        "createdDateTime": fmt_seconds(super::persist::from_ns(it.created_ns)),
        "lastModifiedDateTime": fmt_seconds(super::persist::from_ns(it.modified_ns)),
        "webUrl": format!("{}/personal/{}/Documents/{}", state.origin, it.user.replace(['@', '.'], "_"), it.path),
        "parentReference": {
            "driveType": "business",
            "driveId": drive_id(&it.user),
            "id": parent_id,
            "path": parent_ref_path,
        },
    });
    if it.folder {
        let prefix = format!("{}/", it.path.to_lowercase());
        let children = g
            .drive_items
            .values()
            .filter(|c| {
                c.user == it.user
                    && c.path.to_lowercase().starts_with(&prefix)
                    && !c.path[prefix.len()..].contains('/')
            })
            .count();
        v["folder"] = json!({ "childCount": children });
    } else {
        v["file"] = json!({
            "mimeType": mime_guess::from_path(it.name()).first_or_octet_stream().essence_str(),
            "hashes": { "quickXorHash": it.quick_xor },
        });
    }
    v
}

fn root_json(user: &str) -> Value {
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#driveItem",
        "id": root_id(user),
        "name": "root",
        "root": {},
        "folder": {},
        "parentReference": { "driveType": "business", "driveId": drive_id(user) },
    })
}

/// A request under `{mb}/drive/…`; `tail` is what follows `drive/` (segments joined by `/`).
pub async fn route(
    state: &Shared,
    mailbox: &str,
    tail: &str,
    m: &Method,
    body: Body,
    h: &HeaderMap,
) -> Response {
    let Some((addr, action)) = parse(tail) else {
        return invalid(h, &format!("The sandbox does not serve drive/{tail}."));
    };
    match (addr, action.as_deref(), m.clone()) {
        (Addr::Drive, None, Method::GET) => axum::Json(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#drives/$entity",
            "id": drive_id(mailbox),
            "driveType": "business",
            "name": "OneDrive",
            "owner": { "user": { "email": mailbox, "displayName": mailbox } },
        }))
        .into_response(),
        (Addr::Item { id, path }, None, Method::GET) => {
            let g = state.lock();
            match resolve(&g, mailbox, id.as_deref(), path.as_deref(), h) {
                Ok((_, Some(it))) => axum::Json(item_json(state, &g, &it)).into_response(),
                Ok((_, None)) => axum::Json(root_json(mailbox)).into_response(),
                Err(r) => r,
            }
        }
        (Addr::Item { id, path }, Some("createUploadSession"), Method::POST) => {
            create_session(state, mailbox, id.as_deref(), path.as_deref(), body, h).await
        }
        (Addr::Item { id, path }, Some("createLink"), Method::POST) => {
            create_link(state, mailbox, id.as_deref(), path.as_deref(), body, h).await
        }
        _ => graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            &format!(
                "The sandbox does not serve {m} drive/{tail} (see docs/sandbox.md, \"OneDrive\")."
            ),
            h,
        ),
    }
}

/// `POST …:/createUploadSession`, body `{"item": {"@microsoft.graph.conflictBehavior",
/// "name"?, "fileSize"?}}` (the behaviour read only inside `item`; absent: `replace`).
async fn create_session(
    state: &Shared,
    mailbox: &str,
    id: Option<&str>,
    path: Option<&str>,
    body: Body,
    h: &HeaderMap,
) -> Response {
    let v = match read_json(state, body, h).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let item = v.get("item").cloned().unwrap_or(Value::Null);
    if v.get("deferCommit").and_then(Value::as_bool) == Some(true) {
        return invalid(h, "The sandbox does not serve deferCommit.");
    }
    let conflict = match item
        .get("@microsoft.graph.conflictBehavior")
        .and_then(Value::as_str)
    {
        None => Conflict::Replace,
        Some(c) => match c.to_ascii_lowercase().as_str() {
            "fail" => Conflict::Fail,
            "rename" => Conflict::Rename,
            "replace" => Conflict::Replace,
            other => {
                return invalid(
                    h,
                    &format!("Invalid conflictBehavior '{other}': fail, rename or replace."),
                )
            }
        },
    };
    let size = match item.get("fileSize") {
        None | Some(Value::Null) => SIZE_UNKNOWN,
        Some(n) => match n.as_u64() {
            Some(n) => n,
            None => return invalid(h, "fileSize must be a whole number of bytes."),
        },
    };
    let mut g = state.lock();
    let full = match target_path(&g, mailbox, id, path, h) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (parent, name) = match full.rsplit_once('/') {
        Some((p, n)) => (p.to_string(), n.to_string()),
        None => (String::new(), full.clone()),
    };
    if let Some(n) = item.get("name").and_then(Value::as_str) {
        if n != name {
            return invalid(
                h,
                &format!("The item's name '{n}' is not the name in the path '{name}'."),
            );
        }
    }
    if size == 0 {
        return invalid(
            h,
            "An upload session cannot upload an empty file: PUT its content instead.",
        );
    }
    let max = g.faults.drive_max_size;
    if size != SIZE_UNKNOWN && size > max {
        return graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "maxFileSizeExceeded",
            &format!("The file is larger than the drive allows ({max} bytes)."),
            h,
        );
    }
    if let Some(existing) = find_by_path(&g, mailbox, &full) {
        if existing.folder || conflict == Conflict::Fail {
            return name_taken(h);
        }
    }
    let sid = uuid::Uuid::new_v4().to_string();
    let drive = drive_id(mailbox);
    let opened = super::graph_api::open_session(state, &mut g, sid, h, |n| Session {
        id: n.id.clone(),
        authtoken: n.authtoken.clone(),
        item_id: String::new(),
        user: mailbox.to_string(),
        kind: super::state::Kind::Message,
        name: name.clone(),
        size,
        content_type: mime_guess::from_path(&name)
            .first_or_octet_stream()
            .to_string(),
        is_inline: false,
        content_id: None,
        next: 0,
        expires_at: n.expires_at,
        expires: n.expires,
        hasher: <sha2::Sha256 as sha2::Digest>::new(),
        drive: Some(DriveTarget {
            parent: parent.clone(),
            conflict,
        }),
        lock: Default::default(),
    });
    let n = match opened {
        Ok(n) => n,
        Err(r) => return r,
    };
    let upload_url = format!(
        "{}/api/v2.0/drives/{}/uploadSession?guid='{}'&tempauth={}",
        n.origin, drive, n.id, n.authtoken
    );
    axum::Json(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
        "uploadUrl": upload_url,
        "expirationDateTime": fmt_7(n.expires_at),
        "nextExpectedRanges": ["0-"],
    }))
    .into_response()
}

/// A drive session's answer to a fragment taken or a status GET.
pub fn session_status(s: &Session) -> Response {
    axum::Json(json!({
        "expirationDateTime": fmt_7(s.expires_at),
        "nextExpectedRanges": [format!("{}-", s.next)],
    }))
    .into_response()
}

/// `name.ext` → `name 1.ext`, `name 2.ext`, ...: the first free one (OneDrive's `rename`).
fn free_name(g: &Inner, user: &str, parent: &str, name: &str) -> String {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, format!(".{e}")),
        _ => (name, String::new()),
    };
    (1u64..)
        .map(|n| format!("{stem} {n}{ext}"))
        .find(|c| find_by_path(g, user, &join(parent, c)).is_none())
        .unwrap_or_else(|| name.to_string())
}

/// Make every missing folder of `parent`; `Err` when a part of it is a file.
fn ensure_folders(g: &mut Inner, user: &str, parent: &str, h: &HeaderMap) -> Result<(), Response> {
    let mut at = String::new();
    for name in parent.split('/').filter(|s| !s.is_empty()) {
        at = join(&at, name);
        match find_by_path(g, user, &at) {
            Some(f) if f.folder => at = f.path.clone(),
            Some(_) => return Err(name_taken(h)),
            None => {
                let now = unix_ns(OffsetDateTime::now_utc());
                let f = DriveItem {
                    id: new_item_id(),
                    user: user.to_string(),
                    path: at.clone(),
                    folder: true,
                    size: 0,
                    sha256: String::new(),
                    quick_xor: String::new(),
                    created_ns: now,
                    modified_ns: now,
                };
                g.log(Record::DriveItem(f.clone()));
                g.drive_items.insert(f.id.clone(), f);
            }
        }
    }
    Ok(())
}

/// The last fragment of drive session `sid` arrived (all `size` bytes in its part file, hashed
/// to `sha256`): the file is made (or, with `replace`, replaced; with `rename`, named anew) →
/// 201 (200 when replaced) with the driveItem. With `fail` and the name taken meanwhile: 409,
/// the session gone.
pub async fn complete(
    state: &Shared,
    sid: &str,
    sha256: String,
    size: u64,
    h: &HeaderMap,
) -> Response {
    let part = state.session_path(sid);
    let qx = {
        let part = part.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            use std::io::Read;
            let mut f = std::fs::File::open(part)?;
            let mut q = crate::quickxor::QuickXor::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    return Ok(q.base64());
                }
                q.update(&buf[..n]);
            }
        })
        .await
    };
    let Ok(Ok(quick_xor)) = qx else {
        return graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "generalException",
            "Could not read the uploaded bytes.",
            h,
        );
    };
    let mut g = state.lock();
    let Some(s) = g.sessions.remove(sid) else {
        return not_found(h);
    };
    let gone = |g: &mut Inner, r: Response| {
        g.log(Record::SessionGone {
            id: sid.to_string(),
        });
        let _ = std::fs::remove_file(&part);
        r
    };
    let Some(target) = s.drive.clone() else {
        return gone(&mut g, not_found(h));
    };
    let wanted = join(&target.parent, &s.name);
    let (path, replaces) = match find_by_path(&g, &s.user, &wanted) {
        None => (wanted, None),
        Some(e) if e.folder => return gone(&mut g, name_taken(h)),
        Some(_) if target.conflict == Conflict::Fail => return gone(&mut g, name_taken(h)),
        Some(e) if target.conflict == Conflict::Replace => (e.path.clone(), Some(e.clone())),
        Some(_) => (
            join(
                &target.parent,
                &free_name(&g, &s.user, &target.parent, &s.name),
            ),
            None,
        ),
    };
    if let Err(r) = ensure_folders(&mut g, &s.user, &target.parent, h) {
        return gone(&mut g, r);
    }
    let now = unix_ns(OffsetDateTime::now_utc());
    let it = DriveItem {
        id: replaces
            .as_ref()
            .map(|e| e.id.clone())
            .unwrap_or_else(new_item_id),
        user: s.user.clone(),
        path,
        folder: false,
        size,
        sha256,
        quick_xor,
        created_ns: replaces.as_ref().map_or(now, |e| e.created_ns),
        modified_ns: now,
    };
    if std::fs::rename(&part, state.blob_path(&it.id)).is_err() {
        return gone(
            &mut g,
            graph_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "generalException",
                "Could not store the file.",
                h,
            ),
        );
    }
    g.log(Record::DriveCompleted {
        session: sid.to_string(),
        item: it.clone(),
    });
    g.drive_items.insert(it.id.clone(), it.clone());
    g.stats.drive_items_created += 1;
    let status = if replaces.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, axum::Json(item_json(state, &g, &it))).into_response()
}

fn permission_json(state: &Shared, l: &Link) -> Value {
    let mut v = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#permission",
        "id": l.id,
        "roles": [if l.kind == "edit" { "write" } else { "read" }],
        "shareId": format!("u!{}", l.token),
        "hasPassword": false,
        "link": {
            "scope": l.scope,
            "type": l.kind,
            "webUrl": format!("{}/s/{}", state.origin, l.token),
            "preventsDownload": false,
        },
    });
    if let Some(e) = &l.expires {
        v["expirationDateTime"] = json!(e);
    }
    v
}

/// `POST …/createLink {"type", "scope"?, "expirationDateTime"?}` → 201 with a new `permission`,
/// or 200 with the one this item already has of that type and scope.
async fn create_link(
    state: &Shared,
    mailbox: &str,
    id: Option<&str>,
    path: Option<&str>,
    body: Body,
    h: &HeaderMap,
) -> Response {
    let v = match read_json(state, body, h).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let kind = match v.get("type").and_then(Value::as_str) {
        Some(t @ ("view" | "edit")) => t.to_string(),
        Some(t) => {
            return invalid(
                h,
                &format!("Link type '{t}' is not served on OneDrive for Business: view or edit."),
            )
        }
        None => return invalid(h, "The property 'type' is required."),
    };
    let scope = match v.get("scope").and_then(Value::as_str) {
        None => "organization".to_string(),
        Some(s @ ("anonymous" | "organization" | "users")) => s.to_string(),
        Some(s) => {
            return invalid(
                h,
                &format!("Invalid scope '{s}': anonymous, organization or users."),
            )
        }
    };
    let expires = match v.get("expirationDateTime") {
        None | Some(Value::Null) => None,
        Some(e) => {
            let ok = e.as_str().and_then(|s| {
                OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            });
            match ok {
                Some(t) if t > OffsetDateTime::now_utc() => e.as_str().map(str::to_string),
                _ => {
                    return invalid(
                        h,
                        "expirationDateTime must be a date and time in the future (RFC 3339).",
                    )
                }
            }
        }
    };
    let mut g = state.lock();
    let item = match resolve(&g, mailbox, id, path, h) {
        Ok((_, Some(it))) if !it.folder => it,
        Ok(_) => return invalid(h, "The sandbox makes links to files only."),
        Err(r) => return r,
    };
    if scope == "anonymous" && g.faults.refuse_anonymous_links {
        return graph_error(
            StatusCode::FORBIDDEN,
            "accessDenied",
            "Anonymous sharing links are disabled by the organization's policy.",
            h,
        );
    }
    if let Some(l) = g
        .links
        .iter()
        .find(|l| l.item == item.id && l.kind == kind && l.scope == scope)
    {
        return (StatusCode::OK, axum::Json(permission_json(state, l))).into_response();
    }
    let l = Link {
        id: uuid::Uuid::new_v4().to_string(),
        item: item.id.clone(),
        user: mailbox.to_string(),
        kind,
        scope,
        token: random_token(18),
        expires,
        created_ns: unix_ns(OffsetDateTime::now_utc()),
    };
    g.log(Record::Link(l.clone()));
    g.links.push(l.clone());
    g.stats.links_created += 1;
    (StatusCode::CREATED, axum::Json(permission_json(state, &l))).into_response()
}

/// `GET /s/{token}`: what a recipient who opens the link gets — the file's bytes (as a
/// download), or 404 when the link, or its file, is gone or expired.
pub async fn open_link(State(state): State<Shared>, Path(token): Path<String>) -> Response {
    let found = {
        let g = state.lock();
        g.links
            .iter()
            .find(|l| l.token == token)
            .filter(|l| {
                l.expires.as_deref().is_none_or(|e| {
                    OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                        .is_ok_and(|t| t > OffsetDateTime::now_utc())
                })
            })
            .and_then(|l| g.drive_items.get(&l.item))
            .cloned()
    };
    let gone = || {
        (
            StatusCode::NOT_FOUND,
            "This link has expired or the file is no longer shared.\n",
        )
            .into_response()
    };
    let Some(it) = found else {
        return gone();
    };
    let Ok(file) = tokio::fs::File::open(state.blob_path(&it.id)).await else {
        return gone();
    };
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    let mut resp = Response::new(body);
    let hd = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(
        mime_guess::from_path(it.name())
            .first_or_octet_stream()
            .essence_str(),
    ) {
        hd.insert(header::CONTENT_TYPE, v);
    }
    hd.insert(header::CONTENT_LENGTH, HeaderValue::from(it.size));
    let disposition = format!(
        "attachment; filename*=UTF-8''{}",
        url::form_urlencoded::byte_serialize(it.name().as_bytes()).collect::<String>()
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        hd.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// Admin: every drive item (files and folders) of every user.
pub fn admin_items(g: &Inner) -> Value {
    let mut v: Vec<&DriveItem> = g.drive_items.values().collect();
    v.sort_by(|a, b| a.user.cmp(&b.user).then(a.path.cmp(&b.path)));
    json!(v
        .into_iter()
        .map(|i| json!({
            "id": i.id, "user": i.user, "path": i.path, "folder": i.folder, "size": i.size,
            "sha256": i.sha256, "quickXorHash": i.quick_xor,
            "createdMs": i.created_ns / 1_000_000,
        }))
        .collect::<Vec<_>>())
}

/// Admin: every sharing link, with its item's path and its `webUrl`.
pub fn admin_links(state: &Shared, g: &Inner) -> Value {
    json!(g
        .links
        .iter()
        .map(|l| {
            let path = g.drive_items.get(&l.item).map(|i| i.path.clone());
            json!({
                "id": l.id, "item": l.item, "user": l.user, "path": path, "type": l.kind,
                "scope": l.scope, "expirationDateTime": l.expires,
                "webUrl": format!("{}/s/{}", state.origin, l.token),
            })
        })
        .collect::<Vec<_>>())
}

/// Admin: put a file on a drive as another program would (`{"user"?, "path", "content"?,
/// "base64"?}`), e.g. the user's own file of the name outbox is about to take.
pub fn admin_put(state: &Shared, body: &HashMap<String, Value>) -> Result<Value, String> {
    let user =
        super::state::canonical_user(body.get("user").and_then(Value::as_str).unwrap_or("me"));
    let path = body
        .get("path")
        .and_then(Value::as_str)
        .ok_or("\"path\" is required")?;
    let bytes = match (body.get("content"), body.get("base64")) {
        (Some(Value::String(s)), None) => s.as_bytes().to_vec(),
        (None, Some(Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| format!("\"base64\" is not base64: {e}"))?,
        (None, None) => Vec::new(),
        _ => return Err("give \"content\" (text) or \"base64\", not both".into()),
    };
    let h = HeaderMap::new();
    let path = clean_path(path, &h).map_err(|_| format!("{path:?} is not a OneDrive path"))?;
    let (parent, _) = path.rsplit_once('/').unwrap_or(("", ""));
    let mut g = state.lock();
    if find_by_path(&g, &user, &path).is_some() {
        return Err(format!("{path:?} exists already"));
    }
    ensure_folders(&mut g, &user, parent, &h)
        .map_err(|_| format!("a part of {parent:?} is a file"))?;
    let now = unix_ns(OffsetDateTime::now_utc());
    let it = DriveItem {
        id: new_item_id(),
        user,
        path,
        folder: false,
        size: bytes.len() as u64,
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        quick_xor: crate::quickxor::of(&bytes),
        created_ns: now,
        modified_ns: now,
    };
    super::persist::write_private(&state.blob_path(&it.id), &bytes).map_err(|e| e.to_string())?;
    g.log(Record::DriveItem(it.clone()));
    g.drive_items.insert(it.id.clone(), it.clone());
    Ok(item_json(state, &g, &it))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: Option<&str>, path: Option<&str>) -> Addr {
        Addr::Item {
            id: id.map(str::to_string),
            path: path.map(str::to_string),
        }
    }

    #[test]
    fn drive_addresses_parse_as_graph_writes_them() {
        let cus = Some("createUploadSession".to_string());
        assert_eq!(parse(""), Some((Addr::Drive, None)));
        assert_eq!(parse("root"), Some((item(None, None), None)));
        assert_eq!(
            parse("root:/a/b.pdf"),
            Some((item(None, Some("/a/b.pdf")), None))
        );
        assert_eq!(
            parse("root:/a/b.pdf:"),
            Some((item(None, Some("/a/b.pdf")), None))
        );
        assert_eq!(
            parse("root:/a/b.pdf:/createUploadSession"),
            Some((item(None, Some("/a/b.pdf")), cus.clone()))
        );
        assert_eq!(
            parse("items/root:/a.pdf:/microsoft.graph.createUploadSession"),
            Some((item(None, Some("/a.pdf")), cus.clone()))
        );
        assert_eq!(
            parse("items/01ABC:/a.pdf:/createUploadSession"),
            Some((item(Some("01ABC"), Some("/a.pdf")), cus))
        );
        assert_eq!(
            parse("items/01ABC/createLink"),
            Some((item(Some("01ABC"), None), Some("createLink".into())))
        );
        assert_eq!(parse("items/"), None);
        assert_eq!(parse("rootx"), None);
        assert_eq!(
            owner_of(&drive_id("me@sandbox.test")).as_deref(),
            Some("me@sandbox.test")
        );
    }
}
