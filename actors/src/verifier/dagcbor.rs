//! The atproto data model's JSON → canonical DAG-CBOR, the bytes a record's CID hashes.
//!
//! Pure, no IO; used by `cid.rs` once per create/update event. A record with no canonical
//! encoding (a float, an integer beyond 64 bits, a malformed `$link`/`$bytes`, a duplicate
//! key, invalid JSON) is a [`CidError`] with a stable reason, which `cid.rs` turns into an
//! `unverifiable` verdict: never a dropped event.
//!
//! Rules (atproto "Data Model" spec, DAG-CBOR): `{"$link": "<cid>"}` (exactly one key) →
//! tag 42 over `0x00` + binary CID; `{"$bytes": "<base64>"}` (exactly one key; standard
//! alphabet, padding optional) → byte string; a `$link`/`$bytes` key beside other keys is
//! malformed; blobs are plain maps whose `ref` is a link; integers → CBOR ints; map keys
//! sorted shorter-first then bytewise; every head in its shortest form.
//!
//! Why hand-written rather than `serde_json::Value` → `Ipld` → `serde_ipld_dagcbor`:
//! - one pass, no intermediate trees: serde_json's parser drives a visitor that writes CBOR
//!   straight into a reused buffer; only the entries of each map are reordered, by copying
//!   byte ranges, not nodes;
//! - the data-model rules apply where they occur and produce our own stable reasons;
//! - the buffers live in a thread-local and are reused, so a typical record costs no
//!   allocation of ours. Measured in a debug build over the 153 fixture records (ignored
//!   `timing_debug` test in `cid.rs`): encoding alone ~10 µs/record hand-written vs ~25 µs
//!   for the `Value` → `Ipld` → `serde_ipld_dagcbor` path;
//! - cost: each closing array/map moves its own bytes once (header insert or reorder), so a
//!   hostile record costs O(size × depth); `verify_commit` enforces the depth limit first,
//!   and serde_json caps nesting at 128 regardless;
//! - correctness is pinned by tests: byte-for-byte equality with `serde_ipld_dagcbor`
//!   (which also sorts length-first, checked here) on every fixture record, and every real
//!   fixture record recomputing to the CID the network gave it (`cid.rs`).
//!
//! Numbers: what serde_json reports as `u64`/`i64` becomes a CBOR int. Anything it reports
//! as `f64` (a fraction, an exponent, `-0`, or an integer beyond 64 bits) has no DAG-CBOR
//! form under the data model. The stricter ±(2^53−1) rule is a record check (`record.rs`).

use std::cell::RefCell;
use std::fmt;

use ::cid::Cid;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// CBOR tag for an IPLD link (CID), per DAG-CBOR.
const CID_TAG: u8 = 42;
/// Thread-local buffers grown beyond this are dropped after use, so one huge record does
/// not pin memory in every worker thread.
const KEEP_CAPACITY: usize = 256 * 1024;

/// Why a record has no canonical DAG-CBOR encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidError {
    #[error("record is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("record contains a float, which the atproto data model forbids")]
    Float,
    #[error("record contains an integer outside the 64-bit CBOR range")]
    IntegerOutOfRange,
    #[error("malformed $link object: {0}")]
    BadLink(String),
    #[error("malformed $bytes object: {0}")]
    BadBytes(String),
    #[error("duplicate map key {0:?}")]
    DuplicateKey(String),
}

impl CidError {
    /// Stable machine code, used as the reason of an `unverifiable` CID verdict.
    pub fn reason(&self) -> &'static str {
        match self {
            CidError::InvalidJson(_) => "invalid_json",
            CidError::Float => "float_in_record",
            CidError::IntegerOutOfRange => "integer_out_of_range",
            CidError::BadLink(_) => "bad_link",
            CidError::BadBytes(_) => "bad_bytes",
            CidError::DuplicateKey(_) => "duplicate_key",
        }
    }
}

/// The canonical DAG-CBOR encoding of a record given as atproto JSON.
pub fn encode_dag_cbor(record_json: &str) -> Result<Vec<u8>, CidError> {
    with_encoding(record_json, <[u8]>::to_vec)
}

/// Encodes the record into this thread's reused buffer and hands the bytes to `f`, so a
/// caller that only hashes them copies nothing.
pub fn with_encoding<R>(record_json: &str, f: impl FnOnce(&[u8]) -> R) -> Result<R, CidError> {
    with_encoder(|enc| {
        enc.encode(record_json)?;
        Ok(f(&enc.out))
    })
}

thread_local! {
    static ENCODER: RefCell<Encoder> = RefCell::new(Encoder::default());
}

/// Runs `f` with this thread's reusable encoder (a fresh one if it is somehow busy).
fn with_encoder<R>(f: impl FnOnce(&mut Encoder) -> R) -> R {
    ENCODER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut enc) => {
            let result = f(&mut enc);
            enc.trim();
            result
        }
        Err(_) => f(&mut Encoder::default()),
    })
}

/// One entry of a map being built: byte ranges inside `Encoder::out`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Start of the encoded key.
    start: usize,
    /// End of the encoded key = start of the encoded value.
    key_end: usize,
    /// End of the encoded value.
    end: usize,
}

#[derive(Default)]
struct Encoder {
    /// The CBOR written so far; maps are written in JSON order, then reordered in place.
    out: Vec<u8>,
    /// Entries of every map currently open, innermost last (a stack shared by all levels).
    entries: Vec<Entry>,
    /// Where a finished map is reassembled in canonical order before being copied back.
    scratch: Vec<u8>,
    /// The data-model error that aborted the parse (serde only carries a message).
    error: Option<CidError>,
}

impl Encoder {
    fn encode(&mut self, json: &str) -> Result<(), CidError> {
        self.out.clear();
        self.entries.clear();
        self.error = None;
        let mut de = serde_json::Deserializer::from_str(json);
        let parsed = ValueSeed(&mut *self)
            .deserialize(&mut de)
            .and_then(|()| de.end());
        match parsed {
            Ok(()) => Ok(()),
            Err(e) => Err(self
                .error
                .take()
                .unwrap_or_else(|| CidError::InvalidJson(e.to_string()))),
        }
    }

    fn trim(&mut self) {
        for buf in [&mut self.out, &mut self.scratch] {
            if buf.capacity() > KEEP_CAPACITY {
                *buf = Vec::new();
            }
        }
        if self.entries.capacity() > KEEP_CAPACITY / 16 {
            self.entries = Vec::new();
        }
    }

    /// Records `err` as the reason of the abort and returns the error serde wants.
    fn fail<E: de::Error>(&mut self, err: CidError) -> E {
        let e = E::custom(&err);
        self.error = Some(err);
        e
    }

    fn text(&mut self, s: &str) {
        write_head(&mut self.out, 3, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// Closes the map whose bytes start at `start` and whose entries are `entries[base..]`:
    /// turns `$link` / `$bytes` objects into their CBOR forms, otherwise writes the header
    /// and the entries in canonical order.
    fn finish_map(&mut self, start: usize, base: usize) -> Result<(), CidError> {
        let Encoder {
            out,
            entries,
            scratch,
            ..
        } = self;
        let map = &mut entries[base..];
        let key = |e: &Entry| &out[e.start..e.key_end];
        // Encoded keys: same length ⇔ same content length, so (len, bytes) on the encoding is
        // the DAG-CBOR order on the content.
        map.sort_unstable_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.len().cmp(&kb.len()).then_with(|| ka.cmp(kb))
        });
        for pair in map.windows(2) {
            if key(&pair[0]) == key(&pair[1]) {
                let k = String::from_utf8_lossy(head_payload(key(&pair[0])).unwrap_or_default());
                return Err(CidError::DuplicateKey(k.into_owned()));
            }
        }
        scratch.clear();
        let special = map
            .iter()
            .find(|e| matches!(key(e), b"\x65$link" | b"\x66$bytes"));
        if let Some(e) = special {
            let is_link = key(e) == b"\x65$link";
            let what = if is_link { "$link" } else { "$bytes" };
            let bad = |msg: &str| {
                if is_link {
                    CidError::BadLink(msg.to_owned())
                } else {
                    CidError::BadBytes(msg.to_owned())
                }
            };
            if map.len() != 1 {
                return Err(bad(&format!("{what} object has other keys")));
            }
            let value = &out[e.key_end..e.end];
            let text = match value.first() {
                Some(b) if b >> 5 == 3 => head_payload(value)
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .ok_or_else(|| bad("unreadable string"))?,
                _ => return Err(bad(&format!("{what} value is not a string"))),
            };
            if is_link {
                let cid = Cid::try_from(text).map_err(|err| bad(&format!("{text:?}: {err}")))?;
                scratch.extend_from_slice(&[0xd8, CID_TAG]);
                write_head(scratch, 2, cid.encoded_len() as u64 + 1);
                scratch.push(0x00); // multibase identity prefix, required by DAG-CBOR
                cid.write_bytes(&mut *scratch)
                    .map_err(|err| bad(&err.to_string()))?;
            } else {
                let bytes = base64::engine::general_purpose::STANDARD_NO_PAD_INDIFFERENT
                    .decode(text)
                    .map_err(|err| bad(&err.to_string()))?;
                write_head(scratch, 2, bytes.len() as u64);
                scratch.extend_from_slice(&bytes);
            }
        } else {
            write_head(scratch, 5, map.len() as u64);
            for e in map.iter() {
                scratch.extend_from_slice(&out[e.start..e.end]);
            }
        }
        out.truncate(start);
        out.extend_from_slice(scratch);
        entries.truncate(base);
        Ok(())
    }
}

/// Writes a CBOR head (major type + argument) in its shortest form, as DAG-CBOR requires.
fn write_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[m | 24, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(m | 25);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(m | 26);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// The payload of a definite-length text/byte string written by [`write_head`].
fn head_payload(item: &[u8]) -> Option<&[u8]> {
    let (&first, rest) = item.split_first()?;
    let (len, body) = match first & 0x1f {
        n @ 0..24 => (u64::from(n), rest),
        24 => (u64::from(*rest.first()?), rest.get(1..)?),
        25 => (
            u64::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            rest.get(2..)?,
        ),
        26 => (
            u64::from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)),
            rest.get(4..)?,
        ),
        27 => (
            u64::from_be_bytes(rest.get(..8)?.try_into().ok()?),
            rest.get(8..)?,
        ),
        _ => return None,
    };
    body.get(..usize::try_from(len).ok()?)
}

/// Parses one JSON value and writes its DAG-CBOR form.
struct ValueSeed<'a>(&'a mut Encoder);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an atproto data model value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.out.push(if v { 0xf5 } else { 0xf4 });
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.out.push(0xf6);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        write_head(&mut self.0.out, 0, v);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        match u64::try_from(v) {
            Ok(u) => write_head(&mut self.0.out, 0, u),
            // CBOR negative n is stored as -1 - n, which is !n in two's complement.
            Err(_) => write_head(&mut self.0.out, 1, !v as u64),
        }
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json hands out integers beyond 64 bits as f64 too.
        let err = if v.fract() == 0.0 && v.abs() >= 9.2e18 {
            CidError::IntegerOutOfRange
        } else {
            CidError::Float
        };
        Err(self.0.fail(err))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.text(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let enc = self.0;
        let start = enc.out.len();
        let mut n: u64 = 0;
        while seq.next_element_seed(ValueSeed(&mut *enc))?.is_some() {
            n += 1;
        }
        // `scratch` is idle here: it is only used inside `finish_map`.
        enc.scratch.clear();
        write_head(&mut enc.scratch, 4, n);
        enc.out.splice(start..start, enc.scratch.iter().copied());
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let enc = self.0;
        let start = enc.out.len();
        let base = enc.entries.len();
        loop {
            let key_start = enc.out.len();
            if map.next_key_seed(KeySeed(&mut *enc))?.is_none() {
                break;
            }
            let key_end = enc.out.len();
            map.next_value_seed(ValueSeed(&mut *enc))?;
            enc.entries.push(Entry {
                start: key_start,
                key_end,
                end: enc.out.len(),
            });
        }
        enc.finish_map(start, base).map_err(|e| enc.fail(e))
    }
}

/// Parses one map key and writes it as a CBOR text string.
struct KeySeed<'a>(&'a mut Encoder);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string map key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.text(v);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::verifier::fixtures::{
        BLOB_LINK, FIXTURE_RECORDS, fixture_records, reference_encode,
    };

    #[test]
    fn fixture_encoding_equals_serde_ipld_dagcbor() {
        let records = fixture_records();
        assert_eq!(records.len(), FIXTURE_RECORDS, "every fixture record");
        for (record, _) in records {
            assert_eq!(encode_dag_cbor(&record).unwrap(), reference_encode(&record));
        }
    }

    #[test]
    fn serde_ipld_dagcbor_sorts_length_first_too() {
        let json = r#"{"bb":1,"a":2,"ccc":3,"b":4}"#;
        let ours = encode_dag_cbor(json).unwrap();
        assert_eq!(ours, reference_encode(json));
        // a4 61'a' 02 61'b' 04 62'bb' 01 63'ccc' 03
        assert_eq!(
            ours,
            [
                0xa4, 0x61, b'a', 2, 0x61, b'b', 4, 0x62, b'b', b'b', 1, 0x63, b'c', b'c', b'c', 3
            ]
        );
    }

    #[test]
    fn key_order_in_json_does_not_matter() {
        let a = r#"{"zz":[1,{"b":true,"a":null}],"a":"x","$type":"t"}"#;
        let b = r#"{"$type":"t","a":"x","zz":[1,{"a":null,"b":true}]}"#;
        assert_eq!(encode_dag_cbor(a).unwrap(), encode_dag_cbor(b).unwrap());
        assert_eq!(encode_dag_cbor(a).unwrap(), reference_encode(a));
    }

    #[test]
    fn whitespace_and_escapes_do_not_matter() {
        let a = r#"{ "text" : "caf\u00e9 \"q\"" , "n" : [ 1 , -2 ] }"#;
        let b = r#"{"n":[1,-2],"text":"café \"q\""}"#;
        assert_eq!(encode_dag_cbor(a).unwrap(), encode_dag_cbor(b).unwrap());
    }

    #[test]
    fn integers_use_shortest_heads() {
        let json = r#"[0,23,24,255,256,65535,65536,4294967296,-1,-24,-25,-9223372036854775808,18446744073709551615]"#;
        let cbor = encode_dag_cbor(json).unwrap();
        assert_eq!(cbor, reference_encode(json));
        assert_eq!(&cbor[..4], &[0x8d, 0x00, 0x17, 0x18]);
    }

    #[test]
    fn long_strings_and_arrays() {
        let long = "é".repeat(40_000);
        let items = vec!["1"; 300].join(",");
        let json = format!(r#"{{"s":"{long}","a":[{items}]}}"#);
        assert_eq!(encode_dag_cbor(&json).unwrap(), reference_encode(&json));
    }

    #[test]
    fn link_becomes_tag_42() {
        let json = format!(r#"{{"ref":{{"$link":"{BLOB_LINK}"}}}}"#);
        let cbor = encode_dag_cbor(&json).unwrap();
        assert_eq!(cbor, reference_encode(&json));
        let bin = Cid::try_from(BLOB_LINK).unwrap().to_bytes();
        let mut expected = vec![
            0xa1,
            0x63,
            b'r',
            b'e',
            b'f',
            0xd8,
            42,
            0x58,
            bin.len() as u8 + 1,
            0,
        ];
        expected.extend_from_slice(&bin);
        assert_eq!(cbor, expected);
    }

    #[test]
    fn blob_object_is_a_map_with_a_link() {
        let json = format!(
            r#"{{"$type":"blob","ref":{{"$link":"{BLOB_LINK}"}},"mimeType":"image/jpeg","size":119635}}"#
        );
        assert_eq!(encode_dag_cbor(&json).unwrap(), reference_encode(&json));
    }

    #[test]
    fn bytes_become_a_byte_string() {
        let cbor = encode_dag_cbor(r#"{"b":{"$bytes":"AQID"}}"#).unwrap();
        assert_eq!(cbor, [0xa1, 0x61, b'b', 0x43, 1, 2, 3]);
        // no padding, and padding accepted too
        assert_eq!(
            encode_dag_cbor(r#"{"$bytes":"AQ"}"#).unwrap(),
            encode_dag_cbor(r#"{"$bytes":"AQ=="}"#).unwrap()
        );
        assert_eq!(encode_dag_cbor(r#"{"$bytes":"AQ"}"#).unwrap(), [0x41, 1]);
        assert_eq!(encode_dag_cbor(r#"{"$bytes":""}"#).unwrap(), [0x40]);
    }

    #[test]
    fn malformed_link_and_bytes_are_errors() {
        let cases = [
            (r#"{"$link":"not-a-cid"}"#, "bad_link"),
            (r#"{"$link":5}"#, "bad_link"),
            (
                r#"{"$link":"bafkreias7oxbr6swsuggccmtnqpoeami4jza5x4w3urltn6gzhqf4k6k2e","x":1}"#,
                "bad_link",
            ),
            (r#"{"$bytes":"!!!"}"#, "bad_bytes"),
            (r#"{"$bytes":["AQ"]}"#, "bad_bytes"),
            (r#"{"$bytes":"AQ","y":1}"#, "bad_bytes"),
        ];
        for (json, reason) in cases {
            assert_eq!(
                encode_dag_cbor(json).unwrap_err().reason(),
                reason,
                "{json}"
            );
        }
    }

    #[test]
    fn floats_have_no_encoding() {
        for json in [r#"{"x":1.5}"#, r#"{"x":[1e3]}"#, r#"{"x":1.0}"#] {
            assert_eq!(encode_dag_cbor(json), Err(CidError::Float), "{json}");
        }
        assert_eq!(
            encode_dag_cbor(r#"{"x":18446744073709551616}"#),
            Err(CidError::IntegerOutOfRange)
        );
        assert_eq!(
            encode_dag_cbor(r#"{"x":-9223372036854775809}"#),
            Err(CidError::IntegerOutOfRange)
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        assert_eq!(
            encode_dag_cbor(r#"{"a":1,"b":2,"a":3}"#),
            Err(CidError::DuplicateKey("a".into()))
        );
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert_eq!(
            encode_dag_cbor(r#"{"a":"#).unwrap_err().reason(),
            "invalid_json"
        );
        assert_eq!(
            encode_dag_cbor(r#"{} {}"#).unwrap_err().reason(),
            "invalid_json"
        );
    }

    #[test]
    fn encoder_recovers_after_an_error() {
        let good = r#"{"a":{"b":[1,2]}}"#;
        let before = encode_dag_cbor(good).unwrap();
        assert!(encode_dag_cbor(r#"{"a":{"b":[1,2.5]}}"#).is_err());
        assert!(encode_dag_cbor(r#"{"a":{"$link":"x"}}"#).is_err());
        assert_eq!(encode_dag_cbor(good).unwrap(), before);
    }
}
