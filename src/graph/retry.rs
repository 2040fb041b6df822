//! The one retry policy: `Retry-After` when the server gives one, else exponential backoff with
//! full jitter, bounded in attempts and in delay.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts of one request, the first included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    /// A server asking for more than this is not waited for within one call.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1` after failed attempt `attempt` (1-based), or `None` when
    /// attempts are used up.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        if let Some(ra) = retry_after {
            // A little jitter on top so that four workers told "1" do not return in lock-step.
            return Some(ra.min(self.max_retry_after) + jitter(Duration::from_millis(250)));
        }
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        Some(jitter(exp.min(self.cap)).max(Duration::from_millis(50)))
    }
}

/// Uniform in `[0, max]` ("full jitter").
fn jitter(max: Duration) -> Duration {
    use rand::Rng;
    let ms = max.as_millis().min(u64::MAX as u128) as u64;
    Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(p.delay(3, None).is_none());
        let d = p.delay(1, Some(Duration::from_secs(2))).unwrap_or_default();
        assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2250));
        for attempt in 1..3 {
            let d = p.delay(attempt, None).unwrap_or_default();
            assert!(d <= p.cap);
        }
        let huge = RetryPolicy::default()
            .delay(1, Some(Duration::from_secs(99_999)))
            .unwrap_or_default();
        assert!(huge <= Duration::from_secs(601));
    }
}
