//! Routes: which stream a record job goes to, by collection pattern (`app.bsky.feed.*` →
//! `feed`). Decided here, next to the other collection matching; the writer only follows
//! the stream name the verdict carries. Pure; bad routes fail at startup.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::filter::Patterns;

/// Stream names the ingestor uses for its own keys: a route may not take them.
const RESERVED: [&str; 6] = [
    "identity",
    "dead",
    "cursor",
    "dedupe",
    "heartbeat",
    "control",
];

/// `[[verifier.routes]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// NSIDs or `prefix.*` patterns.
    pub collections: Vec<String>,
    /// Stream name after the key prefix (`feed` → `jsi:feed`).
    pub stream: String,
}

/// The compiled routes.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<(Patterns, Arc<str>)>,
}

impl Router {
    /// Compiles routes; `Err((index, message))` names the bad one.
    pub fn new(routes: &[Route]) -> Result<Router, (usize, String)> {
        let mut compiled = Vec::with_capacity(routes.len());
        for (i, r) in routes.iter().enumerate() {
            let name_ok = !r.stream.is_empty()
                && r.stream.len() <= 64
                && r.stream
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'));
            if !name_ok {
                return Err((
                    i,
                    format!(
                        "stream {:?} must be 1-64 chars of [A-Za-z0-9_:.-]",
                        r.stream
                    ),
                ));
            }
            if RESERVED.contains(&r.stream.as_str()) {
                return Err((
                    i,
                    format!(
                        "stream {:?} is reserved for the ingestor's own keys",
                        r.stream
                    ),
                ));
            }
            if r.collections.is_empty() {
                return Err((i, "collections must not be empty".to_owned()));
            }
            let patterns = Patterns::parse(&r.collections).map_err(|e| (i, e.to_string()))?;
            compiled.push((patterns, Arc::from(r.stream.as_str())));
        }
        Ok(Router { routes: compiled })
    }

    /// The stream for a collection; `None` = the default `records` stream.
    pub fn stream_for(&self, collection: &str) -> Option<Arc<str>> {
        self.routes
            .iter()
            .find(|(p, _)| p.matches(collection))
            .map(|(_, s)| s.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn route(c: &[&str], s: &str) -> Route {
        Route {
            collections: c.iter().map(|x| (*x).to_owned()).collect(),
            stream: s.to_owned(),
        }
    }

    #[test]
    fn first_matching_route_wins_and_default_is_none() {
        let r = Router::new(&[
            route(&["app.bsky.feed.post"], "posts"),
            route(&["app.bsky.feed.*"], "feed"),
        ])
        .unwrap();
        assert_eq!(r.stream_for("app.bsky.feed.post").as_deref(), Some("posts"));
        assert_eq!(r.stream_for("app.bsky.feed.like").as_deref(), Some("feed"));
        assert_eq!(r.stream_for("app.bsky.graph.follow"), None);
    }

    #[test]
    fn bad_routes_are_named() {
        assert_eq!(
            Router::new(&[route(&["a.b.c"], "ok"), route(&["a.b.c"], "dead")])
                .err()
                .map(|e| e.0),
            Some(1)
        );
        assert!(Router::new(&[route(&["a.b.c"], "with space")]).is_err());
        assert!(Router::new(&[route(&[], "x")]).is_err());
        assert!(Router::new(&[route(&["*"], "x")]).is_err());
    }
}
