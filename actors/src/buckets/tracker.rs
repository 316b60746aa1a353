//! `Tracker`: everything one shard knows, without actix: the states of the DIDs it owns,
//! a timer queue (window expiry, `min_dwell`, `max_dwell` deadlines) and the per-batch
//! bookkeeping that turns changes into transitions and state operations.
//!
//! One call per batch: [`Tracker::process`] applies the batch's relevant events in order
//! (each state first runs its timers up to the event's time), then runs every timer up to
//! the batch watermark, and returns the transitions and the final state of every
//! (bucket, DID) it touched. The timer queue is lazy: each state has at most one live entry
//! (`scheduled`); entries that no longer match are skipped when they come up.
//!
//! Pure: no actix, no I/O; the shard actor wraps it and the bench drives it directly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::criteria::{CompiledBucket, LazyRecord};
use super::membership::{Active, CRITERIA_CHANGED, Emitted, Slot};
use super::state::encode;
use crate::model::{Operation, StateOp, Transition};

/// A commit event relevant to at least one bucket, as the router hands it to a shard.
#[derive(Debug)]
pub struct ShardEvent {
    pub did: String,
    /// Event time, already made non-decreasing by the router.
    pub time_us: u64,
    pub operation: Operation,
    /// Leaves whose collection pattern matched: `bucket << 16 | leaf`, ascending.
    pub leaves: Arc<[u32]>,
    /// The record, only when one of those leaves has record predicates.
    pub record: Option<Box<RawValue>>,
}

/// What a shard returns for one batch.
#[derive(Debug, Default)]
pub struct ShardOutput {
    pub transitions: Vec<Transition>,
    pub ops: Vec<StateOp>,
    /// Current members per bucket (suppressed memberships included).
    pub members: Vec<u64>,
    pub tracked_dids: usize,
}

struct Entry {
    bucket: u16,
    slot: Slot,
    /// Due time of this state's live timer-queue entry (`u64::MAX` = none).
    scheduled: u64,
}

/// (entered_at, epoch) of a membership, for the members hash.
type Membership = Option<(u64, u32)>;

pub struct Tracker {
    buckets: Arc<[CompiledBucket]>,
    dids: HashMap<Rc<str>, Vec<Entry>>,
    timers: BinaryHeap<Reverse<(u64, u16, Rc<str>)>>,
    /// (bucket, DID) touched in the current batch, with its membership before.
    touched: HashMap<(u16, Rc<str>), Membership>,
    out: Vec<Transition>,
    members: Vec<u64>,
    emitted: Vec<Emitted>,
    matched: Vec<usize>,
}

const EMPTY: Slot = Slot::Rest {
    epoch: 0,
    last_left: None,
};

/// Queues the state's next timer if it is earlier than its live queue entry.
fn schedule(
    buckets: &[CompiledBucket],
    timers: &mut BinaryHeap<Reverse<(u64, u16, Rc<str>)>>,
    entry: &mut Entry,
    did: &Rc<str>,
) {
    let Slot::Active(a) = &entry.slot else { return };
    if let Some(due) = a.next_due(&buckets[usize::from(entry.bucket)])
        && due < entry.scheduled
    {
        entry.scheduled = due;
        timers.push(Reverse((due, entry.bucket, did.clone())));
    }
}

fn membership(slot: &Slot) -> Membership {
    slot.member().map(|m| (m.entered_at, slot.epoch()))
}

impl Tracker {
    pub fn new(buckets: Arc<[CompiledBucket]>) -> Tracker {
        let n = buckets.len();
        Tracker {
            buckets,
            dids: HashMap::new(),
            timers: BinaryHeap::new(),
            touched: HashMap::new(),
            out: Vec::new(),
            members: vec![0; n],
            emitted: Vec::new(),
            matched: Vec::new(),
        }
    }

    pub fn tracked_dids(&self) -> usize {
        self.dids.len()
    }

    pub fn members(&self) -> &[u64] {
        &self.members
    }

    fn key(&mut self, did: &str) -> Rc<str> {
        match self.dids.get_key_value(did) {
            Some((k, _)) => k.clone(),
            None => Rc::from(did),
        }
    }

    /// Adds a state read from Redis. With `changed_at` (the bucket's criteria changed since
    /// it was stored), a member leaves at that time with reason `criteria_changed` and only
    /// the history (epoch, last leave) is kept; the change is written with the next batch.
    pub fn load(&mut self, bucket: u16, did: &str, slot: Slot, changed_at: Option<u64>) {
        let key = self.key(did);
        let b = usize::from(bucket);
        let slot = match (changed_at, slot) {
            (Some(at), Slot::Active(mut a)) => {
                self.touched.insert(
                    (bucket, key.clone()),
                    a.member.map(|m| (m.entered_at, a.epoch)),
                );
                if a.member.is_some() {
                    self.members[b] += 1;
                }
                a.leave(at, CRITERIA_CHANGED, &mut self.emitted);
                self.flush_emitted(bucket, &key);
                Slot::Rest {
                    epoch: a.epoch,
                    last_left: a.last_left,
                }
            }
            (_, slot) => slot,
        };
        if slot.member().is_some() {
            self.members[b] += 1;
        }
        let mut entry = Entry {
            bucket,
            slot,
            scheduled: u64::MAX,
        };
        schedule(&self.buckets, &mut self.timers, &mut entry, &key);
        let entries = self.dids.entry(key).or_default();
        entries.retain(|e| e.bucket != bucket);
        if !entry.slot.is_empty() {
            entries.push(entry);
        }
    }

    /// Applies a batch: its events in order, then every timer up to `watermark`.
    pub fn process(&mut self, events: Vec<ShardEvent>, watermark: u64) -> ShardOutput {
        for ev in events {
            let mut record = LazyRecord::new(ev.record.as_deref());
            let mut i = 0;
            while i < ev.leaves.len() {
                let bucket = (ev.leaves[i] >> 16) as u16;
                self.matched.clear();
                while i < ev.leaves.len() && (ev.leaves[i] >> 16) as u16 == bucket {
                    let leaf = (ev.leaves[i] & 0xffff) as usize;
                    if self.buckets[usize::from(bucket)].leaves[leaf]
                        .matches(ev.operation, &mut record)
                    {
                        self.matched.push(leaf);
                    }
                    i += 1;
                }
                if !self.matched.is_empty() {
                    self.apply(&ev.did, bucket, ev.time_us);
                }
            }
        }
        self.run_timers(watermark);
        self.finish()
    }

    fn apply(&mut self, did: &str, bucket: u16, t: u64) {
        let key = self.key(did);
        let Tracker {
            buckets,
            dids,
            touched,
            emitted,
            matched,
            ..
        } = self;
        let b = &buckets[usize::from(bucket)];
        let entries = dids.entry(key.clone()).or_default();
        let at = match entries.iter().position(|e| e.bucket == bucket) {
            Some(at) => at,
            None => {
                entries.reserve_exact(1);
                entries.push(Entry {
                    bucket,
                    slot: EMPTY,
                    scheduled: u64::MAX,
                });
                entries.len() - 1
            }
        };
        let entry = &mut entries[at];
        if entry.slot.is_closed(b) {
            return;
        }
        touched
            .entry((bucket, key.clone()))
            .or_insert_with(|| membership(&entry.slot));
        let mut a = match std::mem::replace(&mut entry.slot, EMPTY) {
            Slot::Rest { epoch, last_left } => Box::new(Active::new(b, epoch, last_left)),
            Slot::Active(a) => a,
        };
        a.advance(b, t, emitted);
        a.record(b, t, matched, emitted);
        entry.slot = Slot::settle_form(a, b);
        if entry.scheduled <= t {
            // Its queue entry is now stale: `advance` ran it.
            entry.scheduled = u64::MAX;
        }
        self.after_change(bucket, &key);
    }

    /// Runs every queued timer due at or before `to`.
    fn run_timers(&mut self, to: u64) {
        let buckets = self.buckets.clone();
        while let Some(Reverse((due, bucket, did))) = self.timers.peek().cloned() {
            if due > to {
                break;
            }
            self.timers.pop();
            let b = &buckets[usize::from(bucket)];
            let Some(entry) = self
                .dids
                .get_mut(&did)
                .and_then(|es| es.iter_mut().find(|e| e.bucket == bucket))
            else {
                continue;
            };
            if entry.scheduled != due {
                continue;
            }
            entry.scheduled = u64::MAX;
            let Slot::Active(a) = &mut entry.slot else {
                continue;
            };
            self.touched
                .entry((bucket, did.clone()))
                .or_insert_with(|| a.member.map(|m| (m.entered_at, a.epoch)));
            a.advance(b, to, &mut self.emitted);
            if a.is_rest(b) {
                entry.slot = Slot::Rest {
                    epoch: a.epoch,
                    last_left: a.last_left,
                };
            }
            self.after_change(bucket, &did);
        }
    }

    /// Emits what the state produced, queues its next timer, drops it if empty.
    fn after_change(&mut self, bucket: u16, did: &Rc<str>) {
        self.flush_emitted(bucket, did);
        let Tracker {
            buckets,
            dids,
            timers,
            ..
        } = self;
        let Some(entries) = dids.get_mut(did) else {
            return;
        };
        if let Some(at) = entries.iter().position(|e| e.bucket == bucket) {
            if entries[at].slot.is_empty() {
                entries.swap_remove(at);
            } else {
                schedule(buckets, timers, &mut entries[at], did);
            }
        }
        if entries.is_empty() {
            dids.remove(did);
        }
    }

    fn flush_emitted(&mut self, bucket: u16, did: &str) {
        let id = &self.buckets[usize::from(bucket)].id;
        for e in self.emitted.drain(..) {
            self.out.push(Transition {
                bucket: id.clone(),
                did: did.to_owned(),
                kind: e.kind,
                epoch: e.epoch,
                reason: e.reason,
                time_us: e.time_us,
            });
        }
    }

    /// The batch's transitions and the final state of everything it touched.
    fn finish(&mut self) -> ShardOutput {
        let mut ops = Vec::with_capacity(self.touched.len() * 2);
        for ((bucket, did), before) in self.touched.drain() {
            let b = &self.buckets[usize::from(bucket)];
            let slot = self
                .dids
                .get(&did)
                .and_then(|es| es.iter().find(|e| e.bucket == bucket))
                .map(|e| &e.slot);
            ops.push(StateOp {
                key: b.state_key.clone(),
                field: did.to_string(),
                value: slot.map(encode),
            });
            let after = slot.and_then(membership);
            if after != before {
                let n = &mut self.members[usize::from(bucket)];
                match (before.is_some(), after.is_some()) {
                    (false, true) => *n += 1,
                    (true, false) => *n = n.saturating_sub(1),
                    _ => {}
                }
                ops.push(StateOp {
                    key: b.members_key.clone(),
                    field: did.to_string(),
                    value: after.map(|(at, epoch)| format!("{at}|{epoch}")),
                });
            }
        }
        ShardOutput {
            transitions: std::mem::take(&mut self.out),
            ops,
            members: self.members.clone(),
            tracked_dids: self.dids.len(),
        }
    }

    /// Approximate bytes held per tracked DID: the map slot, the DID text, the entries and
    /// every boxed state with its event times (allocator overhead not counted).
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let slot = size_of::<Rc<str>>() + size_of::<Vec<Entry>>() + 1;
        let per_map = self.dids.capacity() * slot;
        let per_did: usize = self
            .dids
            .iter()
            .map(|(k, es)| {
                2 * size_of::<usize>()
                    + k.len()
                    + es.capacity() * size_of::<Entry>()
                    + es.iter()
                        .map(|e| match &e.slot {
                            Slot::Rest { .. } => 0,
                            Slot::Active(a) => {
                                size_of::<Active>() + a.times.capacity() * 8 + a.lens.len() * 2
                            }
                        })
                        .sum::<usize>()
            })
            .sum();
        per_map + per_did + self.timers.len() * size_of::<(u64, u16, Rc<str>)>()
    }
}
