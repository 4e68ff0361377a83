//! `POST /hooks/{id}`: the receiver URL a provider calls.
//!
//! lookup → limits → core's evaluation (authenticate, handshake, key, target,
//! rules; [`accept::evaluate`]) → acceptance (dedupe → persist → runner;
//! [`accept::accept`]) → 202. Limits are enforced before anything is buffered:
//! an over-long URL, too many or too large headers, or a `Content-Length` over
//! the receiver's limit are refused at once, and a body is read through a limit
//! that stops at the first byte too many and a deadline that cuts off a slow
//! client. Nothing is acknowledged before it is on disk.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookgate_core::Headers;
use hookgate_core::explain::{Outcome, Stage, Step};
use serde_json::json;

use super::error::{ApiError, ok};
use super::{read_body, remote_addr};
use crate::accept::{self, Accepted, DedupeKey, Incoming, Target, Wire};
use crate::ids;
use crate::state::{AppState, key_expires_at};
use crate::store::{RejectionRow, StoredRequest};

/// A refused request: the sender's answer, and for the operator which check
/// failed and the whole reason (the sender's is short, naming no secret,
/// allowlist or plugin output).
#[derive(Debug)]
struct Refused {
    error: ApiError,
    failed: Option<String>,
    detail: Option<String>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            failed: None,
            detail: None,
        }
    }
}

impl From<crate::accept::AcceptError> for Refused {
    fn from(e: crate::accept::AcceptError) -> Self {
        ApiError::from(e).into()
    }
}

pub async fn receive(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
    let remote = remote_addr(&req);
    let result = receive_inner(&state, &id, req).await;
    let outcome = match &result {
        Ok((_, outcome)) => *outcome,
        Err(Refused { error: e, .. }) => match e {
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
        id.clone()
    };
    metrics::counter!("hookgate_requests_total", "receiver" => label, "outcome" => outcome)
        .increment(1);
    match result {
        Ok((response, _)) => response,
        Err(refused) => {
            if outcome != "not_found" {
                record(&state, &id, method, path, remote, outcome, &refused);
            }
            refused.error.into_response()
        }
    }
}

/// Keeps a refused request for the operator, in the background: the answer
/// does not wait for it, and a failed write costs only the record.
fn record(
    state: &AppState,
    id: &str,
    method: String,
    path: String,
    remote: Option<std::net::SocketAddr>,
    outcome: &str,
    refused: &Refused,
) {
    let (status, code) = refused.error.status_and_code();
    let row = RejectionRow {
        receiver_id: id.to_owned(),
        at: ids::now_millis(),
        remote_addr: remote.map(|a| a.ip().to_string()),
        method,
        path,
        status: status.as_u16(),
        code: code.to_owned(),
        failed: refused.failed.clone().unwrap_or_else(|| outcome.to_owned()),
        reason: refused
            .detail
            .clone()
            .unwrap_or_else(|| refused.error.to_string()),
    };
    let (store, keep) = (
        state.store.clone(),
        state.settings.rejections.keep_per_receiver,
    );
    if keep == 0 {
        return;
    }
    let Ok(slot) = Arc::clone(&state.rejection_writes).try_acquire_owned() else {
        metrics::counter!("hookgate_rejections_dropped_total").increment(1);
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        if let Err(e) = store.add_rejection(row, keep).await {
            tracing::warn!(error = %e, "recording a rejection failed");
        }
    });
}

async fn receive_inner(
    state: &AppState,
    id: &str,
    req: Request,
) -> Result<(Response, &'static str), Refused> {
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
        ))
        .into());
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
        ))
        .into());
    }
    let max_body = live.config.max_body_bytes.unwrap_or(limits.max_body_bytes);
    if let Some(len) = content_length(req.headers())
        && len > max_body
    {
        return Err(ApiError::TooLarge(format!(
            "body of {len} bytes is over this receiver's {max_body}-byte limit"
        ))
        .into());
    }
    let remote = remote_addr(&req);
    let (parts, body) = req.into_parts();
    // Informational only (anyone can send it): the edge passed this request
    // through because the receiver's auth needs a plugin, which only the host runs.
    let via_edge = parts.headers.contains_key("x-hookgate-edge-proxy");
    let body = read_body(
        body,
        max_body,
        Duration::from_secs(limits.body_timeout_seconds),
        "this receiver's",
    )
    .await?;

    let headers: Headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let path_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path_query}", state.settings.public_base());
    let method = parts.method.as_str().to_owned();
    let wire = Wire {
        method: &method,
        url: &url,
        headers: &headers,
        body: &body,
        remote,
        received_at,
    };
    let eval = accept::evaluate(state, &live, wire).await?;
    if let Err(failure) = &eval.auth {
        metrics::counter!("hookgate_verify_failures_total", "receiver" => live.id.clone(), "reason" => failure.kind.as_str())
            .increment(1);
        tracing::info!(receiver = %live.id, reason = %failure.reason, "verification failed");
        return Err(Refused {
            error: ApiError::SignatureRejected(failure.kind.public_reason().to_owned()),
            failed: Some(format!("auth:{}", failure.kind.as_str())),
            detail: Some(failure.reason.clone()),
        });
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

    let target = match eval.target {
        Some(Ok(name)) => Target::Sandbox(name),
        Some(Err(why)) => Target::Rejected(why),
        None => {
            return Err(
                ApiError::Internal(anyhow::anyhow!("evaluation ended without a target")).into(),
            );
        }
    };
    let retention = live.retention_seconds(&state.settings);
    let replay = hookgate_core::idempotency::replay_key(
        &live.config,
        &hookgate_core::Event::new(wire.core()),
    );
    let expires_at = key_expires_at(received_at, retention);
    // A request whose delivery id was stripped still carries its signed
    // bytes: the replay key alone then dedupes it.
    let key = match (eval.key, replay) {
        (Some(k), replay) => Some(DedupeKey {
            hash: k.hash,
            replay,
            expires_at,
        }),
        (None, Some(replay)) => Some(DedupeKey {
            hash: replay,
            replay: None,
            expires_at,
        }),
        (None, None) => None,
    };
    let mut trace = eval.trace;
    if via_edge {
        trace.push(Step::new(
            Stage::Auth,
            Outcome::Pass,
            "passed through by the edge: this receiver's auth uses a plugin, and plugins run in the host",
        ));
    }
    let incoming = Incoming {
        receiver_id: live.id.clone(),
        received_at,
        request: StoredRequest {
            verified_at: Some(verified_at),
            method,
            url,
            headers: headers.into_pairs(),
            body: body.to_vec(),
            remote_addr: remote.map(|r| r.ip().to_string()),
            kept_credentials: Vec::new(),
        },
        key,
        target,
        plan: accept::plan(&live, &eval.matched),
        trace,
        replay_of: None,
        redact: live.redacted_at_rest.clone(),
        keep: live.kept_credentials(),
    };
    match accept::accept(state, incoming).await? {
        Accepted::New { delivery_id, .. } => Ok((
            ok(
                StatusCode::ACCEPTED,
                json!({"delivery_id": delivery_id, "status": "accepted"}),
            ),
            "accepted",
        )),
        Accepted::Duplicate { delivery_id } => {
            metrics::counter!("hookgate_dedupe_hits_total", "receiver" => live.id.clone())
                .increment(1);
            Ok((
                ok(
                    StatusCode::OK,
                    json!({"delivery_id": delivery_id, "status": "duplicate"}),
                ),
                "duplicate",
            ))
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
