//! Jetstream room: the reader actor and its pure logic.
