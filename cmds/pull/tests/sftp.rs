//! The sftp module against a real, private OpenSSH sshd on loopback, with the
//! client's read-only gate key (`sftp-server -R -p <allow-list>`).
//!
//! Every test starts its own sshd (CRATES.md §2), so they run in parallel.
//! Without /usr/sbin/sshd the tests skip, unless CI=true, where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_pull::sftp::{self, DownloadJob, SftpEndpoint, Transport, Tuning};
use ferry_request::Reason;
use ferry_tests::{SshdOptions, TestDir, require, require_all, ssh_keygen};
use sha2::{Digest, Sha256};

/// A scripted SFTP server that lies (see the script's doc string).
const HOSTILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile_sftp.py");
const GATE: &str = "/usr/lib/openssh/sftp-server -R -p open,close,read,lstat,fstat,stat,realpath,limits";

fn keygen(path: &Path) -> String {
    ssh_keygen(path, "ferry-test")
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A private sshd of the shared harness ([`ferry_tests::Sshd`]) with the
/// client's keys, an export dir and a node-side layout, all in one test
/// directory; the ssh control sockets in a short directory of their own.
struct Sshd {
    sshd: ferry_tests::Sshd,
    td: TestDir,
    /// Short paths: control sockets must fit in sun_path.
    ctl: tempfile::TempDir,
}

impl Sshd {
    fn start() -> Sshd {
        let td = TestDir::new("pull-sftp");
        let d = td.path.as_path();
        for sub in ["node", "export", "dest"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let ctl = tempfile::Builder::new().prefix("fs").tempdir_in("/tmp").unwrap();
        let pull_pub = keygen(&d.join("node/pull_key"));
        let sleepy_pub = keygen(&d.join("node/sleepy_key"));
        let hostile_pub = keygen(&d.join("node/hostile_key"));
        keygen(&d.join("node/stranger_key"));
        // The client's recipe: the pull key only reaches a read-only sftp
        // server that also refuses listings; a second key hangs (for the
        // idle-timeout test).
        std::fs::write(
            d.join("authorized_keys"),
            format!(
                "restrict,command=\"{GATE}\" {pull_pub}\nrestrict,command=\"/bin/sleep 15\" {sleepy_pub}\n\
                 restrict,command=\"/usr/bin/python3 {HOSTILE} {}\" {hostile_pub}\n",
                d.join("hostile_mode").display()
            ),
        )
        .unwrap();
        let sshd = ferry_tests::Sshd::start(&d.join("sshd"), SshdOptions::new(d.join("authorized_keys")));
        let s = Sshd { sshd, td, ctl };
        s.pin(&s.sshd.host_key_pub());
        s
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.td.join(rel)
    }

    /// Write the node's known_hosts with `key` pinned under the alias.
    fn pin(&self, key: &str) {
        std::fs::write(self.path("node/known_hosts"), format!("ferry-client-test {key}\n")).unwrap();
    }

    fn endpoint(&self) -> SftpEndpoint {
        SftpEndpoint {
            ssh: "/usr/bin/ssh".into(),
            host: self.sshd.addr().to_string(),
            port: self.sshd.port(),
            user: self.sshd.user(),
            known_hosts: self.path("node/known_hosts"),
            host_key_alias: "ferry-client-test".into(),
            identity: self.path("node/pull_key"),
            control_dir: self.ctl.path().to_owned(),
            connect_timeout: Duration::from_secs(10),
        }
    }

    fn export(&self, name: &str, data: &[u8]) -> String {
        let p = self.path("export").join(name);
        std::fs::write(&p, data).unwrap();
        p.to_str().unwrap().to_owned()
    }

    fn dest(&self) -> PathBuf {
        self.path("dest")
    }

    fn dest_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dest())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Processes whose command line names this test's control dir (ssh
    /// masters show their ControlPath as their title).
    fn ssh_processes(&self) -> Vec<String> {
        let out = Command::new("pgrep").arg("-af").arg(self.ctl.path()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }

    /// Close the master and check that nothing of ours is left running.
    fn assert_no_master_left(&self, ep: &SftpEndpoint) {
        let _ = sftp::close_master(ep);
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.ssh_processes();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < until, "ssh processes left: {left:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Masters of a failed test: ask them to go before their sshd does
        // (the harness's guard stops sshd when the fields drop).
        let _ = sftp::close_master(&self.endpoint());
    }
}

fn job<'a>(ep: &'a SftpEndpoint, remote: &'a str, data: &[u8], dest: &'a Path, name: &'a str) -> DownloadJob<'a> {
    DownloadJob {
        endpoint: ep,
        remote_path: remote,
        expected_size: data.len() as u64,
        expected_sha256: sha256(data),
        max_bytes: 1 << 30,
        dest_dir: dest,
        dest_name: name,
        timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(30),
        min_rate: None,
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    // xorshift: incompressible enough, and fast for 50 MB.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (std::process::id() as u64) << 17;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

#[test]
fn round_trip_50_mb_through_the_read_only_gate() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let data = random_bytes(50 * 1000 * 1000 + 12345);
    let remote = s.export("dump.tar.zst", &data);
    let ep = s.endpoint();
    let dest = s.dest();
    let got = sftp::download(&job(&ep, &remote, &data, &dest, "dump.tar.zst")).unwrap();
    assert_eq!(got.path, dest.join("dump.tar.zst"));
    assert_eq!(got.size, data.len() as u64);
    assert_eq!(got.sha256, sha256(&data));
    assert!(std::fs::read(&got.path).unwrap() == data, "byte-identical");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&got.path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(s.dest_entries(), ["dump.tar.zst"]);

    // The master stays for the next pull, then goes when asked.
    assert!(!s.ssh_processes().is_empty(), "a ControlMaster runs for the next pull");
    let data2 = random_bytes(1000);
    let remote2 = s.export("small", &data2);
    sftp::download(&job(&ep, &remote2, &data2, &dest, "small")).unwrap();
    assert_eq!(std::fs::read(dest.join("small")).unwrap(), data2);
    assert!(sftp::close_master(&ep).unwrap());
    s.assert_no_master_left(&ep);
}

#[test]
fn odd_sizes_small_chunks_and_shallow_pipeline() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let ep = s.endpoint();
    let dest = s.dest();
    for (i, (len, depth, chunk)) in
        [(0usize, 4usize, 4096u32), (1, 1, 4096), (4096, 2, 4096), (1_000_003, 3, 10_000), (700_000, 64, 261_120)]
            .into_iter()
            .enumerate()
    {
        let data = random_bytes(len);
        let name = format!("f{i}");
        let remote = s.export(&name, &data);
        let tuning = Tuning { depth, chunk, multiplex: i % 2 == 0, ..Tuning::default() };
        let got = sftp::download_tuned(&job(&ep, &remote, &data, &dest, &name), &tuning).unwrap();
        assert_eq!(std::fs::read(&got.path).unwrap(), data, "{len} bytes, depth {depth}, chunk {chunk}");
    }
    s.assert_no_master_left(&ep);
}

#[test]
fn digest_mismatch_discards_everything() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let data = random_bytes(300_000);
    let remote = s.export("a", &data);
    let ep = s.endpoint();
    let dest = s.dest();
    let mut j = job(&ep, &remote, &data, &dest, "a");
    j.expected_sha256[0] ^= 1;
    let e = sftp::download(&j).unwrap_err();
    assert_eq!(e.reason, Reason::FetchDigestMismatch, "{e}");
    assert!(e.message.contains(&hex::encode(sha256(&data))), "actual digest named: {e}");
    assert!(e.message.contains(&hex::encode(j.expected_sha256)), "declared digest named: {e}");
    assert!(s.dest_entries().is_empty(), "{:?}", s.dest_entries());
    s.assert_no_master_left(&ep);
}

#[test]
fn size_mismatch_either_way_leaves_nothing() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let data = random_bytes(100_000);
    let remote = s.export("a", &data);
    let ep = s.endpoint();
    let dest = s.dest();
    for declared in [data.len() - 1, data.len() + 1, 0] {
        let mut j = job(&ep, &remote, &data, &dest, "a");
        j.expected_size = declared as u64;
        let e = sftp::download(&j).unwrap_err();
        assert_eq!(e.reason, Reason::FetchSizeMismatch, "declared {declared}: {e}");
        assert!(s.dest_entries().is_empty());
    }
    s.assert_no_master_left(&ep);
}

#[test]
fn symlinks_directories_and_missing_files_are_refused() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let data = random_bytes(1000);
    let target = s.export("real", &data);
    let link = s.path("export/link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::create_dir(s.path("export/dir")).unwrap();
    let ep = s.endpoint();
    let dest = s.dest();
    let link = link.to_str().unwrap().to_owned();
    let e = sftp::download(&job(&ep, &link, &data, &dest, "a")).unwrap_err();
    assert_eq!(e.reason, Reason::FetchNotRegular, "{e}");
    assert!(e.message.contains("symbolic link"), "{e}");
    let dir = s.path("export/dir").to_str().unwrap().to_owned();
    let e = sftp::download(&job(&ep, &dir, &data, &dest, "a")).unwrap_err();
    assert_eq!(e.reason, Reason::FetchNotRegular, "{e}");
    let missing = s.path("export/missing").to_str().unwrap().to_owned();
    let e = sftp::download(&job(&ep, &missing, &data, &dest, "a")).unwrap_err();
    assert_eq!(e.reason, Reason::FetchNotFound, "{e}");
    assert!(s.dest_entries().is_empty());
    s.assert_no_master_left(&ep);
}

#[test]
fn wrong_pinned_host_key_downloads_nothing() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let other = keygen(&s.path("node/other_host"));
    s.pin(&other);
    let data = random_bytes(1000);
    let remote = s.export("a", &data);
    let ep = s.endpoint();
    let dest = s.dest();
    let e = sftp::download(&job(&ep, &remote, &data, &dest, "a")).unwrap_err();
    assert_eq!(e.reason, Reason::FetchHostKey, "{e}");
    // An unknown alias is refused the same way (never accept-new).
    std::fs::write(s.path("node/known_hosts"), "").unwrap();
    let e = sftp::download(&job(&ep, &remote, &data, &dest, "a")).unwrap_err();
    assert_eq!(e.reason, Reason::FetchHostKey, "{e}");
    assert_eq!(std::fs::read_to_string(s.path("node/known_hosts")).unwrap(), "", "nothing was added");
    assert!(s.dest_entries().is_empty());
    assert!(s.ssh_processes().is_empty(), "no master after a refused host key");
}

#[test]
fn a_key_the_client_does_not_know_is_an_auth_failure() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let data = random_bytes(10);
    let remote = s.export("a", &data);
    let ep = SftpEndpoint { identity: s.path("node/stranger_key"), ..s.endpoint() };
    let dest = s.dest();
    let e = sftp::download(&job(&ep, &remote, &data, &dest, "a")).unwrap_err();
    assert_eq!(e.reason, Reason::FetchAuth, "{e}");
    assert!(s.dest_entries().is_empty());
    assert!(s.ssh_processes().is_empty());
}

#[test]
fn an_existing_file_is_never_overwritten() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let data = random_bytes(5000);
    let remote = s.export("a", &data);
    let ep = s.endpoint();
    let dest = s.dest();
    std::fs::write(dest.join("a"), b"the stored backup").unwrap();
    let e = sftp::download(&job(&ep, &remote, &data, &dest, "a")).unwrap_err();
    assert_eq!(e.reason, Reason::ReqConflict, "{e}");
    assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"the stored backup");
    // A dangling symlink at the name counts as existing too.
    std::os::unix::fs::symlink("/nonexistent", dest.join("b")).unwrap();
    let e = sftp::download(&job(&ep, &remote, &data, &dest, "b")).unwrap_err();
    assert_eq!(e.reason, Reason::ReqConflict, "{e}");
    assert_eq!(s.dest_entries(), ["a", "b"]);
    s.assert_no_master_left(&ep);
}

#[test]
fn max_bytes_is_enforced() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let data = random_bytes(100_000);
    let remote = s.export("a", &data);
    let ep = s.endpoint();
    let dest = s.dest();
    // Declared within the cap, but the file is bigger than the cap.
    let mut j = job(&ep, &remote, &data, &dest, "a");
    j.expected_size = 50_000;
    j.max_bytes = 60_000;
    let e = sftp::download(&j).unwrap_err();
    assert_eq!(e.reason, Reason::FetchLimit, "{e}");
    // Declared beyond the cap: refused before connecting.
    let mut j = job(&ep, &remote, &data, &dest, "a");
    j.max_bytes = 99_999;
    let e = sftp::download(&j).unwrap_err();
    assert_eq!(e.reason, Reason::FetchLimit, "{e}");
    assert!(s.dest_entries().is_empty());
    s.assert_no_master_left(&ep);
}

#[test]
fn a_stalled_server_times_out_and_leaves_nothing() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let data = random_bytes(10);
    let remote = s.export("a", &data);
    // This key's forced command never speaks sftp (SF-02: no reply).
    let ep = SftpEndpoint { identity: s.path("node/sleepy_key"), ..s.endpoint() };
    let dest = s.dest();
    let mut j = job(&ep, &remote, &data, &dest, "a");
    j.idle_timeout = Duration::from_secs(2);
    let t = Instant::now();
    let e = sftp::download(&j).unwrap_err();
    assert_eq!(e.reason, Reason::FetchTimeout, "{e}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // The overall deadline applies too.
    let mut j = job(&ep, &remote, &data, &dest, "a");
    j.timeout = Duration::from_secs(2);
    let e = sftp::download(&j).unwrap_err();
    assert_eq!(e.reason, Reason::FetchTimeout, "{e}");
    assert!(e.message.contains("deadline"), "{e}");
    assert!(s.dest_entries().is_empty());
    s.assert_no_master_left(&ep);
}

#[test]
fn openssh_crate_transport_works_with_the_gate_and_leaves_no_master() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let data = random_bytes(3_000_000);
    let remote = s.export("a", &data);
    let ep = s.endpoint();
    let dest = s.dest();
    let tuning = Tuning { transport: Transport::OpensshMux, ..Tuning::default() };
    let got = sftp::download_tuned(&job(&ep, &remote, &data, &dest, "a"), &tuning).unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), data);
    // Its master was closed at the end of the download.
    let until = Instant::now() + Duration::from_secs(10);
    while !s.ssh_processes().is_empty() {
        assert!(Instant::now() < until, "{:?}", s.ssh_processes());
        std::thread::sleep(Duration::from_millis(100));
    }
    s.pin(&keygen(&s.path("node/other_host")));
    let e = sftp::download_tuned(&job(&ep, &remote, &data, &dest, "b"), &tuning).unwrap_err();
    assert_eq!(e.reason, Reason::FetchHostKey, "{e}");
    assert_eq!(s.dest_entries(), ["a"]);
}

#[test]
fn called_from_inside_a_tokio_runtime() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let data = random_bytes(10_000);
    let remote = s.export("a", &data);
    let ep = s.endpoint();
    let dest = s.dest();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let got = rt.block_on(async { sftp::download(&job(&ep, &remote, &data, &dest, "a")) }).unwrap();
    assert_eq!(std::fs::read(got.path).unwrap(), data);
    s.assert_no_master_left(&ep);
}

/// The content the hostile server serves: byte `offset % 251`.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn hostile_sftp_servers_are_contained() {
    if !require("sshd") {
        return;
    }
    if !Path::new("/usr/bin/python3").exists() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "/usr/bin/python3 is missing");
        eprintln!("skipped: /usr/bin/python3 is missing");
        return;
    }
    let s = Sshd::start();
    let ep = SftpEndpoint { identity: s.path("node/hostile_key"), ..s.endpoint() };
    let dest = s.dest();
    let size = 300_000;
    let data = pattern(size);
    let run = |mode: &str, name: &str| {
        std::fs::write(s.path("hostile_mode"), format!("{mode} {size}")).unwrap();
        let mut j = job(&ep, "/export/anything", &data, &dest, name);
        j.idle_timeout = Duration::from_secs(3);
        sftp::download(&j)
    };
    for (mode, reason, says) in [
        // SF-01: stat says 300 kB, the stream goes on.
        ("endless", Reason::FetchLimit, "more than the 300000 bytes"),
        ("overlong", Reason::FetchLimit, "answered a"),
        // A 2 GiB packet is refused before the sftp library allocates it.
        ("hugepacket", Reason::FetchLimit, "packet of 2147483647 bytes"),
        // SF-02: no answer to READ.
        ("stall", Reason::FetchTimeout, "idle"),
        ("short", Reason::FetchSizeMismatch, "ended after 150000 bytes"),
    ] {
        let e = run(mode, "a").unwrap_err();
        assert_eq!(e.reason, reason, "{mode}: {e}");
        assert!(e.message.contains(says), "{mode}: {e}");
        assert!(s.dest_entries().is_empty(), "{mode}: {:?}", s.dest_entries());
    }
    // A server with a small read limit is slow, not wrong.
    let got = run("shortreads", "b").unwrap();
    assert_eq!(std::fs::read(got.path).unwrap(), data);
    s.assert_no_master_left(&ep);
}

/// A server that answers every read with one byte, just often enough to
/// beat the idle timeout, is stopped by the minimum rate about one window
/// after the data starts (not at the job's deadline, hours later); an
/// honest server above the rate is not.
#[test]
fn a_dripping_server_is_stopped_by_the_minimum_rate() {
    if !require_all(&["sshd", "python3"]) {
        return;
    }
    let s = Sshd::start();
    let ep = SftpEndpoint { identity: s.path("node/hostile_key"), ..s.endpoint() };
    let dest = s.dest();
    let size = 300_000;
    let data = pattern(size);
    let rate = |bytes_per_sec| Some(sftp::MinRate { bytes_per_sec, window: Duration::from_secs(1) });
    std::fs::write(s.path("hostile_mode"), format!("drip {size}")).unwrap();
    let mut j = job(&ep, "/export/anything", &data, &dest, "a");
    j.idle_timeout = Duration::from_secs(5);
    // Without the rate check this download would end at its deadline.
    j.timeout = Duration::from_secs(30);
    j.min_rate = rate(64 * 1024);
    let e = sftp::download(&j).unwrap_err();
    assert_eq!(e.reason, Reason::FetchTimeout, "{e}");
    assert!(e.message.contains("less than the minimum rate of 65536 bytes/s"), "{e}");
    assert!(e.message.contains("received in 1 s"), "{e}");
    assert!(s.dest_entries().is_empty(), "{:?}", s.dest_entries());

    // A server with a small read limit but a fair pace passes.
    std::fs::write(s.path("hostile_mode"), format!("shortreads {size}")).unwrap();
    let mut j = job(&ep, "/export/anything", &data, &dest, "b");
    j.min_rate = rate(1000);
    let got = sftp::download(&j).unwrap();
    assert_eq!(std::fs::read(got.path).unwrap(), data);
    s.assert_no_master_left(&ep);
}

/// The server dies in the middle of the file: the reason says that the
/// connection was closed and how many of the declared bytes had arrived.
#[test]
fn a_connection_cut_mid_transfer_says_how_far_it_got() {
    if !require_all(&["sshd", "python3"]) {
        return;
    }
    let s = Sshd::start();
    let ep = SftpEndpoint { identity: s.path("node/hostile_key"), ..s.endpoint() };
    let dest = s.dest();
    let size = 300_000;
    let data = pattern(size);
    // Honest up to half the file, then the server process is killed.
    std::fs::write(s.path("hostile_mode"), format!("cut {size}")).unwrap();
    let e = sftp::download(&job(&ep, "/export/anything", &data, &dest, "a")).unwrap_err();
    assert_eq!(e.reason, Reason::FetchFailed, "{e}");
    assert!(e.message.contains("the connection was closed after 150000 of 300000 bytes"), "{e}");
    assert!(!e.message.contains("Background task"), "{e}");
    assert!(s.dest_entries().is_empty(), "{:?}", s.dest_entries());
    s.assert_no_master_left(&ep);
}

/// Slow (ControlPersist is 60 s): a master nobody closes still goes.
#[test]
#[ignore = "waits for ControlPersist (about 70 s)"]
fn master_exits_after_control_persist() {
    if !require("sshd") {
        return;
    }
    let s = Sshd::start();
    let data = random_bytes(10_000);
    let remote = s.export("a", &data);
    let ep = s.endpoint();
    let dest = s.dest();
    sftp::download(&job(&ep, &remote, &data, &dest, "a")).unwrap();
    assert!(!s.ssh_processes().is_empty());
    let until = Instant::now() + Duration::from_secs(sftp::CONTROL_PERSIST_SECS + 15);
    while !s.ssh_processes().is_empty() {
        assert!(Instant::now() < until, "{:?}", s.ssh_processes());
        std::thread::sleep(Duration::from_secs(1));
    }
}
