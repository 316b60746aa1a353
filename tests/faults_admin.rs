//! Fault suite, attacks on the operating surfaces: the admin token comparison leaks no
//! timing (a token wrong in its first byte costs what one wrong in its last byte costs, in
//! process and over HTTP against the binary, compared with robust statistics), the admin API
//! listens on loopback by default; and a Redis that wants a password (`requirepass`, or an
//! ACL user) refuses a wrong one: the ingestor fails closed (writes nothing, not ready) with
//! a clear error, and no password ever reaches its logs, even at `trace`.
//!
//! A web page cannot drive the API (hardening item 8): a foreign `Host` (DNS rebinding) or
//! `Origin` gets 403 and a non-JSON body 415, with and without a token, each counted in
//! `jetstream_ingestor_admin_refused_total{reason}`, while probes answer under any name and
//! the CLI still works; `admin.allowed_hosts` needs a token. A numeric-looking token from the
//! environment is the token byte for byte (item 9).
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
        let logged = Logged::start(env);
        wait_until(Duration::from_secs(30), "admin API up", || {
            logged.admin.get("/healthz").is_ok_and(|r| r.status == 200)
        });
        logged
    }

    /// Started, without waiting for its admin API (a process expected to exit).
    fn start(env: &[(&'static str, String)]) -> Logged {
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
        let mut run = Logged::start(&with_url(format!("redis://{user}:{pass}@127.0.0.1:{port}")));
        // Fails closed at start: waiting does not mend a wrong password (a container
        // restarted with the fixed one starts), so it exits 2 with the reason, having
        // written nothing.
        let status = run
            .ing
            .wait_exit(Duration::from_secs(30))
            .expect("exits on a refused password");
        assert_eq!(status.code(), Some(2), "{}", run.text());
        let keys: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert_eq!(keys, 0, "something was written with a wrong password");
        let text = run.text();
        assert!(
            text.contains("Redis refused the user and password of redis.url"),
            "{text}"
        );
        for s in secrets {
            assert!(
                !text.contains(s),
                "a password is in the log of user {user:?}"
            );
        }
        let clear = text
            .lines()
            .find(|l| l.contains("Redis refused the user and password"))
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

/// The value of one sample line of the Prometheus text (`name{labels}`), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn refused(admin: &AdminClient, reason: &str) -> f64 {
    let text = admin.get("/metrics").unwrap().text();
    sample(
        &text,
        &format!("jetstream_ingestor_admin_refused_total{{reason=\"{reason}\"}}"),
    )
}

#[test]
fn a_web_page_cannot_drive_the_admin_api_without_a_token() {
    let redis = redis(false);
    let lines = corpus(2_000, 1103);
    let server = fake(lines.clone(), None);
    let env = ingestor_env(&server.url(), &redis.url());
    let cursor = time_of(&lines[0]).unwrap().to_string();
    let run = start(&["run", "--cursor", &cursor], &env, None);
    let a = &run.admin;
    let port = a.addr().port();
    wait_admin(a, Duration::from_secs(30), "streaming", |s| {
        s["state"] == "streaming"
    });
    let evil_host = format!("evil.example:{port}");
    let evil_origin = format!("http://evil.example:{port}");
    let own_origin = format!("http://127.0.0.1:{port}");

    // The attack of the issue: a page posts text/plain cross-origin, or, after rebinding its
    // name to 127.0.0.1, sends its own name as Host.
    let r = a
        .raw(
            "POST",
            "/admin/restart",
            &[
                ("Host", &evil_host),
                ("Origin", &evil_origin),
                ("Content-Type", "text/plain"),
            ],
            b"{}",
        )
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    let msg = r.json().unwrap()["error"].as_str().unwrap().to_owned();
    assert!(
        msg.contains(&format!("Host header \"{evil_host}\"")),
        "{msg}"
    );
    let r = a
        .raw("GET", "/admin/status", &[("Host", &evil_host)], b"")
        .unwrap();
    assert_eq!(r.status, 403, "DNS rebinding: {}", r.text());
    let r = a
        .raw(
            "POST",
            "/admin/pause",
            &[("Host", "localhost.evil.example")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 403);
    // Cross-origin with a good Host: refused, whatever the content type.
    for ct in ["text/plain", "application/json"] {
        let r = a
            .raw(
                "POST",
                "/admin/pause",
                &[("Origin", &evil_origin), ("Content-Type", ct)],
                b"{}",
            )
            .unwrap();
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().contains("Origin header"), "{}", r.text());
    }
    let r = a
        .raw("POST", "/admin/pause", &[("Origin", "null")], b"")
        .unwrap();
    assert_eq!(r.status, 403);
    // A body that is not JSON: 415, with or without a declared type.
    let r = a
        .raw(
            "POST",
            "/admin/restart",
            &[("Content-Type", "text/plain")],
            b"{}",
        )
        .unwrap();
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(
        r.text().contains("Content-Type header \\\"text/plain\\\""),
        "{}",
        r.text()
    );
    let r = a
        .raw(
            "POST",
            "/admin/restart",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"cursor=1",
        )
        .unwrap();
    assert_eq!(r.status, 415);
    let r = a.raw("POST", "/admin/restart", &[], b"{}").unwrap();
    assert_eq!(r.status, 415, "a body without a Content-Type");
    assert!(
        r.text().contains("Content-Type header missing"),
        "{}",
        r.text()
    );

    // Nothing of that reached the pipeline.
    let st = admin_status(a);
    assert_eq!(
        (st["state"].as_str(), st["session_id"].as_u64()),
        (Some("streaming"), Some(1))
    );
    assert_eq!(server.connections().len(), 1);
    assert_eq!(refused(a, "host"), 3.0);
    assert_eq!(refused(a, "origin"), 3.0);
    assert_eq!(refused(a, "content_type"), 3.0);

    // Loopback names, the API's own origin, JSON bodies and bare commands pass.
    for host in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let r = a
            .raw("GET", "/admin/status", &[("Host", &host)], b"")
            .unwrap();
        assert_eq!(r.status, 200, "Host {host}");
    }
    let r = a
        .raw(
            "PUT",
            "/admin/filters",
            &[
                ("Origin", &own_origin),
                ("Content-Type", "application/json; charset=utf-8"),
            ],
            b"{\"wantedCollections\": []}",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = a.raw("POST", "/admin/pause", &[], b"").unwrap();
    assert_eq!(r.status, 202, "curl -X POST without a body: {}", r.text());
    wait_admin(a, Duration::from_secs(10), "paused", |s| {
        s["state"] == "paused"
    });

    // Probes answer under any name (orchestrators probe by pod IP).
    let r = a
        .raw("GET", "/healthz", &[("Host", &evil_host)], b"")
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let r = a
        .raw("GET", "/metrics", &[("Host", &evil_host)], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("jetstream_ingestor_admin_refused_total"));
    assert!(
        r.text()
            .contains("# HELP jetstream_ingestor_admin_refused_total")
    );
    // /readyz: the bare answer under a foreign name, details only under its own.
    let r = a
        .raw("GET", "/readyz", &[("Host", &evil_host)], b"")
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (503, "not ready\n"));
    let r = a.raw("GET", "/readyz", &[], b"").unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.json().unwrap()["state"], "paused", "{}", r.text());

    // The CLI (no token configured) sends its own Host and JSON: it still works.
    let bin = env!("CARGO_BIN_EXE_jetstream-ingestor");
    let addr = a.addr().to_string();
    let cli = |args: &[&str]| {
        Command::new(bin)
            .arg("admin")
            .args(["--addr", &addr])
            .args(args)
            .env_remove("JETSTREAM_INGESTOR__ADMIN__TOKEN")
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = cli(args);
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["resume"]);
    wait_admin(a, Duration::from_secs(10), "resumed by the CLI", |s| {
        s["session_id"] == 2 && s["state"] == "streaming"
    });
    let said = ok(&["restart", "--cursor", &cursor]);
    assert!(said.contains("restart accepted: session 3"), "{said}");
    wait_admin(a, Duration::from_secs(10), "restarted by the CLI", |s| {
        s["session_id"] == 3
    });
    ok(&["filters", "--collections", "app.bsky.feed.post"]);
    assert!(ok(&["status"]).contains("state "));
    assert_eq!(
        refused(a, "host") + refused(a, "origin") + refused(a, "content_type"),
        9.0
    );
}

#[test]
fn with_a_token_foreign_hosts_are_still_refused_unless_allowed() {
    let redis = redis(false);
    let server = fake(corpus(100, 1104), None);
    let mut env = ingestor_env(&server.url(), &redis.url());
    env.push((
        "JETSTREAM_INGESTOR__ADMIN__ALLOWED_HOSTS",
        "ingestor.internal,10.1.2.3".to_owned(),
    ));
    let run = start(&["run"], &env, Some(TOKEN));
    let a = &run.admin;
    let auth = format!("Bearer {TOKEN}");
    let get = |host: &str| {
        a.raw(
            "GET",
            "/admin/status",
            &[("Host", host), ("Authorization", &auth)],
            b"",
        )
        .unwrap()
        .status
    };
    assert_eq!(get("ingestor.internal:8089"), 200);
    assert_eq!(get("INGESTOR.INTERNAL"), 200);
    assert_eq!(get("10.1.2.3:80"), 200);
    assert_eq!(get("evil.example"), 403);
    assert_eq!(get("10.1.2.4:8089"), 403);
    // The Host check comes first: a foreign name learns nothing about the token.
    let r = a
        .raw("GET", "/admin/status", &[("Host", "evil.example")], b"")
        .unwrap();
    assert_eq!(r.status, 403);
    // Then the token, then the body type.
    let r = a
        .raw(
            "POST",
            "/admin/restart",
            &[("Content-Type", "text/plain")],
            b"{}",
        )
        .unwrap();
    assert_eq!(r.status, 401);
    let r = a
        .raw(
            "POST",
            "/admin/restart",
            &[("Content-Type", "text/plain"), ("Authorization", &auth)],
            b"{}",
        )
        .unwrap();
    assert_eq!(r.status, 415);
    assert_eq!(refused(a, "host"), 3.0);
    assert_eq!(refused(a, "content_type"), 1.0);

    // allowed_hosts without a token is refused at start, naming both keys.
    let out = Command::new(env!("CARGO_BIN_EXE_jetstream-ingestor"))
        .arg("check-config")
        .env(
            "JETSTREAM_INGESTOR__ADMIN__ALLOWED_HOSTS",
            "ingestor.internal",
        )
        .env_remove("JETSTREAM_INGESTOR__ADMIN__TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin.allowed_hosts") && stderr.contains("admin.token"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_jetstream-ingestor"))
        .arg("check-config")
        .env(
            "JETSTREAM_INGESTOR__ADMIN__ALLOWED_HOSTS",
            "ok.example,http://x",
        )
        .env("JETSTREAM_INGESTOR__ADMIN__TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin.allowed_hosts[1] \"http://x\""),
        "{stderr}"
    );
}

#[test]
fn a_numeric_looking_token_from_the_environment_is_the_token_byte_for_byte() {
    let redis = redis(false);
    let server = fake(corpus(100, 1105), None);
    let env = ingestor_env(&server.url(), &redis.url());
    // The token, and one that an integer parse would shorten.
    for (token, mangled) in [
        ("12345678901234567890", "12345678901234567000"),
        ("00000000000000000042", "42"),
    ] {
        let run = start(&["run"], &env, Some(token));
        let status_with = |t: &str| {
            let h = format!("Bearer {t}");
            run.admin
                .raw("GET", "/admin/status", &[("Authorization", &h)], b"")
                .unwrap()
                .status
        };
        assert_eq!(status_with(token), 200, "the real token {token}");
        assert_eq!(
            status_with(mangled),
            401,
            "the float/integer form {mangled}"
        );
    }
}
