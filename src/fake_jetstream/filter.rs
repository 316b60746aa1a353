//! What a subscriber asked for: the `/subscribe` query string and the `options_update`
//! messages of the Jetstream v1 wire, turned into a [`Filter`] and [`SubscribeParams`].
//!
//! Rules kept from Jetstream v1: `wantedCollections` holds exact NSIDs or `prefix.*` patterns
//! (the head of a pattern is not validated), at most 100; `wantedDids` holds DIDs, at most
//! 10,000 after de-duplication; the collection filter applies to commit events only (identity
//! and account events, and commits without a collection, always pass it); `wantedDids` applies
//! to every kind; `maxMessageSizeBytes` that is empty, malformed or negative means "no cap";
//! `requireHello` and `compress` are on only for the literal `true`.
//!
//! Failure: an invalid query is an `Err(message)` the server answers with HTTP 400. An invalid
//! `options_update` is an `Err` the session logs and ignores (the filter stays as it was).

use std::collections::HashSet;

use serde::Deserialize;

use super::feed::{Kind, Meta};

/// Jetstream v1's cap on collection filters per subscriber.
const MAX_WANTED_COLLECTIONS: usize = 100;
/// Jetstream v1's cap on DID filters per subscriber.
const MAX_WANTED_DIDS: usize = 10_000;

/// Everything a `/subscribe` request asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubscribeParams {
    pub cursor: Option<u64>,
    pub compress: bool,
    pub require_hello: bool,
    /// Raw values, as asked (for the connection record).
    pub wanted_collections: Vec<String>,
    pub wanted_dids: Vec<String>,
    pub filter: Filter,
}

impl SubscribeParams {
    /// Parses a query string (without `?`). `socket_encoding` is the `Socket-Encoding`
    /// header, Jetstream's other way to ask for zstd.
    pub fn parse(query: &str, socket_encoding: Option<&str>) -> Result<SubscribeParams, String> {
        let mut params = SubscribeParams::default();
        let mut max_size = "";
        let mut raw_pairs = Vec::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            raw_pairs.push((key.into_owned(), value.into_owned()));
        }
        for (key, value) in &raw_pairs {
            match key.as_str() {
                "wantedCollections" => params.wanted_collections.push(value.clone()),
                "wantedDids" => params.wanted_dids.push(value.clone()),
                "cursor" if value.is_empty() => {}
                "cursor" => {
                    let cursor = value.parse::<u64>().map_err(|_| {
                        format!("invalid cursor {value:?}: expected unix microseconds")
                    })?;
                    params.cursor = Some(cursor);
                }
                "compress" => params.compress = value == "true",
                "requireHello" => params.require_hello = value == "true",
                "maxMessageSizeBytes" => max_size = value.as_str(),
                _ => {}
            }
        }
        if socket_encoding.is_some_and(|v| v.contains("zstd")) {
            params.compress = true;
        }
        params.filter = Filter::new(
            &params.wanted_collections,
            &params.wanted_dids,
            parse_max_size(max_size),
        )?;
        Ok(params)
    }
}

/// `maxMessageSizeBytes` from a query: anything but a non-negative integer means no cap.
fn parse_max_size(raw: &str) -> u64 {
    raw.parse::<i64>()
        .ok()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// A subscriber's filter. The default matches every event and has no size cap.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// `None` = every DID.
    dids: Option<HashSet<String>>,
    /// `None` = every collection.
    collections: Option<Collections>,
    /// 0 = no cap; otherwise frames longer than this (uncompressed) are not sent.
    max_message_size: u64,
}

#[derive(Debug, Clone)]
struct Collections {
    exact: HashSet<String>,
    /// Each ends with `.` (`app.bsky.feed.*` is kept as `app.bsky.feed.`).
    prefixes: Vec<String>,
}

impl Collections {
    fn matches(&self, collection: &str) -> bool {
        self.exact.contains(collection) || self.prefixes.iter().any(|p| collection.starts_with(p))
    }
}

impl Filter {
    pub fn new(
        collections: &[String],
        dids: &[String],
        max_message_size: u64,
    ) -> Result<Filter, String> {
        Ok(Filter {
            dids: parse_dids(dids)?,
            collections: parse_collections(collections)?,
            max_message_size,
        })
    }

    /// Whether an event with this metadata passes the collection and DID filters.
    pub fn wants(&self, meta: &Meta) -> bool {
        if let Some(dids) = &self.dids {
            match &meta.did {
                Some(did) if dids.contains(did.as_ref()) => {}
                _ => return false,
            }
        }
        match (&self.collections, meta.kind, &meta.collection) {
            (Some(wanted), Kind::Commit, Some(collection)) => wanted.matches(collection),
            _ => true,
        }
    }

    /// Whether a frame of `len` bytes (uncompressed) is over the subscriber's cap.
    pub fn too_big(&self, len: usize) -> bool {
        self.max_message_size != 0 && len as u64 > self.max_message_size
    }
}

fn parse_collections(values: &[String]) -> Result<Option<Collections>, String> {
    if values.is_empty() {
        return Ok(None);
    }
    let mut exact = HashSet::new();
    let mut prefixes: Vec<String> = Vec::new();
    for raw in values {
        if let Some(head) = raw.strip_suffix('*').filter(|h| h.ends_with('.')) {
            if !prefixes.iter().any(|p| p == head) {
                prefixes.push(head.to_owned());
            }
        } else if is_valid_nsid(raw) {
            exact.insert(raw.clone());
        } else {
            return Err(format!("invalid collection: {raw}"));
        }
        if exact.len() + prefixes.len() > MAX_WANTED_COLLECTIONS {
            return Err(format!(
                "too many wanted collections: > {MAX_WANTED_COLLECTIONS}"
            ));
        }
    }
    Ok(Some(Collections { exact, prefixes }))
}

fn parse_dids(values: &[String]) -> Result<Option<HashSet<String>>, String> {
    if values.is_empty() {
        return Ok(None);
    }
    let mut out = HashSet::with_capacity(values.len().min(MAX_WANTED_DIDS));
    for raw in values {
        if !is_valid_did(raw) {
            return Err(format!("invalid DID: {raw}"));
        }
        out.insert(raw.clone());
        if out.len() > MAX_WANTED_DIDS {
            return Err(format!("too many wanted DIDs: > {MAX_WANTED_DIDS}"));
        }
    }
    Ok(Some(out))
}

/// NSID syntax (atproto): at least three dot-separated segments; domain segments of
/// letters, digits and inner hyphens (the first not starting with a digit); a name segment
/// of letters and digits starting with a letter; at most 317 characters.
pub(crate) fn is_valid_nsid(nsid: &str) -> bool {
    if nsid.len() > 317 || !nsid.is_ascii() {
        return false;
    }
    let segments: Vec<&str> = nsid.split('.').collect();
    let Some((name, domain)) = segments.split_last() else {
        return false;
    };
    if segments.len() < 3 {
        return false;
    }
    let domain_ok = domain.iter().enumerate().all(|(i, seg)| {
        (1..=63).contains(&seg.len())
            && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !seg.starts_with('-')
            && !seg.ends_with('-')
            && !(i == 0 && seg.starts_with(|c: char| c.is_ascii_digit()))
    });
    let name_ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric());
    domain_ok && name_ok
}

/// DID syntax (atproto): `did:` + lower-case method + `:` + identifier of
/// `[A-Za-z0-9._:%-]`, not ending in `:` or `%`, at most 2048 characters.
pub(crate) fn is_valid_did(did: &str) -> bool {
    let Some(rest) = did.strip_prefix("did:") else {
        return false;
    };
    let Some((method, id)) = rest.split_once(':') else {
        return false;
    };
    did.len() <= 2048
        && !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_lowercase())
        && !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:_%-".contains(&b))
        && !id.ends_with(':')
        && !id.ends_with('%')
}

/// A message a subscriber sent over the socket.
#[derive(Debug)]
pub(crate) enum ClientMessage {
    /// A valid `options_update`: the filter that replaces the current one.
    OptionsUpdate(Filter),
    /// A well-formed message of a type we do not act on (Jetstream ignores these too).
    Other(String),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UpdatePayload {
    #[serde(default)]
    wanted_collections: Vec<String>,
    #[serde(default)]
    wanted_dids: Vec<String>,
    #[serde(default)]
    max_message_size_bytes: i64,
}

/// Parses a text message from a subscriber. `options_update` replaces the whole filter:
/// fields left out mean "everything", as in Jetstream v1.
pub(crate) fn parse_client_message(text: &str) -> Result<ClientMessage, String> {
    let envelope: Envelope =
        serde_json::from_str(text).map_err(|e| format!("not a subscriber message: {e}"))?;
    if envelope.kind != "options_update" {
        return Ok(ClientMessage::Other(envelope.kind));
    }
    let payload: UpdatePayload = match envelope.payload {
        Some(value) => {
            serde_json::from_value(value).map_err(|e| format!("invalid options_update: {e}"))?
        }
        None => UpdatePayload::default(),
    };
    let filter = Filter::new(
        &payload.wanted_collections,
        &payload.wanted_dids,
        u64::try_from(payload.max_message_size_bytes).unwrap_or(0),
    )?;
    Ok(ClientMessage::OptionsUpdate(filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(did: &str, collection: &str) -> Meta {
        Meta {
            did: Some(did.into()),
            kind: Kind::Commit,
            collection: Some(collection.into()),
        }
    }

    #[test]
    fn query_parsing() {
        let p = SubscribeParams::parse(
            "wantedCollections=app.bsky.feed.*&wantedCollections=app.bsky.graph.follow&wantedDids=did%3Aplc%3Aabc&cursor=123&compress=true&requireHello=true&maxMessageSizeBytes=-5",
            None,
        )
        .expect("valid query");
        assert_eq!(p.cursor, Some(123));
        assert!(p.compress && p.require_hello);
        assert_eq!(p.wanted_dids, vec!["did:plc:abc".to_owned()]);
        assert!(p.filter.wants(&commit("did:plc:abc", "app.bsky.feed.like")));
        assert!(
            p.filter
                .wants(&commit("did:plc:abc", "app.bsky.graph.follow"))
        );
        assert!(
            !p.filter
                .wants(&commit("did:plc:abc", "app.bsky.graph.block"))
        );
        assert!(!p.filter.wants(&commit("did:plc:zzz", "app.bsky.feed.like")));
        let identity = Meta {
            did: Some("did:plc:abc".into()),
            kind: Kind::Identity,
            collection: None,
        };
        assert!(p.filter.wants(&identity));
        assert!(!p.filter.too_big(1 << 30));
    }

    #[test]
    fn bad_queries_are_rejected() {
        assert!(SubscribeParams::parse("cursor=abc", None).is_err());
        assert!(SubscribeParams::parse("wantedCollections=app.bsky", None).is_err());
        assert!(SubscribeParams::parse("wantedCollections=app.bsky.fo*", None).is_err());
        assert!(SubscribeParams::parse("wantedDids=plc:abc", None).is_err());
        assert!(SubscribeParams::parse("cursor=", None).is_ok());
        let zstd = SubscribeParams::parse("", Some("zstd")).expect("valid");
        assert!(zstd.compress);
    }

    #[test]
    fn nsid_and_did_syntax() {
        assert!(is_valid_nsid("app.bsky.feed.post"));
        assert!(is_valid_nsid("place.stream.broadcast.origin"));
        assert!(!is_valid_nsid("app.bsky"));
        assert!(!is_valid_nsid("1app.bsky.post"));
        assert!(!is_valid_nsid("app.bsky.feed.po-st"));
        assert!(is_valid_did("did:plc:mcc5yghbk7tixqryac2yxku7"));
        assert!(is_valid_did("did:web:example.com"));
        assert!(!is_valid_did("did:PLC:x"));
        assert!(!is_valid_did("did:plc:"));
    }

    #[test]
    fn options_update_messages() {
        let msg = parse_client_message(
            r#"{"type":"options_update","payload":{"wantedCollections":["app.bsky.feed.post"],"maxMessageSizeBytes":10}}"#,
        )
        .expect("valid message");
        let ClientMessage::OptionsUpdate(filter) = msg else {
            panic!("expected an options_update");
        };
        assert!(filter.wants(&commit("did:plc:a", "app.bsky.feed.post")));
        assert!(!filter.wants(&commit("did:plc:a", "app.bsky.feed.like")));
        assert!(filter.too_big(11));
        assert!(matches!(
            parse_client_message(r#"{"type":"hello"}"#),
            Ok(ClientMessage::Other(_))
        ));
        assert!(parse_client_message("nope").is_err());
        assert!(
            parse_client_message(r#"{"type":"options_update","payload":{"wantedDids":["nope"]}}"#)
                .is_err()
        );
    }
}
