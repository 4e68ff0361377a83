//! What hookgate's verifier plugins share, independent of their generated
//! bindings: header lookup over `(name, value)` pairs, config reading with errors
//! that name the key, and the timestamp window every replayable scheme needs.

use serde_json::Value;

/// The glue every verifier plugin needs, written once: declares the plugin type,
/// implements the generated `verify` export by calling `$check(&request, &config)`
/// (`Ok(what matched)` accepts, `Err(why)` rejects), and exports it. Use it after
/// `wit_bindgen::generate!({ world: "verifier", … })`.
#[macro_export]
macro_rules! verifier {
    ($plugin:ident, $check:path) => {
        struct $plugin;

        impl exports::hookgate::plugin::verify::Guest for $plugin {
            fn verify(
                request: hookgate::plugin::types::Request,
                config: String,
            ) -> exports::hookgate::plugin::verify::Verdict {
                use exports::hookgate::plugin::verify::Verdict;
                match $check(&request, &config) {
                    Ok(matched) => Verdict::Accept(matched),
                    Err(why) => Verdict::Reject(why),
                }
            }
        }

        export!($plugin);
    };
}

/// A generated request's headers as `(name, value)` pairs, for [`header`].
#[macro_export]
macro_rules! headers {
    ($request:expr) => {
        $request
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice()))
    };
}

/// The first header called `name` (ASCII case-insensitive) as text.
pub fn header<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    name: &str,
) -> Result<&'a str, String> {
    let (_, value) = headers
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("missing header {name}"))?;
    std::str::from_utf8(value).map_err(|_| format!("header {name} is not UTF-8"))
}

/// The plugin config, parsed.
pub fn config(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("config is not JSON: {e}"))
}

/// A required string in the config.
pub fn string<'a>(config: &'a Value, key: &str) -> Result<&'a str, String> {
    config
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("config.{key}: expected a string"))
}

/// An optional whole number of seconds in the config, else `default`.
pub fn seconds(config: &Value, key: &str, default: u64) -> Result<u64, String> {
    match config.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|s| *s <= 86_400)
            .ok_or_else(|| format!("config.{key}: expected whole seconds 0..86400")),
    }
}

/// Checks a Unix-seconds timestamp from a header against the time the host
/// received the request, `tolerance` seconds either way.
pub fn fresh(timestamp: &str, received_at_ms: u64, tolerance: u64) -> Result<i64, String> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| format!("timestamp {timestamp:?} is not Unix seconds"))?;
    let now = i64::try_from(received_at_ms / 1000).unwrap_or(i64::MAX);
    let skew = now.saturating_sub(ts);
    let tolerance = i64::try_from(tolerance).unwrap_or(i64::MAX);
    if skew > tolerance {
        return Err(format!(
            "timestamp is {skew} s old, over the {tolerance} s tolerance"
        ));
    }
    if -skew > tolerance {
        return Err(format!(
            "timestamp is {} s in the future, over the {tolerance} s tolerance",
            -skew
        ));
    }
    Ok(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_hold_both_ways() {
        assert!(fresh("1000", 1_000_000, 300).is_ok());
        assert!(fresh("700", 1_000_000, 300).is_ok());
        assert!(
            fresh("699", 1_000_000, 300)
                .unwrap_err()
                .contains("301 s old")
        );
        assert!(
            fresh("1301", 1_000_000, 300)
                .unwrap_err()
                .contains("in the future")
        );
        assert!(fresh("soon", 1_000_000, 300).is_err());
    }
}
