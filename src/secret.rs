//! Redaction of secrets in anything that may be printed or logged: bearer tokens, refresh
//! tokens, client secrets and the `authtoken` query parameter of upload URLs.

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
            out.push_str(&rest[..7]);
            out.push_str("REDACTED");
            let end = stripped
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
                .unwrap_or(stripped.len());
            rest = &stripped[end..];
            continue;
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

const SECRET_PARAMS: &[&str] = &[
    "authtoken",
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
    fn leaves_ordinary_text_alone() {
        let s = "café: the authtokens list is empty; code review";
        assert_eq!(redact(s), s);
    }
}
