//! The percent encoding of values and the canonical number spellings.
//!
//! Every function here accepts exactly one spelling per value, so the
//! parser needs no normalisation step and `write(parse(t)) == t`.

use super::Mtime;

/// Whether byte `b` must be written `%XX` in a value: everything outside
/// `0x21..=0x7e`, and `%` itself. `extra` is one more byte to escape (`:`
/// in xattr names), or `None`.
fn must_escape(b: u8, extra: Option<u8>) -> bool {
    !(0x21..=0x7e).contains(&b) || b == b'%' || Some(b) == extra
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends the encoding of `bytes` to `out`.
pub(crate) fn encode_into(out: &mut Vec<u8>, bytes: &[u8], extra: Option<u8>) {
    for &b in bytes {
        if must_escape(b, extra) {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.push(b);
        }
    }
}

/// The manifest spelling of raw bytes (printable ASCII, no space): what
/// every `path=`, `target=`, `user=` and `group=` value holds. Also a safe,
/// unambiguous way to show a path in JSON.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    encode_into(&mut out, bytes, None);
    String::from_utf8(out).expect("the encoding is ASCII")
}

/// Why a value is not a canonical encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// `%` not followed by two upper-case hex digits.
    BadEscape,
    /// `%XX` for a byte that is written as itself; carries the byte (a
    /// `%2F` in a path is "a `/` inside a name").
    NotNeeded(u8),
    /// A literal byte that must be escaped (a `:` in an xattr name, or a
    /// byte outside `0x21..=0x7e`).
    Unescaped(u8),
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes a canonical value (see [`encode`]); `extra` as in encoding.
pub(crate) fn decode_with(s: &[u8], extra: Option<u8>) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%' {
            let (Some(h), Some(l)) =
                (s.get(i + 1).copied().and_then(hex_digit), s.get(i + 2).copied().and_then(hex_digit))
            else {
                return Err(DecodeError::BadEscape);
            };
            let v = (h << 4) | l;
            if !must_escape(v, extra) {
                return Err(DecodeError::NotNeeded(v));
            }
            out.push(v);
            i += 3;
        } else {
            if must_escape(b, extra) {
                return Err(DecodeError::Unescaped(b));
            }
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

/// The inverse of [`encode`]: `None` unless `s` is the one canonical
/// spelling of some bytes.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    decode_with(s.as_bytes(), None).ok()
}

/// A canonical unsigned decimal (`0` or no leading zero) up to `u64::MAX`.
pub(crate) fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || (s.len() > 1 && s[0] == b'0') || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// A canonical decimal that fits `u32`.
pub(crate) fn parse_u32(s: &[u8]) -> Option<u32> {
    u32::try_from(parse_dec(s)?).ok()
}

/// Exactly four octal digits.
pub(crate) fn parse_mode(s: &[u8]) -> Option<u32> {
    if s.len() != 4 || !s.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    Some(s.iter().fold(0u32, |m, b| m * 8 + u32::from(b - b'0')))
}

/// `[-]dec.nnnnnnnnn`; `-0.…` is refused (a time just before 1970 is
/// `-1.…` with positive nanoseconds, as in `timespec`).
pub(crate) fn parse_time(s: &[u8]) -> Option<Mtime> {
    let (neg, rest) = match s.strip_prefix(b"-") {
        Some(r) => (true, r),
        None => (false, s),
    };
    let dot = rest.iter().position(|b| *b == b'.')?;
    let (secs, frac) = (&rest[..dot], &rest[dot + 1..]);
    let secs = parse_dec(secs)?;
    if frac.len() != 9 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let nsec = std::str::from_utf8(frac).ok()?.parse::<u32>().ok()?;
    let sec = if neg {
        if secs == 0 {
            return None;
        }
        // i64::MIN has no positive counterpart; allow it explicitly.
        if secs == 1u64 << 63 { i64::MIN } else { -(i64::try_from(secs).ok()?) }
    } else {
        i64::try_from(secs).ok()?
    };
    Some(Mtime { sec, nsec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_canonical() {
        assert_eq!(encode(b"a b%c=d/\xff\n:"), "a%20b%25c=d/%FF%0A:");
        assert_eq!(decode("a%20b%25c=d/%FF%0A:").unwrap(), b"a b%c=d/\xff\n:");
        for bad in ["%41", "%2F", "%2f", "%0a", "%", "%4", "a b", "%GG"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        assert_eq!(decode_with(b"a%3Ab", Some(b':')).unwrap(), b"a:b");
        assert_eq!(decode_with(b"a:b", Some(b':')), Err(DecodeError::Unescaped(b':')));
        assert_eq!(decode_with(b"%2F", None), Err(DecodeError::NotNeeded(b'/')));
    }

    #[test]
    fn numbers_have_one_spelling() {
        assert_eq!(parse_dec(b"0"), Some(0));
        assert_eq!(parse_dec(b"18446744073709551615"), Some(u64::MAX));
        for bad in [&b""[..], b"01", b"+1", b"-1", b"18446744073709551616", b"1 ", b"0x1"] {
            assert_eq!(parse_dec(bad), None, "{bad:?}");
        }
        assert_eq!(parse_mode(b"4755"), Some(0o4755));
        assert_eq!(parse_mode(b"755"), None);
        assert_eq!(parse_mode(b"0855"), None);
        assert_eq!(parse_time(b"1.000000001"), Some(Mtime { sec: 1, nsec: 1 }));
        assert_eq!(parse_time(b"-1.500000000"), Some(Mtime { sec: -1, nsec: 500_000_000 }));
        assert_eq!(parse_time(b"-9223372036854775808.000000000"), Some(Mtime { sec: i64::MIN, nsec: 0 }));
        for bad in
            [&b"-0.000000000"[..], b"1.5", b"1", b"01.000000000", b"1.0000000000", b"9223372036854775808.000000000"]
        {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }
}
