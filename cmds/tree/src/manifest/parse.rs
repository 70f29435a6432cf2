//! The parser: one pass over the lines, syntax here, everything else in
//! [`super::validate`].

use std::io::{BufRead, BufReader, Read};

use super::encode::{DecodeError, decode_with, parse_dec, parse_mode, parse_time, parse_u32};
use super::validate::Validator;
use super::{Entry, HEADER, Kind, Limits, Manifest, ManifestError, Options, Rdev, ReadError, Refusal, Sha256};

/// Parses and validates a whole manifest held in memory.
pub fn parse(input: &[u8], limits: &Limits) -> Result<Manifest, ManifestError> {
    match read(input, limits) {
        Ok(m) => Ok(m),
        Err(ReadError::Refused(e)) => Err(e),
        Err(ReadError::Io(e)) => unreachable!("reading a slice cannot fail: {e}"),
    }
}

/// Parses and validates a manifest from a reader, one line at a time, never
/// holding more than one line (capped at [`Limits::max_line_bytes`]) of text.
pub fn read<R: Read>(input: R, limits: &Limits) -> Result<Manifest, ReadError> {
    let mut r = BufReader::with_capacity(256 << 10, input);
    let mut p = Parser { limits, lineno: 0, buf: Vec::with_capacity(512) };

    if !p.next_line(&mut r)? {
        return Err(p.err(Refusal::Truncated, "empty input").into());
    }
    if p.buf != HEADER.as_bytes() {
        return Err(p.err(Refusal::Header, &p.buf).into());
    }
    let mut options = Options::default();
    let mut v: Option<Validator<'_>> = None;
    let mut entries = Vec::new();
    loop {
        if !p.next_line(&mut r)? {
            return Err(p.err(Refusal::Truncated, "no trailer").into());
        }
        let (line, lineno) = (p.buf.as_slice(), p.lineno);
        if let Some(rest) = line.strip_prefix(b"end ") {
            let counts = parse_trailer(rest).ok_or_else(|| ManifestError::new(Refusal::Trailer, lineno, line))?;
            let v = v.get_or_insert_with(|| Validator::new(limits, options));
            let expect = v.finish()?;
            if counts != expect {
                return Err(ManifestError::new(
                    Refusal::Trailer,
                    lineno,
                    format!(
                        "trailer says {} entries, {} bytes; the manifest has {} entries, {} bytes",
                        counts.0, counts.1, expect.0, expect.1
                    ),
                )
                .into());
            }
            break;
        }
        let is_entry = matches!(line, [b'f' | b'd' | b'l' | b'p' | b's' | b'c' | b'b', b' ', ..]);
        if v.is_none() && !is_entry {
            // Option lines: before the first entry, known, in order, once.
            if line == b"xattrs 1" && !options.xattrs {
                options.xattrs = true;
                continue;
            }
            return Err(p.err(Refusal::BadOption, line).into());
        }
        let v = v.get_or_insert_with(|| Validator::new(limits, options));
        let e = parse_entry(line, options).map_err(|(r, d)| ManifestError::new(r, lineno, d))?;
        v.admit(&e, lineno)?;
        entries.push(e);
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest)? != 0 {
        return Err(ManifestError::new(Refusal::TrailingGarbage, p.lineno + 1, "").into());
    }
    Ok(Manifest { options, entries })
}

struct Parser<'l> {
    limits: &'l Limits,
    lineno: u64,
    buf: Vec<u8>,
}

impl Parser<'_> {
    fn err(&self, r: Refusal, detail: impl AsRef<[u8]>) -> ManifestError {
        ManifestError::new(r, self.lineno, detail)
    }

    /// Reads the next line into `buf` without its LF, checked for length
    /// and bytes; `false` at end of input.
    fn next_line<R: BufRead>(&mut self, r: &mut R) -> Result<bool, ReadError> {
        self.buf.clear();
        self.lineno += 1;
        // Saturating: `usize::MAX` (no limit) must not wrap to a cap of 0.
        let cap = (self.limits.max_line_bytes as u64).saturating_add(1);
        let n = r.by_ref().take(cap).read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(false);
        }
        match self.buf.last() {
            Some(b'\n') => {
                self.buf.pop();
            }
            _ if n as u64 == cap => {
                return Err(self
                    .err(Refusal::LineTooLong, format!("limit {} bytes", self.limits.max_line_bytes))
                    .into());
            }
            _ => return Err(self.err(Refusal::Truncated, "last line has no LF").into()),
        }
        if let Some(i) = self.buf.iter().position(|b| !(0x20..=0x7e).contains(b)) {
            return Err(ManifestError::new(
                Refusal::Encoding,
                self.lineno,
                format!("byte 0x{:02x} at column {}", self.buf[i], i + 1),
            )
            .into());
        }
        Ok(true)
    }
}

fn parse_trailer(rest: &[u8]) -> Option<(u64, u64)> {
    let mut it = rest.split(|b| *b == b' ');
    let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
        return None;
    };
    Some((parse_dec(a)?, parse_dec(b)?))
}

type LineError = (Refusal, Vec<u8>);

/// The space-separated tokens of one line.
type Tokens<'a> = std::iter::Peekable<std::slice::Split<'a, u8, fn(&u8) -> bool>>;

/// Walks the `key=value` fields of one line in the fixed order.
struct Fields<'a> {
    toks: Tokens<'a>,
}

/// Every field name of the format, to tell "unknown" from "misplaced".
const KNOWN: &[&[u8]] = &[
    b"path", b"mode", b"uid", b"gid", b"user", b"group", b"mtime", b"size", b"sha256", b"target", b"rdev", b"link",
    b"xattr",
];

fn split_field(tok: &[u8]) -> Result<(&[u8], &[u8]), LineError> {
    if tok.is_empty() {
        return Err((Refusal::Field, b"empty field (two spaces, or a space at the end)".to_vec()));
    }
    let eq = tok.iter().position(|b| *b == b'=').ok_or_else(|| (Refusal::Field, tok.to_vec()))?;
    Ok((&tok[..eq], &tok[eq + 1..]))
}

impl<'a> Fields<'a> {
    fn peek_key(&mut self) -> Result<Option<&'a [u8]>, LineError> {
        match self.toks.peek() {
            None => Ok(None),
            Some(t) => Ok(Some(split_field(t)?.0)),
        }
    }

    fn opt(&mut self, key: &[u8]) -> Result<Option<&'a [u8]>, LineError> {
        if self.peek_key()? == Some(key) {
            let t = self.toks.next().expect("peeked");
            return Ok(Some(split_field(t)?.1));
        }
        Ok(None)
    }

    fn req(&mut self, key: &[u8]) -> Result<&'a [u8], LineError> {
        match self.opt(key)? {
            Some(v) => Ok(v),
            None => {
                let mut d = b"expected field `".to_vec();
                d.extend_from_slice(key);
                d.extend_from_slice(b"`");
                if let Some(t) = self.toks.peek() {
                    d.extend_from_slice(b", found `");
                    d.extend_from_slice(&t[..t.len().min(40)]);
                    d.extend_from_slice(b"`");
                }
                Err(self.misplaced_or_unknown(d))
            }
        }
    }

    /// The refusal for a token that is not the expected one: unknown when
    /// its key is not a field of the format at all.
    fn misplaced_or_unknown(&mut self, detail: Vec<u8>) -> LineError {
        match self.toks.peek().map(|t| split_field(t)) {
            Some(Ok((k, _))) if !KNOWN.contains(&k) => (Refusal::UnknownField, k.to_vec()),
            Some(Err(e)) => e,
            _ => (Refusal::Field, detail),
        }
    }
}

fn value_err(what: &str, v: &[u8]) -> LineError {
    let mut d = what.as_bytes().to_vec();
    d.extend_from_slice(b": ");
    d.extend_from_slice(&v[..v.len().min(80)]);
    (Refusal::Value, d)
}

/// Decodes a value; `path` selects the path-specific refusal for `%2F`.
fn dec(what: &str, v: &[u8], extra: Option<u8>, path: bool) -> Result<Vec<u8>, LineError> {
    decode_with(v, extra).map_err(|e| match e {
        DecodeError::NotNeeded(b'/') if path => (Refusal::SlashInName, v.to_vec()),
        _ => (Refusal::Encoding, format!("{what}: not the canonical encoding").into_bytes()),
    })
}

/// Parses one entry line (syntax and single-value rules only).
fn parse_entry(line: &[u8], options: Options) -> Result<Entry, LineError> {
    let sep: fn(&u8) -> bool = |b| *b == b' ';
    let mut toks = line.split(sep);
    let ty = toks.next().unwrap_or_default();
    if !matches!(ty, b"f" | b"d" | b"l" | b"p" | b"s" | b"c" | b"b") {
        return Err((Refusal::Field, b"unknown entry type".to_vec()));
    }
    let mut f = Fields { toks: toks.peekable() };
    let path = dec("path", f.req(b"path")?, None, true)?;
    let mode = f.req(b"mode")?;
    let mode = parse_mode(mode).ok_or_else(|| value_err("mode", mode))?;
    let uid = f.req(b"uid")?;
    let uid = parse_u32(uid).ok_or_else(|| value_err("uid", uid))?;
    let gid = f.req(b"gid")?;
    let gid = parse_u32(gid).ok_or_else(|| value_err("gid", gid))?;
    let user = f.opt(b"user")?.map(|v| dec("user", v, None, false)).transpose()?;
    let group = f.opt(b"group")?.map(|v| dec("group", v, None, false)).transpose()?;
    let mtime = f.req(b"mtime")?;
    let mtime = parse_time(mtime).ok_or_else(|| value_err("mtime", mtime))?;
    let kind = match ty {
        b"f" => {
            let size = f.req(b"size")?;
            let size = parse_dec(size).ok_or_else(|| value_err("size", size))?;
            let sha = f.req(b"sha256")?;
            let sha256 = Sha256::from_hex(sha).ok_or_else(|| value_err("sha256", sha))?;
            Kind::File { size, sha256 }
        }
        b"d" => Kind::Dir,
        b"l" => Kind::Symlink { target: dec("target", f.req(b"target")?, None, false)? },
        b"p" => Kind::Fifo,
        b"s" => Kind::Socket,
        b"c" | b"b" => {
            let v = f.req(b"rdev")?;
            let rdev = v
                .iter()
                .position(|b| *b == b':')
                .and_then(|i| Some(Rdev { major: parse_u32(&v[..i])?, minor: parse_u32(&v[i + 1..])? }))
                .ok_or_else(|| value_err("rdev", v))?;
            if ty == b"c" { Kind::CharDev(rdev) } else { Kind::BlockDev(rdev) }
        }
        _ => unreachable!("checked above"),
    };
    let link = if kind == Kind::Dir {
        None
    } else {
        match f.opt(b"link")? {
            Some(v) => Some(parse_dec(v).filter(|n| *n > 0).ok_or_else(|| value_err("link", v))?),
            None => None,
        }
    };
    let mut xattrs = Vec::new();
    if options.xattrs {
        while let Some(v) = f.opt(b"xattr")? {
            let colon = v.iter().position(|b| *b == b':').ok_or_else(|| value_err("xattr", v))?;
            let name = dec("xattr name", &v[..colon], Some(b':'), false)?;
            let value = dec("xattr value", &v[colon + 1..], None, false)?;
            xattrs.push((name, value));
        }
    }
    if f.toks.peek().is_some() {
        return Err(f.misplaced_or_unknown(b"field not allowed here (order, type, or option)".to_vec()));
    }
    Ok(Entry { path, kind, mode, uid, gid, user, group, mtime, link, xattrs })
}
