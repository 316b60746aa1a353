//! Consumer-aware retention, the pure part: given a stream's state and its consumer groups,
//! decide what may be trimmed. The rule: **never trim an entry that a protected group still
//! needs** — an entry it has not been delivered yet, or one delivered but not acknowledged —
//! and within that, trim to the operator's bounds (`max_len`, `max_age`). On Redis 7,
//! `XADD … MAXLEN ~` ignores groups (the `ACKED` trim mode only exists from 8.2), so the
//! writer never trims; this planner does, periodically, outside the hot path.
//!
//! What a group needs starts at its oldest pending entry, or (none pending) right after its
//! last-delivered id. A length trim (`XTRIM MAXLEN`) keeps the newest `max_len` entries, so it
//! is safe exactly when the needed entries number at most `max_len`; that count is known
//! (the group's `lag`) only when the group has nothing pending. Otherwise we trim by id
//! (`XTRIM MINID`) down to what is needed, and report the group as blocking the bound.

use std::cmp::Ordering;
use std::fmt;

pub use crate::messages::Blocking;

/// A stream entry id `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl Ord for StreamId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ms, self.seq).cmp(&(other.ms, other.seq))
    }
}

impl PartialOrd for StreamId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl StreamId {
    pub fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id greater than this one.
    pub fn successor(self) -> StreamId {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What `XINFO STREAM` told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    pub length: u64,
    pub last_generated: StreamId,
}

/// What `XINFO GROUPS` (and `XPENDING` for its oldest pending id) told us about a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub name: String,
    pub last_delivered: StreamId,
    pub pending: u64,
    pub oldest_pending: Option<StreamId>,
    /// Entries not yet delivered to the group (`None` when Redis cannot tell).
    pub lag: Option<u64>,
    /// Declared `disposable = true`: does not hold retention back.
    pub disposable: bool,
}

impl GroupState {
    /// The oldest entry id this group still needs.
    pub fn needs_from(&self) -> StreamId {
        match self.oldest_pending {
            Some(p) if self.pending > 0 => p.min(self.last_delivered.successor()),
            _ => self.last_delivered.successor(),
        }
    }
}

/// The operator's upper bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// 0 = no length bound.
    pub max_len: u64,
    /// Entries older than this many ms (by id time) are beyond the bound.
    pub max_age_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    /// `XTRIM key MAXLEN = n`
    MaxLen(u64),
    /// `XTRIM key MINID = id`: removes entries with smaller ids.
    MinId(StreamId),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub trims: Vec<Trim>,
    pub blocking: Vec<Blocking>,
}

/// What to trim now. `now_ms` is the Redis server clock (stream ids are in its ms).
pub fn plan(stream: &StreamState, groups: &[GroupState], bounds: Bounds, now_ms: u64) -> Plan {
    let protected: Vec<&GroupState> = groups
        .iter()
        .filter(|g| !g.disposable && g.needs_from() <= stream.last_generated)
        .collect();
    let mut out = Plan::default();
    let age_cut = bounds.max_age_ms.map(|age| StreamId {
        ms: now_ms.saturating_sub(age),
        seq: 0,
    });
    let over_len = bounds.max_len > 0 && stream.length > bounds.max_len;

    let Some(needed) = protected.iter().map(|g| g.needs_from()).min() else {
        // Nobody needs anything present: trim straight to the bounds.
        if over_len {
            out.trims.push(Trim::MaxLen(bounds.max_len));
        }
        out.trims.extend(age_cut.map(Trim::MinId));
        return out;
    };

    if over_len {
        // Exact count of what is needed, when every protected group has nothing pending.
        let exact_need = protected
            .iter()
            .map(|g| if g.pending == 0 { g.lag } else { None })
            .try_fold(0u64, |acc, lag| lag.map(|l| acc.max(l)));
        match exact_need {
            Some(n) if n <= bounds.max_len => out.trims.push(Trim::MaxLen(bounds.max_len)),
            _ => {
                out.trims.push(Trim::MinId(needed));
                for g in &protected {
                    // Blocking: the group holding the oldest needed entry (the cut stops at
                    // it), or one whose unread entries alone exceed the bound.
                    let unread_over = g.lag.is_none_or(|l| l > bounds.max_len);
                    if g.needs_from() == needed || unread_over {
                        out.blocking.push(Blocking {
                            group: g.name.clone(),
                            lag: g.lag,
                            pending: g.pending,
                        });
                    }
                }
            }
        }
    }
    if let Some(cut) = age_cut {
        out.trims.push(Trim::MinId(cut.min(needed)));
        for g in &protected {
            if g.needs_from() < cut && !out.blocking.iter().any(|b| b.group == g.name) {
                out.blocking.push(Blocking {
                    group: g.name.clone(),
                    lag: g.lag,
                    pending: g.pending,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    fn group(name: &str, last: u64, pending: Option<u64>, lag: Option<u64>) -> GroupState {
        GroupState {
            name: name.into(),
            last_delivered: id(last),
            pending: u64::from(pending.is_some()),
            oldest_pending: pending.map(id),
            lag,
            disposable: false,
        }
    }

    const STREAM: StreamState = StreamState {
        length: 1000,
        last_generated: StreamId { ms: 1000, seq: 0 },
    };
    const LEN: Bounds = Bounds {
        max_len: 250,
        max_age_ms: None,
    };

    #[test]
    fn without_groups_trim_to_the_bounds() {
        let p = plan(
            &STREAM,
            &[],
            Bounds {
                max_len: 250,
                max_age_ms: Some(100),
            },
            5_000,
        );
        assert_eq!(p.trims, vec![Trim::MaxLen(250), Trim::MinId(id(4_900))]);
        assert!(p.blocking.is_empty());
    }

    #[test]
    fn a_group_that_read_half_blocks_the_length_bound_and_keeps_its_unread_entries() {
        let g = group("slow", 500, None, Some(500));
        let p = plan(&STREAM, &[g], LEN, 0);
        assert_eq!(p.trims, vec![Trim::MinId(StreamId { ms: 500, seq: 1 })]);
        assert_eq!(
            p.blocking,
            vec![Blocking {
                group: "slow".into(),
                lag: Some(500),
                pending: 0
            }]
        );
    }

    #[test]
    fn a_caught_up_group_lets_the_bound_apply_exactly() {
        let g = group("fast", 1000, None, Some(0));
        assert_eq!(plan(&STREAM, &[g], LEN, 0).trims, vec![Trim::MaxLen(250)]);
        let close = group("close", 900, None, Some(100));
        assert_eq!(
            plan(&STREAM, &[close], LEN, 0).trims,
            vec![Trim::MaxLen(250)]
        );
    }

    #[test]
    fn pending_entries_are_never_trimmed() {
        let g = group("worker", 1000, Some(300), Some(0));
        let p = plan(&STREAM, &[g], LEN, 0);
        assert_eq!(p.trims, vec![Trim::MinId(id(300))]);
        assert_eq!(
            p.blocking.len(),
            1,
            "a few old pending entries hold the whole stream"
        );
        assert!(p.trims.iter().all(|t| !matches!(t, Trim::MaxLen(_))));
    }

    #[test]
    fn disposable_groups_and_unknown_lag() {
        let mut d = group("metrics", 10, None, Some(990));
        d.disposable = true;
        assert_eq!(plan(&STREAM, &[d], LEN, 0).trims, vec![Trim::MaxLen(250)]);
        let unknown = group("legacy", 900, None, None);
        let p = plan(&STREAM, &[unknown], LEN, 0);
        assert_eq!(p.trims, vec![Trim::MinId(StreamId { ms: 900, seq: 1 })]);
        assert_eq!(p.blocking.len(), 1);
    }

    #[test]
    fn age_bound_stops_at_what_is_needed() {
        let g = group("slow", 200, None, Some(800));
        let p = plan(
            &STREAM,
            &[g],
            Bounds {
                max_len: 0,
                max_age_ms: Some(100),
            },
            1_000,
        );
        assert_eq!(p.trims, vec![Trim::MinId(StreamId { ms: 200, seq: 1 })]);
        assert_eq!(p.blocking.len(), 1);
    }

    #[test]
    fn ids_parse_order_and_succeed() {
        let a = StreamId::parse("5-1").expect("id");
        assert!(a < StreamId::parse("5-2").expect("id") && a < StreamId::parse("6-0").expect("id"));
        assert_eq!(a.successor().to_string(), "5-2");
        assert_eq!(
            StreamId {
                ms: 1,
                seq: u64::MAX
            }
            .successor(),
            id(2)
        );
        assert_eq!(StreamId::parse("x-1"), None);
    }
}
