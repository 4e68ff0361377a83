//! Plugins: WebAssembly components that verify exotic signatures or run custom
//! actions, executed by wasmtime under hard limits.
//!
//! The shape follows Spin's core: one [`Engine`] for the process, with the
//! component model, epoch interruption and the pooling allocator switched on;
//! each plugin compiled once (wasmtime's cache keeps the machine code on disk by
//! content hash, so a restart does not recompile) and pre-instantiated against a
//! linker that grants exactly the contract's imports; and a fresh [`Store`] per
//! call, so nothing a plugin does survives into the next delivery. Every call has
//! an epoch deadline and a memory cap. A guest built for `wasm32-wasip2` imports
//! WASI even when it uses none of it: those imports are satisfied by a context
//! with no files, no environment, no network, a clock frozen at the request's
//! receive time, and a small captured stderr, so a guest panic comes back as a
//! readable message and nothing else is reachable.
//!
//! Failures are classified by type, never by message text: [`Trap::Interrupt`]
//! is a deadline, [`MemoryCapReached`] (our limiter's error) is the memory cap,
//! any other trap is a crash. A verifier that fails rejects; an action that fails
//! is a failed attempt. Neither stops the host.

pub mod crypto;

#[allow(
    unsafe_code,
    reason = "wasmtime's bindgen! emits unsafe impls of its component traits"
)]
mod bindings {
    pub mod verifier {
        wasmtime::component::bindgen!({ path: "../wit", world: "verifier" });
    }
    pub mod action {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "action",
            with: {
                "hookgate:plugin/types": super::verifier::hookgate::plugin::types,
                "hookgate:plugin/host-crypto": super::verifier::hookgate::plugin::host_crypto,
            },
        });
    }
}

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bindings::action::exports::hookgate::plugin::handle;
use bindings::verifier::exports::hookgate::plugin::verify::Verdict;
use bindings::verifier::hookgate::plugin::{host_crypto, types};
use serde::Serialize;
use sha2::Digest;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::settings;

/// The contract this host implements; components built against another version
/// of `hookgate:plugin` are refused.
pub const CONTRACT: &str = "hookgate:plugin@0.1.0";
const PACKAGE: &str = "hookgate:plugin";
const VERSION: &str = "0.1.0";
/// How often the engine's epoch advances; deadlines are counted in these ticks.
const TICK: Duration = Duration::from_millis(2);
/// How much of a plugin's stderr is kept (its end; the rest is dropped): enough
/// for a panic message and a few lines before it.
const STDERR_CAP: usize = 16 * 1024;
/// Table elements a plugin may grow to; Rust guests use a few hundred.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// The longest any call may take by the wall clock, host imports included (an
/// action's deliveries are credited back to its own deadline, not to this).
const WALL_CEILING: Duration = Duration::from_secs(120);
/// The WASI clock interface whose waits are refused (wasmtime-wasi 48's version).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum World {
    Verifier,
    Action,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verifier => "verifier",
            Self::Action => "action",
        }
    }

    /// "a verifier", "an action": for messages.
    pub fn with_article(self) -> &'static str {
        match self {
            Self::Verifier => "a verifier",
            Self::Action => "an action",
        }
    }
}

/// Per-call limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub timeout_ms: u64,
    pub memory_mb: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("not a WebAssembly component: {0}")]
    NotComponent(String),
    /// The component does not implement a world and version this host accepts.
    #[error("{0}")]
    Contract(String),
    #[error("{0}")]
    Limits(String),
    #[error("starting the plugin runtime: {0}")]
    Runtime(String),
}

/// A guest tried to wait on a clock. The epoch deadline cannot interrupt a host
/// call that blocks, so plugins may not sleep at all.
#[derive(Debug, thiserror::Error)]
#[error("plugins may not sleep or wait on a clock")]
pub struct NoWaiting;

/// Our limiter's error: the guest asked for more memory than its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {0} bytes reached")]
pub struct MemoryCapReached(usize);

/// An installed plugin, ready to instantiate.
pub struct Installed {
    pub name: String,
    pub world: World,
    pub version: String,
    pub sha256: String,
    pub size: usize,
    pub limits: Limits,
    pre: Pre,
}

impl std::fmt::Debug for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installed")
            .field("name", &self.name)
            .field("world", &self.world)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

enum Pre {
    Verifier(bindings::verifier::VerifierPre<Guest>),
    Action(bindings::action::ActionPre<Guest>),
}

/// The exact request, owned, as plugins receive it.
#[derive(Debug, Clone)]
pub struct WireRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: bytes::Bytes,
    pub remote_addr: Option<String>,
    pub received_at_ms: u64,
}

impl WireRequest {
    fn to_wit(&self) -> types::Request {
        types::Request {
            method: self.method.clone(),
            url: self.url.clone(),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| types::Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            body: self.body.to_vec(),
            remote_addr: self.remote_addr.clone(),
            received_at_ms: self.received_at_ms,
        }
    }
}

/// What an action plugin's `sandbox.deliver` does: (port, path, content type,
/// body) → (status, excerpt). The runner supplies it.
pub type Deliver = Box<dyn FnMut(u16, &str, &str, Vec<u8>) -> Result<(u16, String), String> + Send>;

/// An action plugin's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success(String),
    Retryable(String),
    Permanent(String),
}

/// One delivery handed to an action plugin.
#[derive(Debug, Clone)]
pub struct ActionCall {
    pub delivery_id: String,
    pub receiver_id: String,
    pub sandbox: String,
    pub request: WireRequest,
    pub config: String,
}

/// What one call's store holds.
struct Guest {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    /// The deadline counts the guest's own time: time spent in host imports
    /// (an action's delivery to its sandbox) is added back.
    clock: CallClock,
    /// Present for action calls: what `sandbox` and `log` act on.
    scope: Option<Scope>,
}

struct Scope {
    plugin: String,
    delivery_id: String,
    deliver: Deliver,
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

/// Epoch ticks covering `d`, at least one.
fn ticks(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(TICK.as_micros()))
        .unwrap_or(u64::MAX)
        .max(1)
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

/// The wall clock a plugin sees: stopped at the request's receive time.
struct FrozenWall(Duration);

impl wasmtime_wasi::HostWallClock for FrozenWall {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

/// The monotonic clock a plugin sees: it never moves.
struct FrozenMonotonic;

impl wasmtime_wasi::HostMonotonicClock for FrozenMonotonic {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        0
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

impl bindings::action::hookgate::plugin::sandbox::Host for Guest {
    fn deliver(
        &mut self,
        port: u16,
        path: String,
        content_type: String,
        body: Vec<u8>,
    ) -> Result<bindings::action::hookgate::plugin::sandbox::Response, String> {
        let scope = self
            .scope
            .as_mut()
            .ok_or("this plugin may not reach a sandbox")?;
        let started = Instant::now();
        let answer = (scope.deliver)(port, &path, &content_type, body);
        self.clock.in_host += started.elapsed();
        let (status, excerpt) = answer?;
        Ok(bindings::action::hookgate::plugin::sandbox::Response { status, excerpt })
    }
}

impl bindings::action::hookgate::plugin::log::Host for Guest {
    fn log(&mut self, level: bindings::action::hookgate::plugin::log::Level, message: String) {
        use bindings::action::hookgate::plugin::log::Level;
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

/// A plugin's stdout or stderr: keeps the last `cap` bytes and accepts every
/// write, so a chatty plugin is not cut off (as a full pipe would do) and a
/// panic message, which comes last, is always kept.
#[derive(Clone)]
struct OutputTail {
    cap: usize,
    kept: Arc<std::sync::Mutex<std::collections::VecDeque<u8>>>,
}

impl OutputTail {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            kept: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = &bytes[bytes.len().saturating_sub(self.cap)..];
        let over = (kept.len() + bytes.len()).saturating_sub(self.cap);
        kept.drain(..over);
        kept.extend(bytes);
    }

    fn text(&self) -> String {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes: Vec<u8> = kept.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::OutputStream for OutputTail {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for OutputTail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for OutputTail {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for OutputTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for OutputTail {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Advances the engine's epoch every [`TICK`] until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The plugin runtime: the engine, the linkers, and the installed plugins.
pub struct Plugins {
    engine: Engine,
    verifier_linker: Linker<Guest>,
    action_linker: Linker<Guest>,
    installed: RwLock<HashMap<String, Arc<Installed>>>,
    defaults: Limits,
    max_memory_mb: u32,
    /// One permit per pooled slot: callers take one before a call, so a full
    /// pool is a clear "busy", never an instantiation failure.
    slots: Arc<tokio::sync::Semaphore>,
    _ticker: Ticker,
}

/// A claim on one plugin call slot.
pub type Slot = tokio::sync::OwnedSemaphorePermit;

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugins")
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

fn runtime(e: impl std::fmt::Display) -> PluginError {
    PluginError::Runtime(e.to_string())
}

/// A linker with WASI as the store's empty context grants it, except that
/// waiting on a clock fails the call: a blocked host call is out of the epoch
/// deadline's reach.
fn capability_free_wasi(engine: &Engine) -> Result<Linker<Guest>, PluginError> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(runtime)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK).map_err(runtime)?;
    for wait in ["subscribe-duration", "subscribe-instant"] {
        clock
            .func_wrap(
                wait,
                |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
                    Err(NoWaiting.into())
                },
            )
            .map_err(runtime)?;
    }
    linker.allow_shadowing(false);
    Ok(linker)
}

impl Plugins {
    /// The engine and linkers; compiled code is cached under `cache_dir`.
    pub fn new(settings: &settings::Plugins, cache_dir: &Path) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        std::fs::create_dir_all(cache_dir).map_err(runtime)?;
        // wasmtime's cache wants an absolute path; the data dir may be relative.
        let cache_dir = std::fs::canonicalize(cache_dir).map_err(runtime)?;
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(cache_dir);
        config.cache(Some(wasmtime::Cache::new(cache).map_err(runtime)?));
        // Pooling: each concurrent call takes a pre-reserved slot, so instantiation
        // is a few microseconds and memory use is bounded up front. A Rust
        // wasip2 component instantiates a handful of core instances (the program
        // and its adapter shims), hence the multipliers.
        let slots = settings.max_concurrent;
        let max_memory = u64::from(settings.max_memory_mb) << 20;
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .total_stacks(slots)
            .max_core_instances_per_component(16)
            .max_memories_per_component(2)
            .max_tables_per_component(16)
            .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX));
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        // Reserve what the largest allowed memory needs, not wasm32's 4 GiB: the
        // pool reserves this for every slot.
        config.memory_reservation(max_memory);
        config.memory_guard_size(64 << 10);
        let engine = Engine::new(&config).map_err(runtime)?;

        let mut verifier_linker = capability_free_wasi(&engine)?;
        bindings::verifier::Verifier::add_to_linker::<_, HasSelf<_>>(&mut verifier_linker, |g| g)
            .map_err(runtime)?;
        let mut action_linker = capability_free_wasi(&engine)?;
        bindings::action::Action::add_to_linker::<_, HasSelf<_>>(&mut action_linker, |g| g)
            .map_err(runtime)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticking = engine.clone();
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("hookgate-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(runtime)?;
        Ok(Self {
            engine,
            verifier_linker,
            action_linker,
            installed: RwLock::new(HashMap::new()),
            defaults: Limits {
                timeout_ms: settings.timeout_ms,
                memory_mb: settings.memory_mb,
            },
            max_memory_mb: settings.max_memory_mb,
            slots: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(settings.max_concurrent).unwrap_or(1),
            )),
            _ticker: Ticker { stop },
        })
    }

    /// A call slot now, or `None` when every slot is busy.
    pub fn try_slot(&self) -> Option<Slot> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// A call slot, waiting for one to free up.
    pub async fn slot(&self) -> Slot {
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed")
    }

    /// The limits a plugin gets unless its install says otherwise.
    pub fn defaults(&self) -> Limits {
        self.defaults
    }

    /// Checks limits asked for at install time.
    pub fn limits(
        &self,
        timeout_ms: Option<u64>,
        memory_mb: Option<u32>,
    ) -> Result<Limits, PluginError> {
        let limits = Limits {
            timeout_ms: timeout_ms.unwrap_or(self.defaults.timeout_ms),
            memory_mb: memory_mb.unwrap_or(self.defaults.memory_mb),
        };
        if !(1..=60_000).contains(&limits.timeout_ms) {
            return Err(PluginError::Limits("timeout_ms: expected 1..60000".into()));
        }
        if !(1..=self.max_memory_mb).contains(&limits.memory_mb) {
            return Err(PluginError::Limits(format!(
                "memory_mb: expected 1..{} (plugins.max_memory_mb)",
                self.max_memory_mb
            )));
        }
        Ok(limits)
    }

    /// Compiles and checks a component: it must export exactly one of the
    /// contract's worlds at this host's version and import nothing else.
    pub fn compile(
        &self,
        name: &str,
        bytes: &[u8],
        limits: Limits,
    ) -> Result<Installed, PluginError> {
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| PluginError::NotComponent(format!("{e:#}")))?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let (iface, version) = contract_export(&exports)?;
        let granted = |e: wasmtime::Error| {
            PluginError::Contract(format!(
                "the component needs an import this host does not grant: {e:#}"
            ))
        };
        let (world, pre) = match iface {
            "verify" => {
                let pre = self
                    .verifier_linker
                    .instantiate_pre(&component)
                    .map_err(granted)?;
                let pre = bindings::verifier::VerifierPre::new(pre).map_err(granted)?;
                (World::Verifier, Pre::Verifier(pre))
            }
            "handle" => {
                let pre = self
                    .action_linker
                    .instantiate_pre(&component)
                    .map_err(granted)?;
                let pre = bindings::action::ActionPre::new(pre).map_err(granted)?;
                (World::Action, Pre::Action(pre))
            }
            other => {
                return Err(PluginError::Contract(format!(
                    "{PACKAGE}/{other} is not a world export this host knows (verify, handle)"
                )));
            }
        };
        Ok(Installed {
            name: name.to_owned(),
            world,
            version: version.to_owned(),
            sha256: hex::encode(sha2::Sha256::digest(bytes)),
            size: bytes.len(),
            limits,
            pre,
        })
    }

    pub fn install(&self, plugin: Installed) {
        let mut map = self
            .installed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(plugin.name.clone(), Arc::new(plugin));
    }

    pub fn remove(&self, name: &str) -> bool {
        self.installed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
            .is_some()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Installed>> {
        self.installed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<Installed>> {
        let mut all: Vec<Arc<Installed>> = self
            .installed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// A fresh store for one call.
    fn store(
        &self,
        limits: Limits,
        received_at_ms: u64,
        scope: Option<Scope>,
    ) -> (Store<Guest>, OutputTail) {
        let stderr = OutputTail::new(STDERR_CAP);
        let wasi = WasiCtxBuilder::new()
            .stdout(OutputTail::new(0))
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .wall_clock(FrozenWall(Duration::from_millis(received_at_ms)))
            .monotonic_clock(FrozenMonotonic)
            .build();
        let mut store = Store::new(
            &self.engine,
            Guest {
                wasi,
                table: ResourceTable::new(),
                limiter: Limiter {
                    memory_cap: usize::try_from(u64::from(limits.memory_mb) << 20)
                        .unwrap_or(usize::MAX),
                },
                scope,
                clock: CallClock {
                    started: Instant::now(),
                    in_host: Duration::ZERO,
                    budget: Duration::from_millis(limits.timeout_ms),
                },
            },
        );
        store.limiter(|g| &mut g.limiter);
        store.set_epoch_deadline(ticks(Duration::from_millis(limits.timeout_ms)));
        // At the deadline, the guest's own time decides: over budget is
        // `Trap::Interrupt`, as a plain epoch trap would be.
        store.epoch_deadline_callback(|ctx| {
            Ok(match ctx.data().clock.ticks_left() {
                Some(left) => wasmtime::UpdateDeadline::Continue(left),
                None => wasmtime::UpdateDeadline::Interrupt,
            })
        });
        (store, stderr)
    }

    /// Runs a verifier: `Ok(what matched)` or `Err(why it rejected)`.
    pub fn verify(
        &self,
        name: &str,
        request: &WireRequest,
        config: &str,
    ) -> Result<String, String> {
        let plugin = self
            .get(name)
            .ok_or_else(|| "is not installed".to_owned())?;
        let Pre::Verifier(pre) = &plugin.pre else {
            return Err("is an action plugin, not a verifier".to_owned());
        };
        let started = Instant::now();
        let (mut store, stderr) = self.store(plugin.limits, request.received_at_ms, None);
        let result = pre.instantiate(&mut store).and_then(|bindings| {
            bindings
                .hookgate_plugin_verify()
                .call_verify(&mut store, &request.to_wit(), config)
        });
        let (outcome, answer) = match result {
            Ok(Verdict::Accept(matched)) => ("accept", Ok(matched)),
            Ok(Verdict::Reject(why)) => ("reject", Err(why)),
            Err(e) => {
                let (kind, why) = explain(&e, plugin.limits, &stderr);
                (kind, Err(why))
            }
        };
        record(name, World::Verifier, outcome, started);
        answer
    }

    /// Runs an action plugin on a delivery.
    pub fn run_action(&self, name: &str, call: &ActionCall, deliver: Deliver) -> Outcome {
        let Some(plugin) = self.get(name) else {
            return Outcome::Permanent(format!("plugin {name} is not installed"));
        };
        let Pre::Action(pre) = &plugin.pre else {
            return Outcome::Permanent(format!("plugin {name} is a verifier, not an action"));
        };
        let started = Instant::now();
        let scope = Scope {
            plugin: name.to_owned(),
            delivery_id: call.delivery_id.clone(),
            deliver,
        };
        let (mut store, stderr) =
            self.store(plugin.limits, call.request.received_at_ms, Some(scope));
        let delivery = handle::Delivery {
            id: call.delivery_id.clone(),
            receiver_id: call.receiver_id.clone(),
            sandbox: call.sandbox.clone(),
            request: call.request.to_wit(),
        };
        let result = pre.instantiate(&mut store).and_then(|bindings| {
            bindings
                .hookgate_plugin_handle()
                .call_run(&mut store, &delivery, &call.config)
        });
        let (kind, outcome) = match result {
            Ok(handle::Outcome::Success(m)) => ("success", Outcome::Success(m)),
            Ok(handle::Outcome::Retryable(m)) => ("retryable", Outcome::Retryable(m)),
            Ok(handle::Outcome::Permanent(m)) => ("permanent", Outcome::Permanent(m)),
            Err(e) => {
                let (kind, why) = explain(&e, plugin.limits, &stderr);
                // A crash, a timeout or the memory cap may not happen next time.
                (kind, Outcome::Retryable(format!("plugin {name} {why}")))
            }
        };
        record(name, World::Action, kind, started);
        outcome
    }
}

/// Which of the contract's interfaces a component exports, at which version:
/// exactly one, at this host's version.
fn contract_export(exports: &[String]) -> Result<(&str, &str), PluginError> {
    let ours: Vec<(&str, &str)> = exports
        .iter()
        .filter_map(|e| e.strip_prefix(PACKAGE)?.strip_prefix('/'))
        .filter_map(|rest| rest.split_once('@'))
        .collect();
    let (iface, version) = match ours.as_slice() {
        [one] => *one,
        [] => {
            return Err(PluginError::Contract(format!(
                "the component exports neither {PACKAGE}/verify nor {PACKAGE}/handle \
                 (it exports: {}); build it against wit/ ({CONTRACT})",
                if exports.is_empty() {
                    "nothing".to_owned()
                } else {
                    exports.join(", ")
                }
            )));
        }
        _ => {
            return Err(PluginError::Contract(format!(
                "the component exports more than one of the contract's worlds: {}",
                exports.join(", ")
            )));
        }
    };
    if version != VERSION {
        return Err(PluginError::Contract(format!(
            "the component targets {PACKAGE}@{version}; this host accepts {CONTRACT}"
        )));
    }
    Ok((iface, version))
}

fn record(name: &str, world: World, outcome: &'static str, started: Instant) {
    metrics::counter!("hookgate_plugin_calls_total", "plugin" => name.to_owned(), "world" => world.as_str(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("hookgate_plugin_call_seconds", "plugin" => name.to_owned())
        .record(started.elapsed().as_secs_f64());
}

/// Why a call failed, by the error's type, with the end of its stderr.
fn explain(e: &wasmtime::Error, limits: Limits, stderr: &OutputTail) -> (&'static str, String) {
    let (kind, mut why) = if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        (
            "timeout",
            format!(
                "did not finish within its {} ms deadline",
                limits.timeout_ms
            ),
        )
    } else if e.downcast_ref::<NoWaiting>().is_some() {
        ("forbidden", NoWaiting.to_string())
    } else if e.downcast_ref::<MemoryCapReached>().is_some() {
        (
            "memory",
            format!("tried to grow past its {} MiB memory cap", limits.memory_mb),
        )
    } else if let Some(trap) = e.downcast_ref::<Trap>() {
        ("trap", format!("trapped: {trap}"))
    } else {
        ("error", format!("failed: {e}"))
    };
    let text = stderr.text();
    let text = text.trim();
    if !text.is_empty() {
        let tail: String = text
            .chars()
            .rev()
            .take(400)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        why.push_str(&format!("; stderr: {tail}"));
    }
    (kind, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_contract_version_is_checked_from_export_names() {
        let ok = names(&["hookgate:plugin/verify@0.1.0"]);
        assert_eq!(contract_export(&ok).unwrap(), ("verify", "0.1.0"));
        let newer = names(&["wasi:cli/run@0.2.6", "hookgate:plugin/handle@0.2.0"]);
        assert_eq!(
            contract_export(&newer).unwrap_err().to_string(),
            "the component targets hookgate:plugin@0.2.0; this host accepts hookgate:plugin@0.1.0"
        );
        let none = names(&["wasi:cli/run@0.2.6"]);
        assert!(
            contract_export(&none)
                .unwrap_err()
                .to_string()
                .starts_with("the component exports neither hookgate:plugin/verify nor hookgate:plugin/handle (it exports: wasi:cli/run@0.2.6)")
        );
        let both = names(&[
            "hookgate:plugin/verify@0.1.0",
            "hookgate:plugin/handle@0.1.0",
        ]);
        assert!(contract_export(&both).is_err());
        // Another package with a similar name is not ours.
        let other = names(&["hookgate:pluginx/verify@0.1.0"]);
        assert!(contract_export(&other).is_err());
    }
}
