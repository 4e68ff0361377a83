//! The built-in echo server (`hookgate sandbox echo`): what a sandbox runs when its
//! image maps to no command, so delivery can be seen working on a fresh machine.
//!
//! It listens on every port the plane gave it (`PORT`, `HOOKGATE_PORT_<n>`),
//! answers 200 to anything, and appends each request (the sandbox port it came
//! to, method, path, headers, body) as a JSON line to `echo-requests.jsonl` in its work directory. `GET
//! /_echo/requests` lists them, oldest first, bodies base64.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// The file requests are recorded in, inside the sandbox's work directory.
pub const RECORD_FILE: &str = "echo-requests.jsonl";

#[derive(Clone)]
struct Echo {
    file: PathBuf,
    lock: Arc<Mutex<()>>,
}

/// Runs the echo server until the process is killed.
pub async fn run() -> Result<()> {
    let dir =
        std::env::var_os("HOOKGATE_SANDBOX_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from);
    // Listening port → the sandbox port it stands for (`HOOKGATE_PORT_3000` → 3000).
    let mut ports: std::collections::BTreeMap<u16, u16> = std::collections::BTreeMap::new();
    for (key, value) in std::env::vars() {
        let Ok(listen) = value.parse::<u16>() else {
            continue;
        };
        if let Some(inner) = key.strip_prefix("HOOKGATE_PORT_") {
            ports.insert(listen, inner.parse().unwrap_or(listen));
        } else if key == "PORT" {
            ports.entry(listen).or_insert(listen);
        }
    }
    if ports.is_empty() {
        anyhow::bail!("no PORT or HOOKGATE_PORT_<n> set: nothing to listen on");
    }
    let echo = Echo {
        file: dir.join(RECORD_FILE),
        lock: Arc::new(Mutex::new(())),
    };
    let app = Router::new()
        .route("/_echo/requests", axum::routing::get(list))
        .fallback(record)
        .with_state(echo);
    let mut servers = tokio::task::JoinSet::new();
    for (listen, inner) in ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], listen));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let app = app.clone().layer(axum::Extension(SandboxPort(inner)));
        servers.spawn(async move { axum::serve(listener, app).await });
    }
    eprintln!(
        "echo: listening; recording to {}",
        dir.join(RECORD_FILE).display()
    );
    while let Some(done) = servers.join_next().await {
        done.context("an echo listener panicked")?
            .context("an echo listener failed")?;
    }
    Ok(())
}

/// The sandbox port a listener stands for.
#[derive(Debug, Clone, Copy)]
struct SandboxPort(u16);

async fn record(
    State(echo): State<Echo>,
    axum::Extension(SandboxPort(port)): axum::Extension<SandboxPort>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let headers: Vec<Value> = parts
        .headers
        .iter()
        .map(|(n, v)| json!([n.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let line = json!({
        "port": port,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "headers": headers,
        "body": base64::engine::general_purpose::STANDARD.encode(&body),
    });
    let _guard = echo.lock.lock().await;
    let written = async {
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&echo.file)
            .await?;
        f.write_all(format!("{line}\n").as_bytes()).await?;
        f.flush().await
    }
    .await;
    match written {
        Ok(()) => (StatusCode::OK, "recorded\n").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("recording failed: {e}"),
        )
            .into_response(),
    }
}

async fn list(State(echo): State<Echo>) -> Response {
    let _guard = echo.lock.lock().await;
    let text = tokio::fs::read_to_string(&echo.file)
        .await
        .unwrap_or_default();
    let items: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    axum::Json(items).into_response()
}
