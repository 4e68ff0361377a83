//! The one wasmtime [`Engine`] every plugin runs on, narrowed to what hookgate
//! needs, and the thread that makes its deadlines tick.
//!
//! wasmtime's `Config` has a great many knobs; like Spin's `crates/core`, this
//! file sets the few the rest of the room relies on, in one place, each with
//! why its value was chosen, and leaves every other one at wasmtime's default:
//! the component model (plugins are components), epoch interruption (each
//! call's deadline, counted in [`TICK`]s by a [`Ticker`]), the pooling allocator
//! sized from the `[plugins]` settings (one slot per call that may run at once),
//! and the on-disk compile cache (a restart does not recompile). It knows
//! nothing of the contract, WASI or a guest, so it sits at the bottom of the
//! room and imports nothing from it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine};

use crate::settings;

/// How often the engine's epoch advances; deadlines are counted in these ticks.
/// Deadlines are milliseconds (50 by default), so a tick is a small fraction of
/// one; each costs the ticker one wake-up and one atomic add.
pub(super) const TICK: Duration = Duration::from_millis(2);

/// The engine for every plugin; compiled code is cached under `cache_dir`.
pub(super) fn build(settings: &settings::Plugins, cache_dir: &Path) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    // Plugins are components built against `wit/`. This is wasmtime's default
    // with its `component-model` feature; it is said here so nothing leans on a
    // default unseen.
    config.wasm_component_model(true);
    // Deadlines by epoch rather than fuel: the guest checks a counter at
    // function entries and loop heads, far cheaper than counting instructions,
    // and a deadline in time is what a plugin's `timeout_ms` means.
    config.epoch_interruption(true);

    // The compile cache: machine code on disk, keyed by the component's bytes
    // and the engine's settings, so a restart finds its plugins compiled.
    std::fs::create_dir_all(cache_dir)?;
    // wasmtime's cache wants an absolute path; the data dir may be relative.
    let cache_dir = std::fs::canonicalize(cache_dir)?;
    let mut cache = wasmtime::CacheConfig::new();
    cache.with_directory(cache_dir);
    config.cache(Some(wasmtime::Cache::new(cache)?));

    // Pooling: each concurrent call takes a pre-reserved slot, so instantiation
    // is a few microseconds and memory use is bounded up front. A Rust
    // wasip2 component instantiates a handful of core instances (the program
    // and its adapter shims), hence the multipliers: the shipped guests
    // instantiate three core modules, define one memory and two tables.
    let slots = settings.max_concurrent;
    let max_memory = u64::from(settings.max_memory_mb) << 20;
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    // One component instance per call that may run at once: the runtime's
    // call slots are as many, so a full pool is "busy", not a failed
    // instantiation.
    pool.total_component_instances(slots);
    // Eight core instances per call against the three a shipped guest uses.
    pool.total_core_instances(slots * 8);
    // Memories are what the pool reserves address space for (see
    // `memory_reservation` below): one per guest, plus one spare.
    pool.total_memories(slots * 2);
    // Tables are cheap to reserve; eight per call against the two in use.
    pool.total_tables(slots * 8);
    // One execution stack per call in flight.
    pool.total_stacks(slots);
    // Per component: room for a guest composed of a few programs; the totals
    // above still bound the pool as a whole.
    pool.max_core_instances_per_component(16);
    pool.max_memories_per_component(2);
    pool.max_tables_per_component(16);
    // No guest may be given more than `plugins.max_memory_mb`; the per-call
    // cap below it is the store's limiter, which names the error.
    pool.max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX));
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    // Reserve what the largest allowed memory needs, not wasm32's 4 GiB: the
    // pool reserves this for every slot.
    config.memory_reservation(max_memory);
    // wasmtime's 32 MiB default guard exists to elide bounds checks, which a
    // reservation under 4 GiB keeps anyway; 64 KiB still folds checks on small
    // constant offsets and keeps each slot's reservation close to its cap.
    config.memory_guard_size(64 << 10);
    Engine::new(&config)
}

/// Advances the engine's epoch every [`TICK`] until dropped.
pub(super) struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    /// Starts the thread that advances `engine`'s epoch.
    pub(super) fn start(engine: &Engine) -> std::io::Result<Self> {
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
            })?;
        Ok(Self { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Epoch ticks covering `d`, at least one.
pub(super) fn ticks(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(TICK.as_micros()))
        .unwrap_or(u64::MAX)
        .max(1)
}
