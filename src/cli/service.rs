//! `outbox service install|uninstall|status [--dry-run]`: carry out (or, with `--dry-run`,
//! print) the plan `crate::service` makes for this platform. The hidden `--platform` flag
//! picks another platform's plan so all three can be checked anywhere.

use crate::cli::exit::{CommandError, ExitCode};
use crate::service::{self, Context, Platform, Step};
use std::path::{Path, PathBuf};

fn fail(msg: impl Into<String>) -> CommandError {
    CommandError::new(ExitCode::Failed, msg)
}

fn absolute(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    std::fs::canonicalize(&abs).map_or(abs, without_verbatim)
}

/// A Windows path as a person and the Task Scheduler write it: `canonicalize` gives the
/// verbatim form (`\\?\C:\…`, `\\?\UNC\server\share\…`), which a task's command line and
/// `--config` would carry as is. Plain when that form says the same (under 260 characters, no
/// `.` or `..` component); anything else is left as it was.
fn without_verbatim(p: PathBuf) -> PathBuf {
    let Some(text) = p.to_str() else {
        return p;
    };
    let plain = if let Some(rest) = text.strip_prefix(r"\\?\UNC\") {
        format!(r"\\{rest}")
    } else if let Some(rest) = text.strip_prefix(r"\\?\") {
        let b = rest.as_bytes();
        if b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\' {
            rest.to_string()
        } else {
            return p;
        }
    } else {
        return p;
    };
    let odd = plain
        .split('\\')
        .skip(1)
        .any(|c| c == "." || c == ".." || c.ends_with('.') || c.ends_with(' '));
    if plain.len() >= 260 || odd {
        return p;
    }
    PathBuf::from(plain)
}

/// The effective user id, read from the owner of a file this process creates (no `unsafe`).
#[cfg(unix)]
fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    tempfile::tempfile()
        .and_then(|f| f.metadata())
        .ok()
        .map(|m| m.uid())
}

#[cfg(not(unix))]
fn current_uid() -> Option<u32> {
    None
}

fn context(config: PathBuf) -> Result<Context, CommandError> {
    let binary = std::env::current_exe()
        .map(|p| absolute(&p))
        .map_err(|e| fail(format!("cannot find the outbox binary's path: {e}")))?;
    let home = directories::BaseDirs::new()
        .map(|d| d.home_dir().to_path_buf())
        .ok_or_else(|| fail("cannot find your home directory (is $HOME set?)"))?;
    let xdg_config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(".config"));
    let data_dir = directories::ProjectDirs::from("", "", "outbox")
        .map(|d| d.data_local_dir().to_path_buf())
        .unwrap_or_else(|| home.join(".local").join("share").join("outbox"));
    let name = std::env::var("USERNAME")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "user".into());
    let user = match std::env::var("USERDOMAIN") {
        Ok(d) if cfg!(windows) && !d.is_empty() => format!("{d}\\{name}"),
        _ => name,
    };
    Ok(Context {
        binary,
        config: absolute(&config),
        home,
        xdg_config,
        data_dir,
        user,
        uid: current_uid(),
    })
}

fn show(argv: &[String]) -> String {
    argv.iter()
        .map(|a| service::shell_word(a))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(
    flag: Option<&Path>,
    action: &str,
    dry_run: bool,
    platform: Option<&str>,
) -> Result<ExitCode, CommandError> {
    // A dry run makes every check the real one makes and fails as it would: only the writes
    // and commands are left out. With `--platform` (hidden: tests plan each platform's files
    // on one machine) it asks nothing of this machine.
    let ask_machine = !dry_run || (action == "install" && platform.is_none());
    let platform = match platform {
        Some(p) => Platform::parse(p)
            .ok_or_else(|| CommandError::new(ExitCode::Usage, format!("unknown platform {p}")))?,
        None => Platform::current(),
    };
    let config = flag
        .map(Path::to_path_buf)
        .unwrap_or_else(crate::config::default_path);
    let ctx = context(config)?;
    if action == "install" {
        // A service that exits 78 at every login helps no one: refuse a config that does not
        // load, or that the agent would refuse for its permissions.
        if let Err(errors) = crate::private::load_config(&ctx.config) {
            return Err(CommandError::config_in_order(errors));
        }
        if service::is_build_dir(&ctx.binary) {
            errln!(
                "outbox: note: {} is in a cargo build directory; the service breaks on the next \
                 `cargo clean`. Install the binary first (scripts/install or `cargo install --path .`)",
                ctx.binary.display()
            );
        }
    }
    let steps = match action {
        "install" => service::install(platform, &ctx),
        "uninstall" => service::uninstall(platform, &ctx),
        "status" => service::status(platform, &ctx),
        other => {
            return Err(CommandError::new(
                ExitCode::Usage,
                format!("unknown action {other}: use install, uninstall or status"),
            ))
        }
    };
    let file = service::service_file(platform, &ctx);
    // Linux: ask the user's systemd first, so nothing is written that cannot be enabled.
    let no_systemd = match platform {
        Platform::Linux if ask_machine => user_systemd_missing(),
        _ => None,
    };
    // A dry run shows what it would write and run even where the install cannot be made (the
    // unit, for another supervisor), then fails as the install would, saying why.
    let cannot = |dry_run: bool| {
        if dry_run {
            print_plan(action, &steps, true);
        }
    };
    if let Some(why) = &no_systemd {
        if action == "install" {
            cannot(dry_run);
        }
        return without_user_systemd(action, &file, why);
    }
    // Any platform: the service manager's program must be there before anything is written.
    if ask_machine && action == "install" {
        for s in &steps {
            if let Step::Run { argv, .. } = s {
                if let Some(prog) = argv.first().filter(|p| !on_path(p)) {
                    cannot(dry_run);
                    return Err(fail(format!(
                        "{prog} is not found on PATH, and installing the service needs it: nothing was written. Without it, run `outbox run` under the supervisor you have"
                    )));
                }
            }
        }
    }
    if dry_run {
        print_plan(action, &steps, false);
        return Ok(ExitCode::Ok);
    }
    if action == "status" {
        outln!(
            "service file: {} ({})",
            file.display(),
            if file.exists() {
                "installed"
            } else {
                "not installed"
            }
        );
    }
    for s in &steps {
        execute(s)?;
    }
    match (action, platform) {
        ("install", Platform::Linux) => {
            outln!("installed: outbox starts at login; logs: journalctl --user -u outbox -f")
        }
        ("install", Platform::MacOs) => outln!(
            "installed: outbox starts at login; logs: {}",
            service::macos_log(&ctx).display()
        ),
        ("install", Platform::Windows) => outln!("installed: outbox starts at logon"),
        ("uninstall", _) => outln!("uninstalled: outbox no longer starts at login"),
        _ => {}
    }
    Ok(ExitCode::Ok)
}

/// A dry run's plan on stdout: each file written, whole, and each command run. `cannot`: this
/// machine cannot carry it out (said on stderr after it).
fn print_plan(action: &str, steps: &[Step], cannot: bool) {
    if cannot {
        verbatimln!(
            "# outbox service {action}, dry run: what it would write and run; nothing is written \
             or run, and it cannot be installed here (why: below, on stderr)."
        );
    } else {
        verbatimln!("# outbox service {action}, dry run: nothing is written or run.");
    }
    for s in steps {
        match s {
            Step::Write {
                path,
                contents,
                utf16,
            } => {
                verbatimln!(
                    "# write {}{}:",
                    path.display(),
                    if *utf16 { " (UTF-16LE with BOM)" } else { "" }
                );
                verbatim!("{contents}");
                if !contents.ends_with('\n') {
                    verbatimln!();
                }
                verbatimln!("# end of {}", path.display());
            }
            Step::Remove(p) => {
                verbatimln!("$ rm -f {}", service::shell_word(&p.to_string_lossy()))
            }
            Step::Run { argv, .. } => verbatimln!("$ {}", show(argv)),
        }
    }
}

/// What to do where `systemctl --user` cannot reach a user manager: a container, an ssh or cron
/// session of a user without lingering, a system without systemd.
const NO_USER_SYSTEMD: &str = "Without a login session the user manager runs only with lingering: \
`loginctl enable-linger $USER` (an admin: `sudo loginctl enable-linger NAME`), then `outbox service \
install` again. In a container or without systemd, run `outbox run` under the supervisor you have \
instead (the container's entrypoint, supervisord, runit, s6); it exits 78 on a bad config, so do not \
restart it on that code";

/// Whether `prog` is an executable file in a directory of `$PATH` (or a path to one).
fn on_path(prog: &str) -> bool {
    let is_exe = |p: &Path| p.is_file() || (cfg!(windows) && p.with_extension("exe").is_file());
    if prog.contains(std::path::MAIN_SEPARATOR) {
        return is_exe(Path::new(prog));
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| is_exe(&d.join(prog))))
}

/// Why `systemctl --user` cannot reach a user manager here, if it cannot: systemctl missing, or
/// no user bus (`show-environment` asks the manager and changes nothing).
fn user_systemd_missing() -> Option<String> {
    match std::process::Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
    {
        Err(e) => Some(format!("cannot run systemctl: {e}")),
        Ok(o) if o.status.success() => None,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
            Some(if err.is_empty() {
                format!("`systemctl --user show-environment` failed ({})", o.status)
            } else {
                crate::outside::printable(&err).to_string()
            })
        }
    }
}

/// `service ACTION` where no user systemd runs: install writes nothing and says what to do;
/// status says a unit file left there is not running; uninstall removes it (nothing runs it).
fn without_user_systemd(action: &str, file: &Path, why: &str) -> Result<ExitCode, CommandError> {
    let shown = file.display();
    match action {
        "install" => Err(fail(format!(
            "there is no user systemd instance to talk to ({why}): nothing was written. {NO_USER_SYSTEMD}"
        ))),
        "status" => {
            if file.exists() {
                outln!("service file: {shown} (present, but not running: there is no user systemd instance to run it)");
            } else {
                outln!("service file: {shown} (not installed)");
            }
            errln!("outbox: no user systemd instance here ({why})");
            Ok(ExitCode::Failed)
        }
        _ => {
            match std::fs::remove_file(file) {
                Ok(()) => outln!("removed {shown}"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    outln!("not installed: there is no {shown}")
                }
                Err(e) => return Err(fail(format!("cannot remove {shown}: {e}"))),
            }
            outln!("uninstalled: no user systemd instance runs here ({why}), so nothing was running under it");
            Ok(ExitCode::Ok)
        }
    }
}

/// systemctl's words when no user bus exists ("Failed to connect to bus: No medium found",
/// "Failed to connect to user scope bus via local transport", `$DBUS_SESSION_BUS_ADDRESS and
/// $XDG_RUNTIME_DIR not defined`).
fn no_user_bus(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("connect to bus")
        || s.contains("user scope bus")
        || s.contains("xdg_runtime_dir")
        || s.contains("dbus_session_bus_address")
}

fn execute(step: &Step) -> Result<(), CommandError> {
    match step {
        Step::Write {
            path,
            contents,
            utf16,
        } => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
            }
            let bytes = if *utf16 {
                service::utf16_bytes(contents)
            } else {
                contents.as_bytes().to_vec()
            };
            std::fs::write(path, bytes)
                .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
            outln!("wrote {}", path.display());
        }
        Step::Remove(path) => match std::fs::remove_file(path) {
            Ok(()) => outln!("removed {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(format!("cannot remove {}: {e}", path.display()))),
        },
        Step::Run { argv, may_fail } => {
            let Some((prog, args)) = argv.split_first() else {
                return Ok(());
            };
            verbatimln!("$ {}", show(argv));
            let out = std::process::Command::new(prog)
                .args(args)
                .stderr(std::process::Stdio::piped())
                .output()
                .map_err(|e| {
                    let mut m = format!("cannot run {prog}: {e}");
                    if prog == "systemctl" {
                        m.push_str(&format!("; {NO_USER_SYSTEMD}"));
                    }
                    fail(m)
                })?;
            let err = String::from_utf8_lossy(&out.stderr);
            err!("{err}");
            if !out.status.success() && !may_fail {
                let mut m = format!("`{}` failed ({})", show(argv), out.status);
                if prog == "systemctl" && no_user_bus(&err) {
                    m.push_str(&format!(
                        ": there is no user systemd instance to talk to ({}). {NO_USER_SYSTEMD}",
                        err.trim()
                    ));
                }
                return Err(fail(m));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verbatim_windows_path_is_written_plain_when_it_means_the_same() {
        let plain = |s: &str| without_verbatim(PathBuf::from(s)).display().to_string();
        assert_eq!(
            plain(r"\\?\C:\Users\me\outbox.exe"),
            r"C:\Users\me\outbox.exe"
        );
        assert_eq!(plain(r"\\?\UNC\srv\share\o.toml"), r"\\srv\share\o.toml");
        // Kept verbatim: what the plain form would read otherwise, or cannot hold.
        assert_eq!(plain(r"\\?\C:\a\dot.\o.exe"), r"\\?\C:\a\dot.\o.exe");
        assert_eq!(plain(r"\\?\Volume{x}\o.exe"), r"\\?\Volume{x}\o.exe");
        let long = format!(r"\\?\C:\{}", "a".repeat(300));
        assert_eq!(plain(&long), long);
        assert_eq!(plain("/usr/bin/outbox"), "/usr/bin/outbox");
    }
}
