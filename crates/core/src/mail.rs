//! The pure parts of mailing a folder: message templates (placeholders checked when the config
//! is loaded, filled for a list of files) and splitting a batch of files into messages that fit
//! the tenant's size limit, counting base64 growth. No I/O.

use std::fmt;

/// The placeholders a `[mapping.new_message]` template may name.
pub const PLACEHOLDERS: &[&str] = &[
    "name", "stem", "ext", "size", "date", "count", "names", "mapping",
];

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// One of [`PLACEHOLDERS`].
    Field(&'static str),
}

/// Why a template was refused (the config names its file, line and key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// `{word}` that is not a placeholder.
    Unknown(String),
    /// A `{` without its `}` (write `{{` for a literal brace).
    Unclosed { at: usize },
    /// A `}` without its `{` (write `}}` for a literal brace).
    StrayClose { at: usize },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Unknown(w) => write!(
                f,
                "unknown placeholder {{{w}}}; the placeholders are {}",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            TemplateError::Unclosed { at } => write!(
                f,
                "'{{' at character {at} is not closed; write {{{{ for a literal brace"
            ),
            TemplateError::StrayClose { at } => write!(
                f,
                "'}}' at character {at} closes nothing; write }}}} for a literal brace"
            ),
        }
    }
}

/// Parse a template: text, `{placeholder}`, `{{` and `}}` for literal braces.
pub fn parse_template(s: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut text = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' if chars.get(i + 1) == Some(&'{') => {
                text.push('{');
                i += 2;
            }
            '}' if chars.get(i + 1) == Some(&'}') => {
                text.push('}');
                i += 2;
            }
            '{' => {
                let Some(len) = chars[i + 1..].iter().position(|&c| c == '}') else {
                    return Err(TemplateError::Unclosed { at: i });
                };
                let word: String = chars[i + 1..i + 1 + len].iter().collect();
                let Some(p) = PLACEHOLDERS.iter().find(|p| **p == word.trim()) else {
                    return Err(TemplateError::Unknown(word));
                };
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(Piece::Field(p));
                i += len + 2;
            }
            '}' => return Err(TemplateError::StrayClose { at: i }),
            c => {
                text.push(c);
                i += 1;
            }
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// A file of a message, as the template sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    /// The file name (no directory).
    pub name: String,
    /// Raw bytes.
    pub size: u64,
}

/// What a template is filled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderContext<'a> {
    /// The message's files, in the order they are attached (at least one).
    pub files: &'a [FileFacts],
    /// `{mapping}`: the mapping's name.
    pub mapping: &'a str,
    /// `{date}`: the day the message is made, as the caller formats it (e.g. `2026-11-29`).
    pub date: &'a str,
}

/// `report.final.pdf` → (`report.final`, `pdf`); a leading dot is part of the stem.
pub fn stem_and_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    }
}

/// Sizes as people read them: `512 B`, `1.5 KB`, `23.4 MB`, `1.2 GB` (decimal units, one
/// decimal from KB up).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut u = 0;
    while v >= 999.95 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Where a filled template goes, which decides how a placeholder's value is made safe: values
/// are data, never markup or layout (a file name is written by whoever dropped the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A subject: one line, `{names}` cut to [`SUBJECT_NAMES_MAX`].
    Subject,
    /// A text body: values cannot start a new line or turn text around.
    Text,
    /// An HTML body: values are HTML-escaped as well.
    Html,
}

/// Characters a value may not carry into a letter: controls (C0, DEL, C1: a newline in a file
/// name would start a line of the letter), the Unicode line and paragraph separators, and the
/// bidirectional marks, embeddings, overrides and isolates (U+202E before `fdp.exe` shows it as `exe.pdf`).
pub fn is_unsafe_in_letter(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// What an unsafe character of a value becomes: visible, so the oddity shows.
pub const REPLACEMENT: char = '\u{FFFD}';

/// The attachment name of a file named `name`: a control character (a newline, a tab, an
/// escape) becomes [`REPLACEMENT`], as a byte that is not UTF-8 does, so no attachment's name
/// carries a line break; in a mailed attachment (`mailed`), every character the letter may not
/// carry ([`is_unsafe_in_letter`]: bidi controls too) becomes it, as `{name}` does.
pub fn attachment_name(name: &str, mailed: bool) -> String {
    let bad = |c: char| {
        if mailed {
            is_unsafe_in_letter(c)
        } else {
            c.is_control()
        }
    };
    if !name.chars().any(bad) {
        return name.to_owned();
    }
    name.chars()
        .map(|c| if bad(c) { REPLACEMENT } else { c })
        .collect()
}

/// `{name}`, `{stem}` and `{ext}`, and each name of `{names}`, are cut to this many characters
/// (the last one an ellipsis).
pub const NAME_MAX: usize = 120;
/// `{names}` in a subject is cut at a whole name to this many characters, then "… and N more".
pub const SUBJECT_NAMES_MAX: usize = 240;
/// `{names}` in a body lists at most this many names, then "… and N more".
pub const BODY_NAMES_MAX: usize = 200;

/// `s` cut to at most `max` characters, the last an ellipsis when cut.
pub fn cap(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A value made safe for `place`: unsafe characters replaced, and in HTML `& < > " '` escaped.
pub fn clean_value(v: &str, place: Place) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            c if is_unsafe_in_letter(c) => out.push(REPLACEMENT),
            '&' if place == Place::Html => out.push_str("&amp;"),
            '<' if place == Place::Html => out.push_str("&lt;"),
            '>' if place == Place::Html => out.push_str("&gt;"),
            '"' if place == Place::Html => out.push_str("&quot;"),
            '\'' if place == Place::Html => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `{names}`: every name of `files` (already in name order, [`name_order`]: as a file manager
/// lists them, so the order is evident whatever order the files settled in), each capped,
/// joined by ", "; past the place's limit, "… and N more".
fn names_value(files: &[&FileFacts], place: Place) -> String {
    let names: Vec<String> = files.iter().map(|f| cap(&f.name, NAME_MAX)).collect();
    let more = |n: usize| format!("… and {n} more");
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        let fits = match place {
            Place::Subject => {
                let rest = names.len() - i - 1;
                let tail = if rest > 0 {
                    more(rest).chars().count() + 2
                } else {
                    0
                };
                i == 0 || out.chars().count() + 2 + name.chars().count() + tail <= SUBJECT_NAMES_MAX
            }
            Place::Text | Place::Html => i < BODY_NAMES_MAX,
        };
        if !fits {
            out.push_str(", ");
            out.push_str(&more(names.len() - i));
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
    }
    if place == Place::Subject {
        out = cap(&out, SUBJECT_NAMES_MAX);
    }
    out
}

/// The order of names in `{names}`: case-insensitive, a run of digits compared as the number
/// it writes ("scan 2" before "scan 10"), then the names as they are, so any two names have one
/// order.
pub fn name_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn runs(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, run)) if *d == digit => run.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    let (ra, rb) = (runs(a), runs(b));
    for (x, y) in ra.iter().zip(rb.iter()) {
        let o = match (x, y) {
            ((true, p), (true, q)) => {
                let (p, q) = (p.trim_start_matches('0'), q.trim_start_matches('0'));
                p.len().cmp(&q.len()).then_with(|| p.cmp(q))
            }
            ((_, p), (_, q)) => p.to_lowercase().cmp(&q.to_lowercase()),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    ra.len().cmp(&rb.len()).then_with(|| a.cmp(b))
}

/// Fill a parsed template for `place`. For several files, in name order ([`name_order`]),
/// `{name}`, `{stem}` and `{ext}` are the first file's; `{size}` is the total; `{count}` the number of files; `{names}` every name,
/// joined by ", ". Every value is data: see [`clean_value`], [`NAME_MAX`].
pub fn render(pieces: &[Piece], ctx: &RenderContext, place: Place) -> String {
    // In name order: `{names}` as a file manager lists them, `{name}` the first of them.
    let mut files: Vec<&FileFacts> = ctx.files.iter().collect();
    files.sort_by(|a, b| name_order(&a.name, &b.name));
    let first = files.first();
    let name = first.map(|f| f.name.as_str()).unwrap_or("");
    let (stem, ext) = stem_and_ext(name);
    let mut out = String::new();
    for p in pieces {
        let value = match p {
            Piece::Text(t) => {
                out.push_str(t);
                continue;
            }
            Piece::Field("name") => cap(name, NAME_MAX),
            Piece::Field("stem") => cap(stem, NAME_MAX),
            Piece::Field("ext") => cap(ext, NAME_MAX),
            Piece::Field("size") => human_size(ctx.files.iter().map(|f| f.size).sum()),
            Piece::Field("date") => ctx.date.to_string(),
            Piece::Field("count") => ctx.files.len().to_string(),
            Piece::Field("names") => names_value(&files, place),
            Piece::Field("mapping") => ctx.mapping.to_string(),
            Piece::Field(_) => continue,
        };
        out.push_str(&clean_value(&value, place));
    }
    out
}

/// Parse and fill in one go, for `place` (a template already validated by the config cannot
/// fail; one that was not is rendered as written).
pub fn render_in(template: &str, ctx: &RenderContext, place: Place) -> String {
    match parse_template(template) {
        Ok(p) => render(&p, ctx, place),
        Err(_) => template.to_string(),
    }
}

/// A subject, filled.
pub fn render_str(template: &str, ctx: &RenderContext) -> String {
    render_in(template, ctx, Place::Subject)
}

/// A body, filled: HTML-escaped values when `html`.
pub fn render_body(template: &str, ctx: &RenderContext, html: bool) -> String {
    render_in(template, ctx, if html { Place::Html } else { Place::Text })
}

/// `subject (1/2)` for part `index` (0-based) of `parts`; the subject alone when there is one.
pub fn part_subject(subject: &str, index: usize, parts: usize) -> String {
    if parts <= 1 {
        subject.to_string()
    } else {
        format!("{subject} ({}/{parts})", index + 1)
    }
}

/// What one attachment adds to a message's transport size beyond its base64 bytes: MIME part
/// headers (content type, disposition, the name twice, RFC 2231-encoded when not ASCII).
pub const ATTACHMENT_OVERHEAD: u64 = 1024;
/// What a message costs before any attachment (headers, recipients, a short body).
pub const MESSAGE_OVERHEAD: u64 = 16 * 1024;

/// Transport size of one attachment: base64 (4/3, padded, 76-column lines with CRLF) plus
/// [`ATTACHMENT_OVERHEAD`] and its name.
pub fn encoded_attachment_size(size: u64, name: &str) -> u64 {
    let b64 = size.div_ceil(3) * 4;
    let line_breaks = b64.div_ceil(76) * 2;
    b64 + line_breaks + ATTACHMENT_OVERHEAD + 6 * name.len() as u64
}

/// A file that cannot go in any message: alone it is over the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    /// Index into the files given.
    pub index: usize,
    /// Its message's transport size alone.
    pub needed: u64,
    pub limit: u64,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "alone it makes a message of about {} once encoded, over max_message_size ({}); \
             base64 makes attachments a third larger, so about {} of raw files fit",
            human_size(self.needed),
            human_size(self.limit),
            human_size(self.limit.saturating_sub(MESSAGE_OVERHEAD) / 4 * 3)
        )
    }
}

/// Split `files` (in order) into consecutive groups whose messages stay within `limit`
/// (transport bytes: [`MESSAGE_OVERHEAD`] + `body_len` + each attachment's encoded size). The
/// order is kept, so "(1/2)" parts follow the files. One file too large alone fails the batch.
pub fn split_batch(
    files: &[FileFacts],
    limit: u64,
    body_len: u64,
) -> Result<Vec<std::ops::Range<usize>>, TooLarge> {
    let base = MESSAGE_OVERHEAD + body_len;
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = base;
    for (i, f) in files.iter().enumerate() {
        let add = encoded_attachment_size(f.size, &f.name);
        if base + add > limit {
            return Err(TooLarge {
                index: i,
                needed: base + add,
                limit,
            });
        }
        if used + add > limit {
            out.push(start..i);
            start = i;
            used = base;
        }
        used += add;
    }
    if start < files.len() {
        out.push(start..files.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(name: &str, size: u64) -> FileFacts {
        FileFacts {
            name: name.into(),
            size,
        }
    }

    #[test]
    fn templates_fill_every_placeholder() {
        let files = [f("x.txt", 500), f("scan 01.pdf", 1500)];
        let ctx = RenderContext {
            files: &files,
            mapping: "invoices",
            date: "2026-11-29",
        };
        let p = parse_template("{name}|{stem}|{ext}|{size}|{date}|{count}|{names}|{mapping}|{{x}}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            render(&p, &ctx, Place::Text),
            "scan 01.pdf|scan 01|pdf|2.0 KB|2026-11-29|2|scan 01.pdf, x.txt|invoices|{x}"
        );
        assert_eq!(stem_and_ext(".bashrc"), (".bashrc", ""));
        assert_eq!(stem_and_ext("a.tar.gz"), ("a.tar", "gz"));
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(35_000_000), "35.0 MB");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert_eq!(
            parse_template("Invoice {stme}"),
            Err(TemplateError::Unknown("stme".into()))
        );
        assert_eq!(
            parse_template("a {name"),
            Err(TemplateError::Unclosed { at: 2 })
        );
        assert_eq!(
            parse_template("a } b"),
            Err(TemplateError::StrayClose { at: 2 })
        );
        let msg = TemplateError::Unknown("x".into()).to_string();
        assert!(msg.contains("{stem}") && msg.contains("{x}"), "{msg}");
    }

    #[test]
    fn a_batch_splits_where_the_limit_falls() {
        let mb = 1_000_000;
        let files = [f("a", 10 * mb), f("b", 10 * mb), f("c", 10 * mb), f("d", 1)];
        // 35 MB: two 10 MB files encode to ~27 MB; a third would pass 35 MB.
        let parts = split_batch(&files, 35 * mb, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parts, vec![0..2, 2..4]);
        assert_eq!(split_batch(&[], 35 * mb, 0), Ok(vec![]));
        let e = split_batch(&[f("a", 1), f("big", 30 * mb)], 35 * mb, 0);
        assert_eq!(e.as_ref().map_err(|e| e.index), Err(1));
        assert_eq!(part_subject("S", 0, 2), "S (1/2)");
        assert_eq!(part_subject("S", 0, 1), "S");
    }

    #[test]
    fn a_file_name_is_data_in_an_html_body() {
        let files = [f("<img src=\"https://t.example/p.gif\">&'x'.pdf", 1)];
        let ctx = RenderContext {
            files: &files,
            mapping: "m",
            date: "d",
        };
        assert_eq!(
            render_body("<p>Attached: <b>{names}</b></p>", &ctx, true),
            "<p>Attached: <b>&lt;img src=&quot;https://t.example/p.gif&quot;&gt;&amp;&#39;x&#39;.pdf</b></p>"
        );
        // A text body keeps the name as written: nothing there is markup.
        assert_eq!(
            render_body("{stem}", &ctx, false),
            "<img src=\"https://t.example/p.gif\">&'x'"
        );
    }

    #[test]
    fn a_file_name_cannot_start_a_line_or_turn_text_around() {
        let forged = "scan.pdf\r\n\r\nPS: our bank details changed, pay to IBAN DE00 0000\u{2028}x\u{202E}fdp.exe\u{0085}\u{7f}";
        let files = [f(forged, 1)];
        let ctx = RenderContext {
            files: &files,
            mapping: "m",
            date: "d",
        };
        let body = render_body("Attached: {names}.\nThanks", &ctx, false);
        assert_eq!(body.lines().count(), 2, "{body:?}");
        assert_eq!(
            body,
            "Attached: scan.pdf\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}PS: our bank details changed, pay to IBAN DE00 0000\u{FFFD}x\u{FFFD}fdp.exe\u{FFFD}\u{FFFD}.\nThanks"
        );
        let subject = render_str("Scan {name}", &ctx);
        assert!(!subject.chars().any(is_unsafe_in_letter), "{subject:?}");
        for c in [
            '\u{200E}', '\u{200F}', '\u{061C}', '\u{202A}', '\u{2066}', '\u{2069}', '\u{2029}',
            '\0', '\t',
        ] {
            assert_eq!(
                clean_value(&format!("a{c}b"), Place::Text),
                "a\u{FFFD}b",
                "{c:?}"
            );
        }
        // What a person names a file with stays: accents, emoji with joiners, other scripts.
        for ok in ["Rechnung ü.pdf", "👩‍💻 notes.txt", "فاتورة.pdf", "請求書.pdf"]
        {
            assert_eq!(clean_value(ok, Place::Text), ok);
        }
    }

    /// Trial 4's M14: `{names}` lists a batch's files in name order, numbers as numbers,
    /// whatever order they settled in ("c.txt, a.txt" before).
    #[test]
    fn names_are_listed_in_name_order() {
        let files = vec![
            f("c.txt", 1),
            f("scan 10.pdf", 1),
            f("A.txt", 1),
            f("scan 2.pdf", 1),
            f("b.txt", 1),
        ];
        let ctx = RenderContext {
            files: &files,
            mapping: "m",
            date: "d",
        };
        assert_eq!(
            render_str("{names}", &ctx),
            "A.txt, b.txt, c.txt, scan 2.pdf, scan 10.pdf"
        );
        // Any two names have one order (a total order, so a sort is stable across runs).
        assert_eq!(name_order("a.txt", "A.txt"), std::cmp::Ordering::Greater);
        assert_eq!(name_order("x01", "x1"), std::cmp::Ordering::Less);
        assert_eq!(name_order("x1", "x1"), std::cmp::Ordering::Equal);
    }

    #[test]
    fn long_names_are_capped_at_a_char_boundary() {
        let long = format!("{}.pdf", "ü".repeat(300));
        let files: Vec<FileFacts> = (0..40).map(|i| f(&format!("{i}{long}"), 1)).collect();
        let ctx = RenderContext {
            files: &files,
            mapping: "m",
            date: "d",
        };
        let name = render_str("{name}", &ctx);
        assert_eq!(name.chars().count(), NAME_MAX);
        assert!(name.starts_with("0üü") && name.ends_with("ü…"), "{name}");
        assert_eq!(render_str("{stem}", &ctx).chars().count(), NAME_MAX);
        // {names} in a subject: whole names up to the limit, then how many more.
        let subject = render_str("{names}", &ctx);
        assert!(subject.chars().count() <= SUBJECT_NAMES_MAX, "{subject}");
        assert!(subject.ends_with(", … and 39 more"), "{subject}");
        // In a body each name is capped and all 40 are listed; past BODY_NAMES_MAX, a count.
        let body = render_body("{names}", &ctx, false);
        assert_eq!(body.matches(", ").count(), 39);
        let many: Vec<FileFacts> = (0..BODY_NAMES_MAX + 5)
            .map(|i| f(&format!("f{i}"), 1))
            .collect();
        let ctx = RenderContext {
            files: &many,
            mapping: "m",
            date: "d",
        };
        assert!(render_body("{names}", &ctx, true).ends_with(", f199, … and 5 more"));
        assert_eq!(cap("abc", 3), "abc");
        assert_eq!(cap("abcd", 3), "ab…");
    }

    /// `{names}` in a subject at its edges: a name goes in when it fits with the "… and N more"
    /// still to come (", " and 12 characters for one more), to exactly SUBJECT_NAMES_MAX.
    #[test]
    fn names_in_a_subject_fit_to_the_character() {
        let subject = |lens: &[(char, usize)]| {
            let files: Vec<FileFacts> = lens
                .iter()
                .map(|(c, n)| f(&c.to_string().repeat(*n), 1))
                .collect();
            let ctx = RenderContext {
                files: &files,
                mapping: "m",
                date: "d",
            };
            render_str("{names}", &ctx)
        };
        let (a, b, c) = ("a", "b", "c");
        // Two names filling the limit exactly: both, nothing more to say.
        assert_eq!(
            subject(&[('a', 119), ('b', 119)]),
            format!("{}, {}", a.repeat(119), b.repeat(119))
        );
        // 112 + ", " + 112 + ", … and 1 more" = 240: the second fits, the third is counted.
        assert_eq!(
            subject(&[('a', 112), ('b', 112), ('c', 50)]),
            format!("{}, {}, … and 1 more", a.repeat(112), b.repeat(112))
        );
        // One character more: the second no longer fits beside the count.
        assert_eq!(
            subject(&[('a', 113), ('b', 112), ('c', 50)]),
            format!("{}, … and 2 more", a.repeat(113))
        );
        assert_eq!(subject(&[('c', 5)]), c.repeat(5));
    }

    fn piece_text() -> impl Strategy<Value = String> {
        "[^{}]{0,8}"
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse_template(&s);
        }

        #[test]
        fn text_without_braces_renders_as_itself(s in piece_text()) {
            let files = [f("x.pdf", 1)];
            let ctx = RenderContext { files: &files, mapping: "m", date: "d" };
            prop_assert_eq!(render_str(&s, &ctx), s);
        }

        #[test]
        fn valid_templates_render_each_field(
            parts in proptest::collection::vec((piece_text(), 0usize..8), 0..6)
        ) {
            let mut t = String::new();
            let mut want = String::new();
            let files = [f("r.pdf", 1200)];
            let ctx = RenderContext { files: &files, mapping: "map", date: "2026-01-02" };
            let values = ["r.pdf", "r", "pdf", "1.2 KB", "2026-01-02", "1", "r.pdf", "map"];
            for (text, k) in &parts {
                t.push_str(text);
                want.push_str(text);
                t.push_str(&format!("{{{}}}", PLACEHOLDERS[*k]));
                want.push_str(values[*k]);
            }
            prop_assert_eq!(render_str(&t, &ctx), want);
        }

        /// Whatever the file names, a value adds no line, no unsafe character, and in HTML no
        /// markup: the letter's lines and tags are the template's alone.
        #[test]
        fn no_placeholder_value_adds_a_line_or_markup(
            names in proptest::collection::vec("\\PC{0,30}|[\\x00-\\x{a0}\\u{2028}\\u{2029}\\u{202a}-\\u{202e}\\u{2066}-\\u{2069}<>&\"' a]{0,30}|.{0,200}", 1..6),
            k in proptest::collection::vec(0usize..8, 1..6),
            mapping in ".{0,20}",
        ) {
            let files: Vec<FileFacts> = names.iter().map(|n| f(n, 7)).collect();
            let ctx = RenderContext { files: &files, mapping: &mapping, date: "2026-01-02" };
            // One line per placeholder: the template's newlines are the only ones.
            let template: String = k.iter().map(|i| format!("{{{}}}\n", PLACEHOLDERS[*i])).collect();
            for place in [Place::Subject, Place::Text, Place::Html] {
                let out = render_in(&template, &ctx, place);
                prop_assert_eq!(out.matches('\n').count(), k.len());
                let values = out.replace('\n', "");
                prop_assert!(!values.chars().any(is_unsafe_in_letter), "{:?}: {:?}", place, out);
                if place == Place::Html {
                    prop_assert!(!out.contains(['<', '>', '"', '\'']), "{}", out);
                    let unescaped = out.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "").replace("&quot;", "").replace("&#39;", "");
                    prop_assert!(!unescaped.contains('&'), "{}", out);
                }
            }
            for i in &k {
                if matches!(PLACEHOLDERS[*i], "name" | "stem" | "ext") {
                    let one = render_in(&format!("{{{}}}", PLACEHOLDERS[*i]), &ctx, Place::Text);
                    prop_assert!(one.chars().count() <= NAME_MAX);
                }
            }
        }

        #[test]
        fn every_part_fits_and_order_is_kept(
            sizes in proptest::collection::vec(0u64..5_000_000, 0..30),
            limit in 7_000_000u64..40_000_000,
        ) {
            let files: Vec<FileFacts> = sizes.iter().enumerate().map(|(i, s)| f(&format!("f{i}"), *s)).collect();
            let parts = split_batch(&files, limit, 100).unwrap_or_else(|e| panic!("{e}"));
            let mut next = 0;
            for r in &parts {
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start);
                next = r.end;
                let total: u64 = MESSAGE_OVERHEAD + 100 + files[r.clone()].iter().map(|f| encoded_attachment_size(f.size, &f.name)).sum::<u64>();
                prop_assert!(total <= limit);
            }
            prop_assert_eq!(next, files.len());
        }
    }
}
