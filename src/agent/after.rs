//! What happens to a file after the core is done with it: `after = move | delete` once its
//! attachment is confirmed (only if the file is still the version sent); `failed_dir` with a
//! reason file for a failed one, and back from there when it is retried (the core asks for
//! each, and records where the file went). One function each.

use super::files;
use crate::config::Mapping;
use crate::core::model::{After, AfterOutcome, Failure, FileStat, MoveOutcome};
use std::path::Path;

/// `Action::After`: move or delete `path` if it is still the version sent (same identity and
/// the same bytes); otherwise leave it alone.
pub fn carry_out(
    m: &Mapping,
    path: &Path,
    file: &FileStat,
    sha256: &str,
    after: After,
) -> AfterOutcome {
    if after == After::Keep {
        return AfterOutcome::Done;
    }
    match files::still_the_version(m, path, file, sha256) {
        Ok(true) => {}
        Ok(false) => return AfterOutcome::NotTheSameFile,
        Err(e) => return AfterOutcome::Failed(Failure::new("afterAction", e.to_string())),
    }
    // Through the folder's descriptors, only if it is still that very file (`files`).
    let expected = files::expected(file);
    let result = match after {
        After::Keep => Ok(()),
        After::Delete => crate::files::remove(&m.folder, path, m.follow_symlinks, &expected),
        After::Move => crate::files::move_no_clobber(
            &m.folder,
            path,
            m.follow_symlinks,
            &expected,
            &m.sent_dir,
            None,
        )
        .map(|_| ()),
    };
    crate::failpoint!("after-after-action");
    match result {
        Ok(()) => AfterOutcome::Done,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => AfterOutcome::NotTheSameFile,
        Err(e) => {
            tracing::warn!(file = %crate::outside::path(path), error = %e, "attached, but the after-action failed");
            AfterOutcome::Failed(Failure::new(
                "afterAction",
                format!("attached, but the after-action failed: {e}"),
            ))
        }
    }
}

/// `Action::ToFailedDir`: with the mapping's `failed_dir`, the failed file `path` moves there
/// with `NAME.reason.txt` beside it, only if it is still the version `file` that failed.
pub fn to_failed_dir(
    m: &Mapping,
    id: &str,
    path: &Path,
    file: &FileStat,
    failure: &Failure,
) -> MoveOutcome {
    let Some(dir) = &m.failed_dir else {
        return MoveOutcome::Refused(Failure::new(
            "noFailedDir",
            format!("mapping `{}` has no failed_dir", m.name),
        ));
    };
    let item = match &m.target {
        crate::config::Target::NewMessage(_) => {
            format!("a new message of mapping `{}` (mailbox {})", m.name, m.user)
        }
        _ => format!(
            "{} {} (mailbox {})",
            match m.kind {
                crate::config::ItemKind::Message => "message",
                crate::config::ItemKind::Event => "event",
            },
            m.item_id,
            m.user
        ),
    };
    // Over Graph's limit the file is never sent as it is: `retry` would be refused.
    let too_large = file.size > crate::core::model::MAX_ATTACHMENT;
    let what_to_do = if too_large {
        format!(
            "What to do: this file cannot be attached as it is, now or later: Graph refuses\nattachments over 150 MiB. Split or compress it into files under 150 MiB and drop\nthose into {}; `outbox cancel {id}` then clears its entry (this\nfile and its reason can be deleted).\n",
            m.folder.display()
        )
    } else {
        format!(
            "What to do: fix the cause above, then run `outbox retry {id}`: it takes the file back\ninto {} and sends it again (or move it back there yourself).\n",
            m.folder.display()
        )
    };
    let text = format!(
        "outbox could not attach this file.\n\nfile:    {}\nitem:    {item}\nerror:   {}\nreason:  {}\n\n{what_to_do}",
        crate::outside::path(path),
        failure.code,
        crate::outside::printable(&failure.message),
    );
    // Moved only if it is still the file that failed; the reason file is created beside it,
    // never over or through anything (see `files`). A file that left its identity behind (a
    // record from before identities were kept) is taken as the path's file now.
    let expected = if file.dev == 0 && file.ino == 0 {
        match std::fs::symlink_metadata(path) {
            Ok(meta) => match files::file_stat(path, &meta) {
                Some(stat) => files::expected(&stat),
                None => return refused(path, &std::io::Error::from(std::io::ErrorKind::NotFound)),
            },
            Err(e) => return refused(path, &e),
        }
    } else {
        files::expected(file)
    };
    match crate::files::move_no_clobber(
        &m.folder,
        path,
        m.follow_symlinks,
        &expected,
        dir,
        Some(&text),
    ) {
        Ok(to) => {
            crate::failpoint!("after-failed-dir-move");
            let file = std::fs::symlink_metadata(&to)
                .ok()
                .and_then(|meta| files::file_stat(&to, &meta))
                .unwrap_or(*file);
            if too_large {
                tracing::info!(file = %crate::outside::path(path), entry = id, to = %crate::outside::path(&to), "moved to failed_dir with its reason (over 150 MiB: split or compress it; `outbox cancel {id}` clears it)");
            } else {
                tracing::info!(file = %crate::outside::path(path), entry = id, to = %crate::outside::path(&to), "moved to failed_dir with its reason; `outbox retry {id}` takes it back");
            }
            MoveOutcome::Moved { to, file }
        }
        // Asked again at start because a crash lost the first move's answer: it may have
        // gone already.
        Err(e) => match crate::files::find_moved(&m.folder, path, dir, &expected) {
            Ok(Some(to)) => {
                let file = std::fs::symlink_metadata(&to)
                    .ok()
                    .and_then(|meta| files::file_stat(&to, &meta))
                    .unwrap_or(*file);
                tracing::info!(file = %crate::outside::path(path), entry = id, to = %crate::outside::path(&to), "found in failed_dir (moved there before a crash); `outbox retry {id}` takes it back");
                MoveOutcome::Moved { to, file }
            }
            _ => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %crate::outside::path(path), error = %e, "cannot move the failed file to failed_dir");
                }
                refused(path, &e)
            }
        },
    }
}

/// `Action::FromFailedDir`: the retried file `from` (in the mapping's `failed_dir`) moves back
/// to `path`, only if it is still the version `file` and nothing is at `path`.
pub fn from_failed_dir(m: &Mapping, from: &Path, path: &Path, file: &FileStat) -> MoveOutcome {
    // The folder it was moved into (the mapping's `failed_dir` then: the config may name
    // another now).
    let dir = from.parent().map(Path::to_path_buf).unwrap_or_default();
    match crate::files::move_back(&m.folder, &dir, from, path, &files::expected(file)) {
        Ok(to) => match std::fs::symlink_metadata(&to) {
            Ok(meta) => {
                tracing::info!(file = %crate::outside::path(path), from = %crate::outside::path(from), "taken back from failed_dir to be sent again");
                MoveOutcome::Moved {
                    file: files::file_stat(&to, &meta).unwrap_or(*file),
                    to,
                }
            }
            Err(e) => refused(path, &e),
        },
        // Put back at its path by hand: that is where it is, and its reason file in
        // failed_dir explains nothing any more.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && at_path(path, file).is_some() => {
            crate::files::forget_reason(&m.folder, &dir, from);
            MoveOutcome::Moved {
                to: path.to_path_buf(),
                file: at_path(path, file).unwrap_or(*file),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => MoveOutcome::Refused(Failure::new(
            "failedDirGone",
            format!(
                "{} is not there any more (moved or deleted by hand?)",
                crate::outside::path(from)
            ),
        )),
        Err(e) => refused(from, &e),
    }
}

/// The stat of the file at `path` when it is the version `file` (same device, inode, size and
/// time).
fn at_path(path: &Path, file: &FileStat) -> Option<FileStat> {
    let now = files::file_stat(path, &std::fs::symlink_metadata(path).ok()?)?;
    (now.dev == file.dev
        && now.ino == file.ino
        && now.size == file.size
        && now.mtime_ns == file.mtime_ns)
        .then_some(now)
}

fn refused(path: &Path, e: &std::io::Error) -> MoveOutcome {
    MoveOutcome::Refused(Failure::new(
        "failedDirMove",
        format!("{}: {e}", crate::outside::path(path)),
    ))
}
