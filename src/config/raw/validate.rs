//! Validation of `[graph]`, `[auth]` and `[agent]`: raw values into settings that cannot be
//! wrong, each section on its own (`validate`), and the unit-bearing values they share.

use super::*;

/// Each section on its own, so one bad section does not hide another's error (the mappings are
/// checked against the method as written even when the rest of `[auth]` is wrong).
pub(super) fn validate(raw: RawFile, ctx: &Ctx) -> Result<Settings, Vec<ConfigError>> {
    let dir = ctx.file.parent().map(Path::to_path_buf).unwrap_or_default();
    let written_method = raw
        .auth
        .as_ref()
        .and_then(|a| a.method.as_ref())
        .map(|m| *m.get_ref())
        .unwrap_or(RawMethod::DeviceCode);
    let graph = validate_graph(raw.graph.unwrap_or_default(), ctx, &dir);
    let auth = validate_auth(raw.auth.unwrap_or_default(), ctx, &dir);
    let agent = validate_agent(raw.agent.unwrap_or_default(), ctx, &dir);
    let method = auth.as_ref().map(|(_, m)| *m).unwrap_or(written_method);
    let mappings = validate_mappings(raw.mapping, ctx, &dir, method);
    match (graph, auth, agent, mappings) {
        (Ok(graph), Ok((auth, _)), Ok(agent), Ok(mappings)) => Ok(Settings {
            source: ctx.file.clone(),
            read_at: std::time::SystemTime::now(),
            graph,
            auth,
            agent,
            mappings,
        }),
        (graph, auth, agent, mappings) => {
            let mut errors: Vec<ConfigError> = [graph.err(), auth.err(), agent.err()]
                .into_iter()
                .flatten()
                .collect();
            errors.extend(mappings.err().into_iter().flatten());
            Err(errors)
        }
    }
}

pub(super) fn validate_graph(
    raw: RawGraph,
    ctx: &Ctx,
    dir: &Path,
) -> Result<GraphSettings, ConfigError> {
    let base_url = match &raw.base_url {
        Some(v) => parse_base(v.get_ref()).map_err(|m| {
            ctx.at(
                v,
                "graph.base_url",
                format!("{m}; e.g. \"{DEFAULT_BASE_URL}\""),
            )
        })?,
        None => parse_base(DEFAULT_BASE_URL).map_err(|m| ctx.err(None, "graph.base_url", m))?,
    };
    let ca_file = match &raw.ca_file {
        Some(v) => Some(path_value(v, ctx, "graph.ca_file", dir)?),
        None => None,
    };
    Ok(GraphSettings { base_url, ca_file })
}

/// An http(s) URL without a trailing slash, query or fragment.
pub(super) fn parse_base(s: &str) -> Result<url::Url, String> {
    let trimmed = s.trim().trim_end_matches('/');
    let url = url::Url::parse(trimmed).map_err(|e| format!("\"{s}\" is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("\"{s}\" must be an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("\"{s}\" must not have a query or fragment"));
    }
    // Bearer tokens and secrets travel to this origin: in clear text only to this machine.
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(format!(
            "\"{s}\": http:// is accepted only on a loopback host (the sandbox); tokens must not cross a network in clear text, use https://"
        ));
    }
    Ok(url)
}

pub(super) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

pub(super) fn validate_auth(
    raw: RawAuth,
    ctx: &Ctx,
    dir: &Path,
) -> Result<(AuthSettings, RawMethod), ConfigError> {
    let method_kind = raw
        .method
        .as_ref()
        .map(|m| *m.get_ref())
        .unwrap_or(RawMethod::DeviceCode);
    let method_offset = raw.method.as_ref().map(|m| m.span().start);
    let authority = match &raw.authority {
        Some(v) => parse_base(v.get_ref()).map_err(|m| {
            ctx.at(
                v,
                "auth.authority",
                format!("{m}; e.g. \"{DEFAULT_AUTHORITY}\""),
            )
        })?,
        None => parse_base(DEFAULT_AUTHORITY).map_err(|m| ctx.err(None, "auth.authority", m))?,
    };
    let tenant = match &raw.tenant {
        Some(v) => {
            let t = v.get_ref().trim();
            if t.is_empty() || t.contains(['/', '?', '#', ' ']) {
                return Err(ctx.at(
                    v,
                    "auth.tenant",
                    "tenant must be a tenant id or domain, or \"common\" / \"organizations\"",
                ));
            }
            t.to_owned()
        }
        None => DEFAULT_TENANT.to_owned(),
    };
    let client_id = match &raw.client_id {
        Some(v) => {
            let id = v.get_ref().trim();
            if id.is_empty() || id.starts_with('<') {
                return Err(ctx.at(
                    v,
                    "auth.client_id",
                    "set client_id to your app registration's Application (client) ID, a GUID",
                ));
            }
            Some(id.to_owned())
        }
        None => None,
    };
    let need_client_id = |what: &str| {
        if client_id.is_none() {
            Err(ctx.err(
                method_offset,
                "auth.client_id",
                format!(
                    "auth.method = \"{what}\" needs client_id: the Application (client) ID of \
                     your app registration"
                ),
            ))
        } else {
            Ok(())
        }
    };
    let method = match method_kind {
        RawMethod::DeviceCode => {
            need_client_id("device_code")?;
            AuthMethod::DeviceCode
        }
        RawMethod::ClientCredentials => {
            need_client_id("client_credentials")?;
            let secret =
                match (&raw.client_secret_env, &raw.certificate_path) {
                    (Some(_), Some(cert)) => {
                        return Err(ctx.at(
                            cert,
                            "auth.certificate_path",
                            "set only one of client_secret_env and certificate_path",
                        ))
                    }
                    (Some(var), None) => ClientCredential::SecretEnv(env_name(
                        var,
                        ctx,
                        "auth.client_secret_env",
                        "OUTBOX_CLIENT_SECRET",
                    )?),
                    (None, Some(cert)) => ClientCredential::Certificate(path_value(
                        cert,
                        ctx,
                        "auth.certificate_path",
                        dir,
                    )?),
                    (None, None) => return Err(ctx.err(
                        method_offset,
                        "auth.client_secret_env",
                        "auth.method = \"client_credentials\" needs client_secret_env (the name \
                         of an environment variable holding the secret, e.g. \
                         \"OUTBOX_CLIENT_SECRET\") or certificate_path (a PEM file)",
                    )),
                };
            AuthMethod::ClientCredentials { secret }
        }
        RawMethod::TokenEnv => {
            let var = match &raw.token_env {
                Some(v) => env_name(v, ctx, "auth.token_env", DEFAULT_TOKEN_ENV)?,
                None => DEFAULT_TOKEN_ENV.to_owned(),
            };
            AuthMethod::TokenEnv { var }
        }
        RawMethod::TokenCommand => match &raw.command {
            Some(c) if c.get_ref().first().is_some_and(|p| !p.trim().is_empty()) => {
                AuthMethod::TokenCommand {
                    command: c.get_ref().clone(),
                }
            }
            other => {
                let offset = other.as_ref().map(|c| c.span().start).or(method_offset);
                return Err(ctx.err(
                    offset,
                    "auth.command",
                    "auth.method = \"token_command\" needs command, the program and its \
                     arguments, e.g. [\"az\", \"account\", \"get-access-token\", \
                     \"--resource-type\", \"ms-graph\", \"--query\", \"accessToken\", \"-o\", \"tsv\"]",
                ));
            }
        },
    };
    let token_store = match raw.token_store.as_ref().map(|v| (v, *v.get_ref())) {
        None | Some((_, RawTokenStore::File)) => TokenStoreKind::File,
        Some((v, RawTokenStore::Keyring)) => {
            if !cfg!(feature = "keyring") {
                return Err(ctx.at(
                    v,
                    "auth.token_store",
                    "token_store = \"keyring\" needs outbox built with the keyring feature \
                     (`cargo install --features keyring`, or `cargo build --release --features \
                     keyring`); this build has none: rebuild with it, or set token_store = \
                     \"file\"",
                ));
            }
            TokenStoreKind::Keyring
        }
    };
    Ok((
        AuthSettings {
            method,
            authority,
            tenant,
            client_id,
            token_store,
        },
        method_kind,
    ))
}

/// The name of an environment variable. A value that is not a plausible name is most likely the
/// secret itself pasted in: refuse it without repeating it.
pub(super) fn env_name(
    v: &Spanned<String>,
    ctx: &Ctx,
    key: &str,
    example: &str,
) -> Result<String, ConfigError> {
    let name = v.get_ref().trim();
    let plausible = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        // A JWT (every Graph access token) starts with the base64 of `{"`.
        && !name.starts_with("eyJ")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plausible {
        return Err(ctx.at(
            v,
            key,
            format!(
                "{} takes the NAME of an environment variable (letters, digits, _), not the secret \
                 itself; e.g. \"{example}\"",
                key.rsplit('.').next().unwrap_or(key)
            ),
        ));
    }
    Ok(name.to_owned())
}

pub(super) fn validate_agent(
    raw: RawAgent,
    ctx: &Ctx,
    dir: &Path,
) -> Result<AgentSettings, ConfigError> {
    let state_dir = match &raw.state_dir {
        Some(v) => path_value(v, ctx, "agent.state_dir", dir)?,
        None => default_state_dir().ok_or_else(|| {
            ctx.err(
                None,
                "agent.state_dir",
                "cannot find the platform state directory (no home directory?); set state_dir",
            )
        })?,
    };
    let concurrency = match &raw.concurrency {
        Some(v) => {
            let n = *v.get_ref();
            if !(1..=MAX_CONCURRENCY).contains(&n) {
                return Err(ctx.at(
                    v,
                    "agent.concurrency",
                    format!(
                        "concurrency must be between 1 and {MAX_CONCURRENCY}; Graph allows 4 \
                         requests in flight per mailbox, e.g. 4"
                    ),
                ));
            }
            n as usize
        }
        None => DEFAULT_CONCURRENCY,
    };
    let chunk_size = size_value(
        raw.chunk_size.as_ref(),
        ctx,
        "agent.chunk_size",
        DEFAULT_CHUNK,
    )?;
    if chunk_size == 0 || chunk_size > MAX_CHUNK {
        let offset = raw.chunk_size.as_ref().map(|v| v.span().start);
        let why = if chunk_size == 0 {
            "must be more than 0"
        } else {
            "must be at most 4MiB (Graph's per-request limit)"
        };
        return Err(ctx.err(
            offset,
            "agent.chunk_size",
            format!("chunk_size {why}; e.g. \"3840KiB\""),
        ));
    }
    let settle = duration_value(raw.settle.as_ref(), ctx, "agent.settle", DEFAULT_SETTLE)?;
    let settle_after_close = duration_value(
        raw.settle_after_close.as_ref(),
        ctx,
        "agent.settle_after_close",
        DEFAULT_SETTLE_AFTER_CLOSE,
    )?;
    let look_after = duration_value(
        raw.look_after.as_ref(),
        ctx,
        "agent.look_after",
        DEFAULT_LOOK_AFTER,
    )?;
    let max_settle = duration_value(
        raw.max_settle.as_ref(),
        ctx,
        "agent.max_settle",
        DEFAULT_MAX_SETTLE,
    )?;
    if max_settle < settle {
        let offset = raw
            .max_settle
            .as_ref()
            .or(raw.settle.as_ref())
            .map(|v| v.span().start);
        return Err(ctx.err(
            offset,
            "agent.max_settle",
            "max_settle must be at least settle; e.g. settle = \"2s\", max_settle = \"10m\"",
        ));
    }
    let rescan = duration_value(raw.rescan.as_ref(), ctx, "agent.rescan", DEFAULT_RESCAN)?;
    if rescan.is_zero() {
        return Err(ctx.err(
            raw.rescan.as_ref().map(|v| v.span().start),
            "agent.rescan",
            "rescan must be longer than 0; e.g. \"1h\"",
        ));
    }
    let mailbox_requests = budget_value(
        raw.mailbox_requests.as_ref(),
        ctx,
        "agent.mailbox_requests",
        DEFAULT_MAILBOX_REQUESTS,
        parse_count_budget,
    )?;
    let mailbox_upload_bytes = budget_value(
        raw.mailbox_upload_bytes.as_ref(),
        ctx,
        "agent.mailbox_upload_bytes",
        DEFAULT_MAILBOX_UPLOAD_BYTES,
        parse_size_budget,
    )?;
    let mailbox_sends = budget_value(
        raw.mailbox_sends.as_ref(),
        ctx,
        "agent.mailbox_sends",
        DEFAULT_MAILBOX_SENDS,
        parse_count_budget,
    )?;
    let notify = match raw.notify.as_ref().map(|v| *v.get_ref()) {
        Some(RawNotify::Off) => NotifyLevel::Off,
        Some(RawNotify::Failures) | None => NotifyLevel::Failures,
        Some(RawNotify::All) => NotifyLevel::All,
    };
    let keep_done = duration_value(
        raw.keep_done.as_ref(),
        ctx,
        "agent.keep_done",
        DEFAULT_KEEP_DONE,
    )?;
    let remember_sent = duration_value(
        raw.remember_sent.as_ref(),
        ctx,
        "agent.remember_sent",
        DEFAULT_REMEMBER_SENT,
    )?;
    Ok(AgentSettings {
        state_dir,
        concurrency,
        chunk_size,
        settle,
        settle_after_close,
        look_after,
        max_settle,
        rescan,
        mailbox_requests,
        mailbox_upload_bytes,
        mailbox_sends,
        notify,
        keep_done,
        remember_sent,
    })
}

pub(in crate::config) fn size_value(
    v: Option<&Spanned<IntOrText>>,
    ctx: &Ctx,
    key: &str,
    default: &str,
) -> Result<u64, ConfigError> {
    let Some(v) = v else {
        return parse_size(default).map_err(|m| ctx.err(None, key, m));
    };
    match v.get_ref() {
        IntOrText::Int(n) => u64::try_from(*n).map_err(|_| {
            ctx.at(
                v,
                key,
                format!("sizes cannot be negative ({n}); e.g. \"{default}\""),
            )
        }),
        IntOrText::Text(s) => parse_size(s).map_err(|m| ctx.at(v, key, m)),
    }
}

pub(in crate::config) fn duration_value(
    v: Option<&Spanned<IntOrText>>,
    ctx: &Ctx,
    key: &str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let Some(v) = v else {
        return parse_duration(default).map_err(|m| ctx.err(None, key, m));
    };
    match v.get_ref() {
        IntOrText::Int(n) => Err(ctx.at(
            v,
            key,
            format!("a duration needs a unit, as a string: e.g. \"{n}s\" (ms, s, m, h or d)"),
        )),
        IntOrText::Text(s) => parse_duration(s).map_err(|m| ctx.at(v, key, m)),
    }
}

pub(in crate::config) fn budget_value(
    v: Option<&Spanned<IntOrText>>,
    ctx: &Ctx,
    key: &str,
    default: &str,
    parse: fn(&str) -> Result<Option<crate::config::Budget>, String>,
) -> Result<Option<crate::config::Budget>, ConfigError> {
    let Some(v) = v else {
        return parse(default).map_err(|m| ctx.err(None, key, m));
    };
    match v.get_ref() {
        IntOrText::Int(_) => Err(ctx.at(
            v,
            key,
            format!("a budget is a string AMOUNT/WINDOW, e.g. \"{default}\", or \"off\""),
        )),
        IntOrText::Text(s) => parse(s).map_err(|m| ctx.at(v, key, m)),
    }
}
