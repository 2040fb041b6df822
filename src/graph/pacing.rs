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
    /// Upload reservations: (time, bytes, still uploading). An upload in progress stays in the
    /// window; when it ends, its time becomes the end time, so the window counts its last bytes.
    uploads: Vec<(Instant, u64, bool)>,
}

/// Held while a request is in flight; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

/// An upload's share of the mailbox's byte budget; dropping it stamps the end time.
#[derive(Debug)]
pub struct Reservation {
    mailbox: Option<Arc<Mailbox>>,
    index_time: Instant,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(mb) = &self.mailbox {
            let mut w = mb.windows.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if let Some(slot) = w
                .uploads
                .iter_mut()
                .find(|(t, b, open)| *open && *t == self.index_time && *b == self.bytes)
            {
                *slot = (now, self.bytes, false);
            }
        }
    }
}

impl Pacer {
    pub fn new(concurrency: usize, requests: Option<Budget>, upload_bytes: Option<Budget>) -> Self {
        Pacer {
            concurrency: concurrency.max(1),
            requests,
            upload_bytes,
            mailboxes: Mutex::new(HashMap::new()),
        }
    }

    fn mailbox(&self, user: &str) -> Arc<Mailbox> {
        let key = user.to_ascii_lowercase();
        let mut map = self.mailboxes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                Arc::new(Mailbox {
                    in_flight: Arc::new(Semaphore::new(self.concurrency)),
                    windows: Mutex::new(Windows::default()),
                })
            })
            .clone()
    }

    /// Wait for a request slot in the mailbox and for room in its request budget.
    pub async fn acquire(&self, user: &str) -> Permit {
        let mb = self.mailbox(user);
        #[allow(clippy::expect_used)]
        let slot = mb
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("mailbox semaphores are never closed");
        loop {
            let wait = {
                let mut w = mb.windows.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                match w.request_room(now, self.requests) {
                    None => {
                        if self.requests.is_some() {
                            w.requests.push_back(now);
                        }
                        break;
                    }
                    Some(wait) => wait,
                }
            };
            tracing::debug!(
                mailbox = user,
                wait_ms = wait.as_millis() as u64,
                "pacing inside the mailbox request budget"
            );
            tokio::time::sleep(wait).await;
        }
        Permit { _slot: slot }
    }

    /// Wait for room in the mailbox's upload-byte budget for a whole file of `bytes`, then
    /// hold it until the returned reservation is dropped (and a window after). A file larger than
    /// the budget goes once the window is otherwise empty.
    pub async fn reserve_upload(&self, user: &str, bytes: u64) -> Reservation {
        let Some(budget) = self.upload_bytes else {
            return Reservation {
                mailbox: None,
                index_time: Instant::now(),
                bytes,
            };
        };
        let mb = self.mailbox(user);
        loop {
            let wait = {
                let mut w = mb.windows.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                match w.upload_room(now, budget, bytes) {
                    None => {
                        w.uploads.push((now, bytes, true));
                        break Reservation {
                            mailbox: Some(mb.clone()),
                            index_time: now,
                            bytes,
                        };
                    }
                    Some(wait) => wait,
                }
            };
            tracing::info!(
                mailbox = user,
                wait_s = wait.as_secs(),
                "pacing inside the mailbox upload budget"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

impl Windows {
    /// `None` when one more request fits the request budget now; else how long to wait.
    fn request_room(&mut self, now: Instant, requests: Option<Budget>) -> Option<Duration> {
        let b = requests?;
        while self
            .requests
            .front()
            .is_some_and(|t| now.duration_since(*t) >= b.window + edge_margin(b.window))
        {
            self.requests.pop_front();
        }
        if (self.requests.len() as u64) < b.amount.max(1) {
            return None;
        }
        let oldest = self.requests.front()?;
        Some(
            (b.window + edge_margin(b.window)).saturating_sub(now.duration_since(*oldest))
                + Duration::from_millis(1),
        )
    }

    /// `None` when an upload of `bytes` fits the byte budget now; else how long to wait.
    fn upload_room(&mut self, now: Instant, b: Budget, bytes: u64) -> Option<Duration> {
        self.uploads.retain(|(t, _, open)| {
            *open || now.duration_since(*t) < b.window + edge_margin(b.window)
        });
        let used: u64 = self.uploads.iter().map(|(_, n, _)| n).sum();
        if used == 0 || used + bytes <= b.amount {
            return None;
        }
        // Wait for the earliest finished upload to leave the window (or poll while uploads run).
        let wait = self
            .uploads
            .iter()
            .filter(|(_, _, open)| !open)
            .map(|(t, _, _)| {
                (b.window + edge_margin(b.window)).saturating_sub(now.duration_since(*t))
            })
            .min()
            .unwrap_or(Duration::from_secs(1));
        Some(wait + Duration::from_millis(1))
    }
}

/// Slack added when waiting for a window to free: the server stamps a request when it arrives,
/// not when it was admitted here, and the two delays differ by more than a few milliseconds on
/// a loaded machine; a 5 ms margin drew 429s at window edges. A twentieth of the window (at
/// most a second) costs little throughput.
fn edge_margin(window: Duration) -> Duration {
    (window / 20).clamp(Duration::from_millis(5), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(amount: u64, ms: u64) -> Budget {
        Budget {
            amount,
            window: Duration::from_millis(ms),
        }
    }

    #[test]
    fn request_budget_waits_for_the_oldest() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(w.request_room(t0, Some(budget(3, 1000))).is_none());
            w.requests.push_back(t0);
        }
        let wait = w.request_room(t0 + Duration::from_millis(400), Some(budget(3, 1000)));
        assert!(
            wait.is_some_and(|d| d >= Duration::from_millis(600) && d < Duration::from_millis(700))
        );
        assert!(w
            // The window plus its edge margin (50 ms of 1 s).
            .request_room(t0 + Duration::from_millis(1050), Some(budget(3, 1000)))
            .is_none());
    }

    #[test]
    fn a_file_larger_than_the_byte_window_goes_through_an_empty_window() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        assert!(w.upload_room(t0, budget(100, 1000), 500).is_none());
        w.uploads.push((t0, 500, false));
        assert!(w.upload_room(t0, budget(100, 1000), 1).is_some());
        assert!(w
            .upload_room(t0 + Duration::from_millis(1050), budget(100, 1000), 60)
            .is_none());
    }

    #[test]
    fn byte_budget_fills_then_waits_for_finished_uploads() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        w.uploads.push((t0, 60, false));
        w.uploads.push((t0 + Duration::from_millis(100), 30, false));
        assert!(w
            .upload_room(t0 + Duration::from_millis(200), budget(100, 1000), 10)
            .is_none());
        let wait = w.upload_room(t0 + Duration::from_millis(200), budget(100, 1000), 20);
        assert!(
            wait.is_some_and(|d| d >= Duration::from_millis(800) && d < Duration::from_millis(900)),
            "{wait:?}"
        );
        // An upload still running never leaves the window.
        w.uploads.push((t0, 5, true));
        assert!(w
            .upload_room(t0 + Duration::from_secs(60), budget(100, 1000), 100)
            .is_some());
    }

    #[tokio::test]
    async fn reservations_stamp_their_end() {
        let p = Pacer::new(4, None, Some(budget(100, 200)));
        let r = p.reserve_upload("me", 80).await;
        let p = Arc::new(p);
        let p2 = p.clone();
        let second = tokio::spawn(async move { p2.reserve_upload("me", 50).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "the first upload is still running");
        drop(r);
        assert!(tokio::time::timeout(Duration::from_secs(2), second)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn concurrency_is_bounded_per_mailbox() {
        let p = Arc::new(Pacer::new(2, None, None));
        let a = p.acquire("me").await;
        let _b = p.acquire("ME").await;
        let p2 = p.clone();
        let third = tokio::spawn(async move { p2.acquire("me").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished());
        let _other = p.acquire("someone@else").await;
        drop(a);
        assert!(tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .is_ok());
    }
}
