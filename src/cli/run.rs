//! `outbox run [--once]`: the agent.

use crate::agent::{self, AgentError, RunOptions, RunOutcome};
use crate::auth::Credentials;
use crate::cli::exit::{CommandError, ExitCode};
use crate::config::{AuthMethod, Settings};

pub async fn run(settings: Settings, once: bool) -> Result<ExitCode, CommandError> {
    if settings.mappings.is_empty() {
        return Err(CommandError::new(
            ExitCode::Config,
            format!("{}: no [[mapping]] is configured, so there is nothing to watch; add one: a [[mapping]] table with a folder and its target (`outbox man` shows its keys)", settings.source.display()),
        ));
    }
    if let Some(why) = super::login::placeholder_client_id(&settings) {
        return Err(CommandError::new(ExitCode::Config, why));
    }
    let creds = Credentials::from_settings_in(&settings);
    let state_dir = settings.agent.state_dir.clone();
    let mapped: Vec<String> = settings.mappings.iter().map(|m| m.name.clone()).collect();
    let look_after_ms = settings.agent.look_after.as_millis() as u64;
    let sign_in = match &settings.auth.method {
        AuthMethod::DeviceCode => "run `outbox login`".to_owned(),
        AuthMethod::TokenEnv { var } => format!("put a fresh Graph access token in ${var}"),
        AuthMethod::TokenCommand { .. } => {
            "run auth.command by hand and fix what it prints".to_owned()
        }
        AuthMethod::ClientCredentials { .. } => {
            "check the app's secret or certificate, its permissions and consent".to_owned()
        }
    };
    match agent::run(settings, creds, RunOptions { once, stop: None }).await {
        Ok(RunOutcome::Clean) if !once => Ok(ExitCode::Ok),
        Ok(RunOutcome::Clean) => {
            Ok(maybe_sent(&state_dir, look_after_ms).unwrap_or(left_over(&state_dir, &mapped)))
        }
        // Failed this run, or stopped with work left (an outage, a folder gone): the agent said
        // what; the ledger's failures are listed too.
        Ok(RunOutcome::SomeFailed) => {
            let _ = left_over(&state_dir, &mapped);
            Ok(maybe_sent(&state_dir, look_after_ms).unwrap_or(ExitCode::Failed))
        }
        Ok(RunOutcome::SignInNeeded) => Err(CommandError::new(
            ExitCode::SignIn,
            format!("sign-in needed: files stay queued; {sign_in}, then run again"),
        )),
        // Another agent holds the state dir: its pid, where its control channel tells it.
        Err(AgentError::Ledger(e @ crate::ledger::LedgerError::InUse { .. })) => {
            let mut err = CommandError::from(e);
            if let Some(pid) = super::entries::agent_pid(&state_dir).await.flatten() {
                err.message = err.message.replacen(
                    "another outbox agent ",
                    &format!("another outbox agent (pid {pid}) "),
                    1,
                );
            }
            Err(err)
        }
        Err(AgentError::Ledger(e)) => Err(CommandError::from(e)),
        Err(AgentError::Setup(s)) => Err(CommandError::new(ExitCode::Failed, s)),
    }
}

/// After `--once`: exit 4 (SPEC) while a message of the ledger may have been sent and could not
/// be confirmed, said with what to do; else exit 1 while one failed (each said with what to do
/// about the message); `None` when there is neither.
fn maybe_sent(state_dir: &std::path::Path, look_after_ms: u64) -> Option<ExitCode> {
    use crate::core::model::MessageState;
    use crate::ledger::Ledger;
    let l = Ledger::open(state_dir).ok()?;
    let messages = l.list_messages().unwrap_or_default();
    let _ = l.close();
    // Stopped while a send may have happened and its confirmation waits (trial 4, M11: the
    // summary said nothing of it): said, with what the next run does.
    let now = time::OffsetDateTime::now_utc();
    for m in &messages {
        if let Some(d) = crate::agent::control::send_doubt(m, look_after_ms) {
            let when = time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(d.look_at.0) * 1_000_000,
            )
            .ok()
            .filter(|t| *t > now)
            .map_or_else(
                || "at once".to_owned(),
                |t| format!("at {:02}:{:02}:{:02} UTC", t.hour(), t.minute(), t.second()),
            );
            errln!(
                "outbox: message {} (\"{}\") is not confirmed yet: {}",
                m.id,
                crate::outside::printable(&m.letter.subject),
                crate::agent::control::send_doubt_text(&d, &when, false)
            );
        }
    }
    // A failed message, said as a message (its files' rows say `done`: they are on its draft).
    // One that gave way to another agent's message mailing its files is no failure.
    // Nor is one with nothing left to send (its files canceled or deleted: the user's choice).
    let gave_way = |m: &&crate::core::model::MessageRecord| crate::agent::ops::not_to_retry(m);
    let failed = messages
        .iter()
        .filter(|m| m.state == MessageState::Failed && !gave_way(m))
        .count();
    for m in messages
        .iter()
        .filter(|m| m.state == MessageState::Failed && !gave_way(m))
    {
        let why = m
            .error
            .as_ref()
            .map(|e| {
                crate::outside::printable(&crate::secret::redact(&e.message))
                    .trim_end_matches('.')
                    .to_owned()
            })
            .unwrap_or_else(|| "it failed".to_owned());
        errln!(
            "outbox: message {} (\"{}\") was not sent: {why}; {}",
            m.id,
            crate::outside::printable(&m.letter.subject),
            super::status::message_advice(m).unwrap_or_default()
        );
    }
    let unconfirmed: Vec<_> = messages
        .iter()
        .filter(|m| m.state == MessageState::Unconfirmed)
        .collect();
    if unconfirmed.is_empty() {
        // Exit 1 while any message failed, as while any file did.
        return (failed > 0).then_some(ExitCode::Failed);
    }
    for m in &unconfirmed {
        errln!(
            "outbox: message {} (\"{}\") may have been sent and could not be confirmed; it was not sent again. Look in Sent Items; `outbox retry {}` sends it only if its draft is still a draft",
            m.id,
            crate::outside::printable(&m.letter.subject),
            m.id
        );
    }
    Some(ExitCode::MaybeSent)
}

/// After `--once`: what the ledger still holds that is not attached, this run's or an earlier
/// one's (a file that failed `Permission denied` yesterday and was only chmod-ed since is not a
/// new version, so this run did not try it), and what it stopped before attaching. Exit 1 while
/// any is left, as SPEC says.
fn left_over(state_dir: &std::path::Path, mapped: &[String]) -> ExitCode {
    use crate::ledger::{EntryState, Ledger, LedgerEntry};
    use std::collections::HashMap;
    let entries = match Ledger::open(state_dir) {
        Ok(l) => {
            let all = l.list(None).unwrap_or_default();
            let _ = l.close();
            all
        }
        // Another agent took the ledger in the meantime: it will say for itself.
        Err(_) => return ExitCode::Ok,
    };
    // Per file, its newest version: a failure a newer version has since replaced is history.
    let mut newest: HashMap<(&str, &std::path::Path), &LedgerEntry> = HashMap::new();
    for e in &entries {
        let slot = newest
            .entry((e.mapping.as_str(), e.path.as_path()))
            .or_insert(e);
        if e.updated_at > slot.updated_at {
            *slot = e;
        }
    }
    let count = |s: EntryState| newest.values().filter(|e| e.state == s).count();
    let (failed, rejected) = (count(EntryState::Failed), count(EntryState::Rejected));
    // Failed, of a mapping no longer in the config: a retry cannot send it anywhere.
    let unmapped = newest
        .values()
        .filter(|e| e.state == EntryState::Failed && !mapped.contains(&e.mapping))
        .count();
    // Failed, and the file is gone (deleted, or moved away from where outbox put it in
    // failed_dir) or changed: a retry cannot send it. One outbox moved to failed_dir and still
    // there is retried from there: counted with the rest.
    let gone = newest
        .values()
        .filter(|e| {
            e.state == EntryState::Failed
                && mapped.contains(&e.mapping)
                && crate::agent::ops::retry_refusal(e).is_some()
        })
        .count();
    // Not attached yet, of a mapping still configured: the run stopped before they were (a
    // signal, or they wait for something the run cannot wait out). The agent's log said what
    // each waited for; `status` says it now.
    let unfinished = newest
        .values()
        .filter(|e| {
            matches!(e.state, EntryState::Pending | EntryState::Uploading)
                && mapped.contains(&e.mapping)
        })
        .count();
    // Attached, but not moved or deleted: not retried by itself, so said every run.
    let after_failed = newest.values().filter(|e| e.after_failed).count();
    if after_failed > 0 {
        errln!(
            "outbox: attached, but {after_failed} after-action(s) (move/delete) failed and are not tried again by themselves; `outbox status` says why; fix it, then `outbox retry ID`"
        );
    }
    if failed + rejected + unfinished == 0 {
        return ExitCode::Ok;
    }
    // Each kind with the rows that say why, and what clears it.
    let mut parts = Vec::new();
    if unfinished > 0 {
        parts.push(format!(
            "{unfinished} not attached yet when the run stopped (`outbox status` says what each waits for and until when; the next `outbox run` goes on with them)"
        ));
    }
    if failed > gone + unmapped {
        parts.push(format!(
            "{} failed (`outbox status --state failed` says why; fix the cause, then `outbox retry --failed`)",
            failed - gone - unmapped
        ));
    }
    if unmapped > 0 {
        parts.push(format!(
            "{unmapped} failed of a mapping no longer in the config (`outbox status --state failed` lists them; `outbox cancel ID` clears each)"
        ));
    }
    if gone > 0 {
        parts.push(format!(
            "{gone} failed whose file is no longer where it was, or changed since (`outbox status --state failed` lists them; put the file back and `outbox retry ID`, or `outbox cancel ID` to clear it)"
        ));
    }
    if rejected > 0 {
        parts.push(format!(
            "{rejected} rejected (over 150 MiB, never sent: `outbox status --state rejected` lists them; `outbox cancel ID` clears one)"
        ));
    }
    errln!("outbox: not attached: {}", parts.join("; "));
    ExitCode::Failed
}
