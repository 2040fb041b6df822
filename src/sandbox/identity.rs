//! The identity platform under `/{tenant}/oauth2/v2.0/`: `devicecode` and `token` (device code,
//! refresh token with rotation, client credentials with a secret or a JWT assertion). Errors
//! are shaped like Entra's: 400 (401 for invalid_client) with `error`, `error_description`
//! (AADSTS code), `error_codes`, `timestamp`, `trace_id`, `correlation_id`.

use super::persist::Record;
use super::state::{random_token, DeviceCode, DeviceStatus, RefreshInfo, Shared, TokenInfo};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use base64::Engine;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

fn form(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let trace = uuid::Uuid::new_v4().to_string();
    let corr = uuid::Uuid::new_v4().to_string();
    let ts = super::state::fmt_seconds(OffsetDateTime::now_utc()).replace('T', " ");
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": "https://login.microsoftonline.com/error?code=".to_string() + &code.to_string(),
    });
    (status, Json(body)).into_response()
}

fn bad(error: &str, code: u32, description: &str) -> Response {
    aad_error(StatusCode::BAD_REQUEST, error, code, description)
}

pub async fn devicecode(
    State(st): State<Shared>,
    Path(_tenant): Path<String>,
    body: Bytes,
) -> Response {
    st.lock().stats.bytes_received += body.len() as u64;
    let f = form(&body);
    let Some(client_id) = f.get("client_id").filter(|c| !c.is_empty()) else {
        return bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let Some(scope) = f.get("scope").filter(|s| !s.is_empty()) else {
        return bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    };
    let user_code: String = {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let mut rng = rand::thread_rng();
        (0..9)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let device_code = random_token(48);
    let mut g = st.lock();
    let (interval, expires_in) = (
        g.faults.device_code_interval_secs,
        g.faults.device_code_expires_secs,
    );
    g.device_codes.insert(
        device_code.clone(),
        DeviceCode {
            user_code: user_code.clone(),
            client_id: client_id.clone(),
            scope: scope.clone(),
            expires: Instant::now() + Duration::from_secs(expires_in),
            interval_secs: interval,
            last_poll: None,
            status: DeviceStatus::Pending,
        },
    );
    let uri = format!("{}/devicelogin", st.origin);
    Json(json!({
        "user_code": user_code,
        "device_code": device_code,
        "verification_uri": uri,
        "expires_in": expires_in,
        "interval": interval,
        "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."),
    }))
    .into_response()
}

/// The page `verification_uri` points at: enter the code `outbox login` shows, then Approve or
/// Decline (a form, no script). `?code=` fills the code in. Scripts use the admin API instead:
/// `POST /_admin/devicecode/approve {"user_code":...}`.
pub async fn devicelogin(
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Html<String> {
    let code = q.get("code").map(|c| html_escape(c)).unwrap_or_default();
    Html(login_page(&format!(
        "<form method=\"post\" action=\"/devicelogin\">\
         <p><label>Code shown by <code>outbox login</code>: \
         <input name=\"user_code\" value=\"{code}\" autofocus required autocomplete=\"off\"></label></p>\
         <p><button name=\"action\" value=\"approve\">Approve</button> \
         <button name=\"action\" value=\"deny\">Decline</button></p></form>\
         <p>Scripts: <code>POST /_admin/devicecode/approve {{\"user_code\":\"...\"}}</code>.</p>"
    )))
}

/// The page's buttons: approve or decline the sign-in, as the user `me`.
pub async fn devicelogin_submit(
    State(st): State<Shared>,
    axum::extract::Form(f): axum::extract::Form<HashMap<String, String>>,
) -> Response {
    let code = f.get("user_code").map(|c| c.trim()).unwrap_or_default();
    let deny = f.get("action").is_some_and(|a| a == "deny");
    match super::admin::decide_sign_in(&st, code, deny, None) {
        Ok(code) => {
            let what = if deny { "declined" } else { "approved" };
            Html(login_page(&format!(
                "<p id=\"result\">Sign-in {} {what}. You can close this page and return to the terminal.</p>",
                html_escape(&code)
            )))
            .into_response()
        }
        Err(r) => {
            let status = r.status();
            let reason = if status == StatusCode::CONFLICT {
                "that sign-in was already approved, declined or has expired"
            } else {
                "no pending sign-in has that code: check it, or run `outbox login` again"
            };
            (
                status,
                Html(login_page(&format!(
                    "<p id=\"result\">{reason}.</p><p><a href=\"/devicelogin\">Try again</a></p>"
                ))),
            )
                .into_response()
        }
    }
}

fn login_page(body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>outbox sandbox: sign in</title></head>\
         <body><h1>outbox sandbox: sign in</h1>{body}</body></html>"
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A JWT-shaped (unsigned) access token: clients must treat it as opaque, but some decode it.
fn mint_access(st: &Shared, user: Option<&str>, scope: &str) -> (String, u64) {
    let lifetime = st.lock().faults.token_lifetime_secs;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let header = json!({"typ": "JWT", "alg": "none"});
    let claims = json!({
        "aud": "https://graph.microsoft.com", "iss": format!("{}/sandbox/v2.0", st.origin),
        "iat": now, "nbf": now, "exp": now + lifetime as i64, "upn": user, "scp": scope,
        "roles": if user.is_none() { json!(["Mail.ReadWrite", "Calendars.ReadWrite"]) } else { json!(null) },
        "jti": random_token(12),
    });
    let token = format!("{}.{}.{}", b64(&header), b64(&claims), random_token(24));
    let expires = Instant::now() + Duration::from_secs(lifetime);
    let mut g = st.lock();
    g.issued.access_tokens.push(token.clone());
    g.tokens.insert(
        token.clone(),
        TokenInfo {
            user: user.map(str::to_string),
            expires: Some(expires),
            minted: true,
        },
    );
    g.log(Record::Token {
        token: token.clone(),
        user: user.map(str::to_string),
        expires_ms: Some(super::persist::instant_to_ms(expires)),
    });
    drop(g);
    (token, lifetime)
}

fn delegated_answer(st: &Shared, user: &str, client_id: &str, scope: &str) -> Response {
    let (access, lifetime) = mint_access(st, Some(user), scope);
    let mut out = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access,
    });
    if scope.split_whitespace().any(|s| s == "offline_access") {
        let rt = random_token(64);
        let mut g = st.lock();
        g.issued.refresh_tokens.push(rt.clone());
        g.refresh_tokens.insert(
            rt.clone(),
            RefreshInfo {
                user: user.to_string(),
                client_id: client_id.to_string(),
                scope: scope.to_string(),
            },
        );
        g.log(Record::Refresh {
            token: rt.clone(),
            user: user.to_string(),
            client_id: client_id.to_string(),
            scope: scope.to_string(),
        });
        drop(g);
        out["refresh_token"] = json!(rt);
    }
    if scope.split_whitespace().any(|s| s == "openid") {
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        out["id_token"] = json!(format!(
            "{}.{}.",
            b64(&json!({"typ":"JWT","alg":"none"})),
            b64(&json!({"preferred_username": user, "name": "Sandbox User", "aud": client_id}))
        ));
    }
    Json(out).into_response()
}

pub async fn token(State(st): State<Shared>, Path(tenant): Path<String>, body: Bytes) -> Response {
    st.lock().stats.bytes_received += body.len() as u64;
    let f = form(&body);
    let Some(client_id) = f.get("client_id").cloned().filter(|c| !c.is_empty()) else {
        return bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    match f.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:device_code") => device_grant(&st, &f, &client_id),
        Some("refresh_token") => refresh_grant(&st, &f, &client_id),
        Some("client_credentials") => client_credentials(&st, &f, &client_id, &tenant),
        Some(other) => bad(
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
        ),
        None => bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        ),
    }
}

fn device_grant(st: &Shared, f: &HashMap<String, String>, client_id: &str) -> Response {
    let Some(code) = f.get("device_code") else {
        return bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'device_code'.",
        );
    };
    let now = Instant::now();
    let outcome = {
        let mut g = st.lock();
        let Some(d) = g.device_codes.get_mut(code) else {
            return bad(
                "bad_verification_code",
                70019,
                "Verification code is not recognized.",
            );
        };
        if d.client_id != client_id {
            return bad(
                "invalid_grant",
                70000,
                "The device code was issued to another client.",
            );
        }
        if now >= d.expires {
            return bad("expired_token", 70020, "The provided value for the input parameter 'device_code' is not valid. This device code has expired.");
        }
        let too_fast = d
            .last_poll
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(d.interval_secs));
        d.last_poll = Some(now);
        match d.status.clone() {
            DeviceStatus::Denied => {
                return bad(
                    "authorization_declined",
                    70016,
                    "The end user denied the authorization request.",
                )
            }
            DeviceStatus::Redeemed => {
                return bad(
                    "invalid_grant",
                    70000,
                    "The provided device code has already been redeemed.",
                )
            }
            DeviceStatus::Pending if too_fast => {
                return bad(
                    "slow_down",
                    70016,
                    "Polling too fast: wait for the interval.",
                )
            }
            DeviceStatus::Pending => {
                return bad(
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                )
            }
            DeviceStatus::Approved(user) => {
                d.status = DeviceStatus::Redeemed;
                (user, d.scope.clone())
            }
        }
    };
    delegated_answer(st, &outcome.0, client_id, &outcome.1)
}

fn refresh_grant(st: &Shared, f: &HashMap<String, String>, client_id: &str) -> Response {
    let Some(rt) = f.get("refresh_token") else {
        return bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'refresh_token'.",
        );
    };
    let info = {
        let mut g = st.lock();
        let revoke = g.faults.revoke_used_refresh_tokens;
        let found = g
            .refresh_tokens
            .get(rt)
            .map(|i| (i.user.clone(), i.client_id.clone(), i.scope.clone()));
        let Some((user, cid, scope)) = found else {
            return bad(
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
            );
        };
        if cid != client_id {
            return bad(
                "invalid_grant",
                70000,
                "The refresh token was issued to another client.",
            );
        }
        if revoke {
            g.refresh_tokens.remove(rt);
            g.log(Record::RefreshGone { token: rt.clone() });
        }
        (user, scope)
    };
    // Rotation always returns a refresh token, even if the new request omits offline_access.
    let scope = if info.1.split_whitespace().any(|s| s == "offline_access") {
        info.1
    } else {
        format!("{} offline_access", info.1)
    };
    delegated_answer(st, &info.0, client_id, &scope)
}

fn client_credentials(
    st: &Shared,
    f: &HashMap<String, String>,
    client_id: &str,
    tenant: &str,
) -> Response {
    let scope = f.get("scope").cloned().unwrap_or_default();
    if !scope.ends_with("/.default") || scope.contains(' ') {
        return bad(
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
        );
    }
    if let Some(secret) = f.get("client_secret") {
        if *secret != st.lock().faults.client_secret {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided.",
            );
        }
    } else if let Some(assertion) = f.get("client_assertion") {
        if f.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return bad("invalid_request", 900144, "client_assertion_type must be 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.");
        }
        if let Err(why) = check_assertion(st, assertion, client_id, tenant) {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                700027,
                &format!("Client assertion failed validation: {why}"),
            );
        }
    } else {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    }
    let (access, lifetime) = mint_access(st, None, &scope);
    Json(json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access})).into_response()
}

/// Parse the JWT and check header (`typ`, `x5t#S256` or `x5t`) and claims (`aud`, `iss` = `sub`
/// = client id, `exp` in the future, lifetime ≤ 10 min). The signature is not verified.
fn check_assertion(st: &Shared, jwt: &str, client_id: &str, tenant: &str) -> Result<(), String> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("not a JWT (three dot-separated parts expected)".into());
    };
    if sig.is_empty() {
        return Err("the assertion is not signed".into());
    }
    let decode = |s: &str| -> Result<Value, String> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| "bad base64url".to_string())?;
        serde_json::from_slice(&raw).map_err(|_| "bad JSON".to_string())
    };
    let header = decode(h)?;
    let claims = decode(c)?;
    if header
        .get("typ")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
    {
        return Err("typ must be JWT".into());
    }
    if header.get("x5t#S256").and_then(Value::as_str).is_none()
        && header.get("x5t").and_then(Value::as_str).is_none()
    {
        return Err("header lacks x5t#S256".into());
    }
    match header.get("alg").and_then(Value::as_str) {
        Some("PS256") | Some("RS256") => {}
        other => return Err(format!("alg must be PS256 or RS256, not {other:?}")),
    }
    let aud = claims.get("aud").and_then(Value::as_str).unwrap_or("");
    let ours = format!("{}/{tenant}/oauth2/v2.0/token", st.origin);
    let ms = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token");
    if aud != ours && aud != ms {
        return Err(format!("aud must be {ours}"));
    }
    for k in ["iss", "sub"] {
        if claims.get(k).and_then(Value::as_str) != Some(client_id) {
            return Err(format!("{k} must be the client id"));
        }
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("exp missing")?;
    if exp <= now {
        return Err("the assertion has expired".into());
    }
    let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(now);
    if exp - nbf > 600 + 60 {
        return Err("assertion lifetime over 10 minutes".into());
    }
    if claims.get("jti").and_then(Value::as_str).is_none() {
        return Err("jti missing".into());
    }
    Ok(())
}
