//! The HTTP plane: one host drives the sandboxes another host runs.
//!
//! Both sides are here, so the wire format lives in one file. The server side is
//! the `/v1/sandboxes` part of the management API (admin token required): every
//! plane operation as a route over whatever plane this host drives. The client,
//! [`HttpPlane`], implements [`SandboxPlane`] by calling those routes on another
//! host (`[sandbox] plane = "http"`). Errors cross the wire as the envelope's
//! stable codes and come back as the same [`PlaneError`], so the runner retries
//! exactly what it would retry locally. Forwarded bodies and header values are
//! base64 in JSON: they are bytes, not text.
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
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hookgate_core::SandboxName;
use hookgate_core::config::{Action, SandboxTemplate};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Ensured, ExecOutput, Forward, ForwardResponse, PlaneError, PlaneFuture, SandboxInfo,
    SandboxPlane,
};
use crate::app::AppState;
use crate::error::{ApiError, ok};

/// A forwarded body may be as large as the largest receiver body limit
/// (`Receiver::MAX_BODY_BYTES`, 32 MiB), base64-encoded, plus its headers.
const MAX_DELIVER_BYTES: usize = 48 << 20;
/// Other plane requests carry a name, a template or a script.
const MAX_OPERATION_BYTES: usize = 1 << 20;
/// Slack on top of an operation's own timeout before the client gives up on the
/// remote host (it may be waiting for a new sandbox to listen).
const CLIENT_SLACK: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
struct EnsureBody {
    name: String,
    template: Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct EnsureAnswer {
    result: Ensured,
    sandbox: Option<SandboxInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DeliverBody {
    port: u16,
    method: String,
    /// Path and query, starting with `/`.
    path: String,
    /// Header names and base64 values, in order.
    headers: Vec<(String, String)>,
    /// Base64.
    body: String,
    timeout_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct DeliverAnswer {
    status: u16,
    excerpt: String,
    resumed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExecBody {
    script: String,
    timeout_seconds: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExecAnswer {
    exit_code: i32,
    tail: String,
}

// ---- server ---------------------------------------------------------------------

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

impl From<PlaneError> for ApiError {
    fn from(e: PlaneError) -> Self {
        match e {
            PlaneError::NotFound(_) => Self::NotFound(e.to_string()),
            PlaneError::Paused(_) => Self::SandboxPaused(e.to_string()),
            PlaneError::Unavailable(m) => Self::Unavailable(m),
            PlaneError::Rejected(m) => Self::SandboxRejected(m),
        }
    }
}

fn name(raw: &str) -> Result<SandboxName, ApiError> {
    SandboxName::parse(raw).map_err(|e| ApiError::BadRequest(format!("sandbox name: {e}")))
}

fn json_body<T: DeserializeOwned>(
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Result<T, ApiError> {
    let value = crate::api::body(body)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        ApiError::BadRequest(format!("{at}: {}", e.into_inner()))
    })
}

async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let list = state.plane.list().await?;
    Ok(ok(StatusCode::OK, json!({"sandboxes": list})))
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
    let body: EnsureBody = json_body(body)?;
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
    let body: DeliverBody = json_body(body)?;
    // The port and path are checked exactly as a receiver's deliver_to_port is.
    Action::from_json(&json!({
        "action_type": "deliver_to_port", "port": body.port, "path": body.path,
    }))
    .map_err(|e| ApiError::InvalidConfig(e.to_string()))?;
    if reqwest::Method::from_bytes(body.method.as_bytes()).is_err() {
        return Err(ApiError::BadRequest(format!(
            "method: {:?} is not an HTTP method",
            body.method
        )));
    }
    let mut headers = Vec::with_capacity(body.headers.len());
    for (i, (n, v)) in body.headers.into_iter().enumerate() {
        let value = B64
            .decode(&v)
            .map_err(|e| ApiError::BadRequest(format!("headers[{i}]: value is not base64: {e}")))?;
        if axum::http::HeaderName::from_bytes(n.as_bytes()).is_err()
            || axum::http::HeaderValue::from_bytes(&value).is_err()
        {
            return Err(ApiError::BadRequest(format!(
                "headers[{i}]: {n:?} is not a valid header"
            )));
        }
        headers.push((n, value));
    }
    let payload = B64
        .decode(&body.body)
        .map_err(|e| ApiError::BadRequest(format!("body: not base64: {e}")))?;
    let forward = Forward {
        method: body.method,
        path: body.path,
        headers,
        body: payload.into(),
        timeout: Duration::from_millis(body.timeout_ms.clamp(1, 300_000)),
    };
    let answer = state.plane.deliver(&name, body.port, forward).await?;
    Ok(ok(
        StatusCode::OK,
        DeliverAnswer {
            status: answer.status,
            excerpt: answer.excerpt,
            resumed: answer.resumed,
        },
    ))
}

async fn exec(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let name = name(&raw)?;
    let body: ExecBody = json_body(body)?;
    let timeout = Duration::from_secs(body.timeout_seconds.clamp(1, 3600));
    let out = state.plane.exec(&name, &body.script, timeout).await?;
    Ok(ok(
        StatusCode::OK,
        ExecAnswer {
            exit_code: out.exit_code,
            tail: out.tail,
        },
    ))
}

// ---- client ---------------------------------------------------------------------

/// A [`SandboxPlane`] served by another hookgate host.
pub struct HttpPlane {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPlane")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The error envelope of the remote host.
#[derive(Debug, Deserialize)]
struct Failure {
    #[serde(default)]
    error: String,
    #[serde(default)]
    code: String,
}

#[derive(Debug, Deserialize)]
struct Success<T> {
    data: T,
}

#[derive(Debug, Deserialize)]
struct Listing {
    sandboxes: Vec<SandboxInfo>,
}

impl HttpPlane {
    /// `base` is the other host's URL (`http://10.0.0.7:8080`); `token` its admin token.
    pub fn new(base: &str, token: &str) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            client,
        })
    }

    /// Sends one operation and decodes the envelope's `data`, or maps the remote
    /// error back to the [`PlaneError`] it was made from.
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
        name: &str,
    ) -> Result<T, PlaneError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .client
            .request(method, &url)
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.map_err(|e| {
            PlaneError::Unavailable(format!(
                "remote plane {}: {}",
                self.base,
                if e.is_timeout() {
                    format!("no answer within {} s", timeout.as_secs())
                } else {
                    e.without_url().to_string()
                }
            ))
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            PlaneError::Unavailable(format!("remote plane {}: {}", self.base, e.without_url()))
        })?;
        if status.is_success() {
            return serde_json::from_slice::<Success<T>>(&bytes)
                .map(|s| s.data)
                .map_err(|e| {
                    PlaneError::Unavailable(format!(
                        "remote plane {}: unreadable answer to {path}: {e}",
                        self.base
                    ))
                });
        }
        let failure: Failure = serde_json::from_slice(&bytes).unwrap_or(Failure {
            error: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            code: String::new(),
        });
        let message = format!("remote plane {}: {}", self.base, failure.error);
        Err(match (status.as_u16(), failure.code.as_str()) {
            (404, "not_found") => PlaneError::NotFound(name.to_owned()),
            (409, "sandbox_paused") => PlaneError::Paused(name.to_owned()),
            (400 | 422, _) => PlaneError::Rejected(message),
            // A wrong token or a remote outage may be fixed while the runner retries.
            _ => PlaneError::Unavailable(format!("{message} (HTTP {})", status.as_u16())),
        })
    }

    fn op<'a>(&'a self, name: &'a SandboxName, verb: &'static str) -> PlaneFuture<'a, ()> {
        Box::pin(async move {
            let _: Option<SandboxInfo> = self
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/sandboxes/{name}/{verb}"),
                    None,
                    CLIENT_SLACK,
                    name.as_str(),
                )
                .await?;
            Ok(())
        })
    }
}

impl SandboxPlane for HttpPlane {
    fn ensure<'a>(
        &'a self,
        name: &'a SandboxName,
        template: &'a SandboxTemplate,
    ) -> PlaneFuture<'a, Ensured> {
        Box::pin(async move {
            let body = serde_json::to_value(EnsureBody {
                name: name.to_string(),
                template: serde_json::to_value(template).unwrap_or(Value::Null),
            })
            .unwrap_or(Value::Null);
            let answer: EnsureAnswer = self
                .call(
                    reqwest::Method::POST,
                    "/v1/sandboxes",
                    Some(body),
                    // Creating may wait for the sandbox to listen.
                    CLIENT_SLACK * 4,
                    name.as_str(),
                )
                .await?;
            Ok(answer.result)
        })
    }

    fn resume<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        self.op(name, "resume")
    }

    fn pause<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        self.op(name, "pause")
    }

    fn delete<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(async move {
            let _: Option<SandboxInfo> = self
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/sandboxes/{name}"),
                    None,
                    CLIENT_SLACK,
                    name.as_str(),
                )
                .await?;
            Ok(())
        })
    }

    fn inspect<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, Option<SandboxInfo>> {
        Box::pin(async move {
            match self
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/sandboxes/{name}"),
                    None,
                    CLIENT_SLACK,
                    name.as_str(),
                )
                .await
            {
                Ok(info) => Ok(Some(info)),
                Err(PlaneError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn list(&self) -> PlaneFuture<'_, Vec<SandboxInfo>> {
        Box::pin(async move {
            let listing: Listing = self
                .call(
                    reqwest::Method::GET,
                    "/v1/sandboxes",
                    None,
                    CLIENT_SLACK,
                    "",
                )
                .await?;
            Ok(listing.sandboxes)
        })
    }

    fn deliver<'a>(
        &'a self,
        name: &'a SandboxName,
        port: u16,
        request: Forward,
    ) -> PlaneFuture<'a, ForwardResponse> {
        Box::pin(async move {
            let timeout = request.timeout;
            let body = serde_json::to_value(DeliverBody {
                port,
                method: request.method,
                path: request.path,
                headers: request
                    .headers
                    .iter()
                    .map(|(n, v)| (n.clone(), B64.encode(v)))
                    .collect(),
                body: B64.encode(&request.body),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })
            .unwrap_or(Value::Null);
            let answer: DeliverAnswer = self
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/sandboxes/{name}/deliver"),
                    Some(body),
                    timeout + CLIENT_SLACK,
                    name.as_str(),
                )
                .await?;
            Ok(ForwardResponse {
                status: answer.status,
                excerpt: answer.excerpt,
                resumed: answer.resumed,
            })
        })
    }

    fn exec<'a>(
        &'a self,
        name: &'a SandboxName,
        script: &'a str,
        timeout: Duration,
    ) -> PlaneFuture<'a, ExecOutput> {
        Box::pin(async move {
            let body = serde_json::to_value(ExecBody {
                script: script.to_owned(),
                timeout_seconds: timeout.as_secs().max(1),
            })
            .unwrap_or(Value::Null);
            let answer: ExecAnswer = self
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/sandboxes/{name}/exec"),
                    Some(body),
                    timeout + CLIENT_SLACK,
                    name.as_str(),
                )
                .await?;
            Ok(ExecOutput {
                exit_code: answer.exit_code,
                tail: answer.tail,
            })
        })
    }
}
