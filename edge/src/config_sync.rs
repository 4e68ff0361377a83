//! Receiver configs at the edge: written by the host through an authenticated
//! admin route, kept in Workers KV, read with a short cache.
//!
//! KV holds each receiver's config with its secrets as `secret_ref` names, and the
//! secret values apart, each sealed with AES-256-GCM under the Worker secret
//! `EDGE_SECRETS_KEY` — so KV never holds a secret in clear, and a KV dump without
//! the Worker's secret reveals nothing. The admin route takes the config as the
//! host's API does (secret values inline), checks it with hookgate-core, and
//! answers with the same field-naming errors.

use hookgate_core::seal::Sealer;
use hookgate_core::{Receiver, Secret};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worker::{Env, Request, Response, RouteContext};

use crate::reply;

/// KV's minimum cache TTL: a change reaches every location within about a minute.
const CACHE_TTL_SECONDS: u64 = 60;

/// What KV stores per receiver (`receiver:<id>`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Stored {
    pub status: String,
    /// The config with secrets as `{"secret_ref": name}`.
    pub config: Value,
    /// Secret name → base64(nonce ‖ AES-GCM ciphertext).
    pub secrets: Vec<(String, String)>,
}

fn kv_key(id: &str) -> String {
    format!("receiver:{id}")
}

fn cipher(env: &Env) -> worker::Result<Sealer> {
    let key = env.secret("EDGE_SECRETS_KEY")?.to_string();
    Sealer::from_base64(&key).ok_or_else(|| {
        worker::Error::RustError("EDGE_SECRETS_KEY: expected 32 bytes, base64".into())
    })
}

/// Seals a secret with core's [`Sealer`] (the host's store uses the same).
fn seal(cipher: &Sealer, plain: &str) -> worker::Result<String> {
    let mut nonce = [0u8; 12];
    getrandom::getrandom(&mut nonce)
        .map_err(|e| worker::Error::RustError(format!("random nonce: {e}")))?;
    cipher
        .seal(nonce, plain)
        .ok_or_else(|| worker::Error::RustError("sealing a secret failed".into()))
}

fn open(cipher: &Sealer, sealed: &str) -> Option<String> {
    cipher.open(sealed)
}

/// The admin token the host presents, compared in constant time.
fn authorized(req: &Request, env: &Env) -> worker::Result<bool> {
    let expected = env.secret("EDGE_ADMIN_TOKEN")?.to_string();
    let given = req.headers().get("authorization")?.unwrap_or_default();
    let given = given.strip_prefix("Bearer ").unwrap_or_default();
    use sha2::Digest;
    Ok(hookgate_core::verify::ct_eq(
        &sha2::Sha256::digest(given.as_bytes()),
        &sha2::Sha256::digest(expected.as_bytes()),
    ))
}

/// The body of `PUT /_hookgate/receivers/{id}`: the host's stored config (secrets
/// as `secret_ref`) and the secret values it refers to; or a config with its
/// secrets inline, as a user writes one.
#[derive(Debug, Deserialize)]
struct Put {
    status: String,
    config: Value,
    #[serde(default)]
    secrets: Vec<(String, String)>,
}

/// `PUT /_hookgate/receivers/{id}`: the host's current config for a receiver.
pub async fn put(mut req: Request, ctx: RouteContext<()>) -> worker::Result<Response> {
    if !authorized(&req, &ctx.env)? {
        return reply::error(401, "unauthorized", "missing or wrong admin token");
    }
    let Some(id) = ctx.param("id").cloned() else {
        return reply::error(404, "not_found", "no receiver id");
    };
    let body: Put = match req.json().await {
        Ok(b) => b,
        Err(e) => return reply::error(400, "bad_request", &format!("request body: {e}")),
    };
    let given: Vec<Secret> = body
        .secrets
        .iter()
        .map(|(name, value)| Secret::new(name.as_str(), value.as_str()))
        .collect();
    let source = |name: &str| given.iter().find(|s| s.name() == name).cloned();
    let receiver = match Receiver::from_json_with_secrets(&body.config, &source) {
        Ok(r) => r,
        Err(e) => return reply::error(422, "invalid_config", &e.to_string()),
    };
    let cipher = cipher(&ctx.env)?;
    let mut secrets = Vec::new();
    for secret in receiver.secrets() {
        secrets.push((secret.name().to_owned(), seal(&cipher, secret.expose())?));
    }
    let stored = Stored {
        status: body.status,
        config: serde_json::to_value(&receiver)?,
        secrets,
    };
    ctx.kv("CONFIG")?
        .put(&kv_key(&id), serde_json::to_string(&stored)?)?
        .execute()
        .await?;
    reply::ok(200, serde_json::json!({"id": id, "status": stored.status}))
}

/// `DELETE /_hookgate/receivers/{id}`: the receiver no longer exists.
pub async fn delete(req: Request, ctx: RouteContext<()>) -> worker::Result<Response> {
    if !authorized(&req, &ctx.env)? {
        return reply::error(401, "unauthorized", "missing or wrong admin token");
    }
    let Some(id) = ctx.param("id").cloned() else {
        return reply::error(404, "not_found", "no receiver id");
    };
    ctx.kv("CONFIG")?.delete(&kv_key(&id)).await?;
    reply::ok(200, serde_json::json!({"id": id, "deleted": true}))
}

/// The active receiver `id`, with its secrets opened; `None` if unknown,
/// disabled or deleted.
pub async fn load(env: &Env, id: &str) -> worker::Result<Option<Receiver>> {
    let stored: Option<Stored> = env
        .kv("CONFIG")?
        .get(&kv_key(id))
        .cache_ttl(CACHE_TTL_SECONDS)
        .json()
        .await?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    if stored.status != "active" {
        return Ok(None);
    }
    let cipher = cipher(env)?;
    let mut opened = Vec::new();
    for (name, sealed) in &stored.secrets {
        let value = open(&cipher, sealed).ok_or_else(|| {
            worker::Error::RustError(format!(
                "receiver {id}: secret {name} does not open with EDGE_SECRETS_KEY"
            ))
        })?;
        opened.push(Secret::new(name.as_str(), value));
    }
    let source = |name: &str| opened.iter().find(|s| s.name() == name).cloned();
    Receiver::from_json_with_secrets(&stored.config, &source)
        .map(Some)
        .map_err(|e| worker::Error::RustError(format!("receiver {id}: stored config: {e}")))
}
