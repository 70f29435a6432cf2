//! `ferry request`, `ferry backup`, `ferry backup-all`: queue client
//! requests (the seed's `commitBackupRequest`).

use std::path::Path;

use crate::config::ClientConfig;
use crate::exit::usage;
use crate::pool::{self, ClientRequest};

/// Queue `rec` for each node in `nodes` (all with one id) and return the id.
pub fn queue(cfg: &ClientConfig, rec: &ClientRequest, nodes: &[&str]) -> anyhow::Result<String> {
    if nodes.is_empty() {
        return usage("no backup node to send to: configure a [[node]] with default = true or name one");
    }
    let id = pool::new_id();
    let data = rec.to_bytes();
    for node in nodes {
        let pool = pool::open(&cfg.pool_dir(node))?;
        pool.create("i", "C", &id, &data)?;
    }
    tracing::info!(id, module = %rec.module, nodes = ?nodes, "request queued");
    Ok(id)
}

/// Validate an ad-hoc `ferry request <module> <arg> [node]` and queue it.
pub fn request(cfg: &ClientConfig, module: &str, arg: &str, node: Option<&str>) -> anyhow::Result<String> {
    let nodes = target_nodes(cfg, node)?;
    let endpoint = cfg.endpoint();
    let ctx = ferry_prepare::Context {
        client_name: &cfg.name,
        request_id: "check",
        endpoint: &endpoint,
        script_dir: cfg.script_dir.as_deref(),
        git: &cfg.git,
        timeout: std::time::Duration::from_secs(1),
    };
    // A configured source of that module named by `arg` is the usual way to
    // request fs/database/pipe backups.
    if let Some(src) = cfg.source(arg).filter(|s| s.module == module) {
        let rec = crate::sources::request_for(src)?;
        return queue(cfg, &rec, &nodes);
    }
    match module {
        "git" => {
            // Check now so a bad path fails at the prompt, not in cron.
            if let Err(e) = ferry_prepare::git::prepare(arg, &ctx) {
                return usage(format!("cannot back up {arg:?}: {e}"));
            }
            let canon = ferry_prepare::git::canonical_repo(Path::new(arg))?;
            let rec = ClientRequest { module: "git".into(), arg: canon.to_string_lossy().into_owned(), source: None };
            queue(cfg, &rec, &nodes)
        }
        "dummy" => {
            if let Err(e) = arg.parse::<ferry_request::Name>() {
                return usage(format!("dummy: {e}"));
            }
            queue(cfg, &ClientRequest { module: "dummy".into(), arg: arg.into(), source: None }, &nodes)
        }
        m if ferry_prepare::is_known(m, &ctx) => {
            queue(cfg, &ClientRequest { module: m.into(), arg: arg.into(), source: None }, &nodes)
        }
        m => usage(format!(
            "unknown module {m:?}: built-in modules are {}, configured sources are [{}], and {} holds no executable of that name",
            ferry_prepare::BUILTIN.join(", "),
            cfg.sources.iter().map(|s| format!("{} ({})", s.name, s.module)).collect::<Vec<_>>().join(", "),
            cfg.script_dir.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "script_dir (unset)".into()),
        )),
    }
}

/// Queue the configured source `name`.
pub fn backup(cfg: &ClientConfig, name: &str, node: Option<&str>) -> anyhow::Result<String> {
    let Some(src) = cfg.source(name) else {
        return usage(format!(
            "unknown source {name:?}; configured: [{}]",
            cfg.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
    };
    let nodes = match node {
        Some(n) => target_nodes(cfg, Some(n))?,
        None => crate::sources::nodes_for(cfg, src),
    };
    match crate::sources::spec_of(cfg, src) {
        Ok(Some(spec)) => {
            if let Err(e) = ferry_prepare::check_source(&spec, &cfg.endpoint()) {
                return usage(format!("source {name}: {e}"));
            }
        }
        Ok(None) => {}
        Err(e) => return usage(format!("{e:#}")),
    }
    queue(cfg, &crate::sources::request_for(src)?, &nodes)
}

/// Queue every source with `all = true` (the seed's monthly `backup_all`).
pub fn backup_all(cfg: &ClientConfig) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for src in cfg.sources.iter().filter(|s| s.all) {
        let nodes = crate::sources::nodes_for(cfg, src);
        let id = queue(cfg, &crate::sources::request_for(src)?, &nodes)?;
        out.push((src.name.clone(), id));
    }
    Ok(out)
}

fn target_nodes<'a>(cfg: &'a ClientConfig, node: Option<&str>) -> anyhow::Result<Vec<&'a str>> {
    match node {
        Some(n) => match cfg.node(n) {
            Some(n) => Ok(vec![n.name.as_str()]),
            None => usage(format!(
                "unknown node {n:?}; configured nodes: [{}]",
                cfg.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
            )),
        },
        None => Ok(cfg.default_nodes().into_iter().map(|n| n.name.as_str()).collect()),
    }
}
