//! `verify` of snapshot trees: each content store re-hashed once (an inode
//! shared by thirty snapshots, or by the snapshots of every member of a
//! share group, is read once, not thirty times:
//! [`ferry_tree::store::Store::verify`]), then each snapshot checked
//! without reading file data: its manifest against the catalog digest, and
//! every regular file a link to the store inode of its manifest digest
//! (so a verified store means verified snapshots). A snapshot is checked
//! against the store its files link into ([`crate::trees::snapshot_store`]):
//! its client's own, its share group's, or the one it was built against
//! before the client moved into or out of a group.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::Problem;
use crate::catalog::Artifact;
use crate::config::NodeConfig;
use crate::trees::{MODULE, TreeLayout, is_store_inode};

/// A snapshot's manifest, read and checked against the catalog.
type Parsed = Result<ferry_tree::manifest::Manifest, String>;

/// Checks the stores and snapshots of `rows` (catalog rows of module
/// `tree`), and finds snapshots on disk the catalog lacks. Returns how
/// many snapshots and store contents were checked.
pub fn verify(cfg: &NodeConfig, client: Option<&str>, rows: &[Artifact], problems: &mut Vec<Problem>) -> usize {
    let layout = TreeLayout::new(cfg.data_dir());
    let data = layout.data_dir().to_owned();
    let mut by_client: BTreeMap<String, Vec<&Artifact>> = BTreeMap::new();
    for a in rows.iter().filter(|a| a.module == MODULE) {
        by_client.entry(a.client.clone()).or_default().push(a);
    }
    // Clients with trees or a store but no row left are still checked.
    for cdir in std::fs::read_dir(&data).into_iter().flatten().flatten() {
        let name = cdir.file_name().to_string_lossy().into_owned();
        if client.is_none_or(|c| c == name)
            && ferry_gitosis::username::is_valid_client_name(&name)
            && (layout.store_dir(&name).is_dir() || cdir.path().join("trees").is_dir())
        {
            by_client.entry(name).or_default();
        }
    }
    // Each snapshot's manifest and store first, so every store that
    // anything links into is verified, once.
    let mut snaps: Vec<(&Artifact, Parsed, PathBuf)> = Vec::new();
    for (c, rows) in &by_client {
        let current = crate::trees::live_store_dir(cfg, c);
        let candidates = crate::trees::store_candidates(&layout, c, &current);
        for a in rows {
            let dest = layout.snapshot_dir(&a.client, &a.source, &a.received);
            let parsed = read_manifest(&layout, a);
            let dir = parsed
                .as_ref()
                .ok()
                .and_then(|m| crate::trees::find_snapshot_store(&candidates, &dest, m))
                .unwrap_or_else(|| current.clone());
            snaps.push((a, parsed, dir));
        }
    }
    let mut dirs: BTreeSet<PathBuf> = snaps.iter().map(|(_, _, d)| d.clone()).collect();
    match client {
        None => dirs.extend(layout.stores().into_iter().map(|(_, d)| d)),
        Some(c) => dirs.extend([layout.store_dir(c), crate::trees::live_store_dir(cfg, c)]),
    }
    let mut checked = 0;
    let mut stores: BTreeMap<PathBuf, ferry_tree::store::Store> = BTreeMap::new();
    for dir in dirs.into_iter().filter(|d| d.is_dir()) {
        let rel = dir.strip_prefix(&data).unwrap_or(&dir).to_string_lossy().into_owned();
        let owner = rel.strip_suffix("/store").unwrap_or(&rel).to_owned();
        let problem =
            |path: String, problem: String| Problem { client: owner.clone(), source: "store".into(), path, problem };
        let store = match ferry_tree::store::Store::open(&dir) {
            Ok(s) => s,
            Err(e) => {
                problems.push(problem(rel, e.to_string()));
                continue;
            }
        };
        match store.verify() {
            Ok(r) => {
                checked += r.contents as usize;
                for (d, index, why) in r.bad {
                    let copy = if index == 0 { String::new() } else { format!(".{index}") };
                    problems.push(problem(format!("{rel}/sha256/{d}{copy}"), why));
                }
            }
            Err(e) => problems.push(problem(rel.clone(), e.to_string())),
        }
        stores.insert(dir, store);
    }
    for (a, parsed, dir) in &snaps {
        checked += 1;
        let p = match (parsed, stores.get(dir)) {
            (Err(p), _) => Some(p.clone()),
            (Ok(_), None) => Some(format!("its content store {} is missing", dir.display())),
            (Ok(m), Some(store)) => check_files(&layout, store, a, m),
        };
        if let Some(p) = p {
            problems.push(Problem {
                client: a.client.clone(),
                source: a.source.clone(),
                path: a.path.clone(),
                problem: p,
            });
        }
    }
    for (c, rows) in &by_client {
        let known: BTreeSet<&str> = rows.iter().map(|a| a.path.as_str()).collect();
        for source in layout.sources(c).unwrap_or_default() {
            for r in layout.snapshots(c, &source).unwrap_or_default() {
                let path = TreeLayout::catalog_path(c, &source, &r);
                if !known.contains(path.as_str()) {
                    problems.push(Problem {
                        client: c.clone(),
                        source: source.clone(),
                        path,
                        problem: "snapshot on disk but not in the catalog".into(),
                    });
                }
            }
        }
    }
    checked
}

/// The manifest of a snapshot, its digest checked against the catalog.
fn read_manifest(layout: &TreeLayout, a: &Artifact) -> Parsed {
    layout.checked_manifest(a)
}

/// Every file of one snapshot is its content's store inode.
fn check_files(
    layout: &TreeLayout,
    store: &ferry_tree::store::Store,
    a: &Artifact,
    m: &ferry_tree::manifest::Manifest,
) -> Option<String> {
    let dest = layout.snapshot_dir(&a.client, &a.source, &a.received);
    let mut bad = 0usize;
    let mut first = None;
    for e in &m.entries {
        let Some(d) = e.sha256() else { continue };
        let p = dest.join(std::ffi::OsStr::from_bytes(&e.path));
        let ok = std::fs::symlink_metadata(&p).is_ok_and(|md| {
            md.file_type().is_file() && md.len() == e.size() && is_store_inode(store, d, md.dev(), md.ino())
        });
        if !ok {
            bad += 1;
            first.get_or_insert_with(|| ferry_text::escape_bytes(&e.path, 200));
        }
    }
    if !dest.is_dir() {
        return Some("snapshot directory missing".into());
    }
    first.map(|f| format!("{bad} files are not their content's store inode (first: {f})"))
}
