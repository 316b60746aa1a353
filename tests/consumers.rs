//! Downstream consumers: declared groups see every job from the first one, even when they
//! connect late; retention never trims what a protected group has not read or acknowledged,
//! reports the blocking, and trims to the bound once the group catches up; the reference
//! consumer (`examples/consumer.rs`) processes a replay exactly once by `idem`, also when
//! killed mid-way (a second consumer claims its pending entries), and stays alive when idle
//! well past its read's block time (then processes the next job).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actors::sink::config::ConsumerGroup;
use actors::supervisor::StartChoice;
use support::*;

fn group(name: &str) -> ConsumerGroup {
    ConsumerGroup {
        stream: "records".into(),
        group: name.into(),
        start_id: "0".into(),
        disposable: false,
    }
}

type Entries = Vec<(String, Vec<(String, String)>)>;

fn read_group(con: &mut redis::Connection, group: &str, count: usize) -> Vec<String> {
    let reply: Option<Vec<(String, Entries)>> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg("c1")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg("jsi:records")
        .arg(">")
        .query(con)
        .unwrap();
    reply
        .into_iter()
        .flatten()
        .flat_map(|(_, e)| e)
        .map(|(id, _)| id)
        .collect()
}

fn ack(con: &mut redis::Connection, group: &str, ids: &[String]) {
    for chunk in ids.chunks(500) {
        let _: i64 = redis::cmd("XACK")
            .arg("jsi:records")
            .arg(group)
            .arg(chunk)
            .query(con)
            .unwrap();
    }
}

fn xlen(con: &mut redis::Connection) -> usize {
    redis::cmd("XLEN").arg("jsi:records").query(con).unwrap()
}

fn first_id(con: &mut redis::Connection) -> Option<String> {
    let e: Entries = redis::cmd("XRANGE")
        .arg("jsi:records")
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(con)
        .unwrap();
    e.into_iter().next().map(|(id, _)| id)
}

fn commits(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.contains(r#""kind":"commit""#))
        .count()
}

#[test]
fn a_declared_group_gets_every_job_even_when_it_connects_late_and_retention_runs() {
    let redis = redis(false);
    let lines = corpus(3_000, 81);
    let server = fake(lines.clone(), None);
    let mut s = settings(&server.url(), &redis.url());
    s.consumers = vec![group("late")];
    s.redis.retention.max_len = 100;
    s.redis.retention.interval = Duration::from_millis(100);
    let last = time_of(lines.last().unwrap()).unwrap();
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: time_of(&lines[0]),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "all committed", |s| {
                s.reader.committed_cursor == Some(last)
            })
            .await;
            // Several retention passes happen before the consumer shows up.
            let st = wait_status(
                &sup,
                Duration::from_secs(10),
                "retention saw the group blocking",
                |s| {
                    s.retention.streams.iter().any(|r| {
                        r.stream == "records" && r.blocking.iter().any(|b| b.group == "late")
                    })
                },
            )
            .await;
            assert!(st.retention.last_error.is_none());
        },
    );
    let mut con = redis.connection().unwrap();
    let got = read_group(&mut con, "late", 100_000);
    assert_eq!(
        got.len(),
        commits(&lines),
        "the late group reads every job, the first one included"
    );
    assert_eq!(got.first(), first_id(&mut con).as_ref());
}

#[test]
fn trimming_keeps_unread_and_pending_entries_and_reaches_the_bound_after_catch_up() {
    let redis = redis(false);
    let lines = corpus(4_000, 82);
    let n = commits(&lines);
    let server = fake(lines.clone(), None);
    let mut s = settings(&server.url(), &redis.url());
    s.consumers = vec![group("half"), group("pending")];
    s.redis.retention.max_len = (n / 4) as u64;
    s.redis.retention.interval = Duration::from_millis(100);
    let last = time_of(lines.last().unwrap()).unwrap();
    let url = redis.url();
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: time_of(&lines[0]),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "all committed", |s| {
                s.reader.committed_cursor == Some(last)
            })
            .await;
            let mut con = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            // `half` reads and acks half; `pending` reads everything but leaves its 10 oldest unacked.
            let half = read_group(&mut con, "half", n / 2);
            ack(&mut con, "half", &half);
            let all = read_group(&mut con, "pending", n);
            ack(&mut con, "pending", &all[10..]);
            let unread_from = read_first_unread(&mut con, &half);

            let half_lag = (n - n / 2) as u64;
            let st = wait_status(
                &sup,
                Duration::from_secs(10),
                "a pass after the reads",
                |s| {
                    s.retention.streams.iter().any(|r| {
                        r.stream == "records"
                            && r.blocking
                                .iter()
                                .any(|b| b.group == "half" && b.lag == Some(half_lag))
                            && r.blocking
                                .iter()
                                .any(|b| b.group == "pending" && b.pending == 10)
                    })
                },
            )
            .await;
            let rec = st
                .retention
                .streams
                .iter()
                .find(|r| r.stream == "records")
                .unwrap();
            assert_eq!(rec.blocking.len(), 2, "{:?}", rec.blocking);
            // Nothing `half` has not read, and none of `pending`'s pending entries, is gone.
            assert!(xlen(&mut con) >= n - n / 2);
            let oldest = first_id(&mut con).unwrap();
            assert!(
                oldest <= all[0],
                "pending entry {} trimmed (oldest now {oldest})",
                all[0]
            );
            let pending: Entries = redis::cmd("XRANGE")
                .arg("jsi:records")
                .arg(&all[0])
                .arg(&all[9])
                .query(&mut con)
                .unwrap();
            assert_eq!(pending.len(), 10, "every pending entry is still readable");
            assert!(unread_from.is_some());

            // Both catch up and acknowledge: trimming proceeds to the bound.
            let rest = read_group(&mut con, "half", n);
            ack(&mut con, "half", &rest);
            ack(&mut con, "pending", &all[..10]);
            let bound = n / 4;
            wait_until_async(Duration::from_secs(10), "trimmed to the bound", || {
                let mut c = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                xlen(&mut c) == bound
            })
            .await;
            wait_status(&sup, Duration::from_secs(10), "no more blocking", |s| {
                s.retention.streams.iter().any(|r| {
                    r.stream == "records" && r.blocking.is_empty() && r.length as usize == bound
                })
            })
            .await;
        },
    );
}

fn read_first_unread(con: &mut redis::Connection, read: &[String]) -> Option<String> {
    let last = read.last()?;
    let e: Entries = redis::cmd("XRANGE")
        .arg("jsi:records")
        .arg(format!("({last}"))
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(con)
        .unwrap();
    e.into_iter().next().map(|(id, _)| id)
}

fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    dir.join("examples").join("consumer")
}

#[test]
fn the_reference_consumer_processes_a_replay_exactly_once_across_a_kill() {
    let bin = example_binary();
    assert!(
        bin.exists(),
        "build the example first (cargo test builds examples): {}",
        bin.display()
    );
    let redis = redis(false);
    let lines = corpus(6_000, 83);
    let n = commits(&lines);
    let server = fake(lines.clone(), None);
    let mut s = settings(&server.url(), &redis.url());
    s.consumers = vec![group("workers")];
    let last = time_of(lines.last().unwrap()).unwrap();
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: time_of(&lines[0]),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "all committed", |s| {
                s.reader.committed_cursor == Some(last)
            })
            .await;
        },
    );
    let spawn = |name: &str| {
        Command::new(&bin)
            .env("REDIS_URL", redis.url())
            .env("GROUP", "workers")
            .env("CONSUMER", name)
            .env("CLAIM_IDLE_MS", "300")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut con = redis.connection().unwrap();
    let processed = |con: &mut redis::Connection| -> usize {
        redis::cmd("HLEN")
            .arg("jsi:example:processed")
            .query(con)
            .unwrap()
    };
    let mut first = spawn("first");
    wait_until(
        Duration::from_secs(60),
        "the first consumer gets going",
        || processed(&mut con) >= n / 4,
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = spawn("second");
    wait_until(
        Duration::from_secs(60),
        "every job processed and acked",
        || {
            let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg("jsi:records")
                .query(&mut con)
                .unwrap();
            let g = &groups[0];
            let pending: i64 = redis::from_redis_value(g["pending"].clone()).unwrap();
            let lag: i64 = redis::from_redis_value(g["lag"].clone()).unwrap_or(-1);
            pending == 0 && lag == 0
        },
    );

    // Caught up: every read now blocks for the example's BLOCK (2 s) and returns nothing.
    // Idle well past it (three block times), then the consumer must still be running ...
    let idle_until = Instant::now() + EXAMPLE_BLOCK * 3;
    wait_until(
        EXAMPLE_BLOCK * 4,
        "three block times of idling pass",
        || {
            assert_alive(&mut second, "while idle");
            Instant::now() >= idle_until
        },
    );
    assert_alive(&mut second, "after idling three block times");
    // ... and process the next job that arrives.
    let _: String = redis::cmd("XADD")
        .arg("jsi:records")
        .arg("*")
        .arg("v")
        .arg("1")
        .arg("idem")
        .arg("after-the-idle")
        .query(&mut con)
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "the job after the idle processed",
        || {
            let done: Option<i64> = redis::cmd("HGET")
                .arg("jsi:example:processed")
                .arg("after-the-idle")
                .query(&mut con)
                .unwrap();
            done == Some(1)
        },
    );
    assert_alive(&mut second, "after the job that followed the idle");

    let nix_pid = nix::unistd::Pid::from_raw(i32::try_from(second.id()).unwrap());
    nix::sys::signal::kill(nix_pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = second.wait().unwrap();
    assert!(
        status.success(),
        "clean shutdown on SIGTERM: {status:?}; stderr: {}",
        stderr_of(&mut second)
    );

    let mut counts: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg("jsi:example:processed")
        .query(&mut con)
        .unwrap();
    assert_eq!(counts.remove("after-the-idle"), Some(1));
    assert_eq!(counts.len(), n, "every job processed");
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
}

/// `BLOCK` of `examples/consumer.rs`: how long its XREADGROUP waits for new entries.
const EXAMPLE_BLOCK: Duration = Duration::from_secs(2);

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

/// The child has not exited (else: its status and what it wrote to stderr).
fn assert_alive(child: &mut Child, when: &str) {
    if let Some(status) = child.try_wait().unwrap() {
        panic!(
            "the consumer exited {when}: {status:?}; stderr: {}",
            stderr_of(child)
        );
    }
}
