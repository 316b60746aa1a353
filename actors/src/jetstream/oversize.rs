//! Getting past a frame the WebSocket layer refused because it is bigger than
//! `jetstream.max_frame_bytes`. Pure state machine; the read loop dials what it says.
//!
//! The problem: tungstenite reads the frame header, sees the length, and fails with
//! `Capacity(MessageTooLong)` without reading the payload (so nothing is allocated), which
//! also ends the connection. We never learn the frame's `time_us`, and a plain redial from
//! the committed cursor (minus the rewind) meets the same frame again: forever.
//!
//! What we do know: Jetstream serves events in `time_us` order, so the refused frame is the
//! first one at or after `lo` = (time_us of the last event received before it) + 1 µs, or at
//! or after the dial cursor when nothing came before it. Then:
//! 1. Ask the host: dial `lo` exactly with `maxMessageSizeBytes = max_frame_bytes` (a
//!    documented Jetstream option: it skips bigger messages for this subscriber). The first
//!    event that arrives is past the frame; the reader lifts the cap again at once with an
//!    `options_update`, so later big frames are refused (and dead-lettered) rather than
//!    skipped silently by the host.
//! 2. If the host ignores the option (the frame comes first again), find the frame's
//!    position by probing: a dial at cursor `c` gets the frame first if `c <= T` (its time)
//!    and a normal event first if `c > T`. Probes go forward from `lo` with doubling steps
//!    until one passes, then bisect down to `T + 1`, which is dialed for real. Probe sessions
//!    end after their first frame and push nothing; at most ~2×64 dials, no backoff between.
//!
//! Limits: events sharing the refused frame's exact `time_us` are skipped with it (step 2),
//! and during the short capped window of step 1 the host may skip other big frames without
//! telling us. A live dial (no cursor at all) cannot be positioned: it just redials live.

/// Where the next dial of a skip goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkipDial {
    pub cursor: Option<u64>,
    /// Send `maxMessageSizeBytes` (lifted after the first event).
    pub cap: bool,
    /// End the session at its first frame, pushing nothing: only the position is wanted.
    pub probe: bool,
}

/// What a skip dial found first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The oversized frame again, before any event.
    Refused,
    /// A normal frame with a `time_us`.
    Passed,
}

/// One skip in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OversizeSkip {
    /// Where the refused frame was met (`lo` at the start), to recognise it next time.
    origin: Option<u64>,
    /// Highest cursor known to deliver the refused frame first.
    lo: Option<u64>,
    /// Lowest probed cursor known to get past it.
    hi: Option<u64>,
    /// The host ignored `maxMessageSizeBytes`: probing.
    bisect: bool,
    /// Distance of the next forward probe from `lo` while `hi` is unknown.
    step: u64,
    dials: u32,
}

impl OversizeSkip {
    /// A skip for a frame refused after the event at `last_time` (if the session had one)
    /// on a dial at `dial_cursor`.
    pub fn new(last_time: Option<u64>, dial_cursor: Option<u64>) -> OversizeSkip {
        let lo = match last_time {
            Some(t) => Some(t.saturating_add(1)),
            None => dial_cursor,
        };
        OversizeSkip {
            origin: lo,
            lo,
            hi: None,
            bisect: false,
            step: 1,
            dials: 0,
        }
    }

    /// Where the frame was met: the same value for the same frame reached from any earlier
    /// position (the last event before it does not change).
    pub fn origin(&self) -> Option<u64> {
        self.origin
    }

    /// Dials made so far for this skip.
    pub fn dials(&self) -> u32 {
        self.dials
    }

    /// Whether the next dial may go out without the reconnect backoff: positioned dials are
    /// bounded in number; live re-dials are not, so they take the normal backoff.
    pub fn urgent(&self) -> bool {
        self.lo.is_some()
    }

    /// The next dial.
    pub fn next_dial(&mut self) -> SkipDial {
        self.dials = self.dials.saturating_add(1);
        let Some(lo) = self.lo.filter(|_| self.bisect) else {
            return SkipDial {
                cursor: self.lo,
                cap: true,
                probe: false,
            };
        };
        let cursor = match self.hi {
            Some(hi) if hi <= lo.saturating_add(1) => hi,
            Some(hi) => lo + (hi - lo) / 2,
            None => lo.saturating_add(self.step),
        };
        // A dial right after a known-refusing cursor that passes has found the exact spot:
        // it is a real session, not a probe.
        SkipDial {
            cursor: Some(cursor),
            cap: false,
            probe: cursor != lo.saturating_add(1) && Some(cursor) != self.hi,
        }
    }

    /// Records what `dial` found. Returns true when the skip is over: a real (non-probe)
    /// session got past the frame and goes on streaming.
    pub fn observe(&mut self, dial: SkipDial, found: Probe) -> bool {
        match found {
            Probe::Passed if !dial.probe => true,
            Probe::Passed => {
                self.hi = match (self.hi, dial.cursor) {
                    (Some(h), Some(c)) => Some(h.min(c)),
                    (h, c) => c.or(h),
                };
                false
            }
            Probe::Refused => {
                if !self.bisect {
                    // Step 1 failed: the host does not honour maxMessageSizeBytes.
                    self.bisect = self.lo.is_some();
                    return false;
                }
                if let (Some(lo), Some(c)) = (self.lo, dial.cursor) {
                    self.lo = Some(lo.max(c));
                }
                if self.hi.is_none() {
                    self.step = self.step.saturating_mul(2);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that ignores maxMessageSizeBytes, with events at `times` and the refused frame
    /// at `frame`: what does a dial at `cursor` see first?
    fn host(times: &[u64], frame: u64, cursor: u64) -> Probe {
        let first = times.iter().copied().filter(|t| *t >= cursor).min();
        match first {
            Some(t) if t < frame => Probe::Passed,
            _ if cursor <= frame => Probe::Refused,
            _ => Probe::Passed,
        }
    }

    #[test]
    fn a_host_honouring_the_cap_takes_one_dial() {
        let mut s = OversizeSkip::new(Some(1_000), Some(10));
        let d = s.next_dial();
        assert_eq!(
            d,
            SkipDial {
                cursor: Some(1_001),
                cap: true,
                probe: false
            }
        );
        assert!(s.observe(d, Probe::Passed));
        assert_eq!((s.origin(), s.dials()), (Some(1_001), 1));
    }

    #[test]
    fn probing_finds_exactly_the_cursor_after_the_frame() {
        for (last, frame) in [
            (1_000, 1_001),
            (1_000, 1_002),
            (1_000, 1_777),
            (5, 90_000_005),
        ] {
            let times: Vec<u64> = [last, frame + 1, frame + 2, frame + 1_000]
                .into_iter()
                .filter(|t| *t != frame)
                .collect();
            let mut s = OversizeSkip::new(Some(last), None);
            let mut resumed = None;
            for _ in 0..200 {
                let d = s.next_dial();
                let c = d.cursor.expect("positioned");
                let found = if d.cap {
                    Probe::Refused
                } else {
                    host(&times, frame, c)
                };
                if s.observe(d, found) {
                    resumed = Some(c);
                    break;
                }
            }
            assert_eq!(resumed, Some(frame + 1), "frame at {frame}");
            assert!(s.dials() <= 2 + 2 * 64, "{} dials", s.dials());
        }
    }

    #[test]
    fn a_frame_first_in_its_session_starts_from_the_dial_cursor() {
        let mut s = OversizeSkip::new(None, Some(500));
        assert_eq!(s.origin(), Some(500));
        assert_eq!(s.next_dial().cursor, Some(500));
        let mut live = OversizeSkip::new(None, None);
        assert!(!live.urgent());
        let d = live.next_dial();
        assert_eq!((d.cursor, d.cap), (None, true));
        assert!(!live.observe(d, Probe::Refused));
        assert_eq!(live.next_dial().cursor, None, "live stays live");
    }
}
