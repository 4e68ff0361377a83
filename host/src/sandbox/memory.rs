//! An in-memory plane: sandboxes are records, deliveries are logged, and faults
//! can be injected. The runner's tests drive it; it is also how a host with no
//! sandbox runtime can still be exercised end to end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hookgate_core::SandboxName;
use hookgate_core::config::SandboxTemplate;

use super::{
    Ensured, ExecOutput, Forward, ForwardResponse, PlaneError, PlaneFuture, SandboxInfo,
    SandboxPlane, SandboxState,
};
use crate::ids;

/// One call the plane received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Ensure(String),
    Resume(String),
    Pause(String),
    Delete(String),
    Deliver {
        sandbox: String,
        port: u16,
        delivery_id: Option<String>,
        body: Vec<u8>,
    },
    Exec(String, String),
}

/// An injected fault: the next `times` calls of `op` fail with `error`, or stall.
#[derive(Debug, Clone)]
pub enum Fault {
    Fail {
        op: &'static str,
        times: u32,
        error: PlaneError,
    },
    Stall {
        op: &'static str,
        times: u32,
        delay: Duration,
    },
    /// `deliver` answers with this status the next `times` times.
    Status { times: u32, status: u16 },
}

#[derive(Debug, Clone)]
struct Record {
    state: SandboxState,
    image: String,
    created_at: i64,
}

#[derive(Debug, Default)]
struct State {
    sandboxes: HashMap<String, Record>,
    calls: Vec<Call>,
    faults: Vec<Fault>,
}

#[derive(Debug, Default)]
pub struct MemoryPlane {
    state: Mutex<State>,
}

impl MemoryPlane {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn sandbox_state(&self, name: &str) -> Option<SandboxState> {
        self.lock().sandboxes.get(name).map(|r| r.state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock poisons it; the data stays usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the first matching fault, if any: an error to return or a delay.
    fn fault(&self, op: &str) -> (Option<PlaneError>, Option<Duration>, Option<u16>) {
        let mut state = self.lock();
        let mut out = (None, None, None);
        state.faults.retain_mut(|f| {
            let (hit, left) = match f {
                Fault::Fail {
                    op: o,
                    times,
                    error,
                } if *o == op && out.0.is_none() => {
                    out.0 = Some(error.clone());
                    *times -= 1;
                    (true, *times)
                }
                Fault::Stall {
                    op: o,
                    times,
                    delay,
                } if *o == op && out.1.is_none() => {
                    out.1 = Some(*delay);
                    *times -= 1;
                    (true, *times)
                }
                Fault::Status { times, status } if op == "deliver" && out.2.is_none() => {
                    out.2 = Some(*status);
                    *times -= 1;
                    (true, *times)
                }
                _ => (false, 1),
            };
            !hit || left > 0
        });
        out
    }

    async fn op<T>(
        &self,
        op: &'static str,
        call: Call,
        f: impl FnOnce(&mut State) -> Result<T, PlaneError>,
    ) -> Result<T, PlaneError> {
        let (error, delay, _) = self.fault(op);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.lock();
        state.calls.push(call);
        if let Some(e) = error {
            return Err(e);
        }
        f(&mut state)
    }
}

fn live<'s>(state: &'s mut State, name: &str) -> Result<&'s mut Record, PlaneError> {
    match state.sandboxes.get_mut(name) {
        Some(r) if r.state != SandboxState::Deleted => Ok(r),
        _ => Err(PlaneError::NotFound(name.to_owned())),
    }
}

fn info(name: &str, r: &Record) -> SandboxInfo {
    let created = ids::rfc3339(r.created_at);
    SandboxInfo {
        name: name.to_owned(),
        state: r.state,
        image: r.image.clone(),
        ports: std::collections::BTreeMap::new(),
        pid: None,
        created_at: created.clone(),
        last_activity_at: created.clone(),
        updated_at: created,
        pause_at: None,
        delete_at: None,
        exit_status: None,
        last_output: None,
        recent_actions: Vec::new(),
    }
}

impl SandboxPlane for MemoryPlane {
    fn ensure<'a>(
        &'a self,
        name: &'a SandboxName,
        template: &'a SandboxTemplate,
    ) -> PlaneFuture<'a, Ensured> {
        Box::pin(self.op("ensure", Call::Ensure(name.to_string()), move |s| {
            if live(s, name.as_str()).is_ok() {
                return Ok(Ensured::Existed);
            }
            s.sandboxes.insert(
                name.to_string(),
                Record {
                    state: SandboxState::Running,
                    image: template.image.clone(),
                    created_at: ids::now_millis(),
                },
            );
            Ok(Ensured::Created)
        }))
    }

    fn resume<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(self.op("resume", Call::Resume(name.to_string()), move |s| {
            live(s, name.as_str())?.state = SandboxState::Running;
            Ok(())
        }))
    }

    fn pause<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(self.op("pause", Call::Pause(name.to_string()), move |s| {
            live(s, name.as_str())?.state = SandboxState::Paused;
            Ok(())
        }))
    }

    fn delete<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(self.op("delete", Call::Delete(name.to_string()), move |s| {
            if let Some(r) = s.sandboxes.get_mut(name.as_str()) {
                r.state = SandboxState::Deleted;
            }
            Ok(())
        }))
    }

    fn inspect<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, Option<SandboxInfo>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .sandboxes
                .get(name.as_str())
                .map(|r| info(name.as_str(), r)))
        })
    }

    fn list(&self) -> PlaneFuture<'_, Vec<SandboxInfo>> {
        Box::pin(async move {
            let s = self.lock();
            let mut all: Vec<SandboxInfo> = s.sandboxes.iter().map(|(n, r)| info(n, r)).collect();
            all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.name.cmp(&b.name)));
            Ok(all)
        })
    }

    fn deliver<'a>(
        &'a self,
        name: &'a SandboxName,
        port: u16,
        request: Forward,
    ) -> PlaneFuture<'a, ForwardResponse> {
        Box::pin(async move {
            let (error, delay, status) = self.fault("deliver");
            if let Some(delay) = delay {
                if delay > request.timeout {
                    tokio::time::sleep(request.timeout).await;
                    return Err(PlaneError::Unavailable(format!(
                        "no answer within {} s",
                        request.timeout.as_secs()
                    )));
                }
                tokio::time::sleep(delay).await;
            }
            let mut s = self.lock();
            let delivery_id = request
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("X-Hookgate-Delivery-Id"))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
            s.calls.push(Call::Deliver {
                sandbox: name.to_string(),
                port,
                delivery_id,
                body: request.body.to_vec(),
            });
            if let Some(e) = error {
                return Err(e);
            }
            match live(&mut s, name.as_str())?.state {
                SandboxState::Paused => return Err(PlaneError::Paused(name.to_string())),
                SandboxState::Failed => {
                    return Err(PlaneError::Rejected(format!("sandbox {name} has failed")));
                }
                _ => {}
            }
            let status = status.unwrap_or(200);
            Ok(ForwardResponse {
                status,
                excerpt: String::new(),
                resumed: false,
            })
        })
    }

    fn exec<'a>(
        &'a self,
        name: &'a SandboxName,
        script: &'a str,
        _timeout: Duration,
    ) -> PlaneFuture<'a, ExecOutput> {
        Box::pin(self.op(
            "exec",
            Call::Exec(name.to_string(), script.to_owned()),
            move |s| {
                live(s, name.as_str())?;
                Ok(ExecOutput {
                    exit_code: 0,
                    tail: String::new(),
                })
            },
        ))
    }
}
