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
use hookgate_core::config::Action;
use hookgate_core::explain::{Outcome, Stage, Step};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::ids;
use crate::plugins::Plugins;
use crate::sandbox::{PlaneError, SandboxPlane};
use crate::settings;
use crate::signal::stopped;
use crate::store::{DeliveryRow, DeliveryStatus, Progress, Store};

mod actions;
mod forward;

pub use forward::forward;

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
    plugins: Arc<Plugins>,
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
        plugins: Arc<Plugins>,
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
        for (id, sandbox) in pending {
            if let Some(sandbox) = sandbox {
                self.submit(id, sandbox);
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
    if d.status != DeliveryStatus::Pending {
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
                return finish(inner, &mut d, DeliveryStatus::Failed, Some(msg)).await;
            }
        };
        // Wait out a backoff left by an earlier attempt (also across restarts).
        if let Some(at) = d.next_attempt_at {
            let wait = at - ids::now_millis();
            if wait > 0 {
                let stopped = tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))) => false,
                    () = stopped(stop) => true,
                };
                if stopped {
                    return Ok(());
                }
            }
        }
        d.attempts += 1;
        let started = Instant::now();
        let result = actions::execute(inner, &action, &sandbox, &d).await;
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
                if d.progress == d.plan.len() {
                    finish(inner, &mut d, DeliveryStatus::Succeeded, None).await?;
                } else {
                    save(inner, &d, DeliveryStatus::Pending).await?;
                }
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
                    return finish(inner, &mut d, DeliveryStatus::Failed, Some(why)).await;
                }
                let delay = backoff(&inner.settings, d.attempts, ids::jitter());
                d.next_attempt_at =
                    Some(ids::now_millis() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                d.trace.push(Step::new(
                    Stage::Action,
                    Outcome::Fail,
                    format!("{msg}; retrying in {} ms", delay.as_millis()),
                ));
                save(inner, &d, DeliveryStatus::Pending).await?;
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
    status: DeliveryStatus,
) -> Result<(), crate::store::StoreError> {
    inner
        .store
        .save_progress(
            d.id.clone(),
            Progress {
                status,
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
    status: DeliveryStatus,
    error: Option<String>,
) -> Result<(), crate::store::StoreError> {
    d.last_error = error;
    d.next_attempt_at = None;
    metrics::counter!("hookgate_deliveries_finished_total", "status" => status.as_str())
        .increment(1);
    save(inner, d, status).await
}

/// Exponential backoff with equal jitter: the step before retry `attempt` is
/// `min(initial * 2^(attempt-1), max)`; half of it is fixed and half is scaled
/// by `jitter` (0..1), so retries of many deliveries spread out but none comes
/// back sooner than half its step.
fn backoff(s: &settings::Runner, attempt: u32, jitter: f64) -> Duration {
    let base = s
        .backoff_initial_ms
        .saturating_mul(1 << attempt.saturating_sub(1).min(20));
    let capped = base.min(s.backoff_max_seconds.saturating_mul(1000));
    let half = capped / 2;
    Duration::from_millis(half + (half as f64 * jitter.clamp(0.0, 1.0)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(initial_ms: u64, max_seconds: u64) -> settings::Runner {
        settings::Runner {
            max_attempts: 5,
            backoff_initial_ms: initial_ms,
            backoff_max_seconds: max_seconds,
        }
    }

    #[test]
    fn backoff_doubles_keeps_half_fixed_and_stops_at_the_cap() {
        let s = settings(1000, 10);
        let ms = |attempt, jitter| backoff(&s, attempt, jitter).as_millis();
        // Half the step fixed, half scaled by the jitter.
        assert_eq!((ms(1, 0.0), ms(1, 0.5), ms(1, 1.0)), (500, 750, 1000));
        assert_eq!((ms(2, 0.0), ms(2, 1.0)), (1000, 2000));
        assert_eq!((ms(3, 0.0), ms(3, 1.0)), (2000, 4000));
        // 8 s, then the 10 s cap from the fifth attempt on.
        assert_eq!(ms(4, 1.0), 8000);
        assert_eq!((ms(5, 0.0), ms(5, 1.0)), (5000, 10_000));
        assert_eq!((ms(60, 0.0), ms(60, 1.0)), (5000, 10_000));
        // A jitter out of range is clamped, and attempt 0 reads as the first.
        assert_eq!((ms(1, -3.0), ms(1, 7.0), ms(0, 1.0)), (500, 1000, 1000));
    }

    #[test]
    fn backoff_never_overflows() {
        let s = settings(u64::MAX, u64::MAX);
        assert!(backoff(&s, u32::MAX, 1.0) >= Duration::from_millis(u64::MAX / 2));
    }
}
