//! Sink room: the Redis writer.
