//! `ferry-node restore`: give stored data back.
//!
//! `restore CLIENT WHAT [--at T]` names either a source (artifacts in the
//! catalog: fs, database dumps, pipes) or a mirrored git repository. With
//! `--at`, a source gives its newest artifact received at or before `T`; a
//! repository gives its refs as they were at `T`, rebuilt from the history
//! the mirror keeps ([`crate::history`]). A time before the first backup is
//! an error that says when the first backup was, whatever the kind.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::catalog::{Catalog, Query};
use crate::config::NodeConfig;
use crate::exit::UsageError;
use crate::history::iso;

pub mod all;
pub mod artifact;
pub mod db;
mod git;
mod tree;

pub use artifact::RestoreArgs;
pub use git::restore_git;

/// What a source's artifacts are, for messages.
fn kind_of(module: &str) -> String {
    match module {
        "fs" => "fs source".into(),
        "postgresdb" | "mysql" => format!("{module} dump source"),
        "pipe" => "pipe source".into(),
        m => format!("{m} source"),
    }
}

/// A catalog time (`20261122T010203Z`, maybe `-N`) for people.
fn shown(received: &str) -> String {
    received
        .get(..16)
        .and_then(|s| s.parse::<ferry_request::Stamp>().ok())
        .map(|s| iso(s.to_unix()))
        .unwrap_or_else(|| received.to_owned())
}

/// `restore CLIENT WHAT`: dispatch to the source's artifacts or to the
/// repository. `args.at` is a catalog time ([`crate::catalog::parse_time`]).
pub fn restore(
    cfg: &NodeConfig,
    client: &str,
    what: &str,
    args: &RestoreArgs,
    checkout: bool,
    show: bool,
) -> anyhow::Result<String> {
    if !ferry_gitosis::username::is_valid_client_name(client) {
        return Err(UsageError(format!("{client:?} is not a client name")).into());
    }
    let catalog = crate::catalog::open_existing(cfg)?;
    let kept = match &catalog {
        Some(c) => {
            c.find(&Query { client: Some(client.to_owned()), source: Some(what.to_owned()), ..Query::default() })?
        }
        None => Vec::new(),
    };
    if let Some(oldest) = kept.first() {
        let chosen = match &args.at {
            None => kept.last(),
            Some(t) => kept.iter().rev().find(|a| a.received.as_str() <= t.as_str()),
        };
        let Some(a) = chosen else {
            return Err(UsageError(format!(
                "{client} has no backup of {} {what:?} at or before {}: the oldest one kept was received at {}",
                kind_of(&oldest.module),
                shown(args.at.as_deref().unwrap_or_default()),
                shown(&oldest.received)
            ))
            .into());
        };
        return artifact::restore(cfg, a, args, show);
    }
    let mirror = find_git(cfg, client, what, catalog.as_deref())?;
    let to = args.to.as_ref().ok_or_else(|| UsageError("say where to restore the repository: --to DIR".into()))?;
    match &args.at {
        None => {
            restore_git(cfg, &mirror, to, checkout)?;
            Ok(format!("restored {} to {}", mirror.display(), to.display()))
        }
        Some(t) => git::restore_git_at(cfg, client, what, &mirror, to, checkout, t),
    }
}

/// Locate a git mirror of `client` by name (`app`, `app.git`,
/// `git/team/app.git`); when there is none, say what is stored.
pub fn find_git(cfg: &NodeConfig, client: &str, what: &str, catalog: Option<&dyn Catalog>) -> anyhow::Result<PathBuf> {
    let rel = what.strip_prefix("git/").unwrap_or(what);
    let rel = if rel.ends_with(".git") { rel.to_owned() } else { format!("{rel}.git") };
    let p = cfg.client_data(client).join("git").join(&rel);
    if rel.split('/').all(ferry_text::is_safe_token) && p.join("HEAD").is_file() {
        return Ok(p);
    }
    let repos: Vec<String> = crate::repos::find_mirrors(&cfg.client_data(client).join("git"))
        .iter()
        .filter_map(|m| m.strip_prefix(cfg.client_data(client)).ok().map(|r| r.display().to_string()))
        .collect();
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    if let Some(c) = catalog {
        for a in c.find(&Query { client: Some(client.to_owned()), ..Query::default() })? {
            sources.insert(a.source.clone(), a.module.clone());
        }
    }
    let sources: Vec<String> = sources.iter().map(|(s, m)| format!("{s} ({m})")).collect();
    Err(UsageError(format!(
        "no source or repository {what:?} stored for {client}; stored: repositories [{}], sources [{}]",
        repos.join(", "),
        sources.join(", ")
    ))
    .into())
}
