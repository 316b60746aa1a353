//! Buckets end to end, real Redis + fake Jetstream: the same generated events replayed
//! twice into fresh Redis (different batch sizes and shard counts) give identical
//! `jsi:buckets` streams and state; `kill -9` of the binary at several points and a restart
//! give the uninterrupted run's stream and state (the applied mark included); a source with
//! duplicates, equal times and an out-of-order copy gives the exact expected transitions
//! with 1 or 512 events per batch and with reconnects; status and the members hash agree; a
//! criteria change is detected and applied at start; docs/jobs.md lists every field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use actors::supervisor::StartChoice;
use jetstream_ingestor::settings::Settings;
use rand::{RngExt as _, SeedableRng as _};
use support::*;

/// Events of the determinism test. The issue asks for 200k; CI runs 50k (≈11 s of event
/// time, ~36k transitions with the windows below) to stay fast. The full size:
/// `BUCKETS_DETERMINISM_EVENTS=200000 cargo test --test buckets determinism`.
const DETERMINISM_EVENTS: usize = 50_000;
const CRASH_EVENTS: usize = 30_000;

/// Windows in hundreds of milliseconds: a generated corpus spans ~225 µs per event, so the
/// hot accounts (an event every ~60 ms) enter and leave many times.
const TEST_BUCKETS: &str = r#"
[[buckets]]
id = "posters"
min_dwell = "300ms"
[buckets.criteria]
collection = "app.bsky.feed.post"
operation = "create"
check = "count"
operator = "gte"
value = 3
within = "2s"

[[buckets]]
id = "lurkers"
entry_limit = "once_per_period"
entry_period = "2s"
[buckets.criteria]
all = [
  { collection = "app.bsky.feed.like", within = "1s" },
  { collection = "app.bsky.feed.post", check = "not_exists", within = "3s" },
]

[[buckets]]
id = "follow_burst"
max_dwell = "400ms"
[buckets.criteria]
collection = "app.bsky.graph.*"
operation = "create"
check = "count"
operator = "gt"
value = 1
within = "1s"

[[buckets]]
id = "pt"
entry_limit = "once"
[buckets.criteria]
collection = "app.bsky.feed.post"
record = [{ path = "langs", contains = "pt" }]
within = "5s"

[[buckets]]
id = "quiet"
[buckets.criteria]
not = { collection = "app.bsky.feed.*", check = "count", operator = "gte", value = 2, within = "700ms" }
"#;

const IDS: [&str; 5] = ["posters", "lurkers", "follow_burst", "pt", "quiet"];

fn with_buckets(mut s: Settings, text: &str, shards: usize) -> Settings {
    s.buckets.shards = shards;
    s.load_bucket_text(text, "test buckets")
        .expect("test buckets are valid");
    s.validate().expect("valid");
    s
}

/// Runs `lines` in-process into `redis_url` until the last event is committed.
fn replay(lines: &[String], redis_url: &str, batch: usize, shards: usize) {
    let server = fake(lines.to_vec(), None);
    let mut s = settings(&server.url(), redis_url);
    s.jetstream.batch_max_events = batch;
    let s = with_buckets(s, TEST_BUCKETS, shards);
    let last = lines.iter().filter_map(|l| time_of(l)).max().unwrap();
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: time_of(&lines[0]),
        },
        |sup| async move {
            let st = wait_status(&sup, Duration::from_secs(180), "all committed", |s| {
                s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0
            })
            .await;
            let b = st.buckets.expect("bucket status");
            assert_eq!(b.applied_to, last);
            assert!(b.events_evaluated > 0 && b.tracked_dids > 0, "{b:?}");
        },
    );
}

/// "Posted at least twice within 50 ms": the bucket of the identity test.
const TWICE: &str = r#"
[[buckets]]
id = "twice"
[buckets.criteria]
collection = "app.bsky.feed.post"
operation = "create"
check = "count"
operator = "gte"
value = 2
within = "50ms"
"#;

/// A post of `did` at `t` with record key `rkey` in revision `rev` (the record and its CID
/// are a generated post's, so the verifier's CID check passes).
fn post_line(template: &serde_json::Value, did: &str, t: u64, rkey: &str, rev: &str) -> String {
    let mut v = template.clone();
    v["did"] = did.into();
    v["time_us"] = t.into();
    v["commit"]["rkey"] = rkey.into();
    v["commit"]["rev"] = rev.into();
    v.to_string()
}

/// A valid TID (record key, revision), distinct per `i` < 32.
fn tid(i: usize) -> String {
    let alphabet = b"234567abcdefghijklmnopqrstuvwxyz";
    format!("3laaaaaaaaab{}", char::from(alphabet[i]))
}

/// The identity test's source, in ms from `T0`: a DID with two distinct posts of one commit
/// at the same `time_us` (`twins`, at 1), a DID whose one post is sent twice in a row (`dup`,
/// at 2), a DID whose post comes again later, out of order (`echo`, at 3 and again after 6),
/// a DID with a post at 2 and one at 4 right after a like at 4 (`same`), a DID with posts at
/// 5 and 6 (`three`), and one-post fillers every 5 ms up to 86 so every window expires.
/// Returns the lines and the expected transitions.
fn identity_source() -> (Vec<String>, Vec<[String; 6]>) {
    const T0: u64 = 1_700_000_000_000_000;
    const MS: u64 = 1_000;
    let corpus = corpus(2_000, 3);
    let find = |collection: &str| -> serde_json::Value {
        corpus
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| {
                v["commit"]["collection"] == collection && v["commit"]["operation"] == "create"
            })
            .unwrap_or_else(|| panic!("the corpus has a {collection} create"))
    };
    let (post, like) = (find("app.bsky.feed.post"), find("app.bsky.feed.like"));
    let did = |name: &str| format!("did:plc:{name:a>24}");
    let at = |ms: u64| T0 + ms * MS;
    let mut l = like.clone();
    l["did"] = did("same").into();
    l["time_us"] = at(4).into();
    let mut lines = vec![
        post_line(&post, &did("fillera"), at(0), &tid(0), &tid(0)),
        post_line(&post, &did("twins"), at(1), &tid(1), &tid(1)),
        post_line(&post, &did("twins"), at(1), &tid(2), &tid(1)),
        post_line(&post, &did("dup"), at(2), &tid(3), &tid(3)),
        post_line(&post, &did("dup"), at(2), &tid(3), &tid(3)),
        post_line(&post, &did("same"), at(2), &tid(4), &tid(4)),
        post_line(&post, &did("echo"), at(3), &tid(5), &tid(5)),
        l.to_string(),
        post_line(&post, &did("same"), at(4), &tid(6), &tid(6)),
        post_line(&post, &did("three"), at(5), &tid(7), &tid(7)),
        post_line(&post, &did("three"), at(6), &tid(8), &tid(8)),
        // `echo`'s post again, 3 ms late (a host sending out of order, or a duplicate).
        post_line(&post, &did("echo"), at(3), &tid(5), &tid(5)),
    ];
    for i in 1..=16u64 {
        let name = format!("filler{}", char::from(b'a' + i as u8));
        lines.push(post_line(
            &post,
            &did(&name),
            at(6 + 5 * i),
            &tid(9),
            &tid(9),
        ));
    }
    let row = |who: &str, kind: &str, reason: &str, ms: u64| {
        [
            did(who),
            "twice".into(),
            kind.into(),
            "1".into(),
            reason.into(),
            at(ms).to_string(),
        ]
    };
    let expected = vec![
        row("twins", "entered", "criteria", 1),
        row("same", "entered", "criteria", 4),
        row("three", "entered", "criteria", 6),
        row("twins", "left", "window_expired", 51),
        row("same", "left", "window_expired", 52),
        row("three", "left", "window_expired", 55),
    ];
    (lines, expected)
}

/// (did, bucket, transition, epoch, reason, time_us) of every `jsi:buckets` entry, in order.
fn rows(con: &mut redis::Connection) -> Vec<[String; 6]> {
    read_stream(con, "jsi:buckets")
        .into_iter()
        .map(|e| {
            ["did", "bucket", "transition", "epoch", "reason", "time_us"]
                .map(|f| e.get(f).cloned().unwrap_or_default())
        })
        .collect()
}

/// What one run of the identity source left: the transitions, the reader's sessions, the
/// bucket status (events evaluated, skipped) and the stored applied mark.
struct IdentityRun {
    rows: Vec<[String; 6]>,
    sessions: u64,
    evaluated: u64,
    skipped: u64,
    mark: String,
}

/// Runs the identity source with `batch` events per batch; with `close_every`, the fake
/// closes every that many frames and each reconnect rewinds 1 ms from the committed cursor,
/// re-sending lines the buckets already applied, some at exactly their newest time.
fn run_identity_source(lines: &[String], batch: usize, close_every: Option<u64>) -> IdentityRun {
    let redis = redis(false);
    let server = fake(lines.to_vec(), close_every);
    let mut s = settings(&server.url(), &redis.url());
    s.jetstream.batch_max_events = batch;
    s.jetstream.rewind = Duration::from_millis(1);
    let s = with_buckets(s, TWICE, 2);
    let last = lines.iter().filter_map(|l| time_of(l)).max().unwrap();
    let n = lines.len() as u64;
    let mut status = None;
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: time_of(&lines[0]),
        },
        |sup| {
            let status = &mut status;
            async move {
                let st = wait_status(&sup, Duration::from_secs(60), "all committed", |s| {
                    s.reader.committed_cursor == Some(last)
                        && s.writer.queued_batches == 0
                        && s.reader.events_received >= n
                })
                .await;
                *status = Some(st);
            }
        },
    );
    let st = status.expect("status");
    let b = st.buckets.expect("bucket status");
    assert_eq!(b.applied_to, last);
    let mut con = redis.connection().unwrap();
    assert_exactly_once(&mut con, "jsi:", lines);
    let mark: String = redis::cmd("HGET")
        .arg("jsi:buckets:applied")
        .arg("mark")
        .query(&mut con)
        .unwrap();
    IdentityRun {
        rows: rows(&mut con),
        sessions: st.reader.sessions_started,
        evaluated: b.events_evaluated,
        skipped: b.events_skipped,
        mark,
    }
}

/// Identity, not time, decides what the buckets already applied: the same source gives
/// the same six transitions with 1 event per batch (the equal-time pair split across
/// batches), 512 per batch (the duplicate inside one batch), and 1 per batch with a
/// reconnect every 6 frames (rewinds re-send applied events, equal-time ones included).
/// Of the 27 posts, 25 are distinct and in order: exactly those are evaluated, every time.
#[test]
fn same_events_same_transitions_for_any_batching_duplicates_and_equal_times() {
    let (lines, expected) = identity_source();
    assert_eq!(lines.len(), 28);
    let last = time_of(lines.last().unwrap()).unwrap();
    let want_mark = format!(
        r#"{{"to":{last},"at_to":["did:plc:aaaaaaaaaaaaaaaaafillerq|app.bsky.feed.post|{t}|{t}|create"]}}"#,
        t = tid(9)
    );
    let one = run_identity_source(&lines, 1, None);
    assert_eq!(one.rows, expected, "batch_max_events = 1");
    let many = run_identity_source(&lines, 512, None);
    assert_eq!(many.rows, expected, "batch_max_events = 512");
    for run in [&one, &many] {
        // The second copy of dup's post (already applied) and echo's late copy.
        assert_eq!((run.evaluated, run.skipped), (25, 2));
        assert_eq!(run.mark, want_mark);
    }
    let reconnecting = run_identity_source(&lines, 1, Some(6));
    assert!(
        reconnecting.sessions >= 5,
        "only {} sessions: the fake did not close",
        reconnecting.sessions
    );
    assert_eq!(
        reconnecting.rows, expected,
        "batch_max_events = 1, reconnect every 6 frames"
    );
    assert_eq!(reconnecting.evaluated, 25);
    assert!(reconnecting.skipped > 2, "{} skipped", reconnecting.skipped);
    assert_eq!(reconnecting.mark, want_mark);
}

/// The transitions, in stream order, as sorted field lists (stream ids differ by run).
fn transitions(con: &mut redis::Connection, prefix: &str) -> Vec<Vec<(String, String)>> {
    read_stream(con, &format!("{prefix}buckets"))
        .into_iter()
        .map(|e| {
            e.into_iter()
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect()
        })
        .collect()
}

/// Every bucket's state, members and meta hashes, and the applied mark.
fn hashes(con: &mut redis::Connection, prefix: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut keys = vec![format!("{prefix}buckets:applied")];
    for id in IDS {
        for part in ["state", "members", "meta"] {
            keys.push(format!("{prefix}bucket:{id}:{part}"));
        }
    }
    keys.into_iter()
        .map(|key| {
            let h: BTreeMap<String, String> = redis::cmd("HGETALL").arg(&key).query(con).unwrap();
            (key, h)
        })
        .collect()
}

#[test]
fn determinism_two_replays_into_fresh_redis_write_identical_transitions() {
    let n = std::env::var("BUCKETS_DETERMINISM_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DETERMINISM_EVENTS);
    let lines = corpus(n, 404);
    let (r1, r2) = (redis(false), redis(false));
    replay(&lines, &r1.url(), 64, 1);
    replay(&lines, &r2.url(), 500, 3);
    let (mut c1, mut c2) = (r1.connection().unwrap(), r2.connection().unwrap());
    let (t1, t2) = (transitions(&mut c1, "jsi:"), transitions(&mut c2, "jsi:"));
    eprintln!(
        "{} events → {} transitions, identical in both runs",
        lines.len(),
        t1.len()
    );
    assert!(t1.len() > 5_000, "only {} transitions", t1.len());
    assert_eq!(t1.len(), t2.len());
    if let Some(i) = (0..t1.len()).find(|i| t1[*i] != t2[*i]) {
        panic!("first difference at entry {i}: {:?} vs {:?}", t1[i], t2[i]);
    }
    assert_eq!(hashes(&mut c1, "jsi:"), hashes(&mut c2, "jsi:"));
    // Every bucket moved, every reason and both kinds appear.
    let field = |k: &str| -> BTreeSet<String> {
        t1.iter()
            .flat_map(|e| e.iter().filter(|(f, _)| f == k).map(|(_, v)| v.clone()))
            .collect()
    };
    assert_eq!(field("bucket"), IDS.iter().map(|s| s.to_string()).collect());
    assert_eq!(
        field("reason"),
        ["criteria", "max_dwell", "window_expired"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(field("transition").len(), 2);
}

#[test]
fn kill9_at_several_points_then_restart_gives_the_uninterrupted_transitions() {
    let lines = respace(&corpus(CRASH_EVENTS, 77), 1_700_000_000_000_000, 250);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let reference = redis(false);
    replay(&lines, &reference.url(), 128, 2);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("buckets.toml");
    std::fs::write(&file, TEST_BUCKETS).unwrap();
    let crashed = redis(false);
    let server = fake(lines.clone(), None);
    let mut env = ingestor_env(&server.url(), &crashed.url());
    env.push(("JETSTREAM_INGESTOR__JETSTREAM__REWIND", "100ms".to_owned()));
    env.push((
        "JETSTREAM_INGESTOR__BUCKETS__FILE",
        file.display().to_string(),
    ));
    env.push(("JETSTREAM_INGESTOR__BUCKETS__SHARDS", "2".to_owned()));
    let cursor_arg = first.to_string();
    let args = ["run", "--cursor", cursor_arg.as_str()];
    let mut con = crashed.connection().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(77);
    let kills = 4;
    for k in 1..=kills {
        let mut ing = Ingestor::spawn(&args, &env);
        let target = first
            + (last - first) * k / (kills + 1)
            + rng.random_range(0..(last - first) / (kills * 4));
        let start = Instant::now();
        while stored_cursor(&mut con, "jsi:").is_none_or(|c| c < target) {
            assert!(
                ing.child.try_wait().unwrap().is_none(),
                "ingestor exited early"
            );
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "no progress towards {target}"
            );
            std::thread::sleep(Duration::from_millis(rng.random_range(1..10)));
        }
        ing.kill9();
    }
    let mut ing = Ingestor::spawn(&args, &env);
    wait_until(
        Duration::from_secs(90),
        "final run reaches the last event",
        || stored_cursor(&mut con, "jsi:") == Some(last),
    );
    ing.sigterm();
    assert!(
        ing.wait_exit(Duration::from_secs(10))
            .expect("exits")
            .success()
    );

    let mut ref_con = reference.connection().unwrap();
    let (want, got) = (
        transitions(&mut ref_con, "jsi:"),
        transitions(&mut con, "jsi:"),
    );
    eprintln!(
        "{} events, {kills} kills → {} transitions",
        lines.len(),
        want.len()
    );
    assert!(want.len() > 1_000, "only {} transitions", want.len());
    if let Some(i) = (0..want.len().max(got.len())).find(|i| want.get(*i) != got.get(*i)) {
        panic!(
            "after {kills} kills the stream differs at entry {i} (of {} vs {}): {:?} vs {:?}",
            want.len(),
            got.len(),
            want.get(i),
            got.get(i)
        );
    }
    assert_eq!(hashes(&mut ref_con, "jsi:"), hashes(&mut con, "jsi:"));
}

#[test]
fn status_members_hash_and_a_criteria_change_at_restart() {
    let lines = corpus(6_000, 12);
    let last = lines.iter().filter_map(|l| time_of(l)).max().unwrap();
    let redis = redis(false);
    let server = fake(lines.clone(), None);
    let base = settings(&server.url(), &redis.url());
    let wide = TEST_BUCKETS.replace("within = \"5s\"", "within = \"1h\"");
    let n = lines.len();
    let run = |text: &str| {
        let s = with_buckets(base.clone(), text, 2);
        let mut seen = None;
        with_supervisor(
            s,
            StartChoice::Resume {
                fallback: time_of(&lines[0]),
            },
            |sup| {
                let seen = &mut seen;
                async move {
                    // A restart re-reads everything (the rewind covers the corpus).
                    wait_status(
                        &sup,
                        Duration::from_secs(60),
                        "all read and committed",
                        |s| {
                            s.reader.committed_cursor == Some(last)
                                && s.reader.events_received as usize >= n
                        },
                    )
                    .await;
                    // The newest event need not be the last one read: drain first, so the
                    // status and the hashes read afterwards describe the same commits.
                    sup.send(actors::messages::Drain).await.unwrap();
                    *seen = status(&sup).await.buckets;
                }
            },
        );
        seen.expect("bucket status")
    };
    let first = run(&wide);
    let mut con = redis.connection().unwrap();
    let hlen = |con: &mut redis::Connection, id: &str| -> u64 {
        redis::cmd("HLEN")
            .arg(format!("jsi:bucket:{id}:members"))
            .query(con)
            .unwrap()
    };
    for b in &first.buckets {
        assert_eq!(b.members, hlen(&mut con, &b.id), "{}", b.id);
        assert!(!b.criteria_changed && b.stored_criteria_hash.is_none());
    }
    let pt_members = hlen(&mut con, "pt");
    assert!(pt_members > 0, "the 1h window keeps pt members at the end");

    // Same file again: nothing changed, nothing new (every event is at or before the cursor).
    let before = transitions(&mut con, "jsi:").len();
    let again = run(&wide);
    assert!(again.buckets.iter().all(|b| !b.criteria_changed));
    assert_eq!(transitions(&mut con, "jsi:").len(), before);
    assert_eq!(again.events_evaluated, 0);

    // The pt window changes: its members leave with `criteria_changed`, the others stay.
    let changed = run(TEST_BUCKETS);
    let pt = changed.buckets.iter().find(|b| b.id == "pt").unwrap();
    assert!(
        pt.criteria_changed && pt.stored_criteria_hash.is_some(),
        "{pt:?}"
    );
    assert_eq!(pt.members, 0);
    assert_eq!(hlen(&mut con, "pt"), 0);
    assert!(
        changed
            .buckets
            .iter()
            .filter(|b| b.id != "pt")
            .all(|b| !b.criteria_changed)
    );
    let all = transitions(&mut con, "jsi:");
    let left: Vec<_> = all[before..]
        .iter()
        .filter(|e| e.contains(&("reason".into(), "criteria_changed".into())))
        .collect();
    assert_eq!(left.len() as u64, pt_members);
    let stored: String = redis::cmd("HGET")
        .arg("jsi:bucket:pt:meta")
        .arg("criteria_hash")
        .query(&mut con)
        .unwrap();
    assert_eq!(stored, pt.criteria_hash);
}

#[test]
fn every_field_of_the_buckets_stream_is_documented() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/jobs.md")).unwrap();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("`<prefix>buckets`"))
        .expect("docs/jobs.md has a `<prefix>buckets` section");
    let documented: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .flat_map(|row| {
            let first = row.split(" | ").next().unwrap_or("").to_owned();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|f| f != "field")
        .collect();
    let lines = corpus(3_000, 5);
    let redis = redis(false);
    replay(&lines, &redis.url(), 64, 1);
    let mut con = redis.connection().unwrap();
    let written: BTreeSet<String> = read_stream(&mut con, "jsi:buckets")
        .into_iter()
        .flat_map(|e| e.into_keys())
        .collect();
    assert!(!written.is_empty());
    assert_eq!(
        written, documented,
        "fields written vs fields in docs/jobs.md"
    );
}

/// Hardening item 1 with buckets: Redis restarts from a snapshot taken mid-run; the
/// rollback reloads the bucket state Redis holds and the events after it are evaluated
/// again: transitions and bucket hashes equal an uninterrupted run's.
#[test]
fn a_redis_rollback_reloads_the_bucket_state_and_gives_the_uninterrupted_transitions() {
    let lines = corpus(6_000, 405);
    let first = time_of(&lines[0]).unwrap();
    let last = lines.iter().filter_map(|l| time_of(l)).max().unwrap();
    let reference = redis(false);
    replay(&lines, &reference.url(), 64, 1);

    let mut r = redis(false);
    let server = fake_with(lines.clone(), |c| c.rate = Some(1_500));
    let s = with_buckets(settings(&server.url(), &r.url()), TEST_BUCKETS, 1);
    let rr = &mut r;
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let span = last - first;
            wait_status(&sup, Duration::from_secs(60), "30% committed", |s| {
                s.reader
                    .committed_cursor
                    .is_some_and(|c| c >= first + span * 3 / 10)
            })
            .await;
            let mut con = rr.connection().unwrap();
            let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
            wait_status(&sup, Duration::from_secs(60), "60% committed", |s| {
                s.reader
                    .committed_cursor
                    .is_some_and(|c| c >= first + span * 6 / 10)
            })
            .await;
            rr.kill9();
            rr.restart().expect("redis restarts from its snapshot");
            let st = wait_status(
                &sup,
                Duration::from_secs(90),
                "rolled back, then all committed",
                |s| {
                    s.writer.rollbacks >= 1
                        && s.reader.committed_cursor == Some(last)
                        && s.writer.queued_batches == 0
                },
            )
            .await;
            assert_eq!(st.writer.rollbacks, 1);
        },
    );
    let (mut c1, mut c2) = (reference.connection().unwrap(), r.connection().unwrap());
    assert_exactly_once(&mut c2, "jsi:", &lines);
    let sorted = |mut t: Vec<Vec<(String, String)>>| {
        t.sort();
        t
    };
    let (t1, t2) = (
        sorted(transitions(&mut c1, "jsi:")),
        sorted(transitions(&mut c2, "jsi:")),
    );
    assert!(t1.len() > 500, "only {} transitions", t1.len());
    assert_eq!(t1.len(), t2.len(), "as many transitions as uninterrupted");
    assert!(t1 == t2, "the same transitions");
    assert_eq!(hashes(&mut c1, "jsi:"), hashes(&mut c2, "jsi:"));
}
