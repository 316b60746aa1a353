//! Full replays through the real pipeline (fake Jetstream on loopback, private redis-server):
//! every commit lands exactly once, in order; the cursor is the last event; the stored cursor
//! is never ahead of what the streams hold; real network events land byte-for-byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jetstream_ingestor::app::Mode;
use support::*;

#[test]
fn full_replay_lands_every_commit_once_in_order_and_cursor_is_last() {
    let redis = redis(false);
    let lines = corpus(20_000, 11);
    let server = fake(lines.clone(), None);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();

    let outcome = run_in_process(
        settings(&server.url(), &redis.url()),
        Mode::Replay {
            from: first,
            until: last,
        },
        std::future::pending(),
    );
    assert!(outcome.drained, "replay must drain before exit");

    let mut con = redis.connection().unwrap();
    assert_exactly_once(&mut con, "jsi:", &lines);

    // Order: the records stream is the source's commits in source order.
    let want: Vec<String> = lines
        .iter()
        .filter(|l| l.contains(r#""kind":"commit""#))
        .map(|l| source_identity(l).unwrap().0)
        .collect();
    let got: Vec<String> = read_stream(&mut con, "jsi:records")
        .iter()
        .map(entry_identity)
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "records stream order differs from the source order"
    );
    assert_eq!(stored_cursor(&mut con, "jsi:"), Some(last));
    let dead: u64 = redis::cmd("XLEN").arg("jsi:dead").query(&mut con).unwrap();
    assert_eq!(dead, 0);
}

/// Reads the cursor and the newest `time_us` of every stream in one atomic step.
const SNAPSHOT: &str = r#"
local c = redis.call('GET', KEYS[1])
local newest, text = 0, '0'
for i = 2, #KEYS do
  local e = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
  if #e > 0 then
    local f = e[1][2]
    for j = 1, #f, 2 do
      if f[j] == 'time_us' and f[j + 1] ~= '' then
        local t = tonumber(f[j + 1])
        if t > newest then newest, text = t, f[j + 1] end
      end
    end
  end
end
return {c or '', text}
"#;

#[test]
fn stored_cursor_is_never_ahead_of_the_streams() {
    let redis = redis(false);
    let lines = corpus(15_000, 12);
    let server = fake(lines.clone(), None);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.batch_max_events = 16;

    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        let mut con = redis.connection().unwrap();
        std::thread::spawn(move || {
            let script = redis::Script::new(SNAPSHOT);
            let mut samples = 0u64;
            let mut distinct = std::collections::BTreeSet::new();
            while !done.load(Ordering::SeqCst) {
                let (cursor, newest): (String, String) = script
                    .key("jsi:cursor")
                    .key("jsi:records")
                    .key("jsi:identity")
                    .key("jsi:dead")
                    .invoke(&mut con)
                    .unwrap();
                if let Ok(c) = cursor.parse::<u64>() {
                    let n: u64 = newest.parse().unwrap();
                    assert!(
                        c <= n,
                        "stored cursor {c} is ahead of the newest stored event {n}"
                    );
                    distinct.insert(c);
                }
                samples += 1;
            }
            (samples, distinct.len())
        })
    };
    let outcome = run_in_process(
        s,
        Mode::Replay {
            from: first,
            until: last,
        },
        std::future::pending(),
    );
    done.store(true, Ordering::SeqCst);
    let (samples, distinct) = watcher.join().expect("watcher saw no violation");
    assert!(outcome.drained);
    assert!(
        distinct >= 50,
        "only {distinct} distinct cursors observed in {samples} samples: not a per-batch check"
    );
}

#[test]
fn real_jetstream_events_decode_and_land_unchanged() {
    let mut lines = real_events("v1-production-corpus/expected_v1.jsonl");
    lines.extend(real_events("v1-golden-sample/golden_v1.jsonl"));
    assert_eq!(lines.len(), 152 + 10, "both fixture files, every line");
    let redis = redis(false);
    let server = fake(lines.clone(), None);
    let url = redis.url();
    let expected = lines.len();
    let stop = async move {
        let mut con = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        wait_until_async_redis(&mut con, expected).await;
    };
    let min = lines.iter().filter_map(|l| time_of(l)).min().unwrap();
    let outcome = run_in_process(
        settings(&server.url(), &redis.url()),
        Mode::Run { cursor: Some(min) },
        stop,
    );
    assert!(outcome.drained);

    let mut con = redis.connection().unwrap();
    let (missing, dups) = compare(&mut con, "jsi:", &lines);
    assert!(
        missing.is_empty() && dups.is_empty(),
        "missing {missing:?} dups {dups:?}"
    );
    let records = read_stream(&mut con, "jsi:records");
    let mut checked = 0;
    for line in &lines {
        #[derive(serde::Deserialize)]
        struct L<'a> {
            #[serde(borrow)]
            commit: Option<C<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct C<'a> {
            #[serde(borrow)]
            record: Option<&'a serde_json::value::RawValue>,
            cid: Option<String>,
        }
        let parsed: L<'_> = serde_json::from_str(line).unwrap();
        let Some(c) = parsed.commit else { continue };
        let id = source_identity(line).unwrap().0;
        let entry = records
            .iter()
            .find(|e| entry_identity(e) == id)
            .expect("entry present");
        assert_eq!(
            entry["record"],
            c.record.map(|r| r.get().to_owned()).unwrap_or_default(),
            "record of {id} changed"
        );
        let op = source_identity(line)
            .unwrap()
            .0
            .rsplit('|')
            .next()
            .unwrap()
            .to_owned();
        let want_check = if op == "delete" { "none" } else { "match" };
        assert_eq!(
            entry["cid_check"], want_check,
            "real event {id}: CID recompute must agree with the network"
        );
        assert_eq!(entry["checks"], "", "real event {id} has no findings");
        assert_eq!(entry["cid"], c.cid.unwrap_or_default());
        checked += 1;
    }
    assert!(checked >= 150, "only {checked} commits checked");
    let identity = read_stream(&mut con, "jsi:identity");
    assert!(
        identity.iter().any(|e| e["kind"] == "identity")
            && identity.iter().any(|e| e["kind"] == "account")
    );
}

async fn wait_until_async_redis(con: &mut redis::aio::MultiplexedConnection, expected: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (a, b): (usize, usize) = redis::pipe()
            .cmd("XLEN")
            .arg("jsi:records")
            .cmd("XLEN")
            .arg("jsi:identity")
            .query_async(con)
            .await
            .unwrap();
        if a + b >= expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {expected} entries landed",
            a + b
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
