//! Collection allow/deny matcher: which collections the verifier lets through.
//!
//! Built once from configuration (bad patterns fail at startup with [`FilterError`]), then
//! queried per event. Patterns are full NSIDs (`app.bsky.feed.post`) or prefixes ending at
//! a segment boundary (`app.bsky.*`, as Jetstream's `wantedCollections` takes them). Deny
//! wins over allow; an empty allow list allows everything not denied. Matching is exact
//! and case-sensitive (the network sends NSIDs lowercase-normalised).

use std::collections::HashSet;

use super::checks::{MAX_NSID_LEN, check_nsid, shown};

/// A pattern the filter refuses, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid collection pattern {pattern}: {reason}")]
pub struct FilterError {
    /// The pattern as given (quoted, capped).
    pub pattern: String,
    pub reason: String,
}

/// One list of patterns, split for fast lookup (also used by the routes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Patterns {
    exact: HashSet<String>,
    /// Prefixes including their trailing `.` (`app.bsky.`), so `app.bskyx.post` does not
    /// match `app.bsky.*`.
    prefixes: Vec<String>,
}

impl Patterns {
    pub(crate) fn parse<S: AsRef<str>>(list: &[S]) -> Result<Patterns, FilterError> {
        let mut patterns = Patterns::default();
        for pattern in list {
            let pattern = pattern.as_ref();
            let err = |reason: String| FilterError {
                pattern: shown(pattern),
                reason,
            };
            if let Some(prefix) = pattern.strip_suffix(".*") {
                check_prefix(prefix).map_err(|why| err(why.to_owned()))?;
                let with_dot = format!("{prefix}.");
                if !patterns.prefixes.contains(&with_dot) {
                    patterns.prefixes.push(with_dot);
                }
            } else if pattern.contains('*') {
                return Err(err(
                    "'*' is only allowed as a final \".*\" segment (\"app.bsky.*\"); \
                                leave the allow list empty to allow everything"
                        .to_owned(),
                ));
            } else {
                check_nsid(pattern).map_err(|e| err(e.message))?;
                patterns.exact.insert(pattern.to_owned());
            }
        }
        Ok(patterns)
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    pub(crate) fn matches(&self, collection: &str) -> bool {
        self.exact.contains(collection)
            || self
                .prefixes
                .iter()
                .any(|p| collection.starts_with(p.as_str()))
    }
}

/// The part before `.*`: one or more domain labels (letters, digits, hyphens; 1–63 chars;
/// no leading/trailing hyphen; the first not starting with a digit).
fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Err("empty prefix before \".*\"");
    }
    if prefix.len() + 2 > MAX_NSID_LEN {
        return Err("prefix longer than an NSID can be");
    }
    for label in prefix.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each segment must be 1-63 chars");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("segment has a character outside [A-Za-z0-9-]");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("segment starts or ends with '-'");
        }
    }
    if prefix.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("first segment starts with a digit");
    }
    Ok(())
}

/// Allow/deny matcher over collection NSIDs. `Default` allows everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectionFilter {
    allow: Patterns,
    deny: Patterns,
}

impl CollectionFilter {
    /// Builds the filter, validating every pattern.
    pub fn new<A: AsRef<str>, D: AsRef<str>>(
        allow: &[A],
        deny: &[D],
    ) -> Result<CollectionFilter, FilterError> {
        Ok(CollectionFilter {
            allow: Patterns::parse(allow)?,
            deny: Patterns::parse(deny)?,
        })
    }

    /// Whether events of `collection` pass: not denied, and allowed (or no allow list).
    pub fn allows(&self, collection: &str) -> bool {
        !self.deny.matches(collection) && (self.allow.is_empty() || self.allow.matches(collection))
    }

    /// True when the filter lets every collection through.
    pub fn is_unrestricted(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NONE: &[&str] = &[];

    #[test]
    fn default_and_empty_allow_everything() {
        let f = CollectionFilter::default();
        assert!(f.is_unrestricted());
        assert!(f.allows("app.bsky.feed.post"));
        let f = CollectionFilter::new(NONE, NONE).unwrap();
        assert_eq!(f, CollectionFilter::default());
    }

    #[test]
    fn allow_exact_and_prefix() {
        let f = CollectionFilter::new(&["app.bsky.feed.post", "com.example.*"], NONE).unwrap();
        assert!(!f.is_unrestricted());
        assert!(f.allows("app.bsky.feed.post"));
        assert!(f.allows("com.example.thing"));
        assert!(f.allows("com.example.deep.thing"));
        assert!(!f.allows("app.bsky.feed.like"));
        assert!(
            !f.allows("com.examplex.thing"),
            "prefix stops at a segment boundary"
        );
        assert!(
            !f.allows("com.example"),
            "the prefix itself is not a collection under it"
        );
    }

    #[test]
    fn deny_wins() {
        let f = CollectionFilter::new(&["app.bsky.*"], &["app.bsky.feed.like", "app.bsky.graph.*"])
            .unwrap();
        assert!(f.allows("app.bsky.feed.post"));
        assert!(!f.allows("app.bsky.feed.like"));
        assert!(!f.allows("app.bsky.graph.follow"));
        assert!(!f.allows("place.stream.thing"));
        let deny_only = CollectionFilter::new(NONE, &["app.bsky.feed.like"]).unwrap();
        assert!(deny_only.allows("place.stream.thing"));
        assert!(!deny_only.allows("app.bsky.feed.like"));
        let both = CollectionFilter::new(&["app.bsky.feed.like"], &["app.bsky.feed.like"]).unwrap();
        assert!(!both.allows("app.bsky.feed.like"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "*",
            ".*",
            "app.*.post",
            "app.bsky*",
            "app.bsky.feed.",
            "app.bsky",
            "app..bsky.*",
            "-app.*",
            "1app.*",
            "app bsky.*",
            "",
        ] {
            let err = CollectionFilter::new(&[bad], NONE).unwrap_err();
            assert!(
                err.to_string().contains("invalid collection pattern"),
                "{err}"
            );
            assert!(CollectionFilter::new(NONE, &[bad]).is_err(), "deny {bad:?}");
        }
        for ok in ["app.*", "app.bsky.*", "app.bsky.feed.post", "a-b.c1.*"] {
            assert!(CollectionFilter::new(&[ok], NONE).is_ok(), "{ok}");
        }
    }
}
