//! Handler tests without a socket: a host opened on a temporary data directory
//! over the in-memory plane, its router called with `oneshot`. The end-to-end
//! suite (`tests/e2e`) keeps what needs a real listener or the real binary.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::sandbox::memory::{Call, MemoryPlane};
use crate::state::AppState;
use crate::{Opened, Plane};

const TOKEN: &str = "hg_test_admin_token";
const SECRET: &str = "It's a Secret to Everybody";
const FORWARD_KEY: &str = "edge-forward-key-0123456789";

struct T {
    state: AppState,
    plane: Arc<MemoryPlane>,
    _dir: tempfile::TempDir,
}

async fn host() -> T {
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("HOOKGATE_DATA_DIR", dir.path().display().to_string()),
        ("HOOKGATE_ADMIN_TOKEN", TOKEN.to_owned()),
        ("HOOKGATE_EDGE_FORWARD_KEY", FORWARD_KEY.to_owned()),
        ("HOOKGATE_RUNNER_BACKOFF_INITIAL_MS", "20".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let settings = crate::settings::Settings::load(None, vars).unwrap();
    let plane = Arc::new(MemoryPlane::new());
    let Opened { state, .. } = crate::open(settings, Plane::Custom(plane.clone()))
        .await
        .unwrap();
    T {
        state,
        plane,
        _dir: dir,
    }
}

fn github_receiver() -> Value {
    let mut v: Value = serde_json::from_str(include_str!(
        "../../../../core/tests/data/design-github-example.json"
    ))
    .unwrap();
    v["auth"]["secret"]["value"] = json!(SECRET);
    v
}

fn hex_hmac(key: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

impl T {
    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = super::app(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        (status, body)
    }

    async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {TOKEN}"));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.send(req.body(body).unwrap()).await
    }

    async fn create(&self, config: Value) -> String {
        let (status, body) = self
            .admin("POST", "/v1/webhooks/incoming", Some(config))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["data"]["id"].as_str().unwrap().to_owned()
    }

    /// A pull request event, signed as GitHub signs it.
    async fn github(&self, receiver: &str, delivery: &str, action: &str) -> (StatusCode, Value) {
        let body = json!({"action": action, "pull_request": {"number": 42}}).to_string();
        let req = Request::post(format!("/hooks/{receiver}"))
            .header("content-type", "application/json")
            .header("x-github-delivery", delivery)
            .header(
                "x-hub-signature-256",
                format!("sha256={}", hex_hmac(SECRET, body.as_bytes())),
            )
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    async fn edge(&self, event: &Value) -> (StatusCode, Value) {
        let body = event.to_string();
        let now = crate::ids::now_millis() / 1000;
        let req = Request::post("/v1/edge/ingest")
            .header("x-hookgate-edge-timestamp", now.to_string())
            .header(
                "x-hookgate-edge-signature",
                hex_hmac(FORWARD_KEY, format!("{now}.{body}").as_bytes()),
            )
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// A delivery once the runner is done with it.
    async fn settled(&self, id: &str) -> Value {
        for _ in 0..200 {
            let (status, body) = self
                .admin("GET", &format!("/v1/deliveries/{id}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if body["data"]["status"] != "pending" {
                return body["data"].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("delivery {id} still pending");
    }
}

fn edge_event(receiver: &str, edge_id: &str, sandbox: Value, key: Option<&str>) -> Value {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    json!({
        "edge_delivery_id": edge_id,
        "receiver_id": receiver,
        "method": "POST",
        "url": "https://edge.example/hooks/x",
        "headers": [["content-type", b64(b"application/json")]],
        "body": b64(br#"{"action":"opened","pull_request":{"number":42}}"#),
        "remote_addr": "203.0.113.7",
        "received_at": crate::ids::now_millis(),
        "verified_at": crate::ids::now_millis(),
        "idempotency_key": key.map(|k| json!({"hash": k, "value": "v"})),
        "sandbox": sandbox,
        "plan": [{"rule": 0, "action": 0, "spec": {"action_type": "ensure_sandbox", "template": {"image": "echo"}}}],
        "trace": [],
    })
}

#[tokio::test]
async fn management_needs_the_admin_token_and_unknown_routes_are_404() {
    let t = host().await;
    let req = Request::get("/v1/webhooks/incoming")
        .body(Body::empty())
        .unwrap();
    let (status, body) = t.send(req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (body["success"].clone(), body["code"].clone()),
        (json!(false), json!("unauthorized"))
    );
    let req = Request::get("/v1/plugins")
        .header("authorization", "Bearer wrong")
        .body(Body::empty())
        .unwrap();
    assert_eq!(t.send(req).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = t.admin("GET", "/v1/nothing-here", None).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let req = Request::get("/healthz").body(Body::empty()).unwrap();
    assert_eq!(t.send(req).await.0, StatusCode::OK);
    // Regression (the trust issue): metrics name every receiver id.
    let id = t.create(github_receiver()).await;
    t.github(&id, "d-1", "opened").await;
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let (status, body) = t.send(req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.to_string().contains(&id));
    let (status, body) = t.admin("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.as_str().unwrap().contains(&id));
}

#[tokio::test]
async fn receivers_are_validated_stored_and_served() {
    let t = host().await;
    let mut bad = github_receiver();
    bad["rules"][0]["actions"][1]["port"] = json!(70000);
    let (status, body) = t.admin("POST", "/v1/webhooks/incoming", Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("rules[0].actions[1].port"),
        "{body}"
    );
    let (status, body) = t.admin("GET", "/v1/webhooks/incoming?limit=0", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("limit:"),
        "{body}"
    );

    let id = t.create(github_receiver()).await;
    let (status, body) = t
        .admin("GET", &format!("/v1/webhooks/incoming/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"]["auth"]["secret"],
        json!({"secret_ref": "github_webhook_secret"})
    );
    assert!(!body.to_string().contains(SECRET));
    // The cache serves it at once; disabling takes it out at once.
    assert_eq!(t.github(&id, "d-1", "opened").await.0, StatusCode::ACCEPTED);
    let (status, _) = t
        .admin(
            "PUT",
            &format!("/v1/webhooks/incoming/{id}"),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        t.github(&id, "d-2", "opened").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_receiver_endpoint_accepts_dedupes_and_refuses_precisely() {
    let t = host().await;
    let id = t.create(github_receiver()).await;
    let (status, first) = t.github(&id, "d-1", "opened").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, again) = t.github(&id, "d-1", "opened").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["data"]["status"], "duplicate");
    assert_eq!(again["data"]["delivery_id"], first["data"]["delivery_id"]);

    let req = Request::post(format!("/hooks/{id}"))
        .header("x-github-delivery", "d-3")
        .header("x-hub-signature-256", "sha256=00")
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = t.send(req).await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("signature_rejected"))
    );
    let req = Request::post(format!("/hooks/{id}"))
        .header("content-length", (2 << 20).to_string())
        .body(Body::empty())
        .unwrap();
    assert_eq!(t.send(req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        t.github("rcv_nope", "d-4", "opened").await.0,
        StatusCode::NOT_FOUND
    );

    let d = t
        .settled(first["data"]["delivery_id"].as_str().unwrap())
        .await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["sandbox"], "pr-42");
    assert!(t.plane.calls().contains(&Call::Ensure("pr-42".into())));
}

#[tokio::test]
async fn a_replay_goes_through_acceptance_again_and_says_so() {
    let t = host().await;
    let id = t.create(github_receiver()).await;
    let (_, first) = t.github(&id, "d-1", "closed").await;
    let original = first["data"]["delivery_id"].as_str().unwrap().to_owned();
    t.settled(&original).await;
    let (status, body) = t
        .admin("POST", &format!("/v1/deliveries/{original}/replay"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["data"]["replay_of"], original);
    let replay = t
        .settled(body["data"]["delivery_id"].as_str().unwrap())
        .await;
    assert_eq!(replay["replay_of"], original.as_str());
    assert_eq!(replay["status"], "succeeded", "{replay}");
    assert!(
        replay["explain"]
            .as_str()
            .unwrap()
            .contains("not authenticated again"),
        "{replay}"
    );
    let deletes = t
        .plane
        .calls()
        .iter()
        .filter(|c| **c == Call::Delete("pr-42".into()))
        .count();
    assert_eq!(deletes, 2);
}

/// Regression (the foundation issue): an edge event whose sandbox name does not
/// parse was stored `pending` with no sandbox and skipped on every start.
#[tokio::test]
async fn an_edge_event_with_an_unusable_sandbox_fails_visibly() {
    let t = host().await;
    let id = t.create(github_receiver()).await;
    let (status, body) = t
        .edge(&edge_event(&id, "edg_1", json!("Not A Name!"), None))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let d = t
        .settled(body["data"]["delivery_id"].as_str().unwrap())
        .await;
    assert_eq!(d["status"], "failed", "{d}");
    let why = d["last_error"].as_str().unwrap();
    assert!(why.contains("Not A Name!"), "{d}");
    assert!(
        d["explain"].as_str().unwrap().contains("no usable sandbox"),
        "{d}"
    );
    let (_, body) = t.edge(&edge_event(&id, "edg_2", Value::Null, None)).await;
    let d = t
        .settled(body["data"]["delivery_id"].as_str().unwrap())
        .await;
    assert_eq!(d["status"], "failed", "{d}");
    assert!(t.plane.calls().is_empty());
}

/// The edge's idempotency key is the provider's: an event that reached the
/// host directly and through the edge is one delivery, and a redelivered edge
/// event is a duplicate even under a new edge id.
#[tokio::test]
async fn edge_events_dedupe_on_the_providers_key() {
    let t = host().await;
    let id = t.create(github_receiver()).await;
    let (_, direct) = t.github(&id, "d-1", "opened").await;
    let direct = direct["data"]["delivery_id"].clone();
    let stored = t.settled(direct.as_str().unwrap()).await;
    let key = t
        .state
        .store
        .delivery(stored["id"].as_str().unwrap().to_owned())
        .await
        .unwrap()
        .unwrap()
        .idempotency_key
        .unwrap();
    let (status, body) = t
        .edge(&edge_event(&id, "edg_1", json!("pr-42"), Some(&key)))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "duplicate");
    assert_eq!(body["data"]["delivery_id"], direct);
    // Without a provider key, the edge id dedupes.
    let (_, first) = t
        .edge(&edge_event(&id, "edg_2", json!("pr-42"), None))
        .await;
    assert_eq!(first["data"]["status"], "accepted");
    let (_, again) = t
        .edge(&edge_event(&id, "edg_2", json!("pr-42"), None))
        .await;
    assert_eq!(again["data"]["status"], "duplicate");
    assert_eq!(again["data"]["delivery_id"], first["data"]["delivery_id"]);
}

/// Every management route answers 401 without the admin token, before it looks
/// at anything else (unknown ids, bodies, sandboxes).
#[tokio::test]
async fn every_management_route_needs_the_admin_token() {
    let t = host().await;
    let routes = [
        ("POST", "/v1/webhooks/incoming"),
        ("GET", "/v1/webhooks/incoming"),
        ("GET", "/v1/webhooks/incoming/rcv_x"),
        ("PUT", "/v1/webhooks/incoming/rcv_x"),
        ("DELETE", "/v1/webhooks/incoming/rcv_x"),
        ("GET", "/v1/webhooks/incoming/rcv_x/deliveries"),
        ("GET", "/v1/deliveries/dlv_x"),
        ("POST", "/v1/deliveries/dlv_x/replay"),
        ("GET", "/v1/sandboxes"),
        ("POST", "/v1/sandboxes"),
        ("GET", "/v1/sandboxes/box"),
        ("DELETE", "/v1/sandboxes/box"),
        ("POST", "/v1/sandboxes/box/pause"),
        ("POST", "/v1/sandboxes/box/resume"),
        ("POST", "/v1/sandboxes/box/deliver"),
        ("POST", "/v1/sandboxes/box/exec"),
        ("POST", "/v1/plugins?name=p"),
        ("GET", "/v1/plugins"),
        ("GET", "/v1/plugins/p"),
        ("DELETE", "/v1/plugins/p"),
    ];
    for (method, uri) in routes {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let (status, body) = t.send(req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}: {body}");
        assert_eq!(body["code"], "unauthorized", "{method} {uri}");
    }
    assert!(t.plane.calls().is_empty());
}

/// Dedupe is per receiver: the same key hash for another receiver is a new
/// delivery there.
#[tokio::test]
async fn an_edge_key_dedupes_only_within_its_receiver() {
    let t = host().await;
    let a = t.create(github_receiver()).await;
    let b = t.create(github_receiver()).await;
    let key = "0123456789abcdef0123456789abcdef";
    let (_, first) = t
        .edge(&edge_event(&a, "edg_1", json!("pr-42"), Some(key)))
        .await;
    assert_eq!(first["data"]["status"], "accepted");
    let (_, other) = t
        .edge(&edge_event(&b, "edg_2", json!("pr-42"), Some(key)))
        .await;
    assert_eq!(other["data"]["status"], "accepted", "{other}");
    assert_ne!(other["data"]["delivery_id"], first["data"]["delivery_id"]);
}

/// An event a host before 0.2 stored is indexed under its edge id; its
/// redelivery, now carrying the provider's key, is still a duplicate.
#[tokio::test]
async fn an_edge_event_stored_under_its_edge_id_stays_a_duplicate() {
    use sha2::Digest;
    let t = host().await;
    let id = t.create(github_receiver()).await;
    let edge_hash = hex::encode(&sha2::Sha256::digest("edge\0edg_old")[..16]);
    t.state.dedupe.load(vec![crate::store::LiveKey {
        receiver_id: id.clone(),
        key: edge_hash,
        delivery_id: "dlv_stored_by_0_1".into(),
        expires_at: crate::ids::now_millis() + 60_000,
    }]);
    let (status, body) = t
        .edge(&edge_event(
            &id,
            "edg_old",
            json!("pr-42"),
            Some("ffff0000ffff0000ffff0000ffff0000"),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "duplicate");
    assert_eq!(body["data"]["delivery_id"], "dlv_stored_by_0_1");
}

/// An action the host's core cannot read fails its own delivery when it runs;
/// the event itself is taken (a refusal would block the edge's outbox).
#[tokio::test]
async fn an_edge_action_the_host_cannot_read_fails_only_its_delivery() {
    let t = host().await;
    let id = t.create(github_receiver()).await;
    let mut event = edge_event(&id, "edg_1", json!("pr-42"), None);
    event["plan"][0]["spec"] = json!({"action_type": "teleport", "to": "mars"});
    let (status, body) = t.edge(&event).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let d = t
        .settled(body["data"]["delivery_id"].as_str().unwrap())
        .await;
    assert_eq!(d["status"], "failed", "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("stored action is unreadable"),
        "{d}"
    );
    assert!(t.plane.calls().is_empty());
}

mod trust;
