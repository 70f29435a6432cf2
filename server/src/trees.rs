//! Where snapshot trees live on the node (issue 10): one layout, used by
//! the pull job that builds snapshots and by `restore`, `rescue`, `diff`,
//! `list`, `verify` and `purge` that read them.
//!
//! ```text
//! data/<client>/store/                      content store of the client (ferry_tree::Store)
//! data/.share/<group>/store/                content store of a share group ([ferry share GROUP])
//! data/<client>/trees/<source>/<received>/  a published snapshot (plain directory tree,
//!                                           every regular file a hard link into the store)
//! data/<client>/trees/<source>/<received>.ftree   its manifest (the metadata)
//! data/<client>/trees/<source>/.partial/    work area of a pull in progress (never read)
//! ```
//!
//! Dedup is per client unless gitosis.conf opts a gitosis group in with
//! `[ferry share GROUP]` (`ferry_gitosis::enroll::share`): the new
//! snapshots of its members link into the group's store. `.share` starts
//! with a dot, so no client (whose name starts with a letter) can own it,
//! and it is under `data/`, on the file system hard links need. Which store
//! a client's pull uses is decided in one place, [`store_dir_for`]; readers
//! of a published snapshot find its store by its files' inodes
//! ([`snapshot_store`]), so a client moved into or out of a group keeps
//! its older snapshots linked into the store they were built against.
//! Every store has a lock file (`<store>/lock`): a pull holds it shared
//! from its first look at the store until its snapshot is published (so
//! members pull side by side), the garbage collector exclusively (a
//! content another member just put, not linked yet, has one link).
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

use ferry_gitosis::enroll::ClientEnrollment;
use ferry_tree::manifest::Sha256;
use ferry_tree::store::{Store, StoreError};

/// The module name of snapshot-tree rows in the catalog.
pub const MODULE: &str = "tree";

/// Where share groups' stores live under the data directory (a dot name:
/// never a client's).
pub const SHARE_DIR: &str = ".share";

/// The content store the pulls of `client` put into and build from: the
/// store of its share group when gitosis.conf has one for it
/// ([`ClientEnrollment::share`]), else its own. The one place that decides.
pub fn store_dir_for(cfg: &crate::config::NodeConfig, client: &ClientEnrollment) -> PathBuf {
    TreeLayout::new(cfg.data_dir()).store_for(&client.name, client.share.as_deref())
}

/// [`store_dir_for`] of a client by name, from the live enrollment; a
/// client that is not (or no longer) enrolled uses its own store.
pub fn live_store_dir(cfg: &crate::config::NodeConfig, client: &str) -> PathBuf {
    match crate::enrollment::load(cfg).ok().and_then(|e| e.client(client).cloned()) {
        Some(c) => store_dir_for(cfg, &c),
        None => TreeLayout::new(cfg.data_dir()).store_dir(client),
    }
}

/// A content store held under its lock file (see the module docs);
/// released on drop.
pub struct LockedStore {
    pub store: Store,
    lock: StoreLock,
}

/// The held lock of a content store; released on drop.
pub struct StoreLock {
    _file: std::fs::File,
}

impl LockedStore {
    /// The store and its lock, to hold apart.
    pub fn into_parts(self) -> (Store, StoreLock) {
        (self.store, self.lock)
    }
}

/// Opens (creating it, directory by directory with `lstat` checks) the
/// store at `dir` under data dir `data`, and takes its lock: shared (a
/// pull; waits for a running gc) or exclusive (gc; `None` when a pull
/// holds it: the next purge collects).
pub fn lock_store(data: &Path, dir: &Path, exclusive: bool) -> Result<Option<LockedStore>, StoreError> {
    let io = |what: &str, e: std::io::Error| StoreError::Io { context: format!("{what} {}", dir.display()), source: e };
    let rel = dir
        .strip_prefix(data)
        .map_err(|_| io("outside the data directory:", std::io::ErrorKind::InvalidInput.into()))?;
    let segs: Vec<&str> = rel.iter().filter_map(|s| s.to_str()).collect();
    let (base, segs) = match segs.split_first() {
        Some((&SHARE_DIR, rest)) => {
            let base = data.join(SHARE_DIR);
            match std::fs::symlink_metadata(&base) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => return Err(io("not a plain directory:", std::io::ErrorKind::InvalidInput.into())),
                Err(_) => std::fs::create_dir_all(&base).map_err(|e| io("creating", e))?,
            }
            (base, rest)
        }
        _ => (data.to_owned(), segs.as_slice()),
    };
    crate::store::safe_subdir(&base, segs).map_err(|e| io("creating", e))?;
    let store = Store::open(dir)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("lock"))
        .map_err(|e| io("opening the lock of", e))?;
    if exclusive {
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", e)),
        }
    } else {
        file.lock_shared().map_err(|e| io("locking", e))?;
    }
    Ok(Some(LockedStore { store, lock: StoreLock { _file: file } }))
}

/// Whether the file (dev, ino) is content `d`'s inode in `store` (its
/// primary copy or a copy made at the link limit, `<hex>.<n>`).
pub fn is_store_inode(store: &Store, d: &Sha256, dev: u64, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let primary = store.path(d);
    let same = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
    if same(&primary) {
        return true;
    }
    (1..).map(|i| primary.with_file_name(format!("{d}.{i}"))).take_while(|p| p.exists()).any(|p| same(&p))
}

/// The store directory a published snapshot's files link into: the store
/// holding its first regular file's inode, looked for in the client's
/// current store, then its own, then every store on disk (a client moved
/// into or out of a share group keeps older snapshots in the old store).
/// A snapshot without files, or whose first file links nowhere (verify
/// reports that), gets the client's current store.
pub fn snapshot_store(
    cfg: &crate::config::NodeConfig,
    client: &str,
    snapshot: &Path,
    manifest: &ferry_tree::manifest::Manifest,
) -> PathBuf {
    let current = live_store_dir(cfg, client);
    let candidates = store_candidates(&TreeLayout::new(cfg.data_dir()), client, &current);
    find_snapshot_store(&candidates, snapshot, manifest).unwrap_or(current)
}

/// Where a snapshot of `client` may link into, most likely first: its
/// current store, its own, every store on disk (for [`find_snapshot_store`]).
pub fn store_candidates(layout: &TreeLayout, client: &str, current: &Path) -> Vec<PathBuf> {
    let mut out = vec![current.to_owned(), layout.store_dir(client)];
    out.extend(layout.stores().into_iter().map(|(_, p)| p));
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| p.is_dir() && seen.insert(p.clone()));
    out
}

/// The candidate store holding the inode of the snapshot's first regular
/// file, if any does.
pub fn find_snapshot_store(
    candidates: &[PathBuf],
    snapshot: &Path,
    manifest: &ferry_tree::manifest::Manifest,
) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let (d, path) = manifest.entries.iter().find_map(|e| e.sha256().map(|d| (d, &e.path)))?;
    let md = std::fs::symlink_metadata(snapshot.join(std::ffi::OsStr::from_bytes(path))).ok()?;
    candidates.iter().find(|p| Store::open(p).is_ok_and(|s| is_store_inode(&s, d, md.dev(), md.ino()))).cloned()
}

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

    /// The own content store of `client` (dedup is per client).
    pub fn store_dir(&self, client: &str) -> PathBuf {
        self.data.join(client).join("store")
    }

    /// The content store of share group `group` (`[ferry share GROUP]`).
    pub fn share_store_dir(&self, group: &str) -> PathBuf {
        self.data.join(SHARE_DIR).join(group).join("store")
    }

    /// The store a client's new snapshots link into: its share group's,
    /// else its own. Callers go through [`store_dir_for`].
    fn store_for(&self, client: &str, share: Option<&str>) -> PathBuf {
        match share {
            Some(g) => self.share_store_dir(g),
            None => self.store_dir(client),
        }
    }

    /// Every content store on disk, sorted: clients' own stores (named
    /// `<client>/store`), then share groups' (`.share/<group>/store`).
    pub fn stores(&self) -> Vec<(String, PathBuf)> {
        let names = |dir: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| ferry_gitosis::username::is_valid_client_name(n))
                .collect();
            v.sort();
            v
        };
        let mut out: Vec<(String, PathBuf)> = names(&self.data)
            .into_iter()
            .map(|c| (format!("{c}/store"), self.store_dir(&c)))
            .filter(|(_, d)| d.is_dir())
            .collect();
        out.extend(
            names(&self.data.join(SHARE_DIR))
                .into_iter()
                .map(|g| (format!("{SHARE_DIR}/{g}/store"), self.share_store_dir(&g)))
                .filter(|(_, d)| d.is_dir()),
        );
        out
    }

    /// The directory holding the snapshots of one source.
    pub fn source_dir(&self, client: &str, source: &str) -> PathBuf {
        self.data.join(client).join("trees").join(source)
    }

    /// A published snapshot.
    pub fn snapshot_dir(&self, client: &str, source: &str, received: &str) -> PathBuf {
        self.source_dir(client, source).join(received)
    }

    /// The manifest beside a published snapshot (`<received>.ftree.zst`).
    pub fn manifest_path(&self, client: &str, source: &str, received: &str) -> PathBuf {
        ferry_tree::snapshot::manifest_path(&self.snapshot_dir(client, source, received))
    }

    /// Whether a snapshot has its manifest, as every published one has
    /// (compressed, or uncompressed from an earlier version).
    pub fn has_manifest(&self, client: &str, source: &str, received: &str) -> bool {
        ferry_tree::snapshot::has_manifest(&self.snapshot_dir(client, source, received))
    }

    /// The text of a snapshot's stored manifest: what its catalog digest
    /// is of. No size limit: the node wrote it, from a manifest it had
    /// validated within `[tree]`'s limits.
    pub fn manifest_text(&self, client: &str, source: &str, received: &str) -> std::io::Result<Vec<u8>> {
        ferry_tree::snapshot::read_manifest_text(&self.snapshot_dir(client, source, received), u64::MAX)
    }

    /// The manifest of the catalog's snapshot `a`, its digest checked
    /// against the catalog's, parsed: what restore, rescue and verify
    /// start from. The error says which of the three failed.
    pub fn checked_manifest(&self, a: &crate::catalog::Artifact) -> Result<ferry_tree::manifest::Manifest, String> {
        let text = self
            .manifest_text(&a.client, &a.source, &a.received)
            .map_err(|e| format!("the manifest of {} is unreadable: {e}", a.path))?;
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&text));
        if digest != a.sha256 {
            return Err(format!(
                "the manifest of {} has sha256 {digest}, the catalog says {} (run `ferry-node verify`)",
                a.path, a.sha256
            ));
        }
        let unlimited = ferry_tree::manifest::Limits {
            max_entries: u64::MAX,
            max_total_bytes: u64::MAX,
            max_line_bytes: usize::MAX,
        };
        ferry_tree::manifest::parse(&text, &unlimited)
            .map_err(|e| format!("the manifest of {} is refused: {e}", a.path))
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
            if name.starts_with('.') || name.contains(".ftree") || !e.file_type()?.is_dir() {
                continue;
            }
            if self.has_manifest(client, source, &name) {
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
    let store = Store::open(live_store_dir(cfg, client))?;
    for m in ferry_tree::snapshot::missing(&manifest, &store) {
        let src = fixture.join(std::ffi::OsStr::from_bytes(&m.paths[0]));
        let f = std::fs::File::open(&src).with_context(|| format!("reading {}", src.display()))?;
        store.put(f, m.size, &m.sha256)?;
    }
    let dest = layout.snapshot_dir(client, source, received);
    std::fs::create_dir_all(layout.source_dir(client, source))?;
    ferry_tree::snapshot::build(&manifest, &store, &dest)?;
    let text = layout.manifest_text(client, source, received)?;
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
        node: cfg.name.clone(),
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

    #[test]
    fn group_stores_never_collide_with_clients_and_gc_waits_for_no_pull() {
        let td = tempfile::tempdir().unwrap();
        let l = TreeLayout::new(td.path());
        let group = l.share_store_dir("web");
        assert_eq!(group, td.path().join(".share/web/store"));
        assert!(!ferry_gitosis::username::is_valid_client_name(SHARE_DIR), "no client can be named {SHARE_DIR}");
        assert_eq!(l.store_for("web1", Some("web")), group);
        assert_eq!(l.store_for("web1", None), l.store_dir("web1"));

        // A pull holds the store shared: a second pull joins, gc is refused.
        let pull = lock_store(td.path(), &group, false).unwrap().unwrap();
        let other = lock_store(td.path(), &group, false).unwrap().unwrap();
        assert!(lock_store(td.path(), &group, true).unwrap().is_none());
        drop((pull, other));
        let gc = lock_store(td.path(), &group, true).unwrap().unwrap();
        assert!(lock_store(td.path(), &group, true).unwrap().is_none(), "one gc at a time");
        drop(gc);

        lock_store(td.path(), &l.store_dir("web2"), false).unwrap().unwrap();
        std::fs::create_dir_all(td.path().join("not a client/store")).unwrap();
        let names: Vec<String> = l.stores().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["web2/store", ".share/web/store"]);

        // A symlink in place of the group directory is refused, not followed.
        let td2 = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(td.path(), td2.path().join(SHARE_DIR)).unwrap();
        let l2 = TreeLayout::new(td2.path());
        assert!(lock_store(td2.path(), &l2.share_store_dir("web"), false).is_err());
    }
}
