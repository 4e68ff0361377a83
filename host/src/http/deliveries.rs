//! Deliveries: a receiver's history (`GET /v1/webhooks/incoming/{id}/deliveries`),
//! one delivery with its request and explain trace (`GET /v1/deliveries/{id}`),
//! and replay (`POST /v1/deliveries/{id}/replay`).
//!
//! A replay runs the stored request again with the receiver's current rules,
//! through the same acceptance as a new delivery: not deduped, not
//! re-authenticated (it was verified when it arrived), recorded as a replay.
//! Credential headers are shown redacted.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use hookgate_core::explain::{Outcome, Stage, Step, Trace};
use hookgate_core::redact::Credentials;
use hookgate_core::request::is_credential;
use hookgate_core::{Headers, Request};
use serde_json::{Value, json};

use super::error::{ApiError, ok};
use super::receivers::existing;
use super::{Page, pagination};
use crate::accept::{self, Accepted, Incoming};
use crate::ids;
use crate::state::{AppState, LiveReceiver, decode_row};
use crate::store::{DeliveryRow, DeliveryStatus};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/incoming/{id}/deliveries", get(deliveries))
        .route("/v1/deliveries/{id}", get(delivery))
        .route("/v1/deliveries/{id}/replay", post(replay))
}

async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Page>,
) -> Result<Response, ApiError> {
    let (page, limit) = q.parse()?;
    let status = match q.status.as_deref() {
        None => None,
        Some(text) => Some(DeliveryStatus::parse(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status: expected one of {}, found {text:?}",
                DeliveryStatus::names()
            ))
        })?),
    };
    // History outlives deletion: a deleted receiver's deliveries stay listed.
    if state.store.receiver(id.clone()).await?.is_none() {
        return Err(ApiError::NotFound(format!("no receiver {id}")));
    }
    let (rows, total) = state.store.deliveries(id, status, page, limit).await?;
    let list: Vec<Value> = rows.iter().map(|d| delivery_json(d, false, None)).collect();
    Ok(ok(
        StatusCode::OK,
        json!({"deliveries": list, "pagination": pagination(page, limit, total)}),
    ))
}

async fn delivery(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let d = state
        .store
        .delivery(id.clone())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no delivery {id}")))?;
    let live = state.live(&d.receiver_id);
    let credentials = live.as_ref().map(|l| &l.credentials);
    Ok(ok(StatusCode::OK, delivery_json(&d, true, credentials)))
}

/// A delivery as the API shows it; `full` adds the request and the trace.
/// `credentials`: what the receiver's auth tree reads, hidden too (kept at rest
/// only when an action forwards it).
fn delivery_json(d: &DeliveryRow, full: bool, credentials: Option<&Credentials>) -> Value {
    let mut v = json!({
        "id": d.id,
        "receiver_id": d.receiver_id,
        "status": d.status,
        "sandbox": d.sandbox,
        "received_at": ids::rfc3339(d.received_at),
        "verified_at": d.request.verified_at.map(ids::rfc3339),
        "actions_done": d.progress,
        "actions_total": d.plan.len(),
        "attempts": d.attempts,
        "last_error": d.last_error,
        "next_attempt_at": d.next_attempt_at.map(ids::rfc3339),
        "replay_of": d.replay_of,
        "body_bytes": d.request.body.len(),
    });
    if full {
        use base64::Engine;
        let headers: Vec<Value> = d
            .request
            .headers
            .iter()
            .map(|(n, value)| {
                let kept = d
                    .request
                    .kept_credentials
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(n));
                let shown = if is_credential(n) || kept || credentials.is_some_and(|c| c.header(n))
                {
                    "<redacted>".to_owned()
                } else {
                    String::from_utf8_lossy(value).into_owned()
                };
                json!([n, shown])
            })
            .collect();
        let body = match std::str::from_utf8(&d.request.body) {
            Ok(text) => json!({"encoding": "utf-8", "data": text}),
            Err(_) => {
                json!({"encoding": "base64", "data": base64::engine::general_purpose::STANDARD.encode(&d.request.body)})
            }
        };
        v["request"] = json!({
            "method": d.request.method, "url": d.request.url, "remote_addr": d.request.remote_addr,
            "headers": headers, "body": body,
        });
        v["actions"] = json!(d.plan.iter().map(|p| &p.spec).collect::<Vec<_>>());
        v["trace"] = serde_json::to_value(&d.trace).unwrap_or_default();
        v["explain"] = json!(d.trace.render());
    }
    v
}

/// Runs a stored delivery again with the receiver's current rules.
async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let original = state
        .store
        .delivery(id.clone())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no delivery {id}")))?;
    let row = existing(&state, &original.receiver_id).await?;
    let config = decode_row(&row)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored receiver: {e}")))?;
    let live = LiveReceiver::new(row.id.clone(), config);
    let headers: Headers = original
        .request
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let request = Request {
        method: &original.request.method,
        url: &original.request.url,
        headers: &headers,
        body: &original.request.body,
        remote_addr: original
            .request
            .remote_addr
            .as_deref()
            .and_then(|a| a.parse().ok()),
        received_at: original.received_at / 1000,
    };
    let mut trace = Trace::default();
    trace.push(Step::new(
        Stage::Auth,
        Outcome::Info,
        format!(
            "replay of {} (verified at {}); not authenticated again",
            original.id,
            original
                .request
                .verified_at
                .map_or("-".to_owned(), ids::rfc3339)
        ),
    ));
    let (target, plan) = accept::route(&live, request, &mut trace);
    let incoming = Incoming {
        receiver_id: original.receiver_id.clone(),
        received_at: ids::now_millis(),
        request: original.request.clone(),
        key: None,
        target,
        plan,
        trace,
        replay_of: Some(original.id.clone()),
        redact: live.redacted_at_rest.clone(),
        keep: live.kept_credentials(),
    };
    let Accepted::New { delivery_id, .. } = accept::accept(&state, incoming).await? else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "a replay has no key, so it cannot be a duplicate"
        )));
    };
    tracing::info!(delivery_id = %delivery_id, replay_of = %original.id, "replay accepted");
    Ok(ok(
        StatusCode::ACCEPTED,
        json!({"delivery_id": delivery_id, "status": "accepted", "replay_of": original.id}),
    ))
}
