use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn file(path: &[u8], size: u64) -> Entry {
    Entry {
        path: path.to_vec(),
        kind: Kind::File { size, sha256: Sha256::of(path) },
        mode: 0o644,
        uid: 0,
        gid: 0,
        user: Some(b"root".to_vec()),
        group: Some(b"root".to_vec()),
        mtime: Mtime { sec: 1_733_300_000, nsec: 123_456_789 },
        link: None,
        xattrs: Vec::new(),
    }
}

fn dir(path: &[u8]) -> Entry {
    Entry { kind: Kind::Dir, mode: 0o755, ..file(path, 0) }
}

// ---------------------------------------------------------------------------
// Round trip

fn random_bytes(rng: &mut StdRng, min: usize, max: usize, ok: impl Fn(u8) -> bool) -> Vec<u8> {
    let n = rng.random_range(min..=max);
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        // Mostly printable, sometimes anything: escapes must round-trip.
        let b = if rng.random_bool(0.7) { rng.random_range(0x20..0x7f) } else { rng.random() };
        if ok(b) {
            v.push(b);
        }
    }
    v
}

fn random_name(rng: &mut StdRng) -> Vec<u8> {
    loop {
        let n = random_bytes(rng, 1, 24, |b| b != 0 && b != b'/');
        if n != b"." && n != b".." {
            return n;
        }
    }
}

fn random_entry(rng: &mut StdRng, path: Vec<u8>, is_dir: bool, xattrs: bool) -> Entry {
    let kind = if is_dir {
        Kind::Dir
    } else {
        match rng.random_range(0..6) {
            0 | 1 => Kind::File { size: rng.random_range(0..1u64 << 40), sha256: Sha256(rng.random()) },
            2 => Kind::Symlink { target: random_bytes(rng, 1, 60, |b| b != 0) },
            3 => Kind::Fifo,
            4 => Kind::Socket,
            _ => {
                let r = Rdev { major: rng.random(), minor: rng.random() };
                if rng.random_bool(0.5) { Kind::CharDev(r) } else { Kind::BlockDev(r) }
            }
        }
    };
    let mut xs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if xattrs {
        for _ in 0..rng.random_range(0..3) {
            xs.push((random_bytes(rng, 1, 12, |b| b != 0), random_bytes(rng, 0, 20, |_| true)));
        }
        xs.sort();
        xs.dedup_by(|a, b| a.0 == b.0);
    }
    let name = |rng: &mut StdRng| rng.random_bool(0.8).then(|| random_bytes(rng, 1, 10, |b| b != 0));
    Entry {
        path,
        kind,
        mode: rng.random_range(0..=0o7777),
        uid: rng.random(),
        gid: rng.random(),
        user: name(rng),
        group: name(rng),
        mtime: Mtime { sec: rng.random(), nsec: rng.random_range(0..1_000_000_000) },
        link: None,
        xattrs: xs,
    }
}

/// A random valid manifest: a random tree of odd names, every type, and
/// hard-link groups whose members share their inode data.
fn random_manifest(rng: &mut StdRng, n: usize) -> Manifest {
    let options = Options { xattrs: rng.random_bool(0.5) };
    let mut dirs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut seen = HashSet::new();
    let mut entries = Vec::new();
    while entries.len() < n {
        let parent = dirs[rng.random_range(0..dirs.len())].clone();
        let mut path = parent.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&random_name(rng));
        if !seen.insert(path.clone()) {
            continue;
        }
        let is_dir = rng.random_bool(0.3);
        if is_dir {
            dirs.push(path.clone());
        }
        entries.push(random_entry(rng, path, is_dir, options.xattrs));
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    // Hard-link groups: copy a member's inode data to a few others.
    let others: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].kind != Kind::Dir).collect();
    let mut group_of: Vec<Option<usize>> = vec![None; entries.len()];
    for g in 0..others.len() / 4 {
        let lead = others[rng.random_range(0..others.len())];
        if group_of[lead].is_some() {
            continue;
        }
        group_of[lead] = Some(g);
        for _ in 0..rng.random_range(1..3) {
            let m = others[rng.random_range(0..others.len())];
            if group_of[m].is_none() {
                group_of[m] = Some(g);
                let path = std::mem::take(&mut entries[m].path);
                entries[m] = Entry { path, ..entries[lead].clone() };
            }
        }
    }
    let mut count = std::collections::HashMap::new();
    for g in group_of.iter().flatten() {
        *count.entry(*g).or_insert(0) += 1;
    }
    let mut number = std::collections::HashMap::new();
    for (i, g) in group_of.iter().enumerate() {
        if let Some(g) = g
            && count[g] > 1
        {
            let next = number.len() as u64 + 1;
            entries[i].link = Some(*number.entry(*g).or_insert(next));
        }
    }
    Manifest { options, entries }
}

#[test]
fn parse_of_write_is_identity() {
    let limits = Limits::default();
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.random_range(0..60);
        let m = random_manifest(&mut rng, n);
        m.check(&limits).unwrap_or_else(|e| panic!("seed {seed}: generated manifest invalid: {e}"));
        let text = m.to_bytes();
        assert!(text.iter().all(|b| *b == b'\n' || (0x20..=0x7e).contains(b)), "seed {seed}: not printable ASCII");
        let back =
            parse(&text, &limits).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", String::from_utf8_lossy(&text)));
        assert_eq!(back, m, "seed {seed}");
        assert_eq!(back.to_bytes(), text, "seed {seed}: write(parse(t)) != t");
        let streamed = read(&text[..], &limits).unwrap();
        assert_eq!(streamed, m);
    }
}

#[test]
fn example_line_and_trailer() {
    let mut l = file(b"etc/motd copy", 12);
    l.kind = Kind::File { size: 12, sha256: Sha256([0xab; 32]) };
    let m = Manifest { options: Options::default(), entries: vec![dir(b"etc"), l] };
    let text = String::from_utf8(m.to_bytes()).unwrap();
    let want = format!(
        "ferry-tree 1\n\
         d path=etc mode=0755 uid=0 gid=0 user=root group=root mtime=1733300000.123456789\n\
         f path=etc/motd%20copy mode=0644 uid=0 gid=0 user=root group=root mtime=1733300000.123456789 size=12 sha256={}\n\
         end 2 12\n",
        "ab".repeat(32)
    );
    assert_eq!(text, want);
}

#[test]
fn writer_refuses_unsorted_and_stray_xattrs() {
    let mut w = Writer::new(Vec::new(), Options::default()).unwrap();
    w.entry(&file(b"b", 1)).unwrap();
    assert_eq!(w.entry(&file(b"a", 1)).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(w.entry(&file(b"b", 1)).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    let mut x = file(b"c", 1);
    x.xattrs.push((b"user.a".to_vec(), b"1".to_vec()));
    assert_eq!(w.entry(&x).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn large_manifest_round_trips() {
    // 200,000 entries: 2,000 directories of 99 files. Not a timing test
    // (the figure is in the crate's report); it shows the parser holds.
    let mut m = Manifest::default();
    for d in 0..2000u32 {
        let dp = format!("dir{d:05}").into_bytes();
        m.entries.push(dir(&dp));
        for f in 0..99u32 {
            let mut p = dp.clone();
            p.extend_from_slice(format!("/file {f:03}.txt").as_bytes());
            m.entries.push(file(&p, u64::from(f)));
        }
    }
    let text = m.to_bytes();
    let t = std::time::Instant::now();
    let back = parse(&text, &Limits::default()).unwrap();
    eprintln!("parsed {} entries ({} bytes) in {:?}", back.entries.len(), text.len(), t.elapsed());
    assert_eq!(back.entries.len(), 200_000);
    assert_eq!(back, m);
}

// ---------------------------------------------------------------------------
// Hostile manifests: each refusal class

const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn f(path: &str, rest: &str) -> String {
    format!("f path={path} mode=0644 uid=0 gid=0 mtime=0.000000000 size=0 sha256={SHA}{rest}")
}

fn d(path: &str) -> String {
    format!("d path={path} mode=0755 uid=0 gid=0 mtime=0.000000000")
}

fn l(path: &str, target: &str) -> String {
    format!("l path={path} mode=0777 uid=0 gid=0 mtime=0.000000000 target={target}")
}

/// A manifest of `lines` with a correct trailer (counts computed the way
/// the format defines them).
fn doc(lines: &[String]) -> Vec<u8> {
    let bytes: u64 = lines
        .iter()
        .filter(|l| l.starts_with("f "))
        .filter_map(|l| l.split(' ').find_map(|t| t.strip_prefix("size=")).and_then(|s| s.parse::<u64>().ok()))
        .fold(0u64, u64::saturating_add);
    let mut s = String::from("ferry-tree 1\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str(&format!("end {} {bytes}\n", lines.len()));
    s.into_bytes()
}

fn refusal_with(text: &[u8], limits: &Limits) -> ManifestError {
    let e = parse(text, limits).expect_err("must be refused");
    let shown = e.to_string();
    assert!(shown.bytes().all(|b| (0x20..0x7f).contains(&b)), "error is not printable ASCII: {shown:?}");
    assert!(shown.starts_with(e.code()), "{shown}");
    // The streaming reader agrees.
    match read(text, limits) {
        Err(ReadError::Refused(r)) => assert_eq!(r, e),
        other => panic!("read disagrees: {other:?}"),
    }
    e
}

fn refusal(text: &[u8]) -> ManifestError {
    refusal_with(text, &Limits::default())
}

fn assert_refused(text: &[u8], want: Refusal, line: u64) {
    let e = refusal(text);
    assert_eq!((e.refusal, e.line), (want, line), "{e} in\n{}", String::from_utf8_lossy(text));
}

#[test]
fn the_base_document_is_accepted() {
    let m = parse(&doc(&[d("a"), f("a/b", " link=1"), f("a/c", " link=1"), l("a/l", "/etc")]), &Limits::default());
    assert_eq!(m.unwrap().entries.len(), 4);
}

#[test]
fn refuses_bad_header_options_and_lines() {
    assert_refused(b"ferry-tree 2\nend 0 0\n", Refusal::Header, 1);
    assert_refused(b"FERRY-TREE 1\nend 0 0\n", Refusal::Header, 1);
    assert_refused(b"ferry-tree 1\nxattrs 0\nend 0 0\n", Refusal::BadOption, 2);
    assert_refused(b"ferry-tree 1\nxattrs 1\nxattrs 1\nend 0 0\n", Refusal::BadOption, 3);
    assert_refused(b"ferry-tree 1\ncolour 1\nend 0 0\n", Refusal::BadOption, 2);
    assert_refused(b"ferry-tree 1\n\nend 0 0\n", Refusal::BadOption, 2);
    let long = doc(&[f(&"a".repeat(200), "")]);
    let e = refusal_with(&long, &Limits { max_line_bytes: 100, ..Limits::default() });
    assert_eq!((e.refusal, e.line), (Refusal::LineTooLong, 2));
}

#[test]
fn no_line_limit_means_no_limit() {
    // `usize::MAX` once wrapped the read cap to 0 (every manifest empty).
    let text = doc(&[f(&"a".repeat(200), "")]);
    let unlimited = Limits { max_entries: u64::MAX, max_total_bytes: u64::MAX, max_line_bytes: usize::MAX };
    assert_eq!(parse(&text, &unlimited).unwrap().entries.len(), 1);
}

#[test]
fn refuses_non_canonical_bytes_and_encodings() {
    assert_refused(&doc(&[f("a\x1b[31m", "")]), Refusal::Encoding, 2);
    assert_refused(&doc(&[f("caf\u{e9}", "")]), Refusal::Encoding, 2);
    assert_refused(&doc(&[f("a%0a", "")]), Refusal::Encoding, 2);
    assert_refused(&doc(&[f("%41", "")]), Refusal::Encoding, 2);
    assert_refused(&doc(&[f("a%", "")]), Refusal::Encoding, 2);
    assert_refused(b"ferry-tree 1\r\nend 0 0\n", Refusal::Encoding, 1);
    // Escaped forms are fine.
    parse(&doc(&[f("a%0Ab%20c%FF", "")]), &Limits::default()).unwrap();
}

#[test]
fn refuses_fields_missing_misplaced_or_unknown() {
    let no_mode = format!("f path=a uid=0 gid=0 mtime=0.000000000 size=0 sha256={SHA}");
    assert_refused(&doc(&[no_mode]), Refusal::Field, 2);
    let swapped = format!("f path=a mode=0644 gid=0 uid=0 mtime=0.000000000 size=0 sha256={SHA}");
    assert_refused(&doc(&[swapped]), Refusal::Field, 2);
    assert_refused(&doc(&[f("a", " ")]), Refusal::Field, 2);
    assert_refused(&doc(&[f("a", "").replace(" uid", "  uid")]), Refusal::Field, 2);
    assert_refused(&doc(&[f("a", " target=x")]), Refusal::Field, 2);
    assert_refused(&doc(&[d("a") + " link=1"]), Refusal::Field, 2);
    assert_refused(&doc(&[f("a", " xattr=user.a:1")]), Refusal::Field, 2);
    assert_refused(&doc(&[f("a", " link=1 link=1")]), Refusal::Field, 2);
    assert_refused(&doc(&[f("a", " colour=red")]), Refusal::UnknownField, 2);
    assert_refused(&doc(&[f("a", "").replace("mode=", "perm=")]), Refusal::UnknownField, 2);
    assert_refused(&doc(&[f("a", ""), "x path=b".into()]), Refusal::Field, 3);
    assert_refused(&doc(&[f("a", ""), "".into()]), Refusal::Field, 3);
    assert_refused(&doc(&[f("a", ""), "xattrs 1".into()]), Refusal::Field, 3);
}

#[test]
fn refuses_malformed_values() {
    for (from, to) in [
        ("mode=0644", "mode=644"),
        ("mode=0644", "mode=0944"),
        ("uid=0", "uid=00"),
        ("uid=0", "uid=4294967296"),
        ("mtime=0.000000000", "mtime=0"),
        ("mtime=0.000000000", "mtime=-0.000000000"),
        ("size=0", "size=-1"),
        ("size=0", "size=01"),
        ("sha256=e3b0", "sha256=E3B0"),
    ] {
        assert_refused(&doc(&[f("a", "").replacen(from, to, 1)]), Refusal::Value, 2);
    }
    assert_refused(&doc(&[f("a", "").replace(SHA, &SHA[1..])]), Refusal::Value, 2);
    assert_refused(&doc(&[f("a", "").replace(" mtime", " user= mtime")]), Refusal::Value, 2);
    assert_refused(&doc(&[l("a", "")]), Refusal::Value, 2);
    assert_refused(&doc(&[f("a", " link=0")]), Refusal::Value, 2);
    let unsorted = "ferry-tree 1\nxattrs 1\n".to_string() + &f("a", " xattr=user.b:1 xattr=user.a:1") + "\nend 1 0\n";
    assert_refused(unsorted.as_bytes(), Refusal::Value, 3);
    let sorted =
        "ferry-tree 1\nxattrs 1\n".to_string() + &f("a", " xattr=user.a:1 xattr=user.b%3Ax:%00") + "\nend 1 0\n";
    let m = parse(sorted.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(m.entries[0].xattrs[1], (b"user.b:x".to_vec(), b"\0".to_vec()));
    let rdev = "c path=tty mode=0620 uid=0 gid=5 mtime=0.000000000 rdev=4";
    assert_refused(&doc(&[rdev.into()]), Refusal::Value, 2);
}

#[test]
fn refuses_missing_or_wrong_trailers_and_garbage() {
    let good = doc(&[f("a", "").replace("size=0", "size=5")]);
    assert_refused(&good[..good.len() - "end 1 5\n".len()], Refusal::Truncated, 3);
    assert_refused(&good[..good.len() - 1], Refusal::Truncated, 3);
    assert_refused(b"", Refusal::Truncated, 1);
    let text = String::from_utf8(good.clone()).unwrap();
    assert_refused(text.replace("end 1 5", "end 2 5").as_bytes(), Refusal::Trailer, 3);
    assert_refused(text.replace("end 1 5", "end 1 4").as_bytes(), Refusal::Trailer, 3);
    assert_refused(text.replace("end 1 5", "end 1").as_bytes(), Refusal::Trailer, 3);
    assert_refused(text.replace("end 1 5", "end 1 5 ").as_bytes(), Refusal::Trailer, 3);
    assert_refused(&[good.as_slice(), b"\n"].concat(), Refusal::TrailingGarbage, 4);
    assert_refused(&[good.as_slice(), b"f path=b"].concat(), Refusal::TrailingGarbage, 4);
}

#[test]
fn refuses_unsafe_paths() {
    let cases: &[(&str, Refusal)] = &[
        ("/etc/passwd", Refusal::Absolute),
        ("..", Refusal::DotDot),
        ("a/../b", Refusal::DotDot),
        (".", Refusal::DotComponent),
        ("./a", Refusal::DotComponent),
        ("a/./b", Refusal::DotComponent),
        ("", Refusal::EmptyComponent),
        ("a//b", Refusal::EmptyComponent),
        ("a/", Refusal::EmptyComponent),
        ("a%00b", Refusal::Nul),
        ("a%2Fb", Refusal::SlashInName),
        (&"n".repeat(256), Refusal::NameTooLong),
    ];
    for (path, want) in cases {
        assert_refused(&doc(&[d("a"), f(path, "")]), *want, 3);
    }
    parse(&doc(&[f(&"n".repeat(255), "")]), &Limits::default()).unwrap();
    let long = vec!["x".repeat(250); 17].join("/");
    assert_refused(&doc(&[f(&long, "")]), Refusal::PathTooLong, 2);
    assert_refused(&doc(&[l("t", "a%00b")]), Refusal::Nul, 2);
}

#[test]
fn refuses_paths_below_symlinks_files_and_nothing() {
    assert_refused(&doc(&[l("a", "/etc"), f("a/passwd", "")]), Refusal::ParentNotDir, 3);
    assert_refused(&doc(&[f("a", ""), f("a/b", "")]), Refusal::ParentNotDir, 3);
    assert_refused(&doc(&[f("a/b", "")]), Refusal::ParentNotDir, 2);
    assert_refused(&doc(&[d("a"), f("a/b/c", "")]), Refusal::ParentNotDir, 3);
    // A sibling sorting between a directory and its children is fine.
    parse(&doc(&[d("a"), f("a%20b", ""), f("a/c", "")]), &Limits::default()).unwrap();
}

#[test]
fn refuses_duplicates_and_disorder() {
    assert_refused(&doc(&[f("a", ""), f("a", "")]), Refusal::Duplicate, 3);
    assert_refused(&doc(&[d("a"), f("a", "")]), Refusal::Duplicate, 3);
    assert_refused(&doc(&[f("b", ""), f("a", "")]), Refusal::Unsorted, 3);
    // Raw byte order: `a b` (0x20) sorts before `a/` (0x2f) and `a%FF` last.
    assert_refused(&doc(&[f("a%FF", ""), f("a", "")]), Refusal::Unsorted, 3);
}

#[test]
fn refuses_bad_hard_link_groups() {
    assert_refused(&doc(&[f("a", " link=1"), l("b", "x") + " link=1"]), Refusal::LinkMixedTypes, 3);
    let five = f("b", " link=1").replace("size=0", "size=5");
    assert_refused(&doc(&[f("a", " link=1"), five]), Refusal::LinkDisagree, 3);
    let other_digest = f("b", " link=1").replace(SHA, &"0".repeat(64));
    assert_refused(&doc(&[f("a", " link=1"), other_digest]), Refusal::LinkDisagree, 3);
    let other_mode = f("b", " link=1").replace("mode=0644", "mode=0755");
    assert_refused(&doc(&[f("a", " link=1"), other_mode]), Refusal::LinkDisagree, 3);
    assert_refused(&doc(&[f("a", " link=2"), f("b", " link=2")]), Refusal::LinkNumbering, 2);
    assert_refused(&doc(&[f("a", " link=1"), f("b", " link=1"), f("c", " link=3")]), Refusal::LinkNumbering, 4);
    assert_refused(&doc(&[f("a", " link=1"), f("b", "")]), Refusal::LinkSingle, 2);
    assert_refused(&doc(&[f("a", " link=1"), f("b", " link=1"), f("c", " link=2")]), Refusal::LinkSingle, 4);
    // A directory in a group, first or joining: `link=` is no field of a
    // directory line (and `check` refuses one built in memory, below); a
    // file joined by a FIFO.
    assert_refused(&doc(&[d("a") + " link=1", d("b") + " link=1"]), Refusal::Field, 2);
    assert_refused(&doc(&[f("a", " link=1"), d("b") + " link=1"]), Refusal::Field, 3);
    let m = Manifest {
        entries: vec![Entry { link: Some(1), ..file(b"a", 0) }, Entry { link: Some(1), ..dir(b"b") }],
        ..Manifest::default()
    };
    assert_eq!(m.check(&Limits::default()).unwrap_err().refusal, Refusal::LinkMixedTypes);
    let fifo = "p path=b mode=0644 uid=0 gid=0 mtime=0.000000000 link=1".to_owned();
    assert_refused(&doc(&[f("a", " link=1"), fifo]), Refusal::LinkMixedTypes, 3);
    // A symlink group whose members point at different targets.
    assert_refused(&doc(&[l("a", "x") + " link=1", l("b", "y") + " link=1"]), Refusal::LinkDisagree, 3);
    // Groups of any non-directory type are fine when they agree.
    parse(&doc(&[l("a", "x") + " link=1", l("b", "x") + " link=1"]), &Limits::default()).unwrap();
}

#[test]
fn refuses_more_than_the_limits() {
    let three = doc(&[f("a", ""), f("b", ""), f("c", "")]);
    let e = refusal_with(&three, &Limits { max_entries: 2, ..Limits::default() });
    assert_eq!((e.refusal, e.line), (Refusal::TooManyEntries, 4));
    let big = doc(&[f("a", "").replace("size=0", "size=60"), f("b", "").replace("size=0", "size=50")]);
    let e = refusal_with(&big, &Limits { max_total_bytes: 100, ..Limits::default() });
    assert_eq!((e.refusal, e.line), (Refusal::TooManyBytes, 3));
    let huge =
        doc(&[f("a", "").replace("size=0", "size=18446744073709551615"), f("b", "").replace("size=0", "size=1")]);
    let e = refusal_with(&huge, &Limits::default());
    assert_eq!(e.refusal, Refusal::TooManyBytes);
}

#[test]
fn check_applies_the_same_rules_in_memory() {
    let mut m = Manifest { options: Options::default(), entries: vec![dir(b"a"), file(b"a/../x", 1)] };
    assert_eq!(m.check(&Limits::default()).unwrap_err().refusal, Refusal::DotDot);
    m.entries[1].path = b"a/x".to_vec();
    m.check(&Limits::default()).unwrap();
    m.entries[1].xattrs.push((b"user.a".to_vec(), Vec::new()));
    assert_eq!(m.check(&Limits::default()).unwrap_err().refusal, Refusal::Field);
}

#[test]
fn errors_name_codes_and_escape_details() {
    let e = refusal(&doc(&[d("a"), f("a/%0A%1B[2J/..", "")]));
    assert_eq!(e.code(), "E_TREE_PATH");
    assert!(e.to_string().contains("manifest line 3"), "{e}");
    assert!(!e.to_string().contains('\u{1b}'), "{e}");
    for (r, code) in [
        (Refusal::Duplicate, "E_TREE_DUP"),
        (Refusal::LinkSingle, "E_TREE_LINK"),
        (Refusal::TooManyBytes, "E_TREE_LIMIT"),
        (Refusal::Unsorted, "E_TREE_FORMAT"),
        (Refusal::ParentNotDir, "E_TREE_PATH"),
    ] {
        assert_eq!(r.code(), code);
    }
}

/// `usize::MAX` means "no line limit" (build, restore and scan pass it):
/// it used to overflow the one extra byte that detects a long line.
#[test]
fn no_line_limit_does_not_overflow() {
    let text = doc(&[d("a"), f("a/b", "")]);
    let unlimited = Limits { max_entries: u64::MAX, max_total_bytes: u64::MAX, max_line_bytes: usize::MAX };
    assert_eq!(parse(&text, &unlimited).unwrap().entries.len(), 2);
    assert_eq!(read(text.as_slice(), &unlimited).unwrap().entries.len(), 2);
    // A truncated last line is still refused, not read as a long line.
    let cut = &text[..text.len() - 1];
    assert_eq!(parse(cut, &unlimited).unwrap_err().refusal, Refusal::Truncated);
}
