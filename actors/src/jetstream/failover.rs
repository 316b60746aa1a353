//! Which endpoint the next dial goes to: a pure policy over how sessions ended, so it is
//! tested without sockets or clocks.
//!
//! Rules: a session that received events and ended ordinarily (server close, EOF, error
//! after progress) is healthy and clears the count; a session without events is a failure;
//! `failover_after` consecutive failures on one host move the reader to the next endpoint
//! (round robin). A silent host (idle timeout, with or without events before) is a failure
//! that moves the reader at once: it would only go silent again. Sessions ended on purpose
//! (pause, restart, getting past an oversized frame) count neither way. With one endpoint
//! the reader never moves; it redials with backoff.
//!
//! The first dial on the new host uses `jetstream.failover_rewind` (host clocks differ); the
//! caller applies it when [`Next::Move`] comes back.

/// How a session ended, as far as the endpoint choice cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    Healthy,
    Failed,
    Silent,
    Neutral,
}

/// What to do after a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Stay,
    Move { from: usize, to: usize },
}

/// The endpoint in use and the failures counted against it.
#[derive(Debug, Clone)]
pub struct Failover {
    endpoints: usize,
    after: u32,
    current: usize,
    /// The endpoint of the latest dial (status): `current` until a move, then the old one
    /// until the next dial.
    dialed: usize,
    failures_here: u32,
}

impl Failover {
    /// `endpoints`: how many there are (at least one is assumed); `after`: consecutive
    /// failures before moving (at least 1).
    pub fn new(endpoints: usize, after: u32) -> Failover {
        Failover {
            endpoints: endpoints.max(1),
            after: after.max(1),
            current: 0,
            dialed: 0,
            failures_here: 0,
        }
    }

    /// Index of the endpoint to dial.
    pub fn current(&self) -> usize {
        self.current
    }

    /// A dial goes out: to [`Failover::current`], which it returns.
    pub fn dial(&mut self) -> usize {
        self.dialed = self.current;
        self.current
    }

    /// Index of the endpoint of the latest dial (the first one before any dial).
    pub fn dialed(&self) -> usize {
        self.dialed
    }

    /// Consecutive failures on the current endpoint.
    pub fn failures_here(&self) -> u32 {
        self.failures_here
    }

    /// Records how a session on the current endpoint ended; says whether to move.
    pub fn record(&mut self, outcome: SessionOutcome) -> Next {
        match outcome {
            SessionOutcome::Neutral => return Next::Stay,
            SessionOutcome::Healthy => {
                self.failures_here = 0;
                return Next::Stay;
            }
            SessionOutcome::Failed | SessionOutcome::Silent => {
                self.failures_here = self.failures_here.saturating_add(1);
            }
        }
        let due = outcome == SessionOutcome::Silent || self.failures_here >= self.after;
        if self.endpoints < 2 || !due {
            return Next::Stay;
        }
        let from = self.current;
        self.current = (self.current + 1) % self.endpoints;
        self.failures_here = 0;
        Next::Move {
            from,
            to: self.current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SessionOutcome::*;
    use super::*;

    #[test]
    fn moves_after_n_consecutive_failures_round_robin() {
        let mut f = Failover::new(3, 3);
        assert_eq!(f.record(Failed), Next::Stay);
        assert_eq!(f.record(Failed), Next::Stay);
        assert_eq!(f.record(Failed), Next::Move { from: 0, to: 1 });
        assert_eq!((f.current(), f.failures_here()), (1, 0));
        for _ in 0..2 {
            f.record(Failed);
        }
        assert_eq!(f.record(Failed), Next::Move { from: 1, to: 2 });
        for _ in 0..2 {
            f.record(Failed);
        }
        assert_eq!(f.record(Failed), Next::Move { from: 2, to: 0 });
    }

    #[test]
    fn a_healthy_session_clears_the_count_and_neutral_ones_do_nothing() {
        let mut f = Failover::new(2, 3);
        f.record(Failed);
        f.record(Failed);
        assert_eq!(f.record(Healthy), Next::Stay);
        assert_eq!(f.failures_here(), 0);
        f.record(Failed);
        f.record(Neutral);
        f.record(Neutral);
        assert_eq!(f.failures_here(), 1);
        f.record(Failed);
        assert_eq!(f.record(Failed), Next::Move { from: 0, to: 1 });
    }

    #[test]
    fn a_silent_host_is_left_at_once() {
        let mut f = Failover::new(2, 5);
        assert_eq!(f.record(Silent), Next::Move { from: 0, to: 1 });
        assert_eq!(f.record(Silent), Next::Move { from: 1, to: 0 });
    }

    #[test]
    fn the_dialed_endpoint_changes_at_the_next_dial_not_at_the_move() {
        let mut f = Failover::new(2, 1);
        assert_eq!(f.dialed(), 0);
        assert_eq!(f.dial(), 0);
        assert_eq!(f.record(Failed), Next::Move { from: 0, to: 1 });
        assert_eq!((f.current(), f.dialed()), (1, 0));
        assert_eq!(f.dial(), 1);
        assert_eq!(f.dialed(), 1);
    }

    #[test]
    fn one_endpoint_never_moves_but_counts() {
        let mut f = Failover::new(1, 1);
        assert_eq!(f.record(Failed), Next::Stay);
        assert_eq!(f.record(Silent), Next::Stay);
        assert_eq!((f.current(), f.failures_here()), (0, 2));
    }
}
