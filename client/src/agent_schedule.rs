//! A source's own schedule under `ferry agent` (issue 11): `schedule =
//! "0 3 * * *"` (a five-field cron expression, in the host's time zone) or
//! `every = "6h"`.
//!
//! Why not tokio-cron-scheduler, as the design named: it reads the system
//! clock inside its own tokio tasks, so a test would have to wait for a real
//! 03:00. This module only answers "when is the next run after T?"; the
//! agent's loop asks it with the client's clock ([`crate::clock`]), which
//! `FERRY_NOW` sets and which then runs on from there, so a test starts the
//! agent at 02:59:58 and sees the 03:00 backup two seconds later. The
//! expression language is the classic one (`*`, `a-b`, `*/n`, `a-b/n`,
//! lists; day of week 0-7 with 0 and 7 Sunday; when both day of month and
//! day of week are restricted, either matches, as in Vixie cron), parsed
//! with jiff, the crate the client keeps time with.

use std::time::Duration;

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;

/// A parsed five-field cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_any: bool,
    weekdays_any: bool,
}

/// When a source runs by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Cron(Cron),
    Every(Duration),
}

fn field(text: &str, lo: u32, hi: u32, what: &str) -> anyhow::Result<(u64, bool)> {
    let mut mask = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>().ok().filter(|s| *s > 0).with_context(|| format!("{what}: bad step in {item:?}"))?,
            ),
            None => (item, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (num(a, what)?, num(b, what)?)
        } else {
            let a = num(range, what)?;
            (a, if item.contains('/') { hi } else { a })
        };
        if a < lo || b > hi || a > b {
            bail!("{what}: {item:?} is outside {lo}-{hi}");
        }
        let mut v = a;
        while v <= b {
            mask |= 1 << v;
            v += step;
        }
    }
    Ok((mask, text == "*"))
}

fn num(s: &str, what: &str) -> anyhow::Result<u32> {
    s.parse().with_context(|| format!("{what}: {s:?} is not a number"))
}

impl std::str::FromStr for Cron {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Cron> {
        let f: Vec<&str> = s.split_whitespace().collect();
        let [mi, h, d, mo, w] = f[..] else {
            bail!("{s:?}: a schedule has five fields: minute hour day-of-month month day-of-week (\"0 3 * * *\")");
        };
        let (minutes, _) = field(mi, 0, 59, "minute")?;
        let (hours, _) = field(h, 0, 23, "hour")?;
        let (days, days_any) = field(d, 1, 31, "day of month")?;
        let (months, _) = field(mo, 1, 12, "month")?;
        let (mut weekdays, weekdays_any) = field(w, 0, 7, "day of week")?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Cron { minutes, hours, days, months, weekdays, days_any, weekdays_any })
    }
}

impl Cron {
    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first matching minute strictly after `after`, in `tz`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = tz.to_datetime(after);
        let mut day = local.date();
        // Eight years cover every valid day-of-month/month combination.
        for _ in 0..(366 * 8) {
            if self.months & (1 << day.month()) != 0 && self.day_matches(day) {
                for h in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                    for m in (0..60).filter(|m| self.minutes & (1 << m) != 0) {
                        let dt = DateTime::from_parts(day, Time::constant(h, m, 0, 0));
                        let Ok(z) = tz.to_ambiguous_zoned(dt).compatible() else { continue };
                        if z.timestamp() > after {
                            return Some(z.timestamp());
                        }
                    }
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }
}

impl Schedule {
    /// `schedule` or `every` of a source (at most one is set).
    pub fn of(schedule: Option<&str>, every: Option<&str>) -> anyhow::Result<Option<Schedule>> {
        match (schedule, every) {
            (Some(_), Some(_)) => bail!("set schedule or every, not both"),
            (Some(s), None) => Ok(Some(Schedule::Cron(s.parse().with_context(|| format!("schedule {s:?}"))?))),
            (None, Some(e)) => {
                let d = crate::duration::parse_duration(e)?;
                if d < Duration::from_secs(1) {
                    bail!("every {e:?}: at least one second");
                }
                Ok(Some(Schedule::Every(d)))
            }
            (None, None) => Ok(None),
        }
    }

    /// The next run after `now`, given the last run (for `every`).
    pub fn next(&self, now: Timestamp, last: Option<Timestamp>, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Cron(c) => c.next_after(now, tz),
            Schedule::Every(d) => {
                let span = jiff::SignedDuration::try_from(*d).ok()?;
                Some(match last {
                    Some(l) => l.checked_add(span).ok()?.max(now),
                    None => now,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn next_run_of_cron_expressions() {
        let utc = TimeZone::UTC;
        let c: Cron = "0 3 * * *".parse().unwrap();
        assert_eq!(c.next_after(t("2026-11-22T02:59:58Z"), &utc), Some(t("2026-11-22T03:00:00Z")));
        assert_eq!(c.next_after(t("2026-11-22T03:00:00Z"), &utc), Some(t("2026-11-23T03:00:00Z")));
        let c: Cron = "*/15 9-17 * * 1-5".parse().unwrap();
        // Saturday 2026-11-21 → Monday 09:00.
        assert_eq!(c.next_after(t("2026-11-21T12:00:00Z"), &utc), Some(t("2026-11-23T09:00:00Z")));
        assert_eq!(c.next_after(t("2026-11-23T09:00:00Z"), &utc), Some(t("2026-11-23T09:15:00Z")));
        // Day of month or Sunday (7), Vixie style.
        let c: Cron = "30 1 1 * 7".parse().unwrap();
        assert_eq!(c.next_after(t("2026-11-22T02:00:00Z"), &utc), Some(t("2026-11-29T01:30:00Z")));
        assert_eq!(c.next_after(t("2026-11-29T02:00:00Z"), &utc), Some(t("2026-12-01T01:30:00Z")));
        let c: Cron = "0 0 29 2 *".parse().unwrap();
        assert_eq!(c.next_after(t("2026-11-22T00:00:00Z"), &utc), Some(t("2028-02-29T00:00:00Z")));
        // In the host's zone.
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let c: Cron = "0 3 * * *".parse().unwrap();
        assert_eq!(c.next_after(t("2026-11-22T00:00:00Z"), &berlin), Some(t("2026-11-22T02:00:00Z")));
        for bad in ["0 3 * *", "60 * * * *", "* * 0 * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"] {
            assert!(bad.parse::<Cron>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_runs_at_start_then_after_the_interval() {
        let s = Schedule::of(None, Some("6h")).unwrap().unwrap();
        let now = t("2026-11-22T10:00:00Z");
        assert_eq!(s.next(now, None, &TimeZone::UTC), Some(now));
        assert_eq!(s.next(now, Some(t("2026-11-22T09:00:00Z")), &TimeZone::UTC), Some(t("2026-11-22T15:00:00Z")));
        assert_eq!(s.next(now, Some(t("2026-11-21T00:00:00Z")), &TimeZone::UTC), Some(now));
        assert!(Schedule::of(Some("0 3 * * *"), Some("6h")).is_err());
        assert_eq!(Schedule::of(None, None).unwrap(), None);
    }
}
