//! Relay frames (`com.atproto.sync.subscribeRepos`): a `#commit` message's repository, rev,
//! commit CID, ops and `blocks` CAR. Used to check the verifier against real signed commits
//! (the relay fixture) and by the fake PDS the tests run, which serves getRecord proofs cut
//! from those blocks.
//!
//! Pure: two DAG-CBOR objects back to back, the header `{op, t}` then the body.

use std::io::Cursor;

use ::cid::Cid;
use ipld_core::ipld::Ipld;

/// One op of a commit: `create` / `update` / `delete` of `collection/rkey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameOp {
    pub action: String,
    pub path: String,
    /// The record's CID (none on delete).
    pub cid: Option<Cid>,
}

/// A `#commit` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitFrame {
    pub repo: String,
    pub rev: String,
    pub commit: Cid,
    pub ops: Vec<FrameOp>,
    /// A CARv1 with the commit, the MST nodes on every op's path and the records.
    pub blocks: Vec<u8>,
}

/// Decodes a frame; `Ok(None)` for frames other than `#commit`.
pub fn decode_frame(bytes: &[u8]) -> Result<Option<CommitFrame>, String> {
    let mut cur = Cursor::new(bytes);
    let header: Ipld =
        serde_ipld_dagcbor::de::from_reader_once(&mut cur).map_err(|e| format!("header: {e}"))?;
    let Ipld::Map(header) = header else {
        return Err("header is not a map".into());
    };
    if header.get("t") != Some(&Ipld::String("#commit".into())) {
        return Ok(None);
    }
    let body: Ipld =
        serde_ipld_dagcbor::de::from_reader_once(&mut cur).map_err(|e| format!("body: {e}"))?;
    let Ipld::Map(mut body) = body else {
        return Err("body is not a map".into());
    };
    let (
        Some(Ipld::String(repo)),
        Some(Ipld::String(rev)),
        Some(Ipld::Link(commit)),
        Some(Ipld::Bytes(blocks)),
        Some(Ipld::List(raw_ops)),
    ) = (
        body.remove("repo"),
        body.remove("rev"),
        body.remove("commit"),
        body.remove("blocks"),
        body.remove("ops"),
    )
    else {
        return Err("commit body lacks repo/rev/commit/blocks/ops".into());
    };
    let mut ops = Vec::with_capacity(raw_ops.len());
    for op in raw_ops {
        let Ipld::Map(mut op) = op else {
            return Err("op is not a map".into());
        };
        let (Some(Ipld::String(action)), Some(Ipld::String(path))) =
            (op.remove("action"), op.remove("path"))
        else {
            return Err("op lacks action/path".into());
        };
        let cid = match op.remove("cid") {
            Some(Ipld::Link(c)) => Some(c),
            _ => None,
        };
        ops.push(FrameOp { action, path, cid });
    }
    Ok(Some(CommitFrame {
        repo,
        rev,
        commit,
        ops,
        blocks,
    }))
}

/// Splits the fixture format `[u32 LE length][frame]…` into frames.
pub fn split_frames(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or("truncated length prefix")?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err("truncated frame".into());
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    Ok(out)
}
