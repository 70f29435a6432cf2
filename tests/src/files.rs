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
    walk(root, Path::new(""), &mut out);
    out
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
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
            walk(root, &rel.join(name), out);
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
