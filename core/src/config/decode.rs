//! Decoding JSON config into typed values, with the path of the field at fault.
//!
//! serde's derive loses the path inside internally tagged enums (`auth_type`,
//! `action_type` and `target_type` all are), and its messages name Rust types rather
//! than the ranges a user must meet. So config is read from a `serde_json::Value` by
//! hand: [`Obj`] walks one JSON object, remembers which keys were read and rejects
//! the rest, and every error carries a path like `rules[1].actions[0].port`.

use std::cell::RefCell;

use serde_json::{Map, Value};

use super::SecretSource;
use crate::Error;
use crate::secret::Secret;

/// Where in the document a value sits, as users write it: `rules[1].actions[0].port`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn key(&self, key: &str) -> Path {
        if self.0.is_empty() {
            Path(key.to_owned())
        } else {
            Path(format!("{}.{key}", self.0))
        }
    }

    pub(crate) fn index(&self, index: usize) -> Path {
        Path(format!("{}[{index}]", self.0))
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> Error {
        Error::Config {
            path: self.0.clone(),
            message: message.into(),
        }
    }
}

/// What a decode needs besides the JSON: where stored secrets are resolved from, and
/// every secret seen so far (one name must not carry two values).
pub(crate) struct Ctx<'s> {
    secrets: Option<&'s dyn SecretSource>,
    seen: RefCell<Vec<Secret>>,
}

impl<'s> Ctx<'s> {
    pub(crate) fn new(secrets: Option<&'s dyn SecretSource>) -> Self {
        Self {
            secrets,
            seen: RefCell::new(Vec::new()),
        }
    }

    /// Reads `{"name", "value"}` (inline) or `{"secret_ref"}` (a stored secret).
    pub(crate) fn secret(&self, value: &Value, at: &Path) -> Result<Secret, Error> {
        let mut obj = Obj::new(value, at, self)?;
        let secret = if let Some(name) = obj.opt::<String>("secret_ref")? {
            let source = self.secrets.ok_or_else(|| {
                at.key("secret_ref").error(
                    "secret references are only accepted when updating a stored receiver; \
                     give {\"name\", \"value\"}",
                )
            })?;
            source.secret(&name).ok_or_else(|| {
                at.key("secret_ref")
                    .error(format!("no stored secret named {name:?}"))
            })?
        } else {
            let name: String = obj.req("name")?;
            check_secret_name(&name, &at.key("name"))?;
            let value: String = obj.req("value")?;
            if value.is_empty() {
                return Err(at.key("value").error("must not be empty"));
            }
            if value.len() > Secret::MAX_VALUE_BYTES {
                return Err(at
                    .key("value")
                    .error(format!("longer than {} bytes", Secret::MAX_VALUE_BYTES)));
            }
            Secret::new(name, value)
        };
        obj.finish()?;
        let mut seen = self.seen.borrow_mut();
        if let Some(other) = seen.iter().find(|s| s.name() == secret.name()) {
            if other != &secret {
                return Err(at.error(format!(
                    "secret {:?} is given twice with different values",
                    secret.name()
                )));
            }
        } else {
            seen.push(secret.clone());
        }
        Ok(secret)
    }
}

fn check_secret_name(name: &str, at: &Path) -> Result<(), Error> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(at.error("expected 1..128 characters of A-Z, a-z, 0-9, '_', '-', '.'"))
    }
}

/// A value that can be read from JSON config.
pub(crate) trait Decode: Sized {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error>;
}

/// The JSON type of a value, for "expected …, found …" messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Decode for String {
    fn decode(value: &Value, at: &Path, _: &Ctx<'_>) -> Result<Self, Error> {
        match value {
            Value::String(s) => Ok(s.clone()),
            other => Err(at.error(format!("expected a string, found {}", kind(other)))),
        }
    }
}

impl Decode for bool {
    fn decode(value: &Value, at: &Path, _: &Ctx<'_>) -> Result<Self, Error> {
        match value {
            Value::Bool(b) => Ok(*b),
            other => Err(at.error(format!("expected true or false, found {}", kind(other)))),
        }
    }
}

impl Decode for u64 {
    fn decode(value: &Value, at: &Path, _: &Ctx<'_>) -> Result<Self, Error> {
        value.as_u64().ok_or_else(|| {
            at.error(format!(
                "expected a non-negative integer, found {}",
                match value {
                    Value::Number(n) => n.to_string(),
                    other => kind(other).to_owned(),
                }
            ))
        })
    }
}

impl Decode for Value {
    fn decode(value: &Value, _: &Path, _: &Ctx<'_>) -> Result<Self, Error> {
        Ok(value.clone())
    }
}

impl Decode for Secret {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        ctx.secret(value, at)
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(value: &Value, at: &Path, ctx: &Ctx<'_>) -> Result<Self, Error> {
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| T::decode(item, &at.index(i), ctx))
                .collect(),
            other => Err(at.error(format!("expected an array, found {}", kind(other)))),
        }
    }
}

/// Reads an integer and checks it lies in `lo..=hi`; the message names the range.
pub(crate) fn ranged(value: &Value, at: &Path, lo: u64, hi: u64) -> Result<u64, Error> {
    match value.as_u64() {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(at.error(format!(
            "expected an integer {lo}..{hi}, found {}",
            match value {
                Value::Number(n) => n.to_string(),
                Value::String(s) => format!("the string {s:?}"),
                other => kind(other).to_owned(),
            }
        ))),
    }
}

/// Reads a non-empty array (an empty rule list or combinator is always a mistake).
pub(crate) fn non_empty<T: Decode>(
    value: &Value,
    at: &Path,
    ctx: &Ctx<'_>,
) -> Result<Vec<T>, Error> {
    let items = Vec::<T>::decode(value, at, ctx)?;
    if items.is_empty() {
        return Err(at.error("must not be empty"));
    }
    Ok(items)
}

/// One JSON object being read field by field. [`Obj::finish`] rejects any key that
/// was not read, naming the keys that are allowed there.
pub(crate) struct Obj<'v, 'c, 's> {
    map: &'v Map<String, Value>,
    at: Path,
    ctx: &'c Ctx<'s>,
    read: Vec<&'static str>,
}

impl<'v, 'c, 's> Obj<'v, 'c, 's> {
    /// Starts reading `value`, which must be an object.
    pub(crate) fn new(value: &'v Value, at: &Path, ctx: &'c Ctx<'s>) -> Result<Self, Error> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                at: at.clone(),
                ctx,
                read: Vec::new(),
            }),
            other => Err(at.error(format!("expected an object, found {}", kind(other)))),
        }
    }

    pub(crate) fn ctx(&self) -> &'c Ctx<'s> {
        self.ctx
    }

    /// The path of a field of this object.
    pub(crate) fn at(&self, key: &str) -> Path {
        self.at.key(key)
    }

    /// The raw value of a field (absent or null → `None`), marked as read.
    pub(crate) fn raw(&mut self, key: &'static str) -> Option<&'v Value> {
        self.read.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A field's value with JSON `null` kept (where null is a meaningful value).
    pub(crate) fn raw_value(&mut self, key: &'static str) -> Option<&'v Value> {
        self.read.push(key);
        self.map.get(key)
    }

    /// A required field's raw value.
    pub(crate) fn raw_req(&mut self, key: &'static str) -> Result<&'v Value, Error> {
        self.raw(key)
            .ok_or_else(|| self.at.key(key).error("missing required field"))
    }

    pub(crate) fn opt<T: Decode>(&mut self, key: &'static str) -> Result<Option<T>, Error> {
        let at = self.at.key(key);
        let ctx = self.ctx;
        match self.raw(key) {
            None => Ok(None),
            Some(value) => T::decode(value, &at, ctx).map(Some),
        }
    }

    pub(crate) fn req<T: Decode>(&mut self, key: &'static str) -> Result<T, Error> {
        self.opt(key)?
            .ok_or_else(|| self.at.key(key).error("missing required field"))
    }

    /// A required string that must be one of `allowed` (a tag like `auth_type`).
    pub(crate) fn one_of(
        &mut self,
        key: &'static str,
        allowed: &[&'static str],
    ) -> Result<&'static str, Error> {
        let at = self.at.key(key);
        let value: String = self.req(key)?;
        allowed
            .iter()
            .find(|a| **a == value)
            .copied()
            .ok_or_else(|| {
                at.error(format!(
                    "unknown value {value:?}; expected one of {}",
                    list(allowed)
                ))
            })
    }

    /// An optional string that must be one of `allowed`.
    pub(crate) fn opt_one_of(
        &mut self,
        key: &'static str,
        allowed: &[&'static str],
    ) -> Result<Option<&'static str>, Error> {
        if self.map.get(key).is_none_or(Value::is_null) {
            self.read.push(key);
            return Ok(None);
        }
        self.one_of(key, allowed).map(Some)
    }

    /// Rejects every key that was not read.
    pub(crate) fn finish(self) -> Result<(), Error> {
        let mut allowed = self.read.clone();
        allowed.sort_unstable();
        allowed.dedup();
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            None => Ok(()),
            Some(unknown) => Err(self
                .at
                .key(unknown)
                .error(format!("unknown field; expected one of {}", list(&allowed)))),
        }
    }
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
