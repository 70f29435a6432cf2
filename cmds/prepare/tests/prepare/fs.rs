//! The fs module: a tree survives prepare → extract (faithful policy)
//! unchanged, compared with the archive crate's manifest.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_archive::manifest::{self, Compare};
use ferry_archive::{ExtractPolicy, extract_tar_zst, list_tar_zst};
use ferry_prepare::{SourceKind, SourceSpec};

use crate::util::{Env, artifact};

fn fs_source(name: &str, root: &Path, include: Vec<PathBuf>, exclude: Vec<String>, xattrs: bool) -> SourceSpec {
    SourceSpec::new(
        name,
        SourceKind::Fs {
            root: root.to_owned(),
            include,
            exclude,
            xattrs,
            one_file_system: false,
            unreadable: ferry_archive::Unreadable::Fail,
            tree_cache: None,
        },
    )
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets a `user.` xattr with setfattr; false when the tool or the
/// filesystem cannot.
fn set_xattr(p: &Path, name: &str, value: &str) -> bool {
    Command::new("setfattr").arg("-n").arg(name).arg("-v").arg(value).arg(p).status().is_ok_and(|s| s.success())
}

/// The tree the brief asks for: symlinks, hard links, empty dirs, odd
/// names, modes, owners (as root), a FIFO, an xattr.
fn build_tree(root: &Path) -> bool {
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/f.txt"), b"hello\n").unwrap();
    fs::write(root.join("a/big.bin"), (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>()).unwrap();
    symlink("../f.txt", root.join("a/b/rel")).unwrap();
    symlink("/etc/passwd", root.join("abs")).unwrap();
    symlink("nowhere/x", root.join("dangling")).unwrap();
    fs::write(root.join("h1"), b"linked").unwrap();
    fs::hard_link(root.join("h1"), root.join("a/h2")).unwrap();
    fs::hard_link(root.join("h1"), root.join("a/b/h3")).unwrap();
    fs::create_dir_all(root.join("empty/nested-empty")).unwrap();
    let odd = root.join("odd names");
    fs::create_dir(&odd).unwrap();
    for n in [&b"with space"[..], "Zoë.txt".as_bytes(), "日本".as_bytes(), b"new\nline", b"bad\xffbyte", b" lead"] {
        fs::write(odd.join(OsStr::from_bytes(n)), n).unwrap();
    }
    fs::write(root.join("secret"), b"0600").unwrap();
    chmod(&root.join("secret"), 0o600);
    fs::write(root.join("script.sh"), b"#!/bin/sh\n").unwrap();
    chmod(&root.join("script.sh"), 0o755);
    fs::write(root.join("setuid"), b"x").unwrap();
    chmod(&root.join("setuid"), 0o4755);
    fs::create_dir(root.join("shared")).unwrap();
    chmod(&root.join("shared"), 0o2775);
    fs::create_dir(root.join("tmpdir")).unwrap();
    chmod(&root.join("tmpdir"), 0o1777);
    assert!(Command::new("mkfifo").arg(root.join("fifo")).status().unwrap().success());
    if ferry_tests::is_root() {
        std::os::unix::fs::chown(root.join("a/f.txt"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("abs"), Some(4321), Some(8765)).unwrap();
    }
    set_xattr(&root.join("a/f.txt"), "user.origin", "ferry test")
}

#[test]
fn a_tree_round_trips_through_the_fs_module() {
    let env = Env::new("fs_roundtrip");
    let root = env.td.join("tree");
    let xattrs = build_tree(&root);
    let spec = fs_source("tree", &root, vec![], vec![], true);
    let r = env.prepare(&spec).unwrap();
    assert!(r.url.path.as_str().ends_with(".tar.zst"));

    let dest = env.td.join("restored");
    let f = fs::File::open(artifact(&r)).unwrap();
    extract_tar_zst(f, &dest, &ExtractPolicy::faithful()).unwrap();
    let (a, b) = (manifest::manifest(&root).unwrap(), manifest::manifest(&dest).unwrap());
    let cmp = Compare { owner: ferry_tests::is_root(), xattrs, ..Compare::default() };
    let d = manifest::diff(&a, &b, &cmp);
    assert!(d.is_empty(), "differences:\n{}", d.join("\n"));
    assert!(manifest::find(&b, b"odd names/new\nline").is_some());
    if xattrs {
        let e = manifest::find(&b, b"a/f.txt").unwrap();
        assert!(e.xattrs.iter().any(|(k, v)| k == "user.origin" && v == b"ferry test"), "{:?}", e.xattrs);
    }
}

#[test]
fn include_exclude_and_the_export_dir_inside_root() {
    let env = Env::new("fs_select");
    // Back up the whole test dir: the export dir is inside it.
    let root = env.td.path.clone();
    for p in ["etc/app", "etc/other", "home/u/cache", "var/log"] {
        fs::create_dir_all(root.join(p)).unwrap();
    }
    fs::write(root.join("etc/app/app.conf"), b"conf").unwrap();
    fs::write(root.join("etc/app/app.conf.tmp"), b"tmp").unwrap();
    fs::write(root.join("etc/other/x"), b"x").unwrap();
    fs::write(root.join("home/u/notes"), b"n").unwrap();
    fs::write(root.join("home/u/cache/blob"), b"c").unwrap();
    fs::write(root.join("var/log/syslog"), b"s").unwrap();

    // Whole root: everything but the export directory.
    let spec = fs_source("all", &root, vec![], vec![], false);
    let r = env.prepare(&spec).unwrap();
    let names = list(&artifact(&r));
    assert!(names.contains(&"etc/app/app.conf".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("export")), "the export dir must be excluded: {names:?}");

    // Includes (relative and absolute under root) and excludes.
    let spec = fs_source(
        "some",
        &root,
        vec!["etc/app".into(), root.join("home/u")],
        vec!["*.tmp".into(), "home/u/cache".into()],
        false,
    );
    let r = env.prepare(&spec).unwrap();
    let names = list(&artifact(&r));
    for want in ["etc", "etc/app", "etc/app/app.conf", "home", "home/u", "home/u/notes"] {
        assert!(names.contains(&want.to_string()), "missing {want}: {names:?}");
    }
    for not in ["etc/app/app.conf.tmp", "etc/other", "home/u/cache", "var", "export"] {
        assert!(!names.iter().any(|n| n == not || n.starts_with(&format!("{not}/"))), "{not} in {names:?}");
    }
}

#[test]
fn an_unreadable_root_fails_cleanly() {
    let env = Env::new("fs_missing");
    let spec = fs_source("gone", &env.td.join("does-not-exist"), vec![], vec![], false);
    let e = env.prepare(&spec).unwrap_err();
    assert_eq!(e.code(), "E_PREPARE", "{e}");
    assert!(e.to_string().contains("does-not-exist"), "{e}");
    assert!(crate::util::dir_names(&env.source_dir("gone")).is_empty());
}

/// Runs `f` on a thread whose effective capabilities lack
/// `CAP_DAC_OVERRIDE`/`CAP_DAC_READ_SEARCH` (inherited by the threads it
/// starts): the kernel then refuses a 0000 file to root as to anyone.
fn without_dac<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut caps = rustix::thread::capabilities(None).unwrap();
            caps.effective -=
                rustix::thread::CapabilitySet::DAC_OVERRIDE | rustix::thread::CapabilitySet::DAC_READ_SEARCH;
            rustix::thread::set_capabilities(None, caps).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn an_unreadable_file_is_a_client_side_reason_or_a_warning() {
    let env = Env::new("fs_unreadable");
    let root = env.td.join("tree");
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("ok.txt"), b"ok").unwrap();
    fs::write(root.join("sub/secret\nname"), b"secret").unwrap();
    chmod(&root.join("sub/secret\nname"), 0o000);
    let account = ferry_archive::current_account();

    let spec = fs_source("tree", &root, vec![], vec![], false);
    let e = without_dac(|| ferry_prepare::prepare_source(&spec, &env.ctx(), &|_: &Path| false)).unwrap_err();
    assert_eq!(e.code(), "E_SOURCE_UNREADABLE", "{e}");
    let msg = e.to_string();
    let shown = format!("{}/sub/secret\\nname", root.display());
    assert!(msg.contains(&shown), "absolute path, escaped: {msg}");
    assert!(msg.contains(&format!("account {account}")), "{msg}");
    assert!(crate::util::dir_names(&env.source_dir("tree")).is_empty(), "no artifact left");

    let mut spec = spec;
    if let SourceKind::Fs { unreadable, .. } = &mut spec.kind {
        *unreadable = ferry_archive::Unreadable::Skip;
    }
    let p = without_dac(|| ferry_prepare::prepare_source(&spec, &env.ctx(), &|_: &Path| false)).unwrap();
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    let w = &p.warnings[0];
    assert!(w.starts_with("source tree: 1 unreadable entry left out"), "{w}");
    assert!(w.contains(&shown) && w.contains(&format!("account {account}")), "{w}");
    assert!(w.bytes().all(|b| (0x20..0x7f).contains(&b)), "printable: {w}");
    let r = env.check(&spec, p.requests);
    assert_eq!(list(&artifact(&r)), ["ok.txt", "sub"]);
}

fn list(archive: &Path) -> Vec<String> {
    let f = fs::File::open(archive).unwrap();
    list_tar_zst(f, &ExtractPolicy::faithful())
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8_lossy(&e.path).trim_end_matches('/').to_string())
        .collect()
}

/// `mode = "tree"` (issue 10): the source's run writes `<stamp>.ftree`
/// and emits one `tree` request on the export endpoint whose root is the
/// source's root; old manifests are pruned like dumps.
#[test]
fn tree_mode_writes_a_manifest_and_a_tree_request() {
    let env = Env::new("prepare-fs-tree-mode");
    let root = env.td.join("tree");
    fs::create_dir_all(root.join("a")).unwrap();
    fs::write(root.join("a/f.txt"), b"hello\n").unwrap();
    let mut spec = fs_source("home", &root, vec![], vec![], false);
    if let SourceKind::Fs { tree_cache, .. } = &mut spec.kind {
        *tree_cache = Some(env.td.join("state/tree-cache/home"));
    }
    spec.keep = 1;
    assert_eq!(spec.kind.extension(), "ftree");
    let mut manifests = Vec::new();
    for _ in 0..2 {
        let p = ferry_prepare::prepare_source(&spec, &env.ctx(), &|_: &Path| false).unwrap();
        let stats = p.tree.expect("tree stats");
        assert_eq!((stats.entries, stats.files), (2, 1), "{stats:?}");
        assert_eq!(p.requests.len(), 1);
        let line = p.requests[0].to_line();
        assert_eq!(ferry_request::parse(line.as_bytes()).unwrap(), p.requests[0]);
        let ferry_request::Request::Tree(t) = &p.requests[0] else { panic!("not a tree request: {line}") };
        assert_eq!(t.root.path.as_str(), root.to_str().unwrap());
        assert_eq!((t.root.user.as_str(), t.root.host.as_str(), t.root.port), ("ferry", "client.example", Some(2222)));
        let path = PathBuf::from(t.manifest.path.as_str());
        assert_eq!(path.parent().unwrap(), env.source_dir("home"));
        assert_eq!(t.manifest.path.file_name(), format!("{}.ftree", t.stamp));
        assert_eq!(fs::metadata(&path).unwrap().len(), t.size);
        assert_eq!(ferry_tests::sha256_file(&path), t.sha256.as_str());
        // Finished long ago, so retention's grace period does not keep it.
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        fs::File::options().write(true).open(&path).unwrap().set_modified(day_ago).unwrap();
        manifests.push(path);
    }
    // keep = 1: the first manifest is gone, the second stays.
    assert!(!manifests[0].exists() && manifests[1].exists(), "{manifests:?}");
}
