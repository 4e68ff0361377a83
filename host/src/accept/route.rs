//! Where an already-authenticated request goes: its target and its plan, derived
//! by core from a receiver's config.
//!
//! The receiver endpoint gets both from core's full evaluation; a replay (and an
//! event whose authentication happened elsewhere) needs only these two stages,
//! run on the stored request against the receiver's current config.

use hookgate_core::explain::Trace;
use hookgate_core::rules::Matched;
use hookgate_core::{Event, Request};

use super::Target;
use crate::state::LiveReceiver;
use crate::store::PlannedAction;

/// The matched rules' actions (core's plan), frozen as the store keeps them, so
/// later config edits do not change what an accepted delivery does.
pub fn plan(live: &LiveReceiver, matched: &[Matched]) -> Vec<PlannedAction> {
    hookgate_core::rules::plan(&live.config, matched)
        .into_iter()
        .map(|p| PlannedAction {
            rule: p.rule,
            action: p.action,
            spec: serde_json::to_value(&p.spec).unwrap_or_default(),
        })
        .collect()
}

/// Resolves the target and matches the rules for `request`, recording both in
/// `trace`. A refused target plans nothing.
pub fn route(
    live: &LiveReceiver,
    request: Request<'_>,
    trace: &mut Trace,
) -> (Target, Vec<PlannedAction>) {
    let event = Event::new(request);
    let (target, step) = hookgate_core::target::resolve(&live.config.target, &event);
    trace.push(step);
    let sandbox = match target {
        Ok(name) => name,
        Err(why) => return (Target::Rejected(why), Vec::new()),
    };
    let (matched, steps) = hookgate_core::rules::matching(&live.config.rules, &event);
    for s in steps {
        trace.push(s);
    }
    (Target::Sandbox(sandbox), plan(live, &matched))
}
