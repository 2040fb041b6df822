//! What the watcher and scans see, as the core's inputs: a file observed (or closed after
//! writing, or gone), a mapped folder unavailable or back.
//!
//! No call on a path in a mapped folder runs on the agent's loop: a neighbour who owns a
//! subfolder can mount a file system there whose `stat` never answers. Every look at a path
//! (a watcher's event, the core's `Stat`) and every scan runs on a blocking thread and comes
//! back as a [`Looked`]; a look that has not answered within [`PATIENCE`] is answered "not
//! there" and its path is left to its stuck thread (another look of it is answered at once
//! until that thread returns): a path that hangs holds only itself.

use super::Agent;
use crate::config::{Mapping, Settings};
use crate::core::model::{FileStat, Input};
use crate::watch::{self, FolderWatcher, Look, WatchEvent};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How long a look at one path may take before it is given up (a local `stat` takes
/// microseconds; a mount that never answers, forever).
pub(super) const PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// `Action::Stat`: the path's identity now, if it is still a file the mapping takes (no link
/// unless followed, not on another file system unless `cross_mounts`). Blocking.
pub fn stat_of(mappings: &[Mapping], path: &Path) -> Option<FileStat> {
    let m = mappings.iter().find(|m| path.starts_with(&m.folder))?;
    match watch::look(m, path) {
        Look::File(stat) => Some(stat),
        _ => None,
    }
}

/// What a watcher's event asks of a path, gathered while a look at it is under way.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Asked {
    /// Closed after writing (the core's `Closed` follows the observation).
    closed: bool,
    /// Removed or renamed away: `Gone` if it is not there.
    removed: bool,
}

/// Blocking work on mapped folders, done.
pub(super) enum Looked {
    /// A watcher's path looked at (`None`: it did not answer in time).
    Path {
        generation: u64,
        mapping: usize,
        path: PathBuf,
        asked: Asked,
        look: Option<Look>,
    },
    /// The core's `Stat` answered (`None` also when it did not answer in time).
    Stat {
        path: PathBuf,
        stat: Option<FileStat>,
    },
    /// Scans finished.
    Scanned {
        generation: u64,
        scans: Vec<ScanDone>,
    },
}

/// One mapping's scan: of its whole folder (`full`), or of new subfolders.
pub(super) struct ScanDone {
    pub mapping: usize,
    pub full: bool,
    pub result: std::io::Result<watch::Scan>,
}

/// Scans asked for and not yet started (one scan job runs at a time).
#[derive(Default)]
pub(super) struct ScanQueue {
    pub running: bool,
    all: bool,
    mappings: BTreeSet<usize>,
    under: BTreeMap<usize, BTreeSet<PathBuf>>,
}

impl ScanQueue {
    /// Nothing asked for any more (the scan running, if any, still comes back).
    pub fn forget_asked(&mut self) {
        self.all = false;
        self.mappings.clear();
        self.under.clear();
    }

    pub fn idle(&self) -> bool {
        !self.running && !self.all && self.mappings.is_empty() && self.under.is_empty()
    }
}

/// Per mapping, what its scans found that `status` says: mount points not entered, subfolders
/// over the watch cap.
#[derive(Default, Clone)]
pub(super) struct FolderNotes {
    pub mounts: BTreeSet<PathBuf>,
    pub unwatched: usize,
    /// What the last full scan passed over, by the mapping's choice: links not followed,
    /// subfolders not entered ([`watch::Scan`]).
    pub links: usize,
    pub subfolders: usize,
    /// Links and subfolders the watcher reported since that scan and the mapping passes over
    /// in the same way: counted with the scan's until the next full scan counts them itself.
    pub live_links: BTreeSet<PathBuf>,
    pub live_subfolders: BTreeSet<PathBuf>,
}

impl FolderNotes {
    /// Links and subfolders passed over now: the last full scan's and the watcher's since.
    fn skipped(&self) -> (usize, usize) {
        (
            self.links + self.live_links.len(),
            self.subfolders + self.live_subfolders.len(),
        )
    }
}

/// How many looks run at once. A look is measured from when it starts; without a bound every
/// look of a burst (2,000 files dropped at once) started on a thread of its own at once, and
/// where a look is a few system calls that wait on one another (Windows' handles, and under
/// Wine each one a round trip to its server) on a busy machine hundreds of them took over
/// [`PATIENCE`] together: each was left aside as hung, and `run --once` ended without those
/// files. A look given up frees its place (its thread stays with it).
const LOOKS_AT_ONCE: usize = 32;

static LOOKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LOOKS_AT_ONCE);

/// Paths whose look did not answer in time, each left to its stuck thread.
pub(super) type Hung = Arc<Mutex<HashSet<PathBuf>>>;

fn hung_lock(h: &Hung) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// `f` (a look at `path`) on a blocking thread, given up once it has run [`PATIENCE`]
/// (`None`; `path` is then hung until `f` returns). A path already hung is not looked at again.
async fn bounded<T: Send + 'static>(
    hung: Hung,
    path: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if hung_lock(&hung).contains(&path) {
        return None;
    }
    // Held until the look answers or is given up (the semaphore is never closed).
    let Ok(_place) = LOOKS.acquire().await else {
        return None;
    };
    let started = Arc::new(std::sync::OnceLock::<std::time::Instant>::new());
    let done = Arc::new(AtomicBool::new(false));
    let mut job = {
        let (started, done, hung, path) =
            (started.clone(), done.clone(), hung.clone(), path.clone());
        tokio::task::spawn_blocking(move || {
            let _ = started.set(std::time::Instant::now());
            let answer = f();
            let mut h = hung_lock(&hung);
            done.store(true, Ordering::SeqCst);
            h.remove(&path);
            answer
        })
    };
    loop {
        match tokio::time::timeout(std::time::Duration::from_millis(250), &mut job).await {
            Ok(Ok(answer)) => return Some(answer),
            Ok(Err(_)) => return None,
            Err(_) => {
                // Measured from when the look started: a queue of looks is not a hang.
                if started.get().is_some_and(|t| t.elapsed() >= PATIENCE) {
                    let mut h = hung_lock(&hung);
                    if !done.load(Ordering::SeqCst) {
                        tracing::warn!(path = %crate::outside::path(&path), "a look at this path has not answered for {} s (a mount that does not answer?); it is left aside, the other files go on", PATIENCE.as_secs());
                        h.insert(path);
                        return None;
                    }
                }
            }
        }
    }
}

impl Agent {
    pub(super) fn on_watch(&mut self, ev: WatchEvent) {
        if self.losing_events {
            return;
        }
        let Some(ev) = self.placed(ev) else {
            return;
        };
        let is_folder = |i: usize, path: &Path, s: &Settings| {
            s.mappings.get(i).is_some_and(|m| m.folder == path)
        };
        match ev {
            WatchEvent::Rescan { mapping } => {
                tracing::warn!("events may have been lost: rescanning");
                self.rescan(mapping);
            }
            // The mapped folder itself is the user's own path, looked at here.
            WatchEvent::Touched { mapping, path } if is_folder(mapping, &path, &self.settings) => {
                self.folder_back(mapping);
            }
            WatchEvent::Removed { mapping, path } if is_folder(mapping, &path, &self.settings) => {
                if !path.exists() {
                    self.folder_gone(mapping);
                    if let Some(w) = self.watcher.as_mut() {
                        w.await_return(&path);
                    }
                }
            }
            WatchEvent::Touched { mapping, path } => self.look(mapping, path, Asked::default()),
            WatchEvent::Closed { mapping, path } => self.look(
                mapping,
                path,
                Asked {
                    closed: true,
                    removed: false,
                },
            ),
            WatchEvent::Removed { mapping, path } => self.look(
                mapping,
                path,
                Asked {
                    closed: false,
                    removed: true,
                },
            ),
        }
    }

    /// Look at `path` off the loop; while a look at it is under way, what the new event asks
    /// waits for it and one more look follows (the events of one path are taken in order, a
    /// burst of them costs two looks).
    fn look(&mut self, mapping: usize, path: PathBuf, asked: Asked) {
        if let Some(next) = self.looking.get_mut(&path) {
            let n = next.get_or_insert_with(Asked::default);
            n.closed |= asked.closed;
            n.removed |= asked.removed;
            return;
        }
        self.looking.insert(path.clone(), None);
        let mappings = self.steps.mappings.clone();
        let (hung, generation) = (self.hung.clone(), self.generation);
        self.looks.spawn(async move {
            let at = path.clone();
            let look = bounded(hung, path.clone(), move || {
                mappings
                    .get(mapping)
                    .map_or(Look::Other, |m| watch::look(m, &at))
            })
            .await;
            Looked::Path {
                generation,
                mapping,
                path,
                asked,
                look,
            }
        });
    }

    /// `Action::Stat`, answered off the loop (`None` after [`PATIENCE`] without an answer).
    pub(super) fn stat(&mut self, path: PathBuf) {
        let mappings = self.steps.mappings.clone();
        let hung = self.hung.clone();
        self.looks.spawn(async move {
            let at = path.clone();
            let stat = bounded(hung, path.clone(), move || stat_of(&mappings, &at))
                .await
                .flatten();
            Looked::Stat { path, stat }
        });
    }

    /// A look, a stat or a scan came back.
    pub(super) fn take_look(&mut self, done: Result<Looked, tokio::task::JoinError>) {
        let looked = match done {
            Ok(l) => l,
            Err(e) if e.is_cancelled() => return,
            Err(e) => {
                tracing::error!(error = %e, "a look at a mapped folder failed");
                return;
            }
        };
        match looked {
            Looked::Stat { path, stat } => self.inputs.push_back(Input::Stat { path, stat }),
            Looked::Path {
                generation,
                mapping,
                path,
                asked,
                look,
            } => {
                let next = self.looking.remove(&path).flatten();
                // A config reloaded meanwhile: the mapping by its place now.
                let mapping = if generation == self.generation {
                    Some(mapping)
                } else {
                    self.settings
                        .mappings
                        .iter()
                        .position(|m| path.starts_with(&m.folder))
                };
                if let Some(mapping) = mapping {
                    if let Some(look) = look {
                        self.looked(mapping, &path, asked, look);
                    }
                    if let Some(next) = next {
                        self.look(mapping, path, next);
                    }
                }
            }
            Looked::Scanned { generation, scans } => {
                self.scans.running = false;
                if generation == self.generation {
                    self.take_scans(scans);
                }
                self.start_scan();
            }
        }
    }

    /// What a watcher's path turned out to be, to the core.
    fn looked(&mut self, mapping: usize, path: &Path, asked: Asked, look: Look) {
        let Some(m) = self.settings.mappings.get(mapping) else {
            return;
        };
        let name = m.name.clone();
        // Passed over as a scan passes it over (a name the globs exclude is no news).
        let excluded = path.file_name().is_none_or(|n| m.exclude.is_match(n))
            || watch::in_excluded_dir(m, path);
        let skipped = match &look {
            Look::Link if !excluded => Some(true),
            Look::Dir if !m.recursive && !excluded => Some(false),
            _ => None,
        };
        match look {
            // A folder that appeared in a recursive mapping: watched, then listed.
            Look::Dir if m.recursive => {
                self.scans
                    .under
                    .entry(mapping)
                    .or_default()
                    .insert(path.to_path_buf());
                self.start_scan();
            }
            Look::Mount if m.recursive => {
                self.note_mounts(mapping, std::iter::once(path.to_path_buf()))
            }
            // A folder made in a mapping that is not recursive: what it holds is never sent,
            // said now (trial 4's M9: nothing said until a rescan, up to `rescan` later).
            Look::Dir
                if path.parent() == Some(m.folder.as_path())
                    && !watch::in_excluded_dir(m, path)
                    && !path.file_name().is_some_and(|n| m.exclude.is_match(n)) =>
            {
                tracing::warn!(
                    file = %crate::outside::path(path),
                    mapping = %crate::outside::printable(&name),
                    "a subfolder made in the folder is not looked in (the mapping is not recursive; recursive = true sends what subfolders hold): what it holds is not sent"
                );
            }
            Look::File(_) if !watch::accepts(m, path) => {}
            // Paused: a new file (or version) waits in its folder; one the ledger has as it is
            // now is no file dropped meanwhile (a reload's scan lists it), nor taken now.
            Look::File(stat) if self.pauses.holds(&name) => {
                if !self.machine.recorded(&name, path, stat) {
                    self.pauses.hold(&name, path);
                }
            }
            Look::File(stat) => {
                self.inputs.push_back(Input::Observed {
                    mapping: name,
                    path: path.to_path_buf(),
                    stat,
                });
                if asked.closed {
                    self.inputs.push_back(Input::Closed {
                        path: path.to_path_buf(),
                    });
                }
            }
            Look::Missing if asked.removed => {
                self.pauses.gone(&name, path);
                self.inputs.push_back(Input::Gone {
                    mapping: name,
                    path: path.to_path_buf(),
                });
            }
            Look::Dir | Look::Mount | Look::Missing | Look::Link | Look::Other => {}
        }
        self.note_live(mapping, path, skipped);
    }

    /// `ev` with its mapping as the config in force places it: an event the watcher of a
    /// config since reloaded sent may name a mapping by its old place (`None`: no mapping of
    /// the config in force holds the path).
    fn placed(&self, ev: WatchEvent) -> Option<WatchEvent> {
        let place = |mapping: usize, path: &Path| {
            let holds = |m: &crate::config::Mapping| path.starts_with(&m.folder);
            match self.settings.mappings.get(mapping) {
                Some(m) if holds(m) => Some(mapping),
                _ => self.settings.mappings.iter().position(holds),
            }
        };
        Some(match ev {
            WatchEvent::Touched { mapping, path } => WatchEvent::Touched {
                mapping: place(mapping, &path)?,
                path,
            },
            WatchEvent::Closed { mapping, path } => WatchEvent::Closed {
                mapping: place(mapping, &path)?,
                path,
            },
            WatchEvent::Removed { mapping, path } => WatchEvent::Removed {
                mapping: place(mapping, &path)?,
                path,
            },
            WatchEvent::Rescan { mapping } => WatchEvent::Rescan {
                mapping: mapping.filter(|i| *i < self.settings.mappings.len()),
            },
        })
    }

    fn folder_gone(&mut self, mapping: usize) {
        let Some(m) = self.settings.mappings.get(mapping) else {
            return;
        };
        if self.available[mapping] {
            tracing::error!(mapping = %m.name, folder = %crate::outside::path(&m.folder), "mapped folder is missing or unreadable; its entries are kept, nothing is sent from it until it is back; other mappings keep working");
        }
        self.available[mapping] = false;
        self.inputs.push_back(Input::FolderUnavailable {
            mapping: m.name.clone(),
        });
    }

    /// A missing mapped folder is back: watch it again and scan it.
    fn folder_back(&mut self, mapping: usize) {
        let Some(m) = self.settings.mappings.get(mapping) else {
            return;
        };
        if !m.folder.is_dir() {
            return;
        }
        if let Some(w) = self.watcher.as_mut() {
            if let Err(e) = w.rewatch(mapping, &m.folder) {
                tracing::error!(mapping = %m.name, "{e}");
                return;
            }
        }
        self.rescan(Some(mapping));
    }

    /// Compare a folder (or all) with what the core knows: every file found is observed, when
    /// the scan (off the loop) is done.
    pub(super) fn rescan(&mut self, only: Option<usize>) {
        match only {
            None => self.scans.all = true,
            Some(i) => {
                self.scans.mappings.insert(i);
            }
        }
        self.start_scan();
    }

    /// Start the scans asked for, if none is running: every mapping's folder, or some, or
    /// new subfolders. Their result comes back as [`Looked::Scanned`].
    pub(super) fn start_scan(&mut self) {
        if self.scans.running {
            return;
        }
        let q = &mut self.scans;
        let (full, under) = if q.all {
            q.all = false;
            q.mappings.clear();
            q.under.clear();
            (Some(None), BTreeMap::new())
        } else if !q.mappings.is_empty() {
            let only = std::mem::take(&mut q.mappings);
            for i in &only {
                q.under.remove(i);
            }
            (Some(Some(only)), BTreeMap::new())
        } else if !q.under.is_empty() {
            (None, std::mem::take(&mut q.under))
        } else {
            return;
        };
        q.running = true;
        let mappings = self.steps.mappings.clone();
        let watcher = self.watcher.clone();
        let generation = self.generation;
        self.looks.spawn(async move {
            let scans = tokio::task::spawn_blocking(move || match full {
                Some(only) => scan_mappings(&mappings, only.as_ref(), watcher.as_ref()),
                None => scan_under(&mappings, under, watcher.as_ref()),
            })
            .await
            .unwrap_or_default();
            Looked::Scanned { generation, scans }
        });
    }

    /// What scans found (per mapping) becomes inputs. Start-up scans on another thread while
    /// it reads the ledger, then hands the scans here.
    pub(super) fn take_scans(&mut self, scans: Vec<ScanDone>) {
        for ScanDone {
            mapping: i,
            full,
            result,
        } in scans
        {
            let Some(m) = self.settings.mappings.get(i) else {
                continue;
            };
            let name = m.name.clone();
            match result {
                Ok(scan) => {
                    if full {
                        if !self.available[i] {
                            tracing::info!(mapping = %name, "mapped folder is back");
                        }
                        self.available[i] = true;
                        self.inputs.push_back(Input::FolderAvailable {
                            mapping: name.clone(),
                        });
                        self.settle_watches(i, &scan.dirs);
                        if let Some(n) = self.notes.get_mut(i) {
                            n.mounts.retain(|p| scan.mounts.contains(p));
                        }
                        self.note_skipped(i, scan.links.len(), scan.subfolders);
                    } else {
                        // New subfolders' links: as the watcher's (their subfolders are
                        // entered: the mapping is recursive).
                        for link in &scan.links {
                            self.note_live(i, link, Some(true));
                        }
                    }
                    self.note_mounts(i, scan.mounts.into_iter());
                    for f in scan.found {
                        if self.pauses.holds(&name) {
                            if !self.machine.recorded(&name, &f.path, f.stat) {
                                self.pauses.hold(&name, &f.path);
                            }
                            continue;
                        }
                        self.inputs.push_back(Input::Observed {
                            mapping: name.clone(),
                            path: f.path,
                            stat: f.stat,
                        });
                    }
                }
                Err(_) if !full => {}
                Err(e) => {
                    if self.available[i] {
                        tracing::error!(mapping = %name, folder = %crate::outside::path(&m.folder), error = %e, "mapped folder is missing or unreadable; its entries are kept, nothing is sent from it until it is back; other mappings keep working");
                    }
                    self.available[i] = false;
                    self.inputs
                        .push_back(Input::FolderUnavailable { mapping: name });
                }
            }
        }
    }

    /// Mount points a scan did not enter: each said once (`status` says them all).
    fn note_mounts(&mut self, mapping: usize, mounts: impl Iterator<Item = PathBuf>) {
        let Some(m) = self.settings.mappings.get(mapping) else {
            return;
        };
        let Some(notes) = self.notes.get_mut(mapping) else {
            return;
        };
        for path in mounts {
            if self.mounts_said.insert(path.clone()) {
                tracing::warn!(mapping = %m.name, folder = %crate::outside::path(&path), "another file system is mounted here; it is not entered (nothing in it is sent) unless the mapping says cross_mounts = true");
            }
            notes.mounts.insert(path);
        }
    }

    /// After a full scan: the links and subfolders the mapping's choices passed over, said in
    /// the log when there were none before (`status` says them while there are).
    fn note_skipped(&mut self, mapping: usize, links: usize, subfolders: usize) {
        let Some(n) = self.notes.get_mut(mapping) else {
            return;
        };
        let before = n.skipped();
        n.links = links;
        n.subfolders = subfolders;
        n.live_links.clear();
        n.live_subfolders.clear();
        self.say_skipped(mapping, before);
    }

    /// A link or a subfolder the watcher reported, which the mapping passes over as a scan
    /// would (`link`: a link, else a subfolder; `None`: neither, any more): counted and said
    /// as a scan's are, so a link dropped while the agent runs is not passed over in silence
    /// until the next rescan.
    fn note_live(&mut self, mapping: usize, path: &Path, link: Option<bool>) {
        let Some(n) = self.notes.get_mut(mapping) else {
            return;
        };
        let before = n.skipped();
        n.live_links.remove(path);
        n.live_subfolders.remove(path);
        match link {
            Some(true) => {
                n.live_links.insert(path.to_path_buf());
            }
            Some(false) => {
                n.live_subfolders.insert(path.to_path_buf());
            }
            None => {}
        }
        self.say_skipped(mapping, before);
    }

    /// The log line of what mapping `mapping` passes over, when there is more of it than before
    /// (the first at a scan, one more dropped since): its counts are then those `status` gives.
    /// A count said once and never again went stale as links were added (trial 5, G6).
    fn say_skipped(&self, mapping: usize, (links_before, subfolders_before): (usize, usize)) {
        let (Some(m), Some(n)) = (self.settings.mappings.get(mapping), self.notes.get(mapping))
        else {
            return;
        };
        let (links, subfolders) = n.skipped();
        if links > links_before || subfolders > subfolders_before {
            if let Some(line) = skipped_line(m, links, subfolders) {
                tracing::info!(mapping = %m.name, "{line}");
            }
        }
    }

    /// After a full scan: watches of folders gone dropped; the subfolders over the cap said.
    fn settle_watches(&mut self, mapping: usize, dirs: &[PathBuf]) {
        let Some(w) = self.watcher.as_ref() else {
            return;
        };
        let unwatched = w.settle_watches(mapping, dirs);
        let Some(m) = self.settings.mappings.get(mapping) else {
            return;
        };
        if let Some(n) = self.notes.get_mut(mapping) {
            if unwatched > 0 && n.unwatched == 0 {
                tracing::warn!(mapping = %m.name, unwatched, cap = watch::MAX_WATCHES_PER_MAPPING, rescan_secs = self.settings.agent.rescan.as_secs(), "this mapping has more subfolders than outbox watches for one mapping (each costs one of your inotify watches); files in the others are found by the rescan");
            }
            n.unwatched = unwatched;
        }
    }

    /// The `status` lines of what scans left aside: mount points not entered, subfolders
    /// not watched.
    pub(super) fn folder_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (m, n) in self.settings.mappings.iter().zip(&self.notes) {
            let name = crate::outside::printable(&m.name);
            for p in &n.mounts {
                out.push(format!(
                    "not entered: mapping `{name}`: {} is another file system (a mount point); nothing in it is sent unless the mapping says cross_mounts = true",
                    crate::outside::path(p)
                ));
            }
            let (links, subfolders) = n.skipped();
            if let Some(line) = skipped_line(m, links, subfolders) {
                out.push(format!("skipped: mapping `{name}`: {line}"));
            }
            if n.unwatched > 0 {
                out.push(format!(
                    "not watched: mapping `{name}`: {} subfolders past the {} watched for one mapping; their files are found by the rescan (agent.rescan)",
                    n.unwatched,
                    watch::MAX_WATCHES_PER_MAPPING
                ));
            }
        }
        out
    }
}

/// What mapping `m`'s folder holds that it passes over by its own settings, and the setting
/// that changes it: `None` when there is nothing.
fn skipped_line(m: &Mapping, links: usize, subfolders: usize) -> Option<String> {
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let mut parts = Vec::new();
    if links > 0 {
        let why = if m.follow_symlinks {
            "they lead out of the folder, or to an excluded place"
        } else {
            "links are not followed; follow_symlinks = true follows those that stay inside the folder"
        };
        parts.push(format!(
            "{} not sent ({why})",
            plural(links, "symbolic link", "symbolic links")
        ));
    }
    if subfolders > 0 {
        parts.push(format!(
            "{} not looked in (the mapping is not recursive; recursive = true sends what subfolders hold)",
            plural(subfolders, "subfolder", "subfolders")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Each mapping's folder scanned (`only`: those mappings alone), in order: what
/// [`Agent::take_scans`] takes. Each folder reached without a link is watched just before it
/// is listed (`watcher`). Start-up runs it on a thread of its own, the agent on a blocking one.
pub(super) fn scan_mappings(
    mappings: &[Mapping],
    only: Option<&BTreeSet<usize>>,
    watcher: Option<&FolderWatcher>,
) -> Vec<ScanDone> {
    mappings
        .iter()
        .enumerate()
        .filter(|(i, _)| only.is_none_or(|o| o.contains(i)))
        .map(|(i, m)| ScanDone {
            mapping: i,
            full: true,
            result: watch::scan_from(m, std::slice::from_ref(&m.folder), &|d| {
                watcher.is_none_or(|w| w.watch_dir(i, d))
            }),
        })
        .collect()
}

/// New subfolders of recursive mappings, watched and then scanned (with what is below them).
fn scan_under(
    mappings: &[Mapping],
    under: BTreeMap<usize, BTreeSet<PathBuf>>,
    watcher: Option<&FolderWatcher>,
) -> Vec<ScanDone> {
    under
        .into_iter()
        .filter_map(|(i, dirs)| {
            let m = mappings.get(i)?;
            // A folder below another one of the list is scanned with it.
            let tops: Vec<PathBuf> = dirs
                .iter()
                .filter(|d| {
                    d.starts_with(&m.folder) && !dirs.iter().any(|o| o != *d && d.starts_with(o))
                })
                .cloned()
                .collect();
            Some(ScanDone {
                mapping: i,
                full: false,
                result: watch::scan_from(m, &tops, &|d| watcher.is_none_or(|w| w.watch_dir(i, d))),
            })
        })
        .collect()
}
