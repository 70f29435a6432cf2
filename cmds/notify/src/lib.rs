//! Mail to administrators: once, clearly, without floods.
//!
//! Ferry raises alerts on both sides — a backup node unreachable (client), a
//! request that ended in error, pulls failing, a client silent, a full disk
//! (node) — and their recoveries. Administrators must hear about each
//! problem once, and an outage seen by 300 clients must be a handful of
//! mails, not 300 (SECURITY RE-05, C11, C12). Nothing a client wrote may
//! reach a header, and what reaches a body is marked, escaped and capped
//! (NL-01..NL-11).
//!
//! # Use
//!
//! ```no_run
//! use ferry_notify::{Alert, Kind, MailConfig, Notifier};
//!
//! let mut cfg = MailConfig::new(vec!["admins@example.org".into()], "ferry@node1.example.org");
//! cfg.smtp = Some("smtp://127.0.0.1:25".into());
//! let n = Notifier::new(Some(cfg), "/var/lib/ferry/notify".into(), "node1")?;
//! n.raise(Alert::new(Kind::RequestFailed, "client:host-a:E_FETCH_AUTH", "host-a",
//!     "Request RQ42 from host-a ended in E_FETCH_AUTH.").with_excerpt("Permission denied (publickey)."))?;
//! let report = n.flush(jiff::Timestamp::now())?; // at the end of the run, or on a schedule
//! # Ok::<(), ferry_notify::NotifyError>(())
//! ```
//!
//! [`Notifier::raise`] only writes a synced file into the outbox (no lock,
//! no network), so hooks and cron jobs can raise at any time, concurrently.
//! [`Notifier::flush`] (under a `flock`) decides what to mail and sends at
//! most **one mail of alerts per flush**: a digest of every alert that may go
//! now. Reports ([`Kind::is_report`]: the node's `git gc` summary) are news,
//! not problems: they are logged at info level and mailed in a mail of
//! their own (at most one more per flush), never inside an alert digest.
//! Callers flush at the end of each run (client `send`, node `scan`) or on
//! a schedule (the node daemon; [`FlushReport::next_due`] says when).
//!
//! # Rules
//!
//! Every alert has a `key` naming one problem (`node:backup1`,
//! `client:host-a:E_FETCH_AUTH`, `pull:host-a`). Pending alerts are taken
//! per key in the order they were raised:
//!
//! 1. **Same key, same kind, one section.** Further alerts of a key and kind
//!    that is already pending are counted into it ("raised 4 more times
//!    until …"), never mailed separately.
//! 2. **`min_interval` per key (default 1h).** A key mailed less than
//!    `min_interval` ago is not dropped: its alert stays in the outbox and
//!    goes out with the first digest after the interval; repeats meanwhile
//!    are counted and reported in that section. This is "≤ 1 mail per client
//!    per error class per hour" (C12) without losing the fact that the
//!    problem continued.
//! 3. **Open outages are mailed once.** After an outage
//!    (`NODE_UNREACHABLE`, `PULL_FAILING`, `CLIENT_SILENT`) was mailed, more
//!    alerts of it are only counted until its recovery — except one reminder
//!    per `remind_interval` (default 1d) while it stays open.
//! 4. **Recoveries only for mailed outages.** `NODE_RECOVERED`,
//!    `PULL_RECOVERED`, `CLIENT_BACK` pair with the outage of the same key.
//!    If that outage was mailed, the recovery is mailed at once, even within
//!    `min_interval`, with how long it lasted and how often it was raised.
//!    If it was not mailed yet (still waiting for the digest delay or its
//!    key's interval), outage and recovery are **both dropped**:
//!    "unreachable 3 min, recovered" is noise. A recovery with no mailed
//!    outage is dropped.
//! 5. **Digest delay (default 1m).** A mail leaves only once its oldest
//!    eligible alert has waited `digest_delay`; every other eligible alert
//!    rides along. A burst raised within the delay — a node scan failing
//!    300 pulls, 300 hooks — is therefore one mail.
//! 6. **Hourly cap (`max_per_hour`, default 20).** If that many mails left
//!    within the last hour, nothing is sent and nothing is dropped: alerts
//!    wait and leave as one digest once the window allows, saying the cap
//!    held them back. The mail that takes the last slot says so, and when
//!    the next one can come.
//! 7. **Delivery before removal.** Alerts leave the outbox only after the
//!    transport accepted the mail (at-least-once: a crash right after the
//!    transport accepted a mail can send it again). A failed transport keeps
//!    them all for the next flush.
//!
//! Without a `[mail]` section, the same rules apply but the digest goes to
//! the log (`tracing`, one event per alert) and the hourly cap is off.
//!
//! # Mail format
//!
//! * Subject: `[ferry <label>] NODE_UNREACHABLE: backup1` for one alert,
//!   `[ferry <label>] 3 alerts: NODE_UNREACHABLE (2), REQUEST_FAILED (1)`
//!   for a digest, `[ferry <label>] GC_REPORT: backup1` for a report. The
//!   label is `host_label` if configured, else the Ferry name of the host
//!   the notifier runs for (the client's `name`, the node's `name`) — never
//!   the machine's host name, which says nothing about which client or node
//!   wrote (and is the same for every instance on one machine). Only kind
//!   codes and tokens matching
//!   `[A-Za-z0-9._-]{1,64}` (anything else shows as `-`) — no client text,
//!   so CRLF, encoded-words and overlong subjects cannot be built.
//! * From/To: the configuration only, parsed at start-up. `Date`,
//!   `Message-ID` by lettre; `Auto-Submitted: auto-generated`.
//! * Body: plain ASCII text, one section per alert grouped by kind. Caller
//!   lines that are not plain printable ASCII are escaped by `ferry_text`;
//!   excerpts quoting client text are quoted once with
//!   `ferry_text::mail_quote` (`| ` prefix, escaped text kept as it is, raw
//!   text escaped, wrapped at word boundaries, capped); every line is
//!   indented. At most 64 KiB, then
//!   "And N more alerts not shown".
//! * Transport: plain SMTP to `smtp://host:port` (explicitly plaintext, for
//!   a local relay; `smtps://` and `?tls=` are refused — no TLS stack is
//!   built in), or `sendmail -i -t` with no other argument (NL-06).
//!
//! # Limits of this crate
//!
//! Grouping is per outbox: one host. A node outage seen by 300 *client
//! hosts* is still one mail per client host (each is rate-limited on its
//! own); fleet-wide views belong to the node (`CLIENT_SILENT`, `check`).

#![forbid(unsafe_code)]

mod alert;
mod compose;
mod config;
mod error;
mod notifier;
mod outbox;
mod plan;
mod transport;

pub use alert::{Alert, EXCERPT_SHOWN, Kind, MAX_BODY, MAX_EXCERPT, MAX_KEY};
pub use compose::{MAX_MAIL_BODY, human as human_duration};
pub use config::{DEFAULT_SENDMAIL, MailConfig, parse_duration};
pub use error::NotifyError;
pub use notifier::{FlushReport, MAX_FUTURE, Notifier};
