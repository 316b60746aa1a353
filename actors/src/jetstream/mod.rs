//! Jetstream room: the reader actor (`reader.rs` shell, `read_loop.rs` dials and failover,
//! `session.rs` one connection) and its pure logic: frame decoding, zstd inflation, subscribe
//! URLs and filters, heartbeat, failover policy, gap detection, oversized-frame skipping,
//! config.

pub mod config;
pub mod decode;
mod dial;
mod end;
pub mod failover;
mod frames;
pub mod gap;
pub mod heartbeat;
pub mod inflate;
pub mod oversize;
mod read_loop;
pub mod reader;
mod session;
pub mod subscribe;

pub use config::ReaderConfig;
pub use reader::JetstreamReader;
