//! Put a file into a node's artifact store as a pipe artifact and record
//! it in the catalog, as the scan's pull job does after a verified
//! download ([`ferry_node::store::ArtifactStore::put`]: for `[store] kind =
//! "s3"` a streamed multipart upload under a temporary key, re-hashed, then
//! copied into place). For what needs an artifact in the store without a
//! client or an sshd pull in front: `two_accounts` (stored by the scan
//! account, read back by `git`; it runs as whatever account runs it, so the
//! store's and catalog's permission rules apply as they do to a scan) and
//! `bench/s3.sh` (the upload timed against `aws s3 cp`).
//!
//!     ferry-store-put NODE_CONFIG CLIENT SOURCE RECEIVED FILE [SHA256]
//!
//! Without SHA256, FILE is read, hashed and copied into the store's
//! staging directory. With it (the bench: no second copy of a large file),
//! FILE is hard-linked there instead (the put removes that link, not FILE),
//! so it must be on the data directory's file system. RECEIVED is the run's
//! `YYYYMMDDTHHMMSSZ`; prints the artifact's catalog path
//! (`<CLIENT>/<SOURCE>/<RECEIVED>/<RECEIVED>.pipe`), with `-v` also its
//! size and the put's time.
//!
//!     ferry-store-put --get NODE_CONFIG CLIENT SOURCE RECEIVED OUT
//!
//! streams that artifact once through `ArtifactStore::open` into OUT,
//! nothing checked: the floor a `ferry-node restore` is compared with.

use anyhow::Context as _;
use sha2::Digest as _;

fn key(client: &str, source: &str, received: &str) -> ferry_node::store::ArtifactKey {
    ferry_node::store::ArtifactKey {
        client: client.to_owned(),
        source: source.to_owned(),
        received: received.to_owned(),
        file: format!("{received}.pipe"),
    }
}

fn get(args: &[String]) -> anyhow::Result<()> {
    let [config, client, source, received, out] = args else {
        anyhow::bail!("usage: ferry-store-put --get NODE_CONFIG CLIENT SOURCE RECEIVED OUT");
    };
    let cfg = ferry_node::config::NodeConfig::load(std::path::Path::new(config))?;
    let store = ferry_node::store::open(&cfg)?;
    let key = key(client, source, received);
    let mut f = std::fs::File::create(out)?;
    let n = std::io::copy(&mut store.open(&key)?, &mut f)?;
    println!("{} {n} bytes", key.rel_path());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--get") {
        return get(&args[1..]);
    }
    let verbose = args.first().is_some_and(|a| a == "-v");
    if verbose {
        args.remove(0);
    }
    let (config, client, source, received, file, given) = match args.as_slice() {
        [c, cl, s, r, f] => (c, cl, s, r, f, None),
        [c, cl, s, r, f, sha] => (c, cl, s, r, f, Some(sha.clone())),
        _ => anyhow::bail!("usage: ferry-store-put [-v] NODE_CONFIG CLIENT SOURCE RECEIVED FILE [SHA256]"),
    };
    let cfg = ferry_node::config::NodeConfig::load(std::path::Path::new(config))?;
    let store = ferry_node::store::open(&cfg)?;
    let key = key(client, source, received);
    let staged = store.staging_dir(&key)?.join(&key.file);
    let sha256 = match given {
        Some(sha) => {
            std::fs::hard_link(file, &staged)
                .with_context(|| format!("cannot link {file} to {} (same file system?)", staged.display()))?;
            sha
        }
        None => {
            let bytes = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
            std::fs::write(&staged, &bytes).with_context(|| format!("cannot write {}", staged.display()))?;
            hex::encode(sha2::Sha256::digest(&bytes))
        }
    };
    let size = std::fs::metadata(&staged)?.len();
    let started = std::time::Instant::now();
    store.put(&key, &staged, &sha256)?;
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
        sha256,
        duration_ms: elapsed.as_millis() as u64,
        request: format!("store-put-{received}"),
        node: String::new(), // insert records this node
    })?;
    if verbose {
        println!("{} {size} bytes in {} ms", key.rel_path(), elapsed.as_millis());
    } else {
        println!("{}", key.rel_path());
    }
    Ok(())
}
