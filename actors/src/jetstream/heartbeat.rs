//! Liveness of a session as a pure function of times (STYLE rule 7): when to ping, when to
//! declare the host dead. Any frame (event, ping, pong) counts as life.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Nothing to do before `next_check`.
    Alive { next_check: Instant },
    /// Send a ping now.
    SendPing,
    /// No frame for longer than the idle timeout: end the session.
    Dead,
}

#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
}

impl Heartbeat {
    /// `last_frame`: when anything last arrived; `last_ping`: when we last pinged (if since).
    pub fn check(&self, now: Instant, last_frame: Instant, last_ping: Option<Instant>) -> Liveness {
        let dead_at = last_frame + self.idle_timeout;
        if now >= dead_at {
            return Liveness::Dead;
        }
        let quiet_since = match last_ping {
            Some(p) if p > last_frame => p,
            _ => last_frame,
        };
        let ping_at = quiet_since + self.ping_interval;
        if now >= ping_at {
            return Liveness::SendPing;
        }
        Liveness::Alive {
            next_check: ping_at.min(dead_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: Heartbeat = Heartbeat {
        ping_interval: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(60),
    };

    #[test]
    fn pings_after_interval_then_again_after_another_interval() {
        let t0 = Instant::now();
        assert_eq!(
            HB.check(t0 + Duration::from_secs(5), t0, None),
            Liveness::Alive {
                next_check: t0 + Duration::from_secs(20)
            }
        );
        assert_eq!(
            HB.check(t0 + Duration::from_secs(20), t0, None),
            Liveness::SendPing
        );
        let pinged = t0 + Duration::from_secs(20);
        assert_eq!(
            HB.check(t0 + Duration::from_secs(21), t0, Some(pinged)),
            Liveness::Alive {
                next_check: t0 + Duration::from_secs(40)
            }
        );
        assert_eq!(
            HB.check(t0 + Duration::from_secs(40), t0, Some(pinged)),
            Liveness::SendPing
        );
    }

    #[test]
    fn dead_after_idle_timeout_even_with_pings() {
        let t0 = Instant::now();
        let pinged = t0 + Duration::from_secs(40);
        assert_eq!(
            HB.check(t0 + Duration::from_secs(60), t0, Some(pinged)),
            Liveness::Dead
        );
        assert_eq!(
            HB.check(t0 + Duration::from_secs(59), t0, Some(pinged)),
            Liveness::Alive {
                next_check: t0 + Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn a_frame_resets_everything() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(50);
        assert!(matches!(
            HB.check(
                later + Duration::from_secs(1),
                later,
                Some(t0 + Duration::from_secs(20))
            ),
            Liveness::Alive { .. }
        ));
    }
}
