//! The shared catalog as the node uses it: [`PgCatalog`] while PostgreSQL
//! answers, and a durable queue of rows on the node while it does not.
//!
//! A node that cannot reach the database keeps doing what is safe without
//! it: it pulls, verifies and stores, and each catalog row is written as
//! one file under `state/catalog-queue/` (temporary file, fsync, rename:
//! the project's one way of changing state). The next open that reaches
//! the database writes the queued rows (`ON CONFLICT (node, path) DO
//! NOTHING`, so a row written before a crash and queued again is not
//! doubled) and only then removes their files. One `CATALOG_UNREACHABLE`
//! alert per outage (a marker file in the queue directory remembers it is
//! open), one `CATALOG_REACHABLE` when the queue is written.
//!
//! While the database is down, the questions a pull asks (is this request
//! a duplicate, does a source of another letter case exist) are answered
//! from the queued rows alone, which errs towards storing (a repeated
//! request may be stored twice); everything else (`find`, `list`, restore,
//! verify, purge, drills) fails with a clear error until it is back.

use std::cell::RefCell;
use std::path::PathBuf;

use anyhow::Context as _;

use super::postgres::{PgCatalog, connect_client, describe};
use super::{Artifact, Catalog, Drill, Query};
use crate::config::NodeConfig;

/// The queue's directory name under `state_dir`.
pub const QUEUE_DIR: &str = "catalog-queue";
/// Present while a `CATALOG_UNREACHABLE` alert is open.
const ALERTED: &str = "alerted";

/// The node's queue of catalog rows not yet in the database.
pub struct Queue {
    dir: PathBuf,
}

impl Queue {
    pub fn of(cfg: &NodeConfig) -> Queue {
        Queue { dir: cfg.state_dir().join(QUEUE_DIR) }
    }

    /// Keep `a` until the database takes it. The file is named after the
    /// row's unique key (the SHA-256 of its path on this node), so
    /// queueing a row twice leaves one file.
    pub fn push(&self, a: &Artifact) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let name = format!("{}.json", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(a.path.as_bytes())));
        let data = serde_json::to_vec(a)?;
        ferry_durable::write_synced(&self.dir, &name, &data)
            .with_context(|| format!("cannot queue a catalog row in {}", self.dir.display()))
    }

    /// The queued rows with their files, oldest receive time first.
    pub fn rows(&self) -> anyhow::Result<Vec<(PathBuf, Artifact)>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for e in rd {
            let p = e?.path();
            // Temporaries of an interrupted write (dot files) and the
            // marker are not rows.
            let Some(n) = p.file_name().and_then(|n| n.to_str()) else { continue };
            if n.starts_with('.') || !n.ends_with(".json") {
                continue;
            }
            match serde_json::from_slice::<Artifact>(&std::fs::read(&p)?) {
                Ok(a) => out.push((p, a)),
                // One unreadable row must not stop every catalog open: it
                // is set aside (`.bad`, not a row any more) for a look by
                // hand, and the rest are written.
                Err(e) => {
                    let bad = p.with_extension("json.bad");
                    tracing::error!(row = %p.display(), error = %e, "a queued catalog row is unreadable; set aside as {}", bad.display());
                    std::fs::rename(&p, &bad).with_context(|| format!("setting aside {}", p.display()))?;
                }
            }
        }
        out.sort_by(|x, y| (&x.1.received, &x.1.path).cmp(&(&y.1.received, &y.1.path)));
        Ok(out)
    }

    fn alerted(&self) -> bool {
        self.dir.join(ALERTED).exists()
    }
}

/// Whether `e` says the database is out of reach (no connection, a lost
/// one, a failed TLS handshake, a server shutting down) rather than
/// refusing a statement. Only errors of the connection count: a server's
/// class 08 (connection) or 57 (operator intervention) code, a closed
/// connection, or an I/O error under the client's error (connecting,
/// its timeout, and TLS, whose handshake fails as one). A statement the client cannot
/// encode or decode, or a row count it did not expect, is a defect to
/// report, not an outage to queue behind.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| match c.downcast_ref::<postgres::Error>() {
        Some(pe) => match pe.code() {
            Some(code) => {
                let c = code.code();
                c.starts_with("08") || c.starts_with("57")
            }
            None => pe.is_closed() || std::error::Error::source(pe).is_some_and(|s| s.is::<std::io::Error>()),
        },
        // Not a database error (a password file that cannot be read, a
        // refused migration): the administrator's to fix, not an outage.
        None => false,
    })
}

/// [`PgCatalog`] with the queue (module docs).
pub struct SharedCatalog {
    pg: RefCell<Option<PgCatalog>>,
    /// Why the database is out of reach, once it is.
    down: RefCell<Option<String>>,
    queue: Queue,
    cfg: NodeConfig,
}

impl SharedCatalog {
    /// Connect (migrating the schema) and write what was queued; a
    /// database out of reach is not an error here (module docs), a
    /// refused migration is.
    pub fn open(cfg: &NodeConfig) -> anyhow::Result<SharedCatalog> {
        let queue = Queue::of(cfg);
        // A database gone between the connect and the schema check is out
        // of reach too, not a failed open.
        let (pg, down) = match connect_client(cfg).and_then(|c| PgCatalog::with_client(c, &cfg.name)) {
            Ok(pg) => (Some(pg), None),
            Err(e) if is_unreachable(&e) => (None, Some(format!("{e:#}"))),
            Err(e) => return Err(e),
        };
        let me = SharedCatalog { pg: RefCell::new(pg), down: RefCell::new(down), queue, cfg: cfg.clone() };
        if me.pg.borrow().is_some() {
            match me.flush() {
                Ok(()) => {}
                // Gone again while writing the queue: what is left stays
                // queued.
                Err(e) if is_unreachable(&e) => me.lost(&e),
                Err(e) => return Err(e),
            }
        } else {
            me.outage();
        }
        Ok(me)
    }

    /// Write every queued row, removing each file once its row is in; then
    /// close the outage.
    fn flush(&self) -> anyhow::Result<()> {
        let rows = self.queue.rows()?;
        let pg = self.pg.borrow();
        let Some(pg) = pg.as_ref() else { return Ok(()) };
        for (file, a) in &rows {
            match pg.insert(a) {
                Ok(_) => {}
                // The database has another row for this path (written by
                // hand, or by this node before it lost its disk): it is
                // kept, and this one set aside for a look by hand rather
                // than stopping every open.
                Err(e) if e.downcast_ref::<super::RowConflict>().is_some() => {
                    let aside = file.with_extension("json.conflict");
                    tracing::error!(row = %file.display(), error = %e, "a queued catalog row conflicts with the database; set aside as {}", aside.display());
                    std::fs::rename(file, &aside).with_context(|| format!("setting aside {}", file.display()))?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            match std::fs::remove_file(file) {
                Ok(()) => {}
                // Another process flushed it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !rows.is_empty() {
            ferry_durable::fsync_dir(&self.queue.dir)?;
            tracing::info!("wrote {} queued catalog rows", rows.len());
        }
        if self.queue.alerted() && std::fs::remove_file(self.queue.dir.join(ALERTED)).is_ok() {
            crate::alerts::raise(
                &self.cfg,
                ferry_notify::Alert::new(
                    ferry_notify::Kind::CatalogReachable,
                    format!("catalog-db:{}", self.cfg.name),
                    &self.cfg.name,
                    format!(
                        "Node {} reaches its catalog database again; {} queued rows were written.",
                        self.cfg.name,
                        rows.len()
                    ),
                ),
            );
        }
        Ok(())
    }

    /// The database is out of reach: alert, once per outage.
    fn outage(&self) {
        let why = self.down.borrow().clone().unwrap_or_default();
        tracing::warn!("catalog database unreachable, catalog rows are queued: {why}");
        if self.queue.alerted() {
            return;
        }
        let first = std::fs::create_dir_all(&self.queue.dir)
            .and_then(|()| ferry_durable::write_synced_new(&self.queue.dir, ALERTED, b""));
        // Whoever created the marker raises the alert (one per outage,
        // however many processes notice).
        if first.is_ok() {
            crate::alerts::raise(
                &self.cfg,
                ferry_notify::Alert::new(
                    ferry_notify::Kind::CatalogUnreachable,
                    format!("catalog-db:{}", self.cfg.name),
                    &self.cfg.name,
                    format!(
                        "Node {} cannot reach its catalog database; it keeps pulling and storing, and queues \
                         catalog rows in {} until the database is back. list, find, restore, verify and purge \
                         wait for it.\n{why}",
                        self.cfg.name,
                        self.queue.dir.display()
                    ),
                ),
            );
        }
    }

    /// Note that the connection was lost by `e`.
    fn lost(&self, e: &anyhow::Error) {
        *self.down.borrow_mut() = Some(format!("{e:#}"));
        self.pg.borrow_mut().take();
        self.outage();
    }

    fn unreachable(&self) -> anyhow::Error {
        let Some(url) = &self.cfg.catalog.url else { unreachable!("a shared catalog has a url") };
        let at = url.parse::<postgres::Config>().map(|c| describe(&c)).unwrap_or_default();
        anyhow::anyhow!(
            "the catalog {at} is unreachable ({}); new rows are queued in {} until it is back",
            self.down.borrow().as_deref().unwrap_or("?"),
            self.queue.dir.display()
        )
    }

    /// Run `f` on the database; a lost connection becomes the
    /// "unreachable" error (and the outage is noted).
    fn read<T>(&self, f: impl FnOnce(&PgCatalog) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let res = match self.pg.borrow().as_ref() {
            Some(pg) => f(pg),
            None => return Err(self.unreachable()),
        };
        match res {
            Err(e) if is_unreachable(&e) => {
                self.lost(&e);
                Err(self.unreachable())
            }
            r => r,
        }
    }

    /// Like [`Self::read`], but answered from the queued rows while the
    /// database is down (the questions a pull asks).
    fn pull_question<T>(
        &self,
        f: impl FnOnce(&PgCatalog) -> anyhow::Result<T>,
        queued: impl FnOnce(Vec<Artifact>) -> T,
    ) -> anyhow::Result<T> {
        match self.read(f) {
            Ok(v) => Ok(v),
            Err(_) if self.pg.borrow().is_none() => {
                Ok(queued(self.queue.rows()?.into_iter().map(|(_, a)| a).collect()))
            }
            Err(e) => Err(e),
        }
    }
}

impl Catalog for SharedCatalog {
    /// Into the database, or into the queue while it is out of reach (the
    /// id is then 0: the row has none yet).
    fn insert(&self, a: &Artifact) -> anyhow::Result<i64> {
        let res = self.pg.borrow().as_ref().map(|pg| pg.insert(a));
        match res {
            Some(Ok(id)) => return Ok(id),
            Some(Err(e)) if is_unreachable(&e) => self.lost(&e),
            Some(Err(e)) => return Err(e),
            None => {}
        }
        let mut a = a.clone();
        a.node = self.cfg.name.clone();
        self.queue.push(&a)?;
        Ok(0)
    }

    fn same(&self, client: &str, source: &str, stamp: &str, sha256: &str) -> anyhow::Result<Option<Artifact>> {
        self.pull_question(
            |pg| pg.same(client, source, stamp, sha256),
            |q| {
                q.into_iter()
                    .find(|a| a.client == client && a.source == source && a.stamp == stamp && a.sha256 == sha256)
            },
        )
    }

    fn case_twin_source(&self, client: &str, source: &str) -> anyhow::Result<Option<String>> {
        self.pull_question(
            |pg| pg.case_twin_source(client, source),
            |q| {
                q.into_iter()
                    .find(|a| a.client == client && a.source != source && a.source.eq_ignore_ascii_case(source))
                    .map(|a| a.source)
            },
        )
    }

    fn case_twin_client(&self, client: &str) -> anyhow::Result<Option<String>> {
        self.pull_question(
            |pg| pg.case_twin_client(client),
            |q| q.into_iter().find(|a| a.client != client && a.client.eq_ignore_ascii_case(client)).map(|a| a.client),
        )
    }

    fn by_stamp(&self, client: &str, source: &str, stamp: &str) -> anyhow::Result<Option<Artifact>> {
        self.pull_question(
            |pg| pg.by_stamp(client, source, stamp),
            |q| q.into_iter().find(|a| a.client == client && a.source == source && a.stamp == stamp),
        )
    }

    fn find(&self, q: &Query) -> anyhow::Result<Vec<Artifact>> {
        self.read(|pg| pg.find(q))
    }

    fn latest(&self, client: &str, source: &str, at: Option<&str>) -> anyhow::Result<Option<Artifact>> {
        self.read(|pg| pg.latest(client, source, at))
    }

    fn bytes_of(&self, client: &str) -> anyhow::Result<u64> {
        self.read(|pg| pg.bytes_of(client))
    }

    fn delete(&self, id: i64) -> anyhow::Result<()> {
        self.read(|pg| pg.delete(id))
    }

    fn record_drill(&self, d: &Drill) -> anyhow::Result<()> {
        self.read(|pg| pg.record_drill(d))
    }

    fn last_drill(&self, client: &str, source: &str, only_ok: bool) -> anyhow::Result<Option<Drill>> {
        self.read(|pg| pg.last_drill(client, source, only_ok))
    }
}
