//! Settings: the shipped config files load; `config/default.toml` states exactly the
//! built-in defaults; environment overrides (lists comma-separated) win over the file;
//! unknown keys and invalid values fail at start with a message naming the key; string keys
//! set from the environment stay strings byte for byte while numeric keys still parse
//! (hardening item 9); routes and consumer groups on keys the ingestor owns are refused by
//! `check-config` and at start (item 10); the TLS files of `[redis]` are checked at start,
//! errors naming the key and the path, never the password.
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
fn redis_tls_files_are_checked_at_start_naming_the_key_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem").display().to_string();
    let e = err(
        None,
        &[
            (
                "JETSTREAM_INGESTOR__REDIS__URL",
                "rediss://redis.example:6380",
            ),
            ("JETSTREAM_INGESTOR__REDIS__TLS_CA_FILE", &missing),
        ],
    );
    assert!(
        e.contains("redis.tls_ca_file") && e.contains(&missing),
        "{e}"
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let junk = junk.display().to_string();
    let e = err(
        None,
        &[
            (
                "JETSTREAM_INGESTOR__REDIS__URL",
                "rediss://redis.example:6380",
            ),
            ("JETSTREAM_INGESTOR__REDIS__TLS_CA_FILE", &junk),
        ],
    );
    assert!(
        e.contains("redis.tls_ca_file") && e.contains("holds no PEM certificate"),
        "{e}"
    );
    // TLS files with a plain URL: refused rather than silently unused.
    let e = err(
        None,
        &[
            (
                "JETSTREAM_INGESTOR__REDIS__URL",
                "redis://u:pw-123@redis.example:6379",
            ),
            ("JETSTREAM_INGESTOR__REDIS__TLS_CA_FILE", &junk),
        ],
    );
    assert!(
        e.contains("redis.tls_ca_file is set") && e.contains("not a rediss://"),
        "{e}"
    );
    assert!(!e.contains("pw-123"), "the password is never printed: {e}");
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

/// Values that a type-guessing environment layer turns into numbers or booleans (and back
/// into other text): `12345678901234567890` became `12345678901234567000`, `007` became `7`,
/// `1e5` became `100000`, `TRUE` became `true`, `Infinity` became `inf`.
const NUMERIC_LOOKING: [&str; 16] = [
    "12345678901234567890",
    "00000000000000000042",
    "+1234567890123456",
    "1.0000000000000000",
    "9223372036854775808",
    "007",
    "1e5",
    "3.0e10",
    "1.50",
    "-0",
    "+7",
    "TRUE",
    "false",
    "Infinity",
    "NaN",
    "0.1",
];

/// `"a.b.c"` → the JSON value at that path.
fn at<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    path.split('.').fold(v, |v, k| &v[k])
}

fn env_name(path: &str) -> String {
    format!(
        "JETSTREAM_INGESTOR__{}",
        path.to_uppercase().replace('.', "__")
    )
}

/// Every string-valued key of the settings (found in the serialised defaults), plus the
/// optional ones whose default is absent.
fn string_keys() -> Vec<String> {
    fn walk(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(v, &p, out);
                }
            }
            serde_json::Value::String(_) => out.push(path.to_owned()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(
        &serde_json::to_value(Settings::default()).unwrap(),
        "",
        &mut out,
    );
    out.extend(
        [
            "admin.token",
            "admin.token_file",
            "jetstream.zstd_dictionary",
        ]
        .map(String::from),
    );
    out
}

#[test]
fn string_keys_from_the_environment_stay_strings_byte_for_byte() {
    let token = "a-real-token-0123456789";
    let mut checked = 0;
    // Keys any text is valid for: each value must come back exactly.
    for value in NUMERIC_LOOKING {
        let s = Settings::load(
            None,
            env(&[
                ("JETSTREAM_INGESTOR__REDIS__KEY_PREFIX", value),
                ("JETSTREAM_INGESTOR__HEARTBEAT__INSTANCE_ID", value),
                ("JETSTREAM_INGESTOR__ADMIN__TOKEN", token),
            ]),
        )
        .unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(s.redis.key_prefix, value);
        assert_eq!(s.heartbeat.instance_id, value);
        checked += 2;
        // A list key, where the value is a valid host name.
        if value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            let s = Settings::load(
                None,
                env(&[
                    ("JETSTREAM_INGESTOR__ADMIN__TOKEN", token),
                    ("JETSTREAM_INGESTOR__ADMIN__ALLOWED_HOSTS", value),
                ]),
            )
            .unwrap_or_else(|e| panic!("allowed_hosts {value}: {e}"));
            assert_eq!(s.admin.allowed_hosts, vec![value.to_owned()]);
            checked += 1;
        }
        // The token (16 characters at least), also when it looks like a number.
        if value.len() >= 16 {
            let s = Settings::load(None, env(&[("JETSTREAM_INGESTOR__ADMIN__TOKEN", value)]))
                .unwrap_or_else(|e| panic!("token {value}: {e}"));
            assert_eq!(s.admin.token.as_ref().map(|t| t.expose()), Some(value));
            checked += 1;
        }
        // Paths that are read at start: the error names the path exactly as given.
        for (var, key) in [
            ("JETSTREAM_INGESTOR__BUCKETS__FILE", "buckets.file"),
            ("JETSTREAM_INGESTOR__ADMIN__TOKEN_FILE", "admin.token_file"),
            (
                "JETSTREAM_INGESTOR__JETSTREAM__ZSTD_DICTIONARY",
                "jetstream.zstd_dictionary",
            ),
        ] {
            let e = err(None, &[(var, value)]);
            assert!(
                e.starts_with(key) && e.contains(&format!(" {value}: ")),
                "{e}"
            );
            checked += 1;
        }
    }
    // Every other string key: when the value is accepted, it is kept exactly; when it is
    // refused, the message quotes it exactly (never a number made of it).
    for key in string_keys() {
        for value in NUMERIC_LOOKING {
            let mut pairs = vec![(env_name(&key), value.to_owned())];
            if key != "admin.token" {
                pairs.push(("JETSTREAM_INGESTOR__ADMIN__TOKEN".into(), token.into()));
            }
            match Settings::load(None, pairs) {
                Ok(s) => {
                    let shown = serde_json::to_value(&s).unwrap();
                    let got = at(&shown, &key);
                    if key == "admin.token" {
                        assert_eq!(s.admin.token.as_ref().unwrap().expose(), value);
                    } else {
                        assert_eq!(got, &serde_json::json!(value), "{key} = {value}");
                    }
                    checked += 1;
                }
                Err(e) => {
                    let e = e.to_string();
                    if e.contains(value) {
                        checked += 1;
                    }
                    assert!(
                        !e.contains("invalid type"),
                        "{key} = {value}: read as something else than text: {e}"
                    );
                }
            }
        }
    }
    println!("{checked} string values round-tripped or were quoted exactly");
    assert!(checked >= 16 * 5 + 5, "{checked}");
}

#[test]
fn numeric_and_boolean_keys_still_parse_from_the_environment() {
    let s = Settings::load(
        None,
        env(&[
            ("JETSTREAM_INGESTOR__REDIS__PIPELINE_DEPTH", "5"),
            ("JETSTREAM_INGESTOR__REDIS__RETENTION__MAX_LEN", "0"),
            (
                "JETSTREAM_INGESTOR__JETSTREAM__INITIAL_CURSOR",
                "1725911162329308",
            ),
            ("JETSTREAM_INGESTOR__JETSTREAM__FAILOVER_AFTER", "7"),
            ("JETSTREAM_INGESTOR__JETSTREAM__COMPRESS", "false"),
            ("JETSTREAM_INGESTOR__ADMIN__MAX_BODY_BYTES", "2048"),
            ("JETSTREAM_INGESTOR__ADMIN__CONTROL_STREAM", "true"),
            ("JETSTREAM_INGESTOR__HEARTBEAT__ENABLED", "false"),
            ("JETSTREAM_INGESTOR__BUCKETS__SHARDS", "3"),
        ]),
    )
    .unwrap();
    assert_eq!(s.redis.pipeline_depth, 5);
    assert_eq!(s.redis.retention.max_len, 0);
    assert_eq!(s.jetstream.initial_cursor, Some(1_725_911_162_329_308));
    assert_eq!(s.jetstream.failover_after, 7);
    assert!(!s.jetstream.compress);
    assert_eq!(s.admin.max_body_bytes, 2048);
    assert!(s.admin.control_stream);
    assert!(!s.heartbeat.enabled);
    assert_eq!(s.buckets.shards, 3);
    let e = err(
        None,
        &[("JETSTREAM_INGESTOR__REDIS__PIPELINE_DEPTH", "five")],
    );
    assert!(e.contains("redis.pipeline_depth"), "{e}");
    let e = err(
        None,
        &[("JETSTREAM_INGESTOR__ADMIN__CONTROL_STREAM", "maybe")],
    );
    assert!(e.contains("admin.control_stream"), "{e}");
}

/// `check-config` on a config file with `toml`; (exit code, stderr).
fn check_config(toml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jetstream-ingestor"))
        .args(["--config", f.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn route(stream: &str) -> String {
    format!("[[verifier.routes]]\ncollections = [\"app.bsky.feed.post\"]\nstream = \"{stream}\"\n")
}

fn group(stream: &str) -> String {
    format!("[[consumers]]\nstream = \"{stream}\"\ngroup = \"g\"\n")
}

#[test]
fn routes_and_consumer_groups_on_keys_the_ingestor_owns_are_refused() {
    // Jobs to a key used for something else, or a group (and retention) on a key that is not
    // a job stream: refused, naming the field, the key and its use.
    let routes = [
        ("commit:chain", "the token of the last committed batch"),
        ("cursor", "the committed cursor"),
        ("cursor:replay", "the progress of a replay"),
        (
            "buckets:applied",
            "the mark of the events the bucket state contains",
        ),
        ("dedupe", "the dedupe index"),
        ("heartbeat", "the heartbeat"),
        ("identity", "identity and account jobs"),
        ("dead", "the dead-letter stream"),
        ("buckets", "bucket transitions"),
        ("bucket:active:state", "bucket state"),
        ("control", "the control stream's commands"),
        ("control:acks", "the control stream's acks"),
        ("control:last", "the last control command"),
    ];
    for (stream, what) in routes {
        let (code, stderr) = check_config(&format!(
            "[redis]\nkey_prefix = \"feed:\"\n\n{}",
            route(stream)
        ));
        assert_eq!(code, Some(2), "route to {stream}: {stderr}");
        let named = format!("verifier.routes[0].stream = \"{stream}\": feed:{stream} is ");
        assert!(stderr.contains(&named) && stderr.contains(what), "{stderr}");
    }
    let groups = [
        "cursor",
        "cursor:replay",
        "buckets:applied",
        "dedupe",
        "commit:chain",
        "heartbeat",
        "control",
        "control:acks",
        "control:last",
        "bucket:active:members",
    ];
    for stream in groups {
        let (code, stderr) = check_config(&format!("{}{}", group("records"), group(stream)));
        assert_eq!(code, Some(2), "group on {stream}: {stderr}");
        let named = format!("consumers[1].stream = \"{stream}\": jsi:{stream} is ");
        assert!(
            stderr.contains(&named) && stderr.contains("only go on job streams"),
            "{stderr}"
        );
    }
    // Legitimately shared: routes to records, groups on every job stream and on routes.
    let fine = format!(
        "{}{}{}{}{}{}{}",
        route("records"),
        route("posts"),
        group("records"),
        group("identity"),
        group("dead"),
        group("buckets"),
        group("posts"),
    );
    let (code, stderr) = check_config(&fine);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_start_with_a_route_to_an_owned_key_is_refused_before_anything_is_written() {
    let redis = jetstream_ingestor::local_redis::LocalRedis::start(Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    for (toml, field) in [
        (route("commit:chain"), "verifier.routes[0].stream"),
        (group("cursor"), "consumers[0].stream"),
    ] {
        let f = dir.path().join("c.toml");
        std::fs::write(&f, toml).unwrap();
        let log = dir.path().join("stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_jetstream-ingestor"))
            .args(["--config", f.to_str().unwrap(), "run"])
            .env("JETSTREAM_INGESTOR__REDIS__URL", redis.url())
            .env("JETSTREAM_INGESTOR__ADMIN__LISTEN", "127.0.0.1:0")
            .env(
                "JETSTREAM_INGESTOR__JETSTREAM__ENDPOINTS",
                "ws://127.0.0.1:9/subscribe",
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // A refused configuration exits at once; an accepted one runs until killed.
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(&log).unwrap();
        let status = status.unwrap_or_else(|| {
            panic!("{field}: still running after 30 s, the configuration was accepted: {stderr}")
        });
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(field) && stderr.contains("jsi:"),
            "{stderr}"
        );
        let keys: u64 = redis::cmd("DBSIZE")
            .query(&mut redis.connection().unwrap())
            .unwrap();
        assert_eq!(keys, 0, "nothing written by a refused start");
    }
}

/// No segment of a `: `-separated error line is said twice in a row
/// (`file not found: file not found`).
fn repeated_segment(line: &str) -> Option<String> {
    let parts: Vec<&str> = line.split(": ").map(str::trim).collect();
    parts
        .windows(2)
        .find(|w| !w[0].is_empty() && w[0] == w[1])
        .map(|w| w[0].to_owned())
}

#[test]
fn startup_errors_read_as_sentences_without_repeating_their_cause() {
    // A missing config file, as the binary prints it (the whole chain, `{:#}`).
    let out = Command::new(env!("CARGO_BIN_EXE_jetstream-ingestor"))
        .args(["--config", "/nonexistent/jsi.toml", "check-config"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("file not found").count(),
        1,
        "said once: {stderr}"
    );
    assert!(
        stderr.contains("config file /nonexistent/jsi.toml: file not found"),
        "{stderr}"
    );

    // A bucket file that does not parse, and one with an invalid bucket: each cause once.
    let dir = tempfile::tempdir().unwrap();
    let buckets = dir.path().join("buckets.toml");
    for bad in ["[[bucket]\n", "[[bucket]]\nid = \"\"\n"] {
        std::fs::write(&buckets, bad).unwrap();
        let (code, stderr) =
            check_config(&format!("[buckets]\nfile = \"{}\"\n", buckets.display()));
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("buckets.file"), "{stderr}");
        assert_eq!(repeated_segment(&stderr), None, "{stderr}");
    }
    let (code, stderr) = check_config("[jetstream]\nendpoints = []\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(repeated_segment(&stderr), None, "{stderr}");
    assert_eq!(
        repeated_segment("error: x: file not found: file not found"),
        Some("file not found".to_owned()),
        "the check itself can fail"
    );
}
