//! Which sandbox an event is for: a receiver's `target` applied to an event,
//! its guards checked on the final name.
//!
//! The name itself ([`SandboxName`], in `sandbox_name`) is checked after the
//! prefix is added and before any guard, so nothing that is not a valid name can
//! reach a guard or a sandbox plane.

pub use crate::sandbox_name::SandboxName;

use crate::config::Target;
use crate::explain::{Outcome, Stage, Step};
use crate::request::Event;

/// Resolves the target, or says which guard refused it (the host answers 422).
pub fn resolve(target: &Target, event: &Event<'_>) -> (Result<SandboxName, String>, Step) {
    let result = resolve_inner(target, event);
    let step = match &result {
        Ok(name) => Step::new(Stage::Target, Outcome::Pass, format!("sandbox {name}")),
        Err(why) => Step::new(Stage::Target, Outcome::Fail, why.clone()),
    };
    (result, step)
}

fn resolve_inner(target: &Target, event: &Event<'_>) -> Result<SandboxName, String> {
    match target {
        Target::FixedSandboxName { sandbox_name } => Ok(sandbox_name.clone()),
        Target::SandboxNameFromEvent {
            source,
            required_prefix,
            allowed_pattern,
            allowed_names,
        } => {
            let raw = source
                .read_first(event)
                .map_err(|e| format!("no sandbox name: {e}"))?;
            let name = match required_prefix {
                Some(prefix) if !raw.starts_with(prefix.as_str()) => format!("{prefix}{raw}"),
                _ => raw,
            };
            let name = SandboxName::parse(&name)?;
            if let Some(pattern) = allowed_pattern
                && !pattern.is_match(name.as_str())
            {
                return Err(format!(
                    "sandbox name {name} does not match allowed_pattern {:?}",
                    pattern.as_str()
                ));
            }
            if let Some(names) = allowed_names
                && !names.iter().any(|n| n == name.as_str())
            {
                return Err(format!("sandbox name {name} is not in allowed_names"));
            }
            Ok(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::decode::{Ctx, Decode, Path};
    use crate::request::{Headers, Request};

    fn target(json: serde_json::Value) -> Target {
        Target::decode(&json, &Path::default(), &Ctx::new(None)).unwrap()
    }

    fn resolve_body(t: &Target, body: &str) -> Result<SandboxName, String> {
        let headers: Headers = [("X-Box", "box-7")].into_iter().collect();
        let req = Request {
            method: "POST",
            url: "https://h/hooks/r?box=q-1",
            headers: &headers,
            body: body.as_bytes(),
            remote_addr: None,
            received_at: 0,
        };
        resolve(t, &Event::new(req)).0
    }

    #[test]
    fn names_follow_dns_label_rules() {
        for ok in ["pr-42", "a", "0abc", &"x".repeat(63)] {
            assert!(SandboxName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a;rm",
            "PR-42",
            "-a",
            "a-",
            "a.b",
            "a b",
            &"x".repeat(64),
            "é",
        ] {
            assert!(SandboxName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix_is_prepended_to_numbers_and_strings() {
        let t = target(serde_json::json!({
            "target_type": "sandbox_name_from_event",
            "source": {"source": "json_path", "path": "$.pull_request.number"},
            "required_prefix": "pr-"
        }));
        assert_eq!(
            resolve_body(&t, r#"{"pull_request":{"number":42}}"#)
                .unwrap()
                .as_str(),
            "pr-42"
        );
        assert_eq!(
            resolve_body(&t, r#"{"pull_request":{"number":"42"}}"#)
                .unwrap()
                .as_str(),
            "pr-42"
        );
        assert_eq!(
            resolve_body(&t, r#"{"pull_request":{"number":"pr-42"}}"#)
                .unwrap()
                .as_str(),
            "pr-42"
        );
        let err = resolve_body(&t, r#"{"pull_request":{"number":"../etc"}}"#).unwrap_err();
        assert!(err.contains("'.'"), "{err}");
        let err = resolve_body(&t, "not json").unwrap_err();
        assert!(
            err.starts_with(
                "no sandbox name: $.pull_request.number cannot be read: the body is not JSON"
            ),
            "{err}"
        );
        let err = resolve_body(&t, "{}").unwrap_err();
        assert_eq!(
            err,
            "no sandbox name: $.pull_request.number matched nothing in the body"
        );
    }

    #[test]
    fn guards_apply_to_the_final_name() {
        let t = target(serde_json::json!({
            "target_type": "sandbox_name_from_event",
            "source": {"source": "header", "name": "x-box"},
            "allowed_pattern": "^box-[0-9]+$",
            "allowed_names": ["box-7", "box-8"]
        }));
        assert_eq!(resolve_body(&t, "").unwrap().as_str(), "box-7");
        let t = target(serde_json::json!({
            "target_type": "sandbox_name_from_event",
            "source": {"source": "query", "name": "box"},
            "allowed_pattern": "^box-[0-9]+$"
        }));
        assert_eq!(
            resolve_body(&t, "").unwrap_err(),
            "sandbox name q-1 does not match allowed_pattern \"^box-[0-9]+$\""
        );
        let t = target(serde_json::json!({
            "target_type": "sandbox_name_from_event",
            "source": {"source": "query", "name": "box"},
            "allowed_names": ["box-1"]
        }));
        assert_eq!(
            resolve_body(&t, "").unwrap_err(),
            "sandbox name q-1 is not in allowed_names"
        );
        let t = target(
            serde_json::json!({"target_type": "fixed_sandbox_name", "sandbox_name": "worker-1"}),
        );
        assert_eq!(resolve_body(&t, "").unwrap().as_str(), "worker-1");
    }
}
