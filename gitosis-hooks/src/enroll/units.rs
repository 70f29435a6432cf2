//! Size and duration syntax of `gitosis.conf` limits (`quota`,
//! `max-artifact`, `job-timeout`), also used for the node's own TOML
//! defaults so both read one spelling.

/// Strict decimal: digits only, no sign, no leading zeros ("0" itself ok).
pub(super) fn strict_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// Sizes: plain bytes or a number with one of `K`, `M`, `G`, `T`
/// (binary: 1024^n; lower case accepted). No spaces, no fractions, no
/// leading zeros; overflow → `None`.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (s.get(..s.len() - 1)?, 10),
        b'M' | b'm' => (s.get(..s.len() - 1)?, 20),
        b'G' | b'g' => (s.get(..s.len() - 1)?, 30),
        b'T' | b't' => (s.get(..s.len() - 1)?, 40),
        _ => (s, 0),
    };
    strict_decimal(num)?.checked_mul(1u64 << shift)
}

/// A size limit: [`parse_size`], or `unlimited` (`u64::MAX`), which lifts
/// the node's default for one client.
pub fn parse_size_limit(s: &str) -> Option<u64> {
    if s == "unlimited" { Some(u64::MAX) } else { parse_size(s) }
}

/// Durations: seconds, or a number with suffix `s`, `m` or `h`. Overflow
/// → `None`.
pub fn parse_duration_secs(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b's' => (s.get(..s.len() - 1)?, 1),
        b'm' => (s.get(..s.len() - 1)?, 60),
        b'h' => (s.get(..s.len() - 1)?, 3600),
        _ => (s, 1),
    };
    strict_decimal(num)?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        let sizes = [
            ("0", Some(0)),
            ("1048576", Some(1_048_576)),
            ("1K", Some(1024)),
            ("500M", Some(500 << 20)),
            ("100G", Some(100 << 30)),
            ("2T", Some(2 << 40)),
            ("2t", Some(2 << 40)),
            ("16777215T", Some(16_777_215u64 << 40)),
            ("16777216T", None),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("", None),
            ("M", None),
            ("1.5G", None),
            ("-1", None),
            ("+1", None),
            ("01", None),
            ("1 G", None),
            ("1GB", None),
            ("1P", None),
        ];
        for (s, want) in sizes {
            assert_eq!(parse_size(s), want, "{s}");
        }
        let durations = [
            ("90", Some(90)),
            ("90s", Some(90)),
            ("5m", Some(300)),
            ("2h", Some(7200)),
            ("0", Some(0)),
            ("1d", None),
            ("h", None),
            ("5M", None),
            ("", None),
            ("18446744073709551615h", None),
        ];
        for (s, want) in durations {
            assert_eq!(parse_duration_secs(s), want, "{s}");
        }
    }
}
