//! The host assembled: shared state, the router, and the HTTP server.
//!
//! `app(state)` returns the whole router, so tests can drive it without a socket;
//! [`serve`] runs it on a listener with hyper directly (not `axum::serve`) because a
//! webhook endpoint faces the internet: it needs a header-read timeout against
//! slow clients, and a graceful drain on SIGTERM.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::routing::{get, post};
use hookgate_core::Receiver;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::dedupe::Dedupe;
use crate::jwks::KeySets;
use crate::runner::Runner;
use crate::settings::Settings;
use crate::store::{ReceiverRow, Store};
use crate::{api, ingest};

/// A receiver as the endpoint serves it.
#[derive(Debug)]
pub struct LiveReceiver {
    pub id: String,
    pub config: Receiver,
    /// Its plugin verifiers as (plugin, config JSON text), deduplicated: worked
    /// out once here, not on every request.
    pub plugin_verifiers: Vec<(String, String)>,
}

impl LiveReceiver {
    pub fn new(id: String, config: Receiver) -> Self {
        let mut plugin_verifiers: Vec<(String, String)> = config
            .plugin_verifiers()
            .iter()
            .map(|p| (p.plugin.clone(), p.config.to_string()))
            .collect();
        plugin_verifiers.sort();
        plugin_verifiers.dedup();
        Self {
            id,
            config,
            plugin_verifiers,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub runner: Runner,
    pub keys: KeySets,
    pub admin_token: Arc<str>,
    pub receivers: Arc<RwLock<HashMap<String, Arc<LiveReceiver>>>>,
    pub dedupe: Dedupe,
    pub metrics: PrometheusHandle,
    /// The plane the runner drives, also served at `/v1/sandboxes`.
    pub plane: Arc<dyn crate::sandbox::SandboxPlane>,
    pub plugins: Arc<crate::plugins::Plugins>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("listen", &self.settings.listen)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Rebuilds one receiver's cache entry from its row (or drops it).
    pub fn refresh_receiver(&self, row: &ReceiverRow) {
        let mut map = self
            .receivers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if row.deleted_at.is_some() || row.status != "active" {
            map.remove(&row.id);
            return;
        }
        match api::decode_row(row) {
            Ok(config) => {
                map.insert(
                    row.id.clone(),
                    Arc::new(LiveReceiver::new(row.id.clone(), config)),
                );
            }
            Err(e) => {
                tracing::error!(receiver = %row.id, error = %e, "stored receiver no longer decodes; not serving it");
                map.remove(&row.id);
            }
        }
    }

    pub fn live(&self, id: &str) -> Option<Arc<LiveReceiver>> {
        self.receivers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// The URL a provider calls for a receiver.
    pub fn receiver_url(&self, id: &str) -> String {
        format!("{}/hooks/{id}", self.settings.public_base())
    }
}

/// The installed Prometheus recorder (one per process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ])
                .unwrap_or_else(|_| metrics_exporter_prometheus::PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests); then ours only renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub fn app(state: AppState) -> Router {
    let management = api::routes().layer(axum::middleware::from_fn_with_state(
        state.clone(),
        api::require_admin,
    ));
    Router::new()
        .route("/hooks/{id}", post(ingest::receive))
        .route(
            "/v1/edge/ingest",
            // An event carries a body of up to 32 MiB, base64-encoded.
            post(crate::edge::ingest).layer(axum::extract::DefaultBodyLimit::max(48 << 20)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(render_metrics))
        .merge(management)
        .fallback(|| async { crate::error::ApiError::NotFound("no such route".to_owned()) })
        .with_state(state)
}

async fn render_metrics(axum::extract::State(state): axum::extract::State<AppState>) -> String {
    state.metrics.render()
}

/// Serves `router` on `listener` until `stop` turns true, then drains: no new
/// connections, requests in flight finish (up to `drain`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &Settings,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(settings.limits.body_timeout_seconds))
        .max_buf_size(settings.limits.max_header_bytes.max(8192) + settings.limits.max_url_bytes);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drain = Duration::from_secs(settings.shutdown.drain_seconds);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period; closing them");
    }
    Ok(())
}

/// The remote address of a request served by [`serve`] (absent under `oneshot`).
pub fn remote_addr(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}
