//! App-only tokens (`auth.method = "client_credentials"`, GRAPH.md §9): a client secret read
//! from the named environment variable at each token request, or a certificate whose key signs a
//! JWT client assertion (PS256, `x5t#S256` = base64url SHA-256 of the certificate DER, `aud` =
//! the token URL, `iss` = `sub` = client id, unique `jti`, `nbf`/`iat`/`exp` over 10 minutes).
//! No refresh token exists: a new token is requested when the one in memory nears expiry or
//! Graph refuses it. Scope: `{graph origin}/.default`.

use super::oauth::{self, Endpoints, Failure};
use super::{AccessToken, AuthError};
use crate::config::ClientCredential;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// Lifetime of a client assertion (Entra accepts at most 10 minutes).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// `{graph origin}/.default`, e.g. `https://graph.microsoft.us/.default`.
pub fn app_scope(graph_base: &url::Url) -> String {
    format!("{}/.default", graph_base.origin().ascii_serialization())
}

/// The token source of `auth.method = "client_credentials"`.
pub struct App {
    pub endpoints: Endpoints,
    pub client_id: String,
    scope: String,
    credential: ClientCredential,
    http: Result<reqwest::Client, String>,
    cached: Mutex<Option<AccessToken>>,
}

impl App {
    pub fn new(
        endpoints: Endpoints,
        client_id: String,
        scope: String,
        credential: ClientCredential,
        http: Result<reqwest::Client, String>,
    ) -> App {
        App {
            endpoints,
            client_id,
            scope,
            credential,
            http,
            cached: Mutex::new(None),
        }
    }

    pub async fn bearer(&self) -> Result<AccessToken, AuthError> {
        let mut guard = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some(t) = guard.as_ref().filter(|t| t.fresh(now)) {
            return Ok(t.clone());
        }
        let t = self.request().await?;
        *guard = Some(t.clone());
        Ok(t)
    }

    pub async fn invalidate(&self, rejected: &AccessToken) -> bool {
        let mut guard = self.cached.lock().await;
        if guard.as_ref().is_some_and(|t| t.secret == rejected.secret) {
            *guard = None;
        }
        true
    }

    async fn request(&self) -> Result<AccessToken, AuthError> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| AuthError::NotSignedIn(e.clone()))?;
        let token_url = self.endpoints.token_url();
        let secret;
        let assertion;
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("scope", self.scope.as_str()),
        ];
        match &self.credential {
            ClientCredential::SecretEnv(var) => {
                secret = std::env::var(var)
                    .ok()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| {
                        AuthError::NotSignedIn(format!(
                            "the environment variable {var} (auth.client_secret_env) holds no client secret; set it to the app registration's secret"
                        ))
                    })?;
                form.push(("client_secret", secret.as_str()));
            }
            ClientCredential::Certificate(path) => {
                let signer = Signer::from_pem_file(path)?;
                assertion = signer.assertion(&self.client_id, &token_url, SystemTime::now())?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
                form.push(("client_assertion", assertion.as_str()));
            }
        }
        let t = oauth::post_form(http, &token_url, &form)
            .await
            .and_then(oauth::token_response)
            .map_err(|f| match f {
                Failure::Transport(m) => AuthError::Unavailable(m),
                other => AuthError::Refused(format!(
                    "the identity platform refused the app's credentials ({other}); check auth.client_id, auth.tenant and the secret or certificate registered for the app"
                )),
            })?;
        let now = SystemTime::now();
        Ok(AccessToken {
            secret: t.access_token,
            expires_at: now.checked_add(Duration::from_secs(t.expires_in.unwrap_or(3600))),
        })
    }
}

/// A private key and its certificate's thumbprint, read from one PEM file.
pub struct Signer {
    key: jsonwebtoken::EncodingKey,
    /// base64url(SHA-256(certificate DER)), no padding.
    x5t_s256: String,
}

impl Signer {
    /// Read a PEM file holding the certificate (first `CERTIFICATE` block) and an RSA private
    /// key (`PRIVATE KEY` PKCS#8 or `RSA PRIVATE KEY` PKCS#1). Errors never include the key.
    pub fn from_pem_file(path: &Path) -> Result<Signer, AuthError> {
        let bad = |why: String| {
            AuthError::NotSignedIn(format!("auth.certificate_path {}: {why}", path.display()))
        };
        let text = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        Self::from_pem(&text).map_err(bad)
    }

    pub fn from_pem(text: &[u8]) -> Result<Signer, String> {
        let blocks = pem::parse_many(text).map_err(|_| "not a PEM file".to_string())?;
        let cert = blocks.iter().find(|b| b.tag() == "CERTIFICATE").ok_or(
            "no CERTIFICATE block (put the certificate and its private key in one PEM file)",
        )?;
        let key = blocks
            .iter()
            .find(|b| b.tag() == "PRIVATE KEY" || b.tag() == "RSA PRIVATE KEY")
            .ok_or("no PRIVATE KEY block (an unencrypted RSA key, PKCS#8 or PKCS#1, is needed)")?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem::encode(key).as_bytes())
            .map_err(|_| "the private key is not a usable RSA key".to_string())?;
        let x5t_s256 = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(cert.contents()));
        Ok(Signer { key, x5t_s256 })
    }

    /// A signed client assertion for `client_id` at `token_url`.
    pub fn assertion(
        &self,
        client_id: &str,
        token_url: &str,
        now: SystemTime,
    ) -> Result<String, AuthError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
        header.typ = Some("JWT".into());
        header.x5t_s256 = Some(self.x5t_s256.clone());
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = serde_json::json!({
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": iat,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME.as_secs(),
        });
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| AuthError::NotSignedIn(format!("cannot sign the client assertion: {e}")))
    }
}

/// Where the certificate of a configuration is, for messages.
pub fn describe(credential: &ClientCredential) -> String {
    match credential {
        ClientCredential::SecretEnv(var) => format!("a client secret from ${var}"),
        ClientCredential::Certificate(p) => {
            format!("the certificate {}", PathBuf::from(p).display())
        }
    }
}
