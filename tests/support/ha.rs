//! Replicas with `[ha]` for the tests: the environment of one (a 1 s lease renewed every
//! 200 ms, its owner named so a test knows whom to kill), and who holds the lease.

use redis::Commands;

use super::ingestor_env;

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
