//! Test support: builds a canonical MST from a set of keys, so the interop commit-proof
//! vectors (root CIDs before and after a commit) and a full repository export can be
//! checked against an independent construction of the same tree. Compiled for tests only.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use ::cid::Cid;
use ipld_core::ipld::Ipld;

use super::car::dag_cbor_cid;
use super::mst::{common_prefix_len, key_height};

/// A built tree: its root and every node block.
pub struct Built {
    pub root: Cid,
    pub blocks: HashMap<Cid, Vec<u8>>,
}

/// Builds the canonical MST of `items` (key → value CID).
pub fn build(items: &BTreeMap<Vec<u8>, Cid>) -> Built {
    let keyed: Vec<(&[u8], Cid, u32)> = items
        .iter()
        .map(|(k, v)| (k.as_slice(), *v, key_height(k)))
        .collect();
    let top = keyed.iter().map(|k| k.2).max().unwrap_or(0);
    let mut blocks = HashMap::new();
    let root = node(&keyed, top, &mut blocks);
    Built { root, blocks }
}

fn push<'k>(
    entries: &mut Vec<Ipld>,
    prev: &mut &'k [u8],
    key: &'k [u8],
    value: Cid,
    t: Option<Cid>,
) {
    let p = common_prefix_len(prev, key);
    entries.push(Ipld::Map(BTreeMap::from([
        ("p".to_owned(), Ipld::Integer(p as i128)),
        ("k".to_owned(), Ipld::Bytes(key[p..].to_vec())),
        ("v".to_owned(), Ipld::Link(value)),
        ("t".to_owned(), t.map_or(Ipld::Null, Ipld::Link)),
    ])));
    *prev = key;
}

fn node(keys: &[(&[u8], Cid, u32)], layer: u32, blocks: &mut HashMap<Cid, Vec<u8>>) -> Cid {
    // Keys at this layer split the rest into gaps, each a subtree one layer down.
    let mut left = None;
    let mut entries: Vec<Ipld> = Vec::new();
    let mut gap_start = 0;
    let mut prev: &[u8] = &[];
    let mut pending: Option<(&[u8], Cid)> = None;
    let subtree = |gap: &[(&[u8], Cid, u32)], blocks: &mut HashMap<Cid, Vec<u8>>| {
        (!gap.is_empty()).then(|| node(gap, layer - 1, blocks))
    };
    for (i, (key, value, h)) in keys.iter().enumerate() {
        if *h == layer {
            let t = subtree(&keys[gap_start..i], blocks);
            match pending.take() {
                None => left = t,
                Some((k, v)) => push(&mut entries, &mut prev, k, v, t),
            }
            pending = Some((key, *value));
            gap_start = i + 1;
        }
    }
    let t = subtree(&keys[gap_start..], blocks);
    match pending.take() {
        None => left = t,
        Some((k, v)) => push(&mut entries, &mut prev, k, v, t),
    }
    let ipld = Ipld::Map(BTreeMap::from([
        ("l".to_owned(), left.map_or(Ipld::Null, Ipld::Link)),
        ("e".to_owned(), Ipld::List(entries)),
    ]));
    let bytes = serde_ipld_dagcbor::to_vec(&ipld).unwrap();
    let cid = dag_cbor_cid(&bytes);
    blocks.insert(cid, bytes);
    cid
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::prove::car::{Car, CarLimits, read_car};
    use crate::prove::fixtures::{interop_json, prove_fixture};
    use crate::prove::mst::{Lookup, walk};

    fn cid(s: &str) -> Cid {
        Cid::try_from(s).unwrap()
    }

    /// Every commit-proof vector: the tree of `keys` has root `rootBeforeCommit`; after the
    /// adds and dels it has `rootAfterCommit`; and the blocks in `blocksInProof` alone prove
    /// each added key present (with `leafValue`) and each deleted key absent in the new tree.
    #[test]
    fn interop_commit_proof_vectors() {
        let vectors = interop_json("firehose/commit-proof-fixtures.json");
        let vectors = vectors.as_array().unwrap();
        assert_eq!(vectors.len(), 6);
        let mut proofs = 0;
        for v in vectors {
            let name = v["comment"].as_str().unwrap();
            let leaf = cid(v["leafValue"].as_str().unwrap());
            let strs = |f: &str| -> Vec<Vec<u8>> {
                v[f].as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap().as_bytes().to_vec())
                    .collect()
            };
            let mut items: BTreeMap<Vec<u8>, Cid> =
                strs("keys").into_iter().map(|k| (k, leaf)).collect();
            assert_eq!(
                build(&items).root,
                cid(v["rootBeforeCommit"].as_str().unwrap()),
                "{name}"
            );
            for k in strs("adds") {
                items.insert(k, leaf);
            }
            for k in strs("dels") {
                items.remove(&k);
            }
            let after = build(&items);
            assert_eq!(
                after.root,
                cid(v["rootAfterCommit"].as_str().unwrap()),
                "{name}"
            );

            let in_proof: Vec<Cid> = v["blocksInProof"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| cid(c.as_str().unwrap()))
                .collect();
            let car = Car {
                roots: vec![after.root],
                blocks: in_proof
                    .iter()
                    .filter_map(|c| after.blocks.get(c).map(|b| (*c, b.clone())))
                    .collect(),
            };
            for k in strs("adds") {
                let w = walk(&car, after.root, &k).unwrap();
                assert_eq!(w.lookup, Lookup::Present(leaf), "{name}");
                proofs += 1;
            }
            for k in strs("dels").into_iter().filter(|k| !items.contains_key(k)) {
                let w = walk(&car, after.root, &k).unwrap();
                assert_eq!(w.lookup, Lookup::Absent, "{name}");
                proofs += 1;
            }
        }
        assert_eq!(proofs, 10); // 7 adds, 3 deletes
    }

    /// The real repository export: its MST rebuilt from the independent record list has the
    /// commit's data CID, and every record is proven present with its CID by walking the
    /// export's own blocks; keys next to them are proven absent.
    #[test]
    fn real_repository_export() {
        let car = read_car(&prove_fixture("repo/repo.car"), CarLimits::default()).unwrap();
        let expected = String::from_utf8(prove_fixture("repo/car_expected_records.tsv")).unwrap();
        let meta = String::from_utf8(prove_fixture("repo/car_expected_commit.txt")).unwrap();
        let data = meta
            .lines()
            .find_map(|l| l.strip_prefix("Data CID: "))
            .map(cid)
            .unwrap();
        let items: BTreeMap<Vec<u8>, Cid> = expected
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, c) = l.split_once('\t').unwrap();
                (k.as_bytes().to_vec(), cid(c))
            })
            .collect();
        assert_eq!(items.len(), 23);
        let built = build(&items);
        assert_eq!(built.root, data);
        for (cid, bytes) in &built.blocks {
            assert_eq!(car.get(cid), Some(bytes.as_slice()), "node {cid} differs");
        }
        for (k, c) in &items {
            assert_eq!(walk(&car, data, k).unwrap().lookup, Lookup::Present(*c));
            let mut next = k.clone();
            next.push(b'0');
            if !items.contains_key(&next) {
                assert_eq!(walk(&car, data, &next).unwrap().lookup, Lookup::Absent);
            }
        }
    }

    fn one_node_car(entries: Vec<(&str, Option<Cid>)>, left: Option<Cid>) -> (Car, Cid) {
        let leaf = cid("bafyreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454");
        let mut e = Vec::new();
        let mut prev: &[u8] = &[];
        for (k, t) in &entries {
            push(&mut e, &mut prev, k.as_bytes(), leaf, *t);
        }
        let ipld = Ipld::Map(BTreeMap::from([
            ("l".to_owned(), left.map_or(Ipld::Null, Ipld::Link)),
            ("e".to_owned(), Ipld::List(e)),
        ]));
        let bytes = serde_ipld_dagcbor::to_vec(&ipld).unwrap();
        let root = dag_cbor_cid(&bytes);
        let car = Car {
            roots: vec![root],
            blocks: HashMap::from([(root, bytes)]),
        };
        (car, root)
    }

    /// Badly shaped trees that could hide a key are refused, not walked.
    #[test]
    fn malformed_trees_are_refused() {
        let reason =
            |car: &Car, root: Cid, key: &str| walk(car, root, key.as_bytes()).unwrap_err().reason();
        // Keys out of order (both of height 0).
        let (car, root) = one_node_car(vec![("A0/374913", None), ("A0/055903", None)], None);
        assert_eq!(reason(&car, root, "A0/1"), "mst_malformed");
        // Keys of different heights in one node.
        let (car, root) = one_node_car(vec![("A0/374913", None), ("B1/986427", None)], None);
        assert_eq!(reason(&car, root, "A0/1"), "mst_malformed");
        // A layer-0 node pointing to a subtree.
        let sub = dag_cbor_cid(b"\xa0");
        let (car, root) = one_node_car(vec![("A0/374913", Some(sub))], None);
        assert_eq!(reason(&car, root, "B"), "mst_malformed");
        // A root that is an empty node pointing to a subtree.
        let (car, root) = one_node_car(vec![], Some(sub));
        assert_eq!(reason(&car, root, "B"), "mst_malformed");
        // The empty tree proves every key absent; a missing subtree block fails the proof.
        let (car, root) = one_node_car(vec![], None);
        assert_eq!(walk(&car, root, b"A0/1").unwrap().lookup, Lookup::Absent);
        let (car, root) = one_node_car(vec![("B1/986427", Some(sub))], None);
        assert_eq!(reason(&car, root, "C"), "mst_block_missing");
        assert_eq!(walk(&car, root, b"A").unwrap().lookup, Lookup::Absent);
    }
}
