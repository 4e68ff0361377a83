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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookgate_core::SandboxName;
use hookgate_core::config::SandboxTemplate;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::{
    Ensured, ExecOutput, Forward, ForwardResponse, PlaneError, PlaneFuture, SandboxPlane,
    SandboxState,
};
use crate::ids;
use crate::settings::Image;
use crate::store::{SandboxRow, Store};

/// How many lines of a failed sandbox's output are kept.
const TAIL_LINES: usize = 20;

pub struct LocalPlane {
    root: PathBuf,
    exe: PathBuf,
    images: BTreeMap<String, Image>,
    store: Store,
    ready_timeout: Duration,
    client: reqwest::Client,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
    pub fn new(
        data_dir: &Path,
        images: BTreeMap<String, Image>,
        store: Store,
        ready_timeout: Duration,
    ) -> std::io::Result<Self> {
        // Absolute, since sandboxes run with their work directory as cwd.
        let root = std::fs::canonicalize(data_dir)?.join("sandboxes");
        std::fs::create_dir_all(&root)?;
        let exe = std::env::current_exe()?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            root,
            exe,
            images,
            store,
            ready_timeout,
            client,
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// Serializes operations on one sandbox (concurrent ensures create it once).
    async fn lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(locks.entry(name.to_owned()).or_default())
        };
        m.lock_owned().await
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

    /// Adopts or restarts every sandbox the store says is running or paused.
    pub async fn adopt(self: &Arc<Self>) -> Result<(), PlaneError> {
        let rows = self.store.sandboxes().await.map_err(unavailable)?;
        for mut row in rows {
            if row.state != "running" && row.state != "paused" {
                continue;
            }
            let _guard = self.lock(&row.name).await;
            if row.pid.is_some_and(alive) {
                tracing::info!(sandbox = %row.name, pid = row.pid, state = %row.state, "adopted sandbox");
                continue;
            }
            let template: SandboxTemplate = match hookgate_core::config::Action::from_json(
                &serde_json::json!({"action_type": "ensure_sandbox", "template": row.template}),
            ) {
                Ok(hookgate_core::config::Action::EnsureSandbox { template }) => template,
                _ => {
                    row.state = "failed".into();
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
            let ports = row.ports.clone();
            match self.spawn(&row.name, &template, ports).await {
                Ok(pid) => {
                    row.pid = Some(pid);
                    row.state = "running".into();
                    row.updated_at = ids::now_millis();
                    self.save(
                        row,
                        "restarted",
                        "started again after a host restart".into(),
                    )
                    .await?;
                }
                Err(e) => {
                    tracing::warn!(sandbox = %row.name, error = %e, "restarting a sandbox failed")
                }
            }
        }
        Ok(())
    }

    /// Marks sandboxes whose process group vanished (adopted ones have no waiter).
    pub async fn sweep(&self) {
        let Ok(rows) = self.store.sandboxes().await else {
            return;
        };
        for mut row in rows {
            if (row.state == "running" || row.state == "paused")
                && row.pid.is_some_and(|p| !alive(p))
            {
                let _guard = self.lock(&row.name).await;
                row.state = "failed".into();
                row.exit_status = Some("process group gone".into());
                row.last_output = Some(tail(&self.dir(&row.name).join("output.log")));
                row.updated_at = ids::now_millis();
                let _ = self.save(row, "failed", "process group gone".into()).await;
            }
        }
    }

    /// Starts the sandbox's process group and waits until it listens.
    async fn spawn(
        &self,
        name: &str,
        template: &SandboxTemplate,
        ports: BTreeMap<u16, u16>,
    ) -> Result<i32, PlaneError> {
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
                None => (
                    vec![
                        self.exe.display().to_string(),
                        "sandbox".into(),
                        "echo".into(),
                    ],
                    dir.clone(),
                    BTreeMap::new(),
                ),
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
        // Supervise: a sandbox that dies on its own is marked failed.
        let store = self.store.clone();
        let name = name.to_owned();
        let log = dir.join("output.log");
        tokio::spawn(async move {
            let status = child.wait().await;
            let Ok(Some(mut row)) = store.sandbox(name.clone()).await else {
                return;
            };
            if row.pid != Some(pid) || (row.state != "running" && row.state != "paused") {
                return;
            }
            let status = status.map_or_else(|e| format!("unknown ({e})"), |s| s.to_string());
            tracing::warn!(sandbox = %name, %status, "sandbox exited");
            row.state = "failed".into();
            row.exit_status = Some(status.clone());
            row.last_output = Some(tail(&log));
            row.updated_at = ids::now_millis();
            let _ = store
                .put_sandbox(row, Some(("failed".into(), status)))
                .await;
        });
        Ok(pid)
    }

    async fn signal(
        &self,
        name: &SandboxName,
        signal: Signal,
        state: &str,
        action: &str,
    ) -> Result<(), PlaneError> {
        let _guard = self.lock(name.as_str()).await;
        let mut row = self.live_row(name).await?;
        if row.state == "failed" {
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
            row.state = state.to_owned();
            row.updated_at = ids::now_millis();
            self.save(
                row,
                action,
                format!("{action} (process group {})", signal.as_str()),
            )
            .await?;
        }
        Ok(())
    }

    async fn live_row(&self, name: &SandboxName) -> Result<SandboxRow, PlaneError> {
        match self.row(name.as_str()).await? {
            Some(row) if row.state != "deleted" => Ok(row),
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

/// Whether a process group still exists.
fn alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
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
                && row.state != "deleted"
            {
                return Ok(Ensured::Existed);
            }
            let mut ports = BTreeMap::new();
            for inner in &template.ports {
                ports.insert(*inner, free_port()?);
            }
            let pid = self.spawn(name.as_str(), template, ports.clone()).await?;
            let now = ids::now_millis();
            let shown: Vec<String> = ports.iter().map(|(i, h)| format!("{i}→{h}")).collect();
            let row = SandboxRow {
                name: name.to_string(),
                state: "running".into(),
                image: template.image.clone(),
                template: serde_json::to_value(template).unwrap_or_default(),
                ports,
                pid: Some(pid),
                created_at: now,
                last_activity_at: now,
                exit_status: None,
                last_output: None,
                updated_at: now,
            };
            self.save(
                row,
                "created",
                format!("image {}, ports {}", template.image, shown.join(", ")),
            )
            .await?;
            Ok(Ensured::Created)
        })
    }

    fn resume<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(self.signal(name, Signal::SIGCONT, "running", "resumed"))
    }

    fn pause<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(self.signal(name, Signal::SIGSTOP, "paused", "paused"))
    }

    fn delete<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(async move {
            let _guard = self.lock(name.as_str()).await;
            let Some(mut row) = self.row(name.as_str()).await? else {
                return Ok(());
            };
            if row.state == "deleted" {
                return Ok(());
            }
            let pid = row.pid;
            // Recorded first, so the supervisor sees a deliberate end, not a failure.
            row.state = "deleted".into();
            row.updated_at = ids::now_millis();
            self.save(
                row,
                "deleted",
                "process group killed, work directory removed".into(),
            )
            .await?;
            if let Some(pid) = pid {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            match std::fs::remove_dir_all(self.dir(name.as_str())) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(unavailable(e)),
                _ => Ok(()),
            }
        })
    }

    fn state<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, Option<SandboxState>> {
        Box::pin(async move {
            Ok(self
                .row(name.as_str())
                .await?
                .map(|r| match r.state.as_str() {
                    "running" => SandboxState::Running,
                    "paused" => SandboxState::Paused,
                    "deleted" => SandboxState::Deleted,
                    _ => SandboxState::Failed,
                }))
        })
    }

    fn deliver<'a>(
        &'a self,
        name: &'a SandboxName,
        port: u16,
        request: Forward,
    ) -> PlaneFuture<'a, ForwardResponse> {
        Box::pin(async move {
            let row = self.live_row(name).await?;
            match row.state.as_str() {
                "paused" => return Err(PlaneError::Paused(name.to_string())),
                "failed" => {
                    return Err(PlaneError::Rejected(format!(
                        "sandbox {name} has failed ({})",
                        row.exit_status.clone().unwrap_or_default()
                    )));
                }
                _ => {}
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
            // fixed origin, never parsed as a URL of its own.
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
            let body = response.bytes().await.unwrap_or_default();
            let excerpt: String =
                String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            self.touch(row, format!("port {port} answered {status}"))
                .await;
            Ok(ForwardResponse { status, excerpt })
        })
    }

    fn exec<'a>(
        &'a self,
        name: &'a SandboxName,
        script: &'a str,
        timeout: Duration,
    ) -> PlaneFuture<'a, ExecOutput> {
        Box::pin(async move {
            let row = self.live_row(name).await?;
            if row.state != "running" {
                return Err(PlaneError::Rejected(format!(
                    "sandbox {name} is {}",
                    row.state
                )));
            }
            let dir = self.dir(name.as_str());
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
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            for (inner, host) in &row.ports {
                cmd.env(format!("HOOKGATE_PORT_{inner}"), host.to_string());
            }
            let child = cmd.spawn().map_err(unavailable)?;
            let pid = child.id().and_then(|p| i32::try_from(p).ok());
            match tokio::time::timeout(timeout, child.wait_with_output()).await {
                Ok(Ok(out)) => {
                    let text = [out.stdout, out.stderr].concat();
                    let text = String::from_utf8_lossy(&text);
                    let lines: Vec<&str> = text.lines().collect();
                    Ok(ExecOutput {
                        exit_code: out.status.code().unwrap_or(-1),
                        tail: lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n"),
                    })
                }
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
