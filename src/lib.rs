//! The edge of jetstream-ingestor: settings, CLI, telemetry, wiring, and the fake Jetstream
//! server used by the demo and the tests.

pub mod fake_jetstream;
