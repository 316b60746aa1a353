//! The writer's pure core: the queue of batches, where each one is (probe, commit) and the
//! recovery from the commit chain, as a state machine that takes replies and returns
//! [`Action`]s. No actix and no I/O: `writer.rs` sends what the actions say and feeds the
//! replies back; `pipeline_tests.rs` replays reply sequences through it.
//!
//! Per batch: a read-only probe (which entries are already committed), then the
//! `MULTI … EXEC` commit. Up to `pipeline_depth` batches are in flight on the one connection;
//! Redis runs a connection's commands in order, so commits land in order. Each commit checks,
//! inside its own transaction, that the chain key holds its predecessor's token, and undoes
//! itself otherwise: a failed commit is never overtaken. A probe that ran before an in-flight
//! predecessor committed misses that predecessor's identities; they are added from memory
//! (`unseen_identities`) before committing.
//!
//! Failure: after a failed probe or commit nothing new is sent; once every reply is in, the
//! chain key is read ([`Action::Recover`]) to learn which queued batches did land, those are
//! popped and the rest retried from fresh probes ([`Action::RetryLater`]). A chain holding
//! neither our last token nor a queued one, or a stored cursor behind ours, is a rollback of
//! Redis ([`Action::RolledBack`]); a commit refused for a newer fencing token is a step down
//! ([`Action::StepDown`]). Either way everything queued is dropped and the core stays halted
//! until [`Pipeline::resume`].

use std::collections::{HashSet, VecDeque};
use std::rc::Rc;

use redis::Value;

use super::action::{Action, CommitError, Done, Held, Rollback, ToSend};
use super::commit::Encoded;

/// Identities of commits a probe could not see. foldhash, not SipHash: this set is built for
/// every commit and hashing was ~2% of the writer's samples; it is seeded per process, and a
/// batch holds at most `batch_max_events` identities, so flooding it gains nothing.
type IdentitySet<'a> = HashSet<&'a str, foldhash::fast::RandomState>;

/// Where a queued batch is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Nothing sent (or reset by a failure).
    Queued,
    /// The probe is in flight; it was sent after `commits_before` commits.
    Probing { commits_before: u64 },
    /// The probe answered: which identities were committed.
    Probed {
        commits_before: u64,
        present: Vec<bool>,
    },
    /// The commit is in flight (the `commit_no`-th commit sent), writing the identities not
    /// marked in `skipped`; `counts` is `(written, skipped)` once it lands.
    Committing {
        commit_no: u64,
        skipped: Vec<bool>,
        counts: (u64, u64),
    },
}

/// One batch waiting to commit; `ticket` is what the writer hands back with it.
struct Item<T> {
    seq: u64,
    cursor: Option<u64>,
    /// This batch's chain token (`<writer epoch>:<seq>`).
    token: Rc<str>,
    encoded: Rc<Encoded>,
    stage: Stage,
    /// The reply, once in: `(written, skipped)`.
    done: Option<(u64, u64)>,
    ticket: T,
}

/// A committed batch whose identities later probes may not have seen yet.
struct Recent {
    commit_no: u64,
    encoded: Rc<Encoded>,
    skipped: Vec<bool>,
}

/// How many queued batches (from the front) landed, given the chain key's value.
pub fn landed_prefix(chain: Option<&str>, queued_tokens: &[&str]) -> usize {
    match chain {
        Some(c) => queued_tokens
            .iter()
            .position(|t| *t == c)
            .map_or(0, |i| i + 1),
        None => 0,
    }
}

pub struct Pipeline<T> {
    depth: usize,
    /// Random per writer incarnation, so tokens of two runs never collide.
    epoch: u64,
    /// The writer has a connection: nothing is sent before.
    connected: bool,
    /// Uncommitted batches in order.
    queue: VecDeque<Item<T>>,
    /// Recently committed batches (as many as can be in flight).
    recent: VecDeque<Recent>,
    /// Commits sent so far (numbers them).
    commits_sent: u64,
    /// Probes and commits whose replies are outstanding.
    in_flight: usize,
    /// A probe or commit failed: send nothing until recovery has run.
    failed: bool,
    /// Recovering or waiting out the backoff before resending.
    waiting: bool,
    /// Redis rolled back, or this instance is a standby (`[ha]`): the writer drops every
    /// batch until [`Pipeline::resume`].
    halted: bool,
    /// `[ha]`: the fencing token of the lease this instance holds; every commit checks it.
    fence: Option<u64>,
    /// A commit was refused for a newer fencing token (the error): step down once every
    /// reply is in.
    fenced: Option<String>,
    /// Token of the newest batch known to be committed (`None` = unchecked).
    last_token: Option<Rc<str>>,
    /// Token of the newest batch pushed (the predecessor of the next one).
    last_pushed: Option<Rc<str>>,
    /// The newest cursor we know stored: one below it later is a rollback.
    stored_cursor: Option<u64>,
}

impl<T> Pipeline<T> {
    pub fn new(depth: usize, epoch: u64) -> Self {
        Pipeline {
            depth,
            epoch,
            connected: false,
            queue: VecDeque::new(),
            recent: VecDeque::new(),
            commits_sent: 0,
            in_flight: 0,
            failed: false,
            waiting: false,
            halted: false,
            fence: None,
            fenced: None,
            last_token: None,
            last_pushed: None,
            stored_cursor: None,
        }
    }

    /// What Redis held when the pipeline started: the first commit checks for that chain
    /// token, and a stored cursor below `cursor` later is a rollback.
    pub fn expect(&mut self, chain: Option<&str>, cursor: Option<u64>) {
        self.last_token = chain.map(Rc::from);
        self.stored_cursor = cursor;
    }

    /// Starts (or stays) halted; see [`Pipeline::stand_by`] to drop what is queued.
    pub fn halt(&mut self) {
        self.halted = true;
    }

    pub fn halted(&self) -> bool {
        self.halted
    }

    pub fn fence(&self) -> Option<u64> {
        self.fence
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn stored_cursor(&self) -> Option<u64> {
        self.stored_cursor
    }

    /// The chain token of batch `seq`.
    pub fn token(&self, seq: u64) -> Rc<str> {
        Rc::from(format!("{:x}:{}", self.epoch, seq))
    }

    /// The predecessor the next batch is encoded for: the batch pushed before it.
    pub fn expects(&self) -> &str {
        self.last_pushed
            .as_deref()
            .or(self.last_token.as_deref())
            .unwrap_or("")
    }

    /// The connection is up: send what can go.
    pub fn connected(&mut self) -> Vec<Action<T>> {
        self.connected = true;
        self.kick()
    }

    /// Queues a batch encoded with [`Pipeline::token`] and [`Pipeline::expects`].
    pub fn push(
        &mut self,
        seq: u64,
        cursor: Option<u64>,
        token: Rc<str>,
        encoded: Encoded,
        ticket: T,
    ) -> Vec<Action<T>> {
        self.last_pushed = Some(token.clone());
        self.queue.push_back(Item {
            seq,
            cursor,
            token,
            encoded: Rc::new(encoded),
            stage: Stage::Queued,
            done: None,
            ticket,
        });
        self.kick()
    }

    /// Batch `seq`'s probe answered.
    pub fn on_probe(&mut self, seq: u64, reply: Result<Vec<Value>, CommitError>) -> Vec<Action<T>> {
        self.in_flight -= 1;
        let mut out = Vec::new();
        if let Err(e) = self.probed(seq, reply) {
            self.on_failure(seq, e, &mut out);
        }
        self.after_reply(&mut out);
        out
    }

    /// Batch `seq`'s commit answered (`Ok`: the transaction ran).
    pub fn on_commit(&mut self, seq: u64, reply: Result<(), CommitError>) -> Vec<Action<T>> {
        self.in_flight -= 1;
        let mut out = Vec::new();
        match reply {
            Ok(()) => {
                if let Some(i) = self.position(seq)
                    && let Stage::Committing { counts, .. } = self.queue[i].stage
                {
                    self.queue[i].done = Some(counts);
                }
                self.pop_done(&mut out);
            }
            Err(e) => self.on_failure(seq, e, &mut out),
        }
        self.after_reply(&mut out);
        out
    }

    /// Recovery read `held` (`None`: it could not read it; retried after the backoff).
    pub fn recovered(&mut self, held: Option<Held>) -> Vec<Action<T>> {
        let mut out = Vec::new();
        if self.halted {
            // Stood by (or reset) while recovery ran: nothing of it applies any more.
            self.waiting = false;
            self.failed = false;
            return out;
        }
        if let Some(Held {
            chain,
            cursor,
            replay,
        }) = held
        {
            let tokens: Vec<&str> = self.queue.iter().map(|p| &*p.token).collect();
            let landed = landed_prefix(chain.as_deref(), &tokens);
            let known = chain.as_deref() == self.last_token.as_deref();
            let behind = matches!((cursor, self.stored_cursor), (s, Some(ours)) if s.is_none_or(|s| s < ours));
            let lost = landed == 0 && (!known || behind);
            if self.last_token.is_some() && lost {
                out.push(Action::RolledBack(self.rolled_back(chain, cursor, replay)));
                self.waiting = false;
                return out;
            }
            for p in self.queue.iter_mut().take(landed) {
                // Landed before the connection broke; counts unknown: all written.
                let entries = p.encoded.identities() as u64;
                p.done = p.done.or(Some((entries, p.encoded.repeats as u64)));
            }
            self.pop_done(&mut out);
            self.last_token = chain.map(Rc::from);
            for p in &mut self.queue {
                p.done = None;
                p.stage = Stage::Queued;
            }
            self.failed = false;
        }
        out.push(Action::RetryLater);
        out
    }

    /// The backoff after recovery is over: recover again if it failed, else resend.
    pub fn retry_due(&mut self) -> Vec<Action<T>> {
        self.waiting = false;
        let mut out = Vec::new();
        if self.failed {
            self.recover(&mut out);
        } else {
            self.kick_into(&mut out);
        }
        out
    }

    /// After a rollback or a lease acquisition, with every batch read before dropped: the
    /// chain as read now (`None`: unreadable, the known token stays), the fence to commit
    /// under and the stored cursor.
    pub fn resume(
        &mut self,
        chain: Option<Option<String>>,
        fence: Option<u64>,
        stored_cursor: Option<u64>,
    ) -> Vec<Action<T>> {
        if let Some(chain) = chain {
            self.last_token = chain.map(Rc::from);
        }
        self.queue.clear();
        self.recent.clear();
        self.last_pushed = None;
        self.halted = false;
        self.failed = false;
        self.fenced = None;
        self.fence = fence;
        self.stored_cursor = stored_cursor;
        self.kick()
    }

    /// Writes nothing until [`Pipeline::resume`]: queue dropped, fence forgotten.
    pub fn stand_by(&mut self) {
        self.halted = true;
        self.fence = None;
        self.failed = false;
        self.queue.clear();
        self.recent.clear();
        self.last_pushed = None;
    }

    fn position(&self, seq: u64) -> Option<usize> {
        self.queue.iter().position(|p| p.seq == seq)
    }

    /// The token the chain must hold before batch `i` of the queue commits.
    fn expected(&self, i: usize) -> Option<Rc<str>> {
        if i == 0 {
            self.last_token.clone()
        } else {
            Some(self.queue[i - 1].token.clone())
        }
    }

    fn kick(&mut self) -> Vec<Action<T>> {
        let mut out = Vec::new();
        self.kick_into(&mut out);
        out
    }

    /// Sends what can go: probes for up to `depth` batches, then commits in order for every
    /// probed batch whose predecessors' commits are out.
    fn kick_into(&mut self, out: &mut Vec<Action<T>>) {
        if !self.connected || self.failed || self.waiting {
            return;
        }
        let mut active = self
            .queue
            .iter()
            .filter(|p| p.stage != Stage::Queued)
            .count();
        for i in 0..self.queue.len() {
            if active >= self.depth {
                break;
            }
            if self.queue[i].stage != Stage::Queued {
                continue;
            }
            active += 1;
            self.send_probe(i, out);
        }
        for i in 0..self.queue.len() {
            match &self.queue[i].stage {
                Stage::Committing { .. } => continue,
                Stage::Probed { .. } => self.send_commit(i, out),
                _ => break,
            }
        }
    }

    fn send_probe(&mut self, i: usize, out: &mut Vec<Action<T>>) {
        let commits_before = self.commits_sent;
        let item = &mut self.queue[i];
        if item.encoded.probe.is_none() {
            item.stage = Stage::Probed {
                commits_before,
                present: Vec::new(),
            };
            return;
        }
        item.stage = Stage::Probing { commits_before };
        self.in_flight += 1;
        out.push(Action::Probe {
            seq: item.seq,
            encoded: item.encoded.clone(),
        });
    }

    fn probed(
        &mut self,
        seq: u64,
        reply: Result<Vec<Value>, CommitError>,
    ) -> Result<(), CommitError> {
        let reply = reply?;
        let Some(i) = self.position(seq) else {
            return Ok(());
        };
        let Stage::Probing { commits_before } = self.queue[i].stage else {
            return Ok(());
        };
        let present = self.queue[i]
            .encoded
            .parse_probe(&reply)
            .map_err(CommitError::Reply)?;
        self.queue[i].stage = Stage::Probed {
            commits_before,
            present,
        };
        Ok(())
    }

    /// Identities written by commits the probe of a batch could not see (sent after it).
    fn unseen_identities(&self, commits_before: u64) -> IdentitySet<'_> {
        fn add<'a>(ids: &mut IdentitySet<'a>, enc: &'a Encoded, skipped: &[bool]) {
            for i in 0..enc.identities() {
                if !skipped.get(i).copied().unwrap_or(false) {
                    ids.insert(enc.identity(i));
                }
            }
        }
        let mut ids = IdentitySet::default();
        for r in &self.recent {
            if r.commit_no >= commits_before {
                add(&mut ids, &r.encoded, &r.skipped);
            }
        }
        for p in &self.queue {
            if let Stage::Committing {
                commit_no, skipped, ..
            } = &p.stage
                && *commit_no >= commits_before
            {
                add(&mut ids, &p.encoded, skipped);
            }
        }
        ids
    }

    fn send_commit(&mut self, i: usize, out: &mut Vec<Action<T>>) {
        let Stage::Probed {
            commits_before,
            present,
        } = &self.queue[i].stage
        else {
            return;
        };
        let enc = self.queue[i].encoded.clone();
        let mut skipped = present.clone();
        skipped.resize(enc.identities(), false);
        let unseen = self.unseen_identities(*commits_before);
        if !unseen.is_empty() {
            for (k, s) in skipped.iter_mut().enumerate() {
                *s = *s || unseen.contains(enc.identity(k));
            }
        }
        let expects = self.expected(i);
        let expects = expects.as_deref().unwrap_or("");
        let duplicates = skipped.iter().filter(|s| **s).count();
        let pipe = if duplicates == 0 && expects == enc.expects {
            ToSend::AsEncoded(enc.clone())
        } else {
            ToSend::Rebuilt(enc.rebuilt(&skipped, expects))
        };
        let counts = (
            (enc.identities() - duplicates) as u64,
            (enc.repeats + duplicates) as u64,
        );
        let commit_no = self.commits_sent;
        self.commits_sent += 1;
        self.queue[i].stage = Stage::Committing {
            commit_no,
            skipped,
            counts,
        };
        self.in_flight += 1;
        out.push(Action::Commit {
            seq: self.queue[i].seq,
            pipe,
        });
    }

    /// Pops every committed batch at the front.
    fn pop_done(&mut self, out: &mut Vec<Action<T>>) {
        while let Some((written, skipped)) = self.queue.front().and_then(|p| p.done) {
            let Some(done) = self.queue.pop_front() else {
                break;
            };
            self.last_token = Some(done.token.clone());
            let mut jobs = Vec::new();
            if let Stage::Committing {
                commit_no, skipped, ..
            } = done.stage
            {
                jobs = done
                    .encoded
                    .added_per_stream(&skipped)
                    .into_iter()
                    .map(|(stream, n)| (stream.to_owned(), n))
                    .collect();
                self.recent.push_back(Recent {
                    commit_no,
                    encoded: done.encoded.clone(),
                    skipped,
                });
                while self.recent.len() > self.depth {
                    self.recent.pop_front();
                }
            }
            if let Some(c) = done.cursor {
                self.stored_cursor = Some(self.stored_cursor.map_or(c, |o| o.max(c)));
            }
            out.push(Action::Committed(Done {
                seq: done.seq,
                cursor: done.cursor,
                written,
                skipped,
                ticket: done.ticket,
                jobs,
                queued: self.queue.len(),
            }));
        }
    }

    fn on_failure(&mut self, seq: u64, error: CommitError, out: &mut Vec<Action<T>>) {
        if self.halted {
            return;
        }
        if let CommitError::Redis(re) = &error
            && re.to_string().contains("FENCED")
        {
            self.fenced.get_or_insert_with(|| re.to_string());
        }
        // One failure per incident: the commits behind a failed one undo themselves (chain
        // check), which is the same incident.
        if !self.failed {
            out.push(Action::Failed {
                seq,
                error,
                queued: self.queue.len(),
            });
        }
        self.failed = true;
    }

    /// After any reply: recover once a failure's replies are all in (step down if it was a
    /// fencing refusal), else send what can go. A standby only lets the replies drain.
    fn after_reply(&mut self, out: &mut Vec<Action<T>>) {
        if self.halted {
            if self.in_flight == 0 {
                self.failed = false;
                self.fenced = None;
            }
            return;
        }
        if self.failed && self.in_flight == 0 {
            match self.fenced.take() {
                Some(error) => {
                    let token = self.fence.unwrap_or(0);
                    let dropped = self.queue.len();
                    self.stand_by();
                    out.push(Action::StepDown {
                        token,
                        error,
                        dropped,
                    });
                }
                None => self.recover(out),
            }
        } else {
            self.kick_into(out);
        }
    }

    fn recover(&mut self, out: &mut Vec<Action<T>>) {
        if !self.connected {
            return;
        }
        self.waiting = true;
        out.push(Action::Recover);
    }

    /// Everything queued is dropped (its events will be read again) and the core halts.
    fn rolled_back(
        &mut self,
        chain: Option<String>,
        stored: Option<u64>,
        replay: Option<u64>,
    ) -> Rollback {
        let rollback = Rollback {
            chain: chain.clone(),
            stored,
            replay,
            our_last_commit: self.last_token.clone(),
            our_newest_cursor: self.stored_cursor,
            dropped: self.queue.len(),
        };
        self.halted = true;
        self.queue.clear();
        self.recent.clear();
        self.last_token = chain.map(Rc::from);
        self.last_pushed = None;
        self.stored_cursor = stored;
        self.failed = false;
        rollback
    }
}
