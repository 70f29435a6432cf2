//! The published catalog (issue 12): one versioned JSON document per node
//! (`catalog.json`), written atomically (temp + rename) after each scan and
//! by `ferry-node publish DIR`, into a directory the node's web server
//! serves beside cgit. Another host reads it with `ferry-node check --from`
//! and mails when a source is late, small or missing, or when the document
//! itself goes stale: a node that died silently is noticed elsewhere.
//!
//! The schema (`"schema": "ferry-catalog/1"`) is in README "Monitoring";
//! the same structs ([`crate::catalog_doc`]) read it back, so writer and reader
//! cannot drift apart.

use std::path::Path;

use anyhow::Context as _;
use jiff::Timestamp;

use crate::cadence::{Arrival, Judged, Rules};
use crate::catalog::{Catalog, Query};
use crate::catalog_doc::{ArtifactDoc, ClientDoc, Document, FILE, SCHEMA, SourceDoc};
use crate::config::NodeConfig;

/// Artifacts kept per source in the document (the history page's points).
pub const HISTORY: usize = 60;

/// The `[check]` rules as numbers.
pub fn rules(cfg: &NodeConfig) -> anyhow::Result<Rules> {
    Ok(Rules {
        grace_secs: crate::config::parse_duration(&cfg.check.grace).context("[check] grace")?.as_secs(),
        small_ratio: cfg.check.small_ratio,
        small_window: cfg.check.small_window,
    })
}

/// A catalog `received` (`YYYYMMDDTHHMMSSZ`, or `…Z-N` for the N-th run
/// of a source within the same second) as a timestamp.
pub fn received_time(r: &str) -> Option<Timestamp> {
    let r = match r.split_once('-') {
        Some((t, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => t,
        Some(_) => return None,
        None => r,
    };
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", r)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// Judges every enrolled client (and every client with stored data) as of
/// `now` and builds the document.
pub fn build(cfg: &NodeConfig, catalog: &dyn Catalog, now: Timestamp) -> anyhow::Result<Document> {
    let enrollment = crate::enrollment::load(cfg).ok();
    let rules = rules(cfg)?;
    let shared = crate::catalog::is_shared(cfg);
    // One read of the catalog, grouped by client (rows come ordered by
    // client, source, received).
    let mut by_client: std::collections::BTreeMap<String, Vec<crate::catalog::Artifact>> =
        enrollment.iter().flat_map(|e| e.clients.keys().map(|c| (c.clone(), Vec::new()))).collect();
    for a in catalog.find(&Query { all_nodes: true, ..Query::default() })? {
        by_client.entry(a.client.clone()).or_default().push(a);
    }
    let mut clients = Vec::new();
    for (client, rows) in by_client {
        let mirrors = mirror_arrivals(cfg, &client);
        let mut stored: Vec<String> = rows.iter().map(|a| a.source.clone()).collect();
        stored.extend(mirrors.iter().map(|(n, _)| n.clone()));
        stored.sort();
        stored.dedup();
        let arrivals_of = |s: &str| -> Vec<Arrival> {
            let mut v: Vec<Arrival> = rows
                .iter()
                .filter(|a| a.source == s)
                .filter_map(|a| Some(Arrival { at: received_time(&a.received)?, size: Some(a.size) }))
                .collect();
            v.extend(mirrors.iter().filter(|(n, _)| n == s).map(|(_, t)| Arrival { at: *t, size: None }));
            v
        };
        let expected = enrollment.as_ref().and_then(|e| e.clients.get(&client)).map(|c| c.expected.clone());
        let judged: Vec<Judged> =
            crate::cadence::judge_client(expected.as_deref().unwrap_or(&[]), &stored, &arrivals_of, now, &rules);
        let mut sources: Vec<SourceDoc> = Vec::new();
        let names_in_order: Vec<String> = judged
            .iter()
            .map(|j| j.source.clone())
            .chain(stored.iter().filter(|s| !judged.iter().any(|j| &j.source == *s)).cloned())
            .collect();
        for s in names_in_order {
            let j = judged.iter().find(|j| j.source == s);
            let mine: Vec<&crate::catalog::Artifact> = rows.iter().filter(|a| a.source == s).collect();
            let module = mine
                .last()
                .map(|a| a.module.clone())
                .unwrap_or_else(|| if mirrors.iter().any(|(n, _)| *n == s) { "git".into() } else { "-".into() });
            let artifacts = mine
                .iter()
                .rev()
                .take(HISTORY)
                .rev()
                .filter_map(|a| {
                    Some(ArtifactDoc {
                        received: received_time(&a.received)?,
                        size: a.size,
                        sha256: a.sha256.clone(),
                        duration_ms: a.duration_ms,
                        state: "stored".into(),
                        node: shared.then(|| a.node.clone()),
                    })
                })
                .collect();
            sources.push(SourceDoc {
                source: s.clone(),
                module,
                cadence: j.and_then(|j| j.cadence.clone()),
                verdict: j.map(|j| j.verdict),
                detail: j.map(|j| j.detail.clone()),
                last_arrival: j.and_then(|j| j.last_arrival).or_else(|| arrivals_of(&s).iter().map(|a| a.at).max()),
                artifacts,
                last_drill: catalog.last_drill(&client, &s, false)?,
                last_good_drill: catalog.last_drill(&client, &s, true)?.map(|d| d.at),
            });
        }
        clients.push(ClientDoc { client, sources });
    }
    Ok(Document { schema: SCHEMA.into(), node: cfg.name.clone(), generated: now, clients })
}

/// Git mirrors of a client as `(name, last fetch)`: a git source is named
/// by its repository's last path segment without `.git`.
fn mirror_arrivals(cfg: &NodeConfig, client: &str) -> Vec<(String, Timestamp)> {
    crate::repos::find_mirrors(&cfg.client_data(client).join("git"))
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.strip_suffix(".git")?.to_owned();
            let t = std::fs::read_to_string(p.join("ferry-fetched")).ok()?.trim().parse().ok()?;
            Some((name, t))
        })
        .collect()
}

/// Writes `doc` as `dir/catalog.json`, atomically (temp + fsync + rename):
/// a reader sees the old document or the new one, never half of one.
pub fn write(dir: &Path, doc: &Document) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // A publisher killed between write and rename (a scan under kill -9)
    // left its temporary behind; its pid is dead, so it is removed here.
    let _ = ferry_durable::remove_dead_tmp(dir);
    let mut text = serde_json::to_vec_pretty(doc)?;
    text.push(b'\n');
    ferry_durable::write_synced_mode(dir, FILE, &text, 0o644)
        .with_context(|| format!("writing {}/{FILE}", dir.display()))
}

/// Where the node publishes (`[web] publish_dir`, default `<web dir>/catalog`).
pub fn default_dir(cfg: &NodeConfig) -> std::path::PathBuf {
    cfg.web_dir().join("catalog")
}

/// Builds and writes the document into `dir`, with the history page
/// generated from it ([`crate::history_page`]).
pub fn publish(cfg: &NodeConfig, dir: &Path, now: Timestamp) -> anyhow::Result<Document> {
    let catalog = crate::catalog::open(cfg)?;
    let doc = build(cfg, catalog.as_ref(), now)?;
    write(dir, &doc)?;
    crate::history_page::write(dir, &doc)?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_publishers_temporary_is_swept() {
        let d = tempfile::tempdir().unwrap();
        let dead = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let left = d.path().join(format!(".tmp-catalog.json-{dead}-1"));
        std::fs::write(&left, b"{\"sche").unwrap();
        let doc =
            Document { schema: SCHEMA.into(), node: "n".into(), generated: Timestamp::UNIX_EPOCH, clients: vec![] };
        write(d.path(), &doc).unwrap();
        assert!(!left.exists(), "the dead publisher's temporary is gone");
        assert!(d.path().join(FILE).exists());
    }

    #[test]
    fn runs_within_one_second_keep_their_time() {
        assert_eq!(received_time("20261122T010203Z-2"), received_time("20261122T010203Z"));
        assert!(received_time("20261122T010203Z").is_some());
        assert_eq!(received_time("20261122T010203Z-"), None);
        assert_eq!(received_time("20261122T010203Z-x"), None);
    }

    #[test]
    fn received_times_parse_as_utc() {
        assert_eq!(received_time("20261203T040506Z"), Some("2026-12-03T04:05:06Z".parse().unwrap()));
        assert_eq!(received_time("2026-12-03"), None);
    }
}
