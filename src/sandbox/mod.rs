//! `outbox sandbox`: a local Microsoft Graph stand-in.
