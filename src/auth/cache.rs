//! The token cache: `state_dir/tokens.json`, owner-only (0600), written atomically (temp file in
//! the same directory, fsync, rename, fsync of the directory), and guarded by an advisory lock
//! on a separate, stable file (`tokens.lock`) so `send`, `login` and the agent never refresh
//! with the same rotating refresh token at once, nor read a half-written file. The lock lives on
//! its own file because the rename replaces the cache's inode. The cache is never logged: its
//! Debug hides the tokens.

use fs2::FileExt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Format version of `tokens.json`.
const VERSION: u32 = 1;

/// What `outbox login` stored: the delegated tokens and what they were issued for.
#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct CachedTokens {
    pub version: u32,
    pub authority: String,
    pub tenant: String,
    pub client_id: String,
    pub scope: String,
    pub access_token: String,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for CachedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedTokens")
            .field("authority", &self.authority)
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .field("access_token", &"REDACTED")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "REDACTED"),
            )
            .finish()
    }
}

/// Refresh at most this long before expiry…
const MAX_MARGIN_SECS: u64 = 120;

impl CachedTokens {
    pub fn new(
        authority: &str,
        tenant: &str,
        client_id: &str,
        scope: &str,
        t: super::oauth::TokenResponse,
        now: SystemTime,
    ) -> CachedTokens {
        let issued_at = unix(now);
        CachedTokens {
            version: VERSION,
            authority: authority.to_string(),
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
            scope: t.scope.clone().unwrap_or_else(|| scope.to_string()),
            issued_at,
            expires_at: issued_at.saturating_add(t.expires_in.unwrap_or(3600)),
            access_token: t.access_token,
            refresh_token: t.refresh_token,
        }
    }

    /// Usable now, with a margin of a quarter of its lifetime (at most two minutes), so a token
    /// is refreshed before Graph would refuse it, and a short-lived one is not refreshed at once.
    pub fn fresh(&self, now: SystemTime) -> bool {
        let lifetime = self.expires_at.saturating_sub(self.issued_at);
        let margin = (lifetime / 4).min(MAX_MARGIN_SECS);
        unix(now) + margin < self.expires_at
    }

    /// Issued for this app and this authority/tenant (a config change means sign in again).
    pub fn matches(&self, authority: &str, tenant: &str, client_id: &str) -> bool {
        self.authority == authority && self.tenant == tenant && self.client_id == client_id
    }

    pub fn access(&self) -> super::AccessToken {
        super::AccessToken {
            secret: self.access_token.clone(),
            // A far-future expiry from a broken server must not overflow `SystemTime`.
            expires_at: UNIX_EPOCH.checked_add(Duration::from_secs(self.expires_at)),
        }
    }
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Identity of the cache file's current version: changes whenever another process replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    ino: u64,
}

/// The cache file of one state dir.
#[derive(Debug, Clone)]
pub struct TokenCache {
    dir: PathBuf,
    path: PathBuf,
    lock_path: PathBuf,
}

/// Held while the cache is read-then-written; released on drop.
pub struct CacheLock {
    file: File,
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes it immediate.
        let _ = FileExt::unlock(&self.file);
    }
}

impl TokenCache {
    pub fn in_dir(state_dir: &Path) -> TokenCache {
        TokenCache {
            dir: state_dir.to_path_buf(),
            path: state_dir.join("tokens.json"),
            lock_path: state_dir.join("tokens.lock"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Take the exclusive lock (blocking: call from `spawn_blocking`). Creates the state dir
    /// (owner-only) if needed.
    pub fn lock_blocking(&self) -> std::io::Result<CacheLock> {
        create_private_dir(&self.dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)?;
        file.lock_exclusive()?;
        Ok(CacheLock { file })
    }

    /// Take the lock from async code without blocking the runtime.
    pub async fn lock(&self) -> Result<CacheLock, String> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.lock_blocking())
            .await
            .map_err(|e| format!("token cache lock task failed: {e}"))?
            .map_err(|e| format!("cannot lock {}: {e}", self.lock_path.display()))
    }

    /// The version stamp of the file, `None` when it does not exist.
    pub fn stamp(&self) -> Option<Stamp> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some(Stamp {
            modified: m.modified().ok(),
            len: m.len(),
            #[cfg(unix)]
            ino: std::os::unix::fs::MetadataExt::ino(&m),
        })
    }

    /// Read the cache (hold the lock). `Ok(None)`: nobody is signed in.
    pub fn read(&self, _lock: &CacheLock) -> Result<Option<CachedTokens>, String> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        // Never show the content: it is secret. Only say it is unusable.
        match serde_json::from_slice::<CachedTokens>(&bytes) {
            Ok(t) if t.version == VERSION => Ok(Some(t)),
            Ok(_) | Err(_) => Err(format!(
                "the token cache {} is unreadable (another version or damaged); run `outbox login`",
                self.path.display()
            )),
        }
    }

    /// Replace the cache atomically (hold the lock): temp file (0600) in the same dir, fsync,
    /// rename over, fsync the dir.
    pub fn write(&self, _lock: &CacheLock, t: &CachedTokens) -> std::io::Result<()> {
        create_private_dir(&self.dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tokens.")
            .suffix(".tmp")
            .tempfile_in(&self.dir)?;
        set_owner_only(tmp.as_file())?;
        let body = serde_json::to_vec_pretty(t).map_err(std::io::Error::other)?;
        tmp.write_all(&body)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        sync_dir(&self.dir);
        Ok(())
    }

    /// Remove the cache (hold the lock). Returns whether there was one.
    pub fn remove(&self, _lock: &CacheLock) -> std::io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                sync_dir(&self.dir);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

fn set_owner_only(f: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        // The state dir under the user's profile is private by its ACL on Windows.
        let _ = f;
        Ok(())
    }
}

/// Make a rename durable. Best effort: not every platform can open a directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(now: SystemTime, lifetime: u64) -> CachedTokens {
        CachedTokens {
            version: VERSION,
            authority: "https://login.example".into(),
            tenant: "common".into(),
            client_id: "app".into(),
            scope: "User.Read".into(),
            access_token: "AT-SECRET".into(),
            issued_at: unix(now),
            expires_at: unix(now) + lifetime,
            refresh_token: Some("RT-SECRET".into()),
        }
    }

    #[test]
    fn freshness_margin_scales_with_lifetime() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t = sample(now, 3600);
        assert!(t.fresh(now + Duration::from_secs(3400)));
        assert!(!t.fresh(now + Duration::from_secs(3490)));
        let short = sample(now, 4);
        assert!(short.fresh(now), "a 4 s token is usable at once");
        assert!(!short.fresh(now + Duration::from_secs(3)));
    }

    #[test]
    fn write_read_remove_owner_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cache = TokenCache::in_dir(&dir.path().join("state"));
        let lock = cache.lock_blocking().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cache.read(&lock).unwrap_or_else(|e| panic!("{e}")), None);
        let t = sample(SystemTime::now(), 60);
        cache.write(&lock, &t).unwrap_or_else(|e| panic!("{e}"));
        let before = cache.stamp();
        assert_eq!(
            cache.read(&lock).unwrap_or_else(|e| panic!("{e}")),
            Some(t.clone())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(cache.path())
                .unwrap_or_else(|e| panic!("{e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut t2 = t.clone();
        t2.access_token = "AT2".into();
        cache.write(&lock, &t2).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(cache.stamp(), before, "a rewrite changes the stamp");
        assert!(!format!("{t2:?}").contains("RT-SECRET"));
        assert!(cache.remove(&lock).unwrap_or_else(|e| panic!("{e}")));
        assert!(!cache.remove(&lock).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(cache.stamp(), None);
    }
}
