//! Many files over ONE sftp session, pipelined: the contents a snapshot
//! tree lacks (issue 10).
//!
//! Why not [`super::download`] per file: a tree pull fetches thousands of
//! small files, and one session per file costs a handshake (or a mux
//! round trip) each, while one file at a time leaves the link idle for
//! every `open`/`read`/`close` round trip. Here up to [`ManyJob::depth`]
//! files are in flight at once on one channel, each with a few reads
//! ahead, so round trips overlap the way the single-file reader overlaps
//! its reads.
//!
//! Every byte goes to the caller's sink on the caller's thread, one file
//! after the other in the order of [`ManyJob::files`], as a [`Read`] that
//! streams while the file is still arriving (`ferry_tree::store::Store::put`
//! hashes and checks it while writing). Memory stays bounded: a file in
//! flight holds at most [`FILE_BUFFERS`] answers, and at most `2 × depth`
//! files wait for the sink.
//!
//! What belongs to one file is reported for that file and the pull goes
//! on: missing, not a regular file, another size than promised, shorter or
//! longer while read, or refused by the sink (digest mismatch): the file
//! changed on the client between its scan and the fetch. What belongs to
//! the connection (ssh gone, a timeout, a packet no answer can need) ends
//! the whole fetch with an error. The sink's own failures (disk full) end
//! it too ([`SinkError::Abort`]).
//!
//! Paths are bytes (manifest paths are), absolute, without NUL (the sftp
//! server would cut the name there). A file costs three requests: `open`,
//! one `read` per chunk (the last one asks for a byte past the promised
//! size, so its answer also says whether the file grew), `close`; a
//! `lstat` is sent only to explain a file that failed. Only requests the
//! read-only gate's allow-list already has are sent.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferry_request::Reason;
use ferry_text::escape_bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use openssh_sftp_client::Error as SftpError;
use openssh_sftp_client::Sftp;
use tokio::io::AsyncSeek;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::clock::Clock;
use super::conn::Conn;
use super::transfer::Failure;
use super::{MAX_READ, MinRate, SftpEndpoint, Tuning};
use crate::PullError;

/// Answers buffered per file in flight (about 1 MiB of a large file).
pub const FILE_BUFFERS: usize = 4;
/// Reads in flight within one file.
const READ_AHEAD: usize = 4;
/// Default files in flight.
pub const DEFAULT_FILES_IN_FLIGHT: usize = 32;

/// One file to fetch: its absolute remote path (bytes) and promised size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub path: Vec<u8>,
    pub size: u64,
}

/// A pipelined fetch of many files from one client.
#[derive(Debug, Clone)]
pub struct ManyJob<'a> {
    pub endpoint: &'a SftpEndpoint,
    pub files: &'a [RemoteFile],
    /// Files in flight at once (1..=256).
    pub depth: usize,
    /// Overall deadline, connection included.
    pub timeout: Duration,
    /// No progress for this long aborts the fetch.
    pub idle_timeout: Duration,
    /// The slowest transfer accepted once data flows.
    pub min_rate: Option<MinRate>,
    /// A directory the caller owns where files with a non-UTF-8 name are
    /// fetched by the `sftp` program first ([`super::batch`]); without
    /// one, such files are reported as not fetched.
    pub spool: Option<&'a Path>,
}

/// Why the sink did not take a file.
#[derive(Debug)]
pub enum SinkError {
    /// This file is not what was promised: reported, the fetch goes on.
    Reject(String),
    /// The sink cannot go on (disk full, store broken): the fetch ends.
    Abort(PullError),
}

/// A file that was not fetched, and why (escaped text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its index in [`ManyJob::files`].
    pub index: usize,
    pub why: String,
}

/// What a finished fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManyReport {
    /// Files the sink accepted.
    pub fetched: u64,
    /// Bytes received from the server (all files, skipped ones included).
    pub bytes: u64,
    /// Files reported one by one (changed on the client, refused by the sink).
    pub skipped: Vec<Skipped>,
    pub elapsed: Duration,
}

/// What travels from the protocol side to the sink for one file.
enum Msg {
    Data(BytesMut),
    /// Every byte was sent.
    End,
    /// The file is not what was promised (after this, no more data).
    Gone(String),
}

/// The sink's view of one file: its bytes in order, EOF at the end or when
/// the file went wrong (the sink then sees a short file; the reason is
/// kept in `gone`).
struct FileReader {
    rx: mpsc::Receiver<Msg>,
    cur: BytesMut,
    done: bool,
    gone: Option<String>,
}

impl FileReader {
    fn next_msg(&mut self) {
        match self.rx.blocking_recv() {
            Some(Msg::Data(b)) => self.cur = b,
            Some(Msg::End) => self.done = true,
            Some(Msg::Gone(why)) => {
                self.gone = Some(why);
                self.done = true;
            }
            // The protocol side stopped (the fetch is failing).
            None => {
                self.gone.get_or_insert_with(|| "the fetch stopped".into());
                self.done = true;
            }
        }
    }
}

impl Read for FileReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() && !self.done {
            self.next_msg();
        }
        let n = self.cur.len().min(out.len());
        out[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Fetch `job.files` into `sink`, which is called on this thread once per
/// file with its index and a reader of its bytes; see the module docs.
/// Files whose name is not UTF-8 come last, through [`super::batch`].
pub fn fetch_many<F>(job: &ManyJob<'_>, mut sink: F) -> Result<ManyReport, PullError>
where
    F: FnMut(usize, &mut dyn Read) -> Result<(), SinkError>,
{
    let start = Instant::now();
    let (utf8, raw): (Vec<usize>, Vec<usize>) =
        (0..job.files.len()).partition(|&i| std::str::from_utf8(&job.files[i].path).is_ok());
    if raw.is_empty() {
        return pipelined(job, sink);
    }
    let mut report = if utf8.is_empty() {
        super::ssh::check_endpoint(job.endpoint)?;
        ManyReport::default()
    } else {
        let files: Vec<RemoteFile> = utf8.iter().map(|&i| job.files[i].clone()).collect();
        let mut r = pipelined(&ManyJob { files: &files, ..job.clone() }, |i, rd| sink(utf8[i], rd))?;
        r.skipped.iter_mut().for_each(|s| s.index = utf8[s.index]);
        r
    };
    match job.spool {
        Some(spool) => {
            let left = job.timeout.saturating_sub(start.elapsed()).max(Duration::from_secs(1));
            super::batch::fetch(job, spool, &raw, left, &mut sink, &mut report)?;
        }
        None => report.skipped.extend(raw.iter().map(|&index| Skipped {
            index,
            why: format!(
                "{}: a name that is not UTF-8, and no spool to fetch it",
                escape_bytes(&job.files[index].path, 200)
            ),
        })),
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// [`fetch_many`] of files whose names are UTF-8: one pipelined session.
fn pipelined<F>(job: &ManyJob<'_>, mut sink: F) -> Result<ManyReport, PullError>
where
    F: FnMut(usize, &mut dyn Read) -> Result<(), SinkError>,
{
    let start = Instant::now();
    super::ssh::check_endpoint(job.endpoint)?;
    if let Some(f) = job.files.iter().find(|f| !f.path.starts_with(b"/") || f.path.contains(&0)) {
        return Err(PullError::new(
            Reason::ReqPath,
            format!("remote path {} is not absolute or holds NUL", escape_bytes(&f.path, 200)),
        ));
    }
    let depth = job.depth.clamp(1, 256);
    let (files_tx, mut files_rx) = mpsc::unbounded_channel::<(usize, mpsc::Receiver<Msg>, OwnedSemaphorePermit)>();
    let mut report = ManyReport::default();
    let mut sink_error = None;
    let protocol = std::thread::scope(|s| {
        let proto = s.spawn(move || -> Result<u64, PullError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| PullError::new(Reason::Internal, format!("start the sftp runtime: {e}")))?;
            rt.block_on(run(job, depth, files_tx, start))
        });
        while let Some((index, rx, permit)) = files_rx.blocking_recv() {
            let mut reader = FileReader { rx, cur: BytesMut::new(), done: false, gone: None };
            // A file gone before its first byte never reaches the sink.
            reader.next_msg();
            if reader.done && reader.cur.is_empty() && reader.gone.is_some() {
                report.skipped.push(Skipped { index, why: reader.gone.take().unwrap_or_default() });
                drop(permit);
                continue;
            }
            let r = sink(index, &mut reader);
            // Drain what is left so the protocol side never waits on us.
            while !reader.done {
                reader.cur.clear();
                reader.next_msg();
            }
            drop(permit);
            match (r, reader.gone.take()) {
                (Err(SinkError::Abort(e)), _) => {
                    sink_error = Some(e);
                    break;
                }
                (_, Some(why)) | (Err(SinkError::Reject(why)), None) => report.skipped.push(Skipped { index, why }),
                (Ok(()), None) => report.fetched += 1,
            }
        }
        // Closing our end stops the protocol side (after an abort).
        drop(files_rx);
        proto.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    if let Some(e) = sink_error {
        return Err(e);
    }
    report.bytes = protocol?;
    report.elapsed = start.elapsed();
    Ok(report)
}

/// The protocol side: one connection, files launched in order while fewer
/// than `depth` are in flight and fewer than `2 × depth` wait for the sink.
async fn run(
    job: &ManyJob<'_>,
    depth: usize,
    files_tx: mpsc::UnboundedSender<(usize, mpsc::Receiver<Msg>, OwnedSemaphorePermit)>,
    start: Instant,
) -> Result<u64, PullError> {
    let clock = Clock::new(start, job.timeout, job.idle_timeout, job.min_rate);
    let tuning = Tuning { depth: depth * READ_AHEAD + 4, ..Tuning::default() };
    let mut conn = Conn::open(job.endpoint, &tuning, MAX_READ, &clock).await?;
    clock.start_rate();
    let result = pump(conn.sftp(), job, depth, &files_tx, &clock).await;
    conn.shutdown(result.is_ok()).await;
    match result {
        Ok(()) => Ok(clock.received()),
        Err(Failure::Job(e)) => Err(e),
        Err(Failure::Channel { what, error, progress }) => Err(conn.explain_at(what, &error, progress)),
    }
}

async fn pump(
    sftp: &Sftp,
    job: &ManyJob<'_>,
    depth: usize,
    files_tx: &mpsc::UnboundedSender<(usize, mpsc::Receiver<Msg>, OwnedSemaphorePermit)>,
    clock: &Clock,
) -> Result<(), Failure> {
    let waiting = Arc::new(Semaphore::new(2 * depth));
    let mut running = FuturesUnordered::new();
    let mut next = 0usize;
    let mut failed: Option<Failure> = None;
    let launch = |permit: OwnedSemaphorePermit, next: &mut usize| -> Option<_> {
        let (tx, rx) = mpsc::channel(FILE_BUFFERS);
        // The sink went away (it aborted): launch nothing more.
        files_tx.send((*next, rx, permit)).ok()?;
        let f = &job.files[*next];
        *next += 1;
        Some(fetch_one(sftp, clock, &f.path, f.size, tx))
    };
    loop {
        let more = failed.is_none() && next < job.files.len() && !files_tx.is_closed();
        if more && running.len() < depth {
            if let Ok(p) = Arc::clone(&waiting).try_acquire_owned() {
                match launch(p, &mut next) {
                    Some(fut) => running.push(fut),
                    None => break,
                }
                continue;
            }
            if running.is_empty() {
                // Only the sink can make room.
                let Ok(p) = Arc::clone(&waiting).acquire_owned().await else { break };
                match launch(p, &mut next) {
                    Some(fut) => running.push(fut),
                    None => break,
                }
                continue;
            }
            tokio::select! {
                done = running.next() => {
                    if let Some(Err(e)) = done { failed.get_or_insert(e); }
                }
                p = Arc::clone(&waiting).acquire_owned() => {
                    let Ok(p) = p else { break };
                    match launch(p, &mut next) {
                        Some(fut) => running.push(fut),
                        None => break,
                    }
                }
            }
            continue;
        }
        match running.next().await {
            Some(Err(e)) => {
                failed.get_or_insert(e);
            }
            Some(Ok(())) => {}
            None => break,
        }
    }
    clock.stop_rate();
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A per-request answer of the server (no such file, permission denied):
/// about this file only. Anything else is the connection's.
fn file_problem(error: &SftpError) -> Option<String> {
    match error {
        SftpError::SftpError(kind, msg) => Some(format!("{kind:?}: {}", ferry_text::escape(msg.get().0, 200))),
        _ => None,
    }
}

type ReadTask = tokio::task::JoinHandle<Result<Option<BytesMut>, SftpError>>;

fn spawn_read(file: &openssh_sftp_client::file::File, offset: u64, len: u32) -> ReadTask {
    let mut f = file.clone();
    tokio::spawn(async move {
        AsyncSeek::start_seek(Pin::new(&mut f), io::SeekFrom::Start(offset))?;
        f.read(len, BytesMut::with_capacity(len as usize)).await
    })
}

/// Fetch one file into `tx`. `Ok` whatever happened to the file (a problem
/// of the file was sent as [`Msg::Gone`]); `Err` only for the connection.
async fn fetch_one(sftp: &Sftp, clock: &Clock, path: &[u8], size: u64, tx: mpsc::Sender<Msg>) -> Result<(), Failure> {
    let p = Path::new(OsStr::from_bytes(path));
    let shown = || escape_bytes(path, 200);
    // `Err(None)`: the sink is gone, stop quietly.
    macro_rules! send {
        ($m:expr) => {
            if tx.send($m).await.is_err() {
                return Ok(());
            }
        };
    }
    // openssh-sftp-client 0.15 refuses to serialise a non-UTF-8 path (and
    // then fails the whole session): [`fetch_many`] sends such names
    // through [`super::batch`], never here.
    if std::str::from_utf8(path).is_err() {
        send!(Msg::Gone(format!("{}: name is not UTF-8, which the sftp library cannot send", shown())));
        return Ok(());
    }
    // No lstat first: `open` and the reads say all a lstat would (a file
    // gone fails the open, a directory fails the read, another size ends
    // the reads early or late), and it was a fifth of the requests the
    // client's single-threaded sftp-server answers for a small file. A
    // file that became a FIFO blocks the server's open until the idle
    // timeout either way (a lstat first only narrows that race), and a
    // file that became a symlink yields bytes that must still match the
    // manifest's digest. Problems are explained by one lstat afterwards.
    let file = match clock.within("open", sftp.open(p)).await? {
        Ok(f) => f,
        Err(error) => {
            let Some(why) = file_problem(&error) else {
                return Err(Failure::Channel { what: "open", error, progress: None });
            };
            send!(Msg::Gone(format!("{}: open: {why}{}", shown(), explain(sftp, clock, p, size).await?)));
            return Ok(());
        }
    };
    let mut queue: VecDeque<(u64, u32, ReadTask)> = VecDeque::new();
    let mut next = 0u64;
    let mut chunk = MAX_READ;
    // Whether the read that reached `size` also asked for the byte after
    // it: an answer that stops at `size` then is the end of the file (the
    // server does one read(2) per request), and no probe is needed.
    let mut asked_past = false;
    loop {
        while queue.len() < READ_AHEAD && (next < size || (size == 0 && !asked_past)) {
            let mut len = (size - next).min(u64::from(chunk)) as u32;
            if next + u64::from(len) == size && len < chunk {
                len += 1;
                asked_past = true;
            }
            queue.push_back((next, len, spawn_read(&file, next, len)));
            next += u64::from(len);
        }
        let Some((mut at, mut want, mut task)) = queue.pop_front() else { break };
        loop {
            let got = match clock.within("read", task).await? {
                Ok(Ok(v)) => v,
                Ok(Err(error)) => match file_problem(&error) {
                    Some(why) => {
                        let more = explain(sftp, clock, p, size).await?;
                        send!(Msg::Gone(format!("{}: read: {why}{more}", shown())));
                        return Ok(());
                    }
                    None => {
                        return Err(Failure::Channel { what: "read", error, progress: Some((clock.received(), size)) });
                    }
                },
                Err(e) => return Err(PullError::new(Reason::Internal, format!("read task failed: {e}")).into()),
            };
            let buf = got.filter(|b| !b.is_empty());
            let Some(buf) = buf else {
                if at == size {
                    // The end, where the manifest said.
                    break;
                }
                send!(Msg::Gone(format!("{}: ended after {at} bytes, the manifest promised {size}", shown())));
                return Ok(());
            };
            let n = buf.len() as u32;
            if n > want {
                return Err(PullError::new(
                    Reason::FetchLimit,
                    format!("the server answered a {want}-byte read with {n} bytes"),
                )
                .into());
            }
            if at + u64::from(n) > size {
                send!(Msg::Gone(format!("{}: holds more than the {size} bytes the manifest promised", shown())));
                return Ok(());
            }
            clock.progress(u64::from(n));
            send!(Msg::Data(buf));
            at += u64::from(n);
            want -= n;
            if want == 0 || (at == size && asked_past && queue.is_empty()) {
                break;
            }
            // A short answer: the server's limit is lower; read the rest.
            if n >= 4096 {
                chunk = chunk.min(n);
            }
            if asked_past && queue.is_empty() {
                // The rest may be more than the server answers at once, so
                // an answer that stops at the size no longer proves the
                // end: read on until the server says so.
                asked_past = false;
            }
            task = spawn_read(&file, at, want);
        }
    }
    // The last read stopped at the size without proving the end (the size
    // is a multiple of the read size, or the server cut the last read
    // short): one byte more says whether the file grew.
    if !asked_past && size > 0 {
        let probe = spawn_read(&file, size, 1);
        match clock.within("read", probe).await? {
            Ok(Ok(Some(b))) if !b.is_empty() => {
                send!(Msg::Gone(format!("{}: holds more than the {size} bytes the manifest promised", shown())));
                return Ok(());
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                if let Some(why) = file_problem(&error) {
                    send!(Msg::Gone(format!("{}: read: {why}", shown())));
                    return Ok(());
                }
                return Err(Failure::Channel { what: "read", error, progress: Some((clock.received(), size)) });
            }
            Err(e) => return Err(PullError::new(Reason::Internal, format!("read task failed: {e}")).into()),
        }
    }
    send!(Msg::End);
    let _ = clock.within("close", file.close()).await;
    Ok(())
}

/// Why a file failed, from one lstat after the fact (only on that path,
/// so a fetch that goes well never pays for it): "; now a directory",
/// "; now 12 bytes, the manifest promised 10", or nothing.
async fn explain(sftp: &Sftp, clock: &Clock, p: &Path, size: u64) -> Result<String, Failure> {
    let mut fs = sftp.fs();
    Ok(match clock.within("lstat", fs.symlink_metadata(p)).await? {
        Ok(md) => match md.file_type() {
            Some(t) if t.is_dir() => "; no longer a regular file (a directory)".to_owned(),
            Some(t) if !t.is_file() => "; no longer a regular file".to_owned(),
            _ => match md.len() {
                Some(n) if n != size => format!("; now {n} bytes, the manifest promised {size}"),
                _ => String::new(),
            },
        },
        Err(_) => String::new(),
    })
}
