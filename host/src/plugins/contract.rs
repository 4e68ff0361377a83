//! The contract between the host and a plugin: `wit/`'s `hookgate:plugin`
//! package, as Rust.
//!
//! `bindgen!` turns the two worlds (`verifier` and `action`) into typed
//! bindings once, here, and every other file in the room goes through them.
//! Beside them sit what the host says about the contract: which [`World`] a
//! component implements, the one version this host accepts ([`CONTRACT`]),
//! the check that a component's exports name exactly one world at that
//! version, and the owned values the rest of hookgate hands a plugin
//! ([`WireRequest`], [`ActionCall`]) or gets back ([`ActionOutcome`]), so callers
//! outside the room never touch generated types. Nothing here runs wasm; it
//! imports nothing from the room.

use serde::Serialize;

use bindings::verifier::hookgate::plugin::types;

#[allow(
    unsafe_code,
    reason = "wasmtime's bindgen! emits unsafe impls of its component traits"
)]
pub(super) mod bindings {
    pub mod verifier {
        wasmtime::component::bindgen!({ path: "../wit", world: "verifier" });
    }
    pub mod action {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "action",
            with: {
                "hookgate:plugin/types": super::verifier::hookgate::plugin::types,
                "hookgate:plugin/host-crypto": super::verifier::hookgate::plugin::host_crypto,
            },
        });
    }
}

/// The contract this host implements; components built against another version
/// of `hookgate:plugin` are refused.
pub const CONTRACT: &str = "hookgate:plugin@0.1.0";
const PACKAGE: &str = "hookgate:plugin";
const VERSION: &str = "0.1.0";

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum World {
    Verifier,
    Action,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verifier => "verifier",
            Self::Action => "action",
        }
    }

    /// "a verifier", "an action": for messages.
    pub fn with_article(self) -> &'static str {
        match self {
            Self::Verifier => "a verifier",
            Self::Action => "an action",
        }
    }
}

/// The exact request, owned, as plugins receive it.
#[derive(Debug, Clone)]
pub struct WireRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: bytes::Bytes,
    pub remote_addr: Option<String>,
    pub received_at_ms: u64,
}

impl WireRequest {
    pub(super) fn to_wit(&self) -> types::Request {
        types::Request {
            method: self.method.clone(),
            url: self.url.clone(),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| types::Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            body: self.body.to_vec(),
            remote_addr: self.remote_addr.clone(),
            received_at_ms: self.received_at_ms,
        }
    }
}

/// An action plugin's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionOutcome {
    Success(String),
    Retryable(String),
    Permanent(String),
}

/// One delivery handed to an action plugin.
#[derive(Debug, Clone)]
pub struct ActionCall {
    pub delivery_id: String,
    pub receiver_id: String,
    pub sandbox: String,
    pub request: WireRequest,
    pub config: String,
}

/// Which of the contract's worlds a component implements, and at which version:
/// it must export exactly one of the worlds' interfaces, at this host's
/// version. The error says why not.
pub(super) fn contract_export(exports: &[String]) -> Result<(World, &str), String> {
    let ours: Vec<(&str, &str)> = exports
        .iter()
        .filter_map(|e| e.strip_prefix(PACKAGE)?.strip_prefix('/'))
        .filter_map(|rest| rest.split_once('@'))
        .collect();
    let (iface, version) = match ours.as_slice() {
        [one] => *one,
        [] => {
            return Err(format!(
                "the component exports neither {PACKAGE}/verify nor {PACKAGE}/handle \
                 (it exports: {}); build it against wit/ ({CONTRACT})",
                if exports.is_empty() {
                    "nothing".to_owned()
                } else {
                    exports.join(", ")
                }
            ));
        }
        _ => {
            return Err(format!(
                "the component exports more than one of the contract's worlds: {}",
                exports.join(", ")
            ));
        }
    };
    if version != VERSION {
        return Err(format!(
            "the component targets {PACKAGE}@{version}; this host accepts {CONTRACT}"
        ));
    }
    let world = match iface {
        "verify" => World::Verifier,
        "handle" => World::Action,
        other => {
            return Err(format!(
                "{PACKAGE}/{other} is not a world export this host knows (verify, handle)"
            ));
        }
    };
    Ok((world, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_contract_version_is_checked_from_export_names() {
        let ok = names(&["hookgate:plugin/verify@0.1.0"]);
        assert_eq!(contract_export(&ok).unwrap(), (World::Verifier, "0.1.0"));
        let action = names(&["hookgate:plugin/handle@0.1.0"]);
        assert_eq!(contract_export(&action).unwrap(), (World::Action, "0.1.0"));
        let newer = names(&["wasi:cli/run@0.2.6", "hookgate:plugin/handle@0.2.0"]);
        assert_eq!(
            contract_export(&newer).unwrap_err(),
            "the component targets hookgate:plugin@0.2.0; this host accepts hookgate:plugin@0.1.0"
        );
        let none = names(&["wasi:cli/run@0.2.6"]);
        assert!(
            contract_export(&none)
                .unwrap_err()
                .starts_with("the component exports neither hookgate:plugin/verify nor hookgate:plugin/handle (it exports: wasi:cli/run@0.2.6)")
        );
        let both = names(&[
            "hookgate:plugin/verify@0.1.0",
            "hookgate:plugin/handle@0.1.0",
        ]);
        assert!(contract_export(&both).is_err());
        let unknown = names(&["hookgate:plugin/types@0.1.0"]);
        assert_eq!(
            contract_export(&unknown).unwrap_err(),
            "hookgate:plugin/types is not a world export this host knows (verify, handle)"
        );
        // Another package with a similar name is not ours.
        let other = names(&["hookgate:pluginx/verify@0.1.0"]);
        assert!(contract_export(&other).is_err());
    }
}
