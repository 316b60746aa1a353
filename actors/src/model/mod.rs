//! The shared vocabulary: events as decoded from Jetstream, the stream entries we write, and
//! cursor arithmetic. Ground floor: imports nothing from the rest of the crate.

pub mod bucket;
pub mod cursor;
pub mod duration;
pub mod event;
pub mod host;
pub mod job;

pub use bucket::{StateOp, Transition, TransitionKind};
pub use cursor::Cursor;
pub use event::{AccountEvent, CommitEvent, DeadLetter, Event, IdentityEvent, Operation, Verdict};
pub use job::{SCHEMA_VERSION, StreamEntry, StreamKind};
