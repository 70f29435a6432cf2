//! The transfer itself: connect, check the remote file, pipelined reads in
//! offset order into the sink, verify, publish.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::time::Instant;

use bytes::BytesMut;
use ferry_request::Reason;
use ferry_text::escape;
use openssh_sftp_client::Error as SftpError;
use openssh_sftp_client::metadata::MetaData;
use sha2::Digest;
use tokio::io::AsyncSeek;
use tokio::task::JoinHandle;

use super::clock::Clock;
use super::conn::Conn;
use super::direct::{aligned_buf, direct_chunk};
use super::sink::{Output, Sink, TempFile, WriterThread, publish};
use super::{DIRECT_FROM, DownloadJob, Downloaded, MAX_READ, Tuning};
use crate::PullError;

pub(super) async fn run_download(
    job: &DownloadJob<'_>,
    tuning: &Tuning,
    start: Instant,
) -> Result<Downloaded, PullError> {
    let clock = Clock::new(start, job.timeout, job.idle_timeout, job.min_rate);
    let chunk = tuning.chunk.clamp(4096, MAX_READ);
    let own;
    let tuning = if tuning.multiplex && job.expected_size > tuning.multiplex_max {
        own = Tuning { multiplex: false, ..tuning.clone() };
        &own
    } else {
        tuning
    };
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
        // `out` drops here and removes the file. A failed channel is
        // explained only now that ssh is gone and its last words are read.
        Err(Failure::Job(e)) => return Err(e),
        Err(Failure::Channel { what, error, progress }) => return Err(conn.explain_at(what, &error, progress)),
    };
    let done = finish(job, out.into_sink()?, start);
    tracing::debug!(finished_ms = start.elapsed().as_millis() as u64, "sftp download stored");
    done
}

/// How a transfer failed: with its reason already known, or in the sftp
/// channel (see [`Conn::explain_at`]).
pub(super) enum Failure {
    Job(PullError),
    Channel {
        what: &'static str,
        error: SftpError,
        /// Bytes received and declared, once the data transfer began.
        progress: Option<(u64, u64)>,
    },
}

impl From<PullError> for Failure {
    fn from(e: PullError) -> Self {
        Failure::Job(e)
    }
}

fn finish(job: &DownloadJob<'_>, mut sink: Sink, start: Instant) -> Result<Downloaded, PullError> {
    sink.complete()?;
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

async fn joined(clock: &Clock, size: u64, task: ReadTask) -> Result<Option<BytesMut>, Failure> {
    match clock.within("read", task).await? {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(error)) => Err(Failure::Channel { what: "read", error, progress: Some((clock.received(), size)) }),
        Err(e) => Err(PullError::new(Reason::Internal, format!("read: read task failed: {e}")).into()),
    }
}

/// An sftp request before the data transfer (lstat, open, fstat).
async fn ask<T>(
    clock: &Clock,
    what: &'static str,
    f: impl Future<Output = Result<T, SftpError>>,
) -> Result<T, Failure> {
    clock.within(what, f).await?.map_err(|error| Failure::Channel { what, error, progress: None })
}

async fn transfer(
    conn: &Conn,
    job: &DownloadJob<'_>,
    tuning: &Tuning,
    mut chunk: u32,
    clock: &Clock,
    out: &mut Option<Output>,
) -> Result<(), Failure> {
    let sftp = conn.sftp();
    let mut fs = sftp.fs();
    let md = ask(clock, "lstat", fs.symlink_metadata(job.remote_path)).await?;
    check_meta(&md, job, "lstat")?;
    let file = ask(clock, "open", sftp.open(job.remote_path)).await?;
    let mut probe = file.clone();
    let md = ask(clock, "fstat", probe.metadata()).await?;
    check_meta(&md, job, "fstat")?;

    let direct = tuning.direct_io && job.expected_size >= DIRECT_FROM;
    let sink = Sink::new(TempFile::create(job.dest_dir, job.dest_name)?, job.expected_size, direct)?;
    // Direct writes take full answers as they are when they are aligned.
    let direct = sink.is_direct();
    if direct {
        chunk = direct_chunk(chunk);
    }
    let new_buf = |cap: u32| if direct { aligned_buf(cap as usize) } else { BytesMut::with_capacity(cap as usize) };
    let depth = tuning.depth.clamp(1, 256);
    let sink = out.insert(if tuning.writer_thread {
        Output::Thread(WriterThread::start(sink, depth)?)
    } else {
        Output::Inline(Box::new(sink))
    });
    let size = job.expected_size;
    let mut queue: VecDeque<(u64, u32, ReadTask)> = VecDeque::with_capacity(depth);
    let mut spare: Vec<BytesMut> = Vec::with_capacity(depth);
    let mut next = 0u64;
    clock.start_rate();
    loop {
        while queue.len() < depth && next < size {
            let len = (size - next).min(u64::from(chunk)) as u32;
            let buf = spare.pop().unwrap_or_else(|| new_buf(chunk));
            queue.push_back((next, len, spawn_read(&file, next, len, buf)));
            next += u64::from(len);
        }
        let Some((offset, len, task)) = queue.pop_front() else { break };
        let mut want = len;
        let mut at = offset;
        let mut got = joined(clock, size, task).await?;
        loop {
            let Some(buf) = got else {
                return Err(PullError::new(
                    Reason::FetchSizeMismatch,
                    format!("the file ended after {at} bytes, the request declared {size}"),
                )
                .into());
            };
            let n = buf.len() as u32;
            if n > want {
                return Err(PullError::new(
                    Reason::FetchLimit,
                    format!("the server answered a {want}-byte read with {n} bytes"),
                )
                .into());
            }
            if let Some(b) = clock.within("write", sink.put(buf)).await?? {
                spare.push(b);
            }
            clock.progress(u64::from(n));
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
            let buf = spare.pop().unwrap_or_else(|| new_buf(want));
            got = joined(clock, size, spawn_read(&file, at, want, buf)).await?;
        }
    }
    clock.stop_rate();
    // A file longer than declared (SF-01: lying size, growing file) must
    // answer EOF here; one byte more is already too much.
    match joined(clock, size, spawn_read(&file, size, 1, BytesMut::with_capacity(1))).await? {
        None => {}
        Some(b) if b.is_empty() => {}
        Some(_) => {
            return Err(PullError::new(
                Reason::FetchLimit,
                format!("the file holds more than the {size} bytes declared; download stopped"),
            )
            .into());
        }
    }
    drop(probe);
    let _ = clock.within("close", file.close()).await;
    Ok(())
}
