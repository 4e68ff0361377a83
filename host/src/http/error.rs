//! One error type for HTTP answers, the one mapping from every room's errors to
//! it, and the one envelope every answer uses.
//!
//! Client errors carry a human sentence and a stable machine code
//! (`{"success": false, "error": "...", "code": "invalid_config", "timestamp": ...}`);
//! anything else is logged with its context and answered as a bare 500, so internals
//! never leak into responses. The rooms below HTTP have errors of their own
//! (store, plane, plugins, acceptance); the `From` impls here are the only place
//! they become status codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::accept::AcceptError;
use crate::ids;
use crate::plugins::PluginError;
use crate::sandbox::PlaneError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong admin token")]
    Unauthorized,
    /// Authentication of a webhook failed; the reason names no secret.
    #[error("{0}")]
    SignatureRejected(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A receiver config is invalid; the message starts with the field's path.
    #[error("{0}")]
    InvalidConfig(String),
    /// The event names a sandbox its receiver's guards refuse.
    #[error("{0}")]
    TargetRejected(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    HeadersTooLarge(String),
    #[error("{0}")]
    UriTooLong(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unavailable(String),
    /// A sandbox operation needs a running sandbox and this one is paused.
    #[error("{0}")]
    SandboxPaused(String),
    /// An uploaded component is not a plugin this host can run.
    #[error("{0}")]
    InvalidPlugin(String),
    #[error("{0}")]
    PluginInUse(String),
    /// The sandbox plane refuses the operation, and would again.
    #[error("{0}")]
    SandboxRejected(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Internal(anyhow::Error::new(e))
    }
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

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::Runtime(_) => Self::Internal(anyhow::Error::new(e)),
            _ => Self::InvalidPlugin(e.to_string()),
        }
    }
}

impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> Self {
        match e {
            AcceptError::TargetRejected(why) => Self::TargetRejected(why),
            AcceptError::Busy(why) => Self::Unavailable(why),
            AcceptError::Store(e) => e.into(),
            AcceptError::Internal(why) => Self::Internal(anyhow::anyhow!(why)),
        }
    }
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::SignatureRejected(_) => (StatusCode::UNAUTHORIZED, "signature_rejected"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::InvalidConfig(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_config"),
            Self::TargetRejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "target_rejected"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            Self::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            Self::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::SandboxPaused(_) => (StatusCode::CONFLICT, "sandbox_paused"),
            Self::InvalidPlugin(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin"),
            Self::PluginInUse(_) => (StatusCode::CONFLICT, "plugin_in_use"),
            Self::SandboxRejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "sandbox_rejected"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "internal error");
        }
        let body = json!({
            "success": false,
            "error": self.to_string(),
            "code": code,
            "timestamp": ids::rfc3339(ids::now_millis()),
        });
        let mut response = (status, Json(body)).into_response();
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// `{"success": true, "data": ..., "timestamp": ...}` with a status.
pub fn ok<T: Serialize>(status: StatusCode, data: T) -> Response {
    let body = json!({
        "success": true,
        "data": data,
        "timestamp": ids::rfc3339(ids::now_millis()),
    });
    (status, Json(body)).into_response()
}
