//! The action runner: runs each accepted delivery's planned actions against its
//! sandbox, one delivery at a time per sandbox, in arrival order, sandboxes in
//! parallel.
//!
//! Each sandbox with work has one worker task fed by a queue of delivery ids.
//! Progress is saved after every action (which action is next, attempts, the
//! trace), so after a crash the worker resumes at the first action not recorded as
//! done. The action that was running when the process died runs again; every
//! action is idempotent at the sandbox (ensure never recreates, pause/resume/delete
//! converge) and forwarded requests carry `X-Hookgate-Delivery-Id`, so a repeat is
//! never visible as a second effect. A failing action is retried with exponential
//! backoff and jitter up to `runner.max_attempts`; while it waits, later deliveries
//! for the same sandbox wait too, so order holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookgate_core::SandboxName;
use hookgate_core::config::{Action, AutoResume, Payload};
use hookgate_core::explain::{Outcome, Stage, Step};
use hookgate_core::request::is_credential;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::ids;
use crate::sandbox::{Forward, PlaneError, SandboxPlane};
use crate::settings;
use crate::store::{DeliveryRow, Progress, Store};

/// Headers never forwarded into a sandbox: hop-by-hop ones (RFC 9110 §7.6.1) and
/// those the forward recomputes.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
];

#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

struct Inner {
    store: Store,
    plane: Arc<dyn SandboxPlane>,
    plugins: Arc<crate::plugins::Plugins>,
    settings: settings::Runner,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<String>>>,
    tasks: Mutex<JoinSet<()>>,
    stop: watch::Sender<bool>,
}

/// An action's failure: whether retrying may help, and what happened.
#[derive(Debug)]
struct Failed {
    retryable: bool,
    message: String,
}

impl From<PlaneError> for Failed {
    fn from(e: PlaneError) -> Self {
        Self {
            retryable: e.retryable(),
            message: e.to_string(),
        }
    }
}

impl Runner {
    pub fn new(
        store: Store,
        plane: Arc<dyn SandboxPlane>,
        plugins: Arc<crate::plugins::Plugins>,
        settings: settings::Runner,
    ) -> Self {
        let (stop, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                store,
                plane,
                plugins,
                settings,
                queues: Mutex::new(HashMap::new()),
                tasks: Mutex::new(JoinSet::new()),
                stop,
            }),
        }
    }

    /// Queues every delivery left pending by a previous run, oldest first.
    pub async fn resume_pending(&self) -> Result<usize, crate::store::StoreError> {
        let pending = self.inner.store.pending().await?;
        let n = pending.len();
        for d in pending {
            if let Some(sandbox) = d.sandbox {
                self.submit(d.id, sandbox);
            }
        }
        Ok(n)
    }

    /// Queues a delivery behind earlier ones for its sandbox.
    pub fn submit(&self, delivery_id: String, sandbox: String) {
        if *self.inner.stop.borrow() {
            // Stopping: the delivery stays pending in the store for the next start.
            return;
        }
        metrics::gauge!("hookgate_queue_depth").increment(1.0);
        let mut queues = lock(&self.inner.queues);
        if let Some(tx) = queues.get(&sandbox)
            && tx.send(delivery_id.clone()).is_ok()
        {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(delivery_id);
        queues.insert(sandbox.clone(), tx);
        let inner = Arc::clone(&self.inner);
        let mut tasks = lock(&self.inner.tasks);
        // Reap retired workers so the set does not grow with every sandbox seen.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(worker(inner, sandbox, rx));
    }

    /// Stops taking work and waits up to `deadline` for actions in flight; what is
    /// not finished stays pending and resumes on the next start.
    pub async fn shutdown(&self, deadline: Duration) {
        let _ = self.inner.stop.send(true);
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        let drained = tokio::time::timeout(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "shutdown deadline reached; unfinished actions resume on the next start"
            );
            tasks.abort_all();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Works through one sandbox's queue, then retires.
async fn worker(inner: Arc<Inner>, sandbox: String, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut stop = inner.stop.subscribe();
    loop {
        let next = match rx.try_recv() {
            Ok(id) => Some(id),
            Err(_) => {
                // Retire only under the lock, so a concurrent submit either sees
                // this queue gone or has its id seen here.
                let mut queues = lock(&inner.queues);
                match rx.try_recv() {
                    Ok(id) => Some(id),
                    Err(_) => {
                        queues.remove(&sandbox);
                        None
                    }
                }
            }
        };
        let Some(id) = next else { return };
        metrics::gauge!("hookgate_queue_depth").decrement(1.0);
        if *stop.borrow() {
            return;
        }
        if let Err(e) = run_delivery(&inner, &id, &mut stop).await {
            tracing::error!(delivery_id = %id, error = %e, "running a delivery failed; it stays pending");
        }
    }
}

/// Runs a delivery's remaining actions, saving progress after each.
async fn run_delivery(
    inner: &Inner,
    id: &str,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), crate::store::StoreError> {
    let Some(mut d) = inner.store.delivery(id.to_owned()).await? else {
        return Ok(());
    };
    if d.status != "pending" {
        return Ok(());
    }
    let Some(sandbox) = d
        .sandbox
        .as_deref()
        .and_then(|s| SandboxName::parse(s).ok())
    else {
        return Ok(());
    };
    while d.progress < d.plan.len() {
        let planned = d.plan[d.progress].clone();
        let label = format!(
            "action {} of {} ({}, rule {})",
            d.progress + 1,
            d.plan.len(),
            planned
                .spec
                .get("action_type")
                .and_then(|v| v.as_str())
                .unwrap_or("?"),
            planned.rule + 1
        );
        let action = match Action::from_json(&planned.spec) {
            Ok(a) => a,
            Err(e) => {
                let msg = format!("{label}: stored action is unreadable: {e}");
                d.trace
                    .push(Step::new(Stage::Action, Outcome::Fail, msg.clone()));
                return finish(inner, &mut d, "failed", Some(msg)).await;
            }
        };
        // Wait out a backoff left by an earlier attempt (also across restarts).
        if let Some(at) = d.next_attempt_at {
            let wait = at - ids::now_millis();
            if wait > 0 {
                let stopped = tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))) => false,
                    () = crate::stopped(stop) => true,
                };
                if stopped {
                    return Ok(());
                }
            }
        }
        d.attempts += 1;
        let started = Instant::now();
        let result = execute(inner, &action, &sandbox, &d).await;
        let elapsed = started.elapsed();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!("hookgate_action_duration_seconds", "action" => action.kind(), "outcome" => outcome)
            .record(elapsed.as_secs_f64());
        let ms = elapsed.as_millis();
        match result {
            Ok(detail) => {
                d.trace.push(Step::new(
                    Stage::Action,
                    Outcome::Pass,
                    format!("{label}: attempt {}, {ms} ms: {detail}", d.attempts),
                ));
                tracing::info!(delivery_id = %d.id, sandbox = %sandbox, action = action.kind(), "action done");
                d.progress += 1;
                d.attempts = 0;
                d.last_error = None;
                d.next_attempt_at = None;
                let status = if d.progress == d.plan.len() {
                    "succeeded"
                } else {
                    "pending"
                };
                save(inner, &d, status).await?;
            }
            Err(f) => {
                let last = !f.retryable || d.attempts >= inner.settings.max_attempts;
                let msg = format!("{label}: attempt {}, {ms} ms: {}", d.attempts, f.message);
                tracing::warn!(delivery_id = %d.id, sandbox = %sandbox, action = action.kind(), error = %f.message, "action failed");
                d.last_error = Some(msg.clone());
                if last {
                    let why = if f.retryable {
                        format!("{msg}; giving up after {} attempts", d.attempts)
                    } else {
                        format!("{msg}; not retried")
                    };
                    d.trace
                        .push(Step::new(Stage::Action, Outcome::Fail, why.clone()));
                    for rest in d.progress + 1..d.plan.len() {
                        d.trace.push(Step::new(
                            Stage::Action,
                            Outcome::Skip,
                            format!(
                                "action {} of {}: skipped, an earlier action failed",
                                rest + 1,
                                d.plan.len()
                            ),
                        ));
                    }
                    return finish(inner, &mut d, "failed", Some(why)).await;
                }
                let delay = backoff(&inner.settings, d.attempts);
                d.next_attempt_at =
                    Some(ids::now_millis() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                d.trace.push(Step::new(
                    Stage::Action,
                    Outcome::Fail,
                    format!("{msg}; retrying in {} ms", delay.as_millis()),
                ));
                save(inner, &d, "pending").await?;
            }
        }
        if *stop.borrow() {
            return Ok(());
        }
    }
    Ok(())
}

async fn save(
    inner: &Inner,
    d: &DeliveryRow,
    status: &str,
) -> Result<(), crate::store::StoreError> {
    inner
        .store
        .save_progress(
            d.id.clone(),
            Progress {
                status: status.to_owned(),
                progress: d.progress,
                attempts: d.attempts,
                last_error: d.last_error.clone(),
                next_attempt_at: d.next_attempt_at,
                trace: d.trace.clone(),
            },
            ids::now_millis(),
        )
        .await
}

async fn finish(
    inner: &Inner,
    d: &mut DeliveryRow,
    status: &str,
    error: Option<String>,
) -> Result<(), crate::store::StoreError> {
    d.last_error = error;
    d.next_attempt_at = None;
    metrics::counter!("hookgate_deliveries_finished_total", "status" => status.to_owned())
        .increment(1);
    save(inner, d, status).await
}

/// Exponential backoff with equal jitter: half the step fixed, half random.
fn backoff(s: &settings::Runner, attempt: u32) -> Duration {
    let base = s
        .backoff_initial_ms
        .saturating_mul(1 << attempt.saturating_sub(1).min(20));
    let capped = base.min(s.backoff_max_seconds.saturating_mul(1000));
    let half = capped / 2;
    Duration::from_millis(half + (half as f64 * ids::jitter()) as u64)
}

async fn execute(
    inner: &Inner,
    action: &Action,
    sandbox: &SandboxName,
    d: &DeliveryRow,
) -> Result<String, Failed> {
    let plane = &inner.plane;
    match action {
        Action::EnsureSandbox { template } => {
            let ensured = plane.ensure(sandbox, template).await?;
            Ok(format!(
                "sandbox {sandbox} {}",
                match ensured {
                    crate::sandbox::Ensured::Created => "created",
                    crate::sandbox::Ensured::Existed => "already existed",
                }
            ))
        }
        Action::ResumeSandbox => plane
            .resume(sandbox)
            .await
            .map(|()| format!("sandbox {sandbox} resumed"))
            .map_err(Into::into),
        Action::PauseSandbox => plane
            .pause(sandbox)
            .await
            .map(|()| format!("sandbox {sandbox} paused"))
            .map_err(Into::into),
        Action::DeleteSandbox => plane
            .delete(sandbox)
            .await
            .map(|()| format!("sandbox {sandbox} deleted"))
            .map_err(Into::into),
        Action::DeliverToPort(spec) => {
            let forward = forward(d, spec);
            let first = plane.deliver(sandbox, spec.port, forward.clone()).await;
            let (response, woke) = match first {
                Err(PlaneError::Paused(_)) if spec.auto_resume == AutoResume::OnActivity => {
                    plane.resume(sandbox).await?;
                    let response = plane.deliver(sandbox, spec.port, forward).await?;
                    (response, Some("deliver_to_port.auto_resume"))
                }
                Err(PlaneError::Paused(name)) => {
                    return Err(Failed {
                        retryable: false,
                        message: format!(
                            "sandbox {name} is paused, and neither deliver_to_port.auto_resume \
                             nor its lifecycle.auto_resume is on_activity"
                        ),
                    });
                }
                Ok(response) if response.resumed => (response, Some("lifecycle.auto_resume")),
                other => (other?, None),
            };
            let mut summary = format!("port {} answered {}", spec.port, response.status);
            if let Some(by) = woke {
                summary = format!("sandbox {sandbox} was paused, resumed by {by}; {summary}");
            }
            match response.status {
                200..=399 => Ok(summary),
                500..=599 | 408 | 429 => Err(Failed {
                    retryable: true,
                    message: summary,
                }),
                _ => Err(Failed {
                    retryable: false,
                    message: summary,
                }),
            }
        }
        Action::RunScript(script) => {
            let out = plane
                .exec(
                    sandbox,
                    &script.script,
                    Duration::from_secs(script.timeout_seconds),
                )
                .await?;
            if out.exit_code == 0 {
                Ok("script exited 0".to_owned())
            } else {
                Err(Failed {
                    retryable: false,
                    message: format!("script exited {}: {}", out.exit_code, out.tail),
                })
            }
        }
        Action::Plugin(p) => run_plugin(inner, p, sandbox, d).await,
    }
}

/// How long a plugin's delivery to its sandbox may take.
const PLUGIN_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs an action plugin on a blocking thread. Its `sandbox.deliver` import
/// reaches only this delivery's sandbox, through the plane, with the same
/// path rules and hookgate headers as `deliver_to_port`.
async fn run_plugin(
    inner: &Inner,
    p: &hookgate_core::config::PluginAction,
    sandbox: &SandboxName,
    d: &DeliveryRow,
) -> Result<String, Failed> {
    use crate::plugins::{ActionCall, Outcome, WireRequest};
    let call = ActionCall {
        delivery_id: d.id.clone(),
        receiver_id: d.receiver_id.clone(),
        sandbox: sandbox.to_string(),
        request: WireRequest {
            method: d.method.clone(),
            url: d.url.clone(),
            headers: d.headers.clone(),
            body: bytes::Bytes::from(d.body.clone()),
            remote_addr: d.remote_addr.clone(),
            received_at_ms: u64::try_from(d.received_at).unwrap_or(0),
        },
        config: p.config.to_string(),
    };
    let name = p.plugin.clone();
    let plugins = Arc::clone(&inner.plugins);
    let plane = Arc::clone(&inner.plane);
    let target = sandbox.clone();
    let identity = hookgate_headers(d);
    let runtime = tokio::runtime::Handle::current();
    let slot = inner.plugins.slot().await;
    let outcome = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let deliver: crate::plugins::Deliver = Box::new(move |port, path, content_type, body| {
            Action::from_json(
                &json!({"action_type": "deliver_to_port", "port": port, "path": path}),
            )
            .map_err(|e| format!("sandbox.deliver: {e}"))?;
            let mut headers = vec![("Content-Type".to_owned(), content_type.as_bytes().to_vec())];
            headers.extend(identity.iter().cloned());
            let forward = Forward {
                method: "POST".to_owned(),
                path: path.to_owned(),
                headers,
                body: body.into(),
                timeout: PLUGIN_DELIVERY_TIMEOUT,
            };
            runtime
                .block_on(plane.deliver(&target, port, forward))
                .map(|r| (r.status, r.excerpt))
                .map_err(|e| e.to_string())
        });
        plugins.run_action(&name, &call, deliver)
    })
    .await
    .map_err(|e| Failed {
        retryable: true,
        message: format!("plugin {}: {e}", p.plugin),
    })?;
    match outcome {
        Outcome::Success(m) => Ok(format!("plugin {}: {m}", p.plugin)),
        Outcome::Retryable(m) => Err(Failed {
            retryable: true,
            message: format!("plugin {}: {m}", p.plugin),
        }),
        Outcome::Permanent(m) => Err(Failed {
            retryable: false,
            message: format!("plugin {}: {m}", p.plugin),
        }),
    }
}

/// The headers that tell a sandbox which delivery a request belongs to.
fn hookgate_headers(d: &DeliveryRow) -> Vec<(String, Vec<u8>)> {
    let mut headers = vec![
        (
            "X-Hookgate-Delivery-Id".to_owned(),
            d.id.clone().into_bytes(),
        ),
        (
            "X-Hookgate-Receiver".to_owned(),
            d.receiver_id.clone().into_bytes(),
        ),
    ];
    if let Some(s) = &d.sandbox {
        headers.push(("X-Hookgate-Sandbox".to_owned(), s.clone().into_bytes()));
    }
    headers
}

/// The request forwarded for a `deliver_to_port`: the original bytes and content
/// type, or an envelope; hookgate's headers added; hop-by-hop and credential
/// headers dropped unless the action lists them in `forward_headers`.
pub fn forward(d: &DeliveryRow, spec: &hookgate_core::config::DeliverToPort) -> Forward {
    let path = spec.path.clone().unwrap_or_else(|| "/".to_owned());
    let extra = |name: &str| {
        spec.forward_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    };
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let body = match spec.payload {
        Payload::Original => {
            for (name, value) in &d.headers {
                let lower = name.to_ascii_lowercase();
                if HOP_BY_HOP.contains(&lower.as_str()) || lower.starts_with("x-hookgate-") {
                    continue;
                }
                if is_credential(&lower) && !extra(&lower) {
                    continue;
                }
                headers.push((name.clone(), value.clone()));
            }
            bytes::Bytes::from(d.body.clone())
        }
        Payload::Envelope => {
            use base64::Engine;
            let shown: Vec<serde_json::Value> = d
                .headers
                .iter()
                .filter(|(n, _)| !is_credential(n) || extra(n))
                .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
                .collect();
            let body = match std::str::from_utf8(&d.body) {
                Ok(text) => json!({"encoding": "utf-8", "data": text}),
                Err(_) => {
                    json!({"encoding": "base64", "data": base64::engine::general_purpose::STANDARD.encode(&d.body)})
                }
            };
            let envelope = json!({
                "delivery_id": d.id,
                "receiver_id": d.receiver_id,
                "sandbox": d.sandbox,
                "received_at": ids::rfc3339(d.received_at),
                "method": d.method,
                "url": d.url,
                "headers": shown,
                "body": body,
                "replay_of": d.replay_of,
            });
            headers.push(("Content-Type".to_owned(), b"application/json".to_vec()));
            bytes::Bytes::from(envelope.to_string())
        }
    };
    headers.extend(hookgate_headers(d));
    Forward {
        method: "POST".to_owned(),
        path,
        headers,
        body,
        timeout: Duration::from_secs(spec.timeout_seconds),
    }
}
