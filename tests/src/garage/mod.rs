//! A one-node Garage (S3-compatible object storage) on loopback, for the
//! node's S3 artifact store.
//!
//! Garage is not a Debian package: CI builds it once with `cargo install
//! garage --version 2.5.0 --locked --root /var/cache/ferry-ci/garage`
//! (deploy/garage.sh) and the harness finds it there, or at `$FERRY_GARAGE`,
//! or on `PATH`. The node keeps its metadata in SQLite, binds its RPC and S3
//! ports on its own 127.0.0.x, and is set up through the `garage` CLI the way
//! an administrator does it (over RPC): layout assigned and applied, one key
//! imported, one bucket created and allowed to that key. Dropped, the server
//! is killed and its directory goes with the test's.
//!
//! [`GarageCluster`] (in `cluster`) runs three such servers with replication
//! factor 3, for the fault tests that stop one of them.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::env::{free_port, next_loopback, wait_until};
use crate::process::{Daemon, READY_TIMEOUT, Signal};

mod cluster;

pub use cluster::GarageCluster;

/// Where CI caches its Garage build.
pub const GARAGE_CACHED: &str = "/var/cache/ferry-ci/garage/bin/garage";

/// The `garage` binary: `$FERRY_GARAGE`, the CI cache, or `garage` on PATH.
pub fn garage_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERRY_GARAGE") {
        return Some(PathBuf::from(p));
    }
    if Path::new(GARAGE_CACHED).is_file() {
        return Some(GARAGE_CACHED.into());
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("garage")).find(|p| p.is_file())
}

/// A running one-node Garage with one bucket and one key (module docs).
pub struct Garage {
    pub daemon: Daemon,
    bin: PathBuf,
    config: PathBuf,
    addr: Ipv4Addr,
    s3_port: u16,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

pub(crate) fn hex_random(bytes: usize) -> String {
    use std::io::Read as _;
    let mut b = vec![0u8; bytes];
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).expect("/dev/urandom");
    hex::encode(b)
}

/// A server's garage.toml: SQLite metadata under `dir`, RPC and S3 on
/// `addr`, and `replication` copies of each object (3 with the
/// `consistent` mode: writes and reads need 2 of the 3 nodes).
pub(crate) fn config_text(
    dir: &Path,
    addr: Ipv4Addr,
    rpc_port: u16,
    s3_port: u16,
    secret: &str,
    replication: u8,
) -> String {
    format!(
        "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
         replication_factor = {replication}\nconsistency_mode = \"consistent\"\n\
         rpc_bind_addr = \"{addr}:{rpc_port}\"\nrpc_public_addr = \"{addr}:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\n\
         [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"{addr}:{s3_port}\"\nroot_domain = \".s3.garage.localhost\"\n",
        meta = dir.join("meta").display(),
        data = dir.join("data").display(),
    )
}

impl Garage {
    /// Start Garage in `dir` with bucket `bucket` (panics with the log tail
    /// when it does not come up within [`READY_TIMEOUT`]).
    pub fn start(dir: &Path, bucket: &str) -> Garage {
        let bin = garage_bin().expect("garage (see deploy/garage.sh)");
        fs::create_dir_all(dir).unwrap();
        let addr = next_loopback();
        let (rpc_port, s3_port) = (free_port(addr), free_port(addr));
        let config = dir.join("garage.toml");
        fs::write(&config, config_text(dir, addr, rpc_port, s3_port, &hex_random(32), 1)).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("-c").arg(&config).arg("server").env("RUST_LOG", "garage=info");
        let mut daemon = Daemon::spawn("garage", cmd, &dir.join("garage.log"), Signal::TERM, Duration::from_secs(5));
        daemon.wait_for_tcp(addr, s3_port, READY_TIMEOUT);
        let g = Garage {
            daemon,
            bin,
            config,
            addr,
            s3_port,
            bucket: bucket.to_owned(),
            key_id: format!("GK{}", hex_random(12)),
            secret: hex_random(32),
        };
        // The CLI reaches the server over RPC once it listens there.
        let mut id = String::new();
        wait_until(READY_TIMEOUT, "garage to answer `node id`", || match g.cli_try(&["node", "id", "-q"]) {
            Ok(out) => {
                id = out.trim().split('@').next().unwrap_or("").to_owned();
                !id.is_empty()
            }
            Err(_) => false,
        });
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
        g.cli(&["layout", "apply", "--version", "1"]);
        let (k, s) = (g.key_id.clone(), g.secret.clone());
        g.cli(&["key", "import", "--yes", "-n", "ferry", &k, &s]);
        g.cli(&["bucket", "create", bucket]);
        g.cli(&["bucket", "allow", "--read", "--write", "--owner", bucket, "--key", &k]);
        g
    }

    fn cli_try(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run garage: {e}"))?;
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() { Ok(all) } else { Err(all) }
    }

    /// Run the `garage` CLI against this server; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_try(args).unwrap_or_else(|e| panic!("garage {args:?} failed: {e}\n{}", self.daemon.output()))
    }

    /// `http://127.0.0.x:port`
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.addr, self.s3_port)
    }

    /// This server's bucket as seen with its key, by curl.
    pub fn s3(&self) -> S3Access {
        S3Access {
            endpoint: self.endpoint(),
            bucket: self.bucket.clone(),
            key_id: self.key_id.clone(),
            secret: self.secret.clone(),
        }
    }

    /// Every object key in the bucket under `prefix` (S3 ListObjectsV2 by
    /// curl; fewer than 1000 keys in a test).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.s3().keys(prefix)
    }

    /// Store `body` under `key` (S3 PutObject by curl).
    pub fn put(&self, key: &str, body: &[u8]) {
        self.s3().put(key, body)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.daemon.output()
    }
}

/// One bucket at one S3 endpoint with one key, reached by `curl`'s own
/// SigV4 signing: an S3 client independent of the node's.
#[derive(Clone, Debug)]
pub struct S3Access {
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

/// The texts between `<tag>` and `</tag>` in `xml`, in order.
fn xml_all(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open).skip(1).filter_map(|s| s.split(&close).next()).map(str::to_owned).collect()
}

impl S3Access {
    fn curl(&self) -> Command {
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--fail-with-body",
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            "--aws-sigv4",
            "aws:amz:garage:s3",
            "--user",
        ])
        .arg(format!("{}:{}", self.key_id, self.secret));
        c
    }

    /// GET `path_and_query` below the bucket; `Err` with the body on failure.
    pub fn try_get(&self, path_and_query: &str) -> Result<Vec<u8>, String> {
        let out = self.curl().arg(format!("{}/{}{path_and_query}", self.endpoint, self.bucket)).output().expect("curl");
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        }
    }

    fn get_text(&self, path_and_query: &str) -> String {
        let body = self.try_get(path_and_query).unwrap_or_else(|e| panic!("GET {path_and_query} failed: {e}"));
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Every object key in the bucket under `prefix` (ListObjectsV2; fewer
    /// than 1000 keys in a test), sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let xml = self.get_text(&format!("?list-type=2&prefix={}", prefix.replace('/', "%2F")));
        let mut keys = xml_all(&xml, "Key");
        keys.sort();
        keys
    }

    /// The object stored under `key` (GetObject).
    pub fn get(&self, key: &str) -> Vec<u8> {
        self.try_get(&format!("/{key}")).unwrap_or_else(|e| panic!("GET {key} failed: {e}"))
    }

    /// Multipart uploads begun and neither completed nor aborted under
    /// `prefix`, as (key, upload id) (ListMultipartUploads).
    pub fn multipart_uploads(&self, prefix: &str) -> Vec<(String, String)> {
        // Parameters in canonical (sorted) order: curl 7.88 signs the query
        // as written.
        let xml = self.get_text(&format!("?prefix={}&uploads=", prefix.replace('/', "%2F")));
        xml.split("<Upload>").skip(1).map(|u| (xml_all(u, "Key").remove(0), xml_all(u, "UploadId").remove(0))).collect()
    }

    /// How many parts of upload `id` of `key` the server holds (ListParts).
    pub fn parts(&self, key: &str, id: &str) -> usize {
        xml_all(&self.get_text(&format!("/{key}?uploadId={id}")), "PartNumber").len()
    }

    /// Abort multipart upload `id` of `key` (AbortMultipartUpload): its
    /// parts are gone and completing it fails.
    pub fn abort_multipart(&self, key: &str, id: &str) {
        let out = self
            .curl()
            .args(["-X", "DELETE"])
            .arg(format!("{}/{}/{key}?uploadId={id}", self.endpoint, self.bucket))
            .output()
            .expect("curl");
        assert!(out.status.success(), "abort {key} failed: {}", String::from_utf8_lossy(&out.stdout));
    }

    /// Store `body` under `key` (PutObject).
    pub fn put(&self, key: &str, body: &[u8]) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        fs::write(tmp.path(), body).unwrap();
        let out = self
            .curl()
            .arg("-X")
            .arg("PUT")
            .arg("--data-binary")
            .arg(format!("@{}", tmp.path().display()))
            .arg(format!("{}/{}/{key}", self.endpoint, self.bucket))
            .output()
            .expect("curl");
        assert!(out.status.success(), "put {key} failed: {}", String::from_utf8_lossy(&out.stdout));
    }
}
