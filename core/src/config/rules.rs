//! Rules: a `when` condition over the event and the ordered actions it triggers.
//!
//! Conditions test one subject (a JSONPath into the body, a header, a query
//! parameter) with one operator, and nest with `all`/`any`/`not`. Actions are the
//! sandbox operations the host's runner performs; their ranges are checked here so
//! that a config that is accepted is a config that can run.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::decode::{Ctx, Decode, Obj, Path, kind, non_empty, ranged};
use super::plugin_name;
use super::source::{JsonPathExpr, Pattern, header_name, non_blank};
use crate::Error;

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// No `when` means the rule always matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    pub actions: Vec<Action>,
}

impl Decode for Rule {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        let mut obj = Obj::new(value, at, ctx)?;
        let name = obj.opt("name")?;
        let when = obj.opt("when")?;
        let actions = non_empty(obj.raw_req("actions")?, &obj.at("actions"), ctx)?;
        obj.finish()?;
        Ok(Self {
            name,
            when,
            actions,
        })
    }
}

/// What a condition looks at.
#[derive(Debug, Clone)]
pub enum Subject {
    JsonPath(JsonPathExpr),
    Header(String),
    Query(String),
}

impl Subject {
    pub fn describe(&self) -> String {
        match self {
            Self::JsonPath(p) => p.as_str().to_owned(),
            Self::Header(h) => format!("header {h}"),
            Self::Query(q) => format!("query {q}"),
        }
    }
}

/// How a condition tests its subject.
#[derive(Debug, Clone)]
pub enum Operator {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    Exists(bool),
    Matches(Pattern),
}

#[derive(Debug, Clone)]
pub enum Condition {
    Test {
        subject: Subject,
        operator: Operator,
    },
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

const SUBJECTS: [&str; 3] = ["json_path", "header", "query"];
const OPERATORS: [&str; 5] = ["equals", "not_equals", "in", "exists", "matches"];

impl Decode for Condition {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        let Value::Object(map) = value else {
            return Err(at.error(format!("expected an object, found {}", kind(value))));
        };
        let mut obj = Obj::new(value, at, ctx)?;
        let combinators: Vec<&str> = ["all", "any", "not"]
            .into_iter()
            .filter(|k| map.contains_key(*k))
            .collect();
        let condition = match combinators.as_slice() {
            ["all"] => Self::All(non_empty(obj.raw_req("all")?, &obj.at("all"), ctx)?),
            ["any"] => Self::Any(non_empty(obj.raw_req("any")?, &obj.at("any"), ctx)?),
            ["not"] => Self::Not(Box::new(obj.req("not")?)),
            [] => {
                let subjects: Vec<&str> = SUBJECTS
                    .into_iter()
                    .filter(|k| map.contains_key(*k))
                    .collect();
                let subject = match subjects.as_slice() {
                    ["json_path"] => Subject::JsonPath(obj.req("json_path")?),
                    ["header"] => Subject::Header(header_name(
                        obj.raw_req("header")?,
                        &obj.at("header"),
                        ctx,
                    )?),
                    ["query"] => Subject::Query(non_blank(obj.req("query")?, &obj.at("query"))?),
                    [] => {
                        return Err(at.error(
                            "expected one of `json_path`, `header`, `query` (what to test) \
                             or `all`, `any`, `not` (to combine conditions)",
                        ));
                    }
                    many => {
                        return Err(
                            at.error(format!("give one subject, found {}", many.join(" and ")))
                        );
                    }
                };
                let operators: Vec<&str> = OPERATORS
                    .into_iter()
                    .filter(|k| map.contains_key(*k))
                    .collect();
                let operator = match operators.as_slice() {
                    ["equals"] => {
                        Operator::Equals(obj.raw_value("equals").cloned().unwrap_or_default())
                    }
                    ["not_equals"] => Operator::NotEquals(
                        obj.raw_value("not_equals").cloned().unwrap_or_default(),
                    ),
                    ["in"] => Operator::In(non_empty(obj.raw_req("in")?, &obj.at("in"), ctx)?),
                    ["exists"] => Operator::Exists(obj.req("exists")?),
                    ["matches"] => Operator::Matches(obj.req("matches")?),
                    [] => {
                        return Err(at.error(
                            "expected an operator: `equals`, `not_equals`, `in`, `exists` or `matches`",
                        ));
                    }
                    many => {
                        return Err(
                            at.error(format!("give one operator, found {}", many.join(" and ")))
                        );
                    }
                };
                Self::Test { subject, operator }
            }
            many => {
                return Err(at.error(format!(
                    "give one of `all`, `any`, `not`, found {}",
                    many.join(" and ")
                )));
            }
        };
        obj.finish()?;
        Ok(condition)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match self {
            Self::All(c) => map.serialize_entry("all", c)?,
            Self::Any(c) => map.serialize_entry("any", c)?,
            Self::Not(c) => map.serialize_entry("not", c)?,
            Self::Test { subject, operator } => {
                match subject {
                    Subject::JsonPath(p) => map.serialize_entry("json_path", p)?,
                    Subject::Header(h) => map.serialize_entry("header", h)?,
                    Subject::Query(q) => map.serialize_entry("query", q)?,
                }
                match operator {
                    Operator::Equals(v) => map.serialize_entry("equals", v)?,
                    Operator::NotEquals(v) => map.serialize_entry("not_equals", v)?,
                    Operator::In(v) => map.serialize_entry("in", v)?,
                    Operator::Exists(b) => map.serialize_entry("exists", b)?,
                    Operator::Matches(p) => map.serialize_entry("matches", p)?,
                }
            }
        }
        map.end()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoResume {
    /// Wake a paused sandbox when work arrives for it.
    OnActivity,
    /// Never wake it; delivering to a paused sandbox fails.
    #[default]
    Never,
}

impl AutoResume {
    fn read(obj: &mut Obj<'_, '_, '_>) -> Result<Self, Error> {
        Ok(
            match obj.opt_one_of("auto_resume", &["on_activity", "never"])? {
                Some("on_activity") => Self::OnActivity,
                _ => Self::Never,
            },
        )
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Lifecycle {
    /// Pause after this many seconds without a delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_after_idle: Option<u64>,
    /// Delete this many seconds after creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_after: Option<u64>,
    pub auto_resume: AutoResume,
}

/// A year, the longest timer a lifecycle may set.
const MAX_LIFECYCLE_SECONDS: u64 = 366 * 86_400;

impl Decode for Lifecycle {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        let mut obj = Obj::new(value, at, ctx)?;
        let mut timer = |key| -> Result<Option<u64>, Error> {
            match obj.raw(key) {
                None => Ok(None),
                Some(v) => ranged(v, &obj.at(key), 1, MAX_LIFECYCLE_SECONDS).map(Some),
            }
        };
        let pause_after_idle = timer("pause_after_idle")?;
        let delete_after = timer("delete_after")?;
        let auto_resume = AutoResume::read(&mut obj)?;
        obj.finish()?;
        Ok(Self {
            pause_after_idle,
            delete_after,
            auto_resume,
        })
    }
}

/// What `ensure_sandbox` creates when the sandbox does not exist.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxTemplate {
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_gb: Option<u32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Ports the sandbox listens on. Empty: every `deliver_to_port` port of the
    /// receiver's rules (see [`Receiver::delivery_ports`](crate::Receiver::delivery_ports)).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

impl SandboxTemplate {
    /// Reads a template on its own (the HTTP plane receives one); errors name
    /// `template.<field>`.
    pub fn from_json(value: &Value) -> Result<Self, Error> {
        Self::decode(value, &Path::default().key("template"), &Ctx::new(None))
    }

    pub const VCPUS: (u64, u64) = (1, 64);
    pub const MEMORY_MB: (u64, u64) = (64, 262_144);
    pub const DISK_GB: (u64, u64) = (1, 4096);
}

impl Decode for SandboxTemplate {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        let mut obj = Obj::new(value, at, ctx)?;
        let image = non_blank(obj.req("image")?, &obj.at("image"))?;
        if image.len() > 512 || image.chars().any(char::is_whitespace) {
            return Err(obj
                .at("image")
                .error("expected an image reference without whitespace, at most 512 bytes"));
        }
        let mut bounded = |key, (lo, hi): (u64, u64)| -> Result<Option<u32>, Error> {
            match obj.raw(key) {
                None => Ok(None),
                // The ranges fit in u32, so the conversion cannot fail.
                Some(v) => ranged(v, &obj.at(key), lo, hi).map(|n| u32::try_from(n).ok()),
            }
        };
        let vcpus = bounded("vcpus", Self::VCPUS)?;
        let memory_mb = bounded("memory_mb", Self::MEMORY_MB)?;
        let disk_gb = bounded("disk_gb", Self::DISK_GB)?;
        let mut env = BTreeMap::new();
        if let Some(v) = obj.raw("env") {
            let at = obj.at("env");
            let Value::Object(map) = v else {
                return Err(at.error(format!("expected an object of strings, found {}", kind(v))));
            };
            for (k, v) in map {
                let valid = !k.is_empty()
                    && !k.starts_with(|c: char| c.is_ascii_digit())
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid {
                    return Err(at
                        .key(k)
                        .error("expected a variable name of A-Z, a-z, 0-9, '_'"));
                }
                env.insert(k.clone(), String::decode(v, &at.key(k), ctx)?);
            }
        }
        let mut ports = Vec::new();
        if let Some(v) = obj.raw("ports") {
            let at = obj.at("ports");
            let Value::Array(items) = v else {
                return Err(at.error(format!("expected an array of ports, found {}", kind(v))));
            };
            for (i, item) in items.iter().enumerate() {
                let port = ranged(item, &at.index(i), 1, 65_535)?;
                // `ranged` bounded it to 1..=65535.
                let port = u16::try_from(port).unwrap_or(u16::MAX);
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
            if ports.len() > 16 {
                return Err(at.error("at most 16 ports"));
            }
        }
        let lifecycle = obj.opt("lifecycle")?;
        obj.finish()?;
        Ok(Self {
            image,
            vcpus,
            memory_mb,
            disk_gb,
            env,
            ports,
            lifecycle,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// The exact raw bytes with the original content type.
    #[default]
    Original,
    /// JSON with headers, body (base64 when not UTF-8) and delivery metadata.
    Envelope,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliverToPort {
    pub port: u16,
    /// Appended to the sandbox's base URL; starts with `/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub payload: Payload,
    pub auto_resume: AutoResume,
    pub timeout_seconds: u64,
    /// Request headers passed through beyond the safe default set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forward_headers: Vec<String>,
}

impl DeliverToPort {
    pub const DEFAULT_TIMEOUT_SECONDS: u64 = 30;
}

#[derive(Debug, Clone, Serialize)]
pub struct RunScript {
    pub script: String,
    pub timeout_seconds: u64,
}

impl RunScript {
    pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginAction {
    pub plugin: String,
    pub config: Value,
}

/// One step a rule runs against its sandbox.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action_type", rename_all = "snake_case")]
pub enum Action {
    EnsureSandbox { template: SandboxTemplate },
    ResumeSandbox,
    PauseSandbox,
    DeleteSandbox,
    DeliverToPort(DeliverToPort),
    RunScript(RunScript),
    Plugin(PluginAction),
}

impl Action {
    /// Reads one action, as stored in a delivery's plan.
    pub fn from_json(value: &Value) -> Result<Self, Error> {
        Self::decode(value, &Path::default(), &Ctx::new(None))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::EnsureSandbox { .. } => "ensure_sandbox",
            Self::ResumeSandbox => "resume_sandbox",
            Self::PauseSandbox => "pause_sandbox",
            Self::DeleteSandbox => "delete_sandbox",
            Self::DeliverToPort(_) => "deliver_to_port",
            Self::RunScript(_) => "run_script",
            Self::Plugin(_) => "plugin",
        }
    }
}

/// An action deserializes as [`Action::from_json`] reads it, checks included, so a
/// plan that crosses the wire (the edge's forwarded event) holds only actions that
/// can run.
impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_json(&value).map_err(serde::de::Error::custom)
    }
}

fn timeout(obj: &mut Obj<'_, '_, '_>, default: u64, max: u64) -> Result<u64, Error> {
    match obj.raw("timeout_seconds") {
        None => Ok(default),
        Some(v) => ranged(v, &obj.at("timeout_seconds"), 1, max),
    }
}

impl Decode for Action {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        const TYPES: &[&str] = &[
            "ensure_sandbox",
            "resume_sandbox",
            "pause_sandbox",
            "delete_sandbox",
            "deliver_to_port",
            "run_script",
            "plugin",
        ];
        let mut obj = Obj::new(value, at, ctx)?;
        let action = match obj.one_of("action_type", TYPES)? {
            "ensure_sandbox" => Self::EnsureSandbox {
                template: obj.req("template")?,
            },
            "resume_sandbox" => Self::ResumeSandbox,
            "pause_sandbox" => Self::PauseSandbox,
            "delete_sandbox" => Self::DeleteSandbox,
            "deliver_to_port" => {
                let port = ranged(obj.raw_req("port")?, &obj.at("port"), 1, 65_535)?;
                let path: Option<String> = obj.opt("path")?;
                if let Some(p) = &path {
                    // Dot-segments are checked after percent-decoding too: URL parsers
                    // treat `%2e%2e` as `..`.
                    let decoded = crate::request::percent_decode(p.as_bytes(), false);
                    let dot_segment =
                        |s: &str| s.split(['/', '?']).any(|seg| seg == ".." || seg == ".");
                    let bad = !p.starts_with('/')
                        || p.starts_with("//")
                        || p.len() > 2048
                        || dot_segment(p)
                        || dot_segment(&decoded)
                        || decoded.contains('\\')
                        || p.chars()
                            .any(|c| c.is_control() || c.is_whitespace() || c == '#' || c == '\\');
                    if bad {
                        return Err(obj.at("path").error(
                            "expected an absolute path like /hooks/github \
                             (no whitespace, '#', '\\', '.' or '..' segments, or leading '//')",
                        ));
                    }
                }
                let payload = match obj.opt_one_of("payload", &["original", "envelope"])? {
                    Some("envelope") => Payload::Envelope,
                    _ => Payload::Original,
                };
                let auto_resume = AutoResume::read(&mut obj)?;
                let timeout_seconds =
                    timeout(&mut obj, DeliverToPort::DEFAULT_TIMEOUT_SECONDS, 600)?;
                let at_fh = obj.at("forward_headers");
                let forward_headers = match obj.raw("forward_headers") {
                    None => Vec::new(),
                    Some(Value::Array(items)) => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| header_name(v, &at_fh.index(i), ctx))
                        .collect::<Result<_, _>>()?,
                    Some(other) => {
                        return Err(
                            at_fh.error(format!("expected an array, found {}", kind(other)))
                        );
                    }
                };
                Self::DeliverToPort(DeliverToPort {
                    // `ranged` bounded it to 1..=65535.
                    port: u16::try_from(port).unwrap_or(u16::MAX),
                    path,
                    payload,
                    auto_resume,
                    timeout_seconds,
                    forward_headers,
                })
            }
            "run_script" => {
                let script = non_blank(obj.req("script")?, &obj.at("script"))?;
                if script.len() > 64 * 1024 {
                    return Err(obj.at("script").error("longer than 65536 bytes"));
                }
                let timeout_seconds = timeout(&mut obj, RunScript::DEFAULT_TIMEOUT_SECONDS, 3600)?;
                Self::RunScript(RunScript {
                    script,
                    timeout_seconds,
                })
            }
            _ => {
                let plugin = plugin_name(obj.req("plugin")?, &obj.at("plugin"))?;
                let config = match obj.raw("config") {
                    None => Value::Object(Default::default()),
                    Some(v @ Value::Object(_)) => v.clone(),
                    Some(other) => {
                        return Err(obj
                            .at("config")
                            .error(format!("expected an object, found {}", kind(other))));
                    }
                };
                Self::Plugin(PluginAction { plugin, config })
            }
        };
        obj.finish()?;
        Ok(action)
    }
}
