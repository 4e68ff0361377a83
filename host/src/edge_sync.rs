//! Keeps the edge Worker's receiver configs current: whenever a receiver is
//! created, changed, disabled or deleted, its config (secrets inline, which the
//! Worker seals before they reach KV) is sent to the Worker's admin route.
//!
//! A push runs in the background and is retried a few times; a push lost while
//! the host is down is made good at the next start, which pushes every receiver
//! and every deletion younger than [`TOMBSTONE_MILLIS`].

use std::time::Duration;

use serde_json::json;

use crate::settings;
use crate::store::ReceiverRow;

/// How long after a receiver's deletion each start pushes the deletion again:
/// a week covers any host outage worth planning for.
pub const TOMBSTONE_MILLIS: i64 = 7 * 86_400 * 1000;
/// Attempts per push before the edge is left answering from its previous config.
const ATTEMPTS: u32 = 5;

/// Sends a receiver's current config (or its deletion) to the edge, in the
/// background. Does nothing when no edge is configured.
pub fn push(edge: &settings::Edge, row: &ReceiverRow) {
    if edge.url.is_empty() {
        return;
    }
    let url = format!(
        "{}/_hookgate/receivers/{}",
        edge.url.trim_end_matches('/'),
        row.id
    );
    let token = edge.admin_token.clone();
    let deleted = row.deleted_at.is_some();
    let body = json!({
        "status": row.status,
        "config": row.config,
        "secrets": row.secrets.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
    });
    let id = row.id.clone();
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        for attempt in 1..=ATTEMPTS {
            let request = if deleted {
                client.delete(&url)
            } else {
                client.put(&url).json(&body)
            };
            match request.bearer_auth(&token).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(receiver = %id, deleted, "receiver config pushed to the edge");
                    return;
                }
                Ok(r) => {
                    tracing::warn!(receiver = %id, status = r.status().as_u16(), attempt, "the edge refused a receiver config")
                }
                Err(e) => {
                    tracing::warn!(receiver = %id, error = %e, attempt, "pushing a receiver config to the edge failed")
                }
            }
            tokio::time::sleep(Duration::from_millis(200 * 2_u64.pow(attempt))).await;
        }
        tracing::error!(receiver = %id, "the edge did not take a receiver config; it answers from the previous one");
    });
}
