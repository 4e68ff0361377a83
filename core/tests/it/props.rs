//! Property tests: no input makes any core function panic.

use hookgate_core::config::{JsonPathExpr, Pattern, Template};
use hookgate_core::verify::NoEnv;
use hookgate_core::{Headers, Receiver, Request, SandboxName, evaluate};
use proptest::prelude::*;
use serde_json::{Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-z_$.\\[\\]*:{}0-9 -]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "hmac",
            "jwt",
            "all",
            "any",
            "provider",
            "header",
            "json_path",
            "sha256",
            "$.action",
            "deliver_to_port",
            "ensure_sandbox",
            "sandbox_name_from_event",
            "template",
            "stripe",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "name",
                    "auth",
                    "auth_type",
                    "secret",
                    "value",
                    "target",
                    "target_type",
                    "rules",
                    "when",
                    "actions",
                    "action_type",
                    "port",
                    "source",
                    "path",
                    "verifiers",
                    "signature",
                    "algorithm",
                    "encoding",
                    "equals",
                    "in",
                    "not",
                    "all",
                    "any",
                    "template",
                    "timestamp",
                    "provider",
                    "cidrs",
                    "algorithms",
                    "jwks",
                    "required_prefix",
                    "idempotency",
                ]),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// Receivers that exercise every stage; each is evaluated against random requests.
fn receivers() -> Vec<Receiver> {
    let rules = json!([
        {"when": {"any": [{"json_path": "$.a[*].b", "matches": "^x"}, {"header": "X-E", "in": ["a", 1]}]},
         "actions": [{"action_type": "deliver_to_port", "port": 8080}]},
        {"when": {"not": {"query": "q", "exists": true}}, "actions": [{"action_type": "pause_sandbox"}]}
    ]);
    let target = json!({"target_type": "sandbox_name_from_event", "source": {"source": "json_path", "path": "$.n"}, "required_prefix": "pr-"});
    let auths = [
        json!({"auth_type": "none"}),
        json!({"auth_type": "any", "verifiers": [
            {"auth_type": "provider", "provider": "stripe", "secret": {"name": "a", "value": "k"}},
            {"auth_type": "provider", "provider": "twilio", "secret": {"name": "b", "value": "k"}},
            {"auth_type": "provider", "provider": "hubspot", "secret": {"name": "c", "value": "k"}},
            {"auth_type": "provider", "provider": "twitch", "secret": {"name": "d", "value": "k"}},
            {"auth_type": "provider", "provider": "linear", "secret": {"name": "e", "value": "k"}},
            {"auth_type": "provider", "provider": "standard_webhooks", "secret": {"name": "f", "value": "whsec_AAAA"}},
            {"auth_type": "provider", "provider": "slack", "secret": {"name": "g", "value": "k"}},
            {"auth_type": "provider", "provider": "zoom", "secret": {"name": "h", "value": "k"}},
            {"auth_type": "provider", "provider": "woocommerce", "secret": {"name": "i", "value": "k"}},
            {"auth_type": "basic", "username": "u", "password": {"name": "j", "value": "p"}},
            {"auth_type": "jwt", "algorithms": ["HS256", "RS256"], "secret": {"name": "k", "value": "k"}, "jwks_url": "https://x/j"},
            {"auth_type": "ip_allowlist", "cidrs": ["10.0.0.0/8", "::/0"]}
        ]}),
    ];
    auths
        .into_iter()
        .map(|auth| {
            Receiver::from_json(&json!({"name": "p", "auth": auth, "target": target, "rules": rules,
                                        "idempotency": {"source": "header_param", "name": "X-K", "param": "id"}}))
                .unwrap()
        })
        .collect()
}

fn header_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "Stripe-Signature",
        "X-Twilio-Signature",
        "X-HubSpot-Signature-v3",
        "X-HubSpot-Request-Timestamp",
        "Twitch-Eventsub-Message-Signature",
        "Twitch-Eventsub-Message-Timestamp",
        "Twitch-Eventsub-Message-Id",
        "Twitch-Eventsub-Message-Type",
        "webhook-signature",
        "webhook-timestamp",
        "webhook-id",
        "X-Slack-Signature",
        "X-Slack-Request-Timestamp",
        "Authorization",
        "X-E",
        "X-K",
        "x-zm-signature",
        "x-zm-request-timestamp",
    ])
    .prop_map(str::to_owned)
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "(t=|v1=|ts=|h1=|v0=|v1,|sha256=|Bearer |Basic |id=)?[ -~]{0,40}"
            .prop_map(String::into_bytes),
        "[0-9]{0,20}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..24),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn config_decoding_never_panics(v in arb_json()) {
        let _ = Receiver::from_json(&v);
        let wrapped = json!({"name": "x", "auth": v.clone(), "target": v.clone(), "rules": [{"when": v.clone(), "actions": [v]}]});
        let _ = Receiver::from_json(&wrapped);
    }

    #[test]
    fn evaluation_never_panics(
        headers in prop::collection::vec((header_name(), header_value()), 0..8),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        ],
        url in prop_oneof![
            "[a-zA-Z0-9=&%+?#.:/_-]{0,40}".prop_map(|q| format!("https://h:443/hooks/r?{q}")),
            "\\PC{0,60}",
            "(https?://)?(\\[[0-9a-f:]{0,12}\\]|[a-z.@:é]{0,12})(:[0-9]{0,6})?[/?#%a-z0-9=&é]{0,20}",
        ],
        method in "[A-Z]{0,7}",
        received_at in any::<i64>(),
        ip in any::<Option<std::net::IpAddr>>(),
    ) {
        let headers: Headers = headers.into_iter().collect();
        for r in receivers() {
            let req = Request { method: &method, url: &url, headers: &headers, body: &body, remote_addr: ip, received_at };
            let _ = evaluate(&r, req, &NoEnv);
        }
    }

    #[test]
    fn parsers_never_panic(s in "\\PC{0,64}") {
        let _ = SandboxName::parse(&s);
        let _ = Template::parse(&s);
        let _ = JsonPathExpr::parse(&s);
        let _ = Pattern::parse(&s);
        let _ = hookgate_core::verify::time::parse_rfc3339(&s);
        let _ = hookgate_core::request::percent_decode(s.as_bytes(), true);
        let _ = hookgate_core::encoding::decode_hex(&s);
        let _ = hookgate_core::encoding::decode_base64(&s);
    }
}
