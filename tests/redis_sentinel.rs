//! Redis Sentinel: the ingestor finds the master through the sentinels and follows it
//! through a failover. Real processes: a master, a replica, three sentinels, the pipeline
//! in-process against the fake Jetstream. At the end the new master holds every event once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use actors::supervisor::StartChoice;
use support::sentinel::{MASTER, Sentinels};
use support::*;

const PREFIX: &str = "jsi:";

fn sentinel_settings(
    server: &str,
    s: &Sentinels,
    wait_replicas: u32,
) -> jetstream_ingestor::settings::Settings {
    // The URL's host is never dialed: the sentinels say where the master is.
    let mut settings = settings(server, "redis://127.0.0.1:1");
    settings.redis.sentinel_master = MASTER.to_owned();
    settings.redis.sentinels = s.urls();
    settings.redis.wait_replicas = wait_replicas;
    settings.redis.connect_timeout = Duration::from_secs(1);
    settings.redis.response_timeout = Duration::from_secs(2);
    settings.validate().unwrap();
    settings
}

fn new_master_connection(s: &Sentinels) -> redis::Connection {
    let port = s.master_port().expect("a master");
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

/// `SENTINEL FAILOVER` in the middle of a stream, with `wait_replicas = 1`: the writer
/// notices the demoted master (READONLY or a dropped connection), asks the sentinels, writes
/// to the promoted replica, which has every batch that was acknowledged: 0 missing, 0
/// duplicated on the new master, the stored cursor at the last event.
#[test]
fn a_sentinel_failover_mid_stream_loses_and_doubles_nothing() {
    let s = Sentinels::start();
    let (old, replica) = (s.master.port(), s.replica.port());
    let lines = respace(&corpus(6_000, 1601), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(1_000));
    let settings = sentinel_settings(&server.url(), &s, 1);
    let s = &s;
    with_supervisor(
        settings,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "a third committed", |st| {
                st.reader
                    .committed_cursor
                    .is_some_and(|c| c > first + 2_000_000)
            })
            .await;
            s.failover();
            // Promoted while events still stream in (the writer must follow it).
            wait_until_async(Duration::from_secs(30), "the replica promoted", || {
                s.master_port() == Some(replica)
            })
            .await;
            wait_status(
                &sup,
                Duration::from_secs(90),
                "every event committed",
                |st| st.reader.committed_cursor == Some(last),
            )
            .await;
        },
    );
    assert_eq!(s.master_port(), Some(replica), "the replica was promoted");
    assert_ne!(replica, old);
    let mut con = new_master_connection(s);
    assert_eq!(stored_cursor(&mut con, PREFIX), Some(last));
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 6_000);
}

/// The master `kill -9`ed mid-stream (the sentinels agree it is down after 3 s and promote
/// the replica). Without `wait_replicas`, batches the old master acknowledged but never
/// replicated are lost with it: the writer finds the new master's chain behind what it
/// committed, counts a rollback and reads those events again. 0 missing, 0 duplicated.
#[test]
fn the_master_killed_mid_stream_is_followed_and_what_it_lost_is_read_again() {
    let mut s = Sentinels::start();
    let replica = s.replica.port();
    let lines = respace(&corpus(6_000, 1602), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(1_500));
    let settings = sentinel_settings(&server.url(), &s, 0);
    let s_ref = &mut s;
    with_supervisor(
        settings,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "a third committed", |st| {
                st.reader
                    .committed_cursor
                    .is_some_and(|c| c > first + 2_000_000)
            })
            .await;
            s_ref.master.kill9();
            wait_status(
                &sup,
                Duration::from_secs(90),
                "every event committed",
                |st| st.reader.committed_cursor == Some(last),
            )
            .await;
        },
    );
    assert_eq!(s.master_port(), Some(replica), "the replica was promoted");
    let mut con = new_master_connection(&s);
    assert_eq!(stored_cursor(&mut con, PREFIX), Some(last));
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 6_000);
}

/// `redis.wait_replicas = 1`: a batch counts as committed (the reader's committed cursor,
/// its credit) only once the replica has it. With the replica frozen (SIGSTOP) before the
/// pipeline starts, the master takes commits but none of them counts; thawed, everything
/// counts and the replica holds every event once.
#[test]
fn with_wait_replicas_a_batch_counts_only_once_a_replica_has_it() {
    use jetstream_ingestor::local_redis::{LocalRedis, LocalRedisOptions};
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let master = redis(false);
    let replica = LocalRedis::start(LocalRedisOptions {
        replica_of: Some(master.port()),
        ..LocalRedisOptions::default()
    })
    .unwrap();
    let lines = respace(&corpus(3_000, 1603), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(1_000));
    let mut settings = settings(&server.url(), &master.url());
    settings.redis.wait_replicas = 1;
    settings.redis.wait_timeout = Duration::from_millis(200);
    let pid = Pid::from_raw(i32::try_from(replica.pid().unwrap()).unwrap());
    let url = master.url();
    // Frozen once it has synced: from the first commit on, no WAIT can be answered.
    let mut m = master.connection().unwrap();
    wait_until(Duration::from_secs(30), "the replica online", || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut m).unwrap();
        info.contains("slave0:") && info.contains("state=online")
    });
    kill(pid, Signal::SIGSTOP).unwrap();
    with_supervisor(
        settings,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let mut con = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            wait_until_async(Duration::from_secs(30), "a commit on the master", || {
                stored_cursor(&mut con, PREFIX).is_some()
            })
            .await;
            let st = status(&sup).await;
            assert_eq!(st.writer.wait_replicas, 1, "status says so");
            assert_eq!(
                (st.reader.committed_cursor, st.writer.commits),
                (None, 0),
                "on the master, but nothing counts while no replica has it"
            );
            kill(pid, Signal::SIGCONT).unwrap();
            wait_status(
                &sup,
                Duration::from_secs(60),
                "every event committed",
                |st| st.reader.committed_cursor == Some(last),
            )
            .await;
        },
    );
    let mut con = replica.connection().unwrap();
    wait_until(Duration::from_secs(10), "the replica caught up", || {
        stored_cursor(&mut con, PREFIX) == Some(last)
    });
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 3_000);
}
