//! The demo as a newcomer runs it (`jetstream-ingestor demo`, what `scripts/demo.sh` runs):
//! its closing hint matches what is still running once it has exited (the private Redis is
//! stopped, or kept with `--keep-redis` and then reachable and stoppable as printed), and its
//! logs, written to a pipe, carry no ANSI colour codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `demo --seconds 1` (plus `extra`) with its own private Redis, stdout and stderr piped.
fn demo(extra: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_jetstream-ingestor"))
        .args(["demo", "--seconds", "1"])
        .args(extra)
        .env_remove("REDIS_URL")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("the demo runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo exit {:?}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The number after `marker` in `text` (blanks between them skipped).
fn number_after(text: &str, marker: &str) -> u32 {
    let rest = &text[text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {text}"))
        + marker.len()..];
    rest.trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("a number after {marker:?} in {text}"))
}

fn answers(port: u32) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
        return false;
    };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return false;
    };
    redis::cmd("PING").query::<String>(&mut con).is_ok()
}

/// Kills a kept redis-server if the test fails before stopping it as the hint says.
struct Reaper(i32);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn without_keep_redis_the_hint_points_at_no_stopped_server_and_logs_have_no_colour() {
    let out = demo(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    let port = number_after(&text, "started a private redis-server on port ");
    assert!(!answers(port), "the private server is stopped on exit");
    let hint = &text[text.find("what landed in Redis").unwrap()..];
    assert!(
        !hint.contains(&format!("-p {port}")) && !hint.contains(&format!(":{port} ")),
        "no command after the report points at the stopped server:\n{hint}"
    );
    assert!(hint.contains("--keep-redis"), "{hint}");
    assert!(
        number_after(&text, "jsi:records") > 0,
        "jobs landed:\n{text}"
    );

    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("INFO"), "the demo logs at info: {logs}");
    assert!(
        !logs.contains("\x1b["),
        "logs to a pipe carry no ANSI escape codes: {logs:?}"
    );
}

#[test]
fn with_keep_redis_the_server_outlives_the_demo_and_stops_as_the_hint_says() {
    let out = demo(&["--keep-redis"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let port = number_after(&text, "keeps running on port ");
    let pid = number_after(&text, "(pid ");
    let _reaper = Reaper(i32::try_from(pid).unwrap());
    let dir_line = text
        .lines()
        .find_map(|l| l.split_once("data in ").map(|(_, d)| d.trim().to_owned()))
        .unwrap();
    let dir = PathBuf::from(&dir_line);
    assert!(dir.is_dir(), "the data directory stays: {}", dir.display());

    // The hint's read command works: the jobs are there after the demo has exited.
    assert!(
        text.contains(&format!(
            "redis-cli -p {port} XRANGE jsi:records - + COUNT 5"
        )),
        "{text}"
    );
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg("jsi:records")
        .query(&mut con)
        .unwrap();
    assert!(len > 0, "jobs readable after the demo exited");

    // Its stop command: `shutdown nosave`, then the directory.
    assert!(
        text.contains(&format!(
            "redis-cli -p {port} shutdown nosave && rm -rf {dir_line}"
        )),
        "{text}"
    );
    let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut con);
    support_wait(|| !answers(port), "the kept server stops on shutdown");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn support_wait(mut f: impl FnMut() -> bool, what: &str) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
