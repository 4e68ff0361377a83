//! Core's pipeline, run with what only the host has: JWKS key sets fetched over
//! the network, and plugin verifiers run in wasmtime.
//!
//! Core is pure, so anything that needs I/O is worked out first and handed to it
//! through its `Env`: plugin verdicts are computed on a blocking thread before
//! core runs (wasmtime's WASI glue blocks), keyed by plugin name and config text;
//! key sets come from the cache, and a token signed by a key the cached set lacks
//! triggers one refresh and one more evaluation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hookgate_core::config::PluginAuth;
use hookgate_core::jwks::Jwks;
use hookgate_core::verify::{Env, FailureKind};
use hookgate_core::{Evaluation, Headers, Request};

use super::AcceptError;
use crate::plugins::WireRequest;
use crate::state::{AppState, LiveReceiver};

/// A request as it came off the wire, for [`evaluate`].
#[derive(Debug, Clone, Copy)]
pub struct Wire<'a> {
    pub method: &'a str,
    /// The full public URL.
    pub url: &'a str,
    pub headers: &'a Headers,
    pub body: &'a Bytes,
    pub remote: Option<SocketAddr>,
    /// Unix ms.
    pub received_at: i64,
}

impl Wire<'_> {
    fn core(&self) -> Request<'_> {
        Request {
            method: self.method,
            url: self.url,
            headers: self.headers,
            body: self.body,
            remote_addr: self.remote.map(|a| a.ip()),
            received_at: self.received_at / 1000,
        }
    }
}

type PluginVerdicts = HashMap<(String, String), Result<String, String>>;

/// What core may ask of the host while verifying.
struct HostEnv {
    keys: HashMap<String, Arc<Jwks>>,
    plugin_verdicts: PluginVerdicts,
}

impl Env for HostEnv {
    fn jwks(&self, url: &str) -> Option<&Jwks> {
        self.keys.get(url).map(|k| &**k)
    }

    fn verify_plugin(&self, plugin: &PluginAuth, _request: &Request<'_>) -> Result<String, String> {
        self.plugin_verdicts
            .get(&(plugin.plugin.clone(), plugin.config.to_string()))
            .cloned()
            .unwrap_or_else(|| Err("was not run".to_owned()))
    }
}

/// Runs core's evaluation of one request against a live receiver.
pub async fn evaluate(
    state: &AppState,
    live: &LiveReceiver,
    wire: Wire<'_>,
) -> Result<Evaluation, AcceptError> {
    let plugin_verdicts = if live.plugin_verifiers.is_empty() {
        PluginVerdicts::new()
    } else {
        run_plugin_verifiers(state, live, &wire).await?
    };
    let urls = live.config.jwks_urls();
    let mut env = HostEnv {
        keys: if urls.is_empty() {
            HashMap::new()
        } else {
            state.keys.get(&urls, false).await
        },
        plugin_verdicts,
    };
    let mut eval = hookgate_core::evaluate(&live.config, wire.core(), &env);
    if matches!(&eval.auth, Err(f) if f.kind == FailureKind::UnknownKey) && !urls.is_empty() {
        env.keys = state.keys.get(&urls, true).await;
        eval = hookgate_core::evaluate(&live.config, wire.core(), &env);
    }
    Ok(eval)
}

/// Runs every plugin verifier of a receiver on a blocking thread and returns
/// their verdicts for [`HostEnv`].
async fn run_plugin_verifiers(
    state: &AppState,
    live: &LiveReceiver,
    wire: &Wire<'_>,
) -> Result<PluginVerdicts, AcceptError> {
    let jobs = live.plugin_verifiers.clone();
    // A full pool is the host being busy, not the sender being wrong: 503, which
    // providers retry, rather than a 401, which they do not.
    let slot = state.plugins.try_slot().ok_or_else(|| {
        AcceptError::Busy("every plugin slot is busy (plugins.max_concurrent); retry".into())
    })?;
    let request = WireRequest {
        method: wire.method.to_owned(),
        url: wire.url.to_owned(),
        headers: wire.headers.clone().into_pairs(),
        body: wire.body.clone(),
        remote_addr: wire.remote.map(|a| a.to_string()),
        received_at_ms: u64::try_from(wire.received_at).unwrap_or(0),
    };
    let plugins = Arc::clone(&state.plugins);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        jobs.into_iter()
            .map(|(name, config)| {
                let verdict = plugins.verify(&name, &request, &config);
                ((name, config), verdict)
            })
            .collect()
    })
    .await
    .map_err(|e| AcceptError::Internal(format!("running plugin verifiers: {e}")))
}
