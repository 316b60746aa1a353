//! Merkle Search Tree proofs: walking an atproto repository's MST from its root (the signed
//! commit's `data`) to one key `collection/rkey`, giving proof of presence (with the value
//! CID) or proof of absence.
//!
//! Pure. The blocks come from a CAR whose block hashes were already checked (`car.rs`), so a
//! node cannot be swapped for another with the same name; what this file checks is that the
//! nodes on the path form a well-shaped tree, because a badly shaped one could hide a key:
//! every key sits at the layer its hash gives (leading zero bits of SHA-256 / 2, fanout 4),
//! a child is exactly one layer below its parent, keys increase strictly inside a node and
//! stay between the neighbours that led to it, and only the root of an empty tree may be an
//! empty leaf. A missing block on the path is a failed proof, never a guess.

use ::cid::Cid;
use ipld_core::ipld::Ipld;
use sha2::{Digest, Sha256};

use super::car::Car;

/// Why an MST proof failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MstError {
    #[error("MST block {0} missing from the proof")]
    MissingBlock(Cid),
    #[error("MST node {cid}: {message}")]
    Malformed { cid: Cid, message: String },
}

impl MstError {
    pub fn reason(&self) -> &'static str {
        match self {
            MstError::MissingBlock(_) => "mst_block_missing",
            MstError::Malformed { .. } => "mst_malformed",
        }
    }
}

/// What the tree says about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The key is present with this value (a record CID).
    Present(Cid),
    Absent,
}

/// One entry of a node, with its full key reconstructed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Cid,
    pub right: Option<Cid>,
}

/// A decoded MST node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub left: Option<Cid>,
    pub entries: Vec<Entry>,
}

/// The layer of `key`: leading zero bits of SHA-256(key), divided by 2 (fanout 4).
pub fn key_height(key: &[u8]) -> u32 {
    let digest = Sha256::digest(key);
    let mut zeros = 0;
    for b in digest {
        if b == 0 {
            zeros += 8;
        } else {
            zeros += b.leading_zeros();
            break;
        }
    }
    zeros / 2
}

/// Length of the common prefix of `a` and `b`, in bytes.
pub fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn malformed(cid: Cid, message: impl Into<String>) -> MstError {
    MstError::Malformed {
        cid,
        message: message.into(),
    }
}

fn link(cid: Cid, v: Option<&Ipld>, what: &str) -> Result<Option<Cid>, MstError> {
    match v {
        Some(Ipld::Link(c)) => Ok(Some(*c)),
        Some(Ipld::Null) => Ok(None),
        _ => Err(malformed(cid, format!("`{what}` is not a link or null"))),
    }
}

/// Decodes the node block `cid`, reconstructing the prefix-compressed keys.
pub fn decode_node(cid: Cid, bytes: &[u8]) -> Result<Node, MstError> {
    let ipld: Ipld =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| malformed(cid, e.to_string()))?;
    let Ipld::Map(map) = ipld else {
        return Err(malformed(cid, "not a map"));
    };
    if map.len() != 2 {
        return Err(malformed(cid, "node must have exactly `l` and `e`"));
    }
    let left = link(cid, map.get("l"), "l")?;
    let Some(Ipld::List(raw)) = map.get("e") else {
        return Err(malformed(cid, "`e` is not a list"));
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(raw.len());
    for e in raw {
        let Ipld::Map(e) = e else {
            return Err(malformed(cid, "entry is not a map"));
        };
        if e.len() != 4 {
            return Err(malformed(cid, "entry must have exactly `p`, `k`, `v`, `t`"));
        }
        let (Some(Ipld::Integer(p)), Some(Ipld::Bytes(suffix)), Some(Ipld::Link(value))) =
            (e.get("p"), e.get("k"), e.get("v"))
        else {
            return Err(malformed(cid, "entry `p`/`k`/`v` mistyped"));
        };
        let right = link(cid, e.get("t"), "t")?;
        let prev: &[u8] = entries.last().map_or(&[], |p| p.key.as_slice());
        let p = usize::try_from(*p)
            .ok()
            .filter(|p| *p <= prev.len())
            .ok_or_else(|| malformed(cid, "prefix length out of range"))?;
        let mut key = prev[..p].to_vec();
        key.extend_from_slice(suffix);
        entries.push(Entry {
            key,
            value: *value,
            right,
        });
    }
    Ok(Node { left, entries })
}

/// The result of walking to a key: the answer and the nodes visited (the proof), root first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub lookup: Lookup,
    pub path: Vec<Cid>,
}

/// Walks from `root` to `key` through the blocks of `car`.
pub fn walk(car: &Car, root: Cid, key: &[u8]) -> Result<Walk, MstError> {
    let mut path = Vec::new();
    let mut cid = root;
    // The layer the next node must be at (unknown for the root until its keys say).
    let mut expected: Option<u32> = None;
    let mut lo: Option<Vec<u8>> = None;
    let mut hi: Option<Vec<u8>> = None;
    loop {
        let bytes = car.get(&cid).ok_or(MstError::MissingBlock(cid))?;
        let node = decode_node(cid, bytes)?;
        path.push(cid);
        let is_root = expected.is_none();

        let layer = match (node.entries.first(), expected) {
            (Some(first), _) => key_height(&first.key),
            (None, Some(l)) => l,
            (None, None) => {
                // The root of an empty tree, and nothing else, has no entries and no subtree.
                if node.left.is_some() {
                    return Err(malformed(
                        cid,
                        "root is an empty node pointing to a subtree",
                    ));
                }
                return Ok(Walk {
                    lookup: Lookup::Absent,
                    path,
                });
            }
        };
        if let Some(want) = expected
            && layer != want
        {
            return Err(malformed(
                cid,
                format!("node at layer {layer}, want {want}"),
            ));
        }
        if node.entries.is_empty() && (layer == 0 || node.left.is_none()) && !is_root {
            return Err(malformed(cid, "empty node that leads nowhere"));
        }
        let mut prev: Option<&[u8]> = lo.as_deref();
        for e in &node.entries {
            if key_height(&e.key) != layer {
                return Err(malformed(cid, "keys of different layers in one node"));
            }
            if prev.is_some_and(|p| p >= e.key.as_slice()) {
                return Err(malformed(cid, "keys out of order"));
            }
            prev = Some(&e.key);
        }
        if let (Some(last), Some(hi)) = (node.entries.last(), hi.as_deref())
            && last.key.as_slice() >= hi
        {
            return Err(malformed(cid, "key beyond the parent's bound"));
        }

        let idx = node.entries.partition_point(|e| e.key.as_slice() < key);
        if let Some(e) = node.entries.get(idx)
            && e.key == key
        {
            return Ok(Walk {
                lookup: Lookup::Present(e.value),
                path,
            });
        }
        let subtree = if idx == 0 {
            node.left
        } else {
            node.entries[idx - 1].right
        };
        let Some(next) = subtree else {
            return Ok(Walk {
                lookup: Lookup::Absent,
                path,
            });
        };
        if layer == 0 {
            return Err(malformed(cid, "a layer-0 node with a subtree"));
        }
        if idx > 0 {
            lo = Some(node.entries[idx - 1].key.clone());
        }
        if let Some(e) = node.entries.get(idx) {
            hi = Some(e.key.clone());
        }
        expected = Some(layer - 1);
        cid = next;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::prove::fixtures::{interop_json, prove_fixture};

    #[test]
    fn interop_key_heights() {
        let v = interop_json("mst/key_heights.json");
        let v = v.as_array().unwrap();
        assert_eq!(v.len(), 9);
        for case in v {
            let key = case["key"].as_str().unwrap();
            assert_eq!(
                u64::from(key_height(key.as_bytes())),
                case["height"].as_u64().unwrap(),
                "{key}"
            );
        }
    }

    /// `example_keys.txt`: `A3/578971` is a key of height 3 (the digit after the letter).
    #[test]
    fn interop_example_keys() {
        let text = String::from_utf8(prove_fixture("interop/mst/example_keys.txt")).unwrap();
        let keys: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert!(keys.len() >= 100, "{}", keys.len());
        for key in &keys {
            let h: u32 = key[1..2].parse().unwrap();
            assert_eq!(key_height(key.as_bytes()), h, "{key}");
        }
    }

    #[test]
    fn interop_common_prefix() {
        let v = interop_json("mst/common_prefix.json");
        let v = v.as_array().unwrap();
        assert_eq!(v.len(), 13);
        for case in v {
            let (l, r) = (
                case["left"].as_str().unwrap(),
                case["right"].as_str().unwrap(),
            );
            assert_eq!(
                common_prefix_len(l.as_bytes(), r.as_bytes()) as u64,
                case["len"].as_u64().unwrap(),
                "{l:?} {r:?}"
            );
        }
    }
}
