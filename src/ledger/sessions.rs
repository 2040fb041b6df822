//! Upload-session URLs, one owner-only file per entry under `state_dir/sessions/`. They carry an
//! `authtoken` that grants write access to the item, so they are kept out of sled (whose files
//! are not meant for secrets) and are removed as soon as the session ends. Writes are atomic and
//! durable: temp file in the same dir, fsync, rename, fsync the dir.

use super::error::LedgerError;
use super::store::create_private_dir;
use std::io::Write;
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, LedgerError>;

/// The session URL store of one state dir.
#[derive(Debug, Clone)]
pub struct SessionStore {
    dir: PathBuf,
}

impl SessionStore {
    /// Open (creating owner-only when missing) `state_dir/sessions`.
    pub fn open(state_dir: &Path) -> Result<SessionStore> {
        let dir = state_dir.join("sessions");
        create_private_dir(&dir)?;
        Ok(SessionStore { dir })
    }

    /// The directory holding the URL files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Durably record `url` as the upload URL of `entry_id`, replacing any earlier one. The file
    /// is mode 0600 from its creation (tempfile creates it so), never world-readable in between.
    pub fn save(&self, entry_id: &str, url: &str) -> Result<()> {
        let target = self.file_for(entry_id)?;
        let io = |source| LedgerError::Io {
            path: target.clone(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".session-")
            .tempfile_in(&self.dir)
            .map_err(io)?;
        // (Windows: a DACL of the user alone, before the URL is in it.)
        crate::private::make_private_file(tmp.path()).map_err(io)?;
        tmp.write_all(url.as_bytes()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&target).map_err(|e| io(e.error))?;
        self.sync_dir()
    }

    /// The upload URL saved for `entry_id`, if any.
    pub fn load(&self, entry_id: &str) -> Result<Option<String>> {
        let path = self.file_for(entry_id)?;
        // A URL file someone else could have written is never used (the file would go to them).
        if let Err(source) = crate::private::check_private_file(&path) {
            tracing::warn!(error = %source, "a saved upload URL was refused; the upload starts afresh");
            return Err(LedgerError::Io { path, source });
        }
        match std::fs::read_to_string(&path) {
            Ok(url) => Ok(Some(url)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LedgerError::Io { path, source }),
        }
    }

    /// Forget the upload URL of `entry_id` (no error if there was none).
    pub fn remove(&self, entry_id: &str) -> Result<()> {
        let path = self.file_for(entry_id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LedgerError::Io { path, source }),
        }
    }

    /// Entry ids that have a saved URL (to clean up after entries that no longer exist).
    pub fn ids(&self) -> Result<Vec<String>> {
        let io = |source| LedgerError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut ids = Vec::new();
        for item in std::fs::read_dir(&self.dir).map_err(io)? {
            let name = item.map_err(io)?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".url")) {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn file_for(&self, entry_id: &str) -> Result<PathBuf> {
        // Ids become file names: refuse anything that could leave the directory.
        if entry_id.is_empty()
            || !entry_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(LedgerError::Invalid(format!(
                "entry id `{entry_id}` is not [A-Za-z0-9_-]+"
            )));
        }
        Ok(self.dir.join(format!("{entry_id}.url")))
    }

    /// fsync the directory so the rename or removal itself survives a crash (unix only: Windows
    /// cannot open a directory as a file).
    fn sync_dir(&self) -> Result<()> {
        #[cfg(unix)]
        {
            let dir = std::fs::File::open(&self.dir).map_err(|source| LedgerError::Io {
                path: self.dir.clone(),
                source,
            })?;
            dir.sync_all().map_err(|source| LedgerError::Io {
                path: self.dir.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_replace_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        assert_eq!(store.load("abc123").unwrap(), None);
        store
            .save("abc123", "https://example/up?authtoken=one")
            .unwrap();
        store
            .save("abc123", "https://example/up?authtoken=two")
            .unwrap();
        assert_eq!(
            store.load("abc123").unwrap().as_deref(),
            Some("https://example/up?authtoken=two")
        );
        assert_eq!(store.ids().unwrap(), vec!["abc123".to_owned()]);
        store.remove("abc123").unwrap();
        store.remove("abc123").unwrap();
        assert_eq!(store.load("abc123").unwrap(), None);
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 0);
    }

    #[test]
    fn ids_that_could_escape_the_dir_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        for bad in ["", "../x", "a/b", "a.url", ".."] {
            assert!(
                matches!(store.save(bad, "u"), Err(LedgerError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
