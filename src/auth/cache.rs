//! The token cache and its lock. The tokens live in a [`TokenStore`]: by default the file
//! `state_dir/tokens.json`, owner-only (0600), written atomically (temp file in the same
//! directory, fsync, rename, fsync of the directory); with the `keyring` feature and
//! `auth.token_store = "keyring"`, the OS keyring (`keyring_store`). Whatever the store, every
//! read-then-write is guarded by an advisory lock on a separate, stable file in the state dir
//! (`tokens.lock`, no secret in it) so `send`, `login` and the agent never refresh with the same
//! rotating refresh token at once, nor read a half-written cache. The lock lives on its own file
//! because the rename replaces the cache's inode. The cache is never logged: its Debug hides the
//! tokens, and store errors never carry their content.

use crate::config::{AuthSettings, Settings, TokenStoreKind};
use fs2::FileExt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// Identity of the cache's current version: changes whenever another process replaces it. It is
/// taken from a file (the cache file itself, or the keyring store's marker), so checking it costs
/// a `stat`, never a keyring call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    ino: u64,
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(&m),
    })
}

/// What kind of failure a store had: callers map `Unavailable` to "sign-in needed" (exit 3; the
/// agent waits), and `TooLong` makes [`TokenCache::write`] save a smaller cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The store cannot be reached or is locked (no Secret Service, a locked keychain).
    Unavailable,
    /// The platform limits the size of a secret and the tokens passed it.
    TooLong,
    Other,
}

/// Why a store failed: a sentence naming the store and what to do, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub message: String,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            message: crate::secret::redact(&message.into()),
        }
    }
}

/// Where the serialized tokens live. Every call is made with the cache lock held (the lock and
/// the rotation logic are the cache's and the caller's, shared by every store), so a store needs
/// no locking of its own. Calls block: a store may talk to the OS.
pub trait TokenStore: Send + Sync + std::fmt::Debug {
    /// The bytes saved last; `Ok(None)` when nothing is saved.
    fn load(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replace what is saved.
    fn save(&self, blob: &[u8]) -> Result<(), StoreError>;
    /// Forget what is saved. Returns whether there was something.
    fn delete(&self) -> Result<bool, StoreError>;
    /// A file whose identity changes whenever `save` or `delete` ran, in any process.
    fn stamp_path(&self) -> &Path;
    /// Where the tokens are, for messages ("/home/u/.local/state/outbox/tokens.json").
    fn describe(&self) -> String;
    /// Whether `delete` may find anything, without asking the OS (a `stat` at most).
    fn may_hold_tokens(&self) -> bool {
        self.stamp_path().exists()
    }
    /// Fail early when the store cannot be used, so `outbox login` says so before the user
    /// signs in in the browser. The file store can always be tried.
    fn probe(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The default store: `state_dir/tokens.json`, 0600, replaced atomically.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    path: PathBuf,
}

impl FileStore {
    pub fn in_dir(state_dir: &Path) -> FileStore {
        FileStore {
            dir: state_dir.to_path_buf(),
            path: state_dir.join("tokens.json"),
        }
    }
}

impl TokenStore for FileStore {
    fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        // Tokens someone else could have written are not ours to use.
        crate::private::check_private_file(&self.path)
            .map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
        match std::fs::read(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::new(
                StoreErrorKind::Other,
                format!("cannot read {}: {e}", self.path.display()),
            )),
        }
    }

    fn save(&self, blob: &[u8]) -> Result<(), StoreError> {
        write_private_atomically(&self.dir, &self.path, blob).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("cannot write {}: {e}", self.path.display()),
            )
        })
    }

    fn delete(&self) -> Result<bool, StoreError> {
        remove_file_durably(&self.dir, &self.path).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("cannot remove {}: {e}", self.path.display()),
            )
        })
    }

    fn stamp_path(&self) -> &Path {
        &self.path
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// The token cache of one state dir: its lock file and its store.
#[derive(Debug, Clone)]
pub struct TokenCache {
    dir: PathBuf,
    path: PathBuf,
    lock_path: PathBuf,
    store: Arc<dyn TokenStore>,
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
    /// The file store in `state_dir`.
    pub fn in_dir(state_dir: &Path) -> TokenCache {
        Self::with_store(state_dir, Arc::new(FileStore::in_dir(state_dir)))
    }

    /// The store `auth.token_store` names, with its lock in `state_dir`.
    pub fn new(auth: &AuthSettings, state_dir: &Path) -> TokenCache {
        match auth.token_store {
            TokenStoreKind::File => Self::in_dir(state_dir),
            #[cfg(feature = "keyring")]
            TokenStoreKind::Keyring => Self::with_store(
                state_dir,
                Arc::new(super::keyring_store::KeyringStore::new(auth, state_dir)),
            ),
            // The config refuses "keyring" in a build without the feature; should a
            // hand-made `Settings` ask for it anyway, a store that always fails says so.
            #[cfg(not(feature = "keyring"))]
            TokenStoreKind::Keyring => {
                Self::with_store(state_dir, Arc::new(NoKeyring::in_dir(state_dir)))
            }
        }
    }

    /// The cache of a configuration: `auth.token_store` in `agent.state_dir`.
    pub fn for_settings(settings: &Settings) -> TokenCache {
        Self::new(&settings.auth, &settings.agent.state_dir)
    }

    /// Any store, with its lock in `state_dir`.
    pub fn with_store(state_dir: &Path, store: Arc<dyn TokenStore>) -> TokenCache {
        TokenCache {
            dir: state_dir.to_path_buf(),
            path: state_dir.join("tokens.json"),
            lock_path: state_dir.join("tokens.lock"),
            store,
        }
    }

    /// `state_dir/tokens.json`, where the file store keeps the tokens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the tokens are, for messages: the file, or the keyring entry.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Whether `remove` may find anything (no keyring call).
    pub fn may_hold_tokens(&self) -> bool {
        #[cfg(feature = "keyring")]
        if self.dir.join(super::keyring_store::MARKER).exists() {
            return true;
        }
        self.store.may_hold_tokens()
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

    /// The version stamp of the cache, `None` when there is none.
    pub fn stamp(&self) -> Option<Stamp> {
        stamp_of(self.store.stamp_path())
    }

    /// Fail early when the store cannot be used (hold the lock).
    pub fn probe(&self, _lock: &CacheLock) -> Result<(), StoreError> {
        self.store.probe()
    }

    /// Read the cache (hold the lock). `Ok(None)`: nobody is signed in.
    pub fn read(&self, _lock: &CacheLock) -> Result<Option<CachedTokens>, StoreError> {
        let Some(bytes) = self.store.load()? else {
            return Ok(None);
        };
        // Never show the content: it is secret. Only say it is unusable.
        match serde_json::from_slice::<CachedTokens>(&bytes) {
            Ok(t) if t.version == VERSION => Ok(Some(t)),
            Ok(_) | Err(_) => Err(StoreError::new(
                StoreErrorKind::Other,
                format!(
                    "the token cache {} is unreadable (another version or damaged); run `outbox login`",
                    self.store.describe()
                ),
            )),
        }
    }

    /// Replace the cache (hold the lock). Where the platform limits a secret's size (Windows'
    /// Credential Manager: 2560 bytes) and the tokens pass it, the cache is saved without the
    /// access token: this process keeps using it from memory, and the next one refreshes.
    pub fn write(&self, _lock: &CacheLock, t: &CachedTokens) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(t)
            .map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
        match self.store.save(&body) {
            Err(e) if e.kind == StoreErrorKind::TooLong => {
                let mut slim = t.clone();
                slim.access_token = String::new();
                slim.expires_at = slim.issued_at;
                let body = serde_json::to_vec(&slim)
                    .map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
                tracing::debug!(
                    "the tokens are too long for the store; saving them without the access token"
                );
                self.store.save(&body)
            }
            other => other,
        }
    }

    /// Remove the cache (hold the lock). Returns whether there was one. A keyring entry left
    /// from `token_store = "keyring"` (its marker is still in the state dir) goes too.
    pub fn remove(&self, _lock: &CacheLock) -> Result<bool, StoreError> {
        let found = self.store.delete()?;
        #[cfg(feature = "keyring")]
        let found = found | self.remove_left_keyring_entry();
        Ok(found)
    }

    /// Best effort: the tokens of the configured store are gone already, so a keyring that
    /// cannot be reached only earns a warning.
    #[cfg(feature = "keyring")]
    fn remove_left_keyring_entry(&self) -> bool {
        let marker = self.dir.join(super::keyring_store::MARKER);
        if self.store.stamp_path() == marker || !marker.exists() {
            return false;
        }
        match super::keyring_store::KeyringStore::from_marker(&self.dir).delete() {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("the keyring entry left from token_store = \"keyring\" stays: {e}");
                false
            }
        }
    }
}

/// Stands in for the keyring in a build without the feature: every use says how to get one.
#[cfg(not(feature = "keyring"))]
#[derive(Debug)]
struct NoKeyring {
    path: PathBuf,
}

#[cfg(not(feature = "keyring"))]
impl NoKeyring {
    fn in_dir(state_dir: &Path) -> NoKeyring {
        NoKeyring {
            path: state_dir.join("tokens.keyring"),
        }
    }

    fn error() -> StoreError {
        StoreError::new(
            StoreErrorKind::Unavailable,
            "auth.token_store = \"keyring\" needs outbox built with `--features keyring`; \
             rebuild with it, or set token_store = \"file\"",
        )
    }
}

#[cfg(not(feature = "keyring"))]
impl TokenStore for NoKeyring {
    fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Err(Self::error())
    }
    fn save(&self, _blob: &[u8]) -> Result<(), StoreError> {
        Err(Self::error())
    }
    fn delete(&self) -> Result<bool, StoreError> {
        Err(Self::error())
    }
    fn stamp_path(&self) -> &Path {
        &self.path
    }
    fn describe(&self) -> String {
        "the OS keyring (not in this build)".into()
    }
    fn probe(&self) -> Result<(), StoreError> {
        Err(Self::error())
    }
}

/// Write `body` to `path` owner-only and atomically: temp file (0600) in the same dir, fsync,
/// rename over, fsync the dir.
pub(crate) fn write_private_atomically(
    dir: &Path,
    path: &Path,
    body: &[u8],
) -> std::io::Result<()> {
    create_private_dir(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tokens.")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    set_owner_only(tmp.as_file())?;
    crate::private::make_private_file(tmp.path())?;
    tmp.write_all(body)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir);
    Ok(())
}

/// Remove `path` and make that durable. Returns whether it existed.
pub(crate) fn remove_file_durably(dir: &Path, path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            sync_dir(dir);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
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
        // Made with a DACL of the user alone, or checked as the ledger's state dir is.
        crate::private::ensure_private_dir(dir)
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
        // On Windows by its DACL: `private::make_private_file`, on its path.
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

    /// The file store with a size limit, as Windows' Credential Manager has one.
    #[derive(Debug)]
    struct Limited(FileStore, usize);

    impl TokenStore for Limited {
        fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.load()
        }
        fn save(&self, blob: &[u8]) -> Result<(), StoreError> {
            if blob.len() > self.1 {
                return Err(StoreError::new(StoreErrorKind::TooLong, "too long"));
            }
            self.0.save(blob)
        }
        fn delete(&self) -> Result<bool, StoreError> {
            self.0.delete()
        }
        fn stamp_path(&self) -> &Path {
            self.0.stamp_path()
        }
        fn describe(&self) -> String {
            "limited".into()
        }
    }

    #[test]
    fn tokens_too_long_for_the_store_are_saved_without_the_access_token() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = dir.path().join("state");
        let cache =
            TokenCache::with_store(&state, Arc::new(Limited(FileStore::in_dir(&state), 1000)));
        let lock = cache.lock_blocking().unwrap_or_else(|e| panic!("{e}"));
        let now = SystemTime::now();
        let mut t = sample(now, 3600);
        t.access_token = "A".repeat(2000);
        cache.write(&lock, &t).unwrap_or_else(|e| panic!("{e}"));
        let back = cache
            .read(&lock)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("saved"));
        assert_eq!(back.refresh_token.as_deref(), Some("RT-SECRET"));
        assert!(back.access_token.is_empty());
        assert!(!back.fresh(now), "the next reader refreshes");
        let mut huge = t.clone();
        huge.refresh_token = Some("R".repeat(2000));
        let e = cache.write(&lock, &huge).err();
        assert_eq!(e.map(|e| e.kind), Some(StoreErrorKind::TooLong));
    }
}
