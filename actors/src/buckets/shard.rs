//! `BucketShard`: the actor shell around one [`Tracker`]. Each shard runs on its own
//! `Arbiter` (thread), owns the DIDs that hash to it, and answers one `EvaluateBatch` per
//! batch, in the order the router sent them (one sender, FIFO mailbox).
//!
//! Failure: a panic while evaluating is caught and answered as an error; the router then
//! stops the process rather than commit a batch without its transitions (the state in Redis
//! is still the one of the last commit, so a restart resumes exactly).

use std::sync::Arc;

use actix::prelude::*;
use tracing::error;

use super::criteria::CompiledBucket;
use super::membership::Slot;
use super::tracker::{ShardEvent, ShardOutput, Tracker};

/// A state read from Redis: (bucket, DID, state, `Some(time)` if its criteria changed).
pub type LoadedState = (u16, String, Slot, Option<u64>);

/// Evaluate a batch's events for this shard's DIDs, then run timers up to `watermark`.
pub struct EvaluateBatch {
    pub events: Vec<ShardEvent>,
    pub watermark: u64,
}

impl Message for EvaluateBatch {
    type Result = Result<ShardOutput, String>;
}

pub struct BucketShard {
    tracker: Tracker,
    index: usize,
}

impl BucketShard {
    /// Starts shard `index` on `arbiter` with the states it owns.
    pub fn start_on(
        arbiter: &ArbiterHandle,
        index: usize,
        buckets: Arc<[CompiledBucket]>,
        loaded: Vec<LoadedState>,
    ) -> Addr<BucketShard> {
        BucketShard::start_in_arbiter(arbiter, move |ctx: &mut Context<BucketShard>| {
            // Bounded by the reader's window anyway; room for every batch in flight.
            ctx.set_mailbox_capacity(64);
            let mut tracker = Tracker::new(buckets);
            for (bucket, did, slot, changed_at) in loaded {
                tracker.load(bucket, &did, slot, changed_at);
            }
            BucketShard { tracker, index }
        })
    }
}

impl Actor for BucketShard {
    type Context = Context<Self>;
}

impl Handler<EvaluateBatch> for BucketShard {
    type Result = MessageResult<EvaluateBatch>;

    fn handle(&mut self, msg: EvaluateBatch, _ctx: &mut Self::Context) -> Self::Result {
        let tracker = &mut self.tracker;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tracker.process(msg.events, msg.watermark)
        }));
        MessageResult(outcome.map_err(|_| {
            error!(
                shard = self.index,
                "bucket shard panicked while evaluating a batch"
            );
            metrics::counter!("jetstream_ingestor_bucket_shard_panics_total").increment(1);
            format!("bucket shard {} panicked", self.index)
        }))
    }
}
