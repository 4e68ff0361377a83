//! The request a `deliver_to_port` sends into a sandbox: the original bytes and
//! content type, or a JSON envelope; hookgate's identity headers added;
//! hop-by-hop and credential headers dropped unless the action lists them in
//! `forward_headers`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hookgate_core::config::{DeliverToPort, Payload};
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
            for (name, value) in &d.headers {
                let lower = name.to_ascii_lowercase();
                if HOP_BY_HOP.contains(&lower.as_str()) || lower.starts_with("x-hookgate-") {
                    continue;
                }
                if is_credential(&lower) && !extra(&lower) {
                    continue;
                }
                headers.push((name.clone(), value.clone()));
            }
            bytes::Bytes::from(d.body.clone())
        }
        Payload::Envelope => {
            let shown: Vec<serde_json::Value> = d
                .headers
                .iter()
                .filter(|(n, _)| !is_credential(n) || extra(n))
                .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
                .collect();
            let body = match std::str::from_utf8(&d.body) {
                Ok(text) => json!({"encoding": "utf-8", "data": text}),
                Err(_) => {
                    json!({"encoding": "base64", "data": B64.encode(&d.body)})
                }
            };
            let envelope = json!({
                "delivery_id": d.id,
                "receiver_id": d.receiver_id,
                "sandbox": d.sandbox,
                "received_at": ids::rfc3339(d.received_at),
                "method": d.method,
                "url": d.url,
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
