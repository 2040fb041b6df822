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
    let state_dir = settings.agent.state_dir.clone();
    match agent::run(settings, creds, RunOptions { once, stop: None }).await {
        Ok(RunOutcome::Clean) if !once => Ok(ExitCode::Ok),
        Ok(RunOutcome::Clean) | Ok(RunOutcome::SomeFailed) => Ok(left_over(&state_dir)),
        Ok(RunOutcome::SignInNeeded) => Err(CommandError::new(ExitCode::SignIn, "sign-in needed: files stay queued; fix the token source or run `outbox login`, then run again")),
        Err(AgentError::Ledger(e)) => Err(CommandError::new(e.exit_code(), e.to_string())),
        Err(AgentError::Setup(s)) => Err(CommandError::new(ExitCode::Failed, s)),
    }
}

/// After `--once`: what the ledger still holds that is not attached, this run's or an earlier
/// one's (a file that failed `Permission denied` yesterday and was only chmod-ed since is not a
/// new version, so this run did not try it). Exit 1 while any is left, as SPEC says.
fn left_over(state_dir: &std::path::Path) -> ExitCode {
    use crate::ledger::{EntryState, Ledger};
    let count = |l: &Ledger, s: EntryState| l.list(Some(s)).map(|v| v.len()).unwrap_or(0);
    let (failed, rejected) = match Ledger::open(state_dir) {
        Ok(l) => {
            let n = (
                count(&l, EntryState::Failed),
                count(&l, EntryState::Rejected),
            );
            let _ = l.close();
            n
        }
        // Another agent took the ledger in the meantime: it will say for itself.
        Err(_) => return ExitCode::Ok,
    };
    if failed + rejected == 0 {
        return ExitCode::Ok;
    }
    let mut parts = Vec::new();
    if failed > 0 {
        parts.push(format!(
            "{failed} failed (fix the cause, then `outbox retry --failed`)"
        ));
    }
    if rejected > 0 {
        parts.push(format!("{rejected} rejected (over 150 MiB: never sent)"));
    }
    eprintln!(
        "outbox: not attached: {}; `outbox status --state failed` says why",
        parts.join(", ")
    );
    ExitCode::Failed
}
