//! Sign-in: where bearer tokens for Graph come from. Tokens are held in memory and handed to
//! the Graph client per request; they never reach logs, errors or the ledger.
//!
//! Methods: `device_code` (tokens cached by `outbox login`, refreshed silently: `delegated`,
//! `device_code`, `cache`; in the OS keyring with the `keyring` feature: `keyring_store`),
//! `client_credentials` (secret or certificate: `client_credentials`),
//! `token_env` (a variable read at each use) and `token_command` (a command whose output is a
//! bare token or JSON with `accessToken`/`expiresOn`; reused until near expiry). A fixed token
//! (`Credentials::fixed`) serves the demo and tests. HTTP to the identity platform: `oauth`.

pub mod cache;
pub mod client_credentials;
pub mod delegated;
pub mod device_code;
#[cfg(feature = "keyring")]
pub mod keyring_store;
pub mod oauth;

use crate::config::{AuthMethod, AuthSettings, Settings};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// Why no token could be had. Commands map this to exit 3; the agent waits and retries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// Nothing to sign in with: the user must act (set the variable, run `outbox login`).
    #[error("sign-in needed: {0}")]
    NotSignedIn(String),
    /// The identity platform or the token source refused.
    #[error("sign-in refused: {0}")]
    Refused(String),
    /// A token command failed to run or printed nothing usable.
    #[error("token command failed: {0}")]
    Command(String),
    /// The method is configured but not available in this build.
    #[error("{0}")]
    Unsupported(String),
    /// The identity platform could not be reached or answered nonsense (network, TLS, 5xx).
    #[error("sign-in unavailable: {0}")]
    Unavailable(String),
}

/// A bearer token and when it stops being usable.
#[derive(Clone)]
pub struct AccessToken {
    pub secret: String,
    pub expires_at: Option<SystemTime>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"REDACTED")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl AccessToken {
    pub(crate) fn fresh(&self, now: SystemTime) -> bool {
        match self.expires_at {
            Some(t) => t > now + REFRESH_MARGIN,
            None => true,
        }
    }
}

/// Refresh this long before a known expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(120);
/// A command token with no known expiry is reused this long.
const UNKNOWN_EXPIRY_REUSE: Duration = Duration::from_secs(300);

/// The source of tokens for one configuration.
#[derive(Clone)]
pub struct Credentials {
    source: Arc<Source>,
}

enum Source {
    Fixed(String),
    Env(String),
    Command {
        argv: Vec<String>,
        cached: Mutex<Option<AccessToken>>,
    },
    Delegated(Box<delegated::Delegated>),
    App(Box<client_credentials::App>),
}

impl Credentials {
    /// What to do when Graph refuses this source's token.
    pub fn refused_hint(&self) -> String {
        match &*self.source {
            Source::Fixed(_) => {
                "the fixed token was refused: give a valid Graph access token".into()
            }
            Source::Env(var) => format!(
                "the token in ${var} (auth.token_env) was refused (expired, or not for Microsoft \
                 Graph): put a fresh Graph access token in it (`outbox login` does not apply to \
                 auth.method = \"token_env\")"
            ),
            Source::Command { .. } => "the token printed by auth.command was refused (expired, or \
                 not for Microsoft Graph): run the command by hand and check what it prints \
                 (`outbox login` does not apply to auth.method = \"token_command\")"
                .into(),
            Source::Delegated(_) => {
                "the access token was refused: sign in again (`outbox login`)".into()
            }
            Source::App(_) => "the application token was refused: check the app registration's \
                 Graph application permissions and admin consent, and the tenant"
                .into(),
        }
    }

    /// Credentials for a configuration: the token cache lives in `agent.state_dir`, the
    /// identity platform is trusted like Graph (`graph.ca_file`), app scopes follow
    /// `graph.base_url`.
    pub fn from_settings_in(settings: &Settings) -> Credentials {
        Self::build(
            &settings.auth,
            &settings.agent.state_dir,
            &settings.graph.base_url,
            oauth::http_client(Some(settings)),
        )
    }

    fn build(
        auth: &AuthSettings,
        state_dir: &Path,
        graph_base: &url::Url,
        http: Result<reqwest::Client, String>,
    ) -> Credentials {
        let endpoints = oauth::Endpoints::new(&auth.authority, &auth.tenant);
        let client_id = auth.client_id.clone().unwrap_or_default();
        let source = match &auth.method {
            AuthMethod::TokenEnv { var } => Source::Env(var.clone()),
            AuthMethod::TokenCommand { command } => Source::Command {
                argv: command.clone(),
                cached: Mutex::new(None),
            },
            AuthMethod::DeviceCode => Source::Delegated(Box::new(delegated::Delegated::new(
                endpoints,
                client_id,
                cache::TokenCache::new(auth, state_dir),
                http,
            ))),
            AuthMethod::ClientCredentials { secret } => {
                Source::App(Box::new(client_credentials::App::new(
                    endpoints,
                    client_id,
                    client_credentials::app_scope(graph_base),
                    secret.clone(),
                    http,
                )))
            }
        };
        Credentials {
            source: Arc::new(source),
        }
    }

    /// Always this token (the sandbox's `--token`, tests).
    pub fn fixed(token: impl Into<String>) -> Credentials {
        Credentials {
            source: Arc::new(Source::Fixed(token.into())),
        }
    }

    /// A token usable now.
    pub async fn bearer(&self) -> Result<AccessToken, AuthError> {
        match &*self.source {
            Source::Fixed(t) => Ok(AccessToken { secret: t.clone(), expires_at: None }),
            Source::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => {
                    let secret = v.trim().to_string();
                    Ok(AccessToken { expires_at: jwt_expiry(&secret), secret })
                }
                _ => Err(AuthError::NotSignedIn(format!(
                    "the environment variable {var} (auth.token_env) holds no access token; set it to a Graph bearer token"
                ))),
            },
            Source::Command { argv, cached } => {
                let mut guard = cached.lock().await;
                let now = SystemTime::now();
                if let Some(t) = guard.as_ref().filter(|t| t.fresh(now)) {
                    return Ok(t.clone());
                }
                let t = run_token_command(argv).await?;
                *guard = Some(t.clone());
                Ok(t)
            }
            Source::Delegated(d) => d.bearer().await,
            Source::App(a) => a.bearer().await,
        }
    }

    /// Graph refused `rejected` (401): drop it so the next `bearer` fetches anew. Returns
    /// whether a different token may now be had (so one retry is worth it).
    pub async fn invalidate(&self, rejected: &AccessToken) -> bool {
        match &*self.source {
            Source::Command { cached, .. } => {
                let mut guard = cached.lock().await;
                if guard.as_ref().is_some_and(|t| t.secret == rejected.secret) {
                    *guard = None;
                }
                true
            }
            // The variable may have been updated since it was read.
            Source::Env(_) => false,
            Source::Fixed(_) => false,
            Source::Delegated(d) => d.invalidate(rejected).await,
            Source::App(a) => a.invalidate(rejected).await,
        }
    }
}

async fn run_token_command(argv: &[String]) -> Result<AccessToken, AuthError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| AuthError::Command("auth.command is empty".into()))?;
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| AuthError::Command(format!("`{program}` did not finish within 60 s")))?
    .map_err(|e| AuthError::Command(format!("cannot run `{program}` (auth.command): {e}")))?;
    if !out.status.success() {
        // stderr of a token tool may echo a token (even a bare JWT) or escape sequences;
        // redact and escape before showing it.
        let err = crate::outside::shown(String::from_utf8_lossy(&out.stderr).trim());
        return Err(AuthError::Command(format!(
            "`{program}` exited with {}: {}",
            out.status,
            truncate(&err, 300)
        )));
    }
    parse_token_output(&String::from_utf8_lossy(&out.stdout), SystemTime::now()).ok_or_else(|| {
        AuthError::Command(format!(
            "`{program}` printed no token (expected a bare token or JSON with accessToken)"
        ))
    })
}

/// A bare token, or JSON with `accessToken` (or `access_token`) and optionally `expiresOn`
/// (RFC 3339, `YYYY-MM-DD HH:MM:SS[.ffffff]` local time as `az` prints it), `expires_on` (epoch
/// seconds) or `expires_in` (seconds from now).
pub fn parse_token_output(stdout: &str, now: SystemTime) -> Option<AccessToken> {
    let text = stdout.trim();
    if text.is_empty() {
        return None;
    }
    if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let get = |k: &str| {
            v.as_object()?
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let secret = get("accessToken")
            .or_else(|| get("access_token"))?
            .as_str()?
            .to_string();
        let expires_at = get("expires_on")
            .and_then(|x| {
                x.as_u64()
                    .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
            })
            .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
            .or_else(|| get("expiresOn").and_then(|x| x.as_str().and_then(parse_expires_on)))
            .or_else(|| {
                get("expires_in")
                    .and_then(|x| x.as_u64())
                    .and_then(|s| now.checked_add(Duration::from_secs(s)))
            })
            .or_else(|| jwt_expiry(&secret));
        return Some(AccessToken {
            secret,
            expires_at: expires_at.or(Some(now + UNKNOWN_EXPIRY_REUSE)),
        });
    }
    let secret = text.lines().next()?.trim().to_string();
    if secret.is_empty() || secret.contains(char::is_whitespace) {
        return None;
    }
    let expires_at = jwt_expiry(&secret).or(Some(now + UNKNOWN_EXPIRY_REUSE));
    Some(AccessToken { secret, expires_at })
}

fn parse_expires_on(s: &str) -> Option<SystemTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(UNIX_EPOCH + Duration::from_secs(t.unix_timestamp().max(0) as u64));
    }
    // `az` prints local time without an offset; reading it as UTC errs early on one side, so
    // take it as the earlier of the two readings within a day: refresh a little early at worst.
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let head = s.split('.').next()?;
    let t = time::PrimitiveDateTime::parse(head, &fmt)
        .ok()?
        .assume_utc();
    let secs = (t.unix_timestamp() - 14 * 3600).max(0) as u64;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// `exp` of a JWT access token, when the token is one (Graph tokens for work accounts are).
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = v.get("exp")?.as_u64()?;
    // A far-future `exp` (hostile or broken) must not overflow `SystemTime`.
    UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// The permissions a JWT access token carries: its delegated `scp` (space-separated) and its
/// application `roles`, as short names (`Mail.Send`, a national cloud's
/// `https://graph.microsoft.us/Mail.Send` too). `None` when that cannot be known: an opaque token
/// (personal accounts, a fixed test token) or one carrying neither claim.
pub fn jwt_permissions(token: &str) -> Option<Vec<String>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let scp = v.get("scp").and_then(|s| s.as_str());
    let roles = v.get("roles").and_then(|r| r.as_array());
    if scp.is_none() && roles.is_none() {
        return None;
    }
    let short = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    Some(
        scp.into_iter()
            .flat_map(str::split_whitespace)
            .chain(roles.into_iter().flatten().filter_map(|r| r.as_str()))
            .map(short)
            .collect(),
    )
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_output_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t = parse_token_output("abc.def\n", now).unwrap_or_else(|| panic!("bare"));
        assert_eq!(t.secret, "abc.def");
        let t = parse_token_output(
            r#"{"accessToken":"tok","expiresOn":"2030-01-01T00:00:00Z"}"#,
            now,
        )
        .unwrap_or_else(|| panic!("json"));
        assert_eq!(t.secret, "tok");
        assert!(t.expires_at.is_some_and(|e| e > now));
        let t = parse_token_output(r#"{"accessToken":"tok","expires_on":1000100}"#, now)
            .unwrap_or_else(|| panic!("epoch"));
        assert_eq!(
            t.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_000_100))
        );
        let t = parse_token_output(
            r#"{"accessToken":"tok","expiresOn":"2030-01-01 10:00:00.000000"}"#,
            now,
        )
        .unwrap_or_else(|| panic!("az"));
        assert!(t.expires_at.is_some());
        assert!(parse_token_output("", now).is_none());
        assert!(parse_token_output("{\"nope\":1}", now).is_none());
        assert!(parse_token_output("two words", now).is_none());
    }

    #[test]
    fn jwt_exp_is_read() {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"exp":2000000000,"aud":"x"}"#);
        let tok = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        assert_eq!(
            jwt_expiry(&tok),
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        assert_eq!(jwt_expiry("opaque"), None);
    }

    #[test]
    fn jwt_permissions_are_read_from_scp_and_roles() {
        use base64::Engine;
        let tok = |claims: &str| {
            let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
            format!("eyJhbGciOiJub25lIn0.{p}.sig")
        };
        assert_eq!(
            jwt_permissions(&tok(
                r#"{"scp":"Mail.ReadWrite https://graph.microsoft.us/Mail.Send"}"#
            )),
            Some(vec!["Mail.ReadWrite".to_string(), "Mail.Send".to_string()])
        );
        assert_eq!(
            jwt_permissions(&tok(r#"{"roles":["Mail.ReadWrite"],"scp":null}"#)),
            Some(vec!["Mail.ReadWrite".to_string()])
        );
        assert_eq!(jwt_permissions(&tok(r#"{"exp":1}"#)), None);
        assert_eq!(jwt_permissions("opaque"), None);
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = AccessToken {
            secret: "s3cr3t".into(),
            expires_at: None,
        };
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn command_token_is_cached_until_invalidated() {
        // A command whose answer changes each time it runs: the token is the count of runs.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let counter = dir.path().join("n");
        #[cfg(unix)]
        let argv = vec![
            "sh".into(),
            "-c".into(),
            format!("echo x >> {0}; echo tok$(wc -l < {0})", counter.display()),
        ];
        // cmd's twin: one more `x` on one line a run (`set /p` writes no newline), and the token
        // is that line. One argument a word: an argument with a space would be quoted as cmd
        // does not read it (the temp dir has none here).
        #[cfg(windows)]
        let argv = vec![
            "cmd".into(),
            "/C".into(),
            "<nul".into(),
            "set".into(),
            "/p".into(),
            format!("=x>>{}&", counter.display()),
            "type".into(),
            counter.display().to_string(),
        ];
        let creds = Credentials {
            source: Arc::new(Source::Command {
                argv,
                cached: Mutex::new(None),
            }),
        };
        let a = creds.bearer().await.unwrap_or_else(|e| panic!("{e}"));
        let b = creds.bearer().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.secret, b.secret);
        assert!(creds.invalidate(&a).await);
        let c = creds.bearer().await.unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.secret, c.secret);
    }
}
