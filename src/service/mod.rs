//! Running at login: the files and commands that install, remove or inspect outbox as a per-user
//! service on each platform (a systemd user unit, a macOS LaunchAgent, a Windows Scheduled Task).
//!
//! This module only *plans*: it renders the templates in `packaging/` with absolute paths and
//! lists the steps. `cli::service` prints a plan (`--dry-run`) or carries it out, so every
//! platform's plan can be checked on any machine.

use std::path::{Path, PathBuf};

const SYSTEMD_TEMPLATE: &str = include_str!("../../packaging/systemd/outbox.service");
const PLIST_TEMPLATE: &str = include_str!("../../packaging/macos/com.outbox.agent.plist");
const TASK_TEMPLATE: &str = include_str!("../../packaging/windows/outbox-task.xml");

/// systemd unit name.
pub const UNIT: &str = "outbox.service";
/// launchd label.
pub const LABEL: &str = "com.outbox.agent";
/// Scheduled Task name.
pub const TASK: &str = "outbox";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Linux,
    MacOs,
    Windows,
}

impl Platform {
    /// The platform this binary runs on (other unixes are treated as Linux: systemd or nothing).
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::MacOs
        } else if cfg!(windows) {
            Platform::Windows
        } else {
            Platform::Linux
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        match s {
            "linux" => Some(Platform::Linux),
            "macos" => Some(Platform::MacOs),
            "windows" => Some(Platform::Windows),
            _ => None,
        }
    }
}

/// Where things are for this user.
#[derive(Debug, Clone)]
pub struct Context {
    /// Absolute path of the outbox binary the service runs.
    pub binary: PathBuf,
    /// Absolute path of the config file.
    pub config: PathBuf,
    pub home: PathBuf,
    /// `$XDG_CONFIG_HOME` or `~/.config` (Linux).
    pub xdg_config: PathBuf,
    /// Where the Windows task XML is kept.
    pub data_dir: PathBuf,
    /// Login name (Windows task principal; `DOMAIN\user` where known).
    pub user: String,
    /// Numeric user id (macOS `gui/UID` domain), when known.
    pub uid: Option<u32>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write a file (creating its directory). `utf16`: UTF-16LE with a BOM, as schtasks wants.
    Write {
        path: PathBuf,
        contents: String,
        utf16: bool,
    },
    /// Remove a file if present.
    Remove(PathBuf),
    /// Run a program; `may_fail`: a failure is expected in some states (e.g. not loaded yet).
    Run { argv: Vec<String>, may_fail: bool },
}

fn run(argv: &[&str]) -> Step {
    Step::Run {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        may_fail: false,
    }
}

fn run_may_fail(argv: &[&str]) -> Step {
    Step::Run {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        may_fail: true,
    }
}

/// The service definition file of `platform`.
pub fn service_file(platform: Platform, ctx: &Context) -> PathBuf {
    match platform {
        Platform::Linux => ctx.xdg_config.join("systemd").join("user").join(UNIT),
        Platform::MacOs => ctx
            .home
            .join("Library")
            .join("LaunchAgents")
            .join(format!("{LABEL}.plist")),
        Platform::Windows => ctx.data_dir.join("outbox-task.xml"),
    }
}

/// Where the macOS agent's stderr goes (launchd has no journal).
pub fn macos_log(ctx: &Context) -> PathBuf {
    ctx.home.join("Library").join("Logs").join("outbox.log")
}

fn gui_domain(ctx: &Context) -> String {
    match ctx.uid {
        Some(u) => format!("gui/{u}"),
        None => "gui/$(id -u)".into(),
    }
}

/// The rendered service definition.
pub fn render(platform: Platform, ctx: &Context) -> String {
    let bin = ctx.binary.to_string_lossy();
    let cfg = ctx.config.to_string_lossy();
    match platform {
        Platform::Linux => {
            let exec = [bin.as_ref(), "--config", cfg.as_ref(), "run"]
                .iter()
                .map(|a| systemd_quote(a))
                .collect::<Vec<_>>()
                .join(" ");
            SYSTEMD_TEMPLATE.replace("{{EXEC}}", &exec)
        }
        Platform::MacOs => PLIST_TEMPLATE
            .replace("{{BINARY}}", &xml_escape(&bin))
            .replace("{{CONFIG}}", &xml_escape(&cfg))
            .replace("{{LOG}}", &xml_escape(&macos_log(ctx).to_string_lossy())),
        Platform::Windows => TASK_TEMPLATE
            .replace("{{BINARY}}", &xml_escape(&bin))
            .replace("{{ARGS}}", &xml_escape(&format!("--config \"{cfg}\" run")))
            .replace("{{USER}}", &xml_escape(&ctx.user)),
    }
}

/// Install: write the definition, register it, start it now.
pub fn install(platform: Platform, ctx: &Context) -> Vec<Step> {
    let file = service_file(platform, ctx);
    let f = file.to_string_lossy().into_owned();
    let write = Step::Write {
        path: file.clone(),
        contents: render(platform, ctx),
        utf16: platform == Platform::Windows,
    };
    match platform {
        Platform::Linux => vec![
            write,
            run(&["systemctl", "--user", "daemon-reload"]),
            run(&["systemctl", "--user", "enable", "--now", UNIT]),
            // A re-install changes the unit; a running agent picks it up only on restart.
            run(&["systemctl", "--user", "try-restart", UNIT]),
        ],
        Platform::MacOs => {
            let domain = gui_domain(ctx);
            vec![
                write,
                // Loaded from an earlier install: unload first, or bootstrap fails.
                run_may_fail(&["launchctl", "bootout", &format!("{domain}/{LABEL}")]),
                run(&["launchctl", "bootstrap", &domain, &f]),
                run(&["launchctl", "enable", &format!("{domain}/{LABEL}")]),
            ]
        }
        Platform::Windows => vec![
            write,
            run(&["schtasks", "/Create", "/TN", TASK, "/XML", &f, "/F"]),
            run(&["schtasks", "/Run", "/TN", TASK]),
        ],
    }
}

/// Uninstall: stop it, unregister it, remove the definition.
pub fn uninstall(platform: Platform, ctx: &Context) -> Vec<Step> {
    let file = service_file(platform, ctx);
    match platform {
        Platform::Linux => vec![
            run_may_fail(&["systemctl", "--user", "disable", "--now", UNIT]),
            Step::Remove(file),
            run(&["systemctl", "--user", "daemon-reload"]),
        ],
        Platform::MacOs => vec![
            run_may_fail(&[
                "launchctl",
                "bootout",
                &format!("{}/{LABEL}", gui_domain(ctx)),
            ]),
            Step::Remove(file),
        ],
        Platform::Windows => vec![
            run_may_fail(&["schtasks", "/End", "/TN", TASK]),
            run_may_fail(&["schtasks", "/Delete", "/TN", TASK, "/F"]),
            Step::Remove(file),
        ],
    }
}

/// Status: ask the service manager.
pub fn status(platform: Platform, ctx: &Context) -> Vec<Step> {
    match platform {
        Platform::Linux => vec![run(&["systemctl", "--user", "status", UNIT, "--no-pager"])],
        Platform::MacOs => vec![run(&[
            "launchctl",
            "print",
            &format!("{}/{LABEL}", gui_domain(ctx)),
        ])],
        Platform::Windows => vec![run(&[
            "schtasks", "/Query", "/TN", TASK, "/V", "/FO", "LIST",
        ])],
    }
}

/// One `ExecStart=` word: double-quoted, with systemd's specifier (`%`) and variable (`$`)
/// expansion escaped, so any path survives.
pub fn systemd_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// UTF-16LE with a byte-order mark: what `schtasks /XML` reads reliably.
pub fn utf16_bytes(s: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    for u in s.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

/// A path as a shell word, for showing commands.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// True when `binary` sits in a cargo build directory: a service pointing there breaks on the
/// next `cargo clean`.
pub fn is_build_dir(binary: &Path) -> bool {
    let s = binary.to_string_lossy().replace('\\', "/");
    s.contains("/target/debug/") || s.contains("/target/release/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            binary: PathBuf::from("/opt/out box/bin/outbox"),
            config: PathBuf::from("/home/a/.config/outbox/100% \"mine\".toml"),
            home: PathBuf::from("/home/a"),
            xdg_config: PathBuf::from("/home/a/.config"),
            data_dir: PathBuf::from("/home/a/.local/share/outbox"),
            user: "a&b".into(),
            uid: Some(501),
        }
    }

    #[test]
    fn systemd_exec_start_quotes_and_escapes() {
        let u = render(Platform::Linux, &ctx());
        assert!(u.contains(
            "ExecStart=\"/opt/out box/bin/outbox\" \"--config\" \"/home/a/.config/outbox/100%% \\\"mine\\\".toml\" \"run\""
        ), "{u}");
        assert!(u.contains("RestartPreventExitStatus=2 78"));
        assert!(!u.contains("{{"));
    }

    #[test]
    fn xml_templates_are_filled_and_escaped() {
        for p in [Platform::MacOs, Platform::Windows] {
            let x = render(p, &ctx());
            assert!(!x.contains("{{"), "{x}");
            assert!(x.contains("/opt/out box/bin/outbox"));
            assert!(x.contains("&quot;mine&quot;"), "{x}");
        }
        assert!(render(Platform::Windows, &ctx()).contains("<UserId>a&amp;b</UserId>"));
    }

    #[test]
    fn debian_unit_is_the_template_with_the_packaged_binary() {
        let deb = include_str!("../../packaging/debian/outbox.service");
        assert_eq!(
            deb,
            SYSTEMD_TEMPLATE.replace("{{EXEC}}", "/usr/bin/outbox run"),
            "regenerate it: sed 's|{{{{EXEC}}}}|/usr/bin/outbox run|' packaging/systemd/outbox.service > packaging/debian/outbox.service"
        );
    }

    #[test]
    fn plans_name_the_right_commands() {
        let c = ctx();
        let argv = |steps: Vec<Step>| -> Vec<String> {
            steps
                .into_iter()
                .filter_map(|s| match s {
                    Step::Run { argv, .. } => Some(argv.join(" ")),
                    _ => None,
                })
                .collect()
        };
        assert!(argv(install(Platform::Linux, &c))
            .contains(&"systemctl --user enable --now outbox.service".to_string()));
        // A macOS plan made on Windows (only here, in a test) joins its path with `\`.
        assert!(argv(install(Platform::MacOs, &c)).iter().any(|a| {
            a.replace('\\', "/")
                == "launchctl bootstrap gui/501 /home/a/Library/LaunchAgents/com.outbox.agent.plist"
        }));
        assert!(argv(uninstall(Platform::Windows, &c))
            .contains(&"schtasks /Delete /TN outbox /F".to_string()));
        assert_eq!(utf16_bytes("a"), vec![0xFF, 0xFE, b'a', 0]);
    }
}
