//! Text from outside — file names from a shared folder, server answers (an attachment id from
//! `Location`, error bodies), a token command's output — made safe to show on a terminal or in a
//! log line. Control characters, escape sequences and bidirectional overrides become visible
//! escapes (`\u{1b}`), so a name cannot forge a log line, move the cursor or recolour the
//! terminal; JWT-shaped strings (`eyJ….….…`) are redacted like the secrets `secret::redact` knows.
//! Never used for text that goes to Graph (names are attached as they are).

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1), bidi control (embeddings, overrides,
/// isolates, and the marks U+200E, U+200F, U+061C) and line/paragraph separator written as an
/// escape (`\n`, `\t`, `\u{1b}`, `\u{202e}`); everything else unchanged. The one function every
/// terminal line and log field of outside text goes through.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{061c}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `text` with every JWT-shaped run (three base64url parts joined by dots, the first starting
/// `eyJ`, i.e. a JSON header) replaced by `REDACTED`, wherever it stands: a bare token on a
/// command's stderr is a secret even without `Bearer` or `access_token=` before it.
pub fn redact_jwts(text: &str) -> Cow<'_, str> {
    if !text.contains("eyJ") {
        return Cow::Borrowed(text);
    }
    let b = text.as_bytes();
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i + 3 <= b.len() {
        let starts = &b[i..i + 3] == b"eyJ" && (i == 0 || !(is_b64(b[i - 1]) || b[i - 1] == b'.'));
        if !starts {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < b.len() && (is_b64(b[end]) || b[end] == b'.') {
            end += 1;
        }
        let run = &text[i..end];
        let parts: Vec<&str> = run.split('.').collect();
        let jwt = parts.len() >= 3 && parts[0].len() >= 8 && !parts[1].is_empty();
        if jwt {
            out.push_str(&text[copied..i]);
            out.push_str("REDACTED");
            copied = end;
        }
        i = end.max(i + 1);
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Outside text ready for a terminal or a log line: secrets redacted (known parameters,
/// `Bearer`, JWTs), then control characters escaped.
pub fn shown(text: &str) -> String {
    let redacted = crate::secret::redact(text);
    printable(&redact_jwts(&redacted)).into_owned()
}

/// A path from a watched folder, ready to show (its name is outside text): control characters
/// escaped, and every byte that is not UTF-8 written `\xff` (see [`os_text`]).
/// A path with a space is remembered (see [`spaced_paths`]).
pub fn path(p: &std::path::Path) -> String {
    let shown = printable(&os_text(p.as_os_str())).into_owned();
    if shown.contains(' ') {
        remember_spaced(&shown);
    }
    shown
}

/// How many of the latest paths with a space [`spaced_paths`] keeps.
const SPACED_KEPT: usize = 64;

static SPACED: std::sync::Mutex<std::collections::VecDeque<String>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

fn remember_spaced(shown: &str) {
    let Ok(mut kept) = SPACED.lock() else {
        return;
    };
    if kept.iter().any(|k| k == shown) {
        return;
    }
    if kept.len() == SPACED_KEPT {
        kept.pop_front();
    }
    kept.push_back(shown.to_owned());
}

/// The latest paths with a space in them shown through [`path`]: a line a person reads is never
/// wrapped inside one (`cli::out::for_person`), so it still pastes whole.
pub fn spaced_paths() -> Vec<String> {
    SPACED
        .lock()
        .map(|k| k.iter().cloned().collect())
        .unwrap_or_default()
}

/// `text` as a string without losing what is not Unicode: on Unix every byte that is not part of
/// valid UTF-8 is written `\xNN` (a name from a scanner or an SMB share can be any bytes);
/// elsewhere the lossy form (U+FFFD). Valid text is returned as it is.
#[cfg(unix)]
pub fn os_text(text: &std::ffi::OsStr) -> Cow<'_, str> {
    use std::os::unix::ffi::OsStrExt;
    if let Some(t) = text.to_str() {
        return Cow::Borrowed(t);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for chunk in text.as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    Cow::Owned(out)
}

#[cfg(not(unix))]
pub fn os_text(text: &std::ffi::OsStr) -> Cow<'_, str> {
    text.to_string_lossy()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_drives_a_terminal_or_forges_a_line() {
        assert_eq!(
            printable("a\u{1b}[31mred\u{1b}[0m\nINFO forged"),
            "a\\u{1b}[31mred\\u{1b}[0m\\nINFO forged"
        );
        assert_eq!(printable("\u{202e}fdp.exe"), "\\u{202e}fdp.exe");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(
            printable("a\u{200e}b\u{200f}c\u{61c}d"),
            "a\\u{200e}b\\u{200f}c\\u{61c}d"
        );
        assert!(matches!(printable("café – ok (1).pdf"), Cow::Borrowed(_)));
    }

    #[cfg(unix)]
    #[test]
    fn bytes_that_are_not_utf8_show_as_hex_escapes() {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"bad\xffbyte\xc3.txt");
        assert_eq!(os_text(name), "bad\\xffbyte\\xc3.txt");
        assert!(matches!(
            os_text(std::ffi::OsStr::new("café")),
            Cow::Borrowed(_)
        ));
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/s/a\n\xfe"));
        assert_eq!(path(p), "/s/a\\n\\xfe");
    }

    #[test]
    fn redacts_bare_jwts_only() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtZSJ9.c2lnbmF0dXJl";
        let said = format!("token command said: {jwt}\n");
        let r = redact_jwts(&said);
        assert_eq!(r, "token command said: REDACTED\n");
        let r = shown(&format!("x={jwt}; {jwt}"));
        assert!(!r.contains("eyJzdWIi"), "{r}");
        for plain in ["eyJ", "see eyJhbG.x", "keyJam.a.b", "version 1.2.3"] {
            assert_eq!(redact_jwts(plain), plain);
        }
    }
}
