//! The prove room: is a job's record the one its author's signed repository holds?
//!
//! Pure core (no IO, no actix): `car` (CARv1, every block hashed against its CID), `key`
//! (did:key, ECDSA secp256k1 / P-256, low-S), `commit` (the signed commit), `mst` (proof of
//! presence or absence of `collection/rkey`), `verify` (the verdict: valid / superseded /
//! invalid / unavailable), `did` (DID documents: PDS endpoint and `#atproto` key), `frame`
//! (relay `#commit` frames, for the fixtures and the fake PDS).
//!
//! Shell: `http` (a polite HTTP client: per-host limits, token bucket, Retry-After, backoff,
//! circuit breaker, coalescing), `guard` (public addresses only for hosts named by documents),
//! `resolver` (DID documents, bounded cache invalidated by identity events), `worker` (the
//! consumer-group loop: XREADGROUP, prove, verdict + XACK in one atomic script, XAUTOCLAIM),
//! `streams` (its Redis reads), `entry` (what a verdict becomes in `proven` and `dead`).
//!
//! Imports only `model`, `backoff` and third-party crates; nothing of the other rooms.

pub mod car;
pub mod commit;
pub mod config;
pub mod did;
pub mod entry;
pub mod frame;
pub mod guard;
pub mod http;
pub mod key;
pub mod mst;
pub mod resolver;
pub mod streams;
pub mod verify;
pub mod worker;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod mst_build;
#[cfg(test)]
mod tests;

pub use car::{Car, CarError, CarLimits};
pub use config::{ProveConfig, ProveConfigError};
pub use did::{DidError, Identity};
pub use key::PublicKey;
pub use verify::{Claim, Proof, Verdict, prove};
