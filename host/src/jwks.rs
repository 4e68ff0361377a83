//! Key sets for `jwt` receivers that name a `jwks_url`: fetched, cached, refreshed.
//!
//! A set is fetched on first use and trusted for `jwks.cache_seconds`; a token
//! whose `kid` the cached set lacks triggers one early refresh, at most once per
//! `jwks.min_refresh_seconds` per URL, so a flood of bad tokens cannot turn
//! hookgate into a load generator against the identity provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookgate_core::jwks::Jwks;

use crate::settings;

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
        }
    }

    /// The sets for `urls`, fetching those missing or expired (or, with `refresh`,
    /// those not fetched within `min_refresh_seconds`). A set that cannot be
    /// fetched is absent: verification then fails with "not loaded".
    pub async fn get(&self, urls: &[&str], refresh: bool) -> HashMap<String, Arc<Jwks>> {
        let mut out = HashMap::new();
        for url in urls {
            let (cached, stale) = {
                let entries = self
                    .entries
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match entries.get(*url) {
                    Some(e) => {
                        let age = e.fetched_at.elapsed();
                        let expired = age > Duration::from_secs(self.settings.cache_seconds);
                        let may_refresh =
                            age > Duration::from_secs(self.settings.min_refresh_seconds);
                        (
                            e.set.clone(),
                            expired || (refresh && may_refresh) || (e.set.is_none() && may_refresh),
                        )
                    }
                    None => (None, true),
                }
            };
            let set = if stale {
                let fetched = self.fetch(url).await;
                let mut entries = self
                    .entries
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let keep = fetched.clone().or(cached);
                entries.insert(
                    (*url).to_owned(),
                    Entry {
                        set: keep.clone(),
                        fetched_at: Instant::now(),
                    },
                );
                keep
            } else {
                cached
            };
            if let Some(set) = set {
                out.insert((*url).to_owned(), set);
            }
        }
        out
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
            let doc: serde_json::Value = response
                .json()
                .await
                .map_err(|e| format!("not JSON: {e}"))?;
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
