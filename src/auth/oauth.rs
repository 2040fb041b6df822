//! The identity platform's HTTP side: endpoint URLs (`{authority}/{tenant}/oauth2/v2.0/...`),
//! the HTTP client (with `graph.ca_file`, so the sandbox's `--tls` works), form POSTs and the
//! shape of token answers and errors. Nothing here logs a request or answer body: both carry
//! secrets. Error text from the platform is passed through `crate::secret::redact`.

use crate::config::Settings;
use std::time::Duration;

/// Where the identity platform lives for one configuration.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// e.g. `https://login.microsoftonline.com`, without a trailing slash.
    pub authority: String,
    pub tenant: String,
}

impl Endpoints {
    pub fn new(authority: &url::Url, tenant: &str) -> Endpoints {
        Endpoints {
            authority: authority.as_str().trim_end_matches('/').to_string(),
            tenant: tenant.to_string(),
        }
    }

    /// `{authority}/{tenant}/oauth2/v2.0/token`
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant)
    }

    /// `{authority}/{tenant}/oauth2/v2.0/devicecode`
    pub fn devicecode_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/devicecode", self.authority, self.tenant)
    }
}

/// The HTTP client for the identity platform: same trust roots as the Graph client (an extra
/// `graph.ca_file` for TLS-inspecting proxies and the sandbox), no redirects (a redirect of a
/// form carrying a secret is never followed), bounded timeouts.
pub fn http_client(settings: Option<&Settings>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("outbox/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = settings.and_then(|s| s.graph.ca_file.as_ref()) {
        let certs = crate::ca::load_bundle(ca)?;
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// A successful token answer. Debug hides the tokens.
#[derive(Clone, serde::Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default, deserialize_with = "number_or_string")]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"REDACTED")
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "REDACTED"),
            )
            .field("scope", &self.scope)
            .finish()
    }
}

/// Some older endpoints send `expires_in` as a string.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Why a token request did not give a token.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The platform answered with an OAuth error (`error`, redacted `error_description`).
    OAuth {
        status: u16,
        error: String,
        description: String,
    },
    /// No usable answer: network, TLS, timeout, or a body that is not a token answer.
    Transport(String),
}

impl Failure {
    /// The OAuth `error` code, if the platform sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Failure::OAuth { error, .. } => Some(error),
            Failure::Transport(_) => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::OAuth {
                status,
                error,
                description,
            } => {
                if description.is_empty() {
                    write!(f, "{error} (HTTP {status})")
                } else {
                    write!(f, "{error}: {description}")
                }
            }
            Failure::Transport(m) => f.write_str(m),
        }
    }
}

/// POST a form to `url` and return the JSON answer of a 2xx, or the failure.
pub async fn post_form(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<serde_json::Value, Failure> {
    let resp = http
        .post(url)
        .header("Accept", "application/json")
        .form(form)
        .send()
        .await
        // reqwest's error names the URL, which carries no secret (the secrets are in the body),
        // but redact anyway: the authority comes from config.
        .map_err(|e| {
            Failure::Transport(crate::secret::redact(&format!(
                "cannot reach the identity platform: {e}"
            )))
        })?;
    let status = resp.status();
    // Bounded: a token answer is a few KiB; a hostile or broken endpoint cannot fill memory.
    let body = crate::bounded::read_body(resp, crate::bounded::SMALL_ANSWER)
        .await
        .map_err(|e| {
            let why = match e {
                crate::bounded::BodyError::TooLarge(n) => {
                    format!("it is larger than {} MiB", n / (1024 * 1024))
                }
                crate::bounded::BodyError::Transport(e) => e.to_string(),
            };
            Failure::Transport(crate::secret::redact(&format!(
                "the identity platform's answer could not be read: {why}"
            )))
        })?;
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    if status.is_success() {
        return json.ok_or_else(|| {
            Failure::Transport(format!(
                "the identity platform answered {status} with something that is not JSON"
            ))
        });
    }
    let error = json
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| e.as_str())
        .map(str::to_string);
    match error {
        Some(error) => {
            let description = json
                .as_ref()
                .and_then(|v| v.get("error_description"))
                .and_then(|e| e.as_str())
                .map(first_sentence)
                .unwrap_or_default();
            Err(Failure::OAuth {
                status: status.as_u16(),
                error: crate::secret::redact(&error),
                description: crate::secret::redact(&description),
            })
        }
        None => Err(Failure::Transport(format!(
            "the identity platform answered {status} without an OAuth error"
        ))),
    }
}

/// `AADSTS70000: The provided grant ... Trace ID: ... Correlation ID: ...`: keep the code and
/// the first sentence; the ids are noise for the user (they stay in `trace_id` for support).
fn first_sentence(desc: &str) -> String {
    let line = desc.lines().next().unwrap_or_default();
    let cut = line.find(" Trace ID:").unwrap_or(line.len());
    let s = line[..cut].trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Parse a token answer.
pub fn token_response(v: serde_json::Value) -> Result<TokenResponse, Failure> {
    serde_json::from_value(v).map_err(|_| {
        Failure::Transport("the identity platform's answer has no access_token".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        let a =
            url::Url::parse("https://login.microsoftonline.us/").unwrap_or_else(|e| panic!("{e}"));
        let e = Endpoints::new(&a, "contoso.onmicrosoft.com");
        assert_eq!(
            e.token_url(),
            "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert!(e.devicecode_url().ends_with("/oauth2/v2.0/devicecode"));
    }

    #[test]
    fn description_is_shortened() {
        assert_eq!(
            first_sentence("AADSTS50173: The grant was revoked. Trace ID: abc Correlation ID: d"),
            "AADSTS50173: The grant was revoked."
        );
    }

    #[test]
    fn token_debug_hides_tokens() {
        let t = token_response(serde_json::json!({"access_token":"AT-SECRET","refresh_token":"RT-SECRET","expires_in":"3599"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.expires_in, Some(3599));
        let d = format!("{t:?}");
        assert!(!d.contains("AT-SECRET") && !d.contains("RT-SECRET"), "{d}");
    }
}
