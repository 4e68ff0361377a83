//! The built-in echo server (`hookgate sandbox echo`): what a sandbox runs when its
//! image maps to no command, so delivery can be seen working on a fresh machine.
//!
//! It listens on every port the plane gave it (`PORT`, `HOOKGATE_PORT_<n>`),
//! answers 200 to anything, and appends each request (method, path, headers, body)
//! as a JSON line to `echo-requests.jsonl` in its work directory. `GET
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
    let mut ports: Vec<u16> = std::env::vars()
        .filter(|(k, _)| k == "PORT" || k.starts_with("HOOKGATE_PORT_"))
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
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
    for port in ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let app = app.clone();
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

async fn record(State(echo): State<Echo>, req: Request) -> Response {
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
