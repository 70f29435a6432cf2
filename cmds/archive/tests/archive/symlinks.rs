//! Symlinks are restored faithfully by default — relative, dangling,
//! leaving the tree, absolute — because extraction never follows one: an
//! entry below a link of the archive is refused, whatever the link points
//! to, and nothing outside the destination changes (`util::expect_ok` and
//! `util::expect_refused` compare everything around it).

use std::fs;
use std::path::Path;

use ferry_archive::{EntryKind, ExtractPolicy, list_tar_zst};

use crate::util::{RawTar, Sandbox, expect_ok, expect_refused};

/// Targets a real host's tree holds, none of which names anything inside
/// the restored tree.
const OUTSIDE_TARGETS: &[&[u8]] = &[
    b"../nonexistent",
    b"../../../../nonexistent/deeper",
    b"a/../../nonexistent",
    b"..",
    b"../..",
    b"../outside/a.txt",
    b"/etc/shadow",
    b"/",
    b"/nonexistent/x",
];

fn assert_link(dest: &Path, name: &str, target: &[u8]) {
    let p = dest.join(name);
    let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(md.file_type().is_symlink(), "{name} is a symlink");
    assert_eq!(fs::read_link(&p).unwrap().as_os_str().as_encoded_bytes(), target, "{name}: target kept verbatim");
}

#[test]
fn links_out_of_the_tree_and_dangling_links_restore_verbatim() {
    for target in OUTSIDE_TARGETS {
        let shown = String::from_utf8_lossy(target);
        // At the root and in a subdirectory, alone and beside files.
        let a = RawTar::new().file(b"f", b"f").symlink(b"link", target).dir(b"sub").symlink(b"sub/link", target).zst();
        let sb = expect_ok(&a, &ExtractPolicy::default());
        assert_link(&sb.dest, "link", target);
        assert_link(&sb.dest, "sub/link", target);
        assert_eq!(fs::read(sb.dest.join("f")).unwrap(), b"f", "{shown}");
        let listed = list_tar_zst(a.as_slice(), &ExtractPolicy::default()).unwrap();
        let l = listed.iter().find(|e| e.path == b"link").unwrap();
        assert_eq!((l.kind, l.link_target.as_deref()), (EntryKind::Symlink, Some(*target)), "{shown}");
    }
}

#[test]
fn a_link_to_the_sandbox_itself_is_restored_and_not_written_through() {
    let sb = Sandbox::new();
    let outside = sb.work.join("outside");
    let abs = outside.as_os_str().as_encoded_bytes().to_vec();
    let a = RawTar::new().symlink(b"out", &abs).zst();
    let ok = expect_ok(&a, &ExtractPolicy::default());
    assert_link(&ok.dest, "out", &abs);
    // The same link followed by writes below it: refused, `outside` intact.
    let a = RawTar::new().symlink(b"out", &abs).file(b"out/a.txt", b"pwn").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_LINK");
    assert_eq!(fs::read(outside.join("a.txt")).unwrap(), b"sentinel a");
}

/// The hostile shapes: a link, then entries that would go through it. Each
/// is refused and nothing outside changes; the same link alone is restored.
#[test]
fn writes_through_links_are_refused_and_lone_links_restored() {
    let mut targets: Vec<&[u8]> = OUTSIDE_TARGETS.to_vec();
    // In-tree targets too: going through a link is refused even when it
    // would land inside the tree.
    targets.extend_from_slice(&[b"sub", b".", b"sub/.."]);
    for target in targets {
        let shown = String::from_utf8_lossy(target).into_owned();
        let alone = RawTar::new().dir(b"sub").symlink(b"link", target).zst();
        let sb = expect_ok(&alone, &ExtractPolicy::default());
        assert_link(&sb.dest, "link", target);
        for (what, tar) in [
            ("file below", RawTar::new().dir(b"sub").symlink(b"link", target).file(b"link/passwd", b"pwn").zst()),
            ("deep file below", RawTar::new().symlink(b"link", target).file(b"link/x/y/pwn", b"pwn").zst()),
            ("directory below", RawTar::new().symlink(b"link", target).dir(b"link/d").zst()),
            ("link below", RawTar::new().symlink(b"link", target).symlink(b"link/l", b"/etc").zst()),
            (
                "hard link below",
                RawTar::new().file(b"f", b"f").symlink(b"link", target).hardlink(b"link/h", b"f").zst(),
            ),
            ("hard link through", RawTar::new().symlink(b"link", target).hardlink(b"h", b"link/shadow").zst()),
        ] {
            let e = expect_refused(&tar, &ExtractPolicy::default(), "E_ARCHIVE_LINK");
            assert!(e.to_string().contains("link"), "{shown} {what}: names the entry: {e}");
            expect_refused(&tar, &ExtractPolicy::faithful(), "E_ARCHIVE_LINK");
        }
        // Replacing the link by a file or directory of the same name.
        for tar in [
            RawTar::new().symlink(b"link", target).file(b"link", b"pwn").zst(),
            RawTar::new().symlink(b"link", target).dir(b"link").zst(),
        ] {
            expect_refused(&tar, &ExtractPolicy::default(), "E_ARCHIVE_DUP");
        }
    }
}
