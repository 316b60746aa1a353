//! Reconnects: a server that closes every N events loses nothing and duplicates nothing;
//! every redial carries the committed cursor minus the rewind; the backoff grows while dials
//! fail and resets once a session makes progress.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use actors::messages::ReaderState;
use actors::supervisor::StartChoice;
use jetstream_ingestor::fake_jetstream::{
    ConnectionEnd, FakeJetstream, FakeJetstreamConfig, Source,
};
use support::*;

const REWIND_US: u64 = 2_000;

#[test]
fn server_closing_every_n_events_loses_nothing_and_redials_from_committed_minus_rewind() {
    let redis = redis(false);
    let lines = corpus(3_000, 21);
    let times: Vec<u64> = lines.iter().map(|l| time_of(l).unwrap()).collect();
    let (first, last) = (times[0], *times.last().unwrap());
    let server = fake(lines.clone(), Some(250));
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.rewind = Duration::from_micros(REWIND_US);

    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let st = wait_status(
                &sup,
                Duration::from_secs(60),
                "cursor reaches the last event",
                |s| s.reader.committed_cursor == Some(last),
            )
            .await;
            assert_eq!(
                st.reader.consecutive_failures, 0,
                "progressing sessions are not failures"
            );
            assert!(
                st.writer.entries_skipped > 0,
                "the rewind overlap must have been replayed and skipped"
            );
            assert!(st.reader.sessions_started >= 12);
        },
    );

    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &lines);
    assert!(missing.is_empty(), "{} missing", missing.len());
    assert!(dups.is_empty(), "{} duplicated", dups.len());

    let conns = server.connections();
    assert_eq!(
        conns[0].cursor,
        Some(first),
        "first dial uses the initial cursor exactly"
    );
    let mut checked = 0;
    for pair in conns.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        if prev.end != ConnectionEnd::CloseEvery {
            continue;
        }
        let start = times
            .iter()
            .position(|t| *t >= prev.cursor.unwrap())
            .unwrap();
        let last_sent = times[start + usize::try_from(prev.events_sent).unwrap() - 1];
        assert_eq!(
            next.cursor,
            Some(last_sent - REWIND_US),
            "redial {} must start at committed cursor minus rewind",
            next.uri
        );
        checked += 1;
    }
    assert!(checked >= 11, "only {checked} redials checked");
}

#[test]
fn backoff_grows_while_dials_fail_and_resets_after_progress() {
    let redis = redis(false);
    let port = jetstream_ingestor::local_redis::free_port().unwrap();
    let endpoint = format!("ws://127.0.0.1:{port}/subscribe");
    let mut s = settings(&endpoint, &redis.url());
    s.jetstream.backoff_min = Duration::from_millis(10);
    s.jetstream.backoff_max = Duration::from_millis(400);
    let lines = corpus(1_000, 22);
    let first = time_of(&lines[0]).unwrap();

    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let st = wait_status(&sup, Duration::from_secs(30), "six failed dials", |s| {
                s.reader.consecutive_failures >= 6
            })
            .await;
            assert!(
                st.reader.backoff_ceiling_ms >= 160,
                "ceiling must double per failure: {st:#?}"
            );
            assert!(
                st.reader
                    .last_error
                    .as_deref()
                    .unwrap_or("")
                    .contains(&port.to_string()),
                "{:?}",
                st.reader.last_error
            );
            assert_eq!(st.reader.committed_cursor, None);

            // The host comes up: the next session makes progress and the backoff starts over.
            let mut cfg = FakeJetstreamConfig::new(Source::Lines(lines));
            cfg.listen = ([127, 0, 0, 1], port).into();
            cfg.close_every = Some(300);
            let server = FakeJetstream::start(cfg).expect("port still free");
            // The ceiling resets when a session that made progress ends (it was >= 160 ms
            // above): waiting for it, with a deadline, is the check. Commits can land while
            // that first good session is still streaming, so "committed" alone is too early.
            let st = wait_status(
                &sup,
                Duration::from_secs(30),
                "backoff reset after a session with progress",
                |s| s.reader.batches_committed > 0 && s.reader.backoff_ceiling_ms <= 10,
            )
            .await;
            assert_eq!(
                st.reader.consecutive_failures, 0,
                "the host works again: {st:#?}"
            );
            assert!(
                st.reader.sessions_started >= 7,
                "six failed dials, then one that progressed: {st:#?}"
            );
            assert!(matches!(
                st.reader.state,
                ReaderState::Streaming | ReaderState::Connecting | ReaderState::Backoff
            ));
            server.shutdown();
        },
    );
}
