//! The HTTP plane's wire format: what one host sends another to drive its
//! sandboxes through `/v1/sandboxes`, and what comes back.
//!
//! The client ([`super::remote`]) and the server (the `/v1/sandboxes` routes) both
//! use these types, so the format is written once. Forwarded bodies and header
//! values are base64 in JSON: they are bytes, not text. Errors cross the wire as
//! the envelope's stable codes, and [`plane_error`] turns them back into the same
//! [`PlaneError`], so the runner retries exactly what it would retry locally.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Ensured, ExecOutput, Forward, ForwardResponse, PlaneError, SandboxInfo};

/// A forwarded body may be as large as the largest receiver body limit
/// (`Receiver::MAX_BODY_BYTES`, 32 MiB), base64-encoded, plus its headers.
pub const MAX_DELIVER_BYTES: usize = 48 << 20;
/// Other plane requests carry a name, a template or a script.
pub const MAX_OPERATION_BYTES: usize = 1 << 20;
/// The longest a remote delivery may take, whatever the caller asks.
pub const MAX_DELIVER_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest a remote script may run, whatever the caller asks.
pub const MAX_EXEC_SECONDS: u64 = 3600;

/// `POST /v1/sandboxes`.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnsureBody {
    pub name: String,
    pub template: Value,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnsureAnswer {
    pub result: Ensured,
    pub sandbox: Option<SandboxInfo>,
}

/// `GET /v1/sandboxes`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listing {
    pub sandboxes: Vec<SandboxInfo>,
}

/// `POST /v1/sandboxes/{name}/deliver`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeliverBody {
    pub port: u16,
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Header names and base64 values, in order.
    pub headers: Vec<(String, String)>,
    /// Base64.
    pub body: String,
    pub timeout_ms: u64,
}

impl DeliverBody {
    pub fn new(port: u16, request: &Forward) -> Self {
        Self {
            port,
            method: request.method.clone(),
            path: request.path.clone(),
            headers: request
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), B64.encode(v)))
                .collect(),
            body: B64.encode(&request.body),
            timeout_ms: u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The request to forward; an error names the field at fault. The method
    /// and header names and values are checked as HTTP would check them.
    pub fn into_forward(self) -> Result<Forward, String> {
        if reqwest::Method::from_bytes(self.method.as_bytes()).is_err() {
            return Err(format!("method: {:?} is not an HTTP method", self.method));
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (i, (n, v)) in self.headers.into_iter().enumerate() {
            let value = B64
                .decode(&v)
                .map_err(|e| format!("headers[{i}]: value is not base64: {e}"))?;
            if axum::http::HeaderName::from_bytes(n.as_bytes()).is_err()
                || axum::http::HeaderValue::from_bytes(&value).is_err()
            {
                return Err(format!("headers[{i}]: {n:?} is not a valid header"));
            }
            headers.push((n, value));
        }
        let body = B64
            .decode(&self.body)
            .map_err(|e| format!("body: not base64: {e}"))?;
        Ok(Forward {
            method: self.method,
            path: self.path,
            headers,
            body: body.into(),
            timeout: Duration::from_millis(self.timeout_ms)
                .clamp(Duration::from_millis(1), MAX_DELIVER_TIMEOUT),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeliverAnswer {
    pub status: u16,
    pub excerpt: String,
    pub resumed: bool,
}

impl From<ForwardResponse> for DeliverAnswer {
    fn from(r: ForwardResponse) -> Self {
        Self {
            status: r.status,
            excerpt: r.excerpt,
            resumed: r.resumed,
        }
    }
}

impl From<DeliverAnswer> for ForwardResponse {
    fn from(a: DeliverAnswer) -> Self {
        Self {
            status: a.status,
            excerpt: a.excerpt,
            resumed: a.resumed,
        }
    }
}

/// `POST /v1/sandboxes/{name}/exec`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecBody {
    pub script: String,
    pub timeout_seconds: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ExecAnswer {
    pub exit_code: i32,
    pub tail: String,
}

impl From<ExecOutput> for ExecAnswer {
    fn from(o: ExecOutput) -> Self {
        Self {
            exit_code: o.exit_code,
            tail: o.tail,
        }
    }
}

impl From<ExecAnswer> for ExecOutput {
    fn from(a: ExecAnswer) -> Self {
        Self {
            exit_code: a.exit_code,
            tail: a.tail,
        }
    }
}

/// The envelope's stable error code for a plane error, and its HTTP status.
pub fn error_code(e: &PlaneError) -> (u16, &'static str) {
    match e {
        PlaneError::NotFound(_) => (404, "not_found"),
        PlaneError::Paused(_) => (409, "sandbox_paused"),
        PlaneError::Unavailable(_) => (503, "unavailable"),
        PlaneError::Rejected(_) => (422, "sandbox_rejected"),
    }
}

/// The plane error a remote host's error answer stands for. `message` is
/// already prefixed with the remote's address.
pub fn plane_error(status: u16, code: &str, name: &str, message: String) -> PlaneError {
    match (status, code) {
        (404, "not_found") => PlaneError::NotFound(name.to_owned()),
        (409, "sandbox_paused") => PlaneError::Paused(name.to_owned()),
        (400 | 422, _) => PlaneError::Rejected(message),
        // A wrong token or a remote outage may be fixed while the runner retries.
        _ => PlaneError::Unavailable(format!("{message} (HTTP {status})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_survives_the_wire_byte_for_byte() {
        let forward = Forward {
            method: "POST".into(),
            path: "/hook?x=1".into(),
            headers: vec![("X-Bin".into(), vec![0x80, b'a'])],
            body: bytes::Bytes::from_static(&[0, 159, 146, 150]),
            timeout: Duration::from_secs(7),
        };
        let wire = serde_json::to_string(&DeliverBody::new(3000, &forward)).unwrap();
        let back: DeliverBody = serde_json::from_str(&wire).unwrap();
        assert_eq!(back.port, 3000);
        let back = back.into_forward().unwrap();
        assert_eq!(
            (
                back.method,
                back.path,
                back.headers,
                back.body,
                back.timeout
            ),
            (
                forward.method,
                forward.path,
                forward.headers,
                forward.body,
                forward.timeout
            )
        );
    }

    #[test]
    fn bad_wire_fields_are_named() {
        let body = |method: &str, headers: Vec<(String, String)>, body: &str| DeliverBody {
            port: 1,
            method: method.into(),
            path: "/".into(),
            headers,
            body: body.into(),
            timeout_ms: 0,
        };
        let err = |b: DeliverBody| b.into_forward().unwrap_err();
        assert!(err(body("GE T", vec![], "")).starts_with("method:"));
        assert!(err(body("GET", vec![("a".into(), "!!".into())], "")).starts_with("headers[0]:"));
        assert!(
            err(body("GET", vec![("a b".into(), "eA==".into())], "")).starts_with("headers[0]:")
        );
        assert!(err(body("GET", vec![], "!!")).starts_with("body:"));
        // A zero timeout is raised to the smallest, not an instant failure.
        assert_eq!(
            body("GET", vec![], "").into_forward().unwrap().timeout,
            Duration::from_millis(1)
        );
    }

    #[test]
    fn every_plane_error_comes_back_as_itself() {
        for e in [
            PlaneError::NotFound("b".into()),
            PlaneError::Paused("b".into()),
            PlaneError::Rejected("m".into()),
            PlaneError::Unavailable("m".into()),
        ] {
            let (status, code) = error_code(&e);
            let back = plane_error(status, code, "b", "m".into());
            assert_eq!(std::mem::discriminant(&back), std::mem::discriminant(&e));
            assert_eq!(back.retryable(), e.retryable());
        }
    }
}
