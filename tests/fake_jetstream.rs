//! The fake Jetstream against a real WebSocket client (tokio-tungstenite): file replay,
//! cursor, filters, options_update and requireHello, close_every, zstd frames, HTTP errors,
//! ping/pong, shutdown, generate mode and the deterministic corpus.
//!
//! Every await on the network is wrapped in a timeout, so a broken server fails a test
//! instead of hanging it; nothing sleeps to synchronise.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use jetstream_ingestor::fake_jetstream::{
    ConnectionEnd, FakeJetstream, FakeJetstreamConfig, Source, generate_corpus,
};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const STEP: Duration = Duration::from_secs(10);
const START_US: u64 = 1_779_719_000_000_000;

fn start(cfg: FakeJetstreamConfig) -> FakeJetstream {
    FakeJetstream::start(cfg).expect("fake jetstream starts")
}

async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(STEP, connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect succeeds");
    ws
}

/// The next data or close frame (pings and pongs skipped).
async fn next_frame(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("a frame in time")
            .expect("stream still open")
            .expect("no socket error");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Every data frame until the server's Close frame, and that frame.
async fn until_close(ws: &mut Ws) -> (Vec<Message>, Option<CloseFrame>) {
    let mut frames = Vec::new();
    loop {
        match next_frame(ws).await {
            Message::Close(frame) => return (frames, frame),
            other => frames.push(other),
        }
    }
}

fn texts(frames: &[Message]) -> Vec<String> {
    frames
        .iter()
        .map(|m| match m {
            Message::Text(t) => t.as_str().to_owned(),
            other => panic!("expected a text frame, got {other:?}"),
        })
        .collect()
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).expect("an event line")
}

fn time_us(line: &str) -> u64 {
    parse(line)["time_us"].as_u64().expect("time_us")
}

/// The Jetstream v1 zstd dictionary file the binary embeds; fails the test if it is absent.
fn v1_dictionary_file() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("actors/assets/zstd_dictionary");
    assert!(
        p.is_file(),
        "{} is missing: it is part of the repository (restore it with \
         `git checkout -- actors/assets`)",
        p.display()
    );
    p
}

#[tokio::test]
async fn file_replay_sends_every_line_verbatim_in_order() {
    let corpus = generate_corpus(40, 1, START_US);
    let mut bytes = Vec::new();
    for (i, line) in corpus.iter().enumerate() {
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        if i == 10 {
            bytes.extend_from_slice(b"{\"not\": \"an event\"\n\n");
        }
        if i == 20 {
            bytes.extend_from_slice(b"\xff\xfe not utf-8\r\n");
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, &bytes).expect("write the file");

    let server = start(FakeJetstreamConfig {
        close_at_end: true,
        ..FakeJetstreamConfig::new(Source::File(path))
    });
    let mut ws = connect(&server.url()).await;
    let (frames, close) = until_close(&mut ws).await;

    assert_eq!(frames.len(), corpus.len() + 2, "every non-empty line, once");
    let mut expected = corpus
        .iter()
        .map(|l| Message::text(l.clone()))
        .collect::<Vec<_>>();
    expected.insert(21, Message::binary(b"\xff\xfe not utf-8".to_vec()));
    expected.insert(11, Message::text("{\"not\": \"an event\""));
    assert_eq!(
        frames, expected,
        "lines verbatim, in file order, invalid UTF-8 as binary"
    );
    assert_eq!(close.map(|c| c.code), Some(CloseCode::Normal));

    let conns = server.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].uri, "/subscribe");
    assert_eq!(conns[0].events_sent, corpus.len() as u64 + 2);
    assert_eq!(server.events_sent(), corpus.len() as u64 + 2);
}

#[tokio::test]
async fn cursor_replay_starts_at_the_right_line() {
    let corpus = generate_corpus(30, 2, START_US);
    let mut lines = corpus.clone();
    lines.insert(8, "garbage after line 7".to_owned());
    let server = start(FakeJetstreamConfig {
        close_at_end: true,
        ..FakeJetstreamConfig::new(Source::Lines(lines))
    });

    // Exactly the time of line 12: starts there.
    let cursor = time_us(&corpus[12]);
    let mut ws = connect(&format!("{}?cursor={cursor}", server.url())).await;
    let (frames, _) = until_close(&mut ws).await;
    assert_eq!(texts(&frames), corpus[12..].to_vec());

    // Between lines 6 and 7: starts at 7, and the garbage line travels with line 7.
    let cursor = time_us(&corpus[6]) + 1;
    let mut ws = connect(&format!("{}?cursor={cursor}", server.url())).await;
    let (frames, _) = until_close(&mut ws).await;
    let got = texts(&frames);
    assert_eq!(got[0], corpus[7]);
    assert_eq!(got[1], "garbage after line 7");
    assert_eq!(got.len(), corpus.len() - 7 + 1);

    // Past the end: nothing, then the close.
    let mut ws = connect(&format!("{}?cursor={}", server.url(), u64::MAX)).await;
    let (frames, _) = until_close(&mut ws).await;
    assert!(frames.is_empty());

    let conns = server.connections();
    assert_eq!(conns.len(), 3);
    assert_eq!(conns[0].cursor, Some(time_us(&corpus[12])));
    assert!(conns.iter().all(|c| c.end == ConnectionEnd::EndOfFile));
}

#[tokio::test]
async fn wanted_collections_and_dids_filter() {
    let corpus = generate_corpus(600, 3, START_US);
    let server = start(FakeJetstreamConfig {
        close_at_end: true,
        ..FakeJetstreamConfig::new(Source::Lines(corpus.clone()))
    });

    // Prefix pattern plus an exact NSID.
    let url = format!(
        "{}?wantedCollections=app.bsky.feed.*&wantedCollections=app.bsky.graph.follow",
        server.url()
    );
    let mut ws = connect(&url).await;
    let (frames, _) = until_close(&mut ws).await;
    let expected: Vec<String> = corpus
        .iter()
        .filter(|l| {
            let v = parse(l);
            match v["kind"].as_str() {
                Some("commit") => {
                    let c = v["commit"]["collection"].as_str().unwrap_or_default();
                    c.starts_with("app.bsky.feed.") || c == "app.bsky.graph.follow"
                }
                _ => true,
            }
        })
        .cloned()
        .collect();
    let got = texts(&frames);
    assert_eq!(got, expected);
    assert!(
        got.iter().any(|l| parse(l)["kind"] == "identity"),
        "identity passes"
    );
    assert!(got.len() < corpus.len());

    // Two DIDs: every kind is filtered by did.
    let dids: Vec<String> = corpus
        .iter()
        .filter_map(|l| parse(l)["did"].as_str().map(str::to_owned))
        .take(2)
        .collect();
    let url = format!(
        "{}?wantedDids={}&wantedDids={}",
        server.url(),
        dids[0],
        dids[1]
    );
    let mut ws = connect(&url).await;
    let (frames, _) = until_close(&mut ws).await;
    let expected: Vec<String> = corpus
        .iter()
        .filter(|l| dids.iter().any(|d| parse(l)["did"] == d.as_str()))
        .cloned()
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(texts(&frames), expected);

    // maxMessageSizeBytes drops the larger events.
    let mut ws = connect(&format!("{}?maxMessageSizeBytes=420", server.url())).await;
    let (frames, _) = until_close(&mut ws).await;
    let expected: Vec<String> = corpus.iter().filter(|l| l.len() <= 420).cloned().collect();
    assert!(!expected.is_empty() && expected.len() < corpus.len());
    assert_eq!(texts(&frames), expected);

    let conns = server.connections();
    assert_eq!(conns[0].wanted_collections.len(), 2);
    assert_eq!(conns[1].wanted_dids, dids);
}

#[tokio::test]
async fn rate_paces_the_events() {
    let corpus = generate_corpus(21, 10, START_US);
    let server = start(FakeJetstreamConfig {
        rate: Some(200),
        close_at_end: true,
        ..FakeJetstreamConfig::new(Source::Lines(corpus.clone()))
    });
    let mut ws = connect(&server.url()).await;
    let started = std::time::Instant::now();
    let (frames, _) = until_close(&mut ws).await;
    let elapsed = started.elapsed();
    assert_eq!(texts(&frames), corpus);
    // 20 gaps of 5 ms.
    assert!(elapsed >= Duration::from_millis(90), "{elapsed:?}");
}

#[tokio::test]
async fn a_client_that_does_not_read_holds_the_server_back() {
    // 20,000 lines of ~2 KiB: far more than socket buffers hold.
    let padding = "x".repeat(2000);
    let lines: Vec<String> = (0..20_000u64)
        .map(|i| {
            format!(
                r#"{{"did":"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa","time_us":{},"kind":"identity","pad":"{padding}"}}"#,
                START_US + i
            )
        })
        .collect();
    let server = start(FakeJetstreamConfig {
        close_at_end: true,
        ..FakeJetstreamConfig::new(Source::Lines(lines.clone()))
    });
    let mut ws = connect(&server.url()).await;
    // Wait (bounded) until the server stops making progress against our closed hand.
    let mut last = u64::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = server.events_sent();
        if now == last {
            break;
        }
        last = now;
    }
    println!("sent before the client read: {last} of {}", lines.len());
    assert!(
        last < lines.len() as u64,
        "the server sent everything to a client that reads nothing"
    );
    let (frames, _) = until_close(&mut ws).await;
    assert_eq!(
        frames.len(),
        lines.len(),
        "then everything arrives once we read"
    );
}

#[tokio::test]
async fn close_every_sends_a_close_frame_after_n_events() {
    let corpus = generate_corpus(12, 4, START_US);
    let server = start(FakeJetstreamConfig {
        close_every: Some(5),
        ..FakeJetstreamConfig::new(Source::Lines(corpus.clone()))
    });
    let mut ws = connect(&server.url()).await;
    let (frames, close) = until_close(&mut ws).await;
    assert_eq!(texts(&frames), corpus[..5].to_vec());
    assert_eq!(close.map(|c| c.code), Some(CloseCode::Normal));

    // Resume from the last time seen, as a consumer would.
    let cursor = time_us(&corpus[4]);
    let mut ws = connect(&format!("{}?cursor={cursor}", server.url())).await;
    let (frames, _) = until_close(&mut ws).await;
    assert_eq!(texts(&frames), corpus[4..9].to_vec());
    let conns = server.connections();
    assert_eq!(conns[0].end, ConnectionEnd::CloseEvery);
    assert_eq!(conns[0].events_sent, 5);
}

/// `compress=true` gets zstd frames that the Jetstream v1 dictionary (read from its file
/// here, independently of what the fake embeds) inflates back to the lines: with no
/// dictionary configured (the embedded default) and with the file given as an override.
#[tokio::test]
async fn compress_sends_zstd_frames_with_the_jetstream_dictionary() {
    let dict_path = v1_dictionary_file();
    let dict = std::fs::read(&dict_path).expect("read the dictionary");
    let corpus = generate_corpus(25, 5, START_US);
    for configured in [None, Some(dict_path)] {
        let server = start(FakeJetstreamConfig {
            close_at_end: true,
            zstd_dictionary: configured.clone(),
            ..FakeJetstreamConfig::new(Source::Lines(corpus.clone()))
        });
        let mut ws = connect(&format!("{}?compress=true", server.url())).await;
        let (frames, _) = until_close(&mut ws).await;
        assert_eq!(frames.len(), corpus.len(), "{configured:?}");
        let mut decompressor =
            zstd::bulk::Decompressor::with_dictionary(&dict).expect("a decompressor");
        for (frame, line) in frames.iter().zip(&corpus) {
            let Message::Binary(bytes) = frame else {
                panic!("expected a binary frame, got {frame:?} ({configured:?})");
            };
            assert!(bytes.len() < line.len(), "the frame is compressed");
            assert_eq!(
                zstd::zstd_safe::get_dict_id_from_frame(bytes).map(u32::from),
                Some(1_612_007_021),
                "compressed with the Jetstream v1 dictionary"
            );
            let plain = decompressor
                .decompress(bytes, 1 << 20)
                .expect("decompresses with the dictionary");
            assert_eq!(plain, line.as_bytes());
        }
        assert!(server.connections()[0].compress);
    }
}

#[tokio::test]
async fn require_hello_waits_for_options_update_which_sets_the_filter() {
    let corpus = generate_corpus(300, 6, START_US);
    let server = start(FakeJetstreamConfig::new(Source::Lines(corpus.clone())));
    let mut ws = connect(&format!("{}?requireHello=true", server.url())).await;

    // Nothing may arrive before the hello.
    let early = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(
        early.is_err(),
        "a frame arrived before the hello: {early:?}"
    );
    assert_eq!(server.events_sent(), 0);

    // Unknown and invalid messages are ignored and do not release the hello.
    ws.send(Message::text(r#"{"type":"something_else"}"#))
        .await
        .expect("send");
    ws.send(Message::text("not json")).await.expect("send");
    let update = r#"{"type":"options_update","payload":{"wantedCollections":["app.bsky.graph.follow"],"wantedDids":[],"maxMessageSizeBytes":0}}"#;
    ws.send(Message::text(update)).await.expect("send");

    let expected: Vec<String> = corpus
        .iter()
        .filter(|l| {
            let v = parse(l);
            v["kind"] != "commit" || v["commit"]["collection"] == "app.bsky.graph.follow"
        })
        .cloned()
        .collect();
    for line in &expected {
        assert_eq!(&next_text(&mut ws).await, line);
    }
    let conns = server.connections();
    assert!(conns[0].require_hello);
    assert_eq!(conns[0].options_updates, 1);
}

#[tokio::test]
async fn bad_requests_get_http_errors() {
    let server = start(FakeJetstreamConfig::new(Source::Lines(generate_corpus(
        3, 7, START_US,
    ))));
    for (query, status) in [
        ("?cursor=yesterday", 400),
        ("?wantedCollections=not-an-nsid", 400),
        ("?wantedDids=alice", 400),
    ] {
        let url = format!("{}{query}", server.url());
        let result = tokio::time::timeout(STEP, connect_async(url.as_str()))
            .await
            .expect("answer in time");
        match result {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{url}");
                if let Some(body) = response.body() {
                    assert!(!body.is_empty(), "the 400 says why");
                }
            }
            other => panic!("expected HTTP {status} for {url}, got {other:?}"),
        }
    }
    let url = format!("ws://{}/other", server.addr());
    match tokio::time::timeout(STEP, connect_async(url.as_str()))
        .await
        .expect("in time")
    {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 404),
        other => panic!("expected HTTP 404, got {other:?}"),
    }
    let conns = server.connections();
    assert_eq!(conns.len(), 3, "the 404 is not a subscription");
    assert!(
        matches!(&conns[0].end, ConnectionEnd::Rejected { status: 400, message } if message.contains("cursor"))
    );
}

#[tokio::test]
async fn idle_connection_answers_pings_and_shutdown_closes_it() {
    let corpus = generate_corpus(3, 8, START_US);
    let server = start(FakeJetstreamConfig::new(Source::Lines(corpus.clone())));
    let mut ws = connect(&server.url()).await;
    for line in &corpus {
        assert_eq!(&next_text(&mut ws).await, line);
    }
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("send ping");
    let pong = tokio::time::timeout(STEP, ws.next())
        .await
        .expect("pong in time")
        .expect("open")
        .expect("no error");
    assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));

    let shutdown = tokio::task::spawn_blocking(move || server.shutdown());
    let (frames, close) = until_close(&mut ws).await;
    assert!(frames.is_empty());
    assert_eq!(close.map(|c| c.code), Some(CloseCode::Away));
    // Reading on sends our half of the close handshake; then the stream ends.
    let end = tokio::time::timeout(STEP, ws.next())
        .await
        .expect("end in time");
    assert!(
        end.is_none() || matches!(end, Some(Err(WsError::ConnectionClosed))),
        "{end:?}"
    );
    tokio::time::timeout(STEP, shutdown)
        .await
        .expect("shutdown in time")
        .expect("shutdown did not panic");
}

#[tokio::test]
async fn generate_mode_streams_live_and_replays_from_the_buffer() {
    let server = start(FakeJetstreamConfig::new(Source::Generate {
        rate: 2000,
        seed: 9,
    }));
    let mut ws = connect(&server.url()).await;
    let mut live = Vec::new();
    for _ in 0..40 {
        live.push(next_text(&mut ws).await);
    }
    let times: Vec<u64> = live.iter().map(|l| time_us(l)).collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "time_us strictly increasing"
    );
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64;
    assert!(
        now_us.abs_diff(times[0]) < 60_000_000,
        "times are the wall clock"
    );

    // A cursor inside the buffer replays from that exact event, then continues.
    let mut replay = connect(&format!("{}?cursor={}", server.url(), times[10])).await;
    for line in &live[10..] {
        assert_eq!(&next_text(&mut replay).await, line);
    }
}

#[test]
fn generate_corpus_is_deterministic_with_real_cids() {
    let a = generate_corpus(2000, 42, START_US);
    assert_eq!(
        a,
        generate_corpus(2000, 42, START_US),
        "same seed, same corpus"
    );
    assert_ne!(
        a,
        generate_corpus(2000, 43, START_US),
        "another seed, another corpus"
    );

    let mut last = 0;
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for line in &a {
        let v = parse(line);
        let t = v["time_us"].as_u64().expect("time_us");
        assert!(
            t > last && (last == 0 || t - last <= 400),
            "small increasing steps"
        );
        last = t;
        let did = v["did"].as_str().expect("did");
        assert!(did.starts_with("did:plc:") && did.len() == 32, "{did}");
        let kind = v["kind"].as_str().expect("kind").to_owned();
        let key = if kind == "commit" {
            let commit = &v["commit"];
            let op = commit["operation"].as_str().expect("operation");
            let rev = commit["rev"].as_str().expect("rev");
            assert_eq!(rev.len(), 13, "rev is a TID");
            if op != "delete" {
                let cid = commit["cid"].as_str().expect("cid");
                assert!(cid.starts_with("bafyrei") && cid.len() > 50, "{cid}");
                assert_eq!(commit["record"]["$type"], commit["collection"]);
                let record = commit["record"].to_string();
                assert_eq!(
                    actors::verifier::cid::check_record_cid(&record, cid).as_str(),
                    "match",
                    "the CID is the record's"
                );
            }
            format!("{op} {}", commit["collection"].as_str().unwrap_or_default())
        } else {
            kind
        };
        *kinds.entry(key).or_default() += 1;
    }
    let share = |k: &str| kinds.get(k).copied().unwrap_or(0) as f64 / a.len() as f64;
    assert!(
        (0.38..0.52).contains(&share("create app.bsky.feed.like")),
        "{kinds:?}"
    );
    assert!(
        (0.10..0.20).contains(&share("create app.bsky.feed.post")),
        "{kinds:?}"
    );
    assert!(
        share("identity") > 0.0 && share("account") > 0.0,
        "{kinds:?}"
    );
    assert!(share("update app.bsky.actor.profile") > 0.0, "{kinds:?}");
}

#[tokio::test]
async fn clock_offset_shifts_served_times_and_reads_cursors_in_its_own_clock() {
    let corpus = generate_corpus(20, 10, START_US);
    let offset: i64 = -3_000_000;
    let server = start(FakeJetstreamConfig {
        close_at_end: true,
        clock_offset_us: offset,
        ..FakeJetstreamConfig::new(Source::Lines(corpus.clone()))
    });
    let shifted = |line: &str| time_us(line) - 3_000_000;
    // A cursor in the server's clock: the event that has that (shifted) time comes first.
    let cursor = shifted(&corpus[5]);
    let mut ws = connect(&format!("{}?cursor={cursor}", server.url())).await;
    let (frames, _) = until_close(&mut ws).await;
    let got = texts(&frames);
    assert_eq!(got.len(), corpus.len() - 5);
    for (sent, original) in got.iter().zip(&corpus[5..]) {
        assert_eq!(time_us(sent), shifted(original));
        let (mut a, mut b) = (parse(sent), parse(original));
        a["time_us"] = Value::Null;
        b["time_us"] = Value::Null;
        assert_eq!(a, b, "only time_us differs");
        assert_eq!(sent.len(), original.len(), "the rest is byte for byte");
    }
}

#[tokio::test]
async fn retention_clamps_old_cursors_to_the_oldest_kept_event() {
    let corpus = generate_corpus(100, 11, START_US);
    let newest = corpus.iter().map(|l| time_us(l)).max().expect("events");
    let keep = Duration::from_micros(newest - time_us(&corpus[60]));
    let server = start(FakeJetstreamConfig {
        close_at_end: true,
        retention: Some(keep),
        ..FakeJetstreamConfig::new(Source::Lines(corpus.clone()))
    });
    for url in [
        format!("{}?cursor={}", server.url(), START_US - 3_600_000_000),
        server.url(),
    ] {
        let mut ws = connect(&url).await;
        let (frames, _) = until_close(&mut ws).await;
        assert_eq!(
            texts(&frames),
            corpus[60..].to_vec(),
            "silently from the oldest kept: {url}"
        );
    }
}

#[tokio::test]
async fn silent_after_stops_events_and_pongs_but_keeps_the_socket() {
    let corpus = generate_corpus(50, 12, START_US);
    let server = start(FakeJetstreamConfig {
        silent_after: Some(10),
        ..FakeJetstreamConfig::new(Source::Lines(corpus.clone()))
    });
    let mut ws = connect(&server.url()).await;
    for line in &corpus[..10] {
        assert_eq!(&next_text(&mut ws).await, line);
    }
    ws.send(Message::Ping(b"hello?".to_vec().into()))
        .await
        .expect("the socket is still open");
    let quiet = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    assert!(
        quiet.is_err(),
        "nothing may come, not even a pong: {quiet:?}"
    );
    let conns = server.connections();
    assert_eq!(conns[0].end, ConnectionEnd::Silent);
    assert_eq!(conns[0].events_sent, 10);
    // A new connection gets its own ten events.
    let mut again = connect(&server.url()).await;
    assert_eq!(next_text(&mut again).await, corpus[0]);
}

#[tokio::test]
async fn max_message_size_is_honoured_unless_told_otherwise_and_filter_changes_are_recorded() {
    let corpus = generate_corpus(30, 13, START_US);
    let sizes: Vec<usize> = corpus.iter().map(String::len).collect();
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    let cap = sorted[sorted.len() / 2];
    for honour in [true, false] {
        let server = start(FakeJetstreamConfig {
            close_at_end: true,
            honor_max_message_size: honour,
            ..FakeJetstreamConfig::new(Source::Lines(corpus.clone()))
        });
        let url = format!("{}?maxMessageSizeBytes={cap}", server.url());
        let mut ws = connect(&url).await;
        let (frames, _) = until_close(&mut ws).await;
        let expected: Vec<String> = corpus
            .iter()
            .filter(|l| !honour || l.len() <= cap)
            .cloned()
            .collect();
        assert_eq!(texts(&frames), expected, "honour={honour}");
    }

    // A hello, then a later update: each recorded with the number of events sent before it.
    let server = start(FakeJetstreamConfig::new(Source::Lines(corpus.clone())));
    let mut ws = connect(&format!("{}?requireHello=true", server.url())).await;
    ws.send(Message::text(
        r#"{"type":"options_update","payload":{"wantedCollections":[],"wantedDids":[],"maxMessageSizeBytes":0}}"#,
    ))
    .await
    .expect("send");
    for line in &corpus {
        assert_eq!(&next_text(&mut ws).await, line);
    }
    ws.send(Message::text(
        r#"{"type":"options_update","payload":{"wantedCollections":["app.bsky.feed.post"]}}"#,
    ))
    .await
    .expect("send");
    let deadline = tokio::time::Instant::now() + STEP;
    while server.connections()[0].options_updates < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "second update not applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        server.connections()[0].filter_changes_at,
        vec![0],
        "the hello took effect before the first event; the late update found no event to apply to"
    );
}
