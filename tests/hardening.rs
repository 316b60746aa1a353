//! Hardening: exactly once under the failures real deployments have. Each test names the
//! class of fault it covers; each failed (lost or doubled data, or a wedged reader) before
//! the fix it guards. Real redis-server processes, the fake Jetstream over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use actors::messages::Restart;
use actors::supervisor::StartChoice;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use redis::Commands;
use support::*;

const PREFIX: &str = "jsi:";

/// Item 1. Redis restarts from an RDB snapshot taken mid-run (everything acknowledged after
/// it is gone): the writer sees the chain holding a token it committed long ago, counts a
/// rollback, and the reader resumes from the cursor Redis holds; at the end every event is
/// there exactly once and the cursor is the last event's.
#[test]
fn redis_restarting_from_an_older_snapshot_is_a_rollback_and_nothing_is_missing_at_the_end() {
    let mut redis = redis(false);
    let lines = respace(&corpus(6_000, 1301), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(1_500));
    let s = settings(&server.url(), &redis.url());
    let r = &mut redis;
    let mut lost_window = (0, 0);
    let lw = &mut lost_window;
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let span = last - first;
            let saved = wait_status(&sup, Duration::from_secs(60), "30% committed", |s| {
                s.reader
                    .committed_cursor
                    .is_some_and(|c| c >= first + span * 3 / 10)
            })
            .await;
            let mut con = r.connection().unwrap();
            let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
            let before_kill = wait_status(&sup, Duration::from_secs(60), "60% committed", |s| {
                s.reader
                    .committed_cursor
                    .is_some_and(|c| c >= first + span * 6 / 10)
            })
            .await;
            *lw = (
                saved.reader.committed_cursor.unwrap(),
                before_kill.reader.committed_cursor.unwrap(),
            );
            r.kill9();
            r.restart().expect("redis restarts from its snapshot");
            let done = wait_status(
                &sup,
                Duration::from_secs(90),
                "a rollback detected, then every event committed",
                |s| s.writer.rollbacks >= 1 && s.reader.committed_cursor == Some(last),
            )
            .await;
            assert_eq!(done.writer.rollbacks, 1, "one rollback, counted once");
        },
    );
    assert!(
        lost_window.1 > lost_window.0,
        "events were acknowledged after the snapshot: {lost_window:?}"
    );
    let mut con = redis.connection().unwrap();
    let n = assert_exactly_once(&mut con, PREFIX, &lines);
    assert_eq!(n, 6_000);
    assert_eq!(stored_cursor(&mut con, PREFIX), Some(last));
}

/// Item 2. A frame whose `time_us` is far in the future (a commit, and a frame of a bad
/// kind) is dead-lettered and never becomes the cursor, a dedupe score or a dial position:
/// across reconnects every later event still lands.
#[test]
fn frames_from_the_far_future_are_dead_lettered_and_never_reach_the_cursor() {
    let redis = redis(false);
    // 50 ms apart: a session of 150 events spans 7.5 s, past the 1 s rewind.
    let mut lines = respace(&corpus(1_000, 1302), 1_700_000_000_000_000, 50_000);
    let future_commit = with_time(&lines[10], 4_102_444_800_000_000);
    let did = serde_json::from_str::<serde_json::Value>(&lines[0]).unwrap()["did"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad_kind = format!(r#"{{"did":"{did}","time_us":4102444800000000,"kind":7}}"#);
    lines.insert(300, future_commit);
    lines.insert(600, bad_kind);
    let valid: Vec<String> = lines
        .iter()
        .filter(|l| time_of(l).is_some_and(|t| t < 4_000_000_000_000_000))
        .cloned()
        .collect();
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(valid.last().unwrap()).unwrap();
    let server = fake(lines.clone(), Some(150));
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.rewind = Duration::from_secs(1);
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(
                &sup,
                Duration::from_secs(60),
                "every event committed",
                |s| s.reader.committed_cursor == Some(last),
            )
            .await;
        },
    );
    let mut con = redis.connection().unwrap();
    assert_exactly_once(&mut con, PREFIX, &valid);
    assert_eq!(stored_cursor(&mut con, PREFIX), Some(last));
    let reasons = dead_reasons(&mut con);
    assert_eq!(reasons.get("time_in_future"), Some(&1), "{reasons:?}");
    assert_eq!(reasons.values().sum::<usize>(), 2, "each once: {reasons:?}");
    let top: Vec<(String, f64)> = con.zrevrange_withscores("jsi:dedupe", 0, 0).unwrap();
    assert!(
        top[0].1 < (wall_us() + 600_000_000) as f64,
        "no dedupe score from the future: {top:?}"
    );
    assert!(
        server.connections().len() >= 7,
        "the host closed every 150 events: {} sessions",
        server.connections().len()
    );
}

/// Item 2, the alarm: frames keep arriving but none moves the position (dead letters
/// only): status says `stalled` and `/readyz`'s rule says not ready.
#[test]
fn a_reader_receiving_nothing_newer_for_long_is_stalled_and_not_ready() {
    let redis = redis(false);
    let mut lines = corpus(50, 1303);
    for i in 0..4_000 {
        lines.push(format!("{{not json {i}"));
    }
    let first = time_of(&lines[0]).unwrap();
    let server = fake_with(lines, |c| c.rate = Some(400));
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.stall_timeout = Duration::from_secs(1);
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let st = wait_status(&sup, Duration::from_secs(30), "stalled", |s| {
                s.reader.stalled_secs.is_some()
            })
            .await;
            assert!(st.reader.dead_letters > 0);
            let (ready, why) = jetstream_ingestor::admin::view::readiness(Some(&st));
            assert!(!ready, "a stalled reader is not ready");
            assert!(why.unwrap().contains("stalled"));
        },
    );
}

/// Item 3. `Restart { from_cursor }` into the past is carried through every later
/// reconnect to the end, and writes only what is missing: events removed from the stream
/// come back, the others are not written twice (the dedupe index no longer remembers them:
/// it is rebuilt from the streams).
#[test]
fn a_restart_from_an_older_cursor_replays_to_the_end_and_writes_only_what_is_missing() {
    let redis = redis(false);
    // 3,000 events 20 ms apart (60 s) against a 11 s dedupe window.
    let lines = respace(&corpus(3_000, 1304), 1_700_000_000_000_000, 20_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), Some(200));
    let mut s = settings(&server.url(), &redis.url());
    s.redis.dedupe_window = Duration::from_secs(11);
    s.jetstream.rewind = Duration::from_secs(1);
    let url = redis.url();
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "first pass committed", |s| {
                s.reader.committed_cursor == Some(last)
            })
            .await;
            // Lose 40 jobs of the first half.
            let mut con = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            delete_records(&mut con, 500, 40);
            let session = sup
                .send(Restart {
                    from_cursor: Some(first),
                })
                .await
                .unwrap()
                .expect("not refused");
            assert!(session > 1);
            wait_status(
                &sup,
                Duration::from_secs(90),
                "the replay reached the end",
                |s| s.reader.line_cursor == Some(last),
            )
            .await;
        },
    );
    let mut con = redis.connection().unwrap();
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 3_000);
    let replay_sessions = server
        .connections()
        .iter()
        .filter(|c| c.cursor.is_some_and(|cur| cur < last - 20_000_000))
        .count();
    assert!(
        replay_sessions >= 25,
        "two passes of 15 sessions each, the replay's from its own progress: {replay_sessions}"
    );
}

/// Item 4. Dead letters that tell no time (invalid JSON) are written once however often a
/// reconnect replays them.
#[test]
fn dead_letters_without_a_time_are_written_once_across_reconnects() {
    let redis = redis(false);
    // 100 ms apart: a session of 60 events spans 6 s, past the 1 s rewind.
    let mut lines = respace(&corpus(400, 1305), 1_700_000_000_000_000, 100_000);
    for (i, at) in [57, 130, 301].into_iter().enumerate() {
        lines.insert(at, format!("{{\"not\": json number {i}"));
    }
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), Some(60));
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.batch_max_events = 1;
    s.jetstream.rewind = Duration::from_secs(1);
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(
                &sup,
                Duration::from_secs(60),
                "every event committed",
                |s| s.reader.committed_cursor == Some(last),
            )
            .await;
        },
    );
    let mut con = redis.connection().unwrap();
    assert_exactly_once(&mut con, PREFIX, &lines);
    assert_eq!(
        dead_reasons(&mut con),
        HashMap::from([("invalid_json".to_owned(), 3)]),
        "3 bad frames, each once, across {} sessions",
        server.connections().len()
    );
    assert!(server.connections().len() >= 7);
}

/// Item 7. A host that resumes an hour before the cursor asked for, at every reconnect:
/// nothing older than the dial position becomes a job again.
#[test]
fn a_host_that_replays_an_hour_early_at_every_reconnect_writes_no_duplicate() {
    let redis = redis(false);
    // 2 h of events, one every 2 s; a close every 2,500 events, and every redial starts an
    // hour (1,800 events) before its cursor.
    let lines = respace(&corpus(3_600, 1307), 1_700_000_000_000_000, 2_000_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake_with(lines.clone(), |c| {
        c.close_every = Some(2_500);
        c.resume_early = Some(Duration::from_secs(3_600));
    });
    let s = settings(&server.url(), &redis.url());
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(
                &sup,
                Duration::from_secs(90),
                "every event committed",
                |s| s.reader.committed_cursor == Some(last),
            )
            .await;
        },
    );
    let mut con = redis.connection().unwrap();
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 3_600);
    assert!(server.connections().len() >= 3);
}

/// Item 12. Memory is bounded in bytes: 1 MB frames with Redis stopped fill the byte
/// budget (8 MiB), not the window (16 batches of 64 events = 1,024 MB); then everything
/// lands once.
#[test]
fn frames_in_flight_are_bounded_in_bytes_whatever_their_size() {
    let redis = redis(false);
    let big = "x".repeat(1_000_000);
    // Only commits with a record, each padded to 1 MB: every frame weighs the same.
    let lines: Vec<String> = corpus(400, 1312)
        .iter()
        .filter_map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let r = v.pointer_mut("/commit/record").filter(|r| r.is_object())?;
            r["pad"] = serde_json::Value::String(big.clone());
            Some(v.to_string())
        })
        .take(120)
        .collect();
    assert_eq!(lines.len(), 120);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), None);
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.max_in_flight_batches = 16;
    s.jetstream.batch_max_events = 64;
    s.jetstream.max_in_flight_bytes = 8 * 1024 * 1024;
    s.jetstream.idle_timeout = Duration::from_secs(120);
    s.jetstream.ping_interval = Duration::from_secs(60);
    s.redis.response_timeout = Duration::from_secs(60);
    let pid = Pid::from_raw(i32::try_from(redis.pid().unwrap()).unwrap());
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "a first commit", |s| {
                s.reader.batches_committed >= 1
            })
            .await;
            kill(pid, Signal::SIGSTOP).unwrap();
            let full = wait_status(
                &sup,
                Duration::from_secs(60),
                "the byte budget spent",
                |s| s.reader.in_flight_bytes + 1_100_000 > 8 * 1024 * 1024,
            )
            .await;
            kill(pid, Signal::SIGCONT).unwrap();
            assert!(full.reader.in_flight_bytes <= 8 * 1024 * 1024);
            let committed_frames = full.writer.entries_written;
            assert!(
                full.reader.events_received <= committed_frames + 9,
                "reading stopped at the budget: {} received, {} committed",
                full.reader.events_received,
                committed_frames
            );
            let end = wait_status(
                &sup,
                Duration::from_secs(90),
                "every event committed",
                |s| s.reader.committed_cursor == Some(last),
            )
            .await;
            assert!(end.reader.peak_in_flight_bytes <= 8 * 1024 * 1024);
        },
    );
    let mut con = redis.connection().unwrap();
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 120);
}

/// Item 3, across a process restart: a replay stopped half-way (the process ends) is
/// resumed from its own progress (`cursor:replay`, committed with every replay batch) by the
/// next start, and goes on to its end; then the key is gone.
#[test]
fn a_replay_interrupted_by_a_process_restart_is_resumed_where_it_was() {
    let redis = redis(false);
    let lines = respace(&corpus(3_000, 1308), 1_700_000_000_000_000, 20_000);
    let first = time_of(&lines[0]).unwrap();
    let mid = time_of(&lines[1_500]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), Some(200));
    let mut s = settings(&server.url(), &redis.url());
    s.redis.dedupe_window = Duration::from_secs(11);
    s.jetstream.rewind = Duration::from_secs(1);
    let url = redis.url();
    let s2 = s.clone();
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "first pass committed", |s| {
                s.reader.committed_cursor == Some(last)
            })
            .await;
            let mut con = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            delete_records(&mut con, 2_000, 30);
            sup.send(Restart {
                from_cursor: Some(first),
            })
            .await
            .unwrap()
            .expect("not refused");
            wait_status(&sup, Duration::from_secs(60), "the replay half-way", |s| {
                s.reader.line_cursor.is_some_and(|c| c >= mid)
            })
            .await;
        },
    );
    let mut con = redis.connection().unwrap();
    let at: Option<u64> = con.get("jsi:cursor:replay").unwrap();
    let at = at.expect("the replay's progress is stored");
    assert!(
        (mid..last).contains(&at),
        "replay at {at}, between {mid} and {last}"
    );
    assert_eq!(
        stored_cursor(&mut con, PREFIX),
        Some(last),
        "the cursor never moved back"
    );
    with_supervisor(
        s2,
        StartChoice::Resume { fallback: None },
        |sup| async move {
            let st = status(&sup).await;
            assert_eq!(st.reader.line_cursor, Some(at), "resumed where it was");
            wait_status(
                &sup,
                Duration::from_secs(60),
                "the replay at its end",
                |s| s.reader.line_cursor == Some(last),
            )
            .await;
        },
    );
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 3_000);
    let gone: Option<u64> = con.get("jsi:cursor:replay").unwrap();
    assert_eq!(gone, None, "caught up: the replay key is deleted");
}

/// The jump check does not hold back a quiet (filtered) stream: events minutes apart in
/// event time, the last one followed by nothing, all land and the cursor reaches the last
/// (each jump is confirmed by the next event, the last one released after 1 s because it is
/// not ahead of the wall clock). No dead letter, no stall.
#[test]
fn a_quiet_stream_with_long_gaps_moves_the_cursor_to_its_last_event() {
    let redis = redis(false);
    let lines = respace(&corpus(6, 1309), 1_700_000_000_000_000, 120_000_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(4));
    let s = settings(&server.url(), &redis.url());
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let st = wait_status(
                &sup,
                Duration::from_secs(30),
                "the last event committed",
                |s| s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0,
            )
            .await;
            assert_eq!(st.reader.dead_letters, 0);
            assert_eq!(st.reader.stalled_secs, None);
        },
    );
    let mut con = redis.connection().unwrap();
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 6);
    assert_eq!(stored_cursor(&mut con, PREFIX), Some(last));
}

/// A `replay` on a key prefix a live `run` writes to would share its commit chain (each
/// taking the other's commits for a Redis rollback) and its dedupe index: refused with what
/// to do instead, before anything is written; after the run stops cleanly it is allowed.
#[test]
fn a_replay_beside_a_live_run_on_the_same_prefix_is_refused() {
    let redis = redis(false);
    let lines = corpus(300, 1310);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), None);
    let env = ingestor_env(&server.url(), &redis.url());
    let cursor = first.to_string();
    let mut run = Ingestor::spawn(&["run", "--cursor", &cursor], &env);
    let mut con = redis.connection().unwrap();
    wait_until(
        Duration::from_secs(60),
        "the run's heartbeat and all events",
        || {
            let state: Option<String> = redis::cmd("HGET")
                .arg("jsi:heartbeat")
                .arg("state")
                .query(&mut con)
                .unwrap();
            state.is_some() && stored_cursor(&mut con, PREFIX) == Some(last)
        },
    );
    let entries: usize = con.xlen("jsi:records").unwrap();
    // Up to half-way: behind the stored cursor, so the replay's progress is stored as it goes.
    let until = time_of(&lines[150]).unwrap();
    let replay = |env: &[(&str, String)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jetstream-ingestor"));
        cmd.args(["replay", "--from", &cursor, "--until", &until.to_string()]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("replay runs")
    };
    let out = replay(&env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains("another jetstream-ingestor") && stderr.contains("admin restart --cursor"),
        "says why and what to do: {stderr}"
    );
    let after: usize = con.xlen("jsi:records").unwrap();
    assert_eq!(after, entries, "nothing written by the refused replay");

    run.sigterm();
    let status = run.wait_exit(Duration::from_secs(20)).expect("run exits");
    assert!(status.success());
    let out = replay(&env);
    assert!(
        out.status.success(),
        "allowed once the run stopped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&mut con, PREFIX, &lines);
    let left: Option<u64> = con.get("jsi:cursor:replay").unwrap();
    assert_eq!(
        left, None,
        "a replay that reached --until leaves no progress behind"
    );
}

/// The stall alarm does not fire on a replay of older events (`Restart { from_cursor }`):
/// its events are older than the stored cursor, but they are the replay's progress.
#[test]
fn a_long_replay_of_older_events_is_not_a_stall() {
    let redis = redis(false);
    let lines = respace(&corpus(600, 1311), 1_700_000_000_000_000, 20_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(200));
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.stall_timeout = Duration::from_secs(1);
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "first pass committed", |s| {
                s.reader.committed_cursor == Some(last)
            })
            .await;
            sup.send(Restart {
                from_cursor: Some(first),
            })
            .await
            .unwrap()
            .expect("not refused");
            // 600 events at 200/s: the replay takes ~3 s, three times the stall timeout.
            let polls = std::cell::Cell::new(0u32);
            wait_status(
                &sup,
                Duration::from_secs(60),
                "the replay at its end",
                |s| {
                    polls.set(polls.get() + 1);
                    assert_eq!(s.reader.stalled_secs, None, "a replay is not a stall");
                    s.reader.line_cursor == Some(last)
                },
            )
            .await;
            let polls = polls.get();
            assert!(polls > 20, "watched the whole replay: {polls} polls");
        },
    );
    let mut con = redis.connection().unwrap();
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 600);
}

/// A `Restart` into the past is a promise once acknowledged: the replay's start is in Redis
/// (`cursor:replay`) before the answer, so a crash before its first commit resumes it at the
/// next start. Here no replay batch can commit (the host is gone when the restart is asked),
/// the process ends, and the next one (another host with the same history) replays and
/// fills in the jobs lost meanwhile.
#[test]
fn a_restart_acknowledged_before_its_first_commit_survives_the_process() {
    let redis = redis(false);
    let lines = respace(&corpus(2_000, 1311), 1_700_000_000_000_000, 20_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), None);
    let mut s = settings(&server.url(), &redis.url());
    s.redis.dedupe_window = Duration::from_secs(11);
    s.jetstream.rewind = Duration::from_secs(1);
    let url = redis.url();
    let s2 = s.clone();
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "first pass committed", |s| {
                s.reader.committed_cursor == Some(last)
            })
            .await;
            let mut con = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            delete_records(&mut con, 300, 25);
            server.shutdown();
            sup.send(Restart {
                from_cursor: Some(first),
            })
            .await
            .unwrap()
            .expect("not refused");
            let at: Option<u64> = con.get("jsi:cursor:replay").unwrap();
            assert_eq!(
                at,
                Some(first),
                "acknowledged: the replay's start is stored"
            );
        },
    );
    let mut con = redis.connection().unwrap();
    assert_eq!(stored_cursor(&mut con, PREFIX), Some(last));
    let again = fake(lines.clone(), None);
    let mut s2 = s2;
    s2.jetstream.endpoints = vec![again.url()];
    with_supervisor(
        s2,
        StartChoice::Resume { fallback: None },
        |sup| async move {
            wait_status(
                &sup,
                Duration::from_secs(60),
                "the resumed replay at its end",
                |s| s.reader.line_cursor == Some(last),
            )
            .await;
        },
    );
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 2_000);
    let gone: Option<u64> = con.get("jsi:cursor:replay").unwrap();
    assert_eq!(gone, None, "caught up: the replay key is deleted");
}

/// A host that ends every session sooner than the rewind is worth of events (a proxy that
/// cuts connections, a host that sheds slow consumers): each redial goes back by the rewind,
/// and without a floor the reader read the same overlap forever. The latest session's
/// committed progress bounds the rewind on the same host, so the reader gets to the end.
#[test]
fn sessions_shorter_than_the_rewind_still_make_progress() {
    let redis = redis(false);
    // 3,000 events 20 ms apart (60 s); a 30 s rewind is 1,500 events; sessions of 400.
    let lines = respace(&corpus(3_000, 1312), 1_700_000_000_000_000, 20_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), Some(400));
    let mut s = settings(&server.url(), &redis.url());
    s.redis.dedupe_window = Duration::from_secs(40);
    s.jetstream.rewind = Duration::from_secs(30);
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(
                &sup,
                Duration::from_secs(60),
                "every event committed",
                |s| s.reader.committed_cursor == Some(last),
            )
            .await;
        },
    );
    let mut con = redis.connection().unwrap();
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 3_000);
    // Each session that gets past the committed cursor is followed by a redial a rewind
    // (1,500 events) back; the sessions after it climb from where the previous one got (399
    // new events each) until one gets past again: at most 5 sessions per cycle, each cycle
    // at least 97 events further (1,500 = 3 × 399 + 303), so at most 5 × ⌈3,000 / 97⌉ =
    // 155 sessions. Without the climb no session ever got past the first 400 events.
    let sessions = server.connections().len();
    assert!(
        sessions <= 155,
        "{sessions} sessions for 3,000 events in sessions of 400"
    );
}

/// Deletes `n` entries of `jsi:records` after the first `skip` (jobs lost, for a replay to
/// bring back).
fn delete_records(con: &mut redis::Connection, skip: usize, n: usize) {
    let ids: redis::streams::StreamRangeReply =
        con.xrange_count("jsi:records", "-", "+", skip + n).unwrap();
    let gone: Vec<String> = ids
        .ids
        .iter()
        .skip(skip)
        .take(n)
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(gone.len(), n, "enough entries to delete");
    let _: usize = con.xdel("jsi:records", &gone).unwrap();
}
