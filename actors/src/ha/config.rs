//! Typed settings of the writer lease (`[ha]` in the config file).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[ha]`: run several instances on one key prefix; one holds the lease and writes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// Off by default: a single instance writes without a lease.
    pub enabled: bool,
    /// This instance's name in the lease ("" = `<hostname>-<pid>-<random>`). Must differ
    /// between instances.
    pub owner: String,
    /// How long the lease lasts without a renewal: a standby takes over at most this long
    /// (plus one `renew_interval`) after the leader died without releasing it.
    #[serde(with = "crate::model::duration")]
    pub lease_ttl: Duration,
    /// How often the leader renews and standbys try to acquire. At most a third of the TTL.
    #[serde(with = "crate::model::duration")]
    pub renew_interval: Duration,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            enabled: false,
            owner: String::new(),
            lease_ttl: Duration::from_secs(5),
            renew_interval: Duration::from_millis(1_000),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HaConfigError {
    #[error("ha.lease_ttl must be at least 1s (got {0:?})")]
    TtlTooShort(Duration),
    #[error(
        "ha.renew_interval ({renew:?}) must be at least 50ms and at most a third of ha.lease_ttl ({ttl:?})"
    )]
    RenewInterval { renew: Duration, ttl: Duration },
    #[error("ha.owner must not contain spaces or control characters (got {0:?})")]
    Owner(String),
}

impl HaConfig {
    pub fn validate(&self) -> Result<(), HaConfigError> {
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(HaConfigError::TtlTooShort(self.lease_ttl));
        }
        if self.renew_interval < Duration::from_millis(50)
            || self.renew_interval.saturating_mul(3) > self.lease_ttl
        {
            return Err(HaConfigError::RenewInterval {
                renew: self.renew_interval,
                ttl: self.lease_ttl,
            });
        }
        if self
            .owner
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(HaConfigError::Owner(self.owner.clone()));
        }
        Ok(())
    }

    /// The owner id: as configured, or made from the host name, the pid and a random part
    /// (a restarted process is another owner: it waits for the old lease to expire).
    pub fn owner_id(&self) -> String {
        if !self.owner.is_empty() {
            return self.owner.clone();
        }
        format!(
            "{}-{}-{:04x}",
            crate::model::host::host_name(),
            std::process::id(),
            rand::RngExt::random::<u16>(&mut rand::rng())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_the_renewal_must_fit_three_times_in_the_ttl() {
        assert_eq!(HaConfig::default().validate(), Ok(()));
        let cfg = HaConfig {
            renew_interval: Duration::from_secs(2),
            ..HaConfig::default()
        };
        assert!(matches!(
            cfg.validate(),
            Err(HaConfigError::RenewInterval { .. })
        ));
        let cfg = HaConfig {
            owner: "a b".into(),
            ..HaConfig::default()
        };
        assert_eq!(cfg.validate(), Err(HaConfigError::Owner("a b".into())));
    }

    #[test]
    fn generated_owner_ids_differ_and_have_no_spaces() {
        let cfg = HaConfig::default();
        let (a, b) = (cfg.owner_id(), cfg.owner_id());
        assert!(!a.contains(' ') && !a.is_empty());
        assert_ne!(a, b, "random part");
    }
}
