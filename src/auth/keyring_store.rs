//! The token cache in the OS keyring (`auth.token_store = "keyring"`, in a build with
//! `--features keyring`): the serialized tokens are one secret under service `outbox` and an
//! account naming the app, tenant, authority and state dir. Backends: the Secret Service over
//! D-Bus on Linux and the BSDs (GNOME Keyring, KWallet), the login keychain on macOS, the
//! Credential Manager on Windows.
//!
//! The lock stays a file in the state dir ([`super::cache`]), and beside it a marker file
//! (`tokens.keyring`, 0600, no secret: service, account and a generation) is replaced on every
//! save, so other processes notice new tokens with a `stat` instead of a keyring call each time
//! they need a token. Saving or deleting also removes a `tokens.json` left from the file store:
//! with the keyring chosen, no token stays on disk.
//!
//! Every keyring call runs on a thread of its own and is given up after [`TIMEOUT`]: a Secret
//! Service waiting on an unlock prompt nobody answers must not stall the agent.

use super::cache::TokenStore;
use super::cache::{remove_file_durably, write_private_atomically, StoreError, StoreErrorKind};
use crate::config::AuthSettings;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// The keyring service every entry of outbox is saved under.
pub const SERVICE: &str = "outbox";

/// The marker file's name in the state dir.
pub const MARKER: &str = "tokens.keyring";

/// A keyring call that has not answered by then is reported as unavailable.
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(not(any(unix, windows)))]
compile_error!("the keyring feature has a backend for Linux/BSD, macOS and Windows only");

/// The platform's keyring, for messages.
#[cfg(all(unix, not(target_vendor = "apple")))]
pub const BACKEND: &str = "Secret Service over D-Bus";
#[cfg(target_vendor = "apple")]
pub const BACKEND: &str = "macOS keychain";
#[cfg(windows)]
pub const BACKEND: &str = "Windows Credential Manager";

#[cfg(all(unix, not(target_vendor = "apple")))]
const UNAVAILABLE_HINT: &str = "outbox needs a running, unlocked Secret Service provider (GNOME \
    Keyring or KWallet) on the session bus (DBUS_SESSION_BUS_ADDRESS); start or unlock it, or set \
    token_store = \"file\" in [auth] and run `outbox login`";
#[cfg(target_vendor = "apple")]
const UNAVAILABLE_HINT: &str =
    "unlock the login keychain, or set token_store = \"file\" in [auth] \
    and run `outbox login`";
#[cfg(windows)]
const UNAVAILABLE_HINT: &str = "check that the Credential Manager service runs for this user, or \
    set token_store = \"file\" in [auth] and run `outbox login`";

/// The keyring account for one configuration. The state dir is part of it because the lock that
/// serialises refreshes is a file there: two state dirs sharing one entry would refresh the same
/// rotating refresh token without excluding each other.
pub fn account(auth: &AuthSettings, state_dir: &Path) -> String {
    let dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let digest = sha2::Sha256::digest(dir.to_string_lossy().as_bytes());
    format!(
        "{}@{}@{}#{}",
        auth.client_id.as_deref().unwrap_or_default(),
        auth.tenant,
        auth.authority.host_str().unwrap_or_default(),
        hex::encode(&digest[..4])
    )
}

/// The marker beside the lock: what entry holds the tokens, never the tokens.
#[derive(serde::Serialize, serde::Deserialize)]
struct Marker {
    store: String,
    service: String,
    account: String,
    /// New on every save, so the marker's identity changes even within one mtime tick.
    generation: String,
}

#[derive(Debug, Clone)]
pub struct KeyringStore {
    dir: PathBuf,
    account: String,
    marker: PathBuf,
    /// `tokens.json`: where the file store would keep them.
    file: PathBuf,
}

impl KeyringStore {
    pub fn new(auth: &AuthSettings, state_dir: &Path) -> KeyringStore {
        Self::with_account(state_dir, account(auth, state_dir))
    }

    pub fn with_account(state_dir: &Path, account: String) -> KeyringStore {
        KeyringStore {
            dir: state_dir.to_path_buf(),
            account,
            marker: state_dir.join(MARKER),
            file: state_dir.join("tokens.json"),
        }
    }

    /// The store the marker in `state_dir` names (an unreadable marker names no account: only
    /// the marker and a leftover file are then removed by `delete`).
    pub fn from_marker(state_dir: &Path) -> KeyringStore {
        let account = std::fs::read(state_dir.join(MARKER))
            .ok()
            .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
            .filter(|m| m.service == SERVICE)
            .map(|m| m.account)
            .unwrap_or_default();
        Self::with_account(state_dir, account)
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    fn remove_leftover_file(&self) -> Result<bool, StoreError> {
        remove_file_durably(&self.dir, &self.file).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Other,
                format!(
                    "cannot remove {} (left from token_store = \"file\"): {e}",
                    self.file.display()
                ),
            )
        })
    }

    /// The account the marker names, when it names another one than this config's (the config
    /// changed since): logout removes that entry too.
    fn marked_other_account(&self) -> Option<String> {
        let bytes = std::fs::read(&self.marker).ok()?;
        let m: Marker = serde_json::from_slice(&bytes).ok()?;
        (m.service == SERVICE && m.account != self.account).then_some(m.account)
    }
}

impl TokenStore for KeyringStore {
    fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match call(&self.account, "read the tokens", |e| e.get_secret())? {
            Ok(secret) => Ok(Some(secret)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(classify(e, "read the tokens")),
        }
    }

    fn save(&self, blob: &[u8]) -> Result<(), StoreError> {
        let blob = blob.to_vec();
        call(&self.account, "save the tokens", move |e| {
            e.set_secret(&blob)
        })?
        .map_err(|e| classify(e, "save the tokens"))?;
        let marker = Marker {
            store: "keyring".into(),
            service: SERVICE.into(),
            account: self.account.clone(),
            generation: uuid::Uuid::new_v4().to_string(),
        };
        let body = serde_json::to_vec_pretty(&marker)
            .map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
        write_private_atomically(&self.dir, &self.marker, &body).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("cannot write {}: {e}", self.marker.display()),
            )
        })?;
        self.remove_leftover_file()?;
        Ok(())
    }

    fn delete(&self) -> Result<bool, StoreError> {
        let mut found = false;
        let mut accounts = vec![self.account.clone()];
        accounts.extend(self.marked_other_account());
        for account in accounts.into_iter().filter(|a| !a.is_empty()) {
            match call(&account, "remove the tokens", |e| e.delete_credential())? {
                Ok(()) => found = true,
                Err(keyring::Error::NoEntry) => {}
                Err(e) => return Err(classify(e, "remove the tokens")),
            }
        }
        // The marker goes last: while the entry may still exist, logout can find it again.
        remove_file_durably(&self.dir, &self.marker).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("cannot remove {}: {e}", self.marker.display()),
            )
        })?;
        found |= self.remove_leftover_file()?;
        Ok(found)
    }

    fn stamp_path(&self) -> &Path {
        &self.marker
    }

    fn describe(&self) -> String {
        format!(
            "the OS keyring ({BACKEND}, service \"{SERVICE}\", account \"{}\")",
            self.account
        )
    }

    /// Logout always asks the keyring: an entry may be there without its marker.
    fn may_hold_tokens(&self) -> bool {
        true
    }

    fn probe(&self) -> Result<(), StoreError> {
        self.load().map(|_| ())
    }
}

/// Run one keyring operation on its own thread, bounded by [`TIMEOUT`]. The outer error is the
/// keyring not answering (or the entry not being constructible); the inner one is its answer.
fn call<T: Send + 'static>(
    account: &str,
    what: &'static str,
    op: impl FnOnce(&keyring::Entry) -> keyring::Result<T> + Send + 'static,
) -> Result<keyring::Result<T>, StoreError> {
    let (tx, rx) = mpsc::channel();
    let account = account.to_string();
    std::thread::Builder::new()
        .name("outbox-keyring".into())
        .spawn(move || {
            let answer = keyring::Entry::new(SERVICE, &account).and_then(|entry| op(&entry));
            let _ = tx.send(answer);
        })
        .map_err(|e| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("cannot start a thread for the keyring: {e}"),
            )
        })?;
    match rx.recv_timeout(TIMEOUT) {
        Ok(answer) => Ok(answer),
        Err(_) => Err(StoreError::new(
            StoreErrorKind::Unavailable,
            format!(
                "the OS keyring ({BACKEND}) did not answer within {} s when asked to {what} \
                 (locked, waiting for an unlock prompt?); {UNAVAILABLE_HINT}",
                TIMEOUT.as_secs()
            ),
        )),
    }
}

/// A keyring error as a sentence saying what to do. The payload of `BadEncoding` (the stored
/// bytes) is never shown.
fn classify(e: keyring::Error, what: &str) -> StoreError {
    match e {
        keyring::Error::PlatformFailure(inner) | keyring::Error::NoStorageAccess(inner) => {
            StoreError::new(
                StoreErrorKind::Unavailable,
                format!("the OS keyring ({BACKEND}) cannot {what}: {inner}; {UNAVAILABLE_HINT}"),
            )
        }
        keyring::Error::TooLong(attr, max) => StoreError::new(
            StoreErrorKind::TooLong,
            format!("the OS keyring ({BACKEND}) cannot {what}: {attr} is longer than {max}"),
        ),
        keyring::Error::BadEncoding(_) => StoreError::new(
            StoreErrorKind::Other,
            format!(
                "the keyring entry of service \"{SERVICE}\" is not what outbox saved; run `outbox \
                 logout`, then `outbox login`"
            ),
        ),
        keyring::Error::Ambiguous(_) => StoreError::new(
            StoreErrorKind::Other,
            format!(
                "several keyring entries match service \"{SERVICE}\": remove them with the \
                 keyring's manager, then run `outbox login`"
            ),
        ),
        other => StoreError::new(
            StoreErrorKind::Other,
            format!("the OS keyring ({BACKEND}) cannot {what}: {other}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(client_id: &str, tenant: &str) -> AuthSettings {
        AuthSettings {
            method: crate::config::AuthMethod::DeviceCode,
            authority: url::Url::parse("https://login.microsoftonline.com")
                .unwrap_or_else(|e| panic!("{e}")),
            tenant: tenant.into(),
            client_id: Some(client_id.into()),
            token_store: crate::config::TokenStoreKind::Keyring,
        }
    }

    #[test]
    fn account_names_app_tenant_authority_and_state_dir() {
        let a = account(&auth("app", "contoso"), Path::new("/s1"));
        assert!(
            a.starts_with("app@contoso@login.microsoftonline.com#"),
            "{a}"
        );
        assert_eq!(a, account(&auth("app", "contoso"), Path::new("/s1")));
        assert_ne!(a, account(&auth("app", "contoso"), Path::new("/s2")));
        assert_ne!(a, account(&auth("app", "fabrikam"), Path::new("/s1")));
        assert_ne!(a, account(&auth("app2", "contoso"), Path::new("/s1")));
    }

    #[test]
    fn errors_say_what_to_do_and_hide_the_payload() {
        let e = classify(
            keyring::Error::PlatformFailure("no bus".into()),
            "read the tokens",
        );
        assert_eq!(e.kind, StoreErrorKind::Unavailable);
        assert!(e.message.contains("token_store = \"file\""), "{e}");
        assert!(e.message.contains(BACKEND), "{e}");
        let e = classify(
            keyring::Error::BadEncoding(b"RT-SECRET".to_vec()),
            "read the tokens",
        );
        assert!(!e.message.contains("RT-SECRET"), "{e}");
        let e = classify(keyring::Error::TooLong("secret".into(), 2560), "save");
        assert_eq!(e.kind, StoreErrorKind::TooLong);
    }
}
