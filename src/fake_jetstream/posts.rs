//! Posts of generated events: text in a few languages, facets with correct UTF-8 byte
//! offsets, replies into recent threads, and embeds (images with blob refs, external links,
//! quotes), as an extension of [`super::generate::Generator`].
//!
//! Pure, deterministic for the generator's seed. Failure: none.

use rand::RngExt as _;
use serde_json::{Value, json};

use super::generate::{DID_POOL, Generator, RECENT_POSTS, RecentPost, StrongRef};

pub(super) const WORDS_EN: &[&str] = &[
    "the",
    "a",
    "today",
    "coffee",
    "bluesky",
    "feed",
    "cat",
    "dog",
    "just",
    "finished",
    "reading",
    "great",
    "thread",
    "about",
    "rust",
    "music",
    "weather",
    "is",
    "really",
    "nice",
    "weekend",
    "project",
    "shipping",
    "new",
    "photo",
    "sunset",
    "morning",
    "art",
    "love",
    "this",
    "community",
    "posting",
    "again",
    "why",
    "does",
    "everyone",
    "think",
    "it",
    "works",
    "okay",
    "honestly",
    "finally",
    "home",
    "tired",
    "happy",
    "garden",
    "book",
    "game",
    "night",
    "city",
];
const WORDS_PT: &[&str] = &[
    "bom", "dia", "que", "lindo", "acabei", "de", "ler", "obrigado", "muito", "hoje", "café",
    "amigos", "saudade", "praia", "trabalho",
];
const WORDS_DE: &[&str] = &[
    "guten",
    "Morgen",
    "heute",
    "endlich",
    "Kaffee",
    "schön",
    "Wochenende",
    "wieder",
    "danke",
    "Regen",
];
const PHRASES_JA: &[&str] = &[
    "今日はいい天気ですね",
    "おはようございます",
    "新しい絵を描きました",
    "コーヒーが美味しい",
    "ありがとうございます",
    "週末は何をしようかな",
];
pub(super) const EMOJI: &[&str] = &["🦋", "✨", "😂", "🔥", "🌱", "☕", "🎨", "💙"];
const TAGS: &[&str] = &["art", "rust", "photography", "music", "books", "gardening"];

impl Generator {
    pub(super) fn post(&mut self, time_us: u64) -> String {
        let did = self.pick_did();
        let (_, created) = self.created_at(time_us);
        let (mut text, langs) = self.post_text();
        let mut record = json!({
            "$type": "app.bsky.feed.post",
            "createdAt": created,
        });
        if let Some(langs) = langs {
            record["langs"] = json!([langs]);
        }
        if self.rng.random_bool(0.15) {
            record["facets"] = json!([self.facet(&mut text)]);
        }
        if self.rng.random_bool(0.25) {
            let (parent, root) = self.some_post(time_us);
            record["reply"] = json!({
                "parent": { "cid": parent.cid, "uri": parent.uri },
                "root": { "cid": root.cid, "uri": root.uri },
            });
        }
        if self.rng.random_bool(0.2) {
            record["embed"] = self.embed(time_us);
        }
        record["text"] = Value::String(text);
        let (line, rkey, cid) = self.create(time_us, did, "app.bsky.feed.post", &record);
        let post = StrongRef {
            uri: format!("at://{}/app.bsky.feed.post/{rkey}", self.dids[did]),
            cid,
        };
        let root = match record.pointer("/reply/root") {
            Some(root) => StrongRef {
                uri: root["uri"].as_str().unwrap_or_default().to_owned(),
                cid: root["cid"].as_str().unwrap_or_default().to_owned(),
            },
            None => post.clone(),
        };
        self.recent_posts.push_back(RecentPost { post, root });
        if self.recent_posts.len() > RECENT_POSTS {
            self.recent_posts.pop_front();
        }
        line
    }

    /// Text and language of a post.
    fn post_text(&mut self) -> (String, Option<&'static str>) {
        let roll = self.rng.random_range(0..100u32);
        let (mut text, lang) = match roll {
            0..10 => {
                let phrase = PHRASES_JA[self.rng.random_range(0..PHRASES_JA.len())];
                (phrase.to_owned(), Some("ja"))
            }
            10..20 => (self.words(WORDS_PT), Some("pt")),
            20..25 => (self.words(WORDS_DE), Some("de")),
            25..30 => (self.words(WORDS_EN), None),
            _ => (self.words(WORDS_EN), Some("en")),
        };
        if self.rng.random_bool(0.15) {
            text.push(' ');
            text.push_str(EMOJI[self.rng.random_range(0..EMOJI.len())]);
        }
        (text, lang)
    }

    pub(super) fn words(&mut self, list: &[&str]) -> String {
        let n = self.rng.random_range(3..25);
        let words: Vec<&str> = (0..n)
            .map(|_| list[self.rng.random_range(0..list.len())])
            .collect();
        words.join(" ")
    }

    /// Appends a link, tag or mention to `text` and returns its facet (UTF-8 byte offsets).
    fn facet(&mut self, text: &mut String) -> Value {
        text.push(' ');
        let start = text.len();
        let feature = match self.rng.random_range(0..3u32) {
            0 => {
                let uri = format!(
                    "https://example.com/{}",
                    self.rng.random_range(0..100_000u32)
                );
                text.push_str(&uri);
                json!({ "$type": "app.bsky.richtext.facet#link", "uri": uri })
            }
            1 => {
                let tag = TAGS[self.rng.random_range(0..TAGS.len())];
                text.push('#');
                text.push_str(tag);
                json!({ "$type": "app.bsky.richtext.facet#tag", "tag": tag })
            }
            _ => {
                let who = self.rng.random_range(0..DID_POOL);
                text.push('@');
                text.push_str(&self.handles[who]);
                json!({ "$type": "app.bsky.richtext.facet#mention", "did": self.dids[who] })
            }
        };
        json!({
            "features": [feature],
            "index": { "byteEnd": text.len(), "byteStart": start },
        })
    }

    fn embed(&mut self, time_us: u64) -> Value {
        match self.rng.random_range(0..100u32) {
            0..60 => {
                let count = self.rng.random_range(1..=4);
                let images: Vec<Value> = (0..count)
                    .map(|_| {
                        json!({
                            "alt": if self.rng.random_bool(0.4) { "a photo" } else { "" },
                            "aspectRatio": {
                                "height": self.rng.random_range(300..2000u32),
                                "width": self.rng.random_range(300..2000u32),
                            },
                            "image": self.blob("image/jpeg"),
                        })
                    })
                    .collect();
                json!({ "$type": "app.bsky.embed.images", "images": images })
            }
            60..85 => {
                let mut external = json!({
                    "description": "An article worth reading",
                    "title": "Example article",
                    "uri": format!("https://example.com/articles/{}", self.rng.random_range(0..10_000u32)),
                });
                if self.rng.random_bool(0.5) {
                    external["thumb"] = self.blob("image/jpeg");
                }
                json!({ "$type": "app.bsky.embed.external", "external": external })
            }
            _ => {
                let (quoted, _) = self.some_post(time_us);
                json!({
                    "$type": "app.bsky.embed.record",
                    "record": { "cid": quoted.cid, "uri": quoted.uri },
                })
            }
        }
    }
}
