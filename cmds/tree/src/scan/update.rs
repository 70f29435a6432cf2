//! The O(changes) scan: a new manifest from the previous one and the paths
//! that changed, for a watcher (inotify) that knows what changed.
//!
//! Each changed path is re-stat'ed (its parents opened one component at a
//! time with `O_NOFOLLOW`); a directory's subtree is walked only when the
//! directory is new (or was something else before), and everything below a
//! path that is gone, excluded or no longer a directory is dropped. A
//! parent that is missing from the previous manifest, or is no longer a
//! directory on disk, is treated as changed too, so a watcher that reports
//! only the deepest path of `mkdir -p a/b/c; touch a/b/c/f` still gets `a`
//! with its subtree. Unchanged entries are copied from the previous
//! manifest without a system call; their hash-cache records are kept.
//!
//! What counts as changed is the caller's to say, as inotify reports it: an
//! entry whose content or metadata changed, and for an entry created,
//! removed or renamed, the entry's old and new names *and* their parent
//! directories (whose mtime changed). A path not given is trusted to be as
//! the previous manifest says.
//!
//! The options must be those the previous manifest was made with.
//! Hard-link groups are recomputed: an unchanged member is matched to a new
//! name by the inode its cache record remembers (without a cache, a group
//! that gains a name in an update is recorded as separate files until the
//! next full scan).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};

use ferry_archive::fsutil::{components, join, open_dir_at, split_last};
use rustix::fs::{AtFlags, FileType};

use super::walk::{Item, LinkKey, Walker};
use super::{Scan, ScanError, ScanOptions, canonical_links, finish};
use crate::manifest::validate::check_path;
use crate::manifest::{Kind, Manifest};

/// Where a path stands relative to the include list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Inside an include (or there are none): scanned with its subtree.
    Inside,
    /// A directory leading to an include: only its own entry.
    Ancestor,
    /// Neither: not part of the manifest.
    Outside,
}

/// `p` is `r` or below it.
fn within(p: &[u8], r: &[u8]) -> bool {
    p.starts_with(r) && (p.len() == r.len() || p[r.len()] == b'/')
}

/// The strict ancestors of `p`, top-down.
fn ancestors(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.iter().enumerate().filter(|(_, b)| **b == b'/').map(move |(i, _)| &p[..i])
}

/// Scans the paths in `changed` (relative to the root) and merges them into
/// `prev`; see the module docs. The result is what [`super::scan`] would
/// return if nothing else changed.
pub fn update(prev: &Manifest, changed: &[Vec<u8>], opts: &ScanOptions) -> Result<Scan, ScanError> {
    if prev.options.xattrs != opts.xattrs {
        return Err(ScanError::Options("the previous manifest was made with another xattrs setting".into()));
    }
    let mut w = Walker::new(opts)?;
    let incs = w.includes()?;
    let mut u = Update { incs, map: BTreeMap::new(), walked: Vec::new() };

    // Inodes the cache remembers for the previous groups and files, so an
    // unchanged name can join a group with a new one.
    let record = |e: &crate::manifest::Entry| {
        w.old_cache.map.get(&e.path).filter(|r| Some(&r.sha256) == e.sha256()).map(|r| (r.dev, r.ino))
    };
    let mut group_inode: HashMap<u64, (u64, u64)> = HashMap::new();
    for e in &prev.entries {
        if let (Some(g), Some(ino)) = (e.link, record(e)) {
            group_inode.entry(g).or_insert(ino);
        }
    }
    for e in &prev.entries {
        let key = match (e.link, record(e)) {
            (Some(g), _) => group_inode.get(&g).map_or(LinkKey::Prev(g), |&(d, i)| LinkKey::Inode(d, i)),
            (None, Some((d, i))) => LinkKey::Inode(d, i),
            (None, None) => LinkKey::None,
        };
        u.map.insert(e.path.clone(), Item { entry: e.clone(), key, fresh: false });
    }

    let mut paths = changed.to_vec();
    paths.sort();
    paths.dedup();
    for p in &paths {
        check_path(p).map_err(|r| {
            ScanError::Options(format!(
                "changed path {} is not a relative path below the root: {}",
                ferry_text::escape_bytes(p, 400),
                r.reason()
            ))
        })?;
        u.process(&mut w, p)?;
    }
    let entries = canonical_links(u.map.into_values().collect());
    let old = std::mem::take(&mut w.old_cache.map);
    finish(w, entries, |p| old.get(p).copied())
}

struct Update {
    incs: Vec<Vec<u8>>,
    map: BTreeMap<Vec<u8>, Item>,
    /// Subtrees walked in full in this run (nothing below needs a look).
    walked: Vec<Vec<u8>>,
}

/// Why a changed path's parent could not be opened.
enum ParentError {
    /// This ancestor is missing or not a directory on disk.
    Broken(Vec<u8>),
    /// The parent is one the full scan never enters (the export directory,
    /// another filesystem under `one_file_system`).
    Outside,
}

impl Update {
    fn scope(&self, p: &[u8]) -> Scope {
        if self.incs.is_empty() || self.incs.iter().any(|i| within(p, i)) {
            Scope::Inside
        } else if self.incs.iter().any(|i| within(i, p)) {
            Scope::Ancestor
        } else {
            Scope::Outside
        }
    }

    fn is_dir(&self, p: &[u8]) -> bool {
        matches!(self.map.get(p).map(|i| &i.entry.kind), Some(Kind::Dir))
    }

    /// Drops `p` and everything below it.
    fn remove(&mut self, p: &[u8]) {
        self.map.remove(p);
        let mut lo = p.to_vec();
        lo.push(b'/');
        let mut hi = p.to_vec();
        hi.push(b'/' + 1);
        let below: Vec<Vec<u8>> = self.map.range(lo..hi).map(|(k, _)| k.clone()).collect();
        for k in below {
            self.map.remove(&k);
        }
    }

    /// Whether an exclude pattern drops `p` or a directory above it that
    /// the full scan would have checked (from the include root down).
    fn excluded(&self, w: &Walker<'_>, p: &[u8]) -> bool {
        let checked = |prefix: &[u8]| self.incs.is_empty() || self.incs.iter().any(|i| within(prefix, i));
        ancestors(p).chain(std::iter::once(p)).any(|prefix| checked(prefix) && w.excluded(prefix, split_last(prefix).1))
    }

    /// Opens the directory `parent` below the root without following links.
    fn open_parent(&self, w: &mut Walker<'_>, parent: &[u8]) -> Result<Result<OwnedFd, ParentError>, ScanError> {
        let mut fd = rustix::io::dup(&w.root).map_err(|e| w.io(b"", e.into()))?;
        let mut rel = Vec::new();
        for c in components(parent) {
            rel = join(&rel, c);
            w.stats.statted += 1;
            let st = match rustix::fs::statat(&fd, c, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => st,
                Ok(_) | Err(rustix::io::Errno::NOENT) => return Ok(Err(ParentError::Broken(rel))),
                Err(e) => return Err(w.io(&rel, e.into())),
            };
            if w.is_export(&st) || (w.opts.one_file_system && st.st_dev != w.root_dev) {
                return Ok(Err(ParentError::Outside));
            }
            fd = match open_dir_at(fd.as_fd(), c) {
                Ok(fd) => fd,
                Err(e)
                    if matches!(e.raw_os_error(), Some(n) if n == rustix::io::Errno::NOENT.raw_os_error()
                    || n == rustix::io::Errno::NOTDIR.raw_os_error()
                    || n == rustix::io::Errno::LOOP.raw_os_error()) =>
                {
                    return Ok(Err(ParentError::Broken(rel)));
                }
                Err(e) => return Err(w.io(&rel, e)),
            };
        }
        Ok(Ok(fd))
    }

    /// Brings the entry at `p` (and, when it is a new directory, its
    /// subtree) up to date.
    fn process(&mut self, w: &mut Walker<'_>, p: &[u8]) -> Result<(), ScanError> {
        if self.walked.iter().any(|r| within(p, r)) {
            return Ok(());
        }
        let scope = self.scope(p);
        if scope == Scope::Outside || (scope == Scope::Inside && self.excluded(w, p)) {
            self.remove(p);
            return Ok(());
        }
        if let Some(a) = ancestors(p).find(|a| !self.is_dir(a)) {
            // A parent the previous manifest does not have as a directory
            // changed too (and its walk covers `p`).
            let a = a.to_vec();
            return self.process(w, &a);
        }
        let (parent, name) = split_last(p);
        let pfd = match self.open_parent(w, parent)? {
            Ok(fd) => fd,
            Err(ParentError::Broken(a)) => return self.process(w, &a),
            Err(ParentError::Outside) => {
                self.remove(p);
                return Ok(());
            }
        };
        let was_dir = self.is_dir(p);
        let before = w.items.len();
        let frame = w.entry(pfd.as_fd(), name, p, false, !was_dir && scope == Scope::Inside)?;
        let mut fresh = w.items.drain(before..);
        let Some(item) = fresh.next() else {
            drop(fresh);
            // Gone, excluded, the export directory, or skipped as unreadable.
            self.remove(p);
            return Ok(());
        };
        drop(fresh);
        let now_dir = item.entry.kind == Kind::Dir;
        if !(now_dir && was_dir) {
            self.remove(p);
        }
        self.map.insert(p.to_vec(), item);
        if let Some(frame) = frame {
            w.walk(frame)?;
            for it in w.items.drain(..) {
                self.map.insert(it.entry.path.clone(), it);
            }
            self.walked.push(p.to_vec());
        } else if now_dir && !was_dir && scope == Scope::Ancestor {
            let below: Vec<Vec<u8>> = self.incs.iter().filter(|i| within(i, p)).cloned().collect();
            for inc in below {
                self.process(w, &inc)?;
            }
        }
        Ok(())
    }
}
