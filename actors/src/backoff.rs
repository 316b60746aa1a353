//! Backoff.
