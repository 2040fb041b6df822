//! Intake: which files of a mapped folder count (globs, `sent_dir`/`failed_dir` never), the
//! full scan, and the `notify` watcher turned into plain [`WatchEvent`]s. Watching never polls:
//! it relies on the platform's notifications, and any sign of lost events (an overflow, a
//! watcher error) becomes a rescan request, so no event loss can lose a file.

use crate::config::Mapping;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher as _};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// What the watcher saw, already attributed to a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Created, written, or renamed into place: stat it and (re)start its settle clock.
    Touched { mapping: usize, path: PathBuf },
    /// Closed after writing (inotify's IN_CLOSE_WRITE).
    Closed { mapping: usize, path: PathBuf },
    /// Deleted or renamed away.
    Removed { mapping: usize, path: PathBuf },
    /// Events may have been lost (overflow, watcher error): reconcile `mapping`, or all.
    Rescan { mapping: Option<usize> },
}

/// Whether `path` is a file of `m` that outbox should attach (by location and name only).
pub fn accepts(m: &Mapping, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(&m.folder) else {
        return false;
    };
    if rel.as_os_str().is_empty() || in_excluded_dir(m, path) {
        return false;
    }
    if !m.recursive && rel.components().count() != 1 {
        return false;
    }
    let Some(name) = path.file_name() else {
        return false;
    };
    // Exclusions hold for every folder on the way too: `.*` keeps `.git/config` out.
    m.include.is_match(name) && !rel.components().any(|c| m.exclude.is_match(c.as_os_str()))
}

/// Inside `sent_dir` or `failed_dir` (never scanned, even when recursive).
fn in_excluded_dir(m: &Mapping, path: &Path) -> bool {
    path.starts_with(&m.sent_dir) || m.failed_dir.as_deref().is_some_and(|d| path.starts_with(d))
}

/// Why `m`'s folder cannot be read now (missing, not a folder, unreadable), or `None` when it
/// can: what `status` says in its header, as the agent finds it at each scan.
pub fn folder_problem(m: &Mapping) -> Option<String> {
    match std::fs::read_dir(&m.folder) {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("missing".to_owned()),
        Err(e) => Some(format!("unreadable ({e})")),
    }
}

/// The `status` header's line for each mapping whose folder cannot be read now.
pub fn unavailable_lines(mappings: &[Mapping]) -> Vec<String> {
    mappings
        .iter()
        .filter_map(|m| {
            let why = folder_problem(m)?;
            Some(format!(
                "folder unavailable: mapping `{}`: {} is {why}; nothing is sent from it until it is back",
                crate::outside::printable(&m.name),
                crate::outside::path(&m.folder)
            ))
        })
        .collect()
}

/// A file found by a scan.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: Option<i64>,
    /// Device, inode, size and time, as the core compares files.
    pub stat: crate::core::model::FileStat,
}

/// Every accepted regular file under the mapping's folder. Symlinks are skipped unless
/// `follow_symlinks`, and then only when they resolve inside the folder.
pub fn scan(m: &Mapping) -> std::io::Result<Vec<Found>> {
    let mut out = Vec::new();
    let mut dirs = vec![m.folder.clone()];
    let root = std::fs::canonicalize(&m.folder)?;
    while let Some(dir) = dirs.pop() {
        // Listed through a descriptor opened beneath the folder with no link on the way: a
        // subfolder swapped for a link after it was seen as a folder is not walked through
        // the link (a folder of the user's, or `/`). Links are walked by path only when the
        // mapping follows them (and then only inside the folder, by `file_meta`).
        if dir != m.folder {
            crate::failpoint!("scan-subfolder");
        }
        let listed = if m.follow_symlinks {
            std::fs::read_dir(&dir)
        } else {
            crate::files::read_dir_beneath(&m.folder, &dir)
        };
        let rd = match listed {
            Ok(rd) => rd,
            Err(e) if dir == m.folder => return Err(e),
            Err(e) => {
                tracing::warn!(dir = %crate::outside::path(&dir), error = %e, "cannot read a subfolder; skipping it");
                continue;
            }
        };
        for ent in rd.flatten() {
            // (Not `ent.path()`: a folder listed through its descriptor has another name.)
            let path = dir.join(ent.file_name());
            if in_excluded_dir(m, &path) {
                continue;
            }
            // The entry's own lstat (relative to the open directory) costs no walk of the
            // full path; only a symlink needs the path-based policy.
            let linked = !matches!(ent.file_type(), Ok(t) if !t.is_symlink());
            let meta = if linked {
                file_meta(m, &root, &path)
            } else {
                ent.metadata().ok()
            };
            let Some(meta) = meta else {
                continue;
            };
            // A followed link to a folder above it would be walked forever.
            if meta.is_dir()
                && linked
                && std::fs::canonicalize(&path)
                    .is_ok_and(|t| std::fs::canonicalize(&dir).is_ok_and(|d| d.starts_with(&t)))
            {
                continue;
            }
            if meta.is_dir() {
                if m.recursive {
                    dirs.push(path);
                }
                continue;
            }
            if meta.is_file() && accepts(m, &path) {
                // Gone since it was listed: not found.
                let Some(stat) = file_stat(&path, &meta) else {
                    continue;
                };
                out.push(Found {
                    size: meta.len(),
                    mtime_ns: crate::files::mtime_ns(&meta),
                    stat,
                    path,
                });
            }
        }
    }
    Ok(out)
}

/// The identity of a file as the core compares it: device, inode, size, modification time; and
/// its owner (which versions replace which). `meta` is a stat of `path`. `None`: the file is no
/// longer there to ask (Windows, where device, inode and ctime are asked of a handle).
pub fn file_stat(path: &Path, meta: &std::fs::Metadata) -> Option<crate::core::model::FileStat> {
    #[cfg(unix)]
    let (dev, ino, size, mtime_ns, ctime_ns, owner) = {
        let _ = path;
        use std::os::unix::fs::MetadataExt;
        let ctime = meta
            .ctime()
            .checked_mul(1_000_000_000)
            .and_then(|s| s.checked_add(meta.ctime_nsec()))
            .unwrap_or(0);
        (
            meta.dev(),
            meta.ino(),
            meta.len(),
            crate::files::mtime_ns(meta),
            ctime,
            Some(meta.uid()),
        )
    };
    #[cfg(not(unix))]
    let (dev, ino, size, mtime_ns, ctime_ns, owner) = {
        let id = crate::files::Identity::at(path, meta).ok()?;
        (
            id.dev,
            id.ino,
            id.size,
            id.mtime_ns,
            id.ctime_ns.unwrap_or(0),
            id.owner,
        )
    };
    Some(crate::core::model::FileStat {
        dev,
        ino,
        size,
        mtime_ns: mtime_ns.unwrap_or(0),
        ctime_ns,
        owner,
    })
}

/// Metadata of `path` under the symlink policy; `None` to skip it. Without `follow_symlinks` a
/// link anywhere below the folder (a linked subfolder, not only a linked file) skips the path;
/// with it, the path must resolve inside the folder. (Reading goes through `files`, which
/// enforces the same rule on descriptors; this only keeps such paths out of the queue.)
pub fn file_meta(m: &Mapping, root: &Path, path: &Path) -> Option<std::fs::Metadata> {
    let lmeta = std::fs::symlink_metadata(path).ok()?;
    let rel = path.strip_prefix(&m.folder).ok()?;
    if !m.follow_symlinks {
        if lmeta.file_type().is_symlink() {
            return None;
        }
        let mut dir = m.folder.clone();
        let mut parts = rel.components().peekable();
        while let Some(c) = parts.next() {
            if parts.peek().is_none() {
                break;
            }
            dir.push(c);
            if std::fs::symlink_metadata(&dir).map_or(true, |d| d.file_type().is_symlink()) {
                tracing::debug!(path = %crate::outside::path(path), "under a linked folder; not followed");
                return None;
            }
        }
        return Some(lmeta);
    }
    // Followed only inside the mapped folder: a link must not reach files the user never put here.
    let target = std::fs::canonicalize(path).ok()?;
    let real_root = std::fs::canonicalize(root).ok()?;
    let Ok(rel_target) = target.strip_prefix(&real_root) else {
        tracing::debug!(path = %crate::outside::path(path), "symlink leads out of the mapped folder; not followed");
        return None;
    };
    // The exclusions hold for where the link leads too: a link into `failed_dir` (a reason file)
    // or `sent_dir`, or to `.git/config`, is not a way around them.
    let resolved = m.folder.join(rel_target);
    if in_excluded_dir(m, &resolved)
        || rel_target
            .components()
            .any(|c| m.exclude.is_match(c.as_os_str()))
    {
        tracing::debug!(path = %crate::outside::path(path), to = %crate::outside::path(&resolved), "symlink leads to an excluded place; not followed");
        return None;
    }
    std::fs::metadata(path).ok()
}

/// The running watcher; dropping it stops watching.
pub struct FolderWatcher {
    inner: notify::RecommendedWatcher,
    /// Parents watched while a mapped folder is missing, to see it come back without polling.
    parents: std::collections::HashSet<PathBuf>,
    /// Parents watched for as long as the watcher runs (Windows): there a watch reports nothing
    /// when its own folder is removed, so the removal is seen in the parent's listing.
    kept: std::collections::HashSet<PathBuf>,
}

impl FolderWatcher {
    /// A mapped folder is gone: watch its parent so that its return is seen (no polling).
    pub fn await_return(&mut self, folder: &Path) {
        let Some(parent) = folder.parent() else {
            return;
        };
        if self.parents.contains(parent) || self.kept.contains(parent) {
            return;
        }
        match self.inner.watch(parent, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.parents.insert(parent.to_path_buf());
            }
            Err(e) => {
                tracing::warn!(folder = %crate::outside::path(folder), error = %e, "cannot watch for the folder's return; the periodic rescan will find it")
            }
        }
    }

    /// A mapped folder is back: watch it again.
    pub fn rewatch(&mut self, folder: &Path, recursive: bool) -> Result<(), String> {
        if let Some(parent) = folder.parent() {
            if self.parents.remove(parent) && !self.kept.contains(parent) {
                let _ = self.inner.unwatch(parent);
            }
        }
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        self.inner
            .watch(folder, mode)
            .map_err(|e| describe_watch_error(folder, &e))
    }
}

impl FolderWatcher {
    /// Watch every mapping's folder that exists; returns the watcher and, per mapping, why it
    /// could not be watched.
    pub fn start(
        mappings: &[Mapping],
        tx: mpsc::UnboundedSender<WatchEvent>,
    ) -> Result<(FolderWatcher, Vec<(usize, String)>), String> {
        let folders: Vec<(PathBuf, bool)> = mappings
            .iter()
            .map(|m| (m.folder.clone(), m.recursive))
            .collect();
        let route = folders.clone();
        // notify follows links by default: it would add watches through a linked directory
        // wherever it leads (one mapping's `follow_symlinks` once put the user's whole home
        // under watch, and a log file there fed itself). It never follows one: a mapping with
        // `follow_symlinks` has its links walked by the scan (`scan`, `file_meta`), inside the
        // folder only; a linked folder's changes are found by the rescan, or by the watch of
        // the folder it leads to (inside the mapped folder, so watched already when recursive).
        let config = notify::Config::default().with_follow_symlinks(false);
        let mut watcher = notify::RecommendedWatcher::new(
            move |res: notify::Result<notify::Event>| match res {
                Ok(ev) => {
                    for we in translate(&route, ev) {
                        let _ = tx.send(we);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the folder watcher reported an error; rescanning");
                    let _ = tx.send(WatchEvent::Rescan { mapping: None });
                }
            },
            config,
        )
        .map_err(|e| format!("cannot start the folder watcher: {e}"))?;
        let mut problems = Vec::new();
        for (i, (folder, recursive)) in folders.iter().enumerate() {
            let mode = if *recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if let Err(e) = watcher.watch(folder, mode) {
                problems.push((i, describe_watch_error(folder, &e)));
            }
        }
        let mut fw = FolderWatcher {
            inner: watcher,
            parents: Default::default(),
            kept: Default::default(),
        };
        // Windows (ReadDirectoryChangesW): the removal of a watched folder itself is reported
        // by no watch of it, only by its parent's, so each watched folder's parent is watched
        // too, for good (events for the parent's other entries belong to no mapping and go).
        if cfg!(windows) {
            for (i, (folder, _)) in folders.iter().enumerate() {
                if problems.iter().any(|(p, _)| *p == i) {
                    continue;
                }
                let Some(parent) = folder.parent() else {
                    continue;
                };
                // Watched already as a mapped folder (notify would replace that watch, and
                // its mode, with this one).
                if fw.kept.contains(parent) || folders.iter().any(|(f, _)| f == parent) {
                    continue;
                }
                match fw.inner.watch(parent, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        fw.kept.insert(parent.to_path_buf());
                    }
                    Err(e) => {
                        tracing::warn!(folder = %crate::outside::path(folder), error = %e, "cannot watch the folder's parent; its removal is found by the periodic rescan")
                    }
                }
            }
        }
        for (i, _) in &problems {
            fw.await_return(&folders[*i].0);
        }
        Ok((fw, problems))
    }
}

fn describe_watch_error(folder: &Path, e: &notify::Error) -> String {
    let text = e.to_string();
    let limit = matches!(&e.kind, notify::ErrorKind::MaxFilesWatch)
        || matches!(&e.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(28));
    if limit {
        format!(
            "cannot watch {}: the inotify watch limit is reached; raise it with `sudo sysctl fs.inotify.max_user_watches=524288` \
             (and persist it in /etc/sysctl.d/)",
            crate::outside::path(folder)
        )
    } else {
        format!(
            "cannot watch {}: {}",
            crate::outside::path(folder),
            crate::outside::printable(&text)
        )
    }
}

fn mapping_of(folders: &[(PathBuf, bool)], path: &Path) -> Option<usize> {
    folders.iter().position(|(f, _)| path.starts_with(f))
}

/// notify's event -> ours.
fn translate(folders: &[(PathBuf, bool)], ev: notify::Event) -> Vec<WatchEvent> {
    if ev.need_rescan() {
        let mapping = ev.paths.first().and_then(|p| mapping_of(folders, p));
        return vec![WatchEvent::Rescan { mapping }];
    }
    let mut out = Vec::new();
    let mut push = |path: &PathBuf, make: fn(usize, PathBuf) -> WatchEvent| {
        if let Some(m) = mapping_of(folders, path) {
            out.push(make(m, path.clone()));
        }
    };
    let touched = |mapping, path| WatchEvent::Touched { mapping, path };
    let removed = |mapping, path| WatchEvent::Removed { mapping, path };
    let closed = |mapping, path| WatchEvent::Closed { mapping, path };
    match ev.kind {
        EventKind::Create(_)
        | EventKind::Modify(ModifyKind::Data(_))
        | EventKind::Modify(ModifyKind::Any)
        | EventKind::Modify(ModifyKind::Metadata(_)) => {
            ev.paths.iter().for_each(|p| push(p, touched));
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
            ev.paths.iter().for_each(|p| push(p, removed))
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
            ev.paths.iter().for_each(|p| push(p, touched))
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            if let Some(from) = ev.paths.first() {
                push(from, removed);
            }
            if let Some(to) = ev.paths.get(1) {
                push(to, touched);
            }
        }
        EventKind::Modify(ModifyKind::Name(_)) => {
            // Unknown direction: stat tells whether the path is there.
            ev.paths.iter().for_each(|p| push(p, touched));
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
            ev.paths.iter().for_each(|p| push(p, closed))
        }
        EventKind::Access(_) => {}
        EventKind::Other | EventKind::Any | EventKind::Modify(ModifyKind::Other) => {
            ev.paths.iter().for_each(|p| push(p, touched))
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, RemoveKind};

    #[test]
    fn translates_the_events_that_matter() {
        let folders = vec![(PathBuf::from("/a"), false), (PathBuf::from("/b"), true)];
        let ev =
            notify::Event::new(EventKind::Create(CreateKind::File)).add_path("/b/x/y.pdf".into());
        assert_eq!(
            translate(&folders, ev),
            vec![WatchEvent::Touched {
                mapping: 1,
                path: "/b/x/y.pdf".into()
            }]
        );
        let ev = notify::Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path("/a/.x.part".into())
            .add_path("/a/x.pdf".into());
        assert_eq!(
            translate(&folders, ev),
            vec![
                WatchEvent::Removed {
                    mapping: 0,
                    path: "/a/.x.part".into()
                },
                WatchEvent::Touched {
                    mapping: 0,
                    path: "/a/x.pdf".into()
                }
            ]
        );
        let ev =
            notify::Event::new(EventKind::Remove(RemoveKind::File)).add_path("/elsewhere/z".into());
        assert!(translate(&folders, ev).is_empty());
        let ev = notify::Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)))
            .add_path("/a/x.pdf".into());
        assert_eq!(
            translate(&folders, ev),
            vec![WatchEvent::Closed {
                mapping: 0,
                path: "/a/x.pdf".into()
            }]
        );
        let ev = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert_eq!(
            translate(&folders, ev),
            vec![WatchEvent::Rescan { mapping: None }]
        );
    }
}
