//! Malformed frames mixed into valid ones: every valid event lands once, every bad frame is
//! in `jsi:dead` with a precise reason and its raw text; the stream never stops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use actors::supervisor::StartChoice;
use jetstream_ingestor::fake_jetstream::{FakeJetstream, FakeJetstreamConfig, Source};
use rand::{RngExt as _, SeedableRng as _};
use support::*;

/// A bad frame and the reason it must be dead-lettered with.
fn bad_frame(i: usize, t: u64) -> (String, &'static str) {
    match i % 7 {
        0 => (
            format!(
                r#"{{"did":"did:plc:bad{i}","time_us":{t},"kind":"commit","commit":{{"rev":"3l"#
            ),
            "invalid_json",
        ),
        1 => (
            format!(r#"{{"did":"did:plc:bad{i}","time_us":"{t}","kind":"commit"}}"#),
            "bad_envelope",
        ),
        2 => (
            format!(r#"{{"did":"did:plc:bad{i}","time_us":{t},"kind":"commit"}}"#),
            "bad_commit",
        ),
        3 => (
            format!(
                r#"{{"did":"did:plc:bad{i}","time_us":{t},"kind":"commit","commit":{{"rev":"3l","operation":"upsert","collection":"a.b.c","rkey":"k"}}}}"#
            ),
            "bad_commit",
        ),
        4 => (
            format!(r#"{{"did":"did:plc:bad{i}","time_us":{t},"kind":"identity"}}"#),
            "bad_identity",
        ),
        5 => (format!("garbage frame number {i} ]]]"), "invalid_json"),
        _ => (
            format!(r#"[{i}, "an array is not an event"]"#),
            "bad_envelope",
        ),
    }
}

#[test]
fn malformed_frames_are_dead_lettered_and_valid_ones_all_land() {
    let redis = redis(false);
    let valid = corpus(3_000, 41);
    let mut rng = rand::rngs::StdRng::seed_from_u64(41);
    let mut lines = Vec::new();
    let mut expected: HashMap<String, &'static str> = HashMap::new();
    let mut bad = 0;
    for (i, line) in valid.iter().enumerate() {
        lines.push(line.clone());
        if rng.random_range(0..100) < 3 {
            let (frame, reason) = bad_frame(bad, time_of(line).unwrap());
            expected.insert(frame.clone(), reason);
            lines.push(frame);
            bad += 1;
        }
        let _ = i;
    }
    assert!(bad >= 50, "want a real mix, got {bad} bad frames");
    let first = time_of(&valid[0]).unwrap();
    let last = time_of(valid.last().unwrap()).unwrap();
    let server = fake(lines.clone(), None);

    with_supervisor(
        settings(&server.url(), &redis.url()),
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let st = wait_status(&sup, Duration::from_secs(60), "all committed", |s| {
                s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0
            })
            .await;
            assert_eq!(st.reader.dead_letters, bad as u64);
        },
    );

    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &valid);
    assert!(
        missing.is_empty() && dups.is_empty(),
        "missing {} dups {}",
        missing.len(),
        dups.len()
    );
    let dead = read_stream(&mut con, "jsi:dead");
    assert_eq!(
        dead.len(),
        bad,
        "every bad frame dead-lettered exactly once"
    );
    for d in &dead {
        let want = expected
            .get(&d["raw"])
            .unwrap_or_else(|| panic!("unexpected dead letter {d:?}"));
        assert_eq!(&d["reason"], want, "reason for {:?}", d["raw"]);
        assert!(!d["message"].is_empty());
        assert_eq!(d["source"], server.addr().to_string());
        if d["raw"].contains("did:plc:bad")
            && d["reason"] != "invalid_json"
            && d["reason"] != "bad_envelope"
        {
            assert!(!d["time_us"].is_empty(), "time salvaged for {:?}", d["raw"]);
        }
    }
}

#[test]
fn binary_junk_and_huge_frames_are_dead_lettered_without_stopping() {
    let redis = redis(false);
    let valid = corpus(500, 42);
    // A file with one line that is not UTF-8 (the fake server sends it as a binary frame)
    // and one 100 kB line of junk.
    let mut bytes = Vec::new();
    for (i, l) in valid.iter().enumerate() {
        if i == 100 {
            bytes.extend_from_slice(&[0xff, 0xfe, 0x00, 0x41, b'\n']);
        }
        if i == 300 {
            bytes.extend_from_slice("x".repeat(100_000).as_bytes());
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(b'\n');
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    let mut cfg = FakeJetstreamConfig::new(Source::File(file.path().to_owned()));
    cfg.listen = ([127, 0, 0, 1], 0).into();
    let server = FakeJetstream::start(cfg).unwrap();
    let first = time_of(&valid[0]).unwrap();
    let last = time_of(valid.last().unwrap()).unwrap();
    with_supervisor(
        settings(&server.url(), &redis.url()),
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(30), "all committed", |s| {
                s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0
            })
            .await;
        },
    );
    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &valid);
    assert!(missing.is_empty() && dups.is_empty());
    let dead = read_stream(&mut con, "jsi:dead");
    assert_eq!(dead.len(), 2, "{dead:?}");
    let big = dead
        .iter()
        .find(|d| d["raw_len"] == "100000")
        .expect("huge frame dead-lettered");
    assert_eq!(big["reason"], "invalid_json");
    assert_eq!(big["raw"].len(), 64 * 1024, "raw text capped at 64 KiB");
    let bin = dead
        .iter()
        .find(|d| d["raw_len"] == "4")
        .expect("binary frame dead-lettered");
    assert_eq!(bin["reason"], "binary_frame");
}
