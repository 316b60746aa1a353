//! The membership state machine of one (bucket, DID), on event time only.
//!
//! State: per leaf (event condition) the newest matching event times, at most what its check
//! needs (`count` → value + 1, `exists`/`not_exists` → 1), oldest dropped first; the last
//! criteria value (`holds`); the membership (`entered_at`, suppressed or not); a deferred
//! leave (`min_dwell`); the epoch (1 + prior memberships) and the last leave time.
//!
//! Rules (docs/buckets.md):
//! - entries happen on a rising edge of the criteria (false → true); a DID that left by
//!   `max_dwell` while the criteria still hold re-enters only after they fell and rose again;
//! - before anything happens at time t, every timer ≤ t (window expiry, `min_dwell`
//!   deadline, `max_dwell` deadline) runs in time order, each at its own time, so the result
//!   does not depend on how events are batched;
//! - a leave while younger than `min_dwell` is deferred to `entered_at + min_dwell`, and
//!   cancelled if the criteria hold again by then; it keeps the reason of the fall;
//! - `max_dwell` ends a membership at `entered_at + max_dwell` (reason `max_dwell`);
//! - `once`: never a second membership; `once_per_period`: a membership starting less than
//!   the period after the last leave is recorded (epoch advances) but neither its `entered`
//!   nor its `left` is emitted.
//!
//! Pure: no actix, no I/O.

use super::criteria::{CompiledBucket, Limit};
use crate::model::TransitionKind;

pub const CRITERIA: &str = "criteria";
pub const WINDOW_EXPIRED: &str = "window_expired";
pub const MAX_DWELL: &str = "max_dwell";
pub const CRITERIA_CHANGED: &str = "criteria_changed";

/// What made the criteria change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An event of the DID.
    Criteria,
    /// Time: an event left a window.
    WindowExpired,
}

impl Cause {
    pub fn reason(self) -> &'static str {
        match self {
            Cause::Criteria => CRITERIA,
            Cause::WindowExpired => WINDOW_EXPIRED,
        }
    }
}

/// A transition of this (bucket, DID); the caller adds the bucket and the DID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emitted {
    pub kind: TransitionKind,
    pub epoch: u32,
    pub reason: &'static str,
    pub time_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub entered_at: u64,
    /// `once_per_period` re-entry inside the period: neither `entered` nor `left` is emitted.
    pub suppressed: bool,
}

/// Full state of a (bucket, DID) that has something to remember beyond its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// Event times of every leaf, leaf after leaf, oldest first within a leaf.
    pub times: Vec<u64>,
    /// How many of `times` belong to each leaf.
    pub lens: Box<[u16]>,
    pub member: Option<Member>,
    /// The criteria's value at the last evaluation.
    pub holds: bool,
    /// A leave deferred by `min_dwell`, with the reason it will carry.
    pub pending: Option<Cause>,
    pub epoch: u32,
    pub last_left: Option<u64>,
}

/// What the shard keeps per (bucket, DID): only the history when nothing else matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    Rest { epoch: u32, last_left: Option<u64> },
    Active(Box<Active>),
}

impl Slot {
    /// The history-only form of `a` if nothing else in it can matter, else `a` itself.
    pub fn settle_form(a: Box<Active>, b: &CompiledBucket) -> Slot {
        if a.is_rest(b) {
            Slot::Rest {
                epoch: a.epoch,
                last_left: a.last_left,
            }
        } else {
            Slot::Active(a)
        }
    }

    /// Nothing to remember at all: the slot can be dropped.
    pub fn is_empty(&self) -> bool {
        matches!(self, Slot::Rest { epoch: 0, .. })
    }

    /// `once` buckets ignore every event of a DID that already had its membership.
    pub fn is_closed(&self, b: &CompiledBucket) -> bool {
        matches!(self, Slot::Rest { epoch, .. } if *epoch >= 1 && b.limit == Limit::Once)
    }

    pub fn member(&self) -> Option<Member> {
        match self {
            Slot::Rest { .. } => None,
            Slot::Active(a) => a.member,
        }
    }

    pub fn epoch(&self) -> u32 {
        match self {
            Slot::Rest { epoch, .. } => *epoch,
            Slot::Active(a) => a.epoch,
        }
    }
}

impl Active {
    pub fn new(b: &CompiledBucket, epoch: u32, last_left: Option<u64>) -> Active {
        Active {
            times: Vec::new(),
            lens: vec![0; b.leaves.len()].into_boxed_slice(),
            member: None,
            holds: false,
            pending: None,
            epoch,
            last_left,
        }
    }

    fn range(&self, leaf: usize) -> std::ops::Range<usize> {
        let start: usize = self.lens[..leaf].iter().map(|l| usize::from(*l)).sum();
        start..start + usize::from(self.lens[leaf])
    }

    /// Matching events leaf `leaf` counts now (capped at what its check needs).
    pub fn count(&self, leaf: usize) -> u32 {
        u32::from(self.lens[leaf])
    }

    fn eval(&self, b: &CompiledBucket) -> bool {
        b.tree.eval(&b.leaves, &|i| self.count(i))
    }

    /// Nothing but the history (epoch, last leave) can matter any more.
    pub fn is_rest(&self, b: &CompiledBucket) -> bool {
        self.member.is_none()
            && self.pending.is_none()
            && ((b.limit == Limit::Once && self.epoch >= 1)
                || (self.times.is_empty() && !self.holds))
    }

    /// The earliest timer of this state, if any.
    pub fn next_due(&self, b: &CompiledBucket) -> Option<u64> {
        let mut due: Option<u64> = None;
        let mut at = |t: u64| due = Some(due.map_or(t, |d| d.min(t)));
        let mut start = 0usize;
        for (leaf, len) in b.leaves.iter().zip(self.lens.iter()) {
            let len = usize::from(*len);
            if let (Some(w), true) = (leaf.within_us, len > 0) {
                at(self.times[start].saturating_add(w));
            }
            start += len;
        }
        if let Some(m) = self.member {
            if let Some(max) = b.max_dwell_us {
                at(m.entered_at.saturating_add(max));
            }
            if let (Some(_), Some(min)) = (self.pending, b.min_dwell_us) {
                at(m.entered_at.saturating_add(min));
            }
        }
        due
    }

    /// Runs every timer due at or before `to`, each at its own time, in time order.
    pub fn advance(&mut self, b: &CompiledBucket, to: u64, out: &mut Vec<Emitted>) {
        while let Some(due) = self.next_due(b).filter(|d| *d <= to) {
            self.expire(b, due);
            self.settle(b, due, Cause::WindowExpired, out);
        }
    }

    /// Drops the times that left their window at `now` (an event at t counts while
    /// `now < t + within`).
    fn expire(&mut self, b: &CompiledBucket, now: u64) {
        for (i, leaf) in b.leaves.iter().enumerate() {
            let Some(w) = leaf.within_us else { continue };
            let r = self.range(i);
            let gone = self.times[r.clone()]
                .iter()
                .take_while(|t| t.saturating_add(w) <= now)
                .count();
            if gone > 0 {
                self.times.drain(r.start..r.start + gone);
                self.lens[i] -= u16::try_from(gone).unwrap_or(u16::MAX);
            }
        }
    }

    /// An event at `t` matched these leaves. Call [`Active::advance`] to `t` first.
    pub fn record(
        &mut self,
        b: &CompiledBucket,
        t: u64,
        matched: &[usize],
        out: &mut Vec<Emitted>,
    ) {
        for &i in matched {
            let r = self.range(i);
            if self.times.len() == self.times.capacity() {
                // Lists are short and bounded: grow by one, not by doubling.
                self.times.reserve_exact(1);
            }
            if self.lens[i] >= b.leaves[i].cap {
                self.times.remove(r.start);
                self.times.insert(r.end - 1, t);
            } else {
                self.times.insert(r.end, t);
                self.lens[i] += 1;
            }
        }
        self.settle(b, t, Cause::Criteria, out);
    }

    /// Applies the policies at `now`, after the leaves changed (or a deadline came).
    fn settle(&mut self, b: &CompiledBucket, now: u64, cause: Cause, out: &mut Vec<Emitted>) {
        let holds = self.eval(b);
        if let (Some(m), Some(max)) = (self.member, b.max_dwell_us)
            && now >= m.entered_at.saturating_add(max)
        {
            self.leave(m.entered_at.saturating_add(max), MAX_DWELL, out);
        }
        if let Some(m) = self.member {
            if holds {
                self.pending = None;
            } else {
                let why = self.pending.unwrap_or(cause);
                let old_enough = b
                    .min_dwell_us
                    .is_none_or(|min| now >= m.entered_at.saturating_add(min));
                if old_enough {
                    self.leave(now, why.reason(), out);
                } else {
                    self.pending = Some(why);
                }
            }
        } else if holds && !self.holds {
            self.enter(b, now, cause, out);
        }
        self.holds = holds;
    }

    fn enter(&mut self, b: &CompiledBucket, now: u64, cause: Cause, out: &mut Vec<Emitted>) {
        let suppressed = match b.limit {
            Limit::Once if self.epoch >= 1 => return,
            Limit::OncePerPeriod(period) => self
                .last_left
                .is_some_and(|left| now.saturating_sub(left) < period),
            _ => false,
        };
        self.epoch = self.epoch.saturating_add(1);
        self.member = Some(Member {
            entered_at: now,
            suppressed,
        });
        if !suppressed {
            out.push(Emitted {
                kind: TransitionKind::Entered,
                epoch: self.epoch,
                reason: cause.reason(),
                time_us: now,
            });
        }
    }

    /// Ends the membership at `at` (emitted unless it was suppressed).
    pub fn leave(&mut self, at: u64, reason: &'static str, out: &mut Vec<Emitted>) {
        let Some(m) = self.member.take() else { return };
        self.pending = None;
        self.last_left = Some(at);
        if !m.suppressed {
            out.push(Emitted {
                kind: TransitionKind::Left,
                epoch: self.epoch,
                reason,
                time_us: at,
            });
        }
    }
}
