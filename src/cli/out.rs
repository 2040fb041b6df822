//! Writing to stdout and stderr without `println!`'s panic: a reader that has gone (`outbox
//! status | head`) ends the command quietly with exit 0, as a pipeline expects; any other write
//! error on stdout is said once on stderr, exit 1. Use the `outln!`/`out!`/`errln!` macros of
//! `cli/mod.rs`. What they write names the `--config` the command was given in every
//! `` `outbox COMMAND` `` hint ([`hint`]), so a hint pasted as is works on that config.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The `--config` this process was given, if any (set once by `main`).
static CONFIG_FLAG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Remember `--config PATH` for [`hint`].
pub fn set_config_flag(path: Option<&Path>) {
    if let Some(p) = path {
        let _ = CONFIG_FLAG.set(p.to_path_buf());
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

/// Write to stdout; on a closed pipe, exit 0 at once (nothing left to say to anyone).
pub fn stdout(args: std::fmt::Arguments<'_>) {
    stdout_raw(format_args!("{}", hint(&args.to_string())));
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

/// Write to stderr; if that fails too there is no one left to tell, so nothing happens.
pub fn stderr(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr()
        .lock()
        .write_all(hint(&args.to_string()).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

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
