//! Elsewhere (Windows): no `openat`. Every component is checked with `symlink_metadata` (no
//! reparse point followed) before the path is used; this narrows, but cannot close, the window
//! a descriptor walk closes on Unix.

// The Metadata-only functions serve the platforms that are neither Unix nor Windows.
#![cfg_attr(windows, allow(dead_code))]

use super::{link_refused, not_regular, Identity};
use std::ffi::OsStr;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

pub(super) fn dev_ino(_meta: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

pub(super) fn owner(_meta: &std::fs::Metadata) -> Option<u32> {
    None
}

pub(super) fn ctime_ns(_meta: &std::fs::Metadata) -> Option<i64> {
    None
}

/// Windows: the volume serial number and file index stand for device and inode, `ChangeTime`
/// for the ctime, all read through a handle (std's metadata has them only on nightly). Without
/// them every file would look like one that left its folder (device, inode and ctime 0), and a
/// mailing mapping would mail a file again at each look (#26).
#[cfg(windows)]
fn identity_of_info(i: &outbox_win::FileInfo) -> Identity {
    Identity {
        dev: i.volume,
        ino: i.index,
        size: i.size,
        mtime_ns: Some(i.mtime_ns),
        ctime_ns: i.ctime_ns,
        owner: None,
    }
}

#[cfg(windows)]
pub(super) fn describe(
    file: &std::fs::File,
    _meta: &std::fs::Metadata,
) -> io::Result<(Identity, u64)> {
    let info = outbox_win::file_info(file)?;
    Ok((identity_of_info(&info), u64::from(info.links)))
}

#[cfg(windows)]
pub(super) fn identity_at(path: &Path, meta: &std::fs::Metadata) -> io::Result<Identity> {
    // A link is what `meta` described when it is one (a stat that did not follow it).
    let info = outbox_win::path_info(path, !meta.file_type().is_symlink())?;
    Ok(identity_of_info(&info))
}

#[cfg(not(windows))]
pub(super) fn describe(
    _file: &std::fs::File,
    meta: &std::fs::Metadata,
) -> io::Result<(Identity, u64)> {
    Ok((Identity::of(meta), 1))
}

#[cfg(not(windows))]
pub(super) fn identity_at(_path: &Path, meta: &std::fs::Metadata) -> io::Result<Identity> {
    Ok(Identity::of(meta))
}

pub(super) fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt as _;
        file.seek_read(buf, offset)
    }
    #[cfg(not(windows))]
    {
        let _ = (file, buf, offset);
        Err(io::Error::other("positional reads are not supported here"))
    }
}

fn no_links(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        if std::fs::symlink_metadata(&p)?.file_type().is_symlink() {
            return Err(link_refused(rel));
        }
    }
    Ok(p)
}

pub(super) fn in_the_way_beneath(_root: &Path, _rel: &Path) -> Option<&'static str> {
    None
}

pub(super) fn len_beneath(root: &Path, rel: &Path) -> Option<u64> {
    std::fs::symlink_metadata(root.join(rel))
        .ok()
        .map(|m| m.len())
}

/// Nothing is pinned here (see the Unix `check_pinned`).
pub(super) fn unpin_folders() {}

/// Where the folder at `path` really is (links followed: no owner to check here).
pub(super) fn real_dir(path: &Path) -> io::Result<PathBuf> {
    std::fs::canonicalize(path)
}

pub(super) fn present_beneath(root: &Path, rel: &Path) -> bool {
    root.join(rel).exists() || std::fs::symlink_metadata(root.join(rel)).is_ok()
}

pub(super) fn open_file_beneath(
    root: &Path,
    rel: &Path,
    _no_xdev: bool,
) -> io::Result<std::fs::File> {
    std::fs::File::open(no_links(root, rel)?)
}

pub(super) struct Dir {
    path: PathBuf,
}

impl Dir {
    /// Listing through a descriptor is not available here: `None` (the caller lists by path).
    pub(super) fn read_dir(&self) -> Option<io::Result<std::fs::ReadDir>> {
        None
    }

    pub(super) fn open_beneath(root: &Path, rel: &Path) -> io::Result<Dir> {
        Ok(Dir {
            path: no_links(root, rel)?,
        })
    }

    /// Mount points are not told apart here: as [`Dir::open_beneath`].
    pub(super) fn open_followed(root: &Path, rel: &Path) -> io::Result<Dir> {
        Dir::open_beneath(&root.join(rel), Path::new(""))
    }

    pub(super) fn open_beneath_within(root: &Path, rel: &Path, _no_xdev: bool) -> io::Result<Dir> {
        Dir::open_beneath(root, rel)
    }

    /// No descriptor to stat through: `None` (the caller stats by path).
    pub(super) fn stat_entry(&self, _name: &OsStr) -> Option<io::Result<super::EntryStat>> {
        None
    }

    pub(super) fn open_destination(root: &Path, dest: &Path) -> io::Result<Dir> {
        std::fs::create_dir_all(dest)?;
        let rel = dest.strip_prefix(root).unwrap_or(dest);
        if dest.starts_with(root) {
            no_links(root, rel)?;
        } else if std::fs::symlink_metadata(dest)?.file_type().is_symlink() {
            return Err(link_refused(dest));
        }
        Ok(Dir {
            path: dest.to_path_buf(),
        })
    }

    pub(super) fn identity_of(&self, name: &OsStr) -> io::Result<Identity> {
        let path = self.path.join(name);
        let meta = std::fs::symlink_metadata(&path)?;
        if !meta.is_file() {
            return Err(not_regular(Path::new(name)));
        }
        identity_at(&path, &meta)
    }

    pub(super) fn create_new(&self, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path.join(name))?;
        f.write_all(bytes)?;
        f.sync_all()
    }

    pub(super) fn remove_own(&self, name: &OsStr) -> io::Result<()> {
        self.unlink(name)
    }

    pub(super) fn unlink(&self, name: &OsStr) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }

    pub(super) fn move_to(&self, name: &OsStr, dest: &Dir, new_name: &OsStr) -> io::Result<()> {
        let to = dest.path.join(new_name);
        std::fs::hard_link(self.path.join(name), &to)?;
        self.unlink(name)
    }
}
