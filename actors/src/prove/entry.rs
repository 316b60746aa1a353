//! What a verdict becomes in Redis: the `<prefix>proven` entry (the job's fields plus the
//! proof fields) and, for `invalid`, the `<prefix>dead` entry (`pds_proof_invalid`). Pure;
//! the field names are a contract (docs/prove.md, docs/jobs.md).

use sha2::{Digest, Sha256};

use super::verify::{Proof, Verdict};

/// Fields the worker writes itself; a job field of the same name is not copied.
pub const PROOF_FIELDS: [&str; 8] = [
    "job_stream",
    "job_id",
    "proof",
    "proof_reason",
    "proof_rev",
    "proof_commit",
    "pds",
    "checked_at",
];

/// The largest `raw` of a dead letter (as the ingestor's own dead letters).
const RAW_CAP: usize = 64 * 1024;

/// Where a job was read and when it was checked.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The stream name after the prefix.
    pub job_stream: &'a str,
    pub job_id: &'a str,
    /// The PDS asked (empty when the DID did not resolve).
    pub pds: &'a str,
    /// Unix milliseconds.
    pub checked_at: u128,
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(f, _)| f == name)
        .map_or("", |(_, v)| v.as_str())
}

/// The `<prefix>proven` entry: the job's fields, then the proof fields.
pub fn proven_fields(
    job: &[(String, String)],
    origin: Origin<'_>,
    proof: &Proof,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = job
        .iter()
        .filter(|(k, _)| !PROOF_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    out.extend(
        [
            ("job_stream", origin.job_stream.to_owned()),
            ("job_id", origin.job_id.to_owned()),
            ("proof", proof.verdict.as_str().to_owned()),
            ("proof_reason", proof.verdict.reason().to_owned()),
            ("proof_rev", proof.rev.clone().unwrap_or_default()),
            (
                "proof_commit",
                proof.commit.map(|c| c.to_string()).unwrap_or_default(),
            ),
            ("pds", origin.pds.to_owned()),
            ("checked_at", origin.checked_at.to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    out
}

/// The `<prefix>dead` entry of an `invalid` verdict (`None` for the others).
pub fn dead_letter_fields(
    job: &[(String, String)],
    origin: Origin<'_>,
    proof: &Proof,
) -> Option<Vec<(String, String)>> {
    let Verdict::Invalid(reason) = &proof.verdict else {
        return None;
    };
    let raw = serde_json::to_string(
        &job.iter()
            .cloned()
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
    .unwrap_or_default();
    let mut capped = raw.clone();
    if capped.len() > RAW_CAP {
        let mut cut = RAW_CAP;
        while !capped.is_char_boundary(cut) {
            cut -= 1;
        }
        capped.truncate(cut);
    }
    let identity = Sha256::digest(format!("{}|{}", origin.job_stream, origin.job_id).as_bytes());
    let message = format!(
        "{reason} (proof rev {}, pds {})",
        proof.rev.as_deref().unwrap_or("-"),
        if origin.pds.is_empty() {
            "-"
        } else {
            origin.pds
        }
    );
    Some(
        [
            ("v", crate::model::SCHEMA_VERSION.to_owned()),
            ("reason", "pds_proof_invalid".to_owned()),
            ("message", message),
            ("source", field(job, "source").to_owned()),
            ("time_us", field(job, "time_us").to_owned()),
            ("did", field(job, "did").to_owned()),
            ("idem", field(job, "idem").to_owned()),
            ("job_stream", origin.job_stream.to_owned()),
            ("job_id", origin.job_id.to_owned()),
            ("raw_len", raw.len().to_string()),
            ("raw", capped),
            ("frame_sha256", hex::encode(&identity[..16])),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .to_vec(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn job() -> Vec<(String, String)> {
        [
            ("v", "1"),
            ("idem", "did:plc:a|c|r|3m"),
            ("did", "did:plc:a"),
            ("proof", "forged by the job"),
            ("record", &"x".repeat(70_000)),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    const ORIGIN: Origin<'static> = Origin {
        job_stream: "records",
        job_id: "1-0",
        pds: "https://pds.example",
        checked_at: 1_700_000_000_000,
    };

    #[test]
    fn proven_entry_copies_the_job_and_owns_the_proof_fields() {
        let proof = Proof {
            verdict: Verdict::Superseded("record_changed"),
            rev: Some("3mrev".into()),
            commit: None,
            record: None,
        };
        let f = proven_fields(&job(), ORIGIN, &proof);
        let get = |k: &str| {
            f.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            get("proof"),
            ["superseded"],
            "the job's own `proof` field is not copied"
        );
        assert_eq!(get("proof_reason"), ["record_changed"]);
        assert_eq!(get("proof_rev"), ["3mrev"]);
        assert_eq!(get("did"), ["did:plc:a"]);
        assert_eq!(get("checked_at"), ["1700000000000"]);
        assert_eq!(f.len(), 4 + PROOF_FIELDS.len());
        assert!(dead_letter_fields(&job(), ORIGIN, &proof).is_none());
    }

    #[test]
    fn an_invalid_verdict_is_a_capped_dead_letter() {
        let proof = Proof {
            verdict: Verdict::Invalid("signature_invalid".into()),
            rev: Some("3mrev".into()),
            commit: None,
            record: None,
        };
        let d = dead_letter_fields(&job(), ORIGIN, &proof).unwrap();
        let get = |k: &str| d.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("reason"), "pds_proof_invalid");
        assert_eq!(
            get("message"),
            "signature_invalid (proof rev 3mrev, pds https://pds.example)"
        );
        assert_eq!(get("raw").len(), RAW_CAP);
        assert!(get("raw_len").parse::<usize>().unwrap() > RAW_CAP);
        assert_eq!(get("frame_sha256").len(), 32);
        assert_eq!(get("idem"), "did:plc:a|c|r|3m");
    }
}
