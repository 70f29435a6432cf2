//! The writer: creates validated entries beneath a staging directory and
//! publishes it (step 6 of the pipeline). Every parent is opened beneath
//! the staging root without following links ([`open_dir_beneath`]), files
//! are created `O_CREAT|O_EXCL|O_NOFOLLOW`, directory metadata is applied
//! last and deepest first, and the staging directory becomes the
//! destination with one rename that replaces nothing, or is removed.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use super::policy::ExtractPolicy;
use super::stream::{Shared, read_err};
use super::validate::{EntryKind, Item};
use super::{Sink, process};
use crate::error::{ArchiveError, escape_name};
use crate::fsutil::{
    components, open_dir, open_dir_at, open_dir_beneath, random_token, remove_tree, rename_noreplace, split_last,
};

/// What [`extract_tar_zst`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Archive entries (extension records not counted).
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// Directories with an entry of their own.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Hard links.
    pub hardlinks: u64,
    /// FIFOs and devices.
    pub other: u64,
    /// File data bytes written.
    pub bytes: u64,
}

impl std::fmt::Display for ExtractStats {
    /// `7 entries: 4 files, 2 dirs, 1 symlinks, 0 hard links, 3000037 bytes`,
    /// the line every restore prints (node and client alike).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} entries: {} files, {} dirs, {} symlinks, {} hard links, {} bytes",
            self.entries, self.files, self.dirs, self.symlinks, self.hardlinks, self.bytes
        )
    }
}

/// Extracts a tar+zstd archive into `dest`, which must not exist.
///
/// The tree is built in `<parent>/.ferry-staging-<random>` (mode 0700) and
/// renamed to `dest` (without replacing anything) only after the whole
/// archive was read, validated and written. On any error the staging
/// directory is removed without following links and nothing is left
/// behind. See [`ExtractPolicy`] for what is accepted, and the crate docs
/// for how writes are confined.
pub fn extract_tar_zst<R: Read>(input: R, dest: &Path, policy: &ExtractPolicy) -> Result<ExtractStats, ArchiveError> {
    let dest_name = dest
        .file_name()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ArchiveError::io(
                format!("destination {}", dest.display()),
                io::Error::new(io::ErrorKind::InvalidInput, "destination has no file name"),
            )
        })?
        .as_bytes()
        .to_vec();
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent_fd = open_dir(parent).map_err(|e| ArchiveError::io(format!("opening {}", parent.display()), e))?;
    match rustix::fs::statat(&parent_fd, dest_name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => {
            return Err(ArchiveError::io(
                format!("destination {}", dest.display()),
                io::Error::new(io::ErrorKind::AlreadyExists, "destination already exists"),
            ));
        }
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => {
            return Err(ArchiveError::io(format!("checking {}", dest.display()), e));
        }
    }

    let mut staging_name = Vec::new();
    for attempt in 0.. {
        let name = format!(".ferry-staging-{}", random_token()).into_bytes();
        match rustix::fs::mkdirat(&parent_fd, name.as_slice(), Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                staging_name = name;
                break;
            }
            Err(rustix::io::Errno::EXIST) if attempt < 8 => continue,
            Err(e) => {
                return Err(ArchiveError::io(format!("creating staging directory in {}", parent.display()), e));
            }
        }
    }

    let result = extract_into_staging(input, policy, parent_fd.as_fd(), &staging_name).and_then(|stats| {
        publish(parent_fd.as_fd(), &staging_name, &dest_name)
            .map_err(|e| ArchiveError::io(format!("publishing {}", dest.display()), e))?;
        Ok(stats)
    });
    if result.is_err()
        && let Err(e) = remove_tree(parent_fd.as_fd(), &staging_name)
    {
        tracing::error!(
            staging = %escape_name(&staging_name),
            error = %e,
            "could not remove the staging directory of a failed extraction"
        );
    }
    result
}

fn extract_into_staging<R: Read>(
    input: R,
    policy: &ExtractPolicy,
    parent: BorrowedFd<'_>,
    staging_name: &[u8],
) -> Result<ExtractStats, ArchiveError> {
    let root = open_dir_at(parent, staging_name).map_err(|e| ArchiveError::io("opening staging directory", e))?;
    let mut sink = ExtractSink {
        policy,
        root,
        is_root: rustix::process::geteuid().is_root(),
        cache: None,
        dirs: Vec::new(),
        dir_index: HashMap::new(),
        root_meta: None,
        stats: ExtractStats::default(),
        buf: vec![0u8; 1 << 20],
    };
    process(input, policy, &mut sink)?;
    sink.finish()?;
    Ok(sink.stats)
}

/// Renames staging to the destination without replacing anything that
/// appeared meanwhile, and syncs the parent so the name survives a crash.
fn publish(parent: BorrowedFd<'_>, staging: &[u8], dest: &[u8]) -> io::Result<()> {
    rename_noreplace(parent, staging, dest)?;
    let _ = rustix::fs::fsync(parent);
    Ok(())
}

/// Metadata applied to a directory at the end.
struct DirMeta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Option<(i64, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct ExtractSink<'p> {
    policy: &'p ExtractPolicy,
    root: OwnedFd,
    is_root: bool,
    /// The last parent directory opened, by path: archives are sorted, so
    /// consecutive entries usually share it.
    cache: Option<(Vec<u8>, OwnedFd)>,
    dirs: Vec<(Vec<u8>, DirMeta)>,
    dir_index: HashMap<Vec<u8>, usize>,
    root_meta: Option<DirMeta>,
    stats: ExtractStats,
    buf: Vec<u8>,
}

fn wctx(what: &str, path: &[u8]) -> String {
    format!("{what} {}", escape_name(path))
}

fn ts(t: (i64, u32)) -> Timestamps {
    let spec = Timespec { tv_sec: t.0, tv_nsec: i64::from(t.1.min(999_999_999)) };
    Timestamps { last_access: spec, last_modification: spec }
}

impl ExtractSink<'_> {
    fn final_mode(&self, kind: EntryKind, mode: u32) -> u32 {
        let m = mode & 0o7777;
        if !self.policy.preserve_modes {
            return match kind {
                EntryKind::Dir => 0o755,
                _ if m & 0o111 != 0 => 0o755,
                _ => 0o644,
            };
        }
        if self.policy.setuid { m } else { m & 0o777 }
    }

    fn owner(&self, uid: u64, gid: u64) -> Option<(rustix::fs::Uid, rustix::fs::Gid)> {
        if !(self.policy.preserve_owner && self.is_root) {
            return None;
        }
        // u32::MAX is "no change" to chown(2), never a real id.
        let uid = u32::try_from(uid).ok().filter(|u| *u != u32::MAX)?;
        let gid = u32::try_from(gid).ok().filter(|g| *g != u32::MAX)?;
        Some((rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid)))
    }

    /// The fd of directory `parent` (relative path), opened beneath the
    /// staging root without following links.
    fn parent(&mut self, parent: &[u8]) -> io::Result<BorrowedFd<'_>> {
        let hit = matches!(&self.cache, Some((p, _)) if p.as_slice() == parent);
        if !hit {
            let fd = open_dir_beneath(self.root.as_fd(), components(parent))?;
            self.cache = Some((parent.to_vec(), fd));
        }
        Ok(self.cache.as_ref().expect("just filled").1.as_fd())
    }

    fn apply_xattrs(&self, fd: BorrowedFd<'_>, xattrs: &[(Vec<u8>, Vec<u8>)], path: &[u8]) -> Result<(), ArchiveError> {
        if !self.policy.xattrs {
            return Ok(());
        }
        for (k, v) in xattrs {
            if !k.starts_with(b"user.") || k.contains(&0) {
                tracing::debug!(path = %escape_name(path), name = %escape_name(k), "xattr not applied");
                continue;
            }
            match rustix::fs::fsetxattr(fd, k.as_slice(), v, rustix::fs::XattrFlags::empty()) {
                Ok(()) => {}
                Err(rustix::io::Errno::NOTSUP) => {
                    tracing::warn!(path = %escape_name(path), "filesystem does not support user xattrs");
                }
                Err(e) => return Err(ArchiveError::io(wctx("setting xattr on", path), e)),
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ArchiveError> {
        self.cache = None;
        let mut dirs = std::mem::take(&mut self.dirs);
        // Deepest (and later siblings) first: a parent's restrictive mode
        // is set only after everything below it is done.
        dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, meta) in &dirs {
            let fd = open_dir_beneath(self.root.as_fd(), components(path))
                .map_err(|e| ArchiveError::io(wctx("reopening", path), e))?;
            self.dir_meta(fd.as_fd(), meta, path)?;
        }
        let root_meta =
            self.root_meta.take().unwrap_or(DirMeta { mode: 0o755, uid: 0, gid: 0, mtime: None, xattrs: Vec::new() });
        let root = rustix::io::dup(&self.root).map_err(|e| ArchiveError::io("dup", e))?;
        self.dir_meta(root.as_fd(), &root_meta, b".")
    }

    fn dir_meta(&self, fd: BorrowedFd<'_>, meta: &DirMeta, path: &[u8]) -> Result<(), ArchiveError> {
        self.apply_xattrs(fd, &meta.xattrs, path)?;
        if let Some((u, g)) = self.owner(meta.uid, meta.gid) {
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(|e| ArchiveError::io(wctx("chown", path), e))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(|e| ArchiveError::io(wctx("chmod", path), e))?;
        if let Some(t) = meta.mtime {
            rustix::fs::futimens(fd, &ts(t)).map_err(|e| ArchiveError::io(wctx("utimes", path), e))?;
        }
        Ok(())
    }

    fn dir_meta_of(&self, item: &Item) -> DirMeta {
        DirMeta {
            mode: self.final_mode(EntryKind::Dir, item.mode),
            uid: item.uid,
            gid: item.gid,
            mtime: self.policy.mtimes.then_some(item.mtime),
            xattrs: item.xattrs.clone(),
        }
    }

    fn write_file(&mut self, item: &Item, data: &mut dyn Read, sh: &Shared) -> Result<(), ArchiveError> {
        let (parent, name) = split_last(&item.path);
        let fd = {
            let pfd = self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", &item.path), e))?;
            rustix::fs::openat(
                pfd,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| ArchiveError::io(wctx("creating", &item.path), e))?
        };
        let mut file = std::fs::File::from(fd);
        let mut left = item.size;
        while left > 0 {
            let want = self.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(ArchiveError::format(format!("truncated data of `{}`", escape_name(&item.path))));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(sh, e)),
            };
            file.write_all(&self.buf[..n]).map_err(|e| ArchiveError::io(wctx("writing", &item.path), e))?;
            left -= n as u64;
            self.stats.bytes += n as u64;
        }
        let fd = file.as_fd();
        self.apply_xattrs(fd, &item.xattrs, &item.path)?;
        if let Some((u, g)) = self.owner(item.uid, item.gid) {
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(|e| ArchiveError::io(wctx("chown", &item.path), e))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(self.final_mode(EntryKind::File, item.mode)))
            .map_err(|e| ArchiveError::io(wctx("chmod", &item.path), e))?;
        if self.policy.mtimes {
            rustix::fs::futimens(fd, &ts(item.mtime)).map_err(|e| ArchiveError::io(wctx("utimes", &item.path), e))?;
        }
        self.stats.files += 1;
        Ok(())
    }

    /// Owner and time of a non-file entry, through its parent fd, never
    /// following the entry itself.
    fn meta_at(&mut self, item: &Item, set_mode: bool) -> Result<(), ArchiveError> {
        let owner = self.owner(item.uid, item.gid);
        let mode = self.final_mode(item.kind, item.mode);
        let mtimes = self.policy.mtimes;
        let (parent, name) = split_last(&item.path);
        let pfd = self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", &item.path), e))?;
        if let Some((u, g)) = owner {
            rustix::fs::chownat(pfd, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| ArchiveError::io(wctx("chown", &item.path), e))?;
        }
        if set_mode {
            // Only for FIFOs/devices we just created in a directory only we
            // write to, so following is not a concern (and Linux has no
            // lchmod).
            rustix::fs::chmodat(pfd, name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(|e| ArchiveError::io(wctx("chmod", &item.path), e))?;
        }
        if mtimes {
            rustix::fs::utimensat(pfd, name, &ts(item.mtime), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| ArchiveError::io(wctx("utimes", &item.path), e))?;
        }
        Ok(())
    }
}

impl Sink for ExtractSink<'_> {
    fn implicit_dir(&mut self, path: &[u8]) -> Result<(), ArchiveError> {
        let (parent, name) = split_last(path);
        let pfd = self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", path), e))?;
        rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o700))
            .map_err(|e| ArchiveError::io(wctx("creating directory", path), e))?;
        self.dir_index.insert(path.to_vec(), self.dirs.len());
        self.dirs.push((path.to_vec(), DirMeta { mode: 0o755, uid: 0, gid: 0, mtime: None, xattrs: Vec::new() }));
        Ok(())
    }

    fn entry(&mut self, item: &Item, data: &mut dyn Read, sh: &Shared) -> Result<(), ArchiveError> {
        self.stats.entries += 1;
        match item.kind {
            EntryKind::Dir if item.path.is_empty() => {
                self.root_meta = Some(self.dir_meta_of(item));
                self.stats.dirs += 1;
            }
            EntryKind::Dir => {
                let meta = self.dir_meta_of(item);
                if let Some(&i) = self.dir_index.get(&item.path) {
                    // Described after a child implied it.
                    self.dirs[i].1 = meta;
                } else {
                    let (parent, name) = split_last(&item.path);
                    let pfd =
                        self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", &item.path), e))?;
                    rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| ArchiveError::io(wctx("creating directory", &item.path), e))?;
                    self.dir_index.insert(item.path.clone(), self.dirs.len());
                    self.dirs.push((item.path.clone(), meta));
                }
                self.stats.dirs += 1;
            }
            EntryKind::File => self.write_file(item, data, sh)?,
            EntryKind::Symlink => {
                let target = item.link.as_deref().unwrap_or_default();
                let (parent, name) = split_last(&item.path);
                let pfd =
                    self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", &item.path), e))?;
                rustix::fs::symlinkat(target, pfd, name)
                    .map_err(|e| ArchiveError::io(wctx("creating symlink", &item.path), e))?;
                self.meta_at(item, false)?;
                self.stats.symlinks += 1;
            }
            EntryKind::HardLink => {
                let target = item.link.as_deref().unwrap_or_default();
                let (tparent, tname) = split_last(target);
                let tfd = open_dir_beneath(self.root.as_fd(), components(tparent))
                    .map_err(|e| ArchiveError::io(wctx("opening parent of", target), e))?;
                let (parent, name) = split_last(&item.path);
                let pfd =
                    self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", &item.path), e))?;
                // No AT_SYMLINK_FOLLOW: the target was validated as a
                // regular file this archive wrote, and is linked as is.
                rustix::fs::linkat(&tfd, tname, pfd, name, AtFlags::empty())
                    .map_err(|e| ArchiveError::io(wctx("creating hard link", &item.path), e))?;
                self.stats.hardlinks += 1;
            }
            EntryKind::Fifo | EntryKind::CharDev | EntryKind::BlockDev => {
                let (ft, dev) = match item.kind {
                    EntryKind::Fifo => (FileType::Fifo, 0),
                    EntryKind::CharDev | EntryKind::BlockDev => {
                        if !self.is_root {
                            return Err(ArchiveError::typ(
                                &item.path,
                                "device nodes can only be restored when running as root",
                            ));
                        }
                        let (maj, min) = item.device.unwrap_or((0, 0));
                        let ft = if item.kind == EntryKind::CharDev {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(maj, min))
                    }
                    _ => unreachable!("matched above"),
                };
                let (parent, name) = split_last(&item.path);
                let pfd =
                    self.parent(parent).map_err(|e| ArchiveError::io(wctx("opening parent of", &item.path), e))?;
                rustix::fs::mknodat(pfd, name, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| ArchiveError::io(wctx("creating", &item.path), e))?;
                self.meta_at(item, true)?;
                self.stats.other += 1;
            }
        }
        Ok(())
    }
}
