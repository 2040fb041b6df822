//! What happens to a file after the core is done with it: `after = move | delete` once its
//! attachment is confirmed (only if the file is still the version sent), and `failed_dir` with
//! a reason file for a failed one. One function each, so a safer file module can replace them.

use super::files;
use crate::config::Mapping;
use crate::core::model::{After, AfterOutcome, Failure, FileStat};
use std::path::{Path, PathBuf};

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
    let result = match after {
        After::Keep => Ok(()),
        After::Delete => std::fs::remove_file(path),
        After::Move => move_no_clobber(path, &m.sent_dir).map(|_| ()),
    };
    crate::failpoint!("after-after-action");
    match result {
        Ok(()) => AfterOutcome::Done,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => AfterOutcome::NotTheSameFile,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "attached, but the after-action failed");
            AfterOutcome::Failed(Failure::new(
                "afterAction",
                format!("attached, but the after-action failed: {e}"),
            ))
        }
    }
}

/// Move `file` into `dir` without ever replacing a file there: a taken name gets " (1)",
/// " (2)", ... before the extension.
pub fn move_no_clobber(file: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = file
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let stem = Path::new(name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = Path::new(name)
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    for n in 0..10_000 {
        let candidate = if n == 0 {
            dir.join(name)
        } else {
            dir.join(format!("{stem} ({n}){ext}"))
        };
        // A hard link fails when the name is taken, so nothing is ever overwritten.
        match std::fs::hard_link(file, &candidate) {
            Ok(()) => {
                std::fs::remove_file(file)?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) => {
                if candidate.exists() {
                    continue;
                }
                std::fs::rename(file, &candidate)?;
                return Ok(candidate);
            }
        }
    }
    Err(std::io::Error::other(
        "no free name in the destination folder",
    ))
}

/// A failed entry, as the reason file tells it.
pub struct FailedFile<'a> {
    pub id: &'a str,
    pub path: &'a Path,
    pub target: &'a crate::core::model::Target,
    pub failure: &'a Failure,
}

/// With `failed_dir`, a failed file moves there with `NAME.reason.txt` beside it.
pub fn move_to_failed_dir(m: &Mapping, e: &FailedFile<'_>) {
    let Some(dir) = &m.failed_dir else { return };
    if !e.path.exists() {
        return;
    }
    match move_no_clobber(e.path, dir) {
        Ok(moved) => {
            let reason = moved.with_file_name(format!(
                "{}.reason.txt",
                moved
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            let text = format!(
                "outbox could not attach this file.\n\nfile:    {}\nitem:    {} {} (mailbox {})\nerror:   {}\nreason:  {}\n\nWhat to do: fix the cause above, then move the file back into {} to send it again,\nor run `outbox retry {}` after moving it back.\n",
                e.path.display(),
                match e.target.kind {
                    crate::config::ItemKind::Message => "message",
                    crate::config::ItemKind::Event => "event",
                },
                e.target.item_id,
                e.target.user,
                e.failure.code,
                e.failure.message,
                m.folder.display(),
                e.id
            );
            if let Err(we) = std::fs::write(&reason, text) {
                tracing::warn!(error = %we, "cannot write the reason file");
            }
        }
        Err(me) => {
            tracing::warn!(file = %e.path.display(), error = %me, "cannot move the failed file to failed_dir")
        }
    }
}
