//! Exact dedupe: `new`, `in_flight` or `duplicate`, decided atomically.
//!
//! Every live key sits in memory, in one map under one lock, beside the keys whose
//! first request is still being committed. A key is claimed under that lock, so of
//! any number of concurrent requests with one key exactly one is `new`; the others
//! wait for its outcome (`in_flight`, as svix's idempotency does) and then answer
//! `duplicate` with the original delivery id. If the first request ends without a
//! stored delivery (its target was refused, the disk failed), a waiter takes over.
//!
//! The durable record of a key is its delivery's row (`idempotency_key`,
//! `key_expires_at`), written in the same commit as the delivery; the map is
//! rebuilt from those rows at start. Keeping the index out of SQLite spares every
//! commit a write into a randomly keyed B-tree, which was a quarter of the
//! receiver's cost. Memory is one entry per delivery within its retention window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::store::LiveKey;

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

#[derive(Debug)]
enum Entry {
    /// Stored: the delivery it names, and until when (Unix ms).
    Live {
        delivery_id: String,
        expires_at: i64,
    },
    /// Being committed by another request.
    InFlight(Slot),
}

#[derive(Debug, Clone, Default)]
pub struct Dedupe {
    map: Arc<Mutex<HashMap<Key, Entry>>>,
}

/// The result of trying to claim a key.
#[derive(Debug)]
pub enum Claim {
    /// This request owns the key until it settles it.
    Mine(ClaimGuard),
    /// Another request owns it; wait for its outcome.
    Wait(Slot),
    /// A stored delivery already holds it.
    Duplicate(String),
}

/// Ownership of an in-flight key. Dropping it unsettled abandons the key.
#[derive(Debug)]
pub struct ClaimGuard {
    map: Arc<Mutex<HashMap<Key, Entry>>>,
    key: Key,
    tx: watch::Sender<Option<Settled>>,
    settled: bool,
}

impl Dedupe {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Rebuilds the index from the keys the store holds.
    pub fn load(&self, keys: Vec<LiveKey>) {
        let mut map = self.lock();
        for k in keys {
            map.insert(
                (k.receiver_id, k.key),
                Entry::Live {
                    delivery_id: k.delivery_id,
                    expires_at: k.expires_at,
                },
            );
        }
    }

    pub fn claim(&self, receiver_id: &str, key: &str, now: i64) -> Claim {
        let mut map = self.lock();
        let k = (receiver_id.to_owned(), key.to_owned());
        match map.get(&k) {
            Some(Entry::Live {
                delivery_id,
                expires_at,
            }) if *expires_at > now => {
                return Claim::Duplicate(delivery_id.clone());
            }
            Some(Entry::InFlight(slot)) => return Claim::Wait(slot.clone()),
            _ => {}
        }
        let (tx, rx) = watch::channel(None);
        map.insert(k.clone(), Entry::InFlight(rx));
        Claim::Mine(ClaimGuard {
            map: Arc::clone(&self.map),
            key: k,
            tx,
            settled: false,
        })
    }

    /// The stored delivery a key names at `now`, without claiming it.
    pub fn live(&self, receiver_id: &str, key: &str, now: i64) -> Option<String> {
        match self.lock().get(&(receiver_id.to_owned(), key.to_owned())) {
            Some(Entry::Live {
                delivery_id,
                expires_at,
            }) if *expires_at > now => Some(delivery_id.clone()),
            _ => None,
        }
    }

    /// Drops keys that expired before `now`; returns how many.
    pub fn expire(&self, now: i64) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, e| !matches!(e, Entry::Live { expires_at, .. } if *expires_at <= now));
        before - map.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

impl ClaimGuard {
    /// Records the stored delivery for the key and wakes the waiters.
    pub fn stored(mut self, delivery_id: String, expires_at: i64) {
        self.settled = true;
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                self.key.clone(),
                Entry::Live {
                    delivery_id: delivery_id.clone(),
                    expires_at,
                },
            );
        let _ = self.tx.send(Some(Settled::Stored(delivery_id)));
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
        let _ = self.tx.send(Some(Settled::Abandoned));
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
    async fn second_claim_waits_then_sees_a_duplicate() {
        let d = Dedupe::default();
        let Claim::Mine(guard) = d.claim("r", "k", 0) else {
            panic!()
        };
        let Claim::Wait(slot) = d.claim("r", "k", 0) else {
            panic!()
        };
        assert!(matches!(d.claim("r", "other", 0), Claim::Mine(_)));
        let waiter = tokio::spawn(settled(slot));
        guard.stored("dlv_1".into(), 100);
        assert_eq!(waiter.await.unwrap(), Settled::Stored("dlv_1".into()));
        assert!(matches!(d.claim("r", "k", 99), Claim::Duplicate(id) if id == "dlv_1"));
        // Expired: the key is free again, and cleanup forgets it.
        assert!(matches!(d.claim("r", "k", 100), Claim::Mine(_)));
        let Claim::Mine(g) = d.claim("r2", "k", 0) else {
            panic!()
        };
        g.stored("dlv_2".into(), 50);
        assert_eq!(d.expire(60), 1);
    }

    #[tokio::test]
    async fn dropping_a_claim_abandons_it() {
        let d = Dedupe::default();
        let Claim::Mine(guard) = d.claim("r", "k", 0) else {
            panic!()
        };
        let Claim::Wait(slot) = d.claim("r", "k", 0) else {
            panic!()
        };
        drop(guard);
        assert_eq!(settled(slot).await, Settled::Abandoned);
        assert!(d.is_empty());
    }

    #[test]
    fn loaded_keys_dedupe() {
        let d = Dedupe::default();
        d.load(vec![LiveKey {
            receiver_id: "r".into(),
            key: "k".into(),
            delivery_id: "dlv_9".into(),
            expires_at: 10,
        }]);
        assert!(matches!(d.claim("r", "k", 5), Claim::Duplicate(id) if id == "dlv_9"));
        assert_eq!(d.live("r", "k", 9).as_deref(), Some("dlv_9"));
        assert_eq!((d.live("r", "k", 10), d.live("r2", "k", 5)), (None, None));
    }
}
