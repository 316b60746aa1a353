//! The writer lease (`[ha]`): several instances on one key prefix, one writes.
//!
//! Why a lease with a fencing token: a rolling deploy starts the new pod before the old one
//! stops, and a paused or partitioned leader may wake up with batches in flight after another
//! instance took over. The lease (a key with a TTL, renewed by its holder) decides who should
//! write; the fencing token decides who *can*: every acquisition raises a counter in Redis,
//! and every commit checks, inside its own transaction, that the counter still equals its
//! writer's token (`sink/commit.rs`, `FENCED`). An ex-leader's commit is refused atomically
//! whatever its clock or its view of the lease says.
//!
//! `lease.rs` is the pure core (the keeper's decisions from Redis's answers and the time);
//! `keeper.rs` the actor shell that runs the Lua scripts and tells the supervisor
//! (`Leadership`); `config.rs` the settings.

pub mod config;
pub mod keeper;
pub mod lease;

pub use config::HaConfig;
pub use keeper::LeaseKeeper;
