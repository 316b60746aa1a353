//! Bucket definitions through the real settings path (`buckets.file` / its environment
//! variable): the shipped example loads, and every kind of mistake stops the start with a
//! message naming the bucket and the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use actors::buckets::config::{Check, CountOperator, Criteria, EntryLimit};
use jetstream_ingestor::settings::Settings;

fn load_file(path: &Path) -> Result<Settings, String> {
    Settings::load(
        None,
        [(
            "JETSTREAM_INGESTOR__BUCKETS__FILE".to_owned(),
            path.display().to_string(),
        )],
    )
    .map_err(|e| e.to_string())
}

fn load_text(text: &str) -> Result<Settings, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buckets.toml");
    std::fs::write(&path, text).unwrap();
    load_file(&path)
}

#[test]
fn the_example_file_loads_with_every_kind_of_bucket() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let s = load_file(&root.join("config/buckets.example.toml")).unwrap();
    let ids: Vec<&str> = s.bucket_defs.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "active_posters",
            "lurkers",
            "portuguese_writers",
            "onboarding",
            "follow_burst",
            "reply_only"
        ]
    );
    let pipeline = s.pipeline().buckets.expect("buckets configured");
    assert_eq!(pipeline.buckets.len(), 6);
    let posters = &s.bucket_defs[0];
    let Criteria::Event(c) = &posters.criteria else {
        panic!("event condition expected")
    };
    assert_eq!(
        c.check,
        Check::Count {
            operator: CountOperator::Gte,
            value: 3
        }
    );
    assert!(matches!(
        s.bucket_defs[1].entry_limit,
        EntryLimit::OncePerPeriod(_)
    ));
    assert!(!s.bucket_defs[5].enabled);
    // The criteria hash is stable across loads.
    let again = load_file(&root.join("config/buckets.example.toml")).unwrap();
    assert_eq!(
        posters.criteria_hash(),
        again.bucket_defs[0].criteria_hash()
    );
}

#[test]
fn no_file_means_no_buckets_and_a_missing_file_is_an_error() {
    let s = Settings::load(None, Vec::<(String, String)>::new()).unwrap();
    assert!(s.pipeline().buckets.is_none());
    let e = load_file(Path::new("/nonexistent/buckets.toml")).unwrap_err();
    assert!(
        e.contains("buckets.file") && e.contains("/nonexistent/buckets.toml"),
        "{e}"
    );
}

const POST: &str = "collection = \"app.bsky.feed.post\"";

/// (file text, what the message must contain)
fn cases() -> Vec<(String, Vec<&'static str>)> {
    let bucket = |id: &str, body: &str| format!("[[buckets]]\nid = \"{id}\"\n{body}\n");
    vec![
        (
            bucket("a", "[buckets.criteria]\ncollection = \"feed\""),
            vec!["\"a\"", "criteria.collection", "unknown collection syntax"],
        ),
        (
            bucket("b", "[buckets.criteria]\ncollection = \"app.bsky.*.post\""),
            vec!["\"b\"", "criteria.collection"],
        ),
        (
            bucket(
                "c",
                &format!("[buckets.criteria]\n{POST}\ncheck = \"count\"\noperator = \"gte\""),
            ),
            vec!["\"c\"", "criteria.value", "missing value"],
        ),
        (
            bucket(
                "d",
                &format!("[buckets.criteria]\n{POST}\ncheck = \"count\"\nvalue = 3"),
            ),
            vec!["\"d\"", "criteria.operator", "missing operator"],
        ),
        (
            bucket(
                "e",
                &format!("entry_limit = \"once_per_period\"\n[buckets.criteria]\n{POST}"),
            ),
            vec!["\"e\"", "entry_period", "once_per_period"],
        ),
        (
            bucket(
                "f",
                &format!("entry_period = \"1d\"\n[buckets.criteria]\n{POST}"),
            ),
            vec!["\"f\"", "entry_period", "only used with"],
        ),
        (
            bucket(
                "g",
                &format!("colour = \"red\"\n[buckets.criteria]\n{POST}"),
            ),
            vec!["\"g\"", "colour", "unknown key"],
        ),
        (
            bucket("h", &format!("[buckets.criteria]\n{POST}\nwithn = \"1h\"")),
            vec!["\"h\"", "criteria.withn", "unknown key"],
        ),
        (
            bucket("i", "[buckets.criteria]\nall = []"),
            vec!["\"i\"", "criteria.all", "empty"],
        ),
        (
            bucket(
                "j",
                &format!(
                    "[buckets.criteria]\nany = [{{ {POST} }}, {{ collection = \"app.bsky.feed.like\", within = \"soon\" }}]"
                ),
            ),
            vec!["\"j\"", "criteria.any[1].within", "invalid duration"],
        ),
        (
            bucket(
                "k",
                &format!("[buckets.criteria]\n{POST}\nrecord = [{{ path = \"langs\" }}]"),
            ),
            vec!["\"k\"", "criteria.record[0]", "no test"],
        ),
        (
            bucket(
                "l",
                &format!(
                    "[buckets.criteria]\n{POST}\nrecord = [{{ path = \"langs\", contains = [\"pt\"] }}]"
                ),
            ),
            vec!["\"l\"", "criteria.record[0].contains"],
        ),
        (
            bucket(
                "m",
                &format!("[buckets.criteria]\n{POST}\ncheck = \"sometimes\""),
            ),
            vec!["\"m\"", "criteria.check", "unknown check"],
        ),
        (
            bucket(
                "n",
                &format!("[buckets.criteria]\n{POST}\noperation = \"upsert\""),
            ),
            vec!["\"n\"", "criteria.operation", "unknown operation"],
        ),
        (
            bucket(
                "o",
                &format!("min_dwell = \"1h\"\nmax_dwell = \"30m\"\n[buckets.criteria]\n{POST}"),
            ),
            vec!["\"o\"", "max_dwell", "longer than min_dwell"],
        ),
        (
            bucket(
                "p",
                &format!("[buckets.criteria]\nnot = {{ {POST} }}\nany = [{{ {POST} }}]"),
            ),
            vec!["\"p\"", "criteria", "only one of"],
        ),
        (
            bucket("q", "entry_limit = \"unlimited\""),
            vec!["\"q\"", "criteria", "missing"],
        ),
        (
            bucket("r s", &format!("[buckets.criteria]\n{POST}")),
            vec!["buckets[0]", "id"],
        ),
        (
            format!(
                "{}{}",
                bucket("t", &format!("[buckets.criteria]\n{POST}")),
                bucket("t", &format!("[buckets.criteria]\n{POST}"))
            ),
            vec!["\"t\" (buckets[1])", "id", "duplicate"],
        ),
        (
            bucket(
                "u",
                &format!("[buckets.criteria]\n{POST}\ncheck = \"exists\"\nvalue = 2"),
            ),
            vec![
                "\"u\"",
                "criteria.value",
                "only used with check = \"count\"",
            ],
        ),
        (
            bucket(
                "v",
                &format!("entry_limit = \"twice\"\n[buckets.criteria]\n{POST}"),
            ),
            vec!["\"v\"", "entry_limit", "unknown value"],
        ),
        (
            bucket(
                "w",
                &format!(
                    "[buckets.criteria]\n{POST}\ncheck = \"count\"\noperator = \"gte\"\nvalue = -1"
                ),
            ),
            vec!["\"w\"", "criteria.value", "whole number"],
        ),
        (
            "[[bucket]]\nid = \"x\"\n".to_owned(),
            vec!["bucket", "unknown key"],
        ),
    ]
}

#[test]
fn invalid_bucket_files_name_the_bucket_and_the_field() {
    for (text, wanted) in cases() {
        let e = load_text(&text).expect_err(&text);
        assert!(e.starts_with("buckets.file "), "{e}");
        for w in wanted {
            assert!(e.contains(w), "message {e:?} lacks {w:?} for:\n{text}");
        }
    }
}

#[test]
fn settings_refuse_absurd_shard_counts() {
    let e = Settings::load(
        None,
        [(
            "JETSTREAM_INGESTOR__BUCKETS__SHARDS".to_owned(),
            "10000".to_owned(),
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("buckets.shards"), "{e}");
}
