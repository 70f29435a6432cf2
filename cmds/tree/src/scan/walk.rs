//! The walk: `lstat` every name, never follow a symlink, hash what the
//! cache cannot vouch for.
//!
//! Directories are walked depth first with one sorted name list per open
//! level (bounded fds: levels deeper than [`MAX_OPEN_DIRS`] are closed and
//! reopened component by component with `O_NOFOLLOW`, as in ferry-archive's
//! walker). Entries are collected and sorted by full path afterwards: the
//! manifest's raw byte order (`a`, `a b`, `a/x`) is not a walk order.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_archive::ExcludePattern;
use ferry_archive::fsutil::{
    components, join, open_dir, open_dir_at, open_dir_beneath, read_names, read_xattrs, split_last,
};
use rustix::fs::{AtFlags, FileType, Stat};

use super::cache::{HashCache, Record, ctime_of, mtime_of};
use super::hash::{HashFailure, Hashed, hash_file, open_file};
use super::hashers::{Done, Hashers, Job};
use super::{ScanError, ScanOptions, ScanStats, Skipped, Unreadable};
use crate::manifest::{Entry, Kind, PATH_MAX, Rdev, Sha256};
use crate::names::Names;

/// Open directory fds the walk keeps at most.
const MAX_OPEN_DIRS: usize = 32;

/// What groups hard links: an inode seen now, a group of the previous
/// manifest (for [`super::update`]), or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum LinkKey {
    None,
    Inode(u64, u64),
    Prev(u64),
}

/// One collected entry.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) entry: Entry,
    pub(crate) key: LinkKey,
    /// Stat'ed in this run (its inode data wins within a link group).
    pub(crate) fresh: bool,
}

/// One directory level of the walk.
pub(crate) struct Frame {
    /// Open fd, or `None` when closed to bound fd use.
    fd: Option<OwnedFd>,
    /// This directory's name in its parent (to reopen it).
    name: Vec<u8>,
    rel: Vec<u8>,
    children: Vec<Vec<u8>>,
    next: usize,
}

/// A multiply-linked file already hashed in this run.
struct Known {
    sha256: Sha256,
    size: u64,
    st: Stat,
    cacheable: bool,
}

pub(crate) struct Walker<'o> {
    pub(crate) opts: &'o ScanOptions,
    pub(crate) root: OwnedFd,
    pub(crate) root_dev: u64,
    export: Option<(u64, u64)>,
    excludes: Vec<ExcludePattern>,
    names: Names,
    pub(crate) old_cache: HashCache,
    pub(crate) new_cache: HashMap<Vec<u8>, Record>,
    known: HashMap<(u64, u64), Known>,
    pub(crate) stats: ScanStats,
    pub(crate) items: Vec<Item>,
    emitted_ancestors: HashSet<Vec<u8>>,
    buf: Vec<u8>,
    /// Threads that hash files this walk opened ([`super::hashers`]);
    /// `None`: every file is hashed here, in walk order ([`super::update`]
    /// needs each entry at once).
    pub(crate) hashers: Option<Hashers>,
}

impl<'o> Walker<'o> {
    pub(crate) fn new(opts: &'o ScanOptions) -> Result<Walker<'o>, ScanError> {
        let root = open_dir(&opts.root).map_err(|e| ScanError::Root { path: opts.root.clone(), source: e })?;
        let root_st =
            rustix::fs::fstat(&root).map_err(|e| ScanError::Root { path: opts.root.clone(), source: e.into() })?;
        let mut export = None;
        if let Some(dir) = &opts.export_dir
            && let (Ok(root_c), Ok(export_c)) = (opts.root.canonicalize(), dir.canonicalize())
        {
            if root_c.starts_with(&export_c) {
                return Err(ScanError::Options(format!(
                    "root {} lies inside the export directory {}; scan something else",
                    opts.root.display(),
                    dir.display()
                )));
            }
            let st =
                rustix::fs::stat(&export_c).map_err(|e| ScanError::Root { path: dir.clone(), source: e.into() })?;
            export = Some((st.st_dev, st.st_ino));
        }
        Ok(Walker {
            opts,
            root,
            root_dev: root_st.st_dev,
            export,
            excludes: opts.exclude.iter().filter_map(|p| ExcludePattern::parse(p)).collect(),
            names: Names::load(),
            old_cache: opts.cache.as_deref().map(HashCache::load).unwrap_or_default(),
            new_cache: HashMap::new(),
            known: HashMap::new(),
            stats: ScanStats::default(),
            items: Vec::new(),
            emitted_ancestors: HashSet::new(),
            buf: vec![0u8; 256 << 10],
            hashers: None,
        })
    }

    /// The include paths as relative byte paths, sorted, without those
    /// another include covers; empty means the whole root.
    pub(crate) fn includes(&self) -> Result<Vec<Vec<u8>>, ScanError> {
        let mut incs = Vec::new();
        for p in &self.opts.include {
            let rel = if p.is_absolute() {
                p.strip_prefix(&self.opts.root).map_err(|_| {
                    ScanError::Options(format!(
                        "include {} is not under root {}; write it relative to root or as an absolute path below it",
                        p.display(),
                        self.opts.root.display()
                    ))
                })?
            } else {
                p.as_path()
            };
            let mut comps: Vec<&[u8]> = Vec::new();
            for c in rel.components() {
                match c {
                    Component::Normal(n) => comps.push(n.as_bytes()),
                    Component::CurDir => {}
                    _ => return Err(ScanError::Options(format!("include {} must not contain '..'", p.display()))),
                }
            }
            if comps.is_empty() {
                return Ok(Vec::new());
            }
            incs.push(comps.join(&b'/'));
        }
        incs.sort();
        incs.dedup();
        let mut kept: Vec<Vec<u8>> = Vec::new();
        for inc in incs {
            if !kept.iter().any(|k| inc.starts_with(k) && inc.get(k.len()) == Some(&b'/')) {
                kept.push(inc);
            }
        }
        Ok(kept)
    }

    /// Scans everything the options select.
    pub(crate) fn walk_all(&mut self) -> Result<(), ScanError> {
        let incs = self.includes()?;
        if incs.is_empty() {
            return self.walk_dir(Vec::new(), None);
        }
        for inc in incs {
            self.include(&inc)?;
        }
        Ok(())
    }

    /// Walks below the directory `rel` (already recorded), using `fd` when
    /// open.
    pub(crate) fn walk_dir(&mut self, rel: Vec<u8>, fd: Option<OwnedFd>) -> Result<(), ScanError> {
        let fd = match fd {
            Some(fd) => fd,
            None => open_dir_beneath(self.root.as_fd(), components(&rel)).map_err(|e| self.io(&rel, e))?,
        };
        let children = match read_names(fd.as_fd()) {
            Ok(c) => c,
            Err(e) => return self.unreadable(&rel, e),
        };
        let name = split_last(&rel).1.to_vec();
        self.walk(Frame { fd: Some(fd), name, rel, children, next: 0 })
    }

    /// One include path: its ancestors as directory entries of their own
    /// (once), then the path with everything below it. A component that is
    /// not a directory (a symlink included) is refused, not followed.
    pub(crate) fn include(&mut self, inc: &[u8]) -> Result<(), ScanError> {
        let (parents, last) = split_last(inc);
        let mut dir = rustix::io::dup(&self.root).map_err(|e| self.io(b"", e.into()))?;
        let mut rel = Vec::new();
        for c in components(parents) {
            rel = join(&rel, c);
            let st = rustix::fs::statat(&dir, c, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| self.io(&rel, e.into()))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return Err(ScanError::Options(format!(
                    "include {}: {} is not a directory (symlinks are not followed)",
                    ferry_text::escape_bytes(inc, 400),
                    ferry_text::escape_bytes(&rel, 400)
                )));
            }
            if self.emitted_ancestors.insert(rel.clone()) {
                self.stats.statted += 1;
                let xattrs = self.xattrs(None, &rel);
                self.push(self.base(&rel, &st, Kind::Dir, xattrs), LinkKey::None);
            }
            dir = open_dir_at(dir.as_fd(), c).map_err(|e| self.io(&rel, e))?;
        }
        if let Some(frame) = self.entry(dir.as_fd(), last, inc, true, true)? {
            self.walk(frame)?;
        }
        Ok(())
    }

    /// Iterative pre-order walk below `start`.
    pub(crate) fn walk(&mut self, start: Frame) -> Result<(), ScanError> {
        let mut stack = vec![start];
        loop {
            let Some(top) = stack.last_mut() else {
                return Ok(());
            };
            if top.next == top.children.len() {
                stack.pop();
                continue;
            }
            let name = std::mem::take(&mut top.children[top.next]);
            top.next += 1;
            let rel = join(&top.rel, &name);
            if top.fd.is_none() {
                let i = stack.len() - 1;
                self.reopen(&mut stack, i)?;
            }
            let child = {
                let top = stack.last().expect("stack is not empty");
                self.entry(top.fd.as_ref().expect("reopened above").as_fd(), &name, &rel, false, true)?
            };
            if let Some(child) = child {
                stack.push(child);
                if stack.iter().filter(|f| f.fd.is_some()).count() > MAX_OPEN_DIRS
                    && let Some(f) = stack.iter_mut().skip(1).find(|f| f.fd.is_some())
                {
                    f.fd = None;
                }
            }
        }
    }

    /// Reopens `stack[i]` from the nearest open ancestor, one `O_NOFOLLOW`
    /// component at a time.
    fn reopen(&self, stack: &mut [Frame], i: usize) -> Result<(), ScanError> {
        let j = (0..i).rev().find(|&j| stack[j].fd.is_some()).expect("the start frame is never closed");
        let mut fd = rustix::io::dup(stack[j].fd.as_ref().expect("checked")).map_err(|e| self.io(b"", e.into()))?;
        for f in &stack[j + 1..=i] {
            fd = open_dir_at(fd.as_fd(), &f.name).map_err(|e| self.io(&f.rel, e))?;
        }
        stack[i].fd = Some(fd);
        Ok(())
    }

    /// Whether an exclude pattern drops `rel` (whose last component is
    /// `name`).
    pub(crate) fn excluded(&self, rel: &[u8], name: &[u8]) -> bool {
        self.excludes.iter().any(|p| p.matches(rel, name))
    }

    /// Whether `(dev, ino)` is the export directory (excluded by identity,
    /// whatever its name).
    pub(crate) fn is_export(&self, st: &Stat) -> bool {
        self.export == Some((st.st_dev, st.st_ino))
    }

    /// Records the entry `name` beneath `dirfd` (at `rel`); returns a frame
    /// when it is a directory to descend into and `descend` asks for that.
    /// `must_exist`: a missing entry is an error (an include root), not a
    /// file that vanished.
    pub(crate) fn entry(
        &mut self,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        must_exist: bool,
        descend: bool,
    ) -> Result<Option<Frame>, ScanError> {
        if self.excluded(rel, name) {
            self.stats.excluded += 1;
            return Ok(None);
        }
        if rel.len() > PATH_MAX {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "path longer than 4095 bytes");
            return self.unreadable(rel, e).map(|_| None);
        }
        self.stats.statted += 1;
        let st = match rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) if !must_exist => {
                self.stats.vanished += 1;
                return Ok(None);
            }
            Err(e) => return self.unreadable(rel, e.into()).map(|_| None),
        };
        let key = if st.st_nlink > 1 { LinkKey::Inode(st.st_dev, st.st_ino) } else { LinkKey::None };
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => return self.dir(dirfd, name, rel, &st, descend),
            FileType::RegularFile => {
                self.file(dirfd, name, rel, &st)?;
                return Ok(None);
            }
            FileType::Symlink => match rustix::fs::readlinkat(dirfd, name, Vec::new()) {
                Ok(t) => Kind::Symlink { target: t.into_bytes() },
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => {
                    self.stats.vanished += 1;
                    return Ok(None);
                }
                Err(e) => return self.unreadable(rel, e.into()).map(|_| None),
            },
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharacterDevice => Kind::CharDev(rdev(&st)),
            FileType::BlockDevice => Kind::BlockDev(rdev(&st)),
            FileType::Unknown => {
                self.stats.vanished += 1;
                return Ok(None);
            }
        };
        let xattrs = self.xattrs(None, rel);
        self.push(self.base(rel, &st, kind, xattrs), key);
        Ok(None)
    }

    fn dir(
        &mut self,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        st: &Stat,
        descend: bool,
    ) -> Result<Option<Frame>, ScanError> {
        if self.is_export(st) {
            self.stats.excluded += 1;
            return Ok(None);
        }
        let fd = match open_dir_at(dirfd, name) {
            Ok(fd) => Some(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.stats.vanished += 1;
                return Ok(None);
            }
            Err(e) => {
                self.unreadable(rel, e)?;
                None
            }
        };
        let xattrs = self.xattrs(fd.as_ref().map(|f| f.as_fd()), rel);
        self.push(self.base(rel, st, Kind::Dir, xattrs), LinkKey::None);
        if !descend || (self.opts.one_file_system && st.st_dev != self.root_dev) {
            return Ok(None);
        }
        let Some(fd) = fd else {
            return Ok(None);
        };
        let children = match read_names(fd.as_fd()) {
            Ok(c) => c,
            Err(e) => return self.unreadable(rel, e).map(|_| None),
        };
        Ok(Some(Frame { fd: Some(fd), name: name.to_vec(), rel: rel.to_vec(), children, next: 0 }))
    }

    fn file(&mut self, dirfd: BorrowedFd<'_>, name: &[u8], rel: &[u8], lst: &Stat) -> Result<(), ScanError> {
        let inode = (lst.st_dev, lst.st_ino);
        let key = if lst.st_nlink > 1 { LinkKey::Inode(inode.0, inode.1) } else { LinkKey::None };
        // Another name of an inode hashed in this run.
        if lst.st_nlink > 1
            && let Some(k) = self.known.get(&inode)
        {
            let (sha256, size, st, cacheable) = (k.sha256, k.size, k.st, k.cacheable);
            if cacheable {
                self.new_cache.insert(rel.to_vec(), Record::new(&st, sha256));
            }
            let xattrs = self.xattrs(None, rel);
            self.push(self.base(rel, &st, Kind::File { size, sha256 }, xattrs), key);
            return Ok(());
        }
        if let Some(sha256) = self.old_cache.lookup(rel, lst) {
            self.new_cache.insert(rel.to_vec(), Record::new(lst, sha256));
            let size = lst.st_size.max(0) as u64;
            self.remember(inode, lst, sha256, size, *lst, true);
            let xattrs = self.xattrs(None, rel);
            self.push(self.base(rel, lst, Kind::File { size, sha256 }, xattrs), key);
            return Ok(());
        }
        let (mut file, st) = match open_file(dirfd, name, lst) {
            Ok(x) => x,
            Err(HashFailure::Vanished) => {
                self.stats.vanished += 1;
                return Ok(());
            }
            Err(HashFailure::Unreadable(e)) => return self.unreadable(rel, e),
        };
        // A file of one name goes to a hasher when one has room; the next
        // name of a multiply-linked one needs its digest now.
        if lst.st_nlink <= 1
            && let Some(hashers) = self.hashers.as_mut()
        {
            match hashers.offer(Job { file, st, lst: *lst, rel: rel.to_vec() }) {
                None => return self.merge_ready(),
                Some(back) => file = back,
            }
        }
        let h = match hash_file(&mut file, st, self.opts.max_attempts, &mut self.buf) {
            Ok(h) => h,
            Err(HashFailure::Vanished) => {
                self.stats.vanished += 1;
                return Ok(());
            }
            Err(HashFailure::Unreadable(e)) => return self.unreadable(rel, e),
        };
        let xattrs = self.xattrs(Some(file.as_fd()), rel);
        self.hashed(rel, lst, key, h, xattrs);
        Ok(())
    }

    /// Records a file hashed in this run, here or by a hasher.
    fn hashed(&mut self, rel: &[u8], lst: &Stat, key: LinkKey, h: Hashed, xattrs: Vec<(Vec<u8>, Vec<u8>)>) {
        self.stats.files_hashed += 1;
        self.stats.bytes_hashed += h.bytes_read;
        let mut cacheable = false;
        if h.unstable {
            tracing::warn!(path = %ferry_text::Untrusted(rel), "file kept changing while it was hashed");
            self.stats.changed.push(rel.to_vec());
        } else if racy(&h.st, h.started, self.opts.racy_window) {
            self.stats.racy += 1;
        } else {
            cacheable = true;
            self.new_cache.insert(rel.to_vec(), Record::new(&h.st, h.sha256));
        }
        self.remember((lst.st_dev, lst.st_ino), lst, h.sha256, h.size, h.st, cacheable);
        self.push(self.base(rel, &h.st, Kind::File { size: h.size, sha256: h.sha256 }, xattrs), key);
    }

    /// Takes in what the hashers have finished, without waiting.
    fn merge_ready(&mut self) -> Result<(), ScanError> {
        let ready = self.hashers.as_mut().map(Hashers::ready).unwrap_or_default();
        ready.into_iter().try_for_each(|d| self.merge(d))
    }

    /// Waits for the hashers and takes in everything they still owe: call
    /// it once the walk is over (or failed: the threads end either way).
    pub(crate) fn finish_hashing(&mut self) -> Result<(), ScanError> {
        let Some(mut hashers) = self.hashers.take() else { return Ok(()) };
        let done = hashers.finish().map_err(|e| self.io(b"", e))?;
        let r = done.into_iter().try_for_each(|d| self.merge(d));
        // Which file changed is reported in path order, however the
        // hashers finished.
        self.stats.changed.sort();
        r
    }

    fn merge(&mut self, d: Done) -> Result<(), ScanError> {
        match d.outcome {
            Ok(h) => {
                let xattrs = d.xattrs.unwrap_or_else(|e| {
                    tracing::warn!(path = %ferry_text::Untrusted(&d.rel), error = %e, "cannot read xattrs");
                    Vec::new()
                });
                self.hashed(&d.rel, &d.lst, LinkKey::None, h, xattrs);
                Ok(())
            }
            Err(HashFailure::Vanished) => {
                self.stats.vanished += 1;
                Ok(())
            }
            Err(HashFailure::Unreadable(e)) => self.unreadable(&d.rel, e),
        }
    }

    fn remember(&mut self, inode: (u64, u64), lst: &Stat, sha256: Sha256, size: u64, st: Stat, cacheable: bool) {
        if lst.st_nlink > 1 {
            self.known.insert(inode, Known { sha256, size, st, cacheable });
        }
    }

    /// An entry's common fields from its stat.
    pub(crate) fn base(&self, rel: &[u8], st: &Stat, kind: Kind, xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> Entry {
        Entry {
            path: rel.to_vec(),
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            user: self.names.user(st.st_uid).map(<[u8]>::to_vec),
            group: self.names.group(st.st_gid).map(<[u8]>::to_vec),
            mtime: mtime_of(st),
            link: None,
            xattrs,
        }
    }

    fn push(&mut self, entry: Entry, key: LinkKey) {
        self.items.push(Item { entry, key, fresh: true });
    }

    /// The entry's xattrs when recording them (an unreadable list is
    /// logged and recorded as none: the contents matter more).
    fn xattrs(&self, fd: Option<BorrowedFd<'_>>, rel: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        if !self.opts.xattrs {
            return Vec::new();
        }
        match read_xattrs(fd, &self.abs(rel)) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(path = %ferry_text::Untrusted(rel), error = %e, "cannot read xattrs");
                Vec::new()
            }
        }
    }

    /// The absolute path of `rel` (for messages and the `l*` calls).
    pub(crate) fn abs(&self, rel: &[u8]) -> PathBuf {
        self.opts.root.join(OsStr::from_bytes(rel))
    }

    /// An unreadable entry: an error under [`Unreadable::Fail`], a listed
    /// skip under [`Unreadable::Skip`].
    pub(crate) fn unreadable(&mut self, rel: &[u8], e: io::Error) -> Result<(), ScanError> {
        match self.opts.unreadable {
            Unreadable::Fail => Err(ScanError::Unreadable { path: self.abs(rel), source: e }),
            Unreadable::Skip => {
                tracing::warn!(path = %ferry_text::Untrusted(rel), error = %e, "skipping unreadable entry");
                self.stats.skipped.push(Skipped { path: rel.to_vec(), error: e.to_string() });
                Ok(())
            }
        }
    }

    /// A failure that is not about one unreadable entry (the walk itself).
    pub(crate) fn io(&self, rel: &[u8], e: io::Error) -> ScanError {
        ScanError::Unreadable { path: self.abs(rel), source: e }
    }
}

fn rdev(st: &Stat) -> Rdev {
    Rdev { major: rustix::fs::major(st.st_rdev), minor: rustix::fs::minor(st.st_rdev) }
}

/// Whether a file hashed at `started` could have changed afterwards in
/// the same timestamp tick (so its stat would not show it): its ctime is
/// within `window` of the start. A ctime with zero nanoseconds comes from a
/// filesystem with whole-second (or two-second) timestamps: then the window
/// is at least two seconds.
pub(crate) fn racy(st: &Stat, started: SystemTime, window: Duration) -> bool {
    let c = ctime_of(st);
    let window = if c.nsec == 0 { window.max(Duration::from_secs(2)) } else { window };
    let ctime = if c.sec >= 0 {
        UNIX_EPOCH + Duration::new(c.sec as u64, c.nsec)
    } else {
        return false;
    };
    ctime + window >= started
}
