//! The migrations tested on real files: a fresh database, one hookgate 0.1.0 left
//! behind, one opened again, one from a newer release and one a migration refuses.

use std::path::PathBuf;

use super::*;

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("hookgate.db")
}

/// A database as hookgate 0.1.0 left it: migration 1's tables at version 0,
/// rows in each, the second delivery's status as given.
fn v1_database(path: &Path, status: &str) -> Connection {
    let c = Connection::open(path).unwrap();
    c.execute_batch(V1).unwrap();
    c.execute_batch(&format!(
        "INSERT INTO receivers VALUES ('rcv_1', 'gh', 'active', '{{}}', 1, 2, NULL),
                                      ('rcv_2', 'old', 'disabled', '{{}}', 1, 2, 3);
         INSERT INTO secrets VALUES ('rcv_1', 'github_webhook_secret', 's3cret');
         INSERT INTO deliveries (id, receiver_id, received_at, method, url, headers, body,
                                 status, plan, trace, updated_at)
           VALUES ('dlv_1', 'rcv_1', 1, 'POST', '/hooks/rcv_1', '[]', x'00ff', 'succeeded', '[]', '{{}}', 1),
                  ('dlv_2', 'rcv_1', 2, 'POST', '/hooks/rcv_1', '[]', x'', '{status}', '[]', '{{}}', 2);
         INSERT INTO sandboxes VALUES ('pr-1', 'failed', 'echo', '{{}}', '{{}}', 42, 1, 1, 'signal: 9', 'out', 1);
         INSERT INTO sandbox_events VALUES ('pr-1', 1, 'created', 'image echo');
         INSERT INTO plugins VALUES ('p', 'verifier', 'abc', x'0061736d', 50, 16, 1);"
    ))
    .unwrap();
    c
}

/// Every row of every table (rowid included where there is one), as text.
fn dump(c: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    for table in [
        "receivers",
        "secrets",
        "deliveries",
        "sandboxes",
        "sandbox_events",
        "plugins",
    ] {
        let rowid = if table == "secrets" {
            ""
        } else {
            "rowid || ' ' || "
        };
        let columns: Vec<String> = c
            .prepare("SELECT 'quote(' || name || ')' FROM pragma_table_info(?1) ORDER BY cid")
            .unwrap()
            .query_map([table], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let sql = format!(
            "SELECT '{table} ' || {rowid}{} FROM {table} ORDER BY 1",
            columns.join(" || ', ' || ")
        );
        let mut stmt = c.prepare(&sql).unwrap();
        out.extend(
            stmt.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap),
        );
    }
    out
}

fn user_version(c: &Connection) -> i64 {
    c.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

fn refused(c: &Connection, sql: &str) -> String {
    c.execute(sql, []).unwrap_err().to_string()
}

#[test]
fn a_fresh_database_gets_every_migration() {
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(db(&dir)).unwrap();
    assert_eq!(version(&c, &db(&dir)).unwrap(), 0);
    migrate(&c, &db(&dir)).unwrap();
    assert_eq!(user_version(&c), i64::from(LATEST));
    for t in &V2 {
        let check = format!("CHECK ({} IN ({}))", t.column, sql_list(t.allowed));
        assert!(t.create.contains(&check), "{} lacks {check}", t.table);
    }
    let err = refused(
        &c,
        "INSERT INTO sandboxes VALUES ('x', 'asleep', 'echo', '{}', '{}', NULL, 1, 1, NULL, NULL, 1)",
    );
    assert!(err.contains("CHECK constraint failed"), "{err}");
}

#[test]
fn a_v1_database_is_migrated_with_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let c = v1_database(&db(&dir), "pending");
    let before = dump(&c);
    assert_eq!((user_version(&c), version(&c, &db(&dir)).unwrap()), (0, 1));
    migrate(&c, &db(&dir)).unwrap();
    assert_eq!(
        (user_version(&c), version(&c, &db(&dir)).unwrap()),
        (i64::from(LATEST), LATEST)
    );
    // Every row as it was; secrets gain `sealed = 0` (the store seals them),
    // deliveries an empty `replay_key` and no kept credentials.
    let expected: Vec<String> = before
        .iter()
        .map(|r| {
            if r.starts_with("secrets ") {
                format!("{r}, 0")
            } else if r.starts_with("deliveries ") {
                format!("{r}, NULL, '[]'")
            } else {
                r.clone()
            }
        })
        .collect();
    assert_eq!(dump(&c), expected);
    let indexes: Vec<String> = c
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        indexes,
        [
            "deliveries_by_receiver",
            "deliveries_pending",
            "rejections_by_receiver",
            "sandbox_events_by_name"
        ]
    );
    let err = refused(
        &c,
        "UPDATE deliveries SET status = 'lost' WHERE id = 'dlv_1'",
    );
    assert!(err.contains("CHECK constraint failed"), "{err}");
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn opening_a_current_database_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    migrate(&v1_database(&db(&dir), "failed"), &db(&dir)).unwrap();
    let bytes = std::fs::read(db(&dir)).unwrap();
    let c = Connection::open(db(&dir)).unwrap();
    migrate(&c, &db(&dir)).unwrap();
    // A migration another process applied first is skipped, its transaction ended.
    apply(&c, &db(&dir), &MIGRATIONS[1]).unwrap();
    assert!(c.is_autocommit());
    drop(c);
    assert_eq!(std::fs::read(db(&dir)).unwrap(), bytes);
}

#[test]
fn a_newer_database_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    v1_database(&db(&dir), "pending")
        .pragma_update(None, "user_version", 7)
        .unwrap();
    let bytes = std::fs::read(db(&dir)).unwrap();
    let settings = crate::settings::Settings::load(None, Vec::new()).unwrap();
    let err = crate::store::Store::open(dir.path(), &settings).unwrap_err();
    assert!(matches!(
        err,
        StoreError::TooNew {
            found: 7,
            known: LATEST,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "the database at {} has schema version 7, but this hookgate knows versions up to {LATEST}: run a newer release",
            db(&dir).display()
        )
    );
    assert_eq!(std::fs::read(db(&dir)).unwrap(), bytes);
    assert!(!dir.path().join("hookgate.db-wal").exists());
}

#[test]
fn a_row_the_new_check_refuses_stops_migration_2_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let c = v1_database(&db(&dir), "lost");
    let before = dump(&c);
    let err = migrate(&c, &db(&dir)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "migrating the database at {} to schema version 2 (the schema checks the state columns): \
             table deliveries, row id = 'dlv_2': status is 'lost', expected one of 'pending', \
             'succeeded', 'failed', 'no_match'; correct or delete such rows and start again",
            db(&dir).display()
        )
    );
    // Rolled back: still version 1 with every row, and nothing checks yet.
    assert_eq!((user_version(&c), version(&c, &db(&dir)).unwrap()), (0, 1));
    assert_eq!(dump(&c), before);
}

/// The schema's checks and the code's enums name the same states: a state the
/// code can write is one the schema takes, and nothing else is.
#[test]
fn the_checks_allow_exactly_the_enums_states() {
    use crate::store::{DeliveryStatus, ReceiverStatus, SandboxState};
    let names = |all: Vec<&'static str>| all;
    let want = [
        (
            "receivers",
            names(vec![
                ReceiverStatus::Active.as_str(),
                ReceiverStatus::Disabled.as_str(),
            ]),
        ),
        (
            "deliveries",
            names(DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect()),
        ),
        (
            "sandboxes",
            names(SandboxState::ALL.iter().map(|s| s.as_str()).collect()),
        ),
    ];
    for (table, states) in want {
        let checked = V2.iter().find(|t| t.table == table).unwrap();
        assert_eq!(checked.allowed, states.as_slice(), "{table}");
        assert!(checked.create.contains(&format!(
            "CHECK ({} IN ({}))",
            checked.column,
            sql_list(&states)
        )));
    }
}

/// A newer release killed with writes still in its WAL: refusing it must not
/// fold the WAL into the file (closing a writable connection would).
#[test]
fn a_newer_database_with_a_pending_wal_is_left_as_it_is() {
    let live = tempfile::tempdir().unwrap();
    let c = v1_database(&db(&live), "pending");
    c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
        .unwrap();
    c.pragma_update(None, "user_version", 9).unwrap();
    c.execute_batch("UPDATE deliveries SET status = 'failed' WHERE id = 'dlv_1'")
        .unwrap();
    // Copy the files while the writer still holds them, as a crash leaves them.
    let dir = tempfile::tempdir().unwrap();
    let files = ["hookgate.db", "hookgate.db-wal", "hookgate.db-shm"];
    for f in files {
        std::fs::copy(live.path().join(f), dir.path().join(f)).unwrap();
    }
    drop(c);
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.path().join(f)).unwrap())
        .collect();
    assert!(!before[1].is_empty(), "the WAL holds the last writes");
    let settings = crate::settings::Settings::load(None, Vec::new()).unwrap();
    let err = crate::store::Store::open(dir.path(), &settings).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 9, .. }), "{err}");
    // The database and its WAL are as they were (the -shm file is only the
    // WAL's index in shared memory, which any reader rebuilds).
    for (f, bytes) in files.iter().zip(before).take(2) {
        assert!(
            std::fs::read(dir.path().join(f)).unwrap() == bytes,
            "{f} changed"
        );
    }
}

/// A table changed by hand (a column added) stops migration 2 rather than
/// losing the column in the copy.
#[test]
fn a_table_with_columns_of_its_own_stops_migration_2() {
    let dir = tempfile::tempdir().unwrap();
    let c = v1_database(&db(&dir), "pending");
    c.execute_batch("ALTER TABLE sandboxes ADD COLUMN note TEXT")
        .unwrap();
    let before = dump(&c);
    let err = migrate(&c, &db(&dir)).unwrap_err().to_string();
    assert!(
        err.contains("table sandboxes has the columns (") && err.contains("note"),
        "{err}"
    );
    assert_eq!(dump(&c), before);
}

/// Regression (the trust issue): receiver secrets sat in clear in the database.
/// Opening a store seals those an older release left in clear, under the data
/// directory's key, overwriting the clear pages; new ones are sealed as written.
#[tokio::test]
async fn secrets_are_sealed_at_rest_and_old_clear_ones_sealed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let c = v1_database(&db(&dir), "pending");
    // 0.1.0 rewrote secrets on each update, leaving the old values in free
    // pages; and it kept a deleted receiver's secrets.
    c.execute_batch(
        "INSERT INTO secrets VALUES ('rcv_1', 'rotated', 'first-clear-value');
         DELETE FROM secrets WHERE name = 'rotated';
         INSERT INTO secrets VALUES ('rcv_2', 'gone', 'deleted-clear-value');",
    )
    .unwrap();
    drop(c);
    let settings = crate::settings::Settings::load(None, Vec::new()).unwrap();
    let store = crate::store::Store::open(dir.path(), &settings).unwrap();
    let row = store.receiver("rcv_1".into()).await.unwrap().unwrap();
    assert_eq!(
        row.secrets,
        [("github_webhook_secret".to_owned(), "s3cret".to_owned())]
    );
    let mut fresh = row.clone();
    fresh.id = "rcv_9".into();
    fresh.secrets = vec![("other".into(), "second-s3cret-value".into())];
    store.put_receiver(fresh).await.unwrap();
    drop(store);
    let c = Connection::open(db(&dir)).unwrap();
    let stored: Vec<(String, i64)> = c
        .prepare("SELECT value, sealed FROM secrets ORDER BY receiver_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 2);
    for (value, sealed) in &stored {
        assert_eq!(*sealed, 1);
        assert!(!value.contains("s3cret"), "{value}");
    }
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    drop(c);
    let bytes = std::fs::read(db(&dir)).unwrap();
    for clear in [&b"s3cret"[..], b"first-clear-value", b"deleted-clear-value"] {
        assert!(
            !bytes.windows(clear.len()).any(|w| w == clear),
            "{} is left in clear in the database file",
            String::from_utf8_lossy(clear)
        );
    }
    let key = std::fs::read_to_string(dir.path().join("secrets.key")).unwrap();
    assert_eq!(key.trim().len(), 44, "base64 of 32 bytes");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Another key cannot open them, and says so.
    std::fs::write(
        dir.path().join("secrets.key"),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    )
    .unwrap();
    let store = crate::store::Store::open(dir.path(), &settings).unwrap();
    let err = store
        .receiver("rcv_1".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not open with this secrets key"), "{err}");
}

/// A sealing key that is not 32 bytes of base64, from the setting or the file,
/// stops the store with where it came from, and opens nothing.
#[test]
fn a_malformed_secrets_key_is_refused_with_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let bad = crate::settings::Settings::load(
        None,
        [("HOOKGATE_SECRETS_KEY".to_owned(), "c2hvcnQ=".to_owned())],
    )
    .unwrap();
    let err = crate::store::Store::open(dir.path(), &bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secrets_key (HOOKGATE_SECRETS_KEY): expected 32 bytes"),
        "{err}"
    );
    std::fs::write(dir.path().join("secrets.key"), "not base64 at all\n").unwrap();
    let settings = crate::settings::Settings::load(None, Vec::new()).unwrap();
    let err = crate::store::Store::open(dir.path(), &settings)
        .unwrap_err()
        .to_string();
    assert!(err.contains("secrets.key: expected 32 bytes"), "{err}");
}
