//! The sandboxes and sandbox_events tables: what the local plane knows about each
//! sandbox it runs, and the last things that happened to it.
//!
//! The local plane's processes outlive the host on purpose, so their record must
//! too: at start the host adopts (or restarts) every sandbox this table says is
//! running or paused, on the ports it recorded. A row is written whole on every
//! change, with the event that caused it in the same write; each sandbox keeps
//! its last 50 events, enough for `GET /v1/sandboxes/{name}` to say why.

use rusqlite::params;

use super::{Result, SandboxRow, Store, json, parse, rows, run};

impl Store {
    pub async fn put_sandbox(
        &self,
        row: SandboxRow,
        event: Option<(String, String)>,
    ) -> Result<()> {
        self.write(move |c| {
            run(c,
                "INSERT INTO sandboxes (name, state, image, template, ports, pid, created_at, last_activity_at,
                   exit_status, last_output, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT(name) DO UPDATE SET state = excluded.state, image = excluded.image,
                   template = excluded.template, ports = excluded.ports, pid = excluded.pid,
                   created_at = excluded.created_at, last_activity_at = excluded.last_activity_at,
                   exit_status = excluded.exit_status, last_output = excluded.last_output,
                   updated_at = excluded.updated_at",
                params![
                    row.name,
                    row.state,
                    row.image,
                    json(&row.template),
                    json(&row.ports),
                    row.pid,
                    row.created_at,
                    row.last_activity_at,
                    row.exit_status,
                    row.last_output,
                    row.updated_at
                ],
            )?;
            if let Some((action, detail)) = &event {
                run(c,
                    "INSERT INTO sandbox_events (sandbox, at, action, detail) VALUES (?1, ?2, ?3, ?4)",
                    params![row.name, row.updated_at, action, detail],
                )?;
                // Keep the last 50 events per sandbox.
                run(c,
                    "DELETE FROM sandbox_events WHERE sandbox = ?1 AND rowid NOT IN
                       (SELECT rowid FROM sandbox_events WHERE sandbox = ?1 ORDER BY at DESC, rowid DESC LIMIT 50)",
                    params![row.name],
                )?;
            }
            Ok(())
        })
        .await
    }

    pub async fn sandbox(&self, name: String) -> Result<Option<SandboxRow>> {
        self.read(move |c| {
            Ok(rows(
                c,
                &format!("SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE name = ?1"),
                params![name],
                sandbox_from_row,
            )?
            .into_iter()
            .next())
        })
        .await
    }

    /// Every sandbox, newest first.
    pub async fn sandboxes(&self) -> Result<Vec<SandboxRow>> {
        self.read(|c| {
            let out = rows(
                c,
                &format!("SELECT {SANDBOX_COLUMNS} FROM sandboxes ORDER BY created_at DESC"),
                [],
                sandbox_from_row,
            )?;
            Ok(out)
        })
        .await
    }

    /// A sandbox's most recent events, newest first: (at, action, detail).
    pub async fn sandbox_events(&self, name: String) -> Result<Vec<(i64, String, String)>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT at, action, detail FROM sandbox_events WHERE sandbox = ?1 ORDER BY at DESC, rowid DESC LIMIT 20",
            )?;
            Ok(stmt
                .query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?)
        })
        .await
    }
}

const SANDBOX_COLUMNS: &str = "name, state, image, template, ports, pid, created_at, last_activity_at, exit_status, last_output, updated_at";

fn sandbox_from_row(r: &rusqlite::Row<'_>) -> Result<SandboxRow> {
    let template: String = r.get(3)?;
    let ports: String = r.get(4)?;
    Ok(SandboxRow {
        name: r.get(0)?,
        state: r.get(1)?,
        image: r.get(2)?,
        template: parse("sandbox template", &template)?,
        ports: parse("sandbox ports", &ports)?,
        pid: r.get(5)?,
        created_at: r.get(6)?,
        last_activity_at: r.get(7)?,
        exit_status: r.get(8)?,
        last_output: r.get(9)?,
        updated_at: r.get(10)?,
    })
}
