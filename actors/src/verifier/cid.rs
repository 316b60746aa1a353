//! CID recompute (filled by the verifier work).
