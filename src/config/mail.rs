//! `[mapping.new_message]`: a mapping that mails what lands in its folder. The raw table, and
//! its validation into a [`MessageTemplate`] that cannot be wrong: at least one recipient, every
//! address plausible, every placeholder known (`core::mail::PLACEHOLDERS`), one body source,
//! sizes and durations with units. Errors name the file, line and key (exit 78).

use super::raw::{duration_value, path_value, size_value, Ctx, IntOrText};
use super::ConfigError;
use crate::core::mail::parse_template;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The tenant's default message size limit (Exchange Online: 35 MB).
pub const DEFAULT_MAX_MESSAGE_SIZE: &str = "35MB";
pub const DEFAULT_BATCH_QUIET: &str = "30s";
/// A batch closes this long after its first file however often files arrive (at least
/// `batch_quiet`: when only that is set, longer, the default follows it).
pub const DEFAULT_BATCH_MAX_WAIT: &str = "5m";
/// Messages one mapping may make per window. A drop folder that mails more than 200 messages a
/// day is a mistake or a neighbour's abuse far more often than a need, and a mailbox that
/// suddenly sends thousands is restricted by Exchange Online's outbound-spam protection; the
/// cap keeps a shared folder from spending the user's sending reputation.
pub const DEFAULT_MAX_MESSAGES: &str = "200/1d";
pub const DEFAULT_SUBJECT: &str = "{name}";
pub const DEFAULT_BODY: &str = "Attached: {names}";
/// A body file larger than this is refused (a body, not an attachment).
const MAX_BODY_FILE: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    Text,
    Html,
}

/// `group`: one message per file, or the files that settle close together in one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    File,
    Batch,
}

/// Where a message goes: an existing item, or a new message made from a template.
#[derive(Debug, Clone)]
pub enum Target {
    Item { kind: super::ItemKind, id: String },
    NewMessage(Box<MessageTemplate>),
}

/// A validated `[mapping.new_message]`. Subject and body are templates whose placeholders are
/// known; `core::mail::render_str` fills them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTemplate {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: String,
    /// The body template (from `body`, or read from `body_file` when the config was loaded).
    pub body: String,
    /// `body_file` as given, expanded and absolute; `None` for an inline `body`.
    pub body_file: Option<PathBuf>,
    pub body_type: BodyType,
    pub group: Group,
    pub batch_quiet: Duration,
    /// A batch closes this long after its first file, however often files keep arriving (a
    /// neighbour dropping a file every few seconds cannot hold it open); never below
    /// `batch_quiet`.
    pub batch_max_wait: Duration,
    /// `false`: leave the drafts, fully attached, for a person to send.
    pub send: bool,
    /// Transport bytes a message may reach (the tenant's limit).
    pub max_message_size: u64,
    /// At most this many messages from this mapping per window (`None`: "off"); beyond it
    /// files wait.
    pub max_messages: Option<super::Budget>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [mapping.new_message] table")]
pub(super) struct RawNewMessage {
    to: Option<Spanned<Vec<Spanned<String>>>>,
    cc: Option<Spanned<Vec<Spanned<String>>>>,
    bcc: Option<Spanned<Vec<Spanned<String>>>>,
    subject: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
    body_file: Option<Spanned<String>>,
    body_type: Option<Spanned<RawBodyType>>,
    group: Option<Spanned<RawGroup>>,
    batch_quiet: Option<Spanned<IntOrText>>,
    batch_max_wait: Option<Spanned<IntOrText>>,
    send: Option<bool>,
    max_message_size: Option<Spanned<IntOrText>>,
    max_messages: Option<Spanned<IntOrText>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawBodyType {
    Text,
    Html,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawGroup {
    File,
    Batch,
}

/// An address as Exchange will take it: `local@domain.tld`, no spaces or angle brackets, no
/// display name. `Err` says what is wrong.
pub fn check_address(a: &str) -> Result<(), String> {
    if a.is_empty() {
        return Err("an address is empty".into());
    }
    if a.contains(['<', '>', ',', ';', '"']) {
        return Err(format!(
            "\"{a}\" is not a bare address (no display names, brackets or lists); e.g. \"ap@contoso.com\""
        ));
    }
    if a.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "\"{a}\" contains a space; write the bare address, e.g. \"ap@contoso.com\""
        ));
    }
    let Some((local, domain)) = a.rsplit_once('@') else {
        return Err(format!("\"{a}\" has no @; e.g. \"ap@contoso.com\""));
    };
    if local.is_empty() || local.contains('@') {
        return Err(format!(
            "\"{a}\" is not an address; e.g. \"ap@contoso.com\""
        ));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels.iter().any(|l| {
            l.is_empty()
                || l.starts_with('-')
                || l.ends_with('-')
                || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
    {
        return Err(format!(
            "\"{a}\": \"{domain}\" is not a domain name; e.g. \"ap@contoso.com\""
        ));
    }
    Ok(())
}

fn addresses(
    v: Option<&Spanned<Vec<Spanned<String>>>>,
    ctx: &Ctx,
    key: &str,
) -> Result<Vec<String>, ConfigError> {
    let Some(list) = v else {
        return Ok(Vec::new());
    };
    list.get_ref()
        .iter()
        .map(|a| {
            let s = a.get_ref().trim();
            check_address(s).map_err(|m| ctx.at(a, key, m))?;
            Ok(s.to_string())
        })
        .collect()
}

/// A subject or body template as a mapping's config and `outbox mail` take it: every
/// placeholder known, every brace closed. `Err` says what is wrong (the unknown placeholder
/// named, with the list of known ones).
pub fn check_template(t: &str) -> Result<(), String> {
    parse_template(t).map(|_| ()).map_err(|e| e.to_string())
}

fn template(v: &Spanned<String>, ctx: &Ctx, key: &str) -> Result<String, ConfigError> {
    check_template(v.get_ref()).map_err(|m| ctx.at(v, key, m))?;
    Ok(v.get_ref().clone())
}

/// The value of `r`, or `None` with its error kept in `errors`: each key of the table is
/// checked on its own, so one run says every error of it.
fn kept<T>(r: Result<T, ConfigError>, errors: &mut Vec<ConfigError>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

/// Validate `mapping[i].new_message`; `key` is `mapping[i].new_message`, `header` the offset of
/// the table, `dir` where relative paths start. Every key's error, in the table's order.
pub(super) fn validate(
    raw: &RawNewMessage,
    ctx: &Ctx,
    key: &str,
    header: Option<usize>,
    dir: &Path,
) -> Result<MessageTemplate, Vec<ConfigError>> {
    let k = |s: &str| format!("{key}.{s}");
    let mut errors = Vec::new();
    let to = kept(addresses(raw.to.as_ref(), ctx, &k("to")), &mut errors);
    let cc = kept(addresses(raw.cc.as_ref(), ctx, &k("cc")), &mut errors);
    let bcc = kept(addresses(raw.bcc.as_ref(), ctx, &k("bcc")), &mut errors);
    // (A bad address is said as such, not as a missing recipient.)
    if errors.is_empty()
        && [&to, &cc, &bcc]
            .iter()
            .all(|l| l.as_ref().is_some_and(Vec::is_empty))
    {
        let offset = [&raw.to, &raw.cc, &raw.bcc]
            .into_iter()
            .flatten()
            .map(|v| v.span().start)
            .next()
            .or(header);
        errors.push(ctx.err(
            offset,
            k("to"),
            "a new message needs at least one recipient in to, cc or bcc; e.g. to = [\"ap@contoso.com\"]",
        ));
    }
    let subject = match &raw.subject {
        Some(s) => kept(template(s, ctx, &k("subject")), &mut errors),
        None => Some(DEFAULT_SUBJECT.to_string()),
    };
    let body = match (&raw.body, &raw.body_file) {
        (Some(_), Some(f)) => {
            errors.push(ctx.at(f, k("body_file"), "set body or body_file, not both"));
            None
        }
        (Some(b), None) => kept(template(b, ctx, &k("body")), &mut errors).map(|b| (b, None)),
        (None, Some(f)) => kept(
            path_value(f, ctx, &k("body_file"), dir).and_then(|path| {
                let text = read_body(&path).map_err(|m| ctx.at(f, k("body_file"), m))?;
                check_template(&text).map_err(|e| {
                    ctx.at(f, k("body_file"), format!("in {}: {e}", path.display()))
                })?;
                Ok((text, Some(path)))
            }),
            &mut errors,
        ),
        (None, None) => Some((DEFAULT_BODY.to_string(), None)),
    };
    let body_file = body.as_ref().and_then(|(_, f)| f.clone());
    let body_type = match raw.body_type.as_ref().map(|v| *v.get_ref()) {
        Some(RawBodyType::Text) => BodyType::Text,
        Some(RawBodyType::Html) => BodyType::Html,
        None => match &body_file {
            Some(p)
                if p.extension().is_some_and(|e| {
                    e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm")
                }) =>
            {
                BodyType::Html
            }
            _ => BodyType::Text,
        },
    };
    let group = match raw.group.as_ref().map(|v| *v.get_ref()) {
        Some(RawGroup::File) | None => Group::File,
        Some(RawGroup::Batch) => Group::Batch,
    };
    let batch_quiet = kept(
        duration_value(
            raw.batch_quiet.as_ref(),
            ctx,
            &k("batch_quiet"),
            DEFAULT_BATCH_QUIET,
        ),
        &mut errors,
    );
    if group == Group::Batch && batch_quiet.is_some_and(|q| q.is_zero()) {
        errors.push(ctx.err(
            raw.batch_quiet.as_ref().map(|v| v.span().start),
            k("batch_quiet"),
            "batch_quiet must be longer than 0 for group = \"batch\"; e.g. \"30s\"",
        ));
    }
    let batch_max_wait = match raw.batch_max_wait.as_ref() {
        Some(v) => match kept(
            duration_value(Some(v), ctx, &k("batch_max_wait"), DEFAULT_BATCH_MAX_WAIT),
            &mut errors,
        ) {
            Some(d) if batch_quiet.is_some_and(|q| d < q) => {
                errors.push(ctx.at(
                    v,
                    k("batch_max_wait"),
                    format!(
                        "batch_max_wait ({}) is shorter than batch_quiet ({}): a batch closes \
                         batch_quiet after its last file and at the latest batch_max_wait after \
                         its first, so make it at least batch_quiet; e.g. \"5m\"",
                        written(Some(v), DEFAULT_BATCH_MAX_WAIT),
                        written(raw.batch_quiet.as_ref(), DEFAULT_BATCH_QUIET)
                    ),
                ));
                None
            }
            d => d,
        },
        None => kept(
            duration_value(None, ctx, &k("batch_max_wait"), DEFAULT_BATCH_MAX_WAIT),
            &mut errors,
        )
        .map(|d| d.max(batch_quiet.unwrap_or_default())),
    };
    let max_message_size = kept(
        size_value(
            raw.max_message_size.as_ref(),
            ctx,
            &k("max_message_size"),
            DEFAULT_MAX_MESSAGE_SIZE,
        ),
        &mut errors,
    );
    let min = crate::core::mail::MESSAGE_OVERHEAD * 2;
    if max_message_size.is_some_and(|m| m < min) {
        errors.push(ctx.err(
            raw.max_message_size.as_ref().map(|v| v.span().start),
            k("max_message_size"),
            format!(
                "max_message_size must be at least {min} bytes; the tenant's limit is 35MB by default, e.g. \"35MB\""
            ),
        ));
    }
    let max_messages = kept(
        super::raw::budget_value(
            raw.max_messages.as_ref(),
            ctx,
            &k("max_messages"),
            DEFAULT_MAX_MESSAGES,
            super::units::parse_count_budget,
        ),
        &mut errors,
    );
    match (
        to,
        cc,
        bcc,
        subject,
        body,
        batch_quiet,
        batch_max_wait,
        max_message_size,
        max_messages,
    ) {
        (
            Some(to),
            Some(cc),
            Some(bcc),
            Some(subject),
            Some((body, body_file)),
            Some(batch_quiet),
            Some(batch_max_wait),
            Some(max_message_size),
            Some(max_messages),
        ) if errors.is_empty() => Ok(MessageTemplate {
            to,
            cc,
            bcc,
            subject,
            body,
            body_file,
            body_type,
            group,
            batch_quiet,
            batch_max_wait,
            send: raw.send.unwrap_or(true),
            max_message_size,
            max_messages,
        }),
        _ => Err(errors),
    }
}

/// A duration as the config wrote it (or its default).
fn written(v: Option<&Spanned<IntOrText>>, default: &str) -> String {
    match v.map(|v| v.get_ref()) {
        Some(IntOrText::Text(s)) => s.trim().to_string(),
        _ => default.to_string(),
    }
}

fn read_body(path: &Path) -> Result<String, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if meta.len() > MAX_BODY_FILE {
        return Err(format!(
            "{} is {} bytes; a body file may have at most {MAX_BODY_FILE}",
            path.display(),
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::check_address;

    #[test]
    fn addresses_are_checked_for_shape() {
        for ok in ["ap@contoso.com", "a.b+c@mail.contoso.co.uk", "Ω@bücher.de"] {
            assert_eq!(check_address(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "ap",
            "ap@contoso",
            "ap@@contoso.com",
            "@contoso.com",
            "a p@contoso.com",
            "AP <ap@contoso.com>",
            "a@b.com,c@d.com",
            "ap@contoso..com",
            "ap@-contoso.com",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}
