//! The edge Worker for real: built by `scripts/build-edge` (through wrangler's
//! build command), run in workerd by `wrangler dev` on loopback, in front of a
//! real host. Provider → edge → host → sandbox.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestHost, free_port, github_receiver, github_signature, pr};

const ADMIN: &str = "edge-admin-token-0123456789";
const FORWARD: &str = "edge-forward-key-0123456789";

/// `wrangler dev` of the repository's wrangler.toml; killed on drop.
struct Edge {
    child: Child,
    base: String,
    state: tempfile::TempDir,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Edge {
    fn start(port: u16, host_url: &str) -> Self {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let state = tempfile::tempdir().unwrap();
        let secrets_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
        let child = Command::new(root.join("edge/node_modules/.bin/wrangler"))
            .current_dir(&root)
            .args(["dev", "--ip", "127.0.0.1", "--port", &port.to_string()])
            .arg("--persist-to")
            .arg(state.path())
            .args(["--var", &format!("EDGE_ADMIN_TOKEN:{ADMIN}")])
            .args(["--var", &format!("EDGE_SECRETS_KEY:{secrets_key}")])
            .args(["--var", &format!("EDGE_FORWARD_KEY:{FORWARD}")])
            .args(["--var", &format!("HOST_URL:{host_url}")])
            .env("WRANGLER_SEND_METRICS", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("edge/node_modules/.bin/wrangler (scripts/setup-edge installs it)");
        let edge = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            state,
        };
        // The first start builds the Worker (release, size-optimised): minutes.
        crate::support::wait_listening(port, Duration::from_secs(900), "wrangler dev");
        edge
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    delivery: &str,
    body: &[u8],
    sig: &str,
) -> (u16, Value) {
    let resp = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", sig)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    crate::support::answer(resp).await
}

async fn until<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_to_edge_to_host_to_sandbox() {
    if crate::support::skip_slow("the Worker built and run in workerd") {
        return;
    }
    let host_port = free_port();
    let edge_port = free_port();
    let host_url = format!("http://127.0.0.1:{host_port}");
    let edge_url = format!("http://127.0.0.1:{edge_port}");
    let listen = format!("127.0.0.1:{host_port}");
    let env = [
        ("HOOKGATE_LISTEN", listen.as_str()),
        ("HOOKGATE_EDGE_URL", edge_url.as_str()),
        ("HOOKGATE_EDGE_ADMIN_TOKEN", ADMIN),
        ("HOOKGATE_EDGE_FORWARD_KEY", FORWARD),
    ];
    let edge = tokio::task::spawn_blocking(move || Edge::start(edge_port, &host_url))
        .await
        .unwrap();
    // Real sandboxes: the local plane and its echo server.
    let t = TestHost::start_configured("", &env).await;
    let client = reqwest::Client::new();

    // Creating the receiver on the host pushes it to the edge.
    let receiver = t.create(github_receiver()).await;
    let hook = format!("{}/hooks/{receiver}", edge.base);
    let body = serde_json::to_vec(&pr("opened", 42)).unwrap();
    let sig = github_signature(&body);
    until(
        "the edge to know the receiver",
        Duration::from_secs(30),
        || async {
            post(
                &client,
                &format!("{}/hooks/{receiver}", edge.base),
                "probe",
                b"{}",
                "sha256=00",
            )
            .await
            .0 != 404
        },
    )
    .await;
    // The Worker's admin route: the token, then core's field-naming check.
    let admin = format!("{}/_hookgate/receivers/rcv_x", edge.base);
    let mut bad = github_receiver();
    bad["rules"][0]["actions"][1]["port"] = json!(70000);
    let (status, refused) = crate::support::answer(
        client
            .put(&admin)
            .bearer_auth("wrong-token")
            .json(&json!({"status": "active", "config": bad}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{refused}");
    let (status, refused) = crate::support::answer(
        client
            .put(&admin)
            .bearer_auth(ADMIN)
            .json(&json!({"status": "active", "config": bad}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("rules[0].actions[1].port: "),
        "{refused}"
    );

    // KV (and everything else the Worker persisted) holds no secret in clear.
    let secret = crate::support::GITHUB_SECRET.as_bytes();
    let mut files = vec![edge.state.path().to_owned()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if let Ok(bytes) = std::fs::read(&path) {
            scanned += 1;
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{} holds the receiver's secret in clear",
                path.display()
            );
        }
    }
    assert!(scanned > 0, "the edge persisted something to scan");
    let stored_before = t.stored(&receiver).await;
    assert_eq!(
        stored_before, 0,
        "the probe was refused at the edge (bad signature)"
    );

    let (status, answer) = post(&client, &hook, "gh-1", &body, &sig).await;
    assert_eq!(status, 202, "{answer}");
    let edge_id = answer["data"]["delivery_id"].as_str().unwrap().to_owned();
    until(
        "the host to have the event",
        Duration::from_secs(30),
        || async { t.stored(&receiver).await == 1 },
    )
    .await;
    let (_, list) = t
        .api(
            reqwest::Method::GET,
            &format!("/v1/webhooks/incoming/{receiver}/deliveries"),
            None,
        )
        .await;
    let id = list["data"]["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = t.settled(&id).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert!(
        d["trace"]
            .to_string()
            .contains(&format!("accepted at the edge as {edge_id}")),
        "{d}"
    );
    // The sandbox pr-42 runs, and its echo server holds the provider's exact bytes.
    let (_, sandbox) = t
        .api(reqwest::Method::GET, "/v1/sandboxes/pr-42", None)
        .await;
    assert_eq!(sandbox["data"]["state"], "running", "{sandbox}");
    let port = sandbox["data"]["ports"]["3000"].as_u64().unwrap();
    let records = t.echo_records(port).await;
    let sent = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        records[0]["body"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(sent, body);
    assert!(
        d["trace"]
            .to_string()
            .contains("matched secret github_webhook_secret"),
        "{d}"
    );

    // 20 concurrent identical deliveries at the edge: one event at the host.
    let second = serde_json::to_vec(&pr("opened", 43)).unwrap();
    let sig2 = github_signature(&second);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (client, hook, second, sig2) =
            (client.clone(), hook.clone(), second.clone(), sig2.clone());
        calls.spawn(async move { post(&client, &hook, "gh-2", &second, &sig2).await.0 });
    }
    let statuses = calls.join_all().await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        19,
        "{statuses:?}"
    );
    until(
        "the host to have two events",
        Duration::from_secs(30),
        || async { t.stored(&receiver).await == 2 },
    )
    .await;

    // A tampered signature stops at the edge.
    let (status, answer) = post(&client, &hook, "gh-3", &body, "sha256=0000").await;
    assert_eq!(status, 401, "{answer}");

    // The host goes down; what the edge accepts meanwhile reaches it afterwards.
    let t = t
        .restart_after(async {
            for n in 0..3 {
                let body = serde_json::to_vec(&pr("opened", 50 + n)).unwrap();
                let (status, answer) = post(
                    &client,
                    &hook,
                    &format!("down-{n}"),
                    &body,
                    &github_signature(&body),
                )
                .await;
                assert_eq!(
                    status, 202,
                    "accepted at the edge while the host is down: {answer}"
                );
            }
        })
        .await;
    until(
        "the backlog to reach the host",
        Duration::from_secs(90),
        || async { t.stored(&receiver).await == 5 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(t.stored(&receiver).await, 5, "none arrived twice");

    // A receiver whose auth is a plugin is passed through to the host, which
    // runs the plugin, and says so in the answer and the trace.
    let (status, body) = t
        .client
        .post(t.url("/v1/plugins?name=discord"))
        .bearer_auth(&t.host.admin_token)
        .body(std::fs::read(hookgate_plugin_artifacts::DISCORD_ED25519).unwrap())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map(|s| (s, ()))
        .unwrap();
    assert_eq!(status, 201, "{body:?}");
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let mut plugin_receiver = github_receiver();
    plugin_receiver["auth"] = json!({"auth_type": "plugin", "plugin": "discord",
        "config": {"public_key": hex::encode(key.verifying_key().as_bytes())}});
    let plugin_id = t.create(plugin_receiver).await;
    let plugin_hook = format!("{}/hooks/{plugin_id}", edge.base);
    let ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs())
    .to_string();
    let interaction = serde_json::to_vec(&pr("opened", 70)).unwrap();
    let mut message = ts.clone().into_bytes();
    message.extend_from_slice(&interaction);
    let signature = hex::encode(ed25519_dalek::Signer::sign(&key, &message).to_bytes());
    // The config push is asynchronous: retry until the edge knows the receiver.
    let started = Instant::now();
    let (marked, id) = loop {
        let resp = client
            .post(&plugin_hook)
            .header("Content-Type", "application/json")
            .header("X-Signature-Ed25519", &signature)
            .header("X-Signature-Timestamp", &ts)
            .body(interaction.clone())
            .send()
            .await
            .unwrap();
        if resp.status().as_u16() == 202 {
            let marked = resp.headers().contains_key("x-hookgate-edge");
            let answer: Value = resp.json().await.unwrap();
            break (
                marked,
                answer["data"]["delivery_id"].as_str().unwrap().to_owned(),
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the edge never passed the plugin receiver through"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(marked, "the edge says it proxied");
    let d = t.delivery(&id).await;
    assert!(
        d["trace"]
            .to_string()
            .contains("passed through by the edge"),
        "{d}"
    );
    assert!(
        d["trace"].to_string().contains("matched config.public_key"),
        "{d}"
    );

    // Disabled on the host: the edge answers 404 once the push lands (KV reads
    // are cached up to 60 s at the edge).
    let mut config = github_receiver();
    config["status"] = json!("disabled");
    let (status, body) = t
        .api(
            reqwest::Method::PUT,
            &format!("/v1/webhooks/incoming/{receiver}"),
            Some(config),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let fresh = serde_json::to_vec(&pr("opened", 60)).unwrap();
    let fresh_sig = github_signature(&fresh);
    until(
        "the edge to refuse the disabled receiver",
        Duration::from_secs(75),
        || async {
            post(&client, &hook, "after-disable", &fresh, &fresh_sig)
                .await
                .0
                == 404
        },
    )
    .await;
}

/// The host's `/v1/edge/ingest` on its own: only the edge's signature, fresh,
/// gets an event in, and the edge's at-least-once retries are deduped.
#[tokio::test]
async fn the_hosts_edge_endpoint_checks_signatures_and_dedupes() {
    use hmac::{Hmac, Mac};
    let t = TestHost::start_with(&[("HOOKGATE_EDGE_FORWARD_KEY", FORWARD)]).await;
    let receiver = t.create(github_receiver()).await;
    let body = serde_json::to_vec(&pr("opened", 42)).unwrap();
    let event = json!({
        "edge_delivery_id": "edg_0123",
        "receiver_id": receiver,
        "method": "POST",
        "url": "https://edge.example/hooks/x",
        "headers": [["content-type", "YXBwbGljYXRpb24vanNvbg=="]],
        "body": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &body),
        "remote_addr": "203.0.113.7",
        "received_at": 1_795_000_000_000_i64,
        "verified_at": 1_795_000_000_001_i64,
        "sandbox": "pr-42",
        "plan": [{"rule": 0, "action": 0, "spec": {"action_type": "ensure_sandbox", "template": {"image": "echo"}}}],
        "trace": [],
    })
    .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |key: &str, ts: u64, body: &str| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{ts}.{body}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let send = |ts: u64, sig: String| {
        let request = t
            .client
            .post(t.url("/v1/edge/ingest"))
            .header("x-hookgate-edge-timestamp", ts.to_string())
            .header("x-hookgate-edge-signature", sig)
            .body(event.clone());
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = send(now, sign(FORWARD, now, &event)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["data"]["status"], "accepted");
    let (status, again) = send(now, sign(FORWARD, now, &event)).await;
    assert_eq!(status, 200);
    assert_eq!(again["data"]["status"], "duplicate");
    assert_eq!(again["data"]["delivery_id"], first["data"]["delivery_id"]);
    let (status, body) = send(now, sign("another-key-0123456789", now, &event)).await;
    assert_eq!(status, 401, "{body}");
    let old = now - 3600;
    let (status, body) = send(old, sign(FORWARD, old, &event)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("300 s"), "{body}");
    // Unsigned, and signed but malformed: refused, precisely.
    let (status, body) = crate::support::answer(
        t.client
            .post(t.url("/v1/edge/ingest"))
            .body(event.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let junk = r#"{"edge_delivery_id": 7}"#;
    let (status, body) = crate::support::answer(
        t.client
            .post(t.url("/v1/edge/ingest"))
            .header("x-hookgate-edge-timestamp", now.to_string())
            .header("x-hookgate-edge-signature", sign(FORWARD, now, junk))
            .body(junk)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("edge event: "),
        "{body}"
    );
    assert_eq!(t.stored(&receiver).await, 1);
    let d = t
        .settled(first["data"]["delivery_id"].as_str().unwrap())
        .await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(
        t.plane().calls(),
        vec![hookgate::sandbox::memory::Call::Ensure("pr-42".into())]
    );

    // A host with no edge configured has no such endpoint.
    let plain = TestHost::start().await;
    let resp = plain
        .client
        .post(plain.url("/v1/edge/ingest"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

/// Config pushes: every change reaches the edge's admin route with the admin
/// token, and each start pushes again what exists and what was deleted lately.
#[tokio::test]
async fn receiver_changes_are_pushed_and_made_good_at_start() {
    use std::sync::{Arc, Mutex};
    /// (method, path, authorization) of each request the fake edge received.
    type Pushes = Arc<Mutex<Vec<(String, String, Option<String>)>>>;
    let seen: Pushes = Arc::default();
    let record = Arc::clone(&seen);
    let fake_edge = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let record = Arc::clone(&record);
        async move {
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            record.lock().unwrap().push((
                req.method().to_string(),
                req.uri().path().to_owned(),
                auth,
            ));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, fake_edge).await });
    let t = TestHost::start_with(&[
        ("HOOKGATE_EDGE_URL", &url),
        ("HOOKGATE_EDGE_ADMIN_TOKEN", ADMIN),
    ])
    .await;
    let kept = t.create(github_receiver()).await;
    let gone = t.create(github_receiver()).await;
    let (status, _) = t
        .api(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/incoming/{gone}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let count = |method: &str, id: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(m, p, a)| {
                m == method
                    && *p == format!("/_hookgate/receivers/{id}")
                    && a.as_deref() == Some(&format!("Bearer {ADMIN}"))
            })
            .count()
    };
    until(
        "the changes to reach the edge",
        Duration::from_secs(10),
        || async {
            count("PUT", &kept) == 1 && count("PUT", &gone) == 1 && count("DELETE", &gone) == 1
        },
    )
    .await;
    let t = t.restart().await;
    until(
        "the start to push again",
        Duration::from_secs(10),
        || async { count("PUT", &kept) == 2 && count("DELETE", &gone) == 2 },
    )
    .await;
    assert_eq!(count("PUT", &gone), 1, "a deleted receiver is not put back");
    drop(t);
}

/// Regression (the trust issue): the edge endpoint read a whole body (up to
/// 48 MiB, with no deadline) before looking at anything. A stale timestamp is
/// refused before the body, and a stalled body is cut off at the deadline.
#[tokio::test]
async fn the_edge_endpoint_reads_nothing_it_need_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestHost::start_with(&[
        ("HOOKGATE_EDGE_FORWARD_KEY", FORWARD),
        ("HOOKGATE_LIMITS_BODY_TIMEOUT_SECONDS", "3"),
    ])
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Headers that promise 45 MiB, and no body at all.
    let head = |timestamp: &str| {
        format!(
            "POST /v1/edge/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             x-hookgate-edge-timestamp: {timestamp}\r\nx-hookgate-edge-signature: 00\r\n\
             Content-Length: {}\r\n\r\n",
            45 << 20
        )
    };
    let answer = |request: String| {
        let addr = t.host.addr;
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("no answer within 5 s")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
    };
    for stale in [i64::MIN.to_string(), (now - 3600).to_string()] {
        let text = answer(head(&stale)).await;
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
        assert!(text.contains("more than the 300 s allowed"), "{text}");
    }
    let text = answer(head(&now.to_string())).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body not received within 3 s"), "{text}");
    // Eight forwards stalled mid-body hold every read; the ninth is told to
    // retry at once instead of adding its body to the host's memory.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(t.host.addr).await.unwrap();
        s.write_all(head(&now.to_string()).as_bytes())
            .await
            .unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = answer(head(&now.to_string())).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("too many edge events being read"), "{text}");
    drop(stalled);
}
