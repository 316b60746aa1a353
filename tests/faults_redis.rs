//! Fault suite, Redis: five kinds of Redis fault during one replay (kill -9 + restart with
//! its AOF, SIGSTOP/SIGCONT, `CLIENT PAUSE … WRITE`, connection resets and refusals through
//! the fault proxy, `maxmemory` reached then raised), each held for 5 s (20 s with
//! `JSI_FAULT_SCALE=full`): nothing lost or duplicated, commits resume within the writer's
//! backoff cap + 5 s after each fault ends, no reader restart, no exit. And Redis stopped
//! while the source pushes at full speed: the binary's peak RSS stays under 96 MiB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use actors::supervisor::StartChoice;
use jetstream_ingestor::local_redis::{LocalRedis, LocalRedisOptions};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::fault_proxy::{FaultProxy, full_scale, sized, vm_hwm_kib};
use support::*;

#[derive(Debug, Clone, Copy)]
enum RedisFault {
    KillAndRestart,
    Stop,
    ClientPauseWrite,
    ProxyResets,
    MaxMemory,
}

fn signal(redis: &LocalRedis, sig: Signal) {
    let pid = Pid::from_raw(i32::try_from(redis.pid().expect("redis runs")).unwrap());
    kill(pid, sig).expect("signal delivered");
}

fn config_set(redis: &LocalRedis, key: &str, value: &str) {
    let mut con = redis.connection().unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query(&mut con)
        .unwrap();
}

#[test]
fn redis_faults_lose_nothing_and_commits_resume_within_the_backoff_cap() {
    let mut redis = LocalRedis::start(LocalRedisOptions {
        appendonly: true,
        maxmemory: None,
        tls: None,
        replica_of: None,
        cluster: false,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port()).into(), 801);
    let lines = corpus(sized(15_000, 100_000), 801);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), None);
    let s = settings(&server.url(), &proxy.redis_url());
    let cap = s.redis.retry_max;
    let hold = if full_scale() {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(5)
    };
    let faults = [
        RedisFault::KillAndRestart,
        RedisFault::Stop,
        RedisFault::ClientPauseWrite,
        RedisFault::ProxyResets,
        RedisFault::MaxMemory,
    ];
    let r = &mut redis;
    let p = &proxy;
    let mut recoveries = Vec::new();
    let rec = &mut recoveries;

    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let step = (last - first) / 20;
            for fault in faults {
                // Some progress first, so every fault hits a pipeline in full flow.
                let before = status(&sup).await.reader.committed_cursor.unwrap_or(first);
                wait_status(
                    &sup,
                    Duration::from_secs(60),
                    "progress before the fault",
                    |s| {
                        s.reader
                            .committed_cursor
                            .is_some_and(|c| c >= before + step)
                    },
                )
                .await;
                let failures_before = status(&sup).await.writer.consecutive_commit_failures;
                assert_eq!(failures_before, 0, "healthy before {fault:?}");
                match fault {
                    RedisFault::KillAndRestart => r.kill9(),
                    RedisFault::Stop => signal(r, Signal::SIGSTOP),
                    RedisFault::ClientPauseWrite => {
                        // Longer than held: ended by CLIENT UNPAUSE, after the checks.
                        let mut con = r.connection().unwrap();
                        let _: () = redis::cmd("CLIENT")
                            .arg("PAUSE")
                            .arg((hold * 4).as_millis() as u64)
                            .arg("WRITE")
                            .query(&mut con)
                            .unwrap();
                    }
                    RedisFault::ProxyResets => {
                        p.refuse(true);
                        p.reset_all();
                    }
                    RedisFault::MaxMemory => {
                        config_set(r, "maxmemory-policy", "noeviction");
                        config_set(r, "maxmemory", "1");
                    }
                }
                // The fault lasts `hold`; meanwhile commits fail and nothing moves past them.
                let t0 = Instant::now();
                let down = wait_status(&sup, hold + Duration::from_secs(5), "commits fail", |s| {
                    s.writer.consecutive_commit_failures >= 1
                })
                .await;
                let stuck_at = down.reader.committed_cursor;
                while t0.elapsed() < hold {
                    if matches!(fault, RedisFault::ProxyResets) {
                        p.reset_all();
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let mid = status(&sup).await;
                assert_eq!(
                    mid.reader.committed_cursor, stuck_at,
                    "nothing commits during {fault:?}"
                );
                match fault {
                    RedisFault::KillAndRestart => r.restart().expect("redis restarts with its AOF"),
                    RedisFault::Stop => signal(r, Signal::SIGCONT),
                    // The pause ends by itself at `hold`.
                    RedisFault::ClientPauseWrite => {
                        let mut con = r.connection().unwrap();
                        let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut con).unwrap();
                    }
                    RedisFault::ProxyResets => p.refuse(false),
                    RedisFault::MaxMemory => config_set(r, "maxmemory", "0"),
                }
                let ended = Instant::now();
                let resumed =
                    wait_status(&sup, cap + Duration::from_secs(5), "commits resume", |s| {
                        s.reader.committed_cursor > stuck_at
                    })
                    .await;
                let took = ended.elapsed();
                assert!(resumed.reader.committed_cursor > stuck_at);
                rec.push((fault, took, mid.writer.consecutive_commit_failures));
            }
            let st = wait_status(
                &sup,
                Duration::from_secs(120),
                "everything committed",
                |s| s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0,
            )
            .await;
            assert_eq!(st.reader_restarts, 0, "no reader restart");
            assert_eq!(st.writer.consecutive_commit_failures, 0);
        },
    );

    let mut con = redis.connection().unwrap();
    let checked = assert_exactly_once(&mut con, "jsi:", &lines);
    for (fault, took, failures) in &recoveries {
        println!(
            "{fault:?}: held {hold:?}, {failures} failed commit attempts, resumed {took:?} after it ended"
        );
    }
    println!(
        "{checked} identities exactly once; resets through the proxy: {}",
        proxy.stats().resets
    );
    assert_eq!(recoveries.len(), faults.len());
    assert!(proxy.stats().resets > 0 && proxy.stats().refused > 0);
}

#[test]
fn redis_stopped_while_the_source_pushes_at_full_speed_keeps_the_peak_rss_under_96_mib() {
    const BOUND_KIB: u64 = 96 * 1024;
    let redis = redis(false);
    let lines = corpus(sized(40_000, 200_000), 811);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), None);
    let mut env = ingestor_env(&server.url(), &redis.url());
    // The shipped batch size and window: the bound is about the default configuration.
    env.push((
        "JETSTREAM_INGESTOR__JETSTREAM__BATCH_MAX_EVENTS",
        "512".to_owned(),
    ));
    env.push((
        "JETSTREAM_INGESTOR__JETSTREAM__MAX_IN_FLIGHT_BATCHES",
        "16".to_owned(),
    ));
    env.push((
        "JETSTREAM_INGESTOR__REDIS__RESPONSE_TIMEOUT",
        "2s".to_owned(),
    ));
    env.push(("JETSTREAM_INGESTOR__ADMIN__ENABLED", "false".to_owned()));
    let cursor = first.to_string();
    let mut ing = Ingestor::spawn(&["run", "--cursor", &cursor], &env);
    let pid = ing.child.id();
    let mut con = redis.connection().unwrap();
    wait_until(Duration::from_secs(60), "first commits", || {
        stored_cursor(&mut con, "jsi:").is_some_and(|c| c > first)
    });
    let before = vm_hwm_kib(pid).expect("VmHWM readable");

    signal(&redis, Signal::SIGSTOP);
    let hold = if full_scale() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(6)
    };
    // Stopped for at least `hold`, and until the source has plateaued for a second:
    // the window is full and the socket is no longer read.
    let t0 = Instant::now();
    let mut sent = Vec::new();
    let mut steady_since = Instant::now();
    loop {
        assert!(
            ing.child.try_wait().unwrap().is_none(),
            "the ingestor exited"
        );
        let n = server.events_sent();
        if sent.last() != Some(&n) {
            steady_since = Instant::now();
        }
        sent.push(n);
        if t0.elapsed() >= hold && steady_since.elapsed() >= Duration::from_secs(1) {
            break;
        }
        assert!(
            t0.elapsed() < hold + Duration::from_secs(60),
            "the source is still being read: {sent:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = vm_hwm_kib(pid).expect("VmHWM readable");
    // Reading stopped: what the server could push plateaued well short of the corpus.
    let plateau = *sent.last().unwrap();
    assert!(
        (plateau as usize) < lines.len(),
        "everything was read into memory while Redis was stopped"
    );
    signal(&redis, Signal::SIGCONT);

    let mut con = redis.connection().unwrap();
    wait_until(Duration::from_secs(120), "everything committed", || {
        stored_cursor(&mut con, "jsi:") == Some(last)
    });
    let peak = vm_hwm_kib(pid).expect("VmHWM readable");
    ing.sigterm();
    let status = ing.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    let checked = assert_exactly_once(&mut con, "jsi:", &lines);
    println!(
        "peak RSS: {} KiB before the stall, {} KiB during ({hold:?}, source plateau at {plateau} of {} events), {} KiB overall; {checked} identities exactly once",
        before,
        during,
        lines.len(),
        peak
    );
    assert!(
        peak <= BOUND_KIB,
        "peak RSS {peak} KiB over {BOUND_KIB} KiB"
    );
}
