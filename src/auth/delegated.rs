//! Delegated tokens from the cache that `outbox login` wrote: handed out while fresh, refreshed
//! silently before expiry or after Graph refused one (401), with the rotated refresh token saved
//! under the cache lock. Before refreshing, the cache is re-read under the lock: another process
//! (`send`, the agent, a new `outbox login`) may already have replaced the tokens, and with
//! rotating refresh tokens a second refresh with the old one would be refused.

use super::cache::{CachedTokens, Stamp, TokenCache};
use super::oauth::{self, Endpoints};
use super::{AccessToken, AuthError};
use std::time::SystemTime;
use tokio::sync::Mutex;

/// The delegated scopes `outbox login` asks for.
pub const DELEGATED_SCOPES: &[&str] = &[
    "Mail.ReadWrite",
    "Calendars.ReadWrite",
    "User.Read",
    "offline_access",
];

/// Graph roots of the national clouds (GRAPH.md §10): their scopes are spelled in full, since a
/// short scope name resolves to the global Graph.
const NATIONAL_GRAPH_HOSTS: &[&str] = &[
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];

/// Asked for besides [`DELEGATED_SCOPES`] by `outbox login`: `outbox mail` and `new_message`
/// mappings send as the user.
pub const SEND_SCOPE: &str = "Mail.Send";

/// The scope string for `outbox login` against this Graph root; `send`: `Mail.Send` too.
pub fn delegated_scope(graph_base: &url::Url, send: bool) -> String {
    let host = graph_base.host_str().unwrap_or_default();
    let national = NATIONAL_GRAPH_HOSTS
        .iter()
        .any(|h| host.eq_ignore_ascii_case(h));
    let send = send.then_some(SEND_SCOPE);
    DELEGATED_SCOPES
        .iter()
        .take(1)
        .chain(send.iter())
        .chain(DELEGATED_SCOPES.iter().skip(1))
        .map(|s| {
            if national && *s != "offline_access" {
                format!("{}/{s}", graph_base.origin().ascii_serialization())
            } else {
                (*s).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub const LOGIN_HINT: &str = "run `outbox login`";

/// The token source of `auth.method = "device_code"`.
pub struct Delegated {
    pub endpoints: Endpoints,
    pub client_id: String,
    pub cache: TokenCache,
    http: Result<reqwest::Client, String>,
    mem: Mutex<Mem>,
}

#[derive(Default)]
struct Mem {
    tokens: Option<CachedTokens>,
    /// The cache file version `tokens` came from.
    stamp: Option<Stamp>,
    /// An access token Graph refused (401): never hand it out again.
    rejected: Option<String>,
    /// A refresh token the platform refused (`invalid_grant`): do not try it again; wait for a
    /// new cache from `outbox login`.
    dead_refresh: Option<String>,
}

impl Delegated {
    pub fn new(
        endpoints: Endpoints,
        client_id: String,
        cache: TokenCache,
        http: Result<reqwest::Client, String>,
    ) -> Delegated {
        Delegated {
            endpoints,
            client_id,
            cache,
            http,
            mem: Mutex::new(Mem::default()),
        }
    }

    /// A token usable now: the one in memory while fresh and the cache file unchanged; else
    /// the cache re-read under its lock, refreshed if needed.
    pub async fn bearer(&self) -> Result<AccessToken, AuthError> {
        let mut mem = self.mem.lock().await;
        let now = SystemTime::now();
        if let Some(t) = &mem.tokens {
            if t.fresh(now)
                && mem.rejected.as_deref() != Some(t.access_token.as_str())
                && self.cache.stamp() == mem.stamp
            {
                return Ok(t.access());
            }
        }
        let lock = self.cache.lock().await.map_err(AuthError::NotSignedIn)?;
        let cached = self
            .cache
            .read(&lock)
            .map_err(|e| AuthError::NotSignedIn(e.to_string()))?;
        mem.stamp = self.cache.stamp();
        let Some(cached) = cached else {
            mem.tokens = None;
            return Err(AuthError::NotSignedIn(format!(
                "not signed in (no token cache at {}): {LOGIN_HINT}",
                self.cache.describe()
            )));
        };
        if !cached.matches(
            &self.endpoints.authority,
            &self.endpoints.tenant,
            &self.client_id,
        ) {
            mem.tokens = None;
            return Err(AuthError::NotSignedIn(format!(
                "the cached sign-in is for another app, authority or tenant than auth in the config: {LOGIN_HINT}"
            )));
        }
        if cached.fresh(now) && mem.rejected.as_deref() != Some(cached.access_token.as_str()) {
            let t = cached.access();
            mem.tokens = Some(cached);
            return Ok(t);
        }
        let Some(refresh) = cached.refresh_token.clone() else {
            mem.tokens = Some(cached);
            return Err(AuthError::NotSignedIn(format!(
                "the cached sign-in has expired and holds no refresh token: {LOGIN_HINT}"
            )));
        };
        if mem.dead_refresh.as_deref() == Some(refresh.as_str()) {
            mem.tokens = Some(cached);
            return Err(AuthError::Refused(format!(
                "the sign-in has expired or was revoked: {LOGIN_HINT}"
            )));
        }
        let http = self
            .http
            .as_ref()
            .map_err(|e| AuthError::NotSignedIn(e.clone()))?;
        tracing::debug!("refreshing the access token");
        let answer = oauth::post_form(
            http,
            &self.endpoints.token_url(),
            &[
                ("client_id", self.client_id.as_str()),
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("scope", cached.scope.as_str()),
            ],
        )
        .await
        .and_then(oauth::token_response);
        match answer {
            Ok(mut t) => {
                // Rotation: keep the old refresh token only if no new one came.
                if t.refresh_token.is_none() {
                    t.refresh_token = Some(refresh);
                }
                let fresh = CachedTokens::new(
                    &cached.authority,
                    &cached.tenant,
                    &cached.client_id,
                    &cached.scope,
                    t,
                    SystemTime::now(),
                );
                if let Err(e) = self.cache.write(&lock, &fresh) {
                    // The new tokens still work in this process; the old refresh token may be
                    // spent, so say so (a later run may need `outbox login`).
                    tracing::warn!("cannot save the refreshed tokens: {e}");
                }
                mem.stamp = self.cache.stamp();
                mem.rejected = None;
                tracing::info!("access token refreshed");
                let access = fresh.access();
                mem.tokens = Some(fresh);
                Ok(access)
            }
            Err(f) => {
                mem.tokens = Some(cached);
                match f.code() {
                    Some("invalid_grant")
                    | Some("interaction_required")
                    | Some("consent_required") => {
                        mem.dead_refresh = Some(refresh);
                        Err(AuthError::Refused(format!(
                            "the sign-in has expired or was revoked ({f}): {LOGIN_HINT}"
                        )))
                    }
                    Some(_) => Err(AuthError::Refused(format!(
                        "the identity platform refused to refresh the token ({f}): {LOGIN_HINT}"
                    ))),
                    None => Err(AuthError::Unavailable(format!(
                        "cannot refresh the access token: {f}"
                    ))),
                }
            }
        }
    }

    /// Graph refused `rejected` (401): never use it again. A retry is worth it when a refresh
    /// token may give a new one, or another process has written a new cache.
    pub async fn invalidate(&self, rejected: &AccessToken) -> bool {
        let mut mem = self.mem.lock().await;
        mem.rejected = Some(rejected.secret.clone());
        let changed = self.cache.stamp() != mem.stamp;
        let refreshable = mem.tokens.as_ref().is_some_and(|t| {
            t.refresh_token
                .as_ref()
                .is_some_and(|r| mem.dead_refresh.as_ref() != Some(r))
        });
        changed || refreshable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_for_clouds() {
        let g =
            url::Url::parse("https://graph.microsoft.com/v1.0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            delegated_scope(&g, false),
            "Mail.ReadWrite Calendars.ReadWrite User.Read offline_access"
        );
        assert_eq!(
            delegated_scope(&g, true),
            "Mail.ReadWrite Mail.Send Calendars.ReadWrite User.Read offline_access"
        );
        let us =
            url::Url::parse("https://graph.microsoft.us/v1.0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            delegated_scope(&us, false),
            "https://graph.microsoft.us/Mail.ReadWrite https://graph.microsoft.us/Calendars.ReadWrite https://graph.microsoft.us/User.Read offline_access"
        );
    }
}
