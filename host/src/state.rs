//! What the rooms above share: [`AppState`], the handles to every engine the host
//! runs, and the receiver cache the endpoint serves from.
//!
//! `AppState` is a bag of cheap clones (settings, store, runner, plane, plugins,
//! key sets, the dedupe index, the cache), built once by `Host::start` and handed
//! to the HTTP routes and to acceptance. It sits under those two rooms and over
//! the engines it holds; none of those engines import it, so they stay usable and
//! testable on their own.
//!
//! A receiver takes effect through one function, [`AppState::save_receiver`]:
//! stored durably, then the cache refreshed, then the edge told. Every route that
//! changes a receiver calls it, so the three can never drift apart.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hookgate_core::redact::Credentials;
use hookgate_core::{Receiver, Secret};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::dedupe::Dedupe;
use crate::jwks::KeySets;
use crate::plugins::Plugins;
use crate::runner::Runner;
use crate::sandbox::SandboxPlane;
use crate::settings::Settings;
use crate::store::{ReceiverRow, ReceiverStatus, Store, StoreError};
use crate::{edge_sync, ids};

/// A receiver as the endpoint serves it.
#[derive(Debug)]
pub struct LiveReceiver {
    pub id: String,
    pub config: Receiver,
    /// Its plugin verifiers as (plugin, config JSON text), deduplicated: worked
    /// out once here, not on every request.
    pub plugin_verifiers: Vec<(String, String)>,
    /// What its auth tree reads as credentials: never shown.
    pub credentials: Credentials,
    /// The same, less the headers a `deliver_to_port` asks for by
    /// `forward_headers` (its sandbox verifies the signature itself): blanked
    /// in what is stored, so never forwarded anywhere else either.
    pub redacted_at_rest: Credentials,
}

impl LiveReceiver {
    /// The credential headers kept at rest for a `forward_headers` (lowercase).
    pub fn kept_credentials(&self) -> Vec<String> {
        self.credentials
            .headers
            .iter()
            .filter(|h| !self.redacted_at_rest.header(h))
            .cloned()
            .collect()
    }
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
        let credentials = config.credentials();
        let mut redacted_at_rest = credentials.clone();
        let asked: Vec<&String> = config
            .rules
            .iter()
            .flat_map(|r| &r.actions)
            .filter_map(|a| match a {
                hookgate_core::config::Action::DeliverToPort(d) => Some(&d.forward_headers),
                _ => None,
            })
            .flatten()
            .collect();
        redacted_at_rest
            .headers
            .retain(|h| !asked.iter().any(|a| a.eq_ignore_ascii_case(h)));
        Self {
            id,
            credentials,
            redacted_at_rest,
            config,
            plugin_verifiers,
        }
    }

    /// How long this receiver's dedupe keys live, in seconds.
    pub fn retention_seconds(&self, settings: &Settings) -> u64 {
        self.config
            .idempotency
            .as_ref()
            .and_then(|i| i.retention_seconds)
            .unwrap_or(settings.dedupe.retention_seconds)
    }
}

/// Until when a key first seen at `received_at` (Unix ms) dedupes.
pub fn key_expires_at(received_at: i64, retention_seconds: u64) -> i64 {
    received_at
        .saturating_add(i64::try_from(retention_seconds.saturating_mul(1000)).unwrap_or(i64::MAX))
}

/// Decodes a stored receiver, resolving its `secret_ref`s from its own secrets.
pub fn decode_row(row: &ReceiverRow) -> Result<Receiver, hookgate_core::Error> {
    let source = |name: &str| {
        row.secrets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(n, v)| Secret::new(n.as_str(), v.as_str()))
    };
    Receiver::from_json_with_secrets(&row.config, &source)
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
    pub plane: Arc<dyn SandboxPlane>,
    pub plugins: Arc<Plugins>,
    /// Rejections being written: a flood of bad requests may not queue more
    /// than this many writes beside the deliveries' (the rest are counted, not
    /// kept).
    pub rejection_writes: Arc<tokio::sync::Semaphore>,
    /// Edge events being read: each may be tens of MiB before its signature
    /// can be checked, so only this many at once (the edge retries the rest).
    pub edge_reads: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("listen", &self.settings.listen)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Makes a receiver's row take effect: stored (durably), then served from the
    /// cache, then pushed to the edge. Creation, update, disabling and deletion
    /// all go through here.
    pub async fn save_receiver(&self, row: ReceiverRow) -> Result<(), StoreError> {
        self.store.put_receiver(row.clone()).await?;
        self.refresh_receiver(&row);
        edge_sync::push(&self.settings.edge, &row);
        Ok(())
    }

    /// Rebuilds one receiver's cache entry from its row (or drops it).
    pub fn refresh_receiver(&self, row: &ReceiverRow) {
        let mut map = self
            .receivers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if row.deleted_at.is_some() || row.status != ReceiverStatus::Active {
            map.remove(&row.id);
            return;
        }
        match decode_row(row) {
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

    /// At start: serves every stored receiver, and pushes each (and every recent
    /// deletion) to the edge, making good a push lost while the host was down.
    pub async fn load_receivers(&self) -> Result<usize, StoreError> {
        let live = self.store.live_receivers().await?;
        for row in &live {
            self.refresh_receiver(row);
            edge_sync::push(&self.settings.edge, row);
        }
        if !self.settings.edge.url.is_empty() {
            let since = ids::now_millis() - edge_sync::TOMBSTONE_MILLIS;
            for row in self.store.receivers_deleted_since(since).await? {
                edge_sync::push(&self.settings.edge, &row);
            }
        }
        Ok(live.len())
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
