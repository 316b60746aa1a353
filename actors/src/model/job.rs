//! Stream entries: what one event (or dead letter) becomes in Redis. The field names and the
//! `v` rule are a contract with our users' consumers (docs/jobs.md): additive changes
//! keep `v`, breaking changes bump it.

use super::event::{CommitEvent, DeadLetter, Event};

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

/// Receives stream entries field by field: one [`EntrySink::begin`], then the entry's fields
/// in order. The `write_*` functions below are the one definition of the job schema
/// (docs/jobs.md): the commit encoder (`sink::commit`) writes them straight into Redis
/// commands without building a string per field, and [`StreamEntry`] collects them for tests,
/// benches and docs checks.
pub trait EntrySink {
    /// A new entry for `stream` (or the verifier's `route`). Its dedupe identity is `identity`
    /// joined with `|`; `score` (event time) ages it out of the dedupe index.
    fn begin(
        &mut self,
        stream: StreamKind,
        route: Option<&std::sync::Arc<str>>,
        identity: &[&str],
        score: u64,
    );
    /// One field of the current entry.
    fn text(&mut self, name: &'static str, value: &str);
    /// One field whose value is `parts` joined with `sep`.
    fn joined(&mut self, name: &'static str, parts: &[&str], sep: char);
}

/// `parts` joined with `sep`, appended to `out`.
pub fn join_into(out: &mut String, parts: &[&str], sep: char) {
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        out.push_str(p);
    }
}

/// Writes the entry of a decoded event, tagged with the host it came from.
pub fn write_event(sink: &mut impl EntrySink, event: &Event, source: &str) {
    match event {
        Event::Commit(e) => write_commit(sink, e, source),
        Event::Identity(e) => write_identity(
            sink,
            IdentityLike {
                kind: "identity",
                tag: "i",
                did: &e.did,
                seq: e.seq,
                time_us: e.time_us,
                time: e.time.as_deref(),
                handle: e.handle.as_deref(),
                active: None,
                status: None,
                payload: e.raw.get(),
            },
            source,
        ),
        Event::Account(e) => write_identity(
            sink,
            IdentityLike {
                kind: "account",
                tag: "a",
                did: &e.did,
                seq: e.seq,
                time_us: e.time_us,
                time: e.time.as_deref(),
                handle: None,
                active: e.active,
                status: e.status.as_deref(),
                payload: e.raw.get(),
            },
            source,
        ),
    }
}

fn write_commit(sink: &mut impl EntrySink, e: &CommitEvent, source: &str) {
    let op = e.operation.as_str();
    let route = e.verdict.as_ref().and_then(|v| v.stream.as_ref());
    sink.begin(
        StreamKind::Records,
        route,
        &["c", &e.did, &e.collection, &e.rkey, &e.rev, op],
        e.time_us,
    );
    let mut time = itoa::Buffer::new();
    sink.text("v", SCHEMA_VERSION);
    sink.joined("idem", &[&e.did, &e.collection, &e.rkey, &e.rev], '|');
    sink.text("did", &e.did);
    sink.text("collection", &e.collection);
    sink.text("rkey", &e.rkey);
    sink.text("operation", op);
    sink.text("rev", &e.rev);
    sink.text("cid", e.cid.as_deref().unwrap_or(""));
    sink.text("time_us", time.format(e.time_us));
    sink.text("record", e.record.as_ref().map_or("", |r| r.get()));
    sink.text("source", source);
    if let Some(v) = &e.verdict
        && let Some(check) = v.cid_check
    {
        sink.text("cid_check", check);
        sink.joined("checks", &v.checks, ',');
    }
}

/// The fields identity and account events share (one stream, one layout).
struct IdentityLike<'a> {
    kind: &'static str,
    tag: &'static str,
    did: &'a str,
    seq: Option<i64>,
    time_us: u64,
    time: Option<&'a str>,
    handle: Option<&'a str>,
    active: Option<bool>,
    status: Option<&'a str>,
    payload: &'a str,
}

fn write_identity(sink: &mut impl EntrySink, e: IdentityLike<'_>, source: &str) {
    let mut seq_buf = itoa::Buffer::new();
    let mut time = itoa::Buffer::new();
    // Without a relay sequence number the event time identifies it (rare; allocates).
    let no_seq;
    let seq_id = match e.seq {
        Some(s) => seq_buf.format(s),
        None => {
            no_seq = format!("t{}", e.time_us);
            no_seq.as_str()
        }
    };
    sink.begin(
        StreamKind::Identity,
        None,
        &[e.tag, e.did, seq_id],
        e.time_us,
    );
    sink.text("v", SCHEMA_VERSION);
    sink.joined("idem", &[e.did, e.kind, seq_id], '|');
    sink.text("kind", e.kind);
    sink.text("did", e.did);
    sink.text("seq", if e.seq.is_some() { seq_id } else { "" });
    sink.text("time_us", time.format(e.time_us));
    sink.text("time", e.time.unwrap_or(""));
    sink.text("handle", e.handle.unwrap_or(""));
    sink.text(
        "active",
        match e.active {
            Some(true) => "true",
            Some(false) => "false",
            None => "",
        },
    );
    sink.text("status", e.status.unwrap_or(""));
    sink.text("payload", e.payload);
    sink.text("source", source);
}

/// Writes the entry of a bucket transition. Its identity makes a re-committed batch write it
/// once.
pub fn write_transition(sink: &mut impl EntrySink, t: &super::bucket::Transition) {
    let mut epoch = itoa::Buffer::new();
    let mut time = itoa::Buffer::new();
    let epoch = epoch.format(t.epoch);
    let kind = t.kind.as_str();
    sink.begin(
        StreamKind::Buckets,
        None,
        &["b", &t.bucket, &t.did, epoch, kind],
        t.time_us,
    );
    sink.text("v", SCHEMA_VERSION);
    sink.joined("idem", &[&t.bucket, &t.did, epoch, kind], '|');
    sink.text("bucket", &t.bucket);
    sink.text("did", &t.did);
    sink.text("transition", kind);
    sink.text("epoch", epoch);
    sink.text("reason", t.reason);
    sink.text("time_us", time.format(t.time_us));
}

/// Writes the entry of a dead letter. Its identity is a hash of the whole frame, so a frame
/// replayed after a reconnect is dead-lettered once, not once per replay; its score is the
/// frame's time, or where the reader met it (`position_us`), or `fallback_score` (the batch
/// cursor) when neither is known. Never 0 for a frame of the reader: a score below the
/// dedupe window is pruned at once, and the frame would be written again after a reconnect.
pub fn write_dead(sink: &mut impl EntrySink, d: &DeadLetter, source: &str, fallback_score: u64) {
    let mut hash = [0u8; 32];
    // 16 bytes of SHA-256 as 32 hex digits: `encode_to_slice` cannot fail at this size.
    let hash = match hex::encode_to_slice(&d.frame_sha256[..16], &mut hash) {
        Ok(()) => std::str::from_utf8(&hash).unwrap_or(""),
        Err(_) => "",
    };
    let mut time = itoa::Buffer::new();
    let mut len = itoa::Buffer::new();
    sink.begin(
        StreamKind::Dead,
        None,
        &["d", hash],
        match (d.time_us, d.position_us) {
            // The newer of the two: a frame claiming an ancient time is still met again by
            // every rewind that reaches where it sits.
            (Some(t), Some(p)) => t.max(p),
            (t, p) => t.or(p).unwrap_or(fallback_score),
        },
    );
    sink.text("v", SCHEMA_VERSION);
    sink.text("reason", d.reason);
    sink.text("message", &d.message);
    sink.text("source", source);
    sink.text("time_us", d.time_us.map_or("", |t| time.format(t)));
    sink.text("did", d.did.as_deref().unwrap_or(""));
    sink.text("raw_len", len.format(d.raw_len));
    sink.text("raw", &d.raw);
    sink.text("frame_sha256", hash);
}

/// The dedupe identity and score of an entry as stored, from its fields: the inverse of the
/// `write_*` functions above, so the dedupe index can be rebuilt from the streams themselves
/// (a replay from older than the index remembers). `None` for an entry that is not ours
/// (no `v`, or a layout we do not know). Dead letters written before `frame_sha256` existed
/// have no identity to give.
pub fn identity_of_entry<'a>(
    field: impl Fn(&str) -> Option<&'a str>,
    inserted_us: u64,
) -> Option<(String, u64)> {
    field("v")?;
    let time = field("time_us").and_then(|t| t.parse::<u64>().ok());
    if let (Some(op), Some(idem)) = (field("operation"), field("idem")) {
        return Some((format!("c|{idem}|{op}"), time?));
    }
    if field("transition").is_some() {
        return Some((format!("b|{}", field("idem")?), time?));
    }
    if let Some(kind) = field("kind") {
        let tag = match kind {
            "identity" => "i",
            "account" => "a",
            _ => return None,
        };
        let seq = field("seq").filter(|s| !s.is_empty());
        let t = time?;
        let id = match seq {
            Some(seq) => format!("{tag}|{}|{seq}", field("did")?),
            None => format!("{tag}|{}|t{t}", field("did")?),
        };
        return Some((id, t));
    }
    if field("raw_len").is_some() {
        let hash = field("frame_sha256").filter(|h| !h.is_empty())?;
        // Scored as written: the newer of its time and where it was met (about when it was
        // inserted).
        return Some((
            format!("d|{hash}"),
            time.map_or(inserted_us, |t| t.max(inserted_us)),
        ));
    }
    None
}

/// Collects entries as [`StreamEntry`] values (tests, benches, schema checks).
#[derive(Debug, Default)]
pub struct EntryCollector {
    pub entries: Vec<StreamEntry>,
}

impl EntrySink for EntryCollector {
    fn begin(
        &mut self,
        stream: StreamKind,
        route: Option<&std::sync::Arc<str>>,
        identity: &[&str],
        score: u64,
    ) {
        let mut id = String::new();
        join_into(&mut id, identity, '|');
        self.entries.push(StreamEntry {
            stream,
            route: route.cloned(),
            identity: id,
            score,
            fields: Vec::new(),
        });
    }

    fn text(&mut self, name: &'static str, value: &str) {
        if let Some(e) = self.entries.last_mut() {
            e.fields.push((name, value.to_owned()));
        }
    }

    fn joined(&mut self, name: &'static str, parts: &[&str], sep: char) {
        let mut v = String::new();
        join_into(&mut v, parts, sep);
        self.text(name, &v);
    }
}

fn collect_one(write: impl FnOnce(&mut EntryCollector)) -> StreamEntry {
    let mut c = EntryCollector::default();
    write(&mut c);
    c.entries.pop().unwrap_or(StreamEntry {
        stream: StreamKind::Dead,
        route: None,
        identity: String::new(),
        score: 0,
        fields: Vec::new(),
    })
}

/// The entry for a decoded event, tagged with the host it came from.
pub fn entry_for_event(event: &Event, source: &str) -> StreamEntry {
    collect_one(|c| write_event(c, event, source))
}

/// The entry for a bucket transition.
pub fn entry_for_transition(t: &super::bucket::Transition) -> StreamEntry {
    collect_one(|c| write_transition(c, t))
}

/// The entry for a dead letter (see [`write_dead`]).
pub fn entry_for_dead(d: &DeadLetter, source: &str, fallback_score: u64) -> StreamEntry {
    collect_one(|c| write_dead(c, d, source, fallback_score))
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
        let a = entry_for_event(&Event::Commit(commit(Operation::Create)), "h").identity;
        let b = entry_for_event(&Event::Commit(commit(Operation::Delete)), "h").identity;
        assert_ne!(a, b);
        let del = entry_for_event(&Event::Commit(commit(Operation::Delete)), "h");
        assert_eq!(del.field("record"), Some(""));
        assert_eq!(del.field("cid"), Some(""));
    }

    #[test]
    fn the_identity_of_every_kind_of_entry_is_read_back_from_its_fields() {
        use crate::model::bucket::{Transition, TransitionKind};
        use crate::model::event::{AccountEvent, IdentityEvent};
        let mut sink = EntryCollector::default();
        for op in [Operation::Create, Operation::Update, Operation::Delete] {
            write_event(&mut sink, &Event::Commit(commit(op)), "h");
        }
        let raw = RawValue::from_string("{}".into()).expect("json");
        for seq in [Some(7), None] {
            write_event(
                &mut sink,
                &Event::Identity(IdentityEvent {
                    did: "did:plc:abc".into(),
                    time_us: 50,
                    seq,
                    handle: Some("a.b".into()),
                    time: None,
                    raw: raw.clone(),
                }),
                "h",
            );
            write_event(
                &mut sink,
                &Event::Account(AccountEvent {
                    did: "did:plc:abc".into(),
                    time_us: 51,
                    seq,
                    active: Some(true),
                    status: None,
                    time: None,
                    raw: raw.clone(),
                }),
                "h",
            );
        }
        write_transition(
            &mut sink,
            &Transition {
                bucket: std::sync::Arc::from("b1"),
                did: "did:plc:abc".into(),
                kind: TransitionKind::Entered,
                epoch: 3,
                reason: "criteria",
                time_us: 60,
            },
        );
        let mut dead = DeadLetter::new("invalid_json", "bad", b"{oops");
        dead.position_us = Some(70);
        write_dead(&mut sink, &dead, "h", 0);
        let mut timed = DeadLetter::new("bad_commit", "bad", b"{}");
        timed.time_us = Some(71);
        write_dead(&mut sink, &timed, "h", 0);
        assert_eq!(sink.entries.len(), 3 + 4 + 1 + 2);
        for e in &sink.entries {
            let back = identity_of_entry(|name| e.field(name), 99);
            let want_score = if e.field("raw_len").is_some() {
                e.score.max(99)
            } else {
                e.score
            };
            assert_eq!(back, Some((e.identity.clone(), want_score)), "{e:?}");
        }
        assert_eq!(identity_of_entry(|_| None, 1), None, "not ours");
    }
}
