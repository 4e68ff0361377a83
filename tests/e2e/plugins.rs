//! Plugins for real: the shipped components, built for wasm32-wasip2 by
//! `tests/plugin-artifacts`, uploaded over the API and run in wasmtime, with
//! signatures made the way Discord, Standard Webhooks and Telnyx make them.

use std::time::{Duration, Instant};

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use hookgate_plugin_artifacts as artifacts;
use serde_json::{Value, json};

use crate::support::TestHost;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn upload(t: &TestHost, name: &str, file: &str) -> (u16, Value) {
    let bytes = std::fs::read(file).unwrap();
    upload_bytes(t, name, bytes).await
}

async fn upload_bytes(t: &TestHost, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let resp = t
        .client
        .post(t.url(&format!("/v1/plugins?name={name}")))
        .bearer_auth(&t.host.admin_token)
        .header("Content-Type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .unwrap();
    crate::support::answer(resp).await
}

/// A receiver authenticated by `auth`, ensuring one sandbox per event.
fn receiver(auth: Value) -> Value {
    json!({
        "name": "plugin-test",
        "auth": auth,
        "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "box"},
        "rules": [{"actions": [{"action_type": "ensure_sandbox", "template": {"image": "echo"}}]}]
    })
}

async fn post(
    t: &TestHost,
    receiver: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    let mut req = t
        .client
        .post(t.url(&format!("/hooks/{receiver}")))
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    for (n, v) in headers {
        req = req.header(*n, v);
    }
    let resp = req.send().await.unwrap();
    crate::support::answer(resp).await
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn discord_signatures_verify_in_a_plugin() {
    let t = TestHost::start().await;
    let (status, body) = upload(&t, "discord", artifacts::DISCORD_ED25519).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["world"], "verifier");
    assert_eq!(body["data"]["contract"], "hookgate:plugin@0.1.0");
    assert_eq!(body["data"]["timeout_ms"], 50);
    let public = hex::encode(key().verifying_key().as_bytes());
    let id = t
        .create(receiver(json!({
            "auth_type": "plugin", "plugin": "discord", "config": {"public_key": public}
        })))
        .await;

    let body = br#"{"type":1,"id":"123"}"#;
    let sign = |ts: u64, body: &[u8]| {
        let mut message = ts.to_string().into_bytes();
        message.extend_from_slice(body);
        hex::encode(key().sign(&message).to_bytes())
    };
    let ts = now();
    let headers = vec![
        ("X-Signature-Ed25519", sign(ts, body)),
        ("X-Signature-Timestamp", ts.to_string()),
    ];
    let (status, answer) = post(&t, &id, &headers, body).await;
    assert_eq!(status, 202, "{answer}");
    let delivery = t
        .delivery(answer["data"]["delivery_id"].as_str().unwrap())
        .await;
    assert!(
        delivery["trace"]
            .to_string()
            .contains("matched config.public_key"),
        "{delivery}"
    );

    let (status, answer) = post(&t, &id, &headers, br#"{"type":2,"id":"123"}"#).await;
    assert_eq!(status, 401, "tampered body: {answer}");
    t.rejected_because(&id, "did not match").await;
    let old = ts - 3600;
    let stale = vec![
        ("X-Signature-Ed25519", sign(old, body)),
        ("X-Signature-Timestamp", old.to_string()),
    ];
    let (status, answer) = post(&t, &id, &stale, body).await;
    assert_eq!(status, 401, "{answer}");
    t.rejected_because(&id, "over the 300 s tolerance").await;
    let (status, answer) = post(&t, &id, &headers[1..], body).await;
    assert_eq!(status, 401);
    t.rejected_because(&id, "missing header X-Signature-Ed25519")
        .await;
    assert!(
        !error(&answer).contains(&headers[0].1),
        "no signature in errors"
    );
}

#[tokio::test]
async fn plugins_work_inside_any_and_all() {
    let t = TestHost::start().await;
    upload(&t, "telnyx", artifacts::TELNYX_ED25519).await;
    upload(&t, "swv1a", artifacts::STANDARD_WEBHOOKS_V1A).await;
    let public = key().verifying_key();
    let id = t
        .create(receiver(json!({"auth_type": "any", "verifiers": [
            {"auth_type": "plugin", "plugin": "telnyx",
             "config": {"public_key": B64.encode(public.as_bytes())}},
            {"auth_type": "all", "verifiers": [
                {"auth_type": "plugin", "plugin": "swv1a",
                 "config": {"public_keys": ["whpk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                                            format!("whpk_{}", B64.encode(public.as_bytes()))]}}
            ]}
        ]})))
        .await;
    let body = br#"{"data":{"event_type":"call.initiated"}}"#;
    let ts = now().to_string();

    // Telnyx: Ed25519 over "timestamp|body", base64.
    let mut message = format!("{ts}|").into_bytes();
    message.extend_from_slice(body);
    let telnyx = vec![
        (
            "telnyx-signature-ed25519",
            B64.encode(key().sign(&message).to_bytes()),
        ),
        ("telnyx-timestamp", ts.clone()),
    ];
    let (status, answer) = post(&t, &id, &telnyx, body).await;
    assert_eq!(status, 202, "{answer}");

    // Standard Webhooks v1a: Ed25519 over "id.timestamp.body", among other entries.
    let mut message = format!("msg_1.{ts}.").into_bytes();
    message.extend_from_slice(body);
    let v1a = B64.encode(key().sign(&message).to_bytes());
    let swh = vec![
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", ts.clone()),
        ("webhook-signature", format!("v1,bm90IGl0 v1a,{v1a}")),
    ];
    let (status, answer) = post(&t, &id, &swh, body).await;
    assert_eq!(status, 202, "{answer}");
    let delivery = t
        .delivery(answer["data"]["delivery_id"].as_str().unwrap())
        .await;
    assert!(
        delivery["trace"]
            .to_string()
            .contains("v1a signature 1 in webhook-signature matched public key 1"),
        "{delivery}"
    );

    // Neither: the 401 explains both branches.
    let forged = vec![
        ("webhook-id", "msg_2".to_owned()),
        ("webhook-timestamp", ts),
        ("webhook-signature", format!("v1a,{v1a}")),
    ];
    let (status, answer) = post(&t, &id, &forged, body).await;
    assert_eq!(status, 401, "{answer}");
    t.rejected_because(&id, "missing header telnyx-signature-ed25519")
        .await;
    t.rejected_because(&id, "none of the 1 v1a signatures")
        .await;
}

#[tokio::test]
async fn uploads_and_references_are_checked() {
    let t = TestHost::start().await;
    let (status, body) = upload_bytes(&t, "junk", b"not wasm at all".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "invalid_plugin");
    assert!(
        error(&body).starts_with("not a WebAssembly component"),
        "{body}"
    );
    // A core module, not a component.
    let (status, body) = upload_bytes(&t, "core", b"\0asm\x01\0\0\0".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = upload(&t, "Bad Name", artifacts::DISCORD_ED25519).await;
    assert_eq!(status, 422, "{body}");
    assert!(error(&body).starts_with("name: "), "{body}");
    let (status, body) = t.api(reqwest::Method::GET, "/v1/plugins", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["plugins"], json!([]), "nothing half-installed");
    assert_eq!(body["data"]["accepts"], json!(["hookgate:plugin@0.1.0"]));

    // Receivers must name installed plugins of the right world.
    let auth = json!({"auth_type": "plugin", "plugin": "discord", "config": {}});
    let (status, body) = t
        .api(
            reqwest::Method::POST,
            "/v1/webhooks/incoming",
            Some(receiver(auth.clone())),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error(&body).contains("plugin \"discord\" is not installed"),
        "{body}"
    );
    upload(&t, "reshape", artifacts::RESHAPE_JSON).await;
    let wrong = json!({"auth_type": "plugin", "plugin": "reshape", "config": {}});
    let (status, body) = t
        .api(
            reqwest::Method::POST,
            "/v1/webhooks/incoming",
            Some(receiver(wrong)),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error(&body).contains("is an action plugin; auth needs a verifier plugin"),
        "{body}"
    );

    // A plugin in use stays; unused, it goes.
    let (status, _) = upload(&t, "discord", artifacts::DISCORD_ED25519).await;
    assert_eq!(status, 201);
    let (status, again) = upload(&t, "discord", artifacts::DISCORD_ED25519).await;
    assert_eq!(status, 200, "replacing answers 200: {again}");
    let id = t.create(receiver(auth)).await;
    let (status, body) = t
        .api(reqwest::Method::DELETE, "/v1/plugins/discord", None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(error(&body).contains(&id), "{body}");
    let (status, _) = t
        .api(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/incoming/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = t
        .api(reqwest::Method::DELETE, "/v1/plugins/discord", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = t
        .api(reqwest::Method::GET, "/v1/plugins/discord", None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_contained() {
    let t = TestHost::start().await;
    let (status, body) = upload(&t, "hostile", artifacts::HOSTILE).await;
    assert_eq!(status, 201, "{body}");
    let mut receivers = std::collections::BTreeMap::new();
    for behaviour in [
        "accept", "loop", "sleep", "grow", "panic", "files", "env", "clock",
    ] {
        let id = t
            .create(receiver(json!({
                "auth_type": "plugin", "plugin": "hostile", "config": {"do": behaviour}
            })))
            .await;
        receivers.insert(behaviour, id);
    }
    let reason = |behaviour: &'static str| {
        let t = &t;
        let id = receivers[behaviour].clone();
        async move {
            let (status, body) = post(t, &id, &[], b"{}").await;
            assert_eq!(status, 401, "{behaviour}: {body}");
            // The sender learns nothing of the plugin; the operator, all of it.
            assert_eq!(error(&body), "authentication failed", "{behaviour}");
            t.rejected_because(&id, "plugin").await["reason"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };

    let started = Instant::now();
    let why = reason("loop").await;
    assert!(
        why.contains("did not finish within its 50 ms deadline"),
        "{why}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the loop was cut off"
    );
    // A blocking host call is out of the deadline's reach, so waiting is refused.
    let started = Instant::now();
    let why = reason("sleep").await;
    assert!(
        why.contains("plugins may not sleep or wait on a clock"),
        "{why}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let why = reason("grow").await;
    assert!(
        why.contains("tried to grow past its 16 MiB memory cap"),
        "{why}"
    );
    let why = reason("panic").await;
    assert!(why.contains("trapped"), "{why}");
    assert!(why.contains("hostile plugin panicked on purpose"), "{why}");
    // 1 MiB of stderr (given time to write it): the plugin is not cut off, and
    // the trace keeps the end of what it printed.
    let (status, body) = upload(&t, "chatty&timeout_ms=10000", artifacts::HOSTILE).await;
    assert_eq!(status, 201, "{body}");
    let chatty = t
        .create(receiver(
            json!({"auth_type": "plugin", "plugin": "chatty", "config": {"do": "flood"}}),
        ))
        .await;
    let (status, body) = post(&t, &chatty, &[], b"{}").await;
    assert_eq!(status, 401, "{body}");
    let why = t.rejected_because(&chatty, "flooded stderr").await["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains("trapped"), "{why}");
    assert!(why.contains("flooded stderr"), "{why}");
    assert!(
        why.len() < 2048,
        "stderr is capped in the trace: {} bytes",
        why.len()
    );
    // Limits are per plugin: the same component installed with more room.
    let bytes = std::fs::read(artifacts::HOSTILE).unwrap();
    let (status, body) = upload_bytes(&t, "roomy&memory_mb=32&timeout_ms=120", bytes.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (
            body["data"]["memory_mb"].as_u64(),
            body["data"]["timeout_ms"].as_u64()
        ),
        (Some(32), Some(120))
    );
    let (status, body) = upload_bytes(&t, "greedy&memory_mb=100000", bytes).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error(&body).starts_with("memory_mb: expected 1..256"),
        "{body}"
    );
    for (behaviour, expected) in [
        ("grow", "past its 32 MiB memory cap"),
        ("loop", "within its 120 ms deadline"),
    ] {
        let id = t
            .create(receiver(
                json!({"auth_type": "plugin", "plugin": "roomy", "config": {"do": behaviour}}),
            ))
            .await;
        let (status, body) = post(&t, &id, &[], b"{}").await;
        assert_eq!(status, 401, "{body}");
        t.rejected_because(&id, expected).await;
    }
    let why = reason("files").await;
    assert!(why.contains("files: denied"), "{why}");
    let why = reason("env").await;
    assert!(why.contains("env: 0 variables"), "{why}");
    let sent = now();
    let why = reason("clock").await;
    let seen: u64 = why
        .rsplit("clock: ")
        .next()
        .and_then(|s| s.trim_end_matches(" s").parse().ok())
        .unwrap();
    assert!(
        seen.abs_diff(sent) <= 2,
        "the guest sees the receive time: {why}"
    );

    // While loops are cut off, well-behaved requests keep flowing.
    let looping: Vec<_> = (0..4)
        .map(|_| {
            let client = t.client.clone();
            let url = t.url(&format!("/hooks/{}", receivers["loop"]));
            tokio::spawn(async move { client.post(url).body("{}").send().await.unwrap().status() })
        })
        .collect();
    let (status, body) = post(&t, &receivers["accept"], &[], b"{}").await;
    assert_eq!(status, 202, "{body}");
    for l in looping {
        assert_eq!(l.await.unwrap().as_u16(), 401);
    }
    let metrics = t.metrics().await;
    assert!(
        metrics.contains(
            r#"hookgate_plugin_calls_total{plugin="hostile",world="verifier",outcome="timeout"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_action_plugin_reshapes_and_delivers() {
    let t = TestHost::start_configured("", &[]).await;
    let (status, body) = upload(&t, "reshape", artifacts::RESHAPE_JSON).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["world"], "action");
    let mut r = crate::support::github_receiver();
    r["rules"] = json!([{"actions": [
        {"action_type": "ensure_sandbox", "template": {"image": "echo", "ports": [3000]}},
        {"action_type": "plugin", "plugin": "reshape", "config": {
            "port": 3000, "path": "/events",
            "fields": {"pr": "$.pull_request.number", "what": "$.action", "none": "$.nope[3]"}}}
    ]}]);
    let id = t.create(r).await;
    let (status, answer) = t
        .github(&id, "gh-1", &crate::support::pr("opened", 42))
        .await;
    assert_eq!(status, 202, "{answer}");
    let d = t
        .settled(answer["data"]["delivery_id"].as_str().unwrap())
        .await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert!(
        d["trace"]
            .to_string()
            .contains("plugin reshape: reshaped 3 fields; port 3000 answered 200"),
        "{d}"
    );
    let (_, s) = t
        .api(reqwest::Method::GET, "/v1/sandboxes/pr-42", None)
        .await;
    let port = s["data"]["ports"]["3000"].as_u64().unwrap();
    let records = t.echo_records(port).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["path"], "/events");
    let sent: Value =
        serde_json::from_slice(&B64.decode(records[0]["body"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(sent, json!({"pr": 42, "what": "opened", "none": null}));

    // Plugins survive a restart (from the store, compiled code from the cache).
    let cached = walk(&t.dir.path().join("plugin-cache"));
    assert!(cached > 0, "wasmtime's cache holds the compiled plugin");
    let t = t.restart().await;
    let (status, body) = t
        .api(reqwest::Method::GET, "/v1/plugins/reshape", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, answer) = t
        .github(&id, "gh-2", &crate::support::pr("opened", 42))
        .await;
    assert_eq!(status, 202, "{answer}");
    let d = t
        .settled(answer["data"]["delivery_id"].as_str().unwrap())
        .await;
    assert_eq!(d["status"], "succeeded", "{d}");
}

/// How many files are under `dir`.
fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                let path = e.path();
                if path.is_dir() { walk(&path) } else { 1 }
            })
            .sum()
    })
}

#[tokio::test]
async fn plugins_load_from_a_directory_at_start() {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        artifacts::DISCORD_ED25519,
        plugins.path().join("discord.wasm"),
    )
    .unwrap();
    std::fs::write(plugins.path().join("README.txt"), "not a plugin").unwrap();
    let dir = plugins.path().to_str().unwrap().to_owned();
    let t = TestHost::start_with(&[("HOOKGATE_PLUGINS_DIR", &dir)]).await;
    let (status, body) = t.api(reqwest::Method::GET, "/v1/plugins", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["data"]["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["discord"]);

    // A broken plugin in the directory is configuration gone wrong: start-up stops.
    std::fs::write(plugins.path().join("broken.wasm"), b"nope").unwrap();
    let data = tempfile::tempdir().unwrap();
    let settings = crate::support::settings(data.path(), None, &[("HOOKGATE_PLUGINS_DIR", &dir)]);
    let plane = std::sync::Arc::new(hookgate::sandbox::memory::MemoryPlane::new());
    let err = hookgate::Host::start(settings, hookgate::Plane::Custom(plane))
        .await
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("broken.wasm: not a WebAssembly component"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_plugin_pool_answers_503_not_401() {
    let t = TestHost::start_with(&[("HOOKGATE_PLUGINS_MAX_CONCURRENT", "1")]).await;
    let bytes = std::fs::read(artifacts::HOSTILE).unwrap();
    let (status, body) = upload_bytes(&t, "slow&timeout_ms=1500", bytes).await;
    assert_eq!(status, 201, "{body}");
    let id = t
        .create(receiver(
            json!({"auth_type": "plugin", "plugin": "slow", "config": {"do": "loop"}}),
        ))
        .await;
    let first = {
        let client = t.client.clone();
        let url = t.url(&format!("/hooks/{id}"));
        tokio::spawn(async move { client.post(url).body("{}").send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = post(&t, &id, &[], b"{}").await;
    assert_eq!(status, 503, "the only slot is busy: {body}");
    assert!(error(&body).contains("plugin slot is busy"), "{body}");
    assert_eq!(
        first.await.unwrap().as_u16(),
        401,
        "the first ran out its deadline"
    );
}

/// Regression (the trust issue): every plugin ran before anything else, so an
/// allowlisted receiver with a slow plugin answered strangers only after the
/// plugin's deadline and spent the pool on them. The auth tree now runs in its
/// order: a failed allowlist in `all`, or a passing check first in `any`, means
/// the plugin never runs.
#[tokio::test]
async fn plugins_run_only_when_the_auth_tree_reaches_them() {
    let t = TestHost::start().await;
    let (status, body) = upload(&t, "gated", artifacts::HOSTILE).await;
    assert_eq!(status, 201, "{body}");
    let slow = json!({"auth_type": "plugin", "plugin": "gated", "config": {"do": "loop"}});
    let strangers = t
        .create(receiver(json!({
            "auth_type": "all",
            "verifiers": [{"auth_type": "ip_allowlist", "cidrs": ["10.0.0.0/8"]}, slow]
        })))
        .await;
    let (status, body) = post(&t, &strangers, &[], b"{}").await;
    assert_eq!(status, 401, "{body}");
    t.rejected_because(&strangers, "verifier 1 of 2 failed")
        .await;
    let bearer = t
        .create(receiver(json!({
            "auth_type": "any",
            "verifiers": [
                {"auth_type": "bearer_static", "secret": {"name": "b", "value": "open-sesame-0123"}},
                slow
            ]
        })))
        .await;
    let (status, body) = post(
        &t,
        &bearer,
        &[("Authorization", "Bearer open-sesame-0123".to_owned())],
        b"{}",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let metrics = t.metrics().await;
    assert!(
        !metrics.contains(r#"plugin="gated""#),
        "the plugin ran:\n{metrics}"
    );
    // Where the tree does reach it, it runs (and its deadline holds).
    let (status, body) = post(&t, &bearer, &[], b"{}").await;
    assert_eq!(status, 401, "{body}");
    t.rejected_because(&bearer, "50 ms deadline").await;
}
