//! Owner-only places: the state dir (ledger, saved upload URLs, token cache, control socket) and
//! the config file that says where tokens come from. Another local user who can write to any of
//! them could plant an upload URL (and receive a file on resume), swap a token cache or a token
//! command. So:
//!
//! - the state dir (and each dir in it that outbox makes) must be owned by the user: created
//!   0700; found group/world-accessible but ours, it is tightened to 0700 with a warning (it is
//!   ours: nobody else should be in it); owned by someone else, a symbolic link (to anything), or
//!   in a parent others can write (unless sticky, as `/tmp` is, with the dir ours) or that
//!   belongs to another user but root, the agent refuses to use it and says why;
//! - a saved upload URL or token cache is used only if it is owned by the user and nobody else
//!   can write it (readable by others: tightened to 0600, warned);
//! - a config file (or its folder) that another user owns or can write is refused (exit 78) for
//!   every auth method: it could send the bearer token elsewhere or run a command as the user.
//!
//! Never decides anything else; on non-Unix systems these checks are left to the platform ACLs.

use std::io;
use std::path::Path;

/// Create `dir` (and its parents) owner-only, or check an existing one as the module says.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let refuse = |why: String| {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the state dir {} is not used: {why}; outbox keeps tokens and upload URLs there, so it must be a real folder of yours in a folder only you (or root) can change: set agent.state_dir to one (the default is under your home)",
                    dir.display()
                ),
            ))
        };
        // A link: whoever made it chose where the ledger goes (and what would be tightened).
        if std::fs::symlink_metadata(dir)?.file_type().is_symlink() {
            let to = std::fs::read_link(dir)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            return refuse(format!("it is a symbolic link (to {to})"));
        }
        // A folder on the way others can write, or another user's: they could replace the
        // state dir (with a link, or a folder of theirs the running agent then writes tokens
        // and upload URLs into) at any time. Its parent, and every folder above it.
        if let Some(why) = ancestor_problem(dir, "its parent") {
            return refuse(why);
        }
        let meta = std::fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a folder",
                dir.display()
            )));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the state dir {} belongs to another user (uid {}); outbox keeps tokens and upload URLs there and uses only a folder of yours: set agent.state_dir to one",
                    dir.display(),
                    meta.uid()
                ),
            ));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            tracing::warn!(
                dir = %crate::outside::path(dir),
                was = format!("{mode:o}"),
                "the state dir was open to other users; it is now 0700 (owner only). If another user could write there, run `outbox logout` and sign in again"
            );
        }
    }
    Ok(())
}

/// Why a folder on the way to `path` (its parent and every folder above it, as spelled and as
/// its links resolve) lets another user replace what is below it: writable by others (the
/// user's own group aside) and not sticky, or another user's (but root's). A sticky folder
/// (as `/tmp` is) protects the entries of others only from users who do not own it, so it
/// counts only when the user or root owns it. `None`: no such folder.
#[cfg(unix)]
fn ancestor_problem(path: &Path, parent_is: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let my_group = rustix::process::getegid().as_raw();
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    let real = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    let mut seen = std::collections::HashSet::new();
    for dir in parent.ancestors().chain(real.ancestors()) {
        if dir.as_os_str().is_empty() || !seen.insert(dir.to_path_buf()) {
            continue;
        }
        let Ok(m) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = m.mode() & 0o7777;
        let trusted_owner = m.uid() == me || m.uid() == 0;
        let sticky = mode & 0o1000 != 0 && trusted_owner;
        let shown = crate::outside::path(dir);
        let which = if dir == parent || dir == real {
            format!("{parent_is} {shown}")
        } else {
            format!("the folder {shown} above it")
        };
        if !trusted_owner {
            return Some(format!(
                "{which} belongs to another user (uid {}), who could replace what is in it",
                m.uid()
            ));
        }
        let others_write = mode & 0o002 != 0 || (mode & 0o020 != 0 && m.gid() != my_group);
        if others_write && !sticky {
            return Some(format!(
                "other users can write {which} (mode {mode:o}) and so replace what is in it; run `chmod go-w {shown}` or choose another place"
            ));
        }
    }
    None
}

/// Whether the secret file at `path` (a saved upload URL, the token cache) may be trusted: owned
/// by the user and writable by nobody else. Readable by others, it is tightened to 0600.
/// `Ok(())` also when it does not exist (the read that follows says so).
pub fn check_private_file(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let me = rustix::process::geteuid().as_raw();
        let mode = meta.mode() & 0o777;
        let refuse = |why: String| {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is not used: {why}", path.display()),
            ))
        };
        if !meta.is_file() {
            return refuse("it is not a regular file (a link?)".into());
        }
        if meta.uid() != me {
            return refuse(format!(
                "it belongs to another user (uid {}), who may have planted it",
                meta.uid()
            ));
        }
        if mode & 0o022 != 0 {
            return refuse(format!(
                "other users can write it (mode {mode:o}); delete it, it will be made again"
            ));
        }
        if mode & 0o044 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            tracing::warn!(path = %crate::outside::path(path), was = format!("{mode:o}"), "a secret file was readable by other users; it is now 0600");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The config at `path`, or every reason it is not used, in the order to fix them: its
/// permissions first (a file others can write is refused whatever it says: said even when its
/// text has errors too, and before them), then each error of its text in the file's order.
/// What every command and each reload of a running agent reads the config through.
pub fn load_config(
    path: &Path,
) -> Result<crate::config::Settings, Vec<crate::config::ConfigError>> {
    let read_at = std::time::SystemTime::now();
    let refused = check_config_file(path).err();
    match (crate::config::Settings::load_all(path), refused) {
        (Ok(mut settings), None) => {
            settings.read_at = read_at;
            warn_readable_secrets(&settings);
            Ok(settings)
        }
        (Ok(_), Some(r)) => Err(vec![r]),
        (Err(mut errors), refused) => {
            errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            if let Some(r) = refused {
                errors.insert(0, r);
            }
            Err(errors)
        }
    }
}

/// The config file's permissions. Whoever can change the config can redirect outbox (another
/// `graph.base_url` gets the bearer token; a `token_command` runs as the user), whatever the auth
/// method. So the file, and the folder it is in, must belong to the user (or root) and nobody
/// else may write them (the folder: unless sticky, as `/tmp` is, or group-writable only by the
/// user's own group); else it is refused (exit 78, naming the file and the command that fixes
/// it). Checked at every load, before its text is read (see [`load_config`]): start-up, every
/// command, and each reload of a running agent.
pub fn check_config_file(path: &Path) -> Result<(), crate::config::ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(());
        };
        let refuse = |message: String| {
            Err(crate::config::ConfigError {
                file: path.to_path_buf(),
                line: None,
                key: String::new(),
                message,
            })
        };
        let me = rustix::process::geteuid().as_raw();
        let mode = meta.mode() & 0o7777;
        let shown = crate::outside::path(path);
        if meta.uid() != me && meta.uid() != 0 {
            return refuse(format!(
                "the config belongs to another user (uid {}), who could redirect outbox or run commands as you; it is not used. Copy it to a file of yours (`cp {shown} ~/.config/outbox/config.toml`), or have root run `chown {me} {shown}`",
                meta.uid()
            ));
        }
        if mode & 0o022 != 0 {
            return refuse(format!(
                "other users can write the config (mode {mode:o}) and so redirect outbox or run commands as you; it is not used: run `chmod go-w {shown}`"
            ));
        }
        // The folders on the way: whoever can write one can put another file in the config's
        // place (the path's and the resolved file's).
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        for p in [path, real.as_path()] {
            if let Some(why) = ancestor_problem(p, "the config's folder") {
                return refuse(format!(
                    "{why}; the config is not used: keep it in a folder of yours"
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Whether users other than its owner can write the config file itself (group or others: the
/// refusal of [`check_config_file`] that `chmod go-w` fixes).
pub fn config_writable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).is_ok_and(|m| m.mode() & 0o022 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// A config that names where secrets come from, readable by others, is warned about.
fn warn_readable_secrets(settings: &crate::config::Settings) {
    #[cfg(unix)]
    {
        use crate::config::AuthMethod;
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(&settings.source) else {
            return;
        };
        let mode = meta.mode() & 0o7777;
        let secretish = matches!(
            settings.auth.method,
            AuthMethod::ClientCredentials { .. } | AuthMethod::TokenCommand { .. }
        );
        if secretish && mode & 0o044 != 0 {
            tracing::warn!(
                path = %crate::outside::path(&settings.source),
                mode = format!("{mode:o}"),
                "the config names where secrets come from and other users can read it; run `chmod 600` on it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = settings;
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_loose_state_dir_of_ours_is_tightened() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path().join("state");
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        ensure_private_dir(&d).expect("ours");
        let mode = std::fs::metadata(&d).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ensure_private_dir(&d.join("new/deeper")).expect("created");
    }

    #[test]
    fn a_state_dir_that_is_a_link_or_in_a_parent_others_can_write_is_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let target = t.path().join("target");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let link = t.path().join("state");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let e = ensure_private_dir(&link).expect_err("a link");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let mode = std::fs::metadata(&target)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o755, "the link's target is left as it was");
        let open = t.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = ensure_private_dir(&open.join("state")).expect_err("an open parent");
        assert!(e.to_string().contains("chmod go-w"), "{e}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        ensure_private_dir(&open.join("state")).expect("sticky, and ours");
    }

    #[test]
    fn a_secret_file_others_can_write_is_refused_and_one_they_can_read_tightened() {
        let t = tempfile::tempdir().expect("tempdir");
        let f = t.path().join("x.url");
        std::fs::write(&f, "https://x").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(check_private_file(&f).is_err());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        check_private_file(&f).expect("tightened");
        let mode = std::fs::metadata(&f).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        check_private_file(&t.path().join("absent")).expect("absent is fine");
    }
}
