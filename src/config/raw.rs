//! Raw serde structs that keep spans, and their validation into [`Settings`].
//!
//! Loading reads the file in three passes: a plain TOML parse (syntax errors), a key map (every
//! key with its dotted path and byte span, so any later error can name its key), and the typed
//! parse into `Raw*` structs with `deny_unknown_fields`. Validation then turns raw values into
//! settings that cannot be wrong, and reports the first problem as `FILE:LINE: KEY: MESSAGE`.
//! Secrets never pass through here: the config names environment variables, never values.

use super::mail::Target;
use super::units::{parse_count_budget, parse_duration, parse_size, parse_size_budget};
use super::{
    After, AgentSettings, AuthMethod, AuthSettings, ClientCredential, ConfigError, GraphSettings,
    IfExists, ItemKind, Mapping, NotifyLevel, Settings, TokenStoreKind,
};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

const DEFAULT_BASE_URL: &str = "https://graph.microsoft.com/v1.0";
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const DEFAULT_TENANT: &str = "common";
const DEFAULT_TOKEN_ENV: &str = "OUTBOX_ACCESS_TOKEN";
const DEFAULT_CONCURRENCY: usize = 4;
const MAX_CONCURRENCY: i64 = 16;
const DEFAULT_CHUNK: &str = "3840KiB";
/// Graph refuses any request body over 4 MiB, upload-session chunks included (defined in `graph`).
const MAX_CHUNK: u64 = crate::core::model::MAX_REQUEST_BODY;
const DEFAULT_SETTLE: &str = "2s";
const DEFAULT_SETTLE_AFTER_CLOSE: &str = "1s";
/// How long after a request whose answer was lost the item is looked at (a request cut off may
/// still be processed by Graph for a while; looking sooner could miss what lands after).
const DEFAULT_LOOK_AFTER: &str = "2m";
const DEFAULT_MAX_SETTLE: &str = "10m";
const DEFAULT_RESCAN: &str = "1h";
const DEFAULT_MAILBOX_REQUESTS: &str = "10000/10m";
const DEFAULT_MAILBOX_UPLOAD_BYTES: &str = "150MB/5m";
/// Exchange Online's sending limit: 30 messages a minute per mailbox.
const DEFAULT_MAILBOX_SENDS: &str = "30/1m";
const DEFAULT_KEEP_DONE: &str = "180d";
const DEFAULT_USER: &str = "me";
const DEFAULT_INCLUDE: &[&str] = &["*"];
const DEFAULT_EXCLUDE: &[&str] = &[".*", "*.tmp", "*.part", "*.crdownload", "~$*"];
const DEFAULT_SENT_DIR: &str = "sent";

// ---------------------------------------------------------------------------------------------
// Raw structs: what the file says, with spans, before any judgement beyond TOML types.

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a TOML document with [graph], [auth], [agent] and [[mapping]] tables"
)]
struct RawFile {
    graph: Option<RawGraph>,
    auth: Option<RawAuth>,
    agent: Option<RawAgent>,
    #[serde(default)]
    mapping: Vec<RawMapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [graph] table")]
struct RawGraph {
    base_url: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [auth] table")]
struct RawAuth {
    method: Option<Spanned<RawMethod>>,
    authority: Option<Spanned<String>>,
    tenant: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    client_secret_env: Option<Spanned<String>>,
    certificate_path: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    token_store: Option<Spanned<RawTokenStore>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawTokenStore {
    File,
    Keyring,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawMethod {
    DeviceCode,
    ClientCredentials,
    TokenEnv,
    TokenCommand,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [agent] table")]
struct RawAgent {
    state_dir: Option<Spanned<String>>,
    concurrency: Option<Spanned<i64>>,
    chunk_size: Option<Spanned<IntOrText>>,
    settle: Option<Spanned<IntOrText>>,
    settle_after_close: Option<Spanned<IntOrText>>,
    look_after: Option<Spanned<IntOrText>>,
    max_settle: Option<Spanned<IntOrText>>,
    rescan: Option<Spanned<IntOrText>>,
    mailbox_requests: Option<Spanned<IntOrText>>,
    mailbox_upload_bytes: Option<Spanned<IntOrText>>,
    mailbox_sends: Option<Spanned<IntOrText>>,
    notify: Option<Spanned<RawNotify>>,
    keep_done: Option<Spanned<IntOrText>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawNotify {
    Off,
    Failures,
    All,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[mapping]] table")]
struct RawMapping {
    name: Option<Spanned<String>>,
    folder: Option<Spanned<String>>,
    message: Option<Spanned<String>>,
    event: Option<Spanned<String>>,
    new_message: Option<Spanned<super::mail::RawNewMessage>>,
    user: Option<Spanned<String>>,
    include: Option<Spanned<Vec<Spanned<String>>>>,
    exclude: Option<Spanned<Vec<Spanned<String>>>>,
    recursive: Option<bool>,
    after: Option<Spanned<RawAfter>>,
    sent_dir: Option<Spanned<String>>,
    failed_dir: Option<Spanned<String>>,
    follow_symlinks: Option<bool>,
    if_exists: Option<Spanned<RawIfExists>>,
    on_change: Option<Spanned<RawOnChange>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawAfter {
    Keep,
    Move,
    Delete,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawIfExists {
    Skip,
    Attach,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawOnChange {
    Replace,
    Add,
}

/// A value that may be written as an integer or a string: sizes take both (integers are bytes);
/// durations and budgets take strings, and an integer there gets a message asking for a unit.
#[derive(Debug, Clone)]
pub(super) enum IntOrText {
    Int(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for IntOrText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IntOrText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a string with a unit, like \"4MiB\" or \"2s\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrText, E> {
                Ok(IntOrText::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrText, E> {
                i64::try_from(v)
                    .map(IntOrText::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrText, E> {
                Ok(IntOrText::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Key map: every key of the document with its dotted path, to name the key of any error span.

/// The shape of the document, keys with spans; values only as far as they contain keys.
enum Node {
    Table(Vec<(Spanned<String>, Node)>),
    Array(Vec<Node>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(n) = a.next_element::<Node>()? {
                    items.push(n);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = a.next_key::<Spanned<String>>()? {
                    entries.push((k, a.next_value::<Node>()?));
                }
                Ok(Node::Table(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Every key's byte offset and dotted path (`agent.chunk_size`, `mapping[2].folder`), sorted.
struct KeyMap(Vec<(usize, String)>);

impl KeyMap {
    fn new(text: &str) -> KeyMap {
        fn walk(node: &Node, prefix: &str, out: &mut Vec<(usize, String)>) {
            match node {
                Node::Table(entries) => {
                    for (k, v) in entries {
                        let path = if prefix.is_empty() {
                            k.get_ref().clone()
                        } else {
                            format!("{prefix}.{}", k.get_ref())
                        };
                        out.push((k.span().start, path.clone()));
                        walk(v, &path, out);
                    }
                }
                Node::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        walk(v, &format!("{prefix}[{i}]"), out);
                    }
                }
                Node::Leaf => {}
            }
        }
        let mut out = Vec::new();
        // Only datetimes fail here (their internal keys carry no span); then errors lose the key
        // but keep the line.
        if let Ok(root) = toml::from_str::<Node>(text) {
            walk(&root, "", &mut out);
        }
        out.sort_by_key(|(offset, _)| *offset);
        KeyMap(out)
    }

    /// The key written last at or before `offset`: the key whose value holds the offset.
    fn key_at(&self, offset: usize) -> Option<&str> {
        let i = self.0.partition_point(|(o, _)| *o <= offset);
        i.checked_sub(1).map(|i| self.0[i].1.as_str())
    }

    /// Offset of the first key under `prefix` (e.g. `mapping[2].`).
    fn first_under(&self, prefix: &str) -> Option<usize> {
        self.0
            .iter()
            .find(|(_, p)| p.starts_with(prefix))
            .map(|(o, _)| *o)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// For a syntax error, where no key map exists: the table header above and the key on the line.
fn guess_key(text: &str, offset: usize) -> String {
    let line_no = line_of(text, offset);
    let mut table = String::new();
    for line in text.lines().take(line_no - 1) {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            let h = h.trim_start_matches('[');
            if let Some(end) = h.find(']') {
                table = h[..end].trim().to_owned();
            }
        }
    }
    let here = text.lines().nth(line_no - 1).unwrap_or("").trim();
    if let Some(h) = here.strip_prefix('[') {
        let h = h
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim();
        return if h.is_empty() {
            "(toml)".to_owned()
        } else {
            h.to_owned()
        };
    }
    let key = here.split_once('=').map(|(k, _)| k.trim()).filter(|k| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c))
    });
    match (table.is_empty(), key) {
        (true, Some(k)) => k.to_owned(),
        (false, Some(k)) => format!("{table}.{k}"),
        (false, None) => table,
        (true, None) => "(toml)".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

pub(super) fn load(path: &Path) -> Result<Settings, ConfigError> {
    load_all(path).map_err(|mut errors| errors.swap_remove(0))
}

/// Most errors a run reports at once; past this the file is likely not TOML for outbox at all.
const MAX_ERRORS: usize = 20;

/// Like [`load`], but every error in the file, in order, as a compiler reports them: after an
/// error on a line of its own (`key = value`), that line is blanked and the file read again. It
/// stops at an error it cannot step over (a table header, a value spanning lines, the file as a
/// whole) and where blanking a line would only cause the next error (the same key again, or the
/// key that was blanked now missing).
pub(super) fn load_all(path: &Path) -> Result<Settings, Vec<ConfigError>> {
    let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = read_text(&file).map_err(|e| vec![e])?;
    let mut text = text;
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut blanked: Vec<String> = Vec::new();
    loop {
        let round = match load_text(&file, &text) {
            Ok(settings) if errors.is_empty() => return Ok(settings),
            Ok(_) => break,
            Err(round) => round,
        };
        let mut stepped = false;
        for e in round {
            let seen = errors
                .iter()
                .any(|p| p.key == e.key && p.line == e.line && p.message == e.message);
            let cascade = !e.key.is_empty() && blanked.contains(&e.key);
            if seen || cascade || errors.len() >= MAX_ERRORS {
                continue;
            }
            if let Some((key, rest)) = e.line.and_then(|line| blank_line(&text, line)) {
                blanked.push(key);
                text = rest;
                stepped = true;
            }
            errors.push(e);
        }
        if !stepped {
            break;
        }
    }
    // In the order found: the first is what `load` reports alone.
    Err(errors)
}

/// `text` with line `line` (1-based) turned into spaces, if it is one `key = value` entry
/// and the file stays valid TOML without it; with the dotted key it held.
fn blank_line(text: &str, line: usize) -> Option<(String, String)> {
    let start: usize = text
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum();
    let this = text[start..].split_inclusive('\n').next()?;
    let body = this.trim_end_matches(['\n', '\r']);
    let t = body.trim_start();
    if t.is_empty() || t.starts_with('[') || t.starts_with('#') || !t.contains('=') {
        return None;
    }
    let keys = KeyMap::new(text);
    let key = keys.key_at(start + (body.len() - t.len()))?.to_owned();
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    out.extend(body.chars().map(|_| ' '));
    out.push_str(&this[body.len()..]);
    out.push_str(&text[start + this.len()..]);
    out.parse::<toml::Table>().ok()?;
    Some((key, out))
}

/// The file's text, or the error about the file as a whole.
fn read_text(file: &Path) -> Result<String, ConfigError> {
    let whole = |message: String| ConfigError {
        file: file.to_path_buf(),
        line: None,
        key: String::new(),
        message,
    };
    let text = match std::fs::read(file) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| whole("the file is not UTF-8 text; save it as UTF-8".into()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(whole(
                "no config file here; run `outbox init` to write a commented starter config, or \
                 pass --config PATH (or set OUTBOX_CONFIG)"
                    .into(),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory || file.is_dir() => {
            return Err(whole(
                "this is a directory; --config (or OUTBOX_CONFIG) must name the config file itself"
                    .into(),
            ))
        }
        Err(e) => {
            return Err(whole(format!(
                "cannot read the config file ({e}); check its permissions"
            )))
        }
    };

    Ok(text)
}

/// Parse and validate `text`, read from `file`: a parse error, or the first error of each section.
fn load_text(file: &Path, text: &str) -> Result<Settings, Vec<ConfigError>> {
    let file = file.to_path_buf();
    let text = text.to_owned();
    let ctx = Ctx {
        file: file.clone(),
        text: &text,
        keys: KeyMap(Vec::new()),
    };
    // Pass 1: syntax, so a broken file gets the parser's own words and its line.
    if let Err(e) = text.parse::<toml::Table>() {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        return Err(vec![ConfigError {
            file,
            line: e.span().map(|s| line_of(&text, s.start)),
            key: guess_key(&text, offset),
            message: format!(
                "invalid TOML: {}; check the quotes and brackets on this line",
                e.message().trim_end().replace('\n', "; ")
            ),
        }]);
    }
    // Pass 2: where every key is. Pass 3: the typed parse.
    let ctx = Ctx {
        keys: KeyMap::new(&text),
        ..ctx
    };
    let raw: RawFile = toml::from_str(&text).map_err(|e| vec![ctx.toml_error(&e)])?;
    validate(raw, &ctx)
}

// The defaults are constants of this file, checked by `defaults_match_spec`: they cannot fail.
#[allow(clippy::expect_used)]
pub(super) fn defaults(source: PathBuf) -> Settings {
    let ok = "defaults are valid";
    Settings {
        source,
        graph: GraphSettings {
            base_url: parse_base(DEFAULT_BASE_URL).expect(ok),
            ca_file: None,
        },
        auth: AuthSettings {
            method: AuthMethod::TokenEnv {
                var: DEFAULT_TOKEN_ENV.into(),
            },
            authority: parse_base(DEFAULT_AUTHORITY).expect(ok),
            tenant: DEFAULT_TENANT.into(),
            client_id: None,
            token_store: TokenStoreKind::File,
        },
        agent: AgentSettings {
            // No home directory at all: keep state beside the working directory.
            state_dir: default_state_dir().unwrap_or_else(|| PathBuf::from(".outbox-state")),
            concurrency: DEFAULT_CONCURRENCY,
            chunk_size: parse_size(DEFAULT_CHUNK).expect(ok),
            settle: parse_duration(DEFAULT_SETTLE).expect(ok),
            settle_after_close: parse_duration(DEFAULT_SETTLE_AFTER_CLOSE).expect(ok),
            look_after: parse_duration(DEFAULT_LOOK_AFTER).expect(ok),
            max_settle: parse_duration(DEFAULT_MAX_SETTLE).expect(ok),
            rescan: parse_duration(DEFAULT_RESCAN).expect(ok),
            mailbox_requests: parse_count_budget(DEFAULT_MAILBOX_REQUESTS).expect(ok),
            mailbox_upload_bytes: parse_size_budget(DEFAULT_MAILBOX_UPLOAD_BYTES).expect(ok),
            mailbox_sends: parse_count_budget(DEFAULT_MAILBOX_SENDS).expect(ok),
            notify: NotifyLevel::Failures,
            keep_done: parse_duration(DEFAULT_KEEP_DONE).expect(ok),
        },
        mappings: Vec::new(),
    }
}

use super::default_state_dir;

/// What every error needs: the file, its text (for lines) and the key map (for key names).
pub(super) struct Ctx<'a> {
    file: PathBuf,
    text: &'a str,
    keys: KeyMap,
}

impl Ctx<'_> {
    pub(super) fn err(
        &self,
        offset: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: offset.map(|o| line_of(self.text, o)),
            key: key.into(),
            message: message.into(),
        }
    }

    pub(super) fn at<T>(
        &self,
        value: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.err(Some(value.span().start), key, message)
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let offset = e.span().map(|s| s.start);
        let key = offset
            .and_then(|o| self.keys.key_at(o))
            .unwrap_or("")
            .to_owned();
        let mut message = e.message().trim_end().to_owned();
        let leaf = key.rsplit('.').next().unwrap_or("");
        if message.starts_with("unknown field") {
            message.push_str(match leaf {
                "client_secret" | "secret" | "password" => {
                    "; secrets do not go in the config file: put the secret in an environment \
                     variable and set auth.client_secret_env to its name"
                }
                "token" | "access_token" => {
                    "; tokens do not go in the config file: set auth.method = \"token_env\" and \
                     auth.token_env to the name of the variable holding it"
                }
                "mappings" => "; each folder is a [[mapping]] table",
                _ => "; remove it or fix its spelling",
            });
        }
        self.err(offset, key, message)
    }

    /// The line of the `n`-th `[[mapping]]` header, else of its first key.
    fn mapping_offset(&self, n: usize) -> Option<usize> {
        let mut seen = 0;
        let mut offset = 0;
        for line in self.text.split_inclusive('\n') {
            let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            if compact.starts_with("[[mapping]]") {
                if seen == n {
                    return Some(offset);
                }
                seen += 1;
            }
            offset += line.len();
        }
        self.keys.first_under(&format!("mapping[{n}]."))
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// Each section on its own, so one bad section does not hide another's error (the mappings are
/// checked against the method as written even when the rest of `[auth]` is wrong).
fn validate(raw: RawFile, ctx: &Ctx) -> Result<Settings, Vec<ConfigError>> {
    let dir = ctx.file.parent().map(Path::to_path_buf).unwrap_or_default();
    let written_method = raw
        .auth
        .as_ref()
        .and_then(|a| a.method.as_ref())
        .map(|m| *m.get_ref())
        .unwrap_or(RawMethod::DeviceCode);
    let graph = validate_graph(raw.graph.unwrap_or_default(), ctx, &dir);
    let auth = validate_auth(raw.auth.unwrap_or_default(), ctx, &dir);
    let agent = validate_agent(raw.agent.unwrap_or_default(), ctx, &dir);
    let method = auth.as_ref().map(|(_, m)| *m).unwrap_or(written_method);
    let mappings = validate_mappings(raw.mapping, ctx, &dir, method);
    match (graph, auth, agent, mappings) {
        (Ok(graph), Ok((auth, _)), Ok(agent), Ok(mappings)) => Ok(Settings {
            source: ctx.file.clone(),
            graph,
            auth,
            agent,
            mappings,
        }),
        (graph, auth, agent, mappings) => {
            Err([graph.err(), auth.err(), agent.err(), mappings.err()]
                .into_iter()
                .flatten()
                .collect())
        }
    }
}

fn validate_graph(raw: RawGraph, ctx: &Ctx, dir: &Path) -> Result<GraphSettings, ConfigError> {
    let base_url = match &raw.base_url {
        Some(v) => parse_base(v.get_ref()).map_err(|m| {
            ctx.at(
                v,
                "graph.base_url",
                format!("{m}; e.g. \"{DEFAULT_BASE_URL}\""),
            )
        })?,
        None => parse_base(DEFAULT_BASE_URL).map_err(|m| ctx.err(None, "graph.base_url", m))?,
    };
    let ca_file = match &raw.ca_file {
        Some(v) => Some(path_value(v, ctx, "graph.ca_file", dir)?),
        None => None,
    };
    Ok(GraphSettings { base_url, ca_file })
}

/// An http(s) URL without a trailing slash, query or fragment.
fn parse_base(s: &str) -> Result<url::Url, String> {
    let trimmed = s.trim().trim_end_matches('/');
    let url = url::Url::parse(trimmed).map_err(|e| format!("\"{s}\" is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("\"{s}\" must be an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("\"{s}\" must not have a query or fragment"));
    }
    // Bearer tokens and secrets travel to this origin: in clear text only to this machine.
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(format!(
            "\"{s}\": http:// is accepted only on a loopback host (the sandbox); tokens must not cross a network in clear text, use https://"
        ));
    }
    Ok(url)
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn validate_auth(
    raw: RawAuth,
    ctx: &Ctx,
    dir: &Path,
) -> Result<(AuthSettings, RawMethod), ConfigError> {
    let method_kind = raw
        .method
        .as_ref()
        .map(|m| *m.get_ref())
        .unwrap_or(RawMethod::DeviceCode);
    let method_offset = raw.method.as_ref().map(|m| m.span().start);
    let authority = match &raw.authority {
        Some(v) => parse_base(v.get_ref()).map_err(|m| {
            ctx.at(
                v,
                "auth.authority",
                format!("{m}; e.g. \"{DEFAULT_AUTHORITY}\""),
            )
        })?,
        None => parse_base(DEFAULT_AUTHORITY).map_err(|m| ctx.err(None, "auth.authority", m))?,
    };
    let tenant = match &raw.tenant {
        Some(v) => {
            let t = v.get_ref().trim();
            if t.is_empty() || t.contains(['/', '?', '#', ' ']) {
                return Err(ctx.at(
                    v,
                    "auth.tenant",
                    "tenant must be a tenant id or domain, or \"common\" / \"organizations\"",
                ));
            }
            t.to_owned()
        }
        None => DEFAULT_TENANT.to_owned(),
    };
    let client_id = match &raw.client_id {
        Some(v) => {
            let id = v.get_ref().trim();
            if id.is_empty() || id.starts_with('<') {
                return Err(ctx.at(
                    v,
                    "auth.client_id",
                    "set client_id to your app registration's Application (client) ID, a GUID",
                ));
            }
            Some(id.to_owned())
        }
        None => None,
    };
    let need_client_id = |what: &str| {
        if client_id.is_none() {
            Err(ctx.err(
                method_offset,
                "auth.client_id",
                format!(
                    "auth.method = \"{what}\" needs client_id: the Application (client) ID of \
                     your app registration"
                ),
            ))
        } else {
            Ok(())
        }
    };
    let method = match method_kind {
        RawMethod::DeviceCode => {
            need_client_id("device_code")?;
            AuthMethod::DeviceCode
        }
        RawMethod::ClientCredentials => {
            need_client_id("client_credentials")?;
            let secret =
                match (&raw.client_secret_env, &raw.certificate_path) {
                    (Some(_), Some(cert)) => {
                        return Err(ctx.at(
                            cert,
                            "auth.certificate_path",
                            "set only one of client_secret_env and certificate_path",
                        ))
                    }
                    (Some(var), None) => ClientCredential::SecretEnv(env_name(
                        var,
                        ctx,
                        "auth.client_secret_env",
                        "OUTBOX_CLIENT_SECRET",
                    )?),
                    (None, Some(cert)) => ClientCredential::Certificate(path_value(
                        cert,
                        ctx,
                        "auth.certificate_path",
                        dir,
                    )?),
                    (None, None) => return Err(ctx.err(
                        method_offset,
                        "auth.client_secret_env",
                        "auth.method = \"client_credentials\" needs client_secret_env (the name \
                         of an environment variable holding the secret, e.g. \
                         \"OUTBOX_CLIENT_SECRET\") or certificate_path (a PEM file)",
                    )),
                };
            AuthMethod::ClientCredentials { secret }
        }
        RawMethod::TokenEnv => {
            let var = match &raw.token_env {
                Some(v) => env_name(v, ctx, "auth.token_env", DEFAULT_TOKEN_ENV)?,
                None => DEFAULT_TOKEN_ENV.to_owned(),
            };
            AuthMethod::TokenEnv { var }
        }
        RawMethod::TokenCommand => match &raw.command {
            Some(c) if c.get_ref().first().is_some_and(|p| !p.trim().is_empty()) => {
                AuthMethod::TokenCommand {
                    command: c.get_ref().clone(),
                }
            }
            other => {
                let offset = other.as_ref().map(|c| c.span().start).or(method_offset);
                return Err(ctx.err(
                    offset,
                    "auth.command",
                    "auth.method = \"token_command\" needs command, the program and its \
                     arguments, e.g. [\"az\", \"account\", \"get-access-token\", \
                     \"--resource-type\", \"ms-graph\", \"--query\", \"accessToken\", \"-o\", \"tsv\"]",
                ));
            }
        },
    };
    let token_store = match raw.token_store.as_ref().map(|v| (v, *v.get_ref())) {
        None | Some((_, RawTokenStore::File)) => TokenStoreKind::File,
        Some((v, RawTokenStore::Keyring)) => {
            if !cfg!(feature = "keyring") {
                return Err(ctx.at(
                    v,
                    "auth.token_store",
                    "token_store = \"keyring\" needs outbox built with the keyring feature \
                     (`cargo install --features keyring`, or `cargo build --release --features \
                     keyring`); this build has none: rebuild with it, or set token_store = \
                     \"file\"",
                ));
            }
            TokenStoreKind::Keyring
        }
    };
    Ok((
        AuthSettings {
            method,
            authority,
            tenant,
            client_id,
            token_store,
        },
        method_kind,
    ))
}

/// The name of an environment variable. A value that is not a plausible name is most likely the
/// secret itself pasted in: refuse it without repeating it.
fn env_name(
    v: &Spanned<String>,
    ctx: &Ctx,
    key: &str,
    example: &str,
) -> Result<String, ConfigError> {
    let name = v.get_ref().trim();
    let plausible = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        // A JWT (every Graph access token) starts with the base64 of `{"`.
        && !name.starts_with("eyJ")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plausible {
        return Err(ctx.at(
            v,
            key,
            format!(
                "{} takes the NAME of an environment variable (letters, digits, _), not the secret \
                 itself; e.g. \"{example}\"",
                key.rsplit('.').next().unwrap_or(key)
            ),
        ));
    }
    Ok(name.to_owned())
}

fn validate_agent(raw: RawAgent, ctx: &Ctx, dir: &Path) -> Result<AgentSettings, ConfigError> {
    let state_dir = match &raw.state_dir {
        Some(v) => path_value(v, ctx, "agent.state_dir", dir)?,
        None => default_state_dir().ok_or_else(|| {
            ctx.err(
                None,
                "agent.state_dir",
                "cannot find the platform state directory (no home directory?); set state_dir",
            )
        })?,
    };
    let concurrency = match &raw.concurrency {
        Some(v) => {
            let n = *v.get_ref();
            if !(1..=MAX_CONCURRENCY).contains(&n) {
                return Err(ctx.at(
                    v,
                    "agent.concurrency",
                    format!(
                        "concurrency must be between 1 and {MAX_CONCURRENCY}; Graph allows 4 \
                         requests in flight per mailbox, e.g. 4"
                    ),
                ));
            }
            n as usize
        }
        None => DEFAULT_CONCURRENCY,
    };
    let chunk_size = size_value(
        raw.chunk_size.as_ref(),
        ctx,
        "agent.chunk_size",
        DEFAULT_CHUNK,
    )?;
    if chunk_size == 0 || chunk_size > MAX_CHUNK {
        let offset = raw.chunk_size.as_ref().map(|v| v.span().start);
        let why = if chunk_size == 0 {
            "must be more than 0"
        } else {
            "must be at most 4MiB (Graph's per-request limit)"
        };
        return Err(ctx.err(
            offset,
            "agent.chunk_size",
            format!("chunk_size {why}; e.g. \"3840KiB\""),
        ));
    }
    let settle = duration_value(raw.settle.as_ref(), ctx, "agent.settle", DEFAULT_SETTLE)?;
    let settle_after_close = duration_value(
        raw.settle_after_close.as_ref(),
        ctx,
        "agent.settle_after_close",
        DEFAULT_SETTLE_AFTER_CLOSE,
    )?;
    let look_after = duration_value(
        raw.look_after.as_ref(),
        ctx,
        "agent.look_after",
        DEFAULT_LOOK_AFTER,
    )?;
    let max_settle = duration_value(
        raw.max_settle.as_ref(),
        ctx,
        "agent.max_settle",
        DEFAULT_MAX_SETTLE,
    )?;
    if max_settle < settle {
        let offset = raw
            .max_settle
            .as_ref()
            .or(raw.settle.as_ref())
            .map(|v| v.span().start);
        return Err(ctx.err(
            offset,
            "agent.max_settle",
            "max_settle must be at least settle; e.g. settle = \"2s\", max_settle = \"10m\"",
        ));
    }
    let rescan = duration_value(raw.rescan.as_ref(), ctx, "agent.rescan", DEFAULT_RESCAN)?;
    if rescan.is_zero() {
        return Err(ctx.err(
            raw.rescan.as_ref().map(|v| v.span().start),
            "agent.rescan",
            "rescan must be longer than 0; e.g. \"1h\"",
        ));
    }
    let mailbox_requests = budget_value(
        raw.mailbox_requests.as_ref(),
        ctx,
        "agent.mailbox_requests",
        DEFAULT_MAILBOX_REQUESTS,
        parse_count_budget,
    )?;
    let mailbox_upload_bytes = budget_value(
        raw.mailbox_upload_bytes.as_ref(),
        ctx,
        "agent.mailbox_upload_bytes",
        DEFAULT_MAILBOX_UPLOAD_BYTES,
        parse_size_budget,
    )?;
    let mailbox_sends = budget_value(
        raw.mailbox_sends.as_ref(),
        ctx,
        "agent.mailbox_sends",
        DEFAULT_MAILBOX_SENDS,
        parse_count_budget,
    )?;
    let notify = match raw.notify.as_ref().map(|v| *v.get_ref()) {
        Some(RawNotify::Off) => NotifyLevel::Off,
        Some(RawNotify::Failures) | None => NotifyLevel::Failures,
        Some(RawNotify::All) => NotifyLevel::All,
    };
    let keep_done = duration_value(
        raw.keep_done.as_ref(),
        ctx,
        "agent.keep_done",
        DEFAULT_KEEP_DONE,
    )?;
    Ok(AgentSettings {
        state_dir,
        concurrency,
        chunk_size,
        settle,
        settle_after_close,
        look_after,
        max_settle,
        rescan,
        mailbox_requests,
        mailbox_upload_bytes,
        mailbox_sends,
        notify,
        keep_done,
    })
}

pub(super) fn size_value(
    v: Option<&Spanned<IntOrText>>,
    ctx: &Ctx,
    key: &str,
    default: &str,
) -> Result<u64, ConfigError> {
    let Some(v) = v else {
        return parse_size(default).map_err(|m| ctx.err(None, key, m));
    };
    match v.get_ref() {
        IntOrText::Int(n) => u64::try_from(*n).map_err(|_| {
            ctx.at(
                v,
                key,
                format!("sizes cannot be negative ({n}); e.g. \"{default}\""),
            )
        }),
        IntOrText::Text(s) => parse_size(s).map_err(|m| ctx.at(v, key, m)),
    }
}

pub(super) fn duration_value(
    v: Option<&Spanned<IntOrText>>,
    ctx: &Ctx,
    key: &str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let Some(v) = v else {
        return parse_duration(default).map_err(|m| ctx.err(None, key, m));
    };
    match v.get_ref() {
        IntOrText::Int(n) => Err(ctx.at(
            v,
            key,
            format!("a duration needs a unit, as a string: e.g. \"{n}s\" (ms, s, m, h or d)"),
        )),
        IntOrText::Text(s) => parse_duration(s).map_err(|m| ctx.at(v, key, m)),
    }
}

fn budget_value(
    v: Option<&Spanned<IntOrText>>,
    ctx: &Ctx,
    key: &str,
    default: &str,
    parse: fn(&str) -> Result<Option<super::Budget>, String>,
) -> Result<Option<super::Budget>, ConfigError> {
    let Some(v) = v else {
        return parse(default).map_err(|m| ctx.err(None, key, m));
    };
    match v.get_ref() {
        IntOrText::Int(_) => Err(ctx.at(
            v,
            key,
            format!("a budget is a string AMOUNT/WINDOW, e.g. \"{default}\", or \"off\""),
        )),
        IntOrText::Text(s) => parse(s).map_err(|m| ctx.at(v, key, m)),
    }
}

fn validate_mappings(
    raws: Vec<RawMapping>,
    ctx: &Ctx,
    dir: &Path,
    method: RawMethod,
) -> Result<Vec<Mapping>, ConfigError> {
    let mut mappings: Vec<Mapping> = Vec::with_capacity(raws.len());
    // Per mapping: the offset its name came from, and of its folder, for pointing at conflicts.
    let mut spots: Vec<(usize, usize)> = Vec::with_capacity(raws.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, raw) in raws.into_iter().enumerate() {
        let key = |k: &str| format!("mapping[{i}].{k}");
        let header = ctx.mapping_offset(i);

        let Some(folder_raw) = &raw.folder else {
            return Err(ctx.err(
                header,
                key("folder"),
                "every mapping needs folder, the folder to watch; e.g. folder = \"~/Outbox/reports\"",
            ));
        };
        let folder = path_value(folder_raw, ctx, &key("folder"), dir)?;

        let target =
            match (&raw.message, &raw.event, &raw.new_message) {
                (Some(m), None, None) => Target::Item {
                    kind: ItemKind::Message,
                    id: item_id(m, ctx, &key("message"), "message")?,
                },
                (None, Some(e), None) => Target::Item {
                    kind: ItemKind::Event,
                    id: item_id(e, ctx, &key("event"), "event")?,
                },
                (None, None, Some(n)) => Target::NewMessage(Box::new(super::mail::validate(
                    n.get_ref(),
                    ctx,
                    &key("new_message"),
                    Some(n.span().start),
                    dir,
                )?)),
                (None, None, None) => return Err(ctx.err(
                    header,
                    key("message"),
                    "a mapping needs a target: message = \"ID\" or event = \"ID\" (`outbox items \
                     messages` lists ids), or a [mapping.new_message] table to mail the files",
                )),
                (m, e, n) => {
                    // Point at the last of the targets given.
                    let (k, offset) = match (m, e, n) {
                        (_, _, Some(n)) => ("new_message", n.span().start),
                        (_, Some(e), _) => ("event", e.span().start),
                        (Some(m), _, _) => ("message", m.span().start),
                        _ => ("message", 0),
                    };
                    return Err(ctx.err(
                        Some(offset),
                        key(k),
                        "a mapping has exactly one target: set message, event or new_message, \
                     not two",
                    ));
                }
            };
        let (kind, item_id) = match &target {
            Target::Item { kind, id } => (*kind, id.clone()),
            Target::NewMessage(_) => (ItemKind::Message, String::new()),
        };

        let (name, name_offset) = match &raw.name {
            Some(n) => {
                let name = n.get_ref().trim();
                if name.is_empty() {
                    return Err(ctx.at(
                        n,
                        key("name"),
                        "name is empty; remove it to use the folder's name",
                    ));
                }
                (name.to_owned(), n.span().start)
            }
            None => match folder.file_name() {
                Some(f) => (f.to_string_lossy().into_owned(), folder_raw.span().start),
                None => {
                    return Err(ctx.at(
                        folder_raw,
                        key("name"),
                        "cannot take a name from this folder; set name",
                    ))
                }
            },
        };
        if let Some(&j) = names.get(&name) {
            return Err(ctx.err(
                Some(name_offset),
                key("name"),
                format!(
                    "mapping name \"{name}\" is already used by mapping[{j}] (line {}); names must \
                     be unique: set a different name",
                    line_of(ctx.text, spots[j].0)
                ),
            ));
        }

        let user = match &raw.user {
            Some(u) => {
                let user = u.get_ref().trim();
                if user.is_empty() {
                    return Err(ctx.at(
                        u,
                        key("user"),
                        "user is empty; write \"me\", a UPN or a user id",
                    ));
                }
                user.to_owned()
            }
            None => DEFAULT_USER.to_owned(),
        };
        if matches!(method, RawMethod::ClientCredentials) && user.eq_ignore_ascii_case("me") {
            let offset = raw.user.as_ref().map(|u| u.span().start).or(header);
            return Err(ctx.err(
                offset,
                key("user"),
                "auth.method = \"client_credentials\" signs in as the app, which has no /me: set \
                 user to the mailbox's UPN or id, e.g. user = \"reports@contoso.com\"",
            ));
        }

        let (include, include_patterns) =
            globs(raw.include.as_ref(), ctx, &key("include"), DEFAULT_INCLUDE)?;
        if include_patterns.is_empty() {
            let offset = raw.include.as_ref().map(|v| v.span().start);
            return Err(ctx.err(
                offset,
                key("include"),
                "include is empty, so nothing would be sent; e.g. [\"*\"]",
            ));
        }
        let (exclude, exclude_patterns) =
            globs(raw.exclude.as_ref(), ctx, &key("exclude"), DEFAULT_EXCLUDE)?;

        let after = match raw.after.as_ref().map(|v| *v.get_ref()) {
            Some(RawAfter::Keep) | None => After::Keep,
            Some(RawAfter::Move) => After::Move,
            Some(RawAfter::Delete) => After::Delete,
        };
        let sent_dir = match &raw.sent_dir {
            Some(v) => path_value(v, ctx, &key("sent_dir"), &folder)?,
            None => folder.join(DEFAULT_SENT_DIR),
        };
        // Moving sent files into (or above) the watched folder would feed them back in.
        let sent_offset = raw.sent_dir.as_ref().map(|v| v.span().start);
        if same_or_inside(&folder, &sent_dir) {
            return Err(ctx.err(
                sent_offset,
                key("sent_dir"),
                "sent_dir must not be the mapped folder or contain it; e.g. \"sent\"",
            ));
        }
        let failed_dir = match &raw.failed_dir {
            Some(v) => {
                let p = path_value(v, ctx, &key("failed_dir"), &folder)?;
                if same_or_inside(&folder, &p) {
                    return Err(ctx.at(
                        v,
                        key("failed_dir"),
                        "failed_dir must not be the mapped folder or contain it; e.g. \"failed\"",
                    ));
                }
                Some(p)
            }
            None => None,
        };
        let if_exists = match raw.if_exists.as_ref().map(|v| *v.get_ref()) {
            Some(RawIfExists::Skip) | None => IfExists::Skip,
            Some(RawIfExists::Attach) => IfExists::Attach,
        };
        let on_change = match raw.on_change.as_ref().map(|v| *v.get_ref()) {
            Some(RawOnChange::Replace) | None => super::OnChange::Replace,
            Some(RawOnChange::Add) => super::OnChange::Add,
        };

        // One folder (or a folder inside it) feeding two mappings would attach files twice.
        for (j, other) in mappings.iter().enumerate() {
            if same_or_inside(&folder, &other.folder) || same_or_inside(&other.folder, &folder) {
                let how = if same_path(&folder, &other.folder) {
                    "is the same folder as"
                } else if same_or_inside(&folder, &other.folder) {
                    "is inside the folder of"
                } else {
                    "contains the folder of"
                };
                return Err(ctx.at(
                    folder_raw,
                    key("folder"),
                    format!(
                        "{} {how} mapping \"{}\" (line {}); mapped folders must not overlap: \
                         use separate folders",
                        folder.display(),
                        other.name,
                        line_of(ctx.text, spots[j].1)
                    ),
                ));
            }
        }

        // Sent or failed files moved into another mapping's folder would be attached there.
        for other in &mappings {
            let dirs = [
                ("sent_dir", Some(&sent_dir), sent_offset),
                (
                    "failed_dir",
                    failed_dir.as_ref(),
                    raw.failed_dir.as_ref().map(|v| v.span().start),
                ),
            ];
            for (k, dir, offset) in dirs {
                if dir.is_some_and(|d| same_or_inside(d, &other.folder)) {
                    return Err(ctx.err(
                        offset.or(Some(folder_raw.span().start)),
                        key(k),
                        format!(
                            "{k} is inside the folder of mapping \"{}\", which would attach the \
                             files moved there; choose a folder outside every mapped folder",
                            other.name
                        ),
                    ));
                }
            }
            let mut theirs = std::iter::once(&other.sent_dir).chain(other.failed_dir.as_ref());
            if let Some(dir) = theirs.find(|d| same_or_inside(&folder, d)) {
                return Err(ctx.at(
                    folder_raw,
                    key("folder"),
                    format!(
                        "{} is inside {}, where mapping \"{}\" moves its files; choose a folder \
                         outside it",
                        folder.display(),
                        dir.display(),
                        other.name
                    ),
                ));
            }
        }

        names.insert(name.clone(), i);
        spots.push((name_offset, folder_raw.span().start));
        mappings.push(Mapping {
            name,
            folder,
            kind,
            item_id,
            target,
            user,
            include,
            exclude,
            include_patterns,
            exclude_patterns,
            recursive: raw.recursive.unwrap_or(false),
            after,
            sent_dir,
            failed_dir,
            follow_symlinks: raw.follow_symlinks.unwrap_or(false),
            if_exists,
            on_change,
        });
    }
    Ok(mappings)
}

/// A `message` or `event` id, trimmed and not empty.
fn item_id(v: &Spanned<String>, ctx: &Ctx, key: &str, what: &str) -> Result<String, ConfigError> {
    let id = v.get_ref().trim().to_owned();
    if id.is_empty() {
        return Err(ctx.at(
            v,
            key,
            format!("{what} id is empty; `outbox items {what}s` lists ids"),
        ));
    }
    Ok(id)
}

fn globs(
    v: Option<&Spanned<Vec<Spanned<String>>>>,
    ctx: &Ctx,
    key: &str,
    default: &[&str],
) -> Result<(globset::GlobSet, Vec<String>), ConfigError> {
    let patterns: Vec<(String, Option<usize>)> = match v {
        Some(list) => list
            .get_ref()
            .iter()
            .map(|p| (p.get_ref().clone(), Some(p.span().start)))
            .collect(),
        None => default.iter().map(|p| ((*p).to_owned(), None)).collect(),
    };
    let mut builder = globset::GlobSetBuilder::new();
    for (j, (pattern, offset)) in patterns.iter().enumerate() {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| {
                ctx.err(
                    *offset,
                    format!("{key}[{j}]"),
                    format!(
                        "bad glob \"{pattern}\": {}; globs match file names, e.g. \"*.pdf\"",
                        e.kind()
                    ),
                )
            })?;
        builder.add(glob);
    }
    let set = builder.build().map_err(|e| {
        ctx.err(
            v.map(|l| l.span().start),
            key,
            format!("bad glob list: {e}"),
        )
    })?;
    Ok((set, patterns.into_iter().map(|(p, _)| p).collect()))
}

// ---------------------------------------------------------------------------------------------
// Paths.

pub(super) fn path_value(
    v: &Spanned<String>,
    ctx: &Ctx,
    key: &str,
    base: &Path,
) -> Result<PathBuf, ConfigError> {
    let raw = v.get_ref();
    if raw.trim().is_empty() {
        return Err(ctx.at(v, key, "path is empty"));
    }
    let expanded = expand(raw).map_err(|m| ctx.at(v, key, m))?;
    Ok(normalize(&base.join(expanded)))
}

/// Expand a leading `~` and every `$VAR` / `${VAR}` (`$$` is a literal `$`). An unset variable is
/// an error: silently expanding it to nothing would point at the wrong folder.
fn expand(s: &str) -> Result<PathBuf, String> {
    let mut out = OsString::new();
    let mut rest = s;
    if let Some(after) = rest.strip_prefix('~') {
        if after.is_empty()
            || after.starts_with('/')
            || after.starts_with(std::path::MAIN_SEPARATOR)
        {
            let home = directories::BaseDirs::new()
                .map(|d| d.home_dir().to_path_buf())
                .ok_or("cannot find your home directory to expand ~; write the full path")?;
            out.push(home);
            rest = after;
        } else {
            return Err(format!(
                "\"{s}\": ~user is not supported; write the full path"
            ));
        }
    }
    while let Some(i) = rest.find('$') {
        out.push(&rest[..i]);
        let tail = &rest[i + 1..];
        let (name, next) = if let Some(braced) = tail.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("\"{s}\": missing }} after ${{"))?;
            (&braced[..end], &braced[end + 1..])
        } else if let Some(after) = tail.strip_prefix('$') {
            out.push("$");
            rest = after;
            continue;
        } else {
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            (&tail[..end], &tail[end..])
        };
        if name.is_empty() {
            // A `$` not followed by a name is just a character.
            out.push("$");
            rest = tail;
            continue;
        }
        match std::env::var_os(name) {
            Some(value) => out.push(value),
            None => {
                return Err(format!(
                    "environment variable {name} (in \"{s}\") is not set; set it, or write the \
                     path without it"
                ))
            }
        }
        rest = next;
    }
    out.push(rest);
    Ok(PathBuf::from(out))
}

/// Resolve `.` and `..` without touching the disk: folders need not exist yet.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Case-insensitive where the usual file systems are.
fn fold(p: &Path) -> PathBuf {
    if cfg!(any(windows, target_os = "macos")) {
        PathBuf::from(p.to_string_lossy().to_lowercase())
    } else {
        p.to_path_buf()
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    fold(a) == fold(b)
}

fn same_or_inside(inner: &Path, outer: &Path) -> bool {
    fold(inner).starts_with(fold(outer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_map_names_nested_and_array_keys() {
        let text = "[agent]\nconcurrency = 4\n\n[[mapping]]\nfolder = \"a\"\n\n[[mapping]]\nfolder = \"b\"\nexclude = [\"x\",\n  \"y\"]\n";
        let keys = KeyMap::new(text);
        let at = |needle: &str| keys.key_at(text.find(needle).unwrap()).unwrap().to_owned();
        assert_eq!(at("4"), "agent.concurrency");
        assert_eq!(at("\"a\""), "mapping[0].folder");
        assert_eq!(at("\"b\""), "mapping[1].folder");
        assert_eq!(at("\"y\""), "mapping[1].exclude");
    }

    #[test]
    fn guess_key_for_syntax_errors() {
        let text = "[agent]\nchunk_size = \"4MiB\n";
        assert_eq!(
            guess_key(text, text.find("\"4").unwrap()),
            "agent.chunk_size"
        );
        assert_eq!(guess_key("x = \n", 3), "x");
    }

    #[test]
    fn expand_home_and_variables() {
        std::env::set_var("OUTBOX_TEST_EXPAND", "/data");
        assert_eq!(
            expand("$OUTBOX_TEST_EXPAND/in").unwrap(),
            PathBuf::from("/data/in")
        );
        assert_eq!(
            expand("${OUTBOX_TEST_EXPAND}x").unwrap(),
            PathBuf::from("/datax")
        );
        assert_eq!(expand("a$$b").unwrap(), PathBuf::from("a$b"));
        assert_eq!(expand("cost$").unwrap(), PathBuf::from("cost$"));
        let home = directories::BaseDirs::new()
            .unwrap()
            .home_dir()
            .to_path_buf();
        assert_eq!(expand("~/x").unwrap(), home.join("x"));
        assert_eq!(expand("~").unwrap(), home);
        let e = expand("$OUTBOX_TEST_SURELY_UNSET/x").unwrap_err();
        assert!(
            e.contains("OUTBOX_TEST_SURELY_UNSET") && e.contains("not set"),
            "{e}"
        );
        assert!(expand("~bob/x").unwrap_err().contains("~user"));
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert!(same_or_inside(Path::new("/a/b"), Path::new("/a")));
        assert!(!same_or_inside(Path::new("/ab"), Path::new("/a")));
    }

    #[test]
    fn defaults_match_spec() {
        let s = defaults(PathBuf::from("x.toml"));
        assert_eq!(
            s.graph.base_url.as_str(),
            "https://graph.microsoft.com/v1.0"
        );
        assert_eq!(s.auth.tenant, "common");
        assert_eq!(
            s.auth.method,
            AuthMethod::TokenEnv {
                var: "OUTBOX_ACCESS_TOKEN".into()
            }
        );
        assert_eq!(s.agent.chunk_size, 3840 * 1024);
        assert_eq!(s.agent.concurrency, 4);
        assert_eq!(s.agent.keep_done, Duration::from_secs(180 * 86_400));
        assert!(s.mappings.is_empty());
    }
}
