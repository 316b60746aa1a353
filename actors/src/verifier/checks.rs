//! Syntax checks (filled by the verifier work).
