//! The generic HMAC verifier, which most provider presets are built from.
//!
//! Steps, each failing with its own reason: check the signed timestamp (cheap, and
//! it keeps stale replays from costing a MAC), read every candidate signature (a
//! header, a query parameter, or all `v1=` entries of a header), compute the MAC
//! over the signed payload once per secret — streaming the body, never copying it —
//! and compare it with each candidate in constant time. Any secret matching any
//! candidate passes, which is how secret rotation works on both sides.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use super::{Failure, FailureKind, ct_eq, time};
use crate::config::source::header_value;
use crate::config::{
    Encoding, HmacAlgorithm, HmacAuth, SecretEncoding, SignedPayload, TemplatePart, TimestampSpec,
};
use crate::encoding::{decode_base64, decode_hex};
use crate::request::Event;

/// More candidate signatures than this in one request is an attack, not a rotation.
const MAX_CANDIDATES: usize = 16;

/// HMAC of the concatenation of `chunks`.
pub fn mac(algorithm: HmacAlgorithm, key: &[u8], chunks: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], chunks: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut m =
            <M as hmac::digest::KeyInit>::new_from_slice(key).expect("hmac takes any key length");
        for c in chunks {
            m.update(c);
        }
        m.finalize().into_bytes().to_vec()
    }
    match algorithm {
        HmacAlgorithm::Sha1 => run::<Hmac<Sha1>>(key, chunks),
        HmacAlgorithm::Sha256 => run::<Hmac<Sha256>>(key, chunks),
        HmacAlgorithm::Sha512 => run::<Hmac<Sha512>>(key, chunks),
    }
}

pub(crate) fn algorithm_name(a: HmacAlgorithm) -> &'static str {
    match a {
        HmacAlgorithm::Sha1 => "hmac-sha1",
        HmacAlgorithm::Sha256 => "hmac-sha256",
        HmacAlgorithm::Sha512 => "hmac-sha512",
    }
}

/// Reads and checks the signed timestamp; returns its text as received.
pub(crate) fn check_timestamp(
    spec: &TimestampSpec,
    tolerance: u64,
    event: &Event<'_>,
) -> Result<String, Failure> {
    let text = spec
        .source
        .read_first(event)
        .map_err(|why| Failure::new(FailureKind::Missing, format!("timestamp: {why}")))?;
    let ts = time::parse(&text, spec.format).ok_or_else(|| {
        Failure::new(
            FailureKind::Malformed,
            format!(
                "timestamp {} from {} is not {}",
                crate::explain::excerpt(&serde_json::Value::String(text.clone())),
                spec.source.describe(),
                match spec.format {
                    crate::config::TimestampFormat::UnixSeconds => "Unix seconds",
                    crate::config::TimestampFormat::UnixMillis => "Unix milliseconds",
                    crate::config::TimestampFormat::Rfc3339 => "an RFC 3339 time",
                }
            ),
        )
    })?;
    time::check(ts, event.request.received_at, tolerance)
        .map_err(|why| Failure::new(FailureKind::Timestamp, why))?;
    Ok(text)
}

/// Decodes each candidate signature, dropping the prefix.
pub(crate) fn candidates(
    raw: Vec<String>,
    prefix: Option<&str>,
    encoding: Encoding,
    origin: &str,
) -> Result<Vec<Vec<u8>>, Failure> {
    let mut out = Vec::new();
    let mut problem = None;
    for value in raw.into_iter().take(MAX_CANDIDATES) {
        let body = match prefix {
            Some(p) => match value.strip_prefix(p) {
                Some(rest) => rest,
                None => {
                    problem = Some(format!("signature in {origin} does not start with {p:?}"));
                    continue;
                }
            },
            None => value.as_str(),
        };
        let decoded = match encoding {
            Encoding::Hex => decode_hex(body),
            Encoding::Base64 => decode_base64(body),
        };
        match decoded {
            Some(sig) if !sig.is_empty() => out.push(sig),
            _ => {
                let enc = match encoding {
                    Encoding::Hex => "hex",
                    Encoding::Base64 => "base64",
                };
                problem = Some(format!("signature in {origin} is not valid {enc}"));
            }
        }
    }
    if out.is_empty() {
        return Err(Failure::new(
            FailureKind::Malformed,
            problem.unwrap_or_else(|| format!("no signature in {origin}")),
        ));
    }
    Ok(out)
}

pub(crate) fn verify(h: &HmacAuth, event: &Event<'_>) -> Result<String, Failure> {
    verify_with_tolerance(h, None, event)
}

/// Verifies with the spec's own tolerance, or `tolerance` when a preset overrides it.
pub(crate) fn verify_with_tolerance(
    h: &HmacAuth,
    tolerance: Option<u64>,
    event: &Event<'_>,
) -> Result<String, Failure> {
    let timestamp = match &h.timestamp {
        Some(spec) => Some(check_timestamp(
            spec,
            tolerance.unwrap_or(spec.tolerance_seconds),
            event,
        )?),
        None => None,
    };
    let origin = h.signature.describe();
    let raw = h
        .signature
        .read_all(event)
        .map_err(|why| Failure::new(FailureKind::Missing, format!("signature {why}")))?;
    let sigs = candidates(raw, h.prefix.as_deref(), h.encoding, &origin)?;

    // Template values are read before any MAC so a missing one is reported as such.
    let mut owned: Vec<String> = Vec::new();
    let parts: &[TemplatePart] = match &h.signed_payload {
        SignedPayload::RawBody => &[TemplatePart::Body],
        SignedPayload::Template { template } => template.parts(),
    };
    for part in parts {
        match part {
            TemplatePart::Id => {
                let source =
                    h.id.as_ref()
                        .ok_or_else(|| Failure::new(FailureKind::Missing, "no id source"))?;
                owned.push(
                    source
                        .read_first(event)
                        .map_err(|why| Failure::new(FailureKind::Missing, format!("id: {why}")))?,
                );
            }
            TemplatePart::Header(name) => {
                owned.push(
                    header_value(event, name)
                        .map_err(|why| Failure::new(FailureKind::Missing, why))?
                        .to_owned(),
                );
            }
            _ => {}
        }
    }
    let mut owned = owned.iter();
    let mut chunks: Vec<&[u8]> = Vec::with_capacity(parts.len());
    for part in parts {
        chunks.push(match part {
            TemplatePart::Literal(s) => s.as_bytes(),
            TemplatePart::Body => event.request.body,
            TemplatePart::Timestamp => timestamp.as_deref().unwrap_or_default().as_bytes(),
            TemplatePart::Url => event.request.url.as_bytes(),
            TemplatePart::Method => event.request.method.as_bytes(),
            TemplatePart::Id | TemplatePart::Header(_) => {
                owned.next().map_or(&[][..], |s| s.as_bytes())
            }
        });
    }
    check_macs(
        h.algorithm,
        h.secrets.iter().map(|s| (s.name(), s.expose())),
        h.secret_encoding,
        &chunks,
        &sigs,
        &origin,
    )
}

/// Computes the MAC once per secret and compares it with every candidate.
pub(crate) fn check_macs<'s>(
    algorithm: HmacAlgorithm,
    secrets: impl Iterator<Item = (&'s str, &'s str)>,
    secret_encoding: SecretEncoding,
    chunks: &[&[u8]],
    sigs: &[Vec<u8>],
    origin: &str,
) -> Result<String, Failure> {
    let mut tried = Vec::new();
    for (name, value) in secrets {
        tried.push(name);
        let Some(key) = secret_encoding.decode_key(value) else {
            continue;
        };
        let expected = mac(algorithm, &key, chunks);
        // Every candidate is compared, so timing does not reveal which one matched.
        let matched = sigs
            .iter()
            .fold(false, |acc, sig| acc | ct_eq(&expected, sig));
        if matched {
            return Ok(format!(
                "{} signature in {origin} matched secret {name}",
                algorithm_name(algorithm)
            ));
        }
    }
    let sigs_word = match sigs.len() {
        1 => "the signature".to_owned(),
        n => format!("none of {n} signatures"),
    };
    let secrets_word = match tried.as_slice() {
        [one] => format!("secret {one}"),
        many => format!("any of secrets {}", many.join(", ")),
    };
    let verb = if sigs.len() == 1 {
        "does not match"
    } else {
        "matches"
    };
    Err(Failure::new(
        FailureKind::Mismatch,
        format!(
            "{} mismatch: {sigs_word} in {origin} {verb} {secrets_word}",
            algorithm_name(algorithm)
        ),
    ))
}
