//! `/v1/webhooks/incoming`: create, list, show, update and delete receivers.
//!
//! Receiver configs are validated by core, so a bad one is a 422 naming the
//! field; secrets are stored apart from the config and every response shows them
//! as `{"secret_ref": name}`. An update may refer to stored secrets by
//! `secret_ref` instead of resending them. Every change takes effect through
//! [`AppState::save_receiver`]: stored, cached, pushed to the edge.

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use hookgate_core::{Receiver, Secret};
use serde_json::{Value, json};

use super::error::{ApiError, ok};
use super::{Page, json_body, pagination};
use crate::ids;
use crate::state::AppState;
use crate::store::ReceiverRow;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/incoming", get(list).post(create))
        .route(
            "/v1/webhooks/incoming/{id}",
            get(show).put(update).delete(remove),
        )
}

/// Every plugin a receiver names must be installed, and for the right world.
fn check_installable(state: &AppState, receiver: &Receiver) -> Result<(), ApiError> {
    use crate::plugins::World;
    let wanted = receiver
        .plugin_verifiers()
        .into_iter()
        .map(|p| (p.plugin.as_str(), World::Verifier, "auth"))
        .chain(
            receiver
                .plugin_actions()
                .into_iter()
                .map(|p| (p.plugin.as_str(), World::Action, "rules")),
        );
    for (name, world, place) in wanted {
        match state.plugins.get(name) {
            None => {
                return Err(ApiError::InvalidConfig(format!(
                    "{place}: plugin {name:?} is not installed (POST /v1/plugins installs one)"
                )));
            }
            Some(p) if p.world != world => {
                return Err(ApiError::InvalidConfig(format!(
                    "{place}: plugin {name:?} is {} plugin; {place} needs {} plugin",
                    p.world.with_article(),
                    world.with_article()
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn receiver_json(state: &AppState, row: &ReceiverRow) -> Value {
    let mut config = row.config.clone();
    if let Value::Object(map) = &mut config {
        map.insert("id".into(), json!(row.id));
        map.insert("receiver_url".into(), json!(state.receiver_url(&row.id)));
        map.insert("created_at".into(), json!(ids::rfc3339(row.created_at)));
        map.insert("updated_at".into(), json!(ids::rfc3339(row.updated_at)));
    }
    config
}

fn row_from(id: String, receiver: &Receiver, created_at: i64, now: i64) -> ReceiverRow {
    ReceiverRow {
        id,
        name: receiver.name.clone(),
        status: receiver.status,
        config: serde_json::to_value(receiver).unwrap_or_default(),
        secrets: receiver
            .secrets()
            .iter()
            .map(|s| (s.name().to_owned(), s.expose().to_owned()))
            .collect(),
        created_at,
        updated_at: now,
        deleted_at: None,
    }
}

async fn create(
    State(state): State<AppState>,
    json: Result<axum::Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let value = json_body(json)?;
    let receiver =
        Receiver::from_json(&value).map_err(|e| ApiError::InvalidConfig(e.to_string()))?;
    check_installable(&state, &receiver)?;
    let now = ids::now_millis();
    let row = row_from(ids::receiver_id(), &receiver, now, now);
    state.save_receiver(row.clone()).await?;
    tracing::info!(receiver = %row.id, name = %row.name, "receiver created");
    Ok(ok(StatusCode::CREATED, receiver_json(&state, &row)))
}

async fn list(State(state): State<AppState>, Query(q): Query<Page>) -> Result<Response, ApiError> {
    let (page, limit) = q.parse()?;
    let (rows, total) = state.store.receivers(page, limit).await?;
    let webhooks: Vec<Value> = rows.iter().map(|r| receiver_json(&state, r)).collect();
    Ok(ok(
        StatusCode::OK,
        json!({"webhooks": webhooks, "pagination": pagination(page, limit, total)}),
    ))
}

pub(super) async fn existing(state: &AppState, id: &str) -> Result<ReceiverRow, ApiError> {
    match state.store.receiver(id.to_owned()).await? {
        Some(row) if row.deleted_at.is_none() => Ok(row),
        _ => Err(ApiError::NotFound(format!("no receiver {id}"))),
    }
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let row = existing(&state, &id).await?;
    Ok(ok(StatusCode::OK, receiver_json(&state, &row)))
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    json: Result<axum::Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let patch = json_body(json)?;
    let Value::Object(patch) = patch else {
        return Err(ApiError::BadRequest(
            "request body must be a JSON object".to_owned(),
        ));
    };
    let old = existing(&state, &id).await?;
    let mut config = old.config.clone();
    if let Value::Object(map) = &mut config {
        for (k, v) in patch {
            // Read-only fields that GET shows may be sent back unchanged.
            if matches!(
                k.as_str(),
                "id" | "receiver_url" | "created_at" | "updated_at"
            ) {
                continue;
            }
            map.insert(k, v);
        }
    }
    let source = |name: &str| {
        old.secrets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(n, v)| Secret::new(n.as_str(), v.as_str()))
    };
    let receiver = Receiver::from_json_with_secrets(&config, &source)
        .map_err(|e| ApiError::InvalidConfig(e.to_string()))?;
    check_installable(&state, &receiver)?;
    let row = row_from(old.id.clone(), &receiver, old.created_at, ids::now_millis());
    state.save_receiver(row.clone()).await?;
    tracing::info!(receiver = %row.id, status = row.status.as_str(), "receiver updated");
    Ok(ok(StatusCode::OK, receiver_json(&state, &row)))
}

async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut row = existing(&state, &id).await?;
    let now = ids::now_millis();
    row.deleted_at = Some(now);
    row.updated_at = now;
    row.secrets.clear();
    state.save_receiver(row.clone()).await?;
    tracing::info!(receiver = %row.id, "receiver deleted");
    Ok(ok(
        StatusCode::OK,
        json!({"id": row.id, "deleted": true, "deleted_at": ids::rfc3339(now)}),
    ))
}
