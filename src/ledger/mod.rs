//! The ledger: one durable record per file version, in a sled database under `state_dir`.
//!
//! It owns storage only: entries, the path index, flush points, schema migration and the
//! owner-only store of upload-session URLs. It never decides what to do with a file (that is the
//! agent's job) and it never silently resets or repairs a database it cannot read.
//!
//! Invariants:
//! - a write is durable only once [`Ledger::flush`] (or [`Ledger::put_flushed`]) has returned;
//! - an upload URL (it carries an `authtoken`) is never written to sled, only to
//!   [`SessionStore`];
//! - a corrupt, locked or newer-schema ledger is reported with its path and left untouched.

mod entry;
mod error;
mod sessions;
mod store;

pub use entry::{
    datetime_of, new_id, time_of, EntryBrief, EntryError, EntryState, ItemKind, LedgerEntry,
    NewEntry, SessionInfo, Target,
};
pub use error::LedgerError;
pub use sessions::SessionStore;
pub use store::{is_stale, Ledger, SCHEMA_VERSION};
