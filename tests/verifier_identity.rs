//! Identity and account events through the real pipeline (fake Jetstream → verifier → private
//! Redis): the real ones and valid variants land in `jsi:identity`, in input order; each kind
//! of invalid one lands in `jsi:dead` once, with its reason and a message naming the field;
//! with `verifier.enabled = false` all of them land in `jsi:identity` as before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use actors::supervisor::StartChoice;
use support::*;

/// Every identity and account event of the real v1 fixtures (see the PROVENANCE.md beside it).
const REAL: &str = include_str!("fixtures/jetstream/identity_account_v1.jsonl");

const DID: &str = "did:plc:hqvhxrowqbemo5e4wjnj6zao";
const OTHER_DID: &str = "did:plc:wq4aajammjtxdomz3e23667t";
const TIME: &str = "2026-07-04T14:38:07.877Z";

/// A line shaped like Jetstream's (`did`, `time_us`, `kind`, object), `time_us` set later.
fn line(envelope_did: &str, kind: &str, inner: &str) -> String {
    format!(r#"{{"did":"{envelope_did}","time_us":0,"kind":"{kind}","{kind}":{{{inner}}}}}"#)
}

fn identity(envelope_did: &str, inner_did: &str, seq: i64, extra: &str) -> String {
    line(
        envelope_did,
        "identity",
        &format!(r#""did":"{inner_did}",{extra}"seq":{seq},"time":"{TIME}""#),
    )
}

fn account(envelope_did: &str, inner_did: &str, seq: i64, extra: &str) -> String {
    line(
        envelope_did,
        "account",
        &format!(r#""active":false,"did":"{inner_did}",{extra}"seq":{seq},"time":"{TIME}""#),
    )
}

/// Valid events beyond the real ones: a handle, every known status, an unknown status and an
/// absent `active` (soft findings: they land).
fn valid() -> Vec<String> {
    let mut v = vec![identity(
        DID,
        DID,
        1_000,
        r#""handle":"alice.bsky.social","#,
    )];
    for (i, status) in [
        "takendown",
        "suspended",
        "deleted",
        "deactivated",
        "desynchronized",
        "throttled",
        "frozen",
    ]
    .iter()
    .enumerate()
    {
        v.push(account(
            DID,
            DID,
            1_001 + i as i64,
            &format!(r#""status":"{status}","#),
        ));
    }
    v.push(line(
        DID,
        "account",
        &format!(r#""did":"{DID}","seq":1010,"time":"{TIME}""#),
    ));
    v
}

/// Invalid events, each with a distinct `seq`, and the (reason, message start) each must get.
fn invalid() -> Vec<(String, i64, &'static str, &'static str)> {
    let i = "identity_invalid";
    let a = "account_invalid";
    vec![
        (
            identity("not-a-did", DID, 2_001, ""),
            2_001,
            i,
            "did (envelope) \"not-a-did\"",
        ),
        (
            identity(DID, OTHER_DID, 2_002, ""),
            2_002,
            i,
            "identity.did \"did:plc:wq4aajammjtxdomz3e23667t\" differs from the envelope did",
        ),
        (
            line(DID, "identity", &format!(r#""seq":2003,"time":"{TIME}""#)),
            2_003,
            i,
            "identity.did is absent",
        ),
        (
            identity(DID, "did:plc:short", 2_004, ""),
            2_004,
            i,
            "identity.did \"did:plc:short\"",
        ),
        (
            identity(DID, DID, 2_005, r#""handle":"jo_hn.test","#),
            2_005,
            i,
            "identity.handle \"jo_hn.test\"",
        ),
        (
            identity(DID, DID, 0, r#""x":2006,"#),
            2_006,
            i,
            "identity.seq 0: must be a positive integer",
        ),
        (
            line(
                DID,
                "identity",
                &format!(r#""did":"{DID}","seq":2007,"time":"2026-07-04 14:38:07Z""#),
            ),
            2_007,
            i,
            "identity.time \"2026-07-04 14:38:07Z\"",
        ),
        (
            account("did:web:-bad.com", DID, 3_001, ""),
            3_001,
            a,
            "did (envelope) \"did:web:-bad.com\"",
        ),
        (
            account(DID, OTHER_DID, 3_002, ""),
            3_002,
            a,
            "account.did \"did:plc:wq4aajammjtxdomz3e23667t\" differs from the envelope did",
        ),
        (
            account(DID, DID, -3, r#""x":3003,"#),
            3_003,
            a,
            "account.seq -3: must be a positive integer",
        ),
        (
            line(
                DID,
                "account",
                &format!(r#""active":true,"did":"{DID}","seq":3004,"time":"yesterday""#),
            ),
            3_004,
            a,
            "account.time \"yesterday\"",
        ),
    ]
}

/// The tag of an injected line: `seq`, or the `x` that stands in for an unusable `seq`.
fn tag_of(raw: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(raw).unwrap();
    let kind = v["kind"].as_str().unwrap();
    let inner = &v[kind];
    inner["x"].as_i64().or(inner["seq"].as_i64()).unwrap()
}

/// A generated corpus with `extra` spread through it, each at 1 µs after its predecessor
/// (corpus events are ≥ 50 µs apart, so time order holds).
fn mixed(extra: &[String]) -> Vec<String> {
    let base = corpus(1_500, 91);
    let every = base.len() / (extra.len() + 1);
    let mut out = Vec::with_capacity(base.len() + extra.len());
    let mut extra = extra.iter();
    for (i, l) in base.into_iter().enumerate() {
        let t = time_of(&l).unwrap();
        out.push(l);
        if (i + 1) % every == 0
            && let Some(e) = extra.next()
        {
            out.push(with_time(e, t + 1));
        }
    }
    assert!(extra.next().is_none(), "every extra line placed");
    out
}

fn run_all(lines: &[String], s: jetstream_ingestor::settings::Settings) {
    let first = lines.iter().filter_map(|l| time_of(l)).min().unwrap();
    let last = lines.iter().filter_map(|l| time_of(l)).max().unwrap();
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "all committed", |s| {
                s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0
            })
            .await;
        },
    );
}

fn is_identity_or_account(l: &str) -> bool {
    l.contains(r#""kind":"identity""#) || l.contains(r#""kind":"account""#)
}

fn real_events() -> Vec<String> {
    let real: Vec<String> = REAL
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let kinds = |k: &str| real.iter().filter(|l| l.contains(k)).count();
    assert_eq!(
        (kinds(r#""kind":"identity""#), kinds(r#""kind":"account""#)),
        (2, 2),
        "the fixture's real events"
    );
    real
}

#[test]
fn identity_and_account_events_are_verified_in_the_pipeline() {
    let redis = redis(false);
    let real = real_events();
    let valid = valid();
    let invalid = invalid();
    let mut extra: Vec<String> = real.iter().chain(&valid).cloned().collect();
    extra.extend(invalid.iter().map(|(l, ..)| l.clone()));
    let lines = mixed(&extra);
    let server = fake(lines.clone(), None);
    run_all(&lines, settings(&server.url(), &redis.url()));
    let mut con = redis.connection().unwrap();

    // identity: the generated corpus's own, the real ones and the valid ones, in input order.
    let invalid_lines: Vec<&str> = invalid.iter().map(|(l, ..)| l.as_str()).collect();
    let want: Vec<String> = lines
        .iter()
        .filter(|l| is_identity_or_account(l))
        .filter(|l| {
            let t = time_of(l).unwrap();
            !invalid_lines.iter().any(|i| with_time(i, t) == **l)
        })
        .map(|l| source_identity(l).unwrap().0)
        .collect();
    let got: Vec<String> = read_stream(&mut con, "jsi:identity")
        .iter()
        .map(entry_identity)
        .collect();
    let generated = want.len() - real.len() - valid.len();
    eprintln!(
        "identity stream: {} entries ({generated} generated, {} real, {} valid variants)",
        got.len(),
        real.len(),
        valid.len()
    );
    assert!(
        generated >= 10,
        "the corpus has its own identity/account events: {generated}"
    );
    assert_eq!(got, want, "identity stream: content and input order");
    for r in &real {
        let id = source_identity(r).unwrap().0;
        assert!(got.contains(&id), "real event {id} landed");
    }

    // dead: each invalid event once, with its reason, the field named, the frame as sent.
    let dead = read_stream(&mut con, "jsi:dead");
    assert_eq!(
        dead.len(),
        invalid.len(),
        "only the invalid events: {dead:?}"
    );
    let by_tag: HashMap<i64, &HashMap<String, String>> =
        dead.iter().map(|d| (tag_of(&d["raw"]), d)).collect();
    for (sent, tag, reason, message) in &invalid {
        let d = by_tag
            .get(tag)
            .unwrap_or_else(|| panic!("{tag} dead-lettered"));
        assert_eq!(&d["reason"], reason, "{tag}: {}", d["message"]);
        assert!(
            d["message"].starts_with(message),
            "{tag}: {:?} starts with {message:?}",
            d["message"]
        );
        let t = time_of(&d["raw"]).unwrap();
        assert_eq!(d["raw"], with_time(sent, t), "{tag}: the frame as received");
        assert_eq!(d["time_us"], t.to_string());
    }
    let count = |r: &str| dead.iter().filter(|d| d["reason"] == r).count();
    assert_eq!(
        (count("identity_invalid"), count("account_invalid")),
        (7, 4)
    );

    // Commits are untouched by all this.
    let records = read_stream(&mut con, "jsi:records").len();
    let commits = lines
        .iter()
        .filter(|l| l.contains(r#""kind":"commit""#))
        .count();
    assert_eq!(records, commits);
}

#[test]
fn with_verification_off_identity_and_account_events_all_land() {
    let redis = redis(false);
    let mut extra = real_events();
    extra.extend(invalid().into_iter().map(|(l, ..)| l));
    let lines = mixed(&extra);
    let server = fake(lines.clone(), None);
    let mut s = settings(&server.url(), &redis.url());
    s.verifier.enabled = false;
    run_all(&lines, s);
    let mut con = redis.connection().unwrap();
    let identity = read_stream(&mut con, "jsi:identity");
    let want = lines.iter().filter(|l| is_identity_or_account(l)).count();
    assert_eq!(
        identity.len(),
        want,
        "every identity/account event, as before"
    );
    let tagged = identity
        .iter()
        .filter(|e| {
            let seq: i64 = e["seq"].parse().unwrap();
            seq <= 0 || (2_000..4_000).contains(&seq)
        })
        .count();
    assert_eq!(tagged, 11, "the 11 invalid ones among them");
    let dead: u64 = redis::cmd("XLEN").arg("jsi:dead").query(&mut con).unwrap();
    assert_eq!(dead, 0);
}
