//! Directory-fd helpers: everything here works relative to a directory fd
//! and never follows a symlink, which is what keeps the scan inside the
//! tree it was given and every write of the node inside its own
//! directories (the same discipline as ferry-archive's extractor).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, RenameFlags};

/// Opens the directory `name` beneath `dirfd`, refusing to follow a
/// symlink (`ELOOP`/`ENOTDIR` instead).
pub(crate) fn open_dir_at(dirfd: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens a directory by path (following links in `path` itself: it is
/// configuration, not client data).
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// The components of a relative path.
pub(crate) fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|b| *b == b'/').filter(|c| !c.is_empty())
}

/// Splits a relative path into its parent and its last component.
pub(crate) fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Joins a relative path and a name with `/`.
pub(crate) fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        p.extend_from_slice(rel);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Opens a directory below `root` one component at a time, each with
/// `O_NOFOLLOW`, so a symlink anywhere on the way is an error rather than
/// a detour. An empty path reopens `root` itself.
pub(crate) fn open_dir_beneath(root: BorrowedFd<'_>, path: &[u8]) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for c in components(path) {
        let next = open_dir_at(cur.as_ref().map_or(root, |f| f.as_fd()), c)?;
        cur = Some(next);
    }
    match cur {
        Some(fd) => Ok(fd),
        None => open_dir_at(root, b"."),
    }
}

/// The names in an open directory (without `.` and `..`), sorted by raw
/// bytes so every walk is deterministic.
pub(crate) fn read_names(dirfd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut dir = Dir::read_from(dirfd)?;
    let mut names = Vec::new();
    while let Some(ent) = dir.read() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// A random hex token for temporary names (collision avoidance only:
/// every creation uses `O_EXCL`/`mkdirat`, which never reuse a name).
pub(crate) fn random_token() -> String {
    let mut buf = [0u8; 8];
    if rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        buf = ((t as u64) ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    hex::encode(buf)
}

/// `lstat` of `name` beneath `dirfd`, `None` when it does not exist.
pub(crate) fn lstat_at(dirfd: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` beneath `parent` and everything under it without ever
/// following a symlink: directories are entered with `O_NOFOLLOW` through
/// their parent's fd (made `0700` first, so a `0555` directory does not
/// block), everything else is unlinked. Missing is fine. Iterative, so a
/// deep tree does not grow the call stack.
pub(crate) fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let Some(st) = lstat_at(parent, name)? else {
        return Ok(());
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Ok(rustix::fs::unlinkat(parent, name, AtFlags::empty())?);
    }
    let _ = rustix::fs::chmodat(parent, name, Mode::from_raw_mode(0o700), AtFlags::empty());
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = vec![(open_dir_at(parent, name)?, name.to_vec())];
    while let Some((fd, _)) = stack.last() {
        let mut child_dir: Option<Vec<u8>> = None;
        let mut dir = Dir::read_from(fd)?;
        while let Some(ent) = dir.read() {
            let ent = ent?;
            let n = ent.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            let st = rustix::fs::statat(fd, n, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                child_dir = Some(n.to_vec());
                break;
            }
            rustix::fs::unlinkat(fd, n, AtFlags::empty())?;
        }
        match child_dir {
            Some(n) => {
                let _ = rustix::fs::chmodat(fd, &n, Mode::from_raw_mode(0o700), AtFlags::empty());
                let child = open_dir_at(fd.as_fd(), &n)?;
                stack.push((child, n));
            }
            None => {
                let (fd, n) = stack.pop().expect("stack is not empty");
                drop(fd);
                let p = stack.last().map_or(parent, |(f, _)| f.as_fd());
                rustix::fs::unlinkat(p, &n, AtFlags::REMOVEDIR)?;
            }
        }
    }
    Ok(())
}

/// Renames `from` to `to` in `dir` without replacing anything, then syncs
/// the directory so the name survives a crash.
pub(crate) fn rename_noreplace(dir: BorrowedFd<'_>, from: &[u8], to: &[u8]) -> io::Result<()> {
    match rustix::fs::renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE) {
        Ok(()) => {}
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            // A filesystem without RENAME_NOREPLACE: check, then rename.
            if lstat_at(dir, to)?.is_some() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            rustix::fs::renameat(dir, from, dir, to)?;
        }
        Err(e) => return Err(e.into()),
    }
    rustix::fs::fsync(dir)?;
    Ok(())
}

/// Reads an entry's extended attributes, sorted by name: through `fd`
/// when given (an open file or directory), else through `path` with the
/// `l*` calls, which do not follow a final symlink. A filesystem without
/// xattr support has none.
pub(crate) fn read_xattrs(fd: Option<BorrowedFd<'_>>, path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        let r = match fd {
            Some(fd) => rustix::fs::flistxattr(fd, names.as_mut_slice()),
            None => rustix::fs::llistxattr(path, names.as_mut_slice()),
        };
        match r {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if names.len() < 1 << 20 => {
                let len = names.len() * 4;
                names.resize(len, 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    names.truncate(n);
    let mut out = Vec::new();
    for key in names.split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let mut val = vec![0u8; 4096];
        let len = loop {
            let r = match fd {
                Some(fd) => rustix::fs::fgetxattr(fd, key, val.as_mut_slice()),
                None => rustix::fs::lgetxattr(path, key, val.as_mut_slice()),
            };
            match r {
                Ok(n) => break Some(n),
                Err(rustix::io::Errno::RANGE) if val.len() < 1 << 20 => {
                    let len = val.len() * 4;
                    val.resize(len, 0);
                }
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(len) = len {
            val.truncate(len);
            out.push((key.to_vec(), val));
        }
    }
    out.sort();
    Ok(out)
}

/// Depth-first order of relative paths: `/` sorts before every other byte
/// (names hold no NUL), so a directory's whole subtree follows it directly.
/// The manifest's raw byte order (`a`, `a b`, `a/x`) is not that order.
pub(crate) fn tree_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let key = |c: &u8| if *c == b'/' { 0 } else { *c };
    a.iter().map(key).cmp(b.iter().map(key))
}

/// Open directory fds a [`DirStack`] keeps at most.
const STACK_OPEN_MAX: usize = 64;

/// The directories from a root down to the one being filled, for building
/// a tree in depth-first order: each entry's parent is the top of the stack
/// once the levels it is not below are left. Deep levels beyond
/// [`STACK_OPEN_MAX`] open fds are closed and reopened (component by
/// component, `O_NOFOLLOW`) when the walk comes back to them.
pub(crate) struct DirStack {
    root: OwnedFd,
    levels: Vec<(Vec<u8>, Option<OwnedFd>)>,
}

impl DirStack {
    pub(crate) fn new(root: OwnedFd) -> DirStack {
        DirStack { root, levels: Vec::new() }
    }

    pub(crate) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The fd of directory `dir` (empty for the root), which must have been
    /// pushed and not left yet.
    pub(crate) fn parent(&mut self, dir: &[u8]) -> io::Result<BorrowedFd<'_>> {
        while let Some((p, _)) = self.levels.last() {
            let leads = dir.starts_with(p) && (dir.len() == p.len() || dir[p.len()] == b'/');
            if leads {
                break;
            }
            self.levels.pop();
        }
        if dir.is_empty() {
            return Ok(self.root.as_fd());
        }
        let Some((p, fd)) = self.levels.last_mut() else {
            return Err(io::Error::other("parent directory was not created first"));
        };
        if p.as_slice() != dir {
            return Err(io::Error::other("parent directory was not created first"));
        }
        if fd.is_none() {
            *fd = Some(open_dir_beneath(self.root.as_fd(), dir)?);
        }
        Ok(fd.as_ref().expect("opened above").as_fd())
    }

    /// Enters the directory `path` (a child of the current top).
    pub(crate) fn push(&mut self, path: Vec<u8>, fd: OwnedFd) {
        self.levels.push((path, Some(fd)));
        if self.levels.iter().filter(|(_, f)| f.is_some()).count() > STACK_OPEN_MAX
            && let Some((_, f)) = self.levels.iter_mut().find(|(_, f)| f.is_some())
        {
            *f = None;
        }
    }
}
