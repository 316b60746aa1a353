//! Settings: the shipped config files load; `config/default.toml` states exactly the
//! built-in defaults; environment overrides (lists comma-separated) win over the file;
//! unknown keys and invalid values fail at start with a message naming the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jetstream_ingestor::settings::Settings;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn err(file: Option<&Path>, pairs: &[(&str, &str)]) -> String {
    Settings::load(file, env(pairs))
        .err()
        .map(|e| e.to_string())
        .expect("must be rejected")
}

#[test]
fn default_toml_states_exactly_the_built_in_defaults() {
    let loaded = Settings::load(Some(&root().join("config/default.toml")), env(&[])).unwrap();
    assert_eq!(
        serde_json::to_value(&loaded).unwrap(),
        serde_json::to_value(Settings::default()).unwrap()
    );
}

#[test]
fn every_shipped_config_file_loads() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("config")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml")
            && !p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("buckets")
        {
            Settings::load(Some(&p), env(&[])).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn environment_overrides_win_and_lists_are_comma_separated() {
    let s = Settings::load(
        Some(&root().join("config/default.toml")),
        env(&[
            ("JETSTREAM_INGESTOR__REDIS__URL", "redis://redis:6380/2"),
            ("JETSTREAM_INGESTOR__REDIS__KEY_PREFIX", "feed:"),
            (
                "JETSTREAM_INGESTOR__JETSTREAM__ENDPOINTS",
                "wss://a.example/subscribe,wss://b.example/subscribe",
            ),
            (
                "JETSTREAM_INGESTOR__JETSTREAM__WANTED_COLLECTIONS",
                "app.bsky.feed.post,app.bsky.graph.*",
            ),
            (
                "JETSTREAM_INGESTOR__JETSTREAM__INITIAL_CURSOR",
                "1725911162329308",
            ),
            ("JETSTREAM_INGESTOR__JETSTREAM__REWIND", "3s"),
            ("OTHER_APP__REDIS__URL", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(s.redis.url, "redis://redis:6380/2");
    assert_eq!(s.redis.key_prefix, "feed:");
    assert_eq!(
        s.jetstream.endpoints,
        vec!["wss://a.example/subscribe", "wss://b.example/subscribe"]
    );
    assert_eq!(
        s.jetstream.wanted_collections,
        vec!["app.bsky.feed.post", "app.bsky.graph.*"]
    );
    assert_eq!(s.jetstream.initial_cursor, Some(1725911162329308));
    assert_eq!(s.jetstream.rewind, Duration::from_secs(3));
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let e = err(None, &[("JETSTREAM_INGESTOR__JETSTREAM__REWINDD", "5s")]);
    assert!(e.contains("rewindd") && e.contains("jetstream"), "{e}");
    let e = err(
        None,
        &[("JETSTREAM_INGESTOR__JETSTREAM__BATCH_LINGER", "soon")],
    );
    assert!(e.contains("jetstream.batch_linger"), "{e}");
    let e = err(
        None,
        &[(
            "JETSTREAM_INGESTOR__JETSTREAM__ENDPOINTS",
            "http://x/subscribe",
        )],
    );
    assert!(e.contains("jetstream.endpoints"), "{e}");
    let e = err(None, &[("JETSTREAM_INGESTOR__REDIS__URL", "postgres://x")]);
    assert!(e.contains("redis.url"), "{e}");
    let e = err(None, &[("JETSTREAM_INGESTOR__REDIS__DEDUPE_WINDOW", "1s")]);
    assert!(e.contains("redis.dedupe_window"), "{e}");
    for depth in ["0", "17"] {
        let e = err(
            None,
            &[("JETSTREAM_INGESTOR__REDIS__PIPELINE_DEPTH", depth)],
        );
        assert!(e.contains("redis.pipeline_depth must be 1..=16"), "{e}");
    }
    let e = err(
        None,
        &[(
            "JETSTREAM_INGESTOR__JETSTREAM__WANTED_COLLECTIONS",
            "app..post",
        )],
    );
    assert!(e.contains("wanted_collections"), "{e}");
    let e = err(None, &[("JETSTREAM_INGESTOR__LOG__FORMAT", "xml")]);
    assert!(e.contains("log.format") || e.contains("format"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "[redis]\nurl = \"redis://x\"\nmaxlen = 5\n").unwrap();
    let e = err(Some(&f), &[]);
    assert!(e.contains("maxlen") && e.contains("redis"), "{e}");
    let e = err(Some(&dir.path().join("missing.toml")), &[]);
    assert!(e.contains("missing.toml"), "{e}");
}

#[test]
fn check_config_command_reports_validity() {
    let bin = env!("CARGO_BIN_EXE_jetstream-ingestor");
    let ok = Command::new(bin)
        .args(["--config", "config/default.toml", "check-config"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration is valid"));
    let bad = Command::new(bin)
        .arg("check-config")
        .env("JETSTREAM_INGESTOR__JETSTREAM__REWIND", "never")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("jetstream.rewind"), "{stderr}");
}
