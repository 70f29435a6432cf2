//! Put a file into a node's artifact store as a pipe artifact and record
//! it in the catalog, as the scan's pull job does after a verified
//! download — for tests that need an artifact in the store without a
//! client (`two_accounts`: stored by the scan account, read back by
//! `git`). Runs as whatever account runs it, so the store's and catalog's
//! permission rules apply as they do to a scan.
//!
//! `ferry-store-put NODE_CONFIG CLIENT SOURCE RECEIVED FILE` prints the
//! artifact's catalog path.

use anyhow::Context as _;
use sha2::Digest as _;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, client, source, received, file] = args.as_slice() else {
        anyhow::bail!("usage: ferry-store-put NODE_CONFIG CLIENT SOURCE RECEIVED FILE");
    };
    let cfg = ferry_node::config::NodeConfig::load(std::path::Path::new(config))?;
    let store = ferry_node::store::open(&cfg)?;
    let key = ferry_node::store::ArtifactKey {
        client: client.clone(),
        source: source.clone(),
        received: received.clone(),
        file: format!("{received}.pipe"),
    };
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    let staged = store.staging_dir(&key)?.join(&key.file);
    std::fs::write(&staged, &bytes).with_context(|| format!("cannot write {}", staged.display()))?;
    store.put(&key, &staged, &sha256)?;
    let catalog = ferry_node::catalog::open(&cfg)?;
    catalog.insert(&ferry_node::catalog::Artifact {
        id: 0,
        client: client.clone(),
        source: source.clone(),
        module: ferry_node::store::module_of(&key.file).to_owned(),
        received: received.clone(),
        stamp: received.clone(),
        path: key.rel_path(),
        size: bytes.len() as u64,
        sha256,
        duration_ms: 0,
        request: format!("test-{received}"),
        node: String::new(), // insert records this node
    })?;
    println!("{}", key.rel_path());
    Ok(())
}
