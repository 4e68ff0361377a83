//! Standard Webhooks asymmetric signatures (`v1a`): Ed25519 over
//! `{webhook-id}.{webhook-timestamp}.{body}`. `webhook-signature` holds a
//! space-separated list of `version,base64` entries; any `v1a` entry that verifies
//! under any configured key passes (so keys and signatures can rotate). Keys are
//! `whpk_` followed by the base64 of the 32-byte public key.
//!
//! Config: `{"public_key": "whpk_…"}` or `{"public_keys": ["whpk_…", …]}`, and
//! optionally `"tolerance_seconds"` (default 300, the specification's).

wit_bindgen::generate!({ path: "../../wit", world: "verifier" });

use hookgate::plugin::host_crypto;
use hookgate::plugin::types::Request;
use hookgate_plugin_support as support;
use serde_json::Value;

/// The Standard Webhooks specification's tolerance: five minutes.
const TOLERANCE_SECONDS: u64 = 300;

fn keys(config: &Value) -> Result<Vec<Vec<u8>>, String> {
    let texts: Vec<&str> = match (config.get("public_key"), config.get("public_keys")) {
        (Some(Value::String(k)), None) => vec![k.as_str()],
        (None, Some(Value::Array(list))) if !list.is_empty() => list
            .iter()
            .map(|k| k.as_str().ok_or("config.public_keys: expected strings"))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(
                "config: expected public_key (a string) or public_keys (a non-empty list)".into(),
            );
        }
    };
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            text.strip_prefix("whpk_")
                .and_then(|b64| host_crypto::base64_decode(b64).ok())
                .filter(|k| k.len() == 32)
                .ok_or_else(|| {
                    format!("config public key {i}: expected whpk_ and 32 bytes, base64")
                })
        })
        .collect()
}

fn check(request: &Request, config: &str) -> Result<String, String> {
    let config = support::config(config)?;
    let keys = keys(&config)?;
    let tolerance = support::seconds(&config, "tolerance_seconds", TOLERANCE_SECONDS)?;
    let id = support::header(support::headers!(request), "webhook-id")?;
    let timestamp = support::header(support::headers!(request), "webhook-timestamp")?;
    let signatures = support::header(support::headers!(request), "webhook-signature")?;
    support::fresh(timestamp, request.received_at_ms, tolerance)?;
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(&request.body);
    let mut seen = 0;
    for entry in signatures.split(' ').filter(|e| !e.is_empty()) {
        let Some(b64) = entry.strip_prefix("v1a,") else {
            continue;
        };
        seen += 1;
        let Ok(signature) = host_crypto::base64_decode(b64) else {
            continue;
        };
        for (i, key) in keys.iter().enumerate() {
            if host_crypto::ed25519_verify(key, &message, &signature) {
                return Ok(format!(
                    "v1a signature {seen} in webhook-signature matched public key {i}"
                ));
            }
        }
    }
    if seen == 0 {
        Err("webhook-signature has no v1a entry".into())
    } else {
        Err(format!(
            "none of the {seen} v1a signatures in webhook-signature matched"
        ))
    }
}

hookgate_plugin_support::verifier!(StandardWebhooks, check);
