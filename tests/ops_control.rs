//! The Redis control stream of the real binary (`admin.control_stream = true`): `XADD
//! jsi:control * cmd pause|resume|restart [cursor N]` drives the supervisor, every command is
//! acknowledged once in `jsi:control:acks`, a malformed one gets an `error` ack, a command older
//! than the first start never runs, and a new process continues after the last command handled.
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
