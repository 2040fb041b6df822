//! The agent's clock: wall-clock milliseconds that never go backward and never stand still.
//!
//! The machine's times are wall-clock times: they are written to the ledger, shown by `status`,
//! rendered into a letter's `{date}`, and compared with times of earlier runs. Two clocks are at
//! hand and each fails one way. The wall clock is stepped by NTP and by the user, backward too.
//! The monotonic clock never goes backward but stops while the machine sleeps (Linux's
//! `CLOCK_MONOTONIC`, Rust's `Instant`): wall time at start plus monotonic time since, after a
//! night's suspend, is a night behind, and a message mailed in the morning says yesterday's date.
//!
//! [`Logical`] takes both at every reading: it moves on by the monotonic time since its last
//! reading, and jumps forward to the wall clock when that is ahead (after a suspend, or a step
//! forward). A step of the wall clock backward is not followed: the time goes on from where it
//! was (ahead of the wall by the step, until the next jump). The agent reads it through
//! `agent::Clock`; the simulation reads it too, with a wall clock it steps and a monotonic
//! clock it stops (`sim.rs`: suspends and clock steps).

use crate::model::Time;

/// See the module's documentation.
#[derive(Debug, Clone, Default)]
pub struct Logical {
    /// The last time read, and the monotonic clock then (none before the first reading).
    last: Option<(u64, u64)>,
}

impl Logical {
    pub fn new() -> Logical {
        Logical::default()
    }

    /// The time now, from the wall clock (`wall`, ms since the Unix epoch) and a monotonic clock
    /// (`mono`, ms from any origin, stopped while the machine sleeps).
    pub fn read(&mut self, wall: u64, mono: u64) -> Time {
        let now = match self.last {
            None => wall,
            Some((t, m)) => t.saturating_add(mono.saturating_sub(m)).max(wall),
        };
        self.last = Some((now, mono));
        Time(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_follows_the_monotonic_clock_through_a_step_of_the_wall_clock_backward() {
        let mut c = Logical::new();
        assert_eq!(c.read(1_000_000, 0), Time(1_000_000));
        assert_eq!(c.read(1_000_500, 500), Time(1_000_500));
        // NTP steps the wall clock back by a minute: the time goes on, never backward.
        assert_eq!(c.read(940_600, 600), Time(1_000_600));
        assert_eq!(c.read(941_600, 1_600), Time(1_001_600));
    }

    #[test]
    fn it_jumps_to_the_wall_clock_after_a_suspend() {
        let mut c = Logical::new();
        c.read(1_000_000, 0);
        // Eight hours asleep: the monotonic clock stood still, the wall clock did not.
        let night = 8 * 3_600_000;
        assert_eq!(c.read(1_000_100 + night, 100), Time(1_000_100 + night));
        // And from there on by the monotonic clock.
        assert_eq!(c.read(1_000_200 + night, 200), Time(1_000_200 + night));
    }

    #[test]
    fn it_never_stands_still_and_never_goes_backward() {
        let mut c = Logical::new();
        let mut last = c.read(5_000, 10);
        // Any order of wall readings, a monotonic clock that only moves on.
        for (i, wall) in [4_000, 9_000, 1, 9_500, 9_400, 20_000, 0]
            .into_iter()
            .enumerate()
        {
            let mono = 10 + 100 * (i as u64 + 1);
            let now = c.read(wall, mono);
            assert!(now.0 >= last.0 + 100, "{now:?} after {last:?}");
            assert!(now.0 >= wall);
            last = now;
        }
    }
}
