//! `POST /hooks/{id}`: DESIGN.md's pipeline on the host.
//!
//! lookup → limits → core's evaluation (authenticate, handshake, key, target,
//! rules) → dedupe → persist (group commit) → 202 → runner. Limits are enforced
//! before anything is buffered: an over-long URL, too many or too large headers,
//! or a `Content-Length` over the receiver's limit are refused at once, and a body
//! is read through a limit that stops at the first byte too many and a deadline
//! that cuts off a slow client. Nothing is acknowledged before it is on disk.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hookgate_core::config::PluginAuth;
use hookgate_core::explain::{Outcome, Stage, Step};
use hookgate_core::jwks::Jwks;
use hookgate_core::verify::{Env, FailureKind};
use hookgate_core::{Headers, Request as CoreRequest};
use http_body_util::BodyExt;
use serde_json::json;

use crate::app::{AppState, LiveReceiver, remote_addr};
use crate::dedupe::{self, Claim, Settled};
use crate::error::{ApiError, ok};
use crate::ids;
use crate::store::{DeliveryRow, PlannedAction, StoredRequest};

/// What core may ask of the host while verifying. Plugin verdicts are computed
/// before core runs (plugins run off the async runtime), keyed by plugin name and
/// config text.
struct HostEnv {
    keys: std::collections::HashMap<String, Arc<Jwks>>,
    plugin_verdicts: PluginVerdicts,
}

type PluginVerdicts = std::collections::HashMap<(String, String), Result<String, String>>;

impl Env for HostEnv {
    fn jwks(&self, url: &str) -> Option<&Jwks> {
        self.keys.get(url).map(|k| &**k)
    }

    fn verify_plugin(
        &self,
        plugin: &PluginAuth,
        _request: &CoreRequest<'_>,
    ) -> Result<String, String> {
        self.plugin_verdicts
            .get(&(plugin.plugin.clone(), plugin.config.to_string()))
            .cloned()
            .unwrap_or_else(|| Err("was not run".to_owned()))
    }
}

/// Runs every plugin verifier of a receiver on a blocking thread (wasmtime's
/// WASI glue blocks) and returns their verdicts for [`HostEnv`].
async fn run_plugin_verifiers(
    state: &AppState,
    live: &LiveReceiver,
    wire: crate::plugins::WireRequest,
) -> Result<PluginVerdicts, ApiError> {
    let jobs = live.plugin_verifiers.clone();
    // A full pool is the host being busy, not the sender being wrong: 503, which
    // providers retry, rather than a 401, which they do not.
    let slot = state.plugins.try_slot().ok_or_else(|| {
        ApiError::Unavailable("every plugin slot is busy (plugins.max_concurrent); retry".into())
    })?;
    let plugins = Arc::clone(&state.plugins);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        jobs.into_iter()
            .map(|(name, config)| {
                let verdict = plugins.verify(&name, &wire, &config);
                ((name, config), verdict)
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("running plugin verifiers: {e}")))
}

pub async fn receive(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let result = receive_inner(&state, &id, req).await;
    let outcome = match &result {
        Ok((_, outcome)) => *outcome,
        Err(e) => match e {
            ApiError::NotFound(_) => "not_found",
            ApiError::SignatureRejected(_) => "unauthorized",
            ApiError::TooLarge(_) | ApiError::HeadersTooLarge(_) | ApiError::UriTooLong(_) => {
                "too_large"
            }
            ApiError::TargetRejected(_) => "target_rejected",
            ApiError::Timeout(_) => "timeout",
            ApiError::BadRequest(_) => "bad_request",
            _ => "error",
        },
    };
    // Unknown receiver ids are not labels: anyone can invent them.
    let label = if outcome == "not_found" {
        "unknown".to_owned()
    } else {
        id
    };
    metrics::counter!("hookgate_requests_total", "receiver" => label, "outcome" => outcome)
        .increment(1);
    match result {
        Ok((response, _)) => response,
        Err(e) => e.into_response(),
    }
}

async fn receive_inner(
    state: &AppState,
    id: &str,
    req: Request,
) -> Result<(Response, &'static str), ApiError> {
    let received_at = ids::now_millis();
    let live = state
        .live(id)
        .ok_or_else(|| ApiError::NotFound(format!("no active receiver {id}")))?;
    let limits = &state.settings.limits;

    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > limits.max_url_bytes {
        return Err(ApiError::UriTooLong(format!(
            "URL longer than {} bytes",
            limits.max_url_bytes
        )));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    if req.headers().len() > limits.max_headers || header_bytes > limits.max_header_bytes {
        return Err(ApiError::HeadersTooLarge(format!(
            "more than {} headers or {} bytes of headers",
            limits.max_headers, limits.max_header_bytes
        )));
    }
    let max_body = live.config.max_body_bytes.unwrap_or(limits.max_body_bytes);
    if let Some(len) = content_length(req.headers())
        && len > max_body
    {
        return Err(ApiError::TooLarge(format!(
            "body of {len} bytes is over this receiver's {max_body}-byte limit"
        )));
    }
    let remote_socket = remote_addr(&req);
    let remote = remote_socket.map(|a| a.ip());
    let (parts, body) = req.into_parts();
    // Informational only (anyone can send it): the edge passed this request
    // through because the receiver's auth needs a plugin, which only the host runs.
    let via_edge = parts.headers.contains_key("x-hookgate-edge-proxy");
    let limited =
        http_body_util::Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX));
    let timeout = Duration::from_secs(limits.body_timeout_seconds);
    let body: Bytes = match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => {
            return Err(ApiError::Timeout(format!(
                "body not received within {} s",
                timeout.as_secs()
            )));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::TooLarge(format!(
                "body is over this receiver's {max_body}-byte limit"
            )));
        }
        Ok(Err(e)) => return Err(ApiError::BadRequest(format!("reading the body: {e}"))),
        Ok(Ok(collected)) => collected.to_bytes(),
    };

    let headers: Headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let path_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path_query}", state.settings.public_base());
    let method = parts.method.as_str().to_owned();
    let request = CoreRequest {
        method: &method,
        url: &url,
        headers: &headers,
        body: &body,
        remote_addr: remote,
        received_at: received_at / 1000,
    };

    let plugin_verdicts = if live.plugin_verifiers.is_empty() {
        PluginVerdicts::new()
    } else {
        run_plugin_verifiers(
            state,
            &live,
            crate::plugins::WireRequest {
                method: method.clone(),
                url: url.clone(),
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_owned(), v.to_vec()))
                    .collect(),
                body: body.clone(),
                remote_addr: remote_socket.map(|a| a.to_string()),
                received_at_ms: u64::try_from(received_at).unwrap_or(0),
            },
        )
        .await?
    };
    let urls = live.config.jwks_urls();
    let mut env = HostEnv {
        keys: if urls.is_empty() {
            Default::default()
        } else {
            state.keys.get(&urls, false).await
        },
        plugin_verdicts,
    };
    let mut eval = hookgate_core::evaluate(&live.config, request, &env);
    if matches!(&eval.auth, Err(f) if f.kind == FailureKind::UnknownKey) && !urls.is_empty() {
        env.keys = state.keys.get(&urls, true).await;
        eval = hookgate_core::evaluate(&live.config, request, &env);
    }
    if let Err(failure) = &eval.auth {
        metrics::counter!("hookgate_verify_failures_total", "receiver" => live.id.clone(), "reason" => failure.kind.as_str())
            .increment(1);
        tracing::info!(receiver = %live.id, reason = %failure.reason, "verification failed");
        return Err(ApiError::SignatureRejected(failure.reason.clone()));
    }
    let verified_at = ids::now_millis();
    if let Some(reply) = eval.handshake {
        let response = (
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
            [(header::CONTENT_TYPE, reply.content_type)],
            reply.body,
        )
            .into_response();
        return Ok((response, "handshake"));
    }

    // Dedupe: claim the key, or wait for whoever holds it.
    let key = eval.key.clone();
    let mut guard = None;
    if let Some(k) = &key {
        loop {
            match state.dedupe.claim(&live.id, &k.hash, received_at) {
                Claim::Mine(g) => {
                    guard = Some(g);
                    break;
                }
                Claim::Duplicate(original) => return Ok(duplicate(&live, original)),
                Claim::Wait(slot) => match dedupe::settled(slot).await {
                    Settled::Stored(original) => return Ok(duplicate(&live, original)),
                    Settled::Abandoned => continue,
                },
            }
        }
    }

    let sandbox = match eval.target.clone() {
        Some(Ok(name)) => name,
        Some(Err(why)) => return Err(ApiError::TargetRejected(why)),
        None => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "evaluation ended without a target"
            )));
        }
    };
    let plan = plan(&live, &eval.matched);
    let delivery_id = ids::delivery_id();
    let retention = live
        .config
        .idempotency
        .as_ref()
        .and_then(|i| i.retention_seconds)
        .unwrap_or(state.settings.dedupe.retention_seconds);
    let key_expires_at = key.as_ref().map(|_| {
        received_at
            .saturating_add(i64::try_from(retention.saturating_mul(1000)).unwrap_or(i64::MAX))
    });
    let mut trace = eval.trace;
    if via_edge {
        trace.push(Step::new(
            Stage::Auth,
            Outcome::Pass,
            "passed through by the edge: this receiver's auth uses a plugin, and plugins run in the host",
        ));
    }
    if plan.is_empty() {
        trace.push(Step::new(
            Stage::Action,
            Outcome::Skip,
            "no rule matched: nothing to run",
        ));
    }
    let request = StoredRequest {
        verified_at: Some(verified_at),
        method,
        url,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect(),
        body: body.to_vec(),
        remote_addr: remote.map(|r| r.to_string()),
    };
    let row = DeliveryRow {
        idempotency_key: key.as_ref().map(|k| k.hash.clone()),
        key_expires_at,
        ..DeliveryRow::accepted(
            delivery_id.clone(),
            live.id.clone(),
            received_at,
            request,
            sandbox.to_string(),
            plan,
            trace,
        )
    };
    let status = row.status.clone();
    state.store.insert_delivery(row).await?;
    if let Some(g) = guard {
        g.stored(delivery_id.clone(), key_expires_at.unwrap_or(i64::MAX));
    }
    tracing::info!(delivery_id = %delivery_id, receiver = %live.id, sandbox = %sandbox, status = %status, "accepted");
    if status == "pending" {
        state
            .runner
            .submit(delivery_id.clone(), sandbox.to_string());
    }
    Ok((
        ok(
            StatusCode::ACCEPTED,
            json!({"delivery_id": delivery_id, "status": "accepted"}),
        ),
        "accepted",
    ))
}

fn duplicate(live: &LiveReceiver, original: String) -> (Response, &'static str) {
    metrics::counter!("hookgate_dedupe_hits_total", "receiver" => live.id.clone()).increment(1);
    (
        ok(
            StatusCode::OK,
            json!({"delivery_id": original, "status": "duplicate"}),
        ),
        "duplicate",
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The matched rules' actions (core's plan), as the store keeps them.
pub fn plan(live: &LiveReceiver, matched: &[hookgate_core::rules::Matched]) -> Vec<PlannedAction> {
    hookgate_core::rules::plan(&live.config, matched)
        .into_iter()
        .map(|p| PlannedAction {
            rule: p.rule,
            action: p.action,
            spec: serde_json::to_value(&p.spec).unwrap_or_default(),
        })
        .collect()
}
