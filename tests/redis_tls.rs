//! Redis over TLS and with ACL users (issue 15, item 2), against real redis-server processes
//! that listen on TLS only (`--port 0 --tls-port P`) on free ports, with a CA, server and
//! client certificates made at test time (rcgen, ring):
//! - `rediss://` + `redis.tls_ca_file`: every event lands exactly once;
//! - a CA that did not sign the server's certificate, or none (the system's roots): the
//!   binary exits 2 within seconds, its message saying TLS and certificate (no retry loop,
//!   no hang);
//! - `tls-auth-clients yes`: works with `tls_client_cert` + `tls_client_key`, and without
//!   them the binary exits non-zero, naming the certificate;
//! - an ACL user with exactly the rights of docs/deploying.md (read from the page) runs a
//!   full ingest with buckets, a consumer group, retention, heartbeat and the control
//!   stream, then a replay over the same range, with nothing in `ACL LOG`; with one right
//!   fewer the service fails closed, naming NOPERM and the refused command (at start for a
//!   command of the start, `mget`; in status, metric and log for one of the commit, `xadd`,
//!   then resumes when it is granted; in the log, retrying, for the replay preparation's
//!   `evalsha`);
//! - `check-config` shows the TLS paths but neither the URL's password nor a key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actors::redis_target::TlsFiles;
use actors::supervisor::StartChoice;
use jetstream_ingestor::local_redis::{LocalRedis, LocalRedisOptions, LocalTls};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use support::*;

/// Certificates made for one test, in a temp dir removed with it.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A CA that signed nothing here (the "wrong CA").
    other_ca: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let dir = tempfile::Builder::new()
        .prefix("jsi-pki-")
        .tempdir()
        .unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let issuer = ca("jsi test CA");
    let (server_cert, server_key) = leaf(
        &issuer,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) =
        leaf(&issuer, &["ingestor"], ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: write("ca.pem", &issuer.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
        other_ca: write("other-ca.pem", &ca("another CA").pem()),
        dir,
    }
}

impl Pki {
    fn client_files(&self, with_cert: bool) -> TlsFiles {
        TlsFiles {
            ca_file: Some(self.ca.clone()),
            client_cert: with_cert.then(|| self.client_cert.clone()),
            client_key: with_cert.then(|| self.client_key.clone()),
        }
    }
}

/// A private redis-server on TLS only; `auth_clients`: client certificates required.
fn tls_redis(pki: &Pki, auth_clients: bool) -> LocalRedis {
    LocalRedis::start(LocalRedisOptions {
        tls: Some(LocalTls {
            cert_file: pki.server_cert.clone(),
            key_file: pki.server_key.clone(),
            ca_file: pki.ca.clone(),
            auth_clients,
            client: pki.client_files(auth_clients),
        }),
        ..LocalRedisOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The last event time of `lines`.
fn last_time(lines: &[String]) -> u64 {
    lines.iter().filter_map(|l| time_of(l)).max().unwrap()
}

/// Runs the pipeline in-process on `s` until every event of `lines` is committed.
fn ingest_all(s: jetstream_ingestor::settings::Settings, lines: &[String]) {
    let last = last_time(lines);
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: time_of(&lines[0]),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(120), "all committed", |s| {
                s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0
            })
            .await;
        },
    );
}

/// The ingestor binary with `env`, expected to exit by itself: its exit code and its
/// stdout + stderr, or a failure if it still runs after `limit`.
fn run_until_exit(args: &[&str], env: &[(&str, String)], limit: Duration) -> (i32, String) {
    use std::io::Read as _;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jetstream-ingestor"));
    cmd.args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("ingestor binary starts");
    // Drained by threads, so a chatty child never blocks on a full pipe.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {limit:?} (it must give up, not retry forever); stderr:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    (code, text)
}

/// Environment for the binary: `ingestor_env` plus the CA file.
fn tls_env(endpoint: &str, url: &str, ca: &Path) -> Vec<(&'static str, String)> {
    let mut env = ingestor_env(endpoint, url);
    env.push((
        "JETSTREAM_INGESTOR__REDIS__TLS_CA_FILE",
        ca.display().to_string(),
    ));
    env
}

#[test]
fn rediss_with_a_ca_file_lands_every_event_exactly_once() {
    let pki = pki();
    let redis = tls_redis(&pki, false);
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let lines = corpus(3_000, 1501);
    let server = fake(lines.clone(), Some(700));
    let mut s = settings(&server.url(), &redis.url());
    s.redis.tls_ca_file = Some(pki.ca.clone());
    s.validate().expect("valid");
    ingest_all(s, &lines);
    let mut con = redis.connection().expect("TLS connection for assertions");
    let n = assert_exactly_once(&mut con, "jsi:", &lines);
    assert!(n > 2_500, "{n} identities checked");
    assert_eq!(stored_cursor(&mut con, "jsi:"), Some(last_time(&lines)));
}

#[test]
fn a_wrong_ca_or_the_system_roots_are_refused_at_start_naming_tls_and_the_certificate() {
    let pki = pki();
    let redis = tls_redis(&pki, false);
    let server = fake(corpus(100, 1502), None);
    let env = tls_env(&server.url(), &redis.url(), &pki.other_ca);
    let (code, stderr) = run_until_exit(&["run"], &env, Duration::from_secs(30));
    eprintln!("exit {code}, output:\n{stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("TLS") && stderr.contains("certificate"),
        "the message names TLS and the certificate: {stderr}"
    );
    assert!(
        stderr.contains("server's certificate") && stderr.contains("redis.tls_ca_file"),
        "and the setting to check: {stderr}"
    );
    // Without a CA file the system's roots are used, and they do not know the test CA
    // (nothing accepts any certificate).
    let plain = ingestor_env(&server.url(), &redis.url());
    let (code, out) = run_until_exit(&["run"], &plain, Duration::from_secs(30));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("TLS: the server's certificate was refused"),
        "{out}"
    );
    // Nothing was written.
    let mut con = redis.connection().unwrap();
    assert_eq!(stored_cursor(&mut con, "jsi:"), None);
}

#[test]
fn mutual_tls_works_with_the_client_certificate_and_fails_closed_without_it() {
    let pki = pki();
    let redis = tls_redis(&pki, true);
    let lines = corpus(1_500, 1503);

    // Without a client certificate: refused at start, naming the certificate.
    let server = fake(lines.clone(), None);
    let env = tls_env(&server.url(), &redis.url(), &pki.ca);
    let (code, stderr) = run_until_exit(&["run"], &env, Duration::from_secs(30));
    eprintln!("exit {code}, output:\n{stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("TLS") && stderr.contains("redis.tls_client_cert"),
        "the message names TLS and the client certificate: {stderr}"
    );
    let mut con = redis.connection().unwrap();
    assert_eq!(stored_cursor(&mut con, "jsi:"), None);

    // With it: everything lands once.
    let mut s = settings(&server.url(), &redis.url());
    s.redis.tls_ca_file = Some(pki.ca.clone());
    s.redis.tls_client_cert = Some(pki.client_cert.clone());
    s.redis.tls_client_key = Some(pki.client_key.clone());
    s.validate().expect("valid");
    ingest_all(s, &lines);
    assert_exactly_once(&mut con, "jsi:", &lines);
}

// ---- ACL ----

const ACL_USER: &str = "jsi-ingestor";
const ACL_PASSWORD: &str = "acl-test-password-0123456789";

/// The rules of the `ACL SETUSER jsi-ingestor …` line of docs/deploying.md (quotes dropped,
/// the password token left out): the page is what operators copy, so it is what is tested.
fn documented_rules() -> Vec<String> {
    let page = std::fs::read_to_string(repo_file("docs/deploying.md")).unwrap();
    let line = page
        .lines()
        .find(|l| l.contains(&format!("ACL SETUSER {ACL_USER} ")))
        .expect("docs/deploying.md has the ACL SETUSER line");
    let rest = &line[line.find(ACL_USER).unwrap() + ACL_USER.len()..];
    rest.split_whitespace()
        .map(|t| t.replace('\'', ""))
        .filter(|t| !t.starts_with('>'))
        .collect()
}

/// Creates (or replaces) the ingestor's ACL user with `rules` and its password.
fn set_acl_user(con: &mut redis::Connection, rules: &[String]) {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER").arg(ACL_USER).arg("reset");
    for r in rules {
        cmd.arg(r);
    }
    cmd.arg(format!(">{ACL_PASSWORD}"));
    let () = cmd.query(con).expect("ACL SETUSER");
}

/// `rediss://jsi-ingestor:PASSWORD@127.0.0.1:P`
fn acl_url(redis: &LocalRedis) -> String {
    format!(
        "rediss://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{}",
        redis.port()
    )
}

/// `ACL LOG` entries (each a flat field/value list), as text.
fn acl_log(con: &mut redis::Connection) -> Vec<String> {
    let v: redis::Value = redis::cmd("ACL").arg("LOG").query(con).unwrap();
    match v {
        redis::Value::Array(items) => items.iter().map(|i| format!("{i:?}")).collect(),
        other => vec![format!("{other:?}")],
    }
}

/// A config file for the full ingest: TLS + ACL user, buckets, a consumer group, retention
/// every 200 ms (the dead-letter stream bounded to 1 entry, so it trims), the control stream
/// and the heartbeat.
fn full_config(dir: &Path, pki: &Pki, endpoint: &str, url: &str) -> PathBuf {
    let text = format!(
        r#"
[jetstream]
endpoints = ["{endpoint}"]
batch_max_events = 128
backoff_min = "20ms"
backoff_max = "200ms"

[redis]
url = "{url}"
tls_ca_file = "{ca}"
retry_min = "20ms"
retry_max = "300ms"

[redis.retention]
interval = "200ms"
dead_max_len = 1

[[consumers]]
stream = "records"
group = "indexer"

[[consumers]]
stream = "dead"
group = "triage"
disposable = true

[buckets]
file = "{buckets}"

[admin]
listen = "127.0.0.1:0"
control_stream = true

[heartbeat]
interval = "200ms"
"#,
        ca = pki.ca.display(),
        buckets = repo_file("config/buckets.example.toml").display(),
    );
    let path = dir.join("ingestor.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A corpus with a few lines that cannot become jobs, so the dead-letter stream (and its
/// retention) has work.
fn corpus_with_dead_letters(n: usize, seed: u64) -> Vec<String> {
    let mut lines = corpus(n, seed);
    let t = time_of(&lines[n / 2]).unwrap();
    for i in 0..3 {
        lines.insert(
            n / 2 + i,
            format!("{{\"kind\":\"commit\",\"time_us\":{t},\"n\":{i}}}"),
        );
    }
    lines
}

fn commandstats(con: &mut redis::Connection) -> Vec<String> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| l.split(':').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_acl_user_with_the_documented_rights_runs_a_full_ingest_and_replay() {
    let pki = pki();
    let redis = tls_redis(&pki, false);
    let mut admin = redis.connection().unwrap();
    let rules = match std::env::var("JSI_ACL_RULES") {
        Ok(r) => r.split_whitespace().map(str::to_owned).collect(),
        Err(_) => documented_rules(),
    };
    set_acl_user(&mut admin, &rules);
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin)
        .unwrap();
    let lines = corpus_with_dead_letters(4_000, 1504);
    let first = time_of(&lines[0]).unwrap();
    let last = last_time(&lines);
    let server = fake(lines.clone(), Some(1_500));
    let config = full_config(pki.dir.path(), &pki, &server.url(), &acl_url(&redis));
    let config_arg = config.display().to_string();

    let mut ingestor = Ingestor::spawn(
        &[
            "--config",
            &config_arg,
            "run",
            "--cursor",
            &first.to_string(),
        ],
        &[],
    );
    wait_until(Duration::from_secs(120), "every event committed", || {
        stored_cursor(&mut admin, "jsi:") == Some(last)
    });
    // A control command, answered in control:acks.
    let _: String = redis::cmd("XADD")
        .arg("jsi:control")
        .arg("*")
        .arg("cmd")
        .arg("resume")
        .query(&mut admin)
        .unwrap();
    wait_until(Duration::from_secs(30), "the control command's ack", || {
        read_stream(&mut admin, "jsi:control:acks")
            .iter()
            .any(|a| a.get("result").map(String::as_str) == Some("ok"))
    });
    // Retention trimmed the dead-letter stream to its bound.
    wait_until(Duration::from_secs(30), "retention trims jsi:dead", || {
        redis::cmd("XLEN")
            .arg("jsi:dead")
            .query::<u64>(&mut admin)
            .unwrap()
            <= 1
    });
    ingestor.sigterm();
    let status = ingestor.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(status.success(), "run exits 0 after SIGTERM: {status:?}");

    // A replay over the same range: everything is already there, nothing is written twice.
    let (code, stderr) = run_until_exit(
        &[
            "--config",
            &config_arg,
            "replay",
            "--from",
            &first.to_string(),
            "--until",
            &last.to_string(),
        ],
        &[],
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "replay exits 0: {stderr}");

    // Three distinct dead letters were added; retention kept one.
    let dead: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg("jsi:dead")
        .query(&mut admin)
        .unwrap();
    let added = dead
        .windows(2)
        .find(|w| w[0] == redis::Value::BulkString(b"entries-added".to_vec()))
        .map(|w| w[1].clone());
    assert_eq!(added, Some(redis::Value::Int(3)), "{dead:?}");
    let dead_len: u64 = redis::cmd("XLEN")
        .arg("jsi:dead")
        .query(&mut admin)
        .unwrap();
    assert_eq!(dead_len, 1, "retention trimmed jsi:dead to dead_max_len");
    eprintln!("commands used: {:?}", commandstats(&mut admin));
    let log = acl_log(&mut admin);
    assert!(log.is_empty(), "nothing refused by ACL: {log:#?}");
    assert_exactly_once(&mut admin, "jsi:", &lines);
    let buckets: u64 = redis::cmd("XLEN")
        .arg("jsi:buckets")
        .query(&mut admin)
        .unwrap();
    assert!(buckets > 0, "bucket transitions written");
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("jsi:records")
        .query(&mut admin)
        .unwrap();
    assert!(format!("{groups:?}").contains("indexer"), "{groups:?}");
    let state: Option<String> = redis::cmd("HGET")
        .arg("jsi:heartbeat")
        .arg("state")
        .query(&mut admin)
        .unwrap();
    assert!(state.is_some(), "heartbeat written");
}

/// The documented rules less `right` (which must be one of them).
fn rules_without(right: &str) -> Vec<String> {
    let rules = documented_rules();
    assert!(
        rules.iter().any(|r| r == right),
        "{right} is a documented right: {rules:?}"
    );
    rules.into_iter().filter(|r| r != right).collect()
}

#[test]
fn without_a_right_of_the_start_the_process_exits_naming_noperm_and_the_command() {
    let pki = pki();
    let redis = tls_redis(&pki, false);
    let mut admin = redis.connection().unwrap();
    set_acl_user(&mut admin, &rules_without("+mget"));
    let server = fake(corpus(200, 1505), None);
    let env = tls_env(&server.url(), &acl_url(&redis), &pki.ca);
    let (code, out) = run_until_exit(&["run"], &env, Duration::from_secs(30));
    eprintln!("exit {code}, output:\n{out}");
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("NOPERM") && out.contains("lacks an ACL right (mget)"),
        "names NOPERM and the command: {out}"
    );
    assert!(
        !out.contains(ACL_PASSWORD),
        "the password is never printed: {out}"
    );
    assert_eq!(stored_cursor(&mut admin, "jsi:"), None);
}

#[test]
fn without_a_right_of_the_commit_the_writer_fails_closed_then_resumes_when_granted() {
    let pki = pki();
    let redis = tls_redis(&pki, false);
    let mut admin = redis.connection().unwrap();
    set_acl_user(&mut admin, &rules_without("+xadd"));
    let lines = corpus(800, 1506);
    let last = last_time(&lines);
    let server = fake(lines.clone(), None);
    let mut s = settings(&server.url(), &acl_url(&redis));
    s.redis.tls_ca_file = Some(pki.ca.clone());
    s.validate().expect("valid");
    let metrics = jetstream_ingestor::telemetry::metrics_handle().expect("recorder installed");
    let first = time_of(&lines[0]);
    actix::System::new().block_on(async move {
        jetstream_ingestor::telemetry::install_crypto_provider();
        let sup = actors::supervisor::Supervisor::launch(
            s.pipeline(),
            StartChoice::Resume { fallback: first },
        )
        .await
        .expect("the start needs no XADD");
        let st = wait_status(&sup, Duration::from_secs(30), "commits refused", |s| {
            s.writer.consecutive_commit_failures >= 2
        })
        .await;
        let err = st.writer.last_error.clone().unwrap_or_default();
        assert!(
            err.contains("NOPERM") && err.contains("lacks an ACL right (xadd)"),
            "status names NOPERM and the command: {err}"
        );
        assert!(!err.contains(ACL_PASSWORD), "{err}");
        assert_eq!(st.writer.commits, 0, "nothing committed without the right");
        assert_eq!(stored_cursor(&mut admin, "jsi:"), None);
        let xlen: u64 = redis::cmd("XLEN")
            .arg("jsi:records")
            .query(&mut admin)
            .unwrap();
        assert_eq!(xlen, 0, "nothing half-written");

        // Granted: the writer goes on from where it stopped, nothing lost.
        let () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(ACL_USER)
            .arg("+xadd")
            .query(&mut admin)
            .unwrap();
        wait_status(&sup, Duration::from_secs(60), "all committed", |s| {
            s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0
        })
        .await;
        tokio::time::timeout(Duration::from_secs(10), sup.send(actors::messages::Drain))
            .await
            .expect("drains in time")
            .expect("drained");
    });
    let rendered = metrics.render();
    assert!(
        rendered.contains("jetstream_ingestor_redis_errors_total{kind=\"noperm\"}"),
        "metric counted: {rendered}"
    );
    let mut con = redis.connection().unwrap();
    assert_exactly_once(&mut con, "jsi:", &lines);
}

#[test]
fn check_config_prints_neither_the_password_nor_a_key() {
    let pki = pki();
    let key_text = std::fs::read_to_string(&pki.client_key).unwrap();
    let key_body = key_text.lines().nth(1).unwrap().to_owned();
    let mut env = tls_env(
        "wss://jetstream.example/subscribe",
        &format!("rediss://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:1"),
        &pki.ca,
    );
    env.push((
        "JETSTREAM_INGESTOR__REDIS__TLS_CLIENT_CERT",
        pki.client_cert.display().to_string(),
    ));
    env.push((
        "JETSTREAM_INGESTOR__REDIS__TLS_CLIENT_KEY",
        pki.client_key.display().to_string(),
    ));
    let (code, out) = run_until_exit(&["check-config"], &env, Duration::from_secs(30));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&pki.client_key.display().to_string()) && out.contains("tls_ca_file"),
        "the TLS settings are shown (paths): {out}"
    );
    assert!(!out.contains(ACL_PASSWORD), "{out}");
    assert!(!out.contains(&key_body), "{out}");

    // Only half of the client pair: refused, naming both keys.
    env.retain(|(k, _)| *k != "JETSTREAM_INGESTOR__REDIS__TLS_CLIENT_CERT");
    let (code, out) = run_until_exit(&["check-config"], &env, Duration::from_secs(30));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("redis.tls_client_cert and redis.tls_client_key go together"),
        "{out}"
    );
    assert!(
        !out.contains(ACL_PASSWORD) && !out.contains(&key_body),
        "{out}"
    );
}

/// Runs the binary until a line of its stderr contains every one of `needles` (then kills
/// it) and returns that line; fails if it exits or `limit` passes first.
fn run_until_logged(
    args: &[&str],
    env: &[(&str, String)],
    needles: &[&str],
    limit: Duration,
) -> String {
    use std::io::BufRead as _;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jetstream-ingestor"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("ingestor binary starts");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) if needles.iter().all(|n| line.contains(n)) => {
                let _ = child.kill();
                let _ = child.wait();
                return line;
            }
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no line with {needles:?} within {limit:?} (or the process ended); stderr:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

#[test]
fn without_evalsha_a_replay_start_waits_and_its_log_names_noperm_and_the_command() {
    let pki = pki();
    let redis = tls_redis(&pki, false);
    let mut admin = redis.connection().unwrap();
    set_acl_user(&mut admin, &rules_without("+evalsha"));
    let lines = corpus(200, 1507);
    let server = fake(lines.clone(), None);
    let env = tls_env(&server.url(), &acl_url(&redis), &pki.ca);
    let first = time_of(&lines[0]).unwrap().to_string();
    // `--cursor` with no stored cursor starts with the replay preparation (an EVALSHA).
    let line = run_until_logged(
        &["run", "--cursor", &first],
        &env,
        &["NOPERM", "lacks an ACL right (evalsha)"],
        Duration::from_secs(30),
    );
    eprintln!("{line}");
    assert!(!line.contains(ACL_PASSWORD), "{line}");
    assert_eq!(stored_cursor(&mut admin, "jsi:"), None, "nothing committed");
    let xlen: u64 = redis::cmd("XLEN")
        .arg("jsi:records")
        .query(&mut admin)
        .unwrap();
    assert_eq!(xlen, 0);
}
