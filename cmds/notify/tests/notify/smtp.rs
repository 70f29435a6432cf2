//! Against a real SMTP server (aiosmtpd) on loopback.

use std::time::Duration;

use ferry_notify::{Kind, Notifier, NotifyError};
use ferry_tests::{Smtp, TestDir, require};

use crate::util::{HOSTILE, alert, assert_clean, config, t};

fn notifier(smtp: &Smtp, td: &TestDir) -> Notifier {
    let mut c = config();
    c.smtp = Some(smtp.url());
    Notifier::new(Some(c), td.join("outbox"), "node1").unwrap()
}

/// The brief's flood: 300 clients' requests fail, pulls from all 300 fail,
/// and one node outage is raised 300 times — at once, with hostile text in
/// bodies, excerpts and tokens. Rule: one flush sends one digest, so this
/// is exactly one mail, with one section per key and kind.
#[test]
fn outage_of_300_clients_is_one_clean_mail() {
    if !require("aiosmtpd") {
        return;
    }
    let td = TestDir::new("notify-smtp-300");
    let smtp = Smtp::start(&td.join("smtp"));
    let n = notifier(&smtp, &td);
    for i in 0..300 {
        let h = HOSTILE[i % HOSTILE.len()];
        let client = format!("client-{i:03}");
        // Every tenth token is hostile: it must show as `-`.
        let token = if i % 10 == 0 { h.to_string() } else { client.clone() };
        n.raise(
            alert(Kind::RequestFailed, &format!("client:{client}:E_FETCH_AUTH"), &token, &format!("reason: {h}"), 0)
                .with_excerpt(format!("fatal: {h}")),
        )
        .unwrap();
        n.raise(alert(Kind::PullFailing, &format!("pull:{client}"), &client, "ssh: connect refused", 0)).unwrap();
        n.raise(alert(Kind::NodeUnreachable, "node:backup1", "backup1", "no push accepted for 2h", 0)).unwrap();
    }
    let r = n.flush(t(1)).unwrap();
    assert_eq!((r.mails_sent, r.alerts_sent, r.alerts_suppressed, r.pending), (1, 900, 0, 0), "{r:?}");
    let mails = smtp.wait_for(1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(smtp.messages().len(), 1, "exactly one mail");
    let m = &mails[0];
    assert_clean(m);
    assert_eq!(m.subject, "[ferry node1] 601 alerts: NODE_UNREACHABLE (1), REQUEST_FAILED (300), PULL_FAILING (300)");
    assert_eq!(m.envelope_from, "ferry@node1.example.org");
    assert_eq!(m.envelope_to, ["admins@example.org", "oncall@example.org"]);
    assert!(m.body.contains("Raised 299 more times until"), "the node outage is one section");
    assert!(m.body.contains("more alerts not shown (mail size limit)"), "the body is capped with a count");
    // mail_quote shows the CRLF as `\r\n` and, for readability, ends the
    // quoted line there; the next line is still marked as quoted.
    assert!(m.body.contains("  | fatal: x\\r\\n\n  | Bcc: attacker@evil.example\n"), "CRLF shown escaped in the quote");
    assert!(m.body.contains(r"\u{202E}"), "bidi override shown escaped");
    assert!(m.body.contains("* - [client:client-000:E_FETCH_AUTH]"), "hostile token shown as -");
    let again = n.flush(t(2)).unwrap();
    assert_eq!((again.mails_sent, again.pending), (0, 0));
}

/// min_interval across flushes: the same keys ten minutes later wait for
/// the hour; then one mail says how often they came back.
#[test]
fn rate_limit_across_two_flushes() {
    if !require("aiosmtpd") {
        return;
    }
    let td = TestDir::new("notify-smtp-rate");
    let smtp = Smtp::start(&td.join("smtp"));
    let n = notifier(&smtp, &td);
    let keys = ["client:a:E_FETCH_AUTH", "client:b:E_FETCH_AUTH", "client:c:E_QUOTA"];
    for k in keys {
        n.raise(alert(Kind::RequestFailed, k, "x", "failed", 0)).unwrap();
    }
    assert_eq!(n.flush(t(1)).unwrap().mails_sent, 1);
    smtp.wait_for(1, Duration::from_secs(30));
    for min in [10, 20] {
        for k in keys {
            n.raise(alert(Kind::RequestFailed, k, "x", "failed again", min)).unwrap();
        }
    }
    let r = n.flush(t(21)).unwrap();
    assert_eq!((r.mails_sent, r.alerts_suppressed, r.pending), (0, 3, 3), "{r:?}");
    assert_eq!(r.next_due, Some(t(61)));
    let r = n.flush(t(61)).unwrap();
    assert_eq!((r.mails_sent, r.alerts_sent, r.pending), (1, 3, 0), "{r:?}");
    let mails = smtp.wait_for(2, Duration::from_secs(30));
    assert_eq!(mails.len(), 2);
    for m in &mails {
        assert_clean(m);
        assert_eq!(m.subject, "[ferry node1] 3 alerts: REQUEST_FAILED (3)");
        assert_eq!(m.header("Content-Transfer-Encoding"), Some("7bit"), "short lines: readable raw");
    }
    assert_eq!(mails[1].body.matches("Raised 1 more time until").count(), 3, "{}", mails[1].body);
}

/// The server goes away: the flush fails, nothing is lost, and the next
/// flush after it is back delivers everything (a restarted server gets a
/// new address from the harness, so the notifier is rebuilt on the same
/// outbox — as the next cron run would be).
#[test]
fn transport_down_keeps_alerts_until_it_is_back() {
    if !require("aiosmtpd") {
        return;
    }
    let td = TestDir::new("notify-smtp-down");
    let mut first = Smtp::start(&td.join("smtp1"));
    let n = notifier(&first, &td);
    n.raise(alert(Kind::DiskFull, "disk:/srv", "node1", "97% used", 0)).unwrap();
    assert_eq!(n.flush(t(1)).unwrap().mails_sent, 1);
    first.wait_for(1, Duration::from_secs(30));
    first.stop();

    n.raise(alert(Kind::NodeUnreachable, "node:backup2", "backup2", "down", 5)).unwrap();
    n.raise(alert(Kind::RequestFailed, "client:a:E_X", "a", "failed", 5)).unwrap();
    match n.flush(t(7)) {
        Err(NotifyError::Transport { pending: 2, reason }) => assert!(reason.contains("smtp://"), "{reason}"),
        other => panic!("expected a transport error keeping 2 alerts, got {other:?}"),
    }
    assert_eq!(n.pending().unwrap(), 2);
    assert!(n.flush(t(8)).is_err(), "still down");

    let second = Smtp::start(&td.join("smtp2"));
    let n = notifier(&second, &td);
    let r = n.flush(t(9)).unwrap();
    assert_eq!((r.mails_sent, r.alerts_sent, r.pending), (1, 2, 0), "{r:?}");
    let mails = second.wait_for(1, Duration::from_secs(30));
    assert_clean(&mails[0]);
    assert_eq!(mails[0].subject, "[ferry node1] 2 alerts: NODE_UNREACHABLE (1), REQUEST_FAILED (1)");
    assert_eq!(first.messages().len(), 1);
}

/// Recovery over the wire: outage mailed, recovery mailed five minutes
/// later despite min_interval; a blip that recovers before its digest is
/// never mailed.
#[test]
fn recovery_rule_over_smtp() {
    if !require("aiosmtpd") {
        return;
    }
    let td = TestDir::new("notify-smtp-recovery");
    let smtp = Smtp::start(&td.join("smtp"));
    let n = notifier(&smtp, &td);
    n.raise(alert(Kind::NodeUnreachable, "node:backup1", "backup1", "no push accepted since 08:00", 0)).unwrap();
    n.raise(alert(Kind::NodeUnreachable, "node:backup2", "backup2", "blip", 0)).unwrap();
    n.raise(alert(Kind::NodeRecovered, "node:backup2", "backup2", "back", 0)).unwrap();
    let r = n.flush(t(1)).unwrap();
    assert_eq!((r.mails_sent, r.alerts_sent, r.alerts_dropped), (1, 1, 2), "{r:?}");
    n.raise(alert(Kind::NodeRecovered, "node:backup1", "backup1", "push accepted", 5)).unwrap();
    assert_eq!(n.flush(t(6)).unwrap().mails_sent, 1);
    let mails = smtp.wait_for(2, Duration::from_secs(30));
    mails.iter().for_each(assert_clean);
    assert_eq!(mails[0].subject, "[ferry node1] NODE_UNREACHABLE: backup1");
    assert_eq!(mails[1].subject, "[ferry node1] NODE_RECOVERED: backup1");
    assert!(mails[1].body.contains("it lasted 5m."), "{}", mails[1].body);
}
