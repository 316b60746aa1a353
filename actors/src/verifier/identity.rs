//! Checks of identity and account events (lexicon `com.atproto.sync.subscribeRepos#identity`
//! and `#account`, as Jetstream v1 forwards them).
//!
//! Pure: the verifier pool calls [`verify_identity`] / [`verify_account`] per event when
//! verification is on. `Err(CheckError)` is a hard failure (`identity_invalid` /
//! `account_invalid`, the message naming the field and its value): the event goes to the
//! dead-letter stream instead of `identity`. Hard: the envelope `did` and the inner `did` are
//! DIDs and the same one, `seq` (when present) is a positive integer, `time` (when present)
//! is an atproto datetime, an identity's `handle` (when present) is a handle. `Ok(soft)` never
//! drops the event; its soft findings (an account `status` outside the lexicon's known values,
//! which are an open set; a lexicon-required `seq`, `time` or `active` that is absent, which
//! the job schema allows as an empty field) are counted and logged by the pool. That
//! `active` is a boolean and `seq` an integer is already enforced by the decoder
//! (`bad_identity` / `bad_account`).

use std::borrow::Cow;

use serde::Deserialize;

use super::checks::{CheckError, check_did, check_domain_name, shown};
use super::datetime::check_datetime;
use crate::model::{AccountEvent, IdentityEvent};

/// Account statuses the atproto lexicons name (`com.atproto.sync.defs`, `knownValues`).
pub const KNOWN_STATUSES: [&str; 6] = [
    "takendown",
    "suspended",
    "deleted",
    "deactivated",
    "desynchronized",
    "throttled",
];

/// Handle syntax (atproto spec): a domain name of two or more labels, ASCII letters, digits
/// and hyphens, ≤ 253 chars, top-level label not starting with a digit. `handle.invalid`
/// (what a relay sends for a handle that failed verification) passes.
pub fn check_handle(s: &str) -> Result<(), &'static str> {
    check_domain_name(s)
}

/// Checks an identity event. `Ok` carries the soft findings.
pub fn verify_identity(ev: &IdentityEvent) -> Result<Vec<CheckError>, CheckError> {
    let c = Common {
        reason: CheckError::IDENTITY_INVALID,
        kind: "identity",
        did: &ev.did,
        seq: ev.seq,
        time: ev.time.as_deref(),
        raw: ev.raw.get(),
    };
    let mut soft = Vec::new();
    check_common(&c, &mut soft)?;
    if let Some(handle) = &ev.handle {
        check_handle(handle).map_err(|why| c.fail(format!("handle {}: {why}", shown(handle))))?;
    }
    Ok(soft)
}

/// Checks an account event. `Ok` carries the soft findings.
pub fn verify_account(ev: &AccountEvent) -> Result<Vec<CheckError>, CheckError> {
    let c = Common {
        reason: CheckError::ACCOUNT_INVALID,
        kind: "account",
        did: &ev.did,
        seq: ev.seq,
        time: ev.time.as_deref(),
        raw: ev.raw.get(),
    };
    let mut soft = Vec::new();
    check_common(&c, &mut soft)?;
    if ev.active.is_none() {
        soft.push(CheckError::new(
            CheckError::MISSING_FIELD,
            "account.active is absent",
        ));
    }
    if let Some(status) = &ev.status
        && !KNOWN_STATUSES.contains(&status.as_str())
    {
        soft.push(CheckError::new(
            CheckError::UNKNOWN_STATUS,
            format!("account.status {} is not a known value", shown(status)),
        ));
    }
    Ok(soft)
}

/// What identity and account events share.
struct Common<'a> {
    /// The hard failure's code.
    reason: &'static str,
    /// `identity` | `account`: the inner object's name, for messages.
    kind: &'static str,
    /// The envelope's DID.
    did: &'a str,
    seq: Option<i64>,
    time: Option<&'a str>,
    /// The inner object as sent: the decoder does not keep its `did`.
    raw: &'a str,
}

impl Common<'_> {
    /// A hard failure of field `what` (`"did …"` → `"identity.did …"`).
    fn fail(&self, what: String) -> CheckError {
        CheckError::new(self.reason, format!("{}.{what}", self.kind))
    }
}

/// The inner object's `did` (every other field was decoded already).
#[derive(Deserialize)]
struct InnerDid<'a> {
    #[serde(borrow, default)]
    did: Option<Cow<'a, str>>,
}

fn check_common(c: &Common<'_>, soft: &mut Vec<CheckError>) -> Result<(), CheckError> {
    check_did(c.did)
        .map_err(|e| CheckError::new(c.reason, format!("did (envelope) {}", e.message)))?;
    let inner: InnerDid<'_> =
        serde_json::from_str(c.raw).map_err(|e| c.fail(format!("did unreadable: {e}")))?;
    let Some(inner_did) = inner.did else {
        return Err(c.fail("did is absent or null".into()));
    };
    check_did(&inner_did).map_err(|e| c.fail(format!("did {}", e.message)))?;
    if inner_did != c.did {
        return Err(c.fail(format!(
            "did {} differs from the envelope did {}",
            shown(&inner_did),
            shown(c.did)
        )));
    }
    match c.seq {
        Some(seq) if seq < 1 => {
            return Err(c.fail(format!("seq {seq}: must be a positive integer")));
        }
        Some(_) => {}
        None => soft.push(CheckError::new(
            CheckError::MISSING_FIELD,
            format!("{}.seq is absent", c.kind),
        )),
    }
    match c.time {
        Some(time) => {
            check_datetime(time).map_err(|why| c.fail(format!("time {}: {why}", shown(time))))?;
        }
        None => soft.push(CheckError::new(
            CheckError::MISSING_FIELD,
            format!("{}.time is absent", c.kind),
        )),
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use serde_json::value::RawValue;

    use crate::verifier::fixtures::fixture_text;

    const IDENTITY: &str = r#"{"did":"did:plc:hqvhxrowqbemo5e4wjnj6zao","time_us":1783175888384849,"kind":"identity","identity":{"did":"did:plc:hqvhxrowqbemo5e4wjnj6zao","handle":"alice.bsky.social","seq":31527015470,"time":"2026-07-04T14:38:07.877Z"}}"#;
    const ACCOUNT: &str = r#"{"did":"did:plc:hqvhxrowqbemo5e4wjnj6zao","time_us":1783175888390226,"kind":"account","account":{"active":false,"did":"did:plc:hqvhxrowqbemo5e4wjnj6zao","seq":31527015471,"status":"takendown","time":"2026-07-04T14:38:07.877Z"}}"#;

    enum Parsed {
        Identity(IdentityEvent),
        Account(AccountEvent),
    }

    /// A minimal stand-in for the reader's decoder (another room's), field for field.
    fn parse(line: &str) -> Parsed {
        #[derive(serde::Deserialize)]
        struct Line {
            did: String,
            time_us: u64,
            kind: String,
            identity: Option<Box<RawValue>>,
            account: Option<Box<RawValue>>,
        }
        #[derive(serde::Deserialize)]
        struct Fields {
            seq: Option<i64>,
            handle: Option<String>,
            active: Option<bool>,
            status: Option<String>,
            time: Option<String>,
        }
        let l: Line = serde_json::from_str(line).unwrap();
        let raw = l.identity.or(l.account).unwrap();
        let f: Fields = serde_json::from_str(raw.get()).unwrap();
        match l.kind.as_str() {
            "identity" => Parsed::Identity(IdentityEvent {
                did: l.did,
                time_us: l.time_us,
                seq: f.seq,
                handle: f.handle,
                time: f.time,
                raw,
            }),
            "account" => Parsed::Account(AccountEvent {
                did: l.did,
                time_us: l.time_us,
                seq: f.seq,
                active: f.active,
                status: f.status,
                time: f.time,
                raw,
            }),
            other => panic!("kind {other}"),
        }
    }

    fn verify(line: &str) -> Result<Vec<CheckError>, CheckError> {
        match parse(line) {
            Parsed::Identity(i) => verify_identity(&i),
            Parsed::Account(a) => verify_account(&a),
        }
    }

    /// `"ok"`, the first soft finding's code, or the hard failure's code and message.
    fn outcome(line: &str) -> (&'static str, String) {
        match verify(line) {
            Ok(soft) if soft.is_empty() => ("ok", String::new()),
            Ok(soft) => (soft[0].reason, soft[0].message.clone()),
            Err(e) => (e.reason, e.message),
        }
    }

    /// `line` with its inner object edited.
    fn edit(line: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        f(&mut v);
        serde_json::to_string(&v).unwrap()
    }

    #[test]
    fn every_real_identity_and_account_event_passes() {
        let (mut identities, mut accounts) = (0, 0);
        // Every identity and account event of the real Jetstream v1 fixtures (PROVENANCE.md
        // beside the file). Read at run time: test data is not compiled into the crate.
        let real = fixture_text("identity_account_v1.jsonl");
        for line in real.lines().filter(|l| !l.trim().is_empty()) {
            match parse(line) {
                Parsed::Identity(i) => {
                    assert_eq!(verify_identity(&i), Ok(vec![]), "{line}");
                    identities += 1;
                }
                Parsed::Account(a) => {
                    assert_eq!(verify_account(&a), Ok(vec![]), "{line}");
                    accounts += 1;
                }
            }
        }
        assert_eq!((identities, accounts), (2, 2), "the fixture's events");
    }

    #[test]
    fn valid_events_with_handle_and_status_pass() {
        assert_eq!(outcome(IDENTITY), ("ok", String::new()));
        assert_eq!(outcome(ACCOUNT), ("ok", String::new()));
        for status in KNOWN_STATUSES {
            let line = edit(ACCOUNT, |v| v["account"]["status"] = status.into());
            assert_eq!(outcome(&line).0, "ok", "{status}");
        }
        let line = edit(IDENTITY, |v| {
            v["identity"]["handle"] = "handle.invalid".into()
        });
        assert_eq!(
            outcome(&line).0,
            "ok",
            "what a relay sends for an unverified handle"
        );
        let line = edit(IDENTITY, |v| {
            v["identity"]["handle"] = serde_json::Value::Null
        });
        assert_eq!(outcome(&line).0, "ok", "a null handle is no handle");
        let web = "did:web:pds.example.com";
        let line = edit(ACCOUNT, |v| {
            v["did"] = web.into();
            v["account"]["did"] = web.into();
        });
        assert_eq!(outcome(&line).0, "ok");
    }

    #[test]
    fn each_hard_rule_dead_letters_with_the_field_named() {
        type Mutation = fn(&mut serde_json::Value);
        let cases: [(&str, Mutation, &str); 11] = [
            (
                "envelope did",
                |v| v["did"] = "not-a-did".into(),
                "did (envelope) \"not-a-did\"",
            ),
            (
                "inner did syntax",
                |v| v["X"]["did"] = "did:plc:short".into(),
                "X.did \"did:plc:short\"",
            ),
            (
                "inner did differs",
                |v| v["X"]["did"] = "did:plc:wq4aajammjtxdomz3e23667t".into(),
                "X.did \"did:plc:wq4aajammjtxdomz3e23667t\" differs from the envelope did \"did:plc:hqvhxrowqbemo5e4wjnj6zao\"",
            ),
            (
                "inner did absent",
                |v| {
                    v["X"].as_object_mut().unwrap().remove("did");
                },
                "X.did is absent or null",
            ),
            (
                "inner did null",
                |v| v["X"]["did"] = serde_json::Value::Null,
                "X.did is absent or null",
            ),
            (
                "inner did a number",
                |v| v["X"]["did"] = 7.into(),
                "X.did unreadable: invalid type: integer `7`",
            ),
            (
                "seq zero",
                |v| v["X"]["seq"] = 0.into(),
                "X.seq 0: must be a positive integer",
            ),
            (
                "seq negative",
                |v| v["X"]["seq"] = (-5).into(),
                "X.seq -5: must be a positive integer",
            ),
            (
                "time not a datetime",
                |v| v["X"]["time"] = "yesterday".into(),
                "X.time \"yesterday\": shorter than",
            ),
            (
                "time without zone",
                |v| v["X"]["time"] = "2026-07-04T14:38:07.877".into(),
                "X.time \"2026-07-04T14:38:07.877\": timezone",
            ),
            (
                "time impossible",
                |v| v["X"]["time"] = "2026-02-30T14:38:07Z".into(),
                "X.time \"2026-02-30T14:38:07Z\": day out of range",
            ),
        ];
        for (kind, base, reason) in [
            ("identity", IDENTITY, "identity_invalid"),
            ("account", ACCOUNT, "account_invalid"),
        ] {
            for (name, mutate, message) in cases {
                let line = edit(base, |v| {
                    // The mutations name the inner object "X".
                    let inner = v[kind].take();
                    v["X"] = inner;
                    mutate(v);
                    let inner = v["X"].take();
                    v.as_object_mut().unwrap().remove("X");
                    v[kind] = inner;
                });
                let (got, msg) = outcome(&line);
                let message = message.replace("X.", &format!("{kind}."));
                assert_eq!(got, reason, "{kind}: {name}: {msg}");
                assert!(
                    msg.starts_with(&message),
                    "{kind}: {name}: {msg:?} vs {message:?}"
                );
            }
        }
    }

    #[test]
    fn handles_follow_atproto_syntax() {
        // From the atproto interop test files (CC0), `syntax/handle_syntax_valid.txt` and
        // `handle_syntax_invalid.txt`, repository `bluesky-social/atproto-interop-tests`
        // (commit 056e5741).
        let max_segment = format!("short.{}.test", "o".repeat(63));
        let long = format!(
            "shoooort{}.test",
            ".loooooooooooooooooooooooooong".repeat(8)
        );
        for ok in [
            "A.ISI.EDU",
            "john.test",
            "a234567890123456789.test",
            "john-john.test",
            "jo.hn",
            "a.co",
            "j0.h0",
            "john.test.bsky.app",
            "john.t",
            "laptop.local",
            "xn--ls8h.test",
            "xn--bcher-kva.tld",
            "expyuzz4wqqyqhjn.onion",
            "12345.test",
            "8.cn",
            "4chan.o-g",
            "thing.a01",
            "120.0.0.1.com",
            "0john.test",
            "john.t--t",
            "stackoverflow.xn--com",
            "handle.invalid",
            max_segment.as_str(),
            long.as_str(),
        ] {
            assert_eq!(check_handle(ok), Ok(()), "{ok}");
        }
        let too_long = format!(
            "shoooort{}.test",
            ".loooooooooooooooooooooooooong".repeat(9)
        );
        let too_long_segment = format!("short.{}.test", "o".repeat(64));
        for bad in [
            "",
            "did:thing.test",
            "did:thing",
            "john-.test",
            "john.0",
            "john.-",
            "xn--bcher-.tld",
            "john..test",
            "jo_hn.test",
            "-john.test",
            ".john.test",
            "jo!hn.test",
            "jo%hn.test",
            "jo@hn.test",
            "jo:hn.test",
            "jo/hn.test",
            "john💩.test",
            "bücher.test",
            "john .test",
            "john.test.",
            "john",
            "john.",
            " john.test",
            "john.test ",
            "john.tes-",
            "org",
            "cn.8",
            "thing.0aa",
            "127.0.0.1",
            "fe80::7325:8a97:c100:94b",
            "-notvalid.at-all",
            "www.masełkowski.pl.com",
            too_long.as_str(),
            too_long_segment.as_str(),
        ] {
            assert!(check_handle(bad).is_err(), "{bad:?} must be refused");
        }
        let line = edit(IDENTITY, |v| v["identity"]["handle"] = "jo_hn.test".into());
        assert_eq!(
            outcome(&line),
            (
                "identity_invalid",
                "identity.handle \"jo_hn.test\": label has a character outside [A-Za-z0-9-]".into()
            )
        );
    }

    #[test]
    fn soft_findings_keep_the_event() {
        let line = edit(ACCOUNT, |v| v["account"]["status"] = "frozen".into());
        assert_eq!(
            outcome(&line),
            (
                "unknown_status",
                "account.status \"frozen\" is not a known value".into()
            )
        );
        for (kind, base, field) in [
            ("identity", IDENTITY, "seq"),
            ("identity", IDENTITY, "time"),
            ("account", ACCOUNT, "seq"),
            ("account", ACCOUNT, "time"),
            ("account", ACCOUNT, "active"),
        ] {
            let line = edit(base, |v| {
                v[kind].as_object_mut().unwrap().remove(field);
            });
            assert_eq!(
                outcome(&line),
                ("missing_field", format!("{kind}.{field} is absent"))
            );
        }
        // Both findings at once, in check order.
        let line = edit(ACCOUNT, |v| {
            v["account"]["status"] = "".into();
            v["account"].as_object_mut().unwrap().remove("active");
        });
        let soft = verify(&line).unwrap();
        let codes: Vec<_> = soft.iter().map(|s| s.reason).collect();
        assert_eq!(codes, ["missing_field", "unknown_status"]);
    }

    #[test]
    fn hostile_values_are_cut_short_in_messages() {
        let long = format!("did:plc:{}", "a".repeat(10_000));
        let line = edit(IDENTITY, |v| v["identity"]["did"] = long.clone().into());
        let (reason, msg) = outcome(&line);
        assert_eq!(reason, "identity_invalid");
        assert!(msg.len() < 300, "{} bytes", msg.len());
    }
}
