//! Batching never changes what the buckets apply: one fixed sequence of frames with
//! duplicates (adjacent, in one batch, and later), distinct events of one DID sharing a
//! `time_us` (two and three at once), a relevant event at the time of an irrelevant one, an
//! out-of-order event, plus a seeded sequence dense in both, goes through the router's pure
//! core ([`Intake`]) and the shards' ([`Tracker`]) in batches of every size, with replays of
//! the last frames after a reconnect and a restart from the stored state at every boundary.
//! Transitions and the final stored state are the same every time, and the fixed part's
//! transitions are the hand-computed ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde_json::json;
use serde_json::value::RawValue;

use super::applied::{self, Applied, Mark};
use super::criteria::CompiledBucket;
use super::intake::Intake;
use super::state::decode;
use super::tests::{S, compile};
use super::tracker::Tracker;
use crate::messages::Item;
use crate::model::{CommitEvent, Event, IdentityEvent, Operation};

fn buckets() -> Arc<[CompiledBucket]> {
    compile(json!([
        { "id": "twice", "min_dwell": "1s",
          "criteria": { "collection": "app.bsky.feed.post", "check": "count", "operator": "gte", "value": 2, "within": "10s" }},
        { "id": "three", "entry_limit": "once",
          "criteria": { "collection": "app.bsky.feed.post", "check": "count", "operator": "gte", "value": 3, "within": "10s" }},
        { "id": "quiet",
          "criteria": { "not": { "collection": "app.bsky.feed.*", "check": "count", "operator": "gte", "value": 2, "within": "7s" }}},
    ]))
}

/// A frame: a commit (did, collection, rkey, rev, time) or an identity event (did, time).
#[derive(Clone, Debug)]
enum Spec {
    Commit(&'static str, &'static str, String, &'static str, u64),
    Identity(&'static str, u64),
}

fn post(did: &'static str, rkey: &str, t: u64) -> Spec {
    Spec::Commit(did, "app.bsky.feed.post", rkey.to_owned(), "3l", t)
}

fn item(s: &Spec) -> Item {
    match s {
        Spec::Commit(did, collection, rkey, rev, t) => Item::Event(Event::Commit(CommitEvent {
            did: (*did).to_owned(),
            time_us: *t,
            rev: (*rev).to_owned(),
            operation: Operation::Create,
            collection: (*collection).to_owned(),
            rkey: rkey.clone(),
            record: RawValue::from_string("{}".to_owned()).ok(),
            cid: None,
            verdict: None,
        })),
        Spec::Identity(did, t) => Item::Event(Event::Identity(IdentityEvent {
            did: (*did).to_owned(),
            time_us: *t,
            seq: Some(1),
            handle: None,
            time: None,
            raw: RawValue::from_string("{}".to_owned()).expect("json"),
        })),
    }
}

fn time(s: &Spec) -> u64 {
    match s {
        Spec::Commit(.., t) | Spec::Identity(_, t) => *t,
    }
}

/// The hand-written part, in arrival order.
fn fixed() -> Vec<Spec> {
    vec![
        post("a", "a1", S),
        post("same", "s1", S),
        // Two posts of one commit: same time, same rev, distinct record keys.
        post("twins", "t1", 2 * S),
        post("twins", "t2", 2 * S),
        // One post sent twice in a row.
        post("dup", "d1", 3 * S),
        post("dup", "d1", 3 * S),
        post("late", "l1", 3 * S + 600_000),
        // A frame no bucket looks at, then a post at its very time.
        Spec::Identity("same", 4 * S),
        Spec::Commit("x", "xyz.other.thing", "o1".into(), "3l", 4 * S),
        post("same", "s2", 4 * S),
        // The same post again later, and a distinct post older than what came before.
        post("dup", "d1", 3 * S),
        post("late", "l0", 3 * S + 500_000),
        post("twins", "t1", 2 * S),
        // Three at once (the "three" bucket, entry limit once), one of them twice.
        post("b", "b1", 6 * S),
        post("b", "b2", 6 * S),
        post("b", "b2", 6 * S),
        post("b", "b3", 6 * S),
        Spec::Identity("c", 20 * S),
        post("c", "c1", 30 * S),
    ]
}

/// A dense sequence: few DIDs, few distinct times, many duplicates and equal times.
fn generated(seed: u64, n: usize, from: u64) -> Vec<Spec> {
    const DIDS: [&str; 4] = ["g0", "g1", "g2", "g3"];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = from;
    let mut out: Vec<Spec> = Vec::with_capacity(n);
    for i in 0..n {
        if rng.random_bool(0.4) {
            t += rng.random_range(1..3 * S);
        }
        let roll = rng.random_range(0..10u32);
        let spec = if roll < 2 && !out.is_empty() {
            // Again, one of the last few frames (a duplicate, adjacent or not).
            let back = rng.random_range(1..=out.len().min(4));
            out[out.len() - back].clone()
        } else if roll == 2 {
            Spec::Identity(DIDS[rng.random_range(0..4)], t)
        } else {
            let did = DIDS[rng.random_range(0..4)];
            let coll = if roll == 3 {
                "app.bsky.feed.like"
            } else {
                "app.bsky.feed.post"
            };
            Spec::Commit(did, coll, format!("r{i}"), "3l", t)
        };
        out.push(spec);
    }
    out
}

/// (time, bucket, did, kind, epoch, reason)
type Row = (u64, String, String, &'static str, u32, &'static str);

/// The router and the shards, without actix, with a map standing in for Redis.
struct Pipeline {
    b: Arc<[CompiledBucket]>,
    shards: usize,
    intake: Intake,
    trackers: Vec<Tracker>,
    redis: BTreeMap<(String, String), String>,
    committed: Option<u64>,
    session: u64,
    rows: Vec<Row>,
}

impl Pipeline {
    fn new(b: &Arc<[CompiledBucket]>, shards: usize) -> Pipeline {
        let b = b.clone();
        Pipeline {
            intake: Intake::new(b.clone(), shards, Applied::start(None, None)),
            trackers: (0..shards).map(|_| Tracker::new(b.clone())).collect(),
            b,
            shards,
            redis: BTreeMap::new(),
            committed: None,
            session: 1,
            rows: Vec::new(),
        }
    }

    /// One batch, as the reader cuts it (cursor = its newest frame), committed at once.
    fn batch(&mut self, specs: &[Spec]) {
        let items: Vec<Item> = specs.iter().map(item).collect();
        let cursor = specs.iter().map(time).max();
        let split = self.intake.split(&items, cursor, self.session);
        let mut ops: Vec<_> = split.mark.into_iter().collect();
        for (t, events) in self.trackers.iter_mut().zip(split.per_shard) {
            let out = t.process(events, split.watermark);
            ops.extend(out.ops);
            self.rows.extend(out.transitions.iter().map(|t| {
                let kind = t.kind.as_str();
                let bucket = t.bucket.to_string();
                (t.time_us, bucket, t.did.clone(), kind, t.epoch, t.reason)
            }));
        }
        for op in ops {
            match op.value {
                Some(v) => self.redis.insert((op.key, op.field), v),
                None => self.redis.remove(&(op.key, op.field)),
            };
        }
        self.committed = self.committed.max(cursor);
    }

    /// A new session (the reader reconnected).
    fn reconnect(&mut self) {
        self.session += 1;
    }

    /// kill -9 and start: everything in memory is rebuilt from the stored state, as
    /// `load` and the router do.
    fn restart(&mut self) {
        let mark = self
            .redis
            .get(&(applied::KEY.to_owned(), applied::FIELD.to_owned()))
            .map(|t| Mark::decode(t).expect("the stored mark reads back"));
        let applied = Applied::start(self.committed, mark);
        self.intake = Intake::new(self.b.clone(), self.shards, applied);
        self.trackers = (0..self.shards)
            .map(|_| Tracker::new(self.b.clone()))
            .collect();
        for ((key, did), text) in &self.redis {
            if let Some(i) = self.b.iter().position(|b| b.state_key == *key) {
                let slot = decode(text, &self.b[i]).expect("stored state reads back");
                let shard = super::intake::shard_of(did, self.shards);
                self.trackers[shard].load(i as u16, did, slot, None);
            }
        }
        self.reconnect();
    }

    /// Transitions in the stream's order (time, bucket, DID, kind), and the stored state.
    fn result(mut self) -> (Vec<Row>, BTreeMap<(String, String), String>) {
        self.rows
            .sort_by(|a, b| (a.0, &a.1, &a.2, a.3).cmp(&(b.0, &b.1, &b.2, b.3)));
        (self.rows, self.redis)
    }
}

/// How a run cuts and disturbs the sequence.
#[derive(Clone, Copy, Debug)]
struct Plan {
    size: usize,
    shards: usize,
    /// After this many frames, a reconnect re-sends the last `replay` frames.
    reconnect_at: Option<usize>,
    replay: usize,
    /// Restart from the stored state at every batch boundary.
    restarts: bool,
}

fn run(
    b: &Arc<[CompiledBucket]>,
    specs: &[Spec],
    plan: Plan,
) -> (Vec<Row>, BTreeMap<(String, String), String>) {
    let mut p = Pipeline::new(b, plan.shards);
    let mut feed: Vec<Spec> = Vec::with_capacity(specs.len() + plan.replay);
    match plan.reconnect_at {
        Some(at) => {
            feed.extend_from_slice(&specs[..at]);
            feed.extend_from_slice(&specs[at.saturating_sub(plan.replay)..]);
        }
        None => feed.extend_from_slice(specs),
    }
    let mut i = 0;
    while i < feed.len() {
        let mut end = (i + plan.size).min(feed.len());
        if let Some(at) = plan.reconnect_at
            && i < at
            && end > at
        {
            // A session's batches end where the session does.
            end = at;
        }
        p.batch(&feed[i..end]);
        if plan.restarts {
            p.restart();
        }
        if plan.reconnect_at == Some(end) {
            p.reconnect();
        }
        i = end;
    }
    // Time passes on past every window (an empty batch with a newer cursor).
    let last = specs.iter().map(time).max().unwrap_or(0);
    p.batch(&[Spec::Identity("z", last + 100 * S)]);
    p.result()
}

fn row(t: u64, bucket: &str, did: &str, kind: &'static str, reason: &'static str) -> Row {
    (t, bucket.to_owned(), did.to_owned(), kind, 1, reason)
}

#[test]
fn the_fixed_sequence_gives_the_hand_computed_transitions() {
    let (rows, _) = run(
        &buckets(),
        &fixed(),
        Plan {
            size: 1,
            shards: 1,
            reconnect_at: None,
            replay: 0,
            restarts: false,
        },
    );
    let mut want = vec![
        // Everyone's first feed event makes "quiet" true (not ≥ 2 within 7 s).
        row(S, "quiet", "a", "entered", "criteria"),
        row(S, "quiet", "same", "entered", "criteria"),
        // Both posts of the commit count.
        row(2 * S, "twice", "twins", "entered", "criteria"),
        row(2 * S, "quiet", "twins", "entered", "criteria"),
        row(2 * S, "quiet", "twins", "left", "criteria"),
        // The post sent twice (and again later) counts once: "dup" never enters "twice".
        row(3 * S, "quiet", "dup", "entered", "criteria"),
        // The post at the time of the identity and the other commit counts.
        row(3 * S + 600_000, "quiet", "late", "entered", "criteria"),
        row(4 * S, "twice", "same", "entered", "criteria"),
        row(4 * S, "quiet", "same", "left", "criteria"),
        // Three distinct posts at once; the duplicate of b2 does not make a fourth.
        row(6 * S, "twice", "b", "entered", "criteria"),
        row(6 * S, "three", "b", "entered", "criteria"),
        row(6 * S, "quiet", "b", "entered", "criteria"),
        row(6 * S, "quiet", "b", "left", "criteria"),
        // Windows: twins' posts leave at 12 s, same's first at 11 s ("twice" within 10 s),
        // "quiet" (7 s) comes back for twins at 9 s, for same at 8 s, for b at 13 s.
        row(8 * S, "quiet", "same", "entered", "window_expired"),
        row(9 * S, "quiet", "twins", "entered", "window_expired"),
        row(11 * S, "twice", "same", "left", "window_expired"),
        row(12 * S, "twice", "twins", "left", "window_expired"),
        row(13 * S, "quiet", "b", "entered", "window_expired"),
        row(16 * S, "twice", "b", "left", "window_expired"),
        row(16 * S, "three", "b", "left", "window_expired"),
        row(30 * S, "quiet", "c", "entered", "criteria"),
    ];
    // Epochs: a second membership of the same (bucket, DID) is epoch 2.
    for r in &mut want {
        if r.1 == "quiet" && r.3 == "entered" && r.5 == "window_expired" {
            r.4 = 2;
        }
    }
    want.sort_by(|a, b| (a.0, &a.1, &a.2, a.3).cmp(&(b.0, &b.1, &b.2, b.3)));
    assert_eq!(rows, want);
}

#[test]
fn any_batching_replay_or_restart_gives_the_same_transitions_and_state() {
    let mut specs = fixed();
    specs.extend(generated(7, 40, 31 * S));
    let n = specs.len();
    let b = buckets();
    let reference = run(
        &b,
        &specs,
        Plan {
            size: n,
            shards: 1,
            reconnect_at: None,
            replay: 0,
            restarts: false,
        },
    );
    assert!(
        reference.0.len() > 25,
        "only {} transitions",
        reference.0.len()
    );
    let mut runs = 0;
    for size in 1..=n {
        // Restarts rebuild everything at every boundary: with one shard only, to stay fast.
        for (shards, restart_choices) in [(1, &[false, true][..]), (3, &[false][..])] {
            let mut plans = Vec::new();
            for &restarts in restart_choices {
                plans.push(Plan {
                    size,
                    shards,
                    reconnect_at: None,
                    replay: 0,
                    restarts,
                });
                for at in [6, 14, n / 2] {
                    for replay in [1, 3, 8] {
                        plans.push(Plan {
                            size,
                            shards,
                            reconnect_at: Some(at),
                            replay,
                            restarts,
                        });
                    }
                }
            }
            for plan in plans {
                let got = run(&b, &specs, plan);
                assert!(got.0 == reference.0, "transitions differ with {plan:?}");
                assert!(got.1 == reference.1, "stored state differs with {plan:?}");
                runs += 1;
            }
        }
    }
    assert_eq!(runs, n * 30);
}
