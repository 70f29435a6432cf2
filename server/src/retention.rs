//! Which artifacts of one source retention keeps, and why: a pure function
//! of the artifacts' node receive times and a rule set, with restic
//! `forget`'s semantics (restic 0.14, the version Debian 12 ships), so an
//! administrator who knows one knows the other:
//!
//! * newest first; `keep-last N` keeps the newest N;
//! * `keep-hourly/daily/weekly/monthly/yearly N` walk the artifacts newest
//!   first and keep each one whose hour/day/ISO week/month/year (UTC) is
//!   not the previous kept one's of that rule, until N were kept: the
//!   newest artifact of each of the newest N buckets that have one;
//! * `keep-within SPAN` keeps every artifact strictly after (newest
//!   artifact's time − SPAN), relative to the newest artifact, not to now,
//!   so a source that stopped is not emptied by time passing;
//! * an artifact is kept when any rule keeps it; the rules that do are its
//!   reasons.
//!
//! Difference from restic ≥ 0.16 (not 0.14): when a bucket rule has counts
//! left after the oldest artifact, newer restic also keeps the oldest
//! snapshot; Ferry, like 0.14, does not.
//!
//! Added on top (not in restic): the newest *verified* artifact (stored,
//! its digest sidecar and size matching the catalog) is always kept when
//! the rules keep no verified one, so purge never removes the only good
//! copy of a source (reason `only-verified`).
//!
//! Node time only (SECURITY I7): the times are the catalog's `received`,
//! never a client's clock.

use ferry_gitosis::enroll::KeepRules;
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use serde::Serialize;

/// One artifact of a source as retention sees it.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: i64,
    /// Node receive time.
    pub at: Timestamp,
    /// Stored and matching its digest sidecar and size.
    pub verified: bool,
}

/// Why an artifact is kept (restic's reasons, plus `only-verified`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Within,
    OnlyVerified,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Last => "last",
            Reason::Hourly => "hourly",
            Reason::Daily => "daily",
            Reason::Weekly => "weekly",
            Reason::Monthly => "monthly",
            Reason::Yearly => "yearly",
            Reason::Within => "within",
            Reason::OnlyVerified => "only-verified",
        }
    }
}

/// The decision for one item: kept (with the rules that keep it) or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: i64,
    /// Empty: the item goes.
    pub reasons: Vec<Reason>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Why a rule set is refused: it keeps nothing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn civil(t: Timestamp) -> DateTime {
    t.to_zoned(TimeZone::UTC).datetime()
}

/// The bucket of `t` for a bucket rule (UTC).
fn bucket(reason: Reason, t: Timestamp) -> i64 {
    let d = civil(t);
    let (y, m, day, h) = (d.year() as i64, d.month() as i64, d.day() as i64, d.hour() as i64);
    match reason {
        Reason::Hourly => ((y * 100 + m) * 100 + day) * 100 + h,
        Reason::Daily => (y * 100 + m) * 100 + day,
        Reason::Weekly => {
            let w = d.date().iso_week_date();
            w.year() as i64 * 100 + w.week() as i64
        }
        Reason::Monthly => y * 100 + m,
        _ => y,
    }
}

/// The decision for every item (in the order given), or why the rules are
/// refused. Ties in time are broken by the higher id first (newer row).
pub fn decide(items: &[Item], rules: &KeepRules) -> Result<Vec<Decision>, Refused> {
    rules.check().map_err(Refused)?;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| items[b].at.cmp(&items[a].at).then(items[b].id.cmp(&items[a].id)));
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); items.len()];
    let cutoff = order.first().and_then(|&i| within_cutoff(items[i].at, rules));
    let mut buckets = [
        (Reason::Hourly, rules.hourly, None::<i64>),
        (Reason::Daily, rules.daily, None),
        (Reason::Weekly, rules.weekly, None),
        (Reason::Monthly, rules.monthly, None),
        (Reason::Yearly, rules.yearly, None),
    ];
    for (nr, &i) in order.iter().enumerate() {
        let it = &items[i];
        if (nr as u64) < rules.last as u64 {
            reasons[i].push(Reason::Last);
        }
        if let Some(c) = cutoff
            && it.at > c
        {
            reasons[i].push(Reason::Within);
        }
        for (reason, left, last) in buckets.iter_mut() {
            if *left == 0 {
                continue;
            }
            let b = bucket(*reason, it.at);
            if *last != Some(b) {
                *last = Some(b);
                *left -= 1;
                reasons[i].push(*reason);
            }
        }
    }
    // Never the only verified copy.
    if !order.iter().any(|&i| items[i].verified && !reasons[i].is_empty())
        && let Some(&i) = order.iter().find(|&&i| items[i].verified)
    {
        reasons[i].push(Reason::OnlyVerified);
    }
    Ok(items.iter().zip(reasons).map(|(it, reasons)| Decision { id: it.id, reasons }).collect())
}

/// `newest − within` in calendar steps as restic (`AddDate(-y, -m, -d)`
/// then hours), in UTC; `None` when the rule is off.
fn within_cutoff(newest: Timestamp, rules: &KeepRules) -> Option<Timestamp> {
    let w = rules.within;
    if w.is_zero() {
        return None;
    }
    let z = newest.to_zoned(TimeZone::UTC);
    // Go's AddDate normalises overflowing days (Mar 31 - 1 month = Mar 3);
    // do the same: step years and months on the civil date with the day
    // kept, then let the day count overflow.
    let d = z.datetime();
    let months = d.year() as i64 * 12 + (d.month() as i64 - 1) - w.years as i64 * 12 - w.months as i64;
    let (y, m) = (months.div_euclid(12), months.rem_euclid(12) + 1);
    let days = d.day() as i64 - 1 - w.days as i64;
    // A span reaching before the calendar's start keeps everything.
    let cutoff = || -> Option<Timestamp> {
        let first = jiff::civil::Date::new(i16::try_from(y).ok()?, m as i8, 1).ok()?.at(
            d.hour(),
            d.minute(),
            d.second(),
            d.subsec_nanosecond(),
        );
        let base = first.to_zoned(TimeZone::UTC).ok()?.timestamp();
        base.checked_add(jiff::SignedDuration::from_hours(days * 24 - w.hours as i64)).ok()
    };
    Some(cutoff().unwrap_or(Timestamp::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_gitosis::enroll::Within;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn items(times: &[&str]) -> Vec<Item> {
        times.iter().enumerate().map(|(i, s)| Item { id: i as i64, at: t(s), verified: true }).collect()
    }

    fn kept(items: &[Item], rules: KeepRules) -> Vec<(i64, Vec<&'static str>)> {
        decide(items, &rules)
            .unwrap()
            .into_iter()
            .filter(|d| d.keep())
            .map(|d| (d.id, d.reasons.iter().map(|r| r.as_str()).collect()))
            .collect()
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_counts_days_that_have_one() {
        let it = items(&[
            "2026-01-01T01:00:00Z",
            "2026-01-01T23:00:00Z",
            "2026-01-03T10:00:00Z",
            "2026-01-05T10:00:00Z",
            "2026-01-05T11:00:00Z",
        ]);
        let k = kept(&it, KeepRules { daily: 3, ..Default::default() });
        assert_eq!(k, vec![(1, vec!["daily"]), (2, vec!["daily"]), (4, vec!["daily"])]);
    }

    #[test]
    fn reasons_accumulate_and_last_counts_items() {
        let it = items(&["2026-01-01T01:00:00Z", "2026-02-01T01:00:00Z", "2026-02-02T01:00:00Z"]);
        let k = kept(&it, KeepRules { last: 2, monthly: 2, ..Default::default() });
        assert_eq!(k, vec![(0, vec!["monthly"]), (1, vec!["last"]), (2, vec!["last", "monthly"])]);
    }

    #[test]
    fn weekly_uses_iso_weeks_across_the_year_end() {
        // 2026-01-01 is a Thursday in ISO week 2026-W01, as is 2025-12-29.
        let it = items(&["2025-12-28T12:00:00Z", "2025-12-29T12:00:00Z", "2026-01-01T12:00:00Z"]);
        let k = kept(&it, KeepRules { weekly: 5, ..Default::default() });
        assert_eq!(k, vec![(0, vec!["weekly"]), (2, vec!["weekly"])]);
    }

    #[test]
    fn within_is_relative_to_the_newest_item_not_to_now() {
        let it = items(&["2020-01-01T00:00:00Z", "2020-01-20T00:00:00Z", "2020-01-31T00:00:00Z"]);
        let k = kept(&it, KeepRules { within: Within { days: 11, ..Default::default() }, ..Default::default() });
        assert_eq!(k, vec![(2, vec!["within"])], "2020-01-20 is the cutoff itself");
        let k = kept(&it, KeepRules { within: Within { days: 12, ..Default::default() }, ..Default::default() });
        assert_eq!(k, vec![(1, vec!["within"]), (2, vec!["within"])]);
        // Exactly on the cutoff is not within (restic: After).
        let k = kept(&it, KeepRules { within: Within { days: 30, ..Default::default() }, ..Default::default() });
        assert_eq!(k, vec![(1, vec!["within"]), (2, vec!["within"])]);
        // Months step like Go's AddDate: Mar 31 - 1 month = Mar 3.
        let c = within_cutoff(
            t("2021-03-31T05:00:00Z"),
            &KeepRules { within: Within { months: 1, ..Default::default() }, ..Default::default() },
        );
        assert_eq!(c, Some(t("2021-03-03T05:00:00Z")));
        // A span longer than the calendar keeps everything.
        let huge = KeepRules { within: Within { years: 999_999, ..Default::default() }, ..Default::default() };
        assert_eq!(kept(&it, huge).len(), 3);
    }

    #[test]
    fn the_only_verified_copy_is_kept() {
        let mut it = items(&["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]);
        it[2].verified = false;
        it[1].verified = false;
        let k = kept(&it, KeepRules { last: 1, ..Default::default() });
        assert_eq!(k, vec![(0, vec!["only-verified"]), (2, vec!["last"])]);
        it[1].verified = true;
        let k = kept(&it, KeepRules { last: 1, ..Default::default() });
        assert_eq!(k, vec![(1, vec!["only-verified"]), (2, vec!["last"])]);
    }

    #[test]
    fn rules_that_keep_nothing_are_refused() {
        let it = items(&["2026-01-01T00:00:00Z"]);
        let e = decide(&it, &KeepRules::default()).unwrap_err();
        assert!(e.to_string().contains("keep nothing"), "{e}");
    }
}
