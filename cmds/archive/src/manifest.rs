//! A description of a directory tree for comparing trees (round-trip tests,
//! `verify` after a restore).
//!
//! The walk is iterative and uses `lstat` only: it never follows a symlink,
//! so it is safe to run over a tree restored from a hostile archive
//! (SECURITY.md C7: every reader of stored trees uses lstat/O_NOFOLLOW).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::escape_name;

/// The type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Socket (archives skip them; listed so a diff can say so).
    Socket,
}

/// One entry of a tree, relative to the tree's root (the root itself is
/// not listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Relative path, raw bytes.
    pub path: Vec<u8>,
    /// Entry type.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files only; 0 otherwise).
    pub size: u64,
    /// SHA-256 of a regular file's contents, lowercase hex.
    pub sha256: Option<String>,
    /// A symlink's target, raw bytes.
    pub link_target: Option<Vec<u8>>,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Files that share an inode *within this tree* get the same group id,
    /// numbered from 0 by first appearance in path order; `None` for files
    /// with no other name in the tree.
    pub hardlink_group: Option<usize>,
    /// Extended attributes, sorted by name (empty when the filesystem has
    /// none or does not support them).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Lists the tree below `root` (not including `root` itself), sorted by
/// raw path bytes.
pub fn manifest(root: &Path) -> io::Result<Vec<ManifestEntry>> {
    let mut out = Vec::new();
    let mut inodes: Vec<(u64, u64)> = Vec::new();
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_path_buf(), Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        for ent in fs::read_dir(&dir)? {
            let ent = ent?;
            let name = ent.file_name();
            let mut path = rel.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            let full = dir.join(&name);
            let md = fs::symlink_metadata(&full)?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink
            } else if ft.is_file() {
                Kind::File
            } else if ft.is_fifo() {
                Kind::Fifo
            } else if ft.is_char_device() {
                Kind::CharDev
            } else if ft.is_block_device() {
                Kind::BlockDev
            } else {
                Kind::Socket
            };
            let (sha256, size) = if kind == Kind::File { (Some(hash_file(&full)?), md.size()) } else { (None, 0) };
            let link_target = if kind == Kind::Symlink {
                Some(fs::read_link(&full)?.into_os_string().as_bytes().to_vec())
            } else {
                None
            };
            if kind == Kind::Dir {
                stack.push((full.clone(), path.clone()));
            }
            out.push(ManifestEntry {
                path,
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size,
                sha256,
                link_target,
                mtime: md.mtime(),
                hardlink_group: None,
                xattrs: read_xattrs(&full),
            });
            inodes.push((md.dev(), md.ino()));
        }
    }
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by(|a, b| out[*a].path.cmp(&out[*b].path));
    let mut count: HashMap<(u64, u64), usize> = HashMap::new();
    for (i, e) in out.iter().enumerate() {
        if e.kind == Kind::File {
            *count.entry(inodes[i]).or_default() += 1;
        }
    }
    let mut groups: HashMap<(u64, u64), usize> = HashMap::new();
    for &i in &order {
        if out[i].kind == Kind::File && count[&inodes[i]] > 1 {
            let next = groups.len();
            out[i].hardlink_group = Some(*groups.entry(inodes[i]).or_insert(next));
        }
    }
    let mut sorted: Vec<Option<ManifestEntry>> = out.into_iter().map(Some).collect();
    Ok(order.into_iter().map(|i| sorted[i].take().expect("each index once")).collect())
}

fn hash_file(path: &Path) -> io::Result<String> {
    // O_NOFOLLOW | O_NONBLOCK: the entry was lstat'ed as a regular file; if
    // it was swapped for a link or a FIFO since, fail instead of following
    // or hanging.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn read_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 64 << 10];
    let Ok(n) = rustix::fs::llistxattr(path, names.as_mut_slice()) else {
        return Vec::new();
    };
    names.truncate(n);
    let mut out = Vec::new();
    for k in names.split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let mut val = vec![0u8; 64 << 10];
        if let Ok(n) = rustix::fs::lgetxattr(path, k, val.as_mut_slice()) {
            val.truncate(n);
            out.push((String::from_utf8_lossy(k).into_owned(), val));
        }
    }
    out.sort();
    out
}

/// Which attributes [`diff`] compares besides type, permission bits, size,
/// contents, link target and hard-link grouping (always compared).
#[derive(Debug, Clone)]
pub struct Compare {
    /// Compare permission bits.
    pub mode: bool,
    /// Compare uid and gid.
    pub owner: bool,
    /// Compare modification times of non-directories (symlinks included).
    pub mtime: bool,
    /// Compare modification times of directories too.
    pub dir_mtime: bool,
    /// Compare extended attributes.
    pub xattrs: bool,
    /// Only compare xattrs in the `user.` namespace (others, such as
    /// `security.selinux`, are set by the system, not the archive).
    pub user_xattrs_only: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Compare { mode: true, owner: true, mtime: true, dir_mtime: true, xattrs: true, user_xattrs_only: true }
    }
}

/// Human-readable differences from `a` to `b` (both sorted by path, as
/// [`manifest`] returns them); empty when the trees match under `cmp`.
/// Names are escaped.
pub fn diff(a: &[ManifestEntry], b: &[ManifestEntry], cmp: &Compare) -> Vec<String> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let order = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.path.cmp(&y.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                out.push(format!("only in first: {}", escape_name(&a[i].path)));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(format!("only in second: {}", escape_name(&b[j].path)));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                if let Some(d) = diff_entry(&a[i], &b[j], cmp) {
                    out.push(d);
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

fn diff_entry(x: &ManifestEntry, y: &ManifestEntry, cmp: &Compare) -> Option<String> {
    let mut d = String::new();
    let mut note = |what: &str, l: String, r: String| {
        let _ = write!(d, " {what} {l} != {r};");
    };
    if x.kind != y.kind {
        note("type", format!("{:?}", x.kind), format!("{:?}", y.kind));
    }
    if cmp.mode && x.mode != y.mode && x.kind != Kind::Symlink {
        note("mode", format!("{:o}", x.mode), format!("{:o}", y.mode));
    }
    if cmp.owner && (x.uid, x.gid) != (y.uid, y.gid) {
        note("owner", format!("{}:{}", x.uid, x.gid), format!("{}:{}", y.uid, y.gid));
    }
    if x.size != y.size {
        note("size", x.size.to_string(), y.size.to_string());
    }
    if x.sha256 != y.sha256 {
        note("sha256", format!("{:?}", x.sha256), format!("{:?}", y.sha256));
    }
    if x.link_target != y.link_target {
        let show = |t: &Option<Vec<u8>>| t.as_deref().map(escape_name).unwrap_or_default();
        note("target", show(&x.link_target), show(&y.link_target));
    }
    let time_matters = if x.kind == Kind::Dir { cmp.dir_mtime } else { cmp.mtime };
    if time_matters && x.mtime != y.mtime {
        note("mtime", x.mtime.to_string(), y.mtime.to_string());
    }
    if x.hardlink_group != y.hardlink_group {
        note("hardlink group", format!("{:?}", x.hardlink_group), format!("{:?}", y.hardlink_group));
    }
    if cmp.xattrs {
        let pick = |v: &[(String, Vec<u8>)]| -> Vec<(String, Vec<u8>)> {
            v.iter().filter(|(k, _)| !cmp.user_xattrs_only || k.starts_with("user.")).cloned().collect()
        };
        let (xa, ya) = (pick(&x.xattrs), pick(&y.xattrs));
        if xa != ya {
            let show = |v: &[(String, Vec<u8>)]| {
                v.iter()
                    .map(|(k, val)| format!("{}={}", escape_name(k.as_bytes()), escape_name(val)))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            note("xattrs", show(&xa), show(&ya));
        }
    }
    if d.is_empty() { None } else { Some(format!("{}:{d}", escape_name(&x.path))) }
}

/// Convenience for tests and tools: the manifest entry for `rel` in `m`.
pub fn find<'m>(m: &'m [ManifestEntry], rel: &[u8]) -> Option<&'m ManifestEntry> {
    m.binary_search_by(|e| e.path.as_slice().cmp(rel)).ok().map(|i| &m[i])
}
