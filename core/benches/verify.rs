//! Verification cost against its physical floor and against a peer library.
//!
//! * `github_hmac`: hookgate's full `hmac` verification (header lookup, prefix, hex
//!   decode, MAC, constant-time compare, trace) of GitHub-style 1 KiB and 64 KiB
//!   bodies, beside the bare `hmac` + `sha2` computation on the same bytes — the
//!   floor no verifier can beat. The ratio is the overhead.
//! * `standard_webhooks`: hookgate's `standard_webhooks` preset beside the
//!   `standardwebhooks` crate (the reference Rust library) on the same message.
//! * `evaluate`: the whole pipeline (auth, key, target, rules) on the GitHub
//!   example of docs/api.md, JSON parsing included.
//!
//! Run with `scripts/bench`; BENCHMARKS.md records the method and the numbers.

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use hookgate_core::verify::{NoEnv, authenticate};
use hookgate_core::{Event, Headers, Receiver, Request, evaluate};
use serde_json::json;
use sha2::Sha256;

const SECRET: &str = "It's a Secret to Everybody";
const SIZES: [usize; 2] = [1024, 64 * 1024];

/// A JSON body of exactly `len` bytes shaped like a pull_request event.
fn body(len: usize) -> Vec<u8> {
    let head = r#"{"action":"opened","pull_request":{"number":42},"padding":""#;
    let tail = r#""}"#;
    let mut b = head.as_bytes().to_vec();
    b.resize(len - tail.len(), b'x');
    b.extend_from_slice(tail.as_bytes());
    b
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Benchmarks hookgate's authentication of `req` under `id`.
fn bench_authenticate(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    r: &Receiver,
    req: &Request<'_>,
) {
    group.bench_with_input(id, req, |b, req| {
        b.iter(|| {
            let v = authenticate(&r.auth, &Event::new(*black_box(req)), &NoEnv);
            assert!(v.result.is_ok());
            v
        });
    });
}

fn receiver(auth: serde_json::Value) -> Receiver {
    Receiver::from_json(&json!({
        "name": "bench", "auth": auth,
        "target": {"target_type": "sandbox_name_from_event",
                   "source": {"source": "json_path", "path": "$.pull_request.number"}, "required_prefix": "pr-"},
        "idempotency": {"source": "header", "name": "X-GitHub-Delivery"},
        "rules": [
            {"when": {"json_path": "$.action", "equals": "opened"}, "actions": [{"action_type": "deliver_to_port", "port": 3000}]},
            {"when": {"json_path": "$.action", "equals": "closed"}, "actions": [{"action_type": "delete_sandbox"}]}
        ]
    }))
    .unwrap()
}

fn github_hmac(c: &mut Criterion) {
    let r = receiver(json!({
        "auth_type": "hmac", "algorithm": "sha256", "encoding": "hex", "prefix": "sha256=",
        "secret": {"name": "gh", "value": SECRET},
        "signature": {"source": "header", "name": "X-Hub-Signature-256"}
    }));
    let mut group = c.benchmark_group("github_hmac");
    for size in SIZES {
        let body = body(size);
        let sig = mac(SECRET.as_bytes(), &[&body]);
        let headers: Headers = [
            ("Content-Type", "application/json".to_owned()),
            ("X-GitHub-Event", "pull_request".to_owned()),
            (
                "X-GitHub-Delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
            ),
            ("X-Hub-Signature-256", format!("sha256={}", hex(&sig))),
        ]
        .into_iter()
        .collect();
        let req = Request {
            method: "POST",
            url: "https://hooks.example.com/hooks/r",
            headers: &headers,
            body: &body,
            remote_addr: None,
            received_at: 1_700_000_000,
        };
        group.throughput(Throughput::Bytes(size as u64));
        bench_authenticate(
            &mut group,
            BenchmarkId::new("hookgate_verify", size),
            &r,
            &req,
        );
        group.bench_with_input(
            BenchmarkId::new("floor_hmac_sha256", size),
            &body,
            |b, body| {
                b.iter(|| {
                    let out = mac(SECRET.as_bytes(), &[black_box(body)]);
                    assert_eq!(out, sig);
                    out
                });
            },
        );
        if size == SIZES[0] {
            group.bench_with_input(
                BenchmarkId::new("hookgate_evaluate", size),
                &req,
                |b, req| {
                    b.iter(|| evaluate(&r, *black_box(req), &NoEnv));
                },
            );
        }
    }
    group.finish();
}

fn standard_webhooks(c: &mut Criterion) {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let key =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &secret[6..]).unwrap();
    let r = receiver(
        json!({"auth_type": "provider", "provider": "standard_webhooks", "secret": {"name": "sw", "value": secret}}),
    );
    let peer = standardwebhooks::Webhook::new(secret).unwrap();
    // The peer reads the system clock, so the message is signed "now".
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut group = c.benchmark_group("standard_webhooks");
    for size in SIZES {
        let body = body(size);
        let ts = now.to_string();
        let sig = format!(
            "v1,{}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                mac(&key, &[b"msg_1.", ts.as_bytes(), b".", &body])
            )
        );
        let headers: Headers = [
            ("webhook-id", "msg_1".to_owned()),
            ("webhook-timestamp", ts.clone()),
            ("webhook-signature", sig.clone()),
        ]
        .into_iter()
        .collect();
        let mut header_map = http::HeaderMap::new();
        header_map.insert("webhook-id", "msg_1".parse().unwrap());
        header_map.insert("webhook-timestamp", ts.parse().unwrap());
        header_map.insert("webhook-signature", sig.parse().unwrap());
        let req = Request {
            method: "POST",
            url: "https://hooks.example.com/hooks/r",
            headers: &headers,
            body: &body,
            remote_addr: None,
            received_at: now,
        };
        group.throughput(Throughput::Bytes(size as u64));
        bench_authenticate(
            &mut group,
            BenchmarkId::new("hookgate_preset", size),
            &r,
            &req,
        );
        group.bench_with_input(
            BenchmarkId::new("standardwebhooks_1.0.1", size),
            &body,
            |b, body| {
                b.iter(|| peer.verify(black_box(body), &header_map).unwrap());
            },
        );
    }
    group.finish();
}

criterion_group!(benches, github_hmac, standard_webhooks);
criterion_main!(benches);
