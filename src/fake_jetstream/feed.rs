//! The events a connection can be fed: a file's lines loaded once and shared ([`Line`]s in an
//! `Arc`), or the live generator's ring buffer ([`super::live::LiveHub`]), behind one
//! [`Feed`] cursor per connection.
//!
//! A line is kept as the exact bytes of the file (a text frame when it is UTF-8, a binary
//! frame otherwise) plus the few fields the filters and the cursor need. A line that is not a
//! Jetstream event (not JSON, no `time_us`) is still served, verbatim: it belongs with the
//! previous event, taking its `time_us` for cursor skipping and its fate under the filters.
//!
//! A server with its own clock (`clock_offset_us`) gets its lines with the top-level
//! `time_us` rewritten at load (`clock.rs`), and a server with a retention keeps only the
//! recent lines.
//!
//! Failure: loading never fails on content (any bytes are a line); only reading the file can,
//! which `start` reports.

use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

use super::clock::shift_time_us;
use super::live::LiveHub;

/// Event kind, as far as the filters care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Commit,
    Identity,
    Account,
    Other,
}

/// What the filters need to know about an event.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub did: Option<Box<str>>,
    pub kind: Kind,
    /// `commit.collection`, for commits.
    pub collection: Option<Box<str>>,
}

/// The bytes sent for one line.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Text(Utf8Bytes),
    /// A line that is not valid UTF-8, sent as a binary frame of its raw bytes.
    Binary(Bytes),
}

/// One servable line.
#[derive(Debug)]
pub(crate) struct Line {
    pub payload: Payload,
    /// The event's `time_us`, or the previous event's for a line that is not an event.
    pub time_us: u64,
    /// `None` for a line that is not an event.
    pub meta: Option<Meta>,
}

impl Line {
    /// Builds a line from raw bytes; `prev_time_us` is the time of the previous event.
    pub fn from_bytes(bytes: &[u8], prev_time_us: u64) -> Line {
        let parsed = probe(bytes);
        let time_us = parsed.as_ref().map_or(prev_time_us, |(t, _)| *t);
        let payload = match std::str::from_utf8(bytes) {
            Ok(text) => Payload::Text(Utf8Bytes::from(text.to_owned())),
            Err(_) => Payload::Binary(Bytes::copy_from_slice(bytes)),
        };
        Line {
            payload,
            time_us,
            meta: parsed.map(|(_, meta)| meta),
        }
    }

    /// Length in bytes of the uncompressed frame.
    pub fn len(&self) -> usize {
        match &self.payload {
            Payload::Text(t) => t.len(),
            Payload::Binary(b) => b.len(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.payload {
            Payload::Text(t) => t.as_bytes(),
            Payload::Binary(b) => b,
        }
    }

    /// The frame that sends this line uncompressed.
    pub fn message(&self) -> Message {
        match &self.payload {
            Payload::Text(t) => Message::Text(t.clone()),
            Payload::Binary(b) => Message::Binary(b.clone()),
        }
    }
}

#[derive(Deserialize)]
struct Probe {
    did: Option<String>,
    time_us: Option<u64>,
    kind: Option<String>,
    commit: Option<CommitProbe>,
}

#[derive(Deserialize)]
struct CommitProbe {
    collection: Option<String>,
}

/// `(time_us, meta)` of a Jetstream event, or `None` when the bytes are not one.
fn probe(bytes: &[u8]) -> Option<(u64, Meta)> {
    let p: Probe = serde_json::from_slice(bytes).ok()?;
    let time_us = p.time_us?;
    let kind = match p.kind.as_deref() {
        Some("commit") => Kind::Commit,
        Some("identity") => Kind::Identity,
        Some("account") => Kind::Account,
        _ => Kind::Other,
    };
    let meta = Meta {
        did: p.did.map(String::into_boxed_str),
        kind,
        collection: p
            .commit
            .and_then(|c| c.collection)
            .map(String::into_boxed_str),
    };
    Some((time_us, meta))
}

/// Splits a file's bytes into lines (`\n`, with a trailing `\r` removed), skipping empty ones,
/// with every event's `time_us` shifted by `offset_us`.
pub(crate) fn lines_from_bytes(bytes: &[u8], offset_us: i64) -> Vec<Arc<Line>> {
    let mut out = Vec::new();
    let mut prev_time = 0;
    for raw in bytes.split(|&b| b == b'\n') {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        let shifted = shift_time_us(raw, offset_us);
        let line = Line::from_bytes(shifted.as_deref().unwrap_or(raw), prev_time);
        prev_time = line.time_us;
        out.push(Arc::new(line));
    }
    out
}

/// The same for an in-memory file given as strings (each string may hold several lines).
pub(crate) fn lines_from_strings(strings: &[String], offset_us: i64) -> Vec<Arc<Line>> {
    let mut joined = Vec::new();
    for s in strings {
        joined.extend_from_slice(s.as_bytes());
        joined.push(b'\n');
    }
    lines_from_bytes(&joined, offset_us)
}

/// Keeps the lines at most `retention_us` older than the newest one (all without a
/// retention). Cursors older than what is kept then start at the oldest kept line.
pub(crate) fn retain(lines: Vec<Arc<Line>>, retention_us: Option<u64>) -> Vec<Arc<Line>> {
    let Some(retention) = retention_us else {
        return lines;
    };
    let newest = lines.iter().map(|l| l.time_us).max().unwrap_or(0);
    let oldest_kept = newest.saturating_sub(retention);
    lines
        .into_iter()
        .filter(|l| l.time_us >= oldest_kept)
        .collect()
}

/// Where the events of a server come from, shared by every connection.
#[derive(Clone)]
pub(crate) enum SourceData {
    File(Arc<Vec<Arc<Line>>>),
    Live(Arc<LiveHub>),
}

/// One connection's position in the source.
pub(crate) enum Feed {
    File {
        lines: Arc<Vec<Arc<Line>>>,
        next: usize,
    },
    Live {
        hub: Arc<LiveHub>,
        next_seq: u64,
        /// Events taken from the hub under one lock, not yet sent.
        batch: std::collections::VecDeque<Arc<Line>>,
        updates: watch::Receiver<u64>,
    },
}

/// How many live events a connection takes from the hub per lock.
const LIVE_BATCH: usize = 256;

impl Feed {
    /// Positions a new connection. File: from the first line with `time_us >= cursor` (from
    /// the start without a cursor), not counting lines more than a day past the wall clock or
    /// more than a minute ahead of the line after them: a host seeks by its own clock, so a
    /// frame carrying a wild time (hostile, from the future) does not drag the older lines
    /// after it back into every resume. Live: from the buffered event at the cursor (clamped to the
    /// oldest one kept), or from the next generated event without a cursor.
    pub fn new(source: &SourceData, cursor: Option<u64>) -> Feed {
        match source {
            SourceData::File(lines) => {
                let next = match cursor {
                    None => 0,
                    Some(c) => {
                        let wild = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(u64::MAX, |d| {
                                u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
                            })
                            .saturating_add(86_400_000_000);
                        // A line more than a minute ahead of the line after it carries a
                        // wild time: a host stores events by its own clock, so seeking by
                        // time never lands on it.
                        let outlier = |i: usize| {
                            lines
                                .get(i + 1)
                                .is_some_and(|n| lines[i].time_us > n.time_us + 60_000_000)
                        };
                        (0..lines.len())
                            .find(|&i| {
                                lines[i].time_us >= c && lines[i].time_us <= wild && !outlier(i)
                            })
                            .unwrap_or(lines.len())
                    }
                };
                Feed::File {
                    lines: Arc::clone(lines),
                    next,
                }
            }
            SourceData::Live(hub) => Feed::Live {
                hub: Arc::clone(hub),
                updates: hub.subscribe(),
                next_seq: hub.start_seq(cursor),
                batch: std::collections::VecDeque::new(),
            },
        }
    }

    /// The next line if one is ready now.
    pub fn next_ready(&mut self) -> Option<Arc<Line>> {
        match self {
            Feed::File { lines, next } => {
                let line = lines.get(*next).cloned();
                if line.is_some() {
                    *next += 1;
                }
                line
            }
            Feed::Live {
                hub,
                next_seq,
                batch,
                ..
            } => {
                if batch.is_empty() {
                    *next_seq = hub.read(*next_seq, LIVE_BATCH, batch);
                }
                batch.pop_front()
            }
        }
    }

    /// Waits for the next line. `None` means the source has ended (end of file, or the live
    /// generator stopped).
    pub async fn next(&mut self) -> Option<Arc<Line>> {
        loop {
            if let Feed::Live { updates, .. } = self {
                // Mark the current state seen before looking, so a push after the look wakes us.
                updates.borrow_and_update();
            }
            if let Some(line) = self.next_ready() {
                return Some(line);
            }
            match self {
                Feed::File { .. } => return None,
                Feed::Live { updates, .. } => {
                    if updates.changed().await.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_bytes_and_inherit_time() {
        let data = b"{\"did\":\"did:plc:a\",\"time_us\":10,\"kind\":\"commit\",\"commit\":{\"collection\":\"app.bsky.feed.like\"}}\r\n\nnot json\n\xff\xfe\n{\"time_us\":20,\"kind\":\"identity\"}";
        let lines = lines_from_bytes(data, 0);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].time_us, 10);
        assert!(lines[0].as_bytes().ends_with(b"}}"));
        let meta = lines[0].meta.as_ref().expect("an event");
        assert_eq!(meta.collection.as_deref(), Some("app.bsky.feed.like"));
        assert_eq!(lines[1].time_us, 10);
        assert!(lines[1].meta.is_none());
        assert!(matches!(lines[2].payload, Payload::Binary(_)));
        assert_eq!(lines[2].as_bytes(), b"\xff\xfe");
        assert_eq!(lines[3].time_us, 20);
    }

    #[test]
    fn file_cursor_starts_at_first_line_at_or_after() {
        let lines = lines_from_strings(
            &[
                r#"{"time_us":10}"#.to_owned(),
                "junk".to_owned(),
                r#"{"time_us":30}"#.to_owned(),
                r#"{"time_us":20}"#.to_owned(),
            ],
            0,
        );
        let source = SourceData::File(Arc::new(lines));
        let mut feed = Feed::new(&source, Some(25));
        let first = feed.next_ready().expect("a line");
        assert_eq!(first.time_us, 30);
        let mut feed = Feed::new(&source, Some(11));
        assert_eq!(feed.next_ready().map(|l| l.time_us), Some(30));
        let mut feed = Feed::new(&source, Some(31));
        assert!(feed.next_ready().is_none());
    }

    #[test]
    fn retention_keeps_only_recent_lines() {
        let lines = lines_from_strings(
            &(1..=10)
                .map(|t| format!("{{\"time_us\":{}}}", t * 100))
                .collect::<Vec<_>>(),
            0,
        );
        let kept = retain(lines, Some(250));
        let times: Vec<u64> = kept.iter().map(|l| l.time_us).collect();
        assert_eq!(times, vec![800, 900, 1000]);
        let source = SourceData::File(Arc::new(kept));
        let mut feed = Feed::new(&source, Some(1));
        assert_eq!(feed.next_ready().map(|l| l.time_us), Some(800), "clamped");
    }
}
