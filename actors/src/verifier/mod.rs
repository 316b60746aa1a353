//! Verifier room: syntax checks and CID recompute for commit events (DESIGN.md §3).

pub mod checks;
pub mod cid;
