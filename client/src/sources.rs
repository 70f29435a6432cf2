//! Configured sources (`[[source]]` in the client TOML) and `backup-all`.

use anyhow::{Context as _, bail};

use crate::config::{ClientConfig, SourceConfig};
use crate::requests::ClientRequest;

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
        _ => src.path.as_ref().and_then(|p| p.to_str()).unwrap_or(&src.name).to_owned(),
    };
    Ok(ClientRequest { module: src.module.clone(), arg, source: Some(src.name.clone()) })
}

/// Run the module of a configured source.
pub fn prepare_source(
    _cfg: &ClientConfig,
    src: &SourceConfig,
    ctx: &ferry_prepare::Context<'_>,
) -> anyhow::Result<Vec<ferry_request::Request>> {
    let req = request_for(src)?;
    match src.module.as_str() {
        "git" | "dummy" => Ok(ferry_prepare::prepare(&src.module, &req.arg, ctx)?),
        m if ferry_prepare::script::find(m, ctx).is_some() => Ok(ferry_prepare::prepare(m, &req.arg, ctx)?),
        m => bail!("source {}: unknown module {m:?}", src.name),
    }
}

/// Nodes a source goes to: its own list, else the default nodes.
pub fn nodes_for<'a>(cfg: &'a ClientConfig, src: &SourceConfig) -> Vec<&'a str> {
    match &src.nodes {
        Some(list) => list.iter().filter_map(|n| cfg.node(n).map(|n| n.name.as_str())).collect(),
        None => cfg.default_nodes().into_iter().map(|n| n.name.as_str()).collect(),
    }
}
