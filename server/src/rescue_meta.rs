//! The metadata layer of a rescue view: the snapshot's manifest (owners,
//! modes, mtimes, `user.*` xattrs, hard links, symlinks) as an overlayfs
//! lower layer of *metacopy* files that hold no data.
//!
//! Why a layer of its own: the snapshot directory carries the node's
//! metadata (read-only store inodes owned by the node, directories 0755),
//! and changing it would change every snapshot sharing those inodes.
//! Applying the manifest in the upper layer at every rescue costs one
//! metadata copy-up per file, O(files) each time. Instead the layer is
//! built once per snapshot (O(files), cached under the state directory)
//! and every later rescue mounts it as it is: `lowerdir=<meta>::<snapshot>`,
//! the snapshot being a *data-only* lower layer (kernel >= 6.5).
//!
//! Each regular file of the layer is an empty sparse file of the
//! manifest's size with the manifest's owner, mode and mtime, and the
//! xattrs `trusted.overlay.metacopy` (its data lives elsewhere) and
//! `trusted.overlay.redirect` = `/<path>` (where: that path in the
//! data-only layer, the snapshot). Names of one hard-link group are hard
//! links here too. Directories and symlinks are real, with the manifest's
//! metadata. FIFOs, sockets and devices are left out: nothing special is
//! created on the node (the view is mounted `nodev` anyway).
//!
//! The layer's directory is 0700 and root's: it holds setuid files (empty,
//! and shown only through a `nosuid` mount), which no other account of the
//! node should reach. `trusted.*` xattrs need `CAP_SYS_ADMIN`, so a client
//! cannot plant a redirect in a snapshot (the node never applies a
//! manifest's xattrs to the snapshot, and never `trusted.*` anywhere).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ferry_tree::manifest::{Kind, Manifest, Mtime};
use rustix::fs::{AtFlags, CWD, Mode, OFlags, Timespec, Timestamps, XattrFlags};

/// What building a layer did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MetaStats {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    /// FIFOs, sockets and devices of the manifest, not shown in the view.
    pub not_shown: u64,
    /// Files hard-linked from another layer of the same source instead of
    /// created (see [`build`]).
    pub reused: u64,
    pub elapsed_ms: u64,
}

fn ts(t: Mtime) -> Timestamps {
    let t = Timespec { tv_sec: t.sec, tv_nsec: t.nsec.into() };
    Timestamps { last_access: t, last_modification: t }
}

/// Builds the layer of `manifest` at `dest` (which must not exist): in a
/// temporary directory beside it, synced, then renamed, so a layer under
/// its final name is always complete.
///
/// `reuse`: another finished layer of the same source (the previous
/// snapshot's). A plain file there with exactly the metadata this layer
/// needs (size, owner, mode, mtime, no xattrs but overlayfs' own, one
/// link) is hard-linked instead of created: its redirect names the same
/// path. Creating an inode costs far more than a link (ext4 on a shared
/// disk: ~0.45 ms per create here), and between two snapshots most files
/// are unchanged. Such a file shows 2 links in a view while both layers
/// exist (the pull drops the older one unless it is mounted).
pub fn build(manifest: &Manifest, dest: &Path, reuse: Option<&Path>) -> anyhow::Result<MetaStats> {
    let started = std::time::Instant::now();
    let parent = dest.parent().context("a metadata layer needs a parent directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".tmp-{}", ferry_archive::fsutil::random_token()));
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let r = fill(manifest, &tmp, reuse).and_then(|stats| {
        // The view's root (the manifest has no entry for it); the cache
        // above it is 0700, so no other account reaches the layer.
        rustix::fs::chmod(&tmp, Mode::from_raw_mode(0o755))?;
        let root = std::fs::File::open(&tmp)?;
        rustix::fs::syncfs(&root)?;
        std::fs::rename(&tmp, dest).with_context(|| format!("publishing {}", dest.display()))?;
        Ok(stats)
    });
    match r {
        Ok(mut stats) => {
            stats.elapsed_ms = started.elapsed().as_millis() as u64;
            Ok(stats)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn fill(manifest: &Manifest, root: &Path, reuse: Option<&Path>) -> anyhow::Result<MetaStats> {
    let mut stats = MetaStats::default();
    let mut first_of_group: HashMap<u64, PathBuf> = HashMap::new();
    let mut dirs: Vec<(PathBuf, &ferry_tree::manifest::Entry)> = Vec::new();
    let shown = |p: &[u8]| ferry_text::escape_bytes(p, 400);
    // Entries are sorted and every parent is a directory listed before its
    // children (the parser guarantees it), so one pass creates them all.
    for e in &manifest.entries {
        let p = root.join(OsStr::from_bytes(&e.path));
        let ctx = || format!("metadata layer: {}", shown(&e.path));
        match &e.kind {
            Kind::Dir => {
                rustix::fs::mkdir(&p, Mode::from_raw_mode(0o700)).with_context(ctx)?;
                dirs.push((p, e));
                stats.dirs += 1;
            }
            Kind::File { size, .. } => {
                if let Some(first) = e.link.and_then(|g| first_of_group.get(&g)) {
                    std::fs::hard_link(first, &p).with_context(ctx)?;
                    stats.files += 1;
                    continue;
                }
                if let Some(prev) = reuse.map(|r| r.join(OsStr::from_bytes(&e.path)))
                    && e.link.is_none()
                    && e.xattrs.is_empty()
                    && same_meta_file(&prev, e, *size)
                {
                    std::fs::hard_link(&prev, &p).with_context(ctx)?;
                    stats.files += 1;
                    stats.reused += 1;
                    continue;
                }
                let fd = rustix::fs::open(
                    &p,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .with_context(ctx)?;
                // Sparse: the size overlayfs shows and copies up, no blocks.
                rustix::fs::ftruncate(&fd, *size).with_context(ctx)?;
                rustix::fs::fsetxattr(&fd, "trusted.overlay.metacopy", b"", XattrFlags::empty()).with_context(ctx)?;
                let redirect = [b"/".as_slice(), &e.path].concat();
                rustix::fs::fsetxattr(&fd, "trusted.overlay.redirect", &redirect, XattrFlags::empty())
                    .with_context(ctx)?;
                user_xattrs(&fd, e).with_context(ctx)?;
                owner_mode_mtime(&fd, e).with_context(ctx)?;
                if let Some(g) = e.link {
                    first_of_group.insert(g, p);
                }
                stats.files += 1;
            }
            Kind::Symlink { target } => {
                rustix::fs::symlink(target.as_slice(), &p).with_context(ctx)?;
                rustix::fs::chownat(
                    CWD,
                    &p,
                    Some(rustix::fs::Uid::from_raw(e.uid)),
                    Some(rustix::fs::Gid::from_raw(e.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .with_context(ctx)?;
                rustix::fs::utimensat(CWD, &p, &ts(e.mtime), AtFlags::SYMLINK_NOFOLLOW).with_context(ctx)?;
                stats.symlinks += 1;
            }
            Kind::Fifo | Kind::Socket | Kind::CharDev(_) | Kind::BlockDev(_) => stats.not_shown += 1,
        }
    }
    // Directories last, deepest first: creating their entries changed
    // their mtimes, and a mode without write permission is set after.
    for (p, e) in dirs.iter().rev() {
        let ctx = || format!("metadata layer: {}", shown(&e.path));
        let fd =
            rustix::fs::open(p, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                .with_context(ctx)?;
        user_xattrs(&fd, e).with_context(ctx)?;
        owner_mode_mtime(&fd, e).with_context(ctx)?;
    }
    Ok(stats)
}

/// Whether `prev` is a metacopy file of a layer with exactly what the
/// entry needs: one link, size, owner, mode, mtime, and no xattrs but
/// overlayfs' metacopy and redirect (the redirect is the same path's).
fn same_meta_file(prev: &Path, e: &ferry_tree::manifest::Entry, size: u64) -> bool {
    let Ok(st) = rustix::fs::lstat(prev) else { return false };
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
        || st.st_nlink != 1
        || st.st_size as u64 != size
        || st.st_mode & 0o7777 != e.mode
        || (st.st_uid, st.st_gid) != (e.uid, e.gid)
        || (st.st_mtime, st.st_mtime_nsec as i64) != (e.mtime.sec, i64::from(e.mtime.nsec))
    {
        return false;
    }
    let mut names = [0u8; 256];
    match rustix::fs::llistxattr(prev, &mut names) {
        Ok(n) => {
            let mut got: Vec<&[u8]> = names[..n].split(|b| *b == 0).filter(|x| !x.is_empty()).collect();
            got.sort();
            got == [b"trusted.overlay.metacopy".as_slice(), b"trusted.overlay.redirect".as_slice()]
        }
        Err(_) => false,
    }
}

/// The entry's `user.*` xattrs (never `trusted.*`, `security.*` or
/// `system.*`: a client's manifest must not steer overlayfs or the
/// node's security modules).
fn user_xattrs(fd: &impl std::os::fd::AsFd, e: &ferry_tree::manifest::Entry) -> std::io::Result<()> {
    for (name, value) in e.xattrs.iter().filter(|(n, _)| n.starts_with(b"user.")) {
        let Ok(name) = std::ffi::CString::new(name.clone()) else { continue };
        rustix::fs::fsetxattr(fd, name.as_c_str(), value, XattrFlags::empty())?;
    }
    Ok(())
}

/// The manifest's owner, then mode (after chown, which clears setuid
/// bits), then mtime, on an open file or directory of the metadata layer.
fn owner_mode_mtime(fd: &impl rustix::fd::AsFd, e: &ferry_tree::manifest::Entry) -> rustix::io::Result<()> {
    rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(e.uid)), Some(rustix::fs::Gid::from_raw(e.gid)))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(e.mode))?;
    rustix::fs::futimens(fd, &ts(e.mtime))
}
