//! Streaming creation of a tar+zstd archive from a directory tree.
//!
//! One pass, bounded memory: the walk holds one sorted name list per open
//! directory level and a `(dev, ino)` map of files with several links; file
//! contents stream from the file through a 1 MiB buffer into zstd's
//! multithreaded encoder. Headers are written by hand with the tar crate's
//! `Header` type (GNU format, `././@LongLink` records for names and link
//! targets of 100 bytes or more, PAX records for xattrs and sub-second
//! times), because the tar crate's path setters normalise names (`a//b`,
//! `./x`) and would change symlink targets we must store verbatim.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, PathBuf};
use std::sync::mpsc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use tar::{EntryType, Header};

use crate::error::{ArchiveError, escape_name};
use crate::fsutil::{join, open_dir_at, read_names, read_xattrs};
use crate::pattern::ExcludePattern;
use crate::pax;

/// What to archive and how. See [`create_tar_zst`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The directory whose contents are archived. Paths in the archive are
    /// relative to it, without a leading `./`; the root itself has no entry.
    pub root: PathBuf,
    /// Paths relative to `root` to archive (each with everything below it);
    /// empty means the whole root. The directories leading to an included
    /// path get entries of their own (without their other contents), so
    /// their modes and times survive a restore. A component that is a
    /// symlink is refused rather than followed.
    pub include: Vec<PathBuf>,
    /// Exclude patterns, see [`ExcludePattern`]: a pattern without `/`
    /// matches any component name (`*.tmp`, `cache`), a pattern with `/` is
    /// anchored at the root (`var/cache/*`); `*` and `?` never match `/`.
    pub exclude: Vec<String>,
    /// Record extended attributes as PAX `SCHILY.xattr.<name>` records.
    pub xattrs: bool,
    /// Do not descend into directories on another filesystem than `root`
    /// (the mount point itself is recorded, as GNU tar does).
    pub one_file_system: bool,
    /// Record sub-second modification times (a PAX record per entry; costs
    /// about 1 KiB of tar stream per entry before compression).
    pub mtime_nanos: bool,
    /// zstd compression level (default 3, as the `zstd` tool).
    pub zstd_level: i32,
    /// zstd worker threads; 0 compresses on the calling thread. Default:
    /// `available_parallelism`, so reading and compressing overlap.
    pub zstd_workers: u32,
    /// What an entry this process may not read does to the archive (see
    /// [`Unreadable`]).
    pub unreadable: Unreadable,
}

/// What to do with an entry below the root that this process is not
/// allowed to read (`EACCES`/`EPERM` on stat, open or listing): a file, or
/// a directory with everything below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unreadable {
    /// Stop with [`ArchiveError::Unreadable`], naming the absolute path and
    /// the account: a backup silently missing files is worse than none.
    #[default]
    Fail,
    /// Leave the entry out of the archive, log a warning, and list it in
    /// [`CreateStats::unreadable_paths`] so the caller can report it. The
    /// root itself must still be readable.
    Skip,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            root: PathBuf::from("."),
            include: Vec::new(),
            exclude: Vec::new(),
            xattrs: false,
            one_file_system: false,
            mtime_nanos: false,
            zstd_level: 3,
            zstd_workers: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
            unreadable: Unreadable::Fail,
        }
    }
}

/// What [`create_tar_zst`] archived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateStats {
    /// Regular files stored with their data.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks (targets stored verbatim, never followed).
    pub symlinks: u64,
    /// Hard-link entries (second and later names of one inode).
    pub hardlinks: u64,
    /// FIFOs and character/block devices.
    pub other: u64,
    /// Entries not archived: sockets, and entries that vanished between
    /// listing and reading.
    pub skipped: u64,
    /// Files whose size or mtime changed while being read. Their data was
    /// cut or zero-padded to the size in their header, so the archive stays
    /// well-formed, but the copy may be inconsistent.
    pub changed: u64,
    /// Entries left out by an exclude pattern (a directory counts once).
    pub excluded: u64,
    /// Entries left out because this process may not read them (with
    /// [`Unreadable::Skip`]; a directory counts once, with what is below it).
    pub unreadable: u64,
    /// Their paths relative to the root, the first
    /// [`MAX_UNREADABLE_LISTED`] of them.
    pub unreadable_paths: Vec<Vec<u8>>,
    /// File data bytes read.
    pub bytes_in: u64,
    /// Compressed bytes written to the output.
    pub bytes_out: u64,
}

/// Unreadable paths [`CreateStats::unreadable_paths`] keeps (the count
/// goes on): enough to say what is missing, bounded for a whole
/// unreadable disk.
pub const MAX_UNREADABLE_LISTED: usize = 100;

/// Open directory fds the walk keeps at most; deeper levels are reopened
/// from the nearest open ancestor when the walk returns to them.
const MAX_OPEN_DIRS: usize = 32;

/// Archives `opts.root` (or `opts.include` below it) as a tar stream
/// compressed with zstd into `out`, in one streaming pass.
///
/// Entries come in a deterministic order (pre-order walk, names sorted by
/// bytes). Regular files, directories (empty ones too), symlinks (never
/// followed; target stored as is), hard links (second and later names of one
/// `(dev, ino)` become link entries), FIFOs and devices are recorded with
/// mode (including setuid/setgid/sticky), uid/gid and user/group names from
/// `/etc/passwd` and `/etc/group`, and mtime; sockets are skipped and
/// counted. Any name bytes (spaces, newlines, non-UTF-8) and any length
/// round-trip. A file that changes size while being read is cut or padded
/// to its header size and counted in [`CreateStats::changed`].
///
/// Threads: the walk runs on a scoped thread of its own, the calling
/// thread feeds zstd and writes `out`, and zstd runs `zstd_workers` more.
/// At most 8 MiB of tar stream is in flight between them.
///
/// Errors: [`ArchiveError::Unreadable`] for an entry this process may not
/// read (unless [`CreateOptions::unreadable`] says skip, and always for the
/// root), [`ArchiveError::Io`] for any other read or write failure (the
/// archive is then incomplete and must be discarded by the caller),
/// [`ArchiveError::Path`] for an include path that is absolute, has `..` or
/// goes through a symlink.
pub fn create_tar_zst<W: Write>(opts: &CreateOptions, out: W) -> Result<CreateStats, ArchiveError> {
    let root_fd = rustix::fs::open(&opts.root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| match e {
            rustix::io::Errno::ACCESS | rustix::io::Errno::PERM => ArchiveError::Unreadable {
                path: escape_name(opts.root.as_os_str().as_bytes()),
                account: Names::load().account(),
                source: e.into(),
            },
            _ => ArchiveError::io(format!("opening root {}", opts.root.display()), e),
        })?;
    let root_st =
        rustix::fs::fstat(&root_fd).map_err(|e| ArchiveError::io(format!("stat root {}", opts.root.display()), e))?;

    let counting = CountingWriter { inner: out, count: 0 };
    let mut enc = zstd::stream::write::Encoder::new(counting, opts.zstd_level)
        .map_err(|e| ArchiveError::io("starting zstd", e))?;
    if opts.zstd_workers > 0 {
        enc.multithread(opts.zstd_workers).map_err(|e| ArchiveError::io("starting zstd workers", e))?;
    }
    enc.include_checksum(true).map_err(|e| ArchiveError::io("configuring zstd", e))?;

    // The walk (syscalls, tar formatting) runs on its own thread and hands
    // 1 MiB chunks of tar stream to this thread, which feeds zstd and owns
    // `out` (so `W` need not be `Send`). Decoupling them the way
    // `tar | zstd` is decoupled by a pipe matters on a busy machine: with
    // one thread doing both, every wait for a zstd worker also stalled the
    // walk, and wall time doubled under CPU contention.
    let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(CHANNEL_CHUNKS);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let walker = scope.spawn(move || {
            let mut w = Walker {
                opts,
                root: root_fd,
                root_dev: root_st.st_dev,
                out: ChunkWriter::new(full_tx, empty_rx),
                excludes: opts.exclude.iter().filter_map(|p| ExcludePattern::parse(p)).collect(),
                links: HashMap::new(),
                names: Names::load(),
                stats: CreateStats::default(),
                emitted_ancestors: HashSet::new(),
            };
            w.run()?;
            w.out.flush().map_err(|e| ArchiveError::io("writing archive", e))?;
            Ok::<CreateStats, ArchiveError>(w.stats)
        });
        let mut write_err = None;
        for (chunk, len) in &full_rx {
            if let Err(e) = enc.write_all(&chunk[..len]) {
                write_err = Some(e);
                break;
            }
            // Hand the buffer back for reuse; the walker may be gone.
            let _ = empty_tx.send(chunk);
        }
        // Unblocks a walker waiting to send after a write error.
        drop(full_rx);
        let walked = match walker.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if let Some(e) = write_err {
            return Err(ArchiveError::io("writing archive", e));
        }
        let mut stats = walked?;
        let mut counting = enc.finish().map_err(|e| ArchiveError::io("finishing zstd frame", e))?;
        counting.flush().map_err(|e| ArchiveError::io("flushing archive", e))?;
        stats.bytes_out = counting.count;
        Ok(stats)
    })
}

/// Size of the chunks handed from the walker to the compressing thread:
/// large enough that a small file's header and data cost a memcpy, not a
/// channel message each, and that big files reach zstd in 1 MiB slices.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the threads (bounded memory: 8 MiB).
const CHANNEL_CHUNKS: usize = 8;

/// The walker's side of the channel: a `Write` that fills 1 MiB chunks
/// and sends them to the compressing thread, reusing returned buffers.
/// Buffers stay at full length (`len` says how much is used) so refilling
/// one never re-zeroes it.
struct ChunkWriter {
    buf: Vec<u8>,
    len: usize,
    full: mpsc::SyncSender<(Vec<u8>, usize)>,
    empty: mpsc::Receiver<Vec<u8>>,
}

impl ChunkWriter {
    fn new(full: mpsc::SyncSender<(Vec<u8>, usize)>, empty: mpsc::Receiver<Vec<u8>>) -> Self {
        ChunkWriter { buf: vec![0u8; CHUNK], len: 0, full, empty }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let next = self.empty.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        let full = std::mem::replace(&mut self.buf, next);
        let len = std::mem::take(&mut self.len);
        self.full.send((full, len)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "archive writer stopped"))
    }

    /// Copies up to `limit` bytes from `r` straight into the chunk buffers
    /// (no intermediate buffer); returns how many were copied, fewer only
    /// at end of file.
    fn copy_from(&mut self, r: &mut impl Read, limit: u64) -> io::Result<u64> {
        let mut done = 0u64;
        while done < limit {
            if self.len == CHUNK {
                self.send()?;
            }
            let want = (CHUNK - self.len).min(usize::try_from(limit - done).unwrap_or(usize::MAX));
            let n = match r.read(&mut self.buf[self.len..self.len + want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            self.len += n;
            done += n as u64;
        }
        Ok(done)
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.len == CHUNK {
            self.send()?;
        }
        let n = data.len().min(CHUNK - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.len += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// uid/gid → name maps, read once from the local files. Names from NSS
/// sources (LDAP, sssd) are not looked up: they are a convenience for
/// humans reading `tar tv`, restore uses the numeric ids.
struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn load() -> Names {
        fn parse(path: &str) -> HashMap<u32, String> {
            let Ok(text) = std::fs::read_to_string(path) else {
                return HashMap::new();
            };
            let mut map = HashMap::new();
            for line in text.lines() {
                let mut f = line.split(':');
                let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) else {
                    continue;
                };
                if let Ok(id) = id.parse::<u32>() {
                    map.entry(id).or_insert_with(|| name.to_string());
                }
            }
            map
        }
        Names { users: parse("/etc/passwd"), groups: parse("/etc/group") }
    }

    /// The account this process reads as, for messages: `name (uid N)`.
    fn account(&self) -> String {
        let uid = rustix::process::geteuid().as_raw();
        match self.users.get(&uid) {
            Some(name) => format!("{name} (uid {uid})"),
            None => format!("uid {uid}"),
        }
    }
}

/// The account this process reads files as, for messages: `name (uid N)`
/// from `/etc/passwd`, or `uid N`.
pub fn current_account() -> String {
    Names::load().account()
}

/// Permission errors: the entry exists but this account may not read it.
fn is_denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::ACCESS.raw_os_error() || c == rustix::io::Errno::PERM.raw_os_error())
}

/// One directory level of the walk.
struct Frame {
    /// Open fd, or `None` when closed to bound fd use (reopened on return).
    fd: Option<OwnedFd>,
    /// This directory's own name in its parent (to reopen it).
    name: Vec<u8>,
    /// Path relative to the root, empty for the root.
    rel: Vec<u8>,
    /// Sorted child names and the next one to visit.
    children: Vec<Vec<u8>>,
    next: usize,
}

struct Walker<'o> {
    opts: &'o CreateOptions,
    root: OwnedFd,
    root_dev: u64,
    out: ChunkWriter,
    excludes: Vec<ExcludePattern>,
    /// First archived name of each multiply-linked regular file.
    links: HashMap<(u64, u64), Vec<u8>>,
    names: Names,
    stats: CreateStats,
    emitted_ancestors: HashSet<Vec<u8>>,
}

fn ctx(what: &str, rel: &[u8]) -> String {
    format!("{what} {}", escape_name(rel))
}

impl Walker<'_> {
    fn run(&mut self) -> Result<(), ArchiveError> {
        if self.opts.include.is_empty() {
            let names = read_names(self.root.as_fd()).map_err(|e| ArchiveError::io("listing root", e))?;
            let root_copy = rustix::io::dup(&self.root).map_err(|e| ArchiveError::io("dup", e))?;
            self.walk(Frame { fd: Some(root_copy), name: Vec::new(), rel: Vec::new(), children: names, next: 0 })?;
        } else {
            for inc in self.normalised_includes()? {
                self.include(&inc)?;
            }
        }
        // End of archive: two zero blocks.
        self.out.write_all(&[0u8; 1024]).map_err(|e| ArchiveError::io("writing archive", e))?;
        Ok(())
    }

    /// Include paths as component lists, sorted, without those already
    /// covered by another include.
    fn normalised_includes(&self) -> Result<Vec<Vec<Vec<u8>>>, ArchiveError> {
        let mut incs: Vec<Vec<Vec<u8>>> = Vec::new();
        for p in &self.opts.include {
            let mut comps = Vec::new();
            for c in p.components() {
                match c {
                    Component::Normal(n) => comps.push(n.as_bytes().to_vec()),
                    Component::CurDir => {}
                    _ => {
                        return Err(ArchiveError::path(
                            p.as_os_str().as_bytes(),
                            "include paths must be relative to the root, without `..`",
                        ));
                    }
                }
            }
            incs.push(comps);
        }
        incs.sort();
        incs.dedup();
        let mut kept: Vec<Vec<Vec<u8>>> = Vec::new();
        for inc in incs {
            if !kept.iter().any(|k| inc.starts_with(k)) {
                kept.push(inc);
            }
        }
        Ok(kept)
    }

    fn include(&mut self, comps: &[Vec<u8>]) -> Result<(), ArchiveError> {
        let Some((last, parents)) = comps.split_last() else {
            // "." or "": the whole root.
            let names = read_names(self.root.as_fd()).map_err(|e| ArchiveError::io("listing root", e))?;
            let root_copy = rustix::io::dup(&self.root).map_err(|e| ArchiveError::io("dup", e))?;
            return self.walk(Frame {
                fd: Some(root_copy),
                name: Vec::new(),
                rel: Vec::new(),
                children: names,
                next: 0,
            });
        };
        let mut dir = rustix::io::dup(&self.root).map_err(|e| ArchiveError::io("dup", e))?;
        let mut rel = Vec::new();
        for c in parents {
            rel = join(&rel, c);
            let st = match rustix::fs::statat(&dir, c.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(e) => return self.unreadable(&rel, "stat", e.into()),
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return Err(ArchiveError::path(
                    &rel,
                    "a component of an include path is not a directory (symlinks are not followed)",
                ));
            }
            if self.emitted_ancestors.insert(rel.clone()) {
                self.header(&rel, &st, EntryType::Directory, None, 0, None)?;
                self.stats.dirs += 1;
            }
            // O_PATH: passing through needs search permission only, as a
            // path lookup does (`/home` may be 0711).
            dir = match rustix::fs::openat(
                &dir,
                c.as_slice(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(e) => return self.unreadable(&rel, "open", e.into()),
            };
        }
        let rel = join(&rel, last);
        if let Some(frame) = self.entry(dir.as_fd(), last, &rel, true)? {
            self.walk(frame)?;
        }
        Ok(())
    }

    /// Iterative pre-order walk below `start`.
    fn walk(&mut self, start: Frame) -> Result<(), ArchiveError> {
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
                let depth = stack.len() - 1;
                reopen(&mut stack, depth)?;
            }
            let top = stack.last().expect("stack is not empty");
            let fd = top.fd.as_ref().expect("reopened above").as_fd();
            if let Some(child) = self.entry(fd, &name, &rel, false)? {
                stack.push(child);
                let open = stack.iter().filter(|f| f.fd.is_some()).count();
                if open > MAX_OPEN_DIRS {
                    // Close the shallowest open level except the start.
                    if let Some(f) = stack.iter_mut().skip(1).find(|f| f.fd.is_some()) {
                        f.fd = None;
                    }
                }
            }
        }
    }

    /// A failed stat/open/listing of `rel`: a permission error is
    /// [`ArchiveError::Unreadable`], or a skipped entry under
    /// [`Unreadable::Skip`]; anything else is [`ArchiveError::Io`].
    fn unreadable(&mut self, rel: &[u8], what: &str, e: io::Error) -> Result<(), ArchiveError> {
        if !is_denied(&e) {
            return Err(ArchiveError::io(ctx(what, rel), e));
        }
        let abs = self.opts.root.join(OsStr::from_bytes(rel));
        match self.opts.unreadable {
            Unreadable::Fail => Err(ArchiveError::Unreadable {
                path: escape_name(abs.as_os_str().as_bytes()),
                account: self.names.account(),
                source: e,
            }),
            Unreadable::Skip => {
                tracing::warn!(path = %escape_name(abs.as_os_str().as_bytes()), error = %e, "unreadable; left out of the archive");
                self.stats.unreadable += 1;
                if self.stats.unreadable_paths.len() < MAX_UNREADABLE_LISTED {
                    self.stats.unreadable_paths.push(rel.to_vec());
                }
                Ok(())
            }
        }
    }

    fn excluded(&self, rel: &[u8], name: &[u8]) -> bool {
        self.excludes.iter().any(|p| p.matches(rel, name))
    }

    /// Archives one directory entry; returns a frame when it is a directory
    /// to descend into.
    fn entry(
        &mut self,
        dirfd: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        is_include_root: bool,
    ) -> Result<Option<Frame>, ArchiveError> {
        if self.excluded(rel, name) {
            self.stats.excluded += 1;
            return Ok(None);
        }
        let st = match rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) if !is_include_root => {
                tracing::warn!(path = %escape_name(rel), "file vanished before it was read");
                self.stats.skipped += 1;
                return Ok(None);
            }
            Err(e) => return self.unreadable(rel, "stat", e.into()).map(|()| None),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                if self.opts.one_file_system && st.st_dev != self.root_dev {
                    self.header(rel, &st, EntryType::Directory, None, 0, None)?;
                    self.stats.dirs += 1;
                    return Ok(None);
                }
                // Opened before its header is written, so a directory this
                // account cannot read is left out whole, not recorded empty.
                let fd = match open_dir_at(dirfd, name) {
                    Ok(fd) => fd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.stats.skipped += 1;
                        return Ok(None);
                    }
                    Err(e) => return self.unreadable(rel, "open", e).map(|()| None),
                };
                let children = match read_names(fd.as_fd()) {
                    Ok(c) => c,
                    Err(e) => return self.unreadable(rel, "listing", e).map(|()| None),
                };
                self.header(rel, &st, EntryType::Directory, None, 0, None)?;
                self.stats.dirs += 1;
                Ok(Some(Frame { fd: Some(fd), name: name.to_vec(), rel: rel.to_vec(), children, next: 0 }))
            }
            FileType::RegularFile => {
                self.file(dirfd, name, rel, &st)?;
                Ok(None)
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dirfd, name, Vec::new())
                    .map_err(|e| ArchiveError::io(ctx("readlink", rel), e))?;
                self.header(rel, &st, EntryType::Symlink, Some(target.as_bytes()), 0, None)?;
                self.stats.symlinks += 1;
                Ok(None)
            }
            FileType::Fifo => {
                self.header(rel, &st, EntryType::Fifo, None, 0, None)?;
                self.stats.other += 1;
                Ok(None)
            }
            FileType::CharacterDevice => {
                self.header(rel, &st, EntryType::Char, None, 0, None)?;
                self.stats.other += 1;
                Ok(None)
            }
            FileType::BlockDevice => {
                self.header(rel, &st, EntryType::Block, None, 0, None)?;
                self.stats.other += 1;
                Ok(None)
            }
            _ => {
                // Sockets (and anything unknown) cannot be archived.
                tracing::debug!(path = %escape_name(rel), "skipping socket");
                self.stats.skipped += 1;
                Ok(None)
            }
        }
    }

    fn file(&mut self, dirfd: BorrowedFd<'_>, name: &[u8], rel: &[u8], lst: &Stat) -> Result<(), ArchiveError> {
        if lst.st_nlink > 1 {
            let key = (lst.st_dev, lst.st_ino);
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                self.header(rel, lst, EntryType::Link, Some(&first), 0, None)?;
                self.stats.hardlinks += 1;
                return Ok(());
            }
        }
        // O_NONBLOCK: if the name was swapped for a FIFO since the lstat,
        // opening must not hang the backup.
        let fd = match rustix::fs::openat(
            dirfd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => {
                tracing::warn!(path = %escape_name(rel), "file vanished before it was read");
                self.stats.skipped += 1;
                return Ok(());
            }
            Err(e) => return self.unreadable(rel, "open", e.into()),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| ArchiveError::io(ctx("stat", rel), e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
            || st.st_ino != lst.st_ino
            || st.st_dev != lst.st_dev
        {
            tracing::warn!(path = %escape_name(rel), "file replaced before it was read");
            self.stats.skipped += 1;
            return Ok(());
        }
        let size = st.st_size.max(0) as u64;
        self.header(rel, &st, EntryType::Regular, None, size, Some(fd.as_fd()))?;
        if st.st_nlink > 1 {
            self.links.insert((st.st_dev, st.st_ino), rel.to_vec());
        }
        let mut file = std::fs::File::from(fd);
        let copied = self.out.copy_from(&mut file, size).map_err(|e| ArchiveError::io(ctx("archiving", rel), e))?;
        let mut changed = false;
        if copied < size {
            // Shrunk while reading: pad so the header stays true.
            changed = true;
            io::copy(&mut io::repeat(0).take(size - copied), &mut self.out)
                .map_err(|e| ArchiveError::io("writing archive", e))?;
        }
        self.pad(size)?;
        let after = rustix::fs::fstat(&file).map_err(|e| ArchiveError::io(ctx("stat", rel), e))?;
        if after.st_size != st.st_size || after.st_mtime != st.st_mtime || after.st_mtime_nsec != st.st_mtime_nsec {
            changed = true;
        }
        if changed {
            tracing::warn!(path = %escape_name(rel), "file changed while it was read");
            self.stats.changed += 1;
        }
        self.stats.files += 1;
        self.stats.bytes_in += copied;
        Ok(())
    }

    fn pad(&mut self, size: u64) -> Result<(), ArchiveError> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; 512][..512 - rem]).map_err(|e| ArchiveError::io("writing archive", e))?;
        }
        Ok(())
    }

    /// Writes the extension records and the header of one entry.
    /// `xattr_fd` is an fd of the entry itself when one is open; otherwise
    /// xattrs (when wanted) are read through the path without following it.
    fn header(
        &mut self,
        rel: &[u8],
        st: &Stat,
        kind: EntryType,
        link: Option<&[u8]>,
        size: u64,
        xattr_fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ArchiveError> {
        let werr = |e| ArchiveError::io("writing archive", e);
        let mut path = rel.to_vec();
        if kind == EntryType::Directory {
            path.push(b'/');
        }

        let mut pax_buf = Vec::new();
        // PAX mtime: sub-second times when asked, and pre-1970 times
        // (the GNU header field is unsigned here). A negative time with a
        // fraction is written as whole seconds, rounded down.
        if self.opts.mtime_nanos || st.st_mtime < 0 {
            let t = if st.st_mtime_nsec != 0 && st.st_mtime >= 0 {
                format!("{}.{:09}", st.st_mtime, st.st_mtime_nsec)
            } else {
                st.st_mtime.to_string()
            };
            pax::push_record(&mut pax_buf, b"mtime", t.as_bytes());
        }
        if self.opts.xattrs {
            let full = self.opts.root.join(OsStr::from_bytes(rel));
            let xattrs = read_xattrs(xattr_fd, &full).map_err(|e| ArchiveError::io(ctx(e.call, rel), e.error))?;
            for (k, v) in xattrs {
                let mut key = b"SCHILY.xattr.".to_vec();
                key.extend_from_slice(&k);
                pax::push_record(&mut pax_buf, &key, &v);
            }
        }
        if !pax_buf.is_empty() {
            self.ext_record(b'x', b"././@PaxHeader", &pax_buf)?;
        }
        if path.len() >= 100 {
            let mut data = path.clone();
            data.push(0);
            self.ext_record(b'L', b"././@LongLink", &data)?;
        }
        if let Some(l) = link
            && l.len() >= 100
        {
            let mut data = l.to_vec();
            data.push(0);
            self.ext_record(b'K', b"././@LongLink", &data)?;
        }

        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            let n = path.len().min(old.name.len());
            old.name[..n].copy_from_slice(&path[..n]);
            if let Some(l) = link {
                let n = l.len().min(old.linkname.len());
                old.linkname[..n].copy_from_slice(&l[..n]);
            }
        }
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(u64::from(st.st_uid));
        h.set_gid(u64::from(st.st_gid));
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(size);
        if let Some(u) = self.names.users.get(&st.st_uid) {
            let _ = h.set_username(u);
        }
        if let Some(g) = self.names.groups.get(&st.st_gid) {
            let _ = h.set_groupname(g);
        }
        if matches!(kind, EntryType::Char | EntryType::Block) {
            let dev = st.st_rdev;
            h.set_device_major(rustix::fs::major(dev))
                .map_err(|e| ArchiveError::io(ctx("device number of", rel), e))?;
            h.set_device_minor(rustix::fs::minor(dev))
                .map_err(|e| ArchiveError::io(ctx("device number of", rel), e))?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes()).map_err(werr)?;
        Ok(())
    }

    /// Writes a GNU long-name/long-link or PAX record with its data.
    fn ext_record(&mut self, kind: u8, name: &[u8], data: &[u8]) -> Result<(), ArchiveError> {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
        }
        h.set_entry_type(EntryType::new(kind));
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.out
            .write_all(h.as_bytes())
            .and_then(|_| self.out.write_all(data))
            .map_err(|e| ArchiveError::io("writing archive", e))?;
        self.pad(data.len() as u64)
    }
}

/// Reopens `stack[i]`'s directory from the nearest ancestor that is still
/// open, one `O_NOFOLLOW` component at a time.
fn reopen(stack: &mut [Frame], i: usize) -> Result<(), ArchiveError> {
    let j = (0..i).rev().find(|&j| stack[j].fd.is_some()).expect("the start frame is never closed");
    let mut fd = rustix::io::dup(stack[j].fd.as_ref().expect("checked")).map_err(|e| ArchiveError::io("dup", e))?;
    for f in &stack[j + 1..=i] {
        fd = open_dir_at(fd.as_fd(), &f.name).map_err(|e| ArchiveError::io(ctx("reopening", &f.rel), e))?;
    }
    stack[i].fd = Some(fd);
    Ok(())
}
