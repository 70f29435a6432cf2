//! `ferry-node check`: clients gone silent — no request and no successful
//! pull for longer than `check.silent_after` — mailed once, and once more
//! when they are back.

use serde::Serialize;

use crate::clientstate::ClientState;
use crate::config::NodeConfig;

/// One client's line of the report.
#[derive(Debug, Serialize)]
pub struct CheckEntry {
    pub client: String,
    pub last_request: Option<String>,
    pub last_success: Option<String>,
    pub silent: bool,
}

/// Clients that sent no request and had no successful pull for longer than
/// `silent_after` are reported (once, until they are back).
pub fn check(cfg: &NodeConfig, silent_after: std::time::Duration) -> anyhow::Result<Vec<CheckEntry>> {
    let enrollment = crate::enrollment::load(cfg)?;
    let now = jiff::Timestamp::now();
    let limit = jiff::SignedDuration::from_secs(silent_after.as_secs() as i64);
    let enrolled_at = std::fs::symlink_metadata(cfg.enrolled_dir())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok());
    let mut out = Vec::new();
    for c in enrollment.clients.keys() {
        let (st, silent) = ClientState::update(cfg, c, |st| {
            let last = [st.last_request, st.last_success].into_iter().flatten().max().or(enrolled_at);
            let silent = last.is_none_or(|t| now.duration_since(t) > limit);
            if silent && !st.silent_alert_open {
                st.silent_alert_open = true;
                let body = format!(
                    "Client {c} sent no request and had no successful pull on node {} since {}.",
                    cfg.name,
                    last.map(|t| t.to_string()).unwrap_or_else(|| "its enrollment".into())
                );
                crate::alerts::raise(
                    cfg,
                    ferry_notify::Alert::new(ferry_notify::Kind::ClientSilent, format!("client:{c}"), c.as_str(), body),
                );
            } else if !silent && st.silent_alert_open {
                st.silent_alert_open = false;
                crate::alerts::raise(
                    cfg,
                    ferry_notify::Alert::new(
                        ferry_notify::Kind::ClientBack,
                        format!("client:{c}"),
                        c.as_str(),
                        format!("Client {c} is back."),
                    ),
                );
            }
            (st.clone(), silent)
        });
        out.push(CheckEntry {
            client: c.clone(),
            last_request: st.last_request.map(|t| t.to_string()),
            last_success: st.last_success.map(|t| t.to_string()),
            silent,
        });
    }
    crate::alerts::flush(cfg);
    Ok(out)
}
