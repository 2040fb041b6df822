//! The sled ledger: one entry per file version.
