//! Retention rules (`keep-*` options) as restic's `forget` spells them,
//! parsed from `[ferry client NAME]` and `[ferry source CLIENT SOURCE]`
//! sections. The node applies them (`ferry-node purge`, its `retention`
//! module); they are defined here so that the admin hook refuses a bad or
//! empty rule set at enrollment, before anything is activated.
//!
//! | option | meaning |
//! |---|---|
//! | `keep-last` | the newest N artifacts |
//! | `keep-hourly`, `keep-daily`, `keep-weekly`, `keep-monthly`, `keep-yearly` | the newest artifact of each of the newest N hours, days, ISO weeks, months, years (UTC) that have one |
//! | `keep-within` | every artifact received within this span of the source's newest one: `1y6m`, `30d`, `12h`, `2w` (y years, m months, w weeks, d days, h hours, as restic) |
//!
//! A section that sets any `keep-*` option states the whole rule set for
//! its client (or source): options it leaves out are 0. A rule set that
//! keeps nothing (every option 0) is refused: it would delete every
//! backup of the source.

use std::fmt;

use super::{Report, quoted, sec};
use crate::conf::Config;

/// The `keep-*` options a client or source section may set.
pub const KEEP_OPTIONS: &[&str] =
    &["keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly", "keep-within"];

/// A span back from the newest artifact, in calendar units as restic's
/// `--keep-within` (`1y2m3d4h`): years, months and days are calendar
/// steps, hours are 3600 s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Within {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Within {
    /// No span: the rule is off.
    pub fn is_zero(&self) -> bool {
        *self == Within::default()
    }

    /// Parses `1y6m`, `30d`, `2w`, `12h`, `1y2m3d4h` (each unit at most
    /// once, a number before each; `w` is 7 days). `0d` is the rule off.
    pub fn parse(s: &str) -> Result<Within, String> {
        let hint = "a span such as 30d, 12h, 2w, 6m or 1y6m (y years, m months, w weeks, d days, h hours)";
        let mut w = Within::default();
        let mut seen = String::new();
        let mut num = String::new();
        if s.trim().is_empty() {
            return Err(hint.into());
        }
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            if num.is_empty() || num.len() > 6 || seen.contains(c) {
                return Err(hint.into());
            }
            let n: u32 = num.parse().map_err(|_| hint.to_string())?;
            num.clear();
            seen.push(c);
            match c {
                'y' => w.years = n,
                'm' => w.months = n,
                'w' => w.days = w.days.saturating_add(n.saturating_mul(7)),
                'd' => w.days = w.days.saturating_add(n),
                'h' => w.hours = n,
                _ => return Err(hint.into()),
            }
        }
        if !num.is_empty() {
            return Err(hint.into());
        }
        Ok(w)
    }
}

impl fmt::Display for Within {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0d");
        }
        for (n, u) in [(self.years, 'y'), (self.months, 'm'), (self.days, 'd'), (self.hours, 'h')] {
            if n > 0 {
                write!(f, "{n}{u}")?;
            }
        }
        Ok(())
    }
}

/// One rule set: counts per bucket kind and a span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepRules {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub within: Within,
}

impl KeepRules {
    /// Every rule is off: applied, the set would remove everything.
    pub fn keeps_nothing(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_zero()
    }

    /// Why the set is refused, if it is.
    pub fn check(&self) -> Result<(), String> {
        if self.keeps_nothing() {
            return Err("these retention rules keep nothing (every keep-* is 0): purge would delete every backup; set at least one keep-* above 0".into());
        }
        Ok(())
    }
}

impl fmt::Display for KeepRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (n, name) in [
            (self.last, "last"),
            (self.hourly, "hourly"),
            (self.daily, "daily"),
            (self.weekly, "weekly"),
            (self.monthly, "monthly"),
            (self.yearly, "yearly"),
        ] {
            if n > 0 {
                parts.push(format!("{name} {n}"));
            }
        }
        if !self.within.is_zero() {
            parts.push(format!("within {}", self.within));
        }
        f.write_str(&parts.join(", "))
    }
}

/// The rule set a section states (`None`: it sets no `keep-*` option),
/// every problem recorded in `rep`.
pub(super) fn parse_keep(conf: &Config, section: &str, rep: &mut Report) -> Option<Option<KeepRules>> {
    let where_ = sec(section);
    if !KEEP_OPTIONS.iter().any(|o| conf.get_own(section, o).is_some()) {
        return Some(None);
    }
    let before = rep.errors.len();
    let mut r = KeepRules::default();
    for (opt, slot) in [
        ("keep-last", &mut r.last),
        ("keep-hourly", &mut r.hourly),
        ("keep-daily", &mut r.daily),
        ("keep-weekly", &mut r.weekly),
        ("keep-monthly", &mut r.monthly),
        ("keep-yearly", &mut r.yearly),
    ] {
        if let Some(v) = conf.get_own(section, opt) {
            match super::units::strict_decimal(v).and_then(|n| u32::try_from(n).ok()).filter(|n| *n <= 100_000) {
                Some(n) => *slot = n,
                None => rep.conf(format!("{where_} option '{opt}': invalid value {} (a count 0..100000)", quoted(v))),
            }
        }
    }
    if let Some(v) = conf.get_own(section, "keep-within") {
        match Within::parse(v) {
            Ok(w) => r.within = w,
            Err(hint) => rep.conf(format!("{where_} option 'keep-within': invalid value {} ({hint})", quoted(v))),
        }
    }
    if rep.errors.len() != before {
        return None;
    }
    if let Err(why) = r.check() {
        rep.conf(format!("{where_}: {why}"));
        return None;
    }
    Some(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_spellings() {
        assert_eq!(Within::parse("30d"), Ok(Within { days: 30, ..Default::default() }));
        assert_eq!(Within::parse("2w"), Ok(Within { days: 14, ..Default::default() }));
        assert_eq!(Within::parse("1y6m"), Ok(Within { years: 1, months: 6, ..Default::default() }));
        assert_eq!(Within::parse("1y2m3d4h").unwrap().to_string(), "1y2m3d4h");
        assert!(Within::parse("0d").unwrap().is_zero());
        for bad in ["", "d", "30", "3x", "1d1d", "-1d", "1.5d", "9999999d"] {
            assert!(Within::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_rules_are_refused() {
        assert!(KeepRules::default().check().is_err());
        assert!(KeepRules { daily: 1, ..Default::default() }.check().is_ok());
        assert!(KeepRules { within: Within { hours: 1, ..Default::default() }, ..Default::default() }.check().is_ok());
    }
}
