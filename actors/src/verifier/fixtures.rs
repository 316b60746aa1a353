//! Test support for the verifier room: the real Jetstream fixture records and the
//! reference DAG-CBOR encoder (`serde_json::Value` → `Ipld` → `serde_ipld_dagcbor`) the
//! hand-written one is checked against. Compiled for tests only.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use ::cid::Cid;
use base64::Engine as _;
use ipld_core::ipld::Ipld;
use serde_json::Value;

/// A real like record from the production corpus, and its CID.
pub const LIKE: &str = r#"{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:08.999Z","subject":{"cid":"bafyreiftot7eltsc3f6g4qktykmbv6jcmdmhcx5osscan6jpdxkpqcmcza","uri":"at://did:plc:r2zybk6op3ymzpz6jhqpkoy5/app.bsky.feed.post/3mpsjbtci2c2o"}}"#;
pub const LIKE_CID: &str = "bafyreiguce4jh7kcbmof3pmcvasifqtw24b6isakj5ve5ga2b4z4alpc4i";
/// A real blob CID (CIDv1, raw codec).
pub const BLOB_LINK: &str = "bafkreias7oxbr6swsuggccmtnqpoeami4jza5x4w3urltn6gzhqf4k6k2e";

/// Create/update commits with a record and a CID in [`fixture_texts`] (146 + 7).
pub const FIXTURE_RECORDS: usize = 153;

/// The text of `rel` under the repository's Jetstream test fixtures (`tests/fixtures/jetstream`,
/// provenance beside them). A missing file fails the test that asked, naming it: the
/// fixtures are part of the repository.
pub fn fixture_text(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/jetstream")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "fixture {} unreadable ({e}): it is part of the repository, restore it with \
             `git checkout -- tests/fixtures`",
            path.display()
        )
    })
}

/// The real Jetstream v1 event files: the production corpus and the golden sample.
pub fn fixture_texts() -> Vec<String> {
    [
        "v1-production-corpus/expected_v1.jsonl",
        "v1-golden-sample/golden_v1.jsonl",
    ]
    .into_iter()
    .map(fixture_text)
    .collect()
}

/// (record JSON exactly as on the wire, claimed CID) of every create/update commit.
pub fn fixture_records() -> Vec<(String, String)> {
    let mut records = Vec::new();
    for text in fixture_texts() {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            #[derive(serde::Deserialize)]
            struct Line<'a> {
                #[serde(borrow)]
                commit: Option<Commit<'a>>,
            }
            #[derive(serde::Deserialize)]
            struct Commit<'a> {
                #[serde(borrow)]
                record: Option<&'a serde_json::value::RawValue>,
                cid: Option<String>,
            }
            let parsed: Line = serde_json::from_str(line).unwrap();
            if let Some(Commit {
                record: Some(record),
                cid: Some(cid),
            }) = parsed.commit
            {
                records.push((record.get().to_owned(), cid));
            }
        }
    }
    records
}

/// The reference path: serde_json::Value → Ipld → serde_ipld_dagcbor.
fn to_ipld(v: &Value) -> Ipld {
    match v {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Ipld::Integer(u.into()),
            (_, Some(i)) => Ipld::Integer(i.into()),
            _ => Ipld::Float(n.as_f64().unwrap()),
        },
        Value::String(s) => Ipld::String(s.clone()),
        Value::Array(a) => Ipld::List(a.iter().map(to_ipld).collect()),
        Value::Object(m) => {
            if m.len() == 1 {
                if let Some(Value::String(s)) = m.get("$link") {
                    return Ipld::Link(Cid::try_from(s.as_str()).unwrap());
                }
                if let Some(Value::String(s)) = m.get("$bytes") {
                    return Ipld::Bytes(
                        base64::engine::general_purpose::STANDARD_NO_PAD_INDIFFERENT
                            .decode(s)
                            .unwrap(),
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

pub fn reference_encode(json: &str) -> Vec<u8> {
    let v: Value = serde_json::from_str(json).unwrap();
    serde_ipld_dagcbor::to_vec(&to_ipld(&v)).unwrap()
}
