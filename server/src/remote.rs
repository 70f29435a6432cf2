//! `ferry-node check --from URL…`: the check from another host (issue 12).
//! Reads one or several nodes' published catalogs ([`crate::publish`]) over
//! HTTP(S) and mails, with the same rules as the node's own check (one mail
//! per new problem, one when it is over), when a source is late, small or
//! missing, or when a node's catalog is stale, unreachable or unreadable:
//! a node that died silently is noticed by another host.
//!
//! The document is hostile input (a compromised node, a proxy, a
//! truncated file): it is fetched by `curl` through the runner with a size
//! cap and a deadline, parsed strictly (unknown fields, another schema, a
//! name outside the grammar are refused; serde_json's depth limit refuses
//! deep nesting), and every string reaches mail and terminal through the
//! escaping sinks. `curl` rather than an HTTP crate: it already speaks TLS,
//! proxies and the site's CA bundle, and the node already depends on it
//! for nothing else but the quickstart; a crate with TLS would add a C or
//! crypto build for one GET.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::catalog_doc::{Document, SCHEMA};
use crate::config::NodeConfig;

/// Largest document read (a fleet of thousands of clients with 60
/// artifacts per source stays far below).
pub const MAX_DOCUMENT: usize = 64 << 20;
/// Deadline for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcome for one URL.
#[derive(Debug, Serialize)]
pub struct RemoteEntry {
    pub url: String,
    /// Node name from the document.
    pub node: Option<String>,
    pub generated: Option<Timestamp>,
    /// Why the catalog itself is a problem (stale, unreachable, unreadable).
    pub catalog_problem: Option<String>,
    /// `(client, source, verdict, detail)` of late/small/missing sources.
    pub problems: Vec<(String, String, String, String)>,
}

/// What the check host remembers between runs (`state/remote-check.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct RemoteState {
    /// URLs with an open CATALOG_STALE alert.
    #[serde(default)]
    stale_open: BTreeSet<String>,
    /// url → client → sources with an open BACKUP_OVERDUE alert.
    #[serde(default)]
    overdue_open: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

/// Fetches the document at `url` (capped, with a deadline).
fn fetch(url: &str, netrc: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        bail!("not an http:// or https:// URL");
    }
    if url.split('/').nth(2).is_some_and(|authority| authority.contains('@')) {
        bail!("credentials in the URL would show in process lists and mails: put them in the [check] netrc file");
    }
    let mut cmd = ferry_run::Cmd::new("curl");
    if let Some(n) = netrc {
        cmd = cmd.arg("--netrc-file").arg(n);
    }
    let out = cmd
        .args(["--fail", "--silent", "--show-error", "--location", "--max-redirs", "3"])
        .args(["--proto", "=http,https", "--proto-redir", "=http,https"])
        .args(["--max-filesize", &MAX_DOCUMENT.to_string(), "--max-time", &FETCH_TIMEOUT.as_secs().to_string()])
        .arg("--")
        .arg(url)
        .stdout_cap(MAX_DOCUMENT + 1)
        .timeout(FETCH_TIMEOUT + Duration::from_secs(5))
        .run()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !out.success() {
        bail!("{}", out.stderr_excerpt().trim());
    }
    if out.stdout_truncated || out.stdout.len() > MAX_DOCUMENT {
        bail!("document larger than {MAX_DOCUMENT} bytes");
    }
    Ok(out.stdout)
}

/// Parses and checks a document: schema, names in the grammar, clock.
pub fn parse(bytes: &[u8], now: Timestamp, skew: Duration) -> anyhow::Result<Document> {
    let doc: Document = serde_json::from_slice(bytes).context("not a Ferry catalog document")?;
    if doc.schema != SCHEMA {
        bail!("schema {:?}, expected {SCHEMA:?}", ferry_text::sanitize(&doc.schema, 40));
    }
    if !ferry_gitosis::username::is_valid_client_name(&doc.node) && ferry_request::Name::parse(&doc.node).is_err() {
        bail!("node name {:?} outside the grammar", ferry_text::sanitize(&doc.node, 60));
    }
    for c in &doc.clients {
        if !ferry_gitosis::username::is_valid_client_name(&c.client) {
            bail!("client name {:?} outside the grammar", ferry_text::sanitize(&c.client, 60));
        }
        for s in &c.sources {
            ferry_request::Name::parse(&s.source).map_err(|_| {
                anyhow::anyhow!("source name {:?} outside the grammar", ferry_text::sanitize(&s.source, 60))
            })?;
        }
    }
    let ahead = doc.generated.duration_since(now);
    if ahead > jiff::SignedDuration::from_secs(skew.as_secs() as i64) {
        bail!(
            "generated at {} by node {}, {} s ahead of this host's clock: one of the clocks is wrong",
            doc.generated,
            doc.node,
            ahead.as_secs()
        );
    }
    Ok(doc)
}

/// Checks every URL, raises and closes alerts, returns one entry per URL.
pub fn check_from(cfg: &NodeConfig, urls: &[String]) -> anyhow::Result<Vec<RemoteEntry>> {
    let now = crate::clock::now();
    let stale_after = crate::config::parse_duration(&cfg.check.stale_after).context("[check] stale_after")?;
    let skew = crate::config::parse_duration(&cfg.limits.clock_skew).context("[limits] clock_skew")?;
    let dir = cfg.state_dir();
    std::fs::create_dir_all(&dir)?;
    let _lock = ferry_durable::Lock::acquire_timeout(&dir.join("remote-check.lock"), Duration::from_secs(60))
        .context("remote check lock")?;
    let path = dir.join("remote-check.json");
    let mut st: RemoteState =
        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let raise = |a: ferry_notify::Alert| crate::alerts::raise(cfg, a);
    let mut out = Vec::new();
    for url in urls {
        let shown = ferry_text::sanitize(url, 200);
        let got = fetch(url, cfg.check.netrc.as_deref()).and_then(|b| parse(&b, now, skew));
        let mut entry = RemoteEntry {
            url: shown.clone(),
            node: None,
            generated: None,
            catalog_problem: None,
            problems: Vec::new(),
        };
        let problem = match &got {
            Err(e) => Some(format!(
                "catalog at {shown} is unreachable or unreadable: {}",
                ferry_text::sanitize(&format!("{e:#}"), 400)
            )),
            Ok(doc) => {
                let age = now.duration_since(doc.generated);
                (age > jiff::SignedDuration::from_secs(stale_after.as_secs() as i64)).then(|| {
                    format!(
                        "catalog of node {} at {shown} is stale: generated {} ago at {}; the node stopped publishing",
                        doc.node,
                        crate::cadence::human(age.as_secs().max(0) as u64),
                        doc.generated
                    )
                })
            }
        };
        let key = format!("catalog:{}", ferry_durable::short_hash(url.as_bytes()));
        match &problem {
            Some(p) if !st.stale_open.contains(url) => {
                st.stale_open.insert(url.clone());
                raise(ferry_notify::Alert::new(ferry_notify::Kind::CatalogStale, key, "-", format!("{p}.")));
            }
            None if st.stale_open.remove(url) => {
                raise(ferry_notify::Alert::new(
                    ferry_notify::Kind::CatalogFresh,
                    key,
                    "-",
                    format!("The catalog at {shown} is fresh again."),
                ));
            }
            _ => {}
        }
        entry.catalog_problem = problem;
        if let Ok(doc) = &got {
            entry.node = Some(doc.node.clone());
            entry.generated = Some(doc.generated);
            let per_url = st.overdue_open.entry(url.clone()).or_default();
            for c in &doc.clients {
                let open = per_url.entry(c.client.clone()).or_default();
                crate::check::overdue_alerts(cfg, &doc.node, &c.client, &c.sources, open, &raise);
                for s in c.sources.iter().filter(|s| s.verdict.is_some_and(crate::cadence::Verdict::is_problem)) {
                    entry.problems.push((
                        c.client.clone(),
                        s.source.clone(),
                        s.verdict.map(|v| v.word().to_owned()).unwrap_or_default(),
                        ferry_text::sanitize(s.detail.as_deref().unwrap_or(""), 300),
                    ));
                }
            }
            per_url.retain(|_, v| !v.is_empty());
        }
        out.push(entry);
    }
    st.overdue_open.retain(|u, v| urls.contains(u) && !v.is_empty());
    ferry_durable::write_synced_mode(&dir, "remote-check.json", &serde_json::to_vec(&st)?, 0o600)?;
    crate::alerts::flush(cfg);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-04T12:00:00Z".parse().unwrap()
    }

    fn doc(generated: &str, client: &str, source: &str) -> String {
        format!(
            r#"{{"schema":"ferry-catalog/1","node":"node1","generated":"{generated}","clients":[{{"client":"{client}","sources":[{{"source":"{source}","module":"sftp","cadence":"1d","verdict":"late","detail":"x","last_arrival":null,"artifacts":[]}}]}}]}}"#
        )
    }

    #[test]
    fn hostile_documents_get_a_clear_error() {
        let skew = Duration::from_secs(300);
        assert!(parse(doc("2026-12-04T11:00:00Z", "web1", "www").as_bytes(), now(), skew).is_ok());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (doc("2026-12-04T11:00:00Z", "web1", "www").as_bytes()[..80].to_vec(), "not a Ferry catalog"),
            (doc("2026-12-04T11:00:00Z", "<script>", "www").into_bytes(), "client name"),
            (doc("2026-12-04T11:00:00Z", "web1", "a<b>").into_bytes(), "source name"),
            (doc("2026-12-05T12:00:00Z", "web1", "www").into_bytes(), "ahead of this host's clock"),
            (
                doc("2026-12-04T11:00:00Z", "web1", "www").replace("ferry-catalog/1", "ferry-catalog/9").into_bytes(),
                "schema",
            ),
            (format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), "not a Ferry catalog"),
            (
                doc("2026-12-04T11:00:00Z", "web1", "www").replace("\"node\":", "\"extra\":1,\"node\":").into_bytes(),
                "not a Ferry catalog",
            ),
        ];
        for (bytes, want) in cases {
            let e = format!("{:#}", parse(&bytes, now(), skew).unwrap_err());
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
