//! Bearer-token authentication of the admin API: the configured token as a [`Secret`] that
//! never prints, and [`TokenCheck`], which keeps only the token's SHA-256 digest and compares
//! the digest of what a request presents in constant time (`subtle`). Hashing first makes
//! tokens of a different length cost the same as wrong ones of the right length, so neither
//! the content nor the length of the token leaks through timing.
//!
//! Missing header, wrong scheme, wrong token, token of another length: one answer, the same
//! 401 with an empty body ([`unauthorized`]); the caller counts it and logs it without the
//! presented value.

use std::fmt;

use actix_web::HttpResponse;
use actix_web::http::header;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// A credential from the configuration. `Debug` and `Serialize` show `<redacted>`, so
/// `check-config`, logs and status never reveal it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that needs it (hashing, or the CLI's request header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// What a request must present. `Open` only exists on loopback listeners (settings refuse a
/// non-loopback listen address without a token).
#[derive(Clone)]
pub enum TokenCheck {
    /// No token configured: every local caller is allowed.
    Open,
    /// SHA-256 of the configured token.
    Digest([u8; 32]),
}

impl TokenCheck {
    pub fn new(token: Option<&Secret>) -> TokenCheck {
        match token {
            Some(t) => TokenCheck::Digest(digest(t.expose().as_bytes())),
            None => TokenCheck::Open,
        }
    }

    /// Whether the `Authorization` header value (if any) carries the right bearer token.
    /// Same work whatever is presented: the presented credential (empty when absent or
    /// malformed) is hashed and compared in constant time.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let TokenCheck::Digest(expected) = self else {
            return true;
        };
        let credential = authorization.and_then(bearer);
        let same: bool = digest(credential.unwrap_or_default())
            .ct_eq(expected)
            .into();
        same && credential.is_some()
    }

    /// Whether a token is configured at all.
    pub fn is_open(&self) -> bool {
        matches!(self, TokenCheck::Open)
    }
}

/// The credential of `Bearer <credential>` (scheme case-insensitive, RFC 6750).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let credential = value[SCHEME.len()..].trim_ascii();
    (!credential.is_empty()).then_some(credential)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The one reply to every failed authentication.
pub fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-token";

    #[test]
    fn only_the_right_bearer_token_passes() {
        let check = TokenCheck::new(Some(&Secret::new(TOKEN)));
        assert!(check.allows(Some(format!("Bearer {TOKEN}").as_bytes())));
        assert!(check.allows(Some(format!("bearer {TOKEN}").as_bytes())));
        assert!(check.allows(Some(format!("BEARER  {TOKEN} ").as_bytes())));
        assert!(!check.allows(None));
        assert!(!check.allows(Some(b"Bearer ")));
        assert!(!check.allows(Some(TOKEN.as_bytes())));
        assert!(!check.allows(Some(format!("Basic {TOKEN}").as_bytes())));
        assert!(!check.allows(Some(b"Bearer 0123456789abcdef-tokeN")));
        assert!(!check.allows(Some(b"Bearer 0123456789abcdef-token-longer")));
        assert!(!check.allows(Some(b"Bearer x")));
    }

    #[test]
    fn open_check_allows_everyone_and_secrets_never_print() {
        assert!(TokenCheck::new(None).allows(None));
        assert!(TokenCheck::new(None).is_open());
        let s = Secret::new(TOKEN);
        assert!(!format!("{s:?}").contains(TOKEN));
        assert_eq!(
            serde_json::to_string(&s).expect("serialises"),
            "\"<redacted>\""
        );
    }
}
