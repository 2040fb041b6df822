//! Logging to stderr through `tracing`; `RUST_LOG` wins over `-v`/`-q`.

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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
