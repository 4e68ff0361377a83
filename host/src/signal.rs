//! The stop signal every long-running task watches: a `watch` channel that
//! turns true once, when the host starts shutting down.

use tokio::sync::watch;

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
