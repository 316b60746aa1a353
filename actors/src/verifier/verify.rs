//! One commit event through every verifier check, in a fixed order (docs/design.md §3).
//!
//! Pure: the verifier pool's actor shell calls [`verify_commit`] per commit event.
//! `Err(CheckError)` is a hard failure: the event cannot be a trustworthy job (bad DID,
//! NSID, rkey or rev syntax, a broken envelope, an oversized or too-deep record) and goes
//! to the dead-letter stream; `collection_denied` is the one hard outcome that is a filter,
//! not a fault (the shell skips and counts it). `Ok(Findings)` never drops the event: the
//! CID verdict and the soft findings (rev in the future, `$type` problems, floats, unsafe
//! integers, an unparseable claimed CID) travel on the job for downstream checks.

use super::checks::{
    CheckError, check_cid_string, check_did, check_nsid, check_record_key, check_rev_skew,
    check_tid,
};
use super::cid::{CidCheck, check_record_cid};
use super::config::VerifierConfig;
use super::filter::CollectionFilter;
use super::record::check_record;
use crate::model::{CommitEvent, Operation};

/// What the checks found on a commit that passed the hard checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings {
    /// `match` | `mismatch` | `unverifiable` | `none` (deletes).
    pub cid_check: &'static str,
    /// Why the CID is unverifiable, when it is.
    pub unverifiable: Option<&'static str>,
    /// Soft findings, in check order, one per code.
    pub soft: Vec<CheckError>,
}

/// Checks a commit event and recomputes its record's CID.
///
/// Order: collection syntax, then the filter (a denied collection is not judged further),
/// DID, record key, `rev` syntax (hard) and skew (soft), the operation's envelope
/// (creates/updates carry a record and a CID, deletes neither), the claimed CID's syntax
/// (soft: unverifiable), the record (size/shape/depth hard, the rest soft), and last the
/// CID recompute.
pub fn verify_commit(
    ev: &CommitEvent,
    cfg: &VerifierConfig,
    filter: &CollectionFilter,
) -> Result<Findings, CheckError> {
    check_nsid(&ev.collection)?;
    if !filter.allows(&ev.collection) {
        return Err(CheckError::new(
            CheckError::COLLECTION_DENIED,
            format!("collection {} is filtered out", ev.collection),
        ));
    }
    check_did(&ev.did)?;
    check_record_key(&ev.rkey)?;
    check_tid(&ev.rev)?;
    let mut soft = Vec::new();
    if let Err(e) = check_rev_skew(&ev.rev, ev.time_us, cfg.max_rev_skew) {
        soft.push(e);
    }
    let envelope = |msg: &str| {
        Err(CheckError::new(
            CheckError::BAD_ENVELOPE,
            format!("{} {msg}", ev.operation.as_str()),
        ))
    };
    let (record, cid) = match (ev.operation, &ev.record, &ev.cid) {
        (Operation::Delete, None, None) => {
            return Ok(Findings {
                cid_check: "none",
                unverifiable: None,
                soft,
            });
        }
        (Operation::Delete, _, _) => return envelope("carries a record or a CID"),
        (_, None, _) => return envelope("without a record"),
        (_, _, None) => return envelope("without a CID"),
        (_, Some(record), Some(cid)) => (record.get(), cid),
    };
    let cid_ok = match check_cid_string(cid) {
        Ok(()) => true,
        Err(e) => {
            soft.push(e);
            false
        }
    };
    soft.extend(check_record(record, &ev.collection, cfg.record_limits())?);
    let verdict = if cid_ok {
        check_record_cid(record, cid)
    } else {
        CidCheck::Unverifiable("claimed_cid_invalid")
    };
    Ok(Findings {
        cid_check: verdict.as_str(),
        unverifiable: verdict.reason(),
        soft,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use serde_json::value::RawValue;

    use crate::verifier::fixtures::fixture_texts;

    const LIKE: &str = r#"{"did":"did:plc:wq4aajammjtxdomz3e23667t","time_us":1783175888085434,"kind":"commit","commit":{"rev":"3mptbypluud2a","operation":"create","collection":"app.bsky.feed.like","rkey":"3mptbyplj5d2a","record":{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:08.999Z","subject":{"cid":"bafyreiftot7eltsc3f6g4qktykmbv6jcmdmhcx5osscan6jpdxkpqcmcza","uri":"at://did:plc:r2zybk6op3ymzpz6jhqpkoy5/app.bsky.feed.post/3mpsjbtci2c2o"}},"cid":"bafyreiguce4jh7kcbmof3pmcvasifqtw24b6isakj5ve5ga2b4z4alpc4i"}}"#;

    /// A minimal stand-in for the reader's decoder (not ours to use here).
    fn commit_from_line(line: &str) -> Option<CommitEvent> {
        #[derive(serde::Deserialize)]
        struct Line {
            did: String,
            time_us: u64,
            commit: Option<Commit>,
        }
        #[derive(serde::Deserialize)]
        struct Commit {
            rev: String,
            operation: String,
            collection: String,
            rkey: String,
            record: Option<Box<RawValue>>,
            cid: Option<String>,
        }
        let line: Line = serde_json::from_str(line).unwrap();
        let c = line.commit?;
        Some(CommitEvent {
            did: line.did,
            time_us: line.time_us,
            rev: c.rev,
            operation: Operation::parse(&c.operation).unwrap(),
            collection: c.collection,
            rkey: c.rkey,
            record: c.record,
            cid: c.cid,
            verdict: None,
        })
    }

    fn like() -> CommitEvent {
        commit_from_line(LIKE).unwrap()
    }

    fn verify(ev: &CommitEvent) -> Result<Findings, CheckError> {
        verify_commit(ev, &VerifierConfig::default(), &CollectionFilter::default())
    }

    /// The first soft finding's code, else the CID verdict; or the hard failure's code.
    fn reason(r: Result<Findings, CheckError>) -> &'static str {
        match r {
            Ok(f) => f.soft.first().map_or(f.cid_check, |s| s.reason),
            Err(e) => e.reason,
        }
    }

    #[test]
    fn every_fixture_commit_verifies() {
        let mut seen = 0;
        for text in fixture_texts() {
            for ev in text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .filter_map(commit_from_line)
            {
                let f = verify(&ev).unwrap_or_else(|e| panic!("{e} on {ev:?}"));
                assert!(f.soft.is_empty(), "{:?} on {ev:?}", f.soft);
                match ev.operation {
                    Operation::Delete => assert_eq!(f.cid_check, "none"),
                    _ => assert_eq!(f.cid_check, "match", "{ev:?}"),
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 158, "every commit of both fixture files (150 + 8)");
    }

    #[test]
    fn each_envelope_field_is_checked() {
        type Mutation = fn(&mut CommitEvent);
        let cases: [(&str, Mutation); 9] = [
            ("bad_did", |e| e.did = "did:plc:short".into()),
            ("bad_nsid", |e| e.collection = "like".into()),
            ("bad_rkey", |e| e.rkey = "..".into()),
            ("bad_rev", |e| e.rev = "not-a-tid".into()),
            ("rev_in_future", |e| e.time_us -= 3_600_000_000),
            ("bad_cid", |e| e.cid = Some("Qm123".into())),
            ("bad_envelope", |e| e.record = None),
            ("bad_envelope", |e| e.cid = None),
            ("type_mismatch", |e| {
                e.collection = "app.bsky.feed.post".into()
            }),
        ];
        for (want, mutate) in cases {
            let mut ev = like();
            mutate(&mut ev);
            assert_eq!(reason(verify(&ev)), want);
        }
    }

    #[test]
    fn deletes_carry_nothing() {
        let mut ev = like();
        ev.operation = Operation::Delete;
        assert_eq!(reason(verify(&ev)), "bad_envelope");
        ev.record = None;
        ev.cid = None;
        assert_eq!(verify(&ev).map(|f| f.cid_check), Ok("none"));
    }

    #[test]
    fn record_limits_and_cid_verdicts() {
        let mut ev = like();
        let cfg = VerifierConfig {
            max_record_bytes: 64,
            ..VerifierConfig::default()
        };
        assert_eq!(
            reason(verify_commit(&ev, &cfg, &CollectionFilter::default())),
            "record_too_large"
        );
        ev.cid = Some("bafyreiftot7eltsc3f6g4qktykmbv6jcmdmhcx5osscan6jpdxkpqcmcza".into());
        assert_eq!(reason(verify(&ev)), "mismatch");
        // raw-codec CIDv1: syntactically fine, but not something a record hashes to
        ev.cid = Some("bafkreias7oxbr6swsuggccmtnqpoeami4jza5x4w3urltn6gzhqf4k6k2e".into());
        let f = verify(&ev).unwrap();
        assert_eq!(
            (f.cid_check, f.unverifiable),
            ("unverifiable", Some("claimed_cid_not_dag_cbor"))
        );
    }

    #[test]
    fn filter_applies_before_other_checks() {
        let filter = CollectionFilter::new(&["app.bsky.feed.post"], &[] as &[&str]).unwrap();
        let mut ev = like();
        ev.did = "garbage".into();
        let cfg = VerifierConfig::default();
        assert_eq!(
            reason(verify_commit(&ev, &cfg, &filter)),
            "collection_denied"
        );
        let ev = like();
        let deny = CollectionFilter::new(&[] as &[&str], &["app.bsky.feed.*"]).unwrap();
        assert_eq!(reason(verify_commit(&ev, &cfg, &deny)), "collection_denied");
        let allow = CollectionFilter::new(&["app.bsky.feed.like"], &[] as &[&str]).unwrap();
        assert_eq!(reason(verify_commit(&ev, &cfg, &allow)), "match");
    }
}
