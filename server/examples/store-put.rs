//! Stores a verified file as an artifact through the node's configured
//! store, exactly as the pull job does after a download
//! ([`ferry_node::store::ArtifactStore::put`]: for `[store] kind = "s3"` a
//! streamed multipart upload under a temporary key, re-hashed, then copied
//! into place), and records it in the catalog so `ferry-node restore`,
//! `find` and `verify` see it. For bench/s3.sh, which times this against
//! `aws s3 cp` of the same file; without the sshd pull in front, the upload
//! is what is measured.
//!
//!     store-put NODE_CONFIG CLIENT SOURCE RECEIVED FILE SHA256
//!
//! FILE is hard-linked into the store's staging directory (the put removes
//! that link, not FILE), so it must be on the data directory's file system.
//! RECEIVED is the run's `YYYYMMDDTHHMMSSZ`; the artifact is
//! `<CLIENT>/<SOURCE>/<RECEIVED>/<RECEIVED>.pipe`.
//!
//!     store-put --get NODE_CONFIG CLIENT SOURCE RECEIVED OUT
//!
//! streams that artifact once through `ArtifactStore::open` into OUT: one
//! read of the object, for comparing with `ferry-node restore`, which
//! reads it twice (the integrity check, then the copy).

use anyhow::Context as _;

fn get(args: &[String]) -> anyhow::Result<()> {
    let [config, client, source, received, out] = args else {
        anyhow::bail!("usage: store-put --get NODE_CONFIG CLIENT SOURCE RECEIVED OUT");
    };
    let cfg = ferry_node::config::NodeConfig::load(std::path::Path::new(config))?;
    let store = ferry_node::store::open(&cfg)?;
    let key = ferry_node::store::ArtifactKey {
        client: client.clone(),
        source: source.clone(),
        received: received.clone(),
        file: format!("{received}.pipe"),
    };
    let mut f = std::fs::File::create(out)?;
    let n = std::io::copy(&mut store.open(&key)?, &mut f)?;
    println!("{} {n} bytes", key.rel_path());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--get") {
        return get(&args[1..]);
    }
    let [config, client, source, received, file, sha256] = args.as_slice() else {
        anyhow::bail!("usage: store-put NODE_CONFIG CLIENT SOURCE RECEIVED FILE SHA256");
    };
    let cfg = ferry_node::config::NodeConfig::load(std::path::Path::new(config))?;
    let store = ferry_node::store::open(&cfg)?;
    let key = ferry_node::store::ArtifactKey {
        client: client.clone(),
        source: source.clone(),
        received: received.clone(),
        file: format!("{received}.pipe"),
    };
    let staged = store.staging_dir(&key)?.join(&key.file);
    std::fs::hard_link(file, &staged)
        .with_context(|| format!("cannot link {file} to {} (same file system?)", staged.display()))?;
    let size = std::fs::metadata(&staged)?.len();
    let started = std::time::Instant::now();
    store.put(&key, &staged, sha256)?;
    let elapsed = started.elapsed();
    let catalog = ferry_node::catalog::open(&cfg)?;
    catalog.insert(&ferry_node::catalog::Artifact {
        id: 0,
        client: client.clone(),
        source: source.clone(),
        module: ferry_node::store::module_of(&key.file).to_owned(),
        received: received.clone(),
        stamp: received.clone(),
        path: key.rel_path(),
        size,
        sha256: sha256.clone(),
        duration_ms: elapsed.as_millis() as u64,
        request: format!("bench-{received}"),
        node: String::new(), // insert records this node
    })?;
    println!("{} {size} bytes in {} ms", key.rel_path(), elapsed.as_millis());
    Ok(())
}
