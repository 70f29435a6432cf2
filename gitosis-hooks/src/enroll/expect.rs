//! `sources = www:1d shop:6h code:push` in a `[ferry client NAME]`
//! section: the sources the administrators expect from that client and how
//! often each must arrive (issue 12). The node judges lateness from this
//! reviewed plan, never from the client's own configuration, which a
//! compromised client could change.

use ferry_request::{Name, is_reserved_source, same_ignoring_case};

/// How often a source must arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// At least once every so many seconds.
    Every(u64),
    /// Whenever the client pushes (a git mirror): never late, only
    /// missing when it never arrived.
    Push,
}

impl Cadence {
    /// The seconds between two arrivals, if there is a bound.
    pub fn secs(self) -> Option<u64> {
        match self {
            Cadence::Every(s) => Some(s),
            Cadence::Push => None,
        }
    }

    /// The spelling used in gitosis.conf (`6h`, `1d`, `push`).
    pub fn spelling(self) -> String {
        match self {
            Cadence::Push => "push".into(),
            Cadence::Every(s) if s % 604_800 == 0 => format!("{}w", s / 604_800),
            Cadence::Every(s) if s % 86_400 == 0 => format!("{}d", s / 86_400),
            Cadence::Every(s) if s % 3600 == 0 => format!("{}h", s / 3600),
            Cadence::Every(s) if s % 60 == 0 => format!("{}m", s / 60),
            Cadence::Every(s) => format!("{s}s"),
        }
    }
}

/// One expected source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub source: Name,
    pub cadence: Cadence,
}

/// Shortest cadence accepted: a plan that expects a backup more often than
/// every five minutes would make every scan report it late.
const MIN_CADENCE_SECS: u64 = 300;
/// Longest: a year.
const MAX_CADENCE_SECS: u64 = 366 * 86_400;

/// A cadence: `push`, or a positive number with suffix `m`, `h`, `d` or
/// `w`, between five minutes and a year.
pub fn parse_cadence(s: &str) -> Result<Cadence, String> {
    if s == "push" {
        return Ok(Cadence::Push);
    }
    let hint = "'push' or a number with suffix m, h, d or w (e.g. 30m, 6h, 1d, 1w)";
    let (num, mult) = match s.as_bytes().last() {
        Some(b'm') => (&s[..s.len() - 1], 60),
        Some(b'h') => (&s[..s.len() - 1], 3600),
        Some(b'd') => (&s[..s.len() - 1], 86_400),
        Some(b'w') => (&s[..s.len() - 1], 604_800),
        _ => return Err(hint.into()),
    };
    let secs = super::units::strict_decimal(num).and_then(|n| n.checked_mul(mult)).ok_or_else(|| hint.to_string())?;
    if !(MIN_CADENCE_SECS..=MAX_CADENCE_SECS).contains(&secs) {
        return Err("a cadence between 5m and 366d".into());
    }
    Ok(Cadence::Every(secs))
}

/// Parses the value of `sources`: whitespace-separated `NAME:CADENCE`.
/// Every problem is returned (each a sentence naming the item).
pub fn parse_sources(value: &str) -> Result<Vec<Expected>, Vec<String>> {
    let mut out: Vec<Expected> = Vec::new();
    let mut errors = Vec::new();
    for item in crate::conf::split_list(value) {
        let shown = ferry_text::sanitize(item, 120);
        let Some((name, cadence)) = item.split_once(':') else {
            errors.push(format!("'{shown}' is not NAME:CADENCE"));
            continue;
        };
        let source = match Name::parse(name) {
            Ok(n) => n,
            Err(e) => {
                errors.push(format!("'{shown}': {}", e.detail));
                continue;
            }
        };
        if is_reserved_source(name) {
            errors.push(format!("'{shown}': '{name}' is reserved for the node's own directories"));
            continue;
        }
        if let Some(twin) = out.iter().find(|e| same_ignoring_case(e.source.as_str(), name)) {
            errors.push(format!("'{shown}': source '{}' is already listed", twin.source.as_str()));
            continue;
        }
        match parse_cadence(cadence) {
            Ok(cadence) => out.push(Expected { source, cadence }),
            Err(hint) => errors.push(format!("'{shown}': cadence must be {hint}")),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cadences() {
        assert_eq!(parse_cadence("push"), Ok(Cadence::Push));
        assert_eq!(parse_cadence("30m"), Ok(Cadence::Every(1800)));
        assert_eq!(parse_cadence("6h"), Ok(Cadence::Every(21_600)));
        assert_eq!(parse_cadence("1d"), Ok(Cadence::Every(86_400)));
        assert_eq!(parse_cadence("2w"), Ok(Cadence::Every(1_209_600)));
        for bad in ["", "1", "1s", "4m", "0d", "01d", "1.5d", "-1d", "367d", "1y", "d", "99999999999999999999w"] {
            assert!(parse_cadence(bad).is_err(), "{bad}");
        }
        for c in ["push", "30m", "6h", "1d", "2w", "90m"] {
            assert_eq!(parse_cadence(c).unwrap().spelling(), c);
        }
    }

    #[test]
    fn source_lists() {
        let v = parse_sources("www:1d shop:6h\tcode:push").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!((v[2].source.as_str(), v[2].cadence), ("code", Cadence::Push));
        assert_eq!(parse_sources("").unwrap(), vec![]);
        let e = parse_sources("www www:1x ../x:1d trees:1d www:1d WWW:2d").unwrap_err();
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(e[0].contains("not NAME:CADENCE"), "{e:?}");
        assert!(e[1].contains("cadence must be"), "{e:?}");
        assert!(e[3].contains("reserved"), "{e:?}");
        assert!(e[4].contains("already listed"), "{e:?}");
    }
}
