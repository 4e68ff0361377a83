//! Lifecycle: the transitions of a live sandbox — pause and resume (SIGSTOP and
//! SIGCONT of its process group), delete (SIGKILL, work directory removed) — and
//! the sweep that fires them when a template's `lifecycle` timers come due.
//!
//! Each transition has a `_locked` form for a caller that already holds the
//! sandbox's lock and has read its row under it: the sweep, a delivery that
//! wakes a paused sandbox, the API's delete. Timers are computed from the stored
//! row ([`Timers::of`]), never kept in memory, so a host restart neither resets
//! nor loses them. The sweep also marks failed a group that vanished with no
//! supervisor to notice (an adopted one), which is why it uses `process`'s
//! probes.

use hookgate_core::SandboxName;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::process::{alive, tail};
use super::{LocalPlane, template_of, unavailable};
use crate::ids;
use crate::sandbox::{PlaneError, SandboxState};
use crate::store::SandboxRow;

impl LocalPlane {
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

    /// Pause or resume, from an action.
    pub(super) async fn signal(
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
    pub(super) async fn signal_locked(
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
    pub(super) async fn delete_locked(
        &self,
        mut row: SandboxRow,
        detail: String,
    ) -> Result<(), PlaneError> {
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
}

/// When a sandbox's lifecycle timers fire (epoch milliseconds).
#[derive(Debug, Default)]
pub(super) struct Timers {
    pub(super) pause_at: Option<i64>,
    pub(super) delete_at: Option<i64>,
}

impl Timers {
    pub(super) fn of(row: &SandboxRow) -> Self {
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
