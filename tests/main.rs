//! The integration tests, as one test binary: each module below was its own binary, and every
//! one of them linked all of outbox and its dependencies again (14 links, ~170 MB each in a debug
//! build). Run one part with a filter: `cargo test --test it signin::`, `cargo test --test it
//! soak::`.

// Tests may panic on what they did not expect: that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod agent;
mod agent_run;
mod bad_input;
mod budget;
mod commands;
mod config;
mod crash;
mod drive;
mod exactly_once;
mod leave;
mod ledger;
mod mail_command;
mod mail_sandbox;
mod mailing;
mod man;
mod many;
mod messages;
// Unix only: names as raw bytes (`OsStrExt`).
#[cfg(unix)]
mod names;
mod outage;
mod pause;
mod properties;
mod sandbox;
// Unix only: modes, owners (chown) and symlinks.
#[cfg(unix)]
mod security;
// Windows only: the twins of `security`'s state dir, secret file and config tests, with DACLs.
#[cfg(windows)]
mod security_win;
mod send;
mod signin;
mod soak;
mod trial;
mod trial5;
mod truth;
mod voice;
