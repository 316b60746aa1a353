//! Generated events that resemble the real firehose: the mix of kinds and collections, record
//! shapes with replies, facets and blob embeds, `did:plc:` authors from a fixed pool, TIDs
//! derived from time, and the real CID of every record. Deterministic for a seed.
//!
//! Used by generate mode ([`super::live`]) with wall-clock times, and by
//! [`generate_corpus`] with times that step from a start value.
//!
//! Failure: none (pure); see [`super::ids::record_cid`] for the one fallible step.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde::Serialize;
use serde_json::{Value, json};

use super::ids::{
    CODEC_DAG_CBOR, CODEC_RAW, random_cid, random_plc_did, record_cid, rfc3339_millis, tid,
};
use super::posts::{EMOJI, WORDS_EN};

/// Authors in the pool.
pub(super) const DID_POOL: usize = 3000;
/// A few authors are far busier than the rest, as on the network.
const HOT_DIDS: usize = 50;
/// Posts remembered as subjects of likes, reposts, replies and quotes.
pub(super) const RECENT_POSTS: usize = 512;
/// Records remembered as targets of deletes.
const RECENT_RECORDS: usize = 2048;

/// A record another record can point at (`com.atproto.repo.strongRef`).
#[derive(Clone)]
pub(super) struct StrongRef {
    pub uri: String,
    pub cid: String,
}

/// A post kept for later reference, with the root of its thread.
pub(super) struct RecentPost {
    pub post: StrongRef,
    pub root: StrongRef,
}

/// A created record that a later delete may remove.
struct RecordRef {
    did: usize,
    collection: &'static str,
    rkey: String,
}

#[derive(Serialize)]
struct EventOut<'a> {
    did: &'a str,
    time_us: u64,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit: Option<CommitOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<Value>,
}

#[derive(Serialize)]
struct CommitOut<'a> {
    rev: String,
    operation: &'static str,
    collection: &'static str,
    rkey: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cid: Option<String>,
}

/// A seeded source of firehose-like events.
pub(crate) struct Generator {
    pub(super) rng: StdRng,
    pub(super) dids: Vec<String>,
    pub(super) handles: Vec<String>,
    pub(super) recent_posts: VecDeque<RecentPost>,
    recent_records: VecDeque<RecordRef>,
    /// Relay sequence of identity and account events.
    seq: u64,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        let mut rng = StdRng::seed_from_u64(seed);
        let dids: Vec<String> = (0..DID_POOL).map(|_| random_plc_did(&mut rng)).collect();
        let handles = (0..DID_POOL)
            .map(|i| {
                let word = WORDS_EN[rng.random_range(0..WORDS_EN.len())];
                format!("{word}{i}.bsky.social")
            })
            .collect();
        let seq = 30_000_000_000 + rng.random_range(0..1_000_000_000u64);
        Generator {
            rng,
            dids,
            handles,
            recent_posts: VecDeque::new(),
            recent_records: VecDeque::new(),
            seq,
        }
    }

    /// Draws a step in microseconds between two corpus events.
    pub fn step_us(&mut self) -> u64 {
        self.rng.random_range(50..=400)
    }

    /// One event at `time_us`, as a Jetstream v1 JSON line.
    pub fn next_event(&mut self, time_us: u64) -> String {
        match self.rng.random_range(0..1000u32) {
            0..450 => self.like_or_repost(time_us, "app.bsky.feed.like"),
            450..600 => self.post(time_us),
            600..720 => self.like_or_repost(time_us, "app.bsky.feed.repost"),
            720..820 => self.did_subject(time_us, "app.bsky.graph.follow"),
            820..850 => self.profile_update(time_us),
            850..930 => self.delete(time_us),
            930..950 => self.identity(time_us),
            950..960 => self.account(time_us),
            960..980 => self.did_subject(time_us, "app.bsky.graph.block"),
            980..990 => self.list_item(time_us),
            _ => self.status(time_us),
        }
    }

    pub(super) fn pick_did(&mut self) -> usize {
        if self.rng.random_bool(0.2) {
            self.rng.random_range(0..HOT_DIDS)
        } else {
            self.rng.random_range(0..DID_POOL)
        }
    }

    pub(super) fn clock_id(&mut self) -> u16 {
        self.rng.random_range(0..1024)
    }

    /// `createdAt` of a record committed at `time_us`: a little earlier, as clients set it.
    pub(super) fn created_at(&mut self, time_us: u64) -> (u64, String) {
        let created = time_us.saturating_sub(self.rng.random_range(0..2_000_000));
        (created, rfc3339_millis(created))
    }

    pub(super) fn blob(&mut self, mime: &str) -> Value {
        json!({
            "$type": "blob",
            "ref": { "$link": random_cid(&mut self.rng, CODEC_RAW) },
            "mimeType": mime,
            "size": self.rng.random_range(8_000..1_000_000u32),
        })
    }

    /// A post to point at: a recent generated one, or an older one we only know by reference.
    pub(super) fn some_post(&mut self, time_us: u64) -> (StrongRef, StrongRef) {
        if !self.recent_posts.is_empty() && self.rng.random_bool(0.9) {
            let i = self.rng.random_range(0..self.recent_posts.len());
            let p = &self.recent_posts[i];
            return (p.post.clone(), p.root.clone());
        }
        let author = self.pick_did();
        let age = self.rng.random_range(1_000_000..259_200_000_000u64);
        let clock = self.clock_id();
        let post = StrongRef {
            uri: format!(
                "at://{}/app.bsky.feed.post/{}",
                self.dids[author],
                tid(time_us.saturating_sub(age), clock)
            ),
            cid: random_cid(&mut self.rng, CODEC_DAG_CBOR),
        };
        (post.clone(), post)
    }

    fn like_or_repost(&mut self, time_us: u64, collection: &'static str) -> String {
        let did = self.pick_did();
        let (subject, _) = self.some_post(time_us);
        let (_, created) = self.created_at(time_us);
        let record = json!({
            "$type": collection,
            "createdAt": created,
            "subject": { "cid": subject.cid, "uri": subject.uri },
        });
        self.create(time_us, did, collection, &record).0
    }

    fn did_subject(&mut self, time_us: u64, collection: &'static str) -> String {
        let did = self.pick_did();
        let subject = self.rng.random_range(0..DID_POOL);
        let (_, created) = self.created_at(time_us);
        let record = json!({
            "$type": collection,
            "createdAt": created,
            "subject": self.dids[subject],
        });
        self.create(time_us, did, collection, &record).0
    }

    fn list_item(&mut self, time_us: u64) -> String {
        let did = self.pick_did();
        let subject = self.rng.random_range(0..DID_POOL);
        let (created_us, created) = self.created_at(time_us);
        let clock = self.clock_id();
        let list = format!(
            "at://{}/app.bsky.graph.list/{}",
            self.dids[did],
            tid(created_us.saturating_sub(86_400_000_000), clock)
        );
        let record = json!({
            "$type": "app.bsky.graph.listitem",
            "createdAt": created,
            "list": list,
            "subject": self.dids[subject],
        });
        self.create(time_us, did, "app.bsky.graph.listitem", &record)
            .0
    }

    /// A record of a lexicon outside `app.bsky`, as the network carries many.
    fn status(&mut self, time_us: u64) -> String {
        let did = self.pick_did();
        let (_, created) = self.created_at(time_us);
        let status = EMOJI[self.rng.random_range(0..EMOJI.len())];
        let record = json!({
            "$type": "xyz.statusphere.status",
            "createdAt": created,
            "status": status,
        });
        self.create(time_us, did, "xyz.statusphere.status", &record)
            .0
    }

    fn profile_update(&mut self, time_us: u64) -> String {
        let did = self.pick_did();
        let (_, created) = self.created_at(time_us.saturating_sub(30 * 86_400_000_000));
        let mut record = json!({
            "$type": "app.bsky.actor.profile",
            "avatar": self.blob("image/jpeg"),
            "createdAt": created,
            "description": self.words(WORDS_EN),
            "displayName": self.handles[did].split('.').next().unwrap_or_default(),
        });
        if self.rng.random_bool(0.5) {
            record["banner"] = self.blob("image/jpeg");
        }
        self.commit(
            time_us,
            did,
            "update",
            "app.bsky.actor.profile",
            "self".to_owned(),
            Some(&record),
        )
        .0
    }

    fn delete(&mut self, time_us: u64) -> String {
        let target = if self.recent_records.is_empty() {
            None
        } else {
            let i = self.rng.random_range(0..self.recent_records.len());
            self.recent_records.remove(i)
        };
        let target = match target {
            Some(t) => t,
            None => {
                let clock = self.clock_id();
                RecordRef {
                    did: self.pick_did(),
                    collection: "app.bsky.feed.like",
                    rkey: tid(time_us.saturating_sub(3_600_000_000), clock),
                }
            }
        };
        self.commit(
            time_us,
            target.did,
            "delete",
            target.collection,
            target.rkey,
            None,
        )
        .0
    }

    fn identity(&mut self, time_us: u64) -> String {
        let did = self.pick_did();
        self.seq += self.rng.random_range(1..50);
        let identity = json!({
            "did": self.dids[did],
            "handle": self.handles[did],
            "seq": self.seq,
            "time": rfc3339_millis(time_us.saturating_sub(300_000)),
        });
        self.envelope(time_us, did, "identity", None, Some(identity), None)
    }

    fn account(&mut self, time_us: u64) -> String {
        let did = self.pick_did();
        self.seq += self.rng.random_range(1..50);
        let mut account = json!({
            "active": true,
            "did": self.dids[did],
            "seq": self.seq,
            "time": rfc3339_millis(time_us.saturating_sub(300_000)),
        });
        if self.rng.random_bool(0.2) {
            account["active"] = json!(false);
            let statuses = ["deactivated", "takendown", "deleted"];
            account["status"] = json!(statuses[self.rng.random_range(0..statuses.len())]);
        }
        self.envelope(time_us, did, "account", None, None, Some(account))
    }

    /// A create with a fresh rkey; remembered as a target for later deletes.
    /// Returns the line, the rkey and the record's CID.
    pub(super) fn create(
        &mut self,
        time_us: u64,
        did: usize,
        collection: &'static str,
        record: &Value,
    ) -> (String, String, String) {
        let clock = self.clock_id();
        let rkey = tid(
            time_us.saturating_sub(self.rng.random_range(0..500_000)),
            clock,
        );
        let (line, cid) = self.commit(
            time_us,
            did,
            "create",
            collection,
            rkey.clone(),
            Some(record),
        );
        self.recent_records.push_back(RecordRef {
            did,
            collection,
            rkey: rkey.clone(),
        });
        if self.recent_records.len() > RECENT_RECORDS {
            self.recent_records.pop_front();
        }
        (line, rkey, cid)
    }

    /// A commit event line and the record's CID (empty for deletes).
    fn commit(
        &mut self,
        time_us: u64,
        did: usize,
        operation: &'static str,
        collection: &'static str,
        rkey: String,
        record: Option<&Value>,
    ) -> (String, String) {
        let clock = self.clock_id();
        let cid = record.map(|r| record_cid(&r.to_string()));
        let commit = CommitOut {
            rev: tid(time_us, clock),
            operation,
            collection,
            rkey,
            record,
            cid: cid.clone(),
        };
        let line = self.envelope(time_us, did, "commit", Some(commit), None, None);
        (line, cid.unwrap_or_default())
    }

    fn envelope(
        &self,
        time_us: u64,
        did: usize,
        kind: &'static str,
        commit: Option<CommitOut<'_>>,
        identity: Option<Value>,
        account: Option<Value>,
    ) -> String {
        let event = EventOut {
            did: &self.dids[did],
            time_us,
            kind,
            commit,
            identity,
            account,
        };
        serde_json::to_string(&event)
            .expect("invariant: plain structs and JSON values always serialise")
    }
}

/// A deterministic corpus of `count` Jetstream v1 JSON lines for tests, benches and
/// `fake-jetstream generate`: the same mix as generate mode, `time_us` strictly increasing
/// from `start_time_us` in steps of 50–400 µs, real record CIDs. Same inputs, same lines.
pub fn generate_corpus(count: usize, seed: u64, start_time_us: u64) -> Vec<String> {
    let mut generator = Generator::new(seed);
    let mut time_us = start_time_us;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        if i > 0 {
            time_us += generator.step_us();
        }
        out.push(generator.next_event(time_us));
    }
    out
}
