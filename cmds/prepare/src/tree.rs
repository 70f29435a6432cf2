//! `mode = "tree"` for fs sources (issue 10): the tree is not archived but
//! described by a manifest, `<stamp>.ftree` in the source's export
//! directory, which the node pulls and then fetches only the contents it
//! lacks, from below the root, through the same read-only sftp gate.
//!
//! The tree selected is exactly the one tar mode would archive: the
//! options come from [`crate::fs::create_options`] (root, include,
//! exclude, xattrs, one_file_system, the export directory excluded when it
//! lies inside the root).
//!
//! The hash cache lives **per source** under the client's `state_dir`
//! (`<state_dir>/tree-cache/<source>`), not per node: the manifest is
//! written once and every node pulls the same file, so one scan serves all
//! nodes, and two sources with different roots or excludes never evict
//! each other's entries. A lost or unreadable cache costs one full re-hash
//! and nothing else (the scan reports it as `cache_error`).
//!
//! The manifest is written like every other artifact: a temporary file in
//! the source's export directory, synced, renamed without replacing to
//! `<stamp>.ftree`, the directory synced; so the node never sees half a
//! manifest, and old manifests are pruned by the same retention as dumps
//! ([`crate::export::apply_retention`] lists `<stamp>.<ext>` of any
//! extension).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ferry_archive::CreateOptions;
use ferry_request::{Name, RemotePath, SftpUrl, TreeRequest};
use ferry_tree::scan::{ScanOptions, ScanStats, Unreadable, scan};

use crate::PrepareError;
use crate::export::{Artifact, ArtifactInfo, choose_stamp};

/// Extension of a tree source's artifact: the manifest.
pub const EXTENSION: &str = "ftree";

/// Where a source's hash cache lives under the client's `state_dir`.
pub fn cache_path(state_dir: &Path, source: &str) -> PathBuf {
    state_dir.join("tree-cache").join(source)
}

/// A written manifest and what the scan cost (the `--json` record shows
/// `entries`, `files_hashed` and `bytes_hashed`: an unchanged repeat hashes
/// 0 files).
#[derive(Debug)]
pub struct TreeRun {
    /// The manifest file in the source's export directory.
    pub info: ArtifactInfo,
    /// The scan's counters.
    pub stats: ScanStats,
    /// The manifest is an update of the previous one from the watcher's
    /// change journal (issue 11), not a full walk.
    pub updated: bool,
}

/// Scans the tree `opts` selects (with the cache at `cache`) and writes
/// `<stamp>.ftree` into the source's export directory `dir`, atomically.
/// Entries the account may not read fail the run unless `skip_unreadable`.
pub fn write_manifest(
    source_name: &str,
    opts: &CreateOptions,
    skip_unreadable: bool,
    cache: &Path,
    dir: &Path,
    deadline: Option<Instant>,
) -> Result<TreeRun, PrepareError> {
    let racy = ScanOptions::new("/").racy_window;
    write_manifest_with(source_name, opts, skip_unreadable, cache, dir, deadline, racy)
}

/// [`write_manifest`] with the scan's racy window given (tests use zero, so
/// files written a moment before the first scan are trusted by the next).
pub(crate) fn write_manifest_with(
    source_name: &str,
    opts: &CreateOptions,
    skip_unreadable: bool,
    cache: &Path,
    dir: &Path,
    deadline: Option<Instant>,
    racy_window: std::time::Duration,
) -> Result<TreeRun, PrepareError> {
    let io = |context: String| move |source: std::io::Error| PrepareError::Io { context, source };
    if let Some(parent) = cache.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    let scan_opts = ScanOptions {
        cache: Some(cache.to_owned()),
        unreadable: if skip_unreadable { Unreadable::Skip } else { Unreadable::Fail },
        racy_window,
        ..ScanOptions::from(opts)
    };
    let failed = |e: ferry_tree::scan::ScanError| PrepareError::Failed {
        module: "fs".into(),
        message: format!("source {source_name}: tree scan: {e}"),
    };
    // A watched source (issue 11) updates the previous manifest with what
    // the agent's watcher journalled; anything else walks the whole tree.
    let taken = crate::changes::take(cache).map_err(io(format!("taking the change journal of {source_name}")))?;
    let prev = match &taken {
        Some(t) if !t.full => previous_manifest(dir).map(|(_, m)| m),
        _ => None,
    };
    let scanned = match (&taken, &prev) {
        (Some(t), Some(prev)) if t.verify => {
            // The safety net: what the journal says against a full walk.
            let updated = ferry_tree::scan::update(prev, &t.paths, &scan_opts).map_err(failed)?;
            let walked = scan(&scan_opts).map_err(failed)?;
            let d = ferry_tree::diff::diff(
                &updated.manifest,
                &walked.manifest,
                &ferry_tree::diff::DiffOptions::everything(),
            );
            let n = d.changes.len() as u64;
            if n > 0 {
                tracing::warn!(source = source_name, differences = n, missed = %d.to_text().lines().take(5).collect::<Vec<_>>().join("; "), "the periodic rescan found changes the watcher missed");
            } else {
                tracing::info!(source = source_name, "the periodic rescan found no change the watcher missed");
            }
            crate::changes::record_rescan(cache, n).map_err(io(format!("recording the rescan of {source_name}")))?;
            walked
        }
        (Some(t), Some(prev)) => {
            tracing::info!(source = source_name, changed = t.paths.len(), "tree update from the watcher's journal");
            ferry_tree::scan::update(prev, &t.paths, &scan_opts).map_err(failed)?
        }
        _ => scan(&scan_opts).map_err(failed)?,
    };
    let stamp = choose_stamp(dir).map_err(io(format!("choosing a stamp in {}", dir.display())))?;
    let mut art = Artifact::create(dir, stamp, EXTENSION, deadline)
        .map_err(io(format!("creating a manifest in {}", dir.display())))?;
    let what = format!("writing the manifest of source {source_name}");
    scanned.manifest.write_to(&mut *art.writer()).map_err(io(what.clone()))?;
    art.writer().flush().map_err(io(what.clone()))?;
    let info = art.commit().map_err(io(what))?;
    crate::changes::done(cache).map_err(io(format!("closing the change journal of {source_name}")))?;
    let updated = prev.is_some() && !taken.as_ref().is_some_and(|t| t.verify);
    Ok(TreeRun { info, stats: scanned.stats, updated })
}

/// The newest manifest in the source's export directory and its stamp, if
/// one parses.
pub(crate) fn previous_manifest(dir: &Path) -> Option<(String, ferry_tree::manifest::Manifest)> {
    let newest = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(&format!(".{EXTENSION}")) && !n.starts_with('.'))
        .max()?;
    let bytes = std::fs::read(dir.join(&newest)).ok()?;
    let m = ferry_tree::manifest::parse(&bytes, &ferry_tree::manifest::Limits::default()).ok()?;
    Some((newest.trim_end_matches(&format!(".{EXTENSION}")).to_owned(), m))
}

/// The `tree` request for a written manifest: the manifest's URL in the
/// export directory and the root's URL, on the one enrolled endpoint.
/// A root the grammar cannot name (`/`, hidden or odd segments) is a
/// configuration error: enroll and configure its top-level directories
/// instead.
pub fn request(
    manifest_url: &SftpUrl,
    root: &Path,
    info: &ArtifactInfo,
    source: &Name,
) -> Result<TreeRequest, PrepareError> {
    let path = check_root(source.as_str(), root)?;
    let root_url = SftpUrl { path, ..manifest_url.clone() };
    Ok(TreeRequest {
        stamp: info.stamp.clone(),
        manifest: manifest_url.clone(),
        root: root_url,
        sha256: info.sha256.clone(),
        size: info.size,
        source: source.clone(),
    })
}

/// The root as the request grammar names it. A root it cannot name (`/`,
/// hidden or odd segments, not UTF-8) is a configuration error: back up
/// its top-level directories as separate tree sources instead.
pub fn check_root(source: &str, root: &Path) -> Result<RemotePath, PrepareError> {
    let text = root.to_str().ok_or_else(|| PrepareError::Config(format!("root {} is not UTF-8", root.display())))?;
    RemotePath::parse(text).map_err(|e| {
        PrepareError::Config(format!(
            "source {source}: root {text} cannot be named in a tree request ({e}); a tree root is an absolute path of plain names, not / (back up its top-level directories as separate sources)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_request::{Request, parse};
    use std::time::Duration;

    #[test]
    fn manifest_is_written_atomically_and_an_unchanged_repeat_hashes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let export = root.join("export");
        let dir = export.join("home");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/one.txt"), b"one\n").unwrap();
        std::fs::write(root.join("two"), vec![7u8; 100_000]).unwrap();
        std::fs::write(root.join("skip.tmp"), b"x").unwrap();
        let opts = crate::fs::create_options(&root, &[], &["*.tmp".into()], false, false, &export).unwrap();
        let cache = cache_path(&tmp.path().join("state"), "home");

        let first = write_manifest_with("home", &opts, false, &cache, &dir, None, Duration::ZERO).unwrap();
        assert_eq!(first.stats.files_hashed, 2, "{:?}", first.stats);
        assert_eq!(first.stats.bytes_hashed, 100_004);
        assert!(first.info.path.to_str().unwrap().ends_with(".ftree"));
        let text = std::fs::read(&first.info.path).unwrap();
        assert_eq!(text.len() as u64, first.info.size);
        let m = ferry_tree::manifest::parse(&text, &ferry_tree::manifest::Limits::default()).unwrap();
        assert!(m.get(b"a/b/one.txt").is_some() && m.get(b"two").is_some());
        // Excluded by pattern and, being inside the root, the export dir.
        assert!(m.get(b"skip.tmp").is_none() && m.get(b"export").is_none());
        // Nothing but the manifest in the export directory: no temporary.
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");

        let again = write_manifest_with("home", &opts, false, &cache, &dir, None, Duration::ZERO).unwrap();
        assert_eq!((again.stats.files_hashed, again.stats.bytes_hashed), (0, 0), "{:?}", again.stats);
        assert_eq!(std::fs::read(&again.info.path).unwrap(), text, "same tree, same manifest");
        // One changed file is the only one read again.
        std::fs::write(root.join("a/b/one.txt"), b"uno\n").unwrap();
        let third = write_manifest_with("home", &opts, false, &cache, &dir, None, Duration::ZERO).unwrap();
        assert_eq!((third.stats.files_hashed, third.stats.bytes_hashed), (1, 4), "{:?}", third.stats);
        assert_ne!(again.info.path, first.info.path);

        // The request line round-trips through the grammar.
        let url =
            SftpUrl::parse("sftp://ferry@client.example:22/var/lib/ferry/export/home/20261122T010203Z.ftree").unwrap();
        let root_ok = Path::new("/srv/data");
        let t = request(&url, root_ok, &again.info, &"home".parse().unwrap()).unwrap();
        assert_eq!(t.root.to_url_string(), "sftp://ferry@client.example:22/srv/data");
        let r = Request::Tree(t);
        assert_eq!(parse(r.to_line().as_bytes()), Ok(r));
        for bad in ["/", "/srv/.hidden", "/srv/a b"] {
            let e = request(&url, Path::new(bad), &again.info, &"home".parse().unwrap()).unwrap_err();
            assert!(matches!(e, PrepareError::Config(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn a_watched_source_updates_the_previous_manifest_from_the_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let dir = tmp.path().join("export/site");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/one"), b"1").unwrap();
        let opts = crate::fs::create_options(&root, &[], &[], false, false, &tmp.path().join("export")).unwrap();
        let cache = cache_path(&tmp.path().join("state"), "site");
        let _watcher = crate::changes::try_watch(&cache).unwrap().unwrap();
        crate::changes::append(&cache, &[], true).unwrap();
        let first = write_manifest_with("site", &opts, false, &cache, &dir, None, Duration::ZERO).unwrap();
        assert!(!first.updated, "a full-rescan record walks everything");
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("b/c/two"), b"2").unwrap();
        std::fs::remove_file(root.join("a/one")).unwrap();
        crate::changes::append(&cache, &[b"b/c/two".to_vec(), b"a/one".to_vec(), b"a".to_vec()], false).unwrap();
        let second = write_manifest_with("site", &opts, false, &cache, &dir, None, Duration::ZERO).unwrap();
        assert!(second.updated);
        let m = ferry_tree::manifest::parse(&std::fs::read(&second.info.path).unwrap(), &Default::default()).unwrap();
        assert!(m.get(b"b/c/two").is_some() && m.get(b"b/c").is_some() && m.get(b"a/one").is_none(), "{m:?}");
        // A change the journal does not name is found by the verify rescan.
        std::fs::write(root.join("missed"), b"m").unwrap();
        crate::changes::append_verify(&cache).unwrap();
        let verified = write_manifest_with("site", &opts, false, &cache, &dir, None, Duration::ZERO).unwrap();
        assert!(!verified.updated);
        let m = ferry_tree::manifest::parse(&std::fs::read(&verified.info.path).unwrap(), &Default::default()).unwrap();
        assert!(m.get(b"missed").is_some());
        let c = crate::changes::rescan_counts(&cache);
        assert_eq!((c.runs, c.last_differences), (1, 1), "{c:?}");
        std::fs::remove_file(root.join("missed")).unwrap();
        crate::changes::append(&cache, &[b"missed".to_vec()], false).unwrap();
        write_manifest_with("site", &opts, false, &cache, &dir, None, Duration::ZERO).unwrap();
        // The same as a full walk would say.
        drop(_watcher);
        let third = write_manifest_with("site", &opts, false, &cache, &dir, None, Duration::ZERO).unwrap();
        assert!(!third.updated);
        assert_eq!(std::fs::read(&third.info.path).unwrap(), std::fs::read(&second.info.path).unwrap());
    }
}
