use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::*;
use crate::manifest::{Entry, Mtime};
use crate::scan::{ScanOptions, scan};
use crate::testutil::*;

/// Puts every missing content into the store from the source tree, the way
/// the node's pull does from the client (any path of a content will do).
pub(crate) fn download(m: &Manifest, store: &Store, src: &Path) -> u64 {
    let mut bytes = 0;
    let mut batch = store.batch().unwrap();
    for miss in missing(m, store) {
        let f = std::fs::File::open(p(src, &miss.paths[0])).unwrap();
        if let crate::store::Put::Stored(n) = batch.put(f, miss.size, &miss.sha256).unwrap() {
            bytes += n;
        }
    }
    batch.commit().unwrap();
    bytes
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn a_snapshot_is_a_plain_tree_of_links_into_the_store() {
    let t = tempdir();
    let src = t.path().join("src");
    odd_tree(&src);
    let m = scan(&ScanOptions { xattrs: true, ..ScanOptions::new(&src) }).unwrap().manifest;
    let store = Store::open(t.path().join("store")).unwrap();

    let miss = missing(&m, &store);
    let three = miss.iter().find(|x| x.paths.contains(&b"hard1".to_vec())).unwrap();
    assert_eq!(three.paths, [&b"a/b/hard 3"[..], b"a/hard2", b"hard1"], "a hard-link group is one content");
    let dup = miss.iter().find(|x| x.paths.contains(&b"dup1".to_vec())).unwrap();
    assert_eq!(dup.paths, [&b"a/dup2"[..], b"dup1"], "equal contents are one download");
    let distinct: std::collections::HashSet<_> = m.entries.iter().filter_map(|e| e.sha256()).collect();
    assert_eq!(miss.len(), distinct.len());
    download(&m, &store, &src);
    assert!(missing(&m, &store).is_empty());

    let snaps = t.path().join("data/client/site");
    std::fs::create_dir_all(&snaps).unwrap();
    let dest = snaps.join("2026-12-04T10:00:00Z");
    let built = build(&m, &store, &dest).unwrap();
    let Built::Published(stats) = built else { panic!("{built:?}") };
    assert_eq!(stats.not_created, 1, "the fifo");
    assert_eq!(listing(&snaps), ["2026-12-04T10:00:00Z", "2026-12-04T10:00:00Z.ftree.zst"], "no staging left");
    let stored = std::fs::read(manifest_path(&dest)).unwrap();
    assert_eq!(zstd::decode_all(stored.as_slice()).unwrap(), m.to_bytes(), "zstd of the manifest's text");
    assert!(stored.len() < m.to_bytes().len());
    assert_eq!(read_manifest_text(&dest, u64::MAX).unwrap(), m.to_bytes());
    assert_eq!(read_manifest(&dest, &Limits::default()).unwrap(), m);

    for e in &m.entries {
        let path = p(&dest, &e.path);
        let md = std::fs::symlink_metadata(&path);
        match &e.kind {
            Kind::File { sha256, .. } => {
                let md = md.unwrap();
                assert_eq!(md.ino(), std::fs::metadata(store.path(sha256)).unwrap().ino(), "a link into the store");
                assert_eq!(md.mode() & 0o7777, 0o444);
            }
            Kind::Dir => {
                let md = md.unwrap();
                assert!(md.is_dir());
                assert_eq!(md.mode() & 0o7777, 0o755, "{}", path.display());
                assert_eq!(md.uid(), rustix::process::geteuid().as_raw());
            }
            Kind::Symlink { target } => {
                assert!(md.unwrap().file_type().is_symlink());
                assert_eq!(std::fs::read_link(&path).unwrap().as_os_str().as_bytes(), target.as_slice());
            }
            _ => assert!(md.is_err(), "{} must not be created", path.display()),
        }
    }
    let ino = |rel: &[u8]| std::fs::metadata(p(&dest, rel)).unwrap().ino();
    assert_eq!(ino(b"hard1"), ino(b"a/b/hard 3"));
    assert_eq!(ino(b"dup1"), ino(b"a/dup2"));
    assert!(!p(&dest, b"fifo").exists() && std::fs::symlink_metadata(p(&src, b"fifo")).unwrap().file_type().is_fifo());
}

#[test]
fn a_second_snapshot_stores_only_what_changed() {
    let t = tempdir();
    let src = t.path().join("src");
    for i in 0..50 {
        write(&src, format!("d{}/f{i}", i % 5).as_bytes(), &noise(10_000, i));
    }
    let store = Store::open(t.path().join("store")).unwrap();
    let m1 = scan(&ScanOptions::new(&src)).unwrap().manifest;
    assert_eq!(download(&m1, &store, &src), 500_000);
    build(&m1, &store, &t.path().join("s1")).unwrap();
    write(&src, b"d3/f13", &noise(10_000, 1000));
    let m2 = scan(&ScanOptions::new(&src)).unwrap().manifest;
    assert_eq!(missing(&m2, &store).len(), 1);
    assert_eq!(download(&m2, &store, &src), 10_000, "one changed file is all that is stored");
    build(&m2, &store, &t.path().join("s2")).unwrap();
    let ino = |s: &str, rel: &str| std::fs::metadata(t.path().join(s).join(rel)).unwrap().ino();
    assert_eq!(ino("s1", "d0/f0"), ino("s2", "d0/f0"));
    assert_ne!(ino("s1", "d3/f13"), ino("s2", "d3/f13"));
    assert_eq!(std::fs::read(t.path().join("s1/d3/f13")).unwrap(), noise(10_000, 13), "the old version stays");
}

#[test]
fn nothing_is_built_while_contents_are_missing() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src, b"a", b"a");
    write(&src, b"b", b"b");
    let m = scan(&ScanOptions::new(&src)).unwrap().manifest;
    let store = Store::open(t.path().join("store")).unwrap();
    store.put(&b"a"[..], 1, &Sha256::of(b"a")).unwrap();
    let dest = t.path().join("snaps/s");
    std::fs::create_dir_all(t.path().join("snaps")).unwrap();
    assert!(matches!(build(&m, &store, &dest), Err(SnapshotError::Incomplete(1))));
    assert!(listing(&t.path().join("snaps")).is_empty());
}

#[test]
fn a_killed_build_leaves_nothing_visible_and_the_next_one_cleans_up() {
    let t = tempdir();
    let src = t.path().join("src");
    odd_tree(&src);
    let m = scan(&ScanOptions::new(&src)).unwrap().manifest;
    let store = Store::open(t.path().join("store")).unwrap();
    download(&m, &store, &src);
    let snaps = t.path().join("snaps");
    // What a kill -9 in the middle leaves: a half-filled staging directory
    // (with a link pointing outside, which removal must not follow), and a
    // manifest written before the kill.
    let outside = t.path().join("outside");
    write(&outside, b"precious", b"must survive");
    let staging = snaps.join(".s.staging");
    write(&staging, b"a/partial", b"half");
    chmod(&staging, b"a", 0o500);
    std::os::unix::fs::symlink(&outside, staging.join("escape")).unwrap();
    std::fs::write(snaps.join("s.ftree"), b"stale").unwrap();
    std::fs::write(snaps.join("s.ftree.zst"), b"stale too").unwrap();
    let dest = snaps.join("s");
    assert!(!dest.exists(), "a staging directory is not the snapshot");

    assert!(matches!(build(&m, &store, &dest).unwrap(), Built::Published(_)));
    assert_eq!(listing(&snaps), ["s", "s.ftree.zst"], "both stale manifests replaced");
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"must survive");
    assert_eq!(read_manifest_text(&dest, u64::MAX).unwrap(), m.to_bytes());
    // A re-run with the same manifest is a no-op; another manifest is refused.
    assert_eq!(build(&m, &store, &dest).unwrap(), Built::AlreadyPublished);
    let mut other = m.clone();
    other.entries.retain(|e| e.path != b"zero");
    assert!(matches!(build(&other, &store, &dest), Err(SnapshotError::Exists(_))));
    assert_eq!(listing(&snaps), ["s", "s.ftree.zst"]);
}

#[test]
fn a_hostile_manifest_built_in_memory_is_still_refused() {
    let t = tempdir();
    let store = Store::open(t.path().join("store")).unwrap();
    store.put(&b"x"[..], 1, &Sha256::of(b"x")).unwrap();
    let file = |path: &[u8]| Entry {
        path: path.to_vec(),
        kind: Kind::File { size: 1, sha256: Sha256::of(b"x") },
        mode: 0o644,
        uid: 0,
        gid: 0,
        user: None,
        group: None,
        mtime: Mtime::default(),
        link: None,
        xattrs: Vec::new(),
    };
    let link =
        Entry { kind: Kind::Symlink { target: t.path().join("victim").into_os_string().into_vec() }, ..file(b"l") };
    std::fs::create_dir(t.path().join("victim")).unwrap();
    std::fs::create_dir(t.path().join("snaps")).unwrap();
    for entries in [vec![file(b"../escape")], vec![file(b"/abs")], vec![link, file(b"l/through")]] {
        let m = Manifest { options: Default::default(), entries };
        let e = build(&m, &store, &t.path().join("snaps/s")).unwrap_err();
        assert!(matches!(e, SnapshotError::Invalid(_)), "{e}");
    }
    assert!(listing(&t.path().join("snaps")).is_empty());
    assert!(listing(&t.path().join("victim")).is_empty());
    assert!(!t.path().join("escape").exists());
}

#[test]
fn many_names_of_one_content_spill_over_the_link_limit() {
    let t = tempdir();
    let src = t.path().join("src");
    for i in 0..10 {
        write(&src, format!("same{i}").as_bytes(), b"identical");
    }
    let m = scan(&ScanOptions::new(&src)).unwrap().manifest;
    let store = Store::open(t.path().join("store")).unwrap().with_link_max(4);
    download(&m, &store, &src);
    let Built::Published(stats) = build(&m, &store, &t.path().join("s")).unwrap() else { panic!() };
    // 3 names per inode (the store holds the fourth link): 10 names need 4 inodes.
    assert_eq!(stats.store_copies, 3);
    let inodes: std::collections::HashSet<u64> =
        (0..10).map(|i| std::fs::metadata(t.path().join(format!("s/same{i}"))).unwrap().ino()).collect();
    assert_eq!(inodes.len(), 4);
    assert_eq!(std::fs::read(t.path().join("s/same9")).unwrap(), b"identical");
}

#[test]
fn a_manifest_stored_uncompressed_by_an_earlier_version_is_still_read() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src, b"a/one", b"one");
    let m = scan(&ScanOptions::new(&src)).unwrap().manifest;
    let store = Store::open(t.path().join("store")).unwrap();
    download(&m, &store, &src);
    let snaps = t.path().join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();
    let dest = snaps.join("old");
    build(&m, &store, &dest).unwrap();
    std::fs::remove_file(manifest_path(&dest)).unwrap();
    std::fs::write(plain_manifest_path(&dest), m.to_bytes()).unwrap();
    assert!(has_manifest(&dest));
    assert_eq!(read_manifest(&dest, &Limits::default()).unwrap(), m);
    assert_eq!(read_manifest_text(&dest, u64::MAX).unwrap(), m.to_bytes());
    assert!(read_manifest_text(&dest, 10).is_err(), "over the limit is an error, not a truncation");
    assert_eq!(build(&m, &store, &dest).unwrap(), Built::AlreadyPublished);
    assert!(remove_manifest(&dest).unwrap());
    assert!(!has_manifest(&dest) && !remove_manifest(&dest).unwrap());
}

/// What a pull does: stage everything but the contents being fetched,
/// fetch them, leave out one that changed on the client, finish.
#[test]
fn a_staged_snapshot_gets_the_fetched_files_at_finish_and_nothing_before() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src, b"a/kept", b"already stored");
    write(&src, b"a/new", b"fetched during staging");
    write(&src, b"b/changed", b"changed on the client");
    std::os::unix::fs::symlink("a/kept", src.join("link")).unwrap();
    let m = scan(&ScanOptions::new(&src)).unwrap().manifest;
    let store = Store::open(t.path().join("store")).unwrap();
    let sha = |path: &[u8]| m.entries.iter().find(|e| e.path == path).unwrap().sha256().copied().unwrap();
    store.put(std::fs::File::open(src.join("a/kept")).unwrap(), 14, &sha(b"a/kept")).unwrap();
    let later: HashSet<Sha256> = [sha(b"a/new"), sha(b"b/changed")].into();
    let snaps = t.path().join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();
    let dest = snaps.join("s");

    let staged = stage(&m, &store, &dest, later.clone()).unwrap();
    let staging = snaps.join(".s.staging");
    assert!(!dest.exists(), "nothing is published by staging");
    assert!(staging.join("a/kept").is_file() && staging.join("link").is_symlink());
    assert!(!staging.join("a/new").exists() && !staging.join("b/changed").exists() && staging.join("b").is_dir());
    assert!(matches!(staged.finish(&m, &store), Err(SnapshotError::Incomplete(2))), "contents still missing");
    assert!(!staging.exists(), "a failed finish leaves no staging behind");

    let staged = stage(&m, &store, &dest, later).unwrap();
    store.put(std::fs::File::open(src.join("a/new")).unwrap(), 22, &sha(b"a/new")).unwrap();
    let mut without = m.clone();
    without.entries.retain(|e| e.path != b"b/changed");
    let Built::Published(stats) = staged.finish(&without, &store).unwrap() else { panic!("not published") };
    assert_eq!(stats.files, 2);
    assert_eq!(listing(&snaps), ["s", "s.ftree.zst"]);
    assert_eq!(std::fs::read(dest.join("a/new")).unwrap(), b"fetched during staging");
    assert!(dest.join("b").is_dir() && !dest.join("b/changed").exists());
    assert_eq!(read_manifest(&dest, &Limits::default()).unwrap(), without);
    assert!(matches!(stage(&m, &store, &dest, HashSet::new()), Err(SnapshotError::Exists(_))));
}

/// Many more files than the linking threads' batches and channel hold,
/// in many directories and one large one: every name is linked to its own
/// content, and a content missing early stops the linking with that
/// error (no wait on a full channel), leaving no staging behind.
#[test]
fn files_linked_on_several_threads_are_all_there_and_a_missing_one_stops_them() {
    let t = tempdir();
    let src = t.path().join("src");
    for i in 0..3000 {
        let dir = if i < 1000 { "big".to_owned() } else { format!("d{}", i % 40) };
        write(&src, format!("{dir}/f{i}").as_bytes(), format!("content {i}").as_bytes());
    }
    let m = scan(&ScanOptions::new(&src)).unwrap().manifest;
    let store = Store::open(t.path().join("store")).unwrap();
    let snaps = t.path().join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();

    // One content stored late: the first file in the walk's order.
    let first = m.entries.iter().filter(|e| e.sha256().is_some()).min_by(|a, b| tree_order(&a.path, &b.path)).unwrap();
    let late = *first.sha256().unwrap();
    let later: HashSet<Sha256> = [late].into();
    let mut batch = store.batch().unwrap();
    for miss in missing(&m, &store).into_iter().filter(|x| x.sha256 != late) {
        batch.put(std::fs::File::open(p(&src, &miss.paths[0])).unwrap(), miss.size, &miss.sha256).unwrap();
    }
    batch.commit().unwrap();
    let dest = snaps.join("s");
    let staged = stage(&m, &store, &dest, HashSet::new());
    assert!(
        matches!(staged, Err(SnapshotError::Store(StoreError::Missing(d))) if d == late),
        "the missing content's error, not a stopped walk: {staged:?}"
    );
    assert_eq!(listing(&snaps), Vec::<String>::new(), "no staging left");

    let staged = stage(&m, &store, &dest, later).unwrap();
    assert_eq!(staged.stats.files, 2999);
    download(&m, &store, &src);
    let Built::Published(stats) = staged.finish(&m, &store).unwrap() else { panic!("not published") };
    assert_eq!(stats.files, 3000);
    for i in 0..3000 {
        let dir = if i < 1000 { "big".to_owned() } else { format!("d{}", i % 40) };
        let name = dest.join(format!("{dir}/f{i}"));
        assert_eq!(std::fs::read(&name).unwrap(), format!("content {i}").as_bytes(), "{}", name.display());
    }
    assert_eq!(std::fs::read_dir(dest.join("big")).unwrap().count(), 1000);
}

/// Contents committed while the fetch runs are linked into the staging at
/// once, batch by batch, files in several directories and at the top;
/// `finish` links only the rest, a content already linked is not linked
/// twice, and nothing is visible before `finish`.
#[test]
fn contents_stored_during_the_fetch_are_linked_before_finish() {
    let t = tempdir();
    let src = t.path().join("src");
    for i in 0..600 {
        write(&src, format!("d{}/f{i}", i % 7).as_bytes(), format!("content {}", i % 500).as_bytes());
    }
    write(&src, b"top", b"content 7");
    write(&src, b"d1/deeper/down", b"content 8");
    write(&src, b"changed", b"changed on the client");
    let m = scan(&ScanOptions::new(&src)).unwrap().manifest;
    let store = Store::open(t.path().join("store")).unwrap();
    let snaps = t.path().join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();
    let dest = snaps.join("s");
    let miss = missing(&m, &store);
    let later: HashSet<Sha256> = miss.iter().map(|x| x.sha256).collect();
    assert_eq!(later.len(), 501);
    let mut staged = stage(&m, &store, &dest, later).unwrap();
    assert_eq!(staged.stats.files, 0);
    let staging = snaps.join(".s.staging");

    // Three batches of the fetch, the changed file never stored.
    let changed = *m.get(b"changed").unwrap().sha256().unwrap();
    let fetched: Vec<_> = miss.iter().filter(|x| x.sha256 != changed).collect();
    let mut linked = 0;
    for part in fetched.chunks(200) {
        let mut batch = store.batch().unwrap();
        for x in part {
            batch.put(std::fs::File::open(p(&src, &x.paths[0])).unwrap(), x.size, &x.sha256).unwrap();
        }
        let stored: HashSet<Sha256> = batch.contents().copied().collect();
        assert_eq!(stored.len(), part.len());
        batch.commit_unsynced().unwrap();
        staged.link_stored(&store, part.iter().copied()).unwrap();
        linked += part.iter().map(|x| x.paths.len() as u64).sum::<u64>();
        assert_eq!(staged.stats.files, linked);
        // Linked already: a second time does nothing.
        staged.link_stored(&store, part.iter().copied()).unwrap();
        assert_eq!(staged.stats.files, linked);
    }
    assert_eq!(linked, 602);
    assert!(staging.join("d3/f3").is_file() && !dest.exists(), "linked into the staging, nothing published");
    assert!(staging.join("top").is_file() && staging.join("d1/deeper/down").is_file());
    assert_eq!(
        std::fs::metadata(staging.join("d3/f3")).unwrap().ino(),
        std::fs::metadata(store.path(m.get(b"d3/f3").unwrap().sha256().unwrap())).unwrap().ino()
    );

    let mut without = m.clone();
    without.entries.retain(|e| e.path != b"changed");
    let Built::Published(stats) = staged.finish(&without, &store).unwrap() else { panic!("not published") };
    assert_eq!(stats.files, 602);
    for i in 0..600 {
        let name = dest.join(format!("d{}/f{i}", i % 7));
        assert_eq!(std::fs::read(&name).unwrap(), format!("content {}", i % 500).as_bytes());
    }
    assert_eq!(std::fs::read(dest.join("d1/deeper/down")).unwrap(), b"content 8");
    assert!(!dest.join("changed").exists());
    let report = store.verify().unwrap();
    assert_eq!((report.contents, report.bad.len()), (500, 0));
}

#[test]
fn contents_written_into_the_staging_become_the_stores_inodes() {
    let t = tempdir();
    let src = t.path().join("src");
    for i in 0..300 {
        write(&src, format!("d{}/f{i}", i % 5).as_bytes(), format!("content {}", i % 250).as_bytes());
    }
    write(&src, b"top", b"content 7");
    write(&src, b"d1/deeper/down", b"content 8");
    write(&src, b"lies", b"what the manifest promised");
    write(&src, b"raced", b"stored meanwhile by a share group's pull");
    write(&src, b"twice", b"fetched twice in one batch");
    std::os::unix::fs::symlink("top", src.join("link")).unwrap();
    let m = scan(&ScanOptions::new(&src)).unwrap().manifest;
    let store = Store::open(t.path().join("store")).unwrap();
    let snaps = t.path().join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();
    let dest = snaps.join("s");
    let miss = missing(&m, &store);
    let later: HashSet<Sha256> = miss.iter().map(|x| x.sha256).collect();
    let staging = snaps.join(".s.staging");

    // The directories first, nothing else; then the rest on its own.
    let mut staged = stage_dirs(&m, &dest, later).unwrap();
    assert!(staging.join("d1/deeper").is_dir() && !staging.join("top").exists() && !staging.join("link").exists());
    staged.fill_stored(&m, &store).unwrap();
    assert_eq!(std::fs::read_link(staging.join("link")).unwrap(), Path::new("top"));
    let root = staged.root().unwrap();

    // A content whose bytes do not match leaves nothing at its name.
    let lies = miss.iter().find(|x| x.paths[0] == b"lies").unwrap();
    let mut batch = store.batch().unwrap();
    let wrong = batch.put_missing_in(&b"something else entirely!!!"[..], lies.size, &lies.sha256, &root, b"lies");
    assert!(matches!(wrong, Err(StoreError::Mismatch { .. })), "{wrong:?}");
    assert!(!staging.join("lies").exists());
    // Dropped uncommitted: the file written goes too.
    let down = miss.iter().find(|x| x.paths[0] == b"d1/deeper/down").unwrap();
    batch
        .put_missing_in(
            std::fs::File::open(src.join("d1/deeper/down")).unwrap(),
            down.size,
            &down.sha256,
            &root,
            &down.paths[0],
        )
        .unwrap();
    assert!(staging.join("d1/deeper/down").is_file());
    drop(batch);
    assert!(!staging.join("d1/deeper/down").exists() && !store.has(&down.sha256));

    // A share group's pull stores one content meanwhile.
    let raced = miss.iter().find(|x| x.paths[0] == b"raced").unwrap();
    store.put(std::fs::File::open(src.join("raced")).unwrap(), raced.size, &raced.sha256).unwrap();

    // Two batches, as a pull commits them; "twice" is written a second
    // time under another name of the staging within one batch.
    let fetched: Vec<&Missing> = miss.iter().filter(|x| x.paths[0] != b"lies").collect();
    let mut files = 0;
    for part in fetched.chunks(130) {
        let mut batch = store.batch().unwrap();
        for x in part {
            let got = batch.put_missing_in(
                std::fs::File::open(p(&src, &x.paths[0])).unwrap(),
                x.size,
                &x.sha256,
                &root,
                &x.paths[0],
            );
            assert!(matches!(got, Ok(crate::store::Put::Stored(n)) if n == x.size), "{got:?}");
            if x.paths[0] == b"twice" {
                let again = batch.put_missing_in(
                    std::fs::File::open(src.join("twice")).unwrap(),
                    x.size,
                    &x.sha256,
                    &root,
                    b"twice-again",
                );
                assert!(matches!(again, Ok(crate::store::Put::Present)), "{again:?}");
            }
        }
        assert_eq!(batch.len(), part.len());
        assert!(
            part.iter().all(|x| !store.has(&x.sha256) || x.paths[0] == b"raced"),
            "nothing stored before the commit"
        );
        batch.commit_unsynced().unwrap();
        assert!(part.iter().all(|x| store.has(&x.sha256)));
        staged.link_copies(&store, part.iter().copied()).unwrap();
        files += part.iter().map(|x| x.paths.len() as u64).sum::<u64>();
        // Linked already: a second time does nothing.
        staged.link_copies(&store, part.iter().copied()).unwrap();
    }
    assert!(!dest.exists(), "nothing published before finish");
    let ino = |path: &Path| std::fs::metadata(path).unwrap().ino();
    for (name, x) in [("d3/f3", "d3/f3"), ("d3/f253", "d3/f3"), ("raced", "raced"), ("twice-again", "twice")] {
        let d = m.get(x.as_bytes()).unwrap().sha256().unwrap();
        assert_eq!(ino(&staging.join(name)), ino(&store.path(d)), "{name} is the store's inode");
    }
    let mode = std::fs::metadata(staging.join("top")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o444, "store contents are read-only");

    // The lying file is left out, as a pull leaves out what changed.
    let mut without = m.clone();
    without.entries.retain(|e| e.path != b"lies");
    std::fs::remove_file(staging.join("twice-again")).unwrap();
    let Built::Published(stats) = staged.finish(&without, &store).unwrap() else { panic!("not published") };
    assert_eq!(stats.files, files);
    assert_eq!(stats.files, without.entries.iter().filter(|e| e.sha256().is_some()).count() as u64);
    for i in 0..300 {
        let name = dest.join(format!("d{}/f{i}", i % 5));
        assert_eq!(std::fs::read(&name).unwrap(), format!("content {}", i % 250).as_bytes());
    }
    assert_eq!(std::fs::read(dest.join("d1/deeper/down")).unwrap(), b"content 8");
    assert!(!dest.join("lies").exists());
    let report = store.verify().unwrap();
    assert_eq!((report.contents as usize, report.bad.len()), (fetched.len(), 0));
}

#[test]
fn a_batch_written_into_many_directories_holds_few_of_them_open() {
    let t = tempdir();
    let src = t.path().join("src");
    for i in 0..1000 {
        write(&src, format!("d{i:04}/only").as_bytes(), format!("content {i}").as_bytes());
    }
    let m = scan(&ScanOptions::new(&src)).unwrap().manifest;
    let store = Store::open(t.path().join("store")).unwrap();
    let snaps = t.path().join("snaps");
    std::fs::create_dir_all(&snaps).unwrap();
    let miss = missing(&m, &store);
    let mut staged = stage_dirs(&m, &snaps.join("s"), miss.iter().map(|x| x.sha256).collect()).unwrap();
    staged.fill_stored(&m, &store).unwrap();
    let root = staged.root().unwrap();
    let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = open_fds();
    let mut batch = store.batch().unwrap();
    for x in &miss {
        let f = std::fs::File::open(p(&src, &x.paths[0])).unwrap();
        batch.put_missing_in(f, x.size, &x.sha256, &root, &x.paths[0]).unwrap();
    }
    // One waiting content per directory: a batch that kept each one's
    // directory open would hold 1,000 (a process may have 1,024).
    let held = open_fds().saturating_sub(before);
    assert!(held < 100, "{held} files held open by a batch of {} contents", batch.len());
    batch.commit_unsynced().unwrap();
    staged.link_copies(&store, miss.iter()).unwrap();
    let Built::Published(stats) = staged.finish(&m, &store).unwrap() else { panic!("not published") };
    assert_eq!(stats.files, 1000);
    assert_eq!(std::fs::read(snaps.join("s/d0999/only")).unwrap(), b"content 999");
}
