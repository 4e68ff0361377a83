//! Exact dedupe: `new`, `in_flight` or `duplicate`, decided atomically.
//!
//! The durable record of a key is its row in the store, written in the same
//! transaction as the delivery it names; the store refuses a second unexpired row,
//! so the database alone already guarantees one delivery per key. This module adds
//! the `in_flight` state in front of it, as svix's idempotency does: while the first
//! request with a key is being verified and committed, the same key arriving again
//! waits for that outcome instead of racing it, and then answers `duplicate` with
//! the original delivery id. If the first request does not end in a stored delivery
//! (its target was refused, the disk failed), a waiter takes the claim over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// How a claimed key ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// A delivery with this id is durable.
    Stored(String),
    /// The claimant stored nothing; the key is free again.
    Abandoned,
}

type Slot = watch::Receiver<Option<Settled>>;
type Key = (String, String);

#[derive(Debug, Clone, Default)]
pub struct Inflight {
    map: Arc<Mutex<HashMap<Key, Slot>>>,
}

/// The result of trying to claim a key.
#[derive(Debug)]
pub enum Claim {
    /// This request owns the key until it settles it.
    Mine(ClaimGuard),
    /// Another request owns it; wait for its outcome.
    Wait(Slot),
}

/// Ownership of an in-flight key. Dropping it unsettled abandons the key.
#[derive(Debug)]
pub struct ClaimGuard {
    map: Arc<Mutex<HashMap<Key, Slot>>>,
    key: Key,
    tx: watch::Sender<Option<Settled>>,
    settled: bool,
}

impl Inflight {
    pub fn claim(&self, receiver_id: &str, key: &str) -> Claim {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let k = (receiver_id.to_owned(), key.to_owned());
        if let Some(slot) = map.get(&k) {
            return Claim::Wait(slot.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(k.clone(), rx);
        Claim::Mine(ClaimGuard {
            map: Arc::clone(&self.map),
            key: k,
            tx,
            settled: false,
        })
    }

    /// Keys currently in flight (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ClaimGuard {
    /// Publishes the outcome to waiters and releases the key.
    pub fn settle(mut self, outcome: Settled) {
        self.release(outcome);
    }

    fn release(&mut self, outcome: Settled) {
        if self.settled {
            return;
        }
        self.settled = true;
        // Remove first: a request arriving after this sees the store's row.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
        let _ = self.tx.send(Some(outcome));
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.release(Settled::Abandoned);
    }
}

/// Waits for an in-flight key's outcome.
pub async fn settled(mut slot: Slot) -> Settled {
    match slot.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(Settled::Abandoned),
        Err(_) => Settled::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_claim_waits_for_the_first() {
        let inflight = Inflight::default();
        let Claim::Mine(guard) = inflight.claim("r", "k") else {
            panic!()
        };
        let Claim::Wait(slot) = inflight.claim("r", "k") else {
            panic!()
        };
        assert!(matches!(inflight.claim("r", "other"), Claim::Mine(_)));
        let waiter = tokio::spawn(settled(slot));
        guard.settle(Settled::Stored("dlv_1".into()));
        assert_eq!(waiter.await.unwrap(), Settled::Stored("dlv_1".into()));
        assert!(
            matches!(inflight.claim("r", "k"), Claim::Mine(_)),
            "released after settling"
        );
    }

    #[tokio::test]
    async fn dropping_a_claim_abandons_it() {
        let inflight = Inflight::default();
        let Claim::Mine(guard) = inflight.claim("r", "k") else {
            panic!()
        };
        let Claim::Wait(slot) = inflight.claim("r", "k") else {
            panic!()
        };
        drop(guard);
        assert_eq!(settled(slot).await, Settled::Abandoned);
        assert!(inflight.is_empty());
    }
}
