//! The command line: argument parsing (clap) and one file per command. Each command returns
//! `Result<ExitCode, CommandError>`; `main` prints the error and exits with its code.

/// `println!` to stdout that ends the command quietly when the reader has gone (`| head`).
macro_rules! outln {
    () => {
        $crate::cli::out::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// A JSON document on stdout, as [`outln!`] but as it is (no `--config` put into its hints).
macro_rules! jsonln {
    ($($arg:tt)*) => {
        $crate::cli::out::stdout_raw(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` to stdout, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::stdout(format_args!($($arg)*))
    };
}

/// [`outln!`] for text pasted or read by a program (a unit file, a shell command, the manual's
/// source): never wrapped to the terminal.
macro_rules! verbatimln {
    () => {
        $crate::cli::out::verbatim(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::verbatim(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!`, as [`verbatimln!`].
macro_rules! verbatim {
    ($($arg:tt)*) => {
        $crate::cli::out::verbatim(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics (stderr closed too: nothing to do).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::out::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!`, as [`errln!`].
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::cli::out::stderr(format_args!($($arg)*))
    };
}

pub mod check;
pub mod demo;
pub mod entries;
pub mod exit;
pub mod init;
pub mod items;
pub mod logging;
pub mod login;
pub mod mail;
pub mod man;
pub mod out;
pub mod run;
pub mod sandbox;
pub mod send;
pub mod service;
pub mod status;
pub mod verify;

use crate::cli::exit::{CommandError, ExitCode};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "outbox",
    // Usage lines say `outbox` whatever the file is called (a renamed or test copy).
    bin_name = "outbox",
    version,
    // Help wraps to the terminal, but never wider than 100 columns (`COLUMNS` counts only off a
    // terminal): the same text at 100 columns and at 220, readable on a wide screen.
    max_term_width = 100,
    about = "Attach every file dropped into a folder to an Outlook message or event, exactly once.",
    after_help = "Exit status: 0 success, 1 some file could not be attached (or `check` found an \
error), 2 bad usage or the state dir in use, 3 sign-in needed or refused, 4 a message may have \
been sent but could not be confirmed (`mail`, `run --once`: never treat it as not sent), 78 bad \
or missing configuration, 130 interrupted. `outbox man` shows the manual page: the configuration, files and \
examples."
)]
pub struct Cli {
    /// Config file (default: $OUTBOX_CONFIG, else ~/.config/outbox/config.toml on Linux).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// More log output on stderr (-v debug, -vv trace); RUST_LOG wins over it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Log only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log format on stderr: text (coloured only on a terminal, never with NO_COLOR) or json.
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = logging::LogFormat::Text)]
    pub log_format: logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The state names `status --state` accepts (the ledger's states).
fn state_names() -> clap::builder::PossibleValuesParser {
    let mut names: Vec<&'static str> = crate::ledger::EntryState::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    for m in status::MESSAGE_STATE_NAMES {
        if !names.contains(&m) {
            names.push(m);
        }
    }
    clap::builder::PossibleValuesParser::new(names)
}

/// `pause --for`: a duration as the config writes one, more than zero.
fn pause_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::config::units::parse_duration(s)?;
    if d.is_zero() {
        return Err("a pause of no time; leave --for out to pause until `outbox resume`".into());
    }
    Ok(d)
}

/// Stands in for the global `--config` on commands that read no config (`sandbox`, `demo`,
/// `completions`), so
/// their help does not offer it; given anyway, it is refused (exit 2).
#[derive(Debug, Clone, clap::Args)]
pub struct NoConfig {
    #[arg(long, hide = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: attach what is new, then watch until SIGINT/SIGTERM.
    Run {
        /// Scan, wait for files to settle, attach everything pending, then exit: 0 when all is
        /// done, 1 when anything failed or was rejected.
        #[arg(long)]
        once: bool,
    },
    /// Attach one file now; prints the attachment id on stdout (does not touch the ledger).
    Send(SendArgs),
    /// Mail files now as one new message (draft, attach, send); prints the sent message's
    /// internetMessageId on stdout (does not touch the ledger). For scripts that used `mailx -a`.
    #[command(
        override_usage = "outbox mail FILE... --to ADDR... [--cc ADDR...] [--bcc ADDR...] [--subject S]\n                   [--body TEXT | --body-file F] [--user U] [--draft] [--key KEY]"
    )]
    Mail(MailArgs),
    /// Show the ledger: one row per file version, its state, progress and error.
    Status {
        /// One JSON array of entries instead of the table.
        #[arg(long)]
        json: bool,
        /// Only entries (or messages of mailing folders) in this state.
        #[arg(long, value_name = "STATE", value_parser = state_names())]
        state: Option<String>,
    },
    /// Put failed entries back in the queue: one by ID, or all with --failed. A message's ID
    /// retries it: a failed one goes on, an unconfirmed one is sent only if its draft is still a
    /// draft (--failed never takes an unconfirmed message). `--resend ID` mails a done file of a
    /// mailing folder again, on purpose, in a new message.
    #[command(
        override_usage = "outbox retry <ID>\n       outbox retry --failed\n       outbox retry --resend <ID>"
    )]
    Retry {
        /// The entry or message to retry (an ID of `outbox status`).
        #[arg(conflicts_with = "failed")]
        id: Option<String>,
        /// Retry every failed entry.
        #[arg(long)]
        failed: bool,
        /// Mail a done file of a mailing mapping again, on purpose, in a new message (the
        /// mailbox is not searched for it first).
        #[arg(long, requires = "id", conflicts_with = "failed")]
        resend: bool,
    },
    /// Stop an upload: delete its upload session and mark it canceled. A failed or rejected
    /// entry (its file deleted, say) is cleared: canceled, and no longer counted by `run --once`.
    Cancel {
        /// The entry to cancel (the ID column of `outbox status`).
        id: String,
    },
    /// Stop the running agent taking new files (one mapping, or all) without stopping it.
    ///
    /// Uploads under way finish, `status` says so, and files dropped meanwhile wait in their
    /// folders until `outbox resume` (or the end of --for). With no agent running there is
    /// nothing to pause (exit 1).
    Pause {
        /// The mapping to pause (its `name` in the config); every mapping when left out.
        mapping: Option<String>,
        /// Resume by itself after this long ("30m", "2h", "1h30m").
        #[arg(long = "for", value_name = "DURATION", value_parser = pause_duration)]
        for_: Option<std::time::Duration>,
    },
    /// Take new files again (one mapping, or all), and those dropped while paused.
    Resume {
        /// The mapping to resume; every mapping when left out.
        mapping: Option<String>,
    },
    /// Sign in interactively (device code); needs auth.method = "device_code".
    Login,
    /// Forget cached tokens.
    Logout,
    /// Show the signed-in account (or the app, for client credentials).
    Whoami,
    /// Validate config, folders, sign-in and every target item; exit 0 unless there is an error
    /// (warnings alone pass).
    Check {
        /// Print the findings as a JSON array of {"level","what","message"}.
        #[arg(long)]
        json: bool,
    },
    /// Read done attachments back from Graph and compare their SHA-256 with the ledger's.
    #[command(override_usage = "outbox verify <ID> [--json]\n       outbox verify --all [--json]")]
    Verify {
        /// The entry to verify (the ID column of `outbox status`).
        #[arg(conflicts_with = "all")]
        id: Option<String>,
        /// Verify every done entry.
        #[arg(long)]
        all: bool,
        /// One JSON array of {"id","file","result","message"} instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// List recent messages or events with their ids, to pick a mapping's target.
    Items {
        /// Which items: messages (drafts are the usual targets) or events.
        #[arg(value_parser = ["messages", "events"])]
        kind: String,
        /// Only items whose text (messages) or subject (events) contains this.
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// How many items to list (1-1000), newest first.
        #[arg(long, value_name = "N", default_value_t = 10,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        top: u32,
        /// Mailbox: `me` (default), a UPN or a user id.
        #[arg(long, value_name = "U", default_value = "me")]
        user: String,
        /// One JSON array of {"id","kind","subject","date","isDraft","attachments"}.
        #[arg(long)]
        json: bool,
    },
    /// Write a commented starter config (never overwrites).
    Init,
    /// Run at login: install, uninstall or show the service (systemd user unit, LaunchAgent,
    /// Scheduled Task).
    Service {
        /// What to do.
        #[arg(value_parser = ["install", "uninstall", "status"])]
        action: String,
        /// Print the files and commands instead of writing or running them (after the same
        /// checks as the real install, failing as it would).
        #[arg(long)]
        dry_run: bool,
        /// Which platform's service files (tests check all three on one machine).
        #[arg(long, hide = true, value_parser = ["linux", "macos", "windows"])]
        platform: Option<String>,
    },
    /// A local Microsoft Graph stand-in, on loopback.
    Sandbox {
        #[command(flatten)]
        args: sandbox::SandboxArgs,
        #[command(flatten)]
        no_config: NoConfig,
    },
    /// Print the shell completion script: outbox completions bash > ~/.local/share/bash-completion/completions/outbox
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
        #[command(flatten)]
        no_config: NoConfig,
    },
    /// Show the manual page (the configuration, files and examples); off a terminal, print it
    /// (roff): outbox man > ~/.local/share/man/man1/outbox.1
    Man {
        #[command(flatten)]
        no_config: NoConfig,
    },
    /// Zero-setup tour against the built-in sandbox.
    Demo {
        /// Drop N sample files, exit 0 once they are attached.
        #[arg(long, value_name = "N")]
        exit_after: Option<usize>,
        /// Start with an empty folder instead of three sample files.
        #[arg(long, conflicts_with = "exit_after")]
        no_samples: bool,
        #[command(flatten)]
        no_config: NoConfig,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["message", "event"])))]
pub struct SendArgs {
    /// The file to attach.
    pub file: PathBuf,
    /// Attach to this message (a draft): an id from `outbox items messages`.
    #[arg(long, value_name = "ID")]
    pub message: Option<String>,
    /// Attach to this calendar event: an id from `outbox items events`.
    #[arg(long, value_name = "ID")]
    pub event: Option<String>,
    /// Mailbox: `me` (default), a UPN or a user id.
    #[arg(long, value_name = "U", default_value = "me")]
    pub user: String,
    /// Attachment name (default: the file's name).
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// When the item already has an attachment of this name with the same bytes: `skip` (print
    /// its id, send nothing) or `attach` anyway. Default: the `if_exists` of a mapping that
    /// targets the same item, else `skip`.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub if_exists: Option<IfExistsArg>,
}

#[derive(Debug, clap::Args)]
pub struct MailArgs {
    /// The files to attach (each by the size rule: one POST under 3 MiB, an upload session up
    /// to 150 MiB).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Recipient (repeat for several); at least one of --to, --cc, --bcc.
    #[arg(long, value_name = "ADDR")]
    pub to: Vec<String>,
    /// Copy recipient (repeat for several).
    #[arg(long, value_name = "ADDR")]
    pub cc: Vec<String>,
    /// Blind copy recipient (repeat for several).
    #[arg(long, value_name = "ADDR")]
    pub bcc: Vec<String>,
    /// Subject; placeholders as in `[mapping.new_message]` ({name} {stem} {ext} {size} {date}
    /// {count} {names}). Default: the file names.
    #[arg(long, value_name = "S")]
    pub subject: Option<String>,
    /// Body text (placeholders as for --subject). Default: "Attached: {names}."
    #[arg(long, value_name = "TEXT", conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the body from this file (HTML when it ends in .html or .htm).
    #[arg(long, value_name = "F")]
    pub body_file: Option<PathBuf>,
    /// Mailbox to send from: `me` (default), a UPN or a user id.
    #[arg(long, value_name = "U", default_value = "me")]
    pub user: String,
    /// Leave the message as a draft, fully attached; print the draft's id instead.
    #[arg(long)]
    pub draft: bool,
    /// An idempotency key: a re-run with the same key (and mailbox) finds the earlier message
    /// (Sent Items, then Drafts) and reports or resumes it instead of mailing again.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
}

/// `send --if-exists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IfExistsArg {
    Skip,
    Attach,
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
    out::set_config_flag(cli.config.as_deref());
    // The demo talks to people on stdout, failures included; agent logs would only repeat them.
    let demo_quiet = matches!(cli.command, Command::Demo { .. }) && cli.verbose == 0;
    if demo_quiet {
        logging::init_silent(cli.log_format);
    } else {
        logging::init(cli.verbose, cli.quiet, cli.log_format);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            errln!("outbox: cannot start the async runtime: {e}");
            return ExitCode::Failed as i32;
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code as i32,
        Err(e) => {
            errln!("outbox: {}", crate::secret::redact(&e.message));
            e.code as i32
        }
    };
    // Everything a command must finish is done inside `block_on` (the agent checkpoints and
    // closes its ledger there). A blocking thread still in a read that does not return (a
    // file on a hung network or FUSE mount a neighbour made in a drop folder) must not keep
    // the process alive after SIGTERM: dropping the runtime would wait for it for ever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

async fn dispatch(cli: Cli) -> Result<ExitCode, CommandError> {
    let cfg = cli.config.as_deref();
    match cli.command {
        Command::Sandbox { args, no_config } => {
            refuse_config("sandbox", cfg, &no_config)?;
            sandbox::run(args).await
        }
        Command::Send(args) => {
            let token_in_env = std::env::var_os(DEFAULT_TOKEN_ENV).is_some();
            send::run(signs_in(load_settings(cfg, !token_in_env)?)?, args).await
        }
        Command::Mail(args) => {
            let token_in_env = std::env::var_os(DEFAULT_TOKEN_ENV).is_some();
            mail::run(signs_in(load_settings(cfg, !token_in_env)?)?, args).await
        }
        Command::Run { once } => run::run(load_settings(cfg, true)?, once).await,
        Command::Status { json, state } => {
            let (settings, broken) = entries::settings_or_agent(cfg).await?;
            entries::status(settings, json, state, broken).await
        }
        Command::Retry {
            id: Some(id),
            resend: true,
            ..
        } => {
            let (settings, _) = entries::settings_or_agent(cfg).await?;
            entries::resend(settings, id).await
        }
        Command::Retry { id, failed, .. } => {
            if id.is_none() && !failed {
                return Err(CommandError::new(
                    ExitCode::Usage,
                    "retry what? give an entry ID (the ID column of `outbox status --state failed`), \
                     or --failed to retry every failed entry",
                ));
            }
            let (settings, broken) = entries::settings_or_agent(cfg).await?;
            entries::retry(settings, id, broken).await
        }
        Command::Cancel { id } => {
            entries::cancel(entries::settings_or_agent(cfg).await?.0, id).await
        }
        Command::Pause { mapping, for_ } => {
            let for_ms = for_.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let req = crate::agent::control::Request::Pause { mapping, for_ms };
            entries::pause_or_resume(entries::settings_or_agent(cfg).await?.0, req).await
        }
        Command::Resume { mapping } => {
            let req = crate::agent::control::Request::Resume { mapping };
            entries::pause_or_resume(entries::settings_or_agent(cfg).await?.0, req).await
        }
        Command::Login => login::login(load_settings(cfg, true)?).await,
        Command::Logout => login::logout(load_settings(cfg, true)?).await,
        Command::Whoami => login::whoami(load_settings(cfg, true)?).await,
        Command::Demo {
            exit_after,
            no_samples,
            no_config,
        } => {
            refuse_config("demo", cfg, &no_config)?;
            demo::run(exit_after, no_samples).await
        }
        Command::Init => init::run(cfg),
        Command::Check { json } => check::run(cfg, json).await,
        Command::Items {
            kind,
            search,
            top,
            user,
            json,
        } => {
            let settings = signs_in(load_settings(cfg, true)?)?;
            items::run(settings, &kind, search.as_deref(), top, &user, json).await
        }
        Command::Verify { id, all, json } => {
            if id.is_none() && !all {
                return Err(CommandError::new(
                    ExitCode::Usage,
                    "verify what? give an entry ID (the ID column of `outbox status`), or --all \
                     to verify every done entry",
                ));
            }
            verify::run(signs_in(load_settings(cfg, true)?)?, id, json).await
        }
        Command::Man { no_config } => {
            refuse_config("man", cfg, &no_config)?;
            man::run()
        }
        Command::Completions { shell, no_config } => {
            refuse_config("completions", cfg, &no_config)?;
            // Into a buffer first: clap_complete panics on a write error (`| head`).
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "outbox", &mut script);
            let mut out = std::io::stdout().lock();
            let _ = std::io::Write::write_all(&mut out, &script);
            Ok(ExitCode::Ok)
        }
        Command::Service {
            action,
            dry_run,
            platform,
        } => service::run(cfg, &action, dry_run, platform.as_deref()),
    }
}

/// Settings a command signs in with: refused (exit 78) while `auth.client_id` is still the
/// placeholder `init` wrote, instead of a sign-in error whose `outbox login` cannot help.
fn signs_in(settings: crate::config::Settings) -> Result<crate::config::Settings, CommandError> {
    match login::placeholder_client_id(&settings) {
        Some(why) => Err(CommandError::new(ExitCode::Config, why)),
        None => Ok(settings),
    }
}

/// `sandbox` and `demo` read no config: a `--config` given to them is a mistake worth saying.
fn refuse_config(
    command: &str,
    global: Option<&std::path::Path>,
    given: &NoConfig,
) -> Result<(), CommandError> {
    match given.config.as_deref().or(global) {
        Some(p) => Err(CommandError::new(
            ExitCode::Usage,
            format!(
                "`outbox {command}` reads no config file (it was given {}); it is configured by its \
                 own options: see `outbox {command} --help`",
                p.display()
            ),
        )),
        None => Ok(()),
    }
}

/// The config file a command reads: `--config`, else `$OUTBOX_CONFIG`, else the platform
/// default; and whether it was named (by the flag or the variable).
pub fn config_path(flag: Option<&std::path::Path>) -> (PathBuf, bool) {
    match flag
        .map(std::path::Path::to_path_buf)
        .or_else(|| std::env::var_os("OUTBOX_CONFIG").map(PathBuf::from))
    {
        Some(p) => (p, true),
        None => (crate::config::default_path(), false),
    }
}

/// The variable `outbox send` reads a token from when there is no config file at all.
pub const DEFAULT_TOKEN_ENV: &str = "OUTBOX_ACCESS_TOKEN";

/// Load the config: `--config`, else `$OUTBOX_CONFIG`, else the platform default. A file named
/// explicitly must exist. A missing default file is exit 78 saying to run `outbox init`, unless
/// `required` is false: only `send` with a token in `$OUTBOX_ACCESS_TOKEN`, where the user chose
/// the auth method by setting the variable, runs on the built-in defaults (and writes nothing).
pub fn load_settings(
    flag: Option<&std::path::Path>,
    required: bool,
) -> Result<crate::config::Settings, CommandError> {
    let (path, explicit) = config_path(flag);
    if !explicit && !required && !path.exists() {
        return Ok(crate::config::Settings::defaults(path));
    }
    crate::private::load_config(&path).map_err(CommandError::config_in_order)
}

pub use crate::agent::shutdown_signal;
