//! `Applied`: which commit events the bucket state already contains, decided by the event's
//! identity `(did, collection, rkey, rev, operation)` (the dedupe identity of its job), not by
//! its `time_us` alone. Owned by the router's [`Intake`](super::intake::Intake); stored in
//! `<prefix>buckets:applied` (field `mark`) in the same atomic commit as the batch whose
//! state it describes, read back at start by `load`.
//!
//! The rule, per frame in arrival order (docs/buckets.md, "Exact, on event time"):
//! - `to` is the newest `time_us` seen: every event, relevant to a bucket or not, and every
//!   batch cursor (frames dropped before the router) moves it forward, never back;
//! - a relevant event newer than `to` is applied (and `to` becomes its time);
//! - one at exactly `to` is applied unless its identity is among those applied at `to`
//!   (`at_to`): two distinct events sharing a `time_us` both count, the same event sent twice
//!   (in one batch, in two, or re-sent after a reconnect's rewind) counts once;
//! - one older than `to` is not applied: timers up to `to` have run and been committed, so
//!   it cannot be placed. A reconnect's rewind replays such events (already applied);
//!   within one session it is a host sending out of order (counted as `late`).
//!
//! Every decision depends only on the frames before it, never on where batches start or
//! end, so any batching gives the same events to the shards, at the same times.
//!
//! Pure: no actix, no I/O. Failure: a stored mark this version cannot read is an error; the
//! caller refuses to start (guessing would repeat or lose events).

use std::collections::HashSet;

use crate::model::{CommitEvent, StateOp};

/// Hash (after the key prefix) and field of the stored mark.
pub const KEY: &str = "buckets:applied";
pub const FIELD: &str = "mark";

/// What to do with a relevant commit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// New: hand it to the shards at its own time.
    Apply,
    /// Its identity is in the state already (same event again, at the newest time).
    AlreadyApplied,
    /// Older than the newest time seen: a replay after a rewind (applied before) or, within
    /// one session, an event the host sent out of order (never applied, and not now).
    Older { same_session: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Newest `time_us` seen.
    to: u64,
    /// Identities applied at exactly `to`. `None`: every event at `to` counts as applied (the
    /// committed cursor of a state stored without a mark: the rule before identities).
    at_to: Option<HashSet<String>>,
    /// The session whose frame set `to` (`None` after a start): tells late from replayed.
    to_session: Option<u64>,
    /// Changed since the last [`Applied::take_op`].
    dirty: bool,
    /// Identity of the event being admitted (reused, so only applied events allocate).
    buf: String,
}

/// The stored form: `{"to":<µs>,"at_to":[<identity>,…]}`, `"at_to":null` for "all at `to`".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mark {
    pub to: u64,
    pub at_to: Option<Vec<String>>,
}

impl Mark {
    /// Reads a stored mark.
    pub fn decode(text: &str) -> Result<Mark, String> {
        serde_json::from_str(text).map_err(|e| format!("applied mark {text:?}: {e}"))
    }
}

impl Applied {
    /// The intake's start: the stored mark, unless the committed cursor is newer (the
    /// buckets were off while it moved); then, as without a mark, every event at or before
    /// the cursor counts as applied.
    pub fn start(committed: Option<u64>, mark: Option<Mark>) -> Applied {
        let cursor = committed.unwrap_or(0);
        let (to, at_to) = match mark {
            Some(m) if m.to >= cursor => (m.to, m.at_to.map(|v| v.into_iter().collect())),
            _ if committed.is_none() => (0, Some(HashSet::new())),
            _ => (cursor, None),
        };
        Applied {
            to,
            at_to,
            to_session: None,
            dirty: false,
            buf: String::new(),
        }
    }

    /// Newest time seen: every event at or before it was decided on.
    pub fn to(&self) -> u64 {
        self.to
    }

    /// A frame of `session` at `t` that no bucket looks at (or a batch cursor): time passed.
    pub fn pass(&mut self, t: u64, session: u64) {
        if t > self.to {
            self.to = t;
            self.to_session = Some(session);
            match &mut self.at_to {
                Some(set) => set.clear(),
                None => self.at_to = Some(HashSet::new()),
            }
            self.dirty = true;
        }
    }

    /// Decides on a commit event some bucket may count, and records it if applied.
    pub fn admit(&mut self, c: &CommitEvent, session: u64) -> Admit {
        if c.time_us < self.to {
            return Admit::Older {
                same_session: self.to_session == Some(session),
            };
        }
        self.pass(c.time_us, session);
        identity_into(&mut self.buf, c);
        let Some(set) = &mut self.at_to else {
            return Admit::AlreadyApplied;
        };
        if set.contains(self.buf.as_str()) {
            return Admit::AlreadyApplied;
        }
        set.insert(self.buf.clone());
        self.dirty = true;
        Admit::Apply
    }

    /// The write of the stored mark if it changed since the last call.
    pub fn take_op(&mut self) -> Option<StateOp> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        Some(StateOp {
            key: KEY.to_owned(),
            field: FIELD.to_owned(),
            value: Some(self.encode()),
        })
    }

    /// The stored text (identities sorted, so equal marks are equal texts).
    pub fn encode(&self) -> String {
        let at_to = self.at_to.as_ref().map(|set| {
            let mut v: Vec<String> = set.iter().cloned().collect();
            v.sort_unstable();
            v
        });
        serde_json::to_string(&Mark { to: self.to, at_to })
            .unwrap_or_else(|_| format!("{{\"to\":{},\"at_to\":null}}", self.to))
    }
}

/// `did|collection|rkey|rev|operation`, the commit's dedupe identity.
fn identity_into(buf: &mut String, c: &CommitEvent) {
    buf.clear();
    for part in [
        c.did.as_str(),
        c.collection.as_str(),
        c.rkey.as_str(),
        c.rev.as_str(),
    ] {
        buf.push_str(part);
        buf.push('|');
    }
    buf.push_str(c.operation.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Operation;

    fn commit(did: &str, rkey: &str, t: u64) -> CommitEvent {
        CommitEvent {
            did: did.to_owned(),
            time_us: t,
            rev: "3l".to_owned(),
            operation: Operation::Create,
            collection: "app.bsky.feed.post".to_owned(),
            rkey: rkey.to_owned(),
            record: None,
            cid: None,
            verdict: None,
        }
    }

    #[test]
    fn identity_decides_at_the_newest_time_and_older_events_are_not_applied() {
        let mut a = Applied::start(None, None);
        assert_eq!(a.admit(&commit("d", "a", 5), 1), Admit::Apply);
        assert_eq!(a.admit(&commit("d", "b", 5), 1), Admit::Apply);
        assert_eq!(a.admit(&commit("d", "a", 5), 1), Admit::AlreadyApplied);
        a.pass(5, 1);
        assert_eq!(a.admit(&commit("d", "b", 5), 2), Admit::AlreadyApplied);
        assert_eq!(a.admit(&commit("e", "a", 6), 1), Admit::Apply);
        assert_eq!(
            a.admit(&commit("d", "c", 5), 1),
            Admit::Older { same_session: true }
        );
        assert_eq!(
            a.admit(&commit("d", "a", 5), 2),
            Admit::Older {
                same_session: false
            }
        );
        a.pass(7, 1);
        assert_eq!(a.admit(&commit("e", "a", 7), 1), Admit::Apply);
    }

    #[test]
    fn the_stored_mark_round_trips_and_the_cursor_wins_when_newer() {
        let mut a = Applied::start(None, None);
        a.admit(&commit("d", "b", 9), 1);
        a.admit(&commit("d", "a", 9), 1);
        let op = a.take_op().expect("changed");
        assert_eq!(op.key, "buckets:applied");
        let text = op.value.expect("a value");
        assert_eq!(
            text,
            r#"{"to":9,"at_to":["d|app.bsky.feed.post|a|3l|create","d|app.bsky.feed.post|b|3l|create"]}"#
        );
        assert_eq!(a.take_op(), None);
        let mark = Mark::decode(&text).expect("reads back");
        let mut b = Applied::start(Some(9), Some(mark.clone()));
        assert_eq!(b.encode(), text);
        assert_eq!(b.admit(&commit("d", "a", 9), 1), Admit::AlreadyApplied);
        assert_eq!(b.admit(&commit("d", "c", 9), 1), Admit::Apply);
        // No mark (a state from before marks), or a cursor newer than the mark: everything
        // at the cursor counts as applied.
        for mut c in [
            Applied::start(Some(9), None),
            Applied::start(Some(12), Some(mark)),
        ] {
            let t = c.to();
            assert_eq!(c.admit(&commit("x", "y", t), 1), Admit::AlreadyApplied);
            assert_eq!(c.admit(&commit("x", "y", t + 1), 1), Admit::Apply);
        }
        assert!(Mark::decode("{\"to\":1}x").is_err());
        assert!(Mark::decode("{\"to\":1,\"at_to\":[],\"z\":2}").is_err());
    }
}
