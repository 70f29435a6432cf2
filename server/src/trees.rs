//! Where snapshot trees live on the node (issue 10): one layout, used by
//! the pull job that builds snapshots and by `restore`, `rescue`, `diff`,
//! `list`, `verify` and `purge` that read them.
//!
//! ```text
//! data/<client>/store/                      content store of the client (ferry_tree::Store)
//! data/<client>/trees/<source>/<received>/  a published snapshot (plain directory tree,
//!                                           every regular file a hard link into the store)
//! data/<client>/trees/<source>/<received>.ftree   its manifest (the metadata)
//! data/<client>/trees/<source>/.partial/    work area of a pull in progress (never read)
//! ```
//!
//! `store` and `trees` are reserved source names (`ferry_request::RESERVED_SOURCE_NAMES`),
//! so no client's source can take these places. Snapshot trees are not
//! [`crate::store::ArtifactStore`] objects: hard links need one local file
//! system, like git mirrors. The catalog row of a snapshot has module
//! `tree`, `path` = `<client>/trees/<source>/<received>` (relative to the
//! data directory), `size` = the manifest's total bytes and `sha256` = the
//! digest of the manifest file.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The module name of snapshot-tree rows in the catalog.
pub const MODULE: &str = "tree";

/// The catalogued snapshots of one source, oldest first (what `rescue`,
/// `diff` and `restore` choose from); a client name outside the grammar is
/// a usage error, never a path.
pub fn snapshots_of(
    cfg: &crate::config::NodeConfig,
    client: &str,
    source: &str,
) -> anyhow::Result<Vec<crate::catalog::Artifact>> {
    if !ferry_gitosis::username::is_valid_client_name(client) {
        return Err(crate::exit::UsageError(format!("{client:?} is not a client name")).into());
    }
    let rows = match crate::catalog::open_existing(cfg)? {
        Some(c) => c.find(&crate::catalog::Query {
            client: Some(client.into()),
            source: Some(source.into()),
            ..Default::default()
        })?,
        None => Vec::new(),
    };
    Ok(rows.into_iter().filter(|a| a.module == MODULE).collect())
}

/// Paths of snapshot trees under the node's data directory.
#[derive(Debug, Clone)]
pub struct TreeLayout {
    data: PathBuf,
}

impl TreeLayout {
    pub fn new(data_dir: impl Into<PathBuf>) -> TreeLayout {
        TreeLayout { data: data_dir.into() }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The content store of `client` (dedup is per client).
    pub fn store_dir(&self, client: &str) -> PathBuf {
        self.data.join(client).join("store")
    }

    /// The directory holding the snapshots of one source.
    pub fn source_dir(&self, client: &str, source: &str) -> PathBuf {
        self.data.join(client).join("trees").join(source)
    }

    /// A published snapshot.
    pub fn snapshot_dir(&self, client: &str, source: &str, received: &str) -> PathBuf {
        self.source_dir(client, source).join(received)
    }

    /// The manifest beside a published snapshot (`<received>.ftree`).
    pub fn manifest_path(&self, client: &str, source: &str, received: &str) -> PathBuf {
        ferry_tree::snapshot::manifest_path(&self.snapshot_dir(client, source, received))
    }

    /// The work area of a pull in progress; never read as a snapshot.
    pub fn partial_dir(&self, client: &str, source: &str) -> PathBuf {
        self.source_dir(client, source).join(".partial")
    }

    /// The catalog `path` of a snapshot (relative to the data directory).
    pub fn catalog_path(client: &str, source: &str, received: &str) -> String {
        format!("{client}/trees/{source}/{received}")
    }

    /// Published snapshots of a source, oldest first: directories whose
    /// manifest sits beside them (a snapshot is published by renaming its
    /// directory after the manifest is written, see `ferry_tree::snapshot`).
    pub fn snapshots(&self, client: &str, source: &str) -> std::io::Result<Vec<String>> {
        let dir = self.source_dir(client, source);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e?;
            let Some(name) = e.file_name().to_str().map(str::to_owned) else { continue };
            if name.starts_with('.') || name.ends_with(".ftree") || !e.file_type()?.is_dir() {
                continue;
            }
            if self.manifest_path(client, source, &name).is_file() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Sources of `client` that have snapshot trees, sorted.
    pub fn sources(&self, client: &str) -> std::io::Result<Vec<String>> {
        let dir = self.data.join(client).join("trees");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Builds a snapshot of the directory `fixture` through the library, as the
/// pull job does (scan → manifest → `Store::put` of every content →
/// `snapshot::build` under [`TreeLayout`] → catalog row with module
/// [`MODULE`]), for tests of what reads snapshots while the real pull
/// pipeline is built elsewhere. `received` is the snapshot's name
/// (`YYYYMMDDTHHMMSSZ`).
#[doc(hidden)]
pub fn build_test_snapshot(
    cfg: &crate::config::NodeConfig,
    client: &str,
    source: &str,
    received: &str,
    fixture: &Path,
) -> anyhow::Result<crate::catalog::Artifact> {
    use anyhow::Context as _;
    let layout = TreeLayout::new(cfg.data_dir());
    let scan = ferry_tree::scan::scan(&ferry_tree::scan::ScanOptions::new(fixture))?;
    let manifest = scan.manifest;
    let store = ferry_tree::store::Store::open(layout.store_dir(client))?;
    for m in ferry_tree::snapshot::missing(&manifest, &store) {
        let src = fixture.join(std::ffi::OsStr::from_bytes(&m.paths[0]));
        let f = std::fs::File::open(&src).with_context(|| format!("reading {}", src.display()))?;
        store.put(f, m.size, &m.sha256)?;
    }
    let dest = layout.snapshot_dir(client, source, received);
    std::fs::create_dir_all(layout.source_dir(client, source))?;
    ferry_tree::snapshot::build(&manifest, &store, &dest)?;
    let text = std::fs::read(layout.manifest_path(client, source, received))?;
    let mut a = crate::catalog::Artifact {
        id: 0,
        client: client.into(),
        source: source.into(),
        module: MODULE.into(),
        received: received.into(),
        stamp: received.into(),
        path: TreeLayout::catalog_path(client, source, received),
        size: manifest.total_file_bytes(),
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&text)),
        duration_ms: 0,
        request: String::new(),
    };
    a.id = crate::catalog::open(cfg)?.insert(&a)?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_snapshots_with_a_manifest_are_listed_in_order() {
        let td = tempfile::tempdir().unwrap();
        let l = TreeLayout::new(td.path());
        for r in ["20260102T000000Z", "20260101T000000Z", "20260103T000000Z"] {
            std::fs::create_dir_all(l.snapshot_dir("a", "www", r)).unwrap();
        }
        std::fs::create_dir_all(l.partial_dir("a", "www")).unwrap();
        std::fs::write(l.manifest_path("a", "www", "20260101T000000Z"), "x").unwrap();
        std::fs::write(l.manifest_path("a", "www", "20260103T000000Z"), "x").unwrap();
        assert_eq!(l.snapshots("a", "www").unwrap(), ["20260101T000000Z", "20260103T000000Z"]);
        assert_eq!(l.sources("a").unwrap(), ["www"]);
        assert!(l.snapshots("a", "none").unwrap().is_empty());
        assert_eq!(TreeLayout::catalog_path("a", "www", "r"), "a/trees/www/r");
    }
}
