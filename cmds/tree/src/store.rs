//! The node's content-addressed store: one read-only inode per distinct
//! content, which every snapshot hard-links.
//!
//! Layout: `<store>/sha256/<first two hex digits>/<64 hex digits>`, files
//! mode 0444 owned by whoever runs the node; `<store>/tmp/` holds uploads
//! in progress (same filesystem, so publishing is a rename). Nothing
//! enters under a digest it does not have: [`Store::put`] hashes while it
//! writes, checks size and digest, fsyncs, and only then renames into
//! place (without replacing anything). [`Store::batch`] does the same for
//! many contents with one filesystem sync before their renames, which is
//! what a pull of thousands of small files wants; its
//! [`Batch::put_missing_in`] writes into a directory of the caller's (a
//! snapshot's staging) instead of `tmp/` and links from there into the
//! store at the commit, after the same sync.
//!
//! Hard-link limit: a filesystem caps the links of one inode (ext4:
//! 65,000). When linking a content fails with `EMLINK`, a second copy
//! `<hex>.1` is made (checked against the digest while copying) and linked
//! from instead, then `<hex>.2`, and so on. [`Store::with_link_max`]
//! injects a smaller limit for tests.
//!
//! A content is unreferenced when every copy has a link count of 1 (only
//! the store's own name): [`Store::gc`] removes those, after retention
//! removed the snapshots that used them.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_archive::fsutil::{components, lstat_at, open_dir, open_dir_beneath, random_token, read_names, split_last};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use sha2::Digest as _;

use crate::manifest::Sha256;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What arrived is not what the manifest promised; nothing was stored.
    #[error("E_TREE_CONTENT: expected {expected_size} bytes with sha256 {expected}, got {}", describe_got(*.got_size, .got.as_ref(), *.expected_size))]
    Mismatch {
        /// The manifest's digest.
        expected: Sha256,
        /// The manifest's size.
        expected_size: u64,
        /// Bytes that arrived (at most `expected_size + 1`: reading stops
        /// one byte past the promise).
        got_size: u64,
        /// Digest of what arrived, when it was not longer than promised.
        got: Option<Sha256>,
    },
    /// A content the caller needs is not in the store.
    #[error("E_STORE: content {0} is not in the store")]
    Missing(Sha256),
    /// A stored copy does not hash to its name (disk corruption).
    #[error("E_STORE: stored content {digest} is corrupt: {problem}")]
    Corrupt {
        /// The content's name.
        digest: Sha256,
        /// What is wrong.
        problem: String,
    },
    /// The store's filesystem failed.
    #[error("{}: {context}: {source}", if is_disk_full(source) { "E_DISK_FULL" } else { "E_STORE" })]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

fn describe_got(size: u64, got: Option<&Sha256>, expected_size: u64) -> String {
    match got {
        Some(d) => format!("{size} bytes with sha256 {d}"),
        None => format!("more than {expected_size} bytes"),
    }
}

pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::NOSPC.raw_os_error() || c == rustix::io::Errno::DQUOT.raw_os_error())
}

impl StoreError {
    /// The reason code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Mismatch { .. } => "E_TREE_CONTENT",
            StoreError::Io { source, .. } if is_disk_full(source) => "E_DISK_FULL",
            _ => "E_STORE",
        }
    }

    fn io(context: impl Into<String>, source: impl Into<io::Error>) -> StoreError {
        StoreError::Io { context: context.into(), source: source.into() }
    }
}

/// What [`Store::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The content was new and is now stored (its size).
    Stored(u64),
    /// The content was already there; the reader was not read.
    Present,
}

/// One stored inode of a content: the primary (`index` 0) or a copy made
/// at the link limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    /// 0 for `<hex>`, n for `<hex>.n`.
    pub index: u32,
    /// Its link count (1 = only the store holds it).
    pub nlink: u64,
    /// Its size.
    pub size: u64,
}

/// One content of the store, as [`Store::iter`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// Its digest (its name).
    pub sha256: Sha256,
    /// Its inodes.
    pub copies: Vec<Copy>,
}

impl Content {
    /// Links from outside the store (snapshots) over all copies.
    pub fn references(&self) -> u64 {
        self.copies.iter().map(|c| c.nlink.saturating_sub(1)).sum()
    }
}

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Contents checked.
    pub contents: u64,
    /// Inodes re-hashed (each once, however many snapshots link it).
    pub inodes: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Problems: content, copy index, what is wrong.
    pub bad: Vec<(Sha256, u32, String)>,
}

/// A content-addressed store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    link_max: Option<u64>,
}

const HEX_LEN: usize = 64;

fn copy_name(hex: &str, index: u32) -> String {
    if index == 0 { hex.to_string() } else { format!("{hex}.{index}") }
}

/// `<hex>` or `<hex>.<n>` → (digest, n).
fn parse_name(name: &[u8]) -> Option<(Sha256, u32)> {
    let (hex, idx) = match name.get(HEX_LEN) {
        None => (name, 0),
        Some(b'.') => {
            let n = crate::manifest::encode::parse_dec(&name[HEX_LEN + 1..])?;
            (&name[..HEX_LEN], u32::try_from(n).ok().filter(|n| *n > 0)?)
        }
        Some(_) => return None,
    };
    Some((Sha256::from_hex(hex)?, idx))
}

impl Store {
    /// Opens (creating when needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        for sub in ["sha256", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(Store { root, link_max: None })
    }

    /// Treats every inode with `n` links as full, as if the filesystem's
    /// limit were `n` (tests of the `EMLINK` fallback).
    pub fn with_link_max(mut self, n: u64) -> Store {
        self.link_max = Some(n);
        self
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn shard(&self, d: &Sha256) -> PathBuf {
        let hex = d.to_hex();
        self.root.join("sha256").join(&hex[..2])
    }

    /// The path of a content's primary copy.
    pub fn path(&self, d: &Sha256) -> PathBuf {
        self.shard(d).join(d.to_hex())
    }

    /// Whether the content is stored.
    pub fn has(&self, d: &Sha256) -> bool {
        match rustix::fs::lstat(self.path(d)) {
            Ok(st) => FileType::from_raw_mode(st.st_mode) == FileType::RegularFile,
            Err(rustix::io::Errno::NOENT) => false,
            Err(e) => {
                tracing::warn!(content = %d, error = %e, "cannot stat stored content; treating it as missing");
                false
            }
        }
    }

    /// Opens a stored content for reading.
    pub fn open_content(&self, d: &Sha256) -> Result<File, StoreError> {
        let fd = rustix::fs::open(self.path(d), OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| match e {
                rustix::io::Errno::NOENT => StoreError::Missing(*d),
                e => StoreError::io(format!("opening stored content {d}"), e),
            })?;
        Ok(File::from(fd))
    }

    fn open_tmp(&self) -> Result<OwnedFd, StoreError> {
        open_dir(&self.root.join("tmp")).map_err(|e| StoreError::io("opening the store's tmp", e))
    }

    /// A new temporary file in `tmp/` (open as `tmp`), named with this
    /// process's id so a later [`Store::clean_tmp`] knows whether its
    /// writer is alive.
    fn temp_in(&self, tmp: BorrowedFd<'_>) -> Result<(File, String), StoreError> {
        let name = format!("put-{}-{}", std::process::id(), random_token());
        let fd = rustix::fs::openat(
            tmp,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| StoreError::io("creating a temporary file in the store", e))?;
        Ok((File::from(fd), name))
    }

    fn temp(&self) -> Result<(File, String), StoreError> {
        self.temp_in(self.open_tmp()?.as_fd())
    }

    fn remove_temp(&self, name: &str) {
        let _ = std::fs::remove_file(self.root.join("tmp").join(name));
    }

    /// Makes a finished temporary file read-only, syncs it, and renames it
    /// to `shard/target` without replacing anything (`Ok(false)` when the
    /// name exists already).
    fn publish(&self, f: &File, tmp: &str, d: &Sha256, target: &str) -> Result<bool, StoreError> {
        rustix::fs::fchmod(f, Mode::from_raw_mode(0o444)).map_err(|e| StoreError::io("chmod in the store", e))?;
        f.sync_all().map_err(|e| StoreError::io("syncing stored content", e))?;
        self.rename_into(tmp, d, target)
    }

    /// Renames `tmp/<tmp>` to `shard/<target>` without replacing anything
    /// (`Ok(false)` when the name exists already), and syncs the shard.
    fn rename_into(&self, tmp: &str, d: &Sha256, target: &str) -> Result<bool, StoreError> {
        let shard = self.shard(d);
        std::fs::create_dir_all(&shard).map_err(|e| StoreError::io(format!("creating {}", shard.display()), e))?;
        let tmp_dir = open_dir(&self.root.join("tmp")).map_err(|e| StoreError::io("opening the store's tmp", e))?;
        let shard_fd = open_dir(&shard).map_err(|e| StoreError::io(format!("opening {}", shard.display()), e))?;
        match rustix::fs::renameat_with(&tmp_dir, tmp, &shard_fd, target, rustix::fs::RenameFlags::NOREPLACE) {
            Ok(()) => {
                rustix::fs::fsync(&shard_fd).map_err(|e| StoreError::io("syncing the store", e))?;
                Ok(true)
            }
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(StoreError::io(format!("storing {d}"), e)),
        }
    }

    /// Makes everything written to the store's file system durable (one
    /// `syncfs`): the names of [`Batch::commit_unsynced`] batches.
    pub fn sync(&self) -> Result<(), StoreError> {
        let tmp = self.open_tmp()?;
        rustix::fs::syncfs(&tmp).map_err(|e| StoreError::io("syncing the store", e))
    }

    /// A batch of puts made durable together by [`Batch::commit`]: one
    /// filesystem sync per batch instead of two fsyncs per content (on a
    /// disk where an fsync costs a millisecond, 100,000 single puts spend
    /// minutes syncing). Use it for a pull's many small files.
    pub fn batch(&self) -> Result<Batch<'_>, StoreError> {
        Ok(Batch {
            store: self,
            tmp: self.open_tmp()?,
            shards: HashMap::new(),
            pending: Vec::new(),
            names: HashSet::new(),
            bytes: 0,
            buf: vec![0u8; COPY_BUF],
            beneath: Beneath::default(),
        })
    }

    /// Stores what `reader` yields as the content `sha256` of `size`
    /// bytes: written to a temporary file while hashed, compared, synced,
    /// then renamed into place. A wrong size or digest stores nothing and
    /// says what arrived. An already stored content is not read again.
    pub fn put<R: Read>(&self, mut reader: R, size: u64, sha256: &Sha256) -> Result<Put, StoreError> {
        if self.has(sha256) {
            return Ok(Put::Present);
        }
        let (mut f, tmp) = self.temp()?;
        let result = (|| {
            let (got_size, got) = copy_hashed(&mut reader, &mut f, size, &mut vec![0u8; COPY_BUF])?;
            if got_size != size || got.as_ref() != Some(sha256) {
                return Err(StoreError::Mismatch { expected: *sha256, expected_size: size, got_size, got });
            }
            self.publish(&f, &tmp, sha256, &sha256.to_hex())
        })();
        match result {
            Ok(true) => Ok(Put::Stored(size)),
            Ok(false) => {
                self.remove_temp(&tmp);
                Ok(Put::Present)
            }
            Err(e) => {
                self.remove_temp(&tmp);
                Err(e)
            }
        }
    }

    /// Hard-links content `d` as `name` in the directory `dirfd`. When the
    /// primary copy is at the link limit, links a further copy instead
    /// (making it first if needed). Returns whether a new copy was made.
    /// For many links, [`Store::linker`] keeps the shards open.
    pub fn link_into(&self, d: &Sha256, dirfd: BorrowedFd<'_>, name: &[u8]) -> Result<bool, StoreError> {
        self.linker().link(d, dirfd, name)
    }

    /// A [`Linker`]: links contents with each shard directory opened once.
    pub fn linker(&self) -> Linker<'_> {
        Linker { store: self, shards: HashMap::new(), absent: HashSet::new() }
    }

    /// Makes copy `cname` of content `d` from its primary, checking the
    /// digest while copying (a corrupt primary is not multiplied).
    fn make_copy(&self, d: &Sha256, shard: BorrowedFd<'_>, cname: &str) -> Result<(), StoreError> {
        let src = rustix::fs::openat(
            shard,
            d.to_hex().as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| StoreError::io(format!("opening {d}"), e))?;
        let size = rustix::fs::fstat(&src).map_err(|e| StoreError::io(format!("stat {d}"), e))?.st_size.max(0) as u64;
        let (mut f, tmp) = self.temp()?;
        let result = (|| {
            let (got_size, got) = copy_hashed(&mut File::from(src), &mut f, size, &mut vec![0u8; COPY_BUF])?;
            if got_size != size || got.as_ref() != Some(d) {
                return Err(StoreError::Corrupt {
                    digest: *d,
                    problem: "the primary copy does not match its digest".into(),
                });
            }
            self.publish(&f, &tmp, d, cname)
        })();
        if !matches!(result, Ok(true)) {
            self.remove_temp(&tmp);
        }
        result.map(|_| ())
    }

    /// Every content of the store with its copies, shard by shard (names
    /// that are not contents are ignored).
    pub fn iter(&self) -> impl Iterator<Item = Result<Content, StoreError>> + '_ {
        let base = self.root.join("sha256");
        let shards = match open_dir(&base).and_then(|fd| read_names(fd.as_fd())) {
            Ok(names) => names,
            Err(e) => {
                return Box::new(std::iter::once(Err(StoreError::io("listing the store", e))))
                    as Box<dyn Iterator<Item = Result<Content, StoreError>>>;
            }
        };
        Box::new(shards.into_iter().flat_map(move |s| match self.shard_contents(&base.join(OsStr::from_bytes(&s))) {
            Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        }))
    }

    fn shard_contents(&self, dir: &Path) -> Result<Vec<Content>, StoreError> {
        let fd = open_dir(dir).map_err(|e| StoreError::io(format!("opening {}", dir.display()), e))?;
        let names = read_names(fd.as_fd()).map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        let mut out: Vec<Content> = Vec::new();
        for n in names {
            let Some((sha256, index)) = parse_name(&n) else { continue };
            let Some(st) = lstat_at(fd.as_fd(), &n).map_err(|e| StoreError::io("stat in the store", e))? else {
                continue;
            };
            let copy = Copy { index, nlink: st.st_nlink, size: st.st_size.max(0) as u64 };
            match out.last_mut() {
                Some(c) if c.sha256 == sha256 => c.copies.push(copy),
                _ => out.push(Content { sha256, copies: vec![copy] }),
            }
        }
        Ok(out)
    }

    /// Re-hashes every stored inode once and reports those that do not
    /// match their name (or are not read-only regular files).
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut r = VerifyReport::default();
        let mut buf = vec![0u8; 256 << 10];
        for c in self.iter() {
            let c = c?;
            r.contents += 1;
            let hex = c.sha256.to_hex();
            for copy in &c.copies {
                r.inodes += 1;
                let path = self.shard(&c.sha256).join(copy_name(&hex, copy.index));
                let problem = match verify_one(&path, &c.sha256, &mut buf) {
                    Ok((bytes, problem)) => {
                        r.bytes += bytes;
                        problem
                    }
                    Err(e) => Some(format!("unreadable: {e}")),
                };
                if let Some(p) = problem {
                    r.bad.push((c.sha256, copy.index, p));
                }
            }
        }
        Ok(r)
    }

    /// Removes every content no snapshot links any more (every copy's link
    /// count is 1). Returns the number of contents and bytes removed. Run
    /// it under the lock that also guards builds, so no build links a
    /// content while it goes.
    pub fn gc(&self) -> Result<(u64, u64), StoreError> {
        let mut removed = (0, 0);
        let unreferenced: Vec<Content> =
            self.iter().filter(|c| !matches!(c, Ok(c) if c.references() > 0)).collect::<Result<_, _>>()?;
        for c in unreferenced {
            self.remove(&c.sha256)?;
            removed.0 += 1;
            removed.1 += c.copies.iter().map(|k| k.size).sum::<u64>();
        }
        Ok(removed)
    }

    /// Removes a content and all its copies (snapshots that link it keep
    /// their names: their inodes live on).
    pub fn remove(&self, d: &Sha256) -> Result<(), StoreError> {
        let shard = self.shard(d);
        let hex = d.to_hex();
        let fd = match open_dir(&shard) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(format!("opening {}", shard.display()), e)),
        };
        let names = read_names(fd.as_fd()).map_err(|e| StoreError::io(format!("listing {}", shard.display()), e))?;
        for n in names.iter().filter(|n| parse_name(n).is_some_and(|(s, _)| s == *d)) {
            match rustix::fs::unlinkat(&fd, n.as_slice(), AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(StoreError::io(format!("removing {hex}"), e)),
            }
        }
        rustix::fs::fsync(&fd).map_err(|e| StoreError::io("syncing the store", e))?;
        Ok(())
    }

    /// Removes temporary files whose writer process is gone (a put killed
    /// halfway). Returns how many.
    pub fn clean_tmp(&self) -> Result<usize, StoreError> {
        let dir = self.root.join("tmp");
        let fd = open_dir(&dir).map_err(|e| StoreError::io("opening the store's tmp", e))?;
        let mut n = 0;
        for name in read_names(fd.as_fd()).map_err(|e| StoreError::io("listing the store's tmp", e))? {
            let pid = std::str::from_utf8(&name)
                .ok()
                .and_then(|s| s.strip_prefix("put-"))
                .and_then(|s| s.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| p == std::process::id() || Path::new(&format!("/proc/{p}")).exists());
            if !alive && rustix::fs::unlinkat(&fd, name.as_slice(), AtFlags::empty()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Verified contents waiting in the store's `tmp/` for [`Batch::commit`].
///
/// [`Batch::put`] checks size and digest while writing, exactly like
/// [`Store::put`], but neither syncs nor publishes. [`Batch::commit`] syncs
/// the filesystem once, and only then renames every content into place
/// (and syncs again): a content appears under its name only after its
/// bytes are on disk, so a crash can lose a batch but never leave a wrong
/// content under a digest. Dropping an uncommitted batch removes its
/// temporary files; after a crash [`Store::clean_tmp`] does.
#[derive(Debug)]
pub struct Batch<'s> {
    store: &'s Store,
    tmp: OwnedFd,
    /// Open shard directories, by their two hex digits.
    shards: HashMap<u8, OwnedFd>,
    /// Where each content waits, its digest and size.
    pending: Vec<(Waiting, Sha256, u64)>,
    names: HashSet<Sha256>,
    bytes: u64,
    /// The copy buffer, reused by every put of the batch.
    buf: Vec<u8>,
    /// The directory [`Batch::put_missing_in`] wrote into last.
    beneath: Beneath,
}

impl Batch<'_> {
    /// Writes and checks one content; [`Put::Present`] (without reading)
    /// when the store or this batch has it already.
    pub fn put<R: Read>(&mut self, reader: R, size: u64, sha256: &Sha256) -> Result<Put, StoreError> {
        if self.store.has(sha256) {
            return Ok(Put::Present);
        }
        self.put_missing(reader, size, sha256)
    }

    /// [`Batch::put`] of a content the caller has just found missing (a
    /// pull fetches only those): not looked up in the store again. Should
    /// another writer store it meanwhile (a member of a share group),
    /// the commit finds the name taken and drops this copy.
    pub fn put_missing<R: Read>(&mut self, mut reader: R, size: u64, sha256: &Sha256) -> Result<Put, StoreError> {
        if self.names.contains(sha256) {
            return Ok(Put::Present);
        }
        let (mut f, tmp) = self.store.temp_in(self.tmp.as_fd())?;
        let result = (|| {
            let (got_size, got) = copy_hashed(&mut reader, &mut f, size, &mut self.buf)?;
            if got_size != size || got.as_ref() != Some(sha256) {
                return Err(StoreError::Mismatch { expected: *sha256, expected_size: size, got_size, got });
            }
            rustix::fs::fchmod(&f, Mode::from_raw_mode(0o444)).map_err(|e| StoreError::io("chmod in the store", e))
        })();
        match result {
            Ok(()) => {
                self.pending.push((Waiting::Tmp(tmp), *sha256, size));
                self.names.insert(*sha256);
                self.bytes += size;
                Ok(Put::Stored(size))
            }
            Err(e) => {
                self.store.remove_temp(&tmp);
                Err(e)
            }
        }
    }

    /// [`Batch::put_missing`] written as `path` beneath the directory
    /// `root` instead of into the store's `tmp/` (each directory of `path`
    /// opened beneath `root` without following a link; they must exist):
    /// the commit links it into the store (after the same sync) and leaves
    /// it where it is, so the file is the store's inode at the name that
    /// needs it. For a pull writing straight into its snapshot's staging
    /// directory: one directory entry per content instead of three (a
    /// temporary name, the rename out of it, the snapshot's link), which
    /// was a quarter of the node's CPU per file of a first pull. `root`
    /// must be the caller's alone until the commit, and `path` new in it.
    /// A content this batch holds already is linked there from the store
    /// at the commit. A wrong size or digest leaves nothing at `path`;
    /// nor does dropping the batch uncommitted. The batch keeps `root` and
    /// paths, not one open directory per content (a batch of 4,096 files
    /// in as many directories would pass a process's 1,024 open files).
    pub fn put_missing_in<R: Read>(
        &mut self,
        mut reader: R,
        size: u64,
        sha256: &Sha256,
        root: &Arc<OwnedFd>,
        path: &[u8],
    ) -> Result<Put, StoreError> {
        if self.names.contains(sha256) {
            self.pending.push((Waiting::Link(Arc::clone(root), path.to_vec()), *sha256, 0));
            return Ok(Put::Present);
        }
        let shown = || String::from_utf8_lossy(path).into_owned();
        let fd = self
            .beneath
            .in_dir(root.as_fd(), path, |dir, name| {
                rustix::fs::openat(
                    dir,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o444),
                )
                .map_err(io::Error::from)
            })
            .and_then(|r| r)
            .map_err(|e| StoreError::io(format!("creating {}", shown()), e))?;
        let mut f = File::from(fd);
        let result = (|| {
            let (got_size, got) = copy_hashed(&mut reader, &mut f, size, &mut self.buf)?;
            if got_size != size || got.as_ref() != Some(sha256) {
                return Err(StoreError::Mismatch { expected: *sha256, expected_size: size, got_size, got });
            }
            // Exactly 0444, whatever the node's umask.
            rustix::fs::fchmod(&f, Mode::from_raw_mode(0o444)).map_err(|e| StoreError::io("chmod in the store", e))
        })();
        let waiting = Waiting::At(Arc::clone(root), path.to_vec());
        match result {
            Ok(()) => {
                self.pending.push((waiting, *sha256, size));
                self.names.insert(*sha256);
                self.bytes += size;
                Ok(Put::Stored(size))
            }
            Err(e) => {
                waiting.remove(self.store, &mut self.beneath);
                Err(e)
            }
        }
    }

    /// The digests of the contents waiting (what a commit makes present).
    pub fn contents(&self) -> impl Iterator<Item = &Sha256> {
        self.names.iter()
    }

    /// Contents waiting.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Bytes waiting (to cut batches by size).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes every waiting content durable and visible; returns how many
    /// were new (a content stored meanwhile by someone else is dropped).
    pub fn commit(self) -> Result<usize, StoreError> {
        self.commit_with(true)
    }

    /// [`Batch::commit`] less the sync after the renames: every content is
    /// durable before its name appears, but the names themselves may be
    /// lost to a power cut until the next sync ([`Store::sync`], or the
    /// next batch's commit, whose first sync takes them along). A pull
    /// that commits batch after batch pays one sync per batch instead of
    /// two; losing names costs a fetch again, never a wrong content.
    pub fn commit_unsynced(self) -> Result<usize, StoreError> {
        self.commit_with(false)
    }

    fn commit_with(mut self, sync_names: bool) -> Result<usize, StoreError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        rustix::fs::syncfs(&self.tmp).map_err(|e| StoreError::io("syncing the store", e))?;
        let mut new = 0;
        let mut linker = None;
        let mut pending = std::mem::take(&mut self.pending).into_iter();
        while let Some((waiting, d, _)) = pending.next() {
            self.names.remove(&d);
            if let Waiting::Link(root, path) = &waiting {
                let r = self
                    .beneath
                    .in_dir(root.as_fd(), path, |dir, name| {
                        linker.get_or_insert_with(|| self.store.linker()).link(&d, dir, name)
                    })
                    .map_err(|e| {
                        StoreError::io(format!("opening the directory of {}", String::from_utf8_lossy(path)), e)
                    })
                    .and_then(|r| r);
                if let Err(e) = r {
                    self.pending = pending.collect();
                    return Err(e);
                }
                continue;
            }
            let shard = match self.shards.entry(d.0[0]) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let dir = self.store.shard(&d);
                    let opened = match open_dir(&dir) {
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            std::fs::create_dir_all(&dir).and_then(|_| open_dir(&dir))
                        }
                        r => r,
                    };
                    match opened {
                        Ok(fd) => v.insert(fd),
                        Err(e) => {
                            waiting.remove(self.store, &mut self.beneath);
                            self.pending = pending.collect();
                            return Err(StoreError::io(format!("opening {}", dir.display()), e));
                        }
                    }
                }
            };
            let hex = d.to_hex();
            let r = match &waiting {
                Waiting::Tmp(name) => rustix::fs::renameat_with(
                    &self.tmp,
                    name.as_str(),
                    &*shard,
                    hex.as_str(),
                    rustix::fs::RenameFlags::NOREPLACE,
                ),
                Waiting::At(root, path) => self
                    .beneath
                    .in_dir(root.as_fd(), path, |dir, name| {
                        rustix::fs::linkat(dir, name, &*shard, hex.as_str(), AtFlags::empty())
                    })
                    .unwrap_or_else(|e| Err(rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))),
                Waiting::Link(..) => unreachable!("handled above"),
            };
            match (r, &waiting) {
                (Ok(()), _) => new += 1,
                (Err(rustix::io::Errno::EXIST), Waiting::At(root, path)) => {
                    // Stored meanwhile by another writer (a share group's
                    // pull): the name takes the store's inode instead, one
                    // inode per content.
                    waiting.remove(self.store, &mut self.beneath);
                    let r = self
                        .beneath
                        .in_dir(root.as_fd(), path, |dir, name| {
                            linker.get_or_insert_with(|| self.store.linker()).link(&d, dir, name)
                        })
                        .map_err(|e| StoreError::io(format!("storing {d}"), e))
                        .and_then(|r| r);
                    if let Err(e) = r {
                        self.pending = pending.collect();
                        return Err(e);
                    }
                }
                (Err(rustix::io::Errno::EXIST), _) => waiting.remove(self.store, &mut self.beneath),
                (Err(rustix::io::Errno::XDEV), _) => {
                    waiting.remove(self.store, &mut self.beneath);
                    self.pending = pending.collect();
                    return Err(StoreError::io(
                        format!("storing {d}"),
                        io::Error::other("the snapshot directory is on another filesystem than the store"),
                    ));
                }
                (Err(e), _) => {
                    waiting.remove(self.store, &mut self.beneath);
                    self.pending = pending.collect();
                    return Err(StoreError::io(format!("storing {d}"), e));
                }
            }
        }
        if sync_names {
            rustix::fs::syncfs(&self.tmp).map_err(|e| StoreError::io("syncing the store", e))?;
        }
        Ok(new)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for (waiting, _, _) in &self.pending {
            waiting.remove(self.store, &mut self.beneath);
        }
    }
}

/// Where a content of a [`Batch`] waits for its commit.
#[derive(Debug)]
enum Waiting {
    /// `tmp/<name>`: renamed into its shard.
    Tmp(String),
    /// A path beneath a directory of the caller's
    /// ([`Batch::put_missing_in`]): linked into its shard, and left where
    /// it is.
    At(Arc<OwnedFd>, Vec<u8>),
    /// A second path for a content this batch holds already: linked from
    /// the store once the content is there.
    Link(Arc<OwnedFd>, Vec<u8>),
}

impl Waiting {
    /// Removes what an uncommitted content left (not a [`Waiting::Link`],
    /// which made nothing yet).
    fn remove(&self, store: &Store, beneath: &mut Beneath) {
        match self {
            Waiting::Tmp(name) => store.remove_temp(name),
            Waiting::At(root, path) => {
                let _ =
                    beneath.in_dir(root.as_fd(), path, |dir, name| rustix::fs::unlinkat(dir, name, AtFlags::empty()));
            }
            Waiting::Link(..) => {}
        }
    }
}

/// Opens the directories of paths beneath a root, keeping the last one:
/// a pull's files come directory after directory, and holding one open
/// directory per waiting content could pass the open-file limit.
#[derive(Debug, Default)]
struct Beneath {
    /// The root's fd number (the root is held open by every waiting
    /// entry that names it, so the number is not reused meanwhile), the
    /// directory's path beneath it, and the directory.
    last: Option<(i32, Vec<u8>, OwnedFd)>,
}

impl Beneath {
    /// Runs `f` with the directory of `path` beneath `root` (opened without
    /// following a link) and the name in it.
    fn in_dir<T>(
        &mut self,
        root: BorrowedFd<'_>,
        path: &[u8],
        f: impl FnOnce(BorrowedFd<'_>, &[u8]) -> T,
    ) -> io::Result<T> {
        use std::os::fd::AsRawFd as _;
        let (dir, name) = split_last(path);
        if dir.is_empty() {
            return Ok(f(root, name));
        }
        let key = root.as_raw_fd();
        let cached = matches!(&self.last, Some((r, d, _)) if *r == key && d.as_slice() == dir);
        if !cached {
            self.last = None;
            self.last = Some((key, dir.to_vec(), open_dir_beneath(root, components(dir))?));
        }
        let (_, _, fd) = self.last.as_ref().expect("just set");
        Ok(f(fd.as_fd(), name))
    }
}

/// Links contents of a [`Store`] into a tree being built, keeping each
/// shard directory open: a snapshot links every file, and resolving the
/// store's absolute path again for each link cost as much as the link.
pub struct Linker<'s> {
    store: &'s Store,
    shards: HashMap<[u8; 2], OwnedFd>,
    /// Shards [`Linker::has`] found absent: a first pull looks up every
    /// content in an empty store, and each lookup tried to open its shard
    /// again by the store's absolute path. (A shard made meanwhile by a
    /// share-group member's pull only costs a content fetched twice, the
    /// second copy dropped at its commit.)
    absent: HashSet<[u8; 2]>,
}

impl Linker<'_> {
    /// The open shard of `d` (`hex` is its digest in hex).
    fn shard_fd(&mut self, d: &Sha256, hex: &str) -> Result<BorrowedFd<'_>, StoreError> {
        let key = [hex.as_bytes()[0], hex.as_bytes()[1]];
        if !self.shards.contains_key(&key) {
            let shard = self.store.shard(d);
            let fd = open_dir(&shard).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StoreError::Missing(*d),
                _ => StoreError::io(format!("opening {}", shard.display()), e),
            })?;
            self.shards.insert(key, fd);
        }
        Ok(self.shards[&key].as_fd())
    }

    /// [`Store::has`], with the shard kept open: a lookup of every
    /// content of a 20,000-file manifest resolved the store's absolute
    /// path 20,000 times.
    pub fn has(&mut self, d: &Sha256) -> bool {
        let hex = d.to_hex();
        let key = [hex.as_bytes()[0], hex.as_bytes()[1]];
        if self.absent.contains(&key) {
            return false;
        }
        let shard_fd = match self.shard_fd(d, &hex) {
            Ok(fd) => fd,
            Err(StoreError::Missing(_)) => {
                self.absent.insert(key);
                return false;
            }
            Err(_) => return self.store.has(d),
        };
        match lstat_at(shard_fd, hex.as_bytes()) {
            Ok(Some(st)) => FileType::from_raw_mode(st.st_mode) == FileType::RegularFile,
            Ok(None) => false,
            Err(_) => self.store.has(d),
        }
    }

    /// [`Store::link_into`], with the shard kept open.
    pub fn link(&mut self, d: &Sha256, dirfd: BorrowedFd<'_>, name: &[u8]) -> Result<bool, StoreError> {
        let hex = d.to_hex();
        let store = self.store;
        let shard_fd = self.shard_fd(d, &hex)?;
        // The common case in one system call: the primary copy, below the
        // link limit. A stat before each link cost a tenth of a repeat
        // pull's linking; the primary's type was checked by the lookup
        // every build starts with ([`crate::snapshot::missing`], or the
        // pull that stored it), and `verify` checks it again. Anything
        // else (the limit, an error) goes the long way below.
        if store.link_max.is_none() {
            match rustix::fs::linkat(shard_fd, hex.as_str(), dirfd, name, AtFlags::empty()) {
                Ok(()) => return Ok(false),
                Err(rustix::io::Errno::NOENT) => return Err(StoreError::Missing(*d)),
                Err(_) => {}
            }
        }
        let mut made = false;
        for index in 0..u32::MAX {
            let cname = copy_name(&hex, index);
            let st = match lstat_at(shard_fd, cname.as_bytes()) {
                Ok(Some(st)) => st,
                Ok(None) if index == 0 => return Err(StoreError::Missing(*d)),
                Ok(None) => {
                    store.make_copy(d, shard_fd, &cname)?;
                    made = true;
                    continue_with_new(shard_fd, &cname)?
                }
                Err(e) => return Err(StoreError::io(format!("stat {}", store.shard(d).join(&cname).display()), e)),
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err(StoreError::Corrupt { digest: *d, problem: format!("{cname} is not a regular file") });
            }
            let full = store.link_max.is_some_and(|max| st.st_nlink >= max);
            let r = if full {
                Err(rustix::io::Errno::MLINK)
            } else {
                rustix::fs::linkat(shard_fd, cname.as_str(), dirfd, name, AtFlags::empty())
            };
            match r {
                Ok(()) => return Ok(made),
                Err(rustix::io::Errno::MLINK) => continue,
                Err(rustix::io::Errno::XDEV) => {
                    return Err(StoreError::io(
                        "linking from the store",
                        io::Error::other("the snapshot directory is on another filesystem than the store"),
                    ));
                }
                Err(e) => return Err(StoreError::io(format!("linking {cname}"), e)),
            }
        }
        Err(StoreError::io("linking from the store", io::Error::other("no copy below the link limit")))
    }
}

/// Continues the copy loop with the copy just made (it is linked on the
/// loop's next look; this returns its stat).
fn continue_with_new(shard: BorrowedFd<'_>, cname: &str) -> Result<rustix::fs::Stat, StoreError> {
    rustix::fs::statat(shard, cname, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| StoreError::io(format!("stat {cname}"), e))
}

/// Bytes read and written at a time when storing a content.
const COPY_BUF: usize = 256 << 10;

/// Copies at most `size + 1` bytes from `r` to `w`, hashing them. Returns
/// the byte count and, unless more than `size` arrived, the digest.
/// `buf` is the caller's, so that a batch of many small contents does not
/// allocate (and have the kernel zero) a fresh buffer for each.
fn copy_hashed(r: &mut dyn Read, w: &mut File, size: u64, buf: &mut [u8]) -> Result<(u64, Option<Sha256>), StoreError> {
    let mut h = sha2::Sha256::new();
    let mut got = 0u64;
    let mut limited = r.take(size.saturating_add(1));
    loop {
        let n = match limited.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io("reading content", e)),
        };
        w.write_all(&buf[..n]).map_err(|e| StoreError::io("writing to the store", e))?;
        h.update(&buf[..n]);
        got += n as u64;
    }
    Ok((got, (got <= size).then(|| Sha256(h.finalize().into()))))
}

/// Re-hashes one stored inode: `(bytes read, problem)`.
fn verify_one(path: &Path, d: &Sha256, buf: &mut [u8]) -> io::Result<(u64, Option<String>)> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok((0, Some("not a regular file".into())));
    }
    let mut f = File::from(fd);
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    loop {
        let k = f.read(buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    let got = Sha256(h.finalize().into());
    if got != *d {
        return Ok((n, Some(format!("contents hash to {got}"))));
    }
    if st.st_mode & 0o222 != 0 {
        return Ok((n, Some(format!("writable (mode {:04o})", st.st_mode & 0o7777))));
    }
    Ok((n, None))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
