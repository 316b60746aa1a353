//! Bounded zstd decompression of binary frames (`compress=true`), with the Jetstream
//! dictionary. Pure apart from its reusable context and buffer.
//!
//! Bounds: the output buffer is allocated once, at `jetstream.max_decompressed_bytes`, and
//! never grows. A frame whose header declares a bigger content size is refused before any
//! work; a frame without a declared size that would not fit stops with zstd's
//! "destination too small". Either way: [`InflateError::TooLarge`], dead-lettered as
//! `zstd_too_large`. Anything else zstd rejects is [`InflateError::Corrupt`] (`zstd_error`).

use zstd::zstd_safe::{self, DCtx, zstd_sys::ZSTD_ErrorCode};

/// A decompression context with the dictionary loaded, and its output buffer.
pub struct Inflater {
    dctx: DCtx<'static>,
    buf: Vec<u8>,
    max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// `declared`: the content size the frame header announced, when it did.
    #[error("frame inflates beyond {max} bytes (declared size {declared:?})")]
    TooLarge { declared: Option<u64>, max: usize },
    #[error("zstd: {0}")]
    Corrupt(String),
}

impl Inflater {
    /// `dictionary`: the Jetstream dictionary (`None`: plain zstd, for tests); `max`: the
    /// largest output accepted.
    pub fn new(dictionary: Option<&[u8]>, max: usize) -> Result<Inflater, String> {
        let mut dctx = DCtx::create();
        if let Some(dict) = dictionary {
            dctx.load_dictionary(dict)
                .map_err(|code| format!("cannot load the zstd dictionary: {}", name(code)))?;
        }
        Ok(Inflater {
            dctx,
            buf: Vec::with_capacity(max),
            max,
        })
    }

    /// Decompresses one frame into the reused buffer.
    pub fn inflate(&mut self, src: &[u8]) -> Result<&[u8], InflateError> {
        let too_large = |declared| InflateError::TooLarge {
            declared,
            max: self.max,
        };
        match zstd_safe::get_frame_content_size(src) {
            Ok(Some(n)) if n > self.max as u64 => return Err(too_large(Some(n))),
            Ok(_) => {}
            Err(_) => return Err(InflateError::Corrupt("not a zstd frame".into())),
        }
        self.buf.clear();
        // Writes into the spare capacity only (allocated once at `max`): never reallocates.
        match self.dctx.decompress(&mut self.buf, src) {
            Ok(n) if n <= self.max => Ok(&self.buf[..n]),
            Ok(_) => Err(too_large(None)),
            Err(code)
                if zstd_safe::is_error_kind(code, ZSTD_ErrorCode::ZSTD_error_dstSize_tooSmall) =>
            {
                Err(too_large(None))
            }
            Err(code) => Err(InflateError::Corrupt(name(code).to_owned())),
        }
    }
}

fn name(code: usize) -> &'static str {
    zstd_safe::get_error_name(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn event(len: usize) -> Vec<u8> {
        let mut s = br#"{"did":"did:plc:x","time_us":1,"kind":"commit","text":""#.to_vec();
        s.extend(std::iter::repeat_n(b'a', len));
        s.extend_from_slice(b"\"}");
        s
    }

    #[test]
    fn round_trips_and_reuses_the_buffer() {
        let mut inf = Inflater::new(None, 64 * 1024).expect("context");
        for len in [10, 5_000, 60_000, 3] {
            let plain = event(len);
            let packed = zstd::bulk::compress(&plain, 3).expect("compress");
            assert_eq!(inf.inflate(&packed).expect("inflates"), &plain[..]);
        }
        assert_eq!(inf.buf.capacity(), 64 * 1024, "never grew");
    }

    #[test]
    fn a_declared_size_over_the_limit_is_refused_before_inflating() {
        let mut inf = Inflater::new(None, 4096).expect("context");
        let plain = event(10_000);
        let packed = zstd::bulk::compress(&plain, 3).expect("compress");
        assert_eq!(
            inf.inflate(&packed),
            Err(InflateError::TooLarge {
                declared: Some(plain.len() as u64),
                max: 4096
            })
        );
    }

    #[test]
    fn an_undeclared_size_over_the_limit_stops_at_the_limit() {
        // The streaming encoder does not write the content size into the header.
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).expect("encoder");
        enc.write_all(&event(1_000_000)).expect("write");
        let packed = enc.finish().expect("finish");
        assert_eq!(
            zstd_safe::get_frame_content_size(&packed).ok(),
            Some(None),
            "no declared size"
        );
        let mut inf = Inflater::new(None, 4096).expect("context");
        assert_eq!(
            inf.inflate(&packed),
            Err(InflateError::TooLarge {
                declared: None,
                max: 4096
            })
        );
        assert_eq!(inf.buf.capacity(), 4096, "never grew");
    }

    #[test]
    fn garbage_and_truncated_frames_are_corrupt() {
        let mut inf = Inflater::new(None, 4096).expect("context");
        assert!(matches!(
            inf.inflate(b"definitely not zstd"),
            Err(InflateError::Corrupt(_))
        ));
        let packed = zstd::bulk::compress(&event(2_000), 3).expect("compress");
        assert!(matches!(
            inf.inflate(&packed[..packed.len() / 2]),
            Err(InflateError::Corrupt(_))
        ));
    }

    #[test]
    fn the_jetstream_dictionary_is_needed_for_its_frames() {
        let dict = crate::jetstream::config::JETSTREAM_V1_ZSTD_DICTIONARY;
        let plain = event(300);
        let packed = zstd::bulk::Compressor::with_dictionary(3, dict)
            .and_then(|mut c| c.compress(&plain))
            .expect("compress with the dictionary");
        let mut with = Inflater::new(Some(dict), 4096).expect("context");
        assert_eq!(with.inflate(&packed).expect("inflates"), &plain[..]);
        let mut without = Inflater::new(None, 4096).expect("context");
        assert!(matches!(
            without.inflate(&packed),
            Err(InflateError::Corrupt(_))
        ));
    }
}
