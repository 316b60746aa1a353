//! Jetstream room: the reader actor (`reader.rs` shell over `shared.rs` state,
//! `read_loop.rs` dials and failover, `session.rs` one connection, `frames.rs` what its frames
//! become, `outbox.rs` batches downstream with credits) and its pure logic: cursors and the
//! dial choice (`cursors.rs`, `dial.rs`), session ends (`end.rs`), frame times (`clock.rs`),
//! frame decoding, zstd inflation, subscribe URLs and filters, heartbeat, failover policy,
//! gap detection, oversized-frame skipping, config.
//!
//! Imports inside the room go one way: reader → read_loop → session → frames → {outbox,
//! shared, cursors, dial, end, clock} and the pure modules; nothing imports back up.

mod clock;
pub mod config;
mod cursors;
pub mod decode;
mod dial;
mod end;
pub mod failover;
mod frames;
pub mod gap;
pub mod heartbeat;
pub mod inflate;
mod outbox;
pub mod oversize;
mod read_loop;
pub mod reader;
mod session;
mod shared;
pub mod subscribe;

pub use config::ReaderConfig;
pub use reader::JetstreamReader;
