//! The local plane: each sandbox is a supervised process group with its own work
//! directory under `<data_dir>/sandboxes/<name>`.
//!
//! `template.image` maps to a command through `[images."<image>"]`; an unmapped
//! image runs the built-in echo server. Every port the sandbox serves is remapped
//! to a free loopback port, told to it as `PORT`/`HOOKGATE_PORT_<n>`, and waited
//! for before the sandbox counts as created. Pause and resume are SIGSTOP/SIGCONT of
//! the whole group; delete kills the group and removes the work directory;
//! `memory_mb` becomes a data-segment rlimit set by the shell that execs the
//! command (no unsafe `pre_exec`). State lives in the store: after a restart of
//! the host, sandboxes whose process group is still alive are adopted as they
//! are, and the others are started again on their old ports.
//!
//! Lifecycle timers are checked by [`LocalPlane::sweep`] against the stored
//! times (`last_activity_at` for `pause_after_idle`, `created_at` for
//! `delete_after`), so they keep running across host restarts. Every operation on
//! one sandbox, a forward included, holds that sandbox's lock: a timer never
//! pauses a sandbox in the middle of a delivery.
//!
//! One file per concern, and the arrows between them point one way: every file
//! builds on this one, and each uses only the files listed after it.
//!
//! - `plane`: the [`SandboxPlane`](super::SandboxPlane) impl — ensure, pause,
//!   resume, delete, inspect, list, deliver over loopback HTTP, exec of a
//!   script; the only file that puts the others together. Uses all three below.
//! - `view`: the API's view of a stored sandbox. Uses `lifecycle` (its timers).
//! - `lifecycle`: pause and resume by signal, delete, and the sweep that fires
//!   the timers. Uses `process`.
//! - `process`: starting a process group on its ports, supervising it, adopting
//!   or restarting it after a host restart, and the probes the others share
//!   (is a group alive, the tail of its log, a free port). Uses none of them.
//!
//! This file holds what they share and imports nothing from them: the
//! [`LocalPlane`] handle, the per-sandbox lock, and reading and recording a
//! sandbox's stored row.

mod lifecycle;
mod plane;
mod process;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookgate_core::SandboxName;
use hookgate_core::config::SandboxTemplate;

use super::{PlaneError, SandboxState};
use crate::ids;
use crate::settings::{Image, Settings};
use crate::store::{SandboxRow, Store};

pub struct LocalPlane {
    root: PathBuf,
    /// What an image without an `[images]` entry runs.
    fallback: Vec<String>,
    images: BTreeMap<String, Image>,
    store: Store,
    ready_timeout: Duration,
    client: reqwest::Client,
    locks: Locks,
    /// `sandbox.max_sandboxes`: the most running or paused at once.
    max_sandboxes: usize,
    /// Creations under way, counted against the cap before their row exists.
    creating: std::sync::atomic::AtomicUsize,
    /// Turns true when the host stops: supervisors let go of their sandboxes,
    /// which keep running for the next start to adopt.
    released: tokio::sync::watch::Sender<bool>,
}

/// One async lock per sandbox name.
type Locks = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

fn lock_of(locks: &Locks, name: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = locks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(locks.entry(name.to_owned()).or_default())
}

impl std::fmt::Debug for LocalPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPlane")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> PlaneError {
    PlaneError::Unavailable(e.to_string())
}

impl LocalPlane {
    pub fn new(settings: &Settings, store: Store) -> std::io::Result<Self> {
        // Absolute, since sandboxes run with their work directory as cwd.
        let root = std::fs::canonicalize(&settings.data_dir)?.join("sandboxes");
        std::fs::create_dir_all(&root)?;
        let fallback = if settings.sandbox.fallback_command.is_empty() {
            let exe = std::env::current_exe()?;
            vec![exe.display().to_string(), "sandbox".into(), "echo".into()]
        } else {
            settings.sandbox.fallback_command.clone()
        };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            root,
            fallback,
            images: settings.images.clone(),
            store,
            ready_timeout: Duration::from_secs(settings.sandbox.ready_timeout_seconds),
            client,
            locks: Locks::default(),
            max_sandboxes: settings.sandbox.max_sandboxes,
            creating: std::sync::atomic::AtomicUsize::new(0),
            released: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Serializes operations on one sandbox (concurrent ensures create it once).
    async fn lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        lock_of(&self.locks, name).lock_owned().await
    }

    /// The sandbox's lock if nothing holds it now.
    fn try_lock(
        &self,
        name: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, tokio::sync::TryLockError> {
        lock_of(&self.locks, name).try_lock_owned()
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    async fn row(&self, name: &str) -> Result<Option<SandboxRow>, PlaneError> {
        self.store
            .sandbox(name.to_owned())
            .await
            .map_err(unavailable)
    }

    async fn save(&self, row: SandboxRow, action: &str, detail: String) -> Result<(), PlaneError> {
        self.store
            .put_sandbox(row, Some((action.to_owned(), detail)))
            .await
            .map_err(unavailable)
    }

    /// Stops supervising (the host is stopping); the sandboxes keep running.
    pub fn release(&self) {
        let _ = self.released.send(true);
    }

    async fn live_row(&self, name: &SandboxName) -> Result<SandboxRow, PlaneError> {
        match self.row(name.as_str()).await? {
            Some(row) if row.state != SandboxState::Deleted => Ok(row),
            _ => Err(PlaneError::NotFound(name.to_string())),
        }
    }

    /// Records activity (lifecycle's idle timer counts from the last delivery).
    async fn touch(&self, mut row: SandboxRow, detail: String) {
        let now = ids::now_millis();
        row.last_activity_at = now;
        row.updated_at = now;
        let _ = self.save(row, "deliver", detail).await;
    }
}

/// The template a sandbox was created from, as stored.
fn template_of(row: &SandboxRow) -> Option<SandboxTemplate> {
    SandboxTemplate::from_json(&row.template).ok()
}
