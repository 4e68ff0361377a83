//! The deliveries table: every request a receiver accepted, with its frozen plan,
//! the runner's progress on it and its trace.
//!
//! A delivery is inserted once, at accept time, and then only its progress
//! columns change (`save_progress`). Its dedupe key is a column of its own row, so
//! a key is durable exactly when its delivery is, in the same commit. JSON columns
//! (headers, plan, trace) are encoded on the caller's thread before the write is
//! queued, so the single writer spends its time on SQLite alone; headers that are
//! not UTF-8 are kept as base64 ([`StoredValue`]).

use rusqlite::{Connection, params};

use super::{
    DeliveryRow, DeliveryStatus, LiveKey, Progress, Result, Store, StoreError, StoredRequest,
    StoredValue, cached_row, json, parse, rows, run,
};

/// A delivery's keys as `live_keys` reads them: receiver, idempotency key,
/// replay key, delivery id, expiry.
type KeyedRow = (String, Option<String>, Option<String>, String, i64);

impl Store {
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
                "SELECT receiver_id, idempotency_key, replay_key, id, key_expires_at FROM deliveries
                 WHERE id >= ?2 AND (idempotency_key IS NOT NULL OR replay_key IS NOT NULL)
                   AND key_expires_at > ?1 ORDER BY id",
            )?;
            let found: Vec<KeyedRow> = stmt
                .query_map(params![now, floor], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<_, _>>()?;
            Ok(found
                .into_iter()
                .flat_map(|(receiver_id, key, replay, delivery_id, expires_at)| {
                    [key, replay].into_iter().flatten().map(move |key| LiveKey {
                        receiver_id: receiver_id.clone(),
                        key,
                        delivery_id: delivery_id.clone(),
                        expires_at,
                    })
                })
                .collect())
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
        status: Option<DeliveryStatus>,
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

    /// Every delivery with actions still to run, oldest first, as (id,
    /// sandbox): the runner loads each one when its turn comes, so a long
    /// backlog costs its ids at start, not its bodies.
    pub async fn pending(&self) -> Result<Vec<(String, Option<String>)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, sandbox FROM deliveries WHERE status = 'pending' ORDER BY id",
            )?;
            let out = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(out)
        })
        .await
    }

    /// Deletes at most `batch` deliveries received before `before` (Unix ms)
    /// that are done (not pending) and whose dedupe key no longer dedupes at
    /// `now`; returns how many. Ids sort by time, so "before" is an id range.
    pub async fn prune_deliveries(&self, before: i64, now: i64, batch: u32) -> Result<usize> {
        let floor = crate::ids::delivery_id_at(before);
        self.write(move |c| {
            Ok(run(
                c,
                "DELETE FROM deliveries WHERE id IN (
                   SELECT id FROM deliveries WHERE id < ?1 AND status != 'pending'
                     AND (key_expires_at IS NULL OR key_expires_at <= ?2)
                   ORDER BY id LIMIT ?3)",
                params![floor, now, batch],
            )?)
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

const DELIVERY_COLUMNS: &str = "id, receiver_id, received_at, verified_at, method, url, headers, body, remote_addr,
    idempotency_key, sandbox, status, plan, progress, attempts, last_error, next_attempt_at, trace, replay_of, updated_at,
    key_expires_at, replay_key, kept_credentials";

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
            headers: encode_headers(&row.request.headers),
            plan: json(&row.plan),
            trace: json(&row.trace),
        }
    }
}

const INSERT_DELIVERY: &str = "INSERT INTO deliveries (id, receiver_id, received_at, verified_at, method, url,
    headers, body, remote_addr, idempotency_key, sandbox, status, plan, progress, attempts, last_error,
    next_attempt_at, trace, replay_of, updated_at, key_expires_at, replay_key, kept_credentials)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)";

fn insert_delivery_row(c: &Connection, row: &DeliveryRow, enc: &Encoded) -> Result<()> {
    run(
        c,
        INSERT_DELIVERY,
        params![
            row.id,
            row.receiver_id,
            row.received_at,
            row.request.verified_at,
            row.request.method,
            row.request.url,
            enc.headers,
            row.request.body,
            row.request.remote_addr,
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
            row.key_expires_at,
            row.replay_key,
            json(&row.request.kept_credentials)
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
        request: StoredRequest {
            verified_at: r.get(3)?,
            method: r.get(4)?,
            url: r.get(5)?,
            headers: decode_headers(&headers)?,
            body: r.get(7)?,
            remote_addr: r.get(8)?,
            kept_credentials: parse("kept credentials", &r.get::<_, String>(22)?)?,
        },
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
        replay_key: r.get(21)?,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use crate::store::{DeliveryRow, DeliveryStatus, StoredRequest, test_store as store};

    /// A pending delivery with binary and text headers, and a dedupe key if given.
    pub fn delivery(id: &str, key: Option<(&str, i64)>) -> DeliveryRow {
        DeliveryRow {
            id: id.to_owned(),
            receiver_id: "rcv_1".to_owned(),
            received_at: 1,
            request: StoredRequest {
                verified_at: Some(1),
                method: "POST".to_owned(),
                url: "http://h/hooks/rcv_1".to_owned(),
                headers: vec![
                    ("x-bin".to_owned(), vec![0xff, 0x00]),
                    ("x-text".to_owned(), b"v".to_vec()),
                ],
                body: vec![1, 2, 3],
                remote_addr: None,
                kept_credentials: Vec::new(),
            },
            idempotency_key: key.map(|(k, _)| k.to_owned()),
            replay_key: None,
            key_expires_at: key.map(|(_, e)| e),
            sandbox: Some("box".to_owned()),
            status: DeliveryStatus::Pending,
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

    /// Old deliveries go, in bounded batches; a pending one, or one whose key
    /// still dedupes, stays; so does anything younger.
    #[tokio::test]
    async fn old_finished_deliveries_are_pruned_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let old = |n: i64| {
            let mut d = delivery(&format!("{}{n}", crate::ids::delivery_id_at(1_000)), None);
            d.status = DeliveryStatus::Succeeded;
            d
        };
        for n in 0..5 {
            s.insert_delivery(old(n)).await.unwrap();
        }
        let pending = DeliveryRow {
            status: DeliveryStatus::Pending,
            ..old(5)
        };
        s.insert_delivery(pending).await.unwrap();
        s.insert_delivery(DeliveryRow {
            idempotency_key: Some("k".into()),
            key_expires_at: Some(10_000),
            ..old(6)
        })
        .await
        .unwrap();
        let young = DeliveryRow {
            status: DeliveryStatus::Succeeded,
            ..delivery(&crate::ids::delivery_id_at(9_000), None)
        };
        s.insert_delivery(young).await.unwrap();
        assert_eq!(s.prune_deliveries(5_000, 6_000, 3).await.unwrap(), 3);
        assert_eq!(s.prune_deliveries(5_000, 6_000, 3).await.unwrap(), 2);
        assert_eq!(s.prune_deliveries(5_000, 6_000, 3).await.unwrap(), 0);
        // The key has expired by now: that one goes too.
        assert_eq!(s.prune_deliveries(5_000, 20_000, 3).await.unwrap(), 1);
        let left = s.pending().await.unwrap();
        assert_eq!(left.len(), 1);
        assert!(
            s.delivery(crate::ids::delivery_id_at(9_000))
                .await
                .unwrap()
                .is_some()
        );
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
        assert_eq!(d.request.headers[0].1, vec![0xff, 0x00]);
        assert_eq!(
            (d.request.body, d.key_expires_at),
            (vec![1, 2, 3], Some(2000))
        );
    }
}
