//! Sandboxes: the `SandboxPlane` interface the runner drives.
//!
//! A plane owns sandboxes by name and performs DESIGN.md's operations on them:
//! ensure (create if missing, never recreate), resume, pause, delete, status,
//! deliver a request to one of the sandbox's ports, and run a script. Errors say
//! whether trying again later can help ([`PlaneError::retryable`]): the runner
//! retries those with backoff and fails the delivery on the rest.

pub mod echo;
pub mod local;
pub mod memory;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hookgate_core::SandboxName;
use hookgate_core::config::SandboxTemplate;
use serde::Serialize;

pub type PlaneFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PlaneError>> + Send + 'a>>;

/// What `ensure` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ensured {
    Created,
    Existed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Running,
    Paused,
    Deleted,
    Failed,
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

/// The operations of DESIGN.md's sandbox control plane.
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
    fn state<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, Option<SandboxState>>;
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
