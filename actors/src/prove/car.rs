//! CARv1 (content-addressed archive) reading and writing: what `com.atproto.sync.getRecord`
//! answers and what a relay frame's `blocks` field holds.
//!
//! Pure, bounded and defensive: the bytes come from someone else's server. Every block's
//! bytes are hashed and compared with its CID while reading, so nothing downstream ever sees a
//! block that does not match its name (a flipped byte anywhere is [`CarError::HashMismatch`]).
//! Only sha2-256 CIDs are accepted (all atproto repository blocks use it).
//!
//! Why a hand parser: the format is a varint-length-prefixed DAG-CBOR header followed by
//! `varint(len) ‖ CID ‖ bytes` sections (~80 lines here). The crates of the field
//! (`iroh-car`, `rs-car`) are async-stream readers with their own CID/IPLD stacks and do not
//! check block hashes; we need a synchronous, size-bounded reader that does.

use std::collections::HashMap;

use ::cid::Cid;
use ::cid::multihash::Multihash;
use ipld_core::ipld::Ipld;
use sha2::{Digest, Sha256};

/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;
/// Multicodec code of DAG-CBOR.
pub const DAG_CBOR: u64 = 0x71;

/// Why a CAR could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarError {
    #[error("CAR truncated at byte {0}")]
    Truncated(usize),
    #[error("CAR too large: {0} bytes or blocks over the limit")]
    TooLarge(usize),
    #[error("CAR header: {0}")]
    Header(String),
    #[error("CAR block CID at byte {at}: {message}")]
    BadCid { at: usize, message: String },
    #[error("CAR block {0}: bytes do not hash to the CID")]
    HashMismatch(Cid),
    #[error("CAR block {0}: hash is not sha2-256")]
    UnsupportedHash(Cid),
}

impl CarError {
    /// A stable reason code for verdicts and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            CarError::Truncated(_) => "car_truncated",
            CarError::TooLarge(_) => "car_too_large",
            CarError::Header(_) => "car_bad_header",
            CarError::BadCid { .. } => "car_bad_cid",
            CarError::HashMismatch(_) => "block_hash_mismatch",
            CarError::UnsupportedHash(_) => "block_unsupported_hash",
        }
    }
}

/// Limits on what one CAR may hold (a getRecord proof is a few KiB: commit, a handful of MST
/// nodes, one record).
#[derive(Debug, Clone, Copy)]
pub struct CarLimits {
    pub max_bytes: usize,
    pub max_blocks: usize,
}

impl Default for CarLimits {
    fn default() -> Self {
        CarLimits {
            max_bytes: 2 * 1024 * 1024,
            max_blocks: 10_000,
        }
    }
}

/// A read CAR: its roots and its blocks, each checked against its CID.
#[derive(Debug, Clone, Default)]
pub struct Car {
    pub roots: Vec<Cid>,
    pub blocks: HashMap<Cid, Vec<u8>>,
}

impl Car {
    /// The block named `cid`, if the CAR holds it.
    pub fn get(&self, cid: &Cid) -> Option<&[u8]> {
        self.blocks.get(cid).map(Vec::as_slice)
    }
}

/// Reads an unsigned LEB128 varint at `*pos` (at most 9 bytes, as multiformats allow).
fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, CarError> {
    let start = *pos;
    let mut value: u64 = 0;
    for i in 0..9 {
        let b = *bytes.get(*pos).ok_or(CarError::Truncated(start))?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(CarError::Header(format!("varint at byte {start} too long")))
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// True when `data` hashes (sha2-256) to the digest inside `cid`.
pub fn block_matches(cid: &Cid, data: &[u8]) -> Result<bool, CarError> {
    let hash = cid.hash();
    if hash.code() != SHA2_256 || hash.size() != 32 {
        return Err(CarError::UnsupportedHash(*cid));
    }
    Ok(Sha256::digest(data).as_slice() == hash.digest())
}

/// The CIDv1 (dag-cbor, sha2-256) of a DAG-CBOR block.
pub fn dag_cbor_cid(data: &[u8]) -> Cid {
    let digest = Sha256::digest(data);
    // A 32-byte digest always fits a 64-byte multihash.
    let hash = Multihash::<64>::wrap(SHA2_256, digest.as_slice()).unwrap_or_default();
    Cid::new_v1(DAG_CBOR, hash)
}

/// Reads a CARv1, checking every block against its CID.
pub fn read_car(bytes: &[u8], limits: CarLimits) -> Result<Car, CarError> {
    if bytes.len() > limits.max_bytes {
        return Err(CarError::TooLarge(bytes.len()));
    }
    let mut pos = 0usize;
    let header_len =
        usize::try_from(read_varint(bytes, &mut pos)?).map_err(|_| CarError::Truncated(pos))?;
    let header_end = pos
        .checked_add(header_len)
        .filter(|end| *end <= bytes.len())
        .ok_or(CarError::Truncated(pos))?;
    let header: Ipld = serde_ipld_dagcbor::from_slice(&bytes[pos..header_end])
        .map_err(|e| CarError::Header(e.to_string()))?;
    let Ipld::Map(map) = header else {
        return Err(CarError::Header("not a map".into()));
    };
    match map.get("version") {
        Some(Ipld::Integer(1)) => {}
        other => return Err(CarError::Header(format!("version {other:?}, want 1"))),
    }
    let roots = match map.get("roots") {
        Some(Ipld::List(list)) => list
            .iter()
            .map(|r| match r {
                Ipld::Link(c) => Ok(*c),
                _ => Err(CarError::Header("a root is not a CID".into())),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(CarError::Header("no roots".into())),
    };
    pos = header_end;

    let mut blocks = HashMap::new();
    while pos < bytes.len() {
        let at = pos;
        let len =
            usize::try_from(read_varint(bytes, &mut pos)?).map_err(|_| CarError::Truncated(at))?;
        let end = pos
            .checked_add(len)
            .filter(|end| *end <= bytes.len())
            .ok_or(CarError::Truncated(at))?;
        let mut section = &bytes[pos..end];
        let cid = Cid::read_bytes(&mut section).map_err(|e| CarError::BadCid {
            at,
            message: e.to_string(),
        })?;
        if !block_matches(&cid, section)? {
            return Err(CarError::HashMismatch(cid));
        }
        if blocks.len() >= limits.max_blocks {
            return Err(CarError::TooLarge(blocks.len()));
        }
        blocks.insert(cid, section.to_vec());
        pos = end;
    }
    Ok(Car { roots, blocks })
}

/// Writes a CARv1 with `roots` and `blocks` in the order given (a fake PDS's getRecord, the
/// proofs we keep).
pub fn write_car<'a>(
    roots: &[Cid],
    blocks: impl IntoIterator<Item = (&'a Cid, &'a [u8])>,
) -> Vec<u8> {
    let header = Ipld::Map(
        [
            (
                "roots".to_owned(),
                Ipld::List(roots.iter().map(|c| Ipld::Link(*c)).collect()),
            ),
            ("version".to_owned(), Ipld::Integer(1)),
        ]
        .into_iter()
        .collect(),
    );
    let header = serde_ipld_dagcbor::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(header.len() + 1024);
    write_varint(&mut out, header.len() as u64);
    out.extend_from_slice(&header);
    for (cid, data) in blocks {
        let cid_bytes = cid.to_bytes();
        write_varint(&mut out, (cid_bytes.len() + data.len()) as u64);
        out.extend_from_slice(&cid_bytes);
        out.extend_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> (Cid, Vec<u8>) {
        let data = serde_ipld_dagcbor::to_vec(&Ipld::String("hello".into())).unwrap();
        (dag_cbor_cid(&data), data)
    }

    #[test]
    fn round_trip() {
        let (cid, data) = sample();
        let bytes = write_car(&[cid], [(&cid, data.as_slice())]);
        let car = read_car(&bytes, CarLimits::default()).unwrap();
        assert_eq!(car.roots, vec![cid]);
        assert_eq!(car.blocks.len(), 1);
        assert_eq!(car.get(&cid), Some(data.as_slice()));
    }

    #[test]
    fn flipped_byte_is_a_hash_mismatch() {
        let (cid, data) = sample();
        let mut bytes = write_car(&[cid], [(&cid, data.as_slice())]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            read_car(&bytes, CarLimits::default()).unwrap_err(),
            CarError::HashMismatch(cid)
        );
    }

    #[test]
    fn truncation_and_limits() {
        let (cid, data) = sample();
        let bytes = write_car(&[cid], [(&cid, data.as_slice())]);
        for cut in 0..bytes.len() - 1 {
            // A proper prefix fails, or (cut right after the header) holds no block.
            if let Ok(car) = read_car(&bytes[..cut], CarLimits::default()) {
                assert!(car.blocks.is_empty(), "cut {cut}");
            }
        }
        let small = CarLimits {
            max_bytes: 10,
            max_blocks: 1,
        };
        assert_eq!(
            read_car(&bytes, small).unwrap_err().reason(),
            "car_too_large"
        );
        let no_blocks = CarLimits {
            max_bytes: 1 << 20,
            max_blocks: 0,
        };
        assert_eq!(
            read_car(&bytes, no_blocks).unwrap_err().reason(),
            "car_too_large"
        );
    }
}
