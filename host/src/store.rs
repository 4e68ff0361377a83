//! The durable store: SQLite in the data directory, written with group commit.
//!
//! Every write goes through one writer thread that owns the only writing
//! connection. It takes whatever writes are queued — up to `storage.max_batch` —
//! runs each inside its own savepoint of one transaction, commits once (one fsync
//! of the WAL for the whole batch) and only then answers each caller. So a 202 is
//! never sent for a write that is not on disk, and 32 concurrent deliveries cost
//! one fsync, not 32. A failing write rolls back its savepoint alone.
//!
//! Reads run on a small pool of read-only connections in `spawn_blocking`; WAL
//! mode lets them proceed while the writer commits. Dedupe keys are columns of
//! their delivery; the index over them lives in memory (see `dedupe`).
//!
//! rusqlite rather than DESIGN.md's sqlx: group commit is "run these N closures in
//! one transaction on one thread", which a synchronous connection on a dedicated
//! thread expresses directly; sqlx's async connections cannot lend themselves to a
//! batch of boxed closures without borrowing across awaits.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::settings::{Settings, Synchronous};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database writer stopped")]
    WriterGone,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One queued write: run inside the batch's transaction (again alone in its own if
/// the batch fails), then told how the commit went.
trait Job: Send {
    /// Runs the write; `false` means it failed and the batch must not commit it.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, commit: Result<()>);
}

struct Write<T, F> {
    f: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Write<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        // Not taken: a job may run twice (alone, after its batch failed).
        let result = self
            .f
            .as_mut()
            .map_or(Err(StoreError::WriterGone), |f| f(conn));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<()>) {
        let outcome = match (commit, self.result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::WriterGone),
        };
        let _ = self.reply.send(outcome);
    }
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS receivers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    config      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted_at  INTEGER
);
CREATE TABLE IF NOT EXISTS secrets (
    receiver_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (receiver_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    id              TEXT PRIMARY KEY,
    receiver_id     TEXT NOT NULL,
    received_at     INTEGER NOT NULL,
    verified_at     INTEGER,
    method          TEXT NOT NULL,
    url             TEXT NOT NULL,
    headers         TEXT NOT NULL,
    body            BLOB NOT NULL,
    remote_addr     TEXT,
    idempotency_key TEXT,
    key_expires_at  INTEGER,
    sandbox         TEXT,
    status          TEXT NOT NULL,
    plan            TEXT NOT NULL,
    progress        INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at INTEGER,
    trace           TEXT NOT NULL,
    replay_of       TEXT,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_receiver ON deliveries (receiver_id, id);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (status) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS sandboxes (
    name             TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    image            TEXT NOT NULL,
    template         TEXT NOT NULL,
    ports            TEXT NOT NULL,
    pid              INTEGER,
    created_at       INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL,
    exit_status      TEXT,
    last_output      TEXT,
    updated_at       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sandbox_events (
    sandbox     TEXT NOT NULL,
    at          INTEGER NOT NULL,
    action      TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sandbox_events_by_name ON sandbox_events (sandbox, at);
CREATE TABLE IF NOT EXISTS plugins (
    name         TEXT PRIMARY KEY,
    world        TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    component    BLOB NOT NULL,
    timeout_ms   INTEGER NOT NULL,
    memory_mb    INTEGER NOT NULL,
    installed_at INTEGER NOT NULL
);
"#;

/// A sandbox as the local plane records it.
#[derive(Debug, Clone)]
pub struct SandboxRow {
    pub name: String,
    pub state: String,
    pub image: String,
    pub template: serde_json::Value,
    /// Sandbox port → host port.
    pub ports: std::collections::BTreeMap<u16, u16>,
    pub pid: Option<i32>,
    pub created_at: i64,
    pub last_activity_at: i64,
    pub exit_status: Option<String>,
    pub last_output: Option<String>,
    pub updated_at: i64,
}

/// An uploaded plugin: the component as sent, and its limits.
#[derive(Debug, Clone)]
pub struct PluginRow {
    pub name: String,
    pub world: String,
    pub sha256: String,
    pub component: Vec<u8>,
    pub timeout_ms: u64,
    pub memory_mb: u32,
    pub installed_at: i64,
}

/// A receiver row. `config` holds secrets as `{"secret_ref": name}`.
#[derive(Debug, Clone)]
pub struct ReceiverRow {
    pub id: String,
    pub name: String,
    pub status: String,
    pub config: serde_json::Value,
    pub secrets: Vec<(String, String)>,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

/// One action to run, frozen at accept time so later config edits do not change
/// what an accepted delivery does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlannedAction {
    pub rule: usize,
    pub action: usize,
    pub spec: serde_json::Value,
}

/// A header value as stored: text, or base64 when it is not UTF-8.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StoredValue {
    Text(String),
    Binary { base64: String },
}

#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub receiver_id: String,
    pub received_at: i64,
    pub verified_at: Option<i64>,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub remote_addr: Option<String>,
    pub idempotency_key: Option<String>,
    /// Until when `idempotency_key` dedupes (the receiver's retention).
    pub key_expires_at: Option<i64>,
    pub sandbox: Option<String>,
    pub status: String,
    pub plan: Vec<PlannedAction>,
    pub progress: usize,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub trace: hookgate_core::explain::Trace,
    pub replay_of: Option<String>,
    pub updated_at: i64,
}

/// The request part of a delivery, as it arrived.
#[derive(Debug, Clone)]
pub struct StoredRequest {
    pub verified_at: Option<i64>,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub remote_addr: Option<String>,
}

impl DeliveryRow {
    /// A delivery just accepted: `pending` with actions to run, or `no_match`.
    pub fn accepted(
        id: String,
        receiver_id: String,
        received_at: i64,
        request: StoredRequest,
        sandbox: String,
        plan: Vec<PlannedAction>,
        trace: hookgate_core::explain::Trace,
    ) -> Self {
        let status = if plan.is_empty() {
            "no_match"
        } else {
            "pending"
        };
        Self {
            id,
            receiver_id,
            received_at,
            verified_at: request.verified_at,
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            remote_addr: request.remote_addr,
            idempotency_key: None,
            key_expires_at: None,
            sandbox: Some(sandbox),
            status: status.to_owned(),
            plan,
            progress: 0,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
            trace,
            replay_of: None,
            updated_at: received_at,
        }
    }

    /// The request as stored, for a replay.
    pub fn request(&self) -> StoredRequest {
        StoredRequest {
            verified_at: self.verified_at,
            method: self.method.clone(),
            url: self.url.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            remote_addr: self.remote_addr.clone(),
        }
    }
}

/// A live dedupe key, as loaded at start: who it names and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveKey {
    pub receiver_id: String,
    pub key: String,
    pub delivery_id: String,
    pub expires_at: i64,
}

/// Runner progress on a delivery.
#[derive(Debug, Clone)]
pub struct Progress {
    pub status: String,
    pub progress: usize,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub trace: hookgate_core::explain::Trace,
}

#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Box<dyn Job>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: Arc<std::path::PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn encode_headers(headers: &[(String, Vec<u8>)]) -> String {
    use base64::Engine;
    let list: Vec<(&str, StoredValue)> = headers
        .iter()
        .map(|(n, v)| {
            let value = match std::str::from_utf8(v) {
                Ok(s) => StoredValue::Text(s.to_owned()),
                Err(_) => StoredValue::Binary {
                    base64: base64::engine::general_purpose::STANDARD.encode(v),
                },
            };
            (n.as_str(), value)
        })
        .collect();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".to_owned())
}

pub fn decode_headers(text: &str) -> Result<Vec<(String, Vec<u8>)>> {
    use base64::Engine;
    let list: Vec<(String, StoredValue)> =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("headers: {e}")))?;
    list.into_iter()
        .map(|(n, v)| {
            let bytes = match v {
                StoredValue::Text(s) => s.into_bytes(),
                StoredValue::Binary { base64 } => base64::engine::general_purpose::STANDARD
                    .decode(base64)
                    .map_err(|e| StoreError::Corrupt(format!("header {n}: {e}")))?,
            };
            Ok((n, bytes))
        })
        .collect()
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/hookgate.db` and starts the writer.
    pub fn open(data_dir: &Path, settings: &Settings) -> Result<Self> {
        let path = data_dir.join("hookgate.db");
        let open = |flags| {
            Connection::open_with_flags(&path, flags).map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })
        };
        let writer_conn = open(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        let sync = match settings.storage.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        writer_conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;"
        ))?;
        writer_conn.execute_batch(SCHEMA)?;
        // Checkpoints run on their own thread (below), not inside a commit: an
        // automatic checkpoint stalls every write queued behind it.
        writer_conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        let checkpointer = open(OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        checkpointer.execute_batch("PRAGMA busy_timeout = 5000;")?;
        let mut readers = Vec::new();
        for _ in 0..4 {
            let c = open(OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            c.execute_batch("PRAGMA busy_timeout = 5000;")?;
            readers.push(c);
        }
        let (tx, rx) = mpsc::channel();
        let max_batch = settings.storage.max_batch;
        thread::Builder::new()
            .name("hookgate-writer".into())
            .spawn(move || writer_loop(writer_conn, rx, max_batch))
            .map_err(|e| StoreError::Corrupt(format!("starting the writer thread: {e}")))?;
        let readers = Arc::new(Mutex::new(readers));
        let weak = Arc::downgrade(&readers);
        thread::Builder::new()
            .name("hookgate-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, weak))
            .map_err(|e| StoreError::Corrupt(format!("starting the checkpoint thread: {e}")))?;
        Ok(Self {
            writer: tx,
            readers,
            path: Arc::new(path),
        })
    }

    /// Runs `f` in the next group commit; resolves once the batch is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Write {
            f: Some(f),
            result: None,
            reply,
        });
        self.writer.send(job).map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs `f` on a read connection off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().map(|mut r| r.pop()).unwrap_or(None);
            let conn = match pooled {
                Some(c) => c,
                None => Connection::open_with_flags(&*path, OpenFlags::SQLITE_OPEN_READ_ONLY)?,
            };
            let result = f(&conn);
            if let Ok(mut r) = readers.lock() {
                r.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("read task: {e}")))?
    }

    // ---- receivers ------------------------------------------------------------

    pub async fn put_receiver(&self, row: ReceiverRow) -> Result<()> {
        self.write(move |c| {
            run(c,
                "INSERT INTO receivers (id, name, status, config, created_at, updated_at, deleted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name, status = excluded.status,
                   config = excluded.config, updated_at = excluded.updated_at, deleted_at = excluded.deleted_at",
                params![row.id, row.name, row.status, json(&row.config), row.created_at, row.updated_at, row.deleted_at],
            )?;
            run(c, "DELETE FROM secrets WHERE receiver_id = ?1", params![row.id])?;
            for (name, value) in &row.secrets {
                run(c,
                    "INSERT INTO secrets (receiver_id, name, value) VALUES (?1, ?2, ?3)",
                    params![row.id, name, value],
                )?;
            }
            Ok(())
        })
        .await
    }

    pub async fn receiver(&self, id: String) -> Result<Option<ReceiverRow>> {
        self.read(move |c| receiver_by_id(c, &id)).await
    }

    /// Receivers not deleted, newest first, one page; and the total.
    pub async fn receivers(&self, page: u32, limit: u32) -> Result<(Vec<ReceiverRow>, u64)> {
        self.read(move |c| {
            let total: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM receivers WHERE deleted_at IS NULL")?
                .query_row([], |r| r.get(0))?;
            let out = receivers_where(
                c,
                "SELECT id FROM receivers WHERE deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT ?1 OFFSET ?2",
                params![limit, u64::from(page.saturating_sub(1)) * u64::from(limit)],
            )?;
            Ok((out, u64::try_from(total).unwrap_or(0)))
        })
        .await
    }

    /// Receivers deleted at or after `since` (epoch milliseconds).
    pub async fn receivers_deleted_since(&self, since: i64) -> Result<Vec<ReceiverRow>> {
        self.read(move |c| {
            receivers_where(
                c,
                "SELECT id FROM receivers WHERE deleted_at IS NOT NULL AND deleted_at >= ?1",
                params![since],
            )
        })
        .await
    }

    /// Every receiver that is not deleted, for the receiver cache.
    pub async fn live_receivers(&self) -> Result<Vec<ReceiverRow>> {
        self.read(|c| receivers_where(c, "SELECT id FROM receivers WHERE deleted_at IS NULL", []))
            .await
    }

    // ---- deliveries -----------------------------------------------------------

    /// Inserts a delivery; resolves once it is durable.
    pub async fn insert_delivery(&self, row: DeliveryRow) -> Result<()> {
        let enc = Encoded::of(&row);
        self.write(move |c| insert_delivery_row(c, &row, &enc))
            .await
    }

    /// Every dedupe key still live at `now`, for the in-memory index at start.
    /// Delivery ids sort by time and no key lives longer than the longest
    /// retention, so only the ids since then are read (no index of its own).
    pub async fn live_keys(&self, now: i64) -> Result<Vec<LiveKey>> {
        let max_retention_ms =
            i64::try_from(hookgate_core::config::Idempotency::MAX_RETENTION_SECONDS * 1000)
                .unwrap_or(i64::MAX);
        let floor = crate::ids::delivery_id_at(now.saturating_sub(max_retention_ms));
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT receiver_id, idempotency_key, id, key_expires_at FROM deliveries
                 WHERE id >= ?2 AND idempotency_key IS NOT NULL AND key_expires_at > ?1 ORDER BY id",
            )?;
            Ok(stmt
                .query_map(params![now, floor], |r| {
                    Ok(LiveKey {
                        receiver_id: r.get(0)?,
                        key: r.get(1)?,
                        delivery_id: r.get(2)?,
                        expires_at: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn delivery(&self, id: String) -> Result<Option<DeliveryRow>> {
        self.read(move |c| {
            Ok(rows(
                c,
                &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"),
                params![id],
                delivery_from_row,
            )?
            .into_iter()
            .next())
        })
        .await
    }

    /// A receiver's deliveries, newest first, optionally by status; and the total.
    pub async fn deliveries(
        &self,
        receiver_id: String,
        status: Option<String>,
        page: u32,
        limit: u32,
    ) -> Result<(Vec<DeliveryRow>, u64)> {
        self.read(move |c| {
            let offset = u64::from(page.saturating_sub(1)) * u64::from(limit);
            let total: i64 = cached_row(c,
                "SELECT COUNT(*) FROM deliveries WHERE receiver_id = ?1 AND (?2 IS NULL OR status = ?2)",
                params![receiver_id, status],
                |r| r.get(0),
            )?;
            let out = rows(c, &format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE receiver_id = ?1 AND (?2 IS NULL OR status = ?2)
                 ORDER BY id DESC LIMIT ?3 OFFSET ?4"
            ), params![receiver_id, status, limit, offset], delivery_from_row)?;
            Ok((out, u64::try_from(total).unwrap_or(0)))
        })
        .await
    }

    /// Every delivery with actions still to run, oldest first.
    pub async fn pending(&self) -> Result<Vec<DeliveryRow>> {
        self.read(|c| {
            let out = rows(
                c,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE status = 'pending' ORDER BY id"
                ),
                [],
                delivery_from_row,
            )?;
            Ok(out)
        })
        .await
    }

    pub async fn save_progress(&self, id: String, p: Progress, now: i64) -> Result<()> {
        self.write(move |c| {
            run(
                c,
                "UPDATE deliveries SET status = ?2, progress = ?3, attempts = ?4, last_error = ?5,
                   next_attempt_at = ?6, trace = ?7, updated_at = ?8 WHERE id = ?1",
                params![
                    id,
                    p.status,
                    i64::try_from(p.progress).unwrap_or(i64::MAX),
                    p.attempts,
                    p.last_error,
                    p.next_attempt_at,
                    json(&p.trace),
                    now
                ],
            )?;
            Ok(())
        })
        .await
    }

    // ---- plugins --------------------------------------------------------------

    pub async fn put_plugin(&self, row: PluginRow) -> Result<()> {
        self.write(move |c| {
            run(c,
                "INSERT INTO plugins (name, world, sha256, component, timeout_ms, memory_mb, installed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(name) DO UPDATE SET world = excluded.world, sha256 = excluded.sha256,
                   component = excluded.component, timeout_ms = excluded.timeout_ms,
                   memory_mb = excluded.memory_mb, installed_at = excluded.installed_at",
                params![row.name, row.world, row.sha256, row.component, row.timeout_ms, row.memory_mb, row.installed_at],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn delete_plugin(&self, name: String) -> Result<bool> {
        self.write(move |c| Ok(run(c, "DELETE FROM plugins WHERE name = ?1", params![name])? > 0))
            .await
    }

    /// Every uploaded plugin, by name.
    pub async fn plugins(&self) -> Result<Vec<PluginRow>> {
        self.read(|c| {
            rows(
                c,
                "SELECT name, world, sha256, component, timeout_ms, memory_mb, installed_at FROM plugins ORDER BY name",
                [],
                |r| {
                    Ok(PluginRow {
                        name: r.get(0)?,
                        world: r.get(1)?,
                        sha256: r.get(2)?,
                        component: r.get(3)?,
                        timeout_ms: r.get(4)?,
                        memory_mb: r.get(5)?,
                        installed_at: r.get(6)?,
                    })
                },
            )
        })
        .await
    }

    // ---- sandboxes ------------------------------------------------------------

    pub async fn put_sandbox(
        &self,
        row: SandboxRow,
        event: Option<(String, String)>,
    ) -> Result<()> {
        self.write(move |c| {
            run(c,
                "INSERT INTO sandboxes (name, state, image, template, ports, pid, created_at, last_activity_at,
                   exit_status, last_output, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT(name) DO UPDATE SET state = excluded.state, image = excluded.image,
                   template = excluded.template, ports = excluded.ports, pid = excluded.pid,
                   created_at = excluded.created_at, last_activity_at = excluded.last_activity_at,
                   exit_status = excluded.exit_status, last_output = excluded.last_output,
                   updated_at = excluded.updated_at",
                params![
                    row.name,
                    row.state,
                    row.image,
                    json(&row.template),
                    json(&row.ports),
                    row.pid,
                    row.created_at,
                    row.last_activity_at,
                    row.exit_status,
                    row.last_output,
                    row.updated_at
                ],
            )?;
            if let Some((action, detail)) = &event {
                run(c,
                    "INSERT INTO sandbox_events (sandbox, at, action, detail) VALUES (?1, ?2, ?3, ?4)",
                    params![row.name, row.updated_at, action, detail],
                )?;
                // Keep the last 50 events per sandbox.
                run(c,
                    "DELETE FROM sandbox_events WHERE sandbox = ?1 AND rowid NOT IN
                       (SELECT rowid FROM sandbox_events WHERE sandbox = ?1 ORDER BY at DESC, rowid DESC LIMIT 50)",
                    params![row.name],
                )?;
            }
            Ok(())
        })
        .await
    }

    pub async fn sandbox(&self, name: String) -> Result<Option<SandboxRow>> {
        self.read(move |c| {
            Ok(rows(
                c,
                &format!("SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE name = ?1"),
                params![name],
                sandbox_from_row,
            )?
            .into_iter()
            .next())
        })
        .await
    }

    /// Every sandbox, newest first.
    pub async fn sandboxes(&self) -> Result<Vec<SandboxRow>> {
        self.read(|c| {
            let out = rows(
                c,
                &format!("SELECT {SANDBOX_COLUMNS} FROM sandboxes ORDER BY created_at DESC"),
                [],
                sandbox_from_row,
            )?;
            Ok(out)
        })
        .await
    }

    /// A sandbox's most recent events, newest first: (at, action, detail).
    pub async fn sandbox_events(&self, name: String) -> Result<Vec<(i64, String, String)>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT at, action, detail FROM sandbox_events WHERE sandbox = ?1 ORDER BY at DESC, rowid DESC LIMIT 20",
            )?;
            Ok(stmt
                .query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?)
        })
        .await
    }
}

const SANDBOX_COLUMNS: &str = "name, state, image, template, ports, pid, created_at, last_activity_at, exit_status, last_output, updated_at";

fn sandbox_from_row(r: &rusqlite::Row<'_>) -> Result<SandboxRow> {
    let template: String = r.get(3)?;
    let ports: String = r.get(4)?;
    Ok(SandboxRow {
        name: r.get(0)?,
        state: r.get(1)?,
        image: r.get(2)?,
        template: parse("sandbox template", &template)?,
        ports: parse("sandbox ports", &ports)?,
        pid: r.get(5)?,
        created_at: r.get(6)?,
        last_activity_at: r.get(7)?,
        exit_status: r.get(8)?,
        last_output: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

const DELIVERY_COLUMNS: &str = "id, receiver_id, received_at, verified_at, method, url, headers, body, remote_addr,
    idempotency_key, sandbox, status, plan, progress, attempts, last_error, next_attempt_at, trace, replay_of, updated_at,
    key_expires_at";

/// A delivery's JSON columns, encoded on the caller's thread so the single writer
/// spends its time on SQLite alone.
struct Encoded {
    headers: String,
    plan: String,
    trace: String,
}

impl Encoded {
    fn of(row: &DeliveryRow) -> Self {
        Self {
            headers: encode_headers(&row.headers),
            plan: json(&row.plan),
            trace: json(&row.trace),
        }
    }
}

const INSERT_DELIVERY: &str = "INSERT INTO deliveries (id, receiver_id, received_at, verified_at, method, url,
    headers, body, remote_addr, idempotency_key, sandbox, status, plan, progress, attempts, last_error,
    next_attempt_at, trace, replay_of, updated_at, key_expires_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)";

fn insert_delivery_row(c: &Connection, row: &DeliveryRow, enc: &Encoded) -> Result<()> {
    run(
        c,
        INSERT_DELIVERY,
        params![
            row.id,
            row.receiver_id,
            row.received_at,
            row.verified_at,
            row.method,
            row.url,
            enc.headers,
            row.body,
            row.remote_addr,
            row.idempotency_key,
            row.sandbox,
            row.status,
            enc.plan,
            i64::try_from(row.progress).unwrap_or(i64::MAX),
            row.attempts,
            row.last_error,
            row.next_attempt_at,
            enc.trace,
            row.replay_of,
            row.updated_at,
            row.key_expires_at
        ],
    )?;
    Ok(())
}

fn delivery_from_row(r: &rusqlite::Row<'_>) -> Result<DeliveryRow> {
    let headers: String = r.get(6)?;
    let plan: String = r.get(12)?;
    let trace: String = r.get(17)?;
    let progress: i64 = r.get(13)?;
    Ok(DeliveryRow {
        id: r.get(0)?,
        receiver_id: r.get(1)?,
        received_at: r.get(2)?,
        verified_at: r.get(3)?,
        method: r.get(4)?,
        url: r.get(5)?,
        headers: decode_headers(&headers)?,
        body: r.get(7)?,
        remote_addr: r.get(8)?,
        idempotency_key: r.get(9)?,
        sandbox: r.get(10)?,
        status: r.get(11)?,
        plan: parse("plan", &plan)?,
        progress: usize::try_from(progress).unwrap_or(0),
        attempts: r.get(14)?,
        last_error: r.get(15)?,
        next_attempt_at: r.get(16)?,
        trace: parse("trace", &trace)?,
        replay_of: r.get(18)?,
        updated_at: r.get(19)?,
        key_expires_at: r.get(20)?,
    })
}

/// The receivers whose ids `sql` selects, in its order.
fn receivers_where<P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
) -> Result<Vec<ReceiverRow>> {
    let ids: Vec<String> = c
        .prepare_cached(sql)?
        .query_map(params, |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = receiver_by_id(c, &id)? {
            out.push(row);
        }
    }
    Ok(out)
}

fn receiver_by_id(c: &Connection, id: &str) -> Result<Option<ReceiverRow>> {
    let row = cached_row(c,
            "SELECT id, name, status, config, created_at, updated_at, deleted_at FROM receivers WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((id, name, status, config, created_at, updated_at, deleted_at)) = row else {
        return Ok(None);
    };
    let mut stmt = c.prepare_cached("SELECT name, value FROM secrets WHERE receiver_id = ?1")?;
    let secrets = stmt
        .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(Some(ReceiverRow {
        config: parse("receiver config", &config)?,
        id,
        name,
        status,
        secrets,
        created_at,
        updated_at,
        deleted_at,
    }))
}

/// Copies the WAL back into the database every 200 ms without blocking writers
/// (PASSIVE). Ends when the last handle to the store is dropped.
fn checkpoint_loop(conn: Connection, store: std::sync::Weak<Mutex<Vec<Connection>>>) {
    while store.strong_count() > 0 {
        thread::sleep(std::time::Duration::from_millis(200));
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

/// Every row a cached query yields, each read by `read`.
fn rows<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
    read: fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(read(r)?);
    }
    Ok(out)
}

/// Runs a statement through the connection's statement cache: at thousands of
/// writes a second, parsing SQL anew for each was a tenth of the host's time.
fn run<P: rusqlite::Params>(c: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

fn cached_row<T, P, F>(c: &Connection, sql: &str, params: P, f: F) -> rusqlite::Result<T>
where
    P: rusqlite::Params,
    F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
{
    c.prepare_cached(sql)?.query_row(params, f)
}

/// The writer: batches queued jobs into one transaction per commit.
///
/// Optimistic: the batch runs in one transaction with no savepoints (they made
/// SQLite copy every touched page). If any job fails, the batch rolls back and each
/// job runs again alone in its own transaction, so one bad write cannot take the
/// others down. Jobs are re-runnable closures for exactly this.
fn writer_loop(conn: Connection, rx: mpsc::Receiver<Box<dyn Job>>, max_batch: usize) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("hookgate_commit_batch_size").record(batch.len() as f64);
        let started = std::time::Instant::now();
        let outcome = transaction(&conn, &mut batch);
        metrics::histogram!("hookgate_commit_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(true) => {
                for job in batch.drain(..) {
                    job.finish(Ok(()));
                }
            }
            Ok(false) => {
                // Someone failed: each job alone, its own result decides.
                for mut job in batch.drain(..) {
                    let alone = transaction(&conn, std::slice::from_mut(&mut job));
                    job.finish(alone.map(|_| ()).map_err(StoreError::from));
                }
            }
            Err(e) => {
                for job in batch.drain(..) {
                    job.finish(Err(StoreError::Corrupt(format!("commit failed: {e}"))));
                }
            }
        }
    }
}

/// Runs `jobs` in one transaction: commits if all succeed (`Ok(true)`), rolls back
/// if one fails (`Ok(false)`); `Err` if the transaction itself failed.
fn transaction(conn: &Connection, jobs: &mut [Box<dyn Job>]) -> rusqlite::Result<bool> {
    run(conn, "BEGIN IMMEDIATE", [])?;
    let mut all_ok = true;
    for job in jobs.iter_mut() {
        all_ok &= job.run(conn);
    }
    let end = if all_ok {
        run(conn, "COMMIT", [])
    } else {
        run(conn, "ROLLBACK", [])
    };
    if let Err(e) = end {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e);
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str, key: Option<(&str, i64)>) -> DeliveryRow {
        DeliveryRow {
            id: id.to_owned(),
            receiver_id: "rcv_1".to_owned(),
            received_at: 1,
            verified_at: Some(1),
            method: "POST".to_owned(),
            url: "http://h/hooks/rcv_1".to_owned(),
            headers: vec![
                ("x-bin".to_owned(), vec![0xff, 0x00]),
                ("x-text".to_owned(), b"v".to_vec()),
            ],
            body: vec![1, 2, 3],
            remote_addr: None,
            idempotency_key: key.map(|(k, _)| k.to_owned()),
            key_expires_at: key.map(|(_, e)| e),
            sandbox: Some("box".to_owned()),
            status: "pending".to_owned(),
            plan: Vec::new(),
            progress: 0,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
            trace: hookgate_core::explain::Trace::default(),
            replay_of: None,
            updated_at: 1,
        }
    }

    fn store(dir: &Path) -> Store {
        let settings = crate::settings::Settings::load(None, Vec::new()).unwrap();
        Store::open(dir, &settings).unwrap()
    }

    #[tokio::test]
    async fn live_keys_come_back_and_expired_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.insert_delivery(delivery("dlv_1", Some(("k1", 2000))))
            .await
            .unwrap();
        s.insert_delivery(delivery("dlv_2", Some(("k2", 5000))))
            .await
            .unwrap();
        s.insert_delivery(delivery("dlv_3", None)).await.unwrap();
        let keys = s.live_keys(3000).await.unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0].key.as_str(), keys[0].delivery_id.as_str()),
            ("k2", "dlv_2")
        );
        // Binary header values survive the round trip.
        let d = s.delivery("dlv_1".into()).await.unwrap().unwrap();
        assert_eq!(d.headers[0].1, vec![0xff, 0x00]);
        assert_eq!((d.body, d.key_expires_at), (vec![1, 2, 3], Some(2000)));
    }

    #[tokio::test]
    async fn one_failing_write_does_not_sink_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut tasks = Vec::new();
        for i in 0..20 {
            let s = s.clone();
            // Delivery "dup" is inserted twice: the primary key refuses the second.
            let id = if i % 10 == 0 {
                "dup".to_owned()
            } else {
                format!("d{i}")
            };
            tasks.push(tokio::spawn(async move {
                s.insert_delivery(delivery(&id, None)).await
            }));
        }
        let mut failed = 0;
        for t in tasks {
            if t.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 1);
        for i in (1..20).filter(|i| i % 10 != 0) {
            assert!(
                s.delivery(format!("d{i}")).await.unwrap().is_some(),
                "d{i} lost"
            );
        }
    }
}
