//! The prove room against real data: every op of every signed commit in the 150 relay frames
//! proves `valid` from a getRecord-sized proof cut from its frame, and each kind of tampering
//! gets its verdict.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use ::cid::Cid;

use super::car::{CarLimits, dag_cbor_cid, read_car, write_car};
use super::did::parse_document;
use super::fixtures::{did_docs, frames};
use super::frame::{CommitFrame, decode_frame};
use super::key::PublicKey;
use super::verify::{Claim, Verdict, prove, record_proof_car};

struct Op {
    frame: CommitFrame,
    did: String,
    collection: String,
    rkey: String,
    action: String,
    cid: String,
}

impl Op {
    fn claim(&self) -> Claim<'_> {
        Claim {
            did: &self.did,
            collection: &self.collection,
            rkey: &self.rkey,
            rev: &self.frame.rev,
            operation: &self.action,
            cid: &self.cid,
        }
    }
    fn key(&self) -> String {
        format!("{}/{}", self.collection, self.rkey)
    }
}

fn ops() -> Vec<Op> {
    let mut out = Vec::new();
    for f in frames() {
        let Some(frame) = decode_frame(&f).unwrap() else {
            continue;
        };
        for op in &frame.ops {
            let (collection, rkey) = op.path.split_once('/').unwrap();
            out.push(Op {
                frame: frame.clone(),
                did: frame.repo.clone(),
                collection: collection.to_owned(),
                rkey: rkey.to_owned(),
                action: op.action.clone(),
                cid: op.cid.map(|c| c.to_string()).unwrap_or_default(),
            });
        }
    }
    out
}

fn keys() -> BTreeMap<String, PublicKey> {
    did_docs()
        .into_iter()
        .map(|(did, doc)| {
            let id = parse_document(&did, doc.to_string().as_bytes()).unwrap();
            (did, id.key)
        })
        .collect()
}

const L: CarLimits = CarLimits {
    max_bytes: 2 * 1024 * 1024,
    max_blocks: 10_000,
};

/// Every op of every commit frame, against the frame's whole CAR and against the minimal
/// getRecord proof cut from it: `valid`, with the commit's rev.
#[test]
fn every_real_commit_op_proves_valid() {
    let ops = ops();
    let keys = keys();
    let frames: std::collections::BTreeSet<_> = ops.iter().map(|o| o.frame.commit).collect();
    let count = |a: &str| ops.iter().filter(|o| o.action == a).count();
    assert_eq!(frames.len(), 148);
    assert_eq!(
        (ops.len(), count("create"), count("update"), count("delete")),
        (150, 144, 2, 4)
    );
    for op in &ops {
        let key = &keys[&op.did];
        let whole = prove(&op.claim(), &op.frame.blocks, key, L);
        assert_eq!(whole.verdict, Verdict::Valid, "{} {}", op.did, op.key());
        assert_eq!(whole.rev.as_deref(), Some(op.frame.rev.as_str()));
        assert_eq!(whole.commit, Some(op.frame.commit));
        let small = record_proof_car(&op.frame.blocks, &op.key()).unwrap();
        assert!(small.len() <= op.frame.blocks.len());
        let p = prove(&op.claim(), &small, key, L);
        assert_eq!(p.verdict, Verdict::Valid, "{} {}", op.did, op.key());
    }
}

fn first(action: &str) -> Op {
    ops().into_iter().find(|o| o.action == action).unwrap()
}

/// Re-encodes a proof CAR with one block's bytes changed and renamed to its new CID where
/// `rename` (a consistent substitution) or left under the old CID (a corrupted block).
fn proof_blocks(op: &Op) -> (Cid, Vec<(Cid, Vec<u8>)>) {
    let small = record_proof_car(&op.frame.blocks, &op.key()).unwrap();
    let car = read_car(&small, L).unwrap();
    // Keep write order: commit, path, record (re-read from the small CAR's sections).
    let mut order: Vec<(Cid, Vec<u8>)> = car.blocks.into_iter().collect();
    order.sort_by_key(|(c, _)| c.to_bytes());
    (car.roots[0], order)
}

fn car_of(root: Cid, blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
    write_car(&[root], blocks.iter().map(|(c, b)| (c, b.as_slice())))
}

#[test]
fn tampering_gets_its_verdict() {
    let keys = keys();
    let op = first("create");
    let key = &keys[&op.did];
    let (root, blocks) = proof_blocks(&op);
    let record_cid = Cid::try_from(op.cid.as_str()).unwrap();
    let invalid = |car: &[u8], claim: &Claim<'_>, k: &PublicKey| prove(claim, car, k, L).verdict;

    // A flipped record byte, left under the record's CID: the block no longer hashes to it.
    let mut flipped = blocks.clone();
    let rec = flipped.iter_mut().find(|(c, _)| *c == record_cid).unwrap();
    let last = rec.1.len() - 1;
    rec.1[last] ^= 0x01;
    assert_eq!(
        invalid(&car_of(root, &flipped), &op.claim(), key),
        Verdict::Invalid("block_hash_mismatch".into())
    );

    // The job claims another CID than the signed repository holds, at the same rev.
    let other = dag_cbor_cid(b"\xa0");
    let other_s = other.to_string();
    let mut claim = op.claim();
    claim.cid = &other_s;
    let p = prove(&claim, &car_of(root, &blocks), key, L);
    assert_eq!(p.verdict, Verdict::Invalid("record_cid_mismatch".into()));
    assert_eq!(p.record, Some(record_cid));

    // The same, with the repository a rev ahead: superseded, not invalid.
    let older = "2222222222222";
    claim.rev = older;
    assert_eq!(
        invalid(&car_of(root, &blocks), &claim, key),
        Verdict::Superseded("record_changed")
    );

    // The record block left out of the proof.
    let without: Vec<_> = blocks
        .iter()
        .filter(|(c, _)| *c != record_cid)
        .cloned()
        .collect();
    assert_eq!(
        invalid(&car_of(root, &without), &op.claim(), key),
        Verdict::Invalid("record_block_missing".into())
    );

    // An MST node left out: the path breaks.
    let commit =
        super::commit::decode_commit(&blocks.iter().find(|(c, _)| *c == root).unwrap().1).unwrap();
    let no_root: Vec<_> = blocks
        .iter()
        .filter(|(c, _)| *c != commit.data)
        .cloned()
        .collect();
    assert_eq!(
        invalid(&car_of(root, &no_root), &op.claim(), key),
        Verdict::Invalid("mst_block_missing".into())
    );

    // Another account's key (the wrong key, or a stale DID document after rotation).
    let wrong = keys
        .iter()
        .find(|(d, k)| **d != op.did && *k != key)
        .unwrap()
        .1;
    assert_eq!(
        invalid(&car_of(root, &blocks), &op.claim(), wrong),
        Verdict::Invalid("signature_invalid".into())
    );

    // A CAR for another DID (a PDS answering with the wrong repository).
    let other_op = ops()
        .into_iter()
        .find(|o| o.did != op.did && o.action == "create")
        .unwrap();
    let other_car = record_proof_car(&other_op.frame.blocks, &other_op.key()).unwrap();
    let p = prove(&op.claim(), &other_car, key, L);
    assert_eq!(p.verdict, Verdict::Invalid("commit_did_mismatch".into()));

    // A re-signed-looking commit: `data` swapped to another tree keeps the old signature.
    let mut ipld: ipld_core::ipld::Ipld =
        serde_ipld_dagcbor::from_slice(&blocks.iter().find(|(c, _)| *c == root).unwrap().1)
            .unwrap();
    if let ipld_core::ipld::Ipld::Map(m) = &mut ipld {
        m.insert(
            "rev".into(),
            ipld_core::ipld::Ipld::String(op.frame.rev.clone()),
        );
        m.insert("data".into(), ipld_core::ipld::Ipld::Link(other));
    }
    let forged = serde_ipld_dagcbor::to_vec(&ipld).unwrap();
    let forged_cid = dag_cbor_cid(&forged);
    let mut swapped: Vec<_> = blocks.iter().filter(|(c, _)| *c != root).cloned().collect();
    swapped.push((forged_cid, forged));
    assert_eq!(
        invalid(&car_of(forged_cid, &swapped), &op.claim(), key),
        Verdict::Invalid("signature_invalid".into())
    );

    // Not a CAR at all, and a CAR with no root block.
    assert_eq!(
        invalid(b"<html>rate limited</html>", &op.claim(), key).as_str(),
        "invalid"
    );
    let rootless: Vec<_> = blocks.iter().filter(|(c, _)| *c != root).cloned().collect();
    assert_eq!(
        invalid(&car_of(root, &rootless), &op.claim(), key),
        Verdict::Invalid("commit_missing".into())
    );
}

/// Deletes: the frame's proof shows the key absent (`valid`); a proof in which the key is
/// present is `invalid` at the same rev and `superseded` (re-created) at a newer one; a
/// create whose key is absent from a newer commit is `superseded` (deleted since).
#[test]
fn deletes_and_history() {
    let keys = keys();
    let del = first("delete");
    let key = &keys[&del.did];
    assert_eq!(
        prove(&del.claim(), &del.frame.blocks, key, L).verdict,
        Verdict::Valid
    );

    // A create checked against a commit of the same account where the key is absent: take
    // the delete's proof and ask about a key that is not there.
    let mut ghost = del.claim();
    ghost.operation = "create";
    ghost.cid = "bafyreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454";
    let car = record_proof_car(&del.frame.blocks, &del.key()).unwrap();
    assert_eq!(
        prove(&ghost, &car, key, L).verdict,
        Verdict::Invalid("record_absent".into())
    );
    ghost.rev = "2222222222222";
    assert_eq!(
        prove(&ghost, &car, key, L).verdict,
        Verdict::Superseded("record_deleted")
    );

    // A delete job for a key the repository holds.
    let create = ops()
        .into_iter()
        .find(|o| o.action == "create" && o.did == del.did)
        .unwrap_or_else(|| first("create"));
    let ck = &keys[&create.did];
    let mut gone = create.claim();
    gone.operation = "delete";
    gone.cid = "";
    assert_eq!(
        prove(&gone, &create.frame.blocks, ck, L).verdict,
        Verdict::Invalid("record_present".into())
    );
    gone.rev = "2222222222222";
    assert_eq!(
        prove(&gone, &create.frame.blocks, ck, L).verdict,
        Verdict::Superseded("record_recreated")
    );
}

/// Proof throughput on one core: every op of the relay frames judged from its minimal
/// getRecord CAR (CAR read with every block hashed, commit decoded and re-encoded, ECDSA
/// verify, MST walk, CID compare), repeated for about two seconds. Run in release:
/// `cargo test --release -p jetstream-ingestor-actors --lib prove::tests::timing -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release"]
fn timing_proofs_per_second() {
    let ops = ops();
    let keys = keys();
    let cars: Vec<Vec<u8>> = ops
        .iter()
        .map(|o| record_proof_car(&o.frame.blocks, &o.key()).unwrap())
        .collect();
    let start = std::time::Instant::now();
    let mut n = 0u64;
    while start.elapsed() < std::time::Duration::from_secs(2) {
        for (op, car) in ops.iter().zip(&cars) {
            let p = prove(&op.claim(), car, &keys[&op.did], L);
            assert_eq!(p.verdict, Verdict::Valid);
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes: usize = cars.iter().map(Vec::len).sum();
    println!(
        "{n} proofs in {secs:.2} s: {:.0} proofs/s on one core, {:.1} µs each; mean proof CAR {} bytes",
        n as f64 / secs,
        secs * 1e6 / n as f64,
        bytes / cars.len()
    );
}
