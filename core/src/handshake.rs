//! Provider handshakes: challenges a provider sends to prove the endpoint is ours.
//!
//! Slack (`url_verification`), Zoom (`endpoint.url_validation`) and Twitch EventSub
//! (`webhook_callback_verification`) send a challenge when a URL is registered, and
//! expect it answered in the response, not processed as an event. Handshakes are
//! answered only *after* the request has been authenticated: Zoom's answer is an
//! HMAC of attacker-chosen text under the receiver's secret, so answering unsigned
//! challenges would hand out signatures. The one exception is WooCommerce's ping,
//! which is never signed and must get a 200: [`answer_unsigned`] answers exactly
//! that shape (`webhook_id=<digits>`, no signature header) and nothing else, and the
//! answer carries no information.

use serde_json::Value;

use crate::config::providers::Provider;
use crate::config::{Auth, ProviderAuth};
use crate::explain::{Outcome, Stage, Step};
use crate::request::Event;

/// The response to send instead of accepting a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Answers the request if it is a handshake of the preset that authenticated it.
/// Only that preset counts: with `any[zoom, bearer_static]`, a bearer-token holder
/// must not get Zoom's secret to sign their chosen text.
pub fn answer(passed: Option<&ProviderAuth>, event: &Event<'_>) -> Option<(HandshakeReply, Step)> {
    let p = passed?;
    let reply = match p.provider {
        Provider::Slack => slack(event),
        Provider::Zoom => zoom(event, p.secret.expose()),
        Provider::Twitch => twitch(event),
        _ => None,
    }?;
    let step = Step::new(
        Stage::Handshake,
        Outcome::Info,
        format!("{} handshake answered; not a delivery", p.provider.name()),
    );
    Some((reply, step))
}

/// Answers the unsigned pings a preset's provider sends before any signed event.
/// Only where the preset alone would decide the request — the whole auth tree, or
/// a direct alternative under a top-level `any` — so the ping never slips past
/// another guard such as an IP allowlist.
pub fn answer_unsigned(auth: &Auth, event: &Event<'_>) -> Option<(HandshakeReply, Step)> {
    let is_woo = |a: &Auth| matches!(a, Auth::Provider(p) if p.provider == Provider::Woocommerce);
    let woo = match auth {
        Auth::Any(c) => c.verifiers.iter().any(is_woo),
        other => is_woo(other),
    };
    if !woo
        || event
            .request
            .headers
            .get_bytes("X-WC-Webhook-Signature")
            .is_some()
    {
        return None;
    }
    let id = event.request.body.strip_prefix(b"webhook_id=")?;
    if id.is_empty() || id.len() > 20 || !id.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let step = Step::new(
        Stage::Handshake,
        Outcome::Info,
        "woocommerce ping (unsigned by design) answered 200; not a delivery",
    );
    Some((text(""), step))
}

fn text(body: &str) -> HandshakeReply {
    HandshakeReply {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        body: body.as_bytes().to_vec(),
    }
}

fn slack(event: &Event<'_>) -> Option<HandshakeReply> {
    let doc = event.json().ok()?;
    if doc.get("type")?.as_str()? != "url_verification" {
        return None;
    }
    Some(text(doc.get("challenge")?.as_str()?))
}

fn zoom(event: &Event<'_>, secret: &str) -> Option<HandshakeReply> {
    let doc = event.json().ok()?;
    if doc.get("event")?.as_str()? != "endpoint.url_validation" {
        return None;
    }
    let plain = doc.get("payload")?.get("plainToken")?.as_str()?;
    let encrypted = crate::encoding::encode_hex(&crate::verify::hmac::mac(
        crate::config::HmacAlgorithm::Sha256,
        secret.as_bytes(),
        &[plain.as_bytes()],
    ));
    let body = serde_json::json!({"plainToken": plain, "encryptedToken": encrypted});
    Some(HandshakeReply {
        status: 200,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
    })
}

fn twitch(event: &Event<'_>) -> Option<HandshakeReply> {
    if event.header("Twitch-Eventsub-Message-Type").ok()? != "webhook_callback_verification" {
        return None;
    }
    let challenge = event
        .json()
        .ok()?
        .get("challenge")
        .and_then(Value::as_str)?;
    Some(text(challenge))
}
