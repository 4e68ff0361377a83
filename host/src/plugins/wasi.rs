//! The WASI a plugin gets: enough to link, nothing to reach.
//!
//! A guest built for `wasm32-wasip2` imports WASI even when it uses none of it,
//! so every instantiation needs those imports satisfied. This file satisfies
//! them with a context that grants no files, no environment and no network,
//! whose wall clock is frozen at the request's receive time and whose monotonic
//! clock never moves (a plugin's answer depends on its input, not on when it
//! ran), and whose stdout and stderr are an [`OutputTail`] that keeps only the
//! end, so a guest panic comes back as a readable message. Waiting on a clock
//! fails the call with [`NoWaiting`]: a blocked host call is out of the epoch
//! deadline's reach. The linker is generic over the store's data, so this file
//! knows nothing of the host imports or the runtime that uses it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::Linker;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiView};

/// How much of a plugin's stderr is kept (its end; the rest is dropped): enough
/// for a panic message and a few lines before it.
const STDERR_CAP: usize = 16 * 1024;
/// The WASI clock interface whose waits are refused (wasmtime-wasi 48's version).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A guest tried to wait on a clock. The epoch deadline cannot interrupt a host
/// call that blocks, so plugins may not sleep at all.
#[derive(Debug, thiserror::Error)]
#[error("plugins may not sleep or wait on a clock")]
pub(super) struct NoWaiting;

/// One call's WASI context and the stderr it writes to.
pub(super) fn context(received_at_ms: u64) -> (WasiCtx, OutputTail) {
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
    (wasi, stderr)
}

/// A linker with WASI as the store's empty context grants it, except that
/// waiting on a clock fails the call: a blocked host call is out of the epoch
/// deadline's reach.
pub(super) fn capability_free_wasi<T: WasiView + 'static>(
    engine: &Engine,
) -> wasmtime::Result<Linker<T>> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    for wait in ["subscribe-duration", "subscribe-instant"] {
        clock.func_wrap(
            wait,
            |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
                Err(NoWaiting.into())
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(linker)
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

/// A plugin's stdout or stderr: keeps the last `cap` bytes and accepts every
/// write, so a chatty plugin is not cut off (as a full pipe would do) and a
/// panic message, which comes last, is always kept.
#[derive(Clone)]
pub(super) struct OutputTail {
    cap: usize,
    kept: Arc<Mutex<VecDeque<u8>>>,
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

    /// What is kept, as text (invalid UTF-8 replaced).
    pub(super) fn text(&self) -> String {
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
