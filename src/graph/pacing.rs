//! Per-mailbox limits: at most `concurrency` requests in flight, and pacing inside the mailbox's
//! request and upload-byte budgets (sliding windows), so uploads stay under Outlook's throttling
//! instead of running into 429s.
//!
//! Graph counts a budget when a request arrives, by its body: a POST's JSON (base64 of the file)
//! or one chunk PUT. The pacer does the same — every request is admitted by its own body, just
//! before it is sent — so a large file takes the budget chunk by chunk as it goes rather than
//! holding its whole size from its first byte to a window after its last.
//!
//! A file larger than the whole byte budget cannot be paced body by body: it waits for its turn,
//! when the bodies sent before it began to wait (and those of any such file before it) have left
//! the window, and then takes the window. Its turn is fixed when it starts waiting: the bodies of
//! other files that fit the room left still go meanwhile, and never move it (a stream of small
//! files cannot keep it waiting, and it does not hold them up for minutes).
//!
//! Every wait here is said to the step that waits, when it runs as a [`Waiter`]'s: what it
//! waits for and until when (the agent shows it in `status`), and such a step can be withdrawn
//! while it waits, nothing of it sent (`outbox cancel`).

use crate::config::Budget;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
    /// Each request in the window: when it was admitted, moved to when it finished (see
    /// [`Stamp`]), and its id.
    requests: VecDeque<(Instant, u64)>,
    /// Each upload body in the window: the same time, its size, its id, and whether it is of a
    /// file that took the whole window.
    bytes: VecDeque<(Instant, u64, u64, bool)>,
    next_id: u64,
    /// Sum of `bytes`.
    bytes_used: u64,
    /// Files larger than the whole budget waiting for their turn, first come first: each with
    /// its ticket, the last id given out when it began to wait (the bodies it waits for are
    /// those with an id up to it, and those of files that took the whole window).
    queue: VecDeque<u64>,
}

/// A file's place in the queue for the whole window; dropping it (its turn taken, or the
/// upload canceled while it waited) leaves the queue.
struct Queued(Arc<Mailbox>, u64);

impl Drop for Queued {
    fn drop(&mut self) {
        let mut w = self.0.windows.lock().unwrap_or_else(|p| p.into_inner());
        w.queue.retain(|t| *t != self.1);
    }
}

/// What a step waits for in the pacer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A file larger than the whole byte budget, waiting for its turn to take the window.
    Turn,
    /// A body waiting for room in the byte budget.
    Bytes,
    /// A request waiting for room in the request budget.
    Requests,
}

/// A wait of a step in the pacer: for what, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub hold: Hold,
    pub until: SystemTime,
}

/// A step as the pacer knows it ([`Waiter::run`]): the wait it is in, if any, said to whoever
/// asks (`status`), and a way to withdraw it while it waits with nothing of it sent.
#[derive(Debug, Default)]
pub struct Waiter {
    /// Whose step it is (an entry's id), for the log.
    pub entry: String,
    /// The wait it is in, and whether it was withdrawn.
    state: Mutex<(Option<Held>, bool)>,
    withdrawn: CancellationToken,
}

tokio::task_local! {
    /// The step the pacer is pacing now, when it runs as a waiter's.
    static WAITER: Arc<Waiter>;
}

impl Waiter {
    /// The waiter of entry `entry`'s step.
    pub fn new(entry: &str) -> Waiter {
        Waiter {
            entry: entry.to_owned(),
            ..Waiter::default()
        }
    }

    /// Run `step` as this waiter's: `None` when it was withdrawn (it was then waiting in the
    /// pacer, nothing of it sent, and never goes on).
    pub async fn run<F: Future>(self: Arc<Self>, step: F) -> Option<F::Output> {
        let withdrawn = self.withdrawn.clone();
        tokio::select! {
            biased;
            _ = withdrawn.cancelled() => None,
            out = WAITER.scope(self, step) => Some(out),
        }
    }

    /// The wait the step is in now.
    pub fn held(&self) -> Option<Held> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Withdraw the step if it is waiting in the pacer (nothing of it sent, and nothing will
    /// be): `true` then; `false` when it is not waiting (its request may be on its way).
    pub fn withdraw(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.0.is_none() || s.1 {
            return false;
        }
        s.1 = true;
        self.withdrawn.cancel();
        true
    }

    fn hold(&self, held: Option<Held>) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = held;
        !s.1
    }
}

/// Sleep `wait` for `hold`, said to the step's waiter; a step withdrawn meanwhile never goes on.
async fn pause(wait: Duration, hold: Hold) {
    let waiter = WAITER.try_with(Arc::clone).ok();
    if let Some(w) = &waiter {
        let until = SystemTime::now() + wait;
        w.hold(Some(Held { hold, until }));
    }
    tokio::time::sleep(wait).await;
    if let Some(w) = &waiter {
        if !w.hold(None) {
            std::future::pending::<()>().await;
        }
    }
}

/// Held while a request is in flight; dropping it frees the slot and moves the request's
/// entries in the windows to that moment.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    _stamp: Stamp,
}

/// A request's entries in the mailbox's windows. Graph counts a request when it arrives, which
/// on a loaded machine can be well after it was admitted here (a connection to open, a thread to
/// be scheduled); once the answer is in, it has surely arrived, so dropping this moves the
/// entries to now: the window here then never lets a request go before Graph's has room.
#[derive(Debug, Default)]
pub struct Stamp {
    mailbox: Option<Arc<Mailbox>>,
    request: Option<u64>,
    body: Option<u64>,
}

impl Drop for Stamp {
    fn drop(&mut self) {
        let Some(mb) = &self.mailbox else {
            return;
        };
        let mut w = mb.windows.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(id) = self.request {
            if let Some(e) = w.requests.iter_mut().find(|e| e.1 == id) {
                e.0 = now;
            }
        }
        if let Some(id) = self.body {
            if let Some(e) = w.bytes.iter_mut().find(|e| e.2 == id) {
                e.0 = now;
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

    /// Wait for this file's turn to take the mailbox's byte window: a file larger than the whole
    /// budget starts only then (and takes the window: `admit_chunk` never holds its chunks). Its
    /// turn comes once the bodies sent before it began to wait, and those of every file that
    /// took the window before it, have left the window; other bodies sent meanwhile do not
    /// move it. `false` when there is no byte budget or the file fits it (its bodies are paced
    /// one by one).
    pub async fn take_whole_window(&self, user: &str, file_bytes: u64) -> bool {
        let Some(b) = self.upload_bytes else {
            return false;
        };
        if file_bytes <= b.amount {
            return false;
        }
        let mb = self.mailbox(user);
        let queued = {
            let mut w = mb.windows.lock().unwrap_or_else(|p| p.into_inner());
            // An id of its own (no body has it): the bodies before it have smaller ones.
            w.next_id += 1;
            let ticket = w.next_id;
            w.queue.push_back(ticket);
            Queued(mb.clone(), ticket)
        };
        let mut said = false;
        loop {
            let wait = {
                let mut w = mb.windows.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                match w.until_turn(now, b, queued.1) {
                    None => {
                        // Taken: a mark that holds the next such file's turn until this one's
                        // chunks (the first is not sent yet) have left the window.
                        w.add_body(now, 0, true);
                        drop(w);
                        drop(queued);
                        return true;
                    }
                    Some(wait) => wait,
                }
            };
            if !said {
                said = true;
                let entry = WAITER.try_with(|w| w.entry.clone()).unwrap_or_default();
                tracing::info!(
                    mailbox = user,
                    entry,
                    file_bytes,
                    wait_s = wait.as_secs(),
                    "a file larger than the mailbox upload budget waits for its turn to take the window; other files go on meanwhile"
                );
            }
            pause(wait, Hold::Turn).await;
        }
    }

    /// Count the next chunk of an upload session against the byte budget and return its length:
    /// `want` when it fits, else as many whole steps of `CHUNK_STEP` as the window has room for
    /// (Outlook takes any slice size, so a chunk trimmed to the room left wastes none of the
    /// budget), waiting until at least one step (or all of a smaller `want`) fits. The bodies of
    /// a file that took the whole window (`whole_window`) are counted but never held back.
    /// Hold the returned [`Stamp`] until the chunk's answer is in.
    pub async fn admit_chunk(&self, user: &str, want: u64, whole_window: bool) -> (u64, Stamp) {
        let Some(b) = self.upload_bytes else {
            return (want, Stamp::default());
        };
        let mb = self.mailbox(user);
        loop {
            let wait = 'room: {
                let mut w = mb.windows.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let first = want.min(CHUNK_STEP);
                let len = if whole_window || w.byte_room(now, Some(b), want).is_none() {
                    want
                } else if let Some(wait) = w.byte_room(now, Some(b), first) {
                    // Not even one step fits: wait until it does.
                    break 'room wait;
                } else {
                    let room = b.amount.saturating_sub(w.bytes_used);
                    (room / CHUNK_STEP * CHUNK_STEP).clamp(first, want)
                };
                let body = Some(w.add_body(now, len, whole_window));
                return (
                    len,
                    Stamp {
                        mailbox: Some(mb.clone()),
                        request: None,
                        body,
                    },
                );
            };
            tracing::debug!(
                mailbox = user,
                want,
                wait_ms = wait.as_millis() as u64,
                "pacing a chunk inside the mailbox upload budget"
            );
            pause(wait, Hold::Bytes).await;
        }
    }

    /// Wait for a request slot in the mailbox and for room in its request budget and, for a
    /// request carrying `body_bytes` of upload (a POST; chunks are counted by `admit_chunk`), in
    /// its byte budget; both are counted from now. The slot is given back while waiting for a
    /// window, so a request held by the budget does not block the mailbox's other requests.
    pub async fn acquire(&self, user: &str, body_bytes: u64) -> Permit {
        let mb = self.mailbox(user);
        loop {
            #[allow(clippy::expect_used)]
            let slot = mb
                .in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("mailbox semaphores are never closed");
            let (wait, hold) = {
                let mut w = mb.windows.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let requests = w.request_room(now, self.requests);
                let bytes = w.byte_room(now, self.upload_bytes, body_bytes);
                let hold = if bytes >= requests {
                    Hold::Bytes
                } else {
                    Hold::Requests
                };
                let wait = requests.max(bytes);
                if wait.is_none() {
                    let request = self.requests.is_some().then(|| w.add_request(now));
                    let body = (self.upload_bytes.is_some() && body_bytes > 0)
                        .then(|| w.add_body(now, body_bytes, false));
                    return Permit {
                        _slot: slot,
                        _stamp: Stamp {
                            mailbox: Some(mb.clone()),
                            request,
                            body,
                        },
                    };
                }
                (wait, hold)
            };
            drop(slot);
            let wait = wait.unwrap_or_default();
            tracing::debug!(
                mailbox = user,
                body_bytes,
                wait_ms = wait.as_millis() as u64,
                "pacing inside the mailbox budgets"
            );
            pause(wait, hold).await;
        }
    }
}

impl Windows {
    /// `None` when one more request fits the request budget now; else how long to wait.
    fn request_room(&mut self, now: Instant, requests: Option<Budget>) -> Option<Duration> {
        let b = requests?;
        let span = b.window + edge_margin(b.window);
        while self
            .requests
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= span)
        {
            self.requests.pop_front();
        }
        if (self.requests.len() as u64) < b.amount.max(1) {
            return None;
        }
        let (oldest, _) = self.requests.front()?;
        Some(span.saturating_sub(now.duration_since(*oldest)) + Duration::from_millis(1))
    }

    /// `None` when a body of `bytes` fits the byte budget now; else how long until enough of
    /// the window has expired. A body larger than the whole budget goes once the window is empty
    /// (Graph admits it then too).
    fn byte_room(&mut self, now: Instant, budget: Option<Budget>, bytes: u64) -> Option<Duration> {
        let b = budget?;
        let span = self.expire_bytes(now, b);
        if bytes == 0 || self.bytes_used == 0 || self.bytes_used + bytes <= b.amount {
            return None;
        }
        // The earliest moment enough bytes have left the window for this body to fit.
        let mut freed = 0u64;
        let need = (self.bytes_used + bytes).saturating_sub(b.amount);
        for &(t, n, _, _) in &self.bytes {
            freed += n;
            if freed >= need || freed == self.bytes_used {
                return Some(span.saturating_sub(now.duration_since(t)) + Duration::from_millis(1));
            }
        }
        Some(span)
    }
}

impl Windows {
    fn add_request(&mut self, now: Instant) -> u64 {
        self.next_id += 1;
        self.requests.push_back((now, self.next_id));
        self.next_id
    }

    fn add_body(&mut self, now: Instant, n: u64, whole: bool) -> u64 {
        self.next_id += 1;
        self.bytes.push_back((now, n, self.next_id, whole));
        self.bytes_used += n;
        self.next_id
    }

    /// Drop the bodies that have left the byte window; returns the window's span (with margin).
    fn expire_bytes(&mut self, now: Instant, b: Budget) -> Duration {
        let span = b.window + edge_margin(b.window);
        while let Some(&(t, n, _, _)) = self.bytes.front() {
            if now.duration_since(t) < span {
                break;
            }
            self.bytes.pop_front();
            self.bytes_used -= n;
        }
        span
    }

    /// `None` when it is the turn of the file with `ticket` to take the window: it is first in
    /// the queue, and no body sent before it began to wait, nor any of a file that took the
    /// window, is left in it; else how long until the last of those leaves it (at least a
    /// moment, while a file before it in the queue waits).
    fn until_turn(&mut self, now: Instant, b: Budget, ticket: u64) -> Option<Duration> {
        let span = self.expire_bytes(now, b);
        // Entries re-stamped at their end may be out of order: the latest decides.
        let last = self
            .bytes
            .iter()
            .filter(|e| e.2 <= ticket || e.3)
            .map(|e| e.0)
            .max();
        let first = self.queue.front().is_none_or(|t| *t == ticket);
        match (last, first) {
            (None, true) => None,
            (None, false) => Some(Duration::from_millis(100)),
            (Some(last), _) => {
                Some(span.saturating_sub(now.duration_since(last)) + Duration::from_millis(1))
            }
        }
    }
}

/// The unit a chunk is trimmed by to fit the room left in a byte window (Graph's slice unit for
/// OneDrive; Outlook has no alignment rule, this keeps slices from getting tiny).
const CHUNK_STEP: u64 = 320 * 1024;

/// Slack added when waiting for a window to free: the server stamps a request when it arrives,
/// not when it was admitted here, and the two differ by connection set-up and scheduling on a
/// loaded machine; a 5 ms margin drew 429s at window edges. A fiftieth of the window (20 ms to
/// 1 s) costs 2 % of the budget at most.
fn edge_margin(window: Duration) -> Duration {
    (window / 50).clamp(Duration::from_millis(20), Duration::from_secs(1))
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
            w.add_request(t0);
        }
        let wait = w.request_room(t0 + Duration::from_millis(400), Some(budget(3, 1000)));
        assert!(
            wait.is_some_and(|d| d >= Duration::from_millis(600) && d < Duration::from_millis(700))
        );
        assert!(w
            // The window plus its edge margin (20 ms of 1 s).
            .request_room(t0 + Duration::from_millis(1020), Some(budget(3, 1000)))
            .is_none());
    }

    fn admit(w: &mut Windows, t: Instant, n: u64) {
        w.add_body(t, n, false);
    }

    #[test]
    fn a_body_larger_than_the_byte_window_goes_through_an_empty_window() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        let b = Some(budget(100, 1000));
        assert!(w.byte_room(t0, b, 500).is_none());
        admit(&mut w, t0, 500);
        assert!(w.byte_room(t0, b, 1).is_some());
        assert!(w
            .byte_room(t0 + Duration::from_millis(1020), b, 60)
            .is_none());
        assert_eq!(w.bytes_used, 0, "expired bodies leave the window");
    }

    #[test]
    fn byte_budget_waits_only_as_long_as_this_body_needs() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        let b = Some(budget(100, 1000));
        admit(&mut w, t0, 60);
        admit(&mut w, t0 + Duration::from_millis(100), 30);
        let at = t0 + Duration::from_millis(200);
        assert!(w.byte_room(at, b, 10).is_none());
        // 20 more needs the first body (60) gone: 1000 + 20 - 200 ms.
        let wait = w.byte_room(at, b, 20);
        assert!(
            wait.is_some_and(|d| d >= Duration::from_millis(820) && d < Duration::from_millis(830)),
            "{wait:?}"
        );
        // 80 more needs both gone: 1000 + 20 - 100 ms.
        let wait = w.byte_room(at, b, 80);
        assert!(
            wait.is_some_and(|d| d >= Duration::from_millis(920) && d < Duration::from_millis(930)),
            "{wait:?}"
        );
        // Requests without a body never wait for bytes.
        assert!(w.byte_room(at, b, 0).is_none());
    }

    #[tokio::test]
    async fn bodies_are_admitted_as_the_window_frees() {
        let p = Arc::new(Pacer::new(4, None, Some(budget(100, 300))));
        let _a = p.acquire("me", 80).await;
        let p2 = p.clone();
        let t0 = Instant::now();
        let second = tokio::spawn(async move { p2.acquire("me", 50).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            !second.is_finished(),
            "80 + 50 is over 100 until the first leaves"
        );
        assert!(tokio::time::timeout(Duration::from_secs(2), second)
            .await
            .is_ok());
        assert!(t0.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_request_held_by_the_budget_does_not_hold_a_slot() {
        let p = Arc::new(Pacer::new(1, None, Some(budget(100, 10_000))));
        drop(p.acquire("me", 100).await);
        let p2 = p.clone();
        let held = tokio::spawn(async move { p2.acquire("me", 50).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!held.is_finished());
        // A GET (no body) still gets the mailbox's only slot.
        assert!(
            tokio::time::timeout(Duration::from_secs(1), p.acquire("me", 0))
                .await
                .is_ok()
        );
        held.abort();
    }

    #[tokio::test]
    async fn a_file_larger_than_the_budget_takes_an_empty_window_whole() {
        let p = Arc::new(Pacer::new(4, None, Some(budget(100, 300))));
        assert!(
            !p.take_whole_window("me", 100).await,
            "it fits: paced body by body"
        );
        drop(p.acquire("me", 40).await);
        let t0 = Instant::now();
        assert!(p.take_whole_window("me", 250).await);
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "waited for the window to empty"
        );
        // Its chunks are counted but not held back...
        for _ in 0..3 {
            assert_eq!(p.admit_chunk("me", 80, true).await.0, 80);
        }
        assert!(t0.elapsed() < Duration::from_millis(600));
        // ...so a body of another file waits for them to leave the window.
        drop(p.acquire("me", 10).await);
        assert!(t0.elapsed() >= Duration::from_millis(600));
        assert!(
            !Pacer::new(4, None, None)
                .take_whole_window("me", 1 << 40)
                .await
        );
    }

    #[tokio::test]
    async fn a_chunk_is_trimmed_to_the_room_left_in_the_window() {
        let step = CHUNK_STEP;
        let p = Pacer::new(4, None, Some(budget(10 * step + 1000, 300)));
        assert_eq!(p.admit_chunk("me", 4 * step, false).await.0, 4 * step);
        assert_eq!(p.admit_chunk("me", 4 * step, false).await.0, 4 * step);
        // 2 steps and 1000 bytes are left: the chunk is cut to 2 whole steps, at once.
        let t0 = Instant::now();
        assert_eq!(p.admit_chunk("me", 4 * step, false).await.0, 2 * step);
        assert!(t0.elapsed() < Duration::from_millis(100));
        // The last 1000 bytes of a file fit as they are.
        assert_eq!(p.admit_chunk("me", 1000, false).await.0, 1000);
        // Nothing left: the next chunk waits for the window to move on.
        assert_eq!(p.admit_chunk("me", 4 * step, false).await.0, 4 * step);
        assert!(t0.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            Pacer::new(4, None, None)
                .admit_chunk("me", 7, false)
                .await
                .0,
            7
        );
    }

    #[tokio::test]
    async fn small_bodies_go_while_a_file_larger_than_the_budget_waits_and_do_not_move_its_turn() {
        let p = Arc::new(Pacer::new(4, None, Some(budget(100, 300))));
        let t0 = Instant::now();
        drop(p.acquire("me", 10).await);
        let p2 = p.clone();
        let big = tokio::spawn(async move {
            let took = p2.take_whole_window("me", 500).await;
            (took, Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // 10 + 10 fits the budget: it goes at once, the big file waiting or not...
        let t1 = Instant::now();
        drop(p.acquire("me", 10).await);
        assert!(t1.elapsed() < Duration::from_millis(50));
        // ...and a stream of them, each fitting, never moves the big file's turn.
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(p.acquire("me", 5).await);
        }
        let (took, at) = tokio::time::timeout(Duration::from_secs(2), big)
            .await
            .unwrap()
            .unwrap();
        assert!(took);
        let waited = at.duration_since(t0);
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_millis(450),
            "its turn is when the body before it left: {waited:?}"
        );
    }

    #[tokio::test]
    async fn files_larger_than_the_budget_take_the_window_one_after_the_other() {
        let p = Arc::new(Pacer::new(4, None, Some(budget(100, 300))));
        let t0 = Instant::now();
        assert!(
            p.take_whole_window("me", 500).await,
            "an empty window: at once"
        );
        assert!(t0.elapsed() < Duration::from_millis(50));
        let p2 = p.clone();
        let second = tokio::spawn(async move { p2.take_whole_window("me", 500).await });
        // The first one's chunk, counted when it is sent after its session is made.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(p.admit_chunk("me", 400, true).await.0, 400);
        assert!(tokio::time::timeout(Duration::from_secs(2), second)
            .await
            .is_ok());
        assert!(
            t0.elapsed() >= Duration::from_millis(320),
            "the second waits for the first's chunk to leave the window: {:?}",
            t0.elapsed()
        );
    }

    #[tokio::test]
    async fn a_step_waiting_in_the_pacer_says_so_and_can_be_withdrawn() {
        let p = Arc::new(Pacer::new(4, None, Some(budget(100, 10_000))));
        drop(p.acquire("me", 10).await);
        let waiter = Arc::new(Waiter::default());
        let (p2, w2) = (p.clone(), waiter.clone());
        let step = tokio::spawn(async move {
            w2.run(async move { p2.take_whole_window("me", 500).await })
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let held = waiter.held().expect("it says it waits");
        assert_eq!(held.hold, Hold::Turn);
        let left = held.until.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(9), "{left:?}");
        assert!(waiter.withdraw());
        assert!(!waiter.withdraw(), "once");
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(1), step)
                .await
                .unwrap()
                .unwrap(),
            None
        );
        // A step not waiting is not withdrawn: its request may be on its way.
        let idle = Waiter::default();
        assert!(!idle.withdraw());
        // Withdrawn, it left the queue: another file larger than the budget is not held by it.
        assert!(p.mailbox("me").windows.lock().unwrap().queue.is_empty());
    }

    #[tokio::test]
    async fn a_request_counts_from_when_its_answer_came_not_from_its_admission() {
        let p = Pacer::new(4, Some(budget(1, 300)), Some(budget(100, 300)));
        let t0 = Instant::now();
        let first = p.acquire("me", 80).await;
        // The server may have counted it as late as its answer: 200 ms on.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(first);
        drop(p.acquire("me", 50).await);
        assert!(
            t0.elapsed() >= Duration::from_millis(500),
            "{:?}: the window must run from the answer",
            t0.elapsed()
        );
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
        assert!(tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .is_ok());
    }
}
