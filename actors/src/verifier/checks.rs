//! Syntax checks of a commit's envelope, per the atproto specs (DID, NSID, record key, TID,
//! CID), plus the `rev` clock-skew rule, and the one error type every verifier check returns.
//!
//! Pure functions, no IO: the verifier pool calls them per event (docs/design.md §3). Each
//! failure is a [`CheckError`] with a stable machine code (`reason`, used as the dead-letter
//! reason and as a metric label) and a human message; deciding the event's fate (dead
//! letter, skip and count) is the caller's job. Record-level checks live in `record.rs`,
//! the collection allow/deny matcher in `filter.rs`.

use std::time::Duration;

use ::cid::{Cid, Version};

/// A failed verifier check: a stable code plus a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct CheckError {
    /// Stable machine code, one of the associated constants (`bad_did`, `bad_nsid` …).
    pub reason: &'static str,
    pub message: String,
}

impl CheckError {
    pub const BAD_DID: &'static str = "bad_did";
    pub const BAD_NSID: &'static str = "bad_nsid";
    pub const BAD_RKEY: &'static str = "bad_rkey";
    pub const BAD_REV: &'static str = "bad_rev";
    pub const BAD_CID: &'static str = "bad_cid";
    /// A create/update without a record or CID, or a delete carrying one.
    pub const BAD_ENVELOPE: &'static str = "bad_envelope";
    /// The record is not a JSON object.
    pub const BAD_RECORD: &'static str = "bad_record";
    pub const TYPE_MISMATCH: &'static str = "type_mismatch";
    pub const MISSING_TYPE: &'static str = "missing_type";
    pub const RECORD_TOO_LARGE: &'static str = "record_too_large";
    pub const RECORD_TOO_DEEP: &'static str = "record_too_deep";
    pub const FLOAT_IN_RECORD: &'static str = "float_in_record";
    pub const UNSAFE_INTEGER: &'static str = "unsafe_integer";
    pub const REV_IN_FUTURE: &'static str = "rev_in_future";
    pub const COLLECTION_DENIED: &'static str = "collection_denied";
    /// An identity event failed a hard check (envelope or inner DID, handle, `seq`, `time`).
    pub const IDENTITY_INVALID: &'static str = "identity_invalid";
    /// An account event failed a hard check (envelope or inner DID, `seq`, `time`).
    pub const ACCOUNT_INVALID: &'static str = "account_invalid";
    /// Soft: an account `status` outside the lexicon's known values (the set is open).
    pub const UNKNOWN_STATUS: &'static str = "unknown_status";
    /// Soft: a field the lexicon requires (`seq`, `time`, account `active`) is absent.
    pub const MISSING_FIELD: &'static str = "missing_field";

    pub fn new(reason: &'static str, message: impl Into<String>) -> CheckError {
        CheckError {
            reason,
            message: message.into(),
        }
    }
}

/// Longest DID the atproto spec allows (2 KB).
pub const MAX_DID_LEN: usize = 2048;
/// Longest NSID the atproto spec allows.
pub const MAX_NSID_LEN: usize = 317;
/// Longest record key the atproto spec allows.
pub const MAX_RKEY_LEN: usize = 512;
/// Length of a TID.
pub const TID_LEN: usize = 13;
/// Generous bound on a CID string (a sha2-256 CIDv1 in base32 is 59 chars), so a hostile
/// value is rejected before it is decoded.
pub const MAX_CID_LEN: usize = 256;

/// Quotes a value for an error message, cut short if it is long (hostile input).
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut cut = MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}… ({} bytes)", &s[..cut], s.len())
}

/// Generic DID syntax (`did:<method>:<identifier>`), plus the stricter shapes of the two
/// methods atproto blesses: `did:plc` (24 chars of base32 lower) and `did:web` (a hostname,
/// optionally with a `%3A`-encoded port; no paths).
pub fn check_did(s: &str) -> Result<(), CheckError> {
    let bad = |why: &str| {
        Err(CheckError::new(
            CheckError::BAD_DID,
            format!("{}: {why}", shown(s)),
        ))
    };
    if s.len() > MAX_DID_LEN {
        return bad("longer than 2048 chars");
    }
    let Some(rest) = s.strip_prefix("did:") else {
        return bad("does not start with \"did:\"");
    };
    let Some((method, ident)) = rest.split_once(':') else {
        return bad("no method-specific identifier");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_lowercase()) {
        return bad("method must be lowercase letters");
    }
    if ident.is_empty() {
        return bad("empty identifier");
    }
    let bytes = ident.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b':' | b'-' => {}
            b'%' => {
                let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return bad("'%' not followed by two hex digits");
                }
            }
            _ => return bad("character outside [A-Za-z0-9._:%-]"),
        }
    }
    if ident.ends_with(':') {
        return bad("ends with ':'");
    }
    match method {
        "plc" if ident.len() != 24 || !ident.bytes().all(is_base32_lower) => {
            return bad("did:plc identifier must be 24 chars of [a-z2-7]");
        }
        "web" => {
            let (host, port) = match ident.split_once("%3A") {
                Some((host, port)) => (host, Some(port)),
                None => (ident, None),
            };
            if let Err(why) = check_hostname(host) {
                return bad(&format!("did:web host: {why}"));
            }
            if let Some(port) = port {
                let ok =
                    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
                if !ok {
                    return bad("did:web port must be digits after %3A (no paths)");
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// A hostname as a did:web may carry: `localhost` or a domain name ([`check_domain_name`]).
fn check_hostname(host: &str) -> Result<(), &'static str> {
    if host == "localhost" {
        return Ok(());
    }
    check_domain_name(host)
}

/// A domain name as atproto handles and did:web hosts use it: two or more labels of
/// `[A-Za-z0-9-]` (1–63 chars, no leading/trailing hyphen), total ≤ 253, and a top-level
/// label that does not start with a digit (so no IP addresses).
pub(crate) fn check_domain_name(host: &str) -> Result<(), &'static str> {
    if host.len() > 253 {
        return Err("longer than 253 chars");
    }
    let mut labels = 0;
    for label in host.split('.') {
        check_domain_label(label)?;
        labels += 1;
    }
    if labels < 2 {
        return Err("needs at least two labels");
    }
    if host
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.starts_with(|c: char| c.is_ascii_digit()))
    {
        return Err("top-level label starts with a digit");
    }
    Ok(())
}

/// One label of a domain name: 1–63 chars of `[A-Za-z0-9-]`, no leading/trailing hyphen.
fn check_domain_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() || label.len() > 63 {
        return Err("label must be 1-63 chars");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err("label has a character outside [A-Za-z0-9-]");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("label starts or ends with '-'");
    }
    Ok(())
}

fn is_base32_lower(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'2'..=b'7')
}

/// NSID syntax: a reversed domain authority (≥ 2 labels, ≤ 253 chars, top label not
/// starting with a digit) then a name (1–63 letters/digits, first a letter); ≥ 3 segments,
/// ≤ 317 chars in all. Case is accepted as sent (the authority is case-insensitive by spec,
/// but the network sends it lowercase).
pub fn check_nsid(s: &str) -> Result<(), CheckError> {
    let bad = |why: &str| {
        Err(CheckError::new(
            CheckError::BAD_NSID,
            format!("{}: {why}", shown(s)),
        ))
    };
    if s.len() > MAX_NSID_LEN {
        return bad("longer than 317 chars");
    }
    let Some((authority, name)) = s.rsplit_once('.') else {
        return bad("needs at least 3 segments");
    };
    if authority.len() > 253 {
        return bad("domain authority longer than 253 chars");
    }
    let mut labels = 0;
    for label in authority.split('.') {
        if let Err(why) = check_domain_label(label) {
            return bad(why);
        }
        labels += 1;
    }
    if labels < 2 {
        return bad("needs at least 3 segments");
    }
    if authority.starts_with(|c: char| c.is_ascii_digit()) {
        return bad("first segment starts with a digit");
    }
    if name.is_empty() || name.len() > 63 {
        return bad("name must be 1-63 chars");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return bad("name must start with a letter");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return bad("name must be letters and digits");
    }
    Ok(())
}

/// Record key syntax: 1–512 chars of `[A-Za-z0-9._:~-]`, and not `.` or `..`.
pub fn check_record_key(s: &str) -> Result<(), CheckError> {
    let bad = |why: &str| {
        Err(CheckError::new(
            CheckError::BAD_RKEY,
            format!("{}: {why}", shown(s)),
        ))
    };
    if s.is_empty() || s.len() > MAX_RKEY_LEN {
        return bad("must be 1-512 chars");
    }
    if s == "." || s == ".." {
        return bad("\".\" and \"..\" are not record keys");
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'~' | b'-');
    if !s.bytes().all(ok) {
        return bad("character outside [A-Za-z0-9._:~-]");
    }
    Ok(())
}

/// Value of one base32-sortable digit (`234567abcdefghijklmnopqrstuvwxyz`).
fn s32_digit(b: u8) -> Option<u64> {
    match b {
        b'2'..=b'7' => Some(u64::from(b - b'2')),
        b'a'..=b'z' => Some(u64::from(b - b'a') + 6),
        _ => None,
    }
}

/// TID syntax: 13 base32-sortable chars, the first in `234567abcdefghij` (top bit zero).
pub fn check_tid(s: &str) -> Result<(), CheckError> {
    tid_value(s).map(|_| ())
}

/// The 64-bit integer a TID encodes: a zero top bit, 53 bits of microseconds since the Unix
/// epoch, then 10 bits of clock id. The first-char rule only guarantees the value fits in
/// 64 bits; a set top bit is not rejected here (it reads as a timestamp far in the future).
fn tid_value(s: &str) -> Result<u64, CheckError> {
    let bad = |why: &str| CheckError::new(CheckError::BAD_REV, format!("{}: {why}", shown(s)));
    if s.len() != TID_LEN {
        return Err(bad("a TID is 13 chars"));
    }
    let bytes = s.as_bytes();
    if !matches!(bytes[0], b'2'..=b'7' | b'a'..=b'j') {
        return Err(bad("first char must be one of 234567abcdefghij"));
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        s32_digit(b)
            .map(|d| (acc << 5) | d)
            .ok_or_else(|| bad("char outside 234567a-z"))
    })
}

/// The timestamp of a TID in microseconds since the Unix epoch.
pub fn tid_timestamp_us(tid: &str) -> Result<u64, CheckError> {
    tid_value(tid).map(|v| v >> 10)
}

/// Rejects a `rev` whose TID timestamp is more than `max_skew` ahead of the event's
/// `time_us` (a clock far in the future would poison "latest rev" logic downstream).
/// Revs in the past are fine: repos are old.
pub fn check_rev_skew(rev: &str, time_us: u64, max_skew: Duration) -> Result<(), CheckError> {
    let rev_us = tid_timestamp_us(rev)?;
    let ahead = rev_us.saturating_sub(time_us);
    if u128::from(ahead) > max_skew.as_micros() {
        return Err(CheckError::new(
            CheckError::REV_IN_FUTURE,
            format!(
                "rev {} is {:.1}s ahead of time_us {time_us} (max {:?})",
                shown(rev),
                ahead as f64 / 1e6,
                max_skew
            ),
        ));
    }
    Ok(())
}

/// CID string syntax as Jetstream sends it: CIDv1, multibase base32 lower (`b…`).
pub fn check_cid_string(s: &str) -> Result<(), CheckError> {
    let bad = |why: String| {
        Err(CheckError::new(
            CheckError::BAD_CID,
            format!("{}: {why}", shown(s)),
        ))
    };
    if s.len() > MAX_CID_LEN {
        return bad(format!("longer than {MAX_CID_LEN} chars"));
    }
    let Some(body) = s.strip_prefix('b') else {
        return bad("not multibase base32 lower (must start with 'b')".into());
    };
    if body.is_empty() || !body.bytes().all(is_base32_lower) {
        return bad("not base32 lower".into());
    }
    match Cid::try_from(s) {
        Ok(cid) if cid.version() == Version::V1 => Ok(()),
        Ok(_) => bad("not a CIDv1".into()),
        Err(e) => bad(format!("does not parse: {e}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reason<T>(r: Result<T, CheckError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.reason,
        }
    }

    #[test]
    fn valid_dids() {
        for did in [
            "did:plc:wq4aajammjtxdomz3e23667t",
            "did:web:example.com",
            "did:web:sub.example-host.co.uk",
            "did:web:localhost%3A8080",
            "did:web:pds.example.com%3A443",
            "did:method:val:two",
            "did:m:v",
            "did:key:zQ3shZc2QzApp2oymGvQbzP8eKheVshBHbU4ZYjeXqwSKEn6N",
            "did:example:a%20b",
            "did:example:A._-z",
        ] {
            assert_eq!(reason(check_did(did)), "ok", "{did}");
        }
    }

    #[test]
    fn invalid_dids() {
        for did in [
            "",
            "did:",
            "did:plc",
            "did:plc:",
            "DID:plc:wq4aajammjtxdomz3e23667t",
            "did:PLC:wq4aajammjtxdomz3e23667t",
            "did:pl1:x",
            "did:plc:wq4aajammjtxdomz3e23667",   // 23 chars
            "did:plc:wq4aajammjtxdomz3e23667tt", // 25 chars
            "did:plc:WQ4aajammjtxdomz3e23667t",  // upper case
            "did:plc:wq4aajammjtxdomz3e236671",  // '1' is not base32
            "did:web:example.com:path",
            "did:web:example.com%3A",
            "did:web:example.com%3Aabc",
            "did:web:-bad.com",
            "did:web:com",
            "did:web:127.0.0.1",
            "did:example:trailing:",
            "did:example:trailing%",
            "did:example:bad%zz",
            "did:example:sp ace",
            "did:example:ü",
            "did:example:a/b",
        ] {
            assert_eq!(reason(check_did(did)), "bad_did", "{did}");
        }
        let long = format!("did:example:{}", "a".repeat(MAX_DID_LEN));
        assert_eq!(reason(check_did(&long)), "bad_did");
        let err = check_did(&long).unwrap_err();
        assert!(
            err.message.len() < 200,
            "message is capped: {}",
            err.message.len()
        );
    }

    #[test]
    fn nsids() {
        for ok in [
            "app.bsky.feed.post",
            "com.example.fooBar",
            "net.users.bob.ping",
            "a-0.b-1.c",
            "a.b.c",
            "com.example.fooBar2",
            "place.stream.broadcast.origin",
            "cn.8.lex.stuff",
        ] {
            assert_eq!(reason(check_nsid(ok)), "ok", "{ok}");
        }
        let long_name = format!("com.example.{}", "a".repeat(64));
        let long_label = format!("com.{}.foo", "a".repeat(64));
        for bad in [
            "",
            "com.example",
            "com",
            "com.example.",
            ".com.example.foo",
            "com..example.foo",
            "com.example.3foo",
            "com.example.foo-bar",
            "com.example.foo_bar",
            "com.example.foo*",
            "com.-example.foo",
            "com.example-.foo",
            "1com.example.foo",
            "com.exa mple.foo",
            "com.example.føø",
            long_name.as_str(),
            long_label.as_str(),
        ] {
            assert_eq!(reason(check_nsid(bad)), "bad_nsid", "{bad}");
        }
        let max = format!(
            "{}.{}.{}.{}.name",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62)
        );
        assert_eq!(max.len(), 259);
        assert_eq!(reason(check_nsid(&max)), "bad_nsid", "authority over 253");
    }

    #[test]
    fn record_keys() {
        for ok in ["self", "3mptbyplj5d2a", "a", "~", "..a", "a:b.c_d~e-f", "A"] {
            assert_eq!(reason(check_record_key(ok)), "ok", "{ok}");
        }
        assert_eq!(reason(check_record_key(&"a".repeat(512))), "ok");
        for bad in ["", ".", "..", "a/b", "a b", "a#b", "a?b", "é", "a%20"] {
            assert_eq!(reason(check_record_key(bad)), "bad_rkey", "{bad}");
        }
        assert_eq!(reason(check_record_key(&"a".repeat(513))), "bad_rkey");
    }

    #[test]
    fn tids() {
        for ok in [
            "3mptbypluud2a",
            "2222222222222",
            "jzzzzzzzzzzzz",
            "3jzfcijpj2z2a",
        ] {
            assert_eq!(reason(check_tid(ok)), "ok", "{ok}");
        }
        for bad in [
            "",
            "3mptbypluud2",
            "3mptbypluud2aa",
            "kzzzzzzzzzzzz", // top bit set
            "3mptbypluud2A",
            "3mptbypluud21",
            "3mptbyplu-d2a",
        ] {
            assert_eq!(reason(check_tid(bad)), "bad_rev", "{bad}");
        }
    }

    #[test]
    fn tid_timestamp_matches_real_events() {
        // From the production corpus: rev and the event's time_us, about a second apart.
        let us = tid_timestamp_us("3mptbypluud2a").unwrap();
        let time_us = 1_783_175_888_085_434u64;
        assert!(us.abs_diff(time_us) < 5_000_000, "{us} vs {time_us}");
        assert_eq!(tid_timestamp_us("2222222222222").unwrap(), 0);
        assert_eq!(tid_timestamp_us("2222222222322").unwrap(), 1);
        // The largest TID the charset allows; its top bit (which should be zero) is set, so its
        // timestamp is beyond 53 bits: check_rev_skew sees it as far in the future.
        assert_eq!(tid_timestamp_us("jzzzzzzzzzzzz").unwrap(), (1 << 54) - 1);
        assert_eq!(tid_timestamp_us("bzzzzzzzzzzzz").unwrap(), (1 << 53) - 1);
    }

    #[test]
    fn rev_skew() {
        let rev = "3mptbypluud2a";
        let rev_us = tid_timestamp_us(rev).unwrap();
        let five_min = Duration::from_secs(300);
        assert_eq!(reason(check_rev_skew(rev, rev_us, five_min)), "ok");
        // rev in the past: fine however old
        assert_eq!(
            reason(check_rev_skew(rev, rev_us + 10_000_000_000, five_min)),
            "ok"
        );
        // exactly at the limit: fine; one µs beyond: rejected
        assert_eq!(
            reason(check_rev_skew(rev, rev_us - 300_000_000, five_min)),
            "ok"
        );
        assert_eq!(
            reason(check_rev_skew(rev, rev_us - 300_000_001, five_min)),
            "rev_in_future"
        );
        assert_eq!(reason(check_rev_skew("nope", rev_us, five_min)), "bad_rev");
        assert_eq!(
            reason(check_rev_skew(rev, 0, Duration::ZERO)),
            "rev_in_future"
        );
    }

    #[test]
    fn cid_strings() {
        for ok in [
            "bafyreiguce4jh7kcbmof3pmcvasifqtw24b6isakj5ve5ga2b4z4alpc4i",
            "bafkreias7oxbr6swsuggccmtnqpoeami4jza5x4w3urltn6gzhqf4k6k2e",
        ] {
            assert_eq!(reason(check_cid_string(ok)), "ok", "{ok}");
        }
        for bad in [
            "",
            "b",
            "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n", // v0, base58
            "BAFYREIGUCE4JH7KCBMOF3PMCVASIFQTW24B6ISAKJ5VE5GA2B4Z4ALPC4I", // base32 upper
            "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA", // base58btc
            "bafyreiguce4jh7kcbmof3pmcvasifqtw24b6isakj5ve5ga2b4z4alpc4", // truncated
            "bafyrei!",
        ] {
            assert_eq!(reason(check_cid_string(bad)), "bad_cid", "{bad}");
        }
        assert_eq!(
            reason(check_cid_string(&format!("b{}", "a".repeat(300)))),
            "bad_cid"
        );
    }

    #[test]
    fn check_error_displays_code_and_message() {
        let e = CheckError::new(CheckError::BAD_DID, "x");
        assert_eq!(e.to_string(), "bad_did: x");
    }
}
