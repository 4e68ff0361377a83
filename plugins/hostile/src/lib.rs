//! A verifier that misbehaves on request, for the host's tests: it proves that a
//! plugin which loops, hogs memory, panics, floods stderr, or reaches for files,
//! the environment or the clock gets nothing and harms nothing.
//!
//! Config: `{"do": "accept" | "loop" | "sleep" | "grow" | "panic" | "flood" | "files" | "env" | "clock"}`.

wit_bindgen::generate!({ path: "../../wit", world: "verifier" });

use std::io::Write;

use exports::hookgate::plugin::verify::{Guest, Verdict};
use hookgate::plugin::types::Request;

struct Hostile;

impl Guest for Hostile {
    fn verify(_request: Request, config: String) -> Verdict {
        let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
        match config.get("do").and_then(|v| v.as_str()).unwrap_or("") {
            "accept" => Verdict::Accept("behaved".into()),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Verdict::Accept("slept".into())
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("hostile plugin panicked on purpose"),
            "flood" => {
                let line = [b'x'; 1024];
                for _ in 0..1024 {
                    let _ = std::io::stderr().write_all(&line);
                }
                panic!("flooded stderr")
            }
            "files" => Verdict::Reject(format!(
                "files: {}",
                match std::fs::read_dir("/") {
                    Ok(_) => "read /".to_owned(),
                    Err(e) => format!("denied ({e})"),
                }
            )),
            "env" => Verdict::Reject(format!("env: {} variables", std::env::vars().count())),
            "clock" => Verdict::Reject(format!(
                "clock: {} s",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            )),
            other => Verdict::Reject(format!("unknown behaviour {other:?}")),
        }
    }
}

export!(Hostile);
