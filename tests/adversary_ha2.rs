//! Adversarial HA review, round 2 (h-adv3 @ 51865a7): holes found by attacking the real
//! binary (private redis-server, fake Jetstream over loopback, a TCP fault proxy in front of
//! Redis for a partitioned leader). The six recipes of tests/adversary_ha.rs are not
//! repeated. Every test states the recipe, waits by polling Redis (never sleeping as
//! synchronisation) and asserts exact numbers.
//!
//! Each test here failed on the commit it was written against and passes since the fixes
//! (each test's doc says what was seen); they now guard the fixed behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use jetstream_ingestor::admin::client::AdminClient;
use jetstream_ingestor::local_redis::free_port;
use redis::Commands;
use support::fault_proxy::FaultProxy;
use support::ha::{counts, ha_env, replay_marker, settles, wait_holder};
use support::*;

const PREFIX: &str = "jsi:";

/// `env` with the admin API on a known port; the port.
fn with_admin_port(mut env: Vec<(&'static str, String)>) -> (Vec<(&'static str, String)>, u16) {
    let port = free_port().unwrap();
    env.retain(|(k, _)| *k != "JETSTREAM_INGESTOR__ADMIN__LISTEN");
    env.push((
        "JETSTREAM_INGESTOR__ADMIN__LISTEN",
        format!("127.0.0.1:{port}"),
    ));
    (env, port)
}

/// HOLE A (`supervisor.rs` `Handler<Pause>` + `store_pause`). `POST /admin/pause` sent to
/// the leader while it is cut off from Redis (a partition: its lease still runs for up to
/// `lease_ttl`) answers `202 Accepted`: `store_pause` fails (connection refused), is only
/// logged ("the local pause holds"), and the local reader pauses. The lease then passes to
/// b, which reads `<prefix>control:paused` at its takeover, finds nothing and ingests on:
/// the operator was told the fleet is paused while its new leader commits everything.
///
/// Recipe: 20,000 events 1 ms apart served at 2,000/s; a leads through a TCP proxy, b
/// stands by (direct); 2,000 events committed; the proxy refuses and resets every
/// connection; at once `POST /admin/pause` to a; b takes the lease.
/// Expected: the pause refused (it could not be made the fleet's: 503), or honoured by b.
/// Observed: 202, and b commits on (cursor moves > 1 s of events past the takeover).
#[test]
fn a_pause_a_leader_cut_off_from_redis_cannot_store_is_refused() {
    let redis = redis(false);
    let lines = respace(&corpus(20_000, 5101), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(2_000));
    let mut con = redis.connection().unwrap();
    let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port()).into(), 5101);
    let (a_env, port) = with_admin_port(ha_env(&server.url(), &proxy.redis_url(), "a", first, &[]));
    let a = Ingestor::spawn(&["run"], &a_env);
    let admin =
        AdminClient::new(([127, 0, 0, 1], port).into(), None).with_timeout(Duration::from_secs(10));
    wait_until(Duration::from_secs(30), "a's admin API up", || {
        admin.get("/healthz").is_ok_and(|r| r.status == 200)
    });
    wait_holder(&mut con, Duration::from_secs(30), "a");
    let b = Ingestor::spawn(
        &["run"],
        &ha_env(&server.url(), &redis.url(), "b", first, &[]),
    );
    wait_until(Duration::from_secs(30), "2,000 events committed", || {
        stored_cursor(&mut con, PREFIX).is_some_and(|c| c >= first + 2_000_000)
    });
    proxy.refuse(true);
    proxy.reset_all();
    let status = admin.post("/admin/pause", None).map(|r| r.status).unwrap();
    wait_holder(&mut con, Duration::from_secs(10), "b");
    let taken_at = stored_cursor(&mut con, PREFIX).unwrap();
    let stored_pause: bool = con.exists("jsi:control:paused").unwrap();
    // Paused, b must not move the cursor; give it 5 s to show it does.
    let moved = settles(Duration::from_secs(5), || {
        stored_cursor(&mut con, PREFIX).is_some_and(|c| c > taken_at + 1_000_000)
    });
    let now = stored_cursor(&mut con, PREFIX).unwrap();
    drop(b);
    drop(a);
    let events_after = lines
        .iter()
        .filter_map(|l| time_of(l))
        .filter(|t| *t > taken_at && *t <= now)
        .count();
    eprintln!(
        "pause answered {status}; control:paused stored: {stored_pause}; b took over at {taken_at}, \
         now {now}: {events_after} events committed by the new leader after the acknowledged pause"
    );
    assert_eq!(
        (status, stored_pause),
        (503, false),
        "a leader that cannot store the fleet's pause refuses it (b then reads on: {moved}, \
         {events_after} events)"
    );
}

fn xlen(con: &mut redis::Connection, key: &str) -> usize {
    redis::cmd("XLEN").arg(key).query(con).unwrap()
}

/// HOLE B (`supervisor.rs` `reset` after `RolledBack`, `cursors.rs` `rewind_to`). An admin
/// replay (`POST /admin/restart {"cursor": N}` into the past, answered 202, its
/// `cursor:replay` recorded) is abandoned when Redis rolls back to a snapshot taken before
/// the replay was recorded: the writer detects the rollback, the reset reads what the
/// rolled-back Redis holds (stored cursor = the live edge, no `cursor:replay`) and
/// `RewindTo { replay_cursor: None }` puts the reader back at the live edge. The process
/// knew it was replaying (its line was a replay from N), but nothing carries that over the
/// reset: the range the operator was told is being restored stays missing for good.
///
/// Recipe: one process (no HA), 6,000 events 1 ms apart served at 1,000/s, all committed;
/// the jobs of events 1,000..3,000 lost (XDEL); `SAVE`; `POST /admin/restart` from the
/// first event (202; marker recorded); once 300 entries are written back, `kill -9` Redis
/// and restart it from the snapshot. Expected: the replay resumes (0 missing, 0
/// duplicated). Observed: the replay is dropped, ~2,000 missing.
#[test]
fn an_admin_replay_survives_a_rollback_to_a_snapshot_taken_before_it() {
    let mut redis = redis(false);
    let lines = respace(&corpus(6_000, 5102), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(1_000));
    let mut con = redis.connection().unwrap();
    let mut env = ingestor_env(&server.url(), &redis.url());
    env.push((
        "JETSTREAM_INGESTOR__JETSTREAM__INITIAL_CURSOR",
        first.to_string(),
    ));
    // The lost jobs must be older than the dedupe window (what the index still holds counts
    // as committed): a 2 s window over 6 s of events, the loss at 1–3 s.
    env.extend([
        ("JETSTREAM_INGESTOR__REDIS__DEDUPE_WINDOW", "2s".to_owned()),
        ("JETSTREAM_INGESTOR__JETSTREAM__REWIND", "500ms".to_owned()),
        (
            "JETSTREAM_INGESTOR__JETSTREAM__FAILOVER_REWIND",
            "1s".to_owned(),
        ),
    ]);
    let (env, port) = with_admin_port(env);
    let ingestor = Ingestor::spawn(&["run"], &env);
    let admin =
        AdminClient::new(([127, 0, 0, 1], port).into(), None).with_timeout(Duration::from_secs(30));
    wait_until(Duration::from_secs(60), "every event committed", || {
        stored_cursor(&mut con, PREFIX) == Some(last)
    });
    assert_eq!(
        counts(&mut con, &lines),
        (0, 0),
        "exactly once before the loss"
    );
    // Lose the jobs of events 1,000..3,000 (an earlier incident), then snapshot.
    let (from, until) = (
        time_of(&lines[1_000]).unwrap(),
        time_of(&lines[2_999]).unwrap(),
    );
    let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("jsi:records")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    let gone: Vec<String> = page
        .ids
        .iter()
        .filter(|e| {
            let t: Option<String> = e.get("time_us");
            t.and_then(|t| t.parse::<u64>().ok())
                .is_some_and(|t| t >= from && t <= until)
        })
        .map(|e| e.id.clone())
        .collect();
    let _: usize = redis::cmd("XDEL")
        .arg("jsi:records")
        .arg(&gone)
        .query(&mut con)
        .unwrap();
    let (lost, _) = counts(&mut con, &lines);
    assert!(lost >= 1_500, "only {lost} lost");
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    let base = xlen(&mut con, "jsi:records");
    let status = admin
        .post(
            "/admin/restart",
            Some(&serde_json::json!({ "cursor": first })),
        )
        .map(|r| r.status)
        .unwrap();
    let marker = replay_marker(&mut con);
    wait_until(Duration::from_secs(60), "300 entries written back", || {
        xlen(&mut con, "jsi:records") >= base + 300
    });
    redis.kill9();
    redis.restart().expect("redis restarts from its snapshot");
    let mut con = redis.connection().unwrap();
    // The replay (1,000 events/s) would restore the range within ~5 s; allow 30.
    let restored = settles(Duration::from_secs(30), || counts(&mut con, &lines).0 == 0);
    let (missing, dups) = counts(&mut con, &lines);
    let after = replay_marker(&mut con);
    let stored = stored_cursor(&mut con, PREFIX);
    drop(ingestor);
    eprintln!(
        "restart answered {status}, marker {marker:?} (first {first}); after the rollback: \
         restored {restored}, marker {after:?}, stored {stored:?} (last {last}); \
         missing {missing}, duplicated {dups} (lost before the replay: {lost})"
    );
    assert_eq!(status, 202);
    assert_eq!(
        (missing, dups),
        (0, 0),
        "the admin replay accepted before the rollback was abandoned by the reset"
    );
}

fn status_json(admin: &AdminClient) -> Option<serde_json::Value> {
    admin.get("/admin/status").ok().and_then(|r| r.json())
}

/// HOLE C (`reader.rs` `Handler<RewindTo>`: `control.send_replace(Control::Run)`;
/// `supervisor.rs` `reset` re-pauses only with `[ha]` and only if the rolled-back Redis
/// holds `control:paused`). An operator's pause (`POST /admin/pause`, 202, state `paused`)
/// is silently undone by the reset after a Redis rollback: the reader is rewound and set
/// running, and the process ingests on while the operator believes it paused.
///
/// Recipe: one process (no HA), 20,000 events 1 ms apart served at 2,000/s; 2 s of events
/// committed, `SAVE`; 3 s committed; `kill -9` Redis; once the writer reports a commit
/// failure, `POST /admin/pause` (202; state `paused`); Redis restarted from the snapshot;
/// the writer reports the rollback. Expected: still paused, the stored cursor stays at the
/// snapshot's. Observed: state `streaming`, thousands of events committed after the pause.
#[test]
fn a_redis_rollback_keeps_an_operators_pause() {
    let mut redis = redis(false);
    let lines = respace(&corpus(20_000, 5103), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(2_000));
    let mut con = redis.connection().unwrap();
    let mut env = ingestor_env(&server.url(), &redis.url());
    env.push((
        "JETSTREAM_INGESTOR__JETSTREAM__INITIAL_CURSOR",
        first.to_string(),
    ));
    let (env, port) = with_admin_port(env);
    let ingestor = Ingestor::spawn(&["run"], &env);
    let admin =
        AdminClient::new(([127, 0, 0, 1], port).into(), None).with_timeout(Duration::from_secs(10));
    wait_until(Duration::from_secs(60), "2 s of events committed", || {
        stored_cursor(&mut con, PREFIX).is_some_and(|c| c >= first + 2_000_000)
    });
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    let snapshot = stored_cursor(&mut con, PREFIX).unwrap();
    wait_until(Duration::from_secs(60), "3 s of events committed", || {
        stored_cursor(&mut con, PREFIX).is_some_and(|c| c >= first + 3_000_000)
    });
    redis.kill9();
    wait_until(
        Duration::from_secs(30),
        "the writer sees Redis gone",
        || {
            status_json(&admin)
                .is_some_and(|s| s["consecutive_commit_failures"].as_u64() >= Some(1))
        },
    );
    let status = admin.post("/admin/pause", None).map(|r| r.status).unwrap();
    wait_until(Duration::from_secs(10), "paused", || {
        status_json(&admin).is_some_and(|s| s["state"] == "paused")
    });
    redis.restart().expect("redis restarts from its snapshot");
    let mut con = redis.connection().unwrap();
    wait_until(Duration::from_secs(30), "the rollback detected", || {
        status_json(&admin).is_some_and(|s| {
            s["last_commit_error"]
                .as_str()
                .is_some_and(|e| e.contains("rolled back"))
        })
    });
    // Paused, nothing may be committed; give it 5 s to show otherwise.
    let moved = settles(Duration::from_secs(5), || {
        stored_cursor(&mut con, PREFIX).is_some_and(|c| c > snapshot + 1_000_000)
    });
    let state = status_json(&admin).map(|s| s["state"].clone());
    let now = stored_cursor(&mut con, PREFIX);
    drop(ingestor);
    let committed_after = lines
        .iter()
        .filter_map(|l| time_of(l))
        .filter(|t| *t > snapshot && now.is_some_and(|n| *t <= n))
        .count();
    eprintln!(
        "pause answered {status}; snapshot cursor {snapshot}, now {now:?}, state {state:?}: \
         {committed_after} events committed after the rollback while paused"
    );
    assert_eq!(status, 202);
    assert!(
        !moved,
        "the rollback reset undid the pause: {committed_after} events committed, state {state:?}"
    );
}

/// HOLE D (`reader.rs` `Handler<Restart>` sets `Control::Run`; `supervisor.rs`
/// `Handler<Restart>` leaves `<prefix>control:paused` alone). With `[ha]`, `POST
/// /admin/restart` to a paused leader makes it read again (the pause is gone locally, status
/// `streaming`), but the fleet's pause stays stored in Redis: after the next takeover the
/// new leader comes up paused and ingestion stops, although the last thing the operator did
/// was restart a running pipeline. The two views of "paused" disagree: either the restart
/// must keep the pause (docs: "nothing is read until resume") or it must clear the fleet's.
///
/// Recipe: a leads (admin on a known port), b stands by; 20,000 events 1 ms apart at
/// 2,000/s; 1 s committed; `POST /admin/pause` (202, state `paused`); `POST /admin/restart`
/// (202); a commits on; `kill -9 a`; b takes the lease. Expected: the same answer on both
/// sides (a stays paused, or b reads on). Observed: a read ~1 s more after the restart,
/// `control:paused` still set, b paused (cursor still after 5 s).
#[test]
fn a_restart_keeps_the_leader_paused_like_the_fleet() {
    let redis = redis(false);
    let lines = respace(&corpus(20_000, 5104), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let server = fake_with(lines.clone(), |c| c.rate = Some(2_000));
    let mut con = redis.connection().unwrap();
    let (a_env, port) = with_admin_port(ha_env(&server.url(), &redis.url(), "a", first, &[]));
    let mut a = Ingestor::spawn(&["run"], &a_env);
    let admin =
        AdminClient::new(([127, 0, 0, 1], port).into(), None).with_timeout(Duration::from_secs(10));
    wait_holder(&mut con, Duration::from_secs(30), "a");
    let b = Ingestor::spawn(
        &["run"],
        &ha_env(&server.url(), &redis.url(), "b", first, &[]),
    );
    wait_until(Duration::from_secs(30), "1 s of events committed", || {
        stored_cursor(&mut con, PREFIX).is_some_and(|c| c >= first + 1_000_000)
    });
    let paused = admin.post("/admin/pause", None).map(|r| r.status).unwrap();
    wait_until(Duration::from_secs(10), "a paused", || {
        status_json(&admin).is_some_and(|s| s["state"] == "paused")
    });
    let paused_at = stored_cursor(&mut con, PREFIX).unwrap();
    let restarted = admin
        .post("/admin/restart", Some(&serde_json::json!({})))
        .map(|r| r.status)
        .unwrap();
    // Give a 5 s to show that it reads again after the restart.
    let a_moved = settles(Duration::from_secs(5), || {
        stored_cursor(&mut con, PREFIX).is_some_and(|c| c > paused_at + 1_000_000)
    });
    let a_state = status_json(&admin).map(|s| s["state"].clone());
    let key: bool = con.exists("jsi:control:paused").unwrap();
    a.kill9();
    wait_holder(&mut con, Duration::from_secs(10), "b");
    let taken_at = stored_cursor(&mut con, PREFIX).unwrap();
    let b_moved = settles(Duration::from_secs(5), || {
        stored_cursor(&mut con, PREFIX).is_some_and(|c| c > taken_at + 1_000_000)
    });
    drop(b);
    eprintln!(
        "pause {paused}, restart {restarted}; a after the restart: moved {a_moved}, state \
         {a_state:?}; control:paused {key}; b after the takeover at {taken_at}: moved {b_moved}"
    );
    assert_eq!(
        a_moved, b_moved,
        "after restart of a paused leader: a reads = {a_moved}, the next leader reads = \
         {b_moved} (control:paused still {key})"
    );
}

/// HOLE E (`sink/writer.rs` `load_cursors`, also `supervisor.rs` `paused_in_redis` /
/// `store_pause`: `tokio::time::timeout(connect_timeout, resolve(connect_timeout) + …)`;
/// `redis_target.rs` `resolve` asks the sentinels in order, each for up to the timeout).
/// One sentinel that accepts connections but does not answer (a hung process, a host that
/// blackholes), listed first, uses up the whole budget of every attempt: reading the stored
/// cursor times out forever ("reading the stored cursor timed out; retrying") and the
/// pipeline never starts, although the three other sentinels answer at once. Sentinel
/// is there for availability; one sick sentinel takes the ingestor down.
///
/// Recipe: master + replica + 3 sentinels (tests/support/sentinel.rs); a TCP listener that
/// never accepts listed first in `redis.sentinels`, the 3 real ones after it;
/// `redis.connect_timeout = 1s`; 2,000 events. Expected: every event committed (the next
/// sentinel names the master). Observed: nothing committed in 30 s (no cursor stored).
#[test]
fn one_hung_sentinel_listed_first_does_not_keep_the_pipeline_from_starting() {
    use support::sentinel::{MASTER, Sentinels};
    let s = Sentinels::start();
    let lines = respace(&corpus(2_000, 5105), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), None);
    // Accepts TCP connections (the kernel's backlog), never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("redis://{}", hung.local_addr().unwrap());
    let mut sentinels = vec![hung_url];
    sentinels.extend(s.urls());
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("sentinel.toml");
    std::fs::write(
        &conf,
        format!(
            "[redis]\nsentinel_master = {MASTER:?}\nsentinels = {sentinels:?}\n\
             connect_timeout = \"1s\"\nresponse_timeout = \"2s\"\n"
        ),
    )
    .unwrap();
    let mut env = ingestor_env(&server.url(), "redis://127.0.0.1:1");
    env.push((
        "JETSTREAM_INGESTOR__JETSTREAM__INITIAL_CURSOR",
        first.to_string(),
    ));
    let conf_path = conf.to_str().unwrap().to_owned();
    let ingestor = Ingestor::spawn(&["--config", &conf_path, "run"], &env);
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{}", s.master.port()))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let done = settles(Duration::from_secs(30), || {
        stored_cursor(&mut con, PREFIX) == Some(last)
    });
    let stored = stored_cursor(&mut con, PREFIX);
    drop(ingestor);
    drop(hung);
    eprintln!("after 30 s: stored cursor {stored:?} (last {last}), all committed: {done}");
    assert!(
        done,
        "one hung sentinel (listed first of four) kept the pipeline from starting: stored \
         cursor {stored:?}"
    );
}
