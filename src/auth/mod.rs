//! Sign-in: where bearer tokens for Graph come from.
