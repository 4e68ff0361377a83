//! `jwt` receivers with a `jwks_url`: the key set is fetched over HTTP, cached,
//! and fetched again when a token names a key the cached set lacks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::DateTime;
use jwt_compact::alg::Ed25519;
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, Claims, Header};
use serde_json::{Value, json};

use crate::support::*;

fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

fn jwks(keys: &[(u8, &str)]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(seed, kid)| {
            let mut v =
                serde_json::to_value(JsonWebKey::from(&key(*seed).verifying_key())).unwrap();
            v["kid"] = json!(kid);
            v
        })
        .collect();
    json!({"keys": keys})
}

fn token(seed: u8, kid: &str) -> String {
    let now = hookgate::ids::now_millis() / 1000;
    let mut claims = Claims::new(json!({"iss": "ci"}));
    claims.expiration = DateTime::from_timestamp(now + 300, 0);
    Ed25519
        .token(&Header::empty().with_key_id(kid), &claims, &key(seed))
        .unwrap()
}

#[tokio::test]
async fn key_sets_are_fetched_cached_and_refreshed_on_unknown_kid() {
    // A key server on loopback whose set can be rotated, counting fetches.
    let served = Arc::new(Mutex::new(jwks(&[(1, "k1")])));
    let fetches = Arc::new(AtomicUsize::new(0));
    let app = {
        let (served, fetches) = (served.clone(), fetches.clone());
        axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (served, fetches) = (served.clone(), fetches.clone());
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(served.lock().unwrap().clone())
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let t = TestHost::start_with(&[("HOOKGATE_JWKS_MIN_REFRESH_SECONDS", "0")]).await;
    let id = t
        .create(json!({
            "name": "ci",
            "auth": {"auth_type": "jwt", "algorithms": ["EdDSA"], "jwks_url": jwks_url, "issuer": "ci"},
            "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "ci"},
            "rules": [{"actions": [{"action_type": "resume_sandbox"}]}]
        }))
        .await;
    let send = |tok: String| {
        let t = &t;
        let id = id.clone();
        async move {
            let resp = t
                .client
                .post(t.url(&format!("/hooks/{id}")))
                .bearer_auth(tok)
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(send(token(1, "k1")).await.0, 202);
    assert_eq!(send(token(1, "k1")).await.0, 202);
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the set is cached");

    // The provider rotates to k2: the unknown kid triggers one fetch, then passes.
    *served.lock().unwrap() = jwks(&[(2, "k2")]);
    assert_eq!(send(token(2, "k2")).await.0, 202);
    assert_eq!(fetches.load(Ordering::SeqCst), 2);

    // A token signed by a key nobody serves is refused with the reason.
    let (status, body) = send(token(3, "k3")).await;
    assert_eq!(status, 401, "{body}");
    t.rejected_because(&id, "kid \"k3\" has no EdDSA key").await;
}

/// Regression (the trust issue): 40 concurrent tokens with an unknown `kid`
/// caused 40 fetches of the key set (twice). Fetches are single-flight now,
/// and an oversized key set is refused.
#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_key_set_once() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let app = {
        let fetches = fetches.clone();
        axum::Router::new()
            .route(
                "/jwks.json",
                axum::routing::get(move || {
                    let fetches = fetches.clone();
                    async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        // A slow identity provider: every request overlaps this fetch.
                        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                        axum::Json(jwks(&[(1, "k1")]))
                    }
                }),
            )
            .route(
                "/huge.json",
                axum::routing::get(|| async {
                    // A valid set with k1, padded past the cap.
                    let mut set = jwks(&[(1, "k1")]);
                    set["padding"] = json!("x".repeat(300 * 1024));
                    axum::Json(set)
                }),
            )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let t = TestHost::start_with(&[("HOOKGATE_JWKS_MIN_REFRESH_SECONDS", "0")]).await;
    let receiver = |url: String| {
        json!({
            "name": "ci",
            "auth": {"auth_type": "jwt", "algorithms": ["EdDSA"], "jwks_url": url, "issuer": "ci"},
            "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "ci"},
            "rules": [{"actions": [{"action_type": "resume_sandbox"}]}]
        })
    };
    let id = t.create(receiver(format!("{base}/jwks.json"))).await;
    let send = |id: String, tok: String| {
        let req = t
            .client
            .post(t.url(&format!("/hooks/{id}")))
            .bearer_auth(tok)
            .body("{}");
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let flood: Vec<_> = (0..40)
        .map(|_| tokio::spawn(send(id.clone(), token(9, "nobody"))))
        .collect();
    for s in flood {
        assert_eq!(s.await.unwrap(), 401);
    }
    // The first use fetches, the unknown kid refreshes once; no more.
    assert!(
        fetches.load(Ordering::SeqCst) <= 2,
        "{} fetches",
        fetches.load(Ordering::SeqCst)
    );

    let huge = t.create(receiver(format!("{base}/huge.json"))).await;
    let (status, body) = {
        let resp = t
            .client
            .post(t.url(&format!("/hooks/{huge}")))
            .bearer_auth(token(1, "k1"))
            .body("{}")
            .send()
            .await
            .unwrap();
        answer(resp).await
    };
    assert_eq!(status, 401, "{body}");
    t.rejected_because(&huge, "not loaded").await;
}
