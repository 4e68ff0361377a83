//! `/v1/sandboxes`: every plane operation as a route over whatever plane this
//! host drives (admin token required). It is the management view of sandboxes,
//! and the server side of the HTTP plane ([`crate::sandbox::remote`]), whose
//! wire format is [`crate::sandbox::wire`].
//!
//! Inputs are checked by the same core code as receiver configs (sandbox names,
//! templates, `deliver_to_port` paths), and the serving plane only ever reaches
//! its own sandboxes' ports: a remote caller cannot make it connect anywhere else.

use std::time::Duration;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use hookgate_core::SandboxName;
use hookgate_core::config::{Action, SandboxTemplate};
use serde_json::{Value, json};

use super::error::{ApiError, ok};
use super::json_body_as;
use crate::sandbox::Ensured;
use crate::sandbox::wire::{
    DeliverAnswer, DeliverBody, EnsureAnswer, EnsureBody, ExecAnswer, ExecBody, Listing,
    MAX_DELIVER_BYTES, MAX_EXEC_SECONDS, MAX_OPERATION_BYTES,
};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sandboxes", get(list).post(ensure))
        .route("/v1/sandboxes/{name}", get(show).delete(remove))
        .route("/v1/sandboxes/{name}/pause", post(pause))
        .route("/v1/sandboxes/{name}/resume", post(resume))
        .route("/v1/sandboxes/{name}/exec", post(exec))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_OPERATION_BYTES))
        .merge(
            Router::new()
                .route("/v1/sandboxes/{name}/deliver", post(deliver))
                .layer(axum::extract::DefaultBodyLimit::max(MAX_DELIVER_BYTES)),
        )
}

fn name(raw: &str) -> Result<SandboxName, ApiError> {
    SandboxName::parse(raw).map_err(|e| ApiError::BadRequest(format!("sandbox name: {e}")))
}

async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let sandboxes = state.plane.list().await?;
    Ok(ok(StatusCode::OK, Listing { sandboxes }))
}

async fn show(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let name = name(&raw)?;
    let info = state
        .plane
        .inspect(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("sandbox {name} does not exist")))?;
    Ok(ok(StatusCode::OK, info))
}

async fn ensure(
    State(state): State<AppState>,
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body: EnsureBody = json_body_as(body)?;
    let name = name(&body.name)?;
    let template = SandboxTemplate::from_json(&body.template)
        .map_err(|e| ApiError::InvalidConfig(e.to_string()))?;
    let result = state.plane.ensure(&name, &template).await?;
    let sandbox = state.plane.inspect(&name).await?;
    let status = match result {
        Ensured::Created => StatusCode::CREATED,
        Ensured::Existed => StatusCode::OK,
    };
    Ok(ok(status, EnsureAnswer { result, sandbox }))
}

async fn remove(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let name = name(&raw)?;
    state.plane.delete(&name).await?;
    Ok(ok(StatusCode::OK, state.plane.inspect(&name).await?))
}

async fn pause(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let name = name(&raw)?;
    state.plane.pause(&name).await?;
    Ok(ok(StatusCode::OK, state.plane.inspect(&name).await?))
}

async fn resume(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let name = name(&raw)?;
    state.plane.resume(&name).await?;
    Ok(ok(StatusCode::OK, state.plane.inspect(&name).await?))
}

async fn deliver(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let name = name(&raw)?;
    let body: DeliverBody = json_body_as(body)?;
    // The port and path are checked exactly as a receiver's deliver_to_port is.
    Action::from_json(&json!({
        "action_type": "deliver_to_port", "port": body.port, "path": body.path,
    }))
    .map_err(|e| ApiError::InvalidConfig(e.to_string()))?;
    let port = body.port;
    let forward = body.into_forward().map_err(ApiError::BadRequest)?;
    let answer = state.plane.deliver(&name, port, forward).await?;
    Ok(ok(StatusCode::OK, DeliverAnswer::from(answer)))
}

async fn exec(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let name = name(&raw)?;
    let body: ExecBody = json_body_as(body)?;
    let timeout = Duration::from_secs(body.timeout_seconds.clamp(1, MAX_EXEC_SECONDS));
    let out = state.plane.exec(&name, &body.script, timeout).await?;
    Ok(ok(StatusCode::OK, ExecAnswer::from(out)))
}
