//! hookgate's edge: a Cloudflare Worker that runs hookgate-core near the
//! provider — lookup, limits, authentication, idempotency key, dedupe, target —
//! and answers as soon as the event is durable in a Durable Object, which then
//! forwards it to the host.
//!
//! Routes: `POST /hooks/{id}` (the receiver URL), `PUT`/`DELETE
//! /_hookgate/receivers/{id}` (the host keeps receiver configs current; admin
//! token), `GET /healthz`. Modules: [`config_sync`] (configs in KV, secrets
//! sealed), [`inbox`] (the Durable Object: exact dedupe and the outbox),
//! [`forward`] (the outbox's alarm, to the host), [`reply`] (the envelope).

mod config_sync;
mod forward;
mod inbox;
mod reply;
mod seen;

use hookgate_core::config::Idempotency;
use hookgate_core::forward::{ForwardedAction, ForwardedEvent};
use hookgate_core::verify::NoEnv;
use hookgate_core::{Headers, Receiver};
use serde_json::json;
use worker::{Context, Env, Method, Request, RequestInit, Response, RouteContext, Router, event};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    Router::new()
        .post_async("/hooks/:id", receive)
        .put_async("/_hookgate/receivers/:id", config_sync::put)
        .delete_async("/_hookgate/receivers/:id", config_sync::delete)
        .get("/healthz", |_, _| Response::ok("ok\n"))
        .or_else_any_method("/*rest", |_, _| {
            reply::error(404, "not_found", "no such route")
        })
        .run(req, env)
        .await
}

async fn receive(mut req: Request, ctx: RouteContext<()>) -> worker::Result<Response> {
    let received_at = worker::Date::now().as_millis();
    let Some(id) = ctx.param("id").cloned() else {
        return reply::error(404, "not_found", "no receiver id");
    };
    let Some(receiver) = config_sync::load(&ctx.env, &id).await? else {
        return reply::error(404, "not_found", &format!("no active receiver {id}"));
    };
    if !receiver.plugins().is_empty() {
        return proxy_to_host(req, &ctx.env, &id).await;
    }
    let limit = receiver
        .max_body_bytes
        .unwrap_or(Receiver::DEFAULT_MAX_BODY_BYTES);
    if let Some(length) = req.headers().get("content-length")?
        && length.parse::<u64>().is_ok_and(|n| n > limit)
    {
        return reply::error(
            413,
            "payload_too_large",
            &format!("body is over this receiver's {limit}-byte limit"),
        );
    }
    let body = req.bytes().await?;
    if body.len() as u64 > limit {
        return reply::error(
            413,
            "payload_too_large",
            &format!("body is over this receiver's {limit}-byte limit"),
        );
    }
    let headers: Headers = req
        .headers()
        .entries()
        .map(|(n, v)| (n, v.into_bytes()))
        .collect();
    let url = req.url()?.to_string();
    let method = req.method().to_string();
    let remote = req
        .headers()
        .get("cf-connecting-ip")?
        .and_then(|ip| ip.parse().ok());
    let request = hookgate_core::Request {
        method: &method,
        url: &url,
        headers: &headers,
        body: &body,
        remote_addr: remote,
        received_at: i64::try_from(received_at / 1000).unwrap_or(i64::MAX),
    };
    let eval = hookgate_core::evaluate(&receiver, request, &NoEnv);
    if let Err(failure) = &eval.auth {
        return reply::error(401, "signature_rejected", failure.kind.public_reason());
    }
    if let Some(handshake) = eval.handshake {
        let mut response = Response::from_bytes(handshake.body)?.with_status(handshake.status);
        response
            .headers_mut()
            .set("content-type", handshake.content_type)?;
        return Ok(response);
    }
    if let Some(Err(why)) = &eval.target {
        return reply::error(422, "target_rejected", why);
    }
    let verified_at = worker::Date::now().as_millis();
    let key_hash = eval.key.as_ref().map(|k| k.hash.clone());
    let event = ForwardedEvent {
        edge_delivery_id: None,
        receiver_id: id.clone(),
        method,
        url,
        headers: headers.into_pairs(),
        body,
        remote_addr: remote,
        received_at: millis(received_at),
        verified_at: millis(verified_at),
        idempotency_key: eval.key,
        sandbox: eval.target.and_then(Result::ok).map(|s| s.to_string()),
        plan: ForwardedAction::plan(&hookgate_core::rules::plan(&receiver, &eval.matched)),
        trace: eval.trace,
    };
    let claim = inbox::Claim {
        key_hash,
        retention_seconds: retention(&receiver),
        event,
    };
    let shard = format!(
        "{id}:{}",
        claim
            .key_hash
            .as_deref()
            .and_then(|h| h.get(..1))
            .unwrap_or("-")
    );
    let stub = ctx
        .env
        .durable_object("INBOX")?
        .id_from_name(&shard)?
        .get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(serde_json::to_string(&claim)?.into()));
    let claimed: inbox::Claimed = stub
        .fetch_with_request(Request::new_with_init("https://inbox/claim", &init)?)
        .await?
        .json()
        .await?;
    if claimed.status == "duplicate" {
        reply::ok(
            200,
            json!({"status": "duplicate", "delivery_id": claimed.delivery_id}),
        )
    } else {
        reply::ok(
            202,
            json!({"status": "accepted", "delivery_id": claimed.delivery_id}),
        )
    }
}

fn retention(receiver: &Receiver) -> u64 {
    receiver
        .idempotency
        .as_ref()
        .and_then(|i| i.retention_seconds)
        .unwrap_or(Idempotency::DEFAULT_RETENTION_SECONDS)
}

/// A `Date` reading as the forwarded event's Unix milliseconds.
fn millis(at: u64) -> i64 {
    i64::try_from(at).unwrap_or(i64::MAX)
}

/// Plugins run in the host: a receiver whose auth names one is passed through
/// to the host's own receiver URL, synchronously, and says so.
async fn proxy_to_host(mut req: Request, env: &Env, id: &str) -> worker::Result<Response> {
    let url = format!(
        "{}/hooks/{id}",
        env.var("HOST_URL")?.to_string().trim_end_matches('/')
    );
    let body = req.bytes().await?;
    let headers = req.headers().clone();
    headers.set("x-hookgate-edge-proxy", "plugin")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(body.into()));
    let mut response = worker::Fetch::Request(Request::new_with_init(&url, &init)?)
        .send()
        .await?;
    let status = response.status_code();
    let bytes = response.bytes().await?;
    let mut out = Response::from_bytes(bytes)?.with_status(status);
    out.headers_mut().set(
        "x-hookgate-edge",
        "proxied to the host: this receiver uses a plugin",
    )?;
    out.headers_mut().set("content-type", "application/json")?;
    Ok(out)
}
