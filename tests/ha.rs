//! High availability: several instances on one key prefix, one writer, fenced. Real
//! processes (the release-shaped binary with failpoints off), a private redis-server, the
//! fake Jetstream over loopback. Who leads is read from Redis (`<prefix>ha:lease` holds
//! `"<owner> <token>"`); owners are named per process so a test knows whom to kill.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use redis::Commands;
use support::ha::{ha_env, lease_holder as holder};
use support::*;

const PREFIX: &str = "jsi:";
const TTL: Duration = Duration::from_secs(1);

fn replica(server: &str, redis_url: &str, owner: &str, first: u64) -> Ingestor {
    Ingestor::spawn(&["run"], &ha_env(server, redis_url, owner, first, &[]))
}

fn wait_holder(con: &mut redis::Connection, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
    let mut found = None;
    wait_until(limit, "a lease holder", || {
        found = holder(con).filter(|h| ok(h));
        found.is_some()
    });
    found.unwrap()
}

fn cursor_past(con: &mut redis::Connection, at: u64, limit: Duration) {
    wait_until(limit, "the stored cursor to move on", || {
        stored_cursor(con, PREFIX).is_some_and(|c| c > at)
    });
}

/// Three replicas replaying 100,000 events; the leader is `kill -9`ed five times on the
/// way. Each time a standby takes over within the lease TTL plus 2 s, from the cursor Redis
/// holds, and at the end every event is in Redis exactly once.
#[test]
fn three_replicas_with_the_leader_killed_again_and_again_lose_and_double_nothing() {
    let redis = redis(false);
    let lines = respace(&corpus(100_000, 1501), 1_700_000_000_000_000, 100);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(8_000));
    let mut con = redis.connection().unwrap();
    let mut procs: Vec<(String, Ingestor)> = (0..3)
        .map(|i| {
            let owner = format!("r{i}");
            let p = replica(&server.url(), &redis.url(), &owner, first);
            (owner, p)
        })
        .collect();
    let mut takeovers = Vec::new();
    for round in 0..5 {
        let leader = wait_holder(&mut con, Duration::from_secs(30), |_| true);
        let at = stored_cursor(&mut con, PREFIX).unwrap_or(0);
        cursor_past(&mut con, at, Duration::from_secs(30));
        let i = procs.iter().position(|(o, _)| *o == leader).unwrap();
        procs[i].1.kill9();
        let killed_at = Instant::now();
        let next = wait_holder(&mut con, TTL + Duration::from_secs(10), |h| h != leader);
        takeovers.push(killed_at.elapsed());
        let owner = format!("{leader}.{round}");
        procs[i] = (
            owner.clone(),
            replica(&server.url(), &redis.url(), &owner, first),
        );
        assert_ne!(next, leader);
    }
    wait_until(Duration::from_secs(120), "every event committed", || {
        stored_cursor(&mut con, PREFIX) == Some(last)
    });
    drop(procs);
    eprintln!("takeovers: {takeovers:?}");
    for (round, gap) in takeovers.iter().enumerate() {
        assert!(
            *gap <= TTL + Duration::from_secs(2),
            "takeover {round} took {gap:?}"
        );
    }
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 100_000);
}

/// A leader frozen (SIGSTOP) past its lease while it has batches in flight, then thawed
/// after another took over and committed: none of its batches lands (each commit finds a
/// newer fencing token and undoes itself), it stands by, and nothing is doubled.
#[test]
fn a_frozen_ex_leader_that_wakes_up_lands_nothing() {
    let redis = redis(false);
    let lines = respace(&corpus(12_000, 1502), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(3_000));
    let mut con = redis.connection().unwrap();
    let a = replica(&server.url(), &redis.url(), "a", first);
    wait_holder(&mut con, Duration::from_secs(30), |h| h == "a");
    let b = replica(&server.url(), &redis.url(), "b", first);
    cursor_past(&mut con, first + 1_000_000, Duration::from_secs(30));
    let pid = Pid::from_raw(i32::try_from(a.child.id()).unwrap());
    kill(pid, Signal::SIGSTOP).unwrap();
    let frozen_at = stored_cursor(&mut con, PREFIX).unwrap();
    wait_holder(&mut con, Duration::from_secs(10), |h| h == "b");
    // The new leader commits past where the frozen one stopped before it wakes.
    cursor_past(&mut con, frozen_at + 500_000, Duration::from_secs(30));
    let fence_before: u64 = con.get("jsi:ha:fence").unwrap();
    kill(pid, Signal::SIGCONT).unwrap();
    wait_until(Duration::from_secs(60), "every event committed", || {
        stored_cursor(&mut con, PREFIX) == Some(last)
    });
    assert_eq!(holder(&mut con).as_deref(), Some("b"), "b stays the leader");
    let fence_after: u64 = con.get("jsi:ha:fence").unwrap();
    assert_eq!(fence_after, fence_before, "a did not take the lease back");
    drop((a, b));
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 12_000);
}

/// A rolling deploy: a second instance starts beside the leader, the leader gets SIGTERM,
/// commits what it has in flight and releases the lease: the new one leads within a
/// second of the signal, and nothing is lost or doubled.
#[test]
fn a_rolling_deploy_hands_over_in_under_a_second() {
    let redis = redis(false);
    let lines = respace(&corpus(10_000, 1503), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(3_000));
    let mut con = redis.connection().unwrap();
    let mut old = replica(&server.url(), &redis.url(), "old", first);
    wait_holder(&mut con, Duration::from_secs(30), |h| h == "old");
    cursor_past(&mut con, first + 500_000, Duration::from_secs(30));
    let new = replica(&server.url(), &redis.url(), "new", first);
    // The new instance is up (it says so in the lease's absence of change, so wait for its
    // first attempt: it reads the holder; here, for the stored cursor to move once more).
    let at = stored_cursor(&mut con, PREFIX).unwrap();
    cursor_past(&mut con, at, Duration::from_secs(30));
    old.sigterm();
    let signalled = Instant::now();
    wait_holder(&mut con, Duration::from_secs(10), |h| h == "new");
    let handover = signalled.elapsed();
    let status = old.wait_exit(Duration::from_secs(10)).expect("old exits");
    assert!(status.success(), "old exits 0 after its drain: {status:?}");
    wait_until(Duration::from_secs(60), "every event committed", || {
        stored_cursor(&mut con, PREFIX) == Some(last)
    });
    drop(new);
    assert!(
        handover < Duration::from_secs(1),
        "handover took {handover:?}"
    );
    assert_eq!(assert_exactly_once(&mut con, PREFIX, &lines), 10_000);
}

/// The lease scripts against a real Redis: one holder at a time, renewal only by the
/// holder, release only of one's own lease, and tokens that grow at every acquisition, also
/// after Redis came back with an older fencing counter (a rollback), so no token is handed
/// out twice.
#[test]
fn lease_tokens_grow_at_every_acquisition_even_after_a_rollback() {
    use actors::ha::lease::{ACQUIRE_SCRIPT, RELEASE_SCRIPT, RENEW_SCRIPT, lease_value};
    let redis = redis(false);
    let mut con = redis.connection().unwrap();
    let acquire = |con: &mut redis::Connection, owner: &str| -> (i64, String) {
        redis::Script::new(ACQUIRE_SCRIPT)
            .key("jsi:ha:lease")
            .key("jsi:ha:fence")
            .arg(owner)
            .arg(60_000)
            .invoke(con)
            .unwrap()
    };
    let renew = |con: &mut redis::Connection, owner: &str, token: u64| -> i64 {
        redis::Script::new(RENEW_SCRIPT)
            .key("jsi:ha:lease")
            .key("jsi:ha:fence")
            .arg(lease_value(owner, token))
            .arg(60_000)
            .arg(token)
            .invoke(con)
            .unwrap()
    };
    let release = |con: &mut redis::Connection, owner: &str, token: u64| -> i64 {
        redis::Script::new(RELEASE_SCRIPT)
            .key("jsi:ha:lease")
            .arg(lease_value(owner, token))
            .invoke(con)
            .unwrap()
    };
    let (taken, t1) = acquire(&mut con, "a");
    assert_eq!(taken, 1);
    let t1: u64 = t1.parse().unwrap();
    assert_eq!(acquire(&mut con, "b"), (0, format!("a {t1}")), "held by a");
    assert_eq!(renew(&mut con, "b", t1), 0, "b cannot renew a's lease");
    assert_eq!(renew(&mut con, "a", t1), 1);
    assert_eq!(release(&mut con, "b", t1), 0, "b cannot release a's lease");
    // Expired with nobody taking it: a renews it back (its token is still the newest).
    let _: () = con.del("jsi:ha:lease").unwrap();
    assert_eq!(renew(&mut con, "a", t1), 1);
    assert_eq!(release(&mut con, "a", t1), 1);
    let (taken, t2) = acquire(&mut con, "b");
    let t2: u64 = t2.parse().unwrap();
    assert_eq!(taken, 1);
    assert!(t2 > t1, "{t2} > {t1}");
    assert_eq!(renew(&mut con, "a", t1), 0, "a's lease is gone for good");
    // Redis restarts from an older snapshot: the counter is back at an old value.
    let _: () = con.set("jsi:ha:fence", t1.to_string()).unwrap();
    let _: () = con.del("jsi:ha:lease").unwrap();
    let (taken, t3) = acquire(&mut con, "c");
    let t3: u64 = t3.parse().unwrap();
    assert_eq!(taken, 1);
    assert!(t3 > t2, "never handed out again: {t3} > {t2}");
}

/// Status says who leads: an instance with `[ha]` alone on its prefix takes the lease, and
/// its status carries role, owner, token and acquisitions (and the people's table a line
/// for them); the lease key names it with the same token.
#[test]
fn the_status_shows_the_role_the_owner_and_the_fencing_token() {
    let redis = redis(false);
    let lines = corpus(300, 1504);
    let first = time_of(&lines[0]).unwrap();
    let last = lines.iter().filter_map(|l| time_of(l)).max().unwrap();
    let server = fake(lines, None);
    let mut s = settings(&server.url(), &redis.url());
    s.ha.enabled = true;
    s.ha.owner = "solo".to_owned();
    s.ha.lease_ttl = Duration::from_secs(1);
    s.ha.renew_interval = Duration::from_millis(200);
    let mut con = redis.connection().unwrap();
    let lease = std::cell::RefCell::new(None);
    with_supervisor(
        s,
        actors::supervisor::StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| {
            let lease = &lease;
            async move {
                let st = wait_status(
                    &sup,
                    Duration::from_secs(30),
                    "leader and caught up",
                    |st| st.reader.committed_cursor == Some(last),
                )
                .await;
                let ha = st.ha.clone().expect("ha in status");
                assert_eq!(
                    (ha.role, ha.owner.as_str()),
                    (actors::messages::HaRole::Leader, "solo")
                );
                assert_eq!(ha.acquisitions, 1);
                let token = ha.token.expect("a leader has a token");
                *lease.borrow_mut() = Some(token);
                let observed = jetstream_ingestor::admin::view::Observed {
                    status: Some(st.clone()),
                    ..Default::default()
                };
                let view = jetstream_ingestor::admin::view::StatusView::new(
                    &observed,
                    None,
                    "test",
                    std::time::SystemTime::now(),
                );
                let table = jetstream_ingestor::admin::command::render_status(&view);
                assert!(
                table.contains(&format!("ha           leader, fencing token {token} (owner solo, 1 acquisitions, 0 handovers)")),
                "{table}"
            );
            }
        },
    );
    let token = lease.borrow().expect("token seen");
    let fence: u64 = con.get("jsi:ha:fence").unwrap();
    assert_eq!(fence, token);
    // Drained and gone without the app's release: the lease (1 s) may still be there, and
    // then it names this owner and token.
    let held: Option<String> = con.get("jsi:ha:lease").unwrap();
    if let Some(held) = held {
        assert_eq!(held, format!("solo {token}"));
    }
}
