//! Rule matching: which rules' `when` holds for an event, and why each did or not.
//!
//! A condition yields a verdict and a reason stated in terms of the event
//! (`$.action was "synchronize", wanted "closed"`), so the trace answers "why didn't
//! my rule match?". A JSONPath selecting several nodes holds if any node satisfies
//! the operator (`not_equals`: if none equals). A body that is not JSON makes every
//! JSONPath test false with that reason; it never panics and never fails the
//! delivery, since header- and query-based rules may still match.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Receiver;
use crate::config::{Action, Condition, Operator, Rule, Subject};
use crate::explain::{Outcome, Stage, Step, excerpt};
use crate::request::{Event, is_credential};

/// A rule that matched, by index into the receiver's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched(pub usize);

/// One action of a matched rule, as it is frozen with a delivery: what the
/// runner will run, whichever runtime accepted the event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Planned {
    /// Index of the rule in the receiver's rules.
    pub rule: usize,
    /// Index of the action in that rule.
    pub action: usize,
    pub spec: Action,
}

/// The matched rules' actions in order. A sandbox template that names no ports
/// gets every port the receiver's `deliver_to_port` actions use.
pub fn plan(receiver: &Receiver, matched: &[Matched]) -> Vec<Planned> {
    let mut out = Vec::new();
    for m in matched {
        let Some(rule) = receiver.rules.get(m.0) else {
            continue;
        };
        for (i, action) in rule.actions.iter().enumerate() {
            let mut spec = action.clone();
            if let Action::EnsureSandbox { template } = &mut spec
                && template.ports.is_empty()
            {
                template.ports = receiver.delivery_ports();
            }
            out.push(Planned {
                rule: m.0,
                action: i,
                spec,
            });
        }
    }
    out
}

/// Evaluates every rule in order; returns the matching ones and one step per rule.
pub fn matching(rules: &[Rule], event: &Event<'_>) -> (Vec<Matched>, Vec<Step>) {
    let mut matched = Vec::new();
    let mut steps = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let label = match &rule.name {
            Some(name) => format!("rule {} ({name:?})", i + 1),
            None => format!("rule {}", i + 1),
        };
        let (holds, reason) = match &rule.when {
            None => (true, "no `when`, always runs".to_owned()),
            Some(cond) => evaluate(cond, event),
        };
        if holds {
            matched.push(Matched(i));
            let actions: Vec<&str> = rule.actions.iter().map(|a| a.kind()).collect();
            steps.push(Step::new(
                Stage::Rule,
                Outcome::Pass,
                format!("{label} matched: {reason}; actions: {}", actions.join(", ")),
            ));
        } else {
            steps.push(Step::new(
                Stage::Rule,
                Outcome::Skip,
                format!("{label} skipped: {reason}"),
            ));
        }
    }
    (matched, steps)
}

/// Whether the condition holds, and the fact that decided it.
pub fn evaluate(cond: &Condition, event: &Event<'_>) -> (bool, String) {
    match cond {
        Condition::All(conds) => {
            let mut reasons = Vec::new();
            for c in conds {
                let (ok, why) = evaluate(c, event);
                if !ok {
                    return (false, why);
                }
                reasons.push(why);
            }
            (true, reasons.join(" and "))
        }
        Condition::Any(conds) => {
            let mut reasons = Vec::new();
            for c in conds {
                let (ok, why) = evaluate(c, event);
                if ok {
                    return (true, why);
                }
                reasons.push(why);
            }
            (false, format!("none held: {}", reasons.join("; ")))
        }
        Condition::Not(c) => {
            let (ok, why) = evaluate(c, event);
            (!ok, format!("not ({why})"))
        }
        Condition::Test { subject, operator } => test(subject, operator, event),
    }
}

fn test(subject: &Subject, operator: &Operator, event: &Event<'_>) -> (bool, String) {
    let what = subject.describe();
    let values: Vec<Value> = match subject {
        Subject::JsonPath(path) => match event.json() {
            Ok(doc) => path.select(doc).into_iter().cloned().collect(),
            Err(e) => return (false, format!("{what} cannot be read: {}", e.0)),
        },
        Subject::Header(name) => event
            .header(name)
            .ok()
            .map(|v| Value::String(v.to_owned()))
            .into_iter()
            .collect(),
        Subject::Query(name) => event
            .query_param(name)
            .map(|v| Value::String(v.to_owned()))
            .into_iter()
            .collect(),
    };
    // Headers and query parameters are text: `equals: 42` compares with "42".
    let textual = !matches!(subject, Subject::JsonPath(_));
    let eq = |a: &Value, b: &Value| match (textual, a, b) {
        (true, Value::String(s), other) | (true, other, Value::String(s)) if !other.is_string() => {
            let rendered = other.to_string();
            *s == rendered
        }
        _ => a == b,
    };
    // Credentials read by a rule (`header Authorization exists`) stay out of traces.
    let redact = match subject {
        Subject::Header(name) | Subject::Query(name) => is_credential(name),
        Subject::JsonPath(_) => false,
    };
    let excerpt = |v: &Value| {
        if redact {
            "<redacted>".to_owned()
        } else {
            excerpt(v)
        }
    };
    let seen = match values.as_slice() {
        [] => "absent".to_owned(),
        [one] => format!("was {}", excerpt(one)),
        many => format!(
            "was [{}]",
            many.iter()
                .take(5)
                .map(excerpt)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    match operator {
        Operator::Equals(want) => {
            let ok = values.iter().any(|v| eq(v, want));
            (ok, format!("{what} {seen}, wanted {}", excerpt(want)))
        }
        Operator::NotEquals(unwanted) => {
            let ok = !values.iter().any(|v| eq(v, unwanted));
            (
                ok,
                format!("{what} {seen}, wanted anything but {}", excerpt(unwanted)),
            )
        }
        Operator::In(set) => {
            let ok = values.iter().any(|v| set.iter().any(|w| eq(v, w)));
            let shown = if redact {
                "<redacted>".to_owned()
            } else {
                crate::explain::excerpt(&Value::Array(set.clone()))
            };
            (ok, format!("{what} {seen}, wanted one of {shown}"))
        }
        Operator::Exists(want) => {
            let ok = values.is_empty() != *want;
            let wanted = if *want { "present" } else { "absent" };
            (ok, format!("{what} {seen}, wanted {wanted}"))
        }
        Operator::Matches(pattern) => {
            let ok = values.iter().any(|v| match v {
                Value::String(s) => pattern.is_match(s),
                Value::Number(_) | Value::Bool(_) => pattern.is_match(&v.to_string()),
                _ => false,
            });
            (
                ok,
                format!("{what} {seen}, wanted a match for /{}/", pattern.as_str()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::decode::{Ctx, Decode, Path};
    use crate::request::{Headers, Request};
    use serde_json::json;

    fn check(cond: Value, body: &str) -> (bool, String) {
        let cond = Condition::decode(&cond, &Path::default(), &Ctx::new(None)).unwrap();
        let headers: Headers = [("X-GitHub-Event", "pull_request")].into_iter().collect();
        let req = Request {
            method: "POST",
            url: "https://h/hooks/r?env=staging&n=3",
            headers: &headers,
            body: body.as_bytes(),
            remote_addr: None,
            received_at: 0,
        };
        evaluate(&cond, &Event::new(req))
    }

    const PR: &str =
        r#"{"action":"synchronize","number":42,"labels":[{"name":"bug"},{"name":"preview"}]}"#;

    #[test]
    fn equals_explains_what_it_saw() {
        assert_eq!(
            check(json!({"json_path": "$.action", "equals": "closed"}), PR),
            (
                false,
                r#"$.action was "synchronize", wanted "closed""#.to_owned()
            )
        );
        assert!(check(json!({"json_path": "$.number", "equals": 42}), PR).0);
        assert!(
            !check(json!({"json_path": "$.number", "equals": "42"}), PR).0,
            "JSON is typed"
        );
        assert!(check(json!({"json_path": "$.missing", "not_equals": "x"}), PR).0);
    }

    #[test]
    fn operators_over_headers_queries_and_multiple_nodes() {
        assert!(
            check(
                json!({"header": "x-github-event", "equals": "pull_request"}),
                PR
            )
            .0
        );
        assert!(
            check(json!({"query": "n", "equals": 3}), PR).0,
            "query values are text"
        );
        assert!(check(json!({"query": "env", "in": ["prod", "staging"]}), PR).0);
        assert!(
            check(
                json!({"json_path": "$.labels[*].name", "equals": "preview"}),
                PR
            )
            .0
        );
        assert!(
            check(
                json!({"json_path": "$.labels[*].name", "matches": "^prev"}),
                PR
            )
            .0
        );
        assert!(check(json!({"json_path": "$.number", "matches": "^4[0-9]$"}), PR).0);
        assert!(check(json!({"header": "X-Missing", "exists": false}), PR).0);
        let (ok, why) = check(json!({"json_path": "$.draft", "exists": true}), PR);
        assert!(!ok);
        assert_eq!(why, "$.draft absent, wanted present");
    }

    #[test]
    fn combinators() {
        let all = json!({"all": [{"header": "X-GitHub-Event", "equals": "pull_request"},
                                 {"json_path": "$.action", "in": ["opened", "reopened"]}]});
        let (ok, why) = check(all, PR);
        assert!(!ok);
        assert_eq!(
            why,
            r#"$.action was "synchronize", wanted one of ["opened","reopened"]"#
        );
        let any = json!({"any": [{"json_path": "$.action", "equals": "opened"},
                                 {"not": {"json_path": "$.number", "equals": 1}}]});
        let (ok, why) = check(any, PR);
        assert!(ok);
        assert_eq!(why, "not ($.number was 42, wanted 1)");
    }

    #[test]
    fn credentials_are_redacted_from_reasons() {
        let cond = json!({"header": "X-GitHub-Event", "equals": "push"});
        assert_eq!(
            check(cond, PR).1,
            r#"header X-GitHub-Event was "pull_request", wanted "push""#
        );
        let (_, why) = check(
            json!({"header": "Authorization", "equals": "Bearer s3cr3t"}),
            PR,
        );
        assert_eq!(why, "header Authorization absent, wanted <redacted>");
        let (_, why) = check(json!({"query": "api_key", "in": ["k1", "k2"]}), PR);
        assert_eq!(why, "query api_key absent, wanted one of <redacted>");
    }

    #[test]
    fn non_json_body_is_false_with_a_reason() {
        let (ok, why) = check(json!({"json_path": "$.action", "equals": "opened"}), "a=b");
        assert!(!ok);
        assert!(
            why.starts_with("$.action cannot be read: the body is not JSON"),
            "{why}"
        );
        // A header rule still matches on the same request.
        assert!(
            check(
                json!({"header": "X-GitHub-Event", "exists": true}),
                "\u{0}\u{1}"
            )
            .0
        );
    }
}
