//! The writer thread and its group commit, and the checkpoint thread beside it.
//!
//! One thread owns the only writing connection, so writes never wait on SQLite's
//! lock, only on each other: each commit takes every write queued by then (up to
//! `storage.max_batch`) and pays one fsync for all of them. Callers hear back
//! only after their batch committed. The WAL is copied back into the database by
//! a second thread rather than by SQLite's automatic checkpoint, which runs inside
//! a commit and would stall every write queued behind it.

use std::sync::mpsc;
use std::sync::{Mutex, Weak};
use std::thread;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{Result, StoreError, run};

/// One queued write: run inside the batch's transaction (again alone in its own if
/// the batch fails), then told how the commit went.
pub(super) trait Job: Send {
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

/// The write `f` as a job that answers on `reply`.
pub(super) fn job<T, F>(f: F, reply: oneshot::Sender<Result<T>>) -> Box<dyn Job>
where
    T: Send + 'static,
    F: FnMut(&Connection) -> Result<T> + Send + 'static,
{
    Box::new(Write {
        f: Some(f),
        result: None,
        reply,
    })
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

/// Starts the writer thread on `conn`; it ends when every sender is dropped.
pub(super) fn start(conn: Connection, max_batch: usize) -> Result<mpsc::Sender<Box<dyn Job>>> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("hookgate-writer".into())
        .spawn(move || writer_loop(conn, rx, max_batch))
        .map_err(|e| StoreError::Corrupt(format!("starting the writer thread: {e}")))?;
    Ok(tx)
}

/// Starts the checkpoint thread; it ends when `store` (the reader pool, held by
/// every handle to the store) is dropped.
pub(super) fn start_checkpoints(
    conn: Connection,
    store: Weak<Mutex<Vec<Connection>>>,
) -> Result<()> {
    thread::Builder::new()
        .name("hookgate-checkpoint".into())
        .spawn(move || checkpoint_loop(conn, store))
        .map_err(|e| StoreError::Corrupt(format!("starting the checkpoint thread: {e}")))?;
    Ok(())
}

/// Copies the WAL back into the database every 200 ms without blocking writers
/// (PASSIVE). Ends when the last handle to the store is dropped.
fn checkpoint_loop(conn: Connection, store: Weak<Mutex<Vec<Connection>>>) {
    while store.strong_count() > 0 {
        thread::sleep(std::time::Duration::from_millis(200));
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
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
    use crate::store::deliveries::tests::delivery;
    use crate::store::test_store as store;

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
