//! outbox: attach every file dropped into a mapped folder to an Outlook message or event through
//! Microsoft Graph, exactly once.
//!
//! The binary (`main.rs`) only parses the command line and maps errors to exit codes; everything
//! else lives here so that tests and benchmarks drive the same code.

pub mod agent;
pub mod auth;
pub mod bounded;
pub mod ca;
pub mod cli;
pub mod config;
pub use outbox_core as core;
pub mod failpoint;
pub mod files;
pub mod graph;
pub mod ledger;
pub mod outside;
pub mod private;
pub mod quickxor;
pub mod sandbox;
pub mod secret;
pub mod service;
pub mod watch;
