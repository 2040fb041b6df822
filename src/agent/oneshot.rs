//! Attach one file now, without the ledger (`outbox send`, and anything else that attaches a
//! file on the spot): the same state machine as the agent, fed one pre-hashed record, with
//! upload URLs kept in memory. One resume/retry policy for both.

use super::drive::{OneShot, Stop};
use super::files;
use super::steps::{MemoryUrls, Steps};
use crate::config::{Mapping, Settings};
use crate::core::model::*;
use crate::core::Machine;
use crate::graph::GraphClient;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAPPING: &str = "send";
const ID: &str = "send";

/// Why a file was not attached.
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    #[error("cannot read {}: {why}", crate::outside::path(.path))]
    File { path: PathBuf, why: String },
    #[error("{0}")]
    SignIn(String),
    /// Graph's answer (its sentence names its code) or one of ours.
    #[error("{}", .0.message)]
    Failed(Failure),
    #[error("interrupted: nothing was attached (the upload session was deleted)")]
    Interrupted,
    /// `send` interrupted: what was in flight, as far as it knows.
    #[error("interrupted: {}", .0.text())]
    SendInterrupted(Left),
    /// `mail`: a send may have happened and could not be confirmed (never "not sent").
    #[error("it may have been sent: {}", why.message)]
    MaybeSent {
        marker: String,
        internet_message_id: Option<String>,
        why: Failure,
    },
    /// `mail`, interrupted before any send: what became of its draft (deleted, left for a
    /// re-run with the same `--key`, maybe made, none).
    #[error("interrupted: not sent; {0}")]
    MailInterrupted(String),
    /// `mail --key`: the key names an earlier message holding other files (nothing was done).
    #[error("{0}")]
    KeyTaken(String),
}

/// A stand-in mapping `name` for a file named on the command line: its folder is the file's
/// own, and a link the user named is followed.
pub(super) fn mapping_for(name: &str, path: &Path, target: &Target) -> Mapping {
    let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Mapping {
        name: name.into(),
        sent_dir: folder.join(".outbox-never"),
        folder,
        kind: target.kind,
        item_id: target.item_id.clone(),
        target: crate::config::Target::Item {
            kind: target.kind,
            id: target.item_id.clone(),
        },
        user: target.user.clone(),
        include: globset::GlobSet::empty(),
        exclude: globset::GlobSet::empty(),
        include_patterns: Vec::new(),
        exclude_patterns: Vec::new(),
        recursive: false,
        after: crate::config::After::Keep,
        failed_dir: None,
        follow_symlinks: true,
        // The user named this file.
        allow_hard_links: true,
        cross_mounts: true,
        if_exists: crate::config::IfExists::Attach,
        on_change: crate::config::OnChange::Add,
    }
}

/// What an interrupted `send` left on the item, as far as it can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// Nothing of the file reached the item (no request of it was taken, or none was sent).
    Nothing,
    /// An upload session held part of it; the session was deleted (best effort).
    SessionDeleted,
    /// A request that attaches it (its one POST, or a session's last piece) was sent and its
    /// answer not heard: it may be on the item.
    MayBeAttached,
}

impl Left {
    /// What the file's fate was, after "NAME (SIZE) to message ID ".
    pub fn text(self) -> &'static str {
        match self {
            Left::Nothing => "was not attached (nothing of it reached the item)",
            Left::SessionDeleted => "was not attached (its upload session was deleted)",
            Left::MayBeAttached => {
                "may have been attached: the request that attaches it was sent and its answer \
                 never heard; run the same send again with `--if-exists skip`: it finds it there by \
                 its bytes instead of attaching it twice"
            }
        }
    }
}

/// A file attached (or found already there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub attachment_id: String,
    /// Whether anything was sent (false: `if_exists = "skip"` found the same bytes there).
    pub sent: bool,
}

/// Attach `path` to `target` as `name`; returns the attachment id. `progress` hears the bytes
/// the server holds, `say` what a wait is for and until when (throttled, Graph out of reach, a
/// look after a lost answer). With `IfExists::Skip` an attachment of the same name and bytes
/// already on the item counts as attached.
#[allow(clippy::too_many_arguments)]
pub async fn attach_file(
    settings: &Settings,
    client: Arc<GraphClient>,
    target: Target,
    path: &Path,
    name: Option<String>,
    if_exists: IfExists,
    progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    say: Option<Arc<dyn Fn(Waiting) + Send + Sync>>,
) -> Result<Attached, OneShotError> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let file_err = |why: String| OneShotError::File {
        path: path.clone(),
        why,
    };
    let meta = std::fs::metadata(&path).map_err(|e| file_err(e.to_string()))?;
    if !meta.is_file() {
        return Err(file_err("not a regular file".into()));
    }
    let stat = files::file_stat(&path, &meta).ok_or_else(|| file_err("gone".into()))?;
    if stat.size > MAX_ATTACHMENT {
        return Err(OneShotError::Failed(Failure::new(
            "fileTooLarge",
            format!(
                "{} is {} bytes, over Graph's 150 MiB ({MAX_ATTACHMENT} bytes) attachment limit; it was not sent",
                crate::outside::path(&path),
                stat.size
            ),
        )));
    }
    let mapping = mapping_for(MAPPING, &path, &target);
    // Hashed beside the upload, not before it: only a look and the piece that ends the file
    // wait for it (the record carries no hash; every piece read is still hashed as it is read).
    let (m, p) = (mapping.clone(), path.clone());
    let digest: super::steps::Digest = {
        use futures_util::FutureExt;
        let task = tokio::task::spawn_blocking(move || match files::hash_file(&m, &p, &stat) {
            HashResult::Hashed { sha256, .. } => Some(sha256),
            _ => None,
        });
        async move { task.await.ok().flatten() }.boxed().shared()
    };
    // No control character in the name sent (as the agent's attachments).
    let name = crate::core::mail::attachment_name(
        &name.unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into())
        }),
        false,
    );
    let record = Record {
        target: Some(target.clone()),
        // `send` moves or deletes nothing.
        after_done: true,
        ..Record::pending(
            ID.into(),
            MAPPING.into(),
            path.clone(),
            name,
            stat,
            None,
            1,
            Time(0),
        )
    };
    let rule = MappingRule {
        name: MAPPING.into(),
        target,
        if_exists,
        on_change: OnChange::Add,
        after: After::Keep,
        mail: None,
    };
    let mut machine = Machine::new(
        vec![rule],
        crate::core::model::Policy {
            // A file named on the command line is no mapping's: never moved to a failed_dir.
            failed_dirs: Vec::new(),
            ..super::once_policy_of(settings)
        },
    );
    let urls = Arc::new(MemoryUrls::default());
    let mut steps = Steps::new(client.clone(), urls.clone(), vec![mapping]);
    steps.progress = progress
        .map(|p| Arc::new(move |_: &str, n: u64| p(n)) as Arc<dyn Fn(&str, u64) + Send + Sync>);
    steps.digest = Some(digest);
    let inputs = vec![Input::Start {
        records: vec![record],
        with_url: Vec::new(),
        messages: Vec::new(),
    }];
    let mut hooks = SendHooks {
        client: &client,
        urls: &urls,
        last: None,
        sent: false,
        say,
        fault: None,
        said: None,
        left: Left::Nothing,
    };
    let ran = super::drive::drive(&mut machine, Arc::new(steps), &*urls, inputs, &mut hooks).await;
    let (last, sent) = (hooks.last, hooks.sent);
    match ran {
        Ok(()) => {}
        Err(Stop::SignIn(f)) => return Err(OneShotError::SignIn(f.message)),
        Err(Stop::Interrupted) => return Err(OneShotError::SendInterrupted(hooks.left)),
        Err(Stop::Unreachable(f)) => return Err(OneShotError::Failed(f)),
    }
    match last {
        Some(r) if r.state == State::Done => match r.attachment_id {
            Some(attachment_id) => Ok(Attached {
                attachment_id,
                sent,
            }),
            None => Err(OneShotError::Failed(Failure::new(
                "internal",
                "done without an attachment id",
            ))),
        },
        Some(r) => Err(OneShotError::Failed(r.error.unwrap_or_else(|| {
            Failure::new("notAttached", format!("the upload ended {:?}", r.state))
        }))),
        None => Err(OneShotError::Failed(Failure::new(
            "notAttached",
            "nothing was sent",
        ))),
    }
}

/// Times Graph may be unreachable before a one-shot command (`send`, `mail`) gives up.
pub(super) const MAX_UNREACHABLE: u32 = 3;

/// The failure of a step that could not reach Graph or the identity platform at all.
pub(super) fn unreachable(input: &Input) -> Option<Failure> {
    match fault(input) {
        Some((_, Fault::Unreachable(f))) => Some(f.clone()),
        _ => None,
    }
}

/// The entry and the fault of a remote step's failed outcome.
pub(super) fn fault(input: &Input) -> Option<(&str, &Fault)> {
    let Input::Outcome { id, outcome } = input else {
        return None;
    };
    outcome.fault().map(|f| (id.as_str(), f))
}

/// Best effort: a session left open by an interrupted or paused send has no later attempt.
/// `send`'s part of the one-shot loop: the file's record as it last was, whether any byte went.
struct SendHooks<'a> {
    client: &'a GraphClient,
    urls: &'a MemoryUrls,
    last: Option<Record>,
    sent: bool,
    say: Option<Arc<dyn Fn(Waiting) + Send + Sync>>,
    /// The fault of the last answer heard (`None` after one that was no failure).
    fault: Option<Fault>,
    said: Option<Waiting>,
    /// Found at the clean-up after a stop.
    left: Left,
}

impl SendHooks<'_> {
    /// What the file waits for, when it waits `in_ms` with nothing in flight; `None` for short
    /// waits and while a request is out.
    fn waiting_for(&self, in_ms: u64, running: bool) -> Option<Waiting> {
        if running || in_ms < 1_000 {
            return None;
        }
        let until = super::mailnow::clock_text(in_ms);
        let why = |f: &Failure| {
            crate::outside::printable(&f.message)
                .trim_end_matches('.')
                .to_owned()
        };
        let may_exist = self.last.as_ref().is_some_and(|r| r.may_exist);
        let what = match self.fault.as_ref()? {
            Fault::Throttled { retry_after_ms } => {
                WaitFor::Throttled(retry_after_ms.map(|ms| ms.div_ceil(1_000)))
            }
            Fault::Unreachable(f) => WaitFor::Unreachable(f.message.clone()),
            Fault::Ambiguous(f) if may_exist => WaitFor::Look(why(f)),
            Fault::Ambiguous(f) | Fault::Permanent(f) | Fault::SignIn(f) => WaitFor::Error(why(f)),
        };
        Some(Waiting { what, until })
    }
}

/// What `send` waits for, and until when (`HH:MM:SS UTC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub what: WaitFor,
    pub until: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// 429/503, with Retry-After's seconds.
    Throttled(Option<u64>),
    /// Graph out of reach: the error's text, as `GraphError` wrote it.
    Unreachable(String),
    /// The answer to the upload was lost: the item is looked at first.
    Look(String),
    /// A backoff after an error.
    Error(String),
}

impl Waiting {
    /// The sentence; `unreachable` words Graph out of reach from the error's text (as the
    /// command's last line would).
    pub fn text(&self, unreachable: &dyn Fn(&str) -> String) -> String {
        let until = &self.until;
        match &self.what {
            WaitFor::Throttled(Some(s)) => {
                format!("throttled by Graph (Retry-After: {s} s); sending again at {until}")
            }
            WaitFor::Throttled(None) => format!("throttled by Graph; sending again at {until}"),
            WaitFor::Unreachable(m) => format!("{}; trying again at {until}", unreachable(m)),
            WaitFor::Look(why) => format!(
                "the answer to the upload was lost ({why}); looking on the item at {until} \
                 whether it took effect, before sending anything again"
            ),
            WaitFor::Error(why) => format!("after an error ({why}), trying again at {until}"),
        }
    }
}

impl OneShot for SendHooks<'_> {
    fn local(&mut self, action: &Action) -> bool {
        match action {
            Action::Persist(r) => {
                self.last = Some(r.clone());
                true
            }
            Action::Notify(_)
            | Action::Stat { .. }
            | Action::UpdateFile { .. }
            | Action::MarkReplaced { .. } => true,
            _ => false,
        }
    }

    fn spawned(&mut self, action: &Action) {
        self.sent |= matches!(action, Action::Post { .. } | Action::CreateSession { .. });
    }

    fn heard(&mut self, input: &Input) {
        if let Input::Outcome { outcome, .. } = input {
            self.fault = outcome.fault().cloned();
        }
    }

    fn waiting(&mut self, wake_in_ms: u64, running: bool) {
        let Some(say) = self.say.clone() else {
            return;
        };
        if let Some(w) = self.waiting_for(wake_in_ms, running) {
            if self.said.as_ref() != Some(&w) {
                say(w.clone());
                self.said = Some(w);
            }
        }
    }

    async fn clean_up(&mut self, machine: &Machine) {
        // The machine's record as it is now: an effect sent and not answered (a POST in flight,
        // or a last piece) marks it `may_exist` before the request goes.
        let may_exist = machine.record(ID).is_some_and(|r| r.may_exist);
        let session = !self.urls.all().is_empty();
        self.left = if may_exist {
            Left::MayBeAttached
        } else if session {
            Left::SessionDeleted
        } else {
            Left::Nothing
        };
        delete_sessions(self.client, self.urls, machine).await;
    }
}

async fn delete_sessions(client: &GraphClient, urls: &MemoryUrls, machine: &Machine) {
    let user = machine
        .record(ID)
        .and_then(|r| r.target.as_ref())
        .map(|t| t.user.clone())
        .unwrap_or_else(|| "me".into());
    for url in urls.all() {
        let _ = client.delete_session(&user, &url).await;
    }
}
