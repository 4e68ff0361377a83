//! The rejections table: the last requests each receiver refused, with the full
//! reason, so "why does the provider say 401?" is answered without logs.
//!
//! The sender of a rejected request is told only which kind of check failed;
//! the operator gets here what failed and why, in full. It is bounded: each
//! write keeps the newest `rejections.keep_per_receiver` rows of its receiver,
//! so a flood of bad requests costs a fixed amount of disk. A rejection keeps
//! the request's path, never its query (which may carry a credential), and no
//! headers or body.

use rusqlite::params;

use super::{Result, Store, rows, run};

/// One rejected request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionRow {
    pub receiver_id: String,
    /// Unix ms.
    pub at: i64,
    pub remote_addr: Option<String>,
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub status: u16,
    /// The error envelope's `code`.
    pub code: String,
    /// Which check failed: `auth:mismatch`, `limits`, `target`, ….
    pub failed: String,
    /// The whole reason (the sender got a short one).
    pub reason: String,
}

impl Store {
    /// Records a rejection, keeping the newest `keep` of its receiver.
    pub async fn add_rejection(&self, row: RejectionRow, keep: u32) -> Result<()> {
        self.write(move |c| {
            run(
                c,
                "INSERT INTO rejections (receiver_id, at, remote_addr, method, path, status, code, failed, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    row.receiver_id,
                    row.at,
                    row.remote_addr,
                    row.method,
                    row.path,
                    row.status,
                    row.code,
                    row.failed,
                    row.reason
                ],
            )?;
            run(
                c,
                "DELETE FROM rejections WHERE receiver_id = ?1 AND id <=
                   (SELECT id FROM rejections WHERE receiver_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![row.receiver_id, keep],
            )?;
            Ok(())
        })
        .await
    }

    /// A receiver's rejections, newest first, at most `limit`.
    pub async fn rejections(&self, receiver_id: String, limit: u32) -> Result<Vec<RejectionRow>> {
        self.read(move |c| {
            rows(
                c,
                "SELECT receiver_id, at, remote_addr, method, path, status, code, failed, reason
                 FROM rejections WHERE receiver_id = ?1 ORDER BY id DESC LIMIT ?2",
                params![receiver_id, limit],
                |r| {
                    Ok(RejectionRow {
                        receiver_id: r.get(0)?,
                        at: r.get(1)?,
                        remote_addr: r.get(2)?,
                        method: r.get(3)?,
                        path: r.get(4)?,
                        status: r.get(5)?,
                        code: r.get(6)?,
                        failed: r.get(7)?,
                        reason: r.get(8)?,
                    })
                },
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    fn rejection(receiver: &str, n: i64) -> RejectionRow {
        RejectionRow {
            receiver_id: receiver.into(),
            at: n,
            remote_addr: Some("203.0.113.7".into()),
            method: "POST".into(),
            path: format!("/hooks/{receiver}"),
            status: 401,
            code: "signature_rejected".into(),
            failed: "auth:mismatch".into(),
            reason: format!("attempt {n}"),
        }
    }

    #[tokio::test]
    async fn each_receiver_keeps_its_newest_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let s = test_store(dir.path());
        for n in 0..7 {
            s.add_rejection(rejection("a", n), 3).await.unwrap();
        }
        s.add_rejection(rejection("b", 100), 3).await.unwrap();
        let a = s.rejections("a".into(), 50).await.unwrap();
        let reasons: Vec<&str> = a.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons, ["attempt 6", "attempt 5", "attempt 4"]);
        assert_eq!(s.rejections("b".into(), 50).await.unwrap().len(), 1);
        assert_eq!(
            s.rejections("a".into(), 1).await.unwrap()[0],
            rejection("a", 6)
        );
    }
}
