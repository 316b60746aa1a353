//! The Redis control stream of the real binary (`admin.control_stream = true`): `XADD
//! jsi:control * cmd pause|resume|restart [cursor N]` drives the supervisor, every command is
//! acknowledged once in `jsi:control:acks`, a malformed one gets an `error` ack, a command older
//! than the first start never runs, and a new process continues after the last command handled.
//! An entry that is not a command (bytes that are not UTF-8, missing, unknown or repeated
//! fields, a bad cursor) gets an `error` ack naming its id and the problem, is counted by
//! reason and skipped: the commands after it run (hardening item 11).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ops_support;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use jetstream_ingestor::fake_jetstream::ConnectionEnd;
use ops_support::*;
use support::*;

fn xadd(con: &mut redis::Connection, fields: &[(&str, &str)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg("jsi:control").arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query(con).unwrap()
}

/// Waits for the ack of command `id`.
fn ack_of(con: &mut redis::Connection, id: &str) -> HashMap<String, String> {
    let mut found = None;
    wait_until(Duration::from_secs(10), "the command's ack", || {
        found = entries(con, "jsi:control:acks")
            .into_iter()
            .map(|(_, f)| f)
            .find(|f| f.get("id").is_some_and(|i| i == id));
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn control_stream_pauses_resumes_restarts_and_acks_each_command_once() {
    let redis = redis(false);
    let lines = corpus(60_000, 75);
    let times: Vec<u64> = lines.iter().map(|l| time_of(l).unwrap()).collect();
    let server = paced_fake(lines.clone(), 2_000);
    let mut env = ingestor_env(&server.url(), &redis.url());
    env.push((
        "JETSTREAM_INGESTOR__ADMIN__CONTROL_STREAM",
        "true".to_owned(),
    ));
    let cursor = times[0].to_string();
    let mut con = redis.connection().unwrap();
    // A command from before the first start is history, not an order.
    let old = xadd(&mut con, &[("cmd", "pause")]);
    let mut run = start(&["run", "--cursor", &cursor], &env, None);
    let a = &run.admin;
    wait_admin(a, Duration::from_secs(30), "streaming", |s| {
        s["state"] == "streaming"
    });
    wait_until(Duration::from_secs(10), "control stream positioned", || {
        redis::cmd("EXISTS")
            .arg("jsi:control:last")
            .query::<i64>(&mut con)
            .unwrap()
            == 1
    });

    let id = xadd(&mut con, &[("cmd", "pause")]);
    let ack = ack_of(&mut con, &id);
    assert_eq!(
        (ack["cmd"].as_str(), ack["result"].as_str()),
        ("pause", "ok")
    );
    wait_admin(a, Duration::from_secs(10), "paused", |s| {
        s["state"] == "paused"
    });
    wait_until(Duration::from_secs(10), "socket closed", || {
        matches!(
            server.connections()[0].end,
            ConnectionEnd::ClientClosed { .. }
        )
    });

    let id = xadd(&mut con, &[("cmd", "resume")]);
    assert_eq!(ack_of(&mut con, &id)["result"], "ok");
    wait_admin(a, Duration::from_secs(10), "streaming again", |s| {
        s["state"] == "streaming" && s["session_id"] == 2
    });

    let from = times[100].to_string();
    let id = xadd(&mut con, &[("cmd", "restart"), ("cursor", &from)]);
    let ack = ack_of(&mut con, &id);
    assert_eq!(
        (ack["result"].as_str(), ack["session_id"].as_str()),
        ("ok", "3")
    );
    wait_until(Duration::from_secs(10), "third dial", || {
        server.connections().len() == 3
    });
    assert_eq!(server.connections()[2].cursor, Some(times[100]));

    let id = xadd(&mut con, &[("cmd", "explode")]);
    let ack = ack_of(&mut con, &id);
    assert_eq!(ack["result"], "error");
    assert!(ack["message"].contains("unknown"), "{ack:?}");
    let last: String = redis::cmd("GET")
        .arg("jsi:control:last")
        .query(&mut con)
        .unwrap();
    assert_eq!(last, id);

    // A new process continues after the last command handled: nothing runs twice.
    run.ing.kill9();
    let run = start(&["run"], &env, None);
    let id = xadd(&mut con, &[("cmd", "resume")]);
    ack_of(&mut con, &id);
    let acks: Vec<String> = entries(&mut con, "jsi:control:acks")
        .into_iter()
        .map(|(_, f)| f["id"].clone())
        .collect();
    assert_eq!(acks.len(), 5, "each command acknowledged once: {acks:?}");
    assert!(
        !acks.contains(&old),
        "the command older than the first start never ran"
    );
    assert_eq!(admin_status(&run.admin)["state"], "streaming");
}

/// `XADD jsi:control * <fields>` with any bytes.
fn xadd_bytes(con: &mut redis::Connection, fields: &[(&[u8], &[u8])]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg("jsi:control").arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query(con).unwrap()
}

#[test]
fn a_bad_control_entry_gets_an_error_ack_and_later_commands_still_run() {
    let redis = redis(false);
    let lines = corpus(60_000, 76);
    let server = paced_fake(lines.clone(), 2_000);
    let mut env = ingestor_env(&server.url(), &redis.url());
    env.push((
        "JETSTREAM_INGESTOR__ADMIN__CONTROL_STREAM",
        "true".to_owned(),
    ));
    let cursor = time_of(&lines[0]).unwrap().to_string();
    let mut con = redis.connection().unwrap();
    let run = start(&["run", "--cursor", &cursor], &env, None);
    let a = &run.admin;
    wait_admin(a, Duration::from_secs(30), "streaming", |s| {
        s["state"] == "streaming"
    });
    wait_until(Duration::from_secs(10), "control stream positioned", || {
        redis::cmd("EXISTS")
            .arg("jsi:control:last")
            .query::<i64>(&mut con)
            .unwrap()
            == 1
    });

    // The entry first: a binary value; then every other kind of bad entry; then pause.
    let bad: Vec<(String, &str, &str)> = vec![
        (
            xadd_bytes(&mut con, &[(b"cmd", b"\xff\xfepause")]),
            "not_utf8",
            "field \"cmd\" is not UTF-8 (bytes ff fe 70 61 75 73 65, 7 in all)",
        ),
        (
            xadd_bytes(&mut con, &[(b"\xc3md", b"pause")]),
            "not_utf8",
            "a field name is not UTF-8 (bytes c3 6d 64, 3 in all)",
        ),
        (
            xadd(&mut con, &[("verb", "pause")]),
            "unknown_field",
            "unknown field \"verb\" (fields: cmd, cursor)",
        ),
        (
            xadd(&mut con, &[("cursor", "1")]),
            "missing_cmd",
            "missing field \"cmd\"",
        ),
        (
            xadd(&mut con, &[("cmd", "pause"), ("cursor", "1")]),
            "unknown_field",
            "field \"cursor\" only goes with cmd restart, not pause",
        ),
        (
            xadd(&mut con, &[("cmd", "restart"), ("cursor", "{\"t\":1}")]),
            "bad_cursor",
            "field \"cursor\" \"{\\\"t\\\":1}\" is not a time_us",
        ),
        (
            xadd(&mut con, &[("cmd", "pause"), ("cmd", "resume")]),
            "duplicate_field",
            "field \"cmd\" appears twice",
        ),
        (
            xadd(&mut con, &[("cmd", "explode")]),
            "unknown_cmd",
            "unknown cmd \"explode\" (restart, pause, resume)",
        ),
    ];
    let pause = xadd(&mut con, &[("cmd", "pause")]);
    let ack = ack_of(&mut con, &pause);
    assert_eq!(
        (ack["cmd"].as_str(), ack["result"].as_str()),
        ("pause", "ok"),
        "the command after the bad entries ran"
    );
    wait_admin(a, Duration::from_secs(10), "paused", |s| {
        s["state"] == "paused"
    });

    let acks = entries(&mut con, "jsi:control:acks");
    assert_eq!(acks.len(), bad.len() + 1, "one ack per entry: {acks:?}");
    for ((id, _, problem), (_, ack)) in bad.iter().zip(&acks) {
        assert_eq!(&ack["id"], id, "acks in entry order");
        assert_eq!(ack["result"], "error", "{ack:?}");
        assert_eq!(ack["message"], format!("entry {id}: {problem}"));
    }
    assert_eq!(
        acks[0].1["cmd"], "\u{fffd}\u{fffd}pause",
        "raw cmd, shown lossily"
    );
    assert_eq!(acks[bad.len()].1["id"], pause);
    let last: String = redis::cmd("GET")
        .arg("jsi:control:last")
        .query(&mut con)
        .unwrap();
    assert_eq!(last, pause);

    // Counted: each reason, and the pause ran exactly once.
    let metrics = a.get("/metrics").unwrap().text();
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    for (reason, n) in [
        ("not_utf8", 2),
        ("unknown_field", 2),
        ("missing_cmd", 1),
        ("bad_cursor", 1),
        ("duplicate_field", 1),
        ("unknown_cmd", 1),
    ] {
        let series = format!("jetstream_ingestor_control_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&series), n, "{series}");
    }
    let pauses = value("jetstream_ingestor_control_commands_total{cmd=\"pause\",outcome=\"ok\"}");
    let invalid =
        value("jetstream_ingestor_control_commands_total{cmd=\"invalid\",outcome=\"error\"}");
    assert_eq!((pauses, invalid), (1, 8));
    assert!(metrics.contains("# HELP jetstream_ingestor_control_rejected_total"));
    assert_eq!(
        value("jetstream_ingestor_control_errors_total"),
        0,
        "no Redis error loop"
    );
}
