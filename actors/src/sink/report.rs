//! What the writer tells: the reader (`BatchCommitted`), the supervisor (`RolledBack`,
//! `Fenced`), and the operator (its [`WriterStatus`] for the admin API, a log line and a
//! metric) for each outcome the core (`pipeline.rs`) reports: a commit, the first failure of
//! an incident, a failed recovery, a rollback of Redis, a step down. The writer calls it while
//! carrying out the core's actions.
//!
//! Failure: a peer that is gone is not waited for; a missing supervisor is logged.

use std::time::Instant;

use actix::Recipient;
use tracing::{error, info, warn};

use super::action::{CommitError, Done, Rollback};
use super::overlap::OverlapNotice;
use crate::messages::{BatchCommitted, Credit, Fenced, RolledBack, WriterStatus};

/// What a batch hands back to the reader once committed.
pub struct Ticket {
    pub session: u64,
    pub received_at: Instant,
    pub credit: Credit,
}

pub struct Report {
    /// `queued_batches` and `stored_cursor` are the core's, filled in when asked.
    pub status: WriterStatus,
    /// Logs the replay overlap once per reader session (the rest is only counted).
    overlap: OverlapNotice,
    committed_to: Recipient<BatchCommitted>,
    /// Told when Redis lost acknowledged commits (the supervisor resets the pipeline).
    pub rollback_to: Option<Recipient<RolledBack>>,
    /// Told when this writer was fenced off (`[ha]`).
    pub fenced_to: Option<Recipient<Fenced>>,
}

/// Sets `jetstream_ingestor_writer_queue_batches`.
pub fn queue_gauge(queued: usize) {
    metrics::gauge!("jetstream_ingestor_writer_queue_batches").set(queued as f64);
}

impl Report {
    pub fn new(wait_replicas: u32, committed_to: Recipient<BatchCommitted>) -> Report {
        Report {
            status: WriterStatus {
                queued_batches: 0,
                commits: 0,
                entries_written: 0,
                entries_skipped: 0,
                rollbacks: 0,
                consecutive_commit_failures: 0,
                last_error: None,
                stored_cursor: None,
                wait_replicas,
            },
            overlap: OverlapNotice::default(),
            committed_to,
            rollback_to: None,
            fenced_to: None,
        }
    }

    /// A batch pushed while halted: dropped (credit freed), read again after the reset or by
    /// the leader. `fence`: the lease's token, if any.
    pub fn dropped(&self, fence: Option<u64>) {
        let reason = if self.fenced_to.is_some() && fence.is_none() {
            "standby"
        } else {
            "redis_rollback"
        };
        metrics::counter!("jetstream_ingestor_batches_dropped_total", "reason" => reason)
            .increment(1);
    }

    /// Batch `done` committed: counted, and the reader told (with the batch's credit).
    pub fn committed(&mut self, done: Done<Ticket>) {
        let session = done.ticket.session;
        self.status.consecutive_commit_failures = 0;
        for (stream, n) in done.jobs {
            metrics::counter!("jetstream_ingestor_jobs_total", "stream" => stream).increment(n);
        }
        let (written, skipped) = (done.written, done.skipped);
        self.status.commits += 1;
        self.status.entries_written += written;
        self.status.entries_skipped += skipped;
        metrics::counter!("jetstream_ingestor_commits_total").increment(1);
        metrics::counter!("jetstream_ingestor_entries_written_total").increment(written);
        metrics::counter!("jetstream_ingestor_entries_skipped_total", "reason" => "already_committed").increment(skipped);
        metrics::histogram!("jetstream_ingestor_batch_entries").record(written as f64);
        queue_gauge(done.queued);
        if self.overlap.first_in_session(session, skipped) {
            info!(
                session,
                seq = done.seq,
                skipped,
                "entries already committed were skipped (replay overlap); further skips in this session are only counted in jetstream_ingestor_entries_skipped_total"
            );
        }
        // Bounded: every notification carries one of the reader's credits.
        self.committed_to.do_send(BatchCommitted {
            seq: done.seq,
            session,
            cursor: done.cursor,
            written: usize::try_from(written).unwrap_or(usize::MAX),
            skipped: usize::try_from(skipped).unwrap_or(usize::MAX),
            received_at: done.ticket.received_at,
            credit: done.ticket.credit,
        });
    }

    /// The first failure of an incident.
    pub fn failed(&mut self, seq: u64, e: &CommitError, queued: usize) {
        self.status.consecutive_commit_failures =
            self.status.consecutive_commit_failures.saturating_add(1);
        self.status.last_error = Some(e.to_string());
        metrics::counter!("jetstream_ingestor_commit_failures_total").increment(1);
        metrics::counter!("jetstream_ingestor_redis_errors_total", "kind" => error_kind(e))
            .increment(1);
        warn!(error = %e, seq, attempt = self.status.consecutive_commit_failures, queued, "batch commit failed; recovering (nothing is skipped)");
        // A missing ACL right (NOPERM, naming the command) or credential is not mended by
        // waiting: said plainly, in the log and in status; retried until it is granted.
        if let CommitError::Redis(r) = e
            && let Some(why) = crate::redis_target::refusal(r)
        {
            error!(%why, seq, "Redis refuses the commit; retrying until the right is granted (nothing is skipped, nothing is written)");
            self.status.last_error = Some(why);
        }
    }

    /// Recovery could not read the chain.
    pub fn recovery_failed(&mut self, e: &redis::RedisError) {
        self.status.consecutive_commit_failures =
            self.status.consecutive_commit_failures.saturating_add(1);
        self.status.last_error = Some(e.to_string());
        metrics::counter!("jetstream_ingestor_commit_failures_total").increment(1);
        warn!(error = %e, attempt = self.status.consecutive_commit_failures, "cannot read the commit chain to recover; retrying");
    }

    /// Redis holds less than it acknowledged: the chain holds neither our last token nor a
    /// queued one (a restart from an older snapshot, AOF `everysec` after a host crash, an
    /// asynchronous replica promoted), or the stored cursor is behind what we committed.
    /// Everything queued was dropped (its events will be read again); the supervisor restarts
    /// the reader from what Redis holds, with the bucket state reloaded.
    pub fn rolled_back(&mut self, r: Rollback) {
        metrics::counter!("jetstream_ingestor_redis_rollbacks_total").increment(1);
        warn!(
            chain = ?r.chain,
            our_last_commit = ?r.our_last_commit,
            stored_cursor = ?r.stored,
            our_newest_cursor = ?r.our_newest_cursor,
            dropped_batches = r.dropped,
            "Redis lost acknowledged commits (restarted from an older snapshot or AOF, or a replica without them was promoted; or another writer uses this key prefix): resuming from the cursor Redis holds, bucket state reloaded; the events after it are read again"
        );
        self.status.rollbacks += 1;
        self.status.last_error = Some(format!(
            "redis rolled back: chain {:?}, stored cursor {:?}, this process had committed up to {:?}",
            r.chain, r.stored, r.our_newest_cursor
        ));
        queue_gauge(0);
        match &self.rollback_to {
            Some(to) => to.do_send(RolledBack {
                stored_cursor: r.stored,
                replay_cursor: r.replay,
            }),
            None => error!("no supervisor to reset the pipeline after a Redis rollback"),
        }
    }

    /// `[ha]`: another instance took the lease (a commit found a newer fencing token): the
    /// queue was dropped (nothing of it landed: each refused commit undid itself); the
    /// supervisor stops the reader, and the new leader writes the batches.
    pub fn stepped_down(&mut self, token: u64, error: String, dropped: usize) {
        metrics::counter!("jetstream_ingestor_ha_fenced_total").increment(1);
        warn!(
            fencing_token = token,
            dropped_batches = dropped,
            error = %error,
            "another instance took the writer lease: this one stops writing and becomes a standby"
        );
        self.status.last_error = Some(error.clone());
        queue_gauge(0);
        match &self.fenced_to {
            Some(to) => to.do_send(Fenced { token, error }),
            None => error!("no supervisor to stop the reader after the writer was fenced off"),
        }
    }

    /// With Sentinel or Cluster: recovery found the master elsewhere.
    pub fn master_moved(from: Option<&redis::ConnectionAddr>, to: &redis::ConnectionAddr) {
        warn!(from = ?from, to = ?to, "the Redis master moved (Sentinel failover, or Cluster slot moved): writing to the new one");
        metrics::counter!("jetstream_ingestor_redis_master_changes_total").increment(1);
    }
}

/// A short, stable label for a commit failure (metric `redis_errors_total{kind}`).
fn error_kind(e: &CommitError) -> &'static str {
    let CommitError::Redis(e) = e else {
        return "reply";
    };
    if e.is_timeout() {
        return "timeout";
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        return "connection";
    }
    // Redis's own codes too: redis-rs shows known ones by their Rust names (`NoPerm`).
    let mut text = e.to_string();
    for (code, _) in crate::redis_target::server_errors(e) {
        text.push(' ');
        text.push_str(&code);
    }
    for (needle, kind) in [
        ("FENCED", "fenced"),
        ("CHAIN", "chain"),
        ("WRONGTYPE", "wrongtype"),
        ("OOM", "oom"),
        ("EXECABORT", "execabort"),
        ("LOADING", "loading"),
        ("MASTERDOWN", "masterdown"),
        ("READONLY", "readonly"),
        ("NOPERM", "noperm"),
        ("NOAUTH", "noauth"),
    ] {
        if text.contains(needle) {
            return kind;
        }
    }
    "other"
}

#[cfg(test)]
mod tests {
    use super::{CommitError, error_kind};

    #[test]
    fn commit_failures_get_a_stable_kind() {
        let server = |code: &str, detail: &str| {
            CommitError::Redis(redis::RedisError::from((
                redis::ErrorKind::Extension,
                "server",
                format!("{code} {detail}"),
            )))
        };
        assert_eq!(error_kind(&server("CHAIN", "predecessor x")), "chain");
        assert_eq!(error_kind(&server("OOM", "command not allowed")), "oom");
        assert_eq!(error_kind(&server("WRONGTYPE", "jsi:dead")), "wrongtype");
        assert_eq!(error_kind(&server("ERR", "something")), "other");
        assert_eq!(error_kind(&CommitError::Reply("x".into())), "reply");
        let io = CommitError::Redis(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert_eq!(error_kind(&io), "connection");
    }
}
