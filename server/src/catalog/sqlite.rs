//! The catalog on SQLite: one embedded database on the node
//! (`state/catalog.sqlite`), WAL mode, synchronous writes, schema migrated
//! by `PRAGMA user_version` ([`MIGRATIONS`]).

use std::path::Path;

use anyhow::{Context as _, bail};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Artifact, Catalog, Drill, Query};

/// The schema, one step per version: the database's `user_version` says
/// how many have run. A step is never edited once released; a change is a
/// new step.
pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS artifacts (
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
    CREATE INDEX IF NOT EXISTS artifacts_by_digest ON artifacts (client, source, sha256);",
    // 2: restore drills (issue 12).
    "CREATE TABLE drills (
        id INTEGER PRIMARY KEY,
        client TEXT NOT NULL,
        source TEXT NOT NULL,
        what TEXT NOT NULL,
        at TEXT NOT NULL,
        ok INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX drills_by_source ON drills (client, source, at);",
];

/// Bring `conn` to the newest schema, one transaction per step. A database
/// newer than this program is refused (an older binary must not write it).
fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let have: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let want = MIGRATIONS.len() as i64;
    if have > want {
        bail!("the catalog has schema version {have}, newer than this ferry-node knows ({want}); upgrade ferry-node");
    }
    if have == want {
        return Ok(());
    }
    // Several processes (parallel scan workers, a hook's scan, check) open
    // the catalog at once. A deferred transaction that reads and then
    // writes gets SQLITE_BUSY at once instead of waiting, so each step takes
    // the write lock first (IMMEDIATE, which honours busy_timeout) and
    // re-reads the version: whoever came second finds the step done.
    for (i, step) in MIGRATIONS.iter().enumerate().skip(have as usize) {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| -> anyhow::Result<()> {
            let now: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if now <= i as i64 {
                conn.execute_batch(step).with_context(|| format!("catalog migration {}", i + 1))?;
                conn.pragma_update(None, "user_version", i as i64 + 1)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    Ok(())
}

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

/// The SQLite implementation of [`Catalog`].
pub struct SqliteCatalog {
    conn: Connection,
}

impl SqliteCatalog {
    /// Open (creating) the catalog at `p`, migrated to the current schema.
    pub fn open_path(p: &Path) -> anyhow::Result<SqliteCatalog> {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        // Writable by the other account of the two-account layout (why: see
        // shared_file), the database and any -wal/-shm this account owns.
        crate::layout::shared_file(p).with_context(|| format!("cannot create the catalog {}", p.display()))?;
        for side in ["-wal", "-shm"] {
            let mut f = p.as_os_str().to_owned();
            f.push(side);
            if Path::new(&f).exists() {
                crate::layout::shared_file(Path::new(&f))?;
            }
        }
        let conn = Connection::open(p).with_context(|| format!("cannot open the catalog {}", p.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&conn)?;
        Ok(SqliteCatalog { conn })
    }
}

impl Catalog for SqliteCatalog {
    /// Record an artifact (after its file and sidecar are durable).
    fn insert(&self, a: &Artifact) -> anyhow::Result<i64> {
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
    fn same(&self, client: &str, source: &str, stamp: &str, sha256: &str) -> anyhow::Result<Option<Artifact>> {
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
    fn case_twin_source(&self, client: &str, source: &str) -> anyhow::Result<Option<String>> {
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
    fn case_twin_client(&self, client: &str) -> anyhow::Result<Option<String>> {
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
    fn by_stamp(&self, client: &str, source: &str, stamp: &str) -> anyhow::Result<Option<Artifact>> {
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

    fn find(&self, q: &Query) -> anyhow::Result<Vec<Artifact>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {COLS} FROM artifacts WHERE (?1 IS NULL OR client=?1) AND (?2 IS NULL OR source=?2)
             AND (?3 IS NULL OR received>=?3) AND (?4 IS NULL OR received<=?4) ORDER BY client, source, received"
        ))?;
        let rows = st.query_map(params![q.client, q.source, q.since, q.until], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest artifact of `client`/`source` received at or before `at`.
    fn latest(&self, client: &str, source: &str, at: Option<&str>) -> anyhow::Result<Option<Artifact>> {
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
    fn bytes_of(&self, client: &str) -> anyhow::Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(size), 0) FROM artifacts WHERE client=?1",
            params![client],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn delete(&self, id: i64) -> anyhow::Result<()> {
        self.conn.execute("DELETE FROM artifacts WHERE id=?1", params![id])?;
        Ok(())
    }

    fn record_drill(&self, d: &Drill) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO drills (client, source, what, at, ok, duration_ms, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![d.client, d.source, d.what, d.at, d.ok, d.duration_ms as i64, d.reason],
        )?;
        Ok(())
    }

    fn last_drill(&self, client: &str, source: &str, only_ok: bool) -> anyhow::Result<Option<Drill>> {
        Ok(self
            .conn
            .query_row(
                "SELECT client, source, what, at, ok, duration_ms, reason FROM drills \
                 WHERE client=?1 AND source=?2 AND (ok=1 OR ?3=0) ORDER BY at DESC, id DESC LIMIT 1",
                params![client, source, only_ok],
                |r| {
                    Ok(Drill {
                        client: r.get(0)?,
                        source: r.get(1)?,
                        what: r.get(2)?,
                        at: r.get(3)?,
                        ok: r.get(4)?,
                        duration_ms: r.get::<_, i64>(5)? as u64,
                        reason: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parallel scan workers open the catalog of an older schema at the same
    /// moment: every one of them opens it (none gets "database is locked"),
    /// and each migration runs once.
    #[test]
    fn concurrent_opens_migrate_once_and_none_is_refused() {
        for round in 0..5 {
            let td = tempfile::tempdir().unwrap();
            let p = td.path().join("catalog.sqlite");
            {
                let conn = Connection::open(&p).unwrap();
                conn.pragma_update(None, "journal_mode", "WAL").unwrap();
                conn.execute_batch(MIGRATIONS[0]).unwrap();
                conn.pragma_update(None, "user_version", 1).unwrap();
            }
            let barrier = std::sync::Barrier::new(8);
            let results: Vec<Result<(), String>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            SqliteCatalog::open_path(&p).map(|_| ()).map_err(|e| format!("{e:#}"))
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(results.iter().all(Result::is_ok), "round {round}: {results:?}");
            let conn = Connection::open(&p).unwrap();
            let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(v, MIGRATIONS.len() as i64);
        }
    }
}
