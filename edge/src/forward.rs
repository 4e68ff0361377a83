//! The outbox, drained by the Durable Object's alarm: every accepted event goes
//! to the host's ingest endpoint, signed with the key both sides share, and is
//! deleted only once the host has acknowledged it. While the host is down the
//! alarm comes back with exponential backoff; alarms are at-least-once, and the
//! host dedupes on the edge delivery id, so nothing arrives twice.

use hookgate_core::forward::{self, ForwardedEvent, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde::{Deserialize, Serialize};
use worker::{Env, Headers, Method, Request, RequestInit, Response, State};

use crate::seen::Seen;

/// Events forwarded per alarm run; the rest wait for the next, which is at once.
const BATCH: usize = 50;
/// Backoff while the host is unreachable: 1 s doubling to 5 minutes.
const BACKOFF_FIRST_MS: i64 = 1_000;
const BACKOFF_MAX_MS: i64 = 300_000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Backoff {
    next_ms: i64,
}

/// Posts one event to the host, signed under `EDGE_FORWARD_KEY` at this moment
/// (see `hookgate_core::forward`), so a captured request cannot be replayed later.
async fn send(env: &Env, event: &ForwardedEvent) -> worker::Result<bool> {
    let url = format!(
        "{}/v1/edge/ingest",
        env.var("HOST_URL")?.to_string().trim_end_matches('/')
    );
    let key = env.secret("EDGE_FORWARD_KEY")?.to_string();
    let body = serde_json::to_string(event)?;
    let timestamp = i64::try_from(worker::Date::now().as_millis() / 1000).unwrap_or(i64::MAX);
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set(TIMESTAMP_HEADER, &timestamp.to_string())?;
    headers.set(
        SIGNATURE_HEADER,
        &forward::sign(key.as_bytes(), timestamp, body.as_bytes()),
    )?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(body.into()));
    let request = Request::new_with_init(&url, &init)?;
    match worker::Fetch::Request(request).send().await {
        Ok(response) => Ok((200..300).contains(&response.status_code())),
        Err(_) => Ok(false),
    }
}

/// Forwards what the outbox holds, forgets expired keys, and sets the next alarm.
pub async fn drain(state: &State, env: &Env) -> worker::Result<Response> {
    let storage = state.storage();
    let pending = storage
        .list_with_options(worker::ListOptions::new().prefix("out:").limit(BATCH))
        .await?;
    let mut failed = false;
    for entry in pending.entries() {
        let pair: js_sys::Array = entry?.into();
        let key = pair.get(0).as_string().unwrap_or_default();
        // An entry this Worker cannot read cannot be sent either: it stays, and the
        // alarm backs off as when the host refuses, rather than losing an event.
        let event: ForwardedEvent = match serde_wasm_bindgen::from_value(pair.get(1)) {
            Ok(event) => event,
            Err(e) => {
                worker::console_error!("outbox entry {key} is unreadable: {e}");
                failed = true;
                break;
            }
        };
        if send(env, &event).await? {
            storage.delete(&key).await?;
        } else {
            failed = true;
            break;
        }
    }
    let now = worker::Date::now().as_millis();
    let keys = storage
        .list_with_options(worker::ListOptions::new().prefix("key:"))
        .await?;
    for entry in keys.entries() {
        let pair: js_sys::Array = entry?.into();
        let key = pair.get(0).as_string().unwrap_or_default();
        if let Ok(seen) = serde_wasm_bindgen::from_value::<Seen>(pair.get(1))
            && seen.expires_at <= now
        {
            storage.delete(&key).await?;
        }
    }
    let mut backoff: Backoff = storage.get("backoff").await?.unwrap_or_default();
    let more = storage
        .list_with_options(worker::ListOptions::new().prefix("out:").limit(1))
        .await?
        .size()
        > 0;
    if failed {
        backoff.next_ms = (backoff.next_ms * 2).clamp(BACKOFF_FIRST_MS, BACKOFF_MAX_MS);
        storage.put("backoff", &backoff).await?;
        storage.set_alarm(backoff.next_ms).await?;
    } else {
        storage.delete("backoff").await?;
        if more {
            storage.set_alarm(0_i64).await?;
        } else if let Some(next) = keys_expiry(state).await? {
            storage.set_alarm(next).await?;
        }
    }
    Response::ok("drained")
}

/// When the next key expires (milliseconds from now), if any remain.
async fn keys_expiry(state: &State) -> worker::Result<Option<i64>> {
    let keys = state
        .storage()
        .list_with_options(worker::ListOptions::new().prefix("key:"))
        .await?;
    let now = worker::Date::now().as_millis();
    let mut soonest: Option<u64> = None;
    for entry in keys.entries() {
        let pair: js_sys::Array = entry?.into();
        if let Ok(seen) = serde_wasm_bindgen::from_value::<Seen>(pair.get(1)) {
            soonest = Some(soonest.map_or(seen.expires_at, |s| s.min(seen.expires_at)));
        }
    }
    Ok(soonest.map(|at| i64::try_from(at.saturating_sub(now)).unwrap_or(i64::MAX)))
}
