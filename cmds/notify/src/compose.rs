//! Subject and body of a mail, built from fixed text, kind codes and
//! validated tokens (subject) and from cleaned, indented, capped text
//! (body).
//!
//! The subject can hold nothing a client wrote: it is `[ferry <host_label>]`
//! (validated from the admin's config), then either one kind code and one
//! validated token, or a count and kind codes. So CR/LF, encoded-words and
//! 2000-character subjects (SECURITY NL-01, NL-09) cannot be built, and the
//! subject is always printable ASCII of bounded length.

use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};

use crate::alert::{EXCERPT_SHOWN, Kind};
use crate::config::Rules;
use crate::outbox::{Folded, Ledger, Loaded};
use crate::plan::{Item, Role};

/// Longest mail body. Full sections stop at 56 KiB, one-line entries at
/// 62 KiB; the rest is counted in an "And N more alerts not shown" line.
pub const MAX_MAIL_BODY: usize = 64 * 1024;
const SOFT_LIMIT: usize = 56 * 1024;
const HARD_LIMIT: usize = 62 * 1024;
/// Lines we write stay within 72 columns where words allow, so a typical
/// mail is plain 7bit (readable raw, in logs and by any reader) rather than
/// quoted-printable, which lettre picks for lines of 76 or more.
const WIDTH: usize = 72;

/// Appends `text` as lines of at most [`WIDTH`] columns (breaking at
/// spaces; a single longer word stays whole), each starting with `indent`.
fn wrap(body: &mut String, indent: &str, text: &str) {
    if indent.len() + text.len() <= WIDTH {
        body.push_str(indent);
        body.push_str(text);
        body.push('\n');
        return;
    }
    let mut line = String::from(indent);
    for word in text.split(' ') {
        if line.len() > indent.len() && line.len() + 1 + word.len() > WIDTH {
            body.push_str(&line);
            body.push('\n');
            line = String::from(indent);
        } else if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    body.push_str(&line);
    body.push('\n');
}

/// A composed mail (or, without mail config, a digest for the log).
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub subject: String,
    pub body: String,
    /// One entry per section, for the log.
    pub entries: Vec<LogEntry>,
}

/// What the log line of one mailed item says.
#[derive(Debug, Clone)]
pub(crate) struct LogEntry {
    pub kind: Kind,
    pub key: String,
    pub token: String,
    pub raised_at: Timestamp,
    pub repeats: u64,
}

/// Notes about the hourly cap, shown at the end of the body.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notes {
    /// The cap held mail back since then; this mail carries what waited.
    pub held_since: Option<Timestamp>,
    /// This mail uses the last slot of the hour: `(max_per_hour, next
    /// time a mail is allowed)`.
    pub last_slot: Option<(u32, Timestamp)>,
}

/// RFC 3339 UTC, seconds precision: unambiguous for administrators in any
/// time zone.
pub(crate) fn ts(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `2d3h`, `3h12m`, `5m30s`, `45s`: how mails write durations (callers use
/// it too, so an alert body and the lines the notifier adds agree).
pub fn human(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    let (days, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) if sec > 0 => format!("{m}m{sec}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h{m:02}m"),
        (_, 0, _) => format!("{days}d"),
        _ => format!("{days}d{h}h"),
    }
}

/// What a mail of these kinds holds: `report` when every one is a report
/// (the notifier never mixes reports with alerts), else `alert`.
fn noun(kinds: impl IntoIterator<Item = Kind>) -> &'static str {
    let mut kinds = kinds.into_iter().peekable();
    if kinds.peek().is_some() && kinds.all(Kind::is_report) { "report" } else { "alert" }
}

/// The subject: `[ferry host] CODE: token` for one item, `[ferry host] N
/// alerts: CODE (a), CODE (b)` for several (kinds in [`Kind::ALL`] order;
/// `N reports: …` for a mail of reports).
pub(crate) fn subject(host: &str, entries: &[(Kind, &str)]) -> String {
    let host = if crate::config::is_subject_token(host) { host } else { "-" };
    if let [(kind, token)] = entries {
        let token = if crate::config::is_subject_token(token) { token } else { "-" };
        return format!("[ferry {host}] {}: {token}", kind.code());
    }
    let counts: Vec<String> = Kind::ALL
        .iter()
        .filter_map(|k| {
            let n = entries.iter().filter(|(e, _)| e == k).count();
            (n > 0).then(|| format!("{} ({n})", k.code()))
        })
        .collect();
    let noun = noun(entries.iter().map(|(k, _)| *k));
    format!("[ferry {host}] {} {noun}s: {}", entries.len(), counts.join(", "))
}

/// The counter an item reports: repeats of its own kind that were counted
/// earlier, plus (for a recovery) repeats of the outage while it lasted.
fn counted(ledger: &Ledger, item: &Item) -> (Option<Folded>, Option<Folded>) {
    let ks = ledger.keys.get(&item.key);
    let own = ks.and_then(|k| k.folded.get(&item.kind)).copied();
    let outage = match &item.role {
        Role::Recovery(op) => ks.and_then(|k| k.folded.get(&op.kind)).copied(),
        _ => None,
    };
    (own, outage)
}

/// Builds the mail for `items` (already in mailing order).
pub(crate) fn compose(
    items: &[&Item],
    loaded: &[Loaded],
    ledger: &Ledger,
    host: &str,
    rules: &Rules,
    notes: &Notes,
    now: Timestamp,
) -> Outgoing {
    let tokens: Vec<(Kind, &str)> = items.iter().map(|i| (i.kind, loaded[i.rep].alert.token())).collect();
    let subject = subject(host, &tokens);
    let n = items.len();
    let mut body = String::new();
    let noun = noun(items.iter().map(|i| i.kind));
    let _ = writeln!(body, "Ferry on {host}: {n} {noun}{}, {}.", if n == 1 { "" } else { "s" }, ts(now));
    let mut entries = Vec::with_capacity(n);
    let mut not_shown: Vec<&Item> = Vec::new();
    let mut kind_open: Option<Kind> = None;
    let mut compact = false;
    for item in items {
        let alert = &loaded[item.rep].alert;
        let (own, outage) = counted(ledger, item);
        let repeats = own.map_or(0, |f| f.count) + item.dups.len() as u64;
        entries.push(LogEntry {
            kind: item.kind,
            key: item.key.clone(),
            token: alert.token().to_string(),
            raised_at: alert.raised_at,
            repeats,
        });
        if body.len() >= HARD_LIMIT {
            not_shown.push(item);
            continue;
        }
        if kind_open != Some(item.kind) {
            kind_open = Some(item.kind);
            let count = items.iter().filter(|i| i.kind == item.kind).count();
            let _ = write!(body, "\n== {} ({count}): {} ==\n\n", item.kind.code(), item.kind.title());
        }
        if !compact && body.len() >= SOFT_LIMIT {
            compact = true;
            body.push_str("(Body limit near: further alerts are listed one per line.)\n");
        }
        let head = format!("* {} [{}]", alert.token(), item.key);
        let raised = format!("raised {}", ts(alert.raised_at));
        if compact || head.len() + 1 + raised.len() <= WIDTH {
            let _ = writeln!(body, "{head} {raised}");
        } else {
            let _ = writeln!(body, "{head}\n  {raised}");
        }
        if compact {
            continue;
        }
        for line in alert.body.lines() {
            // Indented, so no line of caller text can start with `.`,
            // `From ` or look like a header.
            wrap(&mut body, "  ", line);
        }
        if let Some(x) = &alert.excerpt {
            body.push_str("  Untrusted text (escaped, as received):\n");
            for line in ferry_text::mail_quote(x.as_bytes(), EXCERPT_SHOWN).lines() {
                let _ = writeln!(body, "  {line}");
            }
        }
        match &item.role {
            Role::New => {}
            Role::Reminder(op) => {
                let _ = writeln!(body, "  Reminder: still open since {}", ts(op.since));
                let _ = writeln!(
                    body,
                    "  (first mailed {}, {} ago).",
                    ts(op.mailed_at),
                    human(now.duration_since(op.since))
                );
            }
            Role::Recovery(op) => {
                let _ = writeln!(body, "  Ends {} raised {}", op.kind.code(), ts(op.since));
                let _ = writeln!(
                    body,
                    "  (mailed {}); it lasted {}.",
                    ts(op.mailed_at),
                    human(alert.raised_at.duration_since(op.since))
                );
                if let Some(f) = outage {
                    let s = if f.count == 1 { "" } else { "s" };
                    let _ = writeln!(body, "  {} was raised {} more time{s} while it lasted", op.kind.code(), f.count);
                    let _ = writeln!(body, "  (last {}).", ts(f.last));
                }
            }
        }
        if repeats > 0 {
            let last = item
                .dups
                .iter()
                .map(|&d| loaded[d].alert.raised_at)
                .chain(own.map(|f| f.last))
                .max()
                .unwrap_or(alert.raised_at);
            let s = if repeats == 1 { "" } else { "s" };
            let _ = writeln!(body, "  Raised {repeats} more time{s} until {}", ts(last));
            body.push_str("  (counted, not mailed separately).\n");
        }
        body.push('\n');
    }
    if !not_shown.is_empty() {
        let counts: Vec<String> = Kind::ALL
            .iter()
            .filter_map(|k| {
                let c = not_shown.iter().filter(|i| i.kind == *k).count();
                (c > 0).then(|| format!("{} ({c})", k.code()))
            })
            .collect();
        body.push('\n');
        let s = if not_shown.len() == 1 { "" } else { "s" };
        wrap(
            &mut body,
            "",
            &format!(
                "And {} more alert{s} not shown (mail size limit): {}. They are in the log on {host}.",
                not_shown.len(),
                counts.join(", ")
            ),
        );
    }
    body.push_str("\n-- \n");
    if let Some(since) = notes.held_since {
        wrap(
            &mut body,
            "",
            &format!("The hourly mail cap held these alerts back since {}; nothing was dropped.", ts(since)),
        );
    }
    if let Some((max, next)) = notes.last_slot {
        wrap(
            &mut body,
            "",
            &format!(
                "This is the last of {max} mails allowed per hour: later alerts wait and are mailed together, \
                 at the earliest {}.",
                ts(next)
            ),
        );
    }
    if noun == "alert" {
        wrap(
            &mut body,
            "",
            &format!(
                "One key is mailed at most every {} (repeats are counted); an outage that stays open is \
                 re-mailed after {}; a recovery is mailed only when its outage was.",
                human(rules.min_interval),
                human(rules.remind_interval)
            ),
        );
    }
    let _ = writeln!(body, "Sent by ferry-notify on {host}.");
    Outgoing { subject, body, entries }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Alert;
    use crate::outbox::Open;
    use crate::plan::add;

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

    fn clean_ascii(s: &str) -> bool {
        s.bytes().all(|b| (0x20..=0x7E).contains(&b))
    }

    #[test]
    fn subjects_are_fixed_text_and_tokens() {
        assert_eq!(subject("node1", &[(Kind::NodeUnreachable, "backup1")]), "[ferry node1] NODE_UNREACHABLE: backup1");
        assert_eq!(
            subject(
                "host-a",
                &[(Kind::RequestFailed, "a"), (Kind::NodeUnreachable, "b"), (Kind::NodeUnreachable, "c")]
            ),
            "[ferry host-a] 3 alerts: NODE_UNREACHABLE (2), REQUEST_FAILED (1)"
        );
        let long = "x".repeat(2000);
        for hostile in [
            "x\r\nBcc: attacker@evil.example",
            "=?utf-8?b?DQpCY2M6IHhAZXZpbA==?=",
            "\x1b]52;c;eA==\x07",
            "ok\u{202E}deliaf",
            "\u{0430}dmin",
            long.as_str(),
        ] {
            let s = subject(hostile, &[(Kind::Other, hostile)]);
            assert_eq!(s, "[ferry -] OTHER: -");
            let s = subject("node1", &[(Kind::Other, hostile), (Kind::DiskFull, hostile)]);
            assert!(clean_ascii(&s) && !s.contains("=?") && s.len() < 200, "{s:?}");
        }
        let all: Vec<(Kind, &str)> = Kind::ALL.iter().map(|&k| (k, "t")).collect();
        // Every kind at once stays well inside RFC 5322's 998-byte line.
        let s = subject(&"h".repeat(64), &all);
        assert!(clean_ascii(&s) && s.len() < 512, "{}", s.len());
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(SignedDuration::from_secs(45)), "45s");
        assert_eq!(human(SignedDuration::from_secs(330)), "5m30s");
        assert_eq!(human(SignedDuration::from_mins(60)), "1h");
        assert_eq!(human(SignedDuration::from_mins(192)), "3h12m");
        assert_eq!(human(SignedDuration::from_hours(24)), "1d");
        assert_eq!(human(SignedDuration::from_hours(51)), "2d3h");
        assert_eq!(human(SignedDuration::from_secs(-5)), "0s");
    }

    fn loaded(alerts: Vec<Alert>) -> Vec<Loaded> {
        alerts
            .into_iter()
            .enumerate()
            .map(|(i, a)| Loaded { name: format!("{i:020}-1-1.json"), alert: a.sanitized().unwrap() })
            .collect()
    }

    fn item(key: &str, kind: Kind, rep: usize, role: Role) -> Item {
        Item { key: key.into(), kind, rep, dups: vec![], role, eligible_at: None }
    }

    #[test]
    fn hostile_body_and_excerpt_stay_inert() {
        let l = loaded(
            crate::alert::tests::HOSTILE
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    Alert::new(Kind::RequestFailed, format!("client:c{i}:E_X"), "c", format!("reason: {h}"))
                        .with_excerpt(format!("stderr: {h}\n.\nFrom me"))
                        .at(t(0))
                })
                .collect(),
        );
        let items: Vec<Item> = (0..l.len()).map(|i| item(&l[i].alert.key, Kind::RequestFailed, i, Role::New)).collect();
        let refs: Vec<&Item> = items.iter().collect();
        let o = compose(&refs, &l, &Ledger::default(), "node1", &rules(), &Notes::default(), t(2));
        for line in o.body.lines() {
            assert!(clean_ascii(line), "{line:?}");
            for bad in ["Bcc:", "To:", ".", "From "] {
                assert!(!line.starts_with(bad), "{line:?}");
            }
        }
        assert!(o.body.contains(r"\u{202E}"), "bidi override is shown as an escape");
        assert!(o.body.contains(r"| stderr: \x1B]52;c;"), "OSC 52 is quoted and escaped");
        assert!(o.body.contains(r"x\r\n"), "CRLF in an excerpt is visible, not a line break");
        assert_eq!(o.subject, "[ferry node1] 8 alerts: REQUEST_FAILED (8)");
    }

    /// Point 12 of issue 16: a reason quoting a client name (escaped once
    /// when the reason was built) appears in the mail escaped once, not
    /// with doubled backslashes; and a long reason wraps between words.
    #[test]
    fn a_client_name_is_escaped_exactly_once_in_the_mail() {
        let name = ferry_text::escape("a\x1b[31mb", 200);
        let reason = format!(
            "E_FETCH_FAILED: the client's sftp server answered for {name}: permission denied while \
             reading the prepared artifact of source trac; check the export directory"
        );
        let l = loaded(vec![
            Alert::new(Kind::RequestFailed, "client:host-a:E_FETCH_FAILED", "host-a", "failed")
                .with_excerpt(reason)
                .at(t(0)),
        ]);
        let it = item("client:host-a:E_FETCH_FAILED", Kind::RequestFailed, 0, Role::New);
        let o = compose(&[&it], &l, &Ledger::default(), "node1", &rules(), &Notes::default(), t(2));
        assert_eq!(o.body.matches(r"a\x1B[31mb").count(), 1, "{}", o.body);
        assert!(!o.body.contains(r"a\\x1B"), "escaped twice: {}", o.body);
        let quoted: Vec<&str> = o.body.lines().filter(|l| l.starts_with("  | ")).collect();
        assert!(quoted.len() >= 2, "{}", o.body);
        for q in &quoted[..quoted.len() - 1] {
            assert!(q.ends_with(' '), "a word was cut at the end of {q:?}");
        }
    }

    #[test]
    fn recovery_section_says_how_long_and_how_often() {
        let l = loaded(vec![Alert::new(Kind::NodeRecovered, "node:b1", "b1", "push accepted").at(t(200))]);
        let op = Open { kind: Kind::NodeUnreachable, since: t(8), mailed_at: t(10) };
        let mut ledger = Ledger::default();
        ledger
            .keys
            .entry("node:b1".into())
            .or_default()
            .folded
            .insert(Kind::NodeUnreachable, Folded { count: 5, first: t(20), last: t(190) });
        let it = item("node:b1", Kind::NodeRecovered, 0, Role::Recovery(op));
        let o = compose(&[&it], &l, &ledger, "client1", &rules(), &Notes::default(), t(201));
        assert_eq!(o.subject, "[ferry client1] NODE_RECOVERED: b1");
        assert!(o.body.contains("Ends NODE_UNREACHABLE raised 2026-11-22T10:08:00Z"), "{}", o.body);
        assert!(o.body.contains("it lasted 3h12m."), "{}", o.body);
        assert!(o.body.contains("raised 5 more times while it lasted"), "{}", o.body);
    }

    #[test]
    fn body_is_capped_with_a_count() {
        let l = loaded(
            (0..2000)
                .map(|i| Alert::new(Kind::PullFailing, format!("pull:client-{i:04}"), "c", "x".repeat(200)).at(t(0)))
                .collect(),
        );
        let items: Vec<Item> = (0..l.len()).map(|i| item(&l[i].alert.key, Kind::PullFailing, i, Role::New)).collect();
        let refs: Vec<&Item> = items.iter().collect();
        let o = compose(&refs, &l, &Ledger::default(), "n", &rules(), &Notes::default(), t(2));
        assert!(o.body.len() <= MAX_MAIL_BODY, "{}", o.body.len());
        assert!(
            o.body.contains("more alerts not shown (mail size limit): PULL_FAILING ("),
            "{}",
            &o.body[o.body.len() - 600..]
        );
        assert_eq!(o.entries.len(), 2000);
        assert_eq!(o.subject, "[ferry n] 2000 alerts: PULL_FAILING (2000)");
    }

    #[test]
    fn wrap_breaks_at_spaces_within_the_width() {
        let mut b = String::new();
        wrap(&mut b, "  ", "short");
        assert_eq!(b, "  short\n");
        let mut b = String::new();
        let text = "word ".repeat(40);
        wrap(&mut b, "  ", text.trim_end());
        assert!(b.lines().all(|l| l.len() <= WIDTH && l.starts_with("  word")), "{b}");
        assert_eq!(b.split_whitespace().count(), 40);
        let mut b = String::new();
        let long = "x".repeat(100);
        wrap(&mut b, "  ", &format!("a {long} b"));
        assert_eq!(b, format!("  a\n  {long}\n  b\n"), "a long word stays whole");
    }

    #[test]
    fn typical_mail_lines_fit_7bit() {
        let l = loaded(vec![
            Alert::new(Kind::RequestFailed, "client:host-a:E_FETCH_AUTH", "host-a", "Request RQ42 from host-a ended in E_FETCH_AUTH after three attempts; the node's pull key was refused by the client.")
                .with_excerpt("Permission denied (publickey).")
                .at(t(0)),
        ]);
        let mut it = item("client:host-a:E_FETCH_AUTH", Kind::RequestFailed, 0, Role::New);
        it.dups = vec![];
        let notes = Notes { held_since: Some(t(-30)), last_slot: Some((20, t(40))) };
        let o = compose(&[&it], &l, &Ledger::default(), "node1", &rules(), &notes, t(2));
        for line in o.body.lines() {
            assert!(line.len() < 76, "{line:?}");
        }
    }

    #[test]
    fn cap_notes() {
        let l = loaded(vec![Alert::new(Kind::DiskFull, "disk:/srv", "node1", "97%").at(t(0))]);
        let it = item("disk:/srv", Kind::DiskFull, 0, Role::New);
        let notes = Notes { held_since: Some(t(-30)), last_slot: Some((20, t(40))) };
        let o = compose(&[&it], &l, &Ledger::default(), "n", &rules(), &notes, t(2));
        assert!(o.body.contains("held these alerts back since 2026-11-22T09:30:00Z"), "{}", o.body);
        assert!(o.body.contains("last of 20 mails allowed per hour"), "{}", o.body);
    }
}
