//! The identifiers and timestamps of generated events, in atproto's syntax: TIDs (`rev`,
//! `rkey`), `did:plc:` DIDs, CIDs (real ones for records through the verifier's encoder, and
//! well-formed random ones for blobs and for posts we only refer to), RFC 3339 times.
//!
//! Pure functions, no IO. Failure: the only fallible step is computing a record's CID, which
//! cannot fail for the records the generator builds (no floats, no malformed links); if it
//! ever did, the error is logged and the event carries an empty CID, which the tests catch.

use rand::Rng;
use rand::RngExt as _;
use tracing::error;

/// The base32-sortable alphabet of TIDs.
const S32_SORTABLE: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
/// RFC 4648 base32, lower case (multibase `b`), as used by CIDv1 strings.
const BASE32_LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Multicodec of DAG-CBOR (records) and raw (blobs).
pub(crate) const CODEC_DAG_CBOR: u8 = 0x71;
pub(crate) const CODEC_RAW: u8 = 0x55;

/// A TID: 53 bits of microseconds and 10 bits of clock id, 13 base32-sortable characters.
pub(crate) fn tid(time_us: u64, clock_id: u16) -> String {
    let value = ((time_us & ((1 << 53) - 1)) << 10) | u64::from(clock_id & 0x3ff);
    (0..13)
        .rev()
        .map(|i| char::from(S32_SORTABLE[((value >> (i * 5)) & 31) as usize]))
        .collect()
}

/// A random `did:plc:` DID: 24 characters of lower-case base32.
pub(crate) fn random_plc_did<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut did = String::with_capacity(32);
    did.push_str("did:plc:");
    for _ in 0..24 {
        did.push(char::from(BASE32_LOWER[rng.random_range(0..32usize)]));
    }
    did
}

/// Lower-case base32 without padding.
pub(crate) fn base32_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32_LOWER[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_LOWER[((buffer << (5 - bits)) & 31) as usize],
        ));
    }
    out
}

/// A well-formed CIDv1 (sha2-256) of random content: `bafyrei…` for DAG-CBOR, `bafkrei…`
/// for raw blobs.
pub(crate) fn random_cid<R: Rng + ?Sized>(rng: &mut R, codec: u8) -> String {
    let mut bytes = [0u8; 36];
    bytes[..4].copy_from_slice(&[0x01, codec, 0x12, 0x20]);
    rng.fill(&mut bytes[4..]);
    format!("b{}", base32_lower(&bytes))
}

/// The real CID of a record (canonical DAG-CBOR, sha2-256, CIDv1 base32), computed by the
/// verifier's encoder so that generated events pass the ingestor's CID check.
pub(crate) fn record_cid(record_json: &str) -> String {
    match actors::verifier::cid::record_cid(record_json) {
        Ok(cid) => cid,
        Err(err) => {
            error!(%err, "cannot compute the CID of a generated record");
            String::new()
        }
    }
}

/// RFC 3339 UTC with milliseconds, as atproto records use (`2026-05-25T14:23:28.778Z`).
pub(crate) fn rfc3339_millis(time_us: u64) -> String {
    let secs = time_us / 1_000_000;
    let millis = (time_us % 1_000_000) / 1000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    #[test]
    fn tids_look_like_the_network() {
        // A real event of 2026-05-25 had rev 3mmoojp7vgo2g at time_us 1779719009132431.
        let t = tid(1_779_719_009_132_431, 7);
        assert_eq!(t.len(), 13);
        assert!(t.starts_with("3mmoojp"), "{t}");
        assert!(tid(1, 0) < tid(2, 0));
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_779_719_009_132_431),
            "2026-05-25T14:23:29.132Z"
        );
        assert_eq!(
            rfc3339_millis(951_782_400_000_000),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn cids_and_dids() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let cid = random_cid(&mut rng, CODEC_DAG_CBOR);
        assert!(cid.starts_with("bafyrei") && cid.len() == 59, "{cid}");
        assert!(random_cid(&mut rng, CODEC_RAW).starts_with("bafkrei"));
        let did = random_plc_did(&mut rng);
        assert_eq!(did.len(), 32);
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
        let real = record_cid(
            r#"{"$type":"app.bsky.graph.block","createdAt":"2026-05-25T14:23:27.379Z","subject":"did:plc:pgsrzsvisagr7wfqasmu3cgf"}"#,
        );
        assert_eq!(
            real,
            "bafyreibnk2z6xovbsfdcw2ispl7idhen7dxdomemg4i4q6eq6hlb34prte"
        );
    }
}
