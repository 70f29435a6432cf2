//! The node's event journal: one JSON object per line in
//! `state/events.jsonl`, and the same event through `tracing`.
//!
//! Verdict fields come first (`ts`, `level`, `client`, `event`, `reason`),
//! then the request id and an escaped, capped `detail` (SECURITY C11): one
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
        detail: ferry_text::escape(detail, 2000),
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

/// Read the journal (for `ferry-node events`, tests and mail digests).
pub fn read_all(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}
