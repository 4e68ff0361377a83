//! Host settings: a commented default TOML built into the binary, overridden by a
//! file and by `HOOKGATE_*` environment variables.
//!
//! The default file (`settings.default.toml`) is the one place every key is
//! documented; the environment variable names are derived from its keys, so a key
//! cannot exist without its documentation. Invalid settings stop start-up with the
//! key at fault and where it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_TOML: &str = include_str!("settings.default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub public_url: String,
    pub admin_token: String,
    pub secrets_key: String,
    pub limits: Limits,
    pub retention: Retention,
    pub rejections: Rejections,
    pub dedupe: Dedupe,
    pub runner: Runner,
    pub storage: Storage,
    pub jwks: Jwks,
    pub log: Log,
    pub shutdown: Shutdown,
    pub sandbox: Sandbox,
    pub plugins: Plugins,
    pub edge: Edge,
    pub images: BTreeMap<String, Image>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    pub url: String,
    pub admin_token: String,
    pub forward_key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    pub dir: String,
    pub timeout_ms: u64,
    pub memory_mb: u32,
    pub max_memory_mb: u32,
    pub max_concurrent: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sandbox {
    pub plane: PlaneKind,
    pub remote_url: String,
    pub remote_token: String,
    pub ready_timeout_seconds: u64,
    pub sweep_interval_seconds: u64,
    pub fallback_command: Vec<String>,
    pub max_sandboxes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaneKind {
    Local,
    Http,
}

/// What an image runs on the local plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub command: Vec<String>,
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub max_url_bytes: usize,
    pub body_timeout_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub deliveries_days: u64,
    pub prune_interval_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejections {
    pub keep_per_receiver: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dedupe {
    pub retention_seconds: u64,
    pub cleanup_interval_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runner {
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    pub synchronous: Synchronous,
    pub max_batch: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwks {
    pub cache_seconds: u64,
    pub min_refresh_seconds: u64,
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    pub drain_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("settings file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("settings: {key} (from {origin}): {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
}

impl Settings {
    /// Defaults, then `file`, then `HOOKGATE_*` from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut doc: toml::Table = DEFAULT_TOML.parse().expect("the built-in defaults parse");
        let known = keys(&doc);
        let mut origin: BTreeMap<String, String> = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                path: path.to_owned(),
                source,
            })?;
            let overlay: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| SettingsError::Syntax {
                        path: path.to_owned(),
                        message: e.message().to_owned(),
                    })?;
            for key in keys(&overlay) {
                origin.insert(key, path.display().to_string());
            }
            merge(&mut doc, overlay);
        }
        let by_env: BTreeMap<String, String> =
            known.iter().map(|k| (env_name(k), k.clone())).collect();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("HOOKGATE_") else {
                continue;
            };
            let Some(key) = by_env.get(&name) else {
                return Err(SettingsError::Invalid {
                    key: rest.to_ascii_lowercase(),
                    origin: name.clone(),
                    message: format!(
                        "unknown setting; HOOKGATE_ variables are {}",
                        by_env.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            };
            let typed = env_value(&doc, key, &value);
            set(&mut doc, key, typed);
            origin.insert(key.clone(), name.clone());
        }
        let de = toml::Value::Table(doc);
        serde_path_to_error::deserialize::<_, Settings>(de)
            .map_err(|e| {
                let key = e.path().to_string();
                SettingsError::Invalid {
                    origin: origin
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| "settings".to_owned()),
                    message: e.into_inner().message().to_owned(),
                    key,
                }
            })
            .and_then(Settings::check)
    }

    fn check(self) -> Result<Self, SettingsError> {
        let bad = |key: &str, message: &str| SettingsError::Invalid {
            key: key.to_owned(),
            origin: "settings".to_owned(),
            message: message.to_owned(),
        };
        let url = &self.public_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad("public_url", "expected an http:// or https:// URL"));
        }
        if self.limits.max_body_bytes == 0
            || self.limits.max_body_bytes > hookgate_core::Receiver::MAX_BODY_BYTES
        {
            return Err(bad("limits.max_body_bytes", "expected 1..33554432"));
        }
        let max = hookgate_core::config::Idempotency::MAX_RETENTION_SECONDS;
        if !(1..=max).contains(&self.dedupe.retention_seconds) {
            return Err(bad(
                "dedupe.retention_seconds",
                &format!("expected 1..{max}"),
            ));
        }
        if self.runner.max_attempts == 0 {
            return Err(bad("runner.max_attempts", "expected at least 1"));
        }
        for (name, image) in &self.images {
            if image.command.is_empty() {
                return Err(bad(
                    &format!("images.\"{name}\".command"),
                    "expected at least the program to run",
                ));
            }
        }
        if self.sandbox.plane == PlaneKind::Http {
            let url = &self.sandbox.remote_url;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(
                    "sandbox.remote_url",
                    "plane = \"http\" needs the other host's http:// or https:// URL",
                ));
            }
            if self.sandbox.remote_token.len() < 16 {
                return Err(bad(
                    "sandbox.remote_token",
                    "plane = \"http\" needs the other host's admin token",
                ));
            }
        }
        if !(1..=60_000).contains(&self.plugins.timeout_ms) {
            return Err(bad("plugins.timeout_ms", "expected 1..60000"));
        }
        if !(1..=4096).contains(&self.plugins.max_memory_mb) {
            return Err(bad("plugins.max_memory_mb", "expected 1..4096"));
        }
        if !(1..=self.plugins.max_memory_mb).contains(&self.plugins.memory_mb) {
            return Err(bad(
                "plugins.memory_mb",
                "expected 1..plugins.max_memory_mb",
            ));
        }
        if !(1..=10_000).contains(&self.plugins.max_concurrent) {
            return Err(bad("plugins.max_concurrent", "expected 1..10000"));
        }
        let edge = &self.edge;
        if !(edge.url.is_empty()
            || edge.url.starts_with("http://")
            || edge.url.starts_with("https://"))
        {
            return Err(bad(
                "edge.url",
                "expected the Worker's http:// or https:// URL",
            ));
        }
        if !edge.url.is_empty() && edge.admin_token.is_empty() {
            return Err(bad(
                "edge.admin_token",
                "edge.url needs the Worker's EDGE_ADMIN_TOKEN",
            ));
        }
        if !edge.forward_key.is_empty() && edge.forward_key.len() < 16 {
            return Err(bad("edge.forward_key", "expected at least 16 characters"));
        }
        if self.storage.max_batch == 0 {
            return Err(bad("storage.max_batch", "expected at least 1"));
        }
        if !self.admin_token.is_empty() && self.admin_token.len() < 16 {
            return Err(bad("admin_token", "expected at least 16 characters"));
        }
        Ok(self)
    }

    /// The public base URL without a trailing slash.
    pub fn public_base(&self) -> String {
        if self.public_url.is_empty() {
            format!("http://{}", self.listen)
        } else {
            self.public_url.trim_end_matches('/').to_owned()
        }
    }
}

/// Every leaf key of a table, dotted.
fn keys(table: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in table {
        match v {
            toml::Value::Table(t) => {
                out.extend(keys(t).into_iter().map(|sub| format!("{k}.{sub}")))
            }
            _ => out.push(k.clone()),
        }
    }
    out
}

fn env_name(key: &str) -> String {
    format!("HOOKGATE_{}", key.replace('.', "_").to_ascii_uppercase())
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set(doc: &mut toml::Table, key: &str, value: toml::Value) {
    let mut table = doc;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            table.insert(part.to_owned(), value);
            return;
        }
        table = match table
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => t,
            _ => return,
        };
    }
}

/// An environment value typed like the key's default (integers stay integers).
fn env_value(doc: &toml::Table, key: &str, value: &str) -> toml::Value {
    let mut current: Option<&toml::Value> = None;
    let mut table = Some(doc);
    for part in key.split('.') {
        current = table.and_then(|t| t.get(part));
        table = current.and_then(toml::Value::as_table);
    }
    match current {
        Some(toml::Value::Integer(_)) => value.parse::<i64>().map_or_else(
            |_| toml::Value::String(value.to_owned()),
            toml::Value::Integer,
        ),
        Some(toml::Value::Boolean(_)) => value.parse::<bool>().map_or_else(
            |_| toml::Value::String(value.to_owned()),
            toml::Value::Boolean,
        ),
        // An array is written as TOML: HOOKGATE_X='["a", "b"]'.
        Some(toml::Value::Array(_)) => format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned())),
        _ => toml::Value::String(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The edge has no settings file: it takes these defaults from core, so the
    /// host's must be the same numbers.
    #[test]
    fn defaults_shared_with_the_edge_agree_with_core() {
        let s = Settings::load(None, Vec::new()).unwrap();
        assert_eq!(
            s.limits.max_body_bytes,
            hookgate_core::Receiver::DEFAULT_MAX_BODY_BYTES
        );
        assert_eq!(
            s.dedupe.retention_seconds,
            hookgate_core::config::Idempotency::DEFAULT_RETENTION_SECONDS
        );
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_match_design() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.data_dir, PathBuf::from("./.hookgate"));
        assert_eq!(s.limits.max_body_bytes, 1 << 20);
        assert_eq!(s.dedupe.retention_seconds, 72 * 3600);
        assert_eq!(s.public_base(), "http://127.0.0.1:8080");
    }

    #[test]
    fn file_then_env_override() {
        let dir = std::env::temp_dir().join(format!("hg-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("h.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\n[limits]\nmax_headers = 7\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&file),
            env(&[
                ("HOOKGATE_LISTEN", "127.0.0.1:9001"),
                ("HOOKGATE_LIMITS_MAX_BODY_BYTES", "2048"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(s.limits.max_headers, 7);
        assert_eq!(s.limits.max_body_bytes, 2048);
    }

    #[test]
    fn errors_name_the_key_and_its_origin() {
        let err =
            Settings::load(None, env(&[("HOOKGATE_LIMITS_MAX_BODY_BYTES", "lots")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "settings: limits.max_body_bytes (from HOOKGATE_LIMITS_MAX_BODY_BYTES): invalid type: string \"lots\", expected u64"
        );
        let err = Settings::load(None, env(&[("HOOKGATE_LISTN", "x")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("settings: listn (from HOOKGATE_LISTN): unknown setting"),
            "{err}"
        );
        let err = Settings::load(None, env(&[("HOOKGATE_STORAGE_SYNCHRONOUS", "sometimes")]))
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "settings: storage.synchronous (from HOOKGATE_STORAGE_SYNCHRONOUS): unknown variant"
            ),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("hg-settings-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("h.toml");
        std::fs::write(&file, "[limits]\nmax_bodybytes = 1\n").unwrap();
        let err = Settings::load(Some(&file), env(&[])).unwrap_err();
        assert!(err.to_string().contains("limits.max_bodybytes"), "{err}");
    }

    #[test]
    fn the_http_plane_needs_its_url_and_token() {
        let err = Settings::load(None, env(&[("HOOKGATE_SANDBOX_PLANE", "http")])).unwrap_err();
        assert!(
            err.to_string().starts_with("settings: sandbox.remote_url "),
            "{err}"
        );
        let err = Settings::load(
            None,
            env(&[
                ("HOOKGATE_SANDBOX_PLANE", "http"),
                ("HOOKGATE_SANDBOX_REMOTE_URL", "http://10.0.0.7:8080"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("settings: sandbox.remote_token "),
            "{err}"
        );
        let s = Settings::load(
            None,
            env(&[
                ("HOOKGATE_SANDBOX_PLANE", "http"),
                ("HOOKGATE_SANDBOX_REMOTE_URL", "http://10.0.0.7:8080"),
                ("HOOKGATE_SANDBOX_REMOTE_TOKEN", "0123456789abcdef0123"),
            ]),
        )
        .unwrap();
        assert_eq!(s.sandbox.plane, PlaneKind::Http);
    }

    #[test]
    fn arrays_come_from_env_as_toml() {
        let s = Settings::load(
            None,
            env(&[(
                "HOOKGATE_SANDBOX_FALLBACK_COMMAND",
                r#"["node", "server.js"]"#,
            )]),
        )
        .unwrap();
        assert_eq!(s.sandbox.fallback_command, ["node", "server.js"]);
        let err = Settings::load(
            None,
            env(&[("HOOKGATE_SANDBOX_FALLBACK_COMMAND", "node server.js")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "settings: sandbox.fallback_command (from HOOKGATE_SANDBOX_FALLBACK_COMMAND): "
            ),
            "{err}"
        );
    }
}
