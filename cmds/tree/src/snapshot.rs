//! The node side: a snapshot is a plain directory tree built from a
//! validated manifest, in which every regular file is a hard link into the
//! [store](crate::store).
//!
//! So a version costs only what changed (unchanged files are the store's
//! inodes again), and a rescue host, a web server or `ls` can use the
//! directory as it is. Names of one hard-link group become one inode
//! naturally, as do files of equal content (and equal content across
//! snapshots of one store).
//!
//! What the node creates, and what it does not:
//!
//! * directories, mode 0755, owned by the node: per-snapshot modes,
//!   owners, times and xattrs live only in the manifest (two snapshots with
//!   the same content and different modes share bytes, not metadata);
//! * regular files as links to the store's read-only inodes;
//! * symlinks as symlinks, target verbatim: never followed while building
//!   (every directory is opened with `O_NOFOLLOW` from the staging root,
//!   and the manifest cannot put a path below a symlink), and the node
//!   never follows them later either;
//! * devices, FIFOs and sockets are never created: they are recorded in the
//!   manifest only (a restore may create them).
//!
//! The manifest is kept beside the tree as `<dest>.ftree.zst` (inside, it
//! would be listed by a web server and seen by a rescue host as content;
//! compressed, see [`manifest_path`]). It is written, synced, before the
//! tree is published, so a published tree always has its manifest; a
//! manifest without its directory is a build that did not finish and is
//! replaced by the next one. Snapshots of earlier versions have an
//! uncompressed `<dest>.ftree`, still read.
//!
//! Publishing is one rename of a staging directory `.<name>.staging` beside
//! the destination (mode 0700 until then), without replacing anything, so
//! nothing half-built is ever visible under the final name. A staging
//! directory left by a killed build is removed (without following links)
//! and the tree built again: that costs links, not downloads, because what
//! was downloaded is in the store. Callers serialise builds of one
//! destination (the node's per-client lock).

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_archive::fsutil::{
    components, lstat_at, open_dir, open_dir_at, open_dir_beneath, random_token, remove_tree, rename_noreplace,
    split_last,
};
use rustix::fs::{Mode, OFlags};

use crate::dirstack::{DirStack, tree_order};
use crate::manifest::{Kind, Limits, Manifest, ManifestError, ReadError, Sha256};
use crate::store::{Store, StoreError};

/// A content the store lacks, with every path that needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Its digest.
    pub sha256: Sha256,
    /// Its size.
    pub size: u64,
    /// The manifest paths with this content (download any one of them).
    pub paths: Vec<Vec<u8>>,
}

/// The distinct contents of `manifest` that `store` does not hold, in
/// order of first appearance: what must be downloaded before [`build`].
pub fn missing(manifest: &Manifest, store: &Store) -> Vec<Missing> {
    let mut out: Vec<Missing> = Vec::new();
    let mut seen: HashMap<Sha256, Option<usize>> = HashMap::new();
    let mut linker = store.linker();
    for e in &manifest.entries {
        let Kind::File { size, sha256 } = &e.kind else { continue };
        let slot = *seen.entry(*sha256).or_insert_with(|| {
            if linker.has(sha256) {
                None
            } else {
                out.push(Missing { sha256: *sha256, size: *size, paths: Vec::new() });
                Some(out.len() - 1)
            }
        });
        if let Some(i) = slot {
            out[i].paths.push(e.path.clone());
        }
    }
    out
}

/// What [`build`] made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Directories created.
    pub dirs: u64,
    /// Regular-file names linked from the store.
    pub files: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// FIFOs, sockets and devices recorded but not created.
    pub not_created: u64,
    /// Store copies made at the hard-link limit.
    pub store_copies: u64,
}

/// The outcome of [`build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    /// The snapshot was built and published now.
    Published(BuildStats),
    /// It was already published with this very manifest (a re-run after a
    /// crash past the publishing rename): nothing was done.
    AlreadyPublished,
}

/// Why a snapshot could not be built. Nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The manifest breaks the format (defence in depth: it was parsed).
    #[error(transparent)]
    Invalid(#[from] ManifestError),
    /// The destination exists with another manifest (or none).
    #[error("E_STORE: snapshot {} already exists", .0.display())]
    Exists(PathBuf),
    /// Contents are missing from the store: download them first.
    #[error("E_STORE: {0} contents of the manifest are not in the store yet")]
    Incomplete(usize),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The snapshot's filesystem failed.
    #[error("{}: {context}: {source}", if crate::store::is_disk_full(source) { "E_DISK_FULL" } else { "E_STORE" })]
    Io {
        /// What was being done (paths escaped).
        context: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl SnapshotError {
    /// The reason code.
    pub fn code(&self) -> &'static str {
        match self {
            SnapshotError::Invalid(e) => e.code(),
            SnapshotError::Store(e) => e.code(),
            SnapshotError::Io { source, .. } if crate::store::is_disk_full(source) => "E_DISK_FULL",
            _ => "E_STORE",
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> SnapshotError {
    let context = context.into();
    move |source| SnapshotError::Io { context, source }
}

fn shown(p: &[u8]) -> String {
    ferry_text::escape_bytes(p, 400)
}

/// Where the manifest of the snapshot at `dest` is kept: `<dest>.ftree.zst`
/// (zstd: a manifest is about 180 bytes per entry as text and a third of
/// that compressed, and on a repeat backup it is most of what a snapshot
/// adds beside the changed contents; `zstdcat` shows it).
pub fn manifest_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".ftree.zst")
}

/// Where snapshots published before manifests were compressed keep it,
/// uncompressed: `<dest>.ftree`. Still read; never written.
pub fn plain_manifest_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".ftree")
}

fn with_suffix(dest: &Path, suffix: &str) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dest.with_file_name(name)
}

/// Whether the snapshot at `dest` has its manifest (either form).
pub fn has_manifest(dest: &Path) -> bool {
    manifest_path(dest).is_file() || plain_manifest_path(dest).is_file()
}

/// Opens the stored manifest of `dest` as its text, decompressing.
fn open_manifest(dest: &Path) -> io::Result<Box<dyn io::Read>> {
    match std::fs::File::open(manifest_path(dest)) {
        Ok(f) => Ok(Box::new(zstd::stream::read::Decoder::new(f)?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(Box::new(io::BufReader::new(std::fs::File::open(plain_manifest_path(dest))?)))
        }
        Err(e) => Err(e),
    }
}

/// The text of the stored manifest of `dest` (what its catalog digest is
/// of), at most `max` bytes: more is an error, not a truncation.
pub fn read_manifest_text(dest: &Path, max: u64) -> io::Result<Vec<u8>> {
    use io::Read as _;
    let mut text = Vec::new();
    open_manifest(dest)?.take(max.saturating_add(1)).read_to_end(&mut text)?;
    if text.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the manifest of {} is over {max} bytes", dest.display()),
        ));
    }
    Ok(text)
}

/// Removes the stored manifest of `dest` (either form); `Ok(false)` if
/// there was none.
pub fn remove_manifest(dest: &Path) -> io::Result<bool> {
    let mut removed = false;
    for p in [manifest_path(dest), plain_manifest_path(dest)] {
        match std::fs::remove_file(&p) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Reads and validates the manifest of a published snapshot.
pub fn read_manifest(dest: &Path, limits: &Limits) -> Result<Manifest, ReadError> {
    crate::manifest::read(open_manifest(dest)?, limits)
}

/// zstd level of stored manifests: 20,000 entries in about 50 ms.
const MANIFEST_ZSTD_LEVEL: i32 = 3;

/// The parent directory and the name of `dest`.
fn parent_and_name(dest: &Path) -> Result<(PathBuf, Vec<u8>), SnapshotError> {
    let name = dest.file_name().filter(|n| !n.is_empty()).ok_or_else(|| SnapshotError::Io {
        context: format!("destination {}", dest.display()),
        source: io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.as_bytes().to_vec()))
}

/// Builds the snapshot of `manifest` at `dest` from `store` and publishes
/// it with one rename; see the module docs. Every content must be in the
/// store ([`missing`] is empty).
pub fn build(manifest: &Manifest, store: &Store, dest: &Path) -> Result<Built, SnapshotError> {
    let unlimited = Limits { max_entries: u64::MAX, max_total_bytes: u64::MAX, max_line_bytes: usize::MAX };
    manifest.check(&unlimited)?;
    let (parent, name) = parent_and_name(dest)?;
    let pfd = open_dir(&parent).map_err(io_err(format!("opening {}", parent.display())))?;
    if lstat_at(pfd.as_fd(), &name).map_err(io_err(format!("checking {}", dest.display())))?.is_some() {
        let text = manifest.to_bytes();
        return match read_manifest_text(dest, text.len() as u64) {
            Ok(existing) if existing == text => Ok(Built::AlreadyPublished),
            _ => Err(SnapshotError::Exists(dest.to_path_buf())),
        };
    }
    let absent = missing(manifest, store);
    if !absent.is_empty() {
        return Err(SnapshotError::Incomplete(absent.len()));
    }
    stage_checked(manifest, store, dest, HashSet::new())?.finish(manifest, store)
}

/// A snapshot whose staging directory holds everything of its manifest
/// but the files of contents still being fetched ([`stage`]); published by
/// [`Staged::finish`], removed if dropped unpublished.
///
/// Why: a pull fetches what the store lacks, then links the snapshot. On
/// a repeat backup (1% changed) both take about as long, and nothing in
/// the directories, the symlinks and the links of contents already stored
/// waits for the fetch: staging them on another thread while the fetch
/// runs hides one behind the other.
#[derive(Debug)]
pub struct Staged {
    dest: PathBuf,
    name: Vec<u8>,
    staging: Vec<u8>,
    pfd: OwnedFd,
    later: HashSet<Sha256>,
    stats: BuildStats,
    published: bool,
}

/// Stages the snapshot of `manifest` at `dest` (which must not exist):
/// directories, symlinks, and a link for every file whose content is not
/// in `later` (those must be in the store). Nothing is visible under
/// `dest` until [`Staged::finish`].
pub fn stage(manifest: &Manifest, store: &Store, dest: &Path, later: HashSet<Sha256>) -> Result<Staged, SnapshotError> {
    let unlimited = Limits { max_entries: u64::MAX, max_total_bytes: u64::MAX, max_line_bytes: usize::MAX };
    manifest.check(&unlimited)?;
    stage_checked(manifest, store, dest, later)
}

/// [`stage`] of a manifest its caller has just checked.
fn stage_checked(
    manifest: &Manifest,
    store: &Store,
    dest: &Path,
    later: HashSet<Sha256>,
) -> Result<Staged, SnapshotError> {
    let mut staged = staging_dir(dest, later)?;
    // On an error, dropping `staged` removes the staging directory.
    staged.stats = fill(manifest, Some(store), staged.pfd.as_fd(), &staged.staging, Pass::Now(&staged.later))?;
    Ok(staged)
}

/// The first half of [`stage`]: only the directories, so that a pull can
/// write the files it fetches straight into them
/// ([`crate::store::Batch::put_missing_in`], beneath [`Staged::root`])
/// while another thread makes the rest ([`Staged::fill_stored`]).
pub fn stage_dirs(manifest: &Manifest, dest: &Path, later: HashSet<Sha256>) -> Result<Staged, SnapshotError> {
    let unlimited = Limits { max_entries: u64::MAX, max_total_bytes: u64::MAX, max_line_bytes: usize::MAX };
    manifest.check(&unlimited)?;
    let mut staged = staging_dir(dest, later)?;
    staged.stats = fill(manifest, None, staged.pfd.as_fd(), &staged.staging, Pass::Dirs)?;
    Ok(staged)
}

/// A new, empty staging directory for `dest` (which must not exist),
/// replacing one a killed build left.
fn staging_dir(dest: &Path, later: HashSet<Sha256>) -> Result<Staged, SnapshotError> {
    let (parent, name) = parent_and_name(dest)?;
    let pfd = open_dir(&parent).map_err(io_err(format!("opening {}", parent.display())))?;
    if lstat_at(pfd.as_fd(), &name).map_err(io_err(format!("checking {}", dest.display())))?.is_some() {
        return Err(SnapshotError::Exists(dest.to_path_buf()));
    }
    let staging = [b".", name.as_slice(), b".staging"].concat();
    remove_tree(pfd.as_fd(), &staging).map_err(io_err(format!("removing a leftover {}", shown(&staging))))?;
    rustix::fs::mkdirat(&pfd, staging.as_slice(), Mode::from_raw_mode(0o700))
        .map_err(|e| io_err(format!("creating {}", shown(&staging)))(e.into()))?;
    Ok(Staged { dest: dest.to_path_buf(), name, staging, pfd, later, stats: BuildStats::default(), published: false })
}

impl Staged {
    /// Links now the files of those `stored` contents that are awaited
    /// (in `later`): contents a pull has just committed to the store, with
    /// every path that needs them ([`missing`]'s entries). Called batch by
    /// batch while the fetch runs, so that [`Staged::finish`] links only
    /// what is left: the links of a first pull's 20,000 files were most of
    /// its build, made with the fetch over and a core idle. Only the given
    /// files are visited (each directory opened once per call, beneath the
    /// staging without following a link), never the whole manifest, so a
    /// million-file pull's hundreds of batches cost what its links cost.
    /// Nothing is synced here (`finish` syncs everything once).
    pub fn link_stored<'m>(
        &mut self,
        store: &Store,
        stored: impl IntoIterator<Item = &'m Missing>,
    ) -> Result<(), SnapshotError> {
        self.link_paths(store, stored, 0)
    }

    /// [`Staged::link_stored`] of contents a pull wrote into the staging
    /// itself, at their first path ([`Staged::root`],
    /// [`crate::store::Batch::put_missing_in`]): links the other paths.
    pub fn link_copies<'m>(
        &mut self,
        store: &Store,
        stored: impl IntoIterator<Item = &'m Missing>,
    ) -> Result<(), SnapshotError> {
        self.link_paths(store, stored, 1)
    }

    /// The second half of [`stage`] after [`stage_dirs`]: symlinks, and
    /// links of the files whose content is not awaited.
    pub fn fill_stored(&mut self, manifest: &Manifest, store: &Store) -> Result<(), SnapshotError> {
        let more = fill(manifest, Some(store), self.pfd.as_fd(), &self.staging, Pass::Rest(&self.later))?;
        self.stats.files += more.files;
        self.stats.store_copies += more.store_copies;
        self.stats.symlinks += more.symlinks;
        self.stats.not_created += more.not_created;
        Ok(())
    }

    /// The staging directory, open: where a pull writes the files it
    /// fetches, at their manifest paths
    /// ([`crate::store::Batch::put_missing_in`]).
    pub fn root(&self) -> Result<Arc<OwnedFd>, SnapshotError> {
        let root = open_dir_at(self.pfd.as_fd(), &self.staging).map_err(io_err("opening the staging directory"))?;
        Ok(Arc::new(root))
    }

    /// Links the paths of `stored` past the first `skip` of each (those
    /// are in place already, and counted).
    fn link_paths<'m>(
        &mut self,
        store: &Store,
        stored: impl IntoIterator<Item = &'m Missing>,
        skip: usize,
    ) -> Result<(), SnapshotError> {
        let mut now = HashSet::new();
        let mut files: Vec<(&[u8], &[u8], &Sha256)> = Vec::new();
        for m in stored {
            if self.later.contains(&m.sha256) && now.insert(m.sha256) {
                self.stats.files += m.paths.len().min(skip) as u64;
                files.extend(m.paths.iter().skip(skip).map(|p| {
                    let (dir, name) = split_last(p);
                    (dir, name, &m.sha256)
                }));
            }
        }
        if files.is_empty() {
            self.later.retain(|d| !now.contains(d));
            return Ok(());
        }
        files.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let root = open_dir_at(self.pfd.as_fd(), &self.staging).map_err(io_err("opening the staging directory"))?;
        let mut linker = store.linker();
        let mut open: Option<(&[u8], OwnedFd)> = None;
        for (dir, name, sha256) in files {
            let fd = match open.take() {
                Some((d, fd)) if d == dir => fd,
                _ if dir.is_empty() => root.try_clone().map_err(io_err("opening the staging directory"))?,
                _ => open_dir_beneath(root.as_fd(), components(dir))
                    .map_err(io_err(format!("opening {}", shown(dir))))?,
            };
            self.stats.store_copies += u64::from(linker.link(sha256, fd.as_fd(), name)?);
            self.stats.files += 1;
            open = Some((dir, fd));
        }
        self.later.retain(|d| !now.contains(d));
        Ok(())
    }

    /// Links the files of the contents that were fetched and not linked by
    /// [`Staged::link_stored`] (all of `manifest`'s must now be in the
    /// store), syncs, writes the manifest and publishes with one rename.
    /// `manifest` is the staged one, or the
    /// staged one less files of `later` contents (those that changed on the
    /// client during the fetch, left out).
    pub fn finish(mut self, manifest: &Manifest, store: &Store) -> Result<Built, SnapshotError> {
        let unlimited = Limits { max_entries: u64::MAX, max_total_bytes: u64::MAX, max_line_bytes: usize::MAX };
        manifest.check(&unlimited)?;
        // Only the `later` contents can be missing (the others are linked
        // already). No lookup first: a pull has just stored them, and a
        // link of a missing content fails anyway (20,000 lookups were a
        // fifth of a first pull's build); only then are the missing ones
        // counted, and the staging goes with `self`.
        let more = match fill(manifest, Some(store), self.pfd.as_fd(), &self.staging, Pass::Later(&self.later)) {
            Err(SnapshotError::Store(StoreError::Missing(_))) => {
                let wanted: HashSet<&Sha256> =
                    manifest.entries.iter().filter_map(|e| e.sha256()).filter(|d| self.later.contains(*d)).collect();
                return Err(SnapshotError::Incomplete(wanted.into_iter().filter(|d| !store.has(d)).count()));
            }
            r => r?,
        };
        self.stats.files += more.files;
        self.stats.store_copies += more.store_copies;
        let stats = self.stats.clone();
        let dest = self.dest.clone();
        // An uncompressed manifest of an unfinished build by an earlier
        // version would be left behind.
        if let Err(e) = std::fs::remove_file(plain_manifest_path(&dest))
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(io_err(format!("removing a stale {}", plain_manifest_path(&dest).display()))(e));
        }
        write_manifest(self.pfd.as_fd(), &self.name, &manifest.to_bytes())?;
        // Synced so the name survives a crash.
        rename_noreplace(self.pfd.as_fd(), &self.staging, &self.name)
            .and_then(|()| Ok(rustix::fs::fsync(&self.pfd)?))
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    SnapshotError::Exists(dest.clone())
                } else {
                    io_err(format!("publishing {}", dest.display()))(e)
                }
            })?;
        self.published = true;
        Ok(Built::Published(stats))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.published
            && let Err(e) = remove_tree(self.pfd.as_fd(), &self.staging)
        {
            tracing::error!(staging = %shown(&self.staging), error = %e, "could not remove the staging directory of a failed build");
        }
    }
}

/// Which part of a snapshot [`fill`] makes.
#[derive(Clone, Copy)]
enum Pass<'a> {
    /// Directories, symlinks, and the files whose content is not in the set.
    Now(&'a HashSet<Sha256>),
    /// Directories only (the first half of [`Pass::Now`]).
    Dirs,
    /// [`Pass::Now`] in directories [`Pass::Dirs`] made.
    Rest(&'a HashSet<Sha256>),
    /// The files whose content is in the set (the directories exist).
    Later(&'a HashSet<Sha256>),
}

/// Files of one directory handed to a linking thread: the directory's
/// own fd (a duplicate, so the walk may move on and close its copy) and
/// the names to link in it.
struct Links<'m> {
    dir: OwnedFd,
    files: Vec<(&'m [u8], &'m Sha256)>,
}

/// Files per [`Links`] batch: small enough that both threads have work
/// in a tree of few directories, large enough that the hand-over costs
/// nothing beside the links.
const LINK_BATCH: usize = 256;

/// Threads that link files while the walk makes directories and symlinks.
/// Two: 20,000 links took 0.12 s on one thread and 0.075 s on two on a
/// 2-vCPU node (each link is a short system call that waits on the
/// directory and inode updates, so a second thread overlaps them); a
/// snapshot's links are most of a repeat pull's time.
fn link_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 2))
}

/// Creates the entries of `pass` below the staging directory: the walk
/// (this thread) makes directories and symlinks in depth-first order and
/// hands the files to link, directory by directory, to
/// [`link_threads`] threads.
fn fill(
    manifest: &Manifest,
    store: Option<&Store>,
    parent: BorrowedFd<'_>,
    staging: &[u8],
    pass: Pass<'_>,
) -> Result<BuildStats, SnapshotError> {
    let root = open_dir_at(parent, staging).map_err(io_err("opening the staging directory"))?;
    if let Pass::Later(later) = pass
        && later.is_empty()
    {
        // Nothing was left for later: only the sync below remains.
        rustix::fs::syncfs(&root).map_err(|x| io_err("syncing the snapshot")(x.into()))?;
        return Ok(BuildStats::default());
    }
    let mut order: Vec<&crate::manifest::Entry> = manifest.entries.iter().collect();
    order.sort_by(|a, b| tree_order(&a.path, &b.path));
    let mut stack = DirStack::new(root);
    let (to_link, batches) = std::sync::mpsc::sync_channel::<Links<'_>>(4);
    // Only the linking threads hold the receiver: should they all end
    // (a panic included), the walk's next send fails instead of waiting.
    let batches = std::sync::Arc::new(std::sync::Mutex::new(batches));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (walked, linked) = std::thread::scope(|scope| {
        let stop = &stop;
        // No store: a pass that links nothing ([`Pass::Dirs`]).
        let linkers: Vec<_> = store
            .into_iter()
            .flat_map(|store| (0..link_threads()).map(move |_| store))
            .map(|store| {
                let batches = std::sync::Arc::clone(&batches);
                scope.spawn(move || -> Result<BuildStats, SnapshotError> {
                    let mut linker = store.linker();
                    let mut stats = BuildStats::default();
                    let mut failed = None;
                    // The lock is held only while taking a batch. After an
                    // error the batches are taken and dropped, so that the
                    // walk, told by `stop`, never waits on a full channel.
                    while let Ok(batch) = batches.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                        if failed.is_some() {
                            continue;
                        }
                        for (name, sha256) in batch.files {
                            match linker.link(sha256, batch.dir.as_fd(), name) {
                                Ok(made) => {
                                    stats.store_copies += u64::from(made);
                                    stats.files += 1;
                                }
                                Err(e) => {
                                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                                    failed = Some(e);
                                    break;
                                }
                            }
                        }
                    }
                    failed.map_or(Ok(stats), |e| Err(e.into()))
                })
            })
            .collect();
        drop(batches);
        let walked = walk(&order, &mut stack, pass, to_link, stop);
        let mut linked = Ok(BuildStats::default());
        for t in linkers {
            let r = t.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            linked = match (linked, r) {
                (Ok(a), Ok(b)) => Ok(BuildStats {
                    files: a.files + b.files,
                    store_copies: a.store_copies + b.store_copies,
                    ..BuildStats::default()
                }),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        (walked, linked)
    });
    // A linking error first: a walk that stopped because the linkers did
    // only says that they stopped.
    let linked = linked?;
    let mut stats = walked?;
    stats.files = linked.files;
    stats.store_copies = linked.store_copies;
    if let Pass::Later(_) = pass {
        // One filesystem sync for every directory entry made by every
        // pass (the file inodes were synced when they entered the store).
        rustix::fs::syncfs(stack.root()).map_err(|x| io_err("syncing the snapshot")(x.into()))?;
    }
    Ok(stats)
}

/// The walk of [`fill`]: directories and symlinks made here, files sent
/// to `to_link` in batches of one directory each.
fn walk<'m>(
    order: &[&'m crate::manifest::Entry],
    stack: &mut DirStack,
    pass: Pass<'_>,
    to_link: std::sync::mpsc::SyncSender<Links<'m>>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<BuildStats, SnapshotError> {
    let mut stats = BuildStats::default();
    let mut batch: Option<(&[u8], Links<'m>)> = None;
    let stopped = || io_err("linking files")(io::Error::other("the linking threads stopped"));
    let send = |b: Links<'m>| {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(stopped());
        }
        to_link.send(b).map_err(|_| stopped())
    };
    for e in order {
        let (dir, name) = split_last(&e.path);
        match (&e.kind, pass) {
            (Kind::Dir, Pass::Now(_) | Pass::Dirs) => {
                let pfd = stack.parent(dir).map_err(io_err(format!("opening the parent of {}", shown(&e.path))))?;
                rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o755))
                    .map_err(|x| io_err(format!("creating {}", shown(&e.path)))(x.into()))?;
                let fd = open_dir_at(pfd, name).map_err(io_err(format!("opening {}", shown(&e.path))))?;
                // Exactly 0755, whatever the node's umask.
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
                    .map_err(|x| io_err(format!("chmod {}", shown(&e.path)))(x.into()))?;
                stack.push(e.path.clone(), fd);
                stats.dirs += 1;
            }
            (Kind::Dir, Pass::Later(_) | Pass::Rest(_)) => {
                let pfd = stack.parent(dir).map_err(io_err(format!("opening the parent of {}", shown(&e.path))))?;
                let fd = open_dir_at(pfd, name).map_err(io_err(format!("opening {}", shown(&e.path))))?;
                stack.push(e.path.clone(), fd);
            }
            (_, Pass::Dirs) => {}
            (Kind::File { sha256, .. }, Pass::Now(later) | Pass::Rest(later)) if later.contains(sha256) => {}
            (Kind::File { sha256, .. }, Pass::Later(later)) if !later.contains(sha256) => {}
            (Kind::File { sha256, .. }, _) => {
                if let Some((d, b)) = &batch
                    && (*d != dir || b.files.len() >= LINK_BATCH)
                    && let Some((_, b)) = batch.take()
                {
                    send(b)?;
                }
                if batch.is_none() {
                    let pfd = stack.parent(dir).map_err(io_err(format!("opening the parent of {}", shown(&e.path))))?;
                    let fd = pfd
                        .try_clone_to_owned()
                        .map_err(io_err(format!("opening the parent of {}", shown(&e.path))))?;
                    batch = Some((dir, Links { dir: fd, files: Vec::with_capacity(LINK_BATCH) }));
                }
                if let Some((_, b)) = batch.as_mut() {
                    b.files.push((name, sha256));
                }
            }
            (Kind::Symlink { target }, Pass::Now(_) | Pass::Rest(_)) => {
                let pfd = stack.parent(dir).map_err(io_err(format!("opening the parent of {}", shown(&e.path))))?;
                rustix::fs::symlinkat(target.as_slice(), pfd, name)
                    .map_err(|x| io_err(format!("creating symlink {}", shown(&e.path)))(x.into()))?;
                stats.symlinks += 1;
            }
            (Kind::Fifo | Kind::Socket | Kind::CharDev(_) | Kind::BlockDev(_), Pass::Now(_) | Pass::Rest(_)) => {
                stats.not_created += 1
            }
            (_, Pass::Later(_)) => {}
        }
    }
    if let Some((_, b)) = batch {
        send(b)?;
    }
    Ok(stats)
}

/// Writes `<name>.ftree.zst` in `parent` (temporary name, fsync, rename).
fn write_manifest(parent: BorrowedFd<'_>, name: &[u8], text: &[u8]) -> Result<(), SnapshotError> {
    let final_name = [name, b".ftree.zst"].concat();
    let tmp = [b".", name, b".ftree.tmp-", random_token().as_bytes()].concat();
    let ctx = || format!("writing {}", shown(&final_name));
    let packed = zstd::bulk::compress(text, MANIFEST_ZSTD_LEVEL).map_err(io_err(ctx()))?;
    let text = packed.as_slice();
    let fd = rustix::fs::openat(
        parent,
        tmp.as_slice(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| io_err(ctx())(e.into()))?;
    let mut f = std::fs::File::from(fd);
    let r = f
        .write_all(text)
        .and_then(|_| rustix::fs::fchmod(&f, Mode::from_raw_mode(0o644)).map_err(io::Error::from))
        .and_then(|_| f.sync_all())
        .and_then(|_| Ok(rustix::fs::renameat(parent, tmp.as_slice(), parent, final_name.as_slice())?))
        .and_then(|_| Ok(rustix::fs::fsync(parent)?));
    if r.is_err() {
        let _ = rustix::fs::unlinkat(parent, tmp.as_slice(), rustix::fs::AtFlags::empty());
    }
    r.map_err(io_err(ctx()))
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
pub(crate) mod tests;
