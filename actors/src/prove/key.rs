//! atproto signing keys: `did:key` / multibase decoding (secp256k1 and P-256) and ECDSA
//! signature verification with the atproto rules: a 64-byte compact `r ‖ s` signature (no
//! DER), low-S only, over the SHA-256 of the message.
//!
//! Pure. The curve arithmetic is RustCrypto's (`k256`, `p256`: maintained, audited, no
//! unsafe in our use); the atproto rules on top (encoding, low-S) are ours and are tested
//! against every interop vector (`interop/crypto/`).

use k256::ecdsa::signature::hazmat::PrehashVerifier as _;
use sha2::{Digest, Sha256};

/// Multicodec varint prefix of a compressed secp256k1 public key (0xe7).
const SECP256K1_PUB: [u8; 2] = [0xe7, 0x01];
/// Multicodec varint prefix of a compressed P-256 public key (0x1200).
const P256_PUB: [u8; 2] = [0x80, 0x24];

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a did:key")]
    NotDidKey,
    #[error("multibase: {0}")]
    Multibase(String),
    #[error("unknown key type (multicodec prefix {0:02x?})")]
    UnknownCodec(Vec<u8>),
    #[error("unknown verification method type {0:?}")]
    UnknownType(String),
    #[error("invalid curve point")]
    BadPoint,
}

/// A public key an atproto repository may be signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    K256(k256::ecdsa::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

/// The outcome of checking one signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigCheck {
    Valid,
    /// Not 64 bytes (e.g. DER) or not a pair of scalars in range.
    Malformed,
    /// Mathematically valid but with a high S, which atproto forbids (malleability).
    HighS,
    /// Does not verify with this key.
    Invalid,
}

impl SigCheck {
    /// A stable reason code (`None` when valid).
    pub fn reason(self) -> Option<&'static str> {
        match self {
            SigCheck::Valid => None,
            SigCheck::Malformed => Some("signature_malformed"),
            SigCheck::HighS => Some("signature_high_s"),
            SigCheck::Invalid => Some("signature_invalid"),
        }
    }
}

impl PublicKey {
    /// Parses `did:key:z…`.
    pub fn from_did_key(did_key: &str) -> Result<PublicKey, KeyError> {
        let mb = did_key
            .strip_prefix("did:key:")
            .ok_or(KeyError::NotDidKey)?;
        PublicKey::from_multikey(mb)
    }

    /// Parses a `Multikey` `publicKeyMultibase`: base58btc (`z`) of a multicodec-prefixed
    /// compressed point.
    pub fn from_multikey(multibase: &str) -> Result<PublicKey, KeyError> {
        let bytes = base58btc(multibase)?;
        if let Some(point) = bytes.strip_prefix(&SECP256K1_PUB) {
            k256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(PublicKey::K256)
                .map_err(|_| KeyError::BadPoint)
        } else if let Some(point) = bytes.strip_prefix(&P256_PUB) {
            p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(PublicKey::P256)
                .map_err(|_| KeyError::BadPoint)
        } else {
            Err(KeyError::UnknownCodec(
                bytes.iter().take(2).copied().collect(),
            ))
        }
    }

    /// Parses a DID document verification method: `Multikey`, or the legacy
    /// `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019` whose
    /// multibase holds the bare SEC1 point.
    pub fn from_verification_method(kind: &str, multibase: &str) -> Result<PublicKey, KeyError> {
        match kind {
            "Multikey" => PublicKey::from_multikey(multibase),
            "EcdsaSecp256k1VerificationKey2019" => {
                k256::ecdsa::VerifyingKey::from_sec1_bytes(&base58btc(multibase)?)
                    .map(PublicKey::K256)
                    .map_err(|_| KeyError::BadPoint)
            }
            "EcdsaSecp256r1VerificationKey2019" => {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&base58btc(multibase)?)
                    .map(PublicKey::P256)
                    .map_err(|_| KeyError::BadPoint)
            }
            other => Err(KeyError::UnknownType(other.to_owned())),
        }
    }

    /// The key as `did:key:z…` (compressed point, multicodec prefix).
    pub fn to_did_key(&self) -> String {
        let mut bytes = Vec::with_capacity(35);
        match self {
            PublicKey::K256(k) => {
                bytes.extend_from_slice(&SECP256K1_PUB);
                bytes.extend_from_slice(k.to_encoded_point(true).as_bytes());
            }
            PublicKey::P256(k) => {
                bytes.extend_from_slice(&P256_PUB);
                bytes.extend_from_slice(k.to_encoded_point(true).as_bytes());
            }
        }
        format!(
            "did:key:{}",
            multibase::encode(multibase::Base::Base58Btc, bytes)
        )
    }

    /// `ES256K` or `ES256`, as the interop vectors name the algorithms.
    pub fn algorithm(&self) -> &'static str {
        match self {
            PublicKey::K256(_) => "ES256K",
            PublicKey::P256(_) => "ES256",
        }
    }

    /// Checks `sig` (64-byte compact, low-S) over SHA-256(`message`).
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> SigCheck {
        let digest = Sha256::digest(message);
        match self {
            PublicKey::K256(key) => {
                let Ok(sig) = k256::ecdsa::Signature::from_slice(sig) else {
                    return SigCheck::Malformed;
                };
                if sig.normalize_s().is_some() {
                    return SigCheck::HighS;
                }
                match key.verify_prehash(&digest, &sig) {
                    Ok(()) => SigCheck::Valid,
                    Err(_) => SigCheck::Invalid,
                }
            }
            PublicKey::P256(key) => {
                let Ok(sig) = p256::ecdsa::Signature::from_slice(sig) else {
                    return SigCheck::Malformed;
                };
                if sig.normalize_s().is_some() {
                    return SigCheck::HighS;
                }
                match key.verify_prehash(&digest, &sig) {
                    Ok(()) => SigCheck::Valid,
                    Err(_) => SigCheck::Invalid,
                }
            }
        }
    }
}

fn base58btc(multibase: &str) -> Result<Vec<u8>, KeyError> {
    match multibase::decode(multibase) {
        Ok((multibase::Base::Base58Btc, bytes)) => Ok(bytes),
        Ok((base, _)) => Err(KeyError::Multibase(format!("{base:?}, want base58btc"))),
        Err(e) => Err(KeyError::Multibase(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::prove::fixtures::interop_json;
    use base64::Engine as _;

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(s.trim_end_matches('='))
            .unwrap()
    }

    /// Every signature vector: valid ones verify, high-S and DER ones are refused, with the
    /// key given both as did:key and as the legacy bare multibase of its suite.
    #[test]
    fn interop_signature_vectors() {
        let vectors = interop_json("crypto/signature-fixtures.json");
        let vectors = vectors.as_array().unwrap();
        assert_eq!(vectors.len(), 6);
        let (mut valid, mut high_s, mut der) = (0, 0, 0);
        for v in vectors {
            let msg = b64(v["messageBase64"].as_str().unwrap());
            let sig = b64(v["signatureBase64"].as_str().unwrap());
            let key = PublicKey::from_did_key(v["publicKeyDid"].as_str().unwrap()).unwrap();
            assert_eq!(key.algorithm(), v["algorithm"].as_str().unwrap());
            let legacy = PublicKey::from_verification_method(
                v["didDocSuite"].as_str().unwrap(),
                v["publicKeyMultibase"].as_str().unwrap(),
            )
            .unwrap();
            assert_eq!(legacy, key, "{}", v["comment"]);
            let got = key.verify(&msg, &sig);
            let tags: Vec<&str> = v["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            if v["validSignature"].as_bool().unwrap() {
                assert_eq!(got, SigCheck::Valid, "{}", v["comment"]);
                valid += 1;
            } else if tags.contains(&"high-s") {
                assert_eq!(got, SigCheck::HighS, "{}", v["comment"]);
                high_s += 1;
            } else {
                assert!(tags.contains(&"der-encoded"));
                assert_eq!(got, SigCheck::Malformed, "{}", v["comment"]);
                der += 1;
            }
        }
        assert_eq!((valid, high_s, der), (2, 2, 2));
    }

    /// A valid signature with one bit flipped, or checked with another key, is invalid.
    #[test]
    fn tampered_signature_and_wrong_key() {
        let vectors = interop_json("crypto/signature-fixtures.json");
        let v = &vectors[1];
        let msg = b64(v["messageBase64"].as_str().unwrap());
        let mut sig = b64(v["signatureBase64"].as_str().unwrap());
        let key = PublicKey::from_did_key(v["publicKeyDid"].as_str().unwrap()).unwrap();
        assert_eq!(key.verify(b"another message", &sig), SigCheck::Invalid);
        let other = PublicKey::from_did_key(vectors[5]["publicKeyDid"].as_str().unwrap()).unwrap();
        assert_eq!(other.verify(&msg, &sig), SigCheck::Invalid);
        sig[10] ^= 0x01;
        assert_eq!(key.verify(&msg, &sig), SigCheck::Invalid);
        assert_eq!(key.verify(&msg, &sig[..63]), SigCheck::Malformed);
    }

    /// The W3C did:key vectors: each private key's public key encodes to the listed did:key,
    /// and the did:key decodes back to it.
    #[test]
    fn interop_did_key_vectors() {
        let k = interop_json("crypto/w3c_didkey_K256.json");
        let k = k.as_array().unwrap();
        assert_eq!(k.len(), 5);
        for v in k {
            let secret = hex::decode(v["privateKeyBytesHex"].as_str().unwrap()).unwrap();
            let sk = k256::ecdsa::SigningKey::from_slice(&secret).unwrap();
            let key = PublicKey::K256(*sk.verifying_key());
            let did = v["publicDidKey"].as_str().unwrap();
            assert_eq!(key.to_did_key(), did);
            assert_eq!(PublicKey::from_did_key(did).unwrap(), key);
        }
        let p = interop_json("crypto/w3c_didkey_P256.json");
        let p = p.as_array().unwrap();
        assert_eq!(p.len(), 1);
        for v in p {
            let (_, secret) =
                multibase::decode(format!("z{}", v["privateKeyBytesBase58"].as_str().unwrap()))
                    .unwrap();
            let sk = p256::ecdsa::SigningKey::from_slice(&secret).unwrap();
            let key = PublicKey::P256(*sk.verifying_key());
            let did = v["publicDidKey"].as_str().unwrap();
            assert_eq!(key.to_did_key(), did);
            assert_eq!(PublicKey::from_did_key(did).unwrap(), key);
        }
    }

    #[test]
    fn refused_keys() {
        assert_eq!(
            PublicKey::from_did_key("did:web:x").unwrap_err(),
            KeyError::NotDidKey
        );
        assert!(matches!(
            PublicKey::from_did_key("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")
                .unwrap_err(),
            KeyError::UnknownCodec(_)
        ));
        assert!(matches!(
            PublicKey::from_multikey("mAAAA").unwrap_err(),
            KeyError::Multibase(_)
        ));
        assert!(matches!(
            PublicKey::from_verification_method("Ed25519VerificationKey2020", "z1").unwrap_err(),
            KeyError::UnknownType(_)
        ));
    }
}
