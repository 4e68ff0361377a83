//! The schema: every table and index the store uses, in one place.
//!
//! The queries are spread over one file per table; what the columns are is here,
//! so a reader (or a migration) sees the whole database at once.

use rusqlite::Connection;

use super::Result;

/// Every table, created at every start if it is missing.
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

pub(super) fn create(c: &Connection) -> Result<()> {
    Ok(c.execute_batch(SCHEMA)?)
}
