//! Shared-token verifiers and the IP allowlist.
//!
//! Tokens are compared as SHA-256 digests in constant time, so neither the content
//! nor the length of the expected value leaks through timing. IPv4-mapped IPv6
//! addresses (`::ffff:192.0.2.1`, what a dual-stack socket reports) are matched as
//! the IPv4 address they are.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use super::{Failure, FailureKind, ct_eq};
use crate::config::source::header_value;
use crate::config::{BasicAuth, BearerAuth, IpAllowlist, TokenAuth};
use crate::encoding::decode_base64;
use crate::request::Event;
use crate::secret::Secret;

/// Equal-length digests make the comparison independent of the secret's length.
fn secret_eq(given: &[u8], secret: &str) -> bool {
    ct_eq(&Sha256::digest(given), &Sha256::digest(secret.as_bytes()))
}

/// Compares a presented token with a secret; `origin` names where it came from.
fn token(given: &str, secret: &Secret, origin: &str) -> Result<String, Failure> {
    if secret_eq(given.as_bytes(), secret.expose()) {
        Ok(format!("{origin} matched secret {}", secret.name()))
    } else {
        Err(Failure::new(
            FailureKind::Mismatch,
            format!("{origin} does not match secret {}", secret.name()),
        ))
    }
}

pub(crate) fn header_equals(t: &TokenAuth, event: &Event<'_>) -> Result<String, Failure> {
    let given =
        header_value(event, &t.name).map_err(|why| Failure::new(FailureKind::Missing, why))?;
    token(given, &t.secret, &format!("header {}", t.name))
}

pub(crate) fn query_equals(t: &TokenAuth, event: &Event<'_>) -> Result<String, Failure> {
    let origin = format!("query parameter {}", t.name);
    let given = event
        .query_param(&t.name)
        .ok_or_else(|| Failure::new(FailureKind::Missing, format!("{origin} missing")))?;
    token(given, &t.secret, &origin)
}

/// The credentials after an `Authorization` scheme word, matched case-insensitively.
fn authorization<'e>(event: &'e Event<'_>, scheme: &str) -> Result<&'e str, Failure> {
    let value = header_value(event, "Authorization")
        .map_err(|why| Failure::new(FailureKind::Missing, why))?;
    match value.split_once(' ') {
        Some((word, rest)) if word.eq_ignore_ascii_case(scheme) => Ok(rest.trim()),
        _ => Err(Failure::new(
            FailureKind::Malformed,
            format!("header Authorization is not {scheme} credentials"),
        )),
    }
}

pub(crate) fn basic(b: &BasicAuth, event: &Event<'_>) -> Result<String, Failure> {
    let encoded = authorization(event, "Basic")?;
    let decoded = decode_base64(encoded).ok_or_else(|| {
        Failure::new(
            FailureKind::Malformed,
            "header Authorization: Basic credentials are not base64",
        )
    })?;
    let colon = decoded.iter().position(|&c| c == b':').ok_or_else(|| {
        Failure::new(
            FailureKind::Malformed,
            "header Authorization: Basic credentials have no ':'",
        )
    })?;
    let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
    // Both halves are always compared, so timing does not tell which one was wrong.
    let user_ok = secret_eq(user, &b.username);
    let pass_ok = secret_eq(pass, b.password.expose());
    if user_ok & pass_ok {
        Ok(format!(
            "basic credentials matched user {} and secret {}",
            b.username,
            b.password.name()
        ))
    } else {
        Err(Failure::new(
            FailureKind::Mismatch,
            "basic credentials do not match",
        ))
    }
}

pub(crate) fn bearer(b: &BearerAuth, event: &Event<'_>) -> Result<String, Failure> {
    token(authorization(event, "Bearer")?, &b.secret, "bearer token")
}

pub(crate) fn ip_allowlist(list: &IpAllowlist, event: &Event<'_>) -> Result<String, Failure> {
    let addr = event
        .request
        .remote_addr
        .ok_or_else(|| Failure::new(FailureKind::Missing, "remote address unknown"))?;
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    match list.cidrs.iter().find(|net| net.contains(&addr)) {
        Some(net) => Ok(format!("remote address {addr} is in {net}")),
        None => Err(Failure::new(
            FailureKind::Forbidden,
            format!("remote address {addr} is not in the allowlist"),
        )),
    }
}
