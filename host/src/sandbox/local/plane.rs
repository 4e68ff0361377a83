//! The [`SandboxPlane`](crate::sandbox::SandboxPlane) impl: the verbs the runner
//! and the API call on a local sandbox.
//!
//! Every verb that acts takes the sandbox's lock first and reads the row under
//! it, then hands over to the file whose concern it is — `process` to start a
//! sandbox, `lifecycle` to signal or delete one, `view` to show one. What stays
//! here is particular to a verb: `deliver` forwards to the sandbox's own
//! loopback port only (the request brings a path, never a URL) and reads just
//! the start of the answer; `exec` runs a script in the work directory, its
//! output to a file, its process group killed when the timeout passes.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookgate_core::SandboxName;
use hookgate_core::config::{AutoResume, SandboxTemplate};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::process::{free_port, tail};
use super::view::info;
use super::{LocalPlane, template_of, unavailable};
use crate::ids;
use crate::sandbox::{
    Ensured, ExecOutput, Forward, ForwardResponse, PlaneError, PlaneFuture, SandboxInfo,
    SandboxPlane, SandboxState,
};
use crate::store::SandboxRow;

/// How much of a sandbox's answer the delivery trace keeps.
const EXCERPT_BYTES: usize = 200;

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
            // A creation under way counts before its row exists, so racing
            // ensures of different sandboxes cannot pass the cap together.
            let others = self.creating.fetch_add(1, Ordering::SeqCst);
            let _creating = Creating(&self.creating);
            let live = self
                .store
                .sandboxes()
                .await
                .map_err(unavailable)?
                .iter()
                .filter(|r| r.state.is_live())
                .count();
            if live + others >= self.max_sandboxes {
                return Err(PlaneError::Rejected(format!(
                    "sandbox.max_sandboxes ({}) reached: delete a sandbox or raise the setting",
                    self.max_sandboxes
                )));
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

/// Takes one off a creation count when dropped, however the creation ended.
struct Creating<'a>(&'a AtomicUsize);

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
