//! Durations written by people in `client.toml` (`30s`, `5m`, `2h`, `1d`),
//! in a module of their own because the configuration and the agent's
//! schedules both read them and neither should import the other for it.

use std::time::Duration;

use anyhow::Context as _;

/// Parse `30s`, `5m`, `2h`, `1d` or plain seconds. A value too large for
/// a `u64` of seconds is refused rather than wrapped.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1u64),
    };
    let n: u64 = num.parse().with_context(|| format!("bad duration {s:?} (use 30s, 5m, 2h, 1d)"))?;
    let secs = n.checked_mul(mult).with_context(|| format!("duration {s:?} is too long"))?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_plain_seconds_and_overflow() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration(" 2h ").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("18446744073709551615d").is_err(), "overflow is an error, not a wrap or panic");
    }
}
