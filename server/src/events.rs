//! The node's event journal: one JSON object per line in
//! `state/events.jsonl`, and the same event through `tracing`.
//!
//! Verdict fields come first (`ts`, `level`, `client`, `event`, `reason`),
//! then the request id and a capped `detail` whose client text was escaped
//! once, when the message was built (SECURITY C11; [`ferry_text::sanitize`]
//! guards it here without escaping it again): one
//! event is one line whatever the client wrote (NL-02), and no control
//! byte, bidi override or non-ASCII character reaches a terminal that runs
//! `cat` on the file (NL-03, NL-08). The client is always the authenticated
//! one, never a name taken from a request.

use std::io::Write as _;
use std::path::Path;

use serde::Serialize;

/// One journal entry.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub ts: String,
    pub level: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<&'a str>,
    pub event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<&'a str>,
    pub detail: String,
}

/// Append an event (best effort: a journal write failure is logged, never
/// fatal for the request it describes).
pub fn record(
    log: &Path,
    level: &str,
    client: Option<&str>,
    event: &str,
    reason: Option<&str>,
    request: Option<&str>,
    detail: &str,
) {
    let ev = Event {
        ts: jiff::Timestamp::now().to_string(),
        level,
        client,
        event,
        reason,
        request,
        // Client text in `detail` was escaped when the message was built;
        // sanitize keeps it that way and catches anything raw (once).
        detail: ferry_text::sanitize(detail, 2000),
    };
    let mut line = serde_json::to_vec(&ev).expect("serialisable");
    line.push(b'\n');
    match level {
        "error" => tracing::error!(client, event, reason, request, detail = %ev.detail),
        "warn" => tracing::warn!(client, event, reason, request, detail = %ev.detail),
        _ => tracing::info!(client, event, reason, request, detail = %ev.detail),
    }
    let res = (|| -> std::io::Result<()> {
        if let Some(d) = log.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        // One write(2) per line: O_APPEND keeps concurrent writers' lines whole.
        f.write_all(&line)
    })();
    if let Err(e) = res {
        tracing::error!("cannot append to {}: {e}", log.display());
    }
}

/// One event as a line for people: `<ts> <level> <client> <event>
/// [<reason>] [request <id>]: <detail>` (`-` for no client). The journal's
/// strings are shown as stored (escaped once); [`crate::out::line`] makes
/// sure nothing else slips through.
pub fn human(e: &serde_json::Value) -> String {
    let field = |k: &str| e.get(k).and_then(|v| v.as_str());
    let mut s = format!(
        "{} {:<5} {} {}",
        field("ts").unwrap_or("-"),
        field("level").unwrap_or("-"),
        field("client").unwrap_or("-"),
        field("event").unwrap_or("-")
    );
    if let Some(r) = field("reason") {
        s.push(' ');
        s.push_str(r);
    }
    if let Some(r) = field("request") {
        s.push_str(" request ");
        s.push_str(r);
    }
    s.push_str(": ");
    s.push_str(field("detail").unwrap_or(""));
    s
}

/// Read the journal (for `ferry-node events`, tests and mail digests).
pub fn read_all(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}
