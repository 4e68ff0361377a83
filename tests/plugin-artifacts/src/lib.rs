//! The guest plugins of `plugins/`, built for `wasm32-wasip2` by this crate's build
//! script (as wasmtime's `test-programs` are), so no built `.wasm` is committed.
//! Each constant is the path of one component.

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
