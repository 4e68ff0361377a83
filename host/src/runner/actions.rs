//! What each action does at the sandbox plane, and how its outcome reads in the
//! trace: whether it may be retried, and a one-line summary.
//!
//! Every action is idempotent at the sandbox (ensure never recreates,
//! pause/resume/delete converge, forwarded requests carry
//! `X-Hookgate-Delivery-Id`), so running one again after a crash is safe.

use std::sync::Arc;
use std::time::Duration;

use hookgate_core::SandboxName;
use hookgate_core::config::{Action, AutoResume};
use serde_json::json;

use super::forward::{forward, hookgate_headers};
use super::{Failed, Inner};
use crate::sandbox::{Ensured, Forward, PlaneError};
use crate::store::DeliveryRow;

pub(super) async fn execute(
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
                    Ensured::Created => "created",
                    Ensured::Existed => "already existed",
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
    use crate::plugins::{ActionCall, ActionOutcome, WireRequest};
    let call = ActionCall {
        delivery_id: d.id.clone(),
        receiver_id: d.receiver_id.clone(),
        sandbox: sandbox.to_string(),
        request: WireRequest {
            method: d.request.method.clone(),
            url: d.request.url.clone(),
            headers: d.request.headers.clone(),
            body: bytes::Bytes::from(d.request.body.clone()),
            remote_addr: d.request.remote_addr.clone(),
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
        ActionOutcome::Success(m) => Ok(format!("plugin {}: {m}", p.plugin)),
        ActionOutcome::Retryable(m) => Err(Failed {
            retryable: true,
            message: format!("plugin {}: {m}", p.plugin),
        }),
        ActionOutcome::Permanent(m) => Err(Failed {
            retryable: false,
            message: format!("plugin {}: {m}", p.plugin),
        }),
    }
}
