//! Fault suite, hostile input: a host that mixes mutated and garbage frames into valid
//! events (truncated JSON, wrong types, huge strings, deep nesting, invalid UTF-8 in text
//! frames, binary junk, lone surrogates, non-objects) and, with `compress` on, zstd bombs
//! (declared and undeclared sizes), corrupt, truncated and foreign zstd frames. The reader
//! must not crash or stall, every valid event must land exactly once, and every bad frame
//! must be in `jsi:dead` with its reason, once, also when a reconnect's rewind meets the
//! frames the WebSocket layer refuses (not UTF-8, too large) a second time.
//!
//! The host is a small WebSocket server written here (the fake Jetstream sends only what a
//! well-behaved host would, and tungstenite refuses to send invalid UTF-8 as text): it serves
//! a fixed list of frames from the dial's `cursor`, invalid-UTF-8 text frames written as raw
//! WebSocket frames.
//!
//! Sizes (CI / `JSI_FAULT_SCALE=full`): 2k / 10k hostile frames among 20k / 100k valid
//! events; 140 / 700 zstd frames among 2k / 10k compressed events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actors::supervisor::StartChoice;
use futures_util::{SinkExt as _, StreamExt as _};
use rand::{RngExt as _, SeedableRng as _};
use support::fault_proxy::sized;
use support::*;
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// One frame the hostile host sends.
#[derive(Clone)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// A text frame whose payload is not UTF-8, written raw.
    RawText(Vec<u8>),
}

impl Frame {
    fn bytes(&self) -> &[u8] {
        match self {
            Frame::Text(t) => t.as_bytes(),
            Frame::Binary(b) | Frame::RawText(b) => b,
        }
    }
}

/// A WebSocket host serving `frames` (each with the `time_us` it sits at) from the dial's
/// cursor, then idling until the client leaves.
struct HostileHost {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostileHost {
    fn start(frames: Vec<(u64, Frame)>) -> HostileHost {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let listener = {
            let _in = rt.enter();
            tokio::net::TcpListener::from_std(std_listener).unwrap()
        };
        let frames = Arc::new(frames);
        let connections = Arc::new(AtomicU64::new(0));
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let conns = Arc::clone(&connections);
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = stop_rx.wait_for(|s| *s) => return,
                    };
                    let Ok((tcp, _)) = accepted else { continue };
                    conns.fetch_add(1, Ordering::SeqCst);
                    let frames = Arc::clone(&frames);
                    let stop = stop_rx.clone();
                    tokio::spawn(async move {
                        let _ = serve(tcp, &frames, stop).await;
                    });
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        HostileHost {
            addr,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/subscribe", self.addr)
    }
}

impl Drop for HostileHost {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The header of an unmasked, final text frame of `len` bytes.
fn raw_text_header(len: usize) -> Vec<u8> {
    let mut h = vec![0x81];
    if len < 126 {
        h.push(len as u8);
    } else if len <= 0xffff {
        h.push(126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(127);
        h.extend_from_slice(&(len as u64).to_be_bytes());
    }
    h
}

// The handshake callback's error type is tungstenite's, large by design.
#[allow(clippy::result_large_err)]
async fn serve(
    tcp: tokio::net::TcpStream,
    frames: &[(u64, Frame)],
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut cursor: Option<u64> = None;
    let mut ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
        cursor = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("cursor="))
                .and_then(|v| v.parse().ok())
        });
        Ok(resp)
    })
    .await?;
    let from = cursor.map_or(0, |c| frames.partition_point(|(t, _)| *t < c));
    for (_, frame) in &frames[from..] {
        match frame {
            Frame::Text(t) => ws.feed(Message::text(t.clone())).await?,
            Frame::Binary(b) => ws.feed(Message::binary(b.clone())).await?,
            Frame::RawText(b) => {
                ws.flush().await?;
                let tcp = ws.get_mut();
                tcp.write_all(&raw_text_header(b.len())).await?;
                tcp.write_all(b).await?;
            }
        }
    }
    ws.flush().await?;
    loop {
        tokio::select! {
            m = ws.next() => if !matches!(m, Some(Ok(_))) { return Ok(()) },
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// A valid line with `"h":tag,` inserted first, so every mutation of it is unique.
fn tagged(line: &str, tag: usize) -> String {
    format!("{{\"h\":{tag},{}", &line[1..])
}

/// The hostile text and binary frames, by kind. Each is unique (the dead-letter identity is
/// a hash of the frame). `line` is a valid event to mutate, `t` its time.
fn hostile(
    kind: usize,
    tag: usize,
    line: &str,
    t: u64,
    rng: &mut rand::rngs::StdRng,
) -> (&'static str, Frame) {
    let did = format!("did:plc:{:024}", tag);
    match kind {
        0 => {
            let full = tagged(line, tag);
            let mut cut = rng.random_range(full.find(',').unwrap() + 1..full.len() - 1);
            while !full.is_char_boundary(cut) {
                cut -= 1;
            }
            ("truncated", Frame::Text(full[..cut].to_owned()))
        }
        1 => (
            "time_as_string",
            Frame::Text(format!(
                r#"{{"h":{tag},"did":"{did}","time_us":"{t}","kind":"commit"}}"#
            )),
        ),
        2 => (
            "did_as_number",
            Frame::Text(format!(
                r#"{{"h":{tag},"did":{tag},"time_us":{t},"kind":"commit"}}"#
            )),
        ),
        3 => (
            "commit_as_array",
            Frame::Text(format!(
                r#"{{"h":{tag},"did":"{did}","time_us":{t},"kind":"commit","commit":[1,2]}}"#
            )),
        ),
        4 if line.contains("\"rev\":\"") => (
            "rev_as_number",
            Frame::Text(tagged(line, tag).replacen("\"rev\":\"", "\"rev\":1,\"x\":\"", 1)),
        ),
        4 => (
            "rev_as_number",
            Frame::Text(format!(
                r#"{{"h":{tag},"did":"{did}","time_us":{t},"kind":"commit","commit":{{"rev":1,"operation":"delete","collection":"a.b.c","rkey":"k"}}}}"#
            )),
        ),
        5 => (
            "not_an_object",
            Frame::Text(match tag % 4 {
                0 => format!("[{tag}]"),
                1 => format!("\"{tag}\""),
                2 => format!("{tag}"),
                _ => format!("null{tag}"),
            }),
        ),
        6 => (
            "lone_surrogate",
            Frame::Text(format!(
                r#"{{"h":{tag},"did":"{did}\ud800","time_us":{t},"kind":"commit"}}"#
            )),
        ),
        7 => {
            // Invalid UTF-8 inside a text frame.
            let mut b = tagged(line, tag).into_bytes();
            let at = rng.random_range(10..b.len() - 2);
            b[at] = 0xff;
            b[at + 1] = 0xfe;
            ("invalid_utf8_text", Frame::RawText(b))
        }
        8 => {
            let mut b: Vec<u8> = (0..rng.random_range(1..2_000))
                .map(|_| rng.random::<u8>())
                .collect();
            b.extend_from_slice(format!("junk{tag}").as_bytes());
            ("binary_junk", Frame::Binary(b))
        }
        9 => (
            "huge_string_did",
            Frame::Text(format!(
                r#"{{"h":{tag},"did":"did:plc:{tag}{}","time_us":{t},"kind":"commit","commit":{{"rev":"3l3l3l3l3l3l2","operation":"delete","collection":"app.bsky.feed.like","rkey":"3l3l3l3l3l3l2"}}}}"#,
                "a".repeat(300_000)
            )),
        ),
        10 => {
            // 100 kB of junk that differ only after the first 64 KiB.
            (
                "huge_junk_late_difference",
                Frame::Text(format!("{}{tag}", "z".repeat(100_000))),
            )
        }
        11 => (
            "deep_envelope",
            Frame::Text(format!(
                r#"{{"h":{tag},"x":{}1{},"did":"{did}","time_us":{t},"kind":"commit"}}"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            )),
        ),
        12 => ("deep_record", Frame::Text(deep_record(line, tag, 100_000))),
        13 => ("deep_record_200", Frame::Text(deep_record(line, tag, 200))),
        14 => (
            "empty_and_whitespace",
            Frame::Text(" ".repeat(tag % 7) + &format!("\n{tag}\t")),
        ),
        _ => ("huge_record", Frame::Text(big_record(line, tag))),
    }
}

const KINDS: usize = 16;

/// `line` as a create whose record is `{"$type": <collection>, "x": <x>}`, `x` raw JSON.
fn with_record(line: &str, tag: usize, x: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    let Some(commit) = v.get_mut("commit") else {
        // An identity or account event: make it a commit.
        return with_record(&line.replacen("\"kind\":\"", "\"commit\":{\"rev\":\"3l3l3l3l3l3l2\",\"operation\":\"create\",\"collection\":\"app.bsky.feed.like\",\"rkey\":\"3l3l3l3l3l3l2\"},\"kind\":\"c", 1).replacen("\"kind\":\"cidentity\"", "\"kind\":\"commit\"", 1).replacen("\"kind\":\"caccount\"", "\"kind\":\"commit\"", 1), tag, x);
    };
    let collection = commit["collection"]
        .as_str()
        .unwrap_or("app.bsky.feed.like")
        .to_owned();
    commit["operation"] = "create".into();
    commit["record"] = "__RECORD__".into();
    commit["cid"] = "bafyreicl7rzkxdrm4zz2ehbx52kuk3mvfow6p3gzfys72r5grvskxoswy4".into();
    let rec = format!("{{\"$type\":\"{collection}\",\"x\":{x}}}");
    tagged(&v.to_string(), tag).replacen("\"__RECORD__\"", &rec, 1)
}

/// A record nested `depth` deep.
fn deep_record(line: &str, tag: usize, depth: usize) -> String {
    with_record(
        line,
        tag,
        &format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)),
    )
}

/// A record holding a 1.2 MB string.
fn big_record(line: &str, tag: usize) -> String {
    with_record(line, tag, &format!("\"{}\"", "b".repeat(1_200_000)))
}

fn settings_for(url: &str, redis_url: &str) -> jetstream_ingestor::settings::Settings {
    let mut s = settings(url, redis_url);
    s.jetstream.rewind = Duration::from_millis(100);
    s
}

/// The reason each kind of hostile frame must be dead-lettered with.
fn expected_reason(kind: &str) -> &'static str {
    match kind {
        "truncated" | "lone_surrogate" | "huge_junk_late_difference" => "invalid_json",
        "time_as_string" | "did_as_number" | "not_an_object" | "empty_and_whitespace" => {
            "bad_envelope"
        }
        "commit_as_array" | "rev_as_number" | "deep_envelope" => "bad_commit",
        "invalid_utf8_text" => "invalid_utf8",
        "binary_junk" => "binary_frame",
        "huge_string_did" => "bad_did",
        "deep_record" | "deep_record_200" => "record_too_deep",
        "huge_record" => "record_too_large",
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn hostile_frames_among_valid_events_are_all_dead_lettered_and_every_valid_event_lands() {
    let redis = redis(false);
    let valid = corpus(sized(20_000, 100_000), 1001);
    let bad_count = sized(2_000, 10_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1001);
    // Bad frames at distinct seeded positions, each right after a valid event (at its
    // time_us, so a dial past it skips nothing else); the last frame is a valid event.
    let mut at: Vec<usize> = (0..valid.len() - 1).collect();
    for i in 0..bad_count {
        at.swap(i, rng.random_range(i..valid.len() - 1));
    }
    at.truncate(bad_count);
    at.sort_unstable();
    let mut frames = Vec::new();
    // How a dead letter names its frame: the decoder keeps the frame's text (lossy, capped),
    // the verifier the event's did and time.
    let mut by_raw: HashMap<String, &'static str> = HashMap::new();
    let mut by_event: HashMap<(String, String), &'static str> = HashMap::new();
    let mut sent: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut next_bad = 0;
    for (i, line) in valid.iter().enumerate() {
        let t = time_of(line).unwrap();
        frames.push((t, Frame::Text(line.clone())));
        while next_bad < at.len() && at[next_bad] == i {
            // Huge frames are few: they cost time, not coverage.
            let mut kind = next_bad % KINDS;
            if matches!(kind, 9 | 10 | 12 | 15) && next_bad % (KINDS * 10) >= KINDS {
                kind = next_bad % 9;
            }
            let (name, f) = hostile(kind, next_bad, line, t, &mut rng);
            let b = f.bytes();
            let raw = String::from_utf8_lossy(&b[..b.len().min(64 * 1024)]).into_owned();
            by_raw.insert(raw, name);
            // Records too deep for a JSON tree: did and time are those of `line`.
            let event = if matches!(name, "deep_record" | "deep_record_200") {
                line.as_bytes()
            } else {
                b
            };
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(event)
                && let (Some(did), Some(t)) = (v["did"].as_str(), v["time_us"].as_u64())
            {
                by_event.insert((did.to_owned(), t.to_string()), name);
            }
            *sent.entry(name).or_default() += 1;
            frames.push((t, f));
            next_bad += 1;
        }
    }
    let first = time_of(&valid[0]).unwrap();
    let last = time_of(valid.last().unwrap()).unwrap();
    let host = HostileHost::start(frames);

    with_supervisor(
        settings_for(&host.url(), &redis.url()),
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let st = wait_status(
                &sup,
                Duration::from_secs(180),
                "every valid event committed",
                |s| s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0,
            )
            .await;
            assert_eq!(st.reader_restarts, 0);
        },
    );

    let mut con = redis.connection().unwrap();
    let checked = assert_exactly_once(&mut con, "jsi:", &valid);
    let dead = read_stream(&mut con, "jsi:dead");
    let mut got: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for d in &dead {
        let kind = by_raw
            .get(d["raw"].as_str())
            .or_else(|| by_event.get(&(d["did"].clone(), d["time_us"].clone())))
            .copied()
            // A text frame that is not UTF-8 is refused by the WebSocket layer: its dead
            // letter describes its position instead of carrying it.
            .unwrap_or(if d["raw"].contains("\"invalid_utf8\"") {
                "invalid_utf8_text"
            } else {
                "?"
            });
        *got.entry((kind, d["reason"].clone())).or_default() += 1;
    }
    println!(
        "{checked} valid events exactly once; {bad_count} hostile frames {sent:?}; {} dead letters by (kind, reason) {got:?}; {} connections",
        dead.len(),
        host.connections.load(Ordering::SeqCst)
    );
    for (kind, n) in &sent {
        let reason = expected_reason(kind);
        assert_eq!(
            got.get(&(*kind, reason.to_owned())).copied().unwrap_or(0),
            *n,
            "{kind}: {n} frames, dead letters {:?}",
            got.iter()
                .filter(|((k, _), _)| k == kind)
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(
        dead.len(),
        bad_count,
        "every bad frame dead-lettered exactly once"
    );
    // The stream never stopped: one dial, plus one per refused (not UTF-8) text frame to get
    // past it. No redial loop.
    assert_eq!(
        host.connections.load(Ordering::SeqCst),
        1 + sent["invalid_utf8_text"] as u64
    );
}

/// The zstd frames a hostile host can send with `compress` on, by kind; `plain` is a valid
/// event (as text) to mutate.
fn hostile_zstd(
    kind: usize,
    tag: usize,
    plain: &str,
    dict: &[u8],
    bomb: usize,
    rng: &mut rand::rngs::StdRng,
) -> (&'static str, Vec<u8>) {
    let packed = |bytes: &[u8]| {
        zstd::bulk::Compressor::with_dictionary(3, dict)
            .unwrap()
            .compress(bytes)
            .unwrap()
    };
    match kind {
        0 => {
            // Declares its (too big) size in the frame header.
            let mut payload = format!("{{\"h\":{tag},\"x\":\"").into_bytes();
            payload.resize(bomb, b'a');
            ("bomb_declared", packed(&payload))
        }
        1 => {
            // The streaming encoder does not declare the size.
            let mut enc = zstd::stream::Encoder::with_dictionary(Vec::new(), 3, dict).unwrap();
            std::io::Write::write_all(&mut enc, format!("{{\"h\":{tag},\"x\":\"").as_bytes())
                .unwrap();
            std::io::Write::write_all(&mut enc, &vec![b'a'; bomb]).unwrap();
            ("bomb_undeclared", enc.finish().unwrap())
        }
        2 => {
            // The frame header's dictionary id no longer names the dictionary. (A flip in
            // the compressed payload may still inflate to a well-formed event: that is a CID
            // mismatch job, not a bad frame.)
            let mut b = packed(tagged(plain, tag).as_bytes());
            b[5] ^= 0x5a;
            ("corrupt_header", b)
        }
        3 => {
            let b = packed(tagged(plain, tag).as_bytes());
            ("truncated", b[..b.len() / 2].to_vec())
        }
        4 => {
            let mut b: Vec<u8> = (0..rng.random_range(4..600))
                .map(|_| rng.random::<u8>())
                .collect();
            b.extend_from_slice(format!("{tag}").as_bytes());
            ("not_zstd", b)
        }
        5 => (
            "garbage_json",
            packed(format!("garbage {tag} ]]").as_bytes()),
        ),
        _ => {
            let mut b = tagged(plain, tag).into_bytes();
            b[5] = 0xff;
            ("invalid_utf8", packed(&b))
        }
    }
}

/// What a dead letter of a frame inflated to `plain` carries as its raw text: the inflated
/// frame (lossy), not the compressed one.
fn inner_raw(kind: &str, tag: usize, plain: &str) -> Option<String> {
    match kind {
        "garbage_json" => Some(format!("garbage {tag} ]]")),
        "invalid_utf8" => {
            let mut b = tagged(plain, tag).into_bytes();
            b[5] = 0xff;
            Some(String::from_utf8_lossy(&b).into_owned())
        }
        _ => None,
    }
}

const ZSTD_KINDS: usize = 7;

#[test]
fn zstd_bombs_and_corrupt_compressed_frames_are_dead_lettered_and_every_valid_event_lands() {
    let dict_path = zstd_dictionary();
    let dict = std::fs::read(&dict_path).unwrap();
    let redis = redis(false);
    let valid = corpus(sized(2_000, 10_000), 1002);
    let per_kind = sized(20, 100);
    // A small inflate limit makes 1 MiB bombs enough (the mechanism does not depend on it).
    let max_inflate = 256 * 1024;
    let bomb = 1024 * 1024;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1002);
    let mut at: Vec<usize> = (0..per_kind * ZSTD_KINDS)
        .map(|_| rng.random_range(0..valid.len() - 1))
        .collect();
    at.sort_unstable();
    let mut compressor = zstd::bulk::Compressor::with_dictionary(3, &dict).unwrap();
    let mut frames = Vec::new();
    let mut expected: HashMap<String, &'static str> = HashMap::new();
    let mut sent = 0;
    let mut next_bad = 0;
    for (i, line) in valid.iter().enumerate() {
        let t = time_of(line).unwrap();
        // One valid event in ten comes as a text frame, as a host may mix them.
        let f = if i % 10 == 3 {
            Frame::Text(line.clone())
        } else {
            Frame::Binary(compressor.compress(line.as_bytes()).unwrap())
        };
        frames.push((t, f));
        while next_bad < at.len() && at[next_bad] == i {
            let (kind, bytes) =
                hostile_zstd(next_bad % ZSTD_KINDS, next_bad, line, &dict, bomb, &mut rng);
            let raw = String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]).into_owned();
            assert!(
                expected.insert(raw, kind).is_none(),
                "hostile frames are unique"
            );
            if let Some(inner) = inner_raw(kind, next_bad, line) {
                expected.insert(inner, kind);
            }
            sent += 1;
            frames.push((t, Frame::Binary(bytes)));
            next_bad += 1;
        }
    }
    let first = time_of(&valid[0]).unwrap();
    let last = time_of(valid.last().unwrap()).unwrap();
    let host = HostileHost::start(frames);
    let mut s = settings_for(&host.url(), &redis.url());
    s.jetstream.compress = true;
    s.jetstream.zstd_dictionary = Some(dict_path);
    s.jetstream.max_decompressed_bytes = max_inflate;
    s.validate().unwrap();

    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            let st = wait_status(
                &sup,
                Duration::from_secs(120),
                "every valid event committed",
                |s| s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0,
            )
            .await;
            assert_eq!(st.reader_restarts, 0);
            assert_eq!(st.reader.sessions_started, 1, "no frame ended the session");
        },
    );

    let mut con = redis.connection().unwrap();
    let checked = assert_exactly_once(&mut con, "jsi:", &valid);
    let dead = read_stream(&mut con, "jsi:dead");
    let mut seen: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for d in &dead {
        let kind = expected.get(d["raw"].as_str()).copied().unwrap_or("?");
        *seen.entry((kind, d["reason"].clone())).or_default() += 1;
    }
    println!(
        "zstd: {checked} valid events exactly once; {sent} hostile frames; dead letters by (kind, reason): {seen:?}"
    );
    assert_eq!(dead.len(), sent, "every hostile frame dead-lettered once");
    for kind in [
        "bomb_declared",
        "bomb_undeclared",
        "corrupt_header",
        "truncated",
        "not_zstd",
        "garbage_json",
        "invalid_utf8",
    ] {
        let n: usize = seen
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            n, per_kind,
            "{kind}: {n} dead letters for {per_kind} frames"
        );
    }
    for (kind, reason) in seen.keys() {
        let allowed: &[&str] = match *kind {
            "bomb_declared" | "bomb_undeclared" => &["zstd_too_large"],
            "corrupt_header" | "truncated" | "not_zstd" => &["zstd_error"],
            "garbage_json" => &["invalid_json"],
            _ => &["invalid_utf8"],
        };
        assert!(
            allowed.contains(&reason.as_str()),
            "{kind} dead-lettered as {reason}"
        );
    }
}

#[test]
fn refused_frames_met_again_after_a_reconnect_are_dead_lettered_once() {
    // Three text frames that are not UTF-8 and one frame over max_frame_bytes, close
    // together; after the reader got past all four, the link is reset and the redial rewinds
    // (3 s) to before the first of them: each is met again, skipped again, and must not be
    // dead-lettered twice.
    let redis = redis(false);
    let valid = respace(&corpus(3_000, 1003), 1_700_000_000_000_000, 1_000);
    let mut frames = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1003);
    for (i, line) in valid.iter().enumerate() {
        let t = time_of(line).unwrap();
        frames.push((t, Frame::Text(line.clone())));
        if [1_000, 1_100, 1_200].contains(&i) {
            frames.push((t, hostile(7, i, line, t, &mut rng).1));
        }
        if i == 1_150 {
            frames.push((
                t,
                Frame::Text(format!("{{\"h\":{i},\"x\":\"{}\"}}", "o".repeat(100_000))),
            ));
        }
    }
    let first = time_of(&valid[0]).unwrap();
    let last = time_of(valid.last().unwrap()).unwrap();
    let host = HostileHost::start(frames);
    let proxy = support::fault_proxy::FaultProxy::start(host.addr, 1003);
    let mut s = settings(&proxy.ws_url(), &redis.url());
    s.jetstream.rewind = Duration::from_secs(3);
    s.jetstream.max_frame_bytes = 64 * 1024;
    s.validate().unwrap();
    let p = &proxy;
    with_supervisor(
        s,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "first pass committed", |s| {
                s.reader.committed_cursor == Some(last) && s.writer.queued_batches == 0
            })
            .await;
            let sessions = status(&sup).await.reader.sessions_started;
            assert!(p.reset_all() > 0);
            // The redial replays everything from 3 s back, meeting the four frames again.
            wait_status(
                &sup,
                Duration::from_secs(60),
                "second pass over the frames",
                |s| {
                    s.reader.sessions_started >= sessions + 5
                        && s.reader.state == actors::messages::ReaderState::Streaming
                        && s.writer.queued_batches == 0
                },
            )
            .await;
        },
    );
    let mut con = redis.connection().unwrap();
    assert_exactly_once(&mut con, "jsi:", &valid);
    let dead = read_stream(&mut con, "jsi:dead");
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str()).collect();
    println!(
        "after a rewind over 4 refused frames: {} connections, dead letters {reasons:?}",
        host.connections.load(Ordering::SeqCst)
    );
    assert_eq!(
        dead.len(),
        4,
        "each refused frame dead-lettered once: {reasons:?}"
    );
}
