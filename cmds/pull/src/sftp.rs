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
//!   unix socket name.
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
//! # Writing
//!
//! Bytes are counted against the declared size, hashed and written on a
//! thread of their own (SHA-256 is the largest CPU cost of a download:
//! about 1 s per GiB with sha2 0.11's SHA-NI code on the project's
//! machines), into `dest_dir/.tmp-<name>-<pid>` (`O_CREAT|O_EXCL|O_NOFOLLOW`,
//! 0600). Writeback is started every 8 MiB, so the final `fsync` waits for
//! the tail only and a large download neither piles up dirty memory nor
//! evicts the node's page cache. Then the digest is compared (a mismatch
//! discards the file, SF-06), the file is synced, renamed into place with
//! `RENAME_NOREPLACE` (hard link where the file system lacks it) and the
//! directory synced. A guard removes the temporary file on every other path,
//! timeouts and panics included.
//!
//! # Speed
//!
//! On the 2-core test machine, with client and node on the same cores and
//! other builds running, Ferry's median wall time for 1 GiB (two runs of
//! three rounds each) was 0.90–1.04× that of `sftp` and 1.02–1.07× that of
//! `scp` at `nice -10`, and 1.12× / 1.11–1.19× without. The difference is
//! CPU: Ferry does strictly more work (SHA-256 at about 1 s per GiB, and
//! durable writes); its ssh uses less CPU than theirs, thanks to the pipe
//! size. Over a real link, where the client's cores do the sending, the
//! hashing thread overlaps with the transfer.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferry_request::Reason;
use ferry_text::escape;
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::metadata::MetaData;
use openssh_sftp_client::{Error as SftpError, Sftp, SftpOptions};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, ReadBuf};
use tokio::task::JoinHandle;

use crate::PullError;

/// The largest read OpenSSH's sftp-server answers in one packet
/// (`SFTP_MAX_MSG_LENGTH - 1024`); larger requests come back short.
pub const MAX_READ: u32 = 261_120;
/// Reads in flight by default: 32 × 255 KiB = 8 MiB of buffers, enough to
/// keep a loopback or LAN link busy (CRATES.md §3 window sizes).
pub const DEFAULT_DEPTH: usize = 32;
/// How long an idle master stays for the next pull from the same client.
pub const CONTROL_PERSIST_SECS: u64 = 60;
/// Ciphers in order of preference: aes128-gcm is 1.4–1.6× faster than
/// chacha20-poly1305 on CPUs with AES-NI (CRATES.md §3). Same as git pulls.
pub const CIPHERS: &str = "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com";
/// Key exchange: curve25519 first halves the handshake (0.23 s against
/// 0.44 s with sntrup761). Same as git pulls.
pub const KEX: &str = "curve25519-sha256,curve25519-sha256@libssh.org,sntrup761x25519-sha512@openssh.com";
/// Longest `ControlPath` we use: sun_path holds 107 bytes and ssh appends a
/// 17-byte temporary suffix while creating the socket (same rule as the
/// git pulls' `ssh_command`).
const SOCKET_PATH_LIMIT: usize = 104 - 17;
/// Stderr kept from ssh for error messages (SECURITY C11).
const STDERR_CAP: usize = 8 * 1024;
/// Bounded waits while closing down a finished or failed connection.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

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
        rt.block_on(run_download(job, tuning, start))
    };
    // Blocking on a runtime inside another one panics, so a caller that is
    // itself async gets the download on a thread of its own.
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(run).join()).unwrap_or_else(|p| std::panic::resume_unwind(p))
    } else {
        run()
    }
}

/// The `ControlPath` of this endpoint's sftp master, or `None` when
/// `control_dir` is too deep for a unix socket (then no multiplexing).
pub fn control_path(ep: &SftpEndpoint) -> Option<PathBuf> {
    let key = format!(
        "sftp\0{}\0{}\0{}\0{}\0{}\0{}",
        ep.host,
        ep.port,
        ep.user,
        ep.host_key_alias,
        ep.known_hosts.display(),
        ep.identity.display()
    );
    let p = ep.control_dir.join(format!("sftp-{}", ferry_durable::short_hash(key.as_bytes())));
    (p.as_os_str().len() <= SOCKET_PATH_LIMIT).then_some(p)
}

/// The complete ssh argv (without the program) Ferry uses for an sftp pull:
/// the node's fixed option set (SECURITY C5, GU-20), then `-s -- host sftp`.
/// Public so that an audit test can assert it.
pub fn ssh_args(ep: &SftpEndpoint, multiplex: bool) -> Result<Vec<OsString>, PullError> {
    check_endpoint(ep)?;
    let mut o: Vec<String> = vec![
        "-F".into(),
        "/dev/null".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        "UpdateHostKeys=no".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", ep.known_hosts.display()),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        "-o".into(),
        format!("HostKeyAlias={}", ep.host_key_alias),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        format!("IdentityFile={}", ep.identity.display()),
        "-o".into(),
        "IdentityAgent=none".into(),
        "-o".into(),
        "ForwardAgent=no".into(),
        "-o".into(),
        "ForwardX11=no".into(),
        "-o".into(),
        "ClearAllForwardings=yes".into(),
        "-o".into(),
        "PermitLocalCommand=no".into(),
        "-o".into(),
        "ProxyCommand=none".into(),
        "-o".into(),
        "RequestTTY=no".into(),
    ];
    match control_path(ep).filter(|_| multiplex) {
        Some(p) => o.extend([
            "-o".into(),
            "ControlMaster=auto".into(),
            "-o".into(),
            format!("ControlPath={}", p.display()),
            "-o".into(),
            format!("ControlPersist={CONTROL_PERSIST_SECS}"),
        ]),
        None => o.extend(["-o".into(), "ControlMaster=no".into(), "-o".into(), "ControlPath=none".into()]),
    }
    o.extend([
        "-o".into(),
        format!("ConnectTimeout={}", ep.connect_timeout.as_secs().max(1)),
        "-o".into(),
        "ServerAliveInterval=15".into(),
        "-o".into(),
        "ServerAliveCountMax=4".into(),
        "-o".into(),
        format!("Ciphers={CIPHERS}"),
        "-o".into(),
        format!("KexAlgorithms={KEX}"),
        "-p".into(),
        ep.port.to_string(),
        "-l".into(),
        ep.user.clone(),
        "-s".into(),
        "--".into(),
        ep.host.clone(),
        "sftp".into(),
    ]);
    Ok(o.into_iter().map(OsString::from).collect())
}

/// Ask this endpoint's sftp master (if one runs) to exit now instead of
/// after `ControlPersist`. Returns whether a master was running.
pub fn close_master(ep: &SftpEndpoint) -> Result<bool, PullError> {
    check_endpoint(ep)?;
    let Some(p) = control_path(ep) else { return Ok(false) };
    if std::fs::symlink_metadata(&p).is_err() {
        return Ok(false);
    }
    let out = ferry_run::Cmd::new(&ep.ssh)
        .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!("ControlPath={}", p.display()))
        .args(["-O", "exit", "--"])
        .arg(&ep.host)
        .timeout(CLOSE_WAIT)
        .run()
        .map_err(|e| PullError::new(Reason::FetchFailed, format!("ssh -O exit: {e}")))?;
    Ok(out.success())
}

// ---------------------------------------------------------------------------
// Checks before any network traffic.

/// Characters ssh would reinterpret in an `-o` value: whitespace and quotes
/// split or quote, `%` and a leading `~` expand, `#` starts a comment.
fn plain_path(what: &str, p: &Path) -> Result<(), PullError> {
    let s = p.to_str().unwrap_or("");
    let ok = p.is_absolute()
        && !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+' | b',' | b'@' | b'='));
    if ok {
        Ok(())
    } else {
        Err(PullError::new(
            Reason::Internal,
            format!(
                "{what} {} must be an absolute path of [A-Za-z0-9/._+,@=-] only",
                escape(&p.to_string_lossy(), 200)
            ),
        ))
    }
}

fn check_endpoint(ep: &SftpEndpoint) -> Result<(), PullError> {
    plain_path("the ssh binary", &ep.ssh)?;
    plain_path("the known_hosts file", &ep.known_hosts)?;
    plain_path("the pull key", &ep.identity)?;
    plain_path("the ssh control dir", &ep.control_dir)?;
    let host_ok = !ep.host.is_empty()
        && !ep.host.starts_with('-')
        && ep.host.len() <= 253
        && ep.host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    if !host_ok {
        return Err(PullError::new(
            Reason::EnrolConf,
            format!("enrolled host {} is not a plain host name or address", escape(&ep.host, 100)),
        ));
    }
    if !ferry_text::is_safe_token(&ep.user) {
        return Err(PullError::new(
            Reason::EnrolConf,
            format!("enrolled user {} is not a plain name", escape(&ep.user, 100)),
        ));
    }
    if !ferry_text::is_safe_token(&ep.host_key_alias) {
        return Err(PullError::new(
            Reason::EnrolConf,
            format!("host key alias {} is not a plain name", escape(&ep.host_key_alias, 100)),
        ));
    }
    if ep.port == 0 {
        return Err(PullError::new(Reason::EnrolConf, "enrolled port 0".into()));
    }
    Ok(())
}

fn precheck(job: &DownloadJob<'_>) -> Result<(), PullError> {
    check_endpoint(job.endpoint)?;
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

fn already_stored(dest: &Path) -> PullError {
    PullError::new(Reason::ReqConflict, format!("{} already exists; stored files are never replaced", dest.display()))
}

// ---------------------------------------------------------------------------
// Deadlines.

/// The job's two clocks: the overall deadline and the idle timeout. Every
/// await on the network goes through [`Clock::within`], so a stalled or
/// dripping server (SF-02) ends as `E_FETCH_TIMEOUT`.
struct Clock {
    deadline: Instant,
    total: Duration,
    idle: Duration,
}

impl Clock {
    async fn within<F: Future>(&self, what: &str, f: F) -> Result<F::Output, PullError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let limit = left.min(self.idle);
        match tokio::time::timeout(limit, f).await {
            Ok(v) => Ok(v),
            Err(_) if limit == left => Err(PullError::new(
                Reason::FetchTimeout,
                format!("{what}: the download's deadline of {} s passed", self.total.as_secs()),
            )),
            Err(_) => Err(PullError::new(
                Reason::FetchTimeout,
                format!("{what}: no progress for {} s (idle timeout)", self.idle.as_secs()),
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// The local file.

/// The temporary file; removed on drop unless the download was published,
/// so every error path — timeouts and panics included — cleans up.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
    keep: bool,
}

impl TempFile {
    fn create(dir: &Path, name: &str) -> Result<TempFile, PullError> {
        let path = dir.join(format!(".tmp-{name}-{}", std::process::id()));
        // O_EXCL refuses an existing file or symlink, O_NOFOLLOW a symlink
        // planted at the name; 0600 until the caller decides otherwise.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(|e| PullError::io(&format!("create {}", path.display()), e))?;
        Ok(TempFile { path, file: Some(file), keep: false })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where received bytes go: counted against the declared size, hashed, and
/// written, in that order, so nothing beyond the declared size ever reaches
/// the disk (SF-01).
struct Sink {
    tmp: TempFile,
    hasher: Sha256,
    written: u64,
    expected: u64,
    /// Bytes already handed to the kernel's writeback (see [`Sink::write`]).
    flushed: u64,
}

/// Start writeback every this many bytes.
const WRITEBACK_STEP: u64 = 8 << 20;

impl Sink {
    fn write(&mut self, data: &[u8]) -> Result<(), PullError> {
        let len = data.len() as u64;
        if self.written + len > self.expected {
            return Err(PullError::new(
                Reason::FetchLimit,
                format!("the client sent more than the {} bytes declared; download stopped", self.expected),
            ));
        }
        self.hasher.update(data);
        let f = self.tmp.file.as_mut().expect("temp file open while writing");
        f.write_all(data).map_err(|e| PullError::io("write the download", e))?;
        self.written += len;
        // Start writeback of what is written so far, without waiting, and
        // drop pages that are already clean: the final fsync then waits for
        // the tail only instead of the whole file, and a large download
        // neither piles up dirty memory nor evicts the node's page cache.
        if self.written - self.flushed >= WRITEBACK_STEP {
            let from = self.flushed.saturating_sub(4 * WRITEBACK_STEP);
            let _ = rustix::fs::fadvise(
                &*f,
                from,
                std::num::NonZeroU64::new(self.written - from),
                rustix::fs::Advice::DontNeed,
            );
            self.flushed = self.written;
        }
        Ok(())
    }
}

/// The sink, either written inline or on a thread of its own so hashing
/// and disk writes overlap with the protocol work (SHA-256 is the largest
/// CPU cost of a download: about 1 s of CPU per GiB with sha2 on SHA-NI, as fast as OpenSSL here).
enum Output {
    Inline(Sink),
    Thread(WriterThread),
}

struct WriterThread {
    tx: Option<tokio::sync::mpsc::Sender<BytesMut>>,
    spare: std::sync::mpsc::Receiver<BytesMut>,
    thread: Option<std::thread::JoinHandle<Result<Sink, PullError>>>,
}

impl WriterThread {
    fn start(mut sink: Sink, depth: usize) -> Result<WriterThread, PullError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<BytesMut>(depth.clamp(2, 64));
        let (back, spare) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ferry-sftp-writer".into())
            .spawn(move || {
                while let Some(mut buf) = rx.blocking_recv() {
                    sink.write(&buf)?;
                    buf.clear();
                    let _ = back.send(buf);
                }
                Ok(sink)
            })
            .map_err(|e| PullError::new(Reason::Internal, format!("start the writer thread: {e}")))?;
        Ok(WriterThread { tx: Some(tx), spare, thread: Some(thread) })
    }

    /// Stop the thread and hand back its sink, or its first error (the
    /// sink, and with it the temporary file, is then already gone).
    fn join(&mut self) -> Result<Sink, PullError> {
        drop(self.tx.take());
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(p)) => std::panic::resume_unwind(p),
            None => Err(PullError::new(Reason::Internal, "writer thread already joined".into())),
        }
    }
}

impl Drop for WriterThread {
    /// Joined on every path, so the temporary file is gone before
    /// `download` returns an error. A panic of the thread is not re-raised
    /// here (that could abort during unwinding); its sink is dropped all
    /// the same.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Output {
    /// Take a filled buffer; may give back an empty one for reuse.
    async fn put(&mut self, buf: BytesMut) -> Result<Option<BytesMut>, PullError> {
        match self {
            Output::Inline(sink) => {
                sink.write(&buf)?;
                let mut buf = buf;
                buf.clear();
                Ok(Some(buf))
            }
            Output::Thread(w) => {
                let tx = w.tx.as_ref().expect("writer running");
                if tx.send(buf).await.is_err() {
                    // The thread stopped: it has the reason.
                    return Err(w.join().err().unwrap_or_else(|| {
                        PullError::new(Reason::Internal, "the writer thread stopped early".into())
                    }));
                }
                Ok(w.spare.try_recv().ok())
            }
        }
    }

    fn into_sink(self) -> Result<Sink, PullError> {
        match self {
            Output::Inline(sink) => Ok(sink),
            Output::Thread(mut w) => w.join(),
        }
    }
}

/// fsync the file, move it to its final name without ever replacing one,
/// fsync the directory.
fn publish(mut tmp: TempFile, dir: &Path, name: &str) -> Result<PathBuf, PullError> {
    let f = tmp.file.take().expect("temp file open before publishing");
    f.sync_all().map_err(|e| PullError::io("fsync the download", e))?;
    drop(f);
    let dest = dir.join(name);
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        &tmp.path,
        rustix::fs::CWD,
        &dest,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => return Err(already_stored(&dest)),
        // File systems without RENAME_NOREPLACE: a hard link refuses to
        // replace too, then the temporary name goes.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP) => {
            match std::fs::hard_link(&tmp.path, &dest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(already_stored(&dest)),
                Err(e) => return Err(PullError::io("link the download into place", e)),
            }
        }
        Err(e) => return Err(PullError::io("rename the download into place", e.into())),
    }
    // The temporary name is gone (renamed) or is an extra link (removed by
    // the guard); either way the final name now holds the data.
    let renamed = std::fs::symlink_metadata(&tmp.path).is_err();
    tmp.keep = renamed;
    drop(tmp);
    ferry_durable::fsync_dir(dir).map_err(|e| PullError::io("fsync the download's directory", e))?;
    Ok(dest)
}

// ---------------------------------------------------------------------------
// Guarding the sftp stream.

/// Passes the sftp server's byte stream through while following its packet
/// framing, and fails the stream on a packet no answer of ours can need: the
/// sftp library would otherwise allocate whatever length a hostile server
/// announces (up to 4 GiB per packet), and underflows on lengths below 5.
struct FrameGuard<R> {
    inner: R,
    header: [u8; 4],
    header_len: usize,
    remaining: u64,
    max: u32,
    violation: Arc<Mutex<Option<String>>>,
}

impl<R> FrameGuard<R> {
    fn new(inner: R, max: u32, violation: Arc<Mutex<Option<String>>>) -> Self {
        FrameGuard { inner, header: [0; 4], header_len: 0, remaining: 0, max, violation }
    }

    fn scan(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let take = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= take as u64;
                data = &data[take..];
                continue;
            }
            self.header[self.header_len] = data[0];
            self.header_len += 1;
            data = &data[1..];
            if self.header_len == 4 {
                self.header_len = 0;
                let len = u32::from_be_bytes(self.header);
                if !(5..=self.max).contains(&len) {
                    let msg = format!("the client's sftp server sent a packet of {len} bytes (limit {})", self.max);
                    *self.violation.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
                    return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
                }
                self.remaining = u64::from(len);
            }
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for FrameGuard<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let this = self.get_mut();
                Poll::Ready(this.scan(&buf.filled()[before..]))
            }
            other => other,
        }
    }
}

// ---------------------------------------------------------------------------
// Connections.

enum Channel {
    Own { child: tokio::process::Child, stderr: JoinHandle<()> },
    Mux { session: Option<Arc<openssh::Session>>, child: Option<openssh::Child<Arc<openssh::Session>>> },
}

/// One open sftp channel plus what is needed to explain its failures.
struct Conn {
    sftp: Option<Sftp>,
    channel: Channel,
    stderr: Arc<Mutex<Vec<u8>>>,
    violation: Arc<Mutex<Option<String>>>,
}

fn sftp_options(tuning: &Tuning) -> SftpOptions {
    let mut o = SftpOptions::new().flush_interval(tuning.flush_interval);
    if let Some(n) = std::num::NonZeroU16::new(u16::try_from(tuning.depth.max(1) + 4).unwrap_or(u16::MAX)) {
        o = o.max_pending_requests(n);
    }
    o
}

/// Largest packet we accept: a data answer to our largest read, plus its
/// header and some slack.
fn packet_limit(chunk: u32) -> u32 {
    chunk.max(64 * 1024) + 1024
}

impl Conn {
    async fn open(ep: &SftpEndpoint, tuning: &Tuning, chunk: u32, clock: &Clock) -> Result<Conn, PullError> {
        match tuning.transport {
            Transport::OwnChild => Self::open_own(ep, tuning, chunk, clock).await,
            Transport::OpensshMux => Self::open_mux(ep, tuning, chunk, clock).await,
        }
    }

    async fn open_own(ep: &SftpEndpoint, tuning: &Tuning, chunk: u32, clock: &Clock) -> Result<Conn, PullError> {
        let args = ssh_args(ep, tuning.multiplex)?;
        // Same child rules as ferry-run (cleared environment, own process
        // group, killed with its parent), but with async pipes.
        let mut cmd = if Path::new("/usr/bin/setpriv").exists() {
            let mut c = tokio::process::Command::new("/usr/bin/setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).arg(&ep.ssh);
            c
        } else {
            tokio::process::Command::new(&ep.ssh)
        };
        cmd.args(&args)
            .env_clear()
            .env("PATH", ferry_run::SAFE_PATH)
            .env("LANG", "C")
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child =
            cmd.spawn().map_err(|e| PullError::new(Reason::FetchFailed, format!("start {}: {e}", ep.ssh.display())))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        grow_pipe(&stdout, tuning.pipe_size);
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        let drain = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut v = sink.lock().unwrap_or_else(|p| p.into_inner());
                let room = STDERR_CAP.saturating_sub(v.len()).min(n);
                v.extend_from_slice(&buf[..room]);
            }
        });
        let violation = Arc::new(Mutex::new(None));
        let guarded = FrameGuard::new(stdout, packet_limit(chunk), Arc::clone(&violation));
        let mut conn = Conn { sftp: None, channel: Channel::Own { child, stderr: drain }, stderr, violation };
        match clock.within("ssh connection", Sftp::new(stdin, guarded, sftp_options(tuning))).await {
            Ok(Ok(sftp)) => {
                conn.sftp = Some(sftp);
                Ok(conn)
            }
            Ok(Err(e)) => {
                conn.shutdown(false).await;
                Err(conn.explain("ssh connection", &e))
            }
            Err(timeout) => {
                conn.shutdown(false).await;
                Err(timeout)
            }
        }
    }

    async fn open_mux(ep: &SftpEndpoint, tuning: &Tuning, chunk: u32, clock: &Clock) -> Result<Conn, PullError> {
        check_endpoint(ep)?;
        // The crate puts its socket at <dir>/.ssh-connectionXXXXXX/master.
        if ep.control_dir.as_os_str().len() + "/.ssh-connectionXXXXXX/master".len() > SOCKET_PATH_LIMIT {
            return Err(PullError::new(
                Reason::Internal,
                "control_dir is too long for the openssh crate's socket".into(),
            ));
        }
        let conf = write_mux_config(ep)?;
        let mut b = openssh::SessionBuilder::default();
        b.known_hosts_check(openssh::KnownHosts::Strict)
            .user_known_hosts_file(&ep.known_hosts)
            .keyfile(&ep.identity)
            .control_directory(&ep.control_dir)
            .config_file(&conf)
            .server_alive_interval(Duration::from_secs(15))
            .connect_timeout(ep.connect_timeout.max(Duration::from_secs(1)))
            .control_persist(openssh::ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(CONTROL_PERSIST_SECS as usize).expect("non-zero"),
            ))
            .user(ep.user.clone())
            .port(ep.port);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let violation = Arc::new(Mutex::new(None));
        let session = match clock.within("ssh connection", b.connect_mux(&ep.host)).await? {
            Ok(s) => Arc::new(s),
            Err(e) => {
                let text = error_chain(&e);
                return Err(PullError::new(classify_ssh(&text), format!("ssh connection: {}", escape(&text, 600))));
            }
        };
        let mut subsystem = openssh::Session::to_subsystem(Arc::clone(&session), "sftp");
        let mut conn =
            Conn { sftp: None, channel: Channel::Mux { session: Some(session), child: None }, stderr, violation };
        let spawned = clock
            .within(
                "sftp subsystem",
                subsystem
                    .stdin(openssh::Stdio::piped())
                    .stdout(openssh::Stdio::piped())
                    .stderr(openssh::Stdio::null())
                    .spawn(),
            )
            .await;
        let mut c = match spawned {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let text = error_chain(&e);
                conn.shutdown(false).await;
                return Err(PullError::new(classify_ssh(&text), format!("sftp subsystem: {}", escape(&text, 600))));
            }
            Err(t) => {
                conn.shutdown(false).await;
                return Err(t);
            }
        };
        let stdin = c.stdin().take().expect("piped stdin");
        let stdout = c.stdout().take().expect("piped stdout");
        grow_pipe(&stdout, tuning.pipe_size);
        if let Channel::Mux { child, .. } = &mut conn.channel {
            *child = Some(c);
        }
        let guarded = FrameGuard::new(stdout, packet_limit(chunk), Arc::clone(&conn.violation));
        match clock.within("sftp init", Sftp::new(stdin, guarded, sftp_options(tuning))).await {
            Ok(Ok(sftp)) => {
                conn.sftp = Some(sftp);
                Ok(conn)
            }
            Ok(Err(e)) => {
                conn.shutdown(false).await;
                Err(conn.explain("sftp init", &e))
            }
            Err(t) => {
                conn.shutdown(false).await;
                Err(t)
            }
        }
    }

    fn sftp(&self) -> &Sftp {
        self.sftp.as_ref().expect("sftp open")
    }

    /// Close the channel: politely after a good transfer, by killing after
    /// a failed one. Bounded either way; the master (if any) stays for
    /// `ControlPersist` and no longer.
    async fn shutdown(&mut self, polite: bool) {
        if let Some(sftp) = self.sftp.take() {
            if polite {
                let _ = tokio::time::timeout(CLOSE_WAIT, sftp.close()).await;
            } else {
                drop(sftp);
            }
        }
        match &mut self.channel {
            Channel::Own { child, stderr } => {
                if !polite {
                    let _ = child.start_kill();
                }
                if tokio::time::timeout(CLOSE_WAIT, child.wait()).await.is_err() {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
                let _ = tokio::time::timeout(Duration::from_millis(500), stderr).await;
            }
            Channel::Mux { session, child } => {
                if let Some(c) = child.take() {
                    if polite {
                        let _ = tokio::time::timeout(CLOSE_WAIT, c.wait()).await;
                    } else {
                        drop(c);
                    }
                }
                // The crate's master runs with ControlPersist; ask it to go
                // (dropping the last reference asks too, without waiting).
                if let Some(s) = session.take().and_then(|s| Arc::try_unwrap(s).ok()) {
                    let _ = tokio::time::timeout(CLOSE_WAIT, s.close()).await;
                }
            }
        }
    }

    /// Turn a failure of the sftp channel into a reason, with ssh's own
    /// words (escaped) when it said something.
    fn explain(&self, what: &str, e: &SftpError) -> PullError {
        if let Some(v) = self.violation.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return PullError::new(Reason::FetchLimit, format!("{what}: {v}"));
        }
        if let SftpError::SftpError(kind, msg) = e {
            let reason = match kind {
                SftpErrorKind::NoSuchFile => Reason::FetchNotFound,
                _ => Reason::FetchFailed,
            };
            return PullError::new(reason, format!("{what}: {kind:?}: {}", escape(msg.get().0, 200)));
        }
        let stderr = self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let text = String::from_utf8_lossy(&stderr);
        let text = text.trim();
        let reason = classify_ssh(text);
        if text.is_empty() {
            PullError::new(reason, format!("{what}: {}", escape(&error_chain(e), 400)))
        } else {
            PullError::new(reason, format!("{what}: {} (ssh: {})", escape(&error_chain(e), 200), escape(text, 600)))
        }
    }
}

/// A bigger pipe from ssh to us: ssh can hand over more of the channel's
/// data per wake-up instead of growing (and zeroing) its own buffers, and
/// we read more per system call. Best effort: the default (64 KiB) works.
fn grow_pipe(fd: &impl std::os::fd::AsFd, size: usize) {
    if size > 0 {
        let _ = rustix::pipe::fcntl_setpipe_size(fd, size);
    }
}

/// Options the openssh crate's builder cannot pass, for [`Transport::OpensshMux`].
fn write_mux_config(ep: &SftpEndpoint) -> Result<PathBuf, PullError> {
    let text = format!(
        "Host *\n  HostKeyAlias {}\n  GlobalKnownHostsFile /dev/null\n  UpdateHostKeys no\n  IdentityAgent none\n  \
         ForwardAgent no\n  ForwardX11 no\n  ClearAllForwardings yes\n  PermitLocalCommand no\n  ProxyCommand none\n  \
         ServerAliveCountMax 4\n  Ciphers {CIPHERS}\n  KexAlgorithms {KEX}\n",
        ep.host_key_alias
    );
    let name = format!(
        "sftp-{}.conf",
        ferry_durable::short_hash(format!("{}\0{}\0{}", ep.host, ep.port, ep.host_key_alias).as_bytes())
    );
    std::fs::create_dir_all(&ep.control_dir).map_err(|e| PullError::io("create the ssh control dir", e))?;
    ferry_durable::write_synced_mode(&ep.control_dir, &name, text.as_bytes(), 0o600)
        .map_err(|e| PullError::io("write the sftp ssh_config", e))?;
    Ok(ep.control_dir.join(name))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What ssh's stderr says went wrong.
fn classify_ssh(text: &str) -> Reason {
    if text.contains("Host key verification failed")
        || text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || text.contains("host key is known for")
    {
        Reason::FetchHostKey
    } else if text.contains("Permission denied") || text.contains("Too many authentication failures") {
        Reason::FetchAuth
    } else if text.contains("timed out") || text.contains("Timeout, server") {
        Reason::FetchTimeout
    } else {
        Reason::FetchFailed
    }
}

// ---------------------------------------------------------------------------
// The transfer.

async fn run_download(job: &DownloadJob<'_>, tuning: &Tuning, start: Instant) -> Result<Downloaded, PullError> {
    let clock = Clock { deadline: start + job.timeout, total: job.timeout, idle: job.idle_timeout };
    let chunk = tuning.chunk.clamp(4096, MAX_READ);
    let mut conn = Conn::open(job.endpoint, tuning, chunk, &clock).await?;
    let t_conn = start.elapsed();
    let mut out = None;
    let result = transfer(&conn, job, tuning, chunk, &clock, &mut out).await;
    let t_xfer = start.elapsed();
    conn.shutdown(result.is_ok()).await;
    let t_close = start.elapsed();
    tracing::debug!(
        connect_ms = t_conn.as_millis() as u64,
        transfer_ms = t_xfer.as_millis() as u64,
        closed_ms = t_close.as_millis() as u64,
        ok = result.is_ok(),
        "sftp download"
    );
    let out = match result {
        Ok(()) => out.expect("a finished transfer has an output"),
        Err(e) => return Err(e), // `out` drops here and removes the file
    };
    let done = finish(job, out.into_sink()?, start);
    tracing::debug!(finished_ms = start.elapsed().as_millis() as u64, "sftp download stored");
    done
}

fn finish(job: &DownloadJob<'_>, sink: Sink, start: Instant) -> Result<Downloaded, PullError> {
    let Sink { tmp, hasher, written, expected, .. } = sink;
    if written != expected {
        return Err(PullError::new(
            Reason::FetchSizeMismatch,
            format!("received {written} bytes, the request declared {expected}"),
        ));
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(&hasher.finalize());
    if sha256 != job.expected_sha256 {
        // SF-06: the received bytes are discarded, never re-hashed and kept.
        return Err(PullError::new(
            Reason::FetchDigestMismatch,
            format!(
                "sha256 of the {written} received bytes is {}, the request declared {}; the file was discarded",
                hex::encode(sha256),
                hex::encode(job.expected_sha256)
            ),
        ));
    }
    let path = publish(tmp, job.dest_dir, job.dest_name)?;
    Ok(Downloaded { path, size: written, sha256, elapsed: start.elapsed() })
}

/// The remote file must be a regular file of the declared size, within the
/// cap; `what` names the request (lstat never follows a symlink; fstat
/// describes what `open` actually opened).
fn check_meta(md: &MetaData, job: &DownloadJob<'_>, what: &str) -> Result<(), PullError> {
    let path = escape(job.remote_path, 200);
    let Some(ft) = md.file_type() else {
        return Err(PullError::new(Reason::FetchNotRegular, format!("{what} {path}: the server gave no file type")));
    };
    if !ft.is_file() {
        let kind = if ft.is_symlink() {
            "symbolic link"
        } else if ft.is_dir() {
            "directory"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_block_device() || ft.is_char_device() {
            "device"
        } else {
            "special file"
        };
        return Err(PullError::new(Reason::FetchNotRegular, format!("{what} {path}: a {kind}, not a regular file")));
    }
    let Some(size) = md.len() else {
        return Err(PullError::new(Reason::FetchSizeMismatch, format!("{what} {path}: the server gave no size")));
    };
    if size > job.max_bytes {
        return Err(PullError::new(
            Reason::FetchLimit,
            format!("{what} {path}: {size} bytes, more than the limit of {} bytes", job.max_bytes),
        ));
    }
    if size != job.expected_size {
        return Err(PullError::new(
            Reason::FetchSizeMismatch,
            format!("{what} {path}: {size} bytes, the request declared {}", job.expected_size),
        ));
    }
    Ok(())
}

type ReadTask = JoinHandle<Result<Option<BytesMut>, SftpError>>;

/// One read at an explicit offset, on its own clone of the handle.
fn spawn_read(file: &openssh_sftp_client::file::File, offset: u64, len: u32, buf: BytesMut) -> ReadTask {
    let mut f = file.clone();
    tokio::spawn(async move {
        AsyncSeek::start_seek(Pin::new(&mut f), io::SeekFrom::Start(offset))?;
        f.read(len, buf).await
    })
}

async fn read_at(
    conn: &Conn,
    file: &openssh_sftp_client::file::File,
    clock: &Clock,
    offset: u64,
    len: u32,
    buf: BytesMut,
) -> Result<Option<BytesMut>, PullError> {
    let task = spawn_read(file, offset, len, buf);
    joined(conn, clock, "read", task).await
}

async fn joined(conn: &Conn, clock: &Clock, what: &str, task: ReadTask) -> Result<Option<BytesMut>, PullError> {
    match clock.within(what, task).await? {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(conn.explain(what, &e)),
        Err(e) => Err(PullError::new(Reason::Internal, format!("{what}: read task failed: {e}"))),
    }
}

async fn transfer(
    conn: &Conn,
    job: &DownloadJob<'_>,
    tuning: &Tuning,
    mut chunk: u32,
    clock: &Clock,
    out: &mut Option<Output>,
) -> Result<(), PullError> {
    let sftp = conn.sftp();
    let mut fs = sftp.fs();
    let md =
        clock.within("lstat", fs.symlink_metadata(job.remote_path)).await?.map_err(|e| conn.explain("lstat", &e))?;
    check_meta(&md, job, "lstat")?;
    let file = clock.within("open", sftp.open(job.remote_path)).await?.map_err(|e| conn.explain("open", &e))?;
    let mut probe = file.clone();
    let md = clock.within("fstat", probe.metadata()).await?.map_err(|e| conn.explain("fstat", &e))?;
    check_meta(&md, job, "fstat")?;

    let sink = Sink {
        tmp: TempFile::create(job.dest_dir, job.dest_name)?,
        hasher: Sha256::new(),
        written: 0,
        expected: job.expected_size,
        flushed: 0,
    };
    let depth = tuning.depth.clamp(1, 256);
    let sink = out.insert(if tuning.writer_thread {
        Output::Thread(WriterThread::start(sink, depth)?)
    } else {
        Output::Inline(sink)
    });
    let size = job.expected_size;
    let mut queue: VecDeque<(u64, u32, ReadTask)> = VecDeque::with_capacity(depth);
    let mut spare: Vec<BytesMut> = Vec::with_capacity(depth);
    let mut next = 0u64;
    loop {
        while queue.len() < depth && next < size {
            let len = (size - next).min(u64::from(chunk)) as u32;
            let buf = spare.pop().unwrap_or_else(|| BytesMut::with_capacity(chunk as usize));
            queue.push_back((next, len, spawn_read(&file, next, len, buf)));
            next += u64::from(len);
        }
        let Some((offset, len, task)) = queue.pop_front() else { break };
        let mut want = len;
        let mut at = offset;
        let mut got = joined(conn, clock, "read", task).await?;
        loop {
            let Some(buf) = got else {
                return Err(PullError::new(
                    Reason::FetchSizeMismatch,
                    format!("the file ended after {at} bytes, the request declared {size}"),
                ));
            };
            let n = buf.len() as u32;
            if n > want {
                return Err(PullError::new(
                    Reason::FetchLimit,
                    format!("the server answered a {want}-byte read with {n} bytes"),
                ));
            }
            if let Some(b) = clock.within("write", sink.put(buf)).await?? {
                spare.push(b);
            }
            at += u64::from(n);
            want -= n;
            if want == 0 {
                break;
            }
            // A short read before the end: the server's own limit is lower
            // than ours. Read the rest of this piece now (the others stay in
            // flight) and ask for less from here on.
            if n >= 4096 {
                chunk = chunk.min(n);
            }
            let buf = spare.pop().unwrap_or_else(|| BytesMut::with_capacity(want as usize));
            got = read_at(conn, &file, clock, at, want, buf).await?;
        }
    }
    // A file longer than declared (SF-01: lying size, growing file) must
    // answer EOF here; one byte more is already too much.
    match read_at(conn, &file, clock, size, 1, BytesMut::with_capacity(1)).await? {
        None => {}
        Some(b) if b.is_empty() => {}
        Some(_) => {
            return Err(PullError::new(
                Reason::FetchLimit,
                format!("the file holds more than the {size} bytes declared; download stopped"),
            ));
        }
    }
    drop(probe);
    let _ = clock.within("close", file.close()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(dir: &Path) -> SftpEndpoint {
        SftpEndpoint {
            ssh: "/usr/bin/ssh".into(),
            host: "127.0.0.2".into(),
            port: 2222,
            user: "ferry".into(),
            known_hosts: dir.join("known_hosts"),
            host_key_alias: "ferry-client-a".into(),
            identity: dir.join("pull_key"),
            control_dir: dir.join("ctl"),
            connect_timeout: Duration::from_secs(7),
        }
    }

    #[test]
    fn argv_is_the_hardened_option_set() {
        let ep = endpoint(Path::new("/var/lib/ferry"));
        let args: Vec<String> = ssh_args(&ep, true).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        let line = args.join(" ");
        for want in [
            "-F /dev/null",
            "-o BatchMode=yes",
            "-o StrictHostKeyChecking=yes",
            "-o UserKnownHostsFile=/var/lib/ferry/known_hosts",
            "-o GlobalKnownHostsFile=/dev/null",
            "-o HostKeyAlias=ferry-client-a",
            "-o IdentitiesOnly=yes",
            "-o IdentityFile=/var/lib/ferry/pull_key",
            "-o IdentityAgent=none",
            "-o ForwardAgent=no",
            "-o ForwardX11=no",
            "-o ClearAllForwardings=yes",
            "-o PermitLocalCommand=no",
            "-o ProxyCommand=none",
            "-o ControlMaster=auto",
            "-o ControlPersist=60",
            "-o ConnectTimeout=7",
            "-o ServerAliveInterval=15",
            "-o Ciphers=aes128-gcm@openssh.com,",
            "-p 2222 -l ferry -s -- 127.0.0.2 sftp",
        ] {
            assert!(line.contains(want), "{want:?} missing from {line}");
        }
        assert!(line.ends_with("-- 127.0.0.2 sftp"));
        assert!(!line.contains("accept-new"));
    }

    #[test]
    fn deep_control_dir_disables_multiplexing() {
        let mut ep = endpoint(Path::new("/var/lib/ferry"));
        ep.control_dir = PathBuf::from(format!("/{}", "d".repeat(90)));
        assert!(control_path(&ep).is_none());
        let line: Vec<String> = ssh_args(&ep, true).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        let line = line.join(" ");
        assert!(line.contains("-o ControlMaster=no -o ControlPath=none"), "{line}");
        let ep = endpoint(Path::new("/var/lib/ferry"));
        let p = control_path(&ep).unwrap();
        assert!(p.as_os_str().len() + 17 < 104);
        assert!(p.to_str().unwrap().starts_with("/var/lib/ferry/ctl/sftp-"), "{p:?}");
    }

    #[test]
    fn endpoint_values_that_ssh_would_reinterpret_are_refused() {
        let d = Path::new("/var/lib/ferry");
        for bad in [
            SftpEndpoint { host: "-oProxyCommand=x".into(), ..endpoint(d) },
            SftpEndpoint { host: "a b".into(), ..endpoint(d) },
            SftpEndpoint { user: "-l".into(), ..endpoint(d) },
            SftpEndpoint { host_key_alias: "a b".into(), ..endpoint(d) },
            SftpEndpoint { known_hosts: "/a b/kh".into(), ..endpoint(d) },
            SftpEndpoint { identity: "/k%d".into(), ..endpoint(d) },
            SftpEndpoint { identity: "~/.ssh/id".into(), ..endpoint(d) },
            SftpEndpoint { control_dir: "rel/ctl".into(), ..endpoint(d) },
        ] {
            assert!(ssh_args(&bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn classify_ssh_messages() {
        assert_eq!(classify_ssh("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@"), Reason::FetchHostKey);
        assert_eq!(classify_ssh("Host key verification failed."), Reason::FetchHostKey);
        assert_eq!(classify_ssh("root@127.0.0.2: Permission denied (publickey)."), Reason::FetchAuth);
        assert_eq!(classify_ssh("ssh: connect to host 10.1.1.1 port 22: Connection timed out"), Reason::FetchTimeout);
        assert_eq!(classify_ssh("ssh: connect to host 127.0.0.2 port 1: Connection refused"), Reason::FetchFailed);
    }

    #[test]
    fn frame_guard_refuses_oversized_and_tiny_packets() {
        let v = Arc::new(Mutex::new(None));
        let mut g = FrameGuard::new((), 1000, Arc::clone(&v));
        // Two good packets split anywhere.
        let mut stream = Vec::new();
        for len in [5u32, 1000] {
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for piece in stream.chunks(3) {
            g.scan(piece).unwrap();
        }
        assert!(v.lock().unwrap().is_none());
        assert!(g.scan(&1001u32.to_be_bytes()).is_err());
        assert!(v.lock().unwrap().as_deref().unwrap().contains("1001"));
        let mut g = FrameGuard::new((), 1000, Arc::new(Mutex::new(None)));
        assert!(g.scan(&4u32.to_be_bytes()).is_err());
    }

    fn sink_in(dir: &Path, expected: u64) -> Sink {
        Sink { tmp: TempFile::create(dir, "x").unwrap(), hasher: Sha256::new(), written: 0, expected, flushed: 0 }
    }

    #[test]
    fn sink_stops_at_the_declared_size_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let mut s = sink_in(d.path(), 10);
        s.write(b"0123456789").unwrap();
        let e = s.write(b"x").unwrap_err();
        assert_eq!(e.reason, Reason::FetchLimit);
        assert_eq!(std::fs::metadata(&s.tmp.path).unwrap().len(), 10);
        drop(s);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn temp_file_refuses_a_planted_symlink() {
        let d = tempfile::tempdir().unwrap();
        let planted = d.path().join(format!(".tmp-x-{}", std::process::id()));
        std::os::unix::fs::symlink("/etc/passwd", &planted).unwrap();
        assert!(TempFile::create(d.path(), "x").is_err());
        assert!(std::fs::symlink_metadata(&planted).unwrap().file_type().is_symlink());
    }

    #[test]
    fn publish_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x"), b"old").unwrap();
        let mut s = sink_in(d.path(), 3);
        s.write(b"new").unwrap();
        let e = publish(s.tmp, d.path(), "x").unwrap_err();
        assert_eq!(e.reason, Reason::ReqConflict);
        assert_eq!(std::fs::read(d.path().join("x")).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "temp file removed");
        let mut s = sink_in(d.path(), 3);
        s.write(b"new").unwrap();
        let p = publish(s.tmp, d.path(), "y").unwrap();
        assert_eq!(std::fs::read(p).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn precheck_refuses_before_connecting() {
        let d = tempfile::tempdir().unwrap();
        let ep = endpoint(d.path());
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
