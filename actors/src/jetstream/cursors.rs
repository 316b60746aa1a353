//! Every cursor the reader keeps, and how each event moves them ([`Cursors`]): a start, a
//! commit, a restart, a rollback, a move to another host, the first event of a session, a
//! known oversized frame. Pure (no clock, no socket, no actor), so the rules are tested
//! here; the actor and its read loop call one method per event and dial from
//! [`Cursors::facts`] (`dial.rs`).
//!
//! The cursors: the newest ever committed (status); the "line", the newest committed since
//! the last explicit start (the stored cursor at start, a `Restart { from_cursor }`, a
//! rollback), which dials resume from, so a requested replay of older events goes on to its
//! end after reconnects; what the current host committed, in its clock ([`HostProgress`]);
//! an explicit cursor not used up yet; where this process started reading.

use super::dial::{CursorFacts, HostProgress};
use super::oversize::SkipDial;

/// Where the first dial starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartCursor {
    /// Redis holds this committed cursor: dial from it minus the rewind.
    Committed(u64),
    /// Dial from exactly this cursor (config `initial_cursor`, `--cursor`, `replay --from`).
    Exact(u64),
    /// Nothing stored, nothing asked: live tail.
    Live,
    /// Redis holds `committed`, and an unfinished replay (`Restart { from_cursor }` into the
    /// past) had reached `line`: the replay goes on from there, minus the rewind.
    Replay { line: u64, committed: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cursors {
    /// The newest cursor ever committed (status; never moves back but for a rollback).
    pub committed: Option<u64>,
    /// The newest cursor committed from sessions of the line (numbered from
    /// `line_since_session`).
    pub line: Option<u64>,
    pub line_since_session: u64,
    /// The line is a replay behind the stored cursor: its batches say so, and their commits
    /// keep its progress in Redis (`cursor:replay`) until it catches up.
    pub line_replay: bool,
    /// Where this process started reading: the stored or asked cursor, else the first event
    /// it received. A rollback of Redis to nothing resumes from here.
    pub origin: Option<u64>,
    /// Next dial starts exactly here instead of from the committed cursor; kept until a
    /// session makes progress.
    pub dial_override: Option<u64>,
    pub host: HostProgress,
    /// The reader moved to another endpoint (or started from a stored cursor with several
    /// endpoints configured): until the host commits, dials start from the line minus
    /// `failover_rewind` (another clock).
    pub failover_pending: bool,
}

impl Cursors {
    /// At start, with `endpoints` configured.
    pub fn start(start: StartCursor, endpoints: usize) -> Cursors {
        let (committed, dial_override) = match start {
            StartCursor::Committed(c) | StartCursor::Replay { committed: c, .. } => (Some(c), None),
            StartCursor::Exact(c) => (None, Some(c)),
            StartCursor::Live => (None, None),
        };
        // An explicit start may lie behind the stored cursor: its batches say they are a
        // replay, so their commits keep its progress (and drop it once it catches up).
        let (line, line_replay) = match start {
            StartCursor::Replay { line, .. } => (Some(line), true),
            StartCursor::Exact(_) => (None, true),
            _ => (committed, false),
        };
        Cursors {
            committed,
            line,
            line_since_session: 0,
            line_replay,
            origin: line.or(dial_override),
            dial_override,
            host: HostProgress::default(),
            // The stored cursor says nothing of which host stamped it: with several
            // endpoints it may be in another host's clock, so the first dials treat it
            // like a failover's (rewound by `failover_rewind`) until this host commits.
            failover_pending: endpoints > 1
                && matches!(
                    start,
                    StartCursor::Committed(_) | StartCursor::Replay { .. }
                ),
        }
    }

    /// A batch of `session` committed up to `cursor`. Returns the newest cursor committed.
    pub fn note_commit(&mut self, session: u64, cursor: u64) -> u64 {
        let newest = self.committed.map_or(cursor, |old| old.max(cursor));
        self.committed = Some(newest);
        if session >= self.line_since_session {
            self.line = Some(self.line.map_or(cursor, |old| old.max(cursor)));
        }
        self.host.note_commit(session, cursor);
        newest
    }

    /// `Restart { from_cursor }`; `next_session` is the number of the next session.
    pub fn restart(&mut self, from_cursor: Option<u64>, next_session: u64) {
        if let Some(c) = from_cursor {
            // A new line: later dials resume from what this replay commits, not from the
            // newest cursor ever committed.
            self.dial_override = Some(c);
            self.line = None;
            self.line_replay = true;
            self.line_since_session = next_session;
            self.host.forget(next_session);
        }
        if from_cursor.is_none() && self.line.is_some() {
            // "From the committed cursor": an explicit cursor not yet used up (a dial that
            // received nothing at or after it, e.g. one in the future) is dropped.
            self.dial_override = None;
        }
    }

    /// After a Redis rollback to `stored` (with the replay progress Redis holds): forget
    /// every cursor committed since and dial from what Redis holds, as at start; from where
    /// this process started when Redis holds nothing. Returns the replay cursor kept (only
    /// one behind the stored cursor is a replay).
    pub fn rewind_to(
        &mut self,
        stored: Option<u64>,
        replay: Option<u64>,
        next_session: u64,
        endpoints: usize,
    ) -> Option<u64> {
        let replay = replay.filter(|r| stored.is_some_and(|c| *r < c));
        match stored {
            Some(_) => {
                self.dial_override = None;
                self.failover_pending = endpoints > 1;
            }
            None => self.dial_override = self.origin,
        }
        self.committed = stored;
        self.line = replay.or(stored);
        self.line_replay = replay.is_some();
        self.line_since_session = next_session;
        self.host.forget(next_session);
        replay
    }

    /// The failover policy moved the reader to another host (another clock).
    pub fn moved_host(&mut self, next_session: u64) {
        self.failover_pending = true;
        self.host.forget(next_session);
    }

    /// The first event of a session, at `time`: an explicit start cursor is used up (what is
    /// read from now on is committed before the next dial, which starts from the committed
    /// cursor), and the process has an origin.
    pub fn event_received(&mut self, time: u64) {
        self.dial_override = None;
        if self.origin.is_none() {
            self.origin = Some(time);
        }
    }

    /// An oversized frame skipped before was met again: the next dial goes straight past.
    pub fn resume_past(&mut self, resume: u64) {
        self.dial_override = Some(resume);
    }

    /// Whether a batch of `session` belongs to a replay behind the stored cursor.
    pub fn replaying(&self, session: u64) -> bool {
        self.line_replay && session >= self.line_since_session
    }

    /// What the next dial is chosen from, with the next dial of a skip in progress.
    pub fn facts(&self, skip: Option<SkipDial>) -> CursorFacts {
        CursorFacts {
            skip,
            dial_override: self.dial_override,
            host_committed: self.host.committed,
            host_reached: self.host.reached,
            host_disordered: self.host.disordered_session,
            line_committed: self.line,
            failover_pending: self.failover_pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_cursor_starts_the_line_and_is_another_clock_with_several_endpoints() {
        let k = Cursors::start(StartCursor::Committed(100), 2);
        assert_eq!(
            (k.committed, k.line, k.origin),
            (Some(100), Some(100), Some(100))
        );
        assert_eq!((k.dial_override, k.line_replay), (None, false));
        assert!(k.failover_pending);
        assert!(!Cursors::start(StartCursor::Committed(100), 1).failover_pending);
    }

    #[test]
    fn an_exact_start_is_a_replay_dialed_exactly_until_an_event_arrives() {
        let mut k = Cursors::start(StartCursor::Exact(50), 3);
        assert_eq!((k.committed, k.line, k.origin), (None, None, Some(50)));
        assert_eq!(k.dial_override, Some(50));
        assert!(k.line_replay && !k.failover_pending);
        assert!(k.replaying(0));
        k.event_received(60);
        assert_eq!((k.dial_override, k.origin), (None, Some(50)));
    }

    #[test]
    fn an_unfinished_replay_goes_on_from_its_line() {
        let k = Cursors::start(
            StartCursor::Replay {
                line: 40,
                committed: 100,
            },
            2,
        );
        assert_eq!(
            (k.committed, k.line, k.origin),
            (Some(100), Some(40), Some(40))
        );
        assert!(k.line_replay && k.failover_pending);
    }

    #[test]
    fn live_has_nothing_until_the_first_event_names_the_origin() {
        let mut k = Cursors::start(StartCursor::Live, 1);
        assert_eq!(k.facts(None), CursorFacts::default());
        k.event_received(70);
        k.event_received(80);
        assert_eq!(k.origin, Some(70));
    }

    #[test]
    fn a_commit_moves_the_newest_the_line_of_its_session_and_the_host() {
        let mut k = Cursors::start(StartCursor::Committed(100), 1);
        assert_eq!(k.note_commit(1, 120), 120);
        assert_eq!(k.note_commit(1, 110), 120, "never moves back");
        assert_eq!((k.line, k.host.committed), (Some(120), Some(120)));
        k.restart(Some(10), 5);
        assert_eq!(
            k.note_commit(4, 130),
            130,
            "an old session still counts as newest"
        );
        assert_eq!((k.line, k.host.committed), (None, None));
        k.note_commit(5, 20);
        assert_eq!(
            (k.committed, k.line, k.host.committed),
            (Some(130), Some(20), Some(20))
        );
    }

    #[test]
    fn a_restart_from_a_cursor_opens_a_replay_line() {
        let mut k = Cursors::start(StartCursor::Committed(100), 1);
        k.note_commit(1, 120);
        k.restart(Some(10), 3);
        assert_eq!(k.dial_override, Some(10));
        assert_eq!(
            (k.line, k.line_since_session, k.line_replay),
            (None, 3, true)
        );
        assert_eq!(
            k.host,
            HostProgress {
                committed: None,
                since_session: 3,
                reached: None,
                disordered_session: None
            }
        );
        assert!(!k.replaying(2) && k.replaying(3));
        assert_eq!(k.committed, Some(120), "the newest stays for status");
    }

    #[test]
    fn a_restart_without_a_cursor_drops_an_unused_explicit_cursor_only_with_a_line() {
        let mut k = Cursors::start(StartCursor::Exact(50), 1);
        k.restart(None, 2);
        assert_eq!(
            k.dial_override,
            Some(50),
            "no line: the explicit cursor is all there is"
        );
        k.note_commit(2, 60);
        k.resume_past(70);
        k.restart(None, 3);
        assert_eq!(k.dial_override, None);
    }

    #[test]
    fn a_rollback_dials_from_what_redis_holds_or_from_the_origin() {
        let mut k = Cursors::start(StartCursor::Committed(100), 2);
        k.moved_host(1);
        k.note_commit(1, 150);
        k.failover_pending = false;
        assert_eq!(k.rewind_to(Some(90), Some(80), 4, 2), Some(80));
        assert_eq!(
            (k.committed, k.line, k.line_replay),
            (Some(90), Some(80), true)
        );
        assert_eq!((k.line_since_session, k.host.committed), (4, None));
        assert!(k.failover_pending && k.dial_override.is_none());

        assert_eq!(
            k.rewind_to(Some(90), Some(95), 5, 1),
            None,
            "not behind: no replay"
        );
        assert_eq!(
            (k.line, k.line_replay, k.failover_pending),
            (Some(90), false, false)
        );

        assert_eq!(k.rewind_to(None, Some(10), 6, 2), None);
        assert_eq!(
            (k.committed, k.line, k.dial_override),
            (None, None, Some(100))
        );
    }

    #[test]
    fn a_move_to_another_host_forgets_the_host_and_rewinds_by_the_failover_rewind() {
        let mut k = Cursors::start(StartCursor::Committed(100), 2);
        k.failover_pending = false;
        k.note_commit(1, 110);
        k.moved_host(2);
        let facts = k.facts(None);
        assert_eq!(facts.host_committed, None);
        assert_eq!(facts.line_committed, Some(110));
        assert!(facts.failover_pending);
    }
}
