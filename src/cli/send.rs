//! `outbox send FILE (--message ID | --event ID)`: attach one file now, with a progress bar on a
//! terminal (plain lines otherwise), and print the attachment id. Does not touch the ledger: the
//! agent's state machine drives the upload with URLs kept in memory (`agent::oneshot`).

use super::SendArgs;
use crate::agent::oneshot::{attach_file, OneShotError};
use crate::auth::Credentials;
use crate::config::{ItemKind, Settings};
use crate::core::model::Target;
use crate::exit::{CommandError, ExitCode};
use crate::graph::GraphClient;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub async fn run(settings: Settings, args: SendArgs) -> Result<ExitCode, CommandError> {
    let (kind, id) = match (args.message, args.event) {
        (Some(m), None) => (ItemKind::Message, m),
        (None, Some(e)) => (ItemKind::Event, e),
        _ => {
            return Err(CommandError::new(
                ExitCode::Usage,
                "give exactly one of --message ID and --event ID",
            ))
        }
    };
    let target = Target {
        user: args.user,
        kind,
        item_id: id,
    };
    let total = std::fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
    let client = Arc::new(
        GraphClient::new(&settings, Credentials::from_settings_in(&settings))
            .map_err(|e| CommandError::new(ExitCode::Config, e))?,
    );
    let bar = Arc::new(Progress::new(total));
    let b = bar.clone();
    let outcome = attach_file(
        &settings,
        client,
        target,
        &args.file,
        args.name,
        Some(Arc::new(move |n| b.set(n))),
    )
    .await;
    bar.finish();
    match outcome {
        Ok(id) => {
            // The id comes from the server's `Location`: printed escaped, never raw.
            println!("{}", crate::outside::printable(&id));
            Ok(ExitCode::Ok)
        }
        Err(e) => Err(attach_error(e)),
    }
}

/// Map an attach failure to the exit code and a sentence for the user.
pub fn attach_error(e: OneShotError) -> CommandError {
    match e {
        OneShotError::SignIn(_) => CommandError::new(ExitCode::SignIn, e.to_string()),
        other => CommandError::new(ExitCode::Failed, other.to_string()),
    }
}

struct Progress {
    bar: Option<ProgressBar>,
    plain: Mutex<(Instant, u64)>,
    total: u64,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                b.set_style(style);
            }
            b
        });
        Progress {
            bar,
            plain: Mutex::new((Instant::now(), 0)),
            total,
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn set(&self, committed: u64) {
        match &self.bar {
            Some(b) => b.set_position(committed),
            None => {
                let mut p = self.plain.lock().unwrap_or_else(|p| p.into_inner());
                // A line at most every 2 s, and at the end.
                if committed > p.1
                    && (p.0.elapsed() >= Duration::from_secs(2) || committed == self.total)
                {
                    eprintln!("sent {committed} of {} bytes", self.total);
                    *p = (Instant::now(), committed);
                }
            }
        }
    }
}
