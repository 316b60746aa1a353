//! The signed repository commit (atproto repo v3, v2 accepted): decoding it from its block
//! and checking its signature over the canonical DAG-CBOR of the commit without `sig`.
//!
//! Pure. The signed bytes are rebuilt by re-encoding the decoded map minus `sig` with
//! `serde_ipld_dagcbor`, which writes canonical DAG-CBOR (map keys sorted length-first); the
//! 148 real commits of the relay fixture verify this way.

use ::cid::Cid;
use ipld_core::ipld::Ipld;

use super::key::{PublicKey, SigCheck};

/// Why a commit block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("commit block missing")]
    Missing,
    #[error("commit malformed: {0}")]
    Malformed(String),
}

impl CommitError {
    pub fn reason(&self) -> &'static str {
        match self {
            CommitError::Missing => "commit_missing",
            CommitError::Malformed(_) => "commit_malformed",
        }
    }
}

/// A decoded commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub did: String,
    pub version: i128,
    /// Root of the repository's MST.
    pub data: Cid,
    /// The repository revision (a TID).
    pub rev: String,
    pub prev: Option<Cid>,
    pub sig: Vec<u8>,
    /// The canonical DAG-CBOR of the commit without `sig`: what was signed.
    pub unsigned: Vec<u8>,
}

impl Commit {
    /// Checks the commit's signature with `key`.
    pub fn verify(&self, key: &PublicKey) -> SigCheck {
        key.verify(&self.unsigned, &self.sig)
    }
}

fn bad(m: impl Into<String>) -> CommitError {
    CommitError::Malformed(m.into())
}

/// Decodes a commit block.
pub fn decode_commit(bytes: &[u8]) -> Result<Commit, CommitError> {
    let ipld: Ipld = serde_ipld_dagcbor::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let Ipld::Map(mut map) = ipld else {
        return Err(bad("not a map"));
    };
    let Some(Ipld::Bytes(sig)) = map.remove("sig") else {
        return Err(bad("no `sig` bytes"));
    };
    let unsigned = serde_ipld_dagcbor::to_vec(&Ipld::Map(map.clone()))
        .map_err(|e| bad(format!("re-encoding: {e}")))?;
    let Some(Ipld::String(did)) = map.remove("did") else {
        return Err(bad("no `did` string"));
    };
    let version = match map.remove("version") {
        Some(Ipld::Integer(v @ (2 | 3))) => v,
        other => return Err(bad(format!("version {other:?}, want 2 or 3"))),
    };
    let Some(Ipld::Link(data)) = map.remove("data") else {
        return Err(bad("no `data` link"));
    };
    let Some(Ipld::String(rev)) = map.remove("rev") else {
        return Err(bad("no `rev` string"));
    };
    let prev = match map.remove("prev") {
        Some(Ipld::Link(c)) => Some(c),
        Some(Ipld::Null) | None => None,
        Some(_) => return Err(bad("`prev` is not a link")),
    };
    Ok(Commit {
        did,
        version,
        data,
        rev,
        prev,
        sig,
        unsigned,
    })
}
