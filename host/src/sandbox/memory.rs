//! An in-memory plane: sandboxes are records, deliveries are logged, and faults
//! can be injected. The runner's tests drive it; it is also how a host with no
//! sandbox runtime can still be exercised end to end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hookgate_core::SandboxName;
use hookgate_core::config::SandboxTemplate;

use super::{
    Ensured, ExecOutput, Forward, ForwardResponse, PlaneError, PlaneFuture, SandboxPlane,
    SandboxState,
};

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

#[derive(Debug, Default)]
struct State {
    sandboxes: HashMap<String, SandboxState>,
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
        self.lock().sandboxes.get(name).copied()
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

fn live(state: &State, name: &str) -> Result<SandboxState, PlaneError> {
    match state.sandboxes.get(name) {
        None | Some(SandboxState::Deleted) => Err(PlaneError::NotFound(name.to_owned())),
        Some(s) => Ok(*s),
    }
}

impl SandboxPlane for MemoryPlane {
    fn ensure<'a>(
        &'a self,
        name: &'a SandboxName,
        _template: &'a SandboxTemplate,
    ) -> PlaneFuture<'a, Ensured> {
        Box::pin(self.op("ensure", Call::Ensure(name.to_string()), move |s| {
            match s.sandboxes.get(name.as_str()) {
                Some(SandboxState::Running | SandboxState::Paused | SandboxState::Failed) => {
                    Ok(Ensured::Existed)
                }
                _ => {
                    s.sandboxes.insert(name.to_string(), SandboxState::Running);
                    Ok(Ensured::Created)
                }
            }
        }))
    }

    fn resume<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(self.op("resume", Call::Resume(name.to_string()), move |s| {
            live(s, name.as_str())?;
            s.sandboxes.insert(name.to_string(), SandboxState::Running);
            Ok(())
        }))
    }

    fn pause<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(self.op("pause", Call::Pause(name.to_string()), move |s| {
            live(s, name.as_str())?;
            s.sandboxes.insert(name.to_string(), SandboxState::Paused);
            Ok(())
        }))
    }

    fn delete<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, ()> {
        Box::pin(self.op("delete", Call::Delete(name.to_string()), move |s| {
            if s.sandboxes.contains_key(name.as_str()) {
                s.sandboxes.insert(name.to_string(), SandboxState::Deleted);
            }
            Ok(())
        }))
    }

    fn state<'a>(&'a self, name: &'a SandboxName) -> PlaneFuture<'a, Option<SandboxState>> {
        Box::pin(async move { Ok(self.lock().sandboxes.get(name.as_str()).copied()) })
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
            match live(&s, name.as_str())? {
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
