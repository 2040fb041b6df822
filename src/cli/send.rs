//! `outbox send FILE (--message ID | --event ID)`: attach one file now, with a progress bar naming
//! the file and the item on a terminal (plain lines otherwise); prints the attachment id on stdout
//! and a sentence on stderr. Honours `if_exists` (`--if-exists`, else the mapping that targets the
//! item, else `skip`); Ctrl-C deletes the upload session and exits 130. Does not touch the ledger.

use super::{hints, IfExistsArg, SendArgs};
use crate::auth::Credentials;
use crate::config::units::human_size;
use crate::config::{IfExists, ItemKind, Settings};
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
    let if_exists = if_exists_for(&settings, &item, args.if_exists);
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
    let what = format!(
        "{} ({}) to {} {}",
        file.name,
        human_size(file.size),
        hints::kind_word(kind),
        short_id(&item.id)
    );
    let journal = SendJournal::new(file.size).named(&what);
    let resume = match if_exists {
        IfExists::Skip => Resume::SkipIfPresent,
        IfExists::Attach => Resume::Fresh,
    };
    let started = Instant::now();
    let attach = client.attach(&item, &file, resume, &journal);
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
            // stdout is the id alone (scripts read it); the sentence for people goes to stderr.
            if journal.sent() {
                eprintln!(
                    "attached {what} in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            } else {
                eprintln!(
                    "{what}: already there with the same bytes (if_exists = \"skip\"); not sent again"
                );
            }
            // The id comes from the server's `Location`: printed escaped, never raw.
            println!("{}", crate::outside::printable(&id));
            Ok(ExitCode::Ok)
        }
        Some(Err(AttachError::Graph(g))) if matches!(g.status, Some(403) | Some(404)) => {
            let mut err = attach_error(AttachError::Graph(g.clone()));
            // Graph's own words, then what the second look found instead of the generic advice
            // (a sent message is not a permissions problem).
            if let Some(f) = hints::look_again(&client, &item, &g).await {
                err.message = format!("{}: {} — {}", g.code, g.message, hints::for_send(f));
            }
            Err(err)
        }
        Some(Err(e)) => Err(attach_error(e)),
        None => Err(CommandError::new(
            ExitCode::Interrupted,
            format!("interrupted: {what} was not attached (its upload session was deleted)"),
        )),
    }
}

/// `--if-exists`, else the `if_exists` of a mapping that targets the same item, else `skip`:
/// sending the same bytes under the same name to the same item twice is almost always a
/// mistake, and `skip` is what a mapping does by default. `--if-exists attach` sends anyway.
fn if_exists_for(settings: &Settings, item: &ItemRef, flag: Option<IfExistsArg>) -> IfExists {
    if let Some(f) = flag {
        return match f {
            IfExistsArg::Skip => IfExists::Skip,
            IfExistsArg::Attach => IfExists::Attach,
        };
    }
    settings
        .mappings
        .iter()
        .find(|m| {
            m.kind == item.kind && m.item_id == item.id && m.user.eq_ignore_ascii_case(&item.user)
        })
        .map(|m| m.if_exists)
        .unwrap_or(IfExists::Skip)
}

/// An item id is ~150 characters; people recognise its ends.
fn short_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 24 {
        return id.to_owned();
    }
    let head: String = chars[..10].iter().collect();
    let tail: String = chars[chars.len() - 8..].iter().collect();
    format!("{head}…{tail}")
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
    /// Whether a POST or a session was started (false when `if_exists = "skip"` found it there).
    any_progress: std::sync::atomic::AtomicBool,
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
            any_progress: Default::default(),
        }
    }

    /// Name the file and the item on the progress bar.
    fn named(self, what: &str) -> Self {
        if let Some(b) = &self.bar {
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix}\n{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                b.set_style(style);
            }
            b.set_prefix(format!("sending {what}"));
        }
        self
    }

    fn sent(&self) -> bool {
        self.any_progress.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Journal for SendJournal {
    async fn before_post(&self) -> Result<(), String> {
        self.any_progress
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn before_session(&self) -> Result<(), String> {
        self.any_progress
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

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
        self.any_progress
            .store(true, std::sync::atomic::Ordering::Relaxed);
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
