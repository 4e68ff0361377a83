//! The idempotency key: what makes a provider's retry recognisable as a retry.
//!
//! The key comes from the receiver's `idempotency` config, or — for provider
//! presets — from the provider's own delivery id (`X-GitHub-Delivery`,
//! `webhook-id`, Stripe's event id). Keys are namespaced by their source and hashed
//! to a fixed length, so a 4 KiB header cannot become a 4 KiB index entry and keys
//! from different sources never collide. With no key, a delivery is not deduplicated
//! and the trace says so; dedupe is never a reason to reject a signed request.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{ProviderAuth, Receiver, ValueSource};
use crate::encoding::encode_hex;
use crate::explain::{Outcome, Stage, Step};
use crate::request::Event;

/// The key a delivery is deduplicated on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// The first 128 bits of `sha256(source description, 0, value)` in hex: fixed
    /// length, source-scoped, and small in the dedupe index. A collision needs
    /// about 2^64 keys in one receiver's retention window.
    pub hash: String,
    /// The raw value, cut to 200 bytes, for display.
    pub value: String,
}

impl IdempotencyKey {
    fn new(source: &ValueSource, value: &str) -> Self {
        let mut h = Sha256::new();
        // Header names are case-insensitive, so the namespace is too.
        h.update(source.describe().to_ascii_lowercase().as_bytes());
        h.update([0]);
        h.update(value.as_bytes());
        let mut shown = value.to_owned();
        if shown.len() > 200 {
            let mut end = 200;
            while !shown.is_char_boundary(end) {
                end -= 1;
            }
            shown.truncate(end);
        }
        Self {
            hash: encode_hex(&h.finalize()[..16]),
            value: shown,
        }
    }
}

/// The sources tried for a request, in order: the receiver's own config, else the
/// delivery id of the provider preset that authenticated it.
pub fn sources(receiver: &Receiver, passed: Option<&ProviderAuth>) -> Vec<ValueSource> {
    match (&receiver.idempotency, passed) {
        (Some(idem), _) => vec![idem.source.clone()],
        (None, Some(p)) => p.provider.spec().idempotency,
        (None, None) => Vec::new(),
    }
}

/// Derives the key, or `None` with a trace step that says why. A source that
/// yields several values (a JSONPath over a batch of events) keys on all of them.
pub fn key(
    receiver: &Receiver,
    passed: Option<&ProviderAuth>,
    event: &Event<'_>,
) -> (Option<IdempotencyKey>, Step) {
    let sources = sources(receiver, passed);
    if sources.is_empty() {
        return (
            None,
            Step::new(
                Stage::Idempotency,
                Outcome::Skip,
                "no idempotency configured: not deduplicated",
            ),
        );
    }
    let mut misses = Vec::new();
    for source in &sources {
        match source.read_all(event) {
            Ok(values) => {
                let key = IdempotencyKey::new(source, &values.join(","));
                let step = Step::new(
                    Stage::Idempotency,
                    Outcome::Pass,
                    format!("key from {}: {:?}", source.describe(), key.value),
                );
                return (Some(key), step);
            }
            Err(why) => misses.push(why),
        }
    }
    let step = Step::new(
        Stage::Idempotency,
        Outcome::Skip,
        format!(
            "no idempotency key ({}): not deduplicated",
            misses.join("; ")
        ),
    );
    (None, step)
}

/// The replay key of a request whose provider signs neither a timestamp nor a
/// delivery id (GitHub, Shopify, GitLab's token, Twilio, PagerDuty and the
/// like): a hash of what the signature covers, which cannot change without
/// breaking it — the exact body, or for Twilio the URL and the sorted form
/// parameters. (Not the signature text: hex case, extra `v1=` entries or
/// parameter order would change it and keep it valid.) A captured request sent
/// again under a fresh delivery id, or with none, is then a duplicate of the
/// first within the retention window; the provider's own redeliveries, same
/// bytes too, are answered as duplicates as before. `None` when the receiver's
/// auth is not such a preset, when its signature covers a timestamp or an id
/// (bound in time or to one delivery already), or when the request carries no
/// signature at all (it is refused anyway).
pub fn replay_key(receiver: &Receiver, event: &Event<'_>) -> Option<String> {
    use crate::config::providers::Scheme;
    use crate::config::{Auth, SignedPayload};
    let Auth::Provider(p) = &receiver.auth else {
        return None;
    };
    let mut h = Sha256::new();
    h.update(b"replay\0");
    match &p.scheme {
        Scheme::Hmac(hmac) => {
            let covered = hmac.timestamp.is_some()
                || hmac.id.is_some()
                || matches!(hmac.signed_payload, SignedPayload::Template { .. });
            let (ValueSource::Header { name } | ValueSource::HeaderParam { name, .. }) =
                &hmac.signature
            else {
                return None;
            };
            if covered || event.request.headers.get_bytes(name).is_none() {
                return None;
            }
            h.update(event.request.body);
        }
        Scheme::Gitlab => {
            event.request.headers.get_bytes("X-Gitlab-Token")?;
            h.update(event.request.body);
        }
        Scheme::Twilio => {
            event.request.headers.get_bytes("X-Twilio-Signature")?;
            h.update(event.request.url.as_bytes());
            let mut params = crate::request::parse_form(event.request.body);
            params.sort();
            for (name, value) in params {
                h.update(name.as_bytes());
                h.update(b"\0");
                h.update(value.as_bytes());
                h.update(b"\0");
            }
        }
        Scheme::Hubspot => return None,
    }
    Some(encode_hex(&h.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Headers, Request};
    use serde_json::json;

    fn receiver(auth: serde_json::Value, idem: Option<serde_json::Value>) -> Receiver {
        let mut cfg = json!({
            "name": "r", "auth": auth,
            "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "s"},
            "rules": [{"actions": [{"action_type": "resume_sandbox"}]}]
        });
        if let Some(i) = idem {
            cfg["idempotency"] = i;
        }
        Receiver::from_json(&cfg).unwrap()
    }

    fn key_for(
        r: &Receiver,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (Option<IdempotencyKey>, Step) {
        let headers: Headers = headers.iter().copied().collect();
        let req = Request {
            method: "POST",
            url: "https://h/hooks/r",
            headers: &headers,
            body: body.as_bytes(),
            remote_addr: None,
            received_at: 0,
        };
        key(r, None, &Event::new(req))
    }

    #[test]
    fn every_source_kind() {
        let none = json!({"auth_type": "none"});
        let r = receiver(
            none.clone(),
            Some(json!({"source": "header", "name": "X-Id"})),
        );
        assert_eq!(key_for(&r, &[("x-id", "abc")], "").0.unwrap().value, "abc");
        let r = receiver(
            none.clone(),
            Some(json!({"source": "header_param", "name": "Sig", "param": "t"})),
        );
        assert_eq!(
            key_for(&r, &[("Sig", "t=17,v1=x")], "").0.unwrap().value,
            "17"
        );
        let r = receiver(
            none.clone(),
            Some(json!({"source": "json_path", "path": "$.id"})),
        );
        assert_eq!(key_for(&r, &[], r#"{"id": 7}"#).0.unwrap().value, "7");
        let r = receiver(none.clone(), Some(json!({"source": "body_sha256"})));
        let a = key_for(&r, &[], "x").0.unwrap();
        assert_eq!(
            a.value,
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
        let r = receiver(none, None);
        let (k, step) = key_for(&r, &[], "x");
        assert!(k.is_none());
        assert_eq!(step.outcome, Outcome::Skip);
    }

    #[test]
    fn missing_key_is_explained_not_fatal() {
        let r = receiver(
            json!({"auth_type": "none"}),
            Some(json!({"source": "header", "name": "X-Id"})),
        );
        let (k, step) = key_for(&r, &[], "");
        assert!(k.is_none());
        assert_eq!(
            step.message,
            "no idempotency key (header X-Id missing): not deduplicated"
        );
    }

    #[test]
    fn keys_are_scoped_by_source() {
        let a = IdempotencyKey::new(&ValueSource::Header { name: "A".into() }, "1");
        let b = IdempotencyKey::new(&ValueSource::Header { name: "B".into() }, "1");
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.hash.len(), 32);
    }
}
