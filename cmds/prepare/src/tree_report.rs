//! `ferry changes SOURCE` (issue 11): what changed in a tree source since
//! its newest manifest, copying nothing: a stat walk that re-hashes only
//! files whose stat changed (with a *copy* of the hash cache, so a report
//! never moves the next backup's baseline), compared with that manifest;
//! and what the agent's watcher has journalled meanwhile.

use std::path::{Path, PathBuf};

use ferry_tree::diff::{Diff, DiffOptions, diff};
use ferry_tree::manifest::Manifest;
use ferry_tree::scan::{ScanOptions, Unreadable, scan};
use serde::Serialize;

use crate::{ExportEndpoint, PrepareError, SourceKind, SourceSpec};

/// The report.
#[derive(Debug, Serialize)]
pub struct ChangeReport {
    pub source: String,
    /// The newest manifest's stamp (`None`: never backed up in tree mode,
    /// everything is new).
    pub since: Option<String>,
    /// A watcher holds the source (`ferry agent`, `watch = true`).
    pub watching: bool,
    /// Paths the watcher journalled since the newest manifest.
    pub journalled: usize,
    /// The watcher asked for a full rescan (overflow, start, reload).
    pub journalled_full: bool,
    /// Files read to compute a digest (their stat changed).
    pub files_hashed: u64,
    /// Added, removed and changed paths (the stable JSON of `ferry-node diff`).
    #[serde(flatten)]
    pub diff: Diff,
}

/// Builds the report for a `mode = "tree"` fs source.
pub fn report(spec: &SourceSpec, endpoint: &ExportEndpoint) -> Result<ChangeReport, PrepareError> {
    let name = spec.name.as_str();
    let SourceKind::Fs { root, include, exclude, xattrs, one_file_system, unreadable, tree_cache: Some(cache) } =
        &spec.kind
    else {
        return Err(PrepareError::Config(format!(
            "source {name}: changes are reported for mode = \"tree\" sources only"
        )));
    };
    let io = |context: String| move |source: std::io::Error| PrepareError::Io { context, source };
    let export_dir = PathBuf::from(crate::export::check_export_dir(&endpoint.export_dir)?.as_str());
    let dir = crate::export::source_dir(&export_dir, name);
    let opts = crate::fs::create_options(root, include, exclude, *xattrs, *one_file_system, &export_dir)
        .map_err(|m| PrepareError::Config(format!("source {name}: {m}")))?;
    let copy = with_suffix(cache, &format!(".report-{}", std::process::id()));
    let have_cache = match std::fs::copy(cache, &copy) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(format!("copying the hash cache of {name}"))(e)),
    };
    let scan_opts = ScanOptions {
        cache: have_cache.then(|| copy.clone()),
        unreadable: if *unreadable == ferry_archive::Unreadable::Skip { Unreadable::Skip } else { Unreadable::Fail },
        ..ScanOptions::from(&opts)
    };
    let scanned = scan(&scan_opts);
    let _ = std::fs::remove_file(&copy);
    let scanned = scanned
        .map_err(|e| PrepareError::Failed { module: "fs".into(), message: format!("source {name}: tree scan: {e}") })?;
    let prev = crate::tree::previous_manifest(&dir);
    let d =
        diff(prev.as_ref().map(|(_, m)| m).unwrap_or(&Manifest::default()), &scanned.manifest, &DiffOptions::default());
    let j = crate::changes::peek(cache).map_err(io(format!("reading the change journal of {name}")))?;
    Ok(ChangeReport {
        source: name.to_owned(),
        since: prev.map(|(stamp, _)| stamp),
        watching: crate::changes::try_watch(cache).map_err(io(format!("the watch lock of {name}")))?.is_none(),
        journalled: j.paths.len(),
        journalled_full: j.full,
        files_hashed: scanned.stats.files_hashed,
        diff: d,
    })
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
