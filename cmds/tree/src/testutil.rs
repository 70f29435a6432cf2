//! Test helpers: temporary trees with every odd thing a host's tree holds.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Timespec, Timestamps};

pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ferry-tree-test-").tempdir().expect("tempdir")
}

/// `root` joined with a raw-bytes relative path.
pub(crate) fn p(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

pub(crate) fn write(root: &Path, rel: &[u8], data: &[u8]) {
    std::fs::create_dir_all(p(root, ferry_archive::fsutil::split_last(rel).0)).unwrap();
    std::fs::write(p(root, rel), data).unwrap_or_else(|e| panic!("write {}: {e}", String::from_utf8_lossy(rel)));
}

pub(crate) fn mkdir(root: &Path, rel: &[u8]) {
    std::fs::create_dir_all(p(root, rel)).unwrap();
}

pub(crate) fn chmod(root: &Path, rel: &[u8], mode: u32) {
    std::fs::set_permissions(p(root, rel), std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets an entry's mtime (and atime) without following a symlink.
pub(crate) fn set_mtime(root: &Path, rel: &[u8], sec: i64, nsec: i64) {
    let t = Timespec { tv_sec: sec, tv_nsec: nsec };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p(root, rel),
        &Timestamps { last_access: t, last_modification: t },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs `f` on this thread without the capabilities that let root read
/// any file, so a mode-0000 file is unreadable even to root.
pub(crate) fn without_dac_override<R>(f: impl FnOnce() -> R) -> R {
    use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
    let saved = capabilities(None).unwrap();
    let mut less = saved;
    less.effective -= CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH;
    set_capabilities(None, less).unwrap();
    let r = f();
    set_capabilities(None, saved).unwrap();
    r
}

/// Pseudo-random bytes (xorshift), so big files do not compress to nothing
/// and differ from each other.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = (seed << 1) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Builds a tree with every odd thing: names with spaces, a newline,
/// non-UTF-8 bytes, a leading dash, unicode and bidi controls; empty
/// directories; relative, absolute and dangling symlinks; a hard-link
/// group of three; equal contents in different inodes; a FIFO; a setuid
/// file; `user.*` xattrs; deep nesting; 0-byte files; a 5 MB file; odd
/// modes (a read-only directory with contents); other owners (as root);
/// mtimes with nanoseconds (directories set last).
pub(crate) fn odd_tree(root: &Path) {
    write(root, b"plain.txt", b"hello\n");
    write(root, b"name with spaces.txt", b"spaces\n");
    write(root, b"new\nline", b"newline in the name\n");
    write(root, b"bad\xff\xfename", b"not utf-8\n");
    write(root, b"-leading-dash", b"dash\n");
    write(root, "caf\u{e9} \u{2615}.txt".as_bytes(), b"unicode\n");
    write(root, "evil\u{202e}txt.exe".as_bytes(), b"bidi\n");
    write(root, b"percent%41=eq:colon", b"format characters\n");
    mkdir(root, b"empty");
    mkdir(root, b"a/b/empty");
    std::os::unix::fs::symlink("plain.txt", p(root, b"rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", p(root, b"abs-link")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", p(root, b"dangling")).unwrap();
    std::os::unix::fs::symlink("../..", p(root, b"a/b/up")).unwrap();
    std::os::unix::fs::symlink("a", p(root, b"dir-link")).unwrap();
    write(root, b"hard1", b"linked three times\n");
    std::fs::hard_link(p(root, b"hard1"), p(root, b"a/hard2")).unwrap();
    std::fs::hard_link(p(root, b"hard1"), p(root, b"a/b/hard 3")).unwrap();
    write(root, b"dup1", b"same content, two inodes\n");
    write(root, b"a/dup2", b"same content, two inodes\n");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p(root, b"fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    write(root, b"suid", b"#!/bin/sh\necho setuid\n");
    chmod(root, b"suid", 0o4755);
    write(root, b"private", b"secret\n");
    chmod(root, b"private", 0o600);
    rustix::fs::setxattr(p(root, b"plain.txt"), "user.comment", b"a note\n\x00binary", rustix::fs::XattrFlags::empty())
        .unwrap();
    rustix::fs::setxattr(p(root, b"a"), "user.dir", b"on a directory", rustix::fs::XattrFlags::empty()).unwrap();
    let deep: Vec<u8> = (0..40).map(|i| format!("d{i}")).collect::<Vec<_>>().join("/").into_bytes();
    mkdir(root, &deep);
    write(root, &[deep.as_slice(), b"/leaf"].concat(), b"deep\n");
    write(root, b"zero", b"");
    write(root, b"a/zero2", b"");
    write(root, b"big.bin", &noise(5 << 20 | 3, 42));
    mkdir(root, b"ro-dir/inner");
    write(root, b"ro-dir/inner/file", b"inside a read-only directory\n");
    if is_root() {
        std::os::unix::fs::lchown(p(root, b"dup1"), Some(1234), Some(4321)).unwrap();
        std::os::unix::fs::lchown(p(root, b"a/b"), Some(65534), Some(65534)).unwrap();
        std::os::unix::fs::lchown(p(root, b"rel-link"), Some(2), Some(2)).unwrap();
    }
    // Times last: nanoseconds everywhere, directories after their contents.
    let mut n = 0i64;
    let mut stack = vec![Vec::new()];
    let mut dirs = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(p(root, &d)).unwrap() {
            let e = e.unwrap();
            let rel = ferry_archive::fsutil::join(&d, e.file_name().as_bytes());
            n += 1;
            if e.file_type().unwrap().is_dir() {
                stack.push(rel.clone());
                dirs.push(rel);
            } else {
                set_mtime(root, &rel, 1_600_000_000 + n * 1000, n * 7_777_777 % 1_000_000_000);
            }
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    for d in &dirs {
        n += 1;
        set_mtime(root, d, 1_500_000_000 + n, 123_456_789);
    }
    chmod(root, b"ro-dir/inner", 0o555);
    chmod(root, b"ro-dir", 0o500);
    chmod(root, b"empty", 0o700);
}
