//! `replay` beside a running `run`: the replay serves no admin API unless asked (`--admin`
//! or an `admin.listen` given in the config file or environment), so it does not fight the
//! `run` for the default 127.0.0.1:8089: it runs to completion while another process holds
//! that port. With `--admin 127.0.0.1:0` it serves one on a free port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use support::*;

/// Holds 127.0.0.1:8089 for the test, like a `run` with the default `admin.listen`. If
/// another process (a running ingestor, another test) holds it already, so much the better.
fn hold_default_admin_port() -> Option<TcpListener> {
    match TcpListener::bind("127.0.0.1:8089") {
        Ok(l) => Some(l),
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
            None
        }
    }
}

/// `replay --from first --until last` (plus `extra`) with the environment of `ingestor_env`
/// minus its admin address: `admin.listen` is left at its default, 127.0.0.1:8089.
fn replay(endpoint: &str, redis_url: &str, first: u64, last: u64, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jetstream-ingestor"));
    cmd.args(["replay", "--from", &first.to_string(), "--until"])
        .arg(last.to_string())
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("JETSTREAM_INGESTOR__ADMIN__LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in ingestor_env(endpoint, redis_url) {
        if k != "JETSTREAM_INGESTOR__ADMIN__LISTEN" {
            cmd.env(k, v);
        }
    }
    cmd.output().expect("replay runs")
}

#[test]
fn a_replay_runs_to_completion_while_another_process_holds_the_admin_port() {
    let _held = hold_default_admin_port();
    assert!(
        TcpListener::bind("127.0.0.1:8089").is_err(),
        "8089 is held during the replay"
    );
    let redis = redis(false);
    let lines = corpus(2_000, 95);
    let server = fake(lines.clone(), None);
    let (first, last) = (
        time_of(&lines[0]).unwrap(),
        time_of(lines.last().unwrap()).unwrap(),
    );

    let out = replay(&server.url(), &redis.url(), first, last, &[]);
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay exit {:?}: {logs}", out.status);
    let mut con = redis.connection().unwrap();
    assert_eq!(stored_cursor(&mut con, "jsi:"), Some(last), "{logs}");
    assert_exactly_once(&mut con, "jsi:", &lines);
    assert!(logs.contains("replay: no admin API"), "{logs}");
    assert!(!logs.contains("admin API listening"), "{logs}");
    assert!(
        !logs.contains("\x1b["),
        "no colour codes on a pipe: {logs:?}"
    );

    // Asked for one: served on a free port beside the held 8089, and the replay still ends.
    let out = replay(
        &server.url(),
        &redis.url(),
        first,
        last,
        &["--admin", "127.0.0.1:0"],
    );
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay exit {:?}: {logs}", out.status);
    let listening = logs
        .lines()
        .find(|l| l.contains("admin API listening"))
        .unwrap_or_else(|| panic!("no admin API line: {logs}"));
    assert!(listening.contains("127.0.0.1:"), "{listening}");
    assert!(!listening.contains("127.0.0.1:8089"), "{listening}");
}
