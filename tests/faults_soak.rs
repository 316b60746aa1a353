//! Fault suite, the long soak. Not in CI (`#[ignore]`); `scripts/soak.sh` runs it (default
//! 1 h, a fault every 2 min, 100 events/s).
//!
//! The real binary reads a paced replay through a fault proxy and writes to a Redis (AOF on)
//! behind another proxy. Every `JSI_SOAK_FAULT_EVERY` seconds one fault, in rotation: kill -9
//! of the ingestor, Redis SIGSTOP, WebSocket reset, Redis kill -9 + restart, WebSocket
//! blackhole, `CLIENT PAUSE … WRITE`, WebSocket cut mid-frame, Redis connection resets and
//! refusals, SIGTERM of the ingestor, `maxmemory` reached. After each: commits resume and
//! the stored cursor is not ahead of the jobs. At the end: every event exactly once, the
//! binary's RSS every 10 s (growth per process lifetime reported), peak under 96 MiB.
//!
//! Knobs: `JSI_SOAK_SECS` (3600), `JSI_SOAK_FAULT_EVERY` (120), `JSI_SOAK_RATE` (100/s),
//! `JSI_SOAK_HOLD` (seconds a Redis fault lasts, 20).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use jetstream_ingestor::fake_jetstream::{FakeJetstream, FakeJetstreamConfig, Source};
use jetstream_ingestor::local_redis::{LocalRedis, LocalRedisOptions};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::fault_proxy::{FaultProxy, JobTracker, proc_status_kib};
use support::*;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy)]
enum SoakFault {
    KillIngestor,
    RedisStop,
    WsReset,
    RedisKill,
    WsBlackhole,
    ClientPauseWrite,
    WsCut,
    RedisResets,
    SigtermIngestor,
    MaxMemory,
}

const ROTATION: [SoakFault; 10] = [
    SoakFault::KillIngestor,
    SoakFault::RedisStop,
    SoakFault::WsReset,
    SoakFault::RedisKill,
    SoakFault::WsBlackhole,
    SoakFault::ClientPauseWrite,
    SoakFault::WsCut,
    SoakFault::RedisResets,
    SoakFault::SigtermIngestor,
    SoakFault::MaxMemory,
];

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), sig).expect("signal delivered");
}

fn redis_cmd(redis: &LocalRedis, args: &[&str]) {
    let mut con = redis.connection().unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query(&mut con).unwrap();
}

#[test]
#[ignore = "long soak: run by scripts/soak.sh"]
fn soak_with_a_fault_every_two_minutes_loses_nothing_and_memory_stays_flat() {
    let secs = knob("JSI_SOAK_SECS", 3_600);
    let every = Duration::from_secs(knob("JSI_SOAK_FAULT_EVERY", 120));
    let rate = knob("JSI_SOAK_RATE", 100).max(1);
    let hold = Duration::from_secs(knob("JSI_SOAK_HOLD", 20));
    let n = usize::try_from(secs * rate).unwrap().max(1_000);
    // Event time advances like the wall clock at `rate`.
    let lines = respace(&corpus(n, 1201), 1_700_000_000_000_000, 1_000_000 / rate);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let mut redis = LocalRedis::start(LocalRedisOptions {
        appendonly: true,
        maxmemory: None,
        tls: None,
        replica_of: None,
        cluster: false,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let rproxy = FaultProxy::start(([127, 0, 0, 1], redis.port()).into(), 1201);
    let mut cfg = FakeJetstreamConfig::new(Source::Lines(lines.clone()));
    cfg.rate = Some(u32::try_from(rate).unwrap());
    let server = FakeJetstream::start(cfg).unwrap();
    let wproxy = FaultProxy::start(server.addr(), 1202);
    let mut env = ingestor_env(&wproxy.ws_url(), &rproxy.redis_url());
    env.push(("JETSTREAM_INGESTOR__JETSTREAM__REWIND", "2s".to_owned()));
    env.push((
        "JETSTREAM_INGESTOR__JETSTREAM__PING_INTERVAL",
        "2s".to_owned(),
    ));
    env.push((
        "JETSTREAM_INGESTOR__JETSTREAM__IDLE_TIMEOUT",
        "6s".to_owned(),
    ));
    env.push((
        "JETSTREAM_INGESTOR__REDIS__RESPONSE_TIMEOUT",
        "3s".to_owned(),
    ));
    env.push(("JETSTREAM_INGESTOR__ADMIN__ENABLED", "false".to_owned()));
    let cursor = first.to_string();
    let args = ["run", "--cursor", cursor.as_str()];
    let spawn = || Ingestor::spawn(&args, &env);
    let mut ing = spawn();
    let mut jobs = JobTracker::new("jsi:", &lines);
    // (seconds since start, pid, VmRSS KiB, VmHWM KiB)
    let mut memory: Vec<(u64, u32, u64, u64)> = Vec::new();
    let mut log: Vec<String> = Vec::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut next_sample = started;
    let mut k = 0usize;

    let sample = |ing: &Ingestor, memory: &mut Vec<(u64, u32, u64, u64)>| {
        let pid = ing.child.id();
        if let (Some(rss), Some(hwm)) =
            (proc_status_kib(pid, "VmRSS"), proc_status_kib(pid, "VmHWM"))
        {
            memory.push((started.elapsed().as_secs(), pid, rss, hwm));
        }
    };
    while Instant::now() + every < deadline {
        // Until the next fault: sample memory, make sure the process lives.
        let at = started + every * u32::try_from(k + 1).unwrap();
        while Instant::now() < at {
            assert!(
                ing.child.try_wait().unwrap().is_none(),
                "the ingestor exited"
            );
            if Instant::now() >= next_sample {
                sample(&ing, &mut memory);
                next_sample += Duration::from_secs(10);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let fault = ROTATION[k % ROTATION.len()];
        k += 1;
        let before = stored_cursor(&mut redis.connection().unwrap(), "jsi:");
        let t0 = Instant::now();
        match fault {
            SoakFault::KillIngestor => {
                ing.kill9();
                ing = spawn();
            }
            SoakFault::SigtermIngestor => {
                ing.sigterm();
                let st = ing
                    .wait_exit(Duration::from_secs(10))
                    .expect("exits within 10 s of SIGTERM");
                assert!(st.success(), "SIGTERM exit {st:?}");
                ing = spawn();
            }
            SoakFault::RedisStop => {
                signal(redis.pid().unwrap(), Signal::SIGSTOP);
                std::thread::sleep(hold);
                signal(redis.pid().unwrap(), Signal::SIGCONT);
            }
            SoakFault::RedisKill => {
                redis.kill9();
                std::thread::sleep(hold);
                redis.restart().expect("redis restarts with its AOF");
            }
            SoakFault::ClientPauseWrite => {
                redis_cmd(
                    &redis,
                    &["CLIENT", "PAUSE", &hold.as_millis().to_string(), "WRITE"],
                );
                std::thread::sleep(hold);
            }
            SoakFault::MaxMemory => {
                redis_cmd(&redis, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
                redis_cmd(&redis, &["CONFIG", "SET", "maxmemory", "1"]);
                std::thread::sleep(hold);
                redis_cmd(&redis, &["CONFIG", "SET", "maxmemory", "0"]);
            }
            SoakFault::RedisResets => {
                rproxy.refuse(true);
                rproxy.reset_all();
                std::thread::sleep(hold / 2);
                rproxy.refuse(false);
            }
            SoakFault::WsReset => {
                wproxy.reset_all();
            }
            SoakFault::WsBlackhole => {
                wproxy.blackhole_current();
            }
            SoakFault::WsCut => {
                wproxy.cut_after(1 + (k as u64 * 7919) % 20_000);
            }
        }
        // Commits resume (the source keeps producing), and the cursor is not ahead.
        let ended = Instant::now();
        let mut c = redis.connection().unwrap();
        wait_until(
            Duration::from_secs(60),
            &format!("commits resume after {fault:?}"),
            || {
                stored_cursor(&mut c, "jsi:") > before
                    || stored_cursor(&mut c, "jsi:") == Some(last)
            },
        );
        let cursor = jobs.assert_cursor_not_ahead(&mut c);
        log.push(format!(
            "{:>5}s {fault:?}: held {:?}, commits again {:?} after it ended, cursor {cursor:?}",
            t0.duration_since(started).as_secs(),
            ended - t0,
            ended.elapsed()
        ));
    }

    let mut c = redis.connection().unwrap();
    wait_until(
        Duration::from_secs(secs.max(600)),
        "the whole replay committed",
        || stored_cursor(&mut c, "jsi:") == Some(last),
    );
    sample(&ing, &mut memory);
    ing.sigterm();
    let st = ing.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(st.success());
    let checked = assert_exactly_once(&mut c, "jsi:", &lines);

    for l in &log {
        println!("{l}");
    }
    println!("memory (s, pid, VmRSS KiB, VmHWM KiB):");
    for m in &memory {
        println!("  {m:?}");
    }
    // Growth per process lifetime, after two minutes of warm-up.
    let mut pids: Vec<u32> = memory.iter().map(|m| m.1).collect();
    pids.dedup();
    for pid in pids {
        let life: Vec<_> = memory.iter().filter(|m| m.1 == pid).collect();
        let warm = life
            .iter()
            .find(|m| m.0 >= life[0].0 + 120)
            .unwrap_or(&life[0]);
        let end = life.last().unwrap();
        println!(
            "pid {pid}: {}s..{}s, VmRSS {} -> {} KiB after warm-up ({:+} KiB), peak {} KiB",
            life[0].0,
            end.0,
            warm.2,
            end.2,
            end.2 as i64 - warm.2 as i64,
            end.3
        );
    }
    let peak = memory.iter().map(|m| m.3).max().unwrap_or(0);
    println!(
        "soak {secs}s, {} faults, {checked} identities exactly once, peak RSS {peak} KiB",
        log.len()
    );
    assert!(peak <= 96 * 1024, "peak RSS {peak} KiB");
}
