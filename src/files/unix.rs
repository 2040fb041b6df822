//! Unix: descriptors all the way. `openat2` (Linux 5.6+) resolves a whole path beneath the
//! folder's descriptor refusing every link; where it is missing (older kernels, seccomp filters
//! that answer ENOSYS/EPERM, macOS, the BSDs) the path is walked one component at a time with
//! `O_NOFOLLOW | O_DIRECTORY`, which refuses the same links.

use super::{link_refused, not_regular, outside, Identity};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Component, Path};

/// A file to read: never a link, never blocking on a FIFO, never our controlling terminal.
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);
/// A directory on the way: a real one, never a link.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

pub(super) fn dev_ino(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

pub(super) fn owner(meta: &std::fs::Metadata) -> Option<u32> {
    Some(meta.uid())
}

pub(super) fn ctime_ns(meta: &std::fs::Metadata) -> Option<i64> {
    meta.ctime()
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(meta.ctime_nsec()))
}

/// What an open file is, and its link count: its `fstat`.
pub(super) fn describe(
    _file: &std::fs::File,
    meta: &std::fs::Metadata,
) -> io::Result<(Identity, u64)> {
    Ok((Identity::of(meta), meta.nlink()))
}

/// What the file at a path is: its `stat` says it all.
pub(super) fn identity_at(_path: &Path, meta: &std::fs::Metadata) -> io::Result<Identity> {
    Ok(Identity::of(meta))
}

pub(super) fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    file.read_at(buf, offset)
}

/// The mapped folder itself, opened as [`open_trusted_dir`] opens it; everything below it is
/// resolved without links.
fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let (fd, real) = open_trusted_dir(root)?;
    check_pinned(root, &fd, &real)?;
    Ok(fd)
}

/// The folder each mapped folder's path led to when this process first opened it (device,
/// inode), by the path as configured.
static PINNED: std::sync::Mutex<Option<std::collections::HashMap<std::path::PathBuf, (u64, u64)>>> =
    std::sync::Mutex::new(None);

/// A neighbour who can rename entries in a mapped folder's parent (writable by others, not
/// sticky) can rename another folder of the user's there (a private one beside a team's
/// `drop`) into the mapped folder's place: a real folder of the user's, which no link check
/// sees. So a mapped folder's path that leads to another folder than the one this process
/// first found there is refused when that folder is the user's and its parent lets others
/// rename entries; a new folder of another user's (the neighbour's own) is a drop folder as
/// before, and one in a parent only the user can change is the user's doing.
#[allow(clippy::unnecessary_cast)]
fn check_pinned(root: &Path, fd: &OwnedFd, real: &Path) -> io::Result<()> {
    let st = rustix::fs::fstat(fd)?;
    let now = (st.st_dev as u64, st.st_ino as u64);
    let mut pins = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    let first = *pins
        .get_or_insert_with(Default::default)
        .entry(root.to_path_buf())
        .or_insert(now);
    if first == now {
        return Ok(());
    }
    let me = rustix::process::geteuid().as_raw();
    let parent = real.parent().unwrap_or(Path::new("/"));
    let renamable = rustix::fs::stat(parent).is_ok_and(|p| {
        let mode = p.st_mode as u32;
        let my_group = rustix::process::getegid().as_raw();
        let others_write = mode & 0o002 != 0 || (mode & 0o020 != 0 && p.st_gid as u32 != my_group);
        let trusted_sticky = mode & 0o1000 != 0 && (p.st_uid as u32 == me || p.st_uid == 0);
        others_write && !trusted_sticky
    });
    if st.st_uid as u32 == me && renamable {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is now another folder of yours than the one outbox found there, in a folder others can rename things in ({}): someone may have moved a folder of yours into its place, so it is not used; if you made it, restart outbox (or reload it with SIGHUP)",
                crate::outside::path(root),
                crate::outside::path(parent)
            ),
        ));
    }
    // The neighbour's own folder (a drop folder), or one only the user could have put there:
    // taken as the folder from now on.
    pins.get_or_insert_with(Default::default)
        .insert(root.to_path_buf(), now);
    Ok(())
}

/// Forget which folder each mapped folder's path led to (a reload: the config is read again
/// and the folders found as they are now).
pub(super) fn unpin_folders() {
    *PINNED.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The most links followed on one path (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// One step of a path being walked by [`open_trusted_dir`].
enum Step {
    Root,
    Up,
    Name(std::ffi::OsString),
}

fn steps_of(path: &Path) -> Vec<Step> {
    path.components()
        .filter_map(|c| match c {
            Component::RootDir | Component::Prefix(_) => Some(Step::Root),
            Component::CurDir => None,
            Component::ParentDir => Some(Step::Up),
            Component::Normal(n) => Some(Step::Name(n.to_os_string())),
        })
        .collect()
}

/// Open the folder at `path` (a mapped folder, or a `sent_dir`/`failed_dir` outside it: paths
/// of the user's configuration) one component at a time, and say where it really is (its path
/// with every link resolved). A link on the way is followed only when it belongs to the user
/// or to root: the folder's parent may be a shared one (a team folder the group writes, a
/// sticky `/tmp`), where a neighbour can rename the mapped folder away and put a link of their
/// own in its place, pointing at any folder of the user's (whose files the agent would then
/// attach, move or delete). The link is opened itself (`O_PATH`) before its owner and its
/// target are read, so it cannot be swapped between the two.
pub(super) fn open_trusted_dir(path: &Path) -> io::Result<(OwnedFd, std::path::PathBuf)> {
    let me = rustix::process::geteuid().as_raw();
    let mut todo: std::collections::VecDeque<Step> = steps_of(path).into();
    let (mut cur, mut real) = if path.is_absolute() {
        (
            rustix::fs::openat(CWD, "/", DIR_FLAGS, Mode::empty())?,
            std::path::PathBuf::from("/"),
        )
    } else {
        (
            rustix::fs::openat(CWD, ".", DIR_FLAGS, Mode::empty())?,
            std::env::current_dir()?,
        )
    };
    let mut links = 0;
    while let Some(step) = todo.pop_front() {
        let name = match step {
            Step::Root => {
                cur = rustix::fs::openat(CWD, "/", DIR_FLAGS, Mode::empty())?;
                real = std::path::PathBuf::from("/");
                continue;
            }
            Step::Up => {
                cur = rustix::fs::openat(&cur, "..", DIR_FLAGS, Mode::empty())?;
                real.pop();
                continue;
            }
            Step::Name(n) => n,
        };
        let refused = match rustix::fs::openat(&cur, &name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => {
                cur = fd;
                real.push(&name);
                continue;
            }
            Err(e @ (Errno::LOOP | Errno::NOTDIR | Errno::MLINK)) => e,
            Err(e) => return Err(e.into()),
        };
        let (owner, target) = match read_link(&cur, &name)? {
            Some(link) => link,
            // Not a link: a file where a folder should be.
            None => return Err(refused.into()),
        };
        let at = real.join(&name);
        if owner != me && owner != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is a symbolic link that belongs to another user (uid {owner}), who could point it at any folder of yours; outbox follows a link on a folder's configured path only when it is yours or root's: name the real folder in the config, or make the link yourself",
                    crate::outside::path(&at)
                ),
            ));
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(Errno::LOOP.into());
        }
        for s in steps_of(Path::new(&target)).into_iter().rev() {
            todo.push_front(s);
        }
    }
    Ok((cur, real))
}

/// The owner and the target of the link `name` in `dir`, read from the link itself (opened
/// `O_PATH`, so both are the same link's); `None` when `name` is not a link.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_link(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<(u32, std::ffi::OsString)>> {
    use std::os::unix::ffi::OsStringExt;
    let link = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&link)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Symlink {
        return Ok(None);
    }
    let target = rustix::fs::readlinkat(&link, "", Vec::new())?;
    Ok(Some((
        st.st_uid,
        std::ffi::OsString::from_vec(target.into_bytes()),
    )))
}

/// [`read_link`] where `O_PATH` is missing: the link's `lstat` before and after its target is
/// read must agree (the same inode and owner), or the link changed meanwhile.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_link(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<(u32, std::ffi::OsString)>> {
    use std::os::unix::ffi::OsStringExt;
    let before = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if rustix::fs::FileType::from_raw_mode(before.st_mode) != rustix::fs::FileType::Symlink {
        return Ok(None);
    }
    let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
    let after = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if (after.st_dev, after.st_ino, after.st_uid) != (before.st_dev, before.st_ino, before.st_uid) {
        return Err(io::Error::other(
            "a link on a folder's path changed while it was read; try again",
        ));
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(Some((
        before.st_uid as u32,
        std::ffi::OsString::from_vec(target.into_bytes()),
    )))
}

/// Where the folder at `path` really is, resolved as [`open_trusted_dir`] resolves it.
pub(super) fn real_dir(path: &Path) -> io::Result<std::path::PathBuf> {
    open_trusted_dir(path).map(|(_, real)| real)
}

pub(super) fn open_file_beneath(
    root: &Path,
    rel: &Path,
    no_xdev: bool,
) -> io::Result<std::fs::File> {
    let root_fd = open_root(root)?;
    let fd = match open_beneath_as(root_fd.as_fd(), rel, FILE_FLAGS, no_xdev) {
        Err(Errno::XDEV) if no_xdev => return Err(super::mount_point(rel)),
        other => other.map_err(|e| explain(e, rel))?,
    };
    Ok(std::fs::File::from(fd))
}

/// `rel` (plain components only, checked by the caller) beneath `root`, no link anywhere.
fn open_beneath(root: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    open_beneath_as(root, rel, flags, false)
}

/// [`open_beneath`]; with `no_xdev`, no mount point crossed on the way either (EXDEV): the
/// kernel refuses it while resolving (`RESOLVE_NO_XDEV`), before the mount is asked anything.
fn open_beneath_as(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    no_xdev: bool,
) -> Result<OwnedFd, Errno> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static HAVE_OPENAT2: AtomicBool = AtomicBool::new(true);
        if HAVE_OPENAT2.load(Ordering::Relaxed) {
            use rustix::fs::ResolveFlags;
            let rel = if rel.as_os_str().is_empty() {
                Path::new(".")
            } else {
                rel
            };
            match rustix::fs::openat2(
                root,
                rel,
                flags,
                Mode::empty(),
                ResolveFlags::BENEATH
                    | ResolveFlags::NO_SYMLINKS
                    | ResolveFlags::NO_MAGICLINKS
                    | if no_xdev {
                        ResolveFlags::NO_XDEV
                    } else {
                        ResolveFlags::empty()
                    },
            ) {
                Err(Errno::NOSYS) | Err(Errno::PERM) => {
                    HAVE_OPENAT2.store(false, Ordering::Relaxed);
                }
                other => return other,
            }
        }
    }
    let fd = walk(root, rel, flags)?;
    // The walk cannot refuse a mount on the way; the end at least is on the folder's device.
    if no_xdev && rustix::fs::fstat(&fd)?.st_dev != rustix::fs::fstat(root)?.st_dev {
        return Err(Errno::XDEV);
    }
    Ok(fd)
}

/// [`super::present_beneath`]: `rel` opened `O_PATH` beneath `root`, no link, no mount point.
pub(super) fn present_beneath(root: &Path, rel: &Path) -> bool {
    let Ok(root_fd) = open_root(root) else {
        return true;
    };
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    !matches!(
        open_beneath_as(root_fd.as_fd(), rel, flags, true),
        Err(Errno::NOENT) | Err(Errno::NOTDIR)
    )
}

/// [`super::in_the_way_beneath`]: `rel` opened `O_PATH` beneath `root`, no link, no mount.
pub(super) fn in_the_way_beneath(root: &Path, rel: &Path) -> Option<&'static str> {
    let root_fd = open_root(root).ok()?;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match open_beneath_as(root_fd.as_fd(), rel, flags, true) {
        Err(Errno::XDEV) => Some("another file system (a mount point)"),
        Err(Errno::LOOP) => Some("a symbolic link"),
        _ => None,
    }
}

/// [`super::len_beneath`]: `fstat` of `rel` opened `O_PATH` beneath `root` (no link, no mount).
pub(super) fn len_beneath(root: &Path, rel: &Path) -> Option<u64> {
    let root_fd = open_root(root).ok()?;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = open_beneath_as(root_fd.as_fd(), rel, flags, true).ok()?;
    rustix::fs::fstat(&fd).ok().map(|st| st.st_size as u64)
}

/// The fallback: one component at a time, each a real directory, the last opened with `flags`.
pub(super) fn walk(root: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    let names: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::CurDir => None,
            _ => Some(Err(Errno::XDEV)),
        })
        .collect::<Result<_, _>>()?;
    let Some((last, dirs)) = names.split_last() else {
        return rustix::fs::openat(root, ".", flags, Mode::empty());
    };
    let mut cur: Option<OwnedFd> = None;
    for name in dirs {
        let at = cur.as_ref().map_or(root, |f| f.as_fd());
        cur = Some(rustix::fs::openat(at, *name, DIR_FLAGS, Mode::empty())?);
    }
    let at = cur.as_ref().map_or(root, |f| f.as_fd());
    rustix::fs::openat(at, *last, flags, Mode::empty())
}

/// An errno from resolving `rel`, said in words where it is one of ours.
fn explain(e: Errno, rel: &Path) -> io::Error {
    // FreeBSD says EMLINK for O_NOFOLLOW on a link; Linux says ENOTDIR for a link where a
    // directory must be (O_DIRECTORY | O_NOFOLLOW).
    if e == Errno::LOOP || e == Errno::NOTDIR || (cfg!(target_os = "freebsd") && e == Errno::MLINK)
    {
        link_refused(rel)
    } else if e == Errno::XDEV {
        outside(rel)
    } else {
        io::Error::from(e)
    }
}

/// An open directory: the parent of a file in a mapped folder, or a destination.
pub(super) struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// The directory `rel` beneath `root` (`""`: `root` itself), no link on the way.
    pub(super) fn open_beneath(root: &Path, rel: &Path) -> io::Result<Dir> {
        let root_fd = open_root(root)?;
        let fd = open_beneath(root_fd.as_fd(), rel, DIR_FLAGS).map_err(|e| explain(e, rel))?;
        Ok(Dir { fd })
    }

    /// The folder `rel` beneath `root` (`""`: `root` itself) with the links on the way
    /// followed (a mapping that follows links; the caller checked where they lead), `root`
    /// opened as a mapped folder is.
    pub(super) fn open_followed(root: &Path, rel: &Path) -> io::Result<Dir> {
        let root_fd = open_root(root)?;
        if rel.as_os_str().is_empty() {
            return Ok(Dir { fd: root_fd });
        }
        let fd = rustix::fs::openat(
            &root_fd,
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir { fd })
    }

    /// [`Dir::open_beneath`]; with `no_xdev` a mount point on the way is refused (EXDEV,
    /// said as "is another file system (a mount point)").
    pub(super) fn open_beneath_within(root: &Path, rel: &Path, no_xdev: bool) -> io::Result<Dir> {
        let root_fd = open_root(root)?;
        let fd = match open_beneath_as(root_fd.as_fd(), rel, DIR_FLAGS, no_xdev) {
            Err(Errno::XDEV) if no_xdev => return Err(super::mount_point(rel)),
            other => other.map_err(|e| explain(e, rel))?,
        };
        Ok(Dir { fd })
    }

    /// The entry `name` of this folder, not followed if a link, asking nothing of a file
    /// system's server (`AT_STATX_DONT_SYNC`: a FUSE or network mount on the entry answers
    /// from the kernel's cache). `None` where `statx` is missing (the caller stats by path).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn stat_entry(&self, name: &OsStr) -> Option<io::Result<super::EntryStat>> {
        use rustix::fs::{FileType, StatxAttributes, StatxFlags};
        let got = rustix::fs::statx(
            &self.fd,
            name,
            AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC | AtFlags::NO_AUTOMOUNT,
            StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
        );
        let x = match got {
            Err(Errno::NOSYS) | Err(Errno::PERM) => return None,
            Err(e) => return Some(Err(e.into())),
            Ok(x) => x,
        };
        let kind = match FileType::from_raw_mode(x.stx_mode.into()) {
            FileType::Symlink => super::EntryKind::Link,
            FileType::Directory => super::EntryKind::Dir,
            FileType::RegularFile => super::EntryKind::File,
            _ => super::EntryKind::Other,
        };
        let ns = |t: rustix::fs::StatxTimestamp| {
            t.tv_sec
                .checked_mul(1_000_000_000)
                .and_then(|s| s.checked_add(i64::from(t.tv_nsec)))
        };
        #[allow(clippy::unnecessary_cast)]
        let dev = rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor) as u64;
        let has_mount = x.stx_mask & StatxFlags::MNT_ID.bits() != 0;
        Some(Ok(super::EntryStat {
            kind,
            place: super::Place {
                dev,
                mount: has_mount.then_some(x.stx_mnt_id),
                mount_root: x.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
                    && x.stx_attributes.contains(StatxAttributes::MOUNT_ROOT),
            },
            identity: super::Identity {
                dev,
                ino: x.stx_ino,
                size: x.stx_size,
                mtime_ns: ns(x.stx_mtime),
                ctime_ns: ns(x.stx_ctime),
                owner: Some(x.stx_uid),
            },
        }))
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn stat_entry(&self, _name: &OsStr) -> Option<io::Result<super::EntryStat>> {
        None
    }

    /// Its entries, read through this descriptor (not by its path, which a neighbour may have
    /// swapped for a link since it was opened): the descriptor's own name in `/proc/self/fd`
    /// (Linux) or `/dev/fd` (where that is a file-descriptor filesystem) names this very folder.
    /// `None` where neither does.
    pub(super) fn read_dir(&self) -> Option<io::Result<std::fs::ReadDir>> {
        use std::os::fd::AsRawFd;
        let fd = self.fd.as_raw_fd();
        for base in ["/proc/self/fd", "/dev/fd"] {
            let named = Path::new(base).join(fd.to_string());
            match std::fs::read_dir(&named) {
                // It must be this folder: the same device and inode as the descriptor.
                Ok(rd) => {
                    let same = rustix::fs::fstat(&self.fd)
                        .ok()
                        .zip(std::fs::metadata(&named).ok());
                    #[allow(clippy::unnecessary_cast)]
                    if same.is_some_and(|(st, m)| {
                        st.st_dev as u64 == m.dev() && st.st_ino as u64 == m.ino()
                    }) {
                        return Some(Ok(rd));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }

    /// `sent_dir` or `failed_dir`: inside the mapped folder it is walked (and created) beneath
    /// it without links; elsewhere it is the user's own configured path, created as needed, and
    /// its last component must not be a link. Either way it must be owned by the user.
    pub(super) fn open_destination(root: &Path, dest: &Path) -> io::Result<Dir> {
        let shown = || crate::outside::path(dest);
        let fd = match dest.strip_prefix(root) {
            Ok(rel) => {
                let root_fd = open_root(root)?;
                let mode = new_dir_mode(rustix::fs::fstat(&root_fd)?.st_mode);
                walk_creating(root_fd, rel, mode)
            }
            Err(_) => {
                let mode = open_root(root)
                    .and_then(|fd| rustix::fs::fstat(&fd).map_err(io::Error::from))
                    .map_or(0o700, |st| new_dir_mode(st.st_mode));
                // The user's configured path: no link of another user's followed on it, what
                // is missing made beneath the deepest folder that is there.
                let mut missing = Vec::new();
                let mut at = dest;
                loop {
                    match open_trusted_dir(at) {
                        Ok((fd, _)) => {
                            let rest: std::path::PathBuf = missing.iter().rev().collect();
                            break walk_creating(fd, &rest, mode);
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            match (at.parent(), at.file_name()) {
                                (Some(up), Some(name)) => {
                                    missing.push(name);
                                    at = up;
                                }
                                _ => return Err(e),
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        .map_err(|e| {
            if e == Errno::LOOP || e == Errno::NOTDIR || e == Errno::XDEV {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{} is not a real folder (a symbolic link, or something else that is not a folder, is in the way); nothing was moved or written", shown()),
                )
            } else {
                io::Error::from(e)
            }
        })?;
        let st = rustix::fs::fstat(&fd)?;
        let me = rustix::process::geteuid().as_raw();
        if u64::from(st.st_uid) != u64::from(me) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to another user (uid {}); outbox moves files only into a folder you own; nothing was moved or written",
                    shown(),
                    st.st_uid
                ),
            ));
        }
        Ok(Dir { fd })
    }

    /// What `lstat` says about `name` here (not opened: a file unreadable to us has one too).
    pub(super) fn identity_of(&self, name: &OsStr) -> io::Result<Identity> {
        let st = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
        match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::RegularFile => Ok(identity_from_stat(&st)),
            rustix::fs::FileType::Symlink => Err(link_refused(Path::new(name))),
            _ => Err(not_regular(Path::new(name))),
        }
    }

    /// Create `name` (0600) holding `bytes`; never over an existing name, never through a link.
    pub(super) fn create_new(&self, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut f = std::fs::File::from(fd);
        f.write_all(bytes)?;
        f.sync_all()
    }

    /// Remove `name`, which this process just created.
    pub(super) fn remove_own(&self, name: &OsStr) -> io::Result<()> {
        self.unlink(name)
    }

    pub(super) fn unlink(&self, name: &OsStr) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(io::Error::from)
    }

    /// Move `name` to `dest/new_name`; `AlreadyExists` if that name is taken (never replaced).
    pub(super) fn move_to(&self, name: &OsStr, dest: &Dir, new_name: &OsStr) -> io::Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        {
            match rustix::fs::renameat_with(
                &self.fd,
                name,
                &dest.fd,
                new_name,
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Ok(()) => return Ok(()),
                // A file system without it: link and unlink, which never replaces either.
                Err(Errno::INVAL) | Err(Errno::NOSYS) | Err(Errno::NOTSUP) => {}
                Err(e) => return Err(e.into()),
            }
        }
        rustix::fs::linkat(&self.fd, name, &dest.fd, new_name, AtFlags::empty())?;
        self.unlink(name)
    }
}

/// The fields of `struct stat` differ in type from one platform to the next; same meaning as
/// [`Identity::of`] on a `std::fs::Metadata`.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn identity_from_stat(st: &rustix::fs::Stat) -> Identity {
    let mtime_ns = (st.st_mtime as i64)
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(st.st_mtime_nsec as i64));
    let ctime_ns = (st.st_ctime as i64)
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(st.st_ctime_nsec as i64));
    Identity {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        size: st.st_size as u64,
        mtime_ns,
        ctime_ns,
        owner: Some(st.st_uid as u32),
    }
}

/// The mode of a `sent_dir`/`failed_dir` outbox creates: the user's alone (0700), with the
/// read and enter rights the mapped folder gives its group and others, never write: in a
/// shared (group-writable, setgid) folder the moved files and reason files are not the group's
/// to rename, delete or replace.
fn new_dir_mode(folder_mode: impl Into<u32>) -> u32 {
    0o700 | (folder_mode.into() & 0o055)
}

/// Like [`walk`] for a directory, creating what is missing with `mode` (less the umask).
fn walk_creating(root: OwnedFd, rel: &Path, mode: u32) -> Result<OwnedFd, Errno> {
    let mut cur = root;
    for c in rel.components() {
        let name = match c {
            Component::Normal(n) => n,
            Component::CurDir => continue,
            _ => return Err(Errno::XDEV),
        };
        cur = match rustix::fs::openat(&cur, name, DIR_FLAGS, Mode::empty()) {
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(mode as _)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e),
                }
                rustix::fs::openat(&cur, name, DIR_FLAGS, Mode::empty())?
            }
            other => other?,
        };
    }
    Ok(cur)
}
