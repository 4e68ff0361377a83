//! JSON Web Key Sets: the public keys a `jwt` verifier trusts.
//!
//! A key set arrives as data — inline in the receiver config, or fetched from a
//! `jwks_url` by the host (core does no I/O) — and is parsed here once into
//! verifying keys. Keys marked `"use": "enc"` and key types hookgate does not verify
//! with are skipped, since real key sets mix them in; a set with no usable key at
//! all is an error. The original document is kept so a config serializes back as
//! written.

use serde::{Serialize, Serializer};
use serde_json::Value;

use jwt_compact::alg::RsaPublicKey;
use jwt_compact::jwk::JsonWebKey;

/// One verifying key.
#[derive(Debug, Clone)]
pub enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The `alg` the key is pinned to, if its JWK says.
    pub alg: Option<String>,
    pub key: PublicKey,
}

/// A parsed key set.
#[derive(Debug, Clone)]
pub struct Jwks {
    keys: Vec<Jwk>,
    document: Value,
}

impl Jwks {
    /// The most keys read from one set; real sets hold a handful.
    const MAX_KEYS: usize = 64;
    /// NIST SP 800-131A: RSA keys below 2048 bits are not acceptable for signatures.
    const MIN_RSA_BITS: usize = 2048;

    /// Parses `{"keys": [...]}`. The error names the key at fault.
    pub fn parse(document: &Value) -> Result<Self, String> {
        let list = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("expected a JWKS document: {\"keys\": [...]}")?;
        let mut keys = Vec::new();
        for (i, raw) in list.iter().enumerate().take(Self::MAX_KEYS) {
            if raw.get("use").and_then(Value::as_str) == Some("enc") {
                continue;
            }
            let kty = raw.get("kty").and_then(Value::as_str).unwrap_or_default();
            let crv = raw.get("crv").and_then(Value::as_str).unwrap_or_default();
            let supported = matches!(
                (kty, crv),
                ("RSA", _) | ("EC", "P-256") | ("OKP", "Ed25519")
            );
            if !supported {
                continue;
            }
            let jwk: JsonWebKey<'_> = serde_json::from_value(raw.clone())
                .map_err(|e| format!("keys[{i}]: not a valid JWK ({e})"))?;
            if let JsonWebKey::Rsa { modulus, .. } = &jwk {
                let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
                if bits < Self::MIN_RSA_BITS {
                    return Err(format!(
                        "keys[{i}]: RSA key of about {bits} bits; at least {} required",
                        Self::MIN_RSA_BITS
                    ));
                }
            }
            let key = match kty {
                "RSA" => RsaPublicKey::try_from(&jwk).map(PublicKey::Rsa),
                "EC" => p256::ecdsa::VerifyingKey::try_from(&jwk).map(PublicKey::P256),
                _ => ed25519_dalek::VerifyingKey::try_from(&jwk).map(PublicKey::Ed25519),
            }
            .map_err(|e| format!("keys[{i}]: not a usable {kty} key ({e})"))?;
            let text = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_owned);
            keys.push(Jwk {
                kid: text("kid"),
                alg: text("alg"),
                key,
            });
        }
        if keys.is_empty() {
            return Err("the key set has no RSA, P-256 or Ed25519 signing key".to_owned());
        }
        Ok(Self {
            keys,
            document: document.clone(),
        })
    }

    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }
}

impl Serialize for Jwks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.document.serialize(s)
    }
}
