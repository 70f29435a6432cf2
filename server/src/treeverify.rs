//! `verify` of snapshot trees: each client's content store re-hashed once
//! (an inode shared by thirty snapshots is read once, not thirty times:
//! [`ferry_tree::store::Store::verify`]), then each snapshot checked
//! without reading file data: its manifest against the catalog digest, and
//! every regular file a link to the store inode of its manifest digest
//! (so a verified store means verified snapshots).

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use crate::catalog::Artifact;
use crate::config::NodeConfig;
use crate::trees::{MODULE, TreeLayout};
use crate::verify::Problem;

/// Checks the stores and snapshots of `rows` (catalog rows of module
/// `tree`), and finds snapshots on disk the catalog lacks. Returns how
/// many snapshots and store contents were checked.
pub fn verify(cfg: &NodeConfig, client: Option<&str>, rows: &[Artifact], problems: &mut Vec<Problem>) -> usize {
    let layout = TreeLayout::new(cfg.data_dir());
    let mut by_client: BTreeMap<String, Vec<&Artifact>> = BTreeMap::new();
    for a in rows.iter().filter(|a| a.module == MODULE) {
        by_client.entry(a.client.clone()).or_default().push(a);
    }
    // Clients with a store but no row left still get their store checked.
    for cdir in std::fs::read_dir(cfg.data_dir()).into_iter().flatten().flatten() {
        let name = cdir.file_name().to_string_lossy().into_owned();
        if client.is_none_or(|c| c == name) && layout.store_dir(&name).is_dir() {
            by_client.entry(name).or_default();
        }
    }
    let mut checked = 0;
    for (c, snaps) in &by_client {
        let problem = |source: &str, path: String, problem: String| Problem {
            client: c.clone(),
            source: source.to_owned(),
            path,
            problem,
        };
        let store_rel = format!("{c}/store");
        let store = match ferry_tree::store::Store::open(layout.store_dir(c)) {
            Ok(s) => s,
            Err(e) => {
                problems.push(problem("store", store_rel, e.to_string()));
                continue;
            }
        };
        match store.verify() {
            Ok(r) => {
                checked += r.contents as usize;
                for (d, index, why) in r.bad {
                    let copy = if index == 0 { String::new() } else { format!(".{index}") };
                    problems.push(problem("store", format!("{store_rel}/sha256/{d}{copy}"), why));
                }
            }
            Err(e) => problems.push(problem("store", store_rel.clone(), e.to_string())),
        }
        for a in snaps {
            checked += 1;
            if let Some(p) = check_snapshot(&layout, &store, a) {
                problems.push(problem(&a.source, a.path.clone(), p));
            }
        }
        let known: std::collections::BTreeSet<&str> = snaps.iter().map(|a| a.path.as_str()).collect();
        for source in layout.sources(c).unwrap_or_default() {
            for r in layout.snapshots(c, &source).unwrap_or_default() {
                let path = TreeLayout::catalog_path(c, &source, &r);
                if !known.contains(path.as_str()) {
                    problems.push(problem(&source, path, "snapshot on disk but not in the catalog".into()));
                }
            }
        }
    }
    checked
}

/// One snapshot: manifest digest, then every file's inode.
fn check_snapshot(layout: &TreeLayout, store: &ferry_tree::store::Store, a: &Artifact) -> Option<String> {
    let dest = layout.snapshot_dir(&a.client, &a.source, &a.received);
    let text = match std::fs::read(layout.manifest_path(&a.client, &a.source, &a.received)) {
        Ok(t) => t,
        Err(e) => return Some(format!("manifest unreadable: {e}")),
    };
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&text));
    if digest != a.sha256 {
        return Some(format!("manifest sha256 {digest} instead of {} (catalog)", a.sha256));
    }
    let unlimited =
        ferry_tree::manifest::Limits { max_entries: u64::MAX, max_total_bytes: u64::MAX, max_line_bytes: usize::MAX };
    let m = match ferry_tree::manifest::parse(&text, &unlimited) {
        Ok(m) => m,
        Err(e) => return Some(format!("manifest refused: {e}")),
    };
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

fn is_store_inode(store: &ferry_tree::store::Store, d: &ferry_tree::manifest::Sha256, dev: u64, ino: u64) -> bool {
    let primary = store.path(d);
    let same = |p: &std::path::Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
    if same(&primary) {
        return true;
    }
    // Copies made at the link limit: `<hex>.1`, `<hex>.2`, …
    (1..).map(|i| primary.with_file_name(format!("{d}.{i}"))).take_while(|p| p.exists()).any(|p| same(&p))
}
