//! The subscribe URL, rebuilt on every dial from the committed cursor (docs/design.md §1), the
//! filters that go into it, and the `options_update` message that carries them instead when
//! the URL would be too long (`requireHello`), when the admin changes them on a live socket,
//! or when the reader asks the host to skip oversized frames. Pure.

use serde::Serialize;
use url::Url;

pub use crate::messages::Filters;

/// Jetstream's documented filter limits.
pub const MAX_WANTED_COLLECTIONS: usize = 100;
pub const MAX_WANTED_DIDS: usize = 10_000;

/// A subscribe URL longer than this goes through `requireHello` + `options_update` instead:
/// many servers and proxies cap a request head at 8 KiB (10,000 DIDs make ~450 KB).
pub const MAX_URL_BYTES: usize = 8 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("wanted_collections: {0} entries, Jetstream accepts at most {MAX_WANTED_COLLECTIONS}")]
    TooManyCollections(usize),
    #[error("wanted_dids: {0} entries, Jetstream accepts at most {MAX_WANTED_DIDS}")]
    TooManyDids(usize),
    #[error("wanted_collections: {0:?} is not an NSID or an NSID prefix ending in \".*\"")]
    BadCollection(String),
    #[error("wanted_dids: {0:?} is not a DID (did:method:identifier)")]
    BadDid(String),
}

impl Filters {
    pub fn validate(&self) -> Result<(), FilterError> {
        if self.wanted_collections.len() > MAX_WANTED_COLLECTIONS {
            return Err(FilterError::TooManyCollections(
                self.wanted_collections.len(),
            ));
        }
        if self.wanted_dids.len() > MAX_WANTED_DIDS {
            return Err(FilterError::TooManyDids(self.wanted_dids.len()));
        }
        for c in &self.wanted_collections {
            if !collection_pattern_ok(c) {
                return Err(FilterError::BadCollection(c.clone()));
            }
        }
        for d in &self.wanted_dids {
            let mut parts = d.splitn(3, ':');
            let ok = parts.next() == Some("did")
                && parts
                    .next()
                    .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_lowercase()))
                && parts.next().is_some_and(|id| !id.is_empty());
            if !ok {
                return Err(FilterError::BadDid(d.clone()));
            }
        }
        Ok(())
    }
}

/// An NSID (`a.b.c`) or a prefix pattern (`a.b.*`), segments of `[A-Za-z0-9-]`.
fn collection_pattern_ok(c: &str) -> bool {
    let body = c.strip_suffix(".*").unwrap_or(c);
    let segments: Vec<&str> = body.split('.').collect();
    let min_segments = if body.len() == c.len() { 3 } else { 1 };
    segments.len() >= min_segments
        && c.len() <= 317
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Builds `<endpoint>?wantedCollections=…&wantedDids=…&cursor=…`, keeping any query the
/// endpoint already has.
pub fn subscribe_url(
    endpoint: &str,
    filters: &Filters,
    cursor: Option<u64>,
) -> Result<Url, url::ParseError> {
    let plan = plan_dial(
        endpoint,
        &DialOptions {
            filters,
            cursor,
            compress: false,
            require_hello: false,
            max_message_size: None,
        },
    )?;
    Ok(plan.url)
}

/// Everything one dial asks for.
#[derive(Debug, Clone, Copy)]
pub struct DialOptions<'a> {
    pub filters: &'a Filters,
    pub cursor: Option<u64>,
    /// `compress=true`: zstd frames with the Jetstream dictionary.
    pub compress: bool,
    /// Force `requireHello=true` (otherwise used only when the URL would be too long).
    pub require_hello: bool,
    /// `maxMessageSizeBytes`: the host skips messages bigger than this (used only while
    /// getting past an oversized frame).
    pub max_message_size: Option<usize>,
}

/// A dial: the URL, and the `options_update` to send right after the upgrade when the
/// filters are not in the URL (`requireHello=true`: the host sends nothing until it comes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialPlan {
    pub url: Url,
    pub hello: Option<String>,
}

/// Plans a dial: filters in the URL when it stays under [`MAX_URL_BYTES`] and
/// `require_hello` is off; otherwise `requireHello=true`, no filters in the URL, and the
/// filters (with `maxMessageSizeBytes`) as the first `options_update`.
pub fn plan_dial(endpoint: &str, o: &DialOptions<'_>) -> Result<DialPlan, url::ParseError> {
    let base = Url::parse(endpoint)?;
    let build = |with_filters: bool| {
        let mut url = base.clone();
        {
            let mut q = url.query_pairs_mut();
            if with_filters {
                for c in &o.filters.wanted_collections {
                    q.append_pair("wantedCollections", c);
                }
                for d in &o.filters.wanted_dids {
                    q.append_pair("wantedDids", d);
                }
            }
            if let Some(c) = o.cursor {
                q.append_pair("cursor", &c.to_string());
            }
            if o.compress {
                q.append_pair("compress", "true");
            }
            if !with_filters {
                q.append_pair("requireHello", "true");
            }
            if with_filters && let Some(max) = o.max_message_size {
                q.append_pair("maxMessageSizeBytes", &max.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    };
    if !o.require_hello {
        let url = build(true);
        if url.as_str().len() <= MAX_URL_BYTES {
            return Ok(DialPlan { url, hello: None });
        }
    }
    Ok(DialPlan {
        url: build(false),
        hello: Some(options_update(o.filters, o.max_message_size)),
    })
}

/// The Jetstream `options_update` subscriber message. It replaces the whole subscription
/// (collections, DIDs and size cap: a field left empty means "everything" / "no cap"), so it
/// always carries all three.
pub fn options_update(filters: &Filters, max_message_size: Option<usize>) -> String {
    #[derive(Serialize)]
    struct Payload<'a> {
        #[serde(rename = "wantedCollections")]
        wanted_collections: &'a [String],
        #[serde(rename = "wantedDids")]
        wanted_dids: &'a [String],
        #[serde(rename = "maxMessageSizeBytes")]
        max_message_size_bytes: usize,
    }
    #[derive(Serialize)]
    struct Message<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        payload: Payload<'a>,
    }
    let message = Message {
        kind: "options_update",
        payload: Payload {
            wanted_collections: &filters.wanted_collections,
            wanted_dids: &filters.wanted_dids,
            max_message_size_bytes: max_message_size.unwrap_or(0),
        },
    };
    // Strings and numbers only: serialising cannot fail.
    serde_json::to_string(&message).unwrap_or_default()
}

/// `host[:port]` of an endpoint, the `source` of every job read from it.
pub fn source_of(endpoint: &str) -> String {
    match Url::parse(endpoint) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => endpoint.to_owned(),
        },
        Err(_) => endpoint.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_carries_filters_and_cursor() {
        let f = Filters {
            wanted_collections: vec!["app.bsky.feed.post".into(), "app.bsky.graph.*".into()],
            wanted_dids: vec!["did:plc:abc".into()],
        };
        let u = subscribe_url("wss://h.example/subscribe", &f, Some(123)).expect("valid");
        assert_eq!(
            u.as_str(),
            "wss://h.example/subscribe?wantedCollections=app.bsky.feed.post&wantedCollections=app.bsky.graph.*&wantedDids=did%3Aplc%3Aabc&cursor=123"
        );
    }

    #[test]
    fn url_without_anything_has_no_query() {
        let u =
            subscribe_url("ws://127.0.0.1:9/subscribe", &Filters::default(), None).expect("valid");
        assert_eq!(u.as_str(), "ws://127.0.0.1:9/subscribe");
        assert_eq!(source_of("ws://127.0.0.1:9/subscribe"), "127.0.0.1:9");
        assert_eq!(
            source_of("wss://jetstream2.us-east.bsky.network/subscribe"),
            "jetstream2.us-east.bsky.network"
        );
    }

    #[test]
    fn filters_are_validated() {
        let ok = Filters {
            wanted_collections: vec!["app.bsky.*".into(), "app.bsky.feed.like".into()],
            wanted_dids: vec![],
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad = Filters {
            wanted_collections: vec!["app..post".into()],
            wanted_dids: vec![],
        };
        assert!(matches!(bad.validate(), Err(FilterError::BadCollection(_))));
        let two = Filters {
            wanted_collections: vec!["app.bsky".into()],
            wanted_dids: vec![],
        };
        assert!(two.validate().is_err(), "an NSID needs three segments");
        let did = Filters {
            wanted_collections: vec![],
            wanted_dids: vec!["plc:abc".into()],
        };
        assert!(matches!(did.validate(), Err(FilterError::BadDid(_))));
        let many = Filters {
            wanted_collections: vec!["a.b.c".into(); 101],
            wanted_dids: vec![],
        };
        assert_eq!(many.validate(), Err(FilterError::TooManyCollections(101)));
    }

    #[test]
    fn compress_and_size_cap_go_into_the_url() {
        let f = Filters {
            wanted_collections: vec!["app.bsky.feed.post".into()],
            wanted_dids: vec![],
        };
        let plan = plan_dial(
            "wss://h.example/subscribe",
            &DialOptions {
                filters: &f,
                cursor: Some(5),
                compress: true,
                require_hello: false,
                max_message_size: Some(1024),
            },
        )
        .expect("valid");
        assert_eq!(
            plan.url.as_str(),
            "wss://h.example/subscribe?wantedCollections=app.bsky.feed.post&cursor=5&compress=true&maxMessageSizeBytes=1024"
        );
        assert_eq!(plan.hello, None);
    }

    #[test]
    fn require_hello_moves_filters_into_the_first_options_update() {
        let f = Filters {
            wanted_collections: vec!["app.bsky.feed.post".into()],
            wanted_dids: vec!["did:plc:abc".into()],
        };
        let plan = plan_dial(
            "ws://127.0.0.1:9/subscribe",
            &DialOptions {
                filters: &f,
                cursor: Some(7),
                compress: false,
                require_hello: true,
                max_message_size: Some(2048),
            },
        )
        .expect("valid");
        assert_eq!(
            plan.url.as_str(),
            "ws://127.0.0.1:9/subscribe?cursor=7&requireHello=true"
        );
        let hello: serde_json::Value =
            serde_json::from_str(plan.hello.as_deref().expect("a hello")).expect("json");
        assert_eq!(
            hello,
            serde_json::json!({"type": "options_update", "payload": {
                "wantedCollections": ["app.bsky.feed.post"],
                "wantedDids": ["did:plc:abc"],
                "maxMessageSizeBytes": 2048
            }})
        );
    }

    #[test]
    fn a_url_that_would_be_too_long_switches_to_require_hello() {
        let many = Filters {
            wanted_collections: vec![],
            wanted_dids: (0..MAX_WANTED_DIDS)
                .map(|i| format!("did:plc:{i:024}"))
                .collect(),
        };
        assert_eq!(many.validate(), Ok(()));
        let opts = DialOptions {
            filters: &many,
            cursor: None,
            compress: false,
            require_hello: false,
            max_message_size: None,
        };
        let plan = plan_dial("ws://h/subscribe", &opts).expect("valid");
        assert_eq!(plan.url.as_str(), "ws://h/subscribe?requireHello=true");
        assert!(plan.hello.as_deref().is_some_and(|h| h.len() > 300_000));
        let few = Filters {
            wanted_dids: many.wanted_dids[..100].to_vec(),
            ..Filters::default()
        };
        let plan = plan_dial(
            "ws://h/subscribe",
            &DialOptions {
                filters: &few,
                ..opts
            },
        )
        .expect("valid");
        assert!(plan.hello.is_none() && plan.url.as_str().len() <= MAX_URL_BYTES);
        let over = Filters {
            wanted_dids: (0..=MAX_WANTED_DIDS)
                .map(|i| format!("did:plc:{i}"))
                .collect(),
            ..Filters::default()
        };
        assert_eq!(
            over.validate().map_err(|e| e.to_string()),
            Err("wanted_dids: 10001 entries, Jetstream accepts at most 10000".to_owned())
        );
    }
}
