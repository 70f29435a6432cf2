//! git daemon export of the mirrors: the `git-daemon-export-ok` marker in
//! each mirror, managed from gitosis.conf's `daemon` key as gitosis does
//! for its repositories. `git daemon` (`deploy/systemd/ferry-git-daemon.service`)
//! runs read-only on the data directory *without* `--export-all`, so it
//! serves exactly the marked mirrors.
//!
//! A mirror is named by its path under the data directory without `.git`,
//! as cgit lists it: `[repo host-a/git/project]` with `daemon = yes`
//! exports `data/host-a/git/project.git`; `[gitosis] daemon = yes` exports
//! every mirror unless its own section says `daemon = no`. The markers
//! follow each enrollment and each scan (new mirrors); a marker on a
//! mirror gitosis.conf no longer exports is removed.

use std::path::Path;

use ferry_gitosis::conf::{Config, parse_bool};
use serde::Serialize;

use crate::config::NodeConfig;

/// The file git daemon looks for.
pub const MARKER: &str = "git-daemon-export-ok";

#[derive(Debug, Default, Serialize)]
pub struct ExportReport {
    /// Mirrors exported now (paths under the data directory).
    pub exported: Vec<String>,
    /// Markers written and removed by this run.
    pub added: usize,
    pub removed: usize,
}

/// Whether gitosis.conf exports the mirror at `rel` (path under the data
/// directory, ending in `.git`).
pub fn wanted(conf: &Config, rel: &str) -> bool {
    let name = rel.strip_suffix(".git").unwrap_or(rel);
    for s in [format!("repo {name}"), format!("repo {name}.git")] {
        if conf.has_section(&s)
            && let Some(v) = conf.get(&s, "daemon")
        {
            return parse_bool(v).unwrap_or(false);
        }
    }
    conf.get("gitosis", "daemon").and_then(parse_bool).unwrap_or(false)
}

/// Set or remove every mirror's marker to match the live gitosis.conf
/// (none when nothing is enrolled yet: nothing is exported).
pub fn sync(cfg: &NodeConfig) -> anyhow::Result<ExportReport> {
    let mut report = ExportReport::default();
    let conf =
        if cfg.enrolled_dir().join("gitosis.conf").exists() { Some(crate::enrollment::load_conf(cfg)?) } else { None };
    let data = cfg.data_dir();
    for cdir in std::fs::read_dir(&data).into_iter().flatten().flatten() {
        for m in crate::repos::find_mirrors(&cdir.path().join("git")) {
            let rel = m.strip_prefix(&data).unwrap_or(&m).to_string_lossy().into_owned();
            let want = conf.as_ref().is_some_and(|c| wanted(c, &rel));
            let marker = m.join(MARKER);
            let have = marker.symlink_metadata().is_ok();
            if want && !have {
                create_marker(&marker)?;
                report.added += 1;
            } else if !want && have {
                std::fs::remove_file(&marker)?;
                report.removed += 1;
            }
            if want {
                report.exported.push(rel);
            }
        }
    }
    Ok(report)
}

/// An empty marker file, never through a link.
fn create_marker(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(p)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_sections_override_the_gitosis_default() {
        let c = Config::parse(b"[gitosis]\ndaemon = yes\n[repo host-a/git/secret]\ndaemon = no\n").unwrap();
        assert!(wanted(&c, "host-a/git/project.git"));
        assert!(!wanted(&c, "host-a/git/secret.git"));
        let c = Config::parse(b"[gitosis]\n[repo host-a/git/project.git]\ndaemon = yes\n").unwrap();
        assert!(wanted(&c, "host-a/git/project.git"));
        assert!(!wanted(&c, "host-a/git/other.git"));
    }
}
