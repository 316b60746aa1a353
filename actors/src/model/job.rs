//! Stream entries: what one event (or dead letter) becomes in Redis. The field names and the
//! `v` rule are a contract with our users' consumers (README "Job schema"): additive changes
//! keep `v`, breaking changes bump it.

use super::event::{AccountEvent, CommitEvent, DeadLetter, Event, IdentityEvent};

/// Schema version written in every entry's `v` field.
pub const SCHEMA_VERSION: &str = "1";

/// Which stream an entry goes to (the key is `<prefix><name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Records,
    Identity,
    Dead,
    Buckets,
}

impl StreamKind {
    pub const ALL: [StreamKind; 4] = [
        StreamKind::Records,
        StreamKind::Identity,
        StreamKind::Dead,
        StreamKind::Buckets,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Records => "records",
            StreamKind::Identity => "identity",
            StreamKind::Dead => "dead",
            StreamKind::Buckets => "buckets",
        }
    }
}

/// One entry ready to be written, with the identity used to skip it if it was already
/// committed (rewind overlap, replays after a crash).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    pub stream: StreamKind,
    /// For records: the stream chosen by the verifier's routes (`None` = `records`).
    pub route: Option<std::sync::Arc<str>>,
    /// Event identity for the dedupe index: `(did, collection, rkey, rev, operation)` for
    /// commits, `(did, kind, seq)` for identity/account events, a content hash for dead letters.
    pub identity: String,
    /// Event time used to age the identity out of the dedupe index.
    pub score: u64,
    pub fields: Vec<(&'static str, String)>,
}

impl StreamEntry {
    /// The stream's name after the key prefix.
    pub fn stream_name(&self) -> &str {
        self.route.as_deref().unwrap_or(self.stream.name())
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The dedupe identity of a commit: every part that makes the event unique.
pub fn commit_identity(e: &CommitEvent) -> String {
    let mut s =
        String::with_capacity(e.did.len() + e.collection.len() + e.rkey.len() + e.rev.len() + 12);
    s.push_str("c|");
    s.push_str(&e.did);
    s.push('|');
    s.push_str(&e.collection);
    s.push('|');
    s.push_str(&e.rkey);
    s.push('|');
    s.push_str(&e.rev);
    s.push('|');
    s.push_str(e.operation.as_str());
    s
}

/// The entry for a decoded event, tagged with the host it came from.
pub fn entry_for_event(event: &Event, source: &str) -> StreamEntry {
    match event {
        Event::Commit(e) => commit_entry(e, source),
        Event::Identity(e) => identity_entry(e, source),
        Event::Account(e) => account_entry(e, source),
    }
}

fn commit_entry(e: &CommitEvent, source: &str) -> StreamEntry {
    let idem = format!("{}|{}|{}|{}", e.did, e.collection, e.rkey, e.rev);
    let mut fields = vec![
        ("v", SCHEMA_VERSION.to_owned()),
        ("idem", idem),
        ("did", e.did.clone()),
        ("collection", e.collection.clone()),
        ("rkey", e.rkey.clone()),
        ("operation", e.operation.as_str().to_owned()),
        ("rev", e.rev.clone()),
        ("cid", e.cid.clone().unwrap_or_default()),
        ("time_us", e.time_us.to_string()),
        (
            "record",
            e.record
                .as_ref()
                .map(|r| r.get().to_owned())
                .unwrap_or_default(),
        ),
        ("source", source.to_owned()),
    ];
    let mut stream = None;
    if let Some(v) = &e.verdict {
        if let Some(check) = v.cid_check {
            fields.push(("cid_check", check.to_owned()));
            fields.push(("checks", v.checks.join(",")));
        }
        stream = v.stream.clone();
    }
    StreamEntry {
        stream: StreamKind::Records,
        route: stream,
        identity: commit_identity(e),
        score: e.time_us,
        fields,
    }
}

fn seq_or_time(seq: Option<i64>, time_us: u64) -> String {
    seq.map(|s| s.to_string())
        .unwrap_or_else(|| format!("t{time_us}"))
}

fn identity_entry(e: &IdentityEvent, source: &str) -> StreamEntry {
    let seq = seq_or_time(e.seq, e.time_us);
    StreamEntry {
        stream: StreamKind::Identity,
        route: None,
        identity: format!("i|{}|{}", e.did, seq),
        score: e.time_us,
        fields: vec![
            ("v", SCHEMA_VERSION.to_owned()),
            ("idem", format!("{}|identity|{}", e.did, seq)),
            ("kind", "identity".to_owned()),
            ("did", e.did.clone()),
            ("seq", e.seq.map(|s| s.to_string()).unwrap_or_default()),
            ("time_us", e.time_us.to_string()),
            ("time", e.time.clone().unwrap_or_default()),
            ("handle", e.handle.clone().unwrap_or_default()),
            ("active", String::new()),
            ("status", String::new()),
            ("payload", e.raw.get().to_owned()),
            ("source", source.to_owned()),
        ],
    }
}

fn account_entry(e: &AccountEvent, source: &str) -> StreamEntry {
    let seq = seq_or_time(e.seq, e.time_us);
    StreamEntry {
        stream: StreamKind::Identity,
        route: None,
        identity: format!("a|{}|{}", e.did, seq),
        score: e.time_us,
        fields: vec![
            ("v", SCHEMA_VERSION.to_owned()),
            ("idem", format!("{}|account|{}", e.did, seq)),
            ("kind", "account".to_owned()),
            ("did", e.did.clone()),
            ("seq", e.seq.map(|s| s.to_string()).unwrap_or_default()),
            ("time_us", e.time_us.to_string()),
            ("time", e.time.clone().unwrap_or_default()),
            ("handle", String::new()),
            (
                "active",
                e.active.map(|a| a.to_string()).unwrap_or_default(),
            ),
            ("status", e.status.clone().unwrap_or_default()),
            ("payload", e.raw.get().to_owned()),
            ("source", source.to_owned()),
        ],
    }
}

/// The entry for a bucket transition. Its identity makes a re-committed batch write it once.
pub fn entry_for_transition(t: &super::bucket::Transition) -> StreamEntry {
    let idem = format!("{}|{}|{}|{}", t.bucket, t.did, t.epoch, t.kind.as_str());
    StreamEntry {
        stream: StreamKind::Buckets,
        route: None,
        identity: format!("b|{idem}"),
        score: t.time_us,
        fields: vec![
            ("v", SCHEMA_VERSION.to_owned()),
            ("idem", idem),
            ("bucket", t.bucket.to_string()),
            ("did", t.did.clone()),
            ("transition", t.kind.as_str().to_owned()),
            ("epoch", t.epoch.to_string()),
            ("reason", t.reason.to_owned()),
            ("time_us", t.time_us.to_string()),
        ],
    }
}

/// The entry for a dead letter. Its identity is a hash of the raw frame, so a frame replayed
/// after a reconnect is dead-lettered once, not once per replay.
pub fn entry_for_dead(
    d: &DeadLetter,
    source: &str,
    fallback_score: u64,
    hash: &str,
) -> StreamEntry {
    StreamEntry {
        stream: StreamKind::Dead,
        route: None,
        identity: format!("d|{hash}"),
        score: d.time_us.unwrap_or(fallback_score),
        fields: vec![
            ("v", SCHEMA_VERSION.to_owned()),
            ("reason", d.reason.to_owned()),
            ("message", d.message.clone()),
            ("source", source.to_owned()),
            (
                "time_us",
                d.time_us.map(|t| t.to_string()).unwrap_or_default(),
            ),
            ("did", d.did.clone().unwrap_or_default()),
            ("raw_len", d.raw_len.to_string()),
            ("raw", d.raw.clone()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::Operation;
    use serde_json::value::RawValue;

    fn commit(op: Operation) -> CommitEvent {
        CommitEvent {
            did: "did:plc:abc".into(),
            time_us: 42,
            rev: "3l3qo2vutsw2b".into(),
            operation: op,
            collection: "app.bsky.feed.post".into(),
            rkey: "3l3qo2vuowo2b".into(),
            record: (op != Operation::Delete)
                .then(|| RawValue::from_string(r#"{"text":"hi"}"#.into()).expect("valid json")),
            cid: (op != Operation::Delete).then(|| "bafyrei".to_owned()),
            verdict: None,
        }
    }

    #[test]
    fn commit_entry_carries_the_documented_fields() {
        let e = entry_for_event(&Event::Commit(commit(Operation::Create)), "host");
        assert_eq!(e.stream, StreamKind::Records);
        assert_eq!(
            e.field("idem"),
            Some("did:plc:abc|app.bsky.feed.post|3l3qo2vuowo2b|3l3qo2vutsw2b")
        );
        assert_eq!(e.field("record"), Some(r#"{"text":"hi"}"#));
        assert_eq!(e.field("source"), Some("host"));
        assert_eq!(e.score, 42);
    }

    #[test]
    fn identity_distinguishes_operations() {
        let a = commit_identity(&commit(Operation::Create));
        let b = commit_identity(&commit(Operation::Delete));
        assert_ne!(a, b);
        let del = entry_for_event(&Event::Commit(commit(Operation::Delete)), "h");
        assert_eq!(del.field("record"), Some(""));
        assert_eq!(del.field("cid"), Some(""));
    }
}
