//! Memory per tracked DID, measured on the scenario of the `buckets` bench's memory line so
//! the figure is checked in CI: the tracker's own count (sizes + heap) and the RSS delta.
//! Run `cargo test --test bucket_memory -- --nocapture` to see the figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jetstream_ingestor::settings::Settings;

/// The scenario of the `buckets` bench's memory line, in a test so the figure is checked:
/// 100k DIDs that each liked once and posted once with the example buckets (three live
/// states per DID: a post count, the like and the post `lurkers` remembers, an onboarding
/// membership).
#[test]
fn memory_per_tracked_did_with_the_example_buckets() {
    use actors::buckets::criteria::candidate_leaves;
    use actors::buckets::tracker::{ShardEvent, Tracker};
    use std::sync::Arc;
    const DIDS: usize = 100_000;
    let mut s = Settings::default();
    s.load_bucket_text(include_str!("../config/buckets.example.toml"), "example")
        .unwrap();
    let buckets = actors::buckets::compile(&actors::buckets::BucketsConfig {
        shards: 1,
        buckets: s.bucket_defs,
    });
    let (post, _) = candidate_leaves(&buckets, "app.bsky.feed.post");
    let (like, _) = candidate_leaves(&buckets, "app.bsky.feed.like");
    let (post, like): (Arc<[u32]>, Arc<[u32]>) = (post.into(), like.into());
    let rss = || -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let l = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
                l.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0)
    };
    let before = rss();
    let mut tracker = Tracker::new(buckets.clone());
    let mut t = 1_700_000_000_000_000u64;
    let mut members = vec![0; buckets.len()];
    for chunk in (0..DIDS).collect::<Vec<_>>().chunks(1000) {
        let mut events = Vec::new();
        for i in chunk {
            let did = format!("did:plc:{i:024}");
            let record = serde_json::value::RawValue::from_string(
                r#"{"langs":["en"],"text":"hi"}"#.to_owned(),
            )
            .unwrap();
            events.push(ShardEvent {
                did: did.clone(),
                time_us: t + 10,
                operation: actors::model::Operation::Create,
                leaves: like.clone(),
                record: None,
            });
            events.push(ShardEvent {
                did,
                time_us: t + 20,
                operation: actors::model::Operation::Create,
                leaves: post.clone(),
                record: Some(record),
            });
            t += 20;
        }
        members = tracker.process(events, t).members;
    }
    let counted = tracker.approx_bytes() / tracker.tracked_dids();
    let rss_per_did = (rss().saturating_sub(before) * 1024) / DIDS as u64;
    eprintln!(
        "{} tracked DIDs: {counted} B/DID counted (sizes + heap), {rss_per_did} B/DID RSS delta",
        tracker.tracked_dids()
    );
    assert_eq!(tracker.tracked_dids(), DIDS);
    // Every DID entered `lurkers` with its like and left with its post; `onboarding` holds all.
    assert_eq!(members, vec![0, 0, 0, DIDS as u64, 0]);
    assert!(counted < 1024, "{counted} B per tracked DID");
}
