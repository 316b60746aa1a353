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
//! - `commit_args`: events → stream entries → the commit script's KEYS/ARGV.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use actors::jetstream::decode::{Decoded, decode_frame};
use actors::messages::{Batch, Credit, Item};
use actors::model::Event;
use actors::sink::commit::{CommitLimits, Keys, entries_of, invocation};
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
    let mut g = c.benchmark_group("commit_args");
    g.throughput(Throughput::Elements(items.len() as u64));
    g.bench_function("entries_and_argv", |b| {
        b.iter_batched(
            || Batch {
                seq: 1,
                session: 1,
                source: Arc::from("bench"),
                items: decoded(&lines),
                cursor: Some(1),
                received_at: Instant::now(),
                credit: Credit(window.clone().try_acquire_owned().expect("permit")),
            },
            |batch| {
                let entries = entries_of(&batch);
                black_box(invocation(
                    &keys,
                    &entries,
                    &[],
                    batch.cursor,
                    "bench:1",
                    limits,
                ));
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
