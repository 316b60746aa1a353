//! Shared test harness: private Redis, fake Jetstream, settings tuned for tests, an
//! in-process pipeline runner, the ingestor binary as a child process, and a
//! source-vs-stream checker. Real peers only: no mocks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jetstream_ingestor::app::{self, Mode, Outcome};
use jetstream_ingestor::fake_jetstream::{FakeJetstream, FakeJetstreamConfig, Source};
use jetstream_ingestor::local_redis::{LocalRedis, LocalRedisOptions};
use jetstream_ingestor::settings::Settings;

/// `rel` under the repository root, which must exist: the fixtures are part of the
/// repository, so a missing one fails the test (naming it) instead of skipping it.
pub fn repo_file(rel: &str) -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    assert!(
        p.exists(),
        "{} is missing: it is part of the repository (restore it with `git checkout -- {rel}`)",
        p.display()
    );
    p
}

/// The real Jetstream v1 events under `tests/fixtures/jetstream` (`rel`: e.g.
/// `v1-production-corpus/expected_v1.jsonl`), one line each, blank lines dropped.
pub fn real_events(rel: &str) -> Vec<String> {
    let path = repo_file(&format!("tests/fixtures/jetstream/{rel}"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// A private redis-server; fails the test (with the install command) if Redis is missing.
pub fn redis(appendonly: bool) -> LocalRedis {
    LocalRedis::start(LocalRedisOptions {
        appendonly,
        maxmemory: None,
        tls: None,
        replica_of: None,
        cluster: false,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

pub fn fake(lines: Vec<String>, close_every: Option<u64>) -> FakeJetstream {
    let mut cfg = FakeJetstreamConfig::new(Source::Lines(lines));
    cfg.listen = ([127, 0, 0, 1], 0).into();
    cfg.close_every = close_every;
    FakeJetstream::start(cfg).expect("fake jetstream starts")
}

/// Settings for tests: small batches (many commits), fast backoff.
pub fn settings(endpoint: &str, redis_url: &str) -> Settings {
    let mut s = Settings::default();
    s.jetstream.endpoints = vec![endpoint.to_owned()];
    s.jetstream.batch_max_events = 64;
    s.jetstream.max_in_flight_batches = 4;
    s.jetstream.backoff_min = Duration::from_millis(20);
    s.jetstream.backoff_max = Duration::from_millis(200);
    s.jetstream.connect_timeout = Duration::from_secs(2);
    s.redis.url = redis_url.to_owned();
    s.redis.retry_min = Duration::from_millis(20);
    s.redis.retry_max = Duration::from_millis(300);
    s.redis.response_timeout = Duration::from_secs(2);
    s.redis.connect_timeout = Duration::from_secs(1);
    // Tests run in parallel: the admin API on a free port, never the default 8089.
    s.admin.listen = ([127, 0, 0, 1], 0).into();
    s.validate().expect("test settings are valid");
    s
}

/// Runs the pipeline in-process (own actix System) until `stop` resolves or the replay ends.
pub fn run_in_process(
    settings: Settings,
    mode: Mode,
    stop: impl std::future::Future<Output = ()> + 'static,
) -> Outcome {
    actix::System::new()
        .block_on(app::run(settings, mode, stop))
        .expect("pipeline runs")
}

/// Polls `f` every 20 ms until it is true; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub async fn wait_until_async(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every entry of a stream, in order, as field maps.
pub fn read_stream(con: &mut redis::Connection, key: &str) -> Vec<HashMap<String, String>> {
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(5000)
            .query(con)
            .expect("XRANGE");
        let n = page.len();
        for (id, fields) in page {
            start = format!("({id}");
            out.push(fields.into_iter().collect());
        }
        if n < 5000 {
            return out;
        }
    }
}

pub fn stored_cursor(con: &mut redis::Connection, prefix: &str) -> Option<u64> {
    let v: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}cursor"))
        .query(con)
        .expect("GET cursor");
    v.map(|s| s.parse().expect("cursor is a number"))
}

/// The identity of a source line as the job stream should show it, or None if the line is
/// not a valid event (it must then be dead-lettered).
pub fn source_identity(line: &str) -> Option<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let did = v.get("did")?.as_str()?;
    let t = v.get("time_us")?.as_u64()?;
    match v.get("kind")?.as_str()? {
        "commit" => {
            let c = v.get("commit")?;
            let op = c.get("operation")?.as_str()?;
            Some((
                format!(
                    "{did}|{}|{}|{}|{op}",
                    c.get("collection")?.as_str()?,
                    c.get("rkey")?.as_str()?,
                    c.get("rev")?.as_str()?
                ),
                t,
            ))
        }
        "identity" | "account" => {
            let kind = v.get("kind")?.as_str()?;
            let seq = v.get(kind)?.get("seq")?.as_i64()?;
            Some((format!("{did}|{kind}|{seq}"), t))
        }
        _ => None,
    }
}

/// The identity of a job entry, in the same shape as `source_identity`.
pub fn entry_identity(e: &HashMap<String, String>) -> String {
    match e.get("kind").map(String::as_str) {
        Some(k @ ("identity" | "account")) => format!("{}|{k}|{}", e["did"], e["seq"]),
        _ => format!("{}|{}", e["idem"], e["operation"]),
    }
}

/// Compares the job streams with the source: (missing, duplicated) identities.
pub fn compare(
    con: &mut redis::Connection,
    prefix: &str,
    source: &[String],
) -> (Vec<String>, Vec<String>) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for stream in ["records", "identity"] {
        for e in read_stream(con, &format!("{prefix}{stream}")) {
            *counts.entry(entry_identity(&e)).or_default() += 1;
        }
    }
    let mut missing = Vec::new();
    for line in source {
        if let Some((id, _)) = source_identity(line)
            && !counts.contains_key(&id)
        {
            missing.push(id);
        }
    }
    let dups = counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k)
        .collect();
    (missing, dups)
}

/// Panics unless every identity of `source` is in the job streams under `prefix` exactly
/// once. Returns the number of identities checked.
pub fn assert_exactly_once(con: &mut redis::Connection, prefix: &str, source: &[String]) -> usize {
    let (missing, dups) = compare(con, prefix, source);
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(
        dups.is_empty(),
        "{} duplicated, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    source
        .iter()
        .filter(|l| source_identity(l).is_some())
        .count()
}

/// The ingestor binary as a child process, configured through the environment.
pub struct Ingestor {
    pub child: Child,
}

impl Ingestor {
    pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Ingestor {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jetstream-ingestor"));
        cmd.args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ingestor {
            child: cmd.spawn().expect("ingestor binary starts"),
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM delivered");
    }

    /// Waits for exit up to `limit`; None if still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Ingestor {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Environment for the ingestor binary pointing at `endpoint` and `redis_url`.
pub fn ingestor_env(endpoint: &str, redis_url: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "JETSTREAM_INGESTOR__JETSTREAM__ENDPOINTS",
            endpoint.to_owned(),
        ),
        (
            "JETSTREAM_INGESTOR__JETSTREAM__BATCH_MAX_EVENTS",
            "128".to_owned(),
        ),
        (
            "JETSTREAM_INGESTOR__JETSTREAM__BACKOFF_MIN",
            "20ms".to_owned(),
        ),
        (
            "JETSTREAM_INGESTOR__JETSTREAM__BACKOFF_MAX",
            "200ms".to_owned(),
        ),
        ("JETSTREAM_INGESTOR__REDIS__URL", redis_url.to_owned()),
        ("JETSTREAM_INGESTOR__REDIS__RETRY_MIN", "20ms".to_owned()),
        ("JETSTREAM_INGESTOR__REDIS__RETRY_MAX", "300ms".to_owned()),
        // Tests run in parallel: the admin API on a free port, never the default 8089.
        (
            "JETSTREAM_INGESTOR__ADMIN__LISTEN",
            "127.0.0.1:0".to_owned(),
        ),
    ]
}

pub fn corpus(n: usize, seed: u64) -> Vec<String> {
    jetstream_ingestor::fake_jetstream::generate_corpus(n, seed, 1_700_000_000_000_000)
}

pub fn time_of(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("time_us")?
        .as_u64()
}

/// Starts the supervisor in a fresh actix System, runs `body` with its address, then drains.
pub fn with_supervisor<F, Fut>(settings: Settings, start: actors::supervisor::StartChoice, body: F)
where
    F: FnOnce(actix::Addr<actors::supervisor::Supervisor>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    actix::System::new().block_on(async move {
        jetstream_ingestor::telemetry::install_crypto_provider();
        let sup = actors::supervisor::Supervisor::launch(settings.pipeline(), start)
            .await
            .expect("pipeline starts");
        body(sup.clone()).await;
        tokio::time::timeout(Duration::from_secs(10), sup.send(actors::messages::Drain))
            .await
            .expect("drains in time")
            .expect("drained");
    });
}

pub async fn status(sup: &actix::Addr<actors::supervisor::Supervisor>) -> actors::messages::Status {
    sup.send(actors::messages::GetStatus)
        .await
        .expect("supervisor alive")
        .expect("status")
}

/// Polls the supervisor's status until `f` holds; panics with `what` after `limit`.
pub async fn wait_status(
    sup: &actix::Addr<actors::supervisor::Supervisor>,
    limit: Duration,
    what: &str,
    f: impl Fn(&actors::messages::Status) -> bool,
) -> actors::messages::Status {
    let start = Instant::now();
    loop {
        let s = status(sup).await;
        if f(&s) {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}; last status {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fake Jetstream serving `lines`, configured by `tune` (clock offset, silence, retention …).
pub fn fake_with(lines: Vec<String>, tune: impl FnOnce(&mut FakeJetstreamConfig)) -> FakeJetstream {
    let mut cfg = FakeJetstreamConfig::new(Source::Lines(lines));
    tune(&mut cfg);
    FakeJetstream::start(cfg).expect("fake jetstream starts")
}

/// `lines` with the first `"time_us":N` of each rewritten to `start_us + i * step_us`, so a
/// corpus spans seconds instead of milliseconds (rewinds and clock offsets then mean
/// something). Everything else in the line is kept byte for byte.
pub fn respace(lines: &[String], start_us: u64, step_us: u64) -> Vec<String> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| with_time(l, start_us + i as u64 * step_us))
        .collect()
}

/// `line` with its first `"time_us":N` replaced by `t`.
pub fn with_time(line: &str, t: u64) -> String {
    let key = "\"time_us\":";
    let at = line.find(key).expect("a time_us") + key.len();
    let digits = line[at..]
        .find(|c: char| !c.is_ascii_digit())
        .expect("digits end");
    format!("{}{t}{}", &line[..at], &line[at + digits..])
}

/// The Jetstream v1 zstd dictionary as a file (the one the binary embeds), for tests of the
/// `zstd_dictionary` override.
pub fn zstd_dictionary() -> std::path::PathBuf {
    repo_file("actors/assets/zstd_dictionary")
}

/// Entries of `records` and `identity` under `prefix`, in order, without the `source` field
/// (the only field that differs between two hosts serving the same events).
pub fn jobs_without_source(
    con: &mut redis::Connection,
    prefix: &str,
) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    for stream in ["records", "identity"] {
        for e in read_stream(con, &format!("{prefix}{stream}")) {
            let mut fields: Vec<(String, String)> =
                e.into_iter().filter(|(k, _)| k != "source").collect();
            fields.sort();
            out.push(fields);
        }
    }
    out
}
pub mod cluster;
pub mod fake_pds;
pub mod fault_proxy;
pub mod ha;
pub mod sentinel;

/// Entries of `jsi:dead` by reason.
pub fn dead_reasons(con: &mut redis::Connection) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for e in read_stream(con, "jsi:dead") {
        *out.entry(e["reason"].clone()).or_default() += 1;
    }
    out
}

/// The wall clock in unix microseconds (Jetstream's `time_us` unit).
pub fn wall_us() -> u64 {
    actors::model::Cursor::now().0
}
