//! `fetch_many` (issue 10: the contents of a snapshot tree) against a real,
//! private OpenSSH sshd with the client's read-only gate, streaming into a
//! real `ferry_tree` store: many files on one session, odd byte names,
//! files that changed after the scan reported one by one and never stored,
//! and a connection that fails ending the whole fetch.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use ferry_pull::sftp::{ManyJob, RemoteFile, SftpEndpoint, SinkError, fetch_many};
use ferry_request::Reason;
use ferry_tests::{SshdOptions, TestDir, ssh_keygen};
use ferry_tree::manifest::Sha256;
use ferry_tree::store::{Store, StoreError};

const GATE: &str = "/usr/lib/openssh/sftp-server -R -p open,close,read,lstat,fstat,stat,realpath,limits";

struct Client {
    sshd: ferry_tests::Sshd,
    td: TestDir,
    ctl: tempfile::TempDir,
}

impl Client {
    fn start() -> Client {
        let td = TestDir::new("pull-sftp-many");
        let d = td.path.as_path();
        for sub in ["node", "export"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let ctl = tempfile::Builder::new().prefix("fm").tempdir_in("/tmp").unwrap();
        let pull_pub = ssh_keygen(&d.join("node/pull_key"), "ferry-test");
        std::fs::write(d.join("authorized_keys"), format!("restrict,command=\"{GATE}\" {pull_pub}\n")).unwrap();
        let sshd = ferry_tests::Sshd::start(&d.join("sshd"), SshdOptions::new(d.join("authorized_keys")));
        std::fs::write(d.join("node/known_hosts"), format!("ferry-client-test {}\n", sshd.host_key_pub())).unwrap();
        Client { sshd, td, ctl }
    }

    fn endpoint(&self) -> SftpEndpoint {
        SftpEndpoint {
            ssh: "/usr/bin/ssh".into(),
            host: self.sshd.addr().to_string(),
            port: self.sshd.port(),
            user: self.sshd.user(),
            known_hosts: self.td.join("node/known_hosts"),
            host_key_alias: "ferry-client-test".into(),
            identity: self.td.join("node/pull_key"),
            control_dir: self.ctl.path().to_owned(),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Writes `name` (bytes) in the export dir; its absolute path.
    fn put(&self, name: &[u8], data: &[u8]) -> Vec<u8> {
        let p = self.td.join("export").join(OsStr::from_bytes(name));
        std::fs::write(&p, data).unwrap();
        p.as_os_str().as_bytes().to_vec()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = ferry_pull::sftp::close_master(&self.endpoint());
    }
}

fn content(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()
}

fn job<'a>(ep: &'a SftpEndpoint, files: &'a [RemoteFile]) -> ManyJob<'a> {
    ManyJob {
        endpoint: ep,
        files,
        depth: 8,
        timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(30),
        min_rate: None,
        spool: None,
    }
}

/// The sink the tree pull uses: `Store::put`, digest and size checked
/// while writing; a mismatch is the file's problem, anything else aborts.
fn store_sink<'a>(
    store: &'a Store,
    digests: &'a [Sha256],
    sizes: &'a [u64],
) -> impl FnMut(usize, &mut dyn std::io::Read) -> Result<(), SinkError> + 'a {
    move |i, r| match store.put(r, sizes[i], &digests[i]) {
        Ok(_) => Ok(()),
        Err(e @ StoreError::Mismatch { .. }) => Err(SinkError::Reject(e.to_string())),
        Err(e) => Err(SinkError::Abort(ferry_pull::PullError::new(Reason::Store, e.to_string()))),
    }
}

#[test]
fn many_files_one_session_changed_ones_reported_never_stored() {
    let c = Client::start();
    let ep = c.endpoint();
    let sd = c.td.join("store");
    let store = Store::open(&sd).unwrap();
    // 300 files of many sizes (empty, small, several reads), odd byte names.
    let sizes_of = |i: usize| match i % 5 {
        0 => 0,
        1 => 1,
        2 => 1000 + i,
        3 => 70_000,
        _ => 600_000 + i,
    };
    let mut files = Vec::new();
    let mut digests = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..300 {
        let data = content(i, sizes_of(i));
        // Odd but UTF-8 bytes (space, control, non-ASCII); file 7 is not
        // UTF-8, which the sftp library cannot send: reported, not fetched.
        let odd: &[u8] = if i == 7 { b"f \xff" } else { "f \x01\u{e9}\\ ".as_bytes() };
        let name = [odd, format!("{i}").as_bytes()].concat();
        files.push(RemoteFile { path: c.put(&name, &data), size: data.len() as u64 });
        digests.push(Sha256::of(&data));
        sizes.push(data.len() as u64);
    }
    // Changed after the "scan": one gone, one longer, one shorter, one
    // same size other bytes, one now a directory.
    std::fs::remove_file(Path::new(OsStr::from_bytes(&files[3].path))).unwrap();
    std::fs::write(Path::new(OsStr::from_bytes(&files[8].path)), content(99, sizes[8] as usize + 1)).unwrap();
    std::fs::write(Path::new(OsStr::from_bytes(&files[13].path)), content(13, sizes[13] as usize - 5)).unwrap();
    std::fs::write(Path::new(OsStr::from_bytes(&files[14].path)), content(1234, sizes[14] as usize)).unwrap();
    std::fs::remove_file(Path::new(OsStr::from_bytes(&files[18].path))).unwrap();
    std::fs::create_dir(Path::new(OsStr::from_bytes(&files[18].path))).unwrap();

    let report = fetch_many(&job(&ep, &files), store_sink(&store, &digests, &sizes)).unwrap();
    let mut skipped: Vec<usize> = report.skipped.iter().map(|s| s.index).collect();
    skipped.sort();
    assert_eq!(skipped, [3, 7, 8, 13, 14, 18], "{:?}", report.skipped);
    assert_eq!(report.fetched, 294);
    assert!(report.skipped.iter().any(|s| s.index == 7 && s.why.contains("not UTF-8")));
    for s in &report.skipped {
        assert!(s.why.is_ascii() && !s.why.contains('\n'), "{s:?}");
    }
    let w = |i: usize| report.skipped.iter().find(|s| s.index == i).unwrap().why.clone();
    assert!(w(14).contains("E_TREE_CONTENT"), "{}", w(14));
    assert!(w(3).contains("open: NoSuchFile"), "{}", w(3));
    assert!(w(8).contains("more than"), "{}", w(8));
    assert!(w(13).contains("ended after 69995 bytes"), "{}", w(13));
    assert!(w(18).contains("a directory"), "{}", w(18));
    for i in 0..300 {
        assert_eq!(store.has(&digests[i]), ![3, 7, 8, 13, 14, 18].contains(&i) || digests[i] == digests[0], "file {i}");
    }
    // Nothing is stored under a digest it does not have.
    let report = store.verify().unwrap();
    assert!(report.bad.is_empty(), "{:?}", report.bad);
}

/// The end of a file is proved without a read of its own where the last
/// read can ask past the size, and by one more read where it cannot (a
/// size that is a multiple of the read size): either way a file that grew
/// by one byte after the scan is reported and not stored, and one that did
/// not is stored.
#[test]
fn a_file_that_grew_by_one_byte_is_caught_whatever_its_size() {
    let c = Client::start();
    let ep = c.endpoint();
    let store = Store::open(c.td.join("store")).unwrap();
    let max = ferry_pull::sftp::MAX_READ as usize;
    let sizes_of = [0, 1, 4095, max - 1, max, max + 1, 2 * max, 3 * max - 1];
    let (mut files, mut digests, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &len) in sizes_of.iter().chain(sizes_of.iter()).enumerate() {
        let data = content(i, len);
        files.push(RemoteFile { path: c.put(format!("g{i}").as_bytes(), &data), size: len as u64 });
        digests.push(Sha256::of(&data));
        sizes.push(len as u64);
    }
    // The first eight grow by one byte after the "scan"; the others stay.
    for (i, f) in files.iter().enumerate().take(sizes_of.len()) {
        let mut grown = content(i, sizes_of[i]);
        grown.push(b'!');
        std::fs::write(Path::new(OsStr::from_bytes(&f.path)), grown).unwrap();
    }
    let report = fetch_many(&job(&ep, &files), store_sink(&store, &digests, &sizes)).unwrap();
    let mut skipped: Vec<usize> = report.skipped.iter().map(|s| s.index).collect();
    skipped.sort();
    assert_eq!(skipped, (0..sizes_of.len()).collect::<Vec<_>>(), "{:?}", report.skipped);
    assert!(report.skipped.iter().all(|s| s.why.contains("more than")), "{:?}", report.skipped);
    assert_eq!(report.fetched, sizes_of.len() as u64);
    for i in sizes_of.len()..files.len() {
        assert!(store.has(&digests[i]), "file {i} ({} bytes) not stored", sizes[i]);
    }
    assert!(store.verify().unwrap().bad.is_empty());
}

#[test]
fn a_failed_connection_ends_the_fetch_and_a_sink_abort_stops_it() {
    let c = Client::start();
    let mut ep = c.endpoint();
    let data = content(1, 5000);
    let files = vec![RemoteFile { path: c.put(b"a", &data), size: 5000 }];
    let mut calls = 0;
    let e = fetch_many(&job(&ep, &files), |_, _| {
        calls += 1;
        Err(SinkError::Abort(ferry_pull::PullError::new(Reason::DiskFull, "full".into())))
    })
    .unwrap_err();
    assert_eq!((e.reason, calls), (Reason::DiskFull, 1));
    // A key the client does not know: the connection's failure, no file.
    ssh_keygen(&c.td.join("node/stranger"), "x");
    ep.identity = c.td.join("node/stranger");
    let e = fetch_many(&job(&ep, &files), |_, _| panic!("no file may reach the sink")).unwrap_err();
    assert_eq!(e.reason, Reason::FetchAuth, "{e:?}");
}

/// Names that are not UTF-8 go through the `sftp` program into the spool
/// and then to the same sink: fetched and verified like the others, a
/// changed one reported and not stored, one with a line break (no batch
/// line can carry it) reported with that reason; the spool is left empty.
#[test]
fn names_that_are_not_utf8_are_fetched_through_the_spool() {
    let c = Client::start();
    let ep = c.endpoint();
    let store = Store::open(c.td.join("store")).unwrap();
    let spool = c.td.join("spool");
    std::fs::create_dir(&spool).unwrap();
    let names: [&[u8]; 4] = [b"ok \xe9 [*?]\\ 'q' #x", b"plain", b"changed \xff", b"line\xff\nbreak"];
    let mut files = Vec::new();
    let mut digests = Vec::new();
    let mut sizes = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let data = content(i, 70_000 + i);
        files.push(RemoteFile { path: c.put(n, &data), size: data.len() as u64 });
        digests.push(Sha256::of(&data));
        sizes.push(data.len() as u64);
    }
    std::fs::write(Path::new(OsStr::from_bytes(&files[2].path)), content(77, sizes[2] as usize)).unwrap();
    let mut j = job(&ep, &files);
    j.spool = Some(&spool);
    let report = fetch_many(&j, store_sink(&store, &digests, &sizes)).unwrap();
    let mut skipped: Vec<usize> = report.skipped.iter().map(|s| s.index).collect();
    skipped.sort();
    assert_eq!(skipped, [2, 3], "{:?}", report.skipped);
    assert_eq!(report.fetched, 2);
    let w = |i: usize| report.skipped.iter().find(|s| s.index == i).unwrap().why.clone();
    assert!(w(2).contains("E_TREE_CONTENT"), "{}", w(2));
    assert!(w(3).contains("no sftp batch line can carry"), "{}", w(3));
    assert!(store.has(&digests[0]) && store.has(&digests[1]));
    assert!(!store.has(&digests[2]) && !store.has(&digests[3]));
    assert!(store.verify().unwrap().bad.is_empty());
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "the spool is left empty");
}
