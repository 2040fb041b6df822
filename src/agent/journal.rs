//! The agent's [`Journal`]: every step of an upload is written to the ledger and flushed before
//! it happens; an upload URL goes to the owner-only session store, never into sled.

use crate::graph::Journal;
use crate::ledger::{EntryState, Ledger, SessionInfo, SessionStore};
use std::sync::Arc;
use time::OffsetDateTime;

pub struct LedgerJournal {
    pub ledger: Arc<Ledger>,
    pub sessions: Arc<SessionStore>,
    pub id: String,
}

impl LedgerJournal {
    fn write(&self, f: impl FnMut(&mut crate::ledger::LedgerEntry)) -> Result<(), String> {
        self.ledger.update(&self.id, f).map_err(|e| e.to_string())?;
        self.ledger.flush().map_err(|e| e.to_string())
    }
}

impl Journal for LedgerJournal {
    async fn before_post(&self) -> Result<(), String> {
        crate::failpoint!("before-post-intent");
        self.write(|e| {
            e.state = EntryState::Uploading;
            e.post_in_flight = true;
        })?;
        crate::failpoint!("after-post-intent");
        Ok(())
    }

    async fn before_session(&self) -> Result<(), String> {
        self.write(|e| {
            e.state = EntryState::Uploading;
            e.post_in_flight = false;
        })?;
        crate::failpoint!("after-session-intent");
        Ok(())
    }

    async fn session_created(
        &self,
        upload_url: &str,
        _expires: Option<&str>,
    ) -> Result<(), String> {
        crate::failpoint!("before-session-saved");
        self.sessions
            .save(&self.id, upload_url)
            .map_err(|e| e.to_string())?;
        self.write(|e| {
            e.session = Some(SessionInfo {
                expires_at: None,
                created_at: OffsetDateTime::now_utc(),
            });
            e.bytes_sent = 0;
        })?;
        crate::failpoint!("after-session-saved");
        Ok(())
    }

    async fn before_chunk(&self, offset: u64, _len: u64) -> Result<(), String> {
        self.write(|e| e.bytes_sent = offset)?;
        crate::failpoint!("before-chunk");
        Ok(())
    }

    fn progress(&self, committed: u64) {
        crate::failpoint!("after-chunk");
        // Progress for `status` only; durability comes from the next intent's flush.
        let _ = self.ledger.update(&self.id, |e| e.bytes_sent = committed);
    }

    async fn session_gone(&self) -> Result<(), String> {
        self.write(|e| e.session = None)?;
        self.sessions.remove(&self.id).map_err(|e| e.to_string())?;
        Ok(())
    }
}
