//! The lease, pure: what the keeper does with each answer from Redis, given the time; and
//! the three scripts that answer (acquire, renew, release), each one atomic in Redis.
//!
//! Keys: `<prefix>ha:lease` holds `"<owner> <token>"` with a TTL; `<prefix>ha:fence` holds
//! the newest token ever handed out. A token is `max(previous + 1, Redis's time in µs)`: it
//! grows at every acquisition, and still grows after Redis restarts from an older snapshot
//! (which may bring back an older counter), so a token handed out before a rollback is never
//! handed out again.
//!
//! A leader that cannot renew (Redis unreachable) gives the lease up on its side once it can
//! no longer be sure it holds it (`lease_ttl − renew_interval` after its last renewal): a
//! standby may take it right after. Whether or not it notices in time, its commits are
//! fenced.

use std::time::{Duration, Instant};

/// KEYS: 1 lease, 2 fence. ARGV: 1 owner, 2 TTL in ms. Returns `{1, token}` when taken,
/// `{0, holder}` when another holds it.
pub const ACQUIRE_SCRIPT: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder then return {0, holder} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local token = string.format('%d', math.max(last + 1, now))
redis.call('SET', KEYS[2], token)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return {1, token}
"#;

/// KEYS: 1 lease, 2 fence. ARGV: 1 `"<owner> <token>"`, 2 TTL in ms, 3 token. Returns 1 when
/// renewed (also when the lease had expired and nobody took it since: the fence still holds
/// our token), 0 when lost.
pub const RENEW_SCRIPT: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: 1 lease. ARGV: 1 `"<owner> <token>"`. Deletes the lease only if it is ours.
pub const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// The lease key's value for an owner and a token.
pub fn lease_value(owner: &str, token: u64) -> String {
    format!("{owner} {token}")
}

/// Where the keeper stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Standby {
        /// The lease's value as last read, when another holds it.
        holder: Option<String>,
    },
    Leader {
        token: u64,
        renewed_at: Instant,
    },
}

/// What Redis answered to the keeper's attempt of this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Acquire: taken with this token.
    Taken(u64),
    /// Acquire: another holds it (its value).
    Held(String),
    /// Renew: still ours.
    Renewed,
    /// Renew: not ours any more.
    NotOurs,
    /// No answer (connection, timeout, error): the text.
    Failed(String),
}

/// What the keeper must tell the supervisor after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Acquired { token: u64 },
    Lost { token: u64, reason: String },
}

/// The next role, and the change to report, after `answer` at `now`. `ttl` and `renew` are
/// the configured lease TTL and renewal interval.
pub fn next(
    role: &Role,
    answer: Answer,
    now: Instant,
    ttl: Duration,
    renew: Duration,
) -> (Role, Option<Change>) {
    match (role, answer) {
        (Role::Standby { .. }, Answer::Taken(token)) => (
            Role::Leader {
                token,
                renewed_at: now,
            },
            Some(Change::Acquired { token }),
        ),
        (Role::Standby { .. }, Answer::Held(holder)) => (
            Role::Standby {
                holder: Some(holder),
            },
            None,
        ),
        (Role::Standby { holder }, _) => (
            Role::Standby {
                holder: holder.clone(),
            },
            None,
        ),
        (Role::Leader { token, .. }, Answer::Renewed) => (
            Role::Leader {
                token: *token,
                renewed_at: now,
            },
            None,
        ),
        (Role::Leader { token, .. }, Answer::NotOurs) => (
            Role::Standby { holder: None },
            Some(Change::Lost {
                token: *token,
                reason: "the lease is held by another instance".into(),
            }),
        ),
        (Role::Leader { token, renewed_at }, Answer::Failed(error)) => {
            // Not sure any more that the lease will still be ours at the next tick.
            let limit = ttl.saturating_sub(renew);
            if now.saturating_duration_since(*renewed_at) >= limit {
                (
                    Role::Standby { holder: None },
                    Some(Change::Lost {
                        token: *token,
                        reason: format!(
                            "cannot renew the lease for {:?} (it may have expired): {error}",
                            now.saturating_duration_since(*renewed_at)
                        ),
                    }),
                )
            } else {
                (role.clone(), None)
            }
        }
        (Role::Leader { .. }, Answer::Taken(_) | Answer::Held(_)) => (role.clone(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);
    const RENEW: Duration = Duration::from_secs(1);

    #[test]
    fn a_standby_takes_the_lease_when_it_is_free_and_waits_while_it_is_held() {
        let t0 = Instant::now();
        let standby = Role::Standby { holder: None };
        let (role, change) = next(&standby, Answer::Held("b 7".into()), t0, TTL, RENEW);
        assert_eq!(
            role,
            Role::Standby {
                holder: Some("b 7".into())
            }
        );
        assert_eq!(change, None);
        let (role, change) = next(&role, Answer::Taken(9), t0, TTL, RENEW);
        assert_eq!(
            role,
            Role::Leader {
                token: 9,
                renewed_at: t0
            }
        );
        assert_eq!(change, Some(Change::Acquired { token: 9 }));
        let (role, change) = next(&standby, Answer::Failed("down".into()), t0, TTL, RENEW);
        assert_eq!((role, change), (standby.clone(), None));
    }

    #[test]
    fn a_leader_loses_the_lease_when_another_holds_it() {
        let t0 = Instant::now();
        let leader = Role::Leader {
            token: 3,
            renewed_at: t0,
        };
        let (role, change) = next(&leader, Answer::Renewed, t0 + RENEW, TTL, RENEW);
        assert_eq!(
            role,
            Role::Leader {
                token: 3,
                renewed_at: t0 + RENEW
            }
        );
        assert_eq!(change, None);
        let (role, change) = next(&leader, Answer::NotOurs, t0 + RENEW, TTL, RENEW);
        assert_eq!(role, Role::Standby { holder: None });
        assert!(matches!(change, Some(Change::Lost { token: 3, .. })));
    }

    #[test]
    fn a_leader_that_cannot_renew_gives_up_before_the_lease_can_expire() {
        let t0 = Instant::now();
        let leader = Role::Leader {
            token: 3,
            renewed_at: t0,
        };
        let failed = || Answer::Failed("connection refused".into());
        let (role, change) = next(&leader, failed(), t0 + Duration::from_secs(3), TTL, RENEW);
        assert_eq!((role, change), (leader.clone(), None), "3 s < 5 s − 1 s");
        let (role, change) = next(&leader, failed(), t0 + Duration::from_secs(4), TTL, RENEW);
        assert_eq!(role, Role::Standby { holder: None });
        match change {
            Some(Change::Lost { token: 3, reason }) => {
                assert!(reason.contains("connection refused"), "{reason}")
            }
            other => panic!("expected Lost, got {other:?}"),
        }
    }
}
