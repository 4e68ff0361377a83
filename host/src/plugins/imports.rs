//! What a guest may call on the host, and the per-call [`Guest`] those calls act on.
//!
//! The contract's imports are implemented here and nowhere else: `host-crypto`
//! (handed to [`crypto`], so verification runs natively), `sandbox.deliver`
//! (the runner's [`Deliver`], present only for action calls) and `log` (into
//! tracing, tagged with the plugin and delivery). They are methods of [`Guest`],
//! the data one call's `Store` holds, so the store data lives here too: its
//! WASI context, the memory cap's [`ResourceLimiter`](wasmtime::ResourceLimiter)
//! and the clock that lets a deadline count only the guest's own time, since a
//! delivery spent in the host is credited back. The runtime builds a `Guest`
//! per call; this file builds nothing and calls no guest, so its arrows point
//! only down: to the contract's bindings, the engine's ticks and `crypto`.

use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::contract::bindings::action::hookgate::plugin::{log, sandbox};
use super::contract::bindings::verifier::hookgate::plugin::{host_crypto, types};
use super::crypto;
use super::engine::ticks;

/// Table elements a plugin may grow to; Rust guests use a few hundred.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// The longest any call may take by the wall clock, host imports included (an
/// action's deliveries are credited back to its own deadline, not to this).
const WALL_CEILING: Duration = Duration::from_secs(120);

/// What an action plugin's `sandbox.deliver` does: (port, path, content type,
/// body) → (status, excerpt). The runner supplies it.
pub type Deliver = Box<dyn FnMut(u16, &str, &str, Vec<u8>) -> Result<(u16, String), String> + Send>;

/// Our limiter's error: the guest asked for more memory than its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {0} bytes reached")]
pub(super) struct MemoryCapReached(usize);

/// What one call's store holds.
pub(super) struct Guest {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    /// The deadline counts the guest's own time: time spent in host imports
    /// (an action's delivery to its sandbox) is added back.
    clock: CallClock,
    /// Present for action calls: what `sandbox` and `log` act on.
    scope: Option<Scope>,
}

/// The delivery an action call works on.
pub(super) struct Scope {
    pub(super) plugin: String,
    pub(super) delivery_id: String,
    pub(super) deliver: Deliver,
}

impl Guest {
    /// One call's data: its WASI context, a memory cap in bytes, the guest's
    /// time budget (starting now) and, for an action, its delivery.
    pub(super) fn new(
        wasi: WasiCtx,
        memory_cap: usize,
        budget: Duration,
        scope: Option<Scope>,
    ) -> Self {
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter { memory_cap },
            scope,
            clock: CallClock {
                started: Instant::now(),
                in_host: Duration::ZERO,
                budget,
            },
        }
    }

    /// The store's limiter (`Store::limiter`).
    pub(super) fn limiter(&mut self) -> &mut dyn wasmtime::ResourceLimiter {
        &mut self.limiter
    }

    /// Epoch ticks left for the guest, or `None` if its budget is spent.
    pub(super) fn ticks_left(&self) -> Option<u64> {
        self.clock.ticks_left()
    }
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct Limiter {
    memory_cap: usize,
}

struct CallClock {
    started: Instant,
    in_host: Duration,
    budget: Duration,
}

impl CallClock {
    /// Epoch ticks left for the guest, or `None` if its budget is spent.
    fn ticks_left(&self) -> Option<u64> {
        if self.started.elapsed() >= WALL_CEILING {
            return None;
        }
        let used = self.started.elapsed().saturating_sub(self.in_host);
        let left = self.budget.checked_sub(used).filter(|l| !l.is_zero())?;
        Some(ticks(left))
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            return Err(MemoryCapReached(self.memory_cap).into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl host_crypto::Host for Guest {
    fn hmac(&mut self, hash: host_crypto::Hash, key: Vec<u8>, message: Vec<u8>) -> Vec<u8> {
        crypto::hmac(hash_of(hash), &key, &message)
    }
    fn sha256(&mut self, data: Vec<u8>) -> Vec<u8> {
        crypto::sha256(&data)
    }
    fn ed25519_verify(
        &mut self,
        public_key: Vec<u8>,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> bool {
        crypto::ed25519_verify(&public_key, &message, &signature)
    }
    fn ecdsa_p256_verify(
        &mut self,
        public_key: Vec<u8>,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> bool {
        crypto::ecdsa_p256_verify(&public_key, &message, &signature)
    }
    fn rsa_pkcs1v15_verify(
        &mut self,
        hash: host_crypto::Hash,
        public_key: Vec<u8>,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> bool {
        crypto::rsa_pkcs1v15_verify(hash_of(hash), &public_key, &message, &signature)
    }
    fn base64_decode(&mut self, text: String) -> Result<Vec<u8>, String> {
        crypto::base64_decode(&text)
    }
    fn base64_encode(&mut self, data: Vec<u8>) -> String {
        crypto::base64_encode(&data)
    }
    fn hex_decode(&mut self, text: String) -> Result<Vec<u8>, String> {
        crypto::hex_decode(&text)
    }
    fn hex_encode(&mut self, data: Vec<u8>) -> String {
        crypto::hex_encode(&data)
    }
    fn constant_time_eq(&mut self, a: Vec<u8>, b: Vec<u8>) -> bool {
        crypto::constant_time_eq(&a, &b)
    }
}

impl types::Host for Guest {}

fn hash_of(hash: host_crypto::Hash) -> crypto::Hash {
    match hash {
        host_crypto::Hash::Sha1 => crypto::Hash::Sha1,
        host_crypto::Hash::Sha256 => crypto::Hash::Sha256,
        host_crypto::Hash::Sha512 => crypto::Hash::Sha512,
    }
}

impl sandbox::Host for Guest {
    fn deliver(
        &mut self,
        port: u16,
        path: String,
        content_type: String,
        body: Vec<u8>,
    ) -> Result<sandbox::Response, String> {
        let scope = self
            .scope
            .as_mut()
            .ok_or("this plugin may not reach a sandbox")?;
        let started = Instant::now();
        let answer = (scope.deliver)(port, &path, &content_type, body);
        self.clock.in_host += started.elapsed();
        let (status, excerpt) = answer?;
        Ok(sandbox::Response { status, excerpt })
    }
}

impl log::Host for Guest {
    fn log(&mut self, level: log::Level, message: String) {
        use log::Level;
        let (plugin, delivery) = self
            .scope
            .as_ref()
            .map_or(("?", "?"), |s| (s.plugin.as_str(), s.delivery_id.as_str()));
        let message: String = message.chars().take(2048).collect();
        match level {
            Level::Debug => tracing::debug!(plugin, delivery_id = delivery, "{message}"),
            Level::Info => tracing::info!(plugin, delivery_id = delivery, "{message}"),
            Level::Warn => tracing::warn!(plugin, delivery_id = delivery, "{message}"),
            Level::Error => tracing::error!(plugin, delivery_id = delivery, "{message}"),
        }
    }
}
