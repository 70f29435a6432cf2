//! Small file-descriptor helpers shared by creation and extraction.
//!
//! Everything here works relative to a directory fd and never follows a
//! symlink: that is what keeps extraction confined (SECURITY.md I2, C6) and
//! what keeps the walker from wandering out of the tree it was given.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};

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

/// Opens a directory below `root` without ever following a symlink: a
/// symlink anywhere on the way is an error (`ELOOP`/`ENOTDIR`/`EXDEV`),
/// never a detour. An empty component list reopens `root` itself.
///
/// On Linux ≥ 5.6 this is one `openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, so the
/// kernel itself refuses any path that would leave `root` or cross a link,
/// whatever the archive validator decided. Where `openat2` is missing (old
/// kernels, seccomp filters that answer `ENOSYS`/`EPERM`), the same
/// guarantee comes from opening one component at a time with `O_NOFOLLOW`.
pub(crate) fn open_dir_beneath<'a>(
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
