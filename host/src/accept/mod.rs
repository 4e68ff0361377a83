//! Durable acceptance of a delivery: dedupe claim → persist (group commit) →
//! settle the key → hand to the runner.
//!
//! Every way a delivery enters the host comes through [`accept`]: the receiver
//! endpoint (`POST /hooks/{id}`), events the edge accepted (`POST
//! /v1/edge/ingest`) and operator replays. The callers differ in how they
//! authenticate and where the target and plan come from; what it means for a
//! delivery to be accepted is written once, here. [`evaluate`] runs core's
//! pipeline with what only the host has (key sets, plugin verdicts); [`route`]
//! derives the target and plan for a request already authenticated.
//!
//! Nothing is answered before the delivery's row is on disk, and the row carries
//! its dedupe key, so the key is durable in the same commit.

mod evaluate;
mod route;

pub use evaluate::{Wire, evaluate};
pub use route::{plan, route};

use hookgate_core::SandboxName;
use hookgate_core::explain::{Outcome, Stage, Step, Trace};
use hookgate_core::redact::Credentials;

use crate::dedupe::{self, Claim, ClaimGuard, Settled};
use crate::ids;
use crate::state::AppState;
use crate::store::{DeliveryRow, DeliveryStatus, PlannedAction, StoreError, StoredRequest};

/// Why a delivery was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The event names a sandbox its receiver's guards refuse (a 422).
    #[error("{0}")]
    TargetRejected(String),
    /// The host cannot take it now; the sender should retry (a 503).
    #[error("{0}")]
    Busy(String),
    #[error("persisting the delivery: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// A delivery's dedupe key: its hash, and until when (Unix ms) it dedupes;
/// and, for presets that sign no timestamp or id, the hash of its signed
/// bytes, a second key that makes a replay under a fresh id a duplicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeKey {
    pub hash: String,
    pub replay: Option<String>,
    pub expires_at: i64,
}

/// The sandbox a delivery is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Sandbox(SandboxName),
    /// The receiver's guards refuse the name: the sender is told (422) and
    /// nothing is stored.
    Rejected(String),
    /// Accepted elsewhere, but no usable sandbox: stored as failed with this
    /// reason, so it is visible and never left pending.
    Unusable(String),
}

/// A delivery ready to be accepted.
#[derive(Debug)]
pub struct Incoming {
    pub receiver_id: String,
    /// Unix ms.
    pub received_at: i64,
    pub request: StoredRequest,
    /// `None`: every request is new (no key configured, or a replay).
    pub key: Option<DedupeKey>,
    pub target: Target,
    pub plan: Vec<PlannedAction>,
    pub trace: Trace,
    pub replay_of: Option<String>,
    /// What to blank in the stored request: the credentials of the receiver
    /// config that authenticated it (taken then, so a config changed in the
    /// meantime cannot leave them in clear); and `keep`, those of them an
    /// action forwards by `forward_headers`, kept but marked.
    pub redact: Credentials,
    pub keep: Vec<String>,
}

/// What acceptance decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Durable under this id; `status` is what it was stored as.
    New {
        delivery_id: String,
        status: DeliveryStatus,
    },
    /// The key names a delivery already stored.
    Duplicate { delivery_id: String },
}

/// Claims the delivery's key (waiting out a concurrent claim of the same key),
/// stores it, settles the key and queues its actions. A duplicate stores nothing.
pub async fn accept(state: &AppState, incoming: Incoming) -> Result<Accepted, AcceptError> {
    let mut guards = Vec::new();
    if let Some(key) = &incoming.key {
        // The delivery id first, then the signed bytes: either names a stored
        // delivery, and this is a duplicate of it (a claim already held is
        // dropped, freeing its key).
        for hash in std::iter::once(&key.hash).chain(&key.replay) {
            match claim(state, &incoming.receiver_id, hash, incoming.received_at).await {
                Ok(g) => guards.push(g),
                Err(original) => {
                    return Ok(Accepted::Duplicate {
                        delivery_id: original,
                    });
                }
            }
        }
    }

    let Incoming {
        receiver_id,
        received_at,
        mut request,
        key,
        target,
        plan,
        mut trace,
        replay_of,
        redact,
        keep,
    } = incoming;
    let (sandbox, unusable) = match target {
        Target::Sandbox(name) => (Some(name), None),
        Target::Rejected(why) => return Err(AcceptError::TargetRejected(why)),
        Target::Unusable(why) => (None, Some(why)),
    };
    let status = if plan.is_empty() {
        // Unless the caller already said why nothing runs, no rule matched.
        if !trace.steps.iter().any(|s| s.stage == Stage::Action) {
            trace.push(Step::new(
                Stage::Action,
                Outcome::Skip,
                "no rule matched: nothing to run",
            ));
        }
        DeliveryStatus::NoMatch
    } else if let Some(why) = &unusable {
        trace.push(Step::new(
            Stage::Target,
            Outcome::Fail,
            format!("no usable sandbox: {why}; nothing run"),
        ));
        DeliveryStatus::Failed
    } else {
        DeliveryStatus::Pending
    };
    // What the auth tree read as credentials is not kept, shown or forwarded.
    redact.redact_headers(&mut request.headers);
    request.url = redact.redact_url(&request.url);
    request.kept_credentials = keep
        .into_iter()
        .filter(|k| {
            request
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(k))
        })
        .collect();
    let delivery_id = ids::delivery_id();
    let row = DeliveryRow {
        idempotency_key: key.as_ref().map(|k| k.hash.clone()),
        replay_key: key.as_ref().and_then(|k| k.replay.clone()),
        key_expires_at: key.as_ref().map(|k| k.expires_at),
        status,
        last_error: unusable
            .filter(|_| status == DeliveryStatus::Failed)
            .map(|why| format!("no usable sandbox: {why}")),
        replay_of,
        ..DeliveryRow::accepted(
            delivery_id.clone(),
            receiver_id.clone(),
            received_at,
            request,
            sandbox.as_ref().map(ToString::to_string),
            plan,
            trace,
        )
    };
    // From here the delivery is handed to the commit. Storing it, settling its
    // key and queueing its actions run on a task of their own: a client that
    // goes away (hyper then drops this request's future) cannot leave a row
    // committed but never run, or its key released for a second copy.
    let committing = tokio::spawn(commit(
        state.clone(),
        row,
        guards,
        key.map(|k| k.expires_at),
        sandbox,
    ));
    committing
        .await
        .map_err(|e| AcceptError::Internal(format!("committing the delivery: {e}")))??;
    Ok(Accepted::New {
        delivery_id,
        status,
    })
}

/// Claims one key, waiting out a concurrent claim of it: the guard, or the
/// delivery that already holds it.
async fn claim(
    state: &AppState,
    receiver_id: &str,
    hash: &str,
    now: i64,
) -> Result<ClaimGuard, String> {
    loop {
        match state.dedupe.claim(receiver_id, hash, now) {
            Claim::Mine(g) => return Ok(g),
            Claim::Duplicate(original) => return Err(original),
            Claim::Wait(slot) => match dedupe::settled(slot).await {
                Settled::Stored(original) => return Err(original),
                // The first claimant stored nothing: the key is free again.
                Settled::Abandoned => {}
            },
        }
    }
}

/// Stores an accepted delivery, settles its key and queues its actions: the
/// part of acceptance that must finish once begun.
async fn commit(
    state: AppState,
    row: DeliveryRow,
    guards: Vec<ClaimGuard>,
    key_expires_at: Option<i64>,
    sandbox: Option<SandboxName>,
) -> Result<(), AcceptError> {
    let (delivery_id, receiver_id, status) = (row.id.clone(), row.receiver_id.clone(), row.status);
    // A failed write drops the guard unsettled: the key is free again.
    state.store.insert_delivery(row).await?;
    if status == DeliveryStatus::Failed {
        metrics::counter!("hookgate_deliveries_finished_total", "status" => status.as_str())
            .increment(1);
    }
    if let Some(expires_at) = key_expires_at {
        for g in guards {
            g.stored(delivery_id.clone(), expires_at);
        }
    }
    tracing::info!(delivery_id = %delivery_id, receiver = %receiver_id, sandbox = sandbox.as_ref().map(SandboxName::as_str), status = status.as_str(), "accepted");
    if let Some(sandbox) = sandbox
        && status == DeliveryStatus::Pending
    {
        state.runner.submit(delivery_id, sandbox.to_string());
    }
    Ok(())
}
