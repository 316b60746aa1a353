//! The reader's state that outlives a session and a restart of the actor ([`Shared`]):
//! cursors (committed, line, host, explicit), session numbers, backoff, endpoint choice,
//! filters, counters for status. The actor's handlers and the read loop run on the same
//! thread and share it through an `Rc`; the actor's handlers change the cursors (commits,
//! restarts, rollbacks), the read loop and its session read them and count.
//!
//! Also the read loop's control channel value ([`Control`]).

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::dial::HostProgress;
use super::failover::Failover;
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

/// State shared between the actor's handlers and its read loop (same thread), kept across
/// restarts of the actor.
pub(super) struct Shared {
    /// The newest cursor ever committed (status; never moves back but for a rollback).
    pub committed: Cell<Option<u64>>,
    /// The newest cursor committed from sessions since the last explicit start (the stored
    /// cursor at start, a `Restart { from_cursor }`, a rollback): dials resume from it, so a
    /// requested replay of older events goes on to its end after reconnects.
    pub line_committed: Cell<Option<u64>>,
    pub line_since_session: Cell<u64>,
    /// The line is a replay behind the stored cursor: its batches say so, and their commits
    /// keep its progress in Redis (`cursor:replay`) until it catches up.
    pub line_replay: Cell<bool>,
    /// Where this process started reading: the stored or asked cursor, else the first event
    /// it received. A rollback of Redis to nothing resumes from here.
    pub origin: Cell<Option<u64>>,
    /// Next dial starts exactly here instead of from the committed cursor.
    pub dial_override: Cell<Option<u64>>,
    pub next_session: Cell<u64>,
    pub current_session: Cell<u64>,
    pub backoff: RefCell<Backoff>,
    pub counters: RefCell<Counters>,
    pub state: watch::Sender<ReaderState>,
    /// The endpoint choice, and the endpoint of the latest dial (status).
    pub failover: RefCell<Failover>,
    /// What has been committed from the current endpoint, in its clock: dials start from it
    /// (`dial.rs`).
    pub host: Cell<HostProgress>,
    /// The reader moved to another endpoint (or started from a stored cursor with several
    /// endpoints configured) and nothing from it is committed yet: its dials start from the
    /// committed cursor minus `failover_rewind` (another clock).
    pub failover_pending: Cell<bool>,
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

    /// Whether a batch of `session` belongs to a replay behind the stored cursor.
    pub fn replaying(&self, session: u64) -> bool {
        self.line_replay.get() && session >= self.line_since_session.get()
    }

    /// The next dial may go to another host (another clock): what was committed from the
    /// current one no longer places the dial; sessions from `since` on count anew.
    pub fn forget_host(&self, since: u64) {
        let mut host = self.host.get();
        host.forget(since);
        self.host.set(host);
    }

    pub fn note_host_commit(&self, session: u64, cursor: u64) {
        let mut host = self.host.get();
        host.note_commit(session, cursor);
        self.host.set(host);
    }
}
