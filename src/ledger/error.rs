//! Ledger errors: each says which path is involved and what the user should do. All of them stop
//! the agent (the ledger is not per-file), except `NotFound`, which is a bad id from the user.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Another process holds sled's lock on the database file.
    #[error(
        "another outbox agent is using the state dir {} (its ledger {} is locked); only one \
         agent may use a state dir at a time: stop the other one or give this one its own state_dir",
        state_dir(path).display(),
        path.display()
    )]
    InUse { path: PathBuf },

    /// sled could not read the database, or a record does not decode.
    #[error(
        "the ledger at {} is corrupt ({detail}); it was NOT reset or changed. To start fresh, stop \
         outbox and move it aside (e.g. `mv {0} {0}.broken`); files already attached will be \
         checked by name and bytes on their item before anything is sent again",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },

    /// Written by a newer outbox; we do not guess at its format.
    #[error(
        "the ledger at {} has schema version {found}, newer than this outbox understands \
         (up to {supported}); it was not changed: upgrade outbox to use it",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error("ledger I/O error at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `retry` / `cancel` / an update named an id the ledger does not have.
    #[error("no ledger entry with id `{id}` (see `outbox status`)")]
    NotFound { id: String },

    /// A caller broke the store's contract (e.g. a relative path, or changing an entry's path).
    #[error("invalid ledger operation: {0}")]
    Invalid(String),
}

impl LedgerError {
    /// Turn a sled error on the database at `path` into ours, recognising the lock error.
    pub(crate) fn from_sled(path: &Path, e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => {
                // sled 0.34 reports a held lock as `Other` with this text (fs2's WouldBlock inside).
                let text = io.to_string();
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || text.contains("could not acquire lock")
                {
                    LedgerError::InUse {
                        path: path.to_path_buf(),
                    }
                } else {
                    LedgerError::Io {
                        path: path.to_path_buf(),
                        source: io,
                    }
                }
            }
            sled::Error::Corruption { at, .. } => LedgerError::Corrupt {
                path: path.to_path_buf(),
                detail: match at {
                    Some(at) => format!("sled found corrupt data at {at:?}"),
                    None => "sled found corrupt data".to_owned(),
                },
            },
            other => LedgerError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("sled: {other}"),
            },
        }
    }

    /// A mistake of the user's (a state dir in use, an unknown id), not a failure of the work.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            LedgerError::InUse { .. } | LedgerError::NotFound { .. }
        )
    }
}

fn state_dir(ledger_path: &Path) -> &Path {
    ledger_path.parent().unwrap_or(ledger_path)
}
