//! The node's `sftp` module: download one file a client prepared in its
//! export directory, over SSH the node controls, and store it only once its
//! size and SHA-256 match the request (SECURITY C5, SF-01..06, GU-20).
//!
//! # Transport: our own `ssh -s sftp` child (chosen) or the openssh crate
//!
//! Two ways to reach the client's sftp server were built and measured with
//! `bench/sftp.sh` (1 GiB over loopback, 3 interleaved rounds):
//!
//! * [`Transport::OwnChild`] (the default) spawns `ssh … -s -- host sftp`
//!   with the node's hardened option set (the one `core.sshCommand` uses for
//!   git pulls, plus `GlobalKnownHostsFile=/dev/null`) and runs
//!   [`openssh_sftp_client::Sftp::new`] over the child's pipes.
//!   Multiplexing is OpenSSH's own: `ControlMaster=auto`,
//!   `ControlPersist=60` and a `ControlPath` of its own under `control_dir`
//!   (`sftp-<hash>`; sftp never shares the git master, whose options may
//!   differ), or no multiplexing at all when that path would not fit in a
//!   unix socket name. Files larger than [`Tuning::multiplex_max`] (256 MiB)
//!   get a connection of their own: through a master every byte takes one
//!   more hop (master, unix socket, mux client), which costs more CPU than
//!   a new handshake once a file is that large.
//! * [`Transport::OpensshMux`] uses the openssh crate's `SessionBuilder`
//!   (`KnownHosts::Strict`, `keyfile`, `control_directory`, …) and native
//!   mux, with an `ssh_config` written per endpoint for the options the
//!   builder cannot pass (`HostKeyAlias`, `IdentityAgent none`, ciphers).
//!
//! Speed does not separate them: the data path is the same (the master
//! writes into a pipe we read), and the medians were within noise of each
//! other (mux/own 1.17 in one run, 0.95 in another). The own child wins on
//! everything else: it runs the node's configured `ssh` binary with a
//! cleared environment (the crate always runs `ssh` from `PATH` and
//! inherits the environment), its argv is one auditable list
//! ([`ssh_args`]), a master it starts can outlive it by `ControlPersist` and
//! no more (the crate's default is "forever", and a killed node process
//! leaks it), it reuses a master across downloads, and it degrades to no
//! multiplexing where the crate would fail on a deep `control_dir`. The mux
//! transport stays only so the benchmark can keep comparing.
//!
//! # Reading
//!
//! The easy reader of openssh-sftp-client issues one 4 KiB request at a
//! time (13 MiB/s, CRATES.md §3). Here up to [`Tuning::depth`] reads of
//! [`MAX_READ`] bytes are in flight, each on its own clone of the remote
//! handle at an *explicit* offset (the crate's `File::read` moves a handle's
//! offset by the length asked, not the length received, and clones keep
//! their own offsets), and the answers are consumed strictly in offset
//! order, so memory stays near `2 × depth × chunk` (16 MiB by default,
//! counting the writer's queue) whatever the file size. A
//! short answer is completed at once and makes later reads smaller (a server
//! with a lower limit). The remote size is checked (lstat, then fstat of
//! what `open` really opened) but never trusted: a read past the declared
//! end must say EOF (else `E_FETCH_LIMIT`), an early EOF is a size
//! mismatch, an answer longer than the read is refused, and a packet larger
//! than any answer we asked for is refused before the sftp library would
//! allocate it (`FrameGuard`). The pipe from ssh is grown to 1 MiB, which
//! cut ssh's own CPU time by about 30 % (it stops growing and zeroing
//! its channel buffers).
//!
//! Only `open`, `close`, `read`, `lstat`, `fstat` and `limits` are sent, so
//! the client's gate can be `sftp-server -R -p
//! open,close,read,lstat,fstat,stat,realpath,limits` (no listing, no
//! home-directory; not even realpath is used). Local names come only from
//! the job, never from the server (SF-04).
//!
//! # Time
//!
//! Every await on the network is bounded by the job's deadline, an idle
//! timeout, and — once data flows — a minimum rate over a window
//! ([`MinRate`], `clock.rs`), so neither a silent nor a dripping server
//! holds a request for long (`E_FETCH_TIMEOUT`). A channel that breaks
//! mid-transfer says after how many of the declared bytes.
//!
//! # Writing
//!
//! Bytes are counted against the declared size, hashed and written on a
//! thread of their own (SHA-256 is the largest CPU cost of a download:
//! about 0.6 s per GiB with sha2 0.11's SHA-NI code on the project's
//! machines, as fast as OpenSSL), into `dest_dir/.tmp-<name>-<pid>`
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`, 0600). Files of [`DIRECT_FROM`] (8 MiB) or
//! more are written with `O_DIRECT` by an I/O thread, in aligned 2 MiB
//! blocks (`direct.rs`: the page cache's copy, allocation and writeback
//! cost as much CPU as the hash); smaller ones through the page cache,
//! with writeback started every 8 MiB. Either way the final `fsync` waits
//! for the tail only, and a large download neither piles up dirty memory
//! nor evicts the node's page cache. Then the digest is compared (a
//! mismatch discards the file, SF-06), the file is synced, renamed into
//! place with `RENAME_NOREPLACE` (hard link where the file system lacks
//! it) and the directory synced. A guard removes the temporary file on
//! every other path, timeouts and panics included.
//!
//! # Speed
//!
//! Over loopback on the 2-core test machine, sshd, sftp-server, ssh and
//! Ferry share two cores, so the wall time follows the CPU time of all of
//! them (`bench/sftp.sh CPU=1` measures it per side). Profiled with perf
//! per GiB: SHA-256 0.6 s (the floor: sha2's SHA-NI code is as fast as
//! OpenSSL here), reading ssh's pipe 0.25 s, ssh itself 0.9–1.1 s (as for
//! `sftp`). Three costs were removed: the page cache (copy, delayed
//! allocation, writeback, dropping the pages: 0.5 s, now `O_DIRECT` from
//! the very buffers that were hashed), the ControlMaster's extra hop for
//! large files (0.2–0.4 s), and a copy into staging blocks (0.14 s). The
//! client side now uses about 2.2 s of CPU per GiB against 2.9 s before
//! and 1.9 s for `sftp`, which writes into the page cache and never syncs.
//! Over a real link, where the client's cores do the sending, the hashing
//! thread overlaps with the transfer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_request::Reason;
use ferry_text::escape;

use crate::PullError;

mod batch;
mod clock;
mod conn;
mod direct;
mod many;
mod sink;
mod ssh;
mod transfer;

pub use batch::batch_word;
pub use many::{
    DEFAULT_FILES_IN_FLIGHT, FILE_BUFFERS, ManyJob, ManyReport, RemoteFile, SinkError, Skipped, fetch_many,
};
pub use ssh::{close_master, control_path, ssh_args};

/// The largest read OpenSSH's sftp-server answers in one packet
/// (`SFTP_MAX_MSG_LENGTH - 1024`); larger requests come back short.
pub const MAX_READ: u32 = 261_120;
/// Reads in flight by default: 32 × 255 KiB = 8 MiB of buffers, enough to
/// keep a loopback or LAN link busy (CRATES.md §3 window sizes).
pub const DEFAULT_DEPTH: usize = 32;
/// Files from this size on are written with `O_DIRECT` (smaller ones gain
/// little and would pay for the aligned blocks).
pub const DIRECT_FROM: u64 = 8 << 20;
/// Default of [`Tuning::multiplex_max`].
pub const MULTIPLEX_MAX: u64 = 256 << 20;
/// The idle master's lifetime, ciphers and key exchanges of every ssh
/// Ferry starts (one option set: [`ferry_run::ssh::SshOptions`]).
pub use ferry_run::ssh::{CIPHERS, CONTROL_PERSIST_SECS, KEX};
/// Stderr kept from ssh for error messages (SECURITY C11).
pub(super) const STDERR_CAP: usize = 8 * 1024;
/// Bounded waits while closing down a finished or failed connection.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How to reach one client's sftp server: every field is the node's or the
/// enrolment's, never the request's.
#[derive(Debug, Clone)]
pub struct SftpEndpoint {
    /// The ssh binary.
    pub ssh: PathBuf,
    /// The client's enrolled address.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The file holding the client's pinned host key, under `host_key_alias`.
    pub known_hosts: PathBuf,
    pub host_key_alias: String,
    /// The node's per-client pull key.
    pub identity: PathBuf,
    /// Node-owned directory for ControlMaster sockets.
    pub control_dir: PathBuf,
    pub connect_timeout: Duration,
}

/// One download.
#[derive(Debug, Clone)]
pub struct DownloadJob<'a> {
    pub endpoint: &'a SftpEndpoint,
    /// Absolute, already validated to lie in the enrolled export directory.
    pub remote_path: &'a str,
    pub expected_size: u64,
    pub expected_sha256: [u8; 32],
    /// Per-artifact / quota cap.
    pub max_bytes: u64,
    /// Exists and is node-owned.
    pub dest_dir: &'a Path,
    /// A validated token; the only source of the local name.
    pub dest_name: &'a str,
    /// Overall deadline, connection included.
    pub timeout: Duration,
    /// No progress for this long aborts the download.
    pub idle_timeout: Duration,
    /// The slowest transfer accepted once data flows; `None`: only the
    /// idle timeout and the deadline apply.
    pub min_rate: Option<MinRate>,
}

/// A minimum transfer rate, checked over consecutive windows (a server that
/// answers just often enough to beat the idle timeout is stopped about one
/// window after it starts dripping; see `clock.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes per second, averaged over one window; 0 turns the check off.
    pub bytes_per_sec: u64,
    pub window: Duration,
}

/// A stored, verified download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
    pub elapsed: Duration,
}

/// How the sftp channel is opened (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// `ssh … -s sftp` spawned by us, multiplexed by OpenSSH itself.
    #[default]
    OwnChild,
    /// The openssh crate's native mux (kept for benchmarks).
    OpensshMux,
}

/// Knobs for benchmarks and tests; [`download`] uses the defaults.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub transport: Transport,
    /// Reads in flight (1..=256).
    pub depth: usize,
    /// Bytes per read (4096..=[`MAX_READ`]).
    pub chunk: u32,
    /// Use (or start) a ControlMaster; `false` makes one plain connection
    /// ([`Transport::OwnChild`] only).
    pub multiplex: bool,
    /// `FlushInterval` of the sftp client's request writer.
    pub flush_interval: Duration,
    /// Hash and write on a thread of their own, beside the protocol.
    pub writer_thread: bool,
    /// Capacity asked for the pipe from ssh (0: leave the default).
    pub pipe_size: usize,
    /// Write files of [`DIRECT_FROM`] bytes or more with `O_DIRECT` where
    /// the file system allows it (see `direct.rs`).
    pub direct_io: bool,
    /// Files larger than this get a connection of their own even when
    /// `multiplex` is on: through a ControlMaster every byte takes one more
    /// hop (master, unix socket, mux client), about 0.3 s of CPU per GiB,
    /// which costs more than a new handshake (about 0.2 s, mostly waiting)
    /// once a file is this large.
    pub multiplex_max: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            transport: Transport::OwnChild,
            depth: DEFAULT_DEPTH,
            chunk: MAX_READ,
            multiplex: true,
            flush_interval: Duration::ZERO,
            writer_thread: true,
            pipe_size: 1 << 20,
            direct_io: true,
            multiplex_max: MULTIPLEX_MAX,
        }
    }
}

/// Download `job.remote_path` into `job.dest_dir/job.dest_name`, verified.
pub fn download(job: &DownloadJob<'_>) -> Result<Downloaded, PullError> {
    download_tuned(job, &Tuning::default())
}

/// [`download`] with explicit [`Tuning`].
pub fn download_tuned(job: &DownloadJob<'_>, tuning: &Tuning) -> Result<Downloaded, PullError> {
    let start = Instant::now();
    precheck(job)?;
    let run = || -> Result<Downloaded, PullError> {
        // A private current-thread runtime: the protocol side is one
        // pipeline of small tasks; the heavy work (hashing, writing) already
        // has a thread of its own.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PullError::new(Reason::Internal, format!("start the sftp runtime: {e}")))?;
        rt.block_on(transfer::run_download(job, tuning, start))
    };
    // Blocking on a runtime inside another one panics, so a caller that is
    // itself async gets the download on a thread of its own.
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(run).join()).unwrap_or_else(|p| std::panic::resume_unwind(p))
    } else {
        run()
    }
}

fn precheck(job: &DownloadJob<'_>) -> Result<(), PullError> {
    ssh::check_endpoint(job.endpoint)?;
    if !job.remote_path.starts_with('/') || job.remote_path.bytes().any(|b| b.is_ascii_control()) {
        return Err(PullError::new(
            Reason::ReqPath,
            format!("remote path {} is not absolute", escape(job.remote_path, 200)),
        ));
    }
    if !ferry_text::is_safe_token(job.dest_name) {
        return Err(PullError::new(
            Reason::ReqName,
            format!("local name {} is not a safe token", escape(job.dest_name, 200)),
        ));
    }
    if job.expected_size > job.max_bytes {
        return Err(PullError::new(
            Reason::FetchLimit,
            format!("the request declares {} bytes, more than the limit of {} bytes", job.expected_size, job.max_bytes),
        ));
    }
    // Cheap early refusal; the no-replace rename at the end is the guard.
    let dest = job.dest_dir.join(job.dest_name);
    if std::fs::symlink_metadata(&dest).is_ok() {
        return Err(already_stored(&dest));
    }
    Ok(())
}

pub(super) fn already_stored(dest: &Path) -> PullError {
    PullError::new(Reason::ReqConflict, format!("{} already exists; stored files are never replaced", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precheck_refuses_before_connecting() {
        let d = tempfile::tempdir().unwrap();
        let ep = ssh::tests::endpoint(d.path());
        let job = DownloadJob {
            endpoint: &ep,
            remote_path: "/export/a",
            expected_size: 11,
            expected_sha256: [0; 32],
            max_bytes: 10,
            dest_dir: d.path(),
            dest_name: "a",
            timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            min_rate: None,
        };
        assert_eq!(download(&job).unwrap_err().reason, Reason::FetchLimit);
        assert_eq!(
            download(&DownloadJob { dest_name: "../a", max_bytes: 100, ..job.clone() }).unwrap_err().reason,
            Reason::ReqName
        );
        assert_eq!(
            download(&DownloadJob { remote_path: "a", max_bytes: 100, ..job.clone() }).unwrap_err().reason,
            Reason::ReqPath
        );
        std::fs::write(d.path().join("a"), b"x").unwrap();
        assert_eq!(download(&DownloadJob { max_bytes: 100, ..job }).unwrap_err().reason, Reason::ReqConflict);
    }
}
