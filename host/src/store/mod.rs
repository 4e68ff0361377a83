//! The durable store: SQLite in the data directory, written with group commit.
//!
//! Every write goes through one writer thread that owns the only writing
//! connection ([`writer`]). It takes whatever writes are queued — up to
//! `storage.max_batch` — runs them one after another in one transaction, commits
//! once (one fsync of the WAL for the whole batch) and only then answers each
//! caller. So a 202 is never sent for a write that is not on disk, and 32
//! concurrent deliveries cost one fsync, not 32. The batch has no savepoints (they
//! made SQLite copy every touched page): if one write fails, the whole batch rolls
//! back and each write runs again alone in a transaction of its own, so a bad
//! write fails its own caller and nobody else. Writes are closures that may run
//! twice for exactly this.
//!
//! Reads run on a small pool of read-only connections in `spawn_blocking`; WAL
//! mode lets them proceed while the writer commits. Dedupe keys are columns of
//! their delivery; the index over them lives in memory (see `dedupe`).
//!
//! The database carries its schema version (`PRAGMA user_version`); opening it
//! applies the numbered migrations it has not had yet and refuses one newer than
//! this build ([`schema`]). The queries live by table: [`receivers`] (with
//! [`secrets`], written beside them), [`deliveries`], [`sandboxes`], [`plugins`].
//! This file holds what they share: the [`Store`] handle with its `read` and
//! `write` entry points, the errors and the row types.
//!
//! rusqlite rather than sqlx: group commit is "run these N closures in
//! one transaction on one thread", which a synchronous connection on a dedicated
//! thread expresses directly; sqlx's async connections cannot lend themselves to a
//! batch of boxed closures without borrowing across awaits.

mod deliveries;
mod plugins;
mod receivers;
mod rejections;
mod sandboxes;
mod schema;
mod secrets;
mod states;
mod writer;

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::settings::{Settings, Synchronous};

pub use deliveries::decode_headers;
pub use hookgate_core::config::Status as ReceiverStatus;
pub use rejections::RejectionRow;
pub use states::{DeliveryStatus, SandboxState};

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
    /// The database was written by a newer hookgate; nothing in it was changed.
    #[error(
        "the database at {path} has schema version {found}, but this hookgate knows versions up to {known}: run a newer release"
    )]
    TooNew {
        path: String,
        found: i64,
        known: u32,
    },
    /// A migration failed and was rolled back: the database is as it was before it.
    #[error("migrating the database at {path} to schema version {version} ({what}): {reason}")]
    Migration {
        path: String,
        version: u32,
        what: &'static str,
        reason: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A sandbox as the local plane records it.
#[derive(Debug, Clone)]
pub struct SandboxRow {
    pub name: String,
    pub state: SandboxState,
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
    pub status: ReceiverStatus,
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
    /// The request as it arrived.
    pub request: StoredRequest,
    pub idempotency_key: Option<String>,
    /// The hash of its signed bytes, for presets that sign no timestamp or id:
    /// a second key, against replays under a fresh delivery id.
    pub replay_key: Option<String>,
    /// Until when its keys dedupe (the receiver's retention).
    pub key_expires_at: Option<i64>,
    pub sandbox: Option<String>,
    pub status: DeliveryStatus,
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
    /// Credential headers kept in clear because an action asks for them by
    /// `forward_headers` (lowercase): hidden by the API, and forwarded only
    /// to an action that lists them.
    pub kept_credentials: Vec<String>,
}

impl DeliveryRow {
    /// A delivery just accepted: `pending` with actions to run, or `no_match`.
    pub fn accepted(
        id: String,
        receiver_id: String,
        received_at: i64,
        request: StoredRequest,
        sandbox: Option<String>,
        plan: Vec<PlannedAction>,
        trace: hookgate_core::explain::Trace,
    ) -> Self {
        let status = if plan.is_empty() {
            DeliveryStatus::NoMatch
        } else {
            DeliveryStatus::Pending
        };
        Self {
            id,
            receiver_id,
            received_at,
            request,
            idempotency_key: None,
            replay_key: None,
            key_expires_at: None,
            sandbox,
            status,
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
    pub status: DeliveryStatus,
    pub progress: usize,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub trace: hookgate_core::explain::Trace,
}

#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Box<dyn writer::Job>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: Arc<std::path::PathBuf>,
    /// Seals and opens secret values (see `secrets`).
    sealer: Arc<hookgate_core::seal::Sealer>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Creates the database file owner-only (0600) before SQLite first opens it,
/// or makes an existing one so (an older release left it 0644). SQLite gives
/// its `-wal` and `-shm` files the database file's mode.
fn private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                for suffix in ["-wal", "-shm"] {
                    let mut name = path.as_os_str().to_owned();
                    name.push(suffix);
                    match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The key secrets are sealed under: `HOOKGATE_SECRETS_KEY` (`secrets_key`,
/// base64 of 32 bytes), else `<data_dir>/secrets.key`, created 0600 at first
/// start from the OS random source. Losing it loses the secrets (receivers then
/// fail to load with a message saying so), so back it up apart from the data.
fn sealing_key(data_dir: &Path, settings: &Settings) -> Result<hookgate_core::seal::Sealer> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    let invalid = |from: &str| {
        StoreError::Corrupt(format!(
            "{from}: expected 32 bytes, base64 (head -c 32 /dev/urandom | base64)"
        ))
    };
    if !settings.secrets_key.is_empty() {
        return hookgate_core::seal::Sealer::from_base64(&settings.secrets_key)
            .ok_or_else(|| invalid("secrets_key (HOOKGATE_SECRETS_KEY)"));
    }
    let path = data_dir.join("secrets.key");
    let io = |e: std::io::Error| StoreError::Corrupt(format!("{}: {e}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(text) => hookgate_core::seal::Sealer::from_base64(&text)
            .ok_or_else(|| invalid(&path.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key)
                .map_err(|e| StoreError::Corrupt(format!("random key: {e}")))?;
            // Written whole and durable under another name, then linked into
            // place: a crash never leaves an empty key, and of two hosts
            // starting at once the second reads the first's.
            let tmp = data_dir.join(format!("secrets.key.{}.tmp", std::process::id()));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(&tmp).map_err(io)?;
            std::io::Write::write_all(&mut f, format!("{}\n", B64.encode(key)).as_bytes())
                .map_err(io)?;
            f.sync_all().map_err(io)?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    std::fs::File::open(data_dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io)?;
                    hookgate_core::seal::Sealer::from_bytes(&key)
                        .ok_or_else(|| invalid("the new key"))
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    sealing_key(data_dir, settings)
                }
                Err(e) => Err(io(e)),
            }
        }
        Err(e) => Err(io(e)),
    }
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/hookgate.db`, brings its schema up
    /// to date and starts the writer.
    pub fn open(data_dir: &Path, settings: &Settings) -> Result<Self> {
        let path = data_dir.join("hookgate.db");
        let open = |flags| {
            Connection::open_with_flags(&path, flags).map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })
        };
        // A database from a newer hookgate is refused as it is, read through a
        // read-only connection: closing a writable one would fold a pending WAL
        // into the file (and switching to WAL rewrites the header).
        if path.exists() {
            // A reader of a WAL database creates the -wal and -shm files when
            // they are missing; a refused database is left without them, as found.
            let sidecars: Vec<_> = ["-wal", "-shm"]
                .iter()
                .map(|suffix| {
                    let mut name = path.clone().into_os_string();
                    name.push(suffix);
                    std::path::PathBuf::from(name)
                })
                .filter(|p| !p.exists())
                .collect();
            let probe = open(OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            probe.execute_batch("PRAGMA busy_timeout = 5000;")?;
            let checked = schema::version(&probe, &path);
            drop(probe);
            if checked.is_err() {
                for created in sidecars {
                    let _ = std::fs::remove_file(created);
                }
            }
            checked?;
        }
        private(&path)
            .map_err(|e| StoreError::Corrupt(format!("making {} 0600: {e}", path.display())))?;
        let writer_conn = open(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        writer_conn.execute_batch("PRAGMA busy_timeout = 5000;")?;
        schema::version(&writer_conn, &path)?;
        let sync = match settings.storage.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        writer_conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};"
        ))?;
        schema::migrate(&writer_conn, &path)?;
        // Overwrite what is deleted or replaced, so a secret sealed in place
        // leaves no clear copy in a free page.
        writer_conn.execute_batch("PRAGMA secure_delete = ON;")?;
        let sealer = Arc::new(sealing_key(data_dir, settings)?);
        let sealed = secrets::seal_legacy(&writer_conn, &sealer)?;
        if sealed > 0 {
            tracing::info!(
                secrets = sealed,
                "secrets stored in clear by an older release are sealed now"
            );
        }
        // Checkpoints run on their own thread (see `writer`), not inside a commit:
        // an automatic checkpoint stalls every write queued behind it.
        writer_conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        let checkpointer = open(OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        checkpointer.execute_batch("PRAGMA busy_timeout = 5000;")?;
        let mut readers = Vec::new();
        for _ in 0..4 {
            let c = open(OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            c.execute_batch("PRAGMA busy_timeout = 5000;")?;
            readers.push(c);
        }
        let writer = writer::start(writer_conn, settings.storage.max_batch)?;
        let readers = Arc::new(Mutex::new(readers));
        writer::start_checkpoints(checkpointer, Arc::downgrade(&readers))?;
        Ok(Self {
            writer,
            readers,
            path: Arc::new(path),
            sealer,
        })
    }

    /// Runs `f` in the next group commit; resolves once the batch is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(writer::job(f, reply))
            .map_err(|_| StoreError::WriterGone)?;
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
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
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

/// A store in `dir`, with the default settings, for the per-table tests.
#[cfg(test)]
fn test_store(dir: &Path) -> Store {
    let settings = crate::settings::Settings::load(None, Vec::new()).unwrap();
    Store::open(dir, &settings).unwrap()
}
