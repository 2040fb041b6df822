//! `outbox init`: write a commented starter config at the config path (`--config`,
//! `$OUTBOX_CONFIG`, else the platform default), never over an existing file. The text is
//! `config.example.toml` with this user's real paths filled in, so the comments stay in one place.

use crate::cli::exit::{CommandError, ExitCode};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The shipped example; `init` fills in real paths.
const TEMPLATE: &str = include_str!("../../config.example.toml");

/// Lines of the template `starter_config` replaces (unit-tested to stay in the template).
const FOLDER_LINE: &str = "folder = \"~/Outbox/reports\"";
const STATE_LINE: &str = "# state_dir = \"~/.local/state/outbox\"";
const CERT_LINE: &str = "# certificate_path = \"~/.config/outbox/app.pem\"";

fn toml_str(p: &Path) -> String {
    toml::Value::String(p.to_string_lossy().into_owned()).to_string()
}

/// The starter config for a user whose home is `home`, state dir `state` and config dir
/// `config_dir`.
pub fn starter_config(home: &Path, state: &Path, config_dir: &Path) -> String {
    let header = "# Written by `outbox init`. Next steps:\n\
                  #   1. set auth.client_id (or another auth.method) below;\n\
                  #   2. create the folder of the [[mapping]] and pick its target with\n\
                  #      `outbox items messages` (or `events`);\n\
                  #   3. run `outbox check`, then `outbox service install`.\n#\n";
    let body = TEMPLATE
        .replace(
            FOLDER_LINE,
            &format!(
                "folder = {}",
                toml_str(&home.join("Outbox").join("reports"))
            ),
        )
        .replace(STATE_LINE, &format!("state_dir = {}", toml_str(state)))
        .replace(
            CERT_LINE,
            &format!(
                "# certificate_path = {}",
                toml_str(&config_dir.join("app.pem"))
            ),
        );
    format!("{header}{body}")
}

/// The state dir a new config gets. The platform's config file gets the platform's state dir; any
/// other config its own dir under it, named after the file and its path (`work-1a2b3c4d`), so two
/// configs never share a ledger (a second agent on one state dir exits 2).
pub fn state_dir_for(config: &Path, default_state: PathBuf) -> PathBuf {
    use sha2::{Digest, Sha256};
    let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    let platform = crate::config::platform_config_path();
    if platform.is_some_and(|p| p == config) {
        return default_state;
    }
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let digest = hex::encode(Sha256::digest(config.to_string_lossy().as_bytes()));
    default_state.join(format!("{stem}-{}", &digest[..8]))
}

pub fn run(flag: Option<&Path>) -> Result<ExitCode, CommandError> {
    let path = flag
        .map(Path::to_path_buf)
        .unwrap_or_else(crate::config::default_path);
    let home = directories::BaseDirs::new()
        .map(|d| d.home_dir().to_path_buf())
        .ok_or_else(|| {
            CommandError::new(
                ExitCode::Failed,
                "cannot find your home directory (is $HOME set?)",
            )
        })?;
    let state = state_dir_for(
        &path,
        crate::config::default_state_dir().unwrap_or_else(|| home.join(".local/state/outbox")),
    );
    let config_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let text = starter_config(&home, &state, &config_dir);
    if !config_dir.as_os_str().is_empty() {
        std::fs::create_dir_all(&config_dir).map_err(|e| {
            CommandError::new(
                ExitCode::Failed,
                format!("cannot create {}: {e}", config_dir.display()),
            )
        })?;
    }
    // create_new: an existing file is never touched, even if it appears in a race. 0600: a
    // config others can write is refused (`private::check_config_file`), whatever the umask.
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = match opts.open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CommandError::new(
                ExitCode::Usage,
                format!(
                    "{} already exists; `outbox init` never overwrites a config. Edit it, or \
                     move it aside and run `outbox init` again",
                    path.display()
                ),
            ))
        }
        Err(e) => {
            return Err(CommandError::new(
                ExitCode::Failed,
                format!("cannot create {}: {e}", path.display()),
            ))
        }
    };
    // The header's next steps name this config when `--config` named it.
    let text = super::out::hint(&text);
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| {
            CommandError::new(
                ExitCode::Failed,
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
    outln!("wrote {}", path.display());
    outln!("next: edit it (auth.client_id, the [[mapping]] folder and target), then run `outbox check`");
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_still_has_the_lines_init_fills_in() {
        for line in [FOLDER_LINE, STATE_LINE, CERT_LINE] {
            assert!(TEMPLATE.contains(line), "config.example.toml lost {line:?}");
        }
    }

    #[test]
    fn a_config_elsewhere_gets_a_state_dir_of_its_own() {
        let base = PathBuf::from("/home/u/.local/state/outbox");
        let a = state_dir_for(Path::new("/srv/a/config.toml"), base.clone());
        let b = state_dir_for(Path::new("/srv/b/config.toml"), base.clone());
        assert_ne!(a, b);
        assert!(a.starts_with(&base) && a != base, "{a:?}");
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("config-"));
        assert_eq!(a, state_dir_for(Path::new("/srv/a/config.toml"), base));
    }

    #[test]
    fn starter_config_loads_with_real_paths() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home dir");
        let state = dir.path().join("state");
        let text = starter_config(&home, &state, dir.path());
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(!line.contains("~/"), "a path left unexpanded: {line}");
        }
        let p = dir.path().join("config.toml");
        std::fs::write(&p, &text).unwrap();
        let s = crate::config::Settings::load(&p).unwrap();
        assert_eq!(s.agent.state_dir, state);
        assert_eq!(s.mappings[0].folder, home.join("Outbox").join("reports"));
    }
}
