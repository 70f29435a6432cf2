//! `ferry init`: directories, the client's push key, and the enrollment
//! text an administrator commits to the node's `gitosis-admin` repository.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::config::ClientConfig;

#[derive(Debug, Serialize)]
pub struct InitReport {
    pub name: String,
    /// Content for `keydir/<name>.pub` in gitosis-admin.
    pub public_key: String,
    /// The `[ferry client <name>]` section for gitosis.conf.
    pub gitosis_section: String,
    /// What a database source still needs before its first backup can
    /// work (e.g. sudo for `os_user`), each with its fix.
    pub problems: Vec<String>,
}

/// Database sources whose `os_user` this account cannot become: found now
/// rather than by the first backup in cron.
fn database_problems(cfg: &ClientConfig) -> Vec<String> {
    use ferry_prepare::db;
    cfg.sources
        .iter()
        .filter_map(|s| {
            let user = s.os_user.as_deref()?;
            let tool = match (s.module.as_str(), &s.database) {
                ("postgresdb", Some(_)) => "pg_dump",
                ("postgresdb", None) => "pg_dumpall",
                ("mysql", _) => db::find_mysql_dump().unwrap_or("mariadb-dump"),
                _ => return None,
            };
            db::os_user_problem(&s.module, tool, user).map(|p| format!("source {}: {p}", s.name))
        })
        .collect()
}

pub fn init(cfg: &ClientConfig, host_key: Option<&Path>) -> anyhow::Result<InitReport> {
    for d in
        [cfg.state_dir.join("pools"), cfg.state_dir.join("queues"), cfg.state_dir.join("log"), cfg.node_status_dir()]
    {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    for n in &cfg.nodes {
        crate::pool::open(&cfg.pool_dir(&n.name))?;
    }
    let export = cfg.export_dir();
    std::fs::create_dir_all(&export).with_context(|| format!("cannot create {}", export.display()))?;
    let key = cfg.ssh_key();
    if !key.exists() {
        let dir = key.parent().context("ssh_key has no directory")?;
        std::fs::create_dir_all(dir)?;
        private(dir);
        ferry_run::Cmd::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("ferry@{}", cfg.name))
            .arg("-f")
            .arg(&key)
            .run_checked()
            .context("ssh-keygen failed")?;
    }
    let public_key = std::fs::read_to_string(key.with_extension("pub"))
        .with_context(|| format!("cannot read {}.pub", key.display()))?
        .trim()
        .to_owned();
    let hk_path: PathBuf = host_key.map(Path::to_owned).unwrap_or_else(|| "/etc/ssh/ssh_host_ed25519_key.pub".into());
    let hostkey = std::fs::read_to_string(&hk_path)
        .map(|s| s.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| format!("<this host's SSH host key; {} is unreadable>", hk_path.display()));
    let e = &cfg.export;
    let mut section = format!(
        "[ferry client {}]\naddress = {}\nport = {}\nuser = {}\nhostkey = {}\nexport = {}\n",
        cfg.name,
        e.address,
        e.port,
        e.user,
        hostkey,
        export.display()
    );
    if !e.git_roots.is_empty() {
        section.push_str(&format!(
            "git-roots = {}\n",
            e.git_roots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ")
        ));
    }
    // Where tree sources may be read is the administrator's decision
    // (`tree-roots` in the reviewed commit): suggested, commented out.
    let tree_roots: Vec<String> = cfg
        .sources
        .iter()
        .filter(|s| s.module == "fs" && s.mode.as_deref() == Some("tree"))
        .filter_map(|s| s.path.as_ref().map(|p| p.display().to_string()))
        .collect();
    if !tree_roots.is_empty() {
        section.push_str(&format!(
            "; this host's mode = \"tree\" sources (uncomment to let the node read them):\n; tree-roots = {}\n",
            tree_roots.join(" ")
        ));
    }
    if e.git_scheme == "git" {
        section.push_str(&format!("git-scheme = git\ngit-port = {}\n", e.git_port));
    }
    Ok(InitReport { name: cfg.name.clone(), public_key, gitosis_section: section, problems: database_problems(cfg) })
}

pub fn print(r: &InitReport) -> std::io::Result<()> {
    use crate::out::line;
    line(&format!("Client {} is ready. To enroll it, commit to the node's gitosis-admin repository:", r.name))?;
    line("")?;
    line(&format!("# keydir/{}.pub", r.name))?;
    line(&r.public_key)?;
    line("")?;
    line("# gitosis.conf")?;
    for l in r.gitosis_section.lines() {
        line(l)?;
    }
    line("Then install the node's pull key here: ferry authorize-node <node> --key <file>")?;
    for p in &r.problems {
        line("")?;
        line(&format!("Not ready yet: {p}"))?;
    }
    Ok(())
}

fn private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}
