//! `ferry-node diff`: what changed between two snapshot trees of a source,
//! from their manifests ([`ferry_tree::diff`]); no file is read.

use anyhow::Context as _;

use crate::catalog::Artifact;
use crate::config::NodeConfig;
use crate::exit::UsageError;
use crate::trees::TreeLayout;

/// A diff between two snapshots, with which ones.
#[derive(Debug)]
pub struct TreeDiff {
    pub client: String,
    pub source: String,
    pub from: String,
    pub to: String,
    pub diff: ferry_tree::diff::Diff,
}

impl TreeDiff {
    pub fn to_json(&self) -> serde_json::Value {
        let (added, removed, changed) = self.diff.counts();
        serde_json::json!({
            "client": self.client,
            "source": self.source,
            "from": self.from,
            "to": self.to,
            "added": added,
            "removed": removed,
            "changed": changed,
            "changes": self.diff.to_json()["changes"],
        })
    }

    /// A header, one escaped line per change, a count line.
    pub fn lines(&self) -> Vec<String> {
        let (added, removed, changed) = self.diff.counts();
        let mut out =
            vec![format!("{} {}: {} -> {}", self.client, ferry_text::escape(&self.source, 200), self.from, self.to)];
        out.extend(self.diff.to_text().lines().map(str::to_owned));
        out.push(format!("{added} added, {removed} removed, {changed} changed"));
        out
    }
}

/// Finds a snapshot by exact name, else the newest at or before a time.
fn find<'a>(trees: &'a [Artifact], spec: &str) -> anyhow::Result<&'a Artifact> {
    if let Some(a) = trees.iter().find(|a| a.received == spec) {
        return Ok(a);
    }
    let t = crate::catalog::parse_time(spec, true)?;
    trees
        .iter()
        .rev()
        .find(|a| a.received.as_str() <= t.as_str())
        .ok_or_else(|| UsageError(format!("no snapshot at or before {spec}")).into())
}

pub fn diff(
    cfg: &NodeConfig,
    client: &str,
    source: &str,
    a: Option<&str>,
    b: Option<&str>,
    mtime: bool,
) -> anyhow::Result<TreeDiff> {
    let trees: Vec<Artifact> = crate::trees::snapshots_of(cfg, client, source)?;
    let (old, new) = match (a, b) {
        (Some(a), Some(b)) => (find(&trees, a)?, find(&trees, b)?),
        (Some(a), None) => (find(&trees, a)?, trees.last().context("no snapshot")?),
        (None, _) => match trees.len() {
            0 | 1 => {
                return Err(UsageError(format!(
                    "{client} has {} snapshot tree(s) of {:?}: a diff needs two",
                    trees.len(),
                    ferry_text::escape(source, 200)
                ))
                .into());
            }
            n => (&trees[n - 2], &trees[n - 1]),
        },
    };
    let layout = TreeLayout::new(cfg.data_dir());
    let read = |r: &Artifact| -> anyhow::Result<ferry_tree::manifest::Manifest> {
        let dest = layout.snapshot_dir(client, source, &r.received);
        let unlimited = ferry_tree::manifest::Limits {
            max_entries: u64::MAX,
            max_total_bytes: u64::MAX,
            max_line_bytes: usize::MAX,
        };
        ferry_tree::snapshot::read_manifest(&dest, &unlimited)
            .map_err(|e| anyhow::anyhow!("manifest of {}: {e}", r.path))
    };
    let opts = ferry_tree::diff::DiffOptions { mtime, xattrs: true };
    let d = ferry_tree::diff::diff(&read(old)?, &read(new)?, &opts);
    Ok(TreeDiff {
        client: client.into(),
        source: source.into(),
        from: old.received.clone(),
        to: new.received.clone(),
        diff: d,
    })
}
