//! Logging to stderr through `tracing`; `RUST_LOG` wins over `-v`/`-q`. Colour only when stderr
//! is a terminal and `NO_COLOR` is unset or empty (never escape codes in a file or the journal).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(verbose: u8, quiet: bool, format: LogFormat) {
    let default = match (quiet, verbose) {
        (true, _) => "outbox=error",
        (false, 0) => "outbox=info",
        (false, 1) => "outbox=debug",
        (false, _) => "outbox=trace",
    };
    init_with(default, format);
}

/// No log lines unless `RUST_LOG` asks (the demo says what happens itself).
pub fn init_silent(format: LogFormat) {
    init_with("off", format);
}

fn init_with(default: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// <https://no-color.org>: a `NO_COLOR` that is present and not empty turns colour off.
pub fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
