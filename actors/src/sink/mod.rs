//! Sink room: the Redis writer (`writer.rs`) and its pure logic: the atomic commit script and
//! its arguments (`commit.rs`), the once-per-session overlap notice (`overlap.rs`), config;
//! the cursors read at start (`cursors.rs`) and the test-only crash points (`failpoint.rs`).

pub mod commit;
pub mod config;
pub mod cursors;
mod failpoint;
pub mod overlap;
pub mod reindex;
pub mod retention;
pub mod trim;
pub mod writer;

pub use config::WriterConfig;
pub use writer::RedisWriter;
