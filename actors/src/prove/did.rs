//! DID documents: where an account's repository lives (`#atproto_pds` service) and which key
//! signs it (`#atproto` verification method), and where to fetch the document from
//! (`did:plc` → `{plc}/{did}`, `did:web` → `https://{host}/.well-known/did.json`).
//!
//! Pure: the HTTP fetch and the cache live in the worker shell (`resolver.rs`).

use serde_json::Value;

use super::key::{KeyError, PublicKey};

/// Why a DID document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DidError {
    #[error("unsupported DID method: {0}")]
    Unsupported(String),
    #[error("DID document is not for {0}")]
    WrongId(String),
    #[error("DID document has no #atproto key")]
    NoKey,
    #[error("DID document key: {0}")]
    BadKey(KeyError),
    #[error("DID document has no #atproto_pds endpoint")]
    NoPds,
    #[error("DID document is not JSON: {0}")]
    NotJson(String),
}

impl DidError {
    pub fn reason(&self) -> &'static str {
        match self {
            DidError::Unsupported(_) => "did_unsupported",
            DidError::WrongId(_) => "did_doc_wrong_id",
            DidError::NoKey => "did_doc_no_key",
            DidError::BadKey(_) => "did_doc_bad_key",
            DidError::NoPds => "did_doc_no_pds",
            DidError::NotJson(_) => "did_doc_not_json",
        }
    }
}

/// What proving needs from a DID document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub did: String,
    /// The PDS base URL, without a trailing slash.
    pub pds: String,
    pub key: PublicKey,
}

/// The URL of `did`'s document: `{plc}/{did}` or `{web_scheme}://{host}/.well-known/did.json`
/// (`web_scheme` is `https`; tests use `http` towards a loopback fake).
pub fn document_url(did: &str, plc: &str, web_scheme: &str) -> Result<String, DidError> {
    if did.starts_with("did:plc:") {
        Ok(format!("{}/{did}", plc.trim_end_matches('/')))
    } else if let Some(host) = did.strip_prefix("did:web:") {
        // A did:web with a path (`did:web:host:path`) is not an atproto account; a port is
        // percent-encoded (`%3A`).
        if host.is_empty() || host.contains(':') || host.contains('/') {
            return Err(DidError::Unsupported(did.to_owned()));
        }
        let host = host.replace("%3A", ":").replace("%3a", ":");
        Ok(format!("{web_scheme}://{host}/.well-known/did.json"))
    } else {
        Err(DidError::Unsupported(did.to_owned()))
    }
}

fn fragment_is(id: &str, did: &str, fragment: &str) -> bool {
    id == fragment || id.strip_prefix(did) == Some(fragment)
}

/// Extracts the PDS endpoint and `#atproto` key of `did` from its document.
pub fn parse_document(did: &str, doc: &[u8]) -> Result<Identity, DidError> {
    let doc: Value = serde_json::from_slice(doc).map_err(|e| DidError::NotJson(e.to_string()))?;
    if doc.get("id").and_then(Value::as_str) != Some(did) {
        return Err(DidError::WrongId(did.to_owned()));
    }
    let method = doc
        .get("verificationMethod")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|m| {
            m.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| fragment_is(id, did, "#atproto"))
        })
        .ok_or(DidError::NoKey)?;
    let (Some(kind), Some(multibase)) = (
        method.get("type").and_then(Value::as_str),
        method.get("publicKeyMultibase").and_then(Value::as_str),
    ) else {
        return Err(DidError::NoKey);
    };
    let key = PublicKey::from_verification_method(kind, multibase).map_err(DidError::BadKey)?;
    let pds = doc
        .get("service")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|s| {
            s.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| fragment_is(id, did, "#atproto_pds"))
                && s.get("type").and_then(Value::as_str) == Some("AtprotoPersonalDataServer")
        })
        .and_then(|s| s.get("serviceEndpoint").and_then(Value::as_str))
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .ok_or(DidError::NoPds)?;
    Ok(Identity {
        did: did.to_owned(),
        pds: pds.trim_end_matches('/').to_owned(),
        key,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::prove::fixtures::did_docs;

    #[test]
    fn every_fixture_document_parses() {
        let docs = did_docs();
        assert_eq!(docs.len(), 148);
        for (did, doc) in &docs {
            let id = parse_document(did, doc.to_string().as_bytes()).unwrap();
            assert!(id.pds.starts_with("https://"), "{did}: {}", id.pds);
            assert_eq!(id.key.algorithm(), "ES256K");
        }
    }

    #[test]
    fn refusals_and_urls() {
        let (did, doc) = did_docs().into_iter().next().unwrap();
        let mut other = doc.clone();
        other["id"] = "did:plc:someoneelse".into();
        let err = parse_document(&did, other.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.reason(), "did_doc_wrong_id");
        let mut no_pds = doc.clone();
        no_pds["service"] = serde_json::json!([]);
        let err = parse_document(&did, no_pds.to_string().as_bytes()).unwrap_err();
        assert_eq!(err, DidError::NoPds);
        let mut no_key = doc.clone();
        no_key["verificationMethod"][0]["id"] = format!("{did}#other").into();
        assert_eq!(
            parse_document(&did, no_key.to_string().as_bytes()).unwrap_err(),
            DidError::NoKey
        );
        assert_eq!(
            document_url("did:plc:abc", "https://plc.directory/", "https").unwrap(),
            "https://plc.directory/did:plc:abc"
        );
        assert_eq!(
            document_url("did:web:example.com", "", "https").unwrap(),
            "https://example.com/.well-known/did.json"
        );
        assert_eq!(
            document_url("did:web:127.0.0.1%3A8080", "", "http").unwrap(),
            "http://127.0.0.1:8080/.well-known/did.json"
        );
        assert!(document_url("did:web:example.com:u:alice", "", "https").is_err());
        assert!(document_url("did:key:z", "", "https").is_err());
    }
}
