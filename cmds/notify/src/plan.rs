//! The grouping rules as a pure function: pending alerts + ledger + now →
//! what to mail, what to count, what to drop. No I/O here, so every rule is
//! unit-tested without a mail server (see the crate docs for the rules in
//! prose).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use crate::alert::Kind;
use crate::config::Rules;
use crate::outbox::{KeyState, Ledger, Loaded, Open};

/// `t + d`, saturating instead of failing at the ends of time.
pub(crate) fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() { Timestamp::MIN } else { Timestamp::MAX })
}

/// Why an item is in a mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// First mail for this key and kind since `min_interval`.
    New,
    /// The outage is still open and `remind_interval` has passed.
    Reminder(Open),
    /// The end of an outage that was mailed.
    Recovery(Open),
}

/// One mail section: a representative alert (the earliest) and the other
/// pending alerts of the same key and kind that it stands for.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub key: String,
    pub kind: Kind,
    /// Index of the representative alert in the loaded list.
    pub rep: usize,
    /// Indexes of later alerts of the same key and kind in this batch.
    pub dups: Vec<usize>,
    pub role: Role,
    /// When `min_interval` lets this item be mailed; `None` means now.
    pub eligible_at: Option<Timestamp>,
}

/// The outcome of [`plan`].
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Items to mail now or later (see [`Item::eligible_at`]).
    pub items: Vec<Item>,
    /// Repeats of a mailed, still open outage: counted in the ledger
    /// (reported with the reminder or the recovery) and removed now.
    pub folds: Vec<usize>,
    /// Removed without a mail: an outage that recovered before it was
    /// mailed, together with its recovery, and recoveries of outages that
    /// were never mailed.
    pub dropped: Vec<usize>,
    /// (key, outage kind) whose counters die with a cancelled outage.
    pub cancelled: Vec<(String, Kind)>,
}

/// Applies the per-key rules to the pending alerts, in the order they were
/// raised. `ledger` is read only; the caller applies the outcome.
pub(crate) fn plan(loaded: &[Loaded], ledger: &Ledger, rules: &Rules, now: Timestamp) -> Plan {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in loaded.iter().enumerate() {
        by_key.entry(l.alert.key.as_str()).or_default().push(i);
    }
    let empty = KeyState::default();
    let mut out = Plan::default();
    for (key, mut idxs) in by_key {
        idxs.sort_by(|&a, &b| {
            (loaded[a].alert.raised_at, &loaded[a].name).cmp(&(loaded[b].alert.raised_at, &loaded[b].name))
        });
        let ks = ledger.keys.get(key).unwrap_or(&empty);
        // Outages of this key that were mailed and not yet recovered, as
        // this batch goes on (a recovery in the batch closes one).
        let mut open: BTreeMap<Kind, Open> = ks.open.iter().map(|(k, o)| (*k, o.clone())).collect();
        let mut held: Vec<Item> = Vec::new();
        let new_item = |i: usize, role: Role, eligible_at: Option<Timestamp>| Item {
            key: key.to_string(),
            kind: loaded[i].alert.kind,
            rep: i,
            dups: Vec::new(),
            role,
            eligible_at,
        };
        for i in idxs {
            let kind = loaded[i].alert.kind;
            if let Some(outage) = kind.recovers() {
                if let Some(op) = open.remove(&outage) {
                    // The outage was mailed: its recovery is mailed whatever
                    // min_interval says. A reminder held in this batch is
                    // covered by the recovery and only counted.
                    if let Some(pos) = held.iter().position(|h| h.kind == outage) {
                        let r = held.remove(pos);
                        out.folds.push(r.rep);
                        out.folds.extend(r.dups);
                    }
                    held.push(new_item(i, Role::Recovery(op), None));
                } else if let Some(pos) = held.iter().position(|h| h.kind == outage && h.role == Role::New) {
                    // Outage and recovery both before any mail: noise.
                    let h = held.remove(pos);
                    out.dropped.push(h.rep);
                    out.dropped.extend(h.dups);
                    out.dropped.push(i);
                    out.cancelled.push((key.to_string(), outage));
                } else if let Some(h) = held.iter_mut().find(|h| h.kind == kind) {
                    // The same recovery reported twice in this batch.
                    h.dups.push(i);
                } else {
                    // Recovery of an outage that was never mailed.
                    out.dropped.push(i);
                }
                continue;
            }
            if let Some(h) = held.iter_mut().find(|h| h.kind == kind) {
                h.dups.push(i);
                continue;
            }
            if let Some(op) = open.get(&kind) {
                // Still the same outage the administrators already know.
                let last = ks.last_mailed.map_or(op.mailed_at, |t| t.max(op.mailed_at));
                if add(last, rules.remind_interval) <= now {
                    held.push(new_item(i, Role::Reminder(op.clone()), None));
                } else {
                    out.folds.push(i);
                }
                continue;
            }
            let eligible_at = ks.last_mailed.map(|t| add(t, rules.min_interval)).filter(|&t| t > now);
            held.push(new_item(i, Role::New, eligible_at));
        }
        out.items.extend(held);
    }
    out
}

/// Updates `ks` for an item that was just mailed (or logged) at `now`.
pub(crate) fn record_sent(ks: &mut KeyState, item: &Item, raised_at: Timestamp, now: Timestamp) {
    ks.last_mailed = Some(now);
    ks.folded.remove(&item.kind);
    match &item.role {
        Role::New => {
            if item.kind.is_outage() {
                ks.open.insert(item.kind, Open { kind: item.kind, since: raised_at, mailed_at: now });
            }
        }
        Role::Reminder(_) => {}
        Role::Recovery(op) => {
            ks.open.remove(&op.kind);
            ks.folded.remove(&op.kind);
        }
    }
}

/// How long the ledger remembers a key nobody raised any more: an open
/// outage or a counter untouched this long is forgotten (a client that was
/// decommissioned mid-outage must not pin its entry forever).
const FORGET: SignedDuration = SignedDuration::from_hours(30 * 24);

/// Drops what no rule needs any more, so the ledger stays small.
pub(crate) fn prune(ledger: &mut Ledger, rules: &Rules, now: Timestamp) {
    let hour_ago = add(now, -SignedDuration::from_hours(1));
    ledger.mails.retain(|&t| t > hour_ago && t <= add(now, SignedDuration::from_hours(1)));
    let forget_before = add(now, -FORGET);
    for ks in ledger.keys.values_mut() {
        ks.folded.retain(|_, f| f.last > forget_before);
        let recent = ks.last_mailed.is_some_and(|t| t > forget_before);
        if !recent {
            ks.open.retain(|_, o| o.mailed_at > forget_before);
        }
    }
    ledger.keys.retain(|_, ks| {
        !ks.open.is_empty()
            || !ks.folded.is_empty()
            || ks.last_mailed.is_some_and(|t| add(t, rules.min_interval.max(rules.digest_delay)) > now)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Alert;

    fn t(min: i64) -> Timestamp {
        add("2026-11-22T10:00:00Z".parse().unwrap(), SignedDuration::from_mins(min))
    }

    fn rules() -> Rules {
        Rules {
            min_interval: SignedDuration::from_hours(1),
            digest_delay: SignedDuration::from_mins(1),
            remind_interval: SignedDuration::from_hours(24),
            max_per_hour: Some(20),
        }
    }

    fn la(kind: Kind, key: &str, min: i64) -> Loaded {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Loaded { name: format!("{n:020}-1-1.json"), alert: Alert::new(kind, key, "tok", "body").at(t(min)) }
    }

    fn mailed_outage(kind: Kind, at: i64) -> KeyState {
        let mut ks = KeyState { last_mailed: Some(t(at)), ..KeyState::default() };
        ks.open.insert(kind, Open { kind, since: t(at - 1), mailed_at: t(at) });
        ks
    }

    #[test]
    fn fresh_alerts_become_new_items_one_per_key_and_kind() {
        let l = vec![
            la(Kind::RequestFailed, "client:a:E_X", 0),
            la(Kind::RequestFailed, "client:a:E_X", 1),
            la(Kind::RequestFailed, "client:b:E_X", 0),
            la(Kind::DiskFull, "client:a:E_X", 2),
        ];
        let p = plan(&l, &Ledger::default(), &rules(), t(5));
        assert_eq!(p.items.len(), 3);
        let a = p.items.iter().find(|i| i.key == "client:a:E_X" && i.kind == Kind::RequestFailed).unwrap();
        assert_eq!((a.rep, a.dups.clone(), a.eligible_at), (0, vec![1], None));
        assert!(p.folds.is_empty() && p.dropped.is_empty());
    }

    #[test]
    fn key_mailed_recently_is_deferred_until_min_interval() {
        let mut ledger = Ledger::default();
        ledger.keys.insert("client:a:E_X".into(), KeyState { last_mailed: Some(t(0)), ..KeyState::default() });
        let l = vec![la(Kind::RequestFailed, "client:a:E_X", 10)];
        let p = plan(&l, &ledger, &rules(), t(11));
        assert_eq!(p.items[0].eligible_at, Some(t(60)));
        let p = plan(&l, &ledger, &rules(), t(60));
        assert_eq!(p.items[0].eligible_at, None);
    }

    #[test]
    fn outage_and_recovery_before_any_mail_are_both_dropped() {
        let l = vec![
            la(Kind::NodeUnreachable, "node:b1", 0),
            la(Kind::NodeUnreachable, "node:b1", 1),
            la(Kind::NodeRecovered, "node:b1", 3),
        ];
        let p = plan(&l, &Ledger::default(), &rules(), t(5));
        assert!(p.items.is_empty());
        assert_eq!(p.dropped, vec![0, 1, 2]);
        assert_eq!(p.cancelled, vec![("node:b1".to_string(), Kind::NodeUnreachable)]);
    }

    #[test]
    fn recovery_of_a_mailed_outage_is_sent_even_within_min_interval() {
        let mut ledger = Ledger::default();
        ledger.keys.insert("node:b1".into(), mailed_outage(Kind::NodeUnreachable, 0));
        let l = vec![
            la(Kind::NodeUnreachable, "node:b1", 2),
            la(Kind::NodeRecovered, "node:b1", 3),
            la(Kind::NodeRecovered, "node:b1", 4),
        ];
        let p = plan(&l, &ledger, &rules(), t(5));
        assert_eq!(p.folds, vec![0], "a repeat of the open outage is counted");
        assert_eq!(p.items.len(), 1);
        assert!(matches!(p.items[0].role, Role::Recovery(_)));
        assert_eq!((p.items[0].rep, p.items[0].dups.clone(), p.items[0].eligible_at), (1, vec![2], None));
    }

    #[test]
    fn recovery_without_mailed_outage_is_dropped() {
        let l = vec![la(Kind::PullRecovered, "pull:a", 0), la(Kind::ClientBack, "client:a", 0)];
        let p = plan(&l, &Ledger::default(), &rules(), t(5));
        assert!(p.items.is_empty());
        assert_eq!(p.dropped.len(), 2);
        assert!(p.cancelled.is_empty());
    }

    #[test]
    fn flap_after_recovery_is_a_new_outage() {
        let mut ledger = Ledger::default();
        ledger.keys.insert("node:b1".into(), mailed_outage(Kind::NodeUnreachable, 0));
        let l = vec![
            la(Kind::NodeRecovered, "node:b1", 5),
            la(Kind::NodeUnreachable, "node:b1", 6),
            la(Kind::NodeRecovered, "node:b1", 7),
            la(Kind::NodeUnreachable, "node:b1", 8),
        ];
        let p = plan(&l, &ledger, &rules(), t(9));
        // Recovery mailed; the 6..7 blip is noise; the outage at 8 waits for
        // min_interval after the last mail of this key (t0 + 1h).
        assert_eq!(p.dropped, vec![1, 2]);
        assert_eq!(p.items.len(), 2);
        assert!(matches!(p.items[0].role, Role::Recovery(_)));
        assert_eq!((p.items[1].rep, &p.items[1].role, p.items[1].eligible_at), (3, &Role::New, Some(t(60))));
    }

    #[test]
    fn open_outage_repeats_are_counted_then_reminded() {
        let mut ledger = Ledger::default();
        ledger.keys.insert("pull:a".into(), mailed_outage(Kind::PullFailing, 0));
        let l = vec![la(Kind::PullFailing, "pull:a", 120), la(Kind::PullFailing, "pull:a", 125)];
        let p = plan(&l, &ledger, &rules(), t(130));
        assert_eq!(p.folds, vec![0, 1]);
        assert!(p.items.is_empty());
        let p = plan(&l, &ledger, &rules(), t(24 * 60));
        assert_eq!(p.items.len(), 1);
        assert!(matches!(p.items[0].role, Role::Reminder(_)));
        assert_eq!(p.items[0].dups, vec![1]);
    }

    #[test]
    fn record_and_prune() {
        let r = rules();
        let mut ledger = Ledger::default();
        let item = Item {
            key: "node:b1".into(),
            kind: Kind::NodeUnreachable,
            rep: 0,
            dups: vec![],
            role: Role::New,
            eligible_at: None,
        };
        let ks = ledger.keys.entry("node:b1".into()).or_default();
        record_sent(ks, &item, t(0), t(1));
        assert_eq!(ks.open[&Kind::NodeUnreachable].since, t(0));
        let op = ks.open[&Kind::NodeUnreachable].clone();
        let rec = Item { kind: Kind::NodeRecovered, role: Role::Recovery(op), ..item.clone() };
        record_sent(ks, &rec, t(5), t(6));
        assert!(ks.open.is_empty());
        ledger.keys.insert("client:x:E_Y".into(), KeyState { last_mailed: Some(t(0)), ..KeyState::default() });
        ledger.mails = vec![t(-120), t(-30), t(-29), t(5), t(95)];
        prune(&mut ledger, &r, t(30));
        assert_eq!(ledger.mails, vec![t(-29), t(5)], "the last hour, nothing from the far future");
        assert_eq!(ledger.keys.len(), 2, "both keys were mailed within min_interval");
        prune(&mut ledger, &r, t(70));
        assert_eq!(ledger.keys.len(), 0);
        // An open outage is kept, but not forever.
        ledger.keys.insert("node:b2".into(), mailed_outage(Kind::NodeUnreachable, 0));
        prune(&mut ledger, &r, t(29 * 24 * 60));
        assert_eq!(ledger.keys.len(), 1);
        prune(&mut ledger, &r, t(31 * 24 * 60));
        assert_eq!(ledger.keys.len(), 0);
    }
}
