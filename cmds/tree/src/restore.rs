//! Reproducing a snapshot faithfully from its manifest and the store, into
//! a target directory: contents (copied, checked against their digests on
//! the way), types, modes, owners, mtimes, symlinks, hard links, empty
//! directories, xattrs and special files, as the [`RestorePolicy`] asks.
//!
//! The policy's names and defaults are ferry-archive's `ExtractPolicy`
//! (a tar restore and a tree restore of the same source are asked the same
//! things; [`RestorePolicy::from`] maps one onto the other).
//!
//! Owners (as root, when asked) are restored **by name first**, as GNU tar
//! does as root: the manifest's user and group names are looked up in this
//! host's `/etc/passwd` and `/etc/group`, and the numeric ids are used when
//! a name is not recorded or not known here (a rescue host with other
//! numbering gets the right people). `numeric_owner` uses the ids only.
//!
//! Nothing is written outside the target, whatever the manifest says: it is
//! validated first, and then every entry is created through directory fds
//! opened component by component with `O_NOFOLLOW` from the target, files
//! with `O_CREAT|O_EXCL|O_NOFOLLOW`, symlinks created but never traversed.
//! Directory modes, owners and times are applied last, deepest first, so a
//! read-only directory does not block its own contents and every mtime
//! sticks.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use ferry_archive::fsutil::{components, open_dir, open_dir_at, open_dir_beneath, read_names, split_last};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use sha2::Digest as _;

use crate::dirstack::{DirStack, tree_order};
use crate::manifest::{Entry, Kind, Limits, Manifest, ManifestError, Mtime, Sha256};
use crate::names::Names;
use crate::store::{Store, StoreError};

/// What a restore reproduces. Field names and defaults follow
/// ferry-archive's `ExtractPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePolicy {
    /// Keep setuid, setgid and sticky bits (off: stripped).
    pub setuid: bool,
    /// Keep permission bits (off: files 0644, or 0755 with any execute
    /// bit; directories 0755).
    pub preserve_modes: bool,
    /// Restore owners (only effective when running as root).
    pub preserve_owner: bool,
    /// Owners by numeric id only, not by name.
    pub numeric_owner: bool,
    /// Apply extended attributes of the `user.` namespace (never
    /// `security.*`, `trusted.*` or `system.*`).
    pub xattrs: bool,
    /// Restore modification times.
    pub mtimes: bool,
    /// Create FIFOs, and character and block devices when running as root.
    /// Sockets are never created.
    pub devices: bool,
    /// Allow a target that is not empty (entries are still never
    /// overwritten: an existing name is an error, except a directory where
    /// the manifest has a directory).
    pub into_non_empty: bool,
}

impl Default for RestorePolicy {
    fn default() -> Self {
        RestorePolicy {
            setuid: false,
            preserve_modes: true,
            preserve_owner: false,
            numeric_owner: false,
            xattrs: false,
            mtimes: true,
            devices: false,
            into_non_empty: false,
        }
    }
}

impl RestorePolicy {
    /// Everything a host's own tree holds, for an administrator's restore:
    /// setuid bits, owners (as root), `user.*` xattrs, FIFOs and devices.
    pub fn faithful() -> Self {
        RestorePolicy { setuid: true, preserve_owner: true, xattrs: true, devices: true, ..RestorePolicy::default() }
    }
}

impl From<&ferry_archive::ExtractPolicy> for RestorePolicy {
    /// The same answers for a tree restore as for a tar restore.
    fn from(p: &ferry_archive::ExtractPolicy) -> Self {
        RestorePolicy {
            setuid: p.setuid,
            preserve_modes: p.preserve_modes,
            preserve_owner: p.preserve_owner,
            xattrs: p.xattrs,
            mtimes: p.mtimes,
            devices: p.devices,
            ..RestorePolicy::default()
        }
    }
}

/// What [`restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Directories created.
    pub dirs: u64,
    /// Regular files written (one per inode).
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Further names of an inode (hard links).
    pub hardlinks: u64,
    /// FIFOs and devices created.
    pub special: u64,
    /// Entries not created, with why (sockets; FIFOs and devices unless
    /// asked; devices without root).
    pub not_created: Vec<(Vec<u8>, &'static str)>,
}

/// Why a restore failed (the target may hold a partial tree).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The manifest breaks the format.
    #[error(transparent)]
    Invalid(#[from] ManifestError),
    /// The target is not empty and the policy does not allow that.
    #[error("restore target {} is not empty", .0.display())]
    NotEmpty(PathBuf),
    /// Contents are missing from the store.
    #[error("E_STORE: {0} contents of the manifest are not in the store")]
    Incomplete(usize),
    /// A stored content does not match the manifest (store corruption).
    #[error("E_STORE: stored content of {path} does not match the manifest's digest {expected}")]
    Content {
        /// The escaped path.
        path: String,
        /// The manifest's digest.
        expected: Sha256,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the target failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (paths escaped).
        context: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn shown(p: &[u8]) -> String {
    ferry_text::escape_bytes(p, 400)
}

fn io_err(what: &str, path: &[u8]) -> impl FnOnce(io::Error) -> RestoreError {
    let context = format!("{what} {}", shown(path));
    move |source| RestoreError::Io { context, source }
}

fn ts(t: Mtime) -> Timestamps {
    let t = Timespec { tv_sec: t.sec, tv_nsec: t.nsec.into() };
    Timestamps { last_access: t, last_modification: t }
}

/// Restores `manifest` into `target` (created when missing) from `store`.
pub fn restore(
    manifest: &Manifest,
    store: &Store,
    target: &Path,
    policy: &RestorePolicy,
) -> Result<RestoreStats, RestoreError> {
    let unlimited = Limits { max_entries: u64::MAX, max_total_bytes: u64::MAX, max_line_bytes: usize::MAX };
    manifest.check(&unlimited)?;
    let absent = crate::snapshot::missing(manifest, store);
    if !absent.is_empty() {
        return Err(RestoreError::Incomplete(absent.len()));
    }
    let tio = |what: &str| {
        let context = format!("{what} {}", target.display());
        move |source: io::Error| RestoreError::Io { context, source }
    };
    let created = match std::fs::create_dir(target) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(tio("creating")(e)),
    };
    let root = open_dir(target).map_err(tio("opening"))?;
    if created {
        rustix::fs::fchmod(&root, Mode::from_raw_mode(0o755)).map_err(|e| tio("chmod")(e.into()))?;
    } else if !policy.into_non_empty && !read_names(root.as_fd()).map_err(tio("listing"))?.is_empty() {
        return Err(RestoreError::NotEmpty(target.to_path_buf()));
    }
    let mut r = Restorer {
        policy,
        store,
        names: Names::load(),
        is_root: rustix::process::geteuid().is_root(),
        stats: RestoreStats::default(),
        first_of_group: HashMap::new(),
        buf: vec![0u8; 256 << 10],
    };
    let mut order: Vec<&Entry> = manifest.entries.iter().collect();
    order.sort_by(|a, b| tree_order(&a.path, &b.path));
    let mut stack = DirStack::new(rustix::io::dup(&root).map_err(|e| tio("dup")(e.into()))?);
    let mut dirs: Vec<&Entry> = Vec::new();
    for e in order {
        let (dir, name) = split_last(&e.path);
        let pfd = stack.parent(dir).map_err(io_err("opening the parent of", &e.path))?;
        if let Some(fd) = r.entry(pfd, name, e, root.as_fd())? {
            stack.push(e.path.clone(), fd);
            dirs.push(e);
        }
    }
    drop(stack);
    // Directories last, deepest (and later siblings) first.
    for e in dirs.iter().rev() {
        let fd = open_dir_beneath(root.as_fd(), components(&e.path)).map_err(io_err("reopening", &e.path))?;
        r.meta(fd.as_fd(), e)?;
    }
    Ok(r.stats)
}

struct Restorer<'a> {
    policy: &'a RestorePolicy,
    store: &'a Store,
    names: Names,
    is_root: bool,
    stats: RestoreStats,
    /// The first restored name of each hard-link group.
    first_of_group: HashMap<u64, Vec<u8>>,
    buf: Vec<u8>,
}

impl Restorer<'_> {
    fn final_mode(&self, e: &Entry) -> u32 {
        let m = e.mode & 0o7777;
        if !self.policy.preserve_modes {
            return match e.kind {
                Kind::Dir => 0o755,
                _ if m & 0o111 != 0 => 0o755,
                _ => 0o644,
            };
        }
        if self.policy.setuid { m } else { m & 0o777 }
    }

    /// The owner to set: by name first (unless numeric), else by id; `None`
    /// unless asked and root.
    fn owner(&self, e: &Entry) -> Option<(rustix::fs::Uid, rustix::fs::Gid)> {
        if !(self.policy.preserve_owner && self.is_root) {
            return None;
        }
        let by_name = !self.policy.numeric_owner;
        let uid = e.user.as_deref().filter(|_| by_name).and_then(|n| self.names.uid(n)).unwrap_or(e.uid);
        let gid = e.group.as_deref().filter(|_| by_name).and_then(|n| self.names.gid(n)).unwrap_or(e.gid);
        // u32::MAX means "no change" to chown(2), never a real id.
        if uid == u32::MAX || gid == u32::MAX {
            return None;
        }
        Some((rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid)))
    }

    /// Applies xattrs, owner, mode and mtime to an open file or directory.
    fn meta(&self, fd: BorrowedFd<'_>, e: &Entry) -> Result<(), RestoreError> {
        if self.policy.xattrs {
            for (k, v) in e.xattrs.iter().filter(|(k, _)| k.starts_with(b"user.")) {
                match rustix::fs::fsetxattr(fd, k.as_slice(), v, rustix::fs::XattrFlags::empty()) {
                    Ok(()) => {}
                    Err(rustix::io::Errno::NOTSUP) => {
                        tracing::warn!(path = %shown(&e.path), "the target does not support user xattrs");
                    }
                    Err(x) => return Err(io_err("setting an xattr on", &e.path)(x.into())),
                }
            }
        }
        if let Some((u, g)) = self.owner(e) {
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(|x| io_err("chown", &e.path)(x.into()))?;
        }
        // After chown, which clears setuid bits.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(self.final_mode(e)))
            .map_err(|x| io_err("chmod", &e.path)(x.into()))?;
        if self.policy.mtimes {
            rustix::fs::futimens(fd, &ts(e.mtime)).map_err(|x| io_err("setting the mtime of", &e.path)(x.into()))?;
        }
        Ok(())
    }

    /// Owner and mtime of a symlink or special file, through its parent,
    /// never following it; the mode for specials we just created.
    fn meta_at(&self, pfd: BorrowedFd<'_>, name: &[u8], e: &Entry, set_mode: bool) -> Result<(), RestoreError> {
        if let Some((u, g)) = self.owner(e) {
            rustix::fs::chownat(pfd, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|x| io_err("chown", &e.path)(x.into()))?;
        }
        if set_mode {
            // Only FIFOs and devices just created in a directory only this
            // restore writes to (Linux has no lchmod).
            rustix::fs::chmodat(pfd, name, Mode::from_raw_mode(self.final_mode(e)), AtFlags::empty())
                .map_err(|x| io_err("chmod", &e.path)(x.into()))?;
        }
        if self.policy.mtimes {
            rustix::fs::utimensat(pfd, name, &ts(e.mtime), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|x| io_err("setting the mtime of", &e.path)(x.into()))?;
        }
        Ok(())
    }

    /// Creates one entry in `pfd`; returns the fd of a new directory.
    fn entry(
        &mut self,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
        root: BorrowedFd<'_>,
    ) -> Result<Option<OwnedFd>, RestoreError> {
        if let Some(g) = e.link
            && let Some(first) = self.first_of_group.get(&g)
        {
            // A further name of an inode already restored.
            let (fdir, fname) = split_last(first);
            let ffd = open_dir_beneath(root, components(fdir)).map_err(io_err("opening the parent of", first))?;
            rustix::fs::linkat(&ffd, fname, pfd, name, AtFlags::empty())
                .map_err(|x| io_err("linking", &e.path)(x.into()))?;
            self.stats.hardlinks += 1;
            return Ok(None);
        }
        let created = match &e.kind {
            Kind::Dir => return self.dir(pfd, name, e).map(Some),
            Kind::File { size, sha256 } => {
                self.file(pfd, name, e, *size, sha256)?;
                true
            }
            Kind::Symlink { target } => {
                rustix::fs::symlinkat(target.as_slice(), pfd, name)
                    .map_err(|x| io_err("creating symlink", &e.path)(x.into()))?;
                self.meta_at(pfd, name, e, false)?;
                self.stats.symlinks += 1;
                true
            }
            Kind::Socket => self.not_created(e, "sockets are never created"),
            Kind::Fifo | Kind::CharDev(_) | Kind::BlockDev(_) if !self.policy.devices => {
                self.not_created(e, "FIFOs and devices are created only when asked")
            }
            Kind::CharDev(_) | Kind::BlockDev(_) if !self.is_root => {
                self.not_created(e, "devices are created only when running as root")
            }
            Kind::Fifo | Kind::CharDev(_) | Kind::BlockDev(_) => {
                let (ft, dev) = match &e.kind {
                    Kind::CharDev(r) => (FileType::CharacterDevice, rustix::fs::makedev(r.major, r.minor)),
                    Kind::BlockDev(r) => (FileType::BlockDevice, rustix::fs::makedev(r.major, r.minor)),
                    _ => (FileType::Fifo, 0),
                };
                rustix::fs::mknodat(pfd, name, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|x| io_err("creating", &e.path)(x.into()))?;
                self.meta_at(pfd, name, e, true)?;
                self.stats.special += 1;
                true
            }
        };
        if created && let Some(g) = e.link {
            self.first_of_group.insert(g, e.path.clone());
        }
        Ok(None)
    }

    fn not_created(&mut self, e: &Entry, why: &'static str) -> bool {
        self.stats.not_created.push((e.path.clone(), why));
        false
    }

    fn dir(&mut self, pfd: BorrowedFd<'_>, name: &[u8], e: &Entry) -> Result<OwnedFd, RestoreError> {
        match rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => self.stats.dirs += 1,
            // Into a non-empty target: an existing directory is reused
            // (opened below without following a link).
            Err(rustix::io::Errno::EXIST) if self.policy.into_non_empty => {}
            Err(x) => return Err(io_err("creating directory", &e.path)(x.into())),
        }
        let fd = open_dir_at(pfd, name).map_err(io_err("opening", &e.path))?;
        // Writable for the rest of the restore; the real mode comes last.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(|x| io_err("chmod", &e.path)(x.into()))?;
        Ok(fd)
    }

    fn file(
        &mut self,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
        size: u64,
        sha256: &Sha256,
    ) -> Result<(), RestoreError> {
        let fd = rustix::fs::openat(
            pfd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|x| io_err("creating", &e.path)(x.into()))?;
        let mut out = File::from(fd);
        let mut src = self.store.open_content(sha256)?.take(size.saturating_add(1));
        let mut h = sha2::Sha256::new();
        let mut n = 0u64;
        loop {
            let k = match src.read(&mut self.buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(x) if x.kind() == io::ErrorKind::Interrupted => continue,
                Err(x) => return Err(io_err("reading the stored content of", &e.path)(x)),
            };
            h.update(&self.buf[..k]);
            out.write_all(&self.buf[..k]).map_err(io_err("writing", &e.path))?;
            n += k as u64;
        }
        if n != size || Sha256(h.finalize().into()) != *sha256 {
            return Err(RestoreError::Content { path: shown(&e.path), expected: *sha256 });
        }
        self.meta(out.as_fd(), e)?;
        self.stats.files += 1;
        self.stats.bytes += n;
        Ok(())
    }
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
