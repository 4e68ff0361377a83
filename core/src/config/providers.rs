//! Provider presets: `{"auth_type": "provider", "provider": "stripe", "secret": …}`.
//!
//! A preset is part of a receiver's config, so it lives in `config` and not in
//! `verify`: reading a config builds each preset's `Scheme` once, and `verify`
//! only runs it. Most providers sign with an HMAC that the generic verifier can
//! express, so a preset is mostly data: a [`HmacAuth`] built from the provider's
//! documented scheme. Three need code of their own in `verify::providers` — Twilio,
//! HubSpot v3 and GitLab's shared token — and are only named here. Each preset also
//! names the provider's delivery id, which becomes the default idempotency key, and
//! its timestamp tolerance.

use serde::Serialize;

use crate::config::{
    Encoding, HmacAlgorithm, HmacAuth, JsonPathExpr, SecretEncoding, Secrets, SignedPayload,
    Template, TimestampFormat, TimestampSpec, ValueSource,
};
use crate::secret::Secret;

/// A provider with a preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Github,
    Stripe,
    Slack,
    Shopify,
    StandardWebhooks,
    Svix,
    Gitlab,
    Twilio,
    Square,
    Paddle,
    Linear,
    Zoom,
    Pagerduty,
    Twitch,
    Webflow,
    Vercel,
    Woocommerce,
    Hubspot,
    Meta,
}

impl Provider {
    pub const ALL: [Provider; 19] = [
        Self::Github,
        Self::Stripe,
        Self::Slack,
        Self::Shopify,
        Self::StandardWebhooks,
        Self::Svix,
        Self::Gitlab,
        Self::Twilio,
        Self::Square,
        Self::Paddle,
        Self::Linear,
        Self::Zoom,
        Self::Pagerduty,
        Self::Twitch,
        Self::Webflow,
        Self::Vercel,
        Self::Woocommerce,
        Self::Hubspot,
        Self::Meta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Stripe => "stripe",
            Self::Slack => "slack",
            Self::Shopify => "shopify",
            Self::StandardWebhooks => "standard_webhooks",
            Self::Svix => "svix",
            Self::Gitlab => "gitlab",
            Self::Twilio => "twilio",
            Self::Square => "square",
            Self::Paddle => "paddle",
            Self::Linear => "linear",
            Self::Zoom => "zoom",
            Self::Pagerduty => "pagerduty",
            Self::Twitch => "twitch",
            Self::Webflow => "webflow",
            Self::Vercel => "vercel",
            Self::Woocommerce => "woocommerce",
            Self::Hubspot => "hubspot",
            Self::Meta => "meta",
        }
    }

    /// What the preset implies besides verification.
    pub fn spec(self) -> ProviderSpec {
        let header = |name: &str| ValueSource::Header {
            name: name.to_owned(),
        };
        let json = |path: &str| ValueSource::JsonPath {
            // The paths below are constants known to parse.
            path: JsonPathExpr::parse(path).unwrap_or_else(|e| unreachable!("{e}")),
        };
        let idempotency = match self {
            Self::Github => vec![header("X-GitHub-Delivery")],
            // Stripe resends the same event object; its id is the delivery's identity.
            Self::Stripe => vec![json("$.id")],
            Self::Slack => vec![json("$.event_id")],
            // Shopify's docs: the same X-Shopify-Event-Id on two deliveries is a duplicate.
            Self::Shopify => vec![header("X-Shopify-Event-Id"), header("X-Shopify-Webhook-Id")],
            Self::StandardWebhooks => vec![header("webhook-id")],
            Self::Svix => vec![header("svix-id"), header("webhook-id")],
            // Idempotency-Key is stable across retries and resends (GitLab issue 14888);
            // X-Gitlab-Event-UUID is a recursion-detection id, not a delivery id.
            Self::Gitlab => vec![header("Idempotency-Key"), header("webhook-id")],
            Self::Twilio => vec![header("I-Twilio-Idempotency-Token")],
            Self::Square => vec![json("$.event_id")],
            Self::Paddle => vec![json("$.event_id")],
            Self::Linear => vec![header("Linear-Delivery")],
            // "unique to the webhook but repeated for each delivery attempt"
            Self::Pagerduty => vec![header("X-Webhook-Id"), json("$.event.id")],
            Self::Twitch => vec![header("Twitch-Eventsub-Message-Id")],
            Self::Vercel => vec![json("$.id")],
            // No stable delivery id (WooCommerce's changes per attempt): a resend carries
            // the same bytes, so the body's hash identifies it.
            // HubSpot batches events and bumps `attemptNumber` in the body on each retry,
            // so the body changes; the batch's event ids do not.
            Self::Hubspot => vec![json("$[*].eventId")],
            Self::Zoom | Self::Webflow | Self::Meta | Self::Woocommerce => {
                vec![ValueSource::BodySha256]
            }
        };
        ProviderSpec { idempotency }
    }
}

/// What a preset implies for the rest of the pipeline.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    /// Idempotency sources, tried in order, when the receiver configures none.
    pub idempotency: Vec<ValueSource>,
}

/// How a preset verifies, built once from the provider and its secret.
#[derive(Debug, Clone)]
pub(crate) enum Scheme {
    Hmac(Box<HmacAuth>),
    Gitlab,
    Twilio,
    Hubspot,
}

/// Stripe's SDKs default to 300 s; Standard Webhooks, Slack and Zoom say five minutes.
pub(crate) const FIVE_MINUTES: u64 = 300;
/// Paddle's SDKs allow 5 s of variance by default.
const PADDLE_TOLERANCE: u64 = 5;
/// Linear documents a one-minute window on `webhookTimestamp`.
const LINEAR_TOLERANCE: u64 = 60;
/// Twitch: reject messages older than ten minutes.
const TWITCH_TOLERANCE: u64 = 600;

impl Scheme {
    pub(crate) fn for_provider(provider: Provider, secret: &Secret) -> Self {
        let header = |name: &str| ValueSource::Header {
            name: name.to_owned(),
        };
        let param = |name: &str, param: &str, sep: &str, kv: &str| ValueSource::HeaderParam {
            name: name.to_owned(),
            param: param.to_owned(),
            separator: sep.to_owned(),
            kv_separator: kv.to_owned(),
        };
        let template = |t: &str| SignedPayload::Template {
            // The templates below are constants known to parse.
            template: Template::parse(t).unwrap_or_else(|e| unreachable!("{e}")),
        };
        let ts = |source: ValueSource, format: TimestampFormat, tolerance_seconds: u64| {
            Some(TimestampSpec {
                source,
                format,
                tolerance_seconds,
            })
        };
        let base = |algorithm, encoding, signature| HmacAuth {
            algorithm,
            encoding,
            prefix: None,
            secrets: Secrets::Secret(secret.clone()),
            secret_encoding: SecretEncoding::Raw,
            signature,
            signed_payload: SignedPayload::RawBody,
            timestamp: None,
            id: None,
        };
        use HmacAlgorithm::{Sha1, Sha256};
        use TimestampFormat::{Rfc3339, UnixMillis, UnixSeconds};
        let standard = |prefix: &str| {
            let h = |n: &str| header(&format!("{prefix}-{n}"));
            HmacAuth {
                secret_encoding: SecretEncoding::Base64,
                signed_payload: template("{id}.{timestamp}.{body}"),
                timestamp: ts(h("timestamp"), UnixSeconds, FIVE_MINUTES),
                id: Some(h("id")),
                ..base(
                    Sha256,
                    Encoding::Base64,
                    param(&format!("{prefix}-signature"), "v1", " ", ","),
                )
            }
        };
        let h = match provider {
            // GitLab 19's signing tokens (`whsec_…`) follow Standard Webhooks; plain
            // secret tokens are echoed in X-Gitlab-Token.
            Provider::Gitlab if secret.expose().starts_with("whsec_") => standard("webhook"),
            Provider::Gitlab => return Self::Gitlab,
            Provider::Twilio => return Self::Twilio,
            Provider::Hubspot => return Self::Hubspot,
            Provider::Github | Provider::Meta => HmacAuth {
                prefix: Some("sha256=".to_owned()),
                ..base(Sha256, Encoding::Hex, header("X-Hub-Signature-256"))
            },
            Provider::Stripe => HmacAuth {
                signed_payload: template("{timestamp}.{body}"),
                timestamp: ts(
                    param("Stripe-Signature", "t", ",", "="),
                    UnixSeconds,
                    FIVE_MINUTES,
                ),
                ..base(
                    Sha256,
                    Encoding::Hex,
                    param("Stripe-Signature", "v1", ",", "="),
                )
            },
            Provider::Slack => HmacAuth {
                prefix: Some("v0=".to_owned()),
                signed_payload: template("v0:{timestamp}:{body}"),
                timestamp: ts(
                    header("X-Slack-Request-Timestamp"),
                    UnixSeconds,
                    FIVE_MINUTES,
                ),
                ..base(Sha256, Encoding::Hex, header("X-Slack-Signature"))
            },
            Provider::Zoom => HmacAuth {
                prefix: Some("v0=".to_owned()),
                signed_payload: template("v0:{timestamp}:{body}"),
                timestamp: ts(header("x-zm-request-timestamp"), UnixSeconds, FIVE_MINUTES),
                ..base(Sha256, Encoding::Hex, header("x-zm-signature"))
            },
            Provider::Shopify => base(Sha256, Encoding::Base64, header("X-Shopify-Hmac-Sha256")),
            Provider::StandardWebhooks => standard("webhook"),
            Provider::Svix => standard("svix"),
            Provider::Square => HmacAuth {
                signed_payload: template("{url}{body}"),
                ..base(
                    Sha256,
                    Encoding::Base64,
                    header("x-square-hmacsha256-signature"),
                )
            },
            Provider::Paddle => HmacAuth {
                signed_payload: template("{timestamp}:{body}"),
                timestamp: ts(
                    param("Paddle-Signature", "ts", ";", "="),
                    UnixSeconds,
                    PADDLE_TOLERANCE,
                ),
                ..base(
                    Sha256,
                    Encoding::Hex,
                    param("Paddle-Signature", "h1", ";", "="),
                )
            },
            Provider::Linear => HmacAuth {
                timestamp: ts(
                    ValueSource::JsonPath {
                        path: JsonPathExpr::parse("$.webhookTimestamp")
                            .unwrap_or_else(|e| unreachable!("{e}")),
                    },
                    UnixMillis,
                    LINEAR_TOLERANCE,
                ),
                ..base(Sha256, Encoding::Hex, header("Linear-Signature"))
            },
            Provider::Pagerduty => base(
                Sha256,
                Encoding::Hex,
                param("X-PagerDuty-Signature", "v1", ",", "="),
            ),
            Provider::Twitch => HmacAuth {
                prefix: Some("sha256=".to_owned()),
                signed_payload: template("{id}{timestamp}{body}"),
                timestamp: ts(
                    header("Twitch-Eventsub-Message-Timestamp"),
                    Rfc3339,
                    TWITCH_TOLERANCE,
                ),
                id: Some(header("Twitch-Eventsub-Message-Id")),
                ..base(
                    Sha256,
                    Encoding::Hex,
                    header("Twitch-Eventsub-Message-Signature"),
                )
            },
            Provider::Webflow => HmacAuth {
                signed_payload: template("{timestamp}:{body}"),
                timestamp: ts(header("x-webflow-timestamp"), UnixMillis, FIVE_MINUTES),
                ..base(Sha256, Encoding::Hex, header("x-webflow-signature"))
            },
            Provider::Vercel => base(Sha1, Encoding::Hex, header("x-vercel-signature")),
            Provider::Woocommerce => {
                base(Sha256, Encoding::Base64, header("X-WC-Webhook-Signature"))
            }
        };
        Self::Hmac(Box::new(h))
    }

    /// Whether the preset checks a signed timestamp (so `tolerance_seconds` applies).
    pub(crate) fn has_timestamp(&self) -> bool {
        match self {
            Self::Hmac(h) => h.timestamp.is_some(),
            Self::Hubspot => true,
            Self::Gitlab | Self::Twilio => false,
        }
    }
}

/// Checks that a secret is usable for its preset (Standard Webhooks keys are base64).
pub(crate) fn check_secret(provider: Provider, secret: &Secret) -> Result<(), String> {
    let signing_token = provider == Provider::Gitlab && secret.expose().starts_with("whsec_");
    match provider {
        Provider::StandardWebhooks | Provider::Svix => SecretEncoding::Base64
            .decode_key(secret.expose())
            .map(|_| ())
            .ok_or_else(|| "expected a whsec_… key: base64 after the whsec_ prefix".to_owned()),
        Provider::Gitlab if signing_token => SecretEncoding::Base64
            .decode_key(secret.expose())
            .map(|_| ())
            .ok_or_else(|| "a GitLab signing token is whsec_ followed by base64".to_owned()),
        _ => Ok(()),
    }
}
