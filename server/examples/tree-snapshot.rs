//! Builds a snapshot tree of a directory on a node, through the library as
//! the pull job does (`ferry_node::trees::build_test_snapshot`), for
//! bench/rescue.sh and manual tries of `rescue`, `diff` and `restore`.
//!
//!     tree-snapshot NODE_CONFIG CLIENT SOURCE RECEIVED DIR

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, client, source, received, dir] = args.as_slice() else {
        anyhow::bail!("usage: tree-snapshot NODE_CONFIG CLIENT SOURCE RECEIVED DIR");
    };
    let cfg = ferry_node::config::NodeConfig::load(std::path::Path::new(config))?;
    let started = std::time::Instant::now();
    let a = ferry_node::trees::build_test_snapshot(&cfg, client, source, received, std::path::Path::new(dir))?;
    println!("{} {} bytes in {} ms", a.path, a.size, started.elapsed().as_millis());
    Ok(())
}
