//! The live enrollment: the last `gitosis.conf` + `keydir/` that the admin
//! hook validated and activated (`state/enrolled/`).

use std::collections::BTreeMap;

use anyhow::Context as _;
use ferry_gitosis::conf::Config;
use ferry_gitosis::enroll::Enrollment;

use crate::config::NodeConfig;

/// Parse the live gitosis.conf.
pub fn load_conf(cfg: &NodeConfig) -> anyhow::Result<Config> {
    let p = cfg.enrolled_dir().join("gitosis.conf");
    let bytes = std::fs::read(&p).with_context(|| format!("Configuration does not exist: {}", p.display()))?;
    Config::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
}

/// The live key directory, file name → content.
pub fn load_keydir(cfg: &NodeConfig) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let dir = cfg.enrolled_dir().join("keydir");
    let mut out = BTreeMap::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for de in rd {
        let de = de?;
        if de.file_type()?.is_file()
            && let Some(name) = de.file_name().to_str()
        {
            out.insert(name.to_owned(), std::fs::read(de.path())?);
        }
    }
    Ok(out)
}

/// The live enrollment, fully validated.
pub fn load(cfg: &NodeConfig) -> anyhow::Result<Enrollment> {
    let conf = load_conf(cfg)?;
    let keys = load_keydir(cfg)?;
    Enrollment::build(&conf, &keys).map_err(|errs| {
        anyhow::anyhow!(
            "live enrollment is invalid: {}",
            errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
        )
    })
}
