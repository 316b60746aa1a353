//! The verdict on one job given its author's getRecord proof (a CAR) and signing key: is the
//! record the job carries the one the author's signed repository holds?
//!
//! Pure: no IO. Steps, each failing with a stable reason code:
//! 1. read the CAR (every block hashed against its CID);
//! 2. its root is a commit block, for the job's DID (`commit_did_mismatch`);
//! 3. the commit's signature verifies with the DID document's `#atproto` key, low-S;
//! 4. the MST walk from the commit's `data` root to `collection/rkey` (presence or absence);
//! 5. the record block is in the CAR (already hashed to its CID), and that CID is the job's.
//!
//! A signed commit newer than the job's rev that no longer holds the job's record (another
//! CID, or none) is `superseded`: history moved on, not evidence of forgery. A failure at a
//! rev not newer than the job's, or any broken signature / CAR / MST, is `invalid`.

use ::cid::Cid;

use super::car::{CarLimits, read_car};
use super::commit::decode_commit;
use super::key::PublicKey;
use super::mst::{Lookup, walk};

/// What the job claims.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub did: &'a str,
    pub collection: &'a str,
    pub rkey: &'a str,
    pub rev: &'a str,
    /// `create`, `update` or `delete`.
    pub operation: &'a str,
    /// The record CID the job carries (empty on delete).
    pub cid: &'a str,
}

impl Claim<'_> {
    pub fn is_delete(&self) -> bool {
        self.operation == "delete"
    }

    /// The MST key, `collection/rkey`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.collection, self.rkey)
    }
}

/// The verdict on a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The author's signed repository holds exactly this record (or, for a delete, no record
    /// under this key).
    Valid,
    /// The repository moved on since the job's rev: `record_changed` (another CID),
    /// `record_deleted` (no record), `record_recreated` (a delete's key holds a record again).
    Superseded(&'static str),
    /// The proof contradicts the job: a forgery, or a broken PDS answer. Reason code.
    Invalid(String),
    /// No proof could be had (PDS or DID unreachable, account gone …). Reason.
    Unavailable(String),
}

impl Verdict {
    /// The value of the `proof` field: `valid`, `superseded`, `invalid`, `unavailable`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Superseded(_) => "superseded",
            Verdict::Invalid(_) => "invalid",
            Verdict::Unavailable(_) => "unavailable",
        }
    }

    /// The reason code (empty when valid).
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Valid => "",
            Verdict::Superseded(r) => r,
            Verdict::Invalid(r) | Verdict::Unavailable(r) => r,
        }
    }
}

/// A verdict and what it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub verdict: Verdict,
    /// The rev of the signed commit the verdict rests on (none when no commit was read).
    pub rev: Option<String>,
    /// The commit's CID.
    pub commit: Option<Cid>,
    /// The record CID the repository holds under the key, if any.
    pub record: Option<Cid>,
}

impl Proof {
    fn fail(verdict: Verdict) -> Proof {
        Proof {
            verdict,
            rev: None,
            commit: None,
            record: None,
        }
    }
}

fn invalid(reason: &str) -> Verdict {
    Verdict::Invalid(reason.to_owned())
}

/// Judges `claim` against the getRecord proof `car` and the author's signing `key`.
pub fn prove(claim: &Claim<'_>, car: &[u8], key: &PublicKey, limits: CarLimits) -> Proof {
    let car = match read_car(car, limits) {
        Ok(car) => car,
        Err(e) => return Proof::fail(invalid(e.reason())),
    };
    let [root] = car.roots.as_slice() else {
        return Proof::fail(invalid("car_roots"));
    };
    let Some(block) = car.get(root) else {
        return Proof::fail(invalid("commit_missing"));
    };
    let commit = match decode_commit(block) {
        Ok(c) => c,
        Err(e) => return Proof::fail(invalid(e.reason())),
    };
    let mut proof = Proof {
        verdict: Verdict::Valid,
        rev: Some(commit.rev.clone()),
        commit: Some(*root),
        record: None,
    };
    if commit.did != claim.did {
        proof.verdict = invalid("commit_did_mismatch");
        return proof;
    }
    if let Some(reason) = commit.verify(key).reason() {
        proof.verdict = invalid(reason);
        return proof;
    }
    let lookup = match walk(&car, commit.data, claim.key().as_bytes()) {
        Ok(w) => w.lookup,
        Err(e) => {
            proof.verdict = invalid(e.reason());
            return proof;
        }
    };
    // TIDs are fixed-length base32-sortable: string order is time order.
    let newer = commit.rev.as_str() > claim.rev;
    proof.verdict = match (lookup, claim.is_delete()) {
        (Lookup::Absent, true) => Verdict::Valid,
        (Lookup::Present(found), true) => {
            proof.record = Some(found);
            if newer {
                Verdict::Superseded("record_recreated")
            } else {
                invalid("record_present")
            }
        }
        (Lookup::Absent, false) => {
            if newer {
                Verdict::Superseded("record_deleted")
            } else {
                invalid("record_absent")
            }
        }
        (Lookup::Present(found), false) => {
            proof.record = Some(found);
            let claimed = Cid::try_from(claim.cid).ok();
            if claimed == Some(found) {
                if car.get(&found).is_some() {
                    Verdict::Valid
                } else {
                    invalid("record_block_missing")
                }
            } else if newer {
                Verdict::Superseded("record_changed")
            } else if claimed.is_none() {
                invalid("job_cid_unparseable")
            } else {
                invalid("record_cid_mismatch")
            }
        }
    };
    proof
}

/// What a PDS's getRecord answers for `key`, cut from a CAR rooted at a signed commit that
/// holds the path (a relay frame's `blocks`, a repository export): the commit, the MST
/// nodes from the root to the key, and the record if present. Serves the fake PDS of the
/// tests and keeps proofs small.
pub fn record_proof_car(car: &[u8], key: &str) -> Result<Vec<u8>, String> {
    let car = read_car(car, CarLimits::default()).map_err(|e| e.to_string())?;
    let [root] = car.roots.as_slice() else {
        return Err("CAR must have one root".into());
    };
    let commit_block = car.get(root).ok_or("commit block missing")?;
    let commit = decode_commit(commit_block).map_err(|e| e.to_string())?;
    let w = walk(&car, commit.data, key.as_bytes()).map_err(|e| e.to_string())?;
    let mut blocks: Vec<(&Cid, &[u8])> = vec![(root, commit_block)];
    for c in &w.path {
        blocks.push((c, car.get(c).ok_or("path block missing")?));
    }
    if let Lookup::Present(c) = &w.lookup
        && let Some(record) = car.get(c)
    {
        blocks.push((c, record));
    }
    Ok(super::car::write_car(&[*root], blocks))
}
