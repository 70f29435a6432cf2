//! Turning an [`Outgoing`] into a real message and handing it to SMTP or
//! the local sendmail.
//!
//! Headers are set only through lettre's typed API (`Mailbox`, `subject`,
//! `ContentType`, and one typed header of our own), which encodes values;
//! `dangerous_new_pre_encoded` is never used. `Date` and `Message-ID` are
//! lettre's. The subject is ASCII by construction (see [`crate::compose`]),
//! so lettre sends it as is.
//!
//! lettre's own `SendmailTransport` runs `sendmail -i -f <from> -- <to>…`.
//! We run `sendmail -i -t` instead (SECURITY NL-06): no address, however
//! it was configured, is ever an argument, and the recipients come from the
//! `To:` header that lettre encoded.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::{Message, SmtpTransport, Transport};

use crate::compose::Outgoing;
use crate::config::{Delivery, Via};

/// How long one SMTP conversation may take before the flush gives up (the
/// alerts stay pending).
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long sendmail may take to accept a message.
const SENDMAIL_TIMEOUT: Duration = Duration::from_secs(60);

/// `Auto-Submitted: auto-generated` (RFC 3834), so vacation responders and
/// ticket systems do not answer the alert and start a mail loop.
#[derive(Debug, Clone, Copy)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        if s.trim().eq_ignore_ascii_case("auto-generated") {
            Ok(AutoSubmitted)
        } else {
            Err("only auto-generated is used".into())
        }
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_string())
    }
}

/// Builds the message: From/To from the configuration, subject and body
/// from the composer.
pub(crate) fn build_message(from: &Mailbox, to: &[Mailbox], out: &Outgoing) -> Result<Message, String> {
    let mut b = Message::builder().from(from.clone());
    for rcpt in to {
        b = b.to(rcpt.clone());
    }
    b.subject(out.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .header(AutoSubmitted)
        .message_id(None)
        .body(out.body.clone())
        .map_err(|e| format!("cannot build the message: {e}"))
}

/// Delivers one mail; `Err` carries an escaped, capped reason.
pub(crate) fn send(delivery: &Delivery, out: &Outgoing) -> Result<(), String> {
    let msg = build_message(&delivery.from, &delivery.to, out)?;
    match &delivery.via {
        Via::Smtp { host, port } => {
            // Plaintext, chosen explicitly by the smtp:// scheme: no TLS,
            // no AUTH (CRATES.md §5: a loopback relay speaks neither).
            let t = SmtpTransport::builder_dangerous(host.as_str()).port(*port).timeout(Some(SMTP_TIMEOUT)).build();
            t.send(&msg)
                .map(|_| ())
                .map_err(|e| format!("smtp://{host}:{port}: {}", ferry_text::escape(&e.to_string(), 600)))
        }
        Via::Sendmail(path) => {
            // Local submission uses the system's line ends.
            let raw = msg.formatted();
            let mut lf = Vec::with_capacity(raw.len());
            let mut i = 0;
            while i < raw.len() {
                if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                    continue;
                }
                lf.push(raw[i]);
                i += 1;
            }
            ferry_run::Cmd::new(path)
                .args(["-i", "-t"])
                .stdin_bytes(lf)
                .timeout(SENDMAIL_TIMEOUT)
                .run_checked()
                .map(|_| ())
                .map_err(|e| ferry_text::escape(&e.to_string(), 600))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Kind;
    use crate::compose::LogEntry;

    fn out(subject: &str, body: &str) -> Outgoing {
        Outgoing {
            subject: subject.into(),
            body: body.into(),
            entries: vec![LogEntry {
                kind: Kind::Other,
                key: "k".into(),
                token: "t".into(),
                raised_at: jiff::Timestamp::UNIX_EPOCH,
                repeats: 0,
            }],
        }
    }

    #[test]
    fn message_headers_are_typed_and_clean() {
        let from: Mailbox = "Ferry <ferry@node1.example.org>".parse().unwrap();
        let to: Vec<Mailbox> = vec!["admins@example.org".parse().unwrap(), "Root <root@localhost>".parse().unwrap()];
        let m =
            build_message(&from, &to, &out("[ferry node1] OTHER: t", "hello\n  x\r\nBcc: a@evil.example\n")).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let names: Vec<&str> =
            head.split("\r\n").filter(|l| !l.starts_with([' ', '\t'])).map(|l| l.split(':').next().unwrap()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "Auto-Submitted",
                "Content-Transfer-Encoding",
                "Content-Type",
                "Date",
                "From",
                "Message-ID",
                "Subject",
                "To"
            ],
            "{head}"
        );
        assert!(head.contains("Subject: [ferry node1] OTHER: t\r\n"), "{head}");
        assert!(head.contains("Auto-Submitted: auto-generated"), "{head}");
        assert!(body.contains("Bcc: a@evil.example"), "body text stays body text");
        assert_eq!(m.envelope().to().len(), 2);
    }
}
