//! Expected cadence (issue 12): is every source the administrators declared
//! (`sources = www:1d …` in gitosis.conf) arriving on time and at its usual
//! size? Pure functions over the catalog's rows and node time, so every
//! verdict is tested with fixed times instead of waiting for days.
//!
//! * **late** — nothing verified arrived within the cadence plus the grace;
//! * **small** — the newest artifact is under `small_ratio` of the median
//!   of the `small_window` before it (judged once there are two before it);
//! * **missing** — declared and never seen;
//! * **unexpected** — stored, but nobody declared it (only for clients
//!   that declare their sources at all).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use ferry_gitosis::enroll::{Cadence, Expected};

/// The rules of `[check]` that the verdicts use.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub grace_secs: u64,
    pub small_ratio: f64,
    pub small_window: usize,
}

/// What a source looks like from the node's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Late,
    Small,
    Missing,
    Unexpected,
}

impl Verdict {
    /// A problem worth a mail (unexpected sources are reported, not mailed
    /// as overdue: they are stored).
    pub fn is_problem(self) -> bool {
        matches!(self, Verdict::Late | Verdict::Small | Verdict::Missing)
    }

    pub fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Late => "late",
            Verdict::Small => "small",
            Verdict::Missing => "missing",
            Verdict::Unexpected => "unexpected",
        }
    }
}

/// One arrival of a source: a catalog row, or a mirror's last fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub at: Timestamp,
    /// Bytes (None for a git fetch, which has no size to compare).
    pub size: Option<u64>,
}

/// The judgement on one source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judged {
    pub source: String,
    /// `1d`, `push`, or `None` when undeclared.
    pub cadence: Option<String>,
    pub verdict: Verdict,
    /// One sentence for people (mail, page, `check`).
    pub detail: String,
    pub last_arrival: Option<Timestamp>,
}

/// Judges one source from its arrivals (any order).
pub fn judge(source: &str, cadence: Option<Cadence>, arrivals: &[Arrival], now: Timestamp, rules: &Rules) -> Judged {
    let mut sorted: Vec<&Arrival> = arrivals.iter().collect();
    sorted.sort_by_key(|a| a.at);
    let last = sorted.last().map(|a| a.at);
    let (verdict, detail) = match (cadence, last) {
        (None, _) => (Verdict::Unexpected, format!("{source} arrives but is not declared in gitosis.conf 'sources'")),
        (Some(_), None) => (Verdict::Missing, format!("{source} is declared but never arrived")),
        (Some(c), Some(last)) => {
            let age = now.duration_since(last).as_secs().max(0) as u64;
            match c.secs() {
                Some(every) if age > every.saturating_add(rules.grace_secs) => (
                    Verdict::Late,
                    format!(
                        "{source} is late: last arrival {} ago at {last}, expected every {}",
                        human(age),
                        c.spelling()
                    ),
                ),
                _ => match small(&sorted, rules) {
                    Some((size, median)) => (
                        Verdict::Small,
                        format!(
                            "{source} is small: newest artifact {size} bytes, median of the previous ones {median} bytes"
                        ),
                    ),
                    None => (Verdict::Ok, format!("{source} is on time")),
                },
            }
        }
    };
    Judged { source: source.to_owned(), cadence: cadence.map(Cadence::spelling), verdict, detail, last_arrival: last }
}

/// `(newest size, median)` when the newest sized arrival is under the
/// ratio of the median of the window before it.
fn small(sorted: &[&Arrival], rules: &Rules) -> Option<(u64, u64)> {
    let sized: Vec<u64> = sorted.iter().filter_map(|a| a.size).collect();
    let (&newest, before) = sized.split_last()?;
    let window: Vec<u64> = before.iter().rev().take(rules.small_window.max(1)).copied().collect();
    if window.len() < 2 {
        return None;
    }
    let mut w = window;
    w.sort_unstable();
    let median = if w.len() % 2 == 1 { w[w.len() / 2] } else { (w[w.len() / 2 - 1] + w[w.len() / 2]) / 2 };
    ((newest as f64) < rules.small_ratio * median as f64).then_some((newest, median))
}

/// Judges every declared source and every stored undeclared one of a
/// client. `arrivals_of(source)` gives a source's arrivals; `stored` the
/// names the node holds for the client. Declared first (in declaration
/// order), then the unexpected ones sorted.
pub fn judge_client(
    expected: &[Expected],
    stored: &[String],
    arrivals_of: &dyn Fn(&str) -> Vec<Arrival>,
    now: Timestamp,
    rules: &Rules,
) -> Vec<Judged> {
    let mut out: Vec<Judged> = expected
        .iter()
        .map(|e| judge(e.source.as_str(), Some(e.cadence), &arrivals_of(e.source.as_str()), now, rules))
        .collect();
    if !expected.is_empty() {
        let mut extra: Vec<&String> =
            stored.iter().filter(|s| !expected.iter().any(|e| e.source.as_str() == s.as_str())).collect();
        extra.sort();
        extra.dedup();
        out.extend(extra.into_iter().map(|s| judge(s, None, &arrivals_of(s), now, rules)));
    }
    out
}

/// `3d 4h`, `5h 2m`, `40s`: an age for people.
pub fn human(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules { grace_secs: 3600, small_ratio: 0.5, small_window: 5 };

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn at(s: &str, size: u64) -> Arrival {
        Arrival { at: t(s), size: Some(size) }
    }

    #[test]
    fn on_time_late_and_the_grace() {
        let a = [at("2026-12-01T03:00:00Z", 100), at("2026-12-02T03:00:00Z", 100)];
        let day = Some(Cadence::Every(86_400));
        assert_eq!(judge("www", day, &a, t("2026-12-03T03:59:59Z"), &RULES).verdict, Verdict::Ok);
        assert_eq!(judge("www", day, &a, t("2026-12-03T04:00:00Z"), &RULES).verdict, Verdict::Ok);
        let late = judge("www", day, &a, t("2026-12-03T04:00:01Z"), &RULES);
        assert_eq!(late.verdict, Verdict::Late);
        assert!(late.detail.contains("last arrival 1d 1h ago at 2026-12-02T03:00:00Z, expected every 1d"), "{late:?}");
        assert_eq!(late.last_arrival, Some(t("2026-12-02T03:00:00Z")));
    }

    #[test]
    fn push_sources_are_never_late_only_missing() {
        let old = [Arrival { at: t("2020-01-01T00:00:00Z"), size: None }];
        assert_eq!(judge("code", Some(Cadence::Push), &old, t("2026-12-03T00:00:00Z"), &RULES).verdict, Verdict::Ok);
        assert_eq!(
            judge("code", Some(Cadence::Push), &[], t("2026-12-03T00:00:00Z"), &RULES).verdict,
            Verdict::Missing
        );
    }

    #[test]
    fn small_against_the_median_of_the_window() {
        let now = t("2026-12-10T04:00:00Z");
        let day = Some(Cadence::Every(86_400));
        let mut a: Vec<Arrival> = [1000, 1000, 10, 1000, 1000, 1000]
            .iter()
            .enumerate()
            .map(|(i, &s)| at(&format!("2026-12-0{}T03:00:00Z", i + 1), s))
            .collect();
        a.push(at("2026-12-10T03:00:00Z", 499));
        let j = judge("www", day, &a, now, &RULES);
        assert_eq!(j.verdict, Verdict::Small, "{j:?}");
        assert!(j.detail.contains("499 bytes, median of the previous ones 1000 bytes"), "{j:?}");
        a.last_mut().unwrap().size = Some(500);
        assert_eq!(judge("www", day, &a, now, &RULES).verdict, Verdict::Ok);
        // One earlier artifact is not enough to call anything small.
        let two = [at("2026-12-09T03:00:00Z", 1000), at("2026-12-10T03:00:00Z", 1)];
        assert_eq!(judge("www", day, &two, now, &RULES).verdict, Verdict::Ok);
        // Late wins over small.
        assert_eq!(judge("www", day, &a, t("2026-12-12T00:00:00Z"), &RULES).verdict, Verdict::Late);
    }

    #[test]
    fn missing_and_unexpected_per_client() {
        let exp = ferry_gitosis::enroll::expect::parse_sources("www:1d shop:6h").unwrap();
        let stored = vec!["www".to_string(), "extra".to_string()];
        let arr = |s: &str| if s == "www" || s == "extra" { vec![at("2026-12-03T00:00:00Z", 5)] } else { vec![] };
        let j = judge_client(&exp, &stored, &arr, t("2026-12-03T01:00:00Z"), &RULES);
        let v: Vec<(&str, Verdict)> = j.iter().map(|j| (j.source.as_str(), j.verdict)).collect();
        assert_eq!(v, [("www", Verdict::Ok), ("shop", Verdict::Missing), ("extra", Verdict::Unexpected)]);
        // A client that declares nothing is not judged.
        assert!(judge_client(&[], &stored, &arr, t("2026-12-03T01:00:00Z"), &RULES).is_empty());
    }
}
