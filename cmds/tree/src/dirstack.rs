//! Building a tree in depth-first order: the order itself
//! ([`tree_order`]) and the stack of open directories from the root down
//! to the one being filled ([`DirStack`]). The directory-fd helpers it
//! stands on (never following a link) are ferry-archive's
//! [`ferry_archive::fsutil`], shared with the extractor.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use ferry_archive::fsutil::{components, open_dir_beneath};

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
/// [`STACK_OPEN_MAX`] open fds are closed and reopened beneath the root
/// (never through a link) when the walk comes back to them.
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
            *fd = Some(open_dir_beneath(self.root.as_fd(), components(dir))?);
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
