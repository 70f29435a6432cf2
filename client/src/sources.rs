//! Configured sources (`[[source]]` in the client TOML) and `backup-all`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use ferry_prepare::{SourceKind, SourceSpec};

use crate::config::{ClientConfig, SourceConfig};
use crate::pool::ClientRequest;

/// The client request that backs up `src`.
pub fn request_for(src: &SourceConfig) -> anyhow::Result<ClientRequest> {
    let arg = match src.module.as_str() {
        "git" => src
            .path
            .as_ref()
            .with_context(|| format!("source {}: module git needs a path", src.name))?
            .to_str()
            .with_context(|| format!("source {}: path is not UTF-8", src.name))?
            .to_owned(),
        _ => src.name.clone(),
    };
    Ok(ClientRequest { module: src.module.clone(), arg, source: Some(src.name.clone()) })
}

/// The data-module description of a configured source, if it is one.
pub fn spec_of(cfg: &ClientConfig, src: &SourceConfig) -> anyhow::Result<Option<SourceSpec>> {
    let need_path =
        || src.path.clone().with_context(|| format!("source {}: module {} needs a path", src.name, src.module));
    let kind = match src.module.as_str() {
        "fs" => SourceKind::Fs {
            root: need_path()?,
            include: src.include.clone(),
            exclude: src.exclude.clone(),
            xattrs: src.xattrs,
            one_file_system: src.one_file_system,
            unreadable: src.unreadable.unwrap_or_default().archive(),
            // One hash cache per source, not per node: one manifest
            // serves every node (ferry_prepare::tree).
            tree_cache: (src.mode.as_deref() == Some("tree"))
                .then(|| ferry_prepare::tree::cache_path(&cfg.state_dir, &src.name)),
        },
        "postgresdb" => SourceKind::Postgres {
            database: src.database.clone(),
            os_user: src.os_user.clone(),
            host: src.host.clone(),
            port: src.port,
            socket: src.socket.clone(),
        },
        "mysql" => SourceKind::Mysql {
            database: src.database.clone(),
            os_user: src.os_user.clone(),
            host: src.host.clone(),
            port: src.port,
            socket: src.socket.clone(),
        },
        "pipe" => SourceKind::Pipe {
            command: src
                .command
                .clone()
                .with_context(|| format!("source {}: module pipe needs a command", src.name))?,
        },
        _ => return Ok(None),
    };
    let mut spec = SourceSpec::new(src.name.clone(), kind);
    spec.pre = src.pre.clone();
    spec.post = src.post.clone();
    if let Some(k) = src.keep {
        spec.keep = k;
    }
    if let Some(t) = &src.timeout {
        spec.timeout = crate::config::parse_duration(t)?;
    }
    Ok(Some(spec))
}

/// Check every data source at load time, so a bad source is reported by
/// `ferry status`/`request` instead of failing in cron.
pub fn check_all(cfg: &ClientConfig) -> anyhow::Result<()> {
    let ep = cfg.endpoint();
    for src in &cfg.sources {
        if let Some(spec) = spec_of(cfg, src)? {
            ferry_prepare::check_source(&spec, &ep).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok(())
}

/// Artifact paths referenced by requests some node has not acknowledged
/// yet: they must stay in the export directory (retention guard).
pub fn unacknowledged_artifacts(cfg: &ClientConfig) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for node in &cfg.nodes {
        let Ok(q) = crate::queue::Queue::open(cfg, node) else { continue };
        for line in q.unpushed_lines().unwrap_or_default() {
            if let Ok(ferry_request::Request::Sftp(s)) = ferry_request::parse(line.as_bytes()) {
                out.insert(PathBuf::from(s.url.path.as_str()));
            }
        }
    }
    out
}

/// Run the module of a configured source.
pub fn prepare_source(
    cfg: &ClientConfig,
    src: &SourceConfig,
    ctx: &ferry_prepare::Context<'_>,
) -> anyhow::Result<ferry_prepare::Prepared> {
    let req = request_for(src)?;
    if let Some(spec) = spec_of(cfg, src)? {
        let pending = unacknowledged_artifacts(cfg);
        let guard = |p: &Path| pending.contains(p);
        return Ok(ferry_prepare::prepare_source(&spec, ctx, &guard)?);
    }
    let requests = match src.module.as_str() {
        "git" | "dummy" => ferry_prepare::prepare(&src.module, &req.arg, ctx)?,
        m if ferry_prepare::script::find(m, ctx).is_some() => {
            let arg = src.path.as_ref().and_then(|p| p.to_str()).unwrap_or(&src.name);
            ferry_prepare::prepare(m, arg, ctx)?
        }
        m => bail!("source {}: unknown module {m:?}", src.name),
    };
    Ok(ferry_prepare::Prepared { requests, warnings: Vec::new(), tree: None })
}

/// Nodes a source goes to: its own list, else the default nodes.
pub fn nodes_for<'a>(cfg: &'a ClientConfig, src: &SourceConfig) -> Vec<&'a str> {
    match &src.nodes {
        Some(list) => list.iter().filter_map(|n| cfg.node(n).map(|n| n.name.as_str())).collect(),
        None => cfg.default_nodes().into_iter().map(|n| n.name.as_str()).collect(),
    }
}
