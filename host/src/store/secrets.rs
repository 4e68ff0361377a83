//! The secrets table: a receiver's secret values, by name, apart from its config.
//!
//! A receiver's stored config names its secrets (`{"secret_ref": name}`) and never
//! holds their values, so the config can be shown and logged as it is; the
//! values live here, one row per (receiver, name), and leave the store only in
//! [`ReceiverRow::secrets`](super::ReceiverRow), for the verifiers and the edge
//! push. They are written with their receiver, in the same write (see
//! `receivers`), so a receiver and its secrets never disagree, and purged in
//! the write that deletes it.

use rusqlite::{Connection, params};

use super::{Result, run};

/// Replaces a receiver's secrets with `secrets`; part of the receiver's write.
pub(super) fn replace(
    c: &Connection,
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
            "INSERT INTO secrets (receiver_id, name, value) VALUES (?1, ?2, ?3)",
            params![receiver_id, name, value],
        )?;
    }
    Ok(())
}

/// A receiver's secrets as (name, value).
pub(super) fn of(c: &Connection, receiver_id: &str) -> Result<Vec<(String, String)>> {
    let mut stmt = c.prepare_cached("SELECT name, value FROM secrets WHERE receiver_id = ?1")?;
    let secrets = stmt
        .query_map(params![receiver_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(secrets)
}
