//! The prove room: is a job's record the one its author's signed repository holds?
//!
//! Pure core (no IO, no actix): `car` (CARv1, every block hashed against its CID), `key`
//! (did:key, ECDSA secp256k1 / P-256, low-S), `commit` (the signed commit), `mst` (proof of
//! presence or absence of `collection/rkey`), `verify` (the verdict: valid / superseded /
//! invalid / unavailable), `did` (DID documents: PDS endpoint and `#atproto` key), `frame`
//! (relay `#commit` frames, for the fixtures and the fake PDS).
//!
//! Imports only `model` and third-party crates; nothing of the other rooms.

pub mod car;
pub mod commit;
pub mod did;
pub mod frame;
pub mod key;
pub mod mst;
pub mod verify;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod mst_build;
#[cfg(test)]
mod tests;

pub use car::{Car, CarError, CarLimits};
pub use did::{DidError, Identity};
pub use key::PublicKey;
pub use verify::{Claim, Proof, Verdict, prove};
