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
pub fn in_excluded_dir(m: &Mapping, path: &Path) -> bool {
    path.starts_with(&m.sent_dir) || m.failed_dir.as_deref().is_some_and(|d| path.starts_with(d))
}

/// Why `m`'s folder cannot be read now (missing, not a folder, unreadable), or `None` when it
/// can: what `status` says in its header, as the agent finds it at each scan.
pub fn folder_problem(m: &Mapping) -> Option<String> {
    match crate::files::list_beneath(&m.folder, Path::new(""), true) {
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

/// What a scan of a mapping found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Every accepted regular file.
    pub found: Vec<Found>,
    /// Every folder listed that was reached without a link (the ones the watcher may watch),
    /// the first of the scan's starting folders first.
    pub dirs: Vec<PathBuf>,
    /// Subfolders (or files) not entered because they are another file system: a mount point,
    /// and the mapping does not say `cross_mounts = true`.
    pub mounts: Vec<PathBuf>,
    /// Symbolic links not followed (the mapping does not say `follow_symlinks = true`, or the
    /// link leads out of the folder or to an excluded place), and subfolders not entered (the
    /// mapping is not `recursive`): names the globs do not exclude, said once by the agent.
    pub links: usize,
    pub subfolders: usize,
}

/// Every accepted regular file under the mapping's folder. Symlinks are skipped unless
/// `follow_symlinks`, and then only when they resolve inside the folder. A mount point below
/// the folder is not entered unless the mapping says `cross_mounts = true`.
pub fn scan(m: &Mapping) -> std::io::Result<Scan> {
    scan_from(m, std::slice::from_ref(&m.folder), &|_| true)
}

/// [`scan`] of the folders `starts` (the mapping's folder, or subfolders of it, each with what
/// is below it when the mapping is recursive). `watch` is called with each folder reached
/// without a link, after it is opened and before it is listed: a file made in a new subfolder
/// before its watch was added is in the listing, one made after is an event.
pub fn scan_from(
    m: &Mapping,
    starts: &[PathBuf],
    watch: &dyn Fn(&Path) -> bool,
) -> std::io::Result<Scan> {
    use crate::files::EntryKind;
    let mut out = Scan::default();
    // (folder, reached through a followed link)
    let mut dirs: Vec<(PathBuf, bool)> = starts.iter().rev().map(|d| (d.clone(), false)).collect();
    // (A link on the folder's own path is followed only when it is the user's or root's.)
    let root = crate::files::real_folder(&m.folder)?;
    // What a mount point below the folder is told apart from.
    let home = crate::files::place_of(&m.folder)?;
    while let Some((dir, linked)) = dirs.pop() {
        // (A start may be `sent_dir` or `failed_dir`, made since: never scanned.)
        if in_excluded_dir(m, &dir) {
            continue;
        }
        // Listed through a descriptor opened beneath the folder with no link on the way: a
        // subfolder swapped for a link after it was seen as a folder is not walked through
        // the link (a folder of the user's, or `/`). Links are walked by path only when the
        // mapping follows them (and then only inside the folder, by `file_meta`).
        if dir != m.folder {
            crate::failpoint!("scan-subfolder");
        }
        let listed = if m.follow_symlinks && dir != m.folder {
            crate::files::list_path(&m.folder, &dir)
        } else {
            // A folder swapped for a mount since it was seen is refused here, unasked.
            crate::files::list_beneath(&m.folder, &dir, m.cross_mounts)
        };
        let mut listing = match listed {
            Ok(l) => l,
            Err(e) if dir == m.folder => return Err(e),
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                out.mounts.push(dir);
                continue;
            }
            Err(e) => {
                tracing::warn!(dir = %crate::outside::path(&dir), error = %e, "cannot read a subfolder; skipping it");
                continue;
            }
        };
        if !linked {
            watch(&dir);
            out.dirs.push(dir.clone());
        }
        let names: Vec<std::ffi::OsString> =
            listing.entries().flatten().map(|e| e.file_name()).collect();
        for name in names {
            // (Not `ent.path()`: a folder listed through its descriptor has another name.)
            let path = dir.join(&name);
            if in_excluded_dir(m, &path) {
                continue;
            }
            // The entry's own statx (relative to the open directory, asking no mount's
            // server) costs no walk of the full path; only a symlink needs the path's policy.
            let Ok(entry) = listing.stat(&name) else {
                continue;
            };
            if entry.kind != EntryKind::Link {
                if !m.cross_mounts && entry.place.is_mount_in(&home) {
                    // (A folder of a mapping that does not enter folders is no news.)
                    if m.recursive || entry.kind != EntryKind::Dir {
                        out.mounts.push(path);
                    }
                    continue;
                }
                match entry.kind {
                    // Nothing below an excluded name counts: not entered, not watched.
                    EntryKind::Dir if m.recursive && !m.exclude.is_match(&name) => {
                        dirs.push((path, linked))
                    }
                    EntryKind::Dir if !m.exclude.is_match(&name) => out.subfolders += 1,
                    EntryKind::File if accepts(m, &path) => {
                        let stat = entry.identity.file_stat();
                        out.found.push(Found {
                            size: stat.size,
                            mtime_ns: entry.identity.mtime_ns,
                            stat,
                            path,
                        });
                    }
                    _ => {}
                }
                continue;
            }
            let Some(meta) = file_meta(m, &root, &path) else {
                if !m.exclude.is_match(&name) {
                    out.links += 1;
                }
                continue;
            };
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                if !m.cross_mounts && meta.dev() != home.dev {
                    out.mounts.push(path);
                    continue;
                }
            }
            // A followed link to a folder above it would be walked forever.
            if meta.is_dir()
                && std::fs::canonicalize(&path)
                    .is_ok_and(|t| std::fs::canonicalize(&dir).is_ok_and(|d| d.starts_with(&t)))
            {
                continue;
            }
            if meta.is_dir() {
                if m.recursive && !m.exclude.is_match(&name) {
                    dirs.push((path, true));
                } else if !m.exclude.is_match(&name) {
                    out.subfolders += 1;
                }
                continue;
            }
            if meta.is_file() && accepts(m, &path) {
                // Gone since it was listed: not found.
                let Some(stat) = version_stat(m, &path, &meta) else {
                    continue;
                };
                out.found.push(Found {
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

/// The owner a version at `path` counts as, its file being `file_owner`'s. Without
/// `follow_symlinks` that is the file's owner. With it a link on the way may be another
/// user's: a neighbour's link to a file of the user's in the folder must not make a version
/// of the user's (it would replace the user's attachment of that name), so the owner is the
/// first of the links' owners and the file's that is not this agent's user, else the user.
pub fn version_owner(m: &Mapping, path: &Path, file_owner: Option<u32>) -> Option<u32> {
    #[cfg(unix)]
    if m.follow_symlinks {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        let mut owners = Vec::new();
        let mut at = m.folder.clone();
        for c in path.strip_prefix(&m.folder).ok()?.components() {
            at.push(c);
            match std::fs::symlink_metadata(&at) {
                Ok(l) if l.file_type().is_symlink() => owners.push(l.uid()),
                _ => {}
            }
        }
        owners.extend(file_owner);
        return owners.iter().copied().find(|o| *o != me).or(file_owner);
    }
    let _ = (m, path);
    file_owner
}

/// [`file_stat`] of `path`'s version in `m` (its owner as [`version_owner`] counts it).
pub fn version_stat(
    m: &Mapping,
    path: &Path,
    meta: &std::fs::Metadata,
) -> Option<crate::core::model::FileStat> {
    let mut stat = file_stat(path, meta)?;
    stat.owner = version_owner(m, path, stat.owner);
    Some(stat)
}

/// What a path in a mapped folder is now, under the mapping's rules (links as
/// [`file_meta`] says, no other file system unless `cross_mounts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    File(crate::core::model::FileStat),
    Dir,
    /// On another file system than the mapped folder (a mount point, or below one).
    Mount,
    Missing,
    /// A link not followed, a FIFO, a device: nothing to take.
    Other,
}

/// Look at `path` (in `m`'s folder). Blocking, and on a mount that never answers it never
/// returns: the agent calls it off its loop, bounded.
pub fn look(m: &Mapping, path: &Path) -> Look {
    crate::failpoint!("stat", path);
    // The folder as every open finds it: not through another user's link on its path.
    let root = match crate::files::real_folder(&m.folder) {
        Ok(root) => root,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Look::Missing,
        Err(_) => return Look::Other,
    };
    let Some(meta) = file_meta(m, &root, path) else {
        return match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Look::Missing,
            _ => Look::Other,
        };
    };
    #[cfg(unix)]
    if !m.cross_mounts {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(&m.folder).is_ok_and(|f| f.dev() != meta.dev()) {
            return Look::Mount;
        }
    }
    if meta.is_dir() {
        Look::Dir
    } else if meta.is_file() {
        // (`None`: gone since the stat; Windows asks a handle for the identity.)
        version_stat(m, path, &meta).map_or(Look::Missing, Look::File)
    } else {
        Look::Other
    }
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

/// How many folders the watcher watches for one mapping at most. Each is one of the user's
/// inotify watches (`fs.inotify.max_user_watches`, 8,192 on many systems, shared by every
/// program of the user's): a neighbour making thousands of subfolders in a recursive drop
/// folder must not spend them all. Subfolders past it are found by the rescan
/// (`agent.rescan`), and the log and `status` say so.
pub const MAX_WATCHES_PER_MAPPING: usize = 1000;

/// The running watcher; dropping it (every clone) stops watching. Each folder is watched on
/// its own (never notify's recursive mode, which would walk into mount points and through
/// them): the mapped folder when the watcher starts, each subfolder of a recursive mapping by
/// the scan that lists it, just before listing it, so a file made in a new subfolder before
/// its watch was added is still found by that listing.
#[derive(Clone)]
pub struct FolderWatcher {
    inner: std::sync::Arc<std::sync::Mutex<Watches>>,
}

struct Watches {
    notify: notify::RecommendedWatcher,
    /// Parents watched while a mapped folder is missing, to see it come back without polling.
    parents: std::collections::HashSet<PathBuf>,
    /// Per mapping (by place in the config the watcher started with): the folders watched,
    /// with the folder's (device, inode) when watched: a folder renamed keeps its watch, which
    /// its new path then shares (inotify watches an inode), so only a watch no folder still
    /// listed holds is removed.
    watched: Vec<std::collections::HashMap<PathBuf, Option<(u64, u64)>>>,
    /// Per mapping: subfolders left unwatched since the last full scan (over the cap).
    unwatched: Vec<std::collections::HashSet<PathBuf>>,
    /// Parents watched for as long as the watcher runs (Windows): there a watch reports nothing
    /// when its own folder is removed, so the removal is seen in the parent's listing.
    kept: std::collections::HashSet<PathBuf>,
}

impl FolderWatcher {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watches> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A mapped folder is gone: watch its parent so that its return is seen (no polling).
    pub fn await_return(&mut self, folder: &Path) {
        let Some(parent) = folder.parent() else {
            return;
        };
        let mut w = self.lock();
        if w.parents.contains(parent) || w.kept.contains(parent) {
            return;
        }
        match w.notify.watch(parent, RecursiveMode::NonRecursive) {
            Ok(()) => {
                w.parents.insert(parent.to_path_buf());
            }
            Err(e) => {
                tracing::warn!(folder = %crate::outside::path(folder), error = %e, "cannot watch for the folder's return; the periodic rescan will find it")
            }
        }
    }

    /// A mapped folder is back: watch it again (its subfolders: by the scan that follows).
    pub fn rewatch(&mut self, mapping: usize, folder: &Path) -> Result<(), String> {
        let mut w = self.lock();
        if let Some(parent) = folder.parent() {
            if w.parents.remove(parent) && !w.kept.contains(parent) {
                let _ = w.notify.unwatch(parent);
            }
        }
        if let Some(set) = w.watched.get_mut(mapping) {
            set.clear();
        }
        w.notify
            .watch(folder, RecursiveMode::NonRecursive)
            .map_err(|e| describe_watch_error(folder, &e))?;
        if let Some(set) = w.watched.get_mut(mapping) {
            set.insert(folder.to_path_buf(), dir_id(folder));
        }
        Ok(())
    }

    /// Watch `dir`, a subfolder of `mapping`'s folder about to be listed; `false` when it is
    /// not watched (the mapping's cap is reached, or the watch failed): its files are found
    /// by scans only.
    pub fn watch_dir(&self, mapping: usize, dir: &Path) -> bool {
        let mut w = self.lock();
        let w = &mut *w;
        let (Some(set), Some(left)) = (w.watched.get_mut(mapping), w.unwatched.get_mut(mapping))
        else {
            return false;
        };
        if set.contains_key(dir) {
            return true;
        }
        if set.len() >= MAX_WATCHES_PER_MAPPING {
            left.insert(dir.to_path_buf());
            return false;
        }
        match w.notify.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                set.insert(dir.to_path_buf(), dir_id(dir));
                true
            }
            Err(e) => {
                tracing::debug!(dir = %crate::outside::path(dir), error = %e, "cannot watch a subfolder; the rescan finds its files");
                left.insert(dir.to_path_buf());
                false
            }
        }
    }

    /// After a full scan of `mapping`: the folders it listed (`dirs`) are all there is, so
    /// the watches of folders gone are dropped (their room is free again) and the count of
    /// unwatched ones starts again from what this scan left. Returns how many subfolders are
    /// unwatched now.
    pub fn settle_watches(&self, mapping: usize, dirs: &[PathBuf]) -> usize {
        let mut w = self.lock();
        let w = &mut *w;
        let keep: std::collections::HashSet<&Path> = dirs.iter().map(|d| d.as_path()).collect();
        let Some(set) = w.watched.get_mut(mapping) else {
            return 0;
        };
        let gone: Vec<PathBuf> = set
            .keys()
            .filter(|d| !keep.contains(d.as_path()))
            .cloned()
            .collect();
        for d in gone {
            let id = set.remove(&d).flatten();
            // Renamed within the folder: the watch is the new path's too. Deleted: the kernel
            // has dropped it already. Moved out of the folder: dropped here, so a neighbour's
            // folders moved away cannot keep watches past the cap.
            if id.is_none() || !set.values().any(|v| *v == id) {
                let _ = w.notify.unwatch(&d);
            }
        }
        let Some(left) = w.unwatched.get_mut(mapping) else {
            return 0;
        };
        left.retain(|d| keep.contains(d.as_path()));
        left.len()
    }
}

impl FolderWatcher {
    /// Watch every mapping's folder that exists (itself only: a recursive mapping's
    /// subfolders are watched by its scans); returns the watcher and, per mapping, why it
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
        let mut watched = vec![std::collections::HashMap::new(); folders.len()];
        for (i, (folder, _)) in folders.iter().enumerate() {
            match watcher.watch(folder, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched[i].insert(folder.clone(), dir_id(folder));
                }
                Err(e) => problems.push((i, describe_watch_error(folder, &e))),
            }
        }
        let mut fw = FolderWatcher {
            inner: std::sync::Arc::new(std::sync::Mutex::new(Watches {
                notify: watcher,
                parents: Default::default(),
                kept: Default::default(),
                unwatched: vec![Default::default(); folders.len()],
                watched,
            })),
        };
        // Windows (ReadDirectoryChangesW): the removal of a watched folder itself is reported
        // by no watch of it, only by its parent's, so each watched folder's parent is watched
        // too, for good (events for the parent's other entries belong to no mapping and go).
        if cfg!(windows) {
            let mut w = fw.lock();
            for (i, (folder, _)) in folders.iter().enumerate() {
                if problems.iter().any(|(p, _)| *p == i) {
                    continue;
                }
                let Some(parent) = folder.parent() else {
                    continue;
                };
                // Watched already as a mapped folder (notify would replace that watch, and
                // its mode, with this one).
                if w.kept.contains(parent) || folders.iter().any(|(f, _)| f == parent) {
                    continue;
                }
                match w.notify.watch(parent, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        w.kept.insert(parent.to_path_buf());
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

/// A watched folder's (device, inode), to tell a renamed folder's shared watch.
fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(dir)
            .ok()
            .map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
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
