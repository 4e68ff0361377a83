//! The HTTP room: the router, the server, and one file per resource.
//!
//! [`app`] returns the whole router, so tests drive it without a socket
//! (`app(state).oneshot(request)`); [`serve`] runs it on a listener with hyper
//! directly (not `axum::serve`) because a webhook endpoint faces the internet: it
//! needs a header-read timeout against slow clients, and a graceful drain on
//! SIGTERM. Every management route, and `/metrics`, sits behind
//! [`auth::require_admin`]; the receiver URL, the edge's ingest (signed by the
//! edge) and health do not.
//! Errors from every room become answers in one place, [`error`].

mod auth;
mod deliveries;
mod edge;
pub mod error;
mod hooks;
mod plugins;
mod receivers;
mod rejections;
mod sandboxes;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Request};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::settings::Settings;
use crate::signal::stopped;
use crate::state::AppState;
use error::ApiError;

/// Request bodies of the management API are configs, not payloads.
const MAX_JSON_BYTES: usize = 1 << 20;
/// An edge event carries a body of up to 32 MiB, base64-encoded.
pub(super) const MAX_EDGE_EVENT_BYTES: usize = 48 << 20;

pub fn app(state: AppState) -> Router {
    let management = Router::new()
        .merge(receivers::routes())
        .merge(deliveries::routes())
        .merge(rejections::routes())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BYTES))
        .merge(sandboxes::routes())
        .merge(plugins::routes())
        // Its labels name every receiver id, the unguessable part of a
        // receiver URL: for the operator only.
        .route("/metrics", get(render_metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .route("/hooks/{id}", post(hooks::receive))
        .route(
            "/v1/edge/ingest",
            post(edge::ingest).layer(axum::extract::DefaultBodyLimit::max(MAX_EDGE_EVENT_BYTES)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(management)
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .with_state(state)
}

async fn render_metrics(axum::extract::State(state): axum::extract::State<AppState>) -> String {
    state.metrics.render()
}

/// Serves `router` on `listener` until `stop` turns true, then drains: no new
/// connections, requests in flight finish (up to `drain`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &Settings,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(settings.limits.body_timeout_seconds))
        .max_buf_size(settings.limits.max_header_bytes.max(8192) + settings.limits.max_url_bytes);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drain = Duration::from_secs(settings.shutdown.drain_seconds);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period; closing them");
    }
    Ok(())
}

/// The remote address of a request served by [`serve`] (absent under `oneshot`).
pub fn remote_addr(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// Reads a request body through a limit that stops at the first byte too many
/// and a deadline that cuts off a slow client. `whose` names the limit in the
/// answer ("this receiver's").
async fn read_body(
    body: axum::body::Body,
    max: u64,
    deadline: Duration,
    whose: &str,
) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX));
    match tokio::time::timeout(deadline, limited.collect()).await {
        Err(_) => Err(ApiError::Timeout(format!(
            "body not received within {} s",
            deadline.as_secs()
        ))),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge(
            format!("body is over {whose} {max}-byte limit"),
        )),
        Ok(Err(e)) => Err(ApiError::BadRequest(format!("reading the body: {e}"))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// A JSON body, or a 400 that says what is wrong with it.
fn json_body(json: Result<axum::Json<Value>, JsonRejection>) -> Result<Value, ApiError> {
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

/// A JSON body as `T`; a field of the wrong shape is a 400 naming its path.
fn json_body_as<T: DeserializeOwned>(
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Result<T, ApiError> {
    let value = json_body(body)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        ApiError::BadRequest(format!("{at}: {}", e.into_inner()))
    })
}

/// The paging query of list routes (and a list's `status` filter).
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
