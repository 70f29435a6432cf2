//! Directory-fd helpers shared by creation, extraction and `ferry-tree`.
//!
//! Everything here works relative to a directory fd and never follows a
//! symlink: that is what keeps extraction and snapshot building confined
//! (SECURITY.md I2, C6) and what keeps the walkers from wandering out of
//! the tree they were given. `ferry-tree` uses these same functions, so
//! one discipline covers both ways of storing a file system.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, RenameFlags, ResolveFlags};

/// Opens the directory `name` beneath `dirfd` for reading, refusing to
/// follow a symlink (`ELOOP`/`ENOTDIR` instead).
pub fn open_dir_at(dirfd: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens a directory by path (following links in `path` itself: it is
/// configuration or an administrator's argument, not client data).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// The components of a relative path (empty ones dropped).
pub fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|b| *b == b'/').filter(|c| !c.is_empty())
}

/// Splits a relative path into its parent (empty for the top) and its
/// last component.
pub fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Joins a relative path (empty for the top) and a name with `/`.
pub fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        p.extend_from_slice(rel);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Opens a directory below `root` without ever following a symlink: a
/// symlink anywhere on the way is an error (`ELOOP`/`ENOTDIR`/`EXDEV`),
/// never a detour. An empty component list reopens `root` itself.
///
/// On Linux ≥ 5.6 this is one `openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, so the
/// kernel itself refuses any path that would leave `root` or cross a link,
/// whatever the caller's validation decided. Where `openat2` is missing (old
/// kernels, seccomp filters that answer `ENOSYS`/`EPERM`), the same
/// guarantee comes from opening one component at a time with `O_NOFOLLOW`.
pub fn open_dir_beneath<'a>(
    root: BorrowedFd<'_>,
    components: impl IntoIterator<Item = &'a [u8]>,
) -> io::Result<OwnedFd> {
    let components: Vec<&[u8]> = components.into_iter().collect();
    if components.is_empty() {
        return open_dir_at(root, b".");
    }
    if OPENAT2.load(Ordering::Relaxed) {
        let path = components.join(&b'/');
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        for _ in 0..4 {
            match rustix::fs::openat2(root, path.as_slice(), flags, Mode::empty(), resolve) {
                Ok(fd) => return Ok(fd),
                // A rename elsewhere on the file system raced the lookup.
                Err(rustix::io::Errno::AGAIN) => continue,
                Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                    OPENAT2.store(false, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    walk_beneath(root, &components)
}

/// The `O_NOFOLLOW` walk behind [`open_dir_beneath`], one component at a
/// time from `root`.
fn walk_beneath(root: BorrowedFd<'_>, components: &[&[u8]]) -> io::Result<OwnedFd> {
    let mut cur = open_dir_at(root, b".")?;
    for c in components {
        cur = open_dir_at(cur.as_fd(), c)?;
    }
    Ok(cur)
}

/// Whether `openat2` is worth trying (cleared once the kernel refuses it).
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// Reads the names in an open directory (without `.` and `..`), sorted by
/// raw bytes so every walk is deterministic.
pub fn read_names(dirfd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
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

/// A random hex token for staging and temporary names. Unpredictability
/// is not what protects them (`mkdirat` and `O_EXCL` fail on any existing
/// name, symlink or not); it only avoids collisions between concurrent
/// writers.
pub fn random_token() -> String {
    let mut buf = [0u8; 8];
    if rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        buf = ((t as u64) ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    hex::encode(buf)
}

/// `lstat` of `name` beneath `dirfd`, `None` when it does not exist.
pub fn lstat_at(dirfd: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` beneath `parent` and everything under it without ever
/// following a symlink (CVE-2022-21658 class): directories are entered with
/// `O_NOFOLLOW` through their parent's fd, everything else is unlinked.
/// Directories are made `0700` before entering, so a `0000` or `0555`
/// directory written from an archive does not make the tree undeletable.
/// Missing is fine. Iterative: the depth of the tree does not grow the
/// call stack.
pub fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
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

/// Renames `from` to `to` in `dir` without replacing anything that is
/// there (`RENAME_NOREPLACE`; where the filesystem lacks it, a check then
/// a rename). An existing `to` is an `AlreadyExists` error. Does not sync
/// `dir`: callers decide what a failed sync means for them.
pub fn rename_noreplace(dir: BorrowedFd<'_>, from: &[u8], to: &[u8]) -> io::Result<()> {
    match rustix::fs::renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            if lstat_at(dir, to)?.is_some() {
                return Err(rustix::io::Errno::EXIST.into());
            }
            Ok(rustix::fs::renameat(dir, from, dir, to)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Extended attributes as (name, value) pairs, sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Why [`read_xattrs`] failed: the call that did (`listxattr` or
/// `getxattr`), for messages that say which, and its error (which is all
/// it displays).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct XattrError {
    /// `"listxattr"` or `"getxattr"`.
    pub call: &'static str,
    /// What the call returned.
    pub error: io::Error,
}

/// Reads an entry's extended attributes, sorted by name: through `fd`
/// when one is open (a file or directory), else through `path` with the
/// `l*` calls, which do not follow a final symlink. A filesystem without
/// xattr support has none.
pub fn read_xattrs(fd: Option<BorrowedFd<'_>>, path: &Path) -> Result<Xattrs, XattrError> {
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
            Err(e) => return Err(XattrError { call: "listxattr", error: e.into() }),
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
                Err(e) => return Err(XattrError { call: "getxattr", error: e.into() }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Both ways of resolving refuse every symlink on the way, pointing in
    /// or out of the tree, and any `..` that would leave it.
    #[test]
    fn beneath_never_follows_a_link() {
        let d = std::env::temp_dir().join(format!("ferry-archive-beneath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("root/a/b")).unwrap();
        std::fs::create_dir_all(d.join("outside")).unwrap();
        symlink(d.join("outside"), d.join("root/abs")).unwrap();
        symlink("a", d.join("root/rel")).unwrap();
        symlink("../../outside", d.join("root/a/up")).unwrap();
        let root = rustix::fs::open(d.join("root"), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let ok: &[&[u8]] = &[b"a", b"b"];
        assert!(open_dir_beneath(root.as_fd(), ok.iter().copied()).is_ok());
        assert!(walk_beneath(root.as_fd(), ok).is_ok());
        for bad in [&[&b"abs"[..]][..], &[b"rel"], &[b"rel", b"b"], &[b"a", b"up"], &[b"..", b"outside"]] {
            let shown: Vec<String> = bad.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            assert!(open_dir_beneath(root.as_fd(), bad.iter().copied()).is_err(), "openat2 followed {shown:?}");
            if bad[0] != b".." {
                assert!(walk_beneath(root.as_fd(), bad).is_err(), "the walk followed {shown:?}");
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
