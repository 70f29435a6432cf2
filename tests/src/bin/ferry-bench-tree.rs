//! Snapshot trees against tar mode and rsync (issue 10, "Numbers"), run by
//! `bench/tree.sh` (release build). One node, one client, real sshd on
//! loopback (the harness's fleet); the rsync runs go over ssh to the same
//! client sshd the node pulls from, with the same cipher. Prints figures
//! and ratios against the goals; asserts nothing about time.
//!
//! `ferry-bench-tree [SIZE_MB] [FILES] [CHANGED_PERMILLE]` (default 200,
//! 20000, 10 = 1%). The tree is generated deterministically (100
//! directories, incompressible contents, sizes between 0.5x and 1.5x the
//! mean). Steps, each timed from the client's `ferry backup --send` to the
//! node's request finished (scan, request, pull, publish):
//!
//! 1. first backup: tree mode, then `rsync -a` into an empty directory;
//!    tar mode too (for the record);
//! 2. CHANGED_PERMILLE of the files rewritten (same size, new bytes):
//!    tree mode, tar mode, `rsync -a --link-dest=<previous>` (rsnapshot);
//!    newly stored bytes = `du -s -B1` (hard-linked inodes counted once)
//!    of the node's data directory and rescue layers, or of the rsync
//!    area, after minus before;
//! 3. unchanged repeats (two): `files_hashed` from `ferry --json backup
//!    --send` (the goal: 0).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::fleet::{Client, Node, ok, run, text};
use ferry_tests::{TestDir, ssh_keygen};

const CIPHER: &str = "aes128-gcm@openssh.com";

/// xorshift64*: deterministic, fast, incompressible enough for zstd.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn file_path(root: &Path, i: usize) -> std::path::PathBuf {
    root.join(format!("d{:03}", i % 100)).join(format!("f{i:06}.bin"))
}

fn file_size(i: usize, mean: u64) -> u64 {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
    mean / 2 + r.next() % mean.max(1)
}

fn write_file(path: &Path, size: u64, seed: u64) {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut buf = Vec::with_capacity(size as usize + 8);
    while (buf.len() as u64) < size {
        buf.extend_from_slice(&r.next().to_le_bytes());
    }
    buf.truncate(size as usize);
    let mut f = fs::File::create(path).unwrap();
    f.write_all(&buf).unwrap();
}

fn generate(root: &Path, files: usize, mean: u64) -> u64 {
    for d in 0..100 {
        fs::create_dir_all(root.join(format!("d{d:03}"))).unwrap();
    }
    let mut total = 0;
    for i in 0..files {
        let size = file_size(i, mean);
        write_file(&file_path(root, i), size, i as u64 + 1);
        total += size;
    }
    total
}

/// Disk usage in bytes, each inode once (`du -s -B1` over all paths in one run).
fn du(paths: &[&Path]) -> u64 {
    let mut cmd = Command::new("du");
    cmd.args(["-s", "-c", "-B1"]).args(paths.iter().filter(|p| p.exists()));
    let out = ok(&mut cmd);
    out.lines().last().and_then(|l| l.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap()
}

/// Unix sockets under `dir`: the ssh connection masters still up (they
/// persist for a minute after their last session). None after a backup
/// means that side's connections were not multiplexed (a socket path too
/// long: `ferry_run::ssh::control_socket`), and its figures include a
/// handshake per connection that a deployment's short `state_dir` avoids.
fn sockets(dir: &Path) -> usize {
    use std::os::unix::fs::FileTypeExt;
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_socket() => 1,
            Ok(t) if t.is_dir() => sockets(&e.path()),
            _ => 0,
        })
        .sum()
}

/// `files_hashed` of the tree scans in a `ferry --json backup --send` output.
fn files_hashed(out: &str) -> Vec<u64> {
    fn walk(v: &serde_json::Value, acc: &mut Vec<u64>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(n) = m.get("files_hashed").and_then(|n| n.as_u64()) {
                    acc.push(n);
                }
                m.values().for_each(|x| walk(x, acc));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, acc)),
            _ => {}
        }
    }
    let mut acc = Vec::new();
    for v in serde_json::Deserializer::from_str(out).into_iter::<serde_json::Value>() {
        walk(&v.unwrap_or_else(|e| panic!("not JSON ({e}): {out}")), &mut acc);
    }
    acc
}

struct Bench {
    node: Node,
    client: Client,
    done: usize,
}

impl Bench {
    /// One `ferry --json backup SOURCE --send`, timed until the node has
    /// finished the request (stored, catalogued: the backup is done), then
    /// until the node's scan of the client is over (what it does after,
    /// the snapshot's rescue layer, done too), so the next step starts on
    /// an idle node. Returns (finished s, idle s, the client's JSON output).
    fn backup(&mut self, source: &str) -> (f64, f64, String) {
        mark(&format!("backup {source} starts"));
        let t = Instant::now();
        let out = ok(self.client.cmd().args(["--json", "backup", source, "--send"]));
        self.done += 1;
        while self.node.pool_ids(&self.client.name, "F").len() < self.done {
            assert!(self.node.pool_ids(&self.client.name, "E").is_empty(), "a request failed: {}", self.node.events());
            assert!(t.elapsed() < Duration::from_secs(3600), "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
        let finished = t.elapsed().as_secs_f64();
        // The scan holds the client's pool lock until it is done.
        let lock = fs::File::open(self.node.pool(&self.client.name).join(".lock")).unwrap();
        while lock.try_lock().is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
        lock.unlock().unwrap();
        mark(&format!("backup {source} ends"));
        (finished, t.elapsed().as_secs_f64(), out)
    }
}

/// With TREE_MARKS set, each step's start and end on standard error in
/// CLOCK_MONOTONIC seconds, the clock `perf record -k mono` stamps samples
/// with: `perf report --time A,B` then shows one step's CPU alone.
fn mark(what: &str) {
    if std::env::var_os("TREE_MARKS").is_some() {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        eprintln!("mark {}.{:09} {what}", now.tv_sec, now.tv_nsec);
    }
}

fn rsync(ssh: &str, from: &str, to: &Path, link_dest: Option<&Path>) -> f64 {
    let mut cmd = Command::new("rsync");
    cmd.args(["-a", "-e", ssh]);
    if let Some(l) = link_dest {
        cmd.arg(format!("--link-dest={}", l.display()));
    }
    cmd.arg(from).arg(to);
    mark("rsync starts");
    let t = Instant::now();
    let out = run(&mut cmd);
    mark("rsync ends");
    assert!(out.status.success(), "rsync failed: {}", text(&out));
    t.elapsed().as_secs_f64()
}

fn arg(n: usize, env: &str, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .or_else(|| std::env::var(env).ok())
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{env}: not a number: {v}")))
        .unwrap_or(default)
}

fn main() {
    let size_mb = arg(1, "TREE_MB", 200);
    let files = arg(2, "TREE_FILES", 20000) as usize;
    let permille = arg(3, "TREE_CHANGED_PERMILLE", 10) as usize;
    let td = TestDir::new("bench_tree");
    // TREE_PREPARE_RESCUE=0: node.toml `[tree] prepare_rescue = false`.
    let prepare = std::env::var("TREE_PREPARE_RESCUE").map_or(true, |v| v != "0");
    // TREE_FILES_IN_FLIGHT: node.toml `[tree] files_in_flight`.
    let depth = std::env::var("TREE_FILES_IN_FLIGHT").map_or(String::new(), |d| format!("files_in_flight = {d}\n"));
    let node = Node::start_with(&td, "backup1", &format!("[tree]\nprepare_rescue = {prepare}\n{depth}"));
    let tree = td.mkdir("tree");
    let mean = size_mb * 1_000_000 / files as u64;
    eprintln!("generating {files} files, {size_mb} MB in {} ...", tree.display());
    let bytes = generate(&tree, files, mean);
    let t = tree.display();
    let mut client = Client::new_with(
        &td,
        "host-a",
        &[&node],
        &format!(
            "[[source]]\nname = \"tree\"\nmodule = \"fs\"\nmode = \"tree\"\npath = \"{t}\"\n\n[[source]]\nname = \"tar\"\nmodule = \"fs\"\nmode = \"tar\"\npath = \"{t}\"\n"
        ),
    );
    client.gitosis_section.push_str(&format!("tree-roots = {t}\n"));
    node.enroll(&[&client]);
    // rsync's own key on the same client sshd, not bound to the gate.
    let key = td.join("rsync/id");
    let line = ssh_keygen(&key, "rsync-bench");
    let ak = client.base.join("authorized_keys");
    let mut f = fs::OpenOptions::new().append(true).open(&ak).unwrap();
    writeln!(f, "{line}").unwrap();
    let kh = td.join("rsync/known_hosts");
    fs::write(&kh, format!("{} {}\n", client.sshd.addr(), client.sshd.host_key_pub())).unwrap();
    let ssh = format!(
        "ssh -F /dev/null -p {} -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -c {CIPHER}",
        client.sshd.port(),
        key.display(),
        kh.display()
    );
    let from = format!("{}@{}:{}/", client.sshd.user(), client.sshd.addr(), t);
    let rs = td.mkdir("rsync/snap");
    let srv = node.srv();
    let mut b = Bench { node, client, done: 0 };

    // 1. First backups.
    let _ = ok(Command::new("sync").arg("-f").arg(&tree));
    let (tree_first, tree_first_idle, out) = b.backup("tree");
    let hashed_first = files_hashed(&out);
    let masters = (sockets(&b.client.base.join("state")), sockets(&b.node.base));
    let rsync_first = rsync(&ssh, &from, &rs.join("0"), None);
    // What making rsync's copy durable adds (one syncfs, the cheapest way;
    // a tree pull syncs before it publishes, rsync -a never does).
    let t = Instant::now();
    let _ = ok(Command::new("sync").arg("-f").arg(rs.join("0")));
    let rsync_first_synced = rsync_first + t.elapsed().as_secs_f64();
    let (tar_first, _, _) = b.backup("tar");

    // 2. CHANGED_PERMILLE of the files rewritten.
    let step = (1000 / permille.max(1)).max(1);
    let mut changed = 0;
    let mut changed_bytes = 0;
    for i in (0..files).step_by(step) {
        let size = file_size(i, mean);
        write_file(&file_path(&tree, i), size, (i + files) as u64 + 7);
        changed += 1;
        changed_bytes += size;
    }
    std::thread::sleep(Duration::from_millis(200)); // past the scan's racy window
    // What the node stores: the data directory and the rescue layers
    // (the web catalog, rewritten in the background, is left out).
    let (data, meta) = (srv.join("data"), srv.join("state/rescue-meta"));
    let node_du = || du(&[&data, &meta]);
    let d0 = node_du();
    let (tree_rep, tree_rep_idle, out) = b.backup("tree");
    let hashed_rep = files_hashed(&out);
    let d1 = node_du();
    let (tar_rep, _, _) = b.backup("tar");
    let d2 = node_du();
    let r0 = du(&[&rs]);
    let rsync_rep = rsync(&ssh, &from, &rs.join("1"), Some(&rs.join("0")));
    let r1 = du(&[&rs]);
    let (tree_stored, tar_stored, rsync_stored) = (d1 - d0, d2 - d1, r1 - r0);

    // 3. Unchanged repeats.
    let (tree_same, _, out) = b.backup("tree");
    let hashed_same = files_hashed(&out);
    let (tree_same2, _, out) = b.backup("tree");
    let hashed_same2 = files_hashed(&out);

    let mb = |x: u64| x as f64 / 1e6;
    let pct = |x: u64| 100.0 * x as f64 / bytes as f64;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "tree: {files} files, {:.1} MB; changed: {changed} files, {:.2} MB ({:.2}%); sshd on loopback, cipher {CIPHER}; [tree] prepare_rescue = {prepare}",
        mb(bytes),
        mb(changed_bytes),
        pct(changed_bytes)
    );
    println!(
        "ssh connection masters after the first backup: client {}, node {}{}",
        masters.0,
        masters.1,
        if masters.0 == 0 || masters.1 == 0 {
            " (0: not multiplexed, the test root is too deep for a socket name; a handshake per connection is measured)"
        } else {
            ""
        }
    );
    println!();
    println!("{:<44} {:>9} {:>14} {:>8}", "run", "wall s", "stored MB", "stored%");
    let row = |name: &str, s: f64, st: Option<u64>| match st {
        Some(v) => println!("{name:<44} {s:>9.2} {:>14.2} {:>7.2}%", mb(v), pct(v)),
        None => println!("{name:<44} {s:>9.2} {:>14} {:>8}", "", ""),
    };
    row("first: tree mode (ferry backup -> finished)", tree_first, None);
    row("first: tree mode, and its rescue layer", tree_first_idle, None);
    row("first: rsync -a over ssh", rsync_first, None);
    row("first: rsync -a, then sync -f (durable)", rsync_first_synced, None);
    row("first: tar mode", tar_first, None);
    row("1% changed: tree mode", tree_rep, Some(tree_stored));
    row("1% changed: tree mode, and its rescue layer", tree_rep_idle, None);
    row("1% changed: tar mode", tar_rep, Some(tar_stored));
    row("1% changed: rsync -a --link-dest", rsync_rep, Some(rsync_stored));
    row("unchanged: tree mode", tree_same, None);
    row("unchanged again: tree mode", tree_same2, None);
    println!();
    println!(
        "files_hashed: first {hashed_first:?}, 1% changed {hashed_rep:?}, unchanged {hashed_same:?}, unchanged again {hashed_same2:?}"
    );
    println!();
    println!("{:<44} {:>8} {:>8}", "goal", "ratio", "target");
    let goal = |name: &str, r: f64, target: f64| println!("{name:<44} {r:>8.2} {target:>8.2} {}", verdict(r <= target));
    goal("repeat wall: tree / tar mode", tree_rep / tar_rep, 0.5);
    goal("repeat wall: tree / rsync --link-dest", tree_rep / rsync_rep, 1.0);
    goal("first wall: tree / rsync -a", tree_first / rsync_first, 1.3);
    println!(
        "{:<44} {:>8.2} {:>8} (both copies durable; for the record)",
        "  first wall: tree / (rsync -a + sync -f)",
        tree_first / rsync_first_synced,
        ""
    );
    println!(
        "{:<44} {:>8.2} {:>8.2} (finished and its rescue layer built)",
        "  repeat wall, with the layer: tree / tar",
        tree_rep_idle / tar_rep,
        0.5
    );
    println!(
        "{:<44} {:>8.2} {:>8.2} (finished and its rescue layer built)",
        "  first wall, with the layer: tree / rsync",
        tree_first_idle / rsync_first,
        1.3
    );
    goal("repeat stored: tree / tree size", tree_stored as f64 / bytes as f64, 0.02);
    println!(
        "{:<44} {:>8} {:>8} {}",
        "unchanged repeat: files hashed",
        hashed_same.iter().sum::<u64>(),
        0,
        verdict(hashed_same.iter().all(|&n| n == 0))
    );
}
