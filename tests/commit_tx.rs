//! The commit transaction (actors/src/sink/commit.rs) against a real redis-server: what
//! makes several commits in flight safe. A commit whose predecessor did not land, or that
//! meets a key of the wrong type, must leave no visible trace (no entry, no identity, no
//! state write, no cursor) and say why; a commit that can apply stores everything at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Instant;

use actors::messages::{Batch, Credit, Item};
use actors::model::{CommitEvent, Event, Operation, StateOp};
use actors::sink::commit::{CommitLimits, Encoded, Keys, encode};
use redis::{Commands, Value};
use serde_json::value::RawValue;

fn event(rkey: &str, t: u64) -> Item {
    Item::Event(Event::Commit(CommitEvent {
        did: "did:plc:abcdefghijklmnopqrstuvwx".into(),
        time_us: t,
        rev: "3l3qo2vutsw2b".into(),
        operation: Operation::Create,
        collection: "app.bsky.feed.post".into(),
        rkey: rkey.into(),
        record: Some(RawValue::from_string(format!(r#"{{"text":"{rkey}"}}"#)).unwrap()),
        cid: Some("bafyrei".into()),
        verdict: None,
    }))
}

fn batch(seq: u64, items: Vec<Item>, cursor: u64) -> Batch {
    let window = Arc::new(tokio::sync::Semaphore::new(1));
    Batch {
        seq,
        session: 1,
        source: Arc::from("test"),
        items,
        cursor: Some(cursor),
        received_at: Instant::now(),
        credit: Credit::new(window.try_acquire_owned().unwrap()),
        replay: false,
    }
}

fn state(field: &str) -> Item {
    Item::State(StateOp {
        key: "bucket:b:state".into(),
        field: field.into(),
        value: Some("1|x".into()),
    })
}

const LIMITS: CommitLimits = CommitLimits {
    dedupe_window_us: 1_000_000,
};

fn commit(con: &mut redis::Connection, enc: &Encoded) -> redis::RedisResult<Value> {
    enc.commit.query::<Value>(con)
}

fn snapshot(con: &mut redis::Connection) -> (usize, usize, Option<String>, Option<String>, usize) {
    let records: usize = con.xlen("jsi:records").unwrap();
    let dedupe: usize = con.zcard("jsi:dedupe").unwrap();
    let cursor: Option<String> = con.get("jsi:cursor").unwrap();
    let chain: Option<String> = con.get("jsi:commit:chain").unwrap();
    let state: usize = con.hlen("jsi:bucket:b:state").unwrap();
    (records, dedupe, cursor, chain, state)
}

#[test]
fn pipelined_commits_apply_in_order_and_a_commit_behind_a_failed_one_undoes_itself() {
    let redis = support::redis(false);
    let mut con = redis.connection().unwrap();
    let keys = Keys::new("jsi:");

    // Batch 1 lands (first commit: predecessor unchecked).
    let b1 = encode(
        &keys,
        &batch(1, vec![event("a", 10), state("did:one")], 10),
        "w:1",
        "",
        None,
        LIMITS,
    );
    commit(&mut con, &b1).expect("first commit applies");
    assert_eq!(
        snapshot(&mut con),
        (1, 1, Some("10".into()), Some("w:1".into()), 1)
    );

    // Batch 2 is lost on the way (never applied); batch 3, pipelined behind it, must not
    // apply: it expects w:2 in the chain.
    let _b2 = encode(
        &keys,
        &batch(2, vec![event("b", 20)], 20),
        "w:2",
        "w:1",
        None,
        LIMITS,
    );
    let b3 = encode(
        &keys,
        &batch(
            3,
            vec![event("c", 30), event("d", 31), state("did:three")],
            31,
        ),
        "w:3",
        "w:2",
        None,
        LIMITS,
    );
    let before = snapshot(&mut con);
    let err = commit(&mut con, &b3).expect_err("predecessor missing");
    assert!(err.to_string().contains("CHAIN"), "{err}");
    assert_eq!(
        snapshot(&mut con),
        before,
        "no entry, identity, state write, cursor or chain change survives"
    );
    let entries: redis::streams::StreamRangeReply = con.xrange_all("jsi:records").unwrap();
    assert_eq!(entries.ids.len(), 1, "the undone entries are not readable");

    // Retried in order, both land; batch 3 again as encoded (its predecessor now holds).
    let b2 = encode(
        &keys,
        &batch(2, vec![event("b", 20)], 20),
        "w:2",
        "w:1",
        None,
        LIMITS,
    );
    commit(&mut con, &b2).expect("batch 2 applies");
    commit(&mut con, &b3).expect("batch 3 applies after its predecessor");
    assert_eq!(
        snapshot(&mut con),
        (4, 4, Some("31".into()), Some("w:3".into()), 2)
    );
    let rkeys: Vec<String> = support::read_stream(&mut con, "jsi:records")
        .iter()
        .map(|e| e["rkey"].clone())
        .collect();
    assert_eq!(rkeys, ["a", "b", "c", "d"], "wire order kept");
}

#[test]
fn a_key_of_the_wrong_type_undoes_the_whole_batch() {
    let redis = support::redis(false);
    let mut con = redis.connection().unwrap();
    let keys = Keys::new("jsi:");
    let _: () = con.set("jsi:dead", "an operator's string").unwrap();
    let mut dead = actors::model::DeadLetter::new("invalid_json", "bad", b"{oops");
    dead.time_us = Some(15);
    let b = encode(
        &keys,
        &batch(
            1,
            vec![event("a", 10), Item::Dead(dead), state("did:x")],
            15,
        ),
        "w:1",
        "",
        None,
        LIMITS,
    );
    let err = commit(&mut con, &b).expect_err("dead stream is a string");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    assert_eq!(
        snapshot(&mut con),
        (0, 0, None, None, 0),
        "the records entry that did go in was taken out again, nothing stored"
    );

    // Fixed by the operator, the retry writes everything (nothing was marked as committed).
    let _: () = con.del("jsi:dead").unwrap();
    commit(&mut con, &b).expect("applies once the key is fixed");
    assert_eq!(
        snapshot(&mut con),
        (1, 2, Some("15".into()), Some("w:1".into()), 1)
    );
    let dead_len: usize = con.xlen("jsi:dead").unwrap();
    assert_eq!(dead_len, 1);
}

#[test]
fn the_probe_finds_committed_identities_and_the_rebuilt_commit_skips_them() {
    let redis = support::redis(false);
    let mut con = redis.connection().unwrap();
    let keys = Keys::new("jsi:");
    let b1 = encode(
        &keys,
        &batch(1, vec![event("a", 10), event("b", 11)], 11),
        "w:1",
        "",
        None,
        LIMITS,
    );
    commit(&mut con, &b1).unwrap();
    // A rewind overlap: b again, then c.
    let b2 = encode(
        &keys,
        &batch(2, vec![event("b", 11), event("c", 12)], 12),
        "w:2",
        "w:1",
        None,
        LIMITS,
    );
    let reply: Vec<Value> = b2.probe.as_ref().unwrap().query(&mut con).unwrap();
    let present = b2.parse_probe(&reply).unwrap();
    assert_eq!(present, [true, false]);
    b2.rebuilt(&present, "w:1")
        .query::<Value>(&mut con)
        .unwrap();
    let rkeys: Vec<String> = support::read_stream(&mut con, "jsi:records")
        .iter()
        .map(|e| e["rkey"].clone())
        .collect();
    assert_eq!(rkeys, ["a", "b", "c"], "b written once");
    assert_eq!(snapshot(&mut con).2, Some("12".into()));
}

/// Bucket state writes go out as one `HSET`/`HDEL` per hash, in chunks (Lua's `unpack` is
/// bounded): 1,300 fields set and 1,100 deleted in one commit, with overwrites inside the
/// batch, end exactly as if applied one by one.
#[test]
fn many_state_writes_in_one_commit_land_as_if_applied_in_order() {
    let redis = support::redis(false);
    let mut con = redis.connection().unwrap();
    let keys = Keys::new("jsi:");
    let op = |key: &str, field: String, value: Option<String>| {
        Item::State(StateOp {
            key: key.into(),
            field,
            value,
        })
    };
    // Existing fields 0..1100 of the members hash, to be deleted.
    for i in 0..1_100 {
        let _: () = con
            .hset("jsi:bucket:b:members", format!("did:{i}"), "old")
            .unwrap();
    }
    let mut items = vec![event("a", 10)];
    for i in 0..1_300 {
        items.push(op(
            "bucket:b:state",
            format!("did:{i}"),
            Some(format!("v{i}")),
        ));
    }
    for i in 0..1_100 {
        items.push(op("bucket:b:members", format!("did:{i}"), None));
    }
    // Overwrites: the last write of a field wins.
    items.push(op("bucket:b:state", "did:5".into(), Some("last".into())));
    items.push(op("bucket:b:state", "did:6".into(), None));
    items.push(op("bucket:b:members", "did:7".into(), Some("back".into())));
    let enc = encode(&keys, &batch(1, items, 10), "w:1", "", None, LIMITS);
    commit(&mut con, &enc).unwrap();

    let state: std::collections::HashMap<String, String> =
        con.hgetall("jsi:bucket:b:state").unwrap();
    assert_eq!(state.len(), 1_299, "1,300 set, did:6 deleted after");
    assert_eq!(state["did:0"], "v0");
    assert_eq!(state["did:1299"], "v1299");
    assert_eq!(state["did:5"], "last");
    assert!(!state.contains_key("did:6"));
    let members: std::collections::HashMap<String, String> =
        con.hgetall("jsi:bucket:b:members").unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members["did:7"], "back");
    let chain: Option<String> = con.get("jsi:commit:chain").unwrap();
    assert_eq!(chain.as_deref(), Some("w:1"));
}

#[test]
fn an_undone_commit_leaves_every_other_batchs_identities_in_the_dedupe_index() {
    // Hardening item 5: the undo once removed identities by score range (ZREMRANGEBYSCORE
    // from the lowest new score), taking out those of committed batches with the same or
    // later times; replays then wrote those events twice.
    let redis = support::redis(false);
    let mut con = redis.connection().unwrap();
    let keys = Keys::new("jsi:");
    let b1 = encode(
        &keys,
        &batch(1, vec![event("a", 40), event("b", 50), event("c", 60)], 60),
        "w:1",
        "",
        None,
        LIMITS,
    );
    commit(&mut con, &b1).expect("first commit applies");
    let committed: Vec<(String, f64)> = con.zrange_withscores("jsi:dedupe", 0, -1).unwrap();
    assert_eq!(committed.len(), 3);

    // A commit with identities at times 40..=70 whose predecessor is missing: undone.
    let b3 = encode(
        &keys,
        &batch(3, vec![event("d", 40), event("e", 55), event("f", 70)], 70),
        "w:3",
        "w:2",
        None,
        LIMITS,
    );
    let err = commit(&mut con, &b3).expect_err("predecessor missing");
    assert!(err.to_string().contains("CHAIN"), "{err}");
    let after: Vec<(String, f64)> = con.zrange_withscores("jsi:dedupe", 0, -1).unwrap();
    assert_eq!(
        after, committed,
        "exactly the committed identities: none of the undone ones, none taken away"
    );

    // The probe of a replay of batch 1 still finds all three: nothing is written twice.
    let replay = encode(
        &keys,
        &batch(4, vec![event("a", 40), event("b", 50), event("c", 60)], 60),
        "w:4",
        "w:1",
        None,
        LIMITS,
    );
    let reply: Vec<Value> = replay.probe.as_ref().unwrap().query(&mut con).unwrap();
    assert_eq!(replay.parse_probe(&reply).unwrap(), [true, true, true]);
}

/// `[ha]`: a commit carries its writer's fencing token; once another instance took the lease
/// (the counter moved on), the commit is refused with `FENCED` and undone whole, even when its
/// chain check alone would pass (the new leader has not committed yet). Without the lease
/// counter at all (never acquired, or deleted) it is refused too.
#[test]
fn a_commit_with_an_old_fencing_token_is_refused_and_undone_whole() {
    let redis = support::redis(false);
    let mut con = redis.connection().unwrap();
    let keys = Keys::new("jsi:");
    let _: () = con.set("jsi:ha:fence", "7").unwrap();
    let b1 = encode(
        &keys,
        &batch(1, vec![event("a", 10), state("did:one")], 10),
        "w:1",
        "",
        Some(7),
        LIMITS,
    );
    commit(&mut con, &b1).expect("the holder of token 7 commits");
    let before = snapshot(&mut con);
    assert_eq!(before, (1, 1, Some("10".into()), Some("w:1".into()), 1));

    // Another instance took the lease: the counter is 8. The old writer's next commit
    // expects w:1, which the chain holds, so only the fence can stop it.
    let _: () = con.set("jsi:ha:fence", "8").unwrap();
    let b2 = encode(
        &keys,
        &batch(2, vec![event("b", 20), state("did:two")], 20),
        "w:2",
        "w:1",
        Some(7),
        LIMITS,
    );
    let err = commit(&mut con, &b2).expect_err("fenced off");
    assert!(err.to_string().contains("FENCED"), "{err}");
    assert_eq!(snapshot(&mut con), before, "nothing of batch 2 landed");

    let _: () = con.del("jsi:ha:fence").unwrap();
    let err = commit(&mut con, &b2).expect_err("no counter: fenced off");
    assert!(err.to_string().contains("FENCED"), "{err}");
    assert_eq!(snapshot(&mut con), before);

    // The new holder's commit (token 8) lands.
    let _: () = con.set("jsi:ha:fence", "8").unwrap();
    let b2 = encode(
        &keys,
        &batch(2, vec![event("b", 20), state("did:two")], 20),
        "v:2",
        "w:1",
        Some(8),
        LIMITS,
    );
    commit(&mut con, &b2).expect("token 8 commits");
    assert_eq!(
        snapshot(&mut con),
        (2, 2, Some("20".into()), Some("v:2".into()), 2)
    );
}
