//! [`Notifier`]: `raise` records, `flush` groups, rate-limits and sends.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tracing::{info, warn};

use crate::alert::Alert;
use crate::compose::{self, Notes, Outgoing};
use crate::config::{MailConfig, Settings};
use crate::error::NotifyError;
use crate::outbox::{Folded, Loaded, Outbox};
use crate::plan::{self, Item, add};
use crate::transport;

/// At most this many pending alert files are read by one flush (oldest
/// first); the rest wait for the next flush. Repeats are folded into
/// counters on every flush, so a flood shrinks instead of piling up.
const MAX_READ_PER_FLUSH: usize = 10_000;
/// How far ahead of the clock an alert may be dated (clock steps between
/// processes of one host are small; more is a caller bug).
pub const MAX_FUTURE: SignedDuration = SignedDuration::from_mins(5);
/// How long a flush waits for another process's flush to finish.
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Mails the transport accepted: 0 or 1 digest of alerts, plus 0 or 1
    /// mail of reports (never mixed with alerts).
    pub mails_sent: usize,
    /// Alerts removed from the outbox because a sent mail covers them (a
    /// section each, or counted in the section of their key). Without a
    /// `[mail]` section: alerts written to the log as a digest.
    pub alerts_sent: usize,
    /// Alerts removed without a section of their own: repeats counted for a
    /// later mail of their key, plus those in `alerts_dropped`.
    pub alerts_suppressed: usize,
    /// Of `alerts_suppressed`, the ones no mail will ever mention: an
    /// outage and its recovery both raised before the outage was mailed, a
    /// recovery of an outage never mailed, unreadable outbox files.
    pub alerts_dropped: usize,
    /// Alerts still in the outbox (waiting for `digest_delay`, their key's
    /// `min_interval`, the hourly cap, or a working transport).
    pub pending: usize,
    /// The earliest time a later flush may have something to send; `None`
    /// when nothing is pending. Lets a daemon schedule its next flush.
    pub next_due: Option<Timestamp>,
}

/// Records alerts durably and mails them to the administrators, grouped
/// and rate-limited (rules in the crate docs).
#[derive(Debug)]
pub struct Notifier {
    settings: Settings,
    outbox: Outbox,
}

impl Notifier {
    /// A notifier for `config` (`None`: alerts are recorded and logged,
    /// never mailed) with its outbox in `outbox_dir` (created if needed),
    /// for the client or node called `name` (the subjects' label unless
    /// `host_label` is set). A bad configuration is an error here, naming
    /// the field.
    pub fn new(config: Option<MailConfig>, outbox_dir: PathBuf, name: &str) -> Result<Notifier, NotifyError> {
        let settings = Settings::resolve(config.as_ref(), name)?;
        let outbox = Outbox::open(&outbox_dir)?;
        Ok(Notifier { settings, outbox })
    }

    /// Whether alerts are mailed (a `[mail]` section was given).
    pub fn mails_enabled(&self) -> bool {
        self.settings.delivery.is_some()
    }

    /// The label shown in subjects.
    pub fn host_label(&self) -> &str {
        &self.settings.host_label
    }

    /// The outbox directory.
    pub fn outbox_dir(&self) -> &Path {
        self.outbox.dir()
    }

    /// How many alerts wait in the outbox.
    pub fn pending(&self) -> Result<usize, NotifyError> {
        Ok(self.outbox.list(0)?.1)
    }

    /// Records `alert` durably (a synced file in the outbox) and logs it.
    /// Takes no lock and never touches the network, so it is safe in hooks
    /// and from many processes at once; [`Notifier::flush`] mails it.
    /// Refused only when the key is malformed (see [`Alert::key`]).
    ///
    /// An alert dated more than [`MAX_FUTURE`] ahead of this host's clock is
    /// re-dated to now: it could not ripen for a digest before then.
    pub fn raise(&self, alert: Alert) -> Result<(), NotifyError> {
        let mut alert = alert.sanitized()?;
        let wall = Timestamp::now();
        if alert.raised_at > add(wall, MAX_FUTURE) {
            warn!(key = %alert.key, raised_at = %alert.raised_at, "alert dated in the future; re-dated to now");
            alert.raised_at = wall;
        }
        self.outbox.write(&alert)?;
        let first_line = alert.body.lines().next().unwrap_or("");
        if alert.kind.is_warning() {
            warn!(kind = alert.kind.code(), key = %alert.key, token = alert.token(), raised_at = %alert.raised_at, detail = %first_line, "alert raised");
        } else {
            info!(kind = alert.kind.code(), key = %alert.key, token = alert.token(), raised_at = %alert.raised_at, detail = %first_line, "alert raised");
        }
        Ok(())
    }

    /// Groups the pending alerts, applies the rate limits, and sends at
    /// most one mail (a digest of everything that may go now). Alerts leave
    /// the outbox only after the transport accepted the mail; a transport
    /// failure returns [`NotifyError::Transport`] and keeps them all.
    ///
    /// `now` is the time the rules are evaluated at (pass
    /// `Timestamp::now()`); the `Date` header is always the real time.
    pub fn flush(&self, now: Timestamp) -> Result<FlushReport, NotifyError> {
        let delivery = self.settings.delivery.clone();
        self.flush_with(now, &mut |out: &Outgoing| match &delivery {
            Some(d) => transport::send(d, out),
            None => {
                for e in &out.entries {
                    if e.kind.is_warning() {
                        warn!(kind = e.kind.code(), key = %e.key, token = %e.token, raised_at = %e.raised_at, repeats = e.repeats, "alert digest entry (no [mail] configured)");
                    } else {
                        info!(kind = e.kind.code(), key = %e.key, token = %e.token, raised_at = %e.raised_at, repeats = e.repeats, "alert digest entry (no [mail] configured)");
                    }
                }
                Ok(())
            }
        })
    }

    /// [`Notifier::flush`] with the delivery step supplied by the caller
    /// (tests observe or fail it).
    pub(crate) fn flush_with(
        &self,
        now: Timestamp,
        deliver: &mut dyn FnMut(&Outgoing) -> Result<(), String>,
    ) -> Result<FlushReport, NotifyError> {
        let _lock = ferry_durable::Lock::acquire_timeout(&self.outbox.lock_path(), LOCK_WAIT)?;
        let rules = self.settings.rules;
        let mut ledger = self.outbox.load_ledger()?;
        let ledger_before = ledger.clone();
        let mut report = FlushReport::default();

        let (names, total) = self.outbox.list(MAX_READ_PER_FLUSH)?;
        let unread = total - names.len();
        let mut loaded: Vec<Loaded> = Vec::with_capacity(names.len());
        let mut unreadable: Vec<String> = Vec::new();
        for name in names {
            match self.outbox.load(&name)? {
                Some(alert) => loaded.push(Loaded { name, alert }),
                None => {
                    warn!(file = %name, "unreadable alert file in the notify outbox; removed");
                    unreadable.push(name);
                }
            }
        }

        let p = plan::plan(&loaded, &ledger, &rules, now);
        let mut remove: Vec<&str> = unreadable.iter().map(String::as_str).collect();
        report.alerts_dropped += unreadable.len() + p.dropped.len();
        remove.extend(p.dropped.iter().map(|&i| loaded[i].name.as_str()));
        for (key, outage) in &p.cancelled {
            if let Some(ks) = ledger.keys.get_mut(key) {
                ks.folded.remove(outage);
            }
        }
        for &i in &p.folds {
            fold(&mut ledger, &loaded[i], loaded[i].alert.kind);
            remove.push(&loaded[i].name);
        }
        report.alerts_suppressed += p.folds.len();

        // Candidates: items min_interval allows now. Alerts and reports go
        // in separate mails (a report is news, not one more alert in a
        // digest); within each, a mail goes out when at least one of its
        // items has waited digest_delay, and the others ride along.
        let candidates: Vec<&Item> = p.items.iter().filter(|i| i.eligible_at.is_none_or(|t| t <= now)).collect();
        let ripe_at = |i: &Item| add(loaded[i.rep].alert.raised_at, rules.digest_delay);
        let hour_ago = add(now, -SignedDuration::from_hours(1));
        let mut in_hour: Vec<Timestamp> = ledger.mails.iter().copied().filter(|&t| t > hour_ago).collect();
        in_hour.sort();
        // When the mail that must leave the window before another is
        // allowed does so.
        let cap_free_at = |in_hour: &[Timestamp], n_allowed: usize| -> Option<Timestamp> {
            in_hour
                .len()
                .checked_sub(n_allowed)
                .and_then(|k| in_hour.get(k))
                .map(|&t| add(t, SignedDuration::from_hours(1)))
        };
        let is_capped = |in_hour: &[Timestamp]| rules.max_per_hour.is_some_and(|max| in_hour.len() >= max as usize);

        let mut sent: Vec<&Item> = Vec::new();
        let mut transport_error: Option<String> = None;
        let mut held = false;
        let held_before = ledger.cap_held_since;
        let (reports, alerts): (Vec<&Item>, Vec<&Item>) = candidates.iter().partition(|i| i.kind.is_report());
        for batch in [alerts, reports] {
            if batch.is_empty() || !batch.iter().any(|i| ripe_at(i) <= now) || transport_error.is_some() {
                continue;
            }
            if is_capped(&in_hour) {
                held = true;
                continue;
            }
            let notes = Notes {
                held_since: held_before,
                last_slot: rules.max_per_hour.and_then(|max| {
                    (in_hour.len() + 1 == max as usize).then(|| {
                        let next = cap_free_at(&in_hour, max as usize - 1);
                        (max, next.unwrap_or(add(now, SignedDuration::from_hours(1))))
                    })
                }),
            };
            let mut ordered = batch;
            ordered.sort_by(|a, b| {
                (a.kind, loaded[a.rep].alert.raised_at, &a.key).cmp(&(b.kind, loaded[b.rep].alert.raised_at, &b.key))
            });
            let out = compose::compose(&ordered, &loaded, &ledger, &self.settings.host_label, &rules, &notes, now);
            match deliver(&out) {
                Ok(()) => {
                    info!(subject = %out.subject, alerts = out.entries.len(), mailed = self.mails_enabled(), "alert digest delivered");
                    if self.mails_enabled() {
                        report.mails_sent += 1;
                        ledger.mails.push(now);
                        in_hour.push(now);
                        in_hour.sort();
                    }
                    sent.extend(ordered);
                }
                Err(reason) => transport_error = Some(reason),
            }
        }
        if held {
            ledger.cap_held_since.get_or_insert(now);
        } else if !sent.is_empty() {
            ledger.cap_held_since = None;
        }
        let capped = is_capped(&in_hour);

        if !sent.is_empty() {
            // Per key in the order raised, so recovery-then-new-outage ends
            // with the outage open.
            let mut by_time = sent.clone();
            by_time.sort_by_key(|i| (loaded[i.rep].alert.raised_at, loaded[i.rep].name.as_str()));
            for item in &by_time {
                let ks = ledger.keys.entry(item.key.clone()).or_default();
                plan::record_sent(ks, item, loaded[item.rep].alert.raised_at, now);
                remove.push(&loaded[item.rep].name);
                remove.extend(item.dups.iter().map(|&d| loaded[d].name.as_str()));
                report.alerts_sent += 1 + item.dups.len();
            }
        }
        // Items that stay: keep the representative, count the repeats.
        let mut next_due: Option<Timestamp> = None;
        let mut due = |t: Timestamp| next_due = Some(next_due.map_or(t, |n: Timestamp| n.min(t)));
        let sent_reps: HashSet<usize> = sent.iter().map(|i| i.rep).collect();
        for item in p.items.iter().filter(|i| !sent_reps.contains(&i.rep)) {
            for &d in &item.dups {
                fold(&mut ledger, &loaded[d], item.kind);
                remove.push(&loaded[d].name);
            }
            report.alerts_suppressed += item.dups.len();
            let mut t = ripe_at(item).max(item.eligible_at.unwrap_or(now));
            if transport_error.is_some() {
                t = now;
            } else if capped {
                t = t.max(cap_free_at(&in_hour, rules.max_per_hour.unwrap_or(1) as usize).unwrap_or(now));
            }
            due(t);
        }
        if unread > 0 {
            due(now);
        }
        report.alerts_suppressed += report.alerts_dropped;

        plan::prune(&mut ledger, &rules, now);
        // Ledger first, then the files: a crash between the two only makes
        // the same alerts come back as repeats of a key just mailed
        // (counted, not mailed again). A crash between delivery and this
        // point can send one digest twice: delivery is at-least-once.
        if ledger != ledger_before {
            self.outbox.save_ledger(&ledger)?;
        }
        self.outbox.remove(&remove)?;

        report.pending = total - remove.len();
        report.next_due = if report.pending > 0 { next_due } else { None };
        if let Some(reason) = transport_error {
            warn!(pending = report.pending, reason = %reason, "alert mail not delivered; kept for the next flush");
            return Err(NotifyError::Transport { reason, pending: report.pending });
        }
        Ok(report)
    }
}

/// Counts one alert into its key's counter for `kind` and forgets the file.
fn fold(ledger: &mut crate::outbox::Ledger, l: &Loaded, kind: crate::alert::Kind) {
    let ks = ledger.keys.entry(l.alert.key.clone()).or_default();
    let mut f = ks.folded.get(&kind).copied();
    Folded::add(&mut f, 1, l.alert.raised_at, l.alert.raised_at);
    if let Some(f) = f {
        ks.folded.insert(kind, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Kind;
    use crate::outbox::tests::TempDir;

    /// A base time safely in the past, so `raise` never re-dates test alerts.
    fn t0() -> Timestamp {
        static T0: std::sync::OnceLock<Timestamp> = std::sync::OnceLock::new();
        *T0.get_or_init(|| {
            let t = add(Timestamp::now(), -SignedDuration::from_hours(72));
            Timestamp::from_second(t.as_second()).unwrap()
        })
    }

    fn t(min: i64) -> Timestamp {
        add(t0(), SignedDuration::from_mins(min))
    }

    fn cfg() -> MailConfig {
        let mut c = MailConfig::new(vec!["admins@example.org".into()], "ferry@node1.example.org");
        c.smtp = Some("smtp://127.0.0.1:9".into());
        c.host_label = Some("node1".into());
        c
    }

    struct Fixture {
        _dir: TempDir,
        n: Notifier,
        mails: Vec<Outgoing>,
        fail: bool,
    }

    impl Fixture {
        fn new(c: Option<MailConfig>) -> Fixture {
            let dir = TempDir::new("notifier");
            let n = Notifier::new(c, dir.0.join("outbox"), "node1").unwrap();
            Fixture { _dir: dir, n, mails: Vec::new(), fail: false }
        }

        fn raise(&self, kind: Kind, key: &str, token: &str, min: i64) {
            self.n.raise(Alert::new(kind, key, token, format!("{} for {key}", kind.title())).at(t(min))).unwrap();
        }

        /// Flushes at `min`; returns the report and the mail, if one went.
        fn flush(&mut self, min: i64) -> (FlushReport, Option<Outgoing>) {
            let before = self.mails.len();
            let fail = self.fail;
            let mails = &mut self.mails;
            let r = self.n.flush_with(t(min), &mut |o: &Outgoing| {
                if fail {
                    return Err("connection refused".into());
                }
                mails.push(o.clone());
                Ok(())
            });
            let r = match r {
                Ok(r) => r,
                Err(NotifyError::Transport { pending, .. }) => FlushReport { pending, ..FlushReport::default() },
                Err(e) => panic!("{e}"),
            };
            (r, self.mails.get(before).cloned())
        }
    }

    #[test]
    fn a_burst_of_600_alerts_is_one_digest() {
        let mut f = Fixture::new(Some(cfg()));
        for i in 0..300 {
            let c = format!("client-{i:03}");
            f.raise(Kind::RequestFailed, &format!("client:{c}:E_FETCH_AUTH"), &c, 0);
            f.raise(Kind::PullFailing, &format!("pull:{c}"), &c, 0);
        }
        let (r, mail) = f.flush(1);
        let mail = mail.unwrap();
        assert_eq!(r, FlushReport { mails_sent: 1, alerts_sent: 600, pending: 0, ..FlushReport::default() }, "{:?}", r);
        assert_eq!(mail.subject, "[ferry node1] 600 alerts: REQUEST_FAILED (300), PULL_FAILING (300)");
        assert!(mail.body.len() <= compose::MAX_MAIL_BODY);
        assert_eq!(f.flush(2).1.map(|m| m.subject), None, "nothing left");
    }

    #[test]
    fn digest_delay_gathers_a_burst() {
        let mut f = Fixture::new(Some(cfg()));
        f.raise(Kind::NodeUnreachable, "node:b1", "b1", 0);
        let (r, mail) = f.flush(0);
        assert!(mail.is_none());
        assert_eq!((r.pending, r.next_due), (1, Some(t(1))));
        f.raise(Kind::DiskFull, "disk:/srv", "node1", 0);
        let (r, mail) = f.flush(1);
        assert_eq!(mail.unwrap().subject, "[ferry node1] 2 alerts: NODE_UNREACHABLE (1), DISK_FULL (1)");
        assert_eq!((r.mails_sent, r.alerts_sent, r.pending, r.next_due), (1, 2, 0, None));
    }

    #[test]
    fn zero_digest_delay_mails_at_once() {
        let mut c = cfg();
        c.digest_delay = "0s".into();
        let mut f = Fixture::new(Some(c));
        f.raise(Kind::DiskFull, "disk:/srv", "node1", 0);
        assert_eq!(f.flush(0).1.unwrap().subject, "[ferry node1] DISK_FULL: node1");
    }

    #[test]
    fn min_interval_defers_a_key_and_counts_its_repeats() {
        let mut f = Fixture::new(Some(cfg()));
        f.raise(Kind::RequestFailed, "client:a:E_X", "a", 0);
        f.raise(Kind::RequestFailed, "client:a:E_X", "a", 0);
        let (r, m) = f.flush(1);
        assert_eq!((r.mails_sent, r.alerts_sent), (1, 2));
        assert!(m.unwrap().body.contains("Raised 1 more time until"));
        // Ten minutes later: the same key again (three times) and a new one.
        for min in [10, 11, 12] {
            f.raise(Kind::RequestFailed, "client:a:E_X", "a", min);
        }
        f.raise(Kind::RequestFailed, "client:b:E_X", "b", 10);
        let (r, m) = f.flush(15);
        assert_eq!(m.unwrap().subject, "[ferry node1] REQUEST_FAILED: b", "only the new key");
        assert_eq!((r.alerts_sent, r.alerts_suppressed, r.pending), (1, 2, 1));
        assert_eq!(r.next_due, Some(t(61)), "key a may be mailed again one hour after its mail");
        // Still within the hour: nothing.
        let (r, m) = f.flush(30);
        assert!(m.is_none());
        assert_eq!(r.pending, 1);
        // After the hour: key a, with its repeats counted.
        let (r, m) = f.flush(61);
        let m = m.unwrap();
        assert_eq!(m.subject, "[ferry node1] REQUEST_FAILED: a");
        assert!(m.body.contains(&format!("[client:a:E_X] raised {}", compose::ts(t(10)))), "{}", m.body);
        assert!(m.body.contains(&format!("Raised 2 more times until {}", compose::ts(t(12)))), "{}", m.body);
        assert_eq!((r.alerts_sent, r.pending), (1, 0));
    }

    #[test]
    fn recovery_of_a_mailed_outage_is_mailed_at_once() {
        let mut f = Fixture::new(Some(cfg()));
        f.raise(Kind::NodeUnreachable, "node:b1", "b1", 0);
        assert_eq!(f.flush(1).1.unwrap().subject, "[ferry node1] NODE_UNREACHABLE: b1");
        f.raise(Kind::NodeUnreachable, "node:b1", "b1", 3);
        f.raise(Kind::NodeRecovered, "node:b1", "b1", 5);
        let (r, m) = f.flush(6);
        let m = m.unwrap();
        assert_eq!(m.subject, "[ferry node1] NODE_RECOVERED: b1");
        assert!(m.body.contains("it lasted 5m."), "{}", m.body);
        assert!(m.body.contains("NODE_UNREACHABLE was raised 1 more time while it lasted"), "{}", m.body);
        assert_eq!((r.alerts_sent, r.alerts_suppressed, r.pending), (1, 1, 0));
        // A second recovery has nothing to recover.
        f.raise(Kind::NodeRecovered, "node:b1", "b1", 7);
        let (r, m) = f.flush(9);
        assert!(m.is_none());
        assert_eq!((r.alerts_dropped, r.pending), (1, 0));
    }

    #[test]
    fn short_outage_never_mailed_is_dropped_with_its_recovery() {
        let mut f = Fixture::new(Some(cfg()));
        f.raise(Kind::NodeUnreachable, "node:b1", "b1", 0);
        f.raise(Kind::NodeRecovered, "node:b1", "b1", 3);
        f.raise(Kind::ClientBack, "client:c", "c", 3);
        let (r, m) = f.flush(5);
        assert!(m.is_none());
        assert_eq!((r.alerts_sent, r.alerts_dropped, r.alerts_suppressed, r.pending), (0, 3, 3, 0));
    }

    #[test]
    fn outage_deferred_by_min_interval_then_recovered_is_dropped() {
        let mut f = Fixture::new(Some(cfg()));
        f.raise(Kind::PullFailing, "pull:a", "a", 0);
        f.flush(1);
        f.raise(Kind::PullRecovered, "pull:a", "a", 5);
        assert_eq!(f.flush(6).1.unwrap().subject, "[ferry node1] PULL_RECOVERED: a");
        // It fails again 10 minutes later: within min_interval, so it waits.
        f.raise(Kind::PullFailing, "pull:a", "a", 15);
        let (r, m) = f.flush(20);
        assert!(m.is_none());
        assert_eq!(r.pending, 1);
        // ... and recovers before it could be mailed: both gone, no mail.
        f.raise(Kind::PullRecovered, "pull:a", "a", 30);
        let (r, m) = f.flush(70);
        assert!(m.is_none());
        assert_eq!((r.alerts_dropped, r.pending), (2, 0));
    }

    #[test]
    fn open_outage_is_reminded_once_a_day() {
        let mut f = Fixture::new(Some(cfg()));
        f.raise(Kind::PullFailing, "pull:a", "a", 0);
        f.flush(1);
        for h in 1..=30 {
            f.raise(Kind::PullFailing, "pull:a", "a", h * 60);
            let (_, m) = f.flush(h * 60 + 1);
            if h == 24 {
                let m = m.unwrap();
                assert_eq!(m.subject, "[ferry node1] PULL_FAILING: a");
                assert!(m.body.contains("Reminder: still open since"), "{}", m.body);
                assert!(m.body.contains("Raised 23 more times until"), "{}", m.body);
            } else {
                assert!(m.is_none(), "hour {h}");
            }
        }
        f.raise(Kind::PullRecovered, "pull:a", "a", 31 * 60);
        let m = f.flush(31 * 60 + 1).1.unwrap();
        assert!(m.body.contains("PULL_FAILING was raised 6 more times while it lasted"), "{}", m.body);
        assert!(m.body.contains("it lasted 1d7h."), "{}", m.body);
    }

    #[test]
    fn hourly_cap_holds_mail_without_dropping_it() {
        let mut c = cfg();
        c.max_per_hour = 2;
        c.digest_delay = "0s".into();
        let mut f = Fixture::new(Some(c));
        f.raise(Kind::DiskFull, "disk:a", "node1", 0);
        assert!(f.flush(0).1.is_some());
        f.raise(Kind::DiskFull, "disk:b", "node1", 10);
        let m = f.flush(10).1.unwrap();
        assert!(m.body.contains("This is the last of 2 mails allowed per hour"), "{}", m.body);
        assert!(m.body.contains(&format!("at the earliest {}", compose::ts(t(60)))), "{}", m.body);
        for (i, min) in [20, 30, 40].into_iter().enumerate() {
            f.raise(Kind::RequestFailed, &format!("client:c{i}:E_X"), &format!("c{i}"), min);
            let (r, m) = f.flush(min);
            assert!(m.is_none());
            assert_eq!((r.pending, r.next_due), (i + 1, Some(t(60))));
        }
        let (r, m) = f.flush(60);
        let m = m.unwrap();
        assert_eq!(m.subject, "[ferry node1] 3 alerts: REQUEST_FAILED (3)");
        assert!(m.body.contains(&format!("held these alerts back since {}", compose::ts(t(20)))), "{}", m.body);
        assert_eq!((r.mails_sent, r.alerts_sent, r.pending), (1, 3, 0));
    }

    #[test]
    fn transport_failure_keeps_alerts_for_the_next_flush() {
        let mut f = Fixture::new(Some(cfg()));
        f.raise(Kind::NodeUnreachable, "node:b1", "b1", 0);
        f.raise(Kind::NodeUnreachable, "node:b1", "b1", 0);
        f.raise(Kind::RequestFailed, "client:a:E_X", "a", 0);
        f.fail = true;
        let e = f.n.flush_with(t(1), &mut |_| Err("smtp://127.0.0.1:9: connection refused".into())).unwrap_err();
        assert!(
            matches!(&e, NotifyError::Transport { pending: 2, reason } if reason.contains("refused")),
            "the duplicate is counted, the rest kept: {e}"
        );
        let (r, m) = f.flush(2);
        assert!(m.is_none());
        assert_eq!(r.pending, 2);
        f.fail = false;
        let (r, m) = f.flush(3);
        let m = m.unwrap();
        assert_eq!(m.subject, "[ferry node1] 2 alerts: NODE_UNREACHABLE (1), REQUEST_FAILED (1)");
        assert!(m.body.contains("Raised 1 more time until"), "{}", m.body);
        assert_eq!((r.mails_sent, r.alerts_sent, r.pending), (1, 2, 0));
    }

    /// A gc report is its own kind of mail: never one more section of an
    /// alert digest, its own subject, no alert wording.
    #[test]
    fn reports_go_in_a_mail_of_their_own() {
        let mut f = Fixture::new(Some(cfg()));
        f.raise(Kind::RequestFailed, "client:a:E_X", "a", 0);
        f.raise(Kind::PullFailing, "pull:a", "a", 0);
        f.n.raise(Alert::new(Kind::GcReport, "gc", "node1", "git gc on node node1: 2 mirrors, 0 failed.").at(t(0)))
            .unwrap();
        let before = f.mails.len();
        let (r, _) = f.flush(1);
        let mails = &f.mails[before..];
        let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
        assert_eq!(
            subjects,
            ["[ferry node1] 2 alerts: REQUEST_FAILED (1), PULL_FAILING (1)", "[ferry node1] GC_REPORT: node1"],
            "alerts in one digest, the report alone"
        );
        assert_eq!((r.mails_sent, r.alerts_sent, r.pending), (2, 3, 0));
        let report = &mails[1].body;
        assert!(report.starts_with("Ferry on node1: 1 report, "), "{report}");
        assert!(report.contains("== GC_REPORT (1): git gc report =="), "{report}");
        assert!(report.contains("git gc on node node1: 2 mirrors, 0 failed."), "{report}");
        assert!(!report.contains("alert"), "a report is not worded as an alert: {report}");
        // Alone, a report is still mailed on its own.
        f.n.raise(Alert::new(Kind::GcReport, "gc", "node1", "second run").at(t(120))).unwrap();
        assert_eq!(f.flush(121).1.unwrap().subject, "[ferry node1] GC_REPORT: node1");
    }

    /// The hourly cap counts report mails too, and holds them like alerts.
    #[test]
    fn reports_respect_the_hourly_cap() {
        let mut c = cfg();
        c.max_per_hour = 1;
        let mut f = Fixture::new(Some(c));
        f.raise(Kind::DiskFull, "disk:/srv", "node1", 0);
        f.n.raise(Alert::new(Kind::GcReport, "gc", "node1", "report").at(t(0))).unwrap();
        let (r, m) = f.flush(1);
        assert_eq!(m.unwrap().subject, "[ferry node1] DISK_FULL: node1");
        assert_eq!((r.mails_sent, r.pending, r.next_due), (1, 1, Some(t(61))));
        let (r, m) = f.flush(61);
        assert_eq!(m.unwrap().subject, "[ferry node1] GC_REPORT: node1");
        assert_eq!((r.mails_sent, r.pending), (1, 0));
    }

    #[test]
    fn log_only_applies_the_same_rules() {
        let f = Fixture::new(None);
        assert!(!f.n.mails_enabled());
        f.raise(Kind::RequestFailed, "client:a:E_X", "a", 0);
        f.raise(Kind::RequestFailed, "client:a:E_X", "a", 0);
        let r = f.n.flush(t(1)).unwrap();
        assert_eq!((r.mails_sent, r.alerts_sent, r.pending), (0, 2, 0));
        f.raise(Kind::RequestFailed, "client:a:E_X", "a", 5);
        let r = f.n.flush(t(10)).unwrap();
        assert_eq!((r.alerts_sent, r.pending), (0, 1), "rate limit applies to the log too");
    }

    #[test]
    fn unreadable_files_are_dropped_and_counted() {
        let mut f = Fixture::new(Some(cfg()));
        std::fs::write(f.n.outbox_dir().join("pending/00000000000000000001-1-1.json"), "{").unwrap();
        let (r, m) = f.flush(0);
        assert!(m.is_none());
        assert_eq!((r.alerts_dropped, r.pending), (1, 0));
    }

    #[test]
    fn bad_keys_are_refused_and_future_dates_clamped() {
        let f = Fixture::new(Some(cfg()));
        assert!(matches!(f.n.raise(Alert::new(Kind::Other, "a\r\nb", "t", "b")), Err(NotifyError::InvalidAlert(_))));
        let far = add(Timestamp::now(), SignedDuration::from_hours(48));
        f.n.raise(Alert::new(Kind::Other, "k", "t", "b").at(far)).unwrap();
        let (names, _) = f.n.outbox.list(10).unwrap();
        let a = f.n.outbox.load(&names[0]).unwrap().unwrap();
        assert!(a.raised_at <= Timestamp::now());
        assert_eq!(f.n.pending().unwrap(), 1);
    }

    #[test]
    fn concurrent_raises_and_flushes_lose_nothing() {
        let mut c = cfg();
        c.min_interval = "0s".into();
        c.digest_delay = "0s".into();
        c.max_per_hour = 1000;
        let f = Fixture::new(Some(c));
        let n = &f.n;
        let counted = std::sync::Mutex::new((0usize, 0usize));
        std::thread::scope(|s| {
            for w in 0..4 {
                s.spawn(move || {
                    for i in 0..50 {
                        let key = format!("client:w{w}:E_{}", i % 7);
                        n.raise(Alert::new(Kind::RequestFailed, key, format!("w{w}"), "x").at(t(0))).unwrap();
                    }
                });
            }
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let r = n.flush_with(t(1), &mut |_| Ok(())).unwrap();
                        let mut c = counted.lock().unwrap();
                        c.0 += r.alerts_sent;
                        c.1 += r.alerts_suppressed;
                    }
                });
            }
        });
        let r = n.flush_with(t(1), &mut |_| Ok(())).unwrap();
        let c = counted.lock().unwrap();
        assert_eq!(r.pending, 0);
        assert_eq!(c.0 + c.1 + r.alerts_sent + r.alerts_suppressed, 200, "{c:?} {r:?}");
        assert_eq!(r.alerts_dropped, 0);
    }
}
