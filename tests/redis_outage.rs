//! Redis killed (kill -9) mid-replay and restarted with its AOF: nothing lost, nothing
//! duplicated, no restart of the ingestor, and while Redis is down reading stops with a
//! bounded number of events in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use actors::supervisor::StartChoice;
use jetstream_ingestor::fake_jetstream::{FakeJetstream, FakeJetstreamConfig, Source};
use support::*;

#[test]
fn redis_killed_and_restarted_mid_replay_loses_nothing_and_stays_bounded() {
    let mut redis = redis(true);
    let lines = corpus(20_000, 61);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let mut cfg = FakeJetstreamConfig::new(Source::Lines(lines.clone()));
    cfg.listen = ([127, 0, 0, 1], 0).into();
    cfg.rate = Some(5_000);
    let server = FakeJetstream::start(cfg).unwrap();
    let s = settings(&server.url(), &redis.url());
    let bound = (s.jetstream.max_in_flight_batches + 1) * s.jetstream.batch_max_events;
    let r = &mut redis;

    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let quarter = first + (last - first) / 4;
            wait_status(&sup, Duration::from_secs(60), "a quarter committed", |s| {
                s.reader.committed_cursor.is_some_and(|c| c >= quarter)
            })
            .await;
            r.kill9();

            // While Redis is down: commits fail and are retried, reading stops, in-flight is bounded.
            let down = wait_status(&sup, Duration::from_secs(20), "commit failures seen", |s| {
                s.writer.consecutive_commit_failures >= 2
            })
            .await;
            assert!(down.writer.last_error.is_some());
            let mut plateau = None;
            for _ in 0..150 {
                let a = status(&sup).await;
                let in_flight = a.reader.events_received + a.reader.dead_letters
                    - a.writer.entries_written
                    - a.writer.entries_skipped;
                assert!(
                    in_flight as usize <= bound,
                    "{in_flight} events in flight while Redis is down (bound {bound})"
                );
                assert!(a.writer.queued_batches <= 4);
                tokio::time::sleep(Duration::from_millis(300)).await;
                let b = status(&sup).await;
                if a.reader.events_received == b.reader.events_received {
                    plateau = Some(b.reader.events_received);
                    break;
                }
            }
            let plateau = plateau.expect("reading must stop while Redis is down");
            assert!(
                plateau < 20_000,
                "the reader must not read everything into memory"
            );

            r.restart().expect("redis restarts with its AOF");
            let st = wait_status(
                &sup,
                Duration::from_secs(60),
                "everything committed after Redis is back",
                |s| s.reader.committed_cursor == Some(last),
            )
            .await;
            assert_eq!(st.writer.consecutive_commit_failures, 0);
            assert_eq!(st.reader_restarts, 0, "no restart needed");
        },
    );

    let mut con = redis.connection().unwrap();
    assert_exactly_once(&mut con, "jsi:", &lines);
}
