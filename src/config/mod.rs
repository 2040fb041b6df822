//! Configuration: the TOML file read leniently into raw structs that keep spans (`raw`), then
//! validated once into [`Settings`], whose values cannot be wrong (units parsed, paths expanded,
//! exactly one target per mapping). Every error names the file, the line and the key, and maps to
//! exit code 78. This module never touches the network or the ledger.

mod mail;
mod raw;
pub mod units;

pub use mail::{check_address, check_template, BodyType, Group, MessageTemplate, Target};

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use units::{parse_duration, parse_size};

/// The default config file path: `$OUTBOX_CONFIG`, else the platform config dir.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("OUTBOX_CONFIG") {
        return PathBuf::from(p);
    }
    platform_config_path().unwrap_or_else(|| PathBuf::from("outbox.toml"))
}

/// The platform's config file (`~/.config/outbox/config.toml` on Linux); `None` without a home.
pub fn platform_config_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "outbox").map(|d| d.config_dir().join("config.toml"))
}

/// The platform's state dir for outbox (`~/.local/state/outbox` on Linux), where the ledger and
/// the token cache live unless `agent.state_dir` says otherwise. `None` without a home directory.
pub fn default_state_dir() -> Option<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "outbox")?;
    Some(
        dirs.state_dir()
            .unwrap_or_else(|| dirs.data_local_dir())
            .to_path_buf(),
    )
}

/// A configuration problem: exit 78. Displayed as `FILE:LINE: KEY: MESSAGE`.
#[derive(Debug, thiserror::Error)]
// An empty key (the file as a whole: missing, unreadable) is left out rather than shown as ": :".
#[error(
    "{}{}: {}{message}",
    file.display(),
    line.map(|l| format!(":{l}")).unwrap_or_default(),
    if key.is_empty() { String::new() } else { format!("{key}: ") }
)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line of the offending key, when known.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `agent.chunk_size` or `mapping[2].folder`.
    pub key: String,
    pub message: String,
}

/// Validated settings: everything the rest of the program reads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file these settings came from.
    pub source: PathBuf,
    /// When the file was read (taken just before reading it, by `private::load_config`): an
    /// edit after it is not in these settings.
    pub read_at: std::time::SystemTime,
    pub graph: GraphSettings,
    pub auth: AuthSettings,
    pub agent: AgentSettings,
    pub mappings: Vec<Mapping>,
}

#[derive(Debug, Clone)]
pub struct GraphSettings {
    /// Graph root including the version, without a trailing slash,
    /// e.g. `https://graph.microsoft.com/v1.0`.
    pub base_url: url::Url,
    /// Extra trusted root certificate (PEM).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub method: AuthMethod,
    /// e.g. `https://login.microsoftonline.com`, no trailing slash.
    pub authority: url::Url,
    pub tenant: String,
    pub client_id: Option<String>,
    /// Where `device_code` tokens are cached (`auth.token_store`).
    pub token_store: TokenStoreKind,
}

/// `auth.token_store`: the token cache as a file in the state dir, or in the OS keyring (only in
/// a build with the `keyring` feature; the config refuses it otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenStoreKind {
    #[default]
    File,
    Keyring,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    DeviceCode,
    ClientCredentials {
        secret: ClientCredential,
    },
    /// Read a bearer token from this environment variable at each use.
    TokenEnv {
        var: String,
    },
    /// Run this command (argv) to obtain a token.
    TokenCommand {
        command: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCredential {
    /// Name of the environment variable holding the secret (never the secret itself).
    SecretEnv(String),
    /// PEM file with the certificate and private key.
    Certificate(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub amount: u64,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyLevel {
    Off,
    Failures,
    All,
}

#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub state_dir: PathBuf,
    /// Requests in flight per mailbox, 1..=4 is sensible; Graph allows 4.
    pub concurrency: usize,
    /// Upload-session chunk size in bytes, 1..=4 MiB.
    pub chunk_size: u64,
    pub settle: Duration,
    /// Closed after writing and then unchanged this long = finished (a close alone is not proof:
    /// a file written again after a close waits `settle` plus twice its longest pause).
    pub settle_after_close: Duration,
    /// After a request whose answer was lost, the item is looked at no sooner than this.
    pub look_after: Duration,
    pub max_settle: Duration,
    pub rescan: Duration,
    /// `None` = "off".
    pub mailbox_requests: Option<Budget>,
    /// `None` = "off".
    pub mailbox_upload_bytes: Option<Budget>,
    /// Messages sent per mailbox (Exchange allows 30 a minute); `None` = "off".
    pub mailbox_sends: Option<Budget>,
    pub notify: NotifyLevel,
    pub keep_done: Duration,
    /// How far back the mailbox is searched for a mailing file's key before it is mailed.
    pub remember_sent: Duration,
}

impl Settings {
    /// Whether mapping `name` mails its files (`[mapping.new_message]`).
    pub fn mails(&self, name: &str) -> bool {
        self.mappings
            .iter()
            .any(|m| m.name == name && matches!(m.target, Target::NewMessage(_)))
    }

    /// How long a finished entry (and its message) of a file gone from its folder is kept
    /// (`core::prune::keep_ms`): `keep_done`; where a folder is mailed, never less than
    /// `remember_sent`, or the same bytes dropped again at a pruned path would be searched for
    /// and taken for mailed by the mailbox's copy; never under `look_after` (a listing may lag
    /// behind a recent attachment that long).
    pub fn keep_finished(&self) -> Duration {
        let mails = self
            .mappings
            .iter()
            .any(|m| matches!(m.target, Target::NewMessage(_)));
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(crate::core::prune::keep_ms(
            ms(self.agent.keep_done),
            ms(self.agent.remember_sent),
            mails,
            ms(self.agent.look_after),
        ))
    }
}

/// One `ItemKind` for the whole crate: the core's.
pub use crate::core::model::{ItemKind, OnChange};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Keep,
    Move,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    Skip,
    Attach,
}

#[derive(Debug, Clone)]
pub struct Mapping {
    /// Unique; defaults to the folder's file name.
    pub name: String,
    /// Expanded, absolute.
    pub folder: PathBuf,
    /// Mirrors `target` for code that predates `new_message`: for a `NewMessage` target,
    /// `Message` and an empty id (there is no item until a draft is made).
    pub kind: ItemKind,
    pub item_id: String,
    /// Where the files go: an existing item, or new messages from a template.
    pub target: Target,
    /// `me`, a UPN or a user id.
    pub user: String,
    pub include: globset::GlobSet,
    pub exclude: globset::GlobSet,
    /// The patterns as written, for display.
    pub include_patterns: Vec<String>,
    pub exclude_patterns: Vec<String>,
    pub recursive: bool,
    pub after: After,
    /// Absolute (resolved against `folder`).
    pub sent_dir: PathBuf,
    /// Absolute (resolved against `folder`).
    pub failed_dir: Option<PathBuf>,
    pub follow_symlinks: bool,
    /// Send a regular file with more than one name (a hard link). Off: such a file is refused,
    /// since a neighbour with write access to the folder could link a private file of the
    /// user's into it where the system allows (macOS, FreeBSD; Linux without
    /// `fs.protected_hardlinks`).
    pub allow_hard_links: bool,
    /// Enter subfolders that are another file system (mount points). Off: a scan does not
    /// enter them and the watcher does not watch them, since a neighbour who owns a subfolder
    /// can mount a FUSE file system there whose `stat` and reads never answer.
    pub cross_mounts: bool,
    pub if_exists: IfExists,
    /// A new version of a file already attached: replace its attachment, or add beside it.
    pub on_change: OnChange,
}

impl Settings {
    /// Read and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        raw::load(path)
    }

    /// As [`Settings::load`], but every error in the file (at least one), in order.
    pub fn load_all(path: &Path) -> Result<Settings, Vec<ConfigError>> {
        raw::load_all(path)
    }

    /// Settings with every default and no mappings, for commands that need no config file
    /// (`send` with a token from the environment, `demo`).
    pub fn defaults(source: PathBuf) -> Settings {
        raw::defaults(source)
    }
}
