//! `demo`: a first look in one command. Starts the fake Jetstream (generated, realistic
//! events), uses `REDIS_URL` or a private `redis-server` on a free port, runs the real
//! pipeline for a few seconds, prints what landed and a few sample jobs, cleans up. The
//! buckets of `config/buckets.example.toml` (built in) run too: the report shows their
//! members and the newest transitions.
//!
//! Failure: no Redis to be had → a clear error with the install command.

use std::time::Duration;

use anyhow::Context as _;

use crate::app::{self, Mode};
use crate::fake_jetstream::{FakeJetstream, FakeJetstreamConfig, Source};
use crate::local_redis::{LocalRedis, LocalRedisOptions};
use crate::settings::{LogConfig, Settings};
use crate::{cli, telemetry};

/// The shipped example bucket file, so the demo runs from any directory.
const EXAMPLE_BUCKETS: &str = include_str!("../config/buckets.example.toml");

pub fn run(seconds: u64) -> anyhow::Result<i32> {
    telemetry::init_logging(&LogConfig {
        level: "warn,jetstream_ingestor=info,actors=info".into(),
        ..Default::default()
    });
    let (redis_url, _private, prefix) = match std::env::var("REDIS_URL") {
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
    Ok(0)
}

fn report(url: &str, prefix: &str) -> anyhow::Result<()> {
    let mut con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
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
    println!("\nread them yourself: redis-cli -u {url} XRANGE {prefix}records - + COUNT 5");
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
