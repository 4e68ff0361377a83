//! What a sandbox name may be.
//!
//! A sandbox name becomes a directory, a process label and part of a URL, and it
//! often comes from the event itself (`$.pull_request.number`), which anyone who can
//! sign a webhook controls. So names are DNS labels — 1..63 of `a-z`, `0-9`, `-`, not
//! starting or ending with `-` — and nothing else (`../x`, `a;rm`, `PR-42`) can
//! become a [`SandboxName`]. It is its own module because both the config (a fixed
//! name, allowed names) and the target resolution need it, and neither should
//! need the other for it.

use std::fmt;

use serde::{Deserialize, Serialize};

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
