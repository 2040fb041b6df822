//! Per-mailbox limits: at most `concurrency` requests in flight, and pacing inside the mailbox's
//! request and upload-byte budgets (sliding windows), so uploads stay under Outlook's throttling
//! instead of running into 429s.

use crate::config::Budget;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Limits shared by every request to every mailbox of one client.
#[derive(Debug)]
pub struct Pacer {
    concurrency: usize,
    requests: Option<Budget>,
    upload_bytes: Option<Budget>,
    mailboxes: Mutex<HashMap<String, Arc<Mailbox>>>,
}

#[derive(Debug)]
struct Mailbox {
    in_flight: Arc<Semaphore>,
    windows: Mutex<Windows>,
}

#[derive(Debug, Default)]
struct Windows {
    requests: VecDeque<Instant>,
    bytes: VecDeque<(Instant, u64)>,
    bytes_total: u64,
}

/// Held while a request is in flight; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

impl Pacer {
    pub fn new(concurrency: usize, requests: Option<Budget>, upload_bytes: Option<Budget>) -> Self {
        Pacer { concurrency: concurrency.max(1), requests, upload_bytes, mailboxes: Mutex::new(HashMap::new()) }
    }

    fn mailbox(&self, user: &str) -> Arc<Mailbox> {
        let key = user.to_ascii_lowercase();
        let mut map = self.mailboxes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                Arc::new(Mailbox { in_flight: Arc::new(Semaphore::new(self.concurrency)), windows: Mutex::new(Windows::default()) })
            })
            .clone()
    }

    /// Wait for a slot and for room in the budgets, then account for one request carrying
    /// `upload_bytes` bytes of upload. A single upload larger than the byte window still goes
    /// once the window is otherwise empty.
    pub async fn acquire(&self, user: &str, upload_bytes: u64) -> Permit {
        let mb = self.mailbox(user);
        #[allow(clippy::expect_used)]
        let slot = mb.in_flight.clone().acquire_owned().await.expect("mailbox semaphores are never closed");
        loop {
            let wait = {
                let mut w = mb.windows.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                match w.room(now, self.requests, self.upload_bytes, upload_bytes) {
                    None => {
                        w.record(now, self.requests.is_some(), self.upload_bytes.is_some(), upload_bytes);
                        break;
                    }
                    Some(wait) => wait,
                }
            };
            tracing::debug!(mailbox = user, wait_ms = wait.as_millis() as u64, "pacing inside the mailbox budget");
            tokio::time::sleep(wait).await;
        }
        Permit { _slot: slot }
    }
}

impl Windows {
    /// `None` when a request of `bytes` fits now; else how long to wait.
    fn room(&mut self, now: Instant, requests: Option<Budget>, upload: Option<Budget>, bytes: u64) -> Option<Duration> {
        let mut wait = Duration::ZERO;
        if let Some(b) = requests {
            while self.requests.front().is_some_and(|t| now.duration_since(*t) >= b.window) {
                self.requests.pop_front();
            }
            if self.requests.len() as u64 >= b.amount.max(1) {
                if let Some(oldest) = self.requests.front() {
                    wait = wait.max(b.window.saturating_sub(now.duration_since(*oldest)));
                }
            }
        }
        if let (Some(b), true) = (upload, bytes > 0) {
            while let Some((t, n)) = self.bytes.front().copied() {
                if now.duration_since(t) >= b.window {
                    self.bytes.pop_front();
                    self.bytes_total -= n;
                } else {
                    break;
                }
            }
            if self.bytes_total > 0 && self.bytes_total + bytes > b.amount {
                // Wait until enough of the oldest uploads leave the window.
                let mut freed = 0u64;
                for (t, n) in &self.bytes {
                    freed += n;
                    if self.bytes_total - freed + bytes <= b.amount || self.bytes_total == freed {
                        wait = wait.max(b.window.saturating_sub(now.duration_since(*t)));
                        break;
                    }
                }
            }
        }
        if wait.is_zero() {
            None
        } else {
            Some(wait + Duration::from_millis(5))
        }
    }

    fn record(&mut self, now: Instant, requests: bool, upload: bool, bytes: u64) {
        if requests {
            self.requests.push_back(now);
        }
        if upload && bytes > 0 {
            self.bytes.push_back((now, bytes));
            self.bytes_total += bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(amount: u64, ms: u64) -> Option<Budget> {
        Some(Budget { amount, window: Duration::from_millis(ms) })
    }

    #[test]
    fn request_budget_waits_for_the_oldest() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(w.room(t0, budget(3, 1000), None, 0).is_none());
            w.record(t0, true, false, 0);
        }
        let wait = w.room(t0 + Duration::from_millis(400), budget(3, 1000), None, 0);
        assert!(wait.is_some_and(|d| d >= Duration::from_millis(600) && d < Duration::from_millis(700)));
        assert!(w.room(t0 + Duration::from_millis(1000), budget(3, 1000), None, 0).is_none());
    }

    #[test]
    fn byte_budget_lets_a_huge_upload_through_an_empty_window() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        assert!(w.room(t0, None, budget(100, 1000), 500).is_none());
        w.record(t0, false, true, 500);
        assert!(w.room(t0, None, budget(100, 1000), 1).is_some());
        assert!(w.room(t0 + Duration::from_millis(1000), None, budget(100, 1000), 60).is_none());
    }

    #[test]
    fn byte_budget_fills_then_waits() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        w.record(t0, false, true, 60);
        w.record(t0 + Duration::from_millis(100), false, true, 30);
        assert!(w.room(t0 + Duration::from_millis(200), None, budget(100, 1000), 10).is_none());
        let wait = w.room(t0 + Duration::from_millis(200), None, budget(100, 1000), 20);
        assert!(wait.is_some_and(|d| d >= Duration::from_millis(800) && d < Duration::from_millis(900)), "{wait:?}");
    }

    #[tokio::test]
    async fn concurrency_is_bounded_per_mailbox() {
        let p = Arc::new(Pacer::new(2, None, None));
        let a = p.acquire("me", 0).await;
        let _b = p.acquire("ME", 0).await;
        let p2 = p.clone();
        let third = tokio::spawn(async move { p2.acquire("me", 0).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished());
        let _other = p.acquire("someone@else", 0).await;
        drop(a);
        assert!(tokio::time::timeout(Duration::from_secs(1), third).await.is_ok());
    }
}
