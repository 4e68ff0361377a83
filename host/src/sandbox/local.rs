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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookgate_core::SandboxName;
use hookgate_core::config::{AutoResume, SandboxTemplate};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::{
    Ensured, ExecOutput, Forward, ForwardResponse, PlaneError, PlaneFuture, SandboxEvent,
    SandboxInfo, SandboxPlane, SandboxState,
};
use crate::ids;
use crate::settings::{Image, Settings};
use crate::store::{SandboxRow, Store};

/// How many lines of a failed sandbox's output are kept.
const TAIL_LINES: usize = 20;
/// How much of a sandbox's answer the delivery trace keeps.
const EXCERPT_BYTES: usize = 200;

pub struct LocalPlane {
    root: PathBuf,
    /// What an image without an `[images]` entry runs.
    fallback: Vec<String>,
    images: BTreeMap<String, Image>,
    store: Store,
    ready_timeout: Duration,
    client: reqwest::Client,
    locks: Locks,
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

/// A started sandbox process, not yet supervised.
struct Spawned {
    pid: i32,
    child: tokio::process::Child,
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

    /// Adopts or restarts every sandbox the store says is running or paused.
    pub async fn adopt(self: &Arc<Self>) -> Result<(), PlaneError> {
        let rows = self.store.sandboxes().await.map_err(unavailable)?;
        for mut row in rows {
            if !row.state.is_live() {
                continue;
            }
            let _guard = self.lock(&row.name).await;
            if row.pid.is_some_and(alive) {
                tracing::info!(sandbox = %row.name, pid = row.pid, state = %row.state, "adopted sandbox");
                continue;
            }
            let template = match template_of(&row) {
                Some(template) => template,
                None => {
                    row.state = SandboxState::Failed;
                    row.exit_status = Some("its stored template no longer reads".into());
                    row.updated_at = ids::now_millis();
                    self.save(
                        row,
                        "failed",
                        "could not restart after a host restart".into(),
                    )
                    .await?;
                    continue;
                }
            };
            tracing::info!(sandbox = %row.name, "sandbox process gone after a restart; starting it again");
            // The old ports, unless something else took one while the host was
            // down: then that port gets a fresh number, so deliveries never reach
            // a stranger's listener.
            let mut ports = row.ports.clone();
            for host in ports.values_mut() {
                if std::net::TcpListener::bind(("127.0.0.1", *host)).is_err() {
                    let fresh = free_port()?;
                    tracing::warn!(sandbox = %row.name, old = *host, new = fresh, "a sandbox port was taken while the host was down; using a new one");
                    *host = fresh;
                }
            }
            row.ports = ports.clone();
            match self.spawn(&row.name, &template, ports).await {
                Ok(spawned) => {
                    row.pid = Some(spawned.pid);
                    row.state = SandboxState::Running;
                    row.updated_at = ids::now_millis();
                    let name = row.name.clone();
                    self.save_then_supervise(
                        row,
                        "restarted",
                        "started again after a host restart".into(),
                        spawned,
                    )
                    .await?;
                    tracing::info!(sandbox = %name, "sandbox restarted");
                }
                Err(e) => {
                    tracing::warn!(sandbox = %row.name, error = %e, "restarting a sandbox failed")
                }
            }
        }
        Ok(())
    }

    /// Runs lifecycle timers and marks sandboxes whose process group vanished
    /// (adopted ones have no waiter). A sandbox busy with an operation is left
    /// for the next sweep: it is active anyway.
    pub async fn sweep(&self) {
        let Ok(rows) = self.store.sandboxes().await else {
            return;
        };
        let now = ids::now_millis();
        for row in rows {
            if !row.state.is_live() {
                continue;
            }
            let Ok(_guard) = self.try_lock(&row.name) else {
                continue;
            };
            // Re-read under the lock: the listing may be stale.
            let Ok(Some(mut row)) = self.row(&row.name).await else {
                continue;
            };
            if !row.state.is_live() {
                continue;
            }
            if row.pid.is_some_and(|p| !alive(p)) {
                row.state = SandboxState::Failed;
                row.exit_status = Some("process group gone".into());
                row.last_output = Some(tail(&self.dir(&row.name).join("output.log")));
                row.updated_at = now;
                let _ = self.save(row, "failed", "process group gone".into()).await;
                continue;
            }
            let timers = Timers::of(&row);
            let result = if timers.delete_at.is_some_and(|at| now >= at) {
                let secs = template_of(&row)
                    .and_then(|t| t.lifecycle)
                    .and_then(|l| l.delete_after)
                    .unwrap_or_default();
                tracing::info!(sandbox = %row.name, "lifecycle.delete_after reached; deleting");
                self.delete_locked(
                    row,
                    format!("lifecycle.delete_after: {secs} s since creation; process group killed, work directory removed"),
                )
                .await
            } else if row.state == SandboxState::Running
                && timers.pause_at.is_some_and(|at| now >= at)
            {
                let idle = (now - row.last_activity_at) / 1000;
                tracing::info!(sandbox = %row.name, idle_seconds = idle, "lifecycle.pause_after_idle reached; pausing");
                self.signal_locked(
                    row,
                    Signal::SIGSTOP,
                    SandboxState::Paused,
                    format!("lifecycle.pause_after_idle: no delivery for {idle} s (process group SIGSTOP)"),
                )
                .await
            } else {
                Ok(())
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "a lifecycle timer could not act; retrying at the next sweep");
            }
        }
    }

    /// Starts the sandbox's process group and waits until it listens.
    async fn spawn(
        &self,
        name: &str,
        template: &SandboxTemplate,
        ports: BTreeMap<u16, u16>,
    ) -> Result<Spawned, PlaneError> {
        let dir = self.dir(name);
        std::fs::create_dir_all(&dir).map_err(unavailable)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("output.log"))
            .map_err(unavailable)?;
        let (program, workdir, image_env): (Vec<String>, PathBuf, BTreeMap<String, String>) =
            match self.images.get(&template.image) {
                Some(image) => (
                    image.command.clone(),
                    image.workdir.clone().unwrap_or_else(|| dir.clone()),
                    image.env.clone(),
                ),
                None => (self.fallback.clone(), dir.clone(), BTreeMap::new()),
            };
        // The shell applies the memory limit, then becomes the program.
        let limit = template.memory_mb.map_or_else(String::new, |mb| {
            format!("ulimit -d {} || exit 97; ", u64::from(mb) * 1024)
        });
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("{limit}exec \"$@\""))
            .arg("sandbox")
            .args(&program)
            .current_dir(&workdir)
            .env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            )
            .env("HOME", &dir)
            .env("HOOKGATE_SANDBOX", name)
            .env("HOOKGATE_SANDBOX_DIR", &dir)
            .envs(&image_env)
            .envs(&template.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(unavailable)?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        if let Some((_, first)) = ports.iter().next() {
            cmd.env("PORT", first.to_string());
        }
        for (inner, host) in &ports {
            cmd.env(format!("HOOKGATE_PORT_{inner}"), host.to_string());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| PlaneError::Rejected(format!("starting {:?}: {e}", program[0])))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| unavailable("the sandbox exited at once"))?;
        // Wait until every port accepts connections, or the process dies.
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        for host in ports.values() {
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", *host))
                    .await
                    .is_ok()
                {
                    break;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(PlaneError::Rejected(format!(
                        "sandbox {name} exited ({status}) before listening; last output: {}",
                        tail(&dir.join("output.log"))
                    )));
                }
                if tokio::time::Instant::now() > deadline {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    return Err(PlaneError::Unavailable(format!(
                        "sandbox {name} did not listen on port {host} within {} s",
                        self.ready_timeout.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Spawned { pid, child })
    }

    /// Records a newly started sandbox, then watches it: one that dies on its
    /// own is marked failed with its exit status and last output. (Recording
    /// first means even an instant death finds its row.) If the record cannot be
    /// written, the process is stopped rather than left untracked.
    async fn save_then_supervise(
        &self,
        row: SandboxRow,
        action: &str,
        detail: String,
        spawned: Spawned,
    ) -> Result<(), PlaneError> {
        let Spawned { pid, mut child } = spawned;
        let name = row.name.clone();
        if let Err(e) = self.save(row, action, detail).await {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            return Err(e);
        }
        let store = self.store.clone();
        let locks = Arc::clone(&self.locks);
        let log = self.dir(&name).join("output.log");
        let mut released = self.released.subscribe();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                () = crate::signal::stopped(&mut released) => return,
            };
            // Under the sandbox's lock: an operation in flight saves its row last.
            let _guard = lock_of(&locks, &name).lock_owned().await;
            let Ok(Some(mut row)) = store.sandbox(name.clone()).await else {
                return;
            };
            if row.pid != Some(pid) || !row.state.is_live() {
                return;
            }
            let status = status.map_or_else(|e| format!("unknown ({e})"), |s| s.to_string());
            tracing::warn!(sandbox = %name, %status, "sandbox exited");
            row.state = SandboxState::Failed;
            row.exit_status = Some(status.clone());
            row.last_output = Some(tail(&log));
            row.updated_at = ids::now_millis();
            let _ = store
                .put_sandbox(row, Some(("failed".into(), status)))
                .await;
        });
        Ok(())
    }

    /// Pause or resume, from an action.
    async fn signal(
        &self,
        name: &SandboxName,
        signal: Signal,
        state: SandboxState,
    ) -> Result<(), PlaneError> {
        let _guard = self.lock(name.as_str()).await;
        let row = self.live_row(name).await?;
        let detail = format!("process group {}", signal.as_str());
        self.signal_locked(row, signal, state, detail).await
    }

    /// Signals the group and records the new state; the caller holds the lock.
    /// Resuming counts as activity, so the idle timer starts again.
    async fn signal_locked(
        &self,
        mut row: SandboxRow,
        signal: Signal,
        state: SandboxState,
        detail: String,
    ) -> Result<(), PlaneError> {
        let name = row.name.clone();
        if row.state == SandboxState::Failed {
            return Err(PlaneError::Rejected(format!(
                "sandbox {name} has failed: {}",
                row.exit_status.unwrap_or_default()
            )));
        }
        if let Some(pid) = row.pid {
            killpg(Pid::from_raw(pid), signal)
                .map_err(|e| unavailable(format!("signalling sandbox {name}: {e}")))?;
        }
        if row.state != state {
            let now = ids::now_millis();
            row.state = state;
            row.updated_at = now;
            if state == SandboxState::Running {
                row.last_activity_at = now;
            }
            self.save(row, state.as_str(), detail).await?;
        }
        Ok(())
    }

    /// Kills the group and removes the work directory; the caller holds the lock.
    async fn delete_locked(&self, mut row: SandboxRow, detail: String) -> Result<(), PlaneError> {
        let pid = row.pid;
        let dir = self.dir(&row.name);
        // Recorded first, so the supervisor sees a deliberate end, not a failure.
        row.state = SandboxState::Deleted;
        row.updated_at = ids::now_millis();
        self.save(row, "deleted", detail).await?;
        if let Some(pid) = pid {
            // SIGKILL ends a stopped (paused) group too.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(unavailable(e)),
            _ => Ok(()),
        }
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

/// Whether a sandbox's process group still runs. Its leader (the sandbox's
/// program) having exited counts as gone even while it waits, a zombie, for its
/// old parent to reap it.
fn alive(pgid: i32) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pgid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state == 'Z' || state == 'X')
        })
        .unwrap_or(false);
    !zombie && killpg(Pid::from_raw(pgid), None).is_ok()
}

/// The last lines of a log file.
/// (Only the file's end is read: the sandbox decides how large it grows.)
fn tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    /// Enough for `TAIL_LINES` lines of ordinary length.
    const TAIL_BYTES: u64 = 16 * 1024;
    let mut text = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let len = file.metadata().map_or(0, |m| m.len());
        if file
            .seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
            .is_ok()
        {
            let _ = file.take(TAIL_BYTES).read_to_end(&mut text);
        }
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The template a sandbox was created from, as stored.
fn template_of(row: &SandboxRow) -> Option<SandboxTemplate> {
    SandboxTemplate::from_json(&row.template).ok()
}

/// When a sandbox's lifecycle timers fire (epoch milliseconds).
#[derive(Debug, Default)]
struct Timers {
    pause_at: Option<i64>,
    delete_at: Option<i64>,
}

impl Timers {
    fn of(row: &SandboxRow) -> Self {
        let Some(lifecycle) = template_of(row).and_then(|t| t.lifecycle) else {
            return Self::default();
        };
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        Self {
            pause_at: lifecycle
                .pause_after_idle
                .map(|s| row.last_activity_at.saturating_add(ms(s))),
            delete_at: lifecycle
                .delete_after
                .map(|s| row.created_at.saturating_add(ms(s))),
        }
    }
}

/// The API's view of a stored sandbox.
fn info(row: &SandboxRow, events: Vec<(i64, String, String)>) -> SandboxInfo {
    let live = row.state.is_live();
    let timers = if live {
        Timers::of(row)
    } else {
        Timers::default()
    };
    SandboxInfo {
        name: row.name.clone(),
        state: row.state,
        image: row.image.clone(),
        ports: row
            .ports
            .iter()
            .map(|(inner, host)| (inner.to_string(), *host))
            .collect(),
        pid: row.pid.filter(|_| live),
        created_at: ids::rfc3339(row.created_at),
        last_activity_at: ids::rfc3339(row.last_activity_at),
        updated_at: ids::rfc3339(row.updated_at),
        pause_at: timers
            .pause_at
            .filter(|_| row.state == SandboxState::Running)
            .map(ids::rfc3339),
        delete_at: timers.delete_at.map(ids::rfc3339),
        exit_status: row.exit_status.clone(),
        last_output: row.last_output.clone(),
        recent_actions: events
            .into_iter()
            .map(|(at, action, detail)| SandboxEvent {
                at: ids::rfc3339(at),
                action,
                detail,
            })
            .collect(),
    }
}

/// A free loopback port (bound and released; the sandbox binds it next).
fn free_port() -> Result<u16, PlaneError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(unavailable)
}

impl SandboxPlane for LocalPlane {
    fn ensure<'a>(
        &'a self,
        name: &'a SandboxName,
        template: &'a SandboxTemplate,
    ) -> PlaneFuture<'a, Ensured> {
        Box::pin(async move {
            let _guard = self.lock(name.as_str()).await;
            if let Some(row) = self.row(name.as_str()).await?
                && row.state != SandboxState::Deleted
            {
                return Ok(Ensured::Existed);
            }
            let mut ports = BTreeMap::new();
            for inner in &template.ports {
                ports.insert(*inner, free_port()?);
            }
            let spawned = self.spawn(name.as_str(), template, ports.clone()).await?;
            let now = ids::now_millis();
            let shown: Vec<String> = ports.iter().map(|(i, h)| format!("{i}→{h}")).collect();
            let row = SandboxRow {
                name: name.to_string(),
                state: SandboxState::Running,
                image: template.image.clone(),
                template: serde_json::to_value(template).unwrap_or_default(),
                ports,
                pid: Some(spawned.pid),
                created_at: now,
                last_activity_at: now,
                exit_status: None,
                last_output: None,
                updated_at: now,
            };
            self.save_then_supervise(
                row,
                "created",
                format!("image {}, ports {}", template.image, shown.join(", ")),
                spawned,
            )
            .await?;
            Ok(Ensured::Created)
        })
    }

    fn resume<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(self.signal(name, Signal::SIGCONT, SandboxState::Running))
    }

    fn pause<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(self.signal(name, Signal::SIGSTOP, SandboxState::Paused))
    }

    fn delete<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(async move {
            let _guard = self.lock(name.as_str()).await;
            match self.row(name.as_str()).await? {
                Some(row) if row.state != SandboxState::Deleted => {
                    self.delete_locked(row, "process group killed, work directory removed".into())
                        .await
                }
                _ => Ok(()),
            }
        })
    }

    fn inspect<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, Option<SandboxInfo>> {
        Box::pin(async move {
            let Some(row) = self.row(name.as_str()).await? else {
                return Ok(None);
            };
            let events = self
                .store
                .sandbox_events(name.to_string())
                .await
                .map_err(unavailable)?;
            Ok(Some(info(&row, events)))
        })
    }

    fn list(&self) -> PlaneFuture<'_, Vec<SandboxInfo>> {
        Box::pin(async move {
            let rows = self.store.sandboxes().await.map_err(unavailable)?;
            Ok(rows.iter().map(|r| info(r, Vec::new())).collect())
        })
    }

    fn deliver<'a>(
        &'a self,
        name: &'a SandboxName,
        port: u16,
        request: Forward,
    ) -> PlaneFuture<'a, ForwardResponse> {
        Box::pin(async move {
            // Waiting behind another operation (a long script) counts against the
            // delivery's own timeout.
            let _guard = tokio::time::timeout(request.timeout, self.lock(name.as_str()))
                .await
                .map_err(|_| {
                    unavailable(format!(
                        "sandbox {name} stayed busy with another operation for {} s",
                        request.timeout.as_secs()
                    ))
                })?;
            let mut row = self.live_row(name).await?;
            let mut resumed = false;
            if row.state == SandboxState::Paused {
                let wakes = template_of(&row)
                    .and_then(|t| t.lifecycle)
                    .is_some_and(|l| l.auto_resume == AutoResume::OnActivity);
                if !wakes {
                    return Err(PlaneError::Paused(name.to_string()));
                }
                self.signal_locked(
                    row,
                    Signal::SIGCONT,
                    SandboxState::Running,
                    "lifecycle.auto_resume on_activity: a delivery arrived (process group SIGCONT)"
                        .into(),
                )
                .await?;
                row = self.live_row(name).await?;
                resumed = true;
            }
            if row.state == SandboxState::Failed {
                return Err(PlaneError::Rejected(format!(
                    "sandbox {name} has failed ({})",
                    row.exit_status.clone().unwrap_or_default()
                )));
            }
            let Some(host) = row.ports.get(&port).copied() else {
                let known: Vec<String> = row.ports.keys().map(u16::to_string).collect();
                return Err(PlaneError::Rejected(format!(
                    "sandbox {name} has no port {port} (it serves {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            // Only ever the sandbox's own loopback port: the path is appended to a
            // fixed origin, never parsed as a URL of its own, and must be a path.
            if !request.path.starts_with('/') || request.path.starts_with("//") {
                return Err(PlaneError::Rejected(format!(
                    "forward path {:?} is not an absolute path",
                    request.path
                )));
            }
            let url = format!("http://127.0.0.1:{host}{}", request.path);
            let method = reqwest::Method::from_bytes(request.method.as_bytes())
                .unwrap_or(reqwest::Method::POST);
            let mut req = self
                .client
                .request(method, url)
                .timeout(request.timeout)
                .body(request.body);
            for (n, v) in &request.headers {
                req = req.header(n.as_str(), v.as_slice());
            }
            let response = req.send().await.map_err(|e| {
                if e.is_timeout() {
                    unavailable(format!(
                        "port {port} did not answer within {} s",
                        request.timeout.as_secs()
                    ))
                } else {
                    unavailable(format!("port {port}: {}", e.without_url()))
                }
            })?;
            let status = response.status().as_u16();
            // The start of the body is all the trace shows; the rest is not read.
            let mut response = response;
            let mut body = Vec::new();
            while body.len() < EXCERPT_BYTES {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            let excerpt: String =
                String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]).into_owned();
            self.touch(row, format!("port {port} answered {status}"))
                .await;
            Ok(ForwardResponse {
                status,
                excerpt,
                resumed,
            })
        })
    }

    fn exec<'a>(
        &'a self,
        name: &'a SandboxName,
        script: &'a str,
        timeout: Duration,
    ) -> PlaneFuture<'a, ExecOutput> {
        Box::pin(async move {
            let _guard = self.lock(name.as_str()).await;
            let row = self.live_row(name).await?;
            if row.state != SandboxState::Running {
                return Err(PlaneError::Rejected(format!(
                    "sandbox {name} is {}",
                    row.state
                )));
            }
            let dir = self.dir(name.as_str());
            // Output goes to a file, not to memory: a script may print without end.
            let log_path = dir.join("script-output.log");
            let log = std::fs::File::create(&log_path).map_err(unavailable)?;
            let mut cmd = tokio::process::Command::new("/bin/sh");
            cmd.arg("-c")
                .arg(script)
                .current_dir(&dir)
                .env_clear()
                .env(
                    "PATH",
                    std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
                )
                .env("HOME", &dir)
                .env("HOOKGATE_SANDBOX", name.as_str())
                .env("HOOKGATE_SANDBOX_DIR", &dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(unavailable)?)
                .stderr(log)
                .process_group(0)
                .kill_on_drop(true);
            for (inner, host) in &row.ports {
                cmd.env(format!("HOOKGATE_PORT_{inner}"), host.to_string());
            }
            let mut child = cmd.spawn().map_err(unavailable)?;
            let pid = child.id().and_then(|p| i32::try_from(p).ok());
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(status)) => Ok(ExecOutput {
                    exit_code: status.code().unwrap_or(-1),
                    tail: tail(&log_path),
                }),
                Ok(Err(e)) => Err(unavailable(e)),
                Err(_) => {
                    if let Some(pid) = pid {
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                    Err(PlaneError::Rejected(format!(
                        "script did not finish within {} s",
                        timeout.as_secs()
                    )))
                }
            }
        })
    }
}
