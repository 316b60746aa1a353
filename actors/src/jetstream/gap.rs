//! Gap detection, pure: Jetstream silently clamps a cursor older than its retention to its
//! oldest event (and a host that missed events just starts later), so the only sign of lost
//! events is a first event much newer than the position asked for. The reader raises a `gap`
//! alarm (log, metric, status) when that distance passes `jetstream.gap_threshold`.
//!
//! The expected position is the dial cursor plus the rewind the reader subtracted from the
//! committed cursor: a host that lacks only the rewind overlap has lost nothing we need.
//! Limit: with narrow filters (a few DIDs or a rare collection) a quiet stretch looks the same
//! as a gap; raise the threshold, or set it to "0s" to turn the alarm off.

use std::time::Duration;

/// How far beyond the expected position the first event of a session lies, in µs, when
/// that is more than `threshold`; `None` otherwise, for live dials (no cursor) and when the
/// threshold is zero (alarm off).
pub fn detect_gap(
    requested: Option<u64>,
    rewind: Duration,
    first_event_us: u64,
    threshold: Duration,
) -> Option<u64> {
    let requested = requested?;
    if threshold.is_zero() {
        return None;
    }
    let expected = requested.saturating_add(micros(rewind));
    let gap = first_event_us.checked_sub(expected)?;
    (gap > micros(threshold)).then_some(gap)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;
    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_first_event_far_beyond_the_cursor_is_a_gap() {
        let c = 1_700_000_000 * S;
        assert_eq!(
            detect_gap(Some(c), Duration::ZERO, c + 3600 * S, MIN),
            Some(3600 * S)
        );
        assert_eq!(detect_gap(Some(c), Duration::ZERO, c + 60 * S, MIN), None);
        assert_eq!(
            detect_gap(Some(c), Duration::ZERO, c + 60 * S + 1, MIN),
            Some(60 * S + 1)
        );
    }

    #[test]
    fn the_rewind_is_not_a_gap() {
        let c = 1_700_000_000 * S;
        let rewind = Duration::from_secs(10);
        assert_eq!(detect_gap(Some(c), rewind, c + 70 * S, MIN), None);
        assert_eq!(detect_gap(Some(c), rewind, c + 71 * S, MIN), Some(61 * S));
    }

    #[test]
    fn live_dials_older_events_and_a_zero_threshold_raise_nothing() {
        assert_eq!(detect_gap(None, Duration::ZERO, u64::MAX, MIN), None);
        assert_eq!(detect_gap(Some(100 * S), Duration::ZERO, 5, MIN), None);
        assert_eq!(
            detect_gap(Some(0), Duration::ZERO, 1_000 * S, Duration::ZERO),
            None
        );
    }
}
