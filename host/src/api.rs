//! The management API of DESIGN.md: receivers, their deliveries, replay. (The
//! `/v1/sandboxes` routes are the HTTP plane's server, in `sandbox::http`.)
//!
//! Every route needs `Authorization: Bearer <admin token>`. Receiver configs are
//! validated by core, so a bad one is a 422 naming the field; secrets are stored
//! apart from the config and every response shows them as `{"secret_ref": name}`.
//! An update may refer to stored secrets by `secret_ref` instead of resending them.

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use hookgate_core::explain::{Outcome, Stage, Step, Trace};
use hookgate_core::request::is_credential;
use hookgate_core::{Event, Headers, Receiver, Secret};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::app::{AppState, LiveReceiver};
use crate::error::{ApiError, ok};
use crate::ids;
use crate::ingest::plan;
use crate::store::{DeliveryRow, ReceiverRow};

/// Request bodies of the management API are configs, not payloads.
const MAX_JSON_BYTES: usize = 1 << 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/incoming", post(create).get(list))
        .route(
            "/v1/webhooks/incoming/{id}",
            get(show).put(update).delete(remove),
        )
        .route("/v1/webhooks/incoming/{id}/deliveries", get(deliveries))
        .route("/v1/deliveries/{id}", get(delivery))
        .route("/v1/deliveries/{id}/replay", post(replay))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BYTES))
        .merge(crate::sandbox::http::routes())
        .merge(crate::plugins::routes::routes())
}

/// Checks the admin token in constant time.
pub async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(state.admin_token.as_bytes());
    if hookgate_core::verify::ct_eq(&a, &b) {
        Ok(next.run(req).await)
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// A JSON body, or a 400 that says what is wrong with it.
pub fn body(json: Result<axum::Json<Value>, JsonRejection>) -> Result<Value, ApiError> {
    json.map(|j| j.0).map_err(|e| match e {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::BadRequest("expected Content-Type: application/json".to_owned())
        }
        JsonRejection::BytesRejection(_) => {
            ApiError::BadRequest(format!("request body over {MAX_JSON_BYTES} bytes"))
        }
        other => ApiError::BadRequest(format!(
            "request body is not valid JSON: {}",
            other.body_text()
        )),
    })
}

/// Decodes a stored receiver, resolving its `secret_ref`s from its own secrets.
pub fn decode_row(row: &ReceiverRow) -> Result<Receiver, hookgate_core::Error> {
    let source = |name: &str| {
        row.secrets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(n, v)| Secret::new(n.as_str(), v.as_str()))
    };
    Receiver::from_json_with_secrets(&row.config, &source)
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
        status: match receiver.status {
            hookgate_core::config::Status::Active => "active".to_owned(),
            hookgate_core::config::Status::Disabled => "disabled".to_owned(),
        },
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
    let value = body(json)?;
    let receiver =
        Receiver::from_json(&value).map_err(|e| ApiError::InvalidConfig(e.to_string()))?;
    check_installable(&state, &receiver)?;
    let now = ids::now_millis();
    let row = row_from(ids::receiver_id(), &receiver, now, now);
    state.store.put_receiver(row.clone()).await?;
    state.refresh_receiver(&row);
    crate::edge::push(&state, &row);
    tracing::info!(receiver = %row.id, name = %row.name, "receiver created");
    Ok(ok(StatusCode::CREATED, receiver_json(&state, &row)))
}

#[derive(Debug, Deserialize)]
struct Page {
    page: Option<String>,
    limit: Option<String>,
    status: Option<String>,
}

impl Page {
    /// `page` from 1, `limit` 1..100 (default 20); a bad value is a 400.
    fn parse(&self) -> Result<(u32, u32), ApiError> {
        let num = |v: &Option<String>, name: &str, default: u32, max: u32| match v {
            None => Ok(default),
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::BadRequest(format!(
                    "{name}: expected an integer 1..{max}, found {text:?}"
                ))),
            },
        };
        Ok((
            num(&self.page, "page", 1, 1_000_000)?,
            num(&self.limit, "limit", 20, 100)?,
        ))
    }
}

fn pagination(page: u32, limit: u32, total: u64) -> Value {
    json!({"page": page, "limit": limit, "total": total, "pages": total.div_ceil(u64::from(limit))})
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

async fn existing(state: &AppState, id: &str) -> Result<ReceiverRow, ApiError> {
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
    let patch = body(json)?;
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
    state.store.put_receiver(row.clone()).await?;
    state.refresh_receiver(&row);
    crate::edge::push(&state, &row);
    tracing::info!(receiver = %row.id, status = %row.status, "receiver updated");
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
    state.store.put_receiver(row.clone()).await?;
    state.refresh_receiver(&row);
    crate::edge::push(&state, &row);
    tracing::info!(receiver = %row.id, "receiver deleted");
    Ok(ok(
        StatusCode::OK,
        json!({"id": row.id, "deleted": true, "deleted_at": ids::rfc3339(now)}),
    ))
}

const STATUSES: [&str; 4] = ["pending", "succeeded", "failed", "no_match"];

async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Page>,
) -> Result<Response, ApiError> {
    let (page, limit) = q.parse()?;
    if let Some(s) = &q.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "status: expected one of {}, found {s:?}",
            STATUSES.join(", ")
        )));
    }
    // History outlives deletion: a deleted receiver's deliveries stay listed.
    if state.store.receiver(id.clone()).await?.is_none() {
        return Err(ApiError::NotFound(format!("no receiver {id}")));
    }
    let (rows, total) = state
        .store
        .deliveries(id, q.status.clone(), page, limit)
        .await?;
    let list: Vec<Value> = rows.iter().map(|d| delivery_json(d, false)).collect();
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
    Ok(ok(StatusCode::OK, delivery_json(&d, true)))
}

/// A delivery as the API shows it; `full` adds the request and the trace.
fn delivery_json(d: &DeliveryRow, full: bool) -> Value {
    let mut v = json!({
        "id": d.id,
        "receiver_id": d.receiver_id,
        "status": d.status,
        "sandbox": d.sandbox,
        "received_at": ids::rfc3339(d.received_at),
        "verified_at": d.verified_at.map(ids::rfc3339),
        "actions_done": d.progress,
        "actions_total": d.plan.len(),
        "attempts": d.attempts,
        "last_error": d.last_error,
        "next_attempt_at": d.next_attempt_at.map(ids::rfc3339),
        "replay_of": d.replay_of,
        "body_bytes": d.body.len(),
    });
    if full {
        use base64::Engine;
        let headers: Vec<Value> = d
            .headers
            .iter()
            .map(|(n, value)| {
                let shown = if is_credential(n) {
                    "<redacted>".to_owned()
                } else {
                    String::from_utf8_lossy(value).into_owned()
                };
                json!([n, shown])
            })
            .collect();
        let body = match std::str::from_utf8(&d.body) {
            Ok(text) => json!({"encoding": "utf-8", "data": text}),
            Err(_) => {
                json!({"encoding": "base64", "data": base64::engine::general_purpose::STANDARD.encode(&d.body)})
            }
        };
        v["request"] = json!({
            "method": d.method, "url": d.url, "remote_addr": d.remote_addr,
            "headers": headers, "body": body,
        });
        v["actions"] = json!(d.plan.iter().map(|p| &p.spec).collect::<Vec<_>>());
        v["trace"] = serde_json::to_value(&d.trace).unwrap_or_default();
        v["explain"] = json!(d.trace.render());
    }
    v
}

/// Runs a stored delivery again with the receiver's current rules: not deduped,
/// not re-authenticated (it was verified when it arrived), recorded as a replay.
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
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let now = ids::now_millis();
    let request = hookgate_core::Request {
        method: &original.method,
        url: &original.url,
        headers: &headers,
        body: &original.body,
        remote_addr: original.remote_addr.as_deref().and_then(|a| a.parse().ok()),
        received_at: original.received_at / 1000,
    };
    let event = Event::new(request);
    let mut trace = Trace::default();
    trace.push(Step::new(
        Stage::Auth,
        Outcome::Info,
        format!(
            "replay of {} (verified at {}); not authenticated again",
            original.id,
            original.verified_at.map_or("-".to_owned(), ids::rfc3339)
        ),
    ));
    let (target, step) = hookgate_core::target::resolve(&live.config.target, &event);
    trace.push(step);
    let sandbox = target.map_err(ApiError::TargetRejected)?;
    let (matched, steps) = hookgate_core::rules::matching(&live.config.rules, &event);
    for s in steps {
        trace.push(s);
    }
    let plan = plan(&live, &matched);
    let new_id = ids::delivery_id();
    let d = DeliveryRow {
        replay_of: Some(original.id.clone()),
        ..DeliveryRow::accepted(
            new_id.clone(),
            original.receiver_id.clone(),
            now,
            original.request(),
            sandbox.to_string(),
            plan,
            trace,
        )
    };
    let status = d.status.clone();
    state.store.insert_delivery(d).await?;
    if status == "pending" {
        state.runner.submit(new_id.clone(), sandbox.to_string());
    }
    tracing::info!(delivery_id = %new_id, replay_of = %original.id, "replay accepted");
    Ok(ok(
        StatusCode::ACCEPTED,
        json!({"delivery_id": new_id, "status": "accepted", "replay_of": original.id}),
    ))
}
