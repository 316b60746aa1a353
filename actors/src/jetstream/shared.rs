//! The reader's state that outlives a session and a restart of the actor ([`Shared`]):
//! cursors (`cursors.rs`), session numbers, backoff, endpoint choice,
//! filters, counters for status. The actor's handlers and the read loop run on the same
//! thread and share it through an `Rc`; the actor's handlers change the cursors (commits,
//! restarts, rollbacks), the read loop and its session read them and count.
//!
//! Also the read loop's control channel value ([`Control`]).

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::cursors::Cursors;
use super::failover::{Failover, SessionOutcome};
use super::subscribe::Filters;
use crate::backoff::Backoff;
use crate::messages::{FailoverNote, GapAlarm, ReaderState};

/// What the actor asks of its read loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Control {
    Run,
    Pause,
    Drain,
}

#[derive(Default)]
pub(super) struct Counters {
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub events_received: u64,
    pub dead_letters: u64,
    pub batches_committed: u64,
    pub sessions_started: u64,
    pub backoff_ceiling: Duration,
    pub failovers: u64,
    /// When a frame was last taken (not dropped as older than the dial cursor).
    pub last_frame_at: Option<std::time::Instant>,
    /// When an event last moved the position.
    pub last_advance_at: Option<std::time::Instant>,
    pub gaps: u64,
    pub last_gap: Option<GapAlarm>,
    pub last_failover: Option<FailoverNote>,
}

impl Counters {
    /// A session ended with `outcome`: a healthy one (events, not silent) clears the
    /// consecutive failures, a failed or silent one adds one; its error is kept. Returns
    /// whether it was healthy (the backoff resets).
    pub fn session_ended(
        &mut self,
        progressed: bool,
        outcome: SessionOutcome,
        error: Option<&String>,
    ) -> bool {
        let healthy = progressed && outcome != SessionOutcome::Silent;
        if healthy {
            self.consecutive_failures = 0;
        }
        if matches!(outcome, SessionOutcome::Failed | SessionOutcome::Silent) {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        }
        if let Some(e) = error {
            self.last_error = Some(e.clone());
        }
        healthy
    }
}

/// State shared between the actor's handlers and its read loop (same thread), kept across
/// restarts of the actor.
pub(super) struct Shared {
    /// Every cursor kept, moved by one method per event (`cursors.rs`).
    pub cursors: Cell<Cursors>,
    pub next_session: Cell<u64>,
    pub current_session: Cell<u64>,
    pub backoff: RefCell<Backoff>,
    pub counters: RefCell<Counters>,
    pub state: watch::Sender<ReaderState>,
    /// The endpoint choice, and the endpoint of the latest dial (status).
    pub failover: RefCell<Failover>,
    /// The filters of every dial, and of `options_update`s on the live socket when changed.
    pub filters: watch::Sender<Arc<Filters>>,
    /// The last oversized frame got past: (endpoint index, where it was met, cursor past
    /// it), so meeting it again after a rewind goes straight past without a new dead letter.
    pub skipped: Cell<Option<(usize, u64, u64)>>,
}

impl Shared {
    pub fn set_state(&self, s: ReaderState) {
        self.state.send_replace(s);
    }

    pub fn cursors(&self) -> Cursors {
        self.cursors.get()
    }

    /// Moves the cursors (one `Cursors` method), returning what it returns.
    pub fn update_cursors<R>(&self, change: impl FnOnce(&mut Cursors) -> R) -> R {
        let mut cursors = self.cursors.get();
        let out = change(&mut cursors);
        self.cursors.set(cursors);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::SessionOutcome::*;
    use super::*;

    #[test]
    fn session_ends_count_consecutive_failures_and_keep_the_last_error() {
        let mut c = Counters::default();
        let refused = "refused".to_owned();
        assert!(!c.session_ended(false, Failed, Some(&refused)));
        assert!(!c.session_ended(false, Failed, None));
        assert_eq!(c.consecutive_failures, 2);
        assert!(
            !c.session_ended(false, Neutral, None),
            "neutral counts neither way"
        );
        assert_eq!(c.consecutive_failures, 2);
        assert!(
            !c.session_ended(true, Silent, None),
            "events, then silence: not healthy"
        );
        assert_eq!(c.consecutive_failures, 3);
        assert!(c.session_ended(true, Healthy, None));
        assert_eq!(c.consecutive_failures, 0);
        assert!(
            c.session_ended(true, Neutral, None),
            "a stop after events resets the backoff"
        );
        assert_eq!(c.last_error.as_deref(), Some("refused"));
    }
}
