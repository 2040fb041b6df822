//! The device-code flow behind `outbox login` (RFC 8628 as the Microsoft identity platform
//! speaks it, GRAPH.md §9): ask for a code, show the user where to enter it, poll `/token` at the
//! given `interval` (plus 5 s after each `slow_down`), stop on `authorization_declined`,
//! `expired_token`, `bad_verification_code` or any other error, and save the tokens in the cache.

use super::cache::{CachedTokens, TokenCache};
use super::oauth::{self, Endpoints, Failure};
use super::AuthError;
use std::time::{Duration, Instant, SystemTime};

/// What the user must do, from the `devicecode` answer.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub verification_uri: String,
    pub user_code: String,
    /// The platform's own sentence (localised by it).
    pub message: Option<String>,
    pub expires_in: Duration,
}

/// Transport failures in a row tolerated while polling (a flaky network should not abort a
/// sign-in the user is completing in the browser).
const MAX_TRANSPORT_FAILURES: u32 = 5;

/// Run the whole flow; `show` is called once with the prompt. Returns the cached tokens.
pub async fn login(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    client_id: &str,
    scope: &str,
    cache: &TokenCache,
    show: impl FnOnce(&Prompt),
) -> Result<CachedTokens, AuthError> {
    // A keyring that cannot be used must be said before the user signs in in the browser.
    {
        let lock = cache.lock().await.map_err(AuthError::NotSignedIn)?;
        cache
            .probe(&lock)
            .map_err(|e| AuthError::NotSignedIn(e.to_string()))?;
    }
    let v = oauth::post_form(
        http,
        &endpoints.devicecode_url(),
        &[("client_id", client_id), ("scope", scope)],
    )
    .await
    .map_err(|f| match f {
        Failure::Transport(m) => AuthError::Unavailable(m),
        other => AuthError::Refused(format!(
            "the identity platform refused to start a sign-in ({other})"
        )),
    })?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let num = |k: &str| {
        v.get(k).and_then(|x| {
            x.as_u64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
        })
    };
    let (Some(device_code), Some(user_code)) = (field("device_code"), field("user_code")) else {
        return Err(AuthError::Refused(
            "the identity platform's devicecode answer lacks device_code or user_code".into(),
        ));
    };
    let verification_uri = field("verification_uri")
        .or_else(|| field("verification_url"))
        .unwrap_or_else(|| "https://microsoft.com/devicelogin".into());
    // Bounded: a huge value from a broken server must not overflow `Instant` (a panic).
    let expires_in = Duration::from_secs(num("expires_in").unwrap_or(900).min(86_400));
    let mut interval = Duration::from_secs(num("interval").unwrap_or(5).clamp(1, 3600));
    show(&Prompt {
        verification_uri,
        user_code,
        message: field("message"),
        expires_in,
    });
    let deadline = Instant::now() + expires_in;
    let mut transport_failures = 0;
    loop {
        tokio::time::sleep(interval).await;
        if Instant::now() >= deadline + Duration::from_secs(5) {
            return Err(AuthError::Refused(
                "the code expired before the sign-in was completed; run `outbox login` again"
                    .into(),
            ));
        }
        let answer = oauth::post_form(
            http,
            &endpoints.token_url(),
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", client_id),
                ("device_code", device_code.as_str()),
            ],
        )
        .await;
        let failure = match answer.and_then(oauth::token_response) {
            Ok(t) => {
                if t.refresh_token.is_none() {
                    tracing::warn!("the identity platform issued no refresh token (offline_access not granted): you will need `outbox login` again in about an hour");
                }
                let tokens = CachedTokens::new(
                    &endpoints.authority,
                    &endpoints.tenant,
                    client_id,
                    scope,
                    t,
                    SystemTime::now(),
                );
                let lock = cache.lock().await.map_err(AuthError::NotSignedIn)?;
                cache.write(&lock, &tokens).map_err(|e| {
                    AuthError::NotSignedIn(format!("signed in, but cannot save the tokens: {e}"))
                })?;
                return Ok(tokens);
            }
            Err(f) => f,
        };
        match failure.code() {
            Some("authorization_pending") => transport_failures = 0,
            Some("slow_down") => {
                transport_failures = 0;
                interval += Duration::from_secs(5);
                tracing::info!(
                    interval_s = interval.as_secs(),
                    "the identity platform asked to poll more slowly; polling every {} s now",
                    interval.as_secs()
                );
            }
            Some("authorization_declined") => {
                return Err(AuthError::Refused(
                    "the sign-in was declined in the browser; run `outbox login` to try again"
                        .into(),
                ))
            }
            Some("expired_token") => {
                return Err(AuthError::Refused(
                    "the code expired before the sign-in was completed; run `outbox login` again"
                        .into(),
                ))
            }
            Some("bad_verification_code") => {
                return Err(AuthError::Refused(
                    "the identity platform did not recognise the device code (bad_verification_code); run `outbox login` again".into(),
                ))
            }
            Some(_) => {
                return Err(AuthError::Refused(format!(
                    "the identity platform refused the sign-in ({failure})"
                )))
            }
            None => {
                transport_failures += 1;
                if transport_failures >= MAX_TRANSPORT_FAILURES {
                    return Err(AuthError::Unavailable(failure.to_string()));
                }
                tracing::warn!("polling for the sign-in failed ({failure}); trying again");
            }
        }
    }
}
