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
//! On Windows the same promises are kept with the file's owner and DACL (module `acl` decides
//! over a parsed DACL, `outbox_win` reads and writes them): a write (for secrets, a read too)
//! allowed to anyone but the user, SYSTEM, Administrators and TrustedInstaller counts as "others
//! can write (read)", an owner other than those as "another user's", a link or junction as a
//! symbolic link; the state dir and secrets outbox makes get a protected DACL of the user alone,
//! and the remedy named is an `icacls` command.
//!
//! Never decides anything else.

use std::io;
use std::path::Path;

/// Create `dir` (and its parents) owner-only, or check an existing one as the module says.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(windows)]
    let existed = std::fs::symlink_metadata(dir).is_ok();
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
    #[cfg(windows)]
    win::ensure_private_dir(dir, existed)?;
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
    #[cfg(windows)]
    win::check_private_file(path)?;
    Ok(())
}

/// Make the secret file at `path`, just created by outbox (before anything is written in it),
/// the user's alone. On Unix it is already (made 0600); on Windows it gets a protected DACL of
/// the user alone (a file takes its folder's DACL as it is made, which need not be so).
pub fn make_private_file(path: &Path) -> io::Result<()> {
    #[cfg(windows)]
    win::owner_only(path, false)?;
    #[cfg(not(windows))]
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
    #[cfg(windows)]
    win::check_config_file(path).map_err(|message| crate::config::ConfigError {
        file: path.to_path_buf(),
        line: None,
        key: String::new(),
        message,
    })?;
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
    #[cfg(windows)]
    {
        use crate::config::AuthMethod;
        let secretish = matches!(
            settings.auth.method,
            AuthMethod::ClientCredentials { .. } | AuthMethod::TokenCommand { .. }
        );
        if secretish {
            win::warn_readable_config(&settings.source);
        }
    }
    #[cfg(not(any(unix, windows)))]
    let _ = settings;
}

/// Who else may do what to a file, from its owner and DACL as Windows keeps them: the
/// decisions of the Windows checks, over a parsed DACL, so that they are tested on every
/// platform (the reading and writing of DACLs is `outbox_win`'s).
#[cfg(any(windows, test))]
pub(crate) mod acl {
    /// One entry of a DACL: an allow (or deny) of `mask` to `sid`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Ace {
        pub allow: bool,
        pub sid: String,
        pub mask: u32,
        /// `INHERIT_ONLY_ACE`: it applies to what is made inside only, not to the file itself.
        pub inherit_only: bool,
    }

    /// A file's owner and DACL (`None`: a NULL DACL, which lets everyone do anything).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Security {
        pub owner: Option<String>,
        pub dacl: Option<Vec<Ace>>,
    }

    pub const EVERYONE: &str = "S-1-1-0";
    pub const SYSTEM: &str = "S-1-5-18";
    pub const ADMINISTRATORS: &str = "S-1-5-32-544";
    pub const TRUSTED_INSTALLER: &str =
        "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464";
    const CREATOR_OWNER: &str = "S-1-3-0";
    const CREATOR_GROUP: &str = "S-1-3-1";
    const OWNER_RIGHTS: &str = "S-1-3-4";

    const FILE_READ_DATA: u32 = 0x0001;
    const FILE_WRITE_DATA: u32 = 0x0002;
    const FILE_APPEND_DATA: u32 = 0x0004;
    const FILE_WRITE_EA: u32 = 0x0010;
    const FILE_DELETE_CHILD: u32 = 0x0040;
    const DELETE: u32 = 0x0001_0000;
    const WRITE_DAC: u32 = 0x0004_0000;
    const WRITE_OWNER: u32 = 0x0008_0000;
    const GENERIC_ALL: u32 = 0x1000_0000;
    const GENERIC_WRITE: u32 = 0x4000_0000;
    const GENERIC_READ: u32 = 0x8000_0000;
    /// `FILE_ALL_ACCESS`, what GENERIC_ALL means for a file.
    const FILE_ALL_ACCESS: u32 = 0x001F_01FF;

    /// Rights that change a file or folder, what is in it, or who may: its data (for a folder:
    /// adding entries), extended attributes, deleting it or its entries, its DACL, its owner.
    pub const WRITE: u32 = FILE_WRITE_DATA
        | FILE_APPEND_DATA
        | FILE_WRITE_EA
        | FILE_DELETE_CHILD
        | DELETE
        | WRITE_DAC
        | WRITE_OWNER;
    /// Reading a file's data (for a folder: listing it).
    pub const READ: u32 = FILE_READ_DATA;
    /// Rights on a folder that let their holder replace an entry of someone else's in it:
    /// deleting any entry (then making another), or taking the folder over.
    pub const REPLACE: u32 = FILE_DELETE_CHILD | WRITE_DAC | WRITE_OWNER;

    /// The specific rights a mask grants (GENERIC_* mapped as for files).
    fn expand(mask: u32) -> u32 {
        let mut m = mask & !(GENERIC_ALL | GENERIC_WRITE | GENERIC_READ);
        if mask & GENERIC_ALL != 0 {
            m |= FILE_ALL_ACCESS;
        }
        if mask & GENERIC_WRITE != 0 {
            m |= FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_WRITE_EA;
        }
        if mask & GENERIC_READ != 0 {
            m |= FILE_READ_DATA;
        }
        m
    }

    /// The user, or an account the system trusts above the user anyway.
    pub fn trusted(sid: &str, me: &str) -> bool {
        sid == me || sid == SYSTEM || sid == ADMINISTRATORS || sid == TRUSTED_INSTALLER
    }

    /// The owner's SID when it is neither the user nor a trusted account (an owner may always
    /// change the DACL).
    pub fn foreign_owner<'a>(sec: &'a Security, me: &str) -> Option<&'a str> {
        sec.owner.as_deref().filter(|o| !trusted(o, me))
    }

    /// Who else (neither the user nor a [`trusted`] account) is allowed any of `rights`, with
    /// the rights allowed them, each SID once, in the DACL's order. A NULL DACL allows everyone
    /// everything. A deny before an allow takes from it what it denies to the same SID or to
    /// Everyone (Windows reads a DACL in order, denies first in a canonical one); OWNER RIGHTS
    /// stands for the owner; entries that only pass down (inherit-only), and CREATOR OWNER's
    /// and CREATOR GROUP's (templates for what is made inside), allow nothing on the file.
    pub fn others_with(sec: &Security, me: &str, rights: u32) -> Vec<(String, u32)> {
        let Some(dacl) = &sec.dacl else {
            return vec![(EVERYONE.to_string(), rights)];
        };
        let mut denied: Vec<(&str, u32)> = Vec::new();
        let mut out: Vec<(String, u32)> = Vec::new();
        for ace in dacl.iter().filter(|a| !a.inherit_only) {
            let sid = if ace.sid == OWNER_RIGHTS {
                match sec.owner.as_deref() {
                    Some(o) => o,
                    None => continue,
                }
            } else {
                ace.sid.as_str()
            };
            if sid == CREATOR_OWNER || sid == CREATOR_GROUP {
                continue;
            }
            let mask = expand(ace.mask);
            if !ace.allow {
                denied.push((sid, mask));
                continue;
            }
            if trusted(sid, me) {
                continue;
            }
            let taken = denied
                .iter()
                .filter(|(d, _)| *d == sid || *d == EVERYONE)
                .fold(0, |acc, (_, m)| acc | m);
            let granted = mask & !taken & rights;
            if granted == 0 {
                continue;
            }
            match out.iter_mut().find(|(s, _)| s == sid) {
                Some((_, m)) => *m |= granted,
                None => out.push((sid.to_string(), granted)),
            }
        }
        out
    }

    /// "Everyone (S-1-1-0), BUILTIN\Users (S-1-5-32-545)": each SID with its account's name
    /// when `name` knows it.
    pub fn describe(others: &[(String, u32)], name: impl Fn(&str) -> Option<String>) -> String {
        others
            .iter()
            .map(|(sid, _)| match name(sid) {
                Some(n) => format!("{n} ({sid})"),
                None => sid.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `icacls` command that leaves `shown` to the user alone: what its folder passes down
    /// removed, the user given full control (passed down inside a folder), and each of `others`'
    /// own entries removed.
    pub fn icacls_fix(shown: &str, me: &str, folder: bool, others: &[(String, u32)]) -> String {
        let inherit = if folder { "(OI)(CI)" } else { "" };
        let mut cmd = format!("icacls \"{shown}\" /inheritance:r /grant:r \"*{me}:{inherit}F\"");
        if !others.is_empty() {
            cmd.push_str(" /remove");
            for (sid, _) in others {
                cmd.push_str(&format!(" \"*{sid}\""));
            }
        }
        cmd
    }
}

/// The Windows checks: the module's promises kept with owners and DACLs.
#[cfg(windows)]
mod win {
    use super::acl;
    use std::io;
    use std::path::Path;

    fn security(path: &Path, follow: bool) -> io::Result<acl::Security> {
        let s = outbox_win::file_security(path, follow)?;
        Ok(acl::Security {
            owner: s.owner,
            dacl: s.dacl.map(|aces| {
                aces.into_iter()
                    .map(|a| acl::Ace {
                        allow: a.allow,
                        sid: a.sid,
                        mask: a.mask,
                        // INHERIT_ONLY_ACE
                        inherit_only: a.flags & 0x08 != 0,
                    })
                    .collect()
            }),
        })
    }

    fn who(others: &[(String, u32)]) -> String {
        acl::describe(others, outbox_win::account_name)
    }

    fn owner_named(sid: &str) -> String {
        who(&[(sid.to_string(), 0)])
    }

    /// Give `path` a protected DACL of the user alone (passed down inside, for a folder).
    pub fn owner_only(path: &Path, folder: bool) -> io::Result<()> {
        outbox_win::set_file_dacl(path, &outbox_win::owner_only_file_sddl(folder)?)
    }

    fn is_link(meta: &std::fs::Metadata) -> bool {
        use std::os::windows::fs::MetadataExt;
        // FILE_ATTRIBUTE_REPARSE_POINT: a symbolic link or junction (or another reparse point:
        // refused alike, the state dir and secrets have no reason to be one).
        meta.file_type().is_symlink() || meta.file_attributes() & 0x400 != 0
    }

    /// Why a folder on the way to `path` (its parent and every folder above it, as spelled and
    /// as resolved) lets another user replace what is in it: another user's, or someone else
    /// allowed to delete its entries or change its DACL or owner. A folder whose security
    /// cannot be read is passed over (as on Unix one that cannot be looked at).
    fn ancestor_problem(path: &Path, parent_is: &str, me: &str) -> Option<String> {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty())?;
        let real = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
        let mut seen = std::collections::HashSet::new();
        for dir in parent.ancestors().chain(real.ancestors()) {
            // One folder once: `C:\x` and the resolved `\\?\C:\x` (as Windows compares names,
            // without case) are one. Each look is a handle opened and read.
            let key = dir
                .to_string_lossy()
                .trim_start_matches(r"\\?\")
                .to_lowercase();
            if dir.as_os_str().is_empty() || !seen.insert(key) {
                continue;
            }
            let Ok(sec) = security(dir, true) else {
                continue;
            };
            let shown = crate::outside::path(dir);
            let which = if dir == parent || dir == real {
                format!("{parent_is} {shown}")
            } else {
                format!("the folder {shown} above it")
            };
            if let Some(owner) = acl::foreign_owner(&sec, me) {
                return Some(format!(
                    "{which} belongs to another user ({}), who could replace what is in it",
                    owner_named(owner)
                ));
            }
            let others = acl::others_with(&sec, me, acl::REPLACE);
            if !others.is_empty() {
                return Some(format!(
                    "{} may delete what is in {which} (or change who may) and so replace it; run `{}` or choose another place",
                    who(&others),
                    acl::icacls_fix(&shown, me, true, &others)
                ));
            }
        }
        None
    }

    /// `ensure_private_dir` on Windows, after the folder was made (`existed`: it was there
    /// before): one outbox made gets a DACL of the user alone; one it found must be the user's
    /// and no link, and is tightened to the user alone when others may read or write it.
    pub fn ensure_private_dir(dir: &Path, existed: bool) -> io::Result<()> {
        let refuse = |why: String| {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the state dir {} is not used: {why}; outbox keeps tokens and upload URLs there, so it must be a real folder of yours in a folder only you (or an administrator) can change: set agent.state_dir to one (the default is under %LOCALAPPDATA%)",
                    dir.display()
                ),
            ))
        };
        let meta = std::fs::symlink_metadata(dir)?;
        if is_link(&meta) {
            let to = std::fs::read_link(dir)
                .map(|t| format!(" (to {})", t.display()))
                .unwrap_or_default();
            return refuse(format!("it is a symbolic link or junction{to}"));
        }
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a folder",
                dir.display()
            )));
        }
        let me = outbox_win::user_sid()?;
        if let Some(why) = ancestor_problem(dir, "its parent", &me) {
            return refuse(why);
        }
        if !existed {
            return owner_only(dir, true);
        }
        let sec = security(dir, false)?;
        if let Some(owner) = acl::foreign_owner(&sec, &me) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the state dir {} belongs to another user ({}); outbox keeps tokens and upload URLs there and uses only a folder of yours: set agent.state_dir to one",
                    dir.display(),
                    owner_named(owner)
                ),
            ));
        }
        let others = acl::others_with(&sec, &me, acl::READ | acl::WRITE);
        if !others.is_empty() {
            owner_only(dir, true)?;
            tracing::warn!(
                dir = %crate::outside::path(dir),
                was_open_to = %who(&others),
                "the state dir was open to other users; it is now yours alone (its DACL). If another user could write there, run `outbox logout` and sign in again"
            );
        }
        Ok(())
    }

    /// `check_private_file` on Windows.
    pub fn check_private_file(path: &Path) -> io::Result<()> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let refuse = |why: String| {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is not used: {why}", path.display()),
            ))
        };
        if is_link(&meta) || !meta.is_file() {
            return refuse("it is not a regular file (a link?)".into());
        }
        let me = outbox_win::user_sid()?;
        let sec = security(path, false)?;
        if let Some(owner) = acl::foreign_owner(&sec, &me) {
            return refuse(format!(
                "it belongs to another user ({}), who may have planted it",
                owner_named(owner)
            ));
        }
        let writers = acl::others_with(&sec, &me, acl::WRITE);
        if !writers.is_empty() {
            return refuse(format!(
                "other users can write it ({}); delete it, it will be made again",
                who(&writers)
            ));
        }
        let readers = acl::others_with(&sec, &me, acl::READ);
        if !readers.is_empty() {
            owner_only(path, false)?;
            tracing::warn!(path = %crate::outside::path(path), was_readable_by = %who(&readers), "a secret file was readable by other users; it is now yours alone (its DACL)");
        }
        Ok(())
    }

    /// `check_config_file` on Windows: the reason the config is refused, if it is.
    pub fn check_config_file(path: &Path) -> Result<(), String> {
        if std::fs::metadata(path).is_err() {
            return Ok(());
        }
        let me = outbox_win::user_sid()
            .map_err(|e| format!("the config is not used: who you are could not be read ({e})"))?;
        let shown = crate::outside::path(path);
        let sec = security(path, true).map_err(|e| {
            format!(
                "the config is not used: who may change it could not be read ({e}); outbox reads only a config that only you can change"
            )
        })?;
        if let Some(owner) = acl::foreign_owner(&sec, &me) {
            return Err(format!(
                "the config belongs to another user ({}), who could redirect outbox or run commands as you; it is not used. Copy it to a file of yours (`copy \"{shown}\" \"%APPDATA%\\outbox\\config\\config.toml\"`), or have an administrator run `icacls \"{shown}\" /setowner \"*{me}\"`",
                owner_named(owner)
            ));
        }
        let writers = acl::others_with(&sec, &me, acl::WRITE);
        if !writers.is_empty() {
            return Err(format!(
                "other users can write the config ({}) and so redirect outbox or run commands as you; it is not used: run `{}`",
                who(&writers),
                acl::icacls_fix(&shown, &me, false, &writers)
            ));
        }
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        for p in [path, real.as_path()] {
            if let Some(why) = ancestor_problem(p, "the config's folder", &me) {
                return Err(format!(
                    "{why}; the config is not used: keep it in a folder of yours"
                ));
            }
        }
        Ok(())
    }

    /// A config naming where secrets come from, readable by others: warned about.
    pub fn warn_readable_config(path: &Path) {
        let (Ok(me), Ok(sec)) = (outbox_win::user_sid(), security(path, true)) else {
            return;
        };
        let readers = acl::others_with(&sec, &me, acl::READ);
        if !readers.is_empty() {
            let shown = crate::outside::path(path);
            tracing::warn!(
                path = %shown,
                readable_by = %who(&readers),
                "the config names where secrets come from and other users can read it; run `{}`",
                acl::icacls_fix(&shown, &me, false, &readers)
            );
        }
    }
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

/// The Windows decisions over parsed DACLs: run on every platform.
#[cfg(test)]
mod acl_tests {
    use super::acl::*;

    const ME: &str = "S-1-5-21-1-2-3-1001";
    const NEIGHBOUR: &str = "S-1-5-21-1-2-3-1002";
    const USERS: &str = "S-1-5-32-545";
    const AUTHENTICATED: &str = "S-1-5-11";

    fn ace(allow: bool, sid: &str, mask: u32) -> Ace {
        Ace {
            allow,
            sid: sid.into(),
            mask,
            inherit_only: false,
        }
    }

    fn sec(owner: &str, aces: Vec<Ace>) -> Security {
        Security {
            owner: Some(owner.into()),
            dacl: Some(aces),
        }
    }

    #[test]
    fn a_profile_folders_dacl_is_the_users_alone() {
        // %LOCALAPPDATA%'s, as Windows makes it: the user, SYSTEM and Administrators, full.
        let s = sec(
            ME,
            vec![
                ace(true, SYSTEM, 0x1F01FF),
                ace(true, ADMINISTRATORS, 0x1F01FF),
                ace(true, ME, 0x1F01FF),
            ],
        );
        assert!(others_with(&s, ME, READ | WRITE).is_empty());
        assert_eq!(foreign_owner(&s, ME), None);
        // Owned by Administrators (what an elevated process makes) or SYSTEM: trusted.
        assert_eq!(foreign_owner(&sec(ADMINISTRATORS, vec![]), ME), None);
        assert_eq!(
            foreign_owner(&sec(NEIGHBOUR, vec![]), ME),
            Some(NEIGHBOUR),
            "another user's"
        );
    }

    #[test]
    fn others_allowed_to_read_or_write_are_named_with_what_they_may_do() {
        // Wine's DACL of a file of mode 0644 (Everyone: FILE_GENERIC_READ | EXECUTE), then
        // of 0666 (FILE_GENERIC_WRITE | DELETE | FILE_DELETE_CHILD too).
        let readable = sec(
            ME,
            vec![
                ace(true, SYSTEM, 0x1F01FF),
                ace(true, ME, 0x1F01FF),
                ace(true, EVERYONE, 0x1200A9),
            ],
        );
        assert_eq!(others_with(&readable, ME, READ), [(EVERYONE.into(), READ)]);
        assert!(others_with(&readable, ME, WRITE).is_empty());
        let writable = sec(ME, vec![ace(true, EVERYONE, 0x1301BF | 0x40)]);
        let w = others_with(&writable, ME, WRITE);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].0, EVERYONE);
        // GENERIC_WRITE and GENERIC_ALL count as what they map to; one entry per SID.
        let generic = sec(
            ME,
            vec![
                ace(true, USERS, 0x4000_0000),
                ace(true, NEIGHBOUR, 0x1000_0000),
                ace(true, USERS, 0x0001_0000),
            ],
        );
        let w = others_with(&generic, ME, WRITE);
        assert_eq!(
            w.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
            [USERS, NEIGHBOUR]
        );
        assert_eq!(others_with(&generic, ME, READ), [(NEIGHBOUR.into(), READ)]);
    }

    #[test]
    fn a_deny_before_an_allow_takes_from_it_and_one_after_does_not() {
        let denied_first = sec(
            ME,
            vec![ace(false, USERS, WRITE), ace(true, USERS, 0x1301BF)],
        );
        assert!(others_with(&denied_first, ME, WRITE).is_empty());
        assert_eq!(others_with(&denied_first, ME, READ).len(), 1);
        // Denied to Everyone: to every SID.
        let everyone = sec(
            ME,
            vec![ace(false, EVERYONE, WRITE), ace(true, NEIGHBOUR, 0x1301BF)],
        );
        assert!(others_with(&everyone, ME, WRITE).is_empty());
        let denied_after = sec(
            ME,
            vec![ace(true, USERS, 0x1301BF), ace(false, USERS, WRITE)],
        );
        assert_eq!(others_with(&denied_after, ME, WRITE).len(), 1);
    }

    #[test]
    fn entries_that_only_pass_down_or_stand_for_a_creator_allow_nothing_here() {
        // C:\'s: Authenticated Users may add folders there (AD) and Modify what is made inside
        // (inherit-only); CREATOR OWNER full, inherit-only.
        let mut modify_below = ace(true, AUTHENTICATED, 0x1301BF);
        modify_below.inherit_only = true;
        let mut creator = ace(true, "S-1-3-0", 0x1000_0000);
        creator.inherit_only = true;
        let root = sec(
            TRUSTED_INSTALLER,
            vec![
                ace(true, ADMINISTRATORS, 0x1F01FF),
                ace(true, SYSTEM, 0x1F01FF),
                ace(true, USERS, 0x1200A9),
                ace(true, AUTHENTICATED, 0x0004),
                modify_below,
                creator,
                ace(true, "S-1-3-0", 0x1F01FF),
            ],
        );
        assert_eq!(foreign_owner(&root, ME), None, "TrustedInstaller");
        assert!(
            others_with(&root, ME, REPLACE).is_empty(),
            "nobody else can replace what is in C:\\"
        );
        // A folder made in C:\ inherits Modify for Authenticated Users: others can write it.
        let made = sec(
            ME,
            vec![ace(true, ME, 0x1F01FF), ace(true, AUTHENTICATED, 0x1301BF)],
        );
        assert_eq!(others_with(&made, ME, WRITE).len(), 1);
        assert!(others_with(&made, ME, REPLACE).is_empty());
        // Full control for them would let them replace what is in it.
        let full = sec(ME, vec![ace(true, AUTHENTICATED, 0x1F01FF)]);
        assert_eq!(others_with(&full, ME, REPLACE).len(), 1);
    }

    #[test]
    fn a_null_dacl_lets_everyone_in_and_owner_rights_are_the_owners() {
        let null = Security {
            owner: Some(ME.into()),
            dacl: None,
        };
        assert_eq!(others_with(&null, ME, WRITE), [(EVERYONE.into(), WRITE)]);
        let theirs = sec(NEIGHBOUR, vec![ace(true, "S-1-3-4", 0x1301BF)]);
        assert_eq!(others_with(&theirs, ME, WRITE)[0].0, NEIGHBOUR);
        let mine = sec(ME, vec![ace(true, "S-1-3-4", 0x1301BF)]);
        assert!(others_with(&mine, ME, WRITE).is_empty());
    }

    #[test]
    fn the_remedy_is_an_icacls_command_naming_each_sid() {
        let others = vec![(EVERYONE.to_string(), WRITE), (USERS.to_string(), WRITE)];
        assert_eq!(
            icacls_fix(r"C:\x\config.toml", ME, false, &others),
            format!(
                r#"icacls "C:\x\config.toml" /inheritance:r /grant:r "*{ME}:F" /remove "*{EVERYONE}" "*{USERS}""#
            )
        );
        assert_eq!(
            icacls_fix(r"C:\state", ME, true, &[]),
            format!(r#"icacls "C:\state" /inheritance:r /grant:r "*{ME}:(OI)(CI)F""#)
        );
        let named = describe(&others, |s| (s == EVERYONE).then(|| "Everyone".to_string()));
        assert_eq!(named, format!("Everyone ({EVERYONE}), {USERS}"));
    }
}
