//! Reading an object as a synchronous [`Read`], fast: a task on the
//! store's runtime fetches ahead while the caller hashes and writes, so
//! network and disk overlap. A large object is fetched as ranges of
//! [`RANGE`] bytes, [`RANGES_IN_FLIGHT`] at once, in order (what `aws s3
//! cp` does: one TCP stream rarely fills the link to a distributed store);
//! each range is pinned to the object's ETag, so an object replaced
//! meanwhile fails the read instead of splicing two versions. Memory is
//! bounded: ranges in flight plus [`AHEAD`] fetched ranges.

use std::io::Read;
use std::sync::Arc;

use futures::StreamExt as _;
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore as _};

/// Bytes of one ranged GET.
pub const RANGE: u64 = 4 << 20;
/// Ranged GETs at once.
pub const RANGES_IN_FLIGHT: usize = 6;
/// Fetched chunks waiting for the reader.
const AHEAD: usize = 1;

type Chunk = Result<bytes::Bytes, String>;

/// A streamed object (module docs).
pub struct ObjectReader {
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    buf: bytes::Bytes,
    done: bool,
    _task: tokio::task::JoinHandle<()>,
}

impl ObjectReader {
    /// Start fetching `size` bytes of `path` (ETag `etag`); `what` names
    /// it in errors.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        client: Arc<AmazonS3>,
        path: ObjPath,
        size: u64,
        etag: Option<String>,
        what: String,
    ) -> ObjectReader {
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(AHEAD);
        let task = rt.spawn(async move {
            if size <= RANGE {
                // One GET, streamed as it arrives.
                let opts = GetOptions { if_match: etag, ..Default::default() };
                let mut stream = match client.get_opts(&path, opts).await {
                    Ok(r) => r.into_stream(),
                    Err(e) => {
                        let _ = tx.send(Err(format!("reading {what}: {e}"))).await;
                        return;
                    }
                };
                while let Some(c) = stream.next().await {
                    let c = c.map_err(|e| format!("reading {what}: {e}"));
                    let stop = c.is_err();
                    if tx.send(c).await.is_err() || stop {
                        return;
                    }
                }
                return;
            }
            let ranges: Vec<std::ops::Range<u64>> =
                (0..size.div_ceil(RANGE)).map(|i| i * RANGE..((i + 1) * RANGE).min(size)).collect();
            let mut fetched = futures::stream::iter(ranges)
                .map(|r| {
                    let (client, path, etag, what) = (client.clone(), path.clone(), etag.clone(), what.clone());
                    async move {
                        let want = r.end - r.start;
                        let opts =
                            GetOptions { if_match: etag, range: Some(GetRange::Bounded(r)), ..Default::default() };
                        let b = async { client.get_opts(&path, opts).await?.bytes().await }
                            .await
                            .map_err(|e| format!("reading {what}: {e}"))?;
                        if b.len() as u64 != want {
                            return Err(format!("reading {what}: a range of {want} bytes came back as {}", b.len()));
                        }
                        Ok(b)
                    }
                })
                .buffered(RANGES_IN_FLIGHT);
            while let Some(c) = fetched.next().await {
                let stop = c.is_err();
                if tx.send(c).await.is_err() || stop {
                    return;
                }
            }
        });
        ObjectReader { rx, buf: bytes::Bytes::new(), done: false, _task: task }
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        // A reader that stops early (a failed restore) stops the fetching.
        self._task.abort();
    }
}

impl Read for ObjectReader {
    /// Fills as much of `out` as fetched data allows (large reads are one
    /// copy, not one call per network chunk).
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            if self.buf.is_empty() {
                if self.done {
                    break;
                }
                // Block only for the first bytes; afterwards take what
                // has already arrived.
                let next = if n == 0 {
                    self.rx.blocking_recv()
                } else {
                    match self.rx.try_recv() {
                        Ok(c) => Some(c),
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
                    }
                };
                match next {
                    None => {
                        self.done = true;
                        break;
                    }
                    Some(Ok(b)) => self.buf = b,
                    Some(Err(e)) => return Err(std::io::Error::other(e)),
                }
            }
            let k = (out.len() - n).min(self.buf.len());
            out[n..n + k].copy_from_slice(&self.buf[..k]);
            bytes::Buf::advance(&mut self.buf, k);
            n += k;
        }
        Ok(n)
    }
}
