//! hookgate-core: the receiving pipeline as pure functions.
//!
//! One definition of what hookgate decides about a webhook, run by both runtimes —
//! the native host and the Cloudflare Worker. Given a receiver's config and a
//! request exactly as received, core decides:
//!
//! 1. [`verify`] — is the request authentic (the `auth` tree: HMAC, JWT, tokens,
//!    IP allowlists, provider presets, plugins through the runtime)?
//! 2. [`handshake`] — is it a provider's challenge to be answered directly?
//! 3. [`idempotency`] — which key identifies it across the provider's retries?
//! 4. [`target`] — which sandbox is it for, and does the name pass its guards?
//! 5. [`rules`] — which rules match, and so which actions run?
//!
//! and [`explain`]s each decision. Core does no I/O, reads no clock, spawns
//! nothing, and builds for `wasm32-unknown-unknown`; effects (dedupe, storage,
//! sandboxes) belong to the runtimes. [`pipeline::evaluate`] runs the steps in
//! order. [`forward`] is the wire between the two runtimes: the event the edge
//! forwards to the host once it has accepted it, and the signature it travels
//! under.

pub mod config;
pub mod encoding;
pub mod explain;
pub mod forward;
pub mod handshake;
pub mod idempotency;
pub mod jwks;
pub mod pipeline;
pub mod redact;
pub mod request;
pub mod rules;
pub mod sandbox_name;
pub mod seal;
pub mod secret;
pub mod target;
pub mod verify;

pub use config::Receiver;
pub use pipeline::{Evaluation, evaluate};
pub use request::{Event, Headers, Request};
pub use secret::Secret;
pub use target::SandboxName;

/// Everything in core that can fail outside a verifier's verdict (which is a
/// [`verify::Failure`]): reading config before a request is evaluated, and
/// checking a forward from the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A config value is invalid; `path` names it (`rules[1].actions[0].port`).
    #[error("{}", if path.is_empty() { message.clone() } else { format!("{path}: {message}") })]
    Config { path: String, message: String },
    /// Config text is not JSON at all.
    #[error("reading config: not valid JSON: {0}")]
    Json(String),
    /// A forward from the edge was refused.
    #[error(transparent)]
    Forward(#[from] forward::ForwardError),
}
