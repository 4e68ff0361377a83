//! The secrets table: a receiver's secret values, by name, apart from its config.
//!
//! A receiver's stored config names its secrets (`{"secret_ref": name}`) and never
//! holds their values, so the config can be shown and logged as it is; the
//! values live here, one row per (receiver, name), and leave the store only in
//! [`ReceiverRow::secrets`](super::ReceiverRow), for the verifiers and the edge
//! push. They are written with their receiver, in the same write (see
//! `receivers`), so a receiver and its secrets never disagree, and purged in
//! the write that deletes it. Every value is sealed (AES-256-GCM, core's
//! `seal`) under the key in `<data_dir>/secrets.key` or `HOOKGATE_SECRETS_KEY`,
//! so the database and its backups hold no secret in clear.

use rusqlite::{Connection, params};

use hookgate_core::seal::Sealer;

use super::{Result, StoreError, run};

/// Replaces a receiver's secrets with `secrets`, sealed; part of the
/// receiver's write.
pub(super) fn replace(
    c: &Connection,
    sealer: &Sealer,
    receiver_id: &str,
    secrets: &[(String, String)],
) -> Result<()> {
    run(
        c,
        "DELETE FROM secrets WHERE receiver_id = ?1",
        params![receiver_id],
    )?;
    for (name, value) in secrets {
        run(
            c,
            "INSERT INTO secrets (receiver_id, name, value, sealed) VALUES (?1, ?2, ?3, 1)",
            params![receiver_id, name, seal(sealer, value)?],
        )?;
    }
    Ok(())
}

/// A receiver's secrets as (name, value), opened.
pub(super) fn of(
    c: &Connection,
    sealer: &Sealer,
    receiver_id: &str,
) -> Result<Vec<(String, String)>> {
    let mut stmt =
        c.prepare_cached("SELECT name, value FROM secrets WHERE receiver_id = ?1 AND sealed = 1")?;
    let sealed: Vec<(String, String)> = stmt
        .query_map(params![receiver_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    sealed
        .into_iter()
        .map(|(name, value)| {
            let plain = sealer.open(&value).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "secret {name} of receiver {receiver_id} does not open with this secrets key \
                     (was secrets.key or HOOKGATE_SECRETS_KEY changed?)"
                ))
            })?;
            Ok((name, plain))
        })
        .collect()
}

/// Seals every secret a release before sealing stored in clear; at start,
/// before anything reads them. With `secure_delete` on, the clear values'
/// pages are overwritten, not just freed.
pub(super) fn seal_legacy(c: &Connection, sealer: &Sealer) -> Result<usize> {
    // A release before this one kept a deleted receiver's secrets: gone first.
    let purged = run(
        c,
        "DELETE FROM secrets WHERE receiver_id IN (SELECT id FROM receivers WHERE deleted_at IS NOT NULL)",
        [],
    )?;
    let clear: Vec<(String, String, String)> = c
        .prepare("SELECT receiver_id, name, value FROM secrets WHERE sealed = 0")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    if clear.is_empty() && purged == 0 {
        return Ok(0);
    }
    c.execute_batch("BEGIN IMMEDIATE")?;
    let sealed = (|| {
        for (receiver_id, name, value) in &clear {
            run(
                c,
                "UPDATE secrets SET value = ?3, sealed = 1 WHERE receiver_id = ?1 AND name = ?2",
                params![receiver_id, name, seal(sealer, value)?],
            )?;
        }
        Ok::<_, StoreError>(())
    })();
    match sealed {
        Ok(()) => c.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    // That release rewrote secrets on every update, leaving old values in free
    // pages and WAL frames: rewrite the file without them, once.
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(clear.len() + purged)
}

fn seal(sealer: &Sealer, value: &str) -> Result<String> {
    sealer
        .seal(nonce(), value)
        .ok_or_else(|| StoreError::Corrupt("sealing a secret failed".into()))
}

/// 12 bytes from the OS: a nonce never repeats under one key.
fn nonce() -> [u8; 12] {
    let mut n = [0u8; 12];
    // The OS random source failing is not recoverable in any useful way.
    getrandom::fill(&mut n).expect("the operating system's random source failed");
    n
}
