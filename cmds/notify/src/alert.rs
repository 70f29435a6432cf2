//! What an alert is, and the checks that keep caller text out of headers
//! and control characters out of bodies.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::is_subject_token;
use crate::error::NotifyError;

/// The class of an alert. Its [`Kind::code`] is the only alert-derived text
/// besides a validated token that ever reaches a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    /// A backup node refused or missed pushes for longer than configured
    /// (raised on the client; key `node:<node>`).
    NodeUnreachable,
    /// A node that was reported unreachable accepted a push again.
    NodeRecovered,
    /// A request ended in `E*` (raised on the node; key
    /// `client:<client>:<REASON_CODE>`).
    RequestFailed,
    /// Pulls from a client keep failing (key `pull:<client>` or
    /// `pull:<client>:<source>`).
    PullFailing,
    /// Pulls from that client work again.
    PullRecovered,
    /// No request from a client for too long (key `client:<client>`).
    ClientSilent,
    /// A silent client sent requests again.
    ClientBack,
    /// A declared source is late, suspiciously small or missing (key
    /// `source:<node>:<client>:<source>`; raised by `check`, also from
    /// another host reading a node's published catalog).
    BackupOverdue,
    /// That source is on time and of its usual size again.
    BackupOnTime,
    /// A node's published catalog is stale, unreachable or unreadable
    /// (raised by `check --from` on another host; key `catalog:<url>`).
    CatalogStale,
    /// That node's catalog is fresh again.
    CatalogFresh,
    /// The node cannot reach its shared catalog database (PostgreSQL);
    /// catalog rows are queued on the node (key `catalog-db:<node>`).
    CatalogUnreachable,
    /// The catalog database is reachable again and the queue written.
    CatalogReachable,
    /// A restore drill failed: the newest backup of a source did not
    /// restore (key `drill:<client>:<source>`).
    DrillFailed,
    /// That source's drill passes again.
    DrillPassed,
    /// The node's object store cannot be reached (raised on the node; key
    /// `store:<node>`).
    StoreUnreachable,
    /// That object store answers again.
    StoreRecovered,
    /// A push or key was refused by enrollment rules.
    EnrollmentRefused,
    /// The disk (or a quota) is full.
    DiskFull,
    /// The report of a node's `git gc` run: news, not a problem (see
    /// [`Kind::is_report`]).
    GcReport,
    /// Anything else worth an administrator's attention.
    Other,
}

impl Kind {
    /// Every kind, in the order digests list them (each recovery right after
    /// its outage).
    pub const ALL: [Kind; 21] = [
        Kind::NodeUnreachable,
        Kind::NodeRecovered,
        Kind::RequestFailed,
        Kind::PullFailing,
        Kind::PullRecovered,
        Kind::ClientSilent,
        Kind::ClientBack,
        Kind::BackupOverdue,
        Kind::BackupOnTime,
        Kind::CatalogStale,
        Kind::CatalogFresh,
        Kind::CatalogUnreachable,
        Kind::CatalogReachable,
        Kind::DrillFailed,
        Kind::DrillPassed,
        Kind::StoreUnreachable,
        Kind::StoreRecovered,
        Kind::EnrollmentRefused,
        Kind::DiskFull,
        Kind::GcReport,
        Kind::Other,
    ];

    /// The fixed code used in subjects, logs and the outbox.
    pub fn code(self) -> &'static str {
        match self {
            Kind::NodeUnreachable => "NODE_UNREACHABLE",
            Kind::NodeRecovered => "NODE_RECOVERED",
            Kind::RequestFailed => "REQUEST_FAILED",
            Kind::PullFailing => "PULL_FAILING",
            Kind::PullRecovered => "PULL_RECOVERED",
            Kind::ClientSilent => "CLIENT_SILENT",
            Kind::ClientBack => "CLIENT_BACK",
            Kind::BackupOverdue => "BACKUP_OVERDUE",
            Kind::BackupOnTime => "BACKUP_ON_TIME",
            Kind::CatalogStale => "CATALOG_STALE",
            Kind::CatalogFresh => "CATALOG_FRESH",
            Kind::CatalogUnreachable => "CATALOG_UNREACHABLE",
            Kind::CatalogReachable => "CATALOG_REACHABLE",
            Kind::DrillFailed => "DRILL_FAILED",
            Kind::DrillPassed => "DRILL_PASSED",
            Kind::StoreUnreachable => "STORE_UNREACHABLE",
            Kind::StoreRecovered => "STORE_RECOVERED",
            Kind::EnrollmentRefused => "ENROLLMENT_REFUSED",
            Kind::DiskFull => "DISK_FULL",
            Kind::GcReport => "GC_REPORT",
            Kind::Other => "OTHER",
        }
    }

    /// A heading for the digest section of this kind.
    pub fn title(self) -> &'static str {
        match self {
            Kind::NodeUnreachable => "Backup node unreachable",
            Kind::NodeRecovered => "Backup node reachable again",
            Kind::RequestFailed => "Request ended in error",
            Kind::PullFailing => "Pulls failing",
            Kind::PullRecovered => "Pulls working again",
            Kind::ClientSilent => "Client silent",
            Kind::ClientBack => "Client back",
            Kind::BackupOverdue => "Backup late, small or missing",
            Kind::BackupOnTime => "Backup on time again",
            Kind::CatalogStale => "Node catalog stale or unreachable",
            Kind::CatalogFresh => "Node catalog fresh again",
            Kind::CatalogUnreachable => "Catalog database unreachable (rows queued)",
            Kind::CatalogReachable => "Catalog database reachable again",
            Kind::DrillFailed => "Restore drill failed",
            Kind::DrillPassed => "Restore drill passes again",
            Kind::StoreUnreachable => "Object store unreachable",
            Kind::StoreRecovered => "Object store reachable again",
            Kind::EnrollmentRefused => "Enrollment refused",
            Kind::DiskFull => "Disk full",
            Kind::GcReport => "git gc report",
            Kind::Other => "Other",
        }
    }

    /// For a recovery kind, the outage it ends.
    pub fn recovers(self) -> Option<Kind> {
        match self {
            Kind::NodeRecovered => Some(Kind::NodeUnreachable),
            Kind::PullRecovered => Some(Kind::PullFailing),
            Kind::ClientBack => Some(Kind::ClientSilent),
            Kind::BackupOnTime => Some(Kind::BackupOverdue),
            Kind::CatalogFresh => Some(Kind::CatalogStale),
            Kind::CatalogReachable => Some(Kind::CatalogUnreachable),
            Kind::DrillPassed => Some(Kind::DrillFailed),
            Kind::StoreRecovered => Some(Kind::StoreUnreachable),
            _ => None,
        }
    }

    /// True for kinds that a recovery kind can end.
    pub fn is_outage(self) -> bool {
        matches!(
            self,
            Kind::NodeUnreachable
                | Kind::PullFailing
                | Kind::ClientSilent
                | Kind::BackupOverdue
                | Kind::CatalogStale
                | Kind::CatalogUnreachable
                | Kind::DrillFailed
                | Kind::StoreUnreachable
        )
    }

    /// True for reports: scheduled news such as the monthly `git gc`
    /// summary, not a problem. A report is logged at info level (never as a
    /// warning) and mailed in a mail of its own, never inside a digest of
    /// alerts, so a routine summary neither reads as a warning nor hides one.
    pub fn is_report(self) -> bool {
        matches!(self, Kind::GcReport)
    }

    /// True for kinds logged as warnings when raised: problems, not
    /// recoveries or reports.
    pub fn is_warning(self) -> bool {
        self.recovers().is_none() && !self.is_report()
    }
}

/// Longest alert key, in bytes.
pub const MAX_KEY: usize = 200;
/// Longest line kept in an alert body; longer lines are cut with a marker.
const MAX_LINE: usize = 240;
/// Largest alert body kept (after cleaning), so one alert file and one mail
/// section stay small whatever the caller passes.
pub const MAX_BODY: usize = 8 * 1024;
/// Largest untrusted excerpt kept in the outbox (raw bytes; it is escaped
/// and capped again when quoted into a mail).
pub const MAX_EXCERPT: usize = 16 * 1024;
/// Characters of an excerpt shown in a mail (escaped, before line layout).
pub const EXCERPT_SHOWN: usize = 2000;

/// One thing an administrator should hear about.
///
/// `key` groups and rate-limits: alerts with the same key are one problem
/// (one mail per `min_interval`), and a recovery pairs with the outage of
/// the same key. Callers build it from validated tokens, e.g.
/// `node:backup1`, `client:host-a:E_FETCH_AUTH`, `pull:host-a`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub kind: Kind,
    /// Grouping/dedup key: printable ASCII, 1..=200 bytes (else the alert is
    /// refused with [`NotifyError::InvalidAlert`]).
    pub key: String,
    /// The node or client name shown in a single-alert subject:
    /// `[A-Za-z0-9._-]{1,64}`, anything else is shown as `-`.
    pub subject_token: String,
    /// Caller-written text (what happened, since when, what to do). Every
    /// line that is not plain printable ASCII is escaped with `ferry_text`.
    pub body: String,
    /// Text quoting a client or remote (a reason whose stderr excerpt or
    /// rejected line was escaped once when it was built): quoted in the
    /// mail with `ferry_text::mail_quote`, so it is marked, wrapped and
    /// capped, and shown as it is — never escaped a second time. Anything
    /// still raw in it (controls, non-ASCII) is escaped there, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    pub raised_at: Timestamp,
}

impl Alert {
    /// An alert raised now, without excerpt.
    pub fn new(kind: Kind, key: impl Into<String>, subject_token: impl Into<String>, body: impl Into<String>) -> Alert {
        Alert {
            kind,
            key: key.into(),
            subject_token: subject_token.into(),
            body: body.into(),
            excerpt: None,
            raised_at: Timestamp::now(),
        }
    }

    /// Adds untrusted text to be quoted (see [`Alert::excerpt`]).
    pub fn with_excerpt(mut self, text: impl Into<String>) -> Alert {
        self.excerpt = Some(text.into());
        self
    }

    /// Sets the time the problem was seen.
    pub fn at(mut self, raised_at: Timestamp) -> Alert {
        self.raised_at = raised_at;
        self
    }

    /// The checked form stored in the outbox: key validated (refused, never
    /// repaired: a bad key is a caller bug), token replaced by `-` when it
    /// is not a token, body cleaned and capped, excerpt capped.
    pub(crate) fn sanitized(mut self) -> Result<Alert, NotifyError> {
        check_key(&self.key)?;
        if !is_subject_token(&self.subject_token) {
            self.subject_token = "-".into();
        }
        self.body = clean_body(&self.body);
        if let Some(x) = &mut self.excerpt {
            cap_str(x, MAX_EXCERPT);
        }
        Ok(self)
    }

    /// The token as it may appear in a subject (re-checked on every use, so
    /// an edited outbox file cannot smuggle text into a header).
    pub(crate) fn token(&self) -> &str {
        if is_subject_token(&self.subject_token) { &self.subject_token } else { "-" }
    }
}

/// Keys are printable ASCII (space to `~`) and at most [`MAX_KEY`] bytes.
pub(crate) fn check_key(key: &str) -> Result<(), NotifyError> {
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| (0x20..=0x7E).contains(&b)) {
        return Err(NotifyError::InvalidAlert(format!(
            "key {:?} is not 1..={MAX_KEY} bytes of printable ASCII",
            ferry_text::escape(key, 100)
        )));
    }
    Ok(())
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cap_str(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Makes caller text safe for a mail body: one output line per input line
/// (a trailing `\r` of a CRLF line end is dropped), each made safe by
/// `ferry_text::sanitize` — so no control character, bidi override or
/// non-ASCII character survives, and no line exceeds [`MAX_LINE`].
/// Idempotent: printable ASCII, backslashes included, is kept as it is, so
/// client text a caller already escaped is never escaped again, even on a
/// line that also holds something raw. Trailing blank lines are dropped;
/// the whole is capped at [`MAX_BODY`] with a marker.
pub(crate) fn clean_body(body: &str) -> String {
    let mut out = String::new();
    let mut lines = body.split('\n').peekable();
    let mut hidden = 0usize;
    while let Some(raw) = lines.next() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let shown = ferry_text::sanitize(line, MAX_LINE);
        if out.len() + shown.len() + 1 > MAX_BODY - 64 {
            hidden = raw.len() + 1 + lines.map(|l| l.len() + 1).sum::<usize>();
            break;
        }
        out.push_str(&shown);
        out.push('\n');
    }
    if hidden > 0 {
        out.push_str(&format!("...[body cut: +{hidden} bytes]\n"));
    }
    let end = out.trim_end_matches('\n').len();
    out.truncate(end);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// SECURITY NL-* samples.
    pub(crate) const HOSTILE: [&str; 8] = [
        "x\r\nBcc: attacker@evil.example",
        "a\nTo: x@evil.example",
        "=?utf-8?b?DQpCY2M6IHhAZXZpbA==?=",
        "\x1b]52;c;ZWNobyBwd25lZA==\x07",
        "\x1b[2J\x1b]8;;http://evil\x07click\x1b]8;;\x07",
        "ok\u{202E}deliaf",
        "\u{9B}31m C1 CSI",
        "\n2026-01-01T00:00:00Z INFO client=clientb backup ok",
    ];

    fn printable_lines(s: &str) -> bool {
        s.bytes().all(|b| b == b'\n' || (0x20..=0x7E).contains(&b))
    }

    #[test]
    fn codes_are_unique_and_match_serde() {
        let mut codes: Vec<&str> = Kind::ALL.iter().map(|k| k.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Kind::ALL.len());
        for k in Kind::ALL {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.code()));
            assert!(k.code().bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
            if let Some(o) = k.recovers() {
                assert!(o.is_outage());
                let pos = |x: Kind| Kind::ALL.iter().position(|&y| y == x).unwrap();
                assert_eq!(pos(o) + 1, pos(k), "a recovery is listed right after its outage");
            }
        }
        assert_eq!(Kind::ALL.iter().filter(|k| k.is_outage()).count(), 8);
        assert!(!Kind::GcReport.is_warning() && !Kind::NodeRecovered.is_warning());
        assert!(Kind::RequestFailed.is_warning() && Kind::Other.is_warning());
        assert!(Kind::ALL.iter().all(|k| !(k.is_report() && (k.is_outage() || k.recovers().is_some()))));
    }

    #[test]
    fn body_is_cleaned_line_by_line() {
        for h in HOSTILE {
            let c = clean_body(&format!("prefix {h} suffix"));
            // Caller lines stay lines (the composer indents each one); what
            // matters here is that no control or non-ASCII character is left.
            assert!(printable_lines(&c), "{c:?}");
        }
        let c = clean_body("line one\r\nx\r\nBcc: attacker@evil.example\n");
        // Caller lines stay lines (CRLF or LF); a `Bcc:` line is body text,
        // and the mail indents every body line, so it never starts a line.
        assert_eq!(c, "line one\nx\nBcc: attacker@evil.example");
        assert_eq!(clean_body("ok\u{202E}deliaf"), r"ok\u{202E}deliaf");
        assert_eq!(clean_body("a\tb"), r"a\tb");
        assert_eq!(clean_body("bell\x07\r"), r"bell\x07");
        // Idempotent: escaped text is plain and stays as it is.
        let once = clean_body("\x1b]52;c;x\x07 \\ done");
        assert_eq!(clean_body(&once), once);
        // A line quoting an escaped name and holding a raw control: the
        // name stays escaped once.
        let name = ferry_text::escape("a\x1b[31mb", 100);
        assert_eq!(clean_body(&format!("{name}\x07")), r"a\x1B[31mb\x07");
    }

    #[test]
    fn body_and_lines_are_capped() {
        let long = "y".repeat(5000);
        let c = clean_body(&long);
        // ferry_text appends its `...[+N bytes]` marker after the cut.
        assert!(c.len() <= MAX_LINE + 24 && c.contains("...[+"), "{}", c.len());
        let many = "line of text\n".repeat(10_000);
        let c = clean_body(&many);
        assert!(c.len() <= MAX_BODY, "{}", c.len());
        assert!(c.ends_with("bytes]"), "{}", &c[c.len() - 40..]);
    }

    #[test]
    fn keys_and_tokens() {
        let a = Alert::new(Kind::Other, "client:host-a:E_X", "host-a", "b").sanitized().unwrap();
        assert_eq!(a.subject_token, "host-a");
        for bad in ["", "a\nb", "caf\u{e9}", "x\x7f", &"k".repeat(201)] {
            assert!(Alert::new(Kind::Other, bad, "t", "b").sanitized().is_err(), "{bad:?}");
        }
        assert!(Alert::new(Kind::Other, "with space ~", "t", "b").sanitized().is_ok());
        for bad_token in ["", "a b", "x\r\nBcc: y@evil", "\u{202E}abc", "=?utf-8?b?DQo=?=", &"t".repeat(65)] {
            let a = Alert::new(Kind::Other, "k", bad_token, "b").sanitized().unwrap();
            assert_eq!(a.subject_token, "-", "{bad_token:?}");
        }
    }

    #[test]
    fn excerpt_is_capped_on_a_char_boundary() {
        let a = Alert::new(Kind::Other, "k", "t", "b").with_excerpt("\u{e9}".repeat(MAX_EXCERPT)).sanitized().unwrap();
        let x = a.excerpt.unwrap();
        assert!(x.len() <= MAX_EXCERPT && x.len() >= MAX_EXCERPT - 1);
    }
}
