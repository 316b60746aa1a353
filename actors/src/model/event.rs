//! Typed Jetstream events. Records stay raw JSON (`RawValue`): we never re-serialise what the
//! network gave us, so the record a consumer reads is byte-for-byte the one Jetstream sent.

use std::sync::Arc;

use serde_json::value::RawValue;
use sha2::Digest as _;

/// A commit's operation on a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        match s {
            "create" => Some(Operation::Create),
            "update" => Some(Operation::Update),
            "delete" => Some(Operation::Delete),
            _ => None,
        }
    }
}

/// One `kind: "commit"` event.
#[derive(Debug, Clone)]
pub struct CommitEvent {
    pub did: String,
    pub time_us: u64,
    pub rev: String,
    pub operation: Operation,
    pub collection: String,
    pub rkey: String,
    /// The record exactly as sent; `None` on deletes.
    pub record: Option<Box<RawValue>>,
    /// The CID Jetstream claims for the record; `None` on deletes.
    pub cid: Option<String>,
    /// What the verifier found (`None` = not verified).
    pub verdict: Option<Verdict>,
}

/// The verifier's findings on a commit that passed its hard checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// `match` | `mismatch` | `unverifiable` | `none` (deletes); `None` when verification is
    /// off (the verdict then only carries the route).
    pub cid_check: Option<&'static str>,
    /// Soft findings (codes such as `rev_in_future`, `type_mismatch`, `float_in_record`):
    /// the job is written anyway and carries them.
    pub checks: Vec<&'static str>,
    /// Stream (name after the key prefix) chosen by the routes; `None` = `records`.
    pub stream: Option<Arc<str>>,
}

/// One `kind: "identity"` event (handle or DID document change).
#[derive(Debug, Clone)]
pub struct IdentityEvent {
    pub did: String,
    pub time_us: u64,
    pub seq: Option<i64>,
    pub handle: Option<String>,
    pub time: Option<String>,
    /// The whole `identity` object as sent, for fields we do not model.
    pub raw: Box<RawValue>,
}

/// One `kind: "account"` event (activation, takedown, deletion …).
#[derive(Debug, Clone)]
pub struct AccountEvent {
    pub did: String,
    pub time_us: u64,
    pub seq: Option<i64>,
    pub active: Option<bool>,
    pub status: Option<String>,
    pub time: Option<String>,
    /// The whole `account` object as sent.
    pub raw: Box<RawValue>,
}

/// A decoded event of a kind we handle.
#[derive(Debug, Clone)]
pub enum Event {
    Commit(CommitEvent),
    Identity(IdentityEvent),
    Account(AccountEvent),
}

impl Event {
    pub fn time_us(&self) -> u64 {
        match self {
            Event::Commit(e) => e.time_us,
            Event::Identity(e) => e.time_us,
            Event::Account(e) => e.time_us,
        }
    }

    pub fn did(&self) -> &str {
        match self {
            Event::Commit(e) => &e.did,
            Event::Identity(e) => &e.did,
            Event::Account(e) => &e.did,
        }
    }
}

/// Something that could not become a job: written to `<prefix>dead` with a machine-readable
/// reason, never dropped silently.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Stable, machine-readable code (`invalid_json`, `bad_envelope`, …).
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
    /// The event time if the frame got far enough to tell it (never one from the future:
    /// the reader clears those).
    pub time_us: Option<u64>,
    /// Where the frame sat when it told no time: the reader's position on receipt (the
    /// newest of the last event time, the dial cursor and the wall clock). Its dedupe score,
    /// so a replay after a reconnect meets its identity and does not dead-letter it twice.
    pub position_us: Option<u64>,
    pub did: Option<String>,
    /// The frame as received (lossy UTF-8 for binary), capped at [`DeadLetter::RAW_CAP`].
    pub raw: String,
    /// Full size of the frame before capping.
    pub raw_len: usize,
    /// SHA-256 of the whole frame as received: the dead letter's identity. Not of `raw`,
    /// which is capped and lossy, so frames that differ only past the cap or only in bytes
    /// that are not UTF-8 would share it (and all but the first be skipped as replays).
    pub frame_sha256: [u8; 32],
}

impl DeadLetter {
    /// Dead letters keep at most this many bytes of the offending frame.
    pub const RAW_CAP: usize = 64 * 1024;

    /// Builds a dead letter, capping the raw text at a char boundary.
    pub fn new(reason: &'static str, message: impl Into<String>, raw: &[u8]) -> DeadLetter {
        let capped = &raw[..raw.len().min(Self::RAW_CAP)];
        let mut text = String::from_utf8_lossy(capped).into_owned();
        if text.len() > Self::RAW_CAP {
            let mut cut = Self::RAW_CAP;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        DeadLetter {
            reason,
            message: message.into(),
            time_us: None,
            position_us: None,
            did: None,
            raw: text,
            raw_len: raw.len(),
            frame_sha256: sha2::Sha256::digest(raw).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_caps_raw_bytes() {
        let big = vec![b'x'; DeadLetter::RAW_CAP + 10];
        let dl = DeadLetter::new("invalid_json", "too big", &big);
        assert_eq!(dl.raw.len(), DeadLetter::RAW_CAP);
        assert_eq!(dl.raw_len, DeadLetter::RAW_CAP + 10);
    }

    #[test]
    fn dead_letter_cap_respects_utf8() {
        let mut raw = vec![b'a'; DeadLetter::RAW_CAP - 1];
        raw.extend_from_slice("é".as_bytes());
        let dl = DeadLetter::new("invalid_json", "", &raw);
        assert!(dl.raw.len() <= DeadLetter::RAW_CAP);
        assert!(dl.raw.is_char_boundary(dl.raw.len()));
    }
}
