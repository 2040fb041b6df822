//! Writing to stdout and stderr without `println!`'s panic: a reader that has gone (`outbox
//! status | head`) ends the command quietly with exit 0, as a pipeline expects; any other write
//! error on stdout is said once on stderr, exit 1. Use the `outln!`/`out!`/`errln!` macros of
//! `cli/mod.rs`. What they write names the `--config` the command was given in every
//! `` `outbox COMMAND` `` hint ([`hint`]), so a hint pasted as is works on that config.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The `--config` this process was given, if any (set once by `main`).
static CONFIG_FLAG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Remember `--config PATH` for [`hint`], made absolute: a hint pasted in another directory
/// (or read in the journal) names the same file.
pub fn set_config_flag(path: Option<&Path>) {
    if let Some(p) = path {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let _ = CONFIG_FLAG.set(p);
    }
}

/// Whether this process was given `--config`.
pub fn config_flag_given() -> bool {
    CONFIG_FLAG.get().is_some()
}

/// The commands that read the config: a hint naming one gets `--config PATH`.
const READS_CONFIG: [&str; 16] = [
    "run", "send", "mail", "status", "retry", "cancel", "pause", "resume", "login", "logout",
    "whoami", "check", "verify", "items", "init", "service",
];

/// Whether what goes to stdout gets colour: the one rule of every command (a terminal, and no
/// `NO_COLOR`; `status`, `check`, `verify`).
pub fn stdout_colour() -> bool {
    use std::io::IsTerminal;
    super::logging::colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// A verdict's colour: green for good, yellow for a warning or a doubt, red for a problem.
#[derive(Debug, Clone, Copy)]
pub enum Tone {
    Good,
    Doubt,
    Bad,
}

/// `text` in its tone's colour when `on` (padding belongs inside `text`, so columns line up).
pub fn paint(text: &str, tone: Tone, on: bool) -> String {
    if !on {
        return text.to_owned();
    }
    let code = match tone {
        Tone::Good => "\x1b[32m",
        Tone::Doubt => "\x1b[33m",
        Tone::Bad => "\x1b[31m",
    };
    format!("{code}{text}\x1b[0m")
}

/// Codes of ours for a request that got no answer (`graph::GraphError::transport`).
const NO_ANSWER: [&str; 3] = ["ConnectionFailed", "Timeout", "ConnectionDropped"];

/// Whether an error `code` is one of a request that got no answer from Graph.
pub fn no_answer(code: &str) -> bool {
    NO_ANSWER.contains(&code)
}

/// Graph out of reach, in the words every command uses (`check`, `items`, `send`): "cannot
/// reach Graph at BASE_URL: CAUSE — ADVICE", from a `GraphError`'s text (`CODE: ORIGIN: CAUSE —
/// ADVICE`): the code goes, and the origin when it is the base URL's.
pub fn cannot_reach(base_url: &url::Url, text: &str) -> String {
    let base_url = base_url.as_str().trim_end_matches('/');
    let rest = NO_ANSWER
        .iter()
        .find_map(|c| text.strip_prefix(c).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or(text);
    let rest = match rest.split_once(": ") {
        Some((origin, cause)) if base_url.starts_with(origin) && origin.contains("://") => cause,
        _ => rest,
    };
    format!("cannot reach Graph at {base_url}: {rest}")
}

/// `text` with `--config PATH` put into each `` `outbox COMMAND `` of a command that reads the
/// config, when this process was given `--config` (with `$OUTBOX_CONFIG` or the default path the
/// hint works as it is).
pub fn hint(text: &str) -> String {
    match CONFIG_FLAG.get() {
        Some(p) => with_config(text, p),
        None => text.to_string(),
    }
}

/// `s` (a path, an id) as one word of a command a person pastes into their shell: a POSIX
/// shell's quoting on Unix. On Windows, where `'` quotes nothing in cmd.exe, a word that needs
/// quoting goes in `"` (cmd.exe and PowerShell alike; a Windows path cannot hold `"`), or in
/// PowerShell's `'` (`''` for a quote) when it holds `$` or `` ` ``, which PowerShell expands
/// inside `"`.
pub fn command_word(s: &str) -> String {
    quoted_for(s, cfg!(windows))
}

fn quoted_for(s: &str, windows: bool) -> String {
    if windows {
        let plain = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./\\=:@+,".contains(c));
        if plain {
            s.to_string()
        } else if s.contains(['$', '`', '"']) {
            format!("'{}'", s.replace('\'', "''"))
        } else {
            format!("\"{s}\"")
        }
    } else {
        crate::service::shell_word(s)
    }
}

fn with_config(text: &str, path: &Path) -> String {
    let flag = format!(
        "`outbox --config {} ",
        command_word(&path.to_string_lossy())
    );
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("`outbox ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "`outbox ".len()..];
        let word_end = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        let next = after[word_end..].chars().next();
        if READS_CONFIG.contains(&&after[..word_end]) && matches!(next, Some(' ' | '`')) {
            out.push_str(&flag);
        } else {
            out.push_str("`outbox ");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Write to stdout; on a closed pipe, exit 0 at once (nothing left to say to anyone). At a
/// terminal, what a person reads: [`for_person`].
pub fn stdout(args: std::fmt::Arguments<'_>) {
    let text = hint(&args.to_string());
    match width_of(&std::io::stdout()) {
        Some(w) => stdout_raw(format_args!("{}", for_person(&text, w))),
        None => stdout_raw(format_args!("{text}")),
    }
}

/// As [`stdout`], never wrapped: text pasted or read by a program (`verbatimln!`).
pub fn verbatim(args: std::fmt::Arguments<'_>) {
    stdout_raw(format_args!("{}", hint(&args.to_string())));
}

/// Never wider than help's 100 columns: the same text on a wide screen, readable.
const MAX_WIDTH: usize = 100;

/// The width to fit what a person reads to, when `stream` is a terminal: its own width (else
/// `COLUMNS`, else 80), at most 100 (`MAX_WIDTH`). `None` off a terminal: a pipe, a file or the
/// journal gets each line whole, as a script reading it expects.
pub fn width_of<T: std::io::IsTerminal + TerminalSized>(stream: &T) -> Option<usize> {
    if !stream.is_terminal() {
        return None;
    }
    let columns = stream
        .columns()
        .or_else(|| std::env::var("COLUMNS").ok()?.trim().parse().ok())
        .filter(|w| *w > 0)
        .unwrap_or(80);
    Some(columns.min(MAX_WIDTH))
}

/// A stream whose terminal has a width.
pub trait TerminalSized {
    fn columns(&self) -> Option<usize>;
}

#[cfg(unix)]
impl<T: std::os::fd::AsFd> TerminalSized for T {
    fn columns(&self) -> Option<usize> {
        terminal_size::terminal_size_of(self).map(|(w, _)| usize::from(w.0))
    }
}

#[cfg(windows)]
impl<T: std::os::windows::io::AsHandle> TerminalSized for T {
    fn columns(&self) -> Option<usize> {
        terminal_size::terminal_size_of(self).map(|(w, _)| usize::from(w.0))
    }
}

/// The one formatter of what a person reads at a terminal (what every command prints, its
/// errors and hints, and `run`'s log lines): each line wider than `width` is wrapped at a space
/// and continued two spaces in. It is never broken inside a `` `hint` ``, a `'quoted word'` (a
/// `--config` path with a space) or a path with a space shown through `outside::path`
/// ([`crate::outside::spaced_paths`]), so what is copied from it and pasted still runs; a word
/// (a path without a space) longer than the line stays whole. Escape codes (colour) take no
/// width.
pub fn for_person(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        wrap_line(line, width, &mut out);
    }
    out
}

/// Where `line` may break: the byte offsets of its spaces outside hints, quoted words and paths
/// with a space (and past its leading spaces), each with the visible column it is at.
fn breaks(line: &str) -> Vec<(usize, usize)> {
    // The paths with a space shown through `outside::path` (else the folder names between two
    // of their slashes could break).
    let mut inside: Vec<(usize, usize)> = Vec::new();
    for p in crate::outside::spaced_paths() {
        inside.extend(
            line.match_indices(p.as_str())
                .map(|(i, m)| (i, i + m.len())),
        );
    }
    let mut out = Vec::new();
    let (mut tick, mut quote, mut escape, mut started) = (false, false, false, false);
    let mut col = 0;
    let mut prev: Option<char> = None;
    for (i, c) in line.char_indices() {
        if escape {
            escape = c != 'm';
            continue;
        }
        match c {
            '\x1b' => {
                escape = true;
                continue;
            }
            '`' if !quote => tick = !tick,
            // A quoted word opens at a word's start and closes at its end (an apostrophe in
            // a word, "mapping's", does neither).
            '\'' if !tick && !quote && prev.is_none_or(|p| p == ' ' || p == '=') => quote = true,
            '\'' if quote
                && line[i + 1..]
                    .chars()
                    .next()
                    .is_none_or(|n| !n.is_alphanumeric()) =>
            {
                quote = false
            }
            ' ' if started && !tick && !quote => out.push((i, col)),
            _ => {}
        }
        started |= c != ' ';
        col += 1;
        prev = Some(c);
    }
    out.retain(|(at, _)| !inside.iter().any(|(from, to)| from < at && at < to));
    out
}

/// Columns `text` takes on a terminal (escape codes take none).
fn visible_width(text: &str) -> usize {
    let mut n = 0;
    let mut escape = false;
    for c in text.chars() {
        if escape {
            escape = c != 'm';
        } else if c == '\x1b' {
            escape = true;
        } else {
            n += 1;
        }
    }
    n
}

fn wrap_line(line: &str, width: usize, out: &mut String) {
    if visible_width(line) <= width {
        out.push_str(line);
        return;
    }
    let indent = 2;
    let mut rest = line;
    let mut limit = width;
    loop {
        if visible_width(rest) <= limit {
            out.push_str(rest);
            return;
        }
        // The last break that fits; if none does, the first (a long word stays whole).
        let bs = breaks(rest);
        let Some(&(at, _)) = bs
            .iter()
            .rev()
            .find(|(_, col)| *col <= limit)
            .or_else(|| bs.first())
        else {
            out.push_str(rest);
            return;
        };
        out.push_str(rest[..at].trim_end());
        out.push('\n');
        out.push_str(&" ".repeat(indent));
        rest = rest[at..].trim_start();
        limit = width.saturating_sub(indent).max(1);
    }
}

/// As [`stdout`], the text as it is: JSON documents (a `--config` put into a hint could need
/// escaping there), and hints are data in them.
pub fn stdout_raw(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        gone(&e);
    }
}

/// After a failed write to stdout: a closed pipe ends the process quietly (exit 0); anything
/// else (a full disk) is said on stderr, exit 1.
pub fn gone(e: &std::io::Error) -> ! {
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        stderr(format_args!(
            "outbox: cannot write to standard output: {e}\n"
        ));
        std::process::exit(crate::cli::exit::ExitCode::Failed as i32);
    }
    std::process::exit(0)
}

/// Write to stderr; if that fails too there is no one left to tell, so nothing happens. At a
/// terminal, what a person reads: [`for_person`].
pub fn stderr(args: std::fmt::Arguments<'_>) {
    let text = hint(&args.to_string());
    let text = match width_of(&std::io::stderr()) {
        Some(w) => for_person(&text, w),
        None => text,
    };
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_wraps_at_spaces_never_in_a_hint_a_quoted_word_or_a_path() {
        // As the entry's path is shown: through `outside::path`.
        crate::outside::path(Path::new("/home/u/My Drop/a b.pdf"));
        let text = "entry 1f2e is failed, and its file is no longer at /home/u/My Drop/a b.pdf (deleted, or moved to the mapping's failed_dir): put it back there, then `outbox --config '/c/my conf.toml' retry 1f2e`; or `outbox cancel 1f2e` to clear the entry";
        let got = for_person(text, 60);
        for line in got.lines() {
            assert!(
                visible_width(line) <= 60 || !line.trim().contains(' '),
                "{got}"
            );
        }
        // Joined again, the same words; each hint and the path on one line.
        let joined: Vec<&str> = got.split_whitespace().collect();
        assert_eq!(joined, text.split_whitespace().collect::<Vec<_>>());
        for whole in [
            "/home/u/My Drop/a b.pdf",
            "`outbox --config '/c/my conf.toml' retry 1f2e`;",
            "`outbox cancel 1f2e`",
        ] {
            assert!(got.lines().any(|l| l.contains(whole)), "{whole}:\n{got}");
        }
        assert!(got.lines().skip(1).all(|l| l.starts_with("  ")), "{got}");
        // Two paths with spaces shown through `outside::path`: each whole.
        let a = crate::outside::path(Path::new("/srv/scans in/to do/a b.pdf"));
        let b = crate::outside::path(Path::new("/srv/scans in/sent ok/a b.pdf"));
        let got = for_person(&format!("moved {a} to {b} as asked, and nothing else"), 30);
        assert!(got.lines().any(|l| l.contains(&a)), "{got}");
        assert!(got.lines().any(|l| l.contains(&b)), "{got}");
        // Short lines and lines off a terminal's width stay as they are.
        assert_eq!(for_person("a b\nc", 60), "a b\nc");
    }

    #[test]
    fn colour_takes_no_width_and_a_long_word_stays_whole() {
        let row = "\x1b[31mfailed\x1b[0m  3f2a  drop  a.pdf  Graph refused the file: the item is gone (ErrorItemNotFound)";
        let got = for_person(row, 60);
        let mut lines = got.lines();
        let first = lines.next().unwrap();
        assert!(visible_width(first) <= 60 && first.len() > 60, "{got}");
        for l in lines {
            assert!(l.starts_with("  ") && visible_width(l) <= 60, "{got}");
        }
        // A word longer than the line stays whole.
        let long = format!("at /{} now", "x".repeat(80));
        assert_eq!(
            for_person(&long, 40),
            format!("at\n  /{}\n  now", "x".repeat(80))
        );
    }

    #[test]
    fn a_hint_names_the_config_only_for_commands_that_read_it() {
        let p = Path::new("/c/my conf.toml");
        let q = command_word("/c/my conf.toml");
        assert_eq!(
            with_config("run `outbox login`, then `outbox retry ID`; `outbox sandbox --help`", p),
            format!("run `outbox --config {q} login`, then `outbox --config {q} retry ID`; `outbox sandbox --help`")
        );
        assert_eq!(with_config("`outbox logins`", p), "`outbox logins`");
    }

    #[test]
    fn a_command_word_is_quoted_for_the_platforms_shell() {
        // Unix: POSIX quoting.
        assert_eq!(quoted_for("/c/my conf.toml", false), "'/c/my conf.toml'");
        assert_eq!(quoted_for("/c/it's", false), "'/c/it'\\''s'");
        // Windows: a plain path bare (backslash and drive colon included), else in double
        // quotes (cmd.exe has no single quotes), or PowerShell's single quotes around `$`.
        assert_eq!(
            quoted_for(r"C:\Users\a\conf.toml", true),
            r"C:\Users\a\conf.toml"
        );
        assert_eq!(
            quoted_for(r"C:\Users\a b\it's.toml", true),
            r#""C:\Users\a b\it's.toml""#
        );
        assert_eq!(
            quoted_for(r"C:\Users\$x\it's.toml", true),
            r"'C:\Users\$x\it''s.toml'"
        );
    }
}
