//! Carrying out the core's actions that take time: hashing, each remote step (a file's, and a
//! message's: create its draft, find it by its marker, list its draft, send it), the
//! after-action.
//! Each runs as a task and answers with the [`Input`] the core is waiting for. Shared by the
//! agent (with the ledger's session store) and `outbox send` (with URLs kept in memory).

use super::files::{self, ReadProblem, Upload};
use crate::config::Mapping;
use crate::core::model::*;
use crate::graph::pacing::{Held, Waiter};
use crate::graph::GraphClient;
use crate::ledger::SessionStore;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Where upload URLs (secrets) are kept between steps.
pub trait UrlStore: Send + Sync + 'static {
    fn save(&self, id: &str, url: &str) -> Result<(), String>;
    fn load(&self, id: &str) -> Option<String>;
    fn forget(&self, id: &str);
}

impl UrlStore for SessionStore {
    fn save(&self, id: &str, url: &str) -> Result<(), String> {
        crate::failpoint!("before-session-saved");
        SessionStore::save(self, id, url).map_err(|e| e.to_string())?;
        crate::failpoint!("after-session-saved");
        Ok(())
    }
    fn load(&self, id: &str) -> Option<String> {
        SessionStore::load(self, id).ok().flatten()
    }
    fn forget(&self, id: &str) {
        if let Err(e) = self.remove(id) {
            tracing::warn!(entry = id, error = %e, "cannot remove the upload URL file");
        }
    }
}

/// Upload URLs in memory (`outbox send`).
#[derive(Default)]
pub struct MemoryUrls(Mutex<HashMap<String, String>>);

impl MemoryUrls {
    pub fn all(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

impl UrlStore for MemoryUrls {
    fn save(&self, id: &str, url: &str) -> Result<(), String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), url.to_owned());
        Ok(())
    }
    fn load(&self, id: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
    fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Everything a step needs, cheap to clone into a task.
pub struct Steps<U: UrlStore> {
    pub client: Arc<GraphClient>,
    pub urls: Arc<U>,
    pub mappings: Arc<Vec<Mapping>>,
    /// Open uploads by entry id: taken by the step that reads, put back after.
    uploads: Arc<Mutex<HashMap<String, Upload>>>,
    /// Entries whose file takes the mailbox's whole byte window (larger than the budget).
    whole_window: Arc<Mutex<HashSet<String>>>,
    /// The upload step of each entry that has one under way, as the mailbox's pacer knows it:
    /// what it waits for there (`status`), and how to withdraw it while it waits (`cancel`).
    paced: Arc<Mutex<HashMap<String, Paced>>>,
    /// Bytes the server holds of an entry's file (its id, the bytes), for a progress bar: after
    /// each chunk of a session, and after a POST.
    pub progress: Option<FileProgress>,
    /// `send`: the file's SHA-256, computed beside the upload (its record carries none).
    pub digest: Option<Digest>,
    /// The agent: a 403/404 from an item gets a second look (`cli::hints`: an id of the other
    /// kind, a message that is not a draft), once per (mailbox, item, code), its answer kept.
    /// `send` looks for itself.
    pub second_looks: Option<SecondLooks>,
    /// Set when the agent stops: a hash in progress gives up at its next read.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// The agent's ledger: a message found by a file's key is told apart as this ledger's own.
    pub ledger: Option<Arc<crate::ledger::Ledger>>,
    /// `mail --draft --key`: the drafts made carry the never-sent mark
    /// (`graph::mail::NEVER_SENT_PROPERTY`), so a later run with the key takes them at once.
    pub never_sent: bool,
}

/// A refusal from a message's own draft, with what a second look finds: a draft that is no
/// longer one was sent (or changed) by hand, said in the message's terms; `None` otherwise.
async fn message_draft_failure(
    client: &GraphClient,
    item: &crate::graph::ItemRef,
    f: &Failure,
) -> Option<Failure> {
    use crate::graph::hints::{graph_error_of, look_again, ItemFinding};
    let g = graph_error_of(f)?;
    match look_again(client, item, &g).await? {
        ItemFinding::NotDraft => Some(Failure::new(
            f.code.clone(),
            format!(
                "{}: {} — the message's draft is no longer a draft (sent from Outlook by hand?), \
                 and Graph attaches only to drafts; `outbox status` shows the message, and \
                 `outbox retry MESSAGE_ID` looks for it in Sent Items before anything else",
                g.code, g.message
            ),
        )),
        ItemFinding::OtherKind(_) => None,
    }
}

/// An entry's upload step under way: its place in the pacer, and the core's answer should it be
/// withdrawn while it waits there.
struct Paced {
    waiter: Arc<Waiter>,
    withheld: Input,
}

/// Takes an entry's step off the list of those under way when it ends (or is withdrawn).
struct Listed {
    paced: Arc<Mutex<HashMap<String, Paced>>>,
    id: String,
    waiter: Arc<Waiter>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut paced = self.paced.lock().unwrap_or_else(|p| p.into_inner());
        // A later step of the entry may be listed already (this one withdrawn): not that one.
        if paced
            .get(&self.id)
            .is_some_and(|p| Arc::ptr_eq(&p.waiter, &self.waiter))
        {
            paced.remove(&self.id);
        }
    }
}

/// An upload step's entry, and the answer that tells the core it was not sent: the request was
/// not taken, and goes again after no wait (as a throttle with a Retry-After of 0, which is
/// what the mailbox's pacer is: Outlook's throttling, kept to on this side). `None` for steps
/// that are not an upload's.
fn withheld_answer(action: &Action) -> Option<(String, Input)> {
    let not_sent = || Fault::Throttled {
        retry_after_ms: Some(0),
    };
    let (id, outcome) = match action {
        Action::Post { id, .. } => (id, Outcome::Post(PostOutcome::Failed(not_sent()))),
        Action::CreateSession { id, .. } => (
            id,
            Outcome::CreateSession(SessionOutcome::Failed(not_sent())),
        ),
        Action::PutChunk { id, .. } => (id, Outcome::Chunk(ChunkOutcome::Failed(not_sent()))),
        _ => return None,
    };
    Some((
        id.clone(),
        Input::Outcome {
            id: id.clone(),
            outcome,
        },
    ))
}

/// Hears an entry's id and the bytes of its file the server holds.
pub type FileProgress = Arc<dyn Fn(&str, u64) + Send + Sync>;

/// What the second look found per (mailbox, item, Graph's code): the failure to record instead.
pub type SecondLooks = Arc<tokio::sync::Mutex<HashMap<(String, String, String), Option<Failure>>>>;

/// A SHA-256 being computed once, awaited by whoever needs it first.
pub type Digest =
    futures_util::future::Shared<futures_util::future::BoxFuture<'static, Option<String>>>;

impl<U: UrlStore> Clone for Steps<U> {
    fn clone(&self) -> Self {
        Steps {
            client: self.client.clone(),
            urls: self.urls.clone(),
            mappings: self.mappings.clone(),
            uploads: self.uploads.clone(),
            whole_window: self.whole_window.clone(),
            paced: self.paced.clone(),
            progress: self.progress.clone(),
            digest: self.digest.clone(),
            second_looks: self.second_looks.clone(),
            stop: self.stop.clone(),
            ledger: self.ledger.clone(),
            never_sent: self.never_sent,
        }
    }
}

impl<U: UrlStore> Steps<U> {
    pub fn new(client: Arc<GraphClient>, urls: Arc<U>, mappings: Vec<Mapping>) -> Self {
        Steps {
            client,
            urls,
            mappings: Arc::new(mappings),
            uploads: Default::default(),
            whole_window: Default::default(),
            paced: Default::default(),
            progress: None,
            digest: None,
            second_looks: None,
            stop: Default::default(),
            ledger: None,
            never_sent: false,
        }
    }

    pub fn set_mappings(&mut self, mappings: Vec<Mapping>) {
        self.mappings = Arc::new(mappings);
    }

    /// The SHA-256 an action carries, or (for `send`) the one computed beside the upload.
    async fn sha(&self, given: &str) -> String {
        match &self.digest {
            // Not computable (the file changed or went): nothing will match it.
            Some(d) if given.is_empty() => d.clone().await.unwrap_or_else(|| "unavailable".into()),
            _ => given.to_owned(),
        }
    }

    fn mapping_of(&self, path: &Path) -> Option<&Mapping> {
        self.mappings.iter().find(|m| path.starts_with(&m.folder))
    }

    pub fn mapping_named(&self, name: &str) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.name == name)
    }

    /// A move into or out of mapping `mapping`'s `failed_dir` (`mv`), on a blocking thread (the
    /// folder may be a mount that never answers); refused when the mapping left the config.
    async fn failed_dir_move(
        &self,
        mapping: String,
        mv: impl FnOnce(&Mapping) -> MoveOutcome + Send + 'static,
    ) -> MoveOutcome {
        let m = self.mapping_named(&mapping).cloned();
        tokio::task::spawn_blocking(move || match m {
            Some(m) => mv(&m),
            None => MoveOutcome::Refused(Failure::new(
                "mappingRemoved",
                format!("the mapping `{mapping}` is no longer in the config"),
            )),
        })
        .await
        .unwrap_or_else(|e| MoveOutcome::Refused(Failure::new("internal", e.to_string())))
    }

    /// Forget an entry's open upload (its session is over).
    pub fn close_upload(&self, id: &str) {
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.whole_window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn take_upload(&self, id: &str) -> Option<Upload> {
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    fn put_upload(&self, id: &str, u: Upload) {
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), u);
    }

    /// A permanent refusal from the item, with what a second look finds about it said instead of
    /// Graph's generic advice.
    async fn explained(&self, target: &Target, fault: Fault) -> Fault {
        let (Some(looks), Fault::Permanent(f)) = (&self.second_looks, &fault) else {
            return fault;
        };
        if crate::graph::hints::graph_error_of(f).is_none() {
            return fault;
        }
        let key = (
            target.user.to_lowercase(),
            target.item_id.clone(),
            f.code.clone(),
        );
        // Held across the look: the files of one item wait for its one answer.
        let mut known = looks.lock().await;
        if !known.contains_key(&key) {
            let item = crate::graph::ItemRef::from(target);
            // A draft the agent made for a message is no mapping's item: the advice about a
            // mapping's `message = "…"` (pick another draft) would be wrong for it.
            let named = self.mappings.iter().any(|m| {
                matches!(&m.target, crate::config::Target::Item { id, .. } if *id == target.item_id)
            });
            let found = if named {
                crate::graph::hints::for_mapping_failure(&self.client, &item, f).await
            } else {
                message_draft_failure(&self.client, &item, f).await
            };
            known.insert(key.clone(), found);
        }
        match known.get(&key) {
            Some(Some(better)) => Fault::Permanent(better.clone()),
            _ => fault,
        }
    }

    /// The entries whose upload step waits in the mailbox's pacer (its budgets), with what for
    /// and until when.
    pub fn paced_waits(&self) -> Vec<(String, Held)> {
        self.paced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(id, p)| Some((id.clone(), p.waiter.held()?)))
            .collect()
    }

    /// Withdraw entry `id`'s upload step if it waits in the mailbox's pacer, nothing of it
    /// sent: it never goes on, and the answer returned tells the core so (for it in place of
    /// the step's). `None` when it has no step waiting there (its request may be on its way).
    pub fn withdraw(&self, id: &str) -> Option<Input> {
        let mut paced = self.paced.lock().unwrap_or_else(|p| p.into_inner());
        if !paced.get(id)?.waiter.withdraw() {
            return None;
        }
        paced.remove(id).map(|p| p.withheld)
    }

    /// Carry out one action that takes time; `None` for an action this does not run, or an
    /// upload step withdrawn ([`Steps::withdraw`]: its answer was given for it).
    pub async fn run(&self, action: Action) -> Option<Input> {
        let Some((id, withheld)) = withheld_answer(&action) else {
            return self.run_step(action).await;
        };
        let waiter = Arc::new(Waiter::new(&id));
        self.paced.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id.clone(),
            Paced {
                waiter: waiter.clone(),
                withheld,
            },
        );
        let _listed = Listed {
            paced: self.paced.clone(),
            id,
            waiter: waiter.clone(),
        };
        waiter.run(self.run_step(action)).await.flatten()
    }

    async fn run_step(&self, action: Action) -> Option<Input> {
        Some(match action {
            Action::Hash {
                mapping,
                path,
                stat,
            } => {
                let m = self.mapping_named(&mapping).cloned();
                let p = path.clone();
                let stop = self.stop.clone();
                let result = tokio::task::spawn_blocking(move || match m {
                    Some(m) => files::hash_file_until(&m, &p, &stat, &stop),
                    None => HashResult::Gone,
                })
                .await
                .unwrap_or(HashResult::Gone);
                Input::Hashed { path, result }
            }
            Action::Post {
                id,
                target,
                path,
                name,
                file,
                sha256,
            } => {
                let outcome = match self.post(&id, &target, &path, &name, file, &sha256).await {
                    PostOutcome::Failed(f) => PostOutcome::Failed(self.explained(&target, f).await),
                    o => o,
                };
                Input::Outcome {
                    id,
                    outcome: Outcome::Post(outcome),
                }
            }
            Action::CreateSession {
                id,
                target,
                name,
                size,
            } => {
                self.close_upload(&id);
                // A file larger than the mailbox's whole byte budget waits for its turn to take
                // the window before anything of it is sent (the session's own request included).
                if self.client.take_whole_window(&target.user, size).await {
                    self.whole_window
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id.clone());
                }
                let urls = self.urls.clone();
                let sid = id.clone();
                let outcome = self
                    .client
                    .create_session(&target, &name, size, move |url| urls.save(&sid, url))
                    .await;
                let outcome = match outcome {
                    SessionOutcome::Failed(f) => {
                        SessionOutcome::Failed(self.explained(&target, f).await)
                    }
                    o => o,
                };
                Input::Outcome {
                    id,
                    outcome: Outcome::CreateSession(outcome),
                }
            }
            Action::PutChunk {
                id,
                target,
                path,
                file,
                sha256,
                offset,
                len,
                last: _,
            } => {
                let outcome = self
                    .put(&id, &target, &path, file, &sha256, offset, len)
                    .await;
                crate::failpoint!("after-chunk");
                if !matches!(outcome, ChunkOutcome::Accepted { .. }) {
                    self.close_upload(&id);
                }
                Input::Outcome {
                    id,
                    outcome: Outcome::Chunk(outcome),
                }
            }
            Action::AskSession { id, target } => {
                let outcome = match self.urls.load(&id) {
                    Some(url) => self.client.ask_session(&target, &url).await,
                    None => AskOutcome::Gone,
                };
                Input::Outcome {
                    id,
                    outcome: Outcome::Ask(outcome),
                }
            }
            Action::DeleteSession { id, target } => {
                self.close_upload(&id);
                let outcome = match self.urls.load(&id) {
                    Some(url) => self.client.delete_upload_session(&target, &url).await,
                    None => DeleteOutcome::Deleted,
                };
                Input::Outcome {
                    id,
                    outcome: Outcome::DeleteSession(outcome),
                }
            }
            Action::Look {
                id,
                target,
                name,
                sha256,
                recent_ok,
                exclude,
            } => {
                let sha256 = self.sha(&sha256).await;
                let outcome = match self
                    .client
                    .look(&target, &name, &sha256, recent_ok, &exclude)
                    .await
                {
                    LookOutcome::Failed(f) => LookOutcome::Failed(self.explained(&target, f).await),
                    o => o,
                };
                Input::Outcome {
                    id,
                    outcome: Outcome::Look(outcome),
                }
            }
            Action::DeleteAttachment {
                id,
                target,
                attachment_id,
            } => {
                let outcome = self.client.delete_attachment(&target, &attachment_id).await;
                Input::Outcome {
                    id,
                    outcome: Outcome::DeleteAttachment(outcome),
                }
            }
            Action::After {
                id,
                mapping,
                path,
                file,
                sha256,
                after,
            } => {
                let m = self.mapping_named(&mapping).cloned();
                let result = tokio::task::spawn_blocking(move || match m {
                    Some(m) => super::after::carry_out(&m, &path, &file, &sha256, after),
                    None => AfterOutcome::Done,
                })
                .await
                .unwrap_or_else(|e| AfterOutcome::Failed(Failure::new("internal", e.to_string())));
                Input::Outcome {
                    id,
                    outcome: Outcome::After(result),
                }
            }
            Action::SetLetter {
                id,
                user,
                draft_id,
                letter,
            } => {
                let r = self.client.letter_step(&user, &draft_id, &letter).await;
                Input::Outcome {
                    id,
                    outcome: Outcome::SetLetter(r),
                }
            }
            Action::ToFailedDir {
                id,
                mapping,
                path,
                file,
                failure,
            } => {
                let mid = id.clone();
                let result = self
                    .failed_dir_move(mapping, move |m| {
                        super::after::to_failed_dir(m, &mid, &path, &file, &failure)
                    })
                    .await;
                Input::Outcome {
                    id,
                    outcome: Outcome::ToFailedDir(result),
                }
            }
            Action::FromFailedDir {
                id,
                mapping,
                from,
                path,
                file,
            } => {
                let result = self
                    .failed_dir_move(mapping, move |m| {
                        super::after::from_failed_dir(m, &from, &path, &file)
                    })
                    .await;
                Input::Outcome {
                    id,
                    outcome: Outcome::FromFailedDir(result),
                }
            }
            Action::CreateDraft {
                id,
                user,
                letter,
                keys,
            } => {
                let outcome = self
                    .client
                    .draft_step(&user, &id, &letter, &keys, self.never_sent)
                    .await;
                if matches!(outcome, DraftOutcome::Created { .. }) {
                    crate::failpoint!("after-draft-created");
                }
                Input::Outcome {
                    id,
                    outcome: Outcome::CreateDraft(outcome),
                }
            }
            Action::FindMessage {
                id,
                user,
                folder,
                internet_message_id,
            } => {
                let outcome = self
                    .client
                    .find_step(&user, &id, folder, internet_message_id.as_deref())
                    .await;
                Input::Outcome {
                    id,
                    outcome: Outcome::Find(folder, outcome),
                }
            }
            Action::FindFileKey {
                id,
                user,
                key,
                name,
                sha256,
                since,
            } => {
                let ours = self.ours();
                let outcome = self
                    .client
                    .key_step(&user, &key, &name, &sha256, since, &ours)
                    .await;
                Input::Outcome {
                    id,
                    outcome: Outcome::Key(outcome),
                }
            }
            Action::FindRivals {
                id,
                user,
                draft_id,
                files,
                since,
            } => {
                let ours = self.ours();
                let outcome = self
                    .client
                    .rivals_step(&user, &draft_id, &files, since, &ours)
                    .await;
                Input::Outcome {
                    id,
                    outcome: Outcome::Rivals(outcome),
                }
            }
            Action::DeleteDraft { id, user, draft_id } => {
                let outcome = self.client.delete_draft_step(&user, &draft_id).await;
                Input::Outcome {
                    id,
                    outcome: Outcome::DeleteDraft(outcome),
                }
            }
            Action::StampKeys {
                id,
                user,
                draft_id,
                keys,
            } => {
                let outcome = self.client.stamp_step(&user, &draft_id, &keys).await;
                Input::Outcome {
                    id,
                    outcome: Outcome::StampKeys(outcome),
                }
            }
            Action::ListDraft { id, user, draft_id } => {
                let outcome = self.client.list_draft_step(&user, &draft_id).await;
                Input::Outcome {
                    id,
                    outcome: Outcome::ListDraft(outcome),
                }
            }
            Action::SendDraft {
                id,
                user,
                draft_id,
                expect,
            } => {
                let outcome = self.client.send_step(&user, &draft_id, &expect).await;
                crate::failpoint!("after-send");
                Input::Outcome {
                    id,
                    outcome: Outcome::Send(outcome),
                }
            }
            _ => return None,
        })
    }

    /// Which messages a key search found are this ledger's own (a record under their marker):
    /// the graph step asks, the core decides. Without a ledger (`mail`), none.
    fn ours(&self) -> impl Fn(&str) -> Result<bool, String> + Sync {
        let ledger = self.ledger.clone();
        move |marker: &str| -> Result<bool, String> {
            match &ledger {
                Some(l) => l
                    .get_message(marker)
                    .map(|r| r.is_some())
                    .map_err(|e| e.to_string()),
                None => Ok(false),
            }
        }
    }

    async fn post(
        &self,
        id: &str,
        target: &Target,
        path: &Path,
        name: &str,
        file: FileStat,
        sha256: &str,
    ) -> PostOutcome {
        let Some(m) = self.mapping_of(path).cloned() else {
            return PostOutcome::FileGone;
        };
        let p = path.to_path_buf();
        let sha = self.sha(sha256).await;
        let body = tokio::task::spawn_blocking(move || {
            let mut up = Upload::open(&m, &p, &file)?;
            up.read_all(&sha)
        })
        .await;
        let body = match body {
            Ok(Ok(b)) => b,
            Ok(Err(ReadProblem::Changed)) => return PostOutcome::Changed,
            Ok(Err(ReadProblem::Gone)) => return PostOutcome::FileGone,
            Ok(Err(ReadProblem::Unreadable(e))) => {
                tracing::warn!(file = %crate::outside::path(path), error = %e, "cannot read the file");
                return PostOutcome::FileGone;
            }
            Err(_) => return PostOutcome::FileGone,
        };
        let out = self.client.post_attachment(target, name, &body).await;
        if let (Some(p), PostOutcome::Created { .. }) = (&self.progress, &out) {
            p(id, file.size);
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    async fn put(
        &self,
        id: &str,
        target: &Target,
        path: &Path,
        file: FileStat,
        sha256: &str,
        offset: u64,
        len: u64,
    ) -> ChunkOutcome {
        let Some(url) = self.urls.load(id) else {
            return ChunkOutcome::SessionGone;
        };
        let Some(m) = self.mapping_of(path).cloned() else {
            return ChunkOutcome::FileGone;
        };
        let whole = {
            let known = self
                .whole_window
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(id);
            known || {
                let w = self.client.take_whole_window(&target.user, file.size).await;
                if w {
                    self.whole_window
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id.to_owned());
                }
                w
            }
        };
        // Counted against the byte budget before it is read; held until the answer is in.
        let (len, _stamp) = self.client.admit_chunk(&target.user, len, whole).await;
        let upload = self.take_upload(id);
        let p = path.to_path_buf();
        // The recorded hash is needed only for a piece that ends the file.
        let ends = |o: u64, l: u64| o + l >= file.size;
        let sha = if ends(offset, len) {
            self.sha(sha256).await
        } else {
            sha256.to_owned()
        };
        let read = tokio::task::spawn_blocking(move || {
            let mut up = match upload {
                Some(u) => u,
                None => Upload::open(&m, &p, &file)?,
            };
            let chunk = up.chunk(offset, len, &sha);
            Ok::<_, ReadProblem>((up, chunk))
        })
        .await;
        let (mut up, chunk) = match read {
            Ok(Ok((up, Ok(chunk)))) => (up, chunk),
            Ok(Ok((_, Err(problem)))) | Ok(Err(problem)) => {
                return match problem {
                    ReadProblem::Changed => ChunkOutcome::Changed,
                    ReadProblem::Gone => ChunkOutcome::FileGone,
                    ReadProblem::Unreadable(e) => {
                        tracing::warn!(file = %crate::outside::path(path), error = %e, "cannot read the file");
                        ChunkOutcome::FileGone
                    }
                }
            }
            Err(_) => return ChunkOutcome::FileGone,
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::failpoint!("before-chunk");
        // The next piece is read and hashed while this one is on the wire, so hashing costs the
        // upload next to nothing.
        let next = offset + chunk.len() as u64;
        let next_len = self.client.chunk_size().min(file.size.saturating_sub(next));
        let ahead = if next_len > 0 {
            let sha = if ends(next, next_len) {
                self.sha(sha256).await
            } else {
                sha256.to_owned()
            };
            Some(tokio::task::spawn_blocking(move || {
                up.read_ahead(next, next_len, &sha);
                up
            }))
        } else {
            self.put_upload(id, up);
            None
        };
        let out = self
            .client
            .put_chunk(target, &name, &url, offset, chunk, file.size)
            .await;
        if let Some(task) = ahead {
            if let Ok(up) = task.await {
                self.put_upload(id, up);
            }
        }
        if let Some(p) = &self.progress {
            match &out {
                ChunkOutcome::Accepted { next: Some(n) } => p(id, *n),
                ChunkOutcome::Completed { .. } => p(id, file.size),
                _ => {}
            }
        }
        out
    }
}
