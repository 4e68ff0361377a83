//! Sandboxes: the `SandboxPlane` interface the runner drives.
//!
//! A plane owns sandboxes by name and performs the sandbox operations on them:
//! ensure (create if missing, never recreate), resume, pause, delete, status,
//! deliver a request to one of the sandbox's ports, and run a script. Errors say
//! whether trying again later can help ([`PlaneError::retryable`]): the runner
//! retries those with backoff and fails the delivery on the rest.
//!
//! Two planes are real: [`local`] runs sandboxes as process groups on this
//! machine, and [`remote`] drives the plane of another hookgate host through its
//! `/v1/sandboxes` API (whose server side is the HTTP room's `sandboxes` routes;
//! the format both speak is [`wire`]). `memory`, compiled only for tests (the
//! `testkit` feature), records calls and injects faults for the runner's tests.

pub mod echo;
pub mod local;
#[cfg(any(test, feature = "testkit"))]
pub mod memory;
pub mod remote;
pub mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hookgate_core::SandboxName;
use hookgate_core::config::SandboxTemplate;
use serde::{Deserialize, Serialize};

pub use crate::store::SandboxState;

pub type PlaneFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PlaneError>> + Send + 'a>>;

/// What `ensure` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ensured {
    Created,
    Existed,
}

/// A sandbox as `GET /v1/sandboxes/{name}` shows it (the same on every plane,
/// and the HTTP plane's wire format). Times are RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub name: String,
    pub state: SandboxState,
    pub image: String,
    /// Sandbox port → the loopback port it is reachable on (local plane).
    pub ports: BTreeMap<String, u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub created_at: String,
    pub last_activity_at: String,
    pub updated_at: String,
    /// When `lifecycle.pause_after_idle` will pause it, if nothing arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_at: Option<String>,
    /// When `lifecycle.delete_after` will delete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_at: Option<String>,
    #[serde(default)]
    pub exit_status: Option<String>,
    /// The last lines the sandbox printed, kept when it failed.
    #[serde(default)]
    pub last_output: Option<String>,
    /// Newest first; only in the single-sandbox view.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_actions: Vec<SandboxEvent>,
}

/// Something done to a sandbox, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxEvent {
    pub at: String,
    pub action: String,
    pub detail: String,
}

/// A request forwarded into a sandbox.
#[derive(Debug, Clone)]
pub struct Forward {
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: bytes::Bytes,
    pub timeout: Duration,
}

/// The sandbox's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardResponse {
    pub status: u16,
    /// The start of the response body, for the trace.
    pub excerpt: String,
    /// The sandbox was paused and its `lifecycle.auto_resume` woke it first.
    pub resumed: bool,
}

/// A script's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    /// The last lines of combined output, for the trace.
    pub tail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaneError {
    #[error("sandbox {0} does not exist")]
    NotFound(String),
    #[error("sandbox {0} is paused")]
    Paused(String),
    /// The plane or the sandbox could not be reached, or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// The operation is refused and will be refused again.
    #[error("{0}")]
    Rejected(String),
}

impl PlaneError {
    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The operations of a sandbox control plane.
pub trait SandboxPlane: Send + Sync + 'static {
    /// Creates the sandbox unless it exists; never recreates or updates one.
    fn ensure<'a>(
        &'a self,
        name: &'a SandboxName,
        template: &'a SandboxTemplate,
    ) -> PlaneFuture<'a, Ensured>;
    fn resume<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()>;
    fn pause<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()>;
    fn delete<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()>;
    /// One sandbox with its recent actions; `None` if the plane never had it.
    fn inspect<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, Option<SandboxInfo>>;
    /// Every sandbox the plane knows, deleted ones included, newest first.
    fn list(&self) -> PlaneFuture<'_, Vec<SandboxInfo>>;
    /// Forwards a request to one of the sandbox's own ports. A paused sandbox
    /// answers [`PlaneError::Paused`] unless its `lifecycle.auto_resume` is
    /// `on_activity`, in which case it is resumed first.
    fn deliver<'a>(
        &'a self,
        name: &'a SandboxName,
        port: u16,
        request: Forward,
    ) -> PlaneFuture<'a, ForwardResponse>;
    fn exec<'a>(
        &'a self,
        name: &'a SandboxName,
        script: &'a str,
        timeout: Duration,
    ) -> PlaneFuture<'a, ExecOutput>;
}
