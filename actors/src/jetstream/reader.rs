//! `JetstreamReader`: the actor shell around the socket. It owns the state that must survive
//! a restart: cursors, backoff, endpoint choice, filters, counters ([`Shared`], `shared.rs`)
//! and the batches in flight with their credits ([`Outbox`], `outbox.rs`); it answers the
//! control messages (`Restart`, `Pause`, `Resume`, `Drain`, `Quiesce`, `RewindTo`,
//! `UpdateFilters`, `GetReaderStatus`) and the writer's `BatchCommitted`, and runs the
//! [`ReadLoop`] (`read_loop.rs`: dial choice, failover, backoff; `session.rs`: one
//! connection; `frames.rs`: what each frame becomes) on its context.
//!
//! Failure: the read loop never gives up (it redials with backoff, moving between endpoints);
//! it runs under `actix::Supervisor`: `Restart` closes the session cleanly, then stops the
//! actor and the supervisor starts it again with the same struct, so cursor, backoff,
//! endpoint and counters survive (STYLE rule 5). A restart from a cursor starts a new "line"
//! (`cursors.rs`): later dials resume from what it commits, not from the newest
//! cursor ever committed; after a Redis rollback `RewindTo` starts one from what Redis
//! holds. `UpdateFilters` with invalid filters is refused with the validation message and
//! changes nothing.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::watch;
use tracing::{info, warn};

use super::config::ReaderConfig;
use super::cursors::Cursors;
pub use super::cursors::StartCursor;
use super::failover::Failover;
use super::outbox::Outbox;
use super::read_loop::ReadLoop;
use super::shared::{Control, Counters, Shared};
use crate::backoff::Backoff;
use crate::messages::{
    BatchCommitted, Drain, GetReaderStatus, Pause, PushBatch, Quiesce, ReaderState, ReaderStatus,
    Refused, Restart, Resume, RewindTo, UpdateFilters,
};
use crate::model::Cursor;

pub struct JetstreamReader {
    cfg: Arc<ReaderConfig>,
    shared: Rc<Shared>,
    /// Batches on their way downstream, with their credits.
    outbox: Rc<Outbox>,
    control: watch::Sender<Control>,
    /// The operator paused reading (`Pause`, until `Resume`): a restart or a rollback's
    /// rewind dials anew but stays paused. (`Quiesce` and a standby's start pause too, but
    /// not for the operator.)
    held: bool,
}

impl JetstreamReader {
    pub fn new(cfg: ReaderConfig, downstream: Recipient<PushBatch>, start: StartCursor) -> Self {
        let outbox = Rc::new(Outbox::new(&cfg, downstream));
        let shared = Rc::new(Shared {
            cursors: Cell::new(Cursors::start(start, cfg.endpoints.len())),
            next_session: Cell::new(1),
            current_session: Cell::new(0),
            backoff: RefCell::new(Backoff::new(cfg.backoff_min, cfg.backoff_max)),
            counters: RefCell::new(Counters::default()),
            state: watch::Sender::new(ReaderState::Starting),
            failover: RefCell::new(Failover::new(cfg.endpoints.len(), cfg.failover_after)),
            filters: watch::Sender::new(Arc::new(cfg.filters())),
            skipped: Cell::new(None),
        });
        let (control, _) = watch::channel(Control::Run);
        JetstreamReader {
            cfg: Arc::new(cfg),
            shared,
            outbox,
            control,
            held: false,
        }
    }
}

impl Actor for JetstreamReader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let lp = ReadLoop::new(
            self.cfg.clone(),
            self.shared.clone(),
            self.outbox.clone(),
            self.control.subscribe(),
        );
        ctx.spawn(actix::fut::wrap_future(lp.run()));
    }
}

impl JetstreamReader {
    /// Asks the read loop to pause (closing the session cleanly); resolves once it reads
    /// nothing: paused, or finished (replay end, drain).
    fn stop_reading(&self) -> impl Future<Output = ()> + 'static {
        self.control.send_replace(Control::Pause);
        let mut state = self.shared.state.subscribe();
        async move {
            let _ = state
                .wait_for(|s| matches!(s, ReaderState::Paused | ReaderState::Finished))
                .await;
        }
    }
}

impl JetstreamReader {
    /// Starts paused (`[ha]` standby): nothing is dialed until `RewindTo` (or `Resume`).
    ///
    /// A standby that would start at the live tail takes its launch time (minus the
    /// failover rewind: another host's clock) as where it started: if it takes over a Redis
    /// that holds nothing (emptied meanwhile), it reads from there, not from the live edge
    /// at the takeover, which would skip what happened in between.
    pub fn paused(self) -> Self {
        self.control.send_replace(Control::Pause);
        let launched = Cursor::now()
            .rewound(self.cfg.effective_failover_rewind())
            .0;
        self.shared
            .update_cursors(|k| k.origin = k.origin.or(Some(launched)));
        self
    }
}

impl JetstreamReader {
    /// How a restarted actor starts: paused if the operator paused it.
    fn after_restart(&self) -> Control {
        if self.held {
            Control::Pause
        } else {
            Control::Run
        }
    }
}

impl actix::Supervised for JetstreamReader {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        info!(
            next_session = self.shared.next_session.get(),
            "reader restarting"
        );
        metrics::counter!("jetstream_ingestor_reader_restarts_total").increment(1);
    }
}

impl Handler<BatchCommitted> for JetstreamReader {
    type Result = ();

    fn handle(&mut self, msg: BatchCommitted, _ctx: &mut Self::Context) {
        if let Some(c) = msg.cursor {
            let newest = self
                .shared
                .update_cursors(|k| k.note_commit(msg.session, c));
            metrics::gauge!("jetstream_ingestor_committed_cursor_us").set(newest as f64);
        }
        self.shared.counters.borrow_mut().batches_committed += 1;
        metrics::histogram!("jetstream_ingestor_receive_to_commit_seconds")
            .record(msg.received_at.elapsed().as_secs_f64());
        drop(msg.credit);
    }
}

impl Handler<GetReaderStatus> for JetstreamReader {
    type Result = MessageResult<GetReaderStatus>;

    fn handle(&mut self, _: GetReaderStatus, _ctx: &mut Self::Context) -> Self::Result {
        let c = self.shared.counters.borrow();
        let state = *self.shared.state.borrow();
        let dialed = self.shared.failover.borrow().dialed();
        let cursors = self.shared.cursors();
        let stalled_secs = match (c.last_frame_at, c.last_advance_at) {
            (Some(frame), Some(advance))
                if state != ReaderState::Paused
                    && !self.cfg.stall_timeout.is_zero()
                    && frame > advance
                    && frame.elapsed() < self.cfg.idle_timeout
                    && advance.elapsed() >= self.cfg.stall_timeout =>
            {
                Some(advance.elapsed().as_secs())
            }
            _ => None,
        };
        metrics::gauge!("jetstream_ingestor_reader_stalled").set(if stalled_secs.is_some() {
            1.0
        } else {
            0.0
        });
        MessageResult(ReaderStatus {
            stalled_secs,
            line_cursor: cursors.line,
            replaying: cursors.line_replay
                && match (cursors.line, cursors.committed) {
                    (Some(line), Some(newest)) => line < newest,
                    (None, _) => true,
                    (Some(_), None) => false,
                },
            in_flight_bytes: self.outbox.in_flight_bytes(),
            peak_in_flight_bytes: self.outbox.peak_in_flight_bytes(),
            state: *self.shared.state.borrow(),
            endpoint: self.cfg.endpoints.get(dialed).cloned().unwrap_or_default(),
            session_id: self.shared.current_session.get(),
            committed_cursor: cursors.committed,
            consecutive_failures: c.consecutive_failures,
            last_error: c.last_error.clone(),
            events_received: c.events_received,
            dead_letters: c.dead_letters,
            batches_committed: c.batches_committed,
            sessions_started: c.sessions_started,
            backoff_ceiling_ms: u64::try_from(c.backoff_ceiling.as_millis()).unwrap_or(u64::MAX),
            endpoint_index: dialed,
            failovers: c.failovers,
            gaps: c.gaps,
            last_gap: c.last_gap.clone(),
            last_failover: c.last_failover.clone(),
        })
    }
}

impl Handler<Restart> for JetstreamReader {
    type Result = Result<u64, Refused>;

    /// Stops this actor; `actix::Supervisor` starts it again (same fields), which dials anew.
    fn handle(&mut self, msg: Restart, ctx: &mut Self::Context) -> Result<u64, Refused> {
        let next = self.shared.next_session.get();
        self.shared
            .update_cursors(|k| k.restart(msg.from_cursor, next));
        info!(from_cursor = ?msg.from_cursor, "restart requested");
        // The session closes cleanly first (close handshake), then the actor restarts.
        let paused = self.stop_reading();
        ctx.spawn(paused.into_actor(self).map(|(), act, ctx| {
            act.control.send_replace(act.after_restart());
            ctx.stop();
        }));
        Ok(self.shared.next_session.get())
    }
}

impl Handler<RewindTo> for JetstreamReader {
    type Result = ();

    /// After a Redis rollback (the reader is drained): forget every cursor committed since
    /// and dial from what Redis holds, as at start; from where this process started when
    /// Redis holds nothing.
    fn handle(&mut self, msg: RewindTo, ctx: &mut Self::Context) {
        let next = self.shared.next_session.get();
        let endpoints = self.cfg.endpoints.len();
        let replay = self
            .shared
            .update_cursors(|k| k.rewind_to(msg.stored_cursor, msg.replay_cursor, next, endpoints));
        warn!(stored_cursor = ?msg.stored_cursor, replay_cursor = ?replay, origin = ?self.shared.cursors().origin, "reader rewinds to what Redis holds after a rollback");
        self.control.send_replace(self.after_restart());
        ctx.stop();
    }
}

impl Handler<Pause> for JetstreamReader {
    type Result = Result<(), Refused>;
    fn handle(&mut self, _: Pause, _ctx: &mut Self::Context) -> Result<(), Refused> {
        info!("pause requested");
        self.held = true;
        self.control.send_replace(Control::Pause);
        Ok(())
    }
}

impl Handler<Resume> for JetstreamReader {
    type Result = Result<(), Refused>;
    fn handle(&mut self, _: Resume, _ctx: &mut Self::Context) -> Result<(), Refused> {
        info!("resume requested");
        self.held = false;
        self.control.send_replace(Control::Run);
        Ok(())
    }
}

impl Handler<UpdateFilters> for JetstreamReader {
    type Result = Result<(), String>;

    /// Validates, then hands the filters to the live session (which sends them as an
    /// `options_update` without reconnecting) and to every later dial.
    fn handle(&mut self, msg: UpdateFilters, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = msg.filters.validate() {
            metrics::counter!("jetstream_ingestor_filter_updates_total", "outcome" => "rejected")
                .increment(1);
            info!(error = %e, "filter update rejected");
            return Err(e.to_string());
        }
        info!(
            wanted_collections = msg.filters.wanted_collections.len(),
            wanted_dids = msg.filters.wanted_dids.len(),
            "filters updated"
        );
        metrics::counter!("jetstream_ingestor_filter_updates_total", "outcome" => "applied")
            .increment(1);
        self.shared.filters.send_replace(Arc::new(msg.filters));
        Ok(())
    }
}

impl Handler<Quiesce> for JetstreamReader {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Quiesce, _ctx: &mut Self::Context) -> Self::Result {
        let stopped = self.stop_reading();
        let drained = self.outbox.drained();
        Box::pin(async move {
            stopped.await;
            drained.await;
        })
    }
}

impl Handler<Drain> for JetstreamReader {
    type Result = ResponseFuture<()>;

    /// Stops reading, then answers once every pushed batch is committed.
    fn handle(&mut self, _: Drain, _ctx: &mut Self::Context) -> Self::Result {
        self.control.send_replace(Control::Drain);
        let mut state = self.shared.state.subscribe();
        let drained = self.outbox.drained();
        Box::pin(async move {
            let _ = state.wait_for(|s| *s == ReaderState::Finished).await;
            drained.await;
        })
    }
}
