//! The edge→host hop: the event the edge forwards, and the signature that carries it.
//!
//! The edge accepts a webhook with the same core as the host — it authenticates,
//! keys, targets and plans it — and answers the provider at once; its Durable
//! Object then forwards the event to the host's `POST /v1/edge/ingest`, at least
//! once. Both ends of that hop are written in Rust against this crate, so the
//! message is one type, [`ForwardedEvent`], that one runtime serializes and the
//! other deserializes: a field renamed on one side cannot silently become a
//! default on the other. Its JSON is the format the edge has always sent, so an
//! outbox written before a deploy still drains after it.
//!
//! Bytes (the body, each header value) are `Vec<u8>` in Rust and base64 strings
//! on the wire, because JSON has no bytes and header values need not be UTF-8.
//! The plan travels as [`ForwardedAction`]s, each action's config as JSON: an
//! action the host's core cannot read (an edge built from another release) fails
//! that one delivery visibly when it runs, rather than making the whole event
//! unreadable, which would leave it, and everything behind it, in the edge's
//! outbox. The trace is core's [`Trace`], so the host shows what the edge
//! decided as if it had decided it itself.
//!
//! The request is authenticated by [`sign`] and [`verify`]: a hex HMAC-SHA256,
//! under the key both sides share, of `{timestamp}.{body}`, the timestamp in
//! [`TIMESTAMP_HEADER`] and the MAC in [`SIGNATURE_HEADER`]. The timestamp must be
//! within [`TOLERANCE_SECONDS`] of the receiving clock, so a captured forward
//! cannot be replayed later; within that window the host dedupes on
//! [`ForwardedEvent::edge_delivery_id`]. Like the rest of core, nothing here reads
//! a clock: callers pass the time.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::encoding::encode_hex;
use crate::explain::Trace;
use crate::idempotency::IdempotencyKey;
use crate::rules::Planned;
use serde_json::Value;

/// The header carrying the Unix time, in seconds, at which the edge signed.
pub const TIMESTAMP_HEADER: &str = "x-hookgate-edge-timestamp";
/// The header carrying the lowercase hex HMAC-SHA256 of `{timestamp}.{body}`.
pub const SIGNATURE_HEADER: &str = "x-hookgate-edge-signature";
/// How far, in seconds and either way, a forward's timestamp may be from the
/// receiving clock: five minutes, the window the host has always allowed the edge
/// (and Stripe's and Standard Webhooks' default). The edge signs each attempt
/// afresh, so only clock skew and transit count against it.
pub const TOLERANCE_SECONDS: u64 = 300;

/// An event the edge accepted, as it travels to the host: the request exactly as
/// the provider sent it, and what the edge's core decided about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedEvent {
    /// The edge's id for the delivery (`edg_` and 32 hex digits), the key the host
    /// dedupes forwards on. The edge's inbox (its Durable Object) gives it when it
    /// records the event, so it is `None` only between the Worker and the inbox;
    /// every event forwarded to the host has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_delivery_id: Option<String>,
    pub receiver_id: String,
    pub method: String,
    /// The full public URL the provider called, query included.
    pub url: String,
    /// Names and values in wire order, duplicates kept; `[name, base64]` pairs on
    /// the wire.
    #[serde(with = "base64_headers")]
    pub headers: Vec<(String, Vec<u8>)>,
    /// The raw body; base64 on the wire.
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
    pub remote_addr: Option<IpAddr>,
    /// When the edge received the request, in Unix milliseconds.
    pub received_at: i64,
    /// When the edge's core had authenticated it, in Unix milliseconds.
    pub verified_at: i64,
    /// The key the edge deduped on, if the receiver has one.
    pub idempotency_key: Option<IdempotencyKey>,
    /// The sandbox the event is for, as the edge resolved it. Text, not a
    /// [`SandboxName`](crate::target::SandboxName): a name the host cannot use must become a delivery that
    /// failed visibly with its reason, not a refused event that would sit in
    /// the edge's outbox.
    pub sandbox: Option<String>,
    /// The matched rules' actions, in order.
    #[serde(default)]
    pub plan: Vec<ForwardedAction>,
    /// Every step the edge's core took.
    #[serde(default)]
    pub trace: Trace,
}

/// One planned action as it travels: which rule and which of its actions, and
/// the action's config as JSON, read by the host's core when the action runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardedAction {
    pub rule: usize,
    pub action: usize,
    pub spec: Value,
}

impl ForwardedAction {
    /// Core's plan, as it travels.
    pub fn plan(planned: &[Planned]) -> Vec<Self> {
        planned
            .iter()
            .map(|p| Self {
                rule: p.rule,
                action: p.action,
                spec: serde_json::to_value(&p.spec).unwrap_or(Value::Null),
            })
            .collect()
    }
}

/// Why a forward was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The timestamp header is absent, or not an integer.
    #[error("checking the edge timestamp: {TIMESTAMP_HEADER} is missing or not Unix seconds")]
    MalformedTimestamp,
    /// The timestamp is further than [`TOLERANCE_SECONDS`] from the receiving clock.
    #[error(
        "checking the edge timestamp: it is {skew_seconds} s from this clock, \
         more than the {TOLERANCE_SECONDS} s allowed"
    )]
    StaleTimestamp { skew_seconds: u64 },
    /// The signature header is absent or is not the MAC under this key.
    #[error("checking the edge signature: {SIGNATURE_HEADER} does not match the forward key")]
    SignatureMismatch,
}

/// Signs a forward: the lowercase hex HMAC-SHA256 under `key` of
/// `{timestamp_secs}.{body}`. Send `timestamp_secs` in [`TIMESTAMP_HEADER`] and
/// the result in [`SIGNATURE_HEADER`].
pub fn sign(key: &[u8], timestamp_secs: i64, body: &[u8]) -> String {
    mac(key, timestamp_secs.to_string().as_bytes(), body)
}

/// Checks a forward's headers against its body: the timestamp is an integer
/// within [`TOLERANCE_SECONDS`] of `now_secs`, and the signature is the MAC of
/// the timestamp exactly as sent, a `.` and the body, compared in constant time.
/// Pass an empty string for a header that is absent.
pub fn verify(
    key: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), ForwardError> {
    check_timestamp(timestamp_header, now_secs)?;
    let expected = mac(key, timestamp_header.as_bytes(), body);
    if bool::from(expected.as_bytes().ct_eq(signature_header.as_bytes())) {
        Ok(())
    } else {
        Err(ForwardError::SignatureMismatch)
    }
}

/// The first half of [`verify`], which needs no body: the timestamp is an
/// integer within [`TOLERANCE_SECONDS`] of `now_secs` (any `i64`, however far:
/// the distance cannot overflow). A receiver checks it before reading the body.
pub fn check_timestamp(timestamp_header: &str, now_secs: i64) -> Result<(), ForwardError> {
    let sent: i64 = timestamp_header
        .parse()
        .map_err(|_| ForwardError::MalformedTimestamp)?;
    let skew_seconds = now_secs.abs_diff(sent);
    if skew_seconds > TOLERANCE_SECONDS {
        return Err(ForwardError::StaleTimestamp { skew_seconds });
    }
    Ok(())
}

fn mac(key: &[u8], timestamp: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(timestamp);
    mac.update(b".");
    mac.update(body);
    encode_hex(&mac.finalize().into_bytes())
}

/// Bytes from a base64 string. It decodes straight from the deserializer's text,
/// so the base64 of a 1 MiB body is not first copied into a `String` of its own.
struct Base64Visitor;

impl serde::de::Visitor<'_> for Base64Visitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a base64 string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
        crate::encoding::decode_base64(text).ok_or_else(|| E::custom("not valid base64"))
    }
}

mod base64_bytes {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::encoding::encode_base64(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_str(super::Base64Visitor)
    }
}

mod base64_headers {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Value<'a>(&'a [u8]);

    impl Serialize for Value<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::base64_bytes::serialize(self.0, s)
        }
    }

    struct Decoded(Vec<u8>);

    impl<'de> Deserialize<'de> for Decoded {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::base64_bytes::deserialize(d).map(Self)
        }
    }

    pub(super) fn serialize<S: Serializer>(
        headers: &[(String, Vec<u8>)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(headers.iter().map(|(name, value)| (name, Value(value))))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        let pairs = Vec::<(String, Decoded)>::deserialize(d)?;
        Ok(pairs.into_iter().map(|(name, v)| (name, v.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::explain::{Outcome, Stage, Step};

    const KEY: &[u8] = b"forward-key-0123456789";
    const NOW: i64 = 1_795_000_000;

    fn event() -> ForwardedEvent {
        let receiver = crate::Receiver::from_json(&json!({
            "name": "github",
            "auth": {"auth_type": "none"},
            "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "pr-42"},
            "rules": [{"actions": [
                {"action_type": "ensure_sandbox", "template": {"image": "echo"}},
                {"action_type": "deliver_to_port", "port": 8080},
            ]}],
        }))
        .unwrap();
        ForwardedEvent {
            edge_delivery_id: Some("edg_00112233445566778899aabbccddeeff".to_owned()),
            receiver_id: "rcv_1".to_owned(),
            method: "POST".to_owned(),
            url: "https://edge.example/hooks/rcv_1?x=1".to_owned(),
            headers: vec![
                ("content-type".to_owned(), b"application/json".to_vec()),
                // obs-text: a header value need not be UTF-8.
                ("x-latin1".to_owned(), vec![b'c', 0xe9, 0xff, 0x00]),
                ("x-latin1".to_owned(), Vec::new()),
            ],
            body: vec![0x7b, 0xff, 0xfe, 0x00, 0x80, 0x7d],
            remote_addr: Some("2001:db8::7".parse().unwrap()),
            received_at: 1_795_000_000_000,
            verified_at: 1_795_000_000_001,
            idempotency_key: Some(IdempotencyKey {
                hash: "0123456789abcdef0123456789abcdef".to_owned(),
                value: "72d4e0a0-delivery".to_owned(),
            }),
            sandbox: Some("pr-42".to_owned()),
            plan: ForwardedAction::plan(&crate::rules::plan(
                &receiver,
                &[crate::rules::Matched(0)],
            )),
            trace: Trace {
                steps: vec![Step::new(Stage::Auth, Outcome::Pass, "accepted")],
            },
        }
    }

    #[test]
    fn round_trips_through_json_with_bytes_that_are_not_utf8() {
        let sent = event();
        let text = serde_json::to_string(&sent).unwrap();
        let got: ForwardedEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(got.headers, sent.headers);
        assert_eq!(got.body, sent.body);
        assert_eq!(got.edge_delivery_id, sent.edge_delivery_id);
        assert_eq!(got.remote_addr, sent.remote_addr);
        assert_eq!(got.idempotency_key, sent.idempotency_key);
        assert_eq!(got.sandbox, sent.sandbox);
        assert_eq!(got.trace, sent.trace);
        assert_eq!(got.plan, sent.plan);
        assert_eq!(serde_json::to_string(&got).unwrap(), text);
        let wire: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(wire["headers"][1], json!(["x-latin1", "Y+n/AA=="]));
        assert_eq!(wire["body"], "e//+AIB9");
        assert_eq!(wire["remote_addr"], "2001:db8::7");
        assert_eq!(wire["sandbox"], "pr-42");
        assert_eq!(wire["idempotency_key"]["value"], "72d4e0a0-delivery");
        assert_eq!(wire["plan"][1]["spec"]["action_type"], "deliver_to_port");
    }

    #[test]
    fn the_inbox_adds_the_edge_id() {
        let mut e = event();
        e.edge_delivery_id = None;
        let wire = serde_json::to_value(&e).unwrap();
        assert!(wire.get("edge_delivery_id").is_none(), "{wire}");
        let back: ForwardedEvent = serde_json::from_value(wire).unwrap();
        assert_eq!(back.edge_delivery_id, None);
    }

    /// An event exactly as the edge has sent it since it first forwarded:
    /// `json!` with sorted keys, nulls for what is absent, the inbox's id added.
    #[test]
    fn reads_the_edges_wire_format() {
        let text = r#"{"body":"eyJhY3Rpb24iOiJvcGVuZWQifQ==","edge_delivery_id":"edg_0123456789abcdef0123456789abcdef","headers":[["content-type","YXBwbGljYXRpb24vanNvbg=="],["x-github-delivery","NzJkNGUwYTA="]],"idempotency_key":{"hash":"5f1c8a0e9b7d6c4a3e2f1a0b9c8d7e6f","value":"72d4e0a0"},"method":"POST","plan":[{"action":0,"rule":0,"spec":{"action_type":"ensure_sandbox","template":{"image":"echo","ports":[8080]}}},{"action":1,"rule":0,"spec":{"action_type":"deliver_to_port","auto_resume":"never","payload":"original","port":8080,"timeout_seconds":30}}],"received_at":1795000000000,"receiver_id":"rcv_01","remote_addr":"203.0.113.7","sandbox":"pr-42","trace":[{"message":"hmac-sha256 signature in header X-Hub-Signature-256 matched secret github","outcome":"pass","stage":"auth"},{"message":"key from header X-GitHub-Delivery","outcome":"pass","stage":"idempotency"}],"url":"https://edge.example/hooks/rcv_01","verified_at":1795000000002}"#;
        let e: ForwardedEvent = serde_json::from_str(text).unwrap();
        assert_eq!(
            e.edge_delivery_id.as_deref(),
            Some("edg_0123456789abcdef0123456789abcdef")
        );
        assert_eq!(e.receiver_id, "rcv_01");
        assert_eq!(e.method, "POST");
        assert_eq!(e.url, "https://edge.example/hooks/rcv_01");
        assert_eq!(
            e.headers,
            vec![
                ("content-type".to_owned(), b"application/json".to_vec()),
                ("x-github-delivery".to_owned(), b"72d4e0a0".to_vec()),
            ]
        );
        assert_eq!(e.body, br#"{"action":"opened"}"#);
        assert_eq!(e.remote_addr, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(e.received_at, 1_795_000_000_000);
        assert_eq!(e.verified_at, 1_795_000_000_002);
        let key = e.idempotency_key.unwrap();
        assert_eq!(key.hash, "5f1c8a0e9b7d6c4a3e2f1a0b9c8d7e6f");
        assert_eq!(key.value, "72d4e0a0");
        assert_eq!(e.sandbox.as_deref(), Some("pr-42"));
        let actions: Vec<(usize, usize, &str)> = e
            .plan
            .iter()
            .map(|p| (p.rule, p.action, p.spec["action_type"].as_str().unwrap()))
            .collect();
        assert_eq!(
            actions,
            vec![(0, 0, "ensure_sandbox"), (0, 1, "deliver_to_port")]
        );
        assert_eq!(e.trace.steps.len(), 2);
        assert_eq!(e.trace.steps[1].stage, Stage::Idempotency);
    }

    #[test]
    fn absent_decisions_read_as_none_and_empty() {
        let text = r#"{"body":"","headers":[],"method":"POST","received_at":1,"receiver_id":"r","remote_addr":null,"sandbox":null,"url":"https://e/hooks/r","verified_at":2}"#;
        let e: ForwardedEvent = serde_json::from_str(text).unwrap();
        assert!(e.edge_delivery_id.is_none() && e.idempotency_key.is_none());
        assert!(e.remote_addr.is_none() && e.sandbox.is_none());
        assert!(e.body.is_empty() && e.plan.is_empty() && e.trace.steps.is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let base = serde_json::to_value(event()).unwrap();
        let bad = |field: &str, value: serde_json::Value| {
            let mut v = base.clone();
            v[field] = value;
            serde_json::from_value::<ForwardedEvent>(v)
                .unwrap_err()
                .to_string()
        };
        assert!(bad("body", json!("not base64!")).contains("not valid base64"));
        assert!(bad("headers", json!([["a", "%%"]])).contains("not valid base64"));
    }

    /// An action this core does not know still reads: the host fails that one
    /// delivery when it runs, and the edge's outbox moves on.
    #[test]
    fn an_action_this_core_cannot_read_travels_as_it_was_sent() {
        let mut wire = serde_json::to_value(event()).unwrap();
        let unknown = json!({"action_type": "teleport", "port": 70000, "new_field": true});
        wire["plan"][0]["spec"] = unknown.clone();
        let e: ForwardedEvent = serde_json::from_value(wire).unwrap();
        assert_eq!(e.plan[0].spec, unknown);
    }

    /// A timestamp as far from now as an `i64` allows is out of tolerance, not
    /// an overflow and not a signature error; the check needs no body.
    #[test]
    fn a_timestamp_at_the_ends_of_time_is_stale() {
        let now = 1_795_000_000;
        for far in [i64::MIN, i64::MAX, now - 301, now + 301] {
            assert!(
                matches!(
                    check_timestamp(&far.to_string(), now),
                    Err(ForwardError::StaleTimestamp { .. })
                ),
                "{far}"
            );
        }
        assert_eq!(check_timestamp(&(now - 300).to_string(), now), Ok(()));
        assert_eq!(
            check_timestamp("", now),
            Err(ForwardError::MalformedTimestamp)
        );
    }

    #[test]
    fn a_signature_verifies_under_its_key() {
        let body = br#"{"receiver_id":"r"}"#;
        let sig = sign(KEY, NOW, body);
        assert_eq!(sig.len(), 64);
        assert_eq!(verify(KEY, &NOW.to_string(), &sig, body, NOW), Ok(()));
        // Anywhere inside the window, either way.
        let edge = NOW + 300;
        assert_eq!(verify(KEY, &NOW.to_string(), &sig, body, edge), Ok(()));
        assert_eq!(verify(KEY, &NOW.to_string(), &sig, body, NOW - 300), Ok(()));
    }

    /// The scheme, spelled out once: hex HMAC-SHA256 of `{timestamp}.{body}`.
    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY).unwrap();
        mac.update(format!("{NOW}.").as_bytes());
        mac.update(b"{}");
        assert_eq!(
            sign(KEY, NOW, b"{}"),
            encode_hex(&mac.finalize().into_bytes())
        );
    }

    #[test]
    fn a_wrong_key_or_tampered_body_is_a_mismatch() {
        let body = br#"{"receiver_id":"r"}"#;
        let sig = sign(KEY, NOW, body);
        let ts = NOW.to_string();
        assert_eq!(
            verify(b"another-key-0123456789", &ts, &sig, body, NOW),
            Err(ForwardError::SignatureMismatch)
        );
        assert_eq!(
            verify(KEY, &ts, &sig, br#"{"receiver_id":"s"}"#, NOW),
            Err(ForwardError::SignatureMismatch)
        );
        // The timestamp is signed too: a fresh one cannot be put on an old signature.
        let later = (NOW + 1).to_string();
        assert_eq!(
            verify(KEY, &later, &sig, body, NOW),
            Err(ForwardError::SignatureMismatch)
        );
        assert_eq!(
            verify(KEY, &ts, "", body, NOW),
            Err(ForwardError::SignatureMismatch)
        );
        assert_eq!(
            verify(KEY, &ts, &sig.to_uppercase(), body, NOW),
            Err(ForwardError::SignatureMismatch)
        );
        let err = ForwardError::SignatureMismatch.to_string();
        assert_eq!(
            err,
            "checking the edge signature: x-hookgate-edge-signature does not match the forward key"
        );
    }

    #[test]
    fn a_stale_timestamp_is_refused_before_any_mac() {
        let body = b"{}";
        let old = NOW - 301;
        let sig = sign(KEY, old, body);
        let err = verify(KEY, &old.to_string(), &sig, body, NOW).unwrap_err();
        assert_eq!(err, ForwardError::StaleTimestamp { skew_seconds: 301 });
        assert!(err.to_string().contains("300 s"), "{err}");
        let ahead = NOW + 3600;
        assert_eq!(
            verify(KEY, &ahead.to_string(), &sign(KEY, ahead, body), body, NOW),
            Err(ForwardError::StaleTimestamp { skew_seconds: 3600 })
        );
        assert_eq!(
            verify(KEY, &i64::MIN.to_string(), "", body, i64::MAX),
            Err(ForwardError::StaleTimestamp {
                skew_seconds: u64::MAX
            })
        );
    }

    #[test]
    fn a_malformed_timestamp_is_refused() {
        for ts in ["", "soon", "1795000000.5", "1e9", " 1795000000"] {
            assert_eq!(
                verify(KEY, ts, &sign(KEY, NOW, b"{}"), b"{}", NOW),
                Err(ForwardError::MalformedTimestamp),
                "{ts:?}"
            );
        }
        assert_eq!(
            ForwardError::MalformedTimestamp.to_string(),
            "checking the edge timestamp: x-hookgate-edge-timestamp is missing or not Unix seconds"
        );
    }
}
