//! Test support for the prove room: the files under `tests/fixtures/prove` (provenance
//! beside them). A missing file fails the test that asked, naming it. Compiled for tests only.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// The bytes of `rel` under `tests/fixtures/prove`.
pub fn prove_fixture(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/prove")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fixture {} unreadable ({e}): it is part of the repository, restore it with \
             `git checkout -- tests/fixtures`",
            path.display()
        )
    })
}

/// An interop vector file (`interop/<rel>`) as JSON.
pub fn interop_json(rel: &str) -> Value {
    serde_json::from_slice(&prove_fixture(&format!("interop/{rel}"))).unwrap()
}

/// DID → DID document of every commit author in the relay frames.
pub fn did_docs() -> BTreeMap<String, Value> {
    let raw = zstd::decode_all(prove_fixture("relay-frames/did_docs.json.zst").as_slice()).unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// The 150 raw relay frames.
pub fn frames() -> Vec<Vec<u8>> {
    let raw = zstd::decode_all(prove_fixture("relay-frames/frames.bin.zst").as_slice()).unwrap();
    super::frame::split_frames(&raw)
        .unwrap()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}
