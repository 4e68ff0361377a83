//! `host-crypto`: the verification primitives plugins import, run natively.
//!
//! A guest could carry its own Ed25519 or RSA, but it would run at interpreter-ish
//! speed and bloat every component; through these functions a plugin is a few
//! dozen kilobytes and verifies at native speed. Every verify function answers
//! `false` for malformed keys or signatures: a plugin asks "is this authentic?",
//! and garbage is not.

use base64::Engine;
use hmac::{Hmac, Mac};

/// Which hash an HMAC or RSA signature uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha512,
}

/// RSA keys shorter than this are refused (NIST SP 800-131A; core's JWKS agrees).
const MIN_RSA_BITS: usize = 2048;

pub fn hmac(hash: Hash, key: &[u8], message: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).unwrap_or_else(|_| {
            <M as hmac::digest::KeyInit>::new_from_slice(&[]).expect("empty key")
        });
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }
    match hash {
        Hash::Sha1 => run::<Hmac<sha1::Sha1>>(key, message),
        Hash::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
        Hash::Sha512 => run::<Hmac<sha2::Sha512>>(key, message),
    }
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

pub fn ed25519_verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let (Ok(key), Ok(sig)) = (
        <[u8; 32]>::try_from(public_key),
        <[u8; 64]>::try_from(signature),
    ) else {
        return false;
    };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&key) else {
        return false;
    };
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig))
        .is_ok()
}

pub fn ecdsa_p256_verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::DecodePublicKey;
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key)
        .or_else(|_| p256::ecdsa::VerifyingKey::from_public_key_der(public_key));
    let Ok(key) = key else {
        return false;
    };
    let sig = p256::ecdsa::Signature::from_der(signature)
        .or_else(|_| p256::ecdsa::Signature::from_slice(signature));
    let Ok(sig) = sig else {
        return false;
    };
    key.verify(message, &sig).is_ok()
}

pub fn rsa_pkcs1v15_verify(
    hash: Hash,
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPublicKey::from_public_key_der(public_key)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(public_key));
    let Ok(key) = key else {
        return false;
    };
    if key.n().bits() < MIN_RSA_BITS {
        return false;
    }
    let (scheme, digest) = match hash {
        Hash::Sha1 => {
            use sha1::Digest;
            (
                rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
                sha1::Sha1::digest(message).to_vec(),
            )
        }
        Hash::Sha256 => {
            use sha2::Digest;
            (
                rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                sha2::Sha256::digest(message).to_vec(),
            )
        }
        Hash::Sha512 => return false,
    };
    key.verify(scheme, &digest, signature).is_ok()
}

/// Standard or URL-safe base64, padded or not.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or_else(|| "not base64".to_owned())
}

pub fn base64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn hex_decode(text: &str) -> Result<Vec<u8>, String> {
    hex::decode(text.trim()).map_err(|e| format!("not hex: {e}"))
}

pub fn hex_encode(data: &[u8]) -> String {
    hex::encode(data)
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    hookgate_core::verify::ct_eq(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac(Hash::Sha256, b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex_encode(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn ed25519_matches_rfc_8032_test_1_and_refuses_garbage() {
        let key =
            hex_decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap();
        let sig = hex_decode("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b").unwrap();
        assert!(ed25519_verify(&key, b"", &sig));
        assert!(!ed25519_verify(&key, b"x", &sig));
        assert!(!ed25519_verify(&key[..31], b"", &sig));
        assert!(!ed25519_verify(&key, b"", &sig[..63]));
    }

    #[test]
    fn ecdsa_p256_takes_sec1_or_spki_keys_and_der_or_raw_signatures() {
        use p256::ecdsa::signature::Signer;
        use p256::pkcs8::EncodePublicKey;
        let signing = p256::ecdsa::SigningKey::from_slice(&[3; 32]).unwrap();
        let verifying = signing.verifying_key();
        let sig: p256::ecdsa::Signature = signing.sign(b"event");
        let sec1 = verifying.to_encoded_point(false);
        let spki = p256::PublicKey::from(verifying)
            .to_public_key_der()
            .unwrap();
        for key in [sec1.as_bytes(), spki.as_bytes()] {
            assert!(ecdsa_p256_verify(key, b"event", sig.to_der().as_bytes()));
            assert!(ecdsa_p256_verify(key, b"event", &sig.to_bytes()));
            assert!(!ecdsa_p256_verify(key, b"evenT", &sig.to_bytes()));
        }
        assert!(!ecdsa_p256_verify(b"junk", b"event", &sig.to_bytes()));
    }

    #[test]
    fn rsa_pkcs1v15_verifies_and_refuses_short_keys() {
        use base64::Engine;
        use rsa::pkcs8::EncodePublicKey;
        // RFC 7515 A.2's 2048-bit key, as core's JWT tests use it.
        let jwk: serde_json::Value = serde_json::from_str(include_str!(
            "../../../core/tests/data/rfc7515-a2-rsa-private.jwk.json"
        ))
        .unwrap();
        let int = |k: &str| {
            rsa::BigUint::from_bytes_be(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(jwk[k].as_str().unwrap())
                    .unwrap(),
            )
        };
        let private = rsa::RsaPrivateKey::from_components(
            int("n"),
            int("e"),
            int("d"),
            vec![int("p"), int("q")],
        )
        .unwrap();
        let spki = private.to_public_key().to_public_key_der().unwrap();
        for (hash, scheme, digest) in [
            (Hash::Sha256, rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), {
                use sha2::Digest;
                sha2::Sha256::digest(b"event").to_vec()
            }),
            (Hash::Sha1, rsa::Pkcs1v15Sign::new::<sha1::Sha1>(), {
                use sha1::Digest;
                sha1::Sha1::digest(b"event").to_vec()
            }),
        ] {
            let sig = private.sign(scheme, &digest).unwrap();
            assert!(rsa_pkcs1v15_verify(hash, spki.as_bytes(), b"event", &sig));
            assert!(!rsa_pkcs1v15_verify(hash, spki.as_bytes(), b"evenT", &sig));
            assert!(!rsa_pkcs1v15_verify(
                Hash::Sha512,
                spki.as_bytes(),
                b"event",
                &sig
            ));
        }
        // A 1024-bit key, generated deterministically.
        let mut rng = <rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::seed_from_u64(7);
        let short = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let short_spki = short.to_public_key().to_public_key_der().unwrap();
        let digest = {
            use sha2::Digest;
            sha2::Sha256::digest(b"event").to_vec()
        };
        let sig = short
            .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
            .unwrap();
        assert!(!rsa_pkcs1v15_verify(
            Hash::Sha256,
            short_spki.as_bytes(),
            b"event",
            &sig
        ));
    }

    #[test]
    fn base64_takes_every_alphabet() {
        assert_eq!(base64_decode("+/8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert!(base64_decode("*").is_err());
    }
}
