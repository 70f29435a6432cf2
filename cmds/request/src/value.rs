//! Validated values: each type can only hold text that passed its grammar
//! rule, so code that receives a `Host` or a `Name` never re-checks it and
//! can put it in a path, a URL or an argument vector as it is.
//!
//! Every constructor rejects; none repairs (no case folding, no trimming, no
//! percent-decoding, no IDNA). Offsets in the returned [`Rejection`]s are
//! relative to the string given to the constructor.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::reason::{Reason, Rejection};

/// The largest number of seconds since the epoch a [`Stamp`] can hold:
/// 9999-12-31T23:59:59Z.
pub const MAX_UNIX: i64 = 253_402_300_799;

/// Longest host name, as in DNS.
const HOST_MAX: usize = 253;
/// Longest DNS label.
const LABEL_MAX: usize = 63;
/// Longest user name; 32 is the usual Linux limit.
const USER_MAX: usize = 32;
/// Longest remote path and deepest nesting; generous for real export dirs,
/// small enough that nothing downstream needs to care.
const PATH_MAX: usize = 1024;
const PATH_SEGMENTS_MAX: usize = 32;
/// Longest name or path segment.
const SEGMENT_MAX: usize = 100;

/// Implements the shared conversions for a validated string type.
macro_rules! text_value {
    ($ty:ident) => {
        impl $ty {
            /// The validated text, exactly as it was accepted.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = Rejection;
            fn from_str(s: &str) -> Result<Self, Rejection> {
                $ty::parse(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = Rejection;
            fn try_from(s: &str) -> Result<Self, Rejection> {
                $ty::parse(s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            /// Safe to print anywhere: the grammar admits printable ASCII only.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn rej(reason: Reason, offset: usize, message: &str, excerpt: &str) -> Rejection {
    Rejection::new(reason, Some(offset), message, excerpt.as_bytes())
}

/// Index of the first byte of `s` that fails `ok`, if any.
fn first_bad(s: &str, ok: impl Fn(u8) -> bool) -> Option<usize> {
    s.bytes().position(|b| !ok(b))
}

/// A host to connect to: a lower-case LDH DNS name, or a dotted-quad IPv4
/// address in canonical form.
///
/// * DNS names: labels of 1–63 bytes of `[a-z0-9-]`, not starting or ending
///   with `-`, at most 253 bytes, no trailing dot. Upper case is rejected,
///   not folded, so one host has one spelling and byte equality with the
///   enrolled host is the whole ownership check (RP-07). Punycode (`xn--`)
///   is plain LDH and passes here; it will not equal an enrolled name unless
///   the administrator enrolled exactly that.
/// * The last label must start with a letter. Resolvers read names such as
///   `2130706433`, `127.1` or `0x7f.1` as IPv4 addresses in other notations,
///   so a numeric-looking name could reach an address nobody reviewed;
///   every real top-level domain starts with a letter.
/// * IPv4: exactly four decimal parts 0–255 without leading zeros. IPv6
///   literals are not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host(String);

text_value!(Host);

impl Host {
    /// Validates a host; failures are [`Reason::UrlHost`], or
    /// [`Reason::UrlDash`] for a leading `-`.
    pub fn parse(s: &str) -> Result<Host, Rejection> {
        let err = |offset: usize, msg: &str| rej(Reason::UrlHost, offset, msg, s);
        if s.is_empty() {
            return Err(err(0, "empty host"));
        }
        if s.starts_with('-') {
            return Err(rej(Reason::UrlDash, 0, "host starts with '-'", s));
        }
        if s.len() > HOST_MAX {
            return Err(err(HOST_MAX, "host longer than 253 bytes"));
        }
        if let Some(i) = first_bad(s, |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
            let msg = if s.as_bytes().get(i).is_some_and(u8::is_ascii_uppercase) {
                "upper-case letter in host (hosts are written in lower case)"
            } else {
                "character not allowed in a host name"
            };
            return Err(err(i, msg));
        }
        if s.ends_with('.') {
            return Err(err(s.len() - 1, "trailing dot in host"));
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return if parse_ipv4(s).is_some() {
                Ok(Host(s.to_owned()))
            } else {
                Err(err(0, "not a dotted-quad IPv4 address (four parts 0-255, no leading zeros)"))
            };
        }
        let mut start = 0usize;
        let mut last_start = 0usize;
        for label in s.split('.') {
            if label.is_empty() {
                return Err(err(start, "empty label in host"));
            }
            if label.len() > LABEL_MAX {
                return Err(err(start, "host label longer than 63 bytes"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err(start, "host label starts or ends with '-'"));
            }
            last_start = start;
            start += label.len() + 1;
        }
        if !s.as_bytes().get(last_start).is_some_and(u8::is_ascii_lowercase) {
            return Err(err(
                last_start,
                "last label of a host name must start with a letter (numeric names are read as addresses)",
            ));
        }
        Ok(Host(s.to_owned()))
    }

    /// The address, if this host is an IPv4 literal.
    pub fn as_ipv4(&self) -> Option<Ipv4Addr> {
        parse_ipv4(&self.0)
    }
}

/// Strict dotted-quad parsing; `std`'s parser is strict too, but spelling the
/// rule out keeps it independent of library changes.
fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || (p.len() > 1 && p.starts_with('0')) {
            return None;
        }
        if !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = p.parse::<u8>().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// A remote login name: `[a-z_][a-z0-9_-]{0,31}`.
///
/// The first character can never be `-`, so a user can never become an ssh
/// option (GU-05); `:` and `@` are impossible, so a user can never carry a
/// password or a second host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct User(String);

text_value!(User);

impl User {
    /// Validates a user; failures are [`Reason::UrlUser`], or
    /// [`Reason::UrlDash`] for a leading `-`.
    pub fn parse(s: &str) -> Result<User, Rejection> {
        let err = |offset: usize, msg: &str| rej(Reason::UrlUser, offset, msg, s);
        if s.is_empty() {
            return Err(err(0, "empty user"));
        }
        if s.starts_with('-') {
            return Err(rej(Reason::UrlDash, 0, "user starts with '-'", s));
        }
        if s.len() > USER_MAX {
            return Err(err(USER_MAX, "user longer than 32 bytes"));
        }
        let first_ok = |b: u8| b.is_ascii_lowercase() || b == b'_';
        if !s.bytes().next().is_some_and(first_ok) {
            return Err(err(0, "user must start with [a-z_]"));
        }
        if let Some(i) = first_bad(s, |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
            return Err(err(i, "character not allowed in a user name"));
        }
        Ok(User(s.to_owned()))
    }
}

/// Parses a TCP port: decimal `1..=65535`, no sign, no leading zeros, no
/// whitespace. Failures are [`Reason::UrlPort`].
///
/// Only one spelling per port is accepted so that comparing with the
/// enrolled port is unambiguous (GU-11).
pub fn parse_port(s: &str) -> Result<u16, Rejection> {
    let err = |offset: usize, msg: &str| rej(Reason::UrlPort, offset, msg, s);
    if s.is_empty() {
        return Err(err(0, "empty port"));
    }
    if let Some(i) = first_bad(s, |b| b.is_ascii_digit()) {
        return Err(err(i, "port is not a plain decimal number"));
    }
    if s.starts_with('0') {
        return Err(err(0, "port 0 or a leading zero"));
    }
    if s.len() > 5 {
        return Err(err(0, "port above 65535"));
    }
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => u16::try_from(p).map_err(|_| err(0, "port above 65535")),
        _ => Err(err(0, "port above 65535")),
    }
}

/// An absolute path on a client, in canonical form: `1*("/" segment)`,
/// at most 1024 bytes and 32 segments, no trailing `/`.
///
/// Each segment is `[A-Za-z0-9_][A-Za-z0-9._-]{0,99}`, so a path never
/// contains empty, `.` or `..` segments, hidden names, `%`-escapes or
/// backslashes, and one path has exactly one spelling. That makes
/// [`RemotePath::is_within`] a plain comparison of whole segments, with no
/// normalisation that a hostile client could play against (RP-09).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemotePath(String);

text_value!(RemotePath);

impl RemotePath {
    /// Validates a path. Structural problems (no leading `/`, empty, `.` or
    /// `..` segments, trailing `/`, too long or too deep) are
    /// [`Reason::ReqPath`]; a segment starting with `-` is
    /// [`Reason::UrlDash`]; any other segment outside the allow-list is
    /// [`Reason::ReqName`].
    pub fn parse(s: &str) -> Result<RemotePath, Rejection> {
        let limits = Limits { bytes: PATH_MAX, segments: PATH_SEGMENTS_MAX, why: "" };
        RemotePath::parse_within(s, &limits)
    }

    /// Validates a directory that request paths must lie *below*: an
    /// enrolled export dir or git root. It is a [`RemotePath`] with room
    /// for at least one more segment (`/x`), so at most 1022 bytes and 31
    /// segments: a root that passes here is a root some request can name a
    /// path under, and one that fails could never be used. Failures are
    /// those of [`RemotePath::parse`], naming the root's own limits.
    pub fn parse_root(s: &str) -> Result<RemotePath, Rejection> {
        let limits = Limits {
            bytes: PATH_MAX - 2,
            segments: PATH_SEGMENTS_MAX - 1,
            why: " (leaving room below it for a path of at most 1024 bytes and 32 segments)",
        };
        RemotePath::parse_within(s, &limits)
    }

    fn parse_within(s: &str, limits: &Limits) -> Result<RemotePath, Rejection> {
        let err = |reason: Reason, offset: usize, msg: &str| rej(reason, offset, msg, s);
        let Some(body) = s.strip_prefix('/') else {
            return Err(err(Reason::ReqPath, 0, "path must start with '/'"));
        };
        if s.len() > limits.bytes {
            let msg = format!("path longer than {} bytes{}", limits.bytes, limits.why);
            return Err(err(Reason::ReqPath, limits.bytes, &msg));
        }
        if s.ends_with('/') {
            return Err(err(Reason::ReqPath, s.len() - 1, "trailing '/' in path"));
        }
        let mut start = 1usize;
        for (n, seg) in body.split('/').enumerate() {
            if n >= limits.segments {
                let msg = format!("path deeper than {} segments{}", limits.segments, limits.why);
                return Err(err(Reason::ReqPath, start, &msg));
            }
            if seg.is_empty() {
                return Err(err(Reason::ReqPath, start, "empty path segment ('//')"));
            }
            if seg == "." || seg == ".." {
                return Err(err(Reason::ReqPath, start, "'.' or '..' path segment"));
            }
            if seg.starts_with('-') {
                return Err(err(Reason::UrlDash, start, "path segment starts with '-'"));
            }
            if let Some(i) = segment_error(seg) {
                return Err(err(Reason::ReqName, start + i, "path segment outside [A-Za-z0-9_][A-Za-z0-9._-]{0,99}"));
            }
            start += seg.len() + 1;
        }
        Ok(RemotePath(s.to_owned()))
    }

    /// The segments, outermost first (never empty, never `.` or `..`).
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &str> + '_ {
        self.0.get(1..).unwrap_or_default().split('/')
    }

    /// How many segments the path has (at least one).
    pub fn depth(&self) -> usize {
        self.segments().count()
    }

    /// The last segment: the file or repository name on the client.
    pub fn file_name(&self) -> &str {
        self.segments().next_back().unwrap_or_default()
    }

    /// Whether this path is `prefix` or lies beneath it, comparing whole
    /// segments: `/srv/export/a` is within `/srv/export` but
    /// `/srv/exported` is not. Use [`RemotePath::relative_to`] and check for
    /// a non-empty result when the prefix itself must not match.
    pub fn is_within(&self, prefix: &RemotePath) -> bool {
        self.relative_to(prefix).is_some()
    }

    /// The segments below `prefix`, or `None` if this path is not within
    /// it; `Some(vec![])` when the paths are equal.
    pub fn relative_to(&self, prefix: &RemotePath) -> Option<Vec<&str>> {
        let mut mine = self.segments();
        for p in prefix.segments() {
            if mine.next()? != p {
                return None;
            }
        }
        Some(mine.collect())
    }
}

/// How long and deep a [`RemotePath`] may be, and why, for messages.
struct Limits {
    bytes: usize,
    segments: usize,
    why: &'static str,
}

/// Index of the first byte breaking the segment allow-list, if any.
fn segment_error(seg: &str) -> Option<usize> {
    let b = seg.as_bytes();
    let first = *b.first()?;
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return Some(0);
    }
    if b.len() > SEGMENT_MAX {
        return Some(SEGMENT_MAX);
    }
    first_bad(seg, |c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A name that may become a storage path component, an id or a log field
/// without escaping: `[A-Za-z0-9][A-Za-z0-9._-]{0,99}` (RP-09).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

text_value!(Name);

impl Name {
    /// Validates a name; failures are [`Reason::ReqName`].
    pub fn parse(s: &str) -> Result<Name, Rejection> {
        if ferry_text::is_safe_token(s) {
            return Ok(Name(s.to_owned()));
        }
        let b = s.as_bytes();
        let offset = if b.first().is_some_and(u8::is_ascii_alphanumeric) {
            if b.len() > SEGMENT_MAX {
                SEGMENT_MAX
            } else {
                first_bad(s, |c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')).unwrap_or(0)
            }
        } else {
            0
        };
        Err(rej(Reason::ReqName, offset, "name outside [A-Za-z0-9][A-Za-z0-9._-]{0,99}", s))
    }
}

/// A SHA-256 digest, written as exactly 64 lower-case hex digits.
///
/// Upper case is rejected rather than folded (RP-11: one spelling, no parse
/// quirk to hide behind); digests computed by the node are built with
/// [`Digest::from_bytes`] and compared as bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    bytes: [u8; 32],
    hex: String,
}

impl Digest {
    /// Validates a digest; failures are [`Reason::ReqDigest`].
    pub fn parse(s: &str) -> Result<Digest, Rejection> {
        let err = |offset: usize, msg: &str| rej(Reason::ReqDigest, offset, msg, s);
        if s.len() != 64 {
            return Err(err(0, "digest is not exactly 64 hex digits"));
        }
        let mut bytes = [0u8; 32];
        let raw = s.as_bytes();
        for (i, out) in bytes.iter_mut().enumerate() {
            let hi = raw.get(2 * i).copied().unwrap_or(b'?');
            let lo = raw.get(2 * i + 1).copied().unwrap_or(b'?');
            let nib = |c: u8, at: usize| match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Err(err(at, "upper-case hex digit (digests are lower case)")),
                _ => Err(err(at, "not a hex digit")),
            };
            *out = (nib(hi, 2 * i)? << 4) | nib(lo, 2 * i + 1)?;
        }
        Ok(Digest { bytes, hex: s.to_owned() })
    }

    /// A digest the node computed itself.
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest { bytes, hex: to_hex(&bytes) }
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The 64 lower-case hex digits.
    pub fn as_str(&self) -> &str {
        &self.hex
    }

    /// The 64 lower-case hex digits, owned.
    pub fn to_hex(&self) -> String {
        self.hex.clone()
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

impl FromStr for Digest {
    type Err = Rejection;
    fn from_str(s: &str) -> Result<Self, Rejection> {
        Digest::parse(s)
    }
}

impl TryFrom<&str> for Digest {
    type Error = Rejection;
    fn try_from(s: &str) -> Result<Self, Rejection> {
        Digest::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex)
    }
}

/// A UTC time written `YYYYMMDDTHHMMSSZ`, e.g. `20261122T010203Z`.
///
/// Exactly one spelling per second: fixed width, `T` and `Z` upper case, a
/// real calendar date, hours 00–23, minutes and seconds 00–59 (no leap
/// seconds), years 1970–9999. Because the form is fixed-width, text order
/// and time order agree. A request's stamp is metadata the client chose;
/// the node still decides storage names and retention by its own clock
/// (RP-10), and range checks against enrolment time belong to the caller.
///
/// Conversions to and from Unix seconds are done by hand
/// (days-from-civil), so no date crate is involved in parsing hostile input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stamp {
    secs: i64,
    text: String,
}

impl Stamp {
    /// Validates a stamp; failures are [`Reason::ReqTimestamp`].
    pub fn parse(s: &str) -> Result<Stamp, Rejection> {
        let err = |offset: usize, msg: &str| rej(Reason::ReqTimestamp, offset, msg, s);
        let b = s.as_bytes();
        if b.len() != 16 {
            return Err(err(0, "timestamp is not of the form YYYYMMDDTHHMMSSZ"));
        }
        for (i, &c) in b.iter().enumerate() {
            let ok = match i {
                8 => c == b'T',
                15 => c == b'Z',
                _ => c.is_ascii_digit(),
            };
            if !ok {
                return Err(err(i, "timestamp is not of the form YYYYMMDDTHHMMSSZ"));
            }
        }
        let num = |from: usize, to: usize| -> u32 {
            b.get(from..to).unwrap_or_default().iter().fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0'))
        };
        let (year, month, day) = (num(0, 4), num(4, 6), num(6, 8));
        let (hour, minute, second) = (num(9, 11), num(11, 13), num(13, 15));
        if !(1970..=9999).contains(&year) {
            return Err(err(0, "year outside 1970..9999"));
        }
        if !(1..=12).contains(&month) {
            return Err(err(4, "month outside 01..12"));
        }
        if day < 1 || day > days_in_month(year, month) {
            return Err(err(6, "day does not exist in that month"));
        }
        if hour > 23 {
            return Err(err(9, "hour outside 00..23"));
        }
        if minute > 59 {
            return Err(err(11, "minute outside 00..59"));
        }
        if second > 59 {
            return Err(err(13, "second outside 00..59 (no leap seconds)"));
        }
        let secs = days_from_civil(i64::from(year), month, day) * 86_400
            + i64::from(hour) * 3_600
            + i64::from(minute) * 60
            + i64::from(second);
        Ok(Stamp { secs, text: s.to_owned() })
    }

    /// Seconds since 1970-01-01T00:00:00Z.
    pub fn to_unix(&self) -> i64 {
        self.secs
    }

    /// The stamp for `secs` seconds since the epoch, clamped to the range a
    /// stamp can hold (1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z), so
    /// it never fails and never panics. Use [`Stamp::try_from_unix`] to
    /// detect out-of-range input instead.
    pub fn from_unix(secs: i64) -> Stamp {
        let secs = secs.clamp(0, MAX_UNIX);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let text = format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3_600, rem % 3_600 / 60, rem % 60);
        Stamp { secs, text }
    }

    /// The stamp for `secs`, or `None` outside 0..=[`MAX_UNIX`].
    pub fn try_from_unix(secs: i64) -> Option<Stamp> {
        (0..=MAX_UNIX).contains(&secs).then(|| Stamp::from_unix(secs))
    }

    /// The canonical text, `YYYYMMDDTHHMMSSZ`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Stamp {
    type Err = Rejection;
    fn from_str(s: &str) -> Result<Self, Rejection> {
        Stamp::parse(s)
    }
}

impl TryFrom<&str> for Stamp {
    type Error = Rejection;
    fn try_from(s: &str) -> Result<Self, Rejection> {
        Stamp::parse(s)
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), counting years from March so February's length only
/// matters at the end of the cycle.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: `(year, month, day)` of a day number.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both values are small and positive by construction.
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason<T: fmt::Debug>(r: Result<T, Rejection>) -> Reason {
        match r {
            Ok(v) => panic!("accepted {v:?}"),
            Err(e) => e.reason,
        }
    }

    #[test]
    fn hosts() {
        for ok in [
            "client.example",
            "a",
            "localhost",
            "xn--clent-5ua.example",
            "a-b.c-d.example",
            "172.16.0.60",
            "0.0.0.0",
            "255.255.255.255",
            "127.0.0.2",
            "1a.example",
        ] {
            assert_eq!(Host::parse(ok).map(|h| h.to_string()), Ok(ok.to_owned()));
        }
        assert_eq!(Host::parse("172.16.0.60").unwrap().as_ipv4(), Some(Ipv4Addr::new(172, 16, 0, 60)));
        assert_eq!(Host::parse("client.example").unwrap().as_ipv4(), None);
        for bad in [
            "",
            "Client.example",
            "client.example.",
            ".example",
            "a..b",
            "a_b.example",
            "[::1]",
            "::1",
            "a-.example",
            "a.-b",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "2130706433",
            "127.1",
            "0x7f.0.0.1",
            "1.0x7f",
            "example.123",
            "cl\u{456}ent.example",
            "client.example\u{200b}",
            "a b",
            &"a".repeat(64),
            &format!("{}.example", vec!["a".repeat(63); 4].join(".")),
        ] {
            assert_eq!(reason(Host::parse(bad)), Reason::UrlHost, "{bad:?}");
        }
        assert_eq!(reason(Host::parse("-oProxyCommand=id")), Reason::UrlDash);
        let max = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        assert_eq!(max.len(), 253);
        assert!(Host::parse(&max).is_ok());
    }

    #[test]
    fn users() {
        for ok in ["ferry", "adminbackup", "_x", "a-b_c9", &"u".repeat(32)] {
            assert!(User::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Ferry", "9a", "a:b", "a@b", "a.b", &"u".repeat(33), "é"] {
            assert_eq!(reason(User::parse(bad)), Reason::UrlUser, "{bad:?}");
        }
        assert_eq!(reason(User::parse("-oProxyCommand=id")), Reason::UrlDash);
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("22"), Ok(22));
        assert_eq!(parse_port("1"), Ok(1));
        assert_eq!(parse_port("65535"), Ok(65535));
        for bad in
            ["", "0", "022", "65536", "99999", "100000", "-1", "+22", " 22", "2a", "0x16", "99999999999999999999999"]
        {
            assert_eq!(reason(parse_port(bad)), Reason::UrlPort, "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        let p = RemotePath::parse("/var/lib/ferry/export/trac/x.tar.zst").unwrap();
        assert_eq!(p.segments().collect::<Vec<_>>(), ["var", "lib", "ferry", "export", "trac", "x.tar.zst"]);
        assert_eq!(p.file_name(), "x.tar.zst");
        assert_eq!(p.depth(), 6);
        let pre = RemotePath::parse("/var/lib/ferry/export").unwrap();
        assert!(p.is_within(&pre));
        assert_eq!(p.relative_to(&pre), Some(vec!["trac", "x.tar.zst"]));
        assert_eq!(pre.relative_to(&pre), Some(vec![]));
        assert!(!pre.is_within(&p));
        let sibling = RemotePath::parse("/var/lib/ferry/exported/x").unwrap();
        assert!(!sibling.is_within(&pre));
        assert!(RemotePath::parse("/_x/a.b-c").is_ok());
        let deep = "/a".repeat(32);
        assert!(RemotePath::parse(&deep).is_ok());

        for (bad, want) in [
            ("", Reason::ReqPath),
            ("relative", Reason::ReqPath),
            ("/", Reason::ReqPath),
            ("/a/", Reason::ReqPath),
            ("/a//b", Reason::ReqPath),
            ("/..", Reason::ReqPath),
            ("/.", Reason::ReqPath),
            ("/a/../b", Reason::ReqPath),
            (&"/a".repeat(33), Reason::ReqPath),
            (&format!("/{}", "a".repeat(1100)), Reason::ReqPath),
            ("/.git", Reason::ReqName),
            ("/a/.hidden", Reason::ReqName),
            (&format!("/{}", "a".repeat(101)), Reason::ReqName),
            ("/a b", Reason::ReqName),
            ("/a%2e", Reason::ReqName),
            ("/a\\b", Reason::ReqName),
            ("/~user/x", Reason::ReqName),
            ("/-x", Reason::UrlDash),
            ("/a/--upload-pack=x", Reason::UrlDash),
        ] {
            assert_eq!(reason(RemotePath::parse(bad)), want, "{bad:?}");
        }
        assert!(RemotePath::parse(&format!("/{}", "a".repeat(100))).is_ok());
    }

    #[test]
    fn names() {
        for ok in ["trac", "hello", "a.b-c_d", "0", &"n".repeat(100)] {
            assert!(Name::parse(ok).is_ok());
        }
        for bad in ["", ".", "..", ".git", "-x", "_x", "a/b", "a b", &"n".repeat(101), "é"] {
            assert_eq!(reason(Name::parse(bad)), Reason::ReqName, "{bad:?}");
        }
        assert_eq!(Name::parse("ab/c").unwrap_err().offset, Some(2));
        assert_eq!(Name::parse(&"n".repeat(101)).unwrap_err().offset, Some(100));
    }

    #[test]
    fn digests() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d = Digest::parse(hex).unwrap();
        assert_eq!(d.as_str(), hex);
        assert_eq!(d.to_hex(), hex);
        assert_eq!(d.as_bytes()[0], 0xe3);
        assert_eq!(d.as_bytes()[31], 0x55);
        assert_eq!(Digest::from_bytes(*d.as_bytes()), d);
        assert!(Digest::parse(&"0".repeat(64)).is_ok());
        for bad in [
            &hex[..63],
            &format!("{hex}0"),
            &hex.to_uppercase(),
            &format!("sha256:{}", &hex[7..]),
            &format!("g{}", &hex[1..]),
            "",
            &format!("{}\u{e9}", &hex[..62]),
        ] {
            assert_eq!(reason(Digest::parse(bad)), Reason::ReqDigest, "{bad:?}");
        }
    }

    #[test]
    fn stamps_known_values() {
        for (text, secs) in [
            ("19700101T000000Z", 0),
            ("20000301T000000Z", 951_868_800),
            ("20260101T000000Z", 1_767_225_600),
            ("20261122T010203Z", 1_795_309_323),
            ("20240229T235959Z", 1_709_251_199),
            ("99991231T235959Z", MAX_UNIX),
        ] {
            let s = Stamp::parse(text).unwrap();
            assert_eq!(s.to_unix(), secs, "{text}");
            assert_eq!(Stamp::from_unix(secs).as_str(), text);
            assert_eq!(s.to_string(), text);
        }
        assert_eq!(Stamp::from_unix(-1).as_str(), "19700101T000000Z");
        assert_eq!(Stamp::from_unix(i64::MIN).to_unix(), 0);
        assert_eq!(Stamp::from_unix(i64::MAX).to_unix(), MAX_UNIX);
        assert_eq!(Stamp::try_from_unix(-1), None);
        assert_eq!(Stamp::try_from_unix(MAX_UNIX + 1), None);
        assert!(Stamp::try_from_unix(MAX_UNIX).is_some());
    }

    #[test]
    fn stamps_round_trip_over_the_whole_range() {
        // Every 997th day plus a varying second covers every month of every
        // year shape (leap, century, 400-year) without taking long.
        let mut day = 0i64;
        while day * 86_400 <= MAX_UNIX {
            let secs = day * 86_400 + (day * 7_919) % 86_400;
            let s = Stamp::from_unix(secs);
            assert_eq!(s.to_unix(), secs);
            assert_eq!(Stamp::parse(s.as_str()), Ok(s.clone()));
            day += 997;
        }
        // And every day of a leap-cycle and the century edge exactly.
        for y in [1999i64, 2000, 2100] {
            let first = days_from_civil(y, 1, 1);
            for d in first..first + 366 {
                let (yy, m, dd) = civil_from_days(d);
                assert_eq!(days_from_civil(yy, m, dd), d);
            }
        }
    }

    #[test]
    fn stamps_rejected() {
        for bad in [
            "",
            "99999999999999999999",
            "-1",
            "0",
            "+20261122T010203Z",
            "1767225600",
            "1e10",
            "0x6955B900",
            "017672256",
            "1767225600.5",
            "20261122T010203.5Z",
            "100000101T000000Z",
            "20260230T000000Z",
            "20250229T000000Z",
            "21000229T000000Z",
            "20261131T000000Z",
            "20261122T240000Z",
            "20261122T236000Z",
            "20261122T235960Z",
            "20261300T000000Z",
            "20260001T000000Z",
            "20261100T000000Z",
            "19691231T235959Z",
            "00000101T000000Z",
            "20261122t010203Z",
            "20261122T010203z",
            "20261122 010203Z",
            "2026-11-22T01:02:03Z",
            "20261122T010203",
            "20261122T010203Z ",
            "２0261122T010203Z",
        ] {
            assert_eq!(reason(Stamp::parse(bad)), Reason::ReqTimestamp, "{bad:?}");
        }
        assert!(Stamp::parse("20000229T000000Z").is_ok());
        assert!(Stamp::parse("24000229T000000Z").is_ok());
    }

    #[test]
    fn ordering_follows_time() {
        let a = Stamp::parse("20261122T010203Z").unwrap();
        let b = Stamp::parse("20261122T010204Z").unwrap();
        assert!(a < b);
    }
}
