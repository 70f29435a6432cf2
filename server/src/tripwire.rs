//! The tripwire (issue 11): after a snapshot tree is published and
//! catalogued, its changes against the source's previous snapshot are
//! matched against the source's `alert-on-change` patterns, and a match
//! mails the administrators through the node's alerts.
//!
//! The patterns are read from the live enrollment (`[ferry source CLIENT
//! SOURCE]` in the admin-reviewed gitosis.conf), never from the client: a
//! compromised client must not be able to switch its own tripwire off, and
//! the history it is checked against lives on the node.
//!
//! One alert per snapshot, keyed `tripwire:<client>:<source>:<snapshot>`:
//! the notifier's digest delay and hourly cap apply, but two snapshots are
//! two alerts, each with its own paths (one key per source would fold the
//! second into a counted repeat of the first and lose its paths). The
//! first snapshot of a source has nothing to compare with and raises
//! nothing. Nothing here fails the backup: a problem is logged.

use ferry_gitosis::enroll::tripwire::Pattern;
use ferry_notify::{Alert, Kind};

use crate::config::NodeConfig;

/// Matching paths quoted in one alert; the rest are counted.
pub const MAX_LISTED: usize = 20;
/// Characters of one escaped path in an alert.
const PATH_SHOWN: usize = 200;

/// Checks the snapshot `received` of `client`'s `source`; see the module
/// docs. Never fails: a problem is logged as a warning.
pub fn after_snapshot(cfg: &NodeConfig, client: &str, source: &str, received: &str) {
    if let Err(e) = check(cfg, client, source, received) {
        tracing::warn!(client, source = %ferry_text::escape(source, 200), snapshot = received, error = %format!("{e:#}"),
            "tripwire: cannot compare the new snapshot with the previous one (the backup is kept)");
    }
}

fn check(cfg: &NodeConfig, client: &str, source: &str, received: &str) -> anyhow::Result<()> {
    if !cfg.enrolled_dir().join("gitosis.conf").exists() {
        return Ok(());
    }
    let enrollment = crate::enrollment::load(cfg)?;
    let patterns = enrollment.alert_patterns(client, source);
    if patterns.is_empty() {
        return Ok(());
    }
    let trees = crate::trees::snapshots_of(cfg, client, source)?;
    let Some(at) = trees.iter().position(|a| a.received == received) else {
        anyhow::bail!("snapshot {received} is not in the catalog");
    };
    let Some(previous) = at.checked_sub(1).map(|i| &trees[i]) else {
        return Ok(());
    };
    let d = crate::treediff::diff(cfg, client, source, Some(&previous.received), Some(received), false)?;
    let matched: Vec<&ferry_tree::diff::Change> =
        d.diff.changes.iter().filter(|c| patterns.iter().any(|p| p.matches(&c.path))).collect();
    if matched.is_empty() {
        return Ok(());
    }
    let (body, excerpt) = describe(cfg, client, source, &previous.received, received, patterns, &matched);
    tracing::warn!(client, source = %ferry_text::escape(source, 200), snapshot = received, paths = matched.len(),
        "tripwire: watched paths changed");
    crate::alerts::raise(
        cfg,
        Alert::new(Kind::Other, format!("tripwire:{client}:{source}:{received}"), client, body).with_excerpt(excerpt),
    );
    Ok(())
}

/// The alert's body (node-written, ASCII) and its excerpt: one line per
/// matching path, escaped once here (`+` added, `-` removed, `~` changed),
/// at most [`MAX_LISTED`], then how many more.
fn describe(
    cfg: &NodeConfig,
    client: &str,
    source: &str,
    from: &str,
    to: &str,
    patterns: &[Pattern],
    matched: &[&ferry_tree::diff::Change],
) -> (String, String) {
    let pats: Vec<&str> = patterns.iter().map(Pattern::as_str).collect();
    let body = format!(
        "Snapshot {to} of {client} source {} on node {} changed {} path(s) matching alert-on-change ({}), \
         compared with snapshot {from}.\nSee everything that changed: ferry-node diff {client} {} {from} {to}",
        ferry_text::escape(source, 200),
        cfg.name,
        matched.len(),
        pats.join(" "),
        ferry_text::escape(source, 200),
    );
    let mut excerpt = String::new();
    for c in matched.iter().take(MAX_LISTED) {
        let mark = match c.what {
            ferry_tree::diff::What::Added { .. } => '+',
            ferry_tree::diff::What::Removed { .. } => '-',
            ferry_tree::diff::What::Changed { .. } => '~',
        };
        excerpt.push_str(&format!("{mark} {}\n", ferry_text::escape_bytes(&c.path, PATH_SHOWN)));
    }
    if matched.len() > MAX_LISTED {
        excerpt.push_str(&format!("... and {} more\n", matched.len() - MAX_LISTED));
    }
    (body, excerpt)
}
