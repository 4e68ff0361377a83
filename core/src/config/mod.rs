//! A receiver's configuration: the Islo-style incoming-webhook schema and its
//! hookgate extensions, read from JSON into types that can only hold valid values.
//!
//! [`Receiver::from_json`] is the one entry point. It rejects unknown fields, wrong
//! types, out-of-range numbers, bad regexes and JSONPaths and empty lists with an
//! [`Error::Config`] naming the field's path (`rules[1].actions[0].port: expected an
//! integer 1..65535, found 70000`). Serializing a receiver gives back the same shape
//! with every secret replaced by `{"secret_ref": name}`, which
//! [`Receiver::from_json_with_secrets`] reads back.

mod auth;
pub(crate) mod decode;
pub mod providers;
mod rules;
pub(crate) mod source;

pub use auth::{
    Auth, BasicAuth, BearerAuth, Combinator, Encoding, HmacAlgorithm, HmacAuth, IpAllowlist,
    JwtAlgorithm, JwtAuth, PluginAuth, ProviderAuth, SecretEncoding, Secrets, SignedPayload,
    TimestampFormat, TimestampSpec, TokenAuth,
};
pub use rules::{
    Action, AutoResume, Condition, DeliverToPort, Lifecycle, Operator, Payload, PluginAction, Rule,
    RunScript, SandboxTemplate, Subject,
};
pub use source::{JsonPathExpr, Pattern, Template, TemplatePart, ValueSource};

use serde::Serialize;
use serde_json::Value;

use crate::Error;
use crate::sandbox_name::SandboxName;
use crate::secret::Secret;
use decode::{Ctx, Decode, Obj, Path, non_empty, ranged};

/// Where `{"secret_ref": name}` is resolved when a stored receiver is read back.
pub trait SecretSource {
    fn secret(&self, name: &str) -> Option<Secret>;
}

impl<F: Fn(&str) -> Option<Secret>> SecretSource for F {
    fn secret(&self, name: &str) -> Option<Secret> {
        self(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Active,
    /// Answers 404 at its URL and keeps its history.
    Disabled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// Which sandbox an event is for.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "target_type", rename_all = "snake_case")]
pub enum Target {
    FixedSandboxName {
        sandbox_name: SandboxName,
    },
    SandboxNameFromEvent {
        source: ValueSource,
        /// Prepended when the extracted value lacks it: `42` → `pr-42`.
        #[serde(skip_serializing_if = "Option::is_none")]
        required_prefix: Option<String>,
        /// Checked against the final name.
        #[serde(skip_serializing_if = "Option::is_none")]
        allowed_pattern: Option<Pattern>,
        /// Checked against the final name.
        #[serde(skip_serializing_if = "Option::is_none")]
        allowed_names: Option<Vec<String>>,
    },
}

impl Decode for Target {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        let mut obj = Obj::new(value, at, ctx)?;
        let target = match obj.one_of(
            "target_type",
            &["fixed_sandbox_name", "sandbox_name_from_event"],
        )? {
            "fixed_sandbox_name" => {
                let name: String = obj.req("sandbox_name")?;
                let sandbox_name =
                    SandboxName::parse(&name).map_err(|e| obj.at("sandbox_name").error(e))?;
                Self::FixedSandboxName { sandbox_name }
            }
            _ => {
                let source = ValueSource::decode_only(
                    obj.raw_req("source")?,
                    &obj.at("source"),
                    ctx,
                    &["header", "query", "header_param", "json_path"],
                )?;
                let required_prefix: Option<String> = obj.opt("required_prefix")?;
                if let Some(prefix) = &required_prefix {
                    let valid = !prefix.is_empty()
                        && prefix.len() < SandboxName::MAX_LEN
                        && !prefix.starts_with('-')
                        && prefix
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                    if !valid {
                        return Err(obj.at("required_prefix").error(
                            "expected the start of a sandbox name: a-z, 0-9 and '-', not starting with '-'",
                        ));
                    }
                }
                let allowed_pattern = obj.opt("allowed_pattern")?;
                let allowed_names = match obj.raw("allowed_names") {
                    None => None,
                    Some(v) => {
                        let at = obj.at("allowed_names");
                        let names: Vec<String> = non_empty(v, &at, ctx)?;
                        for (i, name) in names.iter().enumerate() {
                            SandboxName::parse(name).map_err(|e| at.index(i).error(e))?;
                        }
                        Some(names)
                    }
                };
                Self::SandboxNameFromEvent {
                    source,
                    required_prefix,
                    allowed_pattern,
                    allowed_names,
                }
            }
        };
        obj.finish()?;
        Ok(target)
    }
}

/// How a delivery is recognised when the provider sends it again.
#[derive(Debug, Clone, Serialize)]
pub struct Idempotency {
    #[serde(flatten)]
    pub source: ValueSource,
    /// How long a key is remembered; `None` is the host's default (72 h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_seconds: Option<u64>,
}

impl Idempotency {
    /// A minute, so a key outlives at least a provider's first quick retry.
    pub const MIN_RETENTION_SECONDS: u64 = 60;
    /// Thirty days: Stripe retries for three days, nobody for a month.
    pub const MAX_RETENTION_SECONDS: u64 = 30 * 86_400;
    /// How long a key is remembered when the receiver sets no `retention_seconds`:
    /// 72 hours, both runtimes' default — the host's `dedupe.retention_seconds` in
    /// `host/src/settings.default.toml`, and the edge's inbox. It spans Stripe's
    /// three days of live-mode retries (Stripe's webhook docs), so a retry that
    /// late still finds its key.
    pub const DEFAULT_RETENTION_SECONDS: u64 = 72 * 3600;
}

impl Decode for Idempotency {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        let mut obj = Obj::new(value, at, ctx)?;
        let source = ValueSource::read(
            &mut obj,
            &[
                "header",
                "query",
                "header_param",
                "json_path",
                "body_sha256",
            ],
        )?;
        let retention_seconds = match obj.raw("retention_seconds") {
            None => None,
            Some(v) => Some(ranged(
                v,
                &obj.at("retention_seconds"),
                Self::MIN_RETENTION_SECONDS,
                Self::MAX_RETENTION_SECONDS,
            )?),
        };
        obj.finish()?;
        Ok(Self {
            source,
            retention_seconds,
        })
    }
}

/// One incoming-webhook receiver.
#[derive(Debug, Clone, Serialize)]
pub struct Receiver {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: Status,
    pub auth: Auth,
    pub target: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
    pub rules: Vec<Rule>,
    /// Overrides the host's body limit (1 MiB by default) for this receiver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
}

impl Receiver {
    /// The largest per-receiver body limit: 32 MiB, beyond any provider's payloads.
    pub const MAX_BODY_BYTES: u64 = 32 << 20;
    /// The body limit when a receiver sets no `max_body_bytes`: 1 MiB, both
    /// runtimes' default — the host's `limits.max_body_bytes` in
    /// `host/src/settings.default.toml`, and the edge's — so a receiver takes the
    /// same bodies wherever it runs.
    pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;

    /// Reads a receiver whose secrets are all given inline.
    pub fn from_json(value: &Value) -> Result<Self, Error> {
        Self::decode(value, &Path::default(), &Ctx::new(None))
    }

    /// Reads a receiver that may refer to stored secrets by `{"secret_ref": name}`.
    pub fn from_json_with_secrets(
        value: &Value,
        secrets: &dyn SecretSource,
    ) -> Result<Self, Error> {
        Self::decode(value, &Path::default(), &Ctx::new(Some(secrets)))
    }

    /// Reads a receiver from JSON text.
    pub fn from_slice(json: &[u8]) -> Result<Self, Error> {
        let value: Value = serde_json::from_slice(json).map_err(|e| Error::Json(e.to_string()))?;
        Self::from_json(&value)
    }

    /// Every secret the receiver uses, each once, for a store to save by name.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut out: Vec<&Secret> = Vec::new();
        self.auth.walk(&mut |auth| {
            let found: Vec<&Secret> = match auth {
                Auth::Hmac(h) => h.secrets.iter().collect(),
                Auth::HeaderEquals(t) | Auth::QueryEquals(t) => vec![&t.secret],
                Auth::Basic(b) => vec![&b.password],
                Auth::BearerStatic(b) => vec![&b.secret],
                Auth::Jwt(j) => j.secret.iter().collect(),
                Auth::Provider(p) => vec![&p.secret],
                Auth::Plugin(p) => p.secrets.iter().collect(),
                _ => vec![],
            };
            for s in found {
                if !out.iter().any(|o| o.name() == s.name()) {
                    out.push(s);
                }
            }
        });
        out
    }

    /// The names of every plugin the receiver refers to (verifiers and actions).
    pub fn plugins(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.auth.walk(&mut |auth| {
            if let Auth::Plugin(p) = auth {
                out.push(p.plugin.as_str());
            }
        });
        for rule in &self.rules {
            for action in &rule.actions {
                if let Action::Plugin(p) = action {
                    out.push(p.plugin.as_str());
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every plugin verifier in the auth tree, in tree order.
    pub fn plugin_verifiers(&self) -> Vec<&PluginAuth> {
        let mut out = Vec::new();
        self.auth.walk(&mut |auth| {
            if let Auth::Plugin(p) = auth {
                out.push(p);
            }
        });
        out
    }

    /// Every plugin action of the rules, in rule order.
    pub fn plugin_actions(&self) -> Vec<&PluginAction> {
        self.rules
            .iter()
            .flat_map(|rule| &rule.actions)
            .filter_map(|action| match action {
                Action::Plugin(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Every port a `deliver_to_port` of this receiver names, in first-use order:
    /// the ports a sandbox created for it must listen on.
    pub fn delivery_ports(&self) -> Vec<u16> {
        let mut out = Vec::new();
        for rule in &self.rules {
            for action in &rule.actions {
                if let Action::DeliverToPort(d) = action
                    && !out.contains(&d.port)
                {
                    out.push(d.port);
                }
            }
        }
        out
    }

    /// Every `jwks_url` in the auth tree, for the host to fetch before verifying.
    /// The header and query parameter names the auth tree reads as
    /// credentials, whose values are redacted once the request is accepted.
    pub fn credentials(&self) -> crate::redact::Credentials {
        let mut out = crate::redact::Credentials::default();
        let source = |out: &mut crate::redact::Credentials, s: &ValueSource| match s {
            ValueSource::Header { name } | ValueSource::HeaderParam { name, .. } => {
                out.add_header(name);
            }
            ValueSource::Query { name } => out.add_query(name),
            _ => {}
        };
        self.auth.walk(&mut |auth| match auth {
            Auth::Hmac(h) => source(&mut out, &h.signature),
            Auth::HeaderEquals(t) => out.add_header(&t.name),
            Auth::QueryEquals(t) => out.add_query(&t.name),
            Auth::Basic(_) | Auth::BearerStatic(_) => out.add_header("Authorization"),
            Auth::Jwt(j) => source(&mut out, &j.token),
            Auth::Provider(p) => match &p.scheme {
                providers::Scheme::Hmac(h) => source(&mut out, &h.signature),
                providers::Scheme::Gitlab => out.add_header("X-Gitlab-Token"),
                providers::Scheme::Twilio => out.add_header("X-Twilio-Signature"),
                providers::Scheme::Hubspot => out.add_header("X-HubSpot-Signature-v3"),
            },
            _ => {}
        });
        out
    }

    pub fn jwks_urls(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.auth.walk(&mut |auth| {
            if let Auth::Jwt(j) = auth
                && let Some(url) = &j.jwks_url
            {
                out.push(url.as_str());
            }
        });
        out
    }
}

impl Auth {
    /// Visits this node and every node below it.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Auth)) {
        f(self);
        if let Auth::All(c) | Auth::Any(c) = self {
            for v in &c.verifiers {
                v.walk(f);
            }
        }
    }
}

impl Decode for Receiver {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        let mut obj = Obj::new(value, at, ctx)?;
        let name = non_blank(obj.req("name")?, &obj.at("name"))?;
        if name.len() > 128 {
            return Err(obj.at("name").error("longer than 128 bytes"));
        }
        let description: Option<String> = obj.opt("description")?;
        if description.as_ref().is_some_and(|d| d.len() > 4096) {
            return Err(obj.at("description").error("longer than 4096 bytes"));
        }
        let names = [Status::Active.as_str(), Status::Disabled.as_str()];
        let status = obj
            .opt_one_of("status", &names)?
            .and_then(Status::parse)
            .unwrap_or_default();
        let auth = obj.req("auth")?;
        let target = obj.req("target")?;
        let idempotency = obj.opt("idempotency")?;
        let rules = non_empty(obj.raw_req("rules")?, &obj.at("rules"), ctx)?;
        let max_body_bytes = match obj.raw("max_body_bytes") {
            None => None,
            Some(v) => Some(ranged(
                v,
                &obj.at("max_body_bytes"),
                1,
                Self::MAX_BODY_BYTES,
            )?),
        };
        obj.finish()?;
        Ok(Self {
            name,
            description,
            status,
            auth,
            target,
            idempotency,
            rules,
            max_body_bytes,
        })
    }
}

use source::non_blank;

/// Plugin names are path- and URL-safe: `discord-ed25519`, `standard-webhooks-v1a`.
/// Checks a plugin's name as receiver configs require it; errors name `name`.
pub fn check_plugin_name(name: &str) -> Result<(), Error> {
    plugin_name(name.to_owned(), &Path::default().key("name")).map(|_| ())
}

pub(crate) fn plugin_name(name: String, at: &Path) -> Result<String, Error> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(name)
    } else {
        Err(at.error("expected a plugin name: 1..64 of a-z, 0-9, '-', '_', starting with a letter"))
    }
}
