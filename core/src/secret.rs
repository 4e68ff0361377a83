//! Write-only secrets.
//!
//! A receiver's config carries secrets inline on the way in (`{"name", "value"}`) and
//! never on the way out: [`Secret`]'s `Debug` and `Serialize` show only its name, as
//! `{"secret_ref": "<name>"}`, which is also the form a stored config is read back in
//! (see [`crate::config::SecretSource`]). The value is reachable only through
//! [`Secret::expose`], so every place that touches it is easy to find.

use std::fmt;
use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// A named secret value. Cloning shares the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    name: String,
    value: Arc<str>,
}

impl Secret {
    /// The longest secret value accepted, far above any provider's signing secret.
    pub const MAX_VALUE_BYTES: usize = 4096;

    /// Builds a secret. Callers are the config decoder and secret stores, which
    /// validate name and value first.
    pub fn new(name: impl Into<String>, value: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The name under which the secret is stored and shown (`secret_ref`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The secret value itself. Only verifiers and secret stores call this.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?})", self.name)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("secret_ref", &self.name)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_serialize_show_only_the_name() {
        let secret = Secret::new("github_webhook_secret", "It's a Secret to Everybody");
        let debug = format!("{secret:?}");
        assert_eq!(debug, "Secret(\"github_webhook_secret\")");
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, r#"{"secret_ref":"github_webhook_secret"}"#);
        assert!(!json.contains("Everybody"));
        assert_eq!(secret.expose(), "It's a Secret to Everybody");
    }
}
