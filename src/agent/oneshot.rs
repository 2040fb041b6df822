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

/// A file attached (or found already there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub attachment_id: String,
    /// Whether anything was sent (false: `if_exists = "skip"` found the same bytes there).
    pub sent: bool,
}

/// Attach `path` to `target` as `name`; returns the attachment id. `progress` hears the bytes
/// the server holds. With `IfExists::Skip` an attachment of the same name and bytes already on
/// the item counts as attached.
pub async fn attach_file(
    settings: &Settings,
    client: Arc<GraphClient>,
    target: Target,
    path: &Path,
    name: Option<String>,
    if_exists: IfExists,
    progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
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
    };
    let ran = super::drive::drive(&mut machine, Arc::new(steps), &*urls, inputs, &mut hooks).await;
    let (last, sent) = (hooks.last, hooks.sent);
    match ran {
        Ok(()) => {}
        Err(Stop::SignIn(f)) => return Err(OneShotError::SignIn(f.message)),
        Err(Stop::Interrupted) => return Err(OneShotError::Interrupted),
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

    async fn clean_up(&mut self, machine: &Machine) {
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
