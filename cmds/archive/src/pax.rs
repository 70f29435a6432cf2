//! PAX extended header records (`"<len> <key>=<value>\n"`): a strict parser
//! for extraction and a writer for creation.
//!
//! The tar crate's own PAX handling is bypassed on extraction
//! (`Entries::raw(true)`) because it buffers a record of any size before we
//! could cap it (AX-16); this parser only ever sees records already read
//! under `max_ext_header_bytes`.

/// Key/value pairs, raw bytes, in archive order.
pub(crate) type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Parses PAX records. Malformed input is an error rather than being skipped,
/// so two parsers can never disagree about what an archive contains; for the
/// same reason a key may appear only once.
pub(crate) fn parse(mut data: &[u8]) -> Result<Records, &'static str> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while !data.is_empty() {
        let sp = data.iter().position(|b| *b == b' ').ok_or("PAX record without length")?;
        let len_str = std::str::from_utf8(&data[..sp]).map_err(|_| "bad PAX record length")?;
        if len_str.is_empty() || !len_str.bytes().all(|b| b.is_ascii_digit()) || len_str.len() > 20 {
            return Err("bad PAX record length");
        }
        let len: usize = len_str.parse().map_err(|_| "bad PAX record length")?;
        if len <= sp + 1 || len > data.len() {
            return Err("PAX record length out of range");
        }
        let record = &data[sp + 1..len];
        let Some((&b'\n', body)) = record.split_last() else {
            return Err("PAX record not terminated by newline");
        };
        let eq = body.iter().position(|b| *b == b'=').ok_or("PAX record without `=`")?;
        if eq == 0 {
            return Err("PAX record with empty key");
        }
        let key = &body[..eq];
        if !seen.insert(key) {
            return Err("PAX key given twice");
        }
        out.push((key.to_vec(), body[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// Appends one record to `buf`, computing the self-including length.
pub(crate) fn push_record(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // `len` counts its own digits: find the fixed point.
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    loop {
        let total = body + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    buf.extend_from_slice(len.to_string().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(key);
    buf.push(b'=');
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// Parses a PAX time (`[-]seconds[.fraction]`) into seconds and nanoseconds.
pub(crate) fn parse_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    if neg {
        // -1.5 means 1.5 s before the epoch: seconds -2, nanos 0.5e9.
        if nanos == 0 { Some((-secs, 0)) } else { Some((-secs - 1, 1_000_000_000 - nanos)) }
    } else {
        Some((secs, nanos))
    }
}

/// Parses a decimal PAX number (`uid`, `gid`, `size`).
pub(crate) fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(|b| b.is_ascii_digit()) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_records() {
        let mut buf = Vec::new();
        push_record(&mut buf, b"path", b"a/b");
        push_record(&mut buf, b"SCHILY.xattr.user.x", b"\x00\xff=\n");
        let long = vec![b'v'; 95];
        push_record(&mut buf, b"k", &long);
        let recs = parse(&buf).unwrap();
        assert_eq!(recs[0], (b"path".to_vec(), b"a/b".to_vec()));
        assert_eq!(recs[1].1, b"\x00\xff=\n");
        assert_eq!(recs[2].1, long);
        assert!(buf.starts_with(b"12 path=a/b\n"));
    }

    #[test]
    fn rejects_malformed() {
        assert!(parse(b"5 a=b").is_err());
        assert!(parse(b"99 a=b\n").is_err());
        assert!(parse(b"x a=b\n").is_err());
        assert!(parse(b"6 =bc\n").is_err());
        assert!(parse(b"6 abc\n").is_err());
        assert!(parse(b"0 \n").is_err());
        assert!(parse(b"8 a=bc\n8 a=de\n").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time(b"12"), Some((12, 0)));
        assert_eq!(parse_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_time(b"1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(parse_time(b"a"), None);
        assert_eq!(parse_time(b""), None);
    }
}
