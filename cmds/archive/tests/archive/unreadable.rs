//! Entries the archiving account may not read: a client-side reason
//! (`E_SOURCE_UNREADABLE`) naming the absolute path and the account, or,
//! when asked, an archive without them and a list of what was left out.
//!
//! Tests run as root, and root reads everything, so the archive is made on
//! a thread whose effective capabilities lack `CAP_DAC_OVERRIDE` and
//! `CAP_DAC_READ_SEARCH` (threads it starts inherit that): the kernel's own
//! permission check then refuses a `0000` file, as it would for any account.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ferry_archive::{CreateOptions, CreateStats, ExtractPolicy, Unreadable, create_tar_zst, list_tar_zst};
use rustix::thread::CapabilitySet;

fn without_dac<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut caps = rustix::thread::capabilities(None).unwrap();
            caps.effective -= CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH;
            rustix::thread::set_capabilities(None, caps).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// `a/ok.txt`, `a/secret` (0000), `locked/` (0000, with a file),
/// `noexec/` (readable but not searchable, so its entries cannot be
/// examined: left out whole), `z.txt`.
fn tree(root: &Path) {
    fs::create_dir_all(root.join("a")).unwrap();
    fs::write(root.join("a/ok.txt"), b"ok").unwrap();
    fs::write(root.join("a/secret"), b"secret").unwrap();
    chmod(&root.join("a/secret"), 0o000);
    fs::create_dir(root.join("locked")).unwrap();
    fs::write(root.join("locked/inside"), b"inside").unwrap();
    chmod(&root.join("locked"), 0o000);
    fs::create_dir(root.join("noexec")).unwrap();
    fs::write(root.join("noexec/f1"), b"1").unwrap();
    fs::write(root.join("noexec/f2"), b"2").unwrap();
    chmod(&root.join("noexec"), 0o644);
    fs::write(root.join("z.txt"), b"z").unwrap();
}

fn unlock(root: &Path) {
    chmod(&root.join("locked"), 0o755);
    chmod(&root.join("noexec"), 0o755);
}

fn account() -> String {
    let uid = rustix::process::geteuid().as_raw();
    let name = fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
        })
        .unwrap();
    format!("{name} (uid {uid})")
}

fn create(opts: &CreateOptions) -> Result<(Vec<u8>, CreateStats), ferry_archive::ArchiveError> {
    let mut out = Vec::new();
    let stats = without_dac(|| create_tar_zst(opts, &mut out))?;
    Ok((out, stats))
}

#[test]
fn an_unreadable_file_fails_with_its_absolute_path_and_the_account() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("src");
    tree(&root);
    let opts = CreateOptions { root: root.clone(), zstd_workers: 0, ..CreateOptions::default() };
    let e = create(&opts).unwrap_err();
    assert_eq!(e.code(), "E_SOURCE_UNREADABLE", "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("E_SOURCE_UNREADABLE: "), "{msg}");
    assert!(msg.contains(&format!("{} cannot be read", root.join("a/secret").display())), "{msg}");
    assert!(msg.contains(&format!("account {}", account())), "{msg}");
    assert!(msg.contains("Permission denied"), "{msg}");
    // A directory it cannot open is named the same way.
    chmod(&root.join("a/secret"), 0o644);
    let e = create(&opts).unwrap_err();
    assert!(e.to_string().contains(&format!("{} cannot be read", root.join("locked").display())), "{e}");
    unlock(&root);
}

#[test]
fn skip_leaves_unreadable_entries_out_and_lists_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("src");
    tree(&root);
    let opts =
        CreateOptions { root: root.clone(), zstd_workers: 0, unreadable: Unreadable::Skip, ..CreateOptions::default() };
    let (archive, stats) = create(&opts).unwrap();
    let listed: Vec<Vec<u8>> = stats.unreadable_paths.clone();
    assert_eq!(listed, [&b"a/secret"[..], b"locked", b"noexec"], "{stats:?}");
    assert_eq!(stats.unreadable, 3);
    let names: Vec<String> = list_tar_zst(archive.as_slice(), &ExtractPolicy::default())
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.path).unwrap())
        .collect();
    assert_eq!(names, ["a", "a/ok.txt", "z.txt"], "only what could be read");
    // An include below a directory that cannot be searched is left out
    // (the directory itself is recorded: its own metadata could be read).
    let inc = CreateOptions { include: vec!["locked/inside".into(), "z.txt".into()], ..opts.clone() };
    let (archive, stats) = create(&inc).unwrap();
    assert_eq!(stats.unreadable_paths, [b"locked/inside".to_vec()]);
    let n = list_tar_zst(archive.as_slice(), &ExtractPolicy::default()).unwrap();
    assert_eq!(n.iter().map(|e| e.path.as_slice()).collect::<Vec<_>>(), [&b"locked"[..], b"z.txt"]);
    // Passing through a directory needs search permission only.
    chmod(&root.join("locked"), 0o111);
    let (archive, stats) = create(&inc).unwrap();
    assert_eq!(stats.unreadable, 0, "{stats:?}");
    let n = list_tar_zst(archive.as_slice(), &ExtractPolicy::default()).unwrap();
    assert_eq!(n.iter().map(|e| e.path.as_slice()).collect::<Vec<_>>(), [&b"locked"[..], b"locked/inside", b"z.txt"]);
    // The root itself must be readable, even when skipping.
    let locked = CreateOptions { root: root.join("locked"), ..opts };
    let e = create(&locked).unwrap_err();
    assert_eq!(e.code(), "E_SOURCE_UNREADABLE", "{e}");
    assert!(e.to_string().contains(&root.join("locked").display().to_string()), "{e}");
    unlock(&root);
}
