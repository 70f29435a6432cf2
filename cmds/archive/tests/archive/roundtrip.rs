//! Trees survive create → extract unchanged (compared with manifest::diff).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_archive::manifest::{self, Compare, Kind};
use ferry_archive::{CreateOptions, ExtractPolicy, create_tar_zst, extract_tar_zst, list_tar_zst};

use crate::util::{Sandbox, have_tool, mode_of};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn set_mtime(p: &Path, secs: i64) {
    let t = rustix::fs::Timespec { tv_sec: secs, tv_nsec: 0 };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps { last_access: t, last_modification: t },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Whether this filesystem accepts user xattrs.
fn user_xattrs_work(dir: &Path) -> bool {
    let p = dir.join(".xattr-probe");
    fs::write(&p, b"").unwrap();
    let ok = rustix::fs::setxattr(&p, "user.probe", b"1", rustix::fs::XattrFlags::empty()).is_ok();
    fs::remove_file(&p).unwrap();
    ok
}

/// The tree the issue asks for.
fn build_tree(root: &Path) -> bool {
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/f.txt"), b"hello\n").unwrap();
    symlink("../f.txt", root.join("a/b/rel")).unwrap();
    symlink("/etc/passwd", root.join("abs")).unwrap();
    symlink("nowhere/x", root.join("dangling")).unwrap();
    // Three names, one inode.
    fs::write(root.join("h1"), b"linked").unwrap();
    fs::hard_link(root.join("h1"), root.join("a/h2")).unwrap();
    fs::hard_link(root.join("h1"), root.join("a/b/h3")).unwrap();
    fs::create_dir_all(root.join("empty/nested-empty")).unwrap();
    // A 0000 directory with content.
    fs::create_dir(root.join("locked")).unwrap();
    fs::write(root.join("locked/inside"), b"secret").unwrap();
    fs::create_dir(root.join("locked/sub")).unwrap();
    // Odd names.
    let odd = root.join("odd");
    fs::create_dir(&odd).unwrap();
    for n in [&b"with space"[..], "é".as_bytes(), "日本".as_bytes(), b"new\nline", b"bad\xffbyte", b" leading-space"]
    {
        fs::write(odd.join(OsStr::from_bytes(n)), n).unwrap();
    }
    let long = "n".repeat(200);
    fs::write(odd.join(&long), b"long").unwrap();
    symlink(format!("../odd/{long}"), root.join("long-target")).unwrap();
    let mut deep = root.join("deep");
    for i in 0..40 {
        deep = deep.join(format!("d{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom.txt"), b"deep").unwrap();
    // Modes.
    for (name, mode) in [("m600", 0o600), ("m755", 0o755), ("m4755", 0o4755), ("m2755", 0o2755)] {
        let p = root.join(name);
        fs::write(&p, name).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::create_dir(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    // A FIFO.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    // A socket is skipped (and counted).
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    // Ownership (only root can give files away).
    if is_root() {
        rustix::fs::chownat(
            rustix::fs::CWD,
            root.join("m600"),
            Some(rustix::fs::Uid::from_raw(1234)),
            Some(rustix::fs::Gid::from_raw(5678)),
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    }
    let xattrs = user_xattrs_work(root);
    if xattrs {
        rustix::fs::setxattr(root.join("a/f.txt"), "user.ferry", b"test", rustix::fs::XattrFlags::empty()).unwrap();
        rustix::fs::setxattr(root.join("a"), "user.dir", b"\x00\xffbin", rustix::fs::XattrFlags::empty()).unwrap();
    }
    // Times last, deepest first, so later writes do not move them.
    let m = manifest::manifest(root).unwrap();
    for (i, e) in m.iter().enumerate().rev() {
        set_mtime(&root.join(OsStr::from_bytes(&e.path)), 1_600_000_000 + i as i64 * 7);
    }
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    xattrs
}

fn create(root: &Path) -> (Vec<u8>, ferry_archive::CreateStats) {
    let opts = CreateOptions { root: root.to_path_buf(), xattrs: true, ..CreateOptions::default() };
    let mut out = Vec::new();
    let stats = create_tar_zst(&opts, &mut out).unwrap();
    (out, stats)
}

fn without_sockets(m: Vec<manifest::ManifestEntry>) -> Vec<manifest::ManifestEntry> {
    m.into_iter().filter(|e| e.kind != Kind::Socket).collect()
}

#[test]
fn faithful_round_trip_has_no_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let xattrs = build_tree(&src);
    let (archive, stats) = create(&src);
    assert_eq!(stats.hardlinks, 2, "{stats:?}");
    assert_eq!(stats.skipped, 1, "the socket: {stats:?}");
    assert_eq!(stats.other, 1, "the fifo: {stats:?}");
    assert_eq!(stats.changed, 0);
    assert!(stats.bytes_out > 0 && stats.bytes_out == archive.len() as u64);

    let dest = tmp.path().join("dest");
    let es = extract_tar_zst(archive.as_slice(), &dest, &ExtractPolicy::faithful()).unwrap();
    assert_eq!(es.hardlinks, 2);
    assert_eq!(es.files, stats.files);

    let a = without_sockets(manifest::manifest(&src).unwrap());
    let b = manifest::manifest(&dest).unwrap();
    let cmp = Compare { owner: is_root(), xattrs, ..Compare::default() };
    let d = manifest::diff(&a, &b, &cmp);
    assert!(d.is_empty(), "differences:\n{}", d.join("\n"));
    if xattrs {
        let f = manifest::find(&b, b"a/f.txt").unwrap();
        assert!(f.xattrs.contains(&("user.ferry".to_string(), b"test".to_vec())));
    }
    // The hard-link group spans three names.
    let g = manifest::find(&b, b"h1").unwrap().hardlink_group;
    assert!(g.is_some());
    assert_eq!(manifest::find(&b, b"a/b/h3").unwrap().hardlink_group, g);
    assert_eq!(mode_of(&dest.join("locked")), 0);
    fs::set_permissions(dest.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn creation_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let (a, _) = create(&src);
    let (b, _) = create(&src);
    assert_eq!(a, b);
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn setuid_kept_only_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let (archive, _) = create(&src);
    let policy = ExtractPolicy { setuid: false, ..ExtractPolicy::faithful() };
    let dest = tmp.path().join("stripped");
    extract_tar_zst(archive.as_slice(), &dest, &policy).unwrap();
    assert_eq!(mode_of(&dest.join("m4755")), 0o755);
    assert_eq!(mode_of(&dest.join("m2755")), 0o755);
    assert_eq!(mode_of(&dest.join("sticky")), 0o777);
    assert_eq!(mode_of(&dest.join("m600")), 0o600);
    let kept = tmp.path().join("kept");
    extract_tar_zst(archive.as_slice(), &kept, &ExtractPolicy::faithful()).unwrap();
    assert_eq!(mode_of(&kept.join("m4755")), 0o4755);
    assert_eq!(mode_of(&kept.join("m2755")), 0o2755);
    assert_eq!(mode_of(&kept.join("sticky")), 0o1777);
    for d in [&src, &dest, &kept] {
        fs::set_permissions(d.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
    }
}

#[test]
fn default_policy_refuses_fifos_but_keeps_links_of_a_full_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let (archive, _) = create(&src);
    // FIFOs need `devices`; links (absolute, dangling) are no reason to refuse.
    let err = extract_tar_zst(archive.as_slice(), &tmp.path().join("d"), &ExtractPolicy::default()).unwrap_err();
    assert_eq!(err.code(), "E_ARCHIVE_TYPE", "{err}");
    assert!(!tmp.path().join("d").exists());
    let in_tree = ExtractPolicy { symlinks: ferry_archive::SymlinkPolicy::InTree, ..ExtractPolicy::default() };
    let err = extract_tar_zst(archive.as_slice(), &tmp.path().join("d"), &in_tree).unwrap_err();
    assert_eq!(err.code(), "E_ARCHIVE_LINK", "{err}");
    let with_fifos = ExtractPolicy { devices: true, ..ExtractPolicy::default() };
    extract_tar_zst(archive.as_slice(), &tmp.path().join("d"), &with_fifos).unwrap();
    for (link, target) in [("abs", "/etc/passwd"), ("dangling", "nowhere/x"), ("a/b/rel", "../f.txt")] {
        assert_eq!(fs::read_link(tmp.path().join("d").join(link)).unwrap(), Path::new(target), "{link}");
    }
    for d in [&src, &tmp.path().join("d")] {
        fs::set_permissions(d.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
    }
}

#[test]
fn list_matches_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let (archive, stats) = create(&src);
    let entries = list_tar_zst(archive.as_slice(), &ExtractPolicy::faithful()).unwrap();
    let m = without_sockets(manifest::manifest(&src).unwrap());
    assert_eq!(entries.len(), m.len());
    let total = stats.files + stats.dirs + stats.symlinks + stats.hardlinks + stats.other;
    assert_eq!(entries.len() as u64, total);
    let long = entries.iter().find(|e| e.path.ends_with("n".repeat(200).as_bytes())).unwrap();
    assert_eq!(long.size, 4);
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn include_and_exclude() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("var/cache/apt")).unwrap();
    fs::create_dir_all(src.join("var/lib/x")).unwrap();
    fs::create_dir_all(src.join("home/u/cache")).unwrap();
    fs::write(src.join("var/cache/apt/p"), b"p").unwrap();
    fs::write(src.join("var/lib/x/keep"), b"k").unwrap();
    fs::write(src.join("var/lib/x/drop.tmp"), b"d").unwrap();
    fs::write(src.join("home/u/cache/c"), b"c").unwrap();
    fs::write(src.join("home/u/doc"), b"doc").unwrap();
    fs::write(src.join("top"), b"t").unwrap();
    let opts = CreateOptions {
        root: src.clone(),
        include: vec![PathBuf::from("var"), PathBuf::from("home/u")],
        exclude: vec!["*.tmp".into(), "cache".into(), "var/lib/*/nothing".into()],
        ..CreateOptions::default()
    };
    let mut out = Vec::new();
    let stats = create_tar_zst(&opts, &mut out).unwrap();
    let names: Vec<String> = list_tar_zst(out.as_slice(), &ExtractPolicy::default())
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.path).unwrap())
        .collect();
    assert_eq!(names, ["home", "home/u", "home/u/doc", "var", "var/lib", "var/lib/x", "var/lib/x/keep"]);
    assert_eq!(stats.excluded, 3);

    let opts = CreateOptions { root: src.clone(), exclude: vec!["var/cache/*".into()], ..CreateOptions::default() };
    let mut out = Vec::new();
    create_tar_zst(&opts, &mut out).unwrap();
    let names: Vec<Vec<u8>> =
        list_tar_zst(out.as_slice(), &ExtractPolicy::default()).unwrap().into_iter().map(|e| e.path).collect();
    assert!(names.contains(&b"var/cache".to_vec()));
    assert!(!names.contains(&b"var/cache/apt".to_vec()));
    assert!(names.contains(&b"home/u/cache/c".to_vec()));

    // An include path through a symlink is refused, not followed.
    symlink("var", src.join("link")).unwrap();
    let opts =
        CreateOptions { root: src.clone(), include: vec![PathBuf::from("link/lib")], ..CreateOptions::default() };
    let err = create_tar_zst(&opts, Vec::new()).unwrap_err();
    assert_eq!(err.code(), "E_ARCHIVE_PATH", "{err}");
}

#[test]
fn files_changing_while_read_keep_the_archive_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let grow = src.join("grow");
    fs::write(&grow, vec![7u8; 8 << 20]).unwrap();
    fs::write(src.join("z-after"), b"after").unwrap();
    let shrink = src.join("shrink");
    fs::write(&shrink, vec![9u8; 8 << 20]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shrinker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200 {
                let mut f = fs::OpenOptions::new().write(true).open(&shrink).unwrap();
                f.set_len(0).unwrap();
                f.write_all(&vec![3u8; (n % 7 + 1) << 20]).unwrap();
                n += 1;
            }
        })
    };
    let writer = {
        let stop = stop.clone();
        let grow = grow.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(&grow).unwrap();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 4000 {
                f.write_all(&[1u8; 4096]).unwrap();
                n += 1;
            }
        })
    };
    let opts = CreateOptions { root: src.clone(), ..CreateOptions::default() };
    let mut out = Vec::new();
    let stats = create_tar_zst(&opts, &mut out).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    shrinker.join().unwrap();
    let entries = list_tar_zst(out.as_slice(), &ExtractPolicy::default()).unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2].path, b"z-after");
    eprintln!("changed: {}", stats.changed);
    // Whether the race was caught depends on timing; the archive is valid
    // either way.
    let _ = stats.changed;
}

#[test]
fn destination_must_not_exist() {
    let sb = Sandbox::new();
    fs::create_dir(&sb.dest).unwrap();
    fs::write(sb.dest.join("keep"), b"k").unwrap();
    let archive = crate::util::RawTar::new().file(b"x", b"x").zst();
    let err = extract_tar_zst(archive.as_slice(), &sb.dest, &ExtractPolicy::default()).unwrap_err();
    assert_eq!(err.code(), "E_STORE", "{err}");
    assert_eq!(fs::read(sb.dest.join("keep")).unwrap(), b"k");
    assert!(!sb.dest.join("x").exists());
    assert_eq!(sb.work_names(), vec!["dest".to_string(), "outside".to_string()]);
}

#[test]
fn gnu_tar_reads_our_archives() {
    if !have_tool("tar") || !have_tool("zstd") {
        eprintln!("skipped: tar or zstd missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let (archive, _) = create(&src);
    let file = tmp.path().join("a.tar.zst");
    fs::write(&file, &archive).unwrap();
    let out = tmp.path().join("gnu");
    fs::create_dir(&out).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg("zstd -dc \"$1\" | tar -xpf - -C \"$2\"")
        .arg("sh")
        .arg(&file)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let a = without_sockets(manifest::manifest(&src).unwrap());
    let b = manifest::manifest(&out).unwrap();
    let cmp = Compare { owner: is_root(), xattrs: false, ..Compare::default() };
    let d = manifest::diff(&a, &b, &cmp);
    assert!(d.is_empty(), "differences:\n{}", d.join("\n"));
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(out.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn we_read_gnu_tar_archives_gnu_and_posix_formats() {
    if !have_tool("tar") || !have_tool("zstd") {
        eprintln!("skipped: tar or zstd missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    for format in ["gnu", "posix"] {
        let file = tmp.path().join(format!("{format}.tar.zst"));
        let st = Command::new("sh")
            .arg("-c")
            .arg("tar --format=\"$1\" --xattrs -C \"$2\" -cf - . | zstd -q -T0 -3 > \"$3\"")
            .arg("sh")
            .arg(format)
            .arg(&src)
            .arg(&file)
            .status()
            .unwrap();
        assert!(st.success());
        let dest = tmp.path().join(format!("out-{format}"));
        let f = fs::File::open(&file).unwrap();
        extract_tar_zst(f, &dest, &ExtractPolicy::faithful()).unwrap_or_else(|e| panic!("{format}: {e}"));
        let a = without_sockets(manifest::manifest(&src).unwrap());
        let b = manifest::manifest(&dest).unwrap();
        let cmp = Compare { owner: is_root(), xattrs: false, ..Compare::default() };
        let d = manifest::diff(&a, &b, &cmp);
        assert!(d.is_empty(), "{format} differences:\n{}", d.join("\n"));
        fs::set_permissions(dest.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
    }
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn sub_second_mtimes_via_pax() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let f = src.join("f");
    fs::write(&f, b"x").unwrap();
    let t = rustix::fs::Timespec { tv_sec: 1_650_000_000, tv_nsec: 123_456_789 };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        &f,
        &rustix::fs::Timestamps { last_access: t, last_modification: t },
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    let opts = CreateOptions { root: src.clone(), mtime_nanos: true, ..CreateOptions::default() };
    let mut out = Vec::new();
    create_tar_zst(&opts, &mut out).unwrap();
    let entries = list_tar_zst(out.as_slice(), &ExtractPolicy::default()).unwrap();
    assert_eq!((entries[0].mtime, entries[0].mtime_nanos), (1_650_000_000, 123_456_789));
    let dest = tmp.path().join("dest");
    extract_tar_zst(out.as_slice(), &dest, &ExtractPolicy::default()).unwrap();
    use std::os::unix::fs::MetadataExt;
    let md = fs::metadata(dest.join("f")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_650_000_000, 123_456_789));
    // Without the option the archive has whole seconds only.
    let mut out = Vec::new();
    create_tar_zst(&CreateOptions { root: src, ..CreateOptions::default() }, &mut out).unwrap();
    let entries = list_tar_zst(out.as_slice(), &ExtractPolicy::default()).unwrap();
    assert_eq!((entries[0].mtime, entries[0].mtime_nanos), (1_650_000_000, 0));
}

#[test]
fn long_hard_link_targets_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dir = src.join("x".repeat(150));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("y".repeat(120)), b"data").unwrap();
    fs::hard_link(dir.join("y".repeat(120)), src.join("z")).unwrap();
    let (archive, stats) = {
        let mut out = Vec::new();
        let s = create_tar_zst(&CreateOptions { root: src.clone(), ..CreateOptions::default() }, &mut out).unwrap();
        (out, s)
    };
    assert_eq!(stats.hardlinks, 1);
    let dest = tmp.path().join("dest");
    extract_tar_zst(archive.as_slice(), &dest, &ExtractPolicy::default()).unwrap();
    let d =
        manifest::diff(&manifest::manifest(&src).unwrap(), &manifest::manifest(&dest).unwrap(), &Compare::default());
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn one_file_system_records_mount_points_without_their_contents() {
    use std::os::unix::fs::MetadataExt;
    // /proc is another filesystem than / on any Linux machine that can run
    // this; no mount needed.
    let (Ok(root), Ok(proc_)) = (fs::metadata("/"), fs::metadata("/proc")) else {
        eprintln!("skipped: no /proc");
        return;
    };
    if root.dev() == proc_.dev() {
        eprintln!("skipped: /proc is on the root filesystem");
        return;
    }
    let opts = CreateOptions {
        root: PathBuf::from("/"),
        include: vec![PathBuf::from("proc")],
        one_file_system: true,
        ..CreateOptions::default()
    };
    let mut out = Vec::new();
    let stats = create_tar_zst(&opts, &mut out).unwrap();
    let names: Vec<Vec<u8>> =
        list_tar_zst(out.as_slice(), &ExtractPolicy::default()).unwrap().into_iter().map(|e| e.path).collect();
    assert_eq!(names, vec![b"proc".to_vec()]);
    assert_eq!(stats.dirs, 1);
}
