//! Jetstream room: the reader actor (`reader.rs`) and its pure logic: frame decoding,
//! subscribe URLs and filters, heartbeat, config.

pub mod config;
pub mod decode;
pub mod heartbeat;
pub mod reader;
pub mod subscribe;

pub use config::ReaderConfig;
pub use reader::JetstreamReader;
