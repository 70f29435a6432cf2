use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::manifest::{Limits, Sha256, parse};
use crate::testutil::*;

/// Options for `root` with a cache in `state` and no racy window (the
/// tests' files are all younger than any real window).
fn opts(root: &Path, state: &Path) -> ScanOptions {
    ScanOptions { cache: Some(state.join("tree.cache")), racy_window: Duration::ZERO, ..ScanOptions::new(root) }
}

fn small_tree(root: &Path) {
    for i in 0..20 {
        write(root, format!("f{i:02}").as_bytes(), format!("file {i}\n").as_bytes());
    }
    mkdir(root, b"sub");
    write(root, b"sub/inner", b"inner\n");
}

#[test]
fn the_odd_tree_is_described_faithfully() {
    let t = tempdir();
    let root = t.path().join("src");
    odd_tree(&root);
    let s = scan(&ScanOptions { xattrs: true, ..ScanOptions::new(&root) }).unwrap();
    let m = &s.manifest;
    // It is a valid manifest that survives its own text.
    assert_eq!(&parse(&m.to_bytes(), &Limits::default()).unwrap(), m);

    let get = |p: &[u8]| m.get(p).unwrap_or_else(|| panic!("no entry {}", String::from_utf8_lossy(p)));
    assert_eq!(get(b"rel-link").kind, Kind::Symlink { target: b"plain.txt".to_vec() });
    assert_eq!(get(b"abs-link").kind, Kind::Symlink { target: b"/etc/passwd".to_vec() });
    assert_eq!(get(b"dangling").kind, Kind::Symlink { target: b"nowhere/at/all".to_vec() });
    // Nothing below a symlink: `dir-link` -> a is not followed.
    assert!(m.entries.iter().all(|e| !e.path.starts_with(b"dir-link/")));
    assert_eq!(get(b"fifo").kind, Kind::Fifo);
    assert_eq!(get(b"fifo").mode, 0o640);
    assert_eq!(get(b"suid").mode, 0o4755);
    assert_eq!(get(b"big.bin").size(), 5 << 20 | 3);
    assert_eq!(get(b"big.bin").sha256(), Some(&Sha256::of(&noise(5 << 20 | 3, 42))));
    assert_eq!(get(b"zero").sha256(), Some(&Sha256::of(b"")));
    assert_eq!(get(b"bad\xff\xfename").kind, Kind::File { size: 10, sha256: Sha256::of(b"not utf-8\n") });
    assert!(m.get("evil\u{202e}txt.exe".as_bytes()).is_some());
    assert!(m.get(b"new\nline").is_some());
    assert_eq!(get(b"empty").kind, Kind::Dir);
    assert_eq!(get(b"empty").mode, 0o700);
    // The hard-link group of three, and equal contents that are not linked.
    let group: Vec<_> = [&b"hard1"[..], b"a/hard2", b"a/b/hard 3"].iter().map(|p| get(p).link).collect();
    assert!(group[0].is_some() && group.iter().all(|g| *g == group[0]), "{group:?}");
    assert_eq!(get(b"dup1").link, None);
    assert_eq!(get(b"dup1").sha256(), get(b"a/dup2").sha256());
    // Times with nanoseconds, xattrs, owners and names.
    let md = std::fs::symlink_metadata(root.join("plain.txt")).unwrap();
    assert_eq!(get(b"plain.txt").mtime, crate::manifest::Mtime { sec: md.mtime(), nsec: md.mtime_nsec() as u32 });
    assert_eq!(get(b"plain.txt").xattrs, vec![(b"user.comment".to_vec(), b"a note\n\x00binary".to_vec())]);
    assert_eq!(get(b"a").xattrs, vec![(b"user.dir".to_vec(), b"on a directory".to_vec())]);
    if is_root() {
        assert_eq!((get(b"dup1").uid, get(b"dup1").gid, &get(b"dup1").user), (1234, 4321, &None));
        assert_eq!(get(b"plain.txt").user.as_deref(), Some(&b"root"[..]));
    }
    assert_eq!(s.stats.files_hashed, s.stats.files - 2, "hard-linked names are hashed once");
}

#[test]
fn second_scan_of_an_unchanged_tree_reads_no_file() {
    let t = tempdir();
    let root = t.path().join("src");
    small_tree(&root);
    let o = opts(&root, t.path());
    let first = scan(&o).unwrap();
    assert_eq!(first.stats.files_hashed, 21);
    assert_eq!(first.stats.bytes_hashed, first.stats.bytes);
    let second = scan(&o).unwrap();
    assert_eq!(second.stats.files_hashed, 0, "{:?}", second.stats);
    assert_eq!(second.stats.bytes_hashed, 0);
    assert_eq!(second.manifest, first.manifest);

    // Touching one file (new content, same size) costs exactly one read.
    let mut f = std::fs::OpenOptions::new().write(true).open(root.join("f07")).unwrap();
    f.write_all(b"FILE").unwrap();
    drop(f);
    let third = scan(&o).unwrap();
    assert_eq!(third.stats.files_hashed, 1);
    assert_eq!(third.manifest.get(b"f07").unwrap().sha256(), Some(&Sha256::of(b"FILE 7\n")));
    assert_eq!(scan(&o).unwrap().stats.files_hashed, 0);
}

#[test]
fn a_file_replaced_with_same_size_and_mtime_is_hashed_again() {
    let t = tempdir();
    let root = t.path().join("src");
    small_tree(&root);
    let o = opts(&root, t.path());
    scan(&o).unwrap();
    // Same size, same mtime, other inode and ctime (rsync -t does this).
    write(&root, b"f03.new", b"FILE 3\n");
    let md = std::fs::metadata(root.join("f03")).unwrap();
    set_mtime(&root, b"f03.new", md.mtime(), md.mtime_nsec());
    std::fs::rename(root.join("f03.new"), root.join("f03")).unwrap();
    let s = scan(&o).unwrap();
    assert_eq!(s.stats.files_hashed, 1);
    assert_eq!(s.manifest.get(b"f03").unwrap().sha256(), Some(&Sha256::of(b"FILE 3\n")));

    // Same inode, content and mtime put back by hand: ctime tells.
    let path = root.join("f04");
    let md = std::fs::metadata(&path).unwrap();
    std::fs::write(&path, b"FILE 4\n").unwrap();
    set_mtime(&root, b"f04", md.mtime(), md.mtime_nsec());
    let s = scan(&o).unwrap();
    assert_eq!(s.stats.files_hashed, 1);
    assert_eq!(s.manifest.get(b"f04").unwrap().sha256(), Some(&Sha256::of(b"FILE 4\n")));
}

#[test]
fn files_changed_just_before_the_scan_are_not_cached() {
    let t = tempdir();
    let root = t.path().join("src");
    small_tree(&root);
    let o = ScanOptions { racy_window: Duration::from_secs(3600), ..opts(&root, t.path()) };
    let first = scan(&o).unwrap();
    assert_eq!(first.stats.racy, 21);
    assert_eq!(scan(&o).unwrap().stats.files_hashed, 21, "racy files are read again");
}

#[test]
fn a_broken_cache_means_hashing_again_not_trusting_it() {
    let t = tempdir();
    let root = t.path().join("src");
    small_tree(&root);
    let o = opts(&root, t.path());
    scan(&o).unwrap();
    let cache = t.path().join("tree.cache");
    let mut text = std::fs::read(&cache).unwrap();
    text.extend_from_slice(b"garbage\n");
    std::fs::write(&cache, text).unwrap();
    assert_eq!(scan(&o).unwrap().stats.files_hashed, 21);
    assert_eq!(scan(&o).unwrap().stats.files_hashed, 0, "rewritten after the scan");
}

#[test]
fn a_file_that_keeps_changing_is_read_again_then_reported() {
    let t = tempdir();
    let root = t.path().join("src");
    mkdir(&root, b"");
    write(&root, b"log", b"line 1\n");
    let path = root.join("log");
    // A writer that appends after every read.
    let p = path.clone();
    hash::tests::AFTER_READ.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
            f.write_all(b"more\n").unwrap();
        }))
    });
    // The hook runs on the thread that hashes: this one.
    let o = ScanOptions { hash_threads: 0, ..opts(&root, t.path()) };
    let s = scan(&o).unwrap();
    assert_eq!(s.stats.changed, vec![b"log".to_vec()]);
    assert_eq!(s.stats.files_hashed, 1);
    // Three reads of growing sizes: 7, 12, 17 bytes; the digest is the last
    // read's and names its size.
    assert_eq!(s.stats.bytes_hashed, 7 + 12 + 17);
    let e = s.manifest.get(b"log").unwrap();
    assert_eq!(e.kind, Kind::File { size: 17, sha256: Sha256::of(b"line 1\nmore\nmore\n") });

    // A writer that strikes once: the second read is stable and counts.
    let fired = std::cell::Cell::new(false);
    let p = path.clone();
    hash::tests::AFTER_READ.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            if !fired.replace(true) {
                std::fs::write(&p, b"rewritten\n").unwrap();
            }
        }))
    });
    let s = scan(&o).unwrap();
    hash::tests::AFTER_READ.with(|h| *h.borrow_mut() = None);
    assert!(s.stats.changed.is_empty());
    assert_eq!(s.manifest.get(b"log").unwrap().sha256(), Some(&Sha256::of(b"rewritten\n")));
    // Not cached while it kept changing, cached once stable.
    assert_eq!(scan(&o).unwrap().stats.files_hashed, 0);
}

#[test]
fn unreadable_entries_fail_or_are_skipped_and_listed() {
    let t = tempdir();
    let root = t.path().join("src");
    small_tree(&root);
    write(&root, b"sub/secret", b"no\n");
    chmod(&root, b"sub/secret", 0o000);
    mkdir(&root, b"closed/inside");
    write(&root, b"closed/inside/x", b"x\n");
    chmod(&root, b"closed", 0o000);
    let run = |o: &ScanOptions| without_dac_override(|| scan(o));

    let err = run(&ScanOptions::new(&root)).unwrap_err();
    match &err {
        ScanError::Unreadable { path, .. } => {
            assert!(path == &root.join("closed") || path == &root.join("sub/secret"), "{}", path.display());
            assert!(path.is_absolute());
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains(root.to_str().unwrap()), "{err}");

    let s = run(&ScanOptions { unreadable: Unreadable::Skip, ..ScanOptions::new(&root) }).unwrap();
    let skipped: Vec<&[u8]> = s.stats.skipped.iter().map(|k| k.path.as_slice()).collect();
    assert_eq!(skipped, [&b"closed"[..], b"sub/secret"]);
    assert!(s.manifest.get(b"sub/secret").is_none());
    assert_eq!(s.manifest.get(b"closed").unwrap().kind, Kind::Dir, "the directory itself is recorded");
    assert!(s.manifest.get(b"closed/inside").is_none());
    assert!(s.manifest.get(b"sub/inner").is_some());
    let json = serde_json::to_value(&s.stats).unwrap();
    assert_eq!(json["skipped"][1]["path"], "sub/secret");
}

#[test]
fn include_exclude_and_the_export_dir_select_what_tar_mode_selects() {
    let t = tempdir();
    let root = t.path().join("src");
    odd_tree(&root);
    mkdir(&root, b"export/old");
    write(&root, b"export/old/dump.tar.zst", b"an earlier backup");
    write(&root, b"a/x.tmp", b"tmp");
    write(&root, b"a/b/cache", b"cache file");
    let archive_opts = ferry_archive::CreateOptions {
        root: root.clone(),
        include: vec!["a".into(), "ro-dir/inner".into(), "plain.txt".into()],
        exclude: vec!["*.tmp".into(), "cache".into(), "/a/b/empty".into()],
        ..ferry_archive::CreateOptions::default()
    };
    let mut o = ScanOptions::from(&archive_opts);
    o.export_dir = Some(root.join("export"));
    let ours: Vec<Vec<u8>> = scan(&o).unwrap().manifest.entries.into_iter().map(|e| e.path).collect();
    // What the tar module archives with the same options.
    let mut tar = Vec::new();
    ferry_archive::create_tar_zst(&archive_opts, &mut tar).unwrap();
    let listed = ferry_archive::list_tar_zst(&tar[..], &ferry_archive::ExtractPolicy::faithful()).unwrap();
    let mut theirs: Vec<Vec<u8>> = listed.into_iter().map(|e| e.path).collect();
    theirs.sort();
    assert_eq!(ours, theirs);
    assert!(ours.contains(&b"ro-dir".to_vec()), "the include's parent has an entry of its own");
    assert!(!ours.iter().any(|p| p.ends_with(b".tmp") || p.ends_with(b"cache")));

    // The whole root: the export directory is left out by identity.
    let mut o = ScanOptions::new(&root);
    o.export_dir = Some(root.join("export"));
    let m = scan(&o).unwrap().manifest;
    assert!(m.get(b"export").is_none() && m.get(b"export/old").is_none());
    assert!(m.get(b"plain.txt").is_some());
    // A root inside the export directory is refused.
    o.root = root.join("export/old");
    assert!(matches!(scan(&o), Err(ScanError::Options(_))));
}

#[test]
fn includes_through_symlinks_or_outside_the_root_are_refused() {
    let t = tempdir();
    let root = t.path().join("src");
    odd_tree(&root);
    let o = ScanOptions { include: vec!["dir-link/b".into()], ..ScanOptions::new(&root) };
    assert!(matches!(scan(&o), Err(ScanError::Options(m)) if m.contains("not a directory")));
    let o = ScanOptions { include: vec!["/etc".into()], ..ScanOptions::new(&root) };
    assert!(matches!(scan(&o), Err(ScanError::Options(m)) if m.contains("not under root")));
    let o = ScanOptions { include: vec!["a/../..".into()], ..ScanOptions::new(&root) };
    assert!(matches!(scan(&o), Err(ScanError::Options(m)) if m.contains("..")));
    // An absolute include under the root is made relative.
    let o = ScanOptions { include: vec![root.join("a/b")], ..ScanOptions::new(&root) };
    let m = scan(&o).unwrap().manifest;
    assert_eq!(m.entries[0].path, b"a");
    assert!(m.get(b"a/b/hard 3").is_some() && m.get(b"plain.txt").is_none());
}

#[test]
fn sockets_are_recorded() {
    let t = tempdir();
    let root = t.path().join("src");
    mkdir(&root, b"");
    let _l = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    let m = scan(&ScanOptions::new(&root)).unwrap().manifest;
    assert_eq!(m.get(b"sock").unwrap().kind, Kind::Socket);
}

#[test]
fn update_re_stats_only_what_changed_and_matches_a_full_scan() {
    let t = tempdir();
    let root = t.path().join("src");
    odd_tree(&root);
    chmod(&root, b"ro-dir", 0o755);
    for i in 0..200 {
        write(&root, format!("many/f{i:03}").as_bytes(), format!("{i}\n").as_bytes());
    }
    let o = ScanOptions { xattrs: true, ..opts(&root, t.path()) };
    let full0 = scan(&o).unwrap();

    // A watcher's worth of changes.
    write(&root, b"plain.txt", b"changed content\n");
    std::fs::remove_file(root.join("zero")).unwrap();
    write(&root, b"a/new file", b"new\n");
    write(&root, b"fresh/x/y/deep", b"made with mkdir -p\n");
    std::fs::remove_file(root.join("dup1")).unwrap();
    write(&root, b"dup1/inside", b"a file became a directory\n");
    std::fs::remove_dir_all(root.join("ro-dir")).unwrap();
    write(&root, b"ro-dir", b"a directory became a file\n");
    chmod(&root, b"many", 0o750);
    std::fs::hard_link(root.join("many/f000"), root.join("many/link-to-f000")).unwrap();
    std::fs::rename(root.join("a/b"), root.join("a/b-renamed")).unwrap();
    let changed: Vec<Vec<u8>> = [
        &b"plain.txt"[..],
        b"zero",
        b"a/new file",
        b"fresh/x/y/deep",
        b"dup1",
        b"ro-dir",
        b"many",
        b"many/link-to-f000",
        b"a/b",
        b"a/b-renamed",
        b"a",
        b"gone/and/never/there",
    ]
    .iter()
    .map(|p| p.to_vec())
    .collect();

    let up = update(&full0.manifest, &changed, &o).unwrap();
    let full = scan(&o).unwrap();
    let diff = crate::diff::diff(&full.manifest, &up.manifest, &crate::diff::DiffOptions::everything());
    assert!(diff.is_empty(), "update differs from a full scan:\n{}", diff.to_text());
    assert_eq!(up.manifest, full.manifest);
    // Stats: a few dozen lstat calls instead of the whole tree, and only
    // the new or changed files read.
    assert!(up.stats.statted < 40, "{} lstat calls", up.stats.statted);
    assert!(full.stats.statted > 250, "{}", full.stats.statted);
    // plain.txt, a/new file, fresh/x/y/deep, dup1/inside, ro-dir, and the
    // new name of f000 (a link changes the inode's ctime); `a/b-renamed`'s
    // files are found in the cache by inode.
    assert_eq!(up.stats.files_hashed, 6);
    let link = up.manifest.get(b"many/link-to-f000").unwrap().link;
    assert!(link.is_some() && up.manifest.get(b"many/f000").unwrap().link == link);
    // The cache still vouches for everything: a full scan now reads nothing.
    assert_eq!(full.stats.files_hashed, 0);
}

#[test]
fn update_refuses_paths_that_are_not_below_the_root() {
    let t = tempdir();
    let root = t.path().join("src");
    small_tree(&root);
    let o = opts(&root, t.path());
    let m = scan(&o).unwrap().manifest;
    for bad in [&b"../etc"[..], b"/etc", b"", b"a//b", b"."] {
        assert!(matches!(update(&m, &[bad.to_vec()], &o), Err(ScanError::Options(_))), "{bad:?}");
    }
}

#[test]
fn update_keeps_to_the_includes() {
    let t = tempdir();
    let root = t.path().join("src");
    small_tree(&root);
    write(&root, b"sub/deeper/x", b"x\n");
    let o = ScanOptions { include: vec!["sub/deeper".into()], ..opts(&root, t.path()) };
    let m = scan(&o).unwrap().manifest;
    write(&root, b"f00", b"outside the include\n");
    write(&root, b"sub/other", b"outside too\n");
    write(&root, b"sub/deeper/y", b"inside\n");
    let changed =
        vec![b"f00".to_vec(), b"sub/other".to_vec(), b"sub/deeper/y".to_vec(), b"sub/deeper".to_vec(), b"sub".to_vec()];
    let up = update(&m, &changed, &o).unwrap();
    assert_eq!(up.manifest, scan(&o).unwrap().manifest);
    assert!(up.manifest.get(b"f00").is_none() && up.manifest.get(b"sub/deeper/y").is_some());
}

#[test]
fn a_cache_that_cannot_be_written_does_not_fail_the_scan() {
    let t = tempdir();
    let root = t.path().join("src");
    small_tree(&root);
    write(t.path(), b"not-a-dir", b"a file where the cache directory should be");
    let o = ScanOptions { cache: Some(t.path().join("not-a-dir/tree.cache")), ..opts(&root, t.path()) };
    let s = scan(&o).unwrap();
    assert_eq!(s.stats.entries, 22);
    assert!(s.stats.cache_error.as_deref().is_some_and(|e| e.contains("not-a-dir")), "{:?}", s.stats.cache_error);
}

#[test]
fn hashing_on_several_threads_gives_what_one_thread_gives() {
    let t = tempdir();
    let root = t.path().join("src");
    odd_tree(&root);
    for d in 0..6 {
        mkdir(&root, format!("many/d{d}").as_bytes());
        for i in 0..60u64 {
            // Sizes around the 256 KiB read buffer, and empty files.
            let size = ((d * 60 + i) * 7919) % (600 << 10) * u64::from(i % 9 != 0);
            let body: Vec<u8> = (0..size).map(|b| (b ^ i ^ d) as u8).collect();
            write(&root, format!("many/d{d}/f{i}").as_bytes(), &body);
        }
    }
    std::fs::hard_link(root.join("many/d0/f1"), root.join("many/d5/also-f1")).unwrap();
    std::fs::hard_link(root.join("many/d2/f7"), root.join("many/linked")).unwrap();
    let one_state = t.path().join("one");
    let four_state = t.path().join("four");
    std::fs::create_dir_all(&one_state).unwrap();
    std::fs::create_dir_all(&four_state).unwrap();
    let one = ScanOptions { xattrs: true, hash_threads: 0, ..opts(&root, &one_state) };
    let four = ScanOptions { xattrs: true, hash_threads: 3, ..opts(&root, &four_state) };
    let a = scan(&one).unwrap();
    let b = scan(&four).unwrap();
    assert!(a.stats.files_hashed > 360, "{:?}", a.stats);
    assert_eq!(a.manifest, b.manifest);
    assert_eq!(a.stats, b.stats);
    assert_eq!(
        std::fs::read(one_state.join("tree.cache")).unwrap(),
        std::fs::read(four_state.join("tree.cache")).unwrap(),
        "the same cache records"
    );
    let again = scan(&four).unwrap();
    assert_eq!(again.stats.files_hashed, 0);
    assert_eq!(again.manifest, a.manifest);

    // A file that vanishes or cannot be read behaves the same either way:
    // Skip lists it, Fail names it.
    chmod(&root, b"many/d3/f5", 0o000);
    let run = |o: &ScanOptions| without_dac_override(|| scan(o));
    let skip = |o: &ScanOptions| ScanOptions { unreadable: Unreadable::Skip, cache: None, ..o.clone() };
    let (a, b) = (run(&skip(&one)).unwrap(), run(&skip(&four)).unwrap());
    assert_eq!(a.stats.skipped.len(), 1);
    assert_eq!((a.manifest, a.stats), (b.manifest, b.stats));
    let err = run(&ScanOptions { cache: None, ..four.clone() }).unwrap_err();
    assert!(matches!(&err, ScanError::Unreadable { path, .. } if path == &root.join("many/d3/f5")), "{err}");
}
