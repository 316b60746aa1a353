//! Operating the real binary: `/readyz` (503 while waiting for Redis, 200 once streaming and
//! committing), `/metrics` (valid Prometheus text, counters move with traffic), the heartbeat
//! hash (refreshed, expires once the process is gone), SIGTERM during a replay (exit 0, last
//! batch committed, nothing duplicated after a restart). The control stream is tested in
//! `ops_control.rs`, the Docker files in `ops_docker.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ops_support;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jetstream_ingestor::fake_jetstream::ConnectionEnd;
use ops_support::*;
use support::*;

#[test]
fn readyz_is_503_until_streaming_and_committing_then_200() {
    let mut redis = redis(false);
    let lines = corpus(3_000, 71);
    let server = paced_fake(lines.clone(), 2_000);
    let env = ingestor_env(&server.url(), &redis.url());
    redis.kill9();
    let cursor = time_of(&lines[0]).unwrap().to_string();
    let run = start(&["run", "--cursor", &cursor], &env, Some(TOKEN));
    let a = &run.admin;

    // The process is alive (healthz) but waits for Redis: not ready, details only with auth.
    let r = a.raw("GET", "/readyz", &[], b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (503, "not ready\n"));
    let r = a.get("/readyz").unwrap();
    assert_eq!(r.status, 503);
    let details = r.json().unwrap();
    assert_eq!(details["state"], "starting", "{details}");
    assert!(details["reason"].as_str().unwrap().contains("Redis"));
    assert_eq!(admin_status(a)["state"], "starting");
    let r = a.post("/admin/pause", None).unwrap();
    assert_eq!(r.status, 503, "commands wait for the pipeline");
    assert!(
        server.connections().is_empty(),
        "no dial before Redis answers"
    );

    redis.restart().unwrap();
    let start = Instant::now();
    loop {
        let r = a.raw("GET", "/readyz", &[], b"").unwrap();
        if r.status == 200 {
            assert_eq!(r.text(), "ready\n");
            break;
        }
        assert_eq!(r.status, 503);
        assert!(start.elapsed() < Duration::from_secs(30), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = admin_status(a);
    assert_eq!(st["state"], "streaming");
    assert!(st["commits"].as_u64().unwrap() >= 1);
    assert_eq!(st["ready"], true);

    // Paused by the operator: not ready (nothing is being ingested).
    assert_eq!(a.post("/admin/pause", None).unwrap().status, 202);
    wait_until(Duration::from_secs(10), "readyz 503 while paused", || {
        a.raw("GET", "/readyz", &[], b"").unwrap().status == 503
    });
}

/// Parses Prometheus text exposition: every line is a comment, empty, or `name{labels} value`.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split_whitespace().nth(1).unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "TYPE line {line:?}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                assert!(labels.ends_with('}'), "labels closed in {line:?}");
                let inner = &labels[..labels.len() - 1];
                for pair in split_labels(inner) {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(valid_name(k), "label name in {line:?}");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "quoted label value in {line:?}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "metric name in {line:?}");
        out.insert(series.to_owned(), value);
    }
    out
}

/// Splits `a="x",b="y,z"` at the commas between labels (not inside quoted values).
fn split_labels(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        parts.push(&s[start..]);
    }
    parts
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[test]
fn metrics_are_prometheus_text_and_move_with_traffic() {
    let redis = redis(false);
    let lines = corpus(6_000, 72);
    let times: Vec<u64> = lines.iter().map(|l| time_of(l).unwrap()).collect();
    let server = paced_fake(lines.clone(), 2_000);
    let env = ingestor_env(&server.url(), &redis.url());
    let cursor = times[0].to_string();
    let run = start(&["run", "--cursor", &cursor], &env, None);
    let mut con = redis.connection().unwrap();
    let scrape = || {
        let r = run.admin.raw("GET", "/metrics", &[], b"").unwrap();
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        parse_prometheus(&r.text())
    };
    wait_until(Duration::from_secs(30), "first commits", || {
        stored_cursor(&mut con, "jsi:").is_some_and(|c| c >= times[1_000])
    });
    let m1 = scrape();
    wait_until(Duration::from_secs(30), "more commits", || {
        stored_cursor(&mut con, "jsi:").is_some_and(|c| c >= times[4_000])
    });
    let m2 = scrape();
    for counter in [
        "jetstream_ingestor_frames_received_total",
        "jetstream_ingestor_entries_written_total",
        "jetstream_ingestor_commits_total",
        "jetstream_ingestor_jobs_total{stream=\"records\"}",
    ] {
        let (a, b) = (m1.get(counter), m2.get(counter));
        assert!(
            a.is_some() && b > a,
            "{counter} moves with traffic: {a:?} -> {b:?}"
        );
    }
    for present in [
        "jetstream_ingestor_cursor_lag_seconds",
        "jetstream_ingestor_committed_cursor_us",
        "jetstream_ingestor_commit_duration_seconds_count",
        "jetstream_ingestor_connects_total{outcome=\"ok\"}",
        "jetstream_ingestor_batch_entries_count",
    ] {
        assert!(m2.contains_key(present), "{present} exported");
    }
    assert!(m2["jetstream_ingestor_cursor_lag_seconds"] > 0.0);
}

#[test]
fn heartbeat_hash_refreshes_and_expires_once_the_process_is_gone() {
    let redis = redis(false);
    let lines = corpus(4_000, 73);
    let server = paced_fake(lines.clone(), 2_000);
    let mut env = ingestor_env(&server.url(), &redis.url());
    env.push((
        "JETSTREAM_INGESTOR__HEARTBEAT__INTERVAL",
        "200ms".to_owned(),
    ));
    env.push(("JETSTREAM_INGESTOR__HEARTBEAT__TTL", "1s".to_owned()));
    env.push((
        "JETSTREAM_INGESTOR__HEARTBEAT__INSTANCE_ID",
        "ops-test-1".to_owned(),
    ));
    let cursor = time_of(&lines[0]).unwrap().to_string();
    let mut run = start(&["run", "--cursor", &cursor], &env, None);
    let mut con = redis.connection().unwrap();

    let mut first = HashMap::new();
    wait_until(Duration::from_secs(30), "a streaming heartbeat", || {
        first = hgetall(&mut con, "jsi:heartbeat");
        first.get("state").is_some_and(|s| s == "streaming")
            && first.get("jobs_total").is_some_and(|j| j != "0")
    });
    for key in [
        "instance",
        "version",
        "state",
        "committed_cursor",
        "lag_seconds",
        "last_event_unix_ms",
        "consecutive_failures",
        "events_total",
        "jobs_total",
        "dead_letters_total",
        "updated_unix_ms",
    ] {
        assert!(first.contains_key(key), "heartbeat has {key}: {first:?}");
    }
    assert_eq!(first["instance"], "ops-test-1");
    assert!(first["committed_cursor"].parse::<u64>().is_ok());
    assert!(first["lag_seconds"].parse::<f64>().unwrap() > 0.0);
    let pttl: i64 = redis::cmd("PTTL")
        .arg("jsi:heartbeat")
        .query(&mut con)
        .unwrap();
    assert!(pttl > 0 && pttl <= 1_000, "expires: pttl {pttl}");
    wait_until(Duration::from_secs(10), "the hash is rewritten", || {
        hgetall(&mut con, "jsi:heartbeat").get("updated_unix_ms") != first.get("updated_unix_ms")
    });

    run.ing.kill9();
    let gone = Instant::now();
    wait_until(Duration::from_secs(5), "the hash expires", || {
        let n: i64 = redis::cmd("EXISTS")
            .arg("jsi:heartbeat")
            .query(&mut con)
            .unwrap();
        n == 0
    });
    assert!(gone.elapsed() <= Duration::from_millis(1_500));
}

#[test]
fn sigterm_during_a_replay_exits_0_with_the_last_batch_committed() {
    let redis = redis(false);
    let lines = corpus(20_000, 74);
    let times: Vec<u64> = lines.iter().map(|l| time_of(l).unwrap()).collect();
    let (first, last) = (times[0], *times.last().unwrap());
    let server = paced_fake(lines.clone(), 4_000);
    let mut env = ingestor_env(&server.url(), &redis.url());
    env.push(("JETSTREAM_INGESTOR__JETSTREAM__REWIND", "100ms".to_owned()));
    let (from, until) = (first.to_string(), last.to_string());
    let mut run = start(&["replay", "--from", &from, "--until", &until], &env, None);
    let mut con = redis.connection().unwrap();
    wait_until(Duration::from_secs(30), "the replay is under way", || {
        stored_cursor(&mut con, "jsi:").is_some_and(|c| c >= times[6_000])
    });
    run.ing.sigterm();
    let exit = run
        .ing
        .wait_exit(Duration::from_secs(10))
        .expect("exits within 10 s of SIGTERM");
    assert!(exit.success(), "SIGTERM exit status {exit:?}");

    let cursor = stored_cursor(&mut con, "jsi:").unwrap();
    assert!(cursor < last, "stopped mid-replay");
    assert_eq!(
        newest_job_time(&mut con, "jsi:"),
        Some(cursor),
        "the cursor is exactly the newest job written"
    );
    let hb = hgetall(&mut con, "jsi:heartbeat");
    assert_eq!(hb["state"], "stopped", "the last heartbeat says stopped");
    assert_eq!(
        hb["committed_cursor"],
        cursor.to_string(),
        "the process's last committed cursor is the stored one: nothing read was left uncommitted"
    );
    assert!(matches!(
        server.connections()[0].end,
        ConnectionEnd::ClientClosed { .. }
    ));

    // A restart resumes from there: everything lands once.
    let mut run = start(&["run"], &env, None);
    wait_until(Duration::from_secs(60), "the rest lands", || {
        stored_cursor(&mut con, "jsi:") == Some(last)
    });
    assert_eq!(server.connections()[1].cursor, Some(cursor - 100_000));
    run.ing.sigterm();
    assert!(
        run.ing
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    let (missing, dups) = compare(&mut con, "jsi:", &lines);
    assert!(
        missing.is_empty() && dups.is_empty(),
        "missing {} dups {}",
        missing.len(),
        dups.len()
    );
}
