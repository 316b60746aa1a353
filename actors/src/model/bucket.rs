//! Bucket vocabulary shared by the buckets room (which decides transitions) and the sink
//! (which commits them): a membership transition, and a state operation on a Redis hash that
//! must land in the same atomic commit as the batch's jobs and cursor (docs/design.md §2).

use std::sync::Arc;

/// Entered or left a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransitionKind {
    Entered,
    Left,
}

impl TransitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Entered => "entered",
            TransitionKind::Left => "left",
        }
    }
}

/// One membership change, written to `<prefix>buckets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub bucket: Arc<str>,
    pub did: String,
    pub kind: TransitionKind,
    /// 1 + prior memberships of this DID in this bucket.
    pub epoch: u32,
    /// Why: `criteria`, `window_expired`, `max_dwell`, …
    pub reason: &'static str,
    /// Event time of the change (the watermark that caused it).
    pub time_us: u64,
}

/// `HSET key field value` (`value: Some`) or `HDEL key field` (`None`), applied in the
/// batch's atomic commit. `key` is the name after the key prefix (`bucket:<id>:state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateOp {
    pub key: String,
    pub field: String,
    pub value: Option<String>,
}
