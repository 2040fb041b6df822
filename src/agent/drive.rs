//! The loop of a one-shot command (`send`, `mail`): the agent's state machine fed its inputs,
//! its remote steps run as tasks, its timers slept, until it is quiescent — without the ledger.
//! What differs between the commands (which actions they keep, when they stop early, what they
//! say while waiting, how they clean up) is theirs, through [`OneShot`]; the loop is one.

use super::oneshot::{unreachable, MAX_UNREACHABLE};
use super::steps::{Steps, UrlStore};
use crate::core::model::*;
use crate::core::Machine;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Why a one-shot command's loop ended before the machine was quiescent.
pub(super) enum Stop {
    /// Sign-in is needed (no token, refresh refused).
    SignIn(Failure),
    /// SIGINT, SIGTERM or SIGHUP.
    Interrupted,
    /// Graph or the identity platform could not be reached, [`MAX_UNREACHABLE`] times: a
    /// one-shot command does not wait out an outage as the agent does.
    Unreachable(Failure),
}

/// What a one-shot command makes of its machine's actions and of its waits.
pub(super) trait OneShot {
    /// An action that is no remote step (a record written, a note, a local step it does not
    /// take): `true` if the command takes it here; `false` runs it as a remote step.
    fn local(&mut self, action: &Action) -> bool;
    /// A remote step about to run.
    fn spawned(&mut self, _action: &Action) {}
    /// A remote step's answer, before the machine takes it.
    fn heard(&mut self, _input: &Input) {}
    /// Stop now though work may be left (an earlier `mail --key` run sent the message).
    fn done_early(&self) -> bool {
        false
    }
    /// A step's answer, before the machine takes it.
    fn answered(&mut self, _input: &Input) {}
    /// Before a wait: the next timer in `wake_in_ms`, and whether steps are running.
    fn waiting(&mut self, _wake_in_ms: u64, _running: bool) {}
    /// After an early stop: undo what can be (delete open upload sessions).
    async fn clean_up(&mut self, machine: &Machine);
}

/// Run `machine` from `inputs` until it is quiescent (`Ok`), or stop early (`Err`, after the
/// command cleaned up).
pub(super) async fn drive<U: UrlStore + Send + Sync + 'static, H: OneShot>(
    machine: &mut Machine,
    steps: Arc<Steps<U>>,
    urls: &U,
    mut inputs: Vec<Input>,
    hooks: &mut H,
) -> Result<(), Stop> {
    let clock = super::Clock::start();
    let mut tasks: JoinSet<Option<Input>> = JoinSet::new();
    let mut wake: Option<Time> = None;
    let mut unreachable_seen = 0;
    let signal = super::command_signal();
    tokio::pin!(signal);
    let stop = loop {
        for input in inputs.drain(..) {
            for action in machine.handle(clock.now(), input) {
                match action {
                    Action::WakeAt(t) => wake = Some(t),
                    Action::ForgetUrl { id } => urls.forget(&id),
                    Action::Notify(Note::SignInNeeded(f)) => {
                        tasks.shutdown().await;
                        hooks.clean_up(machine).await;
                        return Err(Stop::SignIn(f));
                    }
                    a if hooks.local(&a) => {}
                    remote => {
                        hooks.spawned(&remote);
                        let s = steps.clone();
                        tasks.spawn(async move { s.run(remote).await });
                    }
                }
            }
        }
        // Quiescent, or every entry left waits for a `retry` of its failed message (a draft
        // Graph refused to make leaves its files unattached): no ledger keeps them for one.
        if tasks.is_empty() && (machine.quiescent() || machine.only_blocked()) {
            return Ok(());
        }
        if hooks.done_early() {
            tasks.shutdown().await;
            return Ok(());
        }
        if let Some(t) = wake {
            hooks.waiting(t.0.saturating_sub(clock.now().0), !tasks.is_empty());
        }
        let until = wake
            .map(|t| clock.instant_of(t))
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            _ = &mut signal => break Stop::Interrupted,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(Some(input)) = joined {
                    hooks.answered(&input);
                    if let Some(f) = unreachable(&input) {
                        unreachable_seen += 1;
                        if unreachable_seen >= MAX_UNREACHABLE {
                            break Stop::Unreachable(f);
                        }
                    }
                    hooks.heard(&input);
                    inputs.push(input);
                }
            }
            _ = tokio::time::sleep_until(until) => {
                wake = None;
                inputs.push(Input::Tick);
            }
        }
    };
    tasks.shutdown().await;
    hooks.clean_up(machine).await;
    Err(stop)
}
