//! Where received bytes go: counted, hashed and written into a temporary
//! file, which is synced and renamed into place only once verified.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use ferry_request::Reason;
use sha2::{Digest, Sha256};

use super::already_stored;
use super::direct::DirectWriter;
use crate::PullError;

/// The temporary file; removed on drop unless the download was published,
/// so every error path — timeouts and panics included — cleans up.
pub(super) struct TempFile {
    pub(super) path: PathBuf,
    pub(super) file: Option<File>,
    pub(super) keep: bool,
}

impl TempFile {
    pub(super) fn create(dir: &Path, name: &str) -> Result<TempFile, PullError> {
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
pub(super) struct Sink {
    pub(super) tmp: TempFile,
    pub(super) hasher: Sha256,
    pub(super) written: u64,
    pub(super) expected: u64,
    /// Bytes already handed to the kernel's writeback (see [`Sink::write`]).
    flushed: u64,
    /// Large files are written around the page cache (see `direct.rs`).
    direct: Option<DirectWriter>,
}

/// Start writeback every this many bytes.
const WRITEBACK_STEP: u64 = 8 << 20;

impl Sink {
    /// A sink for `expected` bytes; `direct`: write with `O_DIRECT` where
    /// the file system allows it.
    pub(super) fn new(tmp: TempFile, expected: u64, direct: bool) -> Result<Sink, PullError> {
        let direct = match (&tmp.file, direct) {
            (Some(f), true) => DirectWriter::start(f)?,
            _ => None,
        };
        Ok(Sink { tmp, hasher: Sha256::new(), written: 0, expected, flushed: 0, direct })
    }

    /// Whether large writes go around the page cache.
    pub(super) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Everything received is written (not yet synced).
    pub(super) fn complete(&mut self) -> Result<(), PullError> {
        match self.direct.take() {
            Some(d) => d.finish(),
            None => Ok(()),
        }
    }

    /// Count, hash and write `buf`; gives it back (empty) when it can be
    /// reused at once, else it comes back later through [`Sink::reuse`].
    fn put(&mut self, buf: BytesMut) -> Result<Option<BytesMut>, PullError> {
        let len = buf.len() as u64;
        self.admit(len)?;
        self.hasher.update(&buf);
        let back = match self.direct.as_mut() {
            Some(d) => d.write_buf(buf)?,
            None => {
                self.write_buffered(&buf)?;
                Some(buf)
            }
        };
        self.written += len;
        Ok(back.map(|mut b| {
            b.clear();
            b
        }))
    }

    /// A buffer the direct writer is done with.
    fn reuse(&self) -> Option<BytesMut> {
        self.direct.as_ref().and_then(DirectWriter::reuse)
    }

    /// Nothing beyond the declared size is hashed or written (SF-01).
    fn admit(&self, len: u64) -> Result<(), PullError> {
        if self.written + len > self.expected {
            return Err(PullError::new(
                Reason::FetchLimit,
                format!("the client sent more than the {} bytes declared; download stopped", self.expected),
            ));
        }
        Ok(())
    }

    #[cfg(test)]
    fn write(&mut self, data: &[u8]) -> Result<(), PullError> {
        self.put(BytesMut::from(data)).map(drop)
    }

    fn write_buffered(&mut self, data: &[u8]) -> Result<(), PullError> {
        let f = self.tmp.file.as_mut().expect("temp file open while writing");
        f.write_all(data).map_err(|e| PullError::io("write the download", e))?;
        let written = self.written + data.len() as u64;
        // Start writeback of what is written so far, without waiting, and
        // drop pages that are already clean: the final fsync then waits for
        // the tail only instead of the whole file, and a large download
        // neither piles up dirty memory nor evicts the node's page cache.
        if written - self.flushed >= WRITEBACK_STEP {
            let from = self.flushed.saturating_sub(4 * WRITEBACK_STEP);
            let _ =
                rustix::fs::fadvise(&*f, from, std::num::NonZeroU64::new(written - from), rustix::fs::Advice::DontNeed);
            self.flushed = written;
        }
        Ok(())
    }
}

/// The sink, either written inline or on a thread of its own so hashing
/// and disk writes overlap with the protocol work (SHA-256 is the largest
/// CPU cost of a download: about 1 s of CPU per GiB with sha2 on SHA-NI, as fast as OpenSSL here).
pub(super) enum Output {
    Inline(Box<Sink>),
    Thread(WriterThread),
}

pub(super) struct WriterThread {
    tx: Option<tokio::sync::mpsc::Sender<BytesMut>>,
    spare: std::sync::mpsc::Receiver<BytesMut>,
    thread: Option<std::thread::JoinHandle<Result<Sink, PullError>>>,
}

impl WriterThread {
    pub(super) fn start(mut sink: Sink, depth: usize) -> Result<WriterThread, PullError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<BytesMut>(depth.clamp(2, 64));
        let (back, spare) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ferry-sftp-writer".into())
            .spawn(move || {
                while let Some(buf) = rx.blocking_recv() {
                    if let Some(b) = sink.put(buf)? {
                        let _ = back.send(b);
                    }
                    while let Some(b) = sink.reuse() {
                        let _ = back.send(b);
                    }
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
    pub(super) async fn put(&mut self, buf: BytesMut) -> Result<Option<BytesMut>, PullError> {
        match self {
            Output::Inline(sink) => Ok(sink.put(buf)?.or_else(|| sink.reuse())),
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

    pub(super) fn into_sink(self) -> Result<Sink, PullError> {
        match self {
            Output::Inline(sink) => Ok(*sink),
            Output::Thread(mut w) => w.join(),
        }
    }
}

/// fsync the file, move it to its final name without ever replacing one,
/// fsync the directory.
pub(super) fn publish(mut tmp: TempFile, dir: &Path, name: &str) -> Result<PathBuf, PullError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_request::Reason;

    fn sink_in(dir: &Path, expected: u64) -> Sink {
        Sink::new(TempFile::create(dir, "x").unwrap(), expected, false).unwrap()
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
}
