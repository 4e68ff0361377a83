//! An action that reshapes a JSON payload and delivers the result to the sandbox:
//! it selects fields by path, renames them, and POSTs the new object through the
//! host's `sandbox.deliver`.
//!
//! Config:
//! `{"port": 3000, "path": "/events", "fields": {"pr": "$.pull_request.number", "what": "$.action"}}`
//! turns a GitHub pull request event into `{"pr": 42, "what": "opened"}`. A path
//! is `$` followed by `.name` or `[index]` steps; a field whose path finds nothing
//! is `null`.

wit_bindgen::generate!({ path: "../../wit", world: "action" });

use exports::hookgate::plugin::handle::{Delivery, Guest, Outcome};
use hookgate::plugin::log::{Level, log};
use hookgate::plugin::sandbox;
use serde_json::{Map, Value};

struct Reshape;

impl Guest for Reshape {
    fn run(delivery: Delivery, config: String) -> Outcome {
        match reshape(&delivery, &config) {
            Ok(outcome) => outcome,
            Err(why) => Outcome::Permanent(why),
        }
    }
}

/// Follows `$.a.b[0]` through `value`.
fn select<'v>(value: &'v Value, path: &str) -> Result<Option<&'v Value>, String> {
    let rest = path
        .strip_prefix('$')
        .ok_or_else(|| format!("path {path:?} must start with $"))?;
    let mut at = value;
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let step = match c {
            '.' => {
                let end = rest[i + 1..]
                    .find(['.', '['])
                    .map_or(rest.len(), |e| i + 1 + e);
                let name = &rest[i + 1..end];
                if name.is_empty() {
                    return Err(format!("path {path:?} has an empty name"));
                }
                while chars.peek().is_some_and(|(j, _)| *j < end) {
                    chars.next();
                }
                at.get(name)
            }
            '[' => {
                let end = rest[i..]
                    .find(']')
                    .map(|e| i + e)
                    .ok_or_else(|| format!("path {path:?} has an unclosed ["))?;
                let index: usize = rest[i + 1..end]
                    .parse()
                    .map_err(|_| format!("path {path:?}: expected an index in []"))?;
                while chars.peek().is_some_and(|(j, _)| *j <= end) {
                    chars.next();
                }
                at.get(index)
            }
            _ => return Err(format!("path {path:?}: unexpected {c:?}")),
        };
        match step {
            Some(next) => at = next,
            None => return Ok(None),
        }
    }
    Ok(Some(at))
}

fn reshape(delivery: &Delivery, config: &str) -> Result<Outcome, String> {
    let config: Value =
        serde_json::from_str(config).map_err(|e| format!("config is not JSON: {e}"))?;
    let port = config
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or("config.port: expected 1..65535")?;
    let path = config.get("path").and_then(Value::as_str).unwrap_or("/");
    let fields = config
        .get("fields")
        .and_then(Value::as_object)
        .ok_or("config.fields: expected an object of name → path")?;
    let event: Value = serde_json::from_slice(&delivery.request.body)
        .map_err(|e| format!("the delivery's body is not JSON: {e}"))?;
    let mut shaped = Map::new();
    for (name, path) in fields {
        let path = path
            .as_str()
            .ok_or_else(|| format!("config.fields.{name}: expected a path string"))?;
        let value = select(&event, path)?.cloned().unwrap_or(Value::Null);
        shaped.insert(name.clone(), value);
    }
    let body = Value::Object(shaped).to_string().into_bytes();
    log(
        Level::Info,
        &format!("reshaped {} fields into {} bytes", fields.len(), body.len()),
    );
    Ok(
        match sandbox::deliver(port, path, "application/json", &body) {
            Err(why) => Outcome::Retryable(why),
            Ok(answer) => {
                let summary = format!(
                    "reshaped {} fields; port {port} answered {}",
                    fields.len(),
                    answer.status
                );
                match answer.status {
                    200..=399 => Outcome::Success(summary),
                    408 | 429 | 500..=599 => Outcome::Retryable(summary),
                    _ => Outcome::Permanent(summary),
                }
            }
        },
    )
}

export!(Reshape);
