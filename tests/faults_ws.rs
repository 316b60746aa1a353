//! Fault suite, the Jetstream link: 50 seeded WebSocket faults through the fault proxy
//! (clean close, reset, silent drop, cut mid-frame, and stalls shorter than the idle timeout;
//! every forwarded chunk split into seeded pieces) during one replay: nothing lost, nothing
//! duplicated, nothing dead-lettered, every dead connection detected (a silent one within
//! the idle timeout of its last frame), and no session given up for a mere stall. Backoff against a
//! refused endpoint: jittered (two instances never in lock-step), capped, attempts per minute
//! in range, as a pure property of `actors::backoff::Backoff` and in a real run. And the
//! proxy itself does what the other fault tests rely on.
//!
//! Sizes (CI / `JSI_FAULT_SCALE=full`): 50 / 200 faults over a 12k / 100k replay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use actors::backoff::Backoff;
use actors::supervisor::StartChoice;
use support::fault_proxy::{Fault, FaultProxy, plan, sized};
use support::*;

/// Events 1 ms apart in event time, so the reconnect rewind (100 ms) re-reads 100 events.
const STEP_US: u64 = 1_000;
/// The link's speed while faults are injected (about 800 events/s): short sessions, and
/// almost nothing waits in socket buffers, so a dead link shows as silence at once.
const FAULT_PHASE_BYTES_PER_S: u64 = 400_000;

#[test]
fn fifty_seeded_websocket_faults_lose_nothing_and_dead_links_are_detected_in_time() {
    let redis = redis(false);
    let lines = respace(
        &corpus(sized(12_000, 100_000), 901),
        1_700_000_000_000_000,
        STEP_US,
    );
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), None);
    let proxy = FaultProxy::start(server.addr(), 901);
    proxy.fragment(true);
    proxy.slow(Some(FAULT_PHASE_BYTES_PER_S));
    let mut s = settings(&proxy.ws_url(), &redis.url());
    s.jetstream.rewind = Duration::from_millis(100);
    s.jetstream.ping_interval = Duration::from_millis(250);
    s.jetstream.idle_timeout = Duration::from_millis(1_000);
    s.validate().unwrap();
    let idle = s.jetstream.idle_timeout;
    let backoff_max = s.jetstream.backoff_max;
    // Stalls stay under the idle timeout minus a ping: the link is slow, not dead.
    let faults = plan(901, sized(50, 200), 64 * 1024, 600);
    let p = &proxy;
    let fs = &faults;
    // (fault, from the fault to the redial, from the last event received to the redial)
    let mut detections: Vec<(Fault, Duration, Duration)> = Vec::new();
    let det = &mut detections;

    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            for (i, &fault) in fs.iter().enumerate() {
                // A session in full flow: some events committed since the last fault.
                let before = status(&sup).await.reader.committed_cursor.unwrap_or(first);
                wait_status(
                    &sup,
                    Duration::from_secs(30),
                    "progress before the fault",
                    |s| {
                        s.reader
                            .committed_cursor
                            .is_some_and(|c| c > before + 50 * STEP_US)
                    },
                )
                .await;
                let accepted = p.stats().accepted;
                let t0 = Instant::now();
                if let Fault::Stall { ms } = fault {
                    // A stall shorter than the idle timeout is no dead link: the session
                    // survives it and goes on where it was.
                    p.apply(fault);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    p.stall(false);
                    let stalled_at = status(&sup).await.reader.committed_cursor;
                    wait_status(
                        &sup,
                        Duration::from_secs(5),
                        "progress after a stall",
                        |s| s.reader.committed_cursor > stalled_at,
                    )
                    .await;
                    assert_eq!(
                        p.stats().accepted,
                        accepted,
                        "fault {i} {fault:?}: a {ms} ms stall killed the session"
                    );
                    det.push((fault, t0.elapsed(), Duration::ZERO));
                    continue;
                }
                let hit = p.apply(fault);
                assert!(
                    hit > 0 || matches!(fault, Fault::Cut { .. }),
                    "fault {i} {fault:?} found no connection"
                );
                // Detected = the reader gave the link up and dialed again. The last event it
                // received before that marks when the link went quiet from its side.
                let limit = idle + backoff_max + Duration::from_secs(3);
                let mut received = status(&sup).await.reader.events_received;
                let mut quiet_since = Instant::now();
                while p.stats().accepted == accepted {
                    assert!(
                        t0.elapsed() < limit,
                        "fault {i} {fault:?} not detected within {limit:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let now = status(&sup).await.reader.events_received;
                    if now != received {
                        received = now;
                        quiet_since = Instant::now();
                    }
                }
                let (total, silent) = (t0.elapsed(), quiet_since.elapsed());
                let bound = match fault {
                    Fault::Blackhole => idle + backoff_max + Duration::from_millis(500),
                    _ => backoff_max + Duration::from_millis(500),
                };
                assert!(
                    silent <= bound,
                    "fault {i} {fault:?}: redial {silent:?} after the last event (bound {bound:?})"
                );
                assert!(!p.cut_pending(), "fault {i}: the cut fired");
                det.push((fault, total, silent));
            }
            // The rest at full speed.
            p.slow(None);
            let st = wait_status(
                &sup,
                Duration::from_secs(120),
                "everything committed",
                |s| s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0,
            )
            .await;
            assert_eq!(st.reader_restarts, 0);
            let stalls = fs
                .iter()
                .filter(|f| matches!(f, Fault::Stall { .. }))
                .count();
            assert!(st.reader.sessions_started > (fs.len() - stalls) as u64);
        },
    );

    let mut con = redis.connection().unwrap();
    let checked = assert_exactly_once(&mut con, "jsi:", &lines);
    let dead = read_stream(&mut con, "jsi:dead");
    assert!(
        dead.is_empty(),
        "a broken link produced dead letters: {:?}",
        dead.first()
    );
    let slowest = |kind: fn(&Fault) -> bool| {
        let of = detections.iter().filter(|(f, ..)| kind(f));
        (
            of.clone().count(),
            of.clone().map(|(_, t, _)| *t).max().unwrap_or_default(),
            of.map(|(.., s)| *s).max().unwrap_or_default(),
        )
    };
    for (name, kind) in [
        (
            "close",
            (|f: &Fault| *f == Fault::Close) as fn(&Fault) -> bool,
        ),
        ("reset", |f| *f == Fault::Reset),
        ("blackhole", |f| *f == Fault::Blackhole),
        ("cut", |f| matches!(f, Fault::Cut { .. })),
        ("stall (session kept)", |f| matches!(f, Fault::Stall { .. })),
    ] {
        let (n, total, silent) = slowest(kind);
        if name.starts_with("stall") {
            println!("{n} x {name}: no redial, commits again at most {total:?} after it began");
        } else {
            println!(
                "{n} x {name}: redial at most {total:?} after the fault, {silent:?} after the last event"
            );
        }
    }
    println!(
        "{} faults, idle timeout {idle:?}; {checked} identities exactly once, 0 dead letters; {} connections, {} resets by the proxy",
        detections.len(),
        proxy.stats().accepted,
        proxy.stats().resets,
    );
    assert_eq!(detections.len(), faults.len());
}

/// Gaps between consecutive instants.
fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn backoff_is_full_jitter_capped_and_two_instances_never_move_in_lock_step() {
    let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
    let n = 2_000;
    let draw = || {
        let mut b = Backoff::new(min, max);
        (0..n).map(|_| b.next_delay()).collect::<Vec<_>>()
    };
    let (a, b) = (draw(), draw());
    assert!(
        a.iter().chain(&b).all(|d| *d <= max),
        "a delay above the cap"
    );
    // Past the first few doublings every ceiling is the cap: delays ~ U(0, cap).
    let capped = |v: &[Duration]| -> Vec<f64> { v[10..].iter().map(|d| d.as_secs_f64()).collect() };
    let (ca, cb) = (capped(&a), capped(&b));
    let mean = ca.iter().sum::<f64>() / ca.len() as f64;
    let cap = max.as_secs_f64();
    assert!(
        (0.45 * cap..=0.55 * cap).contains(&mean),
        "mean delay {mean} s is not about half the cap"
    );
    // Attempts per minute once capped: 60 / mean delay, i.e. 60 s / (cap / 2) = 60 per
    // minute for a 2 s cap; at least 60 / cap (30) and, in practice, well under 2× 60.
    let per_minute = 60.0 / mean;
    assert!(
        (54.0..=67.0).contains(&per_minute),
        "{per_minute} attempts/min"
    );
    // Lock-step: two instances with the same settings draw independent delays.
    let same = ca
        .iter()
        .zip(&cb)
        .filter(|(x, y)| (**x - **y).abs() < 0.01 * cap)
        .count();
    assert!(
        same < ca.len() / 20,
        "{same} of {} delays within 1% of each other",
        ca.len()
    );
    let (ma, mb) = (mean, cb.iter().sum::<f64>() / cb.len() as f64);
    let cov: f64 = ca.iter().zip(&cb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let var = |v: &[f64], m: f64| v.iter().map(|x| (x - m) * (x - m)).sum::<f64>();
    let r = cov / (var(&ca, ma) * var(&cb, mb)).sqrt();
    assert!(r.abs() < 0.1, "delays of two instances correlate: r = {r}");
    // Uniform, not clustered: each tenth of [0, cap] holds about a tenth of the delays.
    let mut deciles = [0usize; 10];
    for x in &ca {
        deciles[((x / cap * 10.0) as usize).min(9)] += 1;
    }
    let expect = ca.len() / 10;
    assert!(
        deciles
            .iter()
            .all(|d| d * 10 > expect * 7 && d * 10 < expect * 13),
        "not uniform: {deciles:?}"
    );
    println!(
        "{} delays per instance, all <= {max:?}; mean {mean:.3} s = {per_minute:.1} attempts/min; {same} near-equal pairs; r = {r:.3}; deciles {deciles:?}",
        ca.len()
    );
}

#[test]
fn two_real_readers_against_a_refused_endpoint_back_off_apart_capped_and_in_range() {
    let redis = redis(false);
    let run = Duration::from_secs(4);
    let (min, max) = (Duration::from_millis(50), Duration::from_millis(400));
    let dummy = fake(Vec::new(), None);
    let proxies = [
        FaultProxy::start(dummy.addr(), 911),
        FaultProxy::start(dummy.addr(), 912),
    ];
    for p in &proxies {
        p.refuse(true);
    }
    std::thread::scope(|scope| {
        for (i, p) in proxies.iter().enumerate() {
            let mut s = settings(&p.ws_url(), &redis.url());
            s.redis.key_prefix = format!("jsi:{i}:");
            s.jetstream.backoff_min = min;
            s.jetstream.backoff_max = max;
            s.validate().unwrap();
            scope.spawn(move || {
                with_supervisor(
                    s,
                    StartChoice::Resume { fallback: None },
                    |sup| async move {
                        tokio::time::sleep(run).await;
                        let st = status(&sup).await;
                        assert!(st.reader.consecutive_failures >= 5, "{st:#?}");
                        assert!(st.reader.backoff_ceiling_ms <= max.as_millis() as u64);
                    },
                );
            });
        }
    });
    let [a, b] = [proxies[0].attempts(), proxies[1].attempts()];
    // A delay is at most the cap; a refused dial itself takes a few ms.
    for g in gaps(&a).iter().chain(&gaps(&b)) {
        assert!(
            *g <= max + Duration::from_millis(150),
            "gap {g:?} over the cap"
        );
    }
    // Attempts per minute: capped delays average max/2 (plus the dial), the first ones are
    // shorter. Range: at least 60 s / (cap + dial), at most 60 s / (cap / 5).
    let per_minute = |n: usize| n as f64 * 60.0 / run.as_secs_f64();
    for v in [&a, &b] {
        let pm = per_minute(v.len());
        let lo = 60.0 / (max.as_secs_f64() + 0.15);
        let hi = 60.0 / (max.as_secs_f64() / 5.0);
        assert!(
            (lo..=hi).contains(&pm),
            "{pm:.0} attempts/min outside [{lo:.0}, {hi:.0}]"
        );
    }
    // Not in lock-step: the two schedules differ at most steps.
    let (ga, gb) = (gaps(&a), gaps(&b));
    let together = ga
        .iter()
        .zip(&gb)
        .filter(|(x, y)| x.abs_diff(**y) < Duration::from_millis(10))
        .count();
    let pairs = ga.len().min(gb.len());
    assert!(
        together * 3 < pairs,
        "{together} of {pairs} reconnect delays within 10 ms of each other"
    );
    println!(
        "refused endpoint, {run:?}: {} and {} attempts ({:.0} and {:.0}/min), {together} of {pairs} delays within 10 ms, all gaps <= cap + dial",
        a.len(),
        b.len(),
        per_minute(a.len()),
        per_minute(b.len())
    );
}

/// A one-connection upstream that sends `payload`, then echoes nothing and waits.
fn serve_once(payload: Vec<u8>) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(&payload);
            let mut sink = [0u8; 64];
            let _ = s.read(&mut sink);
        }
    });
    (addr, t)
}

#[test]
fn the_fault_proxy_cuts_at_the_byte_stalls_without_loss_and_refuses() {
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();

    // Cut after 12,345 bytes: exactly those arrive, then a reset.
    let (up, t) = serve_once(payload.clone());
    let proxy = FaultProxy::start(up, 1);
    proxy.fragment(true);
    proxy.cut_after(12_345);
    let mut c = std::net::TcpStream::connect(proxy.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let err = loop {
        let mut buf = [0u8; 4096];
        match c.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e.kind()),
        }
    };
    assert_eq!(got.len(), 12_345);
    assert_eq!(&got[..], &payload[..12_345]);
    assert_eq!(err, Some(std::io::ErrorKind::ConnectionReset));
    drop(c);
    t.join().unwrap();
    drop(proxy);

    // Stall: nothing while stalled, everything after, in order.
    let (up, t) = serve_once(payload.clone());
    let proxy = FaultProxy::start(up, 2);
    proxy.stall(true);
    let mut c = std::net::TcpStream::connect(proxy.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = vec![0u8; 4096];
    assert!(c.read(&mut buf).is_err(), "bytes passed a stalled proxy");
    proxy.stall(false);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = vec![0u8; payload.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, payload);
    drop(c);
    t.join().unwrap();

    // Refuse: a new connection is reset at once.
    proxy.refuse(true);
    let mut c = std::net::TcpStream::connect(proxy.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = c.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
            || matches!(r, Ok(0)),
        "{r:?}"
    );
    wait_until(Duration::from_secs(5), "refusal counted", || {
        proxy.stats().refused == 1
    });
    assert_eq!(proxy.attempts().len(), 2);
    // Plans are deterministic and cover every kind.
    assert_eq!(plan(7, 50, 1000, 500), plan(7, 50, 1000, 500));
    assert_ne!(plan(7, 50, 1000, 500), plan(8, 50, 1000, 500));
    let p = plan(7, 50, 1000, 500);
    for kind in [Fault::Close, Fault::Reset, Fault::Blackhole] {
        assert_eq!(p.iter().filter(|f| **f == kind).count(), 10);
    }
    assert_eq!(
        p.iter()
            .filter(|f| matches!(f, Fault::Stall { .. }))
            .count(),
        10
    );
}
