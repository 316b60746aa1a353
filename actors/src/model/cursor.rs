//! Jetstream cursors are unix microseconds (`time_us`), one clock per host. This type keeps
//! the arithmetic (rewind, lag) in one tested place.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A Jetstream cursor: microseconds since the unix epoch on the serving host's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor(pub u64);

impl Cursor {
    /// The cursor moved back by `by`, never below zero.
    pub fn rewound(self, by: Duration) -> Cursor {
        let by_us = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        Cursor(self.0.saturating_sub(by_us))
    }

    /// How far this cursor is behind `now` (zero if it is in the future).
    pub fn lag_at(self, now: SystemTime) -> Duration {
        let now_us = now
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Duration::from_micros(now_us.saturating_sub(self.0))
    }

    /// The cursor for "now" on this machine's clock.
    pub fn now() -> Cursor {
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Cursor(us)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewind_saturates_and_subtracts_micros() {
        assert_eq!(
            Cursor(10_000_000).rewound(Duration::from_secs(5)),
            Cursor(5_000_000)
        );
        assert_eq!(Cursor(3).rewound(Duration::from_secs(5)), Cursor(0));
    }

    #[test]
    fn lag_is_zero_for_future_cursors() {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(Cursor(90_000_000).lag_at(now), Duration::from_secs(10));
        assert_eq!(Cursor(200_000_000).lag_at(now), Duration::ZERO);
    }
}
