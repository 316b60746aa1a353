//! The Redis keys the ingestor owns under `redis.key_prefix`, and the start-up check that a
//! configuration does not point jobs or consumer groups at one of them. A route to
//! `commit:chain` or a consumer group on `cursor` would otherwise pass and then wedge the
//! writer (its commit finds a key of the wrong type and undoes itself, forever).
//!
//! Who uses what: the writer (`actors::sink::commit::Keys`: `cursor`, `cursor:replay`,
//! `dedupe`, `commit:chain`), the job streams (`actors::model::StreamKind`: `records`,
//! `identity`, `dead`, `buckets`; `proven`, written by the `prove` workers), the bucket
//! store (`actors::buckets::criteria`:
//! `bucket:<id>:state`, `…:members`, `…:meta`; `actors::buckets::applied::KEY`:
//! `buckets:applied`), the heartbeat (`heartbeat`) and the control stream
//! (`crate::control::ControlKeys`: `control`, `control:acks`, `control:last`) and the writer
//! lease (`actors::ha`: `ha:lease`, `ha:fence`). Each family
//! (`bucket:`, `buckets:`, `commit:`, `control:`, `cursor:`, `ha:`) is reserved whole, so a key
//! added there later is covered.
//!
//! Rules: a route (`verifier.routes[i].stream`) may name `records` (the default stream of
//! record jobs) or a name the ingestor does not use; a consumer group (`consumers[i].stream`)
//! may sit on a job stream (`records`, `identity`, `dead`, `buckets`, a route's stream) or a
//! name the ingestor does not use, never on an internal key (retention would also trim it).
//! Pure; `Settings::validate` calls [`check`], so `run` and `check-config` refuse alike.

use super::{Settings, SettingsError};

/// How the ingestor uses a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A stream of jobs for consumers: groups may read it.
    JobStream,
    /// The ingestor's own bookkeeping: nothing may be configured on it.
    Internal,
}

/// One key (or family of keys) the ingestor owns, named after the prefix.
struct Owned {
    name: &'static str,
    /// A family: every name starting with `name`.
    family: bool,
    what: &'static str,
    role: Role,
}

const fn key(name: &'static str, what: &'static str, role: Role) -> Owned {
    Owned {
        name,
        family: false,
        what,
        role,
    }
}

const fn family(name: &'static str, what: &'static str) -> Owned {
    Owned {
        name,
        family: true,
        what,
        role: Role::Internal,
    }
}

/// Every key the ingestor owns under its prefix.
const OWNED: [Owned; 20] = [
    key(
        "records",
        "the stream of record jobs (a stream)",
        Role::JobStream,
    ),
    key(
        "identity",
        "the stream of identity and account jobs (a stream)",
        Role::JobStream,
    ),
    key("dead", "the dead-letter stream (a stream)", Role::JobStream),
    key(
        "proven",
        "the stream of `prove` verdicts (a stream)",
        Role::JobStream,
    ),
    key(
        "buckets",
        "the stream of bucket transitions (a stream)",
        Role::JobStream,
    ),
    key("cursor", "the committed cursor (a string)", Role::Internal),
    key(
        "cursor:replay",
        "the progress of a replay behind the cursor (a string)",
        Role::Internal,
    ),
    key("dedupe", "the dedupe index (a sorted set)", Role::Internal),
    key(
        "commit:chain",
        "the token of the last committed batch (a string)",
        Role::Internal,
    ),
    key(
        "buckets:applied",
        "the mark of the events the bucket state contains (a hash)",
        Role::Internal,
    ),
    key("heartbeat", "the heartbeat (a hash)", Role::Internal),
    family("ha:", "the writer lease and its fencing counter (strings)"),
    key(
        "control",
        "the control stream's commands (a stream)",
        Role::Internal,
    ),
    key(
        "control:acks",
        "the control stream's acks (a stream)",
        Role::Internal,
    ),
    key(
        "control:last",
        "the id of the last control command handled (a string)",
        Role::Internal,
    ),
    family(
        "bucket:",
        "reserved for bucket state, members and meta (hashes bucket:<id>:state|members|meta)",
    ),
    family("buckets:", "reserved for the bucket store's bookkeeping"),
    family("commit:", "reserved for the writer's commit bookkeeping"),
    family("cursor:", "reserved for the writer's cursor bookkeeping"),
    family("control:", "reserved for the control stream"),
];

fn owner(name: &str) -> Option<&'static Owned> {
    OWNED.iter().find(|o| {
        if o.family {
            name.starts_with(o.name)
        } else {
            name == o.name
        }
    })
}

/// Refuses routes and consumer groups on keys the ingestor uses for something else.
pub fn check(settings: &Settings) -> Result<(), SettingsError> {
    let prefix = &settings.redis.key_prefix;
    let refuse = |field: String, name: &str, o: &Owned, why: &'static str| {
        Err(SettingsError::ReservedKey {
            field,
            name: name.to_owned(),
            key: format!("{prefix}{name}"),
            what: o.what,
            why,
        })
    };
    for (i, route) in settings.verifier.routes.iter().enumerate() {
        if let Some(o) = owner(&route.stream)
            && route.stream != "records"
        {
            return refuse(
                format!("verifier.routes[{i}].stream"),
                &route.stream,
                o,
                "record jobs cannot be written there; choose another stream name",
            );
        }
    }
    for (i, c) in settings.consumers.iter().enumerate() {
        if let Some(o) = owner(&c.stream)
            && o.role == Role::Internal
        {
            return refuse(
                format!("consumers[{i}].stream"),
                &c.stream,
                o,
                "consumer groups (and the retention that comes with them) only go on job streams: records, identity, dead, buckets or a route's stream",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_exact_names_or_families() {
        assert!(owner("cursor").is_some());
        assert!(owner("cursors").is_none());
        assert!(owner("Cursor").is_none());
        assert!(owner("bucket:active:state").is_some());
        assert!(owner("bucket").is_none());
        assert!(owner("cursor:replay").is_some_and(|o| !o.family));
        assert!(owner("buckets:applied").is_some_and(|o| !o.family));
        assert!(owner("buckets:other").is_some_and(|o| o.family));
        assert!(owner("commit:chain").is_some_and(|o| !o.family));
        assert!(owner("control:acks").is_some_and(|o| !o.family));
        assert!(owner("control:other").is_some_and(|o| o.family));
        assert!(owner("posts").is_none());
    }

    /// docs/jobs.md is the consumers' list of keys: every key the ingestor owns is in it.
    #[test]
    fn docs_jobs_md_lists_every_owned_key() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/jobs.md"))
            .unwrap_or_else(|e| panic!("docs/jobs.md: {e}"));
        let missing: Vec<&str> = OWNED
            .iter()
            .filter(|o| {
                let named = format!("`<prefix>{}", o.name);
                if o.family {
                    !doc.contains(&named)
                } else {
                    !doc.contains(&format!("{named}`"))
                }
            })
            .map(|o| o.name)
            .collect();
        assert!(
            missing.is_empty(),
            "docs/jobs.md does not list: {missing:?}"
        );
    }
}
