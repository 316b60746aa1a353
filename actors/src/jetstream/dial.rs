//! Where the next dial starts: a pure function of what is known about cursors
//! ([`choose_dial`]), and what the current host has committed ([`HostProgress`]), so both
//! are tested without sockets or clocks. The read loop gathers the facts, calls
//! [`choose_dial`] and dials what it says.
//!
//! Cursor of a dial, first match wins:
//! 1. a skip in progress (positions computed by `oversize.rs`), exactly;
//! 2. an explicit cursor (`Restart { from_cursor }`, `--cursor`, replay), exactly: kept until
//!    a session from it receives events, so a failed first dial (or a failover) does not
//!    fall back to the live tail and skip everything from the asked cursor;
//! 3. the newest cursor committed from the current host minus `rewind`, in that host's clock
//!    (see [`HostProgress`]). The rewind covers events a live host sent out of time order
//!    just before the disconnect. Except after a latest session that did not get past the
//!    cursor of its dial: it read the host's stored events (sorted by time) from its dial up
//!    to where it got, all of it committed, so the next dial starts no earlier than where it
//!    got, minus one µs for events sharing that time. Without that floor, sessions each
//!    shorter than the rewind redialed from the same place forever;
//! 4. the newest cursor committed since the last explicit start (the line) minus `rewind`,
//!    or minus `failover_rewind` right after a move to another host (the clocks differ);
//! 5. live, when nothing is committed.
//!
//! Failure: none; the function is total (cursors saturate at zero).

use std::time::Duration;

use super::oversize::SkipDial;
use crate::model::Cursor;

/// One dial, as decided before it happens.
#[derive(Debug, Clone)]
pub(super) struct Dial {
    pub endpoint: String,
    pub endpoint_index: usize,
    pub cursor: Option<u64>,
    /// Rewind subtracted from the committed cursor to get `cursor` (zero for exact dials).
    pub rewind: Duration,
    /// Part of getting past an oversized frame.
    pub skip: Option<SkipDial>,
}

impl Dial {
    /// Ask the host to skip messages above `max_frame_bytes` (lifted after the first event).
    pub fn cap(&self) -> bool {
        self.skip.is_some_and(|s| s.cap)
    }

    /// End at the first frame, pushing nothing.
    pub fn probe(&self) -> bool {
        self.skip.is_some_and(|s| s.probe)
    }
}

/// The latest session of the current host that committed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostReached {
    pub session: u64,
    /// The newest cursor committed from it.
    pub cursor: u64,
    /// The host's committed cursor when it was dialed (what it was dialed from, rewind
    /// aside).
    pub at_dial: Option<u64>,
}

/// What has been committed from the current endpoint, in that host's clock. Dials start from
/// it: after a move to a host whose clock is behind, the global committed cursor (a maximum,
/// in the old host's clock) stays ahead of everything the new host sends until its clock
/// catches up, and a redial from it would skip events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostProgress {
    /// The newest cursor committed from batches of sessions numbered from `since_session`.
    pub committed: Option<u64>,
    pub since_session: u64,
    /// See [`HostReached`] and rule 3 of the module doc.
    pub reached: Option<HostReached>,
    /// The latest session of this host that sent times out of order: its progress is no
    /// floor (its tail may hide older events still to come).
    pub disordered_session: Option<u64>,
}

impl HostProgress {
    /// The next dial may go to another host (another clock): what was committed from the
    /// current one no longer places the dial; sessions from `since` on count anew.
    pub fn forget(&mut self, since: u64) {
        self.committed = None;
        self.reached = None;
        self.disordered_session = None;
        self.since_session = since;
    }

    /// `session` ended; it sent times out of order or not.
    pub fn note_order(&mut self, session: u64, disordered: bool) {
        if disordered && session >= self.since_session {
            self.disordered_session = Some(session);
        }
    }

    /// A batch of `session` committed up to `cursor`.
    pub fn note_commit(&mut self, session: u64, cursor: u64) {
        if session < self.since_session {
            return;
        }
        let before = self.committed;
        self.committed = Some(before.map_or(cursor, |old| old.max(cursor)));
        let reached = match self.reached {
            Some(r) if r.session == session => Some(HostReached {
                cursor: r.cursor.max(cursor),
                ..r
            }),
            Some(r) if r.session > session => None,
            // The first commit of a newer session: all earlier ones are in (the loop waits
            // for them before dialing), so `before` is what the session was dialed from.
            _ => Some(HostReached {
                session,
                cursor,
                at_dial: before,
            }),
        };
        if let Some(r) = reached {
            self.reached = Some(r);
        }
    }
}

/// The cursor facts a dial is chosen from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CursorFacts {
    /// The next dial of a skip in progress.
    pub skip: Option<SkipDial>,
    /// An explicit cursor not used up yet.
    pub dial_override: Option<u64>,
    pub host_committed: Option<u64>,
    pub host_reached: Option<HostReached>,
    /// The latest session of this host that sent times out of order.
    pub host_disordered: Option<u64>,
    /// The newest cursor committed since the last explicit start.
    pub line_committed: Option<u64>,
    /// Moved to another host (or started from a stored cursor with several endpoints) and
    /// nothing from it is committed yet.
    pub failover_pending: bool,
}

/// The configured rewinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewinds {
    /// `jetstream.rewind`.
    pub rewind: Duration,
    /// `jetstream.failover_rewind`, never below `rewind` (`effective_failover_rewind`).
    pub failover_rewind: Duration,
}

/// Where a dial starts: `None` is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialCursor {
    pub cursor: Option<u64>,
    /// How far `cursor` lies before the committed cursor it came from (zero for exact
    /// dials and live).
    pub rewind: Duration,
}

/// The cursor of the next dial (module doc: first match wins).
pub fn choose_dial(facts: &CursorFacts, rewinds: &Rewinds) -> DialCursor {
    let exact = |cursor| DialCursor {
        cursor,
        rewind: Duration::ZERO,
    };
    if let Some(skip) = facts.skip {
        return exact(skip.cursor);
    }
    if let Some(c) = facts.dial_override {
        return exact(Some(c));
    }
    if let Some(c) = facts.host_committed {
        let rewound = Cursor(c).rewound(rewinds.rewind).0;
        let from = match facts.host_reached {
            Some(HostReached {
                session,
                cursor: reached,
                at_dial: Some(at_dial),
            }) if reached <= at_dial && facts.host_disordered != Some(session) => {
                rewound.max(reached.saturating_sub(1))
            }
            _ => rewound,
        };
        return DialCursor {
            cursor: Some(from),
            rewind: Duration::from_micros(c.saturating_sub(from)),
        };
    }
    if let Some(c) = facts.line_committed {
        let rewind = if facts.failover_pending {
            rewinds.failover_rewind
        } else {
            rewinds.rewind
        };
        return DialCursor {
            cursor: Some(Cursor(c).rewound(rewind).0),
            rewind,
        };
    }
    exact(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;
    const REWINDS: Rewinds = Rewinds {
        rewind: Duration::from_secs(2),
        failover_rewind: Duration::from_secs(10),
    };

    fn at(cursor: u64, rewind_secs: u64) -> DialCursor {
        DialCursor {
            cursor: Some(cursor),
            rewind: Duration::from_secs(rewind_secs),
        }
    }

    /// Every fact set, so each test shows that its rule wins over all later ones.
    fn everything() -> CursorFacts {
        CursorFacts {
            skip: Some(SkipDial {
                cursor: Some(7 * SECOND),
                cap: true,
                probe: false,
            }),
            dial_override: Some(50 * SECOND),
            host_committed: Some(100 * SECOND),
            host_reached: Some(HostReached {
                session: 3,
                cursor: 90 * SECOND,
                at_dial: Some(95 * SECOND),
            }),
            host_disordered: None,
            line_committed: Some(200 * SECOND),
            failover_pending: true,
        }
    }

    #[test]
    fn a_session_that_sent_times_out_of_order_is_no_floor() {
        // As in the floor test below, but session 3 sent a time below the one before it:
        // what it reached may hide older events still to come, so the full rewind.
        let facts = CursorFacts {
            skip: None,
            dial_override: None,
            host_reached: Some(HostReached {
                session: 3,
                cursor: 99 * SECOND,
                at_dial: Some(100 * SECOND),
            }),
            host_disordered: Some(3),
            ..everything()
        };
        assert_eq!(
            choose_dial(&facts, &REWINDS),
            DialCursor {
                cursor: Some(100 * SECOND - REWINDS.rewind.as_micros() as u64),
                rewind: REWINDS.rewind,
            }
        );
        let mut h = HostProgress::default();
        h.note_order(2, true);
        assert_eq!(h.disordered_session, Some(2));
        h.note_order(3, false);
        assert_eq!(
            h.disordered_session,
            Some(2),
            "an ordered session clears nothing"
        );
        h.forget(4);
        h.note_order(3, true);
        assert_eq!(h.disordered_session, None, "a session of the old host");
    }

    #[test]
    fn a_skip_in_progress_wins_over_everything_exactly() {
        assert_eq!(
            choose_dial(&everything(), &REWINDS),
            DialCursor {
                cursor: Some(7 * SECOND),
                rewind: Duration::ZERO
            }
        );
        let live_skip = CursorFacts {
            skip: Some(SkipDial {
                cursor: None,
                cap: true,
                probe: false,
            }),
            ..everything()
        };
        assert_eq!(
            choose_dial(&live_skip, &REWINDS),
            DialCursor {
                cursor: None,
                rewind: Duration::ZERO
            },
            "a skip of a live dial redials live"
        );
    }

    #[test]
    fn an_explicit_cursor_comes_next_exactly() {
        let facts = CursorFacts {
            skip: None,
            ..everything()
        };
        assert_eq!(choose_dial(&facts, &REWINDS), at(50 * SECOND, 0));
    }

    #[test]
    fn the_host_committed_cursor_minus_the_rewind_comes_next() {
        let facts = CursorFacts {
            skip: None,
            dial_override: None,
            host_reached: None,
            ..everything()
        };
        assert_eq!(choose_dial(&facts, &REWINDS), at(98 * SECOND, 2));
    }

    #[test]
    fn a_session_that_got_past_its_dial_cursor_leaves_the_plain_rewind() {
        let facts = CursorFacts {
            skip: None,
            dial_override: None,
            host_reached: Some(HostReached {
                session: 3,
                cursor: 100 * SECOND,
                at_dial: Some(99 * SECOND),
            }),
            ..everything()
        };
        assert_eq!(choose_dial(&facts, &REWINDS), at(98 * SECOND, 2));
    }

    #[test]
    fn a_session_dialed_with_nothing_committed_before_leaves_the_plain_rewind() {
        let facts = CursorFacts {
            skip: None,
            dial_override: None,
            host_reached: Some(HostReached {
                session: 3,
                cursor: 100 * SECOND,
                at_dial: None,
            }),
            ..everything()
        };
        assert_eq!(choose_dial(&facts, &REWINDS), at(98 * SECOND, 2));
    }

    #[test]
    fn a_session_that_did_not_get_past_its_dial_cursor_floors_the_next_dial_where_it_got() {
        // Dialed at 100 − 2 s, got to 99.5 s: the next dial starts at 99.5 s − 1 µs.
        let reached = 99 * SECOND + SECOND / 2;
        let facts = CursorFacts {
            skip: None,
            dial_override: None,
            host_reached: Some(HostReached {
                session: 3,
                cursor: reached,
                at_dial: Some(100 * SECOND),
            }),
            ..everything()
        };
        assert_eq!(
            choose_dial(&facts, &REWINDS),
            DialCursor {
                cursor: Some(reached - 1),
                rewind: Duration::from_micros(100 * SECOND - (reached - 1)),
            }
        );
        // Equal to its dial's cursor still counts as not past it.
        let equal = CursorFacts {
            host_reached: Some(HostReached {
                session: 3,
                cursor: 100 * SECOND,
                at_dial: Some(100 * SECOND),
            }),
            ..facts
        };
        assert_eq!(
            choose_dial(&equal, &REWINDS),
            DialCursor {
                cursor: Some(100 * SECOND - 1),
                rewind: Duration::from_micros(1),
            }
        );
    }

    #[test]
    fn the_floor_never_goes_below_the_plain_rewind() {
        // Got only to 50 s of a dial at 95 s: the rewound cursor (98 s) is later, and wins.
        let facts = CursorFacts {
            skip: None,
            dial_override: None,
            host_reached: Some(HostReached {
                session: 3,
                cursor: 50 * SECOND,
                at_dial: Some(95 * SECOND),
            }),
            ..everything()
        };
        assert_eq!(choose_dial(&facts, &REWINDS), at(98 * SECOND, 2));
    }

    #[test]
    fn the_line_minus_the_rewind_comes_next_and_the_failover_rewind_after_a_move() {
        let facts = CursorFacts {
            skip: None,
            dial_override: None,
            host_committed: None,
            host_reached: None,
            failover_pending: false,
            ..everything()
        };
        assert_eq!(choose_dial(&facts, &REWINDS), at(198 * SECOND, 2));
        let moved = CursorFacts {
            failover_pending: true,
            ..facts
        };
        assert_eq!(choose_dial(&moved, &REWINDS), at(190 * SECOND, 10));
    }

    #[test]
    fn a_stale_reached_note_does_not_matter_without_a_host_cursor() {
        let facts = CursorFacts {
            skip: None,
            dial_override: None,
            host_committed: None,
            failover_pending: false,
            ..everything()
        };
        assert_eq!(choose_dial(&facts, &REWINDS), at(198 * SECOND, 2));
    }

    #[test]
    fn live_when_nothing_is_known() {
        assert_eq!(
            choose_dial(&CursorFacts::default(), &REWINDS),
            DialCursor {
                cursor: None,
                rewind: Duration::ZERO
            }
        );
        let pending_alone = CursorFacts {
            failover_pending: true,
            ..CursorFacts::default()
        };
        assert_eq!(choose_dial(&pending_alone, &REWINDS).cursor, None);
    }

    #[test]
    fn rewinds_saturate_at_zero() {
        let facts = CursorFacts {
            line_committed: Some(SECOND),
            failover_pending: true,
            ..CursorFacts::default()
        };
        assert_eq!(choose_dial(&facts, &REWINDS), at(0, 10));
        let host = CursorFacts {
            host_committed: Some(SECOND),
            ..CursorFacts::default()
        };
        assert_eq!(
            choose_dial(&host, &REWINDS),
            DialCursor {
                cursor: Some(0),
                rewind: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn host_progress_keeps_the_newest_commit_and_the_latest_session_reached() {
        let mut h = HostProgress::default();
        h.note_commit(1, 100);
        assert_eq!(h.committed, Some(100));
        assert_eq!(
            h.reached,
            Some(HostReached {
                session: 1,
                cursor: 100,
                at_dial: None
            })
        );
        h.note_commit(1, 90);
        assert_eq!(h.committed, Some(100), "never moves back");
        assert_eq!(h.reached.map(|r| r.cursor), Some(100));
        // Session 2 was dialed when 100 was committed; it got to 99.
        h.note_commit(2, 99);
        assert_eq!(
            h.reached,
            Some(HostReached {
                session: 2,
                cursor: 99,
                at_dial: Some(100)
            })
        );
        assert_eq!(h.committed, Some(100));
        // A late commit of an older session changes the maximum only.
        h.note_commit(1, 120);
        assert_eq!(h.committed, Some(120));
        assert_eq!(h.reached.map(|r| r.session), Some(2));
    }

    #[test]
    fn forgetting_the_host_ignores_commits_of_earlier_sessions() {
        let mut h = HostProgress::default();
        h.note_commit(1, 100);
        h.forget(5);
        assert_eq!(
            h,
            HostProgress {
                committed: None,
                since_session: 5,
                reached: None,
                disordered_session: None
            }
        );
        h.note_commit(4, 200);
        assert_eq!(h.committed, None, "a session of the old host");
        h.note_commit(5, 50);
        assert_eq!(h.committed, Some(50));
        assert_eq!(h.reached.map(|r| r.at_dial), Some(None));
    }
}
