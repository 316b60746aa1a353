//! Exact replay at the level of one shard: a random event sequence over buckets using every
//! policy gives the same transitions whether it is processed as one batch, in random
//! batches, or in random batches with the state written out (as the commit does) and read
//! back into a fresh tracker after every batch (a crash and restart at every boundary).

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde_json::json;

use super::criteria::CompiledBucket;
use super::state::decode;
use super::tests::{S, Seen, compile, event};
use super::tracker::{ShardEvent, Tracker};
use crate::model::Operation;

fn buckets() -> std::sync::Arc<[CompiledBucket]> {
    compile(json!([
        { "id": "posters", "min_dwell": "3s",
          "criteria": { "collection": "app.bsky.feed.post", "check": "count", "operator": "gte", "value": 3, "within": "10s" }},
        { "id": "lurkers", "entry_limit": "once_per_period", "entry_period": "20s",
          "criteria": { "all": [
            { "collection": "app.bsky.feed.like", "within": "5s" },
            { "collection": "app.bsky.feed.post", "check": "not_exists", "within": "30s" } ]}},
        { "id": "burst", "max_dwell": "4s",
          "criteria": { "collection": "app.bsky.graph.*", "operation": "create", "check": "count", "operator": "gt", "value": 1, "within": "6s" }},
        { "id": "pt", "entry_limit": "once",
          "criteria": { "collection": "app.bsky.feed.post", "record": [{ "path": "langs", "contains": "pt" }], "within": "8s" }},
        { "id": "quiet",
          "criteria": { "not": { "collection": "app.bsky.feed.*", "check": "count", "operator": "gte", "value": 2, "within": "7s" }}},
    ]))
}

/// Events as (did, time, collection, op, langs) so they can be rebuilt for each run.
type Spec = (String, u64, &'static str, Operation, &'static str);

fn specs(seed: u64, n: usize) -> Vec<Spec> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = 0u64;
    (0..n)
        .map(|_| {
            t += rng.random_range(1..(2 * S / 3));
            let did = format!("did:{}", rng.random_range(0..12u32));
            let (coll, op) = match rng.random_range(0..10u32) {
                0..4 => ("app.bsky.feed.post", Operation::Create),
                4..7 => ("app.bsky.feed.like", Operation::Create),
                7 => ("app.bsky.graph.follow", Operation::Create),
                8 => ("app.bsky.graph.block", Operation::Delete),
                _ => ("xyz.other.thing", Operation::Create),
            };
            let langs = if rng.random_bool(0.3) { "pt" } else { "en" };
            (did, t, coll, op, langs)
        })
        .collect()
}

fn to_events(b: &[CompiledBucket], specs: &[Spec]) -> Vec<ShardEvent> {
    specs
        .iter()
        .map(|(did, t, c, op, langs)| event(b, did, *t, c, *op, Some(json!({ "langs": [langs] }))))
        .filter(|e| !e.leaves.is_empty())
        .collect()
}

fn key(s: &Seen) -> (u64, String, &'static str, u32) {
    (s.4, s.0.clone(), s.1, s.2)
}

/// Runs `specs` in random batches; with `restart`, through stored state at every boundary.
fn run(specs: &[Spec], split_seed: Option<u64>, restart: bool) -> Vec<(String, Seen)> {
    let b = buckets();
    let mut tracker = Tracker::new(b.clone());
    let mut redis: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut out = Vec::new();
    let end = specs.last().map_or(0, |s| s.1) + 100 * S;
    let mut rng = split_seed.map(StdRng::seed_from_u64);
    let mut i = 0;
    while i < specs.len() {
        let len = match &mut rng {
            Some(r) => r.random_range(1..40usize),
            None => specs.len(),
        };
        let part = &specs[i..(i + len).min(specs.len())];
        i += part.len();
        let next = specs.get(i).map_or(end, |s| s.1);
        let last = part.last().map_or(0, |s| s.1);
        // Any watermark from the batch's last event to just before the next event.
        let watermark = match &mut rng {
            Some(r) => r.random_range(last..next),
            None => end,
        };
        let result = tracker.process(to_events(&b, part), watermark);
        for t in &result.transitions {
            out.push((
                t.bucket.to_string(),
                (t.did.clone(), t.kind.as_str(), t.epoch, t.reason, t.time_us),
            ));
        }
        for op in result.ops {
            match op.value {
                Some(v) => redis.insert((op.key, op.field), v),
                None => redis.remove(&(op.key, op.field)),
            };
        }
        if restart {
            tracker = Tracker::new(b.clone());
            for ((k, did), v) in &redis {
                if let Some(bi) = b.iter().position(|x| x.state_key == *k) {
                    let slot = decode(v, &b[bi]).expect("stored state reads back");
                    tracker.load(bi as u16, did, slot, None);
                }
            }
        }
    }
    if rng.is_some() {
        let result = tracker.process(Vec::new(), end);
        for t in &result.transitions {
            out.push((
                t.bucket.to_string(),
                (t.did.clone(), t.kind.as_str(), t.epoch, t.reason, t.time_us),
            ));
        }
    }
    out.sort_by(|a, b| (key(&a.1), &a.0).cmp(&(key(&b.1), &b.0)));
    out
}

#[test]
fn batching_and_restarts_never_change_the_transitions() {
    for seed in 1..=12u64 {
        let specs = specs(seed, 1500);
        let whole = run(&specs, None, false);
        let per_bucket = |id: &str| whole.iter().filter(|(b, _)| b == id).count();
        for id in ["posters", "lurkers", "burst", "pt", "quiet"] {
            assert!(per_bucket(id) > 0, "seed {seed}: bucket {id} never moved");
        }
        for split in [seed * 100, seed * 100 + 1] {
            assert_eq!(
                run(&specs, Some(split), false),
                whole,
                "seed {seed} split {split}"
            );
            assert_eq!(
                run(&specs, Some(split), true),
                whole,
                "seed {seed} split {split} with restarts"
            );
        }
    }
}

#[test]
fn every_reason_appears_in_the_random_sequences() {
    let all: Vec<&'static str> = (1..=4u64)
        .flat_map(|seed| run(&specs(seed, 1500), None, false))
        .map(|(_, s)| s.3)
        .collect();
    for reason in ["criteria", "window_expired", "max_dwell"] {
        assert!(all.contains(&reason), "{reason} never seen");
    }
}

#[test]
fn transitions_alternate_and_epochs_grow() {
    let whole = run(&specs(7, 3000), None, false);
    let mut last: BTreeMap<(String, String), (&str, u32)> = BTreeMap::new();
    for (bucket, (did, kind, epoch, _, _)) in &whole {
        let prev = last.insert((bucket.clone(), did.clone()), (kind, *epoch));
        match (prev, *kind) {
            (None, k) => assert_eq!(k, "entered"),
            (Some(("entered", e)), "left") => assert_eq!(e, *epoch),
            (Some(("left", e)), "entered") => assert!(*epoch > e),
            other => panic!("{bucket} {did}: bad sequence {other:?}"),
        }
    }
}
