//! Provider presets that need code of their own to verify: GitLab's shared token,
//! Twilio (URL plus sorted form parameters, or a `bodySHA256` query parameter for
//! JSON) and HubSpot v3 (method, partly decoded URI, body and timestamp). Every
//! other preset is an [`HmacAuth`](crate::config::HmacAuth) that `crate::config::providers`
//! built when the config was read, and runs through the generic HMAC verifier.

use super::hmac::{self, check_macs, check_timestamp};
use super::{Failure, FailureKind, ct_eq};
use crate::config::providers::{FIVE_MINUTES, Scheme};
use crate::config::source::header_value;
use crate::config::{
    Encoding, HmacAlgorithm, ProviderAuth, SecretEncoding, TimestampFormat, TimestampSpec,
    ValueSource,
};
use crate::request::{Event, parse_form};
use crate::secret::Secret;

pub(crate) fn verify(p: &ProviderAuth, event: &Event<'_>) -> Result<String, Failure> {
    let result = match &p.scheme {
        Scheme::Hmac(h) => hmac::verify_with_tolerance(h, p.tolerance_seconds, event),
        Scheme::Gitlab => gitlab(&p.secret, event),
        Scheme::Twilio => twilio(&p.secret, event),
        Scheme::Hubspot => hubspot(
            &p.secret,
            p.tolerance_seconds.unwrap_or(FIVE_MINUTES),
            event,
        ),
    };
    let name = p.provider.name();
    result
        .map(|ok| format!("{name}: {ok}"))
        .map_err(|f| Failure::new(f.kind, format!("{name}: {}", f.reason)))
}

/// GitLab sends the configured secret token verbatim in `X-Gitlab-Token`.
fn gitlab(secret: &Secret, event: &Event<'_>) -> Result<String, Failure> {
    let token = crate::config::TokenAuth {
        name: "X-Gitlab-Token".to_owned(),
        secret: secret.clone(),
    };
    super::simple::header_equals(&token, event)
}

/// Twilio: HMAC-SHA1 (base64) over the URL and, for form posts, every parameter name
/// and value sorted by name; JSON posts instead carry the body's SHA-256 in the
/// URL's `bodySHA256` parameter. Twilio's SDKs also accept the URL with the default
/// port added or removed, since proxies differ in what they pass on.
fn twilio(secret: &Secret, event: &Event<'_>) -> Result<String, Failure> {
    let origin = "header X-Twilio-Signature";
    let raw = header_value(event, "X-Twilio-Signature")
        .map_err(|why| Failure::new(FailureKind::Missing, why))?;
    let sigs = hmac::candidates(vec![raw.to_owned()], None, Encoding::Base64, origin)?;
    let url = event.request.url;
    let body_hash = event.query_param("bodySHA256").map(str::to_owned);
    let mut form = String::new();
    if body_hash.is_none() {
        // Twilio's SDKs sign each distinct (name, value) once, sorted by name, then value.
        let mut params = parse_form(event.request.body);
        params.sort();
        params.dedup();
        for (k, v) in params {
            form.push_str(&k);
            form.push_str(&v);
        }
    }
    let secrets = [(secret.name(), secret.expose())];
    let mut result = Err(Failure::new(FailureKind::Mismatch, "no URL form tried"));
    for variant in url_port_variants(url) {
        result = check_macs(
            HmacAlgorithm::Sha1,
            secrets.iter().copied(),
            SecretEncoding::Raw,
            &[variant.as_bytes(), form.as_bytes()],
            &sigs,
            origin,
        );
        if result.is_ok() {
            break;
        }
    }
    let ok = result?;
    if let Some(expected) = body_hash {
        use sha2::Digest;
        let actual = crate::encoding::encode_hex(&sha2::Sha256::digest(event.request.body));
        if !ct_eq(actual.as_bytes(), expected.to_ascii_lowercase().as_bytes()) {
            return Err(Failure::new(
                FailureKind::Mismatch,
                "body does not match the bodySHA256 query parameter",
            ));
        }
    }
    Ok(ok)
}

/// The URL as given, then without any explicit port, then with the scheme's default
/// port when it has none — the forms twilio-python's validator tries.
fn url_port_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    // An IPv6 literal's colons are inside brackets; the port follows "]".
    let port_sep = if hostport.starts_with('[') {
        hostport.find("]:").map(|i| i + 1)
    } else {
        hostport.rfind(':')
    };
    match port_sep {
        Some(i) => out.push(format!("{scheme}://{userinfo}{}{tail}", &hostport[..i])),
        None => out.push(format!("{scheme}://{userinfo}{hostport}:{default}{tail}")),
    }
    out
}

/// HubSpot v3: base64 HMAC-SHA256 over method + URI + body + timestamp, rejecting
/// timestamps more than five minutes away.
fn hubspot(secret: &Secret, tolerance: u64, event: &Event<'_>) -> Result<String, Failure> {
    let origin = "header X-HubSpot-Signature-v3";
    let spec = TimestampSpec {
        source: ValueSource::Header {
            name: "X-HubSpot-Request-Timestamp".to_owned(),
        },
        format: TimestampFormat::UnixMillis,
        tolerance_seconds: tolerance,
    };
    let timestamp = check_timestamp(&spec, tolerance, event)?;
    let raw = header_value(event, "X-HubSpot-Signature-v3")
        .map_err(|why| Failure::new(FailureKind::Missing, why))?;
    let sigs = hmac::candidates(vec![raw.to_owned()], None, Encoding::Base64, origin)?;
    // HubSpot's SDKs sign the URL as called; its docs decode some escapes first.
    let url = event.request.url;
    let decoded = hubspot_decode_uri(url);
    let mut forms = vec![url];
    if decoded != url {
        forms.push(&decoded);
    }
    let mut result = Err(Failure::new(FailureKind::Mismatch, "no URL form tried"));
    for uri in forms {
        result = check_macs(
            HmacAlgorithm::Sha256,
            [(secret.name(), secret.expose())].into_iter(),
            SecretEncoding::Raw,
            &[
                event.request.method.as_bytes(),
                uri.as_bytes(),
                event.request.body,
                timestamp.as_bytes(),
            ],
            &sigs,
            origin,
        );
        if result.is_ok() {
            break;
        }
    }
    result
}

/// The escapes HubSpot's v3 documentation decodes before signing.
fn hubspot_decode_uri(url: &str) -> String {
    const DECODED: [(&str, &str); 12] = [
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3).unwrap_or(&rest[i..]);
        match DECODED.iter().find(|(e, _)| e.eq_ignore_ascii_case(esc)) {
            Some((_, c)) => {
                out.push_str(c);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}
