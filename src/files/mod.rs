//! Files in mapped folders: the one place that opens, hashes, moves, writes beside and deletes
//! them. A drop folder may be shared (a scanner, a colleague with group write access), so a path
//! in it is never trusted between two system calls:
//!
//! - a file is opened once, **beneath** its mapped folder's directory descriptor, without
//!   following any link (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` on Linux, else a
//!   component-by-component `O_NOFOLLOW` walk), `O_NONBLOCK` (a FIFO cannot hang the agent) and
//!   regular files only; with `follow_symlinks = true` a link is followed only when it resolves
//!   inside the folder, and the resolved path is then opened the same way;
//! - the descriptor's `fstat` ([`Identity`]) is compared with what settled, and reads
//!   ([`SafeFile::read_at`]) never go past the size seen at open, so a file that grows, or a
//!   device swapped in, cannot make the agent read without end;
//! - moves, reason files and deletes act through directory descriptors after checking that the
//!   entry is still the file that was sent; destinations must be real directories owned by the
//!   user; nothing is created over an existing name (`O_EXCL`, `RENAME_NOREPLACE`).
//!
//! This module never decides what to send and never talks to the network.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(not(unix))]
mod portable;
#[cfg(not(unix))]
use portable as imp;

use sha2::Digest as _;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};

/// What `fstat` said about an open file: which file it is (device, inode) and which version
/// (size, modification time in ns since the epoch, `None` where the platform has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: Option<i64>,
    /// Status-change time (ns), where the platform has one: it moves on every write and cannot
    /// be set back. Not compared by [`Identity::matches`]; the core compares it.
    pub ctime_ns: Option<i64>,
    /// The owner (uid), where the platform has one. Not compared by [`Identity::matches`].
    pub owner: Option<u32>,
}

/// The version a caller expects to find: what settled (size, mtime), and, once a file has been
/// opened, which file it was (device, inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub size: u64,
    /// `None`: not compared (a ledger entry that recorded no time).
    pub mtime_ns: Option<i64>,
    /// `None`: not compared (the file was never opened by this process).
    pub dev_ino: Option<(u64, u64)>,
}

impl Expected {
    /// The version the settle rule saw (a stat of the path).
    pub fn settled(size: u64, mtime_ns: Option<i64>) -> Expected {
        Expected {
            size,
            mtime_ns,
            dev_ino: None,
        }
    }

    /// Exactly the file that was opened (and hashed, and sent).
    pub fn exact(id: Identity) -> Expected {
        Expected {
            size: id.size,
            mtime_ns: id.mtime_ns,
            dev_ino: Some((id.dev, id.ino)),
        }
    }
}

impl Identity {
    /// This identity as the core compares files (a time the platform has none of is 0).
    pub fn file_stat(&self) -> crate::core::model::FileStat {
        crate::core::model::FileStat {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime_ns: self.mtime_ns.unwrap_or(0),
            ctime_ns: self.ctime_ns.unwrap_or(0),
            owner: self.owner,
        }
    }

    /// Same size, same time (when expected) and same device and inode (when expected).
    pub fn matches(&self, e: &Expected) -> bool {
        self.size == e.size
            && e.mtime_ns.is_none_or(|t| self.mtime_ns == Some(t))
            && e.dev_ino.is_none_or(|d| d == (self.dev, self.ino))
    }

    /// Which file is at `path` now, and which version, as `meta` (a stat of that path) says
    /// it; on Windows, where a stat by path knows no file index nor change time, through a
    /// handle opened for the file's attributes only.
    pub fn at(path: &Path, meta: &std::fs::Metadata) -> io::Result<Identity> {
        imp::identity_at(path, meta)
    }

    #[cfg_attr(windows, allow(dead_code))]
    fn of(meta: &std::fs::Metadata) -> Identity {
        let (dev, ino) = imp::dev_ino(meta);
        Identity {
            dev,
            ino,
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            ctime_ns: imp::ctime_ns(meta),
            owner: imp::owner(meta),
        }
    }
}

/// A regular file opened beneath its mapped folder. Every read is positional and stops at the
/// size `fstat` reported at open ([`SafeFile::len`]); share it freely across threads (`&self`).
#[derive(Debug)]
pub struct SafeFile {
    file: std::fs::File,
    identity: Identity,
    /// The link count `fstat` reported at open (1 where the platform has none).
    links: u64,
}

impl SafeFile {
    /// Open `rel` (relative to the mapped folder `root`; an absolute path under `root` is
    /// accepted too) for reading. Without `follow_links` any symbolic link on the way, the last
    /// component included, is an error; with it, a link is followed only when everything
    /// resolves inside `root`. Anything but a regular file is an error.
    pub fn open_beneath(root: &Path, rel: &Path, follow_links: bool) -> io::Result<SafeFile> {
        SafeFile::open_within(root, rel, follow_links, true)
    }

    /// [`SafeFile::open_beneath`]; without `cross_mounts` a mount point on the way is refused
    /// (an error of kind `CrossesDevices`, where `openat2` can tell) before the mount is asked
    /// anything: a folder a neighbour mounted a file system on after the file was seen.
    pub fn open_within(
        root: &Path,
        rel: &Path,
        follow_links: bool,
        cross_mounts: bool,
    ) -> io::Result<SafeFile> {
        let (root, rel) = resolve(root, rel, follow_links)?;
        let file = imp::open_file_beneath(&root, &rel, !cross_mounts)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(not_regular(&rel));
        }
        let (identity, links) = imp::describe(&file, &meta)?;
        Ok(SafeFile {
            identity,
            links,
            file,
        })
    }

    /// How many names the file had at open: more than one is a hard link, perhaps to a file
    /// outside the folder (see `Mapping::allow_hard_links`).
    pub fn links(&self) -> u64 {
        self.links
    }

    /// What `fstat` said at open.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The size at open: no read goes past it.
    pub fn len(&self) -> u64 {
        self.identity.size
    }

    /// Whether the file is empty (at open).
    pub fn is_empty(&self) -> bool {
        self.identity.size == 0
    }

    /// Whether this is the version expected (see [`Identity::matches`]).
    pub fn matches(&self, expected: &Expected) -> bool {
        self.identity.matches(expected)
    }

    /// Read at `offset` into `buf`, never past [`SafeFile::len`]; 0 at or past the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let room = self.identity.size.saturating_sub(offset);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        imp::read_at(&self.file, &mut buf[..want], offset)
    }

    /// Fill `buf` from `offset`. `UnexpectedEof` if the range passes [`SafeFile::len`] or the
    /// file shrank since it was opened (it changed: do not send it).
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file is shorter than when it was opened: it changed",
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Feed bytes `start..end` to `hasher` (e.g. the part of an upload already sent, on a
    /// resume). Errors like [`SafeFile::read_exact_at`] when the range is not all there.
    pub fn hash_range(&self, start: u64, end: u64, hasher: &mut sha2::Sha256) -> io::Result<()> {
        let mut buf = vec![0u8; HASH_BLOCK.min(end.saturating_sub(start) as usize).max(1)];
        let mut at = start;
        while at < end {
            let n = buf
                .len()
                .min(usize::try_from(end - at).unwrap_or(usize::MAX));
            self.read_exact_at(&mut buf[..n], at)?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    }

    /// SHA-256 (hex) of the whole file as opened (`0..len()`).
    pub fn sha256(&self) -> io::Result<String> {
        let mut h = sha2::Sha256::new();
        self.hash_range(0, self.identity.size, &mut h)?;
        Ok(hex::encode(h.finalize()))
    }
}

const HASH_BLOCK: usize = 256 * 1024;

/// Open `path` (absolute, under `root`) beneath `root`, check it is the version that settled
/// and hash it, on a blocking thread. The identity is returned so that the upload can insist on
/// the very same file ([`Expected::exact`]).
pub async fn sha256_settled(
    root: PathBuf,
    path: PathBuf,
    follow_links: bool,
    expected: Expected,
) -> io::Result<(String, Identity)> {
    tokio::task::spawn_blocking(move || {
        let f = SafeFile::open_beneath(&root, &path, follow_links)?;
        if !f.matches(&expected) {
            return Err(changed(&path));
        }
        Ok((f.sha256()?, f.identity()))
    })
    .await
    .map_err(io::Error::other)?
}

/// Move the file at `rel` under `root` into `dest` (`sent_dir` or `failed_dir`) without ever
/// replacing anything there: a taken name gets " (1)", " (2)", ... before the extension. The
/// file must still be the `expected` version, and `dest` a real directory owned by the user
/// (created when missing). With `reason`, `NAME.reason.txt` holding it is created beside the
/// moved file (0600, never through a link, never over an existing file). Returns the new path.
pub fn move_no_clobber(
    root: &Path,
    rel: &Path,
    follow_links: bool,
    expected: &Expected,
    dest: &Path,
    reason: Option<&str>,
) -> io::Result<PathBuf> {
    let (src_root, src_rel) = resolve(root, rel, follow_links)?;
    let (parent, name) = split_parent(&src_rel)?;
    let src_dir = imp::Dir::open_beneath(&src_root, parent)?;
    let id = src_dir.identity_of(name)?;
    if !id.matches(expected) {
        return Err(changed(rel));
    }
    let dest_dir = imp::Dir::open_destination(root, dest)?;
    for n in 0..ASIDE_NAMES {
        let candidate = aside_name(name, reason.is_some(), n);
        let reason_name = reason.map(|_| {
            let mut r = candidate.clone();
            r.push(REASON_SUFFIX);
            r
        });
        if let (Some(text), Some(rn)) = (reason, &reason_name) {
            match dest_dir.create_new(rn, text.as_bytes()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        match src_dir.move_to(name, &dest_dir, &candidate) {
            Ok(()) => return Ok(dest.join(&candidate)),
            Err(e) => {
                if let Some(rn) = &reason_name {
                    let _ = dest_dir.remove_own(rn);
                }
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
            }
        }
    }
    Err(io::Error::other("no free name in the destination folder"))
}

/// How many names [`move_no_clobber`] tries in its destination.
const ASIDE_NAMES: u32 = 10_000;

/// The `n`th name [`move_no_clobber`] tries for `name` in its destination: the name itself,
/// then `NAME (n).ext`. Built from the name's own bytes: a name that is not UTF-8 keeps them.
/// A name near the filesystem's limit is shortened (its stem, keeping the extension) so that
/// ` (n)` and `.reason.txt` still fit: a neighbour's 250-byte name must not keep a failed file
/// out of `failed_dir`.
fn aside_name(name: &OsStr, reason: bool, n: u32) -> OsString {
    let extra = if reason { REASON_SUFFIX.len() } else { 0 };
    if n == 0 && name.len() + extra <= NAME_MAX {
        return name.to_os_string();
    }
    let stem = Path::new(name).file_stem().unwrap_or_default();
    let (stem, ext) = match Path::new(name).extension() {
        Some(e) if e.len() <= 16 => (stem, Some(e)),
        _ => (name, None),
    };
    let suffix = if n == 0 {
        String::new()
    } else {
        format!(" ({n})")
    };
    let room = NAME_MAX - extra - suffix.len() - ext.map_or(0, |e| e.len() + 1);
    let mut c = cut_name(stem, room);
    c.push(suffix);
    if let Some(ext) = ext {
        c.push(".");
        c.push(ext);
    }
    c
}

/// Where [`move_no_clobber`] put the file `rel` (under `root`) in `dest`, if it did: the first
/// of the names it tries that holds exactly the `expected` file (same device and inode, size
/// and time; an expectation without an identity finds nothing). For a move whose answer a
/// crash lost: the file is at its path, or here. The names are tried in `move_no_clobber`'s
/// order, up to the first one it would have taken (neither it nor its reason file there).
pub fn find_moved(
    root: &Path,
    rel: &Path,
    dest: &Path,
    expected: &Expected,
) -> io::Result<Option<PathBuf>> {
    if expected.dev_ino.is_none() {
        return Ok(None);
    }
    let Some(name) = rel.file_name() else {
        return Ok(None);
    };
    let dir = imp::Dir::open_destination(root, dest)?;
    for n in 0..ASIDE_NAMES {
        let candidate = aside_name(name, true, n);
        match dir.identity_of(&candidate) {
            Ok(id) if id.matches(expected) => return Ok(Some(dest.join(&candidate))),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut reason = candidate;
                reason.push(REASON_SUFFIX);
                match dir.identity_of(&reason) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    _ => continue,
                }
            }
            // A link or a folder under that name: not it.
            Err(_) => continue,
        }
    }
    Ok(None)
}

/// Move the file at `from` (in `from_dir`: a `failed_dir` a failed file was moved into) back
/// to `rel` under the mapped folder `root`: only if it is still the `expected` version, never
/// over anything at `rel` (a file there now is an error saying so), through directory
/// descriptors (`from_dir` a real folder of the user's, `rel`'s folder reached beneath `root`
/// with no link on the way, as every move here). Its reason file beside it (`NAME.reason.txt`,
/// a regular file) goes with it. Returns the path it is at now.
pub fn move_back(
    root: &Path,
    from_dir: &Path,
    from: &Path,
    rel: &Path,
    expected: &Expected,
) -> io::Result<PathBuf> {
    let name = from
        .strip_prefix(from_dir)
        .ok()
        .filter(|r| r.components().count() == 1)
        .and_then(|r| r.file_name())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not in {}",
                    crate::outside::path(from),
                    crate::outside::path(from_dir)
                ),
            )
        })?;
    let src_dir = imp::Dir::open_destination(root, from_dir)?;
    if !src_dir.identity_of(name)?.matches(expected) {
        return Err(io::Error::other(format!(
            "{} is no longer the file that failed (replaced or changed); left where it is",
            crate::outside::path(from)
        )));
    }
    let (_, clean) = resolve(root, rel, false)?;
    let (parent, dest_name) = split_parent(&clean)?;
    let dest_dir = imp::Dir::open_beneath(root, parent)?;
    match src_dir.move_to(name, &dest_dir, dest_name) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "another file is at {} now; nothing was moved",
                    crate::outside::path(&root.join(&clean))
                ),
            ))
        }
        Err(e) => return Err(e),
    }
    unlink_reason(&src_dir, name);
    Ok(root.join(clean))
}

/// The reason file of `from` (a failed file that was in `from_dir`, the `failed_dir` it was
/// moved into, and has left it: put back by hand) goes: the file it explained is retried. Through
/// the folder's descriptor, as [`move_back`]; a reason file that cannot go stays (harmless).
pub fn forget_reason(root: &Path, from_dir: &Path, from: &Path) {
    let Some(name) = from
        .strip_prefix(from_dir)
        .ok()
        .filter(|r| r.components().count() == 1)
        .and_then(|r| r.file_name())
    else {
        return;
    };
    if let Ok(dir) = imp::Dir::open_destination(root, from_dir) {
        // Only once the file itself is not there: its reason still explains it.
        if matches!(dir.identity_of(name), Err(e) if e.kind() == io::ErrorKind::NotFound) {
            unlink_reason(&dir, name);
        }
    }
}

/// `NAME.reason.txt` beside `name` in `dir`, if it is a regular file there, goes.
fn unlink_reason(dir: &imp::Dir, name: &OsStr) {
    let mut reason = name.to_os_string();
    reason.push(REASON_SUFFIX);
    if dir.identity_of(&reason).is_ok() {
        // Its reason told why it failed; a reason file that cannot go stays (harmless).
        let _ = dir.unlink(&reason);
    }
}

/// The entries of the folder `rel` beneath the mapped folder `root` (`""`: the folder itself),
/// opened with no link on the way and listed through that descriptor, so that a subfolder a
/// neighbour swaps for a link between its check and its listing is refused (an error saying
/// so), never listed through the link. Where a descriptor cannot be listed by its name the
/// folder is listed by its path after the same check. Each entry's `metadata` is its own
/// `lstat` in the folder listed; its `path` may not be under `root`: join `file_name` to the
/// folder's path.
pub fn read_dir_beneath(root: &Path, rel: &Path) -> io::Result<std::fs::ReadDir> {
    let rel = rel.strip_prefix(root).unwrap_or(rel);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(outside(rel));
    }
    let dir = imp::Dir::open_beneath(root, rel)?;
    match dir.read_dir() {
        Some(listed) => listed,
        None => std::fs::read_dir(root.join(rel)),
    }
}

/// Which file system and mount an entry is on, as a scan compares it with its folder's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub dev: u64,
    /// The mount's id (Linux 5.8+): tells a bind mount of the same file system apart.
    pub mount: Option<u64>,
    /// The entry is the root of a mount (Linux 5.8+).
    pub mount_root: bool,
}

impl Place {
    /// Whether an entry at `self`, listed in a folder at `folder`, is a mount point: another
    /// device, another mount, or a mount's root. (A btrfs subvolume is another device too.)
    pub fn is_mount_in(&self, folder: &Place) -> bool {
        self.mount_root
            || self.dev != folder.dev
            || matches!((self.mount, folder.mount), (Some(a), Some(b)) if a != b)
    }
}

/// What an entry is, as listed (a link is a link: never followed here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Link,
    Other,
}

/// An entry of a listed folder: its kind, where it lives and its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryStat {
    pub kind: EntryKind,
    pub place: Place,
    pub identity: Identity,
}

impl EntryStat {
    fn of(meta: &std::fs::Metadata) -> EntryStat {
        let t = meta.file_type();
        let kind = if t.is_symlink() {
            EntryKind::Link
        } else if t.is_dir() {
            EntryKind::Dir
        } else if t.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        };
        let identity = Identity::of(meta);
        EntryStat {
            kind,
            place: Place {
                dev: identity.dev,
                mount: None,
                mount_root: false,
            },
            identity,
        }
    }
}

/// A folder of a mapping being listed ([`list_beneath`]), and the way to look at its entries
/// without following a link and without waiting on a mount's server.
pub struct Listing {
    entries: std::fs::ReadDir,
    dir: Option<imp::Dir>,
    path: PathBuf,
}

impl Listing {
    /// The names in the folder (`.` and `..` left out).
    pub fn entries(&mut self) -> &mut std::fs::ReadDir {
        &mut self.entries
    }

    /// The entry `name` of this folder as it is (a link is not followed). Through the folder's
    /// descriptor where there is one: on Linux with `statx(AT_STATX_DONT_SYNC)`, so a FUSE or
    /// network file system mounted on the entry answers from what the kernel knows and never
    /// makes the scan wait for its server.
    pub fn stat(&self, name: &OsStr) -> io::Result<EntryStat> {
        if let Some(found) = self.dir.as_ref().and_then(|d| d.stat_entry(name)) {
            return found;
        }
        let path = self.path.join(name);
        let meta = std::fs::symlink_metadata(&path)?;
        #[cfg_attr(not(windows), allow(unused_mut))]
        let mut found = EntryStat::of(&meta);
        // Windows: a stat by path knows no file index nor change time; a file's identity is
        // asked of a handle, as every other look at it does. Without it, a file the scan
        // found was never the version the ledger recorded (device, inode and ctime 0): each
        // unchanged file settled again at every start. (Its place stays the stat's, as the
        // folder's own.)
        #[cfg(windows)]
        if found.kind == EntryKind::File {
            if let Ok(id) = Identity::at(&path, &meta) {
                found.identity = id;
            }
        }
        Ok(found)
    }
}

/// Whether `path` (in the mapped folder `root`) is still there, asked without following a link
/// and without crossing a mount point (where `openat2` can refuse one), so that a file system a
/// neighbour mounted below the folder, whose `stat` may never answer, is not asked. `true`
/// when it cannot be told (a mount or a link on the way, no permission): the caller keeps what
/// it would otherwise forget.
pub fn present_beneath(root: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(root).unwrap_or(path);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return true;
    }
    imp::present_beneath(root, rel)
}

/// What keeps `path` (in the mapped folder `root`) from being reached beneath it: a mount point
/// on the way, or a link (`None`: neither; it may be there or not). Asks nothing of a mount.
pub fn in_the_way_beneath(root: &Path, path: &Path) -> Option<&'static str> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Some("a path out of the folder");
    }
    imp::in_the_way_beneath(root, rel)
}

/// The size of the file at `path` (in the mapped folder `root`), asked as
/// [`present_beneath`] asks (no link, no mount point crossed); `None` when it cannot be told.
pub fn len_beneath(root: &Path, path: &Path) -> Option<u64> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    imp::len_beneath(root, rel)
}

/// Where the mapped folder `folder` really is: its path with the links on it resolved, a link
/// followed only when it is the user's or root's (on Unix): a neighbour who can write the
/// folder's parent may put a link of theirs in its place, pointing at a folder of the user's.
/// Every open in a mapped folder starts from the folder reached this way.
pub fn real_folder(folder: &Path) -> io::Result<PathBuf> {
    imp::real_dir(folder)
}

/// Forget which folder each mapped folder's path led to when first opened (a reload of the
/// config): on Unix a later open refuses another folder of the user's at that path when its
/// parent lets others rename entries (someone may have moved it there).
pub fn unpin_folders() {
    imp::unpin_folders()
}

/// Where the folder `folder` lives (a mapped folder: its path is the user's, taken as given).
pub fn place_of(folder: &Path) -> io::Result<Place> {
    let dir = imp::Dir::open_beneath(folder, Path::new(""))?;
    if let Some(found) = dir.stat_entry(OsStr::new(".")) {
        return found.map(|e| e.place);
    }
    std::fs::metadata(folder).map(|m| EntryStat::of(&m).place)
}

/// [`read_dir_beneath`] as a [`Listing`]; without `cross_mounts` a folder below the mapped one
/// that is a mount point is refused (EXDEV, where `openat2` can say so) before anything on the
/// mount is asked. `path` is the folder's own path (`root` joined with `rel`).
pub fn list_beneath(root: &Path, rel: &Path, cross_mounts: bool) -> io::Result<Listing> {
    let path = root.join(rel.strip_prefix(root).unwrap_or(rel));
    let rel = rel.strip_prefix(root).unwrap_or(rel);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(outside(rel));
    }
    let dir = imp::Dir::open_beneath_within(root, rel, !cross_mounts)?;
    let entries = match dir.read_dir() {
        Some(listed) => listed?,
        None => std::fs::read_dir(&path)?,
    };
    Ok(Listing {
        entries,
        dir: Some(dir),
        path,
    })
}

/// The folder `path` (under the mapped folder `root`) listed with the links on the way below
/// `root` followed: a mapping that follows links (the caller checked where they lead).
pub fn list_path(root: &Path, path: &Path) -> io::Result<Listing> {
    let rel = path.strip_prefix(root).map_err(|_| outside(path))?;
    let dir = imp::Dir::open_followed(root, rel)?;
    let entries = match dir.read_dir() {
        Some(listed) => listed?,
        None => std::fs::read_dir(path)?,
    };
    Ok(Listing {
        entries,
        dir: Some(dir),
        path: path.to_path_buf(),
    })
}

/// A folder below a mapped one that is another file system: not entered (told apart on Unix).
#[cfg(unix)]
fn mount_point(rel: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::CrossesDevices,
        format!(
            "{} is another file system (a mount point); it is not entered unless the mapping says cross_mounts = true",
            crate::outside::path(rel)
        ),
    )
}

/// What a failed file's reason file adds to its name.
const REASON_SUFFIX: &str = ".reason.txt";

/// The longest name of a directory entry, in bytes (`NAME_MAX` of Linux, macOS and the BSDs).
const NAME_MAX: usize = 255;

/// `name` cut to at most `max` bytes: at a character boundary when it is UTF-8, else (a name
/// that is not) at a byte.
fn cut_name(name: &OsStr, max: usize) -> OsString {
    if name.len() <= max {
        return name.to_os_string();
    }
    if let Some(text) = name.to_str() {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        return text[..end].into();
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        OsStr::from_bytes(&name.as_bytes()[..max]).to_os_string()
    }
    #[cfg(not(unix))]
    {
        let text = name.to_string_lossy();
        let mut end = max.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].into()
    }
}

/// Delete the file at `rel` under `root` if it is still the `expected` version; through its
/// parent directory's descriptor, so a folder swapped for a link cannot redirect the delete.
pub fn remove(root: &Path, rel: &Path, follow_links: bool, expected: &Expected) -> io::Result<()> {
    let (root, rel) = resolve(root, rel, follow_links)?;
    let (parent, name) = split_parent(&rel)?;
    let dir = imp::Dir::open_beneath(&root, parent)?;
    if !dir.identity_of(name)?.matches(expected) {
        return Err(changed(&rel));
    }
    dir.unlink(name)
}

/// `rel` made relative to `root` and checked (no `..`, no root); with `follow_links`, resolved
/// (links followed) and required to stay inside `root`, then given relative to the resolved
/// root, so that the open itself still follows nothing.
fn resolve(root: &Path, rel: &Path, follow_links: bool) -> io::Result<(PathBuf, PathBuf)> {
    let rel = rel.strip_prefix(root).unwrap_or(rel);
    let mut clean = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::CurDir => {}
            _ => return Err(outside(rel)),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no file name under the mapped folder",
        ));
    }
    if !follow_links {
        return Ok((root.to_path_buf(), clean));
    }
    let real_root = real_folder(root)?;
    let real = std::fs::canonicalize(real_root.join(&clean))?;
    match real.strip_prefix(&real_root) {
        Ok(r) if !r.as_os_str().is_empty() => Ok((real_root.clone(), r.to_path_buf())),
        _ => Err(outside(&clean)),
    }
}

fn split_parent(rel: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    Ok((rel.parent().unwrap_or(Path::new("")), name))
}

fn outside(rel: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} leads out of the mapped folder; outbox reads and writes only inside it",
            crate::outside::printable(&rel.to_string_lossy())
        ),
    )
}

fn changed(rel: &Path) -> io::Error {
    io::Error::other(format!(
        "{} is no longer the file that was sent (replaced or changed); left where it is",
        crate::outside::printable(&rel.to_string_lossy())
    ))
}

fn not_regular(rel: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is not a regular file (a device, FIFO, socket or folder); only regular files are attached",
            crate::outside::printable(&rel.to_string_lossy())
        ),
    )
}

/// A link met where none is followed.
fn link_refused(rel: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} is or passes through a symbolic link (or a file where a folder should be); links in a mapped folder are not followed (follow_symlinks = false), nor out of it",
            crate::outside::printable(&rel.to_string_lossy())
        ),
    )
}

#[cfg(all(test, unix))]
mod tests;

/// Modification time of `meta` in nanoseconds since the Unix epoch (negative before 1970);
/// `None` where the platform does not report it or it is out of range.
pub fn mtime_ns(meta: &std::fs::Metadata) -> Option<i64> {
    let modified = meta.modified().ok()?;
    let nanos = match modified.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).ok()?,
        Err(e) => -i128::try_from(e.duration().as_nanos()).ok()?,
    };
    i64::try_from(nanos).ok()
}
