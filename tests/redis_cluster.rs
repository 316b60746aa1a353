//! Redis Cluster: three masters formed with `redis-cli --cluster create`. Every key of a
//! prefix shares its hash tag (`{jsi}:`), so each commit stays one transaction in one slot;
//! the ingestor finds the master serving that slot and follows it when the slot moves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use actors::supervisor::StartChoice;
use support::cluster::Cluster;
use support::*;

fn cluster_settings(
    server: &str,
    c: &Cluster,
    prefix: &str,
) -> jetstream_ingestor::settings::Settings {
    let mut s = settings(server, &c.url());
    s.redis.cluster = true;
    s.redis.key_prefix = prefix.to_owned();
    s.redis.cluster_nodes = c.nodes[1..]
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    s.validate().unwrap();
    s
}

/// A replay into the cluster, with the slot of the prefix's hash tag migrated to another
/// master half-way (keys moved with MIGRATE while the writer commits): the writer's commits
/// fail while the slot is between nodes (ASK, TRYAGAIN, then MOVED: nothing half-applied),
/// it asks the cluster where the slot is and goes on there. 0 missing, 0 duplicated on the
/// new owner, which holds every key of the prefix.
#[test]
fn a_replay_lands_exactly_once_across_a_slot_migration() {
    let c = Cluster::start();
    let prefix = "{jsi}:";
    let slot = c.slot_of(prefix);
    let lines = respace(&corpus(6_000, 1701), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let last = time_of(lines.last().unwrap()).unwrap();
    let server = fake_with(lines.clone(), |f| f.rate = Some(1_500));
    let settings = cluster_settings(&server.url(), &c, prefix);
    let before = c.owner(slot);
    let ports = c.ports();
    let moved = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
    let moved_in = moved.clone();
    with_supervisor(
        settings,
        StartChoice::Resume {
            fallback: Some(first),
        },
        |sup| async move {
            wait_status(&sup, Duration::from_secs(60), "a third committed", |st| {
                st.reader
                    .committed_cursor
                    .is_some_and(|cur| cur > first + 2_000_000)
            })
            .await;
            // Beside the pipeline (the reader runs on this thread): keys move while
            // commits go on.
            let to = tokio::task::spawn_blocking(move || support::cluster::migrate(&ports, slot))
                .await
                .unwrap();
            moved_in.store(to, std::sync::atomic::Ordering::SeqCst);
            wait_status(
                &sup,
                Duration::from_secs(90),
                "every event committed",
                |st| st.reader.committed_cursor == Some(last),
            )
            .await;
        },
    );
    let moved_to = moved.load(std::sync::atomic::Ordering::SeqCst);
    assert_ne!(moved_to, before);
    assert_eq!(c.owner(slot), moved_to);
    let mut con = c.connection(moved_to);
    assert_eq!(stored_cursor(&mut con, prefix), Some(last));
    assert_eq!(assert_exactly_once(&mut con, prefix, &lines), 6_000);
}

/// Sharding across slots: two ingestors on one cluster, each with its own prefix (its own
/// hash tag, so its own slot and here its own master) and its own collections. Each prefix
/// holds exactly its share of the stream, once.
#[test]
fn two_ingestors_with_their_own_prefixes_shard_the_stream_across_masters() {
    let c = Cluster::start();
    let lines = respace(&corpus(4_000, 1702), 1_700_000_000_000_000, 1_000);
    let first = time_of(&lines[0]).unwrap();
    let share = |collection: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| {
                !l.contains(r#""kind":"commit""#)
                    || l.contains(&format!(r#""collection":"{collection}""#))
            })
            .cloned()
            .collect()
    };
    let (posts, likes) = (share("app.bsky.feed.post"), share("app.bsky.feed.like"));
    assert!(
        posts.len() > 500 && likes.len() > 500,
        "{} {}",
        posts.len(),
        likes.len()
    );
    let server = fake(lines.clone(), None);
    // Tags on different masters: `{a}` and `{b}` hash to slots 15495 and 3300.
    let (pa, pb) = ("{a}:", "{b}:");
    assert_ne!(c.owner(c.slot_of(pa)), c.owner(c.slot_of(pb)));
    std::thread::scope(|scope| {
        for (prefix, collection, mine) in [
            (pa, "app.bsky.feed.post", &posts),
            (pb, "app.bsky.feed.like", &likes),
        ] {
            let my_last = time_of(mine.last().unwrap()).unwrap();
            let mut s = cluster_settings(&server.url(), &c, prefix);
            s.jetstream.wanted_collections = vec![collection.to_owned()];
            scope.spawn(move || {
                with_supervisor(
                    s,
                    StartChoice::Resume {
                        fallback: Some(first),
                    },
                    |sup| async move {
                        wait_status(&sup, Duration::from_secs(60), "its share committed", |st| {
                            st.reader.committed_cursor == Some(my_last)
                        })
                        .await;
                    },
                );
            });
        }
    });
    let mut a = c.connection(c.owner(c.slot_of(pa)));
    let mut b = c.connection(c.owner(c.slot_of(pb)));
    assert_eq!(assert_exactly_once(&mut a, pa, &posts), posts.len());
    assert_eq!(assert_exactly_once(&mut b, pb, &likes), likes.len());
}

/// On a cluster a prefix without a hash tag would spread one commit's keys over slots:
/// refused at start, naming the key and the fix.
#[test]
fn a_cluster_prefix_without_a_hash_tag_is_refused() {
    let mut s = settings("ws://127.0.0.1:1/subscribe", "redis://127.0.0.1:1");
    s.redis.cluster = true;
    s.redis.key_prefix = "jsi:".to_owned();
    let e = s.validate().expect_err("no hash tag").to_string();
    assert!(
        e.contains("redis.key_prefix") && e.contains("hash tag") && e.contains("{jsi}:"),
        "{e}"
    );
    s.redis.key_prefix = "{jsi}:".to_owned();
    s.validate().expect("a tagged prefix is fine");
    s.redis.cluster_nodes = vec!["nohostport".to_owned()];
    let e = s.validate().expect_err("bad seed").to_string();
    assert!(
        e.contains("redis.cluster_nodes") && e.contains("nohostport"),
        "{e}"
    );
}
