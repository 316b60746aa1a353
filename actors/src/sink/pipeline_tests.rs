//! The writer's core ([`Pipeline`]) driven by replayed reply sequences, without Redis: each
//! test pushes batches, answers probes and commits (in the order Redis would, or worse) and
//! checks the actions that come back, written as short sentences (`"commit 2 xadds=1
//! expects=e:1"`).

use std::sync::Arc;
use std::time::Instant;

use redis::Value;
use serde_json::value::RawValue;

use super::action::{Action, CommitError, Held, Rollback, ToSend};
use super::commit::{CommitLimits, Keys, encode};
use super::pipeline::{Pipeline, landed_prefix};
use crate::messages::{Batch, Credit, Item};
use crate::model::{CommitEvent, Event, Operation};

/// A core with tokens `e:<seq>`, started against chain `start` with cursor 10, connected.
struct Harness {
    core: Pipeline<()>,
    keys: Keys,
}

fn event(rkey: &str) -> Item {
    Item::Event(Event::Commit(CommitEvent {
        did: "did:plc:abc".into(),
        time_us: 40,
        rev: "3l3qo2vutsw2b".into(),
        operation: Operation::Create,
        collection: "app.bsky.feed.post".into(),
        rkey: rkey.into(),
        record: Some(RawValue::from_string(r#"{"text":"hi"}"#.into()).expect("json")),
        cid: Some("bafyrei".into()),
        verdict: None,
    }))
}

impl Harness {
    fn new(depth: usize) -> Harness {
        let mut h = Harness::unchecked(depth);
        h.core.expect(Some("start"), Some(10));
        h
    }

    /// A core started without knowing the chain (nothing to check the first commit against).
    fn unchecked(depth: usize) -> Harness {
        let mut core = Pipeline::new(depth, 0xe);
        assert!(core.connected().is_empty());
        Harness {
            core,
            keys: Keys::new("t:"),
        }
    }

    /// Pushes batch `seq` (cursor `seq * 100`) with one event per record key.
    fn push(&mut self, seq: u64, rkeys: &[&str]) -> Vec<String> {
        let window = Arc::new(tokio::sync::Semaphore::new(1));
        let batch = Batch {
            seq,
            session: 1,
            source: Arc::from("host"),
            items: rkeys.iter().map(|k| event(k)).collect(),
            cursor: Some(seq * 100),
            received_at: Instant::now(),
            credit: Credit::new(window.try_acquire_owned().expect("permit")),
            replay: false,
        };
        let token = self.core.token(seq);
        let limits = CommitLimits {
            dedupe_window_us: 3,
        };
        let encoded = encode(
            &self.keys,
            &batch,
            &token,
            self.core.expects(),
            self.core.fence(),
            limits,
        );
        describe(self.core.push(seq, batch.cursor, token, encoded, ()))
    }

    /// Batch `seq`'s probe found the identities marked `true` committed.
    fn probed(&mut self, seq: u64, present: &[bool]) -> Vec<String> {
        let scores = present
            .iter()
            .map(|p| if *p { Value::Int(1) } else { Value::Nil })
            .collect();
        describe(self.core.on_probe(seq, Ok(vec![Value::Array(scores)])))
    }

    fn committed(&mut self, seq: u64) -> Vec<String> {
        describe(self.core.on_commit(seq, Ok(())))
    }

    fn commit_failed(&mut self, seq: u64, error: CommitError) -> Vec<String> {
        describe(self.core.on_commit(seq, Err(error)))
    }

    fn recovered(&mut self, chain: &str, cursor: u64) -> Vec<String> {
        describe(self.core.recovered(Some(Held {
            chain: Some(chain.to_owned()),
            cursor: Some(cursor),
            replay: None,
        })))
    }
}

fn dropped_connection() -> CommitError {
    CommitError::Redis(redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset",
    )))
}

fn refused(code: &str) -> CommitError {
    CommitError::Redis(redis::RedisError::from((
        redis::ErrorKind::Extension,
        "server",
        format!("{code} refused"),
    )))
}

/// Arguments of a command, as text.
fn args(cmd: &redis::Cmd) -> Vec<String> {
    cmd.args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
            _ => "<cursor>".to_owned(),
        })
        .collect()
}

/// `commit <seq> xadds=<entries written> expects=<predecessor>`, `rebuilt` when the commit is
/// not the one encoded at push time.
fn commit(seq: u64, pipe: &ToSend) -> String {
    let cmds: Vec<Vec<String>> = pipe.get().cmd_iter().map(args).collect();
    let xadds = cmds.iter().filter(|c| c[0] == "XADD").count();
    let token = format!("e:{seq}");
    let expects = cmds
        .iter()
        .find(|c| c[0] == "EVAL")
        .and_then(|c| c.iter().skip_while(|a| **a != token).nth(1).cloned())
        .unwrap_or_else(|| "?".to_owned());
    let rebuilt = match pipe {
        ToSend::AsEncoded(_) => "",
        ToSend::Rebuilt(_) => " rebuilt",
    };
    format!("commit {seq} xadds={xadds} expects={expects}{rebuilt}")
}

fn describe(actions: Vec<Action<()>>) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Probe { seq, .. } => format!("probe {seq}"),
            Action::Commit { seq, pipe } => commit(*seq, pipe),
            Action::Committed(d) => format!(
                "committed {} written={} skipped={} queued={}",
                d.seq, d.written, d.skipped, d.queued
            ),
            Action::Failed { seq, .. } => format!("failed {seq}"),
            Action::Recover => "recover".to_owned(),
            Action::RetryLater => "retry later".to_owned(),
            Action::RolledBack(r) => format!("rolled back, {} dropped", r.dropped),
            Action::StepDown { token, dropped, .. } => {
                format!("step down from {token}, {dropped} dropped")
            }
        })
        .collect()
}

#[test]
fn probes_run_ahead_up_to_the_depth_and_commits_follow_in_order() {
    let mut h = Harness::new(2);
    assert_eq!(h.push(1, &["a"]), ["probe 1"]);
    assert_eq!(h.push(2, &["b"]), ["probe 2"]);
    assert!(
        h.push(3, &["c"]).is_empty(),
        "two batches in flight already"
    );
    assert_eq!(h.probed(1, &[false]), ["commit 1 xadds=1 expects=start"]);
    assert_eq!(h.probed(2, &[false]), ["commit 2 xadds=1 expects=e:1"]);
    assert_eq!(
        h.committed(1),
        ["committed 1 written=1 skipped=0 queued=2", "probe 3"]
    );
    assert_eq!(h.committed(2), ["committed 2 written=1 skipped=0 queued=1"]);
    assert_eq!(h.probed(3, &[false]), ["commit 3 xadds=1 expects=e:2"]);
    assert_eq!(h.committed(3), ["committed 3 written=1 skipped=0 queued=0"]);
    assert_eq!((h.core.queued(), h.core.stored_cursor()), (0, Some(300)));
}

#[test]
fn a_commit_waits_for_the_probes_of_its_predecessors() {
    let mut h = Harness::new(3);
    h.push(1, &["a"]);
    h.push(2, &["b"]);
    assert!(
        h.probed(2, &[false]).is_empty(),
        "batch 1 is not probed yet"
    );
    assert_eq!(
        h.probed(1, &[false]),
        [
            "commit 1 xadds=1 expects=start",
            "commit 2 xadds=1 expects=e:1"
        ]
    );
}

#[test]
fn entries_the_probe_found_committed_are_left_out() {
    let mut h = Harness::new(2);
    h.push(1, &["a", "b", "c"]);
    assert_eq!(
        h.probed(1, &[false, true, false]),
        ["commit 1 xadds=2 expects=start rebuilt"]
    );
    assert_eq!(h.committed(1), ["committed 1 written=2 skipped=1 queued=0"]);
}

#[test]
fn a_probe_that_ran_before_its_predecessor_committed_skips_the_predecessors_entries() {
    let mut h = Harness::new(2);
    h.push(1, &["a", "b"]);
    h.push(2, &["b", "c"]); // probed before commit 1 was even sent
    h.probed(1, &[false, false]);
    assert_eq!(
        h.probed(2, &[false, false]),
        ["commit 2 xadds=1 expects=e:1 rebuilt"],
        "b is written by commit 1, which probe 2 could not see"
    );
    h.committed(1);
    assert_eq!(h.committed(2), ["committed 2 written=1 skipped=1 queued=0"]);
}

#[test]
fn a_predecessor_already_popped_is_still_remembered_for_a_probe_that_missed_it() {
    let mut h = Harness::new(2);
    h.push(1, &["a"]);
    h.push(2, &["a", "b"]);
    h.probed(1, &[false]);
    assert_eq!(h.committed(1), ["committed 1 written=1 skipped=0 queued=1"]);
    assert_eq!(
        h.probed(2, &[false, false]),
        ["commit 2 xadds=1 expects=e:1 rebuilt"]
    );
}

#[test]
fn a_probe_sent_after_a_commit_sees_it_and_memory_adds_nothing() {
    let mut h = Harness::new(2);
    h.push(1, &["a"]);
    h.probed(1, &[false]);
    assert_eq!(h.push(2, &["a", "b"]), ["probe 2"]);
    h.committed(1);
    assert_eq!(
        h.probed(2, &[false, false]),
        ["commit 2 xadds=2 expects=e:1"],
        "probe 2 ran after commit 1: what it did not find is not committed"
    );
}

#[test]
fn a_batch_without_identities_commits_without_a_probe() {
    let mut h = Harness::new(2);
    assert_eq!(h.push(1, &[]), ["commit 1 xadds=0 expects=start"]);
    assert_eq!(h.committed(1), ["committed 1 written=0 skipped=0 queued=0"]);
}

#[test]
fn a_failure_mid_pipeline_waits_for_every_reply_then_recovers_from_the_chain() {
    let mut h = Harness::new(3);
    for seq in 1..=3 {
        h.push(seq, &[["a", "b", "c"][seq as usize - 1]]);
        h.probed(seq, &[false]);
    }
    assert_eq!(h.committed(1), ["committed 1 written=1 skipped=0 queued=2"]);
    assert_eq!(h.commit_failed(2, dropped_connection()), ["failed 2"]);
    assert!(
        h.push(4, &["d"]).is_empty(),
        "nothing is sent after a failure"
    );
    assert_eq!(
        h.commit_failed(3, refused("CHAIN")),
        ["recover"],
        "the same incident: counted once; recovery once every reply is in"
    );
    assert_eq!(
        h.recovered("e:2", 200),
        ["committed 2 written=1 skipped=0 queued=2", "retry later"],
        "commit 2 landed before the connection broke"
    );
    assert_eq!(describe(h.core.retry_due()), ["probe 3", "probe 4"]);
    assert_eq!(h.probed(3, &[false]), ["commit 3 xadds=1 expects=e:2"]);
    assert_eq!(h.probed(4, &[false]), ["commit 4 xadds=1 expects=e:3"]);
    assert_eq!(h.committed(3), ["committed 3 written=1 skipped=0 queued=1"]);
    assert_eq!(h.committed(4), ["committed 4 written=1 skipped=0 queued=0"]);
}

#[test]
fn a_failed_recovery_is_retried_and_nothing_is_sent_meanwhile() {
    let mut h = Harness::new(2);
    h.push(1, &["a"]);
    assert_eq!(
        describe(h.core.on_probe(1, Err(dropped_connection()))),
        ["failed 1", "recover"]
    );
    assert_eq!(describe(h.core.recovered(None)), ["retry later"]);
    assert!(h.push(2, &["b"]).is_empty());
    assert_eq!(describe(h.core.retry_due()), ["recover"]);
    assert_eq!(h.recovered("start", 10), ["retry later"]);
    assert!(
        h.push(3, &["c"]).is_empty(),
        "still waiting out the backoff"
    );
    assert_eq!(describe(h.core.retry_due()), ["probe 1", "probe 2"]);
}

#[test]
fn a_probe_reply_of_the_wrong_shape_is_a_failure() {
    let mut h = Harness::new(2);
    h.push(1, &["a", "b"]);
    assert_eq!(
        describe(h.core.on_probe(1, Ok(vec![Value::Nil]))),
        ["failed 1", "recover"]
    );
}

#[test]
fn the_chain_still_at_our_last_commit_means_nothing_landed_and_everything_is_retried() {
    let mut h = Harness::new(2);
    h.push(1, &["a"]);
    h.push(2, &["b"]);
    h.probed(1, &[false]);
    h.probed(2, &[false]);
    h.commit_failed(1, dropped_connection());
    h.commit_failed(2, refused("CHAIN"));
    assert_eq!(h.recovered("start", 10), ["retry later"]);
    assert_eq!(describe(h.core.retry_due()), ["probe 1", "probe 2"]);
    assert_eq!(h.probed(1, &[false]), ["commit 1 xadds=1 expects=start"]);
}

#[test]
fn an_unknown_chain_token_is_a_rollback_and_halts_until_resumed() {
    let mut h = Harness::new(2);
    h.push(1, &["a"]);
    h.push(2, &["b"]);
    h.core.on_probe(1, Err(dropped_connection()));
    let actions = h.core.on_probe(2, Err(dropped_connection()));
    assert_eq!(describe(actions), ["recover"]);
    let actions = h.core.recovered(Some(Held {
        chain: Some("f:9".into()),
        cursor: Some(10),
        replay: Some(5),
    }));
    let [Action::RolledBack(rollback)] = &actions[..] else {
        panic!("{:?}", describe(actions));
    };
    assert_eq!(
        *rollback,
        Rollback {
            chain: Some("f:9".into()),
            stored: Some(10),
            replay: Some(5),
            our_last_commit: Some("start".into()),
            our_newest_cursor: Some(10),
            dropped: 2,
        }
    );
    assert!(h.core.halted());
    assert_eq!(h.core.queued(), 0);
    assert!(describe(h.core.resume(Some(Some("f:9".into())), None, Some(10))).is_empty());
    assert!(!h.core.halted());
    assert_eq!(h.push(3, &["c"]), ["probe 3"]);
    assert_eq!(h.probed(3, &[false]), ["commit 3 xadds=1 expects=f:9"]);
}

#[test]
fn a_stored_cursor_behind_ours_is_a_rollback_even_with_a_known_chain() {
    let mut h = Harness::new(2);
    h.push(1, &[]);
    h.committed(1); // stored cursor now 100
    h.push(2, &["b"]);
    h.core.on_probe(2, Err(dropped_connection()));
    assert_eq!(h.recovered("e:1", 10), ["rolled back, 1 dropped"]);
}

#[test]
fn without_a_known_chain_nothing_is_a_rollback() {
    let mut h = Harness::unchecked(2);
    h.push(1, &["a"]);
    h.core.on_probe(1, Err(dropped_connection()));
    assert_eq!(h.recovered("f:9", 0), ["retry later"]);
    h.core.retry_due();
    assert_eq!(
        h.probed(1, &[false]),
        ["commit 1 xadds=1 expects=f:9 rebuilt"]
    );
}

#[test]
fn a_fencing_refusal_steps_down_once_every_reply_is_in() {
    let mut h = Harness::new(2);
    h.core.halt();
    assert!(h.core.resume(None, Some(7), Some(10)).is_empty());
    h.push(1, &["a"]);
    h.push(2, &["b"]);
    h.probed(1, &[false]);
    h.probed(2, &[false]);
    assert_eq!(h.commit_failed(1, refused("FENCED")), ["failed 1"]);
    assert_eq!(
        h.commit_failed(2, refused("CHAIN")),
        ["step down from 7, 2 dropped"]
    );
    assert!(h.core.halted());
    assert_eq!((h.core.fence(), h.core.queued()), (None, 0));
}

#[test]
fn a_standby_lets_replies_drain_and_ignores_a_recovery_under_way() {
    let mut h = Harness::new(2);
    h.push(1, &["a"]);
    h.push(2, &["b"]);
    h.core.on_probe(1, Err(dropped_connection()));
    h.core.stand_by();
    assert!(h.core.on_probe(2, Err(dropped_connection())).is_empty());
    h.core.resume(None, None, Some(10));
    h.push(3, &["c"]);
    assert_eq!(
        describe(h.core.on_probe(3, Err(dropped_connection()))),
        ["failed 3", "recover"]
    );
    h.core.stand_by();
    assert!(
        h.recovered("f:9", 0).is_empty(),
        "no rollback for a standby"
    );
    h.core.resume(None, None, Some(10));
    assert_eq!(h.push(4, &["d"]), ["probe 4"], "nothing left waiting");
}

#[test]
fn the_chain_tells_how_many_queued_batches_landed() {
    let q = ["e:1", "e:2", "e:3"];
    assert_eq!(landed_prefix(Some("e:2"), &q), 2);
    assert_eq!(landed_prefix(Some("e:3"), &q), 3);
    assert_eq!(
        landed_prefix(Some("e:0"), &q),
        0,
        "the chain still holds the last known commit"
    );
    assert_eq!(landed_prefix(None, &q), 0);
}
