//! The explain trace: why a delivery was accepted, routed and acted on — or not.
//!
//! "Why didn't my rule match?" must be answered by the delivery itself, never by
//! reading logs. Every pipeline stage appends [`Step`]s: plain, serializable data
//! with a sentence a user can act on (`rule 2 skipped: $.action was "synchronize",
//! wanted "closed"`). `all`/`any` verifiers and nested conditions keep their
//! children, so the trace shows the whole tree. The host and the edge store it as
//! JSON beside the delivery and append their own steps (dedupe, actions).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Handshake,
    Auth,
    Idempotency,
    Dedupe,
    Target,
    Rule,
    Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
    Info,
}

/// One explained decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub stage: Stage,
    pub outcome: Outcome,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Step>,
}

impl Step {
    pub fn new(stage: Stage, outcome: Outcome, message: impl Into<String>) -> Self {
        Self {
            stage,
            outcome,
            message: message.into(),
            children: Vec::new(),
        }
    }

    pub fn with_children(mut self, children: Vec<Step>) -> Self {
        self.children = children;
        self
    }

    /// The step and its children as indented lines, for logs and CLIs.
    pub fn render(&self, depth: usize, out: &mut String) {
        use std::fmt::Write;
        let mark = match self.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
            Outcome::Info => "info",
        };
        let _ = writeln!(
            out,
            "{:indent$}[{mark}] {}",
            "",
            self.message,
            indent = depth * 2
        );
        for child in &self.children {
            child.render(depth + 1, out);
        }
    }
}

/// A delivery's steps in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Trace {
    pub steps: Vec<Step>,
}

impl Trace {
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            step.render(0, &mut out);
        }
        out
    }
}

/// Shortens a value for a trace message so a 1 MiB field cannot bloat the trace.
pub fn excerpt(value: &serde_json::Value) -> String {
    const MAX: usize = 80;
    let text = value.to_string();
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_tree() {
        let step = Step::new(Stage::Auth, Outcome::Pass, "any: 1 of 2 passed").with_children(vec![
            Step::new(Stage::Auth, Outcome::Fail, "ip 10.0.0.1 not in allowlist"),
            Step::new(Stage::Auth, Outcome::Pass, "hmac sha256 matched"),
        ]);
        let mut out = String::new();
        step.render(0, &mut out);
        assert_eq!(
            out,
            "[pass] any: 1 of 2 passed\n  [FAIL] ip 10.0.0.1 not in allowlist\n  [pass] hmac sha256 matched\n"
        );
    }

    #[test]
    fn excerpts_are_short_and_char_safe() {
        let long = serde_json::Value::String("é".repeat(100));
        let e = excerpt(&long);
        assert!(e.len() <= 84 && e.ends_with('…'));
    }
}
