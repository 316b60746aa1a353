//! Replicas with `[ha]` for the tests: the environment of one (a 1 s lease renewed every
//! 200 ms, its owner named so a test knows whom to kill), and who holds the lease.

use std::time::{Duration, Instant};

use redis::Commands;

use super::{compare, ingestor_env, wait_until};

/// The environment of a replica `owner` on `redis_url`, starting at `first` when Redis
/// holds nothing, plus `extra`.
pub fn ha_env(
    server: &str,
    redis_url: &str,
    owner: &str,
    first: u64,
    extra: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut env = ingestor_env(server, redis_url);
    env.extend([
        ("JETSTREAM_INGESTOR__HA__ENABLED", "true".to_owned()),
        ("JETSTREAM_INGESTOR__HA__OWNER", owner.to_owned()),
        ("JETSTREAM_INGESTOR__HA__LEASE_TTL", "1s".to_owned()),
        ("JETSTREAM_INGESTOR__HA__RENEW_INTERVAL", "200ms".to_owned()),
        (
            "JETSTREAM_INGESTOR__JETSTREAM__INITIAL_CURSOR",
            first.to_string(),
        ),
    ]);
    env.extend(extra.iter().cloned());
    env
}

/// The owner holding the lease of prefix `jsi:`, if any.
pub fn lease_holder(con: &mut redis::Connection) -> Option<String> {
    let v: Option<String> = con.get("jsi:ha:lease").unwrap();
    v.and_then(|v| v.split_once(' ').map(|(o, _)| o.to_owned()))
}

/// Waits until `owner` holds the lease.
pub fn wait_holder(con: &mut redis::Connection, limit: Duration, owner: &str) {
    wait_until(limit, &format!("{owner} to hold the lease"), || {
        lease_holder(con).as_deref() == Some(owner)
    });
}

/// Polls `f` every 20 ms for up to `limit`; returns whether it became true (the caller then
/// asserts exact numbers: for what must *not* happen within a window, this is the window).
pub fn settles(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (missing, duplicated) identity counts of `source` in the job streams of prefix `jsi:`.
pub fn counts(con: &mut redis::Connection, source: &[String]) -> (usize, usize) {
    let (missing, dups) = compare(con, "jsi:", source);
    (missing.len(), dups.len())
}

/// `jsi:cursor:replay`, the progress of a replay behind the stored cursor.
pub fn replay_marker(con: &mut redis::Connection) -> Option<u64> {
    let v: Option<String> = con.get("jsi:cursor:replay").unwrap();
    v.map(|s| s.parse().unwrap())
}
