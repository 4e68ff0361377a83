//! The `auth` tree of a receiver: which verifiers must pass, and their settings.
//!
//! Each `auth_type` is one variant of [`Auth`]; `all` and `any` nest to any depth.
//! Everything a verifier needs is checked here, once, when the config is read:
//! a `jwt` receiver without keys, an `hmac` template that uses `{id}` without an id
//! source, or a CIDR that does not parse is a config error with its path, never a
//! failure discovered when the first webhook arrives.

use serde::Serialize;
use serde_json::Value;

use super::decode::{Ctx, Decode, Obj, Path, non_empty, ranged};
use super::plugin_name;
use super::source::{Template, TemplatePart, ValueSource, header_name, non_blank};
use crate::Error;
use crate::config::providers::{Provider, Scheme, check_secret};
use crate::encoding::{decode_base64, decode_hex};
use crate::jwks::Jwks;
use crate::secret::Secret;

/// How a receiver proves who sent a request.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "auth_type", rename_all = "snake_case")]
pub enum Auth {
    /// Accept anything. For trusted networks and testing.
    None,
    Hmac(Box<HmacAuth>),
    /// A header must equal a secret (`X-Gitlab-Token`-style shared tokens).
    HeaderEquals(TokenAuth),
    /// A query parameter must equal a secret (`?token=…` from a cron job).
    QueryEquals(TokenAuth),
    Basic(BasicAuth),
    /// `Authorization: Bearer <secret>`.
    BearerStatic(BearerAuth),
    Jwt(Box<JwtAuth>),
    IpAllowlist(IpAllowlist),
    Provider(ProviderAuth),
    Plugin(PluginAuth),
    All(Combinator),
    Any(Combinator),
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenAuth {
    pub name: String,
    pub secret: Secret,
}

#[derive(Debug, Clone, Serialize)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Serialize)]
pub struct BearerAuth {
    pub secret: Secret,
}

#[derive(Debug, Clone, Serialize)]
pub struct IpAllowlist {
    pub cidrs: Vec<ipnet::IpNet>,
}

/// A plugin verifier. Its config may hold secrets, each written
/// `{"secret": {"name", "value"}}` where the plugin expects a string: the
/// plugin gets the value in that place (`config`), while the receiver stores
/// and shows `{"secret": {"secret_ref": name}}` (`stored_config`) and keeps the
/// value with its other secrets, write-only.
#[derive(Clone)]
pub struct PluginAuth {
    pub plugin: String,
    /// As the plugin gets it: secrets in place.
    pub config: Value,
    /// As stored and shown: secrets by reference.
    pub stored_config: Value,
    pub secrets: Vec<Secret>,
}

impl std::fmt::Debug for PluginAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginAuth")
            .field("plugin", &self.plugin)
            .field("config", &self.stored_config)
            .finish()
    }
}

impl Serialize for PluginAuth {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("PluginAuth", 2)?;
        s.serialize_field("plugin", &self.plugin)?;
        s.serialize_field("config", &self.stored_config)?;
        s.end()
    }
}

/// Splits a plugin config into what the plugin gets and what is stored, and
/// the secrets it holds: every `{"secret": …}` object, at any depth.
fn plugin_config(
    value: &Value,
    at: &Path,
    ctx: &Ctx<'_>,
    secrets: &mut Vec<Secret>,
) -> Result<(Value, Value), Error> {
    match value {
        Value::Object(map) if map.len() == 1 && map.contains_key("secret") => {
            let secret = ctx.secret(&map["secret"], &at.key("secret"))?;
            let resolved = Value::String(secret.expose().to_owned());
            let stored = serde_json::json!({"secret": {"secret_ref": secret.name()}});
            if !secrets.iter().any(|s| s.name() == secret.name()) {
                secrets.push(secret);
            }
            Ok((resolved, stored))
        }
        Value::Object(map) => {
            let (mut resolved, mut stored) = (serde_json::Map::new(), serde_json::Map::new());
            for (k, v) in map {
                let (r, s) = plugin_config(v, &at.key(k), ctx, secrets)?;
                resolved.insert(k.clone(), r);
                stored.insert(k.clone(), s);
            }
            Ok((Value::Object(resolved), Value::Object(stored)))
        }
        Value::Array(items) => {
            let (mut resolved, mut stored) = (Vec::new(), Vec::new());
            for (i, v) in items.iter().enumerate() {
                let (r, s) = plugin_config(v, &at.index(i), ctx, secrets)?;
                resolved.push(r);
                stored.push(s);
            }
            Ok((Value::Array(resolved), Value::Array(stored)))
        }
        other => Ok((other.clone(), other.clone())),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Combinator {
    pub verifiers: Vec<Auth>,
}

/// One secret, or several during a rotation (any may match).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Secrets {
    Secret(Secret),
    Secrets(Vec<Secret>),
}

impl Secrets {
    pub fn iter(&self) -> impl Iterator<Item = &Secret> {
        match self {
            Self::Secret(s) => std::slice::from_ref(s).iter(),
            Self::Secrets(v) => v.iter(),
        }
    }

    fn read(obj: &mut Obj<'_, '_, '_>) -> Result<Self, Error> {
        match (obj.opt::<Secret>("secret")?, obj.raw("secrets")) {
            (Some(s), None) => Ok(Self::Secret(s)),
            (None, Some(v)) => Ok(Self::Secrets(non_empty(v, &obj.at("secrets"), obj.ctx())?)),
            (Some(_), Some(_)) => Err(obj
                .at("secrets")
                .error("give `secret` or `secrets`, not both")),
            (None, None) => Err(obj.at("secret").error("missing required field")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Hex,
    Base64,
}

/// How the configured secret string becomes the HMAC key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretEncoding {
    /// The secret's UTF-8 bytes, as GitHub, Stripe and Slack use them.
    Raw,
    /// Base64-decoded, after dropping a `whsec_` prefix (Standard Webhooks).
    Base64,
    Hex,
}

impl SecretEncoding {
    /// The HMAC key a secret string stands for.
    /// `None` when the secret is not valid in its encoding, or decodes to nothing.
    pub fn decode_key(self, secret: &str) -> Option<Vec<u8>> {
        match self {
            Self::Raw => Some(secret.as_bytes().to_vec()),
            Self::Base64 => {
                let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
                decode_base64(b64).filter(|k| !k.is_empty())
            }
            Self::Hex => decode_hex(secret).filter(|k| !k.is_empty()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SignedPayload {
    RawBody,
    Template { template: Template },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    UnixSeconds,
    UnixMillis,
    Rfc3339,
}

/// Where the signed timestamp is and how far from now it may be.
#[derive(Debug, Clone, Serialize)]
pub struct TimestampSpec {
    #[serde(flatten)]
    pub source: ValueSource,
    pub format: TimestampFormat,
    pub tolerance_seconds: u64,
}

impl TimestampSpec {
    /// Stripe's SDKs and Standard Webhooks both default to five minutes.
    pub const DEFAULT_TOLERANCE_SECONDS: u64 = 300;
    /// A day: anything wider is no replay protection at all.
    pub const MAX_TOLERANCE_SECONDS: u64 = 86_400;
}

impl Decode for TimestampSpec {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        let mut obj = Obj::new(value, at, ctx)?;
        let source =
            ValueSource::read(&mut obj, &["header", "query", "header_param", "json_path"])?;
        let format = match obj.opt_one_of("format", &["unix_seconds", "unix_millis", "rfc3339"])? {
            None | Some("unix_seconds") => TimestampFormat::UnixSeconds,
            Some("unix_millis") => TimestampFormat::UnixMillis,
            Some(_) => TimestampFormat::Rfc3339,
        };
        let tolerance_seconds = match obj.raw("tolerance_seconds") {
            None => Self::DEFAULT_TOLERANCE_SECONDS,
            Some(v) => ranged(
                v,
                &obj.at("tolerance_seconds"),
                1,
                Self::MAX_TOLERANCE_SECONDS,
            )?,
        };
        obj.finish()?;
        Ok(Self {
            source,
            format,
            tolerance_seconds,
        })
    }
}

/// A generic HMAC signature check, expressive enough for most providers' schemes.
#[derive(Debug, Clone, Serialize)]
pub struct HmacAuth {
    pub algorithm: HmacAlgorithm,
    pub encoding: Encoding,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(flatten)]
    pub secrets: Secrets,
    pub secret_encoding: SecretEncoding,
    pub signature: ValueSource,
    pub signed_payload: SignedPayload,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<TimestampSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<ValueSource>,
}

impl HmacAuth {
    fn read(obj: &mut Obj<'_, '_, '_>) -> Result<Self, Error> {
        let ctx = obj.ctx();
        let algorithm = match obj.opt_one_of("algorithm", &["sha1", "sha256", "sha512"])? {
            Some("sha1") => HmacAlgorithm::Sha1,
            Some("sha512") => HmacAlgorithm::Sha512,
            _ => HmacAlgorithm::Sha256,
        };
        let encoding = match obj.opt_one_of("encoding", &["hex", "base64"])? {
            Some("base64") => Encoding::Base64,
            _ => Encoding::Hex,
        };
        let prefix: Option<String> = obj.opt("prefix")?;
        let secrets = Secrets::read(obj)?;
        let secret_encoding = match obj.opt_one_of("secret_encoding", &["raw", "base64", "hex"])? {
            Some("base64") => SecretEncoding::Base64,
            Some("hex") => SecretEncoding::Hex,
            _ => SecretEncoding::Raw,
        };
        for (i, secret) in secrets.iter().enumerate() {
            if secret_encoding.decode_key(secret.expose()).is_none() {
                let at = match &secrets {
                    Secrets::Secret(_) => obj.at("secret"),
                    Secrets::Secrets(_) => obj.at("secrets").index(i),
                };
                return Err(at.error(
                    format!("value is not valid {secret_encoding:?} for secret_encoding")
                        .to_lowercase(),
                ));
            }
        }
        let signature = ValueSource::decode_only(
            obj.raw_req("signature")?,
            &obj.at("signature"),
            ctx,
            &["header", "query", "header_param"],
        )?;
        let signed_payload = match obj.raw("signed_payload") {
            None => SignedPayload::RawBody,
            Some(v) => {
                let at = obj.at("signed_payload");
                let mut sp = Obj::new(v, &at, ctx)?;
                let payload = match sp.one_of("type", &["raw_body", "template"])? {
                    "raw_body" => SignedPayload::RawBody,
                    _ => {
                        let text: String = sp.req("template")?;
                        let template =
                            Template::parse(&text).map_err(|e| at.key("template").error(e))?;
                        SignedPayload::Template { template }
                    }
                };
                sp.finish()?;
                payload
            }
        };
        let timestamp: Option<TimestampSpec> = obj.opt("timestamp")?;
        let id = match obj.raw("id") {
            None => None,
            Some(v) => Some(ValueSource::decode_only(
                v,
                &obj.at("id"),
                ctx,
                &["header", "query", "header_param", "json_path"],
            )?),
        };
        // A timestamp outside the signed bytes protects nothing: a replay would just
        // carry a fresh one. It must be in the template, or inside the signed body.
        if let Some(ts) = &timestamp {
            let signs_body = match &signed_payload {
                SignedPayload::RawBody => true,
                SignedPayload::Template { template } => template.uses(&TemplatePart::Body),
            };
            let signed = match (&signed_payload, &ts.source) {
                (_, ValueSource::JsonPath { .. }) => signs_body,
                (SignedPayload::Template { template }, _) => {
                    template.uses(&TemplatePart::Timestamp)
                }
                (SignedPayload::RawBody, _) => false,
            };
            if !signed {
                return Err(obj.at("timestamp").error(
                    "the timestamp is not signed: use {timestamp} in signed_payload.template \
                     (or read it with json_path from a signed body)",
                ));
            }
        }
        if let SignedPayload::Template { template } = &signed_payload {
            let at = obj.at("signed_payload").key("template");
            if template.uses(&TemplatePart::Timestamp) && timestamp.is_none() {
                return Err(at.error("uses {timestamp} but no `timestamp` source is configured"));
            }
            if template.uses(&TemplatePart::Id) && id.is_none() {
                return Err(at.error("uses {id} but no `id` source is configured"));
            }
        }
        Ok(Self {
            algorithm,
            encoding,
            prefix,
            secrets,
            secret_encoding,
            signature,
            signed_payload,
            timestamp,
            id,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    ES256,
    EdDSA,
}

impl JwtAlgorithm {
    pub const ALL: [&'static str; 6] = ["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"];

    pub fn name(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            "RS256" => Self::RS256,
            "ES256" => Self::ES256,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

/// Where a JWT's verification keys come from. HMAC algorithms use only `secret`;
/// asymmetric ones only the JWKS, so a public key can never be used as an HMAC key
/// (the classic algorithm-confusion attack).
#[derive(Debug, Clone, Serialize)]
pub struct JwtAuth {
    pub algorithms: Vec<JwtAlgorithm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Jwks>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    pub leeway_seconds: u64,
    pub token: ValueSource,
}

impl JwtAuth {
    /// Clock skew allowed on `exp`/`nbf`; one minute is what most JWT libraries use.
    pub const DEFAULT_LEEWAY_SECONDS: u64 = 60;

    fn read(obj: &mut Obj<'_, '_, '_>) -> Result<Self, Error> {
        let ctx = obj.ctx();
        let at = obj.at("algorithms");
        let names: Vec<String> = non_empty(obj.raw_req("algorithms")?, &at, ctx)?;
        let mut algorithms = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let alg = JwtAlgorithm::from_name(name).ok_or_else(|| {
                at.index(i).error(format!(
                    "unknown algorithm {name:?}; expected one of {}",
                    JwtAlgorithm::ALL.join(", ")
                ))
            })?;
            algorithms.push(alg);
        }
        let secret: Option<Secret> = obj.opt("secret")?;
        let jwks = match obj.raw("jwks") {
            None => None,
            Some(v) => Some(Jwks::parse(v).map_err(|e| obj.at("jwks").error(e))?),
        };
        let jwks_url: Option<String> = obj.opt("jwks_url")?;
        if let Some(url) = &jwks_url
            && !secure_url(url)
        {
            return Err(obj.at("jwks_url").error(
                "expected an https:// URL (http:// only for 127.0.0.1, [::1] or localhost): \
                 keys fetched in clear can be swapped in transit",
            ));
        }
        let wants_hmac = algorithms.iter().any(|a| a.is_hmac());
        let wants_keys = algorithms.iter().any(|a| !a.is_hmac());
        if wants_hmac && secret.is_none() {
            return Err(obj.at("secret").error("HS256/HS384/HS512 need a `secret`"));
        }
        if !wants_hmac && secret.is_some() {
            return Err(obj
                .at("secret")
                .error("only HS256/HS384/HS512 use a `secret`"));
        }
        match (wants_keys, jwks.is_some(), jwks_url.is_some()) {
            (true, false, false) => {
                return Err(obj
                    .at("jwks")
                    .error("RS256/ES256/EdDSA need `jwks` or `jwks_url`"));
            }
            (_, true, true) => {
                return Err(obj
                    .at("jwks_url")
                    .error("give `jwks` or `jwks_url`, not both"));
            }
            (false, true, _) | (false, _, true) => {
                let field = if jwks.is_some() { "jwks" } else { "jwks_url" };
                return Err(obj
                    .at(field)
                    .error("keys are only used by RS256/ES256/EdDSA"));
            }
            _ => {}
        }
        let issuer = obj.opt("issuer")?;
        let audience = obj.opt("audience")?;
        let leeway_seconds = match obj.raw("leeway_seconds") {
            None => Self::DEFAULT_LEEWAY_SECONDS,
            Some(v) => ranged(v, &obj.at("leeway_seconds"), 0, 600)?,
        };
        let token = match obj.raw("token") {
            None => ValueSource::Header {
                name: "Authorization".to_owned(),
            },
            Some(v) => ValueSource::decode_only(v, &obj.at("token"), ctx, &["header", "query"])?,
        };
        Ok(Self {
            algorithms,
            secret,
            jwks,
            jwks_url,
            issuer,
            audience,
            leeway_seconds,
            token,
        })
    }
}

/// An https URL, or http to the loopback interface (a key server beside the host).
fn secure_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once(':').map_or(authority, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            authority
        }
    });
    matches!(host, "127.0.0.1" | "[::1]" | "localhost")
}

/// Reads the `provider` field: one of the presets' names.
fn read_provider(obj: &mut Obj<'_, '_, '_>) -> Result<Provider, Error> {
    let names = Provider::ALL.map(Provider::name);
    let name = obj.one_of("provider", &names)?;
    Ok(Provider::ALL
        .into_iter()
        .find(|p| p.name() == name)
        .unwrap_or(Provider::Github))
}

/// A provider preset: the provider's own scheme, delivery-id header and tolerance.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderAuth {
    pub provider: Provider,
    pub secret: Secret,
    /// Overrides the preset's timestamp tolerance, for providers that sign one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance_seconds: Option<u64>,
    #[serde(skip)]
    pub(crate) scheme: Scheme,
}

impl Decode for Auth {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        const TYPES: &[&str] = &[
            "none",
            "hmac",
            "header_equals",
            "query_equals",
            "basic",
            "bearer_static",
            "jwt",
            "ip_allowlist",
            "provider",
            "plugin",
            "all",
            "any",
        ];
        let mut obj = Obj::new(value, at, ctx)?;
        let auth = match obj.one_of("auth_type", TYPES)? {
            "none" => Self::None,
            "hmac" => Self::Hmac(Box::new(HmacAuth::read(&mut obj)?)),
            kind @ ("header_equals" | "query_equals") => {
                let name = if kind == "header_equals" {
                    header_name(obj.raw_req("name")?, &obj.at("name"), ctx)?
                } else {
                    non_blank(obj.req("name")?, &obj.at("name"))?
                };
                let token = TokenAuth {
                    name,
                    secret: obj.req("secret")?,
                };
                if kind == "header_equals" {
                    Self::HeaderEquals(token)
                } else {
                    Self::QueryEquals(token)
                }
            }
            "basic" => {
                let username: String = obj.req("username")?;
                if username.is_empty() || username.contains(':') {
                    return Err(obj
                        .at("username")
                        .error("expected a non-empty name without ':'"));
                }
                Self::Basic(BasicAuth {
                    username,
                    password: obj.req("password")?,
                })
            }
            "bearer_static" => Self::BearerStatic(BearerAuth {
                secret: obj.req("secret")?,
            }),
            "jwt" => Self::Jwt(Box::new(JwtAuth::read(&mut obj)?)),
            "ip_allowlist" => {
                let at = obj.at("cidrs");
                let texts: Vec<String> = non_empty(obj.raw_req("cidrs")?, &at, ctx)?;
                let mut cidrs = Vec::new();
                for (i, text) in texts.iter().enumerate() {
                    let net = text
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            at.index(i)
                                .error(format!("{text:?} is not an IP address or CIDR"))
                        })?;
                    cidrs.push(net.trunc());
                }
                Self::IpAllowlist(IpAllowlist { cidrs })
            }
            "provider" => {
                let provider = read_provider(&mut obj)?;
                let secret: Secret = obj.req("secret")?;
                check_secret(provider, &secret)
                    .map_err(|e| obj.at("secret").key("value").error(e))?;
                let scheme = Scheme::for_provider(provider, &secret);
                let tolerance_seconds = match obj.raw("tolerance_seconds") {
                    None => None,
                    Some(_) if !scheme.has_timestamp() => {
                        return Err(obj.at("tolerance_seconds").error(format!(
                            "{} signs no timestamp, so there is no tolerance to set",
                            provider.name()
                        )));
                    }
                    Some(v) => Some(ranged(
                        v,
                        &obj.at("tolerance_seconds"),
                        1,
                        TimestampSpec::MAX_TOLERANCE_SECONDS,
                    )?),
                };
                Self::Provider(ProviderAuth {
                    provider,
                    secret,
                    tolerance_seconds,
                    scheme,
                })
            }
            "plugin" => {
                let plugin = plugin_name(obj.req("plugin")?, &obj.at("plugin"))?;
                let raw = match obj.raw("config") {
                    None => Value::Object(Default::default()),
                    Some(v @ Value::Object(_)) => v.clone(),
                    Some(_) => return Err(obj.at("config").error("expected an object")),
                };
                let mut secrets = Vec::new();
                let (config, stored_config) =
                    plugin_config(&raw, &obj.at("config"), ctx, &mut secrets)?;
                Self::Plugin(PluginAuth {
                    plugin,
                    config,
                    stored_config,
                    secrets,
                })
            }
            kind => {
                let verifiers = non_empty(obj.raw_req("verifiers")?, &obj.at("verifiers"), ctx)?;
                let c = Combinator { verifiers };
                if kind == "all" {
                    Self::All(c)
                } else {
                    Self::Any(c)
                }
            }
        };
        obj.finish()?;
        Ok(auth)
    }
}
