//! `ferry changes SOURCE` (issue 11): what changed in a tree source since
//! its last backup, copying nothing (seed 001's report mode). The work is
//! [`ferry_prepare::tree_report`]; this prints it.

use crate::config::ClientConfig;
use crate::exit::usage;
use crate::out;

/// Prints the report; exit 0.
pub fn run(cfg: &ClientConfig, source: &str, json: bool) -> anyhow::Result<u8> {
    let Some(src) = cfg.source(source) else {
        return usage(format!(
            "unknown source {source:?}; configured: [{}]",
            cfg.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
    };
    let Some(spec) = crate::sources::spec_of(cfg, src)? else {
        return usage(format!("source {source}: changes are reported for mode = \"tree\" fs sources only"));
    };
    let r = match ferry_prepare::tree_report::report(&spec, &cfg.endpoint()) {
        Ok(r) => r,
        Err(ferry_prepare::PrepareError::Config(m)) => return usage(m),
        Err(e) => return Err(e.into()),
    };
    if json {
        out::json(&r)?;
    } else {
        let (a, d, c) = r.diff.counts();
        let since = r.since.as_deref().map(|s| format!("since the backup of {s}")).unwrap_or("never backed up".into());
        out::line(&format!("{}: {a} added, {d} removed, {c} changed {since}", r.source))?;
        if r.watching {
            let full = if r.journalled_full { " (and a full rescan)" } else { "" };
            out::line(&format!("watched by ferry agent: {} paths journalled{full}", r.journalled))?;
        }
        for l in r.diff.to_text().lines() {
            out::line(l)?;
        }
    }
    Ok(crate::exit::OK)
}
