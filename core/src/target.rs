//! Which sandbox an event is for, and what a sandbox name may be.
//!
//! A sandbox name becomes a directory, a process label and part of a URL, and it
//! often comes from the event itself (`$.pull_request.number`), which anyone who can
//! sign a webhook controls. So names are DNS labels — 1..63 of `a-z`, `0-9`, `-`, not
//! starting or ending with `-` — checked after the prefix is added and before any
//! guard, and nothing else (`../x`, `a;rm`, `PR-42`) can become a [`SandboxName`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Target;
use crate::explain::{Outcome, Stage, Step};
use crate::request::Event;

/// A valid sandbox name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxName(String);

impl SandboxName {
    /// RFC 1035's label length.
    pub const MAX_LEN: usize = 63;

    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("sandbox name is empty".to_owned());
        }
        let shown = crate::explain::excerpt(&serde_json::Value::String(name.to_owned()));
        if name.len() > Self::MAX_LEN {
            return Err(format!(
                "sandbox name {shown} is longer than {} characters",
                Self::MAX_LEN
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!(
                "sandbox name {shown} has {bad:?}; names use only a-z, 0-9 and '-'"
            ));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(format!("sandbox name {shown} starts or ends with '-'"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SandboxName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<SandboxName> for String {
    fn from(n: SandboxName) -> String {
        n.0
    }
}

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
