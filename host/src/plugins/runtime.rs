//! [`Plugins`]: the installed plugins and the calls into them.
//!
//! This is the room's top, the only file that puts the others together: it
//! builds the [`engine`], two linkers from the [`wasi`] context plus the
//! contract's imports (one per world, so a verifier cannot even link against
//! `sandbox`), compiles a component once against them into an [`Installed`]
//! plugin, and runs each call in a fresh `Store` whose data is an
//! [`imports`](super::imports) `Guest`, with a memory cap and an epoch
//! deadline, so nothing one delivery does reaches the next.
//! Callers take a [`Slot`] first, so a full pool is a clear "busy".
//!
//! Failures are classified by type, never by message text (see [`explain`]): a
//! verifier that fails rejects; an action that fails is a failed attempt.
//! Neither stops the host.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::Digest;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, Trap};

use super::contract::bindings::action::exports::hookgate::plugin::handle;
use super::contract::bindings::verifier::exports::hookgate::plugin::verify::Verdict;
use super::contract::{self, ActionCall, ActionOutcome, WireRequest, World, bindings};
use super::engine::{self, Ticker, ticks};
use super::imports::{Deliver, Guest, MemoryCapReached, Scope};
use super::wasi::{self, NoWaiting, OutputTail};
use crate::settings;

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

impl Plugins {
    /// The engine and linkers; compiled code is cached under `cache_dir`.
    pub fn new(settings: &settings::Plugins, cache_dir: &Path) -> Result<Self, PluginError> {
        let engine = engine::build(settings, cache_dir).map_err(runtime)?;

        let mut verifier_linker = wasi::capability_free_wasi(&engine).map_err(runtime)?;
        bindings::verifier::Verifier::add_to_linker::<_, HasSelf<_>>(&mut verifier_linker, |g| g)
            .map_err(runtime)?;
        let mut action_linker = wasi::capability_free_wasi(&engine).map_err(runtime)?;
        bindings::action::Action::add_to_linker::<_, HasSelf<_>>(&mut action_linker, |g| g)
            .map_err(runtime)?;

        let ticker = Ticker::start(&engine).map_err(runtime)?;
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
            _ticker: ticker,
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
        let (world, version) =
            contract::contract_export(&exports).map_err(PluginError::Contract)?;
        let granted = |e: wasmtime::Error| {
            PluginError::Contract(format!(
                "the component needs an import this host does not grant: {e:#}"
            ))
        };
        let pre = match world {
            World::Verifier => {
                let pre = self
                    .verifier_linker
                    .instantiate_pre(&component)
                    .map_err(granted)?;
                Pre::Verifier(bindings::verifier::VerifierPre::new(pre).map_err(granted)?)
            }
            World::Action => {
                let pre = self
                    .action_linker
                    .instantiate_pre(&component)
                    .map_err(granted)?;
                Pre::Action(bindings::action::ActionPre::new(pre).map_err(granted)?)
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
        let (wasi, stderr) = wasi::context(received_at_ms);
        let memory_cap = usize::try_from(u64::from(limits.memory_mb) << 20).unwrap_or(usize::MAX);
        let budget = Duration::from_millis(limits.timeout_ms);
        let mut store = Store::new(&self.engine, Guest::new(wasi, memory_cap, budget, scope));
        store.limiter(Guest::limiter);
        store.set_epoch_deadline(ticks(budget));
        // At the deadline, the guest's own time decides: over budget is
        // `Trap::Interrupt`, as a plain epoch trap would be.
        store.epoch_deadline_callback(|ctx| {
            Ok(match ctx.data().ticks_left() {
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
    pub fn run_action(&self, name: &str, call: &ActionCall, deliver: Deliver) -> ActionOutcome {
        let Some(plugin) = self.get(name) else {
            return ActionOutcome::Permanent(format!("plugin {name} is not installed"));
        };
        let Pre::Action(pre) = &plugin.pre else {
            return ActionOutcome::Permanent(format!("plugin {name} is a verifier, not an action"));
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
            Ok(handle::Outcome::Success(m)) => ("success", ActionOutcome::Success(m)),
            Ok(handle::Outcome::Retryable(m)) => ("retryable", ActionOutcome::Retryable(m)),
            Ok(handle::Outcome::Permanent(m)) => ("permanent", ActionOutcome::Permanent(m)),
            Err(e) => {
                let (kind, why) = explain(&e, plugin.limits, &stderr);
                // A crash, a timeout or the memory cap may not happen next time.
                (
                    kind,
                    ActionOutcome::Retryable(format!("plugin {name} {why}")),
                )
            }
        };
        record(name, World::Action, kind, started);
        outcome
    }
}

fn record(name: &str, world: World, outcome: &'static str, started: Instant) {
    metrics::counter!("hookgate_plugin_calls_total", "plugin" => name.to_owned(), "world" => world.as_str(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("hookgate_plugin_call_seconds", "plugin" => name.to_owned())
        .record(started.elapsed().as_secs_f64());
}

/// Why a call failed, by the error's type, with the end of its stderr:
/// [`Trap::Interrupt`] is a deadline, [`NoWaiting`] a forbidden wait,
/// [`MemoryCapReached`] (our limiter's error) the memory cap, any other trap
/// a crash.
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
