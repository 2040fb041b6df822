//! `outbox send FILE (--message ID | --event ID)`: attach one file now, with a progress bar on a
//! terminal (plain lines otherwise), and print the attachment id. Does not touch the ledger.

use super::SendArgs;
use crate::auth::Credentials;
use crate::config::{ItemKind, Settings};
use crate::exit::{CommandError, ExitCode};
use crate::graph::{AttachError, FileToSend, GraphClient, ItemRef, Journal, Resume};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
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
    let item = ItemRef::new(args.user, kind, id);
    let file = FileToSend::from_path(args.file.clone(), args.name)
        .await
        .map_err(|e| {
            CommandError::new(
                ExitCode::Failed,
                format!("cannot read {}: {e}", args.file.display()),
            )
        })?;
    let client = GraphClient::new(&settings, Credentials::from_settings_in(&settings))
        .map_err(|e| CommandError::new(ExitCode::Config, e))?;
    let journal = SendJournal::new(file.size);
    let attach = client.attach(&item, &file, Resume::Fresh, &journal);
    let outcome = tokio::select! {
        r = attach => Some(r),
        _ = crate::cli::shutdown_signal() => None,
    };
    journal.finish();
    if !matches!(outcome, Some(Ok(_))) {
        // A session kept open across a transient failure (for a later attempt to resume), or
        // cut off by the interrupt, has no later attempt here: delete it (best effort).
        let url = journal
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(url) = url {
            let _ = client.delete_session(&item.user, &url).await;
        }
    }
    match outcome {
        Some(Ok(id)) => {
            // The id comes from the server's `Location`: printed escaped, never raw.
            println!("{}", crate::outside::printable(&id));
            Ok(ExitCode::Ok)
        }
        Some(Err(e)) => Err(attach_error(e)),
        None => Err(CommandError::new(
            ExitCode::Failed,
            "interrupted: nothing was attached (the upload session was deleted)",
        )),
    }
}

/// Map an attach failure to the exit code and a sentence for the user.
pub fn attach_error(e: AttachError) -> CommandError {
    match e {
        AttachError::Auth(a) => CommandError::new(ExitCode::SignIn, a.to_string()),
        AttachError::Graph(g) if g.class == crate::graph::ErrorClass::SignIn => {
            CommandError::new(ExitCode::SignIn, g.to_string())
        }
        other => CommandError::new(ExitCode::Failed, other.to_string()),
    }
}

struct SendJournal {
    bar: Option<ProgressBar>,
    plain: Mutex<(Instant, u64)>,
    total: u64,
    session: Mutex<Option<String>>,
}

impl SendJournal {
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
        SendJournal {
            bar,
            plain: Mutex::new((Instant::now(), 0)),
            total,
            session: Mutex::new(None),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Journal for SendJournal {
    async fn session_created(
        &self,
        upload_url: &str,
        _expires: Option<&str>,
    ) -> Result<(), String> {
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(upload_url.to_string());
        Ok(())
    }

    async fn session_gone(&self) -> Result<(), String> {
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    fn progress(&self, committed: u64) {
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
