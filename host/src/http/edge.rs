//! `POST /v1/edge/ingest`: the events the edge Worker (`edge/`) accepted.
//!
//! Authenticated by the edge's signature, not the admin token: hex HMAC-SHA256
//! under `edge.forward_key` of `{timestamp}.{body}`, with the timestamp within
//! five minutes, so a captured request cannot be replayed later. The edge already
//! authenticated, deduped and planned the event with the same core code; the host
//! accepts it through the same [`accept::accept`] as its own receiver endpoint.
//! The edge's alarm delivers at least once, so the host dedupes too: on the
//! provider's idempotency key when the receiver has one (the same key space as
//! `/hooks`, so an event that reached both is one delivery), else on the edge
//! delivery id.

use axum::body::Bytes;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use hookgate_core::SandboxName;
use hookgate_core::explain::{Outcome, Stage, Step};
use hookgate_core::forward::{self, ForwardedEvent};
use serde_json::json;
use sha2::Digest;

use super::error::{ApiError, ok};
use crate::accept::{self, Accepted, DedupeKey, Incoming, Target};
use crate::ids;
use crate::state::{AppState, key_expires_at};
use crate::store::{PlannedAction, StoredRequest};

/// `POST /v1/edge/ingest`.
pub async fn ingest(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let key = &state.settings.edge.forward_key;
    // Checked before the body is read: a host with no edge reads nothing.
    if key.is_empty() {
        return Err(ApiError::NotFound(
            "no edge is configured (edge.forward_key)".into(),
        ));
    }
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let now = ids::now_millis() / 1000;
    // A stale or missing timestamp is refused before a byte of the body is read.
    forward::check_timestamp(header(forward::TIMESTAMP_HEADER), now)
        .map_err(|e| ApiError::SignatureRejected(e.to_string()))?;
    // Bodies not yet authenticated: a bounded number at once, so a flood of
    // forged forwards cannot hold the host's memory (503 is retried by the edge).
    let reading = std::sync::Arc::clone(&state.edge_reads)
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable("too many edge events being read; retry".into()))?;
    let body: Bytes = super::read_body(
        body,
        super::MAX_EDGE_EVENT_BYTES as u64,
        Duration::from_secs(state.settings.limits.body_timeout_seconds),
        "the edge event's",
    )
    .await?;
    drop(reading);
    forward::verify(
        key.as_bytes(),
        header(forward::TIMESTAMP_HEADER),
        header(forward::SIGNATURE_HEADER),
        &body,
        now,
    )
    .map_err(|e| ApiError::SignatureRejected(e.to_string()))?;
    let event: ForwardedEvent = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("edge event: {e}")))?;
    let edge_delivery_id = event
        .edge_delivery_id
        .ok_or_else(|| ApiError::BadRequest("edge event: edge_delivery_id is missing".into()))?;

    // The provider's key when there is one, else the edge's own id: the
    // alarm delivers at least once.
    let edge_hash = hex::encode(&sha2::Sha256::digest(format!("edge\0{edge_delivery_id}"))[..16]);
    let hash = match &event.idempotency_key {
        Some(key) => key.hash.clone(),
        None => edge_hash.clone(),
    };
    // A host before 0.2 keyed every edge event on its edge id, so an event it
    // stored is indexed under that id: a redelivery of it is a duplicate too.
    if hash != edge_hash
        && let Some(original) = state
            .dedupe
            .live(&event.receiver_id, &edge_hash, ids::now_millis())
    {
        return Ok(ok(
            StatusCode::OK,
            json!({"delivery_id": original, "status": "duplicate"}),
        ));
    }
    let live = state.live(&event.receiver_id);
    // The signed bytes too, for presets that sign no timestamp or id: a
    // captured request replayed through the edge under a fresh id is a duplicate.
    let replay = live.as_ref().and_then(|l| {
        let headers: hookgate_core::Headers = event.headers.iter().cloned().collect();
        hookgate_core::idempotency::replay_key(
            &l.config,
            &hookgate_core::Event::new(hookgate_core::Request {
                method: &event.method,
                url: &event.url,
                headers: &headers,
                body: &event.body,
                remote_addr: event.remote_addr,
                received_at: event.received_at / 1000,
            }),
        )
    });
    let retention = live
        .as_ref()
        .map_or(state.settings.dedupe.retention_seconds, |l| {
            l.retention_seconds(&state.settings)
        });
    let mut trace = event.trace;
    trace.push(Step::new(
        Stage::Dedupe,
        Outcome::Pass,
        format!("accepted at the edge as {edge_delivery_id}"),
    ));
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
    }
    let target = match event.sandbox.as_deref().map(SandboxName::parse) {
        Some(Ok(name)) => Target::Sandbox(name),
        Some(Err(why)) => Target::Unusable(format!(
            "the edge named the sandbox {:?}: {why}",
            event.sandbox.as_deref().unwrap_or_default()
        )),
        None => Target::Unusable("the edge named no sandbox".to_owned()),
    };
    let incoming = Incoming {
        receiver_id: event.receiver_id.clone(),
        received_at: event.received_at,
        request: StoredRequest {
            verified_at: Some(event.verified_at),
            method: event.method,
            url: event.url,
            headers: event.headers,
            body: event.body,
            remote_addr: event.remote_addr.map(|a| a.to_string()),
            kept_credentials: Vec::new(),
        },
        key: Some(DedupeKey {
            hash,
            replay,
            expires_at: key_expires_at(event.received_at, retention),
        }),
        target,
        plan,
        trace,
        replay_of: None,
        redact: live
            .as_ref()
            .map(|l| l.redacted_at_rest.clone())
            .unwrap_or_default(),
        keep: live
            .as_ref()
            .map(|l| l.kept_credentials())
            .unwrap_or_default(),
    };
    match accept::accept(&state, incoming).await? {
        Accepted::New {
            delivery_id,
            status,
        } => {
            tracing::info!(delivery_id = %delivery_id, edge_delivery_id = %edge_delivery_id, receiver = %event.receiver_id, status = %status, "accepted from the edge");
            Ok(ok(
                StatusCode::OK,
                json!({"delivery_id": delivery_id, "status": "accepted", "edge_delivery_id": edge_delivery_id}),
            ))
        }
        Accepted::Duplicate { delivery_id } => Ok(ok(
            StatusCode::OK,
            json!({"delivery_id": delivery_id, "status": "duplicate"}),
        )),
    }
}
