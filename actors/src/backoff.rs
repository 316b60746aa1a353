//! Reconnect and retry policy: capped exponential growth with FULL jitter, reset after a
//! healthy session. Pure (the caller sleeps), so it is tested without clocks.
//!
//! The exponential schedule comes from `backon`; its own `with_jitter()` adds `U(0,1)×delay`
//! on top of the delay (so it is not full jitter and can exceed the cap, CRATES.md F7). Full
//! jitter draws uniformly in `[0, delay]`, which spreads a fleet of reconnecting clients.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::RngExt as _;

/// A capped exponential backoff with full jitter.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    schedule: ExponentialBackoff,
    attempts: u32,
}

impl Backoff {
    /// `min` is the first ceiling, doubled per attempt up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let max = max.max(min);
        Backoff {
            min,
            max,
            schedule: Self::schedule(min, max),
            attempts: 0,
        }
    }

    fn schedule(min: Duration, max: Duration) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times()
            .build()
    }

    /// The ceiling of the next delay, without jitter (what the jittered delay is drawn under).
    pub fn next_ceiling(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        self.schedule.next().unwrap_or(self.max).min(self.max)
    }

    /// The next delay: uniform in `[0, ceiling]`.
    pub fn next_delay(&mut self) -> Duration {
        full_jitter(self.next_ceiling())
    }

    /// Forget past failures (after a session that made progress).
    pub fn reset(&mut self) {
        self.schedule = Self::schedule(self.min, self.max);
        self.attempts = 0;
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// A delay drawn uniformly in `[0, ceiling]`.
pub fn full_jitter(ceiling: Duration) -> Duration {
    let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rand::rng().random_range(0..=micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_and_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let got: Vec<u128> = (0..6).map(|_| b.next_ceiling().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..5 {
            b.next_ceiling();
        }
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(80));
        let mut saw_small = false;
        for i in 0..400 {
            let d = b.next_delay();
            assert!(
                d <= Duration::from_millis(80),
                "attempt {i}: {d:?} above cap"
            );
            if i > 10 && d < Duration::from_millis(40) {
                saw_small = true;
            }
        }
        assert!(saw_small, "full jitter must reach below half the ceiling");
    }

    #[test]
    fn never_gives_up() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        for _ in 0..10_000 {
            b.next_delay();
        }
        assert_eq!(b.attempts(), 10_000);
    }
}
