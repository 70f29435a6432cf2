//! The client side: the manifest of a source tree.
//!
//! [`scan`] walks the tree with `lstat` only (a symlink is recorded, never
//! followed), records type, mode, owner ids and names, mtime in
//! nanoseconds, size, symlink target, hard-link groups (by device and
//! inode within the tree), xattrs when asked, and the SHA-256 of every
//! regular file. Include, exclude and `one_file_system` mean exactly what
//! they mean for tar sources (ferry-archive's `CreateOptions`, whose
//! patterns this module uses; `ScanOptions::from(&CreateOptions)`), and the export
//! directory is left out when it lies inside the root, like the fs
//! module's `create_options` does: otherwise the manifest would describe
//! the dumps of earlier backups, and itself.
//!
//! Hashing is what costs, so a hash cache ([`ScanOptions::cache`], a file
//! under the client's state directory) remembers each file's digest with
//! its `(device, inode, size, mtime ns, ctime ns)`, as git's index and
//! restic's parent snapshot do: a repeat scan of an unchanged tree is a
//! stat walk that reads no file ([`ScanStats::files_hashed`] is 0). `ctime`
//! is what makes that safe (a user can reset mtime, not ctime); a file
//! changed within [`ScanOptions::racy_window`] of its hashing is not
//! cached, since a change in the same clock tick would not show. A file that
//! changes while it is hashed is read again, up to
//! [`ScanOptions::max_attempts`] times, and then reported in
//! [`ScanStats::changed`] (and kept out of the cache).
//!
//! [`update`] is the O(changes) entry point for a later inotify watcher:
//! given the previous manifest and the paths that changed, it re-stats only
//! those (walking a directory's subtree only when the directory is new).

mod cache;
mod hash;
mod hashers;
mod update;
mod walk;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use update::update;
use walk::{Item, LinkKey, Walker};

use crate::manifest::{Entry, Kind, Limits, Manifest, ManifestError, Options};

/// What to do with an entry that cannot be read (permission denied, I/O
/// error): the same choice as the tar module's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unreadable {
    /// Stop the scan with [`ScanError::Unreadable`] naming the path.
    #[default]
    Fail,
    /// Leave the entry out (a directory keeps its own entry, without the
    /// contents that could not be listed) and list it in
    /// [`ScanStats::skipped`].
    Skip,
}

/// What to scan and how.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The directory described; manifest paths are relative to it, and it
    /// has no entry of its own.
    pub root: PathBuf,
    /// Paths below `root` (relative, or absolute under `root`) to describe,
    /// each with everything below it; empty means the whole root. The
    /// directories leading to an included path get entries of their own.
    /// A component that is a symlink is refused rather than followed.
    pub include: Vec<PathBuf>,
    /// ferry-archive exclude patterns (`*.tmp`, `var/cache/*`).
    pub exclude: Vec<String>,
    /// Record extended attributes.
    pub xattrs: bool,
    /// Do not descend into directories on another filesystem than `root`
    /// (the mount point itself is recorded).
    pub one_file_system: bool,
    /// The client's export directory: left out (by device and inode, so
    /// whatever its name) when it lies inside `root`; a `root` inside it is
    /// refused.
    pub export_dir: Option<PathBuf>,
    /// The hash cache file (under the client's `state_dir`), or `None` to
    /// hash every file.
    pub cache: Option<PathBuf>,
    /// Unreadable entries.
    pub unreadable: Unreadable,
    /// Reads of a file that keeps changing before it is reported.
    pub max_attempts: u32,
    /// A file whose ctime is this close to the moment it was hashed is not
    /// cached (a change in the same clock tick would be invisible to the
    /// next stat), so it is hashed again next time. Whole-second
    /// timestamps (ctime without nanoseconds) widen it to two seconds.
    /// Counted in [`ScanStats::racy`].
    pub racy_window: Duration,
    /// Threads hashing files besides the walk's own ([`scan`] only; the
    /// walk hashes too whenever they are behind). [`ScanOptions::new`]
    /// takes one per further core, three at most; 0 hashes on the walk's
    /// thread alone.
    pub hash_threads: usize,
}

impl ScanOptions {
    /// Everything of `root`, with the defaults.
    pub fn new(root: impl Into<PathBuf>) -> ScanOptions {
        ScanOptions {
            root: root.into(),
            include: Vec::new(),
            exclude: Vec::new(),
            xattrs: false,
            one_file_system: false,
            export_dir: None,
            cache: None,
            unreadable: Unreadable::Fail,
            max_attempts: 3,
            racy_window: Duration::from_millis(50),
            hash_threads: hashers::default_threads(),
        }
    }
}

impl From<&ferry_archive::CreateOptions> for ScanOptions {
    /// The tree selected by a tar source's options (root, include, exclude,
    /// xattrs, one_file_system), e.g. from the fs module's
    /// `create_options`, so both modes back up the same entries.
    fn from(o: &ferry_archive::CreateOptions) -> ScanOptions {
        ScanOptions {
            include: o.include.clone(),
            exclude: o.exclude.clone(),
            xattrs: o.xattrs,
            one_file_system: o.one_file_system,
            ..ScanOptions::new(o.root.clone())
        }
    }
}

/// An entry left out under [`Unreadable::Skip`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Relative path (percent-encoded in JSON, as in the manifest).
    #[serde(serialize_with = "ser_path")]
    pub path: Vec<u8>,
    /// Why.
    pub error: String,
}

/// What a scan did. `--json` material: paths are percent-encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScanStats {
    /// Entries in the manifest.
    pub entries: u64,
    /// Regular files among them.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// FIFOs, sockets and devices.
    pub other: u64,
    /// Sum of regular-file sizes.
    pub bytes: u64,
    /// Files read to hash them (0 for an unchanged tree with a cache).
    pub files_hashed: u64,
    /// Bytes read to hash them (re-reads of changing files included).
    pub bytes_hashed: u64,
    /// `lstat` calls (what [`update`] keeps proportional to the changes).
    pub statted: u64,
    /// Entries left out by an exclude pattern or as the export directory.
    pub excluded: u64,
    /// Entries that disappeared between listing and reading.
    pub vanished: u64,
    /// Files hashed too close to their last change to be cached.
    pub racy: u64,
    /// Files that kept changing while hashed ([`ScanOptions::max_attempts`]
    /// reads); their digest is of the last read and may not match what the
    /// node downloads.
    #[serde(serialize_with = "ser_paths")]
    pub changed: Vec<Vec<u8>>,
    /// Entries left out as unreadable.
    pub skipped: Vec<Skipped>,
    /// The hash cache could not be written (the scan itself is complete;
    /// the next one hashes more).
    pub cache_error: Option<String>,
}

fn ser_path<S: serde::Serializer>(p: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::manifest::encode(p))
}

fn ser_paths<S: serde::Serializer>(ps: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ps.iter().map(|p| crate::manifest::encode(p)))
}

/// A scan's result.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The manifest (valid: [`Manifest::check`] passed).
    pub manifest: Manifest,
    /// What it cost.
    pub stats: ScanStats,
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The root (or the export directory) cannot be opened.
    #[error("cannot open {}: {source}", ferry_text::escape_bytes(path.as_os_str().as_encoded_bytes(), 400))]
    Root {
        /// The configured path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An entry cannot be read (under [`Unreadable::Fail`]).
    #[error("cannot read {}: {source}", ferry_text::escape_bytes(path.as_os_str().as_encoded_bytes(), 400))]
    Unreadable {
        /// Absolute path of the entry.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Bad options (include outside root or through a symlink, root inside
    /// the export directory, a changed path that is not relative).
    #[error("{0}")]
    Options(String),
    /// The scan produced a manifest that breaks the format: a bug.
    #[error("internal error: the scan produced an invalid manifest: {0}")]
    Internal(#[from] ManifestError),
}

/// Scans the tree `opts` selects. The hash cache, when configured, is read
/// first and replaced (atomically) only after the scan succeeded.
pub fn scan(opts: &ScanOptions) -> Result<Scan, ScanError> {
    let mut w = Walker::new(opts)?;
    std::thread::scope(|scope| {
        if opts.hash_threads > 0 {
            let xattrs_root = opts.xattrs.then(|| opts.root.clone());
            w.hashers = Some(hashers::Hashers::start(scope, opts.hash_threads, opts.max_attempts, xattrs_root));
        }
        // A panic in the walk must still close the hashers' queue, or the
        // scope would wait for them forever instead of unwinding.
        let walked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.walk_all()));
        // Always: it closes the hashers' queue, so the scope can end.
        let merged = w.finish_hashing();
        match walked {
            Ok(walked) => walked.and(merged),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;
    let mut items = std::mem::take(&mut w.items);
    items.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
    let entries = canonical_links(items);
    finish(w, entries, |_| None)
}

/// Builds the manifest, checks it, fills the counts and writes the cache.
/// `old_record` supplies cache records for files that were not stat'ed in
/// this run (for [`update`]).
fn finish(
    w: Walker<'_>,
    entries: Vec<Entry>,
    old_record: impl Fn(&[u8]) -> Option<cache::Record>,
) -> Result<Scan, ScanError> {
    let opts = w.opts;
    let manifest = Manifest { options: Options { xattrs: opts.xattrs }, entries };
    let unlimited = Limits { max_entries: u64::MAX, max_total_bytes: u64::MAX, max_line_bytes: usize::MAX };
    manifest.check(&unlimited)?;
    let mut stats = w.stats;
    for e in &manifest.entries {
        stats.entries += 1;
        match e.kind {
            Kind::File { size, .. } => {
                stats.files += 1;
                stats.bytes += size;
            }
            Kind::Dir => stats.dirs += 1,
            Kind::Symlink { .. } => stats.symlinks += 1,
            _ => stats.other += 1,
        }
    }
    if let Some(path) = &opts.cache {
        let mut new_cache = w.new_cache;
        let records: Vec<(&[u8], cache::Record)> = manifest
            .entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::File { .. }))
            .filter_map(|e| {
                let r = new_cache.remove(&e.path).or_else(|| old_record(&e.path))?;
                // Only a record for the content the manifest names.
                (Some(&r.sha256) == e.sha256()).then_some((e.path.as_slice(), r))
            })
            .collect();
        // The cache only saves work: failing to write it must not fail
        // the backup.
        if let Err(e) = cache::write(path, records.iter().map(|(p, r)| (*p, r))) {
            tracing::warn!(cache = %path.display(), error = %e, "could not write the hash cache");
            stats.cache_error = Some(format!("writing {}: {e}", path.display()));
        }
    }
    Ok(Scan { manifest, stats })
}

/// Numbers hard-link groups (keys shared by two names or more) 1, 2, …
/// by first appearance in path order, drops keys seen once (an inode with
/// other names outside the tree), and gives every member the inode data of
/// one representative (the first member stat'ed in this run): names of one
/// inode are one inode, even if it changed between their stats.
fn canonical_links(items: Vec<Item>) -> Vec<Entry> {
    let mut count: HashMap<LinkKey, usize> = HashMap::new();
    for it in &items {
        if it.key != LinkKey::None {
            *count.entry(it.key).or_default() += 1;
        }
    }
    let mut rep: HashMap<LinkKey, usize> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        if it.key != LinkKey::None && count[&it.key] > 1 {
            rep.entry(it.key).and_modify(|r| {
                if !items[*r].fresh && it.fresh {
                    *r = i;
                }
            });
            rep.entry(it.key).or_insert(i);
        }
    }
    let reps: HashMap<LinkKey, Entry> = rep.iter().map(|(k, i)| (*k, items[*i].entry.clone())).collect();
    let mut number: HashMap<LinkKey, u64> = HashMap::new();
    items
        .into_iter()
        .map(|it| match reps.get(&it.key) {
            Some(r) => {
                let next = number.len() as u64 + 1;
                let n = *number.entry(it.key).or_insert(next);
                Entry { path: it.entry.path, link: Some(n), ..r.clone() }
            }
            None => Entry { link: None, ..it.entry },
        })
        .collect()
}
