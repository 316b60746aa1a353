//! The admin API of the real binary against a private Redis and a paced fake Jetstream:
//! restart during a replay (from the committed cursor, then from an explicit one: nothing lost
//! or duplicated), filters sent as `options_update` on the live connection, the bearer-token
//! rules (identical 401s, body limit, non-loopback refusal), and the `admin` CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ops_support;
mod support;

use std::process::Command;
use std::time::Duration;

use jetstream_ingestor::admin::client::Response;
use jetstream_ingestor::fake_jetstream::ConnectionEnd;
use ops_support::*;
use serde_json::json;
use support::*;

const REWIND_US: u64 = 100_000;

fn sigterm_exits_0(run: &mut Running) {
    run.ing.sigterm();
    let status = run
        .ing
        .wait_exit(Duration::from_secs(15))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn restart_over_http_during_a_replay_dials_from_the_committed_cursor_then_from_a_chosen_one() {
    let redis = redis(false);
    let lines = corpus(12_000, 61);
    let times: Vec<u64> = lines.iter().map(|l| time_of(l).unwrap()).collect();
    let (first, last) = (times[0], *times.last().unwrap());
    let server = paced_fake(lines.clone(), 3_000);
    let mut env = ingestor_env(&server.url(), &redis.url());
    env.push(("JETSTREAM_INGESTOR__JETSTREAM__REWIND", "100ms".to_owned()));
    let cursor = first.to_string();
    let mut run = start(&["run", "--cursor", &cursor], &env, Some(TOKEN));
    let mut con = redis.connection().unwrap();

    wait_until(Duration::from_secs(30), "a third of the replay", || {
        stored_cursor(&mut con, "jsi:").is_some_and(|c| c >= times[4_000])
    });
    let before = stored_cursor(&mut con, "jsi:").unwrap();
    let r = run.admin.post("/admin/restart", None).unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        r.json().unwrap()["session_id"],
        2,
        "answers the next session id"
    );
    wait_until(Duration::from_secs(10), "second dial", || {
        server.connections().len() == 2
    });
    assert_ne!(
        server.connections()[0].end,
        ConnectionEnd::Open,
        "the old session is gone"
    );
    let dialed = server.connections()[1]
        .cursor
        .expect("dial carries a cursor")
        + REWIND_US;
    let after = stored_cursor(&mut con, "jsi:").unwrap();
    assert!(
        times.binary_search(&dialed).is_ok() && (before..=after).contains(&dialed),
        "the new session dials from a committed cursor ({dialed}, committed {before}..={after}) minus the rewind"
    );

    wait_until(Duration::from_secs(30), "two thirds of the replay", || {
        stored_cursor(&mut con, "jsi:").is_some_and(|c| c >= times[8_000])
    });
    let from = times[2_000];
    let r = run
        .admin
        .post("/admin/restart", Some(&json!({ "cursor": from })))
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json().unwrap()["session_id"], 3);
    wait_until(Duration::from_secs(10), "third dial", || {
        server.connections().len() == 3
    });
    assert_eq!(
        server.connections()[2].cursor,
        Some(from),
        "a restart with a cursor dials from exactly that cursor"
    );
    let st = wait_admin(
        &run.admin,
        Duration::from_secs(60),
        "the replay from the chosen cursor reaches the end",
        |s| s["committed_cursor"] == last && s["state"] == "streaming",
    );
    assert!(
        st["jobs_skipped"].as_u64().unwrap() >= 6_000 - 2_000,
        "the replayed range was recognised as committed: {st:#}"
    );
    assert_eq!(st["session_id"], 3);
    sigterm_exits_0(&mut run);
    assert_exactly_once(&mut con, "jsi:", &lines);
}

#[test]
fn filters_update_is_an_options_update_on_the_live_connection() {
    let redis = redis(false);
    let lines = corpus(12_000, 62);
    let times: Vec<u64> = lines.iter().map(|l| time_of(l).unwrap()).collect();
    let server = paced_fake(lines.clone(), 3_000);
    let env = ingestor_env(&server.url(), &redis.url());
    let cursor = times[0].to_string();
    let mut run = start(&["run", "--cursor", &cursor], &env, Some(TOKEN));
    let mut con = redis.connection().unwrap();
    wait_until(Duration::from_secs(30), "some events committed", || {
        stored_cursor(&mut con, "jsi:").is_some_and(|c| c >= times[2_000])
    });

    let like = "app.bsky.feed.like";
    let r = run
        .admin
        .put("/admin/filters", &json!({ "wantedCollections": [like] }))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // The fake counts the update when it reads it, and records where the new filter took
    // effect when its sender next looks: wait for the second, then check the first.
    wait_until(Duration::from_secs(10), "the new filter in effect", || {
        !server.connections()[0].filter_changes_at.is_empty()
    });
    assert_eq!(server.connections()[0].options_updates, 1);
    let refused = run
        .admin
        .put(
            "/admin/filters",
            &json!({ "wantedCollections": ["not an nsid"] }),
        )
        .unwrap();
    assert_eq!(refused.status, 400, "invalid filters are refused");
    assert!(refused.json().unwrap()["error"].is_string());
    let typo = run
        .admin
        .put("/admin/filters", &json!({ "wantedCollection": [like] }))
        .unwrap();
    assert_eq!(
        typo.status, 400,
        "an unknown key is refused, never 'everything'"
    );

    // After the filter took effect the fake sends likes and identity/account events only.
    let wanted = |l: &String| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["kind"] != "commit" || v["commit"]["collection"] == like
    };
    let switch = server.connections()[0].filter_changes_at[0] as usize;
    assert!(
        switch >= 2_000 && switch < lines.len() - 1_000,
        "switched mid-stream at {switch}"
    );
    let last_wanted = times[lines.iter().rposition(wanted).unwrap()];
    wait_until(
        Duration::from_secs(30),
        "the last wanted event committed",
        || stored_cursor(&mut con, "jsi:") == Some(last_wanted),
    );
    let conns = server.connections();
    assert_eq!(conns.len(), 1, "no reconnect");
    assert_eq!(
        conns[0].options_updates, 1,
        "refused updates never reach Jetstream"
    );

    let boundary = times[switch - 1];
    let records = read_stream(&mut con, "jsi:records");
    let later: Vec<_> = records
        .iter()
        .filter(|e| e["time_us"].parse::<u64>().unwrap() > boundary)
        .collect();
    assert!(
        later.iter().all(|e| e["collection"] == like),
        "only likes after the switch"
    );
    let expected = lines[switch..]
        .iter()
        .filter(|l| wanted(l) && l.contains("\"kind\":\"commit\""))
        .count();
    assert_eq!(later.len(), expected, "every like after the switch landed");
    assert!(expected > 1_000);
    let st = admin_status(&run.admin);
    assert_eq!(st["consecutive_failures"], 0);
    sigterm_exits_0(&mut run);
}

/// Every header but `date`, and the body.
fn shape(r: &Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let headers = r
        .headers
        .iter()
        .filter(|(k, _)| k != "date")
        .cloned()
        .collect();
    (r.status, headers, r.body.clone())
}

#[test]
fn bad_tokens_get_one_identical_401_and_the_right_token_works() {
    let redis = redis(false);
    let lines = corpus(2_000, 63);
    let server = fake(lines.clone(), None);
    let env = ingestor_env(&server.url(), &redis.url());
    let cursor = time_of(&lines[0]).unwrap().to_string();
    let run = start(&["run", "--cursor", &cursor], &env, Some(TOKEN));
    let a = &run.admin;

    let same_length_wrong = format!("Bearer {}", "x".repeat(TOKEN.len()));
    let prefix = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let longer = format!("Bearer {TOKEN}0");
    let basic = format!("Basic {TOKEN}");
    let bad: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("Authorization", same_length_wrong.as_str())],
        vec![("Authorization", prefix.as_str())],
        vec![("Authorization", longer.as_str())],
        vec![("Authorization", "Bearer x")],
        vec![("Authorization", basic.as_str())],
        vec![("Authorization", TOKEN)],
    ];
    let reference = shape(&a.raw("GET", "/admin/status", &[], b"").unwrap());
    assert_eq!(reference.0, 401);
    assert!(reference.2.is_empty(), "401 has an empty body");
    for headers in &bad {
        for (method, path) in [
            ("GET", "/admin/status"),
            ("POST", "/admin/restart"),
            ("POST", "/admin/pause"),
            ("POST", "/admin/resume"),
            ("PUT", "/admin/filters"),
        ] {
            let r = a.raw(method, path, headers, b"").unwrap();
            assert_eq!(shape(&r), reference, "{method} {path} with {headers:?}");
        }
    }
    // Refused before the body is read: an unauthenticated huge body is still a bare 401.
    let huge = vec![b'{'; 20 * 1024];
    let r = a.raw("PUT", "/admin/filters", &[], &huge).unwrap();
    assert_eq!(shape(&r), reference);

    // None of that paused or restarted anything; the right token works.
    let st = wait_admin(a, Duration::from_secs(30), "streaming", |s| {
        s["state"] == "streaming"
    });
    assert_eq!(server.connections().len(), 1);
    assert_eq!(st["session_id"], 1);
    for key in [
        "state",
        "endpoint",
        "committed_cursor",
        "lag_seconds",
        "consecutive_failures",
        "last_error",
        "events_per_second",
        "jobs_per_second",
        "dead_letters",
        "session_id",
        "uptime_secs",
        "instance",
        "version",
    ] {
        assert!(st.get(key).is_some(), "status has {key}: {st:#}");
    }
    let auth = format!("Bearer {TOKEN}");
    let r = a
        .raw(
            "PUT",
            "/admin/filters",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &huge,
        )
        .unwrap();
    assert_eq!(r.status, 413, "body limit");
    let r = a
        .raw(
            "POST",
            "/admin/restart",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            b"{\"cursor\": \"x\"}",
        )
        .unwrap();
    assert_eq!(r.status, 400);
    let r = a
        .raw(
            "POST",
            "/admin/restart",
            &[("Authorization", &auth)],
            b"{\"cursor\": \"x\"}",
        )
        .unwrap();
    assert_eq!(
        r.status, 415,
        "a body without Content-Type: application/json"
    );

    // Probes: /healthz public; /readyz says only ready/not ready without the token; /metrics
    // public by default.
    let r = a.raw("GET", "/healthz", &[], b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let r = a.raw("GET", "/readyz", &[], b"").unwrap();
    assert!(
        r.json().is_none(),
        "no details without the token: {}",
        r.text()
    );
    let r = a.get("/readyz").unwrap();
    assert!(
        r.json().unwrap().get("state").is_some(),
        "details with the token"
    );
    let r = a.raw("GET", "/metrics", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.text().contains(TOKEN));

    // The CLI: same config (token from the environment), readable output, exit codes.
    let bin = env!("CARGO_BIN_EXE_jetstream-ingestor");
    let addr = a.addr().to_string();
    let cli = |token: &str, args: &[&str]| {
        Command::new(bin)
            .arg("admin")
            .args(["--addr", &addr])
            .args(args)
            .env("JETSTREAM_INGESTOR__ADMIN__TOKEN", token)
            .output()
            .unwrap()
    };
    let out = cli(TOKEN, &["status"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("state        streaming"), "{stdout}");
    assert!(stdout.contains("lag"), "{stdout}");
    let out = cli("a-wrong-token-of-some-length", &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = cli(TOKEN, &["pause"]);
    assert!(out.status.success());
    wait_admin(a, Duration::from_secs(10), "paused by the CLI", |s| {
        s["state"] == "paused"
    });
    let out = cli(TOKEN, &["resume"]);
    assert!(out.status.success());
    let out = cli(
        TOKEN,
        &[
            "filters",
            "--collections",
            "app.bsky.feed.post,app.bsky.graph.*",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(TOKEN, &["filters", "--collections", "bad nsid"]);
    assert_eq!(out.status.code(), Some(1));
    let out = cli(TOKEN, &["restart", "--cursor", &cursor]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("restart accepted: session"));
    let out = cli(TOKEN, &["healthcheck"]);
    assert!(out.status.success());
    drop(run);
    let out = cli(TOKEN, &["healthcheck"]);
    assert_eq!(out.status.code(), Some(1), "no process, unhealthy");
}

#[test]
fn metrics_can_require_the_token() {
    let redis = redis(false);
    let server = fake(corpus(100, 64), None);
    let mut env = ingestor_env(&server.url(), &redis.url());
    env.push((
        "JETSTREAM_INGESTOR__ADMIN__METRICS_REQUIRE_TOKEN",
        "true".to_owned(),
    ));
    let run = start(&["run"], &env, Some(TOKEN));
    let r = run.admin.raw("GET", "/metrics", &[], b"").unwrap();
    assert_eq!((r.status, r.body.len()), (401, 0));
    let r = run.admin.get("/metrics").unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn non_loopback_listen_without_a_token_refuses_to_start() {
    let redis = redis(false);
    let bin = env!("CARGO_BIN_EXE_jetstream-ingestor");
    let out = Command::new(bin)
        .arg("run")
        .env("JETSTREAM_INGESTOR__REDIS__URL", redis.url())
        .env("JETSTREAM_INGESTOR__ADMIN__LISTEN", "0.0.0.0:0")
        .env_remove("JETSTREAM_INGESTOR__ADMIN__TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin.listen") && stderr.contains("admin.token"),
        "{stderr}"
    );

    // token_file works, and setting both is refused.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let check = |extra: &[(&str, &str)]| {
        let mut c = Command::new(bin);
        c.arg("check-config")
            .env("JETSTREAM_INGESTOR__ADMIN__LISTEN", "0.0.0.0:8089")
            .env("JETSTREAM_INGESTOR__ADMIN__TOKEN_FILE", &file);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let ok = check(&[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let printed = String::from_utf8_lossy(&ok.stdout);
    assert!(
        !printed.contains(TOKEN),
        "check-config never prints the token"
    );
    let both = check(&[("JETSTREAM_INGESTOR__ADMIN__TOKEN", TOKEN)]);
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("admin.token_file"));
}
