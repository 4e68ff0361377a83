//! The Durable Object that is the edge's authority for dedupe and its outbox.
//!
//! One object per receiver shard (the receiver id and the first hex digit of the
//! idempotency key's hash), so one busy receiver spreads over sixteen objects
//! rather than hitting one object's limits. A claim is decided and recorded in one
//! step that awaits nothing but storage: the object's input gate keeps every other
//! request out between the read and the write, so 'new' and 'duplicate' are
//! exact. The accepted event is written to the object's storage in the same
//! `put` as its key, before the Worker answers 202; the alarm then forwards the
//! outbox to the host (see `forward`) and cleans expired keys.

use hookgate_core::forward::ForwardedEvent;
use serde::{Deserialize, Serialize};
use worker::{DurableObject, Env, Request, Response, State, durable_object};

use crate::seen::Seen;

/// What the Worker asks of its shard.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claim {
    /// The idempotency key's hash; `None` when the receiver has no key (every
    /// request is new).
    pub key_hash: Option<String>,
    pub retention_seconds: u64,
    /// The accepted event, forwarded to the host as is once the shard gives it
    /// its `edge_delivery_id`.
    pub event: ForwardedEvent,
}

/// The shard's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claimed {
    /// "accepted" or "duplicate".
    pub status: String,
    pub delivery_id: String,
}

#[durable_object]
pub struct Inbox {
    state: State,
    env: Env,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

/// An edge delivery id: `edg_` and 16 random bytes, hex.
fn new_id() -> worker::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| worker::Error::RustError(format!("random id: {e}")))?;
    Ok(format!("edg_{}", hex::encode(bytes)))
}

/// Adds `key: value` to a batch for one `put`, maps as plain objects (the
/// default serializer makes JS `Map`s, which `put` does not take apart).
fn record<T: Serialize>(batch: &js_sys::Object, key: &str, value: &T) -> worker::Result<()> {
    let value = value.serialize(&serde_wasm_bindgen::Serializer::json_compatible())?;
    js_sys::Reflect::set(batch, &key.into(), &value)?;
    Ok(())
}

impl DurableObject for Inbox {
    fn new(state: State, env: Env) -> Self {
        Self { state, env }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let claim: Claim = req.json().await?;
        let storage = self.state.storage();
        let now = worker::Date::now().as_millis();
        // Read and record with nothing but storage awaited in between.
        if let Some(hash) = &claim.key_hash
            && let Some(seen) = storage.get::<Seen>(&format!("key:{hash}")).await?
            && seen.expires_at > now
        {
            return Response::from_json(&Claimed {
                status: "duplicate".into(),
                delivery_id: seen.delivery_id,
            });
        }
        let id = new_id()?;
        let mut event = claim.event;
        event.edge_delivery_id = Some(id.clone());
        let records = js_sys::Object::new();
        record(&records, &format!("out:{id}"), &event)?;
        if let Some(hash) = &claim.key_hash {
            let seen = Seen {
                delivery_id: id.clone(),
                expires_at: now + claim.retention_seconds * 1000,
            };
            record(&records, &format!("key:{hash}"), &seen)?;
        }
        // One put: the key and the event are durable together, or neither is.
        storage.put_multiple_raw(records).await?;
        if storage.get_alarm().await?.is_none() {
            storage.set_alarm(0_i64).await?;
        }
        Response::from_json(&Claimed {
            status: "accepted".into(),
            delivery_id: id,
        })
    }

    async fn alarm(&self) -> worker::Result<Response> {
        crate::forward::drain(&self.state, &self.env).await
    }
}
