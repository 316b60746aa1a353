//! Hand-written event sequences through a shard's pure core ([`Tracker`]) with the exact
//! transitions expected: every criteria kind, window expiry by watermark alone, `min_dwell`
//! deferral, `max_dwell`, the three entry limits and epochs. Bucket definitions go through
//! the real parser. Batching invariance and stored-state round trips are in `replay_tests`,
//! state operations, criteria changes and memory in `store_tests`.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::criteria::{CompiledBucket, candidate_leaves};
use super::parse::parse_bucket_file;
use super::tracker::{ShardEvent, ShardOutput, Tracker};
use crate::model::Operation;

/// One second of event time.
pub const S: u64 = 1_000_000;

pub fn compile(defs: Value) -> Arc<[CompiledBucket]> {
    let defs = parse_bucket_file(&json!({ "buckets": defs })).expect("valid definitions");
    defs.iter().map(CompiledBucket::compile).collect()
}

pub fn event(
    buckets: &[CompiledBucket],
    did: &str,
    t: u64,
    collection: &str,
    op: Operation,
    record: Option<Value>,
) -> ShardEvent {
    let (leaves, needs_record) = candidate_leaves(buckets, collection);
    ShardEvent {
        did: did.to_owned(),
        time_us: t,
        operation: op,
        leaves: leaves.into(),
        record: record
            .filter(|_| needs_record)
            .map(|r| RawValue::from_string(r.to_string()).expect("json")),
    }
}

/// (did, entered/left, epoch, reason, time in µs)
pub type Seen = (String, &'static str, u32, &'static str, u64);

pub fn seen(out: &ShardOutput) -> Vec<Seen> {
    let mut v: Vec<Seen> = out
        .transitions
        .iter()
        .map(|t| (t.did.clone(), t.kind.as_str(), t.epoch, t.reason, t.time_us))
        .collect();
    v.sort_by_key(|s| s.4);
    v
}

pub struct H {
    pub b: Arc<[CompiledBucket]>,
    pub t: Tracker,
}

impl H {
    pub fn new(defs: Value) -> H {
        let b = compile(defs);
        H {
            t: Tracker::new(b.clone()),
            b,
        }
    }

    pub fn post(&self, did: &str, t: u64) -> ShardEvent {
        event(
            &self.b,
            did,
            t,
            "app.bsky.feed.post",
            Operation::Create,
            Some(json!({"text": "x"})),
        )
    }

    pub fn like(&self, did: &str, t: u64) -> ShardEvent {
        event(
            &self.b,
            did,
            t,
            "app.bsky.feed.like",
            Operation::Create,
            Some(json!({})),
        )
    }

    pub fn run(&mut self, events: Vec<ShardEvent>, watermark: u64) -> Vec<Seen> {
        seen(&self.t.process(events, watermark))
    }
}

pub fn e(did: &str, kind: &'static str, epoch: u32, reason: &'static str, t: u64) -> Seen {
    (did.to_owned(), kind, epoch, reason, t)
}

pub fn posters(extra: Value) -> Value {
    let mut b = json!({
        "id": "posters",
        "criteria": { "collection": "app.bsky.feed.post", "check": "count", "operator": "gte",
                      "value": 3, "within": "10s" },
    });
    if let (Some(m), Some(x)) = (b.as_object_mut(), extra.as_object()) {
        m.extend(x.clone());
    }
    json!([b])
}

#[test]
fn count_enters_on_the_third_post_and_leaves_by_watermark_alone() {
    let mut h = H::new(posters(json!({})));
    let evs = vec![
        h.post("a", 0),
        h.post("a", S),
        h.post("b", S),
        h.post("a", 2 * S),
    ];
    assert_eq!(
        h.run(evs, 2 * S),
        vec![e("a", "entered", 1, "criteria", 2 * S)]
    );
    // Nothing more from "a": the oldest of its three posts leaves the window at 10 s.
    assert_eq!(h.run(vec![], 9 * S), vec![]);
    assert_eq!(
        h.run(vec![], 30 * S),
        vec![e("a", "left", 1, "window_expired", 10 * S)]
    );
    // Both DIDs' windows are empty and neither is a member: only "a"'s history is kept.
    assert_eq!(h.t.tracked_dids(), 1);
    let evs = vec![
        h.post("a", 40 * S),
        h.post("a", 41 * S),
        h.post("a", 42 * S),
    ];
    assert_eq!(
        h.run(evs, 42 * S),
        vec![e("a", "entered", 2, "criteria", 42 * S)]
    );
}

#[test]
fn exists_and_not_exists_since_tracking_began() {
    // "liked in the last 24 h but never posted"
    let mut h = H::new(json!([{ "id": "lurkers", "criteria": { "all": [
        { "collection": "app.bsky.feed.like", "check": "exists", "within": "24h" },
        { "collection": "app.bsky.feed.post", "check": "not_exists" },
    ]}}]));
    let day = 86_400 * S;
    let evs = vec![
        h.like("a", 0),
        h.like("b", S),
        h.post("b", 2 * S),
        h.post("a", 3 * S),
    ];
    assert_eq!(
        h.run(evs, 3 * S),
        vec![
            e("a", "entered", 1, "criteria", 0),
            e("b", "entered", 1, "criteria", S),
            e("b", "left", 1, "criteria", 2 * S),
            e("a", "left", 1, "criteria", 3 * S),
        ]
    );
    // They posted once: no like brings them back, even days later.
    let evs = vec![h.like("a", 2 * day)];
    assert_eq!(h.run(evs, 2 * day), vec![]);
    let evs = vec![h.like("c", 2 * day)];
    assert_eq!(
        h.run(evs, 3 * day),
        vec![
            e("c", "entered", 1, "criteria", 2 * day),
            e("c", "left", 1, "window_expired", 3 * day),
        ]
    );
}

#[test]
fn any_not_and_count_below_enter_by_expiry_too() {
    // "fewer than 2 posts in 10 s": true after the first post, false at the second, true
    // again when the first leaves the window (an entry caused by time).
    let mut h = H::new(json!([{ "id": "quiet", "criteria": { "any": [
        { "collection": "app.bsky.feed.post", "check": "count", "operator": "lt", "value": 2, "within": "10s" },
        { "not": { "collection": "app.bsky.feed.like", "check": "exists" } },
    ]}}]));
    // The first evaluation (a like at 0) already finds "fewer than 2 posts" true.
    let evs = vec![h.like("a", 0), h.post("a", S), h.post("a", 2 * S)];
    assert_eq!(
        h.run(evs, 20 * S),
        vec![
            e("a", "entered", 1, "criteria", 0),
            e("a", "left", 1, "criteria", 2 * S),
            e("a", "entered", 2, "window_expired", 11 * S),
        ]
    );
}

#[test]
fn record_predicates_and_operations() {
    let mut h = H::new(json!([{ "id": "pt", "criteria": {
        "collection": "app.bsky.feed.*", "operation": "create",
        "record": [{ "path": "langs", "contains": "pt" }, { "path": "reply", "exists": false }],
        "check": "exists", "within": "1h" }}]));
    let b = h.b.clone();
    let post = |did: &str, t: u64, rec: Value| {
        event(
            &b,
            did,
            t,
            "app.bsky.feed.post",
            Operation::Create,
            Some(rec),
        )
    };
    let evs = vec![
        post("en", 0, json!({"langs": ["en"]})),
        post("reply", 0, json!({"langs": ["pt"], "reply": {"root": {}}})),
        event(
            &b,
            "upd",
            0,
            "app.bsky.feed.post",
            Operation::Update,
            Some(json!({"langs": ["pt"]})),
        ),
        event(&b, "del", 0, "app.bsky.feed.post", Operation::Delete, None),
        event(
            &b,
            "graph",
            0,
            "app.bsky.graph.follow",
            Operation::Create,
            Some(json!({"langs": ["pt"]})),
        ),
        post("pt", S, json!({"langs": ["de", "pt"]})),
    ];
    assert_eq!(h.run(evs, S), vec![e("pt", "entered", 1, "criteria", S)]);
    assert_eq!(h.t.tracked_dids(), 1, "non-matching events create no state");
}

#[test]
fn min_dwell_defers_a_leave_and_cancels_it_when_criteria_hold_again() {
    let mut h = H::new(json!([{ "id": "d", "min_dwell": "20s",
        "criteria": { "collection": "app.bsky.feed.post", "within": "5s" }}]));
    // a: falls at 5 s, still false at 20 s → leaves at 20 s with the reason of the fall.
    // b: falls at 5 s, holds again at 10 s (cancelled), falls at 15 s, leaves at 20 s.
    // c: falls at 5 s, holds again at 10 s and 18 s; falls at 23 s, old enough: leaves then.
    let evs = vec![h.post("a", 0), h.post("b", 0), h.post("c", 0)];
    h.run(evs, 0);
    let evs = vec![
        h.post("b", 10 * S),
        h.post("c", 10 * S),
        h.post("c", 18 * S),
    ];
    assert_eq!(h.run(evs, 18 * S), vec![]);
    assert_eq!(
        h.run(vec![], 60 * S),
        vec![
            e("a", "left", 1, "window_expired", 20 * S),
            e("b", "left", 1, "window_expired", 20 * S),
            e("c", "left", 1, "window_expired", 23 * S),
        ]
    );
}

#[test]
fn max_dwell_forces_a_leave_and_reentry_needs_a_new_rising_edge() {
    let mut h = H::new(json!([{ "id": "burst", "max_dwell": "10s",
        "criteria": { "collection": "app.bsky.feed.post", "within": "15s" }}]));
    let evs = vec![h.post("a", 0), h.post("a", 5 * S), h.post("a", 12 * S)];
    assert_eq!(
        h.run(evs, 12 * S),
        vec![
            e("a", "entered", 1, "criteria", 0),
            e("a", "left", 1, "max_dwell", 10 * S)
        ]
    );
    // The criteria hold until 27 s without a membership; they fall silently, then rise.
    assert_eq!(h.run(vec![], 29 * S), vec![]);
    let evs = vec![h.post("a", 30 * S)];
    assert_eq!(
        h.run(evs, 30 * S),
        vec![e("a", "entered", 2, "criteria", 30 * S)]
    );
}

/// Posts at `at` (seconds), each membership lasting until the window (2 s) expires.
fn flap(limit: Value, at: &[u64]) -> Vec<Seen> {
    let mut def =
        json!({ "id": "x", "criteria": { "collection": "app.bsky.feed.post", "within": "2s" }});
    if let (Some(m), Some(l)) = (def.as_object_mut(), limit.as_object()) {
        m.extend(l.clone());
    }
    let mut h = H::new(json!([def]));
    let evs = at.iter().map(|s| h.post("a", s * S)).collect();
    h.run(evs, 1000 * S)
}

#[test]
fn entry_limits_and_epochs() {
    let times = [0, 10, 20, 130];
    assert_eq!(
        flap(json!({ "entry_limit": "unlimited" }), &times),
        (0..4u32)
            .flat_map(|i| {
                let t = times[i as usize] * S;
                [
                    e("a", "entered", i + 1, "criteria", t),
                    e("a", "left", i + 1, "window_expired", t + 2 * S),
                ]
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(
        flap(json!({ "entry_limit": "once" }), &times),
        vec![
            e("a", "entered", 1, "criteria", 0),
            e("a", "left", 1, "window_expired", 2 * S)
        ]
    );
    // Period 100 s from the last leave (of any membership, suppressed ones included):
    // 10 s and 20 s are suppressed (epochs 2, 3 advance silently); 130 s is 108 s after
    // the leave at 22 s, so it is announced as epoch 4.
    assert_eq!(
        flap(
            json!({ "entry_limit": "once_per_period", "entry_period": "100s" }),
            &times
        ),
        vec![
            e("a", "entered", 1, "criteria", 0),
            e("a", "left", 1, "window_expired", 2 * S),
            e("a", "entered", 4, "criteria", 130 * S),
            e("a", "left", 4, "window_expired", 132 * S),
        ]
    );
}
