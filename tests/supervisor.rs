//! The supervisor's messages, sent directly: status, pause (socket closed, reading stops),
//! resume (redial from the committed cursor minus rewind), restart from a chosen cursor
//! (replayed events are skipped, nothing duplicated) and restart from the committed cursor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use actors::messages::{Pause, ReaderState, Restart, Resume};
use actors::supervisor::StartChoice;
use jetstream_ingestor::fake_jetstream::ConnectionEnd;
use support::*;

const REWIND_US: u64 = 2_000;

#[test]
fn status_pause_resume_and_restart_from_a_cursor() {
    let redis = redis(false);
    let lines = corpus(2_000, 31);
    let times: Vec<u64> = lines.iter().map(|l| time_of(l).unwrap()).collect();
    let (first, last) = (times[0], *times.last().unwrap());
    let server = fake(lines.clone(), None);
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.rewind = Duration::from_micros(REWIND_US);
    let srv = &server;

    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let st = wait_status(&sup, Duration::from_secs(30), "all events committed", |s| {
                s.reader.committed_cursor == Some(last)
            })
            .await;
            assert_eq!(st.reader.state, ReaderState::Streaming);
            assert_eq!(st.reader.session_id, 1);
            assert_eq!(st.reader.events_received, 2_000);
            assert_eq!(st.writer.entries_written, 2_000);
            assert_eq!(st.writer.stored_cursor, Some(last));

            sup.send(Pause).await.unwrap().expect("not refused");
            wait_status(&sup, Duration::from_secs(10), "paused", |s| {
                s.reader.state == ReaderState::Paused
            })
            .await;
            wait_until_async(
                Duration::from_secs(10),
                "server sees the socket closed",
                || matches!(srv.connections()[0].end, ConnectionEnd::ClientClosed { .. }),
            )
            .await;
            assert_eq!(srv.connections().len(), 1, "no dial while paused");

            sup.send(Resume).await.unwrap().expect("not refused");
            wait_status(&sup, Duration::from_secs(10), "streaming again", |s| {
                s.reader.state == ReaderState::Streaming
            })
            .await;
            assert_eq!(
                srv.connections()[1].cursor,
                Some(last - REWIND_US),
                "resume dials from committed minus rewind"
            );

            let from = times[1_000];
            let session = sup
                .send(Restart {
                    from_cursor: Some(from),
                })
                .await
                .unwrap()
                .expect("not refused");
            assert_eq!(
                session, 3,
                "restart answers with the id of the next session"
            );
            wait_until_async(Duration::from_secs(10), "third dial", || {
                srv.connections().len() == 3
            })
            .await;
            assert_eq!(
                srv.connections()[2].cursor,
                Some(from),
                "restart dials from the requested cursor exactly"
            );
            let st = wait_status(
                &sup,
                Duration::from_secs(30),
                "replayed half skipped",
                |s| s.writer.entries_skipped >= 1_000,
            )
            .await;
            assert_eq!(
                st.writer.entries_written, 2_000,
                "a replay writes nothing twice"
            );
            assert_eq!(st.reader.session_id, 3);

            let next = sup
                .send(Restart { from_cursor: None })
                .await
                .unwrap()
                .expect("not refused");
            assert_eq!(next, 4);
            wait_until_async(Duration::from_secs(10), "fourth dial", || {
                srv.connections().len() == 4
            })
            .await;
            assert_eq!(
                srv.connections()[3].cursor,
                Some(last - REWIND_US),
                "plain restart dials from committed minus rewind"
            );
            let st = wait_status(
                &sup,
                Duration::from_secs(10),
                "streaming after restart",
                |s| s.reader.state == ReaderState::Streaming,
            )
            .await;
            assert!(st.reader_restarts >= 2);
        },
    );

    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &lines);
    assert!(
        missing.is_empty() && dups.is_empty(),
        "missing {} dups {}",
        missing.len(),
        dups.len()
    );
}
