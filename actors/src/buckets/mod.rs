//! Buckets room: per-DID segments (docs/design.md §4). Bucket definitions (`config`, `parse`),
//! their compiled criteria (`criteria`), the membership state machine on event time
//! (`membership`), its stored form (`state`), one shard's pure core (`tracker`), which
//! events are new by identity (`applied`) and the router's pure core (`intake`), the
//! start-up read of the state (`load`), and the actor shells: `BucketRouter` (between the
//! verifier pool and the writer) and `BucketShard`s (one per arbiter thread).
//!
//! Talks to: nothing but `messages` and `model` (and Redis directly, once, at start).

pub mod applied;
pub mod config;
pub mod criteria;
pub mod intake;
pub mod load;
pub mod membership;
pub mod parse;
mod parse_condition;
pub mod router;
pub mod shard;
pub mod state;
pub mod tracker;

#[cfg(test)]
mod intake_tests;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;

pub use config::{BucketDef, BucketsConfig, BucketsSection};
pub use criteria::CompiledBucket;
pub use parse::{BucketConfigError, parse_bucket_file};
pub use router::BucketRouter;

use std::sync::Arc;

/// The enabled buckets, compiled, in definition order.
pub fn compile(cfg: &BucketsConfig) -> Arc<[CompiledBucket]> {
    cfg.buckets
        .iter()
        .filter(|d| d.enabled)
        .map(CompiledBucket::compile)
        .collect()
}
