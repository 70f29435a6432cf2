//! Three Garage servers on loopback holding every object three times, for
//! the fault tests that stop one of them during uploads.
//!
//! Each server has its own 127.0.0.x, RPC and S3 ports, SQLite metadata and
//! data directory, and the same RPC secret; `replication_factor = 3` with
//! `consistency_mode = "consistent"`, so a write or a read needs two of the
//! three (a quorum) and the cluster goes on with one server down. It is set
//! up through the `garage` CLI the way an administrator does it: the first
//! server is told the other two (`garage node connect`), each gets a role in
//! its own zone (`layout assign -z dcN`), the layout is applied, one key is
//! imported and one bucket created and allowed to it.
//!
//! [`GarageCluster::kill`] sends SIGKILL (a crashed machine, not a clean
//! stop); [`GarageCluster::restart`] starts the same server on the same
//! directories and addresses and connects it to a running one again.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::process::{Pid, Signal as Sig, kill_process};

use super::{S3Access, config_text, garage_bin, hex_random};
use crate::env::{free_port, next_loopback, wait_until};
use crate::process::{Daemon, READY_TIMEOUT, Signal};

/// One server of the cluster.
struct Member {
    dir: PathBuf,
    config: PathBuf,
    addr: Ipv4Addr,
    s3_port: u16,
    /// `<full node id>@<addr>:<rpc port>`, as `garage node connect` takes it.
    id: String,
    daemon: Option<Daemon>,
}

/// A running 3-server Garage cluster with one bucket and one key (module
/// docs). Servers are numbered 0, 1, 2.
pub struct GarageCluster {
    bin: PathBuf,
    members: Vec<Member>,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

/// The number of servers, and of copies of each object.
const SERVERS: usize = 3;

impl GarageCluster {
    /// Start three servers under `dir` and set up bucket `bucket` (panics
    /// with a log tail when a server does not come up within
    /// [`READY_TIMEOUT`]).
    pub fn start(dir: &Path, bucket: &str) -> GarageCluster {
        let bin = garage_bin().expect("garage (see deploy/garage.sh)");
        let secret = hex_random(32);
        let mut members = Vec::new();
        for i in 0..SERVERS {
            let dir = dir.join(format!("garage{i}"));
            fs::create_dir_all(&dir).unwrap();
            let addr = next_loopback();
            let (rpc_port, s3_port) = (free_port(addr), free_port(addr));
            let config = dir.join("garage.toml");
            fs::write(&config, config_text(&dir, addr, rpc_port, s3_port, &secret, SERVERS as u8)).unwrap();
            members.push(Member { dir, config, addr, s3_port, id: String::new(), daemon: None });
        }
        let mut c = GarageCluster {
            bin,
            members,
            bucket: bucket.to_owned(),
            key_id: format!("GK{}", hex_random(12)),
            secret: hex_random(32),
        };
        for i in 0..SERVERS {
            c.spawn(i);
        }
        for i in 0..SERVERS {
            let mut id = String::new();
            wait_until(READY_TIMEOUT, "garage to answer `node id`", || match c.cli_try(i, &["node", "id", "-q"]) {
                Ok(out) => {
                    id = out.trim().to_owned();
                    id.contains('@')
                }
                Err(_) => false,
            });
            c.members[i].id = id;
        }
        for i in 1..SERVERS {
            let id = c.members[i].id.clone();
            c.cli(0, &["node", "connect", &id]);
        }
        for i in 0..SERVERS {
            let hex = c.node_hex(i).to_owned();
            c.cli(0, &["layout", "assign", "-z", &format!("dc{}", i + 1), "-c", "1G", &hex]);
        }
        c.cli(0, &["layout", "apply", "--version", "1"]);
        let (k, s) = (c.key_id.clone(), c.secret.clone());
        c.cli(0, &["key", "import", "--yes", "-n", "ferry", &k, &s]);
        c.cli(0, &["bucket", "create", bucket]);
        c.cli(0, &["bucket", "allow", "--read", "--write", "--owner", bucket, "--key", &k]);
        // Every server has the layout, the key and the bucket before a test
        // uses it: each answers a listing.
        for i in 0..SERVERS {
            let s3 = c.s3(i);
            wait_until(READY_TIMEOUT, "every Garage server to serve the bucket", || s3.try_get("?list-type=2").is_ok());
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&m.config).arg("server").env("RUST_LOG", "garage=info");
        let mut daemon =
            Daemon::spawn(&format!("garage{i}"), cmd, &m.dir.join("garage.log"), Signal::TERM, Duration::from_secs(5));
        daemon.wait_for_tcp(m.addr, m.s3_port, READY_TIMEOUT);
        m.daemon = Some(daemon);
    }

    /// The hexadecimal node id of server `i` (what `layout assign` takes).
    fn node_hex(&self, i: usize) -> &str {
        self.members[i].id.split('@').next().unwrap_or("")
    }

    /// The number of servers (3).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Never true (clippy's companion to [`GarageCluster::len`]).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// True while server `i` runs.
    pub fn is_up(&self, i: usize) -> bool {
        self.members[i].daemon.as_ref().is_some_and(Daemon::is_running)
    }

    /// Server `i`'s S3 endpoint, `http://127.0.0.x:port`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}:{}", self.members[i].addr, self.members[i].s3_port)
    }

    /// The bucket through server `i`'s S3 endpoint, with the cluster's key.
    pub fn s3(&self, i: usize) -> S3Access {
        S3Access {
            endpoint: self.endpoint(i),
            bucket: self.bucket.clone(),
            key_id: self.key_id.clone(),
            secret: self.secret.clone(),
        }
    }

    /// Kill server `i` with SIGKILL (no clean shutdown) and reap it.
    pub fn kill(&mut self, i: usize) {
        let mut d = self.members[i].daemon.take().unwrap_or_else(|| panic!("garage{i} is not running"));
        if let Some(pid) = d.pid().and_then(|p| Pid::from_raw(p as i32)) {
            let _ = kill_process(pid, Sig::KILL);
        }
        d.stop();
    }

    /// Start server `i` again on its directories and addresses, connect
    /// every running server to it (`garage node connect`: a peer that
    /// failed is otherwise retried only after a growing back-off), then wait
    /// until each of them lists it healthy.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.is_up(i), "garage{i} is running");
        self.spawn(i);
        let id = self.members[i].id.clone();
        // Until the servers have exchanged their status (some seconds) the
        // restarted one is listed with hostname `?`.
        let hex = self.node_hex(i)[..16].to_owned();
        for other in (0..self.len()).filter(|&j| j != i && self.is_up(j)) {
            wait_until(READY_TIMEOUT, "the restarted Garage server to rejoin", || {
                self.cli_try(other, &["node", "connect", &id]).is_ok()
            });
            wait_until(READY_TIMEOUT, "`garage status` to list every server healthy", || {
                self.cli_try(other, &["status"]).is_ok_and(|s| {
                    let line = s.lines().find(|l| l.starts_with(&hex)).unwrap_or("");
                    !s.contains("FAILED NODES") && line.split_whitespace().nth(1).is_some_and(|h| h != "?")
                })
            });
        }
    }

    fn cli_try(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.members[i].config)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run garage: {e}"))?;
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() { Ok(all) } else { Err(all) }
    }

    /// Run the `garage` CLI against server `i` (over RPC); panics on failure.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        self.cli_try(i, args).unwrap_or_else(|e| panic!("garage{i} {args:?} failed: {e}\n{}", self.log(i)))
    }

    /// Server `i`'s log (every run of it).
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(self.members[i].dir.join("garage.log")).unwrap_or_default()
    }
}
