//! The artifact catalog: the index `list`, `find`, `restore`, `verify`,
//! `purge` and quota work from. The stored artifacts and their digest
//! sidecars are the truth; the catalog indexes them.
//!
//! One interface ([`Catalog`]), so the node's code does not know which
//! engine holds the rows: SQLite on the node's disk ([`sqlite`], the
//! default) or one PostgreSQL database shared by several nodes
//! ([`postgres`], `[catalog] url`), both on the same schema ([`schema`]).
//! Every caller opens it through [`open`] / [`open_existing`].
//!
//! In a shared catalog each row names the node that wrote it. Whatever
//! acts on stored files (restore, verify, purge, retention, quota, drills,
//! duplicate detection) sees only this node's rows, since only this node
//! has the files; only a [`Query`] with `all_nodes` (the `list`, `find`,
//! `check` and published views) sees the fleet.

use serde::Serialize;

use crate::exit::UsageError;

pub mod postgres;
pub mod schema;
pub mod shared;
pub mod sqlite;
pub use postgres::PgCatalog;
pub use sqlite::SqliteCatalog;

use crate::config::NodeConfig;

/// One stored artifact.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
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
    /// The node that stored it (its `name`). Set by the catalog on
    /// insert, whatever the caller put here: a node writes only its own
    /// rows.
    pub node: String,
}

/// One restore drill: the newest artifact (or mirror) of a source restored
/// into a scratch area and checked ([`crate::drill`]).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Drill {
    pub client: String,
    pub source: String,
    /// The artifact's catalog path, or the mirror's path.
    pub what: String,
    /// When the drill ran (RFC 3339, node time).
    pub at: String,
    pub ok: bool,
    pub duration_ms: u64,
    /// One line: what was checked, or why it failed.
    pub reason: String,
}

/// Filters for [`Catalog::find`].
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub client: Option<String>,
    pub source: Option<String>,
    /// Inclusive bounds on `received` (same string format, so they compare).
    pub since: Option<String>,
    pub until: Option<String>,
    /// Every node's rows (a shared catalog), not only this node's. Only
    /// for views: a row of another node names a file this node lacks.
    pub all_nodes: bool,
}

impl Query {
    /// The `WHERE` clause of this query (`1=1` when it has no filter) and
    /// its parameters in order, `mark(n)` writing the n-th placeholder
    /// (`?1`, `$1`). Only the filters given appear: an `(? IS NULL OR
    /// column = ?)` form would keep SQLite (and PostgreSQL's generic
    /// plans) from using the `(client, source, received)` index.
    pub fn where_clause(&self, node: Option<&str>, mark: fn(usize) -> String) -> (String, Vec<String>) {
        let mut parts = Vec::new();
        let mut params = Vec::new();
        let filters = [
            ("node = ", node),
            ("client = ", self.client.as_deref()),
            ("source = ", self.source.as_deref()),
            ("received >= ", self.since.as_deref()),
            ("received <= ", self.until.as_deref()),
        ];
        for (cond, value) in filters {
            if let Some(v) = value {
                params.push(v.to_owned());
                parts.push(format!("{cond}{}", mark(params.len())));
            }
        }
        if parts.is_empty() {
            parts.push("1=1".into());
        }
        (parts.join(" AND "), params)
    }
}

/// A row for a path this node's catalog already records with another
/// size or digest: the catalog keeps what it has (a row names the bytes
/// that were verified and stored; two of them cannot both be right).
#[derive(Debug, thiserror::Error)]
#[error(
    "the catalog already records {path} on node {node} as {have_size} bytes, sha256 {have_sha256}; \
     a row saying {size} bytes, sha256 {sha256} is refused"
)]
pub struct RowConflict {
    pub path: String,
    pub node: String,
    pub have_size: u64,
    pub have_sha256: String,
    pub size: u64,
    pub sha256: String,
}

impl RowConflict {
    /// `Ok(id)` if the recorded row (`id`, `size`, `sha256`) is `a`'s.
    pub fn check(a: &Artifact, node: &str, id: i64, size: u64, sha256: String) -> anyhow::Result<i64> {
        if size == a.size && sha256 == a.sha256 {
            return Ok(id);
        }
        Err(RowConflict {
            path: a.path.clone(),
            node: node.to_owned(),
            have_size: size,
            have_sha256: sha256,
            size: a.size,
            sha256: a.sha256.clone(),
        }
        .into())
    }
}

/// What the node records and asks about stored artifacts.
///
/// Rows are written only after the artifact they describe is durable
/// (stored, verified, its sidecar written), so a row always names a
/// complete artifact; an artifact without a row is found and reported by
/// `verify`.
pub trait Catalog: Send {
    /// Record an artifact; returns its id. The same row again (a queued
    /// copy of a row already written) returns the id it has; another row
    /// for the same path on this node is a [`RowConflict`], never a
    /// replacement, in either engine.
    fn insert(&self, a: &Artifact) -> anyhow::Result<i64>;
    /// An artifact with the same client, source, client timestamp and
    /// digest (an identical duplicate request).
    fn same(&self, client: &str, source: &str, stamp: &str, sha256: &str) -> anyhow::Result<Option<Artifact>>;
    /// A source `client` stores whose name differs from `source` only in
    /// ASCII letter case (one directory on a case-insensitive file system
    /// or object store).
    fn case_twin_source(&self, client: &str, source: &str) -> anyhow::Result<Option<String>>;
    /// A client with artifacts whose name differs from `client` only in
    /// ASCII letter case.
    fn case_twin_client(&self, client: &str) -> anyhow::Result<Option<String>>;
    /// An artifact of the same client, source and client timestamp.
    fn by_stamp(&self, client: &str, source: &str, stamp: &str) -> anyhow::Result<Option<Artifact>>;
    /// Artifacts matching `q`, ordered by client, source, received. The
    /// other methods see only this node's rows.
    fn find(&self, q: &Query) -> anyhow::Result<Vec<Artifact>>;
    /// The newest artifact of `client`/`source` received at or before `at`.
    fn latest(&self, client: &str, source: &str, at: Option<&str>) -> anyhow::Result<Option<Artifact>>;
    /// Bytes stored for `client` (quota accounting).
    fn bytes_of(&self, client: &str) -> anyhow::Result<u64>;
    /// Forget an artifact (after its stored copy was removed).
    fn delete(&self, id: i64) -> anyhow::Result<()>;
    /// Record a restore drill.
    fn record_drill(&self, d: &Drill) -> anyhow::Result<()>;
    /// The newest drill of a source (`only_ok`: the newest that passed).
    fn last_drill(&self, client: &str, source: &str, only_ok: bool) -> anyhow::Result<Option<Drill>>;
}

/// Open (creating, or migrating) the node's catalog.
pub fn open(cfg: &NodeConfig) -> anyhow::Result<Box<dyn Catalog>> {
    if cfg.catalog.url.is_some() {
        return Ok(Box::new(shared::SharedCatalog::open(cfg)?));
    }
    Ok(Box::new(SqliteCatalog::open_path(&cfg.catalog_path(), &cfg.name)?))
}

/// The node's catalog if it exists (read-only commands do not create a
/// SQLite file; a shared catalog always exists).
pub fn open_existing(cfg: &NodeConfig) -> anyhow::Result<Option<Box<dyn Catalog>>> {
    if cfg.catalog.url.is_some() || cfg.catalog_path().exists() { open(cfg).map(Some) } else { Ok(None) }
}

/// Whether rows of other nodes can be in the catalog (views then show the
/// node of each row).
pub fn is_shared(cfg: &NodeConfig) -> bool {
    cfg.catalog.url.is_some()
}

/// A time given on the command line (`20261122T010203Z`, `2026-11-22`,
/// `2026-11-22T01:02:03Z`), in the catalog's `received` format.
pub fn parse_time(s: &str, end_of_day: bool) -> anyhow::Result<String> {
    if let Ok(st) = s.parse::<ferry_request::Stamp>() {
        return Ok(st.to_string());
    }
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts.strftime("%Y%m%dT%H%M%SZ").to_string());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        let t = if end_of_day { d.at(23, 59, 59, 0) } else { d.at(0, 0, 0, 0) };
        return Ok(t.strftime("%Y%m%dT%H%M%SZ").to_string());
    }
    Err(UsageError(format!("cannot read the time {s:?}: use 2026-11-22, 2026-11-22T01:02:03Z or 20261122T010203Z"))
        .into())
}
