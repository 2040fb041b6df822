//! The executor's order of work, the one piece of it that decides nothing and yet carries an
//! invariant: a batch of inputs goes to the machine, the ledger writes their actions ask for
//! are made as they come, the ledger is flushed once, and only then does anything else of the
//! batch start (a request, an after-action, a move into `failed_dir`, a notification). So every
//! action starts after every record asked for before it is on disk (ARCHITECTURE.md: every
//! remote effect follows its flushed intent), with one flush per batch.
//!
//! It is generic over the executor's hands ([`Executor`]) and its ledger ([`Ledger`]), and does
//! no I/O itself: the agent (`src/agent/mod.rs`) carries it out with sled and its tasks, the
//! simulation (`sim.rs`) with its in-memory ledger, which can crash before a flush, halfway
//! through one, or after it. The simulation runs this code, not a twin of it: a bug here (a
//! request started before the flush) is one the simulation's worlds can catch (docs/core.md,
//! "The executor in the proof").

use crate::model::{Action, FileStat, Input, MessageRecord, Record};

/// Inputs per batch: bounds how long the first request of a batch waits for the rest.
pub const BATCH: usize = 256;

/// A ledger write the machine asks for: visible at once, durable at the batch's flush.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// `Action::Persist`.
    Record(Record),
    /// `Action::PersistMessage`.
    Message(MessageRecord),
    /// `Action::UpdateFile`: a stored record's file seen again with the same bytes; `revive`:
    /// read it back and queue it for the machine as `Input::Retry` (in this drain, after the
    /// inputs already queued).
    File {
        id: String,
        file: FileStat,
        revive: bool,
    },
    /// `Action::MarkReplaced`.
    Replaced { id: String },
}

/// When an action is carried out within its batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    /// A ledger write: made at once, flushed with the batch.
    Write(Write),
    /// Local and harmless before the flush (a stat, a timer): taken at once.
    Now(Action),
    /// Everything else: started only after the batch's flush.
    AfterFlush(Action),
}

/// Which turn `action` takes: the one rule of which actions wait for the flush.
pub fn turn(action: Action) -> Turn {
    match action {
        Action::Persist(r) => Turn::Write(Write::Record(r)),
        Action::PersistMessage(m) => Turn::Write(Write::Message(m)),
        Action::UpdateFile { id, file, revive } => Turn::Write(Write::File { id, file, revive }),
        Action::MarkReplaced { id } => Turn::Write(Write::Replaced { id }),
        a @ (Action::Stat { .. } | Action::WakeAt(_)) => Turn::Now(a),
        a => Turn::AfterFlush(a),
    }
}

/// The ledger as the executor's order of work sees it.
pub trait Ledger {
    /// Why the executor stops (a write or a flush the disk refused; the simulation's crash).
    type Error;
    /// Make `write` (visible to later reads at once, durable only at the next
    /// [`Ledger::flush`]). It may answer an action of the executor's own that waits for the
    /// flush too (the agent: the notification of a version rejected by its size).
    fn write(&mut self, write: Write) -> Result<Option<Action>, Self::Error>;
    /// Make every write so far durable. `next`: the actions that wait for it (the agent names
    /// its crash points by them). An error stops the executor: nothing of `next` starts.
    fn flush(&mut self, next: &[Action]) -> Result<(), Self::Error>;
}

/// The executor around the machine: its inputs, its clock and the machine itself (`decide`),
/// and its hands.
pub trait Executor: Ledger {
    /// The next input waiting (an answer already in, a revived record), if any.
    fn next_input(&mut self) -> Option<Input>;
    /// The machine's answer to `input` at the executor's time now.
    fn decide(&mut self, input: Input) -> Vec<Action>;
    /// Carry out a [`Turn::Now`] action (a stat, a timer).
    fn now(&mut self, action: Action) -> Result<(), Self::Error>;
    /// Start a [`Turn::AfterFlush`] action: only ever called once every write asked for
    /// before it is flushed.
    fn start(&mut self, action: Action) -> Result<(), Self::Error>;
}

/// Feed the machine every input queued, a batch of at most [`BATCH`] at a time (group commit):
/// the writes the batch's inputs produce are made as they come and flushed once, and only then
/// are the batch's other actions started, in the order the machine asked for them.
pub fn drain<X: Executor>(x: &mut X) -> Result<(), X::Error> {
    loop {
        let mut later: Vec<Action> = Vec::new();
        let mut taken = 0;
        while taken < BATCH {
            let Some(input) = x.next_input() else {
                break;
            };
            taken += 1;
            for action in x.decide(input) {
                match turn(action) {
                    Turn::Write(w) => {
                        if let Some(own) = x.write(w)? {
                            later.push(own);
                        }
                    }
                    Turn::Now(a) => x.now(a)?,
                    Turn::AfterFlush(a) => later.push(a),
                }
            }
        }
        if taken == 0 {
            return Ok(());
        }
        x.flush(&later)?;
        for action in later {
            x.start(action)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Time;

    /// An executor that records the order of what it was asked, over a queue of inputs each
    /// answered with a fixed list of actions.
    #[derive(Default)]
    struct Log {
        inputs: Vec<Input>,
        answers: Vec<Vec<Action>>,
        seen: Vec<String>,
        fail_flush: bool,
    }

    impl Ledger for Log {
        type Error = String;
        fn write(&mut self, w: Write) -> Result<Option<Action>, String> {
            self.seen.push(match w {
                Write::Record(r) => format!("write {}", r.id),
                Write::Message(m) => format!("write {}", m.id),
                Write::File { id, .. } => format!("update {id}"),
                Write::Replaced { id } => format!("replaced {id}"),
            });
            Ok(None)
        }
        fn flush(&mut self, next: &[Action]) -> Result<(), String> {
            self.seen.push(format!("flush before {}", next.len()));
            if self.fail_flush {
                return Err("disk full".into());
            }
            Ok(())
        }
    }

    impl Executor for Log {
        fn next_input(&mut self) -> Option<Input> {
            if self.inputs.is_empty() {
                None
            } else {
                Some(self.inputs.remove(0))
            }
        }
        fn decide(&mut self, _: Input) -> Vec<Action> {
            if self.answers.is_empty() {
                Vec::new()
            } else {
                self.answers.remove(0)
            }
        }
        fn now(&mut self, a: Action) -> Result<(), String> {
            self.seen.push(format!("now {a:?}"));
            Ok(())
        }
        fn start(&mut self, a: Action) -> Result<(), String> {
            self.seen.push(match a {
                Action::ForgetUrl { id } => format!("start {id}"),
                other => format!("start {other:?}"),
            });
            Ok(())
        }
    }

    fn write(id: &str) -> Action {
        Action::MarkReplaced { id: id.into() }
    }

    #[test]
    fn a_batch_writes_then_flushes_once_then_starts_in_order() {
        let mut x = Log {
            inputs: vec![Input::Tick, Input::Tick],
            answers: vec![
                vec![
                    write("a"),
                    Action::ForgetUrl { id: "x".into() },
                    Action::WakeAt(Time(5)),
                ],
                vec![write("b"), Action::ForgetUrl { id: "y".into() }],
            ],
            ..Log::default()
        };
        assert_eq!(drain(&mut x), Ok(()));
        assert_eq!(
            x.seen,
            [
                "replaced a",
                "now WakeAt(Time(5))",
                "replaced b",
                "flush before 2",
                "start x",
                "start y"
            ]
        );
    }

    #[test]
    fn a_failed_flush_starts_nothing_of_its_batch() {
        let mut x = Log {
            inputs: vec![Input::Tick],
            answers: vec![vec![write("a"), Action::ForgetUrl { id: "x".into() }]],
            fail_flush: true,
            ..Log::default()
        };
        assert_eq!(drain(&mut x), Err("disk full".into()));
        assert_eq!(x.seen, ["replaced a", "flush before 1"]);
    }

    #[test]
    fn a_batch_takes_at_most_batch_inputs() {
        let mut x = Log {
            inputs: vec![Input::Tick; BATCH + 1],
            ..Log::default()
        };
        assert_eq!(drain(&mut x), Ok(()));
        assert_eq!(x.seen, ["flush before 0", "flush before 0"]);
    }
}
