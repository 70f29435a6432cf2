//! `ferry-node check`: clients gone silent — no request and no successful
//! pull for longer than `check.silent_after` — and declared sources that
//! are late, small or missing ([`crate::cadence`]), each mailed once, and
//! once more when it is over. The same verdicts are published
//! ([`crate::publish`]) for `check --from` on other hosts
//! ([`crate::remote`]).

use serde::Serialize;

use crate::cadence::Verdict;
use crate::catalog_doc::{Document, SourceDoc};
use crate::clientstate::ClientState;
use crate::config::NodeConfig;

/// One client's line of the report.
#[derive(Debug, Serialize)]
pub struct CheckEntry {
    pub client: String,
    pub last_request: Option<String>,
    pub last_success: Option<String>,
    pub silent: bool,
    /// The client's sources with their verdicts (declared ones judged;
    /// `verdict` null when the client declares none).
    pub sources: Vec<SourceDoc>,
}

impl CheckEntry {
    /// Late, small or missing sources.
    pub fn problems(&self) -> impl Iterator<Item = &SourceDoc> {
        self.sources.iter().filter(|s| s.verdict.is_some_and(Verdict::is_problem))
    }
}

/// Clients that sent no request and had no successful pull for longer than
/// `silent_after` are reported (once, until they are back), and so are the
/// declared sources that are late, small or missing.
pub fn check(cfg: &NodeConfig, silent_after: std::time::Duration) -> anyhow::Result<Vec<CheckEntry>> {
    let enrollment = crate::enrollment::load(cfg)?;
    let now = crate::clock::now();
    let limit = jiff::SignedDuration::from_secs(silent_after.as_secs() as i64);
    let enrolled_at = std::fs::symlink_metadata(cfg.enrolled_dir())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok());
    let catalog = crate::catalog::open(cfg)?;
    let doc = crate::publish::build(cfg, catalog.as_ref(), now)?;
    let mut out = Vec::new();
    for c in enrollment.clients.keys() {
        let sources = doc.clients.iter().find(|d| &d.client == c).map(|d| d.sources.clone()).unwrap_or_default();
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
            overdue_alerts(cfg, &cfg.name, c, &sources, &mut st.overdue_open, &|a| crate::alerts::raise(cfg, a));
            (st.clone(), silent)
        });
        out.push(CheckEntry {
            client: c.clone(),
            last_request: st.last_request.map(|t| t.to_string()),
            last_success: st.last_success.map(|t| t.to_string()),
            silent,
            sources,
        });
    }
    crate::alerts::flush(cfg);
    Ok(out)
}

/// Raises BACKUP_OVERDUE for each source of `client` that became late,
/// small or missing, and BACKUP_ON_TIME for each that was and is no more;
/// `open` holds the sources with an open alert (updated). Shared by the
/// node's own `check` and `check --from` on another host.
pub fn overdue_alerts(
    _cfg: &NodeConfig,
    node: &str,
    client: &str,
    sources: &[SourceDoc],
    open: &mut std::collections::BTreeSet<String>,
    raise: &dyn Fn(ferry_notify::Alert),
) {
    for s in sources {
        let problem = s.verdict.is_some_and(Verdict::is_problem);
        let key = format!("source:{node}:{client}:{}", s.source);
        if problem && !open.contains(&s.source) {
            open.insert(s.source.clone());
            let body = format!(
                "Node {node}, client {client}: {} ({}).",
                s.detail.as_deref().unwrap_or("-"),
                s.verdict.map(Verdict::word).unwrap_or("-")
            );
            raise(ferry_notify::Alert::new(ferry_notify::Kind::BackupOverdue, key, client, body));
        } else if !problem && open.remove(&s.source) {
            let body = format!("Node {node}, client {client}: {} is on time again.", s.source);
            raise(ferry_notify::Alert::new(ferry_notify::Kind::BackupOnTime, key, client, body));
        }
    }
    // A source no longer declared or stored closes its alert silently.
    open.retain(|s| sources.iter().any(|d| &d.source == s));
}

/// The verdict lines of a document for people (`check`, `check --from`).
pub fn source_lines(doc: &Document) -> Vec<String> {
    let mut out = Vec::new();
    for c in &doc.clients {
        for s in &c.sources {
            if let Some(v) = s.verdict {
                out.push(format!(
                    "{:<20} {:<20} {:<10} {}",
                    c.client,
                    s.source,
                    v.word().to_uppercase(),
                    s.detail.as_deref().unwrap_or("")
                ));
            }
        }
    }
    out
}
