//! The decisions, with no I/O: when a file counts as finished (the settle rule), and every
//! decision about a file version and its upload (the state machine). The agent feeds it inputs
//! (what the watcher saw, hash results, each request's typed outcome, timers, commands) and
//! carries out the actions it answers; the simulator does the same against an in-memory world.

pub mod clock;
pub mod exec;
pub mod machine;
pub mod mail;
pub mod model;
pub mod prune;
pub mod read;
pub mod settle;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use machine::Machine;
