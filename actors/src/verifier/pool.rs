//! `VerifierPool`: the actor shell of the verifier room. It receives batches from the reader,
//! cuts their items into slices for `VerifierWorker`s running on their own threads (actix
//! `SyncArbiter`, so both cores do CPU work while the reader keeps reading), reassembles
//! each batch in input order, and forwards batches to the writer in arrival order even when
//! a later batch finishes first.
//!
//! Outcomes per commit: a verdict on the job (CID tag, soft findings, route), a dead letter
//! for a hard failure, or a counted skip for a denied collection. Identity/account events:
//! unchanged when they pass (soft findings are counted and logged: their entry has no
//! `checks` field), a dead letter (`identity_invalid` / `account_invalid`) when they fail a
//! hard check. With `verifier.enabled = false` they, like dead letters, pass untouched.
//! Bounded: every batch holds a reader credit until it is committed, so nothing here queues
//! without bound. A panic while checking one event is caught and dead-lettered
//! (`verifier_panic`): a bug in a check never stops the stream.

use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::join_all;
use serde::Serialize;
use serde_json::value::RawValue;
use tracing::{debug, error};

use super::checks::CheckError;
use super::config::VerifierConfig;
use super::filter::CollectionFilter;
use super::identity::{verify_account, verify_identity};
use super::route::Router;
use super::verify::verify_commit;
use crate::messages::{Batch, Fatal, Item, PushBatch};
use crate::model::{CommitEvent, DeadLetter, Event, Verdict};
use crate::ordered::ReorderBuffer;

/// Smallest slice worth a message to a worker (smaller batches are checked inline).
const MIN_SLICE: usize = 32;

/// Everything a worker needs, built once at start.
pub struct Setup {
    cfg: VerifierConfig,
    filter: CollectionFilter,
    router: Router,
}

impl Setup {
    /// Compiles the filter and the routes (validated at start, so errors name the key).
    pub fn new(cfg: VerifierConfig) -> Result<Setup, super::VerifierConfigError> {
        let filter = cfg.collection_filter()?;
        let router = cfg.router()?;
        Ok(Setup {
            cfg,
            filter,
            router,
        })
    }

    /// One item through the checks: `None` when it is filtered out.
    pub fn process(&self, item: Item) -> Option<Item> {
        match item {
            Item::Event(Event::Commit(c)) => self.process_commit(c),
            Item::Event(ev @ (Event::Identity(_) | Event::Account(_))) if self.cfg.enabled => {
                Some(process_identity(ev))
            }
            other => Some(other),
        }
    }

    fn process_commit(&self, mut c: CommitEvent) -> Option<Item> {
        let stream = self.router.stream_for(&c.collection);
        if !self.cfg.enabled {
            c.verdict = Some(Verdict {
                cid_check: None,
                checks: Vec::new(),
                stream,
            });
            return Some(Item::Event(Event::Commit(c)));
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            verify_commit(&c, &self.cfg, &self.filter)
        }));
        match outcome {
            Ok(Ok(f)) => {
                metrics::counter!("jetstream_ingestor_verified_total", "outcome" => f.cid_check)
                    .increment(1);
                for s in &f.soft {
                    metrics::counter!("jetstream_ingestor_verify_findings_total", "check" => s.reason).increment(1);
                    debug!(did = %c.did, collection = %c.collection, rkey = %c.rkey, check = s.reason, message = %s.message, "soft finding");
                }
                c.verdict = Some(Verdict {
                    cid_check: Some(f.cid_check),
                    checks: f.soft.iter().map(|s| s.reason).collect(),
                    stream,
                });
                Some(Item::Event(Event::Commit(c)))
            }
            Ok(Err(e)) if e.reason == super::CheckError::COLLECTION_DENIED => {
                metrics::counter!("jetstream_ingestor_events_skipped_total", "reason" => "collection_denied").increment(1);
                None
            }
            Ok(Err(e)) => {
                metrics::counter!("jetstream_ingestor_verified_total", "outcome" => "dead")
                    .increment(1);
                metrics::counter!("jetstream_ingestor_dead_letters_total", "reason" => e.reason)
                    .increment(1);
                debug!(did = %c.did, collection = %c.collection, reason = e.reason, message = %e.message, "commit failed a hard check");
                Some(Item::Dead(dead_letter(&c, e.reason, e.message)))
            }
            Err(_) => {
                error!(did = %c.did, collection = %c.collection, rkey = %c.rkey, "verifier panicked on an event; dead-lettered");
                metrics::counter!("jetstream_ingestor_dead_letters_total", "reason" => "verifier_panic").increment(1);
                Some(Item::Dead(dead_letter(
                    &c,
                    "verifier_panic",
                    "the verifier panicked on this event (a bug: please report it)".into(),
                )))
            }
        }
    }
}

/// An identity or account event through its checks: the event back, or its dead letter.
fn process_identity(ev: Event) -> Item {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &ev {
        Event::Identity(i) => verify_identity(i),
        Event::Account(a) => verify_account(a),
        Event::Commit(_) => Ok(Vec::new()),
    }));
    match outcome {
        Ok(Ok(soft)) => {
            metrics::counter!("jetstream_ingestor_verified_total", "outcome" => "valid")
                .increment(1);
            for s in &soft {
                metrics::counter!("jetstream_ingestor_verify_findings_total", "check" => s.reason)
                    .increment(1);
                debug!(did = %ev.did(), check = s.reason, message = %s.message, "soft finding");
            }
            Item::Event(ev)
        }
        Ok(Err(e)) => {
            metrics::counter!("jetstream_ingestor_verified_total", "outcome" => "dead")
                .increment(1);
            metrics::counter!("jetstream_ingestor_dead_letters_total", "reason" => e.reason)
                .increment(1);
            debug!(did = %ev.did(), reason = e.reason, message = %e.message, "identity/account event failed a hard check");
            Item::Dead(identity_dead_letter(&ev, e))
        }
        Err(_) => {
            error!(did = %ev.did(), "verifier panicked on an event; dead-lettered");
            metrics::counter!("jetstream_ingestor_dead_letters_total", "reason" => "verifier_panic").increment(1);
            Item::Dead(identity_dead_letter(
                &ev,
                CheckError::new(
                    "verifier_panic",
                    "the verifier panicked on this event (a bug: please report it)",
                ),
            ))
        }
    }
}

/// An identity or account event as Jetstream sent it (re-assembled around the inner object's
/// original bytes).
#[derive(Serialize)]
struct IdentityEnvelope<'a> {
    did: &'a str,
    time_us: u64,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a RawValue>,
}

fn identity_dead_letter(ev: &Event, e: CheckError) -> DeadLetter {
    let (kind, identity, account) = match ev {
        Event::Identity(i) => ("identity", Some(&*i.raw), None),
        Event::Account(a) => ("account", None, Some(&*a.raw)),
        Event::Commit(_) => ("commit", None, None),
    };
    let env = IdentityEnvelope {
        did: ev.did(),
        time_us: ev.time_us(),
        kind,
        identity,
        account,
    };
    let raw = serde_json::to_vec(&env).unwrap_or_default();
    let mut d = DeadLetter::new(e.reason, e.message, &raw);
    d.time_us = Some(ev.time_us());
    d.did = Some(ev.did().to_owned());
    d
}

/// The event as Jetstream sent it (re-assembled: the record bytes are the original ones).
#[derive(Serialize)]
struct Envelope<'a> {
    did: &'a str,
    time_us: u64,
    kind: &'static str,
    commit: CommitJson<'a>,
}

#[derive(Serialize)]
struct CommitJson<'a> {
    rev: &'a str,
    operation: &'static str,
    collection: &'a str,
    rkey: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cid: Option<&'a str>,
}

fn dead_letter(c: &CommitEvent, reason: &'static str, message: String) -> DeadLetter {
    let env = Envelope {
        did: &c.did,
        time_us: c.time_us,
        kind: "commit",
        commit: CommitJson {
            rev: &c.rev,
            operation: c.operation.as_str(),
            collection: &c.collection,
            rkey: &c.rkey,
            record: c.record.as_deref(),
            cid: c.cid.as_deref(),
        },
    };
    let raw = serde_json::to_vec(&env).unwrap_or_default();
    let mut d = DeadLetter::new(reason, message, &raw);
    d.time_us = Some(c.time_us);
    d.did = Some(c.did.clone());
    d
}

/// A slice of a batch's items, checked on a worker thread.
struct VerifySlice(Vec<Item>);

impl Message for VerifySlice {
    type Result = Vec<Item>;
}

/// One verifier thread.
pub struct VerifierWorker {
    setup: Arc<Setup>,
}

impl Actor for VerifierWorker {
    type Context = SyncContext<Self>;
}

impl Handler<VerifySlice> for VerifierWorker {
    type Result = MessageResult<VerifySlice>;

    fn handle(
        &mut self,
        VerifySlice(items): VerifySlice,
        _ctx: &mut Self::Context,
    ) -> Self::Result {
        MessageResult(
            items
                .into_iter()
                .filter_map(|i| self.setup.process(i))
                .collect(),
        )
    }
}

pub struct VerifierPool {
    /// For batches too small to be worth a thread hop (checked right here).
    setup: Arc<Setup>,
    workers: Addr<VerifierWorker>,
    worker_count: usize,
    downstream: Recipient<PushBatch>,
    /// Batches in arrival order, by `seq`; the front is forwarded first, once verified.
    in_order: ReorderBuffer<Batch>,
    /// Told when this room cannot go on (the supervisor decides).
    fatal_to: Option<Recipient<Fatal>>,
}

impl VerifierPool {
    /// Where to report an error it cannot go on from (see [`Fatal`]).
    pub fn on_fatal(mut self, to: Recipient<Fatal>) -> Self {
        self.fatal_to = Some(to);
        self
    }

    fn fatal(&self, error: String) {
        Fatal {
            room: "verifier",
            error,
        }
        .report(self.fatal_to.as_ref());
    }

    /// Starts `worker_count` worker threads. Must run inside an actix `System`.
    pub fn new(
        setup: Setup,
        worker_count: usize,
        downstream: Recipient<PushBatch>,
    ) -> VerifierPool {
        let setup = Arc::new(setup);
        let worker_count = worker_count.max(1);
        let shared = setup.clone();
        let workers = SyncArbiter::start(worker_count, move || VerifierWorker {
            setup: shared.clone(),
        });
        VerifierPool {
            setup,
            workers,
            worker_count,
            downstream,
            in_order: ReorderBuffer::new(),
            fatal_to: None,
        }
    }

    /// Forwards every verified batch at the front, in order.
    fn forward_ready(&mut self, ctx: &mut Context<Self>) {
        while let Some(batch) = self.in_order.pop_ready() {
            let send = self.downstream.send(PushBatch(batch));
            // `wait`: the next batch is not forwarded (nor a new one taken) before this one
            // is in the writer's mailbox, so order holds and the writer's mailbox bound is
            // respected.
            ctx.wait(send.into_actor(self).map(|res, act, _ctx| {
                if let Err(e) = res {
                    act.fatal(format!("the writer is gone: {e}"));
                }
            }));
        }
    }
}

impl Actor for VerifierPool {
    type Context = Context<Self>;
}

impl Handler<PushBatch> for VerifierPool {
    type Result = ();

    fn handle(&mut self, PushBatch(mut batch): PushBatch, ctx: &mut Self::Context) {
        let seq = batch.seq;
        let items = std::mem::take(&mut batch.items);
        if items.len() < MIN_SLICE {
            // At live rates batches hold a few events: checking them here costs less than
            // two thread hops, and order holds because they join the same queue.
            batch.items = items
                .into_iter()
                .filter_map(|i| self.setup.process(i))
                .collect();
            self.in_order.push_ready(seq, batch);
            self.forward_ready(ctx);
            return;
        }
        let slice_len = items.len().div_ceil(self.worker_count).max(MIN_SLICE);
        let mut slices = Vec::with_capacity(self.worker_count);
        let mut rest = items.into_iter().peekable();
        while rest.peek().is_some() {
            slices.push(
                self.workers
                    .send(VerifySlice(rest.by_ref().take(slice_len).collect())),
            );
        }
        self.in_order.reserve(seq);
        metrics::gauge!("jetstream_ingestor_verifier_batches_in_flight")
            .set(self.in_order.len() as f64);
        let work = join_all(slices);
        ctx.spawn(work.into_actor(self).map(move |results, act, ctx| {
            let mut items =
                Vec::with_capacity(results.iter().map(|r| r.as_ref().map_or(0, Vec::len)).sum());
            for r in results {
                match r {
                    Ok(part) => items.extend(part),
                    Err(e) => {
                        // Only if a worker thread is gone, which `catch_unwind` prevents.
                        act.fatal(format!("verifier worker unreachable at batch {seq}: {e}"));
                        return;
                    }
                }
            }
            batch.items = items;
            // Its place was reserved above and nothing else fills it: this cannot miss.
            let _ = act.in_order.fill(seq, batch);
            act.forward_ready(ctx);
            metrics::gauge!("jetstream_ingestor_verifier_batches_in_flight")
                .set(act.in_order.len() as f64);
        }));
    }
}
