//! Fake Jetstream server.
