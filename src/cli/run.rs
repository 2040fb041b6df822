//! `outbox run [--once]`: the agent.

use crate::agent::{self, AgentError, RunOptions, RunOutcome};
use crate::auth::Credentials;
use crate::config::Settings;
use crate::exit::{CommandError, ExitCode};

pub async fn run(settings: Settings, once: bool) -> Result<ExitCode, CommandError> {
    if settings.mappings.is_empty() {
        return Err(CommandError::new(
            ExitCode::Config,
            format!("{}: no [[mapping]] is configured, so there is nothing to watch; add one (see `outbox init`)", settings.source.display()),
        ));
    }
    let creds = Credentials::from_settings_in(&settings);
    match agent::run(settings, creds, RunOptions { once, stop: None }).await {
        Ok(RunOutcome::Clean) => Ok(ExitCode::Ok),
        Ok(RunOutcome::SomeFailed) => {
            eprintln!("outbox: some files could not be attached; see `outbox status --state failed`");
            Ok(ExitCode::Failed)
        }
        Ok(RunOutcome::SignInNeeded) => Err(CommandError::new(ExitCode::SignIn, "sign-in needed: files stay queued; fix the token source or run `outbox login`, then run again")),
        Err(AgentError::Ledger(e)) => Err(CommandError::new(e.exit_code(), e.to_string())),
        Err(AgentError::Setup(s)) => Err(CommandError::new(ExitCode::Failed, s)),
    }
}
