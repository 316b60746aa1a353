//! The edge of jetstream-ingestor: settings (the only reader of files and environment), CLI,
//! telemetry, app wiring and shutdown, the operating surfaces (admin API and client,
//! heartbeat, Redis control stream), the demo, and the fake Jetstream server used by the
//! demo and the tests.

pub mod admin;
pub mod app;
pub mod cli;
pub mod control;
pub mod demo;
pub mod fake_jetstream;
pub mod heartbeat;
pub mod local_redis;
pub mod settings;
pub mod telemetry;
