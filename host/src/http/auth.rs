//! The admin-token layer in front of every management route.
//!
//! `Authorization: Bearer <admin token>`, compared in constant time: both sides
//! are hashed first, so neither the token's bytes nor its length leak through
//! timing.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::state::AppState;

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
