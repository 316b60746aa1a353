//! Sink room: the Redis writer (`writer.rs`, an actor shell) over its pure core
//! (`pipeline.rs`: queue, pipelined probes and commits, chain recovery; `action.rs`: what goes
//! in and out of it), its round trips to
//! Redis (`link.rs`), its status and telemetry (`report.rs`), the atomic commit script and its
//! arguments (`commit.rs`), the cursors read at start (`cursors.rs`), the once-per-session
//! overlap notice (`overlap.rs`), the test-only crash points (`failpoint.rs`), config.

pub mod action;
pub mod commit;
pub mod config;
pub mod cursors;
mod failpoint;
mod link;
pub mod overlap;
pub mod pipeline;
#[cfg(test)]
mod pipeline_tests;
pub mod reindex;
mod report;
pub mod retention;
pub mod trim;
pub mod writer;

pub use config::WriterConfig;
pub use writer::RedisWriter;
