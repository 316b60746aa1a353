//! `demo`: a first look in one command. Starts the fake Jetstream (generated, realistic
//! events), uses `REDIS_URL` or a private `redis-server` on a free port, runs the real
//! pipeline for a few seconds, prints what landed and a few sample jobs, cleans up. The
//! buckets of `config/buckets.example.toml` (built in) run too: the report shows their
//! members and the newest transitions.
//!
//! The closing hint matches what is still running ([`closing_hint`]): the private server is
//! stopped on exit unless `--keep-redis` leaves it running (then the hint says how to look
//! and how to stop it); `REDIS_URL` is the user's and stays as it is.
//!
//! Failure: no Redis to be had → a clear error with the install command.

use std::time::Duration;

use actors::redis_target::RedisTarget;
use anyhow::Context as _;

use crate::app::{self, Mode};
use crate::fake_jetstream::{FakeJetstream, FakeJetstreamConfig, Source};
use crate::local_redis::{Kept, LocalRedis, LocalRedisOptions};
use crate::settings::{LogConfig, Settings};
use crate::{cli, telemetry};

/// The shipped example bucket file, so the demo runs from any directory.
const EXAMPLE_BUCKETS: &str = include_str!("../config/buckets.example.toml");

/// Where the demo's Redis is once the demo has exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAfter {
    /// The user's (`REDIS_URL`): untouched, still there.
    Yours { url: String },
    /// The private server, left running by `--keep-redis`.
    Kept(Kept),
    /// The private server, stopped and its data removed.
    Stopped,
}

/// The last lines the demo prints: commands that work after it has exited.
pub fn closing_hint(after: &RedisAfter, prefix: &str) -> String {
    match after {
        RedisAfter::Yours { url } => format!(
            "read them yourself: redis-cli -u {url} XRANGE {prefix}records - + COUNT 5\n\
             remove the demo's keys: redis-cli -u {url} --scan --pattern '{prefix}*' | xargs -r redis-cli -u {url} DEL"
        ),
        RedisAfter::Kept(k) => {
            let pid = k.pid.map_or_else(String::new, |p| format!(" (pid {p})"));
            format!(
                "the private redis-server keeps running on port {port}{pid}, data in {dir}\n\
                 read the jobs yourself: redis-cli -p {port} XRANGE {prefix}records - + COUNT 5\n\
                 stop it when done:     redis-cli -p {port} shutdown nosave && rm -rf {dir}",
                port = k.port,
                dir = k.dir.display(),
            )
        }
        RedisAfter::Stopped => "the private redis-server is stopped and its data removed. \
             To look around with redis-cli afterwards: scripts/demo.sh --keep-redis \
             (or use your own Redis: REDIS_URL=redis://127.0.0.1:6379 scripts/demo.sh)"
            .to_owned(),
    }
}

pub fn run(seconds: u64, keep_redis: bool) -> anyhow::Result<i32> {
    telemetry::init_logging(&LogConfig {
        level: "warn,jetstream_ingestor=info,actors=info".into(),
        ..Default::default()
    });
    let (redis_url, private, prefix) = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => (url, None, "jsi:demo:".to_owned()),
        _ => {
            let r =
                LocalRedis::start(LocalRedisOptions::default()).context("the demo needs Redis")?;
            println!("started a private redis-server on port {}", r.port());
            (r.url(), Some(r), "jsi:".to_owned())
        }
    };
    let mut fake_cfg = FakeJetstreamConfig::new(Source::Generate { rate: 500, seed: 7 });
    fake_cfg.listen = ([127, 0, 0, 1], 0).into();
    let fake = FakeJetstream::start(fake_cfg).context("cannot start the fake jetstream")?;
    println!("fake jetstream serving generated events at {}", fake.url());

    let mut settings = Settings::default();
    settings.jetstream.endpoints = vec![fake.url()];
    settings.redis.url = redis_url.clone();
    settings.redis.key_prefix = prefix.clone();
    // Any free port: the demo must not collide with a running ingestor on 8089.
    settings.admin.listen = "127.0.0.1:0".parse()?;
    settings.load_bucket_text(EXAMPLE_BUCKETS, "config/buckets.example.toml (built in)")?;
    settings.validate()?;

    println!("ingesting for {seconds} s (Ctrl-C stops earlier) ...");
    let stop = async move {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
            _ = cli::shutdown_signal() => {}
        }
    };
    let system = actix::System::new();
    let outcome = system.block_on(app::run(settings, Mode::Run { cursor: None }, stop))?;
    fake.shutdown();
    report(&redis_url, &prefix)?;
    if !outcome.drained {
        println!("warning: not every batch was committed before the deadline");
    }
    let after = match private {
        None => RedisAfter::Yours { url: redis_url },
        Some(r) if keep_redis => RedisAfter::Kept(r.keep_running()),
        Some(r) => {
            drop(r);
            RedisAfter::Stopped
        }
    };
    println!("\n{}", closing_hint(&after, &prefix));
    Ok(0)
}

fn report(url: &str, prefix: &str) -> anyhow::Result<()> {
    let mut con = RedisTarget::from_url(url)
        .client()?
        .get_connection_with_timeout(Duration::from_secs(5))?;
    println!("\nwhat landed in Redis ({url}):");
    for stream in ["records", "identity", "dead", "buckets"] {
        let key = format!("{prefix}{stream}");
        let len: u64 = redis::cmd("XLEN").arg(&key).query(&mut con)?;
        println!("  {key:<24} {len:>8} entries");
    }
    let cursor: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}cursor"))
        .query(&mut con)?;
    println!(
        "  {:<24} {:>8}",
        format!("{prefix}cursor"),
        cursor.unwrap_or_else(|| "(none)".into())
    );
    let sample: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(format!("{prefix}records"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(3)
        .query(&mut con)?;
    println!("\nthe newest jobs in {prefix}records:");
    for (id, fields) in sample {
        println!("  {id}");
        for (k, v) in fields {
            let shown = if v.len() > 100 {
                format!(
                    "{}…",
                    &v[..v.char_indices().nth(100).map_or(v.len(), |(i, _)| i)]
                )
            } else {
                v
            };
            println!("    {k:<10} {shown}");
        }
    }
    report_buckets(&mut con, prefix)?;
    Ok(())
}

/// Members per example bucket and the newest transitions.
fn report_buckets(con: &mut redis::Connection, prefix: &str) -> anyhow::Result<()> {
    println!("\nbucket members (config/buckets.example.toml; {prefix}bucket:<id>:members):");
    for id in [
        "active_posters",
        "lurkers",
        "portuguese_writers",
        "onboarding",
        "follow_burst",
    ] {
        let n: u64 = redis::cmd("HLEN")
            .arg(format!("{prefix}bucket:{id}:members"))
            .query(con)?;
        println!("  {id:<24} {n:>8}");
    }
    let newest: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(format!("{prefix}buckets"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(5)
        .query(con)?;
    println!("\nthe newest transitions in {prefix}buckets:");
    for (_, fields) in newest {
        let get = |k: &str| {
            fields
                .iter()
                .find(|(f, _)| f == k)
                .map_or("", |(_, v)| v.as_str())
        };
        println!(
            "  {:<8} {:<20} {} epoch {} ({})",
            get("transition"),
            get("bucket"),
            get("did"),
            get("epoch"),
            get("reason")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_redis_gets_no_command_that_needs_it() {
        let hint = closing_hint(&RedisAfter::Stopped, "jsi:");
        assert!(!hint.contains("redis-cli -p"), "{hint}");
        assert!(!hint.contains("redis-cli -u"), "{hint}");
        assert!(hint.contains("stopped"), "{hint}");
        assert!(hint.contains("--keep-redis"), "{hint}");
    }

    #[test]
    fn a_kept_redis_gets_the_commands_to_read_and_to_stop_it() {
        let kept = Kept {
            port: 40123,
            pid: Some(777),
            dir: "/tmp/jsi-redis-x".into(),
        };
        let hint = closing_hint(&RedisAfter::Kept(kept), "jsi:");
        assert!(
            hint.contains("redis-cli -p 40123 XRANGE jsi:records"),
            "{hint}"
        );
        assert!(
            hint.contains("redis-cli -p 40123 shutdown nosave && rm -rf /tmp/jsi-redis-x"),
            "{hint}"
        );
        assert!(hint.contains("pid 777"), "{hint}");
    }

    #[test]
    fn the_users_redis_is_named_with_the_demo_prefix() {
        let url = "redis://10.0.0.5:6379".to_owned();
        let hint = closing_hint(&RedisAfter::Yours { url }, "jsi:demo:");
        assert!(
            hint.contains("redis-cli -u redis://10.0.0.5:6379 XRANGE jsi:demo:records"),
            "{hint}"
        );
        assert!(hint.contains("--pattern 'jsi:demo:*'"), "{hint}");
    }
}
