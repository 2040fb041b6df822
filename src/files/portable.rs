//! Elsewhere (Windows): no `openat`. Every component is checked with `symlink_metadata` (no
//! reparse point followed) before the path is used, for a clear refusal; on Windows the check
//! that holds is then made on the handle: every file and folder is opened with
//! `FILE_FLAG_OPEN_REPARSE_POINT` (a link or junction at the end of the path is opened itself,
//! never followed), refused when its reparse tag names another place, and refused unless the
//! handle's final path (every link on the way resolved by the system) is exactly the folder's
//! own final path joined with the name asked for: a component swapped for a junction after the
//! walk leads somewhere else, and is refused. Deletes and moves act through such a handle
//! (`SetFileInformationByHandle`), a move into its destination folder's handle, so nothing is
//! deleted or moved through a link.

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

#[cfg(not(windows))]
pub(super) fn open_file_beneath(
    root: &Path,
    rel: &Path,
    _no_xdev: bool,
) -> io::Result<std::fs::File> {
    std::fs::File::open(no_links(root, rel)?)
}

/// Windows: the file opened as a reparse point (never followed), refused when it is a link or
/// its handle's final path is not the folder's joined with `rel` (a link on the way, swapped in
/// after the walk). A reparse point that is a file of its own (a OneDrive placeholder, a
/// deduplicated file) is opened again as a file, and must be the same file.
#[cfg(windows)]
pub(super) fn open_file_beneath(
    root: &Path,
    rel: &Path,
    _no_xdev: bool,
) -> io::Result<std::fs::File> {
    use std::os::windows::fs::OpenOptionsExt as _;
    let path = no_links(root, rel)?;
    let want = win::beneath(root, rel)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(outbox_win::OPEN_REPARSE_POINT)
        .open(&path)?;
    if win::checked(&file, &want, rel)? {
        return Ok(file);
    }
    let again = std::fs::File::open(&path)?;
    let (a, b) = (
        outbox_win::file_info(&file)?,
        outbox_win::file_info(&again)?,
    );
    if (a.volume, a.index) != (b.volume, b.index) {
        return Err(link_refused(rel));
    }
    Ok(again)
}

/// The Windows checks of a handle against the path it was asked for.
#[cfg(windows)]
mod win {
    use super::link_refused;
    use std::io;
    use std::os::windows::fs::OpenOptionsExt as _;
    use std::path::{Component, Path, PathBuf};

    /// A folder's final path (a link to it followed: the mapped folder is the user's path,
    /// taken as given), opened for its attributes only.
    pub(super) fn final_of_folder(folder: &Path) -> io::Result<PathBuf> {
        outbox_win::final_path(&open_followed(folder)?)
    }

    /// A folder opened by its path, links followed.
    pub(super) fn open_followed(folder: &Path) -> io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(outbox_win::BACKUP_SEMANTICS)
            .open(folder)
    }

    /// Where `rel` beneath `root` is when no link is on the way: the root's final path joined
    /// with each of `rel`'s names.
    pub(super) fn beneath(root: &Path, rel: &Path) -> io::Result<PathBuf> {
        let mut want = final_of_folder(root)?;
        for c in rel.components() {
            if let Component::Normal(n) = c {
                want.push(n);
            }
        }
        Ok(want)
    }

    /// Whether two final paths name one place (names compared without case, as NTFS does).
    fn same(a: &Path, b: &Path) -> bool {
        a == b || a.to_string_lossy().to_lowercase() == b.to_string_lossy().to_lowercase()
    }

    /// Refuses `file` (opened with `OPEN_REPARSE_POINT`) when it is a link or junction, or its
    /// final path is not `want`. `Ok(false)`: a reparse point that is no link (a placeholder):
    /// the caller opens it again without the flag to read it.
    pub(super) fn checked(file: &std::fs::File, want: &Path, rel: &Path) -> io::Result<bool> {
        let tag = outbox_win::reparse_tag(file)?;
        if tag.is_some_and(outbox_win::is_name_surrogate) {
            return Err(link_refused(rel));
        }
        if !same(&outbox_win::final_path(file)?, want) {
            return Err(link_refused(rel));
        }
        Ok(tag.is_none())
    }

    /// The entry `name` of the folder open as `dir` (whose final path is `dir_final`), opened
    /// as itself (a link is not followed) with `access`, and checked to be in that folder.
    pub(super) fn open_entry(
        dir_path: &Path,
        dir: &std::fs::File,
        name: &std::ffi::OsStr,
        access: u32,
    ) -> io::Result<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .access_mode(access | outbox_win::READ_ATTRIBUTES)
            .custom_flags(outbox_win::OPEN_REPARSE_POINT | outbox_win::BACKUP_SEMANTICS)
            .open(dir_path.join(name))?;
        let want = outbox_win::final_path(dir)?.join(name);
        checked(&file, &want, Path::new(name))?;
        Ok(file)
    }

    /// The folder at `path`, opened as itself (a junction is not followed), checked to be at
    /// `want` when given.
    pub(super) fn open_folder(
        path: &Path,
        want: Option<&Path>,
        rel: &Path,
    ) -> io::Result<std::fs::File> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(outbox_win::OPEN_REPARSE_POINT | outbox_win::BACKUP_SEMANTICS)
            .open(path)?;
        match want {
            Some(want) => {
                checked(&f, want, rel)?;
            }
            None => {
                if outbox_win::reparse_tag(&f)?.is_some_and(outbox_win::is_name_surrogate) {
                    return Err(link_refused(rel));
                }
            }
        }
        if !f.metadata()?.is_dir() {
            return Err(link_refused(rel));
        }
        Ok(f)
    }
}

pub(super) struct Dir {
    path: PathBuf,
    /// Windows: the folder's handle, opened as itself and checked to be where it was asked for.
    #[cfg(windows)]
    handle: std::fs::File,
}

impl Dir {
    /// Listing through a descriptor is not available here: `None` (the caller lists by path).
    pub(super) fn read_dir(&self) -> Option<io::Result<std::fs::ReadDir>> {
        None
    }

    pub(super) fn open_beneath(root: &Path, rel: &Path) -> io::Result<Dir> {
        let path = no_links(root, rel)?;
        #[cfg(windows)]
        {
            let handle = if rel.components().next().is_none() {
                // The mapped folder itself: the user's path, taken as given (as on Unix).
                win::open_followed(&path)?
            } else {
                win::open_folder(&path, Some(&win::beneath(root, rel)?), rel)?
            };
            Ok(Dir { path, handle })
        }
        #[cfg(not(windows))]
        Ok(Dir { path })
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
        #[cfg(windows)]
        {
            let want = if dest.starts_with(root) {
                Some(win::beneath(root, rel)?)
            } else {
                None
            };
            let handle = win::open_folder(dest, want.as_deref(), dest)?;
            Ok(Dir {
                path: dest.to_path_buf(),
                handle,
            })
        }
        #[cfg(not(windows))]
        Ok(Dir {
            path: dest.to_path_buf(),
        })
    }

    /// Windows: the entry opened as itself through the folder's checked handle; a link is not
    /// a regular file.
    #[cfg(windows)]
    pub(super) fn identity_of(&self, name: &OsStr) -> io::Result<Identity> {
        let f = win::open_entry(&self.path, &self.handle, name, 0)?;
        let info = outbox_win::file_info(&f)?;
        if info.attributes & 0x10 != 0 {
            // FILE_ATTRIBUTE_DIRECTORY
            return Err(not_regular(Path::new(name)));
        }
        Ok(identity_of_info(&info))
    }

    #[cfg(not(windows))]
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

    /// Windows: deleted through a handle on the entry itself (a link would be refused, not
    /// followed), checked to be in this folder.
    #[cfg(windows)]
    pub(super) fn unlink(&self, name: &OsStr) -> io::Result<()> {
        let f = win::open_entry(&self.path, &self.handle, name, outbox_win::DELETE)?;
        outbox_win::delete_by_handle(&f)
    }

    #[cfg(not(windows))]
    pub(super) fn unlink(&self, name: &OsStr) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }

    /// Windows: renamed through a handle on the entry itself into the destination folder's
    /// handle, never over a name there.
    #[cfg(windows)]
    pub(super) fn move_to(&self, name: &OsStr, dest: &Dir, new_name: &OsStr) -> io::Result<()> {
        let f = win::open_entry(&self.path, &self.handle, name, outbox_win::DELETE)?;
        outbox_win::rename_by_handle(&f, &dest.handle, new_name)
    }

    #[cfg(not(windows))]
    pub(super) fn move_to(&self, name: &OsStr, dest: &Dir, new_name: &OsStr) -> io::Result<()> {
        let to = dest.path.join(new_name);
        std::fs::hard_link(self.path.join(name), &to)?;
        self.unlink(name)
    }
}
