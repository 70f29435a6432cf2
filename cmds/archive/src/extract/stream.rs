//! The input side of extraction, steps 1 to 3 of the pipeline: the zstd
//! magic check (SF-12), one frame with the default window limit (AX-18),
//! and the counting readers that stop a bomb while it streams
//! (`max_total_bytes`, `max_ratio`), and what may follow the tar archive
//! ([`check_end`]). Errors from the tar crate, which rewraps io errors, are
//! classified here ([`read_err`]) from counters the readers share.

use std::cell::{Cell, RefCell};
use std::io::{self, BufReader, Chain, Cursor, Read};
use std::rc::Rc;

use super::policy::ExtractPolicy;
use crate::error::ArchiveError;

/// The zstd frame magic number, little endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Decompressed bytes always allowed before the ratio check bites.
const RATIO_ALLOWANCE: u64 = 1 << 20;

/// Counters shared by the readers of the pipeline, so an error surfacing
/// through the tar crate (which rewraps io errors) can still be classified.
#[derive(Default)]
pub(super) struct Shared {
    compressed: Cell<u64>,
    decompressed: Cell<u64>,
    limit_hit: RefCell<Option<String>>,
    input_failed: Cell<bool>,
    eof_seen: Cell<bool>,
}

/// Counts the compressed bytes read, and notes when the caller's input
/// itself failed.
pub(super) struct CountingReader<R> {
    inner: R,
    sh: Rc<Shared>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.sh.compressed.set(self.sh.compressed.get() + n as u64);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.sh.input_failed.set(true);
                }
                Err(e)
            }
        }
    }
}

/// Counts the decompressed bytes and stops the stream once they cross
/// `max_total_bytes` or `max_ratio` times the compressed bytes.
pub(super) struct LimitReader<R> {
    inner: R,
    sh: Rc<Shared>,
    max_total: u64,
    max_ratio: Option<u64>,
}

impl<R: Read> Read for LimitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.sh.eof_seen.set(true);
        }
        let total = self.sh.decompressed.get() + n as u64;
        self.sh.decompressed.set(total);
        let hit = if total > self.max_total {
            Some(format!("decompressed archive larger than max_total_bytes ({} bytes)", self.max_total))
        } else if let Some(r) = self.max_ratio
            && total > r.saturating_mul(self.sh.compressed.get()).saturating_add(RATIO_ALLOWANCE)
        {
            Some(format!(
                "decompression ratio above max_ratio ({r}:1) after {total} bytes \
                 (large zero-filled files do this too; raise max_ratio if the archive is trusted)"
            ))
        } else {
            None
        };
        if let Some(what) = hit {
            *self.sh.limit_hit.borrow_mut() = Some(what);
            return Err(io::Error::other("archive limit exceeded"));
        }
        Ok(n)
    }
}

pub(super) type Decoder<R> = zstd::stream::read::Decoder<'static, BufReader<CountingReader<Chain<Cursor<[u8; 4]>, R>>>>;
pub(super) type Stream<R> = LimitReader<Decoder<R>>;

/// Names well-known magic numbers so an administrator sees what the file
/// really is.
fn describe_magic(m: &[u8]) -> &'static str {
    match m {
        [0x1f, 0x8b, ..] => "gzip data, not zstd",
        [0xfd, b'7', b'z', b'X'] => "xz data, not zstd",
        [b'P', b'K', ..] => "zip data, not zstd",
        [b'B', b'Z', b'h', ..] => "bzip2 data, not zstd",
        [b'#', b'!', ..] => "a script, not zstd",
        [0x50..=0x5f, 0x2a, 0x4d, 0x18] => "a zstd skippable frame where the archive must start",
        _ => "not a zstd stream",
    }
}

/// Checks the magic and starts the counted, limited zstd stream.
pub(super) fn open_stream<R: Read>(
    mut input: R,
    policy: &ExtractPolicy,
) -> Result<(Stream<R>, Rc<Shared>), ArchiveError> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ArchiveError::io("reading archive", e)),
        }
    }
    if got < 4 {
        return Err(ArchiveError::format("input too short to be a zstd stream"));
    }
    if magic != ZSTD_MAGIC {
        return Err(ArchiveError::format(describe_magic(&magic)));
    }
    let sh = Rc::new(Shared::default());
    sh.compressed.set(4);
    let counting = CountingReader { inner: Cursor::new(magic).chain(input), sh: sh.clone() };
    // Default window limit (2^27) on purpose: never call window_log_max.
    let dec =
        zstd::stream::read::Decoder::new(counting).map_err(|e| ArchiveError::io("starting zstd", e))?.single_frame();
    Ok((LimitReader { inner: dec, sh: sh.clone(), max_total: policy.max_total_bytes, max_ratio: policy.max_ratio }, sh))
}

/// Classifies an error from the reading side: a limit we raised, the
/// caller's input failing, or (everything else) a malformed archive.
pub(super) fn read_err(sh: &Shared, e: io::Error) -> ArchiveError {
    if let Some(what) = sh.limit_hit.borrow_mut().take() {
        return ArchiveError::limit(what);
    }
    if sh.input_failed.get() {
        return ArchiveError::io("reading archive", e);
    }
    ArchiveError::format(format!("malformed archive: {e}"))
}

/// After the tar end-of-archive marker: the marker must have been real,
/// only zero padding may follow it, and nothing may follow the one zstd
/// frame.
pub(super) fn check_end<R: Read>(mut stream: Stream<R>, sh: &Shared) -> Result<(), ArchiveError> {
    // The tar crate stops at the first zero block; make sure it was a real
    // end-of-archive marker and not the input simply running out.
    if sh.eof_seen.get() {
        return Err(ArchiveError::format("archive ends without an end-of-archive marker (truncated?)"));
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(sh, e)),
        };
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(ArchiveError::format("data after the end-of-archive marker (one archive per file)"));
        }
    }
    // One zstd frame per file: nothing may follow it.
    let mut rest = stream.inner.finish();
    if !io::BufRead::fill_buf(&mut rest).map_err(|e| read_err(sh, e))?.is_empty() {
        return Err(ArchiveError::format("data after the zstd frame (one frame per file)"));
    }
    Ok(())
}
