//! The `jwt` verifier with tokens minted by jwt-compact for every algorithm, keys
//! from inline JWKS and from a JWKS the runtime supplies, and every claim check.

use chrono::DateTime;
use hookgate_core::config::PluginAuth;
use hookgate_core::jwks::Jwks;
use hookgate_core::verify::{Env, FailureKind};
use hookgate_core::{Event, Request};
use jwt_compact::alg::{
    Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa, RsaPrivateKey,
};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, Claims, Header};
use serde_json::{Value, json};

use crate::support::*;

const HS_SECRET: &str = "a-shared-secret-for-hs-algorithms";

fn claims(extra: Value, exp: Option<i64>, nbf: Option<i64>) -> Claims<Value> {
    let mut c = Claims::new(extra);
    c.expiration = exp.and_then(|t| DateTime::from_timestamp(t, 0));
    c.not_before = nbf.and_then(|t| DateTime::from_timestamp(t, 0));
    c
}

fn default_claims() -> Claims<Value> {
    claims(
        json!({"iss": "https://ci.example", "aud": ["hookgate", "other"]}),
        Some(NOW + 300),
        Some(NOW - 10),
    )
}

fn ed_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x22; 32])
}

fn es_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap()
}

/// RFC 7515 appendix A.2's RSA key, published for exactly this purpose.
fn rsa_key() -> RsaPrivateKey {
    let text = include_str!("../data/rfc7515-a2-rsa-private.jwk.json");
    let jwk: JsonWebKey<'_> = serde_json::from_str(text).unwrap();
    RsaPrivateKey::try_from(&jwk).unwrap()
}

fn public_jwk(jwk: JsonWebKey<'_>, kid: &str) -> Value {
    let mut v = serde_json::to_value(jwk).unwrap();
    v["kid"] = json!(kid);
    v
}

fn jwks() -> Value {
    json!({"keys": [
        {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "ignored-encryption-key"},
        public_jwk(JsonWebKey::from(&rsa_key().to_public_key()), "rsa-1"),
        public_jwk(JsonWebKey::from(es_key().verifying_key()), "ec-1"),
        public_jwk(JsonWebKey::from(&ed_key().verifying_key()), "ed-1"),
    ]})
}

fn token(alg: &str, kid: Option<&str>, claims: &Claims<Value>) -> String {
    let mut header = Header::empty();
    if let Some(kid) = kid {
        header = header.with_key_id(kid);
    }
    let secret = HS_SECRET.as_bytes();
    match alg {
        "HS256" => Hs256.token(&header, claims, &Hs256Key::new(secret)),
        "HS384" => Hs384.token(&header, claims, &Hs384Key::new(secret)),
        "HS512" => Hs512.token(&header, claims, &Hs512Key::new(secret)),
        "RS256" => Rsa::rs256().token(&header, claims, &rsa_key()),
        "ES256" => Es256.token(&header, claims, &es_key()),
        "EdDSA" => Ed25519.token(&header, claims, &ed_key()),
        other => panic!("{other}"),
    }
    .unwrap()
}

fn hs_auth(algs: &[&str]) -> Value {
    json!({"auth_type": "jwt", "algorithms": algs, "secret": secret(HS_SECRET),
           "issuer": "https://ci.example", "audience": "hookgate"})
}

fn key_auth(algs: &[&str]) -> Value {
    json!({"auth_type": "jwt", "algorithms": algs, "jwks": jwks(),
           "issuer": "https://ci.example", "audience": "hookgate"})
}

fn bearer(token: &str) -> Req {
    Req::post("{}").header("Authorization", format!("Bearer {token}"))
}

#[test]
fn every_algorithm_verifies() {
    for alg in ["HS256", "HS384", "HS512"] {
        let msg = assert_passes(
            &hs_auth(&[alg]),
            &bearer(&token(alg, None, &default_claims())),
        );
        assert!(msg.contains(alg) && msg.contains("secret s"), "{msg}");
    }
    for (alg, kid) in [("RS256", "rsa-1"), ("ES256", "ec-1"), ("EdDSA", "ed-1")] {
        let msg = assert_passes(
            &key_auth(&[alg]),
            &bearer(&token(alg, Some(kid), &default_claims())),
        );
        assert!(msg.contains(&format!("key {kid:?}")), "{msg}");
        // Without a kid, every key of the right type is tried.
        assert_passes(
            &key_auth(&[alg]),
            &bearer(&token(alg, None, &default_claims())),
        );
    }
}

#[test]
fn tampered_and_wrong_key_tokens_fail() {
    let good = token("ES256", Some("ec-1"), &default_claims());
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let forged_claims = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        json!({"iss": "https://ci.example", "aud": "hookgate", "exp": NOW + 9999}).to_string(),
    );
    let forged = format!("{head}.{forged_claims}.{sig}");
    assert_fails(
        &key_auth(&["ES256"]),
        &bearer(&forged),
        FailureKind::Mismatch,
        "ES256 signature does not verify",
    );

    let other_secret = Hs256
        .token(
            &Header::empty(),
            &default_claims(),
            &Hs256Key::new(b"not the secret"),
        )
        .unwrap();
    assert_fails(
        &hs_auth(&["HS256"]),
        &bearer(&other_secret),
        FailureKind::Mismatch,
        "does not verify",
    );
}

#[test]
fn algorithm_must_be_allowed() {
    // An RS256 receiver refuses an HS256 token.
    let t = token("HS256", None, &default_claims());
    assert_fails(
        &key_auth(&["RS256"]),
        &bearer(&t),
        FailureKind::Claims,
        "alg \"HS256\" is not allowed (allowed: RS256)",
    );
    // Algorithm confusion: a receiver allowing both HS256 and RS256 never uses the
    // public key as an HMAC key. Forge HS256 tokens keyed with the RSA public key in
    // the forms an attacker would try: the JWK text and the raw modulus.
    let mut both = key_auth(&["HS256", "RS256"]);
    both["secret"] = secret(HS_SECRET);
    let public_key = rsa_key().to_public_key();
    let jwk_text = serde_json::to_vec(&public_jwk(JsonWebKey::from(&public_key), "rsa-1")).unwrap();
    let JsonWebKey::Rsa { modulus, .. } = JsonWebKey::from(&public_key) else {
        unreachable!()
    };
    for key in [jwk_text, modulus.to_vec()] {
        let header = Header::empty().with_key_id("rsa-1");
        let forged = Hs256
            .token(&header, &default_claims(), &Hs256Key::new(&key))
            .unwrap();
        assert_fails(
            &both,
            &bearer(&forged),
            FailureKind::Mismatch,
            "HS256 signature does not verify",
        );
    }
    // alg "none" is never a configured algorithm.
    let none = format!(
        "{}.{}.",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"alg":"none"}"#
        ),
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"exp":1800000000}"#
        )
    );
    let f = verify(&key_auth(&["RS256"]), &bearer(&none)).unwrap_err();
    assert!(
        matches!(f.kind, FailureKind::Claims | FailureKind::Malformed),
        "{f:?}"
    );
}

#[test]
fn claims_are_checked_with_leeway() {
    let auth = hs_auth(&["HS256"]);
    let expired = claims(
        json!({"iss": "https://ci.example", "aud": "hookgate"}),
        Some(NOW - 61),
        None,
    );
    assert_fails(
        &auth,
        &bearer(&token("HS256", None, &expired)),
        FailureKind::Claims,
        "JWT expired at 1699999939 (61 s ago, leeway 60 s)",
    );
    let in_leeway = claims(
        json!({"iss": "https://ci.example", "aud": "hookgate"}),
        Some(NOW - 59),
        None,
    );
    assert_passes(&auth, &bearer(&token("HS256", None, &in_leeway)));
    let early = claims(
        json!({"iss": "https://ci.example", "aud": "hookgate"}),
        Some(NOW + 900),
        Some(NOW + 120),
    );
    assert_fails(
        &auth,
        &bearer(&token("HS256", None, &early)),
        FailureKind::Claims,
        "not valid before",
    );
    let no_exp = claims(
        json!({"iss": "https://ci.example", "aud": "hookgate"}),
        None,
        None,
    );
    assert_fails(
        &auth,
        &bearer(&token("HS256", None, &no_exp)),
        FailureKind::Claims,
        "no exp claim",
    );
    let wrong_iss = claims(
        json!({"iss": "https://evil.example", "aud": "hookgate"}),
        Some(NOW + 60),
        None,
    );
    assert_fails(
        &auth,
        &bearer(&token("HS256", None, &wrong_iss)),
        FailureKind::Claims,
        "iss \"https://evil.example\"",
    );
    let wrong_aud = claims(
        json!({"iss": "https://ci.example", "aud": ["a", "b"]}),
        Some(NOW + 60),
        None,
    );
    assert_fails(
        &auth,
        &bearer(&token("HS256", None, &wrong_aud)),
        FailureKind::Claims,
        "aud does not include \"hookgate\"",
    );
    // A far-past nbf must not overflow anything.
    let ancient = claims(
        json!({"iss": "https://ci.example", "aud": "hookgate"}),
        Some(NOW + 60),
        Some(-8_000_000_000_000),
    );
    assert_passes(&auth, &bearer(&token("HS256", None, &ancient)));
}

#[test]
fn unknown_kid_asks_the_host_to_refresh() {
    let t = token("RS256", Some("rotated-away"), &default_claims());
    assert_fails(
        &key_auth(&["RS256"]),
        &bearer(&t),
        FailureKind::UnknownKey,
        "kid \"rotated-away\" has no RS256 key",
    );
}

#[test]
fn token_location_and_shape_errors() {
    let auth = hs_auth(&["HS256"]);
    assert_fails(
        &auth,
        &Req::post("{}"),
        FailureKind::Missing,
        "JWT: header Authorization missing",
    );
    assert_fails(
        &auth,
        &bearer("not-a-jwt"),
        FailureKind::Malformed,
        "JWT in header Authorization is malformed",
    );
    let mut q = hs_auth(&["HS256"]);
    q["token"] = json!({"source": "query", "name": "jwt"});
    let t = token("HS256", None, &default_claims());
    assert_passes(
        &q,
        &Req::post("{}").url(&format!("https://h/hooks/r?jwt={t}")),
    );
}

/// A runtime that has fetched one key set.
struct Fetched(Jwks);

impl Env for Fetched {
    fn jwks(&self, url: &str) -> Option<&Jwks> {
        (url == "https://idp.example/jwks.json").then_some(&self.0)
    }
    fn verify_plugin(&self, _: &PluginAuth, _: &Request<'_>) -> Result<String, String> {
        Err("no plugins".into())
    }
}

#[test]
fn jwks_url_keys_come_from_the_runtime() {
    let auth = json!({"auth_type": "jwt", "algorithms": ["EdDSA"], "jwks_url": "https://idp.example/jwks.json"});
    let r = receiver(auth.clone());
    let req = bearer(&token("EdDSA", Some("ed-1"), &default_claims()));
    let env = Fetched(Jwks::parse(&jwks()).unwrap());
    let verdict = hookgate_core::verify::authenticate(&r.auth, &Event::new(req.request()), &env);
    assert!(verdict.result.is_ok(), "{:?}", verdict.result);
    assert_eq!(r.jwks_urls(), vec!["https://idp.example/jwks.json"]);
    // Not yet fetched: the failure tells the host to fetch it.
    assert_fails(
        &auth,
        &req,
        FailureKind::UnknownKey,
        "key set https://idp.example/jwks.json is not loaded",
    );
}

#[test]
fn jwks_documents_are_validated() {
    assert!(
        Jwks::parse(&json!({"keys": []}))
            .unwrap_err()
            .contains("no RSA, P-256 or Ed25519")
    );
    assert!(
        Jwks::parse(&json!([]))
            .unwrap_err()
            .contains("expected a JWKS document")
    );
    let bad_point = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}]});
    assert!(
        Jwks::parse(&bad_point)
            .unwrap_err()
            .starts_with("keys[0]: not a usable EC key")
    );
    // 1024-bit RSA is refused.
    let short = json!({"keys": [{"kty": "RSA", "e": "AQAB", "n": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [0xc5u8; 128])}]});
    assert!(
        Jwks::parse(&short)
            .unwrap_err()
            .contains("at least 2048 required")
    );
}
