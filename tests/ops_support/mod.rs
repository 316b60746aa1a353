//! Helpers of the operating tests (`tests/admin.rs`, `tests/operations.rs`): the ingestor
//! binary with its admin API on a free port (retried if another process takes the port
//! first), a paced fake Jetstream, and small Redis readers. Builds on `tests/support`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jetstream_ingestor::admin::auth::Secret;
use jetstream_ingestor::admin::client::AdminClient;
use jetstream_ingestor::fake_jetstream::{FakeJetstream, FakeJetstreamConfig, Source};
use jetstream_ingestor::local_redis::free_port;

use crate::support::Ingestor;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A fake Jetstream serving `lines` at `rate` events per second per connection.
pub fn paced_fake(lines: Vec<String>, rate: u32) -> FakeJetstream {
    let mut cfg = FakeJetstreamConfig::new(Source::Lines(lines));
    cfg.rate = Some(rate);
    FakeJetstream::start(cfg).expect("fake jetstream starts")
}

/// The binary, with its admin API answering on `admin`.
pub struct Running {
    pub ing: Ingestor,
    pub admin: AdminClient,
}

/// Spawns the binary with `env` plus an admin listen address on a free port (and `token`),
/// and waits until `/healthz` answers. Retries on another port if the process exits first
/// (the port was taken between the probe and the bind).
pub fn start(args: &[&str], env: &[(&'static str, String)], token: Option<&str>) -> Running {
    for _ in 0..5 {
        let port = free_port().unwrap();
        let mut env = env.to_vec();
        env.push((
            "JETSTREAM_INGESTOR__ADMIN__LISTEN",
            format!("127.0.0.1:{port}"),
        ));
        if let Some(t) = token {
            env.push(("JETSTREAM_INGESTOR__ADMIN__TOKEN", t.to_owned()));
        }
        let mut ing = Ingestor::spawn(args, &env);
        let admin = AdminClient::new(([127, 0, 0, 1], port).into(), token.map(Secret::new))
            .with_timeout(Duration::from_secs(5));
        let started = Instant::now();
        loop {
            if admin.get("/healthz").is_ok_and(|r| r.status == 200) {
                return Running { ing, admin };
            }
            if ing.child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "admin API did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("the ingestor exited before its admin API came up, 5 times");
}

/// `GET /admin/status` as JSON (panics on anything but 200).
pub fn admin_status(admin: &AdminClient) -> serde_json::Value {
    let r = admin.get("/admin/status").unwrap();
    assert_eq!(r.status, 200, "status: {}", r.text());
    r.json().expect("status is JSON")
}

/// Polls the admin status until `f` holds.
pub fn wait_admin(
    admin: &AdminClient,
    limit: Duration,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = admin_status(admin);
        if f(&s) {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}; last status {s:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn hgetall(con: &mut redis::Connection, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL").arg(key).query(con).unwrap()
}

/// Every entry of a stream with its id.
pub fn entries(con: &mut redis::Connection, key: &str) -> Vec<(String, HashMap<String, String>)> {
    let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap();
    page.into_iter()
        .map(|(id, f)| (id, f.into_iter().collect()))
        .collect()
}

/// The newest `time_us` among the job entries of `records` and `identity`.
pub fn newest_job_time(con: &mut redis::Connection, prefix: &str) -> Option<u64> {
    ["records", "identity"]
        .iter()
        .flat_map(|s| crate::support::read_stream(con, &format!("{prefix}{s}")))
        .filter_map(|e| e.get("time_us").and_then(|t| t.parse().ok()))
        .max()
}
