//! The API's view of a local sandbox: its stored row as
//! [`SandboxInfo`](crate::sandbox::SandboxInfo), times in RFC 3339.
//!
//! A pure function of the row (and, for `inspect`, its recent events), apart
//! from the plane so that what `GET /v1/sandboxes` shows is read in one place
//! and touches no process. What only a live sandbox has — its pid, the next
//! firing of its timers — is left out once it failed or was deleted, and the
//! pause time only shows while it runs.

use super::lifecycle::Timers;
use crate::ids;
use crate::sandbox::{SandboxEvent, SandboxInfo, SandboxState};
use crate::store::SandboxRow;

/// The API's view of a stored sandbox.
pub(super) fn info(row: &SandboxRow, events: Vec<(i64, String, String)>) -> SandboxInfo {
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
