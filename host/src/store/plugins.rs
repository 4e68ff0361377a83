//! The plugins table: every WebAssembly component uploaded through
//! `POST /v1/plugins`, as sent, with its limits.
//!
//! The component's bytes are kept rather than a compiled form: compiled code
//! depends on the wasmtime build and the machine, so the host compiles at start
//! (through its on-disk cache) from what is stored here, and an upgrade never
//! finds a stale artifact in the database.

use rusqlite::params;

use super::{PluginRow, Result, Store, rows, run};

impl Store {
    pub async fn put_plugin(&self, row: PluginRow) -> Result<()> {
        self.write(move |c| {
            run(c,
                "INSERT INTO plugins (name, world, sha256, component, timeout_ms, memory_mb, installed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(name) DO UPDATE SET world = excluded.world, sha256 = excluded.sha256,
                   component = excluded.component, timeout_ms = excluded.timeout_ms,
                   memory_mb = excluded.memory_mb, installed_at = excluded.installed_at",
                params![row.name, row.world, row.sha256, row.component, row.timeout_ms, row.memory_mb, row.installed_at],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn delete_plugin(&self, name: String) -> Result<bool> {
        self.write(move |c| Ok(run(c, "DELETE FROM plugins WHERE name = ?1", params![name])? > 0))
            .await
    }

    /// Every uploaded plugin, by name.
    pub async fn plugins(&self) -> Result<Vec<PluginRow>> {
        self.read(|c| {
            rows(
                c,
                "SELECT name, world, sha256, component, timeout_ms, memory_mb, installed_at FROM plugins ORDER BY name",
                [],
                |r| {
                    Ok(PluginRow {
                        name: r.get(0)?,
                        world: r.get(1)?,
                        sha256: r.get(2)?,
                        component: r.get(3)?,
                        timeout_ms: r.get(4)?,
                        memory_mb: r.get(5)?,
                        installed_at: r.get(6)?,
                    })
                },
            )
        })
        .await
    }
}
