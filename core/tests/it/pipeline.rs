//! The whole pipeline on the GitHub example of docs/api.md, and the provider handshakes.

use hookgate_core::explain::{Outcome, Stage};
use hookgate_core::verify::{FailureKind, NoEnv};
use hookgate_core::{Receiver, evaluate};
use serde_json::{Value, json};

use crate::support::*;

const SECRET: &str = "gh-webhook-secret";

fn github_receiver() -> Receiver {
    let mut v: Value =
        serde_json::from_str(include_str!("../data/design-github-example.json")).unwrap();
    v["auth"]["secret"]["value"] = json!(SECRET);
    Receiver::from_json(&v).unwrap()
}

fn github_delivery(delivery: &str, body: &Value) -> Req {
    let bytes = serde_json::to_vec(body).unwrap();
    let sig = format!("sha256={}", hex(&hmac_sha256(SECRET.as_bytes(), &bytes)));
    Req::post(bytes)
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", sig)
}

#[test]
fn opened_pull_request_runs_the_first_rule_on_pr_42() {
    let r = github_receiver();
    let req = github_delivery(
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        &json!({"action": "opened", "number": 42, "pull_request": {"number": 42}}),
    );
    let e = evaluate(&r, req.request(), &NoEnv);
    assert!(e.auth.is_ok());
    assert!(e.handshake.is_none());
    assert_eq!(
        e.key.as_ref().unwrap().value,
        "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    );
    assert_eq!(
        e.target.as_ref().unwrap().as_ref().unwrap().as_str(),
        "pr-42"
    );
    assert_eq!(e.matched.iter().map(|m| m.0).collect::<Vec<_>>(), vec![0]);
    let text = e.trace.render();
    assert_eq!(
        text,
        "[pass] hmac-sha256 signature in header X-Hub-Signature-256 matched secret github_webhook_secret\n\
         [pass] key from header X-GitHub-Delivery: \"72d3162e-cc78-11e3-81ab-4c9367dc0958\"\n\
         [pass] sandbox pr-42\n\
         [pass] rule 1 matched: $.action was \"opened\", wanted \"opened\"; actions: ensure_sandbox, deliver_to_port\n\
         [skip] rule 2 skipped: $.action was \"opened\", wanted \"closed\"\n"
    );
    // The trace is plain data that round-trips through JSON.
    let json = serde_json::to_value(&e.trace).unwrap();
    assert_eq!(
        serde_json::from_value::<hookgate_core::explain::Trace>(json).unwrap(),
        e.trace
    );
    // The plan both runtimes freeze with the delivery: rule 1's two actions, the
    // template given the ports its receiver delivers to.
    let plan = serde_json::to_value(hookgate_core::rules::plan(&r, &e.matched)).unwrap();
    assert_eq!(plan.as_array().unwrap().len(), 2);
    assert_eq!(plan[0]["rule"], 0);
    assert_eq!(plan[0]["spec"]["action_type"], "ensure_sandbox");
    assert_eq!(plan[0]["spec"]["template"]["ports"], json!([3000]));
    assert_eq!(plan[1]["action"], 1);
    assert_eq!(plan[1]["spec"]["action_type"], "deliver_to_port");
}

#[test]
fn synchronize_matches_nothing_and_says_why() {
    let r = github_receiver();
    let e = evaluate(
        &r,
        github_delivery(
            "d-2",
            &json!({"action": "synchronize", "pull_request": {"number": 42}}),
        )
        .request(),
        &NoEnv,
    );
    assert!(e.matched.is_empty());
    let rule2 = e
        .trace
        .steps
        .iter()
        .find(|s| s.message.starts_with("rule 2"))
        .unwrap();
    assert_eq!(
        rule2.message,
        "rule 2 skipped: $.action was \"synchronize\", wanted \"closed\""
    );
    assert_eq!((rule2.stage, rule2.outcome), (Stage::Rule, Outcome::Skip));
}

#[test]
fn bad_signature_stops_before_anything_else() {
    let r = github_receiver();
    let mut req = github_delivery(
        "d-3",
        &json!({"action": "closed", "pull_request": {"number": 42}}),
    );
    req.body = br#"{"action":"closed","pull_request":{"number":43}}"#.to_vec();
    let e = evaluate(&r, req.request(), &NoEnv);
    assert_eq!(e.auth.as_ref().unwrap_err().kind, FailureKind::Mismatch);
    assert!(e.key.is_none() && e.target.is_none() && e.matched.is_empty());
    assert_eq!(e.trace.steps.len(), 1);
}

#[test]
fn hostile_sandbox_names_are_refused_by_the_guard() {
    let r = github_receiver();
    for number in [
        json!("../../etc"),
        json!("42;rm -rf"),
        json!("PR-42"),
        json!(null),
        json!({"a": 1}),
    ] {
        let e = evaluate(
            &r,
            github_delivery(
                "d-4",
                &json!({"action": "opened", "pull_request": {"number": number}}),
            )
            .request(),
            &NoEnv,
        );
        let err = e.target.unwrap().unwrap_err();
        assert!(
            err.contains("sandbox name") || err.contains("no sandbox name"),
            "{err}"
        );
        assert!(e.matched.is_empty(), "no rule runs without a target");
    }
}

#[test]
fn non_json_body_is_explained_not_fatal() {
    let mut v: Value =
        serde_json::from_str(include_str!("../data/design-github-example.json")).unwrap();
    v["auth"]["secret"]["value"] = json!(SECRET);
    v["target"] = json!({"target_type": "fixed_sandbox_name", "sandbox_name": "box"});
    let r = Receiver::from_json(&v).unwrap();
    let body = b"\xff\xfe not json".to_vec();
    let sig = format!("sha256={}", hex(&hmac_sha256(SECRET.as_bytes(), &body)));
    let req = Req::post(body)
        .header("X-Hub-Signature-256", sig)
        .header("X-GitHub-Delivery", "d-5");
    let e = evaluate(&r, req.request(), &NoEnv);
    assert!(e.auth.is_ok() && e.matched.is_empty());
    assert!(
        e.trace
            .render()
            .contains("rule 1 skipped: $.action cannot be read: the body is not JSON")
    );
}

fn provider_receiver(provider: &str, secret_value: &str) -> Receiver {
    receiver(json!({"auth_type": "provider", "provider": provider, "secret": secret(secret_value)}))
}

#[test]
fn slack_url_verification_is_answered_after_verification() {
    let r = provider_receiver("slack", "slack-secret");
    let body = br#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let sig = hex(&hmac_sha256(
        b"slack-secret",
        &[b"v0:1700000000:".as_slice(), body].concat(),
    ));
    let req = Req::post(body.to_vec())
        .header("X-Slack-Request-Timestamp", "1700000000")
        .header("X-Slack-Signature", format!("v0={sig}"));
    let e = evaluate(&r, req.request(), &NoEnv);
    let reply = e.handshake.unwrap();
    assert_eq!(
        (reply.status, reply.content_type),
        (200, "text/plain; charset=utf-8")
    );
    assert_eq!(
        reply.body,
        b"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    // Unsigned, it is just an authentication failure.
    let unsigned = Req::post(body.to_vec());
    let e = evaluate(&r, unsigned.request(), &NoEnv);
    assert!(e.auth.is_err() && e.handshake.is_none());
}

/// COMPUTED in the research notes from Zoom's documented scheme.
#[test]
fn zoom_url_validation_returns_the_encrypted_token() {
    let r = provider_receiver("zoom", "zoom_secret_token");
    let body = br#"{"event":"endpoint.url_validation","payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1700000000000}"#;
    let sig = hex(&hmac_sha256(
        b"zoom_secret_token",
        &[b"v0:1700000000:".as_slice(), body].concat(),
    ));
    let req = Req::post(body.to_vec())
        .header("x-zm-request-timestamp", "1700000000")
        .header("x-zm-signature", format!("v0={sig}"));
    let reply = evaluate(&r, req.request(), &NoEnv).handshake.unwrap();
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        v,
        json!({"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": "bd48235863f4a6323ccc4963c594908b7c97f88b4a6a95278f4f093690b12726"})
    );
}

/// A bearer-token holder on `any[zoom, bearer]` must not get Zoom's secret to sign
/// their chosen text: only the preset that authenticated a request answers it.
#[test]
fn handshakes_belong_to_the_verifier_that_passed() {
    let r = receiver(json!({"auth_type": "any", "verifiers": [
        {"auth_type": "provider", "provider": "zoom", "secret": secret("zoom_secret_token")},
        {"auth_type": "bearer_static", "secret": {"name": "b", "value": "bearer-token"}}
    ]}));
    let forged =
        br#"{"event":"endpoint.url_validation","payload":{"plainToken":"v0:1700000000:{}"}}"#;
    let req = Req::post(forged.to_vec()).header("Authorization", "Bearer bearer-token");
    let e = evaluate(&r, req.request(), &NoEnv);
    assert!(e.auth.is_ok());
    assert!(
        e.handshake.is_none(),
        "answered a Zoom challenge for a bearer-authenticated request"
    );
}

#[test]
fn woocommerce_ping_does_not_skip_other_guards() {
    let r = receiver(json!({"auth_type": "all", "verifiers": [
        {"auth_type": "ip_allowlist", "cidrs": ["10.0.0.0/8"]},
        {"auth_type": "provider", "provider": "woocommerce", "secret": secret("wc_secret")}
    ]}));
    let e = evaluate(
        &r,
        Req::post("webhook_id=17").remote("1.2.3.4").request(),
        &NoEnv,
    );
    assert!(e.handshake.is_none() && e.auth.is_err());
    let r = receiver(json!({"auth_type": "any", "verifiers": [
        {"auth_type": "bearer_static", "secret": {"name": "b", "value": "t"}},
        {"auth_type": "provider", "provider": "woocommerce", "secret": secret("wc_secret")}
    ]}));
    assert!(
        evaluate(&r, Req::post("webhook_id=17").request(), &NoEnv)
            .handshake
            .is_some()
    );
}

#[test]
fn twitch_callback_verification_echoes_the_challenge() {
    let r = provider_receiver("twitch", "s3cRe7s3cRe7");
    let body =
        br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387"}}"#;
    let ts = "2023-11-14T22:13:00.000000000Z";
    let sig = hex(&hmac_sha256(
        b"s3cRe7s3cRe7",
        &[b"m-1".as_slice(), ts.as_bytes(), body].concat(),
    ));
    let req = Req::post(body.to_vec())
        .header("Twitch-Eventsub-Message-Id", "m-1")
        .header("Twitch-Eventsub-Message-Timestamp", ts)
        .header(
            "Twitch-Eventsub-Message-Type",
            "webhook_callback_verification",
        )
        .header("Twitch-Eventsub-Message-Signature", format!("sha256={sig}"));
    let reply = evaluate(&r, req.request(), &NoEnv).handshake.unwrap();
    assert_eq!(reply.body, b"pogchamp-kappa-360noscope-vohiyo");
}

#[test]
fn woocommerce_ping_is_the_only_unsigned_request_answered() {
    let r = provider_receiver("woocommerce", "wc_secret");
    let ping = Req::post("webhook_id=17");
    let e = evaluate(&r, ping.request(), &NoEnv);
    assert_eq!(e.handshake.unwrap().status, 200);
    for not_ping in ["webhook_id=17&x=1", "webhook_id=", "{\"id\":1}"] {
        let e = evaluate(&r, Req::post(not_ping).request(), &NoEnv);
        assert!(e.handshake.is_none() && e.auth.is_err(), "{not_ping}");
    }
}

/// COMPUTED in the research notes: WooCommerce's base64 HMAC-SHA256.
#[test]
fn woocommerce_computed_vector() {
    let req = Req::post(r#"{"id":42,"status":"processing"}"#).header(
        "X-WC-Webhook-Signature",
        "dmwcb6L9aIu90M++pOAHF9GHWA91WKGmhSdb//EsSU0=",
    );
    assert_passes(
        &json!({"auth_type": "provider", "provider": "woocommerce", "secret": secret("wc_secret")}),
        &req,
    );
}
