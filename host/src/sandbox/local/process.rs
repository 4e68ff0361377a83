//! Process groups: starting a sandbox's program on its remapped loopback ports,
//! watching it until it exits, and finding it again after a host restart.
//!
//! A sandbox is the process group of a `/bin/sh` that applies the memory limit
//! and then execs the image's command in the work directory. The group, not the
//! pid, is what the plane signals, so whatever the program starts pauses and
//! dies with it. Starting is split in two — [`LocalPlane::spawn`] waits until
//! every port listens, [`LocalPlane::save_then_supervise`] records the row and
//! only then watches the process — so a sandbox that dies at once still finds
//! its row to mark failed. Adoption lives here because restarting a sandbox is
//! the same start, on its old ports. When a sandbox pauses or goes away is
//! `lifecycle`'s business; this file gives it the probes it needs ([`alive`],
//! [`tail`]) and stops a process itself only when it cannot be tracked (never
//! ready, or its row not written).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use hookgate_core::config::SandboxTemplate;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::{LocalPlane, lock_of, template_of, unavailable};
use crate::ids;
use crate::sandbox::{PlaneError, SandboxState};
use crate::store::SandboxRow;

/// How many lines of a failed sandbox's output are kept.
const TAIL_LINES: usize = 20;

/// A started sandbox process, not yet supervised.
pub(super) struct Spawned {
    pub(super) pid: i32,
    child: tokio::process::Child,
}

impl LocalPlane {
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

    /// Starts the sandbox's process group and waits until it listens.
    pub(super) async fn spawn(
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
    pub(super) async fn save_then_supervise(
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
}

/// Whether a sandbox's process group still runs. Its leader (the sandbox's
/// program) having exited counts as gone even while it waits, a zombie, for its
/// old parent to reap it.
pub(super) fn alive(pgid: i32) -> bool {
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
pub(super) fn tail(path: &Path) -> String {
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

/// A free loopback port (bound and released; the sandbox binds it next).
pub(super) fn free_port() -> Result<u16, PlaneError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(unavailable)
}
