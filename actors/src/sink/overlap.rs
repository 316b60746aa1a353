//! The replay-overlap notice: after a reconnect or restart the reader rewinds, so the first
//! batches of a session repeat entries already committed, and the writer skips them. That is
//! worth one log line per session, not one per batch: [`OverlapNotice`] says which skip is
//! the session's first; every skipped entry is counted in
//! `jetstream_ingestor_entries_skipped_total{reason="already_committed"}` regardless. Pure.

/// Remembers the last reader session whose overlap was logged.
#[derive(Debug, Default)]
pub struct OverlapNotice {
    logged: Option<u64>,
}

impl OverlapNotice {
    /// A batch of `session` skipped `skipped` committed entries: `true` when this is the
    /// session's first such batch (log it), `false` when the session was logged already or
    /// nothing was skipped.
    pub fn first_in_session(&mut self, session: u64, skipped: u64) -> bool {
        if skipped == 0 || self.logged == Some(session) {
            return false;
        }
        self.logged = Some(session);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_notice_per_session_however_many_batches_overlap() {
        let mut n = OverlapNotice::default();
        assert!(!n.first_in_session(1, 0), "nothing skipped: nothing to say");
        assert!(n.first_in_session(1, 128));
        assert!(!n.first_in_session(1, 128));
        assert!(!n.first_in_session(1, 3));
        assert!(!n.first_in_session(1, 0));
        assert!(
            n.first_in_session(2, 5),
            "a new session (reconnect) is told again"
        );
        assert!(!n.first_in_session(2, 5));
        assert!(n.first_in_session(7, 1));
    }
}
