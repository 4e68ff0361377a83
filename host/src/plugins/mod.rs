//! Plugins: WebAssembly components that verify exotic signatures or run custom
//! actions, executed by wasmtime under hard limits.
//!
//! The shape follows Spin's core: one [`Engine`](wasmtime::Engine) for the
//! process, with the component model, epoch interruption and the pooling
//! allocator switched on; each plugin compiled once (wasmtime's cache keeps the
//! machine code on disk by content hash, so a restart does not recompile) and
//! pre-instantiated against a linker that grants exactly the contract's
//! imports; and a fresh [`Store`](wasmtime::Store) per call, so nothing a
//! plugin does survives into the next delivery.
//! Every call has an epoch deadline and a memory cap. A guest built for
//! `wasm32-wasip2` imports WASI even when it uses none of it: those imports are
//! satisfied by a context with no files, no environment, no network, a clock
//! frozen at the request's receive time, and a small captured stderr, so a guest
//! panic comes back as a readable message and nothing else is reachable.
//!
//! Failures are classified by type, never by message text:
//! [`Trap::Interrupt`](wasmtime::Trap::Interrupt) is a deadline,
//! `MemoryCapReached` (our limiter's error) is the memory cap, any other trap
//! is a crash. A verifier that fails rejects; an action that fails is a failed
//! attempt. Neither stops the host.
//!
//! One file per concern, and the arrows between them point one way, down:
//!
//! - `runtime`: [`Plugins`] — compile, install, call; the only file that puts
//!   the others together. It uses all four below.
//! - `imports`: what a guest may call (`host-crypto`, `sandbox`, `log`) and the
//!   per-call store data they act on. Uses `contract`, `engine` and [`crypto`].
//! - `wasi`: the capability-free WASI context and its linker. Uses none of them.
//! - `contract`: `wit/` as Rust — the bindings, [`World`], [`CONTRACT`], the
//!   export check and the values handed across. Uses none of them.
//! - `engine`: the wasmtime engine narrowed to what hookgate needs, and the
//!   epoch ticker. Uses none of them.
//!
//! [`crypto`] (the natively run primitives behind `host-crypto`) stands beside
//! them; the `/v1/plugins` routes are in the HTTP room.

pub mod crypto;

mod contract;
mod engine;
mod imports;
mod runtime;
mod wasi;

pub use contract::{ActionCall, ActionOutcome, CONTRACT, WireRequest, World};
pub use imports::Deliver;
pub use runtime::{Installed, Limits, PluginError, Plugins, Slot};
