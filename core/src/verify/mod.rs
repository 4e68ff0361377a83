//! Authentication: evaluating a receiver's `auth` tree against a request.
//!
//! Each leaf verifier answers with a sentence: what passed ("hmac-sha256 signature
//! in header X-Hub-Signature-256 matched secret github_webhook_secret") or a
//! [`Failure`] whose reason a user can act on ("header X-Hub-Signature-256
//! missing", "timestamp 1700000000 outside 300 s tolerance") and which never holds a
//! secret or an expected signature. `all` and `any` short-circuit in order and keep
//! their children in the trace. What core cannot do itself — run a plugin, fetch a
//! JWKS — comes from the runtime through [`Env`].

pub mod hmac;
pub(crate) mod jwt;
pub mod providers;
mod simple;
pub mod time;

use subtle::ConstantTimeEq;

use crate::config::{Auth, PluginAuth, ProviderAuth};
use crate::explain::{Outcome, Stage, Step};
use crate::jwks::Jwks;
use crate::request::{Event, Request};

/// Why a verifier refused, in a word (a metrics label) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub reason: String,
}

impl Failure {
    pub fn new(kind: FailureKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// A header, parameter or claim the scheme needs is absent.
    Missing,
    /// Present but unreadable: bad hex, bad base64, not a JWT, not a number.
    Malformed,
    /// Well-formed, but the signature, token or password is wrong.
    Mismatch,
    /// The signed timestamp is outside the tolerance.
    Timestamp,
    /// The remote address is not allowed.
    Forbidden,
    /// A JWT's claims (`iss`, `aud`, `exp`, `nbf`, `alg`) are not acceptable.
    Claims,
    /// The JWT's `kid` is not in the key set: the host should refresh its JWKS.
    UnknownKey,
    /// A plugin rejected the request, or could not run.
    Plugin,
}

impl FailureKind {
    /// What the sender of a rejected request is told: which kind of check
    /// failed, never which secret, allowlist, tree shape or plugin output. The
    /// whole reason is for the operator (the host keeps it with the rejection).
    pub fn public_reason(self) -> &'static str {
        match self {
            Self::Missing => "authentication failed: a required credential is missing",
            Self::Malformed => "authentication failed: a credential is malformed",
            Self::Mismatch => "authentication failed: the signature or credential does not match",
            Self::Timestamp => {
                "authentication failed: the signed timestamp is outside the allowed window"
            }
            Self::Forbidden => "authentication failed: this sender is not allowed",
            Self::Claims => "authentication failed: the token's claims are not accepted",
            Self::UnknownKey => "authentication failed: the token is signed by an unknown key",
            Self::Plugin => "authentication failed",
        }
    }

    /// A stable, low-cardinality label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
            Self::Timestamp => "timestamp",
            Self::Forbidden => "forbidden",
            Self::Claims => "claims",
            Self::UnknownKey => "unknown_key",
            Self::Plugin => "plugin",
        }
    }
}

/// What the runtime provides to verification.
pub trait Env {
    /// The key set fetched from `url`, if the runtime has it.
    fn jwks(&self, url: &str) -> Option<&Jwks>;
    /// Runs a verifier plugin: `Ok(what passed)` or `Err(why it rejected)`.
    fn verify_plugin(&self, plugin: &PluginAuth, request: &Request<'_>) -> Result<String, String>;
}

/// An environment with no plugins and no fetched keys; the edge and tests use it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl Env for NoEnv {
    fn jwks(&self, _url: &str) -> Option<&Jwks> {
        None
    }

    fn verify_plugin(
        &self,
        _plugin: &PluginAuth,
        _request: &Request<'_>,
    ) -> Result<String, String> {
        Err("cannot run here: plugins run in the host".to_owned())
    }
}

/// The outcome of authentication with its trace.
#[derive(Debug, Clone)]
pub struct Verdict<'a> {
    pub result: Result<(), Failure>,
    pub step: Step,
    /// The provider preset whose check passed, if one did (the first, in tree
    /// order). Its handshake and delivery id apply to this request; a preset that
    /// sits in a failed branch of an `any` says nothing about it.
    pub provider: Option<&'a ProviderAuth>,
}

/// What one node of the tree decided: the result, its step, the preset that passed.
type Decided<'a> = (Result<String, Failure>, Step, Option<&'a ProviderAuth>);

/// Evaluates the auth tree.
pub fn authenticate<'a>(auth: &'a Auth, event: &Event<'_>, env: &dyn Env) -> Verdict<'a> {
    let (result, step, provider) = node(auth, event, env);
    Verdict {
        result: result.map(|_| ()),
        step,
        provider,
    }
}

fn node<'a>(auth: &'a Auth, event: &Event<'_>, env: &dyn Env) -> Decided<'a> {
    let result = match auth {
        Auth::All(c) => return combine(true, &c.verifiers, event, env),
        Auth::Any(c) => return combine(false, &c.verifiers, event, env),
        Auth::None => Ok("auth_type none: accepted without verification".to_owned()),
        Auth::Hmac(h) => hmac::verify(h, event),
        Auth::HeaderEquals(t) => simple::header_equals(t, event),
        Auth::QueryEquals(t) => simple::query_equals(t, event),
        Auth::Basic(b) => simple::basic(b, event),
        Auth::BearerStatic(b) => simple::bearer(b, event),
        Auth::IpAllowlist(list) => simple::ip_allowlist(list, event),
        Auth::Jwt(j) => jwt::verify(j, event, env),
        Auth::Provider(p) => providers::verify(p, event),
        Auth::Plugin(p) => env
            .verify_plugin(p, &event.request)
            .map(|ok| format!("plugin {}: {ok}", p.plugin))
            .map_err(|why| {
                Failure::new(FailureKind::Plugin, format!("plugin {}: {why}", p.plugin))
            }),
    };
    let (step, provider) = match &result {
        Ok(msg) => {
            let provider = match auth {
                Auth::Provider(p) => Some(p),
                _ => None,
            };
            (Step::new(Stage::Auth, Outcome::Pass, msg.clone()), provider)
        }
        Err(f) => (
            Step::new(Stage::Auth, Outcome::Fail, f.reason.clone()),
            None,
        ),
    };
    (result, step, provider)
}

fn combine<'a>(all: bool, verifiers: &'a [Auth], event: &Event<'_>, env: &dyn Env) -> Decided<'a> {
    let name = if all { "all" } else { "any" };
    let mut children = Vec::new();
    let mut failures: Vec<Failure> = Vec::new();
    let mut provider = None;
    for v in verifiers {
        let (result, step, passed) = node(v, event, env);
        children.push(step);
        match result {
            Err(f) if all => {
                let msg = format!(
                    "{name}: verifier {} of {} failed: {}",
                    children.len(),
                    verifiers.len(),
                    f.reason
                );
                let step =
                    Step::new(Stage::Auth, Outcome::Fail, msg.clone()).with_children(children);
                return (Err(Failure::new(f.kind, msg)), step, None);
            }
            Err(f) => failures.push(f),
            Ok(_) if !all => {
                let msg = format!(
                    "{name}: verifier {} of {} passed",
                    children.len(),
                    verifiers.len()
                );
                let step =
                    Step::new(Stage::Auth, Outcome::Pass, msg.clone()).with_children(children);
                return (Ok(msg), step, passed);
            }
            Ok(_) => provider = provider.or(passed),
        }
    }
    if all {
        let msg = format!("{name}: all {} verifiers passed", verifiers.len());
        let step = Step::new(Stage::Auth, Outcome::Pass, msg.clone()).with_children(children);
        return (Ok(msg), step, provider);
    }
    // An unknown key anywhere lets the host refresh its key sets and try again.
    let kind = if failures.iter().any(|f| f.kind == FailureKind::UnknownKey) {
        FailureKind::UnknownKey
    } else {
        failures.first().map_or(FailureKind::Mismatch, |f| f.kind)
    };
    let reasons: Vec<&str> = failures.iter().map(|f| f.reason.as_str()).collect();
    let msg = format!(
        "{name}: none of {} verifiers passed: {}",
        verifiers.len(),
        reasons.join("; ")
    );
    let step = Step::new(Stage::Auth, Outcome::Fail, msg.clone()).with_children(children);
    (Err(Failure::new(kind, msg)), step, None)
}

/// Compares two secrets-derived byte strings in constant time (for equal lengths;
/// a length difference is not secret and returns early).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
