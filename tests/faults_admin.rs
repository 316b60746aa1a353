//! Fault suite, attacks on the operating surfaces: the admin token comparison leaks no
//! timing (a token wrong in its first byte costs what one wrong in its last byte costs, in
//! process and over HTTP against the binary, compared with robust statistics), the admin API
//! listens on loopback by default; and a Redis that wants a password (`requirepass`, or an
//! ACL user) refuses a wrong one: the ingestor fails closed (writes nothing, not ready) with
//! a clear error, and no password ever reaches its logs, even at `trace`.
//!
//! The identical 401s (missing, malformed, wrong, other-length tokens, huge bodies), the
//! 413 body limit and the refusal of a non-loopback listen without a token are proved in
//! `tests/admin.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ops_support;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jetstream_ingestor::admin::auth::{Secret, TokenCheck};
use jetstream_ingestor::admin::client::AdminClient;
use jetstream_ingestor::local_redis::free_port;
use ops_support::*;
use support::*;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `token` with its byte at `at` changed.
fn wrong_at(token: &str, at: usize) -> String {
    let mut b = token.as_bytes().to_vec();
    b[at] = if b[at] == b'x' { b'y' } else { b'x' };
    String::from_utf8(b).unwrap()
}

/// Paired comparison of two timed actions, interleaved (A B, then B A, …) so that drift
/// and noise from other processes hit both alike. Returns (median of the per-pair
/// differences relative to the median time, share of pairs where A was slower).
fn paired(
    rounds: usize,
    mut a: impl FnMut() -> Duration,
    mut b: impl FnMut() -> Duration,
) -> (f64, f64, f64) {
    let mut diffs = Vec::with_capacity(rounds);
    let mut all = Vec::with_capacity(rounds * 2);
    let mut a_slower = 0usize;
    for r in 0..rounds {
        let (ta, tb) = if r % 2 == 0 {
            let ta = a();
            (ta, b())
        } else {
            let tb = b();
            (a(), tb)
        };
        let (ta, tb) = (ta.as_secs_f64(), tb.as_secs_f64());
        diffs.push(ta - tb);
        all.push(ta);
        all.push(tb);
        if ta > tb {
            a_slower += 1;
        }
    }
    let typical = median(&mut all);
    (
        median(&mut diffs) / typical,
        a_slower as f64 / rounds as f64,
        typical,
    )
}

#[test]
fn a_wrong_first_byte_and_a_wrong_last_byte_cost_the_same_in_process_and_over_http() {
    // In process: the comparison itself, on a long token, so a byte-by-byte early exit
    // (up to 4 KiB compared or not) would show.
    let long: String = (0..4096).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let check = TokenCheck::new(Some(&Secret::new(long.clone())));
    let first = format!("Bearer {}", wrong_at(&long, 0));
    let last = format!("Bearer {}", wrong_at(&long, long.len() - 1));
    let batch = |h: &str| {
        let t = Instant::now();
        for _ in 0..20 {
            assert!(!check.allows(Some(h.as_bytes())));
        }
        t.elapsed()
    };
    let (rel, a_slower, typical) = paired(400, || batch(&first), || batch(&last));
    println!(
        "in process: median paired difference {:+.2}% of {:.1} µs per 20 checks; first-byte slower in {:.0}% of pairs",
        rel * 100.0,
        typical * 1e6,
        a_slower * 100.0
    );
    assert!(
        rel.abs() < 0.05,
        "first vs last byte differ by {:.1}%",
        rel * 100.0
    );
    assert!(
        (0.3..=0.7).contains(&a_slower),
        "one side slower in {a_slower} of pairs"
    );
    // Control: the same statistic does see an early-exit comparison (`==`) of that token.
    let expected = format!("Bearer {long}");
    let naive = |h: &str| {
        let t = Instant::now();
        for _ in 0..2_000 {
            assert!(std::hint::black_box(h) != std::hint::black_box(expected.as_str()));
        }
        t.elapsed()
    };
    let (naive_rel, _, _) = paired(200, || naive(&first), || naive(&last));
    println!(
        "control, early-exit ==: first-byte error {:+.0}% against last-byte error",
        naive_rel * 100.0
    );
    assert!(
        naive_rel < -0.2,
        "the statistic cannot see a leaky comparison: {naive_rel}"
    );

    // Over HTTP, against the binary.
    let redis = redis(false);
    let lines = corpus(200, 1101);
    let server = fake(lines.clone(), None);
    let env = ingestor_env(&server.url(), &redis.url());
    let cursor = time_of(&lines[0]).unwrap().to_string();
    let run = start(&["run", "--cursor", &cursor], &env, Some(TOKEN));
    let h_first = format!("Bearer {}", wrong_at(TOKEN, 0));
    let h_last = format!("Bearer {}", wrong_at(TOKEN, TOKEN.len() - 1));
    let get = |h: &str| {
        let t = Instant::now();
        let r = run
            .admin
            .raw("GET", "/admin/status", &[("Authorization", h)], b"")
            .unwrap();
        let took = t.elapsed();
        assert_eq!(r.status, 401);
        took
    };
    // Same answer, byte for byte (but the date).
    let shape = |h: &str| {
        let r = run
            .admin
            .raw("GET", "/admin/status", &[("Authorization", h)], b"")
            .unwrap();
        let headers: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k != "date")
            .cloned()
            .collect();
        (r.status, headers, r.body)
    };
    assert_eq!(shape(&h_first), shape(&h_last));
    for _ in 0..50 {
        get(&h_first);
        get(&h_last);
    }
    let (rel, a_slower, typical) = paired(600, || get(&h_first), || get(&h_last));
    println!(
        "over HTTP: median paired difference {:+.2}% of {:.0} µs per request; first-byte slower in {:.0}% of pairs",
        rel * 100.0,
        typical * 1e6,
        a_slower * 100.0
    );
    assert!(
        rel.abs() < 0.10,
        "first vs last byte differ by {:.1}%",
        rel * 100.0
    );
    assert!(
        (0.35..=0.65).contains(&a_slower),
        "one side slower in {a_slower} of pairs"
    );
    assert_eq!(admin_status(&run.admin)["state"], "streaming");

    // Loopback by default.
    let defaults = jetstream_ingestor::settings::Settings::default();
    assert!(
        defaults.admin.listen.ip().is_loopback(),
        "{}",
        defaults.admin.listen
    );
}

/// The binary with its stderr in a file and its admin API on a free port; `RUST_LOG=trace`.
struct Logged {
    ing: Ingestor,
    log: tempfile::NamedTempFile,
    admin: AdminClient,
}

impl Logged {
    fn spawn(env: &[(&'static str, String)]) -> Logged {
        let log = tempfile::NamedTempFile::new().unwrap();
        let port = free_port().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jetstream-ingestor"));
        cmd.arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.reopen().unwrap()))
            .stderr(Stdio::from(log.reopen().unwrap()));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("RUST_LOG", "trace").env(
            "JETSTREAM_INGESTOR__ADMIN__LISTEN",
            format!("127.0.0.1:{port}"),
        );
        let ing = Ingestor {
            child: cmd.spawn().unwrap(),
        };
        let admin = AdminClient::new(([127, 0, 0, 1], port).into(), None)
            .with_timeout(Duration::from_secs(5));
        wait_until(Duration::from_secs(30), "admin API up", || {
            admin.get("/healthz").is_ok_and(|r| r.status == 200)
        });
        Logged { ing, log, admin }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log.path()).unwrap()).into_owned()
    }
}

#[test]
fn a_wrong_redis_password_fails_closed_with_a_clear_error_and_never_reaches_the_logs() {
    let redis = redis(false);
    let lines = corpus(300, 1102);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), None);
    let (right, acl_right) = ("right-pass-5f0c2a9e71", "acl-pass-9d24b7e3c8");
    let mut con = redis.connection().unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("ingest")
        .arg("on")
        .arg(format!(">{acl_right}"))
        .arg("~*")
        .arg("+@all")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(right)
        .query(&mut con)
        .unwrap();
    let mut con = redis::Client::open(format!("redis://:{right}@127.0.0.1:{}", redis.port()))
        .unwrap()
        .get_connection()
        .unwrap();
    let port = redis.port();
    let secrets = [
        right,
        acl_right,
        "wrong-pass-3e8a61b0d2",
        "wrong-acl-7b1f0c94e6",
    ];
    let with_url = |url: String| {
        let mut env = ingestor_env(&server.url(), &url);
        env.push((
            "JETSTREAM_INGESTOR__JETSTREAM__INITIAL_CURSOR",
            first.to_string(),
        ));
        env
    };

    for (user, pass) in [("", secrets[2]), ("ingest", secrets[3]), ("nobody", right)] {
        let run = Logged::spawn(&with_url(format!("redis://{user}:{pass}@127.0.0.1:{port}")));
        wait_until(Duration::from_secs(20), "the auth error is logged", || {
            run.text().contains("AuthenticationFailed") || run.text().contains("WRONGPASS")
        });
        // Fails closed: never ready, nothing written, still there (it retries, so a fixed
        // password in the environment of a restarted container is picked up).
        let ready = run.admin.get("/readyz").unwrap();
        assert_eq!(ready.status, 503, "{}", ready.text());
        let keys: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert_eq!(keys, 0, "something was written with a wrong password");
        let mut run = run;
        assert!(run.ing.child.try_wait().unwrap().is_none());
        run.ing.sigterm();
        run.ing
            .wait_exit(Duration::from_secs(10))
            .expect("exits on SIGTERM");
        let text = run.text();
        for s in secrets {
            assert!(
                !text.contains(s),
                "a password is in the log of user {user:?}"
            );
        }
        let clear = text
            .lines()
            .find(|l| l.contains("AuthenticationFailed") || l.contains("WRONGPASS"))
            .unwrap();
        println!(
            "user {user:?}, wrong password: {} log lines, e.g. {clear}",
            text.lines().count()
        );
    }

    // The right password (ACL user) works, and is not logged either.
    let mut run = Logged::spawn(&with_url(format!(
        "redis://ingest:{acl_right}@127.0.0.1:{port}"
    )));
    wait_until(Duration::from_secs(60), "the replay lands", || {
        stored_cursor(&mut con, "jsi:") == Some(last)
    });
    run.ing.sigterm();
    let status = run.ing.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success());
    let text = run.text();
    for s in secrets {
        assert!(!text.contains(s), "a password is in the log of a good run");
    }
    let (missing, dups) = compare(&mut con, "jsi:", &lines);
    assert!(missing.is_empty() && dups.is_empty());
    println!(
        "right password: {} events landed, {} log lines (trace), no password in them",
        lines.len(),
        text.lines().count()
    );
}
