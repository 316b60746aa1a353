//! What a shard writes and keeps: the state and members operations of a batch follow the
//! final state, a criteria change at start lets members leave (`criteria_changed`), and
//! memory per tracked DID stays small, with idle state reduced to its history.

use serde_json::json;

use super::state::decode;
use super::tests::{H, S, compile, e, posters, seen};
use super::tracker::Tracker;
use crate::model::TransitionKind;

#[test]
fn state_and_members_operations_follow_the_final_state() {
    let mut h = H::new(posters(json!({})));
    let evs = vec![
        h.post("a", 0),
        h.post("a", S),
        h.post("a", 2 * S),
        h.post("b", 2 * S),
    ];
    let out = h.t.process(evs, 2 * S);
    let mut ops: Vec<(String, String, Option<String>)> = out
        .ops
        .iter()
        .map(|o| (o.key.clone(), o.field.clone(), o.value.clone()))
        .collect();
    ops.sort();
    assert_eq!(
        ops,
        vec![
            (
                "bucket:posters:members".into(),
                "a".into(),
                Some(format!("{}|1", 2 * S))
            ),
            (
                "bucket:posters:state".into(),
                "a".into(),
                Some(format!("1|1||{}|h|0,1000000,2000000", 2 * S))
            ),
            (
                "bucket:posters:state".into(),
                "b".into(),
                Some("1|0||||2000000".into())
            ),
        ]
    );
    assert_eq!(out.members, vec![1]);
    let out = h.t.process(vec![], 20 * S);
    let mut ops: Vec<(String, String, Option<String>)> = out
        .ops
        .iter()
        .map(|o| (o.key.clone(), o.field.clone(), o.value.clone()))
        .collect();
    ops.sort();
    assert_eq!(
        ops,
        vec![
            ("bucket:posters:members".into(), "a".into(), None),
            (
                "bucket:posters:state".into(),
                "a".into(),
                Some(format!("1|1|{}|||", 10 * S))
            ),
            ("bucket:posters:state".into(), "b".into(), None),
        ]
    );
    assert_eq!(out.members, vec![0]);
    assert_eq!(out.transitions[0].kind, TransitionKind::Left);
}

#[test]
fn a_changed_bucket_lets_members_leave_at_start() {
    let b = compile(posters(
        json!({ "entry_limit": "once_per_period", "entry_period": "1h" }),
    ));
    let mut t = Tracker::new(b.clone());
    let member = decode("1|1||5|h|", &b[0]).expect("valid");
    let suppressed = decode("1|2|3|5|hs|", &b[0]).expect("valid");
    t.load(0, "a", member, Some(100));
    t.load(0, "s", suppressed, Some(100));
    let out = t.process(vec![], 100);
    assert_eq!(seen(&out), vec![e("a", "left", 1, "criteria_changed", 100)]);
    assert_eq!(out.members, vec![0]);
    assert_eq!(
        out.ops
            .iter()
            .filter(|o| o.key.ends_with(":members"))
            .count(),
        2
    );
}

#[test]
fn memory_per_tracked_did_stays_small_and_idle_state_is_dropped() {
    let mut h = H::new(json!([
        { "id": "posters", "criteria": { "collection": "app.bsky.feed.post", "check": "count",
          "operator": "gte", "value": 3, "within": "1h" }},
        { "id": "lurkers", "criteria": { "all": [
          { "collection": "app.bsky.feed.like", "within": "24h" },
          { "collection": "app.bsky.feed.post", "check": "not_exists" } ]}},
    ]));
    let mut evs = Vec::new();
    for i in 0..10_000u64 {
        let did = format!("did:plc:{i:024}");
        evs.push(h.like(&did, 2 * i));
        evs.push(h.post(&did, 2 * i + 1));
    }
    h.run(evs, 20_000);
    assert_eq!(h.t.tracked_dids(), 10_000);
    let per_did = h.t.approx_bytes() / h.t.tracked_dids();
    assert!(per_did < 600, "{per_did} bytes per tracked DID");
    // A day later every window is empty: only the lurkers' history (epoch 1) is left.
    h.run(vec![], 2 * 86_400 * S);
    assert_eq!(h.t.tracked_dids(), 10_000);
    let rest = h.t.approx_bytes() / h.t.tracked_dids();
    assert!(rest < per_did, "{rest} bytes per DID at rest");
}
