//! The HTTP plane's client: [`HttpPlane`] implements [`SandboxPlane`] by calling
//! another hookgate host's `/v1/sandboxes` routes (`[sandbox] plane = "http"`),
//! so one host can drive the sandboxes another host runs.
//!
//! The wire format is in [`super::wire`], shared with the server side. Remote
//! errors come back as the [`PlaneError`] they were made from, so the runner
//! retries exactly what it would retry locally. Redirects are not followed: the
//! admin token goes to the configured host and nowhere else.

use std::time::Duration;

use hookgate_core::SandboxName;
use hookgate_core::config::SandboxTemplate;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::wire::{
    DeliverAnswer, DeliverBody, EnsureAnswer, EnsureBody, ExecAnswer, ExecBody, Listing,
    plane_error,
};
use super::{
    Ensured, ExecOutput, Forward, ForwardResponse, PlaneError, PlaneFuture, SandboxInfo,
    SandboxPlane,
};

/// Slack on top of an operation's own timeout before the client gives up on the
/// remote host (it may be waiting for a new sandbox to listen).
const CLIENT_SLACK: Duration = Duration::from_secs(30);

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
        Err(plane_error(status.as_u16(), &failure.code, name, message))
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
            let body =
                serde_json::to_value(DeliverBody::new(port, &request)).unwrap_or(Value::Null);
            let answer: DeliverAnswer = self
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/sandboxes/{name}/deliver"),
                    Some(body),
                    timeout + CLIENT_SLACK,
                    name.as_str(),
                )
                .await?;
            Ok(ForwardResponse::from(answer))
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
            Ok(ExecOutput::from(answer))
        })
    }
}
