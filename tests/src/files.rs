//! File digests and tree snapshots: the "nothing outside changed" canary.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of a file's content. Panics if it cannot be read.
pub fn sha256_file(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Lowercase hex SHA-256 of a byte string.
pub fn sha256_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Snapshot of everything under `root` (root included, under the empty
/// path), walked with `lstat` and never following symlinks. Keys are paths
/// relative to `root`; values describe the entry:
///
/// - `file <mode> <uid>:<gid> <size> <sha256>`
/// - `dir <mode> <uid>:<gid>`
/// - `symlink <uid>:<gid> -> <target>`
/// - `fifo|socket|chardev|blockdev <mode> <uid>:<gid> [rdev]`
///
/// Modification times are left out (they change without content changing).
/// Compare two snapshots with `assert_eq!` to prove a run changed nothing.
/// Panics if `root` or an entry cannot be read.
pub fn hash_tree(root: impl AsRef<Path>) -> BTreeMap<PathBuf, String> {
    let root = root.as_ref();
    let mut out = BTreeMap::new();
    describe(root, Path::new(""), &mut out);
    out
}

fn describe(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let path = root.join(rel);
    let md = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let ft = md.file_type();
    let mode = md.mode() & 0o7777;
    let owner = format!("{}:{}", md.uid(), md.gid());
    let desc = if ft.is_symlink() {
        let target = fs::read_link(&path).unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()));
        format!("symlink {owner} -> {}", target.display())
    } else if ft.is_file() {
        format!("file {mode:04o} {owner} {} {}", md.len(), sha256_file(&path))
    } else if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("readdir {}: {e}", path.display()))
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        names.sort();
        for name in names {
            describe(root, &rel.join(name), out);
        }
        format!("dir {mode:04o} {owner}")
    } else if ft.is_fifo() {
        format!("fifo {mode:04o} {owner}")
    } else if ft.is_socket() {
        format!("socket {mode:04o} {owner}")
    } else if ft.is_char_device() {
        format!("chardev {mode:04o} {owner} {}", md.rdev())
    } else if ft.is_block_device() {
        format!("blockdev {mode:04o} {owner} {}", md.rdev())
    } else {
        format!("unknown {mode:04o} {owner}")
    };
    out.insert(rel.to_path_buf(), desc);
}

/// Every path below `root` (files, directories, links; `root` itself not
/// included), sorted, never following symlinks. An unreadable directory is
/// skipped: callers look for leftovers, and a missing tree has none.
pub fn list_tree(root: impl AsRef<Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.as_ref().to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The `<prefix><id>` state files of a request pool, by id: the states
/// (prefixes, in the order given) each id has a file in. Sidecars
/// (`E<id>.why`) and dot files are not states. "Exactly once" checks assert
/// every value has one element.
pub fn pool_states(dir: impl AsRef<Path>, prefixes: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in fs::read_dir(dir.as_ref()).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains('.') {
            continue;
        }
        for p in prefixes {
            if let Some(id) = name.strip_prefix(p)
                && id.starts_with(|c: char| c.is_ascii_digit())
            {
                out.entry(id.to_owned()).or_default().push((*p).to_owned());
                break;
            }
        }
    }
    out
}
