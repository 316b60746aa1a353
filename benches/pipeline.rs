//! Per-event cost of the CPU stages, on a realistic mix (the fake Jetstream's deterministic
//! corpus: likes, posts with facets/embeds/blobs, reposts, follows, deletes, identity and
//! account events). Run: `cargo bench --bench pipeline`. Criterion prints time per batch of
//! `N` events and events/s (`thrpt`); µs per event = time / N.
//!
//! - `decode`: frame bytes → typed event (JSON parse once, record kept raw);
//! - `verify`: every check + CID recompute on the decoded commit events (one thread);
//! - `cid/ours` vs `cid/serde_ipld_dagcbor`: the CID recompute with our single-pass
//!   canonical encoder vs `serde_json::Value` → `Ipld` → `serde_ipld_dagcbor` (the reference
//!   the tests compare against byte for byte), to keep the choice honest;
//! - `decode/zstd`: the same frames zstd-compressed with Jetstream's v1 dictionary (the one
//!   embedded in the binary), inflated and decoded;
//! - `commit_encode`: a batch → its probe and its MULTI/EXEC commit, packed as sent;
//! - `buckets/route`: the router's pre-filter (collection → candidate conditions, memoised)
//!   and the copy of what a shard needs; `buckets/evaluate`: one shard applying the events
//!   to the buckets of `config/buckets.example.toml` (state kept across iterations, time
//!   moving on). Before measuring, it prints the memory per tracked DID for 100k DIDs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use actors::buckets::BucketsConfig;
use actors::buckets::criteria::{CompiledBucket, candidate_leaves};
use actors::buckets::tracker::{ShardEvent, Tracker};
use actors::jetstream::decode::{Decoded, decode_frame};
use actors::messages::{Batch, Credit, Item};
use actors::model::{Event, Operation};
use actors::sink::commit::{CommitLimits, Keys, encode};
use actors::verifier::pool::Setup;
use actors::verifier::{VerifierConfig, record_cid};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ipld_core::ipld::Ipld;
use serde_json::Value;
use sha2::{Digest, Sha256};

const N: usize = 2_000;

fn corpus() -> Vec<String> {
    jetstream_ingestor::fake_jetstream::generate_corpus(N, 7, 1_700_000_000_000_000)
}

fn decoded(lines: &[String]) -> Vec<Item> {
    lines
        .iter()
        .filter_map(|l| match decode_frame(l.as_bytes()) {
            Decoded::Event(e) => Some(Item::Event(e)),
            _ => None,
        })
        .collect()
}

fn records(items: &[Item]) -> Vec<(String, String)> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Event(Event::Commit(c)) => {
                Some((c.record.as_ref()?.get().to_owned(), c.cid.clone()?))
            }
            _ => None,
        })
        .collect()
}

/// The reference path: JSON → data model (`$link` → CID, `$bytes` → bytes) → Ipld.
fn to_ipld(v: &Value) -> Ipld {
    match v {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Number(n) => n.as_i64().map_or_else(
            || Ipld::Integer(i128::from(n.as_u64().unwrap_or(0))),
            |i| Ipld::Integer(i.into()),
        ),
        Value::String(s) => Ipld::String(s.clone()),
        Value::Array(a) => Ipld::List(a.iter().map(to_ipld).collect()),
        Value::Object(m) => {
            if m.len() == 1 {
                if let Some(Value::String(l)) = m.get("$link") {
                    return Ipld::Link(l.parse().expect("valid link"));
                }
                if let Some(Value::String(b)) = m.get("$bytes") {
                    use base64::Engine as _;
                    return Ipld::Bytes(
                        base64::engine::general_purpose::STANDARD_NO_PAD
                            .decode(b.trim_end_matches('='))
                            .expect("b64"),
                    );
                }
            }
            Ipld::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), to_ipld(v)))
                    .collect::<BTreeMap<_, _>>(),
            )
        }
    }
}

fn reference_cid(json: &str) -> String {
    let v: Value = serde_json::from_str(json).expect("json");
    let bytes = serde_ipld_dagcbor::to_vec(&to_ipld(&v)).expect("encodes");
    let digest = Sha256::digest(&bytes);
    let mh = multihash::Multihash::<64>::wrap(0x12, &digest).expect("sha256 fits");
    cid::Cid::new_v1(0x71, mh).to_string()
}

fn bench(c: &mut Criterion) {
    let lines = corpus();
    let items = decoded(&lines);
    let recs = records(&items);
    // Sanity: both CID paths agree with the CIDs the generator wrote.
    for (r, cid) in recs.iter().take(50) {
        assert_eq!(&record_cid(r).expect("cid"), cid);
        assert_eq!(&reference_cid(r), cid);
    }

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("json", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(decode_frame(black_box(l.as_bytes())));
            }
        })
    });
    // zstd frames as Jetstream sends them with `compress=true`: inflate with the v1
    // dictionary the binary embeds, then decode.
    let dict = actors::jetstream::config::JETSTREAM_V1_ZSTD_DICTIONARY;
    let mut compressor =
        zstd::bulk::Compressor::with_dictionary(3, dict).expect("dictionary loads");
    let frames: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| compressor.compress(l.as_bytes()).expect("compresses"))
        .collect();
    let mut inflater =
        actors::jetstream::inflate::Inflater::new(Some(dict), 4 << 20).expect("dictionary");
    g.bench_function("zstd", |b| {
        b.iter(|| {
            for f in &frames {
                let raw = inflater.inflate(black_box(f)).expect("inflates");
                black_box(decode_frame(raw));
            }
        })
    });
    g.finish();

    let setup = Setup::new(VerifierConfig::default()).expect("default verifier config");
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(items.len() as u64));
    g.bench_function("checks_and_cid", |b| {
        b.iter_batched(
            || decoded(&lines),
            |batch| {
                for i in batch {
                    black_box(setup.process(i));
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("cid");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("ours", |b| {
        b.iter(|| {
            for (r, _) in &recs {
                black_box(record_cid(black_box(r)).expect("cid"));
            }
        })
    });
    g.bench_function("serde_ipld_dagcbor", |b| {
        b.iter(|| {
            for (r, _) in &recs {
                black_box(reference_cid(black_box(r)));
            }
        })
    });
    g.finish();

    let keys = Keys::new("jsi:");
    let limits = CommitLimits {
        dedupe_window_us: 120_000_000,
    };
    let window = Arc::new(tokio::sync::Semaphore::new(1));
    let mut g = c.benchmark_group("commit_encode");
    g.throughput(Throughput::Elements(items.len() as u64));
    g.bench_function("probe_and_transaction", |b| {
        b.iter_batched(
            || Batch {
                seq: 1,
                session: 1,
                source: Arc::from("bench"),
                items: decoded(&lines),
                cursor: Some(1),
                received_at: Instant::now(),
                credit: Credit::new(window.clone().try_acquire_owned().expect("permit")),
                replay: false,
            },
            |batch| {
                let encoded = encode(&keys, &batch, "bench:1", "bench:0", None, limits);
                black_box(encoded.commit.get_packed_pipeline());
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Conditions a collection can match, and whether one of them reads the record.
type Candidates = (Arc<[u32]>, bool);

/// What the router hands the shards for these items (one shard here), `offset` µs later.
fn shard_events(buckets: &[CompiledBucket], items: &[Item], offset: u64) -> Vec<ShardEvent> {
    let mut memo: HashMap<&str, Option<Candidates>> = HashMap::new();
    items
        .iter()
        .filter_map(|i| match i {
            Item::Event(Event::Commit(c)) => Some(c),
            _ => None,
        })
        .filter_map(|c| {
            let (leaves, needs_record) = memo
                .entry(c.collection.as_str())
                .or_insert_with(|| {
                    let (l, n) = candidate_leaves(buckets, &c.collection);
                    (!l.is_empty()).then(|| (Arc::from(l), n))
                })
                .clone()?;
            Some(ShardEvent {
                did: c.did.clone(),
                time_us: c.time_us + offset,
                operation: c.operation,
                leaves,
                record: if needs_record { c.record.clone() } else { None },
            })
        })
        .collect()
}

fn example_buckets() -> Arc<[CompiledBucket]> {
    let mut s = jetstream_ingestor::settings::Settings::default();
    s.load_bucket_text(
        include_str!("../config/buckets.example.toml"),
        "buckets.example.toml",
    )
    .expect("example buckets are valid");
    actors::buckets::compile(&BucketsConfig {
        shards: 1,
        buckets: s.bucket_defs,
    })
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// 100k DIDs that each liked once and posted once (three live states each: a post count,
/// the like and the post `lurkers` remembers, an onboarding membership): bytes per tracked
/// DID, as counted by the tracker (sizes + heap, no allocator overhead) and as an RSS delta.
fn memory_per_tracked_did(buckets: &Arc<[CompiledBucket]>) {
    const DIDS: usize = 100_000;
    let (post, post_rec) = candidate_leaves(buckets, "app.bsky.feed.post");
    let (like, _) = candidate_leaves(buckets, "app.bsky.feed.like");
    let (post, like): (Arc<[u32]>, Arc<[u32]>) = (post.into(), like.into());
    let before = rss_kib();
    let mut tracker = Tracker::new(buckets.clone());
    let mut t = 1_700_000_000_000_000u64;
    for chunk in (0..DIDS).collect::<Vec<_>>().chunks(1000) {
        let mut events = Vec::with_capacity(2 * chunk.len());
        for i in chunk {
            let did = format!("did:plc:{:024}", i);
            t += 10;
            events.push(ShardEvent {
                did: did.clone(),
                time_us: t,
                operation: Operation::Create,
                leaves: like.clone(),
                record: None,
            });
            t += 10;
            events.push(ShardEvent {
                did,
                time_us: t,
                operation: Operation::Create,
                leaves: post.clone(),
                record: post_rec.then(|| {
                    serde_json::value::RawValue::from_string(
                        r#"{"langs":["en"],"text":"hi"}"#.into(),
                    )
                    .expect("json")
                }),
            });
        }
        black_box(tracker.process(events, t));
    }
    let after = rss_kib();
    println!(
        "buckets/memory: {} tracked DIDs, {} B/DID counted (sizes + heap), {} B/DID RSS delta",
        tracker.tracked_dids(),
        tracker.approx_bytes() / tracker.tracked_dids().max(1),
        (after.saturating_sub(before) * 1024) / tracker.tracked_dids().max(1) as u64
    );
}

fn bench_buckets(c: &mut Criterion) {
    let lines = corpus();
    let items = decoded(&lines);
    let buckets = example_buckets();
    memory_per_tracked_did(&buckets);
    let span = 1 + items
        .iter()
        .map(|i| match i {
            Item::Event(e) => e.time_us(),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
        - items
            .iter()
            .filter_map(|i| match i {
                Item::Event(e) => Some(e.time_us()),
                _ => None,
            })
            .min()
            .unwrap_or(0);

    let mut g = c.benchmark_group("buckets");
    g.throughput(Throughput::Elements(items.len() as u64));
    g.bench_function("route", |b| {
        b.iter(|| black_box(shard_events(&buckets, black_box(&items), 0)))
    });
    let mut tracker = Tracker::new(buckets.clone());
    let mut round = 0u64;
    g.bench_function("evaluate", |b| {
        b.iter_batched(
            || {
                round += 1;
                let events = shard_events(&buckets, &items, round * span);
                let watermark = events.last().map_or(0, |e| e.time_us);
                (events, watermark)
            },
            |(events, watermark)| black_box(tracker.process(events, watermark)),
            BatchSize::LargeInput,
        )
    });
    g.finish();
    println!(
        "buckets/evaluate: {} DIDs tracked after {round} rounds",
        tracker.tracked_dids()
    );
}

criterion_group!(benches, bench, bench_buckets);
criterion_main!(benches);
