//! `/v1/plugins`: upload, list, inspect and remove plugins (admin token required).
//!
//! An upload is the component's bytes (`POST /v1/plugins?name=<name>`, optionally
//! `&timeout_ms=&memory_mb=`). It is compiled and checked against the contract
//! before anything is stored, so a component for another world or version, or
//! one that wants imports the host does not grant, is refused with the reason
//! and changes nothing. A plugin that a receiver still uses cannot be removed.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ok};
use crate::ids;
use crate::plugins::{CONTRACT, Installed};
use crate::state::AppState;
use crate::store::PluginRow;

/// The largest component accepted; shipped plugins are about 100 KiB.
const MAX_COMPONENT_BYTES: usize = 32 << 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/plugins", post(upload).get(list))
        .route("/v1/plugins/{name}", get(show).delete(remove))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_COMPONENT_BYTES))
}

fn plugin_json(p: &Installed) -> Value {
    json!({
        "name": p.name,
        "world": p.world,
        "contract": format!("hookgate:plugin@{}", p.version),
        "sha256": p.sha256,
        "size": p.size,
        "timeout_ms": p.limits.timeout_ms,
        "memory_mb": p.limits.memory_mb,
    })
}

#[derive(Debug, Deserialize)]
struct Upload {
    name: Option<String>,
    timeout_ms: Option<u64>,
    memory_mb: Option<u32>,
}

async fn upload(
    State(state): State<AppState>,
    query: Result<Query<Upload>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    let name = q.name.ok_or_else(|| {
        ApiError::BadRequest("query: name is required (?name=<plugin name>)".into())
    })?;
    hookgate_core::config::check_plugin_name(&name)
        .map_err(|e| ApiError::InvalidPlugin(e.to_string()))?;
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "expected the component's bytes as the body (Content-Type: application/wasm)".into(),
        ));
    }
    let limits = state.plugins.limits(q.timeout_ms, q.memory_mb)?;
    let plugins = Arc::clone(&state.plugins);
    let (compiled, bytes) = tokio::task::spawn_blocking(move || {
        let compiled = plugins.compile(&name, &body, limits);
        (compiled, body)
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("compiling a plugin: {e}")))?;
    let compiled = compiled?;
    let previous = state.plugins.get(&compiled.name);
    if let Some(previous) = &previous
        && previous.world != compiled.world
    {
        let users = users_of(&state, &compiled.name).await?;
        if !users.is_empty() {
            return Err(ApiError::PluginInUse(format!(
                "plugin {} is {} plugin used by receiver(s) {}; a replacement must be one too",
                compiled.name,
                previous.world.with_article(),
                users.join(", ")
            )));
        }
    }
    let replaced = previous.is_some();
    state
        .store
        .put_plugin(PluginRow {
            name: compiled.name.clone(),
            world: compiled.world.as_str().to_owned(),
            sha256: compiled.sha256.clone(),
            component: bytes.to_vec(),
            timeout_ms: compiled.limits.timeout_ms,
            memory_mb: compiled.limits.memory_mb,
            installed_at: ids::now_millis(),
        })
        .await?;
    let shown = plugin_json(&compiled);
    tracing::info!(plugin = %compiled.name, world = compiled.world.as_str(), sha256 = %compiled.sha256, "plugin installed");
    state.plugins.install(compiled);
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(ok(status, shown))
}

async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let plugins: Vec<Value> = state
        .plugins
        .list()
        .iter()
        .map(|p| plugin_json(p))
        .collect();
    Ok(ok(
        StatusCode::OK,
        json!({"plugins": plugins, "accepts": [CONTRACT]}),
    ))
}

async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let plugin = state
        .plugins
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("plugin {name} is not installed")))?;
    Ok(ok(StatusCode::OK, plugin_json(&plugin)))
}

/// The receivers (not deleted) that name a plugin.
async fn users_of(state: &AppState, name: &str) -> Result<Vec<String>, ApiError> {
    let mut users = Vec::new();
    for row in state.store.live_receivers().await? {
        if let Ok(receiver) = crate::state::decode_row(&row)
            && receiver.plugins().contains(&name)
        {
            users.push(row.id);
        }
    }
    Ok(users)
}

async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if state.plugins.get(&name).is_none() {
        return Err(ApiError::NotFound(format!(
            "plugin {name} is not installed"
        )));
    }
    let users = users_of(&state, &name).await?;
    if !users.is_empty() {
        return Err(ApiError::PluginInUse(format!(
            "plugin {name} is used by receiver(s) {}; change or delete them first",
            users.join(", ")
        )));
    }
    state.store.delete_plugin(name.clone()).await?;
    state.plugins.remove(&name);
    Ok(ok(StatusCode::OK, json!({"name": name, "deleted": true})))
}
