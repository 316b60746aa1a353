//! Fault suite, crashes of the ingestor binary: kill -9 at seeded points of a replay, an
//! abort at each named commit boundary (the `failpoints` feature of the actors crate, on in
//! the binary `cargo test` builds), and SIGTERM under load. After each crash the stored
//! cursor is checked against the jobs (never ahead); at the end the streams are compared
//! with the source (0 missing, 0 duplicated).
//!
//! Sizes (CI / `JSI_FAULT_SCALE=full`): kill -9 at 10 / 12 points of a 50k / 200k replay;
//! 3 crashes per boundary on an 8k / 40k replay (6k / 40k during the drain); 3 SIGTERMs
//! during a 15k / 100k replay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{RngExt as _, SeedableRng as _};
use support::fault_proxy::{JobTracker, sized};
use support::*;

const SIGABRT: i32 = 6;

/// The binary without core dumps (an abort must not leave a core file in the tree).
fn spawn(args: &[&str], env: &[(&'static str, String)]) -> Ingestor {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -c 0; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_jetstream-ingestor"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ingestor {
        child: cmd.spawn().expect("ingestor starts"),
    }
}

struct Replay {
    redis: jetstream_ingestor::local_redis::LocalRedis,
    lines: Vec<String>,
    first: u64,
    last: u64,
    server: jetstream_ingestor::fake_jetstream::FakeJetstream,
    env: Vec<(&'static str, String)>,
    cursor_arg: String,
}

impl Replay {
    fn new(n: usize, seed: u64) -> Replay {
        let redis = redis(false);
        let lines = corpus(n, seed);
        let first = time_of(&lines[0]).unwrap();
        let last = time_of(lines.last().unwrap()).unwrap();
        let server = fake(lines.clone(), None);
        let mut env = ingestor_env(&server.url(), &redis.url());
        env.push(("JETSTREAM_INGESTOR__JETSTREAM__REWIND", "100ms".to_owned()));
        env.push(("JETSTREAM_INGESTOR__HEARTBEAT__ENABLED", "false".to_owned()));
        env.push(("JETSTREAM_INGESTOR__ADMIN__ENABLED", "false".to_owned()));
        Replay {
            redis,
            lines,
            first,
            last,
            server,
            env,
            cursor_arg: first.to_string(),
        }
    }

    fn args(&self) -> [&str; 3] {
        ["run", "--cursor", self.cursor_arg.as_str()]
    }

    fn con(&self) -> redis::Connection {
        self.redis.connection().unwrap()
    }

    fn tracker(&self) -> JobTracker {
        JobTracker::new("jsi:", &self.lines)
    }

    /// A clean run to the last event, SIGTERM, exit 0; then every event exactly once.
    fn finish(&self) -> usize {
        let mut con = self.con();
        let mut ing = spawn(&self.args(), &self.env);
        wait_until(
            Duration::from_secs(120),
            "the final run reaches the last event",
            || stored_cursor(&mut con, "jsi:") == Some(self.last),
        );
        ing.sigterm();
        let status = ing
            .wait_exit(Duration::from_secs(10))
            .expect("exits within 10 s of SIGTERM");
        assert!(status.success(), "final SIGTERM exit {status:?}");
        assert_exactly_once(&mut con, "jsi:", &self.lines)
    }
}

#[test]
fn kill9_at_ten_seeded_points_of_a_replay_loses_and_duplicates_nothing() {
    let kills = sized(10, 12) as u64;
    let r = Replay::new(sized(50_000, 200_000), 701);
    let mut con = r.con();
    let mut jobs = r.tracker();
    let mut rng = rand::rngs::StdRng::seed_from_u64(701);
    let span = r.last - r.first;
    let started = Instant::now();
    for k in 1..=kills {
        let mut ing = spawn(&r.args(), &r.env);
        // Somewhere in the k-th slice, at a seeded offset, then a seeded extra 0-30 ms.
        let target = r.first + span * k / (kills + 1) + rng.random_range(0..span / (kills * 3));
        let t0 = Instant::now();
        while stored_cursor(&mut con, "jsi:").is_none_or(|c| c < target) {
            assert!(
                ing.child.try_wait().unwrap().is_none(),
                "ingestor exited early"
            );
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no progress towards {target}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..30)));
        ing.kill9();
        let c = jobs.assert_cursor_not_ahead(&mut con);
        assert!(c.is_some_and(|c| c >= target));
    }
    let checked = r.finish();
    println!(
        "kill -9 x{kills} over {} events: {checked} identities, 0 missing, 0 duplicated, {:?}",
        r.lines.len(),
        started.elapsed()
    );
    assert!(r.server.connections().len() > kills as usize);
}

/// Three runs aborting at `point:N` for three seeded N, the stored cursor checked after each,
/// then a clean run to the end.
fn crash_at(point: &str, seed: u64) {
    let r = Replay::new(sized(8_000, 40_000), seed);
    let mut con = r.con();
    let mut jobs = r.tracker();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cursors = Vec::new();
    for _ in 0..3 {
        // Well past the first ~4 commits of a run, which only cover the rewind overlap
        // (100 ms, ~450 events, ~4 batches of 128), so crashes land on new data; small
        // enough that three runs do not reach the end of the replay (8k events: 63 batches).
        let n: u64 = rng.random_range(10..18);
        let mut env = r.env.clone();
        env.push(("JETSTREAM_INGESTOR_FAILPOINT", format!("{point}:{n}")));
        let mut ing = spawn(&r.args(), &env);
        let status = ing
            .wait_exit(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{point}:{n} never reached"));
        assert_eq!(
            status.signal(),
            Some(SIGABRT),
            "{point}:{n} must abort the process, got {status:?}"
        );
        cursors.push(jobs.assert_cursor_not_ahead(&mut con));
    }
    assert!(
        cursors[0].is_some() && cursors[2] > cursors[0],
        "the crashed runs made progress: {cursors:?}"
    );
    let checked = r.finish();
    println!("{point}: 3 aborts (cursors {cursors:?}), {checked} identities exactly once");
}

#[test]
fn abort_before_a_commit_is_sent_loses_and_duplicates_nothing() {
    crash_at("before_commit", 711);
}

#[test]
fn abort_after_redis_acked_a_commit_before_the_reader_heard_loses_and_duplicates_nothing() {
    crash_at("after_commit_before_ack", 712);
}

#[test]
fn abort_during_the_shutdown_drain_loses_and_duplicates_nothing() {
    let r = Replay::new(sized(6_000, 40_000), 713);
    let mut con = r.con();
    let mut jobs = r.tracker();
    let span = r.last - r.first;
    for k in 1..=3u64 {
        let mut env = r.env.clone();
        env.push(("JETSTREAM_INGESTOR_FAILPOINT", format!("during_drain:{k}")));
        let mut ing = spawn(&r.args(), &env);
        let target = r.first + span * k / 5;
        wait_until(Duration::from_secs(60), "progress under load", || {
            stored_cursor(&mut con, "jsi:").is_some_and(|c| c >= target)
        });
        ing.sigterm();
        let status = ing
            .wait_exit(Duration::from_secs(10))
            .expect("ends within 10 s of SIGTERM");
        assert_eq!(
            status.signal(),
            Some(SIGABRT),
            "the drain must commit at least {k} batches and abort at the {k}-th: {status:?}"
        );
        jobs.assert_cursor_not_ahead(&mut con);
    }
    let checked = r.finish();
    println!("during_drain: 3 aborts, {checked} identities exactly once");
}

#[test]
fn sigterm_under_load_exits_0_within_10s_and_restarts_duplicate_nothing() {
    let r = Replay::new(sized(15_000, 100_000), 721);
    let mut con = r.con();
    let mut jobs = r.tracker();
    let span = r.last - r.first;
    let mut slowest = Duration::ZERO;
    for k in 1..=3u64 {
        let mut ing = spawn(&r.args(), &r.env);
        let target = r.first + span * k / 4;
        wait_until(Duration::from_secs(60), "progress under load", || {
            stored_cursor(&mut con, "jsi:").is_some_and(|c| c >= target)
        });
        let t0 = Instant::now();
        ing.sigterm();
        let status = ing
            .wait_exit(Duration::from_secs(10))
            .expect("exits within 10 s of SIGTERM");
        slowest = slowest.max(t0.elapsed());
        assert!(status.success(), "SIGTERM exit {status:?}");
        let c = jobs.assert_cursor_not_ahead(&mut con).unwrap();
        assert!(c < r.last, "stopped mid-replay, under load");
    }
    let checked = r.finish();
    println!("SIGTERM x3 under load: slowest exit {slowest:?}, {checked} identities exactly once");
}
