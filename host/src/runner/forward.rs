//! The request a `deliver_to_port` sends into a sandbox: the original bytes and
//! content type, or a JSON envelope; hookgate's identity headers added;
//! hop-by-hop and credential headers dropped unless the action lists them in
//! `forward_headers`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hookgate_core::config::{DeliverToPort, Payload};
use hookgate_core::redact::REDACTED;
use hookgate_core::request::is_credential;
use serde_json::json;

use crate::ids;
use crate::sandbox::Forward;
use crate::store::DeliveryRow;

/// Headers never forwarded into a sandbox: hop-by-hop ones (RFC 9110 §7.6.1) and
/// those the forward recomputes.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
];

/// The headers that tell a sandbox which delivery a request belongs to.
pub(super) fn hookgate_headers(d: &DeliveryRow) -> Vec<(String, Vec<u8>)> {
    let mut headers = vec![
        (
            "X-Hookgate-Delivery-Id".to_owned(),
            d.id.clone().into_bytes(),
        ),
        (
            "X-Hookgate-Receiver".to_owned(),
            d.receiver_id.clone().into_bytes(),
        ),
    ];
    if let Some(s) = &d.sandbox {
        headers.push(("X-Hookgate-Sandbox".to_owned(), s.clone().into_bytes()));
    }
    headers
}

/// The request forwarded for a `deliver_to_port`: the original bytes and content
/// type, or an envelope; hookgate's headers added; hop-by-hop and credential
/// headers dropped unless the action lists them in `forward_headers`.
pub fn forward(d: &DeliveryRow, spec: &DeliverToPort) -> Forward {
    let path = spec.path.clone().unwrap_or_else(|| "/".to_owned());
    let extra = |name: &str| {
        spec.forward_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    };
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let body = match spec.payload {
        Payload::Original => {
            for (name, value) in &d.request.headers {
                let lower = name.to_ascii_lowercase();
                if HOP_BY_HOP.contains(&lower.as_str()) || lower.starts_with("x-hookgate-") {
                    continue;
                }
                let kept = d.request.kept_credentials.contains(&lower);
                if ((is_credential(&lower) || kept) && !extra(&lower))
                    || value == REDACTED.as_bytes()
                {
                    continue;
                }
                headers.push((name.clone(), value.clone()));
            }
            bytes::Bytes::from(d.request.body.clone())
        }
        Payload::Envelope => {
            let shown: Vec<serde_json::Value> = d
                .request
                .headers
                .iter()
                .filter(|(n, v)| {
                    let kept = d
                        .request
                        .kept_credentials
                        .iter()
                        .any(|k| k.eq_ignore_ascii_case(n));
                    (!(is_credential(n) || kept) || extra(n)) && v != REDACTED.as_bytes()
                })
                .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
                .collect();
            let body = match std::str::from_utf8(&d.request.body) {
                Ok(text) => json!({"encoding": "utf-8", "data": text}),
                Err(_) => {
                    json!({"encoding": "base64", "data": B64.encode(&d.request.body)})
                }
            };
            let envelope = json!({
                "delivery_id": d.id,
                "receiver_id": d.receiver_id,
                "sandbox": d.sandbox,
                "received_at": ids::rfc3339(d.received_at),
                "method": d.request.method,
                "url": d.request.url,
                "headers": shown,
                "body": body,
                "replay_of": d.replay_of,
            });
            headers.push(("Content-Type".to_owned(), b"application/json".to_vec()));
            bytes::Bytes::from(envelope.to_string())
        }
    };
    headers.extend(hookgate_headers(d));
    Forward {
        method: "POST".to_owned(),
        path,
        headers,
        body,
        timeout: Duration::from_secs(spec.timeout_seconds),
    }
}

#[cfg(test)]
mod tests {
    use hookgate_core::config::Action;
    use hookgate_core::explain::Trace;

    use super::*;
    use crate::store::StoredRequest;

    fn delivery(headers: &[(&str, &[u8])], body: &[u8]) -> DeliveryRow {
        let request = StoredRequest {
            verified_at: Some(1),
            method: "POST".into(),
            url: "https://gw.example/hooks/rcv_1?x=1".into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
                .collect(),
            body: body.to_vec(),
            remote_addr: None,
            kept_credentials: Vec::new(),
        };
        DeliveryRow::accepted(
            "dlv_1".into(),
            "rcv_1".into(),
            1_795_000_000_000,
            request,
            Some("pr-42".into()),
            Vec::new(),
            Trace::default(),
        )
    }

    fn spec(extra: serde_json::Value) -> DeliverToPort {
        let mut v = json!({"action_type": "deliver_to_port", "port": 3000});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        match Action::from_json(&v).unwrap() {
            Action::DeliverToPort(spec) => spec,
            other => panic!("{other:?}"),
        }
    }

    fn names(f: &Forward) -> Vec<String> {
        f.headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect()
    }

    const SENT: [(&str, &[u8]); 8] = [
        ("Content-Type", b"application/json"),
        ("Connection", b"keep-alive"),
        ("Transfer-Encoding", b"chunked"),
        ("Host", b"gw.example"),
        ("X-Hub-Signature-256", b"sha256=abc"),
        ("Authorization", b"Bearer t"),
        ("X-Hookgate-Delivery-Id", b"spoofed"),
        ("X-GitHub-Event", b"pull_request"),
    ];

    #[test]
    fn the_original_keeps_bytes_and_drops_hop_by_hop_credentials_and_spoofs() {
        let d = delivery(&SENT, &[0xff, 0x00, b'{']);
        let f = forward(
            &d,
            &spec(json!({"path": "/hook?a=1", "timeout_seconds": 7})),
        );
        assert_eq!((f.method.as_str(), f.path.as_str()), ("POST", "/hook?a=1"));
        assert_eq!(f.timeout, Duration::from_secs(7));
        assert_eq!(&f.body[..], &[0xff, 0x00, b'{']);
        assert_eq!(
            names(&f),
            [
                "content-type",
                "x-github-event",
                "x-hookgate-delivery-id",
                "x-hookgate-receiver",
                "x-hookgate-sandbox"
            ]
        );
        // hookgate's own identity, never the sender's.
        assert!(
            f.headers
                .contains(&("X-Hookgate-Delivery-Id".into(), b"dlv_1".to_vec()))
        );
        assert!(
            f.headers
                .contains(&("X-Hookgate-Sandbox".into(), b"pr-42".to_vec()))
        );
    }

    #[test]
    fn forward_headers_lets_a_named_credential_through() {
        let d = delivery(&SENT, b"{}");
        let f = forward(
            &d,
            &spec(json!({"forward_headers": ["x-hub-signature-256"]})),
        );
        assert_eq!(f.path, "/");
        assert!(names(&f).contains(&"x-hub-signature-256".to_owned()));
        assert!(!names(&f).contains(&"authorization".to_owned()));
    }

    /// Regression (the trust issue): a credential header kept at rest for one
    /// action's `forward_headers` reached every other action of the receiver.
    #[test]
    fn a_kept_credential_goes_only_to_the_action_that_asks_for_it() {
        let mut d = delivery(&[("X-Ops-Code", b"hunter2")], b"{}");
        d.request.kept_credentials = vec!["x-ops-code".to_owned()];
        let asks = forward(&d, &spec(json!({"forward_headers": ["X-Ops-Code"]})));
        assert!(names(&asks).contains(&"x-ops-code".to_owned()));
        let other = forward(&d, &spec(json!({})));
        assert!(!names(&other).contains(&"x-ops-code".to_owned()));
        let envelope = forward(&d, &spec(json!({"payload": "envelope"})));
        assert!(!String::from_utf8_lossy(&envelope.body).contains("hunter2"));
    }

    #[test]
    fn the_envelope_describes_the_delivery_without_credentials() {
        let d = delivery(&SENT, &[0xff, 0xfe]);
        let f = forward(&d, &spec(json!({"payload": "envelope"})));
        let v: serde_json::Value = serde_json::from_slice(&f.body).unwrap();
        assert_eq!(v["delivery_id"], "dlv_1");
        assert_eq!(v["receiver_id"], "rcv_1");
        assert_eq!(v["sandbox"], "pr-42");
        assert_eq!(v["url"], "https://gw.example/hooks/rcv_1?x=1");
        assert_eq!(v["received_at"], "2026-11-18T11:06:40.000Z");
        assert_eq!(v["body"], json!({"encoding": "base64", "data": "//4="}));
        let shown: Vec<&str> = v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h[0].as_str().unwrap())
            .collect();
        assert!(!shown.contains(&"Authorization") && !shown.contains(&"X-Hub-Signature-256"));
        assert!(shown.contains(&"X-GitHub-Event"));
        assert_eq!(names(&f)[0], "content-type");
        assert_eq!(f.headers[0].1, b"application/json");
        let text = forward(
            &delivery(&[], b"{\"a\":1}"),
            &spec(json!({"payload": "envelope"})),
        );
        let v: serde_json::Value = serde_json::from_slice(&text.body).unwrap();
        assert_eq!(v["body"], json!({"encoding": "utf-8", "data": "{\"a\":1}"}));
    }
}
