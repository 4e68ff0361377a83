//! The pipeline in order: authenticate, handshake, key, target, rules.
//!
//! [`evaluate`] is what both runtimes call for each request. It stops at the first
//! stage that decides the request's fate — a failed verification, a handshake to
//! answer, a target guard — and records every stage it ran in the trace. Dedupe
//! and persistence sit between the key and the target in the runtime; since all of
//! this is pure, the runtime can run them after `evaluate` returns.

use crate::config::Receiver;
use crate::explain::Trace;
use crate::handshake::{self, HandshakeReply};
use crate::idempotency::{self, IdempotencyKey};
use crate::request::{Event, Request};
use crate::rules::{self, Matched};
use crate::target::{self, SandboxName};
use crate::verify::{self, Env, Failure};

/// Everything core decided about one request.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// `Err` → answer 401 with the failure's reason; nothing else was evaluated.
    pub auth: Result<(), Failure>,
    /// `Some` → answer it as is; the request is not a delivery.
    pub handshake: Option<HandshakeReply>,
    pub key: Option<IdempotencyKey>,
    /// `Some(Err)` → answer 422 with the reason.
    pub target: Option<Result<SandboxName, String>>,
    /// Matching rules in order (empty when the target failed).
    pub matched: Vec<Matched>,
    pub trace: Trace,
}

/// Runs the pipeline's pure stages for one request.
pub fn evaluate(receiver: &Receiver, request: Request<'_>, env: &dyn Env) -> Evaluation {
    let event = Event::new(request);
    let mut trace = Trace::default();
    let mut out = Evaluation {
        auth: Ok(()),
        handshake: None,
        key: None,
        target: None,
        matched: Vec::new(),
        trace: Trace::default(),
    };

    if let Some((reply, step)) = handshake::answer_unsigned(&receiver.auth, &event) {
        trace.push(step);
        out.handshake = Some(reply);
        out.trace = trace;
        return out;
    }

    let verdict = verify::authenticate(&receiver.auth, &event, env);
    trace.push(verdict.step);
    let passed = verdict.provider;
    if let Err(failure) = verdict.result {
        out.auth = Err(failure);
        out.trace = trace;
        return out;
    }

    if let Some((reply, step)) = handshake::answer(passed, &event) {
        trace.push(step);
        out.handshake = Some(reply);
        out.trace = trace;
        return out;
    }

    let (key, step) = idempotency::key(receiver, passed, &event);
    trace.push(step);
    out.key = key;

    let (resolved, step) = target::resolve(&receiver.target, &event);
    trace.push(step);
    let ok = resolved.is_ok();
    out.target = Some(resolved);
    if ok {
        let (matched, steps) = rules::matching(&receiver.rules, &event);
        for step in steps {
            trace.push(step);
        }
        out.matched = matched;
    }
    out.trace = trace;
    out
}
