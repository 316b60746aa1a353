//! `BucketRouter`: the actor shell of the buckets room, between the verifier pool and the
//! writer. For each batch it picks the commit events some bucket condition could match
//! (collection patterns, memoised per collection), clones only what the shards need, sends
//! every shard its DIDs' events plus the batch watermark, merges the shards' transitions in
//! (time, bucket, DID, kind) order and appends them, with the state operations, to the batch;
//! batches go on to the writer in arrival order, so state lands in the same atomic commit as
//! the jobs and the cursor.
//!
//! Event time only: events at or before the last applied time (the committed cursor at
//! start, then each batch's watermark) were already applied and are skipped (reconnect
//! rewinds, restarts); later events are made non-decreasing.
//!
//! Failure: a shard that panicked or is gone stops the process (exit 70) before the batch
//! is forwarded; the state in Redis then matches the committed cursor and a restart resumes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::join_all;
use tracing::{error, info, warn};

use super::config::BucketsConfig;
use super::criteria::{CompiledBucket, candidate_leaves};
use super::load::LoadedBucket;
use super::shard::{BucketShard, EvaluateBatch, LoadedState};
use super::tracker::ShardEvent;
use crate::messages::{Batch, BucketInfo, BucketStatus, GetBucketStatus, Item, PushBatch};
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

pub struct BucketRouter {
    buckets: Arc<[CompiledBucket]>,
    disabled: Vec<String>,
    cache: HashMap<String, Option<Candidates>>,
    shards: Vec<Addr<BucketShard>>,
    _arbiters: Vec<Arbiter>,
    downstream: Recipient<PushBatch>,
    in_order: VecDeque<(u64, Option<Batch>)>,
    /// Every event at or before this time is in the state (skip it if seen again).
    applied_to: u64,
    /// Written with the first batch: the criteria hashes of the buckets.
    first_ops: Vec<StateOp>,
    first: bool,
    /// Per shard, per bucket: members; per shard: tracked DIDs.
    shard_members: Vec<Vec<u64>>,
    shard_tracked: Vec<usize>,
    status: BucketStatus,
}

impl BucketRouter {
    /// Compiles the enabled buckets, hands each shard the stored states it owns and starts
    /// the shards, each on its own arbiter. `start_cursor` is the committed cursor the state
    /// in Redis belongs to. Must run inside an actix `System`.
    pub fn new(
        cfg: &BucketsConfig,
        buckets: Arc<[CompiledBucket]>,
        loaded: Vec<LoadedBucket>,
        start_cursor: Option<u64>,
        downstream: Recipient<PushBatch>,
    ) -> BucketRouter {
        let n = cfg.shard_count().max(1);
        let at = start_cursor.unwrap_or(0);
        let mut parts: Vec<Vec<LoadedState>> = (0..n).map(|_| Vec::new()).collect();
        let mut infos = Vec::with_capacity(buckets.len());
        let mut first_ops = Vec::new();
        for (i, (b, l)) in buckets.iter().zip(loaded).enumerate() {
            let changed = l.criteria_changed(b);
            if changed {
                warn!(bucket = %b.id, stored = ?l.stored_hash, new = %b.criteria_hash, members_leave_at = at,
                    "bucket criteria changed since the last run: members leave (reason criteria_changed), tracking restarts");
                metrics::counter!("jetstream_ingestor_bucket_criteria_changes_total", "bucket" => b.id.to_string()).increment(1);
            }
            if l.stored_hash.as_deref() != Some(b.criteria_hash.as_str()) {
                first_ops.push(StateOp {
                    key: b.meta_key.clone(),
                    field: "criteria_hash".to_owned(),
                    value: Some(b.criteria_hash.clone()),
                });
            }
            infos.push(BucketInfo {
                id: b.id.to_string(),
                members: 0,
                criteria_hash: b.criteria_hash.clone(),
                stored_criteria_hash: l.stored_hash.clone(),
                criteria_changed: changed,
            });
            let bucket = u16::try_from(i).unwrap_or(u16::MAX);
            for (did, slot) in l.states {
                let shard = shard_of(&did, n);
                parts[shard].push((bucket, did, slot, changed.then_some(at)));
            }
        }
        let mut arbiters = Vec::with_capacity(n);
        let mut shards = Vec::with_capacity(n);
        for (i, part) in parts.into_iter().enumerate() {
            let arbiter = Arbiter::new();
            shards.push(BucketShard::start_on(
                &arbiter.handle(),
                i,
                buckets.clone(),
                part,
            ));
            arbiters.push(arbiter);
        }
        BucketRouter {
            disabled: cfg
                .buckets
                .iter()
                .filter(|d| !d.enabled)
                .map(|d| d.id.clone())
                .collect(),
            cache: HashMap::new(),
            shard_members: vec![vec![0; buckets.len()]; n],
            shard_tracked: vec![0; n],
            buckets,
            shards,
            _arbiters: arbiters,
            downstream,
            in_order: VecDeque::new(),
            applied_to: at,
            first_ops,
            first: true,
            status: BucketStatus {
                shards: n,
                buckets: infos,
                ..BucketStatus::default()
            },
        }
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

    /// The relevant events per shard, and the batch watermark.
    fn split(&mut self, batch: &Batch) -> (Vec<Vec<ShardEvent>>, u64, usize) {
        let threshold = self.applied_to;
        let mut clock = threshold;
        let mut per_shard: Vec<Vec<ShardEvent>> =
            (0..self.shards.len()).map(|_| Vec::new()).collect();
        let (mut relevant, mut skipped) = (0usize, 0u64);
        for item in &batch.items {
            let Item::Event(Event::Commit(c)) = item else {
                continue;
            };
            let Some(cand) = self.candidates(&c.collection) else {
                continue;
            };
            if c.time_us <= threshold {
                skipped += 1;
                continue;
            }
            clock = clock.max(c.time_us);
            relevant += 1;
            per_shard[shard_of(&c.did, self.shards.len())].push(ShardEvent {
                did: c.did.clone(),
                time_us: clock,
                operation: c.operation,
                leaves: cand.leaves,
                record: if cand.needs_record {
                    c.record.clone()
                } else {
                    None
                },
            });
        }
        if skipped > 0 {
            metrics::counter!("jetstream_ingestor_bucket_events_skipped_total", "reason" => "already_applied").increment(skipped);
            self.status.events_skipped += skipped;
        }
        (per_shard, clock.max(batch.cursor.unwrap_or(0)), relevant)
    }

    /// Forwards every finished batch at the front, in order (as the verifier pool does).
    fn forward_ready(&mut self, ctx: &mut Context<Self>) {
        while matches!(self.in_order.front(), Some((_, Some(_)))) {
            let Some((_, Some(batch))) = self.in_order.pop_front() else {
                break;
            };
            let send = self.downstream.send(PushBatch(batch));
            ctx.wait(send.into_actor(self).map(|res, _act, _ctx| {
                if let Err(e) = res {
                    error!(error = %e, "writer is gone; stopping");
                    System::current().stop_with_code(70);
                }
            }));
        }
    }

    fn update_gauges(&mut self) {
        let tracked: usize = self.shard_tracked.iter().sum();
        self.status.tracked_dids = tracked as u64;
        metrics::gauge!("jetstream_ingestor_bucket_tracked_dids").set(tracked as f64);
        for (i, info) in self.status.buckets.iter_mut().enumerate() {
            info.members = self
                .shard_members
                .iter()
                .map(|m| m.get(i).copied().unwrap_or(0))
                .sum();
            metrics::gauge!("jetstream_ingestor_bucket_members", "bucket" => info.id.clone())
                .set(info.members as f64);
        }
    }
}

impl Actor for BucketRouter {
    type Context = Context<Self>;
}

impl Handler<PushBatch> for BucketRouter {
    type Result = ();

    fn handle(&mut self, PushBatch(batch): PushBatch, ctx: &mut Self::Context) {
        let seq = batch.seq;
        let (per_shard, watermark, relevant) = self.split(&batch);
        let advanced = watermark > self.applied_to;
        self.applied_to = self.applied_to.max(watermark);
        self.status.events_evaluated += relevant as u64;
        self.status.applied_to = self.applied_to;
        if relevant == 0 && !advanced && !self.first {
            // Nothing can change: no event for the buckets, no time passed.
            self.in_order.push_back((seq, Some(batch)));
            self.forward_ready(ctx);
            return;
        }
        self.in_order.push_back((seq, None));
        let mut batch = Some(batch);
        let first_ops = if std::mem::take(&mut self.first) {
            std::mem::take(&mut self.first_ops)
        } else {
            Vec::new()
        };
        let work = join_all(
            self.shards
                .iter()
                .zip(per_shard)
                .map(|(s, events)| s.send(EvaluateBatch { events, watermark })),
        );
        ctx.spawn(work.into_actor(self).map(move |results, act, ctx| {
            let mut transitions = Vec::new();
            let mut ops = first_ops;
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Ok(Ok(out)) => {
                        transitions.extend(out.transitions);
                        ops.extend(out.ops);
                        act.shard_members[i] = out.members;
                        act.shard_tracked[i] = out.tracked_dids;
                    }
                    Ok(Err(e)) => {
                        error!(error = %e, seq, "bucket evaluation failed; stopping rather than commit a batch without its transitions");
                        System::current().stop_with_code(70);
                        return;
                    }
                    Err(e) => {
                        error!(error = %e, seq, shard = i, "bucket shard unreachable; stopping");
                        System::current().stop_with_code(70);
                        return;
                    }
                }
            }
            transitions.sort_by(|a, b| {
                (a.time_us, &a.bucket, &a.did, a.kind).cmp(&(b.time_us, &b.bucket, &b.did, b.kind))
            });
            for t in &transitions {
                metrics::counter!("jetstream_ingestor_bucket_transitions_total",
                    "bucket" => t.bucket.to_string(), "transition" => t.kind.as_str(), "reason" => t.reason)
                .increment(1);
            }
            act.status.transitions += transitions.len() as u64;
            let Some(mut batch) = batch.take() else {
                return;
            };
            batch.items.extend(transitions.into_iter().map(Item::Transition));
            batch.items.extend(ops.into_iter().map(Item::State));
            if let Some(slot) = act.in_order.iter_mut().find(|(s, b)| *s == seq && b.is_none()) {
                slot.1 = Some(batch);
            }
            act.update_gauges();
            act.forward_ready(ctx);
        }));
    }
}

impl Handler<GetBucketStatus> for BucketRouter {
    type Result = MessageResult<GetBucketStatus>;

    fn handle(&mut self, _: GetBucketStatus, _ctx: &mut Self::Context) -> Self::Result {
        let mut s = self.status.clone();
        s.disabled = self.disabled.clone();
        MessageResult(s)
    }
}

/// Replace the bucket state with what Redis holds (after a Redis rollback, when nothing is in
/// flight): the shards are rebuilt from `loaded`, which belongs to `stored_cursor`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadBuckets {
    pub cfg: BucketsConfig,
    pub loaded: Vec<LoadedBucket>,
    pub stored_cursor: Option<u64>,
}

impl Handler<ReloadBuckets> for BucketRouter {
    type Result = ();

    fn handle(&mut self, msg: ReloadBuckets, _ctx: &mut Self::Context) {
        let fresh = BucketRouter::new(
            &msg.cfg,
            self.buckets.clone(),
            msg.loaded,
            msg.stored_cursor,
            self.downstream.clone(),
        );
        for a in &self._arbiters {
            a.stop();
        }
        info!(stored_cursor = ?msg.stored_cursor, "bucket state reloaded from Redis");
        *self = fresh;
    }
}
