use std::os::unix::fs::{FileTypeExt, MetadataExt};

use ferry_archive::manifest::{Compare, diff as tree_diff, manifest as tree_manifest};

use super::*;
use crate::diff::{DiffOptions, diff};
use crate::manifest::{Limits, Mtime, Options, parse};
use crate::scan::{ScanOptions, scan};
use crate::snapshot::tests::download;
use crate::snapshot::{build, read_manifest};
use crate::testutil::*;

/// Scan → manifest text → parse → download into the store → snapshot.
/// Returns the manifest as the node holds it, the store and the snapshot.
fn backup(t: &tempfile::TempDir, src: &Path) -> (Manifest, Store, PathBuf) {
    let scanned = scan(&ScanOptions { xattrs: true, ..ScanOptions::new(src) }).unwrap();
    let text = scanned.manifest.to_bytes();
    let m = parse(&text, &Limits::default()).unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    download(&m, &store, src);
    let dest = t.path().join("snap");
    build(&m, &store, &dest).unwrap();
    (m, store, dest)
}

#[test]
fn the_odd_tree_round_trips_through_store_snapshot_and_restore() {
    let t = tempdir();
    let src = t.path().join("src");
    odd_tree(&src);
    let (_, store, dest) = backup(&t, &src);
    // Restore from what the node keeps: the snapshot's own manifest.
    let m = read_manifest(&dest, &Limits::default()).unwrap();
    let to = t.path().join("restored");
    let stats = restore(&m, &store, &to, &RestorePolicy::faithful()).unwrap();
    assert_eq!(stats.special, 1, "the fifo");
    assert_eq!(stats.hardlinks, 2);
    assert!(stats.not_created.is_empty(), "{:?}", stats.not_created);

    // ferry-archive's tree comparison: contents byte for byte, types,
    // modes, owners, mtimes (directories too), hard links, user xattrs.
    let cmp = Compare { owner: is_root(), ..Compare::default() };
    let d = tree_diff(&tree_manifest(&src).unwrap(), &tree_manifest(&to).unwrap(), &cmp);
    assert!(d.is_empty(), "restored tree differs:\n{}", d.join("\n"));
    // And our own, stricter one: nanosecond mtimes, owner names.
    let again = scan(&ScanOptions { xattrs: true, ..ScanOptions::new(&to) }).unwrap().manifest;
    let mut opts = DiffOptions::everything();
    opts.xattrs = true;
    let d = diff(&m, &again, &opts);
    assert!(d.is_empty(), "{}", d.to_text());
    assert!(std::fs::symlink_metadata(to.join("fifo")).unwrap().file_type().is_fifo());
    assert_eq!(std::fs::read_link(to.join("abs-link")).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(std::fs::metadata(to.join("suid")).unwrap().mode() & 0o7777, 0o4755);
}

#[test]
fn the_default_policy_strips_what_is_not_asked_for() {
    let t = tempdir();
    let src = t.path().join("src");
    odd_tree(&src);
    let (m, store, _) = backup(&t, &src);
    let to = t.path().join("restored");
    let stats = restore(&m, &store, &to, &RestorePolicy::default()).unwrap();
    assert_eq!(stats.not_created, [(b"fifo".to_vec(), "FIFOs and devices are created only when asked")]);
    assert!(!to.join("fifo").exists());
    assert_eq!(std::fs::metadata(to.join("suid")).unwrap().mode() & 0o7777, 0o755, "setuid stripped");
    assert!(rustix::fs::getxattr(to.join("plain.txt"), "user.comment", &mut [0u8; 64]).is_err(), "no xattrs");
    let me = rustix::process::geteuid().as_raw();
    assert_eq!(std::fs::metadata(to.join("dup1")).unwrap().uid(), me, "owners not restored");
    // ferry-archive's policy maps onto the same answers.
    assert_eq!(RestorePolicy::from(&ferry_archive::ExtractPolicy::default()), RestorePolicy::default());
    let f = RestorePolicy::from(&ferry_archive::ExtractPolicy::faithful());
    assert_eq!(f, RestorePolicy::faithful());
}

#[test]
fn owners_are_restored_by_name_first_then_by_id() {
    if !is_root() {
        eprintln!("skipped: owners can only be restored as root");
        return;
    }
    let t = tempdir();
    let store = Store::open(t.path().join("store")).unwrap();
    store.put(&b"x"[..], 1, &Sha256::of(b"x")).unwrap();
    let nobody = Names::load().uid(b"nobody").expect("this host has a nobody user");
    let file = |path: &[u8], uid: u32, user: Option<&[u8]>| Entry {
        path: path.to_vec(),
        kind: Kind::File { size: 1, sha256: Sha256::of(b"x") },
        mode: 0o644,
        uid,
        gid: uid,
        user: user.map(<[u8]>::to_vec),
        group: None,
        mtime: Mtime::default(),
        link: None,
        xattrs: Vec::new(),
    };
    let m = Manifest {
        options: Options::default(),
        entries: vec![
            file(b"by-name", 12345, Some(b"nobody")),
            file(b"no-name", 23456, None),
            file(b"unknown-name", 34567, Some(b"no-such-user-here")),
        ],
    };
    let to = t.path().join("r1");
    restore(&m, &store, &to, &RestorePolicy::faithful()).unwrap();
    let uid = |p: &str| std::fs::metadata(to.join(p)).unwrap().uid();
    assert_eq!((uid("by-name"), uid("no-name"), uid("unknown-name")), (nobody, 23456, 34567));
    let to2 = t.path().join("r2");
    restore(&m, &store, &to2, &RestorePolicy { numeric_owner: true, ..RestorePolicy::faithful() }).unwrap();
    assert_eq!(std::fs::metadata(to2.join("by-name")).unwrap().uid(), 12345);
}

#[test]
fn a_non_empty_target_is_refused_unless_asked_and_nothing_is_overwritten() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src, b"d/a", b"from the backup");
    let (m, store, _) = backup(&t, &src);
    let to = t.path().join("target");
    write(&to, b"mine", b"keep me");
    assert!(matches!(restore(&m, &store, &to, &RestorePolicy::default()), Err(RestoreError::NotEmpty(_))));
    assert_eq!(std::fs::read_dir(&to).unwrap().count(), 1);
    let into = RestorePolicy { into_non_empty: true, ..RestorePolicy::default() };
    restore(&m, &store, &to, &into).unwrap();
    assert_eq!(std::fs::read(to.join("d/a")).unwrap(), b"from the backup");
    assert_eq!(std::fs::read(to.join("mine")).unwrap(), b"keep me");
    // A second restore meets `d/a` and refuses to overwrite it.
    std::fs::write(to.join("d/a"), b"changed since").unwrap();
    assert!(matches!(restore(&m, &store, &to, &into), Err(RestoreError::Io { .. })));
    assert_eq!(std::fs::read(to.join("d/a")).unwrap(), b"changed since");
}

#[test]
fn nothing_is_written_through_a_symlink_in_the_target() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src, b"etc/passwd", b"restored content");
    let (m, store, _) = backup(&t, &src);
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let to = t.path().join("target");
    std::fs::create_dir(&to).unwrap();
    std::os::unix::fs::symlink(&outside, to.join("etc")).unwrap();
    let into = RestorePolicy { into_non_empty: true, ..RestorePolicy::default() };
    assert!(matches!(restore(&m, &store, &to, &into), Err(RestoreError::Io { .. })));
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn hostile_manifests_in_memory_and_corrupt_stores_are_refused() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src, b"f", b"content");
    let (m, store, _) = backup(&t, &src);
    let mut bad = m.clone();
    bad.entries[0].path = b"../f".to_vec();
    let to = t.path().join("r");
    assert!(matches!(restore(&bad, &store, &to, &RestorePolicy::default()), Err(RestoreError::Invalid(_))));
    assert!(!t.path().join("f").exists() && !to.exists());
    // A stored content that no longer matches its digest.
    let d = *m.entries[0].sha256().unwrap();
    std::fs::set_permissions(store.path(&d), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(store.path(&d), b"CONTENT").unwrap();
    assert!(matches!(restore(&m, &store, &to, &RestorePolicy::default()), Err(RestoreError::Content { .. })));
}
