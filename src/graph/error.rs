//! Graph's error body turned into one typed error, with retryability carried as data and a
//! sentence telling the user what to do for the errors users meet.

use std::fmt;
use std::time::Duration;

/// How the caller should react to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 429, or 503 with Retry-After: wait as told, then retry.
    Throttled,
    /// Other 5xx, timeouts, dropped connections: back off and retry.
    Transient,
    /// 401/403/404 (or 416) on an upload URL: the session is dead; recreate it.
    SessionDead,
    /// 401 from Graph: refresh the token or sign in again.
    SignIn,
    /// Everything else: stop this file, no retry.
    Permanent,
}

/// An error from Graph (or from reaching it), with Graph's code and message.
#[derive(Debug, Clone)]
pub struct GraphError {
    pub class: ErrorClass,
    /// HTTP status, `None` when no response arrived.
    pub status: Option<u16>,
    /// Graph's `error.code`, or a code of ours (`ConnectionFailed`, `Timeout`, ...).
    pub code: String,
    /// Graph's `error.message`, already free of secrets.
    pub message: String,
    pub retry_after: Option<Duration>,
    /// A `WWW-Authenticate` claims challenge (continuous access evaluation) was present.
    pub claims_challenge: bool,
    /// What to do about a refused token, for the token source in use (`outbox login` helps only
    /// device-code sign-in); set by the client, see `Credentials::refused_hint`.
    pub sign_in_hint: Option<String>,
    /// The refused request was a message's send (`…/send`): a 403 there is the `Mail.Send`
    /// permission, and the draft stays in Drafts. Set by [`GraphError::of_send`].
    pub send: bool,
    /// The refused request made a message's draft (`POST …/messages`): a 403 there is the
    /// `Mail.ReadWrite` permission alone. Set by [`GraphError::of_draft`].
    pub draft: bool,
}

impl GraphError {
    pub fn new(
        class: ErrorClass,
        status: Option<u16>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        GraphError {
            class,
            status,
            code: code.into(),
            message: crate::secret::redact(&message.into()),
            retry_after: None,
            claims_challenge: false,
            sign_in_hint: None,
            send: false,
            draft: false,
        }
    }

    /// The same error, known to answer a message's send (its advice says so).
    pub fn of_send(mut self) -> Self {
        self.send = true;
        self
    }

    /// The same error, known to answer a draft's creation (its advice says so).
    pub fn of_draft(mut self) -> Self {
        self.draft = true;
        self
    }

    /// Build from an HTTP status and body. `upload_url` says whether the request went to an
    /// upload URL (where 401/403/404 mean the session is dead).
    pub fn from_response(
        status: u16,
        body: &[u8],
        retry_after: Option<Duration>,
        www_authenticate: Option<&str>,
        upload_url: bool,
    ) -> Self {
        let (code, message) = parse_error_body(body).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)])
                .trim()
                .to_string();
            (
                default_code(status).to_string(),
                if text.is_empty() {
                    status_text(status).to_string()
                } else {
                    text
                },
            )
        });
        let claims_challenge = www_authenticate
            .is_some_and(|h| h.contains("claims=") || h.contains("insufficient_claims"));
        let class = classify(status, &code, &message, retry_after.is_some(), upload_url);
        let mut e = GraphError::new(class, Some(status), code, message);
        e.retry_after = retry_after;
        e.claims_challenge = claims_challenge;
        e
    }

    /// The request never got an answer (connect error, reset, timeout).
    pub fn transport(err: &reqwest::Error) -> Self {
        let code = if err.is_timeout() {
            "Timeout"
        } else if err.is_connect() {
            "ConnectionFailed"
        } else {
            "ConnectionDropped"
        };
        GraphError::new(ErrorClass::Transient, None, code, transport_text(err))
    }

    /// A connection that was never made because the server's TLS certificate is not trusted.
    pub fn is_untrusted_certificate(&self) -> bool {
        self.status.is_none()
            && self.code == "ConnectionFailed"
            && self.message.contains("certificate")
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self.class, ErrorClass::Throttled | ErrorClass::Transient)
    }

    /// Graph said the request body was too large for a single POST.
    pub fn is_request_too_large(&self) -> bool {
        self.status == Some(413)
            || (self.status == Some(400)
                && self
                    .message
                    .to_ascii_lowercase()
                    .contains("maximum request length"))
    }

    pub fn is_message_size_exceeded(&self) -> bool {
        self.code == "ErrorMessageSizeExceeded"
    }

    /// What the user should do, for the errors that have a known answer.
    pub fn advice(&self) -> Option<&str> {
        if self.is_message_size_exceeded() {
            return Some(
                "the item would pass the tenant's message size limit (35 MB by default, about 25 MB of raw \
                 attachments after encoding): attach to another item, or ask the Exchange admin to raise the limit",
            );
        }
        if self.is_untrusted_certificate() {
            return Some(UNTRUSTED_CERTIFICATE);
        }
        match (self.status, self.code.as_str()) {
            (None, "ConnectionFailed") => Some("check the network, a proxy (HTTPS_PROXY, NO_PROXY) and graph.base_url in the config"),
            // A send's 404: the draft left Drafts (sent already, its move to Sent Items under
            // way or done, or deleted in Outlook), not a mapping's wrong item.
            (Some(404), _) if self.send => Some(SEND_404),
            (Some(404), "ErrorItemNotFound") | (Some(404), "ResourceNotFound") => {
                Some("the target item does not exist (deleted, or a wrong id): pick another from `outbox items messages` or `outbox items events`")
            }
            // The shared-mailbox explanation is the hint: not a second, opposite one.
            (Some(403), _) if self.message.contains(SHARED_MAILBOX_403) => None,
            // Exchange's sending limit comes as a 403 too: that is a wait, not a permission.
            // Exchange's sending limit (Outlook.com answers it with a 403): a wait, not a permission.
            (_, "ErrorExceededMessageLimit") => Some(SENDING_LIMIT),
            (Some(403), _) if self.send => Some(SEND_403),
            (Some(403), _) if self.draft => Some(DRAFT_403),
            (Some(403), _) => Some("access denied: check the account's permissions (Mail.ReadWrite / Calendars.ReadWrite) and consent"),
            (Some(401), _) if self.claims_challenge => Some("the tenant requires a fresh sign-in: run `outbox login`"),
            (Some(401), _) if self.sign_in_hint.is_some() => self.sign_in_hint.as_deref(),
            (Some(401), _) => Some("the access token was refused: sign in again (`outbox login`) or check the token source"),
            _ => None,
        }
    }
}

/// The server's certificate does not lead to a trusted root.
pub const UNTRUSTED_CERTIFICATE: &str = "the server's TLS certificate is not trusted: when a \
TLS-inspecting proxy (or `outbox sandbox --tls`) signs it, set graph.ca_file to its CA certificate \
(a PEM file)";

/// What a request that got no answer says: the server's origin (no path or query: they are long,
/// percent-encoded, and an upload URL's carries its `authtoken`) and the innermost cause
/// ("Connection refused (os error 111)", "invalid peer certificate: UnknownIssuer").
fn transport_text(err: &reqwest::Error) -> String {
    let origin = err
        .url()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null");
    let mut cause = err.to_string();
    let mut src = std::error::Error::source(err);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    let cause = if err.is_timeout() && !cause.contains("timed out") {
        format!("no answer in time ({cause})")
    } else {
        cause
    };
    match origin {
        Some(o) => format!("{o}: {cause}"),
        None => cause,
    }
}

/// A send refused with 403: sending needs `Mail.Send`, which `Mail.ReadWrite` does not give.
/// What became of the draft is said by who knows it: a mapping's message leaves it in Drafts for
/// `outbox retry`, `outbox mail` deletes it.
/// A send refused by Exchange's sending limit (`ErrorExceededMessageLimit`).
pub const SENDING_LIMIT: &str = "the mailbox reached Exchange's sending limit (30 messages a \
minute, 10,000 recipients a day): a matter of time, no permission is missing";

/// A send answered 404: the draft is no longer in Drafts.
pub const SEND_404: &str = "the draft is no longer in Drafts: it was sent (look in Sent Items) or \
deleted in Outlook";

pub const SEND_403: &str = "sending needs the Mail.Send permission, which this sign-in lacks \
(delegated: run `outbox login` again and consent to Mail.Send; application: grant Mail.Send and \
admin consent); nothing was sent";

/// A draft's creation refused with 403: a draft needs `Mail.ReadWrite` (no calendar is involved).
pub const DRAFT_403: &str = "access denied: making a draft needs the Mail.ReadWrite permission on \
this mailbox (delegated: consent to it at `outbox login`; application: grant it and admin \
consent); nothing was sent";

/// Explanation for Graph's known issue: createUploadSession with delegated permissions on a
/// shared or delegated mailbox answers 403.
pub const SHARED_MAILBOX_403: &str = "Graph refuses upload sessions (files of 3 MiB or more) on a shared or delegated mailbox \
when signed in with delegated permissions (a known issue of Microsoft Graph); use application permissions \
(auth.method = \"client_credentials\") for this mapping, or attach to an item in your own mailbox";

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "{} (HTTP {s}): {}", self.code, self.message)?,
            None => write!(f, "{}: {}", self.code, self.message)?,
        }
        if let Some(a) = self.advice() {
            write!(f, " — {a}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GraphError {}

/// `{"error":{"code","message",...}}`, tolerant of casing (`Error`, `Code`, `Message`).
pub fn parse_error_body(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    let (_, err) = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case("error"))?;
    let eo = err.as_object()?;
    let get = |name: &str| {
        eo.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned)
    };
    let code = get("code")?;
    Some((code, get("message").unwrap_or_default()))
}

fn classify(
    status: u16,
    code: &str,
    message: &str,
    has_retry_after: bool,
    upload_url: bool,
) -> ErrorClass {
    if code == "ErrorMessageSizeExceeded" {
        return ErrorClass::Permanent;
    }
    match status {
        429 => ErrorClass::Throttled,
        503 if has_retry_after => ErrorClass::Throttled,
        401 | 403 | 404 if upload_url => ErrorClass::SessionDead,
        // 416 on an upload URL: our offset disagrees with the server's; re-ask it.
        416 if upload_url => ErrorClass::SessionDead,
        401 => ErrorClass::SignIn,
        500..=599 => {
            if message
                .to_ascii_lowercase()
                .contains("maximum request length")
            {
                ErrorClass::Permanent
            } else {
                ErrorClass::Transient
            }
        }
        408 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

fn default_code(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        413 => "RequestEntityTooLarge",
        416 => "RequestedRangeNotSatisfiable",
        429 => "TooManyRequests",
        500..=599 => "ServerError",
        _ => "HttpError",
    }
}

fn status_text(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("unexpected status")
}

impl super::RequestError {
    /// The same error, known to answer a message's send ([`GraphError::of_send`]).
    pub fn of_send(self) -> Self {
        match self {
            super::RequestError::Graph(g) => super::RequestError::Graph(g.of_send()),
            other => other,
        }
    }

    /// The same error, known to answer a draft's creation ([`GraphError::of_draft`]).
    pub fn of_draft(self) -> Self {
        match self {
            super::RequestError::Graph(g) => super::RequestError::Graph(g.of_draft()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_graph_error_body() {
        let b = br#"{"error":{"code":"ErrorItemNotFound","message":"The specified object was not found in the store.","innerError":{"date":"x"}}}"#;
        let e = GraphError::from_response(404, b, None, None, false);
        assert_eq!(e.code, "ErrorItemNotFound");
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.to_string().contains("ErrorItemNotFound"));
        assert!(e.advice().is_some());
    }

    #[test]
    fn classes() {
        assert_eq!(
            GraphError::from_response(429, b"{}", Some(Duration::from_secs(1)), None, false).class,
            ErrorClass::Throttled
        );
        assert_eq!(
            GraphError::from_response(503, b"", None, None, false).class,
            ErrorClass::Transient
        );
        assert_eq!(
            GraphError::from_response(404, b"", None, None, true).class,
            ErrorClass::SessionDead
        );
        assert_eq!(
            GraphError::from_response(401, b"", None, None, false).class,
            ErrorClass::SignIn
        );
        assert_eq!(
            GraphError::from_response(403, b"", None, None, false).class,
            ErrorClass::Permanent
        );
        let too_big = GraphError::from_response(400, br#"{"error":{"code":"BadRequest","message":"The maximum request length supported is 4MB."}}"#, None, None, false);
        assert!(too_big.is_request_too_large());
        assert!(GraphError::from_response(413, b"", None, None, false).is_request_too_large());
        let mse = GraphError::from_response(400, br#"{"error":{"code":"ErrorMessageSizeExceeded","message":"The message exceeds the maximum supported size."}}"#, None, None, false);
        assert!(mse.is_message_size_exceeded() && mse.to_string().contains("35 MB"));
    }

    #[test]
    fn tolerant_of_garbage_and_casing() {
        assert_eq!(parse_error_body(b"not json"), None);
        assert_eq!(
            parse_error_body(br#"{"Error":{"Code":"X","Message":"m"}}"#),
            Some(("X".into(), "m".into()))
        );
        let e = GraphError::from_response(500, b"<html>oops</html>", None, None, false);
        assert_eq!(e.code, "ServerError");
    }

    #[test]
    fn messages_are_redacted() {
        let e = GraphError::new(
            ErrorClass::Transient,
            None,
            "X",
            "url https://h/x?authtoken=SECRET123&a=b",
        );
        assert!(!e.to_string().contains("SECRET123"));
    }

    #[test]
    fn a_refused_send_names_mail_send_and_the_draft_left() {
        let e = GraphError::new(
            ErrorClass::Permanent,
            Some(403),
            "ErrorAccessDenied",
            "Access is denied.",
        );
        let advice = e.clone().of_send().advice().map(str::to_owned);
        let advice = advice.unwrap_or_default();
        assert!(
            advice.contains("Mail.Send") && advice.contains("nothing was sent"),
            "{advice}"
        );
        assert!(!advice.contains("Mail.ReadWrite"), "{advice}");
        // Any other 403 keeps its advice; the sending limit is no permission problem.
        assert!(e.advice().is_some_and(|a| a.contains("Mail.ReadWrite")));
        let limit = GraphError::new(
            ErrorClass::Permanent,
            Some(403),
            "ErrorExceededMessageLimit",
            "m",
        )
        .of_send();
        let said = limit.advice().unwrap_or_default().to_owned();
        assert!(said.contains("sending limit"), "{said}");
        assert!(!said.contains("Mail."), "{said}");
        // A send's 404 is about the draft (sent or deleted), not a mapping's wrong item.
        let gone = GraphError::new(ErrorClass::Permanent, Some(404), "ErrorItemNotFound", "m");
        let said = gone
            .clone()
            .of_send()
            .advice()
            .unwrap_or_default()
            .to_owned();
        assert!(said.contains("Sent Items"), "{said}");
        assert!(!said.contains("outbox items"), "{said}");
        assert!(gone.advice().is_some_and(|a| a.contains("outbox items")));
        // A draft refused names the one permission a draft needs.
        let draft = e.of_draft().advice().unwrap_or_default().to_owned();
        assert!(draft.contains("Mail.ReadWrite"), "{draft}");
        assert!(!draft.contains("Calendars"), "{draft}");
    }
}
