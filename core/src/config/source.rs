//! Where a value comes from in a request, and the compiled expressions config holds.
//!
//! Signatures, timestamps, idempotency keys and sandbox names are all "a value read
//! from the request": a header, a query parameter, a `key=value` parameter inside a
//! header (`Stripe-Signature: t=…,v1=…`), a JSONPath into the body, or the body's
//! hash. [`ValueSource`] is that one idea; each place that uses it says which kinds
//! make sense there. JSONPaths, regexes and templates are compiled once, when the
//! config is read, and keep their source text so they serialize back unchanged.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json_path::JsonPath;

use super::decode::{Ctx, Decode, Obj, Path};
use crate::Error;
use crate::request::{Event, HeaderProblem};

/// A JSONPath (RFC 9535), compiled.
#[derive(Clone)]
pub struct JsonPathExpr {
    text: String,
    path: JsonPath,
}

impl JsonPathExpr {
    pub fn parse(text: &str) -> Result<Self, String> {
        JsonPath::parse(text)
            .map(|path| Self {
                text: text.to_owned(),
                path,
            })
            .map_err(|e| format!("invalid JSONPath {text:?}: {e}"))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Every node the path selects, in document order.
    pub fn select<'v>(&self, doc: &'v Value) -> Vec<&'v Value> {
        self.path.query(doc).all()
    }
}

impl fmt::Debug for JsonPathExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPath({:?})", self.text)
    }
}

impl Serialize for JsonPathExpr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl Decode for JsonPathExpr {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        let text = String::decode(value, at, ctx)?;
        Self::parse(&text).map_err(|e| at.error(e))
    }
}

/// A regular expression (Rust `regex` syntax, linear time), compiled. Patterns are
/// anchored by the user, not by us: `^pr-[0-9]+$` means what it says.
#[derive(Clone)]
pub struct Pattern {
    regex: regex::Regex,
}

impl Pattern {
    /// Compiled patterns are capped so a config cannot make matching expensive.
    const SIZE_LIMIT: usize = 1 << 20;

    pub fn parse(text: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(text)
            .size_limit(Self::SIZE_LIMIT)
            .build()
            .map(|regex| Self { regex })
            .map_err(|e| format!("invalid regex {text:?}: {}", first_line(&e.to_string())))
    }

    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

fn first_line(s: &str) -> String {
    // regex errors draw a caret diagram over several lines; the last line says what.
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_owned()
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.as_str())
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Decode for Pattern {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        let text = String::decode(value, at, ctx)?;
        Self::parse(&text).map_err(|e| at.error(e))
    }
}

/// An HTTP header name (RFC 9110 token). Lookups are case-insensitive.
pub(crate) fn header_name(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<String, Error> {
    let name = String::decode(value, at, ctx)?;
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || name.len() > 256 || !name.bytes().all(token) {
        return Err(at.error(format!("{name:?} is not a valid HTTP header name")));
    }
    Ok(name)
}

/// A value read from the request.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ValueSource {
    /// The first header of this name.
    Header { name: String },
    /// The first query parameter of this name (percent-decoded).
    Query { name: String },
    /// Every `param` inside a header shaped like `t=1,v1=abc,v1=def`: entries split
    /// on `separator`, each split once on `kv_separator`.
    HeaderParam {
        name: String,
        param: String,
        separator: String,
        kv_separator: String,
    },
    /// Every node a JSONPath selects in the JSON body; strings as they are, numbers
    /// in their JSON form.
    JsonPath { path: JsonPathExpr },
    /// The lowercase hex SHA-256 of the raw body.
    BodySha256,
}

impl ValueSource {
    /// Reads the `source` tag and its fields from `obj`, allowing only `kinds`. The
    /// caller reads any further fields of its own and then calls `finish`.
    pub(crate) fn read(obj: &mut Obj<'_, '_, '_>, kinds: &[&'static str]) -> Result<Self, Error> {
        let ctx = obj.ctx();
        Ok(match obj.one_of("source", kinds)? {
            "header" => Self::Header {
                name: header_name(obj.raw_req("name")?, &obj.at("name"), ctx)?,
            },
            "query" => Self::Query {
                name: non_blank(obj.req("name")?, &obj.at("name"))?,
            },
            "header_param" => {
                let name = header_name(obj.raw_req("name")?, &obj.at("name"), ctx)?;
                let param = non_blank(obj.req("param")?, &obj.at("param"))?;
                let separator = obj.opt("separator")?.unwrap_or_else(|| ",".to_owned());
                let kv_separator = obj.opt("kv_separator")?.unwrap_or_else(|| "=".to_owned());
                if separator.is_empty() {
                    return Err(obj.at("separator").error("must not be empty"));
                }
                if kv_separator.is_empty() {
                    return Err(obj.at("kv_separator").error("must not be empty"));
                }
                Self::HeaderParam {
                    name,
                    param,
                    separator,
                    kv_separator,
                }
            }
            "json_path" => Self::JsonPath {
                path: obj.req("path")?,
            },
            "body_sha256" => Self::BodySha256,
            other => unreachable!("one_of returned {other:?} outside its list"),
        })
    }

    /// Reads a whole object that is just a source (`{"source": "header", "name": …}`).
    pub(crate) fn decode_only(
        value: &Value,
        at: &Path,
        ctx: &Ctx<'_>,
        kinds: &[&'static str],
    ) -> Result<Self, Error> {
        let mut obj = Obj::new(value, at, ctx)?;
        let source = Self::read(&mut obj, kinds)?;
        obj.finish()?;
        Ok(source)
    }

    /// How the source reads in a trace: `header X-GitHub-Delivery`.
    pub fn describe(&self) -> String {
        match self {
            Self::Header { name } => format!("header {name}"),
            Self::Query { name } => format!("query parameter {name}"),
            Self::HeaderParam { name, param, .. } => format!("{param} in header {name}"),
            Self::JsonPath { path } => path.as_str().to_owned(),
            Self::BodySha256 => "body SHA-256".to_owned(),
        }
    }
}

impl ValueSource {
    /// Every value the source yields for this request, or a sentence saying why
    /// there is none (`header X-GitHub-Delivery missing`). Never empty on `Ok`.
    pub fn read_all(&self, event: &Event<'_>) -> Result<Vec<String>, String> {
        match self {
            Self::Header { name } => header_value(event, name).map(|v| vec![v.to_owned()]),
            Self::Query { name } => event
                .query_param(name)
                .map(|v| vec![v.to_owned()])
                .ok_or_else(|| format!("query parameter {name} missing")),
            Self::HeaderParam {
                name,
                param,
                separator,
                kv_separator,
            } => {
                let header = header_value(event, name)?;
                let values: Vec<String> = header
                    .split(separator.as_str())
                    .filter_map(|entry| entry.trim().split_once(kv_separator.as_str()))
                    .filter(|(k, _)| k.trim() == param)
                    .map(|(_, v)| v.trim().to_owned())
                    .collect();
                if values.is_empty() {
                    Err(format!("header {name} has no {param}{kv_separator} entry"))
                } else {
                    Ok(values)
                }
            }
            Self::JsonPath { path } => {
                let doc = event
                    .json()
                    .map_err(|e| format!("{} cannot be read: {}", path.as_str(), e.0))?;
                let nodes = path.select(doc);
                let Some(first) = nodes.first() else {
                    return Err(format!("{} matched nothing in the body", path.as_str()));
                };
                let mut out = Vec::with_capacity(nodes.len());
                for node in &nodes {
                    match node {
                        Value::String(s) => out.push(s.clone()),
                        Value::Number(n) => out.push(n.to_string()),
                        Value::Bool(b) => out.push(b.to_string()),
                        _ => {}
                    }
                }
                if out.is_empty() {
                    return Err(format!(
                        "{} is {}, expected a string or number",
                        path.as_str(),
                        super::decode::kind(first)
                    ));
                }
                Ok(out)
            }
            Self::BodySha256 => {
                use sha2::Digest;
                Ok(vec![crate::encoding::encode_hex(&sha2::Sha256::digest(
                    event.request.body,
                ))])
            }
        }
    }

    /// The first value the source yields.
    pub fn read_first(&self, event: &Event<'_>) -> Result<String, String> {
        self.read_all(event).map(|mut v| v.swap_remove(0))
    }
}

/// A header as text, or why not: `header X-Hub-Signature-256 missing`.
pub(crate) fn header_value<'e>(event: &'e Event<'_>, name: &str) -> Result<&'e str, String> {
    event.header(name).map_err(|p| match p {
        HeaderProblem::Missing => format!("header {name} missing"),
        HeaderProblem::NotUtf8 => format!("header {name} is not valid UTF-8"),
    })
}

pub(crate) fn non_blank(s: String, at: &Path) -> Result<String, Error> {
    if s.trim().is_empty() {
        Err(at.error("must not be empty"))
    } else {
        Ok(s)
    }
}

/// One piece of a signed-payload template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    Body,
    Timestamp,
    Id,
    Url,
    Method,
    Header(String),
}

/// A signed-payload template like `{timestamp}.{body}` or `v0:{timestamp}:{body}`.
/// Placeholders: `{body}` (raw bytes), `{timestamp}` (as received), `{id}`, `{url}`
/// (the full public URL the provider called), `{method}`, `{header:Name}`. `{{` and
/// `}}` are literal braces.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
    parts: Vec<TemplatePart>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("unclosed placeholder {{{name}")),
                        }
                    }
                    if !literal.is_empty() {
                        parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(match name.as_str() {
                        "body" => TemplatePart::Body,
                        "timestamp" => TemplatePart::Timestamp,
                        "id" => TemplatePart::Id,
                        "url" => TemplatePart::Url,
                        "method" => TemplatePart::Method,
                        other => match other.strip_prefix("header:") {
                            Some(h) if !h.is_empty() => TemplatePart::Header(h.to_owned()),
                            _ => {
                                return Err(format!(
                                    "unknown placeholder {{{other}}}; expected {{body}}, \
                                     {{timestamp}}, {{id}}, {{url}}, {{method}} or {{header:Name}}"
                                ));
                            }
                        },
                    });
                }
                '}' => return Err("unmatched '}' (write '}}' for a literal brace)".to_owned()),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        Ok(Self {
            text: text.to_owned(),
            parts,
        })
    }

    pub fn parts(&self) -> &[TemplatePart] {
        &self.parts
    }

    pub fn uses(&self, part: &TemplatePart) -> bool {
        self.parts.contains(part)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_placeholders_and_escapes() {
        let t = Template::parse("v0:{timestamp}:{body}").unwrap();
        assert_eq!(
            t.parts(),
            &[
                TemplatePart::Literal("v0:".into()),
                TemplatePart::Timestamp,
                TemplatePart::Literal(":".into()),
                TemplatePart::Body
            ]
        );
        let t = Template::parse("{{x}}{header:X-Id}").unwrap();
        assert_eq!(
            t.parts(),
            &[
                TemplatePart::Literal("{x}".into()),
                TemplatePart::Header("X-Id".into())
            ]
        );
        assert!(
            Template::parse("{nope}")
                .unwrap_err()
                .contains("unknown placeholder {nope}")
        );
        assert!(Template::parse("{body").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a}b").unwrap_err().contains("unmatched"));
    }

    #[test]
    fn regex_errors_are_one_line() {
        let err = Pattern::parse("([a-z").unwrap_err();
        assert!(err.starts_with("invalid regex \"([a-z\": "), "{err}");
        assert!(!err.contains('\n'));
    }
}
