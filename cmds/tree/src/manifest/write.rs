//! The streaming writer: one line buffer, so a 100,000-entry manifest is
//! never held as text (the caller may not even hold the entries: it can
//! feed them one by one in path order).

use std::io::{self, Write};

use super::encode::encode_into;
use super::{Entry, HEADER, Kind, Options};

/// Writes a manifest line by line: [`Writer::new`] writes the header and
/// options, [`Writer::entry`] one entry, [`Writer::finish`] the trailer.
///
/// Entries must come sorted strictly by path, and carry xattrs only when
/// the option says so; the writer refuses anything else with
/// `InvalidInput` rather than write a manifest the node would refuse. The
/// other rules (parents, link groups) are the producer's business and are
/// checked by the parser.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: io::BufWriter<W>,
    options: Options,
    line: Vec<u8>,
    last: Option<Vec<u8>>,
    entries: u64,
    bytes: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a manifest: writes the header and option lines.
    pub fn new(out: W, options: Options) -> io::Result<Writer<W>> {
        let mut out = io::BufWriter::with_capacity(256 << 10, out);
        out.write_all(HEADER.as_bytes())?;
        out.write_all(b"\n")?;
        if options.xattrs {
            out.write_all(b"xattrs 1\n")?;
        }
        Ok(Writer { out, options, line: Vec::with_capacity(512), last: None, entries: 0, bytes: 0 })
    }

    /// Writes one entry.
    pub fn entry(&mut self, e: &Entry) -> io::Result<()> {
        if let Some(last) = &self.last
            && e.path <= *last
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "manifest entries must be sorted strictly by path",
            ));
        }
        if !self.options.xattrs && !e.xattrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "xattrs on an entry of a manifest without xattrs"));
        }
        self.line.clear();
        format_entry(&mut self.line, e);
        self.out.write_all(&self.line)?;
        self.entries += 1;
        self.bytes = self.bytes.saturating_add(e.size());
        match &mut self.last {
            Some(last) => {
                last.clear();
                last.extend_from_slice(&e.path);
            }
            None => self.last = Some(e.path.clone()),
        }
        Ok(())
    }

    /// Writes the trailer, flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        writeln!(self.out, "end {} {}", self.entries, self.bytes)?;
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Appends `e`'s line (with its LF) to `out`.
pub(crate) fn format_entry(out: &mut Vec<u8>, e: &Entry) {
    use std::io::Write as _;
    out.push(e.kind.letter() as u8);
    out.extend_from_slice(b" path=");
    encode_into(out, &e.path, None);
    let _ = write!(out, " mode={:04o} uid={} gid={}", e.mode & 0o7777, e.uid, e.gid);
    if let Some(u) = &e.user {
        out.extend_from_slice(b" user=");
        encode_into(out, u, None);
    }
    if let Some(g) = &e.group {
        out.extend_from_slice(b" group=");
        encode_into(out, g, None);
    }
    let _ = write!(out, " mtime={}", e.mtime);
    match &e.kind {
        Kind::File { size, sha256 } => {
            let _ = write!(out, " size={size} sha256={sha256}");
        }
        Kind::Symlink { target } => {
            out.extend_from_slice(b" target=");
            encode_into(out, target, None);
        }
        Kind::CharDev(r) | Kind::BlockDev(r) => {
            let _ = write!(out, " rdev={}:{}", r.major, r.minor);
        }
        Kind::Dir | Kind::Fifo | Kind::Socket => {}
    }
    if let Some(l) = e.link {
        let _ = write!(out, " link={l}");
    }
    for (k, v) in &e.xattrs {
        out.extend_from_slice(b" xattr=");
        encode_into(out, k, Some(b':'));
        out.push(b':');
        encode_into(out, v, None);
    }
    out.push(b'\n');
}
