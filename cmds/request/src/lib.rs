//! Ferry's request grammar: the one strict parser for request files, the
//! typed values it produces, and the system-wide reason codes.
//!
//! A client pushes request files into its queue repository; the node
//! extracts them and hands the bytes to [`parse`]. The client may be
//! compromised (SECURITY.md A.2), so this grammar is deliberately small and
//! strict: **anything that does not match exactly is rejected with one
//! [`Reason`], never repaired or guessed at.** After parsing, every URL,
//! path and name the node uses is rebuilt from the typed fields
//! ([`Request::to_line`], [`GitUrl::to_url_string`], [`SftpUrl::to_url_string`]),
//! never copied from the original text.
//!
//! This documentation *is* the grammar; tests pin every rule below.
//!
//! ```
//! use ferry_request::{Reason, Request, parse};
//!
//! let r = parse(b"git git://172.16.0.60/project.git\n").unwrap();
//! let Request::Git(g) = &r else { unreachable!() };
//! // Hand git the rebuilt URL, never the request's text.
//! assert_eq!(g.url.to_url_string(), "git://172.16.0.60/project.git");
//!
//! let e = parse(b"git ext::sh\n").unwrap_err();
//! assert_eq!(e.reason, Reason::UrlScheme);
//! assert_eq!(e.to_string(), r#"E_URL_SCHEME at byte 4: not a URL with an allowed scheme (local paths, scp-like host:path and remote helpers are refused): "ext::sh""#);
//! ```
//!
//! # Grammar
//!
//! Bytes, ASCII only (ABNF, RFC 5234; `SP` is one space `%x20`, `DIGIT` is
//! `0-9`, `CR` `%x0D`, `LF` `%x0A`; quoted strings are **case-sensitive**
//! here):
//!
//! ```text
//! file      = line                    ; whole file <= 65536 bytes (Limits::max_file_bytes)
//! line      = request [CR] LF         ; <= 4096 bytes including CR LF (Limits::max_line_bytes)
//! request   = git-req / sftp-req / tree-req / dummy-req
//! git-req   = "git" SP git-url
//! sftp-req  = "sftp" SP stamp SP sftp-url SP "sha256=" digest SP "size=" size SP "source=" name
//! tree-req  = "tree" SP stamp SP sftp-url SP sftp-url SP "sha256=" digest SP "size=" size SP "source=" name
//!                                     ; manifest URL, then root URL: same user, host and port
//!                                     ; (the port written in both or in neither)
//! dummy-req = "dummy" SP name
//!
//! stamp     = 8DIGIT "T" 6DIGIT "Z"   ; UTC YYYYMMDDTHHMMSSZ, a real calendar date,
//!                                     ; hour <= 23, min <= 59, sec <= 59 (no leap seconds),
//!                                     ; year 1970..9999
//! digest    = 64( DIGIT / %x61-66 )   ; lower-case hex only
//! size      = "0" / ( %x31-39 *19DIGIT ) ; at most 2^63-1
//!
//! git-url   = ( "git" / "ssh" / "https" ) "://" [ user "@" ] host [ ":" port ] path
//!                                     ; "user@" only with ssh
//! sftp-url  = "sftp://" user "@" host [ ":" port ] path
//! user      = ( %x61-7A / "_" ) *31( %x61-7A / DIGIT / "_" / "-" )
//! host      = ldh-name / ipv4
//! ldh-name  = label *( "." label )    ; <= 253 bytes, no trailing dot
//! label     = 1*63( %x61-7A / DIGIT / "-" ), not starting or ending with "-";
//!                                     ; the LAST label starts with a letter
//! ipv4      = dec-octet 3( "." dec-octet ) ; 0..255, no leading zeros
//! port      = %x31-39 *4DIGIT         ; 1..65535, no leading zeros, no sign
//! path      = 1*32( "/" segment )     ; <= 1024 bytes, hence no trailing "/"
//! segment   = ( ALPHA / DIGIT / "_" ) *99( ALPHA / DIGIT / "." / "_" / "-" )
//!                                     ; never "", ".", "..", never starts with "-" or "."
//! name      = ( ALPHA / DIGIT ) *99( ALPHA / DIGIT / "." / "_" / "-" )
//! ```
//!
//! The sftp and tree lines' `sha256=`, `size=` and `source=` fields are
//! *key=value* fields (DESIGN.md: positional arguments first, then
//! `key=value` fields). All three are required, each exactly once, in
//! exactly that order; no other key exists, and `git` and `dummy` take none.
//! In a tree line they describe the manifest file (see [`TreeRequest`]).
//!
//! The last DNS label must start with a letter because resolvers read
//! numeric-looking names (`2130706433`, `127.1`, `0x7f.1`) as IPv4 addresses
//! in other notations; every real top-level domain starts with a letter.
//! IPv6 literals, upper-case hosts, `%`-escapes, query strings and
//! fragments are not part of the grammar.
//!
//! # Line ending policy (CR)
//!
//! The line must end in LF. A CR is accepted **only** as part of the
//! terminating CRLF and is stripped there; a CR anywhere else, including a
//! CR at the very end with no LF after it, is [`Reason::ReqCtrlChar`]. So no
//! parsed value can ever contain a CR (SECURITY.md RP-02, CVE-2025-48384).
//!
//! # Rejection precedence
//!
//! Checks run in this order and the first failure decides the reason, so a
//! given input always gets the same code:
//!
//! 1. File longer than `max_file_bytes` → [`Reason::ReqTooLong`], without
//!    looking at the content (a caller may have read only `max + 1` bytes).
//! 2. Leading UTF-8 byte-order mark → [`Reason::ReqEncoding`].
//! 3. Invalid UTF-8 anywhere → [`Reason::ReqEncoding`].
//! 4. A C0 control byte or DEL other than an LF or a CR directly followed by
//!    LF → [`Reason::ReqCtrlChar`] at that byte. NUL, TAB, ESC and a lone CR
//!    all land here (TAB is a control character, not a separator).
//! 5. A non-ASCII character (this includes C1 controls, bidi controls and
//!    zero-width characters) → [`Reason::ReqCharset`].
//! 6. Any byte after the first LF → [`Reason::ReqTooMany`] (one request
//!    per file).
//! 7. Line longer than `max_line_bytes` → [`Reason::ReqTooLong`].
//! 8. No final LF → [`Reason::ReqSyntax`].
//! 9. Empty request, leading or trailing space, two spaces in a row →
//!    [`Reason::ReqSyntax`].
//! 10. A verb other than exactly `git`, `sftp`, `tree` or `dummy` (so `GIT` too) →
//!     [`Reason::ReqModule`].
//! 11. Field structure: too few positional fields, or a field without `=`
//!     where only key=value fields may follow → [`Reason::ReqSyntax`];
//!     a key that is unknown, repeated, out of order or missing →
//!     [`Reason::ReqField`].
//! 12. Field values, left to right; the first bad field decides:
//!     * stamp → [`Reason::ReqTimestamp`];
//!     * a tree line's manifest URL, then its root URL, each as below; then
//!       a root URL whose user, host or port differs from the manifest
//!       URL's → [`Reason::ReqTreeRoot`];
//!     * URL, in this order: URL starting with `-` → [`Reason::UrlDash`];
//!       scheme not allowed (remote helpers `ext::`/`fd::`/…, `file://`,
//!       `http://`, `git+ssh://`, scp-like `host:path`, local paths, upper
//!       case) → [`Reason::UrlScheme`]; user, host or any path segment
//!       starting with `-` → [`Reason::UrlDash`]; `%`, `?`, `#`, `\`,
//!       space, control or non-ASCII → [`Reason::UrlCharset`]; a user in a
//!       `git://`/`https://` URL, or `:` in the user part →
//!       [`Reason::UrlUserinfo`]; bad or (for sftp) missing user →
//!       [`Reason::UrlUser`]; bad host → [`Reason::UrlHost`]; bad port →
//!       [`Reason::UrlPort`]; missing path, empty/`.`/`..` segments,
//!       trailing `/`, more than 32 segments or 1024 bytes →
//!       [`Reason::ReqPath`]; any other segment outside the allow-list
//!       (hidden names like `.git`, over 100 bytes, other characters) →
//!       [`Reason::ReqName`];
//!     * `sha256=` → [`Reason::ReqDigest`]; `size=` → [`Reason::ReqSize`];
//!       `source=` and the dummy word → [`Reason::ReqName`]; a `source=`
//!       the node keeps for itself → [`Reason::ReqNameReserved`].
//!
//! Offsets in a [`Rejection`] are byte offsets into the file. The detail
//! text is escaped with [`ferry_text`] and its excerpt capped at 200
//! characters, so a rejection can be logged or mailed as it is.
//!
//! # Source names that become storage names
//!
//! A `source=` name becomes the directory `data/<client>/<source>/` on the
//! node. Beyond the `name` rule above:
//!
//! * **Reserved**: `git`, `trees`, `store`, `tmp`, `incomplete` and
//!   `lost+found` ([`RESERVED_SOURCE_NAMES`]), in any letter case, are the
//!   node's own directories at that level (mirrors, snapshot trees and
//!   their content store, staging, the file system's own) and are rejected
//!   here with [`Reason::ReqNameReserved`].
//! * **Letter case**: a source whose name differs only in ASCII case from a
//!   source the client already stores (`Trac` beside `trac`) would share its
//!   directory on a case-insensitive file system or object store. The node
//!   rejects it with [`Reason::ReqNameCase`] ([`same_ignoring_case`]).
//!
//! What this crate does *not* decide: whether the host, user, port and path
//! are the ones enrolled for the client ([`Reason::ReqHostNotOwned`],
//! [`Reason::ReqPath`], [`Reason::UrlPort`] after comparison with the
//! enrolment record), timestamp ranges, quotas and duplicates. Those need
//! the enrolment record and the node's state; this crate only guarantees
//! that the values compared are in one canonical spelling, so byte
//! equality and [`RemotePath::is_within`] are the whole comparison.

#![forbid(unsafe_code)]

mod names;
mod reason;
mod tree;
mod url;
mod value;

use std::fmt;

pub use names::{RESERVED_SOURCE_NAMES, is_reserved_source, same_ignoring_case};
pub use reason::{Reason, Rejection};
pub use tree::TreeRequest;
pub use url::{GitScheme, GitUrl, SftpUrl};
pub use value::{Digest, Host, MAX_UNIX, Name, RemotePath, Stamp, User, parse_port};

/// Size limits for a request file (SECURITY.md C12 defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted file, in bytes. A reader should read at most one
    /// byte more than this, so an oversized file costs bounded memory.
    pub max_file_bytes: usize,
    /// Longest accepted line, in bytes, including the terminating CR LF.
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_file_bytes: 65_536, max_line_bytes: 4_096 }
    }
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    /// Mirror or fetch a git repository from the client.
    Git(GitRequest),
    /// Download one prepared file from the client's export directory.
    Sftp(SftpRequest),
    /// Pull a snapshot tree: its manifest from the export directory, then
    /// the contents the node lacks from below the tree's root.
    Tree(TreeRequest),
    /// Do nothing but record success; exercises the whole path in tests.
    Dummy(DummyRequest),
}

/// `git <url>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GitRequest {
    /// The repository to mirror.
    pub url: GitUrl,
}

/// `sftp <stamp> <url> sha256=<digest> size=<size> source=<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SftpRequest {
    /// When the client prepared the file (client's claim; metadata only).
    pub stamp: Stamp,
    /// Where the file is.
    pub url: SftpUrl,
    /// SHA-256 the downloaded bytes must have.
    pub sha256: Digest,
    /// Size the downloaded file must have, in bytes (at most 2^63-1).
    pub size: u64,
    /// The client's source the file belongs to (becomes a storage name).
    pub source: Name,
}

/// `dummy <word>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DummyRequest {
    /// An arbitrary name, echoed in the log.
    pub word: Name,
}

impl Request {
    /// The module (verb) that handles this request.
    pub fn module(&self) -> &'static str {
        match self {
            Request::Git(_) => "git",
            Request::Sftp(_) => "sftp",
            Request::Tree(_) => "tree",
            Request::Dummy(_) => "dummy",
        }
    }

    /// The canonical request line, LF-terminated, rebuilt from the typed
    /// fields. `parse(r.to_line().as_bytes()) == Ok(r)` for every request
    /// `r` that [`parse`] produced.
    pub fn to_line(&self) -> String {
        let mut line = self.to_string();
        line.push('\n');
        line
    }
}

impl fmt::Display for Request {
    /// The canonical line without its LF; safe to log as it is, since
    /// every field is printable ASCII without spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Git(r) => write!(f, "git {}", r.url),
            Request::Sftp(r) => {
                write!(f, "sftp {} {} sha256={} size={} source={}", r.stamp, r.url, r.sha256, r.size, r.source)
            }
            Request::Tree(r) => write!(
                f,
                "tree {} {} {} sha256={} size={} source={}",
                r.stamp, r.manifest, r.root, r.sha256, r.size, r.source
            ),
            Request::Dummy(r) => write!(f, "dummy {}", r.word),
        }
    }
}

/// Parses a request file with the default [`Limits`].
pub fn parse(bytes: &[u8]) -> Result<Request, Rejection> {
    parse_with(bytes, &Limits::default())
}

/// Parses a request file; see the crate documentation for the grammar and
/// the order in which problems are reported.
pub fn parse_with(bytes: &[u8], limits: &Limits) -> Result<Request, Rejection> {
    let content = check_file(bytes, limits)?;
    parse_request(content)
}

/// The excerpt shown for a problem at `offset`: from the start of the input
/// when that is close enough to show it, otherwise from a little before.
fn excerpt(bytes: &[u8], offset: usize) -> &[u8] {
    let start = if offset < 120 { 0 } else { offset - 40 };
    bytes.get(start..).unwrap_or_default()
}

fn file_err(reason: Reason, bytes: &[u8], offset: usize, msg: &str) -> Rejection {
    Rejection::new(reason, Some(offset), msg, excerpt(bytes, offset))
}

/// Steps 1–8 of the precedence: everything about the file as bytes. Returns
/// the request text without its line ending.
fn check_file<'a>(bytes: &'a [u8], limits: &Limits) -> Result<&'a str, Rejection> {
    if bytes.len() > limits.max_file_bytes {
        // The excerpt is the file's start: that is what identifies it, and
        // escaping stops after 200 characters however large the input is.
        return Err(Rejection::new(
            Reason::ReqTooLong,
            Some(limits.max_file_bytes),
            "request file longer than the limit",
            bytes,
        ));
    }
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(file_err(Reason::ReqEncoding, bytes, 0, "byte-order mark"));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| file_err(Reason::ReqEncoding, bytes, e.valid_up_to(), "invalid UTF-8"))?;
    for (i, &b) in bytes.iter().enumerate() {
        if !(b < 0x20 || b == 0x7f) || b == b'\n' {
            continue;
        }
        if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            continue;
        }
        let msg = match b {
            b'\r' => "CR not directly before the final LF",
            b'\t' => "TAB (fields are separated by one space)",
            0 => "NUL byte",
            _ => "control character",
        };
        return Err(file_err(Reason::ReqCtrlChar, bytes, i, msg));
    }
    if let Some(i) = bytes.iter().position(|b| !b.is_ascii()) {
        return Err(file_err(Reason::ReqCharset, bytes, i, "non-ASCII character"));
    }
    let (line, terminated) = match text.find('\n') {
        Some(lf) => {
            if lf + 1 < text.len() {
                return Err(file_err(Reason::ReqTooMany, bytes, lf + 1, "more than one line in a request file"));
            }
            (text.get(..lf).unwrap_or_default(), true)
        }
        None => (text, false),
    };
    // Here the line is everything: the file holds at most one LF, at its end.
    if bytes.len() > limits.max_line_bytes {
        return Err(file_err(Reason::ReqTooLong, bytes, limits.max_line_bytes, "request line longer than the limit"));
    }
    if !terminated {
        return Err(file_err(Reason::ReqSyntax, bytes, bytes.len(), "missing final LF"));
    }
    // Step 4 guaranteed any CR sits directly before the LF.
    Ok(line.strip_suffix('\r').unwrap_or(line))
}

/// What each verb takes after its name: positional fields, then keys.
struct Shape {
    positional: usize,
    keys: &'static [&'static str],
}

fn shape(verb: &str) -> Option<Shape> {
    match verb {
        "git" => Some(Shape { positional: 1, keys: &[] }),
        "sftp" => Some(Shape { positional: 2, keys: &["sha256", "size", "source"] }),
        "tree" => Some(Shape { positional: 3, keys: &["sha256", "size", "source"] }),
        "dummy" => Some(Shape { positional: 1, keys: &[] }),
        _ => None,
    }
}

/// A field of the request line and its byte offset.
#[derive(Clone, Copy)]
pub(crate) struct Field<'a> {
    pub(crate) at: usize,
    pub(crate) text: &'a str,
}

impl<'a> Field<'a> {
    /// The value of a key=value field (after the first `=`) and its offset.
    pub(crate) fn value(&self) -> Field<'a> {
        match self.text.find('=') {
            Some(i) => Field { at: self.at + i + 1, text: self.text.get(i + 1..).unwrap_or_default() },
            None => *self,
        }
    }

    fn key(&self) -> &'a str {
        self.text.split('=').next().unwrap_or_default()
    }

    pub(crate) fn err(&self, reason: Reason, msg: &str) -> Rejection {
        Rejection::new(reason, Some(self.at), msg, self.text.as_bytes())
    }
}

/// Steps 9–12 of the precedence, on the request text (ASCII, no controls,
/// no line ending). Offsets equal file offsets because the line starts the
/// file.
fn parse_request(line: &str) -> Result<Request, Rejection> {
    let syntax = |at: usize, msg: &str| Rejection::new(Reason::ReqSyntax, Some(at), msg, excerpt(line.as_bytes(), at));
    if line.is_empty() {
        return Err(syntax(0, "empty request"));
    }
    if line.starts_with(' ') {
        return Err(syntax(0, "leading space"));
    }
    if line.ends_with(' ') {
        return Err(syntax(line.len() - 1, "trailing space"));
    }
    if let Some(i) = line.find("  ") {
        return Err(syntax(i, "two spaces between fields"));
    }
    let mut fields = Vec::new();
    let mut at = 0usize;
    for text in line.split(' ') {
        fields.push(Field { at, text });
        at += text.len() + 1;
    }
    let Some((verb, args)) = fields.split_first() else {
        return Err(syntax(0, "empty request"));
    };
    let Some(shape) = shape(verb.text) else {
        return Err(verb.err(Reason::ReqModule, "unknown module (expected git, sftp, tree or dummy, in lower case)"));
    };
    check_structure(line, args, &shape)?;
    let (pos, kv) = args.split_at(shape.positional.min(args.len()));
    match (verb.text, pos, kv) {
        ("git", [url], []) => {
            let url = GitUrl::parse(url.text).map_err(|e| e.shifted(url.at))?;
            Ok(Request::Git(GitRequest { url }))
        }
        ("sftp", [stamp, url], [sha, size, source]) => {
            let stamp = Stamp::parse(stamp.text).map_err(|e| e.shifted(stamp.at))?;
            let url = SftpUrl::parse(url.text).map_err(|e| e.shifted(url.at))?;
            let v = sha.value();
            let sha256 = Digest::parse(v.text).map_err(|e| e.shifted(v.at))?;
            let size = parse_size(size.value())?;
            let source = parse_source(source.value())?;
            Ok(Request::Sftp(SftpRequest { stamp, url, sha256, size, source }))
        }
        ("tree", [stamp, manifest, root], [sha, size, source]) => {
            tree::parse_fields([*stamp, *manifest, *root], [*sha, *size, *source]).map(Request::Tree)
        }
        ("dummy", [word], []) => {
            let word = Name::parse(word.text).map_err(|e| e.shifted(word.at))?;
            Ok(Request::Dummy(DummyRequest { word }))
        }
        // `check_structure` admits exactly the shapes above; this arm keeps
        // the function total without a panic.
        _ => Err(syntax(0, "wrong number of fields")),
    }
}

/// Step 11: field count and key=value structure, before any value is read.
fn check_structure(line: &str, args: &[Field<'_>], shape: &Shape) -> Result<(), Rejection> {
    if args.len() < shape.positional {
        return Err(Rejection::new(
            Reason::ReqSyntax,
            Some(line.len()),
            "too few fields",
            excerpt(line.as_bytes(), line.len()),
        ));
    }
    let kv = args.get(shape.positional..).unwrap_or_default();
    if let Some(f) = kv.iter().find(|f| !f.text.contains('=')) {
        return Err(f.err(Reason::ReqSyntax, "too many fields (only key=value fields may follow)"));
    }
    for (j, f) in kv.iter().enumerate() {
        let key = f.key();
        if shape.keys.get(j) == Some(&key) {
            continue;
        }
        let msg = if !shape.keys.contains(&key) {
            "unknown key"
        } else if kv.get(..j).unwrap_or_default().iter().any(|g| g.key() == key) {
            "repeated key"
        } else {
            "key out of order or an earlier key missing"
        };
        return Err(f.err(Reason::ReqField, msg));
    }
    if let Some(missing) = shape.keys.get(kv.len()) {
        return Err(Rejection::new(
            Reason::ReqField,
            Some(line.len()),
            &format!("missing key {missing}="),
            excerpt(line.as_bytes(), line.len()),
        ));
    }
    Ok(())
}

/// A `source=` value: a [`Name`] that is not one the node keeps for its
/// own directories.
pub(crate) fn parse_source(v: Field<'_>) -> Result<Name, Rejection> {
    let source = Name::parse(v.text).map_err(|e| e.shifted(v.at))?;
    if is_reserved_source(source.as_str()) {
        return Err(Rejection::new(
            Reason::ReqNameReserved,
            Some(v.at),
            "the node keeps this name for its own directories (git, trees, store, tmp, incomplete, lost+found, in any letter case)",
            v.text.as_bytes(),
        ));
    }
    Ok(source)
}

/// `size = "0" / (%x31-39 *19DIGIT)`, at most 2^63-1 so it fits every
/// signed file-size API too.
pub(crate) fn parse_size(f: Field<'_>) -> Result<u64, Rejection> {
    let s = f.text;
    let bad = |msg: &str| f.err(Reason::ReqSize, msg);
    if s.is_empty() {
        return Err(bad("empty size"));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("size is not a plain decimal number"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(bad("leading zero in size"));
    }
    if s.len() > 19 {
        return Err(bad("size above 2^63-1"));
    }
    match s.parse::<u64>() {
        Ok(n) if n <= i64::MAX as u64 => Ok(n),
        _ => Err(bad("size above 2^63-1")),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tree_tests;
