use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use super::*;
use crate::testutil::*;

fn store(t: &tempfile::TempDir) -> Store {
    Store::open(t.path().join("store")).unwrap()
}

fn tmp_is_empty(s: &Store) -> bool {
    std::fs::read_dir(s.root().join("tmp")).unwrap().next().is_none()
}

/// A reader that must not be read.
struct Untouched;
impl Read for Untouched {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        panic!("the reader of a present content was read");
    }
}

#[test]
fn put_stores_one_read_only_inode_under_its_digest() {
    let t = tempdir();
    let s = store(&t);
    let data = noise(300_000, 7);
    let d = Sha256::of(&data);
    assert!(!s.has(&d));
    assert_eq!(s.put(&data[..], data.len() as u64, &d).unwrap(), Put::Stored(300_000));
    assert!(s.has(&d));
    let p = s.path(&d);
    assert!(p.ends_with(format!("sha256/{}/{}", &d.to_hex()[..2], d.to_hex())), "{}", p.display());
    assert_eq!(std::fs::read(&p).unwrap(), data);
    let md = std::fs::metadata(&p).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o444);
    assert_eq!(md.uid(), rustix::process::geteuid().as_raw());
    let mut back = Vec::new();
    s.open_content(&d).unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(s.put(Untouched, data.len() as u64, &d).unwrap(), Put::Present);
    assert!(tmp_is_empty(&s));
    // The empty content is a content like any other.
    assert_eq!(s.put(&b""[..], 0, &Sha256::of(b"")).unwrap(), Put::Stored(0));
}

#[test]
fn wrong_content_never_enters_the_store() {
    let t = tempdir();
    let s = store(&t);
    let d = Sha256::of(b"promised");
    // Right size, other bytes.
    let e = s.put(&b"PROMISED"[..], 8, &d).unwrap_err();
    match &e {
        StoreError::Mismatch { got_size: 8, got: Some(g), .. } => assert_eq!(*g, Sha256::of(b"PROMISED")),
        other => panic!("{other}"),
    }
    assert_eq!(e.code(), "E_TREE_CONTENT");
    assert!(e.to_string().contains(&Sha256::of(b"PROMISED").to_hex()), "says what arrived: {e}");
    // Short, and long (reading stops one byte past the promise).
    assert!(matches!(s.put(&b"prom"[..], 8, &d), Err(StoreError::Mismatch { got_size: 4, got: Some(_), .. })));
    let long = vec![b'x'; 1 << 20];
    let e = s.put(&long[..], 8, &d).unwrap_err();
    assert!(matches!(e, StoreError::Mismatch { got_size: 9, got: None, .. }), "{e}");
    assert!(e.to_string().contains("more than 8 bytes"), "{e}");
    assert!(!s.has(&d));
    assert!(tmp_is_empty(&s));
    assert!(s.iter().next().is_none(), "nothing stored");
}

#[test]
fn the_link_limit_starts_a_second_copy() {
    let t = tempdir();
    // Each inode takes the store's own name plus two snapshot names.
    let s = store(&t).with_link_max(3);
    let data = b"popular content".to_vec();
    let d = Sha256::of(&data);
    s.put(&data[..], data.len() as u64, &d).unwrap();
    let snap = t.path().join("snap");
    std::fs::create_dir(&snap).unwrap();
    let dir = ferry_archive::fsutil::open_dir(&snap).unwrap();
    let mut made = Vec::new();
    for i in 0..7 {
        made.push(s.link_into(&d, dir.as_fd(), format!("n{i}").as_bytes()).unwrap());
    }
    assert_eq!(made, [false, false, true, false, true, false, true], "a copy when the previous one fills up");
    let inodes: std::collections::BTreeSet<u64> =
        (0..7).map(|i| std::fs::metadata(snap.join(format!("n{i}"))).unwrap().ino()).collect();
    assert_eq!(inodes.len(), 4, "primary, .1, .2, .3");
    for i in 0..7 {
        assert_eq!(std::fs::read(snap.join(format!("n{i}"))).unwrap(), data);
    }
    let c: Vec<Content> = s.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].copies.iter().map(|k| (k.index, k.nlink)).collect::<Vec<_>>(), [(0, 3), (1, 3), (2, 3), (3, 2)]);
    assert_eq!(c[0].references(), 7);
    let v = s.verify().unwrap();
    assert_eq!((v.contents, v.inodes, v.bad.len()), (1, 4, 0));
}

#[test]
fn a_corrupt_primary_is_not_copied() {
    let t = tempdir();
    let s = store(&t).with_link_max(2);
    let d = Sha256::of(b"abc");
    s.put(&b"abc"[..], 3, &d).unwrap();
    let snap = ferry_archive::fsutil::open_dir(t.path()).unwrap();
    s.link_into(&d, snap.as_fd(), b"first").unwrap();
    chmod(s.root(), format!("sha256/{}/{}", &d.to_hex()[..2], d.to_hex()).as_bytes(), 0o644);
    std::fs::write(s.path(&d), b"xyz").unwrap();
    assert!(matches!(s.link_into(&d, snap.as_fd(), b"second"), Err(StoreError::Corrupt { .. })));
    assert!(!t.path().join("second").exists());
}

#[test]
fn verify_finds_flipped_bytes_and_writable_copies() {
    let t = tempdir();
    let s = store(&t);
    let (a, b) = (Sha256::of(b"aaaa"), Sha256::of(b"bbbb"));
    s.put(&b"aaaa"[..], 4, &a).unwrap();
    s.put(&b"bbbb"[..], 4, &b).unwrap();
    assert_eq!(s.verify().unwrap().bad, []);
    let pa = s.path(&a);
    std::fs::set_permissions(&pa, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&pa, b"aaab").unwrap();
    let v = s.verify().unwrap();
    assert_eq!((v.contents, v.inodes, v.bytes), (2, 2, 8));
    assert_eq!(v.bad.len(), 1);
    assert_eq!(v.bad[0].0, a);
    assert!(v.bad[0].2.contains(&Sha256::of(b"aaab").to_hex()), "{:?}", v.bad);
    std::fs::write(&pa, b"aaaa").unwrap();
    assert!(s.verify().unwrap().bad[0].2.contains("writable"));
}

#[test]
fn gc_removes_only_what_no_snapshot_links() {
    let t = tempdir();
    let s = store(&t);
    let (a, b) = (Sha256::of(b"kept"), Sha256::of(b"dropped"));
    s.put(&b"kept"[..], 4, &a).unwrap();
    s.put(&b"dropped"[..], 7, &b).unwrap();
    let snap = t.path().join("snap");
    std::fs::create_dir(&snap).unwrap();
    let dir = ferry_archive::fsutil::open_dir(&snap).unwrap();
    s.link_into(&a, dir.as_fd(), b"k").unwrap();
    s.link_into(&b, dir.as_fd(), b"d").unwrap();
    assert_eq!(s.gc().unwrap(), (0, 0));
    std::fs::remove_file(snap.join("d")).unwrap();
    assert_eq!(s.gc().unwrap(), (1, 7));
    assert!(s.has(&a) && !s.has(&b));
    assert_eq!(std::fs::read(snap.join("k")).unwrap(), b"kept");
}

#[test]
fn temporaries_of_dead_writers_are_cleaned() {
    let t = tempdir();
    let s = store(&t);
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    std::fs::write(s.root().join(format!("tmp/put-{dead}-abc")), b"half").unwrap();
    std::fs::write(s.root().join(format!("tmp/put-{}-def", std::process::id())), b"mine").unwrap();
    assert_eq!(s.clean_tmp().unwrap(), 1);
    assert!(s.root().join(format!("tmp/put-{}-def", std::process::id())).exists());
}

#[test]
fn names_that_are_not_contents_are_ignored() {
    assert_eq!(parse_name(b"x"), None);
    let hex = "ab".repeat(32);
    assert_eq!(parse_name(hex.as_bytes()).unwrap().1, 0);
    assert_eq!(parse_name(format!("{hex}.2").as_bytes()).unwrap().1, 2);
    for bad in [format!("{hex}.0"), format!("{hex}.02"), format!("{hex}x"), hex.to_uppercase(), format!("{hex}.")] {
        assert_eq!(parse_name(bad.as_bytes()), None, "{bad}");
    }
}

#[test]
fn a_batch_becomes_visible_only_when_committed() {
    let t = tempdir();
    let s = store(&t);
    let (a, b) = (Sha256::of(b"alpha"), Sha256::of(b"beta"));
    let mut batch = s.batch().unwrap();
    assert_eq!(batch.put(&b"alpha"[..], 5, &a).unwrap(), Put::Stored(5));
    assert_eq!(batch.put(Untouched, 5, &a).unwrap(), Put::Present, "already in this batch");
    let e = batch.put(&b"BETA"[..], 4, &b).unwrap_err();
    assert_eq!(e.code(), "E_TREE_CONTENT");
    assert_eq!(batch.put(&b"beta"[..], 4, &b).unwrap(), Put::Stored(4));
    assert_eq!((batch.len(), batch.bytes()), (2, 9));
    assert!(!s.has(&a) && !s.has(&b), "nothing visible before the commit");
    assert_eq!(batch.commit().unwrap(), 2);
    assert!(s.has(&a) && s.has(&b));
    assert_eq!(std::fs::metadata(s.path(&b)).unwrap().mode() & 0o7777, 0o444);
    assert!(tmp_is_empty(&s));
    assert_eq!(s.verify().unwrap().bad, []);

    // An abandoned batch leaves nothing behind.
    let c = Sha256::of(b"gamma");
    let mut batch = s.batch().unwrap();
    batch.put(&b"gamma"[..], 5, &c).unwrap();
    drop(batch);
    assert!(!s.has(&c) && tmp_is_empty(&s));
}

#[test]
fn a_content_stored_meanwhile_is_dropped_at_the_commit_and_keeps_its_bytes() {
    // A pull's `put_missing` does not look the store up again; a member of
    // a share group may store the same content between the lookup and
    // the commit. The first copy stays, the second goes, nothing is left
    // in tmp, and unsynced commits become durable with one `sync`.
    let t = tempdir();
    let s = store(&t);
    let a = Sha256::of(b"alpha");
    let mut first = s.batch().unwrap();
    let mut second = s.batch().unwrap();
    assert_eq!(first.put_missing(&b"alpha"[..], 5, &a).unwrap(), Put::Stored(5));
    assert_eq!(second.put_missing(&b"alpha"[..], 5, &a).unwrap(), Put::Stored(5), "not looked up");
    assert_eq!(first.commit_unsynced().unwrap(), 1);
    let before = std::fs::metadata(s.path(&a)).unwrap().ino();
    assert_eq!(second.commit_unsynced().unwrap(), 0, "the name was taken: this copy is dropped");
    assert_eq!(std::fs::metadata(s.path(&a)).unwrap().ino(), before, "the first copy is kept");
    s.sync().unwrap();
    assert!(tmp_is_empty(&s));
    assert_eq!(s.verify().unwrap().bad, []);
    // `put` still looks the store up first.
    assert_eq!(s.batch().unwrap().put(Untouched, 5, &a).unwrap(), Put::Present);
}

/// The lookup through open shards says what `Store::has` says: a stored
/// content, a missing one in an existing shard, one in a shard not made
/// yet, and a name that is not a regular file.
#[test]
fn a_linkers_lookup_agrees_with_the_stores() {
    let t = tempdir();
    let s = store(&t);
    let stored = b"stored".to_vec();
    let d = Sha256::of(&stored);
    s.put(&stored[..], stored.len() as u64, &d).unwrap();
    // Another digest in the same shard, and one in a shard not there.
    let mut same_shard = d;
    same_shard.0[31] ^= 1;
    let mut other = d;
    other.0[0] ^= 0x80;
    let not_a_file = {
        let mut x = d;
        x.0[30] ^= 1;
        std::fs::create_dir(s.path(&x)).unwrap();
        x
    };
    let mut l = s.linker();
    for (x, want) in [(d, true), (same_shard, false), (other, false), (other, false), (not_a_file, false)] {
        assert_eq!(l.has(&x), want, "{x}");
        assert_eq!(s.has(&x), want, "{x}");
    }
}
