//! Builds a snapshot tree of a directory on a node, through the library as
//! the pull job does (`ferry_node::trees::build_test_snapshot`), for
//! bench/rescue.sh and manual tries of `rescue`, `diff` and `restore`.
//! With `--prepare`, then what the pull does next with `[tree]
//! prepare_rescue` ([`ferry_node::rescue::after_pull`]: the rescue
//! metadata layer), timed on its own.
//!
//!     tree-snapshot NODE_CONFIG CLIENT SOURCE RECEIVED DIR [--prepare]

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let prepare = args.last().is_some_and(|a| a == "--prepare");
    if prepare {
        args.pop();
    }
    let [config, client, source, received, dir] = args.as_slice() else {
        anyhow::bail!("usage: tree-snapshot NODE_CONFIG CLIENT SOURCE RECEIVED DIR [--prepare]");
    };
    let cfg = ferry_node::config::NodeConfig::load(std::path::Path::new(config))?;
    let started = std::time::Instant::now();
    let a = ferry_node::trees::build_test_snapshot(&cfg, client, source, received, std::path::Path::new(dir))?;
    print!("{} {} bytes in {} ms", a.path, a.size, started.elapsed().as_millis());
    if prepare {
        let catalog = ferry_node::catalog::open(&cfg)?;
        let started = std::time::Instant::now();
        ferry_node::rescue::after_pull(&cfg, catalog.as_ref(), client, source);
        print!("; rescue layer prepared in {} ms", started.elapsed().as_millis());
    }
    println!();
    Ok(())
}
