//! Redaction of secrets in anything that may be printed or logged: bearer tokens, refresh
//! tokens, client secrets and the `authtoken` (Outlook) and `tempauth` (SharePoint) query
//! parameters of upload URLs.

/// Replace the value of every secret-bearing query parameter (`authtoken`, `access_token`,
/// `client_secret`, `refresh_token`, `code`) and every `Bearer` token in `text` with `REDACTED`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for key in SECRET_PARAMS {
            if let Some(stripped) = strip_prefix_ci(rest, key) {
                if let Some(after_eq) = stripped.strip_prefix('=') {
                    let prev_ok = out
                        .chars()
                        .last()
                        .is_none_or(|c| c == '?' || c == '&' || c == ' ' || c == '"' || c == '\'');
                    if prev_ok {
                        out.push_str(&rest[..key.len() + 1]);
                        out.push_str("REDACTED");
                        let end = after_eq
                            .find(|c: char| {
                                c == '&'
                                    || c == '#'
                                    || c.is_whitespace()
                                    || c == '"'
                                    || c == '\''
                                    || c == ')'
                            })
                            .unwrap_or(after_eq.len());
                        rest = &after_eq[end..];
                        continue 'outer;
                    }
                }
            }
        }
        if let Some(stripped) = strip_prefix_ci(rest, "bearer ") {
            let end = stripped
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
                .unwrap_or(stripped.len());
            if looks_like_token(&stripped[..end], &stripped[end..]) {
                out.push_str(&rest[..7]);
                out.push_str("REDACTED");
                rest = &stripped[end..];
                continue;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// Whether `word`, which follows "Bearer ", is a credential rather than prose ("a Graph bearer
/// token.") or an auth-param of a `WWW-Authenticate: Bearer realm="..."` challenge. Tokens are
/// token68 (RFC 6750): JWTs have dots, opaque tokens are long or carry digits and `-_~+/`. A short
/// word of lowercase letters is English: every message outbox shows that says "bearer" is tested
/// below to come out whole.
fn looks_like_token(word: &str, after: &str) -> bool {
    let word = word.trim_end_matches(['.', ';', ':', ')', '!', '?']);
    let auth_param = word.strip_suffix('=').is_some_and(|name| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    }) && after.starts_with('"');
    if word.is_empty() || auth_param {
        return false;
    }
    let prose = word.len() <= 12 && word.bytes().all(|b| b.is_ascii_lowercase());
    !prose
}

const SECRET_PARAMS: &[&str] = &[
    "authtoken",
    // SharePoint's (OneDrive for Business) upload URLs carry their token as `tempauth`.
    "tempauth",
    "access_token",
    "refresh_token",
    "client_secret",
    "client_assertion",
    "device_code",
];

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_upload_url_token() {
        let s = "error sending request for url (https://outlook.office.com/api/v2.0/Users('a')/AttachmentSessions('b')?authtoken=eyJ0eXAi.abc-def&x=1)";
        let r = redact(s);
        assert!(!r.contains("eyJ0eXAi"), "{r}");
        assert!(r.contains("authtoken=REDACTED&x=1"), "{r}");
        let d = redact("url (https://contoso-my.sharepoint.com/x/uploadSession?guid='g'&tempauth=v1.eyJhbGc.sig)");
        assert!(
            !d.contains("eyJhbGc") && d.contains("tempauth=REDACTED"),
            "{d}"
        );
    }

    #[test]
    fn redacts_bearer_and_form_secrets() {
        let r = redact("Authorization: Bearer abc.def.ghi, refresh_token=xyz&client_secret=s3cr3t");
        assert!(
            !r.contains("abc.def") && !r.contains("xyz") && !r.contains("s3cr3t"),
            "{r}"
        );
    }

    #[test]
    fn redacts_tokens_of_every_shape_after_bearer() {
        for token in [
            "eyJ0eXAiOiJKV1Qi.eyJzdWIiOiIxIn0.c2ln",
            "test-token-5e1f0c2a9d",
            "EwBwA8l6BAAUO9chh8cJscQLmU+LSWpbnr0vmwwAAQ==",
            "abc.def.ghi",
            "SECRET123",
            "averylongopaquelowercasetoken",
        ] {
            for text in [
                format!("Authorization: Bearer {token}"),
                format!("authorization: bearer {token}, next"),
                format!("sent \"Bearer {token}\""),
            ] {
                let r = redact(&text);
                assert!(!r.contains(token), "{text} -> {r}");
                assert!(
                    r.to_lowercase().contains("bearer redacted"),
                    "{text} -> {r}"
                );
            }
        }
    }

    /// Every message outbox shows that contains a word the redaction keys on, as it is written in
    /// the code: none of them holds a secret, so each must come out unchanged.
    #[test]
    fn messages_that_mention_bearer_come_out_whole() {
        for text in [
            // auth/mod.rs, token_env with an empty variable
            "the environment variable OUTBOX_ACCESS_TOKEN (auth.token_env) holds no access token; \
             set it to a Graph bearer token",
            "set it to a Graph bearer token.",
            // cli/sandbox.rs --help, config.example.toml, docs/signin.md
            "Accept this fixed bearer token as a delegated token of the user `me`.",
            "a bearer token read from an environment variable at each use",
            "# token_env: the variable holding the bearer token.",
            "outbox talks to Microsoft Graph with a bearer token from one of four `[auth] method`s:",
            // a claims challenge quoted in an error (sandbox faults, Graph)
            "WWW-Authenticate: Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"insufficient_claims\"",
            // sign-in protocol names
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "no bearer token: run `outbox login`",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    /// Messages that name the secret-bearing keys without a value: kept whole.
    #[test]
    fn messages_that_name_secret_keys_come_out_whole() {
        for text in [
            "auth.method = \"client_credentials\" needs client_secret_env (the name of an environment variable holding the secret, e.g. \"OUTBOX_CLIENT_SECRET\")",
            "unknown field `client_secret`; secrets do not go in the config file: put the secret in an environment variable and set auth.client_secret_env to its name",
            "unknown field `access_token`; tokens do not go in the config file",
            "the identity platform issued no refresh token (offline_access not granted)",
            "the identity platform did not recognise the device code (bad_verification_code)",
            "Outlook upload URLs carry an authtoken query parameter",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let s = "café: the authtokens list is empty; code review";
        assert_eq!(redact(s), s);
    }
}
