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

/// Fill a parsed template. For several files `{name}`, `{stem}` and `{ext}` are the first
/// file's; `{size}` is the total; `{count}` the number of files; `{names}` every name, joined
/// by ", ".
pub fn render(pieces: &[Piece], ctx: &RenderContext) -> String {
    let first = ctx.files.first();
    let name = first.map(|f| f.name.as_str()).unwrap_or("");
    let (stem, ext) = stem_and_ext(name);
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Field("name") => out.push_str(name),
            Piece::Field("stem") => out.push_str(stem),
            Piece::Field("ext") => out.push_str(ext),
            Piece::Field("size") => {
                out.push_str(&human_size(ctx.files.iter().map(|f| f.size).sum()))
            }
            Piece::Field("date") => out.push_str(ctx.date),
            Piece::Field("count") => out.push_str(&ctx.files.len().to_string()),
            Piece::Field("names") => out.push_str(
                &ctx.files
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Piece::Field("mapping") => out.push_str(ctx.mapping),
            Piece::Field(_) => {}
        }
    }
    out
}

/// Parse and fill in one go (a template already validated by the config cannot fail; one that
/// was not is rendered as written).
pub fn render_str(template: &str, ctx: &RenderContext) -> String {
    match parse_template(template) {
        Ok(p) => render(&p, ctx),
        Err(_) => template.to_string(),
    }
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
        let files = [f("scan 01.pdf", 1500), f("b.txt", 500)];
        let ctx = RenderContext {
            files: &files,
            mapping: "invoices",
            date: "2026-11-29",
        };
        let p = parse_template("{name}|{stem}|{ext}|{size}|{date}|{count}|{names}|{mapping}|{{x}}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            render(&p, &ctx),
            "scan 01.pdf|scan 01|pdf|2.0 KB|2026-11-29|2|scan 01.pdf, b.txt|invoices|{x}"
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
