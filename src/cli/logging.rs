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
        // A person at a terminal reads the time of day and what happened, in words: not the
        // date to the microsecond, the Rust module that logged it, nor `key=value` fields (a
        // file or the journal keeps all three); wrapped to the terminal by `out::stderr`.
        LogFormat::Text if std::io::stderr().is_terminal() => builder
            .with_writer(|| HintedLine(Vec::new()))
            .with_ansi(ansi)
            .event_format(Person)
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

/// A log line as a person at a terminal reads it: `08:29:11Z` (the time of day, UTC, as
/// `status` gives times; dimmed where colour is on), `warning:` or `error:` (nothing for news), the file it is about,
/// what happened, and the other fields in words: `(entry 3f2a…, code ErrorItemNotFound)`.
struct Person;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Person
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = *event.metadata().level();
        let paint = w.has_ansi_escapes();
        writeln!(w, "{}", person_line(time_of_day(), level, &fields, paint))
    }
}

/// `08:29:11Z`: the time of day, UTC.
fn time_of_day() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    format!(
        "{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// An event's message and its other fields, in the order given.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(&'static str, String)>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field.name(), value.to_owned());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        // A flag reads as its name when set, and not at all when not.
        if value {
            self.put(field.name(), String::new());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.put(field.name(), format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, name: &'static str, value: String) {
        if name == "message" {
            self.message = value;
        } else {
            self.rest.push((name, value));
        }
    }
}

/// The words of one line (see [`Person`]): the file or path first, as a compiler names the file
/// a message is about, the rest after what happened, `_` in a name read as a space.
fn person_line(time: String, level: tracing::Level, fields: &Fields, paint: bool) -> String {
    // The time dimmed, as tracing's own lines have it: what happened stands out.
    let mut line = if paint {
        format!("\x1b[2m{time}\x1b[0m")
    } else {
        time
    };
    let label = match level {
        tracing::Level::ERROR => Some(("error:", "\x1b[31m")),
        tracing::Level::WARN => Some(("warning:", "\x1b[33m")),
        tracing::Level::INFO => None,
        tracing::Level::DEBUG => Some(("debug:", "\x1b[2m")),
        tracing::Level::TRACE => Some(("trace:", "\x1b[2m")),
    };
    if let Some((word, code)) = label {
        line.push(' ');
        line.push_str(&if paint {
            format!("{code}{word}\x1b[0m")
        } else {
            word.to_owned()
        });
    }
    let subject = ["file", "path"];
    for (_, v) in fields.rest.iter().filter(|(k, _)| subject.contains(k)) {
        line.push(' ');
        line.push_str(v);
        line.push(':');
    }
    line.push(' ');
    line.push_str(&fields.message);
    let rest: Vec<String> = fields
        .rest
        .iter()
        .filter(|(k, _)| !subject.contains(k))
        .map(|(k, v)| {
            let name = k.replace('_', " ");
            if v.is_empty() {
                name
            } else {
                format!("{name} {v}")
            }
        })
        .collect();
    if !rest.is_empty() {
        line.push_str(&format!(" ({})", rest.join(", ")));
    }
    line
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
    use super::{colour, person_line, Fields};
    use std::ffi::OsStr;

    #[test]
    fn a_line_at_a_terminal_is_words_not_key_value_fields() {
        let fields = Fields {
            message: "attached".into(),
            rest: vec![
                ("file", "/drop/a b.pdf".into()),
                ("entry", "3f2a".into()),
                ("once", String::new()),
                ("max_messages", "200/1d".into()),
            ],
        };
        assert_eq!(
            person_line("08:29:11Z".into(), tracing::Level::INFO, &fields, false),
            "08:29:11Z /drop/a b.pdf: attached (entry 3f2a, once, max messages 200/1d)"
        );
        let alone = Fields {
            message: "watching".into(),
            rest: vec![],
        };
        assert_eq!(
            person_line("08:29:11Z".into(), tracing::Level::WARN, &alone, false),
            "08:29:11Z warning: watching"
        );
        assert_eq!(
            person_line("08:29:11Z".into(), tracing::Level::ERROR, &alone, true),
            "\x1b[2m08:29:11Z\x1b[0m \x1b[31merror:\x1b[0m watching"
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
