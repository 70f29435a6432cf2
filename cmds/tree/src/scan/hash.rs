//! Hashing one regular file, guarded against it changing meanwhile.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::BorrowedFd;

use rustix::fs::{FileType, Mode, OFlags, Stat};
use sha2::Digest as _;

use super::cache::{ctime_of, mtime_of};
use crate::manifest::Sha256;

/// The outcome of hashing a file.
pub(crate) struct Hashed {
    /// Digest of exactly `size` bytes, as read.
    pub(crate) sha256: Sha256,
    /// Bytes read in the attempt that produced the digest.
    pub(crate) size: u64,
    /// The file's `fstat` after that attempt (its metadata for the entry).
    pub(crate) st: Stat,
    /// Every attempt saw the file change; the digest is of the last read.
    pub(crate) unstable: bool,
    /// Bytes read over all attempts.
    pub(crate) bytes_read: u64,
    /// When the attempt that produced the digest began (for the racy check).
    pub(crate) started: std::time::SystemTime,
}

/// Why the file could not be hashed.
pub(crate) enum HashFailure {
    /// It is gone, or is no longer the regular file that was `lstat`ed
    /// (replaced by a link, a FIFO or another file): skip it quietly.
    Vanished,
    /// Opening or reading failed.
    Unreadable(io::Error),
}

/// Opens the regular file `name` beneath `dirfd` for reading without
/// following a link and without blocking (a FIFO swapped in since the
/// `lstat` must not hang the scan), and checks it is still the inode `lst`
/// describes.
pub(crate) fn open_file(dirfd: BorrowedFd<'_>, name: &[u8], lst: &Stat) -> Result<(File, Stat), HashFailure> {
    let fd = match rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => return Err(HashFailure::Vanished),
        Err(e) => return Err(HashFailure::Unreadable(e.into())),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| HashFailure::Unreadable(e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || st.st_ino != lst.st_ino
        || st.st_dev != lst.st_dev
    {
        return Err(HashFailure::Vanished);
    }
    Ok((File::from(fd), st))
}

fn same(a: &Stat, b: &Stat) -> bool {
    a.st_size == b.st_size && mtime_of(a) == mtime_of(b) && ctime_of(a) == ctime_of(b)
}

/// Hashes the open `file` (whose `fstat` is `st`): reads at most the
/// size `st` shows (a growing log file cannot keep the scan reading), then
/// compares a second `fstat`. While the size, mtime or ctime changed under
/// the read (or the file ended early), it is read again, up to `attempts`
/// times in all. `buf` is the read buffer.
pub(crate) fn hash_file(file: &mut File, mut st: Stat, attempts: u32, buf: &mut [u8]) -> Result<Hashed, HashFailure> {
    let mut bytes_read = 0u64;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = std::time::SystemTime::now();
        file.seek(SeekFrom::Start(0)).map_err(HashFailure::Unreadable)?;
        let want = st.st_size.max(0) as u64;
        let mut h = sha2::Sha256::new();
        let mut size = 0u64;
        while size < want {
            let n = usize::try_from(want - size).unwrap_or(usize::MAX).min(buf.len());
            let n = match file.read(&mut buf[..n]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(HashFailure::Unreadable(e)),
            };
            h.update(&buf[..n]);
            size += n as u64;
        }
        bytes_read += size;
        #[cfg(test)]
        tests::after_read();
        let after = rustix::fs::fstat(&*file).map_err(|e| HashFailure::Unreadable(e.into()))?;
        let stable = same(&st, &after) && size == want;
        if stable || attempt >= attempts.max(1) {
            return Ok(Hashed {
                sha256: Sha256(h.finalize().into()),
                size,
                st: after,
                unstable: !stable,
                bytes_read,
                started,
            });
        }
        st = after;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    thread_local! {
        /// Runs between a file's read and the stat after it: the place
        /// where a concurrent writer would strike.
        pub(crate) static AFTER_READ: RefCell<Option<Box<dyn FnMut()>>> = const { RefCell::new(None) };
    }

    pub(crate) fn after_read() {
        AFTER_READ.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f();
            }
        });
    }
}
