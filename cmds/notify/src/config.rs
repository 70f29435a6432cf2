//! The `[mail]` section of the client and node configurations, and its
//! resolution into checked settings.
//!
//! Everything that ends up in an envelope or a header *outside* the fixed
//! subject text comes from here — the administrator's file — and is parsed
//! once, when the [`crate::Notifier`] is built, so a typo is a clear error at
//! start-up rather than a lost alert at 3 a.m.

use std::path::PathBuf;

use jiff::SignedDuration;
use lettre::message::Mailbox;
use serde::Deserialize;

use crate::error::NotifyError;

/// Where alert mail goes, and how often.
///
/// Sender and recipients come from the administrator's configuration only,
/// never from client text (SECURITY NL-01, NL-06).
///
/// ```toml
/// [mail]
/// to = ["Backup admins <backup-admins@example.org>"]
/// from = "ferry@node1.example.org"
/// smtp = "smtp://127.0.0.1:25"     # plaintext to a local relay, chosen explicitly
/// # sendmail = "/usr/sbin/sendmail" # or: the local MTA, run as `sendmail -i -t`
/// min_interval = "1h"               # per alert key
/// digest_delay = "1m"               # gather alerts this long into one mail
/// max_per_hour = 20                 # mails per hour, all keys together
/// remind_interval = "1d"            # reminder for an outage still open
/// host_label = "node1"              # shown in subjects; default: the client's or node's name
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// Recipients (administrators), each `addr@domain` or `Name <addr@domain>`.
    pub to: Vec<String>,
    /// Sender address, same syntax as `to`.
    pub from: String,
    /// `smtp://host[:port]` — plain SMTP without TLS or AUTH, for a relay on
    /// loopback or a trusted network. The scheme is the explicit choice of
    /// plaintext; `smtps://` and `?tls=` are refused because no TLS stack is
    /// compiled in (relay through the local MTA instead). At most one of
    /// `smtp` and `sendmail` may be set; with neither, `/usr/sbin/sendmail`.
    #[serde(default)]
    pub smtp: Option<String>,
    /// Absolute path of a sendmail binary, run as `sendmail -i -t` (the
    /// recipients are read from the `To:` header the notifier built from
    /// `to`; no other argument is ever passed — SECURITY NL-06).
    #[serde(default)]
    pub sendmail: Option<PathBuf>,
    /// An alert key is mailed at most once per this interval; later alerts
    /// with the same key wait (and repeats are counted) until it has passed.
    /// `30s`, `5m`, `2h`, `1d` or plain seconds; `0s` disables it.
    #[serde(default = "default_min_interval")]
    pub min_interval: String,
    /// A mail goes out only once its oldest alert has waited this long, so a
    /// burst (one outage seen by many clients) becomes one digest. `0s`
    /// mails at the first flush.
    #[serde(default = "default_digest_delay")]
    pub digest_delay: String,
    /// Global cap on mails per sliding hour. Beyond it nothing is dropped:
    /// alerts wait and leave as one digest that says the cap held them back.
    #[serde(default = "default_max_per_hour")]
    pub max_per_hour: u32,
    /// While an outage that was mailed has not recovered, further alerts of
    /// it are only counted; after this long one reminder is mailed.
    #[serde(default = "default_remind_interval")]
    pub remind_interval: String,
    /// Shown in every subject (`[ferry <label>] …`); `[A-Za-z0-9._-]{1,64}`.
    /// Default: the Ferry name of the client or node (its `name`), never
    /// the machine's host name.
    #[serde(default)]
    pub host_label: Option<String>,
}

fn default_min_interval() -> String {
    "1h".into()
}
fn default_digest_delay() -> String {
    "1m".into()
}
fn default_max_per_hour() -> u32 {
    20
}
fn default_remind_interval() -> String {
    "1d".into()
}

/// The sendmail used when neither `smtp` nor `sendmail` is configured: the
/// path every Debian MTA package provides.
pub const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail";

/// Longest interval accepted anywhere in the section (a typo such as
/// `100000d` should be an error, not a silent "never").
const MAX_INTERVAL_SECS: i64 = 365 * 86_400;

/// More recipients than this is a configuration mistake (and a mail flood).
const MAX_RECIPIENTS: usize = 50;

impl MailConfig {
    /// A configuration with the given recipients and sender and every other
    /// field at its default (mail through `/usr/sbin/sendmail`).
    pub fn new(to: Vec<String>, from: impl Into<String>) -> MailConfig {
        MailConfig {
            to,
            from: from.into(),
            smtp: None,
            sendmail: None,
            min_interval: default_min_interval(),
            digest_delay: default_digest_delay(),
            max_per_hour: default_max_per_hour(),
            remind_interval: default_remind_interval(),
            host_label: None,
        }
    }

    /// Checks every field for the client or node called `name` (the
    /// subjects' label unless `host_label` is set); the error names the
    /// field and what is wrong. Config loaders call this so a bad `[mail]`
    /// section fails at load time.
    pub fn validate(&self, name: &str) -> Result<(), NotifyError> {
        Settings::resolve(Some(self), name).map(|_| ())
    }
}

/// Parses `30s`, `5m`, `2h`, `1d` or plain seconds (the syntax of every
/// other duration in Ferry's configs).
pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    let t = s.trim();
    let (num, mult) = match t.as_bytes().last() {
        Some(b's') => (&t[..t.len() - 1], 1),
        Some(b'm') => (&t[..t.len() - 1], 60),
        Some(b'h') => (&t[..t.len() - 1], 3600),
        Some(b'd') => (&t[..t.len() - 1], 86_400),
        _ => (t, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad duration {:?} (use 30s, 5m, 2h, 1d)", ferry_text::escape(s, 40)));
    }
    let n: i64 = num.parse().map_err(|_| format!("duration {:?} is too large", ferry_text::escape(s, 40)))?;
    let secs = n.checked_mul(mult).filter(|&v| v <= MAX_INTERVAL_SECS);
    match secs {
        Some(v) => Ok(SignedDuration::from_secs(v)),
        None => Err(format!("duration {:?} is longer than 365d", ferry_text::escape(s, 40))),
    }
}

/// How a mail leaves the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    /// Plain SMTP to `host:port` (host without IPv6 brackets).
    Smtp { host: String, port: u16 },
    /// `<path> -i -t`.
    Sendmail(PathBuf),
}

/// Addresses and route, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub via: Via,
}

/// The rate-limit and grouping rules, as durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    pub min_interval: SignedDuration,
    pub digest_delay: SignedDuration,
    pub remind_interval: SignedDuration,
    /// Mails per sliding hour; `None` when alerts only go to the log (the
    /// cap protects mailboxes, not log files).
    pub max_per_hour: Option<u32>,
}

/// A resolved configuration: `delivery` is `None` for log-only operation.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub delivery: Option<Delivery>,
    pub rules: Rules,
    pub host_label: String,
}

fn config_err(field: &'static str, reason: impl Into<String>) -> NotifyError {
    NotifyError::Config { field, reason: reason.into() }
}

/// Parses one address. Control characters are refused outright (lettre
/// would encode them, but an address with a line break in an admin's
/// config is a mistake worth naming).
fn parse_mailbox(field: &'static str, s: &str) -> Result<Mailbox, NotifyError> {
    if s.chars().any(|c| c.is_control()) {
        return Err(config_err(field, format!("{:?} contains a control character", ferry_text::escape(s, 100))));
    }
    s.trim().parse::<Mailbox>().map_err(|e| {
        config_err(
            field,
            format!(
                "{:?} is not a mail address ({e}); use user@domain or \"Name <user@domain>\"",
                ferry_text::escape(s, 100)
            ),
        )
    })
}

/// Parses `smtp://host[:port][/]`. Anything else — credentials (they would
/// cross the wire in clear), a path, a query such as `?tls=required`, or the
/// `smtps` scheme — is refused with the reason, rather than half-honoured.
pub(crate) fn parse_smtp_url(url: &str) -> Result<(String, u16), String> {
    let shown = ferry_text::escape(url, 100);
    let tls_hint = "no TLS is compiled into ferry-notify: submit to a local relay on loopback \
                    (smtp://127.0.0.1:25) or use `sendmail`";
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("smtps://") || lower.contains("tls=") {
        return Err(format!("{shown:?}: {tls_hint}"));
    }
    let Some(rest) = url.strip_prefix("smtp://") else {
        return Err(format!("{shown:?}: must start with smtp:// (plain SMTP, chosen explicitly)"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['@', '/', '?', '#']) {
        return Err(format!("{shown:?}: only smtp://host[:port] is accepted (no user, password, path or query)"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| format!("{shown:?}: unclosed '['"))?;
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(format!("{shown:?}: bad IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| format!("{shown:?}: junk after ']'"))?),
        };
        (h, port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && (host.contains(':') || host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
        && !host.starts_with('-');
    if !host_ok {
        return Err(format!("{shown:?}: bad host name"));
    }
    let port = match port {
        None => 25,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("{shown:?}: bad port")),
        },
    };
    Ok((host.to_string(), port))
}

/// Whether `s` may appear in a subject: `[A-Za-z0-9._-]{1,64}`.
pub(crate) fn is_subject_token(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The label of subjects when `host_label` is not set: `name`, the Ferry
/// name of the host the notifier runs for (the client's or node's `name`).
/// Never the machine's host name: it says nothing about which client or
/// node wrote, and several Ferry instances on one machine share it.
fn name_label(name: &str) -> Result<String, NotifyError> {
    if is_subject_token(name) {
        Ok(name.to_owned())
    } else {
        Err(config_err(
            "host_label",
            format!(
                "the name {:?} cannot appear in a mail subject ([A-Za-z0-9._-]{{1,64}}); set host_label",
                ferry_text::escape(name, 100)
            ),
        ))
    }
}

impl Settings {
    /// Resolves a configuration (or log-only operation for `None`) for the
    /// client or node called `name`.
    pub(crate) fn resolve(config: Option<&MailConfig>, name: &str) -> Result<Settings, NotifyError> {
        let Some(c) = config else {
            let d = MailConfig::new(Vec::new(), "");
            return Ok(Settings {
                delivery: None,
                rules: Rules {
                    min_interval: parse_duration(&d.min_interval).map_err(|e| config_err("min_interval", e))?,
                    digest_delay: parse_duration(&d.digest_delay).map_err(|e| config_err("digest_delay", e))?,
                    remind_interval: parse_duration(&d.remind_interval)
                        .map_err(|e| config_err("remind_interval", e))?,
                    max_per_hour: None,
                },
                // Log lines only: a name that is no token shows as `-`.
                host_label: name_label(name).unwrap_or_else(|_| "-".into()),
            });
        };
        if c.to.is_empty() {
            return Err(config_err("to", "no recipient: list at least one administrator address"));
        }
        if c.to.len() > MAX_RECIPIENTS {
            return Err(config_err(
                "to",
                format!("{} recipients (at most {MAX_RECIPIENTS}; use a list address)", c.to.len()),
            ));
        }
        let to = c.to.iter().map(|s| parse_mailbox("to", s)).collect::<Result<Vec<_>, _>>()?;
        let from = parse_mailbox("from", &c.from)?;
        let via = match (&c.smtp, &c.sendmail) {
            (Some(_), Some(_)) => {
                return Err(config_err("smtp", "both `smtp` and `sendmail` are set; choose one"));
            }
            (Some(url), None) => {
                let (host, port) = parse_smtp_url(url).map_err(|e| config_err("smtp", e))?;
                Via::Smtp { host, port }
            }
            (None, Some(path)) => {
                if !path.is_absolute() {
                    return Err(config_err(
                        "sendmail",
                        format!("{:?} is not an absolute path (no PATH lookup is done)", path.display().to_string()),
                    ));
                }
                Via::Sendmail(path.clone())
            }
            (None, None) => Via::Sendmail(PathBuf::from(DEFAULT_SENDMAIL)),
        };
        let rules = Rules {
            min_interval: parse_duration(&c.min_interval).map_err(|e| config_err("min_interval", e))?,
            digest_delay: parse_duration(&c.digest_delay).map_err(|e| config_err("digest_delay", e))?,
            remind_interval: parse_duration(&c.remind_interval).map_err(|e| config_err("remind_interval", e))?,
            max_per_hour: match c.max_per_hour {
                0 => return Err(config_err("max_per_hour", "must be at least 1 (remove [mail] to stop mailing)")),
                n => Some(n),
            },
        };
        let host_label = match &c.host_label {
            Some(l) if is_subject_token(l) => l.clone(),
            Some(l) => {
                return Err(config_err(
                    "host_label",
                    format!("{:?} is not [A-Za-z0-9._-]{{1,64}}", ferry_text::escape(l, 100)),
                ));
            }
            None => name_label(name)?,
        };
        Ok(Settings { delivery: Some(Delivery { from, to, via }), rules, host_label })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MailConfig {
        let mut c = MailConfig::new(vec!["admin@example.org".into()], "ferry@node1.example.org");
        c.smtp = Some("smtp://127.0.0.1:2525".into());
        c
    }

    #[test]
    fn toml_section_gets_defaults() {
        #[derive(Deserialize)]
        struct Top {
            mail: MailConfig,
        }
        let t: Top = toml::from_str("[mail]\nto = [\"a@example.org\"]\nfrom = \"f@example.org\"\n").unwrap();
        assert_eq!(t.mail, MailConfig::new(vec!["a@example.org".into()], "f@example.org"));
        let s = Settings::resolve(Some(&t.mail), "host-a").unwrap();
        assert_eq!(s.delivery.unwrap().via, Via::Sendmail(DEFAULT_SENDMAIL.into()));
        assert_eq!(s.rules.min_interval, SignedDuration::from_hours(1));
        assert_eq!(s.rules.digest_delay, SignedDuration::from_mins(1));
        assert_eq!(s.rules.remind_interval, SignedDuration::from_hours(24));
        assert_eq!(s.rules.max_per_hour, Some(20));
        assert_eq!(s.host_label, "host-a", "the Ferry name, not the machine's host name");
        let e = toml::from_str::<Top>("[mail]\nto = []\nfrom = \"f@x.org\"\nbcc = \"x@evil.example\"\n");
        assert!(e.is_err(), "unknown fields are refused");
    }

    #[test]
    fn good_config_resolves() {
        let s = Settings::resolve(Some(&cfg()), "node1").unwrap();
        let d = s.delivery.unwrap();
        assert_eq!(d.via, Via::Smtp { host: "127.0.0.1".into(), port: 2525 });
        assert_eq!(d.to.len(), 1);
        let mut c = cfg();
        c.to = vec!["Backup Admins <admins@example.org>".into(), "root@localhost".into()];
        c.host_label = Some("node-1.example".into());
        assert!(c.validate("node1").is_ok());
        assert_eq!(Settings::resolve(Some(&c), "node1").unwrap().host_label, "node-1.example", "host_label wins");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let field = |c: MailConfig| match c.validate("node1") {
            Err(NotifyError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        let mut c = cfg();
        c.to = vec![];
        assert_eq!(field(c), "to");
        let mut c = cfg();
        c.to = vec!["not an address".into()];
        assert_eq!(field(c), "to");
        let mut c = cfg();
        c.to = vec!["a@example.org\r\nBcc: attacker@evil.example".into()];
        assert_eq!(field(c), "to");
        let mut c = cfg();
        c.from = "root".into();
        assert_eq!(field(c), "from");
        let mut c = cfg();
        c.sendmail = Some("/usr/sbin/sendmail".into());
        assert_eq!(field(c), "smtp");
        let mut c = cfg();
        c.smtp = None;
        c.sendmail = Some("sendmail".into());
        assert_eq!(field(c), "sendmail");
        let mut c = cfg();
        c.min_interval = "1 hour".into();
        assert_eq!(field(c), "min_interval");
        let mut c = cfg();
        c.digest_delay = "-5s".into();
        assert_eq!(field(c), "digest_delay");
        let mut c = cfg();
        c.remind_interval = "99999999999999d".into();
        assert_eq!(field(c), "remind_interval");
        let mut c = cfg();
        c.max_per_hour = 0;
        assert_eq!(field(c), "max_per_hour");
        let mut c = cfg();
        c.host_label = Some("a\r\nBcc: x@evil".into());
        assert_eq!(field(c), "host_label");
        // Without host_label, a name that cannot be a subject token is an
        // error at load time (not alerts lost later).
        assert!(matches!(cfg().validate("backup node 1"), Err(NotifyError::Config { field: "host_label", .. })));
        let mut c = cfg();
        c.smtp = Some("smtps://relay.example.org".into());
        assert_eq!(field(c), "smtp");
    }

    #[test]
    fn smtp_urls() {
        assert_eq!(parse_smtp_url("smtp://127.0.0.1:8025").unwrap(), ("127.0.0.1".into(), 8025));
        assert_eq!(parse_smtp_url("smtp://localhost").unwrap(), ("localhost".into(), 25));
        assert_eq!(parse_smtp_url("smtp://relay.example.org:587/").unwrap(), ("relay.example.org".into(), 587));
        assert_eq!(parse_smtp_url("smtp://[::1]:2525").unwrap(), ("::1".into(), 2525));
        for bad in [
            "smtps://relay.example.org",
            "smtp://relay.example.org?tls=required",
            "smtp://user:secret@relay.example.org",
            "smtp://relay.example.org/helo.name",
            "smtp://",
            "smtp://host:0",
            "smtp://host:99999",
            "smtp://host:+25",
            "smtp://-oQ/tmp",
            "mailto:root@localhost",
            "http://127.0.0.1:25",
            "smtp://[::1",
            "smtp://[zz]:25",
            "smtp://host name:25",
        ] {
            assert!(parse_smtp_url(bad).is_err(), "{bad} must be refused");
        }
        assert!(parse_smtp_url("smtps://x").unwrap_err().contains("no TLS"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s").unwrap(), SignedDuration::ZERO);
        assert_eq!(parse_duration("90").unwrap(), SignedDuration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), SignedDuration::from_mins(5));
        assert_eq!(parse_duration(" 2h ").unwrap(), SignedDuration::from_hours(2));
        assert_eq!(parse_duration("1d").unwrap(), SignedDuration::from_hours(24));
        for bad in ["", "h", "1.5h", "-1m", "5 minutes", "366d", "1w"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn log_only_settings() {
        let s = Settings::resolve(None, "host-a").unwrap();
        assert!(s.delivery.is_none());
        assert_eq!(s.host_label, "host-a");
        assert_eq!(Settings::resolve(None, "a b").unwrap().host_label, "-");
        assert_eq!(s.rules.max_per_hour, None);
    }
}
