//! `hookgate-load`: the receiver's throughput and ack latency, side by side with
//! the ceiling and a peer, in one run on one machine.
//!
//! Targets, each a separate process driven by the same generator:
//! * `bare-axum` — an axum handler that answers 200 to anything: the most any
//!   HTTP server can do on this machine;
//! * `hookgate` — `hookgate serve`, the GitHub receiver of docs/api.md (HMAC-SHA256),
//!   every delivery unique and durably committed before its 202;
//! * `webhook` — adnanh/webhook (Debian's `webhook` package) with a
//!   `payload-hmac-sha256` trigger rule, if it is installed.
//!
//! Every request is signed and unique (fresh `X-GitHub-Delivery` and body), built
//! before timing starts. Run through `scripts/bench ingest`.
//!
//! `hookgate-load edge` instead measures the edge Worker's ack (in local workerd,
//! through `wrangler dev`) beside the host's, at the same concurrency, and the
//! Worker's CPU per request from workerd's own CPU time. Run through
//! `scripts/bench edge`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hmac::{Hmac, Mac};
use serde_json::json;

const SECRET: &str = "load-test-secret";
const TOKEN: &str = "hg_load_generator_admin_token";

struct Options {
    concurrency: usize,
    seconds: u64,
    body_bytes: usize,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-bare") {
        let port: u16 = args.get(1).context("serve-bare <port>")?.parse()?;
        return serve_bare(port);
    }
    let edge = args.first().map(String::as_str) == Some("edge");
    let mut opts = Options {
        concurrency: if edge { 8 } else { 32 },
        seconds: 10,
        body_bytes: 1024,
    };
    let mut it = args.iter().skip(usize::from(edge));
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .context("missing value")
                .and_then(|v| v.parse::<u64>().context("not a number"))
        };
        match a.as_str() {
            "--concurrency" => opts.concurrency = usize::try_from(val()?)?,
            "--seconds" => opts.seconds = val()?,
            "--body-bytes" => opts.body_bytes = usize::try_from(val()?)?,
            other => {
                bail!("unknown argument {other}; use --concurrency N --seconds S --body-bytes B")
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if edge {
        runtime.block_on(run_edge(opts))
    } else {
        runtime.block_on(run(opts))
    }
}

fn serve_bare(port: u16) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = axum::Router::new().fallback(|| async { "ok" });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_listening(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on port {port}")
}

struct Target {
    name: &'static str,
    url: String,
    child: Child,
}

impl Drop for Target {
    fn drop(&mut self) {
        // SIGTERM first: wrangler stops the workerd it started.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("no parent dir")?.join(name);
    if !path.exists() {
        bail!(
            "{} not found beside hookgate-load (build it with --release)",
            path.display()
        );
    }
    Ok(path)
}

async fn start_hookgate(dir: &Path) -> Result<Target> {
    let port = free_port()?;
    let child = Command::new(sibling("hookgate")?)
        .arg("serve")
        .env("HOOKGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKGATE_DATA_DIR", dir)
        .env("HOOKGATE_ADMIN_TOKEN", TOKEN)
        .env("HOOKGATE_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting hookgate serve")?;
    wait_listening(port)?;
    // the GitHub receiver of docs/api.md; its rules match no benchmark event, so the
    // measurement is the ack path (verify, dedupe, durable commit), not sandboxes.
    let receiver = json!({
        "name": "load",
        "auth": {"auth_type": "provider", "provider": "github", "secret": {"name": "gh", "value": SECRET}},
        "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "load"},
        "rules": [{"when": {"json_path": "$.action", "equals": "closed"}, "actions": [{"action_type": "delete_sandbox"}]}]
    });
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/webhooks/incoming"))
        .bearer_auth(TOKEN)
        .json(&receiver)
        .send()
        .await?
        .json()
        .await?;
    let id = resp["data"]["id"]
        .as_str()
        .context("creating the receiver")?
        .to_owned();
    Ok(Target {
        name: "hookgate",
        url: format!("http://127.0.0.1:{port}/hooks/{id}"),
        child,
    })
}

fn start_bare() -> Result<Target> {
    let port = free_port()?;
    let child = Command::new(std::env::current_exe()?)
        .args(["serve-bare", &port.to_string()])
        .spawn()
        .context("starting the bare axum server")?;
    wait_listening(port)?;
    Ok(Target {
        name: "bare-axum",
        url: format!("http://127.0.0.1:{port}/hooks/x"),
        child,
    })
}

fn start_webhook(dir: &Path) -> Result<Option<Target>> {
    let Ok(path) = which("webhook") else {
        return Ok(None);
    };
    let port = free_port()?;
    let hooks = json!([{
        "id": "bench",
        "execute-command": "/bin/true",
        "response-message": "ok",
        "trigger-rule": {"match": {
            "type": "payload-hmac-sha256",
            "secret": SECRET,
            "parameter": {"source": "header", "name": "X-Hub-Signature-256"}
        }}
    }]);
    let file = dir.join("hooks.json");
    std::fs::write(&file, hooks.to_string())?;
    let child = Command::new(path)
        .args([
            "-hooks",
            &file.display().to_string(),
            "-ip",
            "127.0.0.1",
            "-port",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting webhook")?;
    wait_listening(port)?;
    Ok(Some(Target {
        name: "webhook 2.8",
        url: format!("http://127.0.0.1:{port}/hooks/bench"),
        child,
    }))
}

fn which(program: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .context("not on PATH")
}

/// Signed, unique requests: (delivery id, body, signature header).
fn requests(n: usize, body_bytes: usize, salt: &str) -> Vec<(String, Vec<u8>, String)> {
    (0..n)
        .map(|i| {
            let delivery = format!("{salt}-{i}");
            let mut body = json!({"action": "opened", "pull_request": {"number": 42}, "delivery": delivery, "pad": ""})
                .to_string()
                .into_bytes();
            let pad = body_bytes.saturating_sub(body.len());
            body.truncate(body.len() - 2);
            body.extend(std::iter::repeat_n(b'x', pad));
            body.extend_from_slice(b"\"}");
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
            mac.update(&body);
            let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
            (delivery, body, format!("sha256={sig}"))
        })
        .collect()
}

struct Measured {
    requests: usize,
    errors: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
}

async fn drive(target: &Target, opts: &Options, salt: &str) -> Result<Measured> {
    // Enough requests for the whole window at a generous rate; each used once.
    let pool = Arc::new(requests(200_000, opts.body_bytes, salt));
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..opts.concurrency {
        let (pool, next, client, url) = (
            pool.clone(),
            next.clone(),
            client.clone(),
            target.url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((delivery, body, sig)) = pool.get(i) else {
                    break;
                };
                let t0 = Instant::now();
                let resp = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .header("X-GitHub-Event", "pull_request")
                    .header("X-GitHub-Delivery", delivery)
                    .header("X-Hub-Signature-256", sig)
                    .body(body.clone())
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(t0.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Measured {
        requests: all.len(),
        errors,
        seconds,
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

async fn run(opts: Options) -> Result<()> {
    let dir = tempfile::tempdir()?;
    println!(
        "concurrency {}, {} s per target, {}-byte signed bodies, every request unique\n",
        opts.concurrency, opts.seconds, opts.body_bytes
    );
    let mut rows = Vec::new();
    let bare = start_bare()?;
    rows.push((bare.name, drive(&bare, &opts, "bare").await?));
    drop(bare);
    let hookgate = start_hookgate(dir.path()).await?;
    // Warm the receiver cache and the database before measuring.
    let _ = drive(&hookgate, &Options { seconds: 1, ..opts }, "warm").await?;
    rows.push((hookgate.name, drive(&hookgate, &opts, "hookgate").await?));
    let base = hookgate
        .url
        .split("/hooks/")
        .next()
        .unwrap_or_default()
        .to_owned();
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    let stat = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        stat("hookgate_commit_batch_size_sum"),
        stat("hookgate_commit_batch_size_count"),
    );
    if count > 0.0 {
        let busy = stat("hookgate_commit_seconds_sum");
        println!(
            "hookgate group commit: {count:.0} commits, {:.1} writes and {:.2} ms per commit on average\n",
            sum / count,
            1000.0 * busy / count
        );
    }
    drop(hookgate);
    match start_webhook(dir.path())? {
        Some(webhook) => rows.push((webhook.name, drive(&webhook, &opts, "webhook").await?)),
        None => println!("(webhook not installed: apt-get install webhook)\n"),
    }
    let ceiling = rows[0].1.requests as f64 / rows[0].1.seconds;
    println!("| target | requests/s | vs bare axum | p50 ack | p99 ack | errors |");
    println!("|---|---|---|---|---|---|");
    for (name, m) in &rows {
        let rps = m.requests as f64 / m.seconds;
        println!(
            "| {name} | {rps:.0} | {:.0} % | {:.2} ms | {:.2} ms | {} |",
            100.0 * rps / ceiling,
            m.p50.as_secs_f64() * 1000.0,
            m.p99.as_secs_f64() * 1000.0,
            m.errors
        );
    }
    if let (Some((_, h)), Some((_, w))) = (
        rows.iter().find(|r| r.0 == "hookgate"),
        rows.iter().find(|r| r.0.starts_with("webhook")),
    ) {
        let ratio = (h.requests as f64 / h.seconds) / (w.requests as f64 / w.seconds);
        println!("\nhookgate / webhook throughput: {ratio:.1}×");
    }
    Ok(())
}

/// The edge Worker under `wrangler dev`, with the benchmark's receiver pushed to it.
async fn start_edge() -> Result<Target> {
    let root = std::env::current_dir()?;
    let wrangler = root.join("edge/node_modules/.bin/wrangler");
    if !wrangler.exists() {
        bail!("{} is missing: run scripts/setup-edge", wrangler.display());
    }
    let port = free_port()?;
    let state = std::env::temp_dir().join(format!("hookgate-load-edge-{port}"));
    let admin = "load-edge-admin-token";
    let child = Command::new(&wrangler)
        .args(["dev", "--ip", "127.0.0.1", "--port", &port.to_string()])
        .arg("--persist-to")
        .arg(&state)
        .args(["--var", &format!("EDGE_ADMIN_TOKEN:{admin}")])
        .args([
            "--var",
            "EDGE_SECRETS_KEY:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ])
        .args(["--var", "EDGE_FORWARD_KEY:load-edge-forward-key"])
        // Nothing listens there: forwarding backs off and stays out of the ack path.
        .args(["--var", "HOST_URL:http://127.0.0.1:9"])
        .env("WRANGLER_SEND_METRICS", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting wrangler dev")?;
    let deadline = Instant::now() + Duration::from_secs(900);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("wrangler dev did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let receiver = json!({
        "name": "load",
        "auth": {"auth_type": "provider", "provider": "github", "secret": {"name": "gh", "value": SECRET}},
        "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "load"},
        "rules": [{"when": {"json_path": "$.action", "equals": "closed"}, "actions": [{"action_type": "delete_sandbox"}]}]
    });
    let resp = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{port}/_hookgate/receivers/load"))
        .bearer_auth(admin)
        .json(&json!({"status": "active", "config": receiver}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("the edge refused the receiver: {}", resp.text().await?);
    }
    Ok(Target {
        name: "edge (workerd)",
        url: format!("http://127.0.0.1:{port}/hooks/load"),
        child,
    })
}

/// CPU seconds used so far by every workerd process (user + system).
fn workerd_cpu_seconds() -> f64 {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((name, rest)) = stat.split_once(" (").and_then(|(_, r)| r.split_once(") ")) else {
            continue;
        };
        if name != "workerd" {
            continue;
        }
        let fields: Vec<&str> = rest.split(' ').collect();
        // After the name: state is field 3; utime and stime are fields 14 and 15.
        let field = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(14) + field(15);
    }
    // Linux reports in clock ticks of 1/100 s on every supported platform.
    ticks as f64 / 100.0
}

async fn run_edge(opts: Options) -> Result<()> {
    let dir = tempfile::tempdir()?;
    println!(
        "concurrency {}, {} s per target, {}-byte signed bodies, every request unique\n",
        opts.concurrency, opts.seconds, opts.body_bytes
    );
    let hookgate = start_hookgate(dir.path()).await?;
    let _ = drive(&hookgate, &Options { seconds: 1, ..opts }, "warm").await?;
    let host = drive(&hookgate, &opts, "host").await?;
    drop(hookgate);
    let edge = start_edge().await?;
    let _ = drive(&edge, &Options { seconds: 2, ..opts }, "edge-warm").await?;
    let cpu_before = workerd_cpu_seconds();
    let at_edge = drive(&edge, &opts, "edge").await?;
    let cpu = workerd_cpu_seconds() - cpu_before;
    drop(edge);
    println!("| target | requests/s | p50 ack | p99 ack | errors |");
    println!("|---|---|---|---|---|");
    for (name, m) in [
        ("hookgate (host)", &host),
        ("edge (local workerd)", &at_edge),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {} |",
            m.requests as f64 / m.seconds,
            m.p50.as_secs_f64() * 1000.0,
            m.p99.as_secs_f64() * 1000.0,
            m.errors
        );
    }
    if at_edge.requests > 0 {
        println!(
            "\nworkerd CPU per accepted request at the edge: {:.2} ms ({:.1} s of CPU for {} requests)",
            1000.0 * cpu / at_edge.requests as f64,
            cpu,
            at_edge.requests
        );
    }
    Ok(())
}
