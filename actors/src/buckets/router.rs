//! `BucketRouter`: the actor shell of the buckets room, between the verifier pool and the
//! writer. For each batch its [`Intake`] picks the new commit events some bucket condition
//! could match (by identity: see `applied.rs`) and groups them per shard; the router sends
//! every shard its DIDs' events plus the batch watermark, merges the shards' transitions in
//! (time, bucket, DID, kind) order and appends them, with the state operations and the
//! applied mark, to the batch; batches go on to the writer in arrival order, so state lands
//! in the same atomic commit as the jobs and the cursor.
//!
//! Failure: a shard that panicked or is gone stops the process (exit 70) before the batch
//! is forwarded; the state in Redis then matches the committed cursor and a restart resumes.

use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::join_all;
use tracing::{info, warn};

use super::config::BucketsConfig;
use super::criteria::CompiledBucket;
use super::intake::shard_of;
use super::intake::{Intake, Split};
use super::load::Loaded;
use super::shard::{BucketShard, EvaluateBatch, LoadedState};
use crate::messages::{Batch, BucketInfo, BucketStatus, Fatal, GetBucketStatus, Item, PushBatch};
use crate::model::StateOp;
use crate::ordered::ReorderBuffer;

pub struct BucketRouter {
    /// The compiled buckets, for a reload ([`ReloadBuckets`]).
    buckets: Arc<[CompiledBucket]>,
    disabled: Vec<String>,
    intake: Intake,
    shards: Vec<Addr<BucketShard>>,
    _arbiters: Vec<Arbiter>,
    downstream: Recipient<PushBatch>,
    /// Batches in arrival order, by `seq`; the front is forwarded first, once evaluated.
    in_order: ReorderBuffer<Batch>,
    /// Written with the first batch: the criteria hashes of the buckets.
    first_ops: Vec<StateOp>,
    first: bool,
    /// Per shard, per bucket: members; per shard: tracked DIDs.
    shard_members: Vec<Vec<u64>>,
    /// The batch the counts above come from: batches' results may come back out of order
    /// (each is a join over every shard), and an older one must not overwrite newer counts.
    counts_seq: u64,
    shard_tracked: Vec<usize>,
    status: BucketStatus,
    /// Told when this room cannot go on (the supervisor decides).
    fatal_to: Option<Recipient<Fatal>>,
}

impl BucketRouter {
    /// Where to report an error it cannot go on from (see [`Fatal`]).
    pub fn on_fatal(mut self, to: Recipient<Fatal>) -> Self {
        self.fatal_to = Some(to);
        self
    }

    fn fatal(&self, error: String) {
        Fatal {
            room: "buckets",
            error,
        }
        .report(self.fatal_to.as_ref());
    }

    /// Compiles the enabled buckets, hands each shard the stored states it owns and starts
    /// the shards, each on its own arbiter. `start_cursor` is the committed cursor the state
    /// in Redis belongs to (with the stored applied mark, the start of the intake). Must run
    /// inside an actix `System`.
    pub fn new(
        cfg: &BucketsConfig,
        buckets: Arc<[CompiledBucket]>,
        loaded: Loaded,
        start_cursor: Option<u64>,
        downstream: Recipient<PushBatch>,
    ) -> BucketRouter {
        let n = cfg.shard_count().max(1);
        let applied = loaded.applied(start_cursor);
        let at = applied.to();
        let intake = Intake::new(buckets.clone(), n, applied);
        let mut parts: Vec<Vec<LoadedState>> = (0..n).map(|_| Vec::new()).collect();
        let mut infos = Vec::with_capacity(buckets.len());
        let mut first_ops = Vec::new();
        for (i, (b, l)) in buckets.iter().zip(loaded.buckets).enumerate() {
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
            intake,
            shard_members: vec![vec![0; buckets.len()]; n],
            counts_seq: 0,
            shard_tracked: vec![0; n],
            buckets,
            shards,
            _arbiters: arbiters,
            downstream,
            in_order: ReorderBuffer::new(),
            first_ops,
            first: true,
            fatal_to: None,
            status: BucketStatus {
                shards: n,
                buckets: infos,
                ..BucketStatus::default()
            },
        }
    }

    /// Counts what the intake skipped.
    fn count_skipped(&mut self, split: &Split) {
        for (reason, n) in [
            ("already_applied", split.already_applied),
            ("late", split.late),
        ] {
            if n > 0 {
                metrics::counter!("jetstream_ingestor_bucket_events_skipped_total", "reason" => reason)
                    .increment(n);
                self.status.events_skipped += n;
            }
        }
    }

    /// Forwards every finished batch at the front, in order (as the verifier pool does).
    fn forward_ready(&mut self, ctx: &mut Context<Self>) {
        while let Some(batch) = self.in_order.pop_ready() {
            let send = self.downstream.send(PushBatch(batch));
            ctx.wait(send.into_actor(self).map(|res, act, _ctx| {
                if let Err(e) = res {
                    act.fatal(format!("the writer is gone: {e}"));
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
        let split = self.intake.split(&batch.items, batch.cursor, batch.session);
        self.count_skipped(&split);
        let Split {
            per_shard,
            watermark,
            advanced,
            relevant,
            mark,
            ..
        } = split;
        self.status.events_evaluated += relevant as u64;
        self.status.applied_to = self.intake.applied_to();
        if relevant == 0 && !advanced && mark.is_none() && !self.first {
            // Nothing can change: no event for the buckets, no time passed.
            self.in_order.push_ready(seq, batch);
            self.forward_ready(ctx);
            return;
        }
        self.in_order.reserve(seq);
        let mut batch = Some(batch);
        // The criteria hashes (first batch only), then the applied mark, then the shards'.
        let mut lead_ops: Vec<StateOp> = if std::mem::take(&mut self.first) {
            std::mem::take(&mut self.first_ops)
        } else {
            Vec::new()
        };
        lead_ops.extend(mark);
        let work = join_all(
            self.shards
                .iter()
                .zip(per_shard)
                .map(|(s, events)| s.send(EvaluateBatch { events, watermark })),
        );
        ctx.spawn(work.into_actor(self).map(move |results, act, ctx| {
            let mut transitions = Vec::new();
            let mut ops = lead_ops;
            let newest = seq >= act.counts_seq;
            if newest {
                act.counts_seq = seq;
            }
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Ok(Ok(out)) => {
                        transitions.extend(out.transitions);
                        ops.extend(out.ops);
                        if newest {
                            act.shard_members[i] = out.members;
                            act.shard_tracked[i] = out.tracked_dids;
                        }
                    }
                    Ok(Err(e)) => {
                        act.fatal(format!("bucket evaluation failed at batch {seq} (a batch is never committed without its transitions): {e}"));
                        return;
                    }
                    Err(e) => {
                        act.fatal(format!("bucket shard {i} unreachable at batch {seq}: {e}"));
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
            // No place only if a reload replaced the buffer while this batch was evaluated
            // (reloads come when nothing is in flight): it belongs to the state thrown away
            // and is dropped.
            let _ = act.in_order.fill(seq, batch);
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
/// flight): the shards and the intake are rebuilt from `loaded` (states and applied mark),
/// which belongs to `stored_cursor`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadBuckets {
    pub cfg: BucketsConfig,
    pub loaded: Loaded,
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
        let fresh = match self.fatal_to.take() {
            Some(to) => fresh.on_fatal(to),
            None => fresh,
        };
        for a in &self._arbiters {
            a.stop();
        }
        info!(stored_cursor = ?msg.stored_cursor, "bucket state reloaded from Redis");
        *self = fresh;
    }
}
