//! `LeaseKeeper`: the actor shell over `lease.rs`. Every `renew_interval` it runs one script
//! (acquire as a standby, renew as the leader), feeds the answer to `lease::next` and tells
//! the supervisor what changed (`Leadership`). `StepDown` (the writer was fenced off) and
//! `ReleaseLease` (shutdown) make it a standby at once; answers of ticks sent before either
//! are ignored (`generation`).
//!
//! Failure: Redis errors are answers like others (`Answer::Failed`): a standby keeps trying,
//! a leader gives up once it can no longer be sure to hold the lease.

use std::time::Instant;

use actix::prelude::*;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{info, warn};

use super::config::HaConfig;
use super::lease::{
    ACQUIRE_SCRIPT, Answer, Change, RELEASE_SCRIPT, RENEW_SCRIPT, Role, lease_value, next,
};
use crate::messages::{GetHaStatus, HaRole, HaStatus, Leadership, ReleaseLease, StepDown};

/// Where Redis is, for the keeper's own connection.
#[derive(Debug, Clone)]
pub struct LeaseTarget {
    /// With Sentinel, asked again whenever the keeper has no connection.
    pub redis: crate::redis_target::RedisTarget,
    pub key_prefix: String,
    pub connect_timeout: std::time::Duration,
    pub response_timeout: std::time::Duration,
}

pub struct LeaseKeeper {
    cfg: HaConfig,
    owner: String,
    lease_key: String,
    fence_key: String,
    target: LeaseTarget,
    conn: Option<ConnectionManager>,
    role: Role,
    to: Recipient<Leadership>,
    /// A tick's script is in flight.
    busy: bool,
    /// Raised by `StepDown` and `ReleaseLease`: answers of older ticks are stale.
    generation: u64,
    /// Released for shutdown: never acquire again.
    released: bool,
    acquisitions: u64,
    handovers: u64,
}

impl LeaseKeeper {
    pub fn new(cfg: HaConfig, target: LeaseTarget, to: Recipient<Leadership>) -> Self {
        let owner = cfg.owner_id();
        LeaseKeeper {
            lease_key: format!("{}ha:lease", target.key_prefix),
            fence_key: format!("{}ha:fence", target.key_prefix),
            owner,
            cfg,
            target,
            conn: None,
            role: Role::Standby { holder: None },
            to,
            busy: false,
            generation: 0,
            released: false,
            acquisitions: 0,
            handovers: 0,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.released {
            return;
        }
        self.busy = true;
        let generation = self.generation;
        let conn = self.conn.clone();
        let target = self.target.clone();
        let (lease, fence) = (self.lease_key.clone(), self.fence_key.clone());
        let owner = self.owner.clone();
        let ttl_ms = u64::try_from(self.cfg.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        // A renewal counts from when it was sent, not from when its answer came.
        let sent = Instant::now();
        let leader_token = match self.role {
            Role::Leader { token, .. } => Some(token),
            Role::Standby { .. } => None,
        };
        let attempt = async move {
            let mut conn = match conn {
                Some(c) => c,
                None => {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(target.connect_timeout))
                        .set_response_timeout(Some(target.response_timeout))
                        .set_number_of_retries(1);
                    let client = match target.redis.resolve(target.connect_timeout).await {
                        Ok(c) => c,
                        Err(e) => return (None, Answer::Failed(e.to_string())),
                    };
                    match ConnectionManager::new_with_config(client, config).await {
                        Ok(c) => c,
                        Err(e) => return (None, Answer::Failed(e.to_string())),
                    }
                }
            };
            let answer = match leader_token {
                None => {
                    let reply: redis::RedisResult<(i64, String)> =
                        redis::Script::new(ACQUIRE_SCRIPT)
                            .key(&lease)
                            .key(&fence)
                            .arg(&owner)
                            .arg(ttl_ms)
                            .invoke_async(&mut conn)
                            .await;
                    match reply {
                        Ok((1, token)) => match token.parse::<u64>() {
                            Ok(t) => Answer::Taken(t),
                            Err(_) => Answer::Failed(format!("{fence} handed out {token:?}")),
                        },
                        Ok((_, holder)) => Answer::Held(holder),
                        Err(e) => Answer::Failed(e.to_string()),
                    }
                }
                Some(token) => {
                    let reply: redis::RedisResult<i64> = redis::Script::new(RENEW_SCRIPT)
                        .key(&lease)
                        .key(&fence)
                        .arg(lease_value(&owner, token))
                        .arg(ttl_ms)
                        .arg(token)
                        .invoke_async(&mut conn)
                        .await;
                    match reply {
                        Ok(1) => Answer::Renewed,
                        Ok(_) => Answer::NotOurs,
                        Err(e) => Answer::Failed(e.to_string()),
                    }
                }
            };
            (Some(conn), answer)
        };
        ctx.spawn(attempt.into_actor(self).map(move |(conn, answer), act, _ctx| {
            act.busy = false;
            // A failed attempt drops the connection: the next one asks anew where Redis is
            // (with Sentinel, the master may have moved).
            act.conn = if matches!(answer, Answer::Failed(_)) {
                None
            } else {
                conn
            };
            if generation != act.generation || act.released {
                return;
            }
            if let Answer::Failed(e) = &answer {
                metrics::counter!("jetstream_ingestor_ha_lease_errors_total").increment(1);
                warn!(error = %e, owner = %act.owner, "lease: no answer from redis");
            }
            let (role, change) = next(
                &act.role,
                answer,
                sent,
                act.cfg.lease_ttl,
                act.cfg.renew_interval,
            );
            act.role = role;
            match change {
                Some(Change::Acquired { token }) => {
                    act.acquisitions += 1;
                    metrics::counter!("jetstream_ingestor_ha_acquisitions_total").increment(1);
                    metrics::gauge!("jetstream_ingestor_ha_leader").set(1.0);
                    metrics::gauge!("jetstream_ingestor_ha_fencing_token").set(token as f64);
                    info!(owner = %act.owner, fencing_token = token, "took the writer lease: this instance is the leader");
                    act.to.do_send(Leadership::Acquired { token });
                }
                Some(Change::Lost { token, reason }) => {
                    act.lost();
                    warn!(owner = %act.owner, fencing_token = token, reason = %reason, "lost the writer lease: this instance stands by");
                    act.to.do_send(Leadership::Lost { token, reason });
                }
                None => {}
            }
        }));
    }

    fn lost(&mut self) {
        self.handovers += 1;
        metrics::counter!("jetstream_ingestor_ha_handovers_total").increment(1);
        metrics::gauge!("jetstream_ingestor_ha_leader").set(0.0);
    }
}

impl Actor for LeaseKeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::gauge!("jetstream_ingestor_ha_leader").set(0.0);
        info!(owner = %self.owner, ttl_ms = self.cfg.lease_ttl.as_millis() as u64, "standing by for the writer lease");
        self.tick(ctx);
        ctx.run_interval(self.cfg.renew_interval, |act, ctx| act.tick(ctx));
    }
}

impl Handler<StepDown> for LeaseKeeper {
    type Result = ();

    fn handle(&mut self, msg: StepDown, _ctx: &mut Self::Context) {
        let Role::Leader { token, .. } = self.role else {
            return;
        };
        if token != msg.token {
            return;
        }
        self.generation += 1;
        self.lost();
        self.role = Role::Standby { holder: None };
    }
}

impl Handler<ReleaseLease> for LeaseKeeper {
    type Result = ResponseActFuture<Self, bool>;

    /// Deletes the lease if it is ours (a standby takes over at its next tick), and never
    /// takes it again. Answers whether it was released.
    fn handle(&mut self, _: ReleaseLease, _ctx: &mut Self::Context) -> Self::Result {
        self.generation += 1;
        self.released = true;
        let token = match self.role {
            Role::Leader { token, .. } => token,
            Role::Standby { .. } => return Box::pin(actix::fut::ready(false)),
        };
        self.lost();
        self.role = Role::Standby { holder: None };
        let conn = self.conn.clone();
        let key = self.lease_key.clone();
        let value = lease_value(&self.owner, token);
        let release = async move {
            let mut conn = conn?;
            redis::Script::new(RELEASE_SCRIPT)
                .key(&key)
                .arg(&value)
                .invoke_async::<i64>(&mut conn)
                .await
                .ok()
        };
        Box::pin(release.into_actor(self).map(move |done, act, _| {
            let released = done == Some(1);
            info!(owner = %act.owner, fencing_token = token, released, "writer lease released for shutdown");
            released
        }))
    }
}

impl Handler<GetHaStatus> for LeaseKeeper {
    type Result = MessageResult<GetHaStatus>;

    fn handle(&mut self, _: GetHaStatus, _ctx: &mut Self::Context) -> Self::Result {
        let (role, token, holder) = match &self.role {
            Role::Leader { token, .. } => (HaRole::Leader, Some(*token), None),
            Role::Standby { holder } => (HaRole::Standby, None, holder.clone()),
        };
        MessageResult(HaStatus {
            role,
            owner: self.owner.clone(),
            token,
            holder,
            acquisitions: self.acquisitions,
            handovers: self.handovers,
        })
    }
}
