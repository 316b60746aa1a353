//! Typed settings of the Jetstream reader (`[jetstream]` in the config file). Read and
//! validated by the edge (`src/settings.rs`); the reader only consumes them.
//!
//! Failure: [`ReaderConfig::validate`] names the key of the first value that cannot work. It
//! also reads the zstd dictionary file when one is configured (the one file this section
//! points at), checks that it is a zstd dictionary and keeps its bytes, so the reader never
//! reads files itself and a bad path stops the process at start rather than at the first
//! compressed frame. Without a configured file the Jetstream v1 dictionary embedded in the
//! binary is used, so `compress = true` works out of the box.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::subscribe::{FilterError, Filters};

/// First four bytes of a zstd dictionary (`0xEC30A437`, little endian).
pub const ZSTD_DICT_MAGIC: [u8; 4] = [0x37, 0xA4, 0x30, 0xEC];

/// The Jetstream v1 zstd dictionary (`pkg/models/zstd_dictionary` of the Jetstream v1 source;
/// provenance in `actors/assets/PROVENANCE.md`): what `compress=true` frames are inflated with
/// unless `jetstream.zstd_dictionary` names another file. Embedded so that a binary or an
/// image needs no file beside it.
pub const JETSTREAM_V1_ZSTD_DICTIONARY: &[u8] = include_bytes!("../../assets/zstd_dictionary");

/// `[jetstream]`: where to subscribe and how to batch, reconnect and detect dead hosts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReaderConfig {
    /// Jetstream subscribe URLs (`wss://host/subscribe`), tried in order.
    pub endpoints: Vec<String>,
    /// Collections to receive (NSIDs or `prefix.*`); empty = all.
    pub wanted_collections: Vec<String>,
    /// Accounts to receive; empty = all.
    pub wanted_dids: Vec<String>,
    /// How far before the committed cursor every dial starts, so nothing at the edge of a
    /// disconnect is missed (the dedupe index hides the overlap).
    #[serde(with = "crate::model::duration")]
    pub rewind: Duration,
    /// Cursor to start from when Redis holds none (`None` = live tail).
    pub initial_cursor: Option<u64>,
    /// A batch is sent when it holds this many frames …
    pub batch_max_events: usize,
    /// … or when its first frame has waited this long.
    #[serde(with = "crate::model::duration")]
    pub batch_linger: Duration,
    /// Batches between the socket and Redis at most; when all are in flight, reading stops.
    pub max_in_flight_batches: usize,
    #[serde(with = "crate::model::duration")]
    pub connect_timeout: Duration,
    /// A ping is sent after this long without any frame.
    #[serde(with = "crate::model::duration")]
    pub ping_interval: Duration,
    /// The session is declared dead after this long without any frame (pongs count).
    #[serde(with = "crate::model::duration")]
    pub idle_timeout: Duration,
    /// First reconnect delay ceiling (full jitter below it), doubled per failure …
    #[serde(with = "crate::model::duration")]
    pub backoff_min: Duration,
    /// … up to this cap.
    #[serde(with = "crate::model::duration")]
    pub backoff_max: Duration,
    /// Largest WebSocket message accepted. A bigger one is refused by the WebSocket layer
    /// before its payload is read (never allocated), dead-lettered as `frame_too_large`, and
    /// skipped (see `oversize.rs`).
    pub max_frame_bytes: usize,
    /// Ask for zstd-compressed frames (`compress=true`), inflated with the dictionary below.
    pub compress: bool,
    /// Overrides the embedded Jetstream v1 zstd dictionary
    /// ([`JETSTREAM_V1_ZSTD_DICTIONARY`]) with a file: only for a host that compresses with
    /// another one. `None` (the default) uses the embedded one.
    pub zstd_dictionary: Option<PathBuf>,
    /// A compressed frame may inflate to at most this many bytes; a bigger one is
    /// dead-lettered (`zstd_too_large`) without being inflated.
    pub max_decompressed_bytes: usize,
    /// Consecutive failed sessions on one endpoint before the reader moves to the next one
    /// (an idle timeout moves it at once).
    pub failover_after: u32,
    /// Rewind of the first dial on another endpoint, instead of `rewind` (never less):
    /// hosts stamp `time_us` with their own clocks, which differ by seconds.
    #[serde(with = "crate::model::duration")]
    pub failover_rewind: Duration,
    /// Always connect with `requireHello=true` and send the filters as the first
    /// `options_update` (done anyway when the URL would be too long).
    pub require_hello: bool,
    /// Raise a `gap` alarm when the first event of a session is this much newer than the
    /// cursor the reader asked for (plus its rewind): the host no longer had those events.
    /// "0s" turns the alarm off.
    #[serde(with = "crate::model::duration")]
    pub gap_threshold: Duration,
    /// A frame whose `time_us` lies further than this beyond the wall clock is dead-lettered
    /// (`time_in_future`): a clock that wrong must never reach the cursor (the next dial
    /// would start in the future and receive nothing), the dedupe scores or the buckets.
    #[serde(with = "crate::model::duration")]
    pub future_tolerance: Duration,
    /// An event whose `time_us` jumps further than this ahead of the session's position
    /// waits (up to 1 s) for the next event: if that one is older, the jump was a lie and the
    /// frame is dead-lettered (`time_out_of_order`) instead of becoming the cursor. "0s" off.
    #[serde(with = "crate::model::duration")]
    pub max_time_jump: Duration,
    /// Frames arriving but none of them moving the position (all dead letters, skipped or
    /// older than the dial cursor) for this long: the reader is `stalled` in status and
    /// `/readyz` answers 503. "0s" turns the check off.
    #[serde(with = "crate::model::duration")]
    pub stall_timeout: Duration,
    /// Bytes of frames between the socket and Redis at most (all batches in flight); when
    /// they are all taken, reading stops. With `max_in_flight_batches` this bounds memory for
    /// any mix of frame sizes; at least `max_frame_bytes`.
    pub max_in_flight_bytes: usize,
    /// Replay mode only (set by `replay --until`, not by the file): stop after this cursor.
    #[serde(skip)]
    pub until: Option<u64>,
    /// The dictionary file's bytes once read by `validate` (or the reader's first dial).
    #[serde(skip)]
    dictionary: DictionaryCache,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            endpoints: vec!["wss://jetstream2.us-east.bsky.network/subscribe".to_owned()],
            wanted_collections: Vec::new(),
            wanted_dids: Vec::new(),
            rewind: Duration::from_secs(5),
            initial_cursor: None,
            batch_max_events: 512,
            batch_linger: Duration::from_millis(5),
            max_in_flight_batches: 16,
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_frame_bytes: 2 * 1024 * 1024,
            compress: false,
            zstd_dictionary: None,
            max_decompressed_bytes: 4 * 1024 * 1024,
            failover_after: 3,
            failover_rewind: Duration::from_secs(10),
            require_hello: false,
            gap_threshold: Duration::from_secs(60),
            future_tolerance: Duration::from_secs(300),
            max_time_jump: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(180),
            max_in_flight_bytes: 64 * 1024 * 1024,
            until: None,
            dictionary: DictionaryCache::default(),
        }
    }
}

/// The dictionary in use, remembered with the path it came from (`None`: the embedded one; a
/// config whose path changes after validation reads the new file).
#[derive(Clone, Default)]
struct DictionaryCache(OnceLock<(Option<PathBuf>, Arc<[u8]>)>);

impl std::fmt::Debug for DictionaryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some((Some(path), bytes)) => write!(f, "{} ({} bytes)", path.display(), bytes.len()),
            Some((None, bytes)) => write!(f, "embedded ({} bytes)", bytes.len()),
            None => f.write_str("not loaded"),
        }
    }
}

/// A `[jetstream]` value that cannot work, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ReaderConfigError {
    #[error("jetstream.endpoints: at least one endpoint is required")]
    NoEndpoint,
    #[error("jetstream.endpoints: {0:?} is not a ws:// or wss:// URL")]
    BadEndpoint(String),
    #[error("jetstream.{key}: must be at least {min}")]
    TooSmall { key: &'static str, min: u64 },
    #[error("jetstream.idle_timeout must be longer than jetstream.ping_interval")]
    IdleNotAbovePing,
    #[error("jetstream.backoff_max must be at least jetstream.backoff_min")]
    BackoffOrder,
    #[error(
        "jetstream.max_in_flight_bytes ({budget}) must be at least jetstream.max_frame_bytes ({frame}): one frame must fit"
    )]
    ByteBudgetBelowFrame { budget: usize, frame: usize },
    #[error("jetstream.zstd_dictionary: {path}: {reason}")]
    Dictionary { path: String, reason: String },
    #[error("jetstream.{0}")]
    Filter(#[from] FilterError),
}

impl ReaderConfig {
    pub fn validate(&self) -> Result<(), ReaderConfigError> {
        if self.endpoints.is_empty() {
            return Err(ReaderConfigError::NoEndpoint);
        }
        for e in &self.endpoints {
            let ok = url::Url::parse(e)
                .map(|u| matches!(u.scheme(), "ws" | "wss") && u.host_str().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(ReaderConfigError::BadEndpoint(e.clone()));
            }
        }
        let minimums: [(&'static str, u64, u64); 5] = [
            ("batch_max_events", self.batch_max_events as u64, 1),
            (
                "max_in_flight_batches",
                self.max_in_flight_batches as u64,
                1,
            ),
            ("max_frame_bytes", self.max_frame_bytes as u64, 1024),
            (
                "max_decompressed_bytes",
                self.max_decompressed_bytes as u64,
                1024,
            ),
            ("failover_after", u64::from(self.failover_after), 1),
        ];
        for (key, value, min) in minimums {
            if value < min {
                return Err(ReaderConfigError::TooSmall { key, min });
            }
        }
        if self.idle_timeout <= self.ping_interval {
            return Err(ReaderConfigError::IdleNotAbovePing);
        }
        if self.backoff_max < self.backoff_min {
            return Err(ReaderConfigError::BackoffOrder);
        }
        if self.max_in_flight_bytes < self.max_frame_bytes {
            return Err(ReaderConfigError::ByteBudgetBelowFrame {
                budget: self.max_in_flight_bytes,
                frame: self.max_frame_bytes,
            });
        }
        if self.zstd_dictionary.is_some() {
            self.load_dictionary()?;
        }
        self.filters().validate()?;
        Ok(())
    }

    pub fn filters(&self) -> Filters {
        Filters {
            wanted_collections: self.wanted_collections.clone(),
            wanted_dids: self.wanted_dids.clone(),
        }
    }

    /// The rewind of the first dial on another endpoint: `failover_rewind`, never less than
    /// `rewind`.
    pub fn effective_failover_rewind(&self) -> Duration {
        self.failover_rewind.max(self.rewind)
    }

    /// The dictionary compressed frames are inflated with: the file at `zstd_dictionary`
    /// (read once and checked to be a zstd dictionary) when one is set, otherwise the
    /// embedded [`JETSTREAM_V1_ZSTD_DICTIONARY`].
    pub fn load_dictionary(&self) -> Result<Arc<[u8]>, ReaderConfigError> {
        if let Some((cached, bytes)) = self.dictionary.0.get()
            && *cached == self.zstd_dictionary
        {
            return Ok(bytes.clone());
        }
        let bytes = match &self.zstd_dictionary {
            Some(path) => read_dictionary(path)?,
            None => Arc::from(JETSTREAM_V1_ZSTD_DICTIONARY),
        };
        // A second path (config changed after validation) is read each time; rare.
        let _ = self
            .dictionary
            .0
            .set((self.zstd_dictionary.clone(), bytes.clone()));
        Ok(bytes)
    }
}

fn read_dictionary(path: &Path) -> Result<Arc<[u8]>, ReaderConfigError> {
    let fail = |reason: String| ReaderConfigError::Dictionary {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    if bytes.len() < 8 || bytes[..4] != ZSTD_DICT_MAGIC {
        return Err(fail(
            "not a zstd dictionary (it must start with the magic number 0xEC30A437)".into(),
        ));
    }
    Ok(Arc::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(cfg: &ReaderConfig) -> String {
        cfg.validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn defaults_are_valid() {
        assert!(ReaderConfig::default().validate().is_ok());
    }

    #[test]
    fn the_embedded_dictionary_is_the_jetstream_v1_one() {
        use sha2::Digest as _;
        let d = JETSTREAM_V1_ZSTD_DICTIONARY;
        assert_eq!(d.len(), 112_640);
        assert_eq!(d[..4], ZSTD_DICT_MAGIC);
        let id = u32::from_le_bytes([d[4], d[5], d[6], d[7]]);
        assert_eq!(id, 1_612_007_021, "the v1 dictionary ID");
        assert_eq!(
            hex::encode(sha2::Sha256::digest(d)),
            "b8d77b46933aceecbdd5275a01241efc985c970c78162b8150cf67a26522f70c",
            "the bytes of actors/assets/PROVENANCE.md"
        );
    }

    #[test]
    fn compress_without_a_file_uses_the_embedded_dictionary() {
        let cfg = ReaderConfig {
            compress: true,
            ..ReaderConfig::default()
        };
        assert!(cfg.validate().is_ok(), "{}", err(&cfg));
        let loaded = cfg.load_dictionary().expect("the embedded dictionary");
        assert_eq!(&loaded[..], JETSTREAM_V1_ZSTD_DICTIONARY);
        // It reads what the Jetstream v1 dictionary wrote.
        let plain = br#"{"did":"did:plc:x","time_us":1,"kind":"commit"}"#;
        let packed = zstd::bulk::Compressor::with_dictionary(3, JETSTREAM_V1_ZSTD_DICTIONARY)
            .and_then(|mut c| c.compress(plain))
            .expect("compress");
        let mut inflater = super::super::inflate::Inflater::new(Some(&loaded), 4096)
            .expect("the dictionary loads");
        assert_eq!(inflater.inflate(&packed).expect("inflates"), &plain[..]);
    }

    #[test]
    fn a_dictionary_file_overrides_the_embedded_one_and_must_be_a_dictionary() {
        let mut cfg = ReaderConfig {
            compress: true,
            ..ReaderConfig::default()
        };
        let dir = std::env::temp_dir().join(format!("jsi-dict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        cfg.zstd_dictionary = Some(dir.join("missing"));
        let e = err(&cfg);
        assert!(
            e.starts_with("jetstream.zstd_dictionary: ") && e.contains("missing"),
            "{e}"
        );

        let fake = dir.join("not-a-dict");
        std::fs::write(&fake, b"hello, this is text").expect("write");
        cfg.zstd_dictionary = Some(fake);
        assert!(err(&cfg).contains("not a zstd dictionary"));

        let real = dir.join("dict");
        let mut bytes = ZSTD_DICT_MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        std::fs::write(&real, &bytes).expect("write");
        cfg.zstd_dictionary = Some(real.clone());
        assert!(cfg.validate().is_ok());
        std::fs::remove_file(&real).expect("remove");
        let loaded = cfg.load_dictionary().expect("cached after validate");
        assert_eq!(
            &loaded[..],
            &bytes[..],
            "read once, kept, not the embedded one"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn limits_name_the_key_and_the_count() {
        let cfg = ReaderConfig {
            wanted_dids: (0..10_001).map(|i| format!("did:plc:{i:024}")).collect(),
            ..ReaderConfig::default()
        };
        let e = err(&cfg);
        assert!(
            e.contains("jetstream.wanted_dids") && e.contains("10001"),
            "{e}"
        );
        let cfg = ReaderConfig {
            failover_after: 0,
            ..ReaderConfig::default()
        };
        assert_eq!(err(&cfg), "jetstream.failover_after: must be at least 1");
    }

    #[test]
    fn failover_rewind_is_never_below_rewind() {
        let cfg = ReaderConfig {
            rewind: Duration::from_secs(30),
            ..ReaderConfig::default()
        };
        assert_eq!(cfg.effective_failover_rewind(), Duration::from_secs(30));
        assert_eq!(
            ReaderConfig::default().effective_failover_rewind(),
            Duration::from_secs(10)
        );
    }
}
