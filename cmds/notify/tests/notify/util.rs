//! Shared helpers: times, configs, and the checks every delivered mail
//! must pass.

use std::sync::OnceLock;

use ferry_notify::{Alert, Kind, MailConfig};
use ferry_tests::Mail;
use jiff::{SignedDuration, Timestamp};

pub const TO: [&str; 2] = ["admins@example.org", "Night Shift <oncall@example.org>"];
pub const FROM: &str = "ferry@node1.example.org";

/// SECURITY NL-* samples, used as bodies, excerpts and subject tokens.
pub const HOSTILE: [&str; 8] = [
    "x\r\nBcc: attacker@evil.example",
    "a\nTo: x@evil.example",
    "=?utf-8?b?DQpCY2M6IHhAZXZpbA==?=",
    "\x1b]52;c;ZWNobyBwd25lZA==\x07",
    "\x1b[2J\x1b]8;;http://evil\x07click\x1b]8;;\x07",
    "ok\u{202E}deliaf",
    "\u{9B}31m C1 CSI \u{0430}dmin",
    "\n2026-01-01T00:00:00Z INFO client=clientb backup ok\r\n.\r\nMAIL FROM:<x@evil.example>",
];

/// A base time in the past (whole seconds), so `raise` never re-dates.
pub fn t(min: i64) -> Timestamp {
    static T0: OnceLock<Timestamp> = OnceLock::new();
    let t0 = *T0.get_or_init(|| {
        let t = Timestamp::now().checked_sub(SignedDuration::from_hours(72)).unwrap();
        Timestamp::from_second(t.as_second()).unwrap()
    });
    t0.checked_add(SignedDuration::from_mins(min)).unwrap()
}

pub fn config() -> MailConfig {
    let mut c = MailConfig::new(TO.iter().map(|s| s.to_string()).collect(), FROM);
    c.host_label = Some("node1".into());
    c
}

pub fn alert(kind: Kind, key: &str, token: &str, body: &str, min: i64) -> Alert {
    Alert::new(kind, key, token, body).at(t(min))
}

/// The header block of a raw message (before the first empty line).
pub fn head(raw: &[u8]) -> String {
    let s = String::from_utf8(raw.to_vec()).expect("a mail from ferry-notify is ASCII");
    let end = s.find("\r\n\r\n").or_else(|| s.find("\n\n")).expect("header/body separator");
    s[..end].to_string()
}

/// Checks that hold for every mail ferry-notify sends: ASCII only, exactly
/// the expected header fields (none added by client text), addresses from
/// the config only, a clean subject, a body of printable lines with no
/// line that starts like a header or an SMTP command.
pub fn assert_clean(mail: &Mail) {
    assert!(mail.raw.iter().all(|b| b.is_ascii()), "raw message is ASCII");
    let head = head(&mail.raw);
    for line in head.lines() {
        assert!(line.bytes().all(|b| (0x20..=0x7E).contains(&b) || b == b'\r' || b == b'\t'), "{line:?}");
    }
    let mut names: Vec<String> = mail.headers.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
    names.sort();
    assert_eq!(
        names,
        ["auto-submitted", "content-transfer-encoding", "content-type", "date", "from", "message-id", "subject", "to"],
        "header fields of {head}"
    );
    assert!(!head.contains("=?"), "no encoded-word anywhere in the header: {head}");
    assert!(!head.to_ascii_lowercase().contains("evil"), "{head}");
    let to = mail.header("To").unwrap();
    assert!(to.contains("admins@example.org") && to.contains("oncall@example.org"), "{to}");
    assert_eq!(mail.header("From").unwrap(), FROM);
    let subject = &mail.subject;
    assert!(subject.starts_with("[ferry node1] ") && subject.len() < 200, "{subject:?}");
    assert!(subject.bytes().all(|b| (0x20..=0x7E).contains(&b)), "{subject:?}");
    assert!(
        subject
            .trim_start_matches("[ferry node1] ")
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" _:,()-.".contains(&b)),
        "{subject:?}"
    );
    for line in mail.body.lines() {
        assert!(line.bytes().all(|b| (0x20..=0x7E).contains(&b)), "{line:?}");
        for bad in ["Bcc:", "To:", "From ", ".", "MAIL FROM", "2026-01-01T00:00:00Z"] {
            assert!(!line.starts_with(bad), "{line:?}");
        }
    }
    assert!(mail.body.len() <= ferry_notify::MAX_MAIL_BODY, "{}", mail.body.len());
}
