//! Frame → typed event. Pure; runs on every frame, so it parses once from the frame's bytes and
//! keeps records as raw JSON. Anything that does not decode becomes a [`DeadLetter`] with a
//! stable reason code; nothing here panics on input.
//!
//! Tolerance (Jetstream v2 adds fields, future kinds may appear): unknown top-level and commit
//! fields are ignored; unknown kinds are skipped and counted, their `time_us` still advances
//! the cursor.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::{AccountEvent, CommitEvent, DeadLetter, Event, IdentityEvent, Operation};

/// What one frame turned into.
#[derive(Debug)]
pub enum Decoded {
    Event(Event),
    /// A well-formed event of a kind we do not handle.
    Skipped {
        time_us: u64,
        kind: String,
    },
    Dead(DeadLetter),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    did: Cow<'a, str>,
    time_us: u64,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    commit: Option<&'a RawValue>,
    #[serde(borrow, default)]
    identity: Option<&'a RawValue>,
    #[serde(borrow, default)]
    account: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawCommit<'a> {
    #[serde(borrow)]
    rev: Cow<'a, str>,
    #[serde(borrow)]
    operation: Cow<'a, str>,
    #[serde(borrow)]
    collection: Cow<'a, str>,
    #[serde(borrow)]
    rkey: Cow<'a, str>,
    #[serde(borrow, default)]
    record: Option<&'a RawValue>,
    #[serde(default)]
    cid: Option<String>,
}

#[derive(Deserialize)]
struct RawIdentity {
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default)]
    handle: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

#[derive(Deserialize)]
struct RawAccount {
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

/// Whatever a broken frame still tells, for its dead letter.
#[derive(Deserialize)]
struct Salvage {
    #[serde(default)]
    time_us: Option<u64>,
    #[serde(default)]
    did: Option<String>,
}

fn dead(reason: &'static str, message: String, raw: &[u8]) -> Decoded {
    let mut d = DeadLetter::new(reason, message, raw);
    if let Ok(s) = serde_json::from_slice::<Salvage>(raw) {
        d.time_us = s.time_us;
        d.did = s.did;
    }
    Decoded::Dead(d)
}

/// Decodes one frame given as bytes (an inflated zstd frame; invalid UTF-8 is a dead letter).
pub fn decode_frame(raw: &[u8]) -> Decoded {
    match std::str::from_utf8(raw) {
        Ok(text) => decode_text(text),
        Err(e) => Decoded::Dead(DeadLetter::new("invalid_utf8", e.to_string(), raw)),
    }
}

/// Decodes one text frame (the WebSocket layer has already checked its UTF-8).
pub fn decode_text(text: &str) -> Decoded {
    let raw = text.as_bytes();
    let env: Envelope<'_> = match serde_json::from_str(text) {
        Ok(e) => e,
        Err(e) => {
            let reason = match e.classify() {
                serde_json::error::Category::Data => "bad_envelope",
                _ => "invalid_json",
            };
            return dead(reason, e.to_string(), raw);
        }
    };
    match env.kind.as_ref() {
        "commit" => decode_commit(&env, raw),
        "identity" => decode_identity(&env, raw),
        "account" => decode_account(&env, raw),
        other => Decoded::Skipped {
            time_us: env.time_us,
            kind: other.to_owned(),
        },
    }
}

fn decode_commit(env: &Envelope<'_>, raw: &[u8]) -> Decoded {
    let Some(commit) = env.commit else {
        return dead(
            "bad_commit",
            "kind is commit but the commit object is missing".into(),
            raw,
        );
    };
    let c: RawCommit<'_> = match serde_json::from_str(commit.get()) {
        Ok(c) => c,
        Err(e) => return dead("bad_commit", format!("commit: {e}"), raw),
    };
    let Some(operation) = Operation::parse(&c.operation) else {
        return dead(
            "bad_commit",
            format!("unknown commit operation {:?}", c.operation),
            raw,
        );
    };
    let (record, cid) = match operation {
        Operation::Delete => (None, None),
        Operation::Create | Operation::Update => {
            let Some(record) = c.record else {
                return dead(
                    "bad_commit",
                    format!("{} without a record", operation.as_str()),
                    raw,
                );
            };
            let Some(cid) = c.cid else {
                return dead(
                    "bad_commit",
                    format!("{} without a cid", operation.as_str()),
                    raw,
                );
            };
            (Some(record.to_owned()), Some(cid))
        }
    };
    Decoded::Event(Event::Commit(CommitEvent {
        did: env.did.clone().into_owned(),
        time_us: env.time_us,
        rev: c.rev.into_owned(),
        operation,
        collection: c.collection.into_owned(),
        rkey: c.rkey.into_owned(),
        record,
        cid,
        verdict: None,
    }))
}

fn decode_identity(env: &Envelope<'_>, raw: &[u8]) -> Decoded {
    let Some(obj) = env.identity else {
        return dead(
            "bad_identity",
            "kind is identity but the identity object is missing".into(),
            raw,
        );
    };
    match serde_json::from_str::<RawIdentity>(obj.get()) {
        Ok(i) => Decoded::Event(Event::Identity(IdentityEvent {
            did: env.did.clone().into_owned(),
            time_us: env.time_us,
            seq: i.seq,
            handle: i.handle,
            time: i.time,
            raw: obj.to_owned(),
        })),
        Err(e) => dead("bad_identity", format!("identity: {e}"), raw),
    }
}

fn decode_account(env: &Envelope<'_>, raw: &[u8]) -> Decoded {
    let Some(obj) = env.account else {
        return dead(
            "bad_account",
            "kind is account but the account object is missing".into(),
            raw,
        );
    };
    match serde_json::from_str::<RawAccount>(obj.get()) {
        Ok(a) => Decoded::Event(Event::Account(AccountEvent {
            did: env.did.clone().into_owned(),
            time_us: env.time_us,
            seq: a.seq,
            active: a.active,
            status: a.status,
            time: a.time,
            raw: obj.to_owned(),
        })),
        Err(e) => dead("bad_account", format!("account: {e}"), raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST: &str = r#"{"did":"did:plc:q235v55g5unth4zjjdpacfdr","time_us":1779719009157119,"kind":"commit","commit":{"rev":"3mmoojpaqkn2z","operation":"create","collection":"app.bsky.feed.post","rkey":"3mmoojp4cd223","record":{"$type":"app.bsky.feed.post","text":"Try \"RSV\""},"cid":"bafyreicl7rzkxdrm4zz2ehbx52kuk3mvfow6p3gzfys72r5grvskxoswy4"}}"#;

    fn reason(d: Decoded) -> &'static str {
        match d {
            Decoded::Dead(d) => d.reason,
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    #[test]
    fn commit_keeps_the_record_bytes() {
        let Decoded::Event(Event::Commit(c)) = decode_frame(POST.as_bytes()) else {
            panic!("commit expected")
        };
        assert_eq!(c.operation, Operation::Create);
        assert_eq!(c.time_us, 1779719009157119);
        assert_eq!(
            c.record.as_ref().map(|r| r.get()),
            Some(r#"{"$type":"app.bsky.feed.post","text":"Try \"RSV\""}"#)
        );
    }

    #[test]
    fn unknown_fields_and_kinds_are_tolerated() {
        let v2 = POST
            .replacen("{\"did\"", "{\"cursor\":99,\"did\"", 1)
            .replacen("\"rev\"", "\"extra\":[1],\"rev\"", 1);
        assert!(matches!(
            decode_frame(v2.as_bytes()),
            Decoded::Event(Event::Commit(_))
        ));
        let k = r#"{"did":"did:plc:x","time_us":5,"kind":"sync","sync":{}}"#;
        assert!(matches!(
            decode_frame(k.as_bytes()),
            Decoded::Skipped { time_us: 5, .. }
        ));
    }

    #[test]
    fn delete_has_no_record_and_identity_account_decode() {
        let del = r#"{"did":"did:plc:x","time_us":7,"kind":"commit","commit":{"rev":"3l","operation":"delete","collection":"a.b.c","rkey":"k"}}"#;
        let Decoded::Event(Event::Commit(c)) = decode_frame(del.as_bytes()) else {
            panic!("delete")
        };
        assert!(c.record.is_none() && c.cid.is_none());
        let id = r#"{"did":"did:plc:x","time_us":8,"kind":"identity","identity":{"did":"did:plc:x","handle":"a.b","seq":3,"time":"t"}}"#;
        let Decoded::Event(Event::Identity(i)) = decode_frame(id.as_bytes()) else {
            panic!("identity")
        };
        assert_eq!((i.seq, i.handle.as_deref()), (Some(3), Some("a.b")));
        let ac = r#"{"did":"did:plc:x","time_us":9,"kind":"account","account":{"active":false,"did":"did:plc:x","seq":4,"status":"takendown","time":"t"}}"#;
        let Decoded::Event(Event::Account(a)) = decode_frame(ac.as_bytes()) else {
            panic!("account")
        };
        assert_eq!(
            (a.active, a.status.as_deref()),
            (Some(false), Some("takendown"))
        );
    }

    #[test]
    fn malformed_frames_get_precise_reasons() {
        assert_eq!(reason(decode_frame(b"{\"did\":")), "invalid_json");
        assert_eq!(reason(decode_frame(b"\xff\xfe")), "invalid_utf8");
        assert_eq!(
            reason(decode_frame(
                br#"{"did":"d","time_us":"soon","kind":"commit"}"#
            )),
            "bad_envelope"
        );
        assert_eq!(
            reason(decode_frame(br#"{"did":"d","time_us":1,"kind":"commit"}"#)),
            "bad_commit"
        );
        let no_cid = POST.replace(
            r#","cid":"bafyreicl7rzkxdrm4zz2ehbx52kuk3mvfow6p3gzfys72r5grvskxoswy4""#,
            "",
        );
        assert_eq!(reason(decode_frame(no_cid.as_bytes())), "bad_commit");
        let op = POST.replace("\"create\"", "\"upsert\"");
        assert_eq!(reason(decode_frame(op.as_bytes())), "bad_commit");
    }

    #[test]
    fn dead_letters_salvage_time_and_did() {
        let Decoded::Dead(d) =
            decode_frame(br#"{"did":"did:plc:x","time_us":77,"kind":"commit","commit":{"rev":1}}"#)
        else {
            panic!("dead")
        };
        assert_eq!((d.time_us, d.did.as_deref()), (Some(77), Some("did:plc:x")));
    }
}
