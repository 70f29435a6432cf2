//! The catalog on SQLite: one embedded database on the node
//! (`state/catalog.sqlite`), WAL mode, synchronous writes, schema migrated
//! by the steps both engines share ([`super::schema`]).
//!
//! This catalog is the node's alone, so every row in it is the node's own:
//! the `node` column is filled (for `find --json`) but never filtered on,
//! and a renamed node still finds its rows.

use std::path::Path;

use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension, params};

use super::schema::{self, Dialect, MIGRATIONS};
use super::{Artifact, Catalog, Drill, Query};

/// Bring `conn` to the newest schema ([`schema::MIGRATIONS`]), one
/// transaction per step. A database newer than this program is refused.
///
/// Catalogs from before `catalog_migrations` counted their steps in
/// `PRAGMA user_version`; that is read as the starting version (and the
/// table filled in), and is still kept up to date so that an older binary
/// refuses a newer catalog.
fn migrate(conn: &Connection, node: &str) -> anyhow::Result<()> {
    let want = MIGRATIONS.len() as i64;
    let version = |conn: &Connection| -> anyhow::Result<i64> {
        let uv: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type='table' AND name='catalog_migrations')",
            [],
            |r| r.get(0),
        )?;
        let table: i64 = if exists {
            conn.query_row("SELECT COALESCE(MAX(version), 0) FROM catalog_migrations", [], |r| r.get(0))?
        } else {
            0
        };
        Ok(uv.max(table))
    };
    let have = version(conn)?;
    if have > want {
        return Err(schema::too_new(have));
    }
    if have == want {
        return Ok(());
    }
    // Several processes (parallel scan workers, a hook's scan, check) open
    // the catalog at once. A deferred transaction that reads and then
    // writes gets SQLITE_BUSY at once instead of waiting, so each step takes
    // the write lock first (IMMEDIATE, which honours busy_timeout) and
    // re-reads the version: whoever came second finds the step done.
    for v in (have as usize + 1)..=(want as usize) {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| -> anyhow::Result<()> {
            let now = version(conn)?;
            conn.execute_batch(schema::MIGRATIONS_TABLE)?;
            let applied = jiff::Timestamp::now().to_string();
            // Versions counted only by user_version get their rows.
            for old in 1..=now {
                conn.execute(
                    "INSERT OR IGNORE INTO catalog_migrations (version, applied) VALUES (?1, 'before catalog_migrations')",
                    params![old],
                )?;
            }
            if now < v as i64 {
                conn.execute_batch(&schema::step(v, Dialect::Sqlite, node))
                    .with_context(|| format!("catalog migration {v}"))?;
                conn.execute(
                    "INSERT INTO catalog_migrations (version, applied) VALUES (?1, ?2)",
                    params![v as i64, applied],
                )?;
                conn.pragma_update(None, "user_version", v as i64)?;
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
        node: r.get(11)?,
    })
}

const COLS: &str = "id, client, source, module, received, stamp, path, size, sha256, duration_ms, request, node";

/// The SQLite implementation of [`Catalog`].
pub struct SqliteCatalog {
    conn: Connection,
    /// This node's name, written into every row.
    node: String,
}

impl SqliteCatalog {
    /// Open (creating) the catalog at `p`, migrated to the current schema,
    /// for the node named `node`.
    pub fn open_path(p: &Path, node: &str) -> anyhow::Result<SqliteCatalog> {
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
        migrate(&conn, node)?;
        Ok(SqliteCatalog { conn, node: node.to_owned() })
    }
}

impl Catalog for SqliteCatalog {
    /// Record an artifact (after its file and sidecar are durable).
    fn insert(&self, a: &Artifact) -> anyhow::Result<i64> {
        let inserted = self.conn.execute(
            "INSERT INTO artifacts (client, source, module, received, stamp, path, size, sha256, duration_ms, request, node)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (node, path) DO NOTHING",
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
                a.request,
                self.node
            ],
        )?;
        if inserted == 1 {
            return Ok(self.conn.last_insert_rowid());
        }
        let (id, size, sha256): (i64, i64, String) = self.conn.query_row(
            "SELECT id, size, sha256 FROM artifacts WHERE node=?1 AND path=?2",
            params![self.node, a.path],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        super::RowConflict::check(a, &self.node, id, size as u64, sha256)
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
        // Every row here is this node's: no node filter (module docs).
        let (cond, args) = q.where_clause(None, |n| format!("?{n}"));
        let mut st = self
            .conn
            .prepare(&format!("SELECT {COLS} FROM artifacts WHERE {cond} ORDER BY client, source, received"))?;
        let rows = st.query_map(rusqlite::params_from_iter(args), row)?;
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
            "INSERT INTO drills (client, source, what, at, ok, duration_ms, reason, node)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![d.client, d.source, d.what, d.at, d.ok, d.duration_ms as i64, d.reason, self.node],
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
                            SqliteCatalog::open_path(&p, "n").map(|_| ()).map_err(|e| format!("{e:#}"))
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

    /// The same row twice keeps one row and gives its id (a queued copy of
    /// a row already written); another size or digest for the path is a
    /// `RowConflict` and changes nothing (PostgreSQL does the same: the
    /// e2e `catalog_pg` tests).
    #[test]
    fn a_row_again_is_the_same_row_and_another_for_its_path_is_refused() {
        let td = tempfile::tempdir().unwrap();
        let cat = SqliteCatalog::open_path(&td.path().join("catalog.sqlite"), "n").unwrap();
        let a = Artifact {
            id: 0,
            client: "host-a".into(),
            source: "numbers".into(),
            module: "pipe".into(),
            received: "20261206T200000Z".into(),
            stamp: "s".into(),
            path: "host-a/numbers/20261206T200000Z/numbers".into(),
            size: 3,
            sha256: "ab".repeat(32),
            duration_ms: 1,
            request: "r".into(),
            node: String::new(),
        };
        let id = cat.insert(&a).unwrap();
        assert_eq!(cat.insert(&a).unwrap(), id);
        let other = Artifact { sha256: "cd".repeat(32), ..a.clone() };
        let e = cat.insert(&other).unwrap_err();
        assert!(e.downcast_ref::<super::super::RowConflict>().is_some(), "{e:#}");
        let rows = cat.find(&super::super::Query::default()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].sha256, a.sha256);
    }

    /// A catalog written before nodes (version 2, counted in
    /// `user_version`) keeps its rows, now this node's, and its ids; the
    /// migrations table lists every version.
    #[test]
    fn a_version_2_catalog_is_migrated_with_its_rows() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("catalog.sqlite");
        {
            let conn = Connection::open(&p).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO artifacts VALUES (7, 'host-a', 'db', 'pg', '20261122T010203Z', 's', 'host-a/db/x', 5, 'ab', 1, 'r')",
                [],
            )
            .unwrap();
        }
        let cat = SqliteCatalog::open_path(&p, "backup1").unwrap();
        let rows = cat.find(&Query::default()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].id, rows[0].node.as_str(), rows[0].path.as_str()), (7, "backup1", "host-a/db/x"));
        let versions: Vec<i64> = cat
            .conn
            .prepare("SELECT version FROM catalog_migrations ORDER BY version")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(versions, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
        // Reopening (another process) is a no-op; a new row gets a new id.
        drop(cat);
        let cat = SqliteCatalog::open_path(&p, "backup1").unwrap();
        let mut a = rows[0].clone();
        a.path = "host-a/db/y".into();
        assert!(cat.insert(&a).unwrap() > 7);
    }
}
