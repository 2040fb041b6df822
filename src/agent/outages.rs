//! What the agent's log says of Graph out of reach or throttling: once when the waiting starts
//! (why, and when the first file tries again), once when Graph answers again (after how long);
//! never at each retry (`status` says each row's wait while it lasts).

use crate::core::model::{Fault, Input, Time};
use std::time::Instant;

/// Why requests wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unreachable,
    Throttled,
}

/// One wait of every request: since when, for which entry first, why; said yet or not.
struct Episode {
    kind: Kind,
    since: Instant,
    entry: String,
    why: String,
    said: bool,
}

/// The waits under way (one of each kind at most).
#[derive(Default)]
pub(super) struct Outages {
    episodes: Vec<Episode>,
}

impl Outages {
    /// A step's answer, before the core takes it: a wait starts, or one ends (said then).
    pub(super) fn heard(&mut self, input: &Input) {
        let Input::Outcome { id, outcome } = input else {
            return;
        };
        let started = match outcome.fault() {
            Some(Fault::Unreachable(f)) => Some((
                Kind::Unreachable,
                crate::outside::shown(&f.message).to_string(),
            )),
            Some(Fault::Throttled { retry_after_ms }) => Some((
                Kind::Throttled,
                match retry_after_ms {
                    Some(ms) => format!("Retry-After: {} s", ms.div_ceil(1_000)),
                    None => "no Retry-After".to_owned(),
                },
            )),
            _ => None,
        };
        // An answer of Graph's ends what waited for it: any answer a wait for it to be
        // reachable, any but a throttle a throttle. A drop or a timeout (ambiguous) says
        // neither.
        let kind = started.as_ref().map(|(k, _)| *k);
        let ambiguous = matches!(outcome.fault(), Some(Fault::Ambiguous(_)));
        self.episodes.retain(|e| {
            if ambiguous
                || Some(e.kind) == kind
                || (e.kind == Kind::Throttled && kind == Some(Kind::Unreachable))
            {
                return true;
            }
            if e.said {
                let secs = e.since.elapsed().as_secs();
                match e.kind {
                    Kind::Unreachable => tracing::info!(
                        "Graph is reachable again after {secs} s out of reach; the files that \
                         waited go on"
                    ),
                    Kind::Throttled => tracing::info!(
                        "Graph no longer throttles (it did for {secs} s); the files that waited \
                         go on"
                    ),
                }
            }
            false
        });
        if let Some((kind, why)) = started {
            if !self.episodes.iter().any(|e| e.kind == kind) {
                self.episodes.push(Episode {
                    kind,
                    since: Instant::now(),
                    entry: id.clone(),
                    why,
                    said: false,
                });
            }
        }
    }

    /// After the core took the batch: a wait not said yet is said, with when its first entry
    /// tries again (`until` of an entry, as the core set it).
    pub(super) fn say(&mut self, until: impl Fn(&str) -> Option<Time>) {
        for e in self.episodes.iter_mut().filter(|e| !e.said) {
            e.said = true;
            let when = until(&e.entry)
                .map(|t| format!("tries again at {}", clock_of(t)))
                .unwrap_or_else(|| "tries again after a pause".to_owned());
            match e.kind {
                Kind::Unreachable => tracing::warn!(
                    "Graph is unreachable ({}): files wait and nothing is lost; the first {when}, \
                     and the log says when it answers again",
                    e.why
                ),
                Kind::Throttled => tracing::warn!(
                    "throttled by Graph ({}): requests wait; the first {when}, and the log says \
                     when Graph no longer throttles",
                    e.why
                ),
            }
        }
    }
}

/// `HH:MM:SS UTC` of a core time (Unix ms).
fn clock_of(t: Time) -> String {
    let at = time::OffsetDateTime::UNIX_EPOCH
        + time::Duration::milliseconds(t.0.min(i64::MAX as u64) as i64);
    format!("{:02}:{:02}:{:02} UTC", at.hour(), at.minute(), at.second())
}
