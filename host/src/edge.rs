//! The host's side of the edge Worker (`edge/`): it takes the events the edge
//! accepted, and keeps the edge's receiver configs current.
//!
//! `POST /v1/edge/ingest` is authenticated by the edge's signature, not the admin
//! token: hex HMAC-SHA256 under `edge.forward_key` of `{timestamp}.{body}`, with
//! the timestamp within five minutes, so a captured request cannot be replayed
//! later. The edge already authenticated, deduped and planned the event with the
//! same core code; the host stores it as a delivery exactly as if it had accepted
//! it itself, and dedupes on the edge delivery id, because the edge's alarm
//! delivers at least once. Config pushes go to the Worker's admin route whenever
//! a receiver is created, changed, disabled or deleted.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use hookgate_core::SandboxName;
use hookgate_core::explain::{Outcome, Stage, Step, Trace};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;

use crate::app::AppState;
use crate::dedupe::{self, Claim, Settled};
use crate::error::{ApiError, ok};
use crate::ids;
use crate::store::{DeliveryRow, PlannedAction, ReceiverRow, StoredRequest};

/// How far the edge's signature timestamp may be from the host's clock.
const TOLERANCE_SECONDS: i64 = 300;
/// How long after a receiver's deletion each start pushes the deletion again:
/// a week covers any host outage worth planning for.
pub const TOMBSTONE_MILLIS: i64 = 7 * 86_400 * 1000;

/// An event as the edge forwards it (see `edge/src/lib.rs`).
#[derive(Debug, Deserialize)]
struct EdgeEvent {
    edge_delivery_id: String,
    receiver_id: String,
    method: String,
    url: String,
    /// Names and base64 values, in wire order.
    headers: Vec<(String, String)>,
    /// Base64.
    body: String,
    remote_addr: Option<String>,
    received_at: i64,
    verified_at: i64,
    sandbox: Option<String>,
    #[serde(default)]
    plan: Vec<Planned>,
    #[serde(default)]
    trace: Trace,
}

#[derive(Debug, Deserialize)]
struct Planned {
    rule: usize,
    action: usize,
    spec: Value,
}

fn signed(key: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `POST /v1/edge/ingest`.
pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = &state.settings.edge.forward_key;
    if key.is_empty() {
        return Err(ApiError::NotFound(
            "no edge is configured (edge.forward_key)".into(),
        ));
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let timestamp = header("x-hookgate-edge-timestamp");
    let sent: i64 = timestamp.parse().map_err(|_| {
        ApiError::SignatureRejected("missing or malformed x-hookgate-edge-timestamp".into())
    })?;
    if (ids::now_millis() / 1000 - sent).abs() > TOLERANCE_SECONDS {
        return Err(ApiError::SignatureRejected(format!(
            "edge timestamp is more than {TOLERANCE_SECONDS} s from the host's clock"
        )));
    }
    let expected = signed(key, &timestamp, &body);
    if !hookgate_core::verify::ct_eq(
        expected.as_bytes(),
        header("x-hookgate-edge-signature").as_bytes(),
    ) {
        return Err(ApiError::SignatureRejected(
            "x-hookgate-edge-signature does not match edge.forward_key".into(),
        ));
    }
    let event: EdgeEvent = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("edge event: {e}")))?;
    let body = B64
        .decode(&event.body)
        .map_err(|e| ApiError::BadRequest(format!("edge event body: {e}")))?;
    let mut wire_headers = Vec::with_capacity(event.headers.len());
    for (i, (name, value)) in event.headers.iter().enumerate() {
        let value = B64
            .decode(value)
            .map_err(|e| ApiError::BadRequest(format!("edge event headers[{i}]: {e}")))?;
        wire_headers.push((name.clone(), value));
    }

    // Dedupe on the edge's delivery id: its alarm delivers at least once.
    let hash =
        hex::encode(&sha2::Sha256::digest(format!("edge\0{}", event.edge_delivery_id))[..16]);
    let live = state.live(&event.receiver_id);
    let retention = live
        .as_ref()
        .and_then(|l| l.config.idempotency.as_ref())
        .and_then(|i| i.retention_seconds)
        .unwrap_or(state.settings.dedupe.retention_seconds);
    let guard = loop {
        match state
            .dedupe
            .claim(&event.receiver_id, &hash, event.received_at)
        {
            Claim::Mine(g) => break g,
            Claim::Duplicate(original) => return Ok(duplicate(original)),
            Claim::Wait(slot) => match dedupe::settled(slot).await {
                Settled::Stored(original) => return Ok(duplicate(original)),
                Settled::Abandoned => {}
            },
        }
    };

    let mut trace = event.trace;
    trace.push(Step::new(
        Stage::Dedupe,
        Outcome::Pass,
        format!("accepted at the edge as {}", event.edge_delivery_id),
    ));
    let sandbox = event
        .sandbox
        .as_deref()
        .and_then(|s| SandboxName::parse(s).ok());
    let mut plan: Vec<PlannedAction> = event
        .plan
        .into_iter()
        .map(|p| PlannedAction {
            rule: p.rule,
            action: p.action,
            spec: p.spec,
        })
        .collect();
    if live.is_none() {
        plan.clear();
        trace.push(Step::new(
            Stage::Action,
            Outcome::Skip,
            "the receiver is no longer active on the host: nothing to run",
        ));
    } else if plan.is_empty() {
        trace.push(Step::new(
            Stage::Action,
            Outcome::Skip,
            "no rule matched: nothing to run",
        ));
    }
    let delivery_id = ids::delivery_id();
    let key_expires_at = event
        .received_at
        .saturating_add(i64::try_from(retention.saturating_mul(1000)).unwrap_or(i64::MAX));
    let request = StoredRequest {
        verified_at: Some(event.verified_at),
        method: event.method,
        url: event.url,
        headers: wire_headers,
        body,
        remote_addr: event.remote_addr,
    };
    let sandbox_text = sandbox
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let row = DeliveryRow {
        idempotency_key: Some(hash),
        key_expires_at: Some(key_expires_at),
        ..DeliveryRow::accepted(
            delivery_id.clone(),
            event.receiver_id.clone(),
            event.received_at,
            request,
            sandbox_text.clone(),
            plan,
            trace,
        )
    };
    let status = row.status.clone();
    state.store.insert_delivery(row).await?;
    guard.stored(delivery_id.clone(), key_expires_at);
    tracing::info!(delivery_id = %delivery_id, edge_delivery_id = %event.edge_delivery_id, receiver = %event.receiver_id, status = %status, "accepted from the edge");
    if status == "pending" && sandbox.is_some() {
        state.runner.submit(delivery_id.clone(), sandbox_text);
    }
    Ok(ok(
        StatusCode::OK,
        json!({"delivery_id": delivery_id, "status": "accepted", "edge_delivery_id": event.edge_delivery_id}),
    ))
}

fn duplicate(original: String) -> Response {
    ok(
        StatusCode::OK,
        json!({"delivery_id": original, "status": "duplicate"}),
    )
}

/// Sends a receiver's current config to the edge (in the background, retried a
/// few times). The edge seals the secrets before they reach KV.
pub fn push(state: &AppState, row: &ReceiverRow) {
    let settings = &state.settings.edge;
    if settings.url.is_empty() {
        return;
    }
    let url = format!(
        "{}/_hookgate/receivers/{}",
        settings.url.trim_end_matches('/'),
        row.id
    );
    let token = settings.admin_token.clone();
    let deleted = row.deleted_at.is_some();
    let body = json!({
        "status": row.status,
        "config": row.config,
        "secrets": row.secrets.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
    });
    let id = row.id.clone();
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        for attempt in 1..=5_u32 {
            let request = if deleted {
                client.delete(&url)
            } else {
                client.put(&url).json(&body)
            };
            match request.bearer_auth(&token).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(receiver = %id, deleted, "receiver config pushed to the edge");
                    return;
                }
                Ok(r) => {
                    tracing::warn!(receiver = %id, status = r.status().as_u16(), attempt, "the edge refused a receiver config")
                }
                Err(e) => {
                    tracing::warn!(receiver = %id, error = %e, attempt, "pushing a receiver config to the edge failed")
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 * 2_u64.pow(attempt))).await;
        }
        tracing::error!(receiver = %id, "the edge did not take a receiver config; it answers from the previous one");
    });
}
