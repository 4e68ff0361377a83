//! Core's pipeline, run with what only the host has: JWKS key sets fetched over
//! the network, and plugin verifiers run in wasmtime.
//!
//! Core is pure and asks the host through its `Env`. Key sets are fetched before
//! core runs (from the cache), and a token signed by a key the cached set lacks
//! triggers one refresh and one more evaluation. Plugins run when core's walk of
//! the auth tree reaches them, not before: for a receiver with plugins the walk
//! runs on a blocking thread (wasmtime's WASI glue blocks), so the tree's order
//! and short-circuits decide what runs, and cheap checks (an IP allowlist, a
//! signature) spare the pool from strangers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hookgate_core::config::PluginAuth;
use hookgate_core::jwks::Jwks;
use hookgate_core::verify::{Env, FailureKind};
use hookgate_core::{Evaluation, Headers, Request};

use super::AcceptError;
use crate::plugins::{Plugins, Slot, WireRequest};
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
    /// The request as core reads it.
    pub fn core(&self) -> Request<'_> {
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

/// What core may ask of the host while verifying: key sets fetched beforehand,
/// and plugins run when (and only when) the auth tree reaches them.
struct HostEnv {
    keys: HashMap<String, Arc<Jwks>>,
    plugins: Option<LazyPlugins>,
}

/// Plugin verifiers run on demand from core's walk of the auth tree, on the
/// blocking thread that walk runs on (wasmtime's WASI glue blocks), so the
/// tree's order and short-circuits hold: in `all`, a failed `ip_allowlist`
/// means no plugin runs; in `any`, the first pass ends it.
struct LazyPlugins {
    plugins: Arc<Plugins>,
    request: WireRequest,
    /// A pool slot, taken at the first plugin call and kept for the rest.
    slot: Mutex<Option<Slot>>,
    /// Set when no slot was free: the host is busy, not the sender wrong.
    busy: AtomicBool,
    /// Each (plugin, config) runs once per request, whatever core asks again.
    verdicts: Mutex<HashMap<(String, String), Result<String, String>>>,
}

impl Env for HostEnv {
    fn jwks(&self, url: &str) -> Option<&Jwks> {
        self.keys.get(url).map(|k| &**k)
    }

    fn verify_plugin(&self, plugin: &PluginAuth, _request: &Request<'_>) -> Result<String, String> {
        let Some(lazy) = &self.plugins else {
            return Err("was not run".to_owned());
        };
        let key = (plugin.plugin.clone(), plugin.config.to_string());
        if let Some(verdict) = lock(&lazy.verdicts).get(&key) {
            return verdict.clone();
        }
        {
            let mut slot = lock(&lazy.slot);
            if slot.is_none() {
                *slot = lazy.plugins.try_slot();
            }
            if slot.is_none() {
                lazy.busy.store(true, Ordering::Relaxed);
                return Err("every plugin slot is busy".to_owned());
            }
        }
        let verdict = lazy.plugins.verify(&key.0, &lazy.request, &key.1);
        lock(&lazy.verdicts).insert(key, verdict.clone());
        verdict
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs core's evaluation of one request against a live receiver.
pub async fn evaluate(
    state: &AppState,
    live: &Arc<LiveReceiver>,
    wire: Wire<'_>,
) -> Result<Evaluation, AcceptError> {
    let urls = live.config.jwks_urls();
    let keys = if urls.is_empty() {
        HashMap::new()
    } else {
        state.keys.get(&urls, false).await
    };
    if live.plugin_verifiers.is_empty() {
        let mut env = HostEnv {
            keys,
            plugins: None,
        };
        let mut eval = hookgate_core::evaluate(&live.config, wire.core(), &env);
        if matches!(&eval.auth, Err(f) if f.kind == FailureKind::UnknownKey) && !urls.is_empty() {
            env.keys = state.keys.get(&urls, true).await;
            eval = hookgate_core::evaluate(&live.config, wire.core(), &env);
        }
        return Ok(eval);
    }
    // With plugins, the walk runs on a blocking thread, with an owned request.
    let lazy = LazyPlugins {
        plugins: Arc::clone(&state.plugins),
        request: WireRequest {
            method: wire.method.to_owned(),
            url: wire.url.to_owned(),
            headers: wire.headers.clone().into_pairs(),
            body: wire.body.clone(),
            remote_addr: wire.remote.map(|a| a.to_string()),
            received_at_ms: u64::try_from(wire.received_at).unwrap_or(0),
        },
        slot: Mutex::new(None),
        busy: AtomicBool::new(false),
        verdicts: Mutex::new(HashMap::new()),
    };
    let mut env = HostEnv {
        keys,
        plugins: Some(lazy),
    };
    let mut owned = OwnedWire::of(&wire);
    let mut refreshed = false;
    loop {
        let live = Arc::clone(live);
        let (eval, back_env, back_owned) = tokio::task::spawn_blocking(move || {
            let eval = hookgate_core::evaluate(&live.config, owned.wire().core(), &env);
            (eval, env, owned)
        })
        .await
        .map_err(|e| AcceptError::Internal(format!("evaluating with plugins: {e}")))?;
        (env, owned) = (back_env, back_owned);
        // The pool slot is the walk's, not the request's: given back before
        // anything is awaited (a key-set fetch may take seconds).
        if let Some(lazy) = &env.plugins {
            lock(&lazy.slot).take();
        }
        if env
            .plugins
            .as_ref()
            .is_some_and(|l| l.busy.load(Ordering::Relaxed))
        {
            // A full pool is the host being busy, not the sender being wrong:
            // 503, which providers retry, rather than a 401, which they do not.
            return Err(AcceptError::Busy(
                "every plugin slot is busy (plugins.max_concurrent); retry".into(),
            ));
        }
        if refreshed
            || urls.is_empty()
            || !matches!(&eval.auth, Err(f) if f.kind == FailureKind::UnknownKey)
        {
            return Ok(eval);
        }
        env.keys = state.keys.get(&urls, true).await;
        refreshed = true;
    }
}

/// A [`Wire`] request owned, to cross onto the blocking thread.
struct OwnedWire {
    method: String,
    url: String,
    headers: Headers,
    body: Bytes,
    remote: Option<SocketAddr>,
    received_at: i64,
}

impl OwnedWire {
    fn of(w: &Wire<'_>) -> Self {
        Self {
            method: w.method.to_owned(),
            url: w.url.to_owned(),
            headers: w.headers.clone(),
            body: w.body.clone(),
            remote: w.remote,
            received_at: w.received_at,
        }
    }

    fn wire(&self) -> Wire<'_> {
        Wire {
            method: &self.method,
            url: &self.url,
            headers: &self.headers,
            body: &self.body,
            remote: self.remote,
            received_at: self.received_at,
        }
    }
}
