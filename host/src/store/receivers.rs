//! The receivers table: each receiver's name, status and config, by id.
//!
//! A receiver is written whole (an upsert of the row and its secrets in one
//! write) and deleted softly: `deleted_at` is set and the row stays, because its
//! deliveries outlive it and the edge must be told it is gone. Listings read ids
//! first and then each receiver by id, so one function turns a row into a
//! [`ReceiverRow`] for every query here.

use std::sync::Arc;

use hookgate_core::seal::Sealer;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    ReceiverRow, ReceiverStatus, Result, Store, StoreError, cached_row, json, parse, run, secrets,
};

impl Store {
    pub async fn put_receiver(&self, row: ReceiverRow) -> Result<()> {
        let sealer = Arc::clone(&self.sealer);
        self.write(move |c| {
            run(c,
                "INSERT INTO receivers (id, name, status, config, created_at, updated_at, deleted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name, status = excluded.status,
                   config = excluded.config, updated_at = excluded.updated_at, deleted_at = excluded.deleted_at",
                params![row.id, row.name, row.status.as_str(), json(&row.config), row.created_at, row.updated_at, row.deleted_at],
            )?;
            // A deleted receiver's secrets go with it, in the same write; its
            // row stays, secret-free, for the history of its deliveries.
            let secrets: &[(String, String)] = if row.deleted_at.is_some() {
                &[]
            } else {
                &row.secrets
            };
            if row.deleted_at.is_some() {
                run(c, "DELETE FROM rejections WHERE receiver_id = ?1", params![row.id])?;
            }
            secrets::replace(c, &sealer, &row.id, secrets)
        })
        .await
    }

    pub async fn receiver(&self, id: String) -> Result<Option<ReceiverRow>> {
        let sealer = Arc::clone(&self.sealer);
        self.read(move |c| receiver_by_id(c, &sealer, &id)).await
    }

    /// Receivers not deleted, newest first, one page; and the total.
    pub async fn receivers(&self, page: u32, limit: u32) -> Result<(Vec<ReceiverRow>, u64)> {
        let sealer = Arc::clone(&self.sealer);
        self.read(move |c| {
            let total: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM receivers WHERE deleted_at IS NULL")?
                .query_row([], |r| r.get(0))?;
            let out = receivers_where(
                c,
                &sealer,
                "SELECT id FROM receivers WHERE deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT ?1 OFFSET ?2",
                params![limit, u64::from(page.saturating_sub(1)) * u64::from(limit)],
            )?;
            Ok((out, u64::try_from(total).unwrap_or(0)))
        })
        .await
    }

    /// Receivers deleted at or after `since` (epoch milliseconds).
    pub async fn receivers_deleted_since(&self, since: i64) -> Result<Vec<ReceiverRow>> {
        let sealer = Arc::clone(&self.sealer);
        self.read(move |c| {
            receivers_where(
                c,
                &sealer,
                "SELECT id FROM receivers WHERE deleted_at IS NOT NULL AND deleted_at >= ?1",
                params![since],
            )
        })
        .await
    }

    /// Every receiver that is not deleted, for the receiver cache.
    pub async fn live_receivers(&self) -> Result<Vec<ReceiverRow>> {
        let sealer = Arc::clone(&self.sealer);
        self.read(move |c| {
            receivers_where(
                c,
                &sealer,
                "SELECT id FROM receivers WHERE deleted_at IS NULL",
                [],
            )
        })
        .await
    }
}

/// The receivers whose ids `sql` selects, in its order.
fn receivers_where<P: rusqlite::Params>(
    c: &Connection,
    sealer: &Sealer,
    sql: &str,
    params: P,
) -> Result<Vec<ReceiverRow>> {
    let ids: Vec<String> = c
        .prepare_cached(sql)?
        .query_map(params, |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = receiver_by_id(c, sealer, &id)? {
            out.push(row);
        }
    }
    Ok(out)
}

fn receiver_by_id(c: &Connection, sealer: &Sealer, id: &str) -> Result<Option<ReceiverRow>> {
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
    let secrets = secrets::of(c, sealer, &id)?;
    let status = ReceiverStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("receiver {id}: unknown status {status:?}")))?;
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
