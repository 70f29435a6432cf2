//! Small file-descriptor helpers shared by creation and extraction.
//!
//! Everything here works relative to a directory fd and never follows a
//! symlink: that is what keeps extraction confined (SECURITY.md I2, C6) and
//! what keeps the walker from wandering out of the tree it was given.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

/// Opens the directory `name` beneath `dirfd` for reading, refusing to
/// follow a symlink (`ELOOP`/`ENOTDIR` instead).
pub(crate) fn open_dir_at(dirfd: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens a directory below `root` one component at a time, each with
/// `O_NOFOLLOW`, so a symlink anywhere on the way is an error rather than
/// a detour. An empty component list reopens `root` itself.
pub(crate) fn open_dir_beneath<'a>(
    root: BorrowedFd<'_>,
    components: impl IntoIterator<Item = &'a [u8]>,
) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for c in components {
        let next = open_dir_at(cur.as_ref().map_or(root, |f| f.as_fd()), c)?;
        cur = Some(next);
    }
    match cur {
        Some(fd) => Ok(fd),
        None => open_dir_at(root, b"."),
    }
}

/// Reads the names in an open directory (without `.` and `..`), sorted by
/// raw bytes so every walk is deterministic.
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

/// A random hex token for staging names. Unpredictability is not what
/// protects the staging directory (`mkdirat` fails on any existing name,
/// symlink or not); it only avoids collisions between concurrent restores.
pub(crate) fn random_token() -> String {
    let mut buf = [0u8; 8];
    if rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        buf = ((t as u64) ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    hex::encode(buf)
}

/// Removes `name` beneath `parent` and everything under it without ever
/// following a symlink (CVE-2022-21658 class): directories are entered with
/// `O_NOFOLLOW` through their parent's fd, everything else is unlinked.
/// Directories are made `0700` before entering, so a `0000` or `0555`
/// directory written from an archive does not make the tree undeletable.
/// Iterative: the depth of the tree does not grow the call stack.
pub(crate) fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
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

/// Converts a rustix errno into an `io::Error` (for `map_err`).
pub(crate) fn ioe(e: rustix::io::Errno) -> io::Error {
    e.into()
}
