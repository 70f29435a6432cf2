//! Retention of snapshot trees: a snapshot the rules do not keep is
//! unpublished (renamed to a hidden name, so no reader sees half of it),
//! its manifest and tree removed, its cached rescue metadata layer too;
//! then the client's store and the share groups' stores drop every content
//! no snapshot links any more ([`ferry_tree::store::Store::gc`], under the
//! store's exclusive lock, which pulls hold shared until they publish). A snapshot mounted by a `rescue` is kept
//! until `rescue --undo`.

use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::catalog::Artifact;
use crate::config::NodeConfig;
use crate::trees::{SHARE_DIR, TreeLayout};

fn snapshot_dir(cfg: &NodeConfig, a: &Artifact) -> PathBuf {
    TreeLayout::new(cfg.data_dir()).snapshot_dir(&a.client, &a.source, &a.received)
}

/// Published and matching its catalog digest (retention's "verified").
pub fn verified(cfg: &NodeConfig, a: &Artifact) -> bool {
    let layout = TreeLayout::new(cfg.data_dir());
    snapshot_dir(cfg, a).is_dir()
        && layout
            .manifest_text(&a.client, &a.source, &a.received)
            .is_ok_and(|t| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&t)) == a.sha256)
}

/// Where a rescue has this snapshot mounted (its read-only bind mount:
/// a mount whose root, in /proc/self/mountinfo, is the snapshot).
pub fn rescued_at(cfg: &NodeConfig, a: &Artifact) -> Option<String> {
    let snap = snapshot_dir(cfg, a).canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let mut f = l.split(' ');
        let root = Path::new(f.nth(3)?);
        let point = f.next()?;
        (root != Path::new("/") && snap.ends_with(root.strip_prefix("/").unwrap_or(root))).then(|| point.to_owned())
    })
}

/// Removes a snapshot: unpublish by rename, manifest, tree, cached
/// metadata layer. The store keeps its contents until [`gc`].
pub fn remove(cfg: &NodeConfig, a: &Artifact) -> anyhow::Result<()> {
    let layout = TreeLayout::new(cfg.data_dir());
    let dir = layout.source_dir(&a.client, &a.source);
    let fd = ferry_archive::fsutil::open_dir(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let hidden = format!(".{}.purging", a.received);
    if ferry_archive::fsutil::lstat_at(fd.as_fd(), a.received.as_bytes())?.is_some() {
        rustix::fs::renameat(&fd, a.received.as_str(), &fd, hidden.as_str())
            .with_context(|| format!("unpublishing {}", a.path))?;
    }
    ferry_tree::snapshot::remove_manifest(&layout.snapshot_dir(&a.client, &a.source, &a.received))
        .with_context(|| format!("removing the manifest of {}", a.path))?;
    ferry_archive::fsutil::remove_tree(fd.as_fd(), hidden.as_bytes())
        .with_context(|| format!("removing {}", a.path))?;
    rustix::fs::fsync(&fd)?;
    let meta = crate::rescue::meta_dir(cfg, a);
    if meta.exists() {
        std::fs::remove_dir_all(&meta).with_context(|| format!("removing {}", meta.display()))?;
    }
    Ok(())
}

/// Finishes removals a killed purge left (`.<received>.purging`), then
/// removes the unlinked contents of the client's own store and of every
/// share group's store (its removed snapshots may have linked into a
/// group's store, or into an old one after a move; a store entry goes only
/// when no snapshot of anyone links it: link count 1). Each store under its
/// exclusive lock; one a pull holds is left for the next purge. Returns
/// (contents, bytes).
pub fn gc(cfg: &NodeConfig, client: &str) -> anyhow::Result<(u64, u64)> {
    let layout = TreeLayout::new(cfg.data_dir());
    for source in layout.sources(client)? {
        let dir = layout.source_dir(client, &source);
        let fd = ferry_archive::fsutil::open_dir(&dir)?;
        for name in ferry_archive::fsutil::read_names(fd.as_fd())? {
            if name.starts_with(b".") && name.ends_with(b".purging") {
                ferry_archive::fsutil::remove_tree(fd.as_fd(), &name)?;
            }
        }
    }
    let own = layout.store_dir(client);
    let shared =
        layout.stores().into_iter().map(|(_, d)| d).filter(|d| d.starts_with(layout.data_dir().join(SHARE_DIR)));
    let mut removed = (0, 0);
    for dir in std::iter::once(own).filter(|d| d.is_dir()).chain(shared) {
        match crate::trees::lock_store(layout.data_dir(), &dir, true)? {
            Some(l) => {
                let (n, b) = l.store.gc()?;
                removed = (removed.0 + n, removed.1 + b);
            }
            None => {
                tracing::info!(store = %dir.display(), "tree gc: a pull holds the store; the next purge collects it")
            }
        }
    }
    Ok(removed)
}
