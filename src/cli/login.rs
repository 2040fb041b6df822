//! `outbox login` (device code; for client credentials: a check that the app can get a token),
//! `outbox logout` (remove the token cache) and `outbox whoami` (the signed-in account from
//! `GET /me`, or which app and tenant client credentials act as). Every sign-in failure exits 3
//! with a sentence saying what to do; no token ever reaches the terminal.

use crate::auth::cache::{StoreErrorKind, TokenCache};
use crate::auth::{client_credentials, delegated, device_code, oauth, AuthError, Credentials};
use crate::cli::exit::{CommandError, ExitCode};
use crate::config::{AuthMethod, Settings};
use crate::graph::{ErrorClass, GraphClient, RequestError};

fn auth_err(e: AuthError) -> CommandError {
    CommandError::new(ExitCode::SignIn, crate::secret::redact(&e.to_string()))
}

fn method_name(m: &AuthMethod) -> &'static str {
    match m {
        AuthMethod::DeviceCode => "device_code",
        AuthMethod::ClientCredentials { .. } => "client_credentials",
        AuthMethod::TokenEnv { .. } => "token_env",
        AuthMethod::TokenCommand { .. } => "token_command",
    }
}

/// The client id `outbox init` writes (config.example.toml): a placeholder, no app's id.
pub const PLACEHOLDER_CLIENT_ID: &str = "00000000-0000-0000-0000-000000000000";

/// When the config still has the placeholder client id and its auth method needs a real one:
/// what to do about it.
pub fn placeholder_client_id(settings: &Settings) -> Option<String> {
    let needs = matches!(
        settings.auth.method,
        AuthMethod::DeviceCode | AuthMethod::ClientCredentials { .. }
    );
    let id = settings.auth.client_id.as_deref()?.trim();
    (needs && (id == PLACEHOLDER_CLIENT_ID || (!id.is_empty() && id.chars().all(|c| c == '0' || c == '-')))).then(|| {
        format!(
            "auth.client_id in {} is still the placeholder {PLACEHOLDER_CLIENT_ID} that `outbox init` wrote: set it to the Application (client) ID of your app registration (docs/signin.md says how to register one)",
            settings.source.display()
        )
    })
}

pub async fn login(settings: Settings) -> Result<ExitCode, CommandError> {
    if let Some(why) = placeholder_client_id(&settings) {
        return Err(CommandError::new(ExitCode::Config, why));
    }
    let auth = &settings.auth;
    match &auth.method {
        AuthMethod::DeviceCode => {}
        AuthMethod::ClientCredentials { secret } => {
            // Nothing to cache: check the credentials work, which is what the user wants to know.
            Credentials::from_settings_in(&settings)
                .bearer()
                .await
                .map_err(auth_err)?;
            outln!(
                "client credentials work: app {} in tenant {} ({}); tokens are requested as needed, nothing is cached",
                auth.client_id.as_deref().unwrap_or_default(),
                auth.tenant,
                client_credentials::describe(secret)
            );
            return Ok(ExitCode::Ok);
        }
        other => {
            return Err(CommandError::new(
                ExitCode::Usage,
                format!(
                    "`outbox login` signs in with auth.method = \"device_code\"; {} uses auth.method = \"{}\", which needs no login",
                    settings.source.display(),
                    method_name(other)
                ),
            ))
        }
    }
    let http =
        oauth::http_client(Some(&settings)).map_err(|e| CommandError::new(ExitCode::Config, e))?;
    let endpoints = oauth::Endpoints::new(&auth.authority, &auth.tenant);
    let client_id = auth.client_id.clone().unwrap_or_default();
    // `Mail.Send` always (SPEC: Sign-in): `outbox mail` sends with no mapping at all, and a
    // mailing mapping added later must not find a token that cannot send.
    let scope = delegated::delegated_scope(&settings.graph.base_url, true);
    let cache = TokenCache::for_settings(&settings);
    device_code::login(&http, &endpoints, &client_id, &scope, &cache, |p| {
        // stderr: stdout stays for the result, and the prompt must show even when stdout is piped.
        errln!(
            "To sign in, open {} in a browser and enter the code {}",
            p.verification_uri,
            p.user_code
        );
        errln!(
            "(the code is valid for {} minutes; waiting for you to finish…)",
            p.expires_in.as_secs().div_ceil(60)
        );
    })
    .await
    .map_err(auth_err)?;
    // Say who signed in; the tokens are saved whether or not this works.
    match me(&settings).await {
        Ok((name, upn)) => outln!("signed in as {name} <{upn}>"),
        Err(_) => outln!("signed in; tokens saved in {}", cache.describe()),
    }
    Ok(ExitCode::Ok)
}

pub async fn logout(settings: Settings) -> Result<ExitCode, CommandError> {
    let cache = TokenCache::for_settings(&settings);
    if !cache.may_hold_tokens() {
        outln!("not signed in (no token cache at {})", cache.describe());
        return Ok(ExitCode::Ok);
    }
    let lock = cache
        .lock()
        .await
        .map_err(|e| CommandError::new(ExitCode::Failed, e))?;
    match cache.remove(&lock) {
        Ok(true) => {
            outln!("signed out: removed {}", cache.describe());
            Ok(ExitCode::Ok)
        }
        Ok(false) => {
            outln!("not signed in (no token cache at {})", cache.describe());
            Ok(ExitCode::Ok)
        }
        // A keyring that cannot be reached is a sign-in problem like any other (exit 3).
        Err(e) if e.kind == StoreErrorKind::Unavailable => {
            Err(CommandError::new(ExitCode::SignIn, e.message))
        }
        Err(e) => Err(CommandError::new(ExitCode::Failed, e.message)),
    }
}

pub async fn whoami(settings: Settings) -> Result<ExitCode, CommandError> {
    if let Some(why) = placeholder_client_id(&settings) {
        return Err(CommandError::new(ExitCode::Config, why));
    }
    if let AuthMethod::ClientCredentials { secret } = &settings.auth.method {
        // App-only tokens have no user (`/me` answers 400): say which app, after proving the
        // credentials work.
        Credentials::from_settings_in(&settings)
            .bearer()
            .await
            .map_err(auth_err)?;
        outln!(
            "app {} in tenant {} (client credentials, {}); no signed-in user: mappings name a `user`",
            settings.auth.client_id.as_deref().unwrap_or_default(),
            settings.auth.tenant,
            client_credentials::describe(secret)
        );
        return Ok(ExitCode::Ok);
    }
    let (name, upn) = me(&settings).await?;
    outln!("{name} <{upn}>");
    Ok(ExitCode::Ok)
}

/// `GET {base}/me` → (displayName, userPrincipalName).
async fn me(settings: &Settings) -> Result<(String, String), CommandError> {
    let client = GraphClient::new(settings, Credentials::from_settings_in(settings))
        .map_err(|e| CommandError::new(ExitCode::Config, e))?;
    let v = client
        .get_json("me", client.url(&["me"]))
        .await
        .map_err(|e| match e {
            RequestError::Auth(a) => auth_err(a),
            // The error's advice names what to do for this token source.
            RequestError::Graph(g) if g.class == ErrorClass::SignIn => {
                CommandError::new(ExitCode::SignIn, g.to_string())
            }
            RequestError::Graph(g) => CommandError::new(ExitCode::Failed, g.to_string()),
        })?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
    Ok((s("displayName"), s("userPrincipalName")))
}
