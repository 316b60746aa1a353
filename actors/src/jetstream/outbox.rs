//! The reader's way out: a batch being filled ([`Pending`]) goes downstream as a numbered
//! `PushBatch` holding a credit of the in-flight window and its share of the byte budget
//! (`max_in_flight_batches`, `max_in_flight_bytes`). No credit, no sending, and the session
//! does not read while it waits, so backpressure reaches the TCP socket. The writer drops the
//! credit when the batch is committed; the read loop waits for every credit to come back
//! before it picks a dial cursor ([`Outbox::drained`]).
//!
//! Kept across restarts of the actor (it lives in the actor struct): batch numbers never
//! repeat and the budgets count what is still in flight.
//!
//! Failure: a flush fails only when the downstream stage (or a semaphore) is gone; the
//! session then ends for good (`downstream_gone`).

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use actix::Recipient;
use tokio::sync::Semaphore;
use tracing::debug;

use super::config::ReaderConfig;
use crate::messages::{Batch, Credit, Item, PushBatch};

/// A batch being filled.
pub(super) struct Pending {
    pub items: Vec<Item>,
    pub cursor: Option<u64>,
    pub received_at: Instant,
    /// Bytes of the frames in it (its share of `max_in_flight_bytes`).
    pub bytes: usize,
}

impl Pending {
    pub fn new() -> Pending {
        Pending {
            items: Vec::with_capacity(64),
            cursor: None,
            received_at: Instant::now(),
            bytes: 0,
        }
    }
}

pub(super) struct Outbox {
    /// One permit per batch in flight.
    window: Arc<Semaphore>,
    /// One permit per frame byte in flight.
    bytes: Arc<Semaphore>,
    downstream: Recipient<PushBatch>,
    max_in_flight_batches: usize,
    max_in_flight_bytes: usize,
    /// The number of the next batch (from 1; the order stages downstream keep).
    next_seq: Cell<u64>,
    /// The most frame bytes in flight at once (status).
    peak_bytes: Cell<u64>,
}

impl Outbox {
    pub fn new(cfg: &ReaderConfig, downstream: Recipient<PushBatch>) -> Outbox {
        Outbox {
            window: Arc::new(Semaphore::new(cfg.max_in_flight_batches)),
            bytes: Arc::new(Semaphore::new(
                cfg.max_in_flight_bytes.min(Semaphore::MAX_PERMITS),
            )),
            downstream,
            max_in_flight_batches: cfg.max_in_flight_batches,
            max_in_flight_bytes: cfg.max_in_flight_bytes,
            next_seq: Cell::new(1),
            peak_bytes: Cell::new(0),
        }
    }

    /// Resolves once every batch sent is committed (all window credits are back).
    pub fn drained(&self) -> impl Future<Output = ()> + 'static {
        let window = self.window.clone();
        let n = u32::try_from(self.max_in_flight_batches).unwrap_or(u32::MAX);
        async move {
            let _all = window.acquire_many(n).await;
        }
    }

    /// Frame bytes sent and not yet committed.
    pub fn in_flight_bytes(&self) -> u64 {
        let budget = self.max_in_flight_bytes.min(Semaphore::MAX_PERMITS);
        budget.saturating_sub(self.bytes.available_permits()) as u64
    }

    /// The most frame bytes in flight at once.
    pub fn peak_in_flight_bytes(&self) -> u64 {
        self.peak_bytes.get()
    }

    /// Sends the pending batch downstream, waiting for a credit if the window is full.
    /// Returns whether it had to wait (the socket was not read meanwhile). `replay` is asked
    /// once the credit is in hand (what the batch says it is is decided when it goes).
    pub async fn flush(
        &self,
        pending: &mut Option<Pending>,
        session: u64,
        source: &Arc<str>,
        replay: impl FnOnce() -> bool,
    ) -> Result<bool, String> {
        let Some(p) = pending.take() else {
            return Ok(false);
        };
        let (permit, mut waited) = match self.window.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => {
                metrics::counter!("jetstream_ingestor_backpressure_waits_total").increment(1);
                debug!(session, "in-flight window full, reading paused");
                match self.window.clone().acquire_owned().await {
                    Ok(permit) => (permit, true),
                    Err(e) => return Err(format!("window closed: {e}")),
                }
            }
        };
        // Its share of the byte budget (a frame bigger than the budget takes all of it).
        let share = u32::try_from(p.bytes.min(self.max_in_flight_bytes)).unwrap_or(u32::MAX);
        let bytes = if share == 0 {
            None
        } else {
            Some(match self.bytes.clone().try_acquire_many_owned(share) {
                Ok(b) => b,
                Err(_) => {
                    metrics::counter!("jetstream_ingestor_backpressure_waits_total").increment(1);
                    debug!(session, "in-flight byte budget spent, reading paused");
                    waited = true;
                    match self.bytes.clone().acquire_many_owned(share).await {
                        Ok(b) => b,
                        Err(e) => return Err(format!("byte budget closed: {e}")),
                    }
                }
            })
        };
        let in_use = self.in_flight_bytes();
        self.peak_bytes.set(self.peak_bytes.get().max(in_use));
        metrics::gauge!("jetstream_ingestor_in_flight_bytes").set(in_use as f64);
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        let batch = Batch {
            seq,
            session,
            source: source.clone(),
            items: p.items,
            cursor: p.cursor,
            received_at: p.received_at,
            credit: Credit {
                window: permit,
                bytes,
            },
            replay: replay(),
        };
        self.downstream
            .send(PushBatch(batch))
            .await
            .map_err(|e| format!("downstream stage is gone: {e}"))?;
        Ok(waited)
    }
}
