//! The job schema is a contract: every field the ingestor writes to `records`, `identity`
//! and `dead` must be listed in docs/jobs.md (and, for records, every listed field is
//! written), and so must every key it leaves in Redis, so a new field or key cannot ship
//! undocumented. (Keys of other processes' surfaces, the heartbeat and control stream, are
//! checked against the same document by unit tests of `settings::keys` and `admin::view`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use actors::supervisor::StartChoice;
use support::*;

/// Field names per stream section of docs/jobs.md (backticked names in a table's first column).
fn documented() -> HashMap<String, BTreeSet<String>> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/jobs.md")).unwrap();
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut section = None;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = ["records", "identity", "dead"]
                .into_iter()
                .find(|s| h.starts_with(&format!("`<prefix>{s}`")))
                .map(str::to_owned);
            continue;
        }
        let (Some(s), Some(row)) = (&section, line.strip_prefix("| ")) else {
            continue;
        };
        let first = row.split(" | ").next().unwrap_or("");
        for name in first.split('`').skip(1).step_by(2) {
            if name != "field" {
                out.entry(s.clone()).or_default().insert(name.to_owned());
            }
        }
    }
    out
}

/// Every backticked `<prefix>…` key name in docs/jobs.md, with `jsi:` for the prefix; not
/// `<prefix><stream>` (a route's stream, any name): it would match every key.
fn documented_keys() -> Vec<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/jobs.md")).unwrap();
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|t| t.strip_prefix("<prefix>"))
        .filter(|rest| !rest.starts_with('<'))
        .map(|rest| format!("jsi:{rest}"))
        .collect()
}

/// `key` is `pattern`, where each `<placeholder>` of the pattern stands for a non-empty part.
fn matches_key(pattern: &str, key: &str) -> bool {
    let mut parts = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        parts.push(&rest[..open]);
        rest = &rest[open + close + 1..];
    }
    parts.push(rest);
    if parts.len() == 1 {
        return pattern == key;
    }
    let Some(mut left) = key.strip_prefix(parts[0]) else {
        return false;
    };
    let last = parts[parts.len() - 1];
    for part in &parts[1..parts.len() - 1] {
        match left.get(1..).and_then(|l| l.find(part)) {
            Some(i) => left = &left[1 + i + part.len()..],
            None => return false,
        }
    }
    left.len() > last.len() && left.ends_with(last)
}

#[test]
fn key_patterns_match_as_documented() {
    assert!(matches_key("jsi:cursor", "jsi:cursor"));
    assert!(!matches_key("jsi:cursor", "jsi:cursor:replay"));
    assert!(matches_key(
        "jsi:bucket:<id>:members",
        "jsi:bucket:lurkers:members"
    ));
    assert!(!matches_key(
        "jsi:bucket:<id>:members",
        "jsi:bucket::members"
    ));
    assert!(!matches_key(
        "jsi:bucket:<id>:members",
        "jsi:bucket:lurkers:state"
    ));
    assert!(matches_key("jsi:<stream>", "jsi:posts"));
}

#[test]
fn every_written_field_is_documented() {
    let doc = documented();
    for s in ["records", "identity", "dead"] {
        assert!(
            doc.get(s).is_some_and(|f| f.len() >= 8),
            "docs/jobs.md section for {s} not found or empty: {doc:?}"
        );
    }
    let redis = redis(false);
    let mut lines = corpus(1_500, 91);
    lines.insert(10, "{not json".to_owned());
    lines.insert(
        20,
        r#"{"did":"did:plc:x","time_us":1700000000000001,"kind":"identity"}"#.to_owned(),
    );
    let bad_did = lines
        .iter()
        .position(|l| l.contains(r#""kind":"commit""#))
        .unwrap();
    lines[bad_did] = lines[bad_did].replacen(r#""did":"did:plc:"#, r#""did":"did:plc:UPPER"#, 1);
    let server = fake(lines.clone(), None);
    let last = lines.iter().filter_map(|l| time_of(l)).max().unwrap();
    with_supervisor(
        settings(&server.url(), &redis.url()),
        StartChoice::Resume {
            fallback: time_of(&lines[0]),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "all committed", |s| {
                s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0
            })
            .await;
        },
    );
    let mut con = redis.connection().unwrap();
    for s in ["records", "identity", "dead"] {
        let written: BTreeSet<String> = read_stream(&mut con, &format!("jsi:{s}"))
            .into_iter()
            .flat_map(|e| e.into_keys())
            .collect();
        assert!(!written.is_empty(), "nothing written to {s}");
        let undocumented: Vec<&String> = written.difference(&doc[s]).collect();
        assert!(
            undocumented.is_empty(),
            "jsi:{s} has fields docs/jobs.md does not list: {undocumented:?}"
        );
        if s == "records" {
            let unwritten: Vec<&String> = doc[s].difference(&written).collect();
            assert!(
                unwritten.is_empty(),
                "docs/jobs.md lists record fields never written: {unwritten:?}"
            );
        }
    }
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert!(keys.len() >= 6, "{keys:?}");
    let patterns = documented_keys();
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|k| !patterns.iter().any(|p| matches_key(p, k)))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys docs/jobs.md does not list: {undocumented:?} (documented: {patterns:?})"
    );
    let reasons: BTreeSet<String> = read_stream(&mut con, "jsi:dead")
        .into_iter()
        .map(|e| e["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        ["bad_did", "bad_identity", "invalid_json"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
