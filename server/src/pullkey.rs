//! `ferry-node pull-key <client>`: the public key the node pulls from that
//! client with, to install there (`ferry authorize-node`).

use anyhow::Context as _;

use crate::config::NodeConfig;

pub fn pull_key(cfg: &NodeConfig, client: &str) -> anyhow::Result<String> {
    let enrollment = crate::enrollment::load(cfg)?;
    if enrollment.client(client).is_none() {
        return Err(crate::exit::UsageError(format!("client {client:?} is not enrolled")).into());
    }
    let p = cfg.pull_key(client).with_extension("pub");
    Ok(std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?.trim().to_owned())
}
