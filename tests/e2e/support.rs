//! A host on a loopback port with a temporary data directory, and a client that
//! signs like GitHub and checks the envelope.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use hookgate::sandbox::memory::MemoryPlane;
use hookgate::settings::Settings;
use hookgate::{Host, Plane};
use serde_json::{Value, json};

/// Whether to skip a minute-scale test: `SKIP_SLOW_TESTS=1 cargo test` leaves
/// out the edge in workerd and the other suites that take tens of seconds each,
/// for a fast loop while iterating. `scripts/test` (README's test command, and
/// CI) clears the variable, so they always run there. It is named outside
/// `HOOKGATE_*`, which the binary reads as settings and refuses when unknown.
pub fn skip_slow(what: &str) -> bool {
    let quick = std::env::var("SKIP_SLOW_TESTS").is_ok_and(|v| !v.is_empty() && v != "0");
    if quick {
        eprintln!("skipped while SKIP_SLOW_TESTS is set: {what}");
    }
    quick
}

pub const DESIGN_EXAMPLE: &str = include_str!("../../core/tests/data/design-github-example.json");
pub const GITHUB_SECRET: &str = "It's a Secret to Everybody";

/// the GitHub example of docs/api.md with a real secret.
pub fn github_receiver() -> Value {
    let mut v: Value = serde_json::from_str(DESIGN_EXAMPLE).unwrap();
    v["auth"]["secret"]["value"] = json!(GITHUB_SECRET);
    v
}

/// Test settings over an optional settings file.
pub fn settings(dir: &Path, file: Option<&Path>, env: &[(&str, &str)]) -> Settings {
    let mut vars = vec![
        ("HOOKGATE_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("HOOKGATE_DATA_DIR".to_owned(), dir.display().to_string()),
        (
            "HOOKGATE_RUNNER_BACKOFF_INITIAL_MS".to_owned(),
            "20".to_owned(),
        ),
        ("HOOKGATE_SHUTDOWN_DRAIN_SECONDS".to_owned(), "5".to_owned()),
    ];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Settings::load(file, vars).unwrap()
}

/// A test host's data directory. Sandboxes outlive their host on purpose (a
/// restarted host adopts them), so when the test is over, every process working
/// inside the directory is stopped before it is removed.
pub struct DataDir(tempfile::TempDir);

impl DataDir {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let Ok(root) = std::fs::canonicalize(self.0.path()) else {
            return;
        };
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&root))
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

pub struct TestHost {
    pub host: Host,
    /// The in-memory plane, unless the host runs the plane its settings name.
    memory: Option<Arc<MemoryPlane>>,
    pub client: reqwest::Client,
    pub dir: DataDir,
    env: Vec<(String, String)>,
}

impl TestHost {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A host over the in-memory plane.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        Self::launch(Some(Arc::new(MemoryPlane::new())), None, env).await
    }

    /// A host that runs the plane its settings name (the local plane unless
    /// `env` says otherwise), with `toml` as its settings file.
    pub async fn start_configured(toml: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(None, Some(toml), env).await
    }

    async fn launch(
        memory: Option<Arc<MemoryPlane>>,
        toml: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = DataDir(tempfile::tempdir().unwrap());
        if let Some(toml) = toml {
            // Unmapped images run the echo server of the real `hookgate` binary
            // (this test binary is not one).
            let echo = format!(
                "[sandbox]\nfallback_command = [{:?}, \"sandbox\", \"echo\"]\n{toml}",
                env!("CARGO_BIN_EXE_hookgate")
            );
            std::fs::write(dir.path().join("hookgate.toml"), echo).unwrap();
        }
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let host = Self::boot(dir.path(), memory.clone(), &env).await;
        Self {
            host,
            memory,
            client: reqwest::Client::new(),
            dir,
            env,
        }
    }

    async fn boot(dir: &Path, memory: Option<Arc<MemoryPlane>>, env: &[(String, String)]) -> Host {
        let file = dir.join("hookgate.toml");
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let settings = settings(dir, file.exists().then_some(file.as_path()), &env);
        let plane = memory.map_or(Plane::Configured, |m| Plane::Custom(m));
        Host::start(settings, plane).await.unwrap()
    }

    /// The in-memory plane this host drives.
    pub fn plane(&self) -> &MemoryPlane {
        self.memory
            .as_deref()
            .expect("this host runs a configured plane, not the in-memory one")
    }

    /// Stops this host and starts another on the same data directory and settings.
    pub async fn restart(self) -> Self {
        self.restart_with(|| ()).await
    }

    /// [`TestHost::restart`], awaiting `between` while no host is up.
    pub async fn restart_after(self, between: impl std::future::Future<Output = ()>) -> Self {
        let Self {
            host,
            memory,
            client,
            dir,
            env,
        } = self;
        host.stop().await.unwrap();
        between.await;
        let host = Self::boot(dir.path(), memory.clone(), &env).await;
        Self {
            host,
            memory,
            client,
            dir,
            env,
        }
    }

    /// [`TestHost::restart`], running `between` while no host is up.
    pub async fn restart_with(self, between: impl FnOnce()) -> Self {
        self.restart_after(async { between() }).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host.addr)
    }

    /// A management call with the admin token; returns status and JSON body.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.host.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        answer(resp).await
    }

    /// Creates a receiver and returns its id.
    pub async fn create(&self, config: Value) -> String {
        let (status, body) = self
            .api(reqwest::Method::POST, "/v1/webhooks/incoming", Some(config))
            .await;
        assert_eq!(status, 201, "{body}");
        body["data"]["id"].as_str().unwrap().to_owned()
    }

    /// POSTs `body` to a receiver, signed as GitHub signs, with a delivery id.
    pub async fn github(&self, receiver: &str, delivery: &str, body: &Value) -> (u16, Value) {
        self.github_raw(receiver, delivery, serde_json::to_vec(body).unwrap())
            .await
    }

    /// [`TestHost::github`] with the body's exact bytes.
    pub async fn github_raw(&self, receiver: &str, delivery: &str, bytes: Vec<u8>) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(&format!("/hooks/{receiver}")))
            .header("Content-Type", "application/json")
            .header("X-GitHub-Event", "pull_request")
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", github_signature(&bytes))
            .body(bytes)
            .send()
            .await
            .unwrap();
        answer(resp).await
    }

    /// How many deliveries a receiver has stored.
    pub async fn stored(&self, receiver: &str) -> u64 {
        let path = format!("/v1/webhooks/incoming/{receiver}/deliveries");
        let (status, body) = self.api(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body}");
        body["data"]["pagination"]["total"].as_u64().unwrap()
    }

    /// The Prometheus text of `GET /metrics` (admin token required).
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .bearer_auth(&self.host.admin_token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// What the echo server listening on loopback `port` recorded, oldest first.
    pub async fn echo_records(&self, port: u64) -> Vec<Value> {
        self.client
            .get(format!("http://127.0.0.1:{port}/_echo/requests"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The rejection of `receiver` whose full reason contains `needle` (they are
    /// recorded in the background, so this waits a little), or a panic that
    /// lists what was recorded.
    pub async fn rejected_because(&self, receiver: &str, needle: &str) -> Value {
        let path = format!("/v1/webhooks/incoming/{receiver}/rejections?limit=100");
        let mut seen = Value::Null;
        for _ in 0..200 {
            let (status, body) = self.api(reqwest::Method::GET, &path, None).await;
            assert_eq!(status, 200, "{body}");
            seen = body["data"]["rejections"].clone();
            if let Some(r) = seen.as_array().and_then(|list| {
                list.iter()
                    .find(|r| r["reason"].as_str().is_some_and(|why| why.contains(needle)))
            }) {
                return r.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no rejection of {receiver} says {needle:?}: {seen}");
    }

    pub async fn delivery(&self, id: &str) -> Value {
        let (status, body) = self
            .api(reqwest::Method::GET, &format!("/v1/deliveries/{id}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }

    /// Polls a delivery until its status is not `pending`.
    pub async fn settled(&self, id: &str) -> Value {
        for _ in 0..400 {
            let d = self.delivery(id).await;
            if d["status"] != "pending" {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("delivery {id} still pending: {}", self.delivery(id).await);
    }
}

/// A response's status and JSON body (`null` when the body is not JSON).
pub async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A loopback port free at the time of asking, for a process started next.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on loopback `port`.
pub fn wait_listening(port: u16, limit: Duration, what: &str) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on port {port} within {limit:?}");
}

pub fn github_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

pub fn pr(action: &str, number: u64) -> Value {
    json!({"action": action, "number": number, "pull_request": {"number": number}})
}
