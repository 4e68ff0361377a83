//! Key sets for `jwt` receivers that name a `jwks_url`: fetched, cached, refreshed.
//!
//! A set is fetched on first use and trusted for `jwks.cache_seconds`; a token
//! whose `kid` the cached set lacks triggers one early refresh, at most once per
//! `jwks.min_refresh_seconds` per URL, so a flood of bad tokens cannot turn
//! hookgate into a load generator against the identity provider. Fetches are
//! single-flight: one per URL at a time, and whoever waited for it uses its
//! result instead of fetching again. A key set's body is capped, and redirects
//! are not followed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookgate_core::jwks::Jwks;

use crate::settings;

/// The largest key set read; real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug)]
struct Entry {
    set: Option<Arc<Jwks>>,
    fetched_at: Instant,
}

#[derive(Debug, Clone)]
pub struct KeySets {
    client: reqwest::Client,
    settings: settings::Jwks,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    /// One lock per URL, held while it is fetched: the single flight.
    flights: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl KeySets {
    pub fn new(settings: settings::Jwks) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_seconds))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            client,
            settings,
            entries: Arc::new(Mutex::new(HashMap::new())),
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The sets for `urls`, fetching those missing or expired (or, with `refresh`,
    /// those not fetched within `min_refresh_seconds`). A set that cannot be
    /// fetched is absent: verification then fails with "not loaded".
    pub async fn get(&self, urls: &[&str], refresh: bool) -> HashMap<String, Arc<Jwks>> {
        let mut out = HashMap::new();
        for url in urls {
            let (mut cached, mut stale) = self.cached(url, refresh);
            if stale {
                // Wait for any fetch of this URL in flight, then look again: what
                // it fetched is fresh now, and then this request fetches nothing.
                let flight = Arc::clone(
                    self.flights
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry((*url).to_owned())
                        .or_default(),
                );
                let asked_at = Instant::now();
                let _flying = flight.lock().await;
                let landed = self
                    .entries
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(*url)
                    .filter(|e| e.fetched_at >= asked_at)
                    .map(|e| e.set.clone());
                if let Some(set) = landed {
                    (cached, stale) = (set, false);
                }
                if stale {
                    let fetched = self.fetch(url).await;
                    let keep = fetched.or(cached);
                    self.entries
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(
                            (*url).to_owned(),
                            Entry {
                                set: keep.clone(),
                                fetched_at: Instant::now(),
                            },
                        );
                    cached = keep;
                }
            }
            if let Some(set) = cached {
                out.insert((*url).to_owned(), set);
            }
        }
        out
    }

    /// The cached set for `url`, and whether it must be fetched (missing,
    /// expired, or, with `refresh`, not fetched within `min_refresh_seconds`).
    fn cached(&self, url: &str, refresh: bool) -> (Option<Arc<Jwks>>, bool) {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match entries.get(url) {
            Some(e) => {
                let age = e.fetched_at.elapsed();
                let expired = age > Duration::from_secs(self.settings.cache_seconds);
                let may_refresh = age > Duration::from_secs(self.settings.min_refresh_seconds);
                (
                    e.set.clone(),
                    expired || (refresh && may_refresh) || (e.set.is_none() && may_refresh),
                )
            }
            None => (None, true),
        }
    }

    async fn fetch(&self, url: &str) -> Option<Arc<Jwks>> {
        let result = async {
            let response = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("answered {}", response.status()));
            }
            let mut response = response;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
                if body.len() + chunk.len() > MAX_JWKS_BYTES {
                    return Err(format!("key set over {MAX_JWKS_BYTES} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            let doc: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
            Jwks::parse(&doc)
        }
        .await;
        match result {
            Ok(set) => {
                tracing::info!(url, keys = set.keys().len(), "fetched key set");
                Some(Arc::new(set))
            }
            Err(e) => {
                tracing::warn!(url, error = %e, "fetching key set failed");
                metrics::counter!("hookgate_jwks_fetch_failures_total").increment(1);
                None
            }
        }
    }
}
