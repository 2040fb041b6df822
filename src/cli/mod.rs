//! The command line: argument parsing (clap) and one file per command. Each command returns
//! `Result<ExitCode, CommandError>`; `main` prints the error and exits with its code.

pub mod check;
pub mod demo;
pub mod entries;
pub mod init;
pub mod items;
pub mod logging;
pub mod login;
pub mod run;
pub mod sandbox;
pub mod send;
pub mod service;
pub mod status;
pub mod verify;

use crate::exit::{CommandError, ExitCode};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "outbox",
    version,
    about = "Attach every file dropped into a folder to an Outlook message or event, exactly once."
)]
pub struct Cli {
    /// Config file (default: $OUTBOX_CONFIG, else the platform config dir).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    pub log_format: logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: attach what is new, then watch until SIGINT/SIGTERM.
    Run {
        /// Scan, attach everything pending, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Attach one file now; prints the attachment id.
    Send(SendArgs),
    /// Show the ledger.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
    },
    /// Put failed entries back in the queue.
    Retry {
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        id: Option<String>,
        #[arg(long)]
        failed: bool,
    },
    /// Stop an upload: delete its session and mark it canceled.
    Cancel { id: String },
    /// Sign in interactively (device code).
    Login,
    /// Forget cached tokens.
    Logout,
    /// Show the signed-in account.
    Whoami,
    /// Validate config, folders, sign-in and every target item.
    Check,
    /// Read done attachments back and compare SHA-256 with the ledger.
    Verify {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// List recent messages or events with their ids.
    Items {
        #[arg(value_parser = ["messages", "events"])]
        kind: String,
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 10)]
        top: u32,
        /// Mailbox: `me` (default), a UPN or a user id.
        #[arg(long, value_name = "U", default_value = "me")]
        user: String,
    },
    /// Write a commented starter config (never overwrites).
    Init,
    /// Run at login: install, uninstall or show the service.
    Service {
        #[arg(value_parser = ["install", "uninstall", "status"])]
        action: String,
        #[arg(long)]
        dry_run: bool,
        /// Which platform's service files (tests check all three on one machine).
        #[arg(long, hide = true, value_parser = ["linux", "macos", "windows"])]
        platform: Option<String>,
    },
    /// A local Microsoft Graph stand-in.
    Sandbox(sandbox::SandboxArgs),
    /// Zero-setup tour against the built-in sandbox.
    Demo {
        /// Drop N sample files, exit 0 once they are attached.
        #[arg(long, value_name = "N")]
        exit_after: Option<usize>,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["message", "event"])))]
pub struct SendArgs {
    pub file: PathBuf,
    #[arg(long, value_name = "ID")]
    pub message: Option<String>,
    #[arg(long, value_name = "ID")]
    pub event: Option<String>,
    /// Mailbox: `me` (default), a UPN or a user id.
    #[arg(long, value_name = "U", default_value = "me")]
    pub user: String,
    /// Attachment name (default: the file's name).
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
}

/// Parse the command line, run the command, return the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                ExitCode::Usage as i32
            } else {
                0
            };
            let _ = e.print();
            return code;
        }
    };
    // The demo talks to people on stdout; agent logs would drown it unless asked for with -v.
    let demo_quiet = matches!(cli.command, Command::Demo { .. }) && cli.verbose == 0;
    logging::init(cli.verbose, cli.quiet || demo_quiet, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("outbox: cannot start the async runtime: {e}");
            return ExitCode::Failed as i32;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code as i32,
        Err(e) => {
            eprintln!("outbox: {}", crate::secret::redact(&e.message));
            e.code as i32
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode, CommandError> {
    match cli.command {
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::Send(args) => send::run(load_settings(cli.config.as_deref(), false)?, args).await,
        Command::Run { once } => run::run(load_settings(cli.config.as_deref(), true)?, once).await,
        Command::Status { json, state } => {
            entries::status(load_settings(cli.config.as_deref(), false)?, json, state).await
        }
        Command::Retry { id, failed: _ } => {
            entries::retry(load_settings(cli.config.as_deref(), false)?, id).await
        }
        Command::Cancel { id } => {
            entries::cancel(load_settings(cli.config.as_deref(), false)?, id).await
        }
        Command::Login => login::login(load_settings(cli.config.as_deref(), false)?).await,
        Command::Logout => login::logout(load_settings(cli.config.as_deref(), false)?).await,
        Command::Whoami => login::whoami(load_settings(cli.config.as_deref(), false)?).await,
        Command::Demo { exit_after } => demo::run(exit_after).await,
        Command::Init => init::run(cli.config.as_deref()),
        Command::Check => check::run(cli.config.as_deref()).await,
        Command::Items {
            kind,
            search,
            top,
            user,
        } => {
            let settings = load_settings(cli.config.as_deref(), false)?;
            items::run(settings, &kind, search.as_deref(), top, &user).await
        }
        Command::Verify { id, all: _ } => {
            verify::run(load_settings(cli.config.as_deref(), false)?, id).await
        }
        Command::Service {
            action,
            dry_run,
            platform,
        } => service::run(cli.config.as_deref(), &action, dry_run, platform.as_deref()),
    }
}

/// Load the config: `--config`, else `$OUTBOX_CONFIG`, else the platform default. A file named
/// explicitly must exist; a missing default file gives the built-in defaults when `required` is
/// false (e.g. `send` with a token from the environment).
pub fn load_settings(
    flag: Option<&std::path::Path>,
    required: bool,
) -> Result<crate::config::Settings, CommandError> {
    let explicit = flag
        .map(std::path::Path::to_path_buf)
        .or_else(|| std::env::var_os("OUTBOX_CONFIG").map(PathBuf::from));
    let path = explicit.clone().unwrap_or_else(crate::config::default_path);
    if explicit.is_none() && !required && !path.exists() {
        return Ok(crate::config::Settings::defaults(path));
    }
    let settings = crate::config::Settings::load(&path)?;
    crate::private::check_config(&settings)?;
    Ok(settings)
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled: a signal that comes while a command is still starting
/// (a service manager stopping the agent during its start-up scan) is kept for the first poll
/// instead of killing the process mid-write. Call it inside the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut t), Ok(mut i)) => {
                    tokio::select! {
                        _ = t.recv() => {},
                        _ = i.recv() => {},
                    }
                }
                (Ok(mut t), Err(_)) => {
                    t.recv().await;
                }
                (Err(_), Ok(mut i)) => {
                    i.recv().await;
                }
                (Err(_), Err(_)) => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
