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
/// Graph refuses any request body over 4 MiB, upload-session chunks included (defined in the core).
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
const DEFAULT_REMEMBER_SENT: &str = "90d";
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
    remember_sent: Option<Spanned<IntOrText>>,
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
    allow_hard_links: Option<bool>,
    cross_mounts: Option<bool>,
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

mod keys;
mod mappings;
mod paths;
#[cfg(test)]
mod tests;
mod validate;

use keys::*;
use mappings::*;
pub(super) use paths::path_value;
use paths::*;
use validate::*;
pub(in crate::config) use validate::{budget_value, duration_value, size_value};

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
            // The platform's file: another may be named. A file named (--config, OUTBOX_CONFIG)
            // was named already: no advice to name one.
            let or_name = if Some(file) == crate::config::platform_config_path().as_deref() {
                ", or pass --config PATH (or set OUTBOX_CONFIG)"
            } else {
                ""
            };
            return Err(whole(format!(
                "no config file here; run `outbox init` to write a commented starter config{or_name}"
            )));
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

/// Parse and validate `text`, read from `file`: a parse error, or the first error of each section
/// (of each mapping, and every one of a mapping's target: `validate_mappings`).
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
        let message = match repeated_table(&text, offset) {
            Some((table, first)) => format!(
                "the table [{table}] is already opened on line {first}, and a table is written \
                 once: move the keys below this line into that one (replacing any it has \
                 already), then delete this [{table}] line"
            ),
            None => format!(
                "invalid TOML: {}; check the quotes and brackets on this line",
                e.message().trim_end().replace('\n', "; ")
            ),
        };
        return Err(vec![ConfigError {
            file,
            line: e.span().map(|s| line_of(&text, s.start)),
            key: guess_key(&text, offset),
            message,
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
        read_at: std::time::SystemTime::now(),
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
            remember_sent: parse_duration(DEFAULT_REMEMBER_SENT).expect(ok),
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
        // `include = "*.pdf"`: a list key given one value says how to write it.
        if message.starts_with("invalid type: string") && message.ends_with("expected a sequence") {
            let value = e
                .span()
                .and_then(|s| self.text.get(s))
                .map(str::trim)
                .unwrap_or("\"...\"");
            message.push_str(&format!("; write it as a list: `{leaf} = [{value}]`"));
        }
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
