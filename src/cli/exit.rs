//! Exit codes of SPEC, and the error type commands return so `main` can map them.

use std::fmt;

/// Process exit codes (SPEC: Binary and global options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    /// The work failed: some file could not be attached.
    Failed = 1,
    /// Bad usage, or the state dir is in use by another agent.
    Usage = 2,
    /// Sign-in needed or refused.
    SignIn = 3,
    /// A message may have been sent but could not be confirmed (`mail`, `run --once`): never
    /// "not sent", so a script must not mail it again.
    MaybeSent = 4,
    /// Bad configuration (EX_CONFIG).
    Config = 78,
    /// Stopped by SIGINT/SIGTERM before the work was done (128 + SIGINT, as shells report it).
    Interrupted = 130,
}

/// An error a command ends with: the message the user reads, and the exit code.
#[derive(Debug)]
pub struct CommandError {
    pub code: ExitCode,
    pub message: String,
}

impl CommandError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        CommandError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CommandError {}

impl CommandError {
    /// Every error of a config file, one per line (exit 78),
    /// in the order of the file; errors about the file as a whole (no line) last.
    pub fn config(mut errors: Vec<crate::config::ConfigError>) -> Self {
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        Self::config_in_order(errors)
    }

    /// As [`CommandError::config`], the errors in the order given (`private::load_config`'s:
    /// the file's permissions first).
    pub fn config_in_order(errors: Vec<crate::config::ConfigError>) -> Self {
        let message = match errors.as_slice() {
            [one] => format!("configuration error: {one}"),
            many => {
                let mut m = format!("{} configuration errors:", many.len());
                for e in many {
                    m.push_str(&format!("\n  {e}"));
                }
                m
            }
        };
        CommandError::new(ExitCode::Config, message)
    }
}

impl From<crate::config::ConfigError> for CommandError {
    fn from(e: crate::config::ConfigError) -> Self {
        CommandError::new(ExitCode::Config, format!("configuration error: {e}"))
    }
}

/// SPEC's exit code for a ledger error: 2 for a state dir in use or an unknown id, else 1.
impl From<crate::ledger::LedgerError> for CommandError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        let code = if e.is_usage() {
            ExitCode::Usage
        } else {
            ExitCode::Failed
        };
        CommandError::new(code, e.to_string())
    }
}
