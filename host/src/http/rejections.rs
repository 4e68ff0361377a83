//! `GET /v1/webhooks/incoming/{id}/rejections`: the last requests a receiver
//! refused, newest first, each with when, from where, the answer it got, which
//! check failed and the whole reason, which the sender was not told.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::Page;
use super::error::{ApiError, ok};
use crate::ids;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/webhooks/incoming/{id}/rejections", get(list))
}

async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Page>,
) -> Result<Response, ApiError> {
    let (_, limit) = q.parse()?;
    if state.store.receiver(id.clone()).await?.is_none() {
        return Err(ApiError::NotFound(format!("no receiver {id}")));
    }
    let rows = state.store.rejections(id, limit).await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "at": ids::rfc3339(r.at),
                "remote_addr": r.remote_addr,
                "method": r.method,
                "path": r.path,
                "status": r.status,
                "code": r.code,
                "failed": r.failed,
                "reason": r.reason,
            })
        })
        .collect();
    Ok(ok(StatusCode::OK, json!({ "rejections": list })))
}
