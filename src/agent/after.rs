//! What happens to a file after the core is done with it: `after = move | delete` once its
//! attachment is confirmed (only if the file is still the version sent), and `failed_dir` with
//! a reason file for a failed one. One function each, so a safer file module can replace them.

use super::files;
use crate::config::Mapping;
use crate::core::model::{After, AfterOutcome, Failure, FileStat};
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

/// A failed entry, as the reason file tells it.
pub struct FailedFile<'a> {
    pub id: &'a str,
    pub path: &'a Path,
    /// The version that failed: only that file is moved.
    pub file: Option<FileStat>,
    pub target: &'a crate::core::model::Target,
    pub failure: &'a Failure,
}

/// With `failed_dir`, a failed file moves there with `NAME.reason.txt` beside it.
pub fn move_to_failed_dir(m: &Mapping, e: &FailedFile<'_>) {
    let Some(dir) = &m.failed_dir else { return };
    if !e.path.exists() {
        return;
    }
    let text = format!(
        "outbox could not attach this file.\n\nfile:    {}\nitem:    {} {} (mailbox {})\nerror:   {}\nreason:  {}\n\nWhat to do: fix the cause above, then move the file back into {} to send it again,\nor run `outbox retry {}` after moving it back.\n",
        crate::outside::path(e.path),
        match e.target.kind {
            crate::config::ItemKind::Message => "message",
            crate::config::ItemKind::Event => "event",
        },
        e.target.item_id,
        e.target.user,
        e.failure.code,
        crate::outside::printable(&e.failure.message),
        m.folder.display(),
        e.id
    );
    // Moved only if it is still the file that failed; the reason file is created beside it,
    // never over or through anything (see `files`).
    let expected = match &e.file {
        Some(f) => files::expected(f),
        None => match std::fs::symlink_metadata(e.path)
            .ok()
            .and_then(|meta| files::file_stat(e.path, &meta))
        {
            Some(stat) => files::expected(&stat),
            None => return,
        },
    };
    if let Err(me) = crate::files::move_no_clobber(
        &m.folder,
        e.path,
        m.follow_symlinks,
        &expected,
        dir,
        Some(&text),
    ) {
        tracing::warn!(file = %crate::outside::path(e.path), error = %me, "cannot move the failed file to failed_dir");
    }
}
