//! `prove` end to end: a real redis-server, a fake PLC directory and a fake PDS on loopback
//! serving getRecord proofs cut from the 150 real relay frames (real signatures, real MST
//! paths), and the worker in-process or as the binary (`jetstream-ingestor prove`).
//!
//! Every verdict, the dead letters of forgeries, bounded retries on 404/500/429/slow PDSes,
//! exactly-once verdicts across `kill -9` of workers, and key rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actors::prove::car::{dag_cbor_cid, read_car, write_car};
use actors::prove::frame::{decode_frame, split_frames};
use actors::prove::resolver::Resolver;
use actors::prove::verify::record_proof_car;
use actors::prove::worker::{Worker, WorkerStats};
use actors::prove::{CarLimits, ProveConfig, PublicKey};
use ipld_core::ipld::Ipld;
use serde_json::Value;
use support::fake_pds::{FakeHttp, Reply, record_route};
use support::{Ingestor, read_stream, redis, repo_file, wait_until};

/// One op of a real signed commit.
#[derive(Clone)]
struct Op {
    did: String,
    collection: String,
    rkey: String,
    action: String,
    rev: String,
    cid: String,
    /// The getRecord proof for this op (commit, MST path, record).
    car: Vec<u8>,
}

impl Op {
    fn route(&self) -> String {
        record_route(&self.did, &self.collection, &self.rkey)
    }

    /// The job fields, as the ingestor writes them (docs/jobs.md).
    fn job(&self, n: usize) -> Vec<(String, String)> {
        let idem = format!(
            "{}|{}|{}|{}",
            self.did, self.collection, self.rkey, self.rev
        );
        [
            ("v", "1".to_owned()),
            ("idem", idem),
            ("did", self.did.clone()),
            ("collection", self.collection.clone()),
            ("rkey", self.rkey.clone()),
            ("operation", self.action.clone()),
            ("rev", self.rev.clone()),
            ("cid", self.cid.clone()),
            ("time_us", (1_783_175_888_000_000 + n).to_string()),
            ("record", String::new()),
            ("source", "test".to_owned()),
            (
                "cid_check",
                if self.action == "delete" {
                    "none"
                } else {
                    "match"
                }
                .to_owned(),
            ),
            ("checks", String::new()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

fn ops() -> Vec<Op> {
    let raw = zstd::decode_all(
        std::fs::read(repo_file(
            "tests/fixtures/prove/relay-frames/frames.bin.zst",
        ))
        .unwrap()
        .as_slice(),
    )
    .unwrap();
    let mut out = Vec::new();
    for f in split_frames(&raw).unwrap() {
        let Some(frame) = decode_frame(f).unwrap() else {
            continue;
        };
        for op in &frame.ops {
            let (collection, rkey) = op.path.split_once('/').unwrap();
            out.push(Op {
                did: frame.repo.clone(),
                collection: collection.to_owned(),
                rkey: rkey.to_owned(),
                action: op.action.clone(),
                rev: frame.rev.clone(),
                cid: op.cid.map(|c| c.to_string()).unwrap_or_default(),
                car: record_proof_car(&frame.blocks, &op.path).unwrap(),
            });
        }
    }
    assert_eq!(out.len(), 150);
    out
}

fn did_docs() -> BTreeMap<String, Value> {
    let raw = zstd::decode_all(
        std::fs::read(repo_file(
            "tests/fixtures/prove/relay-frames/did_docs.json.zst",
        ))
        .unwrap()
        .as_slice(),
    )
    .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// The document with its PDS moved to `pds` (the fake) and, if given, another key.
fn doc_for(doc: &Value, pds: &str, key: Option<&str>) -> String {
    let mut doc = doc.clone();
    doc["service"][0]["serviceEndpoint"] = pds.into();
    if let Some(k) = key {
        doc["verificationMethod"][0]["publicKeyMultibase"] = k.into();
    }
    doc.to_string()
}

/// A fake PLC directory with every fixture author, and a fake PDS serving every op's proof.
struct World {
    redis: jetstream_ingestor::local_redis::LocalRedis,
    plc: FakeHttp,
    pds: FakeHttp,
    ops: Vec<Op>,
    docs: BTreeMap<String, Value>,
}

fn world() -> World {
    jetstream_ingestor::telemetry::install_crypto_provider();
    let plc = FakeHttp::start();
    let pds = FakeHttp::start();
    let ops = ops();
    let docs = did_docs();
    for (did, doc) in &docs {
        plc.set(did, Reply::Json(doc_for(doc, &pds.url(), None)));
    }
    for op in &ops {
        pds.set(&op.route(), Reply::Car(op.car.clone()));
    }
    World {
        redis: redis(false),
        plc,
        pds,
        ops,
        docs,
    }
}

const PREFIX: &str = "jsi:";

fn test_cfg(plc: &str) -> ProveConfig {
    ProveConfig {
        plc_url: plc.to_owned(),
        did_web_scheme: "http".into(),
        block: Duration::from_millis(200),
        claim_idle: Duration::from_secs(1),
        concurrency: 16,
        max_attempts: 3,
        retry_base: Duration::from_millis(10),
        retry_cap: Duration::from_secs(2),
        request_timeout: Duration::from_millis(700),
        connect_timeout: Duration::from_secs(1),
        per_host_rate: 100_000.0,
        per_host_burst: 100_000,
        per_host_concurrency: 16,
        consumer: "in-process".into(),
        allow_private_hosts: true,
        ..ProveConfig::default()
    }
}

fn add_job(con: &mut redis::Connection, stream: &str, fields: &[(String, String)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(format!("{PREFIX}{stream}")).arg("*");
    for (k, v) in fields {
        cmd.arg(k).arg(v);
    }
    cmd.query(con).unwrap()
}

fn xlen(con: &mut redis::Connection, key: &str) -> usize {
    redis::cmd("XLEN").arg(key).query(con).unwrap()
}

fn pending(con: &mut redis::Connection) -> usize {
    let (n, _, _, _): (usize, Value2, Value2, Value2) = redis::cmd("XPENDING")
        .arg(format!("{PREFIX}records"))
        .arg("prove")
        .query(con)
        .unwrap();
    n
}
type Value2 = redis::Value;

/// Ids pending on one consumer of the `prove` group.
fn pending_of(con: &mut redis::Connection, consumer: &str) -> Vec<String> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(format!("{PREFIX}records"))
        .arg("prove")
        .arg("-")
        .arg("+")
        .arg(10_000)
        .arg(consumer)
        .query(con)
        .unwrap();
    rows.into_iter().map(|r| r.0).collect()
}

/// An in-process worker on its own runtime thread; stop it with the returned sender.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<WorkerStats>,
    resolver: Arc<Resolver>,
}

fn start_worker(cfg: ProveConfig, url: String) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let worker = Worker::connect(
                cfg,
                PREFIX,
                &actors::redis_target::RedisTarget::from_url(url.clone()),
            )
            .await
            .unwrap();
            tx.send(worker.resolver()).unwrap();
            worker
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap()
        })
    });
    let resolver = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    Running {
        stop,
        thread,
        resolver,
    }
}

impl Running {
    fn finish(self) -> WorkerStats {
        let _ = self.stop.send(());
        self.thread.join().unwrap()
    }
}

fn by(entries: &[HashMap<String, String>], field: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in entries {
        *out.entry(e[field].clone()).or_default() += 1;
    }
    out
}

/// Every real op proves `valid`; an older job for a changed record is `superseded`;
/// forgeries (tampered record, a CAR for another DID, a swapped CID, a DID document with the
/// wrong key) are `invalid` and dead-lettered; a PDS answering 404, 500 or too slowly, and an
/// unknown DID, are `unavailable` after bounded attempts, and so is a malformed job; two
/// 429s with `Retry-After` are waited out and the job proves `valid`.
#[test]
fn each_job_gets_its_verdict() {
    let w = world();
    let mut con = redis::Client::open(w.redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // Special cases take creates of accounts with a single op; the others stay as they are.
    let creates: Vec<usize> = (0..w.ops.len())
        .filter(|&i| {
            w.ops[i].action == "create"
                && w.ops.iter().filter(|o| o.did == w.ops[i].did).count() == 1
        })
        .collect();
    let [
        sup,
        tampered,
        other_did,
        swapped,
        wrong_key,
        nf,
        err500,
        slow,
        limited,
        ..,
    ] = creates[..]
    else {
        panic!("not enough accounts")
    };
    let mut jobs: Vec<Vec<(String, String)>> = Vec::new();
    let mut expect: HashMap<String, (&str, String)> = HashMap::new(); // idem -> verdict, reason
    let bogus = dag_cbor_cid(b"\xa1apb").to_string();
    for (i, op) in w.ops.iter().enumerate() {
        let mut job = op.job(i);
        let set = |job: &mut Vec<(String, String)>, k: &str, v: &str| {
            job.iter_mut().find(|(f, _)| f == k).unwrap().1 = v.to_owned();
        };
        let outcome: (&str, &str) = if i == sup {
            // The repository's commit is newer than this job's rev and holds another CID.
            set(&mut job, "rev", "2222222222222");
            set(&mut job, "cid", &bogus);
            ("superseded", "record_changed")
        } else if i == tampered {
            let mut car = op.car.clone();
            let last = car.len() - 1; // the record is the last block
            car[last] ^= 0x01;
            w.pds.set(&op.route(), Reply::Car(car));
            ("invalid", "block_hash_mismatch")
        } else if i == other_did {
            w.pds.set(&op.route(), Reply::Car(w.ops[sup].car.clone()));
            ("invalid", "commit_did_mismatch")
        } else if i == swapped {
            set(&mut job, "cid", &bogus);
            ("invalid", "record_cid_mismatch")
        } else if i == wrong_key {
            let other_key = w.docs[&w.ops[sup].did]["verificationMethod"][0]["publicKeyMultibase"]
                .as_str()
                .unwrap()
                .to_owned();
            w.plc.set(
                &op.did,
                Reply::Json(doc_for(&w.docs[&op.did], &w.pds.url(), Some(&other_key))),
            );
            ("invalid", "signature_invalid")
        } else if i == nf {
            w.pds.set(
                &op.route(),
                Reply::Status(404, vec![], r#"{"error":"RecordNotFound"}"#.into()),
            );
            ("unavailable", "pds_record_not_found")
        } else if i == err500 {
            w.pds
                .set(&op.route(), Reply::Status(500, vec![], "{}".into()));
            ("unavailable", "pds_http_500")
        } else if i == slow {
            w.pds.set(
                &op.route(),
                Reply::Slow(Duration::from_secs(2), Box::new(Reply::Car(op.car.clone()))),
            );
            ("unavailable", "pds_timeout")
        } else if i == limited {
            let retry = Reply::Status(429, vec![("retry-after".into(), "1".into())], "{}".into());
            w.pds.script(&op.route(), vec![retry.clone(), retry]);
            ("valid", "")
        } else {
            ("valid", "")
        };
        let idem = job.iter().find(|(k, _)| k == "idem").unwrap().1.clone();
        expect.insert(idem, (outcome.0, outcome.1.to_owned()));
        jobs.push(job);
    }
    // An account the PLC directory does not know.
    let mut ghost = w.ops[sup].job(999);
    for (k, v) in ghost.iter_mut() {
        if k == "did" {
            *v = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into();
        }
        if k == "idem" {
            *v = "ghost".into();
        }
    }
    expect.insert("ghost".into(), ("unavailable", "did_http_404".into()));
    jobs.push(ghost);
    // A job no proof can answer: an operation that does not exist.
    let mut odd = w.ops[sup].job(1000);
    for (k, v) in odd.iter_mut() {
        if k == "operation" {
            *v = "frobnicate".into();
        }
        if k == "idem" {
            *v = "odd".into();
        }
    }
    expect.insert("odd".into(), ("unavailable", "job_malformed".into()));
    jobs.push(odd);
    for job in &jobs {
        add_job(&mut con, "records", job);
    }

    let started = std::time::Instant::now();
    let worker = start_worker(test_cfg(&w.plc.url()), w.redis.url());
    wait_until(Duration::from_secs(60), "every job proven", || {
        xlen(&mut con, "jsi:proven") >= jobs.len()
    });
    let elapsed = started.elapsed();
    let stats = worker.finish();

    let proven = read_stream(&mut con, "jsi:proven");
    assert_eq!(proven.len(), 152);
    for e in &proven {
        let (verdict, reason) = &expect[&e["idem"]];
        assert_eq!(
            (e["proof"].as_str(), e["proof_reason"].as_str()),
            (*verdict, reason.as_str()),
            "{}",
            e["idem"]
        );
        for f in [
            "did",
            "collection",
            "rkey",
            "rev",
            "operation",
            "cid",
            "time_us",
            "job_id",
        ] {
            assert!(e.contains_key(f), "{f} missing");
        }
        assert_eq!(e["job_stream"], "records");
        if e["proof"] == "valid" {
            assert_eq!(e["proof_rev"], e["rev"]);
            assert_eq!(e["pds"], w.pds.url());
        }
    }
    let verdicts = by(&proven, "proof");
    assert_eq!(
        verdicts,
        BTreeMap::from([
            ("invalid".into(), 4),
            ("superseded".into(), 1),
            ("unavailable".into(), 5),
            ("valid".into(), 142),
        ])
    );
    let dead = read_stream(&mut con, "jsi:dead");
    assert_eq!(dead.len(), 4);
    assert_eq!(
        by(&dead, "reason"),
        BTreeMap::from([("pds_proof_invalid".into(), 4)])
    );
    let mut dead_reasons: Vec<String> = dead
        .iter()
        .map(|d| d["message"].split(' ').next().unwrap().to_owned())
        .collect();
    dead_reasons.sort();
    assert_eq!(
        dead_reasons,
        [
            "block_hash_mismatch",
            "commit_did_mismatch",
            "record_cid_mismatch",
            "signature_invalid"
        ]
    );
    assert_eq!(pending(&mut con), 0);
    // Bounded retries: 3 attempts on 500 and on the slow PDS; 2 × 429 then success; one 404.
    assert_eq!(w.pds.hits(&w.ops[err500].route()), 3);
    assert_eq!(w.pds.hits(&w.ops[slow].route()), 3);
    assert_eq!(w.pds.hits(&w.ops[limited].route()), 3);
    assert_eq!(w.pds.hits(&w.ops[nf].route()), 1);
    assert!(elapsed >= Duration::from_secs(2), "Retry-After: 1 twice");
    // The wrong key was fetched fresh (not cached): judged once, no stale-key retry.
    assert_eq!(w.plc.hits(&w.ops[wrong_key].did), 1);
    assert_eq!(stats.stale_key_retries, 0);
    assert_eq!(stats.verdicts.values().sum::<u64>(), 152);
    assert_eq!(stats.duplicates_avoided, 0);
    // One PLC fetch per account (148 + the unknown one): concurrent jobs of one account
    // share one resolution, later ones hit the cache.
    assert_eq!(w.plc.total_hits(), 149);
    assert_eq!(stats.did_cache.fetches, 149);
    println!(
        "152 jobs: {verdicts:?}, {} PDS requests, {} PLC requests, {elapsed:?}",
        w.pds.total_hits(),
        w.plc.total_hits()
    );
}

/// Signs `car`'s commit again with `sk`: the same repository state under a rotated key.
fn resign(car: &[u8], sk: &k256::ecdsa::SigningKey) -> Vec<u8> {
    use k256::ecdsa::signature::Signer as _;
    let car = read_car(car, CarLimits::default()).unwrap();
    let root = car.roots[0];
    let Ipld::Map(mut commit) = serde_ipld_dagcbor::from_slice(car.get(&root).unwrap()).unwrap()
    else {
        panic!("commit is a map")
    };
    commit.remove("sig");
    let unsigned = serde_ipld_dagcbor::to_vec(&Ipld::Map(commit.clone())).unwrap();
    let sig: k256::ecdsa::Signature = sk.sign(&unsigned);
    let sig = sig.normalize_s().unwrap_or(sig);
    commit.insert("sig".into(), Ipld::Bytes(sig.to_bytes().to_vec()));
    let block = serde_ipld_dagcbor::to_vec(&Ipld::Map(commit)).unwrap();
    let cid = dag_cbor_cid(&block);
    let mut blocks: Vec<(::cid::Cid, Vec<u8>)> = vec![(cid, block)];
    blocks.extend(
        car.blocks
            .iter()
            .filter(|(c, _)| **c != root)
            .map(|(c, b)| (*c, b.clone())),
    );
    write_car(&[cid], blocks.iter().map(|(c, b)| (c, b.as_slice())))
}

fn multikey(sk: &k256::ecdsa::SigningKey) -> String {
    PublicKey::K256(*sk.verifying_key())
        .to_did_key()
        .trim_start_matches("did:key:")
        .to_owned()
}

/// A key rotation while the worker runs: the identity event drops the cached document, so
/// the next job is judged with the new key at once (no failed verification, one more PLC
/// fetch). A rotation without an identity event (a stale cached document) costs one failed
/// verification, then a fresh fetch, and the job is still `valid`.
#[test]
fn key_rotation_invalidates_the_cached_document() {
    let w = world();
    let mut con = redis::Client::open(w.redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let op = w.ops.iter().find(|o| o.action == "create").unwrap().clone();
    let worker = start_worker(test_cfg(&w.plc.url()), w.redis.url());

    add_job(&mut con, "records", &op.job(1));
    wait_until(Duration::from_secs(20), "first proof", || {
        xlen(&mut con, "jsi:proven") == 1
    });
    assert_eq!(w.plc.hits(&op.did), 1);

    // Rotation 1, announced: PLC and PDS switch to key B, then the identity event.
    let b = k256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    w.plc.set(
        &op.did,
        Reply::Json(doc_for(&w.docs[&op.did], &w.pds.url(), Some(&multikey(&b)))),
    );
    w.pds.set(&op.route(), Reply::Car(resign(&op.car, &b)));
    add_job(
        &mut con,
        "identity",
        &[
            ("v".to_owned(), "1".to_owned()),
            ("kind".to_owned(), "identity".to_owned()),
            ("did".to_owned(), op.did.clone()),
        ],
    );
    wait_until(
        Duration::from_secs(20),
        "the identity event invalidates",
        || worker.resolver.stats().invalidations == 1,
    );
    add_job(&mut con, "records", &op.job(2));
    wait_until(Duration::from_secs(20), "second proof", || {
        xlen(&mut con, "jsi:proven") == 2
    });
    assert_eq!(w.plc.hits(&op.did), 2);

    // Rotation 2, unannounced: the cached document is stale.
    let c = k256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
    w.plc.set(
        &op.did,
        Reply::Json(doc_for(&w.docs[&op.did], &w.pds.url(), Some(&multikey(&c)))),
    );
    w.pds.set(&op.route(), Reply::Car(resign(&op.car, &c)));
    add_job(&mut con, "records", &op.job(3));
    wait_until(Duration::from_secs(20), "third proof", || {
        xlen(&mut con, "jsi:proven") == 3
    });
    let stats = worker.finish();

    let proven = read_stream(&mut con, "jsi:proven");
    assert_eq!(by(&proven, "proof"), BTreeMap::from([("valid".into(), 3)]));
    assert_eq!(w.plc.hits(&op.did), 3);
    assert_eq!(stats.stale_key_retries, 1);
    assert_eq!(stats.did_cache.invalidations, 1);
    assert_eq!(
        w.pds.hits(&op.route()),
        4,
        "one failed verification, one refetch"
    );
    assert_eq!(xlen(&mut con, "jsi:dead"), 0);
}

/// Three `prove` processes share a few thousand jobs; two are `kill -9`ed mid-way. The
/// survivor claims what they left pending: every job has exactly one verdict, all `valid`,
/// and nothing stays pending.
#[test]
fn three_workers_two_killed_every_job_proven_exactly_once() {
    let w = world();
    let mut con = redis::Client::open(w.redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let n = support::fault_proxy::sized(3_000, 20_000);
    let valid: Vec<&Op> = w.ops.iter().collect();
    let mut pipe = redis::pipe();
    for i in 0..n {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("jsi:records").arg("*");
        for (k, v) in valid[i % valid.len()].job(i) {
            cmd.arg(k).arg(v);
        }
        pipe.add_command(cmd).ignore();
    }
    let () = pipe.query(&mut con).unwrap();

    let env = |name: &str| -> Vec<(&'static str, String)> {
        vec![
            ("JETSTREAM_INGESTOR__REDIS__URL", w.redis.url()),
            ("JETSTREAM_INGESTOR__PROVE__PLC_URL", w.plc.url()),
            ("JETSTREAM_INGESTOR__PROVE__CONSUMER", name.to_owned()),
            ("JETSTREAM_INGESTOR__PROVE__CLAIM_IDLE", "1s".to_owned()),
            ("JETSTREAM_INGESTOR__PROVE__BLOCK", "200ms".to_owned()),
            ("JETSTREAM_INGESTOR__PROVE__CONCURRENCY", "8".to_owned()),
            ("JETSTREAM_INGESTOR__PROVE__BATCH", "16".to_owned()),
            (
                "JETSTREAM_INGESTOR__PROVE__PER_HOST_RATE",
                "100000".to_owned(),
            ),
            (
                "JETSTREAM_INGESTOR__PROVE__PER_HOST_BURST",
                "100000".to_owned(),
            ),
            (
                "JETSTREAM_INGESTOR__PROVE__PER_HOST_CONCURRENCY",
                "8".to_owned(),
            ),
            (
                "JETSTREAM_INGESTOR__PROVE__ALLOW_PRIVATE_HOSTS",
                "true".to_owned(),
            ),
        ]
    };
    let mut a = Ingestor::spawn(&["prove"], &env("a"));
    let mut b = Ingestor::spawn(&["prove"], &env("b"));
    let mut c = Ingestor::spawn(&["prove"], &env("c"));
    wait_until(Duration::from_secs(120), "a quarter proven", || {
        xlen(&mut con, "jsi:proven") >= n / 4
    });
    a.kill9();
    let mut orphaned = pending_of(&mut con, "a");
    wait_until(Duration::from_secs(120), "half proven", || {
        xlen(&mut con, "jsi:proven") >= n / 2
    });
    b.kill9();
    orphaned.extend(pending_of(&mut con, "b"));
    wait_until(Duration::from_secs(300), "every job proven", || {
        xlen(&mut con, "jsi:proven") >= n && pending(&mut con) == 0
    });
    let peak_kib = support::fault_proxy::vm_hwm_kib(c.child.id()).unwrap();
    assert!(peak_kib < 200 * 1024, "worker peak RSS {peak_kib} KiB");
    c.sigterm();
    assert!(
        c.wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );

    let proven = read_stream(&mut con, "jsi:proven");
    assert_eq!(proven.len(), n, "one verdict per job");
    let ids: HashSet<&str> = proven.iter().map(|e| e["job_id"].as_str()).collect();
    assert_eq!(ids.len(), n, "no job proven twice");
    assert_eq!(
        by(&proven, "proof"),
        BTreeMap::from([("valid".into(), n)]),
        "{:?}",
        by(&proven, "proof_reason")
    );
    assert_eq!(pending(&mut con), 0);
    assert_eq!(xlen(&mut con, "jsi:dead"), 0);
    // What the killed workers held was taken over and proven once.
    assert!(!orphaned.is_empty(), "the killed workers held jobs");
    for id in &orphaned {
        assert_eq!(
            proven.iter().filter(|e| &e["job_id"] == id).count(),
            1,
            "{id}"
        );
    }
    println!(
        "{n} jobs, 3 workers, 2 killed holding {} jobs: {} verdicts, {} PDS requests, \
         survivor peak RSS {} MiB",
        orphaned.len(),
        proven.len(),
        w.pds.total_hits(),
        peak_kib / 1024
    );
}

/// A PDS that answers 500 to everything: every job is `unavailable` after bounded attempts,
/// and once `breaker_failures` attempts in a row failed the host's circuit opens, so later
/// jobs fail fast (`pds_circuit_open`) instead of sending 3 requests each.
#[test]
fn a_dead_pds_opens_its_circuit() {
    let w = world();
    let dead = FakeHttp::start();
    dead.set_fallback(Reply::Status(500, vec![], "{}".into()));
    let mut con = redis::Client::open(w.redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let n = 40;
    for (i, op) in w.ops.iter().take(n).enumerate() {
        w.plc.set(
            &op.did,
            Reply::Json(doc_for(&w.docs[&op.did], &dead.url(), None)),
        );
        add_job(&mut con, "records", &op.job(i));
    }
    let cfg = ProveConfig {
        breaker_failures: 4,
        retry_base: Duration::from_millis(300),
        concurrency: 4,
        ..test_cfg(&w.plc.url())
    };
    let worker = start_worker(cfg, w.redis.url());
    wait_until(Duration::from_secs(60), "every job judged", || {
        xlen(&mut con, "jsi:proven") >= n
    });
    worker.finish();
    let proven = read_stream(&mut con, "jsi:proven");
    assert_eq!(proven.len(), n);
    assert_eq!(
        by(&proven, "proof"),
        BTreeMap::from([("unavailable".into(), n)])
    );
    let reasons = by(&proven, "proof_reason");
    let open = reasons.get("pds_circuit_open").copied().unwrap_or(0);
    let failed = reasons.get("pds_http_500").copied().unwrap_or(0);
    assert_eq!(open + failed, n, "{reasons:?}");
    assert!(open > 0, "{reasons:?}");
    assert!(
        dead.total_hits() < (n as u64) * 3,
        "{} requests",
        dead.total_hits()
    );
    assert_eq!(pending(&mut con), 0);
    println!(
        "{n} jobs on a dead PDS: {reasons:?}, {} requests (without the breaker: {})",
        dead.total_hits(),
        n * 3
    );
}

/// A `did:web` account (its document at `http://{host}/.well-known/did.json`) with a P-256
/// key and a one-record repository built and signed here: the create proves `valid`, a
/// delete of another key proves `valid` by absence; the document is fetched once, from the
/// account's own host, never from the PLC directory.
#[test]
fn a_did_web_account_with_a_p256_key() {
    jetstream_ingestor::telemetry::install_crypto_provider();
    let host = FakeHttp::start();
    let plc = FakeHttp::start();
    let redis_server = redis(false);
    let mut con = redis::Client::open(redis_server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let port = host.url().rsplit(':').next().unwrap().to_owned();
    let did = format!("did:web:127.0.0.1%3A{port}");
    let sk = p256::ecdsa::SigningKey::from_slice(&[5u8; 32]).unwrap();
    let multikey = PublicKey::P256(*sk.verifying_key())
        .to_did_key()
        .trim_start_matches("did:key:")
        .to_owned();
    host.set(
        ".well-known/did.json",
        Reply::Json(
            serde_json::json!({
                "id": did,
                "verificationMethod": [{"id": format!("{did}#atproto"), "type": "Multikey",
                    "controller": did, "publicKeyMultibase": multikey}],
                "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                    "serviceEndpoint": host.url()}]
            })
            .to_string(),
        ),
    );
    // A one-record repository: record, one MST node, the signed commit.
    let record = serde_ipld_dagcbor::to_vec(&Ipld::Map(BTreeMap::from([
        (
            "$type".to_owned(),
            Ipld::String("app.bsky.feed.post".into()),
        ),
        ("text".to_owned(), Ipld::String("hello from did:web".into())),
        (
            "createdAt".to_owned(),
            Ipld::String("2026-12-05T14:00:00.000Z".into()),
        ),
    ])))
    .unwrap();
    let record_cid = dag_cbor_cid(&record);
    let key = "app.bsky.feed.post/3mabcdefghij2";
    let node = serde_ipld_dagcbor::to_vec(&Ipld::Map(BTreeMap::from([
        ("l".to_owned(), Ipld::Null),
        (
            "e".to_owned(),
            Ipld::List(vec![Ipld::Map(BTreeMap::from([
                ("p".to_owned(), Ipld::Integer(0)),
                ("k".to_owned(), Ipld::Bytes(key.as_bytes().to_vec())),
                ("v".to_owned(), Ipld::Link(record_cid)),
                ("t".to_owned(), Ipld::Null),
            ]))]),
        ),
    ])))
    .unwrap();
    let node_cid = dag_cbor_cid(&node);
    let rev = "3mabcdefghik2";
    let mut commit = BTreeMap::from([
        ("did".to_owned(), Ipld::String(did.clone())),
        ("version".to_owned(), Ipld::Integer(3)),
        ("data".to_owned(), Ipld::Link(node_cid)),
        ("rev".to_owned(), Ipld::String(rev.into())),
        ("prev".to_owned(), Ipld::Null),
    ]);
    let unsigned = serde_ipld_dagcbor::to_vec(&Ipld::Map(commit.clone())).unwrap();
    let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(&sk, &unsigned);
    let sig = sig.normalize_s().unwrap_or(sig);
    commit.insert("sig".into(), Ipld::Bytes(sig.to_bytes().to_vec()));
    let commit = serde_ipld_dagcbor::to_vec(&Ipld::Map(commit)).unwrap();
    let commit_cid = dag_cbor_cid(&commit);
    let car = write_car(
        &[commit_cid],
        [
            (&commit_cid, commit.as_slice()),
            (&node_cid, node.as_slice()),
            (&record_cid, record.as_slice()),
        ],
    );
    let (collection, rkey) = key.split_once('/').unwrap();
    host.set(
        &record_route(&did, collection, rkey),
        Reply::Car(car.clone()),
    );
    host.set(
        &record_route(&did, collection, "3maaaaaaaaaa2"),
        Reply::Car(car.clone()),
    );
    let op = |did: &str, rkey: &str, action: &str, cid: &str| Op {
        did: did.to_owned(),
        collection: collection.to_owned(),
        rkey: rkey.to_owned(),
        action: action.to_owned(),
        rev: rev.to_owned(),
        cid: cid.to_owned(),
        car: Vec::new(),
    };
    let jobs = [
        op(&did, rkey, "create", &record_cid.to_string()),
        op(&did, "3maaaaaaaaaa2", "delete", ""),
    ];
    for (i, j) in jobs.iter().enumerate() {
        add_job(&mut con, "records", &j.job(i));
    }
    let worker = start_worker(test_cfg(&plc.url()), redis_server.url());
    wait_until(Duration::from_secs(20), "both proven", || {
        xlen(&mut con, "jsi:proven") >= 2
    });
    worker.finish();
    let proven = read_stream(&mut con, "jsi:proven");
    assert_eq!(by(&proven, "proof"), BTreeMap::from([("valid".into(), 2)]));
    assert_eq!(host.hits(".well-known/did.json"), 1);
    assert_eq!(plc.total_hits(), 0);
    assert!(
        proven
            .iter()
            .all(|e| e["proof_rev"] == rev && e["pds"] == host.url())
    );
}

/// Two workers; one job whose PDS takes longer than `claim_idle` to answer. The worker
/// holding it keeps it claimed (XCLAIM of its own long jobs), so the other never takes it
/// over: one request to the PDS, one verdict.
#[test]
fn a_live_worker_keeps_its_slow_job() {
    let w = world();
    let mut con = redis::Client::open(w.redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let op = w.ops.iter().find(|o| o.action == "create").unwrap().clone();
    w.pds.set(
        &op.route(),
        Reply::Slow(
            Duration::from_millis(3_000),
            Box::new(Reply::Car(op.car.clone())),
        ),
    );
    let cfg = |name: &str| ProveConfig {
        consumer: name.into(),
        request_timeout: Duration::from_secs(10),
        ..test_cfg(&w.plc.url())
    };
    let one = start_worker(cfg("one"), w.redis.url());
    let two = start_worker(cfg("two"), w.redis.url());
    add_job(&mut con, "records", &op.job(1));
    wait_until(Duration::from_secs(20), "the slow job proven", || {
        xlen(&mut con, "jsi:proven") == 1
    });
    let (s1, s2) = (one.finish(), two.finish());
    assert_eq!(w.pds.hits(&op.route()), 1, "taken over while alive");
    assert_eq!(s1.claimed + s2.claimed, 0);
    assert_eq!(s1.duplicates_avoided + s2.duplicates_avoided, 0);
    let proven = read_stream(&mut con, "jsi:proven");
    assert_eq!(by(&proven, "proof"), BTreeMap::from([("valid".into(), 1)]));
    assert_eq!(pending(&mut con), 0);
}

/// With the default `allow_private_hosts = false`, a DID document pointing its PDS at a
/// loopback address (as an IP, or as a name resolving to one), or a PDS redirecting there,
/// gets no request to it: the job is `unavailable` (`pds_private_address`). The configured
/// PLC directory on loopback is trusted.
#[test]
fn pds_endpoints_on_private_addresses_are_refused() {
    let w = world();
    let mut con = redis::Client::open(w.redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let creates: Vec<&Op> = w
        .ops
        .iter()
        .filter(|o| o.action == "create")
        .take(3)
        .collect();
    // A PDS that redirects to a loopback address: the redirect is refused. (Every fake is on
    // loopback; the redirecting one is the PLC fake, trusted as the configured directory.)
    let target = format!(
        "{}/xrpc/com.atproto.sync.getRecord?did={}&collection={}&rkey={}",
        w.pds.url(),
        creates[2].did,
        creates[2].collection,
        creates[2].rkey
    );
    w.plc.set(
        &creates[2].did,
        Reply::Json(doc_for(&w.docs[&creates[2].did], &w.plc.url(), None)),
    );
    w.plc.set(
        &creates[2].route(),
        Reply::Status(302, vec![("location".into(), target)], String::new()),
    );
    let port = w.pds.url().rsplit(':').next().unwrap().to_owned();
    let by_name = format!("http://localhost:{port}");
    w.plc.set(
        &creates[1].did,
        Reply::Json(doc_for(&w.docs[&creates[1].did], &by_name, None)),
    );
    for (i, op) in creates.iter().enumerate() {
        add_job(&mut con, "records", &op.job(i));
    }
    let cfg = ProveConfig {
        allow_private_hosts: false,
        ..test_cfg(&w.plc.url())
    };
    let worker = start_worker(cfg, w.redis.url());
    wait_until(Duration::from_secs(20), "all judged", || {
        xlen(&mut con, "jsi:proven") >= 3
    });
    worker.finish();
    let proven = read_stream(&mut con, "jsi:proven");
    assert_eq!(
        by(&proven, "proof_reason"),
        BTreeMap::from([("pds_private_address".into(), 3)])
    );
    assert_eq!(w.pds.total_hits(), 0, "no request reached the private PDS");
    assert_eq!(
        w.plc.hits(&creates[2].route()),
        1,
        "the redirecting host, asked once"
    );
    assert_eq!(
        w.plc.total_hits(),
        4,
        "the configured PLC directory is trusted"
    );
}
