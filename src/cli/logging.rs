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
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        // A person at a terminal reads the time of day and what happened: not the date to the
        // microsecond, nor the Rust module that logged it (a file or the journal keeps both).
        LogFormat::Text if std::io::stderr().is_terminal() => builder
            .with_writer(|| HintedLine(Vec::new()))
            .with_ansi(ansi)
            .with_target(false)
            .with_timer(TimeOfDay)
            .try_init(),
        // A text line's hints name the `--config` given, as every other line (`out::hint`).
        LogFormat::Text if super::out::config_flag_given() => builder
            .with_writer(|| HintedLine(Vec::new()))
            .with_ansi(ansi)
            .try_init(),
        LogFormat::Text => builder
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .try_init(),
        LogFormat::Json => builder
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .json()
            .try_init(),
    };
}

/// `08:29:11Z`: the time of day (UTC, as `status` gives times) of a line at a terminal.
struct TimeOfDay;

impl tracing_subscriber::fmt::time::FormatTime for TimeOfDay {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            % 86_400;
        write!(
            w,
            "{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}

/// One log line, gathered, then written to stderr with its hints naming the `--config` given.
struct HintedLine(Vec<u8>);

impl std::io::Write for HintedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for HintedLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            super::out::stderr(format_args!("{}", String::from_utf8_lossy(&self.0)));
        }
    }
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
