//! Exchange's sending limit (`agent.mailbox_sends`, 30 a minute per mailbox) as the server
//! counts it. The core paces sends by when it decided them; a send can then wait behind the
//! mailbox's other requests (the concurrency limit) and reach the server later than a send
//! decided after it, so two windows drawn from decision times do not match the server's. Here
//! the sends of one mailbox go one at a time, and one starts only once the `amount`-th send
//! before it was answered more than `window` ago: the server accepted that one before its
//! answer, so no window of the server's ever holds more than `amount`.

use crate::config::Budget;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

pub struct SendGate {
    budget: Option<Budget>,
    /// Per mailbox (lowercased): when its last sends were answered, oldest first.
    mailboxes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<VecDeque<Instant>>>>>,
}

impl SendGate {
    pub fn new(budget: Option<Budget>) -> Self {
        SendGate {
            budget,
            mailboxes: Mutex::new(HashMap::new()),
        }
    }

    /// Run `send` (one request) when the mailbox's window has room for it.
    pub async fn send<T, F>(&self, mailbox: &str, send: F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let Some(b) = self.budget.filter(|b| b.amount > 0) else {
            return send.await;
        };
        let slot = {
            let mut map = self.mailboxes.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(mailbox.to_ascii_lowercase()).or_default().clone()
        };
        let mut answered = slot.lock().await;
        let amount = usize::try_from(b.amount).unwrap_or(usize::MAX);
        while answered.len() >= amount {
            let Some(oldest) = answered.front().copied() else {
                break;
            };
            let free = oldest + b.window;
            if free <= Instant::now() {
                answered.pop_front();
            } else {
                tokio::time::sleep_until(free).await;
            }
        }
        let out = send.await;
        // Whatever the answer: a send whose answer was lost may have been accepted.
        answered.push_back(Instant::now());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn no_window_holds_more_than_the_budget() {
        let window = Duration::from_millis(300);
        let gate = SendGate::new(Some(Budget { amount: 2, window }));
        let t0 = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..5 {
            let s = gate
                .send("Me", async {
                    let s = Instant::now();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    s
                })
                .await;
            starts.push(s.duration_since(t0));
        }
        // Two at once, then each send a window after the answer two sends before it.
        assert!(starts[1] < Duration::from_millis(100), "{starts:?}");
        for w in starts.windows(3) {
            assert!(
                w[2] - w[0] >= window + Duration::from_millis(20),
                "{starts:?}"
            );
        }
        // Off: no wait.
        let off = SendGate::new(None);
        let t = Instant::now();
        for _ in 0..10 {
            off.send("me", async {}).await;
        }
        assert!(t.elapsed() < Duration::from_millis(50));
    }
}
