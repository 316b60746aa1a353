//! What goes into the writer's core (`pipeline.rs`) and what comes out: the replies it takes
//! ([`CommitError`], [`Held`]) and the [`Action`]s it returns, with what they carry. Data only.

use std::rc::Rc;

use super::commit::Encoded;

/// Why a probe or commit did not go through.
#[derive(Debug)]
pub enum CommitError {
    Redis(redis::RedisError),
    Reply(String),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Redis(e) => write!(f, "{e}"),
            CommitError::Reply(m) => write!(f, "unexpected reply: {m}"),
        }
    }
}

/// The commit transaction to send: as encoded (the usual case, sent without copying) or
/// rebuilt without committed entries or for another predecessor.
pub enum ToSend {
    AsEncoded(Rc<Encoded>),
    Rebuilt(redis::Pipeline),
}

impl ToSend {
    pub fn get(&self) -> &redis::Pipeline {
        match self {
            ToSend::AsEncoded(e) => &e.commit,
            ToSend::Rebuilt(p) => p,
        }
    }
}

/// A batch Redis committed, in order.
pub struct Done<T> {
    pub seq: u64,
    pub cursor: Option<u64>,
    pub written: u64,
    pub skipped: u64,
    pub ticket: T,
    /// Entries added per stream (name after the key prefix), when the commit's reply was in.
    pub jobs: Vec<(String, u64)>,
    /// Batches still queued after this one was popped.
    pub queued: usize,
}

/// Redis holds less than it acknowledged: what it holds, and what we had committed.
#[derive(Debug, PartialEq, Eq)]
pub struct Rollback {
    pub chain: Option<String>,
    pub stored: Option<u64>,
    pub replay: Option<u64>,
    pub our_last_commit: Option<Rc<str>>,
    pub our_newest_cursor: Option<u64>,
    pub dropped: usize,
}

/// What recovery read from Redis (`MGET` of the chain, cursor and replay keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub chain: Option<String>,
    pub cursor: Option<u64>,
    pub replay: Option<u64>,
}

/// What the writer must do, in this order.
pub enum Action<T> {
    /// Send batch `seq`'s probe (`encoded.probe`).
    Probe { seq: u64, encoded: Rc<Encoded> },
    /// Send batch `seq`'s commit.
    Commit { seq: u64, pipe: ToSend },
    /// Tell the reader.
    Committed(Done<T>),
    /// The first failure of an incident (later ones until recovery are the same incident).
    Failed {
        seq: u64,
        error: CommitError,
        queued: usize,
    },
    /// Every reply is in after a failure: read the chain, then call `Pipeline::recovered`.
    Recover,
    /// Wait out the backoff, then call `Pipeline::retry_due`.
    RetryLater,
    /// Tell the supervisor; the core is halted until `Pipeline::resume`.
    RolledBack(Rollback),
    /// `[ha]`: fenced off by a newer lease; the core stands by.
    StepDown {
        token: u64,
        error: String,
        dropped: usize,
    },
}
