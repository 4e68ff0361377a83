//! The `hookgate` binary killed and restarted: every acknowledged delivery survives
//! SIGKILL and runs exactly once as the sandbox sees it; SIGTERM drains and exits 0.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::*;

const TOKEN: &str = "hg_test_admin_token_for_crash_tests";

struct Server {
    child: Child,
    base: String,
    dir: std::path::PathBuf,
    port: u16,
}

impl Server {
    /// Runs `hookgate serve` in `dir` with the default, relative data directory
    /// (`./.hookgate`), as README's run command does.
    fn start(dir: &std::path::Path, port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .arg("serve")
            .current_dir(dir)
            .env_remove("HOOKGATE_DATA_DIR")
            .env("HOOKGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKGATE_ADMIN_TOKEN", TOKEN)
            .env("HOOKGATE_RUNNER_BACKOFF_INITIAL_MS", "50")
            .env("HOOKGATE_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hookgate serve");
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir: dir.to_owned(),
            port,
        };
        crate::support::wait_listening(port, Duration::from_secs(20), "hookgate serve");
        server
    }

    fn restart(mut self) -> Self {
        let _ = self.child.wait();
        Server::start(&self.dir.clone(), self.port)
    }
}

async fn api(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    crate::support::answer(resp).await
}

/// the GitHub receiver of docs/api.md, every event ensuring an echo sandbox and
/// delivering to it; returns the receiver id.
async fn create_echo_receiver(client: &reqwest::Client, base: &str) -> String {
    let mut receiver = github_receiver();
    receiver["rules"] = json!([{"actions": [
        {"action_type": "ensure_sandbox", "template": {"image": "echo"}},
        {"action_type": "deliver_to_port", "port": 3000}
    ]}]);
    let (status, created) = api(
        client,
        base,
        reqwest::Method::POST,
        "/v1/webhooks/incoming",
        Some(receiver),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created["data"]["id"].as_str().unwrap().to_owned()
}

/// The delivery ids the echo sandbox recorded, with how often each arrived.
async fn echo_seen(client: &reqwest::Client, base: &str, sandbox: &str) -> BTreeMap<String, usize> {
    let (_, s) = api(
        client,
        base,
        reqwest::Method::GET,
        &format!("/v1/sandboxes/{sandbox}"),
        None,
    )
    .await;
    let port = s["data"]["ports"]["3000"].as_u64().expect("sandbox port");
    let records: Vec<Value> = client
        .get(format!("http://127.0.0.1:{port}/_echo/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut seen = BTreeMap::new();
    for r in records {
        let id = r["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == "x-hookgate-delivery-id")
            .map(|h| h[1].as_str().unwrap().to_owned())
            .unwrap();
        // The body arrives byte for byte.
        let body = base64::engine::general_purpose::STANDARD
            .decode(r["body"].as_str().unwrap())
            .unwrap();
        assert!(serde_json::from_slice::<Value>(&body).is_ok());
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

async fn kill_sandboxes(client: &reqwest::Client, base: &str) {
    let (_, list) = api(client, base, reqwest::Method::GET, "/v1/sandboxes", None).await;
    for s in list["data"]["sandboxes"].as_array().into_iter().flatten() {
        if let Some(pid) = s["pid"].as_i64() {
            let _ = killpg(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL);
        }
    }
}

async fn settle_all(client: &reqwest::Client, base: &str, ids: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in ids {
        loop {
            let (status, d) = api(
                client,
                base,
                reqwest::Method::GET,
                &format!("/v1/deliveries/{id}"),
                None,
            )
            .await;
            assert_eq!(
                status, 200,
                "acked delivery {id} is missing after the restart"
            );
            match d["data"]["status"].as_str() {
                Some("succeeded") => break,
                Some("pending") if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await
                }
                other => panic!("delivery {id} ended {other:?}: {}", d["data"]),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_loses_nothing_and_runs_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start(dir.path(), port);
    let client = reqwest::Client::new();
    let id = create_echo_receiver(&client, &server.base).await;

    // Four senders stream unique deliveries; the server is killed mid-stream.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for w in 0..4 {
        let (client, base, id) = (client.clone(), server.base.clone(), id.clone());
        let (acked, sent, stop) = (acked.clone(), sent.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let body = serde_json::to_vec(&json!({"action": "opened", "pull_request": {"number": 7}, "seq": format!("{w}-{n}")})).unwrap();
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let resp = client
                    .post(format!("{base}/hooks/{id}"))
                    .header("X-GitHub-Delivery", format!("crash-{w}-{n}"))
                    .header("X-Hub-Signature-256", github_signature(&body))
                    .timeout(Duration::from_secs(2))
                    .body(body)
                    .send()
                    .await;
                if let Ok(resp) = resp {
                    if resp.status().as_u16() == 202 {
                        let v: Value = resp.json().await.unwrap_or(Value::Null);
                        if let Some(d) = v["data"]["delivery_id"].as_str() {
                            acked.lock().unwrap().insert(d.to_owned());
                        }
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 150 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    let killed_at = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked: BTreeSet<String> = acked.lock().unwrap().clone();
    assert!(acked.len() >= killed_at);
    assert!(
        sent.load(std::sync::atomic::Ordering::Relaxed) > acked.len(),
        "some requests were cut off by the kill"
    );

    let server = server.restart();
    settle_all(&client, &server.base, &acked).await;
    let seen = echo_seen(&client, &server.base, "pr-7").await;
    for id in &acked {
        assert!(
            seen.contains_key(id),
            "acked delivery {id} never reached the sandbox"
        );
    }
    // Deduped on X-Hookgate-Delivery-Id, the sandbox saw each delivery once; at most
    // the one forward in flight at the kill arrived a second time.
    let repeats: usize = seen.values().map(|n| n - 1).sum();
    assert!(repeats <= 1, "{repeats} repeated forwards: {seen:?}");
    let (_, history) = api(
        &client,
        &server.base,
        reqwest::Method::GET,
        &format!("/v1/webhooks/incoming/{id}/deliveries?limit=1"),
        None,
    )
    .await;
    let total = history["data"]["pagination"]["total"].as_u64().unwrap() as usize;
    assert!(
        total >= acked.len() && total <= acked.len() + 4,
        "stored {total}, acked {}",
        acked.len()
    );
    eprintln!(
        "acked {} of {} sent; stored {total}; sandbox saw {} distinct, {repeats} repeated",
        acked.len(),
        sent.load(std::sync::atomic::Ordering::Relaxed),
        seen.len()
    );

    kill_sandboxes(&client, &server.base).await;
    let mut server = server;
    server.child.kill().unwrap();
    let _ = server.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(dir.path(), port);
    let client = reqwest::Client::new();
    let id = create_echo_receiver(&client, &server.base).await;
    let mut acked = BTreeSet::new();
    for n in 0..20 {
        let body =
            serde_json::to_vec(&json!({"action": "opened", "pull_request": {"number": 8}, "n": n}))
                .unwrap();
        let resp = client
            .post(format!("{}/hooks/{id}", server.base))
            .header("X-GitHub-Delivery", format!("term-{n}"))
            .header("X-Hub-Signature-256", github_signature(&body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let v: Value = resp.json().await.unwrap();
        acked.insert(v["data"]["delivery_id"].as_str().unwrap().to_owned());
    }
    kill(
        Pid::from_raw(i32::try_from(server.child.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(35),
            "did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    // Whatever the drain did not finish, the next start does.
    let server = server.restart();
    settle_all(&client, &server.base, &acked).await;
    let seen = echo_seen(&client, &server.base, "pr-8").await;
    assert!(acked.iter().all(|d| seen.contains_key(d)));
    kill_sandboxes(&client, &server.base).await;
    let mut server = server;
    server.child.kill().unwrap();
    let _ = server.child.wait();
}
