//! The schema and its migrations: how a database of any earlier release becomes
//! one this build can use, and why one from a later release is left alone.
//!
//! The database carries its version in `PRAGMA user_version`. Migrations are
//! numbered from 1 and only ever appended; opening the store applies, in order,
//! each one the database has not had, each in its own `BEGIN IMMEDIATE`
//! transaction that also sets `user_version`, so a crash or a failure leaves the
//! database at the last version that committed, never half way. hookgate 0.1.0
//! had no versions: it created its tables (migration 1, kept here verbatim) and
//! left `user_version` at 0, so a database with those tables and version 0 is
//! version 1. A database newer than [`LATEST`] is refused before anything
//! touches it: an older binary cannot know what a newer schema means.
//!
//! SQLite cannot add a constraint to an existing column, so a migration that
//! does rebuilds the table by SQLite's procedure (create the new table, copy,
//! drop, rename, recreate the indexes; <https://www.sqlite.org/lang_altertable.html>),
//! inside the migration's transaction. Rows the new constraint would refuse stop
//! the migration with their table, key and value named, rather than being dropped.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::{Result, StoreError};

/// The newest schema version this build knows.
pub(super) const LATEST: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// One step of the schema's history.
struct Migration {
    /// The version a database has once this step has committed.
    version: u32,
    /// What it does, for the log and for the error if it fails.
    what: &'static str,
    apply: fn(&Connection) -> Result<(), Refusal>,
}

const MIGRATIONS: [Migration; 6] = [
    Migration {
        version: 1,
        what: "the tables of hookgate 0.1.0",
        apply: v1,
    },
    Migration {
        version: 2,
        what: "the schema checks the state columns",
        apply: v2,
    },
    Migration {
        version: 3,
        what: "the rejected requests of each receiver",
        apply: v3,
    },
    Migration {
        version: 4,
        what: "secrets sealed at rest",
        apply: v4,
    },
    Migration {
        version: 5,
        what: "a second dedupe key: the signed bytes, against replays",
        apply: v5,
    },
    Migration {
        version: 6,
        what: "the credential headers a delivery keeps for its forwards",
        apply: v6,
    },
];

/// Why a migration stopped; it becomes [`StoreError::Migration`].
struct Refusal(String);

impl From<rusqlite::Error> for Refusal {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string())
    }
}

/// The database's schema version, refusing one newer than [`LATEST`]. Reads only.
pub(super) fn version(c: &Connection, path: &Path) -> Result<u32> {
    let found: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found == 0 {
        // hookgate 0.1.0 created every table at once and never set a version.
        let tables: bool = c.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'receivers')",
            [],
            |r| r.get(0),
        )?;
        return Ok(u32::from(tables));
    }
    match u32::try_from(found) {
        Ok(v) if v <= LATEST => Ok(v),
        _ => Err(StoreError::TooNew {
            path: path.display().to_string(),
            found,
            known: LATEST,
        }),
    }
}

/// Applies every migration the database has not had, in order.
pub(super) fn migrate(c: &Connection, path: &Path) -> Result<()> {
    for m in &MIGRATIONS {
        if version(c, path)? < m.version {
            apply(c, path, m)?;
        }
    }
    Ok(())
}

/// Runs one migration and records its version, in one transaction.
fn apply(c: &Connection, path: &Path, m: &Migration) -> Result<()> {
    let failed = |reason: String| StoreError::Migration {
        path: path.display().to_string(),
        version: m.version,
        what: m.what,
        reason,
    };
    c.execute_batch("BEGIN IMMEDIATE")?;
    let outcome = match version(c, path) {
        // Another hookgate on the same directory got here first.
        Ok(v) if v >= m.version => Ok(false),
        Ok(_) => (m.apply)(c)
            .and_then(|()| Ok(c.pragma_update(None, "user_version", m.version)?))
            .and_then(|()| Ok(c.execute_batch("COMMIT")?))
            .map(|()| true)
            .map_err(|Refusal(reason)| failed(reason)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(true) => {
            tracing::info!(version = m.version, what = m.what, "database migrated");
            Ok(())
        }
        Ok(false) => Ok(c.execute_batch("ROLLBACK")?),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// hookgate 0.1.0's schema, exactly as it shipped (hence `IF NOT EXISTS`).
const V1: &str = r#"
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

fn v1(c: &Connection) -> Result<(), Refusal> {
    Ok(c.execute_batch(V1)?)
}

/// A table rebuilt with a CHECK on one column: the values the code writes there.
struct Checked {
    table: &'static str,
    /// The column that names a row in an error.
    key: &'static str,
    column: &'static str,
    allowed: &'static [&'static str],
    /// The new table as `<table>_new`: the old one's columns, in order, checked.
    create: &'static str,
}

/// Migration 2: every state column holds only the values the host writes
/// (deliveries: `DeliveryRow::accepted` and the runner; receivers: `api`, where a
/// deleted receiver keeps its status and sets `deleted_at`; sandboxes:
/// `sandbox::local`).
const V2: [Checked; 3] = [
    Checked {
        table: "receivers",
        key: "id",
        column: "status",
        allowed: &["active", "disabled"],
        create: "CREATE TABLE receivers_new (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    config      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted_at  INTEGER
)",
    },
    Checked {
        table: "deliveries",
        key: "id",
        column: "status",
        allowed: &["pending", "succeeded", "failed", "no_match"],
        create: "CREATE TABLE deliveries_new (
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
    status          TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'no_match')),
    plan            TEXT NOT NULL,
    progress        INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at INTEGER,
    trace           TEXT NOT NULL,
    replay_of       TEXT,
    updated_at      INTEGER NOT NULL
)",
    },
    Checked {
        table: "sandboxes",
        key: "name",
        column: "state",
        allowed: &["running", "paused", "deleted", "failed"],
        create: "CREATE TABLE sandboxes_new (
    name             TEXT PRIMARY KEY,
    state            TEXT NOT NULL CHECK (state IN ('running', 'paused', 'deleted', 'failed')),
    image            TEXT NOT NULL,
    template         TEXT NOT NULL,
    ports            TEXT NOT NULL,
    pid              INTEGER,
    created_at       INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL,
    exit_status      TEXT,
    last_output      TEXT,
    updated_at       INTEGER NOT NULL
)",
    },
];

fn v2(c: &Connection) -> Result<(), Refusal> {
    V2.iter().try_for_each(|t| rebuild(c, t))
}

/// Migration 3: the last rejected requests of each receiver, for the operator.
/// The path only, never the query, which may carry a credential.
const V3: &str = "
CREATE TABLE rejections (
    id          INTEGER PRIMARY KEY,
    receiver_id TEXT NOT NULL,
    at          INTEGER NOT NULL,
    remote_addr TEXT,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    status      INTEGER NOT NULL,
    code        TEXT NOT NULL,
    failed      TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX rejections_by_receiver ON rejections (receiver_id, id);
";

fn v3(c: &Connection) -> Result<(), Refusal> {
    Ok(c.execute_batch(V3)?)
}

/// Migration 4: whether each secret is sealed. Rows from before are in clear
/// (`sealed = 0`); the store seals them at start, with its key, which a
/// migration does not have.
fn v4(c: &Connection) -> Result<(), Refusal> {
    Ok(c.execute_batch(
        "ALTER TABLE secrets ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0 CHECK (sealed IN (0, 1));",
    )?)
}

/// Migration 5: a delivery's replay key (see `idempotency::replay_key` in core),
/// live as long as its idempotency key.
fn v5(c: &Connection) -> Result<(), Refusal> {
    Ok(c.execute_batch("ALTER TABLE deliveries ADD COLUMN replay_key TEXT;")?)
}

/// Migration 6: which credential headers a delivery kept in clear (a JSON list
/// of names) because an action forwards them.
fn v6(c: &Connection) -> Result<(), Refusal> {
    Ok(c.execute_batch(
        "ALTER TABLE deliveries ADD COLUMN kept_credentials TEXT NOT NULL DEFAULT '[]';",
    )?)
}

/// `'a', 'b'`: the allowed values as an SQL list.
fn sql_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    quoted.join(", ")
}

/// Rebuilds `t.table` as `t.create`, keeping every row (and its rowid) and the
/// table's indexes and triggers. The caller holds the transaction; the schema has
/// no views or foreign keys, so those steps of SQLite's procedure do nothing here.
fn rebuild(c: &Connection, t: &Checked) -> Result<(), Refusal> {
    let Checked {
        table, key, column, ..
    } = t;
    // The CHECK would refuse such a row with a message naming neither it nor its
    // value; name both first.
    let refused = format!("{column} NOT IN ({})", sql_list(t.allowed));
    let first: Option<(String, String)> = c
        .query_row(
            &format!("SELECT quote({key}), quote({column}) FROM {table} WHERE {refused} ORDER BY {key} LIMIT 1"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((row, value)) = first {
        let count: i64 = c.query_row(
            &format!("SELECT count(*) FROM {table} WHERE {refused}"),
            [],
            |r| r.get(0),
        )?;
        let others = match count - 1 {
            0 => String::new(),
            n => format!(" ({n} more rows like it)"),
        };
        return Err(Refusal(format!(
            "table {table}, row {key} = {row}: {column} is {value}, expected one of {}{others}; \
             correct or delete such rows and start again",
            sql_list(t.allowed)
        )));
    }
    let extras: Vec<String> = c
        .prepare("SELECT sql FROM sqlite_schema WHERE tbl_name = ?1 AND type IN ('index', 'trigger') AND sql IS NOT NULL")?
        .query_map([table], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    c.execute_batch(t.create)?;
    let columns_of = |name: &str| -> rusqlite::Result<Vec<String>> {
        c.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?
            .query_map([name], |r| r.get(0))?
            .collect()
    };
    let columns = columns_of(&format!("{table}_new"))?;
    // Copying by the new table's columns would drop any the old one has beyond
    // them (added by hand, say): refuse rather than lose them.
    let old = columns_of(table)?;
    if old != columns {
        return Err(Refusal(format!(
            "table {table} has the columns ({}), expected ({}); it was changed outside hookgate",
            old.join(", "),
            columns.join(", ")
        )));
    }
    let columns = columns.join(", ");
    c.execute_batch(&format!(
        "INSERT INTO {table}_new (rowid, {columns}) SELECT rowid, {columns} FROM {table};
         DROP TABLE {table};
         ALTER TABLE {table}_new RENAME TO {table};"
    ))?;
    for sql in extras {
        c.execute_batch(&sql)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
