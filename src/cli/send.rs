//! `outbox send FILE (--message ID | --event ID)`: attach one file now, with a progress bar naming
//! the file and the item on a terminal (plain lines otherwise); prints the attachment id on stdout
//! and a sentence on stderr. Honours `if_exists` (`--if-exists`, else the mapping that targets the
//! item, else `skip`); a wait (throttled, Graph out of reach, a look after a lost answer) says
//! what it waits for and until when; Ctrl-C deletes the upload session and exits 130, saying what
//! was in flight (nothing, a session, or a request that may have attached it). Does not touch the ledger:
//! the core's state machine drives the upload with URLs kept in memory (`agent::oneshot`).

use super::{IfExistsArg, SendArgs};
use crate::agent::oneshot::{attach_file, OneShotError};
use crate::auth::Credentials;
use crate::cli::exit::{CommandError, ExitCode};
use crate::config::units::human_size;
use crate::config::{IfExists, ItemKind, Settings};
use crate::core::model::Target;
use crate::graph::hints;
use crate::graph::{GraphClient, ItemRef};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub async fn run(settings: Settings, args: SendArgs) -> Result<ExitCode, CommandError> {
    // Graph requires a name (it answered 400 "The property 'name' is required", exit 1).
    if args.name.as_deref() == Some("") {
        return Err(CommandError::new(
            ExitCode::Usage,
            "--name is empty: an attachment needs a name; give one (`--name report.pdf`), or leave --name out to attach the file under its own name",
        ));
    }
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
    let meta = std::fs::metadata(&args.file).map_err(|e| {
        CommandError::new(
            ExitCode::Failed,
            format!("cannot read {}: {e}", crate::outside::path(&args.file)),
        )
    })?;
    let total = meta.len();
    let name = args.name.clone().unwrap_or_else(|| {
        args.file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into())
    });
    let client = Arc::new(
        GraphClient::new(&settings, Credentials::from_settings_in(&settings))
            .map_err(|e| CommandError::new(ExitCode::Config, e))?,
    );
    // As it is on the item (a control character is `�` there: `attachment_name`), and printable:
    // a name given with a newline printed raw added a line to this command's own output.
    let shown = crate::core::mail::attachment_name(&name, false);
    let what = format!(
        "{} ({}) to {} {}",
        crate::outside::printable(&shown),
        human_size(total),
        hints::kind_word(kind),
        short_id(&item.id)
    );
    let bar = Arc::new(Progress::new(total).named(&what));
    let b = bar.clone();
    let w = bar.clone();
    let base = settings.graph.base_url.clone();
    let target = Target {
        user: item.user.clone(),
        kind,
        item_id: item.id.clone(),
    };
    let started = Instant::now();
    let outcome = attach_file(
        &settings,
        client.clone(),
        target,
        &args.file,
        args.name,
        match if_exists {
            IfExists::Skip => crate::core::model::IfExists::Skip,
            IfExists::Attach => crate::core::model::IfExists::Attach,
        },
        Some(Arc::new(move |n| b.set(n))),
        Some(Arc::new(move |wait: crate::agent::oneshot::Waiting| {
            w.say(&wait.text(&|m| crate::cli::out::cannot_reach(&base, m)))
        })),
    )
    .await;
    bar.finish();
    match outcome {
        Ok(a) => {
            // stdout is the id alone (scripts read it); the sentence for people goes to stderr.
            if a.sent {
                errln!(
                    "attached {what} in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            } else {
                errln!(
                    "{what}: already there with the same bytes (if_exists = \"skip\"); not sent again"
                );
            }
            // The id comes from the server's `Location`: printed escaped, never raw.
            outln!("{}", crate::outside::printable(&a.attachment_id));
            Ok(ExitCode::Ok)
        }
        Err(OneShotError::Failed(f)) if hints::graph_error_of(&f).is_some() => {
            let mut err = CommandError::new(ExitCode::Failed, f.message.clone());
            // What a second look finds instead of the generic advice (a sent message is not a
            // permissions problem, an id of the other kind is not a missing item).
            if let Some(g) = hints::graph_error_of(&f) {
                if let Some(found) = hints::look_again(&client, &item, &g).await {
                    err.message = format!("{}: {} — {}", g.code, g.message, hints::for_send(found));
                }
            }
            Err(err)
        }
        Err(OneShotError::SendInterrupted(left)) => Err(CommandError::new(
            ExitCode::Interrupted,
            format!("{}: {what} {}", super::mail::interrupted(), left.text()),
        )),
        Err(OneShotError::Failed(f)) if crate::cli::out::no_answer(&f.code) => {
            Err(CommandError::new(
                ExitCode::Failed,
                crate::cli::out::cannot_reach(&settings.graph.base_url, &f.message),
            ))
        }
        Err(e) => Err(attach_error(e)),
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
pub fn attach_error(e: OneShotError) -> CommandError {
    match e {
        OneShotError::SignIn(_) => CommandError::new(ExitCode::SignIn, e.to_string()),
        OneShotError::Interrupted | OneShotError::SendInterrupted(_) => {
            CommandError::new(ExitCode::Interrupted, e.to_string())
        }
        other => CommandError::new(ExitCode::Failed, other.to_string()),
    }
}

pub(super) struct Progress {
    bar: Option<ProgressBar>,
    plain: Mutex<(Instant, u64)>,
    total: u64,
}

impl Progress {
    pub(super) fn new(total: u64) -> Self {
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

    /// Name the file and the item on the progress bar.
    pub(super) fn named(self, what: &str) -> Self {
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

    pub(super) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    pub(super) fn set(&self, committed: u64) {
        match &self.bar {
            Some(b) => b.set_position(committed),
            None => {
                let mut p = self.plain.lock().unwrap_or_else(|p| p.into_inner());
                // A line at most every 2 s, and at the end.
                if committed > p.1
                    && (p.0.elapsed() >= Duration::from_secs(2) || committed == self.total)
                {
                    errln!("sent {committed} of {} bytes", self.total);
                    *p = (Instant::now(), committed);
                }
            }
        }
    }

    /// What it waits for now (the sending limit, a confirmation in Sent Items): above the bar on
    /// a terminal, a line of its own otherwise.
    pub(super) fn say(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => errln!("{text}"),
        }
    }
}
