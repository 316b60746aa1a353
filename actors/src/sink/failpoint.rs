//! Test-only crash points, compiled in with the cargo feature `failpoints` (the binary that
//! `cargo test` builds; never a release build) and empty functions without it.
//!
//! `JETSTREAM_INGESTOR_FAILPOINT` arms one point; the process then calls
//! `std::process::abort()` (no unwinding, no flushing: as abrupt as kill -9) when it reaches
//! that point for the N-th time (N from 1):
//! - `before_commit:N`: the N-th commit attempt is about to be sent (earlier ones may still
//!   be in flight, so Redis may or may not have applied them);
//! - `after_commit_before_ack:N`: Redis acknowledged the N-th commit, the reader has not
//!   heard of it (its cursor and credit are not updated);
//! - `during_drain[:N]`: the N-th commit acknowledged after SIGTERM, while the shutdown
//!   drain commits what is in flight.
//!
//! Read from the environment here rather than in settings: it is not a setting, and builds
//! without the feature do not know it. An unknown value aborts at start, loudly.

pub use imp::{Point, hit, watch_drain};

#[cfg(feature = "failpoints")]
mod imp {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Point {
        BeforeCommit,
        AfterCommitBeforeAck,
        DuringDrain,
    }

    static ARMED: OnceLock<Option<(Point, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    /// SIGTERM seen: the drain has begun.
    static DRAINING: AtomicBool = AtomicBool::new(false);

    fn armed() -> Option<(Point, u64)> {
        *ARMED.get_or_init(|| {
            let value = std::env::var("JETSTREAM_INGESTOR_FAILPOINT").ok()?;
            let (name, n) = value.split_once(':').unwrap_or((value.as_str(), "1"));
            let point = match name {
                "before_commit" => Some(Point::BeforeCommit),
                "after_commit_before_ack" => Some(Point::AfterCommitBeforeAck),
                "during_drain" => Some(Point::DuringDrain),
                _ => None,
            };
            match (point, n.parse::<u64>()) {
                (Some(p), Ok(n)) if n > 0 => Some((p, n)),
                _ => {
                    eprintln!("invalid JETSTREAM_INGESTOR_FAILPOINT {value:?}; aborting");
                    std::process::abort();
                }
            }
        })
    }

    /// Reached `point`: aborts if it is the armed one, for the N-th time.
    pub fn hit(point: Point) {
        let Some((armed, n)) = armed() else {
            return;
        };
        if armed != point || (point == Point::DuringDrain && !DRAINING.load(Ordering::SeqCst)) {
            return;
        }
        if HITS.fetch_add(1, Ordering::SeqCst) + 1 == n {
            eprintln!("failpoint {point:?}:{n} reached; aborting");
            std::process::abort();
        }
    }

    /// With `during_drain` armed: notes the SIGTERM that starts the drain.
    pub fn watch_drain() {
        #[cfg(unix)]
        if matches!(armed(), Some((Point::DuringDrain, _))) {
            actix::spawn(async {
                use tokio::signal::unix::{SignalKind, signal};
                if let Ok(mut term) = signal(SignalKind::terminate()) {
                    term.recv().await;
                    DRAINING.store(true, Ordering::SeqCst);
                }
            });
        }
    }
}

#[cfg(not(feature = "failpoints"))]
mod imp {
    pub enum Point {
        BeforeCommit,
        AfterCommitBeforeAck,
        DuringDrain,
    }

    #[inline(always)]
    pub fn hit(_: Point) {}

    #[inline(always)]
    pub fn watch_drain() {}
}
