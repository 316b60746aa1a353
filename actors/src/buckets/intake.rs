//! `Intake`: what the router does with one batch before the shards see it, without actix.
//! Picks the commit events some bucket condition could match (collection patterns, memoised
//! per collection), asks [`Applied`] whether each is new (by identity, see `applied.rs`),
//! clones only what the shards need, groups them by shard, and ends the batch with its
//! watermark (the newest time seen, batch cursor included) and the write of the mark.
//!
//! Pure: the router wraps it; the batching tests drive it with the trackers directly.

use std::collections::HashMap;
use std::sync::Arc;

use super::applied::{Admit, Applied};
use super::criteria::{CompiledBucket, candidate_leaves};
use super::tracker::ShardEvent;
use crate::messages::Item;
use crate::model::{Event, StateOp};

/// Distinct collections remembered by the pre-filter before it starts over.
const CACHE_LIMIT: usize = 4096;

/// Leaves a collection can match: `bucket << 16 | leaf`, and whether any has predicates.
#[derive(Clone)]
struct Candidates {
    leaves: Arc<[u32]>,
    needs_record: bool,
}

/// FNV-1a: the shard of a DID (stable across runs and builds).
pub fn shard_of(did: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in did.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

/// One batch, ready for the shards.
#[derive(Debug, Default)]
pub struct Split {
    /// The events each shard applies, in arrival order (times non-decreasing).
    pub per_shard: Vec<Vec<ShardEvent>>,
    /// Timers up to this time run after the events.
    pub watermark: u64,
    /// The watermark moved forward in this batch.
    pub advanced: bool,
    /// Events handed to the shards.
    pub relevant: usize,
    /// Relevant events not applied: seen before (same identity at the newest time, or older
    /// and from a later session: a rewind's replay) / older and from the same session.
    pub already_applied: u64,
    pub late: u64,
    /// The stored mark's write, if it changed; commit it with the batch.
    pub mark: Option<StateOp>,
}

pub struct Intake {
    buckets: Arc<[CompiledBucket]>,
    cache: HashMap<String, Option<Candidates>>,
    shards: usize,
    applied: Applied,
}

impl Intake {
    pub fn new(buckets: Arc<[CompiledBucket]>, shards: usize, applied: Applied) -> Intake {
        Intake {
            buckets,
            cache: HashMap::new(),
            shards: shards.max(1),
            applied,
        }
    }

    /// Newest time seen: every event at or before it was decided on.
    pub fn applied_to(&self) -> u64 {
        self.applied.to()
    }

    fn candidates(&mut self, collection: &str) -> Option<Candidates> {
        if let Some(c) = self.cache.get(collection) {
            return c.clone();
        }
        let (leaves, needs_record) = candidate_leaves(&self.buckets, collection);
        let found = (!leaves.is_empty()).then(|| Candidates {
            leaves: leaves.into(),
            needs_record,
        });
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(collection.to_owned(), found.clone());
        found
    }

    /// The batch's new relevant events per shard, its watermark and the mark's write.
    /// `cursor` is the batch's (newest frame, dropped ones included), `session` its dial.
    pub fn split(&mut self, items: &[Item], cursor: Option<u64>, session: u64) -> Split {
        let before = self.applied.to();
        let mut out = Split {
            per_shard: (0..self.shards).map(|_| Vec::new()).collect(),
            ..Split::default()
        };
        for item in items {
            let Item::Event(event) = item else { continue };
            let candidates = match event {
                Event::Commit(c) => self.candidates(&c.collection),
                _ => None,
            };
            let (Event::Commit(c), Some(cand)) = (event, candidates) else {
                self.applied.pass(event.time_us(), session);
                continue;
            };
            match self.applied.admit(c, session) {
                Admit::Apply => {}
                Admit::AlreadyApplied
                | Admit::Older {
                    same_session: false,
                } => {
                    out.already_applied += 1;
                    continue;
                }
                Admit::Older { same_session: true } => {
                    out.late += 1;
                    continue;
                }
            }
            out.relevant += 1;
            out.per_shard[shard_of(&c.did, self.shards)].push(ShardEvent {
                did: c.did.clone(),
                time_us: c.time_us,
                operation: c.operation,
                leaves: cand.leaves,
                record: if cand.needs_record {
                    c.record.clone()
                } else {
                    None
                },
            });
        }
        if let Some(c) = cursor {
            self.applied.pass(c, session);
        }
        out.watermark = self.applied.to();
        out.advanced = out.watermark > before;
        out.mark = self.applied.take_op();
        out
    }
}
