//! Hostile archives (SECURITY.md B.5 AX-*, SF-12): each is refused with the
//! right reason code, nothing outside changes, nothing is published and no
//! staging directory is left (see `util::expect_refused`).

use std::fs;
use std::io::Write;

use ferry_archive::{ExtractPolicy, SymlinkPolicy, extract_tar_zst, list_tar_zst};

use crate::util::{RawTar, expect_ok, expect_refused, mode_of, zst};

fn any_links() -> ExtractPolicy {
    ExtractPolicy { symlinks: SymlinkPolicy::Any, ..ExtractPolicy::default() }
}

fn in_tree() -> ExtractPolicy {
    ExtractPolicy { symlinks: SymlinkPolicy::InTree, ..ExtractPolicy::default() }
}

#[test]
fn ax01_parent_directory_entries() {
    let a = RawTar::new().file(b"ok.txt", b"ok").file(b"../../x", b"pwn").zst();
    let e = expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_PATH");
    assert!(e.to_string().contains("../../x"), "names the entry: {e}");
    for name in [&b"a/../../x"[..], b"..", b"a/..", b"./../x"] {
        let a = RawTar::new().file(b"ok.txt", b"ok").file(name, b"pwn").zst();
        expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_PATH");
    }
    // Through a GNU long name and a PAX path too.
    let long = format!("{}/../../../x", "a".repeat(120));
    let a = RawTar::new().long_name(long.as_bytes()).file(b"short", b"pwn").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_PATH");
    let a = RawTar::new().pax(&[(b"path", b"../pax-escape")]).file(b"innocent", b"pwn").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_PATH");
}

#[test]
fn ax02_absolute_paths() {
    let canary = std::env::temp_dir().join(format!("ferry-canary-{}", std::process::id()));
    let canary_name = canary.join("x");
    for name in [&b"/etc/passwd"[..], b"//x", b"/./x", canary_name.as_os_str().as_encoded_bytes()] {
        let a = RawTar::new().file(b"ok.txt", b"ok").file(name, b"root::0:0::/:/bin/sh\n").zst();
        expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_PATH");
    }
    assert!(!canary.exists());
}

#[test]
fn ax03_symlinks_with_outside_targets() {
    // Under InTree (the hostile profile), links that leave the tree are
    // refused; the default keeps them verbatim (see symlinks.rs).
    for (name, target) in
        [(&b"link"[..], &b"/etc/shadow"[..]), (b"up", b"../../../.."), (b"a/up", b"../.."), (b"dotdot", b"..")]
    {
        let a = RawTar::new().dir(b"a").symlink(name, target).zst();
        expect_refused(&a, &in_tree(), "E_ARCHIVE_LINK");
        expect_refused(&a, &ExtractPolicy::hostile(), "E_ARCHIVE_LINK");
    }
    // Lexically fine per link, but escapes through another link.
    let a = RawTar::new().dir(b"d").symlink(b"d/b", b"..").symlink(b"e", b"d/b/..").zst();
    expect_refused(&a, &in_tree(), "E_ARCHIVE_LINK");
    // Same with the links in the other order.
    let a = RawTar::new().symlink(b"e", b"d/b/../x").dir(b"d").symlink(b"d/b", b"..").zst();
    expect_refused(&a, &in_tree(), "E_ARCHIVE_LINK");
    // Link loops are refused, not spun on.
    let a = RawTar::new().symlink(b"p", b"q/..").symlink(b"q", b"p/x").zst();
    expect_refused(&a, &in_tree(), "E_ARCHIVE_LINK");
    // Under Reject, every symlink is refused.
    let a = RawTar::new().file(b"f", b"").symlink(b"l", b"f").zst();
    let reject = ExtractPolicy { symlinks: SymlinkPolicy::Reject, ..ExtractPolicy::default() };
    expect_refused(&a, &reject, "E_ARCHIVE_LINK");
    // In-tree links are fine, dangling ones too.
    let a = RawTar::new()
        .dir(b"a")
        .file(b"a/f", b"f")
        .symlink(b"a/l", b"f")
        .symlink(b"a/up", b"../a/./f")
        .symlink(b"dangling", b"nowhere")
        .zst();
    let sb = expect_ok(&a, &in_tree());
    assert_eq!(fs::read_link(sb.dest.join("a/up")).unwrap().as_os_str(), "../a/./f");
    // Under Any the target is kept verbatim, and never followed.
    let a = RawTar::new().symlink(b"link", b"/etc/shadow").zst();
    let sb = expect_ok(&a, &any_links());
    assert_eq!(fs::read_link(sb.dest.join("link")).unwrap().as_os_str(), "/etc/shadow");
}

#[test]
fn ax04_writes_through_symlinked_directories() {
    // The symlink itself is refused under InTree.
    let a = RawTar::new().symlink(b"d", b"../outside").file(b"d/pwn.txt", b"pwn").zst();
    expect_refused(&a, &in_tree(), "E_ARCHIVE_LINK");
    // Under Any (the default), the link is allowed but nothing goes through it.
    expect_refused(&a, &any_links(), "E_ARCHIVE_LINK");
    let a = RawTar::new().symlink(b"symlink", b"..").file(b"symlink/exploit/foo", b"pwn").zst();
    expect_refused(&a, &in_tree(), "E_ARCHIVE_LINK");
    expect_refused(&a, &any_links(), "E_ARCHIVE_LINK");
    let a = RawTar::new().symlink(b"symlink", b"..").dir(b"symlink/exploit").zst();
    expect_refused(&a, &any_links(), "E_ARCHIVE_LINK");
    // RUSTSEC-2018-0002 shape: link entry, then a file of the same name.
    let a = RawTar::new().symlink(b"l", b"../outside/a.txt").file(b"l", b"overwritten").zst();
    expect_refused(&a, &in_tree(), "E_ARCHIVE_LINK");
    expect_refused(&a, &any_links(), "E_ARCHIVE_DUP");
}

#[test]
fn ax07_hard_links() {
    for target in [&b"/etc/passwd"[..], b"../../etc/passwd", b"../outside/a.txt", b"later.txt"] {
        let a = RawTar::new().hardlink(b"hl", target).file(b"later.txt", b"x").zst();
        expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_LINK");
    }
    // To a directory, a symlink, or through a symlinked parent.
    let a = RawTar::new().dir(b"d").hardlink(b"hl", b"d").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_LINK");
    let a = RawTar::new().file(b"f", b"f").symlink(b"s", b"f").hardlink(b"hl", b"s").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_LINK");
    // Disabled by policy.
    let a = RawTar::new().file(b"f", b"f").hardlink(b"hl", b"f").zst();
    let no = ExtractPolicy { hardlinks: false, ..ExtractPolicy::default() };
    expect_refused(&a, &no, "E_ARCHIVE_LINK");
    // A link to a file this archive wrote is fine.
    let sb = expect_ok(&a, &ExtractPolicy::default());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(sb.dest.join("hl")).unwrap().nlink(), 2);
}

#[test]
fn ax09_devices_and_fifos() {
    for (t, name) in [(b'3', &b"null"[..]), (b'4', b"sda"), (b'6', b"fifo")] {
        let a = RawTar::new().record(t, name, b"", 0o666, b"").zst();
        expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_TYPE");
        expect_refused(&a, &ExtractPolicy::hostile(), "E_ARCHIVE_TYPE");
    }
    // Sparse, volume label, unknown types.
    for t in [b'S', b'V', b'M', b'D', b'Z'] {
        let a = RawTar::new().record(t, b"x", b"", 0o644, b"").zst();
        expect_refused(&a, &ExtractPolicy::faithful(), "E_ARCHIVE_TYPE");
    }
    let a = RawTar::new().pax(&[(b"GNU.sparse.major", b"1")]).file(b"s", b"").zst();
    expect_refused(&a, &ExtractPolicy::faithful(), "E_ARCHIVE_TYPE");
}

#[test]
fn ax10_setuid_and_world_writable_modes() {
    let a = RawTar::new()
        .file_mode(b"suid", 0o4755, b"x")
        .file_mode(b"sgid", 0o2755, b"x")
        .file_mode(b"w777", 0o777, b"x")
        .file_mode(b"w666", 0o666, b"x")
        .record(b'5', b"sticky", b"", 0o1777, b"")
        .zst();
    let sb = expect_ok(&a, &ExtractPolicy::default());
    assert_eq!(mode_of(&sb.dest.join("suid")), 0o755);
    assert_eq!(mode_of(&sb.dest.join("sgid")), 0o755);
    assert_eq!(mode_of(&sb.dest.join("w777")), 0o777);
    assert_eq!(mode_of(&sb.dest.join("sticky")), 0o777);
    let sb = expect_ok(&a, &ExtractPolicy::hostile());
    assert_eq!(mode_of(&sb.dest.join("suid")), 0o755);
    assert_eq!(mode_of(&sb.dest.join("w777")), 0o755);
    assert_eq!(mode_of(&sb.dest.join("w666")), 0o644);
    assert_eq!(mode_of(&sb.dest.join("sticky")), 0o755);
}

fn xattr_names(p: &std::path::Path) -> Vec<String> {
    let mut buf = vec![0u8; 64 << 10];
    let n = rustix::fs::llistxattr(p, buf.as_mut_slice()).unwrap_or(0);
    buf[..n].split(|b| *b == 0).filter(|k| !k.is_empty()).map(|k| String::from_utf8_lossy(k).into_owned()).collect()
}

#[test]
fn ax12_xattrs_never_applied_unless_asked_and_then_user_only() {
    let a = RawTar::new()
        .pax(&[
            (b"SCHILY.xattr.security.capability", b"\x01\x00\x00\x02\xff\xff\xff\xff"),
            (b"SCHILY.xattr.system.posix_acl_access", b"\x02\x00\x00\x00"),
            (b"SCHILY.xattr.trusted.x", b"t"),
            (b"SCHILY.xattr.user.x", b"u"),
        ])
        .file_mode(b"bin", 0o755, b"#!/bin/sh\n")
        .zst();
    let sb = expect_ok(&a, &ExtractPolicy::default());
    let names = xattr_names(&sb.dest.join("bin"));
    for bad in ["security.capability", "system.posix_acl_access", "trusted.x", "user.x"] {
        assert!(!names.iter().any(|n| n == bad), "{bad} applied: {names:?}");
    }
    let asked = ExtractPolicy { xattrs: true, ..ExtractPolicy::default() };
    let sb = expect_ok(&a, &asked);
    let names = xattr_names(&sb.dest.join("bin"));
    for bad in ["security.capability", "system.posix_acl_access", "trusted.x"] {
        assert!(!names.iter().any(|n| n == bad), "{bad} applied: {names:?}");
    }
    // user.x only where the filesystem supports user xattrs.
    let _ = names.iter().any(|n| n == "user.x");
    let listed = list_tar_zst(a.as_slice(), &ExtractPolicy::default()).unwrap();
    assert_eq!(listed[0].xattrs.len(), 4);
}

#[test]
fn ax13_duplicates() {
    let cases: Vec<RawTar> = vec![
        {
            let mut t = RawTar::new();
            t.file(b"x", b"1").file(b"x", b"2");
            t
        },
        {
            let mut t = RawTar::new();
            t.file(b"x", b"1").dir(b"x");
            t
        },
        {
            let mut t = RawTar::new();
            t.dir(b"x").symlink(b"x", b"y");
            t
        },
        {
            let mut t = RawTar::new();
            t.symlink(b"x", b"y").file(b"x", b"2");
            t
        },
        {
            let mut t = RawTar::new();
            t.dir(b"x").dir(b"x/");
            t
        },
        {
            let mut t = RawTar::new();
            t.file(b"x", b"1").file(b"./x", b"2");
            t
        },
        {
            let mut t = RawTar::new();
            t.file(b"x", b"1").file(b"x/y", b"2");
            t
        },
        {
            let mut t = RawTar::new();
            t.dir(b"./").dir(b".");
            t
        },
    ];
    for t in cases {
        expect_refused(&t.zst(), &any_links(), "E_ARCHIVE_DUP");
    }
    // A directory described after its children is not a duplicate.
    let a = RawTar::new().file(b"d/f", b"f").record(b'5', b"d/", b"", 0o700, b"").zst();
    let sb = expect_ok(&a, &ExtractPolicy::default());
    assert_eq!(mode_of(&sb.dest.join("d")), 0o700);
}

#[test]
fn ax14_case_fold_and_normalisation_collisions() {
    let strict = ExtractPolicy::hostile();
    let a = RawTar::new().file(b"README", b"1").file(b"readme", b"2").zst();
    expect_refused(&a, &strict, "E_ARCHIVE_DUP");
    // Faithful to a host's own names when not strict.
    expect_ok(&a, &ExtractPolicy::default());
    let a = RawTar::new().file("d/\u{e9}".as_bytes(), b"nfc").file("d/e\u{301}".as_bytes(), b"nfd").zst();
    expect_refused(&a, &strict, "E_ARCHIVE_DUP");
    // CVE-2024-32002 shape: `A/x` then symlink `a`.
    let a = RawTar::new().file(b"A/x", b"x").symlink(b"a", b"A").zst();
    expect_refused(&a, &strict, "E_ARCHIVE_DUP");
    // Control characters, bidi controls and non-UTF-8 under strict names.
    for name in [&b"new\nline"[..], b"esc\x1b[31m", b"del\x7f", "bidi\u{202e}txt".as_bytes(), b"bad\xff"] {
        let a = RawTar::new().file(name, b"x").zst();
        expect_refused(&a, &strict, "E_ARCHIVE_PATH");
    }
}

#[test]
fn ax15_long_and_deep_names() {
    let comp = "c".repeat(300);
    let a = RawTar::new().long_name(comp.as_bytes()).file(b"short", b"x").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_PATH");
    let deep = vec!["a"; 10_000].join("/");
    let a = RawTar::new().long_name(deep.as_bytes()).file(b"short", b"x").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_PATH");
    let deep65 = vec!["a"; 65].join("/");
    let a = RawTar::new().long_name(deep65.as_bytes()).file(b"short", b"x").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_PATH");
    let long = vec!["b".repeat(200); 6].join("/");
    let a = RawTar::new().long_name(long.as_bytes()).file(b"short", b"x").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_PATH");
    // Within the limits: 255-byte component, 64 levels.
    let ok = format!("{}/{}", vec!["a"; 63].join("/"), "z".repeat(255));
    let a = RawTar::new().long_name(ok.as_bytes()).file(b"short", b"x").zst();
    expect_ok(&a, &ExtractPolicy::default());
}

#[test]
fn ax16_huge_extension_headers_are_not_buffered() {
    // A PAX header claiming 1 GiB, followed by nothing: refused on its
    // size before a byte of it is read.
    for t in [b'x', b'L', b'K', b'g'] {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..5].copy_from_slice(b"bomb!");
        h.set_entry_type(tar::EntryType::new(t));
        h.set_size(1 << 30);
        h.set_mode(0o644);
        h.set_cksum();
        let mut raw = h.as_bytes().to_vec();
        raw.extend_from_slice(&[0u8; 1024]);
        expect_refused(&zst(&raw), &ExtractPolicy::default(), "E_ARCHIVE_LIMIT");
    }
    // Many small extension records for one entry add up.
    let mut t = RawTar::new();
    let name = vec![b'n'; 40 << 10];
    t.long_name(&name);
    t.record(b'K', b"././@LongLink", b"", 0o644, &vec![b'k'; 40 << 10]);
    t.file(b"x", b"");
    expect_refused(&t.zst(), &ExtractPolicy::default(), "E_ARCHIVE_LIMIT");
}

/// A tar stream with one file of `size` zero bytes, compressed while
/// streaming (the zeros are never in memory).
fn zero_bomb(size: u64) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..4].copy_from_slice(b"zero");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    enc.write_all(h.as_bytes()).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        enc.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    enc.write_all(&[0u8; 1024]).unwrap();
    enc.finish().unwrap()
}

#[test]
fn ax18_compression_bombs() {
    let bomb = zero_bomb(256 << 20);
    assert!(bomb.len() < 64 << 10, "a few KiB: {}", bomb.len());
    let capped = ExtractPolicy { max_total_bytes: 64 << 20, max_ratio: None, ..ExtractPolicy::default() };
    let e = expect_refused(&bomb, &capped, "E_ARCHIVE_LIMIT");
    assert!(e.to_string().contains("max_total_bytes"), "{e}");
    let ratio = ExtractPolicy { max_ratio: Some(100), ..ExtractPolicy::default() };
    let e = expect_refused(&bomb, &ratio, "E_ARCHIVE_LIMIT");
    assert!(e.to_string().contains("ratio"), "{e}");
    // The hostile profile's ratio cap (200:1) stops it too.
    expect_refused(&bomb, &ExtractPolicy::hostile(), "E_ARCHIVE_LIMIT");
    // Per-file cap, checked on the header before any data.
    let small = ExtractPolicy { max_file_bytes: 1 << 20, max_ratio: None, ..ExtractPolicy::default() };
    let e = expect_refused(&zero_bomb(2 << 20), &small, "E_ARCHIVE_LIMIT");
    assert!(e.to_string().contains("max_file_bytes"), "{e}");
}

#[test]
fn ax18_zstd_window_above_the_default_limit_is_refused() {
    // A frame declaring a 2^31 window (what `zstd --long=31` writes); the
    // decoder keeps its default limit of 2^27 and refuses it up front.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    enc.window_log(31).unwrap();
    enc.long_distance_matching(true).unwrap();
    enc.write_all(&RawTar::new().file(b"x", b"x").finish()).unwrap();
    let frame = enc.finish().unwrap();
    // Frame header descriptor: no single-segment flag, so a window byte
    // follows; exponent 31 - 10 = 21 in its top five bits.
    assert_eq!(frame[4] & 0x20, 0, "not single-segment");
    assert_eq!(frame[5] >> 3, 21, "declares a 2^31 window");
    let e = expect_refused(&frame, &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    eprintln!("{e}");
}

#[test]
fn ax19_too_many_entries() {
    let mut t = RawTar::new();
    for i in 0..101 {
        t.file(format!("f{i}").as_bytes(), b"");
    }
    let few = ExtractPolicy { max_entries: 100, ..ExtractPolicy::default() };
    let e = expect_refused(&t.zst(), &few, "E_ARCHIVE_LIMIT");
    assert!(e.to_string().contains("max_entries"), "{e}");
}

#[test]
fn ax23_good_entries_then_a_bad_one_publishes_nothing() {
    let mut t = RawTar::new();
    t.dir(b"d");
    for i in 0..1000 {
        t.file(format!("d/f{i:04}").as_bytes(), format!("content {i}").as_bytes());
    }
    t.symlink(b"planted", b"../outside");
    t.record(b'5', b"locked", b"", 0o000, b"");
    t.file(b"locked/inner", b"x");
    t.file(b"../escape", b"pwn");
    expect_refused(&t.zst(), &any_links(), "E_ARCHIVE_PATH");
}

#[test]
fn sf12_file_is_not_what_its_name_says() {
    let tar = RawTar::new().file(b"ok", b"ok").finish();
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ("xz", b"\xfd7zXZ\x00\x00\x04".to_vec()),
        ("zip", b"PK\x03\x04\x14\x00\x00\x00".to_vec()),
        ("script", b"#!/bin/sh\nrm -rf /\n".to_vec()),
        ("plain tar", tar.clone()),
        ("empty", Vec::new()),
        ("skippable frame first", {
            let mut v = vec![0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0];
            v.extend(zst(&tar));
            v
        }),
    ];
    for (what, input) in inputs {
        let e = expect_refused(&input, &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
        eprintln!("{what}: {e}");
    }
    // A tar followed by garbage, inside the frame.
    let mut t = tar.clone();
    t.extend_from_slice(b"garbage after the end of the archive");
    expect_refused(&zst(&t), &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    // A tar followed by a second tar, inside the frame.
    let mut t = tar.clone();
    t.extend(RawTar::new().file(b"smuggled", b"x").finish());
    expect_refused(&zst(&t), &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    // A second zstd frame (with a tar, or with garbage) after the first.
    let mut z = zst(&tar);
    z.extend(zst(&RawTar::new().file(b"smuggled", b"x").finish()));
    expect_refused(&z, &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    let mut z = zst(&tar);
    z.extend_from_slice(b"\x28\xb5\x2f\xfdgarbage");
    expect_refused(&z, &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    let mut z = zst(&tar);
    z.extend_from_slice(b"trailing text");
    expect_refused(&z, &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    // A truncated frame, and a tar without its end-of-archive marker.
    let z = zst(&tar);
    expect_refused(&z[..z.len() - 3], &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    let unterminated = RawTar::new().file(b"ok", b"ok").buf.clone();
    expect_refused(&zst(&unterminated), &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    // Corrupt header checksum; data shorter than the header says.
    let mut bad = tar.clone();
    bad[0] ^= 1;
    expect_refused(&zst(&bad), &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    let mut short = RawTar::new().file(b"f", &[1u8; 2000]).buf.clone();
    short.truncate(512 + 1000);
    expect_refused(&zst(&short), &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    // Zero padding after the marker (GNU tar's 10 KiB records) is fine.
    let mut padded = tar.clone();
    padded.extend_from_slice(&[0u8; 10240 - 2048]);
    expect_ok(&zst(&padded), &ExtractPolicy::default());
}

#[test]
fn ambiguous_extension_records_are_refused() {
    // PAX path and GNU long name for one entry: two readers could disagree.
    let a = RawTar::new().long_name(b"one").pax(&[(b"path", b"two")]).file(b"x", b"").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    // PAX size disagreeing with the header (RUSTSEC-2026-0068 class).
    let a = RawTar::new().pax(&[(b"size", b"0")]).file(b"x", b"data").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    // Two PAX headers, a dangling extension record, a malformed record.
    let a = RawTar::new().pax(&[(b"a", b"1")]).pax(&[(b"b", b"2")]).file(b"x", b"").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    let a = RawTar::new().file(b"x", b"").long_name(b"nothing follows").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    let a = RawTar::new().record(b'x', b"p", b"", 0o644, b"9 a=b\n").file(b"x", b"").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    // A global header that changes later entries.
    let a = RawTar::new().record(b'g', b"g", b"", 0o644, b"12 path=x/y\n").file(b"x", b"").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
    // Non-file entries with data.
    let a = RawTar::new().record(b'5', b"d", b"", 0o755, b"data").zst();
    expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_FORMAT");
}

#[test]
fn hostile_profile_extracts_a_clean_archive() {
    let a = RawTar::new()
        .dir(b"./")
        .dir(b"docs")
        .file("docs/r\u{e9}sum\u{e9}.txt".as_bytes(), b"cv")
        .file_mode(b"docs/run.sh", 0o700, b"#!/bin/sh\n")
        .symlink(b"latest", b"docs/run.sh")
        .zst();
    let sb = expect_ok(&a, &ExtractPolicy::hostile());
    assert_eq!(mode_of(&sb.dest.join("docs/run.sh")), 0o755);
    assert_eq!(mode_of(&sb.dest), 0o755);
    let got = fs::read(sb.dest.join("docs/r\u{e9}sum\u{e9}.txt")).unwrap();
    assert_eq!(got, b"cv");
    // Same input twice into the same dest: the second is refused, the
    // first result untouched.
    let err = extract_tar_zst(a.as_slice(), &sb.dest, &ExtractPolicy::hostile()).unwrap_err();
    assert_eq!(err.code(), "E_STORE");
}

#[test]
fn error_messages_escape_entry_names() {
    let a = RawTar::new().file(b"../\n\x1b[2Jfake log line\xff", b"x").zst();
    let e = expect_refused(&a, &ExtractPolicy::default(), "E_ARCHIVE_PATH");
    let msg = e.to_string();
    assert!(msg.contains("../\\n\\x1B[2Jfake log line\\xFF"), "{msg}");
    assert!(msg.bytes().all(|b| (0x20..0x7f).contains(&b)), "printable ASCII only: {msg:?}");
}
