//! The subscribe URL, rebuilt on every dial from the committed cursor (DESIGN.md §1), and the
//! filters that go into it. Pure.

use serde::{Deserialize, Serialize};
use url::Url;

/// Jetstream's documented filter limits.
pub const MAX_WANTED_COLLECTIONS: usize = 100;
pub const MAX_WANTED_DIDS: usize = 10_000;

/// What to ask Jetstream for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    #[serde(rename = "wantedCollections", default)]
    pub wanted_collections: Vec<String>,
    #[serde(rename = "wantedDids", default)]
    pub wanted_dids: Vec<String>,
}

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
    let mut url = Url::parse(endpoint)?;
    {
        let mut q = url.query_pairs_mut();
        for c in &filters.wanted_collections {
            q.append_pair("wantedCollections", c);
        }
        for d in &filters.wanted_dids {
            q.append_pair("wantedDids", d);
        }
        if let Some(c) = cursor {
            q.append_pair("cursor", &c.to_string());
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
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
}
