//! What the client's archives hold (AX), met when an administrator
//! restores them: paths out of the tree, links and hard links that lead
//! out, devices, setuid bits and extended attributes, duplicate entries,
//! over-long names, pax headers, decompression bombs, and files that are
//! not one zstd-compressed tar. The node stores each archive (it only
//! checks its digest); `ferry-node restore` refuses the hostile ones with
//! their reason, leaving nothing anywhere, and what it accepts is inert.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use ferry_tests::fleet::{Node, run, text};
use ferry_tests::hash_tree;

use super::downloads::{assert_no_partial_download, fleet, put};
use super::kit::{
    Ep, Fleet, assert_classes_cover, assert_done, assert_printable, canary, case_classes, in_class, now_stamp, rq, scan,
};

/// A tar stream written header by header (C13), hostile shapes included.
#[derive(Default)]
struct Tar(Vec<u8>);

const REG: u8 = b'0';
const HARD: u8 = b'1';
const SYM: u8 = b'2';
const CHR: u8 = b'3';
const BLK: u8 = b'4';
const DIR: u8 = b'5';
const FIFO: u8 = b'6';

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    if v >= 8u64.pow(w as u32) {
        // GNU base-256 for numbers that do not fit.
        field.fill(0);
        field[0] = 0x80;
        let n = field.len();
        field[n - 8..].copy_from_slice(&v.to_be_bytes());
        return;
    }
    let s = format!("{v:0w$o}");
    field[..w].copy_from_slice(s.as_bytes());
    field[w] = 0;
}

fn header(name: &[u8], kind: u8, size: u64, mode: u32, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[148..156].fill(b' ');
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    octal(&mut h[329..337], if kind == CHR { 1 } else { 0 });
    octal(&mut h[337..345], if kind == CHR { 3 } else { 0 });
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

impl Tar {
    fn record(&mut self, name: &[u8], kind: u8, mode: u32, link: &[u8], data: &[u8]) -> &mut Tar {
        if name.len() > 100 {
            let mut long = name.to_vec();
            long.push(0);
            self.record(b"././@LongLink", b'L', 0o644, b"", &long);
        }
        self.0.extend_from_slice(&header(name, kind, data.len() as u64, mode, link));
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
        self.record(name.as_bytes(), REG, 0o644, b"", data)
    }

    fn mode(&mut self, name: &str, mode: u32, kind: u8) -> &mut Tar {
        self.record(name.as_bytes(), kind, mode, b"", b"")
    }

    fn dir(&mut self, name: &str) -> &mut Tar {
        self.record(name.as_bytes(), DIR, 0o755, b"", b"")
    }

    fn link(&mut self, name: &str, kind: u8, target: &str) -> &mut Tar {
        self.record(name.as_bytes(), kind, 0o777, target.as_bytes(), b"")
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tar {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = [b" ", k.as_bytes(), b"=", v, b"\n"].concat();
            let mut len = body.len() + 1;
            while format!("{len}").len() + body.len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}").as_bytes());
            data.extend_from_slice(&body);
        }
        self.record(b"PaxHeaders/x", b'x', 0o644, b"", &data)
    }

    fn end(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.0);
        v.extend_from_slice(&[0u8; 1024]);
        v
    }
}

/// One zstd frame of raw blocks (no compression needed to be valid).
fn zstd_frame(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x50];
    let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(128 << 10).collect() };
    for (i, c) in chunks.iter().enumerate() {
        let last = u32::from(i + 1 == chunks.len());
        let h = last | ((c.len() as u32) << 3);
        out.extend_from_slice(&h.to_le_bytes()[..3]);
        out.extend_from_slice(c);
    }
    out
}

/// A zstd frame whose tar declares a 7 GiB file and whose RLE blocks
/// expand 4 bytes to 128 KiB each: `blocks` × 128 KiB of zeros from
/// `blocks` × 4 bytes (AX-18).
fn zstd_bomb(blocks: usize) -> Vec<u8> {
    let mut out = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x50];
    let h = header(b"zeros.img", REG, 7 << 30, 0o644, b"");
    out.extend_from_slice(&((512u32) << 3).to_le_bytes()[..3]);
    out.extend_from_slice(&h);
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let bh = last | (1 << 1) | ((128u32 << 10) << 3);
        out.extend_from_slice(&bh.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

fn restore(node: &Node, source: &str, to: &Path, extra: &[&str]) -> Output {
    run(node.cmd().args(["restore", "host-a", source, "--to", to.to_str().unwrap()]).args(extra))
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// (id, archive, "OK" or the reason `restore` refuses it with, extra
/// `restore` arguments).
type Case = (&'static str, Vec<u8>, &'static str, Vec<&'static str>);

/// Every hostile archive; `out_abs` is a directory outside the node's
/// data (the canary directory the [`super::kit::Guard`] watches).
fn table(out_abs: &str) -> Vec<Case> {
    let out_abs = out_abs.to_owned();

    let mut ax: Vec<(&str, Vec<u8>, &str, Vec<&str>)> = Vec::new();
    let mut t = Tar::default();
    t.dir("d/").file("d/a.txt", b"hello\n").link("d/l", SYM, "a.txt").link("d/h", HARD, "d/a.txt");
    t.record(b"d/run.sh", REG, 0o755, b"", b"#!/bin/sh\n");
    ax.push(("ax-ok", zstd_frame(&t.end()), "OK", vec![]));
    let mut t = Tar::default();
    t.file("ok.txt", b"ok\n").file("../../pwn.txt", b"pwn\n");
    ax.push(("ax01-dotdot", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.file("a/../../pwn.txt", b"pwn\n");
    ax.push(("ax01-inner-dotdot", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let abs = canary("ax02").display().to_string();
    let mut t = Tar::default();
    t.file(&abs, b"pwn\n");
    ax.push(("ax02-absolute", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.file("//x", b"pwn\n");
    ax.push(("ax02-double-slash", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.file("/./x", b"pwn\n");
    ax.push(("ax02-slash-dot", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.link("link", SYM, "/etc/passwd");
    ax.push(("ax03-symlink-absolute", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec!["--symlinks", "in-tree"]));
    let mut t = Tar::default();
    t.link("up", SYM, "../../../../data/host-b");
    ax.push(("ax03-symlink-up", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec!["--symlinks", "in-tree"]));
    let mut t = Tar::default();
    t.link("x", SYM, ".").link("y", SYM, "x/..");
    ax.push(("ax03-symlink-chain", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec!["--symlinks", "in-tree"]));
    let mut t = Tar::default();
    t.link("d", SYM, &out_abs).file("d/pwn.txt", b"pwn\n");
    let through = zstd_frame(&t.end());
    ax.push(("ax04-write-through", through.clone(), "E_ARCHIVE_LINK", vec![]));
    ax.push(("ax04-write-through-allowed", through, "E_ARCHIVE_LINK", vec!["--allow-absolute-symlinks"]));
    let mut t = Tar::default();
    t.dir("sub/").link("s", SYM, "sub").file("s/pwn.txt", b"pwn\n");
    ax.push(("ax04-through-in-tree-link", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec![]));
    let mut t = Tar::default();
    t.link("symlink", SYM, "..").file("symlink/exploit/foo/bar", b"pwn\n");
    ax.push(("ax04-rustsec-2021-0080", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec!["--allow-absolute-symlinks"]));
    let mut t = Tar::default();
    t.file("t", b"t\n").link("l", SYM, "t").file("l", b"replaced\n");
    ax.push(("ax04-link-then-file", zstd_frame(&t.end()), "E_ARCHIVE_DUP", vec![]));
    let mut t = Tar::default();
    t.link("hl", HARD, "/etc/passwd");
    ax.push(("ax07-hardlink-absolute", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec![]));
    let mut t = Tar::default();
    t.link("hl", HARD, "../../../../../../etc/passwd");
    ax.push(("ax07-hardlink-up", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec![]));
    let mut t = Tar::default();
    t.link("hl", HARD, &format!("{out_abs}/secret.txt"));
    ax.push(("ax07-hardlink-outside", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec!["--allow-absolute-symlinks"]));
    let mut t = Tar::default();
    t.link("hl", HARD, "later.txt").file("later.txt", b"x\n");
    ax.push(("ax07-hardlink-forward", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec![]));
    for (id, kind) in [("ax09-chardev", CHR), ("ax09-blockdev", BLK), ("ax09-fifo", FIFO), ("ax09-unknown-type", b'Z')]
    {
        let mut t = Tar::default();
        t.mode("node", 0o666, kind);
        ax.push((id, zstd_frame(&t.end()), "E_ARCHIVE_TYPE", vec![]));
    }
    let mut t = Tar::default();
    t.record(b"suid", REG, 0o4755, b"", b"#!/bin/sh\n")
        .record(b"sgid", REG, 0o2755, b"", b"x")
        .record(b"sticky/", DIR, 0o1777, b"", b"")
        .record(b"world", REG, 0o777, b"", b"x");
    ax.push(("ax10-setuid", zstd_frame(&t.end()), "OK", vec![]));
    let mut t = Tar::default();
    t.pax(&[("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02\xff\xff\xff\xff"), ("SCHILY.xattr.user.x", b"y")])
        .record(b"cap", REG, 0o755, b"", b"x");
    ax.push(("ax12-xattrs", zstd_frame(&t.end()), "OK", vec![]));
    let mut t = Tar::default();
    t.file("a", b"1").file("a", b"2");
    ax.push(("ax13-dup-file", zstd_frame(&t.end()), "E_ARCHIVE_DUP", vec![]));
    let mut t = Tar::default();
    t.file("a", b"1").dir("a/");
    ax.push(("ax13-file-then-dir", zstd_frame(&t.end()), "E_ARCHIVE_DUP", vec![]));
    let mut t = Tar::default();
    t.dir("d/").link("d", SYM, "x");
    ax.push(("ax13-dir-then-symlink", zstd_frame(&t.end()), "E_ARCHIVE_DUP", vec![]));
    let mut t = Tar::default();
    t.file(&"c".repeat(300), b"x");
    ax.push(("ax15-long-component", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.file(&format!("{}f", "a/".repeat(100)), b"x");
    ax.push(("ax15-deep", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.file(&format!("{}f", "abcdefghi/".repeat(110)), b"x");
    ax.push(("ax15-long-path", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.pax(&[("path", b"../../pwn.txt")]).file("innocent.txt", b"pwn\n");
    ax.push(("ax16-pax-path", zstd_frame(&t.end()), "E_ARCHIVE_PATH", vec![]));
    let mut t = Tar::default();
    t.pax(&[("comment", &vec![b'x'; 200 << 10])]).file("f", b"x");
    ax.push(("ax16-pax-huge", zstd_frame(&t.end()), "E_ARCHIVE_LIMIT", vec![]));
    ax.push(("ax18-bomb", zstd_bomb(8000), "E_ARCHIVE_LIMIT", vec![]));
    let mut w = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0xA8];
    w.extend_from_slice(&(1u32 | (1 << 1) | ((128u32 << 10) << 3)).to_le_bytes()[..3]);
    w.push(0);
    ax.push(("ax18-window", w, "E_ARCHIVE_FORMAT", vec![]));
    let inner = inner();
    let mut t = Tar::default();
    t.file("nested.tar.zst", &inner);
    ax.push(("ax18-nested", zstd_frame(&t.end()), "OK", vec![]));
    let mut t = Tar::default();
    for i in 0..200 {
        t.file(&format!("good/{i:03}.txt"), b"good\n");
    }
    t.link("good/zz-link", SYM, "../..").file("../late.txt", b"pwn\n");
    ax.push(("ax23-partial", zstd_frame(&t.end()), "E_ARCHIVE_LINK", vec!["--symlinks", "in-tree"]));
    ax.push(("sf12-gzip", vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3], "E_ARCHIVE_FORMAT", vec![]));
    ax.push((
        "sf12-script",
        format!("#!/bin/sh\ntouch {}\n", canary("sf12").display()).into_bytes(),
        "E_ARCHIVE_FORMAT",
        vec![],
    ));
    let mut g = zstd_frame(&Tar::default().file("a", b"a").end());
    g.extend_from_slice(b"trailing garbage");
    ax.push(("sf12-trailing-garbage", g, "E_ARCHIVE_FORMAT", vec![]));
    let mut g = zstd_frame(&Tar::default().file("a", b"a").end());
    g.extend_from_slice(&zstd_frame(&Tar::default().file("b", b"b").end()));
    ax.push(("sf12-two-frames", g, "E_ARCHIVE_FORMAT", vec![]));
    let mut tt = Tar::default().file("a", b"a").end();
    tt.extend_from_slice(&Tar::default().file("smuggled", b"b").end());
    ax.push(("sf12-tar-after-end", zstd_frame(&tt), "E_ARCHIVE_FORMAT", vec![]));
    // MR-03: repository configuration inside an archive never runs.
    let mut t = Tar::default();
    t.dir("proj/.git/hooks/")
        .file(
            "proj/.git/config",
            format!(
                "[core]\n\tfsmonitor = touch {c}\n\tsshCommand = touch {c}\n\tpager = touch {c}\n[protocol \"ext\"]\n\tallow = always\n[remote \"origin\"]\n\turl = ext::sh -c touch% {c}\n",
                c = canary("mr03").display()
            )
            .as_bytes(),
        )
        .file("proj/.git/HEAD", b"ref: refs/heads/master\n")
        .record(b"proj/.git/hooks/post-checkout", REG, 0o755, b"", format!("#!/bin/sh\ntouch {}\n", canary("mr03h").display()).as_bytes())
        .file("proj/README", b"readme\n");
    ax.push(("mr03-git-config", zstd_frame(&t.end()), "OK", vec![]));
    ax
}

/// The nested archive of `ax18-nested`.
fn inner() -> Vec<u8> {
    zstd_frame(&Tar::default().file("inner.txt", b"nested\n").end())
}

case_classes! {
    run restored;
    /// An ordinary archive restores as it was.
    ax_an_ordinary_archive_restores_as_it_was: ["ax-ok"] then the_ordinary_tree_is_intact;
    /// AX-01/AX-02: `..`, absolute and odd paths.
    ax01_ax02_paths_out_of_the_tree: ["ax01-", "ax02-"];
    /// AX-03: symlinks pointing out of the tree (with `--symlinks in-tree`).
    ax03_symlinks_out_of_the_tree: ["ax03-"];
    /// AX-04: entries written through a symlink.
    ax04_writes_through_symlinks: ["ax04-"];
    /// AX-07: hard links to files outside or not yet in the tree.
    ax07_hard_links: ["ax07-"];
    /// AX-09: devices, fifos and unknown entry types.
    ax09_devices_fifos_and_unknown_types: ["ax09-"];
    /// AX-10: setuid, setgid, sticky and world-writable modes.
    ax10_setuid_setgid_and_sticky_bits: ["ax10-"] then no_mode_bit_survives;
    /// AX-12: extended attributes (file capabilities).
    ax12_extended_attributes: ["ax12-"] then no_xattr_is_applied;
    /// AX-13: one path twice, as the same or another type.
    ax13_duplicate_entries: ["ax13-"];
    /// AX-15: over-long components and paths, deep trees.
    ax15_long_and_deep_paths: ["ax15-"];
    /// AX-16: pax headers that rename an entry or are huge.
    ax16_pax_headers: ["ax16-"];
    /// AX-18: decompression bombs, huge windows, nested archives.
    ax18_bombs_windows_and_nested_archives: ["ax18-"] then nested_archives_stay_opaque;
    /// AX-23: a refusal late in the archive publishes no partial tree.
    ax23_no_partial_tree: ["ax23-"];
    /// SF-12: gzip, a script, trailing garbage, two frames, data after the
    /// tar's end.
    sf12_not_one_zstd_tar: ["sf12-"];
    /// MR-03: repository configuration inside an archive never runs.
    mr03_repository_config_in_an_archive: ["mr03-"] then the_node_runs_nothing_inside;
}

/// Store the class's archives (one push, one scan), then restore each:
/// refusals leave nothing, anywhere.
fn restored(test: &str, prefixes: &[&str]) -> Option<Fleet> {
    let f = fleet(test)?;
    let (node, a, td) = (&f.node, &f.a, &f.td);
    let outside = node.base.join("outside-canary");
    let e = Ep::of(a);
    let ex = a.base.join("export");
    let stamp = now_stamp();
    let ax: Vec<Case> = table(&outside.display().to_string()).into_iter().filter(|c| in_class(c.0, prefixes)).collect();
    let mut files = Vec::new();
    for (id, data, _, _) in &ax {
        let (path, sha, len) = put(&ex, &e.export, &format!("ax/{id}.tar.zst"), data);
        files.push(rq(id, e.sftp(&stamp, &path, &sha, len, id)));
    }
    f.q.send(&files);
    scan(node, "host-a");
    for (id, _, _, _) in &ax {
        assert_done(node, "host-a", id);
    }
    assert_no_partial_download(node);
    f.guard.check("downloads");

    let restores = td.mkdir("restores");
    let sentinel = td.mkdir("restores-sentinel");
    fs::write(sentinel.join("keep"), "keep\n").unwrap();
    let sentinel_before = hash_tree(&sentinel);
    let mut restored_ok = Vec::new();
    for (id, _, want, extra) in &ax {
        let to = restores.join(id);
        let before = listing(&restores);
        let out = restore(node, id, &to, extra);
        let t = text(&out);
        assert_printable(&format!("restore {id}"), t.as_bytes());
        if *want == "OK" {
            assert!(out.status.success(), "{id}: restore failed: {t}");
            restored_ok.push(id.to_string());
        } else {
            assert!(!out.status.success(), "{id}: restore of a hostile archive succeeded: {t}");
            assert!(t.contains(want), "{id}: expected {want}: {t}");
            assert!(!to.exists(), "{id}: a partial tree was published");
            assert_eq!(listing(&restores), before, "{id}: something was left beside the destination");
        }
        assert_eq!(hash_tree(&sentinel), sentinel_before, "{id}: the sentinel changed");
        f.guard.check(id);
    }
    assert_eq!(restored_ok.len(), ax.iter().filter(|c| c.2 == "OK").count(), "{restored_ok:?}");
    Some(f)
}

fn restores(f: &Fleet) -> PathBuf {
    f.td.join("restores")
}

/// What the ordinary archive produced is what it holds.
fn the_ordinary_tree_is_intact(f: &Fleet) {
    let ok_tree = restores(f).join("ax-ok");
    assert_eq!(fs::read(ok_tree.join("d/a.txt")).unwrap(), b"hello\n");
    assert_eq!(fs::read_link(ok_tree.join("d/l")).unwrap(), Path::new("a.txt"));
}

/// What the accepted archives produced is inert: no setuid, setgid or
/// sticky bit.
fn no_mode_bit_survives(f: &Fleet) {
    let restores = restores(f);
    let modes = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode();
    for f in ["suid", "sgid", "sticky", "world"] {
        let m = modes(&restores.join("ax10-setuid").join(f));
        assert_eq!(m & 0o7000, 0, "{f}: mode {m:o} keeps setuid/setgid/sticky");
    }
}

fn no_xattr_is_applied(f: &Fleet) {
    let cap = restores(f).join("ax12-xattrs/cap");
    let mut names = vec![0u8; 1024];
    let n = rustix::fs::llistxattr(&cap, &mut names).unwrap_or(0);
    assert_eq!(n, 0, "extended attributes were applied: {:?}", String::from_utf8_lossy(&names[..n]));
}

fn nested_archives_stay_opaque(f: &Fleet) {
    let (restores, inner) = (restores(f), inner());
    assert_eq!(fs::read(restores.join("ax18-nested/nested.tar.zst")).unwrap(), inner, "nested archives stay opaque");
    assert!(!restores.join("ax18-nested/inner.txt").exists());
}

/// MR-03: the node runs nothing inside restored or stored trees.
fn the_node_runs_nothing_inside(f: &Fleet) {
    for args in [vec!["verify"], vec!["list"], vec!["find", "--client", "host-a"], vec!["check"]] {
        let _ = run(f.node.cmd().args(&args));
    }
    assert!(restores(f).join("mr03-git-config/proj/.git/config").exists());
    f.guard.check("after the restores");
}

/// The table and the tests agree; five archives restore, each under 8M.
#[test]
fn every_archive_case_is_in_exactly_one_class() {
    let ax = table("/srv/node/outside-canary");
    let ids: Vec<&str> = ax.iter().map(|c| c.0).collect();
    assert_classes_cover(&ids, CLASSES);
    assert_eq!(ax.iter().filter(|c| c.2 == "OK").count(), 5);
    assert!(ax.iter().all(|(_, d, _, _)| d.len() < 8 << 20));
}
