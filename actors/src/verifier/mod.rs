//! Verifier room: syntax checks and CID recompute for commit events, syntax checks for
//! identity and account events (docs/design.md §3).
//!
//! Pure logic (no actix), beside the actor shell:
//! - `checks`: DID, NSID, rkey, TID and CID syntax, `rev` skew, the shared `CheckError`;
//! - `record`: size, depth, numbers and `$type` of a record;
//! - `dagcbor`: JSON → canonical DAG-CBOR; `cid`: the CID recompute and its verdict;
//! - `filter`: collection allow/deny; `config`: typed settings;
//! - `verify`: all of them on one `CommitEvent`;
//! - `identity`: DIDs, handle, `seq`, `time` and `status` of identity and account events;
//!   `datetime`: the atproto datetime format.
//!
//! The actor shell (`pool.rs`) applies `verify_commit`, `verify_identity` and
//! `verify_account` on worker threads.

pub mod checks;
pub mod cid;
pub mod config;
pub mod dagcbor;
pub mod datetime;
pub mod filter;
pub mod identity;
pub mod pool;
pub mod record;
pub mod route;
pub mod verify;

#[cfg(test)]
mod fixtures;

pub use checks::CheckError;
pub use cid::{CidCheck, CidError, check_record_cid, record_cid};
pub use config::{VerifierConfig, VerifierConfigError};
pub use filter::{CollectionFilter, FilterError};
pub use identity::{verify_account, verify_identity};
pub use record::{RecordLimits, check_record};
pub use verify::{Findings, verify_commit};
