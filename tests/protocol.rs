//! The full Jetstream protocol against real Redis and fake Jetstream servers on 127.0.0.1:0:
//! zstd frames with the Jetstream dictionary, failover between hosts whose clocks differ
//! (every event once, none twice), requireHello for large filters and its limits, the gap
//! alarm on a clamping host, filter updates on the live socket, oversized frames.
//!
//! Synchronisation is by polling status, Redis or the fake's connection records with
//! deadlines; nothing sleeps to wait for something to happen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use actors::messages::{Filters, Restart, UpdateFilters};
use actors::supervisor::StartChoice;
use jetstream_ingestor::fake_jetstream::ConnectionEnd;
use support::*;

const SEC: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000;

fn exact(cursor: u64) -> StartChoice {
    StartChoice::Resume {
        fallback: Some(cursor),
    }
}

fn collection_of(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["commit"]["collection"].as_str().map(str::to_owned)
}

fn did_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["did"].as_str().unwrap().to_owned()
}

/// Every identity in the job streams that is not one of `expected` source lines.
fn unexpected(con: &mut redis::Connection, prefix: &str, expected: &[String]) -> Vec<String> {
    let wanted: HashSet<String> = expected
        .iter()
        .filter_map(|l| source_identity(l).map(|(id, _)| id))
        .collect();
    ["records", "identity"]
        .iter()
        .flat_map(|s| read_stream(con, &format!("{prefix}{s}")))
        .map(|e| entry_identity(&e))
        .filter(|id| !wanted.contains(id))
        .collect()
}

#[test]
fn zstd_replay_of_real_events_lands_the_same_jobs_as_plain_text() {
    let dict = zstd_dictionary();
    let lines = real_events("v1-production-corpus/expected_v1.jsonl");
    let min = lines.iter().filter_map(|l| time_of(l)).min().unwrap();
    let distinct: HashSet<String> = lines
        .iter()
        .filter_map(|l| source_identity(l).map(|(id, _)| id))
        .collect();
    let redis = redis(false);

    for (prefix, compress) in [("plain:", false), ("zstd:", true)] {
        let server = fake_with(lines.clone(), |c| {
            c.zstd_dictionary = compress.then(|| dict.clone());
        });
        let mut s = settings(&server.url(), &redis.url());
        s.redis.key_prefix = prefix.to_owned();
        s.jetstream.compress = compress;
        s.jetstream.zstd_dictionary = compress.then(|| dict.clone());
        s.validate().expect("valid with the dictionary");
        let n = distinct.len() as u64;
        with_supervisor(s, exact(min), |sup| async move {
            let st = wait_status(&sup, Duration::from_secs(30), "every event written", |s| {
                s.writer.entries_written >= n && s.writer.queued_batches == 0
            })
            .await;
            assert_eq!(st.reader.dead_letters, 0, "{prefix}: nothing dead-lettered");
            assert_eq!(st.writer.entries_written, n);
        });
        let conns = server.connections();
        assert_eq!(conns[0].compress, compress);
        assert!(
            conns[0].uri.contains("compress=true") == compress,
            "{}",
            conns[0].uri
        );
    }

    let mut con = redis.connection().unwrap();
    let plain = jobs_without_source(&mut con, "plain:");
    let zstd = jobs_without_source(&mut con, "zstd:");
    assert_eq!(plain.len(), distinct.len());
    assert_eq!(
        plain, zstd,
        "compressed replay must land exactly the same jobs"
    );
    assert!(read_stream(&mut con, "zstd:dead").is_empty());
}

/// Issue 17: `compress = true` with no `zstd_dictionary` configured works out of the box.
/// Neither side is given a dictionary file: the fake compresses every real event with the
/// v1 dictionary it embeds (it never falls back to text for a subscriber that asked for
/// zstd), the reader inflates them with the one embedded in the binary, and every event
/// lands once, none dead-lettered.
#[test]
fn compress_without_a_configured_dictionary_ingests_real_frames_with_the_embedded_one() {
    let lines = real_events("v1-production-corpus/expected_v1.jsonl");
    let min = lines.iter().filter_map(|l| time_of(l)).min().unwrap();
    let n = lines
        .iter()
        .filter_map(|l| source_identity(l).map(|(id, _)| id))
        .collect::<HashSet<_>>()
        .len() as u64;
    let redis = redis(false);
    let server = fake(lines.clone(), None);
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.compress = true;
    assert_eq!(s.jetstream.zstd_dictionary, None);
    s.validate()
        .expect("compress without a dictionary file is valid");
    with_supervisor(s, exact(min), |sup| async move {
        let st = wait_status(&sup, Duration::from_secs(30), "every event written", |s| {
            s.writer.entries_written >= n && s.writer.queued_batches == 0
        })
        .await;
        assert_eq!(st.reader.dead_letters, 0, "every zstd frame inflated");
        assert_eq!(st.writer.entries_written, n);
    });
    let conns = server.connections();
    assert!(conns[0].compress, "zstd was asked for: {}", conns[0].uri);
    assert!(conns[0].uri.contains("compress=true"), "{}", conns[0].uri);
    assert!(
        conns[0].events_sent >= n,
        "{} frames sent",
        conns[0].events_sent
    );
    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &lines);
    assert!(
        missing.is_empty() && dups.is_empty(),
        "missing {missing:?} dups {dups:?}"
    );
    assert!(read_stream(&mut con, "jsi:dead").is_empty());
}

#[test]
fn failover_to_a_host_with_another_clock_when_the_first_goes_silent() {
    let redis = redis(false);
    let lines = respace(&corpus(3_000, 61), T0, 10_000);
    let times: Vec<u64> = lines.iter().map(|l| time_of(l).unwrap()).collect();
    let a = fake_with(lines.clone(), |c| c.silent_after = Some(1_000));
    // B's clock is 3 s ahead: the same events, other time_us.
    let b = fake_with(lines.clone(), |c| c.clock_offset_us = 3 * SEC as i64);
    let mut s = settings(&a.url(), &redis.url());
    s.jetstream.endpoints = vec![a.url(), b.url()];
    s.jetstream.ping_interval = Duration::from_millis(300);
    s.jetstream.idle_timeout = Duration::from_secs(1);
    s.jetstream.failover_rewind = Duration::from_secs(5);
    s.jetstream.rewind = Duration::from_millis(2);
    let (idle, backoff_max) = (s.jetstream.idle_timeout, s.jetstream.backoff_max);
    let (ra, rb) = (&a, &b);
    let b_last = times[2_999] + 3 * SEC;

    with_supervisor(s, exact(times[0]), |sup| async move {
        wait_until_async(Duration::from_secs(30), "A goes silent", || {
            ra.connections()
                .first()
                .is_some_and(|c| c.end == ConnectionEnd::Silent)
        })
        .await;
        let silent_at = Instant::now();
        let st = wait_status(&sup, Duration::from_secs(10), "moved to B", |s| {
            s.reader.endpoint_index == 1
        })
        .await;
        let took = silent_at.elapsed();
        assert!(
            took <= idle + backoff_max + Duration::from_millis(1_500),
            "failover took {took:?}"
        );
        assert_eq!(st.reader.failovers, 1);
        assert_eq!(st.reader.endpoint, rb.url());
        let moved = st
            .reader
            .last_failover
            .clone()
            .expect("last_failover is set");
        assert_eq!((moved.from, moved.to), (ra.url(), rb.url()));
        assert_eq!(moved.reason, "idle_timeout");
        let st = wait_status(
            &sup,
            Duration::from_secs(30),
            "B's last event committed",
            |s| s.reader.committed_cursor == Some(b_last) && s.writer.queued_batches == 0,
        )
        .await;
        assert_eq!(st.reader.consecutive_failures, 0, "B works");
        assert_eq!(st.reader.failovers, 1);
        assert_eq!(st.reader.gaps, 0);
        assert!(
            st.writer.entries_skipped >= 800,
            "the failover overlap was replayed and skipped: {}",
            st.writer.entries_skipped
        );
    });

    assert_eq!(a.connections().len(), 1, "a silent host is left at once");
    let first_on_b = &b.connections()[0];
    assert_eq!(
        first_on_b.cursor,
        Some(times[999] - 5 * SEC),
        "first dial on B: committed cursor (A's clock) minus failover_rewind"
    );
    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &lines);
    assert!(missing.is_empty(), "{} missing", missing.len());
    assert!(dups.is_empty(), "{} duplicated", dups.len());
}

#[test]
fn failover_after_repeated_dial_failures_to_a_host_whose_clock_is_behind() {
    let redis = redis(false);
    let lines = respace(&corpus(3_000, 62), T0, 10_000);
    let times: Vec<u64> = lines.iter().map(|l| time_of(l).unwrap()).collect();
    let a = fake_with(lines[..1_000].to_vec(), |c| c.close_at_end = true);
    let a_port = a.addr().port();
    let a_url = a.url();
    let a_url_str = a_url.clone();
    // B's clock is 3 s behind, and it drops the connection every 300 events (3 s of its
    // time): its first sessions end while its times are still below the committed cursor
    // (A's clock), so redials must start from what B itself delivered.
    let b = fake_with(lines.clone(), |c| {
        c.clock_offset_us = -3 * SEC as i64;
        c.close_every = Some(300);
    });
    let mut s = settings(&a_url, &redis.url());
    s.jetstream.endpoints = vec![a_url, b.url()];
    s.jetstream.failover_after = 3;
    s.jetstream.failover_rewind = Duration::from_secs(5);
    s.jetstream.rewind = Duration::from_millis(2);
    let b_last = times[2_999] - 3 * SEC;
    let a_last = times[999];
    let rb = &b;
    let mut a = Some(a);

    with_supervisor(s, exact(times[0]), |sup| async move {
        wait_status(&sup, Duration::from_secs(30), "A's events committed", |s| {
            s.reader.committed_cursor == Some(a_last)
        })
        .await;
        // A goes away for good: dials fail, three in a row move the reader to B.
        let server = a.take().unwrap();
        tokio::task::spawn_blocking(move || server.shutdown())
            .await
            .unwrap();
        let st = wait_status(&sup, Duration::from_secs(30), "moved to B", |s| {
            s.reader.endpoint_index == 1
        })
        .await;
        assert_eq!(st.reader.failovers, 1);
        // B's sessions may already have ended (it closes every 300 events) and overwritten
        // `last_error`; `last_failover` keeps what moved the reader.
        let moved = st
            .reader
            .last_failover
            .clone()
            .expect("last_failover is set");
        assert_eq!(moved.from, a_url_str);
        assert_eq!(moved.to, rb.url());
        assert_eq!(moved.reason, "connect_failed", "{moved:?}");
        assert!(
            moved
                .error
                .as_deref()
                .is_some_and(|e| e.contains(&a_port.to_string())),
            "{moved:?}"
        );
        let st = wait_status(&sup, Duration::from_secs(30), "all events written", |s| {
            s.writer.entries_written >= 3_000 && s.writer.queued_batches == 0
        })
        .await;
        assert_eq!(st.reader.committed_cursor, Some(b_last));
        assert_eq!(st.reader.consecutive_failures, 0);
        assert_eq!(st.reader.failovers, 1);
        assert_eq!(st.writer.entries_written, 3_000);
        assert!(rb.connections().len() >= 7, "B closed every 300 events");
    });

    let on_b = b.connections();
    assert_eq!(
        on_b[0].cursor,
        Some(times[999] - 5 * SEC),
        "first dial on B rewinds by failover_rewind"
    );
    // Its first session served A's events 799..=1098 (B time = A time - 3 s).
    assert_eq!(on_b[0].events_sent, 300);
    assert_eq!(
        on_b[1].cursor,
        Some(times[1_098] - 3 * SEC - 2_000),
        "the redial starts from B's own last event minus the rewind, behind A's cursor"
    );
    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &lines);
    assert!(missing.is_empty(), "{} missing", missing.len());
    assert!(dups.is_empty(), "{} duplicated", dups.len());
}

/// The stored cursor does not say which host stamped it. With several endpoints, a start
/// may dial a host whose clock is behind the one that committed it: the first dial rewinds
/// by `failover_rewind`, not `rewind`, and nothing in between is skipped.
#[test]
fn a_start_with_several_endpoints_rewinds_the_stored_cursor_by_failover_rewind() {
    let redis = redis(false);
    let lines = respace(&corpus(600, 64), T0, 10_000);
    let times: Vec<u64> = lines.iter().map(|l| time_of(l).unwrap()).collect();
    // The previous run committed up to event 399 from a host whose clock is 3 s ahead of A.
    let stored = times[399] + 3 * SEC;
    redis::cmd("SET")
        .arg("jsi:cursor")
        .arg(stored)
        .exec(&mut redis.connection().unwrap())
        .unwrap();
    let a = fake_with(lines.clone(), |_| {});
    let mut s = settings(&a.url(), &redis.url());
    s.jetstream.endpoints = vec![a.url(), "ws://127.0.0.1:9/subscribe".to_owned()];
    s.jetstream.rewind = Duration::from_millis(2);
    s.jetstream.failover_rewind = Duration::from_secs(5);
    with_supervisor(
        s,
        StartChoice::Resume { fallback: None },
        |sup| async move {
            // A serves from its event 199 (stored - 5 s in its clock): 401 events. With the
            // plain 2 ms rewind it would serve nothing, and this would time out.
            let st = wait_status(
                &sup,
                Duration::from_secs(30),
                "A's 401 events written",
                |s| s.writer.entries_written >= 401 && s.writer.queued_batches == 0,
            )
            .await;
            assert_eq!(st.writer.entries_written, 401);
            assert_eq!(st.reader.endpoint_index, 0);
            assert_eq!(st.reader.failovers, 0);
        },
    );
    let on_a = a.connections();
    assert_eq!(
        on_a[0].cursor,
        Some(stored - 5 * SEC),
        "the first dial rewinds the stored cursor by failover_rewind"
    );
    // Every event from 199 on, once (the stored cursor never moves back).
    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &lines[199..]);
    assert!(missing.is_empty(), "{} missing", missing.len());
    assert!(dups.is_empty(), "{} duplicated", dups.len());
}

#[test]
fn require_hello_sends_the_filters_before_anything_is_served() {
    let redis = redis(false);
    let lines = corpus(1_500, 63);
    let wanted = "app.bsky.feed.post";
    let expected: Vec<String> = lines
        .iter()
        .filter(|l| collection_of(l).is_none_or(|c| c == wanted))
        .cloned()
        .collect();
    let server = fake(lines.clone(), None);
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.require_hello = true;
    s.jetstream.wanted_collections = vec![wanted.to_owned()];
    let n = expected.len() as u64;

    with_supervisor(s, exact(time_of(&lines[0]).unwrap()), |sup| async move {
        wait_status(
            &sup,
            Duration::from_secs(30),
            "wanted events written",
            |s| s.writer.entries_written >= n && s.writer.queued_batches == 0,
        )
        .await;
    });

    let conn = &server.connections()[0];
    assert!(conn.require_hello);
    assert!(
        !conn.uri.contains("wantedCollections"),
        "filters are not in the URL: {}",
        conn.uri
    );
    assert_eq!(conn.options_updates, 1);
    assert_eq!(
        conn.filter_changes_at,
        vec![0],
        "the filters were in force before the first event"
    );
    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &expected);
    assert!(missing.is_empty() && dups.is_empty());
    assert!(unexpected(&mut con, "jsi:", &expected).is_empty());
}

#[test]
fn ten_thousand_dids_go_through_require_hello_and_one_more_is_refused() {
    let redis = redis(false);
    let lines = corpus(2_000, 64);
    let mut dids: Vec<String> = lines.iter().map(|l| did_of(l)).collect();
    dids.sort();
    dids.dedup();
    // Half of the accounts that appear, then fillers up to the limit.
    let mut wanted: Vec<String> = dids.iter().step_by(2).cloned().collect();
    let chosen: HashSet<String> = wanted.iter().cloned().collect();
    let mut i = 0;
    while wanted.len() < 10_000 {
        wanted.push(format!("did:plc:filler{i:018}"));
        i += 1;
    }
    let expected: Vec<String> = lines
        .iter()
        .filter(|l| chosen.contains(&did_of(l)))
        .cloned()
        .collect();
    assert!(!expected.is_empty() && expected.len() < lines.len());

    // 10,001 DIDs: refused at start with the key and the count, and refused as an update.
    let server = fake(lines.clone(), None);
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.wanted_dids = wanted.clone();
    s.jetstream.wanted_dids.push("did:plc:oneover".to_owned());
    let err = s
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("jetstream.wanted_dids") && err.contains("10001") && err.contains("10000"),
        "{err}"
    );

    s.jetstream.wanted_dids = wanted.clone();
    s.validate().expect("10,000 DIDs are accepted");
    let n = expected.len() as u64;
    let too_many = Filters {
        wanted_collections: vec![],
        wanted_dids: (0..10_001).map(|i| format!("did:plc:x{i}")).collect(),
    };
    let srv = &server;
    with_supervisor(s, exact(time_of(&lines[0]).unwrap()), |sup| async move {
        wait_status(
            &sup,
            Duration::from_secs(30),
            "wanted events written",
            |s| s.writer.entries_written >= n && s.writer.queued_batches == 0,
        )
        .await;
        let refused = sup.send(UpdateFilters { filters: too_many }).await.unwrap();
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("10001")),
            "{refused:?}"
        );
        assert_eq!(srv.connections()[0].options_updates, 1, "nothing sent");
    });

    let conn = &server.connections()[0];
    assert!(
        conn.require_hello,
        "a URL with 10,000 DIDs would be too long"
    );
    assert!(conn.uri.len() < 8 * 1024 && !conn.uri.contains("wantedDids"));
    assert_eq!(
        (conn.options_updates, conn.filter_changes_at.clone()),
        (1, vec![0])
    );
    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &expected);
    assert!(missing.is_empty() && dups.is_empty());
    assert!(unexpected(&mut con, "jsi:", &expected).is_empty());
}

#[test]
fn an_old_cursor_on_a_clamping_host_raises_the_gap_alarm_once() {
    let redis = redis(false);
    let lines = respace(&corpus(3_000, 65), T0, 10_000);
    let times: Vec<u64> = lines.iter().map(|l| time_of(l).unwrap()).collect();
    // The host keeps the last 10 s only (events 1999 and later); it also closes every 300
    // events, so later dials (inside its retention) show that they raise nothing.
    let server = fake_with(lines.clone(), |c| {
        c.retention = Some(Duration::from_secs(10));
        c.close_every = Some(300);
    });
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.gap_threshold = Duration::from_secs(5);
    s.jetstream.rewind = Duration::from_millis(2);
    let url = server.url();
    let times_ref = &times;

    with_supervisor(s, exact(times[0]), |sup| async move {
        let times = times_ref;
        let st = wait_status(&sup, Duration::from_secs(30), "a gap alarm", |s| {
            s.reader.gaps > 0
        })
        .await;
        let gap = st.reader.last_gap.clone().expect("the last gap");
        assert_eq!(gap.requested_cursor, times[0]);
        assert_eq!(
            gap.first_event_us, times[1_999],
            "clamped to the host's oldest"
        );
        assert_eq!(gap.gap_us, times[1_999] - times[0]);
        assert_eq!(gap.endpoint, url);
        assert_eq!(gap.session, 1);
        let st = wait_status(&sup, Duration::from_secs(30), "the end committed", |s| {
            s.reader.committed_cursor == Some(times[2_999])
        })
        .await;
        assert!(st.reader.sessions_started >= 4);
        assert_eq!(
            st.reader.gaps, 1,
            "redials inside the retention raise nothing"
        );
    });
    assert_eq!(server.connections()[0].cursor, Some(times[0]));
    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &lines[1_999..]);
    assert!(missing.is_empty() && dups.is_empty());
}

#[test]
fn update_filters_changes_the_live_subscription_without_reconnecting() {
    let redis = redis(false);
    let lines = corpus(3_000, 66);
    let server = fake_with(lines.clone(), |c| c.rate = Some(1_500));
    let s = settings(&server.url(), &redis.url());
    let srv = &server;
    let wanted = "app.bsky.feed.like";
    let lines_ref = &lines;

    with_supervisor(s, exact(time_of(&lines[0]).unwrap()), |sup| async move {
        wait_status(&sup, Duration::from_secs(30), "some events read", |s| {
            s.reader.events_received >= 300
        })
        .await;
        let bad = sup
            .send(UpdateFilters {
                filters: Filters {
                    wanted_collections: vec!["not a collection".into()],
                    wanted_dids: vec![],
                },
            })
            .await
            .unwrap();
        assert!(bad.is_err_and(|e| e.contains("not a collection")));
        sup.send(UpdateFilters {
            filters: Filters {
                wanted_collections: vec![wanted.into()],
                wanted_dids: vec![],
            },
        })
        .await
        .unwrap()
        .expect("valid filters are accepted");
        wait_until_async(Duration::from_secs(10), "the server applies them", || {
            srv.connections()[0].filter_changes_at.len() == 1
        })
        .await;
        let at = usize::try_from(srv.connections()[0].filter_changes_at[0]).unwrap();
        assert!(
            at >= 300 && at < lines_ref.len(),
            "applied mid-stream at {at}"
        );
        let expected = lines_ref[..at].len()
            + lines_ref[at..]
                .iter()
                .filter(|l| collection_of(l).is_none_or(|c| c == wanted))
                .count();
        let n = expected as u64;
        wait_status(&sup, Duration::from_secs(30), "the rest written", |s| {
            s.writer.entries_written >= n && s.writer.queued_batches == 0
        })
        .await;
        let conns = srv.connections();
        assert_eq!(conns.len(), 1, "no reconnect");
        assert_eq!(conns[0].options_updates, 1);
        assert_eq!(conns[0].end, ConnectionEnd::Open);

        // The filters are kept for later dials.
        sup.send(Restart { from_cursor: None })
            .await
            .unwrap()
            .expect("not refused");
        wait_until_async(Duration::from_secs(10), "a second dial", || {
            srv.connections().len() == 2
        })
        .await;
        assert_eq!(
            srv.connections()[1].wanted_collections,
            vec![wanted.to_owned()]
        );
    });

    let at = usize::try_from(server.connections()[0].filter_changes_at[0]).unwrap();
    let mut expected = lines[..at].to_vec();
    expected.extend(
        lines[at..]
            .iter()
            .filter(|l| collection_of(l).is_none_or(|c| c == wanted))
            .cloned(),
    );
    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &expected);
    assert!(missing.is_empty() && dups.is_empty());
    assert!(
        unexpected(&mut con, "jsi:", &expected).is_empty(),
        "only wanted collections after the update"
    );
}

/// 1,000 events 1 ms apart with a 100 kB event between the 500th and the 501st.
fn corpus_with_a_huge_event() -> (Vec<String>, String, u64) {
    let normal = respace(&corpus(1_000, 67), T0, 1_000);
    let t = time_of(&normal[499]).unwrap() + 500;
    let huge = format!(
        r#"{{"did":"did:plc:hugehugehugehugehugehuge","time_us":{t},"kind":"commit","commit":{{"rev":"3l3qo2vutsw2b","operation":"create","collection":"app.bsky.feed.post","rkey":"3l3qo2vuowo2b","record":{{"$type":"app.bsky.feed.post","text":"{}"}},"cid":"bafyreicl7rzkxdrm4zz2ehbx52kuk3mvfow6p3gzfys72r5grvskxoswy4"}}}}"#,
        "x".repeat(100_000)
    );
    let mut lines = normal;
    lines.insert(500, huge.clone());
    (lines, huge, t)
}

#[test]
fn an_oversized_frame_is_dead_lettered_and_the_stream_goes_on_past_it() {
    let (lines, huge, huge_time) = corpus_with_a_huge_event();
    let normal: Vec<String> = lines.iter().filter(|l| **l != huge).cloned().collect();
    let last = time_of(normal.last().unwrap()).unwrap();
    let before = time_of(&normal[499]).unwrap();
    let after = time_of(&normal[500]).unwrap();
    let earlier = time_of(&normal[400]).unwrap();

    // A host that honours maxMessageSizeBytes, then one that ignores it.
    for honour in [true, false] {
        let redis = redis(false);
        let server = fake_with(lines.clone(), |c| c.honor_max_message_size = honour);
        let mut s = settings(&server.url(), &redis.url());
        s.jetstream.max_frame_bytes = 64 * 1024;
        let srv = &server;
        let mut dials = 0;
        let dials_ref = &mut dials;
        with_supervisor(s, exact(T0), |sup| async move {
            let st = wait_status(&sup, Duration::from_secs(30), "the end committed", |s| {
                s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0
            })
            .await;
            assert_eq!(st.reader.dead_letters, 1);
            assert_eq!(st.reader.consecutive_failures, 0);
            *dials_ref = srv.connections().len();

            // Read again from before the frame: it is recognised and passed at once.
            let n = srv.connections().len();
            sup.send(Restart {
                from_cursor: Some(earlier),
            })
            .await
            .unwrap()
            .expect("not refused");
            wait_until_async(Duration::from_secs(10), "two more dials", || {
                srv.connections().len() >= n + 2
            })
            .await;
            let conns = srv.connections();
            assert_eq!(conns[n].cursor, Some(earlier));
            let resume = if honour { after } else { huge_time + 1 };
            assert_eq!(conns[n + 1].cursor, Some(resume), "straight past it");
            assert!(!conns[n + 1].uri.contains("maxMessageSizeBytes"));
            let st = wait_status(&sup, Duration::from_secs(10), "streaming again", |s| {
                s.reader.state == actors::messages::ReaderState::Streaming
            })
            .await;
            assert_eq!(st.reader.dead_letters, 1, "not dead-lettered twice");
            assert_eq!(srv.connections().len(), n + 2);
        });
        let mut con = redis.connection().unwrap();
        let (missing, dups) = compare(&mut con, "jsi:", &normal);
        assert!(missing.is_empty() && dups.is_empty(), "honour={honour}");
        let dead = read_stream(&mut con, "jsi:dead");
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0]["reason"], "frame_too_large");
        assert_eq!(dead[0]["raw_len"], huge.len().to_string());
        assert!(
            dead[0]["message"].contains(&huge.len().to_string())
                && dead[0]["message"].contains(&before.to_string()),
            "{}",
            dead[0]["message"]
        );

        let conns = server.connections()[..dials].to_vec();
        let resumed = conns.last().unwrap();
        if honour {
            assert_eq!(conns.len(), 2, "one dial past it: {conns:#?}");
            assert_eq!(resumed.cursor, Some(before + 1));
            assert!(
                resumed.uri.contains("maxMessageSizeBytes=65536"),
                "{}",
                resumed.uri
            );
            assert_eq!(
                resumed.options_updates, 1,
                "the cap is lifted after the first event"
            );
        } else {
            assert_eq!(
                resumed.cursor,
                Some(huge_time + 1),
                "probed to just past it"
            );
            assert!(conns.len() <= 2 + 2 * 12, "{} dials", conns.len());
        }
    }
}

#[test]
fn an_explicit_start_cursor_survives_failed_dials_and_failover() {
    let redis = redis(false);
    let lines = corpus(500, 68);
    let first = time_of(&lines[0]).unwrap();
    let port = jetstream_ingestor::local_redis::free_port().unwrap();
    let dead = format!("ws://127.0.0.1:{port}/subscribe");
    let server = fake(lines.clone(), None);
    let mut s = settings(&dead, &redis.url());
    s.jetstream.endpoints = vec![dead, server.url()];
    s.jetstream.failover_after = 2;
    let last = time_of(lines.last().unwrap()).unwrap();
    with_supervisor(s, exact(first), |sup| async move {
        let st = wait_status(&sup, Duration::from_secs(30), "all committed", |s| {
            s.reader.committed_cursor == Some(last)
        })
        .await;
        assert_eq!((st.reader.failovers, st.reader.endpoint_index), (1, 1));
    });
    assert_eq!(
        server.connections()[0].cursor,
        Some(first),
        "the asked cursor, not the live tail"
    );
    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &lines);
    assert!(missing.is_empty() && dups.is_empty());
}
