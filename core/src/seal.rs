//! Secrets sealed at rest: AES-256-GCM under a key the runtime keeps apart from
//! the data (the host's `secrets.key` or `HOOKGATE_SECRETS_KEY`; the edge's
//! `EDGE_SECRETS_KEY`).
//!
//! A sealed value is base64 of the 12-byte nonce followed by the ciphertext and
//! its tag, so each value carries what opening it needs and a tampered or
//! mis-keyed value fails to open rather than reading as something else. Core
//! reads no randomness: the caller passes a fresh nonce from the OS.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// A sealing key: 32 bytes.
pub struct Sealer(Aes256Gcm);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// The key as base64 of 32 bytes; `None` for anything else.
    pub fn from_base64(key: &str) -> Option<Self> {
        let bytes = B64.decode(key.trim()).ok()?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(key: &[u8]) -> Option<Self> {
        (key.len() == 32)
            .then(|| Aes256Gcm::new_from_slice(key).ok().map(Self))
            .flatten()
    }

    /// Seals `plain` under this key with `nonce`, which must never repeat for
    /// the key (12 random bytes from the OS do). `None` only for inputs of
    /// gigabytes, which no secret is; never a value that would not open.
    pub fn seal(&self, nonce: [u8; 12], plain: &str) -> Option<String> {
        let sealed = self.0.encrypt(&Nonce::from(nonce), plain.as_bytes()).ok()?;
        Some(B64.encode([nonce.as_slice(), &sealed].concat()))
    }

    /// The plain text of a sealed value; `None` if it is not one, was sealed
    /// under another key, or was changed.
    pub fn open(&self, sealed: &str) -> Option<String> {
        let bytes = B64.decode(sealed).ok()?;
        let (nonce, body) = bytes.split_at_checked(12)?;
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let plain = self.0.decrypt(&Nonce::from(nonce), body).ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_key_and_unchanged() {
        let key = Sealer::from_bytes(&[7; 32]).unwrap();
        let sealed = key.seal([1; 12], "It's a Secret to Everybody").unwrap();
        assert!(!sealed.contains("Secret"));
        assert_eq!(
            key.open(&sealed).as_deref(),
            Some("It's a Secret to Everybody")
        );
        assert_ne!(
            Some(sealed.clone()),
            key.seal([2; 12], "It's a Secret to Everybody")
        );
        assert_eq!(Sealer::from_bytes(&[8; 32]).unwrap().open(&sealed), None);
        let mut bytes = B64.decode(&sealed).unwrap();
        bytes[20] ^= 1;
        assert_eq!(key.open(&B64.encode(bytes)), None);
        assert_eq!(key.open("not base64!"), None);
        assert!(Sealer::from_bytes(&[0; 31]).is_none());
        assert!(Sealer::from_base64(&B64.encode([3; 32])).is_some());
    }
}
