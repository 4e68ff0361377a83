//! The generic verifiers: `hmac` in all its shapes, shared tokens, basic, bearer,
//! IP allowlists, plugins through the runtime, and `all`/`any` trees.

use hookgate_core::config::PluginAuth;
use hookgate_core::jwks::Jwks;
use hookgate_core::verify::{Env, FailureKind};
use hookgate_core::{Event, Request};
use serde_json::{Value, json};

use crate::support::*;

const KEY: &str = "It's a Secret to Everybody";

fn github_style() -> Value {
    json!({
        "auth_type": "hmac", "algorithm": "sha256", "encoding": "hex", "prefix": "sha256=",
        "secret": secret(KEY),
        "signature": {"source": "header", "name": "X-Hub-Signature-256"},
        "signed_payload": {"type": "raw_body"}
    })
}

#[test]
fn hmac_algorithms_and_encodings() {
    let body = b"payload bytes \xff\x00 not utf-8";
    for (alg, mac) in [
        ("sha1", hmac_sha1(KEY.as_bytes(), body)),
        ("sha256", hmac_sha256(KEY.as_bytes(), body)),
        ("sha512", hmac_sha512(KEY.as_bytes(), body)),
    ] {
        for (enc, text) in [
            ("hex", hex(&mac)),
            ("hex", hex(&mac).to_uppercase()),
            ("base64", b64(&mac)),
        ] {
            let auth = json!({"auth_type": "hmac", "algorithm": alg, "encoding": enc, "secret": secret(KEY),
                              "signature": {"source": "header", "name": "X-Sig"}});
            let msg = assert_passes(&auth, &Req::post(body.to_vec()).header("X-Sig", &text));
            assert_eq!(
                msg,
                format!("hmac-{alg} signature in header X-Sig matched secret s")
            );
        }
    }
}

#[test]
fn hmac_failure_reasons_are_actionable_and_secret_free() {
    let auth = github_style();
    let body = "Hello, World!";
    let good = format!(
        "sha256={}",
        hex(&hmac_sha256(KEY.as_bytes(), body.as_bytes()))
    );
    assert_fails(
        &auth,
        &Req::post(body),
        FailureKind::Missing,
        "signature header X-Hub-Signature-256 missing",
    );
    assert_fails(
        &auth,
        &Req::post(body).header("X-Hub-Signature-256", "sha1=abc"),
        FailureKind::Malformed,
        "signature in header X-Hub-Signature-256 does not start with \"sha256=\"",
    );
    assert_fails(
        &auth,
        &Req::post(body).header("X-Hub-Signature-256", "sha256=zz"),
        FailureKind::Malformed,
        "signature in header X-Hub-Signature-256 is not valid hex",
    );
    let f = verify(
        &auth,
        &Req::post("Hello, World?").header("X-Hub-Signature-256", &good),
    )
    .unwrap_err();
    assert_eq!(
        f.reason,
        "hmac-sha256 mismatch: the signature in header X-Hub-Signature-256 does not match secret s"
    );
    assert!(!f.reason.contains(KEY) && !f.reason.contains(&good[7..]));
    let mut bin = Req::post(body);
    bin.headers.push("X-Hub-Signature-256", vec![0xff, 0xfe]);
    assert_fails(
        &auth,
        &bin,
        FailureKind::Missing,
        "header X-Hub-Signature-256 is not valid UTF-8",
    );
}

#[test]
fn hmac_signature_from_query_parameter() {
    let auth = json!({"auth_type": "hmac", "secret": secret(KEY), "signature": {"source": "query", "name": "sig"}});
    let sig = hex(&hmac_sha256(KEY.as_bytes(), b"{}"));
    assert_passes(
        &auth,
        &Req::post("{}").url(&format!("https://h/hooks/r?a=1&sig={sig}")),
    );
    assert_fails(
        &auth,
        &Req::post("{}"),
        FailureKind::Missing,
        "query parameter sig missing",
    );
}

/// Stripe's shape through the generic verifier: `t=…,v1=…,v1=…` with a template.
#[test]
fn hmac_header_params_rotation_template_and_timestamp() {
    let auth = json!({
        "auth_type": "hmac",
        "secrets": [{"name": "old", "value": "old-secret"}, {"name": "new", "value": "new-secret"}],
        "signature": {"source": "header_param", "name": "Sig", "param": "v1"},
        "signed_payload": {"type": "template", "template": "{timestamp}.{body}"},
        "timestamp": {"source": "header_param", "name": "Sig", "param": "t", "tolerance_seconds": 300}
    });
    let sign =
        |key: &str, t: i64| hex(&hmac_sha256(key.as_bytes(), format!("{t}.{{}}").as_bytes()));
    // Sender rotated to "new": two v1 entries, the old one garbage.
    let req = Req::post("{}").header(
        "Sig",
        format!(
            "t={NOW}, v1={}, v1={}",
            "00".repeat(32),
            sign("new-secret", NOW)
        ),
    );
    assert_eq!(
        assert_passes(&auth, &req),
        "hmac-sha256 signature in v1 in header Sig matched secret new"
    );
    let req = Req::post("{}").header("Sig", format!("t={NOW},v1={}", sign("old-secret", NOW)));
    assert_eq!(
        assert_passes(&auth, &req),
        "hmac-sha256 signature in v1 in header Sig matched secret old"
    );
    let wrong = Req::post("{}").header(
        "Sig",
        format!("t={NOW},v1={},v1={}", sign("x", NOW), sign("y", NOW)),
    );
    assert_fails(
        &auth,
        &wrong,
        FailureKind::Mismatch,
        "none of 2 signatures in v1 in header Sig matches any of secrets old, new",
    );
    let old = NOW - 301;
    assert_fails(
        &auth,
        &Req::post("{}").header("Sig", format!("t={old},v1={}", sign("new-secret", old))),
        FailureKind::Timestamp,
        "timestamp 1699999699 outside 300 s tolerance (301 s old)",
    );
    let future = NOW + 301;
    assert_fails(
        &auth,
        &Req::post("{}").header(
            "Sig",
            format!("t={future},v1={}", sign("new-secret", future)),
        ),
        FailureKind::Timestamp,
        "(301 s in the future)",
    );
    assert_fails(
        &auth,
        &Req::post("{}").header("Sig", format!("v1={}", sign("new-secret", NOW))),
        FailureKind::Missing,
        "timestamp: header Sig has no t= entry",
    );
    assert_fails(
        &auth,
        &Req::post("{}").header("Sig", "t=yesterday,v1=00"),
        FailureKind::Malformed,
        "timestamp \"yesterday\" from t in header Sig is not Unix seconds",
    );
}

#[test]
fn hmac_template_with_id_url_method_and_headers() {
    let auth = json!({
        "auth_type": "hmac", "encoding": "base64", "secret_encoding": "base64",
        "secret": secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "signature": {"source": "header", "name": "X-Sig"},
        "id": {"source": "header", "name": "X-Id"},
        "signed_payload": {"type": "template", "template": "{method} {url} {id} {header:X-Extra} {{{body}}}"}
    });
    let key = unb64("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let url = "https://hooks.example.com/hooks/rcv_1?q=1";
    let signed = format!("POST {url} id-9 extra {{body}}");
    let req = Req::post("body")
        .url(url)
        .header("X-Id", "id-9")
        .header("X-Extra", "extra")
        .header("X-Sig", b64(&hmac_sha256(&key, signed.as_bytes())));
    assert_passes(&auth, &req);
    assert_fails(
        &auth,
        &req.clone().without("X-Extra"),
        FailureKind::Missing,
        "header X-Extra missing",
    );
    assert_fails(
        &auth,
        &req.clone().without("X-Id"),
        FailureKind::Missing,
        "id: header X-Id missing",
    );
}

#[test]
fn shared_tokens_basic_and_bearer() {
    let header =
        json!({"auth_type": "header_equals", "name": "X-Token", "secret": secret("t0k3n")});
    assert_passes(&header, &Req::post("").header("x-token", "t0k3n"));
    assert_fails(
        &header,
        &Req::post("").header("X-Token", "t0k3"),
        FailureKind::Mismatch,
        "header X-Token does not match secret s",
    );
    assert_fails(
        &header,
        &Req::post(""),
        FailureKind::Missing,
        "header X-Token missing",
    );

    let query = json!({"auth_type": "query_equals", "name": "token", "secret": secret("a b")});
    assert_passes(&query, &Req::post("").url("https://h/x?token=a+b"));
    assert_fails(
        &query,
        &Req::post("").url("https://h/x?token=ab"),
        FailureKind::Mismatch,
        "query parameter token",
    );

    let basic = json!({"auth_type": "basic", "username": "ci", "password": secret("pa:ss")});
    let creds = |u: &str, p: &str| format!("Basic {}", b64(format!("{u}:{p}").as_bytes()));
    assert_passes(
        &basic,
        &Req::post("").header("Authorization", creds("ci", "pa:ss")),
    );
    assert_fails(
        &basic,
        &Req::post("").header("Authorization", creds("ci", "nope")),
        FailureKind::Mismatch,
        "basic credentials do not match",
    );
    assert_fails(
        &basic,
        &Req::post("").header("Authorization", creds("root", "pa:ss")),
        FailureKind::Mismatch,
        "basic credentials do not match",
    );
    assert_fails(
        &basic,
        &Req::post("").header("Authorization", "Basic !!!"),
        FailureKind::Malformed,
        "not base64",
    );
    assert_fails(
        &basic,
        &Req::post("").header("Authorization", "Bearer x"),
        FailureKind::Malformed,
        "not Basic credentials",
    );

    let bearer = json!({"auth_type": "bearer_static", "secret": secret("s3cr3t")});
    assert_passes(
        &bearer,
        &Req::post("").header("Authorization", "bearer s3cr3t"),
    );
    assert_fails(
        &bearer,
        &Req::post("").header("Authorization", "Bearer s3cr3"),
        FailureKind::Mismatch,
        "bearer token does not match secret s",
    );
    assert_fails(
        &bearer,
        &Req::post(""),
        FailureKind::Missing,
        "header Authorization missing",
    );
}

#[test]
fn ip_allowlist_v4_v6_and_mapped() {
    let auth = json!({"auth_type": "ip_allowlist", "cidrs": ["192.30.252.0/22", "2a0a:a440::/29", "203.0.113.7"]});
    for ok in [
        "192.30.252.1",
        "192.30.255.255",
        "2a0a:a440::1",
        "203.0.113.7",
        "::ffff:192.30.253.9",
    ] {
        let msg = assert_passes(&auth, &Req::post("").remote(ok));
        assert!(msg.starts_with("remote address "), "{msg}");
    }
    for bad in [
        "192.30.251.255",
        "10.0.0.1",
        "2a0b::1",
        "::1",
        "203.0.113.8",
    ] {
        assert_fails(
            &auth,
            &Req::post("").remote(bad),
            FailureKind::Forbidden,
            "is not in the allowlist",
        );
    }
    assert_fails(
        &auth,
        &Req::post(""),
        FailureKind::Missing,
        "remote address unknown",
    );
}

#[test]
fn all_and_any_nest_and_explain() {
    let hmac = github_style();
    let ip = json!({"auth_type": "ip_allowlist", "cidrs": ["10.0.0.0/8"]});
    let token = json!({"auth_type": "header_equals", "name": "X-Token", "secret": {"name": "tok", "value": "t"}});
    // all(ip, any(hmac, token))
    let auth = json!({"auth_type": "all", "verifiers": [ip, {"auth_type": "any", "verifiers": [hmac, token]}]});
    let req = Req::post("x").remote("10.1.1.1").header("X-Token", "t");
    let r = receiver(auth.clone());
    let verdict = hookgate_core::verify::authenticate(
        &r.auth,
        &Event::new(req.request()),
        &hookgate_core::verify::NoEnv,
    );
    assert!(verdict.result.is_ok());
    let rendered = {
        let mut s = String::new();
        verdict.step.render(0, &mut s);
        s
    };
    assert_eq!(
        rendered,
        "[pass] all: all 2 verifiers passed\n  [pass] remote address 10.1.1.1 is in 10.0.0.0/8\n  [pass] any: verifier 2 of 2 passed\n    [FAIL] signature header X-Hub-Signature-256 missing\n    [pass] header X-Token matched secret tok\n"
    );
    let f = verify(&auth, &req.clone().remote("11.0.0.1")).unwrap_err();
    assert_eq!(
        f.reason,
        "all: verifier 1 of 2 failed: remote address 11.0.0.1 is not in the allowlist"
    );
    assert_eq!(f.kind, FailureKind::Forbidden);
    let f = verify(&auth, &req.clone().without("X-Token")).unwrap_err();
    assert_eq!(
        f.reason,
        "all: verifier 2 of 2 failed: any: none of 2 verifiers passed: signature header X-Hub-Signature-256 missing; header X-Token missing"
    );
}

/// A runtime whose one plugin accepts requests carrying `X-Plugin: yes`.
struct OnePlugin;

impl Env for OnePlugin {
    fn jwks(&self, _: &str) -> Option<&Jwks> {
        None
    }
    fn verify_plugin(&self, plugin: &PluginAuth, request: &Request<'_>) -> Result<String, String> {
        assert_eq!(plugin.config, json!({"public_key": "ab"}));
        match request.headers.get("X-Plugin") {
            Ok("yes") => Ok("signature valid".into()),
            _ => Err("signature invalid".into()),
        }
    }
}

#[test]
fn plugins_run_through_the_runtime_anywhere_in_the_tree() {
    let plugin =
        json!({"auth_type": "plugin", "plugin": "discord-ed25519", "config": {"public_key": "ab"}});
    let auth = json!({"auth_type": "any", "verifiers": [{"auth_type": "bearer_static", "secret": secret("x")}, plugin]});
    let r = receiver(auth.clone());
    let run = |req: &Req| {
        hookgate_core::verify::authenticate(&r.auth, &Event::new(req.request()), &OnePlugin)
    };
    assert!(run(&Req::post("").header("X-Plugin", "yes")).result.is_ok());
    let f = run(&Req::post("")).result.unwrap_err();
    assert!(
        f.reason
            .ends_with("plugin discord-ed25519: signature invalid"),
        "{}",
        f.reason
    );
    let alone = receiver(
        json!({"auth_type": "plugin", "plugin": "discord-ed25519", "config": {"public_key": "ab"}}),
    );
    let f = hookgate_core::verify::authenticate(
        &alone.auth,
        &Event::new(Req::post("").request()),
        &OnePlugin,
    )
    .result
    .unwrap_err();
    assert_eq!(
        (f.kind, f.reason.as_str()),
        (
            FailureKind::Plugin,
            "plugin discord-ed25519: signature invalid"
        )
    );
    // Where plugins cannot run (the edge), the reason says so.
    let only =
        json!({"auth_type": "plugin", "plugin": "discord-ed25519", "config": {"public_key": "ab"}});
    assert_fails(
        &only,
        &Req::post(""),
        FailureKind::Plugin,
        "plugin discord-ed25519: cannot run here: plugins run in the host",
    );
}

#[test]
fn none_accepts_and_says_so() {
    assert_eq!(
        assert_passes(&json!({"auth_type": "none"}), &Req::post("")),
        "auth_type none: accepted without verification"
    );
}
