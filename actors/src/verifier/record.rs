//! Record checks on the raw JSON of a create/update: size and nesting limits, data-model
//! number rules (no floats, integers within ±(2^53−1)), and `$type` equal to the collection.
//!
//! Pure, one pass: serde_json's parser drives a visitor that keeps only a depth counter and
//! the verdict on the top-level `$type`, so no tree is built. Failures are [`CheckError`]s
//! with stable codes (see `checks.rs`); the caller decides the event's fate.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::checks::{CheckError, shown};

/// Largest integer magnitude the atproto data model allows (JavaScript's safe range).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Bounds on a record, from the verifier configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// Largest record, in bytes of JSON as received.
    pub max_bytes: usize,
    /// Deepest nesting of objects and arrays; the record object itself is depth 1. Must stay
    /// below serde_json's own recursion limit (128), which otherwise reports `bad_record`.
    pub max_depth: usize,
}

/// Checks a record (JSON text) against the limits, the number rules and its collection.
///
/// Hard failures (`Err`: the event cannot become a job) are size, shape and depth. Soft
/// findings (`Ok(list)`: the job is written and carries them) are floats, unsafe integers
/// and a missing or different `$type`; at most one finding per code is kept.
///
/// Order: size (before parsing), then in one pass shape, depth and numbers, then `$type`.
pub fn check_record(
    record_json: &str,
    collection: &str,
    limits: RecordLimits,
) -> Result<Vec<CheckError>, CheckError> {
    if record_json.len() > limits.max_bytes {
        return Err(CheckError::new(
            CheckError::RECORD_TOO_LARGE,
            format!(
                "record is {} bytes, limit {}",
                record_json.len(),
                limits.max_bytes
            ),
        ));
    }
    if !record_json.trim_start().starts_with('{') {
        return Err(CheckError::new(
            CheckError::BAD_RECORD,
            "record is not a JSON object",
        ));
    }
    let mut walk = Walk {
        max_depth: limits.max_depth,
        collection,
        error: None,
        soft: Vec::new(),
        type_state: TypeState::Missing,
        capture_type: false,
    };
    let mut de = serde_json::Deserializer::from_str(record_json);
    let parsed = Node {
        walk: &mut walk,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Err(e) = parsed {
        return Err(walk.error.take().unwrap_or_else(|| {
            CheckError::new(
                CheckError::BAD_RECORD,
                format!("record is not valid JSON: {e}"),
            )
        }));
    }
    let mut soft = std::mem::take(&mut walk.soft);
    let mismatch = |msg: String| Some(CheckError::new(CheckError::TYPE_MISMATCH, msg));
    let type_finding = match walk.type_state {
        TypeState::Matches => None,
        TypeState::Missing => Some(CheckError::new(
            CheckError::MISSING_TYPE,
            format!("record has no $type (collection {})", shown(collection)),
        )),
        TypeState::NotString => mismatch("$type is not a string".into()),
        TypeState::Duplicate => mismatch("$type appears more than once".into()),
        TypeState::Differs(t) => mismatch(format!(
            "$type {} differs from collection {}",
            shown(&t),
            shown(collection)
        )),
    };
    soft.extend(type_finding);
    Ok(soft)
}

/// What we learnt about the top-level `$type`.
enum TypeState {
    Missing,
    Matches,
    NotString,
    Duplicate,
    Differs(String),
}

struct Walk<'a> {
    max_depth: usize,
    collection: &'a str,
    /// The check that aborted the parse (serde only carries a message).
    error: Option<CheckError>,
    /// Soft findings so far (one per code).
    soft: Vec<CheckError>,
    type_state: TypeState,
    /// Set while the value of the top-level `$type` is being visited.
    capture_type: bool,
}

impl Walk<'_> {
    fn fail<E: de::Error>(&mut self, err: CheckError) -> E {
        let e = E::custom(&err);
        self.error = Some(err);
        e
    }

    /// Depth of a container opened under one at `depth`, or the too-deep error.
    fn enter<E: de::Error>(&mut self, depth: usize) -> Result<usize, E> {
        let d = depth + 1;
        if d > self.max_depth {
            return Err(self.fail(CheckError::new(
                CheckError::RECORD_TOO_DEEP,
                format!("record nests deeper than {}", self.max_depth),
            )));
        }
        Ok(d)
    }

    fn integer(&mut self, magnitude: u64, negative: bool) {
        if magnitude > MAX_SAFE_INTEGER {
            let sign = if negative { "-" } else { "" };
            self.note(CheckError::new(
                CheckError::UNSAFE_INTEGER,
                format!("integer {sign}{magnitude} is outside ±(2^53-1)"),
            ));
        }
    }

    /// Records a soft finding unless one with the same code is already there.
    fn note(&mut self, finding: CheckError) {
        if !self.soft.iter().any(|f| f.reason == finding.reason) {
            self.soft.push(finding);
        }
    }
}

/// One JSON value at nesting `depth` (of its parent container).
struct Node<'w, 'a> {
    walk: &'w mut Walk<'a>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an atproto record value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.walk.integer(v, false);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.walk.integer(v.unsigned_abs(), v < 0);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json reports integers beyond 64 bits as f64.
        let err = if v.fract() == 0.0 && v.abs() > MAX_SAFE_INTEGER as f64 {
            CheckError::new(
                CheckError::UNSAFE_INTEGER,
                format!("integer {v} is outside ±(2^53-1)"),
            )
        } else {
            CheckError::new(CheckError::FLOAT_IN_RECORD, format!("float {v} in record"))
        };
        self.walk.note(err);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.walk.capture_type {
            self.walk.type_state = if v == self.walk.collection {
                TypeState::Matches
            } else {
                TypeState::Differs(v.to_owned())
            };
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let walk = self.walk;
        walk.capture_type = false;
        let depth = walk.enter(self.depth)?;
        while seq
            .next_element_seed(Node {
                walk: &mut *walk,
                depth,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let walk = self.walk;
        walk.capture_type = false;
        let depth = walk.enter(self.depth)?;
        while let Some(is_type) = map.next_key_seed(IsTypeKey)? {
            if is_type && depth == 1 {
                let first = matches!(walk.type_state, TypeState::Missing);
                // Stays NotString unless the value turns out to be a string.
                walk.type_state = TypeState::NotString;
                walk.capture_type = first;
                map.next_value_seed(Node {
                    walk: &mut *walk,
                    depth,
                })?;
                walk.capture_type = false;
                if !first {
                    walk.type_state = TypeState::Duplicate;
                }
            } else {
                map.next_value_seed(Node {
                    walk: &mut *walk,
                    depth,
                })?;
            }
        }
        Ok(())
    }
}

/// Reads a map key, telling whether it is `$type`.
struct IsTypeKey;

impl<'de> DeserializeSeed<'de> for IsTypeKey {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IsTypeKey {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == "$type")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LIMITS: RecordLimits = RecordLimits {
        max_bytes: 1 << 20,
        max_depth: 32,
    };
    const POST: &str = "app.bsky.feed.post";

    fn reason(json: &str, collection: &str, limits: RecordLimits) -> &'static str {
        match check_record(json, collection, limits) {
            Ok(soft) => soft.first().map_or("ok", |f| f.reason),
            Err(e) => e.reason,
        }
    }

    #[test]
    fn real_record_passes() {
        let json = r#"{"$type":"app.bsky.feed.post","createdAt":"2026-07-04T14:38:06.240Z","embed":{"$type":"app.bsky.embed.external","external":{"thumb":{"$type":"blob","ref":{"$link":"bafkreias7oxbr6swsuggccmtnqpoeami4jza5x4w3urltn6gzhqf4k6k2e"},"mimeType":"image/jpeg","size":119635}}},"facets":[{"index":{"byteEnd":31,"byteStart":0}}],"langs":["en"],"text":"hi"}"#;
        assert_eq!(reason(json, POST, LIMITS), "ok");
    }

    #[test]
    fn type_must_equal_collection() {
        assert_eq!(reason(r#"{"text":"x"}"#, POST, LIMITS), "missing_type");
        assert_eq!(
            reason(r#"{"$type":"app.bsky.feed.like"}"#, POST, LIMITS),
            "type_mismatch"
        );
        assert_eq!(reason(r#"{"$type":5}"#, POST, LIMITS), "type_mismatch");
        assert_eq!(
            reason(r#"{"$type":{"a":"app.bsky.feed.post"}}"#, POST, LIMITS),
            "type_mismatch"
        );
        assert_eq!(reason(r#"{"$type":null}"#, POST, LIMITS), "type_mismatch");
        assert_eq!(
            reason(
                r#"{"$type":"app.bsky.feed.post","$type":"app.bsky.feed.post"}"#,
                POST,
                LIMITS
            ),
            "type_mismatch"
        );
        // nested $type does not count
        assert_eq!(
            reason(r#"{"embed":{"$type":"app.bsky.feed.post"}}"#, POST, LIMITS),
            "missing_type"
        );
        // escaped key is still $type
        assert_eq!(
            reason(r#"{"\u0024type":"app.bsky.feed.post"}"#, POST, LIMITS),
            "ok"
        );
        let soft = check_record(r#"{"$type":"x.y.z"}"#, POST, LIMITS).unwrap();
        assert!(soft[0].message.contains("x.y.z"), "{}", soft[0].message);
    }

    #[test]
    fn record_must_be_an_object() {
        for json in [
            r#"[1]"#,
            r#""s""#,
            "5",
            "null",
            "",
            "{",
            r#"{"$type":"a.b.c"} x"#,
        ] {
            assert_eq!(reason(json, "a.b.c", LIMITS), "bad_record", "{json}");
        }
    }

    #[test]
    fn size_limit() {
        let json = format!(r#"{{"$type":"{POST}","text":"{}"}}"#, "a".repeat(100));
        let exact = RecordLimits {
            max_bytes: json.len(),
            ..LIMITS
        };
        assert_eq!(reason(&json, POST, exact), "ok");
        let under = RecordLimits {
            max_bytes: json.len() - 1,
            ..LIMITS
        };
        assert_eq!(reason(&json, POST, under), "record_too_large");
    }

    #[test]
    fn depth_limit() {
        let nested = |n: usize| {
            format!(
                r#"{{"$type":"{POST}","x":{}1{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let limits = RecordLimits {
            max_depth: 4,
            ..LIMITS
        };
        // record object (1) + 3 arrays = 4
        assert_eq!(reason(&nested(3), POST, limits), "ok");
        assert_eq!(reason(&nested(4), POST, limits), "record_too_deep");
        let maps = format!(r#"{{"$type":"{POST}","a":{{"b":{{"c":{{"d":1}}}}}}}}"#);
        assert_eq!(reason(&maps, POST, limits), "ok");
        let maps = format!(r#"{{"$type":"{POST}","a":{{"b":{{"c":{{"d":{{}}}}}}}}}}"#);
        assert_eq!(reason(&maps, POST, limits), "record_too_deep");
        // far deeper than serde_json's own limit: still our code, not a parse error
        assert_eq!(reason(&nested(500), POST, LIMITS), "record_too_deep");
    }

    #[test]
    fn floats_are_rejected() {
        for json in [
            r#"{"$type":"app.bsky.feed.post","x":1.5}"#,
            r#"{"$type":"app.bsky.feed.post","x":[0.0]}"#,
            r#"{"$type":"app.bsky.feed.post","x":{"y":1e3}}"#,
            r#"{"x":-2.5,"$type":"app.bsky.feed.post"}"#,
            // serde_json reads "-0" as a float; so do we (no JSON writer of CBOR emits it)
            r#"{"$type":"app.bsky.feed.post","x":-0}"#,
        ] {
            assert_eq!(reason(json, POST, LIMITS), "float_in_record", "{json}");
        }
    }

    #[test]
    fn integers_must_be_safe() {
        let json = |n: &str| format!(r#"{{"$type":"{POST}","n":{n}}}"#);
        for ok in ["0", "9007199254740991", "-9007199254740991"] {
            assert_eq!(reason(&json(ok), POST, LIMITS), "ok", "{ok}");
        }
        for bad in [
            "9007199254740992",
            "-9007199254740992",
            "18446744073709551615",
            "-9223372036854775808",
            "100000000000000000000000",
        ] {
            assert_eq!(reason(&json(bad), POST, LIMITS), "unsafe_integer", "{bad}");
        }
    }

    #[test]
    fn soft_findings_accumulate_and_hard_failures_win() {
        let soft = check_record(
            r#"{"$type":"a.b.c","x":1.5,"y":2.5,"z":99999999999999999}"#,
            POST,
            LIMITS,
        )
        .unwrap();
        let codes: Vec<&str> = soft.iter().map(|f| f.reason).collect();
        assert_eq!(
            codes,
            ["float_in_record", "unsafe_integer", "type_mismatch"]
        );
        let deep = format!(
            r#"{{"$type":"{POST}","f":1.5,"d":{}{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(reason(&deep, POST, LIMITS), "record_too_deep");
    }
}
