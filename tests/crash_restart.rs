//! kill -9 of the ingestor process at several seeded points of a replay, then restart: no
//! event missing, none duplicated (the streams compared with the source file), and SIGTERM
//! at the end exits 0 within 10 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use rand::{RngExt as _, SeedableRng as _};
use support::*;

#[test]
fn kill9_at_seeded_points_then_restart_loses_and_duplicates_nothing() {
    let redis = redis(false);
    let lines = corpus(40_000, 51);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake(lines.clone(), None);
    let mut env = ingestor_env(&server.url(), &redis.url());
    env.push(("JETSTREAM_INGESTOR__JETSTREAM__REWIND", "100ms".to_owned()));
    let cursor_arg = first.to_string();
    let args = ["run", "--cursor", cursor_arg.as_str()];
    let mut con = redis.connection().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(51);

    let kills = 6;
    for k in 1..=kills {
        let mut ing = Ingestor::spawn(&args, &env);
        // Kill somewhere in the k-th slice of the replay, at a seeded offset.
        let target = first
            + (last - first) * k / (kills + 1)
            + rng.random_range(0..(last - first) / (kills * 4));
        let start = Instant::now();
        loop {
            if stored_cursor(&mut con, "jsi:").is_some_and(|c| c >= target) {
                break;
            }
            assert!(
                ing.child.try_wait().unwrap().is_none(),
                "ingestor exited early"
            );
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no progress towards {target}"
            );
            std::thread::sleep(Duration::from_millis(rng.random_range(1..10)));
        }
        ing.kill9();
    }

    let mut ing = Ingestor::spawn(&args, &env);
    wait_until(
        Duration::from_secs(60),
        "final run reaches the last event",
        || stored_cursor(&mut con, "jsi:") == Some(last),
    );
    ing.sigterm();
    let status = ing
        .wait_exit(Duration::from_secs(10))
        .expect("exits within 10 s of SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status:?}");

    assert_exactly_once(&mut con, "jsi:", &lines);
    assert!(server.connections().len() > kills as usize);
}
