//! The artifact catalog: one embedded SQLite database on the node
//! (`state/catalog.sqlite`), the index `list`, `find`, `restore`, `verify`
//! and `purge` work from. The stored files and their digest sidecars are
//! the truth; the catalog can be rebuilt from them (`verify --rebuild`).

use std::path::Path;

use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::config::NodeConfig;

/// One stored artifact.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Artifact {
    pub id: i64,
    pub client: String,
    pub source: String,
    pub module: String,
    /// Node receive time (`YYYYMMDDTHHMMSSZ`): the storage directory name,
    /// the order retention uses.
    pub received: String,
    /// The client's own timestamp from the request (metadata only).
    pub stamp: String,
    /// Path relative to the data directory.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub duration_ms: u64,
    pub request: String,
}

/// Filters for [`Catalog::find`].
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub client: Option<String>,
    pub source: Option<String>,
    /// Inclusive bounds on `received` (same string format, so they compare).
    pub since: Option<String>,
    pub until: Option<String>,
}

pub struct Catalog {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY,
    client TEXT NOT NULL,
    source TEXT NOT NULL,
    module TEXT NOT NULL,
    received TEXT NOT NULL,
    stamp TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    request TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_by_source ON artifacts (client, source, received);
CREATE INDEX IF NOT EXISTS artifacts_by_digest ON artifacts (client, source, sha256);
";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Artifact> {
    Ok(Artifact {
        id: r.get(0)?,
        client: r.get(1)?,
        source: r.get(2)?,
        module: r.get(3)?,
        received: r.get(4)?,
        stamp: r.get(5)?,
        path: r.get(6)?,
        size: r.get::<_, i64>(7)? as u64,
        sha256: r.get(8)?,
        duration_ms: r.get::<_, i64>(9)? as u64,
        request: r.get(10)?,
    })
}

const COLS: &str = "id, client, source, module, received, stamp, path, size, sha256, duration_ms, request";

impl Catalog {
    /// Open (creating) the catalog.
    pub fn open(cfg: &NodeConfig) -> anyhow::Result<Catalog> {
        Self::open_path(&cfg.catalog_path())
    }

    pub fn open_path(p: &Path) -> anyhow::Result<Catalog> {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        let conn = Connection::open(p).with_context(|| format!("cannot open the catalog {}", p.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Catalog { conn })
    }

    /// The catalog if it exists (read-only commands do not create it).
    pub fn open_existing(cfg: &NodeConfig) -> anyhow::Result<Option<Catalog>> {
        if cfg.catalog_path().exists() { Self::open(cfg).map(Some) } else { Ok(None) }
    }

    /// Record an artifact (after its file and sidecar are durable).
    pub fn insert(&self, a: &Artifact) -> anyhow::Result<i64> {
        self.conn.execute(
            "INSERT INTO artifacts (client, source, module, received, stamp, path, size, sha256, duration_ms, request)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                a.client,
                a.source,
                a.module,
                a.received,
                a.stamp,
                a.path,
                a.size as i64,
                a.sha256,
                a.duration_ms as i64,
                a.request
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// An artifact with the same client, source, client timestamp and
    /// digest (an identical duplicate request).
    pub fn same(&self, client: &str, source: &str, stamp: &str, sha256: &str) -> anyhow::Result<Option<Artifact>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLS} FROM artifacts WHERE client=?1 AND source=?2 AND stamp=?3 AND sha256=?4"),
                params![client, source, stamp, sha256],
                row,
            )
            .optional()?)
    }

    /// A source `client` stores whose name differs from `source` only in
    /// ASCII letter case (issue 16: one directory on a case-insensitive
    /// file system or object store).
    pub fn case_twin_source(&self, client: &str, source: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT source FROM artifacts WHERE client=?1 AND source<>?2 AND lower(source)=lower(?2) LIMIT 1",
                params![client, source],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// A client with artifacts in the catalog whose name differs from
    /// `client` only in ASCII letter case.
    pub fn case_twin_client(&self, client: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT client FROM artifacts WHERE client<>?1 AND lower(client)=lower(?1) LIMIT 1",
                params![client],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// An artifact of the same client, source and client timestamp.
    pub fn by_stamp(&self, client: &str, source: &str, stamp: &str) -> anyhow::Result<Option<Artifact>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {COLS} FROM artifacts WHERE client=?1 AND source=?2 AND stamp=?3 ORDER BY received LIMIT 1"
                ),
                params![client, source, stamp],
                row,
            )
            .optional()?)
    }

    pub fn find(&self, q: &Query) -> anyhow::Result<Vec<Artifact>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {COLS} FROM artifacts WHERE (?1 IS NULL OR client=?1) AND (?2 IS NULL OR source=?2)
             AND (?3 IS NULL OR received>=?3) AND (?4 IS NULL OR received<=?4) ORDER BY client, source, received"
        ))?;
        let rows = st.query_map(params![q.client, q.source, q.since, q.until], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest artifact of `client`/`source` received at or before `at`.
    pub fn latest(&self, client: &str, source: &str, at: Option<&str>) -> anyhow::Result<Option<Artifact>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {COLS} FROM artifacts WHERE client=?1 AND source=?2 AND (?3 IS NULL OR received<=?3)
                     ORDER BY received DESC, id DESC LIMIT 1"
                ),
                params![client, source, at],
                row,
            )
            .optional()?)
    }

    /// Bytes stored for `client` (quota accounting).
    pub fn bytes_of(&self, client: &str) -> anyhow::Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(size), 0) FROM artifacts WHERE client=?1",
            params![client],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    pub fn delete(&self, id: i64) -> anyhow::Result<()> {
        self.conn.execute("DELETE FROM artifacts WHERE id=?1", params![id])?;
        Ok(())
    }
}
