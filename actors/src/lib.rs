//! The running parts of jetstream-ingestor: one room per actor, plus the shared vocabulary.
//!
//! Floors (docs/design.md §7): `model` imports nothing of ours; the rooms (`jetstream`,
//! `verifier`, `prove`, `buckets`, `sink`) import `model` and `messages` but never each other; only `supervisor`
//! knows the whole topology and wires the rooms together with `Recipient`s. `backoff` and
//! `ordered` are pure mechanisms any room may use; like `model`, they import nothing of ours.
//! knows the whole topology and wires the rooms together with `Recipient`s. `redis_target`
//! (where Redis is and how to reach it) is ground floor too: every room makes its clients there.

pub mod backoff;
pub mod buckets;
pub mod ha;
pub mod jetstream;
pub mod messages;
pub mod model;
pub(crate) mod ordered;
pub mod prove;
pub mod redis_target;
pub mod sink;
pub mod supervisor;
pub mod verifier;
