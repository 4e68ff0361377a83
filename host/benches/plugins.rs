//! What a plugin call costs: the shipped `discord-ed25519` verifier run through
//! the host's runtime (fresh store, pooled instantiation, the guest, Ed25519
//! through `host-crypto`), beside the same Ed25519 verification done natively
//! with ed25519-dalek — the floor any verifier of this scheme pays.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use hookgate::plugins::{Plugins, WireRequest};

fn bench(c: &mut Criterion) {
    let cache = tempfile::tempdir().expect("a scratch directory");
    let settings = hookgate::settings::Settings::load(None, Vec::new()).expect("default settings");
    let plugins = Plugins::new(&settings.plugins, cache.path()).expect("the plugin runtime");
    let bytes =
        std::fs::read(hookgate_plugin_artifacts::DISCORD_ED25519).expect("the built plugin");
    let compiled = plugins
        .compile("discord", &bytes, plugins.defaults())
        .expect("the plugin compiles");
    plugins.install(compiled);

    let key = SigningKey::from_bytes(&[7; 32]);
    let body = vec![b'x'; 1024];
    let timestamp = "1700000000";
    let mut message = timestamp.as_bytes().to_vec();
    message.extend_from_slice(&body);
    let signature = key.sign(&message);
    let request = WireRequest {
        method: "POST".into(),
        url: "https://hooks.example.com/hooks/r".into(),
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            (
                "x-signature-ed25519".into(),
                hex::encode(signature.to_bytes()).into_bytes(),
            ),
            (
                "x-signature-timestamp".into(),
                timestamp.as_bytes().to_vec(),
            ),
        ],
        body: body.clone().into(),
        remote_addr: None,
        received_at_ms: 1_700_000_000_000,
    };
    let config = format!(
        r#"{{"public_key":"{}"}}"#,
        hex::encode(key.verifying_key().as_bytes())
    );
    assert!(plugins.verify("discord", &request, &config).is_ok());

    let mut group = c.benchmark_group("ed25519 1 KiB");
    group.bench_function("native ed25519-dalek", |b| {
        b.iter(|| {
            key.verifying_key()
                .verify(black_box(&message), black_box(&signature))
                .is_ok()
        });
    });
    group.bench_function("discord-ed25519 plugin call", |b| {
        b.iter(|| plugins.verify("discord", black_box(&request), black_box(&config)));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
