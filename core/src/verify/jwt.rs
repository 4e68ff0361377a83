//! The `jwt` verifier: a signed token in a header or query parameter.
//!
//! The token's `alg` must be one the receiver allows (so `none` and algorithm
//! downgrades fail), HMAC algorithms take their key only from the receiver's
//! `secret` and asymmetric ones only from its key set, and the key is chosen by
//! `kid` when the token names one. Signatures are checked by jwt-compact; claims
//! are checked here against the request's receive time: `exp` is required (a token
//! without one could be replayed forever), `nbf` honoured, both with the configured
//! leeway, and `iss`/`aud` matched exactly when configured.

use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa};
use jwt_compact::{AlgorithmExt, Claims, UntrustedToken, ValidationError};
use serde_json::Value;

use super::{Env, Failure, FailureKind};
use crate::config::{JwtAlgorithm, JwtAuth};
use crate::jwks::{Jwk, PublicKey};
use crate::request::Event;

type Checked = Result<Claims<Value>, ValidationError>;

pub(crate) fn verify(j: &JwtAuth, event: &Event<'_>, env: &dyn Env) -> Result<String, Failure> {
    let raw = j
        .token
        .read_first(event)
        .map_err(|why| Failure::new(FailureKind::Missing, format!("JWT: {why}")))?;
    let token_text = match raw.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => raw.trim(),
    };
    let token = UntrustedToken::new(token_text).map_err(|e| {
        Failure::new(
            FailureKind::Malformed,
            format!("JWT in {} is malformed: {e}", j.token.describe()),
        )
    })?;
    let alg_name = token.algorithm();
    let alg = JwtAlgorithm::from_name(alg_name)
        .filter(|a| j.algorithms.contains(a))
        .ok_or_else(|| {
            let allowed: Vec<&str> = j.algorithms.iter().map(|a| a.name()).collect();
            Failure::new(
                FailureKind::Claims,
                format!(
                    "JWT alg {alg_name:?} is not allowed (allowed: {})",
                    allowed.join(", ")
                ),
            )
        })?;

    let (claims, key_desc) = if alg.is_hmac() {
        let secret = j
            .secret
            .as_ref()
            .ok_or_else(|| Failure::new(FailureKind::Missing, "no secret for HS*"))?;
        let key = secret.expose().as_bytes();
        let checked: Checked = match alg {
            JwtAlgorithm::HS256 => Hs256
                .validator(&Hs256Key::new(key))
                .validate(&token)
                .map(|t| t.into_parts().1),
            JwtAlgorithm::HS384 => Hs384
                .validator(&Hs384Key::new(key))
                .validate(&token)
                .map(|t| t.into_parts().1),
            _ => Hs512
                .validator(&Hs512Key::new(key))
                .validate(&token)
                .map(|t| t.into_parts().1),
        };
        (
            checked.map_err(|e| signature_failure(alg, &e))?,
            format!("secret {}", secret.name()),
        )
    } else {
        let set = match (&j.jwks, &j.jwks_url) {
            (Some(set), _) => set,
            (None, Some(url)) => env.jwks(url).ok_or_else(|| {
                Failure::new(
                    FailureKind::UnknownKey,
                    format!("key set {url} is not loaded"),
                )
            })?,
            (None, None) => {
                return Err(Failure::new(FailureKind::Missing, "no key set configured"));
            }
        };
        let kid = token.header().key_id.as_deref();
        let candidates: Vec<&Jwk> = set
            .keys()
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg.name()))
            .filter(|k| fits(alg, &k.key))
            .collect();
        if candidates.is_empty() {
            let why = match kid {
                Some(kid) => format!("JWT kid {kid:?} has no {} key in the key set", alg.name()),
                None => format!("the key set has no {} key", alg.name()),
            };
            return Err(Failure::new(FailureKind::UnknownKey, why));
        }
        let mut last = None;
        let mut found = None;
        for k in candidates {
            let checked: Checked = match &k.key {
                PublicKey::Rsa(key) => Rsa::rs256()
                    .validator(key)
                    .validate(&token)
                    .map(|t| t.into_parts().1),
                PublicKey::P256(key) => Es256
                    .validator(key)
                    .validate(&token)
                    .map(|t| t.into_parts().1),
                PublicKey::Ed25519(key) => Ed25519
                    .validator(key)
                    .validate(&token)
                    .map(|t| t.into_parts().1),
            };
            match checked {
                Ok(claims) => {
                    found = Some((
                        claims,
                        k.kid
                            .as_deref()
                            .map_or("key without kid".to_owned(), |kid| format!("key {kid:?}")),
                    ));
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        match (found, last) {
            (Some(found), _) => found,
            (None, Some(e)) => return Err(signature_failure(alg, &e)),
            (None, None) => return Err(Failure::new(FailureKind::UnknownKey, "no key tried")),
        }
    };

    let now = event.request.received_at;
    let leeway = i64::try_from(j.leeway_seconds).unwrap_or(0);
    let exp = claims
        .expiration
        .ok_or_else(|| Failure::new(FailureKind::Claims, "JWT has no exp claim"))?
        .timestamp();
    if now > exp.saturating_add(leeway) {
        return Err(Failure::new(
            FailureKind::Claims,
            format!(
                "JWT expired at {exp} ({} s ago, leeway {leeway} s)",
                now - exp
            ),
        ));
    }
    if let Some(nbf) = claims.not_before.map(|t| t.timestamp())
        && now < nbf.saturating_sub(leeway)
    {
        return Err(Failure::new(
            FailureKind::Claims,
            format!(
                "JWT not valid before {nbf} ({} s from now, leeway {leeway} s)",
                nbf - now
            ),
        ));
    }
    if let Some(want) = &j.issuer {
        match claims.custom.get("iss").and_then(Value::as_str) {
            Some(iss) if iss == want => {}
            Some(iss) => {
                return Err(Failure::new(
                    FailureKind::Claims,
                    format!("JWT iss {iss:?} is not {want:?}"),
                ));
            }
            None => return Err(Failure::new(FailureKind::Claims, "JWT has no iss claim")),
        }
    }
    if let Some(want) = &j.audience {
        let ok = match claims.custom.get("aud") {
            Some(Value::String(aud)) => aud == want,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(want)),
            _ => return Err(Failure::new(FailureKind::Claims, "JWT has no aud claim")),
        };
        if !ok {
            return Err(Failure::new(
                FailureKind::Claims,
                format!("JWT aud does not include {want:?}"),
            ));
        }
    }
    Ok(format!(
        "JWT {} signature verified with {key_desc}; expires at {exp}",
        alg.name()
    ))
}

fn fits(alg: JwtAlgorithm, key: &PublicKey) -> bool {
    matches!(
        (alg, key),
        (JwtAlgorithm::RS256, PublicKey::Rsa(_))
            | (JwtAlgorithm::ES256, PublicKey::P256(_))
            | (JwtAlgorithm::EdDSA, PublicKey::Ed25519(_))
    )
}

fn signature_failure(alg: JwtAlgorithm, e: &ValidationError) -> Failure {
    match e {
        ValidationError::InvalidSignature | ValidationError::InvalidSignatureLen { .. } => {
            Failure::new(
                FailureKind::Mismatch,
                format!("JWT {} signature does not verify", alg.name()),
            )
        }
        ValidationError::MalformedClaims(err) => Failure::new(
            FailureKind::Malformed,
            format!("JWT claims are malformed: {err}"),
        ),
        other => Failure::new(FailureKind::Malformed, format!("JWT rejected: {other}")),
    }
}
