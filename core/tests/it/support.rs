//! Building requests and signing them the way providers do, independently of core.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use hookgate_core::config::Receiver;
use hookgate_core::verify::{Failure, FailureKind, NoEnv};
use hookgate_core::{Event, Headers, Request};
use serde_json::{Value, json};

/// A fixed "now" for every test: 2023-11-14T22:13:20Z.
pub const NOW: i64 = 1_700_000_000;

/// An owned request under construction.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub url: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub remote: Option<IpAddr>,
    pub now: i64,
}

impl Req {
    pub fn post(body: impl Into<Vec<u8>>) -> Self {
        Self {
            method: "POST".into(),
            url: "https://hooks.example.com/hooks/rcv_1".into(),
            headers: Headers::new(),
            body: body.into(),
            remote: None,
            now: NOW,
        }
    }

    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.headers.push(name, value.as_ref().as_bytes().to_vec());
        self
    }

    pub fn url(mut self, url: &str) -> Self {
        self.url = url.into();
        self
    }

    pub fn remote(mut self, ip: &str) -> Self {
        self.remote = Some(ip.parse().unwrap());
        self
    }

    pub fn at(mut self, now: i64) -> Self {
        self.now = now;
        self
    }

    /// The same request without any header of this name.
    pub fn without(mut self, name: &str) -> Self {
        self.headers = self
            .headers
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect();
        self
    }

    pub fn request(&self) -> Request<'_> {
        Request {
            method: &self.method,
            url: &self.url,
            headers: &self.headers,
            body: &self.body,
            remote_addr: self.remote,
            received_at: self.now,
        }
    }
}

/// A receiver around `auth` with a fixed target and one always-matching rule.
pub fn receiver(auth: Value) -> Receiver {
    Receiver::from_json(&json!({
        "name": "test",
        "auth": auth,
        "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "box"},
        "rules": [{"actions": [{"action_type": "resume_sandbox"}]}]
    }))
    .unwrap_or_else(|e| panic!("receiver config rejected: {e}"))
}

/// Runs authentication alone; `Ok` with the pass message or the failure.
pub fn verify(auth: &Value, req: &Req) -> Result<String, Failure> {
    let r = receiver(auth.clone());
    let event = Event::new(req.request());
    let verdict = hookgate_core::verify::authenticate(&r.auth, &event, &NoEnv);
    verdict.result.map(|()| verdict.step.message)
}

/// Asserts a verification failure of `kind` whose reason contains `needle`.
#[track_caller]
pub fn assert_fails(auth: &Value, req: &Req, kind: FailureKind, needle: &str) {
    match verify(auth, req) {
        Ok(msg) => panic!("expected {kind:?} failure containing {needle:?}, but it passed: {msg}"),
        Err(f) => {
            assert_eq!(f.kind, kind, "wrong kind; reason: {}", f.reason);
            assert!(
                f.reason.contains(needle),
                "reason {:?} lacks {needle:?}",
                f.reason
            );
        }
    }
}

#[track_caller]
pub fn assert_passes(auth: &Value, req: &Req) -> String {
    verify(auth, req).unwrap_or_else(|f| panic!("expected a pass, got {:?}: {}", f.kind, f.reason))
}

pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

pub fn hmac_sha1(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

pub fn hmac_sha512(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha512>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    STANDARD.decode(text).unwrap()
}

pub fn secret(value: &str) -> Value {
    json!({"name": "s", "value": value})
}
